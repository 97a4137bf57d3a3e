#!/usr/bin/env python
"""Convert an official Swin Transformer ImageNet checkpoint to a Detectron2 .pkl for ``D2SwinTransformer``.

    python tools/convert_swin_to_d2.py swin_large_patch4_window12_384_22kto1k.pth \
        swin_large_patch4_window12_384_22kto1k.pkl

The input is a .pth whose weights are under "model" (as released by microsoft/Swin-Transformer; "state_dict" or a bare
state dict are accepted too). The classification head (``head.*``), the final classifier LayerNorm (``norm.*``; the
backbone has per-output ``norm0..3`` instead) and the ``attn_mask`` buffers (recomputed at run time) are dropped; every
other name is kept verbatim. The output is ``{"model": {name: numpy array}, "__author__": "third_party",
"matching_heuristics": True}``, which Detectron2's DetectionCheckpointer suffix-matches onto ``backbone.*``.
The per-output ``norm0..3`` are not in ImageNet checkpoints and keep their initialization (d2 logs them as missing).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backbone_conversion  # noqa: E402  (tools/backbone_conversion.py, shared by the three converters)

MARKER_KEY = "patch_embed.proj.weight"
KIND = "Swin Transformer"


def _drop(name: str) -> bool:
    return name.startswith("head.") or name in ("norm.weight", "norm.bias") or name.endswith("attn_mask")


def load_state_dict(path):
    """Return the tensors of ``path`` (under "model", else "state_dict", else the top level); SystemExit if none."""
    return backbone_conversion.load_state_dict(path, containers=("model", "state_dict"))


def convert(state_dict):
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names)."""
    return backbone_conversion.convert_state_dict(state_dict, MARKER_KEY, KIND, _drop)


def main(argv=None):
    # Swin drops one attn_mask per shifted block: list only the first few dropped names
    return backbone_conversion.run(argv, __doc__.splitlines()[0], load_state_dict, convert, max_dropped_shown=6)


if __name__ == "__main__":
    sys.exit(main())

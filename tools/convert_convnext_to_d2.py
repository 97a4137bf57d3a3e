#!/usr/bin/env python
"""Convert an official ConvNeXt ImageNet checkpoint to a Detectron2 .pkl for ``D2ConvNeXt``.

    python tools/convert_convnext_to_d2.py convnext_large_22k_1k_384.pth convnext_large_22k_1k_384.pkl

The input is a .pth whose weights are under "model" (as released by facebookresearch/ConvNeXt; "state_dict" or a bare
state dict are accepted too). The classification head (``head.*``) and the final pooled-feature LayerNorm (``norm.*``;
the backbone has per-output ``norm0..3`` instead) are dropped; ``downsample_layers.*`` and ``stages.*`` are kept
verbatim. The output is ``{"model": {name: numpy array}, "__author__": "third_party", "matching_heuristics": True}``,
which Detectron2's DetectionCheckpointer suffix-matches onto ``backbone.*``. The per-output ``norm0..3`` are not in
ImageNet checkpoints and keep their initialization (d2 logs them as missing).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backbone_conversion  # noqa: E402  (tools/backbone_conversion.py, shared by the three converters)

MARKER_KEY = "downsample_layers.0.0.weight"
KIND = "ConvNeXt"


def _drop(name: str) -> bool:
    return name.startswith("head.") or name.startswith("norm.")


def load_state_dict(path):
    """Return the tensors of ``path`` (under "model", else "state_dict", else the top level); SystemExit if none."""
    return backbone_conversion.load_state_dict(path, containers=("model", "state_dict"))


def convert(state_dict):
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names)."""
    return backbone_conversion.convert_state_dict(state_dict, MARKER_KEY, KIND, _drop)


def main(argv=None):
    return backbone_conversion.run(argv, __doc__.splitlines()[0], load_state_dict, convert)


if __name__ == "__main__":
    sys.exit(main())

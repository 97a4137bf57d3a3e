#!/usr/bin/env python
"""Convert an official NAT / DiNAT ImageNet checkpoint to a Detectron2 .pkl for ``D2DiNAT``.

    python tools/convert_dinat_to_d2.py dinat_large_in22k_in1k_384_11x11.pth dinat_large_in22k_in1k_384_11x11.pkl

The input is a .pth holding the state dict under "state_dict" or "model", or at the top level (the released NAT/DiNAT
files are bare state dicts). The classification head (``head.*``) and the final classifier LayerNorm (``norm.*``; the
backbone has per-output ``norm0..3`` instead) are dropped; ``patch_embed.*`` and ``levels.*`` are kept verbatim. The
output is ``{"model": {name: numpy array}, "__author__": "third_party", "matching_heuristics": True}``, which
Detectron2's DetectionCheckpointer suffix-matches onto ``backbone.*``. The per-output ``norm0..3`` are not in ImageNet
checkpoints and keep their initialization (d2 logs them as missing).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backbone_conversion  # noqa: E402  (tools/backbone_conversion.py, shared by the three converters)

MARKER_KEY = "patch_embed.proj.0.weight"
KIND = "NAT/DiNAT"


def _drop(name: str) -> bool:
    return name.startswith("head.") or name.startswith("norm.")


def load_state_dict(path):
    """Return the tensors of ``path`` (under "state_dict", else "model", else the top level); SystemExit if none."""
    return backbone_conversion.load_state_dict(path, containers=("state_dict", "model"))


def convert(state_dict):
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names).

    Warns on stderr when the checkpoint has layer-scale weights (``*.gamma1`` / ``*.gamma2``), which D2DiNAT lacks.
    """
    out, dropped = backbone_conversion.convert_state_dict(state_dict, MARKER_KEY, KIND, _drop)
    layer_scale = sorted(k for k in out if k.endswith((".gamma1", ".gamma2")))
    if layer_scale:
        print(
            f"warning: the checkpoint has layer-scale weights ({layer_scale[0]}, ...) but D2DiNAT has no layer scale; "
            "they will not be loaded and the converted backbone will not reproduce this checkpoint",
            file=sys.stderr,
        )
    return out, dropped


def main(argv=None):
    return backbone_conversion.run(argv, __doc__.splitlines()[0], load_state_dict, convert)


if __name__ == "__main__":
    sys.exit(main())

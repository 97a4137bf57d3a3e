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
import argparse
import pickle
import sys

import torch

MARKER_KEY = "patch_embed.proj.0.weight"
KIND = "NAT/DiNAT"


def _drop(name: str) -> bool:
    return name.startswith("head.") or name.startswith("norm.")


def load_state_dict(path):
    """Read ``path`` with ``torch.load(weights_only=True)`` and return its state dict, or exit with a clear message."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"error: input checkpoint {path!r} does not exist")
    except IsADirectoryError:
        raise SystemExit(f"error: input checkpoint {path!r} is a directory, expected a .pth file")
    except Exception as e:  # corrupt file, not a torch file, or objects weights_only refuses
        raise SystemExit(f"error: cannot read {path!r} as a PyTorch checkpoint ({type(e).__name__}: {e})")
    if not isinstance(obj, dict):
        raise SystemExit(f"error: {path!r} holds a {type(obj).__name__}, expected a dict of weights")
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    weights = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise SystemExit(f"error: {path!r} contains no tensors under 'state_dict', 'model' or at the top level")
    return weights


def convert(state_dict):
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names)."""
    # checkpoints saved from a DataParallel / DDP wrapper carry a "module." prefix
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    if MARKER_KEY not in state_dict:
        raise SystemExit(f"error: this does not look like a {KIND} checkpoint (no {MARKER_KEY!r})")
    layer_scale = sorted(k for k in state_dict if k.endswith((".gamma1", ".gamma2")))
    if layer_scale:
        print(
            f"warning: the checkpoint has layer-scale weights ({layer_scale[0]}, ...) but D2DiNAT has no layer scale; "
            "they will not be loaded and the converted backbone will not reproduce this checkpoint",
            file=sys.stderr,
        )
    out, dropped = {}, []
    for name, tensor in state_dict.items():
        if _drop(name):
            dropped.append(name)
            continue
        t = tensor.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        out[name] = t.numpy()
    return out, dropped


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="official ImageNet checkpoint (.pth)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)

    model, dropped = convert(load_state_dict(args.input))
    res = {"model": model, "__author__": "third_party", "matching_heuristics": True}
    with open(args.output, "wb") as f:
        pickle.dump(res, f)
    print(f"wrote {len(model)} tensors to {args.output}; dropped {len(dropped)} ({', '.join(sorted(dropped))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

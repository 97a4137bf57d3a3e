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
import argparse
import pickle
import sys

import torch

MARKER_KEY = "downsample_layers.0.0.weight"
KIND = "ConvNeXt"


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
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    weights = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not weights:
        raise SystemExit(f"error: {path!r} contains no tensors under 'model', 'state_dict' or at the top level")
    return weights


def convert(state_dict):
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names)."""
    # checkpoints saved from a DataParallel / DDP wrapper carry a "module." prefix
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    if MARKER_KEY not in state_dict:
        raise SystemExit(f"error: this does not look like a {KIND} checkpoint (no {MARKER_KEY!r})")
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

"""What the ImageNet backbone converters (tools/convert_{swin,convnext,dinat}_to_d2.py) share.

Each converter keeps its model-specific rules (the key that identifies its checkpoints, which names to drop, extra
warnings) and uses this module to read the official .pth, turn the remaining tensors into numpy arrays and write the
Detectron2 .pkl ``{"model": {name: numpy array}, "__author__": "third_party", "matching_heuristics": True}``.
"""
import argparse
import pickle
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["load_state_dict", "convert_state_dict", "run"]


def load_state_dict(path, containers: Sequence[str] = ("model", "state_dict")) -> Dict[str, torch.Tensor]:
    """Read ``path`` with ``torch.load(weights_only=True)`` and return its state dict, or exit with a clear message.

    The weights are taken from the first of ``containers`` that holds a dict, else from the top level; only tensor
    values are kept. Raises SystemExit ("error: ...") when the file is missing, a directory, unreadable, not a dict,
    or holds no tensors.
    """
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
    for key in containers:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    weights = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not weights:
        where = ", ".join(repr(k) for k in containers)
        raise SystemExit(f"error: {path!r} contains no tensors under {where} or at the top level")
    return weights


def convert_state_dict(
    state_dict: Dict[str, torch.Tensor], marker_key: str, kind: str, drop: Callable[[str], bool]
) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """Official state dict -> (Detectron2 model dict of numpy arrays, list of dropped names).

    A "module." prefix on every name (DataParallel / DDP checkpoints) is removed first. Raises SystemExit when
    ``marker_key`` is not among the names ("this does not look like a ``kind`` checkpoint"). Names for which
    ``drop(name)`` is true are left out; every other tensor is kept under its name, half / bfloat16 as float32.
    """
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    if marker_key not in state_dict:
        raise SystemExit(f"error: this does not look like a {kind} checkpoint (no {marker_key!r})")
    out, dropped = {}, []
    for name, tensor in state_dict.items():
        if drop(name):
            dropped.append(name)
            continue
        t = tensor.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        out[name] = t.numpy()
    return out, dropped


def run(
    argv: Optional[Sequence[str]],
    description: str,
    load: Callable[[str], Dict[str, torch.Tensor]],
    convert: Callable[[Dict[str, torch.Tensor]], Tuple[Dict[str, np.ndarray], List[str]]],
    max_dropped_shown: Optional[int] = None,
) -> int:
    """Command line ``input output`` of a converter: ``convert(load(input))`` written to ``output`` as a d2 .pkl.

    ``description`` is the parser's description; the summary line lists the dropped names, the first
    ``max_dropped_shown`` of them then "..." when it is set. Returns 0; errors exit through SystemExit.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("input", help="official ImageNet checkpoint (.pth)")
    parser.add_argument("output", help="Detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)

    model, dropped = convert(load(args.input))
    res = {"model": model, "__author__": "third_party", "matching_heuristics": True}
    with open(args.output, "wb") as f:
        pickle.dump(res, f)
    names = sorted(dropped)
    shown = ", ".join(names[:max_dropped_shown])
    if max_dropped_shown is not None and len(names) > max_dropped_shown:
        shown += ", ..."
    print(f"wrote {len(model)} tensors to {args.output}; dropped {len(dropped)} ({shown})")
    return 0

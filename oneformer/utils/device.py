"""Which device to run on: an explicit choice wins over the automatic one, and a CUDA device that this machine does
not have is refused in one line that says what to pass instead (not a "Found no NVIDIA driver" traceback from deep
inside ``build_model``).

``choose_device(device, opts)`` picks the device of the demo and the predictor; ``check_device(device, fix, count)``
is called before a model is built (predictor, demo, train_net).
"""
from typing import Optional, Sequence

import torch

__all__ = ["DeviceError", "choose_device", "check_device"]


class DeviceError(ValueError):
    """The requested device does not exist here; the message says which choice to make instead."""


def choose_device(device: Optional[str] = None, opts: Sequence[str] = ()) -> str:
    """The device to run on.

    Args:
        device: an explicit choice ("cpu", "cuda", "cuda:1", ...), or None.
        opts: KEY VALUE config overrides; a ``MODEL.DEVICE`` among them is an explicit choice too.
    Returns:
        ``device`` if given, else the ``MODEL.DEVICE`` of ``opts``, else "cuda" when a CUDA device is available,
        else "cpu". Raises DeviceError when ``device`` and ``MODEL.DEVICE`` in ``opts`` are both given and differ.
    """
    opts = list(opts or ())
    in_opts = [v for k, v in zip(opts[0::2], opts[1::2]) if k == "MODEL.DEVICE"]
    if device and in_opts and str(in_opts[-1]) != str(device):
        raise DeviceError(f"two devices were asked for: {device!r} and MODEL.DEVICE {in_opts[-1]!r} in the config "
                          "overrides; give one of them")
    if device:
        return str(device)
    if in_opts:
        return str(in_opts[-1])
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str, fix: str, count: int = 1) -> None:
    """Raise DeviceError (message: the problem, then ``fix``) when ``device`` cannot be used here.

    Args:
        device: a torch device string, e.g. the config's MODEL.DEVICE.
        fix: what to do instead, e.g. "use --device cpu".
        count: how many CUDA devices the run needs (one per process for multi-GPU training).
    Returns None; raises for an unparsable device string, a CUDA device where none is available, or more CUDA
    devices (or a higher device index) than this machine has.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceError(f"{device!r} is not a device ({e}); use cpu or cuda") from None
    if dev.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceError(f"no CUDA device (asked for {device!r}; torch.cuda.is_available() is False); {fix}")
    have = torch.cuda.device_count()
    need = max(count, (dev.index or 0) + 1)
    if need > have:
        raise DeviceError(f"{need} CUDA devices needed ({device!r}" + (f", {count} processes" if count > 1 else "")
                          + f") but this machine has {have}; {fix}")

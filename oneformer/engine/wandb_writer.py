"""A Detectron2 ``EventWriter`` that logs scalars to Weights & Biases (used when ``WANDB.ENABLED``).

Detectron2 0.6/0.7 ship no W&B writer, hence this one. ``wandb`` is imported only when the writer is created;
``require_wandb()`` gives a clear error when it is missing.
"""
from collections import defaultdict

from detectron2.utils.events import EventWriter, get_event_storage

__all__ = ["WandbWriter", "require_wandb"]


def require_wandb():
    """Import and return ``wandb``; ImportError with the fix when it is not installed."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            "WANDB.ENABLED is True but the 'wandb' package is not installed: `pip install wandb` (and `wandb login`), "
            "or set WANDB.ENABLED False to log to TensorBoard and metrics.json only."
        ) from e
    return wandb


class WandbWriter(EventWriter):
    """Logs every new scalar of the event storage (median-smoothed like Detectron2's TensorBoard writer) at its
    iteration; ``wandb.init`` happens on construction, ``wandb.finish`` on ``close``."""

    def __init__(self, project: str, name: str = None, config: dict = None, window_size: int = 20, **init_kwargs):
        self._wandb = require_wandb()
        self._window_size = window_size
        self._last_write = -1
        self._run = self._wandb.init(project=project, name=name, config=config, **init_kwargs)

    def write(self):
        storage = get_event_storage()
        by_iter = defaultdict(dict)
        for key, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                by_iter[itr][key] = value
        for itr in sorted(by_iter):
            self._run.log(by_iter[itr], step=itr)
        if by_iter:
            self._last_write = max(by_iter)

    def close(self):
        self._run.finish()

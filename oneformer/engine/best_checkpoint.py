"""Keep the best checkpoint of the periodic evaluation, and stop early when it no longer improves
(``TEST.BEST_CHECKPOINT.*``, see ``config.py``).

``BestCheckpointHook`` is Detectron2's ``BestCheckpointer`` (same schedule as ``EvalHook``: every TEST.EVAL_PERIOD
iterations and after the last one; saves ``model_best.pth`` with the iteration when the metric improves) with:

- the metric named the way the paper reports it, per task token: "PQ", "AP", "mIoU" (or any other key of the
  evaluators' results, e.g. "PQ_th", "AP50", "fwIoU", or a full storage key such as "sem_seg/mIoU"), and by default
  the metric of the task token the evaluation runs with (panoptic: PQ, instance: AP, semantic: mIoU);
- the choice made on the main process (the only one holding results) and shared with the others, so that every
  process stops at the same iteration;
- early stopping: after PATIENCE evaluations in a row without a gain, training ends (``StopTraining``, caught by
  ``train_net.Trainer.train``) and the log names the best value and its iteration;
- its state (best value, iteration, evaluations without a gain) in the training checkpoints, so ``--resume`` keeps
  comparing with the best so far.
"""
import logging
from typing import Dict, Optional

from detectron2.engine import hooks
from detectron2.utils import comm

__all__ = ["BestCheckpointHook", "StopTraining", "TASK_METRICS", "metric_key"]

logger = logging.getLogger(__name__)

# the evaluators' result groups (Detectron2's COCOPanopticEvaluator, COCOEvaluator "segm", SemSegEvaluator)
TASK_METRICS = {"panoptic": "PQ", "instance": "AP", "semantic": "mIoU"}
_GROUPS = {
    "panoptic_seg": ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "sem_seg": ("mIoU", "fwIoU", "mACC", "pACC"),
}


class StopTraining(BaseException):
    """Raised by ``BestCheckpointHook`` to end training early. A BaseException so that Detectron2's training loop,
    which logs every Exception as a failure, lets it through after running the hooks' ``after_train``."""


def metric_key(metric: str, task: str) -> str:
    """The storage key ("group/name") of ``metric`` for an evaluation with ``task``'s token.

    ``metric`` "" means the task's own metric (TASK_METRICS); a name with "/" is used as given; a known name
    ("PQ", "AP50", "mIoU", ...) gets its evaluator's group. Raises ValueError for an unknown name."""
    name = metric or TASK_METRICS.get(task, "PQ")
    if "/" in name:
        return name
    for group, names in _GROUPS.items():
        if name in names:
            return f"{group}/{name}"
    known = ", ".join(n for names in _GROUPS.values() for n in names)
    raise ValueError(f"TEST.BEST_CHECKPOINT.METRIC {name!r} is not a metric of the evaluators ({known}); give a "
                     "full key such as 'sem_seg/mIoU' for others")


class BestCheckpointHook(hooks.BestCheckpointer):
    """Save ``model_best.pth`` when ``metric`` improves; stop after ``patience`` evaluations without a gain.

    Args:
        eval_period: TEST.EVAL_PERIOD (the EvalHook's period; this hook must run after it).
        checkpointer: the trainer's checkpointer.
        metric: a storage key ("panoptic_seg/PQ", from ``metric_key``); with several evaluation datasets the
            results are prefixed by the dataset name: the first dataset's (``datasets[0]``) is used.
        task: the task token of the evaluation (for the log).
        mode: "max" or "min".
        patience: evaluations without a gain before stopping; 0 never stops.
        datasets: the evaluated dataset names.
    """

    def __init__(self, eval_period: int, checkpointer, metric: str, task: str = "panoptic", mode: str = "max",
                 patience: int = 0, datasets=(), file_prefix: str = "model_best"):
        if mode not in ("max", "min"):
            raise ValueError(f"TEST.BEST_CHECKPOINT.MODE must be 'max' or 'min', got {mode!r}")
        if int(patience) < 0:
            raise ValueError(f"TEST.BEST_CHECKPOINT.PATIENCE must be >= 0, got {patience}")
        super().__init__(eval_period, checkpointer, metric, mode=mode, file_prefix=file_prefix)
        self.metric = metric
        self.task = task
        self.patience = int(patience)
        self.datasets = tuple(datasets)
        self.evals_without_gain = 0

    def _resolve(self, latest: Dict) -> Optional[str]:
        """The storage key holding the metric: the key itself, else the first dataset's prefixed key."""
        if self.metric in latest:
            return self.metric
        for name in self.datasets:
            if f"{name}/{self.metric}" in latest:
                return f"{name}/{self.metric}"
        return next((k for k in latest if k.endswith("/" + self.metric)), None)

    def _best_checking(self):
        stop = None
        if comm.is_main_process():
            stop = self._check_main()
        if comm.get_world_size() > 1:  # only the main process has results: every process follows its decision
            stop = comm.all_gather(stop)[0]
        if stop:
            raise StopTraining(stop)

    def _check_main(self) -> Optional[str]:
        latest = self.trainer.storage.latest()
        key = self._resolve(latest)
        if key is None:
            logger.warning("TEST.BEST_CHECKPOINT: the evaluation (task token %s) gave no %s; computed: %s",
                           self.task, self.metric, ", ".join(sorted(k for k in latest if "/" in k)) or "nothing")
            return None
        self._val_metric = key
        value, it = latest[key]
        before = (self.best_metric, self.best_iter)
        super()._best_checking()  # Detectron2's comparison, save and log
        gained = (self.best_metric, self.best_iter) != before
        self.evals_without_gain = 0 if gained else self.evals_without_gain + 1  # a NaN result is no gain either
        if gained:
            logger.info("model_best.pth: %s = %.4f (task token: %s) at iteration %d", key, value, self.task, it)
        if self.patience and self.evals_without_gain >= self.patience:
            return (f"Early stopping after iteration {self.trainer.iter}: {key} (task token {self.task}) has not "
                    f"improved for {self.evals_without_gain} evaluations (TEST.BEST_CHECKPOINT.PATIENCE "
                    f"{self.patience}); best {self.best_metric:.4f} at iteration {self.best_iter}, saved as "
                    f"{self._file_prefix}.pth")
        return None

    def state_dict(self):
        return {"best_metric": self.best_metric, "best_iter": self.best_iter,
                "evals_without_gain": self.evals_without_gain}

    def load_state_dict(self, state):
        self.best_metric = state.get("best_metric")
        self.best_iter = state.get("best_iter")
        self.evals_without_gain = int(state.get("evals_without_gain", 0))

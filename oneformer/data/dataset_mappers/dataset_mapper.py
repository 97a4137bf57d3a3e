"""Task-aware test mapper ("oneformer_test") — spec §6.

Detectron2's ``DatasetMapper`` in test mode (ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) only; "sem_seg" read
as "L" when the record has ``sem_seg_file_name``; ``annotations`` dropped), plus "task" = "The task is
{MODEL.TEST.TASK}" so the model is conditioned on the evaluated task. Subclassed only to add that field.
Output: the record's fields plus "image" uint8 (3, H, W) resized, "height"/"width" (original size, the size the model
resizes its outputs to), optional "sem_seg" int64 (H, W), "task".
Use with ``build_detection_test_loader(cfg, dataset_name, mapper=OneFormerTestDatasetMapper(cfg, False))``.
"""
from detectron2.config import configurable
from detectron2.data import DatasetMapper

from . import register_dataset_mapper

__all__ = ["OneFormerTestDatasetMapper", "TEST_TASKS", "normalize_task"]

TEST_TASKS = ("semantic", "instance", "panoptic")


def normalize_task(task) -> str:
    """"panoptic" or "The task is panoptic" (any case, surrounding blanks ignored) → "The task is panoptic";
    ValueError naming the value otherwise."""
    if isinstance(task, str):
        name = task.strip().lower()
        if name.startswith("the task is "):
            name = name[len("the task is "):].strip()
        if name in TEST_TASKS:
            return f"The task is {name}"
    raise ValueError(f"MODEL.TEST.TASK must be one of {TEST_TASKS}, got {task!r}")


@register_dataset_mapper("oneformer_test")
class OneFormerTestDatasetMapper(DatasetMapper):
    """Detectron2's test-time DatasetMapper plus the task string (always built in test mode)."""

    @configurable
    def __init__(self, is_train: bool = False, *, task: str = "panoptic", **kwargs):
        """
        Args:
            is_train: kept for the ``mapper(cfg, is_train)`` calling convention; must be False.
            task: "semantic" | "instance" | "panoptic" (or "The task is ...").
            kwargs: Detectron2 ``DatasetMapper`` arguments (augmentations, image_format, ...).
        """
        if is_train:
            raise ValueError("'oneformer_test' is the evaluation mapper; train with INPUT.DATASET_MAPPER_NAME "
                             "(e.g. 'oneformer_unified')")
        super().__init__(False, **kwargs)
        self.task = normalize_task(task)

    @classmethod
    def from_config(cls, cfg, is_train: bool = False):
        ret = super().from_config(cfg, False)  # ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST), no flip/crop
        ret["is_train"] = bool(is_train)
        ret["task"] = cfg.MODEL.TEST.TASK
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = super().__call__(dataset_dict)
        dataset_dict["task"] = self.task
        return dataset_dict

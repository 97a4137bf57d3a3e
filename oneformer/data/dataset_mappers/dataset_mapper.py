"""Task-aware test mapper ("oneformer_test") — spec §6.

Detectron2's ``DatasetMapper`` in test mode (ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) only; "sem_seg" read
as "L" when the record has ``sem_seg_file_name``; ``annotations`` dropped), plus "task" = "The task is
{MODEL.TEST.TASK}" so the model is conditioned on the evaluated task ("all" for MODEL.TEST.TASK all: every output
from its own token). Subclassed only to add that field.
Output: the record's fields plus "image" uint8 (3, H, W) resized, "height"/"width" (original size, the size the model
resizes its outputs to), optional "sem_seg" int64 (H, W), "task".
Use with ``build_detection_test_loader(cfg, dataset_name, mapper=OneFormerTestDatasetMapper(cfg, False))``.
Images are read like the training mappers and the predictor read them (``oneformer.utils.image_io``): grayscale,
RGBA and 16-bit files are converted, and unreadable ones raise errors naming the file.
"""
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from ..tokenizer import TASK_ALL, TASKS, is_task_all, task_string
from .oneformer_unified_dataset_mapper import TrainingMapperBase
from . import register_dataset_mapper

__all__ = ["OneFormerTestDatasetMapper", "TEST_TASKS", "normalize_task"]

TEST_TASKS = TASKS + (TASK_ALL,)


def normalize_task(task) -> str:
    """"panoptic" or "The task is panoptic" (any case, surrounding blanks ignored) → "The task is panoptic"; "all" →
    "all" (each output from its own task token, one pass); ValueError naming MODEL.TEST.TASK and the value otherwise."""
    if is_task_all(task):
        return TASK_ALL
    try:
        return task_string(task)
    except ValueError:
        raise ValueError(f"MODEL.TEST.TASK must be one of {TEST_TASKS}, got {task!r}") from None


@register_dataset_mapper("oneformer_test")
class OneFormerTestDatasetMapper(DatasetMapper):
    """Detectron2's test-time DatasetMapper plus the task string (always built in test mode)."""

    @configurable
    def __init__(self, is_train: bool = False, *, task: str = "panoptic", **kwargs):
        """
        Args:
            is_train: kept for the ``mapper(cfg, is_train)`` calling convention; must be False.
            task: "semantic" | "instance" | "panoptic" (or "The task is ...") | "all" (the model computes each output
                with its own task token).
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
        """Detectron2's test-mode ``DatasetMapper.__call__`` with OneFormer's image reading, plus "task"."""
        dataset_dict = copy.deepcopy(dataset_dict)
        record = dataset_dict.get("file_name", "<record without file_name>")
        read = TrainingMapperBase._read
        image = read(dataset_dict["file_name"], self.image_format, "Image", record)
        utils.check_image_size(dataset_dict, image)
        sem_seg = None
        if "sem_seg_file_name" in dataset_dict:
            sem_seg = read(dataset_dict.pop("sem_seg_file_name"), "L", "Semantic PNG", record).squeeze(2)
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = TrainingMapperBase._augment(self.augmentations, aug_input, record)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(dataset_dict, image.shape[:2], transforms, proposal_topk=self.proposal_topk)
        dataset_dict.pop("annotations", None)
        dataset_dict["task"] = self.task
        return dataset_dict

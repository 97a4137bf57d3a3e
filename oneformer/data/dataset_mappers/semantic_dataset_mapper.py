"""Training mapper for semantic-only data ("oneformer_semantic").

For datasets without panoptic PNGs (e.g. ``register_semantic_dataset`` or Detectron2's ``*_sem_seg_*``): records
with ``file_name`` and ``sem_seg_file_name`` (label PNG of contiguous class ids into ``metadata.stuff_classes``,
``metadata.ignore_label`` = void). The task is always "semantic"; no task is sampled.

Augmentation and fixed-size padding as "oneformer_unified" (the category-area crop uses the label map; padding:
image 128, labels = ignore). Ground truth: one mask per class present after augmentation (ignore excluded), in
increasing class order; boxes from the masks for thing classes (if the metadata has any), [0, 0, 1, 1] otherwise.
Text list: "a photo with a {name}" once per class present, padded with "a semantic photo" (the original example mapper
pads with the typo "an semantic photo"; this one uses the same padding as the unified mapper's semantic task).
A label that is neither ignore nor a class id raises ValueError naming it and the file.
Output as "oneformer_unified" ("sem_seg" = the augmented, padded label map).
"""
import copy

import numpy as np
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from . import register_dataset_mapper
from .oneformer_unified_dataset_mapper import (
    IMAGE_PAD_VALUE,
    PLACEHOLDER_BOX,
    TrainingMapperBase,
    build_unified_augmentations,
    masks_to_boxes,
    pad_to_size,
    training_mapper_kwargs,
)

__all__ = ["OneFormerSemanticDatasetMapper", "semantic_targets"]


def semantic_targets(sem_seg: np.ndarray, num_classes: int, ignore_label: int, thing_ids=(), source: str = ""):
    """(H, W) class map → classes (M,) int64 (increasing), masks (M, H, W) bool, boxes (M, 4) float32.

    Raises ValueError for a value that is neither ``ignore_label`` nor in 0..num_classes-1.
    """
    values = np.unique(sem_seg)
    values = values[values != ignore_label]
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        where = f"{source}: " if source else ""
        raise ValueError(f"{where}label value(s) {bad.tolist()} are neither the ignore label {ignore_label} nor class "
                         f"ids in 0..{num_classes - 1} (metadata.stuff_classes has {num_classes} names)")
    classes = values.astype(np.int64)
    masks = sem_seg[None] == classes[:, None, None] if classes.size else np.zeros((0,) + sem_seg.shape, dtype=bool)
    boxes = masks_to_boxes(masks)
    things = {int(t) for t in thing_ids}
    for i, c in enumerate(classes):
        if int(c) not in things:
            boxes[i] = PLACEHOLDER_BOX
    return classes, masks, boxes


@register_dataset_mapper("oneformer_semantic")
class OneFormerSemanticDatasetMapper(TrainingMapperBase):
    """Semantic-only training data → OneFormer inputs with task "semantic" (see module docstring)."""

    @configurable
    def __init__(self, is_train: bool = True, **kwargs):
        """Args: as ``TrainingMapperBase``; ``semantic_prob``/``instance_prob`` are not used."""
        super().__init__(is_train, **kwargs)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = training_mapper_kwargs(cfg, is_train, "oneformer_semantic")
        ret["augmentations"] = build_unified_augmentations(cfg, ret["ignore_label"])
        return ret

    def _sample_task(self) -> str:
        return "semantic"

    def __call__(self, dataset_dict):
        record = dataset_dict.get("file_name", "<record without file_name>")
        sem_file = dataset_dict.get("sem_seg_file_name")
        if not sem_file:
            raise ValueError(f"Dataset record {record} has no 'sem_seg_file_name': the 'oneformer_semantic' mapper "
                             "trains from semantic label PNGs.")
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read(dataset_dict["file_name"], self.image_format, "Image", record)
        utils.check_image_size(dataset_dict, image)
        sem_seg = self._read_semantic(sem_file, record)
        if sem_seg.shape[:2] != image.shape[:2]:
            raise ValueError(f"Semantic PNG {sem_file} has size {sem_seg.shape[:2]} but image {record} has size "
                             f"{image.shape[:2]}")

        aug_input = T.AugInput(image, sem_seg=sem_seg.astype("double"))
        self._augment(self.augmentations, aug_input, record)
        image, sem_seg = aug_input.image, aug_input.sem_seg.astype(np.int64)
        pad = self._pad_size(image.shape)
        if pad is not None:
            image = pad_to_size(image, pad, IMAGE_PAD_VALUE)
            sem_seg = pad_to_size(sem_seg, pad, self.ignore_label)

        task = self._sample_task()
        classes, masks, boxes = semantic_targets(sem_seg, self.num_classes, self.ignore_label, self.thing_ids, sem_file)
        return self._pack(dataset_dict, image, task, classes, masks, boxes, sem_seg)

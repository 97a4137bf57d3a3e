"""COCO training mapper with large-scale jitter ("coco_unified_lsj") — spec §6.

Same task sampling, ground truth and text list as "oneformer_unified" (it subclasses that mapper); only the
augmentation differs: RandomFlip (INPUT.RANDOM_FLIP) → ResizeScale(MIN_SCALE..MAX_SCALE of IMAGE_SIZE×IMAGE_SIZE)
→ FixedSizeCrop(IMAGE_SIZE×IMAGE_SIZE) padding with 128 (image) and 255 (segmentations). The RGB panoptic PNG is
padded with (255, 255, 255), which decodes to id 256³ − 1 = 16777215 and so matches no segment: padded pixels are
void (no mask, ignore label in ``sem_seg``). No ColorAug and no extra fixed-size padding (the crop already gives
IMAGE_SIZE×IMAGE_SIZE; INPUT.SIZE_DIVISIBILITY is not used).

COCO training records also carry the instance ``annotations`` (merged from the instances json so that Detectron2's
FILTER_EMPTY_ANNOTATIONS drops images without non-crowd things, spec §13 item 14). This mapper ignores them: every
target comes from the panoptic PNG and ``segments_info``; ``annotations`` is removed from the output.
"""
from typing import Dict

from detectron2.data import transforms as T

from . import register_dataset_mapper
from .oneformer_unified_dataset_mapper import OneFormerUnifiedDatasetMapper, training_mapper_kwargs

__all__ = ["COCOUnifiedNewBaselineDatasetMapper", "build_lsj_augmentations"]


def build_lsj_augmentations(cfg):
    """RandomFlip → ResizeScale → FixedSizeCrop (image pad 128, segmentation pad 255) from cfg.INPUT."""
    size = cfg.INPUT.IMAGE_SIZE
    augs = []
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("none", "horizontal", "vertical"):
        raise ValueError(f"cfg.INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    augs += [
        T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE, target_height=size,
                      target_width=size),
        T.FixedSizeCrop(crop_size=(size, size), pad_value=128.0, seg_pad_value=255),
    ]
    return augs


@register_dataset_mapper("coco_unified_lsj")
class COCOUnifiedNewBaselineDatasetMapper(OneFormerUnifiedDatasetMapper):
    """"oneformer_unified" with COCO large-scale-jitter augmentation; instance ``annotations`` are ignored."""

    reject_annotations = False

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict:
        ret = training_mapper_kwargs(cfg, is_train, "coco_unified_lsj")
        ret["augmentations"] = build_lsj_augmentations(cfg)
        ret["size_divisibility"] = -1  # FixedSizeCrop already yields IMAGE_SIZE × IMAGE_SIZE
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = {k: v for k, v in dataset_dict.items() if k != "annotations"}
        return super().__call__(dataset_dict)

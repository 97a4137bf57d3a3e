"""Mapillary Vistas v1.2 semantic segmentation: ``mapillary_vistas_sem_seg_{train,val}``.

Images ``mapillary_vistas/{training,validation}/images/*.jpg`` with label PNGs
``mapillary_vistas/{training,validation}/labels/*.png`` (values 0..64, 65 = unlabeled = ignore), matched by file name
through Detectron2's ``load_sem_seg``.
"""
import os

from detectron2.data.datasets.coco import load_sem_seg

from .custom import datasets_root, register_or_replace
from .register_mapillary_vistas_panoptic import MAPILLARY_VISTAS_CATEGORIES

__all__ = ["register_all_mapillary_vistas"]

_SPLITS = {"mapillary_vistas_sem_seg_train": "training", "mapillary_vistas_sem_seg_val": "validation"}


def _load(image_dir, gt_dir):
    for what, d in (("image folder", image_dir), ("label folder", gt_dir)):
        if not os.path.isdir(d):
            raise FileNotFoundError(
                f"Mapillary Vistas {what} {d} does not exist (see datasets/README.md for the expected layout)."
            )
    return load_sem_seg(gt_dir, image_dir, gt_ext="png", image_ext="jpg")


def register_all_mapillary_vistas(root=None, prefix=""):
    """Register ``{prefix}mapillary_vistas_sem_seg_{train,val}`` (evaluator_type "sem_seg", ignore_label 65)."""
    root = datasets_root() if root is None else root
    names = []
    for name, dirname in _SPLITS.items():
        image_dir = os.path.join(root, "mapillary_vistas", dirname, "images")
        gt_dir = os.path.join(root, "mapillary_vistas", dirname, "labels")
        register_or_replace(
            prefix + name,
            lambda x=image_dir, y=gt_dir: _load(x, y),
            dict(
                stuff_classes=[c["name"] for c in MAPILLARY_VISTAS_CATEGORIES],
                stuff_colors=[c["color"] for c in MAPILLARY_VISTAS_CATEGORIES],
                image_root=image_dir,
                sem_seg_root=gt_dir,
                evaluator_type="sem_seg",
                ignore_label=65,
            ),
        )
        names.append(prefix + name)
    return names

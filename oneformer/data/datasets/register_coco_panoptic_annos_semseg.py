"""COCO panoptic with semantic PNGs and instance annotations: ``coco_2017_{train,val}_panoptic_with_sem_seg``, and
``coco_2017_val_panoptic2instance`` (the instance val set derived from the panoptic annotations).

Files (under ``$DETECTRON2_DATASETS/coco``)::

    {train,val}2017/*.jpg
    panoptic_{train,val}2017/*.png                   RGB panoptic PNGs
    annotations/panoptic_{train,val}2017.json
    panoptic_semseg_{train,val}2017/*.png            0..132, 255 = unlabeled
                                                     (prepare_coco_semantic_annos_from_panoptic_annos.py)
    annotations/instances_train2017.json             merged into the train records as `annotations`
    annotations/panoptic2instances_val2017.json      val instances (panoptic2detection_coco_format.py --things-only)

Contiguous ids follow Detectron2's ``COCO_CATEGORIES`` (133 classes, the 80 things first), so thing ids map to 0..79
and all ids to 0..132. Unlike Mask2Former, the records carry the COCO instance ``annotations`` (category ids
contiguous), so Detectron2's empty-annotation filter drops training images without a non-crowd thing instance.
"""
import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES, _get_builtin_metadata

from .custom import (
    _register_coco_instances_with_fixed_ids,
    build_panoptic_metadata,
    datasets_root,
    load_instance_json,
    load_panoptic_json,
    panoptic_split_metadata,
    register_or_replace,
)

__all__ = [
    "get_coco_panoptic_metadata",
    "load_coco_panoptic_json_with_instances",
    "register_coco_panoptic_annos_sem_seg",
    "register_all_coco_panoptic_annos_sem_seg",
]

_PREDEFINED_SPLITS_COCO_PANOPTIC = {
    # name: (image dir, panoptic PNG dir, panoptic json, semantic dir, instances json)
    "coco_2017_train_panoptic_with_sem_seg": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_semseg_train2017",
        "coco/annotations/instances_train2017.json",
    ),
    "coco_2017_val_panoptic_with_sem_seg": (
        "coco/val2017",
        "coco/panoptic_val2017",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_semseg_val2017",
        "coco/annotations/panoptic2instances_val2017.json",
    ),
}

_PANOPTIC2INSTANCE_VAL = ("coco_2017_val_panoptic2instance", "coco/val2017",
                          "coco/annotations/panoptic2instances_val2017.json")

_P2I_HINT = (
    "Create it with `python datasets/panoptic2detection_coco_format.py --things-only` (see datasets/README.md)."
)


def get_coco_panoptic_metadata():
    """thing_* = the 80 things, stuff_* = all 133 classes; thing ids -> 0..79, all ids -> 0..132."""
    return build_panoptic_metadata(COCO_CATEGORIES, "detectron2 COCO_CATEGORIES")


def load_coco_panoptic_json_with_instances(json_file, image_dir, gt_dir, semseg_dir, instances_json, meta):
    """Panoptic records (file_name, image_id, pan_seg_file_name, sem_seg_file_name, segments_info) plus the COCO
    instance ``annotations`` of the same image id (``[]`` for an image the instances json does not list)."""
    records = load_panoptic_json(
        json_file,
        image_dir,
        gt_dir,
        semseg_dir,
        meta["thing_dataset_id_to_contiguous_id"],
        meta["stuff_dataset_id_to_contiguous_id"],
        image_ext=".jpg",
        hint="Download COCO's panoptic annotations (see datasets/README.md).",
    )
    hint = _P2I_HINT if "panoptic2instances_" in os.path.basename(instances_json) else (
        "Download COCO's instance annotations (see datasets/README.md).")
    instances = load_instance_json(instances_json, image_dir, meta["thing_dataset_id_to_contiguous_id"], hint)
    annotations = {r["image_id"]: r["annotations"] for r in instances}
    for rec in records:
        rec["annotations"] = annotations.get(rec["image_id"], [])
    return records


def register_coco_panoptic_annos_sem_seg(name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root,
                                         instances_json):
    return register_or_replace(
        name,
        lambda: load_coco_panoptic_json_with_instances(
            panoptic_json, image_root, panoptic_root, sem_seg_root, instances_json, metadata
        ),
        panoptic_split_metadata(
            metadata,
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            json_file=instances_json,
            evaluator_type="coco_panoptic_seg",
        ),
    )


def register_all_coco_panoptic_annos_sem_seg(root=None, prefix=""):
    """Register ``{prefix}coco_2017_{train,val}_panoptic_with_sem_seg`` and
    ``{prefix}coco_2017_val_panoptic2instance`` with files under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root = datasets_root() if root is None else root
    metadata = get_coco_panoptic_metadata()
    names = []
    for name, (image_dir, pan_dir, pan_json, sem_dir, ins_json) in _PREDEFINED_SPLITS_COCO_PANOPTIC.items():
        register_coco_panoptic_annos_sem_seg(
            prefix + name,
            metadata,
            *(os.path.join(root, p) for p in (image_dir, pan_dir, pan_json, sem_dir, ins_json)),
        )
        names.append(prefix + name)
    name, image_dir, json_file = _PANOPTIC2INSTANCE_VAL
    _register_coco_instances_with_fixed_ids(
        prefix + name,
        _get_builtin_metadata("coco"),
        os.path.join(root, json_file),
        os.path.join(root, image_dir),
        hint=_P2I_HINT,
    )
    names.append(prefix + name)
    return names

"""ADE20K panoptic (150 classes: 100 things, 50 stuff): ``ade20k_panoptic_{train,val}``.

Files (under ``$DETECTRON2_DATASETS/ADEChallengeData2016``, written by ``datasets/prepare_ade20k_pan_seg.py``,
``prepare_ade20k_sem_seg.py`` and ``prepare_ade20k_ins_seg.py``)::

    images/{training,validation}/*.jpg
    ade20k_panoptic_{train,val}/*.png           RGB panoptic PNGs
    ade20k_panoptic_{train,val}.json            segments_info with category ids 0..149
    annotations_detectron2/{training,validation}/*.png   semantic PNGs 0..149, 255 = ignore
    ade20k_instance_{train,val}.json            COCO instances (thing ids in the 150-space), metadata json_file

Category ids are the 0-based SceneParsing-150 ids and are also the contiguous ids (identity maps), so thing
contiguous ids are NOT 0..99 (7, 8, 10, ...): ADE uses the "ade20k_panoptic_seg" evaluators, whose instance evaluator
accepts that. Class names are Detectron2's ``ADE20K_SEM_SEG_CATEGORIES`` (the SceneParsing 150 list).
"""
import os

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

from .custom import datasets_root, load_panoptic_json, panoptic_split_metadata, register_or_replace

__all__ = [
    "ADE20K_150_CATEGORIES",
    "ADE20K_THING_IDS",
    "get_ade20k_panoptic_metadata",
    "load_ade20k_panoptic_json",
    "register_ade20k_panoptic",
    "register_all_ade20k_panoptic",
]

# 0-based SceneParsing-150 ids of the 100 thing classes of the ADE20K instance-segmentation challenge
# (ade20k_instance_catid_mapping.txt lists them 1-based, instance id k+1 <-> 150-id ADE20K_THING_IDS[k] + 1).
ADE20K_THING_IDS = (
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37,
    38, 39, 41, 42, 43, 44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67,
    69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 92,
    93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118, 119, 120, 121, 123, 124,
    125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147, 148, 149,
)

# The standard ADE20K 150-class visualization palette, indexed by 0-based class id.
_ADE20K_COLORS = (
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80),
    (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7),
    (150, 5, 61), (120, 120, 70), (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4),
    (255, 51, 7), (204, 70, 3), (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255),
    (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10), (7, 255, 255),
    (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255),
    (140, 140, 140), (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0),
    (153, 255, 0), (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112), (0, 255, 133),
    (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0), (0, 143, 255), (51, 255, 0),
    (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0), (0, 255, 153),
    (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255),
    (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255),
    (163, 255, 0), (255, 235, 0), (8, 184, 170), (133, 0, 255), (0, 255, 92), (184, 0, 255),
    (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255),
    (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255),
    (255, 255, 0), (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0),
    (173, 0, 255), (0, 245, 255), (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255),
    (184, 255, 0), (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
)

assert len(ADE20K_SEM_SEG_CATEGORIES) == 150 and len(_ADE20K_COLORS) == 150 and len(set(ADE20K_THING_IDS)) == 100

ADE20K_150_CATEGORIES = [
    {"id": i, "name": name, "isthing": int(i in ADE20K_THING_IDS), "color": list(_ADE20K_COLORS[i])}
    for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
]

_PREDEFINED_SPLITS_ADE20K_PANOPTIC = {
    # name: (image dir, panoptic PNG dir, panoptic json, semantic dir, instance json), relative to the root
    "ade20k_panoptic_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_panoptic_train",
        "ADEChallengeData2016/ade20k_panoptic_train.json",
        "ADEChallengeData2016/annotations_detectron2/training",
        "ADEChallengeData2016/ade20k_instance_train.json",
    ),
    "ade20k_panoptic_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_panoptic_val",
        "ADEChallengeData2016/ade20k_panoptic_val.json",
        "ADEChallengeData2016/annotations_detectron2/validation",
        "ADEChallengeData2016/ade20k_instance_val.json",
    ),
}


def get_ade20k_panoptic_metadata():
    """Class metadata: stuff_* = all 150 classes, thing_* = the 100 things, identity id maps."""
    things = [c for c in ADE20K_150_CATEGORIES if c["isthing"]]
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [c["color"] for c in things],
        "stuff_classes": [c["name"] for c in ADE20K_150_CATEGORIES],
        "stuff_colors": [c["color"] for c in ADE20K_150_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: c["id"] for c in things},
        # every class, so the semantic evaluator can use this map
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["id"] for c in ADE20K_150_CATEGORIES},
    }


def load_ade20k_panoptic_json(json_file, image_dir, gt_dir, semseg_dir, meta):
    """Records: file_name, image_id, pan_seg_file_name, sem_seg_file_name, segments_info (contiguous ids, isthing)."""
    return load_panoptic_json(
        json_file,
        image_dir,
        gt_dir,
        semseg_dir,
        meta["thing_dataset_id_to_contiguous_id"],
        meta["stuff_dataset_id_to_contiguous_id"],
        image_ext=".jpg",
        hint="Create it with `python datasets/prepare_ade20k_pan_seg.py` (see datasets/README.md).",
    )


def register_ade20k_panoptic(name, metadata, image_root, panoptic_root, panoptic_json, sem_seg_root, instances_json):
    """Register one ADE20K panoptic split under ``name`` (replacing an earlier registration)."""
    return register_or_replace(
        name,
        lambda: load_ade20k_panoptic_json(panoptic_json, image_root, panoptic_root, sem_seg_root, metadata),
        panoptic_split_metadata(
            metadata,
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            sem_seg_root=sem_seg_root,
            json_file=instances_json,
            evaluator_type="ade20k_panoptic_seg",
        ),
    )


def register_all_ade20k_panoptic(root=None, prefix=""):
    """Register ``{prefix}ade20k_panoptic_{train,val}`` with files under ``root`` (default ``$DETECTRON2_DATASETS``)."""
    root = datasets_root() if root is None else root
    metadata = get_ade20k_panoptic_metadata()
    names = []
    for name, (image_dir, pan_dir, pan_json, sem_dir, ins_json) in _PREDEFINED_SPLITS_ADE20K_PANOPTIC.items():
        register_ade20k_panoptic(
            prefix + name,
            metadata,
            os.path.join(root, image_dir),
            os.path.join(root, pan_dir),
            os.path.join(root, pan_json),
            os.path.join(root, sem_dir),
            os.path.join(root, ins_json),
        )
        names.append(prefix + name)
    return names

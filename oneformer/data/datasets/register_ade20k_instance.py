"""ADE20K instance segmentation (the 100 thing classes): ``ade20k_instance_{train,val}``.

COCO-format jsons ``ADEChallengeData2016/ade20k_instance_{train,val}.json`` (``datasets/prepare_ade20k_ins_seg.py``)
whose category ids are the 0-based SceneParsing-150 ids of the things (7, 8, 10, ...); they are mapped to 0..99, the
label space of OneFormer's ADE20K instance predictions for an "instance" task string.
"""
import os

from .custom import _register_coco_instances_with_fixed_ids, datasets_root
from .register_ade20k_panoptic import ADE20K_150_CATEGORIES

__all__ = ["ADE20K_INSTANCE_CATEGORIES", "get_ade20k_instance_metadata", "register_all_ade20k_instance"]

ADE20K_INSTANCE_CATEGORIES = [c for c in ADE20K_150_CATEGORIES if c["isthing"]]

_PREDEFINED_SPLITS_ADE20K_INSTANCE = {
    # name: (image dir, instances json)
    "ade20k_instance_train": (
        "ADEChallengeData2016/images/training",
        "ADEChallengeData2016/ade20k_instance_train.json",
    ),
    "ade20k_instance_val": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/ade20k_instance_val.json",
    ),
}


def get_ade20k_instance_metadata():
    return {
        "thing_classes": [c["name"] for c in ADE20K_INSTANCE_CATEGORIES],
        "thing_colors": [c["color"] for c in ADE20K_INSTANCE_CATEGORIES],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(ADE20K_INSTANCE_CATEGORIES)},
    }


def register_all_ade20k_instance(root=None, prefix=""):
    """Register ``{prefix}ade20k_instance_{train,val}`` (evaluator_type "coco") via ``register_coco_instances``.

    The loader maps the json's category ids through the fixed 150-space -> 0..99 map instead of taking the json's
    category names as ``thing_classes``, so jsons whose names follow the instance challenge's wording (e.g.
    "windowpane" for "window") load as well.
    """
    root = datasets_root() if root is None else root
    names = []
    for name, (image_dir, json_file) in _PREDEFINED_SPLITS_ADE20K_INSTANCE.items():
        _register_coco_instances_with_fixed_ids(
            prefix + name,
            get_ade20k_instance_metadata(),
            os.path.join(root, json_file),
            os.path.join(root, image_dir),
            hint="Create it with `python datasets/prepare_ade20k_ins_seg.py` (see datasets/README.md).",
        )
        names.append(prefix + name)
    return names

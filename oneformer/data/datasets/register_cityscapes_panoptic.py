"""Cityscapes panoptic (19 train ids): re-registers ``cityscapes_fine_panoptic_{train,val}``, replacing Detectron2's.

Files (under ``$DETECTRON2_DATASETS/cityscapes``; the json/PNGs come from cityscapesscripts' ``createPanopticImgs``,
the train-id PNGs from ``createTrainIdLabelImgs``)::

    leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png
    gtFine/cityscapes_panoptic_{train,val}/<name>_gtFine_panoptic.png
    gtFine/cityscapes_panoptic_{train,val}.json          category ids = Cityscapes label ids (24 = person, ...)

Differences from Detectron2's registration: records get ``isthing`` in ``segments_info``, the semantic file path is
built from the city folder (so dataset roots containing dots work), and missing files or unknown category ids raise
errors that name them. Class names, colors, ids and train ids come from cityscapesscripts' label table; label ids map
to train ids (0..18), and ``thing_classes`` and ``stuff_classes`` both list all 19 names (Detectron2's convention for
Cityscapes, which its visualizer and evaluators expect).
"""
import json
import os

from cityscapesscripts.helpers.labels import labels as _CITYSCAPES_LABELS
from detectron2.data.datasets.cityscapes_panoptic import get_cityscapes_panoptic_files

from .custom import datasets_root, panoptic_split_metadata, register_or_replace

__all__ = [
    "CITYSCAPES_PANOPTIC_CATEGORIES",
    "get_cityscapes_panoptic_metadata",
    "load_cityscapes_panoptic",
    "register_all_cityscapes_panoptic",
]

# the 19 evaluated classes, in train-id order
CITYSCAPES_PANOPTIC_CATEGORIES = sorted(
    (
        {
            "id": lab.id,
            "trainId": lab.trainId,
            "name": lab.name,
            "isthing": int(lab.hasInstances),
            "color": list(lab.color),
        }
        for lab in _CITYSCAPES_LABELS
        if 0 <= lab.trainId < 255 and not lab.ignoreInEval
    ),
    key=lambda c: c["trainId"],
)
assert [c["trainId"] for c in CITYSCAPES_PANOPTIC_CATEGORIES] == list(range(19))

_RAW_CITYSCAPES_PANOPTIC_SPLITS = {
    # name: (image dir, panoptic PNG dir, panoptic json, train-id semantic dir)
    "cityscapes_fine_panoptic_train": (
        "cityscapes/leftImg8bit/train",
        "cityscapes/gtFine/cityscapes_panoptic_train",
        "cityscapes/gtFine/cityscapes_panoptic_train.json",
        "cityscapes/gtFine/train",
    ),
    "cityscapes_fine_panoptic_val": (
        "cityscapes/leftImg8bit/val",
        "cityscapes/gtFine/cityscapes_panoptic_val",
        "cityscapes/gtFine/cityscapes_panoptic_val.json",
        "cityscapes/gtFine/val",
    ),
}

_IMAGE_SUFFIX = "_leftImg8bit.png"


def get_cityscapes_panoptic_metadata():
    cats = CITYSCAPES_PANOPTIC_CATEGORIES
    return {
        "thing_classes": [c["name"] for c in cats],
        "thing_colors": [c["color"] for c in cats],
        "stuff_classes": [c["name"] for c in cats],
        "stuff_colors": [c["color"] for c in cats],
        "thing_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in cats if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: c["trainId"] for c in cats if not c["isthing"]},
    }


def load_cityscapes_panoptic(image_dir, gt_dir, gt_json, sem_dir, meta):
    """Records: file_name, image_id, pan_seg_file_name, sem_seg_file_name (``*_gtFine_labelTrainIds.png``),
    segments_info (category ids mapped to train ids, ``isthing`` added)."""
    if not os.path.isfile(gt_json):
        raise FileNotFoundError(
            f"Cityscapes panoptic json {gt_json} does not exist. Create it with cityscapesscripts: "
            "`CITYSCAPES_DATASET=<root>/cityscapes python -m cityscapesscripts.preparation.createPanopticImgs` "
            "(see datasets/README.md)."
        )
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image folder {image_dir} does not exist.")
    with open(gt_json) as f:
        json_info = json.load(f)
    try:
        files = get_cityscapes_panoptic_files(image_dir, gt_dir, json_info)
    except AssertionError as e:
        raise FileNotFoundError(
            f"Cityscapes files do not match {gt_json} (images under {image_dir}, panoptic PNGs under {gt_dir}): {e}"
        ) from e
    thing_map = meta["thing_dataset_id_to_contiguous_id"]
    stuff_map = meta["stuff_dataset_id_to_contiguous_id"]
    ret = []
    for image_file, label_file, segments_info in files:
        base = os.path.basename(image_file)[: -len(_IMAGE_SUFFIX)]
        city = os.path.basename(os.path.dirname(image_file))
        segments = []
        for seg in segments_info:
            seg = dict(seg)
            cid = seg["category_id"]
            if cid in thing_map:
                seg["category_id"], seg["isthing"] = thing_map[cid], True
            elif cid in stuff_map:
                seg["category_id"], seg["isthing"] = stuff_map[cid], False
            else:
                raise ValueError(
                    f"{gt_json}: annotation {os.path.basename(label_file)} has segment {seg.get('id')} with category "
                    f"id {cid!r}, which is not one of the 19 evaluated Cityscapes label ids."
                )
            segments.append(seg)
        ret.append(
            {
                "file_name": image_file,
                "image_id": "_".join(base.split("_")[:3]),
                "sem_seg_file_name": os.path.join(sem_dir, city, base + "_gtFine_labelTrainIds.png"),
                "pan_seg_file_name": label_file,
                "segments_info": segments,
            }
        )
    if ret and not os.path.isfile(ret[0]["sem_seg_file_name"]):
        raise FileNotFoundError(
            f"Cityscapes train-id label {ret[0]['sem_seg_file_name']} does not exist. Create the *_labelTrainIds.png "
            "files with `python -m cityscapesscripts.preparation.createTrainIdLabelImgs`."
        )
    return ret


def register_all_cityscapes_panoptic(root=None, prefix=""):
    """(Re-)register ``{prefix}cityscapes_fine_panoptic_{train,val}`` with files under ``root``."""
    root = datasets_root() if root is None else root
    meta = get_cityscapes_panoptic_metadata()
    names = []
    for name, (image_dir, gt_dir, gt_json, sem_dir) in _RAW_CITYSCAPES_PANOPTIC_SPLITS.items():
        image_dir, gt_dir, gt_json, sem_dir = (os.path.join(root, p) for p in (image_dir, gt_dir, gt_json, sem_dir))
        register_or_replace(
            prefix + name,
            lambda x=image_dir, y=gt_dir, z=gt_json, s=sem_dir: load_cityscapes_panoptic(x, y, z, s, meta),
            panoptic_split_metadata(
                meta,
                image_root=image_dir,
                panoptic_root=gt_dir,
                panoptic_json=gt_json,
                gt_dir=sem_dir,
                evaluator_type="cityscapes_panoptic_seg",
            ),
        )
        names.append(prefix + name)
    return names

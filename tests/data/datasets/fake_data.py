"""Tiny datasets in the real on-disk formats, written into a temporary folder for the dataset tests.

Images are H x W = 6 x 8. Panoptic PNGs are RGB with segment id = R + 256·G + 256²·B. Every ``make_*`` function
takes the datasets root (what ``$DETECTRON2_DATASETS`` points to) and returns a dict of the interesting paths/ids.
"""
import copy
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

H, W = 6, 8
REPO = Path(__file__).resolve().parents[3]


def id2rgb(ids):
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb2id(rgb):
    rgb = np.asarray(rgb, dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _mkdir_for(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def write_image(path, h=H, w=W, value=100):
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    Image.fromarray(arr).save(_mkdir_for(path))
    return path


def write_label(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(_mkdir_for(path))
    return path


def write_panoptic_png(path, ids):
    Image.fromarray(id2rgb(ids)).save(_mkdir_for(path))
    return path


def write_json(path, data):
    with open(_mkdir_for(path), "w") as f:
        json.dump(data, f)
    return path


def paint(regions, h=H, w=W):
    """regions: [(segment id, (y0, y1, x0, x1))] painted in order onto a void (0) canvas."""
    ids = np.zeros((h, w), dtype=np.uint32)
    for sid, (y0, y1, x0, x1) in regions:
        ids[y0:y1, x0:x1] = sid
    return ids


def segments_of(ids, cats, crowd=()):
    """segments_info for the ids painted in ``ids``: cats = {segment id: category id}."""
    out = []
    for sid, cid in cats.items():
        mask = ids == sid
        ys, xs = np.nonzero(mask)
        out.append({
            "id": int(sid),
            "category_id": int(cid),
            "area": int(mask.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            if mask.any() else [0, 0, 0, 0],
            "iscrowd": int(sid in crowd),
        })
    return out


def rle_of(mask):
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


# ---------------------------------------------------------------------------------------------------------------------
# COCO


def make_coco(root):
    """coco/{train,val}2017 with one image each: stuff 'sky-other-merged' (id 187, top), things 'person' (id 1,
    bottom-left) and 'dog' (id 18, bottom-right); panoptic PNGs/json, semantic PNGs and the instance jsons."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    coco = os.path.join(root, "coco")
    out = {"image_ids": {}}
    contiguous = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
    for split, image_id in (("train", 139), ("val", 285)):
        stem = f"{image_id:012d}"
        write_image(os.path.join(coco, f"{split}2017", stem + ".jpg"))
        ids = paint([(1001, (0, 3, 0, 8)), (2002, (3, 6, 0, 4)), (3003, (3, 6, 4, 8))])
        cats = {1001: 187, 2002: 1, 3003: 18}  # sky-other-merged, person, dog
        write_panoptic_png(os.path.join(coco, f"panoptic_{split}2017", stem + ".png"), ids)
        write_json(os.path.join(coco, "annotations", f"panoptic_{split}2017.json"), {
            "images": [{"id": image_id, "file_name": stem + ".jpg", "height": H, "width": W}],
            "annotations": [
                {"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_of(ids, cats)}
            ],
            "categories": COCO_CATEGORIES,
        })
        sem = np.full((H, W), 255, dtype=np.uint8)
        for sid, cid in cats.items():
            sem[ids == sid] = contiguous[cid]
        write_label(os.path.join(coco, f"panoptic_semseg_{split}2017", stem + ".png"), sem)
        anns = []
        for sid in (2002, 3003):
            mask = ids == sid
            ys, xs = np.nonzero(mask)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cats[sid], "iscrowd": 0,
                         "area": int(mask.sum()), "segmentation": rle_of(mask),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
        inst_name = "instances_train2017.json" if split == "train" else "panoptic2instances_val2017.json"
        write_json(os.path.join(coco, "annotations", inst_name), {
            "images": [{"id": image_id, "file_name": stem + ".jpg", "height": H, "width": W}],
            "annotations": anns,
            "categories": [c for c in COCO_CATEGORIES if c["isthing"]],
        })
        out["image_ids"][split] = image_id
    return out


# ---------------------------------------------------------------------------------------------------------------------
# ADE20K (raw inputs of the preparation scripts)


def make_ade_raw(root):
    """ADEChallengeData2016 images, semantic labels (1..150, 0 = other) and instance PNGs (R = instance category
    1..100, G = instance index) for one training and one validation image.

    Layout of each image: top rows wall (150-id 0 -> label 1), bottom-left a bed (instance cat 1 -> 150-id 7),
    bottom-right a window (instance cat 2 -> 150-id 8), column 0 of the top rows 'other' (label 0).
    """
    ade = os.path.join(root, "ADEChallengeData2016")
    stems = {}
    for split, dirname, stem in (("train", "training", "ADE_train_00000001"),
                                 ("val", "validation", "ADE_val_00000001")):
        write_image(os.path.join(ade, "images", dirname, stem + ".jpg"))
        sem = np.zeros((H, W), dtype=np.uint8)
        sem[:3, 1:] = 1  # wall
        sem[3:, :4] = 8  # bed (150-id 7, 1-based 8)
        sem[3:, 4:] = 9  # window (150-id 8, 1-based 9)
        write_label(os.path.join(ade, "annotations", dirname, stem + ".png"), sem)
        ins = np.zeros((H, W, 3), dtype=np.uint8)
        ins[3:, :4, 0], ins[3:, :4, 1] = 1, 1  # instance category 1 (bed), instance 1
        ins[3:, 4:, 0], ins[3:, 4:, 1] = 2, 2  # instance category 2 (window), instance 2
        Image.fromarray(ins).save(_mkdir_for(os.path.join(ade, "annotations_instance", dirname, stem + ".png")))
        stems[split] = stem
    return {"root": ade, "stems": stems}


# ---------------------------------------------------------------------------------------------------------------------
# Cityscapes


def make_cityscapes(root):
    """One image per split in aachen: road (label 7, stuff), a car (26, instance) and a crowd of persons (24)."""
    cs = os.path.join(root, "cityscapes")
    from cityscapesscripts.helpers.labels import labels

    cats = [{"id": lab.id, "name": lab.name, "color": list(lab.color), "supercategory": lab.category,
             "isthing": int(lab.hasInstances)} for lab in labels if 0 <= lab.trainId < 255]
    out = {}
    for split in ("train", "val"):
        base = "aachen_000000_000019" if split == "train" else "frankfurt_000000_000294"
        city = base.split("_")[0]
        write_image(os.path.join(cs, "leftImg8bit", split, city, base + "_leftImg8bit.png"))
        ids = paint([(7, (0, 3, 0, 8)), (26001, (3, 6, 0, 4)), (24, (3, 6, 4, 8))])
        segs = segments_of(ids, {7: 7, 26001: 26, 24: 24}, crowd=(24,))
        write_panoptic_png(os.path.join(cs, "gtFine", f"cityscapes_panoptic_{split}", base + "_gtFine_panoptic.png"),
                           ids)
        train_ids = np.full((H, W), 255, dtype=np.uint8)
        train_ids[:3], train_ids[3:, :4], train_ids[3:, 4:] = 0, 13, 11
        write_label(os.path.join(cs, "gtFine", split, city, base + "_gtFine_labelTrainIds.png"), train_ids)
        write_json(os.path.join(cs, "gtFine", f"cityscapes_panoptic_{split}.json"), {
            "images": [{"id": base, "file_name": base + "_leftImg8bit.png", "width": W, "height": H}],
            "annotations": [{"image_id": base, "file_name": base + "_gtFine_panoptic.png", "segments_info": segs}],
            "categories": cats,
        })
        out[split] = base
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Mapillary Vistas


def make_mapillary(root):
    """One image per split: Road (label 13, id 14, stuff), Car (label 55, id 56, thing)."""
    mv = os.path.join(root, "mapillary_vistas")
    out = {}
    for split in ("training", "validation"):
        stem = "abc" if split == "training" else "xyz"
        write_image(os.path.join(mv, split, "images", stem + ".jpg"))
        ids = paint([(1, (0, 3, 0, 8)), (2, (3, 6, 0, 8))])
        segs = segments_of(ids, {1: 14, 2: 56})
        write_panoptic_png(os.path.join(mv, split, "panoptic", stem + ".png"), ids)
        write_json(os.path.join(mv, split, "panoptic", "panoptic_2018.json"), {
            "images": [{"id": stem, "file_name": stem + ".jpg", "width": W, "height": H}],
            "annotations": [{"image_id": stem, "file_name": stem + ".png", "segments_info": segs}],
            "categories": [],
        })
        labels = np.full((H, W), 65, dtype=np.uint8)
        labels[:3], labels[3:] = 13, 55
        write_label(os.path.join(mv, split, "labels", stem + ".png"), labels)
        out[split] = stem
    return out


# ---------------------------------------------------------------------------------------------------------------------
# generic COCO-format panoptic data (custom datasets, validate_dataset)

CUSTOM_CATEGORIES = [
    {"id": 10, "name": "ground", "isthing": 0, "color": [10, 200, 10]},
    {"id": 20, "name": "cat", "isthing": 1, "color": [200, 10, 10]},
    {"id": 30, "name": "sky", "isthing": 0},
    {"id": 40, "name": "dog", "isthing": 1},
]


def make_custom_panoptic(root, n_images=2, categories=None):
    """images/, panoptic/, semseg/ and panoptic.json with ``n_images`` PNG-format images (not jpg) of three segments:
    ground (top), cat (bottom-left), dog (bottom-right)."""
    categories = copy.deepcopy(CUSTOM_CATEGORIES if categories is None else categories)
    contiguous = {c["id"]: i for i, c in enumerate(categories)}
    images, annotations = [], []
    for i in range(n_images):
        stem = f"img{i}"
        write_image(os.path.join(root, "images", stem + ".png"))
        ids = paint([(1, (0, 3, 0, 8)), (2, (3, 6, 0, 4)), (3, (3, 6, 4, 8))])
        cats = {1: 10, 2: 20, 3: 40}
        write_panoptic_png(os.path.join(root, "panoptic", stem + ".png"), ids)
        sem = np.full((H, W), 255, dtype=np.uint8)
        for sid, cid in cats.items():
            sem[ids == sid] = contiguous[cid]
        write_label(os.path.join(root, "semseg", stem + ".png"), sem)
        images.append({"id": i + 1, "file_name": stem + ".png", "width": W, "height": H})
        annotations.append({"image_id": i + 1, "file_name": stem + ".png", "segments_info": segments_of(ids, cats)})
    data = {"images": images, "annotations": annotations, "categories": categories}
    write_json(os.path.join(root, "panoptic.json"), data)
    return {
        "image_root": os.path.join(root, "images"),
        "panoptic_root": os.path.join(root, "panoptic"),
        "panoptic_json": os.path.join(root, "panoptic.json"),
        "sem_seg_root": os.path.join(root, "semseg"),
        "data": data,
    }

#!/usr/bin/env python3
"""ADE20K instance annotations in COCO format: ``ade20k_instance_{train,val}.json``.

Inputs (under ``$DETECTRON2_DATASETS/ADEChallengeData2016``)::

    images/{training,validation}/*.jpg
    annotations_instance/{training,validation}/*.png    R = instance category (1..100, 0 = ignore), G = instance index
    ade20k_instance_catid_mapping.txt  (optional)       instance category id -> SceneParsing-150 id (1-based)

Output ``ade20k_instance_{train,val}.json``: one annotation per instance with an RLE ``segmentation``, ``bbox``,
``area``, ``iscrowd`` 0 and ``category_id`` in the 0-based 150-space (7 = bed, 8 = window, 10 = cabinet, ...), which
``ade20k_instance_*`` maps to 0..99. Image ids are the file stems, as in the panoptic json. Category names are those of
OneFormer's ADE20K metadata.

    python datasets/prepare_ade20k_ins_seg.py [--dataset-dir DIR] [--workers N]
"""
import json
import os
import sys
from functools import partial
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (datasets/_common.py)
from prepare_ade20k_pan_seg import (  # noqa: E402
    ADE20K_150_CATEGORIES,
    SPLITS,
    bbox_of,
    image_stems,
    iter_instances,
    load_mapping,
    read_instance_png,
    require_folders,
    run_cli,
)


def convert_image(stem, image_dir, instance_dir, mapping):
    """Return (image entry, [annotation without id]) of one image."""
    image_file = os.path.join(image_dir, stem + ".jpg")
    ins_file = os.path.join(instance_dir, stem + ".png")
    if not os.path.isfile(ins_file):
        raise FileNotFoundError(f"{ins_file} (instance annotation of {image_file}) does not exist.")
    with Image.open(image_file) as im:
        width, height = im.size
    ins_cat, ins_idx = read_instance_png(ins_file)
    if ins_cat.shape != (height, width):
        raise ValueError(f"{stem}: image {width}x{height} but instance PNG {ins_cat.shape[::-1]}")
    annotations = []
    for mask, cat in iter_instances(ins_file, ins_cat, ins_idx, mapping):
        annotations.append({
            "image_id": stem,
            "category_id": int(cat),
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": bbox_of(mask),
            "segmentation": _common.encode_rle(mask),
        })
    image = {"id": stem, "file_name": stem + ".jpg", "width": int(width), "height": int(height)}
    return image, annotations


def prepare(dataset_dir, splits=tuple(SPLITS), workers=1, mapping_file=None, imgcatids_file=None):
    root = _common.ade20k_root(dataset_dir)
    mapping = load_mapping(dataset_dir, mapping_file, imgcatids_file)
    thing_ids = sorted(set(mapping.values()))
    categories = [
        {"id": c["id"], "name": c["name"], "isthing": 1, "color": c["color"]}
        for c in ADE20K_150_CATEGORIES
        if c["id"] in thing_ids
    ]
    outputs = {}
    for name in splits:
        dirname = SPLITS[name]
        image_dir = os.path.join(root, "images", dirname)
        instance_dir = os.path.join(root, "annotations_instance", dirname)
        require_folders((("image", image_dir), ("instance annotation", instance_dir)))
        stems = image_stems(image_dir)
        job = partial(convert_image, image_dir=image_dir, instance_dir=instance_dir, mapping=mapping)
        results = _common.map_jobs(job, stems, workers, chunksize=16)
        images, annotations = [], []
        for image, anns in results:
            images.append(image)
            for ann in anns:
                annotations.append(dict(ann, id=len(annotations) + 1))
        out_file = os.path.join(root, f"ade20k_instance_{name}.json")
        with open(out_file, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        outputs[name] = out_file
        print(f"{name}: wrote {len(annotations)} instances of {len(images)} images to {out_file}")
    return outputs


def main(argv=None):
    return run_cli(prepare, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

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
import argparse
import json
import os
import sys
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prepare_ade20k_pan_seg import (  # noqa: E402
    ADE20K_150_CATEGORIES,
    IMGCATIDS_FILE,
    MAPPING_FILE,
    SPLITS,
    load_mapping,
    read_instance_png,
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
    for k in np.unique(ins_idx):
        if k == 0:
            continue
        mask = ins_idx == k
        cats = np.unique(ins_cat[mask])
        if len(cats) != 1:
            raise ValueError(f"{ins_file}: instance {int(k)} has several categories {cats.tolist()} in its R channel")
        if cats[0] == 0:
            continue
        if int(cats[0]) not in mapping:
            raise ValueError(f"{ins_file}: instance {int(k)} has category {int(cats[0])}, which the instance->150 "
                             "mapping does not list")
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode("ascii")
        ys, xs = np.nonzero(mask)
        annotations.append({
            "image_id": stem,
            "category_id": int(mapping[int(cats[0])]),
            "iscrowd": 0,
            "area": int(mask.sum()),
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            "segmentation": rle,
        })
    image = {"id": stem, "file_name": stem + ".jpg", "width": int(width), "height": int(height)}
    return image, annotations


def prepare(dataset_dir, splits=tuple(SPLITS), workers=1, mapping_file=None, imgcatids_file=None):
    root = os.path.join(dataset_dir, "ADEChallengeData2016")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{root} does not exist: unpack ADEChallengeData2016.zip into {dataset_dir} (see datasets/README.md)."
        )
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
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"ADE20K image folder {image_dir} does not exist.")
        if not os.path.isdir(instance_dir):
            raise FileNotFoundError(
                f"ADE20K instance annotation folder {instance_dir} does not exist. Download annotations_instance from "
                "the ADE20K 2017 instance-segmentation challenge (see datasets/README.md)."
            )
        stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.endswith(".jpg"))
        if not stems:
            raise FileNotFoundError(f"ADE20K image folder {image_dir} holds no .jpg files.")
        job = partial(convert_image, image_dir=image_dir, instance_dir=instance_dir, mapping=mapping)
        if workers > 1:
            with Pool(workers) as pool:
                results = pool.map(job, stems, chunksize=16)
        else:
            results = [job(s) for s in stems]
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="folder holding ADEChallengeData2016/ (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--mapping-file", help=f"{MAPPING_FILE} (default: looked up next to the data, else built in)")
    parser.add_argument("--imgcatids-file", help=f"{IMGCATIDS_FILE}, only cross-checked against the mapping")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    try:
        prepare(os.path.expanduser(args.dataset_dir), args.splits, args.workers, args.mapping_file,
                args.imgcatids_file)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

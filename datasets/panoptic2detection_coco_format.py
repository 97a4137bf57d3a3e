#!/usr/bin/env python3
"""COCO instance (detection) json from COCO-format panoptic annotations.

Every segment becomes one annotation: ``segmentation`` = the RLE of its pixels in the panoptic PNG, ``bbox`` and
``area`` measured on that mask, ``category_id`` and ``iscrowd`` from ``segments_info``; annotation ids are 1, 2, ...
``--things-only`` keeps thing segments and thing categories only. OneFormer evaluates COCO instance segmentation
against the val json this writes by default::

    python datasets/panoptic2detection_coco_format.py --things-only
    # reads  $DETECTRON2_DATASETS/coco/annotations/panoptic_val2017.json and coco/panoptic_val2017/
    # writes $DETECTRON2_DATASETS/coco/annotations/panoptic2instances_val2017.json

Categories (with ``isthing``) come from ``--categories-json-file`` (a list, or a dict with "categories", such as
panoptic_coco_categories.json), else from the panoptic json itself, else from Detectron2's COCO_CATEGORIES.
"""
import argparse
import json
import logging
import os
import sys

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

logger = logging.getLogger("panoptic2detection")


def rgb2id(rgb):
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def load_categories(categories_json_file, panoptic_data):
    if categories_json_file:
        if not os.path.isfile(categories_json_file):
            raise FileNotFoundError(f"Categories json {categories_json_file} does not exist.")
        with open(categories_json_file) as f:
            cats = json.load(f)
        if isinstance(cats, dict):
            cats = cats.get("categories", [])
    elif panoptic_data.get("categories"):
        cats = panoptic_data["categories"]
    else:
        from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

        cats = COCO_CATEGORIES
    for c in cats:
        if "isthing" not in c:
            raise ValueError(f"category {c.get('id')} ({c.get('name')}) has no 'isthing'")
    return {c["id"]: c for c in cats}


def convert(input_json_file, segmentations_folder, output_json_file, categories_json_file=None, things_only=False):
    """Write the detection json; returns the number of annotations written."""
    if not os.path.isfile(input_json_file):
        raise FileNotFoundError(f"Panoptic annotation json {input_json_file} does not exist.")
    if not os.path.isdir(segmentations_folder):
        raise FileNotFoundError(f"Panoptic PNG folder {segmentations_folder} does not exist.")
    with open(input_json_file) as f:
        data = json.load(f)
    categories = load_categories(categories_json_file, data)
    annotations = []
    for ann in data["annotations"]:
        pan_file = os.path.join(segmentations_folder, ann["file_name"])
        if not os.path.isfile(pan_file):
            raise FileNotFoundError(f"Panoptic PNG {pan_file} listed in {input_json_file} does not exist.")
        with Image.open(pan_file) as im:
            pan = rgb2id(np.asarray(im.convert("RGB")))
        for seg in ann["segments_info"]:
            cid = seg["category_id"]
            if cid not in categories:
                raise ValueError(f"{input_json_file}: annotation {ann['file_name']} has segment {seg['id']} with "
                                 f"category id {cid}, which the categories do not list")
            if things_only and not categories[cid]["isthing"]:
                continue
            mask = pan == seg["id"]
            if not mask.any():
                logger.warning("%s: segment %s is absent from %s; skipped", input_json_file, seg["id"], pan_file)
                continue
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": ann["image_id"],
                "category_id": cid,
                "segmentation": rle,
                "area": int(mask_util.area(rle)),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": int(seg.get("iscrowd", 0)),
            })
    cats = [c for c in categories.values() if c["isthing"] or not things_only]
    out = {"images": data.get("images", []), "annotations": annotations, "categories": cats}
    for key in ("info", "licenses"):
        if key in data:
            out[key] = data[key]
    os.makedirs(os.path.dirname(os.path.abspath(output_json_file)), exist_ok=True)
    with open(output_json_file, "w") as f:
        json.dump(out, f)
    print(f"wrote {len(annotations)} annotations of {len(out['images'])} images to {output_json_file}")
    return len(annotations)


def main(argv=None):
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    coco = os.path.join(root, "coco")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-json-file", "--input_json_file", dest="input_json_file",
                        default=os.path.join(coco, "annotations", "panoptic_val2017.json"))
    parser.add_argument("--segmentations-folder", "--segmentations_folder", dest="segmentations_folder",
                        default=os.path.join(coco, "panoptic_val2017"))
    parser.add_argument("--output-json-file", "--output_json_file", dest="output_json_file",
                        default=os.path.join(coco, "annotations", "panoptic2instances_val2017.json"))
    parser.add_argument("--categories-json-file", "--categories_json_file", dest="categories_json_file")
    parser.add_argument("--things-only", "--things_only", dest="things_only", action="store_true",
                        help="keep thing segments only (what OneFormer's instance evaluation uses)")
    args = parser.parse_args(argv)
    try:
        convert(args.input_json_file, args.segmentations_folder, args.output_json_file, args.categories_json_file,
                args.things_only)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import json
import logging
import os
import sys

import pycocotools.mask as mask_util

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (datasets/_common.py)
from _common import rgb2id  # noqa: E402,F401  (kept importable from this script)

logger = logging.getLogger("panoptic2detection")


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
    data = _common.load_panoptic_json(input_json_file, segmentations_folder)
    categories = load_categories(categories_json_file, data)
    annotations = []
    for ann in data["annotations"]:
        pan_file = os.path.join(segmentations_folder, ann["file_name"])
        pan = _common.read_panoptic_png(segmentations_folder, ann["file_name"], input_json_file)
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
            rle = _common.encode_rle(mask)
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
    coco = os.path.join(os.path.expanduser(_common.datasets_root()), "coco")
    parser = _common.make_parser(__doc__)
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
    return _common.run_reporting_errors(convert, args.input_json_file, args.segmentations_folder,
                                        args.output_json_file, args.categories_json_file, args.things_only)


if __name__ == "__main__":
    sys.exit(main())

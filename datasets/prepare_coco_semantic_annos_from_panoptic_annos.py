#!/usr/bin/env python3
"""Semantic label PNGs from COCO-format panoptic annotations.

COCO (default): for split in val2017, train2017 reads ``coco/annotations/panoptic_{split}.json`` and
``coco/panoptic_{split}/*.png`` and writes ``coco/panoptic_semseg_{split}/*.png`` holding the contiguous id of every
segment's category (Detectron2's COCO_CATEGORIES order: 0..132) and 255 where no segment is (crowd segments are
labelled with their category too).

Any other panoptic json (e.g. your own data for ``register_panoptic_dataset``)::

    python datasets/prepare_coco_semantic_annos_from_panoptic_annos.py \\
        --panoptic-json my/panoptic_train.json --panoptic-root my/panoptic_train --output-dir my/panoptic_semseg_train

uses the json's own ``categories`` order for the contiguous ids, the order ``register_panoptic_dataset`` uses when its
``categories`` is None.
"""
import argparse
import json
import os
import sys
from functools import partial
from multiprocessing import Pool

import numpy as np
from PIL import Image

SPLITS = ("val2017", "train2017")
IGNORE = 255


def rgb2id(rgb):
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def coco_id_map():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def convert(annotation, panoptic_root, output_dir, id_map, json_file=""):
    """Write the semantic PNG of one panoptic annotation."""
    pan_file = os.path.join(panoptic_root, annotation["file_name"])
    if not os.path.isfile(pan_file):
        raise FileNotFoundError(f"Panoptic PNG {pan_file} listed in {json_file} does not exist.")
    with Image.open(pan_file) as im:
        pan = rgb2id(np.asarray(im.convert("RGB")))
    out = np.full(pan.shape, IGNORE, dtype=np.uint8)
    for seg in annotation["segments_info"]:
        cid = seg["category_id"]
        if cid not in id_map:
            raise ValueError(f"{json_file}: annotation {annotation['file_name']} has segment {seg['id']} with category "
                             f"id {cid}, which is not among the {len(id_map)} categories")
        out[pan == seg["id"]] = id_map[cid]
    stem = os.path.splitext(annotation["file_name"])[0]
    Image.fromarray(out).save(os.path.join(output_dir, stem + ".png"))


def convert_json(panoptic_json, panoptic_root, output_dir, id_map=None, workers=1):
    """Convert every annotation of ``panoptic_json``; ``id_map`` None = the json's categories order. Returns count."""
    if not os.path.isfile(panoptic_json):
        raise FileNotFoundError(f"Panoptic annotation json {panoptic_json} does not exist.")
    if not os.path.isdir(panoptic_root):
        raise FileNotFoundError(f"Panoptic PNG folder {panoptic_root} does not exist.")
    with open(panoptic_json) as f:
        data = json.load(f)
    if id_map is None:
        id_map = {c["id"]: i for i, c in enumerate(data["categories"])}
    if max(id_map.values()) >= IGNORE:
        raise ValueError(f"{len(id_map)} categories do not fit in an 8-bit label PNG with {IGNORE} = unlabeled")
    os.makedirs(output_dir, exist_ok=True)
    job = partial(convert, panoptic_root=panoptic_root, output_dir=output_dir, id_map=id_map, json_file=panoptic_json)
    if workers > 1:
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(job, data["annotations"], chunksize=32):
                pass
    else:
        for ann in data["annotations"]:
            job(ann)
    print(f"wrote {len(data['annotations'])} semantic PNGs to {output_dir}")
    return len(data["annotations"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=os.getenv("DETECTRON2_DATASETS", "datasets"),
                        help="folder holding coco/ (default: $DETECTRON2_DATASETS or ./datasets)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--panoptic-json", help="convert this json instead of COCO's (needs the two options below)")
    parser.add_argument("--panoptic-root", help="its panoptic PNG folder")
    parser.add_argument("--output-dir", help="where to write the semantic PNGs")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    args = parser.parse_args(argv)
    try:
        if args.panoptic_json:
            if not (args.panoptic_root and args.output_dir):
                parser.error("--panoptic-json needs --panoptic-root and --output-dir")
            convert_json(args.panoptic_json, args.panoptic_root, args.output_dir, None, args.workers)
        else:
            coco = os.path.join(os.path.expanduser(args.dataset_dir), "coco")
            id_map = coco_id_map()
            for split in args.splits:
                convert_json(
                    os.path.join(coco, "annotations", f"panoptic_{split}.json"),
                    os.path.join(coco, f"panoptic_{split}"),
                    os.path.join(coco, f"panoptic_semseg_{split}"),
                    id_map,
                    args.workers,
                )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
import os
import sys
from functools import partial

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (datasets/_common.py)
from _common import rgb2id  # noqa: E402,F401  (kept importable from this script)

SPLITS = ("val2017", "train2017")
IGNORE = 255


def coco_id_map():
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    return {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def convert(annotation, panoptic_root, output_dir, id_map, json_file=""):
    """Write the semantic PNG of one panoptic annotation."""
    pan = _common.read_panoptic_png(panoptic_root, annotation["file_name"], json_file)
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
    data = _common.load_panoptic_json(panoptic_json, panoptic_root)
    if id_map is None:
        id_map = {c["id"]: i for i, c in enumerate(data["categories"])}
    if max(id_map.values()) >= IGNORE:
        raise ValueError(f"{len(id_map)} categories do not fit in an 8-bit label PNG with {IGNORE} = unlabeled")
    os.makedirs(output_dir, exist_ok=True)
    job = partial(convert, panoptic_root=panoptic_root, output_dir=output_dir, id_map=id_map, json_file=panoptic_json)
    _common.map_jobs(job, data["annotations"], workers, chunksize=32)
    print(f"wrote {len(data['annotations'])} semantic PNGs to {output_dir}")
    return len(data["annotations"])


def convert_coco(dataset_dir, splits=SPLITS, workers=1):
    """Convert COCO's panoptic_{split}.json of every split under ``dataset_dir``/coco; returns None."""
    coco = os.path.join(dataset_dir, "coco")
    id_map = coco_id_map()
    for split in splits:
        convert_json(
            os.path.join(coco, "annotations", f"panoptic_{split}.json"),
            os.path.join(coco, f"panoptic_{split}"),
            os.path.join(coco, f"panoptic_semseg_{split}"),
            id_map,
            workers,
        )


def main(argv=None):
    parser = _common.make_parser(__doc__)
    _common.add_dataset_dir_arg(parser, "coco/")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--panoptic-json", help="convert this json instead of COCO's (needs the two options below)")
    parser.add_argument("--panoptic-root", help="its panoptic PNG folder")
    parser.add_argument("--output-dir", help="where to write the semantic PNGs")
    _common.add_workers_arg(parser)
    args = parser.parse_args(argv)
    if args.panoptic_json:
        if not (args.panoptic_root and args.output_dir):
            parser.error("--panoptic-json needs --panoptic-root and --output-dir")
        return _common.run_reporting_errors(
            convert_json, args.panoptic_json, args.panoptic_root, args.output_dir, None, args.workers
        )
    return _common.run_reporting_errors(convert_coco, os.path.expanduser(args.dataset_dir), args.splits, args.workers)


if __name__ == "__main__":
    sys.exit(main())

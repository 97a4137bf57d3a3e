#!/usr/bin/env python3
"""ADE20K panoptic annotations from the semantic labels and the instance-challenge instance PNGs.

Inputs (under ``$DETECTRON2_DATASETS/ADEChallengeData2016``)::

    images/{training,validation}/*.jpg
    annotations/{training,validation}/*.png             semantic labels, 0 = other, 1..150 = classes
    annotations_instance/{training,validation}/*.png    from the ADE20K 2017 instance-segmentation challenge:
                                                        R = instance category (1..100, 0 = ignore), G = instance index
    ade20k_instance_catid_mapping.txt  (optional)       instance category id -> SceneParsing-150 id, both 1-based
                                                        (first line a header); built in when absent

Outputs::

    ade20k_panoptic_{train,val}/*.png    RGB panoptic PNGs (segment id = R + 256·G + 256²·B, 0 = void)
    ade20k_panoptic_{train,val}.json     COCO panoptic json; category ids 0..149, isthing from the mapping

Stuff segments (one per stuff class present in the semantic label) are painted first, then one segment per instance
(its class from the mapping), which overwrites stuff where the two annotations overlap; areas and boxes are measured
on the final PNG. Segment ids are (category + 1) * 1000 + k (k = 0 for stuff, 1, 2, ... for the instances of a class).

    python datasets/prepare_ade20k_pan_seg.py [--dataset-dir DIR] [--workers N]
"""
import json
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402  (datasets/_common.py)

try:
    from oneformer.data.datasets.register_ade20k_panoptic import ADE20K_150_CATEGORIES, ADE20K_THING_IDS
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from oneformer.data.datasets.register_ade20k_panoptic import ADE20K_150_CATEGORIES, ADE20K_THING_IDS

SPLITS = {"train": "training", "val": "validation"}
MAPPING_FILE = "ade20k_instance_catid_mapping.txt"
IMGCATIDS_FILE = "ade20k_instance_imgCatIds.json"
SEGMENT_ID_DIVISOR = 1000


def builtin_mapping():
    """{instance category id (1-based) -> 0-based 150 id}: instance ids number the things in 150-id order."""
    return {k + 1: sem for k, sem in enumerate(ADE20K_THING_IDS)}


def read_mapping(path):
    """Parse ade20k_instance_catid_mapping.txt into {instance id (1-based) -> 0-based 150 id}."""
    mapping = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if len(tokens) < 2 or not (tokens[0].isdigit() and tokens[1].isdigit()):
                if lineno == 1 or not tokens:
                    continue  # header / blank line
                raise ValueError(f"{path}:{lineno}: expected '<instance id> <150 id> ...', got {line.strip()!r}")
            ins_id, sem_id = int(tokens[0]), int(tokens[1]) - 1
            if not 0 <= sem_id < 150:
                raise ValueError(f"{path}:{lineno}: SceneParsing id {sem_id + 1} is outside 1..150")
            mapping[ins_id] = sem_id
    if not mapping:
        raise ValueError(f"{path} holds no category mapping lines")
    return mapping


def find_optional_file(name, explicit, dataset_dir):
    """``explicit`` if given (must exist), else the first existing default location, else None."""
    if explicit:
        if not os.path.isfile(explicit):
            raise FileNotFoundError(f"{explicit} does not exist.")
        return explicit
    for folder in (os.path.join(dataset_dir, "ADEChallengeData2016"), dataset_dir, os.path.dirname(__file__)):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_mapping(dataset_dir, mapping_file=None, imgcatids_file=None):
    path = find_optional_file(MAPPING_FILE, mapping_file, dataset_dir)
    mapping = read_mapping(path) if path else builtin_mapping()
    if path and set(mapping.values()) != set(ADE20K_THING_IDS):
        print(f"warning: {path} marks a different set of classes as things than OneFormer's ADE20K metadata; "
              "the json follows the mapping file", file=sys.stderr)
    catids = find_optional_file(IMGCATIDS_FILE, imgcatids_file, dataset_dir)
    if catids:
        with open(catids) as f:
            listed = {c["id"] for c in json.load(f).get("categories", [])}
        if listed and set(mapping) - listed:
            print(f"warning: instance category ids {sorted(set(mapping) - listed)} of the mapping are not listed in "
                  f"{catids}", file=sys.stderr)
    return mapping


def panoptic_categories(mapping):
    thing = set(mapping.values())
    return [dict(c, isthing=int(c["id"] in thing)) for c in ADE20K_150_CATEGORIES]


def bbox_of(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def read_instance_png(path):
    """(R, G) of an instance PNG: R = instance category (1-based, 0 = ignore), G = instance index (0 = none)."""
    with Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA"):
            raise ValueError(f"{path}: expected an RGB instance PNG (R = category, G = instance), got mode {im.mode}")
        ins = np.asarray(im)
    return ins[..., 0], ins[..., 1]


def iter_instances(ins_file, ins_cat, ins_idx, mapping):
    """Yield (boolean mask, 0-based 150 category id) of every instance of an instance PNG, by instance index.

    ``ins_cat`` / ``ins_idx`` are the PNG's R / G channels (``read_instance_png``), ``mapping`` maps the 1-based
    instance category to the 150 id. Instances of category 0 (ignore) are skipped. Raises ValueError (naming
    ``ins_file``) for an instance with several categories or one that ``mapping`` does not list.
    """
    for k in np.unique(ins_idx):
        if k == 0:
            continue
        mask = ins_idx == k
        cats = np.unique(ins_cat[mask])
        if len(cats) != 1:
            raise ValueError(f"{ins_file}: instance {int(k)} has several categories {cats.tolist()} in its R channel")
        if cats[0] == 0:
            continue  # ignored instance
        if int(cats[0]) not in mapping:
            raise ValueError(f"{ins_file}: instance {int(k)} has category {int(cats[0])}, which the instance->150 "
                             "mapping does not list")
        yield mask, mapping[int(cats[0])]


def require_folders(folders):
    """Raise FileNotFoundError for the first ``(what, path)`` of ``folders`` whose path is not a folder; else None.

    The message for an instance annotation folder says where to download it.
    """
    for what, d in folders:
        if not os.path.isdir(d):
            hint = (" Download annotations_instance from the ADE20K 2017 instance-segmentation challenge "
                    "(see datasets/README.md)." if "instance" in what else "")
            raise FileNotFoundError(f"ADE20K {what} folder {d} does not exist.{hint}")


def image_stems(image_dir):
    """Sorted file stems of the .jpg images in ``image_dir``; raises FileNotFoundError when there are none."""
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_dir) if f.endswith(".jpg"))
    if not stems:
        raise FileNotFoundError(f"ADE20K image folder {image_dir} holds no .jpg files.")
    return stems


def convert_image(stem, image_dir, semantic_dir, instance_dir, out_dir, mapping, thing_ids):
    """Write the panoptic PNG of one image; return (image entry, annotation entry)."""
    image_file = os.path.join(image_dir, stem + ".jpg")
    sem_file = os.path.join(semantic_dir, stem + ".png")
    ins_file = os.path.join(instance_dir, stem + ".png")
    for f in (sem_file, ins_file):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{f} (annotation of {image_file}) does not exist.")
    with Image.open(image_file) as im:
        width, height = im.size
    sem = np.asarray(Image.open(sem_file))
    if sem.ndim != 2 or sem.dtype != np.uint8:
        raise ValueError(f"{sem_file}: expected a single-channel 8-bit label PNG, got {sem.dtype} {sem.shape}")
    ins_cat, ins_idx = read_instance_png(ins_file)
    if sem.shape != (height, width) or ins_cat.shape != (height, width):
        raise ValueError(f"{stem}: image {width}x{height}, semantic {sem.shape[::-1]}, instance {ins_cat.shape[::-1]} "
                         "sizes differ")
    sem_cat = sem.astype(np.int32) - 1  # -1 = other/ignore
    pan = np.zeros((height, width), dtype=np.uint32)
    order = []  # (segment id, category id)
    for cat in np.unique(sem_cat):
        if cat < 0 or int(cat) in thing_ids:
            continue
        sid = (int(cat) + 1) * SEGMENT_ID_DIVISOR
        pan[sem_cat == cat] = sid
        order.append((sid, int(cat)))
    counters = {}
    for mask, cat in iter_instances(ins_file, ins_cat, ins_idx, mapping):
        counters[cat] = counters.get(cat, 0) + 1
        if counters[cat] >= SEGMENT_ID_DIVISOR:
            raise ValueError(f"{ins_file}: more than {SEGMENT_ID_DIVISOR - 1} instances of category {cat}")
        sid = (cat + 1) * SEGMENT_ID_DIVISOR + counters[cat]
        pan[mask] = sid
        order.append((sid, cat))
    segments = []
    for sid, cat in order:
        mask = pan == sid
        area = int(mask.sum())
        if area == 0:
            continue  # a stuff region entirely covered by instances
        segments.append({"id": sid, "category_id": cat, "area": area, "bbox": bbox_of(mask), "iscrowd": 0})
    Image.fromarray(_common.id2rgb(pan)).save(os.path.join(out_dir, stem + ".png"))
    image = {"id": stem, "file_name": stem + ".jpg", "width": int(width), "height": int(height)}
    annotation = {"image_id": stem, "file_name": stem + ".png", "segments_info": segments}
    return image, annotation


def prepare(dataset_dir, splits=tuple(SPLITS), workers=1, mapping_file=None, imgcatids_file=None):
    root = _common.ade20k_root(dataset_dir)
    mapping = load_mapping(dataset_dir, mapping_file, imgcatids_file)
    categories = panoptic_categories(mapping)
    thing_ids = {c["id"] for c in categories if c["isthing"]}
    outputs = {}
    for name in splits:
        dirname = SPLITS[name]
        image_dir = os.path.join(root, "images", dirname)
        semantic_dir = os.path.join(root, "annotations", dirname)
        instance_dir = os.path.join(root, "annotations_instance", dirname)
        require_folders((("image", image_dir), ("semantic label", semantic_dir),
                         ("instance annotation", instance_dir)))
        stems = image_stems(image_dir)
        out_dir = os.path.join(root, f"ade20k_panoptic_{name}")
        out_file = os.path.join(root, f"ade20k_panoptic_{name}.json")
        os.makedirs(out_dir, exist_ok=True)
        job = partial(convert_image, image_dir=image_dir, semantic_dir=semantic_dir, instance_dir=instance_dir,
                      out_dir=out_dir, mapping=mapping, thing_ids=thing_ids)
        results = _common.map_jobs(job, stems, workers, chunksize=16)
        with open(out_file, "w") as f:
            json.dump({"images": [r[0] for r in results], "annotations": [r[1] for r in results],
                       "categories": categories}, f)
        outputs[name] = out_file
        print(f"{name}: wrote {len(results)} panoptic PNGs to {out_dir} and {out_file}")
    return outputs


def run_cli(prepare_fn, doc, argv=None):
    """The command line of this script and prepare_ade20k_ins_seg.py; returns the exit status (0, or 1 on errors).

    Parses ``argv`` (``doc`` is the help text) and calls ``prepare_fn(dataset_dir, splits, workers, mapping_file,
    imgcatids_file)``.
    """
    parser = _common.make_parser(doc)
    _common.add_dataset_dir_arg(parser, "ADEChallengeData2016/")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--mapping-file", help=f"{MAPPING_FILE} (default: looked up next to the data, else built in)")
    parser.add_argument("--imgcatids-file", help=f"{IMGCATIDS_FILE}, only cross-checked against the mapping")
    _common.add_workers_arg(parser)
    args = parser.parse_args(argv)
    return _common.run_reporting_errors(prepare_fn, os.path.expanduser(args.dataset_dir), args.splits, args.workers,
                                        args.mapping_file, args.imgcatids_file)


def main(argv=None):
    return run_cli(prepare, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""ADE20K semantic labels for Detectron2: ``annotations/*`` minus 1 -> ``annotations_detectron2/``.

ADEChallengeData2016 labels use 0 for "other" and 1..150 for the classes; Detectron2's ``ade20k_sem_seg_*`` and
OneFormer's ADE20K datasets expect 0..149 with 255 = ignore. Subtracting 1 in uint8 does exactly that (0 wraps to 255).

    python datasets/prepare_ade20k_sem_seg.py                 # $DETECTRON2_DATASETS/ADEChallengeData2016
    python datasets/prepare_ade20k_sem_seg.py --dataset-dir /data --workers 8
"""
import os
import sys
from functools import partial

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402  (datasets/_common.py)

SPLITS = ("training", "validation")


def convert(input_file, output_file):
    """Write ``input_file`` − 1 (uint8, so 0 becomes 255) to ``output_file``."""
    label = np.asarray(Image.open(input_file))
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"{input_file}: expected a single-channel 8-bit label PNG, got {label.dtype} {label.shape}")
    Image.fromarray((label - np.uint8(1)).astype(np.uint8)).save(output_file)


def _convert_one(name, in_dir, out_dir):
    convert(os.path.join(in_dir, name), os.path.join(out_dir, name))


def prepare(dataset_dir, splits=SPLITS, workers=1):
    """Convert every split; returns {split: number of files written}. Raises FileNotFoundError for missing inputs."""
    root = _common.ade20k_root(dataset_dir)
    counts = {}
    for split in splits:
        in_dir = os.path.join(root, "annotations", split)
        if not os.path.isdir(in_dir):
            raise FileNotFoundError(f"ADE20K label folder {in_dir} does not exist.")
        names = sorted(f for f in os.listdir(in_dir) if f.endswith(".png"))
        if not names:
            raise FileNotFoundError(f"ADE20K label folder {in_dir} holds no .png files.")
        out_dir = os.path.join(root, "annotations_detectron2", split)
        os.makedirs(out_dir, exist_ok=True)
        job = partial(_convert_one, in_dir=in_dir, out_dir=out_dir)
        _common.map_jobs(job, names, workers, chunksize=64)
        counts[split] = len(names)
        print(f"{split}: wrote {len(names)} labels to {out_dir}")
    return counts


def main(argv=None):
    parser = _common.make_parser(__doc__)
    _common.add_dataset_dir_arg(parser, "ADEChallengeData2016/")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    _common.add_workers_arg(parser)
    args = parser.parse_args(argv)
    return _common.run_reporting_errors(prepare, os.path.expanduser(args.dataset_dir), args.splits, args.workers)


if __name__ == "__main__":
    sys.exit(main())

"""What the dataset preparation scripts of this folder share (command line, dataset folders, worker pool, id coding).

The scripts are run by path (``python datasets/<script>.py``), so they import this file as ``_common`` after putting
its folder on ``sys.path``.
"""
import argparse
import json
import os
import sys
from multiprocessing import Pool

import numpy as np
from panopticapi.utils import id2rgb, rgb2id  # the COCO panoptic colour encoding, id = R + 256·G + 256²·B

__all__ = [
    "make_parser",
    "add_dataset_dir_arg",
    "add_workers_arg",
    "datasets_root",
    "run_reporting_errors",
    "map_jobs",
    "ade20k_root",
    "rgb2id",
    "id2rgb",
    "load_panoptic_json",
    "read_panoptic_png",
    "encode_rle",
]


def make_parser(doc):
    """An ArgumentParser whose description is the script's docstring ``doc``, printed as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def datasets_root():
    """$DETECTRON2_DATASETS, or "datasets" when it is unset (not expanded)."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def add_dataset_dir_arg(parser, holds):
    """Add ``--dataset-dir`` (default: ``datasets_root()``) to ``parser``; ``holds`` names what the folder holds."""
    parser.add_argument("--dataset-dir", default=datasets_root(),
                        help=f"folder holding {holds} (default: $DETECTRON2_DATASETS or ./datasets)")


def add_workers_arg(parser):
    """Add ``--workers`` (number of processes, default 1) to ``parser``."""
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")


def run_reporting_errors(fn, *args, **kwargs):
    """Call ``fn(*args, **kwargs)``; return 0, or 1 after printing "error: ..." to stderr when it raises
    FileNotFoundError or ValueError (the scripts' exit status)."""
    try:
        fn(*args, **kwargs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def map_jobs(job, items, workers=1, chunksize=16):
    """[job(item) for item in items], in ``workers`` processes (chunks of ``chunksize``) when workers > 1.

    Returns the results in the order of ``items``; the first exception a job raises (in that order) propagates.
    """
    if workers > 1:
        with Pool(workers) as pool:
            return list(pool.imap(job, items, chunksize=chunksize))
    return [job(item) for item in items]


def ade20k_root(dataset_dir):
    """``dataset_dir``/ADEChallengeData2016; raises FileNotFoundError (with how to get it) when it does not exist."""
    root = os.path.join(dataset_dir, "ADEChallengeData2016")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"{root} does not exist: unpack ADEChallengeData2016.zip into {dataset_dir} (see datasets/README.md)."
        )
    return root


def load_panoptic_json(json_file, panoptic_root):
    """The parsed COCO panoptic json ``json_file``; raises FileNotFoundError when it or its PNG folder
    ``panoptic_root`` does not exist."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"Panoptic annotation json {json_file} does not exist.")
    if not os.path.isdir(panoptic_root):
        raise FileNotFoundError(f"Panoptic PNG folder {panoptic_root} does not exist.")
    with open(json_file) as f:
        return json.load(f)


def read_panoptic_png(panoptic_root, file_name, json_file=""):
    """Segment ids (int32 (H, W), ``rgb2id``) of the panoptic PNG ``file_name`` under ``panoptic_root``; raises
    FileNotFoundError (naming ``json_file``, which lists it) when the PNG does not exist."""
    from PIL import Image

    pan_file = os.path.join(panoptic_root, file_name)
    if not os.path.isfile(pan_file):
        raise FileNotFoundError(f"Panoptic PNG {pan_file} listed in {json_file} does not exist.")
    with Image.open(pan_file) as im:
        return rgb2id(np.asarray(im.convert("RGB")))


def encode_rle(mask):
    """COCO RLE of a boolean (H, W) mask, with ``counts`` as an ASCII string (JSON-serializable)."""
    import pycocotools.mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle

#!/usr/bin/env python3
"""Generate the synthetic shapes dataset, train a tiny OneFormer on it on CPU, evaluate every task token and export
the small demo checkpoint — one reproducible command (fixed seeds)::

    python tools/train_synthetic.py --output-dir output/synthetic --data-root output/datasets

(``--data-root`` keeps the generated images out of the source tree; without it they go to
``$DETECTRON2_DATASETS/synthetic_shapes``, default ``datasets/synthetic_shapes``, where the registered names
``synthetic_panoptic_{train,val}`` look for them by default.) Measured on the development machine (2 shared CPU
cores, torch 2.14.1, 1 thread): 9.0 min in all (data 28 s, 1000 iterations 8.1 min at 0.49 s/it, evaluation of the
three task tokens 23 s); held-out PQ 77.9 (panoptic token), mask AP 48.4 (instance token), mIoU 95.3 (semantic
token); checkpoint 6.8 MB (1.75M parameters, float32).

Steps (each timed; the summary table at the end gives the wall times and PQ / AP / mIoU per task token):

1. **data**: ``--num-train`` training and ``--num-val`` held-out validation images (``--image-size`` pixels square)
   under ``<--data-root>/synthetic_shapes`` (default ``$DETECTRON2_DATASETS``, else ``datasets``), in COCO panoptic
   format plus semantic PNGs and a COCO instances json (layout: ``oneformer/data/datasets/register_synthetic.py``).
   Each image: 1-3 background regions (stuff: sky / grass / wall textures, split by wavy lines) and 1-5
   non-overlapping shapes (things: circle / square / triangle / cross, each class with its own colour, random size and
   rotation). Every image is drawn from its own seed (``--seed``, split, index), so the data do not depend on the
   order or number of images generated; the demo samples use seeds of a third split that neither set contains.
2. **train**: ``train_net.Trainer`` (Detectron2 DefaultTrainer) in this process with
   ``configs/synthetic/oneformer_synthetic.yaml`` (+ ``--max-iter`` and any ``KEY VALUE`` overrides) into
   ``--output-dir``.
3. **export**: ``model_final.pth`` → ``--weights-out`` (default ``demo/assets/oneformer_synthetic.pth``): the model
   weights only (``{"model": state_dict}``, float32, loadable with ``torch.load(weights_only=True)``), without the
   text branch that only training uses, i.e. exactly the tensors of a ``MODEL.IS_TRAIN False`` build.
4. **evaluate**: as ``train_net.py --eval-only`` does (inference build, ``OneFormerCheckpointer`` loading the exported
   file, ``Trainer.test`` with train_net's evaluator selection: COCOPanopticEvaluator + COCOEvaluator("segm") +
   SemSegEvaluator) on ``synthetic_panoptic_val`` once per task token (MODEL.TEST.TASK panoptic, instance,
   semantic).
5. **samples**: ``--num-samples`` 256x256 images from held-out seeds → ``--samples-dir`` (demo/assets/samples).

Other modes: ``--generate-only`` (data and samples, no training), ``--eval-only WEIGHTS`` (step 4 for a given file,
data generated if missing), ``--reuse-data`` (keep existing data when its manifest matches the arguments).
The summary is also written to ``<output-dir>/summary.json``.
"""
import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import OrderedDict

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image, ImageDraw

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from oneformer.data.datasets.register_synthetic import (  # noqa: E402
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DIRNAME,
    register_all_synthetic,
    synthetic_paths,
)

DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "oneformer_synthetic.yaml")
DEFAULT_WEIGHTS_OUT = os.path.join(REPO, "demo", "assets", "oneformer_synthetic.pth")
DEFAULT_SAMPLES_DIR = os.path.join(REPO, "demo", "assets", "samples")
TASKS = ("panoptic", "instance", "semantic")
TEXT_BRANCH = ("text_encoder.", "text_projector.", "prompt_ctx.")
SPLIT_CODES = {"train": 1, "val": 2, "sample": 3}
GENERATOR_VERSION = 1

THINGS = [c for c in SYNTHETIC_CATEGORIES if c["isthing"]]
STUFF = [c for c in SYNTHETIC_CATEGORIES if not c["isthing"]]
CONTIGUOUS = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}

logger = logging.getLogger("oneformer.train_synthetic")


# ==============================================================================================================
# generator


def _smooth_noise(rng, size, cells):
    """(size, size) float32 noise in [-1, 1] varying over about ``cells`` cells per side (bilinear upsampling)."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def stuff_texture(name, rng, size):
    """(size, size, 3) float32 texture of a stuff class (random variations drawn from ``rng``)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if name == "sky":  # vertical blue gradient with faint clouds
        top = np.array([95, 150, 230], np.float32) + rng.uniform(-15, 15, 3)
        bottom = np.array([175, 210, 250], np.float32) + rng.uniform(-10, 5, 3)
        tex = top + (bottom - top) * yy[..., None]
        tex += 25 * np.clip(_smooth_noise(rng, size, 4), 0, 1)[..., None]
        tex += rng.normal(0, 3, (size, size, 1))
    elif name == "grass":  # dark green, blotchy, with fine vertical streaks
        base = np.array([55, 125, 45], np.float32) + rng.uniform(-12, 12, 3)
        tex = base + np.array([12, 30, 10], np.float32) * _smooth_noise(rng, size, 6)[..., None]
        streaks = rng.normal(0, 1, (1, size)).repeat(size, 0) * 0.6 + rng.normal(0, 1, (size, size)) * 0.8
        tex += np.array([8, 18, 6], np.float32) * streaks[..., None]
    elif name == "wall":  # grey-brown bricks with dark mortar, alternate rows shifted by half a brick
        brick_h = max(3, int(round(size * rng.uniform(0.07, 0.10))))
        brick_w = 2 * brick_h
        mortar = max(1, brick_h // 5)
        row = (np.arange(size) // brick_h)[:, None].repeat(size, 1)
        shift = (row % 2) * (brick_w // 2)
        col = (np.arange(size)[None, :] + shift) // brick_w
        brick_id = row * 1000 + col
        base = np.array([135, 120, 105], np.float32) + rng.uniform(-12, 12, 3)
        rng_vals = rng.uniform(-14, 14, int(brick_id.max()) + 1).astype(np.float32)
        tex = base + rng_vals[brick_id][..., None] + rng.normal(0, 4, (size, size, 1))
        in_mortar = ((np.arange(size) % brick_h) < mortar)[:, None] | (((np.arange(size)[None, :] + shift) % brick_w)
                                                                       < mortar)
        tex[in_mortar] = np.array([70, 64, 58], np.float32) + rng.normal(0, 3, (int(in_mortar.sum()), 1))
    else:
        raise ValueError(f"unknown stuff class {name!r}")
    return tex


def _shape_polygon(name, cx, cy, r, angle):
    """Vertices of a shape with circumradius ``r`` rotated by ``angle`` (None for the circle)."""
    if name == "circle":
        return None
    if name == "square":
        pts = [(math.cos(angle + k * math.pi / 2), math.sin(angle + k * math.pi / 2)) for k in range(4)]
    elif name == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif name == "cross":  # plus sign: arms of half-width a, reaching to the circumradius
        a = 0.33
        b = math.sqrt(1 - a * a)
        base = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b), (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a),
                (-a, b)]
        c, s = math.cos(angle), math.sin(angle)
        pts = [(x * c - y * s, x * s + y * c) for x, y in base]
    else:
        raise ValueError(f"unknown thing class {name!r}")
    return [(cx + r * x, cy + r * y) for x, y in pts]


def shape_mask(name, size, cx, cy, r, angle):
    """(size, size) bool mask of one shape (drawn without anti-aliasing, so the mask is exactly the painted area)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    poly = _shape_polygon(name, cx, cy, r, angle)
    if poly is None:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1)
    else:
        draw.polygon(poly, fill=1)
    return np.asarray(canvas, dtype=bool)


def _stuff_layout(rng, size, k):
    """(size, size) int map of k >= 1 bands (0..k-1) cut by parallel wavy lines at a random angle."""
    if k == 1:
        return np.zeros((size, size), np.int64)
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    proj = xx * math.cos(theta) + yy * math.sin(theta)
    perp = -xx * math.sin(theta) + yy * math.cos(theta)
    proj = proj + size * rng.uniform(0.0, 0.05) * np.sin(2 * math.pi * rng.uniform(0.5, 2.0) * perp / size
                                                       + rng.uniform(0, 2 * math.pi))
    if k == 2:
        qs = [rng.uniform(0.3, 0.7)]
    else:
        qs = [rng.uniform(0.2, 0.4), rng.uniform(0.6, 0.8)]
    cuts = np.quantile(proj, qs)
    return np.searchsorted(cuts, proj.ravel()).reshape(size, size)


def render_sample(rng, size=128):
    """One synthetic image.

    Returns (image (size, size, 3) uint8, segment ids (size, size) int64 (no void), segments) where segments is a
    list of {"id", "category_id" (dataset id), "isthing"}, stuff first.
    """
    image = np.zeros((size, size, 3), np.float32)
    ids = np.zeros((size, size), np.int64)
    segments = []
    k = int(rng.choice([1, 2, 3], p=[0.2, 0.45, 0.35]))
    chosen = rng.permutation(len(STUFF))[:k]
    bands = _stuff_layout(rng, size, k)
    for band, si in enumerate(chosen):
        cat = STUFF[int(si)]
        region = bands == band
        image[region] = stuff_texture(cat["name"], rng, size)[region]
        ids[region] = cat["id"]
        segments.append({"id": int(cat["id"]), "category_id": int(cat["id"]), "isthing": 0})

    n = int(rng.integers(1, 6))
    placed = []  # (cx, cy, r)
    for j in range(n):
        for _ in range(50):
            r = size * rng.uniform(0.08, 0.18)
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        cat = THINGS[int(rng.integers(len(THINGS)))]
        mask = shape_mask(cat["name"], size, cx, cy, r, rng.uniform(0, 2 * math.pi))
        if mask.sum() < 16:
            continue
        color = np.array(cat["color"], np.float32) + rng.uniform(-25, 25, 3)
        shade = 1.0 + 0.12 * _smooth_noise(rng, size, 2)[mask][:, None]
        image[mask] = color * shade + rng.normal(0, 4, (int(mask.sum()), 3))
        sid = int(cat["id"]) * 1000 + j + 1
        ids[mask] = sid
        segments.append({"id": sid, "category_id": int(cat["id"]), "isthing": 1})
    present = set(np.unique(ids).tolist())
    segments = [s for s in segments if s["id"] in present]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), ids, segments


def sample_rng(seed, split, index):
    """The generator of image ``index`` of ``split`` ("train", "val", "sample")."""
    return np.random.default_rng([int(seed), SPLIT_CODES[split], int(index)])


def _bbox(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def write_split(dataset_dir, split, num_images, seed=0, size=128):
    """Write one split (images, panoptic PNGs + json, semantic PNGs, instances json); returns the panoptic json."""
    import pycocotools.mask as mask_util

    paths = synthetic_paths(dataset_dir, split)
    for key in ("image_root", "panoptic_root", "sem_seg_root"):
        if os.path.isdir(paths[key]):
            shutil.rmtree(paths[key])
        os.makedirs(paths[key])
    images, pan_anns, inst_anns = [], [], []
    for i in range(num_images):
        image, ids, segments = render_sample(sample_rng(seed, split, i), size)
        stem = f"{i:06d}"
        Image.fromarray(image).save(os.path.join(paths["image_root"], stem + ".png"))
        Image.fromarray(id2rgb(ids)).save(os.path.join(paths["panoptic_root"], stem + ".png"))
        sem = np.full(ids.shape, 255, np.uint8)
        infos = []
        for seg in segments:
            mask = ids == seg["id"]
            sem[mask] = CONTIGUOUS[seg["category_id"]]
            area, bbox = int(mask.sum()), _bbox(mask)
            infos.append({"id": seg["id"], "category_id": seg["category_id"], "iscrowd": 0, "area": area,
                          "bbox": bbox})
            if seg["isthing"]:
                rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                inst_anns.append({"id": len(inst_anns) + 1, "image_id": i, "category_id": seg["category_id"],
                                  "segmentation": rle, "area": area, "bbox": [float(v) for v in bbox],
                                  "iscrowd": 0})
        Image.fromarray(sem).save(os.path.join(paths["sem_seg_root"], stem + ".png"))
        images.append({"id": i, "file_name": stem + ".png", "height": size, "width": size})
        pan_anns.append({"image_id": i, "file_name": stem + ".png", "segments_info": infos})
    categories = [{k: c[k] for k in ("id", "name", "isthing", "color")} for c in SYNTHETIC_CATEGORIES]
    panoptic = {"info": {"description": f"synthetic shapes {split}"}, "images": images, "annotations": pan_anns,
                "categories": categories}
    with open(paths["panoptic_json"], "w") as f:
        json.dump(panoptic, f)
    with open(paths["instance_json"], "w") as f:
        json.dump({"info": {"description": f"synthetic shapes {split} (things)"}, "images": images,
                   "annotations": inst_anns, "categories": [c for c in categories if c["isthing"]]}, f)
    return panoptic


def generate_dataset(dataset_dir, num_train, num_val, seed=0, size=128, reuse=False):
    """Write both splits under ``dataset_dir`` (skipped with ``reuse`` when the manifest matches). Returns True if
    data were written."""
    manifest = {"version": GENERATOR_VERSION, "num_train": num_train, "num_val": num_val, "seed": seed,
                "size": size}
    manifest_file = os.path.join(dataset_dir, "manifest.json")
    if reuse and os.path.isfile(manifest_file):
        with open(manifest_file) as f:
            if json.load(f) == manifest:
                return False
    os.makedirs(dataset_dir, exist_ok=True)
    if os.path.isfile(manifest_file):
        os.remove(manifest_file)
    write_split(dataset_dir, "train", num_train, seed, size)
    write_split(dataset_dir, "val", num_val, seed, size)
    with open(manifest_file, "w") as f:
        json.dump(manifest, f)
    return True


def write_samples(samples_dir, num, seed=0, size=256):
    """``num`` demo images (held-out seeds: split "sample") as sample_<k>.png; returns the paths."""
    os.makedirs(samples_dir, exist_ok=True)
    out = []
    for k in range(num):
        image, _, _ = render_sample(sample_rng(seed, "sample", k), size)
        path = os.path.join(samples_dir, f"sample_{k}.png")
        Image.fromarray(image).save(path, optimize=True)
        out.append(path)
    return out


# ==============================================================================================================
# training / export / evaluation


def build_cfg(config_file, opts=(), output_dir=None, is_train=True):
    """The synthetic config (add_oneformer_config_all + the YAML + ``KEY VALUE`` opts), not frozen."""
    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all
    from oneformer.config import merge_config

    cfg = merge_config(add_oneformer_config_all(get_cfg()), config_file, list(opts))
    cfg.MODEL.IS_TRAIN = bool(is_train)
    if output_dir is not None:
        cfg.OUTPUT_DIR = output_dir
    return cfg


def export_weights(src, dst, fp16=False):
    """``model_final.pth`` (or any Detectron2 checkpoint) → ``{"model": state_dict}`` without the text branch."""
    import torch

    ckpt = torch.load(src, map_location="cpu", weights_only=True)  # a training checkpoint holds only plain data
    state = ckpt.get("model", ckpt)
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith(TEXT_BRANCH):
            continue
        v = v.detach().clone().contiguous()
        if fp16 and v.is_floating_point():
            v = v.half()
        out[k] = v
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save({"model": out}, dst)
    return dst


def evaluate(cfg_train, weights, output_dir, tasks=TASKS):
    """``train_net.py --eval-only`` for each task token; returns {task: results OrderedDict}."""
    from oneformer import train_net
    from oneformer.utils.checkpoint import OneFormerCheckpointer

    results = OrderedDict()
    for task in tasks:
        cfg = cfg_train.clone()
        cfg.defrost()
        cfg.MODEL.IS_TRAIN = False
        cfg.MODEL.WEIGHTS = weights
        cfg.MODEL.TEST.TASK = task
        cfg.OUTPUT_DIR = os.path.join(output_dir, f"eval_{task}")
        cfg.freeze()
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        model = train_net.Trainer.build_model(cfg)
        OneFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR, allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE
                              ).resume_or_load(weights, resume=False)
        logger.info("Evaluating task %s on %s", task, train_net.eval_dataset_names(cfg))
        results[task] = train_net.Trainer.test(cfg, model)
    return results


def metrics_of(res):
    """PQ / SQ / RQ / AP / AP50 / mIoU / pACC from one evaluation's results (NaN when absent)."""
    pan, segm, sem = res.get("panoptic_seg", {}), res.get("segm", {}), res.get("sem_seg", {})
    nan = float("nan")
    return OrderedDict([
        ("PQ", pan.get("PQ", nan)), ("PQ_th", pan.get("PQ_th", nan)), ("PQ_st", pan.get("PQ_st", nan)),
        ("SQ", pan.get("SQ", nan)), ("RQ", pan.get("RQ", nan)),
        ("AP", segm.get("AP", nan)), ("AP50", segm.get("AP50", nan)),
        ("mIoU", sem.get("mIoU", nan)), ("pACC", sem.get("pACC", nan)),
    ])


def _display_path(path):
    rel = os.path.relpath(os.path.abspath(path), os.getcwd())
    return path if rel.startswith("..") else rel


def format_summary(summary):
    lines = ["", "=" * 96, "OneFormer synthetic shapes: held-out split " f"({summary['num_val']} images), "
             f"checkpoint {summary['weights']} ({summary['weights_mb']:.2f} MB)", "-" * 96]
    cols = ["PQ", "PQ_th", "PQ_st", "SQ", "RQ", "AP", "AP50", "mIoU", "pACC"]
    lines.append(f"{'task token':<12}" + "".join(f"{c:>9}" for c in cols))
    for task, m in summary["metrics"].items():
        lines.append(f"{task:<12}" + "".join(f"{m[c]:>9.2f}" for c in cols))
    lines.append("-" * 96)
    t = summary["times"]
    lines.append("wall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items() if k != "total")
                 + f"; total {t['total']:.1f}s ({t['total'] / 60:.1f} min)")
    lines.append(f"parameters: {summary.get('params_m', float('nan')):.2f}M (inference build); "
                 f"iterations: {summary.get('max_iter')}; threads: {summary.get('threads')}")
    pq = summary["metrics"].get("panoptic", {}).get("PQ", float("nan"))
    if summary.get("max_iter") is not None:
        lines.append(f"target (PQ >= 50 with the panoptic token, under 30 min): PQ {pq:.2f} "
                     f"{'met' if pq >= 50 else 'NOT met'}, {t['total'] / 60:.1f} min "
                     f"{'met' if t['total'] < 1800 else 'NOT met'}")
    lines.append("=" * 96)
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/synthetic", help="training output and evaluation folder")
    p.add_argument("--data-root", default=None,
                   help="datasets root; data go to <root>/synthetic_shapes (default $DETECTRON2_DATASETS or datasets)")
    p.add_argument("--config-file", default=DEFAULT_CONFIG)
    p.add_argument("--weights-out", default=DEFAULT_WEIGHTS_OUT, help="where the exported weights go")
    p.add_argument("--samples-dir", default=DEFAULT_SAMPLES_DIR, help="where the demo sample images go")
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--num-train", type=int, default=2000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="data seed (training uses the config's SEED)")
    p.add_argument("--max-iter", type=int, default=None, help="SOLVER.MAX_ITER (default: the config's)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared 2-core machine 2 threads were ~25%% faster when idle "
                        "but up to 5x slower when other processes compete for the cores)")
    p.add_argument("--fp16", action="store_true", help="export float16 weights (half the size)")
    p.add_argument("--reuse-data", action="store_true", help="keep existing data when the manifest matches")
    p.add_argument("--generate-only", action="store_true", help="write data and samples, nothing else")
    p.add_argument("--eval-only", metavar="WEIGHTS", default=None, help="only evaluate these weights")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    times = OrderedDict()
    from oneformer.data.datasets import datasets_root

    root = args.data_root if args.data_root is not None else datasets_root()
    dataset_dir = os.path.join(root, SYNTHETIC_DIRNAME)

    t = time.perf_counter()
    wrote = generate_dataset(dataset_dir, args.num_train, args.num_val, args.seed, args.image_size,
                             reuse=args.reuse_data or bool(args.eval_only))
    write = args.num_samples > 0 and not args.eval_only
    samples = write_samples(args.samples_dir, args.num_samples, args.seed) if write else []
    times["data"] = time.perf_counter() - t
    print(f"data: {'wrote' if wrote else 'reused'} {args.num_train} train + {args.num_val} val images in "
          f"{dataset_dir}; {len(samples)} samples in {args.samples_dir} ({times['data']:.1f}s)", flush=True)
    if args.generate_only:
        return None

    import torch

    from oneformer import train_net

    threads = max(1, args.threads)
    torch.set_num_threads(threads)
    register_all_synthetic(dataset_dir=dataset_dir)

    opts = list(args.opts)
    if opts and opts[0] == "--":
        opts = opts[1:]
    if args.max_iter is not None:
        opts += ["SOLVER.MAX_ITER", str(args.max_iter)]
    if not torch.cuda.is_available() and "MODEL.DEVICE" not in opts[::2]:
        opts = ["MODEL.DEVICE", "cpu"] + opts
    cfg = build_cfg(args.config_file, opts, output_dir=args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)

    if args.eval_only:
        weights = args.eval_only
    else:
        # train_net.setup: logging to OUTPUT_DIR/log.txt, seeding (cfg.SEED), config backup
        cfg_file = os.path.join(args.output_dir, "train_config.yaml")
        train_cfg = cfg.clone()
        # no end-of-training evaluation: evaluation runs below, on the exported inference weights
        for key in ("TEST", "TEST_PANOPTIC", "TEST_SEMANTIC", "TEST_INSTANCE"):
            train_cfg.DATASETS[key] = ()
        with open(cfg_file, "w") as f:
            f.write(train_cfg.dump())
        targs = train_net.default_argument_parser().parse_args(["--config-file", cfg_file])
        tcfg = train_net.setup(targs)
        t = time.perf_counter()
        trainer = train_net.Trainer(tcfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        times["train"] = time.perf_counter() - t
        del trainer
        t = time.perf_counter()
        weights = export_weights(os.path.join(args.output_dir, "model_final.pth"), args.weights_out, fp16=args.fp16)
        times["export"] = time.perf_counter() - t
        print(f"exported {weights} ({os.path.getsize(weights) / 2**20:.2f} MB)", flush=True)

    t = time.perf_counter()
    results = evaluate(cfg, weights, args.output_dir)
    times["eval"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - t_start

    infer_cfg = cfg.clone()
    infer_cfg.MODEL.IS_TRAIN = False
    model = train_net.Trainer.build_model(infer_cfg)
    summary = {
        "weights": _display_path(weights),
        "weights_mb": os.path.getsize(weights) / 2**20,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "image_size": args.image_size,
        "max_iter": cfg.SOLVER.MAX_ITER if not args.eval_only else None,
        "threads": threads,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "times": times,
        "metrics": OrderedDict((task, metrics_of(res)) for task, res in results.items()),
        "results": results,
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    print(format_summary(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()

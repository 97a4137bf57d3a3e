#!/usr/bin/env python
"""Time of COCO AP computation: pycocotools' COCOeval against the fast one the evaluators use (and other candidates).

    python tools/benchmark_coco_eval.py                       # 5000 images (COCO val scale), 3 interleaved rounds
    python tools/benchmark_coco_eval.py --images 2000 --rounds 5 --impls pycocotools hotcoco ultrafast faster

The set is oneformer.evaluation.synthetic_coco's (crowd regions, polygons, empty images, every --large-every-th image
with 100 objects and > 100 detections). Each implementation starts from what Detectron2's COCOEvaluator has: the
pycocotools ground truth and its loadRes of the results (loadRes itself, shared by all, is timed once and reported
apart); its time covers converting those (for the fast libraries), evaluate, accumulate and summarize. Rounds are
interleaved (A B C A B C ...) so that load changes on a shared machine hit all alike. Each run's 12 stats and its
precision/recall arrays are compared with pycocotools' (exact equality and the largest difference).
Implementations: pycocotools; hotcoco (what ``fast_cocoeval`` uses); ultrafast (ultrafast-pycocotools) and faster
(faster-coco-eval) when installed, for comparison.
"""
import argparse
import contextlib
import copy
import io
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from oneformer.evaluation.fast_coco_eval import fast_cocoeval
from oneformer.evaluation.synthetic_coco import coco_from_dict, make_synthetic_coco


def _dict_pair(coco_gt, coco_dt):
    gt = coco_gt.dataset
    dt = {"images": gt["images"], "categories": gt["categories"], "annotations": coco_dt.dataset["annotations"]}
    return gt, dt


def _ultrafast(coco_gt, coco_dt, iou_type):
    import ultrafast_pycocotools as uf

    gt, dt = _dict_pair(coco_gt, coco_dt)
    return uf.COCOeval(uf.COCO(gt, verbose=False), uf.COCO(dt, verbose=False), iou_type)


def _faster(coco_gt, coco_dt, iou_type):
    import faster_coco_eval as fce

    gt, dt = _dict_pair(coco_gt, coco_dt)
    return fce.COCOeval_faster(fce.COCO(gt), fce.COCO(dt), iou_type)


def _pycocotools(coco_gt, coco_dt, iou_type):
    from pycocotools.cocoeval import COCOeval

    return COCOeval(coco_gt, coco_dt, iou_type)


IMPLS = {"pycocotools": _pycocotools, "hotcoco": fast_cocoeval, "ultrafast": _ultrafast, "faster": _faster}


def run_once(fn, coco_gt, coco_dt, iou_type):
    """(seconds, stats (12,), precision, recall) of one evaluation."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        ev = fn(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    seconds = time.perf_counter() - t0
    return seconds, np.asarray(ev.stats, dtype=np.float64), np.asarray(ev.eval["precision"]), \
        np.asarray(ev.eval["recall"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--sizes", nargs="+", default=["64x64", "96x128", "160x160"], help="HxW of ordinary images")
    ap.add_argument("--large-every", type=int, default=50, help="every N-th image is 320x320 with 100 objects")
    ap.add_argument("--mean-instances", type=float, default=7.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iou-types", nargs="+", default=["segm", "bbox"], choices=["segm", "bbox"])
    ap.add_argument("--impls", nargs="+", default=["pycocotools", "hotcoco"], choices=sorted(IMPLS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in args.sizes)
    if "pycocotools" not in args.impls:
        args.impls = ["pycocotools"] + args.impls  # the reference

    t0 = time.perf_counter()
    gt, results = make_synthetic_coco(args.images, sizes=sizes, large_every=args.large_every,
                                      large_size=(320, 320), mean_instances=args.mean_instances, seed=args.seed)
    print(f"synthetic set: {len(gt['images'])} images, {len(gt['annotations'])} ground-truth objects "
          f"({sum(a['iscrowd'] for a in gt['annotations'])} crowd), {len(results)} detections; "
          f"built in {time.perf_counter() - t0:.1f} s")
    coco_gt = coco_from_dict(gt)
    summary = {}
    for iou_type in args.iou_types:
        res = copy.deepcopy(results)
        if iou_type == "segm":  # as Detectron2 does: mask AP uses mask areas
            for r in res:
                r.pop("bbox")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(res)
        print(f"[{iou_type}] pycocotools loadRes (shared by all): {time.perf_counter() - t0:.2f} s")
        # each its own copy: some libraries rewrite the annotation dicts they are given (RLE counts to bytes)
        dts = {name: coco_dt if name == "pycocotools" else coco_from_dict(copy.deepcopy(coco_dt.dataset))
               for name in args.impls}
        times = {name: [] for name in args.impls}
        ref = None
        for rnd in range(args.rounds):
            for name in args.impls:
                seconds, stats, prec, rec = run_once(IMPLS[name], coco_gt, dts[name], iou_type)
                times[name].append(seconds)
                if name == "pycocotools":
                    ref = (stats, prec, rec)
                    continue
                same = np.array_equal(stats, ref[0]) and np.array_equal(prec, ref[1]) and np.array_equal(rec, ref[2])
                diff = max(float(np.abs(stats - ref[0]).max()), float(np.abs(prec - ref[1]).max()),
                           float(np.abs(rec - ref[2]).max()))
                if rnd == 0:
                    print(f"[{iou_type}] {name}: stats, precision and recall "
                          f"{'identical to pycocotools' if same else f'DIFFER (max abs diff {diff:.3g})'}")
        print(f"[{iou_type}] stats: {np.round(ref[0], 4).tolist()}")
        base = statistics.median(times["pycocotools"])
        for name in args.impls:
            med = statistics.median(times[name])
            per_run = ", ".join(f"{t:.2f}" for t in times[name])
            print(f"[{iou_type}] {name:12s} per run (s): {per_run}  median {med:.2f}  speed-up {base / med:.1f}x")
            summary[(iou_type, name)] = {"times": times[name], "speedup": base / med}
    return summary


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Wall time of train_net's evaluation (as ``--eval-only`` runs it), split into the model and the rest.

    python tools/benchmark_eval_pass.py --num-val 100 --image-size 128 --rounds 2

The bundled synthetic model (configs/synthetic/oneformer_synthetic.yaml + demo/assets/oneformer_synthetic.pth) on a
generated synthetic panoptic val set (tools/train_synthetic.py's generator), evaluated with PQ, AP and mIoU. Modes,
run interleaved (A B C A B C ...) in this process:

- ``three-pass``: the paper's numbers the old way: three evaluations (MODEL.TEST.TASK panoptic, instance, semantic),
  evaluators in the loop (TEST.EVALUATOR_QUEUE 0), AP with pycocotools;
- ``one-pass``: MODEL.TEST.TASK all, evaluators in the loop, AP with the fast COCOeval;
- ``one-pass+worker``: MODEL.TEST.TASK all with the evaluators' process() in a worker thread (TEST.EVALUATOR_QUEUE 2).

"model" is the time inside the model's forward calls; "rest" is everything else of Trainer.test (data loading,
evaluator process() calls or waiting for them, the final metric computation). Prints per run and the medians.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MODES = ("three-pass", "one-pass", "one-pass+worker")


def run_mode(mode, ts, cfg_file, weights, out_dir, threads):
    """(total seconds, model seconds, results) of one evaluation in ``mode``."""
    import torch

    from oneformer import train_net
    from oneformer.evaluation import fast_coco_eval
    from oneformer.utils.checkpoint import OneFormerCheckpointer

    tasks = ("panoptic", "instance", "semantic") if mode == "three-pass" else ("all",)
    queue = 2 if mode == "one-pass+worker" else 0
    saved_hotcoco = fast_coco_eval.hotcoco
    if mode == "three-pass":
        fast_coco_eval.hotcoco = None  # pycocotools, as before
    torch.set_num_threads(threads)
    total = model_time = 0.0
    results = {}
    try:
        for task in tasks:
            cfg = ts.build_cfg(cfg_file, ["MODEL.DEVICE", "cpu", "TEST.EVALUATOR_QUEUE", str(queue),
                                          "MODEL.TEST.TASK", task, "MODEL.WEIGHTS", weights],
                               output_dir=os.path.join(out_dir, f"{mode}_{task}"), is_train=False)
            cfg.freeze()
            model = train_net.Trainer.build_model(cfg)
            OneFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(weights, resume=False)
            spent = []
            forward = model.forward

            def timed(batched_inputs, forward=forward, spent=spent):
                t0 = time.perf_counter()
                try:
                    return forward(batched_inputs)
                finally:
                    spent.append(time.perf_counter() - t0)

            model.forward = timed
            t0 = time.perf_counter()
            res = train_net.Trainer.test(cfg, model)
            total += time.perf_counter() - t0
            model_time += sum(spent)
            results[task] = res
    finally:
        fast_coco_eval.hotcoco = saved_hotcoco
    return total, model_time, results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-val", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--config-file", default=os.path.join(REPO, "configs", "synthetic", "oneformer_synthetic.yaml"))
    ap.add_argument("--weights", default=os.path.join(REPO, "demo", "assets", "oneformer_synthetic.pth"))
    args = ap.parse_args(argv)

    import logging

    from detectron2.utils.logger import setup_logger

    from oneformer.data.datasets.register_synthetic import register_all_synthetic
    from tests.tiny import load_script

    setup_logger(name="oneformer", output=None)
    logging.getLogger("detectron2").setLevel(logging.WARNING)
    logging.getLogger("oneformer").setLevel(logging.WARNING)
    logging.getLogger("fvcore").setLevel(logging.WARNING)
    ts = load_script("train_synthetic", "tools")
    work = tempfile.mkdtemp(prefix="benchmark_eval_pass_")
    data = os.path.join(work, "synthetic_shapes")
    ts.generate_dataset(data, num_train=1, num_val=args.num_val, seed=0, size=args.image_size)
    register_all_synthetic(dataset_dir=data)
    print(f"synthetic val: {args.num_val} images of {args.image_size}x{args.image_size}; torch threads "
          f"{args.threads}; work folder {work}", flush=True)
    times = {m: [] for m in args.modes}
    metrics = {}
    for r in range(args.rounds):
        for mode in args.modes:
            total, model_time, res = run_mode(mode, ts, args.config_file, args.weights, os.path.join(work, str(r)),
                                              args.threads)
            times[mode].append((total, model_time))
            rest = total - model_time
            print(f"round {r} {mode:16s} total {total:6.2f} s  model {model_time:6.2f} s  rest {rest:6.2f} s  "
                  f"({100 * rest / total:.0f}% outside the model)", flush=True)
            if r == 0:
                if mode == "three-pass":
                    metrics[mode] = (res["panoptic"]["panoptic_seg"]["PQ"], res["instance"]["segm"]["AP"],
                                     res["semantic"]["sem_seg"]["mIoU"])
                else:
                    metrics[mode] = (res["all"]["panoptic_seg"]["PQ"], res["all"]["segm"]["AP"],
                                     res["all"]["sem_seg"]["mIoU"])
    print("medians:")
    for mode in args.modes:
        tot = statistics.median(t for t, _ in times[mode])
        mod = statistics.median(m for _, m in times[mode])
        print(f"  {mode:16s} total {tot:6.2f} s  model {mod:6.2f} s  rest {tot - mod:6.2f} s; "
              f"PQ / AP / mIoU {' / '.join(f'{v:.3f}' for v in metrics[mode])}")
    return times, metrics


if __name__ == "__main__":
    main()

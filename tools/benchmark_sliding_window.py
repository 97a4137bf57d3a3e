#!/usr/bin/env python
"""Peak memory and time of sliding-window inference against whole-image inference, per image size.

    python tools/benchmark_sliding_window.py --sizes 640x640 1280x960 4000x3000 --modes sliding
    python tools/benchmark_sliding_window.py --sizes 640x640 1280x960 --modes whole

Each (mode, size) runs in a fresh process, so its peak resident memory (ru_maxrss) is its own: the model (random
weights unless --weights) is built, one random image of that size goes through the predictor with the chosen task,
and the process reports the wall time of that call, the resident memory after building the model, and the peak.
"whole" feeds the image at its own size (no test resize), like "sliding", so both segment the same pixels.
--max-windows N (sliding only) runs just the first N windows through the network and reuses the last one's
outputs for the others, so that a large image's peak memory (every accumulator, the merging and the post-processing
at full size) is measured in minutes on a CPU; its time is then extrapolated: per-window time × windows + the rest.
Prints one JSON line per run and a table; --json writes the list.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args) -> int:
    import numpy as np
    import torch

    sys.path.insert(0, REPO)
    from oneformer.predictor import OneFormerPredictor

    torch.manual_seed(0)
    height, width = (int(v) for v in args.child_size.split("x"))
    opts = ["MODEL.TEST.SLIDING_WINDOW.ENABLED", "True"] + list(args.opts)
    predictor = OneFormerPredictor.from_config_file(os.path.join(REPO, args.config_file), weights=args.weights or "",
                                                    opts=opts, device="cpu")
    # both modes take the image at its own size; "whole" runs it as one window
    inputs_key = args.child_mode == "sliding"
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    model = predictor.model
    window_seconds = []
    real_run = model._run_window

    def run_window(x, crop, with_emb):
        if args.max_windows and len(window_seconds) >= args.max_windows:
            logits, masks, padded, emb = cached[0]
            return logits, masks[:, : -(-crop.shape[-2] // 32) * 8, : -(-crop.shape[-1] // 32) * 8], padded, emb
        t = time.perf_counter()
        out = real_run(x, crop, with_emb)
        window_seconds.append(time.perf_counter() - t)
        cached[:] = [out]
        return out

    cached = []
    model._run_window = run_window
    base = _rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        x = predictor._inputs(predictor.load_image(image), args.task, (args.output,))
        x["sliding_window"] = inputs_key
        predictor.model([x])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    windows, row = 1, {}
    if inputs_key:
        from oneformer.modeling.sliding_window import window_boxes

        windows = len(window_boxes(height, width, model.sliding_window))
        if len(window_seconds) < windows:  # extrapolate the windows that were not run
            per_window = sum(window_seconds) / len(window_seconds)
            row = {"windows_run": len(window_seconds), "measured_seconds": round(seconds, 2),
                   "seconds_per_window": round(per_window, 2)}
            seconds += per_window * (windows - len(window_seconds))
    print(json.dumps({"mode": args.child_mode, "size": args.child_size, "pixels": height * width, "windows": windows,
                      "seconds": round(seconds, 2), "model_rss_mb": round(base), "peak_rss_mb": round(peak),
                      "threads": torch.get_num_threads(), "task": args.task, "output": args.output, **row}),
          flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=DEFAULT_CONFIG)
    parser.add_argument("--weights", default="", help="checkpoint (default: random weights)")
    parser.add_argument("--sizes", nargs="+", default=["640x640", "1280x960", "2560x1920", "4000x3000"],
                        help="WIDTHxHEIGHT")
    parser.add_argument("--modes", nargs="+", default=["sliding", "whole"], choices=["sliding", "whole"])
    parser.add_argument("--task", default="panoptic", choices=["panoptic", "semantic", "instance"])
    parser.add_argument("--output", default="panoptic_seg", choices=["panoptic_seg", "sem_seg", "instances"])
    parser.add_argument("--max-windows", type=int, default=0,
                        help="sliding: run only this many windows through the network (see above); 0: all")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    parser.add_argument("--child-mode", help=argparse.SUPPRESS)
    parser.add_argument("--child-size", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_mode:
        return child(args)
    results = []
    for mode in args.modes:
        for size in args.sizes:
            w, h = size.split("x")
            cmd = [sys.executable, os.path.abspath(__file__), "--config-file", args.config_file, "--task", args.task,
                   "--output", args.output, "--child-mode", mode, "--child-size", f"{h}x{w}",
                   "--max-windows", str(args.max_windows)]
            if args.weights:
                cmd += ["--weights", args.weights]
            if args.opts:
                cmd += ["--opts"] + list(args.opts)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                row = {"mode": mode, "size": size, "error": f"over {args.timeout:.0f} s"}
            else:
                lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
                if proc.returncode == 0 and lines:
                    row = json.loads(lines[-1])
                    row["size"] = size
                else:
                    tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                    row = {"mode": mode, "size": size, "error": f"exit {proc.returncode}: {tail[:200]}"}
            print(json.dumps(row), flush=True)
            results.append(row)
    print(f"{'mode':8} {'size':>10} {'windows':>7} {'seconds':>8} {'model MB':>9} {'peak MB':>8}  (* time "
          "extrapolated from the windows run)")
    for r in results:
        if "error" in r:
            print(f"{r['mode']:8} {r['size']:>10}  {r['error']}")
        else:
            star = "*" if "windows_run" in r else ""
            print(f"{r['mode']:8} {r['size']:>10} {r['windows']:>7} {r['seconds']:>7}{star:1} {r['model_rss_mb']:>9} "
                  f"{r['peak_rss_mb']:>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

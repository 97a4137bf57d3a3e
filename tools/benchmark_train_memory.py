#!/usr/bin/env python
"""Peak training memory of one OneFormer iteration, with and without activation checkpointing.

    python tools/benchmark_train_memory.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml \
        --device cpu --batch 1
    python tools/benchmark_train_memory.py --config-file ... --device cuda --batch 2 --precision bfloat16

Each variant runs in its own process (so that one's peak does not hide the other's): ``none`` (no checkpointing),
``backbone`` (MODEL.BACKBONE.ACTIVATION_CHECKPOINT) and ``all`` (also MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT).
A process builds the training model (random weights, MODEL.IS_TRAIN True) and the config's optimizer, makes a batch of
``--batch`` images at the config's crop size (INPUT.CROP.SIZE, else INPUT.IMAGE_SIZE; ``--size`` overrides) with
targets derived like the unified mapper's from a random panoptic layout of the dataset's classes (panoptic task), and
runs one training iteration: forward, backward and the optimizer step (which allocates AdamW's state), optionally
under ``torch.autocast`` (``--precision``).

Memory: on CPU, the process's peak resident set size (``getrusage`` ru_maxrss), and the part of it the iteration
added over the RSS before it; on a GPU, ``torch.cuda.max_memory_allocated`` during the iteration and the memory
allocated before it. ``--max-memory-gb`` stops a CPU variant whose RSS passes that value (the table then says so),
so that a shared machine is not driven into swapping or its OOM killer.

Output: a table (Markdown) and, with ``--json``, the numbers.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

VARIANTS = {
    "none": (False, False),
    "backbone": (True, False),
    "all": (True, True),
}
LABELS = {"none": "none", "backbone": "backbone", "all": "backbone + pixel-decoder encoder"}


def _rss_bytes(pid="self"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def build_cfg(args, variant):
    """The training config of ``args.config_file`` + ``args.opts`` with the variant's checkpointing keys."""
    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all
    from oneformer.config import merge_config, resolve_config_file

    cfg = add_oneformer_config_all(get_cfg())
    merge_config(cfg, resolve_config_file(args.config_file), list(args.opts))
    backbone, encoder = VARIANTS[variant]
    cfg.MODEL.IS_TRAIN = True
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.ACTIVATION_CHECKPOINT = backbone
    cfg.MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT = encoder
    cfg.freeze()
    return cfg


def image_size(cfg, args):
    if args.size:
        return args.size, args.size
    if cfg.INPUT.CROP.ENABLED and cfg.INPUT.CROP.TYPE == "absolute":
        return tuple(int(s) for s in cfg.INPUT.CROP.SIZE)
    if "IMAGE_SIZE" in cfg.INPUT and cfg.INPUT.DATASET_MAPPER_NAME == "coco_unified_lsj":
        return cfg.INPUT.IMAGE_SIZE, cfg.INPUT.IMAGE_SIZE
    return cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST


def make_batch(cfg, batch, size, seed=0):
    """``batch`` training inputs of ``size`` (H, W): random images and a 4x4 grid of segments of random classes of
    DATASETS.TRAIN[0] (its thing/stuff split), with the panoptic task's targets and text list."""
    import numpy as np
    import torch
    from detectron2.data import MetadataCatalog

    import oneformer.data.datasets  # noqa: F401  (dataset metadata)
    from oneformer.data.dataset_mappers.oneformer_unified_dataset_mapper import (build_text_list, derive_targets,
                                                                                 targets_to_instances)

    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    names = list(meta.get("stuff_classes", None) or [f"class {i}" for i in range(num_classes)])[:num_classes]
    things = sorted(int(v) for v in (meta.get("thing_dataset_id_to_contiguous_id", None) or {}).values())
    rng = np.random.RandomState(seed)
    h, w = size
    out = []
    for _ in range(batch):
        ids = np.zeros((h, w), dtype=np.int64)
        segments = []
        for k in range(16):
            r, c = divmod(k, 4)
            ids[r * h // 4:(r + 1) * h // 4, c * w // 4:(c + 1) * w // 4] = k + 1
            segments.append({"id": k + 1, "category_id": int(rng.randint(len(names))), "iscrowd": 0})
        classes, masks, boxes = derive_targets(ids, segments, "panoptic", things)
        text_len = cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES - cfg.MODEL.TEXT_ENCODER.N_CTX
        out.append({
            "image": torch.from_numpy(rng.randint(0, 256, (3, h, w), dtype=np.uint8)),
            "instances": targets_to_instances((h, w), classes, masks, boxes),
            "task": "The task is panoptic",
            "text": build_text_list(classes, "panoptic", names, text_len),
        })
    return out


def run_variant(args, variant):
    """One variant in this process; returns a dict of measurements."""
    import contextlib

    import torch
    from detectron2.modeling import build_model

    import oneformer  # noqa: F401  (registers the model)
    from oneformer.engine import build_optimizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = build_cfg(args, variant)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    size = image_size(cfg, args)
    data = make_batch(cfg, args.batch, size)
    cuda = args.device.startswith("cuda")
    dtype = getattr(torch, args.precision) if args.precision != "float32" else None
    autocast = torch.autocast(torch.device(args.device).type, dtype=dtype) if dtype else contextlib.nullcontext()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    start = time.perf_counter()
    with autocast:
        losses = model(data)
    loss = sum(losses.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"variant": variant, "device": args.device, "precision": args.precision, "batch": args.batch,
            "size": list(size), "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "before_bytes": before, "peak_bytes": peak, "iteration_bytes": peak - before, "seconds": seconds,
            "loss": float(loss.detach()), "measure": "max_memory_allocated" if cuda else "peak RSS"}


def _watch(proc, limit_bytes, state):
    """Kill ``proc`` when its RSS passes ``limit_bytes`` (CPU runs); remembers the largest RSS seen."""
    while proc.poll() is None:
        rss = _rss_bytes(proc.pid)
        state["max_rss"] = max(state.get("max_rss", 0), rss)
        if limit_bytes and rss > limit_bytes:
            state["killed"] = True
            proc.kill()
            return
        time.sleep(0.05)


def run_child(args, variant):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--config-file", args.config_file,
           "--device", args.device, "--batch", str(args.batch), "--threads", str(args.threads),
           "--precision", args.precision] + (["--size", str(args.size)] if args.size else []) + list(args.opts)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = {}
    limit = int(args.max_memory_gb * 2**30) if args.max_memory_gb and not args.device.startswith("cuda") else 0
    watcher = threading.Thread(target=_watch, args=(proc, limit, state), daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if state.get("killed"):
        return {"variant": variant, "error": f"stopped: RSS passed --max-memory-gb {args.max_memory_gb:g}",
                "peak_bytes": state["max_rss"]}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
    return {"variant": variant, "error": f"exit code {proc.returncode}: {tail[0]}"}


def table(results):
    gib = 2.0**30
    lines = ["| activation checkpointing | peak memory | of which the iteration | iteration time |",
             "|---|---|---|---|"]
    for r in results:
        label = LABELS.get(r["variant"], r["variant"])
        if "error" in r:
            seen = f" (> {r['peak_bytes'] / gib:.2f} GiB)" if r.get("peak_bytes") else ""
            lines.append(f"| {label} | {r['error']}{seen} | | |")
        else:
            lines.append(f"| {label} | {r['peak_bytes'] / gib:.2f} GiB | {r['iteration_bytes'] / gib:.2f} GiB | "
                         f"{r['seconds']:.1f} s |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default="configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1, help="images in the iteration")
    p.add_argument("--size", type=int, default=None, help="square input size (default: the config's crop)")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="torch.autocast dtype of the forward pass")
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    p.add_argument("--variants", default="none,backbone,all", help=f"comma-separated, of {sorted(VARIANTS)}")
    p.add_argument("--max-memory-gb", type=float, default=0.0, help="CPU: stop a variant above this RSS (0: none)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(run_variant(args, args.child)), flush=True)
        return 0
    results = [run_child(args, v) for v in args.variants.split(",")]
    first = next((r for r in results if "error" not in r), None)
    if first:
        print(f"{args.config_file}: {first['params_m']:.1f}M parameters, batch {args.batch}, "
              f"{first['size'][0]}x{first['size'][1]}, {args.device}, {args.precision}, one iteration "
              f"(forward, backward, optimizer step); memory = {first['measure']}")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if all("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

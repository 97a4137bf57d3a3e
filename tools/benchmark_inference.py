#!/usr/bin/env python
"""Per-image inference latency and peak memory of OneFormer, beside transformers' OneFormer with the same weights.

For one config, image size and task (batch 1): builds our model (weights from MODEL.WEIGHTS, else a seeded random
initialization), converts the same weights to transformers' ``OneFormerForUniversalSegmentation`` with
tools/convert_hf_oneformer.py, and runs each in its own process (so peak memory is per model):
- ours: ``model([{"image", "task"}])`` end to end, post-processing included (only the task's output is computed);
- transformers: the model on the same normalized, padded tensor and task token ids, plus its image processor's
  ``post_process_<task>_segmentation`` with the same thresholds.
The two processes take turns, one timed run each, so that slow phases of a shared machine affect both alike.
Prints median latency after warm-up runs, peak memory, the ratio, a per-stage breakdown of ours (backbone, pixel
decoder, transformer decoder, post-processing) and, for the panoptic task, how many pixels the two panoptic
segmentations agree on.

transformers' ``post_process_panoptic_segmentation`` does not follow the original's rule (spec §7), which ours does
by default: it resizes sigmoid probabilities instead of logits, gives every pixel to its arg-max query even where that
query's mask is below 0.5 (the original leaves such pixels void), and measures a query's own area on score-weighted
probabilities. The two segmentations therefore differ near mask borders and in uncertain regions even with identical
logits. For the panoptic task ours therefore runs twice, in separate processes: with the original rule and with
``MODEL.TEST.PANOPTIC_RULE transformers`` (``--rules`` picks), each timed and compared with transformers' output.

Random weights give near-uniform class probabilities, so no query passes the thresholds and post-processing has
nothing to do. ``--confident S`` multiplies the class head and the last mask-embedding layer of both models by S, so
that, like a trained model, some queries are confident and mask probabilities saturate (default 16 with random
weights, 1 with real weights).

``--batch N`` runs N images per call (synthetic images of N seeds, or ``--image`` N times); latency is per call and
images/s = N / latency. ``--extra`` adds more processes of ours (and of transformers) in the same turns, for the GPU
figures (tools/gpu_checks.py): ``eager-bf16`` (bf16 autocast, the pixel decoder following autocast),
``compiled-bf16`` (the same under ``torch.compile``), ``cudagraphs-bf16`` (also ``MODEL.COMPILE_MODE
reduce-overhead``, CUDA graphs) and ``hf-bf16`` (transformers under bf16 autocast); each is compared with the first
process of ours. ``--json FILE`` writes every figure.

``--compile`` adds three more processes of ours, timed in the same turns: the network under ``torch.compile``
(MODEL.COMPILE, inductor: what the compiler picks for this machine), the AOTInductor package and the dynamo-exported
ONNX file run by onnxruntime (both through ``oneformer.export.ExportedOneFormer``, post-processing included). Their
one-off cost (compilation; export and compilation) is reported separately from the steady-state latency, and their
panoptic output is compared with eager ours. With ``--precision bf16`` only the compiled model is added (the exported
files are float32 graphs).

    python tools/benchmark_inference.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml \\
        --size 512 --task panoptic --threads 2 --compile
"""
import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


# --extra: name -> (ours' worker kind, precision, KEY VALUE overrides)
EXTRA_VARIANTS = {
    "eager-bf16": ("eager", "bf16", ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION", "autocast"]),
    "compiled-bf16": ("compiled", "bf16", ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION", "autocast"]),
    "cudagraphs-bf16": ("compiled", "bf16", ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION", "autocast",
                                             "MODEL.COMPILE_MODE", "reduce-overhead"]),
    "hf-bf16": ("hf", "bf16", []),
}


def extra_variant_args(args, name):
    """The worker kind of an ``--extra`` variant and a copy of ``args`` with its precision and overrides."""
    kind, precision, opts = EXTRA_VARIANTS[name]
    return kind, argparse.Namespace(**{**vars(args), "precision": precision, "opts": list(args.opts) + opts})


def setup_cfg(args, rule=None, compile=False):
    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all
    from oneformer.config import merge_config

    cfg = merge_config(add_oneformer_config_all(get_cfg()), args.config_file, args.opts)
    cfg.MODEL.DEVICE = args.device
    # the YAML's MODEL.WEIGHTS names backbone pretraining weights; a full checkpoint comes from --weights
    cfg.MODEL.WEIGHTS = args.weights or ""
    cfg.MODEL.IS_TRAIN = False
    cfg.MODEL.TEST.SEMANTIC_ON = args.task == "semantic"
    cfg.MODEL.TEST.INSTANCE_ON = args.task == "instance"
    cfg.MODEL.TEST.PANOPTIC_ON = args.task == "panoptic"
    if rule is not None:
        cfg.MODEL.TEST.PANOPTIC_RULE = rule
    cfg.MODEL.COMPILE = compile
    cfg.MODEL.COMPILE_FREEZE = compile  # one fixed size, weights loaded before the first call
    cfg.freeze()
    return cfg


def build_ours(args, cfg):
    import oneformer  # noqa: F401
    from detectron2.modeling import build_model

    from oneformer.utils.checkpoint import OneFormerCheckpointer

    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        OneFormerCheckpointer(model, allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE).load(cfg.MODEL.WEIGHTS)
    elif args.confident != 1.0:
        with torch.no_grad():
            pred = model.sem_seg_head.predictor
            pred.class_embed.weight.mul_(args.confident)
            pred.class_embed.bias.mul_(args.confident)
            pred.mask_embed.layers[-1].weight.mul_(args.confident)
            pred.mask_embed.layers[-1].bias.mul_(args.confident)
    return model


def load_image(path):
    """An image file as uint8 RGB, 3×H×W."""
    from oneformer.utils.image_io import read_image

    return torch.from_numpy(np.ascontiguousarray(read_image(path, "RGB").transpose(2, 0, 1)))


def make_input(size, seed):
    """A smooth synthetic RGB image (uint8, 3×H×W): random colour blobs, so features are not pure noise."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 8, 8, generator=g) * 255
    img = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return img[0].clamp(0, 255).to(torch.uint8)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_memory_mb(device):
    """Peak memory of this process in MiB: CUDA allocations on a GPU, else the resident set's high-water mark."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        # VmHWM belongs to this process image: getrusage's ru_maxrss would also count the parent's peak before exec
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _serve(run, device, warmup, cmd, out):
    """Warm up, report "ready", then time one call of ``run`` per "run" command until "done"; returns the times."""
    for _ in range(warmup):
        run()
    out.put("ready")
    times = []
    while cmd.get() == "run":
        _sync(device)
        t0 = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - t0)
        out.put(times[-1])
    return times


def _autocast(args):
    if args.precision == "bf16":
        return torch.autocast(args.device, dtype=torch.bfloat16)
    return torch.autocast(args.device, enabled=False)


def _exported_runner(args, model, image, variant):
    """Export ``model`` (static size of ``image``) as an AOTInductor package or ONNX file in a temporary folder and
    return a function that runs it end to end (``ExportedOneFormer``, post-processing included)."""
    from oneformer.export import ExportedOneFormer, export_aoti, export_onnx

    folder = tempfile.mkdtemp(prefix="oneformer_bench_")
    path = os.path.join(folder, "model.onnx" if variant == "onnxruntime" else "model.pt2")
    h, w = image.shape[-2:]
    (export_onnx if variant == "onnxruntime" else export_aoti)(model, path, task=args.task, height=h, width=w)
    runtime = ExportedOneFormer(path, num_threads=args.threads, device=args.device, resize=False)
    return lambda: [runtime(image, task=args.task)]


def input_images(args):
    """The ``args.batch`` input images (uint8, 3×H×W): ``--image`` repeated, else synthetic images of consecutive
    seeds."""
    batch = getattr(args, "batch", 1)
    if args.image:
        return [load_image(args.image)] * batch
    return [make_input(args.size, args.seed + i) for i in range(batch)]


def _ours_panoptic(out):
    ids, segments = out["panoptic_seg"]
    return ids.cpu(), {s["id"]: s["category_id"] for s in segments}


def worker_ours(args, weights_path, rule, variant, cmd, queue):
    """``variant``: "eager", "compiled" (MODEL.COMPILE), "AOTInductor" or "onnxruntime" (exported files)."""
    torch.set_num_threads(args.threads)
    cfg = setup_cfg(args, rule, compile=variant == "compiled")
    model = build_ours(args, cfg)
    model.load_state_dict(torch.load(weights_path, weights_only=True))
    batch = input_images(args)
    image = batch[0]
    inputs = [{"image": im, "task": args.task, "height": im.shape[-2], "width": im.shape[-1]} for im in batch]
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run_model():
        with torch.no_grad(), _autocast(args):
            return model(inputs)

    t0 = time.perf_counter()
    run = run_model
    if variant in ("AOTInductor", "onnxruntime"):
        run = _exported_runner(args, model, image, variant)
    if variant != "eager":  # the one-off cost: export and compilation, or torch.compile at the first call
        run()
        prepare_s = time.perf_counter() - t0
    times = _serve(run, args.device, args.warmup, cmd, queue)
    outs = run()
    if variant != "eager":
        result = {"times": times, "peak_mb": _peak_memory_mb(args.device), "prepare_s": prepare_s}
        if args.task == "panoptic":
            result["panoptic_batch"] = [_ours_panoptic(o) for o in outs]
            result["panoptic"] = result["panoptic_batch"][0]
        queue.put(result)
        cmd.get()
        return

    # per-stage breakdown: the same steps as OneFormer.forward, timed one by one
    stages = {"backbone": [], "pixel decoder": [], "transformer decoder": [], "post-processing": []}
    head = model.sem_seg_head
    for _ in range(max(3, args.runs // 2)):
        with torch.no_grad(), _autocast(args):
            _sync(args.device)
            t0 = time.perf_counter()
            images = model.preprocess_image(inputs)
            tasks = model.encode_tasks(inputs)
            features = model.backbone(images.tensor)
            _sync(args.device)
            t1 = time.perf_counter()
            mask_features, _, multi_scale, _, _ = head.pixel_decoder.forward_features(features)
            _sync(args.device)
            t2 = time.perf_counter()
            outputs = head.predictor(multi_scale, mask_features, tasks)
            _sync(args.device)
            t3 = time.perf_counter()
            model.inference(inputs, images, outputs)
            _sync(args.device)
            t4 = time.perf_counter()
        for k, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[k].append(dt)
    result = {"times": times, "peak_mb": _peak_memory_mb(args.device),
              "stages": {k: statistics.median(v) for k, v in stages.items()}}
    if args.task == "panoptic":
        result["panoptic_batch"] = [_ours_panoptic(o) for o in outs]
        result["panoptic"] = result["panoptic_batch"][0]
    queue.put(result)
    cmd.get()  # stay alive until the result (tensors shared through file descriptors) has been received


def worker_hf(args, hf_dir, pixel_values, image_size, task_ids, thresholds, cmd, queue):
    torch.set_num_threads(args.threads)
    from transformers import OneFormerForUniversalSegmentation, OneFormerImageProcessor

    model = OneFormerForUniversalSegmentation.from_pretrained(hf_dir).eval().to(args.device)
    processor = OneFormerImageProcessor()
    pixel_values = pixel_values.to(args.device)
    task_ids = task_ids.to(args.device)
    target = [tuple(pixel_values.shape[-2:]) if image_size is None else image_size] * pixel_values.shape[0]
    object_threshold, overlap, stuff_ids = thresholds
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run():
        with torch.no_grad(), _autocast(args):
            out = model(pixel_values=pixel_values, task_inputs=task_ids)
            if args.task == "panoptic":
                return processor.post_process_panoptic_segmentation(
                    out, threshold=object_threshold, overlap_mask_area_threshold=overlap,
                    label_ids_to_fuse=stuff_ids, target_sizes=target)
            if args.task == "instance":
                return processor.post_process_instance_segmentation(
                    out, threshold=object_threshold, overlap_mask_area_threshold=overlap, target_sizes=target)
            return processor.post_process_semantic_segmentation(out, target_sizes=target)

    times = _serve(run, args.device, args.warmup, cmd, queue)
    result = {"times": times, "peak_mb": _peak_memory_mb(args.device)}
    if args.task == "panoptic":
        result["panoptic_batch"] = [(r["segmentation"].cpu(), {s["id"]: s["label_id"] for s in r["segments_info"]})
                                    for r in run()]
        result["panoptic"] = result["panoptic_batch"][0]
    queue.put(result)
    cmd.get()  # stay alive until the result (tensors shared through file descriptors) has been received


def stuff_ids(cfg):
    """Contiguous ids of the stuff classes of the config's training dataset (what transformers fuses per class)."""
    from detectron2.data import MetadataCatalog

    meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    thing_ids = set(getattr(meta, "thing_dataset_id_to_contiguous_id", {}).values())
    return set(range(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)) - thing_ids


def _receive(name, proc, queue):
    """The next message of a worker, or RuntimeError if its process ends without sending one."""
    import queue as queue_module

    while True:
        try:
            return queue.get(timeout=5)
        except queue_module.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"{name}: worker exited with code {proc.exitcode} (its traceback is above)")


def run_interleaved(workers, runs):
    """Time several models, each in its own process, taking turns.

    ``workers``: {name: (target, args)}; each target is called as ``target(*args, cmd, queue)`` and follows
    :func:`_serve`, then puts its result dict and waits for "exit". All processes load and warm up first; then,
    ``runs`` times, each one in turn times a single call while the others wait, so slow phases of a shared machine
    hit all of them alike.
    Returns {name: result} with "latency" (the median time) added.
    """
    ctx = mp.get_context("spawn")
    procs = {}
    try:
        for name, (target, args) in workers.items():
            cmd, queue = ctx.Queue(), ctx.Queue()
            proc = ctx.Process(target=target, args=args + (cmd, queue))
            proc.start()
            procs[name] = (proc, cmd, queue)
        for name, (proc, _, queue) in procs.items():
            if _receive(name, proc, queue) != "ready":
                raise RuntimeError(f"{name}: worker did not start")
        for _ in range(runs):
            for name, (proc, cmd, queue) in procs.items():
                # a pause first: the threads of the process that ran last may still be spinning in OpenMP's wait
                # (they keep a core busy for a while after a parallel region), which would slow this run
                time.sleep(1.0)
                cmd.put("run")
                _receive(name, proc, queue)
        results = {}
        for name, (proc, cmd, queue) in procs.items():
            cmd.put("done")
            results[name] = _receive(name, proc, queue)
            cmd.put("exit")
            results[name]["latency"] = statistics.median(results[name]["times"])
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"{name}: worker failed with exit code {proc.exitcode}")
        return results
    finally:
        for proc, _, _ in procs.values():
            if proc.is_alive():
                proc.terminate()


def panoptic_agreement(a, b):
    """Fraction of pixels on which two panoptic segmentations agree: same category (void counts as one), and the
    segment of each pixel maps to the segment of the other that overlaps it most."""
    (ids_a, cat_a), (ids_b, cat_b) = a, b
    ids_a, ids_b = ids_a.long().flatten(), ids_b.long().flatten()
    ids_b = ids_b.clamp(min=0)  # transformers marks "no segment at all" with -1
    def cats(ids, table):
        lut = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        for k, v in table.items():
            lut[k] = v
        return lut[ids]
    ca, cb = cats(ids_a, cat_a), cats(ids_b, cat_b)
    same_cat = ca == cb
    pair = ids_a * (int(ids_b.max()) + 1) + ids_b
    counts = torch.bincount(pair)
    best = {}
    for p in counts.nonzero().flatten().tolist():
        sa, sb = divmod(p, int(ids_b.max()) + 1)
        if sa not in best or counts[p] > counts[best[sa][0] * (int(ids_b.max()) + 1) + best[sa][1]]:
            best[sa] = (sa, sb)
    mapped = torch.tensor([best.get(s, (s, -1))[1] for s in range(int(ids_a.max()) + 1)])[ids_a]
    return same_cat.float().mean().item(), (same_cat & (mapped == ids_b)).float().mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file",
                        default=os.path.join(REPO, "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml"))
    parser.add_argument("--size", type=int, default=512, help="square image side (of the synthetic input image)")
    parser.add_argument("--image", default="", help="an image file to use instead of the synthetic input")
    parser.add_argument("--task", default="panoptic", choices=["panoptic", "semantic", "instance"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per model (the models take turns)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: both models under torch.autocast (an extra figure; fp32 is the default)")
    parser.add_argument("--confident", type=float, default=None,
                        help="scale of class head and mask embedding (default 16 for random weights, 1 otherwise)")
    parser.add_argument("--weights", default="", help="a OneFormer checkpoint (path or URL); default: random weights")
    parser.add_argument("--no-hf", action="store_true", help="time ours only")
    parser.add_argument("--compile", action="store_true",
                        help="also time ours compiled (torch.compile), as an AOTInductor package and in onnxruntime")
    parser.add_argument("--rules", nargs="+", choices=["original", "transformers"],
                        default=["original", "transformers"],
                        help="panoptic task: the MODEL.TEST.PANOPTIC_RULE values to run ours with (one process each)")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument("--extra", nargs="+", default=[], choices=sorted(EXTRA_VARIANTS),
                        help="more processes timed in the same turns (see above)")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    cfg = setup_cfg(args)
    if args.confident is None:
        args.confident = 1.0 if cfg.MODEL.WEIGHTS else 16.0
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible")

    import oneformer  # noqa: F401

    model = build_ours(args, cfg)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    batch = input_images(args)
    image = batch[0]
    with torch.no_grad():
        pixel_values = model.preprocess_image([{"image": im.to(model.device)} for im in batch]).tensor.cpu()
    task_ids = model.task_token_ids(args.task)[None].expand(args.batch, -1).contiguous()
    thresholds = (cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD, cfg.MODEL.TEST.OVERLAP_THRESHOLD, stuff_ids(cfg))
    params = sum(v.numel() for v in model.parameters())
    del model

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {args.threads} threads"
    h, w = image.shape[-2:]
    source = args.image or "synthetic image"
    print(f"# {os.path.relpath(args.config_file, REPO)} | {source} {h}x{w}, batch {args.batch}, task {args.task}, "
          f"{args.precision} | {device_name} | torch {torch.__version__} | {params / 1e6:.1f}M params | "
          f"weights: {cfg.MODEL.WEIGHTS or f'random (seed {args.seed}), confident x{args.confident:g}'}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "ours.pth")
        torch.save(state, weights)
        # ours once per panoptic rule (the rule only matters for the panoptic task)
        rules = list(dict.fromkeys(args.rules)) if args.task == "panoptic" else [None]
        names = {rule: "ours" if rule is None else f"ours, {rule} rule" for rule in rules}
        workers = {names[rule]: (worker_ours, (args, weights, rule, "eager")) for rule in rules}
        # the exported files are float32 graphs: under --precision bf16 only the compiled model follows autocast
        variants = (("compiled",) if args.precision == "bf16" else ("compiled", "AOTInductor", "onnxruntime")
                    ) if args.compile else ()
        for variant in variants:
            workers[f"ours, {variant}"] = (worker_ours, (args, weights, rules[0], variant))
        for name in args.extra:
            if not name.startswith("hf-"):
                kind, variant_args = extra_variant_args(args, name)
                workers[f"ours, {name}"] = (worker_ours, (variant_args, weights, rules[0], kind))
        if not args.no_hf:
            sys.path.insert(0, os.path.join(REPO, "tools"))
            from convert_hf_oneformer import ours_to_hf
            from transformers import OneFormerForUniversalSegmentation

            hf_config, hf_state = ours_to_hf(state, cfg)
            hf_model = OneFormerForUniversalSegmentation(hf_config)
            hf_model.load_state_dict(hf_state, strict=True)
            hf_dir = os.path.join(tmp, "hf")
            hf_model.save_pretrained(hf_dir)
            del hf_model, hf_state
            workers["transformers"] = (worker_hf, (args, hf_dir, pixel_values, (h, w), task_ids, thresholds))
            for name in args.extra:
                if name.startswith("hf-"):
                    _, variant_args = extra_variant_args(args, name)
                    workers[f"transformers, {name}"] = (
                        worker_hf, (variant_args, hf_dir, pixel_values, (h, w), task_ids, thresholds))
        del state
        results = run_interleaved(workers, args.runs)
    hf = results.get("transformers")

    for r in results.values():
        r["images_per_s"] = args.batch / r["latency"]
    print(f"{'':28s}{'latency (median)':>18s}{'peak memory':>14s}{'images/s':>10s}")
    for name, r in results.items():
        label = "transformers + post-process" if name == "transformers" else name
        print(f"{label:28s}{r['latency'] * 1e3:>15.0f} ms{r['peak_mb']:>11.0f} MB{r['images_per_s']:>10.2f}")
    for name, r in results.items():
        if hf is not None and name != "transformers":
            print(f"speed-up (transformers / {name}): {hf['latency'] / r['latency']:.2f}x")
    for name, r in results.items():
        if "prepare_s" in r:
            print(f"one-off cost of {name} (export / compilation, first call): {r['prepare_s']:.1f} s")
    for name, r in results.items():
        print(f"runs, in turn ({name}, ms):", " ".join(f"{t * 1e3:.0f}" for t in r["times"]))
    eager = results[names[rules[0]]]
    for name, r in results.items():
        if args.task == "panoptic" and r is not eager and name.startswith("ours"):
            r["vs_eager"] = batch_agreement(r["panoptic_batch"], eager["panoptic_batch"])
            same, identical, n, n_ref = r["vs_eager"]
            print(f"panoptic output of {name} vs eager: {same * 100:.3f}% of pixels same segment, segments "
                  f"{'identical' if identical else 'DIFFERENT'} ({n} vs {n_ref})")
    for name in names.values():
        stages = results[name]["stages"]
        print(f"{name} per stage (median):", ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in stages.items()))
    if hf is not None and args.task == "panoptic":
        for name in names.values():
            ours = results[name]
            cat, seg = panoptic_agreement(ours["panoptic"], hf["panoptic"])
            void = (ours["panoptic"][0] == 0).float().mean().item()
            print(f"panoptic agreement, {name} vs transformers: {cat * 100:.3f}% of pixels same category, "
                  f"{seg * 100:.3f}% same segment; segments: {len(ours['panoptic'][1])} vs "
                  f"{len(hf['panoptic'][1])}; void: {void * 100:.3f}% vs "
                  f"{(hf['panoptic'][0] <= 0).float().mean().item() * 100:.3f}% of pixels")
    if hf is not None and args.task == "panoptic":
        for r in results.values():
            if r is not hf:
                # over the whole batch: pixels of the same category and segment as transformers' output
                pairs = [panoptic_agreement(a, b) for a, b in zip(r["panoptic_batch"], hf["panoptic_batch"])]
                r["vs_transformers"] = [sum(p[i] for p in pairs) / len(pairs) for i in (0, 1)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": os.path.relpath(args.config_file, REPO), "device": device_name,
                       "torch": torch.__version__, "batch": args.batch, "size": [h, w], "task": args.task,
                       "params_m": params / 1e6,
                       "results": {name: {k: v for k, v in r.items() if not k.startswith("panoptic")}
                                   for name, r in results.items()}}, f, indent=1)
    return results


def batch_agreement(outs, refs):
    """Agreement of a batch of panoptic outputs with reference outputs: the fraction of pixels in the same segment
    (``panoptic_agreement``: segment ids may be numbered differently), whether every image has the same segments
    (their categories, as a sorted list), and the numbers of segments; returns (fraction, identical, n, n_ref)."""
    same = sum(panoptic_agreement(a, b)[1] * b[0].numel() for a, b in zip(outs, refs)) / sum(
        b[0].numel() for b in refs)
    identical = all(sorted(a[1].values()) == sorted(b[1].values()) for a, b in zip(outs, refs))
    return same, identical, sum(len(a[1]) for a in outs), sum(len(b[1]) for b in refs)


if __name__ == "__main__":
    main()

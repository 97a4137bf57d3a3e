#!/usr/bin/env python
"""Export time, file size and CPU latency of OneFormer in every export format, beside eager and torch.compile.

Builds the config's model (MODEL.WEIGHTS from --weights, else a seeded random initialization), exports it with a
fixed task and input size (static shapes, no in-graph post-processing: the graph ends at the class and mask
logits) and times, on one smooth synthetic image, with --threads intra-op threads each:

- eager: the model up to the same logits (normalization and padding, backbone, pixel decoder with the compiled
  deformable-attention kernel when built, transformer decoder), under torch.no_grad();
- torch.compile: the same network compiled (MODEL.COMPILE's CompiledNetwork, inductor; "export" = compilation);
- pt2 / AOTInductor / onnxruntime: one torch.export program, run as an ExportedProgram, compiled by AOTInductor,
  and converted by the dynamo-based ONNX exporter (CPU execution provider, inter-op threads 1);
- onnxruntime (TorchScript-based exporter) and TorchScript: the traced graph (skipped with --no-torchscript).

Prints export time, file size, median latency after warm-up runs and the largest logit difference to eager.

    python tools/benchmark_export.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml \\
        --size 512 --threads 2
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file",
                   default=os.path.join(REPO, "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml"))
    p.add_argument("--weights", default="", help="OneFormer checkpoint (default: random weights)")
    p.add_argument("--size", type=int, default=512, help="square input size")
    p.add_argument("--task", default="panoptic", choices=["semantic", "instance", "panoptic"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-torchscript", action="store_true",
                   help="skip the TorchScript-based files (TorchScript, onnx-torchscript)")
    p.add_argument("--formats", nargs="+", default=["compile", "pt2", "aoti", "onnx"],
                   choices=["compile", "pt2", "aoti", "onnx"], help="the torch.compile / torch.export rows to run")
    p.add_argument("--out-dir", default=None, help="where to write the files (default: a temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p.parse_args(argv)


def smooth_image(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 8, 8, generator=g) * 255
    img = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    return img[0].clamp(0, 255).to(torch.uint8)


def median_ms(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import oneformer  # noqa: F401
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from oneformer import add_oneformer_config_all
    from oneformer.export import (ExportedOneFormer, export_aoti, export_onnx, export_onnx_torchscript,
                                  export_program, export_pt2, export_torchscript)
    from oneformer.modeling.compile import CompiledNetwork
    from oneformer.ops import extension_status
    from oneformer.utils.checkpoint import OneFormerCheckpointer

    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = args.weights
    cfg.MODEL.IS_TRAIN = False
    torch.manual_seed(args.seed)
    model = build_model(cfg).eval()
    if args.weights:
        OneFormerCheckpointer(model).load(args.weights)
    n_params = sum(p.numel() for p in model.parameters())
    image = smooth_image(args.size, args.seed)
    inputs = [{"image": image, "task": args.task}]

    def eager():
        with torch.no_grad():
            x = model.preprocess_image(inputs).tensor
            return model.sem_seg_head(model.backbone(x), model.encode_tasks(inputs))

    print(f"config {os.path.relpath(args.config_file, REPO)}, {n_params / 1e6:.1f} M parameters, "
          f"{'weights ' + args.weights if args.weights else 'random weights'}, input {args.size}x{args.size}, "
          f"task {args.task}, {args.threads} threads, torch {torch.__version__}, "
          f"deformable attention {'C++ kernel' if extension_status()['built'] else 'PyTorch reference'} (eager)")
    ref = eager()
    rows = [("eager (PyTorch)", None, None, median_ms(eager, args.warmup, args.runs), 0.0)]

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="oneformer_export_")
    os.makedirs(out_dir, exist_ok=True)
    common = dict(task=args.task, postprocess="none", height=args.size, width=args.size, dynamic=False,
                  input_format=cfg.INPUT.FORMAT)
    common_export = {k: v for k, v in common.items() if k != "postprocess"}
    batch = image[None]

    def diff(outs):
        return max(float((outs[k] - ref[k]).abs().max()) for k in ("pred_logits", "pred_masks"))

    def add_row(name, path, export_s, run):
        rows.append((name, export_s, None if path is None else os.path.getsize(path),
                     median_ms(run, args.warmup, args.runs), diff(run())))

    if "compile" in args.formats:
        compiled = CompiledNetwork(model._network)
        x, tasks = model.preprocess_image(inputs).tensor, model.encode_tasks(inputs)

        def run_compiled():
            with torch.no_grad():
                return compiled(x, tasks)

        start = time.perf_counter()
        run_compiled()
        add_row("torch.compile (inductor), up to the logits", None, time.perf_counter() - start, run_compiled)
    exported = [f for f in ("pt2", "aoti", "onnx") if f in args.formats]
    if exported:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = export_program(model, task=args.task, height=args.size, width=args.size)
        program_s = time.perf_counter() - start
        writers = {"pt2": (export_pt2, "oneformer.pt2", "ExportedProgram (torch.export, .pt2)"),
                   "aoti": (export_aoti, "oneformer_aoti.pt2", "AOTInductor package (.pt2)"),
                   "onnx": (export_onnx, "oneformer.onnx", f"onnxruntime {__import__('onnxruntime').__version__} "
                                                           "(CPU; dynamo exporter, opset 18)")}
        for fmt in exported:
            write, name, label = writers[fmt]
            path = os.path.join(out_dir, name)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write(model, path, program=program, **common_export)
            runtime = ExportedOneFormer(path, num_threads=args.threads)
            add_row(label, path, program_s + time.perf_counter() - start, lambda: runtime.run(batch))
            del runtime

    if not args.no_torchscript:
        path = os.path.join(out_dir, "oneformer_ts.onnx")
        start = time.perf_counter()
        export_onnx_torchscript(model, path, opset=args.opset, **common)
        export_s = time.perf_counter() - start
        runtime = ExportedOneFormer(path, num_threads=args.threads)
        add_row(f"onnxruntime (CPU; TorchScript-based exporter, opset {args.opset})", path, export_s,
                lambda: runtime.run(batch))
        del runtime
        path = os.path.join(out_dir, "oneformer.pt")
        start = time.perf_counter()
        export_torchscript(model, path, **common)
        export_s = time.perf_counter() - start
        runtime = ExportedOneFormer(path)  # quiet: the runtime silences torch.jit.load's deprecation note
        add_row("TorchScript (torch.jit.load)", path, export_s, lambda: runtime.run(batch))

    print(f"\n| | export | file size | latency (median of {args.runs}) | max abs logit diff to eager |")
    print("|---|---|---|---|---|")
    for name, export_s, size, ms, d in rows:
        print(f"| {name} | {'' if export_s is None else f'{export_s:.0f} s'} | "
              f"{'' if size is None else f'{size / 2**20:.0f} MiB'} | {ms:.0f} ms | "
              f"{'' if export_s is None else f'{d:.2g}'} |")
    print("(export: for the torch.export rows, torch.export's own time plus writing / compiling that file; for "
          "torch.compile, the first call)")
    print(f"\nfiles in {out_dir}")


if __name__ == "__main__":
    main()

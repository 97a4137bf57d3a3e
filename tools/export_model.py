#!/usr/bin/env python
"""Export OneFormer's inference graph: torch.export (pt2), AOTInductor (aoti), ONNX, or TorchScript.

    python tools/export_model.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml \\
        --format onnx --task panoptic --dynamic --output oneformer.onnx \\
        MODEL.WEIGHTS 250_16_swin_l_oneformer_ade20k_160k.pth

Formats: pt2 (an ExportedProgram, torch.export), aoti (an AOTInductor package compiled from it), onnx (the
dynamo-based exporter on it, opset 18, the deformable attention as standard ONNX ops); these take images padded to
multiples of 32 plus their sizes and return the logits (the runtime pads and post-processes). torchscript and
onnx-torchscript (the TorchScript-based exporter) are kept for in-graph post-processing (--postprocess).

The graph: uint8 image (B, 3, H, W) in INPUT.FORMAT → normalization and zero padding to multiples of 32 → backbone
→ pixel decoder → transformer decoder → class logits (B, N, K+1) and mask logits (B, N, H/4, W/4); optionally the
semantic or panoptic post-processing as tensor ops (--postprocess). The task is baked in (--task semantic|instance|
panoptic) or an int64 (B, 77) token-id input (--task input). --dynamic makes batch, height and width dynamic;
otherwise the graph is for a (--batch, 3, --height, --width) canvas. The sizes follow the config's test resize (README
"Export", "Sizes": the example of a dynamic export is a photo after the test resize; a static canvas must hold one).
README "Export" documents the output contract;
``oneformer.export.runtime.ExportedOneFormer`` runs the files and returns the eager model's outputs, with the
predictor's test resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, stored in the file).

Weights come from MODEL.WEIGHTS (a full OneFormer checkpoint, path or URL); with MODEL.WEIGHTS "" the model is
randomly initialized (a warning says so). onnx-torchscript uses torch.onnx.export(dynamo=False) with opset --opset
(>= 17).
"""
import argparse
import logging
import os
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

logger = logging.getLogger("oneformer.export")


def get_parser() -> argparse.ArgumentParser:
    from oneformer.export import DEFAULT_OPSET, FORMATS, POSTPROCESS, TASK_MODES

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="OneFormer YAML config")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="default: from --output (.onnx: onnx, .pt2: pt2)")
    p.add_argument("--task", choices=TASK_MODES, default="panoptic",
                   help="task baked into the graph, or 'input' for a (B, 77) int64 task_ids input")
    p.add_argument("--height", type=int, default=None,
                   help="static export: the canvas height (images after the test resize are padded into it); dynamic: "
                        "an example image height, resized as the runtime will (default: a 640x480 photo's)")
    p.add_argument("--width", type=int, default=None, help="the canvas / example width (see --height)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    p.add_argument("--batch", type=int, default=1, help="batch size of a static export (default 1)")
    p.add_argument("--postprocess", choices=POSTPROCESS, default="none",
                   help="post-processing inside the graph (default none: logits only)")
    p.add_argument("--opset", type=int, default=None,
                   help=f"onnx-torchscript: ONNX opset (>= 17, default {DEFAULT_OPSET}); onnx writes opset 18")
    p.add_argument("--output", required=True, help="output file")
    p.add_argument("--verify", action="store_true",
                   help="run the exported file on a random image and print its difference to the eager model")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="config overrides: KEY VALUE ...")
    return p


def setup_cfg(args):
    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all
    from oneformer.config import merge_config

    cfg = merge_config(add_oneformer_config_all(get_cfg()), args.config_file, args.opts)
    cfg.MODEL.IS_TRAIN = False
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def build_model(cfg):
    """The eval-mode OneFormer with MODEL.WEIGHTS loaded (random weights, with a warning, when it is empty)."""
    import oneformer  # noqa: F401  (registers the components)
    from detectron2.modeling import build_model as d2_build_model

    from oneformer.utils.checkpoint import OneFormerCheckpointer

    model = d2_build_model(cfg).eval()
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialized model")
    elif "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"MODEL.WEIGHTS {weights!r} does not exist (the model-zoo YAMLs name backbone "
                                "pretraining weights; pass the OneFormer checkpoint, or MODEL.WEIGHTS '' for random "
                                "weights)")
    else:
        OneFormerCheckpointer(model).load(weights)
    return model


def verify(model, path: str, meta: dict) -> float:
    """Max abs difference of class and mask logits between the exported file and the eager model on one image."""
    from oneformer.export import ExportedOneFormer

    h, w = (meta["height"], meta["width"]) if not meta["dynamic"] else tuple(meta.get("example", (256, 256)))
    g = torch.Generator().manual_seed(1)
    b = meta["batch"] or 1
    images = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    task = meta["task"] if meta["task"] != "input" else meta["default_task"]
    runtime = ExportedOneFormer(path)  # run() feeds the image as it is (the test resize is __call__'s)
    ids = runtime.task_ids(task)[None].expand(b, -1) if meta["task"] == "input" else None
    outs = runtime.run(images, ids)
    with torch.no_grad():
        batched = [{"image": im, "task": task} for im in images]
        ref = model.sem_seg_head(model.backbone(model.preprocess_image(batched).tensor), model.encode_tasks(batched))
    return max(float((outs[k] - ref[k]).abs().max()) for k in ("pred_logits", "pred_masks"))


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    if not args.dynamic and (args.height is None or args.width is None):
        raise SystemExit("--height and --width are needed unless --dynamic")
    from oneformer.config import ConfigError
    from oneformer.export import export_model, format_from_path

    try:
        cfg = setup_cfg(args)
    except ConfigError as e:  # a bad key, value or file: one line
        raise SystemExit(f"error: {e}") from None
    model = build_model(cfg)
    try:
        fmt = args.format or format_from_path(args.output)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    kwargs = dict(task=args.task, postprocess=args.postprocess, height=args.height, width=args.width,
                  dynamic=args.dynamic, batch=args.batch, input_format=cfg.INPUT.FORMAT,
                  resize=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST), opset=args.opset)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    start = time.perf_counter()
    try:
        meta = export_model(model, args.output, fmt, **kwargs)
    except ValueError as e:  # an option the format does not take (e.g. --postprocess with pt2)
        raise SystemExit(f"error: {e}")
    size_mb = os.path.getsize(args.output) / 2**20
    logger.info("wrote %s (%s, %.1f MB) in %.1f s: inputs %s, outputs %s", args.output, fmt, size_mb,
                time.perf_counter() - start, meta["inputs"], meta["outputs"])
    print(f"exported {args.output}: {fmt}, {size_mb:.1f} MB, task {meta['task']}, postprocess {meta['postprocess']}, "
          f"{'dynamic' if meta['dynamic'] else 'static %dx3x%dx%d' % (meta['batch'], meta['height'], meta['width'])}")
    if args.verify:
        print(f"max abs difference of the logits to the eager model: {verify(model, args.output, meta):.3g}")
    return meta


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main()

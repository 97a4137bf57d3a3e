#!/usr/bin/env python
"""OneFormer demo: segment images, a video or a webcam stream for one task or all three.

    python demo/demo.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml \\
        --input photos/ --output out/ --task all
    python demo/demo.py --config-file ... --input street.jpg --output street_panoptic.png --task panoptic
    python demo/demo.py --config-file ... --video-input clip.mp4 --output clip_semantic.mp4 --task semantic

Inputs: files, globs or directories (``--input``; a directory's images by extension, GIF included, its other files
reported as skipped). Output: a file for a single input (``--task all`` adds ``_<task>`` to its name), else a
directory with one sub-folder per task (an image file name for several inputs is refused); folders are created;
inputs with the same base name are written as ``<name>_1.png``, ... with a note. Weights: ``--weights``,
else ``MODEL.WEIGHTS`` given in ``--opts``, else the checkpoint the model zoo lists for the config (downloaded and
cached by Detectron2). ``--save-predictions`` also writes standard files next to the visualizations: panoptic PNG +
COCO panoptic JSON, semantic label PNGs, COCO instance results (RLE masks). A file that cannot be read is reported
and skipped; the exit code is 1 when any input failed. A bad config key, checkpoint or argument is reported in one
line (exit code 2). Checkpoints load with torch's weights-only unpickler; ``--allow-unsafe-pickle`` allows full
pickle loading for a trusted file that needs it.
"""
import argparse
import glob
import os
import sys
import time

import cv2
import numpy as np
import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import oneformer  # noqa: E402,F401  (registers everything)
from oneformer import model_zoo  # noqa: E402
from oneformer.config import ConfigError, check_overrides, resolve_config_file  # noqa: E402
from oneformer.predictor import DEFAULT_MAX_PIXELS, ImageReadError, OneFormerPredictor  # noqa: E402
from oneformer.utils import prediction_files as pf  # noqa: E402
from oneformer.utils.checkpoint import CheckpointReadError, UnsafeCheckpointError  # noqa: E402
from oneformer.utils.device import check_device, choose_device  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from visualizer import draw, summarize  # noqa: E402

TASK_CHOICES = ("panoptic", "semantic", "instance", "all")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # GIF: its first frame
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", nargs="+", help="image files, globs (quote them) or directories")
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument("--webcam", action="store_true", help="the first webcam")
    parser.add_argument("--output", help="with --input (required): a file for one input, else a directory; with "
                                         "--video-input or --webcam: a .mp4 file (default: show a window)")
    parser.add_argument("--task", default="panoptic", type=str.lower,
                        help="panoptic, semantic, instance, or all (the three)")
    parser.add_argument("--confidence-threshold", type=float, default=None,
                        help="drop instances scored below it and panoptic queries less confident than it")
    parser.add_argument("--weights", help="checkpoint path or URL (default: see above)")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda (default: MODEL.DEVICE of --opts, else cuda when available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--sliding-window", action="store_true",
                        help="large images: run overlapping windows at the training resolution over the image at its "
                             "own size (MODEL.TEST.SLIDING_WINDOW.SIZE/STRIDE in --opts change them)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help="skip (and report) images with more pixels: their full-resolution outputs need memory "
                             f"in proportion (default {DEFAULT_MAX_PIXELS:,}; 0: no cap)")
    parser.add_argument("--save-predictions", action="store_true", help="also write standard prediction files")
    parser.add_argument("--allow-unsafe-pickle", action="store_true",
                        help="load a checkpoint that needs full pickle loading (ONLY for files you trust: it can run "
                             "arbitrary code); same as MODEL.ALLOW_UNSAFE_PICKLE True")
    parser.add_argument("--compile", action="store_true",
                        help="run the network through torch.compile (MODEL.COMPILE; the first image of each size "
                             "bucket compiles, the others reuse the graph)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser


def expand_inputs(patterns, ignored=None):
    """Files from files, globs and directories, in order, without duplicates; missing ones stay (to be reported).
    The files of a directory that are not images by their extension are appended to the list ``ignored`` (when
    given), so that they can be reported."""
    files = []
    for p in patterns:
        if os.path.isdir(p):
            entries = [os.path.join(p, f) for f in sorted(os.listdir(p))]
            found = [f for f in entries if f.lower().endswith(IMAGE_EXTENSIONS)]
            if ignored is not None:
                ignored.extend(f for f in entries if os.path.isfile(f) and f not in found)
        elif glob.has_magic(p):
            found = sorted(glob.glob(os.path.expanduser(p)))
        else:
            found = [p]
        files.extend(f for f in found if f not in files)
    return files


def resolve_weights(args):
    """--weights, else MODEL.WEIGHTS of --opts (KEY VALUE pairs, checked), else the model zoo's; ValueError when
    --weights and MODEL.WEIGHTS both name a file and differ."""
    given = [v for k, v in zip(args.opts[0::2], args.opts[1::2]) if k == "MODEL.WEIGHTS"]
    if args.weights and given and given[-1] != args.weights:
        raise ValueError(f"two checkpoints were given: --weights {args.weights} and MODEL.WEIGHTS {given[-1]} in "
                         "--opts; give one of them")
    if args.weights or given:
        return args.weights or given[-1]
    weights = model_zoo.default_weights(args.config_file)
    if weights is None:
        raise ValueError(f"no checkpoint known for {args.config_file}: pass --weights PATH_OR_URL")
    return weights


def output_paths(args, files, tasks, notes=None):
    """{(file, task): visualization path} and the directory for prediction files. An input written under another
    name than its own (same base name as an earlier one) adds a line to the list ``notes`` (when given). ValueError
    when --output names an image file but there are several inputs."""
    as_file = os.path.splitext(args.output)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(args.output)
    if as_file and len(files) > 1:
        raise ValueError(f"--output {args.output} names an image file, but there are {len(files)} inputs: give a "
                         "directory (it gets one sub-folder per task)")
    single = as_file and len(files) == 1
    paths = {}
    if single:
        root, ext = os.path.splitext(args.output)
        for t in tasks:
            paths[(files[0], t)] = args.output if len(tasks) == 1 else f"{root}_{t}{ext}"
        pred_dir = os.path.dirname(os.path.abspath(args.output))
    else:
        pred_dir = args.output
        stems = {}
        for f in files:
            stem = os.path.splitext(os.path.basename(f))[0]
            n = stems.get(stem, 0)
            stems[stem] = n + 1
            name = stem if n == 0 else f"{stem}_{n}"  # same base name in different folders
            if n and notes is not None:
                notes.append(f"note: {f} is written as {name}.png (an earlier input is also named {stem})")
            for t in tasks:
                paths[(f, t)] = os.path.join(args.output, t, name + ".png")
    return paths, pred_dir


def plan_images(args, tasks):
    """(files, paths, pred_dir) for --input, or an exit status when there is nothing to do or --output does not fit;
    skipped directory entries and renamed outputs are reported. Runs before the model is built."""
    if args.output is None:
        print("error: --output is required with --input (a file for one input, else a directory)", file=sys.stderr)
        return 2
    ignored, notes = [], []
    files = expand_inputs(args.input, ignored)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
        print(f"skipped {len(ignored)} file(s) that are not images by their extension ({'/'.join(IMAGE_EXTENSIONS)})"
              f": {shown}", file=sys.stderr)
    if not files:
        print(f"no images found in {args.input}", file=sys.stderr)
        return 1
    try:
        paths, pred_dir = output_paths(args, files, tasks, notes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(note, file=sys.stderr)
    return files, paths, pred_dir


def run_images(args, predictor, tasks, files, paths, pred_dir):
    id_map = pf.contiguous_to_dataset_ids(predictor.metadata)
    panoptic_entries, instance_results, failed = [], [], []
    for image_id, f in enumerate(tqdm.tqdm(files, desc="images", disable=len(files) < 2, file=sys.stderr)):
        try:
            image = predictor.load_image(f)
        except ImageReadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failed.append(f)
            continue
        rgb = image if predictor.cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1]
        start = time.perf_counter()
        words = []
        for t in tasks:
            result = predictor(image if predictor.input_format == predictor.cfg.INPUT.FORMAT else image[:, :, ::-1],
                               task=t)[0]
            out = paths[(f, t)]
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            cv2.imwrite(out, draw(rgb, result, t, predictor.metadata)[:, :, ::-1])
            words.append(summarize(result, t, predictor.metadata))
            if args.save_predictions:
                stem = os.path.splitext(os.path.basename(out))[0]
                if t == "panoptic":
                    ids, segments = result["panoptic_seg"]
                    png = os.path.join(pred_dir, "panoptic_predictions", stem + ".png")
                    entry = pf.panoptic_to_coco(ids, segments, png, image_id, id_map)
                    entry["image_file"] = f
                    panoptic_entries.append(entry)
                elif t == "semantic":
                    pf.write_semantic_png(result["sem_seg"], os.path.join(pred_dir, "semantic_predictions",
                                                                            stem + ".png"))
                else:
                    for r in pf.instances_to_coco_results(result["instances"], image_id, id_map):
                        r["image_file"] = f
                        instance_results.append(r)
        print(f"{f}: " + " | ".join(words) + f" ({time.perf_counter() - start:.2f} s)")
    if args.save_predictions:
        if "panoptic" in tasks:
            categories = [{"id": v, "name": n} for v, n in _category_names(predictor.metadata, id_map)]
            pf.write_json({"annotations": panoptic_entries, "categories": categories},
                          os.path.join(pred_dir, "panoptic_predictions.json"))
        if "instance" in tasks:
            pf.write_json(instance_results, os.path.join(pred_dir, "instance_predictions.json"))
    if failed:
        print(f"{len(failed)} of {len(files)} inputs could not be read: {failed}", file=sys.stderr)
        return 1
    return 0


def _category_names(metadata, id_map):
    names = getattr(metadata, "stuff_classes", None) or []
    return [(id_map.get(i, i), n) for i, n in enumerate(names)]


def run_stream(args, predictor, tasks):
    if len(tasks) != 1:
        print("video and webcam take one task (not 'all')", file=sys.stderr)
        return 2
    task = tasks[0]
    source = args.video_input if args.video_input else 0
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        print(f"cannot open {'video ' + args.video_input if args.video_input else 'the webcam'}", file=sys.stderr)
        return 1
    fps = cap.get(cv2.CAP_PROP_FPS) or 15.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if args.video_input else None
    writer = None
    frames = 0
    with tqdm.tqdm(total=total, desc="frames", file=sys.stderr) as bar:
        while True:
            ok, frame_bgr = cap.read()
            if not ok:
                break
            rgb = frame_bgr[:, :, ::-1].copy()
            fmt_frame = rgb if predictor.input_format == "RGB" else frame_bgr
            result = predictor(fmt_frame, task=task)[0]
            vis = draw(rgb, result, task, predictor.metadata)[:, :, ::-1]
            if args.output:
                if writer is None:
                    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
                    writer = cv2.VideoWriter(args.output, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (vis.shape[1], vis.shape[0]))
                writer.write(np.ascontiguousarray(vis))
            else:
                cv2.imshow("OneFormer", vis)
                if cv2.waitKey(1) == 27:  # Esc
                    break
            frames += 1
            bar.update(1)
    cap.release()
    if writer is not None:
        writer.release()
    print(f"{frames} frames" + (f" written to {args.output}" if args.output else ""))
    return 0 if frames else 1


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.task not in TASK_CHOICES:
        print(f"--task must be one of {TASK_CHOICES}, got {args.task!r}", file=sys.stderr)
        return 2
    sources = [bool(args.input), bool(args.video_input), bool(args.webcam)]
    if sum(sources) != 1:
        print("give exactly one of --input, --video-input, --webcam", file=sys.stderr)
        return 2
    try:
        args.config_file = resolve_config_file(args.config_file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tasks = ["panoptic", "semantic", "instance"] if args.task == "all" else [args.task]
    if args.input:
        plan = plan_images(args, tasks)
        if isinstance(plan, int):
            return plan
    try:
        check_overrides(args.opts, where="--opts", fix="write it before --opts")
        weights = resolve_weights(args)
        opts = [o for k, v in zip(args.opts[0::2], args.opts[1::2]) if k != "MODEL.WEIGHTS" for o in (k, v)]
        if args.allow_unsafe_pickle:
            opts += ["MODEL.ALLOW_UNSAFE_PICKLE", "True"]
        device = choose_device(args.device, opts)
        check_device(device, "use --device cpu")
        predictor = OneFormerPredictor.from_config_file(
            args.config_file, weights=weights, opts=opts, device=device,
            confidence_threshold=args.confidence_threshold, batch_size=args.batch_size,
            input_format="RGB", compile=args.compile, sliding_window=True if args.sliding_window else None,
            max_pixels=args.max_pixels or None,
        )
    except (ConfigError, UnsafeCheckpointError, CheckpointReadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.input:
        return run_images(args, predictor, tasks, *plan)
    return run_stream(args, predictor, tasks)


if __name__ == "__main__":
    sys.exit(main())

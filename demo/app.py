#!/usr/bin/env python
"""OneFormer web app (Gradio): upload an image or pick a sample, choose a task (or all three), see the overlay, a table
of segments (class, score, area) and download the standard prediction files.

    pip install .[app]
    python demo/app.py                                   # the bundled tiny model, offline, http://127.0.0.1:7860
    python demo/app.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml --weights model.pth

Takes ``--config-file`` / ``--weights`` / ``--device`` / ``--opts`` like demo/demo.py (default: the bundled synthetic
config and checkpoint); ``--sliding-window`` runs large images by windows; ``--compile`` runs the network through
torch.compile (the console says when a compile starts and ends). An upload that is not a readable image, or
is larger than ``--max-pixels``, gets a message in the page. The page calls ``SegmentationApp.predict``, which calls
the predictor; it is usable without Gradio (tests/demo/test_app.py).
"""
import argparse
import glob
import os
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import oneformer  # noqa: E402,F401  (registers everything)
from oneformer import model_zoo  # noqa: E402
from oneformer.config import ConfigError, check_overrides  # noqa: E402
from oneformer.predictor import ImageReadError, OneFormerPredictor  # noqa: E402
from oneformer.utils import prediction_files as pf  # noqa: E402
from oneformer.utils.checkpoint import CheckpointReadError, UnsafeCheckpointError  # noqa: E402
from oneformer.utils.device import DeviceError  # noqa: E402
from oneformer.utils.image_io import read_image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from visualizer import draw, summarize  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO, "configs", "synthetic", "oneformer_synthetic.yaml")
DEFAULT_WEIGHTS = os.path.join(REPO, "demo", "assets", "oneformer_synthetic.pth")
SAMPLES = sorted(glob.glob(os.path.join(REPO, "demo", "assets", "samples", "*.png")))
TASKS = ("panoptic", "semantic", "instance")
TASK_CHOICES = TASKS + ("all",)
TABLE_HEADERS = ["task", "class", "score", "area"]


@dataclass
class AppResult:
    """What the page shows: overlays [(RGB uint8 image, caption)], table rows [task, class, score, area (pixels)],
    the prediction files written, and a message (the summary, or what was wrong)."""

    overlays: List[Tuple[np.ndarray, str]] = field(default_factory=list)
    rows: List[list] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    message: str = ""
    ok: bool = True


class SegmentationApp:
    """The app's prediction function around a ``OneFormerPredictor``.

    Args:
        predictor: the model to run.
        output_dir: where each request's prediction files go (a fresh sub-folder per request); default: a temporary
            folder.
        max_pixels: larger uploads are refused with a message (a whole-image forward grows with the area; use
            --sliding-window for large images).
    """

    def __init__(self, predictor: OneFormerPredictor, output_dir: Optional[str] = None, max_pixels: int = 16_000_000):
        self.predictor = predictor
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="oneformer_app_")
        self.max_pixels = max_pixels
        self.names = list(getattr(predictor.metadata, "stuff_classes", None) or [])
        self.id_map = pf.contiguous_to_dataset_ids(predictor.metadata)

    def class_name(self, c: int) -> str:
        return self.names[c] if 0 <= c < len(self.names) else str(c)

    def predict(self, image, task: str = "panoptic") -> AppResult:
        """Segment one image.

        Args:
            image: a file path (an upload), or an H×W×3 RGB uint8 array.
            task: "panoptic", "semantic", "instance" or "all".
        Returns:
            AppResult; a bad input (no image, unreadable, too large, unknown task) gives ok=False and a message.
        """
        if image is None:
            return AppResult(message="Upload an image or pick a sample first.", ok=False)
        if task not in TASK_CHOICES:
            return AppResult(message=f"Unknown task {task!r}: choose one of {', '.join(TASK_CHOICES)}.", ok=False)
        name = os.path.basename(image) if isinstance(image, (str, os.PathLike)) else "image"
        try:
            rgb = self._read(image, name)
        except (ImageReadError, ValueError) as e:
            return AppResult(message=f"Cannot use this upload: {e}", ok=False)
        h, w = rgb.shape[:2]
        if h * w > self.max_pixels:
            return AppResult(message=f"Cannot use this upload: {name} is {w}×{h} pixels, more than this app takes "
                                     f"({self.max_pixels:,}; see --max-pixels and --sliding-window).", ok=False)
        out_dir = os.path.join(self.output_dir, uuid.uuid4().hex[:12])
        os.makedirs(out_dir)
        stem = os.path.splitext(name)[0] or "image"
        result = AppResult()
        words = []
        for t in (TASKS if task == "all" else (task,)):
            out = self.predictor(rgb, task=t, embeddings=t == "panoptic", probabilities=t == "semantic")[0]
            result.overlays.append((draw(rgb, out, t, self.predictor.metadata), t))
            result.rows += self._rows(out, t)
            result.files += self._write(out, t, out_dir, stem)
            words.append(summarize(out, t, self.predictor.metadata))
        result.message = f"{name} ({w}×{h}): " + "; ".join(words)
        return result

    def _read(self, image, name: str) -> np.ndarray:
        """RGB uint8 H×W×3 (the predictor's input format). A file's errors name it by ``name``: an upload is a
        server-side temporary file whose path means nothing to the user (and is not theirs to see)."""
        if isinstance(image, (str, os.PathLike)):
            try:
                return read_image(image, "RGB")
            except ImageReadError as e:
                raise ImageReadError(str(e).replace(os.fspath(image), name)) from None
        return self.predictor.load_image(image, name)

    def _rows(self, out, task: str) -> List[list]:
        rows = []
        if task == "panoptic":
            ids, segments = out["panoptic_seg"]
            areas = torch.bincount(ids.flatten().long(), minlength=len(segments) + 1).tolist()
            for s in segments:
                rows.append([task, self.class_name(s["category_id"]), round(float(s.get("score", float("nan"))), 3),
                             int(areas[s["id"]])])
        elif task == "semantic":
            probs = out["sem_seg_probs"]
            labels = probs.argmax(0)
            for c in torch.unique(labels).tolist():
                where = labels == c
                rows.append([task, self.class_name(c), round(float(probs[c][where].mean()), 3), int(where.sum())])
        else:
            inst = out["instances"].to("cpu")
            for i in range(len(inst)):
                rows.append([task, self.class_name(int(inst.pred_classes[i])), round(float(inst.scores[i]), 3),
                             int(inst.pred_masks[i].sum())])
        return rows

    def _write(self, out, task: str, out_dir: str, stem: str) -> List[str]:
        """The demo's --save-predictions files for one image: panoptic PNG + COCO panoptic JSON, semantic label PNG,
        COCO instance results JSON."""
        if task == "panoptic":
            ids, segments = out["panoptic_seg"]
            png = os.path.join(out_dir, f"{stem}_panoptic.png")
            entry = pf.panoptic_to_coco(ids, segments, png, 0, self.id_map)
            categories = [{"id": self.id_map.get(i, i), "name": n} for i, n in enumerate(self.names)]
            js = os.path.join(out_dir, f"{stem}_panoptic.json")
            pf.write_json({"annotations": [entry], "categories": categories}, js)
            return [png, js]
        if task == "semantic":
            png = os.path.join(out_dir, f"{stem}_semantic.png")
            pf.write_semantic_png(out["sem_seg"], png)
            return [png]
        js = os.path.join(out_dir, f"{stem}_instances.json")
        pf.write_json(pf.instances_to_coco_results(out["instances"], 0, self.id_map), js)
        return [js]

    # ----------------------------------------------------------------------------------------------------------

    def gradio_predict(self, image, task):
        """The page's callback: (gallery items, table rows, files, message markdown)."""
        try:
            r = self.predict(image, task)
        except Exception as e:  # never a traceback in the page
            r = AppResult(message=f"Segmentation failed: {type(e).__name__}: {e}", ok=False)
        message = r.message if r.ok else f"**Error:** {r.message}"
        return r.overlays, r.rows or None, r.files or None, message

    def build(self):
        """The Gradio Blocks page (element ids: upload, task, run, message, overlay, segments, files)."""
        import gradio as gr

        with gr.Blocks(title="OneFormer", analytics_enabled=False) as page:
            gr.Markdown("# OneFormer\nOne model for panoptic, semantic and instance segmentation: upload an image "
                        "or pick a sample, choose the task, press **Segment**.")
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
                    task = gr.Radio(list(TASK_CHOICES), value="panoptic", label="Task", elem_id="task")
                    run = gr.Button("Segment", variant="primary", elem_id="run")
                    if SAMPLES:
                        gr.Examples([[p] for p in SAMPLES], inputs=[upload], label="Samples")
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="message")
                    overlay = gr.Gallery(label="Overlay", elem_id="overlay", columns=3, height=420,
                                         object_fit="contain")
                    segments = gr.Dataframe(headers=TABLE_HEADERS, label="Segments", elem_id="segments",
                                            interactive=False)
                    files = gr.File(label="Prediction files", file_count="multiple", elem_id="files",
                                    interactive=False)
            run.click(self.gradio_predict, [upload, task], [overlay, segments, files, message])
        return page


def build_predictor(config_file: Optional[str], weights: Optional[str], device: Optional[str], opts: Sequence[str],
                    sliding_window: bool = False, confidence_threshold: Optional[float] = None,
                    compile: bool = False) -> OneFormerPredictor:
    """The predictor demo/demo.py would build: --weights, else MODEL.WEIGHTS in opts, else the bundled checkpoint for
    the bundled config, else the model zoo's. ``compile``: torch.compile (the predictor's ``compile``)."""
    config_file = config_file or DEFAULT_CONFIG
    check_overrides(opts, where="--opts", fix="write it before --opts")
    given = [v for k, v in zip(opts[0::2], opts[1::2]) if k == "MODEL.WEIGHTS"]
    if not weights:
        if given:
            weights = given[-1]
        elif os.path.abspath(config_file) == DEFAULT_CONFIG:
            weights = DEFAULT_WEIGHTS
        else:
            weights = model_zoo.default_weights(config_file)
            if weights is None:
                raise ValueError(f"no checkpoint known for {config_file}: pass --weights PATH_OR_URL")
    opts = [o for k, v in zip(opts[0::2], opts[1::2]) if k != "MODEL.WEIGHTS" for o in (k, v)]
    return OneFormerPredictor.from_config_file(config_file, weights=weights, opts=opts, device=device,
                                               confidence_threshold=confidence_threshold, input_format="RGB",
                                               sliding_window=True if sliding_window else None, compile=compile)


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default=None, metavar="FILE",
                        help="default: configs/synthetic/oneformer_synthetic.yaml (with the bundled checkpoint)")
    parser.add_argument("--weights", help="checkpoint path or URL (default: see above)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--confidence-threshold", type=float, default=None)
    parser.add_argument("--sliding-window", action="store_true", help="run large images by overlapping windows")
    parser.add_argument("--max-pixels", type=int, default=16_000_000, help="refuse larger uploads")
    parser.add_argument("--compile", action="store_true",
                        help="run the network through torch.compile (MODEL.COMPILE): the first image of each size "
                             "compiles (a line on the console when it starts and ends), the others reuse the graph")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--output-dir", default=None, help="where prediction files go (default: a temporary folder)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides")
    return parser


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        import gradio as gr
    except ImportError:
        print("error: the web app needs Gradio: pip install .[app]", file=sys.stderr)
        return 2
    try:
        predictor = build_predictor(args.config_file, args.weights, args.device, args.opts, args.sliding_window,
                                    args.confidence_threshold, args.compile)
    except (ConfigError, UnsafeCheckpointError, CheckpointReadError, DeviceError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = SegmentationApp(predictor, args.output_dir, args.max_pixels)
    # system fonts: the default theme's web fonts would be fetched from the internet
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    app.build().launch(server_name=args.host, server_port=args.port, theme=theme, ssr_mode=False,
                       allowed_paths=[app.output_dir, os.path.dirname(SAMPLES[0])] if SAMPLES else [app.output_dir])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Drawing OneFormer outputs on images with Detectron2's Visualizer.

Results of images above ``DRAW_MAX_PIXELS`` are drawn on a downscaled copy (labels by nearest neighbour): the
Visualizer keeps several full-size float copies of what it draws, which for a 100-megapixel image alone would need
gigabytes; the prediction files keep the full resolution.
"""
import math

import cv2
import numpy as np
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import BitMasks
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["draw", "summarize", "display_metadata", "DRAW_MAX_PIXELS"]

DRAW_MAX_PIXELS = 4_000_000


def display_metadata(metadata) -> Metadata:
    """Metadata for Detectron2's Visualizer in OneFormer's single class space.

    OneFormer numbers all classes (things and stuff) contiguously, and its instances and panoptic thing segments
    carry those ids; Detectron2's Visualizer looks thing ids up in ``thing_classes``. So both lists are all classes.
    """
    names = list(metadata.get("stuff_classes", None) or metadata.get("thing_classes", None) or [])
    colors = metadata.get("stuff_colors", None)
    fields = {"thing_classes": names, "stuff_classes": names}
    if colors is not None and len(colors) == len(names):
        fields.update(thing_colors=[tuple(c) for c in colors], stuff_colors=[tuple(c) for c in colors])
    return Metadata(name=f"{getattr(metadata, 'name', 'oneformer')}_display", **fields)


def _shrink(labels: torch.Tensor, size) -> torch.Tensor:
    """(..., H, W) labels or masks brought to ``size`` by nearest neighbour: rows and columns picked by index, so
    nothing of the full size is copied."""
    H, W = labels.shape[-2:]
    rows = (torch.arange(size[0]) * H // size[0]).to(labels.device)
    cols = (torch.arange(size[1]) * W // size[1]).to(labels.device)
    return labels.index_select(-2, rows).index_select(-1, cols)


def draw(image_rgb: np.ndarray, result: dict, task: str, metadata, max_pixels: int = DRAW_MAX_PIXELS) -> np.ndarray:
    """The ``task`` output of ``result`` drawn over an H×W×3 RGB uint8 image; returns an RGB uint8 image, of the
    image's size, or downscaled to at most ``max_pixels`` (see the module docstring)."""
    h, w = image_rgb.shape[:2]
    size = None
    if h * w > max_pixels:
        scale = math.sqrt(max_pixels / (h * w))
        size = (max(1, int(h * scale)), max(1, int(w * scale)))
        image_rgb = cv2.resize(image_rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    vis = Visualizer(image_rgb, display_metadata(metadata), instance_mode=ColorMode.IMAGE)
    if task == "panoptic":
        ids, segments = result["panoptic_seg"]
        ids = ids.to("cpu")
        out = vis.draw_panoptic_seg(ids if size is None else _shrink(ids, size), segments)
    elif task == "semantic":
        labels = result["sem_seg"].argmax(0).to("cpu")
        out = vis.draw_sem_seg(labels if size is None else _shrink(labels, size))
    elif task == "instance":
        inst = result["instances"].to("cpu")
        if size is not None:
            from detectron2.structures import Instances

            small = Instances(size, **{k: v for k, v in inst.get_fields().items() if k not in ("pred_masks",
                                                                                             "pred_boxes")})
            small.pred_masks = _shrink(inst.pred_masks, size)
            inst = small
        if len(inst):
            # the model predicts masks only; boxes around them make the labels readable
            inst.pred_boxes = BitMasks(inst.pred_masks > 0.5).get_bounding_boxes()
        out = vis.draw_instance_predictions(inst)
    else:
        raise ValueError(f"unknown task {task!r}")
    return out.get_image()


def _count(n: int, word: str, plural: str = "") -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def summarize(result: dict, task: str, metadata) -> str:
    """A few words on a result, e.g. "panoptic: 5 segments (3 things, 2 stuff)"."""
    if task == "panoptic":
        _, segments = result["panoptic_seg"]
        things = sum(1 for s in segments if s["isthing"])
        return (f"panoptic: {_count(len(segments), 'segment')} "
                f"({_count(things, 'thing')}, {len(segments) - things} stuff)")
    if task == "semantic":
        labels = result["sem_seg"].argmax(0)
        classes = torch.unique(labels).tolist()
        names = getattr(metadata, "stuff_classes", None) or []
        shown = ", ".join(names[c] if c < len(names) else str(c) for c in classes[:4])
        return f"semantic: {_count(len(classes), 'class', 'classes')} ({shown}{', ...' if len(classes) > 4 else ''})"
    inst = result["instances"]
    best = f" (best score {inst.scores.max().item():.2f})" if len(inst) else ""
    return f"instance: {_count(len(inst), 'instance')}{best}"

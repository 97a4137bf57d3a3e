"""Sliding-window inference: window layout and the merging of per-window queries into whole-image queries.

A large image is covered by overlapping windows (``window_boxes``); each window runs through the model on its own,
so peak memory follows the window, not the image. The results are put together with the same rules as whole-image
inference (``oneformer/modeling/inference.py``):

- semantic: each window's per-pixel class scores, averaged where windows overlap (done by the meta-architecture);
- panoptic and instance: each window's candidate queries (``WindowQueries``) are merged across windows
  (``merge_window_queries``): two queries of overlapping windows that predict the same class and whose masks agree
  inside the overlap (IoU ≥ ``merge_iou``) describe the same object and become one query, whose class probabilities
  are the mean of its members' and whose mask logits are their mean where they cover the pixel. The merged queries then
  go through the unchanged panoptic / instance rules, so one object crossing a window border is one segment.

Merged masks are kept sparse (each on the union of its windows, at the 1/4 mask resolution) and brought to the output
resolution only by ``MergedQueries.resizer``, a few queries at a time, as the post-processing asks for them.
"""
import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch.nn import functional as F

__all__ = ["SlidingWindow", "WindowQueries", "MergedQueries", "window_boxes", "merge_window_queries", "NEG_LOGIT"]

# mask logit of a query outside the windows it was seen in (sigmoid ≈ 2e-9): "not this query's pixel"
NEG_LOGIT = -20.0
# masks come at 1/4 of the window's resolution: window corners and sizes are multiples of it
MASK_STRIDE = 4


@dataclass(frozen=True)
class SlidingWindow:
    """Window settings: ``size`` and ``stride`` (h, w) in pixels, multiples of 4, stride ≤ size; ``merge_iou``: the
    mask IoU inside the overlap above which two same-class queries of overlapping windows are one object."""

    size: Tuple[int, int]
    stride: Tuple[int, int]
    merge_iou: float = 0.5

    def __post_init__(self):
        for name, value in (("SIZE", self.size), ("STRIDE", self.stride)):
            if len(value) != 2 or any(int(v) != v or v <= 0 or v % MASK_STRIDE for v in value):
                raise ValueError(f"MODEL.TEST.SLIDING_WINDOW.{name} must be two positive multiples of {MASK_STRIDE} "
                                 f"(h, w), got {tuple(value)}")
        if any(t > s for t, s in zip(self.stride, self.size)):
            raise ValueError(f"MODEL.TEST.SLIDING_WINDOW.STRIDE {tuple(self.stride)} must not exceed SIZE "
                             f"{tuple(self.size)} (windows would leave gaps)")
        if not 0.0 < self.merge_iou <= 1.0:
            raise ValueError(f"MODEL.TEST.SLIDING_WINDOW.MERGE_IOU must be in (0, 1], got {self.merge_iou}")


def _starts(length: int, size: int, stride: int) -> List[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def window_boxes(height: int, width: int, window: SlidingWindow) -> List[Tuple[int, int, int, int]]:
    """Windows covering a (height, width) image: (y0, x0, h, w) in pixels, row-major.

    The image is thought padded to multiples of 4 (the mask resolution), so every corner and size is a multiple of 4;
    a window is the image's size where the image is smaller than ``window.size``. The last window of a row or column
    ends at the (padded) border, as in mmsegmentation's slide inference.
    """
    h4, w4 = (math.ceil(v / MASK_STRIDE) * MASK_STRIDE for v in (height, width))
    wh, ww = min(window.size[0], h4), min(window.size[1], w4)
    return [(y, x, wh, ww) for y in _starts(h4, wh, window.stride[0]) for x in _starts(w4, ww, window.stride[1])]


@dataclass
class WindowQueries:
    """One window's candidate queries.

    box: (y0, x0, h, w) on the mask grid (pixels / 4); logits: (n, K+1) class logits; masks: (n, h, w) mask logits on
    the window's grid; labels: (n,) the class each query is matched on; embeddings: (n, C) or None.
    """

    box: Tuple[int, int, int, int]
    logits: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    embeddings: Optional[torch.Tensor] = None


@dataclass
class MergedQueries:
    """Whole-image queries: logits (M, K+1); each query's mask logits ``masks[i]`` on its grid box ``boxes[i]``
    (y0, x0, y1, x1) (NEG_LOGIT elsewhere); ``members[i]``: (window index, query index in that window's candidates)
    pairs; embeddings (M, C) (the members' mean) or None."""

    logits: torch.Tensor
    boxes: List[Tuple[int, int, int, int]]
    masks: List[torch.Tensor]
    members: List[List[Tuple[int, int]]]
    embeddings: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.logits.shape[0]

    def ids(self) -> torch.Tensor:
        """(M,) query ids: what the post-processing rules take as "mask_pred" together with ``resizer``."""
        return torch.arange(len(self), device=self.logits.device)

    def resizer(self, image_size: Tuple[int, int], output_size: Tuple[int, int]) -> Callable[[torch.Tensor],
                                                                                          torch.Tensor]:
        """A ``resize`` for ``panoptic_inference`` / ``instance_inference``: query ids (n,) → mask logits (n, H, W).

        As whole-image inference does, the grid is bilinearly upsampled ×4, cropped to ``image_size`` (the model's
        input size) and resized to ``output_size``. When the two agree, each query is upsampled on its box plus one
        grid cell each side (all that bilinear ×4 reads or writes beyond the box), which gives the values of
        upsampling the whole grid.
        """
        height, width = image_size
        grid_h, grid_w = math.ceil(height / MASK_STRIDE), math.ceil(width / MASK_STRIDE)
        same = tuple(output_size) == (height, width)
        device = self.logits.device

        def resize(ids: torch.Tensor) -> torch.Tensor:
            ids = ids.tolist()
            if not same:
                grid = torch.full((len(ids), grid_h, grid_w), NEG_LOGIT, device=device)
                for i, q in enumerate(ids):
                    y0, x0, y1, x1 = self.boxes[q]
                    grid[i, y0:y1, x0:x1] = self.masks[q]
                if not ids:
                    return grid.new_zeros((0,) + tuple(output_size))
                up = F.interpolate(grid[None], scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
                up = up[:, :, :height, :width]
                return F.interpolate(up, size=tuple(output_size), mode="bilinear", align_corners=False)[0]
            out = torch.full((len(ids), height, width), NEG_LOGIT, device=device)
            for i, q in enumerate(ids):
                y0, x0, y1, x1 = self.boxes[q]
                my0, mx0, my1, mx1 = max(y0 - 1, 0), max(x0 - 1, 0), min(y1 + 1, grid_h), min(x1 + 1, grid_w)
                sub = torch.full((my1 - my0, mx1 - mx0), NEG_LOGIT, device=device)
                sub[y0 - my0:y1 - my0, x0 - mx0:x1 - mx0] = self.masks[q]
                up = F.interpolate(sub[None, None], scale_factor=MASK_STRIDE, mode="bilinear",
                                   align_corners=False)[0, 0]
                # the margin too: bilinear spreads the box's values 2 pixels beyond it
                py0, px0 = my0 * MASK_STRIDE, mx0 * MASK_STRIDE
                py1, px1 = min(my1 * MASK_STRIDE, height), min(mx1 * MASK_STRIDE, width)
                out[i, py0:py1, px0:px1] = up[:py1 - py0, :px1 - px0]
            return out

        return resize


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the earlier query is the root, so groups are ordered by their first member
            self.parent[max(ra, rb)] = min(ra, rb)


def _overlap(a: Sequence[int], b: Sequence[int]):
    """Intersection of two (y0, x0, h, w) boxes as (y0, x0, y1, x1), or None."""
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (y0, x0, y1, x1) if y0 < y1 and x0 < x1 else None


def merge_window_queries(windows: List[WindowQueries], merge_iou: float) -> MergedQueries:
    """Merge the candidates of all windows into whole-image queries.

    Two candidates of overlapping windows are one object when they have the same label, both masks (logit > 0) cover
    some of the overlap, and the masks' IoU inside the overlap is at least ``merge_iou``; the relation is closed
    transitively (an object spanning several windows is one query). A lone candidate keeps its logits unchanged (so an
    image that is one window gives the whole-image result); a merged one gets log of its members' mean class
    probabilities and, per grid cell, the mean of the logits of the members whose window covers the cell.

    Returns:
        MergedQueries ordered by each query's first member (window order, then candidate order).
    """
    offsets, total = [], 0
    for w in windows:
        offsets.append(total)
        total += w.logits.shape[0]
    uf = _UnionFind(total)
    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            b = windows[j]
            if not (a.logits.shape[0] and b.logits.shape[0]):
                continue
            ov = _overlap(a.box, b.box)
            if ov is None:
                continue
            y0, x0, y1, x1 = ov
            ma = a.masks[:, y0 - a.box[0]:y1 - a.box[0], x0 - a.box[1]:x1 - a.box[1]].flatten(1) > 0
            mb = b.masks[:, y0 - b.box[0]:y1 - b.box[0], x0 - b.box[1]:x1 - b.box[1]].flatten(1) > 0
            ma, mb = ma.float(), mb.float()
            inter = ma @ mb.T
            union = ma.sum(1)[:, None] + mb.sum(1)[None, :] - inter
            same = (a.labels[:, None] == b.labels[None, :]) & (inter > 0)
            match = same & (inter >= merge_iou * union)
            for qa, qb in match.nonzero().tolist():
                uf.union(offsets[i] + qa, offsets[j] + qb)

    groups: dict = {}
    for i, w in enumerate(windows):
        for q in range(w.logits.shape[0]):
            groups.setdefault(uf.find(offsets[i] + q), []).append((i, q))
    members = [groups[root] for root in sorted(groups)]
    logits, boxes, masks, embeddings = [], [], [], []
    with_emb = bool(windows) and windows[0].embeddings is not None
    for group in members:
        if len(group) == 1:
            i, q = group[0]
            w = windows[i]
            y0, x0, h, wd = w.box
            logits.append(w.logits[q])
            boxes.append((y0, x0, y0 + h, x0 + wd))
            masks.append(w.masks[q])
            if with_emb:
                embeddings.append(w.embeddings[q])
            continue
        y0 = min(windows[i].box[0] for i, _ in group)
        x0 = min(windows[i].box[1] for i, _ in group)
        y1 = max(windows[i].box[0] + windows[i].box[2] for i, _ in group)
        x1 = max(windows[i].box[1] + windows[i].box[3] for i, _ in group)
        total_logit = windows[group[0][0]].masks.new_zeros((y1 - y0, x1 - x0))
        count = torch.zeros_like(total_logit)
        for i, q in group:
            by, bx, bh, bw = windows[i].box
            total_logit[by - y0:by - y0 + bh, bx - x0:bx - x0 + bw] += windows[i].masks[q]
            count[by - y0:by - y0 + bh, bx - x0:bx - x0 + bw] += 1
        masks.append(torch.where(count > 0, total_logit / count.clamp_min(1), NEG_LOGIT))
        boxes.append((y0, x0, y1, x1))
        probs = torch.stack([F.softmax(windows[i].logits[q], -1) for i, q in group]).mean(0)
        logits.append(probs.clamp_min(1e-30).log())
        if with_emb:
            embeddings.append(torch.stack([windows[i].embeddings[q] for i, q in group]).mean(0))
    if logits:
        logit_t = torch.stack(logits)
    else:  # nothing anywhere: an empty (0, K+1) set keeps the post-processing's shapes
        ref = windows[0].logits if windows else torch.zeros((0, 1))
        logit_t = ref.new_zeros((0, ref.shape[-1]))
    emb_t = None
    if with_emb:
        emb_t = torch.stack(embeddings) if embeddings else windows[0].embeddings.new_zeros(
            (0, windows[0].embeddings.shape[-1]))
    return MergedQueries(logit_t, boxes, masks, members, emb_t)


def _pair(value, name: str) -> Tuple[int, int]:
    value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2:
        raise ValueError(f"MODEL.TEST.SLIDING_WINDOW.{name} must be [size] or [h, w], got {list(value)}")
    return int(value[0]), int(value[1])


def training_window_size(cfg) -> Tuple[int, int]:
    """The resolution the model was trained at: INPUT.CROP.SIZE for an absolute crop, INPUT.IMAGE_SIZE for COCO's
    large-scale jitter, else INPUT.MIN_SIZE_TEST squared; rounded down to a multiple of 32 (the backbone's)."""
    crop = cfg.INPUT.CROP
    if crop.ENABLED and crop.TYPE == "absolute":
        size = tuple(crop.SIZE)
    elif "lsj" in cfg.INPUT.DATASET_MAPPER_NAME:
        size = (cfg.INPUT.IMAGE_SIZE,) * 2
    else:
        size = (cfg.INPUT.MIN_SIZE_TEST,) * 2
    return tuple(max(32, int(s) // 32 * 32) for s in size)


def sliding_window_from_cfg(cfg) -> SlidingWindow:
    """MODEL.TEST.SLIDING_WINDOW: SIZE (default: the training resolution), STRIDE (default: 2/3 of SIZE, as the
    original's TEST.AUG 640/426, rounded down to a multiple of 4), MERGE_IOU."""
    sw = cfg.MODEL.TEST.SLIDING_WINDOW
    size = _pair(sw.SIZE, "SIZE") if len(sw.SIZE) else training_window_size(cfg)
    if len(sw.STRIDE):
        stride = _pair(sw.STRIDE, "STRIDE")
    else:
        stride = tuple(max(MASK_STRIDE, s * 2 // 3 // MASK_STRIDE * MASK_STRIDE) for s in size)
    return SlidingWindow(size=size, stride=stride, merge_iou=float(sw.MERGE_IOU))

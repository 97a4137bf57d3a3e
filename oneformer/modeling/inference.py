"""Post-processing of OneFormer's mask classification into semantic, panoptic and instance results.

Rules and thresholds are the original release's (spec §7); panoptic inference can instead follow HuggingFace
transformers' rule (``PANOPTIC_RULES``). Mask logits are passed as a ``resize`` callable so that only the queries a
task keeps are brought to the output resolution: resizing is per query, so resizing a subset gives exactly the values
the original gets by resizing all queries and then selecting. A ``resize`` that is exactly one bilinear
``F.interpolate(masks[None], size=(H, W), mode="bilinear", align_corners=False)[0]`` may say so with an attribute
``bilinear_size = (H, W)``: panoptic inference on the CPU then resizes inside the owner search kernel
(:func:`~oneformer.ops.mask_owners.update_resized_mask_owners`) instead of materializing resized masks.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import BitMasks, Boxes, Instances
from torch.nn import functional as F

from ..ops.mask_owners import mask_owners_available, update_mask_owners, update_resized_mask_owners
from ..utils.tracing import is_tracing

__all__ = ["PANOPTIC_RULES", "InferenceThresholds", "semantic_inference", "semantic_probabilities", "panoptic_inference",
           "instance_inference"]

# "original": the released OneFormer's (= Mask2Former's) rule; "transformers": the rule of transformers'
# OneFormerImageProcessor.post_process_panoptic_segmentation, for outputs that match a transformers pipeline
PANOPTIC_RULES = ("original", "transformers")

Resize = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceThresholds:
    """The thresholds of inference for people rather than benchmarks, shared by ``OneFormerPredictor`` (demo.py,
    the web app) and the export runtime (``ExportedOneFormer``), so that both keep the same segments and instances.

    object_mask: panoptic queries and instances need a class probability above it (MODEL.TEST.OBJECT_MASK_THRESHOLD,
        raised to ``confidence`` when that is higher; the original's demo mode applies it to instances too).
    overlap: MODEL.TEST.OVERLAP_THRESHOLD of the panoptic rule.
    confidence: optional; instances scored below it (class probability × mean mask probability) are dropped.
    """

    object_mask: float
    overlap: float
    confidence: Optional[float] = None

    @classmethod
    def create(cls, object_mask_threshold: float, overlap_threshold: float,
               confidence_threshold: Optional[float] = None) -> "InferenceThresholds":
        """From the config's MODEL.TEST thresholds and the user's confidence threshold (ValueError outside [0, 1])."""
        if confidence_threshold is None:
            return cls(float(object_mask_threshold), float(overlap_threshold))
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {confidence_threshold}")
        return cls(max(float(object_mask_threshold), float(confidence_threshold)), float(overlap_threshold),
                   float(confidence_threshold))

    def filter(self, result: Dict) -> Dict:
        """Drop the instances of a per-image result dict scored below ``confidence`` (in place; returns it)."""
        if self.confidence is not None and "instances" in result:
            inst = result["instances"]
            result["instances"] = inst[inst.scores >= self.confidence]
        return result


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores.

    Args:
        mask_cls: (N, K+1) class logits; mask_pred: (N, H, W) mask logits.
    Returns:
        (K, H, W): sum over queries of softmax class probability (no-object dropped) × sigmoid mask.
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def semantic_probabilities(sem_seg: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-pixel class probabilities from semantic scores.

    Args:
        sem_seg: (K, H, W) scores of ``semantic_inference`` (sums of class probability × mask probability; they
            need not sum to 1, since the no-object probability and uncovered pixels are left out).
    Returns:
        (K, H, W) scores divided by their per-pixel sum: each pixel's values sum to 1, and their argmax is the
        semantic segmentation's.
    """
    return sem_seg / sem_seg.sum(0, keepdim=True).clamp_min(eps)


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    resize: Resize,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
    rule: str = "original",
    return_queries: bool = False,
):
    """Panoptic segmentation.

    Both rules keep the queries whose best class is not no-object and whose probability exceeds
    ``object_mask_threshold``, give each pixel to the kept query with the largest probability × mask probability
    (the first one on ties), drop a query whose share of pixels is too small against its own mask area, and merge
    segments of the same stuff class. They differ in the details:

    - ``"original"`` (the release's rule, Mask2Former's): mask probability = sigmoid of the resized logits; a query's
      segment is its pixels where its own sigmoid ≥ 0.5 (other pixels stay void); dropped when
      pixels / (sigmoid ≥ 0.5 area) < ``overlap_threshold``.
    - ``"transformers"`` (transformers' ``post_process_panoptic_segmentation``): mask probability = the resized
      sigmoid; a query's segment is all its pixels; its own area is measured on score-weighted probabilities
      (score × probability ≥ 0.5); kept only when pixels / that area > ``overlap_threshold``. Segment ids are
      numbered 1, 2, ... in query order with merged stuff reusing its id (transformers instead continues numbering
      from the reused id, which can give two segments one id).

    Args:
        mask_cls: (N, K+1) class logits; mask_pred: (N, h, w) mask logits at any resolution.
        resize: maps (n, h, w) masks to (n, H, W) at the output resolution (bilinear: it resizes logits or
            probabilities alike).
        thing_ids: contiguous ids of thing classes.
        rule: one of ``PANOPTIC_RULES``.
        return_queries: also return, per segment, the indices (into the N queries) of the queries it is made of
            (several for a merged stuff segment), and give each segments_info entry a "score": the highest class
            probability among them.
    Returns:
        panoptic_seg (H, W) int32 with segment ids from 1 (0 = void), and segments_info
        [{"id", "isthing", "category_id"}] in Detectron2's format; with ``return_queries`` a third item, a list
        aligned with segments_info of lists of query indices.
    """
    if rule not in PANOPTIC_RULES:
        raise ValueError(f"panoptic rule must be one of {PANOPTIC_RULES}, got {rule!r}")
    original = rule == "original"
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    idx = keep.nonzero().squeeze(1)
    n = idx.numel()
    if n == 0:
        h, w = resize(mask_pred[:0]).shape[-2:]
        empty = torch.zeros((h, w), dtype=torch.int32, device=mask_pred.device)
        return (empty, [], []) if return_queries else (empty, [])
    cur_scores = scores[idx]
    cur_classes = labels[idx].tolist()
    owner, own_prob, original_area = _owners(mask_pred[idx], cur_scores, resize, original)
    mask_area = torch.bincount(owner.flatten(), minlength=n).tolist()
    if original:
        own_fg = own_prob >= 0.5  # the owner's own mask covers the pixel
        final_area = torch.bincount(owner[own_fg], minlength=n).tolist()
    else:
        final_area = mask_area

    things = set(int(t) for t in thing_ids)
    segment_of = [0] * n
    segments_info: List[Dict] = []
    stuff_segment: Dict[int, int] = {}
    for k in range(n):
        if not (mask_area[k] > 0 and original_area[k] > 0 and final_area[k] > 0):
            continue
        ratio = mask_area[k] / original_area[k]
        if (ratio < overlap_threshold) if original else not (ratio > overlap_threshold):
            continue
        cls = int(cur_classes[k])
        isthing = cls in things
        if not isthing and cls in stuff_segment:
            segment_of[k] = stuff_segment[cls]
            continue
        segment_id = len(segments_info) + 1
        if not isthing:
            stuff_segment[cls] = segment_id
        segment_of[k] = segment_id
        segments_info.append({"id": segment_id, "isthing": bool(isthing), "category_id": cls})
    lut = torch.tensor(segment_of, dtype=torch.int32, device=owner.device)
    panoptic_seg = torch.where(own_fg, lut[owner], 0) if original else lut[owner]
    if not return_queries:
        return panoptic_seg, segments_info
    kept, kept_scores = idx.tolist(), cur_scores.tolist()
    queries: List[List[int]] = [[] for _ in segments_info]
    for k, segment_id in enumerate(segment_of):
        if segment_id:
            queries[segment_id - 1].append(kept[k])
            info = segments_info[segment_id - 1]
            info["score"] = max(info.get("score", 0.0), kept_scores[k])
    return panoptic_seg, segments_info, queries


def _owners(mask_pred: torch.Tensor, scores: torch.Tensor, resize: Resize, original: bool = True,
            chunk_bytes: int = 8 << 20):
    """For each output pixel, the query with the largest score × mask probability (the first one on ties).

    Queries go through ``resize`` a few at a time (about ``chunk_bytes`` of full-resolution masks), keeping a running
    maximum, so the n full-resolution masks never exist at once; the result equals an argmax over all of them. A
    ``resize`` with ``bilinear_size`` (see the module docstring) is instead applied inside the CPU kernel.

    Args:
        mask_pred: (n, h, w) mask logits, n >= 1; scores: (n,) class probabilities.
        original: the original rule (sigmoid of resized logits; own area: sigmoid ≥ 0.5), else transformers' (resized
            sigmoid; own area: score × probability ≥ 0.5).
    Returns:
        owner (H, W) int64, the owner's mask probability (H, W) (None for transformers' rule, which does not use
        it), and each query's own area as a list.
    """
    n = mask_pred.shape[0]
    size = getattr(resize, "bilinear_size", None)
    if (size is not None and mask_owners_available(mask_pred) and scores.dtype == torch.float32
            and not is_tracing()):
        # one pass of the CPU kernel that resizes as it goes (the same search as the loop below, to float rounding
        # of the resized values)
        best = mask_pred.new_full(tuple(size), float("-inf"))
        owner = torch.zeros(tuple(size), dtype=torch.int32, device=mask_pred.device)
        own_prob = mask_pred.new_zeros(tuple(size)) if original else None
        area = update_resized_mask_owners(mask_pred if original else mask_pred.sigmoid(), scores, 0, not original,
                                          original, best, owner, own_prob)
        return owner.long(), own_prob, area.tolist()
    best = owner = own_prob = None
    original_area: List[int] = []
    start, step = 0, 1  # the first query alone tells the output resolution, which sizes the chunks
    while start < n:
        chunk = mask_pred[start : start + step]
        probs = resize(chunk).sigmoid_() if original else resize(chunk.sigmoid())  # (c, H, W)
        c = probs.shape[0]
        step = max(1, chunk_bytes // max(1, probs[0].numel() * probs.element_size()))
        chunk_scores = scores[start : start + c]
        if mask_owners_available(probs) and chunk_scores.dtype == torch.float32 and not is_tracing():
            # one fused pass over the chunk (the CPU kernel), with the results of the ops below (which traces keep)
            if best is None:
                best = probs.new_full(probs.shape[1:], float("-inf"))
                owner = torch.zeros(probs.shape[1:], dtype=torch.int32, device=probs.device)
                own_prob = probs.new_zeros(probs.shape[1:]) if original else None
            original_area += update_mask_owners(probs, chunk_scores, start, not original, best, owner,
                                                own_prob).tolist()
            start += c
            continue
        weighted = probs * chunk_scores.view(-1, 1, 1)
        # int32 accumulation reads the bool mask as is (an int64 sum would first convert the whole chunk)
        original_area += ((probs if original else weighted) >= 0.5).flatten(1).sum(1, dtype=torch.int32).tolist()
        value, arg = weighted.max(0)
        prob = probs.gather(0, arg[None])[0] if original else None
        if best is None:
            best, owner, own_prob = value, arg, prob
        else:  # strictly greater: an earlier query keeps a tie, as argmax does
            better = value > best
            best = torch.where(better, value, best)
            owner = torch.where(better, arg + start, owner)
            if original:
                own_prob = torch.where(better, prob, own_prob)
        start += c
    return owner.long(), own_prob, original_area


def instance_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    resize: Resize,
    image_size: Tuple[int, int],
    topk: int,
    thing_ids: Optional[Sequence[int]],
    object_mask_threshold: Optional[float] = None,
    label_remap: Optional[Sequence[int]] = None,
    detection_on: bool = False,
    return_query_ids: bool = False,
) -> Instances:
    """Instance segmentation: the top-k (query, class) pairs by class probability.

    Args:
        mask_cls: (N, K+1) class logits; mask_pred: (N, h, w) mask logits; resize as in panoptic_inference.
        image_size: (H, W) of the output.
        topk: TEST.DETECTIONS_PER_IMAGE (capped at N·K).
        thing_ids: keep only these classes (the original does when PANOPTIC_ON), or None to keep all.
        object_mask_threshold: keep only scores above it (the original does in demo mode), or None.
        label_remap: optional map from contiguous class id to the output label (ADE20K's 100-class instance space).
        detection_on: boxes from the masks instead of zeros.
        return_query_ids: also set ``pred_query_ids`` (M,) int64, each instance's query index.
    Returns:
        Instances with pred_masks (M, H, W) float {0, 1}, pred_boxes, scores (class prob × mean mask prob inside the
        mask), pred_classes. A query may appear with several classes.
    """
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes, device=mask_cls.device).repeat(num_queries)
    k = min(topk, scores.numel())
    scores_per_image, topk_indices = scores.flatten(0, 1).topk(k, sorted=False)
    labels_per_image = labels[topk_indices]
    query_index = topk_indices // num_classes
    keep = torch.ones_like(scores_per_image, dtype=torch.bool)
    if object_mask_threshold is not None:
        keep &= scores_per_image > object_mask_threshold
    if thing_ids is not None:
        keep &= torch.isin(labels_per_image, torch.as_tensor(list(thing_ids), device=labels.device, dtype=labels.dtype))
    scores_per_image, labels_per_image, query_index = scores_per_image[keep], labels_per_image[keep], query_index[keep]
    if label_remap is not None:
        lut = torch.full((num_classes,), -1, dtype=labels.dtype, device=labels.device)
        lut[torch.as_tensor(list(label_remap), dtype=torch.long, device=labels.device)] = torch.arange(
            len(label_remap), device=labels.device)
        labels_per_image = lut[labels_per_image]
    unique_queries, inverse = torch.unique(query_index, return_inverse=True)
    masks = resize(mask_pred[unique_queries])[inverse]
    result = Instances(image_size)
    result.pred_masks = (masks > 0).float()
    if detection_on:
        result.pred_boxes = BitMasks(masks > 0).get_bounding_boxes()
    else:
        result.pred_boxes = Boxes(torch.zeros(masks.shape[0], 4, device=masks.device))
    flat = result.pred_masks.flatten(1)
    mask_scores = (masks.sigmoid().flatten(1) * flat).sum(1) / (flat.sum(1) + 1e-6)
    result.scores = scores_per_image * mask_scores
    result.pred_classes = labels_per_image
    if return_query_ids:
        result.pred_query_ids = query_index
    return result

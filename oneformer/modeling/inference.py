"""Post-processing of OneFormer's mask classification into semantic, panoptic and instance results.

Rules and thresholds are the original release's (spec §7). Mask logits are passed as a ``resize`` callable so that
only the queries a task keeps are brought to the output resolution: resizing is per query, so resizing a subset
gives exactly the values the original gets by resizing all queries and then selecting.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import BitMasks, Boxes, Instances
from torch.nn import functional as F

__all__ = ["semantic_inference", "panoptic_inference", "instance_inference"]

Resize = Callable[[torch.Tensor], torch.Tensor]


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores.

    Args:
        mask_cls: (N, K+1) class logits; mask_pred: (N, H, W) mask logits.
    Returns:
        (K, H, W): sum over queries of softmax class probability (no-object dropped) × sigmoid mask.
    """
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def panoptic_inference(
    mask_cls: torch.Tensor,
    mask_pred: torch.Tensor,
    resize: Resize,
    thing_ids: Sequence[int],
    object_mask_threshold: float,
    overlap_threshold: float,
) -> Tuple[torch.Tensor, List[Dict]]:
    """Panoptic segmentation (the Mask2Former rule).

    Keeps queries whose best class is not no-object and whose probability exceeds ``object_mask_threshold``;
    each pixel goes to the kept query with the largest probability × sigmoid(mask); a query's segment is its pixels
    where its own sigmoid ≥ 0.5, dropped when that area / (its sigmoid ≥ 0.5 area) < ``overlap_threshold``;
    segments of the same stuff class are merged.

    Args:
        mask_cls: (N, K+1) class logits; mask_pred: (N, h, w) mask logits at any resolution.
        resize: maps (n, h, w) mask logits to (n, H, W) at the output resolution.
        thing_ids: contiguous ids of thing classes.
    Returns:
        panoptic_seg (H, W) int32 with segment ids from 1 (0 = void), and segments_info
        [{"id", "isthing", "category_id"}] in Detectron2's format.
    """
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    idx = keep.nonzero().squeeze(1)
    cur_masks = resize(mask_pred[idx]).sigmoid()
    h, w = cur_masks.shape[-2:]
    panoptic_seg = torch.zeros((h, w), dtype=torch.int32, device=cur_masks.device)
    n = idx.numel()
    if n == 0:
        return panoptic_seg, []
    cur_scores = scores[idx]
    cur_classes = labels[idx].tolist()
    owner = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)  # (H, W): the query each pixel goes to
    own_fg = cur_masks.gather(0, owner[None])[0] >= 0.5  # the owner's own mask covers the pixel
    mask_area = torch.bincount(owner.flatten(), minlength=n).tolist()
    original_area = (cur_masks >= 0.5).flatten(1).sum(1).tolist()
    final_area = torch.bincount(owner[own_fg], minlength=n).tolist()

    things = set(int(t) for t in thing_ids)
    segment_of = [0] * n
    segments_info: List[Dict] = []
    stuff_segment: Dict[int, int] = {}
    for k in range(n):
        if not (mask_area[k] > 0 and original_area[k] > 0 and final_area[k] > 0):
            continue
        if mask_area[k] / original_area[k] < overlap_threshold:
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
    panoptic_seg = torch.where(own_fg, lut[owner], panoptic_seg)
    return panoptic_seg, segments_info


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
    return result

"""Property-based tests (hypothesis) of the post-processing in oneformer/modeling/inference.py: random shapes, no
queries, degenerate masks (all zero, all one, exactly on the 0.5 boundary, huge logits) and extreme class logits.
Panoptic ids agree with segments_info (and with the original's per-query loop), instance scores lie in [0, 1],
semantic scores are bounded, nothing crashes."""
import os

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from oneformer.modeling.inference import instance_inference, panoptic_inference, semantic_inference
from tests.modeling.test_inference import loop_panoptic

FUZZ = settings(max_examples=int(os.environ.get("ONEFORMER_FUZZ_EXAMPLES", 50)), deadline=None)

MASK_KINDS = ("random", "all_zero", "all_one", "boundary", "huge", "mixed")
CLASS_KINDS = ("random", "confident", "no_object", "uniform", "huge")


@st.composite
def predictions(draw):
    """(mask_cls (N, K+1), mask_pred (N, h, w), output size (H, W), thing ids)."""
    n = draw(st.integers(0, 6))
    k = draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    out_size = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    mask_kind, class_kind = draw(st.sampled_from(MASK_KINDS)), draw(st.sampled_from(CLASS_KINDS))
    masks = torch.randn(n, h, w, generator=g) * 3
    if mask_kind == "all_zero":
        masks = torch.full((n, h, w), -50.0)
    elif mask_kind == "all_one":
        masks = torch.full((n, h, w), 50.0)
    elif mask_kind == "boundary":  # sigmoid exactly 0.5 everywhere
        masks = torch.zeros(n, h, w)
    elif mask_kind == "huge":
        masks = torch.sign(masks) * 1e4
    elif mask_kind == "mixed" and n:
        masks[0] = -50.0
        masks[-1] = 50.0
    logits = torch.randn(n, k + 1, generator=g) * 2
    if class_kind == "confident" and n:
        logits[torch.arange(n), torch.randint(0, k, (n,), generator=g)] += 20
    elif class_kind == "no_object":
        logits[:, -1] += 20
    elif class_kind == "uniform":
        logits = torch.zeros(n, k + 1)
    elif class_kind == "huge":
        logits = logits * 1e4
    thing_ids = sorted(draw(st.sets(st.integers(0, k - 1), max_size=k)))
    return logits, masks, out_size, thing_ids


def _resizer(out_size):
    def resize(masks):
        if masks.shape[0] == 0:
            return masks.new_zeros((0,) + tuple(out_size))
        return F.interpolate(masks[None], size=out_size, mode="bilinear", align_corners=False)[0]

    return resize


@FUZZ
@given(pred=predictions(), object_threshold=st.sampled_from([0.0, 0.5, 0.99]),
       overlap=st.sampled_from([0.0, 0.5, 0.8, 1.0]))
def test_panoptic_ids_agree_with_segments_info(pred, object_threshold, overlap):
    mask_cls, mask_pred, out_size, thing_ids = pred
    k = mask_cls.shape[-1] - 1
    pan, segments = panoptic_inference(mask_cls, mask_pred, _resizer(out_size), thing_ids, object_threshold, overlap)
    assert pan.dtype == torch.int32 and tuple(pan.shape) == tuple(out_size)
    ids = [s["id"] for s in segments]
    assert ids == list(range(1, len(segments) + 1))  # consecutive from 1, 0 is void
    assert set(torch.unique(pan).tolist()) - {0} == set(ids)  # every segment has pixels, every pixel a segment
    for s in segments:
        assert set(s) == {"id", "isthing", "category_id"}
        assert 0 <= s["category_id"] < k and s["isthing"] == (s["category_id"] in thing_ids)
    stuff = [s["category_id"] for s in segments if not s["isthing"]]
    assert len(stuff) == len(set(stuff))  # one segment per stuff class
    # the same result as the original's per-query loop (masks resized first)
    ref_pan, ref_segments = loop_panoptic(mask_cls, _resizer(out_size)(mask_pred), thing_ids, object_threshold,
                                          overlap)
    assert torch.equal(pan, ref_pan) and segments == ref_segments


@FUZZ
@given(pred=predictions(), topk=st.integers(1, 40), threshold=st.sampled_from([None, 0.0, 0.8]),
       things_only=st.booleans(), detection_on=st.booleans())
def test_instance_scores_in_unit_interval(pred, topk, threshold, things_only, detection_on):
    mask_cls, mask_pred, out_size, thing_ids = pred
    n, k = mask_cls.shape[0], mask_cls.shape[-1] - 1
    inst = instance_inference(mask_cls, mask_pred, _resizer(out_size), out_size, topk,
                              thing_ids if things_only else None, threshold, detection_on=detection_on)
    m = len(inst)
    assert inst.image_size == tuple(out_size) and m <= min(topk, n * k)
    assert tuple(inst.pred_masks.shape) == (m,) + tuple(out_size)
    assert set(torch.unique(inst.pred_masks).tolist()) <= {0.0, 1.0}
    assert torch.isfinite(inst.scores).all() and ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert ((inst.pred_classes >= 0) & (inst.pred_classes < k)).all()
    if things_only:
        assert set(inst.pred_classes.tolist()) <= set(thing_ids)
    boxes = inst.pred_boxes.tensor
    assert tuple(boxes.shape) == (m, 4) and torch.isfinite(boxes).all()
    if detection_on:
        assert ((boxes[:, 0] >= 0) & (boxes[:, 2] <= out_size[1]) & (boxes[:, 1] >= 0)
                & (boxes[:, 3] <= out_size[0])).all()
    empty = inst.pred_masks.flatten(1).sum(1) == 0
    assert (inst.scores[empty] == 0).all()  # an empty mask scores 0


@FUZZ
@given(pred=predictions())
def test_semantic_scores_are_bounded(pred):
    mask_cls, mask_pred, _, _ = pred
    n, k = mask_cls.shape[0], mask_cls.shape[-1] - 1
    sem = semantic_inference(mask_cls, mask_pred)
    assert tuple(sem.shape) == (k,) + tuple(mask_pred.shape[-2:])
    assert torch.isfinite(sem).all() and (sem >= 0).all()
    assert (sem.sum(0) <= n + 1e-4).all()  # per pixel: at most one unit of probability per query

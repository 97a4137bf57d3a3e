"""Post-processing: the vectorized panoptic/instance rules equal straightforward loops of the original's rules."""
import pytest
import torch
import torch.nn.functional as F

from oneformer.modeling.inference import instance_inference, panoptic_inference, semantic_inference


def identity(masks):
    return masks


def loop_panoptic(mask_cls, mask_pred, thing_ids, object_mask_threshold, overlap_threshold):
    """The original rule, written as the plain per-query loop."""
    num_classes = mask_cls.shape[-1] - 1
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    panoptic_seg = torch.zeros(mask_pred.shape[-2:], dtype=torch.int32)
    segments_info = []
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = (cur_scores.view(-1, 1, 1) * cur_masks).argmax(0)
    current_segment_id = 0
    stuff_memory = {}
    for k in range(cur_classes.shape[0]):
        pred_class = cur_classes[k].item()
        isthing = pred_class in thing_ids
        mask_area = (cur_mask_ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if pred_class in stuff_memory:
                    panoptic_seg[mask] = stuff_memory[pred_class]
                    continue
                stuff_memory[pred_class] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append({"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)})
    return panoptic_seg, segments_info


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overlap", [0.0, 0.8])
def test_panoptic_matches_loop(seed, overlap):
    g = torch.Generator().manual_seed(seed)
    n, k = 12, 6
    mask_cls = torch.randn(n, k + 1, generator=g) * 3
    # blobs so that queries overlap partially; few classes so that stuff segments merge
    mask_pred = torch.randn(n, 1, 6, 6, generator=g) * 4
    mask_pred = F.interpolate(mask_pred, size=(24, 30), mode="bilinear", align_corners=False)[:, 0]
    thing_ids = [3, 4, 5]
    ours = panoptic_inference(mask_cls, mask_pred, identity, thing_ids, 0.3, overlap)
    ref = loop_panoptic(mask_cls, mask_pred, thing_ids, 0.3, overlap)
    assert torch.equal(ours[0], ref[0])
    assert ours[1] == ref[1]


def test_panoptic_nothing_kept():
    pan, info = panoptic_inference(torch.tensor([[0.0, 5.0]]), torch.randn(1, 4, 4), identity, [], 0.5, 0.8)
    assert info == [] and pan.shape == (4, 4) and not pan.any()


def test_panoptic_resizes_only_kept_queries():
    seen = []

    def resize(masks):
        seen.append(masks.shape[0])
        return F.interpolate(masks[None], size=(8, 8), mode="bilinear", align_corners=False)[0]

    mask_cls = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 5.0, 0.0]])  # query 1 is no-object
    pan, info = panoptic_inference(mask_cls, torch.randn(3, 4, 4), resize, [1], 0.5, 0.0)
    assert sum(seen) == 2 and pan.shape == (8, 8)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 64 * 4, 1 << 30])
def test_panoptic_owners_in_chunks_equal_one_argmax(chunk_bytes):
    """Chunked running maximum == argmax over all queries at once, including the first-index rule on exact ties."""
    from oneformer.modeling.inference import _owners

    g = torch.Generator().manual_seed(3)
    mask_pred = torch.randn(7, 4, 4, generator=g)
    mask_pred[5] = mask_pred[1]  # exact ties between queries 1 and 5 (same score below)
    scores = torch.rand(7, generator=g)
    scores[5] = scores[1]
    seen = []

    def resize(m):
        seen.append(m.shape[0])
        return F.interpolate(m[None], size=(8, 8), mode="bilinear", align_corners=False)[0]

    owner, own_prob, area = _owners(mask_pred, scores, resize, chunk_bytes=chunk_bytes)
    probs = resize(mask_pred).sigmoid()
    ref_owner = (scores.view(-1, 1, 1) * probs).argmax(0)
    assert torch.equal(owner, ref_owner)
    assert torch.equal(own_prob, probs.gather(0, ref_owner[None])[0])
    assert area == (probs >= 0.5).flatten(1).sum(1).tolist()
    assert sum(seen[:-1]) == 7  # every query resized exactly once (the last call is the reference's)


def _blobs(seed, n=12, classes=5, size=(8, 10)):
    """Class logits (n, classes+1) and mask logits (n, *size): query q confident inside a disc, plus noise."""
    g = torch.Generator().manual_seed(seed)
    mask_cls = torch.randn(n, classes + 1, generator=g) * 8
    yy, xx = torch.meshgrid(torch.arange(float(size[0])), torch.arange(float(size[1])), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * torch.tensor([float(size[0]), float(size[1])])
    radius = 1.5 + 2 * torch.rand(n, 1, 1, generator=g)
    dist = ((yy - centre[:, :1, None]) ** 2 + (xx - centre[:, 1:, None]) ** 2).sqrt()
    return mask_cls, 3 * (radius - dist) + torch.randn(n, *size, generator=g)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("overlap", [0.0, 0.6])
@pytest.mark.parametrize("merge_stuff", [False, True])
def test_panoptic_transformers_rule_equals_transformers(seed, overlap, merge_stuff):
    """rule="transformers" reproduces transformers' own post_process_panoptic_segmentation."""
    pytest.importorskip("transformers")
    from transformers import OneFormerImageProcessor
    from transformers.models.oneformer.modeling_oneformer import OneFormerForUniversalSegmentationOutput

    mask_cls, mask_pred = _blobs(seed)
    stuff = {0, 1, 2} if merge_stuff else set()
    things = [c for c in range(5) if c not in stuff]
    out = OneFormerForUniversalSegmentationOutput(class_queries_logits=mask_cls[None],
                                                  masks_queries_logits=mask_pred[None])
    ref = OneFormerImageProcessor().post_process_panoptic_segmentation(
        out, threshold=0.3, overlap_mask_area_threshold=overlap, label_ids_to_fuse=stuff,
        target_sizes=[(32, 40)])[0]

    def resize(m):
        return F.interpolate(m[None], size=(32, 40), mode="bilinear", align_corners=False)[0]

    pan, info = panoptic_inference(mask_cls, mask_pred, resize, things, 0.3, overlap, rule="transformers")
    ref_seg, ref_info = ref["segmentation"].long(), ref["segments_info"]
    assert len(info) > 1  # not a trivial case
    ours_label = {s["id"]: s["category_id"] for s in info}
    # transformers continues numbering from a merged stuff segment's id, so that a later segment can take an id in
    # use (the two then share it); its ids are exact only when that did not happen
    ids_in_use, clash = set(), False
    for i, s in enumerate(ref_info):
        if s["id"] in ids_in_use and not (s["was_fused"] and any(t["id"] == s["id"] and t["label_id"] == s["label_id"]
                                                                   for t in ref_info[:i])):
            clash = True
        ids_in_use.add(s["id"])
    if not clash:
        assert torch.equal(pan.long(), ref_seg)
        assert ours_label == {s["id"]: s["label_id"] for s in ref_info}
    else:  # the same pixels, split into more segments: each of ours lies inside one of transformers'
        pairs = torch.unique(torch.stack([pan.long().flatten(), ref_seg.flatten()]), dim=1)
        assert pairs.shape[1] == len(torch.unique(pan))
        assert len(torch.unique(ref_seg)) < len(torch.unique(pan))
    if not merge_stuff:
        assert not clash  # no merging, no renumbering


def test_panoptic_rules_differ_as_documented():
    """The original rule leaves low-probability pixels void; transformers' gives every pixel to its query."""
    mask_cls = torch.tensor([[6.0, 0.0, 0.0]])  # one confident query of class 0
    mask_pred = torch.tensor([[[3.0, -1.0], [3.0, 3.0]]])
    pan, info = panoptic_inference(mask_cls, mask_pred, identity, [0], 0.5, 0.0)
    assert pan.tolist() == [[1, 0], [1, 1]] and info[0]["category_id"] == 0
    pan, info = panoptic_inference(mask_cls, mask_pred, identity, [0], 0.5, 0.0, rule="transformers")
    assert pan.tolist() == [[1, 1], [1, 1]]
    with pytest.raises(ValueError, match="panoptic rule"):
        panoptic_inference(mask_cls, mask_pred, identity, [0], 0.5, 0.0, rule="hf")


def test_semantic_matches_loop():
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(7, 5, generator=g), torch.randn(7, 9, 11, generator=g)
    probs = mask_cls.softmax(-1)[:, :-1]
    ref = sum(probs[q][:, None, None] * mask_pred[q].sigmoid()[None] for q in range(7))
    assert torch.allclose(semantic_inference(mask_cls, mask_pred), ref, atol=1e-6)


def loop_instance(mask_cls, mask_pred, topk, thing_ids, threshold, remap):
    num_queries, num_classes = mask_cls.shape[0], mask_cls.shape[-1] - 1
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    triples = sorted(((scores[q, c].item(), q, c) for q in range(num_queries) for c in range(num_classes)),
                     reverse=True)[:topk]
    out = []
    for s, q, c in triples:
        if threshold is not None and not s > threshold:
            continue
        if thing_ids is not None and c not in thing_ids:
            continue
        m = mask_pred[q]
        binary = (m > 0).float()
        mask_score = (m.sigmoid() * binary).sum() / (binary.sum() + 1e-6)
        out.append((q, remap.index(c) if remap else c, s * mask_score.item()))
    return sorted(out, key=lambda t: -t[2])


@pytest.mark.parametrize("threshold,things,remap", [(None, None, None), (0.05, [1, 3], None), (None, [1, 3], [1, 3])])
def test_instance_matches_loop(threshold, things, remap):
    g = torch.Generator().manual_seed(1)
    mask_cls, mask_pred = torch.randn(6, 5, generator=g) * 2, torch.randn(6, 10, 12, generator=g)
    inst = instance_inference(mask_cls, mask_pred, identity, (10, 12), 9, things, threshold, remap)
    ref = loop_instance(mask_cls, mask_pred, 9, things, threshold, remap)
    got = sorted(zip(inst.pred_classes.tolist(), inst.scores.tolist()), key=lambda t: -t[1])
    assert [c for c, _ in got] == [c for _, c, _ in ref]
    assert torch.allclose(torch.tensor([s for _, s in got]), torch.tensor([s for _, _, s in ref]), atol=1e-6)
    assert inst.pred_masks.shape == (len(ref), 10, 12)
    assert not inst.pred_boxes.tensor.any()


def test_instance_boxes_from_masks_and_empty():
    mask_pred = torch.full((2, 6, 8), -5.0)
    mask_pred[0, 1:3, 2:5] = 5.0
    inst = instance_inference(torch.tensor([[6.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), mask_pred, identity, (6, 8), 1,
                              None, None, None, detection_on=True)
    assert inst.pred_boxes.tensor.tolist() == [[2.0, 1.0, 5.0, 3.0]]
    empty = instance_inference(torch.randn(2, 3), torch.randn(2, 6, 8), lambda m: m, (6, 8), 4, [], None, None)
    assert len(empty) == 0

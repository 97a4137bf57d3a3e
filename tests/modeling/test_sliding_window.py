"""Sliding-window inference: window layout, merging of queries across windows, and the whole path through the model."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn
from torch.nn import functional as F

from oneformer.modeling.sliding_window import (SlidingWindow, WindowQueries, merge_window_queries,
                                               sliding_window_from_cfg, window_boxes)
from oneformer.predictor import OneFormerPredictor
from tests.tiny import tiny_cfg


def test_window_boxes_cover_the_image_on_the_mask_grid():
    win = SlidingWindow(size=(64, 96), stride=(40, 64))
    boxes = window_boxes(150, 250, win)  # padded to 152 × 252
    cover = torch.zeros(152, 252, dtype=torch.int32)
    for y, x, h, w in boxes:
        assert (h, w) == (64, 96) and y % 4 == 0 and x % 4 == 0
        cover[y:y + h, x:x + w] += 1
    assert (cover > 0).all()
    assert max(y + h for y, _, h, _ in boxes) == 152 and max(x + w for _, x, _, w in boxes) == 252
    assert sorted({y for y, *_ in boxes}) == [0, 40, 80, 88]
    # an image smaller than a window is one window of its own (padded) size
    assert window_boxes(30, 50, win) == [(0, 0, 32, 52)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=(62, 64), stride=(32, 32)), r"SIZE must be two positive multiples of 4"),
    (dict(size=(64, 64), stride=(96, 32)), r"STRIDE \(96, 32\) must not exceed SIZE"),
    (dict(size=(64, 64), stride=(32, 32), merge_iou=0.0), r"MERGE_IOU must be in \(0, 1\]"),
])
def test_bad_window_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SlidingWindow(**kwargs)


def test_window_defaults_follow_the_training_crop():
    cfg = tiny_cfg()  # the ADE20K Swin config: 512 × 512 crops
    win = sliding_window_from_cfg(cfg)
    assert win.size == (512, 512) and win.stride == (340, 340)
    cfg.MODEL.TEST.SLIDING_WINDOW.SIZE = [256, 384]
    cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE = [128]
    assert sliding_window_from_cfg(cfg) == SlidingWindow((256, 384), (128, 128), 0.5)


def _window(box, label, mask, cls_logit=8.0, num_classes=5):
    logits = torch.full((1, num_classes + 1), -8.0)
    logits[0, label] = cls_logit
    return WindowQueries(box, logits, mask[None].float() * 20 - 10, torch.tensor([label]))


def test_same_object_in_two_windows_is_one_query():
    # windows of 8 × 8 grid cells at x = 0 and x = 4: an object over cells x 2..9 is seen by both
    full = torch.zeros(8, 12, dtype=torch.bool)
    full[2:6, 2:10] = True
    a = _window((0, 0, 8, 8), 3, full[:, :8])
    b = _window((0, 4, 8, 8), 3, full[:, 4:])
    other = _window((0, 4, 8, 8), 4, full[:, 4:])  # same mask, other class: a different object
    merged = merge_window_queries([a, b], 0.5)
    assert len(merged) == 1 and merged.members == [[(0, 0), (1, 0)]]
    assert merged.boxes == [(0, 0, 8, 12)]
    assert torch.equal(merged.masks[0] > 0, full)
    assert torch.allclose(F.softmax(merged.logits[0], -1), F.softmax(a.logits[0], -1))
    assert len(merge_window_queries([a, other], 0.5)) == 2
    # masks that disagree inside the overlap (IoU 1/3 there) stay apart at 0.5
    shifted = torch.zeros(8, 12, dtype=torch.bool)
    shifted[2:6, 6:10] = True
    half = torch.zeros(8, 12, dtype=torch.bool)
    half[2:6, 0:6] = True
    assert len(merge_window_queries([_window((0, 0, 8, 8), 3, half[:, :8]),
                                     _window((0, 4, 8, 8), 3, shifted[:, 4:])], 0.5)) == 2


def test_resizer_equals_upsampling_the_whole_grid():
    g = torch.Generator().manual_seed(0)
    masks = torch.randn(2, 8, 8, generator=g) * 5
    windows = [WindowQueries((0, 0, 8, 8), torch.randn(1, 6, generator=g), masks[:1], torch.tensor([1])),
               WindowQueries((2, 4, 8, 8), torch.randn(1, 6, generator=g), masks[1:], torch.tensor([2]))]
    merged = merge_window_queries(windows, 0.5)
    grid = torch.full((2, 10, 12), -20.0)
    grid[0, 0:8, 0:8] = masks[0]
    grid[1, 2:10, 4:12] = masks[1]
    want = F.interpolate(grid[None], size=(40, 48), mode="bilinear", align_corners=False)[0][:, :38, :46]
    got = merged.resizer((38, 46), (38, 46))(merged.ids())
    assert torch.allclose(got, want, atol=1e-5)
    other = merged.resizer((38, 46), (19, 23))(merged.ids())
    assert torch.allclose(other, F.interpolate(want[None], size=(19, 23), mode="bilinear", align_corners=False)[0],
                          atol=1e-5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.TEST.PANOPTIC_ON = True
    cfg.MODEL.TEST.INSTANCE_ON = True
    cfg.MODEL.TEST.SLIDING_WINDOW.SIZE = [64]
    cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE = [32]
    return build_model(cfg).eval()


def test_one_window_image_gives_the_whole_image_result(model):
    image = torch.as_tensor(np.random.default_rng(0).integers(0, 256, (3, 64, 64)), dtype=torch.float32)
    outputs = ["sem_seg", "panoptic_seg", "instances", "sem_seg_probs", "embeddings"]
    with torch.no_grad():
        whole = model([{"image": image, "task": "panoptic", "outputs": outputs}])[0]
        slid = model([{"image": image, "task": "panoptic", "outputs": outputs, "sliding_window": True}])[0]
    assert torch.allclose(slid["sem_seg"], whole["sem_seg"], atol=1e-5)
    assert torch.allclose(slid["sem_seg_probs"], whole["sem_seg_probs"], atol=1e-5)
    assert len(whole["panoptic_seg"][1]) > 0
    assert torch.equal(slid["panoptic_seg"][0], whole["panoptic_seg"][0])
    strip = [[{k: v for k, v in s.items() if k != "query_ids"} for s in r["panoptic_seg"][1]] for r in (slid, whole)]
    for a, b in zip(*strip):
        assert a.pop("score") == pytest.approx(b.pop("score"), abs=1e-6)
    assert strip[0] == strip[1]
    assert torch.allclose(slid["panoptic_embeddings"], whole["panoptic_embeddings"], atol=1e-6)
    a, b = slid["instances"], whole["instances"]
    order_a, order_b = a.scores.argsort(), b.scores.argsort()
    assert len(a) == len(b) > 0
    assert torch.allclose(a.scores[order_a], b.scores[order_b], atol=1e-6)
    assert torch.equal(a.pred_classes[order_a], b.pred_classes[order_b])
    assert torch.equal(a.pred_masks[order_a], b.pred_masks[order_b])
    assert torch.allclose(a.pred_embeddings[order_a], b.pred_embeddings[order_b], atol=1e-6)


def test_windows_cover_a_larger_image_with_the_task_token(model):
    image = torch.as_tensor(np.random.default_rng(1).integers(0, 256, (3, 100, 150)), dtype=torch.float32)
    seen = []
    hook = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        with torch.no_grad():
            out = model([{"image": image, "task": "semantic", "outputs": ["sem_seg", "panoptic_seg", "instances"],
                          "sliding_window": True, "height": 50, "width": 75}])[0]
    finally:
        hook.remove()
    assert len(seen) == 3 * 4 and set(seen) == {(64, 64)}  # windows at y 0, 32, 36 (of 100) and x 0, 32, 64, 88
    assert out["sem_seg"].shape == (5, 50, 75)
    assert out["panoptic_seg"][0].shape == (50, 75)
    assert out["instances"].image_size == (50, 75) and out["instances"].pred_masks.shape[-2:] == (50, 75)


class _ImageBackbone(nn.Module):
    """Passes the normalized image on as the only feature."""

    size_divisibility = 32

    def forward(self, x):
        return {"image": x}


class _OracleHead(nn.Module):
    """Query 0: class 3 (a thing) on the bright pixels; query 1: class 0 (stuff) on the others; the rest no-object.
    Masks at 1/4 resolution, as the real head's."""

    num_queries = 4

    def forward(self, features, tasks):
        x = features["image"]
        bright = F.avg_pool2d((x.mean(1, keepdim=True) > 0.5).float(), 4)[:, 0] > 0.5  # (B, h/4, w/4)
        fg = bright.float() * 20 - 10
        b = x.shape[0]
        masks = torch.stack([fg, -fg, torch.full_like(fg, -10), torch.full_like(fg, -10)], 1)
        logits = torch.full((b, 4, 6), -10.0)
        logits[:, 0, 3] = logits[:, 1, 0] = logits[:, 2, 5] = logits[:, 3, 5] = 10.0
        return {"pred_logits": logits, "pred_masks": masks}


def test_object_across_a_window_border_is_one_segment_and_one_instance():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.PANOPTIC_ON = True
    cfg.MODEL.TEST.INSTANCE_ON = True
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.5
    cfg.MODEL.TEST.SLIDING_WINDOW.SIZE = [64, 96]
    cfg.MODEL.TEST.SLIDING_WINDOW.STRIDE = [64]
    model = build_model(cfg).eval()
    model.backbone, model.sem_seg_head = _ImageBackbone(), _OracleHead()
    image = torch.zeros(3, 64, 160)
    image[:, 16:48, 40:120] = 255  # windows x 0..96 and 64..160: the object crosses both borders of the overlap
    assert len(window_boxes(64, 160, model.sliding_window)) == 2
    inputs = {"image": image, "outputs": ["panoptic_seg", "instances"]}
    with torch.no_grad():
        out = model([dict(inputs, sliding_window=True)])[0]
        whole = model([inputs])[0]  # the oracle sees the whole object at once
    seg, info = out["panoptic_seg"]
    things = [s for s in info if s["isthing"]]
    assert len(things) == 1 and things[0]["category_id"] == 3  # not two halves
    rect = torch.zeros(64, 160, dtype=torch.bool)
    rect[16:48, 40:120] = True
    obj = seg == things[0]["id"]
    assert not (obj & ~rect).any() and obj.sum() >= rect.sum() - 4  # bilinear masks round the 4 corner pixels
    assert torch.equal(seg, whole["panoptic_seg"][0]) and info == whole["panoptic_seg"][1]
    stuff = [s for s in info if not s["isthing"]]
    assert len(stuff) == 1 and torch.equal(seg == stuff[0]["id"], ~obj)
    inst = out["instances"]
    confident = inst[inst.scores > 0.5]
    assert len(confident) == 1 and int(confident.pred_classes[0]) == 3
    assert torch.equal(confident.pred_masks[0].bool(), obj)


def test_predictor_flag_keeps_the_full_resolution(tmp_path):
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.MODEL.TEST.SLIDING_WINDOW.SIZE = [64]
    predictor = OneFormerPredictor(cfg, sliding_window=True)
    seen = []
    hook = predictor.model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-2:]))
    image = np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    try:
        out = predictor(image, task="semantic")[0]
    finally:
        hook.remove()
    assert out["sem_seg"].shape == (5, 96, 128) and len(seen) == 2 * 3  # 96/64 → 2 rows, 128 → 3 columns
    plain = OneFormerPredictor(cfg)
    assert plain.sliding_window is False and plain.aug is not None


def test_transformers_rule_is_refused_with_a_message():
    cfg = tiny_cfg()
    cfg.MODEL.TEST.PANOPTIC_RULE = "transformers"
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match="sliding-window inference supports MODEL.TEST.PANOPTIC_RULE 'original'"):
        model([{"image": torch.zeros(3, 32, 32), "sliding_window": True}])

"""SemanticSegmentorWithTTA: multi-scale + flip copies, flipped scores flipped back, averaged; semantic-only while it
runs."""
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from torch import nn

from oneformer.engine import SemanticSegmentorWithTTA

H, W = 20, 30


class RampModel(nn.Module):
    """'Segments' by returning its first two input channels resized to the original size (like OneFormer's sem_seg)."""

    def __init__(self):
        super().__init__()
        self.semantic_on, self.panoptic_on, self.instance_on = True, True, True
        self.seen = []

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            self.seen.append((tuple(x["image"].shape[-2:]), self.semantic_on, self.panoptic_on, self.instance_on,
                              x["task"]))
            sem = F.interpolate(x["image"][None, :2].float(), size=(x["height"], x["width"]), mode="bilinear",
                                align_corners=False)[0]
            out.append({"sem_seg": sem, "panoptic_seg": None} if self.panoptic_on else {"sem_seg": sem})
        return out


def _input():
    cols = torch.arange(W, dtype=torch.float32).expand(H, W)
    rows = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    image = torch.stack([cols * 8, rows * 12, torch.zeros(H, W)]).to(torch.uint8)
    return {"image": image, "height": H, "width": W, "task": "The task is semantic"}


def _cfg(flip=True):
    cfg = get_cfg()
    cfg.TEST.AUG.MIN_SIZES = (10, 20, 40)
    cfg.TEST.AUG.MAX_SIZE = 1000
    cfg.TEST.AUG.FLIP = flip
    return cfg


def test_flipped_copies_are_flipped_back_and_averaged():
    model = RampModel()
    x = _input()
    reference = model([x])[0]["sem_seg"]
    model.seen.clear()
    out = SemanticSegmentorWithTTA(_cfg(), model)([x])
    assert len(out) == 1 and set(out[0]) == {"sem_seg"}
    sem = out[0]["sem_seg"]
    assert sem.shape == (2, H, W)
    # 3 scales x (plain, flipped), semantic output only, task kept; flags restored afterwards
    assert sorted(s[0] for s in model.seen) == [(10, 15), (10, 15), (20, 30), (20, 30), (40, 60), (40, 60)]
    assert all(s[1:4] == (True, False, False) and s[4] == "The task is semantic" for s in model.seen)
    assert (model.semantic_on, model.panoptic_on, model.instance_on) == (True, True, True)
    # flipped predictions were flipped back: the average matches the un-augmented prediction (up to resampling);
    # without the flip-back the column ramp would average out
    assert (sem - reference).abs().mean() < 2.0
    assert (sem[0].flip(-1) - reference[0]).abs().mean() > 50


def test_without_flip_only_scales():
    model = RampModel()
    SemanticSegmentorWithTTA(_cfg(flip=False), model)([_input()])
    assert sorted(s[0] for s in model.seen) == [(10, 15), (20, 30), (40, 60)]

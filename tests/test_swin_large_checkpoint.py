"""A released-size checkpoint end to end on CPU: Swin-L ADE20K in the original layout (random weights, saved the way
Detectron2's checkpointer saved the released files, text branch included) loads into the model-zoo config with no
missing keys and runs all three tasks on a 640×480 image."""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model

import oneformer  # noqa: F401
from oneformer import add_oneformer_config_all
from oneformer.utils.checkpoint import OneFormerCheckpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml")


def _cfg(is_train, weights=""):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.IS_TRAIN = is_train
    cfg.MODEL.WEIGHTS = weights
    return cfg


@pytest.mark.slow
def test_swin_large_ade20k_checkpoint_runs_all_tasks(tmp_path):
    torch.manual_seed(0)
    trained = build_model(_cfg(is_train=True))
    DetectionCheckpointer(trained, str(tmp_path)).save("model_final")
    expected = {k: v.clone() for k, v in trained.state_dict().items() if k.startswith("sem_seg_head.predictor.")}
    del trained

    cfg = _cfg(is_train=False, weights=str(tmp_path / "model_final.pth"))
    model = build_model(cfg).eval()
    checkpointer = OneFormerCheckpointer(model)
    checkpointer.load(cfg.MODEL.WEIGHTS)
    report = checkpointer.last_report
    assert report.missing == [] and report.reinitialized == []
    assert len(report.unexpected) == 81  # the text branch: 775 − 694 entries
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())

    image = torch.randint(0, 256, (3, 480, 640), dtype=torch.uint8)
    inputs = [{"image": image, "task": t} for t in ("panoptic", "semantic", "instance")]
    with torch.no_grad():
        outputs = model(inputs)
    for out in outputs:
        assert out["sem_seg"].shape == (150, 480, 640)
        pan, segments = out["panoptic_seg"]
        assert pan.shape == (480, 640)
        assert set(pan.unique().tolist()) - {0} == {s["id"] for s in segments}
        assert out["instances"].image_size == (480, 640)
        assert len(out["instances"]) <= 250
        assert torch.isfinite(out["sem_seg"]).all()

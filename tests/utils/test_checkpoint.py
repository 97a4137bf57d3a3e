"""Checkpoint loading: training → inference builds, fine-tuning with other class/query counts, wrong files."""
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from oneformer.utils.checkpoint import OneFormerCheckpointer
from tests.tiny import tiny_cfg


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(is_train=True))
    d = tmp_path_factory.mktemp("ckpt")
    DetectionCheckpointer(model, str(d)).save("train")  # the way the released files were written
    return model, os.path.join(str(d), "train.pth")


def test_training_checkpoint_loads_into_inference_build(training_checkpoint):
    trained, path = training_checkpoint
    model = build_model(tiny_cfg(is_train=False))
    ckpt = OneFormerCheckpointer(model)
    ckpt.load(path)
    report = ckpt.last_report
    assert report.missing == [] and report.reinitialized == []
    assert report.unexpected and all(k.startswith(("text_encoder.", "text_projector.", "prompt_ctx."))
                                     for k in report.unexpected)
    assert "text-branch tensors ignored" in report.format()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    trained.eval()
    model.eval()
    with torch.no_grad():
        a = trained([{"image": image}])[0]["sem_seg"]
        b = model([{"image": image}])[0]["sem_seg"]
    assert torch.equal(a, b)


def test_other_class_and_query_count_reinitializes_with_reasons(training_checkpoint):
    _, path = training_checkpoint
    cfg = tiny_cfg(is_train=True)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 9
    cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES = 13
    model = build_model(cfg)
    ckpt = OneFormerCheckpointer(model)
    ckpt.load(path)
    report = ckpt.last_report
    keys = {k for k, *_ in report.reinitialized}
    assert keys == {"sem_seg_head.predictor.class_embed.weight", "sem_seg_head.predictor.class_embed.bias",
                    "sem_seg_head.predictor.query_embed.weight", "criterion.empty_weight"}
    text = report.format()
    assert "class count differs: checkpoint 5 classes, model 9" in text
    assert "query count differs: checkpoint 10, model 13" in text
    # the re-initialized no-object weight is right for the new class count
    assert model.criterion.empty_weight.shape == (10,) and model.criterion.empty_weight[-1].item() == pytest.approx(0.1)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}}, path)
    model = build_model(tiny_cfg())
    with pytest.raises(ValueError, match="shares no tensor with this model"):
        OneFormerCheckpointer(model).load(str(path))


def test_url_that_cannot_be_fetched_is_one_line(tmp_path, monkeypatch):
    from oneformer.utils.checkpoint import CheckpointDownloadError

    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = "http://127.0.0.1:9/projects/oneformer/ade20k/model.pth"  # nothing listens on port 9: refused at once
    checkpointer = OneFormerCheckpointer(torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointDownloadError) as e:  # was: urllib's URLError traceback
        checkpointer.load(url + "?dl=1")
    message = str(e.value)
    assert message.startswith(f"cannot download the checkpoint {url} (URLError: ")
    assert str(tmp_path / "cache" / "projects/oneformer/ade20k/model.pth") in message
    assert "--weights PATH" in message and "\n" not in message

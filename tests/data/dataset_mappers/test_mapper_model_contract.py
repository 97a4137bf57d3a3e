"""End to end: mapped dicts train the tiny OneFormer (text length, mask layout, task string as the model expects)."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from oneformer.data.dataset_mappers import build_dataset_mapper
from tests.data.dataset_mappers import tiny_data as td
from tests.tiny import tiny_cfg


def _cfg():
    td.tiny_metadata()
    cfg = tiny_cfg(is_train=True)  # 10 queries, N_CTX 4 → 6 texts; 5 classes
    cfg.DATASETS.TRAIN = (td.DATASET,)
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.SIZE = (32, 40)
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.SIZE_DIVISIBILITY = 64
    return cfg


@pytest.mark.parametrize("tasks", [("panoptic", "instance"), ("semantic", "semantic")])
def test_mapped_inputs_give_finite_losses(tmp_path, monkeypatch, tasks):
    cfg = _cfg()
    mapper = build_dataset_mapper(cfg, is_train=True)
    record = td.write_record(tmp_path)
    np.random.seed(0)
    inputs = []
    for task in tasks:
        monkeypatch.setattr(mapper, "_sample_task", lambda t=task: t)
        inputs.append(mapper(record))
    n_text = cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES - cfg.MODEL.TEXT_ENCODER.N_CTX
    for x, task in zip(inputs, tasks):
        assert len(x["text"]) == n_text and x["task"] == f"The task is {task}"
        assert tuple(x["image"].shape) == (3, 64, 64) and len(x["instances"]) > 0

    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    losses = model(inputs)
    assert "loss_contrastive" in losses
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()

"""The task-aware test mapper "oneformer_test"."""
import numpy as np
import pytest
import torch

from oneformer.data.dataset_mappers import OneFormerTestDatasetMapper, build_dataset_mapper
from tests.data.dataset_mappers import tiny_data as td


def _cfg(task="panoptic"):
    cfg = td.mapper_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.INPUT.MAX_SIZE_TEST = 1000
    cfg.MODEL.TEST.TASK = task
    return cfg


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_resize_and_task(tmp_path, task):
    record = td.write_record(tmp_path)
    mapper = build_dataset_mapper(_cfg(task), is_train=False)
    assert isinstance(mapper, OneFormerTestDatasetMapper)
    assert [type(a).__name__ for a in mapper.augmentations.augs] == ["ResizeShortestEdge"]
    out = mapper(record)
    assert out["task"] == f"The task is {task}"
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, 32, 48)
    assert (out["height"], out["width"]) == (td.H, td.W)
    sem = out["sem_seg"]
    assert sem.dtype == torch.int64 and tuple(sem.shape) == (32, 48)
    assert set(np.unique(sem.numpy()).tolist()) <= {0, 1, 2, 3, 4, td.IGNORE}
    assert "instances" not in out and "text" not in out


def test_without_sem_seg_and_max_size(tmp_path):
    record = td.write_record(tmp_path, with_sem_seg=False)
    cfg = _cfg()
    cfg.INPUT.MAX_SIZE_TEST = 36  # long side capped: 24→36, short side 16→24
    out = OneFormerTestDatasetMapper(cfg, False)(record)
    assert tuple(out["image"].shape) == (3, 24, 36) and "sem_seg" not in out


@pytest.mark.parametrize("bad", ["detection", "", "The task is everything"])
def test_task_validation(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("(", r"\(")):
        OneFormerTestDatasetMapper(_cfg(bad), False)


def test_task_spellings():
    assert OneFormerTestDatasetMapper(_cfg("The task is Instance"), False).task == "The task is instance"
    assert OneFormerTestDatasetMapper(_cfg(" semantic "), False).task == "The task is semantic"


def test_refuses_training():
    with pytest.raises(ValueError, match="evaluation"):
        OneFormerTestDatasetMapper(_cfg(), True)

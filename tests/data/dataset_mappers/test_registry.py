"""DATASET_MAPPER_REGISTRY and build_dataset_mapper."""
import pytest

from oneformer.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    COCOUnifiedNewBaselineDatasetMapper,
    OneFormerInstanceDatasetMapper,
    OneFormerSemanticDatasetMapper,
    OneFormerTestDatasetMapper,
    OneFormerUnifiedDatasetMapper,
    build_dataset_mapper,
)
from tests.data.dataset_mappers import tiny_data as td

NAMES = {
    "oneformer_unified": OneFormerUnifiedDatasetMapper,
    "coco_unified_lsj": COCOUnifiedNewBaselineDatasetMapper,
    "oneformer_semantic": OneFormerSemanticDatasetMapper,
    "oneformer_instance": OneFormerInstanceDatasetMapper,
    "oneformer_test": OneFormerTestDatasetMapper,
}


def test_registered_names():
    for name, cls in NAMES.items():
        assert DATASET_MAPPER_REGISTRY.get(name) is cls


def test_build_by_config_name():
    cfg = td.mapper_cfg()
    assert cfg.INPUT.DATASET_MAPPER_NAME == "oneformer_unified"
    assert isinstance(build_dataset_mapper(cfg, is_train=True), OneFormerUnifiedDatasetMapper)
    assert isinstance(build_dataset_mapper(cfg, is_train=False), OneFormerTestDatasetMapper)
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_unified_lsj"
    assert isinstance(build_dataset_mapper(cfg, True), COCOUnifiedNewBaselineDatasetMapper)


def test_unknown_name_lists_registered_names():
    cfg = td.mapper_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_panoptic"
    with pytest.raises(ValueError, match="mask_former_panoptic") as e:
        build_dataset_mapper(cfg, True)
    for name in NAMES:
        assert name in str(e.value)


def test_training_mapper_refuses_eval():
    with pytest.raises(ValueError, match="oneformer_test"):
        build_dataset_mapper(td.mapper_cfg(), is_train=False, name="oneformer_unified")

"""The "coco_unified_lsj" mapper: flip → ResizeScale → FixedSizeCrop; padded panoptic pixels are void."""
import numpy as np
import pytest
import torch

from oneformer.data.dataset_mappers import COCOUnifiedNewBaselineDatasetMapper, build_dataset_mapper
from tests.data.dataset_mappers import tiny_data as td

WHITE_ID = 255 + 255 * 256 + 255 * 256 * 256


def _cfg(scale=0.5, flip="none"):
    cfg = td.mapper_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_unified_lsj"
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.INPUT.MIN_SCALE = scale
    cfg.INPUT.MAX_SCALE = scale
    cfg.INPUT.RANDOM_FLIP = flip
    cfg.INPUT.SIZE_DIVISIBILITY = 512  # not used by this mapper
    cfg.INPUT.COLOR_AUG_SSD = True  # not used by this mapper
    return cfg


def _coco_record(tmp_path):
    record = td.write_record(tmp_path)
    # COCO train dicts carry the instance annotations too; the mapper ignores them
    record["annotations"] = [{"category_id": 999, "bbox": [0, 0, 1, 1], "bbox_mode": 1, "iscrowd": 0}]
    return record


@pytest.mark.parametrize("task", ["semantic", "instance", "panoptic"])
def test_output_size_and_padding(tmp_path, monkeypatch, task):
    mapper = build_dataset_mapper(_cfg(), is_train=True)
    assert isinstance(mapper, COCOUnifiedNewBaselineDatasetMapper)
    monkeypatch.setattr(mapper, "_sample_task", lambda: task)
    out = mapper(_coco_record(tmp_path))
    # ResizeScale: 16×24 fit into 16×16 → 11×16; FixedSizeCrop pads to 32×32
    assert tuple(out["image"].shape) == (3, 32, 32) and out["image"].dtype == torch.uint8
    assert (out["image"][:, 11:] == 128).all() and (out["image"][:, :, 16:] == 128).all()
    assert (out["sem_seg"][11:] == td.IGNORE).all() and (out["sem_seg"][:, 16:] == td.IGNORE).all()
    masks = out["instances"].gt_masks
    assert masks.shape[1:] == (32, 32)
    assert not masks[:, 11:].any() and not masks[:, :, 16:].any()
    assert out["instances"].gt_classes.tolist() == td.EXPECTED[task]["classes"]
    assert out["task"] == f"The task is {task}"
    assert len(out["text"]) == 8 and out["text"][: len(td.EXPECTED[task]["texts"])] == td.EXPECTED[task]["texts"]
    assert "annotations" not in out


def test_padded_panoptic_pixels_decode_to_no_segment(tmp_path):
    mapper = COCOUnifiedNewBaselineDatasetMapper(_cfg(), is_train=True)
    image = td.image_array()
    _, pan, _ = mapper.apply_augmentations(image, td.id2rgb(td.pan_ids()))
    assert pan.shape == (32, 32)
    assert (pan[11:] == WHITE_ID).all() and (pan[:, 16:] == WHITE_ID).all()
    assert WHITE_ID not in {s["id"] for s in td.SEGMENTS_INFO}
    assert set(np.unique(pan[:11, :16]).tolist()) <= {0, 99} | {s["id"] for s in td.SEGMENTS_INFO}


def test_upscaled_image_is_cropped_to_image_size(tmp_path):
    mapper = COCOUnifiedNewBaselineDatasetMapper(_cfg(scale=3.0, flip="horizontal"), is_train=True)
    np.random.seed(0)
    for _ in range(3):
        out = mapper(_coco_record(tmp_path))
        assert tuple(out["image"].shape) == (3, 32, 32)
        assert out["instances"].gt_masks.shape[1:] == (32, 32)
        assert len(out["text"]) == 8


def test_augmentation_list():
    mapper = COCOUnifiedNewBaselineDatasetMapper(_cfg(flip="horizontal"), is_train=True)
    names = [type(a).__name__ for a in mapper.augmentations.augs]
    assert names == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]
    crop = mapper.augmentations.augs[-1]
    assert tuple(crop.crop_size) == (32, 32) and crop.pad_value == 128 and crop.seg_pad_value == 255
    assert mapper.size_divisibility == -1

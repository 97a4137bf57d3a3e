"""Semantic-only ("oneformer_semantic") and instance-only ("oneformer_instance") training mappers."""
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import MetadataCatalog
from PIL import Image

from oneformer.data.dataset_mappers import (
    OneFormerInstanceDatasetMapper,
    OneFormerSemanticDatasetMapper,
    build_dataset_mapper,
)
from tests.data.dataset_mappers import tiny_data as td

SEM_DATASET = "oneformer_mapper_tiny_semantic"
INS_DATASET = "oneformer_mapper_tiny_instance"


def _sem_cfg(**input_overrides):
    meta = MetadataCatalog.get(SEM_DATASET)
    if not hasattr(meta, "stuff_classes"):
        meta.set(stuff_classes=list(td.CLASS_NAMES), ignore_label=255)
    cfg = td.mapper_cfg()
    cfg.DATASETS.TRAIN = (SEM_DATASET,)
    cfg.INPUT.DATASET_MAPPER_NAME = "oneformer_semantic"
    for k, v in input_overrides.items():
        setattr(cfg.INPUT, k, v)
    return cfg


def _ins_cfg():
    meta = MetadataCatalog.get(INS_DATASET)
    if not hasattr(meta, "thing_classes"):
        meta.set(thing_classes=["cat", "dog"], thing_dataset_id_to_contiguous_id={1: 0, 2: 1})
    cfg = td.mapper_cfg()
    cfg.DATASETS.TRAIN = (INS_DATASET,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
    cfg.INPUT.DATASET_MAPPER_NAME = "oneformer_instance"
    return cfg


def _sem_record(tmp_path, labels):
    img = os.path.join(tmp_path, "s.png")
    sem = os.path.join(tmp_path, "s_sem.png")
    Image.fromarray(td.image_array()).save(img)
    Image.fromarray(labels.astype(np.uint8)).save(sem)
    return {"file_name": img, "height": td.H, "width": td.W, "sem_seg_file_name": sem}


def _labels():
    labels = np.full((td.H, td.W), 255, dtype=np.int64)
    labels[0:8] = 0
    labels[8:16, 0:12] = 2
    return labels


# ------------------------------------------------------------------------------------------------ semantic


def test_semantic_targets(tmp_path):
    mapper = build_dataset_mapper(_sem_cfg(), is_train=True)
    assert isinstance(mapper, OneFormerSemanticDatasetMapper)
    out = mapper(_sem_record(tmp_path, _labels()))
    assert out["task"] == "The task is semantic"
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 2]
    np.testing.assert_array_equal(inst.gt_masks[0].numpy(), _labels() == 0)
    np.testing.assert_array_equal(inst.gt_masks[1].numpy(), _labels() == 2)
    np.testing.assert_array_equal(inst.gt_bboxes.tensor.numpy(), [[0, 0, 1, 1], [0, 0, 1, 1]])
    assert out["text"] == ["a photo with a sky", "a photo with a window "] + ["a semantic photo"] * 6
    np.testing.assert_array_equal(out["sem_seg"].numpy(), _labels())
    assert tuple(out["image"].shape) == (3, td.H, td.W)


def test_semantic_padding_and_augmentation(tmp_path):
    cfg = _sem_cfg(SIZE_DIVISIBILITY=32, COLOR_AUG_SSD=True, RANDOM_FLIP="horizontal")
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.SIZE = (12, 12)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.7
    mapper = OneFormerSemanticDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    out = mapper(_sem_record(tmp_path, _labels()))
    assert tuple(out["image"].shape) == (3, 32, 32)
    assert (out["image"][:, 12:] == 128).all() and (out["sem_seg"][12:] == 255).all()
    inst = out["instances"]
    assert inst.gt_masks.shape[1:] == (32, 32) and inst.gt_masks.flatten(1).any(1).all()
    for c, m in zip(inst.gt_classes.tolist(), inst.gt_masks):
        assert (out["sem_seg"][m] == c).all()


def test_semantic_bad_label(tmp_path):
    labels = _labels()
    labels[0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\]"):
        OneFormerSemanticDatasetMapper(_sem_cfg(), is_train=True)(_sem_record(tmp_path, labels))


def test_semantic_needs_label_file(tmp_path):
    record = _sem_record(tmp_path, _labels())
    del record["sem_seg_file_name"]
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        OneFormerSemanticDatasetMapper(_sem_cfg(), is_train=True)(record)


# ------------------------------------------------------------------------------------------------ instance


def _uncompressed_rle(mask):
    """COCO uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _ins_record(tmp_path):
    img = os.path.join(tmp_path, "i.png")
    Image.fromarray(td.image_array()).save(img)
    cat = td.region(slice(2, 6), slice(3, 9))
    dog2 = td.region(slice(12, 16), slice(18, 24))
    rle = mask_util.encode(np.asfortranarray(cat.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # as in a json file
    annotations = [
        {"category_id": 0, "iscrowd": 0, "segmentation": rle},
        {"category_id": 1, "iscrowd": 0, "segmentation": [[10, 8, 20, 8, 20, 14, 10, 14]]},  # polygon (x, y)
        {"category_id": 0, "iscrowd": 1, "segmentation": _uncompressed_rle(td.region(slice(0, 2), slice(None)))},
        {"category_id": 1, "iscrowd": 0, "segmentation": _uncompressed_rle(dog2)},
    ]
    return {"file_name": img, "height": td.H, "width": td.W, "annotations": annotations}, cat, dog2


def test_instance_targets(tmp_path):
    mapper = build_dataset_mapper(_ins_cfg(), is_train=True)
    assert isinstance(mapper, OneFormerInstanceDatasetMapper)
    record, cat, dog2 = _ins_record(tmp_path)
    out = mapper(record)
    assert out["task"] == "The task is instance"
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [0, 1, 1]  # annotation order, crowd skipped
    masks = inst.gt_masks.numpy()
    np.testing.assert_array_equal(masks[0], cat)
    np.testing.assert_array_equal(masks[2], dog2)
    poly = td.region(slice(8, 14), slice(10, 20))
    iou = (masks[1] & poly).sum() / (masks[1] | poly).sum()
    assert iou > 0.7, iou
    boxes = inst.gt_bboxes.tensor.numpy()
    np.testing.assert_array_equal(boxes[0], [3, 2, 9, 6])
    np.testing.assert_array_equal(boxes[2], [18, 12, 24, 16])
    assert np.abs(boxes[1] - [10, 8, 20, 14]).max() <= 1
    assert out["text"] == ["a photo with a cat", "a photo with a dog", "a photo with a dog"] + [
        "an instance photo"] * 5
    assert out["thing_ids"] == [0, 1] and "sem_seg" not in out and "annotations" not in out


def test_instance_padding_flip_and_crop(tmp_path):
    cfg = _ins_cfg()
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.SIZE = (12, 12)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.5  # no class map: a plain random crop is used
    mapper = OneFormerInstanceDatasetMapper(cfg, is_train=True)
    assert type(mapper.augmentations.augs[1]).__name__ == "RandomCrop"
    record, _, _ = _ins_record(tmp_path)
    np.random.seed(1)
    for _ in range(4):
        out = mapper(record)
        assert tuple(out["image"].shape) == (3, 32, 32) and (out["image"][:, 12:] == 128).all()
        masks = out["instances"].gt_masks
        assert masks.shape[1:] == (32, 32) and not masks[:, 12:].any() and masks.flatten(1).any(1).all()
        assert len(out["text"]) == 8


def test_instance_errors(tmp_path):
    mapper = OneFormerInstanceDatasetMapper(_ins_cfg(), is_train=True)
    record, _, _ = _ins_record(tmp_path)
    bad = dict(record, annotations=[dict(record["annotations"][0], category_id=5)])
    with pytest.raises(ValueError, match="category_id 5"):
        mapper(bad)
    with pytest.raises(ValueError, match="annotations"):
        mapper({k: v for k, v in record.items() if k != "annotations"})
    no_seg = dict(record, annotations=[{"category_id": 0, "iscrowd": 0, "bbox": [0, 0, 2, 2]}])
    with pytest.raises(ValueError, match="segmentation"):
        mapper(no_seg)
    empty = mapper(dict(record, annotations=[]))
    assert len(empty["instances"]) == 0 and empty["instances"].gt_masks.shape == (0, td.H, td.W)
    assert empty["text"] == ["an instance photo"] * 8

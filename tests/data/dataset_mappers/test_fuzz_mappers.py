"""Property-based tests (hypothesis) of the training mappers: random panoptic PNGs and segments_info (empty, tiny,
crowd-only, ids missing from the PNG or from segments_info), random image sizes and crop settings. Whatever the
input, the output is consistent: masks inside the image and non-empty, classes in range, sem_seg agreeing with the
masks, boxes inside the image, a text list of the fixed length."""
import itertools
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from oneformer.data.dataset_mappers import (
    COCOUnifiedNewBaselineDatasetMapper,
    OneFormerInstanceDatasetMapper,
    OneFormerSemanticDatasetMapper,
    OneFormerUnifiedDatasetMapper,
)
from tests.data.dataset_mappers import tiny_data as td
from tests.data.dataset_mappers.test_semantic_instance_mappers import _ins_cfg, _sem_cfg

# ONEFORMER_FUZZ_EXAMPLES=1000 for a deeper search than the CI default
FUZZ = settings(max_examples=int(os.environ.get("ONEFORMER_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
K = len(td.CLASS_NAMES)
TEXT_LENGTH = 8  # td.mapper_cfg(): 12 queries - 4 context tokens
_files = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@st.composite
def panoptic_examples(draw):
    """(image (h, w, 3), panoptic ids (h, w), segments_info)."""
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    ids = draw(st.lists(st.sampled_from([1, 2, 3, 255, 256, 70000, 1234567]), min_size=0, max_size=5, unique=True))
    pan = np.zeros((h, w), dtype=np.int64)
    for sid in ids:
        y0, x0 = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        y1, x1 = draw(st.integers(y0 + 1, h)), draw(st.integers(x0 + 1, w))
        pan[y0:y1, x0:x1] = sid
    listed = draw(st.lists(st.sampled_from([1, 2, 3, 255, 256, 70000, 1234567, 42]), max_size=6, unique=True))
    segments = [{"id": sid, "category_id": draw(st.integers(0, K - 1)),
                 "iscrowd": int(draw(st.booleans()) and draw(st.booleans()))} for sid in listed]
    if draw(st.booleans()) and segments:  # crowd-only images
        segments = [dict(s, iscrowd=1) for s in segments] if draw(st.booleans()) else segments
    image = np.random.RandomState(h * 31 + w).randint(0, 256, (h, w, 3), dtype=np.uint8)
    return image, pan, segments


@st.composite
def crop_settings(draw):
    return {
        "enabled": draw(st.booleans()),
        "type": draw(st.sampled_from(["absolute", "absolute_range", "relative_range"])),
        "size": draw(st.sampled_from([(8, 8), (12, 40), (40, 40), (1, 64), (0.5, 0.5)])),
        "area": draw(st.sampled_from([1.0, 0.5])),
        "pad": draw(st.sampled_from([-1, 16, 64])),
        "flip": draw(st.sampled_from(["none", "horizontal"])),
        "min_size": draw(st.sampled_from([(8,), (16,), (4, 24)])),
    }


def _cfg(crop, base=None):
    cfg = base if base is not None else td.mapper_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = crop["min_size"]
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    cfg.INPUT.CROP.ENABLED = crop["enabled"]
    size = crop["size"]
    if crop["type"] == "relative_range":
        size = (0.5, 0.5)
    elif crop["type"] == "absolute_range" or isinstance(size[0], float):
        size = (8, 40)
    cfg.INPUT.CROP.TYPE = crop["type"]
    cfg.INPUT.CROP.SIZE = size
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = crop["area"]
    cfg.INPUT.SIZE_DIVISIBILITY = crop["pad"]
    cfg.INPUT.RANDOM_FLIP = crop["flip"]
    return cfg


def _write_panoptic(folder, image, pan, segments):
    n = next(_files)
    img_file, pan_file = os.path.join(folder, f"{n}.png"), os.path.join(folder, f"{n}_pan.png")
    Image.fromarray(image).save(img_file)
    Image.fromarray(td.id2rgb(pan)).save(pan_file)
    return {"file_name": img_file, "height": image.shape[0], "width": image.shape[1], "pan_seg_file_name": pan_file,
            "segments_info": segments}


def _map(mapper, record):
    """The mapper's output, or None after the one documented refusal: a side resized to 0 pixels, which only an
    extreme aspect ratio causes (then the error names the record and the settings)."""
    try:
        return mapper(record)
    except ValueError as e:
        h, w = record["height"], record["width"]
        assert f"Dataset record {record['file_name']}: the augmentations failed on its {h}×{w} image" in str(e)
        assert "height and width must be > 0" in str(e) and max(h, w) >= 4 * min(h, w)
        return None


def _check_common(out, things=None):
    image = out["image"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    h, w = image.shape[1:]
    assert h >= 1 and w >= 1 and out["orig_shape"] == (h, w)
    inst = out["instances"]
    m = len(inst)
    assert inst.image_size == (h, w)
    assert inst.gt_masks.dtype == torch.bool and tuple(inst.gt_masks.shape) == (m, h, w)
    assert inst.gt_classes.dtype == torch.int64 and tuple(inst.gt_classes.shape) == (m,)
    assert ((inst.gt_classes >= 0) & (inst.gt_classes < (K if things is None else things))).all()
    assert inst.gt_masks.flatten(1).any(1).all()  # no empty mask
    boxes = inst.gt_bboxes.tensor
    assert tuple(boxes.shape) == (m, 4) and torch.isfinite(boxes).all()
    assert ((boxes[:, 0] >= 0) & (boxes[:, 1] >= 0) & (boxes[:, 2] <= w) & (boxes[:, 3] <= h)).all()
    assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
    assert isinstance(out["text"], list) and len(out["text"]) == TEXT_LENGTH
    assert all(isinstance(t, str) and t for t in out["text"])
    return h, w


def _check_sem_seg(out, task):
    inst, sem = out["instances"], out["sem_seg"]
    assert sem.dtype == torch.int64 and tuple(sem.shape) == tuple(out["image"].shape[1:])
    valid = sem != td.IGNORE
    assert ((sem[valid] >= 0) & (sem[valid] < K)).all()
    for cls, mask in zip(inst.gt_classes.tolist(), inst.gt_masks):
        assert (sem[mask] == cls).all()  # every target mask agrees with the class map
    if task != "instance" and len(inst):
        covered = inst.gt_masks.any(0)
        assert torch.equal(covered, valid)  # semantic / panoptic targets cover exactly the labelled pixels
        if task == "semantic":
            assert len(set(inst.gt_classes.tolist())) == len(inst)  # one mask per class
            assert (inst.gt_masks.sum(0) <= 1).all()
    if len(inst) == 0 and task != "instance":
        assert not valid.any()


@FUZZ
@given(example=panoptic_examples(), crop=crop_settings(), task=st.sampled_from(["semantic", "instance", "panoptic"]))
def test_unified_mapper_outputs_are_consistent(folder, example, crop, task):
    image, pan, segments = example
    mapper = OneFormerUnifiedDatasetMapper(_cfg(crop), is_train=True)
    mapper._sample_task = lambda: task
    out = _map(mapper, _write_panoptic(folder, image, pan, segments))
    if out is None:
        return
    h, w = _check_common(out)
    if crop["pad"] > 0:
        assert h >= crop["pad"] and w >= crop["pad"]
    _check_sem_seg(out, task)
    assert out["task"] == f"The task is {task}"
    if task == "instance":
        assert set(out["instances"].gt_classes.tolist()) <= set(td.THING_IDS)
    non_crowd = {s["id"] for s in segments if not s["iscrowd"]}
    if not (non_crowd & set(np.unique(pan).tolist())):  # nothing to learn from: empty targets, padded text
        assert len(out["instances"]) == 0 and out["text"] == [td.PADDING[task]] * TEXT_LENGTH


@FUZZ
@given(example=panoptic_examples(), size=st.sampled_from([8, 24, 40]), scale=st.sampled_from([(0.5, 1.5), (1, 1)]))
def test_lsj_mapper_outputs_are_consistent(folder, example, size, scale):
    image, pan, segments = example
    cfg = td.mapper_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_unified_lsj"
    cfg.INPUT.IMAGE_SIZE = size
    cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE = scale
    out = _map(COCOUnifiedNewBaselineDatasetMapper(cfg, is_train=True), _write_panoptic(folder, image, pan, segments))
    if out is None:
        return
    assert _check_common(out) == (size, size)
    _check_sem_seg(out, out["task"].rsplit(" ", 1)[-1])


@FUZZ
@given(h=st.integers(1, 20), w=st.integers(1, 20), crop=crop_settings(), seed=st.integers(0, 2**16),
       void_fraction=st.sampled_from([0.0, 0.5, 1.0]))
def test_semantic_mapper_outputs_are_consistent(folder, h, w, crop, seed, void_fraction):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, K, (h, w))
    labels[rng.rand(h, w) < void_fraction] = 255
    n = next(_files)
    img, sem = os.path.join(folder, f"{n}.png"), os.path.join(folder, f"{n}_sem.png")
    Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(img)
    Image.fromarray(labels.astype(np.uint8)).save(sem)
    mapper = OneFormerSemanticDatasetMapper(_cfg(crop, _sem_cfg()), is_train=True)
    out = _map(mapper, {"file_name": img, "height": h, "width": w, "sem_seg_file_name": sem})
    if out is None:
        return
    _check_common(out)
    _check_sem_seg(out, "semantic")


@FUZZ
@given(h=st.integers(1, 20), w=st.integers(1, 20), crop=crop_settings(), seed=st.integers(0, 2**16),
       n=st.integers(0, 4), crowd=st.booleans())
def test_instance_mapper_outputs_are_consistent(folder, h, w, crop, seed, n, crowd):
    rng = np.random.RandomState(seed)
    annotations = []
    for i in range(n):
        y0, x0 = rng.randint(0, h), rng.randint(0, w)
        y1, x1 = rng.randint(y0 + 1, h + 1), rng.randint(x0 + 1, w + 1)
        poly = [float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]
        annotations.append({"category_id": int(rng.randint(0, 2)), "iscrowd": int(crowd and i == 0),
                            "segmentation": [poly]})
    img = os.path.join(folder, f"{next(_files)}.png")
    Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(img)
    mapper = OneFormerInstanceDatasetMapper(_cfg(crop, _ins_cfg()), is_train=True)
    out = _map(mapper, {"file_name": img, "height": h, "width": w, "annotations": annotations})
    if out is None:
        return
    _check_common(out, things=2)
    assert len(out["instances"]) <= n - int(crowd and n > 0)

"""The "oneformer_unified" training mapper (spec §6): targets per task, text list, padding, task sampling, errors."""
import collections

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes
from PIL import Image

from oneformer.data.dataset_mappers import (
    OneFormerUnifiedDatasetMapper,
    build_text_list,
    derive_targets,
    pad_to_size,
    rgb2id,
    sample_task,
    semantic_label_map,
)
from oneformer.data.tokenizer import TASKS
from tests.data.dataset_mappers import tiny_data as td


def _check_targets(out, task, shape=(td.H, td.W), text_length=8):
    exp = td.EXPECTED[task]
    inst = out["instances"]
    assert inst.image_size == shape
    assert inst.gt_classes.dtype == torch.int64
    assert inst.gt_classes.tolist() == exp["classes"]
    masks = inst.gt_masks
    assert masks.dtype == torch.bool and tuple(masks.shape) == (len(exp["classes"]),) + shape
    for got, want in zip(masks.numpy(), exp["masks"]):
        full = np.zeros(shape, dtype=bool)
        full[: td.H, : td.W] = want
        np.testing.assert_array_equal(got, full)
    assert isinstance(inst.gt_bboxes, Boxes)
    np.testing.assert_array_equal(inst.gt_bboxes.tensor.numpy(), np.asarray(exp["boxes"], dtype=np.float32))
    assert out["task"] == f"The task is {task}"
    assert len(out["text"]) == text_length
    assert out["text"] == exp["texts"] + [td.PADDING[task]] * (text_length - len(exp["texts"]))


@pytest.mark.parametrize("task", TASKS)
def test_targets_per_task(tmp_path, monkeypatch, task):
    record = td.write_record(tmp_path)
    out = td.unified_mapper(task=task, monkeypatch=monkeypatch)(record)
    _check_targets(out, task)
    assert out["image"].dtype == torch.uint8 and tuple(out["image"].shape) == (3, td.H, td.W)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), td.image_array())
    assert out["sem_seg"].dtype == torch.int64
    np.testing.assert_array_equal(out["sem_seg"].numpy(), td.expected_sem_seg(task))
    assert out["orig_shape"] == (td.H, td.W)
    assert out["thing_ids"] == td.THING_IDS
    assert out["file_name"] == record["file_name"] and out["image_id"] == record["image_id"]
    assert "instances" not in record and "image" not in record  # the input record is not modified


def test_pure_functions_match_hand_computed_targets():
    ids = td.pan_ids()
    for task in TASKS:
        classes, masks, boxes = derive_targets(ids, td.SEGMENTS_INFO, task, td.THING_IDS, num_classes=5)
        exp = td.EXPECTED[task]
        assert classes.dtype == np.int64 and classes.tolist() == exp["classes"]
        assert masks.dtype == bool
        for got, want in zip(masks, exp["masks"]):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(boxes, np.asarray(exp["boxes"], dtype=np.float32))
    np.testing.assert_array_equal(semantic_label_map(ids, td.SEGMENTS_INFO, 255), td.expected_sem_seg())
    np.testing.assert_array_equal(semantic_label_map(ids, td.SEGMENTS_INFO, 255, td.THING_IDS),
                                  td.expected_sem_seg("instance"))
    np.testing.assert_array_equal(rgb2id(td.id2rgb(ids)), ids)


def test_no_targets_gives_empty_arrays():
    ids = np.zeros((4, 5), dtype=np.int64)
    classes, masks, boxes = derive_targets(ids, td.SEGMENTS_INFO, "panoptic", td.THING_IDS)
    assert classes.shape == (0,) and masks.shape == (0, 4, 5) and boxes.shape == (0, 4)
    assert build_text_list(classes, "panoptic", td.CLASS_NAMES, 3) == ["a panoptic photo"] * 3


def test_text_list_truncation_and_order():
    names = ["a", "b", "c"]
    assert build_text_list([2, 0, 2, 1], "instance", names, 3) == [
        "a photo with a a", "a photo with a b", "a photo with a c"]
    assert build_text_list([2, 2], "semantic", names, 4) == [
        "a photo with a c", "a photo with a c", "a semantic photo", "a semantic photo"]
    with pytest.raises(ValueError, match="class id 3"):
        build_text_list([3], "panoptic", names, 4)
    with pytest.raises(ValueError, match="task"):
        build_text_list([0], "detection", names, 4)


def test_text_length_is_queries_minus_ctx(tmp_path, monkeypatch):
    record = td.write_record(tmp_path)
    out = td.unified_mapper(td.mapper_cfg(num_queries=7, n_ctx=3), "panoptic", monkeypatch)(record)
    # 6 panoptic masks, 4 slots: truncated, class order kept
    assert out["text"] == td.EXPECTED["panoptic"]["texts"][:4]
    with pytest.raises(ValueError, match="N_CTX"):
        OneFormerUnifiedDatasetMapper(td.mapper_cfg(num_queries=4, n_ctx=4), is_train=True)


@pytest.mark.parametrize("task", TASKS)
def test_fixed_size_padding(tmp_path, monkeypatch, task):
    record = td.write_record(tmp_path)
    cfg = td.mapper_cfg()
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    out = td.unified_mapper(cfg, task, monkeypatch)(record)
    image = out["image"]
    assert tuple(image.shape) == (3, 32, 32)
    assert (image[:, td.H:, :] == 128).all() and (image[:, :, td.W:] == 128).all()
    np.testing.assert_array_equal(image[:, : td.H, : td.W].permute(1, 2, 0).numpy(), td.image_array())
    sem = out["sem_seg"].numpy()
    assert sem.shape == (32, 32)
    assert (sem[td.H:, :] == td.IGNORE).all() and (sem[:, td.W:] == td.IGNORE).all()
    np.testing.assert_array_equal(sem[: td.H, : td.W], td.expected_sem_seg(task))
    _check_targets(out, task, shape=(32, 32))  # masks are zero in the padding
    assert out["orig_shape"] == (32, 32)


def test_pad_values_and_larger_side():
    pan = td.pan_ids()
    padded = pad_to_size(pan, (20, 30), 0)
    assert padded.shape == (20, 30) and (padded[16:] == 0).all() and (padded[:, 24:] == 0).all()
    np.testing.assert_array_equal(padded[:16, :24], pan)
    img = pad_to_size(td.image_array(), (20, 20), 128)  # width 24 > 20: kept, never cropped
    assert img.shape == (20, 24, 3) and (img[16:] == 128).all()
    assert pad_to_size(pan, (8, 8), 0) is pan


def test_image_larger_than_pad_size_is_not_cropped(tmp_path, monkeypatch):
    record = td.write_record(tmp_path)
    cfg = td.mapper_cfg()
    cfg.INPUT.SIZE_DIVISIBILITY = 20
    out = td.unified_mapper(cfg, "panoptic", monkeypatch)(record)
    assert tuple(out["image"].shape) == (3, 20, 24)
    assert out["instances"].gt_masks.shape[1:] == (20, 24)


def test_flip_applies_same_geometry_to_panoptic(tmp_path, monkeypatch):
    record = td.write_record(tmp_path)
    base = td.unified_mapper()
    mapper = OneFormerUnifiedDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", class_names=td.CLASS_NAMES,
        thing_ids=td.THING_IDS, ignore_label=255, text_length=8, size_divisibility=-1,
        semantic_prob=base.semantic_prob, instance_prob=base.instance_prob,
    )
    monkeypatch.setattr(mapper, "_sample_task", lambda: "instance")
    out = mapper(record)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), td.image_array()[:, ::-1])
    masks = out["instances"].gt_masks.numpy()
    np.testing.assert_array_equal(masks[0], td.PERSON_1[:, ::-1])
    np.testing.assert_array_equal(masks[1], td.PERSON_2[:, ::-1])
    np.testing.assert_array_equal(out["instances"].gt_bboxes.tensor.numpy(),
                                  np.asarray([[18, 8, 24, 12], [8, 8, 14, 12]], dtype=np.float32))


def test_task_sampling_thresholds():
    assert sample_task(0.0, 0.33, 0.66) == "semantic"
    assert sample_task(0.3299, 0.33, 0.66) == "semantic"
    assert sample_task(0.33, 0.33, 0.66) == "instance"
    assert sample_task(0.66, 0.33, 0.66) == "panoptic"
    assert sample_task(0.5, 0.5, 0.5) == "panoptic"


def test_task_sampling_frequencies():
    cfg = td.mapper_cfg()
    mapper = td.unified_mapper(cfg)
    assert (mapper.semantic_prob, mapper.instance_prob) == (0.33, 0.66)
    n = 6000
    np.random.seed(0)
    counts = collections.Counter(mapper._sample_task() for _ in range(n))
    for task in TASKS:
        assert abs(counts[task] / n - 1 / 3) < 0.03, counts

    cfg.INPUT.TASK_PROB.SEMANTIC = 0.5
    cfg.INPUT.TASK_PROB.INSTANCE = 0.5  # Mapillary base config: instance is never drawn
    mapper = td.unified_mapper(cfg)
    counts = collections.Counter(mapper._sample_task() for _ in range(n))
    assert counts["instance"] == 0
    assert abs(counts["semantic"] / n - 0.5) < 0.03, counts


def test_seeding_numpy_makes_mapping_reproducible(tmp_path):
    record = td.write_record(tmp_path)
    cfg = td.mapper_cfg()
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    mapper = td.unified_mapper(cfg)
    runs = []
    for _ in range(2):
        np.random.seed(123)
        outs = [mapper(record) for _ in range(6)]
        runs.append([(o["task"], o["instances"].gt_masks.numpy().tobytes()) for o in outs])
    assert runs[0] == runs[1]
    assert len({t for t, _ in runs[0]}) > 1


def test_real_augmentation_pipeline(tmp_path):
    """Crop with a category-area limit (from the semantic PNG or derived from the panoptic PNG), colour aug, flip,
    padding: the outputs keep their contracts."""
    cfg = td.mapper_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (16, 24, 32)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (12, 12)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.5
    cfg.INPUT.COLOR_AUG_SSD = True
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.INPUT.SIZE_DIVISIBILITY = 12
    mapper = td.unified_mapper(cfg)
    assert mapper._crop_needs_sem_seg
    np.random.seed(0)
    for with_sem in (True, False):
        record = td.write_record(tmp_path, name=f"img{with_sem}", with_sem_seg=with_sem)
        for _ in range(5):
            out = mapper(record)
            assert tuple(out["image"].shape) == (3, 12, 12) and out["image"].dtype == torch.uint8
            inst = out["instances"]
            assert inst.gt_masks.shape[1:] == (12, 12)
            assert inst.gt_masks.flatten(1).any(1).all()  # empty masks are skipped
            assert len(out["text"]) == 8
            valid = out["sem_seg"] != td.IGNORE
            assert set(out["sem_seg"][valid].tolist()) <= {0, 1, 2, 3}


def test_unknown_png_ids_are_void(tmp_path, monkeypatch):
    record = td.write_record(tmp_path)
    out = td.unified_mapper(task="panoptic", monkeypatch=monkeypatch)(record)
    void = td.pan_ids() == 99
    assert not out["instances"].gt_masks[:, torch.from_numpy(void)].any()
    assert (out["sem_seg"][torch.from_numpy(void)] == td.IGNORE).all()


def test_record_with_annotations_is_refused(tmp_path):
    record = td.write_record(tmp_path)
    record["annotations"] = []
    with pytest.raises(ValueError, match="annotations") as e:
        td.unified_mapper()(record)
    assert "coco_unified_lsj" in str(e.value) and "without instance annotations" in str(e.value)


def test_missing_panoptic_png(tmp_path):
    record = td.write_record(tmp_path)
    missing = str(tmp_path / "nowhere_pan.png")
    with pytest.raises(FileNotFoundError, match="nowhere_pan.png"):
        td.unified_mapper()(dict(record, pan_seg_file_name=missing))
    no_key = {k: v for k, v in record.items() if k != "pan_seg_file_name"}
    with pytest.raises(ValueError, match="pan_seg_file_name"):
        td.unified_mapper()(no_key)


def test_unknown_category_id(tmp_path):
    record = td.write_record(tmp_path)
    record["segments_info"][2] = dict(record["segments_info"][2], category_id=17)
    with pytest.raises(ValueError, match="category_id 17"):
        td.unified_mapper()(record)
    with pytest.raises(ValueError, match="category_id -1"):
        derive_targets(td.pan_ids(), [{"id": 1, "category_id": -1}], "semantic", [], num_classes=5)


def test_segment_id_zero_is_refused():
    with pytest.raises(ValueError, match="void"):
        derive_targets(td.pan_ids(), [{"id": 0, "category_id": 1}], "semantic", [], num_classes=5)


def test_panoptic_png_size_mismatch(tmp_path):
    record = td.write_record(tmp_path)
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(record["pan_seg_file_name"])
    with pytest.raises(ValueError, match="size"):
        td.unified_mapper()(record)


def test_is_training_only():
    with pytest.raises(ValueError, match="oneformer_test"):
        OneFormerUnifiedDatasetMapper(td.mapper_cfg(), is_train=False)

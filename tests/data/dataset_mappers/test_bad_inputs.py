"""Bad input to the dataset mappers: unreadable files name themselves, unusual images are converted, small images
and crops do not crash, malformed panoptic annotations give clear errors or empty targets (which train)."""
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from oneformer.data.dataset_mappers import (
    COCOUnifiedNewBaselineDatasetMapper,
    OneFormerInstanceDatasetMapper,
    OneFormerSemanticDatasetMapper,
    OneFormerTestDatasetMapper,
)
from oneformer.data.tokenizer import TASKS
from oneformer.utils.image_io import ImageReadError
from tests.data.dataset_mappers import tiny_data as td
from tests.data.dataset_mappers.test_semantic_instance_mappers import (
    _ins_cfg,
    _ins_record,
    _labels,
    _sem_cfg,
    _sem_record,
)


def _test_mapper():
    cfg = td.mapper_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 16
    cfg.INPUT.MAX_SIZE_TEST = 1000
    return OneFormerTestDatasetMapper(cfg, False)


def _lsj():
    cfg = td.mapper_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_unified_lsj"
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    return COCOUnifiedNewBaselineDatasetMapper(cfg, is_train=True)


def _records(tmp_path):
    """One valid record per mapper: (name, mapper, record)."""
    (tmp_path / "ins").mkdir()
    (tmp_path / "sem").mkdir()
    return [
        ("oneformer_unified", td.unified_mapper(), td.write_record(tmp_path)),
        ("coco_unified_lsj", _lsj(), td.write_record(tmp_path)),
        ("oneformer_semantic", OneFormerSemanticDatasetMapper(_sem_cfg(), is_train=True),
         _sem_record(tmp_path / "sem", _labels())),
        ("oneformer_instance", OneFormerInstanceDatasetMapper(_ins_cfg(), is_train=True),
         _ins_record(tmp_path / "ins")[0]),
        ("oneformer_test", _test_mapper(), td.write_record(tmp_path)),
    ]


# ---------------------------------------------------------------------------------------------- unreadable images

BROKEN = {
    "zero_byte": (b"", r"the file is empty \(0 bytes\)"),
    "truncated": (None, r"cannot read the image \(OSError: image file is truncated"),
    "not_an_image": (b"this is not an image", r"cannot read the image \(UnidentifiedImageError"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_unreadable_training_images_name_the_file(tmp_path, kind):
    content, message = BROKEN[kind]
    for name, mapper, record in _records(tmp_path):
        bad = tmp_path / f"{name}_{kind}.png"
        if content is None:
            good = open(record["file_name"], "rb").read()
            content_now = good[: len(good) // 2]
        else:
            content_now = content
        bad.write_bytes(content_now)
        with pytest.raises(ImageReadError, match=rf"^Image {bad}: {message}"):
            mapper(dict(record, file_name=str(bad)))


def test_missing_training_image_names_the_file(tmp_path):
    for name, mapper, record in _records(tmp_path):
        missing = str(tmp_path / f"{name}_nowhere.png")
        with pytest.raises(FileNotFoundError, match=f"Image {missing} .*does not exist"):
            mapper(dict(record, file_name=missing))


def test_unreadable_label_pngs_name_the_file_and_record(tmp_path):
    record = td.write_record(tmp_path)
    empty = tmp_path / "empty_pan.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match=rf"Panoptic PNG {empty} \(dataset record {record['file_name']}\): "
                                             r"the file is empty"):
        td.unified_mapper()(dict(record, pan_seg_file_name=str(empty)))
    sem_record = _sem_record(tmp_path, _labels())
    garbage = tmp_path / "garbage_sem.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n nope")
    with pytest.raises(ImageReadError, match=rf"Semantic PNG {garbage} .*cannot read the image"):
        OneFormerSemanticDatasetMapper(_sem_cfg(), is_train=True)(dict(sem_record, sem_seg_file_name=str(garbage)))


# ---------------------------------------------------------------------------------------------- unusual images


def _variants(tmp_path):
    rng = np.random.RandomState(3)
    rgb = td.image_array()
    gray = rng.randint(0, 256, (td.H, td.W), dtype=np.uint8)
    deep = rng.randint(0, 65536, (td.H, td.W)).astype(np.uint16)
    rgba = np.concatenate([rgb, rng.randint(0, 256, (td.H, td.W, 1), dtype=np.uint8)], axis=2)
    out = {}
    for name, array, expected in (
        ("gray", gray, np.repeat(gray[:, :, None], 3, axis=2)),
        ("rgba", rgba, rgb),
        ("16bit", deep, np.repeat((deep >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
    ):
        path = tmp_path / f"{name}.png"
        Image.fromarray(array).save(path)
        out[name] = (str(path), expected)
    return out


@pytest.mark.parametrize("variant", ["gray", "rgba", "16bit"])
def test_grayscale_rgba_and_16bit_images_are_converted(tmp_path, variant):
    path, expected = _variants(tmp_path)[variant]
    for name, mapper, record in _records(tmp_path):
        out = mapper(dict(record, file_name=path))
        image = out["image"]
        assert image.dtype == torch.uint8 and image.shape[0] == 3, name
        if name in ("oneformer_unified", "oneformer_semantic", "oneformer_instance", "oneformer_test"):
            # identity geometry in these configs: the pixels are the converted file's
            np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), expected, err_msg=name)


def test_16bit_image_is_not_saturated(tmp_path):
    """Detectron2's reader clips 16-bit values to 255 (an all-white image); the mappers keep the high byte."""
    path = tmp_path / "mid_gray_16bit.png"
    Image.fromarray(np.full((td.H, td.W), 30000, dtype=np.uint16)).save(path)
    record = td.write_record(tmp_path)
    out = td.unified_mapper()(dict(record, file_name=str(path)))
    assert (out["image"] == 30000 >> 8).all()


# ---------------------------------------------------------------------------------------------- small images, crops


@pytest.mark.parametrize("crop_type,size,area", [("absolute", (64, 64), 1.0), ("absolute", (64, 80), 0.5),
                                                ("absolute_range", (40, 100), 1.0)])
def test_image_smaller_than_the_crop(tmp_path, monkeypatch, crop_type, size, area):
    """Detectron2's RandomCrop clamps absolute crops to the image, so the image is kept whole, then padded to
    INPUT.SIZE_DIVISIBILITY (the shipped configs set it to the crop size)."""
    for pad in (-1, 128):
        cfg = td.mapper_cfg()
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = crop_type
        cfg.INPUT.CROP.SIZE = size
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = area
        cfg.INPUT.SIZE_DIVISIBILITY = pad
        for task in TASKS:
            out = td.unified_mapper(cfg, task, monkeypatch)(td.write_record(tmp_path))
            shape = (td.H, td.W) if pad < 0 else (pad, pad)
            assert tuple(out["image"].shape) == (3,) + shape
            assert out["instances"].gt_masks.shape[1:] == shape
            assert len(out["instances"]) > 0
        cfg.DATASETS.TRAIN = _ins_cfg().DATASETS.TRAIN
        cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 2
        (tmp_path / "ins").mkdir(exist_ok=True)
        out = OneFormerInstanceDatasetMapper(cfg, is_train=True)(_ins_record(tmp_path / "ins")[0])
        assert tuple(out["image"].shape[1:]) == ((td.H, td.W) if pad < 0 else (pad, pad))


def test_crop_that_rounds_to_nothing_is_explained(tmp_path):
    cfg = td.mapper_cfg()
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "relative"
    cfg.INPUT.CROP.SIZE = (0.01, 0.01)
    with pytest.raises(ValueError, match=r"augmentations produced an empty 0×0 image; INPUT.CROP.SIZE is too small"):
        td.unified_mapper(cfg)(td.write_record(tmp_path))


def test_extreme_aspect_ratio_is_explained(tmp_path):
    """A 1×17 image scaled to fit 8×8 at scale 0.5 would be 0 pixels tall: Detectron2/PIL fail deep inside; the
    mapper names the record and the settings (found by the fuzz tests)."""
    img = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 17, 3), dtype=np.uint8)).save(img)
    pan = tmp_path / "strip_pan.png"
    Image.fromarray(np.zeros((1, 17, 3), dtype=np.uint8)).save(pan)
    cfg = td.mapper_cfg()
    cfg.INPUT.IMAGE_SIZE = 8
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 0.5
    record = {"file_name": str(img), "height": 1, "width": 17, "pan_seg_file_name": str(pan), "segments_info": []}
    with pytest.raises(ValueError, match=rf"Dataset record {img}: the augmentations failed on its 1×17 image "
                                         r"\(ValueError: height and width must be > 0\)\. An extreme aspect ratio"):
        COCOUnifiedNewBaselineDatasetMapper(cfg, is_train=True)(record)


# ---------------------------------------------------------------------------------------------- panoptic annotations


def _expect_empty(out, task):
    inst = out["instances"]
    assert len(inst) == 0 and inst.gt_masks.shape == (0, td.H, td.W) and inst.gt_bboxes.tensor.shape == (0, 4)
    assert out["text"] == [td.PADDING[task]] * 8
    assert (out["sem_seg"] == td.IGNORE).all()


@pytest.mark.parametrize("task", TASKS)
def test_images_without_usable_segments_give_empty_targets(tmp_path, monkeypatch, task):
    record = td.write_record(tmp_path)
    mapper = td.unified_mapper(task=task, monkeypatch=monkeypatch)
    no_segments = dict(record, segments_info=[])
    crowd_only = dict(record, segments_info=[dict(s, iscrowd=1) for s in td.SEGMENTS_INFO])
    absent_from_png = dict(record, segments_info=[{"id": 123456, "category_id": 0, "iscrowd": 0},
                                                  {"id": 8, "category_id": 4, "iscrowd": 0}])
    for r in (no_segments, crowd_only, absent_from_png):
        _expect_empty(mapper(r), task)


def test_empty_targets_train(tmp_path, monkeypatch):
    """Decision: an image without any (non-crowd) segment is trained on, not skipped: its queries learn
    "no object" and the losses stay finite (as in the original). Nothing is dropped silently."""
    cfg = td.mapper_cfg(num_queries=10)
    record = td.write_record(tmp_path)
    inputs = []
    for task, segments in (("panoptic", []), ("instance", [dict(s, iscrowd=1) for s in td.SEGMENTS_INFO]),
                           ("semantic", [])):
        inputs.append(td.unified_mapper(cfg, task, monkeypatch)(dict(record, segments_info=segments)))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    losses = model(inputs)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_malformed_segments_info(tmp_path):
    record = td.write_record(tmp_path)
    with pytest.raises(ValueError, match=r"segments_info entry \{'id': 7\} lacks 'id' or 'category_id'"):
        td.unified_mapper()(dict(record, segments_info=[{"id": 7}]))
    with pytest.raises(ValueError, match="has a panoptic PNG but no 'segments_info'"):
        td.unified_mapper()({k: v for k, v in record.items() if k != "segments_info"})


def test_image_size_mismatch_names_the_file(tmp_path):
    record = td.write_record(tmp_path)
    with pytest.raises(Exception, match=rf"Mismatched image shape for image {record['file_name']}"):
        td.unified_mapper()(dict(record, height=td.H + 1))


def test_rgb_semantic_png_is_refused_in_training(tmp_path):
    """A colour (RGB) semantic PNG: its channels are not class ids (was: the unified mapper used channel 0)."""
    cfg = td.mapper_cfg()
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (12, 12)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.5  # the crop reads the semantic PNG
    record = td.write_record(tmp_path)
    labels = np.asarray(Image.open(record["sem_seg_file_name"]))
    coloured = np.stack([labels, labels // 2, labels], axis=-1).astype(np.uint8)
    Image.fromarray(coloured).save(record["sem_seg_file_name"])
    sem_record = _sem_record(tmp_path, _labels())
    Image.fromarray(np.repeat(_labels()[..., None], 3, axis=2).astype(np.uint8)).save(sem_record["sem_seg_file_name"])
    for mapper, rec in ((td.unified_mapper(cfg), record),
                        (OneFormerSemanticDatasetMapper(_sem_cfg(), is_train=True), sem_record)):
        with pytest.raises(ValueError, match=rf"Semantic PNG {rec['sem_seg_file_name']} \(dataset record "
                                             r".*\) has 3 channels; expected a single-channel label image"):
            mapper(rec)

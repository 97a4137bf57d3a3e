"""OneFormerPredictor: batches of arrays/paths/tensors, conversions, validation."""
import numpy as np
import pytest
import torch
from PIL import Image

from oneformer.predictor import ImageReadError, OneFormerPredictor, read_image
from tests.tiny import tiny_cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 50
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    return OneFormerPredictor(cfg, batch_size=2)


def test_batches_of_mixed_inputs(predictor, tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    path = tmp_path / "a.jpg"
    Image.fromarray(arr).save(path)
    chw = torch.as_tensor(arr).permute(2, 0, 1)
    outs = predictor([arr, str(path), chw], task="semantic")
    assert len(outs) == 3 and all(set(o) == {"sem_seg"} for o in outs)
    assert outs[0]["sem_seg"].shape == (5, 64, 96)
    # the same pixels give the same result whichever form they came in (jpeg aside)
    assert torch.allclose(outs[0]["sem_seg"], outs[2]["sem_seg"])
    both = predictor(arr, task="panoptic", all_outputs=True)[0]
    assert set(both) == {"sem_seg", "panoptic_seg", "instances"}


def test_image_conversions(predictor, tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (64, 64), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert predictor.load_image(gray).shape == (64, 64, 3)
    assert np.array_equal(predictor.load_image(rgba), rgba[:, :, :3])
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.dtype == np.uint8 and loaded.shape == (64, 64, 3)
    assert np.array_equal(loaded[:, :, 0], (deep >> 8).astype(np.uint8))


def test_bad_inputs_are_named(predictor, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageReadError, match="bad.png: cannot read the image"):
        predictor([str(bad)])
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        predictor([str(tmp_path / "missing.png")])
    with pytest.raises(ImageReadError, match=r"images\[0\]: expected 1, 3 or 4 channels"):
        predictor([np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(ValueError, match="unknown task"):
        predictor([np.zeros((64, 64, 3), np.uint8)], task="depth")


def test_confidence_threshold(predictor):
    strict = OneFormerPredictor(predictor.cfg, confidence_threshold=1.0)
    arr = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert len(strict(arr, task="instance")[0]["instances"]) == 0
    assert len(predictor(arr, task="instance")[0]["instances"]) > 0
    with pytest.raises(ValueError, match="confidence_threshold"):
        OneFormerPredictor(predictor.cfg, confidence_threshold=2.0)


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("predictor") / "tiny.yaml"
    path.write_text(tiny_cfg().dump())
    return str(path)


def test_explicit_device_in_the_overrides_wins(tiny_yaml, monkeypatch):
    from oneformer.utils.device import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"^no CUDA device \(asked for 'cuda'.*\); use device='cpu'"):
        OneFormerPredictor.from_config_file(tiny_yaml, opts=["MODEL.DEVICE", "cuda"])  # was: silently on CPU
    cfg = tiny_cfg()
    cfg.MODEL.DEVICE = "cuda"  # Detectron2's default
    with pytest.raises(DeviceError, match="no CUDA device"):
        OneFormerPredictor(cfg)  # was: "Found no NVIDIA driver" from build_model
    assert OneFormerPredictor.from_config_file(tiny_yaml).cfg.MODEL.DEVICE == "cpu"  # automatic choice
    # where CUDA exists, an explicit cpu stays cpu (it was replaced by cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    predictor = OneFormerPredictor.from_config_file(tiny_yaml, opts=["MODEL.DEVICE", "cpu"])
    assert predictor.cfg.MODEL.DEVICE == "cpu" and next(predictor.model.parameters()).device.type == "cpu"
    with pytest.raises(DeviceError, match="two devices were asked for: 'cpu' and MODEL.DEVICE 'cuda'"):
        OneFormerPredictor.from_config_file(tiny_yaml, device="cpu", opts=["MODEL.DEVICE", "cuda"])


def test_float_images_in_0_1_are_scaled_and_chw_arrays_refused(predictor):
    arr = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    unit = arr.astype(np.float32) / 255
    assert np.array_equal(predictor.load_image(unit), arr)  # was: rounded to 0/1, a black image
    assert np.array_equal(predictor.load_image(arr.astype(np.float64)), arr)  # floats 0..255 stay as they are
    # one call each: in one batch the two images' rows would sit at different places of the same matrix products,
    # whose kernels may round them differently (seen on an AMD EPYC with oneDNN: 6e-7)
    (a,) = predictor([arr], task="semantic")
    (b,) = predictor([unit], task="semantic")
    assert torch.equal(a["sem_seg"], b["sem_seg"])
    with pytest.raises(ImageReadError, match=r"float image values must lie in \[0, 1\] or \[0, 255\], got -1..2"):
        predictor([unit * 3 - 1])
    with pytest.raises(ImageReadError, match=r"images\[0\]: expected an H×W×C image \(channels last\), got shape "
                                             r"\(3, 64, 96\), which looks like C×H×W: pass "
                                             r"image.transpose\(1, 2, 0\)"):
        predictor([arr.transpose(2, 0, 1)])

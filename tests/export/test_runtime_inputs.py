"""``ExportedOneFormer`` prepares inputs as ``OneFormerPredictor`` does (issue 15, item 6).

A file exported by tools/export_model.py carries the config's test resize (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST): the
runtime resizes a photo-sized image as the predictor does and returns the outputs at the original size, so both
give the same segmentation; arrays of the forms the predictor accepts (grayscale, RGBA, float [0, 1], CHW tensors,
files) work and give the same result as their RGB uint8 equivalent.
"""
import numpy as np
import pytest
import torch
from PIL import Image

from oneformer.export import ExportedOneFormer, export_model
from oneformer.predictor import OneFormerPredictor
from oneformer.utils.image_io import ImageReadError
from tests.tiny import tiny_cfg

TOL = 1e-4


@pytest.fixture(scope="module")
def predictor():
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 96  # small, so that the tiny model runs fast; a 213-pixel side is still resized
    cfg.INPUT.MAX_SIZE_TEST = 400
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.TEST.OVERLAP_THRESHOLD = 0.5
    torch.manual_seed(0)
    p = OneFormerPredictor(cfg)
    with torch.no_grad():
        pred = p.model.sem_seg_head.predictor  # decided classes and masks, as a trained model has
        torch.nn.init.normal_(pred.class_embed.weight, std=3.0)
        pred.class_embed.bias.zero_()
        last = pred.mask_embed.layers[-1]
        torch.nn.init.normal_(last.weight, std=10.0 / last.weight.shape[1] ** 0.5)
    return p


@pytest.fixture(scope="module")
def runtime(predictor, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("runtime") / "model.pt")
    cfg = predictor.cfg
    export_model(predictor.model, path, "torchscript", task="input", dynamic=True,
                 resize=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST))
    return ExportedOneFormer(path)


def _photo(h=213, w=320, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 5, 7, generator=g) * 255
    img = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    return img.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def test_photo_sized_image_gives_the_predictors_result(predictor, runtime):
    image = _photo()
    sem = runtime(image, task="semantic")["sem_seg"]
    ref = predictor(image, task="semantic")[0]["sem_seg"]
    assert sem.shape == ref.shape == (5, 213, 320)
    torch.testing.assert_close(sem, ref, rtol=0, atol=TOL)
    ids, info = runtime(image, task="panoptic")["panoptic_seg"]
    ref_ids, ref_info = predictor(image, task="panoptic")[0]["panoptic_seg"]
    assert ids.shape == ref_ids.shape == (213, 320)
    assert (ids == ref_ids).float().mean() >= 0.999 and len(info) == len(ref_info) > 0
    inst = runtime(image, task="instance")["instances"]
    ref_inst = predictor(image, task="instance")[0]["instances"]
    assert inst.image_size == ref_inst.image_size == (213, 320) and len(inst) == len(ref_inst)
    # without the resize the graph sees the image as it is: another result (what the runtime returned before)
    plain = ExportedOneFormer(runtime.path, resize=False)(image, task="semantic")["sem_seg"]
    assert plain.shape == ref.shape and float((plain - ref).abs().max()) > 1e-3


def test_input_forms_of_the_predictor(runtime, tmp_path):
    rgb = _photo(64, 80, seed=1)
    ref = runtime(rgb, task="semantic")["sem_seg"]
    gray = rgb[:, :, 0]
    same = {
        "CHW tensor": torch.from_numpy(rgb).permute(2, 0, 1),
        "HWC tensor": torch.from_numpy(rgb),
        "RGBA array": np.concatenate([rgb, np.full_like(rgb[:, :, :1], 255)], axis=2),
        "float [0, 1] array": rgb.astype(np.float32) / 255.0,
    }
    for name, image in same.items():
        torch.testing.assert_close(runtime(image, task="semantic")["sem_seg"], ref, rtol=0, atol=TOL, msg=name)
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    torch.testing.assert_close(runtime(str(path), task="semantic")["sem_seg"], ref, rtol=0, atol=TOL)
    gray_ref = runtime(np.repeat(gray[:, :, None], 3, axis=2), task="semantic")["sem_seg"]
    torch.testing.assert_close(runtime(gray, task="semantic")["sem_seg"], gray_ref, rtol=0, atol=TOL)


def test_bad_inputs_name_the_problem(runtime, tmp_path):
    with pytest.raises(ImageReadError, match="expected 1, 3 or 4 channels, got 5"):
        runtime(np.zeros((32, 32, 5), dtype=np.uint8))
    with pytest.raises(ImageReadError, match="expected a file path, numpy array or tensor, got list"):
        runtime([[1, 2], [3, 4]])
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        runtime(str(bad))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ExportedOneFormer(str(tmp_path / "missing.pt2"))


def test_same_instances_as_the_predictor_for_the_same_threshold(predictor, runtime):
    """Issue 27, item 2: the runtime applies the predictor's thresholds (InferenceThresholds): the same instances for
    the same confidence threshold (before, the runtime kept every top-k pair: 41-44 against the predictor's 3, and
    took no threshold)."""
    image = _photo(seed=3)
    everything = predictor(image, task="instance")[0]["instances"]
    assert len(everything) > 1
    middle = float(everything.scores.sort().values[len(everything) // 2])  # keeps about half
    for threshold in (None, middle):
        ours = ExportedOneFormer(runtime.path, confidence_threshold=threshold)(image, task="instance")["instances"]
        pred = OneFormerPredictor(predictor.cfg, confidence_threshold=threshold)
        pred.model.load_state_dict(predictor.model.state_dict())
        ref = pred(image, task="instance")[0]["instances"]
        assert len(ours) == len(ref) > 0
        assert len(ref) < len(everything) if threshold is not None else len(ref) == len(everything)
        assert torch.equal(ours.pred_masks, ref.pred_masks) and torch.equal(ours.pred_classes, ref.pred_classes)
        torch.testing.assert_close(ours.scores, ref.scores, rtol=0, atol=TOL)

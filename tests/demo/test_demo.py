"""demo/demo.py: input forms, output paths, task validation, bad files, saved prediction formats, video."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

from tests.tiny import REPO, tiny_cfg

spec = importlib.util.spec_from_file_location("oneformer_demo", os.path.join(REPO, "demo", "demo.py"))
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0  # random weights: keep every query so outputs are not empty
    cfg.TEST.DETECTIONS_PER_IMAGE = 50  # all (query, class) pairs, so thing classes appear among the instances
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    config = d / "tiny.yaml"
    config.write_text(cfg.dump())
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), str(d)).save("tiny")
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 64, 4), dtype=np.uint8), mode="RGBA").save(images / "b_rgba.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(images / "c_gray.png")
    Image.fromarray(rng.integers(0, 65535, (64, 80), dtype=np.uint16)).save(images / "d_16bit.png")
    (images / "e_corrupt.png").write_bytes(b"this is not an image")
    (images / "f_empty.jpg").write_bytes(b"")
    return {"dir": d, "config": str(config), "weights": str(d / "tiny.pth"), "images": images}


def run(setup, *args):
    return demo.main(["--config-file", setup["config"], "--weights", setup["weights"], "--device", "cpu", *args])


def test_directory_input_skips_bad_files(setup, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(setup, "--input", str(setup["images"]), "--output", str(out), "--task", "all")
    captured = capsys.readouterr()
    assert code == 1  # two inputs failed
    assert "e_corrupt.png: cannot read the image" in captured.err
    assert "f_empty.jpg: the file is empty" in captured.err
    for task in ("panoptic", "semantic", "instance"):
        written = sorted(os.listdir(out / task))
        assert written == ["a.png", "b_rgba.png", "c_gray.png", "d_16bit.png"]
    # one summary line per processed image, naming the three tasks
    lines = [l for l in captured.out.splitlines() if "panoptic:" in l]
    assert len(lines) == 4 and all("semantic:" in l and "instance:" in l for l in lines)
    vis = cv2.imread(str(out / "panoptic" / "b_rgba.png"))
    assert vis.shape == (70, 64, 3)


def test_single_input_to_file_and_glob(setup, tmp_path):
    target = tmp_path / "nested" / "result.png"
    assert run(setup, "--input", str(setup["images"] / "a.png"), "--output", str(target), "--task", "semantic") == 0
    assert target.is_file() and cv2.imread(str(target)).shape == (64, 96, 3)
    target_all = tmp_path / "all.jpg"
    assert run(setup, "--input", str(setup["images"] / "a.png"), "--output", str(target_all), "--task", "all") == 0
    assert sorted(p.name for p in tmp_path.glob("all_*.jpg")) == ["all_instance.jpg", "all_panoptic.jpg",
                                                                 "all_semantic.jpg"]
    out = tmp_path / "globbed"
    assert run(setup, "--input", str(setup["images"] / "[ab]*.png"), "--output", str(out), "--task", "instance") == 0
    assert sorted(os.listdir(out / "instance")) == ["a.png", "b_rgba.png"]


@pytest.mark.parametrize("task", ["Panoptics", "depth"])
def test_task_is_validated(setup, tmp_path, task, capsys):
    assert run(setup, "--input", str(setup["images"] / "a.png"), "--output", str(tmp_path / "x.png"),
               "--task", task) == 2
    assert "--task must be one of" in capsys.readouterr().err


def test_saved_predictions_read_back(setup, tmp_path):
    from panopticapi.utils import rgb2id
    from pycocotools import mask as mask_util

    out = tmp_path / "pred"
    files = [str(setup["images"] / n) for n in ("a.png", "c_gray.png")]
    assert run(setup, "--input", *files, "--output", str(out), "--task", "all", "--save-predictions") == 0
    pan = json.loads((out / "panoptic_predictions.json").read_text())
    assert len(pan["annotations"]) == 2 and pan["categories"]
    for ann in pan["annotations"]:
        ids = rgb2id(np.asarray(Image.open(out / "panoptic_predictions" / ann["file_name"])))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in ann["segments_info"]}
        for s in ann["segments_info"]:
            assert (ids == s["id"]).sum() == s["area"]
    sem = np.asarray(Image.open(out / "semantic_predictions" / "a.png"))
    assert sem.shape == (64, 96) and sem.max() < 5
    inst = json.loads((out / "instance_predictions.json").read_text())
    assert inst, "random tiny model with threshold 0 should predict instances"
    for r in inst:
        m = mask_util.decode(r["segmentation"])
        assert m.shape in ((64, 96), (64, 64))
        assert r["category_id"] in (3, 4) and 0 <= r["score"] <= 1


def test_confidence_threshold_filters(setup, tmp_path):
    out = tmp_path / "thr"
    a = str(setup["images"] / "a.png")
    assert run(setup, "--input", a, "--output", str(out), "--task", "instance", "--save-predictions",
               "--confidence-threshold", "1.0") == 0
    assert json.loads((out / "instance_predictions.json").read_text()) == []


def test_video_input(setup, tmp_path):
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for i in range(3):
        writer.write(np.full((64, 96, 3), 40 * i, dtype=np.uint8))
    writer.release()
    out = str(tmp_path / "out" / "clip_panoptic.mp4")
    assert run(setup, "--video-input", video, "--output", out, "--task", "panoptic") == 0
    cap = cv2.VideoCapture(out)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert run(setup, "--video-input", video, "--output", out, "--task", "all") == 2


def test_exactly_one_source(setup, capsys):
    assert run(setup) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_truncated_file_in_a_directory_is_reported_and_skipped(setup, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = (setup["images"] / "a.png").read_bytes()
    (folder / "1_good.png").write_bytes(good)
    (folder / "2_truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "3_good.png").write_bytes(good)
    out = tmp_path / "out"
    assert run(setup, "--input", str(folder), "--output", str(out), "--task", "semantic") == 1
    err = capsys.readouterr().err
    assert f"skipped: {folder / '2_truncated.png'}: cannot read the image (OSError: image file is truncated" in err
    assert sorted(os.listdir(out / "semantic")) == ["1_good.png", "3_good.png"]


def test_bad_config_key_is_one_line(setup, tmp_path, capsys):
    code = run(setup, "--input", str(setup["images"] / "a.png"), "--output", str(tmp_path / "x.png"),
               "--opts", "MODEL.TEST.OBJECT_MASK_THRESHOLDS", "0.5")
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown config key 'MODEL.TEST.OBJECT_MASK_THRESHOLDS' in the override "
                          "'MODEL.TEST.OBJECT_MASK_THRESHOLDS 0.5'. Did you mean one of: "
                          "'MODEL.TEST.OBJECT_MASK_THRESHOLD'")


def test_unsafe_checkpoint_needs_the_flag(setup, tmp_path, capsys):
    import argparse

    state = torch.load(setup["weights"], weights_only=True)
    state["args"] = argparse.Namespace(lr=0.1)  # a Python object: needs full pickle loading
    weights = str(tmp_path / "with_args.pth")
    torch.save(state, weights)
    args = ["--config-file", setup["config"], "--weights", weights, "--device", "cpu",
            "--input", str(setup["images"] / "a.png"), "--output", str(tmp_path / "x.png"), "--task", "semantic"]
    assert demo.main(args) == 2
    err = capsys.readouterr().err
    assert "with_args.pth: refused to load it with torch's weights-only unpickler" in err
    assert "--allow-unsafe-pickle" in err and not (tmp_path / "x.png").exists()
    assert demo.main(args + ["--allow-unsafe-pickle"]) == 0
    assert (tmp_path / "x.png").is_file()


def test_checkpoint_of_another_model_is_refused(setup, tmp_path, capsys):
    weights = str(tmp_path / "resnet.pth")
    torch.save({"model": {"conv1.weight": torch.zeros(4, 3, 7, 7)}}, weights)
    code = demo.main(["--config-file", setup["config"], "--weights", weights, "--device", "cpu",
                      "--input", str(setup["images"] / "a.png"), "--output", str(tmp_path / "x.png")])
    assert code == 2
    assert "resnet.pth shares no tensor with this model" in capsys.readouterr().err


def test_summary_words_count_correctly():
    from detectron2.structures import Instances

    one = {"panoptic_seg": (None, [{"id": 1, "isthing": True, "category_id": 3}])}
    assert demo.summarize(one, "panoptic", None) == "panoptic: 1 segment (1 thing, 0 stuff)"
    two = {"panoptic_seg": (None, [{"id": i, "isthing": i != 2} for i in (1, 2, 3)])}
    assert demo.summarize(two, "panoptic", None) == "panoptic: 3 segments (2 things, 1 stuff)"
    sem = {"sem_seg": torch.zeros(3, 4, 4)}
    assert demo.summarize(sem, "semantic", None) == "semantic: 1 class (0)"
    inst = Instances((4, 4), scores=torch.zeros(0))
    assert demo.summarize({"instances": inst}, "instance", None) == "instance: 0 instances"
    inst = Instances((4, 4), scores=torch.tensor([0.5]))
    assert demo.summarize({"instances": inst}, "instance", None) == "instance: 1 instance (best score 0.50)"


@pytest.mark.parametrize("how", [["--device", "cuda"], ["--opts", "MODEL.DEVICE", "cuda"]])
def test_cuda_without_a_gpu_is_one_line(setup, tmp_path, capsys, monkeypatch, how):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = demo.main(["--config-file", setup["config"], "--weights", setup["weights"],
                      "--input", str(setup["images"] / "a.png"), "--output", str(tmp_path / "x.png"), *how])
    assert code == 2
    assert capsys.readouterr().err == ("error: no CUDA device (asked for 'cuda'; torch.cuda.is_available() is False); "
                                       "use --device cpu\n")


@pytest.mark.parametrize("extra, opts, message", [
    # was: IndexError
    ([], ["MODEL.WEIGHTS"], "error: Config override 'MODEL.WEIGHTS' has no value in --opts 'MODEL.WEIGHTS'"),
    # was: silently dropped, the run went on
    (["--weights", "W"], ["MODEL.TEST.TASK", "semantic", "MODEL.WEIGHTS"],
     "error: Config override 'MODEL.WEIGHTS' has no value in --opts 'MODEL.TEST.TASK semantic MODEL.WEIGHTS'"),
    # was: "odd number (3): ['MODEL.TEST.TASK', 'MODEL.ALLOW_UNSAFE_PICKLE', 'True']"
    (["--weights", "W", "--allow-unsafe-pickle"], ["MODEL.TEST.TASK"],
     "error: Config override 'MODEL.TEST.TASK' has no value in --opts 'MODEL.TEST.TASK'"),
    (["--weights", "W"], ["MODEL.DEVICE", "cpu", "--task", "all"],
     "error: '--task' is among --opts 'MODEL.DEVICE cpu --task all', where it would be read as a config key: "
     "write it before --opts"),
    (["--weights", "W"], ["MODEL.WEIGHTS", "other.pth"],
     "error: two checkpoints were given: --weights W and MODEL.WEIGHTS other.pth in --opts; give one of them"),
])
def test_overrides_that_are_not_pairs_are_one_line(setup, tmp_path, capsys, extra, opts, message):
    extra = [setup["weights"] if a == "W" else a for a in extra]
    message = message.replace("--weights W", f"--weights {setup['weights']}")
    code = demo.main(["--config-file", setup["config"], "--device", "cpu", "--input", str(setup["images"] / "a.png"),
                      "--output", str(tmp_path / "x.png"), *extra, "--opts", *opts])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()


def test_weights_from_the_overrides(setup, tmp_path):
    assert demo.main(["--config-file", setup["config"], "--device", "cpu", "--input", str(setup["images"] / "a.png"),
                      "--output", str(tmp_path / "x.png"), "--opts", "MODEL.WEIGHTS", setup["weights"]]) == 0


def test_default_checkpoint_offline_is_one_line(setup, tmp_path, capsys, monkeypatch):
    """A config whose released checkpoint (the default weights) cannot be downloaded."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    url = "http://127.0.0.1:9/projects/oneformer/ade20k/released.pth"
    monkeypatch.setattr(demo.model_zoo, "default_weights", lambda config_file: url)
    code = demo.main(["--config-file", setup["config"], "--device", "cpu", "--input", str(setup["images"] / "a.png"),
                      "--output", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot download the checkpoint {url} (URLError:")
    assert str(tmp_path / "cache" / "projects/oneformer/ade20k/released.pth") in last and "--weights PATH" in last


def test_directory_inputs_are_reported(setup, tmp_path, capsys):
    """GIFs are read (were skipped without a word), other files are named, same-name inputs get a notice."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    Image.open(setup["images"] / "a.png").save(folder / "anim.gif")
    (folder / "a.png").write_bytes((setup["images"] / "a.png").read_bytes())
    (folder / "more" / "a.png").write_bytes((setup["images"] / "c_gray.png").read_bytes())
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert run(setup, "--input", str(folder), str(folder / "more"), "--output", str(out), "--task", "semantic") == 0
    err = capsys.readouterr().err
    assert sorted(os.listdir(out / "semantic")) == ["a.png", "a_1.png", "anim.png"]
    assert "skipped 1 file(s) that are not images by their extension (.jpg/" in err
    assert str(folder / "notes.txt") in err
    assert f"note: {folder / 'more' / 'a.png'} is written as a_1.png (an earlier input is also named a)" in err


@pytest.mark.parametrize("task", ["semantic", "all"])
def test_output_file_with_several_inputs_is_refused(setup, tmp_path, capsys, task):
    target = tmp_path / "x.png"
    code = run(setup, "--input", str(setup["images"] / "a.png"), str(setup["images"] / "c_gray.png"),
               "--output", str(target), "--task", task)
    assert code == 2 and not target.exists()  # was: a directory named x.png
    assert capsys.readouterr().err == (f"error: --output {target} names an image file, but there are 2 inputs: give a "
                                       "directory (it gets one sub-folder per task)\n")


def test_help_says_output_is_required_for_images():
    text = " ".join(demo.get_parser().format_help().split())
    assert "with --input (required): a file for one input, else a directory" in text
    assert "with --video-input or --webcam: a .mp4 file (default: show a window)" in text


def test_sliding_window_flag_runs_windows_at_full_resolution(setup, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (96, 160, 3), dtype=np.uint8)).save(big)
    out = tmp_path / "slid.png"
    seen = []
    real = demo.OneFormerPredictor.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("sliding_window"))
        real(self, *args, **kwargs)

    demo.OneFormerPredictor.__init__ = spy
    try:
        assert run(setup, "--input", str(big), "--output", str(out), "--task", "panoptic", "--sliding-window",
                   "--opts", "MODEL.TEST.SLIDING_WINDOW.SIZE", "64") == 0  # an int: a square
    finally:
        demo.OneFormerPredictor.__init__ = real
    assert seen == [True] and cv2.imread(str(out)).shape == (96, 160, 3)


def test_pixel_cap_skips_large_images_in_one_line(setup, tmp_path, capsys):
    """Issue 27, item 3: an image above --max-pixels is reported and skipped before it is decoded (its header gives
    the size), the others are segmented (before: no cap; a 144-megapixel PNG peaked at 18.9 GB)."""
    out = tmp_path / "out"
    code = run(setup, "--input", str(setup["images"] / "a.png"), str(setup["images"] / "c_gray.png"),
               "--output", str(out), "--max-pixels", "5000")
    err = capsys.readouterr().err
    assert code == 1
    assert (f"skipped: {setup['images'] / 'a.png'}: 96×64 pixels (0.0 MP) is more than the pixel cap (5,000): the "
            "outputs come at full resolution") in err
    assert "--max-pixels" in err and "--sliding-window" in err
    assert os.listdir(out / "panoptic") == ["c_gray.png"]  # 64x64 = 4096 pixels: under the cap


def test_predictor_pixel_cap_on_arrays(setup):
    from oneformer.predictor import ImageTooLargeError, OneFormerPredictor

    p = OneFormerPredictor.from_config_file(setup["config"], weights=setup["weights"], device="cpu", max_pixels=4096)
    assert len(p(np.zeros((64, 64, 3), np.uint8))) == 1
    with pytest.raises(ImageTooLargeError, match=r"^images\[1\]: 65×64 pixels"):
        p([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 65, 3), np.uint8)])


@pytest.mark.parametrize("task", ["panoptic", "semantic", "instance"])
def test_large_results_are_drawn_downscaled(setup, task):
    """The drawing of a large result is made at most DRAW_MAX_PIXELS (here 4096) from labels shrunk by nearest
    neighbour, not over the full-size image."""
    from oneformer.predictor import OneFormerPredictor

    sys_path = os.path.join(REPO, "demo")
    import sys

    sys.path.insert(0, sys_path)
    try:
        from visualizer import draw
    finally:
        sys.path.remove(sys_path)
    p = OneFormerPredictor.from_config_file(setup["config"], weights=setup["weights"], device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    result = p(image, task=task)[0]
    full = draw(image, result, task, p.metadata)
    small = draw(image, result, task, p.metadata, max_pixels=4096)
    assert full.shape == (200, 300, 3)
    assert small.shape[0] * small.shape[1] <= 4096 and abs(small.shape[1] / small.shape[0] - 1.5) < 0.05


def test_compile_says_when_it_compiles(setup, tmp_path, capsys, monkeypatch):
    """--compile: a line on stderr when the network starts compiling and one when it is done (logging is not set up
    in the demo: no handler anywhere)."""
    import logging

    monkeypatch.setattr(logging.root, "handlers", [])
    out = tmp_path / "a.png"
    assert run(setup, "--input", str(setup["images"] / "a.png"), "--output", str(out), "--compile",
               "--opts", "MODEL.COMPILE_BACKEND", "eager") == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "compil" in line]
    assert len(err) == 2, err
    assert err[0].startswith("compiling the network (torch.compile, backend 'eager') for a new input size")
    assert "the first image of each size takes" in err[0] and err[1].startswith("compiled the network in ")

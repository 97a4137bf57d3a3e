"""Export to ONNX / TorchScript (oneformer.export, tools/export_model.py) and the runtime wrapper, on the tiny config.

For each format and task mode (fixed semantic / instance / panoptic, and the task as an input), with and without
dynamic shapes and in-graph post-processing: the exported class and mask logits equal the eager model's (1e-4,
float32) at two image sizes (dynamic) or the export size (static), and ``ExportedOneFormer`` returns the eager
model's Detectron2 outputs (sem_seg close, panoptic ids on >= 99.9% of the pixels, as many instances).
"""
import importlib.util
import os
import warnings

import pytest
import torch
from detectron2.modeling import build_model

from oneformer.export import (ExportedOneFormer, OneFormerExportModule, export_model, output_names,
                              read_metadata)
from oneformer.export.graph import panoptic_postprocess
from oneformer.modeling.inference import panoptic_inference
from oneformer.ops import ms_deform_attn, ms_deform_attn_pytorch
from oneformer.ops.reference import ms_deform_attn_pytorch_levels
from tests.tiny import REPO, THING_IDS, tiny_cfg

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = 1e-4
SIZES = [(64, 64), (96, 64)]  # (H, W); GroupNorm at 1/32 needs >= 2x2 maps
EXTRA_SIZE = (72, 90)  # not a multiple of 32: padding in the graph, cropping in the post-processing


def _blobs(h, w, seed=1):
    """A smooth RGB uint8 image (3, H, W): colour blobs, so the features have spatial structure."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 4, 4, generator=g) * 255
    img = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return img[0].clamp(0, 255).to(torch.uint8)


def _cfg():
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0  # keep queries so that panoptic / instance results are not empty
    cfg.MODEL.TEST.OVERLAP_THRESHOLD = 0.5
    return cfg


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model gains nothing from more, and a CPU shared with other jobs makes the
    TorchScript interpreter's thread pool stall (seconds per call) when its threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(_cfg()).eval()
    with torch.no_grad():
        # random weights give near-uniform classes and flat masks: make classes and masks decided, as trained ones are
        pred = m.sem_seg_head.predictor
        torch.nn.init.normal_(pred.class_embed.weight, std=3.0)
        pred.class_embed.bias.zero_()
        last = pred.mask_embed.layers[-1]
        torch.nn.init.normal_(last.weight, std=10.0 / last.weight.shape[1] ** 0.5)  # mask logits up to ~30
    return m


_EAGER = {}


def _eager(model, size, task):
    """(class logits, mask logits, Detectron2 outputs) of the eager model on ``_blobs(*size)`` (cached)."""
    key = (id(model), size, task)
    if key not in _EAGER:
        captured = {}
        hook = model.sem_seg_head.register_forward_hook(lambda mod, args, out: captured.update(out))
        try:
            with torch.no_grad():
                ref = model([{"image": _blobs(*size), "task": task}])[0]
        finally:
            hook.remove()
        _EAGER[key] = (captured["pred_logits"], captured["pred_masks"], ref)
    return _EAGER[key]


def _check(runtime, model, size, task, image_kind="tensor"):
    """The graph's logits and the runtime's Detectron2 outputs against the eager model's; returns the raw outputs."""
    image = _blobs(*size)
    cls, masks, ref = _eager(model, size, task)
    if image_kind == "array":  # the runtime end to end, from an RGB (H, W, 3) array
        got = runtime(image.permute(1, 2, 0).numpy(), task=task)
        outs = None
    else:
        ids = runtime.task_ids(task)[None] if runtime.task == "input" else None
        outs = runtime.run(image[None], ids)
        assert outs["pred_logits"].shape == cls.shape and outs["pred_masks"].shape == masks.shape
        torch.testing.assert_close(outs["pred_logits"], cls, rtol=0, atol=TOL)
        torch.testing.assert_close(outs["pred_masks"], masks, rtol=0, atol=TOL)
        got = runtime.postprocess_outputs({k: v[0] for k, v in outs.items()}, size, task)
    assert set(got) == set(ref)
    torch.testing.assert_close(got["sem_seg"], ref["sem_seg"], rtol=0, atol=TOL)
    ids, info = got["panoptic_seg"]
    ref_ids, ref_info = ref["panoptic_seg"]
    assert ids.shape == ref_ids.shape and ids.dtype == ref_ids.dtype == torch.int32
    assert (ids == ref_ids).float().mean() >= 0.999
    assert set(ids.unique().tolist()) - {0} == {s["id"] for s in info}
    assert len(got["instances"]) == len(ref["instances"])
    assert got["instances"].image_size == ref["instances"].image_size
    if outs is not None and "sem_seg" in outs:  # in-graph semantic post-processing
        torch.testing.assert_close(outs["sem_seg"][0], ref["sem_seg"], rtol=0, atol=TOL)
        assert torch.equal(outs["sem_seg_classes"][0], outs["sem_seg"][0].argmax(0))
    if outs is not None and "panoptic_seg" in outs:  # in-graph panoptic post-processing
        assert outs["panoptic_seg"].shape == (1,) + tuple(size) and outs["panoptic_seg"].dtype == torch.int32
        assert int(outs["num_segments"][0]) == len(info)
    return outs


# format, task mode, in-graph post-processing, dynamic shapes
CASES = [
    ("onnx-torchscript", "semantic", "semantic", False),
    ("onnx-torchscript", "instance", "none", False),
    ("onnx-torchscript", "panoptic", "panoptic", True),
    ("onnx-torchscript", "input", "none", True),
    ("torchscript", "semantic", "none", True),
    ("torchscript", "instance", "none", False),
    ("torchscript", "panoptic", "panoptic", False),
    ("torchscript", "input", "semantic", True),
]


@pytest.mark.parametrize("fmt,task,postprocess,dynamic", CASES,
                         ids=[f"{f}-{t}-{p}-{'dynamic' if d else 'static'}" for f, t, p, d in CASES])
def test_export_matches_eager(model, tmp_path, fmt, task, postprocess, dynamic):
    path = str(tmp_path / ("model.onnx" if fmt == "onnx-torchscript" else "model.pt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = export_model(model, path, fmt, task=task, postprocess=postprocess, dynamic=dynamic,
                            height=SIZES[0][0], width=SIZES[0][1])
    # nothing in the model turned a size into a constant of the trace
    assert not [str(w.message) for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    assert read_metadata(path) == meta
    assert meta["outputs"] == list(output_names(postprocess)) and meta["task"] == task
    if fmt == "onnx-torchscript":
        assert meta["opset"] >= 17
    runtime = ExportedOneFormer(path, num_threads=1)
    tasks = ("semantic", "instance", "panoptic") if task == "input" else (task,)
    for t in tasks:  # at the export size
        _check(runtime, model, SIZES[0], t)
    if dynamic:
        # other sizes (one not a multiple of 32 with in-graph post-processing: padding and cropping in the graph)
        others = SIZES[1:] + ([EXTRA_SIZE] if postprocess != "none" else [])
        for i, size in enumerate(others):
            _check(runtime, model, size, tasks[(i + 1) % len(tasks)])
    _check(runtime, model, SIZES[0], tasks[-1], image_kind="array")
    if task == "input":
        # a batch of two with different tasks gives each image its own task's outputs
        image = _blobs(*SIZES[0])
        outs = runtime.run(torch.stack([image, image]), torch.stack([runtime.task_ids(t) for t in tasks[:2]]))
        for b, t in enumerate(tasks[:2]):
            torch.testing.assert_close(outs["pred_logits"][b], _eager(model, SIZES[0], t)[0][0], rtol=0, atol=TOL)
        assert not torch.allclose(outs["pred_logits"][0], outs["pred_logits"][1])
    else:
        with pytest.raises(ValueError, match="exported for task"):
            runtime(_blobs(*SIZES[0]), task=next(t for t in ("semantic", "panoptic") if t != task))
    if not dynamic:
        with pytest.raises(ValueError, match="exported for images of 64x64 pixels, got"):
            runtime(_blobs(*SIZES[1]), task=tasks[0])


def test_cli_exports_checkpoint_and_verifies(model, tmp_path, capsys):
    """tools/export_model.py: a config file + KEY VALUE overrides, MODEL.WEIGHTS loaded, --verify."""
    spec = importlib.util.spec_from_file_location("export_model", os.path.join(REPO, "tools", "export_model.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cfg_path, weights, out = tmp_path / "tiny.yaml", tmp_path / "model.pth", tmp_path / "out" / "m.pt"
    cfg_path.write_text(_cfg().dump())
    torch.save({"model": model.state_dict()}, weights)
    # a 64x64 canvas holds what a test resize to at most 64 pixels a side makes of a photo (48x64)
    small = ["INPUT.MIN_SIZE_TEST", "48", "INPUT.MAX_SIZE_TEST", "64"]
    meta = cli.main(["--config-file", str(cfg_path), "--format", "torchscript", "--task", "input", "--height", "64",
                     "--width", "64", "--output", str(out), "--verify", "MODEL.WEIGHTS", str(weights), *small])
    printed = capsys.readouterr().out
    assert not meta["dynamic"] and meta["task"] == "input" and meta["thing_ids"] == list(THING_IDS)
    assert meta["input_format"] == "RGB" and meta["format"] == "torchscript"
    diff = float(printed.strip().split()[-1])
    assert diff <= TOL, printed
    _check(ExportedOneFormer(str(out)), model, SIZES[0], "instance")
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS"):
        cli.main(["--config-file", str(cfg_path), "--height", "64", "--width", "64", "--output", str(out),
                  "MODEL.WEIGHTS", str(tmp_path / "missing.pth"), *small])


# ---------------------------------------------------------------------------------------------------------------
# the tensor-op pieces on their own


def _random_panoptic_case(seed, b=2, n=12, k=6, h=9, w=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, k + 1, generator=g) * 4
    masks = torch.randn(b, n, h, w, generator=g) * 3
    return logits, masks


PANOPTIC_SETTINGS = [(0.0, 0.8), (0.3, 0.0), (0.8, 0.5)]  # (object_mask_threshold, overlap_threshold)


def _compare_panoptic(outputs, logits, masks, things, thr, overlap):
    pan, category, isthing, num = (torch.as_tensor(o) for o in outputs)
    stats = [0, 0]
    for b in range(logits.shape[0]):
        ref, info = panoptic_inference(logits[b], masks[b], lambda x: x, things, thr, overlap)
        assert torch.equal(pan[b], ref)
        assert int(num[b]) == len(info)
        assert [{"id": i + 1, "isthing": bool(isthing[b, i]), "category_id": int(category[b, i])}
                for i in range(len(info))] == info
        assert (category[b, len(info):] == -1).all() and not isthing[b, len(info):].any()
        stats[0] += len(info)
        stats[1] += sum(not s["isthing"] for s in info)
    return stats


def test_panoptic_postprocess_equals_eager_rule():
    k, things = 6, [3, 4]
    is_thing = torch.zeros(k + 1, dtype=torch.bool)
    is_thing[things] = True
    segments = stuff = 0
    for seed in range(60):
        logits, masks = _random_panoptic_case(seed, k=k)
        thr, overlap = PANOPTIC_SETTINGS[seed % 3]
        s, st = _compare_panoptic(panoptic_postprocess(logits, masks, is_thing, thr, overlap), logits, masks,
                                  things, thr, overlap)
        segments, stuff = segments + s, stuff + st
    assert segments > 100 and stuff > 30

    # two confident queries of stuff class 0 merge into segment 1; thing queries (class 3) get their own segments
    logits = torch.full((1, 5, k + 1), -10.0)
    for q, c in enumerate([0, 3, 0, 3, k]):  # the last query predicts no-object
        logits[0, q, c] = 10.0
    masks = torch.full((1, 5, 4, 4), -10.0)
    masks[0, 0, :2, :2] = masks[0, 1, :2, 2:] = masks[0, 2, 2:, :2] = masks[0, 3, 2:, 2:] = 10.0
    masks[0, 4] = 20.0
    pan, category, isthing, num = panoptic_postprocess(logits, masks, is_thing, 0.8, 0.8)
    assert torch.equal(pan[0], torch.tensor([[1, 1, 2, 2]] * 2 + [[1, 1, 3, 3]] * 2, dtype=torch.int32))
    assert category[0].tolist() == [0, 3, 3, -1, -1] and isthing[0].tolist() == [False, True, True, False, False]
    assert int(num[0]) == 3
    _compare_panoptic((pan, category, isthing, num), logits, masks, things, 0.8, 0.8)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_panoptic_postprocess_exported(tmp_path, fmt):
    """The in-graph panoptic rule in onnxruntime / TorchScript at another size than traced (exact ids)."""
    k, things = 6, [3, 4]
    is_thing = torch.zeros(k + 1, dtype=torch.bool)
    is_thing[things] = True

    class Panoptic(torch.nn.Module):
        def forward(self, logits, masks):
            return panoptic_postprocess(logits, masks, is_thing, 0.3, 0.5)

    example = _random_panoptic_case(0)
    path = str(tmp_path / "p")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            names = ["panoptic_seg", "segments_category", "segments_isthing", "num_segments"]
            torch.onnx.export(Panoptic(), example, path, dynamo=False, opset_version=17,
                              input_names=["logits", "masks"], output_names=names,
                              dynamic_axes={"logits": {0: "b", 1: "n"}, "masks": {0: "b", 1: "n", 2: "h", 3: "w"}})
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            run = lambda a, b: session.run(None, {"logits": a.numpy(), "masks": b.numpy()})  # noqa: E731
        else:
            traced = torch.jit.trace(Panoptic(), example, check_trace=False)
            run = traced
    segments = 0
    for seed in range(1, 13):
        logits, masks = _random_panoptic_case(seed, b=1 + seed % 2, n=10 + seed % 5, h=7 + seed, w=13)
        segments += _compare_panoptic(run(logits, masks), logits, masks, things, 0.3, 0.5)[0]
    assert segments > 10


def test_deformable_attention_traces_with_dynamic_level_sizes():
    """Traced once, ms_deform_attn follows other level sizes (the reference on traced sizes); the per-level form
    equals the flattened one exactly."""
    def inputs(shapes, seed):
        g = torch.Generator().manual_seed(seed)
        ss = torch.tensor(shapes)
        value = torch.randn(2, int(ss.prod(1).sum()), 2, 4, generator=g)
        loc = torch.rand(2, 5, 2, len(shapes), 3, 2, generator=g) * 1.2 - 0.1
        w = torch.rand(2, 5, 2, len(shapes), 3, generator=g)
        maps = [torch.empty(1, 1, h, w_) for h, w_ in shapes]
        return (value, loc, w, *maps), ss

    class Op(torch.nn.Module):
        def forward(self, value, loc, w, map0, map1):  # level sizes from the maps in the graph, as the pixel decoder
            shapes = torch.stack([torch._shape_as_tensor(m)[-2:] for m in (map0, map1)])
            start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
            return ms_deform_attn(value, shapes, start, loc, w)

    example, _ = inputs([(6, 5), (3, 3)], 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(Op(), example, check_trace=False)
    assert not [w for w in caught if issubclass(w.category, torch.jit.TracerWarning)]
    args, ss = inputs([(8, 4), (4, 2)], 1)
    value, loc, w = args[:3]
    torch.testing.assert_close(traced(*args), ms_deform_attn_pytorch(value, ss, loc, w), rtol=0, atol=1e-6)
    n, _, m, d = value.shape
    maps = [v.flatten(2).transpose(1, 2).reshape(n * m, d, h, w_)
            for v, (h, w_) in zip(value.split(ss.prod(1).tolist(), 1), ss.tolist())]
    assert torch.equal(ms_deform_attn_pytorch_levels(maps, loc, w), ms_deform_attn_pytorch(value, ss, loc, w))


def test_export_module_in_eager_mode_equals_model(model):
    """OneFormerExportModule called eagerly (padding in the graph, semantic post-processing) matches the model."""
    image = _blobs(*EXTRA_SIZE)
    wrapper = OneFormerExportModule(model, task="semantic", postprocess="semantic").eval()
    with torch.no_grad():
        outs = wrapper.named_outputs(image[None])
        ref = model([{"image": image, "task": "semantic"}])[0]
    with torch.no_grad():
        inputs = [{"image": image, "task": "semantic"}]
        eager = model.sem_seg_head(model.backbone(model.preprocess_image(inputs).tensor), model.encode_tasks(inputs))
    cls, masks = eager["pred_logits"], eager["pred_masks"]
    assert torch.equal(outs["pred_logits"], cls) and torch.equal(outs["pred_masks"], masks)
    torch.testing.assert_close(outs["sem_seg"][0], ref["sem_seg"], rtol=0, atol=1e-6)
    assert torch.equal(outs["sem_seg_classes"], outs["sem_seg"].argmax(1))


def test_panoptic_rule_travels_with_the_export(model, tmp_path):
    """MODEL.TEST.PANOPTIC_RULE "transformers": the runtime applies it (from the metadata) and matches the eager
    model; in-graph panoptic post-processing, which implements the original rule only, refuses it."""
    import copy

    confident = copy.deepcopy(model)
    confident.panoptic_rule = "transformers"
    with torch.no_grad():  # a confident thing class, so that transformers' rule keeps segments
        confident.sem_seg_head.predictor.class_embed.bias[THING_IDS[0]] += 10
    with pytest.raises(ValueError, match="original rule only"):
        OneFormerExportModule(confident, task="panoptic", postprocess="panoptic", thing_ids=THING_IDS)
    path = str(tmp_path / "model.pt")
    meta = export_model(confident, path, "torchscript", task="panoptic", postprocess="none",
                        height=SIZES[0][0], width=SIZES[0][1])
    assert meta["panoptic_rule"] == "transformers"
    _check(ExportedOneFormer(path, num_threads=1), confident, SIZES[0], "panoptic")
    with torch.no_grad():
        segments = confident([{"image": _blobs(*SIZES[0]), "task": "panoptic"}])[0]["panoptic_seg"][1]
    assert segments  # the comparison above was not between two empty segmentations

"""MODEL.COMPILE (oneformer/modeling/compile.py): the network under torch.compile, on the tiny config.

Inference is one graph (fullgraph=True: a graph break raises) whose outputs equal the eager network's (1e-4) and
that serves a range of image sizes without recompiling; inductor, the default backend, gives the eager numbers; the
predictor's ``compile=True`` gives the eager predictor's results; a training step gives the eager losses.
"""
import re

import pytest
import torch
from detectron2.modeling import build_model
from torch._dynamo.utils import counters

from oneformer.modeling.compile import CompiledNetwork
from oneformer.predictor import OneFormerPredictor
from tests.test_oneformer_model import _training_inputs
from tests.tiny import tiny_cfg

TOL = 1e-4


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _model(backend, is_train=False, compile=True, freeze=False):
    cfg = tiny_cfg(is_train=is_train)
    cfg.MODEL.COMPILE = compile
    cfg.MODEL.COMPILE_FREEZE = freeze
    cfg.MODEL.COMPILE_BACKEND = backend
    cfg.MODEL.ONE_FORMER.DROPOUT = 0.0  # the compiled and the eager graph draw dropout masks differently
    torch.manual_seed(0)
    return build_model(cfg)


def _network_inputs(model, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    batched = [{"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "task": "panoptic"}]
    return model.preprocess_image(batched).tensor, model.encode_tasks(batched)


def _compile_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "oneformer.modeling.compile"]


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in ("pred_logits", "pred_masks"))


def test_one_graph_for_a_range_of_sizes():
    model = _model("eager").eval()
    # all in one bucket: the compiler's fake convolution picks a layout by size (a guard at (H/32)(W/32) = 80
    # for the tiny model's widest 1/32 map), and the last Swin stage has more than one window
    sizes = [(320, 320), (352, 384), (384, 320), (320, 448), (416, 352)]
    with torch.no_grad():
        for h, w in sizes:
            images, tasks = _network_inputs(model, h, w)
            out = model.network(images, tasks)
            assert out["pred_masks"].shape[-2:] == (h // 4, w // 4)
            assert _max_diff(out, model._network(images, tasks)) < TOL, (h, w)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_small_and_odd_sizes_compile_and_match():
    """Sizes below the range above get their own size buckets (one window in the last Swin stage; a kernel
    heuristic of the compiler); padded sizes that are not multiples of 32 get static graphs. All match eager."""
    model = _model("eager").eval()
    model.size_divisibility = 0  # no padding: 72x90 reaches the network as it is
    with torch.no_grad():
        for h, w in [(64, 64), (96, 64), (72, 90)]:
            images, tasks = _network_inputs(model, h, w)
            assert _max_diff(model.network(images, tasks), model._network(images, tasks)) < TOL, (h, w)


@pytest.mark.parametrize("freeze", [False, True])
def test_inductor_matches_eager_end_to_end(freeze):
    """The default backend (inductor) on CPU, through the whole model call: same panoptic segmentation; one graph for
    two sizes, or with frozen weights (MODEL.COMPILE_FREEZE: packed CPU linears) one static graph per size."""
    model = _model("inductor", freeze=freeze).eval()
    eager = _model("inductor", compile=False).eval()
    eager.load_state_dict(model.state_dict())  # before the first call: a frozen graph takes these weights
    for seed, (h, w) in enumerate([(96, 128), (128, 96)]):
        image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
        batched = [{"image": image, "task": "panoptic", "outputs": ["panoptic_seg"]}]
        with torch.no_grad():
            images, tasks = eager.preprocess_image(batched).tensor, eager.encode_tasks(batched)
            assert _max_diff(model.network(images, tasks), eager.network(images, tasks)) < TOL
            ids, info = model(batched)[0]["panoptic_seg"]
            ref_ids, ref_info = eager(batched)[0]["panoptic_seg"]
        assert torch.equal(ids, ref_ids) and info == ref_info
    assert counters["stats"]["unique_graphs"] == (2 if freeze else 1)


def test_frozen_weights_must_not_change():
    """MODEL.COMPILE_FREEZE: a call after the weights changed raises instead of using the frozen ones."""
    model = _model("eager", freeze=True).eval()
    images, tasks = _network_inputs(model, 64, 64)
    with torch.no_grad():
        model.network(images, tasks)
        model.network(images, tasks)  # unchanged weights: fine
        model.sem_seg_head.predictor.class_embed.bias.add_(1.0)
        with pytest.raises(RuntimeError, match="weights changed after torch.compile froze them"):
            model.network(images, tasks)


def test_training_step_gives_the_eager_losses():
    compiled = _model("aot_eager", is_train=True).train()
    eager = _model("aot_eager", is_train=True, compile=False).train()
    eager.load_state_dict(compiled.state_dict())
    inputs = _training_inputs()
    losses = {}
    for name, model in (("compiled", compiled), ("eager", eager)):
        torch.manual_seed(5)  # the criterion samples points
        losses[name] = model(inputs)
        sum(losses[name].values()).backward()
    assert set(losses["compiled"]) == set(losses["eager"])
    for k, v in losses["eager"].items():
        assert abs(float(losses["compiled"][k].detach()) - float(v.detach())) < TOL, k
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
        if q.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-4, rtol=1e-3), name
    assert counters["stats"]["unique_graphs"] >= 1  # it did go through torch.compile


def test_predictor_compile_flag(tmp_path, caplog):
    """The predictor's compile=True: the eager predictor's result; a line when the graph compiles and one when it is
    done, none at the next call."""
    cfg = tiny_cfg()
    cfg.MODEL.COMPILE_BACKEND = "eager"
    torch.manual_seed(0)
    plain = OneFormerPredictor(cfg)
    compiled = OneFormerPredictor(cfg, compile=True)
    compiled.model.load_state_dict(plain.model.state_dict())
    assert compiled.cfg.MODEL.COMPILE and compiled.model.compiled is not None and plain.model.compiled is None
    image = torch.randint(0, 256, (90, 120, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with caplog.at_level("INFO", logger="oneformer.modeling.compile"):
        out = compiled(image.numpy(), task="semantic")[0]["sem_seg"]
        lines = _compile_lines(caplog)
        assert len(lines) == 2 and lines[0].startswith("compiling the network (torch.compile, backend 'eager')")
        assert lines[1].startswith("compiled the network in"), lines
        caplog.clear()
        compiled(image.numpy(), task="panoptic")  # same size, another task: the same graph
        assert _compile_lines(caplog) == []
    ref = plain(image.numpy(), task="semantic")[0]["sem_seg"]
    assert out.shape == ref.shape == (5, 90, 120)
    assert float((out - ref).abs().max()) < TOL
    assert counters["stats"]["unique_graphs"] == 1


def test_cpu_inference_graph_holds_the_window_kernel():
    """On CPU in float32 the compiled inference graph calls the Swin window-attention kernel, one custom op per
    block."""
    from oneformer.ops.window_attention import window_kernel_available

    if not window_kernel_available():
        pytest.skip("oneformer.ops._C is not built")
    model = _model("eager").eval()
    images, tasks = _network_inputs(model, 64, 64)
    with torch.no_grad():
        explanation = torch._dynamo.explain(model._network)(images, tasks)
    targets = [str(n.target) for g in explanation.graphs for n in g.graph.nodes if n.op == "call_function"]
    assert explanation.graph_break_count == 0
    assert sum("swin_window_attention" in t for t in targets) == 4  # the tiny Swin: one block per stage


def test_frozen_graph_packs_onednn_linears(monkeypatch):
    """MODEL.COMPILE_FREEZE with the oneDNN linears (MODEL.CPU_LINEAR_BACKEND "onednn"): the generated code calls
    oneDNN's linear with weights packed at compile time (no reorder left at run time), and matches eager."""
    from torch._inductor.utils import run_and_get_code

    import oneformer.modeling.cpu_linear as cpu_linear

    if not cpu_linear.onednn_linear_available():
        pytest.skip("this PyTorch has no oneDNN linear op")
    monkeypatch.setattr(cpu_linear, "_MIN_MACS", 0)  # the tiny model's products all take the oneDNN path
    model = _model("inductor", freeze=True).eval()
    eager = _model("inductor", compile=False).eval()
    eager.load_state_dict(model.state_dict())
    images, tasks = _network_inputs(model, 64, 96)
    with torch.no_grad():
        out, code = run_and_get_code(model.network, images, tasks)
        assert _max_diff(out, eager.network(images, tasks)) < TOL
    code = "\n".join(code)
    assert "mkldnn._linear_pointwise" in code and "mkldnn._reorder_linear_weight(" not in code  # folded
    assert "_mkl_linear" not in code


# ----------------------------------------------------------------------------------------------------------------
# a line when a compile starts and one when it ends (a first call of minutes must not look hung)


def _small_network():
    """A CompiledNetwork around a network of one convolution: compiles in about a second."""
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def network(images, tasks):
        return {"pred_masks": conv(images) + tasks.sum()}

    return CompiledNetwork(network, backend="eager")


def test_each_new_graph_is_announced(caplog):
    """A start and an end line at the first call of each graph (a multiple of 32, each static size of the others,
    the training graph), none for a call that reuses one."""
    compiled = _small_network()
    tasks = torch.zeros(1, 2)
    calls = [((64, 96), 2), ((64, 96), 0), ((72, 90), 2), ((72, 90), 0), ((80, 100), 2)]
    with caplog.at_level("INFO", logger="oneformer.modeling.compile"), torch.no_grad():
        for (h, w), expected in calls:
            caplog.clear()
            compiled(torch.zeros(1, 3, h, w), tasks)
            lines = [line for line in _compile_lines(caplog) if "is not a multiple of" not in line]
            assert len(lines) == expected, ((h, w), lines)
            if expected:
                assert lines[0].startswith(f"compiling the network (torch.compile, backend 'eager') for a new input "
                                           f"size 1x3x{h}x{w}: the first image of each size takes"), lines[0]
                assert re.fullmatch(r"compiled the network in \d+\.\d s", lines[1]), lines[1]
    caplog.clear()
    with caplog.at_level("INFO", logger="oneformer.modeling.compile"):
        compiled(torch.zeros(1, 3, 64, 64, requires_grad=True), tasks, training=True)
    lines = _compile_lines(caplog)
    assert len(lines) == 2 and "for a new training batch size 1x3x64x64" in lines[0], lines


def test_compile_lines_reach_stderr_without_logging_setup(monkeypatch, capsys):
    """Where logging is not set up (a script, the demo), the lines go to stderr, as logging's last resort does for
    warnings."""
    import logging

    monkeypatch.setattr(logging.root, "handlers", [])
    with torch.no_grad():
        _small_network()(torch.zeros(1, 3, 64, 64), torch.zeros(1, 2))
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("compiling the network (torch.compile, backend 'eager')") and "compiled the network in" in err[1]

"""oneDNN CPU linears: same parameters and names, same results as F.linear up to rounding, only where they apply."""
import pytest
import torch
from detectron2.modeling import build_model
from torch import nn
from torch.nn import functional as F

from oneformer.modeling.backbone.swin import Mlp
from oneformer.modeling.cpu_linear import (
    OneDNNLinear,
    onednn_linear,
    onednn_linear_available,
    onednn_feature_product,
    use_onednn_linear,
)

from ..tiny import tiny_cfg

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this PyTorch has no oneDNN linear op")


def _big(seed=0):
    g = torch.Generator().manual_seed(seed)
    # 1024 x 256 x 64 = 16M multiply-adds: above the size where oneDNN is used
    return torch.randn(2, 512, 256, generator=g), torch.randn(64, 256, generator=g) * 0.05, torch.randn(64, generator=g)


@needs_onednn
def test_switch_keeps_parameters_and_names():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.MultiheadAttention(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert use_onednn_linear(model) == 2  # the Linear and the attention's output projection
    assert type(model[0]) is OneDNNLinear and type(model[2].out_proj) is OneDNNLinear
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)


@needs_onednn
def test_onednn_path_matches_f_linear():
    x, w, b = _big()
    with torch.no_grad():
        got, ref = onednn_linear(x, w, b), F.linear(x, w, b)
        nonc = onednn_linear(x.transpose(0, 1), w, None)  # non-contiguous input, no bias
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nonc, F.linear(x.transpose(0, 1), w), rtol=1e-5, atol=1e-5)


def test_falls_back_to_f_linear_exactly_where_onednn_does_not_apply():
    x, w, b = _big()
    ref = F.linear(x, w, b)
    assert torch.equal(onednn_linear(x, w, b), ref)  # autograd enabled: training keeps PyTorch's kernel
    with torch.no_grad():
        assert torch.equal(onednn_linear(x[:, :2], w, b), F.linear(x[:, :2], w, b))  # too small to pay off
        xd, wd, bd = x.double(), w.double(), b.double()
        assert torch.equal(onednn_linear(xd, wd, bd), F.linear(xd, wd, bd))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = onednn_linear(x, w, b)
        assert out.dtype == torch.bfloat16  # autocast is honoured


@needs_onednn
@pytest.mark.parametrize("batch", [1, 2])
def test_feature_product_matches_einsum(batch):
    g = torch.Generator().manual_seed(batch)
    embed, features = torch.randn(batch, 250, 64, generator=g), torch.randn(batch, 64, 24, 40, generator=g)
    ref = torch.einsum("bqc,bchw->bqhw", embed, features)
    with torch.no_grad():
        got = onednn_feature_product(embed, features)
        op = torch.ops.oneformer.onednn_feature_product(embed, features)  # what graphs of frozen_graph() hold
    assert got.shape == op.shape == ref.shape and got.is_contiguous()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(op, ref, rtol=1e-5, atol=1e-4)
    # with autograd (training), and where it is too small to pay off, the einsum itself
    assert torch.equal(onednn_feature_product(embed, features), ref)
    with torch.no_grad():
        small = onednn_feature_product(embed[:, :2], features[..., :2, :2])
    assert torch.equal(small, torch.einsum("bqc,bchw->bqhw", embed[:, :2], features[..., :2, :2]))
    torch.library.opcheck(torch.ops.oneformer.onednn_feature_product.default, (embed, features))


@needs_onednn
def test_gradients_flow_through_switched_layers():
    layer = nn.Linear(256, 64)
    use_onednn_linear(layer)
    x = _big()[0].requires_grad_()
    layer(x).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def test_mlp_chunks_in_inference_equal_one_pass(monkeypatch):
    torch.manual_seed(0)
    mlp = Mlp(16, 32).eval()
    x = torch.randn(2, 50, 16)
    with torch.no_grad():
        ref = mlp(x)
        monkeypatch.setattr(Mlp, "CHUNK_ROWS", 7)  # 100 rows in 15 chunks, the last one partial
        got = mlp(x)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


@needs_onednn
def test_model_backends_agree_and_unknown_backend_is_named(monkeypatch):
    import oneformer.modeling.cpu_linear as cpu_linear

    monkeypatch.setattr(cpu_linear, "_MIN_MACS", 0)  # the tiny model's products all take the oneDNN path
    cfg = tiny_cfg()
    torch.manual_seed(0)
    fast = build_model(cfg).eval()
    cfg.defrost()
    cfg.MODEL.CPU_LINEAR_BACKEND = "native"
    native = build_model(cfg).eval()
    native.load_state_dict(fast.state_dict())
    assert any(isinstance(m, OneDNNLinear) for m in fast.modules())
    assert not any(isinstance(m, OneDNNLinear) for m in native.modules())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        tasks = fast.encode_tasks([{"task": "panoptic"}])
        a = fast.sem_seg_head(fast.backbone(x), tasks)
        b = native.sem_seg_head(native.backbone(x), tasks)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a["pred_masks"], b["pred_masks"], rtol=1e-4, atol=1e-4)
    cfg.MODEL.CPU_LINEAR_BACKEND = "mkl"
    with pytest.raises(ValueError, match="MODEL.CPU_LINEAR_BACKEND"):
        build_model(cfg)

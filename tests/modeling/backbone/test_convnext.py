"""ConvNeXt backbone: exact ConvNeXt-L checkpoint layout, tiny forward/backward, LayerNorm and layer-scale details."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from oneformer.config import add_oneformer_config_all
from oneformer.modeling.backbone.convnext import Block, D2ConvNeXt, LayerNorm
from tests.reference import load_reference



def _reference(name):
    return load_reference(name)


def _tiny_cfg(**overrides):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "D2ConvNeXt"
    cfg.MODEL.CONVNEXT.DEPTHS = [1, 1, 2, 1]
    cfg.MODEL.CONVNEXT.DIMS = [8, 16, 24, 32]
    cfg.MODEL.CONVNEXT.DROP_PATH_RATE = 0.1
    for k, v in overrides.items():
        setattr(cfg.MODEL.CONVNEXT, k, v)
    return cfg


def test_convnext_large_layout_matches_reference():
    cfg = add_oneformer_config_all(get_cfg())  # defaults are ConvNeXt-L
    with torch.device("meta"):
        model = D2ConvNeXt(cfg, ShapeSpec(channels=3))
    mine = {
        "backbone." + k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()
    }
    entries = _reference("keys_cityscapes_convnext_large.json")
    ref = {n: (tuple(s), d) for n, s, d in entries if n.startswith("backbone.")}
    assert set(mine) == set(ref), (sorted(set(mine) - set(ref))[:10], sorted(set(ref) - set(mine))[:10])
    assert mine == ref
    counts = _reference("param_counts.json")["cityscapes_convnext_large"]["is_train"]["backbone_params"]
    assert sum(p.numel() for p in model.parameters()) == counts
    shapes = {k: (v.channels, v.stride) for k, v in model.output_shape().items()}
    assert shapes == {"res2": (192, 4), "res3": (384, 8), "res4": (768, 16), "res5": (1536, 32)}
    assert model.size_divisibility == 32


def test_convnext_xlarge_param_count():
    cfg = add_oneformer_config_all(get_cfg())
    cfg.MODEL.CONVNEXT.DIMS = [256, 512, 1024, 2048]
    with torch.device("meta"):
        model = D2ConvNeXt(cfg, ShapeSpec(channels=3))
    assert abs(sum(p.numel() for p in model.parameters()) - 348.2e6) < 0.1e6


@pytest.mark.parametrize("hw", [(67, 93), (64, 64), (40, 130)])
def test_tiny_convnext_forward_backward(hw):
    torch.manual_seed(0)
    model = build_backbone(_tiny_cfg())
    assert isinstance(model, D2ConvNeXt)
    model.train()
    out = model(torch.randn(2, 3, *hw))
    h, w = hw[0] // 4, hw[1] // 4
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert out[name].shape == (2, [8, 16, 24, 32][i], h, w), (name, out[name].shape)
        assert model.output_shape()[name] == ShapeSpec(channels=[8, 16, 24, 32][i], stride=4 * 2**i)
        h, w = h // 2, w // 2
    sum(o.pow(2).mean() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_out_features_and_input_check():
    model = build_backbone(_tiny_cfg(OUT_FEATURES=["res3", "res5"])).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ["res3", "res5"] and sorted(model.output_shape()) == ["res3", "res5"]
    with pytest.raises(AssertionError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 64, 64))


def test_layer_scale_and_drop_path_settings():
    model = build_backbone(_tiny_cfg(LSIT=0.5, DROP_PATH_RATE=0.4))
    blocks = [b for stage in model.stages for b in stage]
    assert all(torch.equal(b.gamma, torch.full_like(b.gamma, 0.5)) for b in blocks)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for b in blocks]
    assert rates == pytest.approx(torch.linspace(0, 0.4, 5).tolist())
    no_ls = build_backbone(_tiny_cfg(LSIT=0.0))
    assert all(b.gamma is None for stage in no_ls.stages for b in stage)
    assert not any(k.endswith("gamma") for k in no_ls.state_dict())


def test_layernorm_formats():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    ln_first = LayerNorm(6, eps=1e-6, data_format="channels_first").double()
    with torch.no_grad():
        ln_first.weight.normal_()
        ln_first.bias.normal_()
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), ln_first.weight, ln_first.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln_first(x), ref)
    ln_last = LayerNorm(6)
    assert ln_last.eps == 1e-6 and ln_last.data_format == "channels_last"
    with pytest.raises(ValueError):
        LayerNorm(6, data_format="nhwc")


def test_block_matches_formula():
    torch.manual_seed(0)
    blk = Block(8, drop_path=0.0, layer_scale_init_value=0.3).double().eval()
    x = torch.randn(2, 8, 9, 10, dtype=torch.float64)
    y = F.conv2d(x, blk.dwconv.weight, blk.dwconv.bias, padding=3, groups=8).permute(0, 2, 3, 1)
    y = F.layer_norm(y, (8,), blk.norm.weight, blk.norm.bias, 1e-6)
    y = F.linear(F.gelu(F.linear(y, blk.pwconv1.weight, blk.pwconv1.bias)), blk.pwconv2.weight, blk.pwconv2.bias)
    torch.testing.assert_close(blk(x), x + (0.3 * y).permute(0, 3, 1, 2))

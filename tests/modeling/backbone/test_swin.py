"""Swin backbone: exact Swin-L checkpoint layout, tiny forward/backward on odd sizes, and window attention vs a loop
oracle (relative position bias, shifted-window mask, padding)."""
import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from oneformer.config import add_oneformer_config_all
from oneformer.modeling.backbone.swin import D2SwinTransformer, SwinTransformerBlock, relative_position_index
from tests.reference import load_reference



def _reference_backbone(json_name):
    entries = load_reference(json_name)
    return {name: (tuple(shape), dtype) for name, shape, dtype in entries if name.startswith("backbone.")}


def _reference_backbone_params(key):
    return load_reference("param_counts.json")[key]["is_train"]["backbone_params"]


def _swin_large_cfg():
    cfg = add_oneformer_config_all(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 192
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 18, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [6, 12, 24, 48]
    cfg.MODEL.SWIN.WINDOW_SIZE = 12
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 384
    return cfg


def _tiny_cfg(**overrides):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 16
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 2, 4]
    cfg.MODEL.SWIN.WINDOW_SIZE = 4
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 64
    for k, v in overrides.items():
        setattr(cfg.MODEL.SWIN, k, v)
    return cfg


# ---------------------------------------------------------------------------------------------------------------------
# (a) layout


def test_swin_large_layout_matches_reference():
    with torch.device("meta"):
        model = D2SwinTransformer(_swin_large_cfg(), ShapeSpec(channels=3))
    mine = {
        "backbone." + k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()
    }
    ref = _reference_backbone("keys_ade20k_swin_large.json")
    assert set(mine) == set(ref), (sorted(set(mine) - set(ref))[:10], sorted(set(ref) - set(mine))[:10])
    assert mine == ref
    n_index = sum(1 for k in mine if k.endswith("relative_position_index"))
    assert n_index == 24 and len(mine) == 357
    assert all(dt == "int64" for k, (_, dt) in mine.items() if k.endswith("relative_position_index"))
    assert sum(p.numel() for p in model.parameters()) == _reference_backbone_params("ade20k_swin_large")
    shapes = {k: (v.channels, v.stride) for k, v in model.output_shape().items()}
    assert shapes == {"res2": (192, 4), "res3": (384, 8), "res4": (768, 16), "res5": (1536, 32)}
    assert model.size_divisibility == 32


def test_ape_adds_absolute_pos_embed():
    with torch.device("meta"):
        model = D2SwinTransformer(_swin_large_cfg().clone(), ShapeSpec(channels=3))
        cfg = _swin_large_cfg()
        cfg.MODEL.SWIN.APE = True
        ape_model = D2SwinTransformer(cfg, ShapeSpec(channels=3))
    extra = set(ape_model.state_dict()) - set(model.state_dict())
    assert extra == {"absolute_pos_embed"}
    assert tuple(ape_model.absolute_pos_embed.shape) == (1, 192, 96, 96)


def test_relative_position_index_definition():
    ws = 3
    idx = relative_position_index(ws)
    coords = [(y, x) for y in range(ws) for x in range(ws)]
    for p, (y1, x1) in enumerate(coords):
        for q, (y2, x2) in enumerate(coords):
            assert idx[p, q].item() == (y1 - y2 + ws - 1) * (2 * ws - 1) + (x1 - x2 + ws - 1)
    assert idx.dtype == torch.int64


# ---------------------------------------------------------------------------------------------------------------------
# (c) tiny forward / backward


@pytest.mark.parametrize("hw", [(67, 93), (64, 64), (29, 130)])
def test_tiny_swin_forward_backward(hw):
    torch.manual_seed(0)
    model = build_backbone(_tiny_cfg())
    assert isinstance(model, D2SwinTransformer)
    model.train()
    out = model(torch.randn(2, 3, *hw))
    H, W = hw
    h, w = math.ceil(H / 4), math.ceil(W / 4)
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        assert out[name].shape == (2, 16 * 2**i, h, w), (name, out[name].shape)
        assert model.output_shape()[name] == ShapeSpec(channels=16 * 2**i, stride=4 * 2**i)
        h, w = (h + 1) // 2, (w + 1) // 2
    sum(o.pow(2).mean() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.layers[0].blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_out_features_and_input_check():
    model = build_backbone(_tiny_cfg(OUT_FEATURES=["res2", "res4"])).eval()
    out = model(torch.randn(1, 3, 40, 50))
    assert sorted(out) == ["res2", "res4"] and sorted(model.output_shape()) == ["res2", "res4"]
    with pytest.raises(AssertionError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 40, 50))
    with pytest.raises(AssertionError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 40, 50))


def test_ape_forward_interpolates():
    model = build_backbone(_tiny_cfg(APE=True)).eval()
    assert tuple(model.absolute_pos_embed.shape) == (1, 16, 16, 16)
    out = model(torch.randn(1, 3, 50, 70))
    assert out["res2"].shape == (1, 16, 13, 18)


def test_use_checkpoint_same_result():
    torch.manual_seed(0)
    plain = build_backbone(_tiny_cfg(DROP_PATH_RATE=0.0))
    ckpt = build_backbone(_tiny_cfg(DROP_PATH_RATE=0.0, USE_CHECKPOINT=True))
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 45, 38)
    outs = []
    for m in (plain, ckpt):
        m.train()
        y = m(x)
        sum(o.sum() for o in y.values()).backward()
        outs.append((y, {n: p.grad for n, p in m.named_parameters()}))
    for k in outs[0][0]:
        torch.testing.assert_close(outs[0][0][k], outs[1][0][k])
    for n in outs[0][1]:
        torch.testing.assert_close(outs[0][1][n], outs[1][1][n], rtol=1e-5, atol=1e-6)


def test_drop_path_is_linear_to_rate():
    model = build_backbone(_tiny_cfg(DROP_PATH_RATE=0.35))
    rates = [
        getattr(blk.drop_path, "drop_prob", 0.0) for layer in model.layers for blk in layer.blocks
    ]  # 7 blocks
    expected = torch.linspace(0, 0.35, 7).tolist()
    assert rates == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------------------
# window attention block vs an oracle written pixel by pixel


def _oracle_block(blk, x, H, W):
    """SwinTransformerBlock.forward spelled out: each (padded, cyclically shifted) token attends to the tokens of its
    window, with bias table[(dy + ws - 1) * (2ws - 1) + dx + ws - 1] and -100 between different shift regions."""
    ws, s = blk.window_size, blk.shift_size
    B, L, C = x.shape
    nh = blk.num_heads
    hd = C // nh
    y = blk.norm1(x).view(B, H, W, C)
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    y = F.pad(y, (0, 0, 0, Wp - W, 0, Hp - H))
    y = torch.roll(y, (-s, -s), (1, 2))
    qkv = blk.attn.qkv(y).view(B, Hp, Wp, 3, nh, hd)
    q, k, v = qkv[..., 0, :, :] * blk.attn.scale, qkv[..., 1, :, :], qkv[..., 2, :, :]  # (B, Hp, Wp, nh, hd)
    table = blk.attn.relative_position_bias_table

    def region(p, n):  # label of the region a rolled coordinate came from
        if s == 0:
            return 0
        return 0 if p < n - ws else (1 if p < n - s else 2)

    out = torch.zeros_like(q)
    for wy in range(0, Hp, ws):
        for wx in range(0, Wp, ws):
            toks = [(wy + a, wx + b) for a in range(ws) for b in range(ws)]
            for (py, px) in toks:
                logits = []
                for (ky, kx) in toks:
                    bias = table[(py - ky + ws - 1) * (2 * ws - 1) + (px - kx + ws - 1)]  # (nh,)
                    same = region(py, Hp) == region(ky, Hp) and region(px, Wp) == region(kx, Wp)
                    logits.append((q[:, py, px] * k[:, ky, kx]).sum(-1) + bias + (0.0 if same else -100.0))
                w = torch.softmax(torch.stack(logits, -1), -1)  # (B, nh, N)
                vals = torch.stack([v[:, ky, kx] for (ky, kx) in toks], -2)  # (B, nh, N, hd)
                out[:, py, px] = (w.unsqueeze(-1) * vals).sum(-2)
    out = blk.attn.proj(out.reshape(B, Hp, Wp, C))
    out = torch.roll(out, (s, s), (1, 2))[:, :H, :W].reshape(B, H * W, C)
    x = x + out
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 5)])
@pytest.mark.parametrize("grad", [True, False])  # float64: scaled_dot_product_attention either way
def test_window_block_matches_oracle(shift, hw, grad):
    torch.manual_seed(1)
    from oneformer.modeling.backbone.swin import BasicLayer

    H, W = hw
    dim, ws = 8, 4
    layer = BasicLayer(dim=dim, depth=2, num_heads=2, window_size=ws).double().eval()
    blk = layer.blocks[0 if shift == 0 else 1]
    assert blk.shift_size == shift
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(std=0.5)
        for n in (blk.norm1, blk.norm2):
            n.weight.normal_(1.0, 0.2)
            n.bias.normal_(0.0, 0.2)
    x = torch.randn(2, H * W, dim, dtype=torch.float64)
    mask = layer._shift_mask(H, W, x.device).double() if shift else None
    with torch.set_grad_enabled(grad):
        got = blk(x, H, W, mask)
    ref = _oracle_block(blk, x, H, W)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    assert isinstance(blk, SwinTransformerBlock)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("hw", [(8, 8), (7, 10)])
def test_gathered_windows_equal_traceable_path_with_gradients(shift, hw):
    """The eager path (one row gather each way) and the export path (pad / roll / partition) agree in values and in
    the gradients of the input and of the qkv bias, which the padded positions read."""
    torch.manual_seed(2)
    from oneformer.modeling.backbone.swin import BasicLayer

    H, W = hw
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=4).double()
    blk = layer.blocks[0 if shift == 0 else 1]
    x = torch.randn(2, H * W, 8, dtype=torch.float64)
    mask = layer._shift_mask(H, W, x.device).double() if shift else None
    results = []
    for path in (blk._attention_gathered, blk._attention_traceable):
        xi = x.clone().requires_grad_()
        blk.zero_grad()
        out = path(xi, H, W, mask, None) if path == blk._attention_gathered else path(xi, H, W, mask)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out.detach(), xi.grad, blk.attn.qkv.bias.grad.clone()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_patch_merging_order_and_odd_padding():
    from oneformer.modeling.backbone.swin import PatchMerging

    pm = PatchMerging(2)
    assert tuple(pm.reduction.weight.shape) == (4, 8) and pm.reduction.bias is None
    pm.norm = torch.nn.Identity()
    pm.reduction = torch.nn.Identity()  # expose the 2x2 concatenation
    H, W, C = 5, 3, 2
    x = torch.randn(1, H, W, C)
    y = pm(x.view(1, H * W, C), H, W).view(1, 3, 2, 4 * C)
    xp = torch.zeros(1, 6, 4, C)
    xp[:, :H, :W] = x
    for i in range(3):
        for j in range(2):
            expect = torch.cat(
                [xp[0, 2 * i, 2 * j], xp[0, 2 * i + 1, 2 * j], xp[0, 2 * i, 2 * j + 1], xp[0, 2 * i + 1, 2 * j + 1]]
            )
            torch.testing.assert_close(y[0, i, j], expect)


@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 5), (12, 4)])
def test_grouped_windows_masks_and_order(hw):
    """The grouped window order (used under torch.compile) holds the same windows as Swin's order, and each kind's
    mask is the stage mask of every window of that kind."""
    from oneformer.modeling.backbone.swin import BasicLayer, window_gather_index

    H, W = hw
    B, ws, shift = 2, 4, 2
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=ws)
    stage_mask = layer._shift_mask(H, W, "cpu")  # (nW, N, N), Swin's window order
    index, inverse = window_gather_index(B, H, W, ws, shift, "cpu")
    g_index, g_inverse, (counts, type_masks) = window_gather_index(B, H, W, ws, shift, "cpu", grouped=True)
    nW, N = stage_mask.shape[0], ws * ws
    assert sum(counts) == B * nW and type_masks.shape == (4, N, N)
    windows = index.view(B * nW, N)
    grouped = g_index.view(B * nW, N)
    kinds = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    seen = []
    for g in range(B * nW):  # each grouped window is one of Swin's windows, with that window's mask
        match = (windows == grouped[g]).all(1).nonzero().flatten()
        assert match.numel() == 1
        j = int(match)
        seen.append(j)
        torch.testing.assert_close(type_masks[kinds[g]], stage_mask[j % nW], rtol=0, atol=0)
    assert sorted(seen) == list(range(B * nW))
    # the inverse gathers every token back from its place in the grouped order
    tokens = torch.cat([torch.arange(B * H * W), torch.tensor([-1])])
    assert torch.equal(tokens[g_index][g_inverse], torch.arange(B * H * W))
    assert torch.equal(tokens[index][inverse], torch.arange(B * H * W))


@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 5)])
@pytest.mark.parametrize("grad", [True, False])
def test_grouped_windows_attention_equals_masked(hw, grad):
    """A shifted block gives the same output and gradients with windows grouped by mask kind (per-kind attention)
    as with Swin's order and the per-window mask."""
    torch.manual_seed(3)
    from oneformer.modeling.backbone.swin import BasicLayer, window_gather_index

    H, W = hw
    layer = BasicLayer(dim=8, depth=2, num_heads=2, window_size=4).double()
    blk = layer.blocks[1]
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(std=0.5)
    x = torch.randn(2, H * W, 8, dtype=torch.float64)
    mask = layer._shift_mask(H, W, x.device).double()
    results = []
    for grouped in (False, True):
        xi = x.clone().requires_grad_(grad)
        blk.zero_grad()
        idx = window_gather_index(2, H, W, 4, blk.shift_size, x.device, grouped=grouped)
        with torch.set_grad_enabled(grad):
            out = blk._attention_gathered(xi, H, W, mask, idx)
        if grad:
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            results.append((out.detach(), xi.grad, blk.attn.relative_position_bias_table.grad.clone()))
        else:
            results.append((out,))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 5), (13, 4)])
def test_cpu_window_kernel_equals_the_sdpa_path(hw, monkeypatch):
    """float32 CPU inference runs the window-attention kernel (oneformer.ops.window_attention), reading the windows
    through the gather index and taking each window's kind for the shift mask; a stage gives the outputs of the
    scaled_dot_product_attention path (which autograd uses) to float32 rounding."""
    import oneformer.modeling.backbone.swin as swin
    from oneformer.ops.window_attention import window_kernel_available

    if not window_kernel_available():
        pytest.skip("oneformer.ops._C is not built")
    torch.manual_seed(4)
    H, W = hw
    layer = swin.BasicLayer(dim=16, depth=2, num_heads=2, window_size=4).eval()
    with torch.no_grad():
        for blk in layer.blocks:
            blk.attn.relative_position_bias_table.normal_(std=1.0)
    x = torch.randn(2, H * W, 16)
    calls = []
    kernel = swin.swin_window_attention
    monkeypatch.setattr(swin, "swin_window_attention", lambda *a: calls.append(1) or kernel(*a))
    with torch.no_grad():
        got = layer(x, H, W)[0]
    assert len(calls) == 2  # both blocks, the shifted one included
    with torch.enable_grad():
        ref = layer(x, H, W)[0]
    assert len(calls) == 2
    torch.testing.assert_close(got, ref.detach(), rtol=1e-5, atol=1e-5)

"""DiNAT backbone: DiNAT-L layout (spec 2.2), tiny forward/backward, and neighbourhood attention vs a loop oracle."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone

from oneformer.config import add_oneformer_config_all
from oneformer.modeling.backbone import dinat as dinat_mod
from oneformer.modeling.backbone.dinat import D2DiNAT, NeighborhoodAttention2D, na2d_av, na2d_qk_rpb

DINAT_L_DILATIONS_11 = [
    [1, 20, 1],
    [1, 5, 1, 10],
    [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5],
    [1, 2, 1, 2, 1],
]


def _cfg():
    return add_oneformer_config_all(get_cfg())


def _dinat_large_cfg():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    cfg.MODEL.DiNAT.EMBED_DIM = 192
    cfg.MODEL.DiNAT.MLP_RATIO = 2.0
    cfg.MODEL.DiNAT.DEPTHS = [3, 4, 18, 5]
    cfg.MODEL.DiNAT.NUM_HEADS = [6, 12, 24, 48]
    cfg.MODEL.DiNAT.DROP_PATH_RATE = 0.3
    cfg.MODEL.DiNAT.KERNEL_SIZE = 11
    cfg.MODEL.DiNAT.DILATIONS = DINAT_L_DILATIONS_11
    return cfg


def _tiny_cfg():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "D2DiNAT"
    cfg.MODEL.DiNAT.EMBED_DIM = 16
    cfg.MODEL.DiNAT.MLP_RATIO = 2.0
    cfg.MODEL.DiNAT.DEPTHS = [1, 2, 1, 1]
    cfg.MODEL.DiNAT.NUM_HEADS = [1, 2, 2, 4]
    cfg.MODEL.DiNAT.KERNEL_SIZE = 3
    cfg.MODEL.DiNAT.DILATIONS = [[2], [1, 3], [2], [1]]
    cfg.MODEL.DiNAT.DROP_PATH_RATE = 0.1
    return cfg


# ---------------------------------------------------------------------------------------------------------------------
# (b) DiNAT-L layout


def test_dinat_large_layout_and_param_count():
    with torch.device("meta"):
        model = D2DiNAT(_dinat_large_cfg(), ShapeSpec(channels=3))
    sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}

    assert sd["patch_embed.proj.0.weight"] == (96, 3, 3, 3)
    assert sd["patch_embed.proj.0.bias"] == (96,)
    assert sd["patch_embed.proj.1.weight"] == (192, 96, 3, 3)
    assert sd["patch_embed.proj.1.bias"] == (192,)
    assert sd["patch_embed.norm.weight"] == (192,)

    depths, heads = [3, 4, 18, 5], [6, 12, 24, 48]
    expected = {f"patch_embed.{k}" for k in ("proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias")}
    expected |= {"patch_embed.norm.weight", "patch_embed.norm.bias"}
    for i, (depth, h) in enumerate(zip(depths, heads)):
        C = 192 * 2**i
        for j in range(depth):
            p = f"levels.{i}.blocks.{j}."
            assert sd[p + "attn.rpb"] == (h, 21, 21)
            assert sd[p + "attn.qkv.weight"] == (3 * C, C)
            assert sd[p + "attn.qkv.bias"] == (3 * C,)
            assert sd[p + "attn.proj.weight"] == (C, C)
            assert sd[p + "mlp.fc1.weight"] == (2 * C, C)
            assert sd[p + "mlp.fc2.weight"] == (C, 2 * C)
            expected |= {
                p + n
                for n in (
                    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.rpb",
                    "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
                )
            }  # fmt: skip
            assert model.levels[i].blocks[j].attn.dilation == DINAT_L_DILATIONS_11[i][j]
            assert model.levels[i].blocks[j].attn.kernel_size == 11
        if i < 3:
            assert sd[f"levels.{i}.downsample.reduction.weight"] == (2 * C, C, 3, 3)
            assert sd[f"levels.{i}.downsample.norm.weight"] == (2 * C,)
            expected |= {f"levels.{i}.downsample.{n}" for n in ("reduction.weight", "norm.weight", "norm.bias")}
        assert sd[f"norm{i}.weight"] == (C,)
        expected |= {f"norm{i}.weight", f"norm{i}.bias"}
    assert "levels.3.downsample.reduction.weight" not in sd
    # exactly these keys: no layer scale (gamma), no reduction bias, no classification head
    assert set(sd) == expected

    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 199.6e6) < 0.1e6, n_params
    shapes = model.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == {
        "res2": (192, 4), "res3": (384, 8), "res4": (768, 16), "res5": (1536, 32)
    }  # fmt: skip
    assert model.size_divisibility == 32


def test_dilations_must_match_depths():
    cfg = _tiny_cfg()
    cfg.MODEL.DiNAT.DILATIONS = [[1], [1], [1], [1]]
    with pytest.raises(ValueError, match="DILATIONS"):
        build_backbone(cfg)


# ---------------------------------------------------------------------------------------------------------------------
# (c) tiny forward / backward


@pytest.mark.parametrize("hw", [(67, 93), (64, 64), (33, 130)])
def test_tiny_dinat_forward_backward(hw):
    torch.manual_seed(0)
    cfg = _tiny_cfg()
    model = build_backbone(cfg)
    assert isinstance(model, D2DiNAT)
    model.train()
    x = torch.randn(2, 3, *hw)
    out = model(x)
    H, W = hw
    for i, name in enumerate(["res2", "res3", "res4", "res5"]):
        s = 4 * 2**i
        h, w = H, W
        for _ in range(i + 2):  # every stride-2 conv with padding 1 gives ceil(n / 2)
            h, w = (h + 1) // 2, (w + 1) // 2
        assert out[name].shape == (2, 16 * 2**i, h, w), (name, out[name].shape)
        assert model.output_shape()[name].stride == s
        assert model.output_shape()[name].channels == 16 * 2**i
    loss = sum(o.float().pow(2).mean() for o in out.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.levels[1].blocks[1].attn.rpb.grad.abs().sum() > 0
    assert model.patch_embed.proj[0].weight.grad.abs().sum() > 0


def test_out_features_filter_and_input_check():
    cfg = _tiny_cfg()
    cfg.MODEL.DiNAT.OUT_FEATURES = ["res3", "res5"]
    model = build_backbone(cfg).eval()
    out = model(torch.randn(1, 3, 64, 64))
    assert sorted(out) == ["res3", "res5"]
    assert sorted(model.output_shape()) == ["res3", "res5"]
    with pytest.raises(AssertionError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(3, 64, 64))


# ---------------------------------------------------------------------------------------------------------------------
# (d) neighbourhood attention fallback vs a slow oracle written from the NATTEN 0.14 definitions


def _start(i, L, k, d):
    n = k // 2
    if d <= 1:
        return max(i - n, 0) + (L - i - n - 1 if i + n >= L else 0)
    if i - n * d < 0:
        return i % d
    if i + n * d >= L:
        imodd = i % d
        a = (L // d) * d
        b = L - a
        return L - b + imodd - 2 * n * d if imodd < b else a + imodd - k * d
    return i - n * d


def _pb_start(i, L, k, d):
    n = k // 2
    if d <= 1:
        return n + (n - i if i < n else 0) + (L - i - 1 - n if i + n >= L else 0)
    if i - n * d < 0:
        return k - 1 - i // d
    if i + n * d >= L:
        return (L - i - 1) // d
    return n


def _oracle_attention(q, k, v, rpb, ks, dil):
    """q, k, v (B, heads, H, W, D) already scaled; python loop over query pixels, each attending to the ks x ks grid
    rows start(i) + ti*dil, cols start(j) + tj*dil with bias rpb[:, pb_start(i) + ti, pb_start(j) + tj]."""
    B, nh, H, W, D = q.shape
    rows_out = []
    for i in range(H):
        row_out = []
        for j in range(W):
            rows = [_start(i, H, ks, dil) + t * dil for t in range(ks)]
            cols = [_start(j, W, ks, dil) + t * dil for t in range(ks)]
            pi, pj = _pb_start(i, H, ks, dil), _pb_start(j, W, ks, dil)
            keys = k[:, :, rows][:, :, :, cols]  # (B, heads, ks, ks, D)
            values = v[:, :, rows][:, :, :, cols]
            bias = rpb[:, pi : pi + ks, pj : pj + ks]  # (heads, ks, ks)
            logits = (q[:, :, i, j, None, None, :] * keys).sum(-1) + bias  # (B, heads, ks, ks)
            w = torch.softmax(logits.reshape(B, nh, ks * ks), dim=-1).reshape(B, nh, ks, ks, 1)
            row_out.append((w * values).sum((2, 3)))  # (B, heads, D)
        rows_out.append(torch.stack(row_out, 2))
    return torch.stack(rows_out, 2)  # (B, heads, H, W, D)


def _oracle_module_forward(mod, x):
    """NeighborhoodAttention2D.forward written out with the oracle (pad, qkv, scale, attention, crop, proj)."""
    B, H0, W0, C = x.shape
    ws = mod.kernel_size * mod.dilation
    x = F.pad(x, (0, 0, 0, max(0, ws - W0), 0, max(0, ws - H0)))
    _, H, W, _ = x.shape
    qkv = mod.qkv(x).reshape(B, H, W, 3, mod.num_heads, C // mod.num_heads).permute(3, 0, 4, 1, 2, 5)
    q, k, v = qkv[0] * mod.scale, qkv[1], qkv[2]
    out = _oracle_attention(q, k, v, mod.rpb, mod.kernel_size, mod.dilation)
    out = out.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)[:, :H0, :W0]
    return mod.proj(out)


NA_CASES = [
    # (kernel, dilation, H, W)
    (3, 1, 5, 7),
    (3, 1, 2, 4),  # smaller than the window: padded
    (3, 2, 9, 6),
    (3, 2, 11, 7),
    (3, 3, 10, 11),
    (3, 3, 4, 14),  # H padded only
    (5, 1, 4, 6),  # both padded
    (5, 1, 8, 11),
    (5, 2, 11, 13),
    (5, 3, 17, 16),
    (7, 1, 9, 8),
    (7, 2, 15, 14),
    (7, 3, 22, 21),
]


@pytest.fixture
def force_fallback(monkeypatch):
    monkeypatch.setenv("ONEFORMER_NATTEN", "0")
    assert not dinat_mod.natten_available()


def test_axis_neighborhood_properties():
    # independent checks of the per-axis tables: neighbours in range, spaced by d, congruent to i mod d, containing
    # i itself, and the bias row equal to (k - 1) + (neighbour - i) / d
    for k, d in itertools.product([3, 5, 7, 11], [1, 2, 3, 5]):
        for L in range(k * d, k * d + 2 * d + 3):
            nbr, pb = dinat_mod._axis_neighborhood(L, k, d)
            for i in range(L):
                row = nbr[i].tolist()
                assert row[0] == _start(i, L, k, d) and pb[i, 0].item() == _pb_start(i, L, k, d)
                assert 0 <= row[0] and row[-1] < L
                assert all(b - a == d for a, b in zip(row, row[1:]))
                assert i in row
                assert all((r - i) % d == 0 for r in row)
                assert pb[i].tolist() == [k - 1 + (r - i) // d for r in row]
                if i - (k // 2) * d >= 0 and i + (k // 2) * d < L:
                    assert row[k // 2] == i


@pytest.mark.parametrize("ks,dil,H,W", NA_CASES)
def test_fallback_matches_oracle_forward_and_grad(force_fallback, ks, dil, H, W):
    torch.manual_seed(ks * 100 + dil * 10 + H)
    dim, heads = 8, 2
    mod = NeighborhoodAttention2D(dim, ks, heads, dilation=dil).double()
    with torch.no_grad():
        mod.rpb.normal_(std=0.5)  # make the bias matter
    x = torch.randn(2, H, W, dim, dtype=torch.float64)

    x1 = x.clone().requires_grad_(True)
    y1 = mod(x1)
    g = torch.randn_like(y1)
    grads1 = torch.autograd.grad(y1, [x1] + list(mod.parameters()), g)

    x2 = x.clone().requires_grad_(True)
    y2 = _oracle_module_forward(mod, x2)
    grads2 = torch.autograd.grad(y2, [x2] + list(mod.parameters()), g)

    assert y1.shape == (2, H, W, dim)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
    names = ["x"] + [n for n, _ in mod.named_parameters()]
    for name, a, b in zip(names, grads1, grads2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("ks,dil,H,W", [(3, 1, 4, 5), (3, 2, 6, 7), (5, 1, 6, 5)])
def test_fallback_functions_gradcheck(ks, dil, H, W):
    torch.manual_seed(0)
    q = torch.randn(1, 2, H, W, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, H, W, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, H, W, 3, dtype=torch.float64, requires_grad=True)
    rpb = torch.randn(2, 2 * ks - 1, 2 * ks - 1, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, rpb):
        attn = na2d_qk_rpb(q, k, rpb, ks, dil).softmax(-1)
        return na2d_av(attn, v, ks, dil)

    assert torch.autograd.gradcheck(f, (q, k, v, rpb))


def test_fallback_float32_and_dropout_path(force_fallback):
    torch.manual_seed(0)
    mod = NeighborhoodAttention2D(12, 5, 3, attn_drop=0.5, proj_drop=0.1, dilation=2)
    x = torch.randn(2, 13, 12, 12)
    mod.eval()
    y_eval = mod(x)
    with torch.no_grad():
        ref = _oracle_module_forward(mod, x)
    torch.testing.assert_close(y_eval, ref, rtol=1e-5, atol=1e-5)
    mod.train()
    y = mod(x)
    y.sum().backward()
    assert torch.isfinite(mod.qkv.weight.grad).all()


# ---------------------------------------------------------------------------------------------------------------------
# (e) NATTEN (if a 0.14-compatible build is importable) equals the fallback


@pytest.mark.skipif(dinat_mod._natten_functions() is None, reason="no NATTEN with the 0.14 functional API")
@pytest.mark.parametrize("ks,dil,H,W", [(3, 1, 5, 7), (5, 2, 11, 13), (7, 3, 22, 21), (5, 1, 4, 6)])
def test_natten_matches_fallback(monkeypatch, ks, dil, H, W):
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mod = NeighborhoodAttention2D(16, ks, 2, dilation=dil).to(device)
    x = torch.randn(2, H, W, 16, device=device)

    monkeypatch.setenv("ONEFORMER_NATTEN", "1")
    assert dinat_mod.natten_available()
    x1 = x.clone().requires_grad_(True)
    y1 = mod(x1)
    y1.square().sum().backward()
    g1 = [x1.grad] + [p.grad.clone() for p in mod.parameters()]
    mod.zero_grad()

    monkeypatch.setenv("ONEFORMER_NATTEN", "0")
    assert not dinat_mod.natten_available()
    x2 = x.clone().requires_grad_(True)
    y2 = mod(x2)
    y2.square().sum().backward()
    g2 = [x2.grad] + [p.grad for p in mod.parameters()]

    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)

"""MSDeformAttnPixelDecoder and PositionEmbeddingSine: exact checkpoint layouts, shapes, kernels, precision, init."""
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from oneformer.config import add_oneformer_config_all
from oneformer.modeling.pixel_decoder.msdeformattn import (
    MSDeformAttnPixelDecoder,
    MSDeformAttnTransformerEncoder,
    MSDeformAttnTransformerEncoderLayer,
)
from oneformer.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine
from oneformer.ops import MSDeformAttn, extension_status

REFERENCE = Path("/work/shared/docs/reference")
CONFIGS = Path(__file__).resolve().parents[3] / "configs"
PREFIX = "sem_seg_head.pixel_decoder."
HAS_EXT = extension_status()["built"]


def _reference(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text())


def _shapes(channels, strides=(4, 8, 16, 32)):
    return {f"res{i + 2}": ShapeSpec(channels=c, stride=s) for i, (c, s) in enumerate(zip(channels, strides))}


# ------------------------------------------------------------------------------------------------------------------
# (a) exact layouts of the shipped models

LAYOUTS = {
    # reference json, yaml, backbone channels res2..res5, param_counts.json entry
    "ade20k_swin_large": ("keys_ade20k_swin_large.json", "ade20k/swin/oneformer_swin_large_bs16_160k.yaml",
                          (192, 384, 768, 1536)),
    "ade20k_R50": ("keys_ade20k_R50.json", "ade20k/oneformer_R50_bs16_160k.yaml", (256, 512, 1024, 2048)),
    "cityscapes_convnext_large": ("keys_cityscapes_convnext_large.json",
                                  "cityscapes/convnext/oneformer_convnext_large_bs16_90k.yaml",
                                  (192, 384, 768, 1536)),
    "cityscapes_R50": ("keys_cityscapes_R50.json", "cityscapes/oneformer_R50_bs16_90k.yaml", (256, 512, 1024, 2048)),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_matches_reference(name):
    keys_file, yaml, channels = LAYOUTS[name]
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(str(CONFIGS / yaml))
    head = cfg.MODEL.SEM_SEG_HEAD
    assert (head.CONVS_DIM, head.MASK_DIM, head.NORM, head.TRANSFORMER_ENC_LAYERS, head.COMMON_STRIDE) == (
        256, 256, "GN", 6, 4)
    assert list(head.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) == ["res3", "res4", "res5"]
    assert (cfg.MODEL.ONE_FORMER.NHEADS, cfg.MODEL.ONE_FORMER.DROPOUT) == (8, 0.1)
    assert head.PIXEL_DECODER_PRECISION == "fp32"

    with torch.device("meta"):
        decoder = MSDeformAttnPixelDecoder(cfg, _shapes(channels))
    mine = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in decoder.state_dict().items()}
    ref = {n[len(PREFIX):]: (tuple(s), d) for n, s, d in _reference(keys_file) if n.startswith(PREFIX)}
    assert set(mine) == set(ref), (sorted(set(mine) - set(ref))[:10], sorted(set(ref) - set(mine))[:10])
    assert mine == ref
    assert len(mine) == 117
    counts = _reference("param_counts.json")
    if name in counts:
        expected = counts[name]["is_train"]["groups"]["sem_seg_head.pixel_decoder"]
        assert sum(p.numel() for p in decoder.parameters()) == expected
    # coarse -> fine input projections; 4 points, NHEADS heads, 3 levels, FFN 1024
    assert decoder.input_proj[0][0].in_channels == channels[3]
    assert decoder.input_proj[2][0].in_channels == channels[1]
    attn = decoder.transformer.encoder.layers[0].self_attn
    assert (attn.n_heads, attn.n_levels, attn.n_points) == (8, 3, 4)
    assert decoder.transformer.encoder.layers[0].linear1.out_features == 1024
    assert decoder.num_fpn_levels == 1


def test_registered_and_built_by_name():
    assert SEM_SEG_HEADS_REGISTRY.get("MSDeformAttnPixelDecoder") is MSDeformAttnPixelDecoder
    # the N_POINTS / N_HEADS keys are not read (as in the original)
    cfg = _tiny_cfg()
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 7
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 4
    decoder = SEM_SEG_HEADS_REGISTRY.get("MSDeformAttnPixelDecoder")(cfg, TINY_SHAPES)
    attn = decoder.transformer.encoder.layers[0].self_attn
    assert (attn.n_heads, attn.n_points) == (2, 4)
    # features not listed in IN_FEATURES are ignored
    assert decoder.in_features == ["res2", "res3", "res4", "res5"]


# ------------------------------------------------------------------------------------------------------------------
# tiny decoder

TINY_CHANNELS = (8, 12, 16, 24)
TINY_SHAPES = {**_shapes(TINY_CHANNELS), "stem": ShapeSpec(channels=4, stride=2)}


def _tiny_cfg(**head_overrides):
    cfg = add_oneformer_config_all(get_cfg())
    head = cfg.MODEL.SEM_SEG_HEAD
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.CONVS_DIM = 32
    head.MASK_DIM = 16
    head.NORM = "GN"
    head.TRANSFORMER_ENC_LAYERS = 2
    head.COMMON_STRIDE = 4
    cfg.MODEL.ONE_FORMER.NHEADS = 2
    cfg.MODEL.ONE_FORMER.DROPOUT = 0.1
    for k, v in head_overrides.items():
        setattr(head, k, v)
    return cfg


def _tiny_decoder(seed=0, **head_overrides):
    torch.manual_seed(seed)
    return MSDeformAttnPixelDecoder(_tiny_cfg(**head_overrides), TINY_SHAPES)


def _features(sizes, batch=2, seed=1, dtype=torch.float32):
    """sizes: {name: (h, w)} -> random maps with TINY_CHANNELS."""
    g = torch.Generator().manual_seed(seed)
    channels = dict(zip(["res2", "res3", "res4", "res5"], TINY_CHANNELS))
    return {k: torch.randn(batch, channels[k], h, w, generator=g).to(dtype) for k, (h, w) in sizes.items()}


def _sizes_for_image(H, W):
    return {f"res{i + 2}": (math.ceil(H / s), math.ceil(W / s)) for i, s in enumerate((4, 8, 16, 32))}


# ------------------------------------------------------------------------------------------------------------------
# (b) forward shapes

@pytest.mark.parametrize("sizes", [
    _sizes_for_image(64, 96),
    _sizes_for_image(96, 32),
    {"res2": (11, 17), "res3": (6, 9), "res4": (3, 5), "res5": (2, 3)},  # not exact multiples
], ids=["64x96", "96x32", "odd"])
def test_forward_shapes(sizes):
    decoder = _tiny_decoder().eval()
    feats = _features(sizes)
    feats["stem"] = torch.randn(2, 4, 1, 1)  # extra inputs are ignored
    with torch.no_grad():
        mask_features, enc_features, multi_scale, spatial_shapes, level_start_index = decoder.forward_features(feats)
    B = 2
    assert mask_features.shape == (B, 16, *sizes["res2"])
    assert enc_features.shape == (B, 32, *sizes["res5"])
    assert [tuple(x.shape) for x in multi_scale] == [(B, 32, *sizes[k]) for k in ("res5", "res4", "res3")]
    assert enc_features is multi_scale[0]
    assert spatial_shapes.dtype == torch.int64 and level_start_index.dtype == torch.int64
    assert spatial_shapes.tolist() == [list(sizes[k]) for k in ("res5", "res4", "res3")]
    areas = [h * w for h, w in (sizes[k] for k in ("res5", "res4", "res3"))]
    assert level_start_index.tolist() == [0, areas[0], areas[0] + areas[1]]
    for t in (mask_features, *multi_scale):
        assert t.dtype == torch.float32 and torch.isfinite(t).all()

    # the FPN step: mask_features = conv1x1(layer_1(adapter_1(res2) + bilinear(1/8 map)))
    with torch.no_grad():
        lateral = decoder.adapter_1(feats["res2"])
        up = F.interpolate(multi_scale[2], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        expected = decoder.mask_features(decoder.layer_1(lateral + up))
    torch.testing.assert_close(mask_features, expected)


def test_two_level_encoder_and_stride_8():
    """Other configurations: two transformer levels, common stride 8 (the FPN level then comes from res3)."""
    decoder = _tiny_decoder(IN_FEATURES=["res3", "res4", "res5"],
                            DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES=["res4", "res5"], COMMON_STRIDE=8).eval()
    assert decoder.num_fpn_levels == 1 and len(decoder.input_proj) == 2
    assert decoder.adapter_1.weight.shape[1] == TINY_CHANNELS[1]
    sizes = _sizes_for_image(64, 96)
    with torch.no_grad():
        mask_features, enc, multi_scale, shapes, starts = decoder(_features(sizes))
    assert mask_features.shape == (2, 16, *sizes["res3"])
    assert [tuple(x.shape[-2:]) for x in multi_scale] == [sizes["res5"], sizes["res4"], sizes["res3"]]
    assert shapes.tolist() == [[2, 3], [4, 6]] and starts.tolist() == [0, 6]


def test_reference_points_are_pixel_centres():
    ratios = torch.ones(2, 2, 2)
    ref = MSDeformAttnTransformerEncoder.get_reference_points([(2, 3), (1, 2)], ratios)
    assert ref.shape == (2, 6 + 2, 2, 2)
    expected = [((j + 0.5) / 3, (i + 0.5) / 2) for i in range(2) for j in range(3)] + [(0.25, 0.5), (0.75, 0.5)]
    expected = torch.tensor(expected)[None, :, None, :].expand(2, -1, 2, -1)
    torch.testing.assert_close(ref, expected)
    # tensor spatial shapes give the same
    torch.testing.assert_close(
        MSDeformAttnTransformerEncoder.get_reference_points(torch.tensor([[2, 3], [1, 2]]), ratios), ref)


def test_encoder_layer_is_post_norm():
    torch.manual_seed(0)
    layer = MSDeformAttnTransformerEncoderLayer(d_model=16, d_ffn=24, dropout=0.1, n_levels=2, n_heads=2,
                                                n_points=2).eval()
    for p in layer.parameters():  # make every sub-layer matter
        torch.nn.init.normal_(p, std=0.2)
    shapes = torch.tensor([[3, 2], [1, 2]])
    starts = torch.tensor([0, 6])
    src, pos = torch.randn(2, 8, 16), torch.randn(2, 8, 16)
    ref = MSDeformAttnTransformerEncoder.get_reference_points(shapes, torch.ones(2, 2, 2))
    with torch.no_grad():
        out = layer(src, pos, ref, shapes, starts)
        x = layer.norm1(src + layer.self_attn(src + pos, ref, src, shapes, starts))
        x = layer.norm2(x + layer.linear2(torch.relu(layer.linear1(x))))
    torch.testing.assert_close(out, x)


# ------------------------------------------------------------------------------------------------------------------
# (c) kernels and gradients

def _set_impl(module, impl):
    n = 0
    for m in module.modules():
        if isinstance(m, MSDeformAttn):
            m.impl = impl
            n += 1
    return n


def _loss(outputs):
    mask_features, enc, multi_scale, _, _ = outputs
    return mask_features.square().mean() + sum(x.square().mean() for x in multi_scale) + enc.mean()


@pytest.mark.skipif(not HAS_EXT, reason="oneformer.ops._C is not built")
def test_cpp_and_pytorch_kernels_agree_and_gradients_reach_every_parameter():
    decoder = _tiny_decoder().eval()
    # At init the query cannot move the sampling points or weights (both weights are zero), so the positional and
    # level embeddings get exactly zero gradient; perturb those weights so that every parameter matters.
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in decoder.modules():
            if isinstance(m, MSDeformAttn):
                for lin in (m.sampling_offsets, m.attention_weights):
                    lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.05)
    feats = _features(_sizes_for_image(64, 96))
    results = {}
    for impl in ("cpp", "pytorch"):
        assert _set_impl(decoder, impl) == 2
        decoder.zero_grad(set_to_none=True)
        outputs = decoder.forward_features(feats)
        _loss(outputs).backward()
        grads = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
        results[impl] = ([t.detach() for t in (outputs[0], *outputs[2])], grads)

    (out_c, grads_c), (out_p, grads_p) = results["cpp"], results["pytorch"]
    for a, b in zip(out_c, out_p):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    names = [n for n, _ in decoder.named_parameters()]
    assert set(grads_c) == set(names), sorted(set(names) - set(grads_c))
    assert set(grads_p) == set(names)
    for n in names:
        assert torch.isfinite(grads_c[n]).all(), n
        scale = max(1e-3, grads_p[n].abs().max().item())
        torch.testing.assert_close(grads_c[n], grads_p[n], rtol=1e-3, atol=1e-4 * scale, msg=n)
        # GroupNorm(32, 32) has one channel per group, which cancels a conv bias in front of it exactly
        if not re.fullmatch(r"input_proj\.\d+\.0\.bias", n):
            assert grads_c[n].abs().sum() > 0, f"no gradient reaches {n}"


def test_training_mode_forward_backward():
    decoder = _tiny_decoder().train()
    feats = _features(_sizes_for_image(32, 64), batch=1)
    outputs = decoder(feats)
    _loss(outputs).backward()
    assert all(p.grad is not None for p in decoder.parameters())


# ------------------------------------------------------------------------------------------------------------------
# (d) precision

def test_fp32_precision_ignores_surrounding_autocast():
    decoder = _tiny_decoder().eval()
    assert decoder.precision == "fp32"
    feats = _features(_sizes_for_image(64, 96))
    with torch.no_grad():
        plain = decoder(feats)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = decoder(feats)
            # reduced-precision backbone outputs are cast to float32 first
            from_bf16 = decoder({k: v.bfloat16() for k, v in feats.items()})
    for a, b in zip((plain[0], *plain[2]), (under[0], *under[2])):
        assert b.dtype == torch.float32
        assert torch.equal(a, b)
    assert torch.equal(plain[3], under[3]) and torch.equal(plain[4], under[4])
    assert all(t.dtype == torch.float32 for t in (from_bf16[0], *from_bf16[2]))


def test_autocast_precision_follows_autocast():
    decoder = _tiny_decoder(PIXEL_DECODER_PRECISION="autocast").eval()
    assert decoder.precision == "autocast"
    feats = _features(_sizes_for_image(64, 96))
    reference = _tiny_decoder().eval()  # same seed -> same weights, fp32 precision
    with torch.no_grad():
        ref = reference(feats)
        plain = decoder(feats)  # no autocast around: identical to fp32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = decoder(feats)
        # outside autocast, bfloat16 features are brought to the parameters' dtype
        from_bf16 = decoder({k: v.bfloat16() for k, v in feats.items()})
    for a, b in zip((ref[0], *ref[2]), (plain[0], *plain[2])):
        assert torch.equal(a, b)
    assert amp[0].dtype == torch.bfloat16  # the 1x1 conv ran under autocast
    for t in (amp[0], *amp[2]):
        assert torch.isfinite(t.float()).all()
    assert [tuple(t.shape) for t in amp[2]] == [tuple(t.shape) for t in ref[2]]
    assert torch.equal(amp[3], ref[3]) and torch.equal(amp[4], ref[4])
    assert from_bf16[0].dtype == torch.float32


def test_invalid_precision_raises():
    with pytest.raises(ValueError, match=r"MODEL\.SEM_SEG_HEAD\.PIXEL_DECODER_PRECISION.*fp32.*autocast"):
        _tiny_decoder(PIXEL_DECODER_PRECISION="fp16")


# ------------------------------------------------------------------------------------------------------------------
# (e) initialization

def _bound_ok(w, bound):
    """Uniform(-bound, bound) init: inside the bound and filling most of it."""
    m = w.abs().max().item()
    return 0.8 * bound < m <= bound + 1e-7


def test_initialization():
    decoder = _tiny_decoder(seed=3)
    conv_dim, n_heads, n_levels, n_points = 32, 2, 3, 4

    level_embed = decoder.transformer.level_embed
    assert level_embed.shape == (3, conv_dim)
    assert level_embed.abs().sum() > 0
    assert 0.6 < level_embed.std().item() < 1.4  # N(0, 1), not xavier (bound ~0.42 here)

    # ring-shaped offsets: head h points at angle 2*pi*h/M (scaled to the unit square), point k at distance k+1
    ring = []
    for h in range(n_heads):
        c, s = math.cos(2 * math.pi * h / n_heads), math.sin(2 * math.pi * h / n_heads)
        mx = max(abs(c), abs(s))
        ring += [[(k + 1) * c / mx, (k + 1) * s / mx] for _ in range(n_levels) for k in range(n_points)]
    ring = torch.tensor(ring).flatten()
    for layer in decoder.transformer.encoder.layers:
        attn = layer.self_attn
        assert torch.equal(attn.sampling_offsets.weight, torch.zeros_like(attn.sampling_offsets.weight))
        torch.testing.assert_close(attn.sampling_offsets.bias.detach(), ring)
        assert not attn.attention_weights.weight.any() and not attn.attention_weights.bias.any()
        for lin in (attn.value_proj, attn.output_proj, layer.linear1, layer.linear2):
            fan_out, fan_in = lin.weight.shape
            assert _bound_ok(lin.weight, math.sqrt(6 / (fan_in + fan_out)))  # xavier_uniform
        assert not attn.value_proj.bias.any() and not attn.output_proj.bias.any()
        for norm in (layer.norm1, layer.norm2):
            assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()

    for proj in decoder.input_proj:
        conv, gn = proj
        assert isinstance(gn, torch.nn.GroupNorm) and gn.num_groups == 32
        assert not conv.bias.any()
        assert _bound_ok(conv.weight, math.sqrt(6 / (conv.in_channels + conv.out_channels)))  # xavier, gain 1

    # c2_xavier_fill = kaiming_uniform(a=1): bound sqrt(3 / fan_in); bias (if any) zero
    for conv in (decoder.mask_features, decoder.adapter_1, decoder.layer_1):
        fan_in = conv.weight[0].numel()
        assert _bound_ok(conv.weight, math.sqrt(3 / fan_in))
        if conv.bias is not None:
            assert not conv.bias.any()
    assert decoder.adapter_1.bias is None and decoder.layer_1.bias is None
    assert decoder.mask_features.bias is not None


# ------------------------------------------------------------------------------------------------------------------
# (f) PositionEmbeddingSine

def _pe_by_hand(F_, i, j, H, W, temperature=10000.0, normalize=False, scale=2 * math.pi):
    y, x = float(i + 1), float(j + 1)
    if normalize:
        y = y / (H + 1e-6) * scale
        x = x / (W + 1e-6) * scale
    vals = []
    for coord in (y, x):
        for k in range(F_):
            arg = coord / temperature ** (2 * (k // 2) / F_)
            vals.append(math.sin(arg) if k % 2 == 0 else math.cos(arg))
    return torch.tensor(vals)


@pytest.mark.parametrize("normalize", [False, True])
def test_position_embedding_values(normalize):
    pe = PositionEmbeddingSine(4, normalize=normalize)
    H, W = 3, 5
    out = pe(torch.randn(2, 7, H, W))
    assert out.shape == (2, 8, H, W) and out.dtype == torch.float32
    for i, j in [(0, 0), (2, 4), (1, 3)]:
        torch.testing.assert_close(out[1, :, i, j], _pe_by_hand(4, i, j, H, W, normalize=normalize))
    torch.testing.assert_close(out[0], out[1])


def test_position_embedding_temperature_and_scale():
    pe = PositionEmbeddingSine(6, temperature=20, normalize=True, scale=1.5)
    out = pe(torch.zeros(1, 1, 4, 2))
    assert out.shape == (1, 12, 4, 2)
    torch.testing.assert_close(out[0, :, 3, 1], _pe_by_hand(6, 3, 1, 4, 2, temperature=20, normalize=True, scale=1.5))
    with pytest.raises(ValueError):
        PositionEmbeddingSine(8, scale=1.0)  # scale needs normalize
    with pytest.raises(ValueError):
        PositionEmbeddingSine(5)


def test_position_embedding_ignores_values_and_keeps_dtype():
    pe = PositionEmbeddingSine(16, normalize=True)
    x = torch.randn(2, 3, 6, 4, requires_grad=True)
    a = pe(x)
    assert not a.requires_grad
    assert torch.equal(a, pe(torch.zeros(2, 3, 6, 4)))
    assert torch.equal(a, pe(torch.full((2, 3, 6, 4), 1e4)))
    half = pe(torch.randn(2, 3, 6, 4).half())
    assert half.dtype == torch.float16 and torch.equal(half, a.detach().half())  # float32 math, cast at the end
    with torch.device("meta"):
        assert pe(torch.empty(1, 3, 5, 7)).shape == (1, 32, 5, 7)


def test_position_embedding_normalized_range_and_mask():
    pe = PositionEmbeddingSine(8, normalize=True)
    H, W = 4, 6
    out = pe(torch.zeros(1, 1, H, W))
    assert out.abs().max() <= 1.0
    # channel 0/1 of y = sin/cos of y in (0, 2*pi]: the last row is at 2*pi, the first at 2*pi/H
    torch.testing.assert_close(out[0, 1, -1], torch.ones(W), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[0, 0, 0], torch.full((W,), math.sin(2 * math.pi / H)))
    torch.testing.assert_close(out[0, 8, :, 0], torch.full((H,), math.sin(2 * math.pi / W)))
    # a padding mask on the right: x is normalized by the number of valid columns
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[:, :, 4:] = True
    masked = pe(torch.zeros(1, 1, H, W), mask)
    torch.testing.assert_close(masked[0, 9, :, 3], torch.ones(H), atol=1e-5, rtol=0)  # cos(2*pi) at the last valid
    torch.testing.assert_close(masked[0, 8:, :, 4], masked[0, 8:, :, 3])  # cumsum stays constant over padding
    torch.testing.assert_close(masked[0, :8, :, :4], out[0, :8, :, :4])  # y unaffected in the valid columns
    # in padded columns the y cumsum is 0: sin channels 0, cos channels 1
    assert not masked[0, 0:8:2, :, 4:].any()
    assert torch.equal(masked[0, 1:8:2, :, 4:], torch.ones(4, H, 2))


@pytest.mark.parametrize("normalize", [False, True])
def test_position_embedding_separable_path_equals_full_map(normalize):
    # without a mask, y and x are encoded once per row / column and broadcast; an all-valid mask takes the full
    # (B, H, W) cumulative sums: the values must be bitwise the same
    pe = PositionEmbeddingSine(128, normalize=normalize)
    x = torch.zeros(2, 1, 37, 53)
    fast = pe(x)
    full = pe(x, torch.zeros(2, 37, 53, dtype=torch.bool))
    assert fast.shape == full.shape == (2, 256, 37, 53)
    assert fast.stride() == full.stride()
    assert torch.equal(fast, full)

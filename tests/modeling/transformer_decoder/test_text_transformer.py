"""Tests for the OneFormer text encoder (CLIP-style causal transformer with EOT pooling)."""
import math

import pytest
import torch
import torch.nn.functional as F

from oneformer.modeling.transformer_decoder.text_transformer import TextTransformer
from tests.reference import load_reference

EOT = 49407
SOT = 49406


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TextTransformer(context_length=77, width=256, layers=6, vocab_size=49408).eval()


def _ids(rows, length=77):
    """rows: list of lists of non-special token ids -> (len(rows), length) SOT + ids + EOT + zero padding."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for r, toks in enumerate(rows):
        seq = [SOT] + list(toks) + [EOT]
        out[r, : len(seq)] = torch.tensor(seq)
    return out


def test_state_dict_matches_checkpoint_layout(model):
    entries = load_reference("keys_ade20k_swin_large.json")
    prefix = "text_encoder."
    expected = [(n[len(prefix):], tuple(s), d) for n, s, d in entries if n.startswith(prefix)]
    assert len(expected) == 76
    sd = model.state_dict()
    got = [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    assert dict((k, (s, d)) for k, s, d in got) == dict((k, (s, d)) for k, s, d in expected)
    # key order follows the checkpoint too (not required by load_state_dict, but keeps dumps comparable)
    assert [k for k, _, _ in got] == [k for k, _, _ in expected]
    assert "attn_mask" not in sd  # causal mask is a non-persistent buffer
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(math.prod(s) for _, s, _ in expected)


def test_strict_load_round_trip(model):
    other = TextTransformer()
    other.load_state_dict(model.state_dict(), strict=True)
    x = _ids([[320, 1125], [320, 1125, 593, 320, 2569]])
    with torch.no_grad():
        assert torch.allclose(other.eval()(x), model(x))


def test_init_statistics():
    torch.manual_seed(1)
    m = TextTransformer()
    width, layers = 256, 6
    assert m.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert m.positional_embedding.std().item() == pytest.approx(0.01, rel=0.05)
    proj_std = width ** -0.5 * (2 * layers) ** -0.5
    blk = m.transformer.resblocks[0]
    assert blk.attn.in_proj_weight.std().item() == pytest.approx(width ** -0.5, rel=0.05)
    assert blk.attn.out_proj.weight.std().item() == pytest.approx(proj_std, rel=0.05)
    assert blk.mlp.c_fc.weight.std().item() == pytest.approx((2 * width) ** -0.5, rel=0.05)
    assert blk.mlp.c_proj.weight.std().item() == pytest.approx(proj_std, rel=0.05)
    assert blk.attn.num_heads == 4


def test_output_shape_and_flattened_batch(model):
    B, T = 2, 3
    x = _ids([[320 + i] * (i + 1) for i in range(B * T)])
    with torch.no_grad():
        flat = model(x)
        assert flat.shape == (B * T, 256)
        nested = model(x.view(B, T, 77))
    assert nested.shape == (B, T, 256)
    assert torch.allclose(nested.reshape(B * T, 256), flat, atol=1e-6)
    assert torch.isfinite(flat).all()


def _reference_forward(m, text):
    """Independent re-computation with explicit per-head attention (batch-first math) from the module weights."""
    x = m.token_embedding.weight[text] + m.positional_embedding
    L, W = text.shape[1], m.width
    h = W // 64
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    for blk in m.transformer.resblocks:
        y = F.layer_norm(x, (W,), blk.ln_1.weight, blk.ln_1.bias)
        q, k, v = (y @ blk.attn.in_proj_weight.T + blk.attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(t.shape[0], L, h, W // h).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(W // h)
        att = att.masked_fill(causal, float("-inf")).softmax(-1)
        o = (att @ v).transpose(1, 2).reshape(x.shape[0], L, W)
        x = x + blk.attn.out_proj(o)
        y = F.layer_norm(x, (W,), blk.ln_2.weight, blk.ln_2.bias)
        z = blk.mlp.c_fc(y)
        x = x + blk.mlp.c_proj(z * torch.sigmoid(1.702 * z))
    x = F.layer_norm(x, (W,), m.ln_final.weight, m.ln_final.bias)
    return x[torch.arange(x.shape[0]), text.argmax(-1)]


def test_matches_reference_math(model):
    x = _ids([[320, 1125, 593], [550, 34572, 1125, 11, 12, 13, 14], []])
    with torch.no_grad():
        got = model(x)
        ref = _reference_forward(model, x)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
    model.train()
    try:
        with torch.no_grad():
            assert torch.allclose(model(x), ref, atol=1e-5, rtol=1e-4)  # no dropout: train == eval
    finally:
        model.eval()


def test_causality(model):
    base = _ids([[320, 1125, 593, 320, 2569]])  # EOT at position 6
    eot_pos = int(base.argmax(-1))
    assert eot_pos == 6
    with torch.no_grad():
        ref = model(base)
        after = base.clone()
        after[0, eot_pos + 1] = 1234  # inside the padding, after EOT
        after[0, 40] = 4321
        assert torch.allclose(model(after), ref, atol=1e-6)
        before = base.clone()
        before[0, 2] = 2533  # a token before EOT
        assert not torch.allclose(model(before), ref, atol=1e-4)


def test_pools_at_argmax_position(model):
    # a truncated row has EOT at the last position; pooling must pick that position
    x = torch.full((1, 77), 320, dtype=torch.long)
    x[0, 0] = SOT
    x[0, -1] = EOT
    with torch.no_grad():
        out = model(x)
        ref = _reference_forward(model, x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4)


def test_gradient_reaches_token_embedding():
    torch.manual_seed(0)
    m = TextTransformer(layers=2)
    x = _ids([[320, 1125], [550, 34572]])
    m(x).pow(2).sum().backward()
    g = m.token_embedding.weight.grad
    assert g is not None
    assert g[[320, 1125, 550, 34572, SOT, EOT]].abs().sum(-1).gt(0).all()
    assert g[5000].abs().sum() == 0  # unused id gets no gradient
    assert m.positional_embedding.grad is not None and m.positional_embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 76), (2, 78), (77,), (3, 77, 5)])
def test_wrong_context_length_raises(model, shape):
    with pytest.raises(ValueError, match="77"):
        model(torch.zeros(shape, dtype=torch.long))


def test_float_ids_rejected(model):
    with pytest.raises(TypeError):
        model(torch.zeros(2, 77))


def test_custom_context_length():
    m = TextTransformer(context_length=16, width=128, layers=1, vocab_size=100).eval()
    x = torch.zeros(3, 16, dtype=torch.long)
    x[:, 3] = 99
    assert m(x).shape == (3, 128)
    assert m.transformer.resblocks[0].attn.num_heads == 2
    with pytest.raises(ValueError, match="16"):
        m(torch.zeros(3, 77, dtype=torch.long))

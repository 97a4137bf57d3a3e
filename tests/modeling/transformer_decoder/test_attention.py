"""multi_head_attention (SDPA with an nn.MultiheadAttention's weights) equals nn.MultiheadAttention itself."""
import pytest
import torch
from torch import nn

from oneformer.modeling.transformer_decoder.attention import multi_head_attention


@pytest.mark.parametrize("mask_kind", [None, "2d", "3d_batch", "4d", "3d_heads"])
def test_matches_nn_multihead_attention(mask_kind):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4).double().eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    lq, lk, b = 5, 7, 3
    q, k, v = (torch.randn(n, b, 32, dtype=torch.float64) for n in (lq, lk, lk))
    blocked = torch.rand(b, lq, lk) > 0.6
    blocked[..., 0] = False  # no row fully blocked
    per_head = blocked.repeat_interleave(4, dim=0)  # (B*h, Lq, Lk), nn.MultiheadAttention's layout
    masks = {None: (None, None), "2d": (blocked[0], blocked[0]), "3d_batch": (blocked, per_head),
             "4d": (blocked.unsqueeze(1), per_head), "3d_heads": (per_head, per_head)}
    ours_mask, ref_mask = masks[mask_kind]
    ours = multi_head_attention(mha, q, k, v, ours_mask)
    ref = mha(q, k, v, attn_mask=ref_mask, need_weights=False)[0]
    assert torch.allclose(ours, ref, atol=1e-12)


@pytest.mark.parametrize("onednn", [False, True])
def test_separable_value_attention_matches_multi_head_attention(onednn):
    """Values that are a sine positional encoding (rows and columns in separate channels): the separable kernel
    gives the same attention as SDPA on the full value map."""
    from oneformer.modeling.cpu_linear import onednn_linear_available, use_onednn_linear
    from oneformer.modeling.transformer_decoder.attention import separable_value_attention
    from oneformer.modeling.transformer_decoder.position_encoding import PositionEmbeddingSine
    from oneformer.ops.separable_attention import separable_kernel_applies

    if not separable_kernel_applies(torch.zeros(1), training=False) and not torch.is_grad_enabled():
        pytest.skip("oneformer.ops._C is not built")
    if onednn and not onednn_linear_available():
        pytest.skip("this PyTorch has no oneDNN linear op")
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(64, 4).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()
    if onednn:
        use_onednn_linear(mha)
    pe = PositionEmbeddingSine(32, normalize=True)(torch.zeros(2, 1, 9, 13))  # (B, 64, H, W)
    memory = pe.flatten(2).permute(2, 0, 1)
    key = memory + torch.randn_like(memory)
    query = torch.randn(20, 2, 64)
    with torch.no_grad():
        ref = multi_head_attention(mha, query, key, memory)
        got = separable_value_attention(mha, query, key, pe[0, :32, :, 0].t(), pe[0, 32:, 0, :].t())
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

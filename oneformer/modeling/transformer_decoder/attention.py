"""Multi-head attention through ``F.scaled_dot_product_attention`` with an ``nn.MultiheadAttention``'s weights.

The decoders keep ``nn.MultiheadAttention`` modules so checkpoints keep their names (``in_proj_weight``,
``in_proj_bias``, ``out_proj.*``), but call this function: SDPA picks a fused kernel where one applies, never
materializes the attention weights it is not asked for, and takes a (B, 1, Lq, Lk) mask for all heads.
:func:`separable_value_attention` is the same attention for values that split into a row and a column term (the
class transformer's), on the CPU kernel of that name.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ...ops.separable_attention import separable_value_attention as separable_kernel
from ..cpu_linear import OneDNNLinear, onednn_feature_product, onednn_linear

__all__ = ["multi_head_attention", "separable_value_attention"]


def _in_projections(mha: nn.MultiheadAttention):
    """The packed input projections of ``mha``: (w_q, w_k, w_v), (b_q, b_k, b_v) (Nones without bias), and the
    linear to apply them with (oneDNN's for a model switched to oneDNN CPU linears, MODEL.CPU_LINEAR_BACKEND)."""
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    linear = onednn_linear if isinstance(mha.out_proj, OneDNNLinear) else F.linear
    return mha.in_proj_weight.chunk(3), biases, linear


def multi_head_attention(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    blocked: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Same result as ``mha(query, key, value, attn_mask=blocked)[0]`` for a sequence-first ``mha``.

    Args:
        mha: an ``nn.MultiheadAttention`` with packed input projections and batch_first=False.
        query: (Lq, B, C); key, value: (Lk, B, C).
        blocked: optional bool mask, True where a query may NOT attend to a key (nn.MultiheadAttention's
            convention), shaped (Lq, Lk), (B, Lq, Lk), (B, 1, Lq, Lk) or (B * heads, Lq, Lk).
    Returns:
        (Lq, B, C).
    """
    Lq, B, C = query.shape
    Lk = key.shape[0]
    h = mha.num_heads
    (w_q, w_k, w_v), (b_q, b_k, b_v), linear = _in_projections(mha)
    # (L, B, C) -> (B, h, L, C/h)
    q = linear(query, w_q, b_q).view(Lq, B, h, C // h).permute(1, 2, 0, 3)
    k = linear(key, w_k, b_k).view(Lk, B, h, C // h).permute(1, 2, 0, 3)
    v = linear(value, w_v, b_v).view(Lk, B, h, C // h).permute(1, 2, 0, 3)
    allowed = None
    if blocked is not None:
        if blocked.dim() == 3 and blocked.shape[0] == B * h and h > 1:
            blocked = blocked.view(B, h, Lq, Lk)
        elif blocked.dim() == 3:
            blocked = blocked.unsqueeze(1)
        allowed = ~blocked  # SDPA's boolean mask marks the pairs that take part
    dropout = mha.dropout if mha.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
    out = out.permute(2, 0, 1, 3).reshape(Lq, B, C)
    return mha.out_proj(out)


def separable_value_attention(
    mha: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    value_rows: torch.Tensor,
    value_cols: torch.Tensor,
) -> torch.Tensor:
    """``multi_head_attention(mha, query, key, value)`` for an H x W map of values whose first C/2 channels depend on
    the row only and the last C/2 on the column only (a sine positional encoding), on the CPU kernel
    ``oneformer::separable_value_attention`` (float32 inference; see
    :func:`~oneformer.ops.separable_attention.separable_kernel_applies`). Agrees with it up to float rounding.

    Args:
        query: (Lq, B, C); key: (H*W, B, C), positions row-major.
        value_rows: (H, C/2), the first channels of the values along a column; value_cols: (W, C/2), the last
            channels along a row (the same for every image).
    Returns:
        (Lq, B, C).
    """
    Lq, B, C = query.shape
    h = mha.num_heads
    d = C // h
    (w_q, w_k, w_v), (b_q, _, b_v), linear = _in_projections(mha)
    q = (linear(query, w_q, b_q) * d**-0.5).view(Lq, B, h, d).permute(1, 2, 0, 3)  # SDPA's scale
    # keys transposed, (B, C, H*W), without the key bias: it adds q·b_k to all of a query's scores, which the
    # softmax cancels
    key_t = key.permute(1, 2, 0)
    if linear is onednn_linear:
        kt = onednn_feature_product(w_k.expand(B, C, C), key_t)
    else:
        kt = torch.matmul(w_k, key_t)
    half = C // 2
    # the value at (y, x) is w_v[:, :C/2] value_rows[y] + w_v[:, C/2:] value_cols[x] + b_v
    vy = linear(value_rows, w_v[:, :half]).view(-1, h, d).transpose(0, 1)
    vx = linear(value_cols, w_v[:, half:]).view(-1, h, d).transpose(0, 1)
    out = separable_kernel(q, kt.view(B, h, d, -1), vy, vx)
    out = out.permute(2, 0, 1, 3).reshape(Lq, B, C)
    if b_v is not None:
        out = out + b_v  # the attention weights sum to 1
    return mha.out_proj(out)

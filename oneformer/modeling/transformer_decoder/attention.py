"""Multi-head attention through ``F.scaled_dot_product_attention`` with an ``nn.MultiheadAttention``'s weights.

The decoders keep ``nn.MultiheadAttention`` modules so checkpoints keep their names (``in_proj_weight``,
``in_proj_bias``, ``out_proj.*``), but call this function: SDPA picks a fused kernel where one applies, never
materializes the attention weights it is not asked for, and takes a (B, 1, Lq, Lk) mask for all heads.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..cpu_linear import OneDNNLinear, onednn_linear

__all__ = ["multi_head_attention"]


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
    w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    if mha.in_proj_bias is not None:
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3)
    else:
        b_q = b_k = b_v = None
    # a model switched to oneDNN CPU linears (MODEL.CPU_LINEAR_BACKEND) projects the inputs that way too
    linear = onednn_linear if isinstance(mha.out_proj, OneDNNLinear) else F.linear
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

"""``MSDeformAttn``: the multi-scale deformable attention layer (parameter names and init as in the original)."""
import math
import warnings
from typing import Optional

import torch
from torch import nn
from torch.nn.init import constant_, xavier_uniform_

from ..utils.tracing import is_tracing as _tracing
from .functional import ms_deform_attn

__all__ = ["MSDeformAttn"]


def _softmax_last(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension. In float32 CPU inference it is written out (max, exp, sum): PyTorch's CPU
    softmax is slow for a short last dimension (n_levels * n_points = 12 here: 4.6 ms against 0.8 ms for Swin-L's
    5376 x 8 rows) and the result differs by ~1e-7."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_grad_enabled() or _tracing()
            or x.shape[-1] > 64):
        return x.softmax(-1)
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e.div_(e.sum(-1, keepdim=True))


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned sampling points around its reference point on each level.

    Args:
        d_model: channels C of queries and values.
        n_levels: number of feature levels L.
        n_heads: attention heads M (C must be divisible by M).
        n_points: sampling points P per head and level.
        impl: implementation passed to :func:`oneformer.ops.ms_deform_attn` ("auto" by default).
    Parameters (checkpoint names): ``sampling_offsets`` (M*L*P*2, C), ``attention_weights`` (M*L*P, C),
    ``value_proj`` (C, C), ``output_proj`` (C, C).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 impl: str = "auto"):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model must be divisible by n_heads, got {d_model} and {n_heads}")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1) != 0:
            warnings.warn(f"MSDeformAttn: the per-head dimension {head_dim} is not a power of 2; the CUDA kernel "
                          "is most efficient when it is.")
        self.im2col_step = 128
        self.impl = impl
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self._reset_parameters()

    def _reset_parameters(self):
        # Offsets start at zero weight with a bias that points head h in direction 2*pi*h/M, point k at distance k+1,
        # so the heads initially look around the reference point in a ring.
        constant_(self.sampling_offsets.weight.data, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid_init = (grid_init / grid_init.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid_init = grid_init.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid_init[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias = nn.Parameter(grid_init.view(-1))
        constant_(self.attention_weights.weight.data, 0.0)
        constant_(self.attention_weights.bias.data, 0.0)
        xavier_uniform_(self.value_proj.weight.data)
        constant_(self.value_proj.bias.data, 0.0)
        xavier_uniform_(self.output_proj.weight.data)
        constant_(self.output_proj.bias.data, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C).
            reference_points: (N, Lq, L, 2) in [0, 1] (top-left (0, 0), bottom-right (1, 1)), or (N, Lq, L, 4)
                boxes (cx, cy, w, h).
            input_flatten: (N, S, C), all levels flattened and concatenated.
            input_spatial_shapes: (L, 2) int64 (H_l, W_l).
            input_level_start_index: (L,) int64.
            input_padding_mask: optional (N, S) bool, True at padding positions (their values are zeroed).
        Returns:
            (N, Lq, C).
        """
        N, Len_q, _ = query.shape
        N, Len_in, _ = input_flatten.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, Len_in, self.n_heads, self.d_model // self.n_heads)
        sampling_offsets = self.sampling_offsets(query).view(
            N, Len_q, self.n_heads, self.n_levels, self.n_points, 2
        )
        attention_weights = self.attention_weights(query).view(N, Len_q, self.n_heads, self.n_levels * self.n_points)
        attention_weights = _softmax_last(attention_weights).view(N, Len_q, self.n_heads, self.n_levels,
                                                                  self.n_points)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalize by (W, H)
            offset_normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)
            offset_normalizer = offset_normalizer.to(device=sampling_offsets.device, dtype=sampling_offsets.dtype)
            ref = reference_points[:, :, None, :, None, :]
            norm = offset_normalizer[None, None, None, :, None, :]
            if _tracing() or not ref.dtype == norm.dtype == sampling_offsets.dtype:
                sampling_locations = ref + sampling_offsets / norm
            else:
                # the same values (ref + offsets / norm) in one pass: two broadcasting ops over this shape, whose
                # innermost dimension is 2, took ~7 ms per layer on CPU for Swin-L's 5376 tokens
                sampling_locations = torch.addcdiv(ref, sampling_offsets, norm)
        elif reference_points.shape[-1] == 4:
            sampling_locations = (
                reference_points[:, :, None, :, None, :2]
                + sampling_offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5
            )
        else:
            raise ValueError(
                f"reference_points must end in 2 (points) or 4 (boxes), got shape {tuple(reference_points.shape)}"
            )
        if value.dtype != sampling_locations.dtype and not torch.is_autocast_enabled(value.device.type):
            # e.g. a half-precision layer fed float32 reference points: sample at full precision
            sampling_locations = sampling_locations.to(
                torch.float32 if value.dtype in (torch.float16, torch.bfloat16) else value.dtype)
            attention_weights = attention_weights.to(sampling_locations.dtype)
        output = ms_deform_attn(
            value, input_spatial_shapes, input_level_start_index, sampling_locations, attention_weights,
            self.im2col_step, self.impl,
        )
        return self.output_proj(output)

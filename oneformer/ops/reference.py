"""Pure-PyTorch reference of multi-scale deformable attention (runs anywhere, differentiable by autograd)."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_pytorch"]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Per-level bilinear sampling with ``grid_sample`` (zero padding, align_corners=False), weighted over points.

    Args:
        value: (N, S, M, D) with S = sum of H_l * W_l, levels stacked in order.
        spatial_shapes: L pairs (H_l, W_l) as Python ints, or an (L, 2) integer tensor.
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) normalized to [0, 1] per level.
        attention_weights: (N, Lq, M, L, P).
    Returns:
        (N, Lq, M * D) in the dtype of ``value``.
    """
    if torch.is_tensor(spatial_shapes):
        spatial_shapes = spatial_shapes.tolist()
    shapes: List[Tuple[int, int]] = [(int(h), int(w)) for h, w in spatial_shapes]
    N, _, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in shapes], dim=1)
    # grid_sample works on [-1, 1]; align_corners=False maps -1 / +1 to the outer pixel edges, as loc 0 / 1 do.
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(N * M, D, h, w)
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P)
        sampled.append(
            F.grid_sample(value_l, grid_l.to(value_l.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights.to(value.dtype)).sum(-1)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()

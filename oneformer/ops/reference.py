"""Pure-PyTorch reference of multi-scale deformable attention (runs anywhere, differentiable by autograd)."""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_pytorch", "ms_deform_attn_pytorch_levels"]


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    spatial_shapes: Sequence[Tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Per-level bilinear sampling with ``grid_sample`` (zero padding, align_corners=False), weighted over points.

    Args:
        value: (N, S, M, D) with S = sum of H_l * W_l, levels stacked in order.
        spatial_shapes: L pairs (H_l, W_l) as Python ints, or an (L, 2) integer tensor. Inside ``torch.jit.trace`` /
            ``torch.onnx.export`` a tensor is used as traced values (not read on the host), so a graph built from
            sizes computed in the graph follows the input size.
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) normalized to [0, 1] per level.
        attention_weights: (N, Lq, M, L, P).
    Returns:
        (N, Lq, M * D) in the dtype of ``value``.
    """
    if torch.is_tensor(spatial_shapes) and torch.jit.is_tracing():
        shapes = [tuple(row.unbind(0)) for row in spatial_shapes.unbind(0)]  # traced 0-d sizes
    else:
        if torch.is_tensor(spatial_shapes):
            spatial_shapes = spatial_shapes.tolist()
        shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    N, _, M, D = value.shape
    value_list = value.split([h * w for h, w in shapes], dim=1)
    # (N, H*W, M, D) -> (N*M, D, H, W)
    value_maps = [v.flatten(2).transpose(1, 2).reshape(N * M, D, h, w) for v, (h, w) in zip(value_list, shapes)]
    return ms_deform_attn_pytorch_levels(value_maps, sampling_locations, attention_weights)


def ms_deform_attn_pytorch_levels(
    value_maps: List[torch.Tensor],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The reference on per-level value maps: every level size comes from a map's shape, none from a host value.

    This is the export-friendly form (the flattened ``value`` plus ``spatial_shapes`` need the level sizes to split
    and reshape it); :func:`ms_deform_attn_pytorch` reshapes its input into these maps and calls this function, so the
    two give identical results.

    Args:
        value_maps: L tensors (N * M, D, H_l, W_l): level l's values of batch element n, head m at row n * M + m.
        sampling_locations: (N, Lq, M, L, P, 2), (x, y) normalized to [0, 1] per level.
        attention_weights: (N, Lq, M, L, P).
    Returns:
        (N, Lq, M * D) in the dtype of the value maps.
    """
    N, Lq, M, L, P, _ = sampling_locations.shape
    D = value_maps[0].shape[1]
    dtype = value_maps[0].dtype
    # grid_sample works on [-1, 1]; align_corners=False maps -1 / +1 to the outer pixel edges, as loc 0 / 1 do.
    grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, value_l in enumerate(value_maps):
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Lq, P)
        sampled.append(
            F.grid_sample(value_l, grid_l.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Lq, M, L, P) -> (N*M, 1, Lq, L*P)
    weights = attention_weights.transpose(1, 2).reshape(N * M, 1, Lq, L * P)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights.to(dtype)).sum(-1)
    return out.view(N, M * D, Lq).transpose(1, 2).contiguous()

"""Sine positional encoding of a 2-D feature map (the DETR "sine" variant used by OneFormer / Mask2Former).

For a map of size H x W, position (i, j) (0-based row i, column j) gets the coordinates

    y = cumsum of the not-padding mask down the column   (= i + 1 without padding)
    x = cumsum of the not-padding mask along the row     (= j + 1 without padding)

optionally normalized as ``y / (y_last + 1e-6) * scale`` (y_last = the last value of the cumulative sum, i.e. the
number of valid rows; likewise for x), with ``scale`` = 2*pi by default. With F = ``num_pos_feats`` and
``dim_t[k] = temperature ** (2 * (k // 2) / F)`` for k = 0..F-1, each coordinate c gives F channels

    sin(c / dim_t[0]), cos(c / dim_t[1]), sin(c / dim_t[2]), cos(c / dim_t[3]), ...

(sine on even k, cosine on odd k; dim_t[2m] == dim_t[2m+1]). The output stacks the F y-channels first, then the F
x-channels: shape (B, 2F, H, W).
"""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine positional encoding (no parameters, no buffers).

    Args:
        num_pos_feats: F (even), channels per coordinate; the output has 2F channels.
        temperature: base of the geometric progression of wavelengths.
        normalize: map each coordinate to (0, scale] by dividing by its last cumulative value (+1e-6).
        scale: multiplier used when ``normalize`` is True (default 2*pi); passing it requires ``normalize=True``.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = False,
                 scale: Optional[float] = None):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used with normalize=True")
        if num_pos_feats <= 0 or num_pos_feats % 2 != 0:
            raise ValueError(
                f"PositionEmbeddingSine: num_pos_feats must be a positive even number, got {num_pos_feats}")
        self.num_pos_feats = int(num_pos_feats)
        self.temperature = temperature
        self.normalize = bool(normalize)
        self.scale = 2 * math.pi if scale is None else float(scale)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W). Only its shape, device and dtype are used, never its values.
            mask: optional (B, H, W) bool, True at padding positions (excluded from the cumulative sums).
        Returns:
            (B, 2 * num_pos_feats, H, W): y-channels then x-channels. Always computed in float32 (float64 if x is
            float64) and returned cast to x's dtype when x is floating point (float32 otherwise).
        """
        B, _, H, W = x.shape
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if mask is None:
            # without padding y depends on the row only and x on the column only: encode one column of y and one row
            # of x and broadcast them (the same values; sin/cos on H + W positions instead of H * W)
            y_embed = torch.ones((B, H, 1), dtype=compute_dtype, device=x.device).cumsum(1)
            x_embed = torch.ones((B, 1, W), dtype=compute_dtype, device=x.device).cumsum(2)
        else:
            if mask.shape != (B, H, W):
                raise ValueError(f"mask must be (B, H, W) = {(B, H, W)}, got {tuple(mask.shape)}")
            not_mask = (~mask.to(device=x.device, dtype=torch.bool)).to(compute_dtype)
            y_embed = not_mask.cumsum(1)
            x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale

        k = torch.arange(self.num_pos_feats, dtype=compute_dtype, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / self.num_pos_feats)

        def _encode(coord: torch.Tensor) -> torch.Tensor:  # (B, H, W) -> (B, H, W, F)
            arg = coord[..., None] / dim_t
            # pair (sin of channel 2m, cos of channel 2m+1) and flatten back: sin, cos, sin, cos, ...
            return torch.stack((arg[..., 0::2].sin(), arg[..., 1::2].cos()), dim=-1).flatten(-2)

        size = (B, H, W, self.num_pos_feats)
        pos = torch.cat((_encode(y_embed).expand(size), _encode(x_embed).expand(size)), dim=-1).permute(0, 3, 1, 2)
        if x.is_floating_point():
            pos = pos.to(x.dtype)
        return pos

    def extra_repr(self) -> str:
        return (f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
                f"normalize={self.normalize}, scale={self.scale:.6g}")

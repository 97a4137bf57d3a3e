"""ConvNeXt v1 backbone (Liu et al., CVPR 2022), registered as ``D2ConvNeXt``.

Input: images (B, 3, H, W). Stem: conv 4x4 / 4 + channels-first LayerNorm; stages 1..3 start with a channels-first
LayerNorm + conv 2x2 / 2 (sizes are floor-divided). Blocks: depthwise 7x7 conv -> channels-last LayerNorm (eps 1e-6) ->
pwconv1 (C -> 4C) -> GELU -> pwconv2 (4C -> C) -> layer scale ``gamma`` -> drop path -> residual.
Output: dict ``res2..res5`` (strides 4, 8, 16, 32; channels DIMS), NCHW, each through its own channels-first LayerNorm
``norm{i}``, filtered by MODEL.CONVNEXT.OUT_FEATURES.

Parameter names follow the original checkpoints (``downsample_layers.{i}.{0,1}``, ``stages.{i}.{j}``, ``norm{i}``).
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .common import D2BackboneMixin, init_trunc_normal
from .swin import DropPath

__all__ = ["LayerNorm", "Block", "ConvNeXt", "D2ConvNeXt"]


class LayerNorm(nn.Module):
    """LayerNorm over the channel dimension for ``channels_last`` (..., C) or ``channels_first`` (B, C, H, W) input."""

    def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
        super().__init__()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        self.normalized_shape = (normalized_shape,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]

    def extra_repr(self):
        return f"{self.normalized_shape[0]}, eps={self.eps}, data_format={self.data_format}"


class Block(nn.Module):
    """ConvNeXt block; (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim, drop_path=0.0, layer_scale_init_value=1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        if layer_scale_init_value > 0:
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))
        else:
            self.gamma = None
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class ConvNeXt(nn.Module):
    """ConvNeXt feature extractor; ``forward`` returns {"res{i+2}": (B, dims[i], H_i, W_i)} for i in out_indices."""

    def __init__(
        self,
        in_chans=3,
        depths=(3, 3, 9, 3),
        dims=(96, 192, 384, 768),
        drop_path_rate=0.0,
        layer_scale_init_value=1e-6,
        out_indices=(0, 1, 2, 3),
    ):
        super().__init__()
        assert len(depths) == len(dims) == 4, "ConvNeXt needs 4 stages (DEPTHS and DIMS of length 4)"
        self.dims = list(dims)
        self.out_indices = tuple(out_indices)

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                LayerNorm(dims[0], eps=1e-6, data_format="channels_first"),
            )
        )
        for i in range(1, 4):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm(dims[i - 1], eps=1e-6, data_format="channels_first"),
                    nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2),
                )
            )

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.stages = nn.ModuleList()
        cur = 0
        for i in range(4):
            self.stages.append(
                nn.Sequential(
                    *[
                        Block(dims[i], drop_path=dpr[cur + j], layer_scale_init_value=layer_scale_init_value)
                        for j in range(depths[i])
                    ]
                )
            )
            cur += depths[i]

        for i in self.out_indices:
            self.add_module(f"norm{i}", LayerNorm(dims[i], eps=1e-6, data_format="channels_first"))

        self.apply(partial(init_trunc_normal, types=(nn.Conv2d, nn.Linear)))

    def forward(self, x):
        outs = {}
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in self.out_indices:
                outs[f"res{i + 2}"] = getattr(self, f"norm{i}")(x)
        return outs


@BACKBONE_REGISTRY.register()
class D2ConvNeXt(D2BackboneMixin, ConvNeXt, Backbone):
    """Detectron2 wrapper built from MODEL.CONVNEXT.*; outputs res2..res5 filtered by MODEL.CONVNEXT.OUT_FEATURES."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.CONVNEXT
        super().__init__(
            in_chans=c.IN_CHANNELS,
            depths=list(c.DEPTHS),
            dims=list(c.DIMS),
            drop_path_rate=c.DROP_PATH_RATE,
            layer_scale_init_value=c.LSIT,
            out_indices=list(c.OUT_INDICES),
        )
        names = {f"res{i + 2}": i for i in self.out_indices}
        self._init_outputs(
            c.IN_CHANNELS,
            c.OUT_FEATURES,
            strides={n: 4 * 2**i for n, i in names.items()},
            channels={n: self.dims[i] for n, i in names.items()},
            unknown_error=(
                f"MODEL.CONVNEXT.OUT_FEATURES {{unknown}} are not produced by OUT_INDICES {list(self.out_indices)}"
            ),
        )

    def forward(self, x):
        self._check_input(x, "ConvNeXt", skip_channel_check=torch.jit.is_tracing())  # traced sizes: no check
        return self._select_outputs(super().forward(x))

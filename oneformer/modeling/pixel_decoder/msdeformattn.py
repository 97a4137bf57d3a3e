"""Multi-scale deformable-attention pixel decoder (``MSDeformAttnPixelDecoder``).

Pipeline for backbone features ``res2..res5`` (strides 4, 8, 16, 32) with the shipped configs:

1. The transformer levels (DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES, res3..res5) are taken coarse -> fine
   ([res5, res4, res3]) and projected by ``input_proj.{k}`` = 1x1 conv (with bias) + GroupNorm(32, conv_dim).
2. Each projected map gets a normalized sine positional encoding (conv_dim // 2 features per coordinate) to which the
   encoder adds ``level_embed[k]``; all levels are flattened, concatenated and refined by
   ``transformer.encoder.layers`` (multi-scale deformable self-attention, 4 points, post-norm, FFN 1024).
3. The encoder output is split back into per-level maps (1/32, 1/16, 1/8).
4. A small FPN walks down to COMMON_STRIDE over the remaining finer features (``adapter_i`` 1x1 conv + norm,
   ``layer_i`` 3x3 conv + norm + ReLU, bilinear upsampling of the coarser map): one level (res2) for 8 -> 4.
5. ``mask_features`` (1x1 conv, conv_dim -> mask_dim) on the finest map.

Parameter names match the original checkpoints (``input_proj``, ``transformer.level_embed``,
``transformer.encoder.layers.{i}.{self_attn,norm1,linear1,linear2,norm2}``, ``mask_features``, ``adapter_{i}``,
``layer_{i}``).

Precision (MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION): "fp32" (default, the original's behaviour) runs the whole
decoder with autocast disabled and float16/bfloat16 backbone features cast to float32 (float64 stays float64);
"autocast" runs it as called, so inside a surrounding ``torch.autocast`` the convolutions/linears (and, on CUDA, the
deformable attention) use the autocast dtype; outside autocast the features are cast to the parameters' dtype.
"""
import contextlib
import copy
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from fvcore.nn import weight_init
from torch import nn

from oneformer.ops import MSDeformAttn

from ..cpu_linear import row_chunked
from ..transformer_decoder.position_encoding import PositionEmbeddingSine

__all__ = [
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnPixelDecoder",
    "PRECISIONS",
]

PRECISIONS = ("fp32", "autocast")
_PRECISION_KEY = "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_PRECISION"


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'relu' or 'gelu', got {name!r}")


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """One post-norm encoder layer: deformable self-attention, then a ReLU FFN, each followed by add & LayerNorm.

    ``src = norm1(src + dropout1(self_attn(src + pos, ...)))``;
    ``src = norm2(src + dropout3(linear2(dropout2(relu(linear1(src))))))``.
    """

    def __init__(self, d_model: int = 256, d_ffn: int = 1024, dropout: float = 0.1, activation: str = "relu",
                 n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = _activation(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: Optional[torch.Tensor], reference_points: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            src: (B, S, C) flattened multi-level features (S = sum of H_l * W_l).
            pos: (B, S, C) positional + level embedding added to the queries, or None.
            reference_points: (B, S, L, 2) normalized (x, y).
            spatial_shapes: (L, 2) int64 (H_l, W_l); level_start_index: (L,) int64.
            padding_mask: optional (B, S) bool, True at padding.
        Returns:
            (B, S, C).
        """
        query = src if pos is None else src + pos
        attn = self.self_attn(query, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        if self.training:
            ffn = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        else:  # a few thousand positions at a time: the (S, d_ffn) activation stays cache-sized
            ffn = row_chunked(lambda rows: self.linear2(self.activation(self.linear1(rows))), src,
                              self.linear2.out_features)
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnTransformerEncoder(nn.Module):
    """A stack of ``num_layers`` independent copies of ``encoder_layer`` (attribute ``layers``)."""

    def __init__(self, encoder_layer: MSDeformAttnTransformerEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes: Union[torch.Tensor, Sequence[Sequence[int]]], valid_ratios: torch.Tensor,
                             device: Optional[torch.device] = None) -> torch.Tensor:
        """Pixel-centre reference points of every query position, expressed on every level.

        Position (i, j) of level l is ((j + 0.5) / (r_x W_l), (i + 0.5) / (r_y H_l)) in normalized (x, y) of the
        valid region (r = valid_ratios[:, l]); it is then scaled by the valid ratios of each target level.

        Args:
            spatial_shapes: (L, 2) (H_l, W_l), as a tensor or a list.
            valid_ratios: (B, L, 2) fraction (w, h) of each level that is not padding (all ones here).
        Returns:
            (B, S, L, 2) in valid_ratios' dtype.
        """
        if not torch.is_tensor(spatial_shapes):
            shapes = [list(s) for s in spatial_shapes]
        elif torch.jit.is_tracing():
            shapes = [row.unbind(0) for row in spatial_shapes.unbind(0)]  # traced 0-d sizes, not constants
        else:
            shapes = spatial_shapes.tolist()
        device = valid_ratios.device if device is None else device
        dtype = valid_ratios.dtype
        per_level = []
        for lvl, (H, W) in enumerate(shapes):
            ys = (torch.arange(H, dtype=dtype, device=device) + 0.5)[:, None].expand(H, W).reshape(1, -1)
            xs = (torch.arange(W, dtype=dtype, device=device) + 0.5)[None, :].expand(H, W).reshape(1, -1)
            ref_x = xs / (valid_ratios[:, lvl, 0:1] * W)  # (B, H*W)
            ref_y = ys / (valid_ratios[:, lvl, 1:2] * H)
            per_level.append(torch.stack((ref_x, ref_y), dim=-1))
        reference_points = torch.cat(per_level, dim=1)  # (B, S, 2)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(self, src: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                valid_ratios: torch.Tensor, pos: Optional[torch.Tensor] = None,
                padding_mask: Optional[torch.Tensor] = None,
                shapes: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
        """src/pos (B, S, C), spatial_shapes (L, 2), level_start_index (L,), valid_ratios (B, L, 2) -> (B, S, C).

        ``shapes``: the same level sizes as Python (or symbolic) ints, when the caller has them: the reference
        points are then built without reading ``spatial_shapes`` on the host (which would break a compiled graph).
        """
        reference_points = self.get_reference_points(spatial_shapes if shapes is None else shapes, valid_ratios,
                                                     device=src.device)
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return out


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable-attention encoder over L feature levels: ``level_embed`` (L, d_model) and ``encoder``.

    Init: xavier_uniform for every parameter with more than one dimension, then each MSDeformAttn's own
    ``_reset_parameters()`` (zero offset weights, ring-shaped offset biases, zero attention weights), then
    ``level_embed`` ~ N(0, 1).
    """

    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6, dim_feedforward: int = 1024,
                 dropout: float = 0.1, activation: str = "relu", num_feature_levels: int = 4,
                 enc_n_points: int = 4):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.num_feature_levels = num_feature_levels
        layer = MSDeformAttnTransformerEncoderLayer(d_model, dim_feedforward, dropout, activation,
                                                    num_feature_levels, nhead, enc_n_points)
        self.encoder = MSDeformAttnTransformerEncoder(layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Args:
            srcs: L maps (B, d_model, H_l, W_l), in the level order of ``level_embed``.
            pos_embeds: L positional encodings of the same shapes.
        Returns:
            memory (B, S, d_model) with S = sum H_l W_l (levels concatenated in order, row-major),
            spatial_shapes (L, 2) int64 (H_l, W_l), level_start_index (L,) int64,
            valid_ratios (B, L, 2) float (all ones: no padding masks are used).
        """
        if len(srcs) != self.num_feature_levels or len(pos_embeds) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} levels, got {len(srcs)} maps and "
                             f"{len(pos_embeds)} positional encodings")
        B = srcs[0].shape[0]
        device = srcs[0].device
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], dim=1)
        pos_flatten = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos_embeds)],
            dim=1,
        )
        if torch.jit.is_tracing():  # torch.jit.trace / torch.onnx.export: sizes read from the maps in the graph
            spatial_shapes = torch.stack([torch._shape_as_tensor(s)[-2:] for s in srcs]).to(device)
        elif torch.compiler.is_compiling():  # symbolic sizes: torch.as_tensor would specialize them to constants
            spatial_shapes = torch.stack(
                [torch.stack([torch.full((), d, dtype=torch.long, device=device) for d in hw]) for hw in shapes])
        else:
            spatial_shapes = torch.as_tensor(shapes, dtype=torch.long, device=device).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        ratio_dtype = torch.float64 if src_flatten.dtype == torch.float64 else torch.float32
        valid_ratios = torch.ones((B, len(srcs), 2), dtype=ratio_dtype, device=device)
        # The padding masks are all False (images are padded before the backbone, as in the original), so the
        # attention gets no mask at all: identical results without the masked_fill.
        memory = self.encoder(src_flatten, spatial_shapes, level_start_index, valid_ratios, pos=pos_flatten,
                              padding_mask=None, shapes=None if torch.jit.is_tracing() else shapes)
        return memory, spatial_shapes, level_start_index, valid_ratios


@SEM_SEG_HEADS_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Deformable-attention encoder over the coarse levels + FPN down to ``common_stride``; see the module docstring.

    ``forward_features(features)`` returns five values:
    mask_features (B, mask_dim, H/common_stride, W/common_stride), transformer_encoder_features = the coarsest encoder
    output map (B, conv_dim, h, w), multi_scale_features = the first 3 output maps coarse -> fine (each
    (B, conv_dim, h_l, w_l); [1/32, 1/16, 1/8] with the shipped configs), spatial_shapes (L, 2) int64 and
    level_start_index (L,) int64 of the encoder levels.
    """

    maskformer_num_feature_levels = 3  # number of multi-scale maps handed to the transformer decoder

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
        precision: str = "fp32",
    ):
        """
        Args:
            input_shape: backbone features used (name -> ShapeSpec with channels and stride).
            transformer_dropout / transformer_nheads / transformer_dim_feedforward / transformer_enc_layers:
                encoder settings (4 sampling points per head and level).
            conv_dim: channels of the projected / encoder / FPN maps (GroupNorm(32) needs a multiple of 32).
            mask_dim: channels of mask_features.
            norm: detectron2 norm name for the FPN convs ("GN", "" for none, ...); the FPN convs have a bias only
                without a norm. The input projections always use GroupNorm(32, conv_dim).
            transformer_in_features: names of the features refined by the encoder.
            common_stride: stride of mask_features.
            precision: "fp32" or "autocast" (see the module docstring).
        """
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"{_PRECISION_KEY} must be one of {PRECISIONS}, got {precision!r}")
        missing = [k for k in transformer_in_features if k not in input_shape]
        if missing:
            raise ValueError(f"transformer in-features {missing} are not among the input features "
                             f"{sorted(input_shape)}")
        if not transformer_in_features:
            raise ValueError("at least one transformer in-feature is required")
        self.precision = precision
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.common_stride = common_stride

        # all used features, fine -> coarse
        by_stride = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in by_stride]
        self.feature_strides = [v.stride for _, v in by_stride]
        self.feature_channels = [v.channels for _, v in by_stride]

        # transformer levels, fine -> coarse (the projections below are built coarse -> fine)
        tr = [(k, v) for k, v in by_stride if k in transformer_in_features]
        self.transformer_in_features = [k for k, _ in tr]
        self.transformer_feature_strides = [v.stride for _, v in tr]
        transformer_in_channels = [v.channels for _, v in tr]
        self.transformer_num_feature_levels = len(tr)

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in transformer_in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            nhead=transformer_nheads,
            num_encoder_layers=transformer_enc_layers,
            dim_feedforward=transformer_dim_feedforward,
            dropout=transformer_dropout,
            activation="relu",
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=4,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        # FPN over the finer features: log2(finest transformer stride) - log2(common_stride) levels
        min_stride = min(self.transformer_feature_strides)
        num_fpn_levels = int(round(math.log2(min_stride) - math.log2(common_stride)))
        if num_fpn_levels < 0:
            raise ValueError(f"common_stride {common_stride} is coarser than the finest transformer stride "
                             f"{min_stride}")
        if num_fpn_levels > len(self.in_features):
            raise ValueError(f"{num_fpn_levels} FPN levels are needed to go from stride {min_stride} to "
                             f"{common_stride}, but only {len(self.in_features)} input features are given")
        self.num_fpn_levels = num_fpn_levels
        use_bias = norm == ""
        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[:num_fpn_levels]):
            lateral_conv = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            output_conv = Conv2d(conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias,
                                 norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # used coarse -> fine in forward (plain lists: the modules are registered above under their names)
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "transformer_dropout": cfg.MODEL.ONE_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.ONE_FORMER.NHEADS,
            # hard-coded as in the original (ONE_FORMER.DIM_FEEDFORWARD is the transformer decoder's)
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "common_stride": head.COMMON_STRIDE,
            "precision": head.get("PIXEL_DECODER_PRECISION", "fp32"),
        }

    # ------------------------------------------------------------------------------------------------------------
    def _used_features(self) -> List[str]:
        names = list(self.transformer_in_features)
        names += [k for k in self.in_features[: self.num_fpn_levels] if k not in names]
        return names

    def forward_features(self, features: Dict[str, torch.Tensor]):
        """
        Args:
            features: backbone maps by name, each (B, C_k, H_k, W_k) (at least the configured in-features).
        Returns:
            mask_features (B, mask_dim, H_c, W_c) at common_stride,
            transformer_encoder_features (B, conv_dim, h_0, w_0) = the coarsest encoder output,
            multi_scale_features: list of the first 3 output maps, coarse -> fine, each (B, conv_dim, h_l, w_l),
            spatial_shapes (L, 2) int64 (h_l, w_l) of the encoder levels (coarse -> fine),
            level_start_index (L,) int64.
        """
        names = self._used_features()
        missing = [k for k in names if k not in features]
        if missing:
            raise KeyError(f"MSDeformAttnPixelDecoder: missing input features {missing}; got {sorted(features)}")
        device_type = features[names[0]].device.type
        if self.precision == "fp32":
            # as the original: no autocast inside, backbone features in (at least) float32
            feats = {k: _at_least_fp32(features[k]) for k in names}
            # only when autocast is on: a no-op autocast region would be a separate subgraph under torch.export
            if _autocast_enabled(device_type):
                ctx = torch.autocast(device_type=device_type, enabled=False)
            else:
                ctx = contextlib.nullcontext()
            with ctx:
                return self._forward_features(feats)
        # "autocast": follow the caller. Outside autocast, bring the features to the parameters' dtype so that e.g.
        # a bfloat16 backbone output meets float32 weights without an error.
        feats = {k: features[k] for k in names}
        if not _autocast_enabled(device_type):
            dtype = self.input_proj[0][0].weight.dtype
            feats = {k: v.to(dtype) if v.is_floating_point() else v for k, v in feats.items()}
        return self._forward_features(feats)

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as :meth:`forward_features`."""
        return self.forward_features(features)

    def _forward_features(self, features: Dict[str, torch.Tensor]):
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):  # coarse -> fine
            src = self.input_proj[idx](features[name])
            srcs.append(src)
            pos.append(self.pe_layer(src))
        memory, spatial_shapes, level_start_index, _ = self.transformer(srcs, pos)
        B = memory.shape[0]

        sizes = [s.shape[-2] * s.shape[-1] for s in srcs]
        out = [
            z.transpose(1, 2).reshape(B, -1, s.shape[-2], s.shape[-1])
            for z, s in zip(torch.split(memory, sizes, dim=1), srcs)
        ]

        # FPN down to common_stride, coarse -> fine
        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            lateral = self.lateral_convs[idx](features[name])
            up = F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](lateral + up))

        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features, spatial_shapes, level_start_index


def _autocast_device_types():
    names = {"cpu", "cuda", "mps", "xpu", "hpu", "xla", "mtia", "maia", torch._C._get_privateuse1_backend_name()}
    return frozenset(name for name in names if torch.amp.is_autocast_available(name))


# Asked once, not per call: dynamo in torch 2.11 cannot trace torch.amp.is_autocast_available (a function it skips),
# and torch.is_autocast_enabled raises for device types without autocast (e.g. "meta").
_AUTOCAST_DEVICE_TYPES = _autocast_device_types()


def _autocast_enabled(device_type: str) -> bool:
    return device_type in _AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    if x.is_floating_point() and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x

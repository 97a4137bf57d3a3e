"""Dilated Neighborhood Attention Transformer backbone (DiNAT; Hassani & Shi, 2022), registered as ``D2DiNAT``.

Input: images (B, 3, H, W). ConvTokenizer (two 3x3 stride-2 convs, no activation between, then LayerNorm) gives
(B, ceil(H/4), ceil(W/4), C) channels-last tokens; each level is a stack of NATLayers (LN -> neighborhood attention with
a per-block dilation -> residual; LN -> MLP -> residual; no layer scale) followed, except for the last level, by a
ConvDownsampler (3x3 stride-2 conv C -> 2C without bias, then LayerNorm). Output: dict ``res2..res5`` (strides 4, 8, 16,
32; channels EMBED_DIM * [1, 2, 4, 8]), where ``res{i+2}`` is level i's output (before its downsampler) through
LayerNorm ``norm{i}``, permuted to NCHW and filtered by MODEL.DiNAT.OUT_FEATURES.

``NeighborhoodAttention2D`` reproduces NATTEN 0.14's module (same parameters ``qkv``, ``rpb``, ``proj`` and the same
neighbourhood / relative-position-bias indexing). It calls ``natten.functional.natten2dqkrpb`` / ``natten2dav`` when a
NATTEN with that 0.14 API is importable, and otherwise a pure-PyTorch implementation (also on GPU). Setting the
environment variable ``ONEFORMER_NATTEN=0`` forces the PyTorch implementation.
"""
import functools
import inspect
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from .common import D2BackboneMixin, init_trunc_normal, input_channels
from .swin import DropPath, Mlp

__all__ = [
    "neighborhood_indices",
    "na2d_qk_rpb",
    "na2d_av",
    "natten_available",
    "NeighborhoodAttention2D",
    "NATLayer",
    "DiNAT",
    "D2DiNAT",
]


# ---------------------------------------------------------------------------------------------------------------------
# Neighbourhood indexing (NATTEN 0.14 semantics)


def _axis_neighborhood(length: int, kernel_size: int, dilation: int):
    """For one axis of size ``length`` (>= kernel_size * dilation): the (length, k) int64 neighbour coordinates and the
    (length, k) rows of the relative-position-bias table, for every query index."""
    L, k, d = length, kernel_size, dilation
    n = k // 2
    i = torch.arange(L, device="cpu")
    if d <= 1:
        start = (i - n).clamp(min=0) + (i + n >= L).long() * (L - i - n - 1)
        pb = n + (i < n).long() * (n - i) + (i + n >= L).long() * (L - i - 1 - n)
    else:
        imodd = i % d
        a = (L // d) * d
        b = L - a
        at_end = torch.where(imodd < b, L - b + imodd - 2 * n * d, a + imodd - k * d)
        near_start = i - n * d < 0
        near_end = i + n * d >= L
        start = torch.where(near_start, imodd, torch.where(near_end, at_end, i - n * d))
        pb = torch.where(near_start, k - 1 - i // d, torch.where(near_end, (L - i - 1) // d, torch.full_like(i, n)))
    t = torch.arange(k, device="cpu")
    return start[:, None] + t[None, :] * d, pb[:, None] + t[None, :]


@functools.lru_cache(maxsize=256)
def _cached_indices(H: int, W: int, kernel_size: int, dilation: int, device: str):
    nh, ph = _axis_neighborhood(H, kernel_size, dilation)
    nw, pw = _axis_neighborhood(W, kernel_size, dilation)
    # flat key index of neighbour (a, b) of query (i, j): nh[i, a] * W + nw[j, b], stored as (a, i, j, b) so that
    # each kernel row is one contiguous (H*W*k) index vector
    flat = nh.t()[:, :, None, None] * W + nw[None, None, :, :]
    return flat.contiguous().to(device), ph.to(device), pw.to(device)


def neighborhood_indices(H: int, W: int, kernel_size: int, dilation: int, device=None):
    """Returns (flat key index (k, H, W, k), bias rows (H, k), bias cols (W, k)) as int64 tensors on ``device``.

    ``flat[a, i, j, b] = row * W + col`` of the neighbour in kernel row ``a`` and column ``b`` of query (i, j); the
    relative-position-bias entry of that neighbour is ``rpb[:, ph[i, a], pw[j, b]]``.

    Requires H, W >= kernel_size * dilation (NeighborhoodAttention2D pads smaller inputs first).
    """
    if H < kernel_size * dilation or W < kernel_size * dilation:
        raise ValueError(f"feature map {H}x{W} is smaller than kernel_size*dilation ({kernel_size * dilation})")
    return _cached_indices(int(H), int(W), int(kernel_size), int(dilation), str(torch.device(device or "cpu")))


# ---------------------------------------------------------------------------------------------------------------------
# Pure-PyTorch neighbourhood attention. The key/value gathers run one kernel row at a time (k iterations, each
# vectorized over all pixels and kernel columns), and the backward passes recompute the gathers instead of storing
# them, so memory stays O(B*heads*H*W*(D + k*k)) like the NATTEN kernels.


def _gather_row(x_flat, flat_idx, a: int):
    """x_flat (B, h, H*W, D); returns the keys of kernel row ``a`` for all queries: (B, h, H, W, k, D)."""
    _, H, W, k = flat_idx.shape
    B, h, _, D = x_flat.shape
    return x_flat.index_select(2, flat_idx[a].view(-1)).view(B, h, H, W, k, D)


def _scatter_row(out_flat, flat_idx, a: int, src):
    """Adjoint of :func:`_gather_row`: out_flat (B, h, H*W, D) += scatter of src (B, h, H, W, k, D)."""
    B, h, H, W, k, D = src.shape
    out_flat.index_add_(2, flat_idx[a].view(-1), src.reshape(B, h, H * W * k, D))


class _NeighborhoodQK(torch.autograd.Function):
    """attn[b, h, i, j, a*k + c] = <q[b, h, i, j], key[b, h, nh[i, a], nw[j, c]]>."""

    @staticmethod
    def forward(ctx, query, key, flat_idx):
        key = key.to(query.dtype)
        B, h, H, W, D = query.shape
        k = flat_idx.shape[-1]
        key_flat = key.reshape(B, h, H * W, D)
        attn = query.new_empty(B, h, H, W, k, k)
        q = query.unsqueeze(-1)  # (B, h, H, W, D, 1)
        for a in range(k):
            attn[..., a, :] = torch.matmul(_gather_row(key_flat, flat_idx, a), q).squeeze(-1)
        ctx.save_for_backward(query, key, flat_idx)
        return attn.view(B, h, H, W, k * k)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_attn):
        query, key, flat_idx = ctx.saved_tensors
        B, h, H, W, D = query.shape
        k = flat_idx.shape[-1]
        g = grad_attn.to(query.dtype).reshape(B, h, H, W, k, k)
        key_flat = key.reshape(B, h, H * W, D)
        grad_q = torch.zeros_like(query) if ctx.needs_input_grad[0] else None
        grad_k_flat = query.new_zeros(B, h, H * W, D) if ctx.needs_input_grad[1] else None
        for a in range(k):
            ga = g[..., a, :]  # (B, h, H, W, k)
            if grad_q is not None:
                grad_q += torch.matmul(ga.unsqueeze(-2), _gather_row(key_flat, flat_idx, a)).squeeze(-2)
            if grad_k_flat is not None:
                _scatter_row(grad_k_flat, flat_idx, a, ga.unsqueeze(-1) * query.unsqueeze(-2))
        grad_k = grad_k_flat.view(B, h, H, W, D) if grad_k_flat is not None else None
        return grad_q, grad_k, None


class _NeighborhoodAV(torch.autograd.Function):
    """out[b, h, i, j] = sum_{a, c} attn[b, h, i, j, a*k + c] * value[b, h, nh[i, a], nw[j, c]]."""

    @staticmethod
    def forward(ctx, attn, value, flat_idx):
        attn = attn.to(value.dtype)
        B, h, H, W, D = value.shape
        k = flat_idx.shape[-1]
        value_flat = value.reshape(B, h, H * W, D)
        a6 = attn.reshape(B, h, H, W, k, k)
        out = value.new_zeros(B, h, H, W, D)
        for a in range(k):
            out += torch.matmul(a6[..., a, :].unsqueeze(-2), _gather_row(value_flat, flat_idx, a)).squeeze(-2)
        ctx.save_for_backward(attn, value, flat_idx)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        attn, value, flat_idx = ctx.saved_tensors
        B, h, H, W, D = value.shape
        k = flat_idx.shape[-1]
        g = grad_out.to(value.dtype)
        value_flat = value.reshape(B, h, H * W, D)
        a6 = attn.reshape(B, h, H, W, k, k)
        grad_attn = value.new_empty(B, h, H, W, k, k) if ctx.needs_input_grad[0] else None
        grad_v_flat = value.new_zeros(B, h, H * W, D) if ctx.needs_input_grad[1] else None
        gcol = g.unsqueeze(-1)  # (B, h, H, W, D, 1)
        for a in range(k):
            if grad_attn is not None:
                grad_attn[..., a, :] = torch.matmul(_gather_row(value_flat, flat_idx, a), gcol).squeeze(-1)
            if grad_v_flat is not None:
                _scatter_row(grad_v_flat, flat_idx, a, a6[..., a, :].unsqueeze(-1) * g.unsqueeze(-2))
        if grad_attn is not None:
            grad_attn = grad_attn.view(B, h, H, W, k * k)
        grad_v = grad_v_flat.view(B, h, H, W, D) if grad_v_flat is not None else None
        return grad_attn, grad_v, None


def na2d_qk_rpb(query, key, rpb, kernel_size: int, dilation: int):
    """Neighbourhood attention logits with relative position bias (pure PyTorch; NATTEN 0.14 ``natten2dqkrpb``).

    query, key (B, heads, H, W, D); rpb (heads, 2k-1, 2k-1) or None -> (B, heads, H, W, k*k), neighbours in row-major
    (kernel row, kernel column) order. H, W must be >= kernel_size * dilation.
    """
    B, h, H, W, D = query.shape
    flat_idx, ph, pw = neighborhood_indices(H, W, kernel_size, dilation, query.device)
    attn = _NeighborhoodQK.apply(query, key, flat_idx)
    if rpb is not None:
        k = kernel_size
        bias = rpb[:, ph[:, None, :, None], pw[None, :, None, :]]  # (heads, H, W, k, k)
        attn = attn + bias.reshape(h, H, W, k * k).unsqueeze(0)
    return attn


def na2d_av(attn, value, kernel_size: int, dilation: int):
    """Weighted sum of the neighbourhood values (pure PyTorch; NATTEN 0.14 ``natten2dav``).

    attn (B, heads, H, W, k*k), value (B, heads, H, W, D) -> (B, heads, H, W, D).
    """
    _, _, H, W, _ = value.shape
    flat_idx, _, _ = neighborhood_indices(H, W, kernel_size, dilation, value.device)
    return _NeighborhoodAV.apply(attn, value, flat_idx)


@functools.lru_cache(maxsize=1)
def _natten_functions():
    """(natten2dqkrpb, natten2dav) from an installed NATTEN with the 0.14 API, or None."""
    try:
        import natten.functional as nf
    except Exception:  # not installed, or built against another torch
        return None
    qk = getattr(nf, "natten2dqkrpb", None)
    av = getattr(nf, "natten2dav", None)
    if qk is None or av is None:
        return None
    try:
        qk_params = list(inspect.signature(qk).parameters)
        av_params = list(inspect.signature(av).parameters)
    except (TypeError, ValueError):
        return None
    if qk_params[:5] != ["query", "key", "rpb", "kernel_size", "dilation"] or len(av_params) < 4:
        return None
    if av_params[2:4] != ["kernel_size", "dilation"]:
        return None
    return qk, av


def natten_available() -> bool:
    """True when the NATTEN kernels will be used (a compatible NATTEN is importable and ONEFORMER_NATTEN != 0)."""
    if os.environ.get("ONEFORMER_NATTEN", "1").strip() == "0":
        return False
    return _natten_functions() is not None


class NeighborhoodAttention2D(nn.Module):
    """Dilated neighbourhood self-attention on channels-last maps (B, H, W, C) -> (B, H, W, C).

    Every query attends to a kernel_size x kernel_size grid of keys spaced by ``dilation``, shifted inwards at the
    borders so that it is always complete, plus a learned relative position bias ``rpb`` (heads, 2k-1, 2k-1). Maps
    smaller than kernel_size * dilation are zero-padded at the bottom/right before the qkv projection and the output is
    cropped back.
    """

    def __init__(
        self,
        dim,
        kernel_size,
        num_heads,
        qkv_bias=True,
        qk_scale=None,
        attn_drop=0.0,
        proj_drop=0.0,
        dilation=None,
    ):
        super().__init__()
        if kernel_size <= 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd number > 1, got {kernel_size}")
        dilation = dilation or 1
        if dilation < 1:
            raise ValueError(f"dilation must be >= 1, got {dilation}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.window_size = kernel_size * dilation

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, H0, W0, C = x.shape
        pad_r = max(0, self.window_size - W0)
        pad_b = max(0, self.window_size - H0)
        if pad_r or pad_b:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, H, W, _ = x.shape

        qkv = self.qkv(x).reshape(B, H, W, 3, self.num_heads, self.head_dim).permute(3, 0, 4, 1, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, H, W, D)
        q = q * self.scale

        if natten_available():
            qk_fn, av_fn = _natten_functions()
            attn = qk_fn(q.contiguous(), k.contiguous(), self.rpb, self.kernel_size, self.dilation)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = av_fn(attn, v.contiguous(), self.kernel_size, self.dilation)
        else:
            attn = na2d_qk_rpb(q, k, self.rpb, self.kernel_size, self.dilation)
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = na2d_av(attn, v, self.kernel_size, self.dilation)

        x = x.permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
        if pad_r or pad_b:
            x = x[:, :H0, :W0, :]
        return self.proj_drop(self.proj(x))

    def extra_repr(self):
        return (
            f"head_dim={self.head_dim}, num_heads={self.num_heads}, kernel_size={self.kernel_size}, "
            f"dilation={self.dilation}"
        )


# ---------------------------------------------------------------------------------------------------------------------
# DiNAT


class ConvTokenizer(nn.Module):
    """(B, C_in, H, W) -> two 3x3 stride-2 convs (C/2, then C) -> channels-last (B, H/4, W/4, C) -> LayerNorm."""

    def __init__(self, in_chans=3, embed_dim=96, norm_layer=nn.LayerNorm):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x):
        x = self.proj(x).permute(0, 2, 3, 1)
        return self.norm(x) if self.norm is not None else x


class ConvDownsampler(nn.Module):
    """Channels-last (B, H, W, C) -> 3x3 stride-2 conv without bias to 2C -> LayerNorm -> (B, H/2, W/2, 2C)."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = norm_layer(2 * dim)

    def forward(self, x):
        x = self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.norm(x)


class NATLayer(nn.Module):
    """LN -> NeighborhoodAttention2D -> drop path residual; LN -> MLP -> drop path residual. (B, H, W, C) in/out."""

    def __init__(
        self,
        dim,
        num_heads,
        kernel_size=7,
        dilation=None,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.norm1 = norm_layer(dim)
        self.attn = NeighborhoodAttention2D(
            dim,
            kernel_size=kernel_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            dilation=dilation,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NATBlock(nn.Module):
    """One level: ``depth`` NATLayers (per-block dilations), then an optional ConvDownsampler.

    forward returns (input of the next level, this level's output before downsampling).
    """

    def __init__(
        self,
        dim,
        depth,
        num_heads,
        kernel_size,
        dilations=None,
        downsample=True,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.depth = depth
        self.blocks = nn.ModuleList(
            [
                NATLayer(
                    dim=dim,
                    num_heads=num_heads,
                    kernel_size=kernel_size,
                    dilation=None if dilations is None else dilations[i],
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                    norm_layer=norm_layer,
                )
                for i in range(depth)
            ]
        )
        self.downsample = ConvDownsampler(dim=dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is None:
            return x, x
        return self.downsample(x), x


class DiNAT(nn.Module):
    """DiNAT feature extractor; ``forward`` returns {"res{i+2}": (B, C_i, H_i, W_i)} for i in out_indices."""

    def __init__(
        self,
        embed_dim,
        mlp_ratio,
        depths,
        num_heads,
        drop_path_rate=0.2,
        in_chans=3,
        kernel_size=7,
        dilations=None,
        out_indices=(0, 1, 2, 3),
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        norm_layer=nn.LayerNorm,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"DEPTHS {list(depths)} and NUM_HEADS {list(num_heads)} must have the same length")
        if dilations is not None:
            if len(dilations) != len(depths):
                raise ValueError(f"DILATIONS needs one list per level ({len(depths)}), got {len(dilations)}")
            for i, (dil, depth) in enumerate(zip(dilations, depths)):
                if len(dil) != depth:
                    raise ValueError(f"DILATIONS[{i}] has {len(dil)} entries but level {i} has {depth} blocks")
        self.num_levels = len(depths)
        self.embed_dim = embed_dim
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_levels)]
        self.mlp_ratio = mlp_ratio
        self.out_indices = tuple(out_indices)

        self.patch_embed = ConvTokenizer(in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.levels = nn.ModuleList()
        for i in range(self.num_levels):
            start = sum(depths[:i])
            self.levels.append(
                NATBlock(
                    dim=self.num_features[i],
                    depth=depths[i],
                    num_heads=num_heads[i],
                    kernel_size=kernel_size,
                    dilations=None if dilations is None else list(dilations[i]),
                    downsample=i < self.num_levels - 1,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depths[i]],
                    norm_layer=norm_layer,
                )
            )

        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self.apply(init_trunc_normal)

    def forward(self, x):
        x = self.pos_drop(self.patch_embed(x))
        outs = {}
        for i, level in enumerate(self.levels):
            x, x_level = level(x)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_level)
                outs[f"res{i + 2}"] = x_out.permute(0, 3, 1, 2).contiguous()
        return outs


@BACKBONE_REGISTRY.register()
class D2DiNAT(D2BackboneMixin, DiNAT, Backbone):
    """Detectron2 wrapper built from MODEL.DiNAT.*; outputs res2..res5 filtered by MODEL.DiNAT.OUT_FEATURES."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.DiNAT
        in_chans = input_channels(input_shape)
        super().__init__(
            embed_dim=c.EMBED_DIM,
            mlp_ratio=c.MLP_RATIO,
            depths=list(c.DEPTHS),
            num_heads=list(c.NUM_HEADS),
            drop_path_rate=c.DROP_PATH_RATE,
            in_chans=in_chans,
            kernel_size=c.KERNEL_SIZE,
            dilations=[list(d) for d in c.DILATIONS] if c.DILATIONS is not None else None,
            out_indices=tuple(c.OUT_INDICES),
            qkv_bias=c.QKV_BIAS,
            qk_scale=c.QK_SCALE,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
        )
        names = {f"res{i + 2}": i for i in self.out_indices}
        self._init_outputs(
            in_chans,
            c.OUT_FEATURES,
            strides={n: 4 * 2**i for n, i in names.items()},
            channels={n: self.num_features[i] for n, i in names.items()},
            unknown_error=f"MODEL.DiNAT.OUT_FEATURES {{unknown}} not produced by OUT_INDICES {list(self.out_indices)}",
        )

    def forward(self, x):
        self._check_input(x, "DiNAT")
        return self._select_outputs(super().forward(x))

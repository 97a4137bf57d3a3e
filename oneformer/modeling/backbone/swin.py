"""Swin Transformer v1 backbone (Liu et al., ICCV 2021), detection variant, registered as ``D2SwinTransformer``.

Input: images (B, 3, H, W) of any size; the patch embedding pads to a multiple of the patch size, every block pads to a
multiple of the window size and patch merging pads odd sizes, so the outputs have spatial size ceil(H/s) x ceil(W/s).
Output: dict ``res2..res5`` (strides 4, 8, 16, 32; channels EMBED_DIM * [1, 2, 4, 8]), NCHW, each passed through its
own LayerNorm ``norm{i}``, filtered by MODEL.SWIN.OUT_FEATURES.

Parameter and buffer names follow the original checkpoints (``patch_embed``, ``layers.{i}.blocks.{j}``,
``layers.{i}.downsample``, ``norm{i}``; ``attn.relative_position_index`` is a persistent int64 buffer).

``DropPath`` and ``Mlp`` defined here are shared with the other backbones of this package.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from ...ops.window_attention import swin_window_attention, window_kernel_applies
from ...utils.tracing import is_tracing as _tracing
from ..cpu_linear import row_chunked
from .common import D2BackboneMixin, init_trunc_normal, input_channels

__all__ = ["DropPath", "Mlp", "SwinTransformer", "D2SwinTransformer"]


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
    """Stochastic depth: zero whole samples of a residual branch with probability ``drop_prob`` (rescaling the rest)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = x.new_empty(mask_shape).bernoulli_(keep_prob)
    return x * mask / keep_prob


class DropPath(nn.Module):
    """Per-sample stochastic depth on the residual branch."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout, applied on the last dimension."""

    CHUNK_ROWS = 2048  # rows per step in inference (see forward)

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        """x (..., in_features) -> (..., out_features); in inference a few thousand rows at a time
        (:func:`~oneformer.modeling.cpu_linear.row_chunked`)."""
        if self.training:
            return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
        return row_chunked(lambda rows: self.fc2(self.act(self.fc1(rows))), x, self.fc2.out_features,
                           self.CHUNK_ROWS)


def window_partition(x, window_size: int):
    """(B, H, W, C) with H, W multiples of ``window_size`` -> (B * nW, window_size, window_size, C)."""
    B, H, W, C = x.shape
    nh, nw = H // window_size, W // window_size
    # sizes written out rather than -1, so that a symbolic-shape trace gets products, not quotients of products
    x = x.reshape(B, nh, window_size, nw, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, window_size, window_size, C)


def window_reverse(windows, window_size: int, H: int, W: int, B: int):
    """Inverse of :func:`window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.reshape(B, H // window_size, W // window_size, window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def relative_position_index(window_size: int):
    """(ws*ws, ws*ws) int64 index into the (2ws-1)^2 bias table for every (query, key) pair of a window."""
    ws = window_size
    rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N): query minus key
    rel = rel + (ws - 1)  # shift both offsets to start at 0
    return (rel[0] * (2 * ws - 1) + rel[1]).long()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (possibly shifted) windows, with a learned relative position bias.

    Input (num_windows * B, N = ws * ws, C); optional additive mask (num_windows, N, N).
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5

        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        """x (num_windows * B, N, C) -> (num_windows * B, N, C)."""
        return self.proj_drop(self.proj(self.attend(self.qkv(x), mask)))

    def attend(self, qkv, mask=None, groups=None):
        """Attention on already projected windows: qkv (num_windows * B, N, 3C) -> (num_windows * B, N, C), before
        the output projection.

        ``groups``: windows in :func:`window_gather_index`'s grouped order, as (counts, type_masks) (see there);
        ``mask`` is then unused."""
        B_, N, C3 = qkv.shape
        C = C3 // 3
        h = self.num_heads
        qkv = qkv.reshape(B_, N, 3, h, C // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B_, h, N, d)

        bias = self.position_bias()
        if groups is not None:
            out = self._attend_groups(q, k, v, bias, groups)
        else:
            out = self._attend_masked(q, k, v, bias, mask)
        out = out.transpose(1, 2)
        if torch.compiler.is_compiling():
            # an explicit copy: the output layout of SDPA's fake (traced) and real kernels can differ, and a reshape
            # recorded as a view of the traced layout fails on the real one (torch.export's decompositions)
            out = out.clone(memory_format=torch.contiguous_format)
        return out.reshape(B_, N, C)

    def position_bias(self) -> torch.Tensor:
        """The relative position bias of every (query, key) pair of a window, (num_heads, N, N), contiguous (so that
        adding a shift mask gives a contiguous mask, which SDPA takes without a copy)."""
        N, h = self.window_size**2, self.num_heads
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, h).permute(2, 0, 1).contiguous()

    def _sdpa(self, q, k, v, attn_mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.to(q.dtype),
                                              dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale)

    def _attend_masked(self, q, k, v, bias, mask):
        """q, k, v (B_, h, N, d) in Swin's window order; bias (h, N, N); mask None or (nW, N, N) -> (B_, h, N, d)."""
        B_, h, N, _ = q.shape
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:
            nW = mask.shape[0]
            attn_mask = bias.unsqueeze(0) + mask.unsqueeze(1)  # (nW, h, N, N)
            attn_mask = attn_mask.unsqueeze(0).expand(B_ // nW, -1, -1, -1, -1).reshape(B_, h, N, N)
        return self._sdpa(q, k, v, attn_mask)

    def _attend_groups(self, q, k, v, bias, groups):
        """q, k, v (B_, h, N, d) in the grouped window order; groups (counts, type_masks (4, N, N)) ->
        (B_, h, N, d).

        One attention per window type, whose windows share one mask: bias + type mask (h, N, N), broadcast over
        them. The per-window mask (B_, h, N, N) is never built; under torch.compile building it was ~8% of Swin-L's
        CPU time at 512², recomputed per block from the index arithmetic behind it."""
        counts, type_masks = groups
        outs, start = [], 0
        for t, count in enumerate(counts):
            m = bias if t == 0 else bias + type_masks[t].unsqueeze(0)  # type 0 (inner windows) has no shift mask
            outs.append(self._sdpa(q[start : start + count], k[start : start + count], v[start : start + count],
                                   m.unsqueeze(0)))
            start += count
        return torch.cat(outs)

    def extra_repr(self):
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """LN -> (shifted) window attention -> residual; LN -> MLP -> residual. Input (B, H*W, C) plus H, W."""

    def __init__(
        self,
        dim,
        num_heads,
        window_size=7,
        shift_size=0,
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
        assert 0 <= shift_size < window_size, "shift_size must be in [0, window_size)"
        self.dim = dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, H: int, W: int, attn_mask=None, window_index=None):
        """x (B, H*W, C) -> (B, H*W, C). ``attn_mask``: the stage's shift mask (used when shifted);
        ``window_index``: :func:`window_gather_index` for this block's shift (computed here when None), optionally
        grouped (a third item: the groups that :meth:`WindowAttention.attend` takes); where the CPU kernel applies
        (the stage makes the same test), :func:`kernel_window_index` instead."""
        B, L, C = x.shape
        tracing = _tracing()
        assert tracing or L == H * W, f"input has {L} tokens, expected H*W = {H}*{W}"
        mask = attn_mask if self.shift_size > 0 else None
        if window_kernel_applies(x, self.training):  # float32 CPU inference, eager or torch.compile
            x_attn = self._attention_kernel(x, H, W, window_index)
        elif tracing and not torch.compiler.is_compiling():
            x_attn = self._attention_traceable(x, H, W, mask)
        else:  # eager, and graph capture (torch.compile / torch.export), where the gathers keep sizes symbolic
            x_attn = self._attention_gathered(x, H, W, mask, window_index)
        x = x + self.drop_path(self.attn.proj_drop(self.attn.proj(x_attn)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x

    def _qkv_rows(self, x, index):
        """The qkv projection of the normalized tokens x (B, L, C) as (B*L [+1], 3C) rows: some windows reach into
        padding when ``index`` reads row B*L, which is then appended as a zero token (its projection, the qkv bias,
        stands for every padded position, exactly as projecting zero-padded windows would); always under graph
        capture, where the size test would make a graph per padding case."""
        B, L, C = x.shape
        xn = self.norm1(x).reshape(B * L, C)
        if torch.compiler.is_compiling() or index.numel() > B * L:
            xn = torch.cat([xn, xn.new_zeros(1, C)])
        return self.attn.qkv(xn)

    def _attention_kernel(self, x, H: int, W: int, window_index):
        """Window attention before the output projection on the CPU kernel (:func:`swin_window_attention`), which
        reads the windows through the gather index and writes token order: (B, H*W, C) -> (B, H*W, C)."""
        B, L, C = x.shape
        if window_index is None:
            window_index = kernel_window_index(B, H, W, self.window_size, self.shift_size, x.device)
        index, masks, kinds = window_index
        out = swin_window_attention(self._qkv_rows(x, index), index, self.attn.position_bias(), masks, kinds,
                                    self.attn.num_heads, self.attn.scale, B * L)
        return out.view(B, L, C)

    def _attention_gathered(self, x, H: int, W: int, mask, window_index):
        """Window attention before the output projection, (B, H*W, C) -> (B, H*W, C).

        Padding, cyclic shift and window partition are one row gather of the projected tokens (:meth:`_qkv_rows`),
        and the way back one more."""
        B, L, C = x.shape
        if window_index is None:
            window_index = window_gather_index(B, H, W, self.window_size, self.shift_size, x.device)
        index, inverse, *groups = window_index
        groups = groups[0] if groups and self.shift_size > 0 else None
        windows = self._qkv_rows(x, index).index_select(0, index).view(-1, self.window_size**2, 3 * C)
        windows = self.attn.attend(windows, mask=mask, groups=groups)
        return windows.reshape(-1, C).index_select(0, inverse).view(B, L, C)

    def _attention_traceable(self, x, H: int, W: int, mask):
        """The same as :meth:`_attention_gathered` with pad / roll / partition written out, so that a trace
        (ONNX, TorchScript) follows H and W."""
        B, L, C = x.shape
        ws = self.window_size
        qkv = self.attn.qkv(self.norm1(x)).view(B, H, W, 3 * C)
        # one floor division per size (not nested remainders), so that symbolic sizes stay small under torch.compile
        Hp, Wp = (H + ws - 1) // ws * ws, (W + ws - 1) // ws * ws
        pad_b, pad_r = Hp - H, Wp - W
        # padded positions hold the qkv bias (the projection of a zero token), possibly an empty slab
        fill = self.attn.qkv.bias if self.attn.qkv.bias is not None else qkv.new_zeros(3 * C)
        qkv = torch.cat([qkv, fill.expand(B, H, pad_r, 3 * C)], dim=2)
        qkv = torch.cat([qkv, fill.expand(B, pad_b, Wp, 3 * C)], dim=1)
        if self.shift_size > 0:
            qkv = torch.roll(qkv, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        windows = window_partition(qkv, ws)
        windows = self.attn.attend(windows.reshape(windows.shape[0], ws * ws, 3 * C), mask=mask)
        x = window_reverse(windows.reshape(windows.shape[0], ws, ws, C), ws, Hp, Wp, B)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        return x[:, :H, :W, :].reshape(B, H * W, C)


def window_gather_index(B: int, H: int, W: int, window_size: int, shift_size: int, device, grouped: bool = False):
    """Row indices that turn B maps of H x W tokens into (shifted) windows and back.

    ``grouped``: order the windows by their shift mask instead (for ``shift_size`` > 0): with a cyclic shift only
    the last window row and column straddle regions, and all windows of one kind have the same mask. The order is
    then: inner windows (no mask), the last row's windows but the corner, the last column's but the corner, the
    corner; by image, then row-major, within each kind. A third item is returned, ``(counts, type_masks)``: the
    number of windows of each kind (4 ints) and their masks (4, N, N) (:func:`window_type_masks`).

    With the tokens flattened to B*H*W rows, plus one extra row at index B*H*W standing for every padded position:
    ``index`` (B * nW * ws * ws,) picks, for each window position in Swin's order (batch, window row, window column,
    row in window, column in window) after zero-padding to multiples of ``window_size`` and rolling by
    ``-shift_size``, the row it holds; ``inverse`` (B * H * W,) gives, for each token row, its position in that
    windowed order. Returns (index, inverse), int64 on ``device``.
    """
    ws, L = window_size, H * W
    # (n + ws - 1) // ws, not -(-n // ws): the ONNX exporter divides symbolic sizes as non-negative integers
    Hp, Wp = (H + ws - 1) // ws * ws, (W + ws - 1) // ws * ws
    # position p in window order -> (row, column) of the rolled padded map, by arithmetic rather than a view of the
    # map as windows (whose size-1 cases would each get their own graph under torch.compile)
    positions = torch.arange(Hp * Wp, device=device)
    window, in_window = positions // (ws * ws), positions % (ws * ws)
    n_cols = Wp // ws
    rows = (window // n_cols * ws + in_window // ws + shift_size) % Hp  # rolled row i holds padded row i + shift
    cols = (window % n_cols * ws + in_window % ws + shift_size) % Wp
    src = torch.where((rows < H) & (cols < W), rows * W + cols, -1)
    real = src >= 0
    # a scatter, not boolean indexing: no data-dependent shapes, so torch.compile / torch.export keep one graph;
    # padded positions all land in the extra slot L, which is dropped
    inverse = positions.new_zeros(L + 1).scatter_(0, torch.where(real, src, L), positions)[:L]
    batch = torch.arange(B, device=device)[:, None]
    index = torch.where(real, src + batch * L, B * L).reshape(-1)
    inverse = (inverse + batch * src.numel()).reshape(-1)
    if not grouped:
        return index, inverse
    N, n_rows = ws * ws, Hp // ws
    kind = window_kinds(1, H, W, ws, device)
    one_hot = F.one_hot(kind, 4)
    within = (one_hot.cumsum(0) - 1).gather(1, kind[:, None])[:, 0]  # rank among the image's windows of its kind
    per_image = one_hot.sum(0)
    # grouped position of window w of image b: the kind's first position, then image by image
    rank = ((per_image.cumsum(0) - per_image) * B)[kind] + batch * per_image[kind] + within  # (B, nW)
    rank = rank.reshape(-1)
    order = torch.empty_like(rank).scatter_(0, rank, torch.arange(rank.numel(), device=device))
    index = index.view(-1, N).index_select(0, order).reshape(-1)
    inverse = rank[inverse // N] * N + inverse % N
    counts = (B * (n_rows - 1) * (n_cols - 1), B * (n_cols - 1), B * (n_rows - 1), B)
    return index, inverse, (counts, window_type_masks(ws, shift_size, device))


def kernel_window_index(B: int, H: int, W: int, window_size: int, shift_size: int, device):
    """What the CPU window-attention kernel takes for one window layout: the gather index of
    :func:`window_gather_index`, and for a shifted layout the masks of the four window kinds and each window's kind
    (:func:`window_type_masks`, :func:`window_kinds`; else None, None). Computed once per stage and shift."""
    index = window_gather_index(B, H, W, window_size, shift_size, device)[0]
    if shift_size == 0:
        return index, None, None
    return index, window_type_masks(window_size, shift_size, device), window_kinds(B, H, W, window_size, device)


def window_kinds(B: int, H: int, W: int, window_size: int, device) -> torch.Tensor:
    """(B * nW,) int64: the kind of each window in Swin's order (image, window row, window column) of a shifted
    layout: 0 inner, 1 in the last row, 2 in the last column, 3 the corner (their masks: :func:`window_type_masks`)."""
    ws = window_size
    n_rows, n_cols = (H + ws - 1) // ws, (W + ws - 1) // ws
    w = torch.arange(n_rows * n_cols, device=device)
    kind = (w // n_cols == n_rows - 1).long() + 2 * (w % n_cols == n_cols - 1).long()
    return kind.repeat(B)


def window_type_masks(window_size: int, shift_size: int, device) -> torch.Tensor:
    """(4, N, N) shift masks of the four kinds of windows of :func:`window_gather_index`'s grouped order (inner,
    last row, last column, corner), N = window_size²: -100 between tokens of different regions, else 0 — the values
    of :meth:`BasicLayer._shift_mask` for the windows of each kind."""
    ws, s = window_size, shift_size
    r = torch.arange(ws * ws, device=device)
    low = (r // ws >= ws - s)  # the token comes from the rows that the shift wrapped around
    right = (r % ws >= ws - s)
    row_cut = low[:, None] != low[None, :]
    col_cut = right[:, None] != right[None, :]
    cut = torch.stack([torch.zeros_like(row_cut), row_cut, col_cut, row_cut | col_cut])
    return torch.where(cut, -100.0, 0.0)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (x0: even rows/even cols, x1: odd/even, x2: even/odd, x3: odd/odd) -> LN(4C) -> Linear
    to 2C (no bias). Odd H or W is zero-padded by one at the bottom/right first. Input (B, H*W, C)."""

    def __init__(self, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x, H: int, W: int):
        B, L, C = x.shape
        tracing = _tracing()
        assert tracing or L == H * W, f"input has {L} tokens, expected H*W = {H}*{W}"
        x = x.view(B, H, W, C)
        if tracing or H % 2 == 1 or W % 2 == 1:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x0 = x[:, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, :]
        x3 = x[:, 1::2, 1::2, :]
        x = torch.cat([x0, x1, x2, x3], dim=-1)
        x = x.view(B, x.shape[1] * x.shape[2], 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating regular and shifted windows, then optional patch merging."""

    def __init__(
        self,
        dim,
        depth,
        num_heads,
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        downsample=None,
        use_checkpoint=False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint

        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim=dim,
                    num_heads=num_heads,
                    window_size=window_size,
                    shift_size=0 if i % 2 == 0 else window_size // 2,
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
        self.downsample = downsample(dim=dim, norm_layer=norm_layer) if downsample is not None else None

    def _shift_mask(self, H: int, W: int, device):
        """(nW, N, N) additive mask for the shifted windows: 0 within the same original region, -100 across."""
        ws, s = self.window_size, self.shift_size
        Hp = (H + ws - 1) // ws * ws
        Wp = (W + ws - 1) // ws * ws

        def region(n):  # per row (column) of the padded map: 0 before the last window, 1 in it before the shift,
            # 2 after it
            i = torch.arange(n, device=device)
            return (i >= n - ws).float() + (i >= n - s).float()

        # region labels 3 * row region + column region (tensor ops, so that a trace follows H and W)
        img_mask = (3 * region(Hp)[:, None] + region(Wp)[None, :])[None, :, :, None]  # (1, Hp, Wp, 1)
        win = window_partition(img_mask, ws)
        win = win.reshape(win.shape[0], ws * ws)  # (nW, N)
        mask = win.unsqueeze(1) - win.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x, H: int, W: int):
        """x (B, H*W, C) -> (stage output (B, H*W, C), H, W, downsampled tokens, H', W')."""
        # The CPU kernel takes each window's kind instead of a stage mask. Other graph captures group shifted windows
        # by mask kind, which needs no stage mask either (WindowAttention._attend_groups).
        kernel = window_kernel_applies(x, self.training)
        grouped = torch.compiler.is_compiling() and not kernel
        attn_mask = self._shift_mask(H, W, x.device) if self.depth > 1 and not grouped and not kernel else None
        index = {}
        if not _tracing() or grouped or kernel:  # the gather indices of both window layouts, shared
            for shift in {blk.shift_size for blk in self.blocks}:
                if kernel:
                    index[shift] = kernel_window_index(x.shape[0], H, W, self.window_size, shift, x.device)
                else:
                    index[shift] = window_gather_index(x.shape[0], H, W, self.window_size, shift, x.device,
                                                       grouped=grouped and shift > 0)
        for blk in self.blocks:
            idx = index.get(blk.shift_size)
            if self.use_checkpoint and x.requires_grad:
                x = checkpoint.checkpoint(blk, x, H, W, attn_mask, idx, use_reentrant=False)
            else:
                x = blk(x, H, W, attn_mask, idx)
        if self.downsample is not None:
            x_down = self.downsample(x, H, W)
            return x, H, W, x_down, (H + 1) // 2, (W + 1) // 2
        return x, H, W, x, H, W


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection (conv k = s = patch_size) with optional LayerNorm.

    (B, C_in, H, W) -> (B, embed_dim, ceil(H / p), ceil(W / p)); the input is zero-padded at the right/bottom first.
    """

    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None):
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x):
        _, _, H, W = x.shape
        p = self.patch_size
        if _tracing() or W % p != 0 or H % p != 0:
            x = F.pad(x, (0, (p - W % p) % p, 0, (p - H % p) % p))
        x = self.proj(x)
        if self.norm is not None:
            Wh, Ww = x.shape[2], x.shape[3]
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).reshape(-1, self.embed_dim, Wh, Ww)
        return x


class SwinTransformer(nn.Module):
    """Swin Transformer v1 feature extractor; ``forward`` returns {"res{i+2}": (B, C_i, H_i, W_i)}, i in out_indices."""

    def __init__(
        self,
        pretrain_img_size=224,
        patch_size=4,
        in_chans=3,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.2,
        norm_layer=nn.LayerNorm,
        ape=False,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        use_checkpoint=False,
    ):
        super().__init__()
        assert len(depths) == len(num_heads), "DEPTHS and NUM_HEADS must have the same length"
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)

        self.patch_embed = PatchEmbed(
            patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, norm_layer=norm_layer if patch_norm else None
        )
        if self.ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # stochastic depth rate grows linearly from 0 to drop_path_rate over all blocks
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]

        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            start = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    dim=int(embed_dim * 2**i),
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depths[i]],
                    norm_layer=norm_layer,
                    downsample=PatchMerging if i < self.num_layers - 1 else None,
                    use_checkpoint=use_checkpoint,
                )
            )

        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        for i in self.out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

        self.apply(init_trunc_normal)

    def forward(self, x):
        x = self.patch_embed(x)
        Wh, Ww = x.shape[2], x.shape[3]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                outs[f"res{i + 2}"] = x_out.view(x_out.shape[0], H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
        return outs


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(D2BackboneMixin, SwinTransformer, Backbone):
    """Detectron2 wrapper built from MODEL.SWIN.*; outputs res2..res5 filtered by MODEL.SWIN.OUT_FEATURES."""

    def __init__(self, cfg, input_shape: ShapeSpec):
        c = cfg.MODEL.SWIN
        in_chans = input_channels(input_shape)
        super().__init__(
            pretrain_img_size=c.PRETRAIN_IMG_SIZE,
            patch_size=c.PATCH_SIZE,
            in_chans=in_chans,
            embed_dim=c.EMBED_DIM,
            depths=list(c.DEPTHS),
            num_heads=list(c.NUM_HEADS),
            window_size=c.WINDOW_SIZE,
            mlp_ratio=c.MLP_RATIO,
            qkv_bias=c.QKV_BIAS,
            qk_scale=c.QK_SCALE,
            drop_rate=c.DROP_RATE,
            attn_drop_rate=c.ATTN_DROP_RATE,
            drop_path_rate=c.DROP_PATH_RATE,
            norm_layer=nn.LayerNorm,
            ape=c.APE,
            patch_norm=c.PATCH_NORM,
            use_checkpoint=c.USE_CHECKPOINT,
        )
        names = [f"res{i + 2}" for i in range(self.num_layers)]
        self._init_outputs(
            in_chans,
            c.OUT_FEATURES,
            strides={n: c.PATCH_SIZE * 2**i for i, n in enumerate(names)},
            channels={n: self.num_features[i] for i, n in enumerate(names)},
            unknown_error=f"MODEL.SWIN.OUT_FEATURES has unknown names {{unknown}}; choose from {names}",
        )

    def forward(self, x):
        self._check_input(x, "SwinTransformer", skip_channel_check=_tracing())
        return self._select_outputs(super().forward(x))

"""float32 linear layers on the CPU through oneDNN, for inference.

PyTorch's CPU ``F.linear`` calls MKL's sgemm. oneDNN's matmul is faster on this model's GEMM shapes: on a 2-core AMD
EPYC, 207-218 GFLOP/s against MKL's 163-197 for the Swin-L and pixel-decoder projections, and linear layers are about
60% of CPU inference time. Below ~8M multiply-adds oneDNN's per-call overhead outweighs that, so small products
(decoder queries, task MLP) stay on ``F.linear``.

:func:`use_onednn_linear` switches a model's ``nn.Linear`` modules to :class:`OneDNNLinear` in place: the same
parameters, names and state_dict; only float32 CPU forward passes without autograd, outside autocast and tracing, take
the oneDNN path, and they agree with ``F.linear`` up to float rounding (about 1e-6 relative).

Under ``torch.compile`` with frozen weights (MODEL.COMPILE_FREEZE, :func:`frozen_graph`), these layers keep oneDNN
too, with weights packed ahead of time: the graph records oneDNN's weight reorder and linear ops, and inductor's
freezing folds the reorder into a packed constant. Inductor on its own packs float32 CPU linears for MKL when it
compiles a static graph (its choice does not depend on the machine), which on the EPYC above is 216-228 GFLOP/s for
packed oneDNN against 117-207 for packed MKL on the model's shapes. MODEL.CPU_LINEAR_BACKEND "native" leaves the
linears to inductor.
"""
import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from ..utils.tracing import is_exporting, is_tracing

__all__ = ["CPU_LINEAR_BACKENDS", "OneDNNLinear", "frozen_graph", "onednn_linear", "onednn_linear_available",
           "onednn_feature_product", "row_chunked", "use_onednn_linear"]

CPU_LINEAR_BACKENDS = ("onednn", "native")
_MIN_MACS = 1 << 23  # below this, oneDNN's per-call overhead outweighs its faster kernel
_SWITCHED = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)
# True while torch.compile captures a graph whose weights inductor freezes (see frozen_graph)
_FROZEN_GRAPH = False
_PACK_TRACEABLE = None  # whether oneDNN's weight reorder can be traced (a fake kernel registered); decided once


def _onednn_op():
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


def onednn_linear_available() -> bool:
    """True when this PyTorch build has oneDNN's linear op."""
    try:
        return _onednn_op() is not None
    except (AttributeError, RuntimeError):
        return False


def _pack_traceable() -> bool:
    """Register a fake (meta) kernel for oneDNN's weight reorder ``mkldnn::_reorder_linear_weight``, which PyTorch
    only calls after tracing (inductor's own weight packing), so that a traced graph can hold it; False where that
    is not possible (the graph then holds unpacked weights)."""
    global _PACK_TRACEABLE
    if _PACK_TRACEABLE is None:
        try:
            op = torch.ops.mkldnn._reorder_linear_weight.default
            if not torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta"):
                # the packed weight is an opaque oneDNN tensor; for tracing, the weight's metadata stands for it
                torch.library.register_fake(op)(lambda weight, batch_size=None: torch.empty_like(weight))
            _PACK_TRACEABLE = True
        except (AttributeError, RuntimeError):
            _PACK_TRACEABLE = False
    return _PACK_TRACEABLE


@contextlib.contextmanager
def frozen_graph():
    """Within this context, graphs that ``torch.compile`` captures hold oneDNN linears with packed weights (see the
    module docstring); for graphs whose weights inductor freezes (CompiledNetwork with ``freeze=True``), which turns
    the weight reorder into a constant."""
    global _FROZEN_GRAPH
    previous, _FROZEN_GRAPH = _FROZEN_GRAPH, onednn_linear_available() and _pack_traceable()
    try:
        yield
    finally:
        _FROZEN_GRAPH = previous


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """float32 CPU inference outside autocast (the conditions of every oneDNN path here)."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
    )


def _in_frozen_graph() -> bool:
    """Capturing a graph for torch.compile with frozen weights (see :func:`frozen_graph`), not torch.export."""
    return _FROZEN_GRAPH and torch.compiler.is_compiling() and not is_exporting()


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN where that applies: float32 on the CPU, no autograd, outside
    autocast and tracing, at least ~8M multiply-adds; elsewhere exactly ``F.linear``. x (..., in) -> (..., out).
    Inside :func:`frozen_graph`, ``torch.compile`` (not ``torch.export``) records the same oneDNN op with a packed
    weight.

    (oneDNN's fused GELU epilogue was tried for the MLPs and was slower end to end than a separate ``F.gelu``.)"""
    if _onednn_applies(x, weight):
        # sizes are read only where they are numbers (a TorchScript trace would record them as constants)
        if not is_tracing():
            if _large(x, weight):
                return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        elif _in_frozen_graph() and _large(x, weight):
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, x.numel() // x.shape[-1])
            return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return F.linear(x, weight, bias)


def onednn_feature_product(embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-image products of embeddings with a feature map, as OneFormer's mask logits
    ``torch.einsum("bqc,bchw->bqhw", embed, features)``: embed (B, Q, C), features (B, C, *spatial) ->
    (B, Q, *spatial).

    For models switched by :func:`use_onednn_linear` (this PyTorch has oneDNN's linear). Where :func:`onednn_linear`
    takes oneDNN (eager, and graphs of :func:`frozen_graph`, which hold it as the custom operator
    ``oneformer::onednn_feature_product``: inductor has no lowering for a oneDNN linear whose weight is computed),
    each image's product is a oneDNN linear whose "weight" is the (positions, C) transposed view of its features:
    oneDNN reads that layout as it is and writes (Q, positions) directly, at 175-205 GFLOP/s on a 2-core AMD EPYC
    against 125-135 for the batched matmul the einsum becomes (OneFormer's 250 queries on 1/4-scale features of
    512² images).
    """
    if _onednn_applies(embed, features):
        if not is_tracing() and _large(embed, features.flatten(2)[0]):
            return _feature_product(embed, features)
        if _in_frozen_graph():
            return torch.ops.oneformer.onednn_feature_product(embed, features)
    return torch.einsum("bqc,bcp->bqp", embed, features.flatten(2)).view(embed.shape[:2] + features.shape[2:])


def _feature_product(embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    B, Q, _ = embed.shape
    outs = [torch.ops.mkldnn._linear_pointwise(embed[b], features[b].flatten(1).t(), None, "none", [], "")
            for b in range(B)]
    return (outs[0][None] if B == 1 else torch.stack(outs)).view((B, Q) + features.shape[2:])


@torch.library.custom_op("oneformer::onednn_feature_product", mutates_args=(), device_types="cpu")
def _feature_product_op(embed: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    return _feature_product(embed.contiguous(), features)


@_feature_product_op.register_fake
def _(embed, features):
    return embed.new_empty((embed.shape[0], embed.shape[1]) + tuple(features.shape[2:]))


def _large(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the product has at least ~8M multiply-adds (where oneDNN pays off)."""
    return x.numel() // max(1, x.shape[-1]) * weight.shape[0] * weight.shape[1] >= _MIN_MACS


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose float32 CPU inference runs on oneDNN (:func:`onednn_linear`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.weight, self.bias)


def use_onednn_linear(module: nn.Module) -> int:
    """Switch every plain ``nn.Linear`` inside ``module`` (``nn.MultiheadAttention``'s output projection included,
    which makes :func:`~oneformer.modeling.transformer_decoder.attention.multi_head_attention` project its inputs
    through oneDNN as well) to :class:`OneDNNLinear` in place.

    Returns the number of layers switched (0 when this PyTorch has no oneDNN linear op; nothing changes then).
    """
    if not onednn_linear_available():
        return 0
    count = 0
    for m in module.modules():
        if type(m) in _SWITCHED:
            m.__class__ = OneDNNLinear
            count += 1
    return count


def row_chunked(fn, x: torch.Tensor, out_features: int, chunk_rows: int = 2048) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` (an MLP: (..., in) -> (..., out_features)), a few thousand rows at a time in
    inference, so that the wide hidden activation stays small: cache-sized, and reused by the allocator instead of a
    fresh, page-faulting mapping for every call (large matrix products also run slower on such outputs: 130 against
    210 GFLOP/s for Swin-L's first-stage MLP on a 2-core AMD EPYC).

    Only in eager inference: with autograd, and in traced or compiled graphs, ``fn`` runs once on all rows (unrolled
    chunks in a compiled graph of static sizes measured no faster than one call).
    """
    if torch.is_grad_enabled() or is_tracing():
        return fn(x)
    rows = x.numel() // max(1, x.shape[-1])
    if rows <= chunk_rows:
        return fn(x)
    out = x.new_empty(x.shape[:-1] + (out_features,))
    flat_in, flat_out = x.reshape(rows, -1), out.view(rows, -1)
    for start in range(0, rows, chunk_rows):
        flat_out[start : start + chunk_rows] = fn(flat_in[start : start + chunk_rows])
    return out


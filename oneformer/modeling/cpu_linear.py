"""float32 linear layers on the CPU through oneDNN, for inference.

PyTorch's CPU ``F.linear`` calls MKL's sgemm. oneDNN's matmul (the kernel ``torch.compile`` picks for CPU linears) is
faster on this model's GEMM shapes: on a 2-core AMD EPYC, 207-218 GFLOP/s against MKL's 163-197 for the Swin-L and
pixel-decoder projections, and linear layers are about 60% of CPU inference time. Below ~8M multiply-adds oneDNN's
per-call overhead outweighs that, so small products (decoder queries, task MLP) stay on ``F.linear``.

:func:`use_onednn_linear` switches a model's ``nn.Linear`` modules to :class:`OneDNNLinear` in place: the same
parameters, names and state_dict; only float32 CPU forward passes without autograd, outside autocast and tracing, take
the oneDNN path, and they agree with ``F.linear`` up to float rounding (about 1e-6 relative).
"""
import torch
from torch import nn
from torch.nn import functional as F

from ..utils.tracing import is_tracing

__all__ = ["CPU_LINEAR_BACKENDS", "OneDNNLinear", "onednn_linear", "onednn_linear_available", "use_onednn_linear"]

CPU_LINEAR_BACKENDS = ("onednn", "native")
_MIN_MACS = 1 << 23  # below this, oneDNN's per-call overhead outweighs its faster kernel
_SWITCHED = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)


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


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` through oneDNN where that applies: float32 on the CPU, no autograd, outside
    autocast and tracing, at least ~8M multiply-adds; elsewhere exactly ``F.linear``. x (..., in) -> (..., out).

    (oneDNN's fused GELU epilogue was tried for the MLPs and was slower end to end than a separate ``F.gelu``.)"""
    out_features, in_features = weight.shape
    if (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not is_tracing()
        and x.numel() // max(1, x.shape[-1]) * in_features * out_features >= _MIN_MACS
    ):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


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

"""``swin_window_attention``: Swin's (shifted) window self-attention through the CPU kernel
``torch.ops.oneformer.swin_window_attention`` (float32 inference), one operator for eager calls, ``torch.compile``
and FakeTensor tracing.

The operator reads the windows straight from the projected tokens through a row index and writes its output back in
token order, so the gather into windows and the scatter back are not separate copies of the map; positions that hold
padding are keys and values only. It is an inference kernel: its autograd formula raises, and the Swin backbone uses
``scaled_dot_product_attention`` whenever gradients, another dtype or device, autocast or an export is involved
(:func:`window_kernel_applies`). Schema and kernel: oneformer/ops/csrc (C++); the fake implementation is registered
here (``torch.library.register_fake``).
"""
from typing import Optional

import torch

from ..utils.tracing import is_exporting
from .functional import _C

__all__ = ["OP_NAME", "swin_window_attention", "window_kernel_applies", "window_kernel_available"]

OP_NAME = "oneformer::swin_window_attention"

_AVAILABLE = _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, "CPU")


def window_kernel_available() -> bool:
    """True when the compiled library registers the operator's CPU kernel."""
    return _AVAILABLE


def window_kernel_applies(x: torch.Tensor, training: bool) -> bool:
    """Whether Swin window attention on ``x`` (a block's input tokens) runs on the kernel: float32 CPU inference
    without autograd or autocast, outside TorchScript tracing and ``torch.export`` (whose ONNX / AOTInductor outputs
    keep the portable attention); ``torch.compile`` graphs call the operator."""
    return (_AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32 and not training
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export()
            and not is_exporting())


def swin_window_attention(qkv: torch.Tensor, index: torch.Tensor, bias: torch.Tensor, masks: Optional[torch.Tensor],
                          mask_index: Optional[torch.Tensor], num_heads: int, scale: float,
                          out_rows: int) -> torch.Tensor:
    """softmax(q k^T * scale + bias [+ mask]) v in each window, for float32 CPU tensors.

    Args:
        qkv: (R, 3C) projected tokens: queries, keys and values, each with the heads side by side.
        index: (nW * N,) int64: the qkv row at each position of each window (window-major, N positions each).
        bias: (num_heads, N, N) added to every window's scores (the relative position bias).
        masks, mask_index: None, or (T, N, N) float32 and (nW,) int64: window w also adds masks[mask_index[w]].
        out_rows: rows of the output; every row r < out_rows must be read by exactly one window position, whose
            output it receives; positions that read rows >= out_rows (padding) are keys and values only.
    Returns:
        (out_rows, C), before the output projection.
    """
    return torch.ops.oneformer.swin_window_attention(qkv, index, bias, masks, mask_index, num_heads, scale, out_rows)


def _fake(qkv, index, bias, masks, mask_index, num_heads, scale, out_rows):
    torch._check(qkv.dim() == 2, lambda: f"qkv must be (rows, 3 * C), got {tuple(qkv.shape)}")
    torch._check(bias.dim() == 3, lambda: f"bias must be (num_heads, N, N), got {tuple(bias.shape)}")
    return qkv.new_empty((out_rows, qkv.shape[1] // 3))


def register_inference_kernel(op_name: str, fake, fallback: str) -> None:
    """Register ``fake`` as the fake implementation of the inference-only operator ``op_name`` and an autograd
    formula that raises, naming ``fallback`` (what the model uses instead when gradients are needed)."""
    def backward(ctx, grad_output):
        raise RuntimeError(f"{op_name} is an inference kernel and has no backward; {fallback}")

    torch.library.register_fake(op_name)(fake)
    torch.library.register_autograd(op_name, backward, setup_context=lambda ctx, inputs, output: None)


if _AVAILABLE:
    register_inference_kernel(OP_NAME, _fake, "the Swin backbone uses scaled_dot_product_attention when gradients "
                                              "are needed (see window_kernel_applies)")

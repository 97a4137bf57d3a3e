"""``separable_value_attention``: attention over an H x W map whose values are a row term plus a column term,
through the CPU kernel ``torch.ops.oneformer.separable_value_attention`` (float32 inference).

OneFormer's class transformer attends from its queries to the sine positional encoding of the mask features
(the values) with the projected mask features added to the keys. The encoding's first half of channels depends on
the row only and the second half on the column only, so the projected value at (y, x) is ``vy[y] + vx[x]``, and a
query's output is its attention's row sums times ``vy`` plus its column sums times ``vx``: the kernel computes
q k^T, the softmax and those sums in one pass over the keys, without the (H*W x d) value product. It is an inference
kernel like ``swin_window_attention`` (its autograd formula raises; :func:`separable_kernel_applies` says when it is
used). Schema and kernel: oneformer/ops/csrc (C++); the fake implementation is registered here.
"""
import torch

from .functional import _C
from .window_attention import register_inference_kernel, window_kernel_applies

__all__ = ["OP_NAME", "separable_kernel_applies", "separable_value_attention"]

OP_NAME = "oneformer::separable_value_attention"

_AVAILABLE = _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, "CPU")


def separable_kernel_applies(x: torch.Tensor, training: bool) -> bool:
    """The same conditions as :func:`~oneformer.ops.window_attention.window_kernel_applies` (float32 CPU inference,
    eager or ``torch.compile``, not exported), with this operator built."""
    return _AVAILABLE and window_kernel_applies(x, training)


def separable_value_attention(q: torch.Tensor, kt: torch.Tensor, vy: torch.Tensor, vx: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v with v[y * W + x] = vy[y] + vx[x], float32 CPU tensors.

    Args:
        q: (B, heads, Lq, d) queries, already scaled.
        kt: (B, heads, d, H * W) keys, transposed (map positions row-major).
        vy: (heads, H, d) and vx: (heads, W, d): the row and column terms of the values.
    Returns:
        (B, heads, Lq, d).
    """
    return torch.ops.oneformer.separable_value_attention(q, kt, vy, vx)


def _fake(q, kt, vy, vx):
    torch._check(q.dim() == 4, lambda: f"q must be (B, heads, Lq, d), got {tuple(q.shape)}")
    return q.new_empty(q.shape)


if _AVAILABLE:
    register_inference_kernel(OP_NAME, _fake, "the class transformer uses scaled_dot_product_attention when "
                                              "gradients are needed (see separable_kernel_applies)")

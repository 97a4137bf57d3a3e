"""``update_mask_owners``: the owner search of panoptic post-processing through the CPU kernel
``torch.ops.oneformer.mask_owners_`` (float32), with the same results as the PyTorch ops it replaces
(:func:`oneformer.modeling.inference._owners` uses it for CPU float32 masks, and PyTorch ops elsewhere);
``update_resized_mask_owners``: the same search on low-resolution masks that ``torch.ops.oneformer.resized_mask_owners_``
resizes bilinearly on the fly, never holding the full-resolution masks.

Schema and kernel: oneformer/ops/csrc (C++); the fake implementation is registered here
(``torch.library.register_fake``).
"""
from typing import Optional

import torch

from .functional import _C

__all__ = ["OP_NAME", "RESIZED_OP_NAME", "mask_owners_available", "update_mask_owners", "update_resized_mask_owners"]

OP_NAME = "oneformer::mask_owners_"
RESIZED_OP_NAME = "oneformer::resized_mask_owners_"

_AVAILABLE = (_C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(OP_NAME, "CPU")
              and torch._C._dispatch_has_kernel_for_dispatch_key(RESIZED_OP_NAME, "CPU"))


def mask_owners_available(probs: torch.Tensor) -> bool:
    """Whether the kernel runs for these probabilities: float32 on the CPU, with the library built."""
    return _AVAILABLE and probs.device.type == "cpu" and probs.dtype == torch.float32


def update_mask_owners(probs: torch.Tensor, scores: torch.Tensor, offset: int, weighted_area: bool, best: torch.Tensor,
                       owner: torch.Tensor, own_prob: Optional[torch.Tensor]) -> torch.Tensor:
    """One chunk of queries of the owner search, in place.

    Args:
        probs: (c, H, W) mask probabilities of queries ``offset`` .. ``offset + c - 1``; scores: (c,) their class
            probabilities.
        best, owner, own_prob: (H, W) float32, int32 and float32 (or None), contiguous: per pixel the largest
            score × probability so far (start from -inf), its query, and that query's probability; a pixel moves
            to a query of this chunk only for a strictly larger value, so the first query wins ties.
        weighted_area: count a query's area on score × probability instead of the probability.
    Returns:
        (c,) int64: each query's pixels with (weighted) probability >= 0.5.
    """
    return torch.ops.oneformer.mask_owners_(probs, scores, offset, weighted_area, best, owner, own_prob)


def update_resized_mask_owners(masks: torch.Tensor, scores: torch.Tensor, offset: int, weighted_area: bool,
                               sigmoid: bool, best: torch.Tensor, owner: torch.Tensor,
                               own_prob: Optional[torch.Tensor]) -> torch.Tensor:
    """:func:`update_mask_owners` on the probabilities of ``masks`` (c, h, w) resized to best's (H, W) as
    ``F.interpolate(masks[None], size=(H, W), mode="bilinear", align_corners=False)[0]`` does (the same source pixels
    and weights; values agree to float rounding, ~1e-6), followed by ``sigmoid`` (then masks are logits) or not
    (then they are probabilities). The resized masks are made one output row at a time, never all at once.

    Returns:
        (c,) int64: each query's pixels with (weighted) probability >= 0.5 at (H, W).
    """
    return torch.ops.oneformer.resized_mask_owners_(masks, scores, offset, weighted_area, sigmoid, best, owner,
                                                    own_prob)


def _fake(probs, scores, offset, weighted_area, best, owner, own_prob):
    return probs.new_empty((probs.shape[0],), dtype=torch.int64)


def _fake_resized(masks, scores, offset, weighted_area, sigmoid, best, owner, own_prob):
    return masks.new_empty((masks.shape[0],), dtype=torch.int64)


if _AVAILABLE:
    torch.library.register_fake(OP_NAME)(_fake)
    torch.library.register_fake(RESIZED_OP_NAME)(_fake_resized)

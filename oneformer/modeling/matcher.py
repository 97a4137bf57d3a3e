"""Hungarian matching between predicted queries and ground-truth masks (spec §5).

For every image a cost matrix C (num_queries x num_targets) is built from

* a class term   ``-softmax(pred_logits)[:, target_label]``,
* a mask term    mean binary cross-entropy (with logits) over a set of sampled points,
* a dice term    ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` on the sigmoid of the sampled logits,

``C = cost_mask * mask + cost_class * class + cost_dice * dice``, and solved with
``scipy.optimize.linear_sum_assignment``. Masks are compared at ``num_points`` uniform random points (one draw per
image, shared by all predictions and targets of that image) in normalized coordinates, so predictions (1/4 scale)
and targets (padded image size) need not have the same resolution.
"""

import warnings
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .point_sampling import point_sample

__all__ = ["HungarianMatcher", "batch_sigmoid_ce_cost", "batch_dice_cost"]

# Lower bound of the value that replaces non-finite cost entries (the original release uses exactly 100). The value
# actually used is raised above ``max_finite + M * (max_finite - min_finite) + 1`` when needed (M = number of
# targets), which guarantees that an assignment using a non-finite entry is never preferred over one that avoids
# all of them (see ``_sanitize_cost``).
NON_FINITE_COST = 100.0


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise mean BCE-with-logits.

    Args:
        inputs: (N, P) logits.
        targets: (M, P) float targets in [0, 1].

    Returns:
        (N, M) where entry (n, m) = mean_p BCE(inputs[n, p], targets[m, p]).
    """
    num_points = inputs.shape[1]
    # BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0), which turns the pairwise mean into two matrix products.
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    cost = pos @ targets.t() + neg @ (1.0 - targets).t()
    return cost / num_points


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pairwise dice cost ``1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1)`` with ``p = sigmoid(inputs)``.

    Args:
        inputs: (N, P) logits.
        targets: (M, P) float targets in [0, 1].

    Returns:
        (N, M) cost matrix.
    """
    probs = inputs.sigmoid()
    numerator = 2.0 * (probs @ targets.t())
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def _pixel_centre_coords(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(1, H*W, 2) normalized (x, y) coordinates of the pixel centres of an H x W grid."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(1, -1, 2)


def _sanitize_cost(cost: np.ndarray) -> Tuple[np.ndarray, bool]:
    """Replace non-finite entries of a cost matrix by a large finite value.

    Returns the (possibly new) matrix and whether anything was replaced. The caller handles the all-non-finite case.

    The replacement ``v`` satisfies ``v >= max_f + M * (max_f - min_f) + 1`` (max_f / min_f: extreme finite costs,
    M: number of targets = columns) and ``v >= NON_FINITE_COST``. An assignment has k = min(N, M) <= M pairs; one
    that uses at least one replaced entry costs at least ``v + (k - 1) * min_f``, which exceeds ``k * max_f``, an
    upper bound of every assignment made of finite entries only; so non-finite entries are used only when
    unavoidable.
    """
    finite = np.isfinite(cost)
    if finite.all():
        return cost, False
    max_f = float(cost[finite].max())
    min_f = float(cost[finite].min())
    num_targets = cost.shape[1]
    value = max(NON_FINITE_COST, max_f + num_targets * (max_f - min_f) + 1.0)
    cost = np.where(finite, cost, value)
    return cost, True


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to ground-truth masks (no-object queries stay unmatched).

    Args:
        cost_class: weight of the classification cost.
        cost_mask: weight of the mask BCE cost.
        cost_dice: weight of the dice cost.
        num_points: number of uniform random points at which masks are compared. ``<= 0`` compares the masks at the
            pixel centres of the prediction grid instead (targets bilinearly sampled there), which is deterministic.
    """

    def __init__(self, cost_class: float = 1, cost_mask: float = 1, cost_dice: float = 1, num_points: int = 0):
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points
        assert cost_class != 0 or cost_mask != 0 or cost_dice != 0, "all costs can't be 0"

    @torch.no_grad()
    def forward(
        self, outputs: Dict[str, torch.Tensor], targets: List[Dict[str, torch.Tensor]]
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            outputs: dict with "pred_logits" (B, N, K+1) and "pred_masks" (B, N, H, W); other keys are ignored.
            targets: list of B dicts with "labels" (M_b,) int64 and "masks" (M_b, Ht, Wt) (binary or float).

        Returns:
            A list of B tuples (index_i, index_j) of int64 CPU tensors: query index_i[k] is matched to target
            index_j[k]; len = min(N, M_b) (0 for images without targets or with an all-non-finite cost matrix).
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        batch_size, num_queries = pred_logits.shape[:2]
        assert len(targets) == batch_size, f"{len(targets)} targets for a batch of {batch_size}"

        indices = []
        bad_images = []
        for b in range(batch_size):
            tgt_ids = targets[b]["labels"]
            num_targets = int(tgt_ids.shape[0])
            if num_targets == 0:
                indices.append(_empty_indices())
                continue
            cost = self._cost_matrix(pred_logits[b], pred_masks[b], tgt_ids, targets[b]["masks"])
            cost = cost.reshape(num_queries, num_targets).cpu().double().numpy()
            if not np.isfinite(cost).any():
                bad_images.append((b, "all"))
                indices.append(_empty_indices())
                continue
            cost, replaced = _sanitize_cost(cost)
            if replaced:
                bad_images.append((b, "some"))
            rows, cols = linear_sum_assignment(cost)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        if bad_images:
            desc = ", ".join(f"image {b}: {kind}" for b, kind in bad_images)
            warnings.warn(
                f"HungarianMatcher: non-finite matching costs ({desc}); all-non-finite images get no match, other "
                f"non-finite entries are replaced by a large finite cost (>= {NON_FINITE_COST}).",
                RuntimeWarning,
                stacklevel=2,
            )
        return indices

    def _cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, tgt_ids: torch.Tensor, tgt_masks: torch.Tensor
    ) -> torch.Tensor:
        """(N, M) float32 cost matrix of one image."""
        device = logits.device
        with torch.autocast(device_type=device.type, enabled=False):
            probs = logits.float().softmax(-1)  # (N, K+1)
            cost_class = -probs[:, tgt_ids.to(device)]

            out_mask = masks.float()[:, None]  # (N, 1, H, W)
            tgt_mask = tgt_masks.to(device=device, dtype=torch.float32)[:, None]  # (M, 1, Ht, Wt)
            if self.num_points > 0:
                coords = torch.rand(1, self.num_points, 2, device=device)
            else:
                coords = _pixel_centre_coords(out_mask.shape[-2], out_mask.shape[-1], device)
            tgt_points = point_sample(tgt_mask, coords.expand(tgt_mask.shape[0], -1, -1), align_corners=False).squeeze(
                1
            )  # (M, P)
            out_points = point_sample(out_mask, coords.expand(out_mask.shape[0], -1, -1), align_corners=False).squeeze(
                1
            )  # (N, P)

            cost_mask = batch_sigmoid_ce_cost(out_points, tgt_points)
            cost_dice = batch_dice_cost(out_points, tgt_points)
            return self.cost_mask * cost_mask + self.cost_class * cost_class + self.cost_dice * cost_dice

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}, "
            f"num_points={self.num_points}"
        )


def _empty_indices() -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)

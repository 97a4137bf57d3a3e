"""Point sampling helpers used by the matcher and the criterion.

Detectron2's PointRend project already provides the two generic pieces:

* ``point_sample(input, point_coords, **kwargs)`` -- ``F.grid_sample`` on ``2 * coords - 1`` for coordinates in the
  unit square; (N, P, 2) coordinates give (N, C, P), (N, Hg, Wg, 2) coordinates give (N, C, Hg, Wg). Callers pass
  ``align_corners=False`` explicitly (grid_sample's default, stated to avoid the torch warning).
* ``get_uncertain_point_coords_with_randomness(coarse_logits, uncertainty_func, num_points, oversample_ratio,
  importance_sample_ratio)`` -- draw ``num_points * oversample_ratio`` uniform points per mask, score the
  point-sampled logits with ``uncertainty_func``, keep the ``importance_sample_ratio * num_points`` most uncertain and
  fill up with uniform random points -> (R, num_points, 2).

They are re-exported here so the rest of the package has a single import location; only the uncertainty function
is specific to this project.
"""

import torch

from detectron2.projects.point_rend.point_features import (  # noqa: F401  (re-exported)
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

__all__ = ["point_sample", "get_uncertain_point_coords_with_randomness", "calculate_uncertainty"]


def calculate_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of class-agnostic mask logits: ``-|logit|`` (highest at the 0.5-probability boundary).

    Args:
        logits: (R, 1, ...) mask logits (point-sampled or dense).

    Returns:
        A tensor of the same shape; larger means more uncertain.
    """
    assert logits.shape[1] == 1, f"expected class-agnostic logits (R, 1, ...), got {tuple(logits.shape)}"
    return -torch.abs(logits)

import warnings

import pytest
import torch

from oneformer.modeling.matcher import HungarianMatcher, batch_dice_cost, batch_sigmoid_ce_cost
from oneformer.modeling.point_sampling import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
)

NUM_CLASSES = 5


def _random_targets(gen, num_targets, size):
    labels = torch.randperm(NUM_CLASSES, generator=gen)[:num_targets]
    masks = torch.zeros(num_targets, size, size)
    for m in range(num_targets):
        # distinct random rectangles (large enough to be hit by the sampled points)
        y0, x0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
        h, w = torch.randint(size // 4, size // 2, (2,), generator=gen).tolist()
        masks[m, y0 : y0 + h, x0 : x0 + w] = 1.0
    return {"labels": labels.long(), "masks": masks}


def _predictions_from_targets(gen, target, perm, num_queries, pred_size):
    """Queries perm[j] predict target j (class and mask); the rest predict no-object with random masks."""
    logits = torch.randn(num_queries, NUM_CLASSES + 1, generator=gen)
    logits[:, NUM_CLASSES] += 5.0
    masks = torch.randn(num_queries, pred_size, pred_size, generator=gen) * 3.0
    tgt_masks = torch.nn.functional.interpolate(target["masks"][:, None], size=(pred_size, pred_size), mode="nearest")
    for j, q in enumerate(perm):
        logits[q] = -5.0
        logits[q, target["labels"][j]] = 5.0
        masks[q] = (tgt_masks[j, 0] * 2.0 - 1.0) * 8.0
    return logits, masks


def _check_valid_matching(i, j, num_queries, num_targets):
    assert i.dtype == torch.int64 and j.dtype == torch.int64
    assert len(i) == len(j) == min(num_queries, num_targets)
    assert len(set(i.tolist())) == len(i) and len(set(j.tolist())) == len(j)
    assert all(0 <= q < num_queries for q in i.tolist()) and all(0 <= t < num_targets for t in j.tolist())


def _mapping(i, j):
    return {int(t): int(q) for q, t in zip(i, j)}


@pytest.mark.parametrize("num_points", [0, 2000])
@pytest.mark.parametrize("target_size", [32, 64])  # predictions are 32x32 (same size) or 1/2 of the targets
def test_matcher_recovers_permutation(num_points, target_size):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    num_queries, pred_size = 8, 32
    counts = [3, 4]
    targets, logits, masks, perms = [], [], [], []
    for m in counts:
        t = _random_targets(gen, m, target_size)
        perm = torch.randperm(num_queries, generator=gen)[:m].tolist()
        lg, mk = _predictions_from_targets(gen, t, perm, num_queries, pred_size)
        targets.append(t)
        logits.append(lg)
        masks.append(mk)
        perms.append(perm)
    outputs = {"pred_logits": torch.stack(logits), "pred_masks": torch.stack(masks)}
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    indices = matcher(outputs, targets)
    assert len(indices) == 2
    for (i, j), perm, m in zip(indices, perms, counts):
        _check_valid_matching(i, j, num_queries, m)
        assert _mapping(i, j) == {t: q for t, q in enumerate(perm)}


def test_matcher_class_only_and_mask_only():
    gen = torch.Generator().manual_seed(1)
    t = _random_targets(gen, 3, 32)
    perm = [5, 0, 2]
    lg, mk = _predictions_from_targets(gen, t, perm, 6, 32)
    outputs = {"pred_logits": lg[None], "pred_masks": mk[None]}
    for costs in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]:
        ((i, j),) = HungarianMatcher(*costs, num_points=0)(outputs, [t])
        assert _mapping(i, j) == {0: 5, 1: 0, 2: 2}


def test_matcher_zero_targets():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(2, 4, NUM_CLASSES + 1), "pred_masks": torch.randn(2, 4, 8, 8)}
    targets = [
        {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 16, 16)},
        {"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16)},
    ]
    indices = HungarianMatcher(num_points=100)(outputs, targets)
    i0, j0 = indices[0]
    assert i0.numel() == 0 and j0.numel() == 0 and i0.dtype == torch.int64 and j0.dtype == torch.int64
    _check_valid_matching(*indices[1], 4, 1)


def test_matcher_all_nan_gives_empty_assignment():
    outputs = {
        "pred_logits": torch.full((1, 4, NUM_CLASSES + 1), float("nan")),
        "pred_masks": torch.full((1, 4, 8, 8), float("nan")),
    }
    targets = [{"labels": torch.tensor([0, 2]), "masks": torch.ones(2, 8, 8)}]
    with pytest.warns(RuntimeWarning, match="non-finite"):
        ((i, j),) = HungarianMatcher(num_points=50)(outputs, targets)
    assert i.numel() == 0 and j.numel() == 0 and i.dtype == torch.int64


@pytest.mark.parametrize("bad", ["nan_logits", "inf_mask", "nan_mask"])
def test_matcher_partially_non_finite(bad):
    gen = torch.Generator().manual_seed(2)
    t = _random_targets(gen, 3, 32)
    perm = [1, 3, 4]
    lg, mk = _predictions_from_targets(gen, t, perm, 6, 32)
    # the non-finite queries include one that would otherwise be matched (query 3 -> target 1)
    if bad == "nan_logits":
        lg[3] = float("nan")
        lg[0] = float("nan")
    elif bad == "inf_mask":
        mk[3] = float("inf")
        mk[0, :4] = float("-inf")
    else:
        mk[3, 5:9, 5:9] = float("nan")
        mk[0] = float("nan")
    outputs = {"pred_logits": lg[None], "pred_masks": mk[None]}
    with pytest.warns(RuntimeWarning, match="non-finite"):
        ((i, j),) = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)(outputs, [t])
    _check_valid_matching(i, j, 6, 3)
    # non-finite queries are avoided while finite alternatives exist; the clean pairs are kept
    assert 3 not in i.tolist() and 0 not in i.tolist()
    mapping = _mapping(i, j)
    assert mapping[0] == 1 and mapping[2] == 4


def test_matcher_non_finite_column_still_matched():
    """A target whose whole column is non-finite is still assigned (valid matching), the others unaffected."""
    gen = torch.Generator().manual_seed(3)
    t = _random_targets(gen, 3, 32)
    t["masks"][1] = float("nan")
    lg, mk = _predictions_from_targets(gen, t, [0, 1, 2], 5, 32)
    mk[1] = torch.randn(32, 32, generator=gen)
    outputs = {"pred_logits": lg[None], "pred_masks": mk[None]}
    with pytest.warns(RuntimeWarning):
        ((i, j),) = HungarianMatcher(2.0, 5.0, 5.0, num_points=0)(outputs, [t])
    _check_valid_matching(i, j, 5, 3)
    mapping = _mapping(i, j)
    assert mapping[0] == 0 and mapping[2] == 2


def test_matcher_no_warning_when_finite():
    gen = torch.Generator().manual_seed(4)
    t = _random_targets(gen, 2, 16)
    lg, mk = _predictions_from_targets(gen, t, [0, 1], 3, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        HungarianMatcher(num_points=64)({"pred_logits": lg[None], "pred_masks": mk[None]}, [t])


def test_pairwise_costs_match_elementwise():
    torch.manual_seed(0)
    x = torch.randn(4, 30)
    t = (torch.rand(3, 30) > 0.5).float()
    ce = batch_sigmoid_ce_cost(x, t)
    dice = batch_dice_cost(x, t)
    for n in range(4):
        for m in range(3):
            ref = torch.nn.functional.binary_cross_entropy_with_logits(x[n], t[m])
            torch.testing.assert_close(ce[n, m], ref)
            p = x[n].sigmoid()
            ref_dice = 1 - (2 * (p * t[m]).sum() + 1) / (p.sum() + t[m].sum() + 1)
            torch.testing.assert_close(dice[n, m], ref_dice)


def test_point_sampling_helpers():
    torch.manual_seed(0)
    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    # pixel centres reproduce the values exactly (align_corners=False)
    coords = torch.tensor([[[0.125, 0.125], [0.875, 0.125], [0.125, 0.875]]])
    out = point_sample(feat, coords, align_corners=False)
    assert out.shape == (1, 1, 3)
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 3.0, 12.0]))
    grid = torch.rand(1, 5, 6, 2)
    assert point_sample(feat, grid, align_corners=False).shape == (1, 1, 5, 6)

    logits = torch.randn(3, 1, 8, 8)
    pts = get_uncertain_point_coords_with_randomness(logits, calculate_uncertainty, 20, 3, 0.75)
    assert pts.shape == (3, 20, 2) and pts.min() >= 0 and pts.max() <= 1
    torch.testing.assert_close(
        calculate_uncertainty(torch.tensor([[-2.0, 0.5]])[:, None]), -torch.tensor([[[2.0, 0.5]]])
    )
    # the importance-sampled points are more uncertain than uniform ones
    unc = calculate_uncertainty(point_sample(logits, pts, align_corners=False))[:, 0]
    unc_uniform = calculate_uncertainty(point_sample(logits, torch.rand(3, 1000, 2), align_corners=False))[:, 0]
    assert unc[:, :15].mean() > unc_uniform.mean()

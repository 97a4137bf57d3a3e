"""``torch.ops.oneformer.mask_owners_``: the CPU kernel of panoptic post-processing's owner search gives exactly the
results of the PyTorch ops it replaces; ``resized_mask_owners_``, which also resizes the masks (bilinear), gives them
up to float rounding of the resized values; both as custom operators (opcheck) and their argument checks."""
import re

import pytest
import torch

import oneformer.modeling.inference as inference
from oneformer.ops.mask_owners import mask_owners_available, update_mask_owners, update_resized_mask_owners

pytestmark = pytest.mark.skipif(not mask_owners_available(torch.zeros(1)), reason="oneformer.ops._C is not built")


def owners_with_torch_ops(probs, scores, weighted_area):
    """The reference: argmax of score × probability over queries (first on ties), the winner's probability, and each
    query's (weighted) area."""
    weighted = probs * scores.view(-1, 1, 1)
    value, arg = weighted.max(0)
    area = ((weighted if weighted_area else probs) >= 0.5).flatten(1).sum(1)
    return value, arg, probs.gather(0, arg[None])[0], area


def run_kernel(probs, scores, weighted_area, chunk=None):
    H, W = probs.shape[1:]
    best = torch.full((H, W), float("-inf"))
    owner = torch.zeros((H, W), dtype=torch.int32)
    own = torch.zeros(H, W)
    areas = []
    chunk = chunk or probs.shape[0]
    for start in range(0, probs.shape[0], chunk):
        areas.append(update_mask_owners(probs[start:start + chunk], scores[start:start + chunk], start, weighted_area,
                                        best, owner, own))
    return best, owner, own, torch.cat(areas)


@pytest.mark.parametrize("weighted_area", [False, True])
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (1, 5)])
@pytest.mark.parametrize("chunk", [None, 3])
def test_kernel_equals_the_torch_ops(weighted_area, size, chunk):
    g = torch.Generator().manual_seed(0)
    n = 11
    probs = torch.rand(n, *size, generator=g)
    probs[3] = probs[1]  # exact ties: the first query keeps the pixel
    probs[5, :, :2] = 0.5  # exactly at the area threshold
    scores = torch.rand(n, generator=g)
    scores[3] = scores[1]
    value, arg, own, area = owners_with_torch_ops(probs, scores, weighted_area)
    best, owner, own_k, area_k = run_kernel(probs, scores, weighted_area, chunk)
    assert torch.equal(best, value) and torch.equal(owner.long(), arg) and torch.equal(own_k, own)
    assert torch.equal(area_k, area)


def test_nan_wins_like_torch_max():
    probs = torch.rand(3, 4, 4)
    probs[1, 0, 0] = float("nan")
    best, owner, _, _ = run_kernel(probs, torch.ones(3), False)
    _, arg, _, _ = owners_with_torch_ops(probs, torch.ones(3), False)
    assert owner[0, 0] == arg[0, 0] == 1 and torch.isnan(best[0, 0])


def test_opcheck():
    probs, scores = torch.rand(4, 6, 5), torch.rand(4)
    state = (torch.full((6, 5), float("-inf")), torch.zeros(6, 5, dtype=torch.int32), torch.zeros(6, 5))
    torch.library.opcheck(torch.ops.oneformer.mask_owners_.default, (probs, scores, 0, False, *state))


@pytest.mark.parametrize("mutate,words", [
    (lambda a: a.update(probs=a["probs"].double()), "probs must be float32"),
    (lambda a: a.update(scores=a["scores"][:-1]), "scores must be float32 (c,)"),
    (lambda a: a.update(best=a["best"][:-1]), "best must be a contiguous float32 tensor of 30 pixels"),
    (lambda a: a.update(owner=a["owner"].long()), "owner must be a contiguous int32 tensor"),
    (lambda a: a.update(own_prob=a["own_prob"].t()), "own_prob must be a contiguous float32 tensor"),
])
def test_bad_arguments_name_the_problem(mutate, words):
    args = dict(probs=torch.rand(4, 6, 5), scores=torch.rand(4), offset=0, weighted_area=False,
                best=torch.full((6, 5), float("-inf")), owner=torch.zeros(6, 5, dtype=torch.int32),
                own_prob=torch.zeros(6, 5))
    mutate(args)
    with pytest.raises(RuntimeError, match=re.escape(words)):
        update_mask_owners(**args)


@pytest.mark.parametrize("original", [True, False])
def test_owner_search_with_and_without_the_kernel_agree(monkeypatch, original):
    g = torch.Generator().manual_seed(1)
    mask_pred = torch.randn(20, 16, 16, generator=g) * 4
    scores = torch.rand(20, generator=g)

    def resize(m):
        return torch.nn.functional.interpolate(m[None], size=(61, 47), mode="bilinear", align_corners=False)[0]

    got = inference._owners(mask_pred, scores, resize, original, chunk_bytes=61 * 47 * 4 * 3)
    monkeypatch.setattr(inference, "mask_owners_available", lambda probs: False)
    ref = inference._owners(mask_pred, scores, resize, original, chunk_bytes=61 * 47 * 4 * 3)
    assert torch.equal(got[0], ref[0]) and got[0].dtype == ref[0].dtype == torch.int64
    assert (got[1] is None) == (ref[1] is None) and (got[1] is None or torch.equal(got[1], ref[1]))
    assert got[2] == ref[2]


# ------------------------------------------------------------------------------------------------------------------
# resized_mask_owners_: bilinear resizing inside the owner search

def resized_with_torch_ops(masks, scores, size, original):
    """The reference: F.interpolate to ``size`` (then sigmoid: the original rule; of the sigmoid: transformers'),
    and the owner search of owners_with_torch_ops. Also returns the resized probabilities."""
    def up(m):
        return torch.nn.functional.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]
    probs = up(masks).sigmoid() if original else up(masks.sigmoid())
    return owners_with_torch_ops(probs, scores, not original) + (probs,)


def run_resized_kernel(masks, scores, size, original):
    best = torch.full(size, float("-inf"))
    owner = torch.zeros(size, dtype=torch.int32)
    own = torch.zeros(size)
    area = update_resized_mask_owners(masks if original else masks.sigmoid(), scores, 0, not original, original,
                                      best, owner, own)
    return best, owner, own, area


RESIZED_CASES = [  # (queries, source h, w, output H, W)
    (9, 16, 16, 64, 64),  # x4, as OneFormer's 1/4-scale masks
    (7, 16, 12, 61, 47),  # not a multiple
    (5, 20, 30, 20, 30),  # same size
    (6, 33, 17, 10, 40),  # smaller along one axis, larger along the other
    (3, 1, 5, 7, 3),
]


def assert_resized_kernel_matches(masks, scores, size, original, tol=1e-5):
    value, arg, own, area, probs = resized_with_torch_ops(masks, scores, size, original)
    best, owner, own_k, area_k = run_resized_kernel(masks, scores, size, original)
    torch.testing.assert_close(best, value, rtol=tol, atol=tol)
    torch.testing.assert_close(own_k, own, rtol=tol, atol=tol)
    # the owner may differ only where the two best values are within rounding of each other
    weighted = probs * scores.view(-1, 1, 1)
    top2 = weighted.topk(min(2, weighted.shape[0]), dim=0).values
    close = (top2[0] - top2[-1]).abs() <= tol if weighted.shape[0] > 1 else torch.zeros_like(best, dtype=torch.bool)
    assert torch.equal(owner.long()[~close], arg[~close])
    # likewise a pixel's count may differ only at the area threshold
    measured = probs if original else weighted
    slack = ((measured - 0.5).abs() <= tol).flatten(1).sum(1)
    assert ((area_k - area).abs() <= slack).all()
    return owner, arg


@pytest.mark.parametrize("original", [True, False])
@pytest.mark.parametrize("case", RESIZED_CASES)
def test_resized_kernel_equals_interpolate_then_owner_search(original, case):
    n, h, w, H, W = case
    g = torch.Generator().manual_seed(sum(case))
    masks = torch.randn(n, h, w, generator=g) * 4
    masks[2] = masks[1]  # exact ties: the first query keeps the pixel
    scores = torch.rand(n, generator=g)
    scores[2] = scores[1]
    owner, _ = assert_resized_kernel_matches(masks, scores, (H, W), original)
    assert not (owner == 2).any()


def test_resized_kernel_saturated_logits():
    # logits far beyond the sigmoid's range: torch.sigmoid gives exactly 0 and 1, so ties among zeros go to the
    # first query, as in the reference
    masks = torch.full((4, 8, 8), -200.0)
    masks[3, 2:5, 2:5] = 200.0
    scores = torch.tensor([0.9, 0.8, 0.95, 0.7])
    value, arg, own, area, _ = resized_with_torch_ops(masks, scores, (32, 32), True)
    best, owner, own_k, area_k = run_resized_kernel(masks, scores, (32, 32), True)
    assert torch.equal(owner.long(), arg) and torch.equal(best, value) and torch.equal(own_k, own)
    assert torch.equal(area_k, area) and area_k[3] > 0 and not area_k[:3].any()


def test_resized_kernel_nan_wins_like_torch_max():
    masks = torch.randn(3, 4, 4)
    masks[1, 0, 0] = float("nan")
    best, owner, _, _ = run_resized_kernel(masks, torch.ones(3), (16, 16), True)
    _, arg, _, _, _ = resized_with_torch_ops(masks, torch.ones(3), (16, 16), True)
    nan = torch.isnan(best)
    assert nan.any() and torch.equal(nan, arg.eq(1) & torch.isnan(best)) and (owner[nan] == 1).all()


def test_resized_opcheck():
    masks, scores = torch.randn(4, 3, 5), torch.rand(4)
    state = (torch.full((6, 10), float("-inf")), torch.zeros(6, 10, dtype=torch.int32), torch.zeros(6, 10))
    torch.library.opcheck(torch.ops.oneformer.resized_mask_owners_.default, (masks, scores, 0, False, True, *state))


@pytest.mark.parametrize("mutate,words", [
    (lambda a: a.update(masks=a["masks"][0]), "masks must be (c, h, w)"),
    (lambda a: a.update(masks=a["masks"][:, :0]), "have no pixels to resize"),
    (lambda a: a.update(masks=a["masks"].double()), "resized_mask_owners_: masks must be float32"),
    (lambda a: a.update(best=a["best"].flatten()), "best must be (H, W)"),
    (lambda a: a.update(owner=a["owner"][:-1]), "owner must be a contiguous int32 tensor of 60 pixels"),
    (lambda a: a.update(scores=a["scores"][:2]), "scores must be float32 (c,)"),
])
def test_resized_bad_arguments_name_the_problem(mutate, words):
    args = dict(masks=torch.randn(4, 3, 5), scores=torch.rand(4), offset=0, weighted_area=False, sigmoid=True,
                best=torch.full((6, 10), float("-inf")), owner=torch.zeros(6, 10, dtype=torch.int32),
                own_prob=torch.zeros(6, 10))
    mutate(args)
    with pytest.raises(RuntimeError, match=re.escape(words)):
        update_resized_mask_owners(**args)


@pytest.mark.parametrize("original", [True, False])
def test_owner_search_with_a_bilinear_resize_uses_the_resized_kernel(monkeypatch, original):
    g = torch.Generator().manual_seed(2)
    mask_pred = torch.randn(20, 16, 16, generator=g) * 4
    scores = torch.rand(20, generator=g)

    def resize(m):
        return torch.nn.functional.interpolate(m[None], size=(61, 47), mode="bilinear", align_corners=False)[0]

    ref = inference._owners(mask_pred, scores, resize, original)
    resize.bilinear_size = (61, 47)
    calls = []
    monkeypatch.setattr(inference, "update_resized_mask_owners",
                        lambda *a: calls.append(1) or update_resized_mask_owners(*a))
    got = inference._owners(mask_pred, scores, resize, original)
    assert calls == [1]
    assert got[0].dtype == torch.int64 and (got[0] == ref[0]).float().mean() > 0.999
    assert (got[1] is None) == (ref[1] is None)
    if got[1] is not None:
        torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    assert max(abs(a - b) for a, b in zip(got[2], ref[2])) <= 2

"""``torch.ops.oneformer.mask_owners_``: the CPU kernel of panoptic post-processing's owner search gives exactly the
results of the PyTorch ops it replaces; as a custom operator (opcheck) and its argument checks."""
import re

import pytest
import torch

import oneformer.modeling.inference as inference
from oneformer.ops.mask_owners import mask_owners_available, update_mask_owners

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

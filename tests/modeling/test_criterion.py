import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from oneformer.modeling.criterion import SetCriterion, build_weight_dict, dice_loss, sigmoid_ce_loss
from oneformer.modeling.matcher import HungarianMatcher

K = 3  # classes


def _criterion(num_points=1024, eos_coef=0.1, losses=("labels", "masks", "contrastive"), temperature=0.07):
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=num_points)
    weight_dict = build_weight_dict(2.0, 5.0, 5.0, 0.5, dec_layers=3, deep_supervision=True)
    return SetCriterion(
        K,
        matcher=matcher,
        weight_dict=weight_dict,
        eos_coef=eos_coef,
        losses=losses,
        num_points=num_points,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        contrast_temperature=temperature,
    )


def _rect_masks(gen, num, size, step=1):
    masks = torch.zeros(num, size, size)
    for m in range(num):
        y0, x0 = (torch.randint(0, size // (2 * step), (2,), generator=gen) * step).tolist()
        h, w = (torch.randint(size // (4 * step), size // (2 * step), (2,), generator=gen) * step).tolist()
        masks[m, y0 : y0 + h, x0 : x0 + w] = 1.0
    return masks


def _batch(gen, counts=(2, 3), num_queries=5, pred_size=16, target_size=64, contrast_dim=4):
    targets = []
    for m in counts:
        targets.append(
            {
                "labels": torch.randint(0, K, (m,), generator=gen),
                "masks": _rect_masks(gen, m, target_size, step=target_size // pred_size),
            }
        )
    b = len(counts)
    outputs = {
        "pred_logits": torch.randn(b, num_queries, K + 1, generator=gen),
        "pred_masks": torch.randn(b, num_queries, pred_size, pred_size, generator=gen),
        "contrastive_logits": torch.randn(b, num_queries, contrast_dim, generator=gen),
        "texts": torch.randn(b, num_queries, contrast_dim, generator=gen),
    }
    return outputs, targets


# ---------------------------------------------------------------------------------------------------------------
def test_state_dict_keys_and_values():
    crit = SetCriterion(
        150, HungarianMatcher(2, 5, 5, 16), {}, 0.1, ["labels", "masks", "contrastive"], 16, 3, 0.75, 0.07
    )
    sd = crit.state_dict()
    assert set(sd) == {"empty_weight", "logit_scale"}
    assert sd["empty_weight"].shape == (151,)
    torch.testing.assert_close(sd["empty_weight"][:-1], torch.ones(150))
    assert sd["empty_weight"][-1].item() == pytest.approx(0.1)
    assert sd["logit_scale"].shape == () and isinstance(crit.logit_scale, torch.nn.Parameter)
    assert sd["logit_scale"].item() == pytest.approx(math.log(1 / 0.07)) == pytest.approx(2.6593, abs=1e-4)
    assert [n for n, _ in crit.named_parameters()] == ["logit_scale"]
    assert "num_points: 16" in repr(crit) and "HungarianMatcher" in repr(crit)
    # loading back works
    crit.load_state_dict(sd)


def test_build_weight_dict():
    wd = build_weight_dict(2.0, 5.0, 5.0, 0.5, dec_layers=10, deep_supervision=True)
    assert len(wd) == 4 * 10
    assert wd["loss_ce"] == 2.0 and wd["loss_mask"] == 5.0 and wd["loss_dice"] == 5.0 and wd["loss_contrastive"] == 0.5
    assert wd["loss_ce_8"] == 2.0 and wd["loss_contrastive_8"] == 0.5 and "loss_ce_9" not in wd
    assert set(build_weight_dict(2.0, 5.0, 5.0, 0.5, 10, False)) == {
        "loss_ce",
        "loss_mask",
        "loss_dice",
        "loss_contrastive",
    }


def test_loss_ce_hand_computation():
    logits = torch.tensor([[[0.2, 3.0, -1.0, 0.0], [0.5, 0.1, 1.0, 2.0], [1.0, -0.3, 0.2, 0.4]]])
    target_mask = torch.zeros(1, 8, 8)
    target_mask[0, 2:6, 2:6] = 1
    pred_masks = torch.randn(1, 3, 8, 8)
    pred_masks[0, 0] = (target_mask[0] * 2 - 1) * 10
    outputs = {"pred_logits": logits, "pred_masks": pred_masks}
    targets = [{"labels": torch.tensor([1]), "masks": target_mask}]
    crit = _criterion(num_points=64, losses=("labels",))
    losses = crit(outputs, targets)
    assert set(losses) == {"loss_ce"}

    def nll(row, cls):
        row = row.tolist()
        return -(row[cls] - math.log(sum(math.exp(v) for v in row)))

    # query 0 -> class 1 (weight 1); queries 1, 2 -> no-object class 3 (weight 0.1)
    expected = (1.0 * nll(logits[0, 0], 1) + 0.1 * nll(logits[0, 1], 3) + 0.1 * nll(logits[0, 2], 3)) / 1.2
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-5)


def test_loss_labels_with_given_indices_batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, K + 1, generator=gen)
    targets = [
        {"labels": torch.tensor([2, 0]), "masks": torch.zeros(2, 4, 4)},
        {"labels": torch.tensor([1]), "masks": torch.zeros(1, 4, 4)},
    ]
    indices = [(torch.tensor([3, 1]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    crit = _criterion()
    loss = crit.loss_labels({"pred_logits": logits}, targets, indices, 3.0)["loss_ce"]
    tgt = torch.full((2, 4), K)
    tgt[0, 3], tgt[0, 1], tgt[1, 2] = 0, 2, 1
    w = torch.tensor([1.0, 1.0, 1.0, 0.1])[tgt]
    nll = -logits.log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
    torch.testing.assert_close(loss, (w * nll).sum() / w.sum())


def test_mask_losses_hand_computation(monkeypatch):
    """With the sampled points fixed at the pixel centres, the losses are per-pixel BCE / dice on matched pairs."""
    import oneformer.modeling.criterion as criterion_mod

    seen = {}

    def fake_sampler(coarse_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio):
        seen.update(n=coarse_logits.shape[0], args=(num_points, oversample_ratio, importance_sample_ratio))
        ys, xs = torch.meshgrid((torch.arange(4) + 0.5) / 4, (torch.arange(4) + 0.5) / 4, indexing="ij")
        coords = torch.stack([xs, ys], -1).reshape(1, 16, 2)
        return coords.expand(coarse_logits.shape[0], -1, -1)

    monkeypatch.setattr(criterion_mod, "get_uncertain_point_coords_with_randomness", fake_sampler)
    gen = torch.Generator().manual_seed(8)
    pred = torch.randn(2, 3, 4, 4, generator=gen)
    tgt0 = (torch.rand(2, 4, 4, generator=gen) > 0.5).float()
    tgt1 = (torch.rand(1, 4, 4, generator=gen) > 0.5).float()
    targets = [{"labels": torch.tensor([0, 1]), "masks": tgt0}, {"labels": torch.tensor([2]), "masks": tgt1}]
    indices = [(torch.tensor([2, 0]), torch.tensor([1, 0])), (torch.tensor([1]), torch.tensor([0]))]
    crit = _criterion(num_points=16)
    losses = crit.loss_masks({"pred_masks": pred}, targets, indices, num_masks=3.0)
    assert seen == {"n": 3, "args": (16, 3.0, 0.75)}
    pairs = [(pred[0, 2], tgt0[1]), (pred[0, 0], tgt0[0]), (pred[1, 1], tgt1[0])]
    bce = sum(F.binary_cross_entropy_with_logits(x, t) for x, t in pairs) / 3.0
    dice = sum(1 - (2 * (x.sigmoid() * t).sum() + 1) / (x.sigmoid().sum() + t.sum() + 1) for x, t in pairs) / 3.0
    torch.testing.assert_close(losses["loss_mask"], bce)
    torch.testing.assert_close(losses["loss_dice"], dice)


def test_loss_helpers_divide_by_num_masks():
    x, t = torch.randn(3, 10), (torch.rand(3, 10) > 0.5).float()
    torch.testing.assert_close(sigmoid_ce_loss(x, t, 2.0) * 2.0, F.binary_cross_entropy_with_logits(x, t) * 3)
    p = x.sigmoid()
    ref = (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).sum() / 4.0
    torch.testing.assert_close(dice_loss(x, t, 4.0), ref)


def test_perfect_masks_beat_random_masks():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    outputs, targets = _batch(gen, counts=(2, 3), num_queries=5, pred_size=16, target_size=64)
    perfect = {k: v.clone() for k, v in outputs.items()}
    for b, t in enumerate(targets):
        small = F.interpolate(t["masks"][:, None], size=(16, 16), mode="nearest")[:, 0]
        for j in range(len(t["labels"])):
            perfect["pred_masks"][b, j] = (small[j] * 2 - 1) * 12.0
            perfect["pred_logits"][b, j] = -8.0
            perfect["pred_logits"][b, j, t["labels"][j]] = 8.0
        perfect["pred_logits"][b, len(t["labels"]) :] = -8.0
        perfect["pred_logits"][b, len(t["labels"]) :, K] = 8.0
    crit = _criterion(num_points=2048, losses=("labels", "masks"))
    good = crit(perfect, targets)
    bad = crit(outputs, targets)
    assert good["loss_mask"] < 0.3 * bad["loss_mask"]
    assert good["loss_dice"] < 0.3 * bad["loss_dice"]
    assert good["loss_ce"] < 0.01 < bad["loss_ce"]


def test_targets_of_different_sizes_are_padded():
    gen = torch.Generator().manual_seed(2)
    outputs, targets = _batch(gen, counts=(2, 1), pred_size=8, target_size=32)
    targets[1]["masks"] = targets[1]["masks"][:, :24, :20]
    losses = _criterion(num_points=256)(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_aux_loss_keys_and_gradients():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    outputs, targets = _batch(gen)
    for v in outputs.values():
        v.requires_grad_(True)
    aux = [
        {
            "pred_logits": torch.randn(2, 5, K + 1, generator=gen, requires_grad=True),
            "pred_masks": torch.randn(2, 5, 16, 16, generator=gen, requires_grad=True),
        }
        for _ in range(2)
    ]
    crit = _criterion(num_points=256)
    losses = crit({**outputs, "aux_outputs": aux}, targets)
    base = {"loss_ce", "loss_mask", "loss_dice"}
    assert set(losses) == base | {"loss_contrastive"} | {f"{k}_{i}" for k in base for i in range(2)}
    assert set(losses) <= set(crit.weight_dict)  # every produced loss has a weight
    total = sum(crit.weight_dict[k] * v for k, v in losses.items())
    total.backward()
    for name in ("pred_logits", "pred_masks", "contrastive_logits", "texts"):
        g = outputs[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    for a in aux:
        assert a["pred_logits"].grad.abs().sum() > 0 and a["pred_masks"].grad.abs().sum() > 0
    assert crit.logit_scale.grad is not None and crit.logit_scale.grad.abs() > 0
    assert crit.empty_weight.grad is None


def test_zero_targets_no_crash():
    gen = torch.Generator().manual_seed(4)
    outputs, _ = _batch(gen)
    outputs["pred_masks"].requires_grad_(True)
    outputs["pred_logits"].requires_grad_(True)
    targets = [{"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 64, 64)} for _ in range(2)]
    crit = _criterion(num_points=64)
    assert SetCriterion._num_masks(targets, torch.device("cpu")) == 1.0
    losses = crit({**outputs, "aux_outputs": [{k: outputs[k] for k in ("pred_logits", "pred_masks")}]}, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0 and losses["loss_mask_0"].item() == 0
    # all queries are no-object
    expected_ce = F.cross_entropy(outputs["pred_logits"].reshape(-1, K + 1), torch.full((10,), K))
    torch.testing.assert_close(losses["loss_ce"], expected_ce)
    sum(losses.values()).backward()
    assert outputs["pred_masks"].grad is not None


def test_num_masks_counts_targets():
    targets = [{"labels": torch.zeros(3, dtype=torch.int64)}, {"labels": torch.zeros(2, dtype=torch.int64)}]
    assert SetCriterion._num_masks(targets, torch.device("cpu")) == 5.0


# ---------------------------------------------------------------------------------------------------------------
# contrastive loss
def _hand_contrastive_b2(img, txt, scale):
    """Plain-python symmetric InfoNCE for B = 2 (one row per image)."""

    def unit(v):
        v = v.flatten().tolist()
        n = math.sqrt(sum(a * a for a in v))
        return [a / n for a in v]

    I = [unit(img[b]) for b in range(2)]
    T = [unit(txt[b]) for b in range(2)]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731

    def ce(rows):  # rows[b] = logits of row b; target = b
        return sum(-(r[b] - math.log(sum(math.exp(v) for v in r))) for b, r in enumerate(rows)) / len(rows)

    img_rows = [[scale * dot(I[b], T[c]) for c in range(2)] for b in range(2)]
    txt_rows = [[scale * dot(T[b], I[c]) for c in range(2)] for b in range(2)]
    return ce(img_rows) + ce(txt_rows)


def test_contrastive_hand_computation_and_cap():
    gen = torch.Generator().manual_seed(5)
    img = torch.randn(2, 3, 4, generator=gen)
    txt = torch.randn(2, 3, 4, generator=gen)
    crit = _criterion(losses=("contrastive",))
    out = crit.loss_contrastive({"contrastive_logits": img, "texts": txt}, None, None, 1.0)["loss_contrastive"]
    assert out.item() == pytest.approx(_hand_contrastive_b2(img, txt, 1 / 0.07), rel=1e-5)
    out.backward()
    assert crit.logit_scale.grad.abs() > 0

    # scale exp(log 1000) = 1000 is capped at 100, and the capped scale gets no gradient
    crit.logit_scale.grad = None
    with torch.no_grad():
        crit.logit_scale.fill_(math.log(1000.0))
    out = crit.loss_contrastive({"contrastive_logits": img, "texts": txt}, None, None, 1.0)["loss_contrastive"]
    assert out.item() == pytest.approx(_hand_contrastive_b2(img, txt, 100.0), rel=1e-5)
    out.backward()
    assert crit.logit_scale.grad.item() == 0.0


def test_contrastive_uses_half_inputs_in_float():
    gen = torch.Generator().manual_seed(6)
    img = torch.randn(2, 3, 4, generator=gen)
    txt = torch.randn(2, 3, 4, generator=gen)
    crit = _criterion(losses=("contrastive",))
    ref = crit.loss_contrastive({"contrastive_logits": img, "texts": txt}, None, None, 1.0)["loss_contrastive"]
    half = crit.loss_contrastive({"contrastive_logits": img.bfloat16(), "texts": txt}, None, None, 1.0)
    assert half["loss_contrastive"].dtype == torch.float32
    assert half["loss_contrastive"].item() == pytest.approx(ref.item(), rel=5e-2)


# distributed: 2 CPU processes (gloo), B = 2 per rank
WORLD, B = 2, 2
_SCALE = 1.3  # logit_scale value (exp = 3.67, below the cap)


def _full_contrastive_inputs():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(WORLD * B, 3, 4, generator=gen), torch.randn(WORLD * B, 3, 4, generator=gen)


def _dist_worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        image, text = _full_contrastive_inputs()
        img = image[rank * B : (rank + 1) * B].clone().requires_grad_(True)
        txt = text[rank * B : (rank + 1) * B].clone().requires_grad_(True)
        crit = _criterion(losses=("contrastive",))
        with torch.no_grad():
            crit.logit_scale.fill_(_SCALE)
        loss = crit.loss_contrastive({"contrastive_logits": img, "texts": txt}, None, None, 1.0)["loss_contrastive"]
        loss.backward()
        torch.save(
            {"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": crit.logit_scale.grad},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def _reference_rank_loss(image, text, logit_scale, rank):
    """Single-process loss of `rank`: its B rows scored against the whole concatenated batch."""
    i = F.normalize(image.flatten(1), dim=-1)
    t = F.normalize(text.flatten(1), dim=-1)
    s = torch.clamp(logit_scale.exp(), max=100)
    rows = slice(rank * B, (rank + 1) * B)
    labels = torch.arange(B) + rank * B
    li = (s * i[rows] @ t.t()).log_softmax(-1)
    lt = (s * t[rows] @ i.t()).log_softmax(-1)
    return -li[torch.arange(B), labels].mean() - lt[torch.arange(B), labels].mean()


@pytest.mark.slow  # two spawned interpreters import torch + detectron2 (~4 s each)
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_contrastive_distributed_gather_with_grad(tmp_path):
    mp.spawn(_dist_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    image, text = _full_contrastive_inputs()
    image.requires_grad_(True)
    text.requires_grad_(True)
    scale = torch.tensor(_SCALE, requires_grad=True)
    ref_losses = [_reference_rank_loss(image, text, scale, r) for r in range(WORLD)]
    # (i) each rank's loss equals the reference restricted to its rows
    for r in range(WORLD):
        torch.testing.assert_close(results[r]["loss"], ref_losses[r].detach())
    # (ii) gradients of the total objective sum_r L_r
    sum(ref_losses).backward()
    torch.testing.assert_close(torch.cat([res["img"] for res in results]), image.grad)
    torch.testing.assert_close(torch.cat([res["txt"] for res in results]), text.grad)
    torch.testing.assert_close(sum(res["scale"] for res in results), scale.grad)

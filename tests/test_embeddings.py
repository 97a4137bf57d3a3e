"""Query embeddings and per-pixel class probabilities: shapes and alignment with the results they describe."""
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from oneformer.predictor import OneFormerPredictor
from tests.tiny import tiny_cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 20
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    return OneFormerPredictor(cfg, batch_size=2)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)]


def _class_head(predictor):
    return predictor.model.sem_seg_head.predictor.class_embed


def test_query_embeddings_are_what_the_class_head_reads(predictor, images):
    outs = predictor(images, task="panoptic", embeddings=True)
    n, c = predictor.cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES, predictor.cfg.MODEL.ONE_FORMER.HIDDEN_DIM
    logits = []
    hook = _class_head(predictor).register_forward_hook(lambda m, a, out: logits.append(out))
    try:
        predictor(images, task="panoptic")
    finally:
        hook.remove()
    for i, out in enumerate(outs):
        emb = out["query_embeddings"]
        assert emb.shape == (n, c)
        # the batch's last class prediction is the final one; the embeddings reproduce it
        assert torch.allclose(_class_head(predictor)(emb), logits[-1][i], atol=1e-5)


def test_instance_embeddings_align_with_instances(predictor, images):
    out = predictor(images[0], task="instance", embeddings=True)[0]
    inst = out["instances"]
    assert len(inst) > 0
    assert inst.pred_embeddings.shape == (len(inst), out["query_embeddings"].shape[1])
    assert torch.equal(inst.pred_embeddings, out["query_embeddings"][inst.pred_query_ids])
    # each instance's class probability, recomputed from its embedding, bounds its score (class prob × mask score)
    probs = F.softmax(_class_head(predictor)(inst.pred_embeddings), -1)
    own = probs[torch.arange(len(inst)), inst.pred_classes]
    assert (own + 1e-5 >= inst.scores).all() and (own > 0).all()
    plain = predictor(images[0], task="instance")[0]["instances"]
    assert not plain.has("pred_embeddings")
    assert torch.equal(plain.pred_masks, inst.pred_masks) and torch.equal(plain.scores, inst.scores)


def test_panoptic_embeddings_align_with_segments(predictor, images):
    out = predictor(images[1], task="panoptic", embeddings=True)[0]
    seg, info = out["panoptic_seg"]
    emb = out["panoptic_embeddings"]
    assert len(info) > 0 and emb.shape == (len(info), out["query_embeddings"].shape[1])
    head = _class_head(predictor)
    for row, s in zip(emb, info):
        assert s["query_ids"] and (seg == s["id"]).any()
        assert torch.allclose(row, out["query_embeddings"][s["query_ids"]].mean(0))
        for q in s["query_ids"]:  # each of the segment's queries predicts the segment's class
            assert int(head(out["query_embeddings"][q]).argmax()) == s["category_id"]
        best = max(float(F.softmax(head(out["query_embeddings"][q]), -1).max()) for q in s["query_ids"])
        assert s["score"] == pytest.approx(best, abs=1e-5)
    plain_seg, plain_info = predictor(images[1], task="panoptic")[0]["panoptic_seg"]
    assert torch.equal(plain_seg, seg)
    assert [{k: v for k, v in s.items() if k not in ("query_ids", "score")} for s in info] == plain_info


def test_semantic_probabilities(predictor, images):
    out = predictor(images, task="semantic", probabilities=True)
    for o, img in zip(out, images):
        probs, scores = o["sem_seg_probs"], o["sem_seg"]
        assert probs.shape == scores.shape == (5,) + img.shape[:2]
        assert torch.allclose(probs.sum(0), torch.ones(img.shape[:2]), atol=1e-5)
        assert (probs >= 0).all()
        assert torch.equal(probs.argmax(0), scores.argmax(0))
    only = predictor(images[0], task="semantic", probabilities=True, all_outputs=False)[0]
    assert set(only) == {"sem_seg", "sem_seg_probs"}


def test_unknown_extra_is_named(predictor, images):
    x = predictor._inputs(images[0], "semantic", ("sem_seg", "logits"))
    with pytest.raises(ValueError, match=r"unknown entries \['logits'\]; choose from .*'embeddings', 'sem_seg_probs'"):
        predictor.model([x])

"""Task "all" (MODEL.TEST.TASK all): one pass, each output from its own task token, equal to three single-token runs.

Model level on the tiny config (random weights, every query kept so the outputs are not empty), then the evaluation
path: train_net's Trainer.test with MODEL.TEST.TASK all on a tiny synthetic panoptic dataset with the bundled synthetic
checkpoint gives PQ of the panoptic run, AP of the instance run and mIoU of the semantic run, and runs the backbone
once per image.
"""
import math

import pytest
import torch
from detectron2.modeling import build_model

from oneformer.data.dataset_mappers.dataset_mapper import normalize_task
from tests.test_oneformer_model import _image
from tests.tiny import tiny_cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.TEST.DETECTION_ON = True
    m = build_model(cfg)
    m.eval()
    return m


def _assert_same(a, b):
    assert set(a) == set(b)
    for key in a:
        if key == "panoptic_seg":
            assert torch.equal(a[key][0], b[key][0]) and a[key][1] == b[key][1]
        elif key in ("instances", "box_instances"):
            fa, fb = a[key].get_fields(), b[key].get_fields()
            assert set(fa) == set(fb)
            for f in fa:
                va, vb = fa[f], fb[f]
                va, vb = (getattr(va, "tensor", va), getattr(vb, "tensor", vb))
                assert torch.equal(va, vb), (key, f)
        else:
            assert torch.equal(a[key], b[key]), key


def _inputs(task, **extra):
    return [{"image": _image(64, 96), "task": task, **extra},
            {"image": _image(80, 50, 1), "task": task, "height": 160, "width": 100, **extra}]


def test_all_equals_three_single_token_runs_and_runs_the_backbone_once(model):
    calls = []
    hook = model.backbone.register_forward_hook(lambda *a: calls.append(1))
    decoder_calls = []
    hook2 = model.sem_seg_head.predictor.register_forward_hook(lambda *a: decoder_calls.append(1))
    try:
        with torch.no_grad():
            every = model(_inputs("all", outputs=("panoptic_seg", "instances", "sem_seg", "sem_seg_probs")))
            assert len(calls) == 1 and len(decoder_calls) == 3  # one backbone pass for the batch, three decodes
            single = {t: model(_inputs(t)) for t in ("panoptic", "instance", "semantic")}
            probs = model(_inputs("semantic", outputs=("sem_seg_probs",)))
    finally:
        hook.remove()
        hook2.remove()
    for i in range(2):
        out = every[i]
        assert set(out) == {"panoptic_seg", "instances", "box_instances", "sem_seg", "sem_seg_probs"}
        _assert_same({"panoptic_seg": out["panoptic_seg"]}, {"panoptic_seg": single["panoptic"][i]["panoptic_seg"]})
        _assert_same({k: out[k] for k in ("instances", "box_instances")},
                     {k: single["instance"][i][k] for k in ("instances", "box_instances")})
        _assert_same({"sem_seg": out["sem_seg"]}, {"sem_seg": single["semantic"][i]["sem_seg"]})
        _assert_same({"sem_seg_probs": out["sem_seg_probs"]}, probs[i])
    # the tokens matter: a panoptic-token run's instances are not the instance token's
    assert not torch.equal(single["panoptic"][0]["sem_seg"], single["semantic"][0]["sem_seg"])


def test_all_follows_the_test_flags_and_mixes_with_single_tasks(model):
    image = _image(64, 64, 3)
    with torch.no_grad():
        default = model([{"image": image, "task": "all"}])[0]  # MODEL.TEST.*_ON (tiny config: all three + boxes)
        mixed = model([{"image": image, "task": "all", "outputs": ["sem_seg"]},
                       {"image": _image(48, 40, 4), "task": "instance", "outputs": ["instances", "embeddings"]}])
        sem = model([{"image": image, "task": "semantic"}])[0]
        inst = model([{"image": _image(48, 40, 4), "task": "instance", "outputs": ["instances", "embeddings"]}])[0]
    assert set(default) == {"panoptic_seg", "instances", "box_instances", "sem_seg"}
    assert torch.equal(default["sem_seg"], sem["sem_seg"])
    # mixed batches: another batch composition than the single runs, so equal up to float noise (as any batch)
    assert set(mixed[0]) == {"sem_seg"} and torch.allclose(mixed[0]["sem_seg"], sem["sem_seg"], atol=1e-5)
    # the single-task input keeps its own token and its extras
    assert set(mixed[1]) == set(inst)
    assert torch.allclose(mixed[1]["query_embeddings"], inst["query_embeddings"], atol=1e-5)
    with pytest.raises(ValueError, match="embeddings.*task 'all'"):
        model([{"image": image, "task": "all", "outputs": ["embeddings", "sem_seg"]}])


def test_task_all_config_value():
    assert normalize_task(" ALL ") == "all" and normalize_task("semantic") == "The task is semantic"
    with pytest.raises(ValueError, match="MODEL.TEST.TASK must be one of"):
        normalize_task("everything")
    cfg = tiny_cfg()
    cfg.MODEL.TEST.TASK = "all"
    assert build_model(cfg).default_task == "all"


# ------------------------------------------------------------------------------------------------------ evaluation


def test_eval_with_task_all_equals_three_single_token_evaluations(tmp_path):
    """train_net's evaluation (Trainer.test, as --eval-only runs it) with the bundled synthetic model on 3 generated
    panoptic val images: MODEL.TEST.TASK all gives the panoptic run's PQ, the instance run's AP and the semantic run's
    mIoU (every number of each group)."""
    from tests.tiny import bundled_synthetic_val

    ts, ckpt, config = bundled_synthetic_val(tmp_path, seed=0)
    cfg = ts.build_cfg(config, ["MODEL.DEVICE", "cpu"], output_dir=str(tmp_path / "out"))
    res = ts.evaluate(cfg, ckpt, str(tmp_path / "out"), tasks=("all", "panoptic", "instance", "semantic"))
    assert set(res["all"]) == {"panoptic_seg", "segm", "sem_seg"}
    assert _same_numbers(res["all"]["panoptic_seg"], res["panoptic"]["panoptic_seg"])
    assert _same_numbers(res["all"]["segm"], res["instance"]["segm"])
    assert _same_numbers(res["all"]["sem_seg"], res["semantic"]["sem_seg"])
    # the protocol matters here: the panoptic token's own AP / mIoU are not the instance / semantic token's
    assert not (_same_numbers(res["panoptic"]["segm"], res["instance"]["segm"])
                and _same_numbers(res["panoptic"]["sem_seg"], res["semantic"]["sem_seg"]))


def _same_numbers(a, b):
    """Equal dicts of floats, NaN equal to NaN (per-class APs of absent classes)."""
    return list(a) == list(b) and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)

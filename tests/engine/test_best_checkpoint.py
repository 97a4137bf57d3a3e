"""TEST.BEST_CHECKPOINT (oneformer/engine/best_checkpoint.py): model_best.pth follows the chosen metric of the
periodic evaluation, early stopping after PATIENCE evaluations without a gain, the state survives --resume; on the
tiny COCO run of tests/test_train_net.py (CPU, 6 iterations, evaluation every 2)."""
import logging

import pytest
import torch

from oneformer import train_net
from oneformer.config import ConfigError
from oneformer.engine.best_checkpoint import BestCheckpointHook, metric_key
from tests.test_train_net import coco_root, prefix, train_cfg  # noqa: F401  (fixtures)


def test_metric_names_per_task_token():
    assert metric_key("", "panoptic") == "panoptic_seg/PQ"
    assert metric_key("", "instance") == "segm/AP"
    assert metric_key("", "semantic") == "sem_seg/mIoU"
    assert metric_key("mIoU", "panoptic") == "sem_seg/mIoU"
    assert metric_key("AP50", "semantic") == "segm/AP50"
    assert metric_key("PQ_th", "panoptic") == "panoptic_seg/PQ_th"
    assert metric_key("my/metric", "panoptic") == "my/metric"
    with pytest.raises(ValueError, match="METRIC 'mIOU' is not a metric of the evaluators"):
        metric_key("mIOU", "semantic")


def _scripted(monkeypatch, values, key=("sem_seg", "mIoU")):
    """Trainer.test returns these metric values, one per evaluation (real evaluation is tested below)."""
    calls = iter(values)

    def test(cls, cfg, model, evaluators=None):
        return {key[0]: {key[1]: next(calls), "other": 1.0}}

    monkeypatch.setattr(train_net.Trainer, "test", classmethod(test))


def _cfg(tmp_path, prefix, **best):
    cfg = train_cfg(tmp_path, prefix, max_iter=8)
    cfg.TEST.EVAL_PERIOD = 2
    cfg.TEST.BEST_CHECKPOINT.ENABLED = True
    for k, v in best.items():
        cfg.TEST.BEST_CHECKPOINT[k] = v
    return cfg


def _train(cfg, caplog):
    cfg.freeze()
    with caplog.at_level(logging.INFO, logger="oneformer"):
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    return trainer


def _best(tmp_path):
    return torch.load(tmp_path / "model_best.pth", map_location="cpu", weights_only=True)


def test_model_best_follows_the_metric(prefix, tmp_path, monkeypatch, caplog):
    # evaluations after iterations 2, 4, 6 and the last (8): the best is the second
    _scripted(monkeypatch, [10.0, 30.0, 20.0, 25.0])
    trainer = _train(_cfg(tmp_path, prefix, METRIC="mIoU"), caplog)
    assert _best(tmp_path)["iteration"] == 3  # iteration index of the 4th step, as the storage counts
    hook = next(h for h in trainer._hooks if isinstance(h, BestCheckpointHook))
    assert (hook.best_metric, hook.evals_without_gain) == (30.0, 2)
    names = [type(h).__name__ for h in trainer._hooks]
    assert names.index("BestCheckpointHook") == names.index("EvalHook") + 1
    assert "model_best.pth: sem_seg/mIoU = 30.0000 (task token: panoptic) at iteration 3" in caplog.text
    assert not hasattr(trainer, "early_stopped_at") and trainer.iter == 8
    # the weights saved are those after iteration 4, not the final ones
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    best = _best(tmp_path)["model"]
    assert any(not torch.equal(best[k], final[k]) for k in final)
    # the hook's state is in the training checkpoints (a resumed run keeps comparing with 30)
    state = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)["trainer"]["hooks"]
    assert state["BestCheckpointHook"]["best_metric"] == 30.0


def test_early_stopping_after_patience(prefix, tmp_path, monkeypatch, caplog):
    _scripted(monkeypatch, [10.0, 5.0, 9.0, 50.0], key=("panoptic_seg", "PQ"))
    trainer = _train(_cfg(tmp_path, prefix, PATIENCE=2), caplog)  # METRIC "": PQ for the panoptic token
    assert trainer.early_stopped_at == 5  # after the evaluation at iteration 6 (the 2nd without a gain)
    assert ("Early stopping after iteration 5: panoptic_seg/PQ (task token panoptic) has not improved for 2 "
            "evaluations (TEST.BEST_CHECKPOINT.PATIENCE 2); best 10.0000 at iteration 1, saved as model_best.pth"
            in caplog.text)
    assert "Exception during training" not in caplog.text
    assert _best(tmp_path)["iteration"] == 1
    # the weights it stopped with are model_final.pth, as at the end of a full run, and a resume starts from them
    assert "the weights it stopped with: model_final.pth (iteration 5)" in caplog.text
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 5
    assert all(torch.equal(final["model"][k], v) for k, v in trainer.model.state_dict().items())
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"


def test_min_mode(prefix, tmp_path, monkeypatch, caplog):
    _scripted(monkeypatch, [3.0, 1.0, 2.0, 4.0], key=("val", "loss"))
    _train(_cfg(tmp_path, prefix, METRIC="val/loss", MODE="min"), caplog)
    assert _best(tmp_path)["iteration"] == 3


def test_real_evaluation_keeps_model_best(prefix, tmp_path, caplog):
    """The real evaluators (semantic task token: mIoU on the tiny COCO val image)."""
    cfg = _cfg(tmp_path, prefix)
    cfg.SOLVER.MAX_ITER = 4
    cfg.MODEL.TEST.TASK = "semantic"
    trainer = _train(cfg, caplog)
    hook = next(h for h in trainer._hooks if isinstance(h, BestCheckpointHook))
    assert hook._val_metric == "sem_seg/mIoU" and hook.best_metric is not None
    history = {it: v for v, it in trainer.storage.history("sem_seg/mIoU").values()}
    assert set(history) == {1, 4}  # after iteration 2, and the final evaluation (storage.iter = MAX_ITER)
    best_iter = max(history, key=lambda it: (history[it], -it))
    assert _best(tmp_path)["iteration"] == best_iter
    assert "keeping model_best.pth by sem_seg/mIoU (max) of the evaluation with the semantic task token" in caplog.text


@pytest.mark.parametrize("change, message", [
    ({"TEST.EVAL_PERIOD": 0}, "needs periodic evaluation: set TEST.EVAL_PERIOD > 0"),
    ({"TEST.BEST_CHECKPOINT.METRIC": "PQQ"}, "METRIC 'PQQ' is not a metric"),
    ({"TEST.BEST_CHECKPOINT.ENABLED": False, "TEST.BEST_CHECKPOINT.PATIENCE": 3}, "PATIENCE needs"),
    ({"TEST.BEST_CHECKPOINT.MODE": "best"}, "MODE must be 'max' or 'min'"),
])
def test_bad_settings_are_named(prefix, tmp_path, change, message):
    cfg = _cfg(tmp_path, prefix)
    cfg.freeze()
    with pytest.raises((ConfigError, ValueError), match=message):
        train_net.Trainer(train_net._with(cfg, **change))

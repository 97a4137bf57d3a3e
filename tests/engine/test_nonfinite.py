"""Non-finite losses or gradients during training (train_net's Trainer, tiny COCO data): the step is skipped and
counted in the metrics, and SOLVER.MAX_CONSECUTIVE_NONFINITE skips in a row stop training with advice."""
import json
import math

import numpy as np
import pytest
import torch
from detectron2.utils.env import seed_all_rng

from oneformer import train_net
from oneformer.data.datasets import register_all
from oneformer.engine import NonFiniteGuardTrainer
from tests.test_train_net import make_tiny_coco, train_cfg  # noqa: F401  (fixture)
from tests.tiny import unregister_prefix

PREFIX = "nonfinite_"


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    root = make_tiny_coco(str(tmp_path_factory.mktemp("datasets")))
    register_all(root, prefix=PREFIX)
    yield PREFIX
    unregister_prefix(PREFIX)


def _trainer(tmp_path, prefix, max_iter, limit=10):
    cfg = train_cfg(tmp_path, prefix, max_iter=max_iter)
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()  # no evaluation
    cfg.SOLVER.MAX_CONSECUTIVE_NONFINITE = limit
    cfg.freeze()
    seed_all_rng(0)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


def _inject(trainer, nan_loss=(), nan_grad=()):
    """Make the model's loss_ce NaN at the iterations in ``nan_loss``, and its gradient NaN (value finite) at those
    in ``nan_grad``."""
    model = trainer._trainer.model
    forward = model.forward

    def poisoned(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter in nan_loss:
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        if trainer.iter in nan_grad:
            term = losses["loss_ce"].clone()
            term.register_hook(lambda g: torch.full_like(g, float("nan")))
            losses["loss_ce"] = term
        return losses

    model.forward = poisoned


def _optimizer_steps(trainer):
    return {float(s["step"]) for s in trainer._trainer.optimizer.state.values()}


def test_nonfinite_steps_are_skipped_and_counted(prefix, tmp_path, caplog):
    trainer = _trainer(tmp_path, prefix, max_iter=4)
    assert isinstance(trainer._trainer, NonFiniteGuardTrainer)
    _inject(trainer, nan_loss={1}, nan_grad={2})
    trainer.train()  # no FloatingPointError: skipped, not fatal
    skipped = [v for v, _ in trainer.storage.history("skipped_nonfinite_steps").values()]
    assert skipped == [0, 1, 2, 2]
    assert _optimizer_steps(trainer) == {2.0}  # iterations 0 and 3 stepped
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and np.isfinite(losses).all()  # only the finite steps are reported
    with open(tmp_path / "metrics.json") as f:
        last = [json.loads(line) for line in f][-1]
    assert last["iteration"] == 3 and last["skipped_nonfinite_steps"] == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("Iteration 1: skipped the optimizer step: non-finite loss terms ['loss_ce']" in m for m in messages)
    assert any("Iteration 2: skipped the optimizer step: non-finite gradients (the loss is finite)" in m
               for m in messages)
    # the count is part of the checkpointed trainer state
    assert trainer._trainer.state_dict()["skipped_nonfinite_steps"] == 2


def test_too_many_consecutive_skips_stop_training_with_advice(prefix, tmp_path):
    trainer = _trainer(tmp_path, prefix, max_iter=10, limit=3)
    _inject(trainer, nan_loss={1, 3, 4, 5, 6})  # 1 alone, then 3 in a row
    with pytest.raises(FloatingPointError) as e:
        trainer.train()
    message = str(e.value)
    assert message.startswith("Training stopped at iteration 5: 3 consecutive optimizer steps were skipped because "
                              "the loss or the gradients were NaN/Inf (last: non-finite loss terms ['loss_ce']).")
    for advice in ("lower SOLVER.BASE_LR", "SOLVER.CLIP_GRADIENTS.ENABLED True", "SOLVER.AMP.ENABLED False",
                   "SOLVER.AMP.PRECISION bfloat16", "tools/validate_dataset.py", "SOLVER.MAX_CONSECUTIVE_NONFINITE"):
        assert advice in message
    assert trainer._trainer.skipped_nonfinite_steps == 4


def test_limit_zero_keeps_detectron2_behaviour(prefix, tmp_path):
    trainer = _trainer(tmp_path, prefix, max_iter=3, limit=0)
    _inject(trainer, nan_loss={1})
    with pytest.raises(FloatingPointError, match="Loss became infinite or NaN at iteration=1"):
        trainer.train()


def test_config_default_is_documented():
    from oneformer.engine import config

    cfg = train_cfg("unused")
    assert cfg.SOLVER.MAX_CONSECUTIVE_NONFINITE == 10 and not math.isnan(cfg.SOLVER.MAX_CONSECUTIVE_NONFINITE)
    assert "SOLVER.MAX_CONSECUTIVE_NONFINITE" in config.__doc__ and "skipped_nonfinite_steps" in config.__doc__


def test_fp16_grad_scaler_skips_are_counted(monkeypatch):
    """With an enabled GradScaler the scaler checks the gradients: its overflow skips are counted in the metric but
    do not count towards the limit (they are its normal calibration); a non-finite loss is skipped by the guard.
    A CPU GradScaler stands in for the CUDA one."""
    from detectron2.utils.events import EventStorage

    from oneformer.engine import NonFiniteGuardAMPTrainer

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            return {"loss": (self.w * x).sum()}

    model = Toy()
    batches = [torch.ones(2), torch.full((2,), 1e38), torch.full((2,), float("nan")), torch.ones(2)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    trainer = NonFiniteGuardAMPTrainer(model, batches, optimizer, grad_scaler=scaler, max_consecutive_nonfinite=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # AMPTrainer insists on CUDA
    with EventStorage(0) as storage:
        trainer.storage = storage
        for it in range(2):  # a finite step, then a finite loss whose scaled gradients overflow
            trainer.iter = it
            trainer.run_step()
            storage.step()
        assert trainer.skipped_nonfinite_steps == 1 and trainer.consecutive_nonfinite_steps == 0
        assert scaler.get_scale() == 2.0**15  # the scaler skipped and backed off
        trainer.iter = 2
        with pytest.raises(FloatingPointError, match="1 consecutive optimizer steps were skipped"):
            trainer.run_step()  # NaN loss: skipped by the guard, and the limit here is 1
    assert trainer.skipped_nonfinite_steps == 2
    assert torch.isfinite(model.w).all()

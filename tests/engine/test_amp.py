"""AMP training through ``torch.amp`` on any device (issue 13, item 5): on CPU no GradScaler warning, autocast on
the model's device, a loss scaler only for float16 on CUDA."""
import warnings

import pytest
import torch
from detectron2.utils.events import EventStorage

from oneformer.engine import NonFiniteGuardAMPTrainer
from oneformer.engine.trainer import amp_grad_scaler


class Toy(torch.nn.Module):
    """A linear layer that records the autocast state it ran under."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.seen = []

    def forward(self, x):
        y = self.lin(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), y.dtype))
        return {"loss": y.float().pow(2).mean()}


@pytest.mark.parametrize("precision", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("guard", [10, 0])
def test_amp_on_cpu_trains_without_warnings(precision, guard):
    model = Toy()
    before = model.lin.weight.detach().clone()
    batches = iter([torch.ones(3, 4)] * 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = NonFiniteGuardAMPTrainer(model, batches, optimizer, max_consecutive_nonfinite=guard)
        trainer.precision = precision  # as train_net.Trainer sets SOLVER.AMP.PRECISION
        with EventStorage(0) as storage:
            trainer.storage = storage
            for it in range(2):
                trainer.iter = it
                trainer.run_step()
                storage.step()
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "GradScaler" in m or "cuda.amp" in m or "CUDA" in m], messages
    assert trainer.device_type == "cpu" and not trainer.grad_scaler.is_enabled()
    assert model.seen == [(True, precision)] * 2  # ran under CPU autocast with the configured dtype
    assert not torch.equal(model.lin.weight, before)  # the optimizer stepped


def test_grad_scaler_only_for_float16_on_cuda():
    assert not amp_grad_scaler("cpu", torch.float16).is_enabled()
    assert not amp_grad_scaler("cpu", torch.bfloat16).is_enabled()
    assert not amp_grad_scaler("cuda", torch.bfloat16).is_enabled()
    if torch.cuda.is_available():
        assert amp_grad_scaler("cuda", torch.float16).is_enabled()


def test_a_given_scaler_is_kept():
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    trainer = NonFiniteGuardAMPTrainer(Toy(), iter([]), torch.optim.SGD(Toy().parameters(), lr=0.1),
                                       grad_scaler=scaler)
    trainer.precision = torch.bfloat16
    assert trainer.grad_scaler is scaler

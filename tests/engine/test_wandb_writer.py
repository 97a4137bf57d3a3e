"""WandbWriter with a stand-in ``wandb`` module (the real package is optional)."""
import sys
import types

import pytest
from detectron2.utils.events import EventStorage

from oneformer.engine import WandbWriter, require_wandb


class _Run:
    def __init__(self, **kwargs):
        self.init_kwargs, self.logged, self.finished = kwargs, [], False

    def log(self, data, step):
        self.logged.append((step, dict(data)))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: _Run(**kwargs)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_logs_each_new_iteration_once(fake_wandb):
    writer = WandbWriter(project="OneFormer", name="run", config={"SOLVER": {"BASE_LR": 1e-4}})
    run = writer._run
    assert run.init_kwargs == {"project": "OneFormer", "name": "run", "config": {"SOLVER": {"BASE_LR": 1e-4}}}
    with EventStorage(0) as storage:
        storage.put_scalar("total_loss", 3.0, smoothing_hint=False)
        storage.put_scalar("lr", 1e-4, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new
        storage.iter = 1
        storage.put_scalar("total_loss", 2.0, smoothing_hint=False)
        writer.write()
    assert run.logged == [(0, {"total_loss": 3.0, "lr": 1e-4}), (1, {"total_loss": 2.0})]
    writer.close()
    assert run.finished


def test_missing_wandb_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    with pytest.raises(ImportError, match="pip install wandb.*WANDB.ENABLED False"):
        require_wandb()

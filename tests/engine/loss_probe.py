"""Test-only training hook (``EXTRA_HOOKS "['tests.engine.loss_probe:build_hook']"``) that records, per process, what
every rank trained on: one JSON line per iteration in ``OUTPUT_DIR/loss_probe_rank{rank}.jsonl`` with this rank's
total loss (``local``, from the model's output) and its mean over all ranks (``reduced``, all-reduced here), and at
the end the world size and a checksum of the weights (``final_param_sum``): with data-parallel training every rank
holds the same weights."""
import json
import os

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["LossProbe", "build_hook", "probe_file"]


def probe_file(output_dir, rank):
    return os.path.join(output_dir, f"loss_probe_rank{rank}.jsonl")


class LossProbe(HookBase):
    def __init__(self, output_dir):
        self.path = probe_file(output_dir, comm.get_rank())
        self.last = None
        self._handle = None

    def before_train(self):
        if os.path.exists(self.path):
            os.remove(self.path)

        def record(module, inputs, output):
            if isinstance(output, dict):
                self.last = float(sum(v.detach().double().sum() for v in output.values()))

        self._handle = self.trainer.model.register_forward_hook(record)

    def _write(self, row):
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def after_step(self):
        reduced = torch.tensor([self.last], dtype=torch.float64)
        if comm.get_world_size() > 1:
            dist.all_reduce(reduced)
        self._write({"iter": self.trainer.iter, "local": self.last, "reduced": reduced.item() / comm.get_world_size()})

    def after_train(self):
        if self._handle is not None:
            self._handle.remove()
        params = sum(float(p.detach().double().sum()) for p in self.trainer.model.parameters())
        self._write({"world_size": comm.get_world_size(), "rank": comm.get_rank(),
                     "local_rank": comm.get_local_rank(), "final_param_sum": params})


def build_hook(trainer):
    return LossProbe(trainer.cfg.OUTPUT_DIR)

"""Test-only training hook that records what the distributed contrastive loss gathers.

Enabled through the documented ``EXTRA_HOOKS`` config key::

    python train_net.py ... EXTRA_HOOKS "['tests.engine.contrastive_probe:build_hook']"

While training runs it wraps ``oneformer.modeling.criterion.all_gather_with_grad`` (the gather the contrastive loss
calls when there are several processes) and appends one JSON line per call to
``OUTPUT_DIR/contrastive_probe_rank{rank}.jsonl``: the iteration, the local batch size, the gathered batch size and
whether this rank's rows sit at ``[rank * B, (rank + 1) * B)`` of the gathered tensor.
"""
import json
import os

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm

import oneformer.modeling.criterion as criterion_module

__all__ = ["ContrastiveGatherProbe", "build_hook", "probe_file"]


def probe_file(output_dir, rank):
    return os.path.join(output_dir, f"contrastive_probe_rank{rank}.jsonl")


class ContrastiveGatherProbe(HookBase):
    def __init__(self, output_dir):
        self.path = probe_file(output_dir, comm.get_rank())
        self.calls = []
        self._original = None

    def before_train(self):
        self._original = criterion_module.all_gather_with_grad

        def recording_gather(tensor):
            out = self._original(tensor)
            rank, b = comm.get_rank(), tensor.shape[0]
            own = out[rank * b:(rank + 1) * b].detach()
            self.calls.append({"local": int(b), "gathered": int(out.shape[0]),
                               "own_rows_in_place": bool(torch.equal(own, tensor.detach()))})
            return out

        criterion_module.all_gather_with_grad = recording_gather

    def after_step(self):
        with open(self.path, "a") as f:
            for call in self.calls:
                f.write(json.dumps(dict(call, iter=self.trainer.iter)) + "\n")
        self.calls.clear()

    def after_train(self):
        if self._original is not None:
            criterion_module.all_gather_with_grad = self._original


def build_hook(trainer):
    return ContrastiveGatherProbe(trainer.cfg.OUTPUT_DIR)

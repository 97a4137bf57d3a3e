"""AsyncEvaluator: process() in a worker thread, in order, bounded, errors surfaced; train_net's evaluation gives the
same numbers with it (TEST.EVALUATOR_QUEUE 2, the default) as without (0)."""
import math
import threading
import time

import pytest
from detectron2.evaluation import DatasetEvaluator

from oneformer.evaluation import AsyncEvaluator


class Recorder(DatasetEvaluator):
    def __init__(self, delay=0.0, fail_at=None):
        self.delay, self.fail_at = delay, fail_at
        self.seen, self.threads = [], set()

    def reset(self):
        self.seen = []

    def process(self, inputs, outputs):
        self.threads.add(threading.current_thread().name)
        if inputs == self.fail_at:
            raise RuntimeError(f"bad batch {inputs}")
        time.sleep(self.delay)
        self.seen.append((inputs, outputs))

    def evaluate(self):
        return {"seen": list(self.seen)}


def test_process_runs_in_order_in_a_worker_and_evaluate_waits():
    inner = Recorder(delay=0.02)
    ev = AsyncEvaluator(inner, max_pending=3)
    ev.reset()
    pending = []
    for i in range(10):
        ev.process(i, -i)
        pending.append(len(ev._pending))
    assert max(pending) <= 3  # bounded: process() waits for the oldest batch when the queue is full
    assert ev.evaluate() == {"seen": [(i, -i) for i in range(10)]}  # every batch, in order
    assert inner.threads and all(t.startswith("oneformer-eval") for t in inner.threads)  # not the caller's thread
    # reusable: a second round after reset
    ev.reset()
    ev.process("a", "b")
    assert ev.evaluate() == {"seen": [("a", "b")]}


def test_worker_errors_are_raised_and_bad_settings_refused():
    ev = AsyncEvaluator(Recorder(fail_at=2), max_pending=1)
    ev.reset()
    ev.process(1, 1)
    ev.process(2, 2)
    with pytest.raises(RuntimeError, match="bad batch 2"):
        ev.process(3, 3)  # the queue holds one batch: the failed one is collected here
    ev = AsyncEvaluator(Recorder(fail_at=5), max_pending=4)
    ev.reset()
    ev.process(5, 5)
    with pytest.raises(RuntimeError, match="bad batch 5"):
        ev.evaluate()
    with pytest.raises(ValueError, match="max_pending >= 1"):
        AsyncEvaluator(Recorder(), max_pending=0)


def test_train_net_evaluation_same_numbers_with_and_without_the_worker(tmp_path):
    from detectron2.evaluation import DatasetEvaluators

    from oneformer.train_net import Trainer
    from tests.tiny import bundled_synthetic_val

    ts, ckpt, config = bundled_synthetic_val(tmp_path, seed=1)
    res = {}
    for queue in (0, 2):
        cfg = ts.build_cfg(config, ["MODEL.DEVICE", "cpu", "TEST.EVALUATOR_QUEUE", str(queue)],
                           output_dir=str(tmp_path / f"out{queue}"))
        built = Trainer.build_evaluator(cfg, "synthetic_panoptic_val", output_folder=str(tmp_path / f"ev{queue}"))
        assert isinstance(built, AsyncEvaluator if queue else DatasetEvaluators)
        res[queue] = ts.evaluate(cfg, ckpt, str(tmp_path / f"out{queue}"), tasks=("all",))["all"]
    assert set(res[2]) == {"panoptic_seg", "segm", "sem_seg"}
    for group in res[0]:
        a, b = res[0][group], res[2][group]
        assert list(a) == list(b) and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)

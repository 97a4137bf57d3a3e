"""Evaluator work off the model's path: a ``DatasetEvaluator``'s ``process`` calls in a worker thread.

Detectron2's ``inference_on_dataset`` calls ``evaluator.process(inputs, outputs)`` after each batch and only then
runs the model on the next one; the evaluators' per-image work (RLE-encoding instance masks, writing panoptic PNGs,
the semantic confusion matrix) therefore adds to the model's time. ``AsyncEvaluator`` hands each call to one worker
thread and returns at once, so that work overlaps the model's next batch (torch releases the GIL in its operators;
so do zlib/PNG encoding and most numpy work). One thread keeps the calls in order (results identical to synchronous
evaluation); at most ``max_pending`` batches wait, so memory stays bounded (``process`` blocks when the queue is full).
An exception in the worker is raised from the next ``process``/``evaluate`` call. TEST.EVALUATOR_QUEUE sets
``max_pending`` for train_net's evaluators (0: synchronous, Detectron2's behaviour).
"""
import collections
from concurrent.futures import ThreadPoolExecutor

from detectron2.evaluation import DatasetEvaluator

__all__ = ["AsyncEvaluator"]


class AsyncEvaluator(DatasetEvaluator):
    """Wraps ``evaluator``: ``process`` runs in a worker thread, at most ``max_pending`` batches behind the caller."""

    def __init__(self, evaluator: DatasetEvaluator, max_pending: int = 2):
        if int(max_pending) < 1:
            raise ValueError(f"AsyncEvaluator needs max_pending >= 1, got {max_pending!r} (0 means: do not wrap)")
        self.evaluator = evaluator
        self.max_pending = int(max_pending)
        self._pending = collections.deque()
        self._executor = None

    def _wait(self, keep: int) -> None:
        # futures finish in order (one worker); result() re-raises the worker's exception here
        while len(self._pending) > keep:
            self._pending.popleft().result()

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def reset(self):
        try:
            self._wait(0)
        finally:
            self._pending.clear()
        self.evaluator.reset()

    def process(self, inputs, outputs):
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="oneformer-eval")
        self._wait(self.max_pending - 1)
        self._pending.append(self._executor.submit(self.evaluator.process, inputs, outputs))

    def evaluate(self):
        try:
            self._wait(0)
        finally:
            self._pending.clear()
            self._shutdown()
        return self.evaluator.evaluate()

"""Detectron2's Cityscapes evaluators, adapted to OneFormer's label space and to numpy 2.

- ``CityscapesInstanceEvaluator``: Detectron2's names a predicted class ``thing_classes[pred_class]``. A OneFormer
  model trained on Cityscapes panoptic predicts train ids 0..18 (all classes), which index ``stuff_classes`` (19
  names); the ``cityscapes_fine_instance_seg_*`` metadata lists only the 8 thing names in ``thing_classes``. The
  subclass looks the names up in the class list of the model's label space (``stuff_classes`` by default, as the
  original).
- Both evaluators run cityscapesscripts' evaluation, whose 2.3.0 release (the newest) was written for numpy 1: it calls
  ``np.in1d``, removed in numpy 2.4 (fixed upstream by mcordts/cityscapesScripts pull request 196, not released), and
  writes ``np.count_nonzero`` results with ``json`` (a Python int in numpy 1, a numpy integer that ``json`` cannot
  write in numpy 2). While they evaluate, the two cityscapesscripts evaluation modules see a numpy with numpy 1's
  ``in1d`` and ``count_nonzero``; numpy itself and every other module are left alone.
"""
import contextlib
import importlib
import types

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.evaluation import CityscapesInstanceEvaluator as _D2CityscapesInstanceEvaluator
from detectron2.evaluation import CityscapesSemSegEvaluator as _D2CityscapesSemSegEvaluator

__all__ = ["CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator", "cityscapesscripts_numpy"]

_CITYSCAPES_EVAL_MODULES = (
    "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
    "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling",
)


def _in1d(ar1, ar2, assume_unique=False, invert=False):
    # numpy's own definition of in1d since 2.0: isin on the flattened first argument
    return np.isin(ar1, ar2, assume_unique=assume_unique, invert=invert).ravel()


def _count_nonzero(a, axis=None, *, keepdims=False):
    count = np.count_nonzero(a, axis=axis, keepdims=keepdims)
    # numpy 1 returned a Python int for a whole-array count
    return int(count) if axis is None and not keepdims else count


class _Numpy1Functions(types.ModuleType):
    """numpy, with ``in1d`` (removed in numpy 2.4) and ``count_nonzero`` as in numpy 1."""

    in1d = staticmethod(_in1d)
    count_nonzero = staticmethod(_count_nonzero)

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def cityscapesscripts_numpy():
    """Within the block, cityscapesscripts' evaluation modules call numpy 1's ``in1d`` and ``count_nonzero``."""
    modules = [importlib.import_module(name) for name in _CITYSCAPES_EVAL_MODULES]
    saved = [module.np for module in modules]
    for module in modules:
        module.np = _Numpy1Functions("numpy")
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            module.np = original


class CityscapesSemSegEvaluator(_D2CityscapesSemSegEvaluator):
    """Detectron2's evaluator, run with :func:`cityscapesscripts_numpy`."""

    def evaluate(self):
        with cityscapesscripts_numpy():
            return super().evaluate()


class CityscapesInstanceEvaluator(_D2CityscapesInstanceEvaluator):
    """Detectron2's evaluator with ``class_names[pred_class]`` (default: the dataset's ``stuff_classes``), run with
    :func:`cityscapesscripts_numpy`."""

    def __init__(self, dataset_name, class_names=None):
        super().__init__(dataset_name)
        fields = self._metadata.as_dict()
        if class_names is None:
            class_names = fields.get("stuff_classes", fields.get("thing_classes"))
        fields["thing_classes"] = list(class_names)
        self._metadata = Metadata(**fields)

    def evaluate(self):
        with cityscapesscripts_numpy():
            return super().evaluate()

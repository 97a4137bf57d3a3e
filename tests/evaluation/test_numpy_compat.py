"""The evaluators' numpy-2 adaptations (oneformer/evaluation/sem_seg_loading.py, cityscapes_evaluation.py).

The end-to-end checks are tests/evaluation/test_evaluators.py: on numpy 2 its SemSegEvaluator tests fail with
Detectron2's default ground-truth loader ("Unable to avoid copy while creating an array as requested") and its
Cityscapes tests fail in cityscapesscripts 2.3.0 on numpy 2 (``np.in1d`` is gone since 2.4; ``np.count_nonzero`` gives
numpy integers that its ``json`` output cannot write); these are the units they rely on.
"""
import importlib

import numpy as np
from PIL import Image

from oneformer.evaluation import load_sem_seg_labels
from oneformer.evaluation.cityscapes_evaluation import cityscapesscripts_numpy


def test_sem_seg_labels_are_a_writable_copy(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "gt.png"
    Image.fromarray(labels).save(path)
    gt = load_sem_seg_labels(str(path), dtype=int)
    assert gt.dtype == np.dtype(int) and gt.flags.writeable
    np.testing.assert_array_equal(gt, labels)
    gt[gt == 5] = 255  # what SemSegEvaluator does with the ignore label
    assert load_sem_seg_labels(str(path))[1, 1] == 5 and load_sem_seg_labels(str(path)).dtype == np.uint8


def test_cityscapesscripts_sees_numpy1_functions_only_inside_the_block():
    names = ("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
             "cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling")
    modules = [importlib.import_module(n) for n in names]
    a, b = np.array([[1, 2, 3], [4, 5, 6]]), [2, 5, 7]
    with cityscapesscripts_numpy():
        for module in modules:
            assert module.np is not np
            found = module.np.in1d(a, b)
            np.testing.assert_array_equal(found, [False, True, False, False, True, False])
            np.testing.assert_array_equal(module.np.in1d(a, b, invert=True).reshape(a.shape), ~np.isin(a, b))
            count = module.np.count_nonzero(a > 2)
            assert type(count) is int and count == 4
            np.testing.assert_array_equal(module.np.count_nonzero(a > 2, axis=0), [1, 1, 2])
            assert module.np.zeros is np.zeros and module.np.uint8 is np.uint8
    assert all(module.np is np for module in modules)

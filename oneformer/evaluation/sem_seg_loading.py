"""Ground-truth loading for Detectron2's ``SemSegEvaluator`` that works on numpy 1.x and 2.x.

The evaluator reads each ground-truth PNG with its ``sem_seg_loading_fn`` (default: Detectron2's
``load_image_into_numpy_array``). Detectron2 releases up to v0.6 and the 2024 republish call ``np.array`` there with
``copy=False``, which numpy 2 refuses ("ValueError: Unable to avoid copy while creating an array
as requested") because a PIL image always has to be copied; detectron2 fixed it on its main branch in pull request 5312.
The project passes this loader instead (``build_oneformer_evaluator``).
"""
import numpy as np
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["load_sem_seg_labels"]


def load_sem_seg_labels(filename, dtype=None):
    """The label map of a semantic ground-truth image as a new, writable (H, W) array of ``dtype``.

    Always a copy: the evaluator writes the ignore label's pixels into it.
    """
    with PathManager.open(filename, "rb") as f:
        return np.array(Image.open(f), dtype=dtype)

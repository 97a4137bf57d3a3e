"""Evaluation for OneFormer: evaluator selection by ``evaluator_type`` and the few adapters Detectron2 lacks.

- ``build_oneformer_evaluator(cfg, dataset_name, output_folder=None, tasks=None)``: see ``build.py``.
- ``InstanceSegEvaluator``: COCO mask AP when thing ids are not 0..T-1 (ADE20K panoptic, 150-class ids).
- ``CityscapesInstanceEvaluator``: class names from the model's 19-class space; with ``CityscapesSemSegEvaluator``,
  cityscapesscripts' evaluation on numpy 2.
- ``load_sem_seg_labels``: SemSegEvaluator's ground-truth loader on numpy 2.
- ``FastCOCOEvaluator`` / ``fast_cocoeval``: Detectron2's COCOEvaluator / a COCOeval computing AP with hotcoco
  (numbers identical to pycocotools'; pycocotools is the fallback), see ``fast_coco_eval.py``.
- ``AsyncEvaluator``: an evaluator's ``process`` in a worker thread, overlapping the model (TEST.EVALUATOR_QUEUE).
- ``DetectionCOCOEvaluator``: box AP of the "box_instances" output (MODEL.TEST.DETECTION_ON).

Everything else is Detectron2's (SemSegEvaluator, COCOPanopticEvaluator, DatasetEvaluators, inference_on_dataset).
"""
from .async_evaluator import AsyncEvaluator
from .build import EVALUATOR_TASKS, EVALUATOR_TYPES, build_oneformer_evaluator
from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .detection_evaluation import DetectionCOCOEvaluator
from .fast_coco_eval import FAST_COCOEVAL, FastCOCOEvaluator, fast_cocoeval
from .instance_evaluation import InstanceSegEvaluator
from .sem_seg_loading import load_sem_seg_labels

__all__ = [
    "AsyncEvaluator",
    "build_oneformer_evaluator",
    "EVALUATOR_TASKS",
    "EVALUATOR_TYPES",
    "InstanceSegEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "load_sem_seg_labels",
    "DetectionCOCOEvaluator",
    "FastCOCOEvaluator",
    "fast_cocoeval",
    "FAST_COCOEVAL",
]

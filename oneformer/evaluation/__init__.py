"""Evaluation for OneFormer: evaluator selection by ``evaluator_type`` and the few adapters Detectron2 lacks.

- ``build_oneformer_evaluator(cfg, dataset_name, output_folder=None, tasks=None)``: see ``build.py``.
- ``InstanceSegEvaluator``: COCO mask AP when thing ids are not 0..T-1 (ADE20K panoptic, 150-class ids).
- ``CityscapesInstanceEvaluator``: class names from the model's 19-class space.
- ``DetectionCOCOEvaluator``: box AP of the "box_instances" output (MODEL.TEST.DETECTION_ON).

Everything else is Detectron2's (SemSegEvaluator, COCOPanopticEvaluator, COCOEvaluator(tasks=("segm",)),
CityscapesSemSegEvaluator, DatasetEvaluators, inference_on_dataset).
"""
from .build import EVALUATOR_TASKS, EVALUATOR_TYPES, build_oneformer_evaluator
from .cityscapes_evaluation import CityscapesInstanceEvaluator
from .detection_evaluation import DetectionCOCOEvaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = [
    "build_oneformer_evaluator",
    "EVALUATOR_TASKS",
    "EVALUATOR_TYPES",
    "InstanceSegEvaluator",
    "CityscapesInstanceEvaluator",
    "DetectionCOCOEvaluator",
]

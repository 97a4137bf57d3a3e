"""Box AP of the boxes OneFormer derives from its masks (MODEL.TEST.DETECTION_ON).

With DETECTION_ON the model adds a "box_instances" output (boxes from the predicted masks) next to "instances".
Subclassed only to feed that output to Detectron2's ``COCOEvaluator`` (as ``FastCOCOEvaluator``) restricted to "bbox".
"""
from .fast_coco_eval import FastCOCOEvaluator

__all__ = ["DetectionCOCOEvaluator"]


class DetectionCOCOEvaluator(FastCOCOEvaluator):
    """``FastCOCOEvaluator(tasks=("bbox",))`` reading ``output["box_instances"]``."""

    def __init__(self, dataset_name, distributed=True, output_dir=None, **kwargs):
        super().__init__(dataset_name, tasks=("bbox",), distributed=distributed, output_dir=output_dir, **kwargs)

    def process(self, inputs, outputs):
        super().process(inputs, [{"instances": o["box_instances"]} if "box_instances" in o else {} for o in outputs])

"""Cityscapes instance evaluation for models that predict in the 19 train-id class space.

Detectron2's ``CityscapesInstanceEvaluator`` names a predicted class ``thing_classes[pred_class]``. A OneFormer model
trained on Cityscapes panoptic predicts train ids 0..18 (all classes), which index ``stuff_classes`` (19 names); the
``cityscapes_fine_instance_seg_*`` metadata lists only the 8 thing names in ``thing_classes``. Subclassed only to
look the names up in the class list of the model's label space (``stuff_classes`` by default, as the original).
"""
from detectron2.data.catalog import Metadata
from detectron2.evaluation import CityscapesInstanceEvaluator as _D2CityscapesInstanceEvaluator

__all__ = ["CityscapesInstanceEvaluator"]


class CityscapesInstanceEvaluator(_D2CityscapesInstanceEvaluator):
    """Detectron2's evaluator with ``class_names[pred_class]`` (default: the dataset's ``stuff_classes``)."""

    def __init__(self, dataset_name, class_names=None):
        super().__init__(dataset_name)
        fields = self._metadata.as_dict()
        if class_names is None:
            class_names = fields.get("stuff_classes", fields.get("thing_classes"))
        fields["thing_classes"] = list(class_names)
        self._metadata = Metadata(**fields)

"""COCO-API instance evaluation for datasets whose thing classes are not the contiguous ids 0..T-1.

ADE20K panoptic metadata maps the 100 thing categories to their ids in the 150-class space (7, 8, 10, ...), which is
what the model predicts; Detectron2's ``COCOEvaluator`` asserts that thing ids are exactly 0..T-1. Subclassed only to
lift that restriction: before Detectron2 maps predicted ids back to dataset ids, the predictions are re-indexed to
0..T-1 (in increasing contiguous-id order) and the evaluator sees matching metadata. Predictions of classes that are
not things (possible when MODEL.TEST.PANOPTIC_ON is off) cannot match a thing ground truth and are dropped.
"""
from detectron2.data.catalog import Metadata

from .fast_coco_eval import FastCOCOEvaluator

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(FastCOCOEvaluator):
    """``FastCOCOEvaluator`` (mask AP only by default) accepting non-contiguous thing ids."""

    def __init__(self, dataset_name, tasks=("segm",), distributed=True, output_dir=None, **kwargs):
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir, **kwargs)
        meta = self._metadata
        mapping = meta.thing_dataset_id_to_contiguous_id
        # contiguous id -> compact index 0..T-1, and the compact view Detectron2's code will use
        self._compact = {c: i for i, c in enumerate(sorted(set(mapping.values())))}
        fields = meta.as_dict()
        fields["thing_dataset_id_to_contiguous_id"] = {d: self._compact[c] for d, c in mapping.items()}
        if "thing_classes" in fields and len(fields["thing_classes"]) != len(self._compact):
            fields.pop("thing_classes")  # per-class AP needs one name per evaluated class
        self._metadata = Metadata(**fields)

    def _eval_predictions(self, predictions, img_ids=None):
        dropped = 0
        for p in predictions:
            kept = []
            for r in p.get("instances", []):
                if r["category_id"] in self._compact:
                    r["category_id"] = self._compact[r["category_id"]]
                    kept.append(r)
                else:
                    dropped += 1
            p["instances"] = kept
        if dropped:
            self._logger.info("InstanceSegEvaluator: dropped %d predictions of non-thing classes", dropped)
        super()._eval_predictions(predictions, img_ids=img_ids)

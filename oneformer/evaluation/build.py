"""Evaluator selection by the dataset's ``evaluator_type`` (spec §8 "Evaluator selection").

=============================  =====================================================================================
evaluator_type                 evaluators (each only when the model produces that output: MODEL.TEST.*_ON)
=============================  =====================================================================================
sem_seg                        SemSegEvaluator
coco                           FastCOCOEvaluator(tasks=("segm",)) (predicted boxes are zeros) [+ DetectionCOCOEvaluator]
ade20k_panoptic_seg            SemSegEvaluator + COCOPanopticEvaluator + InstanceSegEvaluator (150-space thing ids)
coco_panoptic_seg              COCOPanopticEvaluator + FastCOCOEvaluator("segm", metadata json_file = panoptic2instances
                               json) + SemSegEvaluator [+ DetectionCOCOEvaluator]
mapillary_vistas_panoptic_seg  COCOPanopticEvaluator + SemSegEvaluator
cityscapes_panoptic_seg        COCOPanopticEvaluator + CityscapesSemSegEvaluator + CityscapesInstanceEvaluator
cityscapes_instance            CityscapesInstanceEvaluator
cityscapes_sem_seg             CityscapesSemSegEvaluator
=============================  =====================================================================================

FastCOCOEvaluator is Detectron2's COCOEvaluator computing AP with hotcoco (identical numbers, see fast_coco_eval.py).
SemSegEvaluator reads its ground truth with ``load_sem_seg_labels`` and the Cityscapes evaluators are the project's
subclasses, so that both run on numpy 2 (see those modules).

Semantic evaluators need SEMANTIC_ON, panoptic PANOPTIC_ON, instance INSTANCE_ON, detection DETECTION_ON (without
the output an evaluator would fail on the first image). ``tasks`` restricts the selection further (the semantic TTA
run uses ``tasks=("semantic",)``). The COCO-json evaluators (FastCOCOEvaluator, InstanceSegEvaluator,
DetectionCOCOEvaluator) of panoptic datasets need instance annotations (metadata ``json_file``); a panoptic dataset
without them (``register_panoptic_dataset`` without ``instance_json``) is evaluated without them, with one logged
line that names the fix. A dataset evaluated with a task token (MODEL.TEST.TASK) whose metric it has no annotations
for, e.g. a semantic-only dataset in DATASETS.TEST_PANOPTIC (mIoU only, no PQ or AP), gets one logged line saying so.
The Cityscapes evaluators need cityscapesscripts and a single machine.
"""
import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .cityscapes_evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from .detection_evaluation import DetectionCOCOEvaluator
from .fast_coco_eval import FastCOCOEvaluator
from .instance_evaluation import InstanceSegEvaluator
from .sem_seg_loading import load_sem_seg_labels

__all__ = ["build_oneformer_evaluator", "EVALUATOR_TASKS", "EVALUATOR_TYPES", "NO_INSTANCE_JSON_FIX"]

logger = logging.getLogger(__name__)

# what to do about a panoptic dataset without instance annotations (also quoted by tools/validate_dataset.py)
NO_INSTANCE_JSON_FIX = (
    "pass instance_json= to register_panoptic_dataset (a COCO instances json, e.g. written by "
    "datasets/panoptic2detection_coco_format.py --things-only) to evaluate AP, or set MODEL.TEST.INSTANCE_ON False"
)

EVALUATOR_TASKS = ("semantic", "instance", "panoptic", "detection")
EVALUATOR_TYPES = (
    "sem_seg",
    "coco",
    "ade20k_panoptic_seg",
    "coco_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
    "cityscapes_panoptic_seg",
    "cityscapes_instance",
    "cityscapes_sem_seg",
)


def _cityscapes_class_names(cfg, meta):
    # predictions index the model's label space: the 19 train ids (stuff_classes) for a panoptic-trained model
    stuff = meta.get("stuff_classes", None)
    if stuff is not None and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(stuff):
        return stuff
    return meta.get("thing_classes", stuff)


# what an evaluation of each task reports, and where a dataset goes to be evaluated with its own task token
_METRICS = {"panoptic": "PQ", "instance": "AP", "semantic": "mIoU"}
_TEST_KEYS = {"panoptic": "TEST_PANOPTIC", "instance": "TEST_INSTANCE", "semantic": "TEST_SEMANTIC"}


def _say_what_the_task_token_lacks(cfg, dataset_name, etype, offered, enabled_tasks):
    """One warning when the evaluation's task token (MODEL.TEST.TASK) asks for a metric the dataset has no annotations
    for (e.g. a semantic-only dataset in DATASETS.TEST_PANOPTIC: mIoU only), naming what is missing and why."""
    token = str(cfg.MODEL.TEST.TASK).strip().lower()
    token = token[len("the task is "):].strip() if token.startswith("the task is ") else token
    missing = [t for t in _METRICS if t in enabled_tasks and t not in offered]
    if token not in missing:
        return
    given = [_METRICS[t] for t in _METRICS if t in enabled_tasks and t in offered]
    own = next((t for t in _METRICS if t in offered), None)
    where = f"; list it under DATASETS.{_TEST_KEYS[own]} to evaluate it with its own task token" if own else ""
    logger.warning("Dataset %s (evaluator_type %s) has no %s annotations: evaluated with the %s task token it gives %s "
                   "only (no %s)%s.", dataset_name, etype, " or ".join(missing), token,
                   ", ".join(given) or "no metric", ", no ".join(_METRICS[t] for t in missing), where)


def build_oneformer_evaluator(cfg, dataset_name, output_folder=None, tasks=None):
    """The evaluator(s) for ``dataset_name`` (a ``DatasetEvaluators`` when several apply).

    Args:
        cfg: config (MODEL.TEST.*_ON, MODEL.SEM_SEG_HEAD.NUM_CLASSES, OUTPUT_DIR).
        dataset_name: a registered dataset with ``evaluator_type`` metadata.
        output_folder: where evaluators dump predictions; default ``OUTPUT_DIR/inference``.
        tasks: subset of ("semantic", "instance", "panoptic", "detection") to evaluate; default all.

    Raises NotImplementedError for an unknown evaluator_type and ValueError when nothing is left to evaluate.
    """
    meta = MetadataCatalog.get(dataset_name)
    etype = meta.get("evaluator_type", None)
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    wanted = set(EVALUATOR_TASKS if tasks is None else tasks)
    unknown = wanted - set(EVALUATOR_TASKS)
    if unknown:
        raise ValueError(f"unknown evaluation tasks {sorted(unknown)}; expected a subset of {EVALUATOR_TASKS}")
    test = cfg.MODEL.TEST
    enabled = {
        "semantic": test.SEMANTIC_ON,
        "instance": test.INSTANCE_ON,
        "panoptic": test.PANOPTIC_ON,
        "detection": test.DETECTION_ON,
    }
    evaluators = []
    skipped = []
    offered = set()  # the tasks this dataset's annotations can evaluate

    def add(task, factory, needs_json=False):
        offered.add(task)
        if task in wanted and enabled[task]:
            if needs_json and meta.get("json_file", None) is None:
                skipped.append(task)  # COCOEvaluator would fail deep in iopath on json_file=None
            else:
                evaluators.append(factory())

    semseg = lambda: SemSegEvaluator(  # noqa: E731
        dataset_name, distributed=True, output_dir=output_folder, sem_seg_loading_fn=load_sem_seg_labels
    )
    panoptic = lambda: COCOPanopticEvaluator(dataset_name, output_folder)  # noqa: E731
    coco_segm = lambda: FastCOCOEvaluator(dataset_name, tasks=("segm",), output_dir=output_folder)  # noqa: E731
    coco_bbox = lambda: DetectionCOCOEvaluator(  # noqa: E731
        dataset_name, output_dir=os.path.join(output_folder, "detection")
    )
    cs_semseg = lambda: CityscapesSemSegEvaluator(dataset_name)  # noqa: E731
    cs_instance = lambda: CityscapesInstanceEvaluator(  # noqa: E731
        dataset_name, class_names=_cityscapes_class_names(cfg, meta)
    )

    if etype == "sem_seg":
        add("semantic", semseg)
    elif etype == "coco":
        add("instance", coco_segm)
        add("detection", coco_bbox)
    elif etype == "ade20k_panoptic_seg":
        add("semantic", semseg)
        add("panoptic", panoptic)
        add("instance", lambda: InstanceSegEvaluator(dataset_name, output_dir=output_folder), needs_json=True)
    elif etype == "coco_panoptic_seg":
        add("panoptic", panoptic)
        add("instance", coco_segm, needs_json=True)
        add("semantic", semseg)
        add("detection", coco_bbox, needs_json=True)
    elif etype == "mapillary_vistas_panoptic_seg":
        add("panoptic", panoptic)
        add("semantic", semseg)
    elif etype == "cityscapes_panoptic_seg":
        add("panoptic", panoptic)
        add("semantic", cs_semseg)
        add("instance", cs_instance)
    elif etype == "cityscapes_instance":
        add("instance", cs_instance)
    elif etype == "cityscapes_sem_seg":
        add("semantic", cs_semseg)
    else:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} with evaluator_type {etype!r}; known types: {EVALUATOR_TYPES}"
        )
    if skipped:
        logger.warning("Dataset %s has no instance annotations (metadata json_file is None): %s evaluation skipped; "
                       "%s.", dataset_name, " and ".join(skipped), NO_INSTANCE_JSON_FIX)
    _say_what_the_task_token_lacks(cfg, dataset_name, etype, offered, [t for t in wanted if enabled[t]])
    if not evaluators:
        raise ValueError(
            f"nothing to evaluate on {dataset_name!r} (evaluator_type {etype!r}) with tasks {sorted(wanted)} and "
            f"MODEL.TEST SEMANTIC_ON={test.SEMANTIC_ON} INSTANCE_ON={test.INSTANCE_ON} "
            f"PANOPTIC_ON={test.PANOPTIC_ON} DETECTION_ON={test.DETECTION_ON}"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)

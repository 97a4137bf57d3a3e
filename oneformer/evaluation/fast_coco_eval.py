"""COCO AP/AR through a fast, exact COCOeval (hotcoco), with pycocotools as the fallback.

Why hotcoco: of the three maintained fast implementations (faster-coco-eval 1.8.0, hotcoco 1.3.0,
ultrafast-pycocotools 0.1.14; all three install as wheels for Python 3.10-3.13 with numpy 1.26 and 2.x), hotcoco and
ultrafast-pycocotools reproduced pycocotools bit for bit on the synthetic COCO-scale set of ``synthetic_coco.py``
(all 12 stats and the whole precision/recall arrays, segm and bbox, crowd regions, polygons, score ties, more than
100 detections per image); faster-coco-eval differed in the last bit (2.2e-16 in precision) and was several times
slower than the other two. hotcoco and ultrafast-pycocotools ran equally fast (about 30x pycocotools on 5000 images,
tools/benchmark_coco_eval.py, README "Evaluation speed"); hotcoco was taken for being one abi3 wheel that serves
every Python >= 3.10 (Linux x86-64/aarch64, macOS, Windows) with numpy>=1.22 as its only dependency, a 1.x release,
and for also computing PQ. Detectron2's own fast path (``COCOeval_opt``) needs ``detectron2._C``, which the PyPI
republish does not load, so without this Detectron2 uses pycocotools' Python loops.

``fast_cocoeval(coco_gt, coco_dt, iou_type)`` takes what Detectron2's ``_evaluate_predictions_on_coco`` has (pycocotools
``COCO`` objects: the ground truth and its ``loadRes`` of the results) and returns an evaluator with pycocotools'
interface (``params``, ``evaluate``, ``accumulate``, ``summarize``, ``stats``, ``eval["precision"]``). The ground
truth is converted once per pycocotools object (cached); the results are passed as ``loadRes`` left them (ids,
areas and boxes already filled in, so both libraries see the same areas). Keypoints, and any Python without hotcoco,
use pycocotools. ``FastCOCOEvaluator`` is Detectron2's ``COCOEvaluator`` evaluating through it.
"""
import contextlib
import logging
import threading
import weakref

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation
from pycocotools.cocoeval import COCOeval

__all__ = ["FAST_COCOEVAL", "FastCOCOEvaluator", "fast_cocoeval"]

logger = logging.getLogger(__name__)

try:
    import hotcoco
except ImportError:  # optional on exotic platforms: pycocotools gives the same numbers, slower
    hotcoco = None

# which COCOeval ``fast_cocoeval`` uses for segm/bbox (named in the evaluators' log)
FAST_COCOEVAL = f"hotcoco {hotcoco.__version__}" if hotcoco is not None else "pycocotools (hotcoco not installed)"

_converted_gt = weakref.WeakKeyDictionary()  # pycocotools COCO -> (its dataset dict, id map, hotcoco COCO)
_lock = threading.Lock()


def _image_id_map(images):
    """None when every image id is a non-negative int (all hotcoco takes), else original id -> its rank.

    Ranks keep pycocotools' order (it sorts the ids; detections of equal score are then taken in image order), so
    the numbers stay identical for string ids (ADE20K and Cityscapes file names, via Detectron2's COCO conversion).
    """
    ids = [img["id"] for img in images]
    if all(type(i) is int and i >= 0 for i in ids):
        return None
    return {i: k for k, i in enumerate(sorted(ids))}


def _str_counts(ann):
    # hotcoco reads annotations as JSON values: compressed RLE counts must be str (pycocotools also takes bytes)
    seg = ann.get("segmentation")
    if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
        ann = dict(ann, segmentation=dict(seg, counts=seg["counts"].decode("ascii")))
    return ann


def _hotcoco_dataset(dataset, annotations, id_map):
    images = dataset.get("images", [])
    anns = [_str_counts(a) for a in annotations]
    if id_map is not None:
        images = [dict(img, id=id_map[img["id"]]) for img in images]
        anns = [dict(a, image_id=id_map[a["image_id"]]) for a in anns]
    return hotcoco.COCO({"images": images, "categories": dataset.get("categories", []), "annotations": anns})


def _hotcoco_gt(coco_gt):
    with _lock:
        cached = _converted_gt.get(coco_gt)
        if cached is None or cached[0] is not coco_gt.dataset:
            dataset = coco_gt.dataset
            id_map = _image_id_map(dataset.get("images", []))
            cached = (dataset, id_map, _hotcoco_dataset(dataset, dataset.get("annotations", []), id_map))
            _converted_gt[coco_gt] = cached
        return cached[1], cached[2]


class _ParamsView:
    """hotcoco's live ``Params`` with ``imgIds`` read and written in the dataset's own image ids."""

    def __init__(self, params, id_map):
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_id_map", id_map)

    def __getattr__(self, name):
        value = getattr(self._params, name)
        if name == "imgIds":
            inverse = {k: i for i, k in self._id_map.items()}
            value = [inverse[k] for k in value]
        return value

    def __setattr__(self, name, value):
        if name == "imgIds":
            unknown = [i for i in value if i not in self._id_map]
            if unknown:
                raise KeyError(f"image ids not in the ground truth: {unknown[:5]}")
            value = [self._id_map[i] for i in value]
        setattr(self._params, name, value)


class _MappedImageIdsEval:
    """hotcoco's ``COCOeval`` of a dataset whose image ids it cannot take, addressed by the original ids."""

    def __init__(self, evaluator, id_map):
        self._evaluator = evaluator
        self._id_map = id_map

    @property
    def params(self):
        return _ParamsView(self._evaluator.params, self._id_map)

    def __getattr__(self, name):  # evaluate, accumulate, summarize, stats, eval, ...
        return getattr(self._evaluator, name)


def fast_cocoeval(coco_gt, coco_dt, iou_type):
    """A COCOeval for ``iou_type`` ("segm", "bbox" or "keypoints") of pycocotools ``COCO`` objects.

    Args:
        coco_gt: ground truth (pycocotools ``COCO``).
        coco_dt: ``coco_gt.loadRes(results)`` (pycocotools ``COCO``).
        iou_type: "segm", "bbox" or "keypoints".

    Returns hotcoco's ``COCOeval`` for segm/bbox when hotcoco is installed (numbers identical to pycocotools'),
    else pycocotools' ``COCOeval``; both with ``params``, ``evaluate()``, ``accumulate()``, ``summarize()``,
    ``stats`` (12,) and ``eval["precision"]`` (T, R, K, A, M). Image ids that are not non-negative ints (hotcoco's
    requirement) are mapped to their rank and back in ``params.imgIds``.
    """
    if hotcoco is None or iou_type not in ("segm", "bbox"):
        return COCOeval(coco_gt, coco_dt, iou_type)
    id_map, gt = _hotcoco_gt(coco_gt)
    dt = _hotcoco_dataset(coco_gt.dataset, coco_dt.dataset["annotations"], id_map)
    evaluator = hotcoco.COCOeval(gt, dt, iou_type)
    return evaluator if id_map is None else _MappedImageIdsEval(evaluator, id_map)


_patch_lock = threading.Lock()


@contextlib.contextmanager
def _detectron2_fast_impl(cocoeval_fn):
    # Detectron2's COCOEvaluator takes its "fast implementation" from the module global COCOeval_opt (its C++
    # COCOeval when detectron2._C is built); point that slot at ours for the duration of one evaluation.
    with _patch_lock:
        saved = d2_coco_evaluation.COCOeval_opt
        d2_coco_evaluation.COCOeval_opt = cocoeval_fn
        try:
            yield
        finally:
            d2_coco_evaluation.COCOeval_opt = saved


class FastCOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` computing AP with ``fast_cocoeval`` (same numbers, see the module docstring).

    ``use_fast_impl=False`` keeps pycocotools' COCOeval; a custom ``max_dets_per_image`` other than 100 goes
    through Detectron2's ``COCOevalMaxDets`` (a pycocotools subclass), as in Detectron2.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, *, use_fast_impl=True, **kwargs):
        # Detectron2 would log "Fast COCO eval is not built" and turn its flag off without detectron2._C;
        # the choice is made here instead
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
                         use_fast_impl=False, **kwargs)
        self._fast_cocoeval = bool(use_fast_impl)

    def _eval_predictions(self, predictions, img_ids=None):
        if not self._fast_cocoeval:
            return super()._eval_predictions(predictions, img_ids=img_ids)
        self._logger.info("COCO AP computed with %s", FAST_COCOEVAL)
        self._use_fast_impl = True
        try:
            with _detectron2_fast_impl(fast_cocoeval):
                return super()._eval_predictions(predictions, img_ids=img_ids)
        finally:
            self._use_fast_impl = False

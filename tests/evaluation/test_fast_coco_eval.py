"""The fast COCOeval (hotcoco) against pycocotools on a COCO-scale synthetic set: every number must be identical.

"Identical" is exact float64 equality (np.array_equal), not a tolerance: the whole precision and recall arrays and
the 12 AP/AR stats, for segm and bbox. One exception, pycocotools' own: its stats are ``np.mean`` over the precision
array, and numpy 1.26 sums in another order than numpy 2 (the same precision array gave APm 0.17048562977236015 on
1.26 and ...012 on 2.5, hotcoco's value); with numpy < 2 the stats are compared to 1e-15 (the arrays still exactly).
The set (oneformer.evaluation.synthetic_coco, built once per test session in memory) has 2000 images, 64x64 or 48x80
with Poisson(4) objects each, and every 200th image 160x160 with 100 objects and 110 false positives (large areas,
the maxDets cut), crowd regions as uncompressed RLE, polygons, empty images, score ties and a category without ground
truth.
"""
import contextlib
import copy
import io
import json

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as d2_coco_evaluation
from pycocotools.cocoeval import COCOeval

from oneformer.evaluation import (
    FAST_COCOEVAL,
    FastCOCOEvaluator,
    InstanceSegEvaluator,
    fast_cocoeval,
)
from oneformer.evaluation import fast_coco_eval as fce
from oneformer.evaluation.detection_evaluation import DetectionCOCOEvaluator
from oneformer.evaluation.synthetic_coco import coco_from_dict, make_synthetic_coco


@pytest.fixture(scope="session")
def synthetic_set():
    gt, results = make_synthetic_coco(2000, sizes=((64, 64), (48, 80)), large_every=200, large_size=(160, 160))
    return gt, results


# pycocotools' stats under numpy 1.26 differ from numpy 2's in the last bit (module docstring)
STATS_ATOL = 0.0 if int(np.__version__.split(".")[0]) >= 2 else 1e-15


def _assert_stats_equal(fast, ref):
    if STATS_ATOL == 0.0:
        np.testing.assert_array_equal(np.asarray(fast, dtype=np.float64), np.asarray(ref, dtype=np.float64))
    else:
        np.testing.assert_allclose(np.asarray(fast, dtype=np.float64), np.asarray(ref, dtype=np.float64), rtol=0,
                                   atol=STATS_ATOL)


def _evaluate(fn, coco_gt, coco_dt, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = fn(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_the_synthetic_set_covers_the_hard_cases(synthetic_set):
    gt, results = synthetic_set
    anns = gt["annotations"]
    per_image = np.bincount([a["image_id"] for a in anns], minlength=len(gt["images"]) + 1)[1:]
    dets = np.bincount([r["image_id"] for r in results], minlength=len(gt["images"]) + 1)[1:]
    assert len(gt["images"]) == 2000 and per_image.max() == 100 and (per_image == 0).sum() > 50
    assert dets.max() > 100  # the maxDets=100 cut applies
    assert sum(a["iscrowd"] for a in anns) > 100 and all(
        isinstance(a["segmentation"]["counts"], list) for a in anns if a["iscrowd"])
    assert sum(isinstance(a["segmentation"], list) for a in anns) > 100  # polygons
    areas = np.array([a["area"] for a in anns])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    scores = [r["score"] for r in results]
    assert len(set(scores)) < len(scores)  # ties
    assert max(a["category_id"] for a in anns) < len(gt["categories"])  # a category with detections only


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_fast_cocoeval_numbers_identical_to_pycocotools(synthetic_set, iou_type):
    assert FAST_COCOEVAL.startswith("hotcoco"), FAST_COCOEVAL  # a declared dependency: the fast path must be taken
    gt, results = synthetic_set
    results = copy.deepcopy(results)
    if iou_type == "segm":
        for r in results:
            r.pop("bbox")  # as Detectron2's _evaluate_predictions_on_coco: mask AP uses mask areas
    coco_gt = coco_from_dict(copy.deepcopy(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    ref = _evaluate(COCOeval, coco_gt, coco_dt, iou_type)
    fast = _evaluate(fast_cocoeval, coco_gt, coco_dt, iou_type)
    assert not isinstance(fast, COCOeval)
    assert ref.stats.shape == (12,) and 0.05 < ref.stats[0] < 0.9  # a meaningful AP, not all -1 or 0
    _assert_stats_equal(fast.stats, ref.stats)
    for key in ("precision", "recall"):
        assert np.array_equal(np.asarray(fast.eval[key]), ref.eval[key]), key


def _register_json(name, gt, tmp_path):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(gt))
    cats = sorted(c["id"] for c in gt["categories"])
    MetadataCatalog.get(name).set(json_file=str(path), evaluator_type="coco",
                                  thing_classes=[f"class{c}" for c in cats],
                                  thing_dataset_id_to_contiguous_id={c: i for i, c in enumerate(cats)})


def _predictions(gt, results):
    """Detectron2's COCOEvaluator per-image predictions (contiguous category ids) of COCO results."""
    by_image = {img["id"]: [] for img in gt["images"]}
    for r in results:
        by_image[r["image_id"]].append(dict(r, category_id=r["category_id"] - 1))
    return [{"image_id": i, "instances": v} for i, v in by_image.items()]


def test_coco_evaluator_path_identical_and_uses_the_fast_cocoeval(synthetic_set, unique_prefix, tmp_path,
                                                                  monkeypatch):
    gt, results = synthetic_set
    gt = dict(gt, images=gt["images"][:400])  # a slice keeps the two pycocotools runs short
    ids = {img["id"] for img in gt["images"]}
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
    results = [r for r in results if r["image_id"] in ids]
    name = unique_prefix + "synthetic_coco"
    _register_json(name, gt, tmp_path)
    calls = []
    monkeypatch.setattr(fce, "fast_cocoeval", lambda *a: calls.append(a[2]) or fast_cocoeval(*a))
    out = {}
    for label, ev in (("pycocotools", COCOEvaluator(name, tasks=("segm", "bbox"), output_dir=str(tmp_path / "a"))),
                      ("fast", FastCOCOEvaluator(name, tasks=("segm", "bbox"), output_dir=str(tmp_path / "b")))):
        ev.reset()
        ev._predictions = _predictions(gt, copy.deepcopy(results))
        with contextlib.redirect_stdout(io.StringIO()):
            out[label] = ev.evaluate()
    assert calls == ["bbox", "segm"]  # Detectron2's loop, both through the fast COCOeval
    assert d2_coco_evaluation.COCOeval_opt is not fce.fast_cocoeval  # the slot is restored
    assert set(out["fast"]) == {"segm", "bbox"} and len(out["fast"]["segm"]) > 6  # per-category APs included
    for task in ("segm", "bbox"):  # every metric, per-category APs included (nan for the class without ground truth)
        fast, ref = out["fast"][task], out["pycocotools"][task]
        assert list(fast) == list(ref) and np.isnan(ref["AP-class20"]) and np.isnan(fast["AP-class20"])
        ok = [k for k in ref if not np.isnan(ref[k])]
        # Detectron2 reports percent: stats * 100 (per-category APs are computed by Detectron2 from the arrays)
        _assert_stats_equal([fast[k] / 100 for k in ok], [ref[k] / 100 for k in ok])


def test_evaluators_and_fallbacks(synthetic_set, unique_prefix, tmp_path, monkeypatch):
    assert issubclass(InstanceSegEvaluator, FastCOCOEvaluator) and issubclass(DetectionCOCOEvaluator,
                                                                              FastCOCOEvaluator)
    gt, _ = synthetic_set
    coco_gt = coco_from_dict(copy.deepcopy(dict(gt, images=gt["images"][:5])))
    coco_dt = coco_gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 4.0, 4.0], "score": 0.5}])
    assert isinstance(fast_cocoeval(coco_gt, coco_dt, "keypoints"), COCOeval)  # keypoints: pycocotools
    monkeypatch.setattr(fce, "hotcoco", None)  # a platform without hotcoco: pycocotools
    assert isinstance(fast_cocoeval(coco_gt, coco_dt, "bbox"), COCOeval)
    monkeypatch.undo()
    name = unique_prefix + "synthetic_small"
    _register_json(name, dict(gt, images=gt["images"][:5]), tmp_path)
    calls = []
    monkeypatch.setattr(fce, "fast_cocoeval", lambda *a: calls.append(a[2]) or fast_cocoeval(*a))
    ev = FastCOCOEvaluator(name, tasks=("bbox",), output_dir=str(tmp_path), use_fast_impl=False)
    ev.reset()
    ev._predictions = [{"image_id": 1, "instances": [
        {"image_id": 1, "category_id": 0, "bbox": [0.0, 0.0, 4.0, 4.0], "score": 0.5}]}]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    assert calls == []  # use_fast_impl=False keeps pycocotools


def test_string_image_ids_identical_to_pycocotools(synthetic_set):
    """Detectron2's COCO conversion of ADE20K/Cityscapes keeps file-name image ids; hotcoco takes ints only."""
    gt, results = synthetic_set
    name = {img["id"]: f"ADE_val_{img['id']}" for img in gt["images"][:400]}  # "ADE_val_10" < "ADE_val_2"
    gt = {"categories": gt["categories"], "images": [dict(img, id=name[img["id"]]) for img in gt["images"][:400]],
          "annotations": [dict(a, image_id=name[a["image_id"]]) for a in gt["annotations"] if a["image_id"] in name]}
    results = [dict(r, image_id=name[r["image_id"]]) for r in results if r["image_id"] in name]
    for r in results:
        r.pop("bbox")
    coco_gt = coco_from_dict(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    subset = sorted(name.values())[::3]
    for img_ids in (None, subset):
        evs = []
        for fn in (COCOeval, fast_cocoeval):
            with contextlib.redirect_stdout(io.StringIO()):
                ev = fn(coco_gt, coco_dt, "segm")
                if img_ids is not None:
                    ev.params.imgIds = img_ids
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            evs.append(ev)
        ref, fast = evs
        assert sorted(fast.params.imgIds) == sorted(ref.params.imgIds)
        _assert_stats_equal(fast.stats, ref.stats)
        assert np.array_equal(np.asarray(fast.eval["precision"]), ref.eval["precision"])
    with pytest.raises(KeyError, match="not in the ground truth"):
        fast_cocoeval(coco_gt, coco_dt, "segm").params.imgIds = ["nope"]

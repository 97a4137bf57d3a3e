"""Evaluator selection by evaluator_type, run on tiny datasets in the real on-disk formats with the ground truth as
the prediction: every metric must be perfect (PQ = mIoU = AP = 100).

Predictions are built like the model's outputs: "sem_seg" one-hot scores (K, H, W) from the semantic PNG,
"panoptic_seg" (ids, segments_info with contiguous category ids) from the panoptic PNG and the record's
segments_info (crowd segments left out), "instances" from the ground-truth masks with score 1 and zero boxes, labels in
the model's label space.
"""
import json
import logging
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.evaluation import CityscapesInstanceEvaluator as D2CityscapesInstanceEvaluator
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    inference_on_dataset,
)
from detectron2.structures import Boxes, Instances
from PIL import Image

from oneformer import add_oneformer_config_all
from oneformer.data.datasets import register_all
from oneformer.data.datasets.custom import register_or_replace
from oneformer.data.datasets.register_mapillary_vistas_panoptic import MAPILLARY_VISTAS_CATEGORIES
from oneformer.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    DetectionCOCOEvaluator,
    FastCOCOEvaluator,
    InstanceSegEvaluator,
    build_oneformer_evaluator,
)
from tests.data.datasets import fake_data as fd


# ------------------------------------------------------------------------------------------------------ helpers


def _cfg(tmp_path, num_classes, **test_on):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    for key in ("SEMANTIC_ON", "INSTANCE_ON", "PANOPTIC_ON"):
        cfg.MODEL.TEST[key] = test_on.get(key.lower(), True)
    cfg.MODEL.TEST.DETECTION_ON = test_on.get("detection_on", False)
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    return cfg


def _instances(masks, classes, hw):
    inst = Instances(hw)
    masks = np.asarray(masks, dtype=bool).reshape(-1, *hw)
    inst.pred_masks = torch.from_numpy(masks)
    inst.pred_classes = torch.as_tensor(classes, dtype=torch.int64)
    inst.scores = torch.ones(len(classes))
    inst.pred_boxes = Boxes(torch.zeros(len(classes), 4))
    return inst


def gt_prediction(record, num_classes, instance_label=lambda contiguous_id: contiguous_id):
    """Model-style outputs equal to the ground truth of a panoptic record."""
    ids = fd.rgb2id(np.array(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    hw = ids.shape
    out = {}
    if "sem_seg_file_name" in record:
        sem = np.array(Image.open(record["sem_seg_file_name"])).astype(np.int64)
        sem[sem >= num_classes] = 0  # ignored pixels: any class
        out["sem_seg"] = torch.nn.functional.one_hot(torch.from_numpy(sem), num_classes).permute(2, 0, 1).float()
    segments = [s for s in record["segments_info"] if not s.get("iscrowd", 0) and (ids == s["id"]).any()]
    pan = np.zeros(hw, dtype=np.int32)
    infos = []
    for k, s in enumerate(segments, 1):
        pan[ids == s["id"]] = k
        infos.append({"id": k, "category_id": s["category_id"], "isthing": bool(s["isthing"])})
    out["panoptic_seg"] = (torch.from_numpy(pan), infos)
    things = [s for s in segments if s["isthing"]]
    out["instances"] = _instances([ids == s["id"] for s in things],
                                  [instance_label(s["category_id"]) for s in things], hw)
    return out


def gt_instances_prediction(record):
    """"instances" equal to the annotations of a COCO-instances record (labels = its contiguous ids)."""
    hw = (record["height"], record["width"])
    gt = annotations_to_instances(record["annotations"], hw, mask_format="bitmask")
    return {"instances": _instances(gt.gt_masks.tensor.numpy(), gt.gt_classes.tolist(), hw)}


def run(evaluator, name, make_prediction):
    """Detectron2's inference_on_dataset with a 'model' answering each record with ``make_prediction(record)``."""
    records = DatasetCatalog.get(name)
    by_file = {r["file_name"]: make_prediction(r) for r in records}
    return inference_on_dataset(lambda inputs: [by_file[x["file_name"]] for x in inputs],
                                [[r] for r in records], evaluator)


def evaluate(cfg, name, make_prediction, tasks=None):
    """The evaluator selected for ``name`` and its results on the ground-truth predictions."""
    evaluator = build_oneformer_evaluator(cfg, name, tasks=tasks)
    return evaluator, run(evaluator, name, make_prediction)


def _types(evaluator):
    evs = evaluator._evaluators if isinstance(evaluator, DatasetEvaluators) else [evaluator]
    return [type(e) for e in evs]


def _close(value, expected=100.0):
    return value == pytest.approx(expected, abs=0.01)


@pytest.fixture
def registered(datasets_root, unique_prefix):
    """Every OneFormer dataset registered under a prefix, with files under a fresh $DETECTRON2_DATASETS."""
    register_all(datasets_root, prefix=unique_prefix)
    return unique_prefix


# ------------------------------------------------------------------------------------------------------ COCO


def test_coco_panoptic_pq_miou_ap_100(datasets_root, registered, tmp_path):
    fd.make_coco(datasets_root)
    name = registered + "coco_2017_val_panoptic_with_sem_seg"
    cfg = _cfg(tmp_path, 133)
    evaluator, res = evaluate(cfg, name, lambda r: gt_prediction(r, 133))
    assert _types(evaluator) == [COCOPanopticEvaluator, FastCOCOEvaluator, SemSegEvaluator]
    assert _close(res["panoptic_seg"]["PQ"]) and _close(res["panoptic_seg"]["PQ_th"])
    assert _close(res["panoptic_seg"]["PQ_st"])
    assert _close(res["sem_seg"]["mIoU"])
    assert _close(res["segm"]["AP"])
    assert "bbox" not in res  # masks only: the model's boxes are zeros


def test_coco_instance_only_dataset_ap_100(datasets_root, registered, tmp_path):
    fd.make_coco(datasets_root)
    name = registered + "coco_2017_val_panoptic2instance"
    evaluator, res = evaluate(_cfg(tmp_path, 133), name, gt_instances_prediction)
    assert _types(evaluator) == [FastCOCOEvaluator]
    assert set(res) == {"segm"} and _close(res["segm"]["AP"])


def test_selection_follows_the_test_flags_and_tasks(datasets_root, registered, tmp_path):
    fd.make_coco(datasets_root)
    name = registered + "coco_2017_val_panoptic_with_sem_seg"
    assert _types(build_oneformer_evaluator(_cfg(tmp_path, 133, instance_on=False), name)) == [
        COCOPanopticEvaluator, SemSegEvaluator]
    assert _types(build_oneformer_evaluator(_cfg(tmp_path, 133), name, tasks=("semantic",))) == [SemSegEvaluator]
    assert DetectionCOCOEvaluator in _types(build_oneformer_evaluator(_cfg(tmp_path, 133, detection_on=True), name))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        build_oneformer_evaluator(_cfg(tmp_path, 133, instance_on=False), name, tasks=("instance",))
    MetadataCatalog.get(registered + "odd").set(evaluator_type="lvis")
    with pytest.raises(NotImplementedError, match="lvis"):
        build_oneformer_evaluator(_cfg(tmp_path, 133), registered + "odd")


@pytest.mark.parametrize("evaluator_type, panoptic_types", [
    ("coco_panoptic_seg", [COCOPanopticEvaluator, SemSegEvaluator]),
    ("ade20k_panoptic_seg", [SemSegEvaluator, COCOPanopticEvaluator]),
])
def test_panoptic_dataset_without_instance_json_skips_instance_evaluation(tmp_path, unique_prefix, caplog,
                                                                          evaluator_type, panoptic_types):
    """The README's register_panoptic_dataset call (no instance_json): COCOEvaluator would get json_file=None."""
    from oneformer.data.datasets import register_panoptic_dataset

    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "noinst"
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"], sem_seg_root=files["sem_seg_root"],
                              evaluator_type=evaluator_type)
    with caplog.at_level("WARNING", logger="oneformer.evaluation"):
        evaluator, res = evaluate(_cfg(tmp_path, 4, detection_on=True), name, lambda r: gt_prediction(r, 4))
    assert _types(evaluator) == panoptic_types
    assert set(res) == {"panoptic_seg", "sem_seg"} and _close(res["panoptic_seg"]["PQ"])
    lines = [r.getMessage() for r in caplog.records if "no instance annotations" in r.getMessage()]
    detection = " and detection" if evaluator_type == "coco_panoptic_seg" else ""
    assert len(lines) == 1 and f"instance{detection} evaluation skipped" in lines[0], lines
    assert "instance_json=" in lines[0] and "MODEL.TEST.INSTANCE_ON False" in lines[0]
    caplog.clear()
    cfg = _cfg(tmp_path, 4, instance_on=False)
    assert _types(build_oneformer_evaluator(cfg, name)) == panoptic_types
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nothing skipped: nothing to say


# ------------------------------------------------------------------------------------------------------ ADE20K


def test_ade20k_panoptic_with_non_contiguous_thing_ids(ade_prepared, registered, tmp_path):
    name = registered + "ade20k_panoptic_val"
    cfg = _cfg(tmp_path, 150)
    # panoptic task: instance labels stay in the 150-class space (bed 7, window 8)
    evaluator, res = evaluate(cfg, name, lambda r: gt_prediction(r, 150))
    assert _types(evaluator) == [SemSegEvaluator, COCOPanopticEvaluator, InstanceSegEvaluator]
    assert _close(res["panoptic_seg"]["PQ"]) and _close(res["sem_seg"]["mIoU"]) and _close(res["segm"]["AP"])
    # why the subclass: Detectron2's COCOEvaluator insists on thing ids 0..T-1
    plain = COCOEvaluator(name, tasks=("segm",), output_dir=str(tmp_path / "plain"))
    with pytest.raises(AssertionError):
        run(plain, name, lambda r: gt_prediction(r, 150))


def test_ade20k_instance_dataset_in_the_100_thing_space(ade_prepared, registered, tmp_path):
    name = registered + "ade20k_instance_val"
    evaluator, res = evaluate(_cfg(tmp_path, 150), name, gt_instances_prediction)
    assert _types(evaluator) == [FastCOCOEvaluator]
    assert _close(res["segm"]["AP"])


# ------------------------------------------------------------------------------------------------------ Cityscapes


CS_H, CS_W = 24, 32  # cityscapesscripts ignores instances under 100 pixels


def make_cityscapes_val(root):
    """cityscapes/ val split in the layout of ``fake_data.make_cityscapes`` (road, a car, a crowd of persons), large
    enough for cityscapesscripts, plus the files it evaluates against: *_gtFine_labelIds.png and
    *_gtFine_instanceIds.png (16-bit, car = 26001, the crowd has no instance id)."""
    from cityscapesscripts.helpers.labels import labels

    cs = os.path.join(root, "cityscapes")
    base, city = "frankfurt_000000_000294", "frankfurt"
    h, w = CS_H, CS_W
    fd.write_image(os.path.join(cs, "leftImg8bit", "val", city, base + "_leftImg8bit.png"), h=h, w=w)
    regions = [(7, (0, h // 2, 0, w)), (26001, (h // 2, h, 0, w // 2)), (24, (h // 2, h, w // 2, w))]
    ids = fd.paint(regions, h=h, w=w)
    fd.write_panoptic_png(os.path.join(cs, "gtFine", "cityscapes_panoptic_val", base + "_gtFine_panoptic.png"), ids)
    cats = [{"id": lab.id, "name": lab.name, "color": list(lab.color), "supercategory": lab.category,
             "isthing": int(lab.hasInstances)} for lab in labels if 0 <= lab.trainId < 255]
    fd.write_json(os.path.join(cs, "gtFine", "cityscapes_panoptic_val.json"), {
        "images": [{"id": base, "file_name": base + "_leftImg8bit.png", "width": w, "height": h}],
        "annotations": [{"image_id": base, "file_name": base + "_gtFine_panoptic.png",
                         "segments_info": fd.segments_of(ids, {7: 7, 26001: 26, 24: 24}, crowd=(24,))}],
        "categories": cats,
    })
    gt = os.path.join(cs, "gtFine", "val", city)
    train_ids = np.full((h, w), 0, dtype=np.uint8)  # road
    train_ids[h // 2:, : w // 2], train_ids[h // 2:, w // 2:] = 13, 11  # car, person
    fd.write_label(os.path.join(gt, base + "_gtFine_labelTrainIds.png"), train_ids)
    label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
    fd.write_label(os.path.join(gt, base + "_gtFine_labelIds.png"), label_ids)
    Image.fromarray(ids.astype(np.uint16)).save(os.path.join(gt, base + "_gtFine_instanceIds.png"))
    return root


@pytest.fixture
def cityscapes(datasets_root, registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # cityscapesscripts' instance evaluation writes matches.json into the working dir
    return make_cityscapes_val(datasets_root)


def test_cityscapes_panoptic_pq_iou_ap_100(cityscapes, registered, tmp_path):
    name = registered + "cityscapes_fine_panoptic_val"
    evaluator, res = evaluate(_cfg(tmp_path, 19), name, lambda r: gt_prediction(r, 19))
    assert _types(evaluator) == [COCOPanopticEvaluator, CityscapesSemSegEvaluator, CityscapesInstanceEvaluator]
    assert _close(res["panoptic_seg"]["PQ"])
    assert _close(res["sem_seg"]["IoU"])
    assert _close(res["segm"]["AP"]) and _close(res["segm"]["AP50"])


def test_cityscapes_instance_and_sem_seg_types(cityscapes, registered, tmp_path):
    """Detectron2's own cityscapes_fine_{instance,sem_seg} metadata: 8 thing names, 19 stuff names."""
    from detectron2.data.datasets.builtin_meta import _get_builtin_metadata

    pan = registered + "cityscapes_fine_panoptic_val"
    gt_dir = MetadataCatalog.get(pan).gt_dir
    meta = _get_builtin_metadata("cityscapes")
    assert len(meta["thing_classes"]) == 8 and len(meta["stuff_classes"]) == 19
    for kind in ("instance", "sem_seg"):
        register_or_replace(registered + f"cs_{kind}", lambda: DatasetCatalog.get(pan),
                            dict(meta, gt_dir=gt_dir, evaluator_type=f"cityscapes_{kind}", ignore_label=255))
    cfg = _cfg(tmp_path, 19)
    # a model trained on the 19 classes predicts car as train id 13 (thing_classes has only 8 names)
    instances_only = lambda r: {"instances": gt_prediction(r, 19)["instances"]}  # noqa: E731
    evaluator, res = evaluate(cfg, registered + "cs_instance", instances_only)
    assert _types(evaluator) == [CityscapesInstanceEvaluator]
    assert _close(res["segm"]["AP"])
    with pytest.raises(IndexError):  # why the subclass: Detectron2's looks the name up in the 8 thing classes
        run(D2CityscapesInstanceEvaluator(registered + "cs_instance"), registered + "cs_instance", instances_only)
    evaluator, res = evaluate(cfg, registered + "cs_sem_seg", lambda r: {"sem_seg": gt_prediction(r, 19)["sem_seg"]})
    assert _types(evaluator) == [CityscapesSemSegEvaluator]
    assert _close(res["sem_seg"]["IoU"])


# ------------------------------------------------------------------------------------------------------ Mapillary


def test_mapillary_panoptic_and_sem_seg(datasets_root, registered, tmp_path):
    fd.make_mapillary(datasets_root)
    path = os.path.join(datasets_root, "mapillary_vistas/validation/panoptic/panoptic_2018.json")
    with open(path) as f:
        data = json.load(f)
    data["categories"] = MAPILLARY_VISTAS_CATEGORIES  # the real json lists them; the loader does not need them
    with open(path, "w") as f:
        json.dump(data, f)
    cfg = _cfg(tmp_path, 65)
    evaluator, res = evaluate(cfg, registered + "mapillary_vistas_panoptic_val", lambda r: gt_prediction(r, 65))
    assert _types(evaluator) == [COCOPanopticEvaluator, SemSegEvaluator]
    assert _close(res["panoptic_seg"]["PQ"]) and _close(res["sem_seg"]["mIoU"])

    name = registered + "mapillary_vistas_sem_seg_val"

    def semantic(record):
        sem = np.array(Image.open(record["sem_seg_file_name"])).astype(np.int64)
        sem[sem >= 65] = 0
        return {"sem_seg": torch.nn.functional.one_hot(torch.from_numpy(sem), 65).permute(2, 0, 1).float()}

    evaluator, res = evaluate(cfg, name, semantic)
    assert _types(evaluator) == [SemSegEvaluator]
    assert _close(res["sem_seg"]["mIoU"])


@pytest.mark.parametrize("task, expected", [
    ("panoptic", ("has no panoptic or instance annotations: evaluated with the panoptic task token it gives mIoU only "
                  "(no PQ, no AP); list it under DATASETS.TEST_SEMANTIC")),
    ("instance", ("has no panoptic or instance annotations: evaluated with the instance task token it gives mIoU only "
                  "(no PQ, no AP); list it under DATASETS.TEST_SEMANTIC")),
    ("semantic", None),
])
def test_semantic_only_dataset_says_why_pq_and_ap_are_absent(tmp_path, unique_prefix, caplog, task, expected):
    """A semantic-only dataset evaluated with the panoptic (or instance) task token, e.g. placed in
    DATASETS.TEST_PANOPTIC: one line naming it and what it lacks, instead of a silent mIoU-only result."""
    from oneformer.data.datasets import register_semantic_dataset

    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "semonly"
    register_semantic_dataset(name, image_root=files["image_root"], sem_seg_root=files["sem_seg_root"],
                              stuff_classes=["a", "b", "c", "d"], image_ext="png")
    cfg = _cfg(tmp_path, 4)
    cfg.MODEL.TEST.TASK = task
    with caplog.at_level("INFO", logger="oneformer.evaluation"):
        assert _types(build_oneformer_evaluator(cfg, name)) == [SemSegEvaluator]
    lines = [r.getMessage() for r in caplog.records if name in r.getMessage()]
    if expected is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0] == f"Dataset {name} (evaluator_type sem_seg) {expected} to evaluate it " \
                                               "with its own task token.", lines

"""Every registered dataset loads tiny real-format data with the fields the mappers read; clear loader errors."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.structures import BoxMode

import oneformer.data.datasets as D
from tests.data.datasets import fake_data as fd
from tests.tiny import load_script

COCO_INDEX = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
PANOPTIC_FIELDS = {"file_name", "image_id", "pan_seg_file_name", "sem_seg_file_name", "segments_info"}


def _check_panoptic_records(records, n=1):
    assert len(records) == n
    for rec in records:
        assert PANOPTIC_FIELDS <= set(rec)
        for key in ("file_name", "pan_seg_file_name", "sem_seg_file_name"):
            assert os.path.isfile(rec[key]), rec[key]
        pan = fd.rgb2id(np.asarray(Image.open(rec["pan_seg_file_name"])))
        assert {s["id"] for s in rec["segments_info"]} == set(np.unique(pan).tolist()) - {0}
        for seg in rec["segments_info"]:
            assert isinstance(seg["isthing"], bool)


def _segments(rec):
    return {s["id"]: (s["category_id"], s["isthing"]) for s in rec["segments_info"]}


# --------------------------------------------------------------------------------------------------------------- COCO


def test_coco_panoptic_with_sem_seg_and_instances(datasets_root, unique_prefix):
    fd.make_coco(datasets_root)
    D.register_all_coco_panoptic_annos_sem_seg(prefix=unique_prefix)  # root read from $DETECTRON2_DATASETS now
    for split in ("train", "val"):
        records = DatasetCatalog.get(f"{unique_prefix}coco_2017_{split}_panoptic_with_sem_seg")
        _check_panoptic_records(records)
        rec = records[0]
        assert rec["image_id"] == (139 if split == "train" else 285)
        assert rec["file_name"].endswith(f"{split}2017/{rec['image_id']:012d}.jpg")
        assert rec["sem_seg_file_name"].endswith(f"panoptic_semseg_{split}2017/{rec['image_id']:012d}.png")
        assert _segments(rec) == {1001: (COCO_INDEX[187], False), 2002: (0, True), 3003: (COCO_INDEX[18], True)}
        assert (rec["height"], rec["width"]) == (fd.H, fd.W)
        anns = rec["annotations"]
        assert sorted(a["category_id"] for a in anns) == [0, COCO_INDEX[18]]
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS and "segmentation" in a and len(a["bbox"]) == 4 for a in anns)
    p2i = DatasetCatalog.get(f"{unique_prefix}coco_2017_val_panoptic2instance")
    assert len(p2i) == 1 and sorted(a["category_id"] for a in p2i[0]["annotations"]) == [0, COCO_INDEX[18]]
    assert MetadataCatalog.get(f"{unique_prefix}coco_2017_val_panoptic2instance").evaluator_type == "coco"


def test_coco_missing_val_instances_json_names_the_script(datasets_root, unique_prefix):
    fd.make_coco(datasets_root)
    os.remove(os.path.join(datasets_root, "coco/annotations/panoptic2instances_val2017.json"))
    D.register_all_coco_panoptic_annos_sem_seg(prefix=unique_prefix)
    with pytest.raises(FileNotFoundError, match="panoptic2instances_val2017.json.*panoptic2detection_coco_format"):
        DatasetCatalog.get(f"{unique_prefix}coco_2017_val_panoptic_with_sem_seg")
    with pytest.raises(FileNotFoundError, match="panoptic2instances_val2017.json"):
        DatasetCatalog.get(f"{unique_prefix}coco_2017_val_panoptic2instance")


# ---------------------------------------------------------------------------------------------------------------- ADE


def test_ade20k_panoptic_and_instance(ade_prepared, unique_prefix):
    D.register_all_ade20k_panoptic(ade_prepared, prefix=unique_prefix)
    D.register_all_ade20k_instance(ade_prepared, prefix=unique_prefix)
    for split, dirname in (("train", "training"), ("val", "validation")):
        records = DatasetCatalog.get(f"{unique_prefix}ade20k_panoptic_{split}")
        _check_panoptic_records(records)
        rec = records[0]
        assert rec["image_id"] == f"ADE_{split}_00000001"
        assert rec["file_name"].endswith(f"images/{dirname}/ADE_{split}_00000001.jpg")
        assert rec["sem_seg_file_name"].endswith(f"annotations_detectron2/{dirname}/ADE_{split}_00000001.png")
        assert sorted(_segments(rec).values()) == [(0, False), (7, True), (8, True)]  # wall, bed, window
        inst = DatasetCatalog.get(f"{unique_prefix}ade20k_instance_{split}")
        assert len(inst) == 1
        assert sorted(a["category_id"] for a in inst[0]["annotations"]) == [0, 1]  # bed, window in 0..99
        assert inst[0]["file_name"].endswith(f"images/{dirname}/ADE_{split}_00000001.jpg")


def test_ade20k_instance_json_with_other_names_loads(ade_prepared, unique_prefix):
    path = os.path.join(ade_prepared, "ADEChallengeData2016/ade20k_instance_val.json")
    with open(path) as f:
        data = json.load(f)
    for c in data["categories"]:
        if c["id"] == 8:
            c["name"] = "windowpane"  # the instance challenge's wording
    with open(path, "w") as f:
        json.dump(data, f)
    D.register_all_ade20k_instance(ade_prepared, prefix=unique_prefix)
    inst = DatasetCatalog.get(f"{unique_prefix}ade20k_instance_val")
    assert sorted(a["category_id"] for a in inst[0]["annotations"]) == [0, 1]
    assert MetadataCatalog.get(f"{unique_prefix}ade20k_instance_val").thing_classes[1] == "window "


def test_ade20k_loader_errors(ade_prepared, unique_prefix):
    D.register_all_ade20k_panoptic(ade_prepared, prefix=unique_prefix)
    ade = os.path.join(ade_prepared, "ADEChallengeData2016")
    # unknown category id
    path = os.path.join(ade, "ade20k_panoptic_val.json")
    with open(path) as f:
        data = json.load(f)
    data["annotations"][0]["segments_info"][0]["category_id"] = 977
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=r"ade20k_panoptic_val\.json.*ADE_val_00000001\.png.*category id 977"):
        DatasetCatalog.get(f"{unique_prefix}ade20k_panoptic_val")
    # image referenced but missing
    os.remove(os.path.join(ade, "images/training/ADE_train_00000001.jpg"))
    with pytest.raises(FileNotFoundError, match=r"ADE_train_00000001\.jpg.*does not exist"):
        DatasetCatalog.get(f"{unique_prefix}ade20k_panoptic_train")
    # missing json
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"ade20k_panoptic_val\.json does not exist.*prepare_ade20k_pan_seg"):
        DatasetCatalog.get(f"{unique_prefix}ade20k_panoptic_val")
    os.remove(os.path.join(ade, "ade20k_instance_val.json"))
    D.register_all_ade20k_instance(ade_prepared, prefix=unique_prefix)
    with pytest.raises(FileNotFoundError, match=r"ade20k_instance_val\.json does not exist.*prepare_ade20k_ins_seg"):
        DatasetCatalog.get(f"{unique_prefix}ade20k_instance_val")


# --------------------------------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_panoptic(datasets_root, unique_prefix):
    bases = fd.make_cityscapes(datasets_root)
    D.register_all_cityscapes_panoptic(prefix=unique_prefix)
    for split in ("train", "val"):
        records = DatasetCatalog.get(f"{unique_prefix}cityscapes_fine_panoptic_{split}")
        _check_panoptic_records(records)
        rec = records[0]
        assert rec["image_id"] == bases[split]
        assert rec["sem_seg_file_name"].endswith(f"gtFine/{split}/{bases[split].split('_')[0]}/"
                                                 f"{bases[split]}_gtFine_labelTrainIds.png")
        assert _segments(rec) == {7: (0, False), 26001: (13, True), 24: (11, True)}
        assert [s["iscrowd"] for s in rec["segments_info"]] == [0, 0, 1]
    m = MetadataCatalog.get(f"{unique_prefix}cityscapes_fine_panoptic_val")
    assert m.gt_dir.endswith("gtFine/val") and m.evaluator_type == "cityscapes_panoptic_seg"


def test_cityscapes_errors(datasets_root, unique_prefix):
    fd.make_cityscapes(datasets_root)
    D.register_all_cityscapes_panoptic(prefix=unique_prefix)
    cs = os.path.join(datasets_root, "cityscapes")
    path = os.path.join(cs, "gtFine/cityscapes_panoptic_train.json")
    with open(path) as f:
        data = json.load(f)
    data["annotations"][0]["segments_info"][0]["category_id"] = 3  # 'out of roi': not evaluated
    with open(path, "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match="category id 3"):
        DatasetCatalog.get(f"{unique_prefix}cityscapes_fine_panoptic_train")
    os.remove(os.path.join(cs, "gtFine/cityscapes_panoptic_val.json"))
    with pytest.raises(FileNotFoundError, match="cityscapes_panoptic_val.json does not exist.*createPanopticImgs"):
        DatasetCatalog.get(f"{unique_prefix}cityscapes_fine_panoptic_val")


# ---------------------------------------------------------------------------------------------------------- Mapillary


def test_mapillary_panoptic_and_sem_seg(datasets_root, unique_prefix):
    stems = fd.make_mapillary(datasets_root)
    D.register_all_mapillary_vistas_panoptic(prefix=unique_prefix)
    D.register_all_mapillary_vistas(prefix=unique_prefix)
    for split, short in (("training", "train"), ("validation", "val")):
        records = DatasetCatalog.get(f"{unique_prefix}mapillary_vistas_panoptic_{short}")
        _check_panoptic_records(records)
        rec = records[0]
        assert rec["file_name"].endswith(f"{split}/images/{stems[split]}.jpg")
        assert rec["sem_seg_file_name"].endswith(f"{split}/labels/{stems[split]}.png")
        assert _segments(rec) == {1: (13, False), 2: (55, True)}  # Road, Car
        sem = DatasetCatalog.get(f"{unique_prefix}mapillary_vistas_sem_seg_{short}")
        assert len(sem) == 1 and sem[0]["sem_seg_file_name"].endswith(f"{split}/labels/{stems[split]}.png")
        assert sem[0]["file_name"] == rec["file_name"]


def test_mapillary_missing_files(datasets_root, unique_prefix):
    D.register_all_mapillary_vistas_panoptic(prefix=unique_prefix)
    D.register_all_mapillary_vistas(prefix=unique_prefix)
    with pytest.raises(FileNotFoundError, match="panoptic_2018.json does not exist"):
        DatasetCatalog.get(f"{unique_prefix}mapillary_vistas_panoptic_train")
    with pytest.raises(FileNotFoundError, match="training/images does not exist"):
        DatasetCatalog.get(f"{unique_prefix}mapillary_vistas_sem_seg_train")


def test_register_all_registers_every_loader(datasets_root, unique_prefix):
    fd.make_coco(datasets_root)
    fd.make_cityscapes(datasets_root)
    fd.make_mapillary(datasets_root)
    fd.make_ade_raw(datasets_root)
    for script in ("prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"):
        assert load_script(script).main(["--dataset-dir", datasets_root]) == 0
    names = D.register_all(prefix=unique_prefix)
    assert len(names) == 15
    # the synthetic dataset is generated by tools/train_synthetic.py (tested in tests/tools/test_train_synthetic.py)
    synthetic = {unique_prefix + f"synthetic_panoptic_{s}" for s in ("train", "val")}
    assert synthetic <= set(names)
    for name in sorted(set(names) - synthetic):
        records = DatasetCatalog.get(name)
        assert records and all(os.path.isfile(r["file_name"]) for r in records), name

"""Registered names, metadata facts and idempotent registration of oneformer.data.datasets."""
import importlib

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

import oneformer.data.datasets as D
from oneformer.data.datasets.register_ade20k_panoptic import ADE20K_150_CATEGORIES, ADE20K_THING_IDS
from oneformer.data.datasets.register_mapillary_vistas_panoptic import MAPILLARY_VISTAS_CATEGORIES

OURS = {
    "ade20k_panoptic_train": "ade20k_panoptic_seg",
    "ade20k_panoptic_val": "ade20k_panoptic_seg",
    "ade20k_instance_train": "coco",
    "ade20k_instance_val": "coco",
    "cityscapes_fine_panoptic_train": "cityscapes_panoptic_seg",
    "cityscapes_fine_panoptic_val": "cityscapes_panoptic_seg",
    "coco_2017_train_panoptic_with_sem_seg": "coco_panoptic_seg",
    "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic_seg",
    "coco_2017_val_panoptic2instance": "coco",
    "mapillary_vistas_panoptic_train": "mapillary_vistas_panoptic_seg",
    "mapillary_vistas_panoptic_val": "mapillary_vistas_panoptic_seg",
    "mapillary_vistas_sem_seg_train": "sem_seg",
    "mapillary_vistas_sem_seg_val": "sem_seg",
    # Detectron2 built-ins the configs evaluate on
    "ade20k_sem_seg_train": "sem_seg",
    "ade20k_sem_seg_val": "sem_seg",
    "cityscapes_fine_sem_seg_val": "cityscapes_sem_seg",
    "cityscapes_fine_instance_seg_val": "cityscapes_instance",
}


@pytest.mark.parametrize("name", sorted(OURS))
def test_registered_with_evaluator_type(name):
    assert name in DatasetCatalog.list()
    assert MetadataCatalog.get(name).evaluator_type == OURS[name]


def test_config_dataset_names_are_registered():
    from pathlib import Path

    from detectron2.config import get_cfg

    from oneformer import add_oneformer_config_all

    bases = sorted(Path("configs").glob("*/Base-*.yaml"))
    assert len(bases) == 4
    for base in bases:
        cfg = add_oneformer_config_all(get_cfg())
        cfg.merge_from_file(str(base))
        for key in ("TRAIN", "TEST_PANOPTIC", "TEST_INSTANCE", "TEST_SEMANTIC"):
            names = cfg.DATASETS[key]
            assert names and all(n in DatasetCatalog.list() for n in names), (base, key, names)


def test_second_import_and_reload_are_safe():
    importlib.import_module("oneformer.data.datasets")
    importlib.reload(D)
    importlib.reload(D)
    assert MetadataCatalog.get("cityscapes_fine_panoptic_val").evaluator_type == "cityscapes_panoptic_seg"
    assert MetadataCatalog.get("ade20k_panoptic_val").label_divisor == 1000
    assert "ade20k_sem_seg_val" in DatasetCatalog.list()


def test_register_all_reads_root_at_call_time(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    names = D.register_all(prefix="rootcheck_")
    try:
        assert MetadataCatalog.get("rootcheck_ade20k_panoptic_val").panoptic_json == str(
            tmp_path / "ADEChallengeData2016" / "ade20k_panoptic_val.json")
        assert MetadataCatalog.get("rootcheck_coco_2017_val_panoptic2instance").json_file == str(
            tmp_path / "coco" / "annotations" / "panoptic2instances_val2017.json")
    finally:
        for n in names:
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)


# ---------------------------------------------------------------------------------------------------------------- ADE


def test_ade20k_panoptic_metadata():
    m = MetadataCatalog.get("ade20k_panoptic_train")
    assert len(m.stuff_classes) == 150 and len(m.stuff_colors) == 150
    assert len(m.thing_classes) == 100 and len(m.thing_colors) == 100
    assert sorted(m.thing_dataset_id_to_contiguous_id)[:3] == [7, 8, 10]
    assert all(k == v for k, v in m.thing_dataset_id_to_contiguous_id.items())
    assert m.stuff_dataset_id_to_contiguous_id == {i: i for i in range(150)}
    assert m.stuff_classes[:3] == ["wall", "building", "sky"]
    assert m.thing_classes[:3] == ["bed", "window ", "cabinet"]
    assert [m.stuff_classes[i] for i in sorted(m.thing_dataset_id_to_contiguous_id)] == m.thing_classes
    assert m.ignore_label == 255 and m.label_divisor == 1000
    assert m.json_file.endswith("ade20k_instance_train.json")
    assert m.panoptic_json.endswith("ade20k_panoptic_train.json")
    for key in ("panoptic_root", "image_root"):
        assert getattr(m, key)
    assert ADE20K_150_CATEGORIES[7] == {"id": 7, "name": "bed", "isthing": 1, "color": [204, 5, 255]}
    assert ADE20K_150_CATEGORIES[0]["color"] == [120, 120, 120]
    assert sum(c["isthing"] for c in ADE20K_150_CATEGORIES) == 100 == len(ADE20K_THING_IDS)
    # a few well-known flags
    names = {c["name"]: c["isthing"] for c in ADE20K_150_CATEGORIES}
    assert names["person"] == 1 and names["car"] == 1 and names["van"] == 1 and names["fountain"] == 1
    assert names["sky"] == 0 and names["road, route"] == 0 and names["stage"] == 0 and names["tower"] == 0


def test_ade20k_instance_metadata():
    m = MetadataCatalog.get("ade20k_instance_val")
    assert len(m.thing_classes) == 100
    assert m.thing_dataset_id_to_contiguous_id[7] == 0 and m.thing_dataset_id_to_contiguous_id[8] == 1
    assert m.thing_dataset_id_to_contiguous_id[10] == 2 and m.thing_dataset_id_to_contiguous_id[149] == 99
    assert sorted(m.thing_dataset_id_to_contiguous_id.values()) == list(range(100))
    assert m.json_file.endswith("ade20k_instance_val.json")
    assert m.image_root.endswith("images/validation")


# --------------------------------------------------------------------------------------------------------------- COCO


def test_coco_panoptic_metadata():
    m = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    assert len(m.stuff_classes) == 133 and len(m.thing_classes) == 80
    assert sorted(m.thing_dataset_id_to_contiguous_id.values()) == list(range(80))
    assert sorted(m.stuff_dataset_id_to_contiguous_id.values()) == list(range(133))
    assert m.thing_dataset_id_to_contiguous_id[1] == 0 and m.thing_dataset_id_to_contiguous_id[90] == 79
    assert m.stuff_dataset_id_to_contiguous_id[200] == 132
    assert m.json_file.endswith("annotations/panoptic2instances_val2017.json")
    assert MetadataCatalog.get("coco_2017_train_panoptic_with_sem_seg").json_file.endswith(
        "annotations/instances_train2017.json")
    assert m.sem_seg_root.endswith("panoptic_semseg_val2017")
    p2i = MetadataCatalog.get("coco_2017_val_panoptic2instance")
    assert len(p2i.thing_classes) == 80 and p2i.json_file.endswith("panoptic2instances_val2017.json")


# --------------------------------------------------------------------------------------------------------- Cityscapes


def test_cityscapes_panoptic_metadata():
    m = MetadataCatalog.get("cityscapes_fine_panoptic_train")
    assert len(m.thing_classes) == 19 and m.thing_classes == m.stuff_classes
    assert m.stuff_classes[0] == "road" and m.stuff_classes[11] == "person" and m.stuff_classes[18] == "bicycle"
    assert m.thing_dataset_id_to_contiguous_id == {24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert m.stuff_dataset_id_to_contiguous_id[7] == 0 and m.stuff_dataset_id_to_contiguous_id[23] == 10
    assert len(m.stuff_dataset_id_to_contiguous_id) == 11
    assert m.stuff_colors[0] == [128, 64, 128]
    assert m.ignore_label == 255 and m.label_divisor == 1000
    assert m.panoptic_json.endswith("gtFine/cityscapes_panoptic_train.json")


# ---------------------------------------------------------------------------------------------------------- Mapillary


def test_mapillary_metadata():
    m = MetadataCatalog.get("mapillary_vistas_panoptic_val")
    assert len(m.thing_classes) == 65 and m.thing_classes == m.stuff_classes and len(m.stuff_colors) == 65
    assert m.stuff_classes[0] == "Bird" and m.stuff_classes[64] == "Ego Vehicle"
    assert m.stuff_dataset_id_to_contiguous_id == {i + 1: i for i in range(65)}
    assert m.thing_dataset_id_to_contiguous_id[20] == 19  # Person
    assert 14 not in m.thing_dataset_id_to_contiguous_id  # Road is stuff
    assert sum(c["isthing"] for c in MAPILLARY_VISTAS_CATEGORIES) == len(m.thing_dataset_id_to_contiguous_id)
    assert m.panoptic_json.endswith("validation/panoptic/panoptic_2018.json")
    s = MetadataCatalog.get("mapillary_vistas_sem_seg_train")
    assert len(s.stuff_classes) == 65 and s.ignore_label == 65 and s.sem_seg_root.endswith("training/labels")

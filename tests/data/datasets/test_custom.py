"""register_panoptic_dataset / register_semantic_dataset / register_instance_dataset."""
import copy
import json
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from oneformer.data.datasets import register_instance_dataset, register_panoptic_dataset, register_semantic_dataset
from oneformer.data.datasets.custom import validate_categories
from tests.data.datasets import fake_data as fd


def test_panoptic_from_json_categories(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "mine"
    meta = register_panoptic_dataset(
        name,
        image_root=files["image_root"],
        panoptic_root=files["panoptic_root"],
        panoptic_json=files["panoptic_json"],
        sem_seg_root=files["sem_seg_root"],
        instance_json=str(tmp_path / "instances.json"),
        evaluator_type="ade20k_panoptic_seg",
    )
    assert meta is MetadataCatalog.get(name)
    assert meta.stuff_classes == ["ground", "cat", "sky", "dog"]
    assert meta.thing_classes == ["cat", "dog"]
    assert meta.thing_dataset_id_to_contiguous_id == {20: 1, 40: 3}
    assert meta.stuff_dataset_id_to_contiguous_id == {10: 0, 20: 1, 30: 2, 40: 3}
    assert meta.stuff_colors[0] == [10, 200, 10] and len(meta.stuff_colors) == 4 and len(meta.thing_colors) == 2
    assert all(len(c) == 3 for c in meta.stuff_colors)
    assert meta.thing_colors[0] == meta.stuff_colors[1]
    assert meta.panoptic_root == files["panoptic_root"] and meta.image_root == files["image_root"]
    assert meta.panoptic_json == files["panoptic_json"] and meta.json_file == str(tmp_path / "instances.json")
    assert meta.evaluator_type == "ade20k_panoptic_seg" and meta.ignore_label == 255 and meta.label_divisor == 1000
    records = DatasetCatalog.get(name)
    assert len(records) == 2
    rec = records[0]
    assert rec["file_name"] == os.path.join(files["image_root"], "img0.png")  # from the json's images list
    assert rec["pan_seg_file_name"] == os.path.join(files["panoptic_root"], "img0.png")
    assert rec["sem_seg_file_name"] == os.path.join(files["sem_seg_root"], "img0.png")
    assert rec["image_id"] == 1 and (rec["height"], rec["width"]) == (fd.H, fd.W)
    assert [(s["id"], s["category_id"], s["isthing"]) for s in rec["segments_info"]] == [
        (1, 0, False), (2, 1, True), (3, 3, True)]


def test_panoptic_explicit_categories_define_order(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    cats = [fd.CUSTOM_CATEGORIES[i] for i in (1, 3, 0, 2)]  # things first
    name = unique_prefix + "ordered"
    meta = register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                                     panoptic_json=files["panoptic_json"], categories=cats)
    assert meta.stuff_classes == ["cat", "dog", "ground", "sky"]
    assert meta.thing_dataset_id_to_contiguous_id == {20: 0, 40: 1}
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.json_file is None
    rec = DatasetCatalog.get(name)[0]
    assert "sem_seg_file_name" not in rec
    assert [s["category_id"] for s in rec["segments_info"]] == [2, 0, 1]
    # registering again (same name) replaces the earlier registration
    meta2 = register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                                      panoptic_json=files["panoptic_json"], label_divisor=256)
    assert meta2.label_divisor == 256 and meta2.stuff_classes[0] == "ground"


def test_categories_need_the_json_when_not_given(tmp_path, unique_prefix):
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        register_panoptic_dataset(unique_prefix + "x", image_root=str(tmp_path), panoptic_root=str(tmp_path),
                                  panoptic_json=str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c[1].update(id=10), r"duplicate category id 10: 'ground' \(entry 0\) and 'cat' \(entry 1\)"),
        (lambda c: c[2].update(id="30"), r"category id '30' is not an int"),
        (lambda c: c[2].update(id=True), r"category id True is not an int"),
        (lambda c: c[0].pop("name"), r"\[0\] \(id 10\) has no 'name'"),
        (lambda c: c[3].pop("isthing"), r"\[3\] \(id 40, 'dog'\) has no 'isthing'"),
        (lambda c: c[3].update(isthing="yes"), r"isthing must be 0/1"),
        (lambda c: c[0].pop("id"), r"\[0\] \('ground'\) has no 'id'"),
        (lambda c: c[0].update(color=[1, 2]), r"color must be three ints"),
    ],
)
def test_bad_categories(tmp_path, unique_prefix, mutate, message):
    cats = copy.deepcopy(fd.CUSTOM_CATEGORIES)
    mutate(cats)
    with pytest.raises(ValueError, match=message):
        register_panoptic_dataset(unique_prefix + "bad", image_root=str(tmp_path), panoptic_root=str(tmp_path),
                                  panoptic_json=str(tmp_path / "p.json"), categories=cats)
    assert unique_prefix + "bad" not in DatasetCatalog.list()


def test_bad_categories_in_json(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    data = files["data"]
    data["categories"][3]["id"] = 20
    with open(files["panoptic_json"], "w") as f:
        json.dump(data, f)
    with pytest.raises(ValueError, match=r"panoptic.json 'categories': duplicate category id 20"):
        register_panoptic_dataset(unique_prefix + "bad", image_root=files["image_root"],
                                  panoptic_root=files["panoptic_root"], panoptic_json=files["panoptic_json"])


def test_validate_categories_fills_colors():
    cats = validate_categories([{"id": 3, "name": "a", "isthing": True}])
    assert cats[0]["isthing"] == 1 and len(cats[0]["color"]) == 3
    assert cats == validate_categories([{"id": 3, "name": "a", "isthing": 1}])  # deterministic


def test_custom_loader_errors(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "err"
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"], categories=fd.CUSTOM_CATEGORIES[:3])
    with pytest.raises(ValueError, match=r"annotation img0.png .* segment 3 with category id 40"):
        DatasetCatalog.get(name)
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"])
    os.remove(os.path.join(files["image_root"], "img1.png"))
    with pytest.raises(FileNotFoundError, match=r"images/img1.png \(image id 2, annotation img1.png\)"):
        DatasetCatalog.get(name)


def test_semantic_dataset(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "sem"
    meta = register_semantic_dataset(name, image_root=files["image_root"], sem_seg_root=files["sem_seg_root"],
                                     stuff_classes=["ground", "cat", "sky", "dog"], image_ext="png")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255 and len(meta.stuff_colors) == 4
    records = DatasetCatalog.get(name)
    assert [os.path.basename(r["sem_seg_file_name"]) for r in records] == ["img0.png", "img1.png"]
    assert all(r["file_name"].startswith(files["image_root"]) for r in records)
    with pytest.raises(ValueError, match="ignore_label 2 is a class id"):
        register_semantic_dataset(name, image_root="a", sem_seg_root="b", stuff_classes=["x", "y", "z"],
                                  ignore_label=2)
    register_semantic_dataset(unique_prefix + "nosem", image_root=str(tmp_path / "nope"), sem_seg_root="b",
                              stuff_classes=["x"])
    with pytest.raises(FileNotFoundError, match="nope"):
        DatasetCatalog.get(unique_prefix + "nosem")


def test_instance_dataset(datasets_root, unique_prefix):
    fd.make_coco(datasets_root)
    coco = os.path.join(datasets_root, "coco")
    name = unique_prefix + "inst"
    meta = register_instance_dataset(name, image_root=os.path.join(coco, "train2017"),
                                     json_file=os.path.join(coco, "annotations/instances_train2017.json"))
    assert meta.evaluator_type == "coco" and len(meta.thing_classes) == 80
    assert meta.thing_dataset_id_to_contiguous_id[18] == 16
    records = DatasetCatalog.get(name)
    assert sorted(a["category_id"] for a in records[0]["annotations"]) == [0, 16]
    # explicit categories: contiguous ids follow their order, json names are not needed to match
    meta = register_instance_dataset(name + "2", image_root=os.path.join(coco, "train2017"),
                                     json_file=os.path.join(coco, "annotations/instances_train2017.json"),
                                     categories=[{"id": 18, "name": "doggo"}, {"id": 1, "name": "human"}])
    assert meta.thing_classes == ["doggo", "human"]
    assert sorted(a["category_id"] for a in DatasetCatalog.get(name + "2")[0]["annotations"]) == [0, 1]
    with pytest.raises(ValueError, match="only thing categories"):
        register_instance_dataset(name + "3", image_root="x", json_file="y",
                                  categories=[{"id": 1, "name": "a", "isthing": 0}])


def _register_with_json(tmp_path, name, mutate):
    files = fd.make_custom_panoptic(str(tmp_path))
    with open(files["panoptic_json"]) as f:
        data = json.load(f)
    mutate(data)
    with open(files["panoptic_json"], "w") as f:
        json.dump(data, f)
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"], categories=fd.CUSTOM_CATEGORIES)
    return files


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["annotations"][1].pop("file_name"),
     r"panoptic.json: annotations\[1\] has no 'file_name' \(a COCO panoptic annotation needs"),
    (lambda d: d["annotations"][0].pop("image_id"), r"annotations\[0\] has no 'image_id'"),
    (lambda d: d["annotations"][0]["segments_info"][1].pop("id"),
     r"annotation img0.png \(image id 1\): segments_info\[1\] = .* lacks 'id' or 'category_id'"),
    (lambda d: d["annotations"][0].update(segments_info={"id": 1}), r"img0.png .*'segments_info' is not a list"),
    (lambda d: d.update(annotations={}), r"has no 'annotations' list"),
    (lambda d: d["annotations"].__setitem__(0, "img0.png"), r"annotations\[0\] is not a dict"),
])
def test_malformed_panoptic_json_names_the_problem(tmp_path, unique_prefix, mutate, message):
    _register_with_json(tmp_path, unique_prefix + "bad", mutate)
    with pytest.raises(ValueError, match=message):
        DatasetCatalog.get(unique_prefix + "bad")


def test_invalid_panoptic_json(tmp_path, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    with open(files["panoptic_json"], "w") as f:
        f.write('{"annotations": [')
    with pytest.raises(ValueError, match=r"panoptic.json is not valid JSON: Expecting value: line 1"):
        register_panoptic_dataset(unique_prefix + "bad", image_root=files["image_root"],
                                  panoptic_root=files["panoptic_root"], panoptic_json=files["panoptic_json"])
    register_panoptic_dataset(unique_prefix + "bad", image_root=files["image_root"],
                              panoptic_root=files["panoptic_root"], panoptic_json=files["panoptic_json"],
                              categories=fd.CUSTOM_CATEGORIES)
    with pytest.raises(ValueError, match="is not valid JSON"):
        DatasetCatalog.get(unique_prefix + "bad")


def test_image_without_segments_loads(tmp_path, unique_prefix):
    """An annotation with no (or only crowd) segments is kept: the mapper gives empty targets, which train."""
    _register_with_json(tmp_path, unique_prefix + "empty", lambda d: d["annotations"][0].update(segments_info=[]))
    records = DatasetCatalog.get(unique_prefix + "empty")
    assert len(records) == 2 and records[0]["segments_info"] == []

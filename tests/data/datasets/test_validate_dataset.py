"""tools/validate_dataset.py: passes clean data, names every planted problem."""
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import oneformer.data.datasets as D
from oneformer.data.datasets import register_panoptic_dataset
from tests.data.datasets import fake_data as fd
from tests.tiny import load_script


@pytest.fixture(scope="module")
def tool():
    return load_script("validate_dataset", folder="tools")


def _files_args(files, sem=True):
    args = ["--panoptic-json", files["panoptic_json"], "--panoptic-root", files["panoptic_root"],
            "--image-root", files["image_root"]]
    return args + (["--sem-seg-root", files["sem_seg_root"]] if sem else [])


def _register(files, name, **kw):
    return register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                                     panoptic_json=files["panoptic_json"], sem_seg_root=files["sem_seg_root"],
                                     instance_json=files["panoptic_json"], **kw)


def _rewrite_json(files, edit):
    data = files["data"]
    edit(data)
    with open(files["panoptic_json"], "w") as f:
        json.dump(data, f)


def test_clean_files_and_registered_dataset_pass(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    assert tool.main(_files_args(files)) == 0
    _register(files, unique_prefix + "clean")
    assert tool.main([unique_prefix + "clean"]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "OK: 2 dataset(s) checked" not in out
    assert out.strip().endswith("OK: 1 dataset(s) checked")


def test_clean_builtin_layouts_pass(datasets_root, tool, capsys, unique_prefix):
    fd.make_coco(datasets_root)
    fd.make_mapillary(datasets_root)
    names = D.register_all_coco_panoptic_annos_sem_seg(prefix=unique_prefix)
    names += D.register_all_mapillary_vistas_panoptic(prefix=unique_prefix)
    names += D.register_all_mapillary_vistas(prefix=unique_prefix)
    assert tool.main(names) == 0, capsys.readouterr().out


def test_cityscapes_crowd_only_is_a_warning(datasets_root, tool, capsys, unique_prefix):
    fd.make_cityscapes(datasets_root)
    path = os.path.join(datasets_root, "cityscapes/gtFine/cityscapes_panoptic_val.json")
    with open(path) as f:
        data = json.load(f)
    for seg in data["annotations"][0]["segments_info"]:
        seg["iscrowd"] = 1
    with open(path, "w") as f:
        json.dump(data, f)
    D.register_all_cityscapes_panoptic(prefix=unique_prefix)
    assert tool.main([unique_prefix + "cityscapes_fine_panoptic_train"]) == 0
    name = unique_prefix + "cityscapes_fine_panoptic_val"
    assert tool.main([name]) == 1
    out = capsys.readouterr().out
    assert "WARNING" in out and "frankfurt_000000_000294_leftImg8bit.png has only crowd segments (3)" in out
    assert tool.main([name, "--allow-warnings"]) == 0


def test_planted_problems_are_named(tmp_path, tool, capsys):
    files = fd.make_custom_panoptic(str(tmp_path), n_images=4)

    def edit(data):
        anns = data["annotations"]
        anns[0]["segments_info"][0]["category_id"] = 99  # unknown category
        for seg in anns[1]["segments_info"]:  # crowd-only image
            seg["iscrowd"] = 1
        anns[3]["segments_info"].pop()  # segment 3 of img3 in the PNG but not in the json

    _rewrite_json(files, edit)
    os.remove(os.path.join(files["image_root"], "img2.png"))  # missing image
    # img0's PNG gets an extra segment 7 not in the json, and loses segment 2 (still listed in the json)
    pan = os.path.join(files["panoptic_root"], "img0.png")
    ids = fd.rgb2id(np.asarray(Image.open(pan))).copy()
    ids[ids == 2] = 7
    fd.write_panoptic_png(pan, ids)

    assert tool.main(_files_args(files)) == 1
    out = capsys.readouterr().out
    assert "category id 99 is not in the metadata: used by 1 segment(s), e.g. segment 1 of img0.png" in out
    assert "img1.png has only crowd segments (3)" in out
    assert f"image file {os.path.join(files['image_root'], 'img2.png')} is missing" in out
    assert f"panoptic PNG {pan} contains segment id 7 (12 pixels) that is not in segments_info" in out
    assert "segment id 2 (category 20, 'cat') of img0.png is in segments_info but not in the PNG" in out
    assert "img3.png contains segment id 3 (12 pixels) that is not in segments_info" in out
    assert "FAILED:" in out


def test_registered_dataset_reports_every_problem_after_loader_failure(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path), n_images=3)

    def edit(data):
        data["annotations"][0]["segments_info"][1]["category_id"] = 77
        data["annotations"][2]["segments_info"] = []

    _rewrite_json(files, edit)
    name = unique_prefix + "broken"
    _register(files, name, categories=fd.CUSTOM_CATEGORIES)
    os.remove(os.path.join(files["image_root"], "img1.png"))
    assert tool.main([name]) == 1
    out = capsys.readouterr().out
    assert "loading the dataset fails: ValueError" in out and "category id 77" in out
    assert "category id 77 is not in the metadata" in out
    assert "img1.png is missing" in out
    assert "img2.png has no segment" in out


def test_metadata_problems(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "meta"
    _register(files, name)
    meta = MetadataCatalog.get(name).as_dict()
    meta.pop("name")
    meta.pop("label_divisor")
    meta["thing_classes"] = ["dog", "cat"]  # wrong order
    meta["stuff_dataset_id_to_contiguous_id"] = {10: 0, 20: 1, 30: 5, 40: 3}  # 2 missing, 5 unexpected
    loader = DatasetCatalog[name]
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**meta)
    assert tool.main([name]) == 1
    out = capsys.readouterr().out
    assert "metadata field 'label_divisor' is missing" in out
    assert "thing_classes[0] is 'dog' but the thing with contiguous id 1 is 'cat' in stuff_classes" in out
    assert "contiguous ids are not exactly 0..3 (len(stuff_classes)): missing [2], unexpected [5]" in out


def test_missing_instance_json_names_the_fix(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    name = unique_prefix + "noinst"
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"], sem_seg_root=files["sem_seg_root"])
    assert tool.main([name]) == 1
    out = capsys.readouterr().out
    assert "WARNING metadata field 'json_file' (instance annotations) is missing: instance evaluation (AP) will be " \
           "skipped; pass instance_json= to register_panoptic_dataset" in out
    assert "or set MODEL.TEST.INSTANCE_ON False" in out
    assert tool.main([name, "--allow-warnings"]) == 0  # training and the other evaluations work
    capsys.readouterr()
    config = tmp_path / "no_instances.yaml"
    config.write_text("_BASE_: %s\nMODEL:\n  TEST:\n    INSTANCE_ON: False\n"
                      % os.path.join(fd.REPO, "configs/ade20k/oneformer_R50_bs16_160k.yaml"))
    tool.main([name, "--config-file", str(config)])
    assert "json_file" not in capsys.readouterr().out


def test_thing_stuff_mismatch_between_json_and_metadata(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    cats = [dict(c) for c in fd.CUSTOM_CATEGORIES]
    cats[1]["isthing"] = 0  # 'cat' registered as stuff, the json says thing
    name = unique_prefix + "ts"
    _register(files, name, categories=cats)
    assert tool.main([name]) == 1
    out = capsys.readouterr().out
    assert "class 'cat' (id 20) is marked thing in" in out and "but stuff in the metadata" in out


def test_num_classes_from_config(tmp_path, tool, capsys):
    files = fd.make_custom_panoptic(str(tmp_path))
    assert tool.main(_files_args(files) + ["--config-file", "configs/ade20k/oneformer_R50_bs16_160k.yaml"]) == 1
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES is 150 but the json has 4 categories" in capsys.readouterr().out


def test_config_datasets_are_checked_by_default(datasets_root, tool, capsys):
    # nothing under the root: every dataset of the COCO config reports its missing files
    assert tool.main(["--config-file", "configs/coco/oneformer_R50_bs16_50ep.yaml"]) == 1
    out = capsys.readouterr().out
    for name in ("coco_2017_train_panoptic_with_sem_seg", "coco_2017_val_panoptic_with_sem_seg",
                 "coco_2017_val_panoptic2instance"):
        assert f"== {name}" in out
    assert "panoptic_train2017.json is missing" in out


def test_semantic_value_and_unknown_name(tmp_path, tool, capsys, unique_prefix):
    files = fd.make_custom_panoptic(str(tmp_path))
    sem = np.asarray(Image.open(os.path.join(files["sem_seg_root"], "img1.png"))).copy()
    sem[0, 0] = 9
    fd.write_label(os.path.join(files["sem_seg_root"], "img1.png"), sem)
    D.register_semantic_dataset(unique_prefix + "sem", image_root=files["image_root"],
                                sem_seg_root=files["sem_seg_root"], stuff_classes=["a", "b", "c", "d"],
                                image_ext="png")
    assert tool.main([unique_prefix + "sem", unique_prefix + "semx"]) == 1
    out = capsys.readouterr().out
    assert "img1.png has values [9] outside 0..3 and the ignore label 255" in out
    assert f"dataset '{unique_prefix}semx' is not registered" in out


def test_missing_files_for_unregistered_check(tmp_path, tool, capsys):
    assert tool.main(["--panoptic-json", str(tmp_path / "p.json"), "--panoptic-root", str(tmp_path),
                      "--image-root", str(tmp_path)]) == 1
    assert f"panoptic json {tmp_path / 'p.json'} is missing" in capsys.readouterr().out


@pytest.mark.parametrize("name", [
    "ade20k_panoptic_val", "ade20k_instance_val", "ade20k_sem_seg_val", "cityscapes_fine_panoptic_val",
    "cityscapes_fine_sem_seg_val", "cityscapes_fine_instance_seg_val", "coco_2017_val_panoptic_with_sem_seg",
    "coco_2017_val_panoptic2instance", "mapillary_vistas_panoptic_val", "mapillary_vistas_sem_seg_val",
])
def test_builtin_metadata_is_complete_and_consistent(tool, name):
    report = tool.Report(name)
    kind = tool.check_metadata(MetadataCatalog.get(name).as_dict(), report)
    assert kind in ("panoptic", "semantic", "instance")
    assert not report.items, report.render()

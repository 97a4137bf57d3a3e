"""The dataset preparation scripts in datasets/ on tiny inputs."""
import json
import os

import numpy as np
import pytest
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from tests.data.datasets import fake_data as fd
from tests.tiny import load_script

COCO_INDEX = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}


def _png(path):
    return np.asarray(Image.open(path))


# ----------------------------------------------------------------------------------------------------- ADE semantic


def test_ade20k_sem_seg_subtracts_one_with_wrap(datasets_root):
    fd.make_ade_raw(datasets_root)
    assert load_script("prepare_ade20k_sem_seg").main([]) == 0  # root from $DETECTRON2_DATASETS
    out = _png(os.path.join(datasets_root, "ADEChallengeData2016/annotations_detectron2/training/"
                                           "ADE_train_00000001.png"))
    assert out.dtype == np.uint8
    assert out[0, 0] == 255  # 0 (other) wraps to 255
    assert out[0, 1] == 0  # wall 1 -> 0
    assert out[5, 0] == 7 and out[5, 7] == 8  # bed, window
    assert os.path.isfile(os.path.join(datasets_root, "ADEChallengeData2016/annotations_detectron2/validation/"
                                                      "ADE_val_00000001.png"))


def test_ade20k_sem_seg_missing_input(tmp_path, capsys):
    assert load_script("prepare_ade20k_sem_seg").main(["--dataset-dir", str(tmp_path)]) == 1
    assert f"{tmp_path}/ADEChallengeData2016 does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------- ADE panoptic


def test_ade20k_pan_seg(datasets_root):
    fd.make_ade_raw(datasets_root)
    assert load_script("prepare_ade20k_pan_seg").main(["--dataset-dir", datasets_root, "--splits", "val"]) == 0
    ade = os.path.join(datasets_root, "ADEChallengeData2016")
    with open(os.path.join(ade, "ade20k_panoptic_val.json")) as f:
        data = json.load(f)
    cats = data["categories"]
    assert len(cats) == 150 and sum(c["isthing"] for c in cats) == 100
    assert [c["id"] for c in cats if c["isthing"]][:3] == [7, 8, 10]
    assert data["images"] == [{"id": "ADE_val_00000001", "file_name": "ADE_val_00000001.jpg", "width": fd.W,
                               "height": fd.H}]
    ann = data["annotations"][0]
    assert ann["image_id"] == "ADE_val_00000001" and ann["file_name"] == "ADE_val_00000001.png"
    segs = ann["segments_info"]
    assert [s["category_id"] for s in segs] == [0, 7, 8]  # stuff first, then things
    pan = fd.rgb2id(_png(os.path.join(ade, "ade20k_panoptic_val", "ADE_val_00000001.png")))
    assert pan[0, 0] == 0  # 'other' stays void
    for s in segs:
        mask = pan == s["id"]
        assert s["area"] == mask.sum() and s["iscrowd"] == 0
    by_cat = {s["category_id"]: s for s in segs}
    assert by_cat[0]["area"] == 3 * 7 and by_cat[0]["bbox"] == [1, 0, 7, 3]
    assert by_cat[7]["bbox"] == [0, 3, 4, 3] and by_cat[8]["bbox"] == [4, 3, 4, 3]
    assert set(np.unique(pan).tolist()) == {0} | {s["id"] for s in segs}
    assert not os.path.exists(os.path.join(ade, "ade20k_panoptic_train.json"))


def test_ade20k_mapping_file_is_read(datasets_root):
    fd.make_ade_raw(datasets_root)
    ade = os.path.join(datasets_root, "ADEChallengeData2016")
    mod = load_script("prepare_ade20k_pan_seg")
    rows = ["Instacne100\tSceneParsing150\tFullADE20K"]
    rows += [f"{k}\t{sem + 1}\t{1000 + k}" for k, sem in sorted(mod.builtin_mapping().items())]
    with open(os.path.join(ade, "ade20k_instance_catid_mapping.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    assert mod.read_mapping(os.path.join(ade, "ade20k_instance_catid_mapping.txt")) == {
        k + 1: v for k, v in enumerate(mod.ADE20K_THING_IDS)}
    # a mapping that sends instance category 2 to class 9 (grass) instead of window
    rows[2] = "2\t10\t1001"
    with open(os.path.join(ade, "ade20k_instance_catid_mapping.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")
    assert mod.main(["--dataset-dir", datasets_root, "--splits", "train"]) == 0
    with open(os.path.join(ade, "ade20k_panoptic_train.json")) as f:
        data = json.load(f)
    assert [s["category_id"] for s in data["annotations"][0]["segments_info"]] == [0, 7, 9]


def test_ade20k_pan_seg_missing_instances(datasets_root, capsys):
    fd.make_ade_raw(datasets_root)
    import shutil

    shutil.rmtree(os.path.join(datasets_root, "ADEChallengeData2016/annotations_instance"))
    assert load_script("prepare_ade20k_pan_seg").main([]) == 1
    err = capsys.readouterr().err
    assert "annotations_instance/training does not exist" in err and "instance-segmentation challenge" in err


# ----------------------------------------------------------------------------------------------------- ADE instance


def test_ade20k_ins_seg(datasets_root):
    from pycocotools.coco import COCO

    fd.make_ade_raw(datasets_root)
    assert load_script("prepare_ade20k_ins_seg").main(["--workers", "1"]) == 0
    path = os.path.join(datasets_root, "ADEChallengeData2016/ade20k_instance_train.json")
    coco = COCO(path)
    assert len(coco.getCatIds()) == 100 and sorted(coco.getCatIds())[:3] == [7, 8, 10]
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(a["category_id"] for a in anns) == [7, 8]
    assert sorted(a["id"] for a in anns) == [1, 2]
    for a in anns:
        mask = coco.annToMask(a)
        assert mask.sum() == a["area"] == 12 and a["iscrowd"] == 0
        assert a["image_id"] == "ADE_train_00000001"
    bed = next(a for a in anns if a["category_id"] == 7)
    assert bed["bbox"] == [0, 3, 4, 3]


# ---------------------------------------------------------------------------------------------------- COCO semantic


def test_coco_semantic_from_panoptic(datasets_root):
    fd.make_coco(datasets_root)
    # drop the semantic PNGs make_coco wrote, so the script's output is what is checked
    import shutil

    for split in ("train", "val"):
        shutil.rmtree(os.path.join(datasets_root, f"coco/panoptic_semseg_{split}2017"))
    # one void pixel
    pan_file = os.path.join(datasets_root, "coco/panoptic_val2017/000000000285.png")
    ids = fd.rgb2id(_png(pan_file)).copy()
    ids[0, 0] = 0
    fd.write_panoptic_png(pan_file, ids)
    assert load_script("prepare_coco_semantic_annos_from_panoptic_annos").main([]) == 0
    sem = _png(os.path.join(datasets_root, "coco/panoptic_semseg_val2017/000000000285.png"))
    assert sem.dtype == np.uint8
    assert sem[0, 0] == 255
    assert sem[0, 1] == COCO_INDEX[187] == 119  # sky-other-merged
    assert sem[5, 0] == 0 and sem[5, 7] == COCO_INDEX[18] == 16
    assert set(np.unique(sem).tolist()) == {255, 0, 16, 119}
    assert os.path.isfile(os.path.join(datasets_root, "coco/panoptic_semseg_train2017/000000000139.png"))


def test_semantic_from_custom_panoptic_json(tmp_path):
    files = fd.make_custom_panoptic(str(tmp_path / "mine"), n_images=1)
    out = tmp_path / "sem"
    assert load_script("prepare_coco_semantic_annos_from_panoptic_annos").main([
        "--panoptic-json", files["panoptic_json"], "--panoptic-root", files["panoptic_root"],
        "--output-dir", str(out)]) == 0
    sem = _png(out / "img0.png")
    assert sem[0, 0] == 0 and sem[5, 0] == 1 and sem[5, 7] == 3  # json categories order: ground, cat, sky, dog
    assert np.array_equal(sem, _png(os.path.join(files["sem_seg_root"], "img0.png")))


def test_coco_semantic_missing_json(tmp_path, capsys):
    assert load_script("prepare_coco_semantic_annos_from_panoptic_annos").main(
        ["--dataset-dir", str(tmp_path), "--splits", "val2017"]) == 1
    assert "panoptic_val2017.json does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- panoptic2detection


def test_panoptic2detection_things_only(datasets_root):
    from pycocotools.coco import COCO

    fd.make_coco(datasets_root)
    out = os.path.join(datasets_root, "coco/annotations/panoptic2instances_val2017.json")
    os.remove(out)
    assert load_script("panoptic2detection_coco_format").main(["--things_only"]) == 0
    coco = COCO(out)
    assert len(coco.getCatIds()) == 80
    anns = coco.loadAnns(coco.getAnnIds())
    assert sorted(a["category_id"] for a in anns) == [1, 18]
    assert sorted(a["id"] for a in anns) == [1, 2]
    pan = fd.rgb2id(_png(os.path.join(datasets_root, "coco/panoptic_val2017/000000000285.png")))
    for a in anns:
        assert isinstance(a["segmentation"]["counts"], str)
        mask = coco.annToMask(a)
        assert mask.sum() == a["area"] == 12 and a["image_id"] == 285
        assert np.array_equal(mask.astype(bool), pan == (2002 if a["category_id"] == 1 else 3003))
    person = next(a for a in anns if a["category_id"] == 1)
    assert person["bbox"] == [0.0, 3.0, 4.0, 3.0]
    assert coco.loadImgs(285)[0]["file_name"] == "000000000285.jpg"


def test_panoptic2detection_all_segments_and_errors(datasets_root, tmp_path, capsys):
    fd.make_coco(datasets_root)
    out = str(tmp_path / "det.json")
    mod = load_script("panoptic2detection_coco_format")
    assert mod.main(["--output-json-file", out]) == 0
    with open(out) as f:
        data = json.load(f)
    assert sorted(a["category_id"] for a in data["annotations"]) == [1, 18, 187]
    assert len(data["categories"]) == 133
    assert mod.main(["--input-json-file", str(tmp_path / "nope.json")]) == 1
    assert "nope.json does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg",
                                    "prepare_coco_semantic_annos_from_panoptic_annos",
                                    "panoptic2detection_coco_format"])
def test_scripts_have_help(script, capsys):
    with pytest.raises(SystemExit) as e:
        load_script(script).main(["--help"])
    assert e.value.code == 0
    assert "usage" in capsys.readouterr().out

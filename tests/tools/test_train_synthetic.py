"""tools/train_synthetic.py without training (seconds): the generated data are valid COCO panoptic (json ↔ PNG ids,
categories with isthing, semantic PNG values, instance json masks), generation is reproducible, the registration
loads them, the training mapper reads them, and configs/synthetic/oneformer_synthetic.yaml loads and builds a model
that trains a step and runs inference for every task. The bundled demo checkpoint and samples, when present, are
checked too (size, weights-only loading, a clean load into the inference build)."""
import json
import os
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from PIL import Image

import oneformer  # noqa: F401  (registers the model components)
from oneformer import add_oneformer_config_all
from oneformer.data.dataset_mappers import build_dataset_mapper
from tests.tiny import load_script
from oneformer.data.datasets.register_synthetic import SYNTHETIC_CATEGORIES, register_all_synthetic, synthetic_paths

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "synthetic" / "oneformer_synthetic.yaml"
CHECKPOINT = REPO / "demo" / "assets" / "oneformer_synthetic.pth"
SAMPLES = REPO / "demo" / "assets" / "samples"
SIZE = 64
PREFIX = "test_synth_"


ts = load_script("train_synthetic", "tools")


def _rgb2id(rgb):
    rgb = np.asarray(rgb, dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("datasets") / "synthetic_shapes")
    assert ts.generate_dataset(d, num_train=6, num_val=3, seed=0, size=SIZE)
    return d


@pytest.fixture(scope="module")
def registered(data_dir):
    names = register_all_synthetic(prefix=PREFIX, dataset_dir=data_dir)
    yield names
    for catalog in (DatasetCatalog, MetadataCatalog):
        for name in list(catalog.list()):
            if name.startswith(PREFIX):
                catalog.remove(name)


def _cfg(is_train, opts=()):
    cfg = add_oneformer_config_all(get_cfg())
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.IS_TRAIN", str(is_train), *opts])
    return cfg


# ---------------------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("split,num", [("train", 6), ("val", 3)])
def test_split_is_valid_coco_panoptic(data_dir, split, num):
    paths = synthetic_paths(data_dir, split)
    with open(paths["panoptic_json"]) as f:
        pan = json.load(f)
    cats = {c["id"]: c for c in pan["categories"]}
    assert [(c["id"], c["name"], c["isthing"]) for c in pan["categories"]] == [
        (c["id"], c["name"], c["isthing"]) for c in SYNTHETIC_CATEGORIES]
    assert sum(c["isthing"] for c in cats.values()) >= 3 and sum(1 - c["isthing"] for c in cats.values()) >= 2
    contiguous = {c["id"]: i for i, c in enumerate(SYNTHETIC_CATEGORIES)}
    assert len(pan["images"]) == len(pan["annotations"]) == num
    images = {im["id"]: im for im in pan["images"]}
    n_things = 0
    for ann in pan["annotations"]:
        im = images[ann["image_id"]]
        img = np.asarray(Image.open(os.path.join(paths["image_root"], im["file_name"])))
        assert img.shape == (im["height"], im["width"], 3) == (SIZE, SIZE, 3) and img.dtype == np.uint8
        ids = _rgb2id(Image.open(os.path.join(paths["panoptic_root"], ann["file_name"])).convert("RGB"))
        segs = ann["segments_info"]
        # every pixel belongs to a listed segment and every listed segment is in the PNG; ids are unique
        assert set(np.unique(ids).tolist()) == {s["id"] for s in segs}
        assert len({s["id"] for s in segs}) == len(segs) and 0 not in {s["id"] for s in segs}
        stuff_cats = [s["category_id"] for s in segs if not cats[s["category_id"]]["isthing"]]
        assert 1 <= len(stuff_cats) == len(set(stuff_cats))  # one segment per stuff class
        assert any(cats[s["category_id"]]["isthing"] for s in segs)
        sem = np.asarray(Image.open(os.path.join(paths["sem_seg_root"], os.path.splitext(ann["file_name"])[0]
                                                 + ".png")))
        assert sem.shape == ids.shape and sem.dtype == np.uint8
        assert set(np.unique(sem).tolist()) <= set(range(len(SYNTHETIC_CATEGORIES))) | {255}
        for s in segs:
            mask = ids == s["id"]
            assert s["area"] == int(mask.sum()) > 0 and s["iscrowd"] == 0
            ys, xs = np.nonzero(mask)
            assert s["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]
            assert (sem[mask] == contiguous[s["category_id"]]).all()
            n_things += cats[s["category_id"]]["isthing"]

    with open(paths["instance_json"]) as f:
        inst = json.load(f)
    assert {c["id"] for c in inst["categories"]} == {c["id"] for c in SYNTHETIC_CATEGORIES if c["isthing"]}
    assert len(inst["annotations"]) == n_things and len({a["id"] for a in inst["annotations"]}) == n_things
    by_image = {a["image_id"]: a for a in pan["annotations"]}
    for a in inst["annotations"]:
        assert cats[a["category_id"]]["isthing"] and a["iscrowd"] == 0
        ids = _rgb2id(Image.open(os.path.join(paths["panoptic_root"], by_image[a["image_id"]]["file_name"]))
                      .convert("RGB"))
        mask = mask_util.decode(a["segmentation"]).astype(bool)
        seg_ids = np.unique(ids[mask])
        assert len(seg_ids) == 1 and (ids == seg_ids[0]).sum() == mask.sum() == a["area"]


def test_generation_is_reproducible_and_splits_differ(data_dir, tmp_path):
    again = str(tmp_path / "again")
    ts.write_split(again, "val", 3, seed=0, size=SIZE)
    for sub in ("image_root", "panoptic_root"):
        for name in ("000000.png", "000002.png"):
            a = np.asarray(Image.open(os.path.join(synthetic_paths(data_dir, "val")[sub], name)))
            b = np.asarray(Image.open(os.path.join(synthetic_paths(again, "val")[sub], name)))
            assert np.array_equal(a, b)
    train0 = np.asarray(Image.open(os.path.join(synthetic_paths(data_dir, "train")["image_root"], "000000.png")))
    val0 = np.asarray(Image.open(os.path.join(synthetic_paths(data_dir, "val")["image_root"], "000000.png")))
    assert not np.array_equal(train0, val0)
    # --reuse-data keeps matching data, regenerates otherwise
    assert not ts.generate_dataset(data_dir, num_train=6, num_val=3, seed=0, size=SIZE, reuse=True)
    samples = ts.write_samples(str(tmp_path / "samples"), 2, seed=0, size=96)
    assert [np.asarray(Image.open(p)).shape for p in samples] == [(96, 96, 3)] * 2


def test_registration_and_training_mapper(registered, data_dir):
    train, val = registered
    assert (train, val) == (PREFIX + "synthetic_panoptic_train", PREFIX + "synthetic_panoptic_val")
    meta = MetadataCatalog.get(val)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == [0, 1, 2, 3]
    assert meta.stuff_classes == [c["name"] for c in SYNTHETIC_CATEGORIES]
    assert meta.json_file == synthetic_paths(data_dir, "val")["instance_json"]
    records = DatasetCatalog.get(train)
    assert len(records) == 6 and all(os.path.isfile(r["sem_seg_file_name"]) for r in records)
    cfg = _cfg(True, ["DATASETS.TRAIN", f"('{train}',)"])
    mapper = build_dataset_mapper(cfg, is_train=True)
    out = mapper(records[0])
    train_size = cfg.INPUT.MIN_SIZE_TRAIN[0]  # resized to the training size
    assert tuple(out["image"].shape) == (3, train_size, train_size)
    assert len(out["text"]) == cfg.MODEL.ONE_FORMER.NUM_OBJECT_QUERIES - cfg.MODEL.TEXT_ENCODER.N_CTX
    assert len(out["instances"]) > 0


# ---------------------------------------------------------------------------------------------------------- config


def test_config_loads_with_defaults_for_the_demo():
    cfg = _cfg(False)
    assert cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.META_ARCHITECTURE == "OneFormer"
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == len(SYNTHETIC_CATEGORIES)
    assert tuple(cfg.DATASETS.TRAIN) == ("synthetic_panoptic_train",)
    assert tuple(cfg.DATASETS.TEST_PANOPTIC) == tuple(cfg.DATASETS.TEST_INSTANCE) == tuple(
        cfg.DATASETS.TEST_SEMANTIC) == ("synthetic_panoptic_val",)
    assert cfg.MODEL.TEST.PANOPTIC_ON and cfg.MODEL.TEST.INSTANCE_ON and cfg.MODEL.TEST.SEMANTIC_ON
    # the unprefixed names are registered by the registration module (paths under $DETECTRON2_DATASETS)
    assert "synthetic_panoptic_val" in DatasetCatalog.list()


def test_model_builds_trains_a_step_and_infers_every_task(registered):
    train, _ = registered
    torch.manual_seed(0)
    cfg = _cfg(True, ["DATASETS.TRAIN", f"('{train}',)"])
    model = build_model(cfg)
    mapper = build_dataset_mapper(cfg, is_train=True)
    batch = [mapper(r) for r in DatasetCatalog.get(train)[:2]]
    losses = model(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()

    cfg = _cfg(False, ["DATASETS.TRAIN", f"('{train}',)"])
    model = build_model(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params * 4 / 2**20 < 10  # float32 weights under 10 MB
    image = torch.as_tensor(np.array(Image.open(DatasetCatalog.get(train)[0]["file_name"]))).permute(2, 0, 1)
    with torch.no_grad():
        for task in ("panoptic", "instance", "semantic"):
            out = model([{"image": image, "task": task}])[0]
            assert out["sem_seg"].shape == (len(SYNTHETIC_CATEGORIES), SIZE, SIZE)
            assert out["panoptic_seg"][0].shape == (SIZE, SIZE)
            assert out["instances"].image_size == (SIZE, SIZE)


def test_export_drops_the_text_branch(registered, tmp_path):
    train, _ = registered
    cfg = _cfg(True, ["DATASETS.TRAIN", f"('{train}',)"])
    model = build_model(cfg)
    src = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 3}, src)
    dst = ts.export_weights(str(src), str(tmp_path / "out" / "w.pth"))
    state = torch.load(dst, map_location="cpu", weights_only=True)
    infer = build_model(_cfg(False, ["DATASETS.TRAIN", f"('{train}',)"]))
    assert list(state) == ["model"] and set(state["model"]) == set(infer.state_dict())
    half = torch.load(ts.export_weights(str(src), str(tmp_path / "h.pth"), fp16=True), weights_only=True)["model"]
    assert all(v.dtype == torch.float16 for v in half.values() if v.is_floating_point())
    incompatible = infer.load_state_dict(half, strict=True)  # float16 tensors are cast into the float32 model
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert all(p.dtype == torch.float32 for p in infer.parameters())


# ---------------------------------------------------------------------------------------------------------- assets


@pytest.mark.skipif(not CHECKPOINT.is_file(), reason="demo checkpoint not generated yet")
def test_bundled_checkpoint_is_small_and_loads_cleanly():
    from oneformer.utils.checkpoint import OneFormerCheckpointer

    assert CHECKPOINT.stat().st_size <= 10 * 2**20
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert list(state) == ["model"]
    model = build_model(_cfg(False)).eval()
    checkpointer = OneFormerCheckpointer(model)
    checkpointer.load(str(CHECKPOINT))
    assert checkpointer.last_report.clean, checkpointer.last_report.format()


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="demo samples not generated yet")
def test_bundled_samples():
    files = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    assert 3 <= len(files) <= 5
    for p in files:
        img = Image.open(p)
        assert img.mode == "RGB" and img.size == (256, 256)

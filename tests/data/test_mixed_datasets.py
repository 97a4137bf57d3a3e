"""DATASETS.TRAIN with a panoptic, a semantic-only and an instance-only source (oneformer/data/mixed_datasets.py):
every batch element carries the task and targets its source allows, instance class ids are remapped into the shared
label space by name, sampling weights set the sources' shares, bad settings are named; a tiny model trains on it.

The three sources are tests/data/datasets/fake_data.make_custom_panoptic images (6x8: ground on top, a cat
bottom-left, a dog bottom-right; classes 0 ground, 1 cat, 2 sky, 3 dog; things cat and dog)."""
import collections
import json
import logging
import os

import numpy as np
import pytest
from detectron2.data.samplers import RepeatFactorTrainingSampler

from oneformer import train_net
from oneformer.data.datasets import register_instance_dataset, register_panoptic_dataset, register_semantic_dataset
from oneformer.data.mixed_datasets import build_mixed_train_loader, sampling_repeat_factors, task_probs_for
from oneformer.engine import add_oneformer_engine_config
from tests.data.datasets import fake_data as fd
from tests.tiny import tiny_cfg

CLASSES = ["ground", "cat", "sky", "dog"]
PAN = fd.paint([(1, (0, 3, 0, 8)), (2, (3, 6, 0, 4)), (3, (3, 6, 4, 8))])  # the layout make_custom_panoptic paints
EXPECTED_MASKS = {0: PAN == 1, 1: PAN == 2, 3: PAN == 3}


def _write_instance_json(root, files):
    """COCO instances json of the cat and dog of each image; category ids 20/40 become thing ids 0/1."""
    images, anns = [], []
    for img in files["data"]["images"]:
        images.append(dict(img))
        for sid, cid in ((2, 20), (3, 40)):
            mask = PAN == sid
            ys, xs = np.nonzero(mask)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cid, "iscrowd": 0,
                         "area": int(mask.sum()), "segmentation": fd.rle_of(mask),
                         "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]})
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns,
                   "categories": [{"id": 20, "name": "cat"}, {"id": 40, "name": "dog"}]}, f)
    return path


@pytest.fixture
def sources(tmp_path, unique_prefix):
    """(panoptic, semantic, instance) dataset names, 2 images each."""
    names = [unique_prefix + k for k in ("pan", "sem", "ins")]
    pan = fd.make_custom_panoptic(str(tmp_path / "pan"))
    register_panoptic_dataset(names[0], image_root=pan["image_root"], panoptic_root=pan["panoptic_root"],
                              panoptic_json=pan["panoptic_json"], sem_seg_root=pan["sem_seg_root"])
    sem = fd.make_custom_panoptic(str(tmp_path / "sem"))
    register_semantic_dataset(names[1], image_root=sem["image_root"], sem_seg_root=sem["sem_seg_root"],
                              stuff_classes=CLASSES, image_ext="png")
    ins = fd.make_custom_panoptic(str(tmp_path / "ins"))
    register_instance_dataset(names[2], image_root=ins["image_root"],
                              json_file=_write_instance_json(str(tmp_path / "ins"), ins))
    return names


def _cfg(names, size=6, max_size=8, **datasets):
    cfg = tiny_cfg(is_train=True)
    add_oneformer_engine_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(CLASSES)
    cfg.DATASETS.TRAIN = tuple(names)
    cfg.DATASETS.TEST = ()
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    cfg.INPUT.DATASET_MAPPER_NAME = "oneformer_unified"
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = max_size
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.SOLVER.IMS_PER_BATCH = 3
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.SEED = 3
    for key, value in datasets.items():
        cfg.DATASETS[key] = value
    return cfg


def _elements(loader, n):
    it = iter(loader)
    return [x for _ in range(n) for x in next(it)]


def test_batches_carry_each_sources_task_and_targets(sources, caplog):
    pan, sem, ins = sources
    cfg = _cfg(sources, TRAIN_TASK_PROBS=((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)))
    with caplog.at_level(logging.INFO, logger="oneformer"):
        elements = _elements(build_mixed_train_loader(cfg), 6)
    assert f"{sem}: semantic, 2 images, 33.3% of the samples, tasks semantic/instance/panoptic 1.00/0.00/0.00" \
        in caplog.text
    seen = collections.Counter(e["dataset_name"] for e in elements)
    assert set(seen) == {pan, sem, ins}
    for e in elements:
        inst = e["instances"]
        classes, masks = inst.gt_classes.tolist(), inst.gt_masks.numpy()
        if e["dataset_name"] == pan:  # panoptic task: one mask per segment
            assert e["task"] == "The task is panoptic" and sorted(classes) == [0, 1, 3]
            assert e["text"][:3] == ["a photo with a ground", "a photo with a cat", "a photo with a dog"]
        elif e["dataset_name"] == sem:  # semantic only, from the label PNG
            assert e["task"] == "The task is semantic" and classes == [0, 1, 3]
            assert e["text"][-1] == "a semantic photo"
            np.testing.assert_array_equal(e["sem_seg"].numpy(), np.where(PAN == 1, 0, np.where(PAN == 2, 1, 3)))
        else:  # instance only; cat/dog thing ids 0/1 of the json are classes 1/3 of the shared label space
            assert e["task"] == "The task is instance" and classes == [1, 3] and "sem_seg" not in e
            assert e["text"][:2] == ["a photo with a cat", "a photo with a dog"]
            assert e["text"][-1] == "an instance photo"
            assert e["thing_ids"] == [1, 3]
        for c, m in zip(classes, masks):
            np.testing.assert_array_equal(m, EXPECTED_MASKS[c])


def test_defaults_by_kind(sources):
    """No TRAIN_TASK_PROBS: the panoptic source samples all tasks (INPUT.TASK_PROB), the others only their own."""
    cfg = _cfg(sources)  # kinds differ: the trainer picks the mixed loader by itself
    np.random.seed(0)
    elements = _elements(train_net.Trainer.build_train_loader(cfg), 12)
    tasks = collections.defaultdict(set)
    for e in elements:
        tasks[e["dataset_name"]].add(e["task"][len("The task is "):])
    assert tasks[sources[1]] == {"semantic"} and tasks[sources[2]] == {"instance"}
    assert len(tasks[sources[0]]) >= 2  # 4 or so draws of 3 equally likely tasks
    assert task_probs_for("panoptic", None, 0.33, 0.66, "x") == pytest.approx((0.33, 0.33, 0.34))


def test_sampling_weights_set_the_shares(sources):
    factors = sampling_repeat_factors([2, 2, 2], [1.0, 0.0, 3.0])
    assert factors.tolist() == pytest.approx([0.75, 0.75, 0, 0, 2.25, 2.25])
    assert sampling_repeat_factors([1, 3], [1, 1]).tolist() == pytest.approx([2.0, 2 / 3, 2 / 3, 2 / 3])
    sampler = iter(RepeatFactorTrainingSampler(factors, seed=0))
    counts = collections.Counter(next(sampler) // 2 for _ in range(2000))
    assert counts[1] == 0 and counts[2] / 2000 == pytest.approx(0.75, abs=0.04)
    # through the loader: only the panoptic and instance sources are drawn
    elements = _elements(build_mixed_train_loader(_cfg(sources, TRAIN_SAMPLING_WEIGHTS=(1.0, 0.0, 3.0))), 10)
    names = collections.Counter(e["dataset_name"] for e in elements)
    assert sources[1] not in names and names[sources[2]] > names[sources[0]]


@pytest.mark.parametrize("change, message", [
    ({"TRAIN_TASK_PROBS": ((0, 0, 1), (0.5, 0, 0.5), (0, 1, 0))}, "a semantic-only dataset can train only the "
                                                                  "semantic task"),
    ({"TRAIN_TASK_PROBS": ((0, 0, 1), (1, 0, 0), (0, 0.5, 0.5))}, "an instance-only dataset can train only"),
    ({"TRAIN_TASK_PROBS": ((0, 0, 0.9), (1, 0, 0), (0, 1, 0))}, "sums to 0.9, not 1"),
    ({"TRAIN_TASK_PROBS": ((0, 0, 1),)}, "TRAIN_TASK_PROBS has 1 entries for 3 datasets"),
    ({"TRAIN_SAMPLING_WEIGHTS": (1.0, 2.0)}, "TRAIN_SAMPLING_WEIGHTS has 2 entries for 3 datasets"),
    ({"TRAIN_SAMPLING_WEIGHTS": (0.0, 0.0, 0.0)}, "must be >= 0 with a positive sum"),
])
def test_bad_settings_are_named(sources, change, message):
    with pytest.raises(ValueError, match=message):
        build_mixed_train_loader(_cfg(sources, **change))


def test_label_spaces_must_agree(sources, tmp_path, unique_prefix):
    other = fd.make_custom_panoptic(str(tmp_path / "other"))
    name = unique_prefix + "sem_other"
    register_semantic_dataset(name, image_root=other["image_root"], sem_seg_root=other["sem_seg_root"],
                              stuff_classes=["ground", "cat", "cloud", "dog"], image_ext="png")
    with pytest.raises(ValueError, match=rf"'{name}' has other classes than '{sources[0]}' \(4 vs 4; class 2: "
                                         r"'cloud' vs 'sky'\)"):
        build_mixed_train_loader(_cfg([sources[0], name]))
    bird = unique_prefix + "ins_bird"
    register_instance_dataset(bird, image_root=other["image_root"],
                              json_file=_write_instance_json(str(tmp_path / "other"), other),
                              categories=[{"id": 20, "name": "bird"}, {"id": 40, "name": "dog"}])
    with pytest.raises(ValueError, match=f"class 'bird' of instance dataset '{bird}' is not a class of"):
        build_mixed_train_loader(_cfg([sources[0], bird]))
    sky = unique_prefix + "ins_sky"
    register_instance_dataset(sky, image_root=other["image_root"],
                              json_file=_write_instance_json(str(tmp_path / "other"), other),
                              categories=[{"id": 20, "name": "sky"}, {"id": 40, "name": "dog"}])
    with pytest.raises(ValueError, match="is a stuff class in"):
        build_mixed_train_loader(_cfg([sources[0], sky]))


def test_tiny_model_trains_on_mixed_data(sources, tmp_path):
    cfg = _cfg(sources, size=64, max_size=96, TRAIN_SAMPLING_WEIGHTS=(1.0, 1.0, 1.0))
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 2 and np.isfinite(losses).all()


@pytest.fixture
def synthetic_root(tmp_path):
    """The synthetic shapes (4 training images, 64x64) registered under their usual names, restored afterwards."""
    from oneformer.data.datasets.register_synthetic import register_all_synthetic, register_synthetic_views
    from tests.tiny import load_script

    root = str(tmp_path / "datasets")
    assert load_script("train_synthetic", "tools").generate_dataset(os.path.join(root, "synthetic_shapes"),
                                                                      num_train=4, num_val=1, seed=0, size=64)
    register_all_synthetic(root)
    register_synthetic_views(root)
    yield root
    register_all_synthetic()
    register_synthetic_views()


def test_example_config(synthetic_root, tmp_path):
    """configs/synthetic/oneformer_synthetic_mixed.yaml as documented: each source's images come with its tasks."""
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", "configs/synthetic/oneformer_synthetic_mixed.yaml", "MODEL.DEVICE", "cpu",
         "SOLVER.IMS_PER_BATCH", "4", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64"])
    cfg = train_net.build_config(args)
    assert cfg.DATASETS.TRAIN_SAMPLING_WEIGHTS == (0.5, 0.25, 0.25)
    np.random.seed(0)
    elements = _elements(train_net.Trainer.build_train_loader(cfg), 8)
    tasks = collections.defaultdict(set)
    for e in elements:
        tasks[e["dataset_name"]].add(e["task"][len("The task is "):])
        if e["dataset_name"] == "synthetic_instance_train":  # thing ids 0..3 are the same ids in the panoptic space
            assert set(e["instances"].gt_classes.tolist()) <= {0, 1, 2, 3}
    assert tasks["synthetic_sem_seg_train"] == {"semantic"} and tasks["synthetic_instance_train"] == {"instance"}
    counts = collections.Counter(e["dataset_name"] for e in elements)
    assert counts["synthetic_panoptic_train"] > max(counts["synthetic_sem_seg_train"],
                                                    counts["synthetic_instance_train"]) / 2

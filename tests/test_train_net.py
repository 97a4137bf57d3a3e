"""train_net.py end to end on a tiny COCO-format panoptic dataset (the real on-disk layout under
$DETECTRON2_DATASETS/coco) with a ~5M-parameter Swin OneFormer on CPU: training lowers the loss, two CPU processes
(gloo) share their batches in the contrastive loss, an interrupted run resumes at its checkpoint, --eval-only prints
PQ / mIoU / AP.

In-process tests register the dataset under a prefix; the subprocess tests point $DETECTRON2_DATASETS at it and use
the built-in names.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from PIL import Image

from oneformer import train_net
from oneformer.data.datasets import register_all
from oneformer.engine import add_oneformer_engine_config
from tests.data.datasets import fake_data as fd
from tests.engine.contrastive_probe import probe_file
from tests.tiny import REPO, tiny_cfg, unregister_prefix

H, W = 32, 48
TRAIN = "coco_2017_train_panoptic_with_sem_seg"
VAL = "coco_2017_val_panoptic_with_sem_seg"
CATS = {1001: 187, 2002: 1, 3003: 18}  # segment id -> COCO id: sky-other-merged (stuff), person, dog
COLORS = {187: (60, 120, 230), 1: (230, 60, 60), 18: (60, 200, 60)}


# ---------------------------------------------------------------------------------------------------------- data


def _write_split(coco, split, image_ids):
    contiguous = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
    images, pan_anns, inst_anns = [], [], []
    rng = np.random.RandomState(len(image_ids))
    for image_id in image_ids:
        stem = f"{image_id:012d}"
        left, right = (2002, 3003) if image_id % 2 else (3003, 2002)
        ids = fd.paint([(1001, (0, H // 2, 0, W)), (left, (H // 2, H, 0, W // 2)), (right, (H // 2, H, W // 2, W))],
                       h=H, w=W)
        img = np.zeros((H, W, 3), dtype=np.uint8)
        for sid, cid in CATS.items():
            img[ids == sid] = COLORS[cid]
        img = np.clip(img + rng.randint(-20, 21, img.shape), 0, 255).astype(np.uint8)
        path = os.path.join(coco, f"{split}2017", stem + ".png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(img).save(path)
        fd.write_panoptic_png(os.path.join(coco, f"panoptic_{split}2017", stem + ".png"), ids)
        sem = np.full((H, W), 255, dtype=np.uint8)
        for sid, cid in CATS.items():
            sem[ids == sid] = contiguous[cid]
        fd.write_label(os.path.join(coco, f"panoptic_semseg_{split}2017", stem + ".png"), sem)
        images.append({"id": image_id, "file_name": stem + ".png", "height": H, "width": W})
        pan_anns.append({"image_id": image_id, "file_name": stem + ".png", "segments_info": fd.segments_of(ids, CATS)})
        for sid in (2002, 3003):
            mask = ids == sid
            ys, xs = np.nonzero(mask)
            inst_anns.append({"id": len(inst_anns) + 1, "image_id": image_id, "category_id": CATS[sid], "iscrowd": 0,
                              "area": int(mask.sum()), "segmentation": fd.rle_of(mask),
                              "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                       float(ys.max() - ys.min() + 1)]})
    fd.write_json(os.path.join(coco, "annotations", f"panoptic_{split}2017.json"),
                  {"images": images, "annotations": pan_anns, "categories": COCO_CATEGORIES})
    inst_name = "instances_train2017.json" if split == "train" else "panoptic2instances_val2017.json"
    things = [c for c in COCO_CATEGORIES if c["isthing"]]
    fd.write_json(os.path.join(coco, "annotations", inst_name),
                  {"images": images, "annotations": inst_anns, "categories": things})


def make_tiny_coco(root):
    """coco/ in the layout OneFormer's COCO registration reads: 2 training images, 1 validation image (32x48), each
    a sky band over a person and a dog (sides alternate), with panoptic PNGs/json, semantic PNGs and instance jsons."""
    coco = os.path.join(root, "coco")
    _write_split(coco, "train", [1, 2])
    _write_split(coco, "val", [3])
    return root


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp("datasets")))


@pytest.fixture(scope="module")
def prefix(coco_root):
    """The tiny COCO registered in this process as '<prefix>coco_2017_*' (removed afterwards)."""
    p = "trainnet_"
    register_all(coco_root, prefix=p)
    yield p
    unregister_prefix(p)


def train_cfg(output_dir, prefix="", max_iter=6):
    """The COCO Swin-T config shrunk to tests.tiny sizes, 64x64 inputs, 2 images per batch, CPU, no AMP."""
    cfg = tiny_cfg(base="configs/coco/swin/oneformer_swin_tiny_bs16_50ep.yaml", is_train=True)
    add_oneformer_engine_config(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133
    cfg.DATASETS.TRAIN = (prefix + TRAIN,)
    cfg.DATASETS.TEST = ()
    cfg.DATASETS.TEST_PANOPTIC = (prefix + VAL,)
    cfg.DATASETS.TEST_SEMANTIC = (prefix + VAL,)
    cfg.DATASETS.TEST_INSTANCE = (prefix + VAL,)
    cfg.INPUT.IMAGE_SIZE = 64
    cfg.INPUT.MIN_SCALE = 1.0
    cfg.INPUT.MAX_SCALE = 1.0
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.SOLVER.AMP.ENABLED = False
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 1
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def _args(*argv):
    return train_net.default_argument_parser().parse_args(list(argv))


def _write_yaml(cfg, path):
    with open(path, "w") as f:
        f.write(cfg.dump())
    return str(path)


# ---------------------------------------------------------------------------------------------------------- tests


def test_tiny_model_trains_and_loss_decreases(prefix, tmp_path):
    cfg = train_cfg(tmp_path, prefix, max_iter=8)
    cfg.freeze()
    seed_all_rng(0)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 8 and np.isfinite(losses).all()
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.9 * first, losses
    # the writers ran (console, metrics.json, TensorBoard) and the end-of-training evaluation used the panoptic set
    assert os.path.isfile(tmp_path / "metrics.json")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))
    assert {"panoptic_seg", "sem_seg", "segm"} <= set(trainer._last_eval_results)


class _Interrupt(HookBase):
    """Simulates a crash at the start of iteration ``at``."""

    def __init__(self, at):
        self.at = at

    def before_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt("simulated interruption")


@pytest.fixture(scope="module")
def resumed_run(coco_root, prefix, tmp_path_factory):
    """Run 1 (MAX_ITER 8, CHECKPOINT_PERIOD 3) is interrupted at iteration 4, after model_0000002.pth; run 2 is
    `train_net.py --resume SOLVER.MAX_ITER 6` on the same OUTPUT_DIR."""
    out = tmp_path_factory.mktemp("resume")
    cfg = train_cfg(out, prefix, max_iter=8)
    cfg.SOLVER.CHECKPOINT_PERIOD = 3
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()  # no evaluation
    cfg_file = _write_yaml(cfg, out / "tiny.yaml")
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.register_hooks([_Interrupt(at=4)])
    trainer.resume_or_load(resume=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    del trainer
    with open(out / "last_checkpoint") as f:
        interrupted_at = f.read().strip()
    train_net.main(_args("--config-file", cfg_file, "--resume", "SOLVER.MAX_ITER", "6"))
    return {"out": out, "interrupted_at": interrupted_at, "cfg_file": cfg_file}


def test_interrupted_run_resumes_at_its_checkpoint(resumed_run):
    out = resumed_run["out"]
    assert resumed_run["interrupted_at"] == "model_0000002.pth"
    with open(out / "log.txt") as f:
        log = f.read()
    assert "model_0000002.pth" in log.split("Starting training from iteration")[0].rsplit("Loading from", 1)[-1]
    assert "Starting training from iteration 3" in log
    assert "Resuming at iteration 3: LR schedule WarmupMultiStepLR to SOLVER.MAX_ITER 6;" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 5
    state = final["trainer"]
    # scheduler and optimizer continued from the checkpoint (3 steps before the interruption + 3 after), not from 0
    assert state["hooks"]["LRScheduler"]["last_epoch"] == 6
    steps = {float(s["step"]) for s in state["_trainer"]["optimizer"]["state"].values()}
    assert steps == {6.0}


def test_resume_with_another_max_iter_follows_the_new_schedule(prefix, tmp_path):
    """`--resume SOLVER.MAX_ITER <larger>` of a WarmupPolyLR run (the checkpoint keeps the old length: math.pow of a
    negative number), then a MAX_ITER the checkpoint has already passed."""
    cfg = train_cfg(tmp_path, prefix, max_iter=2)
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.WARMUP_ITERS = "WarmupPolyLR", 0
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    cfg_file = _write_yaml(cfg, tmp_path / "tiny.yaml")
    train_net.main(_args("--config-file", cfg_file))
    train_net.main(_args("--config-file", cfg_file, "--resume", "SOLVER.MAX_ITER", "4"))
    log = (tmp_path / "log.txt").read_text()
    assert ("Resuming at iteration 2: LR schedule WarmupPolyLR to SOLVER.MAX_ITER 4 (the checkpoint's schedule ran "
            "to 2); learning rate now 5.359e-05, 0.0005359.") in log  # 1e-3 * (1 - 2/4) ** 0.9, backbone x 0.1
    with open(tmp_path / "metrics.json") as f:
        last = [json.loads(line) for line in f][-1]
    assert last["iteration"] == 3 and last["lr"] == pytest.approx(1e-3 * (1 - 3 / 4) ** 0.9)
    train_net.main(_args("--config-file", cfg_file, "--resume", "SOLVER.MAX_ITER", "3"))
    assert ("The checkpoint was saved after 4 iterations and SOLVER.MAX_ITER is 3: nothing left to train"
            in (tmp_path / "log.txt").read_text())


def test_eval_only_prints_pq_miou_ap(resumed_run, coco_root):
    """`train_net.py --eval-only` (panoptic task: PQ, mIoU and mask AP on the panoptic val set) with semantic TTA."""
    out = resumed_run["out"]
    cmd = [sys.executable, "train_net.py", "--eval-only", "--config-file", resumed_run["cfg_file"],
           "MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(out / "eval"),
           "DATASETS.TRAIN", f"('{TRAIN}',)", "DATASETS.TEST_PANOPTIC", f"('{VAL}',)",
           "DATASETS.TEST_SEMANTIC", f"('{VAL}',)", "MODEL.IS_TRAIN", "False",
           "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 64)", "TEST.AUG.MAX_SIZE", "128"]
    proc = _run(cmd, coco_root, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Task: panoptic_seg" in text and "PQ,SQ,RQ" in text
    assert "Task: sem_seg" in text and "mIoU" in text
    assert "Task: segm" in text and "AP,AP50" in text
    assert "Task: sem_seg_TTA" in text
    assert "text-branch tensors ignored" in text  # OneFormerCheckpointer's report: trained with, evaluated without


def _run(cmd, datasets_root, timeout):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_cpu_processes_share_batches_in_contrastive_loss(coco_root, tmp_path):
    """`train_net.py --num-gpus 2` on CPU: gloo, 1 image per process, the contrastive loss gathers both."""
    cfg = train_cfg(tmp_path, "", max_iter=3)
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    cfg_file = _write_yaml(cfg, tmp_path / "tiny.yaml")
    cmd = [sys.executable, "train_net.py", "--num-gpus", "2", "--dist-url", "auto", "--config-file", cfg_file,
           "EXTRA_HOOKS", "['tests.engine.contrastive_probe:build_hook']"]
    proc = _run(cmd, coco_root, timeout=150)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "World size: 2" in text
    for rank in (0, 1):
        with open(probe_file(str(tmp_path), rank)) as f:
            calls = [json.loads(line) for line in f]
        assert {c["iter"] for c in calls} == {0, 1, 2}
        # image and text embeddings gathered every iteration: 2 processes x 1 image, own rows at rank * B
        assert all(c["local"] == 1 and c["gathered"] == 2 and c["own_rows_in_place"] for c in calls), calls
    with open(tmp_path / "metrics.json") as f:
        last = [json.loads(line) for line in f][-1]
    # with one image per process and no gathering the loss would be exactly 0 (a 1x1 softmax)
    assert last["iteration"] == 2 and last["loss_contrastive"] > 0


def _custom_cfg(out, **datasets):
    """train_cfg for the 4-class data of tests/data/datasets/fake_data.make_custom_panoptic: 1 iteration."""
    cfg = train_cfg(out, max_iter=1)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 4
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    for key, value in datasets.items():
        cfg.DATASETS[key] = value
    return cfg


def test_readme_finetuning_recipe_without_instance_json_trains_and_evaluates(tmp_path, unique_prefix):
    """register_panoptic_dataset as the README writes it (no instance_json): AP is skipped, PQ and mIoU are not."""
    from oneformer.data.datasets import register_panoptic_dataset

    files = fd.make_custom_panoptic(str(tmp_path / "data"))
    name = unique_prefix + "my_panoptic"
    register_panoptic_dataset(name, image_root=files["image_root"], panoptic_root=files["panoptic_root"],
                              panoptic_json=files["panoptic_json"], sem_seg_root=files["sem_seg_root"])
    cfg = _custom_cfg(tmp_path / "out", TRAIN=(name,), TEST_PANOPTIC=(name,))
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # was: TypeError in iopath (COCOEvaluator got json_file=None) after training
    assert set(trainer._last_eval_results) == {"panoptic_seg", "sem_seg"}


def test_semantic_only_dataset_trains_and_evaluates(tmp_path, unique_prefix):
    """Only DATASETS.TEST_SEMANTIC set (was: "No evaluation dataset"); --eval-only MODEL.TEST.TASK semantic (was: the
    model asked to register the dataset for thing_dataset_id_to_contiguous_id)."""
    from oneformer.data.datasets import register_semantic_dataset

    files = fd.make_custom_panoptic(str(tmp_path / "data"))
    name = unique_prefix + "my_semantic"
    register_semantic_dataset(name, image_root=files["image_root"], sem_seg_root=files["sem_seg_root"],
                              stuff_classes=["ground", "cat", "sky", "dog"], image_ext="png")
    cfg = _custom_cfg(tmp_path / "out", TRAIN=(name,), TEST_SEMANTIC=(name,))
    cfg.INPUT.DATASET_MAPPER_NAME = "oneformer_semantic"
    cfg_file = _write_yaml(cfg, tmp_path / "semantic.yaml")
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert set(trainer._last_eval_results) == {"sem_seg"}
    res = train_net.main(_args("--config-file", cfg_file, "--eval-only", "MODEL.TEST.TASK", "semantic",
                               "MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth")))
    assert set(res) == {"sem_seg"}


def _readme_launcher():
    """The my_train.py of the README, as written there."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    start = readme.index("```python\n# my_train.py") + len("```python\n")
    return readme[start:readme.index("```", start)]


def test_readme_launcher_and_validator_run_from_the_users_folder(tmp_path):
    """The README's launcher and `validate_dataset.py --import my_train`, run in a folder of the user's own where only
    the package is importable (as when installed), with `--config-file configs/...` as the README writes it."""
    site = tmp_path / "site"
    site.mkdir()
    os.symlink(os.path.join(REPO, "oneformer"), site / "oneformer")  # the package without the repository root
    user = tmp_path / "user"
    for split in ("train", "val"):
        files = fd.make_custom_panoptic(str(user / "data" / split))
        os.rename(files["sem_seg_root"], user / "data" / split / "semantic")
    (user / "my_train.py").write_text(_readme_launcher())
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "my_panoptic_train",
                           "--import", "my_train", "--allow-warnings"], cwd=user, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]  # was: No module named 'my_train'
    assert "OK: 1 dataset(s) checked" in proc.stdout
    proc = subprocess.run([sys.executable, "my_train.py", "--config-file", "configs/synthetic/oneformer_synthetic.yaml",
                           "--eval-only", "MODEL.DEVICE", "cpu",
                           "MODEL.WEIGHTS", os.path.join(REPO, "demo/assets/oneformer_synthetic.pth"),
                           "DATASETS.TRAIN", "('my_panoptic_train',)", "DATASETS.TEST_PANOPTIC", "('my_panoptic_val',)",
                           "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "4", "OUTPUT_DIR", str(tmp_path / "out")],
                          cwd=user, env=env, capture_output=True, text=True, timeout=180)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]  # was: No module named 'train_net'
    assert "the model zoo's" in text and "Task: panoptic_seg" in text and "Task: sem_seg" in text


# ---------------------------------------------------------------------------------------------------------- pieces


def test_eval_datasets_follow_model_test_task(tmp_path):
    cfg = train_cfg(tmp_path)
    cfg.DATASETS.TEST_PANOPTIC, cfg.DATASETS.TEST_INSTANCE = ("pan",), ("ins1", "ins2")
    cfg.DATASETS.TEST_SEMANTIC, cfg.DATASETS.TEST = ("",), ("fallback",)
    assert train_net.eval_dataset_names(cfg, "panoptic") == ("pan",)
    assert train_net.eval_dataset_names(cfg, "The task is instance") == ("ins1", "ins2")
    assert train_net.eval_dataset_names(cfg, "semantic") == ("fallback",)  # empty list -> DATASETS.TEST
    assert train_net.eval_dataset_names(cfg, "detection") == ("pan",)  # unknown task -> panoptic
    cfg.MODEL.TEST.TASK = "instance"
    assert train_net.eval_dataset_names(cfg) == ("ins1", "ins2")
    cfg.MODEL.TEST.TASK = "all"  # every task from its own token: the panoptic datasets
    assert train_net.eval_dataset_names(cfg) == ("pan",) and train_net.eval_plan(cfg) == ("all", ("pan",))


def test_compiled_training_gives_the_eager_losses(prefix, tmp_path):
    """MODEL.COMPILE True: the trainer's steps run the network through torch.compile (aot_eager here: the autograd
    graph without inductor's code generation, for time) and log the eager run's losses."""
    histories = {}
    for compile in (False, True):
        cfg = train_cfg(tmp_path / str(compile), prefix, max_iter=2)
        cfg.MODEL.ONE_FORMER.DROPOUT = 0.0  # compiled and eager graphs draw dropout masks differently
        cfg.MODEL.COMPILE = compile
        cfg.MODEL.COMPILE_BACKEND = "aot_eager"
        cfg.freeze()
        seed_all_rng(0)
        torch._dynamo.reset()
        trainer = train_net.Trainer(cfg)
        assert (trainer.model.compiled is not None) == compile
        trainer.resume_or_load(resume=False)
        trainer.train()
        histories[compile] = [v for v, _ in trainer.storage.history("total_loss").values()]
    torch._dynamo.reset()
    assert len(histories[True]) == 2
    np.testing.assert_allclose(histories[True], histories[False], rtol=1e-4, atol=1e-4)


def test_amp_bfloat16_and_extra_hooks(prefix, tmp_path):
    from detectron2.engine import AMPTrainer

    cfg = train_cfg(tmp_path, prefix)
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.PRECISION = "bfloat16"
    cfg.EXTRA_HOOKS = ["tests.engine.contrastive_probe:build_hook"]
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    assert isinstance(trainer._trainer, AMPTrainer) and trainer._trainer.precision == torch.bfloat16
    assert not trainer._trainer.grad_scaler.is_enabled()  # no loss scaling for bfloat16
    names = [type(h).__name__ for h in trainer._hooks]
    assert names.index("ContrastiveGatherProbe") < names.index("PeriodicWriter")  # before the writers
    assert type(trainer.checkpointer).__name__ == "OneFormerCheckpointer"
    assert trainer._hooks[names.index("PeriodicCheckpointer")].checkpointer is trainer.checkpointer
    with pytest.raises(ValueError, match="PRECISION"):
        train_net.Trainer(train_net._with(cfg, **{"SOLVER.AMP.PRECISION": "int8"}))


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_amp_on_cpu_trains_without_grad_scaler_warning(prefix, tmp_path, precision):
    """SOLVER.AMP.ENABLED on CPU: CPU autocast, no loss scaler, and no "GradScaler is enabled, but CUDA is not
    available" warning (Detectron2's AMPTrainer built torch.cuda.amp.GradScaler())."""
    import warnings

    cfg = train_cfg(tmp_path, prefix, max_iter=1)
    cfg.SOLVER.AMP.ENABLED = True
    cfg.SOLVER.AMP.PRECISION = precision
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    cfg.freeze()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = train_net.Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "GradScaler" in m or "torch.cuda.amp" in m], messages
    assert not trainer._trainer.grad_scaler.is_enabled()
    assert np.isfinite(trainer.storage.history("total_loss").latest())


def test_wandb_needs_the_package(tmp_path):
    try:
        import wandb  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("wandb is installed")
    with pytest.raises(ImportError, match="pip install wandb"):
        train_net.setup(_args("WANDB.ENABLED", "True", "OUTPUT_DIR", str(tmp_path)))


def test_extra_hooks_entries_must_name_a_factory():
    with pytest.raises(ValueError, match="package.module:factory"):
        train_net.load_extra_hooks(None, ["tests.engine.contrastive_probe.build_hook"])


def test_cuda_without_a_gpu_stops_before_launching(tmp_path, monkeypatch):
    """`train_net.py --num-gpus 2` with the default MODEL.DEVICE cuda on a machine without (enough) CUDA devices."""
    cfg = train_cfg(tmp_path)
    cfg.MODEL.DEVICE = "cuda"
    cfg_file = _write_yaml(cfg, tmp_path / "cuda.yaml")
    monkeypatch.setattr(train_net, "launch", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match=r"^train_net.py: no CUDA device \(asked for 'cuda'; .*\); add MODEL.DEVICE "
                                         r"cpu to the command line to train on CPU"):
        train_net.cli(["--num-gpus", "2", "--config-file", cfg_file])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"2 CUDA devices needed \('cuda', 2 processes\) but this machine has 1"):
        train_net.cli(["--num-gpus", "2", "--config-file", cfg_file])
    launched = []
    monkeypatch.setattr(train_net, "launch", lambda *a, **k: launched.append(a[1]))
    train_net.cli(["--num-gpus", "2", "--config-file", cfg_file, "MODEL.DEVICE", "cpu"])
    assert launched == [2]

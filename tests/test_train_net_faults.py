"""train_net.py under faults, on the tiny COCO data of tests/test_train_net.py: a run killed with SIGKILL mid-training
resumes with --resume from its last checkpoint at the right iteration; two seeded CPU runs give identical losses."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from oneformer import train_net
from oneformer.data.datasets import register_all
from tests.test_train_net import _args, _run, _write_yaml, make_tiny_coco, train_cfg  # noqa: F401
from tests.tiny import REPO, unregister_prefix

PREFIX = "faults_"


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return make_tiny_coco(str(tmp_path_factory.mktemp("datasets")))


@pytest.fixture(scope="module")
def prefix(coco_root):
    register_all(coco_root, prefix=PREFIX)
    yield PREFIX
    unregister_prefix(PREFIX)


def _wait_for(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.isfile(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def test_sigkilled_run_resumes_from_its_last_checkpoint(coco_root, tmp_path):
    out = tmp_path / "run"
    cfg = train_cfg(out, "", max_iter=1000)  # would run for minutes
    cfg.SOLVER.CHECKPOINT_PERIOD = 2  # first periodic checkpoint after iteration 1: model_0000001.pth
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()  # no evaluation
    os.makedirs(out)
    cfg_file = _write_yaml(cfg, out / "tiny.yaml")
    env = dict(os.environ, DETECTRON2_DATASETS=coco_root, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "train_net.py", "--config-file", cfg_file], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        found = _wait_for(out / "last_checkpoint", proc, timeout=90)
        time.sleep(0.3)  # now it is in the middle of a later iteration
        assert proc.poll() is None, "training ended before it was killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert found, err.decode()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    last = (out / "last_checkpoint").read_text()
    killed_at = torch.load(out / last, map_location="cpu", weights_only=True)["iteration"]  # a complete file
    assert last == f"model_{killed_at:07d}.pth" and killed_at >= 1 and (killed_at + 1) % 2 == 0
    assert "model_final.pth" not in os.listdir(out)

    proc = _run([sys.executable, "train_net.py", "--config-file", cfg_file, "--resume",
                 "SOLVER.MAX_ITER", str(killed_at + 3)], coco_root, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = (out / "log.txt").read_text().split("Command Line Args")[-1]  # the resumed run's part
    assert f"Loading from {out / last}" in log
    assert f"Starting training from iteration {killed_at + 1}" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)  # training checkpoints are
    assert final["iteration"] == killed_at + 2                                          # plain data
    assert final["trainer"]["hooks"]["LRScheduler"]["last_epoch"] == killed_at + 3
    steps = {float(s["step"]) for s in final["trainer"]["_trainer"]["optimizer"]["state"].values()}
    assert steps == {float(killed_at + 3)}  # the optimizer continued from the checkpoint


def _seeded_run(cfg_file, out):
    cfg = train_net.setup(_args("--config-file", cfg_file, "OUTPUT_DIR", str(out)))  # seeds with cfg.SEED
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = {k: [v for v, _ in h.values()] for k, h in trainer.storage.histories().items()
               if k.startswith("loss_") or k == "total_loss"}
    return history, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_seeded_cpu_runs_are_identical(prefix, tmp_path):
    cfg = train_cfg(tmp_path, prefix, max_iter=3)
    cfg.DATASETS.TEST_PANOPTIC = cfg.DATASETS.TEST_SEMANTIC = cfg.DATASETS.TEST_INSTANCE = ()
    cfg.SEED = 7
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg_file = _write_yaml(cfg, tmp_path / "tiny.yaml")
    (losses_a, weights_a), (losses_b, weights_b) = (_seeded_run(cfg_file, tmp_path / r) for r in ("a", "b"))
    assert len(losses_a["total_loss"]) == 3 and "loss_contrastive" in losses_a and "loss_mask" in losses_a
    assert losses_a == losses_b  # bit-identical, every loss term, every iteration
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)

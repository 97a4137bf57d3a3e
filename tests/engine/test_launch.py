"""How train_net.py starts its processes (oneformer/engine/launch.py): torchrun / SLURM environments, the checks on
the launch flags, SyncBN with one process, and two real CPU runs (gloo) of the synthetic config at 64x64 for 3
iterations: ``torchrun --nproc_per_node 2`` and a simulated two-machine run (two ``--num-machines 2 --machine-rank
{0,1}`` processes on localhost). In both, the ranks train on different images, their losses are all-reduced into the
same values (the ones rank 0 writes to metrics.json) and they end with the same weights."""
import json
import os
import socket
import statistics
import subprocess
import sys
import types

import pytest

from oneformer import train_net
from oneformer.engine.launch import (LaunchError, check_dist_url, first_slurm_host, launch_env, launch_from_args,
                                     single_process_norms)
from tests.engine.loss_probe import probe_file
from tests.tiny import REPO, load_script

ITERS = 3


# ------------------------------------------------------------------------------------------------ environment


def test_torchrun_environment():
    env = launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                      "MASTER_ADDR": "node0", "MASTER_PORT": "29500"})
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("torchrun", 3, 4, 1, 2)
    assert (env.master_addr, env.master_port, env.num_machines, env.machine_rank) == ("node0", 29500, 2, 1)
    assert launch_env({}) is None
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) is None  # one task: Detectron2's launch spawns
    with pytest.raises(LaunchError, match="MASTER_PORT"):
        launch_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(LaunchError, match="inconsistent process layout"):
        launch_env({"RANK": "0", "WORLD_SIZE": "3", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "1"})
    with pytest.raises(LaunchError, match="RANK='x' is not an integer"):
        launch_env({"RANK": "x", "WORLD_SIZE": "2", "MASTER_PORT": "1"})


def test_slurm_environment():
    env = launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_TASKS_PER_NODE": "4(x2)",
                      "SLURM_JOB_NODELIST": "gpu-[03-04]", "SLURM_JOB_ID": "123456"})
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("slurm", 5, 8, 1, 4)
    assert (env.master_addr, env.master_port, env.machine_rank) == ("gpu-03", 20000 + 123456 % 20000, 1)
    env = launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "MASTER_ADDR": "h",
                      "MASTER_PORT": "1234", "SLURM_JOB_NODELIST": "x"})
    assert (env.master_addr, env.master_port) == ("h", 1234)
    assert first_slurm_host("gpu-[03-05,09],login1") == "gpu-03"
    assert first_slurm_host("node7,node8") == "node7"
    assert first_slurm_host("a[7]") == "a7"


def _args(**kw):
    base = dict(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto")
    return types.SimpleNamespace(**dict(base, **kw))


def test_launch_flags_under_torchrun_are_refused():
    environ = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_PORT": "1"}
    with pytest.raises(LaunchError, match="--num-gpus, --num-machines cannot apply"):
        launch_from_args(lambda a: None, _args(num_gpus=8, num_machines=2), device="cpu", environ=environ)


def test_dist_url_checks():
    with pytest.raises(LaunchError, match="--dist-url auto picks a free port on this machine only"):
        check_dist_url("auto", 1, 2, 0)
    check_dist_url("auto", 2, 1, 0)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(LaunchError, match=f"port {port} of --dist-url tcp://127.0.0.1:{port} is in use"):
            check_dist_url(f"tcp://127.0.0.1:{port}", 2, 1, 0)
        check_dist_url(f"tcp://127.0.0.1:{port}", 1, 1, 0)  # one process: no process group, no port
        check_dist_url(f"tcp://127.0.0.1:{port}", 1, 2, 1)  # machine 1 connects to it, it does not bind it


def test_one_process_uses_batchnorm_for_syncbn(tmp_path):
    """The Cityscapes R50 config (MODEL.RESNETS.NORM SyncBN) set up in one process: BN, with one log line."""
    out = tmp_path / "out"
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", "configs/cityscapes/oneformer_R50_bs16_90k.yaml", "MODEL.DEVICE", "cpu",
         "OUTPUT_DIR", str(out)])
    cfg = train_net.setup(args)
    assert cfg.MODEL.RESNETS.NORM == "BN"
    assert ("One process: SyncBN has nothing to synchronize, using BatchNorm instead (MODEL.RESNETS.NORM: SyncBN "
            "-> BN)") in (out / "log.txt").read_text()
    cfg = train_net.build_config(args)
    assert single_process_norms(cfg, 2) == [] and cfg.MODEL.RESNETS.NORM == "SyncBN"  # kept with 2 processes
    assert single_process_norms(cfg, 1) == ["MODEL.RESNETS.NORM: SyncBN -> BN"]


# ------------------------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    ts = load_script("train_synthetic", "tools")
    assert ts.generate_dataset(str(root / "synthetic_shapes"), num_train=4, num_val=1, seed=0, size=64)
    return str(root)


def _train_argv(out):
    return ["train_net.py", "--config-file", "configs/synthetic/oneformer_synthetic.yaml",
            "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(ITERS),
            "SOLVER.WARMUP_ITERS", "0", "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64",
            "DATASETS.TEST_PANOPTIC", "()", "DATASETS.TEST_INSTANCE", "()", "DATASETS.TEST_SEMANTIC", "()",
            "OUTPUT_DIR", str(out), "EXTRA_HOOKS", "['tests.engine.loss_probe:build_hook']"]


def _env(datasets_root):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets_root, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
                "SLURM_NTASKS"):
        env.pop(key, None)
    return env


def _check_two_ranks(out):
    rows = {}
    for rank in (0, 1):
        with open(probe_file(str(out), rank)) as f:
            rows[rank] = [json.loads(line) for line in f]
    steps = {rank: [r for r in rows[rank] if "iter" in r] for rank in rows}
    ends = {rank: rows[rank][-1] for rank in rows}
    for rank in (0, 1):
        assert [r["iter"] for r in steps[rank]] == list(range(ITERS))
        assert ends[rank]["world_size"] == 2 and ends[rank]["rank"] == rank
    local = [(a["local"], b["local"]) for a, b in zip(steps[0], steps[1])]
    assert any(x != y for x, y in local), local  # the two ranks trained on different images
    for a, b, (x, y) in zip(steps[0], steps[1], local):
        assert a["reduced"] == b["reduced"] == pytest.approx((x + y) / 2, rel=1e-12)
    assert ends[0]["final_param_sum"] == ends[1]["final_param_sum"]  # gradients were all-reduced: same weights
    with open(out / "metrics.json") as f:
        last = [json.loads(line) for line in f][-1]
    # rank 0 writes the all-reduced total loss (median over the writer's window)
    assert last["iteration"] == ITERS - 1
    assert last["total_loss"] == pytest.approx(statistics.median(r["reduced"] for r in steps[0]), rel=1e-5)
    return steps


def test_torchrun_two_processes(datasets_root, tmp_path):
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"] + _train_argv(out)
    proc = subprocess.run(cmd, cwd=REPO, env=_env(datasets_root), capture_output=True, text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert "torchrun process 0 of 2 (local 0 of 2 on machine 0 of 1): init_process_group(gloo, env://" in text
    assert "torchrun process 1 of 2" in (out / "log.txt.rank1").read_text()
    _check_two_ranks(out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_all(procs, timeout=240):
    """Each process's output, once all have ended (any still running after ``timeout`` is killed); asserts that
    every one exited with 0."""
    texts = []
    try:
        for p in procs:
            texts.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, text in zip(procs, texts):
        assert p.returncode == 0, text[-4000:]
    return texts


def test_two_machines_on_localhost(datasets_root, tmp_path):
    out = tmp_path / "two_machines"
    url = f"tcp://127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen([sys.executable] + _train_argv(out)[:1] + ["--num-machines", "2", "--machine-rank",
                                                                        str(rank), "--dist-url", url]
                              + _train_argv(out)[1:], cwd=REPO, env=_env(datasets_root), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    texts = _wait_all(procs)
    assert "Rank of current process: 0. World size: 2" in texts[0]
    assert "Rank of current process: 1. World size: 2" in (out / "log.txt.rank1").read_text()
    _check_two_ranks(out)


def test_slurm_two_tasks_on_localhost(datasets_root, tmp_path):
    """What `srun --ntasks 2 python train_net.py ...` gives each task: SLURM_* variables (no RANK/WORLD_SIZE)."""
    out = tmp_path / "slurm"
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = dict(_env(datasets_root), SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank),
                   SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NODELIST="localhost", SLURM_JOB_ID="1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable] + _train_argv(out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    texts = _wait_all(procs)
    assert f"slurm process 0 of 2 (local 0 of 2 on machine 0 of 1): init_process_group(gloo, env://, master " \
           f"localhost:{port})" in texts[0]
    _check_two_ranks(out)


def test_early_stopping_stops_every_process(datasets_root, tmp_path):
    """Two processes (--num-gpus 2, gloo), evaluation every iteration with PQ falling (only rank 0 has results):
    with PATIENCE 2 both processes stop after the third evaluation (iteration index 2) and exit normally."""
    out = tmp_path / "early"
    argv = _train_argv(out)
    argv[argv.index("EXTRA_HOOKS") + 1] = ("['tests.engine.scripted_eval:build_hook', "
                                           "'tests.engine.loss_probe:build_hook']")
    argv[argv.index("SOLVER.MAX_ITER") + 1] = "6"
    argv[argv.index("DATASETS.TEST_PANOPTIC") + 1] = "('synthetic_panoptic_val',)"
    cmd = [sys.executable, argv[0], "--num-gpus", "2", "--dist-url", "auto"] + argv[1:] + [
        "TEST.EVAL_PERIOD", "1", "TEST.BEST_CHECKPOINT.ENABLED", "True", "TEST.BEST_CHECKPOINT.PATIENCE", "2"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(datasets_root), capture_output=True, text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    assert ("Early stopping after iteration 2: panoptic_seg/PQ (task token panoptic) has not improved for 2 "
            "evaluations (TEST.BEST_CHECKPOINT.PATIENCE 2); best 5.0000 at iteration 0") in text
    for rank in (0, 1):
        with open(probe_file(str(out), rank)) as f:
            rows = [json.loads(line) for line in f]
        assert [r["iter"] for r in rows if "iter" in r] == [0, 1]  # the stop came in iteration 2's after_step
        assert rows[-1]["world_size"] == 2
    # an early stop ends like a full run: the weights it stopped with are model_final.pth (issue 27)
    assert (out / "model_best.pth").exists() and (out / "model_final.pth").exists()

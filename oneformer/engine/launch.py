"""How ``train_net.py`` starts its processes: Detectron2's ``launch`` (``--num-gpus``, ``--num-machines``,
``--machine-rank``, ``--dist-url``), or, when a cluster launcher already started one process per device, the
process group from the environment (``env://``).

Launchers recognized (``launch_env``):

- ``torchrun`` (and anything else setting the same variables): RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
  MASTER_ADDR, MASTER_PORT.
- SLURM ``srun`` with several tasks (SLURM_NTASKS > 1): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
  SLURM_NTASKS_PER_NODE (or SLURM_TASKS_PER_NODE); the master is the first host of SLURM_JOB_NODELIST (unless
  MASTER_ADDR is set) and the port MASTER_PORT, else 20000 + SLURM_JOB_ID % 20000 (the same on every node of a job).

Each such process joins the group with ``init_process_group("env://")`` (NCCL when it trains on CUDA, else gloo), uses
GPU ``LOCAL_RANK`` and sets Detectron2's local process group (``comm.create_local_process_group``), as the worker of
Detectron2's ``launch`` does. ``--num-gpus`` and the other launch flags must then be left at their defaults: the
processes come from the launcher.

Without those variables Detectron2's ``launch`` runs as before; ``--dist-url auto`` picks a free port (one machine),
and a local ``--dist-url`` whose port is taken is refused in one line (``check_dist_url``) instead of hanging or
failing in every spawned process.

``single_process_norms(cfg, world_size)``: with one process there is nothing to synchronize, so the config's
``SyncBN`` norms become ``BN`` (logged by ``train_net.setup``); the state_dict names are the same.
"""
import dataclasses
import logging
import os
import re
import socket
from datetime import timedelta
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["LaunchEnv", "LaunchError", "launch_env", "first_slurm_host", "check_dist_url", "launch_from_args",
           "launch_summary", "single_process_norms", "SYNC_NORMS"]

logger = logging.getLogger(__name__)

SYNC_NORMS = ("SyncBN", "nnSyncBN", "naiveSyncBN", "naiveSyncBN_N")
DEFAULT_TIMEOUT = timedelta(minutes=30)
_SUMMARY: Optional[str] = None


class LaunchError(ValueError):
    """Launch flags or environment that cannot work; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class LaunchEnv:
    """One process of a job started by a cluster launcher (global ``rank`` of ``world_size``; ``local_rank`` of
    ``local_world_size`` on its machine), with the rendezvous address for ``env://``."""

    source: str  # "torchrun" | "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    @property
    def num_machines(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def machine_rank(self) -> int:
        return self.rank // self.local_world_size


def _int(environ: Mapping[str, str], key: str, source: str) -> int:
    try:
        return int(environ[key])
    except ValueError:
        raise LaunchError(f"{source}: environment variable {key}={environ[key]!r} is not an integer") from None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list: "gpu-[03-05,09],login1" -> "gpu-03", "node7" -> "node7"."""
    m = re.match(r"\s*([^,\[]+)(?:\[([^\]]+)\])?", nodelist or "")
    if not m:
        raise LaunchError(f"cannot read the SLURM node list {nodelist!r}; set MASTER_ADDR to the first node's address")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _slurm_tasks_per_node(environ: Mapping[str, str]) -> Optional[int]:
    for key in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        value = environ.get(key)
        if value:  # "4" or "4(x2)" or "4(x2),3": the first node's count
            m = re.match(r"\s*(\d+)", value)
            if m:
                return int(m.group(1))
    return None


def launch_env(environ: Optional[Mapping[str, str]] = None) -> Optional[LaunchEnv]:
    """The process's place in a torchrun or SLURM srun job, from ``environ`` (default ``os.environ``); None when no
    such launcher started it (then Detectron2's ``launch`` spawns the processes). Raises LaunchError for
    inconsistent values (e.g. LOCAL_WORLD_SIZE not dividing WORLD_SIZE)."""
    environ = os.environ if environ is None else environ
    if "RANK" in environ and "WORLD_SIZE" in environ:
        source = "torchrun"
        rank, world = _int(environ, "RANK", source), _int(environ, "WORLD_SIZE", source)
        local_rank = _int(environ, "LOCAL_RANK", source) if "LOCAL_RANK" in environ else 0
        local_world = (_int(environ, "LOCAL_WORLD_SIZE", source) if "LOCAL_WORLD_SIZE" in environ
                       else (world if "LOCAL_RANK" in environ else 1))
        addr = environ.get("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in environ:
            raise LaunchError("torchrun-style environment (RANK, WORLD_SIZE) without MASTER_PORT: set MASTER_ADDR and "
                              "MASTER_PORT, or start the job with torchrun")
        port = _int(environ, "MASTER_PORT", source)
    elif "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1") or 1) > 1:
        source = "slurm"
        rank, world = _int(environ, "SLURM_PROCID", source), _int(environ, "SLURM_NTASKS", source)
        local_rank = _int(environ, "SLURM_LOCALID", source) if "SLURM_LOCALID" in environ else 0
        local_world = _slurm_tasks_per_node(environ) or world
        addr = environ.get("MASTER_ADDR") or first_slurm_host(
            environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", ""))
        if "MASTER_PORT" in environ:
            port = _int(environ, "MASTER_PORT", source)
        elif "SLURM_JOB_ID" in environ:
            port = 20000 + _int(environ, "SLURM_JOB_ID", source) % 20000
        else:
            raise LaunchError("SLURM job without SLURM_JOB_ID or MASTER_PORT: set MASTER_PORT")
    else:
        return None
    if not (0 <= rank < world and 0 <= local_rank < local_world and world % local_world == 0):
        raise LaunchError(f"{source}: inconsistent process layout: rank {rank} of {world}, local rank {local_rank} of "
                          f"{local_world} per machine (the processes per machine must divide the world size)")
    return LaunchEnv(source, rank, world, local_rank, local_world, addr, port)


def _local_host(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "")


def check_dist_url(dist_url: str, num_gpus: int, num_machines: int, machine_rank: int) -> None:
    """Refuse launch flags Detectron2 would fail on later, in every process: ``--dist-url auto`` with several machines
    (a free port on this machine is unknown to the others), or a local tcp:// URL whose port is already taken (another
    run, or an orphaned one, holds it). Only checked when more than one process is started; returns None."""
    if num_gpus * num_machines <= 1:
        return
    if dist_url == "auto":
        if num_machines > 1:
            raise LaunchError(f"--dist-url auto picks a free port on this machine only; with --num-machines "
                              f"{num_machines} give every machine the same tcp://<machine 0's address>:<port>")
        return
    m = re.match(r"tcp://\[?([^\]/]*?)\]?:(\d+)$", dist_url or "")
    if not m or machine_rank != 0 or not _local_host(m.group(1)):
        return
    port = int(m.group(2))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the rendezvous store binds it: a port left in TIME_WAIT by an earlier run is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise LaunchError(f"port {port} of --dist-url {dist_url} is in use (another training run, or an orphaned "
                              "one, may hold it); pass --dist-url auto to pick a free port, or another port") from None


def _env_backend(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" and torch.cuda.is_available() else "gloo"


def _env_worker(main_func: Callable, env: LaunchEnv, device: str, args: Tuple, timeout: timedelta):
    """Join the job's process group (env://) and run ``main_func(*args)``: what Detectron2's launch worker does."""
    backend = _env_backend(device)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    os.environ.setdefault("MASTER_ADDR", env.master_addr)  # env:// reads them (SLURM does not set them)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    global _SUMMARY
    _SUMMARY = (f"{env.source} process {env.rank} of {env.world_size} (local {env.local_rank} of "
                f"{env.local_world_size} on machine {env.machine_rank} of {env.num_machines}): init_process_group("
                f"{backend}, env://, master {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']})")
    dist.init_process_group(backend=backend, init_method="env://", world_size=env.world_size, rank=env.rank,
                            timeout=timeout)
    try:
        comm.create_local_process_group(env.local_world_size)
        comm.synchronize()
        return main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_summary() -> Optional[str]:
    """How this process joined an env:// job (rank, machine, backend, master), for the log; None otherwise. Kept
    until ``train_net.setup`` has set up logging."""
    return _SUMMARY


def launch_from_args(main_func: Callable, args, device: str = "cuda", environ: Optional[Mapping[str, str]] = None,
                     timeout: timedelta = DEFAULT_TIMEOUT, launcher: Callable = d2_launch):
    """Run ``main_func(args)`` in this job's processes.

    Args:
        main_func: called as ``main_func(args)`` in every process.
        args: Detectron2's parsed arguments (num_gpus, num_machines, machine_rank, dist_url).
        device: the config's MODEL.DEVICE (picks NCCL or gloo for an env:// job).
        environ: the environment to read (default ``os.environ``).
        launcher: Detectron2's ``launch`` (or a stand-in with its signature).
    Under torchrun / srun (``launch_env``) this process joins the group from the environment; the launch flags must
    be at their defaults (LaunchError otherwise). Else Detectron2's ``launch`` with the flags (``check_dist_url``).
    """
    env = launch_env(environ)
    if env is not None:
        set_flags = [flag for flag, value, default in (("--num-gpus", args.num_gpus, 1),
                                                       ("--num-machines", args.num_machines, 1),
                                                       ("--machine-rank", args.machine_rank, 0))
                     if value != default]
        if set_flags:
            raise LaunchError(f"started by {env.source} ({env.world_size} processes, {env.local_world_size} per "
                              f"machine): {', '.join(set_flags)} cannot apply, the launcher starts the processes; "
                              "drop them (torchrun: --nproc_per_node / --nnodes; srun: --ntasks-per-node / --nodes)")
        return _env_worker(main_func, env, device, (args,), timeout)
    check_dist_url(args.dist_url, args.num_gpus, args.num_machines, args.machine_rank)
    return launcher(main_func, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                    dist_url=args.dist_url, args=(args,), timeout=timeout)


def _norm_keys(node, prefix="") -> List[Tuple[str, object]]:
    """(dotted key, parent node) of every "NORM" entry in a CfgNode tree."""
    found = []
    for key, value in node.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            found += _norm_keys(value, name + ".")
        elif key == "NORM":
            found.append((name, node))
    return found


def single_process_norms(cfg, world_size: int) -> List[str]:
    """With ``world_size`` 1, replace every SyncBN-type ``*.NORM`` of the (unfrozen) ``cfg`` by "BN": one process has
    no batch statistics to share, and SyncBN needs a process group. Returns the changed keys as "KEY: OLD -> BN"
    (empty when nothing changed or ``world_size`` > 1)."""
    if world_size > 1:
        return []
    changed = []
    for name, node in _norm_keys(cfg):
        value = node["NORM"]
        if isinstance(value, str) and value in SYNC_NORMS:
            node["NORM"] = "BN"
            changed.append(f"{name}: {value} -> BN")
    return changed

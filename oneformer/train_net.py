"""Train or evaluate OneFormer with Detectron2: the trainer and the command line of ``train_net.py``, importable
from anywhere (``from oneformer import train_net``), e.g. by a launcher that registers its own datasets first and
then calls ``train_net.cli()``.

    python train_net.py --config-file configs/ade20k/swin/oneformer_swin_large_bs16_160k.yaml --num-gpus 8
    python train_net.py --config-file ... --num-gpus 8 --resume                  # continue from OUTPUT_DIR
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model.pth MODEL.TEST.TASK semantic
    python train_net.py --config-file ... --num-gpus 2 MODEL.DEVICE cpu         # 2 CPU processes (gloo)

Arguments are Detectron2's ``default_argument_parser`` (--config-file, --num-gpus, --num-machines, --machine-rank,
--dist-url, --resume, --eval-only) followed by ``KEY VALUE`` config overrides. Under ``torchrun`` or SLURM ``srun``
the processes, ranks and master address come from the environment (``env://``, ``oneformer/engine/launch.py``);
``--dist-url auto`` picks a free port. With one process, SyncBN norms in the config become BatchNorm (logged).

    torchrun --nproc_per_node 8 train_net.py --config-file ...
    srun --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 python train_net.py --config-file ...

Evaluation (periodic and --eval-only) runs on the datasets of MODEL.TEST.TASK: DATASETS.TEST_PANOPTIC,
TEST_INSTANCE or TEST_SEMANTIC (panoptic for an unknown task; DATASETS.TEST when the chosen list is empty), with the
matching task token; when both are empty, the first non-empty TEST_PANOPTIC / TEST_SEMANTIC / TEST_INSTANCE with its
own task token (logged), e.g. a semantic-only setup with only TEST_SEMANTIC. MODEL.TEST.TASK all evaluates
DATASETS.TEST_PANOPTIC (else DATASETS.TEST) in one pass with each output from its own task token, the paper's
protocol: PQ from the panoptic token, AP from the instance token, mIoU from the semantic token (the backbone and pixel
decoder run once per image, the transformer decoder once per token). With TEST.AUG.ENABLED, --eval-only also
evaluates multi-scale + flip semantic segmentation on DATASETS.TEST_SEMANTIC (results suffixed "_TTA"). Logging:
console, OUTPUT_DIR/log.txt, metrics.json, TensorBoard events, and W&B when WANDB.ENABLED. New config keys: see ``oneformer/engine/config.py``.

Best checkpoint: TEST.BEST_CHECKPOINT.* keeps OUTPUT_DIR/model_best.pth by PQ / AP / mIoU of the periodic evaluation
and can stop early (``oneformer/engine/best_checkpoint.py``). Mixed data: DATASETS.TRAIN may combine panoptic,
semantic-only and instance-only datasets, with DATASETS.TRAIN_SAMPLING_WEIGHTS / TRAIN_TASK_PROBS
(``oneformer/data/mixed_datasets.py``). Memory: MODEL.BACKBONE.ACTIVATION_CHECKPOINT,
MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT and the configs/*/swin/*_1gpu_24gb.yaml recipes.

Reliability: an unknown config key stops the run before anything starts, naming the key, the file or override it
came from and the closest existing keys; training steps with a NaN/Inf loss or gradient are skipped and counted
(``skipped_nonfinite_steps``), and SOLVER.MAX_CONSECUTIVE_NONFINITE skips in a row stop training with advice;
checkpoints are written atomically, so a killed run resumes with --resume from its last complete checkpoint;
checkpoints load with torch's weights-only unpickler unless MODEL.ALLOW_UNSAFE_PICKLE True.
"""
import contextlib
import importlib
import logging
import os
import sys
import weakref
from collections import OrderedDict

import detectron2.engine.defaults as d2_defaults
import torch
import yaml
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, default_writers, hooks, launch
from detectron2.evaluation import print_csv_format, verify_results
from detectron2.projects.deeplab import build_lr_scheduler as deeplab_build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import oneformer  # noqa: F401  (registers the model components)
import oneformer.data.datasets  # noqa: F401  (registers the datasets)
from oneformer import add_oneformer_config_all
from oneformer.config import ConfigError, merge_config, resolve_config_file
from oneformer.data.dataset_mappers import build_dataset_mapper
from oneformer.data.dataset_mappers.dataset_mapper import normalize_task
from oneformer.data.mixed_datasets import build_mixed_train_loader, load_sources, uses_mixed_loader
from oneformer.engine import (
    AMP_PRECISIONS,
    NonFiniteGuardAMPTrainer,
    NonFiniteGuardTrainer,
    SemanticSegmentorWithTTA,
    WandbWriter,
    add_oneformer_engine_config,
    build_optimizer,
    require_wandb,
)
from oneformer.engine.best_checkpoint import BestCheckpointHook, StopTraining, metric_key
from oneformer.engine.launch import LaunchError, launch_env, launch_from_args, launch_summary, single_process_norms
from oneformer.evaluation import build_oneformer_evaluator
from oneformer.evaluation.async_evaluator import AsyncEvaluator
from oneformer.utils.checkpoint import OneFormerCheckpointer
from oneformer.utils.device import DeviceError, check_device

__all__ = ["Trainer", "build_config", "setup", "main", "cli", "check_devices", "eval_dataset_names", "eval_plan",
           "load_extra_hooks", "default_argument_parser", "launch", "TASK_DATASET_KEYS"]

logger = logging.getLogger("oneformer.train_net")

TASK_DATASET_KEYS = {"panoptic": "TEST_PANOPTIC", "instance": "TEST_INSTANCE", "semantic": "TEST_SEMANTIC",
                     "all": "TEST_PANOPTIC"}  # all: a panoptic dataset has the annotations of the three tasks


def eval_dataset_names(cfg, task=None):
    """Datasets evaluated for ``task`` (default MODEL.TEST.TASK; unknown -> panoptic); DATASETS.TEST if empty."""
    task = str(cfg.MODEL.TEST.TASK if task is None else task).strip().lower()
    if task.startswith("the task is "):
        task = task[len("the task is "):].strip()
    key = TASK_DATASET_KEYS.get(task, "TEST_PANOPTIC")
    names = tuple(n for n in cfg.DATASETS.get(key, ()) if n)
    return names or tuple(n for n in cfg.DATASETS.TEST if n)


def eval_plan(cfg):
    """(task, dataset names) to evaluate: MODEL.TEST.TASK and ``eval_dataset_names(cfg)``; when those are empty,
    the first non-empty DATASETS.TEST_PANOPTIC / TEST_SEMANTIC / TEST_INSTANCE with its own task (logged), so a
    semantic-only setup (only TEST_SEMANTIC) is evaluated; (task, ()) when every list is empty."""
    task = normalize_task(cfg.MODEL.TEST.TASK)
    task = task if task == "all" else task[len("The task is "):]
    names = eval_dataset_names(cfg, task)
    if names:
        return task, names
    for other in ("panoptic", "semantic", "instance"):
        found = tuple(n for n in cfg.DATASETS.get(TASK_DATASET_KEYS[other], ()) if n)
        if found:
            logger.info("MODEL.TEST.TASK is %s but DATASETS.%s and DATASETS.TEST are empty: evaluating "
                        "DATASETS.%s %s with the %s task token.", task, TASK_DATASET_KEYS[task],
                        TASK_DATASET_KEYS[other], found, other)
            return other, found
    return task, ()


def _with(cfg, **updates):
    """A frozen copy of ``cfg`` with dotted keys replaced, e.g. ``_with(cfg, **{"DATASETS.TEST": ("a",)})``."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in updates.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    cfg.freeze()
    return cfg


@contextlib.contextmanager
def _trainer_construction():
    """What ``DefaultTrainer.__init__`` builds, adjusted while it runs:

    - it wraps the model with ``create_ddp_model``, which always passes ``device_ids=[local_rank]``; PyTorch refuses
      ``device_ids`` for a CPU module, so multi-process CPU training would fail: CPU models are wrapped with
      ``device_ids=None`` instead (GPU models are untouched);
    - it instantiates ``SimpleTrainer`` / ``AMPTrainer``: the non-finite-step guarding subclasses are built instead
      (``oneformer/engine/trainer.py``).
    """
    saved = {name: getattr(d2_defaults, name) for name in ("create_ddp_model", "SimpleTrainer", "AMPTrainer")}
    original = saved["create_ddp_model"]

    def create_ddp_model(model, **kwargs):
        if all(p.device.type == "cpu" for p in model.parameters()):
            kwargs.setdefault("device_ids", None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create_ddp_model
    d2_defaults.SimpleTrainer = NonFiniteGuardTrainer
    d2_defaults.AMPTrainer = NonFiniteGuardAMPTrainer
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(d2_defaults, name, value)


def load_extra_hooks(trainer, specs):
    """Hooks from EXTRA_HOOKS entries "package.module:factory"; ``factory(trainer)`` -> hook, list of hooks or None."""
    made = []
    for spec in specs:
        module_name, sep, attr = str(spec).partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"EXTRA_HOOKS entry {spec!r} is not 'package.module:factory'")
        factory = getattr(importlib.import_module(module_name), attr)
        result = factory(trainer)
        if result is not None:
            made.extend(result if isinstance(result, (list, tuple)) else [result])
    return made


class Trainer(DefaultTrainer):
    """Detectron2's DefaultTrainer with OneFormer's data, optimizer, schedule, evaluators, checkpointer and writers
    (subclassed because these build_* methods are DefaultTrainer's extension points)."""

    def __init__(self, cfg):
        with _trainer_construction():
            super().__init__(cfg)
        self._trainer.max_consecutive_nonfinite = int(cfg.SOLVER.MAX_CONSECUTIVE_NONFINITE)
        if cfg.SOLVER.AMP.ENABLED:
            precision = cfg.SOLVER.AMP.PRECISION
            if precision not in AMP_PRECISIONS:
                raise ValueError(f"SOLVER.AMP.PRECISION must be one of {AMP_PRECISIONS}, got {precision!r}")
            # the AMP trainer then uses a loss scaler only for float16 on CUDA (engine/trainer.py: amp_grad_scaler)
            self._trainer.precision = getattr(torch, precision)

    def resume_or_load(self, resume=True):
        """DefaultTrainer's; when resuming, the LR schedule then runs to this config's SOLVER.MAX_ITER (logged)."""
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self._follow_max_iter()

    def _follow_max_iter(self):
        # WarmupPolyLR keeps max_iters in its state, so a resumed run would keep the checkpoint's length: a larger
        # SOLVER.MAX_ITER then fails in math.pow (1 - iter / max_iters < 0), a smaller one is ignored
        scheduler, max_iter = self.scheduler, self.max_iter
        saved = getattr(scheduler, "max_iters", None)
        if self.start_iter >= max_iter:
            logger.warning("The checkpoint was saved after %d iterations and SOLVER.MAX_ITER is %d: nothing left to "
                           "train (raise SOLVER.MAX_ITER to train longer).", self.start_iter, max_iter)
            return
        if saved is not None and saved != max_iter:
            scheduler.max_iters = max_iter
            # the optimizer holds the LR of the old schedule for this iteration
            for group, lr in zip(self.optimizer.param_groups, scheduler.get_lr()):
                group["lr"] = lr
            scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        lrs = sorted({group["lr"] for group in self.optimizer.param_groups})
        logger.info("Resuming at iteration %d: LR schedule %s to SOLVER.MAX_ITER %d%s; learning rate now %s.",
                    self.start_iter, self.cfg.SOLVER.LR_SCHEDULER_NAME, max_iter,
                    f" (the checkpoint's schedule ran to {saved})" if saved not in (None, max_iter) else "",
                    ", ".join(f"{lr:.4g}" for lr in lrs))

    # ------------------------------------------------------------------------------------------------ data
    @classmethod
    def build_train_loader(cls, cfg):
        """Detectron2's loader with INPUT.DATASET_MAPPER_NAME's mapper; DATASETS.TRAIN entries of different kinds,
        or DATASETS.TRAIN_SAMPLING_WEIGHTS / TRAIN_TASK_PROBS, use the mixed loader (``data/mixed_datasets.py``)."""
        if uses_mixed_loader(cfg) or len(cfg.DATASETS.TRAIN) > 1:
            sources, kinds = load_sources(cfg)
            if uses_mixed_loader(cfg) or len(set(kinds)) > 1:
                return build_mixed_train_loader(cfg, sources, kinds)
        return build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper = build_dataset_mapper(cfg, is_train=False, name="oneformer_test")
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)

    # ------------------------------------------------------------------------------------------------ solver
    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return deeplab_build_lr_scheduler(cfg, optimizer)

    # ------------------------------------------------------------------------------------------------ hooks, logging
    def build_hooks(self):
        # before DefaultTrainer's hooks capture it: same checkpoints, plus the explained load report
        self.checkpointer = OneFormerCheckpointer(self._trainer.model, self.cfg.OUTPUT_DIR,
                                                  allow_unsafe_pickle=self.cfg.MODEL.ALLOW_UNSAFE_PICKLE,
                                                  trainer=weakref.proxy(self))
        ret = super().build_hooks()
        best = self._best_checkpoint_hook()
        if best is not None:  # right after the EvalHook, whose results it reads
            at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
            ret.insert(at, best)
        extra = load_extra_hooks(self, self.cfg.EXTRA_HOOKS)
        writer_at = next((i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)), len(ret))
        return ret[:writer_at] + extra + ret[writer_at:]

    def _best_checkpoint_hook(self):
        """The TEST.BEST_CHECKPOINT hook (None when disabled); refuses a config that never evaluates."""
        best = self.cfg.TEST.BEST_CHECKPOINT
        if not best.ENABLED:
            if best.PATIENCE:
                raise ConfigError("TEST.BEST_CHECKPOINT.PATIENCE needs TEST.BEST_CHECKPOINT.ENABLED True")
            return None
        if self.cfg.TEST.EVAL_PERIOD <= 0:
            raise ConfigError("TEST.BEST_CHECKPOINT.ENABLED needs periodic evaluation: set TEST.EVAL_PERIOD > 0")
        task, names = eval_plan(self.cfg)
        if not names:
            raise ConfigError("TEST.BEST_CHECKPOINT.ENABLED needs an evaluation dataset (DATASETS.TEST_PANOPTIC, "
                              "TEST_INSTANCE, TEST_SEMANTIC or TEST)")
        try:
            key = metric_key(best.METRIC, task)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        logger.info("TEST.BEST_CHECKPOINT: keeping model_best.pth by %s (%s) of the evaluation with the %s task token "
                    "every %d iterations%s.", key, best.MODE, task, self.cfg.TEST.EVAL_PERIOD,
                    f", stopping after {best.PATIENCE} evaluations without a gain" if best.PATIENCE else "")
        return BestCheckpointHook(self.cfg.TEST.EVAL_PERIOD, self.checkpointer, key, task=task, mode=best.MODE,
                                  patience=best.PATIENCE, datasets=names)

    def train(self):
        """DefaultTrainer's; an early stop (TEST.BEST_CHECKPOINT.PATIENCE) ends it normally, with a log line, saves
        the weights it stopped with as ``model_final.pth`` (as the last iteration would; a resume continues from it)
        and returns the last evaluation's results."""
        try:
            return super().train()
        except StopTraining as stop:
            self.early_stopped_at = self.iter
            if self.iter < self.max_iter - 1:  # at the last iteration the PeriodicCheckpointer has written it
                self.checkpointer.save("model_final", iteration=self.iter)
            logger.info("%s; the weights it stopped with: model_final.pth (iteration %d)", stop, self.iter)
            return getattr(self, "_last_eval_results", None)

    def build_writers(self):
        writers = default_writers(self.cfg.OUTPUT_DIR, self.max_iter)  # console, metrics.json, TensorBoard
        if self.cfg.WANDB.ENABLED:
            writers.append(WandbWriter(project=self.cfg.WANDB.PROJECT, name=self.cfg.WANDB.NAME,
                                       config=yaml.safe_load(self.cfg.dump())))
        return writers

    # ------------------------------------------------------------------------------------------------ evaluation
    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None, tasks=None):
        """``build_oneformer_evaluator``'s evaluator, its ``process`` in a worker thread (TEST.EVALUATOR_QUEUE)."""
        evaluator = build_oneformer_evaluator(cfg, dataset_name, output_folder=output_folder, tasks=tasks)
        queue = int(cfg.TEST.get("EVALUATOR_QUEUE", 0))
        return AsyncEvaluator(evaluator, max_pending=queue) if queue > 0 else evaluator

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate on the datasets of MODEL.TEST.TASK, else on those of another task (see ``eval_plan``)."""
        task, names = eval_plan(cfg)
        if not names:
            logger.warning("No evaluation dataset: DATASETS.TEST_PANOPTIC, TEST_INSTANCE, TEST_SEMANTIC and TEST are "
                           "all empty")
        return super().test(_with(cfg, **{"DATASETS.TEST": names, "MODEL.TEST.TASK": task}), model, evaluators)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Multi-scale + flip semantic segmentation on the semantic datasets, with the semantic task token."""
        names = eval_dataset_names(cfg, "semantic")
        cfg = _with(cfg, **{"DATASETS.TEST": names, "MODEL.TEST.TASK": "semantic"})
        logger.info("Running semantic inference with test-time augmentation on %s ...", names)
        folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, n, output_folder=folder, tasks=("semantic",)) for n in names]
        res = super().test(cfg, SemanticSegmentorWithTTA(cfg, model), evaluators)
        res = OrderedDict((f"{k}_TTA", v) for k, v in res.items())
        if comm.is_main_process() and len(names) == 1:
            logger.info("Evaluation results with test-time augmentation:")
            print_csv_format(res)
        return res


def build_config(args):
    """The config from the adders, --config-file and the KEY VALUE overrides (not frozen). ``args.config_file`` is
    replaced by the file used (``resolve_config_file``: "configs/..." works outside the repository too). Raises
    ConfigError naming an unknown key, where it was set and the closest existing keys, or an invalid
    MODEL.TEST.TASK."""
    cfg = get_cfg()
    add_oneformer_config_all(cfg)
    add_oneformer_engine_config(cfg)
    if args.config_file:
        args.config_file = resolve_config_file(args.config_file)  # default_setup reads it again
    merge_config(cfg, args.config_file, args.opts)
    try:
        normalize_task(cfg.MODEL.TEST.TASK)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return cfg


def setup(args):
    """Config (``build_config``); logging, seeding, config backup."""
    cfg = build_config(args)
    norms_changed = single_process_norms(cfg, comm.get_world_size())
    if cfg.WANDB.ENABLED and not args.eval_only:
        require_wandb()  # fail now with the fix, not after the model is built
        if not cfg.WANDB.NAME:
            cfg.WANDB.NAME = os.path.splitext(os.path.basename(args.config_file))[0] or "oneformer"
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="oneformer")
    if launch_summary():
        logger.info(launch_summary())
    if norms_changed:
        logger.info("One process: SyncBN has nothing to synchronize, using BatchNorm instead (%s).",
                    "; ".join(norms_changed))
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        logger.info("Model parameters: %.2fM", sum(p.numel() for p in model.parameters()) / 1e6)
        OneFormerCheckpointer(model, save_dir=cfg.OUTPUT_DIR, allow_unsafe_pickle=cfg.MODEL.ALLOW_UNSAFE_PICKLE
                              ).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_devices(cfg, args):
    """Raise DeviceError when MODEL.DEVICE names CUDA devices this machine lacks (one per --num-gpus process, or per
    process a torchrun / srun job starts on this machine)."""
    env = launch_env()
    check_device(cfg.MODEL.DEVICE, "add MODEL.DEVICE cpu to the command line to train on CPU (with --num-gpus N: "
                                   "N CPU processes)", count=env.local_world_size if env else args.num_gpus)


def cli(argv=None):
    """The command line: parse ``argv`` (default sys.argv[1:]), check the config and the devices, launch ``main``.
    Config and device errors stop here, once, in one line (SystemExit), instead of in every launched process."""
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        cfg = build_config(args)
        check_devices(cfg, args)
        return launch_from_args(main, args, device=cfg.MODEL.DEVICE, launcher=launch)
    except (ConfigError, DeviceError, LaunchError) as e:
        sys.exit(f"train_net.py: {e}")

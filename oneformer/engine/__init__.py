"""Training-loop pieces used by ``train_net.py``.

- ``add_oneformer_engine_config``: the train_net config keys (WANDB.ENABLED, SOLVER.AMP.PRECISION, the
  "full_model"/"nan_to_num" clip types, SOLVER.MAX_CONSECUTIVE_NONFINITE, MODEL.ALLOW_UNSAFE_PICKLE, EXTRA_HOOKS);
  see ``config.py``.
- ``NonFiniteGuardTrainer`` / ``NonFiniteGuardAMPTrainer``: training steps that skip NaN/Inf updates (``trainer.py``).
- ``build_optimizer`` / ``get_param_groups``: the original per-parameter groups, AdamW/SGD and gradient clipping.
- ``SemanticSegmentorWithTTA``: multi-scale + flip semantic test-time augmentation.
- ``WandbWriter``: Weights & Biases event writer (optional dependency).
- ``launch_from_args`` / ``launch_env``: Detectron2's launch, or the process group from torchrun / SLURM srun
  (``launch.py``); ``single_process_norms``: SyncBN -> BN with one process.
"""
from .config import AMP_PRECISIONS, CLIP_TYPES, add_oneformer_engine_config
from .launch import LaunchEnv, LaunchError, launch_env, launch_from_args, single_process_norms
from .optimizer import build_optimizer, get_param_groups
from .trainer import NONFINITE_ADVICE, NonFiniteGuardAMPTrainer, NonFiniteGuardTrainer
from .tta import SemanticSegmentorWithTTA
from .wandb_writer import WandbWriter, require_wandb

__all__ = [
    "add_oneformer_engine_config",
    "AMP_PRECISIONS",
    "CLIP_TYPES",
    "build_optimizer",
    "get_param_groups",
    "SemanticSegmentorWithTTA",
    "NonFiniteGuardTrainer",
    "NonFiniteGuardAMPTrainer",
    "NONFINITE_ADVICE",
    "WandbWriter",
    "require_wandb",
    "LaunchEnv",
    "LaunchError",
    "launch_env",
    "launch_from_args",
    "single_process_norms",
]

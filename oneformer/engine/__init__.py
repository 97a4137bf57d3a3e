"""Training-loop pieces used by ``train_net.py``.

- ``add_oneformer_engine_config``: the train_net config keys (WANDB.ENABLED, SOLVER.AMP.PRECISION, the
  "full_model"/"nan_to_num" clip types, EXTRA_HOOKS); see ``config.py``.
- ``build_optimizer`` / ``get_param_groups``: the original per-parameter groups, AdamW/SGD and gradient clipping.
- ``SemanticSegmentorWithTTA``: multi-scale + flip semantic test-time augmentation.
- ``WandbWriter``: Weights & Biases event writer (optional dependency).
"""
from .config import AMP_PRECISIONS, CLIP_TYPES, add_oneformer_engine_config
from .optimizer import build_optimizer, get_param_groups
from .tta import SemanticSegmentorWithTTA
from .wandb_writer import WandbWriter, require_wandb

__all__ = [
    "add_oneformer_engine_config",
    "AMP_PRECISIONS",
    "CLIP_TYPES",
    "build_optimizer",
    "get_param_groups",
    "SemanticSegmentorWithTTA",
    "WandbWriter",
    "require_wandb",
]

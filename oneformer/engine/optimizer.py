"""OneFormer's optimizer: per-parameter groups as in the original release (spec §9), gradient clipping that clips.

``build_optimizer(cfg, model)``:

* one param group per trainable parameter (shared parameters counted once), each with
  - ``lr`` = ``SOLVER.BASE_LR``, times ``SOLVER.BACKBONE_MULTIPLIER`` (0.1) when the owning module's name contains
    "backbone";
  - ``weight_decay`` = ``SOLVER.WEIGHT_DECAY`` (0.05), except 0 (by name) for Swin's ``relative_position_bias_table``
    and ``absolute_pos_embed``, ``SOLVER.WEIGHT_DECAY_NORM`` for parameters of torch normalization modules
    (BatchNorm/SyncBatchNorm/GroupNorm/InstanceNorm/LayerNorm/LocalResponseNorm; ConvNeXt's own channels-first
    LayerNorm is not one, as in the original) and ``SOLVER.WEIGHT_DECAY_EMBED`` for ``nn.Embedding`` weights
    (query_embed, level_embed of the decoder, token_embedding, prompt_ctx). Plain ``nn.Parameter`` tensors (text
    positional embedding, pixel-decoder level_embed, ``logit_scale``, ConvNeXt gamma, DiNAT rpb) keep the default.
* ``SOLVER.OPTIMIZER`` "ADAMW" -> ``torch.optim.AdamW(lr=BASE_LR)`` with PyTorch's default betas/eps, or "SGD" ->
  ``torch.optim.SGD(lr=BASE_LR, momentum=SOLVER.MOMENTUM, nesterov=SOLVER.NESTEROV)``.
* gradient clipping by ``SOLVER.CLIP_GRADIENTS`` (when ``ENABLED``), applied in ``optimizer.step()`` (under AMP the
  grad scaler has unscaled the gradients by then):
  - "value" / "norm": Detectron2's per-parameter clipping (``maybe_add_gradient_clipping``);
  - "full_model": NaN/Inf -> finite, then ``clip_grad_norm_`` over all parameters together (global norm);
  - "nan_to_num": NaN -> 0, +-Inf -> +-1e5 only, no clipping: the original release's effective behaviour.
"""
import logging
from typing import Any, Dict, List

import torch
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping, maybe_add_gradient_clipping
from torch import nn

from .config import CLIP_TYPES

__all__ = ["build_optimizer", "get_param_groups", "NORM_MODULE_TYPES", "NAN_TO_NUM_LIMIT"]

logger = logging.getLogger(__name__)

NORM_MODULE_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)
NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")
# the original replaces +-Inf gradients by +-1e5 and NaN by 0
NAN_TO_NUM_LIMIT = 1e5


def get_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_embed: float,
    backbone_multiplier: float,
) -> List[Dict[str, Any]]:
    """One ``{"params": [p], "lr", "weight_decay"}`` dict per trainable parameter, in ``named_modules`` order."""
    groups = []
    seen = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = base_lr * backbone_multiplier if "backbone" in module_name else base_lr
            wd = weight_decay
            if any(key in name for key in NO_DECAY_NAMES):
                wd = 0.0
            if isinstance(module, NORM_MODULE_TYPES):
                wd = weight_decay_norm
            if isinstance(module, nn.Embedding):
                wd = weight_decay_embed
            groups.append({"params": [param], "lr": lr, "weight_decay": wd})
    return groups


def _nan_to_num_(params: List[torch.Tensor]) -> None:
    for p in params:
        p.grad.nan_to_num_(nan=0.0, posinf=NAN_TO_NUM_LIMIT, neginf=-NAN_TO_NUM_LIMIT)


def _global_clipper(clip_cfg):
    """The closure Detectron2's optimizer wrapper calls with all parameters (an iterator) before each step."""
    clip_type = clip_cfg.CLIP_TYPE
    max_norm, norm_type = float(clip_cfg.CLIP_VALUE), float(clip_cfg.NORM_TYPE)

    def clip(all_params):
        params = [p for p in all_params if p.grad is not None]
        _nan_to_num_(params)
        if clip_type == "full_model":
            torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)

    return clip


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Build the optimizer described in the module docstring for ``model`` (before any DDP wrapping)."""
    solver = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_embed=solver.WEIGHT_DECAY_EMBED,
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
    )
    name = str(solver.OPTIMIZER).upper()
    if name == "ADAMW":
        optimizer_cls, kwargs = torch.optim.AdamW, {"lr": solver.BASE_LR}
    elif name == "SGD":
        optimizer_cls = torch.optim.SGD
        kwargs = {"lr": solver.BASE_LR, "momentum": solver.MOMENTUM, "nesterov": solver.NESTEROV}
    else:
        raise ValueError(f"SOLVER.OPTIMIZER must be 'ADAMW' or 'SGD', got {solver.OPTIMIZER!r}")

    clip = solver.CLIP_GRADIENTS
    if clip.ENABLED:
        if clip.CLIP_TYPE not in CLIP_TYPES:
            raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {CLIP_TYPES}, got {clip.CLIP_TYPE!r}")
        if clip.CLIP_TYPE in ("full_model", "nan_to_num"):
            optimizer_cls = _generate_optimizer_class_with_gradient_clipping(
                optimizer_cls, global_clipper=_global_clipper(clip)
            )
        else:
            optimizer_cls = maybe_add_gradient_clipping(cfg, optimizer_cls)
        logger.info("Gradient clipping: %s%s", clip.CLIP_TYPE,
                    "" if clip.CLIP_TYPE == "nan_to_num" else f" at {clip.CLIP_VALUE}")
    return optimizer_cls(groups, **kwargs)

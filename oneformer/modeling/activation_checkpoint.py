"""Activation checkpointing: trade compute for training memory by recomputing a block's activations in the backward
pass instead of keeping them (``torch.utils.checkpoint``, non-reentrant).

Config keys (added by ``add_oneformer_engine_config``; both False by default, i.e. the original behaviour):

- ``MODEL.BACKBONE.ACTIVATION_CHECKPOINT``: every block of the backbone — Swin: each SwinTransformerBlock (through
  the Swin's own ``use_checkpoint`` path, the original MODEL.SWIN.USE_CHECKPOINT); ConvNeXt: each Block; DiNAT:
  each NATLayer; Detectron2's ResNet: each residual block of res2..res5 (not the stem).
- ``MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT``: each deformable-attention encoder layer of the pixel
  decoder (MSDeformAttnTransformerEncoderLayer).

Only the module instances' ``forward`` is wrapped: parameter names, checkpoints and results are unchanged (the
gradients equal those without checkpointing; dropout and drop-path draw the same numbers in the recomputation, as
``torch.utils.checkpoint`` restores the RNG state). Checkpointing is active only in training with gradients enabled;
evaluation runs the plain forward. BatchNorm layers inside a checkpointed block do not update their running
statistics a second time during the recomputation.
"""
import contextlib
import functools
import logging
import types
from typing import Dict, List

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_module", "backbone_blocks", "encoder_layers", "apply_activation_checkpointing"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _frozen_batchnorm_stats(module: nn.Module):
    """While recomputing: BatchNorm layers of ``module`` normalize with the batch statistics as in the forward pass
    but leave running_mean / running_var / num_batches_tracked as they are (they were updated once already)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(bns, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _checkpointed_forward(self, *args, **kwargs):
    """``type(self).forward`` under ``torch.utils.checkpoint`` in training with gradients; plain otherwise. Bound to
    the instance without a closure, so that copies of the model (deepcopy, pickling) checkpoint themselves."""
    forward = functools.partial(type(self).forward, self)
    if not (self.training and torch.is_grad_enabled()):
        return forward(*args, **kwargs)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.modules())

    def contexts():  # (forward pass, recomputation)
        return contextlib.nullcontext(), (_frozen_batchnorm_stats(self) if has_bn else contextlib.nullcontext())

    return checkpoint(forward, *args, use_reentrant=False, context_fn=contexts, **kwargs)


def checkpoint_module(module: nn.Module) -> nn.Module:
    """Make ``module``'s forward checkpointed in training (an instance attribute; the class is untouched).
    Idempotent; returns ``module``."""
    if not getattr(module, "_activation_checkpointed", False):
        module.forward = types.MethodType(_checkpointed_forward, module)
        module._activation_checkpointed = True
    return module


def backbone_blocks(backbone: nn.Module) -> List[nn.Module]:
    """The modules checkpointed for MODEL.BACKBONE.ACTIVATION_CHECKPOINT (see module docstring); raises ValueError
    for a backbone of another kind."""
    from detectron2.layers import CNNBlockBase
    from detectron2.modeling.backbone import ResNet

    from .backbone.convnext import Block as ConvNeXtBlock
    from .backbone.dinat import NATLayer
    from .backbone.swin import BasicLayer, SwinTransformerBlock

    if any(isinstance(m, BasicLayer) for m in backbone.modules()):
        return [m for m in backbone.modules() if isinstance(m, SwinTransformerBlock)]
    for kind in (ConvNeXtBlock, NATLayer):
        blocks = [m for m in backbone.modules() if isinstance(m, kind)]
        if blocks:
            return blocks
    if isinstance(backbone, ResNet):
        return [block for stage in backbone.stages for block in stage if isinstance(block, CNNBlockBase)]
    raise ValueError(f"MODEL.BACKBONE.ACTIVATION_CHECKPOINT: no checkpointable blocks known for the backbone "
                     f"{type(backbone).__name__} (Swin, ConvNeXt, DiNAT and ResNet are supported)")


def encoder_layers(sem_seg_head: nn.Module) -> List[nn.Module]:
    """The pixel decoder's deformable encoder layers (MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT)."""
    from .pixel_decoder.msdeformattn import MSDeformAttnTransformerEncoderLayer

    layers = [m for m in sem_seg_head.modules() if isinstance(m, MSDeformAttnTransformerEncoderLayer)]
    if not layers:
        raise ValueError("MODEL.SEM_SEG_HEAD.ENCODER_ACTIVATION_CHECKPOINT: the pixel decoder "
                         f"{type(getattr(sem_seg_head, 'pixel_decoder', sem_seg_head)).__name__} has no "
                         "deformable encoder layers")
    return layers


def apply_activation_checkpointing(backbone: nn.Module, sem_seg_head: nn.Module, cfg) -> Dict[str, int]:
    """Checkpoint what the config asks for; returns {"backbone": blocks, "pixel_decoder": layers} (counts, logged)."""
    from .backbone.swin import BasicLayer

    done = {"backbone": 0, "pixel_decoder": 0}
    if cfg.MODEL.BACKBONE.get("ACTIVATION_CHECKPOINT", False):
        blocks = backbone_blocks(backbone)
        swin_layers = [m for m in backbone.modules() if isinstance(m, BasicLayer)]
        if swin_layers:  # the Swin's own checkpoint path (the original MODEL.SWIN.USE_CHECKPOINT)
            for layer in swin_layers:
                layer.use_checkpoint = True
        else:
            for block in blocks:
                checkpoint_module(block)
        done["backbone"] = len(blocks)
    if cfg.MODEL.SEM_SEG_HEAD.get("ENCODER_ACTIVATION_CHECKPOINT", False):
        layers = encoder_layers(sem_seg_head)
        for layer in layers:
            checkpoint_module(layer)
        done["pixel_decoder"] = len(layers)
    if any(done.values()):
        logger.info("Activation checkpointing: %d backbone blocks, %d pixel-decoder encoder layers",
                    done["backbone"], done["pixel_decoder"])
    return done

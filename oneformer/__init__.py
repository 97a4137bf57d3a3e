"""OneFormer as a Detectron2 extension.

``import oneformer`` registers every component (meta-architecture "OneFormer", head "OneFormerHead", pixel decoder
"MSDeformAttnPixelDecoder", transformer decoder "ContrastiveMultiScaleMaskedTransformerDecoder", backbones
"D2SwinTransformer", "D2ConvNeXt", "D2DiNAT") in Detectron2's registries, registers the task-aware dataset mappers
and the original datasets with their metadata, and re-exports the config adders.
"""
import warnings

import torch

# the oldest torch tested (CI's oldest stack; pyproject.toml declares the same range)
MIN_TORCH = (2, 11)
if tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2]) < MIN_TORCH:
    raise ImportError(f"oneformer needs torch >= {'.'.join(map(str, MIN_TORCH))}, found {torch.__version__}: "
                      "pip install 'torch>=2.11,<2.15' torchvision")

with warnings.catch_warnings():
    # fvcore.nn.focal_loss and detectron2.modeling.box_regression call torch.jit.script when imported, which torch 2.14
    # answers with a deprecation note on every run; this package uses neither TorchScript function, so importing
    # them here first keeps the note out of every OneFormer command (a later torch.jit.script call still warns)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")  # torch 2.11: a DeprecationWarning
    import fvcore.nn  # noqa: F401
    import detectron2.modeling  # noqa: F401

from . import data, modeling, ops  # noqa: F401  (registration)
from .config import (  # noqa: F401
    add_common_config,
    add_convnext_config,
    add_dinat_config,
    add_oneformer_config,
    add_oneformer_config_all,
    add_swin_config,
)
from .oneformer_model import OneFormer  # noqa: F401

__version__ = "0.1.0"

"""OneFormer as a Detectron2 extension.

``import oneformer`` registers every component (meta-architecture "OneFormer", head "OneFormerHead", pixel decoder
"MSDeformAttnPixelDecoder", transformer decoder "ContrastiveMultiScaleMaskedTransformerDecoder", backbones
"D2SwinTransformer", "D2ConvNeXt", "D2DiNAT") in Detectron2's registries, registers the task-aware dataset mappers
and the original datasets with their metadata, and re-exports the config adders.
"""
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

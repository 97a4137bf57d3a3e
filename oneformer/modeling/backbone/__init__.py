"""Backbones registered in BACKBONE_REGISTRY: D2SwinTransformer, D2ConvNeXt, D2DiNAT."""
from .convnext import D2ConvNeXt  # noqa: F401
from .dinat import D2DiNAT  # noqa: F401
from .swin import D2SwinTransformer  # noqa: F401

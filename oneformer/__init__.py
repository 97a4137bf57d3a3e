"""OneFormer as a Detectron2 extension.

``import oneformer`` registers every component (meta-architecture, head, pixel decoder, transformer decoder,
backbones, dataset mappers) in Detectron2's registries and re-exports the config adders.
"""
from .config import (  # noqa: F401
    add_common_config,
    add_convnext_config,
    add_dinat_config,
    add_oneformer_config,
    add_oneformer_config_all,
    add_swin_config,
)
from . import ops  # noqa: F401
from . import modeling  # noqa: F401

__version__ = "0.1.0"

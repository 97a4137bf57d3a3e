"""Segmentation heads (registered in SEM_SEG_HEADS_REGISTRY)."""
from .oneformer_head import OneFormerHead  # noqa: F401

"""Multi-scale deformable attention: compiled CPU/CUDA kernels, a PyTorch reference, and the ``MSDeformAttn`` layer.

Public entry points: :func:`ms_deform_attn` (the core op) and :class:`MSDeformAttn` (the layer).
"""
from .functional import ENV_VAR, IMPLS, extension_status, ms_deform_attn, resolve_impl  # noqa: F401
from .modules import MSDeformAttn  # noqa: F401
from .reference import ms_deform_attn_pytorch  # noqa: F401

__all__ = ["ms_deform_attn", "MSDeformAttn", "ms_deform_attn_pytorch", "resolve_impl", "extension_status",
           "IMPLS", "ENV_VAR"]

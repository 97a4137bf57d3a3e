"""Pixel decoders (registered in SEM_SEG_HEADS_REGISTRY)."""
from . import msdeformattn  # noqa: F401  (MSDeformAttnPixelDecoder)

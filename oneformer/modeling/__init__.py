"""Model components; importing this package registers them in Detectron2's registries."""
from . import backbone  # noqa: F401  (D2SwinTransformer, D2ConvNeXt, D2DiNAT)
from . import pixel_decoder  # noqa: F401  (MSDeformAttnPixelDecoder)
from . import meta_arch  # noqa: F401  (OneFormerHead)
from .transformer_decoder.oneformer_transformer_decoder import (  # noqa: F401
    TRANSFORMER_DECODER_REGISTRY,
    ContrastiveMultiScaleMaskedTransformerDecoder,
)

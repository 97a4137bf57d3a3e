"""Model components; importing this package registers them in Detectron2's registries."""
from . import backbone  # noqa: F401  (registers D2SwinTransformer, D2ConvNeXt, D2DiNAT)

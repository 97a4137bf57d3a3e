"""``OneFormerHead``: pixel decoder + task-conditioned transformer decoder (SEM_SEG_HEADS_REGISTRY "OneFormerHead")."""
from typing import Dict

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import nn

from ..transformer_decoder.oneformer_transformer_decoder import build_transformer_decoder

__all__ = ["OneFormerHead", "build_pixel_decoder"]


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]) -> nn.Module:
    """Build the pixel decoder named by MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME; it must have ``forward_features``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} has no forward_features(); OneFormerHead needs a pixel "
            "decoder that returns (mask_features, encoder features, multi-scale features, spatial shapes, level "
            "start index), e.g. 'MSDeformAttnPixelDecoder'"
        )
    return model


@SEM_SEG_HEADS_REGISTRY.register()
class OneFormerHead(nn.Module):
    """Runs the pixel decoder on backbone features, then the transformer decoder with the task tokens."""

    _version = 2

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: backbone feature shapes used by the pixel decoder.
            num_classes: K.
            pixel_decoder: module with ``forward_features``.
            transformer_predictor: the transformer decoder (called ``predictor``, its checkpoint prefix).
            transformer_in_feature: must be "multi_scale_pixel_decoder" (the only input that carries task tokens).
        """
        super().__init__()
        if transformer_in_feature != "multi_scale_pixel_decoder":
            raise ValueError(
                "MODEL.ONE_FORMER.TRANSFORMER_IN_FEATURE must be 'multi_scale_pixel_decoder' for OneFormerHead, got "
                f"{transformer_in_feature!r}"
            )
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda kv: kv[1].stride)]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.num_classes = num_classes
        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        missing = [k for k in head.IN_FEATURES if k not in input_shape]
        if missing:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not produced by the backbone "
                             f"(it gives {sorted(input_shape)})")
        input_shape = {k: v for k, v in input_shape.items() if k in head.IN_FEATURES}
        return {
            "input_shape": input_shape,
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": cfg.MODEL.ONE_FORMER.TRANSFORMER_IN_FEATURE,
            "transformer_predictor": build_transformer_decoder(cfg, head.CONVS_DIM, mask_classification=True),
        }

    def forward(self, features: Dict[str, torch.Tensor], tasks: torch.Tensor, mask=None) -> Dict:
        """features: backbone outputs by name; tasks: (B, hidden_dim). Returns the transformer decoder's dict."""
        return self.decode(self.encode(features), tasks, mask)

    def encode(self, features: Dict[str, torch.Tensor]):
        """The task-independent part: (mask_features (B, MASK_DIM, H/4, W/4), [multi-scale features (B, C, h, w)]),
        so that several task tokens can be decoded from one pixel-decoder pass (``decode``)."""
        mask_features, _, multi_scale_features, _, _ = self.pixel_decoder.forward_features(features)
        return mask_features, multi_scale_features

    def decode(self, encoded, tasks: torch.Tensor, mask=None) -> Dict:
        """The task-conditioned transformer decoder on ``encode``'s output; tasks: (B, hidden_dim)."""
        mask_features, multi_scale_features = encoded
        return self.predictor(multi_scale_features, mask_features, tasks, mask)

"""What the Detectron2 backbone wrappers D2SwinTransformer, D2ConvNeXt and D2DiNAT share.

``input_channels`` reads the image channels from the ``input_shape`` Detectron2 passes; ``init_trunc_normal`` is the
weight initialization of the three feature extractors; ``D2BackboneMixin`` holds the Detectron2 ``Backbone`` plumbing
(OUT_FEATURES check and filtering, input check, ``output_shape``, ``size_divisibility``). None of them adds parameters
or buffers, so state-dict names and shapes are those of the wrapped feature extractor.
"""
from typing import Dict, Iterable, Tuple, Type

import torch
import torch.nn as nn
from detectron2.layers import ShapeSpec

__all__ = ["input_channels", "init_trunc_normal", "D2BackboneMixin"]


def input_channels(input_shape, default: int = 3) -> int:
    """The channels of ``input_shape`` (a ShapeSpec), or ``default`` when it or its channels are None."""
    return input_shape.channels if input_shape is not None and input_shape.channels is not None else default


def init_trunc_normal(module: nn.Module, types: Tuple[Type[nn.Module], ...] = (nn.Linear,)) -> None:
    """Initialize one module in place (meant for ``model.apply``); returns None.

    Modules of ``types`` get weights from a normal distribution truncated to [-2, 2] with std 0.02 and zero biases;
    ``nn.LayerNorm`` modules get weight 1 and bias 0; other modules are left alone.
    """
    if isinstance(module, types):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class D2BackboneMixin:
    """Detectron2 ``Backbone`` methods for a feature extractor whose ``forward`` returns {"res2".. "res5": NCHW map}.

    Use as ``class D2X(D2BackboneMixin, X, Backbone)`` and call ``_init_outputs`` at the end of ``__init__``; the
    wrapper's ``forward`` checks its input with ``_check_input`` and returns ``_select_outputs(X.forward(self, x))``.
    Output strides are 32 at most, hence ``size_divisibility`` 32.
    """

    def _init_outputs(
        self,
        in_chans: int,
        out_features: Iterable[str],
        strides: Dict[str, int],
        channels: Dict[str, int],
        unknown_error: str,
    ) -> None:
        """Record the input channels and the requested outputs with their strides and channels; returns None.

        ``strides`` and ``channels`` map every feature name the extractor can produce to its stride and channels.
        Raises AssertionError with ``unknown_error.format(unknown=[names])`` when ``out_features`` names others.
        """
        self._in_chans = in_chans
        self._out_features = list(out_features)
        unknown = [f for f in self._out_features if f not in strides]
        assert not unknown, unknown_error.format(unknown=unknown)
        self._out_feature_strides = dict(strides)
        self._out_feature_channels = dict(channels)

    def _check_input(self, x: torch.Tensor, model_name: str, skip_channel_check: bool = False) -> None:
        """Assert that ``x`` is (N, in_chans, H, W); returns None.

        ``skip_channel_check`` (for traced exports, where sizes are traced values) checks the rank only.
        """
        assert x.dim() == 4 and (skip_channel_check or x.shape[1] == self._in_chans), (
            f"{model_name} takes an input of shape (N, {self._in_chans}, H, W); got {tuple(x.shape)} instead"
        )

    def _select_outputs(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """The entries of ``features`` named in OUT_FEATURES (in ``features``' order)."""
        return {k: v for k, v in features.items() if k in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{name: ShapeSpec(channels, stride)} for every name in OUT_FEATURES."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32

"""ONNX translation of ``torch.ops.oneformer.ms_deform_attn`` for the dynamo-based exporter (opset 18).

``torch.onnx.export(..., dynamo=True, custom_translation_table=CUSTOM_TRANSLATION_TABLE)`` calls
:func:`ms_deform_attn_onnx` with the node's ONNX values while it builds the graph, so its Python loop over the levels
is unrolled. Per level: the level's slice of ``value`` as (N * M, D, H_l, W_l) maps, then ``GridSample`` (bilinear,
zero padding, align_corners 0) at the level's locations, then the attention-weighted sum over levels and points;
the same computation as :func:`oneformer.ops.reference.ms_deform_attn_pytorch_levels`, with the level sizes read
from ``spatial_shapes`` / ``level_start_index`` in the graph, so the graph follows the input size.
"""
import operator

import torch
from onnxscript import FLOAT, INT64
from onnxscript import opset18 as op

from .. import ops  # noqa: F401  (registers torch.ops.oneformer.ms_deform_attn when the extension is built)

__all__ = ["ONNX_OPSET", "ms_deform_attn_onnx", "CUSTOM_TRANSLATION_TABLE"]

ONNX_OPSET = 18


def _i64(*values):
    return op.Constant(value_ints=list(values))


def ms_deform_attn_onnx(value: FLOAT, spatial_shapes: INT64, level_start_index: INT64, sampling_locations: FLOAT,
                        attention_weights: FLOAT) -> FLOAT:
    """value (N, S, M, D), spatial_shapes (L, 2), level_start_index (L,), sampling_locations (N, Lq, M, L, P, 2),
    attention_weights (N, Lq, M, L, P) -> (N, Lq, M * D)."""
    num_levels = sampling_locations.shape[3]
    if not isinstance(num_levels, int):
        raise ValueError("ms_deform_attn: the number of levels must be static for the ONNX translation")
    value_shape = op.Shape(value)
    N, M, D = (op.Slice(value_shape, _i64(i), _i64(i + 1)) for i in (0, 2, 3))
    loc_shape = op.Shape(sampling_locations)
    Lq, P = op.Slice(loc_shape, _i64(1), _i64(2)), op.Slice(loc_shape, _i64(4), _i64(5))
    NM = op.Mul(N, M)
    # (N, Lq, M, L, P, 2) -> (N, M, Lq, L, P, 2), grid_sample coordinates in [-1, 1]
    grids = op.Sub(op.Mul(op.Transpose(sampling_locations, perm=[0, 2, 1, 3, 4, 5]), op.Constant(value_float=2.0)),
                   op.Constant(value_float=1.0))
    value_t = op.Transpose(value, perm=[0, 2, 3, 1])  # (N, M, D, S)
    sampled = []
    for lvl in range(num_levels):
        hw = op.Gather(spatial_shapes, _i64(lvl), axis=0)  # (1, 2)
        h, w = op.Slice(hw, _i64(0), _i64(1), _i64(1)), op.Slice(hw, _i64(1), _i64(2), _i64(1))
        start = op.Reshape(op.Gather(level_start_index, _i64(lvl), axis=0), _i64(1))
        end = op.Add(start, op.Reshape(op.Mul(h, w), _i64(1)))
        value_l = op.Reshape(op.Slice(value_t, start, end, _i64(3)),
                             op.Concat(NM, D, op.Reshape(h, _i64(1)), op.Reshape(w, _i64(1)), axis=0))
        grid_l = op.Reshape(op.Gather(grids, _i64(lvl), axis=3), op.Concat(NM, Lq, P, _i64(2), axis=0))
        sample = op.GridSample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=0)
        sampled.append(op.Unsqueeze(sample, _i64(3)))  # (N * M, D, Lq, 1, P)
    stacked = op.Concat(*sampled, axis=3)  # (N * M, D, Lq, L, P)
    stacked = op.Reshape(stacked, op.Concat(NM, D, Lq, _i64(-1), axis=0))
    weights = op.Reshape(op.Transpose(attention_weights, perm=[0, 2, 1, 3, 4]),
                         op.Concat(NM, _i64(1), Lq, _i64(-1), axis=0))
    out = op.ReduceSum(op.Mul(stacked, weights), _i64(-1), keepdims=0)  # (N * M, D, Lq)
    out = op.Reshape(out, op.Concat(N, op.Mul(M, D), Lq, axis=0))
    return op.Transpose(out, perm=[0, 2, 1])


def remainder_scalar_onnx(self, other):
    """``aten.remainder.Scalar`` whose divisor may be a symbolic size (the Swin window index arithmetic: positions
    modulo the padded map size), which the exporter's own translation takes only as a constant. Python's modulo (the
    sign of the divisor): ONNX Mod with fmod 0 for integers, self - floor(self / other) * other for floats."""
    if isinstance(other, (int, float)):
        other = op.Constant(value_float=float(other))
    other = op.CastLike(other, self)
    if self.dtype is not None and self.dtype.is_integer():
        return op.Mod(self, other, fmod=0)
    return op.Sub(self, op.Mul(op.Floor(op.Div(self, other)), other))


def floordiv_onnx(self: INT64, other: INT64) -> INT64:
    """Python's ``//`` on symbolic sizes, rounding toward minus infinity (the exporter's own translation is ONNX
    Div, which truncates: right for non-negative operands only, and a negative numerator makes e.g. a ceil division
    written ``-(-n // k)`` come out wrong)."""
    q = op.Div(self, other)
    inexact = op.Not(op.Equal(op.Sub(self, op.Mul(q, other)), op.CastLike(op.Constant(value_int=0), self)))
    zero = op.CastLike(op.Constant(value_int=0), self)
    signs_differ = op.Not(op.Equal(op.Less(self, zero), op.Less(other, zero)))
    return op.Sub(q, op.CastLike(op.And(inexact, signs_differ), q))


CUSTOM_TRANSLATION_TABLE = {
    torch.ops.aten.remainder.Scalar: remainder_scalar_onnx,
    operator.floordiv: floordiv_onnx,
}
if hasattr(torch.ops.oneformer, "ms_deform_attn"):
    CUSTOM_TRANSLATION_TABLE[torch.ops.oneformer.ms_deform_attn.default] = ms_deform_attn_onnx

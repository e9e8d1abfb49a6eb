"""Choosing quantization params: weights, biases, activations and constants.

Weights are int8 symmetric per output channel in [-127, 127] (zero point 0); biases int32 with
scale s_x * s_w[c] (a float32 product); activations int8 asymmetric per tensor with a range that
always includes 0, so 0.0 (padding, ReLU's floor) is exactly representable.
"""
from __future__ import annotations

import numpy as np

from converter.ir import Quantization
from converter.ops.int8_reference import INT32_MAX, INT32_MIN, QMAX, QMIN, WEIGHT_QMAX, f32

# A range of width zero (a tensor that is always 0) still needs a usable scale.
DEGENERATE_SCALE = 1.0
# Scales are floored so a requantization multiplier stays below 2**30 for any sane partner scale.
MIN_SCALE = 1e-10


def activation_params(low: float, high: float) -> Quantization:
    """int8 asymmetric per-tensor params covering [min(low, 0), max(high, 0)]."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"range [{low}, {high}] is not finite")
    width = high - low
    scale = f32(max(width / (QMAX - QMIN), MIN_SCALE)) if width > 0 else DEGENERATE_SCALE
    zero_point = int(np.clip(QMIN - round(low / scale), QMIN, QMAX))
    return Quantization(scale=(scale,), zero_point=(zero_point,), axis=0)


def representable_range(params: Quantization) -> tuple[float, float]:
    scale, zero_point = f32(params.scale[0]), int(params.zero_point[0])
    return (QMIN - zero_point) * scale, (QMAX - zero_point) * scale


def weight_scales(weights: np.ndarray, axis: int) -> np.ndarray:
    """Per-channel symmetric scales max|w_c| / 127 as float32 (1.0 for an all-zero channel)."""
    w = np.moveaxis(np.asarray(weights, np.float64), axis, 0).reshape(weights.shape[axis], -1)
    peak = np.max(np.abs(w), axis=1) if w.shape[1] else np.zeros(w.shape[0])
    return np.where(peak > 0, peak / WEIGHT_QMAX, 1.0).astype(np.float32)


# The int32 bias may use at most this magnitude, leaving the rest of the accumulator's range to
# the products (K * 255 * 127 stays below 2**30 up to K = 33,000).
BIAS_LIMIT = 2.0 ** 30


def bias_scale_floor(bias: np.ndarray, input_scale: float) -> np.ndarray:
    """The smallest per-channel weight scale that keeps |bias / (s_x * s_w)| within BIAS_LIMIT: a
    channel whose weights are all tiny (a unit weight decay drove to zero) but whose bias is not
    would otherwise overflow the int32 accumulator."""
    return np.abs(np.asarray(bias, np.float64)) / (float(input_scale) * BIAS_LIMIT)


def quantize_weights(weights: np.ndarray, axis: int, scale_floor: np.ndarray | None = None
                     ) -> tuple[np.ndarray, Quantization]:
    """int8 per-channel symmetric weights along ``axis`` and their params; ``scale_floor`` raises
    the scale of channels whose bias would not fit the accumulator (see bias_scale_floor)."""
    scales = weight_scales(weights, axis)
    if scale_floor is not None:
        scales = np.maximum(scales.astype(np.float64), scale_floor).astype(np.float32)
    shape = [1] * weights.ndim
    shape[axis] = scales.size
    q = np.clip(np.rint(np.asarray(weights, np.float64) / scales.astype(np.float64).reshape(shape)),
                -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    params = Quantization(scale=tuple(float(s) for s in scales), zero_point=(0,) * scales.size, axis=axis)
    return q, params


def quantize_bias(bias: np.ndarray, input_scale: float, weight: Quantization) -> tuple[np.ndarray, Quantization]:
    """int32 bias with scale[c] = float32(s_x * s_w[c]), zero point 0."""
    scales = (np.float32(input_scale) * np.asarray(weight.scale, np.float32)).astype(np.float32)
    scales = np.broadcast_to(scales, np.asarray(bias).shape)
    q = np.clip(np.rint(np.asarray(bias, np.float64) / scales.astype(np.float64)), INT32_MIN, INT32_MAX)
    params = Quantization(scale=tuple(float(s) for s in scales), zero_point=(0,) * scales.size, axis=0)
    return q.astype(np.int32), params


def constant_params(values: np.ndarray) -> Quantization:
    """Per-tensor asymmetric params for a constant operand (Add/Mul/Concat/BatchMatMul input)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return activation_params(0.0, 0.0)
    return activation_params(float(values.min()), float(values.max()))

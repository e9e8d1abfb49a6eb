"""Cut-tensor compression: none, fp16, or int8 with an affine map per channel or per tensor.

One table (``MODES``) lists what a runner may ask for. int8 maps each group of values (one channel
of the last axis for ``int8``, the whole tensor for ``int8-per-tensor``) with
``q = clip(round(x / scale) + zero_point, -128, 127)`` and ``x' = scale * (q - zero_point)``, the
map chosen so [min, max] of the group (widened to include 0, as activation quantizers do so that
zero stays exact, e.g. after ReLU) spans all 256 levels. Each element's round-trip error is at most
scale / 2 = (max - min) / 510 of its own group.

Why per channel is the default int8: activations in NHWC order (the runtime's layout) and
[tokens, hidden] sequences keep their channels on the last axis, and channels differ in range by
one or two orders of magnitude after a depthwise conv or a projection. One scale for the tensor
spends the 256 levels on the widest channel, and the narrow ones round to a few levels: on
full-width MobileNetV2 that put the logits 6.5 % off (benchmarks/README.md, "Compression error").
A scale per channel costs 4 + 4 bytes of header per channel (``channel_scales`` and
``channel_zero_points`` in TensorHeader), so it is used only when every channel holds at least
``MIN_PER_CHANNEL_GROUP`` values; smaller tensors, vectors and scalars fall back to one map.

Only float32 tensors are compressed; integer and bool tensors (token ids, masks) always travel as
they are, whatever the requested mode. ``Encoded.mode`` is the mode actually applied.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

MODES = ("none", "fp16", "int8", "int8-per-tensor")

# A channel must hold at least this many values for its own scale and zero point (8 header bytes) to
# be worth sending; below that the tensor gets one map.
MIN_PER_CHANNEL_GROUP = 16
# Header bytes per channel of a per-channel int8 tensor: a float scale and an int32 zero point.
PER_CHANNEL_HEADER_BYTES = 8


@dataclass(frozen=True)
class Encoded:
    """A tensor ready for the wire: its bytes and how to read them back."""

    mode: str                      # the mode actually applied ("none" for non-float tensors)
    data: bytes
    scale: float = 0.0             # int8-per-tensor
    zero_point: int = 0
    channel_scales: tuple[float, ...] = field(default=())      # int8 (per channel of the last axis)
    channel_zero_points: tuple[int, ...] = field(default=())


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"compression must be one of {MODES}, got {mode!r}")
    return mode


def applies(mode: str, dtype) -> bool:
    return mode != "none" and np.dtype(dtype) == np.float32


def applied_mode(mode: str, dtype, shape: Sequence[int]) -> str:
    """The mode ``encode`` applies to a tensor of ``dtype`` and ``shape`` when asked for ``mode``."""
    check_mode(mode)
    if not applies(mode, dtype):
        return "none"
    if mode == "int8" and not per_channel_fits(shape):
        return "int8-per-tensor"
    return mode


def per_channel_fits(shape: Sequence[int]) -> bool:
    if len(shape) < 2 or int(shape[-1]) < 1:
        return False
    count = int(np.prod(shape, dtype=np.int64))
    return count // int(shape[-1]) >= MIN_PER_CHANNEL_GROUP


def wire_itemsize(mode: str, dtype) -> int:
    """Bytes per element of the tensor data on the wire (headers not counted) under ``mode``."""
    if not applies(mode, dtype):
        return np.dtype(dtype).itemsize
    return 2 if mode == "fp16" else 1


def data_bytes(mode: str, dtype, num_elements: int) -> int:
    """Bytes of tensor data (chunks) a tensor of ``num_elements`` takes under the mode applied to it."""
    return wire_itemsize(mode, dtype) * int(num_elements)


def wire_bytes(mode: str, dtype, shape: Sequence[int]) -> int:
    """Everything a tensor costs on the wire under requested ``mode``: its data, plus the per-channel
    scales and zero points when per-channel int8 applies (what the partitioner charges)."""
    applied = applied_mode(mode, dtype, shape)
    count = int(np.prod(shape, dtype=np.int64))
    extra = PER_CHANNEL_HEADER_BYTES * int(shape[-1]) if applied == "int8" else 0
    return data_bytes(applied, dtype, count) + extra


def int8_params(array: np.ndarray) -> tuple[float, int]:
    """(scale, zero_point) mapping [min(x, 0), max(x, 0)] onto [-128, 127]."""
    scales, zero_points = _affine(np.asarray(array, np.float32).reshape(1, -1))
    return float(scales[0]), int(zero_points[0])


def int8_channel_params(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of the last axis: (float32 scales, int32 zero points), as ``int8_params``."""
    return _affine(np.asarray(array, np.float32).reshape(-1, array.shape[-1]).T)


def _affine(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (scale, zero point) per row of ``groups``."""
    if groups.size == 0:
        return np.ones(groups.shape[0], np.float32), np.zeros(groups.shape[0], np.int32)
    low = np.minimum(groups.min(axis=1), 0.0).astype(np.float64)
    high = np.maximum(groups.max(axis=1), 0.0).astype(np.float64)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError("int8 compression needs finite values; the tensor holds inf or nan")
    flat = high == low
    scale = np.where(flat, 1.0, (high - low) / 255.0)
    zero_point = np.where(flat, 0, np.clip(np.round(-128.0 - low / scale), -128, 127))
    return scale.astype(np.float32), zero_point.astype(np.int32)


def quantize_int8(array: np.ndarray, scale, zero_point) -> np.ndarray:
    """``clip(round(x / scale) + zero_point, -128, 127)`` as int8 (scale may broadcast per channel)."""
    return np.clip(np.round(array / scale) + zero_point, -128, 127).astype(np.int8)


def encode(array: np.ndarray, mode: str) -> Encoded:
    array = np.ascontiguousarray(array)
    applied = applied_mode(mode, array.dtype, array.shape)
    if applied == "none":
        return Encoded("none", array.tobytes())
    if applied == "fp16":
        return Encoded("fp16", array.astype(np.float16).tobytes())
    if applied == "int8-per-tensor":
        scale, zero_point = int8_params(array)
        return Encoded(applied, quantize_int8(array, np.float32(scale), zero_point).tobytes(), scale, zero_point)
    scales, zero_points = int8_channel_params(array)
    quantized = quantize_int8(array, scales, zero_points)  # broadcasts along the last axis
    return Encoded("int8", quantized.tobytes(), channel_scales=tuple(float(s) for s in scales),
                   channel_zero_points=tuple(int(z) for z in zero_points))


def decode(data: bytes | memoryview, mode: str, dtype, shape, scale: float = 0.0, zero_point: int = 0, *,
           channel_scales: Sequence[float] = (), channel_zero_points: Sequence[int] = ()) -> np.ndarray:
    """The array ``encode`` produced ``data`` from. The caller has checked the byte length and, for
    per-channel int8, that there is one finite positive scale and one in-range zero point per channel."""
    dtype = np.dtype(dtype)
    if mode == "none":
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if dtype != np.float32:
        raise ValueError(f"{mode} compression applies to float32 tensors only, not {dtype.name}")
    if mode == "fp16":
        return np.frombuffer(data, dtype=np.float16).reshape(shape).astype(np.float32)
    quantized = np.frombuffer(data, dtype=np.int8).reshape(shape).astype(np.float32)
    if mode == "int8-per-tensor":
        return (np.float32(scale) * (quantized - np.float32(zero_point))).astype(np.float32)
    if mode == "int8":
        scales = np.asarray(channel_scales, np.float32)
        zero_points = np.asarray(channel_zero_points, np.float32)
        if len(shape) < 1 or scales.shape != (shape[-1],) or zero_points.shape != (shape[-1],):
            raise ValueError(f"per-channel int8 needs {shape[-1] if len(shape) else 0} scales and zero points "
                             f"(one per channel of the last axis), got {scales.size} and {zero_points.size}")
        return (scales * (quantized - zero_points)).astype(np.float32)
    raise ValueError(f"unknown compression {mode!r}")

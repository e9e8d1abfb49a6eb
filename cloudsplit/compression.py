"""Cut-tensor compression: none, fp16, or int8 with one affine map per tensor.

int8: ``q = clip(round(x / scale) + zero_point, -128, 127)`` and ``x' = scale * (q - zero_point)``
with the map chosen so [min(x), max(x)] (widened to include 0, as activation quantizers do so that
zero stays exact, e.g. after ReLU) spans all 256 levels. The round-trip error of each element is at
most scale / 2 = (max - min) / 510. Only float32 tensors are compressed; integer and bool tensors
(token ids, masks) always travel as they are, whatever the requested mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("none", "fp16", "int8")


@dataclass(frozen=True)
class Encoded:
    """A tensor ready for the wire: its bytes and how to read them back."""

    mode: str               # the mode actually applied ("none" for non-float tensors)
    data: bytes
    scale: float = 0.0
    zero_point: int = 0


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"compression must be one of {MODES}, got {mode!r}")
    return mode


def applies(mode: str, dtype) -> bool:
    return mode != "none" and np.dtype(dtype) == np.float32


def wire_itemsize(mode: str, dtype) -> int:
    """Bytes per element on the wire for a tensor of ``dtype`` under ``mode``."""
    if not applies(mode, dtype):
        return np.dtype(dtype).itemsize
    return 2 if mode == "fp16" else 1


def wire_bytes(mode: str, dtype, num_elements: int) -> int:
    return wire_itemsize(mode, dtype) * int(num_elements)


def int8_params(array: np.ndarray) -> tuple[float, int]:
    """(scale, zero_point) mapping [min(x, 0), max(x, 0)] onto [-128, 127]."""
    if array.size == 0:
        return 1.0, 0
    low = min(float(np.min(array)), 0.0)
    high = max(float(np.max(array)), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("int8 compression needs finite values; the tensor holds inf or nan")
    if high == low:
        return 1.0, 0
    scale = (high - low) / 255.0
    zero_point = int(np.clip(np.round(-128.0 - low / scale), -128, 127))
    return scale, zero_point


def encode(array: np.ndarray, mode: str) -> Encoded:
    check_mode(mode)
    array = np.ascontiguousarray(array)
    if not applies(mode, array.dtype):
        return Encoded("none", array.tobytes())
    if mode == "fp16":
        return Encoded("fp16", array.astype(np.float16).tobytes())
    scale, zero_point = int8_params(array)
    quantized = np.clip(np.round(array / np.float32(scale)) + zero_point, -128, 127).astype(np.int8)
    return Encoded("int8", quantized.tobytes(), float(np.float32(scale)), zero_point)


def decode(data: bytes | memoryview, mode: str, dtype, shape, scale: float = 0.0, zero_point: int = 0) -> np.ndarray:
    """The array ``encode`` produced ``data`` from. The caller has checked the byte length."""
    dtype = np.dtype(dtype)
    if mode == "none":
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
    if dtype != np.float32:
        raise ValueError(f"{mode} compression applies to float32 tensors only, not {dtype.name}")
    if mode == "fp16":
        return np.frombuffer(data, dtype=np.float16).reshape(shape).astype(np.float32)
    if mode == "int8":
        quantized = np.frombuffer(data, dtype=np.int8).reshape(shape).astype(np.float32)
        return (np.float32(scale) * (quantized - np.float32(zero_point))).astype(np.float32)
    raise ValueError(f"unknown compression {mode!r}")

"""Sampling an input at positions given as data: GridSample.

GridSample reads x at the normalised coordinates of a grid (ONNX's GridSample, opset 16 and the
N-D form of 20), with 1, 2 or 3 spatial dims. It is layout-sensitive: the runtime samples
channels-last, so one position's channels are contiguous.
"""
from __future__ import annotations

import itertools

import numpy as np

from converter.edgefb.GridSampleOptions import GridSampleOptionsT
from converter.edgefb.GridSamplePadding import GridSamplePadding
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.ResizeMode import ResizeMode
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import fail, layout_of, need, require_nhwc

GRID_SAMPLE_MODES = {"nearest": ResizeMode.NEAREST, "linear": ResizeMode.LINEAR, "cubic": ResizeMode.CUBIC}
GRID_SAMPLE_PADDINGS = {"zeros": GridSamplePadding.ZEROS, "border": GridSamplePadding.BORDER,
                        "reflection": GridSamplePadding.REFLECTION}
TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


def _grid_sample_infer(types, attrs):
    op = "GridSample"
    need(op, types, 2)
    x, grid = types
    if x.dtype != "float32" or grid.dtype != "float32":
        fail(op, f"x is {x.dtype} and grid {grid.dtype}; float32 only")
    dims = x.rank - 2
    if not 1 <= dims <= 3 or grid.rank != x.rank or grid.shape[0] != x.shape[0] or grid.shape[-1] != dims:
        fail(op, f"x {x.shape} and grid {grid.shape} must be [N, C, S1..Sk] and [N, O1..Ok, k] with k = 1, 2 or 3")
    if attrs.get("mode", "linear") not in GRID_SAMPLE_MODES:
        fail(op, f"mode {attrs.get('mode')!r} is not one of {', '.join(GRID_SAMPLE_MODES)}")
    if attrs.get("padding_mode", "zeros") not in GRID_SAMPLE_PADDINGS:
        fail(op, f"padding_mode {attrs.get('padding_mode')!r} is not one of {', '.join(GRID_SAMPLE_PADDINGS)}")
    nhwc = layout_of(op, attrs) == "NHWC"
    spatial = x.shape[1:-1] if nhwc else x.shape[2:]
    if 0 in spatial:
        fail(op, f"x {x.shape} has no pixels to sample")
    channels = x.shape[-1] if nhwc else x.shape[1]
    out = grid.shape[1:-1]
    return [TensorType("float32", (x.shape[0], *out, channels) if nhwc else (x.shape[0], channels, *out))]


def _reflect(v: np.ndarray, low: np.float32, high: np.float32) -> np.ndarray:
    """v mirrored into [low, high] as often as needed (period: twice the extent)."""
    extent = np.float32(high - low)
    if extent <= 0:
        return np.full_like(v, low)
    with np.errstate(invalid="ignore"):
        below = np.fmod(low - v, np.float32(2) * extent)
        above = np.fmod(v - high, np.float32(2) * extent)
    return np.where(v < low, np.where(below <= extent, low + below, high - (below - extent)),
                    np.where(v > high, np.where(above <= extent, high - above, low + (above - extent)), v))


def _cubic_weights(t: np.ndarray) -> list[np.ndarray]:
    """Keys' cubic convolution weights (A = -0.75) of the taps at -1, 0, 1, 2 from floor(v)."""
    a = np.float32(-0.75)
    one, two = np.float32(1), np.float32(2)
    t1, u, u1 = t + one, one - t, two - t
    return [((a * t1 - 5 * a) * t1 + 8 * a) * t1 - 4 * a, ((a + 2) * t - (a + 3)) * t * t + one,
            ((a + 2) * u - (a + 3)) * u * u + one, ((a * u1 - 5 * a) * u1 + 8 * a) * u1 - 4 * a]


def _taps(g: np.ndarray, size: int, mode: str, padding: str, align_corners: bool):
    """One dim's taps for the normalised coordinates g: ([T] index arrays clamped into range,
    [T] weight arrays, [T] inside masks, a mask of coordinates that give NaN)."""
    f32 = np.float32
    g = g.astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        v = ((g + f32(1)) / f32(2) * f32(size - 1) if align_corners
             else ((g + f32(1)) * f32(size) - f32(1)) / f32(2)).astype(np.float32)
        if mode == "nearest":
            v = np.rint(v)
        low, high = (f32(0), f32(size - 1)) if align_corners else (f32(-0.5), f32(size - 0.5))
        if padding == "border":
            v = np.where((v < low) | (v > high), np.clip(v, f32(0), f32(size - 1)), v)
        elif padding == "reflection":
            v = np.where(np.isfinite(v), _reflect(v, low, high), np.nan).astype(np.float32)
        nan = np.isnan(v)
        v = np.clip(np.where(nan, f32(0), v), f32(-8), f32(size + 8))
        base = np.floor(v)
        t = (v - base).astype(np.float32)
    if mode == "nearest":
        first, weights = v.astype(np.int64), [np.ones_like(v)]
    elif mode == "linear":
        first, weights = base.astype(np.int64), [f32(1) - t, t]
    else:
        first, weights = base.astype(np.int64) - 1, _cubic_weights(t)
    indices, inside = [], []
    for k in range(len(weights)):
        i = first + k
        outside = (i < 0) | (i >= size)
        if padding == "reflection":
            i = np.where(outside, _reflect(i.astype(np.float32), low, high).astype(np.int64), i)
        inside.append(~outside if padding == "zeros" else np.ones_like(outside))
        indices.append(np.clip(i, 0, size - 1))
    return indices, weights, inside, nan


def _grid_sample_reference(inputs, attrs):
    """The sum over every combination of per-dim taps of their weights' product times x there
    (float32 coordinates and weights, as the runtime computes them)."""
    x, grid = inputs
    op = "GridSample"
    nhwc = x if layout_of(op, attrs) == "NHWC" else np.moveaxis(x, 1, -1)
    mode, padding = attrs.get("mode", "linear"), attrs.get("padding_mode", "zeros")
    align_corners = bool(attrs.get("align_corners", False))
    dims = nhwc.ndim - 2
    batches = np.arange(nhwc.shape[0]).reshape((-1,) + (1,) * dims)
    per_dim = [_taps(grid[..., dims - 1 - d], nhwc.shape[1 + d], mode, padding, align_corners) for d in range(dims)]
    y = np.zeros((*grid.shape[:-1], nhwc.shape[-1]), np.float32)
    for combination in itertools.product(range(TAPS[mode]), repeat=dims):
        weight, inside, index = np.ones(grid.shape[:-1], np.float32), np.ones(grid.shape[:-1], bool), [batches]
        for d, tap in enumerate(combination):
            indices, weights, insides, _ = per_dim[d]
            weight = weight * weights[tap]
            inside &= insides[tap]
            index.append(indices[tap])
        y += np.where(inside, weight, np.float32(0))[..., None] * np.where(inside[..., None], nhwc[tuple(index)], 0)
    nan = np.zeros(grid.shape[:-1], bool)
    for d in range(dims):
        nan |= per_dim[d][3]
    y[nan] = np.nan
    return [y if layout_of(op, attrs) == "NHWC" else np.ascontiguousarray(np.moveaxis(y, -1, 1))]


def _grid_sample_lower(attrs):
    require_nhwc("GridSample", attrs)
    options = GridSampleOptionsT()
    options.mode = GRID_SAMPLE_MODES[attrs.get("mode", "linear")]
    options.padding = GRID_SAMPLE_PADDINGS[attrs.get("padding_mode", "zeros")]
    options.alignCorners = bool(attrs.get("align_corners", False))
    return OpCode.GRID_SAMPLE, OpOptions.GridSampleOptions, options


def _grid_sample_lift(o):
    return {"mode": {v: k for k, v in GRID_SAMPLE_MODES.items()}[int(o.mode)],
            "padding_mode": {v: k for k, v in GRID_SAMPLE_PADDINGS.items()}[int(o.padding)],
            "align_corners": bool(o.alignCorners), "layout": "NHWC"}


def _grid_sample_flops(in_types, out_types, attrs) -> int:
    dims = in_types[1].rank - 2
    return 2 * TAPS[attrs.get("mode", "linear")] ** dims * int(np.prod(out_types[0].shape))


register(OpDef(name="GridSample", infer=_grid_sample_infer, reference=_grid_sample_reference, lower=_grid_sample_lower,
               lift=_grid_sample_lift, opcode=OpCode.GRID_SAMPLE, flops=_grid_sample_flops, layout_sensitive=True))

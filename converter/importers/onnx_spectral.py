"""ONNX DFT and STFT lowered onto FullyConnected with constant transform matrices.

A transform along one axis is linear in the interleaved (real, imaginary) values along that axis,
so it is one matrix product: the axis is moved next to the trailing complex axis, the two are
merged into rows of ``samples * channels`` values, and a constant matrix of shape
``[bins * out_channels, samples * channels]`` (FullyConnected's weight layout) maps each row to the
transformed one. The matrix carries everything the attributes select: truncation or zero padding
to ``dft_length`` (rows past it are zero, missing samples contribute nothing), the one-sided output
(only the first ``length // 2 + 1`` bins), the inverse's sign and 1/length scale, the inverse of a
one-sided spectrum (each bin but the first and the Nyquist one counted twice, real output), and
STFT's window (row k scaled by window[k]). Angles are formed from ``(k * m) mod length`` in float64
so every entry is correctly rounded, the quarter turns exactly.

One matrix costs O(length^2) per signal. Long transforms whose length splits into two factors run
as two passes of short matrices instead (``_two_factor_dft``: O(length * (n1 + n2))). A single
matrix past ``MAX_MATRIX_BYTES`` (a long transform of a prime length) is refused rather than built.
"""
from __future__ import annotations

import numpy as np

from converter.importers.onnx_builder import NodeContext

MAX_MATRIX_BYTES = 64 << 20
# A transform whose one matrix would take more than FACTOR_ABOVE multiply-adds per signal, of a
# length that splits into two factors of at least MIN_FACTOR, runs in two passes of short matrices
# (_two_factor_dft); the extra passes over the data (transposes, twiddles) make it slower below
# that (measured: a real one-sided 512-point transform 1.4x slower in two passes, a complex one
# 3x faster). The inverse of a one-sided spectrum always takes one matrix.
FACTOR_ABOVE = 1 << 19
MIN_FACTOR = 8


def dft_matrix(samples: int, channels: int, length: int, bins: int, inverse: bool, real_output: bool,
               window: np.ndarray | None = None) -> np.ndarray:
    """[bins * out_channels, samples * channels] float64: input rows of ``samples`` values along the
    axis (``channels`` 1: real, 2: interleaved complex) to ``bins`` outputs of a length-``length``
    DFT (``out_channels`` 1 when ``real_output``, the inverse of a one-sided spectrum, else 2)."""
    k = np.arange(samples, dtype=np.int64)[:, None]
    m = np.arange(bins, dtype=np.int64)[None, :]
    phase = (k * m) % length
    angle = 2.0 * np.pi * phase / length
    cos, sin = np.cos(angle), np.sin(angle)
    for quarter, (c, s) in enumerate(((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))):
        exact = 4 * phase == quarter * length
        cos[exact], sin[exact] = c, s
    sign = 1.0 if inverse else -1.0
    weight = np.ones((samples, 1))
    if real_output:
        # Only bins 0 .. length // 2 of a one-sided spectrum exist; the others are their mirror
        # images, so each counts twice except bin 0 and (for an even length) the Nyquist bin.
        weight = np.where((k == 0) | (2 * k == length), 1.0, 2.0) * (k <= length // 2)
    else:
        weight = weight * (k < length)
    if window is not None:
        window = np.asarray(window, np.float64).reshape(-1)
        weight = weight * np.pad(window[:samples], (0, max(samples - window.size, 0)))[:, None]
    if inverse:
        weight = weight / length
    cos, sin = cos * weight, sin * weight
    out_channels = 1 if real_output else 2
    matrix = np.zeros((samples, channels, bins, out_channels))
    # (a + ib)(cos + i sign sin) = a cos - sign b sin + i (sign a sin + b cos)
    matrix[:, 0, :, 0] = cos
    if not real_output:
        matrix[:, 0, :, 1] = sign * sin
    if channels == 2:
        matrix[:, 1, :, 0] = -sign * sin
        if not real_output:
            matrix[:, 1, :, 1] = cos
    return matrix.reshape(samples * channels, bins * out_channels).T


def _check_size(ctx: NodeContext, rows: int, columns: int) -> None:
    if 4 * rows * columns > MAX_MATRIX_BYTES:
        raise ctx.unsupported(f"a transform matrix of {rows} x {columns} (over {MAX_MATRIX_BYTES >> 20} MiB)")


def _transform_last_two(ctx: NodeContext, x: str, matrix: np.ndarray) -> str:
    """x [..., samples, channels] times the transform: [..., bins * out_channels]."""
    shape = ctx.shape(x)
    rows = ctx.reshape(x, shape[:-2] + (shape[-2] * shape[-1],))
    return ctx.emit1("FullyConnected", [rows, ctx.constant(matrix.astype(np.float32), base="dft_matrix"), ""])


def lower_dft(ctx: NodeContext) -> None:
    x = ctx.input(0)
    shape = ctx.shape(0)
    rank = len(shape)
    channels = shape[-1]
    if channels not in (1, 2):
        raise ctx.error(f"the last axis has size {channels}; expected 1 (real) or 2 (complex)")
    if ctx.opset >= 20:
        axis = int(ctx.require_const(2, "axis").reshape(-1)[0]) if ctx.input(2) else -2
    else:
        axis = int(ctx.attr("axis", 1))
    if not -rank <= axis < rank or axis % rank == rank - 1:
        raise ctx.error(f"axis {axis} is not a signal axis of a rank-{rank} input (the last axis holds the components)")
    axis %= rank
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    samples = shape[axis]
    if ctx.input(1):
        length = int(ctx.require_const(1, "dft_length").reshape(-1)[0])
        if length < 1:
            raise ctx.error(f"dft_length {length} must be at least 1")
    else:
        length = 2 * (samples - 1) if inverse and onesided else samples
    real_output = inverse and onesided
    bins = length // 2 + 1 if onesided and not inverse else length
    out_channels = 1 if real_output else 2

    # Move the signal axis next to the components: [..., samples, channels].
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    moved = x if perm == list(range(rank)) else ctx.emit1("Transpose", [x], {"perm": tuple(perm)})
    one_matrix_cost = samples * channels * bins * out_channels
    factors = None if real_output or one_matrix_cost <= FACTOR_ABOVE else split_length(length)
    if factors:
        y = _two_factor_dft(ctx, _fit_length(ctx, moved, length), factors, channels, inverse, bins)
    else:
        _check_size(ctx, bins * out_channels, samples * channels)
        y = _transform_last_two(ctx, moved, dft_matrix(samples, channels, length, bins, inverse, real_output))
    out_moved = ctx.shape(moved)[:-2] + (bins, out_channels)
    if perm == list(range(rank)):
        ctx.reshape(y, out_moved, output=ctx.output(0))
        return
    y = ctx.reshape(y, out_moved)
    back = tuple(int(i) for i in np.argsort(perm))
    ctx.emit("Transpose", [y], {"perm": back}, [ctx.output(0)])


def split_length(length: int) -> tuple[int, int] | None:
    """length = n1 * n2 with both factors as near sqrt(length) as its divisors allow, when the
    smaller is at least MIN_FACTOR; else None (one matrix)."""
    n1 = max(d for d in range(1, int(np.sqrt(length)) + 1) if length % d == 0)
    return (n1, length // n1) if n1 >= MIN_FACTOR else None


def _fit_length(ctx: NodeContext, x: str, length: int) -> str:
    """x [..., samples, channels] cut or zero-padded to [..., length, channels] (dft_length)."""
    shape = ctx.shape(x)
    rank, samples = len(shape), shape[-2]
    if samples > length:
        return first_along(ctx, x, rank - 2, length)
    if samples < length:
        pads = [0] * (2 * rank)
        pads[rank + rank - 2] = length - samples
        return ctx.emit1("Pad", [x], {"mode": "constant", "pads": tuple(pads), "value": 0.0})
    return x


def first_along(ctx: NodeContext, x: str, axis: int, count: int) -> str:
    """The first ``count`` entries of x along ``axis``, by a Gather (no bounds on the other axes, so
    a dynamic batch stays dynamic)."""
    return ctx.emit1("Gather", [x, ctx.constant(np.arange(count, dtype=np.int64), base="first")], {"axis": axis})


def _swap_middle(ctx: NodeContext, x: str) -> str:
    """[..., a, b, c] -> [..., b, a, c]."""
    rank = len(ctx.shape(x))
    return ctx.emit1("Transpose", [x], {"perm": tuple(range(rank - 3)) + (rank - 2, rank - 3, rank - 1)})


def _two_factor_dft(ctx: NodeContext, x: str, factors: tuple[int, int], channels: int, inverse: bool,
                    bins: int) -> str:
    """The length n1 * n2 transform of x [..., n, channels] in two passes (Cooley-Tukey's four-step
    form): with n = n2 * a + b and k = c + n1 * d, X[k] = sum_b w^(b c) w2^(b d) sum_a x[n] w1^(a c)
    (w, w1, w2: the n-th, n1-th, n2-th roots of unity). Length-n1 transforms of the n2 columns, a
    twiddle w^(b c) per element, length-n2 transforms of the n1 rows: n * (n1 + n2) multiplies per
    signal instead of n * n. Returns [..., bins * 2]."""
    n1, n2 = factors
    _check_size(ctx, 2 * n1, n1 * channels)
    _check_size(ctx, 2 * n2, 2 * n2)
    lead = ctx.shape(x)[:-2]
    columns = _swap_middle(ctx, ctx.reshape(x, lead + (n1, n2, channels)))           # [..., b, a, ch]
    y = _transform_last_two(ctx, columns, dft_matrix(n1, channels, n1, n1, inverse, False))
    y = ctx.reshape(y, lead + (n2, n1, 2))                                              # [..., b, c, 2]
    phase = (np.arange(n2)[:, None] * np.arange(n1)[None, :]) % (n1 * n2)
    angle = 2.0 * np.pi * phase / (n1 * n2)
    cos, sin = np.cos(angle), (1.0 if inverse else -1.0) * np.sin(angle)
    # (p + iq)(cos + i sin) = [p, q] * [cos, cos] + [q, p] * [-sin, sin]
    swapped = ctx.emit1("Gather", [y, ctx.constant(np.array([1, 0], np.int64), base="swap")], {"axis": len(lead) + 2})
    y = ctx.emit1("Add", [ctx.emit1("Mul", [y, ctx.constant(np.stack([cos, cos], -1).astype(np.float32), base="twiddle_cos")]),
                          ctx.emit1("Mul", [swapped, ctx.constant(np.stack([-sin, sin], -1).astype(np.float32),
                                                                  base="twiddle_sin")])])
    rows = _swap_middle(ctx, y)                                                         # [..., c, b, 2]
    y = _transform_last_two(ctx, rows, dft_matrix(n2, 2, n2, n2, inverse, False))
    y = _swap_middle(ctx, ctx.reshape(y, lead + (n1, n2, 2)))                           # [..., d, c, 2]
    y = ctx.reshape(y, lead + (n1 * n2, 2))
    if bins < n1 * n2:
        y = first_along(ctx, y, len(lead), bins)
    return ctx.reshape(y, lead + (bins * 2,))


def lower_stft(ctx: NodeContext) -> None:
    signal = ctx.input(0)
    shape = ctx.shape(0)
    if len(shape) != 3 or shape[-1] not in (1, 2):
        raise ctx.error(f"signal has shape {list(shape)}; expected [batch, length, 1 or 2]")
    batch, signal_length, channels = shape
    step = int(ctx.require_const(1, "frame_step").reshape(-1)[0])
    window = ctx.const(2) if ctx.input(2) else None
    if ctx.input(2) and window is None:
        window_length = ctx.shape(2)[0]
    else:
        window_length = None if window is None else window.size
    frame_length = int(ctx.require_const(3, "frame_length").reshape(-1)[0]) if ctx.input(3) else window_length
    if frame_length is None:
        raise ctx.error("neither a window nor a frame_length gives the frame length")
    if window_length is not None and window_length != frame_length:
        raise ctx.error(f"window of length {window_length} differs from frame_length {frame_length}")
    if step < 1 or not 1 <= frame_length <= signal_length:
        raise ctx.error(f"frame_step {step} and frame_length {frame_length} do not frame a signal of length {signal_length}")
    onesided = bool(ctx.attr("onesided", 1))
    if onesided and channels == 2:
        raise ctx.error("onesided=1 needs a real signal")
    frames = (signal_length - frame_length) // step + 1
    bins = frame_length // 2 + 1 if onesided else frame_length
    factors = split_length(frame_length) if frame_length * channels * bins * 2 > FACTOR_ABOVE else None

    # Frames as a gather along time: [batch, frames, frame_length, channels].
    starts = np.arange(frames, dtype=np.int64)[:, None] * step + np.arange(frame_length, dtype=np.int64)[None, :]
    framed = ctx.emit1("Gather", [signal, ctx.constant(starts.astype(np.int32), base="frame_index")], {"axis": 1})
    if ctx.input(2) and (window is None or factors):
        # The window multiplies the frames when it is computed at run time or the transform takes
        # two passes; a constant one is folded into a single matrix.
        window_column = (ctx.constant(window.astype(np.float32).reshape(frame_length, 1), base="window")
                         if window is not None else ctx.reshape(ctx.input(2), (frame_length, 1)))
        framed = ctx.emit1("Mul", [framed, window_column])
    if factors:
        y = _two_factor_dft(ctx, framed, factors, channels, False, bins)
    else:
        _check_size(ctx, bins * 2, frame_length * channels)
        y = _transform_last_two(ctx, framed, dft_matrix(frame_length, channels, frame_length, bins, False, False, window))
    ctx.reshape(y, (batch, frames, bins, 2), output=ctx.output(0))

"""The integer reference: what every int8 and dynamic kernel must compute, bit for bit.

This is the oracle the C kernels (every ISA) are tested against, so it keeps one arithmetic:
float32 scales as stored, real multipliers in double from them, one fixed-point multiplier +
right shift per channel, one rounding rule (add half, arithmetic shift: ties go toward +infinity).

An op's integer references are fields of its ``OpDef`` (converter.ops): ``int8`` (int8 in, int8
out) and ``dynamic`` (float activations, int8 weights); the family modules set them from the
functions here. Both take ``(inputs, attrs)`` with ``attrs["quantization"] = (input params,
output params)``, lists aligned with the node's inputs/outputs, each a converter.ir.Quantization
or None. The reference executor (converter.reference) calls ``run_integer_node`` for every node
that touches a quantized tensor.

Integer sums are formed exactly (int64, or float64 on integer values below 2**53, which is exact)
and checked to fit the int32 accumulator the kernels use.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from converter.ir import Quantization
from converter.ops import OPS, lookup
from converter.ops._common import apply_activation, conv2d_nchw

QMIN, QMAX = -128, 127
WEIGHT_QMAX = 127
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
# Softmax's int8 output is fixed: probabilities in steps of 1/256 from zero point -128.
SOFTMAX_OUTPUT = Quantization(scale=(1.0 / 256.0,), zero_point=(-128,), axis=0)

IntegerReference = Callable[[Sequence[np.ndarray | None], Mapping], list[np.ndarray]]


# ---- the fixed-point rules ----

def llround(value: float) -> int:
    """C's llround: nearest integer, halves away from zero. Exact for the doubles used here."""
    magnitude = math.floor(abs(value) + 0.5) if abs(value) < 2.0 ** 52 else abs(value)
    return int(math.copysign(magnitude, value))


def f32(value) -> float:
    """A scale as the file stores it (float32), widened to double for multiplier arithmetic."""
    return float(np.float32(value))


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m, shift) with real ~= m * 2**-shift, m in [2**30, 2**31), 0 < shift < 63.

    Multipliers below 2**-32 give (0, 62): the product is then only the zero point. Multipliers
    of 2**30 or more cannot be represented with a positive shift; prepare rejects them, so this
    raises ValueError."""
    if not real > 0.0 or not math.isfinite(real):
        raise ValueError(f"requantization multiplier {real!r} must be positive and finite")
    fraction, exponent = math.frexp(real)
    m = llround(fraction * 2.0 ** 31)
    if m == 1 << 31:
        m //= 2
        exponent += 1
    shift = 31 - exponent
    if shift >= 63:
        return 0, 62
    if shift <= 0:
        raise ValueError(f"requantization multiplier {real!r} is too large (needs shift {shift} <= 0)")
    return m, shift


def requantize(acc, m, shift) -> np.ndarray:
    """(acc * m + 2**(shift-1)) >> shift in int64, elementwise (m, shift broadcast with acc)."""
    acc = np.asarray(acc, dtype=np.int64)
    m = np.asarray(m, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (acc * m + np.left_shift(np.int64(1), shift - 1)) >> shift


def quantize_values(x: np.ndarray, params: Quantization) -> np.ndarray:
    """Quantize: clamp(zp + nearbyint(x * inv_s), -128, 127), inv_s = float32(1/s) and the
    product in float32; per-channel params broadcast along params.axis. NaN maps to the zero
    point (as the C runtime does)."""
    x = np.asarray(x, dtype=np.float32)
    scale = _along(np.asarray(params.scale, np.float32), params, x.ndim)
    zero_point = _along(np.asarray(params.zero_point, np.float64), params, x.ndim)
    inverse = np.float32(1.0) / scale
    with np.errstate(over="ignore", invalid="ignore"):
        q = np.rint(x * inverse).astype(np.float64) + zero_point
    q = np.where(np.isnan(q), zero_point, q)
    return np.clip(q, QMIN, QMAX).astype(np.int8)


def dequantize_values(q: np.ndarray, params: Quantization) -> np.ndarray:
    """Dequantize: float32(q - zp) * s in float32."""
    q = np.asarray(q)
    scale = _along(np.asarray(params.scale, np.float32), params, q.ndim)
    zero_point = _along(np.asarray(params.zero_point, np.int64), params, q.ndim)
    return (q.astype(np.int64) - zero_point).astype(np.float32) * scale


def _along(values: np.ndarray, params: Quantization, rank: int) -> np.ndarray:
    """Per-tensor values as a scalar; per-channel ones shaped to broadcast along params.axis."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[params.axis] = values.size
    return values.reshape(shape)


def activation_bounds(attrs: Mapping, out: Quantization) -> tuple[int, int]:
    """[qmin, qmax]: [-128, 127] narrowed by the fused activation (RELU, RELU6, CLIP)."""
    activation = attrs.get("activation")
    zero_point = int(out.zero_point[0])
    if not activation or activation[0] == "Identity":
        return QMIN, QMAX
    name, alpha, beta = activation
    if name == "Relu":
        return max(QMIN, zero_point), QMAX
    if name == "Relu6":
        six = round(6.0 / f32(out.scale[0]))              # Python round: half to even
        return max(QMIN, zero_point), min(QMAX, zero_point + six)
    if name == "Clip":
        low, high = quantize_values(np.array([alpha, beta], np.float32), out)
        return max(QMIN, int(low)), min(QMAX, int(high))
    raise ValueError(f"fused activation {name!r} has no int8 form (only Relu, Relu6, Clip)")


def _clamp(values, bounds) -> np.ndarray:
    return np.clip(values, bounds[0], bounds[1]).astype(np.int8)


def _check_int32(acc: np.ndarray, what: str) -> np.ndarray:
    if acc.size and (acc.min() < INT32_MIN or acc.max() > INT32_MAX):
        raise ValueError(f"{what}: the int32 accumulator overflows ({acc.min()}..{acc.max()})")
    return acc


def _params(attrs: Mapping, op: str):
    quantization = attrs.get("quantization")
    if quantization is None:
        raise ValueError(f"{op}: no quantization params were passed (attrs['quantization'])")
    return quantization


def _per_tensor(params: Quantization | None, op: str, what: str) -> tuple[float, int]:
    if params is None:
        raise ValueError(f"{op}: {what} is not quantized")
    if len(params.scale) != 1 or len(params.zero_point) != 1:
        raise ValueError(f"{op}: {what} must be quantized per tensor, it has {len(params.scale)} scales")
    return f32(params.scale[0]), int(params.zero_point[0])


def _channel_scales(params: Quantization, channels: int, op: str, what: str) -> np.ndarray:
    scales = np.asarray([f32(s) for s in params.scale], dtype=np.float64)
    if scales.size == 1:
        return np.full(channels, scales[0])
    if scales.size != channels:
        raise ValueError(f"{op}: {what} has {scales.size} scales for {channels} channels")
    if any(int(z) != 0 for z in params.zero_point):
        raise ValueError(f"{op}: per-channel {what} must be symmetric (zero point 0)")
    return scales


def _multipliers(reals: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(r) for r in reals]
    return (np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64))


def _output_stage(acc: np.ndarray, reals: Sequence[float], channel_axis: int, attrs: Mapping,
                  out: Quantization, op: str) -> np.ndarray:
    """clamp(zp_y + requantize(acc, m[c], shift[c])) with the channel along ``channel_axis``."""
    _check_int32(acc, op)
    m, shift = _multipliers(reals)
    shape = [1] * acc.ndim
    shape[channel_axis] = m.size
    if m.size == 1:
        shape = [1] * acc.ndim
    y = int(out.zero_point[0]) + requantize(acc, m.reshape(shape), shift.reshape(shape))
    return _clamp(y, activation_bounds(attrs, out))


# ---- int8 ops ----

def _nchw(x: np.ndarray, layout: str) -> np.ndarray:
    return x if layout == "NCHW" else np.transpose(x, (0, 3, 1, 2))


def _back(y: np.ndarray, layout: str) -> np.ndarray:
    return y if layout == "NCHW" else np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1)))


def conv2d_int8(inputs, attrs):
    op = "Conv2D"
    (in_params, out_params) = _params(attrs, op)
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    s_x, zp_x = _per_tensor(in_params[0], op, "input")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    layout = attrs.get("layout", "NCHW")
    w_oihw = w if layout == "NCHW" else np.transpose(w, (0, 3, 1, 2))
    channels = w_oihw.shape[0]
    s_w = _channel_scales(in_params[1], channels, op, "weights")
    # Padding contributes (zp_x - zp_x) = 0: pad the zero-point-shifted input with zeros.
    shifted = _nchw(x, layout).astype(np.float64) - zp_x
    acc = conv2d_nchw(shifted, w_oihw.astype(np.float64), None, tuple(attrs.get("strides", (1, 1))),
                      tuple(attrs.get("dilations", (1, 1))), tuple(attrs.get("pads", (0, 0, 0, 0))),
                      int(attrs.get("groups", 1)))
    acc = np.rint(acc).astype(np.int64)
    if bias is not None:
        acc = acc + bias.astype(np.int64)[None, :, None, None]
    reals = [s_x * s_w[c] / s_y for c in range(channels)]
    return [_back(_output_stage(acc, reals, 1, attrs, out_params[0], op), layout)]


def fully_connected_int8(inputs, attrs):
    op = "FullyConnected"
    (in_params, out_params) = _params(attrs, op)
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    s_x, zp_x = _per_tensor(in_params[0], op, "input")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    s_w = _channel_scales(in_params[1], w.shape[0], op, "weights")
    acc = (x.astype(np.int64) - zp_x) @ w.astype(np.int64).T
    if bias is not None:
        acc = acc + bias.astype(np.int64)
    reals = [s_x * s_w[c] / s_y for c in range(w.shape[0])]
    return [_output_stage(acc, reals, acc.ndim - 1, attrs, out_params[0], op)]


def _matmul_operands(a, b, attrs):
    if attrs.get("transpose_a"):
        a = np.swapaxes(a, -1, -2)
    if attrs.get("transpose_b"):
        b = np.swapaxes(b, -1, -2)
    return a, b


def batch_matmul_int8(inputs, attrs):
    """Per-tensor a; b per tensor (an activation) or per column n (a constant, symmetric, its
    quantization axis the N axis: rank-1, or rank-2 with transpose_b)."""
    op = "BatchMatMul"
    (in_params, out_params) = _params(attrs, op)
    s_a, zp_a = _per_tensor(in_params[0], op, "input a")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    a, b = _matmul_operands(inputs[0], inputs[1], attrs)
    columns = b.shape[-1]
    b_params = in_params[1]
    if b_params is None:
        raise ValueError(f"{op}: input b is not quantized")
    s_b = _channel_scales(b_params, columns, op, "input b")
    zp_b = int(b_params.zero_point[0])
    acc = np.matmul(a.astype(np.int64) - zp_a, b.astype(np.int64) - zp_b)
    reals = [s_a * s_b[n] / s_y for n in range(columns)]
    return [_output_stage(acc, reals, acc.ndim - 1, attrs, out_params[0], op)]


def _add_multipliers(real_a: float, real_b: float, op: str) -> tuple[int, int, int]:
    """The largest s in [1, 62] with llround(max(Ma, Mb) * 2**s) < 2**31, and both multipliers."""
    largest = max(real_a, real_b)
    for shift in range(62, 0, -1):
        if llround(largest * 2.0 ** shift) < 1 << 31:
            return llround(real_a * 2.0 ** shift), llround(real_b * 2.0 ** shift), shift
    raise ValueError(f"{op}: input/output scale ratio {largest} is too large for a 31-bit multiplier")


def _add_like(sign: int, op: str):
    def reference(inputs, attrs):
        (in_params, out_params) = _params(attrs, op)
        s_a, zp_a = _per_tensor(in_params[0], op, "input a")
        s_b, zp_b = _per_tensor(in_params[1], op, "input b")
        s_y, zp_y = _per_tensor(out_params[0], op, "output")
        m_a, m_b, shift = _add_multipliers(s_a / s_y, s_b / s_y, op)
        a = inputs[0].astype(np.int64) - zp_a
        b = inputs[1].astype(np.int64) - zp_b
        total = (a * m_a + sign * b * m_b + (1 << (shift - 1))) >> shift
        return [_clamp(zp_y + total, activation_bounds(attrs, out_params[0]))]
    return reference


add_int8 = _add_like(+1, "Add")
sub_int8 = _add_like(-1, "Sub")


def mul_int8(inputs, attrs):
    op = "Mul"
    (in_params, out_params) = _params(attrs, op)
    s_a, zp_a = _per_tensor(in_params[0], op, "input a")
    s_b, zp_b = _per_tensor(in_params[1], op, "input b")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    acc = (inputs[0].astype(np.int64) - zp_a) * (inputs[1].astype(np.int64) - zp_b)
    return [_output_stage(acc, [s_a * s_b / s_y], 0, attrs, out_params[0], op)]


def same_params_int8(op: str):
    """Data movement on int8 values: the float reference moves the bytes; params pass through."""
    def reference(inputs, attrs):
        (in_params, out_params) = _params(attrs, op)
        for k, params in enumerate(out_params):
            if params != in_params[0]:
                raise ValueError(f"{op}: output {k} params {params} differ from the input's "
                                 f"{in_params[0]}; int8 {op} keeps them")
        plain = {k: v for k, v in attrs.items() if k != "quantization"}
        return list(lookup(op).reference(inputs, plain))
    return reference


def pad_int8(inputs, attrs):
    """Constant padding pads with the quantized padding value (the zero point for 0.0)."""
    op = "Pad"
    (in_params, out_params) = _params(attrs, op)
    plain = {k: v for k, v in attrs.items() if k != "quantization"}
    if plain.get("mode", "constant") == "constant":
        value = np.array([plain.get("value", 0.0)], np.float32)
        plain["value"] = int(quantize_values(value, in_params[0])[0])
    if out_params[0] != in_params[0]:
        raise ValueError(f"{op}: output params differ from the input's; int8 Pad keeps them")
    return list(lookup(op).reference(inputs, plain))


def _window_sums(x_nchw: np.ndarray, attrs: Mapping, pad_value: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum over each pooling window (int64) and the count of elements it averages over
    (count_include_pad counts padding cells, holding ``pad_value``, never the cells ceil_mode reads
    past the padding)."""
    kernel = tuple(attrs["kernel"])
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    ceil_mode = bool(attrs.get("ceil_mode", False))
    _, _, h, w = x_nchw.shape
    sizes = []
    for size, k, s, d, begin, end in ((h, kernel[0], strides[0], dilations[0], pads[0], pads[2]),
                                      (w, kernel[1], strides[1], dilations[1], pads[1], pads[3])):
        span = size + begin + end - d * (k - 1) - 1
        out = (-(-span // s) + 1) if ceil_mode else span // s + 1
        if ceil_mode and (out - 1) * s >= size + begin:
            out -= 1
        sizes.append(out)
    oh, ow = sizes
    rows0 = np.arange(oh) * strides[0] - pads[0]
    cols0 = np.arange(ow) * strides[1] - pads[1]
    total = np.zeros(x_nchw.shape[:2] + (oh, ow), np.int64)
    count = np.zeros((oh, ow), np.int64)
    for i in range(kernel[0]):
        rows = rows0 + i * dilations[0]
        for j in range(kernel[1]):
            cols = cols0 + j * dilations[1]
            inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
            values = x_nchw[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
            if attrs.get("count_include_pad", False):
                # A counted padding cell holds the zero point (a real 0), so it adds zp_x here and
                # cancels against count*zp_x in _mean_output.
                counted = (rows < h + pads[2])[:, None] & (cols < w + pads[3])[None, :]
                total += np.where(inside, values.astype(np.int64), np.where(counted, pad_value, 0))
                count += counted
            else:
                total += np.where(inside, values.astype(np.int64), 0)
                count += inside
    return total, count


def _mean_output(total: np.ndarray, count: np.ndarray, s_x: float, zp_x: int, s_y: float,
                 out: Quantization, attrs: Mapping, op: str) -> np.ndarray:
    """y = clamp(zp_y + requantize(sum - count*zp_x, m, shift)), M = s_x / (s_y * count), one
    (m, shift) per distinct count."""
    count = np.broadcast_to(count, total.shape)
    m = np.zeros(total.shape, np.int64)
    shift = np.ones(total.shape, np.int64)
    for c in np.unique(count):
        mc, sc = quantize_multiplier(s_x / (s_y * int(c)))
        m[count == c], shift[count == c] = mc, sc
    acc = _check_int32(total - count * zp_x, op)
    y = int(out.zero_point[0]) + requantize(acc, m, shift)
    return _clamp(y, activation_bounds(attrs, out))


def avg_pool_int8(inputs, attrs):
    op = "AvgPool2D"
    (in_params, out_params) = _params(attrs, op)
    s_x, zp_x = _per_tensor(in_params[0], op, "input")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    layout = attrs.get("layout", "NCHW")
    total, count = _window_sums(_nchw(inputs[0], layout), attrs, zp_x)
    return [_back(_mean_output(total, count, s_x, zp_x, s_y, out_params[0], attrs, op), layout)]


def reduce_mean_int8(inputs, attrs):
    op = "ReduceMean"
    (in_params, out_params) = _params(attrs, op)
    s_x, zp_x = _per_tensor(in_params[0], op, "input")
    s_y, _ = _per_tensor(out_params[0], op, "output")
    x = inputs[0]
    axes = tuple(attrs["axes"])
    total = np.sum(x.astype(np.int64), axis=axes, keepdims=bool(attrs.get("keepdims", True)))
    count = np.int64(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return [_mean_output(total, count, s_x, zp_x, s_y, out_params[0], attrs, op)]


def max_pool_int8(inputs, attrs):
    """Max of int8 values (padding never wins); params pass through unchanged; a fused
    RELU/RELU6/CLIP clamps in the integer domain, as for every int8 op."""
    plain = {k: v for k, v in attrs.items() if k != "activation"}
    y = same_params_int8("MaxPool2D")(inputs, plain)[0]
    return [_clamp(y.astype(np.int64), activation_bounds(attrs, _params(attrs, "MaxPool2D")[1][0]))]


def concat_int8(inputs, attrs):
    op = "Concat"
    (in_params, out_params) = _params(attrs, op)
    s_y, zp_y = _per_tensor(out_params[0], op, "output")
    parts = []
    for k, (x, params) in enumerate(zip(inputs, in_params)):
        s_i, zp_i = _per_tensor(params, op, f"input {k}")
        if (s_i, zp_i) == (s_y, zp_y):
            parts.append(x.astype(np.int8))
            continue
        m, shift = quantize_multiplier(s_i / s_y)
        parts.append(_clamp(zp_y + requantize(x.astype(np.int64) - zp_i, m, shift), (QMIN, QMAX)))
    return [np.concatenate(parts, axis=int(attrs["axis"]))]


def softmax_lut(s_x: float) -> np.ndarray:
    """LUT[d] = llround(exp(-d * s_x) * 2**16) for d in [0, 255], in double (libm exp)."""
    return np.array([llround(math.exp(-d * s_x) * 65536.0) for d in range(256)], dtype=np.int64)


def softmax_int8(inputs, attrs):
    op = "Softmax"
    (in_params, out_params) = _params(attrs, op)
    s_x, _ = _per_tensor(in_params[0], op, "input")
    s_y, zp_y = _per_tensor(out_params[0], op, "output")
    if (s_y, zp_y) != (f32(SOFTMAX_OUTPUT.scale[0]), SOFTMAX_OUTPUT.zero_point[0]):
        raise ValueError(f"{op}: int8 output params must be scale 1/256, zero point -128; got {s_y}, {zp_y}")
    axis = int(attrs["axis"])
    x = inputs[0].astype(np.int64)
    distance = np.max(x, axis=axis, keepdims=True) - x
    table = softmax_lut(s_x)[distance]
    total = np.sum(table, axis=axis, keepdims=True)
    y = -128 + (table * 512 + total) // (2 * total)
    return [_clamp(y, (QMIN, QMAX))]


def quantize_int8(inputs, attrs):
    (_, out_params) = _params(attrs, "Quantize")
    return [quantize_values(inputs[0], out_params[0])]


def dequantize_int8(inputs, attrs):
    (in_params, _) = _params(attrs, "Dequantize")
    return [dequantize_values(inputs[0], in_params[0])]


# ---- int8 LayerNorm and int8 elementwise unary (lookup table) ----
#
# The contract the C kernels (cruntime/src/ops/norm.c, ops/unary.c) are tested against.
#
# LAYER_NORM, int8: x and y int8, each quantized per tensor (s_x, zp_x), (s_y, zp_y); scale
# (gamma) and the optional bias (beta) stay float32 constants broadcast over the normalised
# shape; the attributes are the float op's (axis, epsilon). Each row (the n = prod(shape[axis:])
# trailing elements) is normalised independently:
#   d_i    = q_i - zp_x                                   int32
#   S1     = sum d_i,  S2 = sum d_i * d_i                 int64, exact (order does not matter)
#   mean_d = double(S1) / n                               double
#   var_d  = double(n * S2 - S1 * S1) / (double(n) * n)   double (exact integer numerator)
#   r      = float32(s_x / sqrt(s_x * s_x * var_d + epsilon))    double, rounded once to float32
#   c      = float32(mean_d)
#   t_i    = (float32(d_i) - c) * r                       float32, two roundings (no FMA)
#   y_i    = t_i * gamma_i + beta_i                       float32, two roundings (no FMA)
#   q_y    = clamp(nearbyint(y_i * float32(1 / s_y)) + zp_y, -128, 127)
#            (the product in float32, rounding half to even: exactly ``quantize_values``)
# s_x, s_y, epsilon are the float32 values the file stores, widened to double where double is
# written. A C kernel may contract the float32 steps into FMAs or keep t_i in a register of
# wider precision; the oracle therefore allows a difference of 1 LSB in q_y (tests: max |C -
# reference| <= 1), never more.
#
# UNARY, int8 (any elementwise unary op of the UNARY opcode: Gelu, Erf, Tanh, Sigmoid,
# HardSwish, ...): x and y int8 per tensor, and a SECOND input: a constant int8 tensor of shape
# [256], the lookup table the converter computed, entry i = q_y for the input value q_x = i - 128:
#   y_j = table[x_j + 128]
# bit-exact (no tolerance). The table carries y's quantization params; the runtime needs only
# the bytes. ``unary_table`` is how the converter builds it: the float op's reference on the
# dequantized input (in double), quantized with y's params (NaN -> zp_y, +-inf saturate).

def layer_norm_int8(inputs, attrs):
    op = "LayerNorm"
    (in_params, out_params) = _params(attrs, op)
    s_x, zp_x = _per_tensor(in_params[0], op, "input")
    s_y, zp_y = _per_tensor(out_params[0], op, "output")
    x = inputs[0]
    gamma = np.asarray(inputs[1], np.float32)
    beta = np.asarray(inputs[2], np.float32) if len(inputs) > 2 and inputs[2] is not None else None
    axis = int(attrs["axis"]) % x.ndim
    epsilon = f32(attrs.get("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    n = int(np.prod(x.shape[axis:], dtype=np.int64))
    d = x.astype(np.int64) - zp_x
    s1 = np.sum(d, axis=axes, keepdims=True)
    s2 = np.sum(d * d, axis=axes, keepdims=True)
    mean_d = s1.astype(np.float64) / n
    var_d = (n * s2 - s1 * s1).astype(np.float64) / (float(n) * n)
    r = (s_x / np.sqrt(s_x * s_x * var_d + epsilon)).astype(np.float32)
    c = mean_d.astype(np.float32)
    t = (d.astype(np.float32) - c) * r
    y = t * gamma
    if beta is not None:
        y = y + beta
    inverse = np.float32(1.0) / np.float32(s_y)
    q = np.rint((y.astype(np.float32) * inverse).astype(np.float32)).astype(np.float64) + zp_y
    q = np.where(np.isnan(q), zp_y, q)
    return [np.clip(q, QMIN, QMAX).astype(np.int8)]


TABLE_INPUTS = np.arange(QMIN, QMAX + 1, dtype=np.int64)


def unary_table(op: str, attrs: Mapping, x_params: Quantization, y_params: Quantization) -> np.ndarray:
    """The int8 [256] lookup table of unary ``op``: entry i = quantize(f(dequantize(i - 128)))."""
    plain = {k: v for k, v in attrs.items() if k != "quantization"}
    x = dequantize_values(TABLE_INPUTS, x_params).astype(np.float64)
    with np.errstate(all="ignore"):
        y = np.asarray(lookup(op).reference([x], plain)[0], np.float64)
    return quantize_values(y.astype(np.float32), y_params)


def unary_lut_int8(op: str):
    def reference(inputs, attrs):
        if len(inputs) != 2 or inputs[1] is None:
            raise ValueError(f"{op}: int8 form needs its [256] lookup table as input 1")
        table = np.asarray(inputs[1])
        if table.dtype != np.int8 or table.shape != (256,):
            raise ValueError(f"{op}: lookup table must be int8 [256], got {table.dtype}{list(table.shape)}")
        return [table[inputs[0].astype(np.int64) + 128]]
    return reference


# ---- dynamic mode: float activations, int8 weights ----

def quantize_rows(x: np.ndarray, row_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per row: s = max|x_row| / 127 (1 for an all-zero row), x_q =
    clamp(nearbyint(x / s), -127, 127), all in float32. ``row_axes`` are reduced together."""
    x = np.asarray(x, np.float32)
    peak = np.max(np.abs(x), axis=row_axes, keepdims=True) if x.size else np.zeros((1,) * x.ndim, np.float32)
    scale = np.where(peak == 0, np.float32(1.0), peak / np.float32(127.0)).astype(np.float32)
    q = np.clip(np.rint(x / scale), -WEIGHT_QMAX, WEIGHT_QMAX)
    return q.astype(np.int64), scale


def _dynamic_epilogue(acc: np.ndarray, row_scale: np.ndarray, weight_scale: np.ndarray,
                      bias: np.ndarray | None, attrs: Mapping, op: str) -> np.ndarray:
    """y = float32(acc) * float32(s_row * s_w[c]) + bias[c], then the fused activation."""
    _check_int32(acc, op)
    y = acc.astype(np.float32) * (row_scale * weight_scale).astype(np.float32)
    if bias is not None:
        y = y + bias.astype(np.float32)
    plain = {k: v for k, v in attrs.items() if k != "quantization"}
    return apply_activation(y.astype(np.float32), plain)


def fully_connected_dynamic(inputs, attrs):
    op = "FullyConnected"
    (in_params, _) = _params(attrs, op)
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    s_w = np.asarray(_channel_scales(in_params[1], w.shape[0], op, "weights"), np.float32)
    x_q, s_row = quantize_rows(x, (x.ndim - 1,))
    acc = x_q @ w.astype(np.int64).T
    return [_dynamic_epilogue(acc, s_row, s_w, bias, attrs, op)]


def batch_matmul_dynamic(inputs, attrs):
    op = "BatchMatMul"
    (in_params, _) = _params(attrs, op)
    a, b = _matmul_operands(inputs[0], inputs[1], attrs)
    s_b = np.asarray(_channel_scales(in_params[1], b.shape[-1], op, "input b"), np.float32)
    a_q, s_row = quantize_rows(a, (a.ndim - 1,))
    acc = np.matmul(a_q, b.astype(np.int64))
    return [_dynamic_epilogue(acc, s_row, s_b, None, attrs, op)]


def conv2d_dynamic(inputs, attrs):
    op = "Conv2D"
    (in_params, _) = _params(attrs, op)
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    layout = attrs.get("layout", "NCHW")
    w_oihw = w if layout == "NCHW" else np.transpose(w, (0, 3, 1, 2))
    s_w = np.asarray(_channel_scales(in_params[1], w_oihw.shape[0], op, "weights"), np.float32)
    x_q, s_x = quantize_rows(x, tuple(range(x.ndim)))
    acc = conv2d_nchw(_nchw(x_q, layout).astype(np.float64), w_oihw.astype(np.float64), None,
                      tuple(attrs.get("strides", (1, 1))), tuple(attrs.get("dilations", (1, 1))),
                      tuple(attrs.get("pads", (0, 0, 0, 0))), int(attrs.get("groups", 1)))
    acc = _back(np.rint(acc).astype(np.int64), layout)
    channel_shape = (1, -1, 1, 1) if layout == "NCHW" else (1, 1, 1, -1)
    bias = None if bias is None else bias.reshape(channel_shape)
    y = _dynamic_epilogue(acc, s_x.reshape(()), s_w.reshape(channel_shape), bias, attrs, op)
    return [y]


def run_integer_node(op: str, inputs: Sequence[np.ndarray | None], attrs: Mapping) -> list[np.ndarray]:
    """The integer reference of one node: dynamic when the activation input is float and
    the weights int8, int8 otherwise. ``attrs["quantization"]`` must be set."""
    x = inputs[0] if inputs else None
    weights = inputs[1] if len(inputs) > 1 else None
    entry = OPS.get(op)
    if (entry is not None and entry.dynamic is not None and x is not None and x.dtype.kind == "f"
            and weights is not None and weights.dtype == np.int8):
        return entry.dynamic(inputs, attrs)
    reference = entry.int8 if entry is not None else None
    if reference is None:
        raise ValueError(f"{op} has no integer reference, but a tensor it reads or writes is quantized")
    return reference(inputs, attrs)

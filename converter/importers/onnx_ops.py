"""ONNX op -> IR ops: one entry per ONNX op type (``ONNX_OPS``).

An entry has ``convert(ctx)``, which emits the IR for one node through its ``NodeContext``, and
optionally ``check(info)``, which the support scan calls on every node before anything is built
and which returns the reasons a node cannot be converted ("mode=cubic"). Attributes the scan cannot
judge (values computed by other nodes) are checked again while converting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx

from converter.importers.onnx_builder import (
    BOUNDARY_DTYPES, ONNX_DTYPES, NodeContext, NodeInfo, onnx_dtype_name, sparse_to_array, tensor_to_array)
from converter.importers.onnx_einsum import lower_einsum
from converter.importers.onnx_linear_attention import lower_linear_attention
from converter.importers.onnx_spectral import lower_dft, lower_stft

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


@dataclass(frozen=True)
class OnnxOp:
    convert: Callable[[NodeContext], None]
    check: Callable[[NodeInfo], list[str]] | None = None
    # The newest opset whose definition of the op ``convert`` implements, for ops defined after
    # the importer's MAX_OPSET (0: none newer than MAX_OPSET).
    newest_opset: int = 0


ONNX_OPS: dict[str, OnnxOp] = {}


def converts(*op_types: str, check: Callable[[NodeInfo], list[str]] | None = None, newest_opset: int = 0):
    def register(convert):
        for op_type in op_types:
            ONNX_OPS[op_type] = OnnxOp(convert, check, newest_opset)
        return convert
    return register


def _axis(axis: int, rank: int, ctx: NodeContext) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ctx.error(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _axes(axes, rank: int, ctx: NodeContext) -> list[int]:
    return [_axis(int(a), rank, ctx) for a in axes]


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


# ---------------------------------------------------------------- elementwise

UNARY = {name: name for name in (
    "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Floor", "Ceil",
    "Round", "Sign", "Sin", "Cos", "Erf", "Softplus", "IsNaN", "HardSwish", "Not", "Asin", "Acos", "Atan")}

BINARY = {name: name for name in (
    "Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr",
    "BitwiseXor")}
BINARY.update({"LessOrEqual": "LessEqual", "GreaterOrEqual": "GreaterEqual"})


@converts(*UNARY)
def _unary(ctx: NodeContext):
    ctx.emit(UNARY[ctx.op_type], [ctx.input(0)], {}, [ctx.output(0)])


@converts(*BINARY)
def _binary(ctx: NodeContext):
    ctx.emit(BINARY[ctx.op_type], [ctx.input(0), ctx.input(1)], {}, [ctx.output(0)])


def _bitshift_check(info: NodeInfo) -> list[str]:
    direction = info.attr("direction", "")
    return [] if direction in ("LEFT", "RIGHT") else [f"direction={direction!r}"]


@converts("BitShift", check=_bitshift_check)
def _bitshift(ctx: NodeContext):
    # The runtime's right shift is arithmetic, as ONNX's is on signed types; unsigned types compute
    # in a wider signed one (BOUNDARY_DTYPES) where their values are non-negative, so it is the
    # logical shift there, and the cast back to the narrow type wraps a left shift as theirs does.
    op = "ShiftLeft" if ctx.attr("direction") == "LEFT" else "ShiftRight"
    ctx.emit(op, [ctx.input(0), ctx.input(1)], {}, [ctx.output(0)])


@converts("BitwiseNot")
def _bitwise_not(ctx: NodeContext):
    # ~x is x ^ (all bits set), in the computed type; the cast back to a narrow type keeps its bits.
    ctx.emit("BitwiseXor", [ctx.input(0), _scalar(ctx, -1, "all_ones")], {}, [ctx.output(0)])


@converts("Pow")
def _pow(ctx: NodeContext):
    base, exponent = ctx.input(0), ctx.input(1)
    # ONNX lets the exponent's type differ from the base's; the IR's Pow does not.
    if ctx.type(exponent).dtype != ctx.type(base).dtype:
        exponent = ctx.emit1("Cast", [exponent], {"to": ctx.type(base).dtype})
    ctx.emit("Pow", [base, exponent], {}, [ctx.output(0)])


@converts("Mod")
def _mod(ctx: NodeContext):
    op = "FMod" if ctx.attr("fmod", 0) else "Mod"
    ctx.emit(op, [ctx.input(0), ctx.input(1)], {}, [ctx.output(0)])


@converts("PRelu")
def _prelu(ctx: NodeContext):
    ctx.emit("PRelu", [ctx.input(0), ctx.input(1)], {}, [ctx.output(0)])


def _chain(ctx: NodeContext, op: str, inputs: list[str], output: str | None) -> str:
    if len(inputs) == 1:
        return ctx.emit1("Identity", inputs, {}, output)
    acc = inputs[0]
    for k, operand in enumerate(inputs[1:], start=2):
        acc = ctx.emit1(op, [acc, operand], {}, output if k == len(inputs) else None)
    return acc


@converts("Min", "Max", "Sum")
def _variadic(ctx: NodeContext):
    op = {"Min": "Min", "Max": "Max", "Sum": "Add"}[ctx.op_type]
    _chain(ctx, op, ctx.inputs, ctx.output(0))


@converts("Mean")
def _mean(ctx: NodeContext):
    inputs = ctx.inputs
    if len(inputs) == 1:
        ctx.copy_to(inputs[0], ctx.output(0))
        return
    total = _chain(ctx, "Add", inputs, None)
    count = ctx.constant(np.array(len(inputs), dtype=ctx.type(inputs[0]).dtype), base="count")
    ctx.emit("Div", [total, count], {}, [ctx.output(0)])


@converts("IsInf")
def _is_inf(ctx: NodeContext):
    positive, negative = bool(ctx.attr("detect_positive", 1)), bool(ctx.attr("detect_negative", 1))
    x = ctx.input(0)
    if positive and negative:
        ctx.emit("IsInf", [x], {}, [ctx.output(0)])
        return
    if not positive and not negative:
        ctx.emit("Less", [x, x], {}, [ctx.output(0)])  # false everywhere, NaN included
        return
    # One sign only: an infinity whose sign is the wanted one.
    compare = "Greater" if positive else "Less"
    sign = ctx.emit1(compare, [x, ctx.constant(np.zeros((), ctx.type(0).dtype), base="zero")])
    ctx.emit("And", [ctx.emit1("IsInf", [x]), sign], {}, [ctx.output(0)])


@converts("HardSigmoid")
def _hard_sigmoid(ctx: NodeContext):
    attrs = {"alpha": float(ctx.attr("alpha", 0.2)), "beta": float(ctx.attr("beta", 0.5))}
    ctx.emit("HardSigmoid", [ctx.input(0)], attrs, [ctx.output(0)])


@converts("LeakyRelu")
def _leaky_relu(ctx: NodeContext):
    ctx.emit("LeakyRelu", [ctx.input(0)], {"alpha": float(ctx.attr("alpha", 0.01))}, [ctx.output(0)])


@converts("Elu")
def _elu(ctx: NodeContext):
    ctx.emit("Elu", [ctx.input(0)], {"alpha": float(ctx.attr("alpha", 1.0))}, [ctx.output(0)])


def _scalar(ctx: NodeContext, value: float, base: str) -> str:
    return ctx.constant(np.array(value, ctx.type(0).dtype), base=base)


@converts("Celu")
def _celu(ctx: NodeContext):
    # alpha * elu(x / alpha, 1)
    alpha = _scalar(ctx, float(ctx.attr("alpha", 1.0)), "alpha")
    elu = ctx.emit1("Elu", [ctx.emit1("Div", [ctx.input(0), alpha])], {"alpha": 1.0})
    ctx.emit("Mul", [elu, alpha], {}, [ctx.output(0)])


@converts("Selu")
def _selu(ctx: NodeContext):
    # gamma * elu(x, alpha)
    elu = ctx.emit1("Elu", [ctx.input(0)], {"alpha": float(ctx.attr("alpha", 1.67326319217681884765625))})
    gamma = _scalar(ctx, float(ctx.attr("gamma", 1.05070102214813232421875)), "gamma")
    ctx.emit("Mul", [elu, gamma], {}, [ctx.output(0)])


@converts("ThresholdedRelu")
def _thresholded_relu(ctx: NodeContext):
    x = ctx.input(0)
    above = ctx.emit1("Greater", [x, _scalar(ctx, float(ctx.attr("alpha", 1.0)), "alpha")])
    ctx.emit("Where", [above, x, _scalar(ctx, 0.0, "zero")], {}, [ctx.output(0)])


@converts("Softsign")
def _softsign(ctx: NodeContext):
    x = ctx.input(0)
    denominator = ctx.emit1("Add", [ctx.emit1("Abs", [x]), _scalar(ctx, 1.0, "one")])
    ctx.emit("Div", [x, denominator], {}, [ctx.output(0)])


@converts("Shrink")
def _shrink(ctx: NodeContext):
    x = ctx.input(0)
    bias, lambd = float(ctx.attr("bias", 0.0)), float(ctx.attr("lambd", 0.5))
    below = ctx.emit1("Less", [x, _scalar(ctx, -lambd, "low")])
    above = ctx.emit1("Greater", [x, _scalar(ctx, lambd, "high")])
    shifted_up = ctx.emit1("Add", [x, _scalar(ctx, bias, "bias")])
    shifted_down = ctx.emit1("Sub", [x, _scalar(ctx, bias, "bias")])
    upper = ctx.emit1("Where", [above, shifted_down, _scalar(ctx, 0.0, "zero")])
    ctx.emit("Where", [below, shifted_up, upper], {}, [ctx.output(0)])


@converts("Mish")
def _mish(ctx: NodeContext):
    x = ctx.input(0)
    ctx.emit("Mul", [x, ctx.emit1("Tanh", [ctx.emit1("Softplus", [x])])], {}, [ctx.output(0)])


def _swish_of(ctx: NodeContext, x: str, alpha: float, output: str | None = None) -> str:
    """x * sigmoid(alpha * x) (SiLU when alpha is 1)."""
    scaled = x if alpha == 1.0 else ctx.emit1("Mul", [x, _scalar(ctx, alpha, "alpha")])
    return ctx.emit1("Mul", [x, ctx.emit1("Sigmoid", [scaled])], {}, output)


@converts("Swish", newest_opset=24)
def _swish(ctx: NodeContext):
    _swish_of(ctx, ctx.input(0), float(ctx.attr("alpha", 1.0)), ctx.output(0))


@converts("SwiGLU", newest_opset=28)
def _swiglu(ctx: NodeContext):
    # Swish_alpha(A) * B, A and B of one shape.
    a, b = ctx.input(0), ctx.input(1)
    if ctx.shape(0) != ctx.shape(1):
        raise ctx.error(f"A {list(ctx.shape(0))} and B {list(ctx.shape(1))} differ in shape (SwiGLU does not broadcast)")
    gate = _swish_of(ctx, a, float(ctx.attr("alpha", 1.0)))
    ctx.emit("Mul", [gate, b], {}, [ctx.output(0)])


@converts("Tan")
def _tan(ctx: NodeContext):
    x = ctx.input(0)
    ctx.emit("Div", [ctx.emit1("Sin", [x]), ctx.emit1("Cos", [x])], {}, [ctx.output(0)])


@converts("Sinh", "Cosh")
def _hyperbolic(ctx: NodeContext):
    x = ctx.input(0)
    grow, decay = ctx.emit1("Exp", [x]), ctx.emit1("Exp", [ctx.emit1("Neg", [x])])
    both = ctx.emit1("Sub" if ctx.op_type == "Sinh" else "Add", [grow, decay])
    ctx.emit("Mul", [both, _scalar(ctx, 0.5, "half")], {}, [ctx.output(0)])


@converts("Asinh", "Acosh")
def _inverse_hyperbolic(ctx: NodeContext):
    # log(x + sqrt(x^2 +- 1))
    x = ctx.input(0)
    root = ctx.emit1("Sqrt", [ctx.emit1("Add", [ctx.emit1("Square", [x]),
                                                _scalar(ctx, 1.0 if ctx.op_type == "Asinh" else -1.0, "one")])])
    ctx.emit("Log", [ctx.emit1("Add", [x, root])], {}, [ctx.output(0)])


@converts("Atanh")
def _atanh(ctx: NodeContext):
    # 0.5 * log((1 + x) / (1 - x))
    x, one = ctx.input(0), _scalar(ctx, 1.0, "one")
    ratio = ctx.emit1("Div", [ctx.emit1("Add", [one, x]), ctx.emit1("Sub", [one, x])])
    ctx.emit("Mul", [ctx.emit1("Log", [ratio]), _scalar(ctx, 0.5, "half")], {}, [ctx.output(0)])


def _check_gelu(info: NodeInfo) -> list[str]:
    approximate = info.attr("approximate", "none")
    return [] if approximate in ("none", "tanh") else [f"approximate={approximate}"]


@converts("Gelu", check=_check_gelu)
def _gelu(ctx: NodeContext):
    op = "GeluTanh" if ctx.attr("approximate", "none") == "tanh" else "Gelu"
    ctx.emit(op, [ctx.input(0)], {}, [ctx.output(0)])


@converts("Clip")
def _clip(ctx: NodeContext):
    x, dtype = ctx.input(0), ctx.type(0).dtype
    low = ctx.const(1) if ctx.input(1) else None
    high = ctx.const(2) if ctx.input(2) else None
    if (ctx.input(1) and low is None) or (ctx.input(2) and high is None):
        raise ctx.error("min and max must be constant at import")
    if dtype != "float32":
        # The IR's Clip carries float bounds; integer clipping stays exact as Max/Min.
        if low is not None:
            x = ctx.emit1("Max", [x, ctx.constant(low.astype(dtype), base="min")],
                          {}, None if high is not None else ctx.output(0))
        if high is not None:
            x = ctx.emit1("Min", [x, ctx.constant(high.astype(dtype), base="max")],
                          {}, ctx.output(0))
        if low is None and high is None:
            ctx.copy_to(x, ctx.output(0))
        return
    low_value = float(low) if low is not None else float(ctx.attr("min", -math.inf))
    high_value = float(high) if high is not None else float(ctx.attr("max", math.inf))
    if low_value == 0.0 and high_value == 6.0:
        ctx.emit("Relu6", [x], {}, [ctx.output(0)])
    elif low_value == 0.0 and high_value == math.inf:
        ctx.emit("Relu", [x], {}, [ctx.output(0)])
    else:
        ctx.emit("Clip", [x], {"min": low_value, "max": high_value}, [ctx.output(0)])


@converts("Identity")
def _identity(ctx: NodeContext):
    ctx.copy_to(ctx.input(0), ctx.output(0))


def _check_dropout(info: NodeInfo) -> list[str]:
    training = info.static(2) if info.input(2) else None
    if training is not None and bool(training):
        return ["training_mode=true"]
    if info.input(2) and info.is_graph_input(2):
        return ["training_mode given at run time"]
    return []


@converts("Dropout", check=_check_dropout)
def _dropout(ctx: NodeContext):
    if ctx.input(2):
        training = ctx.const(2)
        if training is None or bool(training):
            raise ctx.unsupported("training_mode not constant false")
    ctx.copy_to(ctx.input(0), ctx.output(0))
    if ctx.output(1):
        ctx.set_output_constant(1, np.ones(ctx.shape(0), dtype=bool))


@converts("Where")
def _where(ctx: NodeContext):
    ctx.emit("Where", ctx.inputs[:3], {}, [ctx.output(0)])


_ROUND_MODES = ("up", "down", "nearest")


def _round_mode(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _check_cast(info: NodeInfo) -> list[str]:
    to = info.attr("to")
    reasons = [] if to in ONNX_DTYPES or to in BOUNDARY_DTYPES else [f"to={onnx_dtype_name(to)}"]
    if _round_mode(info.attr("round_mode", "up")) not in _ROUND_MODES:
        reasons.append(f"round_mode={_round_mode(info.attr('round_mode'))}")
    return reasons


def _cast_to(ctx: NodeContext, dtype: str):
    """Input 0 cast to IR dtype ``dtype``. A boundary dtype is passed through (its rounding or wrapping
    is the cast's meaning) and back to the dtype the graph computes it in, except float64, which the
    graph computes in float32. saturate and round_mode matter to the float8 targets alone."""
    attrs = {"to": dtype}
    if not ctx.attr("saturate", 1):
        attrs["saturate"] = False
    if _round_mode(ctx.attr("round_mode", "up")) != "up":
        attrs["round_mode"] = _round_mode(ctx.attr("round_mode"))
    inside = dict(BOUNDARY_DTYPES.values()).get(dtype)
    if inside is None:
        ctx.emit("Cast", [ctx.input(0)], attrs, [ctx.output(0)])
        return
    x = ctx.input(0) if dtype == "float64" else ctx.emit1("Cast", [ctx.input(0)], attrs)
    ctx.emit("Cast", [x], {"to": inside}, [ctx.output(0)])


@converts("Cast", check=_check_cast, newest_opset=28)
def _cast(ctx: NodeContext):
    to = ctx.attr("to")
    _cast_to(ctx, ONNX_DTYPES[to] if to in ONNX_DTYPES else BOUNDARY_DTYPES[to][0])


@converts("CastLike", newest_opset=25)
def _cast_like(ctx: NodeContext):
    # A graph input keeps its boundary dtype under its own name (the nodes read its cast).
    like = ctx.node.input[1]
    dtype = ctx.builder.tensors[like].dtype if like in ctx.builder.tensors else ctx.type(1).dtype
    _cast_to(ctx, dtype)


# Floats other than float32 are computed in float32: float64 loses bits there, and float16 and
# bfloat16 keep their values but not their NaN payloads, so BitCast refuses them on either side.
BITCAST_FLOATS_REFUSED = (onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


# Sub-byte types are packed at the boundary and only CAST reads or writes them.
BITCAST_PACKED_REFUSED = (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.INT2,
                          onnx.TensorProto.UINT2, onnx.TensorProto.FLOAT4E2M1)


def _check_bitcast(info: NodeInfo) -> list[str]:
    to = info.attr("to")
    if to in BITCAST_FLOATS_REFUSED:
        return [f"to={onnx_dtype_name(to)} (computed in float32, so its bits are not kept)"]
    if to in BITCAST_PACKED_REFUSED:
        return [f"to={onnx_dtype_name(to)} (a packed sub-byte type)"]
    return [] if to in ONNX_DTYPES or to in BOUNDARY_DTYPES else [f"to={onnx_dtype_name(to)}"]


# The signed integer of each size: an integer tensor computed in a wider type casts to it with
# wrapping, which gives the bits its own narrow type had (int8 or uint8, int16 or uint16 ...).
SIGNED_OF_SIZE = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


@converts("BitCast", check=_check_bitcast, newest_opset=26)
def _bitcast(ctx: NodeContext):
    """Through the input's narrow type, a byte copy read as the target type, and the cast to the
    type the target is computed in. A float input must be float32 (BITCAST_FLOATS_REFUSED)."""
    to = ctx.attr("to")
    target, inside = (ONNX_DTYPES[to], ONNX_DTYPES[to]) if to in ONNX_DTYPES else BOUNDARY_DTYPES[to]
    size = np.dtype(target).itemsize  # not bfloat16: _check_bitcast refuses it
    computed = ctx.type(0).dtype
    if computed in ("int32", "int64"):
        source = SIGNED_OF_SIZE[size]
    elif computed == "bool" or (computed == "float32" and size == 4):
        source = computed
    else:
        raise ctx.error(f"a {size}-byte input computed in {computed}: float64, float16 and bfloat16 are computed "
                        f"in float32, so their bits are not kept; refused")
    x = ctx.input(0) if source == computed else ctx.emit1("Cast", [ctx.input(0)], {"to": source})
    if target == inside:
        ctx.emit("BitCast", [x], {"to": target}, [ctx.output(0)])
    else:
        ctx.emit("Cast", [ctx.emit1("BitCast", [x], {"to": target})], {"to": inside}, [ctx.output(0)])


# ---------------------------------------------------------------- softmax and normalisation

@converts("Softmax", "LogSoftmax")
def _softmax(ctx: NodeContext):
    axis = _axis(ctx.attr("axis", -1), ctx.rank(0), ctx)
    ctx.emit(ctx.op_type, [ctx.input(0)], {"axis": axis}, [ctx.output(0)])


def _check_batch_norm(info: NodeInfo) -> list[str]:
    return ["training_mode=1"] if info.attr("training_mode", 0) else []


@converts("BatchNormalization", check=_check_batch_norm)
def _batch_norm(ctx: NodeContext):
    x, scale, bias, mean, var = ctx.inputs[:5]
    epsilon = float(ctx.attr("epsilon", 1e-5))
    rank = ctx.rank(0)
    if rank == 4:
        ctx.emit("BatchNorm", [x, scale, bias, mean, var], {"epsilon": epsilon, "layout": "NCHW"},
                 [ctx.output(0)])
        return
    params = [ctx.const(name) for name in (scale, bias, mean, var)]
    if any(p is None for p in params):
        raise ctx.error(f"rank-{rank} input needs constant scale, bias, mean and var")
    gamma, beta, mu, sigma2 = (p.astype(np.float32) for p in params)
    factor = gamma / np.sqrt(sigma2 + np.float32(epsilon))
    shift = beta - mu * factor
    channel_shape = (-1,) + (1,) * max(rank - 2, 0)
    scaled = ctx.emit1("Mul", [x, ctx.constant(factor.reshape(channel_shape), base="scale")])
    ctx.emit("Add", [scaled, ctx.constant(shift.reshape(channel_shape), base="shift")], {},
             [ctx.output(0)])


def _check_layer_norm(info: NodeInfo) -> list[str]:
    stash = info.attr("stash_type", 1)
    return [] if stash == 1 else [f"stash_type={onnx_dtype_name(stash)}"]


@converts("LayerNormalization", check=_check_layer_norm)
def _layer_norm(ctx: NodeContext):
    axis = _axis(ctx.attr("axis", -1), ctx.rank(0), ctx)
    epsilon = float(ctx.attr("epsilon", 1e-5))
    attrs = {"axis": axis, "epsilon": epsilon}
    ctx.emit("LayerNorm", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs, [ctx.output(0)])
    mean_out, inv_std_out = ctx.output(1), ctx.output(2)
    if not (ctx.is_used(mean_out) or ctx.is_used(inv_std_out)):
        return
    # The statistics kept for training, over the normalised axes with those axes kept as 1s.
    reduce = {"axes": tuple(range(axis, ctx.rank(0))), "keepdims": True}
    x = ctx.input(0)
    mean = ctx.emit1("ReduceMean", [x], reduce, mean_out or None)
    if ctx.is_used(inv_std_out):
        centred = ctx.emit1("Sub", [x, mean])
        variance = ctx.emit1("ReduceMean", [ctx.emit1("Square", [centred])], reduce)
        shifted = ctx.emit1("Add", [variance, ctx.constant(np.float32(epsilon), base="epsilon")])
        ctx.emit("Rsqrt", [shifted], {}, [inv_std_out])


def _check_loss(info: NodeInfo) -> list[str]:
    reduction = info.attr("reduction", "mean")
    return [] if reduction in ("none", "sum", "mean") else [f"reduction={reduction}"]


def _negative_log_likelihood(ctx: NodeContext, log_prob: str, target: str, weight: str, output: str) -> None:
    """loss[n, d...] = -log_prob[n, target[n, d...], d...] * weight[target], with the targets equal
    to ignore_index contributing 0 (and, for "mean", not counted); "mean" divides by the summed
    weights of the counted targets, as ONNX defines it."""
    dtype = ctx.type(log_prob).dtype
    target_shape = ctx.shape(target)
    picked_shape = (target_shape[0], 1) + tuple(target_shape[1:])
    ignore_index = ctx.attr("ignore_index")
    kept = None
    if ignore_index is not None:
        ignored = ctx.emit1("Equal", [target, ctx.constant(np.array(ignore_index, ctx.type(target).dtype), base="ignore")])
        kept = ctx.emit1("Not", [ignored])
        # An ignored target may be out of range: read class 0 instead and drop the term.
        target = ctx.emit1("Where", [ignored, ctx.constant(np.zeros((), ctx.type(target).dtype), base="zero"), target])
    picked = ctx.emit1("GatherElements", [log_prob, ctx.reshape(target, picked_shape)], {"axis": 1})
    loss = ctx.emit1("Neg", [ctx.reshape(picked, target_shape)])
    scale = ctx.emit1("Gather", [weight, target], {"axis": 0}) if weight else None
    if kept is not None:
        mask = ctx.emit1("Cast", [kept], {"to": dtype})
        scale = mask if scale is None else ctx.emit1("Mul", [scale, mask])
    if scale is not None:
        loss = ctx.emit1("Mul", [loss, scale])
    reduction = ctx.attr("reduction", "mean")
    if reduction == "none":
        ctx.copy_to(loss, output)
        return
    every_axis = {"axes": tuple(range(len(target_shape))), "keepdims": False}
    if reduction == "sum" or scale is None:
        ctx.emit("ReduceSum" if reduction == "sum" else "ReduceMean", [loss], every_axis, [output])
        return
    total = ctx.emit1("ReduceSum", [loss], every_axis)
    ctx.emit("Div", [total, ctx.emit1("ReduceSum", [scale], every_axis)], {}, [output])


@converts("NegativeLogLikelihoodLoss", check=_check_loss)
def _nll_loss(ctx: NodeContext):
    _negative_log_likelihood(ctx, ctx.input(0), ctx.input(1), ctx.input(2), ctx.output(0))


@converts("SoftmaxCrossEntropyLoss", check=_check_loss)
def _softmax_cross_entropy(ctx: NodeContext):
    log_prob = ctx.emit1("LogSoftmax", [ctx.input(0)], {"axis": 1}, ctx.output(1) or None)
    _negative_log_likelihood(ctx, log_prob, ctx.input(1), ctx.input(2), ctx.output(0))


def _check_rms_norm(info: NodeInfo) -> list[str]:
    stash = info.attr("stash_type", 1)
    return [] if stash == 1 else [f"stash_type={onnx_dtype_name(stash)}"]


@converts("RMSNormalization", check=_check_rms_norm, newest_opset=23)
def _rms_norm(ctx: NodeContext):
    """y = x / sqrt(mean(x^2 over axis..last) + epsilon) * scale: the IR's RMSNorm."""
    axis = _axis(ctx.attr("axis", -1), ctx.rank(0), ctx)
    ctx.emit("RMSNorm", [ctx.input(0), ctx.input(1)], {"axis": axis, "epsilon": float(ctx.attr("epsilon", 1e-5))},
             [ctx.output(0)])


# ---------------------------------------------------------------- attention

def _check_attention(info: NodeInfo) -> list[str]:
    reasons = []
    if info.input(6):
        reasons.append("nonpad_kv_seqlen (input 6)")
    for window in ("left_window_size", "right_window_size"):
        if info.attr(window, -1) != -1:
            reasons.append(f"{window}={info.attr(window)}")
    mode = info.attr("qk_matmul_output_mode", 0)
    if info.is_used(info.output(3)):
        if mode not in _QK_OUTPUT_STAGES:
            reasons.append(f"qk_matmul_output_mode={mode}")
        elif mode == 0 and info.attr("softcap", 0.0) > 0:
            # The definition's text says the product before softcap; its reference implementation
            # returns it after.
            reasons.append("qk_matmul_output_mode=0 with softcap (the ONNX text and reference disagree)")
    return reasons


# qk_matmul_output_mode -> the stage of the scores output 3 returns.
_QK_OUTPUT_STAGES = {0: "product", 1: "softcapped", 2: "biased", 3: "probabilities"}


def _repeat_heads(ctx: NodeContext, x: str, group: int) -> str:
    """[B, H, S, D] -> [B, H * group, S, D], each head repeated ``group`` times in place."""
    if group == 1:
        return x
    b, heads, s, d = ctx.shape(x)
    wide = ctx.emit1("BroadcastTo", [ctx.reshape(x, (b, heads, 1, s, d))], {"shape": (b, heads, group, s, d)})
    return ctx.reshape(wide, (b, heads * group, s, d))


def _unfused_attention(ctx: NodeContext, q: str, k: str, v: str, mask: str | None, scale: float | None,
                       causal_offset: int | None, softcap: float) -> tuple[str, str]:
    """(y, the scores output 3 asks for): attention written out as IR ops, for a node the fused op
    cannot take (it never forms the scores; its causal mask ends where the keys end). The steps and
    their order are ONNX's: q and k each scaled by sqrt(scale), q @ k^T, softcap, plus the mask and
    the causal bias (query i keeps key j when j <= i + ``causal_offset``; None: no causal bias),
    softmax over the keys, a query row whose bias drops every key zeroed, times v."""
    b, heads, sq, size = ctx.shape(q)
    group = heads // ctx.shape(k)[1]
    k, v = _repeat_heads(ctx, k, group), _repeat_heads(ctx, v, group)
    sk = ctx.shape(k)[2]
    root = ctx.constant(np.float32(np.sqrt(scale if scale is not None else 1.0 / np.sqrt(size))))
    stages = {"product": ctx.emit1("BatchMatMul", [ctx.emit1("Mul", [q, root]), ctx.emit1("Mul", [k, root])],
                                   {"transpose_a": False, "transpose_b": True})}
    scores = stages["product"]
    if softcap > 0:
        cap = ctx.constant(np.float32(softcap))
        scores = ctx.emit1("Mul", [ctx.emit1("Tanh", [ctx.emit1("Div", [scores, cap])]), cap])
    stages["softcapped"] = scores
    zero, minus_inf = ctx.constant(np.float32(0)), ctx.constant(np.float32(-np.inf))
    bias = None
    if mask:
        bias = ctx.emit1("Where", [mask, zero, minus_inf]) if ctx.type(mask).dtype == "bool" else mask
    if causal_offset is not None:
        keep = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + causal_offset
        causal_bias = ctx.constant(np.where(keep, 0, -np.inf).astype(np.float32), base="causal_bias")
        bias = causal_bias if bias is None else ctx.emit1("Add", [bias, causal_bias])
    if bias is not None:
        scores = ctx.emit1("Add", [scores, bias])
    stages["biased"] = scores
    probabilities = ctx.emit1("Softmax", [scores], {"axis": 3})
    if bias is not None:
        top = ctx.emit1("ReduceMax", [bias], {"axes": (ctx.rank(bias) - 1,), "keepdims": True})
        dropped = ctx.emit1("Equal", [top, minus_inf])
        probabilities = ctx.emit1("Where", [dropped, zero, probabilities])
    stages["probabilities"] = probabilities
    y = ctx.emit1("BatchMatMul", [probabilities, v], {"transpose_a": False, "transpose_b": False})
    return y, stages[_QK_OUTPUT_STAGES[int(ctx.attr("qk_matmul_output_mode", 0))]]


def _split_heads(ctx: NodeContext, x: str, heads: int, what: str) -> str:
    """[B, S, heads * size] -> [B, heads, S, size]."""
    b, s, hidden = ctx.shape(x)
    if not heads or hidden % heads:
        raise ctx.error(f"{what} hidden size {hidden} is not a multiple of {heads} heads")
    return ctx.emit1("Transpose", [ctx.reshape(x, (b, s, heads, hidden // heads))], {"perm": (0, 2, 1, 3)})


@converts("Attention", check=_check_attention, newest_opset=24)
def _attention(ctx: NodeContext):
    """ONNX Attention onto the IR's fused Attention: 3-D inputs split into heads around it, the
    key/value cache concatenated in front of the new keys/values (present_key/value), a mask
    shorter than the keys padded with -inf (False), is_causal aligned to the end of the cache.
    When qk_matmul_output (output 3) is read, or the causal mask does not end where the keys do
    (a cache with more new keys than queries), the attention is written out as separate ops
    instead (``_unfused_attention``)."""
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    three_d = ctx.rank(0) == 3
    if three_d:
        q = _split_heads(ctx, q, int(ctx.attr("q_num_heads", 0)), "Q")
        k = _split_heads(ctx, k, int(ctx.attr("kv_num_heads", 0)), "K")
        v = _split_heads(ctx, v, int(ctx.attr("kv_num_heads", 0)), "V")
    cached = bool(ctx.input(4))
    for index, current in ((1, k), (2, v)):
        if cached:
            present = ctx.emit1("Concat", [ctx.input(index + 3), current], {"axis": 2}, ctx.output(index) or None)
        elif ctx.output(index):
            ctx.copy_to(current, ctx.output(index))
        if index == 1:
            k = present if cached else k
        else:
            v = present if cached else v
    inputs = [q, k, v]
    mask = ctx.input(3)
    if mask:
        keys, given = ctx.shape(k)[2], ctx.shape(mask)[-1]
        if isinstance(keys, int) and isinstance(given, int) and given < keys:
            rank = ctx.rank(mask)
            pads = (0,) * rank + (0,) * (rank - 1) + (keys - given,)
            boolean = ctx.type(mask).dtype == "bool"
            mask = ctx.emit1("Pad", [mask], {"mode": "constant", "pads": pads,
                                             "value": 0.0 if boolean else float("-inf")})
        inputs.append(mask)
    scale = ctx.attr("scale")
    scale = float(scale) if scale is not None else None
    softcap = float(ctx.attr("softcap", 0.0))
    # Query i keeps key j when j <= i + the cache's length; the fused op's causal modes are the
    # offsets 0 and (keys - queries).
    causal_offset = (ctx.shape(ctx.input(4))[2] if cached else 0) if ctx.attr("is_causal", 0) else None
    ends = {None: "none", ctx.shape(k)[2] - ctx.shape(q)[2]: "lower_right", 0: "upper_left"}
    if ctx.is_used(ctx.output(3)) or causal_offset not in ends:
        y, scores = _unfused_attention(ctx, q, k, v, inputs[3] if mask else None, scale, causal_offset, softcap)
        if ctx.is_used(ctx.output(3)):
            ctx.copy_to(scores, ctx.output(3))
        if not three_d:
            ctx.copy_to(y, ctx.output(0))
            return
    else:
        attrs = {"scale": scale, "causal": ends[causal_offset], "softcap": softcap, "k_transposed": False}
        y = ctx.emit1("Attention", inputs, attrs, output=None if three_d else ctx.output(0))
        if not three_d:
            return
    y = ctx.emit1("Transpose", [y], {"perm": (0, 2, 1, 3)})
    b, s, heads, size = ctx.shape(y)
    ctx.reshape(y, (b, s, heads * size), ctx.output(0))


def slice_along(ctx: NodeContext, x: str, axis: int, start: int, end: int, step: int = 1) -> str:
    """x[start:end:step] along ``axis``, the other axes whole (unbounded, so dynamic ones stay so)."""
    rank = ctx.rank(x)
    axis %= rank
    return ctx.emit1("Slice", [x], {"starts": tuple(start if d == axis else 0 for d in range(rank)),
                                    "ends": tuple(end if d == axis else INT64_MAX for d in range(rank)),
                                    "steps": tuple(step if d == axis else 1 for d in range(rank))})


@converts("LinearAttention", newest_opset=27)
def _linear_attention(ctx: NodeContext):
    lower_linear_attention(ctx)


@converts("RotaryEmbedding", newest_opset=23)
def _rotary_embedding(ctx: NodeContext):
    """Rotates pairs of the first rotary_embedding_dim features of each head by the cached angle of
    its position: halves (x1, x2) = (first half, second half), or (even, odd) features when
    interleaved; (x1, x2) -> (cos x1 - sin x2, sin x1 + cos x2). Written with Gather, Slice, Mul and
    Concat on [B, S, heads, size]."""
    x = ctx.input(0)
    shape = ctx.shape(x)
    if len(shape) == 4:
        x = ctx.emit1("Transpose", [x], {"perm": (0, 2, 1, 3)})
    else:
        heads = int(ctx.attr("num_heads", 0))
        if not heads or shape[2] % heads:
            raise ctx.error(f"hidden size {shape[2]} is not a multiple of num_heads={heads}")
        x = ctx.reshape(x, (shape[0], shape[1], heads, shape[2] // heads))
    size = ctx.shape(x)[3]
    rotated = int(ctx.attr("rotary_embedding_dim", 0)) or size
    half = rotated // 2
    cos, sin = ctx.input(1), ctx.input(2)
    if ctx.input(3):
        cos = ctx.emit1("Gather", [cos, ctx.input(3)], {"axis": 0})
        sin = ctx.emit1("Gather", [sin, ctx.input(3)], {"axis": 0})
    if ctx.shape(cos)[-1] != half:
        raise ctx.error(f"the cos/sin caches hold {ctx.shape(cos)[-1]} angles; rotary_embedding_dim {rotated} "
                        f"needs {half}")
    b, s = ctx.shape(cos)[:2]
    cos, sin = ctx.reshape(cos, (b, s, 1, half)), ctx.reshape(sin, (b, s, 1, half))
    part = slice_along(ctx, x, -1, 0, rotated) if rotated < size else x
    interleaved = bool(ctx.attr("interleaved", 0))
    if interleaved:
        x1, x2 = slice_along(ctx, part, -1, 0, rotated, 2), slice_along(ctx, part, -1, 1, rotated, 2)
    else:
        x1, x2 = slice_along(ctx, part, -1, 0, half), slice_along(ctx, part, -1, half, rotated)
    real = ctx.emit1("Sub", [ctx.emit1("Mul", [cos, x1]), ctx.emit1("Mul", [sin, x2])])
    imaginary = ctx.emit1("Add", [ctx.emit1("Mul", [sin, x1]), ctx.emit1("Mul", [cos, x2])])
    if interleaved:
        pair_shape = tuple(ctx.shape(real)) + (1,)
        pairs = ctx.emit1("Concat", [ctx.reshape(real, pair_shape), ctx.reshape(imaginary, pair_shape)], {"axis": 4})
        turned = ctx.reshape(pairs, tuple(ctx.shape(part)))
    else:
        turned = ctx.emit1("Concat", [real, imaginary], {"axis": 3})
    if rotated < size:
        turned = ctx.emit1("Concat", [turned, slice_along(ctx, x, -1, rotated, size)], {"axis": 3})
    if len(shape) == 4:
        ctx.emit("Transpose", [turned], {"perm": (0, 2, 1, 3)}, [ctx.output(0)])
    else:
        ctx.reshape(turned, shape, ctx.output(0))


@converts("LRN")
def _lrn(ctx: NodeContext):
    attrs = {"size": int(ctx.attr("size")), "alpha": float(ctx.attr("alpha", 1e-4)),
             "beta": float(ctx.attr("beta", 0.75)), "bias": float(ctx.attr("bias", 1.0)),
             "layout": "NCHW"}
    ctx.emit("LRN", [ctx.input(0)], attrs, [ctx.output(0)])


# ---------------------------------------------------------------- convolution and pooling

def _check_spatial(info: NodeInfo, allowed=(1, 2)) -> list[str]:
    kernel = info.attr("kernel_shape")
    spatial = len(kernel) if kernel else (info.rank(0) - 2 if info.rank(0) is not None else None)
    if spatial is not None and spatial not in allowed:
        return [f"{spatial} spatial dims"]
    return []


def _check_spatial_3d(info: NodeInfo) -> list[str]:
    return _check_spatial(info, (1, 2, 3))


def _resolve_pads(ctx: NodeContext, sizes, kernel, strides, dilations) -> list[int]:
    """ONNX auto_pad -> explicit pads (begins..., ends...)."""
    n = len(sizes)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(ctx.attr("pads", [0] * (2 * n)))
        if len(pads) != 2 * n:
            raise ctx.error(f"pads has {len(pads)} entries, expected {2 * n}")
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * n)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.error(f"unknown auto_pad {auto_pad!r}")
    begins, ends = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else large)
        ends.append(large if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _spatial_attrs(ctx: NodeContext, kernel) -> tuple[list[int], list[int]]:
    """(strides, dilations) of a convolution or pooling node, after checking that the kernel, the
    strides and the dilations each give one value >= 1 per spatial dim of input 0."""
    n = ctx.rank(0) - 2
    strides, dilations = list(ctx.attr("strides", [1] * n)), list(ctx.attr("dilations", [1] * n))
    for name, values in (("kernel_shape", list(kernel)), ("strides", strides), ("dilations", dilations)):
        if len(values) != n or any(int(v) < 1 for v in values):
            raise ctx.error(f"{name} {values[:8]} must hold {n} values >= 1, one per spatial dim of the "
                            f"rank-{n + 2} input")
    return strides, dilations


def _to_2d(values: list[int], fill: int) -> tuple[int, int]:
    """A 1-D attribute as the 2-D op's (h, w), the lowered image being 1 pixel high."""
    return (fill, values[0]) if len(values) == 1 else (values[0], values[1])


def _pads_2d(pads: list[int]) -> tuple[int, int, int, int]:
    if len(pads) == 2:
        return (0, pads[0], 0, pads[1])
    return (pads[0], pads[1], pads[2], pads[3])


def _with_height_one(ctx: NodeContext, name: str) -> str:
    shape = ctx.shape(name)
    return ctx.reshape(name, shape[:2] + (1,) + shape[2:])


def _finish_1d(ctx: NodeContext, op: str, inputs: list[str], attrs: dict, one_d: bool, output: str | None = None):
    output = output or ctx.output(0)
    if not one_d:
        ctx.emit(op, inputs, attrs, [output])
        return
    y = ctx.emit1(op, inputs, attrs)
    shape = ctx.shape(y)
    ctx.reshape(y, shape[:2] + shape[3:], output=output)


# ---- 3-D convolution and pooling, as 2-D ops over depth slices
#
# Output depth d reads input depths d * sd + kd * dd (kd < KD) of the depth-padded input. For each
# kernel tap kd, a strided Slice along depth picks those planes for every d at once; with depth
# moved next to the batch and merged into it ([N * Dout, C, H, W]) one 2-D op handles every plane,
# and the taps combine elementwise: Add for a convolution (w[:, :, kd] per tap, the bias once), Max
# for max pooling (depth padded with -inf), and for average pooling the per-tap 2-D averages summed
# and divided by the number of taps counted at each output depth (the 2-D op divides by the
# count over height and width; the 3-D count is the product).

def _depth_taps(ctx: NodeContext, x: str, kd: int, dd: int, sd: int, pads_d: tuple[int, int],
                ceil_mode: bool, pad_value: float) -> tuple[list[str], int, int]:
    """x [N, C, D, H, W] -> per tap the planes it reads as [N * Dout, C, H, W]; also Dout and the
    depth padding added at the end for ceil_mode's last window."""
    n, c, depth, h, w = ctx.shape(x)
    extent = (kd - 1) * dd + 1
    span = depth + pads_d[0] + pads_d[1] - extent
    if span < 0:
        raise ctx.error(f"kernel depth extent {extent} exceeds the padded depth {depth + pads_d[0] + pads_d[1]}")
    out = (-(-span // sd) if ceil_mode else span // sd) + 1
    if ceil_mode and (out - 1) * sd >= depth + pads_d[0]:
        out -= 1  # the last window must start inside the input or its leading padding
    overflow = max(0, (out - 1) * sd + extent - (depth + pads_d[0] + pads_d[1]))
    after = pads_d[1] + overflow
    if pads_d[0] or after:
        x = ctx.emit1("Pad", [x], {"mode": "constant", "pads": (0, 0, pads_d[0], 0, 0, 0, 0, after, 0, 0),
                                   "value": pad_value})
    x = ctx.emit1("Transpose", [x], {"perm": (0, 2, 1, 3, 4)})
    taps = []
    for k in range(kd):
        start = k * dd
        planes = ctx.emit1("Slice", [x], {"starts": (0, start, 0, 0, 0),
                                          "ends": (n, start + (out - 1) * sd + 1, c, h, w),
                                          "steps": (1, sd, 1, 1, 1)})
        taps.append(ctx.reshape(planes, (n * out, c, h, w)))
    return taps, out, overflow


def _from_depth_batch(ctx: NodeContext, y: str, n: int, out: int, output: str | None = None) -> None:
    """[N * Dout, O, Ho, Wo] -> [N, O, Dout, Ho, Wo] in ``output`` (the node's output by default)."""
    _, o, ho, wo = ctx.shape(y)
    y = ctx.reshape(y, (n, out, o, ho, wo))
    ctx.emit("Transpose", [y], {"perm": (0, 2, 1, 3, 4)}, [output or ctx.output(0)])


def _conv_3d(ctx: NodeContext, x: str, w: str, b: str) -> None:
    weight = ctx.require_const(1, "weights")
    kernel = list(ctx.attr("kernel_shape", weight.shape[2:]))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    taps, out, _ = _depth_taps(ctx, x, kernel[0], dilations[0], strides[0], (pads[0], pads[3]), False, 0.0)
    attrs = {"strides": tuple(strides[1:]), "dilations": tuple(dilations[1:]),
             "pads": (pads[1], pads[2], pads[4], pads[5]), "groups": int(ctx.attr("group", 1)), "layout": "NCHW"}
    y = None
    for k, planes in enumerate(taps):
        w2 = ctx.constant(np.ascontiguousarray(weight[:, :, k]), base=f"weight_d{k}")
        part = ctx.emit1("Conv2D", [planes, w2, b if k == 0 else ""], attrs)
        y = part if y is None else ctx.emit1("Add", [y, part])
    _from_depth_batch(ctx, y, ctx.shape(0)[0], out)


def _pool_3d(ctx: NodeContext, op: str, extra: dict, x: str, output: str) -> None:
    kernel = list(ctx.attr("kernel_shape"))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    is_max = op == "MaxPool2D"
    taps, out, overflow = _depth_taps(ctx, x, kernel[0], dilations[0], strides[0], (pads[0], pads[3]), ceil_mode,
                                      -math.inf if is_max else 0.0)
    attrs = {"kernel": tuple(kernel[1:]), "strides": tuple(strides[1:]), "dilations": tuple(dilations[1:]),
             "pads": (pads[1], pads[2], pads[4], pads[5]), "ceil_mode": ceil_mode, "layout": "NCHW", **extra}
    y = None
    for planes in taps:
        part = ctx.emit1(op, [planes], attrs)
        y = part if y is None else ctx.emit1("Max" if is_max else "Add", [y, part])
    if not is_max:
        # Taps counted at each output depth: inside the padded depth with count_include_pad,
        # else inside the input; never the ceil_mode overflow.
        depth = ctx.shape(0)[2]
        lo, hi = (0, depth + pads[0] + pads[3]) if extra["count_include_pad"] else (pads[0], pads[0] + depth)
        counts = np.array([sum(lo <= d * strides[0] + k * dilations[0] < hi for k in range(kernel[0]))
                           for d in range(out)], np.float32)
        n = ctx.shape(0)[0]
        y = ctx.reshape(y, (n, out) + ctx.shape(y)[1:])
        scale = ctx.constant((1.0 / np.maximum(counts, 1.0)).astype(np.float32).reshape(out, 1, 1, 1), base="depth_count")
        y = ctx.emit1("Mul", [y, scale])
        y = ctx.reshape(y, (n * out,) + ctx.shape(y)[2:])
    _from_depth_batch(ctx, y, ctx.shape(0)[0], out, output)


@converts("Conv", check=_check_spatial_3d)
def _conv(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    rank = ctx.rank(0)
    if rank == 5:
        _conv_3d(ctx, x, w, b)
        return
    if rank not in (3, 4):
        raise ctx.unsupported(f"{rank - 2} spatial dims")
    kernel = list(ctx.attr("kernel_shape", ctx.shape(1)[2:]))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    one_d = rank == 3
    if one_d:
        x, w = _with_height_one(ctx, x), _with_height_one(ctx, w)
    attrs = {"strides": _to_2d(strides, 1), "dilations": _to_2d(dilations, 1),
             "pads": _pads_2d(pads), "groups": int(ctx.attr("group", 1)), "layout": "NCHW"}
    _finish_1d(ctx, "Conv2D", [x, w, b], attrs, one_d)


def _check_causal_conv(info: NodeInfo) -> list[str]:
    activation = info.attr("activation", "none")
    return [] if activation in ("none", "silu", "swish") else [f"activation={activation!r}"]


@converts("CausalConvWithState", check=_check_causal_conv, newest_opset=27)
def _causal_conv_with_state(ctx: NodeContext):
    """Depthwise causal 1-D convolution over [past_state, input] (zeros when no past state is given):
    a Concat (or a left Pad) and a grouped Conv; present_state is the last kernel - 1 steps of the
    joined sequence."""
    x, w, bias, past = (ctx.input(i) for i in range(4))
    if ctx.rank(0) != 3 or ctx.rank(1) != 3 or tuple(ctx.shape(1)[:2]) != (ctx.shape(0)[1], 1):
        raise ctx.error(f"input {list(ctx.shape(0))} and weight {list(ctx.shape(1))} are not [N, C, L] and [C, 1, K]")
    batch, channels, length = ctx.shape(0)
    if bias and tuple(ctx.shape(2)) != (channels,):
        raise ctx.error(f"bias has shape {list(ctx.shape(2))}, expected [{channels}]")
    kernel = ctx.shape(1)[2]
    carried = kernel - 1
    if past:
        if tuple(ctx.shape(3)) != (batch, channels, carried):
            raise ctx.error(f"past_state has shape {list(ctx.shape(3))}, expected {[batch, channels, carried]}")
        joined = ctx.emit1("Concat", [past, x], {"axis": 2}) if carried else x
    elif carried:
        joined = ctx.emit1("Pad", [x], {"mode": "constant", "pads": (0, 0, carried, 0, 0, 0), "value": 0.0})
    else:
        joined = x
    attrs = {"strides": (1, 1), "dilations": (1, 1), "pads": (0, 0, 0, 0), "groups": channels, "layout": "NCHW"}
    activation = ctx.attr("activation", "none")
    conv_output = None if activation in ("silu", "swish") else ctx.output(0)
    y = ctx.builder.fresh_name(f"{ctx.name}/conv") if conv_output is None else conv_output
    _finish_1d(ctx, "Conv2D", [_with_height_one(ctx, joined), _with_height_one(ctx, w), bias], attrs, True, output=y)
    if conv_output is None:
        _swish_of(ctx, y, 1.0, ctx.output(0))
    if ctx.output(1):
        # A Gather along time: no bound on the batch axis, so a dynamic batch stays dynamic.
        last = ctx.constant(np.arange(length, length + carried, dtype=np.int64), base="last_steps")
        ctx.emit("Gather", [joined, last], {"axis": 2}, [ctx.output(1)])


def _conv_transpose_3d(ctx: NodeContext, x: str, b: str, kernel, strides, dilations, pads, output_padding) -> None:
    """Each depth tap kd is a 2-D transposed convolution of every input plane at once (depth merged
    into the batch); its planes land at output depths d * sd + kd * dd, placed by interleaving
    sd - 1 zero planes (Pad, Reshape) and shifting (Pad), and the taps add up. The bias is added
    once to the whole result, then the depth pads crop it."""
    weight = ctx.require_const(1, "weights")
    n, _, depth, _, _ = ctx.shape(x)
    sd, dd = strides[0], dilations[0]
    full = (depth - 1) * sd + (kernel[0] - 1) * dd + 1 + output_padding[0]
    xt = ctx.emit1("Transpose", [x], {"perm": (0, 2, 1, 3, 4)})
    planes = ctx.reshape(xt, (n * depth,) + ctx.shape(xt)[2:])
    attrs = {"strides": tuple(strides[1:]), "dilations": tuple(dilations[1:]),
             "pads": (pads[1], pads[2], pads[4], pads[5]), "output_padding": tuple(output_padding[1:]),
             "groups": int(ctx.attr("group", 1)), "layout": "NCHW"}
    y = None
    for k in range(kernel[0]):
        w2 = ctx.constant(np.ascontiguousarray(weight[:, :, k]), base=f"weight_d{k}")
        part = ctx.emit1("ConvTranspose2D", [planes, w2, ""], attrs)
        _, co, ho, wo = ctx.shape(part)
        rows = ctx.reshape(part, (n, depth, 1, co * ho * wo))
        if sd > 1:
            rows = ctx.emit1("Pad", [rows], {"mode": "constant", "pads": (0, 0, 0, 0, 0, 0, sd - 1, 0), "value": 0.0})
        rows = ctx.reshape(rows, (n, depth * sd, co * ho * wo))
        shift = k * dd
        rows = ctx.emit1("Pad", [rows], {"mode": "constant", "pads": (0, shift, 0, 0, full - shift - depth * sd, 0),
                                         "value": 0.0})
        y = rows if y is None else ctx.emit1("Add", [y, rows])
    y = ctx.reshape(y, (n, full, co, ho, wo))
    if b:
        bias = ctx.const(b)
        bias = (ctx.constant(bias.reshape(co, 1, 1), base="bias") if bias is not None
                else ctx.reshape(b, (co, 1, 1)))
        y = ctx.emit1("Add", [y, bias])
    if pads[0] or pads[3]:
        y = ctx.emit1("Slice", [y], {"starts": (0, pads[0], 0, 0, 0), "ends": (n, full - pads[3], co, ho, wo),
                                     "steps": (1, 1, 1, 1, 1)})
    ctx.emit("Transpose", [y], {"perm": (0, 2, 1, 3, 4)}, [ctx.output(0)])


@converts("ConvTranspose", check=_check_spatial_3d)
def _conv_transpose(ctx: NodeContext):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    rank = ctx.rank(0)
    if rank not in (3, 4, 5):
        raise ctx.unsupported(f"{rank - 2} spatial dims")
    sizes = ctx.shape(0)[2:]
    n = len(sizes)
    kernel = list(ctx.attr("kernel_shape", ctx.shape(1)[2:]))
    strides, dilations = _spatial_attrs(ctx, kernel)
    output_padding = list(ctx.attr("output_padding", [0] * n))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    output_shape = ctx.attr("output_shape")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        targets = (list(output_shape)[-n:] if output_shape is not None
                   else [size * s for size, s in zip(sizes, strides)])
        begins, ends = [], []
        for i in range(n):
            natural = (strides[i] * (sizes[i] - 1) + output_padding[i]
                       + (kernel[i] - 1) * dilations[i] + 1)
            total = natural - targets[i]
            if total < 0:
                # A target larger than the natural size is reached with extra output padding.
                output_padding[i] -= total
                total = 0
            small, large = total // 2, total - total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else large)
            ends.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = list(ctx.attr("pads", [0] * (2 * n)))
    if rank == 5:
        _conv_transpose_3d(ctx, x, b, kernel, strides, dilations, pads, output_padding)
        return
    one_d = rank == 3
    if one_d:
        x, w = _with_height_one(ctx, x), _with_height_one(ctx, w)
    attrs = {"strides": _to_2d(strides, 1), "dilations": _to_2d(dilations, 1),
             "pads": _pads_2d(pads), "output_padding": _to_2d(output_padding, 0),
             "groups": int(ctx.attr("group", 1)), "layout": "NCHW"}
    _finish_1d(ctx, "ConvTranspose2D", [x, w, b], attrs, one_d)


def _check_max_pool(info: NodeInfo) -> list[str]:
    reasons = _check_spatial_3d(info)
    if info.is_used(info.output(1)):
        reasons.append("Indices output")
    if info.attr("storage_order", 0) != 0:
        reasons.append("storage_order=1")
    return reasons


def _pool(ctx: NodeContext, op: str, extra: dict, x: str | None = None, output: str | None = None):
    """Pools ``x`` (input 0 by default; it has input 0's shape) into ``output`` (the node's by default)."""
    x, output = x or ctx.input(0), output or ctx.output(0)
    rank = ctx.rank(0)
    if rank == 5:
        _pool_3d(ctx, op, extra, x, output)
        return
    if rank not in (3, 4):
        raise ctx.unsupported(f"{rank - 2} spatial dims")
    kernel = list(ctx.attr("kernel_shape"))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    one_d = rank == 3
    if one_d:
        x = _with_height_one(ctx, x)
    attrs = {"kernel": _to_2d(kernel, 1), "strides": _to_2d(strides, 1),
             "dilations": _to_2d(dilations, 1), "pads": _pads_2d(pads),
             "ceil_mode": bool(ctx.attr("ceil_mode", 0)), "layout": "NCHW", **extra}
    _finish_1d(ctx, op, [x], attrs, one_d, output)


@converts("MaxPool", check=_check_max_pool)
def _max_pool(ctx: NodeContext):
    _pool(ctx, "MaxPool2D", {})


@converts("AveragePool", check=_check_spatial_3d)
def _average_pool(ctx: NodeContext):
    _pool(ctx, "AvgPool2D", {"count_include_pad": bool(ctx.attr("count_include_pad", 0))})


def _check_lp_pool(info: NodeInfo) -> list[str]:
    reasons = _check_spatial_3d(info)
    if info.attr("ceil_mode", 0):
        reasons.append("ceil_mode=1")
    return reasons


def _lp_power(ctx: NodeContext, x: str, p: float) -> str:
    """|x|^p, with the exact forms for p = 1 and 2."""
    if p == 2:
        return ctx.emit1("Square", [x])
    magnitude = ctx.emit1("Abs", [x])
    return magnitude if p == 1 else ctx.emit1("Pow", [magnitude, _scalar(ctx, p, "p")])


def _lp_root(ctx: NodeContext, total: str, p: float, output: str) -> None:
    if p == 2:
        ctx.emit("Sqrt", [total], {}, [output])
    elif p == 1:
        ctx.copy_to(total, output)
    else:
        ctx.emit("Pow", [total, _scalar(ctx, 1.0 / p, "inverse_p")], {}, [output])


@converts("LpPool", check=_check_lp_pool)
def _lp_pool(ctx: NodeContext):
    # (sum over the window of |x|^p)^(1/p): the sum is an average pool counting the zero padding,
    # times the taps in a window.
    p = float(ctx.attr("p", 2))
    taps = float(np.prod(ctx.attr("kernel_shape")))
    average = ctx.builder.fresh_name(f"{ctx.name}/average")
    _pool(ctx, "AvgPool2D", {"count_include_pad": True}, x=_lp_power(ctx, ctx.input(0), p), output=average)
    _lp_root(ctx, ctx.emit1("Mul", [average, _scalar(ctx, taps, "taps")]), p, ctx.output(0))


@converts("LpNormalization")
def _lp_normalization(ctx: NodeContext):
    p = int(ctx.attr("p", 2))
    if p not in (1, 2):
        raise ctx.unsupported(f"p={p}")
    axis = _axis(ctx.attr("axis", -1), ctx.rank(0), ctx)
    norm = ctx.emit1("ReduceL1" if p == 1 else "ReduceL2", [ctx.input(0)], {"axes": (axis,), "keepdims": True})
    # A zero norm means a zero vector, which stays zero (divided by 1 instead of 0).
    one = _scalar(ctx, 1.0, "one")
    safe = ctx.emit1("Where", [ctx.emit1("Equal", [norm, _scalar(ctx, 0.0, "zero")]), one, norm])
    ctx.emit("Div", [ctx.input(0), safe], {}, [ctx.output(0)])


@converts("Hardmax")
def _hardmax(ctx: NodeContext):
    # 1 at the first largest element along the axis, 0 elsewhere: ArgMax compared with the positions.
    axis = _axis(ctx.attr("axis", -1), ctx.rank(0), ctx)
    size, rank = ctx.shape(0)[axis], ctx.rank(0)
    index = ctx.emit1("ArgMax", [ctx.input(0)], {"axis": axis, "keepdims": True})
    positions = ctx.constant(np.arange(size, dtype=np.int64).reshape((size,) + (1,) * (rank - axis - 1)),
                             base="positions")
    ctx.emit("Cast", [ctx.emit1("Equal", [index, positions])], {"to": ctx.type(0).dtype}, [ctx.output(0)])


@converts("MeanVarianceNormalization")
def _mean_variance_normalization(ctx: NodeContext):
    # (x - mean) / (sqrt(variance) + 1e-9) over the axes, as ONNX's function body defines it.
    x = ctx.input(0)
    reduce = {"axes": tuple(sorted(_axes(ctx.attr("axes", [0, 2, 3]), ctx.rank(0), ctx))), "keepdims": True}
    centred = ctx.emit1("Sub", [x, ctx.emit1("ReduceMean", [x], reduce)])
    deviation = ctx.emit1("Sqrt", [ctx.emit1("ReduceMean", [ctx.emit1("Square", [centred])], reduce)])
    ctx.emit("Div", [centred, ctx.emit1("Add", [deviation, _scalar(ctx, 1e-9, "epsilon")])], {}, [ctx.output(0)])


@converts("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    op = "ReduceMean" if ctx.op_type == "GlobalAveragePool" else "ReduceMax"
    axes = tuple(range(2, ctx.rank(0)))
    ctx.emit(op, [ctx.input(0)], {"axes": axes, "keepdims": True}, [ctx.output(0)])


# ---------------------------------------------------------------- matrix products

@converts("Gemm")
def _gemm(ctx: NodeContext):
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))
    b_value = ctx.const(b)
    float_math = ctx.type(a).dtype == "float32"
    c_value = ctx.const(c) if c else None
    if b_value is not None and float_math:
        if trans_a:
            a = ctx.emit1("Transpose", [a], {"perm": (1, 0)})
        weight = (b_value if trans_b else b_value.T) * np.float32(alpha)
        n = weight.shape[0]
        bias = ""
        if _bias_of_width(c_value, n):
            bias = ctx.constant(np.broadcast_to(c_value.reshape(-1) * np.float32(beta), (n,))
                                .astype(np.float32), base="bias")
            c = ""
        w = ctx.constant(weight.astype(np.float32), base="weight")
        y = ctx.emit1("FullyConnected", [a, w, bias], {}, None if c else ctx.output(0))
    else:
        y = ctx.emit1("BatchMatMul", [a, b], {"transpose_a": trans_a, "transpose_b": trans_b},
                      None if (c or alpha != 1.0) else ctx.output(0))
        if alpha != 1.0:
            scale = ctx.constant(np.array(alpha, dtype=ctx.type(a).dtype), base="alpha")
            y = ctx.emit1("Mul", [y, scale], {}, None if c else ctx.output(0))
    if c:
        if beta != 1.0:
            scale = ctx.constant(np.array(beta, dtype=ctx.type(c).dtype), base="beta")
            c = ctx.emit1("Mul", [c, scale])
        ctx.emit("Add", [y, c], {}, [ctx.output(0)])


def _matmul_shape(a_shape, b_shape) -> tuple[int, ...]:
    a = a_shape if len(a_shape) >= 2 else (1,) + tuple(a_shape)
    b = b_shape if len(b_shape) >= 2 else tuple(b_shape) + (1,)
    if a[-1] != b[-2]:
        raise ValueError("inner dims differ")
    shape = tuple(np.broadcast_shapes(a[:-2], b[:-2])) + (a[-2], b[-1])
    if len(b_shape) == 1:
        shape = shape[:-1]
    if len(a_shape) == 1:
        shape = shape[:-2] + shape[-1:] if len(b_shape) > 1 else shape[:-1]
    return tuple(int(d) for d in shape)


def _bias_of_width(c: np.ndarray | None, n: int) -> bool:
    """Whether Gemm's C broadcasts along the rows only, so it is a per-column bias."""
    if c is None or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        return False
    return c.ndim == 0 or c.shape[-1] in (1, n)


@converts("MatMul")
def _matmul(ctx: NodeContext):
    a, b = ctx.input(0), ctx.input(1)
    a_shape, b_shape = ctx.shape(0), ctx.shape(1)
    # numpy's 1-D rules: a vector a is a row [1, K], a vector b a column [K, 1]; the added
    # axis is dropped from the result.
    if len(a_shape) == 1:
        a = ctx.reshape(a, (1,) + a_shape)
    b_value = ctx.const(b)
    if b_value is not None and b_value.ndim <= 2 and ctx.type(0).dtype == "float32":
        weight = b_value.reshape(1, -1) if b_value.ndim == 1 else b_value.T
        y = ctx.emit1("FullyConnected", [a, ctx.constant(weight.copy(order="C"), base="weight"), ""])
    else:
        if len(b_shape) == 1:
            b = ctx.reshape(b, b_shape + (1,))
        y = ctx.emit1("BatchMatMul", [a, b], {"transpose_a": False, "transpose_b": False})
    try:
        out_shape = _matmul_shape(a_shape, b_shape)
    except ValueError:
        raise ctx.error(f"shapes {list(a_shape)} and {list(b_shape)} do not multiply") from None
    if tuple(ctx.shape(y)) == tuple(out_shape):
        ctx.copy_to(y, ctx.output(0))
    else:
        ctx.reshape(y, out_shape, output=ctx.output(0))


# ---------------------------------------------------------------- reductions

REDUCE = {name: name for name in (
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum")}


@converts(*REDUCE)
def _reduce(ctx: NodeContext):
    rank = ctx.rank(0)
    axes = ctx.attr("axes")
    if axes is None and ctx.input(1):
        axes = _ints(ctx.require_const(1, "axes"))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0) or rank == 0:
            ctx.copy_to(ctx.input(0), ctx.output(0))
            return
        axes = range(rank)
    attrs = {"axes": tuple(sorted(set(_axes(axes, rank, ctx)))),
             "keepdims": bool(ctx.attr("keepdims", 1))}
    if ctx.op_type == "ReduceLogSum":
        ctx.emit("Log", [ctx.emit1("ReduceSum", [ctx.input(0)], attrs)], {}, [ctx.output(0)])
        return
    ctx.emit(REDUCE[ctx.op_type], [ctx.input(0)], attrs, [ctx.output(0)])


# ---------------------------------------------------------------- shape and data movement

# dim_sources entry of an output axis sized from the element count (ONNX Reshape's -1).
INFERRED_AXIS = -2


def _reshape_with_sources(ctx: NodeContext, shape, sources) -> None:
    """Reshape recording which input axis each output axis copies (-1: none, INFERRED_AXIS: the
    axis ONNX sized from the element count), for the writer's dynamic-dim tracking
    (converter/writer.py dynamic_axes): a resized batch then stays on its own axis even where
    size-1 axes surround it. ``source_shape`` lets it tell a stale record (after
    a pass changed the node's input) from a valid one."""
    attrs = {"shape": tuple(int(d) for d in shape), "dim_sources": tuple(int(s) for s in sources),
             "source_shape": tuple(int(d) for d in ctx.shape(0))}
    ctx.emit("Reshape", [ctx.input(0)], attrs, [ctx.output(0)])


@converts("Reshape")
def _reshape(ctx: NodeContext):
    requested = _ints(ctx.require_const(1, "shape"))
    in_shape = ctx.shape(0)
    allow_zero = bool(ctx.attr("allowzero", 0))
    copied = [i for i, d in enumerate(requested) if d == 0 and not allow_zero and i >= len(in_shape)]
    if copied:
        raise ctx.error(f"shape {list(requested)} copies dim {copied[0]} (a 0 there), but the input "
                        f"{list(in_shape)} has only {len(in_shape)} dims")
    shape = [in_shape[i] if (d == 0 and not allow_zero) else d for i, d in enumerate(requested)]
    if shape.count(-1) > 1:
        raise ctx.error(f"shape {list(requested)} has more than one -1")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        total = int(np.prod(in_shape, dtype=np.int64))
        if known == 0 or total % known:
            raise ctx.error(f"cannot reshape {list(in_shape)} to {list(requested)}")
        shape[shape.index(-1)] = total // known
    if int(np.prod(shape, dtype=np.int64)) != int(np.prod(in_shape, dtype=np.int64)):
        raise ctx.error(f"cannot reshape {list(in_shape)} to {list(requested)}")
    # ONNX's -1 axis is the one that takes up a change in the input's size.
    copied = [i if (d == 0 and not allow_zero) else INFERRED_AXIS if d == -1 else -1
              for i, d in enumerate(requested)]
    _reshape_with_sources(ctx, shape, copied)


@converts("Flatten")
def _flatten(ctx: NodeContext):
    shape = ctx.shape(0)
    rank = len(shape)
    axis = ctx.attr("axis", 1)
    if not -rank <= axis <= rank:
        raise ctx.error(f"axis {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    # Flatten at axis 1 keeps axis 0 (the batch) as the output's axis 0.
    _reshape_with_sources(ctx, (outer, int(np.prod(shape[axis:], dtype=np.int64))),
                          (0 if axis == 1 else -1, -1))


@converts("Squeeze")
def _squeeze(ctx: NodeContext):
    shape = ctx.shape(0)
    axes = ctx.attr("axes")
    if axes is None and ctx.input(1):
        axes = _ints(ctx.require_const(1, "axes"))
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = set(_axes(axes, len(shape), ctx))
    for a in axes:
        if shape[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {shape[a]}")
    kept = [i for i in range(len(shape)) if i not in axes]
    _reshape_with_sources(ctx, [shape[i] for i in kept], kept)


@converts("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    shape = list(ctx.shape(0))
    axes = ctx.attr("axes")
    if axes is None:
        axes = _ints(ctx.require_const(1, "axes"))
    out_rank = len(shape) + len(axes)
    sources = list(range(len(shape)))
    for a in sorted(_axes(axes, out_rank, ctx)):
        shape.insert(a, 1)
        sources.insert(a, -1)
    _reshape_with_sources(ctx, shape, sources)


@converts("Transpose")
def _transpose(ctx: NodeContext):
    rank = ctx.rank(0)
    perm = ctx.attr("perm")
    perm = tuple(range(rank - 1, -1, -1)) if perm is None else tuple(_axes(perm, rank, ctx))
    ctx.emit("Transpose", [ctx.input(0)], {"perm": perm}, [ctx.output(0)])


@converts("Concat")
def _concat(ctx: NodeContext):
    axis = _axis(ctx.attr("axis"), ctx.rank(0), ctx)
    ctx.emit("Concat", [i for i in ctx.inputs if i], {"axis": axis}, [ctx.output(0)])


@converts("Split")
def _split(ctx: NodeContext):
    shape = ctx.shape(0)
    axis = _axis(ctx.attr("axis", 0), len(shape), ctx)
    size = shape[axis]
    count = len(ctx.outputs)
    split = ctx.attr("split")
    if split is None and ctx.input(1):
        split = _ints(ctx.require_const(1, "split"))
    if split is None:
        num_outputs = ctx.attr("num_outputs")
        if num_outputs is not None:
            chunk = -(-size // num_outputs)
            split = [chunk] * (num_outputs - 1) + [size - chunk * (num_outputs - 1)]
        elif size % count:
            raise ctx.error(f"axis {axis} of size {size} does not split into {count} equal parts")
        else:
            split = [size // count] * count
    split = [int(s) for s in split]
    if sum(split) != size or len(split) != count:
        raise ctx.error(f"split {split} does not cover axis {axis} of size {size} in {count} parts")
    ctx.emit("Split", [ctx.input(0)], {"axis": axis, "sizes": tuple(split)}, ctx.outputs)


def _clamp_int64(value) -> int:
    return int(min(max(int(value), INT64_MIN), INT64_MAX))


@converts("Slice")
def _slice(ctx: NodeContext):
    rank = ctx.rank(0)
    starts = _ints(ctx.require_const(1, "starts"))
    ends = _ints(ctx.require_const(2, "ends"))
    axes = _ints(ctx.require_const(3, "axes")) if ctx.input(3) else tuple(range(len(starts)))
    steps = _ints(ctx.require_const(4, "steps")) if ctx.input(4) else (1,) * len(starts)
    full_starts, full_ends, full_steps = [0] * rank, [INT64_MAX] * rank, [1] * rank
    for a, start, end, step in zip(_axes(axes, rank, ctx), starts, ends, steps):
        if step == 0:
            raise ctx.error(f"step 0 on axis {a}")
        full_starts[a], full_ends[a], full_steps[a] = (
            _clamp_int64(start), _clamp_int64(end), _clamp_int64(step))
    attrs = {"starts": tuple(full_starts), "ends": tuple(full_ends), "steps": tuple(full_steps)}
    ctx.emit("Slice", [ctx.input(0)], attrs, [ctx.output(0)])


@converts("Gather", "GatherElements")
def _gather(ctx: NodeContext):
    axis = _axis(ctx.attr("axis", 0), ctx.rank(0), ctx)
    ctx.emit(ctx.op_type, [ctx.input(0), ctx.input(1)], {"axis": axis}, [ctx.output(0)])


@converts("Compress")
def _compress(ctx: NodeContext):
    # The kept positions are known from the constant condition: a Gather of them (over the
    # flattened input when there is no axis).
    condition = ctx.require_const(1, "condition").reshape(-1).astype(bool)
    x, axis = ctx.input(0), ctx.attr("axis")
    if axis is None:
        x, axis = ctx.reshape(x, (int(np.prod(ctx.shape(0))),)), 0
    else:
        axis = _axis(axis, ctx.rank(0), ctx)
    size = ctx.shape(x)[axis]
    if len(condition) > size:
        raise ctx.error(f"condition has {len(condition)} entries, more than the {size} of axis {axis}")
    kept = ctx.constant(np.flatnonzero(condition).astype(np.int64), base="kept")
    ctx.emit("Gather", [x, kept], {"axis": axis}, [ctx.output(0)])


@converts("ReverseSequence")
def _reverse_sequence(ctx: NodeContext):
    # Each batch entry's first lens[b] steps reversed, the rest kept: a GatherElements along the
    # time axis with indices known from the constant lengths.
    lengths = ctx.require_const(1, "sequence_lens").reshape(-1).astype(np.int64)
    shape, rank = ctx.shape(0), ctx.rank(0)
    time_axis = _axis(ctx.attr("time_axis", 0), rank, ctx)
    batch_axis = _axis(ctx.attr("batch_axis", 1), rank, ctx)
    steps, batch = shape[time_axis], shape[batch_axis]
    if len(lengths) != batch or np.any(lengths < 0) or np.any(lengths > steps):
        raise ctx.error(f"sequence_lens {lengths.tolist()} must give one length in [0, {steps}] per batch entry "
                        f"({batch})")
    t = np.arange(steps).reshape(-1, 1)
    table = np.where(t < lengths.reshape(1, -1), lengths.reshape(1, -1) - 1 - t, t)  # [steps, batch]
    order = [time_axis, batch_axis] + [a for a in range(rank) if a not in (time_axis, batch_axis)]
    table = table.reshape(table.shape + (1,) * (rank - 2))
    indices = np.broadcast_to(np.transpose(table, np.argsort(order)), shape)
    ctx.emit("GatherElements", [ctx.input(0), ctx.constant(np.ascontiguousarray(indices), base="indices")],
             {"axis": time_axis}, [ctx.output(0)])


@converts("CenterCropPad")
def _center_crop_pad(ctx: NodeContext):
    # Per axis, a centred Slice where the target is smaller and a centred zero Pad where it is
    # larger (the extra element of an odd difference goes to the end).
    shape, rank = ctx.shape(0), ctx.rank(0)
    target = _ints(ctx.require_const(1, "shape"))
    axes = _axes(ctx.attr("axes", list(range(rank))), rank, ctx)
    if len(target) != len(axes):
        raise ctx.error(f"shape {list(target)} has {len(target)} entries for {len(axes)} axes")
    starts, ends, before, after = [0] * rank, list(shape), [0] * rank, [0] * rank
    for axis, size in zip(axes, target):
        if size < shape[axis]:
            starts[axis] = (shape[axis] - size) // 2
            ends[axis] = starts[axis] + size
        elif size > shape[axis]:
            before[axis] = (size - shape[axis]) // 2
            after[axis] = size - shape[axis] - before[axis]
    x = ctx.input(0)
    if any(before) or any(after):
        x = ctx.emit1("Slice", [x], {"starts": tuple(starts), "ends": tuple(ends), "steps": (1,) * rank})
        ctx.emit("Pad", [x], {"mode": "constant", "pads": tuple(before + after), "value": 0.0}, [ctx.output(0)])
    else:
        ctx.emit("Slice", [x], {"starts": tuple(starts), "ends": tuple(ends), "steps": (1,) * rank}, [ctx.output(0)])


# Window functions: sums of cosines, sum_k a_k cos(2 pi k n / M) with M = size (periodic) or size - 1.
WINDOWS = {"HannWindow": (0.5, -0.5), "HammingWindow": (25 / 46, -21 / 46), "BlackmanWindow": (0.42, -0.5, 0.08)}


def _check_window(info: NodeInfo) -> list[str]:
    dtype = info.attr("output_datatype", onnx.TensorProto.FLOAT)
    return [] if dtype in ONNX_DTYPES or dtype in BOUNDARY_DTYPES else [f"output_datatype={onnx_dtype_name(dtype)}"]


@converts(*WINDOWS, check=_check_window)
def _window(ctx: NodeContext):
    # The window is a constant of the (constant) size, computed here in float64 and rounded once.
    size = int(ctx.require_const(0, "size").reshape(-1)[0])
    if size < 0:
        raise ctx.error(f"size {size} is negative")
    span = size if ctx.attr("periodic", 1) else size - 1
    n = np.arange(size, dtype=np.float64)
    window = sum(a * np.cos(2 * np.pi * k * n / span) for k, a in enumerate(WINDOWS[ctx.op_type])) if span > 0 \
        else np.ones(size)
    dtype = ctx.attr("output_datatype", onnx.TensorProto.FLOAT)
    inside = ONNX_DTYPES.get(dtype) or BOUNDARY_DTYPES[dtype][1]
    ctx.set_output_constant(0, window.astype(inside))


def _check_pad(info: NodeInfo) -> list[str]:
    mode = info.attr("mode", "constant")
    return [] if mode in ("constant", "reflect", "edge") else [f"mode={mode}"]


@converts("Pad", check=_check_pad)
def _pad(ctx: NodeContext):
    rank = ctx.rank(0)
    pads = _ints(ctx.attr("pads") if ctx.attr("pads") is not None else ctx.require_const(1, "pads"))
    value = 0.0
    if ctx.input(2):
        value_array = ctx.require_const(2, "constant_value")
        value = float(value_array.reshape(-1)[0]) if value_array.size else 0.0
    elif ctx.attr("value") is not None:
        value = float(ctx.attr("value"))
    axes = _axes(_ints(ctx.require_const(3, "axes")), rank, ctx) if ctx.input(3) else list(range(rank))
    if len(pads) != 2 * len(axes):
        raise ctx.error(f"pads has {len(pads)} entries for {len(axes)} axes")
    full = [0] * (2 * rank)
    for k, a in enumerate(axes):
        full[a], full[rank + a] = pads[k], pads[len(axes) + k]
    attrs = {"mode": ctx.attr("mode", "constant"), "pads": tuple(full), "value": value}
    ctx.emit("Pad", [ctx.input(0)], attrs, [ctx.output(0)])


def _check_resize(info: NodeInfo) -> list[str]:
    reasons = []
    mode = info.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        reasons.append(f"mode={mode}")
    coordinate = info.attr("coordinate_transformation_mode", "half_pixel")
    if coordinate not in ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"):
        reasons.append(f"coordinate_transformation_mode={coordinate}")
    policy = info.attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        reasons.append(f"keep_aspect_ratio_policy={policy}")
    if info.attr("antialias", 0):
        reasons.append("antialias=1")
    return reasons


def _emit_resize(ctx: NodeContext, scales: list[float], out_shape: list[int], mode: str,
                 coordinate_mode: str, nearest_mode: str):
    # The IR's Resize derives its output size from the scales; a size ONNX got from `sizes`
    # must come out of them the same way.
    attrs = {"mode": mode, "coordinate_mode": coordinate_mode, "nearest_mode": nearest_mode,
             "scales": tuple(float(s) for s in scales)}
    if mode == "cubic":
        attrs["cubic_coeff_a"] = float(ctx.attr("cubic_coeff_a", -0.75))
        attrs["exclude_outside"] = bool(ctx.attr("exclude_outside", 0))
    output = ctx.emit1("Resize", [ctx.input(0)], attrs, ctx.output(0))
    if tuple(ctx.shape(output)) != tuple(out_shape):
        raise ctx.error(f"scales {attrs['scales']} give output shape {list(ctx.shape(output))}, "
                        f"ONNX says {list(out_shape)}")


@converts("Resize", check=_check_resize)
def _resize(ctx: NodeContext):
    shape = ctx.shape(0)
    rank = len(shape)
    axes = _axes(ctx.attr("axes", range(rank)), rank, ctx)
    sizes = ctx.const(3) if ctx.input(3) else None
    scales = ctx.const(2) if ctx.input(2) else None
    if (ctx.input(3) and sizes is None) or (ctx.input(2) and scales is None):
        raise ctx.error("scales and sizes must be constant at import; dynamic shapes are not supported")
    full_scales = [1.0] * rank
    out_shape = list(shape)
    if sizes is not None and sizes.size:
        for a, size in zip(axes, _ints(sizes)):
            out_shape[a] = size
            full_scales[a] = float(np.float32(size) / np.float32(shape[a]))
    elif scales is not None and scales.size:
        for a, scale in zip(axes, scales.reshape(-1).tolist()):
            full_scales[a] = float(np.float32(scale))
            out_shape[a] = int(math.floor(shape[a] * np.float32(scale)))
    else:
        raise ctx.error("neither scales nor sizes is given")
    _emit_resize(ctx, full_scales, out_shape, ctx.attr("mode", "nearest"),
                 ctx.attr("coordinate_transformation_mode", "half_pixel"),
                 ctx.attr("nearest_mode", "round_prefer_floor"))


@converts("Upsample", check=lambda info: [] if info.attr("mode", "nearest") in ("nearest", "linear")
          else [f"mode={info.attr('mode')}"])
def _upsample(ctx: NodeContext):
    shape = ctx.shape(0)
    scales = ctx.attr("scales")
    if scales is None:
        scales = ctx.require_const(1, "scales").reshape(-1).tolist()
    scales = [float(np.float32(s)) for s in scales]
    out_shape = [int(math.floor(d * np.float32(s))) for d, s in zip(shape, scales)]
    _emit_resize(ctx, scales, out_shape, ctx.attr("mode", "nearest"), "asymmetric", "floor")


@converts("Expand")
def _expand(ctx: NodeContext):
    requested = _ints(ctx.require_const(1, "shape"))
    in_shape = ctx.shape(0)
    try:
        out_shape = tuple(int(d) for d in np.broadcast_shapes(in_shape, requested))
    except ValueError:
        raise ctx.error(f"shape {list(in_shape)} does not broadcast to {list(requested)}") from None
    if out_shape == tuple(in_shape):
        ctx.copy_to(ctx.input(0), ctx.output(0))
    else:
        ctx.emit("BroadcastTo", [ctx.input(0)], {"shape": out_shape}, [ctx.output(0)])


@converts("Tile")
def _tile(ctx: NodeContext):
    repeats = _ints(ctx.require_const(1, "repeats"))
    shape = ctx.shape(0)
    if len(repeats) != len(shape):
        raise ctx.error(f"repeats {list(repeats)} does not match rank {len(shape)}")
    # Tile = broadcast over a new axis before each dim, then merge each pair.
    interleaved = [v for d in shape for v in (1, d)]
    target = [v for r, d in zip(repeats, shape) for v in (r, d)]
    x = ctx.reshape(ctx.input(0), interleaved)
    if tuple(target) != tuple(interleaved):
        x = ctx.emit1("BroadcastTo", [x], {"shape": tuple(target)})
    ctx.reshape(x, [r * d for r, d in zip(repeats, shape)], output=ctx.output(0))


def _check_depth_space(info: NodeInfo) -> list[str]:
    rank = info.rank(0)
    return [] if rank in (None, 4) else [f"rank {rank}"]


@converts("DepthToSpace", "SpaceToDepth", check=_check_depth_space)
def _depth_space(ctx: NodeContext):
    n, c, h, w = ctx.shape(0)
    block = int(ctx.attr("blocksize"))
    if ctx.op_type == "SpaceToDepth":
        x = ctx.reshape(ctx.input(0), (n, c, h // block, block, w // block, block))
        x = ctx.emit1("Transpose", [x], {"perm": (0, 3, 5, 1, 2, 4)})
        ctx.reshape(x, (n, c * block * block, h // block, w // block), output=ctx.output(0))
        return
    if ctx.attr("mode", "DCR") == "DCR":
        x = ctx.reshape(ctx.input(0), (n, block, block, c // block ** 2, h, w))
        perm = (0, 3, 4, 1, 5, 2)
    else:
        x = ctx.reshape(ctx.input(0), (n, c // block ** 2, block, block, h, w))
        perm = (0, 1, 4, 2, 5, 3)
    x = ctx.emit1("Transpose", [x], {"perm": perm})
    ctx.reshape(x, (n, c // block ** 2, h * block, w * block), output=ctx.output(0))


# ---------------------------------------------------------------- values known at import

def _constant_attribute_value(ctx: NodeContext) -> np.ndarray:
    node_attr = {a.name: a for a in ctx.node.attribute}
    if "value" in node_attr:
        return tensor_to_array(node_attr["value"].t, f"node {ctx.name!r} value")
    if "sparse_value" in node_attr:
        return sparse_to_array(node_attr["sparse_value"].sparse_tensor, f"node {ctx.name!r} value")
    if "value_float" in ctx.attrs:
        return np.array(ctx.attrs["value_float"], dtype=np.float32)
    if "value_floats" in ctx.attrs:
        return np.array(ctx.attrs["value_floats"], dtype=np.float32)
    if "value_int" in ctx.attrs:
        return np.array(ctx.attrs["value_int"], dtype=np.int64)
    if "value_ints" in ctx.attrs:
        return np.array(ctx.attrs["value_ints"], dtype=np.int64)
    raise ctx.unsupported("string value")


def _check_constant(info: NodeInfo) -> list[str]:
    if "value_string" in info.attrs or "value_strings" in info.attrs:
        return ["string value"]
    return []


@converts("Constant", check=_check_constant)
def _constant(ctx: NodeContext):
    ctx.set_output_constant(0, _constant_attribute_value(ctx))


@converts("Shape")
def _shape(ctx: NodeContext):
    shape = ctx.shape(0)
    rank = len(shape)
    start = ctx.attr("start", 0)
    end = ctx.attr("end", rank)
    ctx.set_output_constant(0, np.array(shape[slice(start, end)], dtype=np.int64))


@converts("Size")
def _size(ctx: NodeContext):
    ctx.set_output_constant(0, np.array(int(np.prod(ctx.shape(0), dtype=np.int64)), dtype=np.int64))


def _check_eye_like(info: NodeInfo) -> list[str]:
    dtype = info.attr("dtype")
    return [] if dtype is None or dtype in ONNX_DTYPES or dtype in BOUNDARY_DTYPES else [f"dtype={onnx_dtype_name(dtype)}"]


@converts("EyeLike", check=_check_eye_like)
def _eye_like(ctx: NodeContext):
    rows, columns = ctx.shape(0)
    dtype = ctx.attr("dtype")
    dtype = ctx.type(0).dtype if dtype is None else (ONNX_DTYPES.get(dtype) or BOUNDARY_DTYPES[dtype][1])
    ctx.set_output_constant(0, np.eye(rows, columns, k=int(ctx.attr("k", 0)), dtype=dtype))


@converts("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext):
    shape = _ints(ctx.require_const(0, "shape"))
    value_attr = next((a for a in ctx.node.attribute if a.name == "value"), None)
    value = (tensor_to_array(value_attr.t, f"node {ctx.name!r} value") if value_attr is not None
             else np.zeros(1, dtype=np.float32))
    ctx.set_output_constant(0, np.full(shape, value.reshape(-1)[0], dtype=value.dtype))


@converts("Range")
def _range(ctx: NodeContext):
    start = ctx.require_const(0, "start")
    limit = ctx.require_const(1, "limit")
    delta = ctx.require_const(2, "delta")
    dtype = start.dtype
    count = max(int(math.ceil((limit.item() - start.item()) / delta.item())), 0)
    values = start.item() + np.arange(count, dtype=np.float64 if dtype.kind == "f" else np.int64) * delta.item()
    ctx.set_output_constant(0, values.astype(dtype))


# ---------------------------------------------------------------- recurrent

RNN_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"], "RNN": ["tanh"]}
# The plain RNN is unrolled onto IR ops, so it takes any activation the IR has without parameters.
SIMPLE_RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


def _check_rnn(info: NodeInfo) -> list[str]:
    reasons = []
    directions = 2 if info.attr("direction", "forward") == "bidirectional" else 1
    activations = info.attr("activations")
    expected = RNN_DEFAULT_ACTIVATIONS[info.op_type] * directions
    if info.op_type == "RNN":
        if activations is not None and (len(activations) != directions
                                        or any(a.lower() not in SIMPLE_RNN_ACTIVATIONS for a in activations)):
            reasons.append(f"activations={list(activations)}")
    elif activations is not None and [a.lower() for a in activations] != expected:
        reasons.append(f"activations={list(activations)}")
    if info.attr("input_forget", 0):
        reasons.append("input_forget=1")
    if info.input(4):
        lengths = info.static(4)
        if info.is_graph_input(4):
            reasons.append("sequence_lens given at run time")
        elif lengths is not None and len(set(lengths.reshape(-1).tolist())) > 1:
            reasons.append("unequal sequence_lens")
    return reasons


@converts("LSTM", "GRU", check=_check_rnn)
def _rnn(ctx: NodeContext):
    is_lstm = ctx.op_type == "LSTM"
    batch_first = ctx.attr("layout", 0) == 1
    x = ctx.input(0)
    x_shape = ctx.shape(0)
    seq_length = x_shape[1] if batch_first else x_shape[0]
    if ctx.input(4):
        lengths = ctx.const(4)
        if lengths is None or np.any(lengths.reshape(-1) != seq_length):
            raise ctx.unsupported("sequence_lens other than the full sequence length")
    direction = ctx.attr("direction", "forward")
    hidden_size = ctx.attr("hidden_size") or ctx.shape(2)[-1]
    attrs = {"hidden_size": int(hidden_size), "direction": direction,
             "clip": float(ctx.attr("clip", 0.0))}
    if not is_lstm:
        attrs["linear_before_reset"] = bool(ctx.attr("linear_before_reset", 0))
    state_inputs = [5, 6] if is_lstm else [5]
    inputs = [ctx.input(i) for i in range(8 if is_lstm else 6)]
    inputs[4] = ""
    outputs = [ctx.output(i) if ctx.is_used(ctx.output(i)) else "" for i in range(3 if is_lstm else 2)]
    if batch_first:
        inputs[0] = ctx.emit1("Transpose", [x], {"perm": (1, 0, 2)})
        for i in state_inputs:
            if inputs[i]:
                inputs[i] = ctx.emit1("Transpose", [inputs[i]], {"perm": (1, 0, 2)})
        internal = [ctx.builder.fresh_name(f"{ctx.name}/{ctx.op_type}_out{k}") if name else ""
                    for k, name in enumerate(outputs)]
        ctx.emit(ctx.op_type, inputs, attrs, internal)
        for k, (name, inner) in enumerate(zip(outputs, internal)):
            if name:
                perm = (2, 0, 1, 3) if k == 0 else (1, 0, 2)
                ctx.emit("Transpose", [inner], {"perm": perm}, [name])
    else:
        ctx.emit(ctx.op_type, inputs, attrs, outputs)


@converts("RNN", check=_check_rnn)
def _simple_rnn(ctx: NodeContext):
    """H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb), unrolled: the input projection of every step is one
    FullyConnected per direction, then each step adds its recurrent product and applies f (and the
    clip). The graph grows with the sequence length (three ops a step)."""
    batch_first = ctx.attr("layout", 0) == 1
    x = ctx.input(0)
    if ctx.rank(0) != 3:
        raise ctx.error(f"X has shape {list(ctx.shape(0))}; expected rank 3")
    if batch_first:
        x = ctx.emit1("Transpose", [x], {"perm": (1, 0, 2)})
    steps, batch, _ = ctx.shape(x)
    if ctx.input(4):
        lengths = ctx.const(4)
        if lengths is None or np.any(lengths.reshape(-1) != steps):
            raise ctx.unsupported("sequence_lens other than the full sequence length")
    w, r = ctx.require_const(1, "W").astype(np.float32), ctx.require_const(2, "R").astype(np.float32)
    direction = ctx.attr("direction", "forward")
    directions = 2 if direction == "bidirectional" else 1
    hidden = r.shape[1] if r.ndim == 3 else -1
    if r.shape != (directions, hidden, hidden) or w.shape != (directions, hidden, ctx.shape(x)[2]):
        raise ctx.error(f"W {list(w.shape)} and R {list(r.shape)} do not fit direction {direction!r} and X "
                        f"{list(ctx.shape(0))} (expected [directions, hidden, input] and [directions, hidden, hidden])")
    bias = ctx.require_const(3, "B").astype(np.float32) if ctx.input(3) else np.zeros((directions, 2 * hidden), np.float32)
    if bias.shape != (directions, 2 * hidden):
        raise ctx.error(f"B has shape {list(bias.shape)}, expected {[directions, 2 * hidden]}")
    if ctx.input(5) and tuple(ctx.shape(5)) != ((batch, directions, hidden) if batch_first else (directions, batch, hidden)):
        raise ctx.error(f"initial_h has shape {list(ctx.shape(5))}, which does not fit {directions} direction(s), "
                        f"batch {batch} and hidden size {hidden}")
    initial = ctx.input(5)
    if initial and batch_first:
        initial = ctx.emit1("Transpose", [initial], {"perm": (1, 0, 2)})
    activations = [a.lower() for a in ctx.attr("activations", ["tanh"] * directions)]
    clip = float(ctx.attr("clip", 0.0))
    ys, finals = [], []
    for d in range(directions):
        reverse = direction == "reverse" or d == 1
        projected = ctx.emit1("FullyConnected", [x, ctx.constant(w[d], base="W"),
                                                 ctx.constant(bias[d, :hidden] + bias[d, hidden:], base="bias")])
        pieces = ctx.emit("Split", [projected], {"axis": 0, "sizes": (1,) * steps}, steps) if steps > 1 else [projected]
        recurrent = ctx.constant(r[d], base="R")
        h = None
        if initial:
            h = ctx.emit1("Gather", [initial, ctx.constant(np.array([d], np.int64), base="direction")], {"axis": 0})
        outputs = [None] * steps
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            pre = pieces[t]
            if h is not None:
                pre = ctx.emit1("Add", [pre, ctx.emit1("FullyConnected", [h, recurrent, ""])])
            if clip > 0:
                pre = ctx.emit1("Clip", [pre], {"min": -clip, "max": clip})
            h = ctx.emit1(SIMPLE_RNN_ACTIVATIONS[activations[d]], [pre])
            outputs[t] = h
        ys.append(outputs[0] if steps == 1 else ctx.emit1("Concat", outputs, {"axis": 0}))
        finals.append(h)
    if ctx.output(0):
        y = ctx.reshape(ys[0], (steps, 1, batch, hidden)) if directions == 1 else ctx.emit1(
            "Concat", [ctx.reshape(v, (steps, 1, batch, hidden)) for v in ys], {"axis": 1})
        if batch_first:
            ctx.emit("Transpose", [y], {"perm": (2, 0, 1, 3)}, [ctx.output(0)])
        else:
            ctx.copy_to(y, ctx.output(0))
    if ctx.output(1):
        y_h = finals[0] if directions == 1 else ctx.emit1("Concat", finals, {"axis": 0})
        if batch_first:
            ctx.emit("Transpose", [y_h], {"perm": (1, 0, 2)}, [ctx.output(1)])
        else:
            ctx.copy_to(y_h, ctx.output(1))


# ---------------------------------------------------------------- selection and scans

@converts("Trilu")
def _trilu(ctx: NodeContext):
    k = int(ctx.require_const(1, "k").reshape(-1)[0]) if ctx.input(1) else 0
    attrs = {"upper": bool(ctx.attr("upper", 1)), "k": k}
    ctx.emit("Trilu", [ctx.input(0)], attrs, [ctx.output(0)])


@converts("CumSum")
def _cumsum(ctx: NodeContext):
    axis = _axis(int(ctx.require_const(1, "axis").reshape(-1)[0]), ctx.rank(0), ctx)
    attrs = {"axis": axis, "exclusive": bool(ctx.attr("exclusive", 0)), "reverse": bool(ctx.attr("reverse", 0)),
             "product": ctx.op_type == "CumProd"}
    ctx.emit("CumSum", [ctx.input(0)], attrs, [ctx.output(0)])


converts("CumProd", newest_opset=26)(_cumsum)


@converts("ArgMax", "ArgMin")
def _arg_reduce(ctx: NodeContext):
    attrs = {"axis": _axis(ctx.attr("axis", 0), ctx.rank(0), ctx), "keepdims": bool(ctx.attr("keepdims", 1)),
             "select_last_index": bool(ctx.attr("select_last_index", 0))}
    ctx.emit(ctx.op_type, [ctx.input(0)], attrs, [ctx.output(0)])


@converts("TopK")
def _top_k(ctx: NodeContext):
    if ctx.attr("k") is not None:  # opset 1-9
        k = int(ctx.attr("k"))
    else:
        k = int(ctx.require_const(1, "K").reshape(-1)[0])
    attrs = {"k": k, "axis": _axis(ctx.attr("axis", -1), ctx.rank(0), ctx),
             "largest": bool(ctx.attr("largest", 1)), "sorted": bool(ctx.attr("sorted", 1))}
    # The runtime always writes both outputs; an unused one gets a name of its own.
    outputs = [ctx.output(i) or ctx.builder.fresh_name(f"{ctx.name}/TopK_out{i}") for i in range(2)]
    ctx.emit("TopK", [ctx.input(0)], attrs, outputs)


# ---------------------------------------------------------------- instance and group normalisation

def _normalise_rows(ctx: NodeContext, x: str, rows_shape: tuple[int, ...], epsilon: float) -> str:
    """x reshaped to [N, R, L] and normalised over L (mean and variance per row), by LayerNorm with
    a unit scale covering the whole row, so it takes the runtime's full-row vector kernel."""
    rows = ctx.reshape(x, rows_shape)
    ones = ctx.constant(np.ones(rows_shape[-1:], ctx.type(x).dtype), base="unit_scale")
    return ctx.emit1("LayerNorm", [rows, ones], {"axis": 2, "epsilon": epsilon})


def _normalise_spatial(ctx: NodeContext, x: str, rank: int, epsilon: float) -> str:
    """x [N, C, spatial...] normalised over the spatial axes of each (n, c): (x - mean) /
    sqrt(mean of the centred squares + epsilon), as ReduceMeans and elementwise ops. After a
    convolution in NHWC, cancel_transposes moves the layout Transposes through every one of them,
    so the norm runs channels-last with no Transpose (a LayerNorm needs its row contiguous: two
    full Transposes around it); where the spatial axes stay trailing, fuse_patterns makes the same
    ops one LayerNorm again."""
    axes = {"axes": tuple(range(2, rank)), "keepdims": True}
    centred = ctx.emit1("Sub", [x, ctx.emit1("ReduceMean", [x], axes)])
    variance = ctx.emit1("ReduceMean", [ctx.emit1("Mul", [centred, centred])], axes)
    epsilon_value = ctx.constant(np.array(epsilon, np.float32), base="epsilon")
    return ctx.emit1("Div", [centred, ctx.emit1("Sqrt", [ctx.emit1("Add", [variance, epsilon_value])])])


def _affine_per_row(ctx: NodeContext, y: str, index: int, op: str, identity: float, count: int,
                    trailing: int = 1) -> str:
    """y [N, count, ...] (``trailing`` axes after count) times (or plus) input ``index`` of shape
    [count] along axis 1; skipped when the input is a constant equal to the identity (PyTorch's
    GroupNorm export passes ones and zeros to InstanceNormalization and applies its own affine
    after)."""
    value = ctx.const(index)
    if value is not None and np.all(value == identity):
        return y
    shape = (count,) + (1,) * trailing
    if value is not None:
        per_row = ctx.constant(value.astype(np.float32).reshape(shape), base=f"{op.lower()}_rows")
    else:
        per_row = ctx.reshape(ctx.input(index), shape)
    return ctx.emit1(op, [y, per_row])


def _check_normalization(ctx: NodeContext, channels: int, *param_sizes: int) -> None:
    if ctx.type(0).dtype not in ("float32", "float16"):
        raise ctx.error(f"input is {ctx.type(0).dtype}; expected float")
    for index, size in zip((1, 2), param_sizes):
        if ctx.input(index) and tuple(ctx.shape(index)) != (size,):
            raise ctx.error(f"input {index} has shape {list(ctx.shape(index))}, expected [{size}]")
    if ctx.rank(0) < 2:
        raise ctx.error(f"input of rank {ctx.rank(0)} has no channel axis")


@converts("InstanceNormalization")
def _instance_norm(ctx: NodeContext):
    """float32 with spatial axes: normalised over them (_normalise_spatial), then the per-channel
    affine. Otherwise lowered to LayerNorm over each (n, c) image flattened to a row, then the
    affine. Both are the op's arithmetic (mean, centred variance, 1 / sqrt(var + epsilon))."""
    shape = ctx.shape(0)
    _check_normalization(ctx, shape[1], shape[1], shape[1])
    n, c = shape[0], shape[1]
    epsilon = float(ctx.attr("epsilon", 1e-5))
    if ctx.type(0).dtype == "float32" and len(shape) >= 3:
        y = _normalise_spatial(ctx, ctx.input(0), len(shape), epsilon)
        trailing = len(shape) - 2
    else:
        spatial = int(np.prod(shape[2:], dtype=np.int64))
        y = _normalise_rows(ctx, ctx.input(0), (n, c, spatial), epsilon)
        trailing = 1
    y = _affine_per_row(ctx, y, 1, "Mul", 1.0, c, trailing)
    y = _affine_per_row(ctx, y, 2, "Add", 0.0, c, trailing)
    ctx.reshape(y, shape, output=ctx.output(0))


@converts("GroupNormalization")
def _group_norm(ctx: NodeContext):
    """Lowered to LayerNorm over each (n, group) block of channels flattened to a row, then the
    affine: per group before opset 21 (scale and bias [G]), per channel from 21 ([C])."""
    shape = ctx.shape(0)
    n, c = shape[0], shape[1]
    groups = int(ctx.attr("num_groups"))
    if groups <= 0 or c % groups:
        raise ctx.error(f"num_groups {groups} does not divide the {c} channels")
    per_channel = ctx.opset >= 21
    size = c if per_channel else groups
    _check_normalization(ctx, c, size, size)
    spatial = int(np.prod(shape[2:], dtype=np.int64))
    y = _normalise_rows(ctx, ctx.input(0), (n, groups, c // groups * spatial), float(ctx.attr("epsilon", 1e-5)))
    if per_channel:
        y = ctx.reshape(y, (n, c, spatial))
    y = _affine_per_row(ctx, y, 1, "Mul", 1.0, size)
    y = _affine_per_row(ctx, y, 2, "Add", 0.0, size)
    ctx.reshape(y, shape, output=ctx.output(0))


# ---------------------------------------------------------------- one-hot

@converts("OneHot")
def _one_hot(ctx: NodeContext):
    """Lowered to a comparison with the positions 0..depth-1 laid along the new axis, then Where
    picks on or off: exact for every dtype. Negative indices count from the end of depth; others
    outside [-depth, depth) match no position, so their row is all off (onnxruntime's result)."""
    depth = int(ctx.require_const(1, "depth").reshape(-1)[0])
    if depth <= 0:
        raise ctx.error(f"depth {depth} must be positive")
    in_shape = ctx.shape(0)
    out_rank = len(in_shape) + 1
    axis = _axis(ctx.attr("axis", -1), out_rank, ctx)
    indices = ctx.input(0)
    if ctx.type(0).dtype != "int64":
        indices = ctx.emit1("Cast", [indices], {"to": "int64"})
    zero = ctx.constant(np.array(0, np.int64), base="zero")
    negative = ctx.emit1("Less", [indices, zero])
    wrapped = ctx.emit1("Add", [indices, ctx.constant(np.array(depth, np.int64), base="depth")])
    indices = ctx.emit1("Where", [negative, wrapped, indices])
    indices = ctx.reshape(indices, in_shape[:axis] + (1,) + in_shape[axis:])
    positions = ctx.constant(np.arange(depth, dtype=np.int64).reshape((depth,) + (1,) * (out_rank - 1 - axis)),
                             base="positions")
    hot = ctx.emit1("Equal", [indices, positions])
    values = ctx.const(2)
    if values is not None:
        off, on = (ctx.constant(np.asarray(v), base=name) for v, name in zip(values.reshape(-1)[:2], ("off", "on")))
    else:
        off, on = (ctx.emit1("Gather", [ctx.input(2), ctx.constant(np.array(k, np.int64), base="which")], {"axis": 0})
                   for k in (0, 1))
    ctx.emit("Where", [hot, on, off], {}, [ctx.output(0)])


@converts("GatherND")
def _gather_nd(ctx: NodeContext):
    ctx.emit("GatherND", [ctx.input(0), ctx.input(1)], {"batch_dims": int(ctx.attr("batch_dims", 0))},
             [ctx.output(0)])


# ---------------------------------------------------------------- einsum

def _check_einsum(info: NodeInfo) -> list[str]:
    equation = str(info.attr("equation", ""))
    terms = equation.replace(" ", "").replace("...", "").partition("->")[0].split(",")
    if any(len(set(term)) != len(term) for term in terms):
        return [f"equation {equation!r}: a diagonal or trace"]
    return []


@converts("Einsum", check=_check_einsum)
def _einsum(ctx: NodeContext):
    lower_einsum(ctx)


# ---------------------------------------------------------------- spectral transforms

@converts("DFT")
def _dft(ctx: NodeContext):
    lower_dft(ctx)


@converts("STFT")
def _stft(ctx: NodeContext):
    lower_stft(ctx)


# ---------------------------------------------------------------- scatter

@converts("ScatterND")
def _scatter_nd(ctx: NodeContext):
    ctx.emit("ScatterND", [ctx.input(0), ctx.input(1), ctx.input(2)],
             {"reduction": str(ctx.attr("reduction", "none"))}, [ctx.output(0)])


@converts("Col2Im")
def _col2im(ctx: NodeContext):
    """Each column entry (channel, kernel offset, block) adds into the image pixel it covers: one
    ScatterElements with reduction add over the flattened image, with positions from the constant
    image and block shapes. Entries that land in the padding go to one spare slot past the image,
    sliced off after."""
    image = _ints(ctx.require_const(1, "image_shape"))
    block = _ints(ctx.require_const(2, "block_shape"))
    dims = len(image)
    dilations = _ints(ctx.attr("dilations", [1] * dims))
    strides = _ints(ctx.attr("strides", [1] * dims))
    pads = _ints(ctx.attr("pads", [0] * 2 * dims))
    if len(block) != dims or len(dilations) != dims or len(strides) != dims or len(pads) != 2 * dims:
        raise ctx.error(f"image_shape {list(image)}, block_shape {list(block)}, dilations {list(dilations)}, strides "
                        f"{list(strides)} and pads {list(pads)} must agree on {dims} spatial dims")
    if min(block + dilations + strides) < 1 or min(pads) < 0 or min(image) < 0:
        raise ctx.error(f"block_shape {list(block)}, dilations {list(dilations)} and strides {list(strides)} must be "
                        f">= 1, pads {list(pads)} and image_shape {list(image)} >= 0")
    blocks = [(image[d] + pads[d] + pads[dims + d] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
              for d in range(dims)]
    batch, columns, count = ctx.shape(0)
    kernel = int(np.prod(block))
    if min(blocks) < 1 or columns % kernel or count != int(np.prod(blocks)):
        raise ctx.error(f"input {ctx.shape(0)} does not hold C * {kernel} columns of the {int(np.prod(blocks))} "
                        f"blocks image_shape {list(image)} gives")
    channels, pixels = columns // kernel, int(np.prod(image))
    # positions[d][k, l]: the image coordinate along d of kernel offset k in block l.
    offsets = np.indices(block).reshape(dims, -1)
    starts = np.indices(blocks).reshape(dims, -1)
    inside = np.ones((kernel, count), bool)
    flat = np.zeros((kernel, count), np.int64)
    for d in range(dims):
        position = starts[d][None, :] * strides[d] + offsets[d][:, None] * dilations[d] - pads[d]
        inside &= (position >= 0) & (position < image[d])
        flat = flat * image[d] + position
    flat = np.where(inside, flat, pixels).reshape(1, 1, kernel * count)
    updates = ctx.reshape(ctx.input(0), (batch, channels, kernel * count))
    positions = ctx.constant(flat, base="positions")
    indices = ctx.emit1("BroadcastTo", [positions], {"shape": (batch, channels, kernel * count)})
    zeros = ctx.emit1("BroadcastTo", [_scalar(ctx, 0, "zero")], {"shape": (batch, channels, pixels + 1)})
    summed = ctx.emit1("ScatterElements", [zeros, indices, updates], {"axis": 2, "reduction": "add"})
    cropped = ctx.emit1("Slice", [summed], {"starts": (0, 0, 0), "ends": (batch, channels, pixels), "steps": (1, 1, 1)})
    ctx.reshape(cropped, (batch, channels, *image), ctx.output(0))


def _check_tensor_scatter(info: NodeInfo) -> list[str]:
    mode = info.attr("mode", "linear")
    return [] if mode in ("linear", "circular") else [f"mode={mode}"]


@converts("TensorScatter", check=_check_tensor_scatter, newest_opset=24)
def _tensor_scatter(ctx: NodeContext):
    """A KV-cache write: update's positions s along axis go to write_indices[b] + s (modulo the
    cache length when circular) of batch b, by one ScatterElements whose indices are that sum
    broadcast to update's shape."""
    cache, update = ctx.shape(0), ctx.shape(1)
    rank = len(cache)
    axis = _axis(int(ctx.attr("axis", -2)), rank, ctx)
    if axis == 0 or len(update) != rank or update[axis] > cache[axis] or any(
            update[d] != cache[d] for d in range(rank) if d != axis):
        raise ctx.error(f"update {update} must match past_cache {cache} except along axis {axis} (not the batch axis), "
                        f"where it may be shorter")
    steps = np.arange(update[axis], dtype=np.int64).reshape([1] * axis + [-1] + [1] * (rank - axis - 1))
    positions = ctx.constant(steps, base="steps")
    if ctx.input(2):
        starts = ctx.input(2)
        if ctx.type(starts).dtype != "int64":
            starts = ctx.emit1("Cast", [starts], {"to": "int64"})
        starts = ctx.reshape(starts, (cache[0],) + (1,) * (rank - 1))
        positions = ctx.emit1("Add", [starts, positions])
    if ctx.attr("mode", "linear") == "circular":
        positions = ctx.emit1("Mod", [positions, ctx.constant(np.array(cache[axis], np.int64), base="length")])
    indices = ctx.emit1("BroadcastTo", [positions], {"shape": tuple(update)})
    ctx.emit("ScatterElements", [ctx.input(0), indices, ctx.input(1)], {"axis": axis, "reduction": "none"},
             [ctx.output(0)])


@converts("MaxUnpool")
def _max_unpool(ctx: NodeContext):
    """Zeros with each value of X at its index: MaxPool's indices are flat positions in the tensor
    it pooled, whose shape output_shape gives (else the shape pooling inverts), so one
    ScatterElements over that tensor flattened. (ONNX's reference instead reads the indices in the
    inverted shape and pads that to output_shape; onnxruntime reads them as here.)"""
    x_shape = ctx.shape(0)
    dims = len(x_shape) - 2
    kernel = _ints(ctx.attr("kernel_shape", []))
    strides = _ints(ctx.attr("strides", [1] * dims))
    pads = _ints(ctx.attr("pads", [0] * 2 * dims))
    if len(kernel) != dims or len(strides) != dims or len(pads) != 2 * dims or dims < 1:
        raise ctx.error(f"kernel_shape {list(kernel)}, strides {list(strides)} and pads {list(pads)} must give one "
                        f"value per spatial dim of the input {x_shape}")
    if ctx.shape(1) != x_shape:
        raise ctx.error(f"indices {ctx.shape(1)} must have the input's shape {x_shape}")
    shape = tuple(x_shape[:2]) + tuple((x_shape[2 + d] - 1) * strides[d] - pads[d] - pads[dims + d] + kernel[d]
                                       for d in range(dims))
    if ctx.input(2):
        shape = _ints(ctx.require_const(2, "output_shape"))
        if len(shape) != len(x_shape) or shape[:2] != tuple(x_shape[:2]):
            raise ctx.error(f"output_shape {list(shape)} must keep the input's batch and channels {x_shape[:2]}")
    if min(shape) < 0:
        raise ctx.error(f"the output shape {list(shape)} is negative")
    count = int(np.prod(x_shape))
    zeros = ctx.emit1("BroadcastTo", [_scalar(ctx, 0, "zero")], {"shape": (int(np.prod(shape)),)})
    indices = ctx.reshape(ctx.input(1), (count,))
    flat = ctx.emit1("ScatterElements", [zeros, indices, ctx.reshape(ctx.input(0), (count,))],
                     {"axis": 0, "reduction": "none"})
    ctx.reshape(flat, shape, ctx.output(0))


@converts("Det")
def _det(ctx: NodeContext):
    ctx.emit("Det", [ctx.input(0)], {}, [ctx.output(0)])


@converts("ScatterElements", "Scatter")
def _scatter_elements(ctx: NodeContext):
    attrs = {"axis": _axis(ctx.attr("axis", 0), ctx.rank(0), ctx), "reduction": str(ctx.attr("reduction", "none"))}
    ctx.emit("ScatterElements", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs, [ctx.output(0)])


# ---------------------------------------------------------------- detection

@converts("NonMaxSuppression")
def _non_max_suppression(ctx: NodeContext):
    """max_output_boxes_per_class, iou_threshold and score_threshold must be constant (exporters
    write them so); a left-out one takes ONNX's default (0 boxes, 0.0, no score threshold)."""
    def scalar(index: int, what: str, default):
        return ctx.require_const(index, what).reshape(-1)[0] if ctx.input(index) else default
    attrs = {"center_point_box": bool(ctx.attr("center_point_box", 0)),
             "max_output_boxes_per_class": int(scalar(2, "max_output_boxes_per_class", 0)),
             "iou_threshold": float(scalar(3, "iou_threshold", 0.0))}
    score_threshold = scalar(4, "score_threshold", None)
    attrs["score_threshold"] = None if score_threshold is None else float(score_threshold)
    if attrs["max_output_boxes_per_class"] < 0:
        attrs["max_output_boxes_per_class"] = 0
    ctx.emit("NonMaxSuppression", [ctx.input(0), ctx.input(1)], attrs, [ctx.output(0)])


def _check_roi_align(info: NodeInfo) -> list[str]:
    mode = info.attr("coordinate_transformation_mode", "half_pixel")
    return [] if mode in ("half_pixel", "output_half_pixel") else [f"coordinate_transformation_mode={mode}"]


@converts("RoiAlign", check=_check_roi_align)
def _roi_align(ctx: NodeContext):
    """Before opset 16 RoiAlign had no coordinate_transformation_mode and behaved as
    output_half_pixel; from 16 the default is half_pixel."""
    default = "half_pixel" if ctx.opset >= 16 else "output_half_pixel"
    attrs = {"mode": str(ctx.attr("mode", "avg")), "output_height": int(ctx.attr("output_height", 1)),
             "output_width": int(ctx.attr("output_width", 1)), "sampling_ratio": int(ctx.attr("sampling_ratio", 0)),
             "spatial_scale": float(ctx.attr("spatial_scale", 1.0)),
             "half_pixel": ctx.attr("coordinate_transformation_mode", default) == "half_pixel", "layout": "NCHW"}
    ctx.emit("RoiAlign", [ctx.input(0), ctx.input(1), ctx.input(2)], attrs, [ctx.output(0)])



@converts("AffineGrid")
def _affine_grid(ctx: NodeContext):
    """grid = base @ theta^T with base the constant [x, y(, z), 1] of every output position
    (normalised pixel centres, or corners for align_corners), from the constant size: one
    BatchMatMul broadcasting base over the batch."""
    size = _ints(ctx.require_const(1, "size"))
    spatial = size[2:]
    dims = len(spatial)
    if dims not in (2, 3) or min(size) < 1 or ctx.shape(0) != (size[0], dims, dims + 1):
        raise ctx.error(f"theta {ctx.shape(0)} and size {list(size)} must be [N, 2, 3] with [N, C, H, W] or "
                        f"[N, 3, 4] with [N, C, D, H, W]")
    align_corners = bool(ctx.attr("align_corners", 0))

    def coordinates(n: int) -> np.ndarray:
        # One pixel with align_corners has no corners apart: its coordinate is the centre, 0, as in
        # PyTorch (ONNX's reference and onnxruntime disagree there; GridSample reads pixel 0 for any).
        i = np.arange(n, dtype=np.float64)
        if align_corners:
            return -1.0 + 2.0 * i / (n - 1) if n > 1 else np.zeros(1)
        return -1.0 + (2.0 * i + 1.0) / n

    axes = np.meshgrid(*[coordinates(n) for n in spatial], indexing="ij")
    # Homogeneous coordinates in grid order: the last spatial dim (x) first.
    base = np.stack([*(a.reshape(-1) for a in reversed(axes)), np.ones(int(np.prod(spatial)))], axis=1)
    base = ctx.constant(base.astype(np.float32)[None], base="base_grid")
    grid = ctx.emit1("BatchMatMul", [base, ctx.input(0)], {"transpose_a": False, "transpose_b": True})
    ctx.reshape(grid, (size[0], *spatial, dims), ctx.output(0))

# Opset 16 named the interpolations bilinear and bicubic; 20 renamed them and allowed N-D input.
GRID_SAMPLE_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic",
                     "nearest": "nearest"}


def _check_grid_sample(info: NodeInfo) -> list[str]:
    reasons = []
    mode, padding = info.attr("mode", "bilinear"), info.attr("padding_mode", "zeros")
    if mode not in GRID_SAMPLE_MODES:
        reasons.append(f"mode={mode}")
    if padding not in ("zeros", "border", "reflection"):
        reasons.append(f"padding_mode={padding}")
    return reasons


@converts("GridSample", check=_check_grid_sample)
def _grid_sample(ctx: NodeContext):
    if not 3 <= ctx.rank(0) <= 5:
        raise ctx.error(f"input of rank {ctx.rank(0)}: 1, 2 or 3 spatial dims only")
    attrs = {"mode": GRID_SAMPLE_MODES[str(ctx.attr("mode", "bilinear"))],
             "padding_mode": str(ctx.attr("padding_mode", "zeros")),
             "align_corners": bool(ctx.attr("align_corners", 0)), "layout": "NCHW"}
    ctx.emit("GridSample", [ctx.input(0), ctx.input(1)], attrs, [ctx.output(0)])

"""Elementwise ops: the 23 binary ops, the 33 unary ops (also the fused-activation vocabulary),
Where and Cast. All broadcast like NumPy.

Float unary ops compute in float64 and round once to the input's dtype, so the reference is the
correctly rounded result that the runtime's float32 kernels are compared against.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from converter.edgefb.BinaryOp import BinaryOp
from converter.edgefb.BinaryOptions import BinaryOptionsT
from converter.edgefb.CastOptions import CastOptionsT
from converter.edgefb.CastRoundMode import CastRoundMode
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.UnaryOp import UnaryOp
from converter.edgefb.UnaryOptions import UnaryOptionsT
from converter.ir import DTYPES, TensorType, numpy_dtype
from converter.ops import OpDef, register
from converter.ops._common import (FLOAT_DTYPES, INT_DTYPES, apply_activation, broadcast_dims, erf,
                                   fail, int8_binary, need, no_attrs, no_options, output_elements, zero_flops)
from converter.ops.int8_reference import add_int8, mul_int8, sub_int8, unary_lut_int8

NUMERIC = FLOAT_DTYPES + INT_DTYPES
SIGNED = FLOAT_DTYPES + ("int8", "int32", "int64")


def _check_dtype(op: str, t: TensorType, allowed: tuple[str, ...], what: str) -> None:
    if t.dtype not in allowed:
        fail(op, f"{what} has dtype {t.dtype}; expected one of {', '.join(allowed)}")


# ---- binary ----

def _truncating_divide(a, b):
    """Integer division rounding toward zero (C semantics), as ONNX Div on integers."""
    quotient = np.floor_divide(a, b)
    remainder_nonzero = np.not_equal(a - quotient * b, 0)
    signs_differ = np.not_equal(np.less(a, 0), np.less(b, 0))
    return np.where(remainder_nonzero & signs_differ, quotient + 1, quotient)


def _divide(a, b):
    if np.asarray(a).dtype.kind in "iu":
        return _truncating_divide(a, b)
    return np.divide(a, b)


def _power(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == b.dtype and a.dtype.kind == "f":
        return np.power(a, b)
    # Mixed dtypes (ONNX allows a float exponent on an integer base and vice versa): compute in
    # float64 and round back to the base's dtype, which is the output dtype.
    return np.power(a.astype(np.float64), b.astype(np.float64))


def _binary(name: str, code: int, compute: Callable, *, dtypes=NUMERIC, to_bool=False,
            mixed_dtypes=False, fusable=False, **int8_form) -> OpDef:
    def infer(types, attrs):
        need(name, types, 2)
        a, b = types
        _check_dtype(name, a, dtypes, "input a")
        _check_dtype(name, b, dtypes, "input b")
        if a.dtype != b.dtype and not mixed_dtypes:
            fail(name, f"inputs have different dtypes {a.dtype} and {b.dtype}")
        return [TensorType("bool" if to_bool else a.dtype, broadcast_dims(name, a.shape, b.shape))]

    def reference(inputs, attrs):
        a, b = inputs
        with np.errstate(all="ignore"):
            y = np.asarray(compute(a, b))
        y = y.astype(np.bool_ if to_bool else a.dtype, copy=False)
        return [apply_activation(y, attrs) if fusable else y]

    def lower(attrs):
        options = BinaryOptionsT()
        options.op = code
        return OpCode.BINARY, OpOptions.BinaryOptions, options

    return register(OpDef(name=name, infer=infer, reference=reference, lower=lower, lift=no_attrs,
                          opcode=OpCode.BINARY, lift_key=code, flops=output_elements,
                          elementwise=True, fusable=fusable, gradient=BINARY_GRADIENTS.get(name),
                          **int8_form))


# ---- binary gradients: (GradContext, node, dys) -> [da, db], each summed back to its input's
# shape (broadcasting in the forward is a sum in the backward).

def _add_grad(g, node, dys):
    a, b = node.inputs
    return [g.unbroadcast(dys[0], g.shape(a)) if g.wants(0) else None,
            g.unbroadcast(dys[0], g.shape(b)) if g.wants(1) else None]


def _sub_grad(g, node, dys):
    a, b = node.inputs
    return [g.unbroadcast(dys[0], g.shape(a)) if g.wants(0) else None,
            g.unbroadcast(g.emit("Neg", [dys[0]]), g.shape(b)) if g.wants(1) else None]


def _mul_grad(g, node, dys):
    a, b = node.inputs
    return [g.unbroadcast(g.emit("Mul", [dys[0], b]), g.shape(a)) if g.wants(0) else None,
            g.unbroadcast(g.emit("Mul", [dys[0], a]), g.shape(b)) if g.wants(1) else None]


def _div_grad(g, node, dys):
    # y = a / b: da = dy / b, db = -dy * y / b.
    a, b = node.inputs
    da = g.unbroadcast(g.emit("Div", [dys[0], b]), g.shape(a)) if g.wants(0) else None
    db = None
    if g.wants(1):
        db = g.emit("Neg", [g.emit("Div", [g.emit("Mul", [dys[0], node.outputs[0]]), b])])
        db = g.unbroadcast(db, g.shape(b))
    return [da, db]


def _pow_grad(g, node, dys):
    # y = a ** b: da = dy * b * a ** (b - 1), db = dy * y * log(a).
    a, b = node.inputs
    if g.type(a).dtype != g.type(b).dtype:
        g.fail("Pow with a base and an exponent of different dtypes has no gradient")
    da = db = None
    if g.wants(0):
        lowered = g.emit("Pow", [a, g.emit("Sub", [b, g.scalar(1.0, b)])])
        da = g.unbroadcast(g.emit("Mul", [dys[0], g.emit("Mul", [b, lowered])]), g.shape(a))
    if g.wants(1):
        db = g.emit("Mul", [dys[0], g.emit("Mul", [node.outputs[0], g.emit("Log", [a])])])
        db = g.unbroadcast(db, g.shape(b))
    return [da, db]


def _select_grad(compare: str):
    """Min/Max: the gradient goes to the selected operand; a tie goes to ``a``."""
    def rule(g, node, dys):
        a, b = node.inputs
        picks_a = g.emit(compare, [a, b])
        zero = g.scalar(0.0, dys[0])
        return [g.unbroadcast(g.emit("Where", [picks_a, dys[0], zero]), g.shape(a)) if g.wants(0) else None,
                g.unbroadcast(g.emit("Where", [picks_a, zero, dys[0]]), g.shape(b)) if g.wants(1) else None]
    return rule


def _prelu_grad(g, node, dys):
    # y = a < 0 ? a * b : a.
    a, b = node.inputs
    negative = g.emit("Less", [a, g.scalar(0.0, a)])
    da = db = None
    if g.wants(0):
        da = g.unbroadcast(g.emit("Where", [negative, g.emit("Mul", [dys[0], b]), dys[0]]), g.shape(a))
    if g.wants(1):
        db = g.emit("Where", [negative, g.emit("Mul", [dys[0], a]), g.scalar(0.0, a)])
        db = g.unbroadcast(db, g.shape(b))
    return [da, db]


BINARY_GRADIENTS = {
    "Add": _add_grad, "Sub": _sub_grad, "Mul": _mul_grad, "Div": _div_grad, "Pow": _pow_grad,
    "Min": _select_grad("LessEqual"), "Max": _select_grad("GreaterEqual"), "PRelu": _prelu_grad,
}


_binary("Add", BinaryOp.ADD, np.add, fusable=True, int8=add_int8, int8_role="compute",
        int8_condition=int8_binary)
_binary("Sub", BinaryOp.SUB, np.subtract, fusable=True, int8=sub_int8, int8_role="compute",
        int8_condition=int8_binary)
_binary("Mul", BinaryOp.MUL, np.multiply, fusable=True, int8=mul_int8, int8_role="compute",
        int8_condition=int8_binary)
_binary("Div", BinaryOp.DIV, _divide)
_binary("Pow", BinaryOp.POW, _power, mixed_dtypes=True)
_binary("Min", BinaryOp.MIN, np.minimum)
_binary("Max", BinaryOp.MAX, np.maximum)
_binary("Mod", BinaryOp.MOD, np.mod)
_binary("FMod", BinaryOp.FMOD, np.fmod)
_binary("PRelu", BinaryOp.PRELU, lambda a, b: np.where(a < 0, a * b, a), dtypes=SIGNED)
_binary("Equal", BinaryOp.EQUAL, np.equal, dtypes=NUMERIC + ("bool",), to_bool=True)
_binary("Less", BinaryOp.LESS, np.less, to_bool=True)
_binary("LessEqual", BinaryOp.LESS_EQUAL, np.less_equal, to_bool=True)
_binary("Greater", BinaryOp.GREATER, np.greater, to_bool=True)
_binary("GreaterEqual", BinaryOp.GREATER_EQUAL, np.greater_equal, to_bool=True)
_binary("And", BinaryOp.AND, np.logical_and, dtypes=("bool",), to_bool=True)
_binary("Or", BinaryOp.OR, np.logical_or, dtypes=("bool",), to_bool=True)
_binary("Xor", BinaryOp.XOR, np.logical_xor, dtypes=("bool",), to_bool=True)


def _shift(left: bool):
    """a << b (wrapping) or a >> b (arithmetic); an amount outside [0, bits) gives 0 shifting left
    and the sign fill (0 or -1) shifting right: the runtime's definition, which NumPy leaves to the
    platform."""
    def compute(a, b):
        a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
        valid = (b >= 0) & (b < 8 * a.itemsize)
        amount = np.where(valid, b, 0).astype(a.dtype)
        if left:
            return np.where(valid, np.left_shift(a, amount), 0).astype(a.dtype)
        return np.where(valid, np.right_shift(a, amount), np.where(a < 0, -1, 0)).astype(a.dtype)
    return compute


INTEGERS = ("int32", "int64")
_binary("BitwiseAnd", BinaryOp.BITWISE_AND, np.bitwise_and, dtypes=INTEGERS)
_binary("BitwiseOr", BinaryOp.BITWISE_OR, np.bitwise_or, dtypes=INTEGERS)
_binary("BitwiseXor", BinaryOp.BITWISE_XOR, np.bitwise_xor, dtypes=INTEGERS)
_binary("ShiftLeft", BinaryOp.SHIFT_LEFT, _shift(left=True), dtypes=INTEGERS)
_binary("ShiftRight", BinaryOp.SHIFT_RIGHT, _shift(left=False), dtypes=INTEGERS)


# ---- unary ----

def _unary(name: str, code: int, compute: Callable, *, dtypes=FLOAT_DTYPES, to_bool=False,
           params: tuple[tuple[str, float], ...] = (), table: bool = False) -> OpDef:
    """``params`` names the attributes carried in UnaryOptions.alpha and .beta, with defaults.
    ``table``: the op has an int8 form through a [256] lookup table the converter computes."""

    def read_params(attrs) -> dict:
        return {key: float(attrs.get(key, default)) for key, default in params}

    def infer(types, attrs):
        need(name, types, 1)
        _check_dtype(name, types[0], dtypes, "input")
        return [TensorType("bool" if to_bool else types[0].dtype, types[0].shape)]

    def reference(inputs, attrs):
        x = np.asarray(inputs[0])
        values = read_params(attrs)
        compute_in = x.astype(np.float64) if x.dtype.kind == "f" else x
        with np.errstate(all="ignore"):
            y = np.asarray(compute(compute_in, **values))
        return [y.astype(np.bool_ if to_bool else x.dtype, copy=False)]

    def lower(attrs):
        options = UnaryOptionsT()
        options.op = code
        values = list(read_params(attrs).values()) + [0.0, 0.0]
        options.alpha, options.beta = values[0], values[1]
        return OpCode.UNARY, OpOptions.UnaryOptions, options

    def lift(options):
        carried = (options.alpha, options.beta)
        return {key: float(value) for (key, _), value in zip(params, carried)}

    return register(OpDef(name=name, infer=infer, reference=reference, lower=lower, lift=lift,
                          opcode=OpCode.UNARY, lift_key=code, flops=output_elements,
                          elementwise=True, gradient=_unary_grad if not to_bool else None,
                          **(dict(int8=unary_lut_int8(name), int8_role="table", int8_inputs=(0,)) if table else {})))


def _unary_grad(g, node, dys):
    """dx = dy * f'(x) through ActivationGrad, whose derivative table
    (converter.ops.training.DERIVATIVES) fixes the values at kinks; Floor, Ceil, Round and Sign
    are refused (their derivative is zero wherever it exists)."""
    from converter.ops.training import NOT_DIFFERENTIABLE

    if node.op in NOT_DIFFERENTIABLE:
        g.fail(f"{node.op} is not differentiable (its derivative is zero wherever it exists)")
    if node.op == "Neg":
        return [g.emit("Neg", [dys[0]])]
    return [g.activation_grad(node.inputs[0], dys[0], node.op, node.attrs)]


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _hard_sigmoid(x, alpha, beta):
    return np.maximum(0.0, np.minimum(1.0, alpha * x + beta))


def _clip(x, min, max):
    if x.dtype.kind in "iu":
        # Integer inputs clip against bounds clamped into their range (an infinite bound: none).
        info = np.iinfo(x.dtype)
        min = x.dtype.type(info.min if min <= info.min else math.ceil(min))
        max = x.dtype.type(info.max if max >= info.max else math.floor(max))
    return np.minimum(np.maximum(x, min), max)


_unary("Relu", UnaryOp.RELU, lambda x: np.maximum(x, 0), dtypes=SIGNED, table=True)
_unary("Relu6", UnaryOp.RELU6, lambda x: np.minimum(np.maximum(x, 0.0), 6.0), table=True)
_unary("Clip", UnaryOp.CLIP, _clip, dtypes=NUMERIC,
       params=(("min", -math.inf), ("max", math.inf)), table=True)
_unary("LeakyRelu", UnaryOp.LEAKY_RELU, lambda x, alpha: np.where(x < 0, alpha * x, x),
       params=(("alpha", 0.01),), table=True)
_unary("Elu", UnaryOp.ELU, lambda x, alpha: np.where(x < 0, alpha * np.expm1(x), x),
       params=(("alpha", 1.0),), table=True)
_unary("Sigmoid", UnaryOp.SIGMOID, _sigmoid, table=True)
_unary("Tanh", UnaryOp.TANH, np.tanh, table=True)
_unary("HardSigmoid", UnaryOp.HARD_SIGMOID, _hard_sigmoid, params=(("alpha", 0.2), ("beta", 0.5)),
       table=True)
_unary("HardSwish", UnaryOp.HARD_SWISH, lambda x: x * _hard_sigmoid(x, 1.0 / 6.0, 0.5), table=True)
_unary("Gelu", UnaryOp.GELU, lambda x: 0.5 * x * (1.0 + erf(x / math.sqrt(2.0))), table=True)
_unary("GeluTanh", UnaryOp.GELU_TANH,
       lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
       table=True)
_unary("Erf", UnaryOp.ERF, erf, table=True)
_unary("Silu", UnaryOp.SILU, lambda x: x * _sigmoid(x), table=True)
_unary("Exp", UnaryOp.EXP, np.exp, table=True)
_unary("Log", UnaryOp.LOG, np.log, table=True)
_unary("Sqrt", UnaryOp.SQRT, np.sqrt, table=True)
_unary("Rsqrt", UnaryOp.RSQRT, lambda x: 1.0 / np.sqrt(x), table=True)
_unary("Reciprocal", UnaryOp.RECIPROCAL, lambda x: 1.0 / x, table=True)
_unary("Neg", UnaryOp.NEG, np.negative, dtypes=SIGNED, table=True)
_unary("Abs", UnaryOp.ABS, np.abs, dtypes=NUMERIC, table=True)
_unary("Floor", UnaryOp.FLOOR, np.floor)
_unary("Ceil", UnaryOp.CEIL, np.ceil)
_unary("Round", UnaryOp.ROUND, np.round)
_unary("Sign", UnaryOp.SIGN, np.sign, dtypes=NUMERIC)
_unary("Softplus", UnaryOp.SOFTPLUS, lambda x: np.logaddexp(0.0, x), table=True)
_unary("Sin", UnaryOp.SIN, np.sin, table=True)
_unary("Cos", UnaryOp.COS, np.cos, table=True)
_unary("Asin", UnaryOp.ASIN, np.arcsin, table=True)
_unary("Acos", UnaryOp.ACOS, np.arccos, table=True)
_unary("Atan", UnaryOp.ATAN, np.arctan, table=True)
_unary("Square", UnaryOp.SQUARE, np.square, dtypes=NUMERIC, table=True)
_unary("Not", UnaryOp.NOT, np.logical_not, dtypes=("bool",), to_bool=True)
_unary("IsNaN", UnaryOp.IS_NAN, np.isnan, to_bool=True)
_unary("IsInf", UnaryOp.IS_INF, np.isinf, to_bool=True)


# ---- Where, Cast ----

def _where_infer(types, attrs):
    need("Where", types, 3)
    cond, a, b = types
    if cond.dtype != "bool":
        fail("Where", f"condition has dtype {cond.dtype}; expected bool")
    if a.dtype != b.dtype:
        fail("Where", f"branches have different dtypes {a.dtype} and {b.dtype}")
    return [TensorType(a.dtype, broadcast_dims("Where", cond.shape, a.shape, b.shape))]


def _where_grad(g, node, dys):
    cond, a, b = node.inputs
    zero = g.scalar(0.0, dys[0])
    return [None,
            g.unbroadcast(g.emit("Where", [cond, dys[0], zero]), g.shape(a)) if g.wants(1) else None,
            g.unbroadcast(g.emit("Where", [cond, zero, dys[0]]), g.shape(b)) if g.wants(2) else None]


def _nan_guard(graph, node) -> str | None:
    """Where(IsNaN(x), c, x): int8 x is never NaN, so the guard passes x through."""
    cond, _, x = node.inputs
    producer = next((n for n in graph.nodes if cond in n.outputs), None)
    if producer is None or producer.op != "IsNaN" or producer.inputs[0] != x:
        return "no int8 kernel"
    return None


register(OpDef(
    name="Where", infer=_where_infer,
    reference=lambda inputs, attrs: [np.asarray(np.where(*inputs)).astype(inputs[1].dtype, copy=False)],
    lower=no_options(OpCode.WHERE), lift=no_attrs, opcode=OpCode.WHERE, flops=output_elements,
    elementwise=True, gradient=_where_grad,
    # int8 mode replaces a NaN guard by an Identity of its int8 x, so it needs no int8 kernel.
    int8_role="follow", int8_condition=_nan_guard, int8_inputs=(2,)))


# Cast's options, which matter only to the float8 targets (ONNX Cast): saturate clamps values past
# the largest finite one; round_mode picks float8_e8m0fnu's power of two. Defaults are left out of
# the attributes, so a Cast that does not use them reads back equal.
CAST_ROUND_MODES = {"up": CastRoundMode.UP, "down": CastRoundMode.DOWN, "nearest": CastRoundMode.NEAREST}
_FLOAT8_SATURATING = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


def _cast_infer(types, attrs):
    need("Cast", types, 1)
    if attrs.get("to") not in DTYPES:
        fail("Cast", f"attribute 'to' is {attrs.get('to')!r}; expected one of {', '.join(DTYPES)}")
    if attrs.get("round_mode", "up") not in CAST_ROUND_MODES:
        fail("Cast", f"round_mode {attrs['round_mode']!r}; expected one of {', '.join(CAST_ROUND_MODES)}")
    return [TensorType(attrs["to"], types[0].shape)]


def _cast_reference(inputs, attrs):
    x = np.asarray(inputs[0])
    to, saturate = numpy_dtype(attrs["to"]), attrs.get("saturate", True)
    with np.errstate(all="ignore"):
        if attrs["to"] == "float8_e8m0fnu":
            from onnx.numpy_helper import to_float8e8m0
            return [to_float8e8m0(x.astype(np.float32), saturate, attrs.get("round_mode", "up"))]
        if attrs["to"] in _FLOAT8_SATURATING and saturate and x.dtype.kind == "f":
            import ml_dtypes
            info = ml_dtypes.finfo(to)
            x = np.clip(x.astype(np.float32), np.float32(info.min), np.float32(info.max))
        return [x.astype(to)]


def _cast_lower(attrs):
    saturate, round_mode = attrs.get("saturate", True), attrs.get("round_mode", "up")
    if saturate and round_mode == "up":
        return OpCode.CAST, OpOptions.NONE, None
    options = CastOptionsT()
    options.saturate = bool(saturate)
    options.roundMode = CAST_ROUND_MODES[round_mode]
    return OpCode.CAST, OpOptions.CastOptions, options


def _cast_lift(options) -> dict:
    if options is None:
        return {}
    attrs = {}
    if not options.saturate:
        attrs["saturate"] = False
    if options.roundMode != CastRoundMode.UP:
        attrs["round_mode"] = next(k for k, v in CAST_ROUND_MODES.items() if v == options.roundMode)
    return attrs


register(OpDef(
    # The target dtype is the output tensor's; the reader takes it from there.
    name="Cast", infer=_cast_infer, reference=_cast_reference,
    lower=_cast_lower, lift=_cast_lift, opcode=OpCode.CAST, flops=output_elements,
    elementwise=True, gradient=lambda g, node, dys: [
        g.emit("Cast", [dys[0]], {"to": g.type(node.inputs[0]).dtype})]))


def _bitcast_infer(types, attrs):
    need("BitCast", types, 1)
    if attrs.get("to") not in DTYPES:
        fail("BitCast", f"attribute 'to' is {attrs.get('to')!r}; expected one of {', '.join(DTYPES)}")
    if numpy_dtype(attrs["to"]).itemsize != numpy_dtype(types[0].dtype).itemsize:
        fail("BitCast", f"{types[0].dtype} and {attrs['to']} differ in size")
    return [TensorType(attrs["to"], types[0].shape)]


register(OpDef(
    # x's bytes read as another dtype of the same size; the target dtype is the output tensor's.
    name="BitCast", infer=_bitcast_infer,
    reference=lambda inputs, attrs: [np.ascontiguousarray(inputs[0]).view(numpy_dtype(attrs["to"]))],
    lower=no_options(OpCode.BITCAST), lift=no_attrs, opcode=OpCode.BITCAST, flops=zero_flops))

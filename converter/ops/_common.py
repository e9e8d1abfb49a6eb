"""Helpers shared by the op families: shape rules, lowering shorthands, the fused activation."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.UnaryOptions import UnaryOptionsT
from converter.ir import TensorType

FLOAT_DTYPES = ("float32", "float16")
INT_DTYPES = ("int8", "uint8", "int32", "int64")
LAYOUTS = ("NCHW", "NHWC")


def fail(op: str, message: str):
    raise ValueError(f"{op}: {message}")


def need(op: str, types: Sequence[TensorType | None], count: int, optional: int = 0) -> None:
    """Checks that the first ``count`` inputs are present and at most ``optional`` more follow."""
    if not count <= len(types) <= count + optional:
        expect = f"{count}" if not optional else f"{count} to {count + optional}"
        fail(op, f"takes {expect} inputs, got {len(types)}")
    for k in range(count):
        if types[k] is None:
            fail(op, f"input {k} is required but was left out")


def broadcast_dims(op: str, *shapes: Sequence) -> tuple:
    """Numpy broadcasting over shapes whose dims may be symbolic (strings)."""
    rank = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(rank):
        dims = [s[len(s) - rank + axis] for s in shapes if len(s) - rank + axis >= 0]
        concrete = {d for d in dims if isinstance(d, int) and d != 1}
        symbolic = {d for d in dims if isinstance(d, str)}
        if len(concrete) > 1:
            fail(op, f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast "
                     f"(axis {axis - rank}: {sorted(concrete)})")
        if concrete:
            result.append(concrete.pop())
        elif len(symbolic) == 1:
            result.append(symbolic.pop())
        elif symbolic:
            fail(op, f"symbolic dims {sorted(symbolic)} cannot be broadcast together")
        else:
            result.append(1)
    return tuple(result)


def static_shape(op: str, t: TensorType, what: str = "input") -> tuple[int, ...]:
    if not t.is_static:
        fail(op, f"{what} shape {t.shape} must be static")
    return t.shape


def check_axis(op: str, axis: int, rank: int) -> int:
    if not isinstance(axis, (int, np.integer)) or not 0 <= axis < rank:
        fail(op, f"axis {axis} must be in [0, {rank}) (non-negative) for a rank-{rank} input")
    return int(axis)


def ints(values, default=None) -> tuple[int, ...] | None:
    """An unpacked FlatBuffer vector (numpy array, list or None) as a tuple of Python ints."""
    if values is None:
        return default
    return tuple(int(v) for v in values)


def floats(values, default=None) -> tuple[float, ...] | None:
    if values is None:
        return default
    return tuple(float(v) for v in values)


def float32_value(x: float) -> float:
    """The value a float attribute reads back as after a trip through a float32 field."""
    return float(np.float32(x))


def require_nhwc(op: str, attrs) -> None:
    if attrs.get("layout", "NCHW") != "NHWC":
        raise ValueError(f"{op}: layout {attrs.get('layout', 'NCHW')!r} cannot be written; the runtime "
                         f"runs NHWC only, so run the to_nhwc pass first")


def layout_of(op: str, attrs) -> str:
    layout = attrs.get("layout", "NCHW")
    if layout not in LAYOUTS:
        fail(op, f"layout {layout!r} is not one of {LAYOUTS}")
    return layout


def no_options(opcode: int):
    """Lowering for ops whose schema entry carries no options table."""
    return lambda attrs: (opcode, OpOptions.NONE, None)


def no_attrs(options) -> dict:
    return {}


def count_elements(types: Sequence[TensorType | None]) -> int:
    return sum(t.size for t in types if t is not None and t.is_static)


def output_elements(in_types, out_types, attrs) -> int:
    return count_elements(out_types)


def zero_flops(in_types, out_types, attrs) -> int:
    return 0


def accumulate_dtype(dtype) -> np.dtype:
    """Floats are accumulated in float64 and rounded once at the end; integers keep their type."""
    return np.dtype(np.float64) if np.dtype(dtype).kind == "f" else np.dtype(dtype)


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise erf in float64 (NumPy has none)."""
    x64 = np.asarray(x, dtype=np.float64)
    return np.frompyfunc(math.erf, 1, 1)(x64).astype(np.float64) if x64.size else x64.copy()


def apply_activation(y: np.ndarray, attrs) -> np.ndarray:
    """Applies attrs["activation"] = (unary op name, alpha, beta) through the unary op's own
    reference, reading alpha/beta the way the runtime's fused activation does (via its lift)."""
    activation = attrs.get("activation")
    if not activation:
        return y
    from converter.ops import OPS
    name, alpha, beta = activation
    if name == "Identity":
        return y
    entry = OPS.get(name)
    if entry is None or entry.opcode != OpCode.UNARY:
        raise ValueError(f"fused activation {name!r} is not a unary op")
    unary_attrs = entry.lift(unary_options(entry.lift_key, alpha, beta))
    return entry.reference([y], unary_attrs)[0]


def unary_options(op: int, alpha: float, beta: float) -> UnaryOptionsT:
    options = UnaryOptionsT()
    options.op, options.alpha, options.beta = int(op), float(alpha), float(beta)
    return options


def lifted_op(opcode: int, options: Any) -> str:
    """The IR op a (opcode, options) pair read from a file stands for: the one OpDef with that
    opcode whose lift_key matches the options' discriminator (BINARY/UNARY/REDUCE: options.op,
    POOL_2D: options.type, SOFTMAX: options.log, LAYER_NORM: options.rms). RESHAPE reads back as Reshape."""
    from converter.ops import OPS
    key = None
    if opcode in (OpCode.BINARY, OpCode.UNARY, OpCode.REDUCE):
        key = int(options.op)
    elif opcode == OpCode.POOL_2D:
        key = int(options.type)
    elif opcode == OpCode.SOFTMAX:
        key = int(bool(options.log))
    elif opcode == OpCode.LAYER_NORM:
        key = int(bool(options.rms))
    for entry in OPS.values():
        if entry.opcode == opcode and entry.lift_key == key:
            return entry.name
    raise ValueError(f"no IR op for opcode {opcode} with options key {key}")


def conv2d_nchw(x, w, bias, strides, dilations, pads, groups):
    """Direct convolution, ONNX Conv semantics: x [N, C, H, W], w [O, C/groups, KH, KW]."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    x_groups = padded.reshape(n, groups, cg, *padded.shape[2:])
    w_groups = w.astype(np.float64).reshape(groups, o // groups, cg, kh, kw)
    y = np.zeros((n, groups, o // groups, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x_groups[..., i * dh: i * dh + sh * (oh - 1) + 1: sh,
                             j * dw: j * dw + sw * (ow - 1) + 1: sw]
            y += np.einsum("ngchw,goc->ngohw", patch, w_groups[:, :, :, i, j])
    y = y.reshape(n, o, oh, ow)
    if bias is not None:
        y += bias.astype(np.float64)[None, :, None, None]
    return y


# ---- when int8 mode may use an op's int8 form (OpDef.int8_condition): (graph, node) -> the
# reason the node stays float, or None ----

INT8_ACTIVATIONS = (None, "Relu", "Relu6", "Clip", "Identity")


def int8_activation_ok(graph, node) -> str | None:
    activation = node.attrs.get("activation")
    name = activation[0] if activation else None
    if name not in INT8_ACTIVATIONS:
        return f"fused activation {name} has no int8 form"
    return None


def conv_residual(node) -> str:
    """A Conv2D's fused residual input (passes.fusion.fuse_residual_add), or "" when it has none."""
    return node.inputs[3] if len(node.inputs) > 3 else ""


def int8_weighted(graph, node) -> str | None:
    if conv_residual(node):
        return "a fused residual (float32 only)"
    if len(node.inputs) < 2 or not graph.is_constant(node.inputs[1]):
        return "weights are variables" if len(node.inputs) > 1 and node.inputs[1] in graph.variables \
            else "weights are not constant"
    if len(node.inputs) > 2 and node.inputs[2] and not graph.is_constant(node.inputs[2]):
        return "bias is not constant"
    return int8_activation_ok(graph, node)


def int8_binary(graph, node) -> str | None:
    if all(graph.is_constant(i) for i in node.inputs):
        return "both operands are constant"
    return int8_activation_ok(graph, node)


def int8_matmul(graph, node) -> str | None:
    if graph.is_constant(node.inputs[0]):
        return "left operand is constant"
    return int8_activation_ok(graph, node)

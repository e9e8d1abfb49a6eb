"""ONNX quantization ops as exact arithmetic, for models whose quantized values are the point.

A model that carries int8/uint8/int16/uint16/int4/uint4/int2/uint2 tensors, or float8/float4 ones,
at its boundary (a graph input or output) asks for those quantized values, not for an
approximation of a float model: its quantization ops are lowered here onto the IR's float32 and
int32 ops, computing what the ONNX definitions (and, where their text leaves a choice, ONNX's
reference implementation) give, bit for bit; float8 and float4 values are a Cast to the type,
travelling as float32. Models with float boundaries keep the quantized-model path
(converter.importers.onnx_quant), which maps QDQ groups and QOperator ops onto the runtime's int8
kernels; only the QuantizeLinear / DequantizeLinear that path cannot take (blocked; 16-, 4- or
2-bit; float8 or float4: ``lowered_exactly``) come here.

The integers travel as int32 inside the graph (the boundary casts, ``BOUNDARY_DTYPES``); every
product of integers is computed in float32, which is exact while every partial sum stays below
2^24 in magnitude. That bound is checked at import from the operands' dtypes, zero points and
constant weights. MatMulInteger and ConvInteger, whose outputs are int32, sum past it in int32
(over slices of the inner dim, or kernel positions, each exact in float32); QLinearMatMul and
QLinearConv, which scale the sum in float, refuse a node that could pass it, naming it.
Convolutions are computed as one 1x1 convolution per kernel position (a plain dot product, never
a Winograd transform, whose fractions would round).

* QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), per tensor, per axis or per
  block; to a float8 or float4 type, x / scale cast to it (rounding to nearest even, saturating
  unless saturate=0; float zero points as ``_float_zero_point_applied`` says).
* DequantizeLinear: (x - zero_point) * scale in float32.
* DynamicQuantizeLinear: onnxruntime's uint8 rule (scale from the range including 0, zero point
  rounded and saturated).
* MatMulInteger, ConvInteger: (a - a_zero_point) x (b - b_zero_point) as int32.
* QLinearMatMul, QLinearConv: the integer product (plus an int32 bias), times
  a_scale * b_scale / y_scale (computed in the scales' own dtype, as the ONNX reference does),
  rounded half to even as the exact product would be (the reference scales in float64; here the
  float32 product's error is computed exactly and decides the ties), plus y_zero_point,
  saturated.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from converter.importers.onnx_builder import NodeContext, NodeInfo, onnx_dtype_name
from converter.importers.onnx_ops import OnnxOp, _pads_2d, _resolve_pads, _spatial_attrs, slice_along

# ONNX integer types a quantized tensor may have here -> (lowest, highest) value.
INTEGER_RANGES = {
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT8: (0, 255),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT32: (-2 ** 31, 2 ** 31 - 1),
    TensorProto.INT4: (-8, 7),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT2: (-2, 1),
    TensorProto.UINT2: (0, 3),
}
# ONNX float types a quantized tensor may have here -> the IR dtype its values are rounded to.
FLOAT_QUANTIZED_TYPES = {
    TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
    TensorProto.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
    TensorProto.FLOAT8E5M2: "float8_e5m2",
    TensorProto.FLOAT8E5M2FNUZ: "float8_e5m2fnuz",
    TensorProto.FLOAT4E2M1: "float4_e2m1fn",
}
# The boundary types that make a model's quantization ops exact arithmetic: the quantized types
# other than int32.
QUANTIZED_BOUNDARY_TYPES = (*(t for t in INTEGER_RANGES if t != TensorProto.INT32), *FLOAT_QUANTIZED_TYPES)
# float32 holds every integer up to this magnitude.
EXACT_LIMIT = 2 ** 24

# Float types computed in float32 inside the graph whose arithmetic ONNX does in the type itself.
_NARROW_FLOATS = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}

EXACT_QUANTIZATION_OPS: dict[str, OnnxOp] = {}


def _exact(*op_types: str, check=None):
    def register(convert):
        for op_type in op_types:
            EXACT_QUANTIZATION_OPS[op_type] = OnnxOp(convert, check)
        return convert
    return register


def computes_exactly(proto: onnx.ModelProto, quantization_ops) -> bool:
    """Whether ``proto``'s quantization ops are lowered here: it has some, and a graph input or
    output of a quantized type (an integer one other than int32, a float8 or float4)."""
    graph = proto.graph
    if not any(n.op_type in quantization_ops for n in graph.node):
        return False
    initializers = {t.name for t in graph.initializer}
    boundary = [v for v in graph.input if v.name not in initializers] + list(graph.output)
    return any(v.type.tensor_type.elem_type in QUANTIZED_BOUNDARY_TYPES for v in boundary)


# The quantized types the int8 path takes (int32 only as a bias or a DequantizeLinear input).
_INT8_PATH_TYPES = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT32)
_BEYOND_INT8_DTYPES = {np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t)) for t in QUANTIZED_BOUNDARY_TYPES
                       if t not in _INT8_PATH_TYPES}


def beyond_int8_path(node: onnx.NodeProto, constant) -> bool:
    """Whether a QuantizeLinear / DequantizeLinear of a quantized float model is beyond the int8
    path: blocked, or of a 16-bit, 4-bit, 2-bit, float8 or float4 type (``constant(name)`` gives a
    constant input's value or None)."""
    if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
        return False
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    output_dtype = attrs.get("output_dtype", 0)
    if attrs.get("block_size", 0):
        return True
    if output_dtype in QUANTIZED_BOUNDARY_TYPES and output_dtype not in _INT8_PATH_TYPES:
        return True
    typed = [node.input[2] if len(node.input) > 2 else ""]
    if node.op_type == "DequantizeLinear":
        typed.append(node.input[0])
    values = [constant(name) for name in typed if name]
    return any(value is not None and value.dtype in _BEYOND_INT8_DTYPES for value in values)


def lowered_exactly(proto: onnx.ModelProto, data_movement_ops) -> frozenset[str]:
    """The first outputs of the quantization nodes of a quantized float model (after its rewrite)
    lowered here: those ``beyond_int8_path`` takes, with every QuantizeLinear and
    DequantizeLinear joined to them through a quantized tensor (directly or through
    ``data_movement_ops``), so both ends of a tensor agree on what its values are."""
    graph = proto.graph
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                values[node.output[0]] = value

    def constant(name):
        tensor = values.get(name)
        return None if tensor is None else onnx.numpy_helper.to_array(tensor)

    quantization = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                    and n.domain in ("", "ai.onnx")]
    pending = [n for n in quantization if beyond_int8_path(n, constant)]
    if not pending:
        return frozenset()
    producer = {o: n for n in graph.node for o in n.output if o}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    chosen: dict[str, onnx.NodeProto] = {}
    while pending:
        node = pending.pop()
        if node.output[0] in chosen:
            continue
        chosen[node.output[0]] = node
        # the quantized tensor: a QuantizeLinear's output, a DequantizeLinear's input
        front = [node.output[0]] if node.op_type == "QuantizeLinear" else []
        back = [node.input[0]] if node.op_type == "DequantizeLinear" else []
        while front:
            for user in consumers.get(front.pop(), []):
                if user.op_type == "DequantizeLinear":
                    pending.append(user)
                elif user.op_type in data_movement_ops:
                    front.append(user.output[0])
        while back:
            source = producer.get(back.pop())
            if source is None:
                continue
            if source.op_type == "QuantizeLinear":
                pending.append(source)
            elif source.op_type in data_movement_ops and source.input:
                back.append(source.input[0])
    return frozenset(chosen)


def onnx_elem_types(proto: onnx.ModelProto) -> dict[str, int]:
    """ONNX tensor name -> element type, as declared or inferred (the IR's int32 hides which
    integer type a tensor had)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # noqa: BLE001 - inference only adds types; the declared ones stay
        inferred = proto
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.value_info, *graph.input, *graph.output] if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    return types


# ---------------------------------------------------------------- helpers

def _elem_type(ctx: NodeContext, index: int) -> int | None:
    name = ctx.node.input[index] if index < len(ctx.node.input) else ""
    return ctx.builder.onnx_types.get(name) if name else None


def _integer_range(ctx: NodeContext, elem: int | None, what: str) -> tuple[int, int]:
    if elem not in INTEGER_RANGES:
        shown = "unknown" if elem is None else onnx_dtype_name(elem)
        raise ctx.unsupported(f"{what} of dtype {shown} (int8, uint8, int16, uint16, int32, int4, uint4, int2 "
                              f"and uint2 are computed exactly)")
    return INTEGER_RANGES[elem]


def _float(ctx: NodeContext, name: str) -> str:
    return name if ctx.type(name).dtype == "float32" else ctx.emit1("Cast", [name], {"to": "float32"})


def _along(ctx: NodeContext, name: str, rank: int, axis: int, block_size: int = 0, size: int = 0) -> str:
    """A scale or zero point shaped to broadcast against a rank-``rank`` tensor: a scalar (or one
    value) as it is, a 1-D tensor along ``axis``, a blocked one (same rank, ``block_size`` values
    of the tensor per entry along ``axis``) repeated out to ``size`` there."""
    shape = ctx.shape(name)
    if block_size:
        if len(shape) != rank:
            raise ctx.error(f"blocked scale {list(shape)} must have the input's rank {rank}")
        blocks = shape[axis]
        expanded = ctx.reshape(name, shape[:axis + 1] + (1,) + shape[axis + 1:])
        wide = shape[:axis + 1] + (block_size,) + shape[axis + 1:]
        tiled = ctx.emit1("BroadcastTo", [expanded], {"shape": wide})
        flat = ctx.reshape(tiled, shape[:axis] + (blocks * block_size,) + shape[axis + 1:])
        if blocks * block_size == size:
            return flat
        ends = shape[:axis] + (size,) + shape[axis + 1:]
        return ctx.emit1("Slice", [flat], {"starts": (0,) * rank, "ends": ends, "steps": (1,) * rank})
    count = int(np.prod(shape, dtype=np.int64))
    if count == 1 or not shape:
        return name if not shape else ctx.reshape(name, ())
    if len(shape) != 1:
        raise ctx.error(f"scale or zero point {list(shape)} must be a scalar or 1-D")
    target = [1] * rank
    target[axis] = count
    return ctx.reshape(name, target)


def _shifted(ctx: NodeContext, index: int, zero_index: int, what: str, axis: int | None = None
             ) -> tuple[str, int]:
    """(input ``index`` minus its zero point, as float32; the largest magnitude it can take)."""
    low, high = _integer_range(ctx, _elem_type(ctx, index), what)
    x = _float(ctx, ctx.input(index))
    zero_name = ctx.input(zero_index)
    if not zero_name:
        return x, max(-low, high)
    zero_value = ctx.const(zero_name)
    bound = (int(max(np.max(high - zero_value), np.max(zero_value - low))) if zero_value is not None
             else high - low)
    rank = ctx.rank(index)
    zero = _along(ctx, _float(ctx, zero_name), rank, rank - 1 if axis is None else axis)
    return ctx.emit1("Sub", [x, zero]), bound


def _saturate_to(ctx: NodeContext, value: str, low: int, high: int, output: str) -> None:
    """round_half_even(value), saturated to [low, high], written as int32 to ``output``."""
    rounded = ctx.emit1("Round", [value])
    clipped = ctx.emit1("Clip", [rounded], {"min": float(low), "max": float(high)})
    ctx.emit("Cast", [clipped], {"to": "int32"}, [output])


def _check_exact(ctx: NodeContext, bound: float, what: str) -> None:
    if bound >= EXACT_LIMIT:
        raise ctx.unsupported(f"{what} can reach {int(bound)}, past 2^24 where float32 products stop being "
                              f"exact integers")


def _quantized_output_type(ctx: NodeContext, zero_index: int) -> int:
    elem = _elem_type(ctx, zero_index) if ctx.input(zero_index) else None
    return elem or ctx.attr("output_dtype", 0) or TensorProto.UINT8


def _scale_product(ctx: NodeContext, a_index: int, b_index: int, y_index: int) -> str:
    """a_scale * b_scale / y_scale in the scales' own dtype (a float16 product rounds to float16
    twice, as the reference computes it), as float32."""
    names = [ctx.node.input[i] for i in (a_index, b_index, y_index)]
    raw = [_raw_initializer(ctx, n) for n in names]
    if all(r is not None for r in raw):
        with np.errstate(all="ignore"):
            product = raw[0] * raw[1] / raw[2]
        return ctx.constant(np.asarray(product, np.float32), base="multiplier")
    half = any(_elem_type(ctx, i) == TensorProto.FLOAT16 for i in (a_index, b_index, y_index))
    a, b, y = (_float(ctx, ctx.input(i)) for i in (a_index, b_index, y_index))

    def rounded(name):
        return ctx.emit1("Cast", [ctx.emit1("Cast", [name], {"to": "float16"})], {"to": "float32"}) if half else name
    return rounded(ctx.emit1("Div", [rounded(ctx.emit1("Mul", [a, b])), y]))


def _raw_initializer(ctx: NodeContext, name: str) -> np.ndarray | None:
    tensor = ctx.builder._initializers.get(name)
    if tensor is not None:
        return onnx.numpy_helper.to_array(tensor)
    value = ctx.builder.constants.get(ctx.builder.aliases.get(name, name))
    return None if value is None else np.asarray(value, np.float32)


# ---------------------------------------------------------------- Q / DQ

# ONNX's definitions keep the zero point in their formulas for the float types while saying it is
# "usually not used"; its reference implementation, which made the backend suite's outputs, adds a
# float4 zero point in QuantizeLinear and otherwise leaves float zero points out. Those are what is
# computed here; a constant zero point the two readings would give different results for (a nonzero
# one) is refused.
def _float_zero_point_applied(op_type: str, dtype: str) -> bool:
    return op_type == "QuantizeLinear" and dtype == "float4_e2m1fn"


def _check_float_zero_point(info: NodeInfo) -> list[str]:
    zero = info.static(2) if info.input(2) else None
    if zero is None or zero.dtype.name not in FLOAT_QUANTIZED_TYPES.values():
        return []
    if _float_zero_point_applied(info.op_type, zero.dtype.name) or not np.any(zero.astype(np.float32)):
        return []
    return [f"nonzero {zero.dtype.name} zero point (ONNX's formula applies it, its reference implementation "
            f"leaves it out)"]


def refused_precision(info: NodeInfo) -> list[str]:
    """A QuantizeLinear's precision attribute other than float32, which neither lowering takes."""
    if info.attr("precision", 0) not in (0, TensorProto.FLOAT):
        return [f"precision={onnx_dtype_name(info.attr('precision'))}"]
    return []


def _check_quantize(info: NodeInfo) -> list[str]:
    return refused_precision(info) + _check_float_zero_point(info)


def _to_float_grid(ctx: NodeContext, value: str, dtype: str, zero: str | None) -> None:
    """``value`` (plus ``zero``) rounded to the nearest ``dtype`` value, ties to even (saturating
    past the largest finite one unless the node says saturate=0, which only float8 types read),
    written as float32 to the node's output."""
    if zero is not None:
        value = ctx.emit1("Add", [value, zero])
    attrs = {"to": dtype}
    if dtype.startswith("float8_") and not ctx.attr("saturate", 1):
        attrs["saturate"] = False
    ctx.emit("Cast", [ctx.emit1("Cast", [value], attrs)], {"to": "float32"}, [ctx.output(0)])


@_exact("QuantizeLinear", check=_check_quantize)
def _quantize_linear(ctx: NodeContext):
    rank = ctx.rank(0)
    axis = int(ctx.attr("axis", 1)) % max(rank, 1)
    block_size = int(ctx.attr("block_size", 0))
    output_type = _quantized_output_type(ctx, 2)
    float_type = FLOAT_QUANTIZED_TYPES.get(output_type)
    if float_type is None:
        low, high = _integer_range(ctx, output_type, "output")
    size = ctx.shape(0)[axis] if rank else 1
    scale = _along(ctx, _float(ctx, ctx.input(1)), rank, axis, block_size, size)
    quotient = ctx.emit1("Div", [_float(ctx, ctx.input(0)), scale])
    narrow = _NARROW_FLOATS.get(_elem_type(ctx, 0))
    if narrow and _elem_type(ctx, 1) == _elem_type(ctx, 0):
        # ONNX divides in the inputs' own type; the float32 quotient rounded to it is that quotient
        # (24 bits are enough for float16's and bfloat16's division to round once).
        quotient = _float(ctx, ctx.emit1("Cast", [quotient], {"to": narrow}))
    zero = (_along(ctx, _float(ctx, ctx.input(2)), rank, axis, block_size, size) if ctx.input(2) else None)
    if float_type is not None:
        _to_float_grid(ctx, quotient, float_type,
                       zero if _float_zero_point_applied("QuantizeLinear", float_type) else None)
        return
    value = ctx.emit1("Round", [quotient])
    if zero is not None:
        value = ctx.emit1("Add", [value, zero])
    _saturate_to(ctx, value, low, high, ctx.output(0))


@_exact("DequantizeLinear", check=_check_float_zero_point)
def _dequantize_linear(ctx: NodeContext):
    rank = ctx.rank(0)
    axis = int(ctx.attr("axis", 1)) % max(rank, 1)
    block_size = int(ctx.attr("block_size", 0))
    elem = _elem_type(ctx, 0)
    if elem not in FLOAT_QUANTIZED_TYPES:
        _integer_range(ctx, elem, "input")
    size = ctx.shape(0)[axis] if rank else 1
    x = _float(ctx, ctx.input(0))
    if ctx.input(2) and elem not in FLOAT_QUANTIZED_TYPES:
        x = ctx.emit1("Sub", [x, _along(ctx, _float(ctx, ctx.input(2)), rank, axis, block_size, size)])
    scale = _along(ctx, _float(ctx, ctx.input(1)), rank, axis, block_size, size)
    narrow = _NARROW_FLOATS.get(ctx.attr("output_dtype", 0) or _elem_type(ctx, 1))
    if narrow is None:
        ctx.emit("Mul", [x, scale], {}, [ctx.output(0)])
        return
    # A float16 or bfloat16 output: the float32 product rounded to it, as ONNX's reference computes it.
    product = ctx.emit1("Mul", [x, scale])
    ctx.emit("Cast", [ctx.emit1("Cast", [product], {"to": narrow})], {"to": "float32"}, [ctx.output(0)])


@_exact("DynamicQuantizeLinear")
def _dynamic_quantize_linear(ctx: NodeContext):
    x = _float(ctx, ctx.input(0))
    axes = tuple(range(ctx.rank(0)))
    zero = ctx.constant(np.float32(0))
    highest = ctx.emit1("Max", [ctx.emit1("ReduceMax", [x], {"axes": axes, "keepdims": False}), zero])
    lowest = ctx.emit1("Min", [ctx.emit1("ReduceMin", [x], {"axes": axes, "keepdims": False}), zero])
    span = ctx.emit1("Sub", [highest, lowest])
    empty = ctx.emit1("Equal", [highest, lowest])
    span = ctx.emit1("Where", [empty, ctx.constant(np.float32(1)), span])
    scale = ctx.emit1("Div", [span, ctx.constant(np.float32(255))], output=ctx.output(1) or None)
    start = ctx.emit1("Sub", [zero, ctx.emit1("Div", [lowest, scale])])
    zero_point = ctx.emit1("Round", [ctx.emit1("Clip", [start], {"min": 0.0, "max": 255.0})])
    if ctx.output(2):
        ctx.emit("Cast", [zero_point], {"to": "int32"}, [ctx.output(2)])
    value = ctx.emit1("Add", [ctx.emit1("Round", [ctx.emit1("Div", [x, scale])]), zero_point])
    _saturate_to(ctx, value, 0, 255, ctx.output(0))


# ---------------------------------------------------------------- integer products

def _matmul_product(ctx: NodeContext, a_index: int, a_zero: int, b_index: int, b_zero: int, as_int32: bool = False
                    ) -> str:
    """(a - a_zero) @ (b - b_zero): as float32 holding exact integers, or with ``as_int32`` as int32,
    whose sum may then pass 2^24 (it is summed in int32 over slices of the inner dim each exact in
    float32; int32 wraps as the ONNX reference's does)."""
    if ctx.rank(a_index) < 2 or ctx.rank(b_index) < 2:
        raise ctx.unsupported("rank-1 operand")
    # A 1-D zero point is per row of a and per column of b.
    a, a_bound = _shifted(ctx, a_index, a_zero, "input a", axis=ctx.rank(a_index) - 2)
    b, b_bound = _shifted(ctx, b_index, b_zero, "input b", axis=ctx.rank(b_index) - 1)
    depth = ctx.shape(a_index)[-1]
    b_value = ctx.const(b)
    if b_value is not None:
        bound = a_bound * float(np.max(np.sum(np.abs(b_value.astype(np.float64)), axis=-2), initial=0))
    else:
        bound = float(a_bound) * b_bound * depth
    attrs = {"transpose_a": False, "transpose_b": False}
    if bound < EXACT_LIMIT:
        product = ctx.emit1("BatchMatMul", [a, b], attrs)
        return ctx.emit1("Cast", [product], {"to": "int32"}) if as_int32 else product
    step = (EXACT_LIMIT - 1) // max(a_bound * b_bound, 1)
    if not as_int32 or step < 1:
        _check_exact(ctx, bound, "the integer product")
    total = None
    for start in range(0, depth, step):
        end = min(depth, start + step)
        a_part = slice_along(ctx, a, -1, start, end)
        b_part = slice_along(ctx, b, -2, start, end)
        part = ctx.emit1("Cast", [ctx.emit1("BatchMatMul", [a_part, b_part], attrs)], {"to": "int32"})
        total = part if total is None else ctx.emit1("Add", [total, part])
    return total


def _conv_product(ctx: NodeContext, x_zero: int, w_index: int, w_zero: int, as_int32: bool = False
                  ) -> tuple[str, float]:
    """The 2-D convolution of (x - x_zero) with (w - w_zero), one 1x1 convolution per kernel
    position summed; as float32 holding exact integers, or with ``as_int32`` as int32, whose sum
    may then pass 2^24 (each position's exact in float32, summed in int32). Also the largest
    magnitude the sum can take."""
    if ctx.rank(0) != 4:
        raise ctx.unsupported(f"{ctx.rank(0) - 2} spatial dims (2-D convolutions are computed exactly)")
    x, x_bound = _shifted(ctx, 0, x_zero, "input", axis=1)
    w, _ = _shifted(ctx, w_index, w_zero, "weights", axis=0)
    weights = ctx.const(w)
    if weights is None:
        raise ctx.unsupported("weights computed at run time")
    magnitudes = np.abs(weights.astype(np.float64))
    bound = x_bound * float(np.max(np.sum(magnitudes, axis=(1, 2, 3)), initial=0))
    in_int32 = bound >= EXACT_LIMIT
    if in_int32:
        tap_bound = x_bound * float(np.max(np.sum(magnitudes, axis=1), initial=0))
        _check_exact(ctx, bound if not as_int32 else tap_bound, "the integer convolution")
    kernel = list(ctx.attr("kernel_shape", weights.shape[2:]))
    strides, dilations = _spatial_attrs(ctx, kernel)
    top, left, bottom, right = _pads_2d(_resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations))
    if top or left or bottom or right:
        x = ctx.emit1("Pad", [x], {"mode": "constant", "pads": (0, 0, top, left, 0, 0, bottom, right), "value": 0.0})
    n, c, height, width = ctx.shape(x)
    out_h = (height - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    out_w = (width - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    if out_h < 1 or out_w < 1:
        raise ctx.error(f"kernel {kernel} does not fit the padded {height}x{width} input")
    attrs = {"strides": (1, 1), "dilations": (1, 1), "pads": (0, 0, 0, 0), "groups": int(ctx.attr("group", 1)),
             "layout": "NCHW"}
    total = None
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top_row, left_column = i * dilations[0], j * dilations[1]
            window = ctx.emit1("Slice", [x], {
                "starts": (0, 0, top_row, left_column),
                "ends": (n, c, top_row + (out_h - 1) * strides[0] + 1, left_column + (out_w - 1) * strides[1] + 1),
                "steps": (1, 1, strides[0], strides[1])})
            tap = ctx.constant(np.ascontiguousarray(weights[:, :, i:i + 1, j:j + 1], np.float32), base=f"tap{i}_{j}")
            part = ctx.emit1("Conv2D", [window, tap, ""], attrs)
            if in_int32:
                part = ctx.emit1("Cast", [part], {"to": "int32"})
            total = part if total is None else ctx.emit1("Add", [total, part])
    if as_int32 and not in_int32:
        total = ctx.emit1("Cast", [total], {"to": "int32"})
    return total, bound


@_exact("MatMulInteger")
def _matmul_integer(ctx: NodeContext):
    ctx.copy_to(_matmul_product(ctx, 0, 2, 1, 3, as_int32=True), ctx.output(0))


@_exact("ConvInteger")
def _conv_integer(ctx: NodeContext):
    ctx.copy_to(_conv_product(ctx, 2, 1, 3, as_int32=True)[0], ctx.output(0))


def _split(ctx: NodeContext, name: str, factor: float) -> tuple[str, str]:
    """(high, low) halves of a float32 tensor, high + low exact, each with at most 12 significant
    bits (Veltkamp's split), so any product of two halves is exact in float32."""
    scaled = ctx.emit1("Mul", [name, ctx.constant(np.float32(factor))])
    high = ctx.emit1("Sub", [scaled, ctx.emit1("Sub", [scaled, name])])
    return high, ctx.emit1("Sub", [name, high])


def _rounded_product(ctx: NodeContext, product: str, multiplier: str) -> str:
    """round_half_even(product * multiplier) computed on the exact product, as the reference does
    in float64: the float32 product p is off by an error e that Dekker's two-product gives
    exactly. Only where p is itself a half-integer can e move the result (elsewhere the nearest
    half-integer is at least one ulp of p away, and |e| is at most half of one), and then it goes
    to the side e points to."""
    rounded_product = ctx.emit1("Mul", [product, multiplier])
    # product is an integer below 2^24 in magnitude; multiplier any float32.
    a_high, a_low = _split(ctx, product, 4097.0)
    m_high, m_low = _split(ctx, multiplier, 4097.0)
    error = ctx.emit1("Sub", [ctx.emit1("Mul", [a_high, m_high]), rounded_product])
    error = ctx.emit1("Add", [error, ctx.emit1("Mul", [a_high, m_low])])
    error = ctx.emit1("Add", [error, ctx.emit1("Mul", [a_low, m_high])])
    error = ctx.emit1("Add", [error, ctx.emit1("Mul", [a_low, m_low])])
    nearest = ctx.emit1("Round", [rounded_product])
    half = ctx.constant(np.float32(0.5))
    tie = ctx.emit1("Equal", [ctx.emit1("Abs", [ctx.emit1("Sub", [rounded_product, nearest])]), half])
    zero = ctx.constant(np.float32(0))
    up = ctx.emit1("Add", [rounded_product, half])
    down = ctx.emit1("Sub", [rounded_product, half])
    moved = ctx.emit1("Where", [ctx.emit1("Greater", [error, zero]), up,
                                ctx.emit1("Where", [ctx.emit1("Less", [error, zero]), down, nearest])])
    return ctx.emit1("Where", [tie, moved, nearest])


def _requantize(ctx: NodeContext, product: str, multiplier: str, zero_index: int, like_index: int) -> None:
    """round_half_even(product * multiplier + y_zero_point), saturated to the output's type."""
    elem = _elem_type(ctx, zero_index) if ctx.input(zero_index) else _elem_type(ctx, like_index)
    low, high = _integer_range(ctx, elem, "output")
    value = _rounded_product(ctx, product, multiplier)
    if ctx.input(zero_index):
        value = ctx.emit1("Add", [value, _along(ctx, _float(ctx, ctx.input(zero_index)), ctx.rank(value), 0)])
    _saturate_to(ctx, value, low, high, ctx.output(0))


@_exact("QLinearMatMul")
def _qlinear_matmul(ctx: NodeContext):
    product = _matmul_product(ctx, 0, 2, 3, 5)
    multiplier = _scale_product(ctx, 1, 4, 6)
    rank = ctx.rank(product)
    _requantize(ctx, product, _along(ctx, multiplier, rank, rank - 1), 7, 0)


@_exact("QLinearConv")
def _qlinear_conv(ctx: NodeContext):
    product, bound = _conv_product(ctx, 2, 3, 5)
    if ctx.input(8):
        bias = ctx.const(8)
        if bias is None:
            raise ctx.unsupported("bias computed at run time")
        _check_exact(ctx, bound + float(np.max(np.abs(bias.astype(np.float64)), initial=0)), "the biased product")
        product = ctx.emit1("Add", [product, ctx.constant(bias.astype(np.float32).reshape(-1, 1, 1), base="bias")])
    multiplier = _along(ctx, _scale_product(ctx, 1, 4, 6), 4, 1)
    _requantize(ctx, product, multiplier, 7, 0)

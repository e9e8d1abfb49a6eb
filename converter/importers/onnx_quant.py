"""Already-quantized ONNX models -> the IR's int8 and dynamic ops.

What onnxruntime's quantizer writes, and how it arrives in the IR:

* QOperator format (QLinearConv, QLinearMatMul, and the com.microsoft QGemm, QLinearAdd,
  QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat) maps op for op onto the
  IR's int8 ops: the same op names as float (Conv2D, FullyConnected, Add, ...), int8 tensors, and
  the scales and zero points in ``Graph.quantization``.
* QDQ format (DequantizeLinear -> float op -> QuantizeLinear) is first rewritten on the ONNX graph
  into the QOperator op that computes the same thing (``QDQ_RULES``, one rule per float op); what no
  rule takes stays a Dequantize / float op / Quantize chain, which is exact too, only slower.
* quantize_dynamic's DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul(scales)
  becomes the IR's dynamic FullyConnected / Conv2D (float activations, int8 weights). That is
  our dynamic arithmetic (symmetric per-row int8 activations), not onnxruntime's (asymmetric uint8
  per tensor): both approximate the same float op. Integer ops outside that pattern are refused,
  listing each one.

uint8 tensors become int8 exactly: q - 128 with zero point zp - 128. Weights must fit the
runtime's symmetric int8 range: w - zp_w in [-127, 127] (checked on the values). Biases stay int32
with scale s_x * s_w[c], as the int8 kernels read them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError
from converter.importers.onnx_builder import NodeContext, NodeInfo
from converter.importers.onnx_ops import (
    OnnxOp, _pads_2d, _resolve_pads, _spatial_attrs, _to_2d, converts)
from converter.importers.onnx_quant_exact import beyond_int8_path, refused_precision
from converter.ir import Graph, Quantization
from converter.quantize.params import BIAS_LIMIT

MS_DOMAIN = "com.microsoft"
# Ops the QDQ and dynamic rewrites create that have no standard ONNX name.
EDGE_DOMAIN = "ai.edgesplit.quantized"
QUANTIZED_ELEM_TYPES = (TensorProto.INT8, TensorProto.UINT8)
# ONNX ops that only move values: on a quantized tensor they run on the int8 values, and their
# output keeps the input's params (the IR passes carry them along, converter.passes._edit).
DATA_MOVEMENT_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                     "Slice", "Gather", "Split", "DepthToSpace", "SpaceToDepth", "Shape", "Size")
WEIGHT_LIMIT = 127

# (domain, op type) -> converter, for the ops outside the default ONNX domain.
DOMAIN_OPS: dict[tuple[str, str], OnnxOp] = {}


def _domain_op(domain: str, *op_types: str):
    def register(convert):
        for op_type in op_types:
            DOMAIN_OPS[domain, op_type] = OnnxOp(convert)
        return convert
    return register


def accepts_quantized(node: onnx.NodeProto) -> bool:
    """Whether ``node`` may read or write int8/uint8 tensors (the support scan's dtype check)."""
    if node.domain not in ("", "ai.onnx"):
        return (node.domain, node.op_type) in DOMAIN_OPS
    return node.op_type in QUANTIZATION_OPS or node.op_type in DATA_MOVEMENT_OPS


# =============================================================== 1. rewrites on the ONNX graph

class OnnxView:
    """The nodes of an ONNX graph being rewritten (a Python list of owned copies, written back
    once at the end), with their producers, consumers and the constant values."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            self.nodes.append(copy)
        self.values = {t.name: t for t in graph.initializer}
        self.outputs = {o.name for o in graph.output}
        self.refresh()

    def refresh(self):
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def write_back(self) -> None:
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name, k = base, 1
        while name in self.values or name in self.producer:
            name, k = f"{base}_{k}", k + 1
        tensor = numpy_helper.from_array(np.asarray(value), name)
        self.graph.initializer.append(tensor)
        self.values[name] = tensor
        return name

    def const(self, name: str) -> np.ndarray | None:
        tensor = self.values.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def made_by(self, name: str, op_type: str) -> onnx.NodeProto | None:
        node = self.producer.get(name)
        return node if node is not None and node.op_type == op_type and node.domain in ("", "ai.onnx") else None

    def sole_consumer(self, name: str, op_types) -> onnx.NodeProto | None:
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.outputs or users[0].op_type not in op_types:
            return None
        return users[0]

    def dq_input(self, name: str) -> onnx.NodeProto | None:
        """The DequantizeLinear producing ``name`` from an int8/uint8 tensor, else None."""
        node = self.made_by(name, "DequantizeLinear")
        if node is None or beyond_int8_path(node, self.const):
            return None
        return node


def _attr(node: onnx.NodeProto, key: str, default=None):
    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _qdq_triple(dq: onnx.NodeProto) -> list[str]:
    """(quantized tensor, scale, zero point) of a DequantizeLinear, as QOperator inputs."""
    return [dq.input[0], dq.input[1], dq.input[2] if len(dq.input) > 2 else ""]


@dataclass
class Output:
    """Where a QDQ group ends: the QuantizeLinear, and a Relu/Clip between op and it, if any."""
    quantize: onnx.NodeProto
    activation: onnx.NodeProto | None


def _output_quantize(view: OnnxView, name: str, allow_activation: bool) -> Output | None:
    q = view.sole_consumer(name, ("QuantizeLinear",))
    if q is not None:
        return None if beyond_int8_path(q, view.const) else Output(q, None)
    if not allow_activation:
        return None
    act = view.sole_consumer(name, ("Relu", "Clip"))
    if act is None:
        return None
    q = view.sole_consumer(act.output[0], ("QuantizeLinear",))
    return Output(q, act) if q is not None and not beyond_int8_path(q, view.const) else None


def _activation_attrs(view: OnnxView, act: onnx.NodeProto | None) -> list[onnx.AttributeProto]:
    """A Relu/Clip folded into the rewritten op, as attribute ``edge_activation`` (min, max)."""
    if act is None:
        return []
    if act.op_type == "Relu":
        low, high = 0.0, math.inf
    else:
        low_value = view.const(act.input[1]) if len(act.input) > 1 and act.input[1] else None
        high_value = view.const(act.input[2]) if len(act.input) > 2 and act.input[2] else None
        if (len(act.input) > 1 and act.input[1] and low_value is None) or \
                (len(act.input) > 2 and act.input[2] and high_value is None):
            return None
        low = float(low_value) if low_value is not None else float(_attr(act, "min", -math.inf))
        high = float(high_value) if high_value is not None else float(_attr(act, "max", math.inf))
    return [helper.make_attribute("edge_activation", [low, high])]


def _replace(view: OnnxView, removed: list[onnx.NodeProto], new: onnx.NodeProto, at: onnx.NodeProto):
    """Puts ``new`` where ``at`` is and drops ``removed`` (``at`` among them)."""
    index = next(i for i, n in enumerate(view.nodes) if n is at)
    drop = {id(n) for n in removed}
    kept = view.nodes[:index] + [new] + view.nodes[index + 1:]
    view.nodes = [n for n in kept if id(n) not in drop]
    view.refresh()


def _rewrite_group(view: OnnxView, node: onnx.NodeProto, op_type: str, domain: str, inputs: list[str],
                   out: Output, attrs: list[onnx.AttributeProto]) -> bool:
    new = helper.make_node(op_type, inputs, [out.quantize.output[0]], name=node.name or out.quantize.name,
                           domain=domain)
    new.attribute.extend(attrs)
    removed = [node, out.quantize] + ([out.activation] if out.activation is not None else [])
    _replace(view, removed, new, out.quantize)
    return True


def _output_triple(q: onnx.NodeProto) -> list[str]:
    return [q.input[1], q.input[2] if len(q.input) > 2 else ""]


def _copy_attrs(node: onnx.NodeProto, skip=()) -> list[onnx.AttributeProto]:
    return [a for a in node.attribute if a.name not in skip]


def _qdq_conv(view: OnnxView, node: onnx.NodeProto) -> bool:
    x, w = view.dq_input(node.input[0]), view.dq_input(node.input[1])
    if x is None or w is None or view.const(w.input[0]) is None:
        return False
    bias = ""
    if len(node.input) > 2 and node.input[2]:
        b = view.dq_input(node.input[2])
        if b is None or view.const(b.input[0]) is None or view.const(b.input[0]).dtype != np.int32:
            return False
        bias = b.input[0]
    out = _output_quantize(view, node.output[0], allow_activation=True)
    if out is None:
        return False
    activation = _activation_attrs(view, out.activation)
    if activation is None:
        return False
    inputs = _qdq_triple(x) + _qdq_triple(w) + _output_triple(out.quantize) + ([bias] if bias else [])
    return _rewrite_group(view, node, "QLinearConv", "", inputs, out, _copy_attrs(node) + activation)


def _qdq_matmul(view: OnnxView, node: onnx.NodeProto) -> bool:
    a, b = view.dq_input(node.input[0]), view.dq_input(node.input[1])
    if a is None or b is None:
        return False
    out = _output_quantize(view, node.output[0], allow_activation=True)
    if out is None:
        return False
    activation = _activation_attrs(view, out.activation)
    if activation is None:
        return False
    inputs = _qdq_triple(a) + _qdq_triple(b) + _output_triple(out.quantize)
    return _rewrite_group(view, node, "QLinearMatMul", "", inputs, out, activation)


def _qdq_gemm(view: OnnxView, node: onnx.NodeProto) -> bool:
    a, b = view.dq_input(node.input[0]), view.dq_input(node.input[1])
    if a is None or b is None or view.const(b.input[0]) is None or _attr(node, "beta", 1.0) != 1.0:
        return False
    bias = ""
    if len(node.input) > 2 and node.input[2]:
        c = view.dq_input(node.input[2])
        if c is None or view.const(c.input[0]) is None or view.const(c.input[0]).dtype != np.int32:
            return False
        bias = c.input[0]
    out = _output_quantize(view, node.output[0], allow_activation=True)
    if out is None:
        return False
    activation = _activation_attrs(view, out.activation)
    if activation is None:
        return False
    inputs = _qdq_triple(a) + _qdq_triple(b) + [bias] + _output_triple(out.quantize)
    return _rewrite_group(view, node, "QGemm", MS_DOMAIN, inputs, out, _copy_attrs(node) + activation)


def _qdq_binary(op_type: str):
    def rule(view: OnnxView, node: onnx.NodeProto) -> bool:
        a, b = view.dq_input(node.input[0]), view.dq_input(node.input[1])
        if a is None or b is None:
            return False
        out = _output_quantize(view, node.output[0], allow_activation=True)
        if out is None:
            return False
        activation = _activation_attrs(view, out.activation)
        if activation is None:
            return False
        inputs = _qdq_triple(a) + _qdq_triple(b) + _output_triple(out.quantize)
        return _rewrite_group(view, node, op_type, MS_DOMAIN, inputs, out, activation)
    return rule


def _qdq_unary(op_type: str):
    def rule(view: OnnxView, node: onnx.NodeProto) -> bool:
        x = view.dq_input(node.input[0])
        out = _output_quantize(view, node.output[0], allow_activation=False) if x is not None else None
        if out is None:
            return False
        attrs = _copy_attrs(node)
        if op_type == "QLinearGlobalAveragePool":
            attrs = [helper.make_attribute("channels_last", 0)]
        return _rewrite_group(view, node, op_type, MS_DOMAIN, _qdq_triple(x) + _output_triple(out.quantize),
                              out, attrs)
    return rule


def _qdq_concat(view: OnnxView, node: onnx.NodeProto) -> bool:
    sources = [view.dq_input(name) for name in node.input]
    out = _output_quantize(view, node.output[0], allow_activation=False)
    if out is None or any(s is None for s in sources):
        return False
    inputs = _output_triple(out.quantize) + [name for s in sources for name in _qdq_triple(s)]
    return _rewrite_group(view, node, "QLinearConcat", MS_DOMAIN, inputs, out, _copy_attrs(node))


def _same_params(view: OnnxView, dq: onnx.NodeProto, q: onnx.NodeProto) -> bool:
    """Whether a DequantizeLinear and a QuantizeLinear use the same scale and zero point values."""
    a, b = _qdq_triple(dq)[1:], _output_triple(q)
    if a == b:
        return True
    values = [view.const(n) if n else None for n in a + b]
    if any(v is None for v in values):
        return False
    return (np.array_equal(values[0], values[2]) and np.array_equal(values[1], values[3])
            and values[1].dtype == values[3].dtype)


def _qdq_data_movement(view: OnnxView, node: onnx.NodeProto) -> bool:
    """DQ -> MaxPool/Reshape/... -> Q with equal params: the op runs on the int8 values."""
    x = view.dq_input(node.input[0])
    out = _output_quantize(view, node.output[0], allow_activation=False) if x is not None else None
    if out is None or not _same_params(view, x, out.quantize):
        return False
    new = helper.make_node(node.op_type, [x.input[0]] + list(node.input[1:]), [out.quantize.output[0]],
                           name=node.name or out.quantize.name)
    new.attribute.extend(node.attribute)
    _replace(view, [node, out.quantize], new, out.quantize)
    return True


# float op -> the rule that turns its QDQ group into one quantized op (False: left as it is).
QDQ_RULES: dict[str, Callable[[OnnxView, onnx.NodeProto], bool]] = {
    "Conv": _qdq_conv,
    "MatMul": _qdq_matmul,
    "Gemm": _qdq_gemm,
    "Add": _qdq_binary("QLinearAdd"),
    "Mul": _qdq_binary("QLinearMul"),
    "GlobalAveragePool": _qdq_unary("QLinearGlobalAveragePool"),
    "AveragePool": _qdq_unary("QLinearAveragePool"),
    "Concat": _qdq_concat,
    **{op: _qdq_data_movement for op in ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze",
                                          "Unsqueeze")},
}


def _dynamic_group(view: OnnxView, node: onnx.NodeProto) -> bool:
    """DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast(float) -> Mul(x_scale * w_scale)
    (quantize_dynamic's pattern) -> one DynamicMatMul / DynamicConv(x, W, w_scale, w_zero_point)."""
    dql = view.made_by(node.input[0], "DynamicQuantizeLinear")
    if dql is None or view.const(node.input[1]) is None:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] != dql.output[2]:
        return False
    w_zero_point = node.input[3] if len(node.input) > 3 else ""
    if w_zero_point and view.const(w_zero_point) is None:
        return False
    cast = view.sole_consumer(node.output[0], ("Cast",))
    if cast is None or _attr(cast, "to") != TensorProto.FLOAT:
        return False
    mul = view.sole_consumer(cast.output[0], ("Mul",))
    if mul is None:
        return False
    scale = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
    product = view.made_by(scale, "Mul")
    if product is None or dql.output[1] not in product.input:
        return False
    w_scale = product.input[1] if product.input[0] == dql.output[1] else product.input[0]
    if view.const(w_scale) is None:
        return False
    op_type = "DynamicMatMul" if node.op_type == "MatMulInteger" else "DynamicConv"
    new = helper.make_node(op_type, [dql.input[0], node.input[1], w_scale, w_zero_point], [mul.output[0]],
                           name=node.name or mul.name, domain=EDGE_DOMAIN)
    new.attribute.extend(node.attribute)
    removed = [node, cast, mul]
    if len(view.consumers.get(product.output[0], [])) == 1:
        removed.append(product)
    _replace(view, removed, new, mul)
    return True


def _sweep_dead(view: OnnxView) -> None:
    """Drops DequantizeLinear / DynamicQuantizeLinear nodes the rewrites left unread."""
    while True:
        dead = {id(n) for n in view.nodes
                if n.op_type in ("DequantizeLinear", "DynamicQuantizeLinear")
                and not any(view.consumers.get(o) or o in view.outputs for o in n.output if o)}
        if not dead:
            return
        view.nodes = [n for n in view.nodes if id(n) not in dead]
        view.refresh()


def _explicit_zero_points(view: OnnxView) -> None:
    """QuantizeLinear / DequantizeLinear without a zero point get an explicit one of the type
    ONNX implies (QuantizeLinear: uint8 unless output_dtype says otherwise; DequantizeLinear: its
    input's type), so every later step can read the type from the zero point."""
    for node in view.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or (len(node.input) > 2 and node.input[2]):
            continue
        if node.op_type == "QuantizeLinear":
            dtype = {TensorProto.INT8: np.int8}.get(_attr(node, "output_dtype", 0), np.uint8)
        else:
            source = node.input[0]
            value = view.const(source)
            producer = view.producer.get(source)
            if value is not None:
                dtype = value.dtype.type
            elif producer is not None and producer.op_type == "QuantizeLinear" and len(producer.input) > 2 \
                    and view.const(producer.input[2]) is not None:
                dtype = view.const(producer.input[2]).dtype.type
            else:
                continue
        zero = view.add_initializer(f"{node.input[0]}_zero_point", np.zeros((), dtype))
        while len(node.input) < 2:
            node.input.append("")
        if len(node.input) == 2:
            node.input.append(zero)
        else:
            node.input[2] = zero
    view.refresh()


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes holding int8/uint8 values (zero points) become initializers, which the
    quantized converters read directly (the float Constant converter takes no int8)."""
    kept = []
    for node in graph.node:
        value = _attr(node, "value") if node.op_type == "Constant" else None
        if value is not None and value.data_type in QUANTIZED_ELEM_TYPES:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            kept.append(copy)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def rewrite_quantized(proto: onnx.ModelProto) -> onnx.ModelProto:
    """QDQ groups -> QOperator ops, quantize_dynamic patterns -> DynamicMatMul/DynamicConv; a
    model without quantization ops comes back as it is (the same object)."""
    if not any(n.op_type in QUANTIZATION_OPS or n.domain == MS_DOMAIN for n in proto.graph.node):
        return proto
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    _constants_to_initializers(model.graph)
    view = OnnxView(model.graph)
    _explicit_zero_points(view)
    # One rewrite at a time, rescanning after each: a rewrite changes the consumers others see.
    while _rewrite_one(view):
        pass
    _sweep_dead(view)
    view.write_back()
    if not any(d.domain == EDGE_DOMAIN for d in model.opset_import):
        model.opset_import.append(helper.make_opsetid(EDGE_DOMAIN, 1))
    return model


def _rewrite_one(view: OnnxView) -> bool:
    for node in view.nodes:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            if _dynamic_group(view, node):
                return True
        elif node.op_type in QDQ_RULES and QDQ_RULES[node.op_type](view, node):
            return True
    return False


# =============================================================== 2. converters

def _state(ctx: NodeContext) -> dict[str, Quantization]:
    """The params found so far, by IR tensor name (kept on the builder of this import)."""
    builder = ctx.builder
    if not hasattr(builder, "quantization"):
        builder.quantization = {}
    return builder.quantization


def _raw(ctx: NodeContext, name: str, what: str) -> np.ndarray:
    """A constant input of any dtype (the float path's ctx.const refuses int8/uint8)."""
    if not name:
        raise ctx.error(f"{what} is missing")
    value = ctx.builder.constants.get(name)
    if value is None:
        tensor = ctx.builder._initializers.get(name)
        if tensor is None:
            raise ctx.unsupported(f"{what} computed at run time")
        value = numpy_helper.to_array(tensor)
    return np.asarray(value)


def _params(ctx: NodeContext, scale_name: str, zero_name: str, what: str, axis: int = 0,
            zero_dtype=np.uint8) -> tuple[Quantization, bool]:
    """(int8 params, whether the ONNX tensor is uint8) from a scale and a zero point input. A
    missing zero point is 0 of ``zero_dtype`` (ONNX's default is uint8)."""
    scale = _raw(ctx, scale_name, f"{what} scale").astype(np.float32).reshape(-1)
    if zero_name:
        zero = _raw(ctx, zero_name, f"{what} zero point")
    else:
        zero = np.zeros(1, zero_dtype)
    is_uint8 = zero.dtype == np.uint8
    if zero.dtype not in (np.int8, np.uint8, np.int32):
        raise ctx.unsupported(f"{what} zero point of dtype {zero.dtype}")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ctx.error(f"{what} scale {scale.tolist()} must be positive and finite")
    zero = zero.reshape(-1).astype(np.int64) - (128 if is_uint8 else 0)
    if zero.size == 1 and scale.size > 1:
        zero = np.repeat(zero, scale.size)
    return Quantization(tuple(float(s) for s in scale), tuple(int(z) for z in zero), axis), is_uint8


def _record(ctx: NodeContext, name: str, params: Quantization) -> None:
    """Attaches params to an int8 IR tensor; two different params for one tensor are an error."""
    table = _state(ctx)
    known = table.get(name)
    if known is not None and known != params:
        raise ctx.error(f"tensor {name!r} is quantized with scale {known.scale} / zero point "
                        f"{known.zero_point} where it is made and {params.scale} / {params.zero_point} here")
    table[name] = params


def _activation(ctx: NodeContext, index: int, scale_index: int, zero_index: int, what: str) -> str:
    """An int8 activation input: its params recorded from this node's scale and zero point."""
    name = ctx.input(index)
    params, _ = _params(ctx, ctx.input(scale_index), ctx.input(zero_index), what)
    if len(params.scale) != 1:
        raise ctx.unsupported(f"{what} quantized per channel")
    if _is_constant(ctx, name):
        data = _raw(ctx, name, what)
        return _int8_constant(ctx, data, params, what)
    if ctx.type(name).dtype != "int8":
        raise ctx.error(f"{what} {name!r} has dtype {ctx.type(name).dtype}; expected a quantized tensor")
    _record(ctx, name, params)
    return name


def _int8_constant(ctx: NodeContext, data: np.ndarray, params: Quantization, what: str) -> str:
    data = np.asarray(data)
    values = data.astype(np.int16) - 128 if data.dtype == np.uint8 else data.astype(np.int16)
    name = ctx.constant(values.astype(np.int8), base=what.replace(" ", "_"))
    _state(ctx)[name] = params
    return name


def _output(ctx: NodeContext, scale_index: int, zero_index: int) -> tuple[str, Quantization]:
    params, _ = _params(ctx, ctx.input(scale_index), ctx.input(zero_index), "output")
    if len(params.scale) != 1:
        raise ctx.unsupported("output quantized per channel")
    return ctx.output(0), params


def _weights(ctx: NodeContext, index: int, scale_index: int, zero_index: int, axis: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """(w - zp_w as int8, per-channel float32 scales along ``axis``) of a constant weight; the
    values must fit the symmetric range [-127, 127] the int8 kernels take."""
    data = _raw(ctx, ctx.input(index), "weights")
    if data.dtype not in (np.int8, np.uint8):
        raise ctx.unsupported(f"weights of dtype {data.dtype}")
    channels = data.shape[axis]
    scale = _raw(ctx, ctx.input(scale_index), "weight scale").astype(np.float32).reshape(-1)
    zero = (_raw(ctx, ctx.input(zero_index), "weight zero point").astype(np.int64).reshape(-1)
            if ctx.input(zero_index) else np.zeros(1, np.int64))
    if scale.size not in (1, channels) or zero.size not in (1, channels):
        raise ctx.error(f"weights {list(data.shape)}: {scale.size} scales / {zero.size} zero points "
                        f"for {channels} channels on axis {axis}")
    shape = [1] * data.ndim
    shape[axis] = -1
    shifted = data.astype(np.int64) - zero.reshape(shape if zero.size > 1 else [1] * data.ndim)
    if shifted.size and (shifted.min() < -WEIGHT_LIMIT or shifted.max() > WEIGHT_LIMIT):
        raise ctx.unsupported(f"weights minus their zero point span [{shifted.min()}, {shifted.max()}], outside "
                              f"the symmetric int8 range [-127, 127] of the int8 kernels (quantize the "
                              f"weights as symmetric int8)")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ctx.error(f"weight scales must be positive and finite, got {scale.tolist()}")
    return shifted.astype(np.int8), np.broadcast_to(scale, (channels,)).astype(np.float32)


def _weight_constant(ctx: NodeContext, values: np.ndarray, scales: np.ndarray, base: str) -> str:
    name = ctx.constant(np.ascontiguousarray(values), base=base)
    _state(ctx)[name] = Quantization(tuple(float(s) for s in scales), (0,) * scales.size, 0)
    return name


def _fit_bias(ctx: NodeContext, index: int | None, values: np.ndarray, w_scales: np.ndarray, axis: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(weights, weight scales, int32 bias or None) with every channel's bias within BIAS_LIMIT.
    A channel whose weights the source quantized with a tiny scale (a dead unit) can carry an int32
    bias that leaves the accumulator no room, which the runtime refuses; such a channel's weight
    and bias scale grow by the factor that brings the bias within the limit (its weights, tiny
    already, are divided by it). Other channels are unchanged, so the usual model imports exactly."""
    if index is None or not ctx.input(index):
        return values, w_scales, None
    bias = _raw(ctx, ctx.input(index), "bias")
    if bias.dtype != np.int32 or bias.shape != w_scales.shape:
        raise ctx.error(f"bias must be int32 of shape {list(w_scales.shape)}, got {bias.dtype} {list(bias.shape)}")
    factor = np.maximum(np.abs(bias.astype(np.float64)) / BIAS_LIMIT, 1.0)
    if np.all(factor == 1.0):
        return values, w_scales, bias
    shape = [1] * values.ndim
    shape[axis] = -1
    values = np.rint(values.astype(np.float64) / factor.reshape(shape)).astype(np.int8)
    return values, (w_scales * factor).astype(np.float32), np.rint(bias / factor).astype(np.int32)


def _bias_constant(ctx: NodeContext, data: np.ndarray | None, x_scale: float, w_scales: np.ndarray) -> str:
    if data is None:
        return ""
    scales = (np.float32(x_scale) * w_scales).astype(np.float32)
    name = ctx.constant(data.astype(np.int32), base="bias")
    _state(ctx)[name] = Quantization(tuple(float(s) for s in scales), (0,) * scales.size, 0)
    return name


def _fused_activation(ctx: NodeContext) -> dict:
    bounds = ctx.attr("edge_activation")
    if bounds is None:
        return {}
    low, high = (float(b) for b in bounds)
    if low == 0.0 and high == math.inf:
        return {"activation": ("Relu", 0.0, 0.0)}
    if low == 0.0 and high == 6.0:
        return {"activation": ("Relu6", 0.0, 0.0)}
    return {"activation": ("Clip", low, high)}


def _emit_quantized(ctx: NodeContext, op: str, inputs: list[str], attrs: dict, output: str,
                    params: Quantization) -> None:
    ctx.emit(op, inputs, attrs, [output])
    _record(ctx, output, params)


def _conv_attrs(ctx: NodeContext, spatial: tuple[int, ...], weight_shape: tuple[int, ...]) -> dict:
    if len(spatial) != 2:
        raise ctx.unsupported(f"{len(spatial)} spatial dims (2-D convolutions are quantized)")
    kernel = list(ctx.attr("kernel_shape", weight_shape[2:]))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, spatial, kernel, strides, dilations)
    return {"strides": _to_2d(strides, 1), "dilations": _to_2d(dilations, 1), "pads": _pads_2d(pads),
            "groups": int(ctx.attr("group", 1)), "layout": "NCHW"}


def _check_quantize(info: NodeInfo) -> list[str]:
    return (["block_size"] if info.attr("block_size", 0) else []) + refused_precision(info)


# Opsets 23 to 28 added types (float4, int2, float6, float8e8m0 scales) and the attributes precision
# and output_dtype; the types beyond int8 go to the exact lowering (beyond_int8_path).
@converts("QuantizeLinear", check=_check_quantize, newest_opset=28)
def _quantize_linear(ctx: NodeContext):
    axis = int(ctx.attr("axis", 1))
    params, is_uint8 = _params(ctx, ctx.input(1), ctx.input(2), "output")
    x = ctx.input(0)
    if ctx.const(0) is not None:
        # A constant quantized at import: ONNX's rule (x / s, halves to even), then saturation.
        value = ctx.const(0).astype(np.float32)
        shape = [1] * value.ndim
        if len(params.scale) > 1:
            shape[axis % value.ndim] = -1
        scale = np.asarray(params.scale, np.float32).reshape(shape)
        zero = np.asarray(params.zero_point, np.int64).reshape(shape)
        q = np.clip(np.rint(value / scale) + zero, -128, 127).astype(np.int8)
        ctx.builder.add_constant(ctx.output(0), q)
        _state(ctx)[ctx.output(0)] = Quantization(params.scale, params.zero_point, axis % max(value.ndim, 1))
        return
    if len(params.scale) != 1:
        raise ctx.unsupported("activations quantized per channel")
    _emit_quantized(ctx, "Quantize", [x], {}, ctx.output(0), params)


@converts("DequantizeLinear", check=lambda info: ["block_size"] if info.attr("block_size", 0) else [],
          newest_opset=28)
def _dequantize_linear(ctx: NodeContext):
    name = ctx.input(0)
    if _is_constant(ctx, name):
        data = _raw(ctx, name, "input")
        scale = _raw(ctx, ctx.input(1), "scale").astype(np.float32)
        zero = _raw(ctx, ctx.input(2), "zero point").astype(np.int64) if ctx.input(2) else np.zeros(1, np.int64)
        if scale.size > 1:
            axis = int(ctx.attr("axis", 1)) % data.ndim
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape) if zero.size > 1 else zero.reshape(())
        else:
            scale, zero = scale.reshape(()), zero.reshape(())
        value = ((data.astype(np.int64) - zero).astype(np.float32) * scale).astype(np.float32)
        ctx.builder.add_constant(ctx.output(0), value)
        return
    dtype = ctx.type(name).dtype
    if dtype != "int8":
        raise ctx.unsupported(f"dequantizing a {dtype} tensor computed at run time")
    x = _activation(ctx, 0, 1, 2, "input")
    ctx.emit("Dequantize", [x], {}, [ctx.output(0)])


@converts("QLinearConv")
def _qlinear_conv(ctx: NodeContext):
    x = _activation(ctx, 0, 1, 2, "input")
    x_params = _state(ctx)[x]
    w_values, w_scales, bias_values = _fit_bias(ctx, 8, *_weights(ctx, 3, 4, 5, axis=0), axis=0)
    w = _weight_constant(ctx, w_values, w_scales, "weights")
    bias = _bias_constant(ctx, bias_values, x_params.scale[0], w_scales)
    y, y_params = _output(ctx, 6, 7)
    attrs = {**_conv_attrs(ctx, ctx.shape(0)[2:], w_values.shape), **_fused_activation(ctx)}
    _emit_quantized(ctx, "Conv2D", [x, w, bias], attrs, y, y_params)


def _matmul_like(ctx: NodeContext, a: str, b_index: int, b_scale: int, b_zero: int, bias_index: int | None,
                 y: str, y_params: Quantization, transpose_b: bool) -> None:
    a_params = _state(ctx)[a]
    is_constant = _is_constant(ctx, ctx.input(b_index))
    activation = _fused_activation(ctx)
    if is_constant:
        raw = _raw(ctx, ctx.input(b_index), "weights")
        if raw.ndim != 2:
            raise ctx.unsupported(f"rank-{raw.ndim} constant right operand")
        # FullyConnected takes w[N, K] with per-row (output channel) params.
        axis = 0 if transpose_b else 1
        values, scales, bias_values = _fit_bias(ctx, bias_index, *_weights(ctx, b_index, b_scale, b_zero, axis=axis),
                                                axis=axis)
        w = _weight_constant(ctx, values if transpose_b else values.T, scales, "weights")
        bias = _bias_constant(ctx, bias_values, a_params.scale[0], scales)
        _emit_quantized(ctx, "FullyConnected", [a, w, bias], activation, y, y_params)
        return
    if bias_index is not None and ctx.input(bias_index):
        raise ctx.unsupported("bias with a computed right operand")
    b = _activation(ctx, b_index, b_scale, b_zero, "input b")
    _emit_quantized(ctx, "BatchMatMul", [a, b], {"transpose_a": False, "transpose_b": transpose_b, **activation},
                    y, y_params)


def _is_constant(ctx: NodeContext, name: str) -> bool:
    return ctx.builder._initializers.get(name) is not None or name in ctx.builder.constants


def _rank(ctx: NodeContext, index: int) -> int:
    name = ctx.input(index)
    return _raw(ctx, name, "operand").ndim if _is_constant(ctx, name) else ctx.rank(index)


@converts("QLinearMatMul")
def _qlinear_matmul(ctx: NodeContext):
    if _rank(ctx, 0) < 2 or _rank(ctx, 3) < 2:
        raise ctx.unsupported("rank-1 operand")
    a = _activation(ctx, 0, 1, 2, "input a")
    y, y_params = _output(ctx, 6, 7)
    _matmul_like(ctx, a, 3, 4, 5, None, y, y_params, transpose_b=False)


@_domain_op(MS_DOMAIN, "QGemm")
def _qgemm(ctx: NodeContext):
    if float(ctx.attr("alpha", 1.0)) != 1.0:
        raise ctx.unsupported("alpha other than 1")
    if len(ctx.inputs) < 8 or not ctx.input(7):
        raise ctx.unsupported("float output (no output scale)")
    a = _activation(ctx, 0, 1, 2, "input a")
    if ctx.attr("transA", 0):
        transposed = ctx.emit1("Transpose", [a], {"perm": (1, 0)})
        _record(ctx, transposed, _state(ctx)[a])
        a = transposed
    y, y_params = _output(ctx, 7, 8)
    _matmul_like(ctx, a, 3, 4, 5, 6, y, y_params, transpose_b=bool(ctx.attr("transB", 0)))


@_domain_op(MS_DOMAIN, "QLinearAdd", "QLinearMul")
def _qlinear_binary(ctx: NodeContext):
    a = _activation(ctx, 0, 1, 2, "input a")
    b = _activation(ctx, 3, 4, 5, "input b")
    y, y_params = _output(ctx, 6, 7)
    op = "Add" if ctx.op_type == "QLinearAdd" else "Mul"
    _emit_quantized(ctx, op, [a, b], _fused_activation(ctx), y, y_params)


@_domain_op(MS_DOMAIN, "QLinearGlobalAveragePool")
def _qlinear_global_average_pool(ctx: NodeContext):
    x = _activation(ctx, 0, 1, 2, "input")
    y, y_params = _output(ctx, 3, 4)
    rank = ctx.rank(0)
    axes = tuple(range(1, rank - 1)) if ctx.attr("channels_last", 0) else tuple(range(2, rank))
    _emit_quantized(ctx, "ReduceMean", [x], {"axes": axes, "keepdims": True}, y, y_params)


@_domain_op(MS_DOMAIN, "QLinearAveragePool")
def _qlinear_average_pool(ctx: NodeContext):
    if ctx.attr("channels_last", 0) or ctx.rank(0) != 4:
        raise ctx.unsupported("channels_last or non-2-D pooling")
    x = _activation(ctx, 0, 1, 2, "input")
    y, y_params = _output(ctx, 3, 4)
    kernel = list(ctx.attr("kernel_shape"))
    strides, dilations = _spatial_attrs(ctx, kernel)
    pads = _resolve_pads(ctx, ctx.shape(0)[2:], kernel, strides, dilations)
    attrs = {"kernel": _to_2d(kernel, 1), "strides": _to_2d(strides, 1), "dilations": _to_2d(dilations, 1),
             "pads": _pads_2d(pads), "ceil_mode": bool(ctx.attr("ceil_mode", 0)), "layout": "NCHW",
             "count_include_pad": bool(ctx.attr("count_include_pad", 0))}
    _emit_quantized(ctx, "AvgPool2D", [x], attrs, y, y_params)


@_domain_op(MS_DOMAIN, "QLinearConcat")
def _qlinear_concat(ctx: NodeContext):
    y, y_params = _output(ctx, 0, 1)
    count = (len(ctx.inputs) - 2) // 3
    sources = [_activation(ctx, 2 + 3 * k, 3 + 3 * k, 4 + 3 * k, f"input {k}") for k in range(count)]
    rank = ctx.rank(sources[0])
    axis = int(ctx.attr("axis"))
    _emit_quantized(ctx, "Concat", sources, {"axis": axis % rank}, y, y_params)


def _dynamic_weights(ctx: NodeContext, axis: int) -> tuple[np.ndarray, np.ndarray]:
    return _weights(ctx, 1, 2, 3, axis)


@_domain_op(EDGE_DOMAIN, "DynamicMatMul")
def _dynamic_matmul(ctx: NodeContext):
    if ctx.type(0).dtype != "float32" or ctx.rank(0) < 1:
        raise ctx.unsupported("input that is not float32")
    values, scales = _dynamic_weights(ctx, axis=1)
    if values.ndim != 2:
        raise ctx.unsupported(f"rank-{values.ndim} weights")
    w = _weight_constant(ctx, values.T, scales, "weights")
    ctx.emit("FullyConnected", [ctx.input(0), w, ""], {}, [ctx.output(0)])


@_domain_op(EDGE_DOMAIN, "DynamicConv")
def _dynamic_conv(ctx: NodeContext):
    if ctx.type(0).dtype != "float32":
        raise ctx.unsupported("input that is not float32")
    values, scales = _dynamic_weights(ctx, axis=0)
    w = _weight_constant(ctx, values, scales, "weights")
    attrs = _conv_attrs(ctx, ctx.shape(0)[2:], values.shape)
    ctx.emit("Conv2D", [ctx.input(0), w, ""], attrs, [ctx.output(0)])


def _not_understood(info: NodeInfo) -> list[str]:
    return ["not part of a DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast -> Mul(x_scale * "
            "w_scale) group with constant int8 weights, the only integer-arithmetic form imported"]


@converts("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", check=_not_understood)
def _integer_op(ctx: NodeContext):
    raise ctx.unsupported(_not_understood(None)[0])


QUANTIZATION_OPS = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger",
                    "ConvInteger", "DynamicQuantizeLinear")


# =============================================================== 3. after the import

def finish_import(graph: Graph, builder) -> Graph:
    """The imported graph with its params; each int8 tensor a data-movement op made carries its
    source's params, and every int8 tensor must have params."""
    table = getattr(builder, "quantization", None)
    if not table:
        return graph
    from converter.passes._edit import GraphEdit

    known = {name: params for name, params in table.items() if name in graph.tensors}
    edit = GraphEdit(graph.replace(quantization=known))
    result = edit.build()
    missing = sorted(name for name, t in result.tensors.items()
                     if t.dtype == "int8" and name not in result.quantization)
    if missing:
        raise ConversionError(f"int8 tensors {missing[:8]} have no quantization params: they are not "
                              f"made by a quantized op or a value-moving op on a quantized tensor")
    return result

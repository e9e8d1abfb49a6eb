"""int8 mode: the graph rewritten so every op with an int8 kernel computes on int8.

Which ops become int8 is one table, ``INT8_OPS``: op -> (kind, condition). "compute" ops
(convolutions, matmuls, add/sub/mul, average pooling and spatial means, concat, softmax) become
int8 whenever their condition holds: their float inputs are quantized (a Quantize node is
inserted where the producer stayed float) and their outputs get calibrated params. "follow" ops
(max pooling and data movement) move bytes: they become int8 only when their data input
already is, and their outputs keep the input's params (the kernels assume it).

Everything else stays float32; a Dequantize is inserted in front of it where its input is int8.
Graph inputs and outputs keep their names and float32 type: int8 tensors get new names
(``<tensor>_int8``; weights ``<w>_int8``, biases ``<b>_int32``) and graph outputs produced in
int8 are dequantized back to the original name, so the model's interface is unchanged.

Params (converter.quantize.params): weights per output channel symmetric; biases int32 at
s_x * s_w[c]; activations per tensor from the calibrated range; Concat's output covers all its
inputs; Softmax's output is fixed at scale 1/256, zero point -128; constants feeding Add, Sub,
Mul, Concat or BatchMatMul a are quantized per tensor from their own range, a constant
BatchMatMul b per column like a weight.
"""
from __future__ import annotations

from typing import Callable

from converter.errors import ConversionError
from converter.ir import Graph, Node, Quantization, TensorType
from converter.quantize.calibration import collect_ranges
from converter.quantize.common import QuantizedLayer, node_label
from converter.quantize.dynamic import weight_axis
from converter.quantize.int8_reference import SOFTMAX_OUTPUT
from converter.quantize.params import (activation_params, bias_scale_floor, constant_params, quantize_bias,
                                       quantize_weights, representable_range)
from converter.quantize.report import FloatOp

INT8_ACTIVATIONS = (None, "Relu", "Relu6", "Clip", "Identity")

# Which input slots of an op are weights (int8 per channel) or biases (int32); the data input
# of a follow op is slot 0; other slots are activations (or, for Gather, integer indices).
WEIGHT_SLOT = {"Conv2D": 1, "FullyConnected": 1}
BIAS_SLOT = {"Conv2D": 2, "FullyConnected": 2}


def _activation_ok(graph: Graph, node: Node) -> str | None:
    activation = node.attrs.get("activation")
    name = activation[0] if activation else None
    if name not in INT8_ACTIVATIONS:
        return f"fused activation {name} has no int8 form"
    return None


def _weighted(graph: Graph, node: Node) -> str | None:
    if len(node.inputs) < 2 or not graph.is_constant(node.inputs[1]):
        return "weights are variables" if len(node.inputs) > 1 and node.inputs[1] in graph.variables \
            else "weights are not constant"
    if len(node.inputs) > 2 and node.inputs[2] and not graph.is_constant(node.inputs[2]):
        return "bias is not constant"
    return _activation_ok(graph, node)


def _binary(graph: Graph, node: Node) -> str | None:
    if all(graph.is_constant(i) for i in node.inputs):
        return "both operands are constant"
    return _activation_ok(graph, node)


def _matmul(graph: Graph, node: Node) -> str | None:
    if graph.is_constant(node.inputs[0]):
        return "left operand is constant"
    return _activation_ok(graph, node)


def _spatial_mean(graph: Graph, node: Node) -> str | None:
    x = graph.tensors[node.inputs[0]]
    if x.rank != 4 or tuple(node.attrs.get("axes", ())) != (1, 2):
        return "int8 ReduceMean covers the H, W axes of an NHWC tensor only"
    return None


def _pad(graph: Graph, node: Node) -> str | None:
    if node.attrs.get("mode", "constant") == "constant" and float(node.attrs.get("value", 0.0)) != 0.0:
        return "constant padding with a non-zero value"
    return None


def _always(graph: Graph, node: Node) -> str | None:
    return None


# op -> (kind, condition: (graph, node) -> reason it stays float, or None)
INT8_OPS: dict[str, tuple[str, Callable[[Graph, Node], str | None]]] = {
    "Conv2D": ("compute", _weighted),
    "FullyConnected": ("compute", _weighted),
    "BatchMatMul": ("compute", _matmul),
    "Add": ("compute", _binary),
    "Sub": ("compute", _binary),
    "Mul": ("compute", _binary),
    "AvgPool2D": ("compute", _always),
    "ReduceMean": ("compute", _spatial_mean),
    "Concat": ("compute", _always),
    "Softmax": ("compute", _always),
    "MaxPool2D": ("follow", _always),
    "Reshape": ("follow", _always),
    "Identity": ("follow", _always),
    "Transpose": ("follow", _always),
    "Slice": ("follow", _always),
    "Gather": ("follow", _always),
    "Split": ("follow", _always),
    "Pad": ("follow", _pad),
}


def _float_slots(graph: Graph, node: Node) -> list[int]:
    """The input slots that carry float values the int8 op reads as int8."""
    if node.op == "Gather":
        return [0]
    return [k for k, name in enumerate(node.inputs) if name and k != BIAS_SLOT.get(node.op)]


class _Rewriter:
    def __init__(self, graph: Graph, ranges: dict[str, tuple[float, float]]):
        self.graph = graph
        self.ranges = ranges
        self.nodes: list[Node] = []
        self.tensors = dict(graph.tensors)
        self.constants = dict(graph.constants)
        self.quantization: dict[str, Quantization] = dict(graph.quantization)
        self.taken = set(self.tensors) | {n.name for n in graph.nodes}
        self.int8_of: dict[str, str] = {}          # float tensor -> its int8 twin
        self.float_ready = set(graph.inputs) | set(graph.constants)
        self.weights: dict[tuple[str, int], str] = {}
        self.quantize_nodes = 0
        self.dequantize_nodes = 0

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def params_for(self, name: str) -> Quantization:
        if name not in self.ranges:
            raise ConversionError(f"calibration never saw tensor {name!r}")
        return activation_params(*self.ranges[name])

    def new_int8(self, name: str, params: Quantization) -> str:
        twin = self.fresh(f"{name}_int8")
        self.tensors[twin] = TensorType("int8", self.graph.tensors[name].shape)
        self.quantization[twin] = params
        self.int8_of[name] = twin
        return twin

    def as_int8(self, name: str, params: Quantization | None = None) -> str:
        """The int8 twin of a float tensor, quantizing it here if it has none yet."""
        if name in self.int8_of:
            return self.int8_of[name]
        if self.graph.is_constant(name):
            params = params or constant_params(self.constants[name])
            twin = self.fresh(f"{name}_int8")
            from converter.quantize.int8_reference import quantize_values
            self.constants[twin] = quantize_values(self.constants[name], params)
            self.tensors[twin] = TensorType("int8", self.graph.tensors[name].shape)
            self.quantization[twin] = params
            self.int8_of[name] = twin
            return twin
        twin = self.new_int8(name, params or self.params_for(name))
        self.nodes.append(Node("Quantize", (name,), (twin,), {}, name=self.fresh(f"{name}_quantize")))
        self.quantize_nodes += 1
        return twin

    def as_float(self, name: str) -> str:
        if name and name not in self.float_ready and name in self.int8_of:
            self.nodes.append(Node("Dequantize", (self.int8_of[name],), (name,), {},
                                   name=self.fresh(f"{name}_dequantize")))
            self.dequantize_nodes += 1
            self.float_ready.add(name)
        return name

    def weight(self, name: str, axis: int, scale_floor: np.ndarray | None = None) -> str:
        key = (name, axis, None if scale_floor is None else scale_floor.tobytes())
        if key not in self.weights:
            q, params = quantize_weights(self.constants[name], axis, scale_floor)
            twin = self.fresh(f"{name}_int8")
            self.constants[twin], self.quantization[twin] = q, params
            self.tensors[twin] = TensorType("int8", q.shape)
            self.weights[key] = twin
        return self.weights[key]

    def bias(self, name: str, input_scale: float, weight: str) -> str:
        q, params = quantize_bias(self.constants[name], input_scale, self.quantization[weight])
        twin = self.fresh(f"{name}_int32")
        self.constants[twin], self.quantization[twin] = q, params
        self.tensors[twin] = TensorType("int32", q.shape)
        return twin

    # ---- one node ----

    def keep_float(self, node: Node) -> None:
        self.nodes.append(node.with_(inputs=tuple(self.as_float(i) for i in node.inputs)))
        self.float_ready.update(o for o in node.outputs if o)

    def output_params(self, node: Node, inputs: list[str]) -> list[Quantization]:
        kind = INT8_OPS[node.op][0]
        if kind == "follow":
            return [self.quantization[inputs[0]]] * len(node.outputs)
        if node.op == "Softmax":
            return [SOFTMAX_OUTPUT]
        y = node.outputs[0]
        if node.op == "Concat":
            low, high = self.ranges[y]
            for name in inputs:
                lo, hi = representable_range(self.quantization[name])
                low, high = min(low, lo), max(high, hi)
            return [activation_params(low, high)]
        return [self.params_for(y)]

    def to_int8(self, node: Node) -> list[str]:
        """Rewrites ``node`` into its int8 form; returns its int8 output names."""
        inputs = list(node.inputs)
        weight_slot = WEIGHT_SLOT.get(node.op)
        if node.op == "BatchMatMul" and self.graph.is_constant(inputs[1]):
            weight_slot = 1
        for k in _float_slots(self.graph, node):
            name = inputs[k]
            if k != weight_slot:
                inputs[k] = self.as_int8(name)
        bias_slot = BIAS_SLOT.get(node.op)
        has_bias = bias_slot is not None and len(inputs) > bias_slot and bool(inputs[bias_slot])
        if weight_slot is not None and weight_slot in _float_slots(self.graph, node):
            name = inputs[weight_slot]
            floor = (bias_scale_floor(self.constants[inputs[bias_slot]], self.quantization[inputs[0]].scale[0])
                     if has_bias else None)
            inputs[weight_slot] = self.weight(name, weight_axis(node, self.graph.tensors[name].rank), floor)
        if has_bias:
            input_scale = self.quantization[inputs[0]].scale[0]
            inputs[bias_slot] = self.bias(inputs[bias_slot], input_scale, inputs[weight_slot])
        outputs = []
        for name, params in zip(node.outputs, self.output_params(node, inputs)):
            outputs.append(self.new_int8(name, params) if name else "")
        self.nodes.append(node.with_(inputs=tuple(inputs), outputs=tuple(outputs)))
        return outputs

    def finish(self) -> Graph:
        for name in self.graph.outputs:
            self.as_float(name)
        return self.graph.replace(nodes=tuple(self.nodes), tensors=self.tensors, constants=self.constants,
                                  quantization=self.quantization)


def _float_reason(graph: Graph, node: Node, index: int, keep: set[int], int8_ready: dict) -> str | None:
    """Why ``node`` stays float (None: it becomes int8)."""
    if index in keep:
        return "--keep-float"
    entry = INT8_OPS.get(node.op)
    if entry is None:
        return "no int8 kernel"
    kind, condition = entry
    slots = _float_slots(graph, node)
    if any(graph.tensors[node.inputs[k]].dtype != "float32" for k in slots):
        return "inputs are not float32"
    if any(graph.tensors[o].dtype != "float32" for o in node.outputs if o):
        return "outputs are not float32"
    if kind == "follow" and node.inputs[0] not in int8_ready:
        return "follows a float input"
    return condition(graph, node)


def _counts_as_left_float(reason: str) -> bool:
    """Data movement after a float op is not a quantization decision worth reporting."""
    return reason != "follows a float input"


def quantize_int8(graph: Graph, keep: set[int], batches, options, report) -> tuple[Graph, list[QuantizedLayer]]:
    # Every float activation a node reads or writes gets a range.
    wanted = {name for node in graph.nodes for name in (*node.inputs, *node.outputs)
              if name and not graph.is_constant(name) and graph.tensors[name].dtype == "float32"}
    ranges = collect_ranges(graph, batches, wanted, options["method"], options["percentile"], options["progress"])
    report.calibration_samples = len(batches)
    rewriter = _Rewriter(graph, ranges)
    layers = []
    for index, node in enumerate(graph.nodes):
        reason = _float_reason(graph, node, index, keep, rewriter.int8_of)
        if reason is not None:
            if _counts_as_left_float(reason):
                report.float_ops.append(FloatOp(node_label(node), node.op, reason))
            rewriter.keep_float(node)
            continue
        outputs = rewriter.to_int8(node)
        for name, twin in zip(node.outputs, outputs):
            if name:
                layers.append(QuantizedLayer(node_label(node), node.op, name, twin, rewriter.quantization[twin]))
    result = rewriter.finish()
    report.quantize_nodes = rewriter.quantize_nodes
    report.dequantize_nodes = rewriter.dequantize_nodes
    return result, layers

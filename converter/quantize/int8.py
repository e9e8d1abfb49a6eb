"""int8 mode: the graph rewritten so every op with an int8 kernel computes on int8.

Which ops become int8 is read from the op table (converter.ops.OpDef: ``int8_role``,
``int8_condition``, ``int8_inputs``, ``weight_slot``, ``bias_slot``). "compute" ops
(convolutions, matmuls, add/sub/mul, average pooling and spatial means, concat, softmax) become
int8 whenever their condition holds: their float inputs are quantized (a Quantize node is
inserted where the producer stayed float) and their outputs get calibrated params. "follow" ops
(max pooling and data movement) move bytes: they become int8 only when their data input
already is, and their outputs keep the input's params (the kernels assume it).

Everything else stays float32; a Dequantize is inserted in front of it where its input is int8.
Graph inputs and outputs keep their names and float32 type: int8 tensors get new names
(``<tensor>_int8``; weights ``<w>_int8``, biases ``<b>_int32``) and graph outputs produced in
int8 are dequantized back to the original name, so the model's interface is unchanged.
An Add, Sub or Mul that reads a float-computed operand and feeds only float ops stays float too
(``FLOAT_BRIDGE``): int8 would add a Quantize and a Dequantize around it for nothing.

Before calibration, LayerNorm outputs that feed FullyConnected layers are smoothed (option
"smoothing", converter.quantize.smoothing): per-channel scales move their outlier channels into
the weights, so the per-tensor int8 input of the matmuls no longer spends its range on them.

Params (converter.quantize.params): weights per output channel symmetric; biases int32 at
s_x * s_w[c]; activations per tensor from the calibrated range; Concat's output covers all its
inputs; Softmax's output is fixed at scale 1/256, zero point -128; constants feeding Add, Sub,
Mul, Concat or BatchMatMul a are quantized per tensor from their own range, a constant
BatchMatMul b per column like a weight; a Gather from a constant table (an embedding) reads
the table quantized per tensor.

LayerNorm (int8 in and out, float gamma/beta) and elementwise unary ops (int8 in and out through
a [256] lookup table this module computes, ``unary_table``) have int8 forms in the runtime when
``RUNTIME_INT8_FORMS`` says so; a matmul or convolution whose fused activation has only a table
form is then split into the int8 op and the table unary.

Sentinels (-inf masks and the like, see converter.quantize.calibration): ranges come from the
other values and the sentinels saturate to the int8 minimum / maximum where a tensor is
quantized. An Add or Sub with a sentinel operand (a mask added to attention scores) stays float,
because a saturated mask would no longer dominate the sum; its output is quantized where the
next int8 op reads it. A Softmax input carrying -inf gets a range whose low end lies at least
SOFTMAX_VANISH below the smallest row maximum seen, so the saturated values weigh exactly 0 in
the int8 softmax (its exp table is 0 there). A Where(IsNaN(x), c, x) guard behind an int8
softmax passes x through (int8 values are never NaN). ``report.sentinels`` says which tensor got
which treatment.
"""
from __future__ import annotations

from converter.errors import ConversionError
from converter.ir import Graph, Node, Quantization, TensorType
from converter.ops import OPS, OpDef
from converter.ops.int8_reference import SOFTMAX_OUTPUT, quantize_values, unary_table
from converter.passes.cleanup import remove_dead_nodes

import numpy as np

from converter.quantize.calibration import Calibration, calibrate
from converter.quantize.common import QuantizedLayer, node_label
from converter.quantize.dynamic import dynamic_reason, weight_axis
from converter.quantize.params import (activation_params, bias_scale_floor, constant_params, quantize_bias,
                                       quantize_weights, representable_range)
from converter.quantize.report import FloatOp, SentinelHandling
from converter.quantize.smoothing import channel_peaks, smooth_layer_norms, smoothing_sites

# Int8 forms that int8 mode emits only when True here: "unary_table" (UNARY with a
# [256] lookup table; the runtime has it) and "LayerNorm" (int8 LAYER_NORM; the runtime has it,
# but it is off: on all-MiniLM-L6-v2 it lowered the minimum cosine to float32 from 0.981 to
# 0.969, since a per-tensor int8 input cannot carry the residual stream's outlier channel into
# the row's mean and variance).
RUNTIME_INT8_FORMS = {"LayerNorm": False, "unary_table": True}

# exp(-d) * 2**16 rounds to 0 in the int8 softmax's table once d > ln(2**17) = 11.8; the margin
# covers the half step a row maximum may lose to rounding.
SOFTMAX_VANISH = 12.5

# Fused activations split off into a table unary: name -> the unary's attribute names for the
# fused (alpha, beta).
TABLE_ACTIVATIONS = {"Gelu": (), "GeluTanh": (), "Sigmoid": (), "Tanh": (), "HardSwish": (), "Silu": (),
                     "Elu": ("alpha",), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta")}


def int8_form(op: str) -> OpDef | None:
    """The op's entry where int8 mode converts it: it has an int8 role (OpDef.int8_role) and
    ``RUNTIME_INT8_FORMS`` has its form on."""
    entry = OPS.get(op)
    if entry is None or entry.int8_role is None:
        return None
    if entry.int8_role == "table" and not RUNTIME_INT8_FORMS["unary_table"]:
        return None
    if op == "LayerNorm" and not RUNTIME_INT8_FORMS["LayerNorm"]:
        return None
    return entry


def split_table_activations(graph: Graph) -> Graph:
    """Matmuls and convolutions whose fused activation has only a table form become the op
    without it followed by the unary (a pure rewrite; the float result is unchanged)."""
    if int8_form("Gelu") is None:
        return graph
    nodes, tensors = [], dict(graph.tensors)
    for node in graph.nodes:
        activation = node.attrs.get("activation")
        if OPS[node.op].weight_slot is None or not activation or activation[0] not in TABLE_ACTIVATIONS:
            nodes.append(node)
            continue
        name, alpha, beta = activation
        output = node.outputs[0]
        pre = f"{output}_pre_{name.lower()}"
        while pre in tensors:
            pre += "_"
        tensors[pre] = graph.tensors[output]
        attrs = {k: v for k, v in node.attrs.items() if k != "activation"}
        nodes.append(node.with_(outputs=(pre,) + tuple(node.outputs[1:]), attrs=attrs))
        unary_attrs = dict(zip(TABLE_ACTIVATIONS[name], (alpha, beta)))
        nodes.append(Node(name, (pre,), (output,), unary_attrs, name=f"{node_label(node)}/{name}"))
    return graph.replace(nodes=tuple(nodes), tensors=tensors)


def _float_slots(graph: Graph, node: Node) -> list[int]:
    """The input slots that carry float values the int8 op reads as int8."""
    entry = OPS[node.op]
    if entry.int8_inputs is not None:
        return list(entry.int8_inputs)
    return [k for k, name in enumerate(node.inputs) if name and k != entry.bias_slot]


class _Rewriter:
    def __init__(self, graph: Graph, calibration: Calibration, method: str = "minmax"):
        self.graph = graph
        self.method = method
        self.calibration = calibration
        self.ranges = dict(calibration.ranges)
        self.widened: dict[str, tuple[float, float]] = {}
        for name, row_max in calibration.row_max_min.items():
            # Below (its row's maximum - SOFTMAX_VANISH) a value weighs 0 in the int8 softmax:
            # the range stops there, lower than the observed minimum only where sentinels
            # must saturate into that zone. The top is never clipped: a clipped row maximum
            # would flatten the distribution.
            if name in self.ranges:
                low, high = self.ranges[name]
                high = max(high, calibration.observed.get(name, (low, high))[1])
                self.ranges[name] = (row_max - SOFTMAX_VANISH, high)
                self.widened[name] = (low, self.ranges[name][0])
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

    def keep_top(self, names) -> None:
        """Tensors feeding a Softmax (through a mask Add or data movement) keep their observed
        maximum: a clipped row maximum would flatten the attention distribution."""
        for name in names:
            if name in self.ranges and name in self.calibration.observed:
                low, high = self.ranges[name]
                self.ranges[name] = (low, max(high, self.calibration.observed[name][1]))

    def keep_observed(self, names) -> None:
        """LayerNorm inputs keep their observed [min, max]: the few large values clipping would
        cut are the ones that set the row's mean and variance."""
        for name in names:
            if name in self.ranges and name in self.calibration.observed:
                self.ranges[name] = self.calibration.observed[name]

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

    def keep_float(self, node: Node, dynamic_weights: bool = False) -> None:
        """``node`` in float32; ``dynamic_weights``: with int8 weights (the dynamic kernel)
        where its weights are constant."""
        inputs = [self.as_float(i) for i in node.inputs]
        if dynamic_weights and OPS[node.op].dynamic is not None and dynamic_reason(self.graph, node) is None:
            inputs[1] = self.weight(inputs[1], weight_axis(node, self.graph.tensors[inputs[1]].rank))
        self.nodes.append(node.with_(inputs=tuple(inputs)))
        self.float_ready.update(o for o in node.outputs if o)

    def output_params(self, node: Node, inputs: list[str]) -> list[Quantization]:
        entry = OPS[node.op]
        if entry.int8_role == "follow":
            return [self.quantization[inputs[_float_slots(self.graph, node)[0]]]] * len(node.outputs)
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
        entry = OPS[node.op]
        weight_slot = entry.weight_slot
        if node.op == "BatchMatMul" and self.graph.is_constant(inputs[1]):
            weight_slot = 1
        for k in _float_slots(self.graph, node):
            name = inputs[k]
            if k != weight_slot:
                inputs[k] = self.as_int8(name)
        bias_slot = entry.bias_slot
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
        if node.op == "Where":
            self.nodes.append(Node("Identity", (inputs[2],), tuple(outputs), {}, name=node.name))
            return outputs
        if entry.int8_role == "table":
            table = self.fresh(f"{node_label(node)}_table")
            y_params = self.quantization[outputs[0]]
            self.constants[table] = unary_table(node.op, node.attrs, self.quantization[inputs[0]], y_params)
            self.tensors[table] = TensorType("int8", (256,))
            self.quantization[table] = y_params
            inputs.append(table)
        self.nodes.append(node.with_(inputs=tuple(inputs), outputs=tuple(outputs)))
        return outputs

    def finish(self) -> Graph:
        for name in self.graph.outputs:
            self.as_float(name)
        return self.graph.replace(nodes=tuple(self.nodes), tensors=self.tensors, constants=self.constants,
                                  quantization=self.quantization)


def _float_reason(graph: Graph, node: Node, index: int, keep: set[int], int8_ready: dict,
                  calibration: Calibration) -> str | None:
    """Why ``node`` stays float (None: it becomes int8)."""
    if index in keep:
        return "--keep-float"
    entry = int8_form(node.op)
    if entry is None:
        return "no int8 kernel"
    slots = _float_slots(graph, node)
    if any(graph.tensors[node.inputs[k]].dtype != "float32" for k in slots):
        return "inputs are not float32"
    if any(graph.tensors[o].dtype != "float32" for o in node.outputs if o):
        return "outputs are not float32"
    if entry.int8_role == "follow":
        data = node.inputs[slots[0]]
        constant_table = node.op == "Gather" and graph.is_constant(data)
        if data not in int8_ready and not constant_table:
            return "follows a float input"
    if entry.int8_role != "follow" and (calibration.methods.get(node.outputs[0]) == "float" or any(
            calibration.methods.get(node.inputs[k]) == "float" and node.inputs[k] not in int8_ready
            for k in slots)):
        return AUTO_FLOAT
    if node.op in BRIDGE_OPS and _float_bridge(graph, node, int8_ready):
        return FLOAT_BRIDGE
    if node.op in ("Add", "Sub"):
        for name in node.inputs:
            found = calibration.sentinels.get(name)
            if found:
                return f"operand {name!r} carries sentinels ({_describe(found)}): mask path kept in float"
    return entry.int8_condition(graph, node) if entry.int8_condition else None


AUTO_FLOAT = "calibration auto: int8 would erase its output's bulk (outliers); float with int8 weights"

# Elementwise ops that stay float where int8 would only add conversions: an operand computed in
# float (a LayerNorm's output) and every reader float (the next LayerNorm). A post-LN BERT's
# residual Add is one: int8 would quantize the residual stream, outlier channels and all, to one
# per-tensor scale (on all-MiniLM-L6-v2 that alone cost 0.002 of the minimum cosine), and then
# dequantize it again for the LayerNorm.
BRIDGE_OPS = ("Add", "Sub", "Mul")
FLOAT_BRIDGE = "reads a float-computed operand and feeds only float ops: int8 would add a Quantize and a Dequantize"


def _float_bridge(graph: Graph, node: Node, int8_ready: dict) -> bool:
    producers = graph.producers()
    float_operand = any(name in producers and name not in int8_ready and not graph.is_constant(name)
                        for name in node.inputs if name)
    if not float_operand or any(o in graph.outputs for o in node.outputs):
        return False
    readers = [n for n in graph.nodes if any(o and o in n.inputs for o in node.outputs)]
    return bool(readers) and all(int8_form(n.op) is None for n in readers)


def _softmax_feeders(graph: Graph, calibration: Calibration) -> set[str]:
    """Tensors whose values reach a Softmax input unscaled: back through data movement and
    through an Add / Sub whose other operand is a mask (carries sentinels) or a constant."""
    producer = {o: node for node in graph.nodes for o in node.outputs if o}
    found: set[str] = set()
    todo = [node.inputs[0] for node in graph.nodes if node.op == "Softmax"]
    while todo:
        name = todo.pop()
        if name in found or graph.is_constant(name):
            continue
        found.add(name)
        node = producer.get(name)
        if node is None:
            continue
        if node.op in ("Reshape", "Transpose", "Identity"):
            todo.append(node.inputs[0])
        elif node.op in ("Add", "Sub"):
            todo.extend(i for i in node.inputs if i and not graph.is_constant(i) and i not in calibration.sentinels)
    return found


def _layer_norm_inputs(graph: Graph) -> set[str]:
    producer = {o: node for node in graph.nodes for o in node.outputs if o}
    found: set[str] = set()
    todo = [node.inputs[0] for node in graph.nodes if node.op == "LayerNorm"]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        node = producer.get(name)
        if node is not None and node.op in ("Reshape", "Transpose", "Identity"):
            todo.append(node.inputs[0])
    return found


def _describe(found) -> str:
    examples = ", ".join(f"{v:g}" for v in sorted(found.examples)) or "NaN"
    return f"{found.low + found.high + found.nan} values such as {examples}"


def _sentinel_report(rewriter: _Rewriter, calibration: Calibration) -> list[SentinelHandling]:
    entries = []
    for name, found in calibration.sentinels.items():
        twin = rewriter.int8_of.get(name)
        values = _describe(found)
        if twin is None:
            entries.append(SentinelHandling(name, values, "kept in float"))
            continue
        low, high = rewriter.ranges.get(name, (0.0, 0.0))
        how = (f"saturate to int8 {'min' if found.low else ''}{'/' if found.low and found.high else ''}"
               f"{'max' if found.high else ''}{' (NaN to the zero point)' if found.nan else ''}; "
               f"range [{low:.4g}, {high:.4g}] from the other values")
        if name in rewriter.widened:
            how += (f"; low end at the smallest row maximum - {SOFTMAX_VANISH:g} (observed minimum "
                    f"{rewriter.widened[name][0]:.4g}) so saturated values vanish after softmax")
        entries.append(SentinelHandling(name, values, how))
    return entries


def _counts_as_left_float(reason: str) -> bool:
    """Data movement after a float op is not a quantization decision worth reporting."""
    return reason != "follows a float input"


def quantize_int8(graph: Graph, keep: set[int], batches, options, report) -> tuple[Graph, list[QuantizedLayer]]:
    kept_nodes = {graph.nodes[i].name or graph.nodes[i].outputs[0] for i in keep}
    alpha = options.get("smoothing")
    if alpha:
        sites = smoothing_sites(graph)
        peaks = channel_peaks(graph, batches, [site.tensor for site in sites])
        graph, report.smoothed = smooth_layer_norms(graph, peaks, alpha)
    graph = split_table_activations(graph)
    keep = {i for i, node in enumerate(graph.nodes) if node_label(node) in kept_nodes
            or node_label(node).rsplit("/", 1)[0] in kept_nodes and node.op in TABLE_ACTIVATIONS}
    # Every float activation a node reads or writes gets a range.
    wanted = {name for node in graph.nodes for name in (*node.inputs, *node.outputs)
              if name and not graph.is_constant(name) and graph.tensors[name].dtype == "float32"}
    softmax_inputs = {node.inputs[0]: int(node.attrs["axis"]) for node in graph.nodes if node.op == "Softmax"}
    calibration = calibrate(graph, batches, wanted, options["method"], options["percentile"],
                            options["progress"], row_axes=softmax_inputs)
    report.calibration_samples = len(batches)
    if options["method"] == "auto":
        report.methods = dict(calibration.methods)
    rewriter = _Rewriter(graph, calibration, options["method"])
    rewriter.keep_top(_softmax_feeders(graph, calibration))
    rewriter.keep_observed(_layer_norm_inputs(graph))
    layers = []
    for index, node in enumerate(graph.nodes):
        reason = _float_reason(graph, node, index, keep, rewriter.int8_of, calibration)
        if reason is not None:
            if _counts_as_left_float(reason):
                report.float_ops.append(FloatOp(node_label(node), node.op, reason))
            rewriter.keep_float(node, dynamic_weights=reason != "--keep-float")
            continue
        outputs = rewriter.to_int8(node)
        for name, twin in zip(node.outputs, outputs):
            if name:
                layers.append(QuantizedLayer(node_label(node), node.op, name, twin, rewriter.quantization[twin]))
    result = remove_dead_nodes(rewriter.finish())
    report.sentinels = _sentinel_report(rewriter, calibration)
    report.quantize_nodes = sum(1 for node in result.nodes if node.op == "Quantize")
    report.dequantize_nodes = sum(1 for node in result.nodes if node.op == "Dequantize")
    return result, layers

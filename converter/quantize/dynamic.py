"""dynamic mode: int8 per-channel weights, float activations quantized per row at run time.

FullyConnected, Conv2D (depthwise included) and BatchMatMul with a constant right operand keep
float32 inputs and outputs; only the weight tensor is replaced by an int8 one with symmetric
per-output-channel params (FullyConnected w[N, K] and Conv2D OHWI/OIHW: axis 0; BatchMatMul b:
the N axis, rank-1, or rank-2 with transpose_b). Float x with int8 weights is what selects the
dynamic kernel; the bias stays float32. Everything else is untouched.
"""
from __future__ import annotations

from converter.ir import Graph, Node, TensorType
from converter.ops import OPS
from converter.quantize.common import QuantizedLayer, node_label
from converter.quantize.params import quantize_weights

def weight_axis(node: Node, rank: int) -> int:
    """The output-channel axis of a node's weight (input 1)."""
    if node.op == "BatchMatMul":
        return rank - 2 if node.attrs.get("transpose_b") else rank - 1
    return 0


def dynamic_reason(graph: Graph, node: Node) -> str | None:
    """Why ``node`` cannot take int8 weights in dynamic mode; None if it can."""
    if len(node.inputs) < 2 or not node.inputs[1]:
        return "no weight input"
    x, w = node.inputs[0], node.inputs[1]
    if not graph.is_constant(w):
        return "weights are not constant" if w not in graph.variables else "weights are variables"
    if graph.tensors[x].dtype != "float32" or graph.tensors[w].dtype != "float32":
        return "not float32"
    return None


def quantize_dynamic(graph: Graph, keep_float: set[int]) -> tuple[Graph, list[QuantizedLayer], list]:
    """(dynamic graph, layers with int8 weights, [(node, op, reason)] left float)."""
    tensors = dict(graph.tensors)
    constants = dict(graph.constants)
    quantization = dict(graph.quantization)
    taken = set(tensors) | {n.name for n in graph.nodes}
    converted: dict[tuple[str, int], str] = {}
    nodes, layers, left = [], [], []
    for index, node in enumerate(graph.nodes):
        if OPS[node.op].dynamic is None:
            nodes.append(node)
            continue
        reason = "--keep-float" if index in keep_float else dynamic_reason(graph, node)
        if reason:
            left.append((node_label(node), node.op, reason))
            nodes.append(node)
            continue
        w = node.inputs[1]
        axis = weight_axis(node, graph.tensors[w].rank)
        key = (w, axis)
        if key not in converted:
            q, params = quantize_weights(graph.constants[w], axis)
            name = f"{w}_int8"
            k = 1
            while name in taken:
                name, k = f"{w}_int8_{k}", k + 1
            taken.add(name)
            constants[name] = q
            tensors[name] = TensorType("int8", q.shape)
            quantization[name] = params
            converted[key] = name
        inputs = list(node.inputs)
        inputs[1] = converted[key]
        nodes.append(node.with_(inputs=tuple(inputs)))
        layers.append(QuantizedLayer(node_label(node), node.op, node.outputs[0], node.outputs[0]))
    result = graph.replace(nodes=tuple(nodes), tensors=tensors, constants=constants, quantization=quantization)
    return result, layers, left

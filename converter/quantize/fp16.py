"""fp16 mode: float32 weights stored as float16, widened back by a Dequantize node.

Every float32 constant (not a variable) with at least ``MIN_ELEMENTS`` elements that some node
outside --keep-float reads becomes a float16 constant ``<name>_fp16`` followed by a Dequantize
(float16 -> float32) producing ``<name>``; the runtime computes such a Dequantize once at prepare,
so run time equals float32 while the file holds half the bytes. Small constants (shapes, scalars,
LayerNorm epsilons) stay float32: they save nothing and some must stay exact.
"""
from __future__ import annotations

import numpy as np

from converter.ir import Graph, Node, TensorType
from converter.quantize.common import QuantizedLayer, node_label

MIN_ELEMENTS = 16


def quantize_fp16(graph: Graph, keep_float: set[int]) -> tuple[Graph, list[QuantizedLayer], int]:
    """(fp16 graph, layers reading a float16 weight, Dequantize nodes added)."""
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            if name and graph.is_constant(name):
                readers.setdefault(name, []).append(index)
    chosen = [name for name, users in readers.items()
              if graph.tensors[name].dtype == "float32" and graph.tensors[name].size >= MIN_ELEMENTS
              and any(i not in keep_float for i in users)]
    tensors = dict(graph.tensors)
    constants = dict(graph.constants)
    taken = set(tensors) | {n.name for n in graph.nodes}
    widen = []
    for name in chosen:
        half = _fresh(f"{name}_fp16", taken)
        constants[half] = np.asarray(constants.pop(name), np.float32).astype(np.float16)
        tensors[half] = TensorType("float16", graph.tensors[name].shape)
        widen.append(Node("Dequantize", (half,), (name,), {}, name=_fresh(f"{name}_dequantize", taken)))
    # Kept-float readers of a converted weight read it widened too (float16 -> float32 is exact
    # only one way); a user who needs the exact float32 weight keeps the whole model float32.
    layers, seen = [], set()
    for index in sorted({i for name in chosen for i in readers[name]}):
        node = graph.nodes[index]
        for out in node.outputs:
            if out and out not in seen and graph.tensors[out].dtype == "float32":
                seen.add(out)
                layers.append(QuantizedLayer(node_label(node), node.op, out, out))
    # The Dequantize nodes go first: every later node may read their outputs.
    result = graph.replace(nodes=tuple(widen) + graph.nodes, tensors=tensors, constants=constants)
    return result, layers, len(widen)


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name

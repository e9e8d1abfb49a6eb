"""What the three quantization modes share: --keep-float names, the per-layer error run, and
bookkeeping of which constants the graph still uses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph, Node, Quantization
from converter.ops.int8_reference import dequantize_values
from converter.quantize.report import LayerError, SqnrAccumulator


@dataclass(frozen=True)
class QuantizedLayer:
    """A node of the float graph whose output the quantized graph also computes: ``tensor`` in
    the float graph, ``twin`` in the quantized one (int8 with ``params``, or float when None)."""
    node: str
    op: str
    tensor: str
    twin: str
    params: Quantization | None = None


def node_label(node: Node) -> str:
    return node.name or node.outputs[0]


def resolve_keep_float(graph: Graph, names: Iterable[str]) -> set[int]:
    """Indices of the nodes named (by node name or by an output tensor name) in ``names``;
    unknown names raise ConversionError listing them."""
    wanted = [n for n in names or () if n]
    found: set[int] = set()
    unknown = []
    for name in wanted:
        hits = {i for i, node in enumerate(graph.nodes) if node.name == name or name in node.outputs}
        if not hits:
            unknown.append(name)
        found |= hits
    if unknown:
        raise ConversionError(f"--keep-float: no node or node output named {', '.join(map(repr, unknown))} "
                              f"in the converted graph (names are those of the optimized graph; "
                              f"`edge inspect` lists them)")
    return found


def check_quantizable(graph: Graph) -> None:
    explicit = [key for key, sig in graph.signatures.items() if sig.nodes is not None]
    if explicit:
        raise ConversionError(f"cannot quantize a graph whose signatures {explicit} list their nodes "
                              f"(a trainable model); quantize the inference graph instead")


def used_constants(graph: Graph) -> set[str]:
    return {i for node in graph.nodes for i in node.inputs if i and i in graph.constants}


def drop_unused(constants: Mapping[str, np.ndarray], tensors: dict, nodes: Sequence[Node],
                keep: Iterable[str]) -> tuple[dict, dict]:
    """Constants (and their types) that no node reads and no graph input/output names are dropped."""
    read = {i for node in nodes for i in node.inputs if i} | set(keep)
    produced = {o for node in nodes for o in node.outputs if o}
    constants = {k: v for k, v in constants.items() if k in read}
    tensors = {k: t for k, t in tensors.items() if k in read or k in produced or k in constants}
    return constants, tensors


def measure_sqnr(float_graph: Graph, quantized_graph: Graph, batches: Sequence[Mapping[str, np.ndarray]],
                 layers: Sequence[QuantizedLayer]) -> list[LayerError]:
    """Per-layer SQNR of the quantized graph's outputs against the float graph's, over ``batches``."""
    from converter.reference import run

    accumulator = SqnrAccumulator()
    for feeds in batches:
        reference = run(float_graph, feeds, keep_all=True)
        quantized = run(quantized_graph, feeds, keep_all=True)
        for layer in layers:
            if layer.tensor not in reference or layer.twin not in quantized:
                continue
            value = quantized[layer.twin]
            if layer.params is not None:
                value = dequantize_values(value, layer.params)
            accumulator.add(layer.tensor, reference[layer.tensor], value)
        del reference, quantized
    return [LayerError(layer.node, layer.op, layer.tensor, accumulator.result(layer.tensor))
            for layer in layers]

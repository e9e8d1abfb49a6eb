"""Constant folding."""
from __future__ import annotations

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph
from converter.ops import OPS
from converter.passes._edit import GraphEdit

# An op whose output would hold more than this many elements, and more than
# FOLD_MAX_GROWTH times its constant inputs, stays an op: folding it would bloat the file
# (BroadcastTo/Expand to a huge shape, ConstantOfShape-like patterns).
FOLD_MAX_ELEMENTS = 1 << 20
FOLD_MAX_GROWTH = 2


def fold_constants(graph: Graph) -> Graph:
    """Evaluates every node whose inputs are all constants (not variables) with the op's NumPy
    reference and replaces it by constants of the declared output types. Keeps the computed
    values identical; keeps graph outputs produced by nodes (a graph output never becomes a bare
    constant), and leaves ops whose outputs would be much larger than their inputs."""
    edit = GraphEdit(graph)
    boundary = edit.boundary()
    kept = []
    for node in edit.nodes:
        present = [i for i in node.inputs if i]
        foldable = (present and all(edit.is_constant(i) for i in present)
                    and not any(o in boundary for o in node.outputs if o)
                    and node.op in OPS)
        if foldable:
            out_types = [edit.type_of(o) for o in node.outputs if o]
            if not all(t is not None and t.is_static for t in out_types):
                foldable = False
            else:
                out_size = sum(t.size for t in out_types)
                in_size = sum(edit.constants[i].size for i in present)
                if out_size > FOLD_MAX_ELEMENTS and out_size > FOLD_MAX_GROWTH * in_size:
                    foldable = False
        if not foldable:
            kept.append(node)
            continue
        arrays = [edit.constants[i] if i else None for i in node.inputs]
        try:
            results = OPS[node.op].reference(arrays, node.attrs)
        except Exception as exc:
            raise ConversionError(
                f"folding {node.op} node {node.name or node.outputs[0]!r}: reference failed: {exc}") from exc
        for name, value in zip(node.outputs, results):
            if not name:
                continue
            declared = edit.tensors[name]
            value = np.asarray(value)
            if value.shape != tuple(declared.shape):
                raise ConversionError(
                    f"folding {node.op} node {node.name or name!r}: output {name!r} has shape "
                    f"{value.shape}, its declared type says {declared.shape}")
            edit.constants[name] = np.asarray(value, dtype=declared.dtype, order="C")
    edit.nodes = kept
    return edit.build()

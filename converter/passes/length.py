"""Run-time lengths up to the converted one: constants that depend on a dynamic input dim become
slices of themselves to the length the model is given.

An exporter folds whatever it can compute from shapes: a transformer's position ids, its causal
mask or a T5 relative-position bias arrive as constants sized for the sequence length of the
export. Imported once more at a shorter length (``other``, the same model with every dynamic
input dim shrunk), such a constant has the same name and a shorter shape; when its value there
is exactly the leading block of its value here, the model works at every length up to the
converted one by reading that block. ``bind_length_constants`` replaces each such constant's uses
with ``Slice(constant, ref)``: start 0, and along each dim that changed, an end taken at run time
from the axis of ``ref`` that changes the same way (a graph input where one does, else a tensor
computed before the constant's first use; ``SliceOptions.ends_from``). The runtime refuses a
length above the converted one with a message saying so.

A constant that changes in any other way (not a leading block, or no tensor changes as it does)
leaves the graph as it is and is named in the returned notes: the model then runs at the
converted length only, as before.
"""
from __future__ import annotations

import numpy as np

from converter.ir import Graph
from converter.passes._edit import GraphEdit


def shrunk_lengths(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Input name -> its shape with every dynamic dim (``graph.dynamic_dims``) of size >= 2
    halved; {} when there is none (a dim of 1, as a dynamic batch usually is, cannot shrink)."""
    shapes = {}
    for name in graph.inputs:
        axes = graph.dynamic_dims.get(name, ())
        shape = list(graph.tensors[name].shape)
        if any(shape[a] >= 2 for a in axes):
            for a in axes:
                if shape[a] >= 2:
                    shape[a] //= 2
            shapes[name] = tuple(shape)
    if not shapes:
        return {}
    return {name: shapes.get(name, tuple(graph.tensors[name].shape)) for name in graph.inputs}


def _references(graph: Graph, other: Graph) -> list[tuple[str, int, tuple[int, int]]]:
    """(tensor, axis, (size here, size there)) for every axis of a computed tensor or input that
    changes between the two imports, inputs first, then in the order the nodes compute them."""
    order = list(graph.inputs) + [o for n in graph.nodes for o in n.outputs if o]
    found = []
    for name in order:
        if name in graph.constants or name not in other.tensors or name not in graph.tensors:
            continue
        here, there = graph.tensors[name].shape, other.tensors[name].shape
        if len(here) != len(there):
            continue
        found += [(name, axis, (a, b)) for axis, (a, b) in enumerate(zip(here, there)) if a != b]
    return found


def bind_length_constants(graph: Graph, other: Graph) -> tuple[Graph, list[str], list[str]]:
    """``graph`` with each length-dependent constant read through a run-time Slice; also the
    names of the constants bound and notes on those that could not be."""
    references = _references(graph, other)
    edit = GraphEdit(graph)
    first_use = {}
    for index, node in enumerate(graph.nodes):
        for name in node.inputs:
            first_use.setdefault(name, index)
    computed_at = {o: index for index, n in enumerate(graph.nodes) for o in n.outputs if o}
    bound, notes = [], []
    inserts = []
    for name in list(graph.constants):
        if name not in other.constants or name in graph.variables or name not in first_use:
            continue
        here, there = np.asarray(graph.constants[name]), np.asarray(other.constants[name])
        if here.shape == there.shape:
            continue
        if here.ndim != there.ndim or any(b > a for a, b in zip(here.shape, there.shape)):
            notes.append(f"constant {name!r} is {here.shape} at the converted length and {there.shape} at a "
                         f"shorter one: not a leading block")
            continue
        if not np.array_equal(here[tuple(slice(0, b) for b in there.shape)], there):
            notes.append(f"constant {name!r} at a shorter length is not the leading block of its value at the "
                         f"converted length")
            continue
        use = first_use[name]
        ends_from: dict[str, list[int]] = {}
        missing = []
        for axis, pair in enumerate(zip(here.shape, there.shape)):
            if pair[0] == pair[1]:
                continue
            ref = next(((t, a) for t, a, sizes in references
                        if sizes == pair and computed_at.get(t, -1) < use), None)
            if ref is None:
                missing.append(axis)
                continue
            ends_from.setdefault(ref[0], [-1] * here.ndim)[axis] = ref[1]
        if missing:
            notes.append(f"constant {name!r}: no tensor computed before its first use changes with its dims "
                         f"{missing}")
            continue
        source = name
        for ref, axes in ends_from.items():
            node = edit.make_node("Slice", [source, ref],
                                  {"starts": (0,) * here.ndim, "ends": tuple(here.shape),
                                   "steps": (1,) * here.ndim, "ends_from": tuple(axes)}, f"{name}/to_length")
            inserts.append((use, node))
            source = node.outputs[0]
        edit.rename(name, source)      # the new slices are not in edit.nodes yet: they keep reading it
        bound.append(name)
    # Every computed tensor's dims that changed with the length follow it: recorded here, the
    # writer marks them -1 and sizes a Reshape's target from them, where the exporter folded a
    # shape computed from the length into the target (a view(batch, length, -1, d)).
    for name, axis, _ in references:
        if name not in graph.inputs:
            edit.dynamic_dims[name] = tuple(sorted({*edit.dynamic_dims.get(name, ()), axis}))
    # Each new slice goes right before the first node that read its constant (edit.nodes still
    # holds the original nodes, in their order).
    placed: dict[int, list] = {}
    for use, node in inserts:
        placed.setdefault(use, []).append(node)
    edit.nodes = [x for index, n in enumerate(edit.nodes) for x in (*placed.get(index, ()), n)]
    return edit.build(), bound, notes

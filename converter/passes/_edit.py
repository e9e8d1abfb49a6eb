"""A scratch copy of a Graph that a pass edits, then turns back into a new Graph.

Passes are pure from the outside (graph in, new graph out); inside, rewriting a mutable copy is
far simpler than threading immutable updates through every rule. Nothing here touches the
argument graph.
"""
from __future__ import annotations

import heapq
from typing import Iterable

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph, Node, TensorType
from converter.ops import OPS

# Ops that move int8 values without changing them: their input and outputs share params.
PARAMS_PRESERVING_OPS = ("Reshape", "Identity", "Transpose", "Slice", "Gather", "Split", "MaxPool2D", "Pad")


class GraphEdit:
    def __init__(self, graph: Graph):
        self.source = graph
        self.nodes: list[Node] = list(graph.nodes)
        self.inputs = list(graph.inputs)
        self.outputs = list(graph.outputs)
        self.tensors: dict[str, TensorType] = dict(graph.tensors)
        self.constants: dict[str, np.ndarray] = dict(graph.constants)
        self.variables = set(graph.variables)
        self.quantization = dict(graph.quantization)
        self.signatures = dict(graph.signatures)
        self.dynamic_dims = dict(graph.dynamic_dims)
        self._taken = set(self.tensors) | {n.name for n in self.nodes if n.name}

    # ---- queries ----
    def is_constant(self, name: str) -> bool:
        return bool(name) and name in self.constants and name not in self.variables

    def producers(self) -> dict[str, tuple[int, Node]]:
        return {out: (i, n) for i, n in enumerate(self.nodes) for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in n.inputs:
                if name:
                    users.setdefault(name, []).append(n)
        return users

    def boundary(self) -> set[str]:
        """Tensors whose names the outside world sees: graph inputs/outputs and signature ends."""
        names = set(self.inputs) | set(self.outputs)
        for sig in self.signatures.values():
            names |= set(sig.inputs.values()) | set(sig.outputs.values())
        return names

    def type_of(self, name: str) -> TensorType | None:
        return self.tensors.get(name) if name else None

    # ---- edits ----
    def new_name(self, base: str) -> str:
        name, k = base, 1
        while name in self._taken:
            name = f"{base}_{k}"
            k += 1
        self._taken.add(name)
        return name

    def add_constant(self, base: str, array: np.ndarray, dtype: str | None = None) -> str:
        dtype = dtype or str(np.asarray(array).dtype)
        array = np.asarray(array, dtype=dtype, order="C")
        name = self.new_name(base)
        self.constants[name] = array
        self.tensors[name] = TensorType(dtype, array.shape)
        return name

    def set_tensor(self, name: str, ttype: TensorType) -> None:
        self._taken.add(name)
        self.tensors[name] = ttype

    def infer(self, op: str, inputs: Iterable[str], attrs) -> list[TensorType]:
        types = [self.type_of(i) for i in inputs]
        try:
            return list(OPS[op].infer(types, attrs))
        except Exception as exc:
            raise ConversionError(f"{op}: shape inference failed on inputs {list(inputs)}: {exc}") from exc

    def make_node(self, op: str, inputs: list[str], attrs: dict, output_base: str,
                  output_names: list[str] | None = None) -> Node:
        """A new node whose output types come from the op table's shape rule."""
        types = self.infer(op, inputs, attrs)
        names = output_names or [self.new_name(f"{output_base}" if len(types) == 1 else f"{output_base}_{k}")
                                 for k in range(len(types))]
        for name, t in zip(names, types):
            self.set_tensor(name, t)
        return Node(op, tuple(inputs), tuple(names), attrs, name=self.new_name(f"{op}:{names[0]}"))

    def rename(self, old: str, new: str) -> None:
        """Every use of tensor ``old`` (node inputs, graph outputs, signatures) reads ``new``."""
        self.nodes = [n.with_(inputs=tuple(new if i == old else i for i in n.inputs))
                      if old in n.inputs else n for n in self.nodes]
        self.outputs = [new if o == old else o for o in self.outputs]
        for key, sig in list(self.signatures.items()):
            if old in sig.inputs.values() or old in sig.outputs.values():
                self.signatures[key] = type(sig)(
                    {k: new if v == old else v for k, v in sig.inputs.items()},
                    {k: new if v == old else v for k, v in sig.outputs.items()}, sig.nodes)

    def rename_everywhere(self, old: str, new: str) -> None:
        """Renames a tensor itself: its producer's output, its uses and its metadata."""
        self.rename(old, new)
        self.nodes = [n.with_(outputs=tuple(new if o == old else o for o in n.outputs))
                      if old in n.outputs else n for n in self.nodes]
        self.inputs = [new if i == old else i for i in self.inputs]
        for table in (self.tensors, self.constants, self.quantization, self.dynamic_dims):
            if old in table:
                table[new] = table.pop(old)
        if old in self.variables:
            self.variables.discard(old)
            self.variables.add(new)
        self._taken.add(new)

    def drop_unreferenced(self) -> None:
        """Forgets tensors (and constant data) no node, graph end or signature refers to."""
        used = self.boundary() | self.variables
        for n in self.nodes:
            used.update(x for x in n.inputs if x)
            used.update(x for x in n.outputs if x)
        for table in (self.tensors, self.constants, self.quantization, self.dynamic_dims):
            for name in [k for k in table if k not in used]:
                del table[name]

    def prune_dead(self) -> int:
        """Removes nodes none of whose outputs is used or seen from outside; returns how many."""
        if self.quantization:
            # Before a removed Transpose takes the link between two int8 names with it.
            self.inherit_quantization()
        keep = self.boundary()
        removed = 0
        while True:
            used = set(keep)
            for n in self.nodes:
                used.update(x for x in n.inputs if x)
            alive = [n for n in self.nodes if any(o in used for o in n.outputs if o)]
            if len(alive) == len(self.nodes):
                return removed
            removed += len(self.nodes) - len(alive)
            self.nodes = alive

    def inherit_quantization(self) -> None:
        """An int8 tensor on either side of a params-preserving op (a Transpose a pass inserted,
        a Reshape it merged) gets the per-tensor params of the other side, so passes written for
        float graphs keep an int8 graph's params."""
        changed = True
        while changed:
            changed = False
            for node in self.nodes:
                if node.op not in PARAMS_PRESERVING_OPS or not node.inputs:
                    continue
                ends = [node.inputs[0], *(o for o in node.outputs if o)]
                if any(self.tensors.get(n) is None or self.tensors[n].dtype != "int8" for n in ends):
                    continue
                known = next((self.quantization[n] for n in ends if n in self.quantization), None)
                if known is None or len(known.scale) != 1:
                    continue
                for name in ends:
                    if name not in self.quantization:
                        self.quantization[name] = known
                        changed = True

    # ---- result ----
    def build(self) -> Graph:
        if self.quantization:
            self.inherit_quantization()
        self.drop_unreferenced()
        return self.source.replace(
            nodes=tuple(toposorted(self.nodes, set(self.inputs) | set(self.constants))),
            inputs=tuple(self.inputs), outputs=tuple(self.outputs), tensors=self.tensors,
            constants=self.constants, variables=frozenset(self.variables),
            quantization=self.quantization, signatures=self.signatures,
            dynamic_dims=self.dynamic_dims)


def toposorted(nodes: list[Node], available: set[str]) -> list[Node]:
    """Kahn's algorithm, preferring the current order, so already-sorted lists stay unchanged."""
    producer_index = {o: i for i, n in enumerate(nodes) for o in n.outputs if o}
    waiting_on = []
    dependents: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        deps = {producer_index[x] for x in n.inputs if x and x in producer_index and x not in available}
        deps.discard(i)
        waiting_on.append(len(deps))
        for d in deps:
            dependents.setdefault(d, []).append(i)
    ready = [i for i, w in enumerate(waiting_on) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in dependents.get(i, ()):
            waiting_on[j] -= 1
            if waiting_on[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op for i, w in enumerate(waiting_on) if w > 0]
        raise ConversionError(f"graph has a cycle through nodes {stuck[:5]}")
    return order


def activation_of(node: Node):
    return node.attrs.get("activation") or None

"""A small pattern language for graph rewrites, so that fusions are tables of data.

A pattern describes the computation that produces one tensor (the *root*). Matching walks from
the root towards the graph inputs through producers:

- ``Var(name)`` matches any tensor and binds it; a name bound twice must bind the same tensor
  (``x * f(x)``). ``Var(name, inner)`` matches ``inner`` and binds the tensor it matched.
- ``Const(value)`` matches a constant (not a variable): a size-1 one within ``rel`` of ``value``,
  or with ``value=None`` any constant (``scalar=True``: of size 1). ``name`` binds it.
- ``Op(op, inputs)`` matches the output of a node of that op (or one of several); Add, Mul, Min
  and Max try both input orders. ``inputs=None`` leaves the inputs unmatched. ``where(node, m)``
  is an extra test; ``name`` binds the node.
- ``Product(factors, scale)`` matches a product in any association and order: the Mul nodes
  under the root, divisions by size-1 constants and Pows with small integer exponents are
  flattened into leaves and one constant factor, which must be ``scale`` (within ``rel``);
  the leaves must match ``factors`` one to one. So one pattern covers ``x * 0.5 * y``,
  ``(x * y) * 0.5``, ``x * y / 2`` and ``0.5 * (y * x)``.
- ``AnyOf(options)`` matches the first option that matches.

A match is only accepted when every node it covers other than the root's producer is read by
matched nodes alone and produces no graph-visible tensor: replacing the matched nodes then
cannot change any other value.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

from converter.errors import ConversionError
from converter.ir import Node
from converter.passes._edit import GraphEdit

COMMUTATIVE = frozenset({"Add", "Mul", "Min", "Max"})
# Pow exponents a Product expands into repeated factors (x^3 = x * x * x).
POW_EXPANSIONS = (2, 3, 4)


class Pattern:
    pass


@dataclass(frozen=True)
class Var(Pattern):
    name: str
    inner: Pattern | None = None


@dataclass(frozen=True)
class Const(Pattern):
    value: float | None = None
    name: str | None = None
    scalar: bool = True
    rel: float = 1e-6


@dataclass(frozen=True)
class Op(Pattern):
    op: str | tuple[str, ...]
    inputs: tuple[Pattern, ...] | None = ()
    where: Callable[[Node, "Match"], bool] | None = None
    name: str | None = None


@dataclass(frozen=True)
class Product(Pattern):
    factors: tuple[Pattern, ...]
    scale: float = 1.0
    rel: float = 1e-6


@dataclass(frozen=True)
class AnyOf(Pattern):
    options: tuple[Pattern, ...]


@dataclass(frozen=True)
class Match:
    tensors: Mapping[str, str] = field(default_factory=dict)
    nodes: Mapping[str, Node] = field(default_factory=dict)
    covered: frozenset[int] = frozenset()       # indices (in GraphEdit.nodes) of matched nodes

    def bind_tensor(self, name: str, tensor: str) -> "Match":
        return Match({**self.tensors, name: tensor}, self.nodes, self.covered)

    def bind_node(self, name: str | None, index: int, node: Node) -> "Match":
        nodes = {**self.nodes, name: node} if name else self.nodes
        return Match(self.tensors, nodes, self.covered | {index})

    def cover(self, indices) -> "Match":
        return Match(self.tensors, self.nodes, self.covered | frozenset(indices))


@dataclass(frozen=True)
class Rule:
    """``pattern`` matched at a root tensor; ``rewrite(edit, match, root)`` returns the nodes that
    replace the matched ones (the last of them producing ``root``), or None to decline."""
    name: str
    pattern: Pattern
    rewrite: Callable[[GraphEdit, Match, str], list[Node] | None]


def scalar_value(edit: GraphEdit, name: str) -> float | None:
    """The value of a size-1 float constant, else None."""
    if not edit.is_constant(name):
        return None
    value = edit.constants[name]
    if value.size != 1 or value.dtype.kind != "f":
        return None
    return float(value.reshape(()))


def close(actual: float, expected: float, rel: float) -> bool:
    return abs(actual - expected) <= rel * max(abs(expected), 1e-30)


class Matcher:
    def __init__(self, edit: GraphEdit):
        self.edit = edit
        self.producers = edit.producers()
        self.boundary = edit.boundary()
        self.readers: dict[str, set[int]] = {}
        for i, n in enumerate(edit.nodes):
            for name in n.inputs:
                if name:
                    self.readers.setdefault(name, set()).add(i)

    # ---- matching ----
    def match(self, pattern: Pattern, tensor: str, m: Match) -> Iterator[Match]:
        if isinstance(pattern, Var):
            bound = m.tensors.get(pattern.name)
            if bound is not None:
                if bound == tensor:
                    yield m
                return
            if pattern.inner is None:
                yield m.bind_tensor(pattern.name, tensor)
                return
            for found in self.match(pattern.inner, tensor, m):
                yield found.bind_tensor(pattern.name, tensor)
        elif isinstance(pattern, Const):
            yield from self._const(pattern, tensor, m)
        elif isinstance(pattern, Op):
            yield from self._op(pattern, tensor, m)
        elif isinstance(pattern, Product):
            yield from self._product(pattern, tensor, m)
        elif isinstance(pattern, AnyOf):
            for option in pattern.options:
                yield from self.match(option, tensor, m)
        else:
            raise TypeError(f"not a pattern: {pattern!r}")

    def _const(self, pattern: Const, tensor: str, m: Match) -> Iterator[Match]:
        if not self.edit.is_constant(tensor):
            return
        if pattern.value is not None or pattern.scalar:
            value = scalar_value(self.edit, tensor)
            if value is None or (pattern.value is not None and not close(value, pattern.value, pattern.rel)):
                return
        yield m.bind_tensor(pattern.name, tensor) if pattern.name else m

    def _op(self, pattern: Op, tensor: str, m: Match) -> Iterator[Match]:
        found = self.producers.get(tensor)
        if found is None:
            return
        index, node = found
        ops = (pattern.op,) if isinstance(pattern.op, str) else pattern.op
        if node.op not in ops or [o for o in node.outputs if o] != [tensor]:
            return
        m = m.bind_node(pattern.name, index, node)
        if pattern.inputs is None:
            candidates = [m]
        else:
            inputs = list(node.inputs)
            if len(inputs) != len(pattern.inputs):
                return
            orders = [inputs]
            if node.op in COMMUTATIVE and len(inputs) == 2 and inputs[0] != inputs[1]:
                orders.append(inputs[::-1])
            candidates = itertools.chain.from_iterable(
                self._all(pattern.inputs, order, m) for order in orders)
        for candidate in candidates:
            if pattern.where is None or pattern.where(node, candidate):
                yield candidate

    def _all(self, patterns, tensors, m: Match) -> Iterator[Match]:
        if not patterns:
            yield m
            return
        for first in self.match(patterns[0], tensors[0], m):
            yield from self._all(patterns[1:], tensors[1:], first)

    def _flatten(self, tensor: str, top: bool, leaves: list[str], covered: set[int]) -> float:
        """Appends the product's non-constant leaves under ``tensor``; returns its constant factor."""
        value = scalar_value(self.edit, tensor)
        if value is not None and not top:
            return value
        found = self.producers.get(tensor)
        exclusive = top or (len(self.readers.get(tensor, ())) == 1 and tensor not in self.boundary)
        if found is None or not exclusive:
            leaves.append(tensor)
            return 1.0
        index, node = found
        if node.op == "Mul" and len(node.inputs) == 2:
            covered.add(index)
            return (self._flatten(node.inputs[0], False, leaves, covered)
                    * self._flatten(node.inputs[1], False, leaves, covered))
        if node.op == "Div" and len(node.inputs) == 2:
            divisor = scalar_value(self.edit, node.inputs[1])
            if divisor:
                covered.add(index)
                return self._flatten(node.inputs[0], False, leaves, covered) / divisor
        if node.op == "Pow" and len(node.inputs) == 2:
            exponent = scalar_value(self.edit, node.inputs[1])
            if exponent in POW_EXPANSIONS:
                covered.add(index)
                leaves.extend([node.inputs[0]] * int(exponent))
                return 1.0
        leaves.append(tensor)
        return 1.0

    def _product(self, pattern: Product, tensor: str, m: Match) -> Iterator[Match]:
        leaves: list[str] = []
        covered: set[int] = set()
        scale = self._flatten(tensor, True, leaves, covered)
        if len(leaves) != len(pattern.factors) or not close(scale, pattern.scale, pattern.rel):
            return
        m = m.cover(covered)
        tried = set()
        for order in itertools.permutations(leaves):
            if order in tried:
                continue
            tried.add(order)
            yield from self._all(pattern.factors, list(order), m)

    # ---- acceptance ----
    def self_contained(self, m: Match, root: str) -> bool:
        """Every matched node other than the root's producer is read only inside the match and
        produces nothing visible from outside."""
        root_index = self.producers[root][0]
        for index in m.covered:
            if index == root_index:
                continue
            for out in self.edit.nodes[index].outputs:
                if out and (out in self.boundary or not self.readers.get(out, set()) <= m.covered):
                    return False
        return True

    def first_match(self, pattern: Pattern, root: str) -> Match | None:
        for m in self.match(pattern, root, Match()):
            if self.self_contained(m, root):
                return m
        return None


def output_type_kept(edit: GraphEdit, op: str, inputs, attrs, root: str) -> bool:
    """Whether ``op`` on ``inputs`` types exactly as the tensor it is to replace."""
    try:
        types = edit.infer(op, inputs, attrs)
    except ConversionError:
        return False
    return len(types) == 1 and types[0] == edit.type_of(root)


def apply_rules(edit: GraphEdit, rules: tuple[Rule, ...]) -> int:
    """Rewrites matches of ``rules`` until none is left; returns how many rewrites were made.

    Roots are tried from the graph's end towards its start, so the widest match of a chain (the
    Add after the Mul of a LayerNorm, not the Mul) is the one found first. Matches made in one
    sweep never overlap; the next sweep sees the rewritten graph."""
    total = 0
    while True:
        matcher = Matcher(edit)
        claimed: set[int] = set()
        replacements: dict[int, list[Node]] = {}
        for index in range(len(edit.nodes) - 1, -1, -1):
            if index in claimed:
                continue
            node = edit.nodes[index]
            live = [o for o in node.outputs if o]
            if len(live) != 1:
                continue
            root = live[0]
            for rule in rules:
                m = matcher.first_match(rule.pattern, root)
                if m is None or m.covered & claimed:
                    continue
                new_nodes = rule.rewrite(edit, m, root)
                if new_nodes is None:
                    continue
                claimed |= m.covered
                replacements[index] = new_nodes
                for other in m.covered - {index}:
                    replacements.setdefault(other, [])
                break
        if not replacements:
            return total
        total += sum(1 for nodes in replacements.values() if nodes)
        rebuilt: list[Node] = []
        for i, n in enumerate(edit.nodes):
            rebuilt.extend(replacements.get(i, [n]))
        edit.nodes = rebuilt

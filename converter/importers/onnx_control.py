"""ONNX control flow (If, Loop, Scan) -> the ops of its subgraphs, written out at import.

The runtime runs a static graph, so control flow imports where it can be written out as one:

* If: a condition known at import (a constant, or a value the importer folds, such as a comparison
  of shapes) inlines the branch it takes. A condition computed at run time computes both branches and
  picks each output with Where, when both branches give outputs of the same shape and dtype; the
  branch not taken then runs too, so it must be one that runs without error on any input.
* Loop: a trip count known at import unrolls the body that many times (at most ``MAX_ITERATIONS``),
  the loop-carried values threaded from one copy to the next and the scan outputs stacked on a new
  axis 0. The condition must be known at import after every copy; a false one ends the loop there.
* Scan: unrolled over its scan axis, whose length the static shapes give, each scan input read and
  each scan output written in its own direction and along its own axis.

Each copy of a subgraph goes through the ordinary converters (``ONNX_OPS``), node by node: its own
names (inputs, initializers, node outputs) are mapped to fresh IR names for that copy through
``OnnxImportBuilder.aliases``, which ``NodeContext`` reads every name through, so the names the body
takes from the enclosing graph resolve as they do there, constants fold across copies, and control
flow nested in a body is written out the same way. ``MAX_INLINED_NODES`` bounds the ONNX nodes one
control-flow node may write out, nested copies included.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers.onnx_builder import NodeContext, NodeInfo, tensor_to_array
from converter.importers.onnx_ops import converts

MAX_ITERATIONS = 1024
MAX_INLINED_NODES = 100_000
_SUBGRAPH_ATTRS = {"If": ("then_branch", "else_branch"), "Loop": ("body",), "Scan": ("body",)}


def all_graphs(graph: onnx.GraphProto):
    """``graph`` and every graph nested in its nodes' attributes, at any depth."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from all_graphs(attr.g)
            for sub in attr.graphs:
                yield from all_graphs(sub)


def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the graphs nested in it."""
    for each in all_graphs(graph):
        yield from each.node


def refuse_batch_scan(proto: onnx.ModelProto, opset: int) -> None:
    """Opset 8's Scan (a batch axis first, sequence_lens) cannot come up to the opsets imported:
    the ONNX version converter drops its batch axis from the graph's declared inputs. Refused."""
    if opset >= 9:
        return
    names = [node.name or f"Scan_{k}" for k, node in enumerate(all_nodes(proto.graph)) if node.op_type == "Scan"]
    if names:
        raise UnsupportedOpsError({"Scan (opset 8's batch form; opset 9 and up are supported)": names})


def used_names(graph: onnx.GraphProto) -> set[str]:
    """Names read by the nodes of ``graph`` and the graphs nested in it, or given as their outputs."""
    used = set()
    for each in all_graphs(graph):
        used.update(o.name for o in each.output)
        for node in each.node:
            used.update(i for i in node.input if i)
    return used


def _check_subgraphs(info: NodeInfo) -> list[str]:
    """The support scan's view of a control-flow node: its subgraphs' ops it has no converter for,
    and the attributes that rule out writing it out."""
    from converter.importers.onnx import _op_key

    reasons = []
    for attr in _SUBGRAPH_ATTRS[info.op_type]:
        graph = info.attr(attr)
        if graph is None:
            continue
        for node in all_nodes(graph):
            key = _op_key(node)
            reason = f"{attr} uses {key}"
            if key is not None and reason not in reasons:
                reasons.append(reason)
    if info.op_type == "Loop":
        count = info.static(0) if info.input(0) else None
        if not info.input(0) and info.input(1) and info.static(1) is None:
            reasons.append("no trip count and a condition computed at run time")
        elif count is not None and count.size == 1 and int(count.reshape(-1)[0]) > MAX_ITERATIONS:
            reasons.append(f"trip count {int(count.reshape(-1)[0])} over {MAX_ITERATIONS}")
    return reasons


class _Budget:
    """ONNX nodes written out so far under one top-level control-flow node."""

    def __init__(self):
        self.nodes = 0


def _budget(ctx: NodeContext) -> _Budget:
    # Nested control flow shares its outermost node's budget, kept on the builder while that node's
    # subgraphs are converted; the outermost node keeps it on its own context between copies.
    shared = getattr(ctx.builder, "control_flow_budget", None)
    if shared is not None:
        return shared
    if not hasattr(ctx, "control_flow_budget"):
        ctx.control_flow_budget = _Budget()
    return ctx.control_flow_budget


class _BuilderStatics(Mapping):
    """The values the importer knows so far, as NodeInfo reads them (ONNX names -> TensorProto)."""

    def __init__(self, ctx: NodeContext):
        self._ctx = ctx

    def __getitem__(self, name):
        value = self._ctx.const(self._ctx.builder.aliases.get(name, name)) if name else None
        if value is None:
            raise KeyError(name)
        return numpy_helper.from_array(np.asarray(value))

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


class _BuilderRanks(Mapping):
    def __init__(self, ctx: NodeContext):
        self._ctx = ctx

    def __getitem__(self, name):
        target = self._ctx.builder.aliases.get(name, name)
        if not name or (target not in self._ctx.builder.tensors and self._ctx.const(target) is None):
            raise KeyError(name)
        return self._ctx.rank(target)

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def inline_subgraph(ctx: NodeContext, graph: onnx.GraphProto, bound: list[str], label: str) -> list[str]:
    """Converts the nodes of ``graph`` once, its inputs bound to the IR tensors ``bound`` (in order);
    returns the IR tensors holding its outputs. ``label`` names this copy in node and tensor names."""
    from converter.importers.onnx import _converter, _op_key

    if len(bound) != len(graph.input):
        raise ctx.error(f"subgraph {graph.name!r} takes {len(graph.input)} inputs, {len(bound)} are given")
    builder = ctx.builder
    budget = _budget(ctx)
    budget.nodes += len(graph.node)
    if budget.nodes > MAX_INLINED_NODES:
        raise ctx.error(f"writing out the control flow takes over {MAX_INLINED_NODES} nodes "
                        f"({budget.nodes} so far); a static graph this large is refused")
    prefix = f"{ctx.name}/{label}"
    missing = object()
    saved: dict[str, object] = {}

    def bind(name: str, target: str) -> None:
        saved.setdefault(name, builder.aliases.get(name, missing))
        builder.aliases[name] = target

    used = used_names(graph)

    def is_used(name: str) -> bool:
        return name in used or any(builder.aliases.get(n) == name for n in used) or ctx.is_used(name)

    statics, ranks = _BuilderStatics(ctx), _BuilderRanks(ctx)
    previous_budget = getattr(builder, "control_flow_budget", None)
    builder.control_flow_budget = budget
    try:
        for value_info, target in zip(graph.input, bound):
            bind(value_info.name, target)
        for tensor in graph.initializer:
            name = builder.fresh_name(f"{prefix}/{tensor.name}")
            builder.add_constant(name, tensor_to_array(tensor, f"initializer {tensor.name!r} of {prefix}"))
            bind(tensor.name, name)
        if len(graph.sparse_initializer):
            raise ctx.error(f"subgraph {graph.name!r} has sparse initializers; not supported")
        for index, node in enumerate(graph.node):
            node_name = builder.fresh_node_name(f"{prefix}/{node.name or f'{node.op_type}_{index}'}")
            converter = _converter(node)
            if converter is None:
                raise UnsupportedOpsError({_op_key(node): [node_name]})
            if converter.check is not None:
                info = NodeInfo(node, ctx.opset, ranks, statics, set(), is_used)
                reasons = converter.check(info)
                if reasons:
                    raise UnsupportedOpsError({f"{node.op_type} ({r})": [node_name] for r in reasons})
            for output in node.output:
                if output:
                    bind(output, builder.fresh_name(f"{prefix}/{output}"))
            converter.convert(NodeContext(builder, node, node_name, ctx.opset, is_used))
        results = [builder.aliases.get(o.name, o.name) for o in graph.output]
    finally:
        builder.control_flow_budget = previous_budget
        for name, value in saved.items():
            if value is missing:
                del builder.aliases[name]
            else:
                builder.aliases[name] = value
    for name in results:
        builder.type_of(name)  # an output no node of the subgraph or the graph around it produces
    return results


def _condition_value(ctx: NodeContext, name: str, what: str) -> bool | None:
    """The value of a one-element bool tensor known at import, else None."""
    value = ctx.const(name)
    if value is None:
        return None
    if value.size != 1:
        raise ctx.error(f"{what} {name!r} has {value.size} elements; it must have one")
    return bool(value.reshape(-1)[0])


def _same_type(ctx: NodeContext, a: str, b: str) -> bool:
    return ctx.type(a) == ctx.type(b)


@converts("If", check=_check_subgraphs)
def _if(ctx: NodeContext):
    condition = ctx.input(0)
    taken = _condition_value(ctx, condition, "condition")
    branches = ("then_branch", "else_branch")
    if taken is not None:
        branch = branches[0] if taken else branches[1]
        results = inline_subgraph(ctx, ctx.attr(branch), [], branch)
        _check_output_count(ctx, branch, results)
        for result, output in zip(results, ctx.outputs):
            if output:
                ctx.copy_to(result, output)
        return
    then_results = inline_subgraph(ctx, ctx.attr("then_branch"), [], "then_branch")
    else_results = inline_subgraph(ctx, ctx.attr("else_branch"), [], "else_branch")
    _check_output_count(ctx, "then_branch", then_results)
    _check_output_count(ctx, "else_branch", else_results)
    for index, (a, b, output) in enumerate(zip(then_results, else_results, ctx.outputs)):
        if not output:
            continue
        if not _same_type(ctx, a, b):
            raise ctx.error(
                f"the condition is computed at run time and output {index} differs between the branches "
                f"(then {_describe(ctx, a)}, else {_describe(ctx, b)}); a static graph needs both alike")
        if ctx.type(condition).dtype != "bool":
            raise ctx.error(f"condition {condition!r} has dtype {ctx.type(condition).dtype}; expected bool")
        if ctx.type(condition).shape and int(np.prod(ctx.shape(condition))) != 1:
            raise ctx.error(f"condition {condition!r} has shape {list(ctx.shape(condition))}; it must have one element")
        scalar = ctx.reshape(condition, ())
        ctx.emit("Where", [scalar, a, b], {}, [output])


def _describe(ctx: NodeContext, name: str) -> str:
    t = ctx.type(name)
    return f"{t.dtype}[{', '.join(str(d) for d in t.shape)}]"


def _check_output_count(ctx: NodeContext, branch: str, results: list[str]) -> None:
    if len(results) != len(ctx.outputs):
        raise ctx.error(f"{branch} gives {len(results)} outputs; the node has {len(ctx.outputs)}")


def _stack(ctx: NodeContext, values: list[str], axis: int, output: str) -> None:
    """Writes ``values`` (same shape) stacked along a new ``axis`` to ``output``."""
    shape = ctx.shape(values[0])
    for value in values:
        if ctx.shape(value) != shape:
            raise ctx.error(f"scan output {output!r}: iterations give shapes {list(shape)} and "
                            f"{list(ctx.shape(value))}; they must be alike")
    axis = axis + len(shape) + 1 if axis < 0 else axis
    if not 0 <= axis <= len(shape):
        raise ctx.error(f"scan output axis {axis} is out of range for rank {len(shape) + 1}")
    expanded = shape[:axis] + (1,) + shape[axis:]
    pieces = [ctx.reshape(v, expanded) for v in values]
    if len(pieces) == 1:
        ctx.copy_to(pieces[0], output)
    else:
        ctx.emit("Concat", pieces, {"axis": axis}, [output])


@converts("Loop", check=_check_subgraphs)
def _loop(ctx: NodeContext):
    body = ctx.attr("body")
    carried = ctx.inputs[2:]
    scan_count = len(body.output) - 1 - len(carried)
    if any(not name for name in carried):
        raise ctx.error("a loop-carried input is left empty")
    if scan_count < 0 or len(ctx.outputs) > len(body.output) - 1:
        raise ctx.error(f"body gives {len(body.output)} outputs for {len(carried)} loop-carried values")
    trip_count = None
    if ctx.input(0):
        value = ctx.const(0)
        if value is None:
            raise ctx.error(f"trip count {ctx.input(0)!r} is computed at run time; the loop is unrolled at "
                            f"import and needs it constant")
        if value.size != 1:
            raise ctx.error(f"trip count {ctx.input(0)!r} has {value.size} elements; it must have one")
        trip_count = int(value.reshape(-1)[0])
    keep_going = True
    if ctx.input(1):
        keep_going = _condition_value(ctx, ctx.input(1), "condition")
        if keep_going is None:
            raise ctx.error(f"condition {ctx.input(1)!r} is computed at run time; the loop is unrolled at "
                            f"import and needs it constant")
    if trip_count is None and not ctx.input(1):
        raise ctx.error("the loop has neither a trip count nor a condition: it never ends")
    limit = MAX_ITERATIONS if trip_count is None else trip_count
    if limit > MAX_ITERATIONS:
        raise ctx.error(f"trip count {trip_count} is over {MAX_ITERATIONS}, the most iterations unrolled at import")
    scans: list[list[str]] = [[] for _ in range(scan_count)]
    iteration = 0
    while keep_going and iteration < limit:
        index = ctx.constant(np.array(iteration, np.int64), base=f"iteration_{iteration}")
        condition = ctx.constant(np.array(True), base=f"condition_{iteration}")
        results = inline_subgraph(ctx, body, [index, condition, *carried], f"iteration_{iteration}")
        keep_going = _condition_value(ctx, results[0], "the body's condition output")
        if keep_going is None:
            raise ctx.error(f"the body's condition output {body.output[0].name!r} is computed at run time; "
                            f"the loop is unrolled at import and needs it constant")
        carried = results[1:1 + len(carried)]
        for k, value in enumerate(results[1 + len(carried):]):
            scans[k].append(value)
        iteration += 1
    if trip_count is None and keep_going:
        raise ctx.error(f"the condition still holds after {MAX_ITERATIONS} iterations, the most unrolled at import")
    for value, output in zip(carried, ctx.outputs):
        if output:
            ctx.copy_to(value, output)
    for values, output in zip(scans, ctx.outputs[len(carried):]):
        if not output:
            continue
        if not values:
            raise ctx.error(f"scan output {output!r} is empty (the loop runs no iteration); empty tensors "
                            f"are not supported")
        _stack(ctx, values, 0, output)


def _scan_attr(ctx: NodeContext, key: str, count: int) -> list[int]:
    values = list(ctx.attr(key) or [0] * count)
    if len(values) != count:
        raise ctx.error(f"{key} has {len(values)} entries for {count} values")
    return [int(v) for v in values]


@converts("Scan", check=_check_subgraphs)
def _scan(ctx: NodeContext):
    body = ctx.attr("body")
    scan_inputs_count = int(ctx.attr("num_scan_inputs", 0))
    inputs = ctx.inputs
    if not 0 < scan_inputs_count <= len(inputs):
        raise ctx.error(f"num_scan_inputs = {scan_inputs_count} for a node with {len(inputs)} inputs")
    if any(not name for name in inputs):
        raise ctx.error("an input is left empty; every state and scan input must be given")
    state = inputs[:len(inputs) - scan_inputs_count]
    scan_inputs = inputs[len(state):]
    scan_outputs_count = len(body.output) - len(state)
    if scan_outputs_count < 0 or len(ctx.outputs) > len(body.output):
        raise ctx.error(f"body gives {len(body.output)} outputs for {len(state)} state values and "
                        f"{len(ctx.outputs)} node outputs")
    input_axes = _scan_attr(ctx, "scan_input_axes", scan_inputs_count)
    input_directions = _scan_attr(ctx, "scan_input_directions", scan_inputs_count)
    output_axes = _scan_attr(ctx, "scan_output_axes", scan_outputs_count)
    output_directions = _scan_attr(ctx, "scan_output_directions", scan_outputs_count)
    for key, directions in (("scan_input_directions", input_directions), ("scan_output_directions", output_directions)):
        if any(d not in (0, 1) for d in directions):
            raise ctx.error(f"{key} = {directions}: each must be 0 (forward) or 1 (reverse)")
    lengths = set()
    for k, (name, axis) in enumerate(zip(scan_inputs, input_axes)):
        rank = ctx.rank(name)
        if not -rank <= axis < rank:
            raise ctx.error(f"scan_input_axes[{k}] = {axis} is out of range for rank {rank}")
        input_axes[k] = axis % rank
        lengths.add(ctx.shape(name)[input_axes[k]])
    if len(lengths) != 1:
        raise ctx.error(f"the scan inputs have different lengths {sorted(lengths)} along their scan axes")
    length = lengths.pop()
    if length > MAX_ITERATIONS:
        raise ctx.error(f"the scan runs {length} iterations, over {MAX_ITERATIONS}, the most unrolled at import")
    if length == 0 and any(ctx.outputs[len(state):]):
        raise ctx.error("the scan axis is empty; empty tensors are not supported")
    scans: list[list[str]] = [[] for _ in range(scan_outputs_count)]
    for iteration in range(length):
        slices = []
        for name, axis, direction in zip(scan_inputs, input_axes, input_directions):
            position = length - 1 - iteration if direction else iteration
            shape = ctx.shape(name)
            starts, ends = [0] * len(shape), list(shape)
            starts[axis], ends[axis] = position, position + 1
            piece = ctx.emit1("Slice", [name], {"starts": tuple(starts), "ends": tuple(ends),
                                                "steps": (1,) * len(shape)})
            slices.append(ctx.reshape(piece, shape[:axis] + shape[axis + 1:]))
        results = inline_subgraph(ctx, body, [*state, *slices], f"iteration_{iteration}")
        state = results[:len(state)]
        for k, value in enumerate(results[len(state):]):
            scans[k].append(value)
    for value, output in zip(state, ctx.outputs):
        if output:
            ctx.copy_to(value, output)
    for values, axis, direction, output in zip(scans, output_axes, output_directions, ctx.outputs[len(state):]):
        if output:
            _stack(ctx, values[::-1] if direction else values, axis, output)

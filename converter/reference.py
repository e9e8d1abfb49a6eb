"""The NumPy reference executor: runs an IR graph node by node through each op's ``reference``
in ``converter.ops.OPS``. It is the semantic oracle the C kernels are tested against, so it is
written for clarity and checks everything it can (feeds, and each result against the graph's
declared tensor types)."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from converter.ir import Graph, TensorType, numpy_dtype
from converter.ops import lookup
from converter.ops.int8_reference import run_integer_node


class ReferenceRunError(RuntimeError):
    """A graph could not be run by the reference executor; the message names the node/tensor."""


def _check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    unknown = sorted(set(feeds) - set(graph.inputs))
    if unknown:
        raise ReferenceRunError(f"feeds {unknown} are not graph inputs; the inputs are {list(graph.inputs)}")
    missing = [name for name in graph.inputs if name not in feeds and name not in graph.constants]
    if missing:
        raise ReferenceRunError(f"graph inputs {missing} have no feed")
    for name, value in feeds.items():
        declared = graph.tensors.get(name)
        if declared is None:
            continue
        value = np.asarray(value)
        if value.dtype != numpy_dtype(declared.dtype):
            raise ReferenceRunError(f"input '{name}': got dtype {value.dtype}, expected {declared.dtype}")
        fits = value.ndim == declared.rank and all(
            isinstance(d, str) or d == actual for d, actual in zip(declared.shape, value.shape))
        if not fits:
            raise ReferenceRunError(f"input '{name}': got shape {value.shape}, expected {declared.shape}")


def _check_result(graph: Graph, node_label: str, name: str, value: np.ndarray, rows_bound: bool = False) -> None:
    """``rows_bound``: the declared leading dim is the most rows (OpDef.rows_set_at_eval)."""
    declared = graph.tensors.get(name)
    if declared is None:
        return
    if rows_bound and value.ndim == declared.rank and value.ndim and value.shape[0] <= declared.shape[0]:
        declared = TensorType(declared.dtype, (value.shape[0],) + tuple(declared.shape[1:]))
    if value.dtype != numpy_dtype(declared.dtype):
        raise ReferenceRunError(f"{node_label}: output '{name}' came out {value.dtype}, but the graph "
                                f"declares {declared.dtype}")
    if value.ndim != declared.rank or any(
            isinstance(d, int) and d != actual for d, actual in zip(declared.shape, value.shape)):
        raise ReferenceRunError(f"{node_label}: output '{name}' came out with shape {value.shape}, but "
                                f"the graph declares {declared.shape}")


def _run_node(graph: Graph, node, entry, args) -> list:
    """A node touching a quantized tensor (an entry in graph.quantization) runs through its
    integer reference with attrs["quantization"] = (input params, output params), lists aligned
    with node.inputs / node.outputs; every other node through the op's float reference."""
    if not graph.quantization or not any(
            name in graph.quantization for name in (*node.inputs, *node.outputs) if name):
        return entry.reference(args, node.attrs)
    params = ([graph.quantization.get(name) if name else None for name in node.inputs],
              [graph.quantization.get(name) if name else None for name in node.outputs])
    return run_integer_node(node.op, args, {**node.attrs, "quantization": params})


def _write_back_updates(entry, node, args, values: dict) -> None:
    """In-place ops (OptimizerUpdate, BatchNormTrain): the new values of the inputs they update
    replace those inputs' values for the nodes that follow (the graph's own constants are never
    touched)."""
    if entry.updates is None:
        return
    for k, value in entry.updates(args, node.attrs).items():
        if node.inputs[k]:
            values[node.inputs[k]] = np.asarray(value)


def run_signature(graph: Graph, key: str, feeds: Mapping[str, np.ndarray],
                  check_types: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Runs signature ``key`` (its node list, or every node when it has none) on ``feeds`` keyed
    by the signature's input names. Returns (outputs by the signature's output names, every
    variable's value afterwards); the graph is unchanged, so a caller carries training state
    from step to step with ``graph.replace(constants={**graph.constants, **variables})``."""
    signature = graph.signatures.get(key)
    if signature is None:
        raise ReferenceRunError(f"no signature {key!r}; the graph has {sorted(graph.signatures)}")
    unknown = sorted(set(feeds) - set(signature.inputs))
    if unknown:
        raise ReferenceRunError(f"signature {key!r}: feeds {unknown} are not its inputs "
                                f"{list(signature.inputs)}")
    nodes = graph.nodes if signature.nodes is None else tuple(graph.nodes[i] for i in signature.nodes)
    tensor_feeds = {signature.inputs[name]: value for name, value in feeds.items()}
    sub = graph.replace(nodes=nodes, inputs=tuple(signature.inputs.values()),
                        outputs=tuple(signature.outputs.values()))
    values = run(sub, tensor_feeds, keep_all=True, check_types=check_types)
    absent = [name for name, tensor in signature.outputs.items() if tensor not in values]
    if absent:
        raise ReferenceRunError(f"signature {key!r}: outputs {absent} were never computed")
    return ({name: values[tensor] for name, tensor in signature.outputs.items()},
            {name: values[name] for name in graph.variables})


def run(graph: Graph, feeds: Mapping[str, np.ndarray], outputs: Iterable[str] | None = None,
        keep_all: bool = False, check_types: bool = True) -> dict[str, np.ndarray]:
    """Runs ``graph`` on ``feeds`` (graph input name -> array). Returns the graph outputs, the
    tensors named in ``outputs``, or with ``keep_all`` every value computed or given."""
    _check_feeds(graph, feeds)
    values: dict[str, np.ndarray] = {name: np.asarray(v) for name, v in graph.constants.items()}
    values.update({name: np.asarray(v) for name, v in feeds.items()})
    for index, node in enumerate(graph.nodes):
        label = f"node {index} '{node.name or (node.outputs or (node.op,))[0]}' ({node.op})"
        entry = lookup(node.op)
        args = []
        for name in node.inputs:
            if name and name not in values:
                raise ReferenceRunError(f"{label}: input '{name}' is neither a graph input, a "
                                        f"constant nor produced by an earlier node")
            args.append(values[name] if name else None)
        try:
            results = _run_node(graph, node, entry, args)
        except ReferenceRunError:
            raise
        except Exception as error:
            raise ReferenceRunError(f"{label}: {type(error).__name__}: {error}") from error
        if len(results) < len(node.outputs):
            raise ReferenceRunError(f"{label}: produced {len(results)} outputs, the node names "
                                    f"{len(node.outputs)}")
        for name, value in zip(node.outputs, results):
            if not name:
                continue
            value = np.asarray(value)
            if check_types:
                _check_result(graph, label, name, value, entry.rows_set_at_eval)
            values[name] = value
        try:
            _write_back_updates(entry, node, args, values)
        except Exception as error:
            raise ReferenceRunError(f"{label}: {type(error).__name__}: {error}") from error
    if keep_all:
        return values
    wanted = list(graph.outputs if outputs is None else outputs)
    absent = [name for name in wanted if name not in values]
    if absent:
        raise ReferenceRunError(f"requested tensors {absent} were never computed")
    return {name: values[name] for name in wanted}


def run_node(op: str, inputs: list[np.ndarray | None], attrs: Mapping | None = None) -> list[np.ndarray]:
    """One op on arrays, without building a graph (tests and constant folding)."""
    return list(lookup(op).reference(inputs, dict(attrs or {})))

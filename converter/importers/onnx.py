"""ONNX -> IR.

``load_onnx`` checks the model, brings opsets below 13 up to 13, lists every unsupported op in one
error before building anything, fixes symbolic input dims, then converts node by node through the
``ONNX_OPS`` table, folding whatever is computable at import; If, Loop and Scan are written out
there as the ops of their subgraphs (``converter.importers.onnx_control``). The result is fully
static: every tensor has an int shape, and every Shape/Reshape-shape/Slice-bound is a constant or an
attribute.
"""
from __future__ import annotations

import os
from typing import Mapping

import onnx
from onnx import shape_inference, version_converter

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers.onnx_builder import (
    BOUNDARY_DTYPES, ONNX_DTYPES, OnnxImportBuilder, NodeContext, NodeInfo, onnx_dtype_name)
from converter.importers.onnx_control import all_nodes, refuse_batch_scan, used_names
from converter.importers.onnx_ops import ONNX_OPS, OnnxOp
from converter.importers.onnx_quant import (
    DATA_MOVEMENT_OPS, DOMAIN_OPS, QUANTIZATION_OPS, QUANTIZED_ELEM_TYPES, accepts_quantized, finish_import,
    rewrite_quantized)
from converter.importers.onnx_quant_exact import (
    EXACT_QUANTIZATION_OPS, computes_exactly, lowered_exactly, onnx_elem_types)
from converter.ir import Graph, TensorType
from converter.report import BOUNDARY_KEY

MIN_OPSET = 13
MAX_OPSET = 21
_DEFAULT_DOMAINS = ("", "ai.onnx")
# Ops whose data input is only read for its shape, so its dtype does not matter.
_SHAPE_READERS = {"Shape", "Size"}


def load_onnx(model: str | os.PathLike | onnx.ModelProto,
              input_shapes: Mapping[str, tuple[int, ...]] | None = None,
              default_dim: int = 1) -> Graph:
    """Imports an ONNX model as a static IR graph.

    ``input_shapes`` fixes graph inputs' shapes by name; other symbolic dims become
    ``default_dim``. Symbolic axes are recorded in ``Graph.dynamic_dims``. Raises
    ``UnsupportedOpsError`` listing every unsupported op, ``ConversionError`` otherwise.
    """
    proto = _load_checked(model)
    proto = _upgrade_opset(proto)
    # Integers at the boundary: every quantization op is exact integer arithmetic
    # (converter.importers.onnx_quant_exact). Otherwise the model is a quantized float model, and
    # only the Q/DQ its int8 path cannot take (blocked, 16-bit) are.
    integer_boundary = computes_exactly(proto, QUANTIZATION_OPS)
    if integer_boundary:
        exact = frozenset(n.output[0] for n in proto.graph.node if n.op_type in EXACT_QUANTIZATION_OPS)
    else:
        proto = rewrite_quantized(proto)
        exact = lowered_exactly(proto, DATA_MOVEMENT_OPS)
    _raise_if_unsupported(proto, exact, integer_boundary)
    return _build(proto, dict(input_shapes or {}), default_dim, exact, integer_boundary)


def _load_checked(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        proto = model
        check_target = model
    else:
        path = os.fspath(model)
        try:
            proto = onnx.load(path)
        except Exception as exc:
            raise ConversionError(f"cannot read ONNX model {path!r}: {exc}") from exc
        # The checker reads large models (over 2 GB with external data) only from a path.
        check_target = path
    try:
        onnx.checker.check_model(check_target)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the ONNX checker rejects the model: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the checker's C++ side fails on some bytes with other types
        # (UnicodeDecodeError on a name that is not UTF-8): the model is just as invalid
        raise ConversionError(f"the ONNX checker cannot read the model: {type(exc).__name__}: {exc}") from exc
    return proto


def _default_opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in _DEFAULT_DOMAINS:
            return entry.version
    raise ConversionError("the model imports no version of the default ONNX domain")


def _ops_changed_after(proto: onnx.ModelProto, opset: int, newest_known: int) -> list[str]:
    """Op types of the default domain whose definition at ``opset`` is newer than at ``newest_known``."""
    changed = set()
    for node in all_nodes(proto.graph):
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        try:
            since = onnx.defs.get_schema(node.op_type, opset, node.domain).since_version
        except Exception:  # unknown op: the unsupported-op scan reports it
            continue
        converter = ONNX_OPS.get(node.op_type)
        if converter is not None and since <= converter.newest_opset:
            continue
        if since > newest_known and not _same_signature(node.op_type, node.domain, since, newest_known):
            changed.add(node.op_type)
    return sorted(changed)


def _same_signature(op_type: str, domain: str, newer: int, older: int) -> bool:
    """True when the op's definition at ``newer`` differs from that at ``older`` only in the types
    it accepts (how ONNX added bfloat16, float8 ... to most ops): same attributes with the same
    defaults, same inputs and outputs. Such an op imports as the older definition says."""
    def signature(schema):
        attrs = sorted((name, a.type, a.required, a.default_value.SerializeToString())
                       for name, a in schema.attributes.items())
        ios = [[(f.name, f.option) for f in group] for group in (schema.inputs, schema.outputs)]
        return attrs, ios, schema.min_input, schema.max_input, schema.min_output, schema.max_output
    try:
        return signature(onnx.defs.get_schema(op_type, newer, domain)) == \
            signature(onnx.defs.get_schema(op_type, older, domain))
    except Exception:
        return False


def _upgrade_opset(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Brings the model to an opset whose op definitions the importer knows (MIN_OPSET..MAX_OPSET).

    Newer opsets are accepted as they are when none of the model's ops was redefined after
    MAX_OPSET (each op's definition is then identical to the one we import); otherwise the model
    is converted down to MAX_OPSET, which fails clearly for ops without a down-conversion.
    """
    opset = _default_opset(proto)
    if opset > MAX_OPSET:
        changed = _ops_changed_after(proto, opset, MAX_OPSET)
        if not changed:
            return proto
        try:
            return version_converter.convert_version(proto, MAX_OPSET)
        except Exception as exc:
            raise ConversionError(f"opset {opset} redefines {', '.join(changed)} after opset {MAX_OPSET}, the newest "
                                  f"this importer knows, and the model cannot be converted down: {exc}") from exc
    if opset >= MIN_OPSET:
        return proto
    refuse_batch_scan(proto, opset)
    try:
        upgraded = version_converter.convert_version(proto, MIN_OPSET)
    except Exception as exc:
        # An op the converter has no adapter for is likely one we lack too: say so first.
        unsupported = _unsupported_op_types(proto)
        if unsupported:
            raise UnsupportedOpsError(unsupported) from exc
        raise ConversionError(f"cannot convert the model from opset {opset} to {MIN_OPSET}: "
                              f"{exc}") from exc
    return upgraded


def _node_names(graph: onnx.GraphProto) -> list[str]:
    """Node names for messages and IR nodes: ONNX's own where given and unique."""
    names, seen = [], set()
    for index, node in enumerate(graph.node):
        base = node.name or f"{node.op_type}_{index}"
        name, k = base, 1
        while name in seen:
            name = f"{base}_{k}"
            k += 1
        seen.add(name)
        names.append(name)
    return names


def _unsupported_op_types(proto: onnx.ModelProto) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for node, name in zip(proto.graph.node, _node_names(proto.graph)):
        key = _op_key(node)
        if key is not None:
            found.setdefault(key, []).append(name)
    return found


def _converter(node: onnx.NodeProto, exact: frozenset[str] = frozenset()) -> OnnxOp | None:
    """The node's converter; ``exact`` names (by first output) the quantization nodes lowered as
    exact integer arithmetic."""
    if node.domain in _DEFAULT_DOMAINS:
        if node.op_type in EXACT_QUANTIZATION_OPS and node.output and node.output[0] in exact:
            return EXACT_QUANTIZATION_OPS[node.op_type]
        return ONNX_OPS.get(node.op_type)
    return DOMAIN_OPS.get((node.domain, node.op_type))


def _op_key(node: onnx.NodeProto) -> str | None:
    """The key an unsupported node type is listed under, or None if the type is supported."""
    if _converter(node) is not None:
        return None
    return f"{node.domain}.{node.op_type}" if node.domain not in _DEFAULT_DOMAINS else node.op_type


def _raise_if_unsupported(proto: onnx.ModelProto, exact: frozenset[str] = frozenset(),
                          integer_boundary: bool = False) -> None:
    graph = proto.graph
    opset = _default_opset(proto)
    inferred = _infer_shapes(proto)
    elem_types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        if info.type.HasField("tensor_type"):
            if tensor_type.elem_type:
                elem_types[info.name] = tensor_type.elem_type
            if tensor_type.HasField("shape"):
                ranks[info.name] = len(tensor_type.shape.dim)
        else:
            elem_types[info.name] = -1
    static_values: dict[str, onnx.TensorProto] = {}
    for tensor in graph.initializer:
        elem_types[tensor.name] = tensor.data_type
        ranks[tensor.name] = len(tensor.dims)
        static_values[tensor.name] = tensor
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                static_values[node.output[0]] = value
    initializer_names = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input if i.name not in initializer_names}
    used = used_names(graph)
    boundary = _boundary_dtypes(proto, integer_boundary)

    found: dict[str, list[str]] = {}
    for node, name in zip(graph.node, _node_names(graph)):
        key = _op_key(node)
        if key is not None:
            found.setdefault(key, []).append(name)
            continue
        reasons = []
        check = _converter(node, exact).check
        if check is not None:
            info = NodeInfo(node, opset, ranks, static_values, graph_inputs, used.__contains__)
            reasons.extend(check(info))
        names = list(node.output) + ([] if node.op_type in _SHAPE_READERS else list(node.input))
        for tensor_name in names:
            elem = elem_types.get(tensor_name)
            if elem in QUANTIZED_ELEM_TYPES and accepts_quantized(node):
                continue
            if tensor_name and elem is not None and elem not in ONNX_DTYPES and elem not in boundary:
                dtype = "non-tensor" if elem == -1 else onnx_dtype_name(elem)
                reason = f"dtype {dtype}"
                if reason not in reasons:
                    reasons.append(reason)
        for reason in reasons:
            found.setdefault(f"{node.op_type} ({reason})", []).append(name)
    if found:
        raise UnsupportedOpsError(found)


def _boundary_dtypes(proto: onnx.ModelProto, integer_boundary: bool = False) -> dict[int, tuple[str, str]]:
    """ONNX element type -> (boundary dtype, dtype computed in) for the types this model may carry
    at its boundary. A quantized float model's int8/uint8 tensors are its quantized values
    (converter.importers.onnx_quant), not integers to widen; with ``integer_boundary`` they are integers."""
    if not integer_boundary and any(n.op_type in QUANTIZATION_OPS for n in proto.graph.node):
        return {k: v for k, v in BOUNDARY_DTYPES.items() if k not in QUANTIZED_ELEM_TYPES}
    return BOUNDARY_DTYPES


def _infer_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:
        # Shape inference only sharpens the scan; conversion computes every type itself.
        return proto


def _input_type(value_info: onnx.ValueInfoProto, requested, default_dim: int, boundary: Mapping
                ) -> tuple[TensorType, tuple[int, ...]]:
    name = value_info.name
    if not value_info.type.HasField("tensor_type"):
        raise ConversionError(f"graph input {name!r} is not a tensor")
    tensor_type = value_info.type.tensor_type
    if tensor_type.elem_type in boundary:
        dtype = boundary[tensor_type.elem_type][0]
    elif tensor_type.elem_type in ONNX_DTYPES:
        dtype = ONNX_DTYPES[tensor_type.elem_type]
    else:
        raise ConversionError(f"graph input {name!r} has unsupported dtype "
                              f"{onnx_dtype_name(tensor_type.elem_type)}")
    if not tensor_type.HasField("shape"):
        if requested is None:
            raise ConversionError(f"graph input {name!r} has no shape; give it in input_shapes")
        return TensorType(dtype, tuple(int(d) for d in requested)), ()
    declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor_type.shape.dim]
    dynamic = tuple(i for i, d in enumerate(declared) if d is None)
    if requested is None:
        return TensorType(dtype, tuple(default_dim if d is None else d for d in declared)), dynamic
    requested = tuple(int(d) for d in requested)
    if len(requested) != len(declared):
        raise ConversionError(f"input_shapes[{name!r}] = {list(requested)} has rank "
                              f"{len(requested)}; the model declares rank {len(declared)}")
    for axis, (want, have) in enumerate(zip(requested, declared)):
        if have is not None and want != have:
            raise ConversionError(f"input_shapes[{name!r}] = {list(requested)}: axis {axis} is "
                                  f"fixed to {have} in the model")
    return TensorType(dtype, requested), dynamic


def _build(proto: onnx.ModelProto, input_shapes: dict, default_dim: int, exact: frozenset[str] = frozenset(),
           integer_boundary: bool = False) -> Graph:
    graph = proto.graph
    opset = _default_opset(proto)
    initializers = {t.name: t for t in graph.initializer}
    # Initializers listed as graph inputs (IR version < 4 requires it) are overridable defaults;
    # a static graph treats them as the constants they are.
    inputs = [i for i in graph.input if i.name not in initializers]
    unknown = set(input_shapes) - {i.name for i in inputs}
    if unknown:
        raise ConversionError(f"input_shapes names {sorted(unknown)}, which are not graph inputs "
                              f"(those are {[i.name for i in inputs]})")

    taken = set(initializers) | {i.name for i in graph.input} | {o.name for o in graph.output}
    for node in graph.node:
        taken.update(node.input)
        taken.update(node.output)
    builder = OnnxImportBuilder(initializers, taken)
    if exact:
        builder.onnx_types = onnx_elem_types(proto)
    boundary = _boundary_dtypes(proto, integer_boundary)
    node_names = _node_names(graph)
    for name in node_names:
        builder.fresh_node_name(name)
    dynamic_dims = {}
    computed_as = {}
    for value_info in inputs:
        tensor_type, dynamic = _input_type(value_info, input_shapes.get(value_info.name), default_dim, boundary)
        builder.tensors[value_info.name] = tensor_type
        if dynamic:
            dynamic_dims[value_info.name] = dynamic
        inside = dict(boundary.values()).get(tensor_type.dtype)
        if inside is not None:
            computed_as[value_info.name] = f"{tensor_type.dtype} as {inside}"
            cast = builder.fresh_name(f"{value_info.name}/{inside}")
            builder.emit("Cast", [value_info.name], {"to": inside}, [cast],
                         builder.fresh_node_name(f"{value_info.name}/cast"))
            builder.aliases[value_info.name] = cast
    output_casts = []
    for value_info in graph.output:
        elem = value_info.type.tensor_type.elem_type
        if elem in boundary and value_info.name not in builder.aliases:
            outside, inside = boundary[elem]
            computed_as[value_info.name] = f"{outside} as {inside}"
            builder.aliases[value_info.name] = builder.fresh_name(f"{value_info.name}/{inside}")
            output_casts.append((value_info.name, outside))

    used = used_names(graph)
    used |= {alias for name, alias in builder.aliases.items() if name in used}
    for node, name in zip(graph.node, node_names):
        ctx = NodeContext(builder, node, name, opset, used.__contains__)
        _converter(node, exact).convert(ctx)
    for name, outside in output_casts:
        # The values are on the boundary dtype's grid already and must come out unchanged: float8
        # without saturating (its infinities and NaNs stay what the graph made them), e8m0 rounding
        # down (its smallest value, 2^-127, is a float32 subnormal that rounding up would move).
        attrs = {"to": outside}
        if outside.startswith("float8_"):
            attrs["saturate"] = False
        if outside == "float8_e8m0fnu":
            attrs["round_mode"] = "down"
        builder.emit("Cast", [builder.aliases[name]], attrs, [name], builder.fresh_node_name(f"{name}/cast"))

    outputs = [o.name for o in graph.output]
    for name in outputs:
        if name not in builder.tensors and builder.constant(name) is None:
            raise ConversionError(f"graph output {name!r} is produced by no node")
    nodes = _live_nodes(builder.nodes, outputs)
    referenced = set(outputs) | {i for n in nodes for i in n.inputs if i}
    produced = {o for n in nodes for o in n.outputs if o}
    keep = referenced | produced | {i.name for i in inputs}
    metadata = {"source": "onnx", "onnx_opset": str(opset)}
    metadata.update({BOUNDARY_KEY + name: how for name, how in computed_as.items()})
    if proto.producer_name:
        metadata["onnx_producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
    if graph.name:
        metadata["onnx_graph_name"] = graph.name
    for prop in proto.metadata_props:
        metadata.setdefault(prop.key, prop.value)
    return finish_import(Graph(
        nodes=tuple(nodes),
        inputs=tuple(i.name for i in inputs),
        outputs=tuple(outputs),
        tensors={k: v for k, v in builder.tensors.items() if k in keep},
        constants={k: v for k, v in builder.constants.items() if k in referenced},
        metadata=metadata,
        dynamic_dims=dynamic_dims,
    ), builder)


def _live_nodes(nodes, outputs) -> list:
    """The nodes the graph outputs depend on; folding leaves the rest (e.g. a tensor only read
    by Shape) without consumers."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs if o):
            live.append(node)
            needed.update(i for i in node.inputs if i)
    live.reverse()
    return live

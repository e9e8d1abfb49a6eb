"""IR Graph -> .edge bytes (cruntime/schema/edge.fbs).

File layout: the FlatBuffer (identifier "EDG1") first, then a data section. Each constant or
variable has its own Buffer whose ``offset`` is an absolute, 64-byte aligned file offset, so a
runtime that mmaps the file can use weights in place. Buffer 0 is the empty sentinel.

Output is deterministic: the same Graph always gives the same bytes (tensors in the order of
``Graph.tensors``, operator codes in order of first use), which is what makes
write -> read -> write byte-identical.
"""
from __future__ import annotations

import flatbuffers
import numpy as np

from converter.edgefb.Buffer import BufferT
from converter.edgefb.DType import DType
from converter.edgefb.Graph import GraphT
from converter.edgefb.Metadata import MetadataT
from converter.edgefb.Model import ModelT
from converter.edgefb.Operator import OperatorT
from converter.edgefb.OperatorCode import OperatorCodeT
from converter.edgefb.OpCost import OpCostT
from converter.edgefb.Quantization import QuantizationT
from converter.edgefb.Signature import SignatureT
from converter.edgefb.Tensor import TensorT
from converter.edgefb.TensorMap import TensorMapT
from converter.errors import ConversionError
from converter.ir import DTYPES, Graph, Node, Signature, TensorType
from converter.ops import OPS

EDGE_SCHEMA_VERSION = 1        # cruntime/include/edge.h EDGE_SCHEMA_VERSION
MIN_RUNTIME_VERSION = 100      # cruntime/include/edge.h EDGE_RUNTIME_VERSION this file needs
CONVERTER_VERSION = "0.1.0"
DEFAULT_PRODUCER = f"edgesplit converter {CONVERTER_VERSION}"
FILE_IDENTIFIER = b"EDG1"
BUFFER_ALIGNMENT = 64
OPCODE_VERSION = 1

DTYPE_CODES = {name: getattr(DType, name.upper()) for name in DTYPES}


def _align(n: int) -> int:
    return (n + BUFFER_ALIGNMENT - 1) // BUFFER_ALIGNMENT * BUFFER_ALIGNMENT


def _node_label(node: Node, index: int) -> str:
    return f"node {index} ({node.op} {node.name or node.outputs[0]!r})"


def check_writable(graph: Graph) -> None:
    """Raises ConversionError listing everything that keeps ``graph`` from being written."""
    problems: list[str] = []
    unlowerable: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        definition = OPS.get(node.op)
        if definition is None or definition.lower is None:
            unlowerable[node.op] = unlowerable.get(node.op, 0) + 1
        elif definition.layout_sensitive and node.attrs.get("layout", "NCHW") != "NHWC":
            problems.append(f"{_node_label(node, i)} is still in {node.attrs.get('layout', 'NCHW')} "
                            f"layout (run the to_nhwc pass)")
        else:
            try:
                definition.lower(node.attrs)
            except (ValueError, KeyError, TypeError) as exc:
                if node.op == "BatchNorm":
                    unlowerable[node.op] = unlowerable.get(node.op, 0) + 1
                else:
                    problems.append(f"{_node_label(node, i)}: {exc}")
        for name in (*node.inputs, *node.outputs):
            if name and name not in graph.tensors:
                problems.append(f"{_node_label(node, i)}: tensor {name!r} has no type")
    if unlowerable:
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(unlowerable.items()))
        problems.insert(0, f"ops with no lowering to the .edge schema: {listed}")
    for name, ttype in graph.tensors.items():
        if not ttype.is_static:
            problems.append(f"tensor {name!r} has symbolic shape {ttype.shape}; give static input shapes")
    for name in (*graph.inputs, *graph.outputs):
        if name not in graph.tensors:
            problems.append(f"graph input/output {name!r} has no type")
    available = set(graph.inputs) | set(graph.constants)
    for i, node in enumerate(graph.nodes):
        missing = [x for x in node.inputs if x and x not in available]
        if missing:
            problems.append(f"{_node_label(node, i)} reads {missing[0]!r} before anything produces it")
        available.update(o for o in node.outputs if o)
    if problems:
        raise ConversionError("cannot write the model:\n  " + "\n  ".join(problems))


def _activation_fields(node: Node) -> tuple[int, float, float]:
    activation = node.attrs.get("activation")
    if not activation:
        return 0, 0.0, 0.0
    name, alpha, beta = activation
    definition = OPS.get(name)
    if definition is None or definition.lift_key is None:
        raise ConversionError(f"{node.op} {node.name or node.outputs[0]!r}: unknown fused activation {name!r}")
    return definition.lift_key, float(alpha), float(beta)


def _cost(graph: Graph, node: Node) -> OpCostT:
    in_types = [graph.tensors.get(i) if i else None for i in node.inputs]
    out_types = [graph.tensors[o] for o in node.outputs if o]
    cost = OpCostT()
    flops = OPS[node.op].flops
    cost.flops = int(flops(in_types, out_types, node.attrs)) if flops else 0
    cost.bytesIn = sum(t.nbytes for i, t in zip(node.inputs, in_types) if t and i not in graph.constants)
    cost.bytesWeights = sum(t.nbytes for i, t in zip(node.inputs, in_types) if t and i in graph.constants)
    cost.bytesOut = sum(t.nbytes for t in out_types)
    return cost


def _tensor_map(names: dict[str, str], index: dict[str, int], key: str) -> list[TensorMapT]:
    maps = []
    for public, tensor in names.items():
        if tensor not in index:
            raise ConversionError(f"signature {key!r}: {public!r} names tensor {tensor!r}, which the graph lacks")
        entry = TensorMapT()
        entry.name = public
        entry.tensor = index[tensor]
        maps.append(entry)
    return maps


def default_signatures(graph: Graph) -> dict[str, Signature]:
    if graph.signatures:
        return dict(graph.signatures)
    return {"infer": Signature({n: n for n in graph.inputs}, {n: n for n in graph.outputs})}


def _canonical_options(options):
    """FlatBuffers leaves out a field equal to its schema default, comparing Python floats; a
    float that equals its default only after float32 rounding (1e-5 vs float32(1e-5), as read
    back from a file) is set to the default itself, so both spellings give the same bytes."""
    if options is None:
        return None
    defaults = vars(type(options)())
    for key, value in vars(options).items():
        default = defaults.get(key)
        if (isinstance(value, float) and isinstance(default, float) and value != default
                and np.float32(value) == np.float32(default)):
            setattr(options, key, default)
    return options


def _metadata(graph: Graph, producer: str) -> dict[str, str]:
    entries = {k: str(v) for k, v in graph.metadata.items() if k != "description"}
    entries["producer"] = producer
    entries.setdefault("source", "ir")
    entries["converter_version"] = CONVERTER_VERSION
    return entries


def _constant_bytes(graph: Graph, name: str) -> bytes:
    ttype = graph.tensors[name]
    array = np.asarray(graph.constants[name])
    if tuple(array.shape) != tuple(ttype.shape):
        raise ConversionError(f"constant {name!r}: data shape {array.shape} differs from its type {ttype.shape}")
    return np.asarray(array, dtype=np.dtype(ttype.dtype).newbyteorder("<"), order="C").tobytes()


# ---- which dims follow the dynamic input dims ----

# A dynamic input dim of size d is probed at PROBE_FACTOR * d: a tensor dim that changes with it
# is dynamic too. A factor rather than an offset keeps dims that merge the batch with others
# (a Reshape to [batch * tokens, hidden]) divisible.
PROBE_FACTOR = 3
# dim_sources entry of a Reshape output axis sized from the element count (the importer's
# INFERRED_AXIS, ONNX Reshape's -1).
INFERRED_AXIS = -2


class _ProbeFailed(Exception):
    pass


def _product(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _reshape_carrier(graph: Graph, node: Node, before: tuple, after: tuple) -> int:
    """The output axis of a Reshape that absorbs the change of its input from ``before`` to
    ``after``: the axis the graph already marks dynamic, else the axis the importer recorded as a
    copy of the changed input axis or as sized from the element count (``dim_sources``, valid
    while the input still has the ``source_shape`` it was recorded for), else an output axis whose
    preceding axes hold exactly the elements of the input axes before the changed one (row-major
    order keeps those apart, so the changed axis' elements start there): among several (size-1
    axes), the one as long as the changed axis, else the first."""
    target = tuple(node.attrs["shape"])
    recorded = graph.dynamic_dims.get(node.outputs[0], ())
    if len(recorded) == 1:
        return recorded[0]
    changed = [axis for axis, (a, b) in enumerate(zip(before, after)) if a != b]
    sources = node.attrs.get("dim_sources")
    if sources is not None and tuple(node.attrs.get("source_shape", ())) == tuple(before):
        carriers = [out for out, src in enumerate(sources) if src in changed]
        inferred = [out for out, src in enumerate(sources) if src == INFERRED_AXIS]
        if len(carriers) == 1:
            return carriers[0]
        if not carriers and len(inferred) == 1:
            return inferred[0]
    prefix = _product(before[:changed[0]])
    candidates = [axis for axis in range(len(target)) if _product(target[:axis]) == prefix]
    # Size-1 axes make several candidates; the one as long as the changed axis carries it.
    for axis in candidates:
        if target[axis] == before[changed[0]]:
            return axis
    if candidates:
        return candidates[0]
    raise _ProbeFailed(f"Reshape {node.name or node.outputs[0]!r}: no axis of {target} carries "
                       f"input axis {changed[0]} of {before}")


def _probe_attrs(graph: Graph, node: Node, shapes: dict[str, tuple]) -> dict:
    """The node's attributes with its static target shape (Reshape, BroadcastTo) following the
    probed input shape."""
    x = node.inputs[0] if node.inputs else ""
    before, after = tuple(graph.tensors[x].shape) if x else (), shapes.get(x)
    if node.op not in ("Reshape", "BroadcastTo") or after is None or after == before:
        return node.attrs
    target = list(node.attrs["shape"])
    if node.op == "BroadcastTo":
        offset = len(target) - len(before)
        for axis, (a, b) in enumerate(zip(before, after)):
            if a != b and axis + offset >= 0 and target[axis + offset] == a:
                target[axis + offset] = b
        return {**node.attrs, "shape": tuple(target)}
    total_before, total_after = _product(before), _product(after)
    carrier = _reshape_carrier(graph, node, before, after)
    scaled = target[carrier] * total_after
    if total_before == 0 or scaled % total_before:
        raise _ProbeFailed(f"Reshape {node.name or node.outputs[0]!r}: {before} -> {tuple(target)} "
                           f"does not follow the input to {after}")
    target[carrier] = scaled // total_before
    return {**node.attrs, "shape": tuple(target)}


def _probe(graph: Graph, resized: dict[str, tuple]) -> dict[str, tuple]:
    """Every tensor's shape when the inputs take the ``resized`` shapes, by the op table's shape
    rules; constants keep theirs."""
    shapes = dict(resized)
    for node in graph.nodes:
        inputs = list(node.inputs)
        if not any(i in shapes for i in inputs if i):
            continue
        types = [None if not i else TensorType(graph.tensors[i].dtype, shapes.get(i, graph.tensors[i].shape))
                 for i in inputs]
        try:
            attrs = _probe_attrs(graph, node, shapes)
            out_types = OPS[node.op].infer(types, attrs)
        except _ProbeFailed:
            raise
        except Exception as exc:
            raise _ProbeFailed(f"{node.op} {node.name or node.outputs[0]!r}: {exc}") from exc
        for name, t in zip(node.outputs, out_types):
            if name and tuple(t.shape) != tuple(graph.tensors[name].shape):
                shapes[name] = tuple(t.shape)
    return shapes


def dynamic_axes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Tensor -> the axes written as -1 in its shape_signature: those ``graph.dynamic_dims``
    names, and every axis of a computed tensor that changes when a dynamic input axis does.

    Input axes are probed one position at a time (axis 0 of every input together, since the
    inputs' batch dims must agree, then axis 1, ...), so a tensor that merges two dynamic dims
    is not confused with one that carries one; when a probe cannot be typed (the graph ties the
    dim to a fixed size), only the declared axes are written for it."""
    result = {name: tuple(axes) for name, axes in graph.dynamic_dims.items()}
    for node in graph.nodes:
        # The runtime sets these outputs' row counts at invoke (OpDef.rows_set_at_eval).
        if OPS[node.op].rows_set_at_eval and node.outputs and node.outputs[0]:
            result[node.outputs[0]] = tuple(sorted({0, *result.get(node.outputs[0], ())}))
    seeds = {name: axes for name, axes in result.items() if name in graph.inputs and axes}
    positions = sorted({axis for axes in seeds.values() for axis in axes})
    for position in positions:
        shapes = None
        # Larger first; a graph whose constants are sliced to the run-time length (up to the
        # converted one, converter.passes.length) only types at a smaller size.
        for resize in (lambda d: PROBE_FACTOR * max(1, d), lambda d: d // 2 if d >= 2 else None):
            resized = {}
            for name, axes in seeds.items():
                if position in axes:
                    shape = list(graph.tensors[name].shape)
                    shape[position] = resize(shape[position])
                    if shape[position] is not None:
                        resized[name] = tuple(shape)
            if not resized:
                continue
            try:
                shapes = _probe(graph, resized)
                break
            except _ProbeFailed:
                continue
        if shapes is None:
            continue
        for name, shape in shapes.items():
            if name in graph.constants or name in resized:
                continue
            declared = graph.tensors[name].shape
            changed = {axis for axis, (a, b) in enumerate(zip(declared, shape)) if a != b}
            if len(shape) != len(declared):
                continue
            if changed:
                result[name] = tuple(sorted(set(result.get(name, ())) | changed))
    return {name: axes for name, axes in result.items() if name not in graph.constants}


def _check_rows_set_at_eval_unread(graph: Graph) -> None:
    """Every other op is prepared for fixed shapes, so an output whose row count the runtime sets
    at invoke (OpDef.rows_set_at_eval) can only be a graph output."""
    readers = graph.consumers()
    for node in graph.nodes:
        if OPS[node.op].rows_set_at_eval and node.outputs and node.outputs[0] in readers:
            reader = readers[node.outputs[0]][0]
            raise ConversionError(
                f"{node.op} node {node.name!r}: its output {node.outputs[0]!r} has a row count known only at "
                f"run time, so it can only be a model output, but {reader.op} node {reader.name!r} reads it")


def build_model_object(graph: Graph, description: str, producer: str) -> tuple[ModelT, list[bytes]]:
    """The schema object tree (buffer offsets still unset) and each buffer's bytes."""
    tensor_index = {name: i for i, name in enumerate(graph.tensors)}
    _check_rows_set_at_eval_unread(graph)
    dynamic = dynamic_axes(graph)
    buffers = [BufferT()]
    payloads: list[bytes] = [b""]
    tensors = []
    for name, ttype in graph.tensors.items():
        t = TensorT()
        t.name = name
        t.shape = [int(d) for d in ttype.shape]
        t.dtype = DTYPE_CODES[ttype.dtype]
        if name in dynamic:
            t.shapeSignature = [-1 if axis in dynamic[name] else int(d)
                                for axis, d in enumerate(ttype.shape)]
        if name in graph.constants:
            t.buffer = len(buffers)
            buffers.append(BufferT())
            payloads.append(_constant_bytes(graph, name))
        t.isVariable = name in graph.variables
        if name in graph.quantization:
            q = graph.quantization[name]
            qt = QuantizationT()
            qt.scale = [float(s) for s in q.scale]
            # Channels sharing one zero point (symmetric weights, biases) store it once.
            shared = len(q.scale) > 1 and len(set(q.zero_point)) == 1
            qt.zeroPoint = [int(q.zero_point[0])] if shared else [int(z) for z in q.zero_point]
            qt.quantizedDimension = int(q.axis)
            t.quantization = qt
        tensors.append(t)

    codes: list[tuple[int, int]] = []
    operators = []
    for node in graph.nodes:
        opcode, options_type, options = OPS[node.op].lower(node.attrs)
        key = (int(opcode), OPCODE_VERSION)
        if key not in codes:
            codes.append(key)
        op = OperatorT()
        op.opcodeIndex = codes.index(key)
        op.inputs = [tensor_index[i] if i else -1 for i in node.inputs]
        op.outputs = [tensor_index[o] if o else -1 for o in node.outputs]
        op.optionsType = int(options_type or 0)
        op.options = _canonical_options(options)
        op.activation, op.activationAlpha, op.activationBeta = _activation_fields(node)
        op.cost = _cost(graph, node)
        operators.append(op)

    g = GraphT()
    g.name = graph.name
    g.tensors = tensors
    g.inputs = [tensor_index[n] for n in graph.inputs]
    g.outputs = [tensor_index[n] for n in graph.outputs]
    g.operators = operators

    signatures = []
    for key, sig in default_signatures(graph).items():
        s = SignatureT()
        s.key = key
        s.graph = 0
        s.inputs = _tensor_map(dict(sig.inputs), tensor_index, key)
        s.outputs = _tensor_map(dict(sig.outputs), tensor_index, key)
        if sig.nodes is not None:
            bad = [i for i in sig.nodes if not 0 <= i < len(graph.nodes)]
            if bad:
                raise ConversionError(f"signature {key!r}: node index {bad[0]} out of range "
                                      f"(graph has {len(graph.nodes)} nodes)")
            s.operators = [int(i) for i in sig.nodes]
        signatures.append(s)

    model = ModelT()
    model.version = EDGE_SCHEMA_VERSION
    model.minRuntimeVersion = MIN_RUNTIME_VERSION
    model.operatorCodes = []
    for opcode, version in codes:
        code = OperatorCodeT()
        code.opcode = opcode
        code.version = version
        model.operatorCodes.append(code)
    model.graphs = [g]
    model.buffers = buffers
    model.signatures = signatures
    model.metadata = []
    for name, value in _metadata(graph, producer).items():
        entry = MetadataT()
        entry.name = name
        entry.value = value
        model.metadata.append(entry)
    model.description = description
    model.producer = producer
    return model, payloads


def _pack(model: ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _place_buffers(model: ModelT, payloads: list[bytes], flatbuffer_size: int) -> None:
    position = _align(flatbuffer_size)
    for buffer, payload in zip(model.buffers[1:], payloads[1:]):
        buffer.offset = position
        buffer.size = len(payload)
        position = _align(position + len(payload))


def write_model(graph: Graph, description: str | None = None, producer: str | None = None) -> bytes:
    """The .edge file for ``graph``. ``description``/``producer`` default to the graph's metadata
    entries of those names (so a model read back writes the same bytes), else "" / this converter."""
    check_writable(graph)
    description = description if description is not None else str(graph.metadata.get("description", ""))
    producer = producer or str(graph.metadata.get("producer") or DEFAULT_PRODUCER)
    model, payloads = build_model_object(graph, description, producer)
    # Buffer offsets are fixed-width non-zero fields, so the FlatBuffer's size does not depend
    # on their values: pack once to learn the size, place the buffers after it, pack again.
    _place_buffers(model, payloads, 1 << 20)
    size = len(_pack(model))
    _place_buffers(model, payloads, size)
    flatbuffer = _pack(model)
    if len(flatbuffer) != size:
        raise AssertionError("FlatBuffer size changed with buffer offsets")
    out = bytearray(flatbuffer)
    for buffer, payload in zip(model.buffers[1:], payloads[1:]):
        out.extend(b"\0" * (buffer.offset - len(out)))
        out.extend(payload)
    return bytes(out)


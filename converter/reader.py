""".edge bytes -> IR Graph, for round-trip tests and ``edge inspect``.

The inverse of converter.writer: every operator is lifted through the op table (the entry with
the operator's opcode and, for BINARY/UNARY/REDUCE, the options' ``op`` as its ``lift_key``),
constants are read from the data section, and the file's metadata lands in Graph.metadata, so
writing the result again reproduces the file byte for byte. Every index and offset is checked;
a malformed file raises ModelFileError naming the bad part.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from converter.edgefb.DType import DType
from converter.edgefb.Model import Model, ModelT
from converter.edgefb.OpCode import OpCode
from converter.errors import ConversionError
from converter.ir import DTYPES, Graph, Node, Quantization, Signature, TensorType
from converter.ops import OPS, OpDef
from converter.writer import FILE_IDENTIFIER, default_signatures

DTYPE_NAMES = {getattr(DType, name.upper()): name for name in DTYPES}
OPCODE_NAMES = {v: k for k, v in vars(OpCode).items() if not k.startswith("_")}

# An entry with lift_key -1 is never read back: another op owns its opcode (Identity is
# written as RESHAPE and reads back as Reshape) or it is never written (BatchNorm).
NOT_LIFTED = -1
# Opcodes several IR ops share: the options field whose value is the IR op's lift_key.
LIFT_DISCRIMINATORS = {OpCode.BINARY: "op", OpCode.UNARY: "op", OpCode.REDUCE: "op",
                       OpCode.POOL_2D: "type", OpCode.SOFTMAX: "log", OpCode.LAYER_NORM: "rms"}


class ModelFileError(ConversionError):
    """A .edge file that is not a well-formed model; the message names the bad part."""


# Attributes the schema leaves to the tensors (output shape or dtype) rather than the options.
def _split_sizes(attrs, in_types, out_types):
    axis = attrs["axis"]
    return {"sizes": tuple(int(t.shape[axis]) for t in out_types)}


DERIVED_ATTRS: dict[str, Callable[[dict, list, list], dict]] = {
    "Reshape": lambda a, i, o: {"shape": tuple(o[0].shape)},
    "BroadcastTo": lambda a, i, o: {"shape": tuple(o[0].shape)},
    "Cast": lambda a, i, o: {"to": o[0].dtype},
    "BitCast": lambda a, i, o: {"to": o[0].dtype},
    "Split": _split_sizes,
    "Conv2DBackpropInput": lambda a, i, o: {"shape": tuple(o[0].shape)},
    "Conv2DBackpropFilter": lambda a, i, o: {"shape": tuple(o[0].shape)},
    "GatherGrad": lambda a, i, o: {"shape": tuple(o[0].shape)},
}


@dataclass
class OperatorInfo:
    index: int
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    flops: int
    bytes_in: int
    bytes_out: int
    bytes_weights: int


@dataclass
class ModelInfo:
    graph: Graph
    version: int
    min_runtime_version: int
    producer: str
    description: str
    metadata: dict[str, str]
    operators: list[OperatorInfo]
    buffer_bytes: int
    file_bytes: int
    flatbuffer_bytes: int
    opcode_versions: dict[str, int] = field(default_factory=dict)


def _lift_table() -> dict[int, list[OpDef]]:
    table: dict[int, list[OpDef]] = {}
    for definition in OPS.values():
        if definition.lift is not None and definition.lift_key != NOT_LIFTED:
            table.setdefault(int(definition.opcode), []).append(definition)
    return table


def _find_entry(table, opcode: int, options, where: str) -> OpDef:
    candidates = table.get(opcode)
    if not candidates:
        raise ModelFileError(f"{where}: opcode {opcode} ({OPCODE_NAMES.get(opcode, 'unknown')}) "
                             f"is not an op this converter knows")
    keyed = [c for c in candidates if c.lift_key is not None]
    if keyed:
        field_name = LIFT_DISCRIMINATORS.get(opcode)
        if options is None or field_name is None:
            raise ModelFileError(f"{where}: {OPCODE_NAMES.get(opcode)} needs options to tell "
                                 f"{', '.join(c.name for c in keyed)} apart")
        key = int(getattr(options, field_name))
        for c in keyed:
            if c.lift_key == key:
                return c
        raise ModelFileError(f"{where}: {OPCODE_NAMES.get(opcode)} with {field_name} {key} is not known")
    if len(candidates) > 1:
        raise ModelFileError(f"{where}: opcode {OPCODE_NAMES.get(opcode)} is claimed by several IR ops "
                             f"({', '.join(c.name for c in candidates)}); give all but one lift_key -1")
    return candidates[0]


def _activation_name(table, code: int, where: str) -> str:
    for c in table.get(int(OpCode.UNARY), ()):
        if c.lift_key == code:
            return c.name
    raise ModelFileError(f"{where}: unknown fused activation code {code}")


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def _ints(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _unpack(data: bytes) -> ModelT:
    if len(data) < 8:
        raise ModelFileError(f"file is {len(data)} bytes, too short for a .edge model")
    if bytes(data[4:8]) != FILE_IDENTIFIER:
        raise ModelFileError(f"file identifier is {bytes(data[4:8])!r}, expected {FILE_IDENTIFIER!r} "
                             f"(not a .edge model)")
    try:
        return ModelT.InitFromObj(Model.GetRootAs(data, 0))
    except Exception as exc:  # any decoding failure of untrusted bytes is a malformed file
        raise ModelFileError(f"malformed FlatBuffer: {type(exc).__name__}: {exc}") from None


def read_model_info(data: bytes) -> ModelInfo:
    data = bytes(data)
    model = _unpack(data)
    if not model.graphs:
        raise ModelFileError("model has no graph")
    if len(model.graphs) != 1:
        raise ModelFileError(f"model has {len(model.graphs)} graphs; this reader handles one")
    g = model.graphs[0]
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    tensors_t = g.tensors or []
    table = _lift_table()

    names: list[str] = []
    tensors: dict[str, TensorType] = {}
    constants: dict[str, np.ndarray] = {}
    variables, quantization, dynamic_dims = set(), {}, {}
    for i, t in enumerate(tensors_t):
        name = _text(t.name) or f"tensor_{i}"
        if name in tensors:
            raise ModelFileError(f"tensor {i}: name {name!r} is used twice")
        if t.dtype not in DTYPE_NAMES:
            raise ModelFileError(f"tensor {name!r}: unknown dtype code {t.dtype}")
        shape = tuple(_ints(t.shape))
        if any(d < 0 for d in shape):
            raise ModelFileError(f"tensor {name!r}: negative dimension in shape {shape}")
        ttype = TensorType(DTYPE_NAMES[t.dtype], shape)
        names.append(name)
        tensors[name] = ttype
        if t.shapeSignature is not None:
            signature = _ints(t.shapeSignature)
            dynamic_dims[name] = tuple(a for a, d in enumerate(signature) if d == -1)
        if t.buffer:
            if t.buffer >= len(buffers):
                raise ModelFileError(f"tensor {name!r}: buffer {t.buffer} out of range "
                                     f"({len(buffers)} buffers)")
            buffer = buffers[t.buffer]
            end = buffer.offset + buffer.size
            if end > len(data):
                raise ModelFileError(f"tensor {name!r}: buffer {t.buffer} ends at byte {end}, "
                                     f"past the {len(data)}-byte file")
            if buffer.size != ttype.nbytes:
                raise ModelFileError(f"tensor {name!r}: buffer {t.buffer} holds {buffer.size} bytes, "
                                     f"its type {ttype.dtype}{list(shape)} needs {ttype.nbytes}")
            dtype = np.dtype(ttype.dtype).newbyteorder("<")
            array = np.frombuffer(data, dtype=dtype, count=ttype.size, offset=buffer.offset)
            constants[name] = array.astype(ttype.dtype).reshape(shape)
        if t.isVariable:
            variables.add(name)
        if t.quantization is not None:
            q = t.quantization
            scales = tuple(float(s) for s in (q.scale if q.scale is not None else ()))
            zero_points = tuple(_ints(q.zeroPoint))
            if len(zero_points) == 1 and len(scales) > 1:   # one zero point shared by the channels
                zero_points *= len(scales)
            quantization[name] = Quantization(scales, zero_points, int(q.quantizedDimension))

    def tensor_name(index: int, where: str) -> str:
        if index == -1:
            return ""
        if not 0 <= index < len(names):
            raise ModelFileError(f"{where}: tensor index {index} out of range ({len(names)} tensors)")
        return names[index]

    nodes, operators = [], []
    for k, op in enumerate(g.operators or []):
        where = f"operator {k}"
        if op.opcodeIndex >= len(codes):
            raise ModelFileError(f"{where}: opcode index {op.opcodeIndex} out of range ({len(codes)} codes)")
        opcode = int(codes[op.opcodeIndex].opcode)
        entry = _find_entry(table, opcode, op.options, where)
        inputs = tuple(tensor_name(int(i), where) for i in _ints(op.inputs))
        outputs = tuple(tensor_name(int(i), where) for i in _ints(op.outputs))
        attrs = dict(entry.lift(op.options))
        if entry.name in DERIVED_ATTRS:
            in_types = [tensors.get(i) if i else None for i in inputs]
            out_types = [tensors[o] for o in outputs if o]
            for key, value in DERIVED_ATTRS[entry.name](attrs, in_types, out_types).items():
                attrs.setdefault(key, value)
        if entry.layout_sensitive:
            attrs.setdefault("layout", "NHWC")
        if op.activation:
            attrs["activation"] = (_activation_name(table, int(op.activation), where),
                                   float(op.activationAlpha), float(op.activationBeta))
        nodes.append(Node(entry.name, inputs, outputs, attrs))
        cost = op.cost
        operators.append(OperatorInfo(k, entry.name, inputs, outputs,
                                      *(int(getattr(cost, f, 0)) if cost else 0
                                        for f in ("flops", "bytesIn", "bytesOut", "bytesWeights"))))

    metadata = {_text(m.name): _text(m.value) for m in (model.metadata or [])}
    description = _text(model.description)
    graph_metadata = dict(metadata)
    if description:
        graph_metadata["description"] = description
    producer = _text(model.producer)
    if producer and "producer" not in graph_metadata:
        graph_metadata["producer"] = producer

    signatures = {}
    for s in model.signatures or []:
        key = _text(s.key)
        signatures[key] = Signature(
            {_text(m.name): tensor_name(int(m.tensor), f"signature {key!r}") for m in (s.inputs or [])},
            {_text(m.name): tensor_name(int(m.tensor), f"signature {key!r}") for m in (s.outputs or [])},
            None if s.operators is None else tuple(int(i) for i in s.operators))

    graph = Graph(
        nodes=tuple(nodes),
        inputs=tuple(tensor_name(int(i), "graph inputs") for i in _ints(g.inputs)),
        outputs=tuple(tensor_name(int(i), "graph outputs") for i in _ints(g.outputs)),
        tensors=tensors, constants=constants, variables=frozenset(variables),
        quantization=quantization, name=_text(g.name) or "main", metadata=graph_metadata,
        dynamic_dims=dynamic_dims)
    # The default signature is implied by an empty Graph.signatures; keep it implicit so a
    # graph read back compares equal to the one written.
    if signatures != default_signatures(graph):
        graph = graph.replace(signatures=signatures)

    flatbuffer_end = min((b.offset for b in buffers if b.size), default=len(data))
    return ModelInfo(
        graph=graph, version=int(model.version), min_runtime_version=int(model.minRuntimeVersion),
        producer=producer, description=description, metadata=metadata, operators=operators,
        buffer_bytes=sum(int(b.size) for b in buffers), file_bytes=len(data),
        flatbuffer_bytes=int(flatbuffer_end),
        opcode_versions={OPCODE_NAMES.get(int(c.opcode), str(c.opcode)): int(c.version) for c in codes})


def read_model(data: bytes) -> Graph:
    """The IR graph stored in a .edge file's bytes."""
    return read_model_info(data).graph


def read_model_file(path) -> ModelInfo:
    with open(path, "rb") as f:
        return read_model_info(f.read())


__all__ = ["ModelFileError", "ModelInfo", "OperatorInfo", "read_model", "read_model_info", "read_model_file"]

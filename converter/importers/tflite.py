"""TFLite importer: a ``.tflite`` FlatBuffer (file identifier ``TFL3``) -> IR graph.

The file is read through code flatc generated from TFLite's published schema
(converter/tflitefb). That code trusts its input, so every table, vector and string is checked
here before any accessor touches it (``_Verifier``): a table's vtable and inline size lie inside
the file, a vector's length times its element size ends inside the file, an index names an
existing tensor, buffer or op code. A file that fails gets a ConversionError naming the part;
nothing is read past the end and no loop runs longer than the file is long.

Semantics are TFLite's and the layout is already NHWC, so ops map onto the IR's NHWC forms
directly (convolution weights are already OHWI) and tensor names are kept. Each op's mapping
lives in converter/importers/tflite_ops.py; every op outside that table is reported at once in
one UnsupportedOpsError before anything is built. Float16 weights (the DEQUANTIZE of a float16
constant that MediaPipe's models carry) are widened to float32 exactly at import; converting with
``quantize="fp16"`` (``edge convert --quantize fp16``) stores them as float16 again, losslessly.
Sparse constants (DENSIFY) are made dense at import (tflite_sparse.py). int8 and uint8 models map
onto the runtime's int8 ops (tflite_ops.INT8_OPS), uint8 shifted to int8 exactly; a uint8 graph
input or output stays uint8, shifted at the boundary (without its params in the .edge file, whose
quantized tensors are int8: the caller keeps the .tflite's scale and zero point).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import numpy as np

from converter.builder import GraphBuilder
from converter.errors import ConversionError, UnsupportedOpsError
from converter.ir import Graph, Signature
from converter.tflitefb.BuiltinOperator import BuiltinOperator
from converter.tflitefb.Model import Model

FILE_IDENTIFIER = b"TFL3"
# Shapes with more elements than this are refused: no real model has them and NumPy would try to
# allocate them.
MAX_ELEMENTS = 1 << 31

BUILTIN_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
# TensorType code -> (IR/NumPy dtype or None when the IR has no such type, schema name)
TENSOR_TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: None, 6: "bool",
                7: None, 8: None, 9: "int8", 10: None, 11: None, 12: None, 13: None, 14: None,
                15: None, 16: None, 17: None, 18: None}
TENSOR_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING",
                     6: "BOOL", 7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128",
                     12: "UINT64", 13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16",
                     17: "INT4", 18: "BFLOAT16"}


def is_tflite(data: bytes) -> bool:
    """True when ``data`` carries TFLite's file identifier (bytes 4..8 of a FlatBuffer)."""
    return len(data) >= 8 and bytes(data[4:8]) == FILE_IDENTIFIER


# ---- verification -------------------------------------------------------------------------

class _Verifier:
    """Bounds checks for the generated accessors. ``buf`` is the file plus 8 zero bytes, so that
    a scalar field declared at the very end of a table's inline part reads padding instead of
    running off the buffer; every range is checked against the real file size ``size``."""

    def __init__(self, data: bytes):
        self.size = len(data)
        self.buf = bytes(data) + bytes(8)

    def _u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.buf, pos)[0]

    def fits(self, start: int, length: int) -> bool:
        return 0 <= start and length >= 0 and start + length <= self.size

    def table(self, obj, pos: int, what: str):
        """Checks the table at ``pos`` and points ``obj`` (a generated class) at it."""
        if not self.fits(pos, 4):
            raise ConversionError(f"{what}: table at byte {pos} lies outside the {self.size}-byte file")
        vtable = pos - struct.unpack_from("<i", self.buf, pos)[0]
        if not self.fits(vtable, 4):
            raise ConversionError(f"{what}: vtable at byte {vtable} lies outside the {self.size}-byte file")
        vt_size, inline_size = struct.unpack_from("<HH", self.buf, vtable)
        if vt_size < 4 or vt_size % 2 or not self.fits(vtable, vt_size):
            raise ConversionError(f"{what}: vtable at byte {vtable} has a bad size {vt_size}")
        if inline_size < 4 or not self.fits(pos, inline_size):
            raise ConversionError(f"{what}: table at byte {pos} of {inline_size} bytes ends past the "
                                  f"{self.size}-byte file")
        for slot in range(4, vt_size, 2):
            offset = struct.unpack_from("<H", self.buf, vtable + slot)[0]
            if offset >= inline_size:
                raise ConversionError(f"{what}: field {(slot - 4) // 2} at offset {offset} lies outside "
                                      f"its {inline_size}-byte table")
        obj.Init(self.buf, pos)
        return obj

    def _field_target(self, obj, slot: int, what: str) -> int | None:
        """Where the offset stored in field ``slot`` (0-based) of a checked table points."""
        offset = obj._tab.Offset(4 + 2 * slot)
        if offset == 0:
            return None
        at = obj._tab.Pos + offset
        if not self.fits(at, 4):
            raise ConversionError(f"{what}: offset field at byte {at} lies outside the file")
        target = at + self._u32(at)
        if not self.fits(target, 4):
            raise ConversionError(f"{what}: points to byte {target}, past the {self.size}-byte file")
        return target

    def vector(self, obj, slot: int, elem_size: int, what: str) -> tuple[int, int] | None:
        """(first element's position, length) of a vector field, checked; None when absent."""
        target = self._field_target(obj, slot, what)
        if target is None:
            return None
        length = self._u32(target)
        if not self.fits(target + 4, length * elem_size):
            raise ConversionError(f"{what}: {length} elements of {elem_size} bytes from byte {target + 4} "
                                  f"end past the {self.size}-byte file")
        return target + 4, length

    def array(self, obj, slot: int, dtype: str, what: str) -> np.ndarray | None:
        dt = np.dtype(dtype).newbyteorder("<")
        found = self.vector(obj, slot, dt.itemsize, what)
        if found is None:
            return None
        start, length = found
        return np.frombuffer(self.buf, dtype=dt, count=length, offset=start).astype(dtype)

    def string(self, obj, slot: int, what: str) -> str | None:
        found = self.vector(obj, slot, 1, what)
        if found is None:
            return None
        start, length = found
        return self.buf[start:start + length].decode("utf-8", errors="replace")

    def tables(self, obj, slot: int, cls, what: str) -> list:
        """The tables of a vector-of-tables field, each checked."""
        found = self.vector(obj, slot, 4, what)
        if found is None:
            return []
        start, length = found
        return [self.table(cls(), start + 4 * k + self._u32(start + 4 * k), f"{what}[{k}]")
                for k in range(length)]

    def subtable(self, obj, slot: int, cls, what: str):
        target = self._field_target(obj, slot, what)
        return None if target is None else self.table(cls(), target, what)


# ---- the model as plain data ---------------------------------------------------------------

@dataclass
class TensorInfo:
    index: int
    name: str
    type_code: int
    shape: tuple[int, ...]
    data: np.ndarray | None            # constant data, already in shape
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    sparse: bool = False

    @property
    def dtype(self) -> str | None:
        return TENSOR_TYPES.get(self.type_code)

    @property
    def type_name(self) -> str:
        return TENSOR_TYPE_NAMES.get(self.type_code, f"type {self.type_code}")

    @property
    def quantized(self) -> bool:
        return bool(self.scale) and self.type_code in (3, 9, 7)


@dataclass
class OperatorInfo:
    index: int
    op: str                             # builtin name, or "CUSTOM:<code>"
    version: int
    inputs: tuple[int, ...]             # -1: optional input left out
    outputs: tuple[int, ...]
    options: object | None              # the generated options class, checked, or None
    custom_options: bytes = b""
    # The options' vector fields the mapping reads, checked (the generated accessors are not).
    option_vectors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.op.lower()}_{self.index}"


@dataclass
class TFLiteModel:
    version: int
    description: str
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    signatures: dict[str, tuple[dict[str, int], dict[str, int]]] = field(default_factory=dict)
    subgraph_count: int = 1


def _options_class(type_code: int):
    from converter.tflitefb.BuiltinOptions import BuiltinOptions

    names = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}
    name = names.get(type_code)
    if not name or name == "NONE":
        return None
    module = __import__(f"converter.tflitefb.{name}", fromlist=[name])
    return getattr(module, name)


def _buffer_data(v: _Verifier, buffers, index: int, tensor_what: str, data_size: int) -> bytes | None:
    if index == 0:
        return None
    if index >= len(buffers):
        raise ConversionError(f"{tensor_what}: buffer {index} does not exist (the model has {len(buffers)})")
    buffer = buffers[index]
    found = v.vector(buffer, 0, 1, f"buffer {index}")
    if found is not None and found[1]:
        start, length = found
        return v.buf[start:start + length]
    # Buffers of files over 2 GiB live past the FlatBuffer: offset and size from the file start.
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size:
        if not v.fits(offset, size):
            raise ConversionError(f"{tensor_what}: buffer {index} of {size} bytes at byte {offset} ends "
                                  f"past the {data_size}-byte file")
        return v.buf[offset:offset + size]
    return None


def _read_tensor(v: _Verifier, t, k: int, buffers, data_size: int) -> TensorInfo:
    from converter.tflitefb.QuantizationParameters import QuantizationParameters
    from converter.tflitefb.SparsityParameters import SparsityParameters

    what = f"tensor {k}"
    name = v.string(t, 3, what + " name")
    name = name if name else f"tensor_{k}"
    what = f"tensor {k} {name!r}"
    shape_array = v.array(t, 0, "int32", what + " shape")
    shape = tuple(int(d) for d in shape_array) if shape_array is not None else ()
    if any(d < 0 for d in shape):
        raise ConversionError(f"{what}: negative dimension in shape {list(shape)}")
    elements = int(np.prod(shape, dtype=object)) if shape else 1
    if elements > MAX_ELEMENTS:
        raise ConversionError(f"{what}: shape {list(shape)} has {elements} elements, more than {MAX_ELEMENTS}")
    type_code = t.Type()
    sparsity_table = v.subtable(t, 6, SparsityParameters, what + " sparsity")
    info = TensorInfo(k, name, type_code, shape, None, sparse=sparsity_table is not None)
    sparsity = _read_sparsity(v, sparsity_table, what) if sparsity_table is not None else None
    quant = v.subtable(t, 4, QuantizationParameters, what + " quantization")
    if quant is not None:
        scale = v.array(quant, 2, "float32", what + " scales")
        zero_point = v.array(quant, 3, "int64", what + " zero points")
        if scale is not None and len(scale):
            info.scale = tuple(float(s) for s in scale)
            info.zero_point = tuple(int(z) for z in zero_point) if zero_point is not None else (0,) * len(scale)
            info.quantized_dimension = int(quant.QuantizedDimension())
    raw = _buffer_data(v, buffers, t.Buffer(), what, data_size)
    if raw is not None and sparsity is not None:
        from converter.importers.tflite_sparse import densify

        dtype = info.dtype
        if dtype is None or len(raw) % np.dtype(dtype).itemsize:
            raise ConversionError(f"{what}: sparse constant of type {info.type_name} in {len(raw)} bytes")
        values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
        info.data = densify(values, shape, sparsity, what)
    elif raw is not None:
        dtype = info.dtype
        if dtype is None:
            raise ConversionError(f"{what}: constant of type {info.type_name}, which the converter does not read")
        expected = elements * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise ConversionError(f"{what}: buffer {t.Buffer()} holds {len(raw)} bytes, shape {list(shape)} "
                                  f"of {info.type_name} needs {expected}")
        info.data = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    return info


def _read_sparsity(v: _Verifier, table, what: str):
    from converter.importers.tflite_sparse import Sparsity, SparseLevel
    from converter.tflitefb.DimensionMetadata import DimensionMetadata
    from converter.tflitefb.Int32Vector import Int32Vector
    from converter.tflitefb.Uint8Vector import Uint8Vector
    from converter.tflitefb.Uint16Vector import Uint16Vector

    index_vectors = {1: (Int32Vector, "int32"), 2: (Uint16Vector, "uint16"), 3: (Uint8Vector, "uint8")}

    def index_vector(meta, kind_code: int, slot: int, part: str):
        kind = index_vectors.get(kind_code)
        if kind is None:
            return None
        vector = v.subtable(meta, slot, kind[0], f"{what} sparsity {part}")
        return None if vector is None else v.array(vector, 0, kind[1], f"{what} sparsity {part} values")

    order = v.array(table, 0, "int32", what + " traversal order")
    block_map = v.array(table, 1, "int32", what + " block map")
    levels = []
    for j, meta in enumerate(v.tables(table, 2, DimensionMetadata, what + " dim metadata")):
        levels.append(SparseLevel(int(meta.Format()), int(meta.DenseSize()),
                                  index_vector(meta, int(meta.ArraySegmentsType()), 3, f"level {j} segments"),
                                  index_vector(meta, int(meta.ArrayIndicesType()), 5, f"level {j} indices")))
    return Sparsity(tuple(int(d) for d in (order if order is not None else ())),
                    tuple(int(d) for d in (block_map if block_map is not None else ())), levels)


def _indices(v: _Verifier, obj, slot: int, count: int, what: str, optional: bool) -> tuple[int, ...]:
    values = v.array(obj, slot, "int32", what)
    values = () if values is None else tuple(int(i) for i in values)
    for i in values:
        if not (0 <= i < count or (optional and i == -1)):
            raise ConversionError(f"{what}: tensor index {i} out of range (the subgraph has {count} tensors)")
    return values


# Options table -> its int32 vector fields the mapping reads, as (name, field slot).
OPTION_VECTORS = {"ReshapeOptions": (("new_shape", 0),), "SqueezeOptions": (("squeeze_dims", 0),)}


def read_tflite(data: bytes) -> TFLiteModel:
    """Parses and verifies a .tflite file into plain data (main subgraph only)."""
    from converter.tflitefb.Buffer import Buffer
    from converter.tflitefb.Operator import Operator
    from converter.tflitefb.OperatorCode import OperatorCode
    from converter.tflitefb.SignatureDef import SignatureDef
    from converter.tflitefb.SubGraph import SubGraph
    from converter.tflitefb.Tensor import Tensor
    from converter.tflitefb.TensorMap import TensorMap

    if len(data) < 8:
        raise ConversionError(f"not a TFLite model: {len(data)} bytes, too short for a FlatBuffer")
    if not is_tflite(data):
        raise ConversionError(f"not a TFLite model: file identifier {bytes(data[4:8])!r}, expected {FILE_IDENTIFIER!r}")
    v = _Verifier(data)
    model = v.table(Model(), v._u32(0), "model")
    codes = v.tables(model, 1, OperatorCode, "operator_codes")
    subgraphs = v.tables(model, 2, SubGraph, "subgraphs")
    buffers = v.tables(model, 4, Buffer, "buffers")
    if not subgraphs:
        raise ConversionError("the model has no subgraphs")
    graph = subgraphs[0]
    raw_tensors = v.tables(graph, 0, Tensor, "subgraph 0 tensors")
    tensors = [_read_tensor(v, t, k, buffers, len(data)) for k, t in enumerate(raw_tensors)]
    inputs = _indices(v, graph, 1, len(tensors), "subgraph 0 inputs", False)
    outputs = _indices(v, graph, 2, len(tensors), "subgraph 0 outputs", False)
    op_names = []
    for k, code in enumerate(codes):
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            name = "CUSTOM:" + (v.string(code, 1, f"operator code {k} custom code") or "")
        op_names.append((name, int(code.Version())))
    operators = []
    for k, op in enumerate(v.tables(graph, 3, Operator, "subgraph 0 operators")):
        what = f"operator {k}"
        index = int(op.OpcodeIndex())
        if index >= len(op_names):
            raise ConversionError(f"{what}: op code index {index} out of range ({len(op_names)} op codes)")
        name, version = op_names[index]
        options = None
        options_type = int(op.BuiltinOptionsType())
        cls = _options_class(options_type) if options_type else None
        if cls is not None:
            options = v.subtable(op, 4, cls, f"{what} ({name}) options")
        vectors = {}
        for field_name, slot in OPTION_VECTORS.get(type(options).__name__, ()):
            found = v.array(options, slot, "int32", f"{what} ({name}) option {field_name}")
            if found is not None:
                vectors[field_name] = found
        custom = v.vector(op, 5, 1, f"{what} custom options")
        custom_bytes = b"" if custom is None else v.buf[custom[0]:custom[0] + custom[1]]
        operators.append(OperatorInfo(
            k, name, version,
            _indices(v, op, 1, len(tensors), f"{what} ({name}) inputs", True),
            _indices(v, op, 2, len(tensors), f"{what} ({name}) outputs", False),
            options, custom_bytes, vectors))
    signatures = {}
    for k, sig in enumerate(v.tables(model, 7, SignatureDef, "signature_defs")):
        if int(sig.SubgraphIndex()) != 0:
            continue
        key = v.string(sig, 2, f"signature {k} key") or f"signature_{k}"
        maps = []
        for slot, part in ((0, "inputs"), (1, "outputs")):
            entries = {}
            for j, entry in enumerate(v.tables(sig, slot, TensorMap, f"signature {key!r} {part}")):
                tensor = int(entry.TensorIndex())
                if tensor >= len(tensors):
                    raise ConversionError(f"signature {key!r} {part}[{j}]: tensor index {tensor} out of range")
                entries[v.string(entry, 0, f"signature {key!r} {part}[{j}] name") or f"{part}_{j}"] = tensor
            maps.append(entries)
        signatures[key] = (maps[0], maps[1])
    description = v.string(model, 3, "description") or ""
    return TFLiteModel(int(model.Version()), description, tensors, operators, inputs, outputs,
                       signatures, len(subgraphs))


# ---- building the IR -----------------------------------------------------------------------

def _unique_names(tensors: list[TensorInfo]) -> list[str]:
    """TFLite allows repeated or empty tensor names; the IR needs unique ones."""
    names, taken = [], set()
    for t in tensors:
        name = t.name
        if name in taken:
            k = 1
            while f"{name}_{k}" in taken:
                k += 1
            name = f"{name}_{k}"
        taken.add(name)
        names.append(name)
    return names


def _raise_if_unsupported(model: TFLiteModel) -> None:
    from converter.importers.tflite_ops import unsupported_reason

    found: dict[str, list[str]] = {}
    for op in model.operators:
        key = unsupported_reason(model, op)
        if key is not None:
            found.setdefault(key, []).append(op.name)
    if found:
        raise UnsupportedOpsError(found)


def build_graph(model: TFLiteModel) -> Graph:
    from converter.importers.tflite_ops import ImportContext, convert_operator

    _raise_if_unsupported(model)
    if not model.outputs:
        raise ConversionError("subgraph 0 has no outputs")
    builder = GraphBuilder()
    ctx = ImportContext(model, builder, _unique_names(model.tensors))
    for index in model.inputs:
        t = model.tensors[index]
        if t.data is not None:
            continue
        if t.dtype is None:
            raise ConversionError(f"input {t.name!r}: type {t.type_name} is not supported")
        ctx.define_input(index)
    for op in model.operators:
        convert_operator(ctx, op)
    outputs = []
    for index in model.outputs:
        if index in ctx.public:
            if ctx.public[index] not in outputs:
                outputs.append(builder.output(ctx.uint8_output(index)))
            continue
        name = ctx.value(index, f"graph output {model.tensors[index].name!r}")
        if name in outputs:
            continue
        outputs.append(builder.output(name, ctx.names[index] if name != ctx.names[index] else None))
    builder.metadata("source", "tflite")
    builder.metadata("tflite_schema_version", str(model.version))
    if model.description:
        builder.metadata("tflite_description", model.description)
    graph = builder.build()
    if ctx.quantization:
        graph = graph.replace(quantization={n: q for n, q in ctx.quantization.items() if n in graph.tensors})
    signatures = {}
    for key, (sig_inputs, sig_outputs) in model.signatures.items():
        ins = {n: ctx.names[i] for n, i in sig_inputs.items()}
        outs = {n: ctx.public.get(i, ctx.names[i]) for n, i in sig_outputs.items()}
        if all(i in graph.inputs for i in ins.values()) and all(o in graph.outputs for o in outs.values()):
            signatures[key] = Signature(ins, outs)
    if signatures:
        graph = graph.replace(signatures=signatures)
    return graph


def load_tflite(model: str | os.PathLike | bytes) -> Graph:
    """Reads a .tflite file (path or bytes) into an IR graph.

    Raises UnsupportedOpsError listing every op the converter cannot map, or ConversionError
    naming what is wrong with a malformed file; never reads outside the file."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        with open(model, "rb") as f:
            data = f.read()
    return build_graph(read_tflite(data))

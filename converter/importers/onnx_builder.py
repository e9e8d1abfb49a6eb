"""The state of one ONNX import: the IR being built, and the view one ONNX node's converter gets.

Every IR node goes through ``OnnxImportBuilder.emit``, which types it with ``OPS[op].infer`` and, when
all its inputs are known constants, runs ``OPS[op].reference`` instead of emitting it. Folding at
that level means a converter never needs its own constant path: a Reshape of a constant weight,
a Gather over a folded Shape, a Transpose of a Gemm's B all turn into constants by themselves.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.ir import Node, TensorType

# ONNX element types the IR takes; anything else is reported unsupported.
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}
SUPPORTED_NUMPY = {"float32", "int32", "int64", "bool"}
# Element types a model may carry at its boundary: graph inputs and outputs keep them (the runtime
# casts there) and everything between computes in the IR dtype beside them. Constants of these
# types are converted once at import. float64 loses its extra precision that way; every other
# type's values (float8, float4, int4 and int2 included) survive the cast exactly, uint64's up to INT64_MAX (the runtime's Cast refuses larger
# input values; larger constants are refused here). The conversion report lists every tensor this
# applies to.
BOUNDARY_DTYPES = {
    onnx.TensorProto.FLOAT16: ("float16", "float32"),
    onnx.TensorProto.BFLOAT16: ("bfloat16", "float32"),
    onnx.TensorProto.DOUBLE: ("float64", "float32"),
    onnx.TensorProto.INT8: ("int8", "int32"),
    onnx.TensorProto.UINT8: ("uint8", "int32"),
    onnx.TensorProto.INT16: ("int16", "int32"),
    onnx.TensorProto.UINT16: ("uint16", "int32"),
    onnx.TensorProto.UINT32: ("uint32", "int64"),
    onnx.TensorProto.UINT64: ("uint64", "int64"),
    onnx.TensorProto.FLOAT8E4M3FN: ("float8_e4m3fn", "float32"),
    onnx.TensorProto.FLOAT8E4M3FNUZ: ("float8_e4m3fnuz", "float32"),
    onnx.TensorProto.FLOAT8E5M2: ("float8_e5m2", "float32"),
    onnx.TensorProto.FLOAT8E5M2FNUZ: ("float8_e5m2fnuz", "float32"),
    onnx.TensorProto.FLOAT8E8M0: ("float8_e8m0fnu", "float32"),
    onnx.TensorProto.FLOAT4E2M1: ("float4_e2m1fn", "float32"),
    onnx.TensorProto.INT4: ("int4", "int32"),
    onnx.TensorProto.UINT4: ("uint4", "int32"),
    onnx.TensorProto.INT2: ("int2", "int32"),
    onnx.TensorProto.UINT2: ("uint2", "int32"),
}
_COMPUTED_AS = {boundary: inside for boundary, inside in BOUNDARY_DTYPES.values()}


def onnx_dtype_name(elem_type: int) -> str:
    """The ONNX name of a TensorProto data type, or "unknown dtype code N" for a value outside the enum
    (a file may carry any integer there)."""
    try:
        return onnx.TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"unknown dtype code {elem_type}"


def tensor_to_array(tensor: onnx.TensorProto, where: str) -> np.ndarray:
    try:
        array = numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError) as exc:
        # dims that do not match the data, an unknown data type: the file's tensor is malformed
        raise ConversionError(f"{where}: cannot be read as an array (dims {list(tensor.dims)}, data type "
                              f"{onnx_dtype_name(tensor.data_type)}): {type(exc).__name__}: {exc}") from None
    if array.dtype.name == "uint64" and array.size and array.max() > np.iinfo(np.int64).max:
        raise ConversionError(f"{where}: uint64 value {int(array.max())} is past INT64_MAX; the model would "
                              f"compute it in int64, which cannot hold it")
    if array.dtype.name in _COMPUTED_AS:
        array = array.astype(_COMPUTED_AS[array.dtype.name])
    if array.dtype.name not in SUPPORTED_NUMPY:
        raise ConversionError(f"{where}: dtype {array.dtype.name} is not supported "
                              f"(float32, int32, int64 and bool are)")
    return _c_order(array)


def _c_order(array: np.ndarray) -> np.ndarray:
    # np.ascontiguousarray would turn a 0-d scalar into shape (1,).
    return array if array.flags.c_contiguous else array.copy(order="C")


def sparse_to_array(sparse: onnx.SparseTensorProto, where: str) -> np.ndarray:
    values = tensor_to_array(sparse.values, where)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(sparse.dims, dtype=np.int64)), dtype=values.dtype)
    if indices.ndim == 2:
        indices = np.ravel_multi_index(tuple(indices.T), tuple(sparse.dims))
    dense[indices.reshape(-1)] = values.reshape(-1)
    return dense.reshape(tuple(sparse.dims))


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


class OnnxImportBuilder:
    def __init__(self, initializers: Mapping[str, onnx.TensorProto], taken_names: Iterable[str]):
        self.tensors: dict[str, TensorType] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.nodes: list[Node] = []
        # Converted on first use: a model may carry initializers nothing reads.
        self._initializers = dict(initializers)
        self._taken = set(taken_names)
        self._taken_node_names: set[str] = set()
        # ONNX tensor name -> the IR tensor the nodes read or write in its place (a boundary
        # input's cast, a boundary output's value before its cast).
        self.aliases: dict[str, str] = {}

    def fresh_name(self, base: str) -> str:
        """A tensor name no other tensor of the model has."""
        return _claim(self._taken, base)

    def fresh_node_name(self, base: str) -> str:
        return _claim(self._taken_node_names, base)

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.constants:
            return self.constants[name]
        tensor = self._initializers.pop(name, None)
        if tensor is None:
            return None
        self.add_constant(name, tensor_to_array(tensor, f"initializer {name!r}"))
        return self.constants[name]

    def type_of(self, name: str) -> TensorType:
        if name not in self.tensors and self.constant(name) is None:
            raise ConversionError(f"tensor {name!r} is used before any node produces it")
        return self.tensors[name]

    def add_constant(self, name: str, value: np.ndarray) -> None:
        value = _c_order(np.asarray(value))
        self.constants[name] = value
        self.tensors[name] = TensorType(value.dtype.name, value.shape)
        self._taken.add(name)

    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any],
             outputs: Sequence[str], node_name: str) -> None:
        from converter.ops import OPS

        opdef = OPS[op]
        input_types = [self.type_of(i) if i else None for i in inputs]
        where = f"node {node_name!r} (IR {op})"
        try:
            output_types = opdef.infer(input_types, attrs)
        except ConversionError:
            raise
        except Exception as exc:
            shown = ", ".join("-" if t is None else f"{t.dtype}{_shape_str(t.shape)}"
                              for t in input_types)
            raise ConversionError(f"{where}: cannot type it with inputs ({shown}) "
                                  f"and attrs {dict(attrs)}: {exc}") from exc
        if len(output_types) < len(outputs):
            raise ConversionError(f"{where}: the op gives {len(output_types)} outputs, "
                                  f"{len(outputs)} were asked for")
        values = [self.constant(i) if i else None for i in inputs]
        if any(inputs) and all(v is not None for i, v in zip(inputs, values) if i):
            try:
                results = opdef.reference(values, attrs)
            except ConversionError:
                raise
            except Exception as exc:  # the file's constants are data: an index out of range is the file's fault
                raise ConversionError(f"{where}: cannot fold it over its constant inputs: {exc}") from exc
            for name, result, expected in zip(outputs, results, output_types):
                if not name:
                    continue
                result = np.asarray(result)
                if opdef.rows_set_at_eval and result.ndim == len(expected.shape) and result.ndim:
                    expected = TensorType(expected.dtype, (result.shape[0],) + tuple(expected.shape[1:]))
                if result.shape != tuple(expected.shape):
                    raise ConversionError(
                        f"{where}: folding gave shape {_shape_str(result.shape)} but shape "
                        f"inference says {_shape_str(expected.shape)}")
                self.add_constant(name, result.astype(expected.dtype, copy=False))
            return
        for name, t in zip(outputs, output_types):
            if name:
                self.tensors[name] = t
                self._taken.add(name)
        self.nodes.append(Node(op, tuple(inputs), tuple(outputs), dict(attrs), node_name))


class NodeContext:
    """What one ONNX node's converter sees: its attributes, inputs and a way to emit IR."""

    def __init__(self, builder: OnnxImportBuilder, node: onnx.NodeProto, name: str, opset: int,
                 is_used):
        self.builder = builder
        self.node = node
        self.name = name
        self.op_type = node.op_type
        self.opset = opset
        self.attrs = {a.name: _attribute_value(a) for a in node.attribute}
        self._is_used = is_used
        self._emitted = 0

    # ---- attributes and inputs ----
    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def input(self, index: int) -> str:
        name = self.node.input[index] if index < len(self.node.input) else ""
        return self.builder.aliases.get(name, name)

    def output(self, index: int) -> str:
        name = self.node.output[index] if index < len(self.node.output) else ""
        return self.builder.aliases.get(name, name)

    @property
    def inputs(self) -> list[str]:
        return [self.builder.aliases.get(name, name) for name in self.node.input]

    @property
    def outputs(self) -> list[str]:
        return [self.builder.aliases.get(name, name) for name in self.node.output]

    def is_used(self, output_name: str) -> bool:
        return bool(output_name) and self._is_used(output_name)

    def type(self, name_or_index) -> TensorType:
        name = self.input(name_or_index) if isinstance(name_or_index, int) else name_or_index
        return self.builder.type_of(name)

    def shape(self, name_or_index) -> tuple[int, ...]:
        return tuple(self.type(name_or_index).shape)

    def rank(self, name_or_index) -> int:
        return len(self.shape(name_or_index))

    def const(self, name_or_index) -> np.ndarray | None:
        name = self.input(name_or_index) if isinstance(name_or_index, int) else name_or_index
        return self.builder.constant(name) if name else None

    def require_const(self, index: int, what: str) -> np.ndarray:
        value = self.const(index)
        if value is None:
            raise self.error(f"input {index} ({what}, tensor {self.input(index)!r}) must be "
                             f"constant at import; dynamic shapes are not supported")
        return value

    def error(self, message: str) -> ConversionError:
        return ConversionError(f"node {self.name!r} ({self.op_type}): {message}")

    def unsupported(self, reason: str) -> UnsupportedOpsError:
        return UnsupportedOpsError({f"{self.op_type} ({reason})": [self.name]})

    # ---- building ----
    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None,
             outputs: Sequence[str] | int = 1) -> list[str]:
        """Emits one IR node; ``outputs`` names its outputs (ONNX names, "" for unused ones) or
        says how many fresh intermediate tensors to make."""
        if isinstance(outputs, int):
            outputs = [self.builder.fresh_name(f"{self.name}/{op}") for _ in range(outputs)]
        node_name = (self.name if self._emitted == 0
                     else self.builder.fresh_node_name(f"{self.name}/{op}"))
        self._emitted += 1
        self.builder.emit(op, list(inputs), dict(attrs or {}), list(outputs), node_name)
        return list(outputs)

    def emit1(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None,
              output: str | None = None) -> str:
        return self.emit(op, inputs, attrs, [output] if output else 1)[0]

    def constant(self, value, dtype=None, base: str = "const") -> str:
        """A new constant tensor; returns its name."""
        array = np.asarray(value, dtype=dtype)
        name = self.builder.fresh_name(f"{self.name}/{base}")
        self.builder.add_constant(name, array)
        return name

    def set_output_constant(self, index: int, value: np.ndarray) -> None:
        name = self.output(index)
        if name:
            array = np.asarray(value)
            if array.dtype.name not in SUPPORTED_NUMPY:
                raise self.error(f"output {name!r} would have unsupported dtype {array.dtype}")
            self.builder.add_constant(name, array)

    def copy_to(self, source: str, output: str) -> None:
        """Makes ONNX tensor ``output`` hold ``source``'s value (an Identity, folded if constant)."""
        self.emit("Identity", [source], {}, [output])

    def reshape(self, source: str, shape: Sequence[int], output: str | None = None) -> str:
        shape = tuple(int(d) for d in shape)
        if output is None and tuple(self.type(source).shape) == shape:
            return source
        return self.emit1("Reshape", [source], {"shape": shape}, output)


def _claim(taken: set[str], base: str) -> str:
    name, k = base, 1
    while name in taken:
        name = f"{base}_{k}"
        k += 1
    taken.add(name)
    return name


def _attribute_value(attribute: onnx.AttributeProto):
    value = helper.get_attribute_value(attribute)
    try:
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode("utf-8") for v in value]
    except UnicodeDecodeError as exc:
        raise ConversionError(f"attribute {attribute.name!r}: a string that is not UTF-8 ({exc})") from None
    return value


class NodeInfo:
    """What the support scan knows of a node before anything is built: its attributes, the
    ranks ONNX shape inference found, and the values of initializers and Constant outputs."""

    def __init__(self, node: onnx.NodeProto, opset: int, ranks: Mapping[str, int],
                 static_values: Mapping[str, onnx.TensorProto], graph_inputs: set[str], is_used):
        self.node = node
        self.op_type = node.op_type
        self.opset = opset
        self.attrs = {a.name: _attribute_value(a) for a in node.attribute}
        self._ranks = ranks
        self._static = static_values
        self._graph_inputs = graph_inputs
        self._is_used = is_used

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def input(self, index: int) -> str:
        return self.node.input[index] if index < len(self.node.input) else ""

    def output(self, index: int) -> str:
        return self.node.output[index] if index < len(self.node.output) else ""

    def rank(self, index: int) -> int | None:
        return self._ranks.get(self.input(index))

    def static(self, index: int) -> np.ndarray | None:
        tensor = self._static.get(self.input(index))
        return None if tensor is None else numpy_helper.to_array(tensor)

    def is_graph_input(self, index: int) -> bool:
        return self.input(index) in self._graph_inputs

    def is_used(self, name: str) -> bool:
        return bool(name) and self._is_used(name)

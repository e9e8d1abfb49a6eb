"""Tiny .edge models written straight from the schema's object API (converter.edgefb).

They exercise the Python API without depending on the converter's importer or passes: each model is
small enough that its expected outputs are written here in NumPy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np

from converter.edgefb.BinaryOp import BinaryOp
from converter.edgefb.BinaryOptions import BinaryOptionsT
from converter.edgefb.Buffer import BufferT
from converter.edgefb.DType import DType
from converter.edgefb.Graph import GraphT
from converter.edgefb.Metadata import MetadataT
from converter.edgefb.Model import ModelT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpCost import OpCostT
from converter.edgefb.Operator import OperatorT
from converter.edgefb.OperatorCode import OperatorCodeT
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.Quantization import QuantizationT
from converter.edgefb.Signature import SignatureT
from converter.edgefb.Tensor import TensorT
from converter.edgefb.TensorMap import TensorMapT
from converter.edgefb.UnaryOp import UnaryOp
from converter.edgefb.UnaryOptions import UnaryOptionsT

ALIGNMENT = 64
DTYPES = {np.dtype(np.float32): DType.FLOAT32, np.dtype(np.int32): DType.INT32, np.dtype(np.int8): DType.INT8}


@dataclass
class ModelSketch:
    """Collects tensors, buffers and ops, then writes the FlatBuffer plus the aligned data section."""

    tensors: list = field(default_factory=list)
    constants: list = field(default_factory=list)  # buffer i+1 holds constants[i]
    operators: list = field(default_factory=list)
    opcodes: list = field(default_factory=list)

    def tensor(self, name, shape, dtype=np.float32, signature=None, data=None, quantization=None) -> int:
        t = TensorT()
        t.name = name
        t.shape = list(shape)
        t.shapeSignature = list(signature) if signature is not None else None
        t.dtype = DTYPES[np.dtype(dtype)]
        if data is not None:
            self.constants.append(np.ascontiguousarray(data, dtype=dtype).tobytes())
            t.buffer = len(self.constants)
        if quantization is not None:
            q = QuantizationT()
            q.scale, q.zeroPoint, q.quantizedDimension = quantization
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, opcode, inputs, outputs, options_type=OpOptions.NONE, options=None, flops=0):
        if opcode not in self.opcodes:
            self.opcodes.append(opcode)
        o = OperatorT()
        o.opcodeIndex = self.opcodes.index(opcode)
        o.inputs, o.outputs = list(inputs), list(outputs)
        o.optionsType, o.options = options_type, options
        cost = OpCostT()
        cost.flops = flops
        o.cost = cost
        self.operators.append(o)

    def binary(self, kind, a, b, out):
        options = BinaryOptionsT()
        options.op = kind
        self.op(OpCode.BINARY, [a, b], [out], OpOptions.BinaryOptions, options,
                flops=int(np.prod(self.tensors[out].shape)))

    def unary(self, kind, x, out):
        options = UnaryOptionsT()
        options.op = kind
        self.op(OpCode.UNARY, [x], [out], OpOptions.UnaryOptions, options,
                flops=int(np.prod(self.tensors[out].shape)))

    def write(self, inputs, outputs, signatures=None, description="test model") -> bytes:
        """signatures: {key: (input names, output names)}; defaults to "infer" over the graph."""
        graph = GraphT()
        graph.name = "main"
        graph.tensors, graph.inputs, graph.outputs, graph.operators = self.tensors, inputs, outputs, self.operators
        by_name = {t.name: i for i, t in enumerate(self.tensors)}
        signatures = signatures or {"infer": ([self.tensors[i].name for i in inputs],
                                              [self.tensors[i].name for i in outputs])}
        model = ModelT()
        model.version = 1
        model.description = description
        model.producer = "tests/edge/models.py"
        model.graphs = [graph]
        model.operatorCodes = []
        for opcode in self.opcodes:
            code = OperatorCodeT()
            code.opcode = opcode
            model.operatorCodes.append(code)
        model.signatures = []
        for key, (input_names, output_names) in signatures.items():
            signature = SignatureT()
            signature.key = key
            signature.inputs = [self._tensor_map(name, by_name[name]) for name in input_names]
            signature.outputs = [self._tensor_map(name, by_name[name]) for name in output_names]
            model.signatures.append(signature)
        entry = MetadataT()
        entry.name, entry.value = "purpose", "edge python API tests"
        model.metadata = [entry]

        def pack(data_start: int) -> tuple[bytes, list[int]]:
            offsets, cursor = [], data_start
            model.buffers = [BufferT()]
            for blob in self.constants:
                cursor = -(-cursor // ALIGNMENT) * ALIGNMENT
                buffer = BufferT()
                buffer.offset, buffer.size = cursor, len(blob)
                model.buffers.append(buffer)
                offsets.append(cursor)
                cursor += len(blob)
            builder = flatbuffers.Builder(1024)
            builder.Finish(model.Pack(builder), file_identifier=b"EDG1")
            return bytes(builder.Output()), offsets

        # Offsets are absolute, so pack once to learn the FlatBuffer's size (which does not depend
        # on the offsets' values, only on their presence), then again with the real offsets.
        probe, _ = pack(1 << 40)
        flatbuffer, offsets = pack(-(-len(probe) // ALIGNMENT) * ALIGNMENT)
        assert len(flatbuffer) == len(probe)
        out = bytearray(flatbuffer)
        for offset, blob in zip(offsets, self.constants):
            out.extend(b"\0" * (offset - len(out)))
            out.extend(blob)
        return bytes(out)

    @staticmethod
    def _tensor_map(name, index):
        entry = TensorMapT()
        entry.name, entry.tensor = name, index
        return entry


def add_relu(width: int = 4, dynamic_batch: bool = True, seed: int = 0) -> tuple[bytes, np.ndarray]:
    """y = relu(x + bias), x: [batch, width] (batch dynamic). Returns (model bytes, bias)."""
    bias = np.random.default_rng(seed).standard_normal(width).astype(np.float32)
    sketch = ModelSketch()
    signature = [-1, width] if dynamic_batch else None
    x = sketch.tensor("x", [1, width], signature=signature)
    b = sketch.tensor("bias", [width], data=bias)
    s = sketch.tensor("sum", [1, width], signature=signature)
    y = sketch.tensor("y", [1, width], signature=signature)
    sketch.binary(BinaryOp.ADD, x, b, s)
    sketch.unary(UnaryOp.RELU, s, y)
    return sketch.write([x], [y]), bias


def two_inputs() -> bytes:
    """sum = a + b, neg = -(a * b) over [2, 3] float32, with a quantized int8 tensor on the side
    (an unused graph input that carries per-channel quantization parameters)."""
    sketch = ModelSketch()
    a = sketch.tensor("a", [2, 3])
    b = sketch.tensor("b", [2, 3])
    total = sketch.tensor("sum", [2, 3])
    product = sketch.tensor("product", [2, 3])
    negated = sketch.tensor("neg", [2, 3])
    codes = sketch.tensor("codes", [2, 3], dtype=np.int8, quantization=([0.5, 0.25], [0, 3], 0))
    sketch.binary(BinaryOp.ADD, a, b, total)
    sketch.binary(BinaryOp.MUL, a, b, product)
    sketch.unary(UnaryOp.NEG, product, negated)
    return sketch.write([a, b, codes], [total, negated],
                        signatures={"infer": (["a", "b"], ["sum", "neg"]),
                                    "add_only": (["a", "b"], ["sum"])})

"""Tiny .edge models written straight from the schema's object API (tests/fixtures/raw_edge.py).

They exercise the Python API without depending on the converter's importer or passes: each model is
small enough that its expected outputs are written here in NumPy.
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.BinaryOp import BinaryOp
from converter.edgefb.BinaryOptions import BinaryOptionsT
from converter.edgefb.DType import DType
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.UnaryOp import UnaryOp
from converter.edgefb.UnaryOptions import UnaryOptionsT
from tests.fixtures.raw_edge import ModelBuilder, serialize

DTYPES = {np.dtype(np.float32): DType.FLOAT32, np.dtype(np.int32): DType.INT32, np.dtype(np.int8): DType.INT8}


class ModelSketch(ModelBuilder):
    """``raw_edge.ModelBuilder`` over NumPy: dtypes and constants given as NumPy, element-wise ops
    charged their element count, signatures by tensor name."""

    def tensor(self, name, shape, dtype=np.float32, signature=None, data=None, quantization=None) -> int:
        blob = None if data is None else np.ascontiguousarray(data, dtype=dtype).tobytes()
        return super().tensor(name, shape, DTYPES[np.dtype(dtype)], data=blob, signature=signature,
                              quant=quantization)

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
        by_name = {t.name: i for i, t in enumerate(self.tensors)}
        signatures = signatures or {"infer": ([self.tensors[i].name for i in inputs],
                                              [self.tensors[i].name for i in outputs])}
        model = self.model(inputs, outputs,
                           [(key, [(n, by_name[n]) for n in names_in], [(n, by_name[n]) for n in names_out], None)
                            for key, (names_in, names_out) in signatures.items()],
                           [("purpose", "edge python API tests")], description=description,
                           producer="tests/edge/tiny_models.py")
        return serialize(self, model)


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

"""Quantize and Dequantize: the conversions at the edges of an int8 (or float16) region.

Quantize (float32 -> int8) uses the quantization params of its OUTPUT tensor; Dequantize
(int8 -> float32 with the params of its INPUT tensor, or float16 -> float32 with none). The
params live in Graph.quantization, not in the attributes, so the reference executor hands them
over as ``attrs["quantization"] = (input params, output params)``; the arithmetic itself is in
converter.ops.int8_reference (one place for every integer rule).
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.OpCode import OpCode
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import fail, need, no_attrs, no_options, output_elements
from converter.ops.int8_reference import dequantize_int8, dequantize_values, quantize_int8, quantize_values


def _quantize_infer(types, attrs):
    need("Quantize", types, 1)
    if types[0].dtype != "float32":
        fail("Quantize", f"input has dtype {types[0].dtype}; expected float32")
    return [TensorType("int8", types[0].shape)]


def _dequantize_infer(types, attrs):
    need("Dequantize", types, 1)
    if types[0].dtype not in ("int8", "float16"):
        fail("Dequantize", f"input has dtype {types[0].dtype}; expected int8 or float16")
    return [TensorType("float32", types[0].shape)]


def _params(attrs, side: int, op: str):
    quantization = attrs.get("quantization")
    params = quantization[side][0] if quantization else None
    if params is None:
        where = "output" if side else "input"
        fail(op, f"its {where} tensor has no quantization params (Graph.quantization)")
    return params


def _quantize_reference(inputs, attrs):
    return [quantize_values(inputs[0], _params(attrs, 1, "Quantize"))]


def _dequantize_reference(inputs, attrs):
    x = inputs[0]
    if x.dtype == np.float16:
        return [x.astype(np.float32)]
    return [dequantize_values(x, _params(attrs, 0, "Dequantize"))]


register(OpDef(name="Quantize", infer=_quantize_infer, reference=_quantize_reference,
               lower=no_options(OpCode.QUANTIZE), lift=no_attrs, opcode=OpCode.QUANTIZE,
               flops=output_elements, int8=quantize_int8))
register(OpDef(name="Dequantize", infer=_dequantize_infer, reference=_dequantize_reference,
               lower=no_options(OpCode.DEQUANTIZE), lift=no_attrs, opcode=OpCode.DEQUANTIZE,
               flops=output_elements, int8=dequantize_int8))

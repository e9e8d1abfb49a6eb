"""Linear algebra on the last two axes: Det."""
from __future__ import annotations

import numpy as np

from converter.edgefb.OpCode import OpCode
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import fail, need, no_attrs, no_options


def _det_infer(types, attrs):
    need("Det", types, 1)
    x = types[0]
    if x.dtype != "float32":
        fail("Det", f"x is {x.dtype}; float32 only")
    if x.rank < 2 or x.shape[-1] != x.shape[-2]:
        fail("Det", f"x {x.shape} must be [..., n, n]")
    return [TensorType("float32", x.shape[:-2])]


def _det_reference(inputs, attrs):
    """LAPACK's LU determinant in float64, rounded to float32 (the runtime eliminates with partial
    pivoting in double: the same method)."""
    x = np.asarray(inputs[0], np.float64)
    if x.shape[-1] == 0:
        return [np.ones(x.shape[:-2], np.float32)]
    return [np.asarray(np.linalg.det(x), np.float32).reshape(x.shape[:-2])]


def _det_flops(in_types, out_types, attrs) -> int:
    n = in_types[0].shape[-1]
    return int(np.prod(out_types[0].shape)) * (2 * n ** 3) // 3


register(OpDef(name="Det", infer=_det_infer, reference=_det_reference, lower=no_options(OpCode.DET), lift=no_attrs,
               opcode=OpCode.DET, flops=_det_flops))

"""BitCast: the runtime's bytes, read as another dtype of the same size, against NumPy's view and
onnxruntime, bit for bit (NaN payloads, -0.0, infinities and subnormals included), through the
integer types the graph computes in a wider type; and the refusals of the floats computed in
float32 (float64, float16, bfloat16)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import helper

import converter
import converter.reference
from tests.fixtures.harness import run_edge, run_onnxruntime

pytest.importorskip("onnxruntime")


def bitcast_model(source: np.dtype, target: np.dtype, shape, through: str | None = None):
    """x -> BitCast(to=target) -> y, optionally with a Neg first (so x is an intermediate value)."""
    elem = helper.np_dtype_to_tensor_dtype
    nodes, name = [], "x"
    if through:
        nodes.append(helper.make_node(through, ["x"], ["x2"]))
        name = "x2"
    nodes.append(helper.make_node("BitCast", [name], ["y"], to=elem(np.dtype(target))))
    graph = helper.make_graph(nodes, "bitcast", [helper.make_tensor_value_info("x", elem(np.dtype(source)), shape)],
                              [helper.make_tensor_value_info("y", elem(np.dtype(target)), shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    model.ir_version = 11
    return model


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(f"u{np.dtype(a.dtype).itemsize}")


SPECIAL_FLOATS = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3.4e38, 1.5], np.float32)
SPECIAL_BITS = np.concatenate([SPECIAL_FLOATS.view(np.int32),
                               np.array([0x7FC00001, -0x7FFFF, 0x7F800001, 0x00000001], np.int32)])
CASES = {
    "float32-int32": (SPECIAL_FLOATS, np.int32),
    "int32-float32": (SPECIAL_BITS, np.float32),  # quiet and signalling NaNs with payloads
    "int32-uint32": (np.array([-1, 0, 2**31 - 1, -(2**31), 5], np.int32), np.uint32),
    "uint32-int32": (np.array([0, 2**32 - 1, 2**31, 2**31 - 1], np.uint32), np.int32),
    "uint32-float32": (np.array([0x3F800000, 0xFF800000, 0x80000000], np.uint32), np.float32),
    "float32-uint32": (SPECIAL_FLOATS, np.uint32),
    "int8-uint8": (np.array([-128, -1, 0, 1, 127], np.int8), np.uint8),
    "uint8-int8": (np.array([0, 1, 127, 128, 255], np.uint8), np.int8),
    "uint16-int16": (np.array([0, 65535, 32768, 32767, 1], np.uint16), np.int16),
    "bool-uint8": (np.array([True, False, True], np.bool_), np.uint8),
    "uint64-int64": (np.array([0, 2**63 - 1, 12345], np.uint64), np.int64),
}


@pytest.mark.parametrize("name", CASES)
def test_bitcast_keeps_the_bits(name):
    x, target = CASES[name]
    x = x.reshape(1, -1)
    want = x.view(target)
    for through in (None, "Identity"):
        model = bitcast_model(x.dtype, target, x.shape, through)
        result = converter.convert(model)
        got = run_edge(result.data, {"x": x})["y"]
        assert got.dtype == want.dtype and np.array_equal(bits(got), bits(want)), (through, got, want)
        ref = converter.reference.run(result.graph, {"x": x})["y"]
        assert np.array_equal(bits(np.asarray(ref).astype(want.dtype)), bits(want)), (through, ref, want)
        if x.dtype not in (np.uint64, np.bool_):  # onnxruntime has no BitCast for these
            ort = run_onnxruntime(model, {"x": x})["y"]
            assert np.array_equal(bits(ort), bits(want))


@pytest.mark.parametrize("source, target, match", [
    (np.float64, np.int64, "float64, float16"), (np.int64, np.float64, "to=double"), (np.float16, np.int16, "float16"),
    (np.int16, np.float16, "to=float16"), (np.uint16, ml_dtypes.bfloat16, "to=bfloat16")])
def test_bitcast_refusals_name_the_type(source, target, match):
    with pytest.raises(converter.ConversionError, match=match):
        converter.convert(bitcast_model(np.dtype(source), np.dtype(target), (3,), through="Identity"))

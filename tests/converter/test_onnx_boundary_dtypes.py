"""float16, bfloat16, float64 and the 8-, 16-, 32- and 64-bit integers at an ONNX model's boundary: the graph inputs and outputs keep
their dtype (the runtime casts there), the graph computes in float32, int32 or int64, and the conversion
report lists each such tensor. Checked against onnxruntime, which computes in the declared types."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

import converter
from converter.errors import ConversionError, UnsupportedOpsError
from edge.errors import EdgeError
from tests.fixtures.harness import run_edge, run_onnxruntime

pytest.importorskip("onnxruntime")

CASES = {
    # elem type, numpy dtype, inputs' value range, tolerance relative to the output's scale
    "float64": (TensorProto.DOUBLE, np.float64, (-3.0, 3.0), 1e-6),
    "float16": (TensorProto.FLOAT16, np.float16, (-3.0, 3.0), 1e-3),
    "int8": (TensorProto.INT8, np.int8, (-60, 60), 0),
    "uint8": (TensorProto.UINT8, np.uint8, (0, 120), 0),
    "int16": (TensorProto.INT16, np.int16, (-200, 200), 0),
    "uint16": (TensorProto.UINT16, np.uint16, (0, 250), 0),
    "uint32": (TensorProto.UINT32, np.uint32, (0, 70000), 0),
    "uint64": (TensorProto.UINT64, np.uint64, (0, 3_000_000_000), 0),
}
# The type computed in inside the graph; every other one is int32.
INSIDE = {"float64": "float32", "float16": "float32", "uint32": "int64", "uint64": "int64"}


def _model(elem: int, ops=("Add", "Mul")):
    nodes = [helper.make_node(ops[0], ["a", "b"], ["s"]), helper.make_node(ops[1], ["s", "b"], ["y"]),
             helper.make_node("Cast", ["s"], ["s16"], to=TensorProto.FLOAT16)]
    graph = helper.make_graph(
        nodes, "boundary",
        [helper.make_tensor_value_info("a", elem, [2, 5]), helper.make_tensor_value_info("b", elem, [5])],
        [helper.make_tensor_value_info("y", elem, [2, 5]), helper.make_tensor_value_info("s16", TensorProto.FLOAT16, [2, 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _values(rng, dtype, low, high, shape):
    if np.dtype(dtype).kind == "f":
        return rng.uniform(low, high, shape).astype(dtype)
    return rng.integers(low, high, shape).astype(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_boundary_dtype_matches_onnxruntime(name):
    elem, dtype, (low, high), tolerance = CASES[name]
    rng = np.random.default_rng(5)
    feeds = {"a": _values(rng, dtype, low, high, (2, 5)), "b": _values(rng, dtype, low, high, (5,))}
    model = _model(elem)
    result = converter.convert(model)
    ours = run_edge(result.data, feeds)
    theirs = run_onnxruntime(model, feeds)
    for key in ("y", "s16"):
        assert ours[key].dtype == theirs[key].dtype, key
        if tolerance:
            scale = max(1.0, float(np.max(np.abs(theirs[key].astype(np.float64)))))
            np.testing.assert_allclose(ours[key].astype(np.float64), theirs[key].astype(np.float64),
                                       atol=tolerance * scale, rtol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    inside = INSIDE.get(name, "int32")
    assert result.report.boundary_dtypes == {"a": f"{name} as {inside}", "b": f"{name} as {inside}",
                                             "y": f"{name} as {inside}", "s16": "float16 as float32"}
    assert f"a: {name} as {inside}" in str(result.report)


def test_integer_wraps_as_the_narrow_type():
    """int8 computed in int32 and cast back wraps as int8 arithmetic does (onnxruntime agrees)."""
    model = _model(TensorProto.INT8, ops=("Add", "Add"))
    feeds = {"a": np.array([[100, -100, 127, -128, 5]] * 2, np.int8), "b": np.array([100, -100, 1, -1, 3], np.int8)}
    ours = run_edge(converter.convert(model).data, feeds)
    np.testing.assert_array_equal(ours["y"], run_onnxruntime(model, feeds)["y"])


def test_cast_to_float16_inside_the_graph_rounds():
    """A Cast to float16 between float32 ops keeps float16's rounding."""
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "round", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1.0001, 3.14159265, 65519.0, 1e-8], np.float32)
    ours = run_edge(converter.convert(model).data, {"x": x})["y"]
    np.testing.assert_array_equal(ours, x.astype(np.float16).astype(np.float32))


def test_unsigned_integers_wrap_as_the_narrow_type():
    """uint16/uint32 computed in int32/int64 and cast back wrap as their own arithmetic does."""
    for elem, dtype in ((TensorProto.UINT16, np.uint16), (TensorProto.UINT32, np.uint32)):
        model = _model(elem, ops=("Sub", "Mul"))
        top = np.iinfo(dtype).max
        feeds = {"a": np.array([[0, 1, top, 7, top // 2]] * 2, dtype), "b": np.array([1, 5, top, 9, 3], dtype)}
        ours = run_edge(converter.convert(model).data, feeds)
        np.testing.assert_array_equal(ours["y"], run_onnxruntime(model, feeds)["y"])


def test_bfloat16_round_trip_rounds_to_nearest_even():
    """bfloat16 inputs widen exactly; a Cast to bfloat16 rounds to nearest even, NaN stays NaN."""
    nodes = [helper.make_node("Cast", ["x"], ["b"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["w", "w"], ["w2"])]
    graph = helper.make_graph(nodes, "bf16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7]),
                                               helper.make_tensor_value_info("w", TensorProto.BFLOAT16, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7]),
                               helper.make_tensor_value_info("w2", TensorProto.BFLOAT16, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # 1 + 2^-8 is halfway between two bfloat16 values and rounds to the even one; 1 + 3 * 2^-8 rounds up.
    x = np.array([1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, -3.14159, 1e-30, 3e38, np.inf, np.nan], np.float32)
    w = np.array([1.5, -2.25, 100.0], ml_dtypes.bfloat16)
    result = converter.convert(model)
    ours = run_edge(result.data, {"x": x, "w": w})
    np.testing.assert_array_equal(ours["y"], x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert ours["w2"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(ours["w2"].astype(np.float32), (w.astype(np.float32) * 2))
    assert result.report.boundary_dtypes["w"] == "bfloat16 as float32"


def _uint64_model(constant=None):
    nodes = [helper.make_node("Add", ["a", "c" if constant is not None else "a"], ["y"])]
    inits = [] if constant is None else [helper.make_tensor("c", TensorProto.UINT64, [1], [constant])]
    graph = helper.make_graph(nodes, "u64", [helper.make_tensor_value_info("a", TensorProto.UINT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT64, [2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_uint64_values_past_int64_are_refused():
    """uint64 computes in int64: a constant past INT64_MAX is refused at conversion, an input value
    past it by the runtime's Cast, each naming the value."""
    with pytest.raises(ConversionError, match="past INT64_MAX"):
        converter.convert(_uint64_model(constant=2 ** 63))
    data = converter.convert(_uint64_model()).data
    np.testing.assert_array_equal(run_edge(data, {"a": np.array([2 ** 62, 5], np.uint64)})["y"],
                                  np.array([2 ** 63, 10], np.uint64))
    with pytest.raises(EdgeError, match="uint64 value 9223372036854775808 at index 1"):
        run_edge(data, {"a": np.array([1, 2 ** 63], np.uint64)})


def test_other_dtypes_are_still_refused_by_name():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "c64",
                              [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [3])])
    with pytest.raises(UnsupportedOpsError, match="complex64"):
        converter.convert(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))

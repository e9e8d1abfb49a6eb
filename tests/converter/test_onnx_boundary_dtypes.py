"""float16, float64, int8 and uint8 at an ONNX model's boundary: the graph inputs and outputs keep
their dtype (the runtime casts there), the graph computes in float32 or int32, and the conversion
report lists each such tensor. Checked against onnxruntime, which computes in the declared types."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import converter
from converter.errors import UnsupportedOpsError
from tests.fixtures.harness import run_edge, run_onnxruntime

pytest.importorskip("onnxruntime")

CASES = {
    # elem type, numpy dtype, inputs' value range, tolerance relative to the output's scale
    "float64": (TensorProto.DOUBLE, np.float64, (-3.0, 3.0), 1e-6),
    "float16": (TensorProto.FLOAT16, np.float16, (-3.0, 3.0), 1e-3),
    "int8": (TensorProto.INT8, np.int8, (-60, 60), 0),
    "uint8": (TensorProto.UINT8, np.uint8, (0, 120), 0),
}


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
    inside = "float32" if np.dtype(dtype).kind == "f" else "int32"
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


def test_other_dtypes_are_still_refused_by_name():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "u16",
                              [helper.make_tensor_value_info("x", TensorProto.UINT16, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT16, [3])])
    with pytest.raises(UnsupportedOpsError, match="uint16"):
        converter.convert(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))

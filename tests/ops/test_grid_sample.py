"""GridSample where onnxruntime is not the oracle (ONNX's own reference implementation is): bicubic
with border padding, cubic in 3-D, 1-D input; and the runtime's answer to grids holding NaN,
infinities and huge values, and the importer's refusals."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import converter
import converter.reference
from tests.fixtures.harness import assert_close, run_edge


def grid_sample_model(x_shape, grid_shape, opset=20, **attrs):
    node = helper.make_node("GridSample", ["x", "grid"], ["y"], **attrs)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
              helper.make_tensor_value_info("grid", TensorProto.FLOAT, grid_shape)]
    graph = helper.make_graph([node], "grid_sample", inputs, [onnx.ValueInfoProto(name="y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    return onnx.shape_inference.infer_shapes(model)


def check_against_onnx_reference(model, feeds):
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    result = converter.convert(model)
    got = run_edge(result.data, feeds)["y"]
    assert_close(got, want, "runtime vs ONNX reference")
    assert_close(converter.reference.run(result.graph, feeds)["y"], want, "converter.reference vs ONNX reference")


REFERENCE_CASES = {
    "cubic-border-align0": ((2, 3, 5, 6), (2, 4, 7, 2), {"mode": "cubic", "padding_mode": "border"}),
    "cubic-border-align1": ((1, 2, 4, 7), (1, 5, 3, 2),
                            {"mode": "cubic", "padding_mode": "border", "align_corners": 1}),
    "cubic-3d-reflection": ((1, 2, 3, 4, 5), (1, 2, 3, 2, 3), {"mode": "cubic", "padding_mode": "reflection"}),
    "cubic-3d-zeros-align1": ((1, 2, 4, 3, 3), (1, 2, 2, 3, 3), {"mode": "cubic", "align_corners": 1}),
    "linear-1d-border": ((2, 3, 7), (2, 9, 1), {"mode": "linear", "padding_mode": "border"}),
    "nearest-1d-reflection": ((2, 3, 7), (2, 9, 1), {"mode": "nearest", "padding_mode": "reflection"}),
}


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_grid_sample_matches_onnx_reference(name):
    x_shape, grid_shape, attrs = REFERENCE_CASES[name]
    rng = np.random.default_rng(len(name))
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
             "grid": rng.uniform(-1.7, 1.7, grid_shape).astype(np.float32)}
    check_against_onnx_reference(grid_sample_model(x_shape, grid_shape, **attrs), feeds)


@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_grid_sample_nan_infinite_and_huge_coordinates(mode, padding):
    """NaN gives NaN at its position (and infinity too under reflection, which has no mirror image
    of it); infinite and huge coordinates otherwise read zeros or the edge. Nothing is read outside
    x (the sanitizer build runs the C side of this)."""
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4) + 1.0
    grid = np.array([[[[np.nan, 0.0], [0.0, np.inf], [-np.inf, 0.5], [3e38, -3e38], [0.25, -0.5]]]], np.float32)
    model = grid_sample_model(x.shape, grid.shape, mode=mode, padding_mode=padding)
    result = converter.convert(model)
    got = run_edge(result.data, {"x": x, "grid": grid})["y"]
    want = converter.reference.run(result.graph, {"x": x, "grid": grid})["y"]
    assert_close(got, want, "runtime vs converter.reference")
    nan = np.isnan(got[0, 0, 0])
    assert nan[0] and not nan[4]
    assert nan[1:4].all() == (padding == "reflection") and nan[1:4].any() == (padding == "reflection")
    if padding == "zeros":
        assert (got[0, :, 0, 1:4] == 0).all()
    if padding == "border":
        assert (got[0, :, 0, 3] == x[0, :, 0, 3]).all()  # x = +huge: the last column; y = -huge: the first row


def test_grid_sample_refusals_name_the_attribute():
    with pytest.raises(converter.ConversionError, match="padding_mode=wrap"):
        converter.convert(grid_sample_model((1, 1, 3, 3), (1, 2, 2, 2), padding_mode="wrap"))
    with pytest.raises(converter.ConversionError, match="mode=area"):
        converter.convert(grid_sample_model((1, 1, 3, 3), (1, 2, 2, 2), mode="area"))
    with pytest.raises(converter.ConversionError, match="rank 6"):
        converter.convert(grid_sample_model((1, 1, 2, 2, 2, 2), (1, 2, 2, 2, 2, 4)))

"""Cubic Resize where onnxruntime has no kernel to compare with (it resizes the two innermost
dims only): the runtime against converter.reference, whose cubic is checked against onnxruntime
on the layouts it supports (the Resize-cubic-* cases of test_onnx_ops.py)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
import converter.reference
from tests.fixtures.harness import assert_close, run_edge


def resize_model(shape, scales, **attrs) -> onnx.ModelProto:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", **attrs)
    graph = helper.make_graph([node], "cubic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [onnx.ValueInfoProto(name="y")],
                              [numpy_helper.from_array(np.asarray(scales, np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("shape, scales, attrs", [
    ((1, 3, 5, 6), [1, 2, 1.5, 2], {}),                               # channels too: 3 outer dims in NHWC
    ((2, 3, 9), [1, 1, 1.8], {}),                                    # the innermost of three
    ((3, 4, 5), [2, 0.75, 1.6], {"cubic_coeff_a": -0.6}),            # every axis
    ((2, 4, 5), [1.5, 1, 0.6], {"exclude_outside": 1, "coordinate_transformation_mode": "asymmetric"}),
], ids=["channels-too", "innermost-of-3", "all-axes", "outer-and-inner-exclude-asymmetric"])
def test_cubic_matches_the_reference(shape, scales, attrs):
    x = np.random.default_rng(len(shape) * 7 + int(scales[-1] * 10)).standard_normal(shape).astype(np.float32)
    result = converter.convert(resize_model(shape, scales, **attrs))
    runtime = list(run_edge(result.data, {"x": x}).values())[0]
    reference = list(converter.reference.run(result.graph, {"x": x}).values())[0]
    assert_close(runtime, reference, "runtime vs reference")


def test_cubic_options_round_trip_through_the_schema():
    from converter.ops import OPS

    attrs = {"mode": "cubic", "coordinate_mode": "pytorch_half_pixel", "nearest_mode": "round_prefer_floor",
             "scales": (1.0, 2.0), "cubic_coeff_a": -0.5, "exclude_outside": True}
    _, _, options = OPS["Resize"].lower(attrs)
    assert OPS["Resize"].lift(options) == attrs

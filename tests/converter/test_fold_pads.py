"""fold_pads: an explicit Pad before a convolution, depthwise convolution or pooling becomes the
op's own (asymmetric) padding; every converted model is checked against onnxruntime and the
reference executor, on the runtime too, and the Pads that must stay do."""
from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.fixtures.harness import check_model  # noqa: E402

RNG = np.random.default_rng(11)


def model(layers, channels=8, size=17) -> onnx.ModelProto:
    """x -> Conv 3x3 -> then per layer: Pad(pads, value, mode) -> op(**attrs)."""
    inits = [numpy_helper.from_array(RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32) * 0.3, "w0")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["t0"], pads=[1, 1, 1, 1])]
    current = "t0"
    for k, (pads, value, mode, op, attrs) in enumerate(layers):
        inits.append(numpy_helper.from_array(np.array(pads, np.int64), f"p{k}"))
        pad_inputs = [current, f"p{k}"]
        if value is not None:
            inits.append(numpy_helper.from_array(np.array(value, np.float32), f"v{k}"))
            pad_inputs.append(f"v{k}")
        nodes.append(helper.make_node("Pad", pad_inputs, [f"padded{k}"], mode=mode))
        inputs = [f"padded{k}"]
        if op == "Conv":
            groups = attrs.get("group", 1)
            inits.append(numpy_helper.from_array(
                RNG.standard_normal((channels, channels // groups, 3, 3)).astype(np.float32) * 0.3, f"w{k + 1}"))
            inputs.append(f"w{k + 1}")
        nodes.append(helper.make_node(op, inputs, [f"t{k + 1}"], **attrs))
        current = f"t{k + 1}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "pads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(proto)


TF_SAME_STRIDE_2 = [0, 0, 0, 0, 0, 0, 1, 1]   # pad bottom/right only, as TensorFlow's SAME at stride 2
SYMMETRIC = [0, 0, 1, 1, 0, 0, 1, 1]


def convert_and_check(proto):
    feeds = {"x": RNG.standard_normal((1, 3, 17, 17)).astype(np.float32)}
    return check_model(proto, feeds, num_threads=2)


@pytest.mark.parametrize("layers", [
    [(TF_SAME_STRIDE_2, None, "constant", "Conv", {"strides": [2, 2]})],
    [(TF_SAME_STRIDE_2, None, "constant", "Conv", {"strides": [2, 2], "group": 8})],
    [(SYMMETRIC, 0.0, "constant", "Conv", {"group": 8, "pads": [1, 0, 0, 1]})],
    [([0, 0, 2, 0, 0, 0, 0, 3], None, "constant", "Conv", {"dilations": [2, 2]})],
    [(SYMMETRIC, None, "constant", "AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2]})],
    [(TF_SAME_STRIDE_2, -math.inf, "constant", "MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]})],
], ids=["conv-tf-same", "depthwise-tf-same", "depthwise-plus-own-pads", "dilated-asymmetric", "avgpool",
        "maxpool-minus-inf"])
def test_pad_folds_into_the_window_op(layers):
    result = convert_and_check(model(layers)).converted
    assert "Pad" not in result.report.final_ops, result.report.final_ops


@pytest.mark.parametrize("layers", [
    [(SYMMETRIC, 0.0, "constant", "MaxPool", {"kernel_shape": [3, 3]})],          # zeros are not -inf
    [(SYMMETRIC, 0.5, "constant", "Conv", {})],                                   # a non-zero fill
    [(SYMMETRIC, None, "reflect", "Conv", {})],                                   # not a constant fill
    [([1, 0, 0, 0, 0, 0, 0, 0], None, "constant", "Conv", {})],                   # pads the batch axis
    [(SYMMETRIC, None, "constant", "AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})],
    [([0, 0, 3, 3, 0, 0, 3, 3], None, "constant", "AveragePool", {"kernel_shape": [3, 3]})],  # pad >= kernel
], ids=["maxpool-zero-fill", "nonzero-fill", "reflect", "batch-pads", "avgpool-own-pads-not-counted",
        "pool-pad-beyond-kernel"])
def test_pad_stays_where_folding_would_change_values(layers):
    result = convert_and_check(model(layers)).converted
    assert result.report.final_ops.get("Pad") == 1, result.report.final_ops


def test_pad_feeding_two_convolutions_folds_into_both():
    proto = model([(TF_SAME_STRIDE_2, None, "constant", "Conv", {"strides": [2, 2]})])
    graph = proto.graph
    w = numpy_helper.from_array(RNG.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3, "w_other")
    graph.initializer.append(w)
    graph.node.insert(len(graph.node) - 1, helper.make_node("Conv", ["padded0", "w_other"], ["other"], strides=[2, 2]))
    graph.node.insert(len(graph.node) - 1, helper.make_node("Add", ["t1", "other"], ["sum"]))
    graph.node[-1].input[0] = "sum"
    result = convert_and_check(onnx.shape_inference.infer_shapes(proto)).converted
    assert "Pad" not in result.report.final_ops and result.report.final_ops["Conv2D"] == 3

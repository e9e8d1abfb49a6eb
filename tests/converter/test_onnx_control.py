"""If, Loop and Scan written out at import (converter.importers.onnx_control): each model is checked
against onnxruntime on the C runtime and the reference executor, and the refusals name their reason."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers import load_onnx
from tests.fixtures.harness import check_model

pytest.importorskip("onnxruntime")

FLOAT = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "control", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def branch(name, op, operand, out_name):
    """A branch graph computing ``op(x, operand)`` from the outer-scope tensor x (shape [2, 3])."""
    const = helper.make_node("Constant", [], [f"{name}_c"], value=numpy_helper.from_array(operand, f"{name}_v"))
    node = helper.make_node(op, ["x", f"{name}_c"], [out_name])
    shape = list(np.broadcast_shapes((2, 3), operand.shape))
    return helper.make_graph([const, node], name, [], [value(out_name, FLOAT, shape)])


def if_model(condition_initializer=None, else_operand=None):
    then_g = branch("then", "Add", np.full((3,), 10.0, np.float32), "then_out")
    else_g = branch("else", "Mul", np.full((3,), 2.0, np.float32) if else_operand is None else else_operand,
                    "else_out")
    node = helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g)
    inputs = [value("x", FLOAT, [2, 3])]
    initializers = []
    if condition_initializer is None:
        inputs.append(value("cond", TensorProto.BOOL, []))
    else:
        initializers.append(numpy_helper.from_array(np.array(condition_initializer), "cond"))
    return make_model([node], inputs, [value("y", FLOAT, [2, 3])], initializers)


X = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5


def ir_ops(model, **kwargs):
    """The IR ops of the imported model, without the Identity copies the cleanup pass removes."""
    return [node.op for node in load_onnx(model, **kwargs).nodes if node.op != "Identity"]


@pytest.mark.parametrize("taken", [True, False])
def test_if_with_constant_condition_inlines_the_taken_branch(taken):
    model = if_model(condition_initializer=taken)
    check_model(model, {"x": X})
    assert ir_ops(model) == (["Add"] if taken else ["Mul"])


def test_if_on_a_folded_shape_comparison_inlines_one_branch():
    # What torch.onnx exports for a shape check: Shape -> Gather -> Equal -> If.
    then_g = branch("then", "Add", np.full((3,), 1.0, np.float32), "then_out")
    else_g = branch("else", "Sub", np.full((3,), 1.0, np.float32), "else_out")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["width"], axis=0),
        helper.make_node("Equal", ["width", "three"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    initializers = [numpy_helper.from_array(np.array(1, np.int64), "one"),
                    numpy_helper.from_array(np.array(3, np.int64), "three")]
    model = make_model(nodes, [value("x", FLOAT, [2, 3])], [value("y", FLOAT, [2, 3])], initializers)
    check_model(model, {"x": X})
    assert ir_ops(model) == ["Add"]


@pytest.mark.parametrize("condition", [True, False])
def test_if_with_runtime_condition_selects_with_where(condition):
    model = if_model()
    check_model(model, {"x": X, "cond": np.array(condition)})
    assert sorted(ir_ops(model)) == ["Add", "Mul", "Where"]


def test_if_with_runtime_condition_and_unlike_branches_is_refused():
    model = if_model(else_operand=np.full((2, 1, 3), 2.0, np.float32))
    with pytest.raises(ConversionError, match=r"output 0 differs between the branches .*float32\[2, 3\].*"
                                              r"float32\[2, 2, 3\]"):
        load_onnx(model)


def loop_body(extra_nodes=(), cond_out="cond_in"):
    """y_out = y_in + x[i] * scale (scale from the outer scope); the scan output is y_out * 2."""
    nodes = [
        *extra_nodes,
        helper.make_node("Unsqueeze", ["i", "zero_axis"], ["i1"]),
        helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
        helper.make_node("Mul", ["row", "scale"], ["scaled"]),
        helper.make_node("Add", ["y_in", "scaled"], ["y_out"]),
        helper.make_node("Mul", ["y_out", "two"], ["scan_out"]),
        helper.make_node("Identity", [cond_out], ["cond_out"]),
    ]
    initializers = [numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
                    numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    return helper.make_graph(
        nodes, "body",
        [value("i", TensorProto.INT64, []), value("cond_in", TensorProto.BOOL, []), value("y_in", FLOAT, [3])],
        [value("cond_out", TensorProto.BOOL, []), value("y_out", FLOAT, [3]), value("scan_out", FLOAT, [3])],
        initializers)


def loop_model(trip_count, body, trip_count_input=False):
    trip_count_name = "M" if trip_count is not None or trip_count_input else ""
    node = helper.make_node("Loop", [trip_count_name, "cond", "y0"], ["y", "ys"], body=body)
    inputs = [value("x", FLOAT, [6, 3]), value("scale", FLOAT, [3]), value("y0", FLOAT, [3])]
    initializers = [numpy_helper.from_array(np.array(True), "cond")]
    if trip_count_input:
        inputs.append(value("M", TensorProto.INT64, []))
    elif trip_count is not None:
        initializers.append(numpy_helper.from_array(np.array(trip_count, np.int64), "M"))
    return make_model([node], inputs, [value("y", FLOAT, [3]), value("ys", FLOAT, ["n", 3])], initializers)


LOOP_FEEDS = {"x": np.linspace(-1, 1, 18, dtype=np.float32).reshape(6, 3),
              "scale": np.array([1.0, -2.0, 0.5], np.float32), "y0": np.array([0.25, 0.5, -1.0], np.float32)}


def test_loop_with_constant_trip_count_unrolls_with_scan_outputs():
    comparison = check_model(loop_model(4, loop_body()), LOOP_FEEDS)
    assert comparison.onnxruntime["ys"].shape == (4, 3)


def test_loop_whose_condition_turns_false_stops_there():
    # cond_out = i < 2: onnxruntime runs iterations 0, 1, 2 of the 5 allowed.
    extra = [helper.make_node("Less", ["i", "limit"], ["keep"])]
    body = loop_body(extra, cond_out="keep")
    body.initializer.append(numpy_helper.from_array(np.array(2, np.int64), "limit"))
    comparison = check_model(loop_model(5, body), LOOP_FEEDS)
    assert comparison.onnxruntime["ys"].shape == (3, 3)


def test_loop_with_runtime_trip_count_is_refused():
    with pytest.raises(ConversionError, match="trip count 'M' is computed at run time"):
        load_onnx(loop_model(None, loop_body(), trip_count_input=True))


def test_loop_over_the_iteration_bound_is_refused_with_its_count():
    with pytest.raises(UnsupportedOpsError, match="trip count 5000 over 1024"):
        load_onnx(loop_model(5000, loop_body()))


def test_loop_with_an_unsupported_op_in_its_body_is_listed_before_building():
    body = loop_body([helper.make_node("SequenceEmpty", [], ["unused_sequence"])])
    with pytest.raises(UnsupportedOpsError, match="Loop \\(body uses SequenceEmpty\\)"):
        load_onnx(loop_model(3, body))


def test_if_nested_in_a_loop_folds_per_iteration():
    # Even iterations add x[i], odd ones subtract it: the condition folds in each unrolled copy.
    then_g = helper.make_graph([helper.make_node("Add", ["y_in", "row"], ["t"])], "then", [],
                               [value("t", FLOAT, [3])])
    else_g = helper.make_graph([helper.make_node("Sub", ["y_in", "row"], ["e"])], "else", [],
                               [value("e", FLOAT, [3])])
    nodes = [
        helper.make_node("Gather", ["x", "i"], ["row"], axis=0),
        helper.make_node("Mod", ["i", "two"], ["parity"]),
        helper.make_node("Equal", ["parity", "zero"], ["even"]),
        helper.make_node("If", ["even"], ["y_out"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        nodes, "body",
        [value("i", TensorProto.INT64, []), value("cond_in", TensorProto.BOOL, []), value("y_in", FLOAT, [3])],
        [value("cond_out", TensorProto.BOOL, []), value("y_out", FLOAT, [3])],
        [numpy_helper.from_array(np.array(2, np.int64), "two"), numpy_helper.from_array(np.array(0, np.int64), "zero")])
    node = helper.make_node("Loop", ["M", "cond", "y0"], ["y"], body=body)
    model = make_model([node], [value("x", FLOAT, [6, 3]), value("y0", FLOAT, [3])], [value("y", FLOAT, [3])],
                       [numpy_helper.from_array(np.array(5, np.int64), "M"),
                        numpy_helper.from_array(np.array(True), "cond")])
    check_model(model, {"x": LOOP_FEEDS["x"], "y0": LOOP_FEEDS["y0"]})
    assert "Where" not in ir_ops(model)


def scan_model(input_axes, input_directions, output_axes, output_directions):
    """A running sum over x's scan axis and the running product of y's, with per-step outputs."""
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "x_t"], ["sum_out"]),
         helper.make_node("Mul", ["sum_out", "y_t"], ["step"]),
         helper.make_node("Identity", ["sum_out"], ["sum_copy"])],
        "scan_body",
        [value("sum_in", FLOAT, [4]), value("x_t", FLOAT, [4]), value("y_t", FLOAT, [4])],
        [value("sum_out", FLOAT, [4]), value("step", FLOAT, [4]), value("sum_copy", FLOAT, [4])])
    node = helper.make_node("Scan", ["s0", "x", "y"], ["s", "steps", "sums"], body=body, num_scan_inputs=2,
                            scan_input_axes=input_axes, scan_input_directions=input_directions,
                            scan_output_axes=output_axes, scan_output_directions=output_directions)
    x_shape = [5, 4] if input_axes[0] in (0, -2) else [4, 5]
    y_shape = [5, 4] if input_axes[1] in (0, -2) else [4, 5]
    model = make_model([node], [value("s0", FLOAT, [4]), value("x", FLOAT, x_shape), value("y", FLOAT, y_shape)],
                       [value("s", FLOAT, [4]), value("steps", FLOAT, ["a", "b"]), value("sums", FLOAT, ["a", "b"])])
    rng = np.random.default_rng(7)
    feeds = {"s0": rng.standard_normal(4).astype(np.float32),
             "x": rng.standard_normal(x_shape).astype(np.float32),
             "y": rng.standard_normal(y_shape).astype(np.float32)}
    return model, feeds


@pytest.mark.parametrize("input_axes, input_directions, output_axes, output_directions", [
    ([0, 0], [0, 0], [0, 0], [0, 0]),
    ([0, 1], [1, 0], [0, 0], [0, 0]),
    ([1, -2], [0, 1], [1, -1], [1, 0]),
    ([-1, 0], [1, 1], [0, 1], [1, 1]),
])
def test_scan_reads_and_writes_along_its_axes_and_directions(input_axes, input_directions, output_axes,
                                                              output_directions):
    model, feeds = scan_model(input_axes, input_directions, output_axes, output_directions)
    check_model(model, feeds)


def test_scan_inputs_of_different_lengths_are_refused():
    model, _ = scan_model([0, 1], [0, 0], [0, 0], [0, 0])
    model.graph.input[2].type.tensor_type.shape.dim[1].dim_value = 6
    with pytest.raises(ConversionError, match=r"different lengths \[5, 6\]"):
        load_onnx(model)


def test_scan_at_opset_8_is_refused():
    body = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Identity", ["c"], ["d"])],
                             "body", [value("a", FLOAT, [2]), value("b", FLOAT, [2])],
                             [value("c", FLOAT, [2]), value("d", FLOAT, [2])])
    node = helper.make_node("Scan", ["", "s0", "x"], ["s", "ys"], body=body, num_scan_inputs=1)
    model = make_model([node], [value("s0", FLOAT, [1, 2]), value("x", FLOAT, [1, 3, 2])],
                       [value("s", FLOAT, [1, 2]), value("ys", FLOAT, [1, 3, 2])], opset=8)
    with pytest.raises(UnsupportedOpsError, match="opset 8's batch form"):
        load_onnx(model)


def test_writing_out_over_the_node_bound_is_refused(monkeypatch):
    import converter.importers.onnx_control as control

    monkeypatch.setattr(control, "MAX_INLINED_NODES", 30)
    with pytest.raises(ConversionError, match="over 30 nodes"):
        load_onnx(loop_model(6, loop_body()))
    load_onnx(loop_model(4, loop_body()))  # 4 copies of the 6-node body fit


@pytest.fixture(scope="module")
def torch_scripted_export():
    """What torch.onnx exports from a scripted module: an If on a batch-size check and a Loop over the
    batch, both decided by a dimension declared dynamic."""
    torch = pytest.importorskip("torch")
    import io
    import warnings

    class ShapeCheckAndLoop(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] == 2:
                x = x * 2.0
            else:
                x = x - 1.0
            acc = torch.zeros_like(x[0])
            for i in range(x.shape[0]):
                acc = acc + x[i] * float(i)
            return acc

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(ShapeCheckAndLoop()), (torch.randn(2, 4),), buffer, dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("batch", [2, 3])
def test_torch_export_with_if_and_loop_converts_at_each_size(torch_scripted_export, batch):
    model = torch_scripted_export
    assert {"If", "Loop"} <= {node.op_type for node in model.graph.node}
    x = np.linspace(-2, 2, batch * 4, dtype=np.float32).reshape(batch, 4)
    check_model(model, {"x": x}, input_shapes={"x": (batch, 4)})
    assert "Where" not in ir_ops(model, input_shapes={"x": (batch, 4)})


@pytest.mark.parametrize("attribute, bad, message", [
    ("scan_input_directions", [2, 0], r"scan_input_directions = \[2, 0\]: each must be 0 \(forward\) or 1"),
    ("num_scan_inputs", 4, r"num_scan_inputs = 4 for a node with 3 inputs"),
    ("scan_input_axes", [0, 2], r"scan_input_axes\[1\] = 2 is out of range for rank 2"),
])
def test_scan_with_malformed_attributes_is_refused_by_name(attribute, bad, message):
    model, _ = scan_model([0, 0], [0, 0], [0, 0], [0, 0])
    attr = next(a for a in model.graph.node[0].attribute if a.name == attribute)
    attr.CopyFrom(helper.make_attribute(attribute, bad))
    with pytest.raises(ConversionError, match=message):
        load_onnx(model)


def test_loop_with_an_empty_trip_count_tensor_is_refused_by_name():
    model = loop_model(3, loop_body())
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros((0,), np.int64), "M"))
    with pytest.raises(ConversionError, match="trip count 'M' has 0 elements; it must have one"):
        load_onnx(model)

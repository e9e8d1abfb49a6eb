"""Dynamic lengths up to the converted one (converter/passes/length.py, SLICE's ends_from): an ONNX
model whose sequence axis is symbolic, with the patterns exporters fold into constants (a position
table sliced to the length, a mask built from Range, a Reshape target holding the length), is
converted once at its longest length and run by the C runtime at shorter ones after
resize_tensor_input + allocate_tensors, against onnxruntime at each. A longer length, or a
length-dependent constant that is not a leading block, is refused, never answered wrongly."""
from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter

edge = pytest.importorskip("edge")
ort = pytest.importorskip("onnxruntime")

MAX_LENGTH, WIDTH, HEADS = 8, 6, 2
RELATIVE = 1e-5


def _model(reversed_positions: bool = False) -> onnx.ModelProto:
    """x [1, L, WIDTH] -> (x + positions[:L]) masked causally, viewed as [1, L, HEADS, -1] and
    back. ``reversed_positions`` indexes the table with Range(L, 0, -1): a constant that
    depends on L but is not the leading block of its longest value."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((32, WIDTH)).astype(np.float32), "table")
    consts = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
              (("zero", 0), ("one", 1), ("minus_one", -1), ("axis0", [0]), ("axis1", [1]), ("heads", [HEADS]),
               ("rest", [-1]), ("width", [WIDTH]))]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["length"], axis=0),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["length", "axis0"], ["length_1d"]),
        helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch_1d"]),
        (helper.make_node("Range", ["length", "zero", "minus_one"], ["positions"]) if reversed_positions else
         helper.make_node("Range", ["zero", "length", "one"], ["positions"])),
        helper.make_node("Gather", ["table", "positions"], ["position_rows"], axis=0),
        helper.make_node("Unsqueeze", ["position_rows", "axis0"], ["position_embedding"]),
        helper.make_node("Add", ["x", "position_embedding"], ["embedded"]),
        # A causal weight: tril(ones[L, L]) / row count, applied as a matmul over the sequence.
        helper.make_node("Concat", ["length_1d", "length_1d"], ["square"], axis=0),
        helper.make_node("ConstantOfShape", ["square"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Trilu", ["ones"], ["causal"], upper=0),
        helper.make_node("ReduceSum", ["causal", "axis1"], ["counts"], keepdims=1),
        helper.make_node("Div", ["causal", "counts"], ["weights"]),
        helper.make_node("MatMul", ["weights", "embedded"], ["mixed"]),
        helper.make_node("Concat", ["batch_1d", "length_1d", "heads", "rest"], ["split_shape"], axis=0),
        helper.make_node("Reshape", ["mixed", "split_shape"], ["split"]),
        helper.make_node("Relu", ["split"], ["activated"]),
        helper.make_node("Concat", ["batch_1d", "length_1d", "width"], ["joined_shape"], axis=0),
        helper.make_node("Reshape", ["activated", "joined_shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "lengths", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "length", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "length", WIDTH])], [table, *consts])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _run(interpreter, x: np.ndarray) -> np.ndarray:
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_runs_at_every_length_up_to_the_converted_one():
    model = _model()
    result = converter.convert(model, input_shapes={"x": (1, MAX_LENGTH, WIDTH)})
    assert result.report.length_bound and not result.report.length_notes
    interpreter = edge.Interpreter(model_content=result.data)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(1)
    for length in (MAX_LENGTH, 5, 1, 3, MAX_LENGTH):
        x = rng.standard_normal((1, length, WIDTH)).astype(np.float32)
        got, want = _run(interpreter, x), _reference(model, x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=RELATIVE * float(np.abs(want).max()))


def test_a_longer_length_is_refused_with_the_reason():
    result = converter.convert(_model(), input_shapes={"x": (1, MAX_LENGTH, WIDTH)})
    interpreter = edge.Interpreter(model_content=result.data)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [1, MAX_LENGTH + 1, WIDTH])
    with pytest.raises(edge.EdgeError, match=f"more than the {MAX_LENGTH} the model was converted for"):
        interpreter.allocate_tensors()


def test_a_constant_that_is_not_a_leading_block_keeps_the_converted_length():
    """Range(L, 0, -1) gives [L-1, ..., 0]: its rows at a shorter length are not the first rows of
    the longest one, so the converter says so and the runtime refuses another length rather than
    reading the wrong rows."""
    model = _model(reversed_positions=True)
    result = converter.convert(model, input_shapes={"x": (1, MAX_LENGTH, WIDTH)})
    assert any("not the leading block" in note for note in result.report.length_notes), result.report.length_notes
    assert "dynamic dims fixed at the converted size" in str(converter.report.render_plain(result.report))
    interpreter = edge.Interpreter(model_content=result.data)
    x = np.random.default_rng(2).standard_normal((1, MAX_LENGTH, WIDTH)).astype(np.float32)
    np.testing.assert_allclose(_run(interpreter, x), _reference(model, x), rtol=0, atol=1e-5)
    with pytest.raises(edge.EdgeError):
        _run(interpreter, x[:, :5])


@pytest.mark.parametrize("axis, message", [(7, "has fewer dims"), (9, "ends_from|axis")])
def test_a_malformed_ends_from_is_refused(axis, message):
    """The file's SLICE options name an axis the second input lacks (or one past the rank limit):
    the runtime refuses the model with a message, at load or at allocate."""
    data = converter.convert(_model(), input_shapes={"x": (1, MAX_LENGTH, WIDTH)}).data
    # The bound [1, L, WIDTH] position rows: ends_from is [-1, 1, -1] (axis 1 follows the input's).
    vector = struct.pack("<I3q", 3, -1, 1, -1)
    assert data.count(vector) == 1
    bad = data.replace(vector, struct.pack("<I3q", 3, -1, axis, -1))
    with pytest.raises(edge.EdgeError, match=message):
        interpreter = edge.Interpreter(model_content=bad)
        interpreter.allocate_tensors()

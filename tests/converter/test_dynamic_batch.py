"""Dynamic batch end to end: a model whose ONNX batch dim is symbolic is converted once (at batch 1)
and run by the C runtime at other batch sizes after resize_tensor_input + allocate_tensors, against
onnxruntime at the same batch. The writer marks every dim that follows the dynamic input dim -1 in
its shape_signature (converter/writer.py dynamic_axes); RESHAPE resolves those at run time."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
from converter.reader import read_model
from tests.fixtures.models import bert_encoder, mobilenet_v2, resnet18

edge = pytest.importorskip("edge")
ort = pytest.importorskip("onnxruntime")

RELATIVE = 1e-4


def with_symbolic_batch(model: onnx.ModelProto, axis: int = 0, name: str = "batch") -> onnx.ModelProto:
    """The model with ``axis`` of every graph input and output made the symbolic dim ``name``."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name for t in model.graph.initializer}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in inits:
            value.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.checker.check_model(model)
    return model


def feeds(model: onnx.ModelProto, shapes: dict[str, tuple], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    result = {}
    for value in model.graph.input:
        shape = shapes[value.name]
        if value.type.tensor_type.elem_type == TensorProto.INT64:
            lengths = rng.integers(1, shape[1] + 1, shape[0])
            result[value.name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        else:
            result[value.name] = rng.standard_normal(shape).astype(np.float32)
    return result


def run_edge(interp, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    details = {d["name"]: d for d in interp.get_input_details()}
    for name, value in inputs.items():
        interp.resize_tensor_input(details[name]["index"], list(value.shape))
    interp.allocate_tensors()
    for name, value in inputs.items():
        interp.set_tensor(details[name]["index"], value)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def assert_runs_at_batches(model: onnx.ModelProto, batches=(4, 1, 3)) -> bytes:
    data = converter.convert(model).data
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    interp = edge.Interpreter(model_content=data)
    for detail in interp.get_input_details():
        assert detail["shape_signature"][0] == -1, detail
    for detail in interp.get_output_details():
        assert detail["shape_signature"][0] == -1, detail
    declared = {d["name"]: tuple(d["shape"].tolist()) for d in interp.get_input_details()}
    for batch in batches:
        inputs = feeds(model, {n: (batch,) + s[1:] for n, s in declared.items()}, seed=batch)
        expected = session.run(None, inputs)
        got = run_edge(interp, inputs)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=RELATIVE, atol=RELATIVE * float(np.abs(e).max()),
                                       err_msg=f"batch {batch}")
    return data


def test_mobilenet_v2_runs_at_batch_4():
    assert_runs_at_batches(with_symbolic_batch(mobilenet_v2(width=0.35, resolution=32, num_classes=10)))


def test_resnet18_runs_at_batch_4():
    assert_runs_at_batches(with_symbolic_batch(resnet18(resolution=32, num_classes=10, base_width=8)))


def test_bert_encoder_runs_at_batch_4():
    model = with_symbolic_batch(bert_encoder(layers=2, hidden=32, heads=4, batch=1, tokens=8, intermediate=64))
    data = assert_runs_at_batches(model)
    # Every computed tensor carries the batch on axis 0, and only there (constants never do).
    graph = read_model(data)
    for name, ttype in graph.tensors.items():
        if name in graph.constants:
            assert name not in graph.dynamic_dims
        elif ttype.rank >= 2:
            assert graph.dynamic_dims.get(name) == (0,), (name, ttype.shape)


def test_converted_at_batch_2_runs_at_batch_5():
    model = with_symbolic_batch(mobilenet_v2(width=0.35, resolution=32, num_classes=10))
    data = converter.convert(model, input_shapes={"input": (2, 3, 32, 32)}).data
    interp = edge.Interpreter(model_content=data)
    inputs = feeds(model, {"input": (5, 3, 32, 32)}, seed=5)
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, inputs)
    (got,) = run_edge(interp, inputs)
    np.testing.assert_allclose(got, expected[0], rtol=RELATIVE, atol=RELATIVE * float(np.abs(expected[0]).max()))


def model_of(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "dynamic", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_batch_stays_on_its_axis_behind_an_unsqueezed_leading_axis():
    # Unsqueeze(0) of [B, 6] is [1, B, 6]; the [3, 1, 1] constant then broadcasts over the new axis
    # 0. Putting the resized batch on axis 0 instead would not broadcast.
    c = numpy_helper.from_array(np.array([1.0, -2.0, 0.5], np.float32).reshape(3, 1, 1), "c")
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]), helper.make_node("Add", ["u", "c"], ["y"])]
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 6])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "B", 6])], [c, axes])
    data = converter.convert(model).data
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    interp = edge.Interpreter(model_content=data)
    for batch in (4, 2):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
        (got,) = run_edge(interp, {"x": x})
        np.testing.assert_allclose(got, session.run(None, {"x": x})[0], rtol=1e-6)


def test_onnx_minus_one_axis_takes_the_batch():
    # Reshape [B, 4] to [1, -1] then Softmax over the last axis: at batch B the softmax runs over
    # all 4 * B values, as onnxruntime does, not over rows of 4. Converted at batch 2: at batch 1
    # the Reshape is a no-op, which remove_identities drops (a known gap).
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Softmax", ["flat"], ["y"], axis=-1)]
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "N"])], [shape])
    data = converter.convert(model, input_shapes={"x": (2, 4)}).data
    interp = edge.Interpreter(model_content=data)
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    (got,) = run_edge(interp, {"x": x})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    assert got.shape == (1, 12)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_batch_and_sequence_both_dynamic_through_a_reshape():
    # [B, S, 8] -> [B, S, 2, 4] -> ReduceSum over the last axis: two dynamic dims in one RESHAPE.
    shape = numpy_helper.from_array(np.array([0, 0, 2, 4], np.int64), "shape")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["split"]),
             helper.make_node("ReduceSum", ["split", "axes"], ["y"], keepdims=0)]
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "S", 8])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "S", 2])], [shape, axes])
    data = converter.convert(model).data
    graph = read_model(data)
    split = next(n for n in graph.nodes if n.op == "Reshape").outputs[0]
    assert graph.dynamic_dims[split] == (0, 1)
    interp = edge.Interpreter(model_content=data)
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    (got,) = run_edge(interp, {"x": x})
    np.testing.assert_allclose(got, x.reshape(3, 5, 2, 4).sum(-1), rtol=1e-5, atol=1e-6)


def test_fixed_batch_model_still_refuses_a_resize():
    model = mobilenet_v2(width=0.35, resolution=32, num_classes=10)
    interp = edge.Interpreter(model_content=converter.convert(model).data)
    (detail,) = interp.get_input_details()
    assert detail["shape_signature"].tolist() == [1, 3, 32, 32]
    with pytest.raises(Exception, match="signature"):
        interp.resize_tensor_input(detail["index"], [4, 3, 32, 32])


def test_written_signatures_survive_read_and_write():
    model = with_symbolic_batch(bert_encoder(layers=1, hidden=16, heads=2, batch=1, tokens=4, intermediate=32))
    data = converter.convert(model).data
    from converter.writer import write_model
    assert write_model(read_model(data)) == data


def test_expand_follows_the_batch_of_a_model_converted_at_batch_2():
    # Expand [B, 1, 4] by [1, 3, 4]: the written BROADCAST_TO target says batch 2; at batch 5 the
    # dynamic output dim takes the input's size instead of failing to broadcast 5 against 2.
    shape = numpy_helper.from_array(np.array([1, 3, 4], np.int64), "shape")
    nodes = [helper.make_node("Expand", ["x", "shape"], ["wide"]), helper.make_node("Relu", ["wide"], ["y"])]
    model = model_of(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 4])],
                     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3, 4])], [shape])
    data = converter.convert(model, input_shapes={"x": (2, 1, 4)}).data
    assert "BroadcastTo" in read_model(data).op_counts()
    interp = edge.Interpreter(model_content=data)
    x = np.random.default_rng(0).standard_normal((5, 1, 4)).astype(np.float32)
    (got,) = run_edge(interp, {"x": x})
    np.testing.assert_array_equal(got, np.broadcast_to(np.maximum(x, 0), (5, 3, 4)))

"""The Python API on models made by the converter from ONNX, against onnxruntime."""
import numpy as np
import pytest

import edge

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
converter = pytest.importorskip("converter")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def small_cnn(batch="N") -> onnx.ModelProto:
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm, NCHW input with a symbolic batch."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
        "b": rng.standard_normal(8).astype(np.float32),
        "fc_w": rng.standard_normal((5, 8 * 5 * 5)).astype(np.float32) * 0.1,
        "fc_b": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 10, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def onnxruntime_logits(model, image):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": image})[0]


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn()
    return model, converter.convert(model, input_shapes={"image": (2, 3, 10, 10)}).data


def test_converted_model_matches_onnxruntime(cnn):
    model, data = cnn
    image = np.random.default_rng(1).standard_normal((2, 3, 10, 10)).astype(np.float32)
    expected = onnxruntime_logits(model, image)
    for threads in (1, 2):
        with edge.Interpreter(model_content=data, num_threads=threads) as interp:
            (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
            assert inp["name"] == "image" and out["name"] == "logits"
            assert out["shape"].tolist() == [2, 5]
            interp.allocate_tensors()
            interp.set_tensor(inp["index"], image)
            interp.invoke()
            got = interp.get_tensor(out["index"])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_inputs_survive_invoke(cnn):
    """As in TFLite, the arena never reuses an input's bytes: a second invoke without set_tensor
    computes the same result, and the input reads back unchanged."""
    model, data = cnn
    image = np.random.default_rng(2).standard_normal((2, 3, 10, 10)).astype(np.float32)
    expected = onnxruntime_logits(model, image)
    with edge.Interpreter(model_content=data) as interp:
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], image)
        for _ in range(3):
            interp.invoke()
            np.testing.assert_allclose(interp.get_tensor(out["index"]), expected, rtol=1e-4,
                                       atol=1e-4 * np.abs(expected).max())
        np.testing.assert_array_equal(interp.get_tensor(inp["index"]), image)


def test_converted_signature_runner_and_profile(cnn):
    model, data = cnn
    interp = edge.Interpreter(model_content=data, profiling=True)
    assert "infer" in interp.get_signature_list()
    image = np.random.default_rng(2).standard_normal((2, 3, 10, 10)).astype(np.float32)
    outputs = interp.get_signature_runner("infer")(image=image)
    expected = onnxruntime_logits(model, image)
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    entries = interp.profile()
    ops = [e["op"] for e in entries]
    assert "CONV_2D" in ops
    conv = next(e for e in entries if e["op"] == "CONV_2D")
    # 2 * batch * out_h * out_w * out_c * (kh * kw * in_c) multiply-adds
    assert conv["flops"] == 2 * 2 * 10 * 10 * 8 * 27
    assert all(e["runs"] == 1 for e in entries)
    memory = interp.memory_info()
    assert 0 < memory["arena_bytes"] <= memory["naive_bytes"]


def elementwise_model() -> onnx.ModelProto:
    """concat(sigmoid(x * 2 + c), x) along the last axis, with a symbolic batch."""
    c = numpy_helper.from_array(np.linspace(-1, 1, 6).astype(np.float32), "c")
    two = numpy_helper.from_array(np.array(2, np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["scaled"]),
        helper.make_node("Add", ["scaled", "c"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["gate"]),
        helper.make_node("Concat", ["gate", "x"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "elementwise",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])], [c, two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_converted_dynamic_batch_model():
    model = elementwise_model()
    data = converter.convert(model).data
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    interp = edge.Interpreter(model_content=data)
    (x,) = interp.get_input_details()
    assert x["shape_signature"].tolist() == [-1, 6]
    runner = interp.get_signature_runner()
    for batch in (1, 4, 2):
        value = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
        expected = session.run(["y"], {"x": value})[0]
        np.testing.assert_allclose(runner(x=value)["y"], expected, rtol=1e-5, atol=1e-6)
        assert interp.get_output_details()[0]["shape"].tolist() == [batch, 12]

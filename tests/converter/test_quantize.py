"""converter.quantize end to end: int8 / dynamic / fp16 graphs from builder and ONNX models,
their params, their error against float32 (the reference executor on both graphs), the
writer/reader round trip, calibration data handling and the CLI flags."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter import convert
from converter.builder import GraphBuilder
from converter.cli import main
from converter.errors import ConversionError
from converter.passes import optimize
from converter.quantize import ImagePreprocessing, load_calibration, quantize
from converter.ops.int8_reference import SOFTMAX_OUTPUT, dequantize_values
from converter.quantize.report import sqnr_db
from converter.reader import read_model
from converter.reference import run
from converter.writer import write_model

RNG = np.random.default_rng(7)


def conv_net(seed: int = 0, softmax: bool = True, middle: str | None = None):
    """NCHW input [1, 3, 12, 12]: conv+relu, maxpool, depthwise conv+relu6, residual add,
    [middle op], global mean, fc (+ softmax)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 12, 12))
    y = b.Conv2D(x, rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32),
                 rng.normal(0, 0.1, 8).astype(np.float32), pads=(1, 1, 1, 1), layout="NCHW", name="conv1")
    y = b.Relu(y)
    y = b.MaxPool2D(y, kernel=(2, 2), strides=(2, 2), layout="NCHW", name="pool1")
    z = b.Conv2D(y, rng.normal(0, 0.4, (8, 1, 3, 3)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32),
                 pads=(1, 1, 1, 1), groups=8, layout="NCHW", name="dwconv")
    z = b.Relu6(z)
    s = b.Add(y, z, name="residual")
    if middle:
        s = b.op(middle, s, name="middle")
    g = b.ReduceMean(s, axes=(2, 3), keepdims=False, name="gap")
    f = b.FullyConnected(g, rng.normal(0, 0.5, (10, 8)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32),
                         name="fc", outputs=["logits"])
    if softmax:
        f = b.Softmax(f, axis=1, name="softmax")
    b.output(f, name="out")
    graph, _ = optimize(b.build())
    return graph


def calibration_data(count: int = 24, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (count, 3, 12, 12)).astype(np.float32)


def measured_sqnr(reference: np.ndarray, value: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return sqnr_db(float(np.sum(ref ** 2)), float(np.sum((ref - value.astype(np.float64)) ** 2)))


# ---- int8 ----

def test_int8_conv_net_is_close_to_float():
    graph = conv_net(softmax=False)
    data = calibration_data()
    quantized, report = quantize(graph, "int8", calibration=data)
    # every op of this net has an int8 kernel: only the input layout transpose stays float
    assert {f.op for f in report.float_ops} <= set()
    assert report.quantized_ops >= 6
    test = np.random.default_rng(99).normal(0, 1, (8, 3, 12, 12)).astype(np.float32)
    ref = np.concatenate([run(graph, {"x": t[None]})["out"] for t in test])
    got = np.concatenate([run(quantized, {"x": t[None]})["out"] for t in test])
    assert got.dtype == np.float32
    # 8-bit activations give ~40 dB per tensor; five requantized layers in a chain stay above 30 dB
    assert measured_sqnr(ref, got) > 30.0
    # the report's per-layer figures are measured, finite, and the final layer's matches ours
    assert all(math.isfinite(e.sqnr_db) and e.sqnr_db > 25 for e in report.layers)
    assert "fc" in {e.node for e in report.layers}


def test_int8_graph_follows_the_params_contract():
    graph = conv_net()
    quantized, report = quantize(graph, "int8", calibration=calibration_data())
    assert quantized.inputs == graph.inputs and quantized.outputs == graph.outputs
    for name in (*quantized.inputs, *quantized.outputs):
        assert quantized.tensors[name].dtype == "float32" and name not in quantized.quantization
    producers = quantized.producers()
    q = quantized.quantization
    for name, ttype in quantized.tensors.items():
        if ttype.dtype in ("int8", "int32"):
            assert name in q, name
        if ttype.dtype == "int8" and name not in quantized.constants:
            assert len(q[name].scale) == 1 and -128 <= q[name].zero_point[0] <= 127
            low, high = (-128 - q[name].zero_point[0]) * q[name].scale[0], (127 - q[name].zero_point[0]) * q[name].scale[0]
            assert low <= 0.0 <= high
    for node in quantized.nodes:
        if node.op in ("Conv2D", "FullyConnected") and quantized.tensors[node.inputs[0]].dtype == "int8":
            x, w, bias = node.inputs[0], node.inputs[1], node.inputs[2]
            weights = quantized.constants[w]
            assert weights.dtype == np.int8 and weights.min() >= -127
            wq = q[w]
            assert wq.axis == 0 and len(wq.scale) == weights.shape[0] and set(wq.zero_point) == {0}
            assert quantized.constants[bias].dtype == np.int32
            expected = [float(np.float32(np.float32(q[x].scale[0]) * np.float32(s))) for s in wq.scale]
            assert list(q[bias].scale) == expected
        if node.op == "MaxPool2D":
            assert q[node.outputs[0]] == q[node.inputs[0]]
        if node.op == "Softmax":
            assert q[node.outputs[0]] == SOFTMAX_OUTPUT
    assert producers[quantized.outputs[0]].op == "Dequantize"
    assert report.quantize_nodes == 1 and report.dequantize_nodes == 1


@pytest.mark.parametrize("mode", ["int8", "dynamic", "fp16"])
def test_quantized_graph_round_trips_byte_identical(mode):
    graph = conv_net()
    quantized, _ = quantize(graph, mode, calibration=calibration_data(8))
    data = write_model(quantized)
    back = read_model(data)
    assert write_model(back) == data
    assert back.quantization == quantized.quantization
    feed = {"x": calibration_data(1, seed=11)[0][None]}
    np.testing.assert_array_equal(run(back, feed)["out"], run(quantized, feed)["out"])


def test_ops_without_int8_kernel_stay_float_between_quantize_and_dequantize():
    # Floor: no int8 kernel and no lookup-table form (elementwise unaries like Abs have one)
    graph = conv_net(softmax=False, middle="Floor")
    quantized, report = quantize(graph, "int8", calibration=calibration_data(8))
    middle = next(n for n in quantized.nodes if n.op == "Floor")
    producers = quantized.producers()
    assert producers[middle.inputs[0]].op == "Dequantize"
    assert quantized.tensors[middle.outputs[0]].dtype == "float32"
    consumer = next(n for n in quantized.nodes if middle.outputs[0] in n.inputs)
    assert consumer.op == "Quantize"
    assert [(f.node, f.op, f.reason) for f in report.float_ops] == [("middle", "Floor", "no int8 kernel")]
    assert "middle (Floor): no int8 kernel" in str(report)


def test_fused_activation_without_int8_form_keeps_the_op_float():
    graph = conv_net(softmax=False, middle="Sigmoid")        # fused into the residual Add
    add = next(n for n in graph.nodes if n.op == "Add")
    assert add.attrs.get("activation", ("",))[0] == "Sigmoid"
    quantized, report = quantize(graph, "int8", calibration=calibration_data(8))
    assert [(f.op, f.reason) for f in report.float_ops] == [("Add", "fused activation Sigmoid has no int8 form")]
    add = next(n for n in quantized.nodes if n.op == "Add")
    assert all(quantized.tensors[i].dtype == "float32" for i in add.inputs)


def test_keep_float_by_node_or_tensor_name():
    graph = conv_net()
    quantized, report = quantize(graph, "int8", calibration=calibration_data(8), keep_float=["dwconv"])
    conv = next(n for n in quantized.nodes if n.name == "dwconv")
    assert quantized.tensors[conv.inputs[0]].dtype == "float32"
    assert quantized.tensors[conv.inputs[1]].dtype == "float32"
    assert ("dwconv", "Conv2D", "--keep-float") in [(f.node, f.op, f.reason) for f in report.float_ops]
    fc_output = next(n for n in graph.nodes if n.name == "fc").outputs[0]
    quantized, report = quantize(graph, "int8", calibration=calibration_data(8), keep_float=[fc_output])
    assert [f.node for f in report.float_ops] == ["fc"]
    with pytest.raises(ConversionError, match="no_such_layer"):
        quantize(graph, "int8", calibration=calibration_data(8), keep_float=["no_such_layer"])


def test_calibration_methods_clip_outliers():
    graph = conv_net(softmax=False)
    data = calibration_data(16)
    data[0, 0, 0, 0] = 60.0                                    # one outlier pixel
    ranges = {}
    for method in ("minmax", "percentile", "mse"):
        # 16 * 3 * 12 * 12 = 6912 input values: the 99.9th percentile leaves the outlier out
        quantized, _ = quantize(graph, "int8", calibration=data, method=method, percentile=99.9)
        quantize_node = next(n for n in quantized.nodes if n.op == "Quantize")
        ranges[method] = quantized.quantization[quantize_node.outputs[0]].scale[0]
    assert ranges["minmax"] >= 60.0 / 255
    assert ranges["percentile"] < ranges["minmax"] / 4
    assert ranges["mse"] < ranges["minmax"]


def test_int8_needs_calibration():
    with pytest.raises(ConversionError, match="calibration"):
        quantize(conv_net(), "int8")
    with pytest.raises(ConversionError, match="mode"):
        quantize(conv_net(), "int4")
    with pytest.raises(ConversionError, match="method"):
        quantize(conv_net(), "int8", calibration=calibration_data(2), method="kl")


# ---- dynamic ----

def test_dynamic_fully_connected_within_derived_bound():
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    x = b.input("x", (6, 32))
    w = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    bias = rng.normal(0, 0.1, 16).astype(np.float32)
    b.output(b.FullyConnected(x, w, bias, name="fc"), name="y")
    graph = b.build()
    quantized, report = quantize(graph, "dynamic")
    wq_name = next(n for n in quantized.nodes if n.op == "FullyConnected").inputs[1]
    assert quantized.tensors[wq_name].dtype == "int8" and quantized.tensors["x"].dtype == "float32"
    s_w = np.asarray(quantized.quantization[wq_name].scale)
    feed = rng.normal(0, 2, (6, 32)).astype(np.float32)
    got = run(quantized, {"x": feed})["y"]
    exact = feed.astype(np.float64) @ w.T.astype(np.float64) + bias
    # |x w - x^ w^| <= sum |x - x^| |w| + |x^| |w - w^|, with |x - x^| <= s_row/2, |w - w^| <= s_w/2,
    # plus float32 rounding of the result
    s_row = np.abs(feed).max(axis=1, keepdims=True) / 127
    x_hat = np.abs(feed) + s_row / 2
    bound = (s_row / 2) * np.abs(w).sum(axis=1)[None, :] + x_hat.sum(axis=1, keepdims=True) * s_w[None, :] / 2
    bound = bound + 1e-5 * (np.abs(exact) + 1)
    assert np.all(np.abs(got - exact) <= bound)
    assert report.quantized == [("y", "FullyConnected")]     # the builder named the node after its output


def test_dynamic_leaves_activations_float_and_skips_variables():
    graph = conv_net()
    quantized, report = quantize(graph, "dynamic", calibration=calibration_data(4))
    for node in quantized.nodes:
        if node.op in ("Conv2D", "FullyConnected"):
            assert quantized.tensors[node.inputs[0]].dtype == "float32"
            assert quantized.tensors[node.inputs[1]].dtype == "int8"
            assert quantized.tensors[node.inputs[2]].dtype == "float32"
            assert quantized.tensors[node.outputs[0]].dtype == "float32"
    assert all(e.sqnr_db > 30 for e in report.layers)


def test_int8_bias_of_a_dead_channel_fits_the_accumulator():
    # A unit whose weights weight decay drove to ~0 but whose bias is not: with s_w = max|w|/127 its
    # int32 bias would overflow; the weight scale is raised until the bias fits.
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.2, (8, 16)).astype(np.float32)
    w[3] = 1e-9
    bias = np.full(8, 0.5, np.float32)
    b = GraphBuilder()
    x = b.input("x", (4, 16))
    b.output(b.FullyConnected(x, w, bias, name="fc"), name="y")
    graph = b.build()
    data = rng.uniform(0, 1, (32, 4, 16)).astype(np.float32)
    quantized, _ = quantize(graph, "int8", calibration=data)
    biases = [quantized.constants[n] for n in quantized.constants if quantized.tensors[n].dtype == "int32"]
    assert biases and all(np.abs(q.astype(np.int64)).max() <= 2 ** 30 for q in biases)
    feed = data[0]
    ref, got = run(graph, {"x": feed})["y"], run(quantized, {"x": feed})["y"]
    assert measured_sqnr(ref, got) > 30
    np.testing.assert_allclose(got[:, 3], 0.5, atol=0.02)


# ---- fp16 ----

def test_fp16_halves_the_file_and_stays_close():
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.input("x", (2, 256))
    w1 = rng.normal(0, 0.1, (256, 256)).astype(np.float32)
    w2 = rng.normal(0, 0.1, (64, 256)).astype(np.float32)
    h = b.FullyConnected(x, w1, np.zeros(256, np.float32), activation=("Relu", 0.0, 0.0), name="fc1")
    b.output(b.FullyConnected(h, w2, name="fc2"), name="y")
    graph = b.build()
    quantized, report = quantize(graph, "fp16")
    ratio = len(write_model(quantized)) / len(write_model(graph))
    assert 0.45 < ratio <= 0.52
    assert report.dequantize_nodes == 3          # w1, its 256-element bias, w2
    feed = rng.normal(0, 1, (2, 256)).astype(np.float32)
    ref = run(graph, {"x": feed})["y"]
    got = run(quantized, {"x": feed})["y"]
    # float16 keeps 11 significant bits: each weight moves by at most 2**-11 of itself
    h_ref = np.maximum(feed @ w1.T, 0)
    bound = (np.abs(h_ref) @ np.abs(w2).T + np.abs(feed) @ np.abs(w1).T @ np.abs(w2).T) * 2.0 ** -11 * 1.01 + 1e-5
    assert np.all(np.abs(got - ref) <= bound)


# ---- calibration data ----

def test_calibration_from_npy_npz_and_arrays(tmp_path):
    graph = conv_net()
    data = calibration_data(5)
    np.save(tmp_path / "data.npy", data)
    np.savez(tmp_path / "data.npz", x=data)
    for source in (tmp_path / "data.npy", tmp_path / "data.npz", data, {"x": data}, data[:, None]):
        feeds = load_calibration(source, graph)
        assert len(feeds) == 5 and feeds[2]["x"].shape == (1, 3, 12, 12)
        np.testing.assert_array_equal(feeds[4]["x"][0], data[4])


@pytest.mark.parametrize("bad,message", [
    ("wrong_shape.npy", r"shape \(5, 12, 12\).*\[N, 3, 12, 12\]"),
    ("missing_key.npz", r"no array for input\(s\) \['x'\]"),
    ("empty_folder", r"holds no images"),
    ("absent.npy", r"no such file"),
    ("zero.npy", r"holds no samples"),
])
def test_bad_calibration_data_names_the_problem(tmp_path, bad, message):
    graph = conv_net()
    np.save(tmp_path / "wrong_shape.npy", np.zeros((5, 12, 12), np.float32))
    np.savez(tmp_path / "missing_key.npz", input=calibration_data(2))
    np.save(tmp_path / "zero.npy", np.zeros((0, 3, 12, 12), np.float32))
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(ConversionError, match=message) as info:
        quantize(graph, "int8", calibration=str(tmp_path / bad))
    assert bad in str(info.value)


def test_calibration_from_a_folder_of_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)]
    for k, p in enumerate(pixels):
        Image.fromarray(p).save(tmp_path / f"img{k}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    prep = ImagePreprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), channel_order="BGR")
    feeds = load_calibration(str(tmp_path), conv_net(), prep)
    assert len(feeds) == 3
    expected = (pixels[1][..., ::-1].astype(np.float32) / 255 - np.float32([0.5, 0.4, 0.3])) / np.float32([0.2, 0.25, 0.3])
    np.testing.assert_allclose(feeds[1]["x"][0], expected.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)
    quantized, report = quantize(conv_net(), "int8", calibration=str(tmp_path), preprocessing=prep)
    assert report.calibration_samples == 3


# ---- CLI and convert() ----

def onnx_classifier(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 6).astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (6, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["output"], name="fc")]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_cli_convert_int8_with_calibration(tmp_path, capsys):
    source, out = tmp_path / "m.onnx", tmp_path / "m.edge"
    onnx.save(onnx_classifier(), source)
    data = RNG.normal(0, 1, (10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "data.npy", data)
    code = main(["convert", str(source), "-o", str(out), "--quantize", "int8",
                 "--calibration", str(tmp_path / "data.npy"), "--calibration-method", "percentile"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "full int8" in printed.out and "SQNR" in printed.out
    graph = read_model(out.read_bytes())
    assert "Quantize" in graph.op_counts() and "Dequantize" in graph.op_counts()
    import onnxruntime as ort
    session = ort.InferenceSession(onnx_classifier().SerializeToString(), providers=["CPUExecutionProvider"])
    feed = data[:1]
    expected = session.run(None, {"input": feed})[0]
    assert measured_sqnr(expected, run(graph, {"input": feed})["output"]) > 25.0


def test_cli_fp16_and_dynamic_need_no_calibration(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(onnx_classifier(), source)
    for mode in ("fp16", "dynamic"):
        assert main(["convert", str(source), "-o", str(tmp_path / f"{mode}.edge"), "--quantize", mode]) == 0
        assert read_model((tmp_path / f"{mode}.edge").read_bytes()).op_counts()


def test_cli_bad_calibration_is_one_clear_error(tmp_path, capsys):
    source, out = tmp_path / "m.onnx", tmp_path / "m.edge"
    onnx.save(onnx_classifier(), source)
    np.save(tmp_path / "bad.npy", np.zeros((4, 8, 8, 3), np.float32))
    code = main(["convert", str(source), "-o", str(out), "--quantize", "int8", "--calibration", str(tmp_path / "bad.npy")])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert "bad.npy" in err and "(4, 8, 8, 3)" in err and "Traceback" not in err
    code = main(["convert", str(source), "-o", str(out), "--quantize", "int8"])
    assert code == 2 and "calibration" in capsys.readouterr().err
    code = main(["convert", str(source), "-o", str(out), "--keep-float", "conv"])
    assert code == 2 and "--quantize" in capsys.readouterr().err


def test_convert_api_carries_the_quantization_report(tmp_path):
    data = RNG.normal(0, 1, (6, 3, 8, 8)).astype(np.float32)
    result = convert(onnx_classifier(), tmp_path / "m.edge", quantize="int8", calibration=data,
                     calibration_method="mse")
    assert result.report.quantization is not None and result.report.quantization.mode == "int8"
    assert "SQNR" in str(result.report) and "worst" in str(result.report)
    assert read_model((tmp_path / "m.edge").read_bytes()).quantization == result.graph.quantization
    layer = result.report.quantization.layers[-1]
    assert layer.sqnr_db > 20


def test_sqnr_report_measures_what_it_says():
    graph = conv_net(softmax=False)
    data = calibration_data(6)
    quantized, report = quantize(graph, "int8", calibration=data, sqnr_batches=6)
    fc = next(e for e in report.layers if e.node == "fc")
    fc_float = next(n for n in graph.nodes if n.name == "fc").outputs[0]
    twin = next(n for n in quantized.nodes if n.name == "fc").outputs[0]
    signal = noise = 0.0
    for sample in data:
        ref = run(graph, {"x": sample[None]}, outputs=[fc_float])[fc_float].astype(np.float64)
        q = run(quantized, {"x": sample[None]}, outputs=[twin])[twin]
        value = dequantize_values(q, quantized.quantization[twin]).astype(np.float64)
        signal += float(np.sum(ref ** 2))
        noise += float(np.sum((ref - value) ** 2))
    assert fc.sqnr_db == pytest.approx(10 * math.log10(signal / noise), rel=1e-9)


def test_matmul_attention_and_data_movement_in_int8():
    """BatchMatMul with a constant b (per-column weights) and with two activations, softmax,
    concat, and the byte-moving ops: all int8, params passed through unchanged."""
    rng = np.random.default_rng(4)
    b = GraphBuilder()
    x = b.input("x", (1, 4, 8))
    q = b.BatchMatMul(x, rng.normal(0, 0.4, (8, 8)).astype(np.float32), name="q_proj")
    k = b.BatchMatMul(x, rng.normal(0, 0.4, (8, 8)).astype(np.float32), name="k_proj")
    scores = b.BatchMatMul(q, k, transpose_b=True, name="scores")
    attention = b.Softmax(scores, axis=2, name="attention")
    mixed = b.BatchMatMul(attention, x, name="mix")
    both = b.Concat(mixed, q, axis=2, name="concat")
    moved = b.Transpose(b.Reshape(both, shape=(1, 4, 4, 4), name="reshape"), perm=(0, 2, 1, 3), name="transpose")
    left, right = b.Split(moved, axis=3, sizes=(2, 2), name="split")
    sliced = b.Slice(left, starts=(0, 0, 1, 0), ends=(1, 4, 4, 2), steps=(1, 1, 1, 1), name="slice")
    padded = b.Pad(sliced, mode="constant", pads=(0, 0, 1, 0, 0, 0, 0, 0), value=0.0, name="pad")
    gathered = b.Gather(right, np.array([2, 0, 3, 1], np.int64), axis=1, name="gather")
    b.output(b.Sub(padded, gathered, name="sub"), name="y")
    graph = b.build()
    data = rng.normal(0, 1, (16, 1, 4, 8)).astype(np.float32)
    quantized, report = quantize(graph, "int8", calibration=data)
    assert report.float_ops == []
    ops = {n.op: n for n in quantized.nodes}
    for op in ("Reshape", "Transpose", "Split", "Slice", "Pad", "Gather"):
        node = ops[op]
        assert quantized.tensors[node.outputs[0]].dtype == "int8", op
        assert quantized.quantization[node.outputs[0]] == quantized.quantization[node.inputs[0]], op
    projection = next(n for n in quantized.nodes if n.name == "q_proj")
    weights = quantized.quantization[projection.inputs[1]]
    assert len(weights.scale) == 8 and weights.axis == 1
    test = rng.normal(0, 1, (4, 1, 4, 8)).astype(np.float32)
    ref = np.concatenate([run(graph, {"x": t})["y"] for t in test])
    got = np.concatenate([run(quantized, {"x": t})["y"] for t in test])
    assert measured_sqnr(ref, got) > 25.0


def test_channels_sharing_a_zero_point_store_it_once():
    from converter.edgefb.Model import Model

    graph = conv_net()
    quantized, _ = quantize(graph, "int8", calibration=calibration_data(4))
    data = write_model(quantized)
    model = Model.GetRootAs(data, 0)
    tensors = model.Graphs(0)
    per_channel = [tensors.Tensors(i) for i in range(tensors.TensorsLength())
                   if tensors.Tensors(i).Quantization() and tensors.Tensors(i).Quantization().ScaleLength() > 1]
    assert per_channel and all(t.Quantization().ZeroPointLength() == 1 for t in per_channel)
    back = read_model(data)
    for name, params in quantized.quantization.items():
        assert back.quantization[name] == params

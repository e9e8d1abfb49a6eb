"""The convert/inspect subcommands through converter.cli.main, on small ONNX models."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter import convert, reference
from converter.cli import main
from converter.reader import read_model

RNG = np.random.default_rng(5)


def small_conv_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    scale = numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "scale")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    mean = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mean")
    var = numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["output"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4])],
        [w, scale, bias, mean, var])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def unsupported_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Einsum", ["a", "a"], ["b"], equation="ij,jj->ij", name="einsum_1"),
        helper.make_node("Unique", ["b"], ["c"], name="unique_1"),
        helper.make_node("Einsum", ["b", "b"], ["y"], equation="ij,jj->ij", name="einsum_2"),
    ]
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_convert_writes_a_model_and_reports(tmp_path, capsys):
    source = tmp_path / "small.onnx"
    onnx.save(small_conv_model(), source)
    out = tmp_path / "small.edge"
    code = main(["convert", str(source), "-o", str(out), "--input-shape", "input=2,3,8,8"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert out.exists()
    assert "BatchNorm" in printed and "Conv2D" in printed and "fused" in printed
    graph = read_model(out.read_bytes())
    assert graph.tensors["input"].shape == (2, 3, 8, 8)
    assert "BatchNorm" not in graph.op_counts() and "Relu" not in graph.op_counts()
    # The file computes what the ONNX model computes (onnxruntime as the oracle).
    import onnxruntime as ort
    feed = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(small_conv_model().SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": feed})[0]
    np.testing.assert_allclose(reference.run(graph, {"input": feed})["output"], expected, rtol=1e-5, atol=1e-5)


def test_convert_without_optimization_still_writes(tmp_path):
    source = tmp_path / "small.onnx"
    onnx.save(small_conv_model(), source)
    out = tmp_path / "plain.edge"
    assert main(["convert", str(source), "-o", str(out), "--no-optimize"]) == 0
    counts = read_model(out.read_bytes()).op_counts()
    assert counts.get("Relu") == 1 and counts.get("Transpose", 0) >= 2


def test_unsupported_ops_are_all_listed_and_nothing_is_written(tmp_path, capsys):
    source = tmp_path / "bad.onnx"
    onnx.save(unsupported_model(), source)
    out = tmp_path / "bad.edge"
    code = main(["convert", str(source), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert not out.exists()
    assert "Einsum" in captured.err and "Unique" in captured.err and "x2" in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_inspect_prints_the_model(tmp_path, capsys):
    path = tmp_path / "small.edge"
    convert(small_conv_model(), path)
    assert main(["inspect", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "schema v1" in printed
    assert "Conv2D+Relu" in printed and "Transpose" in printed
    assert "infer" in printed and "signatures" in printed
    assert "1x3x8x8" in printed


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x10\x00\x00\x00EDG1" + b"\xff" * 40])
def test_inspect_rejects_bad_files_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "bad.edge"
    path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err


def test_inspect_missing_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.edge")]) == 2
    assert "missing.edge" in capsys.readouterr().err


def test_input_shape_argument_is_validated(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "m.onnx", "--input-shape", "input=1,a"])
    assert exit_info.value.code == 2

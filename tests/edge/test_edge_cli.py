"""`edge run`, `edge bench`, `edge profile` through edge.cli.main and, for the no-traceback and
lazy-import promises, through a real subprocess."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edge.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python(code: str, *args, cwd=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


@pytest.fixture
def two_inputs_path(tmp_path, two_inputs_model):
    path = tmp_path / "two.edge"
    path.write_bytes(two_inputs_model)
    return path


def test_run_writes_outputs(tmp_path, add_relu_path, add_relu_model, capsys):
    x = np.array([[0.5, -1.0, 2.0, -3.0]], np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(add_relu_path), "--input", str(tmp_path / "x.npy"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "y: float32[1, 4]" in printed
    with np.load(out) as outputs:
        np.testing.assert_allclose(outputs["y"], np.maximum(x + add_relu_model[1], 0), atol=1e-6)


def test_run_converts_float64_and_resizes_batch(tmp_path, add_relu_path, add_relu_model):
    x = np.random.default_rng(0).standard_normal((3, 4))  # float64, batch 3
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(add_relu_path), "--input", f"x={tmp_path / 'x.npy'}", "--output", str(out),
                 "--threads", "2"]) == 0
    with np.load(out) as outputs:
        np.testing.assert_allclose(outputs["y"], np.maximum(x.astype(np.float32) + add_relu_model[1], 0), atol=1e-6)


def test_run_named_and_npz_inputs(tmp_path, two_inputs_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 2, np.float32)
    np.save(tmp_path / "b.npy", b)
    np.savez(tmp_path / "rest.npz", a=a, codes=np.zeros((2, 3), np.int8))
    out = tmp_path / "out.npz"
    assert main(["run", str(two_inputs_path), "--input", f"b={tmp_path / 'b.npy'}",
                 "--input", str(tmp_path / "rest.npz"), "--output", str(out)]) == 0
    with np.load(out) as outputs:
        np.testing.assert_allclose(outputs["sum"], a + b)
        np.testing.assert_allclose(outputs["neg"], -(a * b))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_run_missing_input(tmp_path, two_inputs_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((2, 3), np.float32))
    assert main(["run", str(two_inputs_path), "--input", f"a={tmp_path / 'a.npy'}"]) == 2
    assert "no --input for ['b', 'codes']" in one_error_line(capsys)


def test_run_unknown_input_name(tmp_path, add_relu_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((1, 4), np.float32))
    assert main(["run", str(add_relu_path), "--input", f"z={tmp_path / 'a.npy'}"]) == 2
    assert "no input 'z'" in one_error_line(capsys)


def test_run_wrong_kind_of_dtype(tmp_path, add_relu_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int32))
    assert main(["run", str(add_relu_path), "--input", str(tmp_path / "x.npy")]) == 2
    assert "InvalidArgumentError" in one_error_line(capsys)


def test_run_bad_model(tmp_path, capsys):
    bad = tmp_path / "bad.edge"
    bad.write_bytes(os.urandom(300))
    assert main(["run", str(bad)]) == 2
    assert "InvalidModelError" in one_error_line(capsys)


def test_run_missing_files(tmp_path, add_relu_path, capsys):
    assert main(["run", str(tmp_path / "none.edge")]) == 2
    assert "none.edge" in one_error_line(capsys)
    assert main(["run", str(add_relu_path), "--input", str(tmp_path / "none.npy")]) == 2
    assert "none.npy" in one_error_line(capsys)


@pytest.mark.parametrize("argv", [[], ["run"], ["bench", "m.edge", "--runs", "0"], ["bench", "m.edge", "--threads", "x"],
                                  ["frobnicate"]])
def test_bad_arguments(argv, capsys):
    assert main(argv) == 2
    one_error_line(capsys)


def test_bench_reports_latency_and_memory(tmp_path, add_relu_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", str(add_relu_path), "--threads", "2", "--warmup", "2", "--runs", "7",
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "median" in printed and "p90" in printed and "arena" in printed
    figures = json.loads(report.read_text())
    assert figures["runs"] == 7 and figures["threads"] == 2
    assert 0 < figures["min_ms"] <= figures["median_ms"] <= figures["p90_ms"] <= figures["max_ms"]
    assert figures["runtime_peak_bytes"] == figures["arena_bytes"] + figures["persistent_bytes"]
    assert 0 < figures["arena_bytes"] <= figures["naive_bytes"]
    assert figures["peak_rss_growth_bytes"] >= 0


def test_profile_table(add_relu_path, capsys):
    assert main(["profile", str(add_relu_path), "--runs", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert sorted(row[1] for row in rows) == ["BINARY", "UNARY"]
    assert [row[3] for row in rows] == ["cpu", "cpu"]
    times = [float(row[4]) for row in rows]
    assert times == sorted(times, reverse=True)
    shares = [float(row[5].rstrip("%")) for row in rows]
    assert abs(sum(shares) - 100) < 0.5 or sum(times) == 0


def test_profile_chart(tmp_path, add_relu_path, capsys):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "ops.png"
    assert main(["profile", str(add_relu_path), "--runs", "2", "--chart", str(chart)]) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profile_chart_without_matplotlib(tmp_path, add_relu_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    chart = tmp_path / "ops.png"
    assert main(["profile", str(add_relu_path), "--runs", "1", "--chart", str(chart)]) == 0
    assert "matplotlib is not installed" in capsys.readouterr().err
    assert not chart.exists()


def test_device_install_runs_without_host_packages(tmp_path, add_relu_path):
    """`edge run` must not import onnx, flatbuffers or the converter."""
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    code = (
        "import sys\n"
        "for blocked in ('onnx', 'flatbuffers', 'rich', 'onnxruntime', 'matplotlib'):\n"
        "    sys.modules[blocked] = None\n"
        "from edge.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "assert not any(name == 'converter' or name.startswith('converter.') for name in sys.modules), 'converter'\n"
        "sys.exit(status)\n"
    )
    result = python(code, "run", add_relu_path, "--input", tmp_path / "x.npy")
    assert result.returncode == 0, result.stderr
    assert "y: float32[1, 4]" in result.stdout


def test_subprocess_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.edge"
    bad.write_bytes(b"\x00" * 100)
    result = python("import sys; from edge.cli import main; sys.exit(main(sys.argv[1:]))", "bench", bad)
    assert result.returncode == 2
    assert result.stderr.startswith("edge: error: InvalidModelError:") and result.stderr.count("\n") == 1


def test_lazy_commands_explain_a_missing_converter(capsys):
    code = ("import sys\nsys.modules['converter.cli'] = None\nfrom edge.cli import main\n"
            "sys.exit(main(['convert', 'model.onnx']))\n")
    result = python(code)
    assert result.returncode == 2
    assert "pip install 'edgesplit[convert]'" in result.stderr and "Traceback" not in result.stderr


def test_convert_then_run_then_inspect(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("converter.cli")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    model = tmp_path / "m.edge"
    assert main(["convert", str(tmp_path / "m.onnx"), "-o", str(model)]) == 0
    assert main(["inspect", str(model)]) == 0
    a = np.arange(6, dtype=np.float32).reshape(2, 3) - 3
    b = np.full((2, 3), 0.5, np.float32)
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    assert main(["run", str(model), "--input", str(tmp_path / "ab.npz"), "--output", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as outputs:
        np.testing.assert_allclose(outputs["y"], np.maximum(a + b, 0))

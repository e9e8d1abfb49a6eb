"""The quantization scripts (benchmarks/quant_accuracy.py, benchmarks/bench_quant.py) on tiny
settings: they run end to end, write the documented JSON and Markdown, and the figures they hold are
consistent. Timings and accuracies are not judged here (the benchmarks state them); what must hold
for any build is checked: both scripts exit 0, every row has its figure (a row that failed fails the
test), our float32 classifier agrees with onnxruntime's on every test image, and our int8 outputs
are within bench_quant's bound of float32."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(module: str, out: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", module, *args, "--out", str(out), "--name", "smoke"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_quant_accuracy_quick(tmp_path):
    done = _run("benchmarks.quant_accuracy", tmp_path, "--quick")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["schema"] == "edgesplit.quant_accuracy/1" and report["quick"]
    rows = report["digits"]["rows"]
    by = {(r["quantized_by"], r["mode"]): r for r in rows}
    for key in [("ours", m) for m in ("fp32", "fp16", "dynamic", "int8")] + \
               [("onnxruntime", m) for m in ("fp32", "dynamic", "int8")]:
        assert key in by, key
        assert "accuracy" in by[key], by[key]
    assert by["ours", "fp32"]["accuracy"] == by["onnxruntime", "fp32"]["accuracy"]
    assert by["ours", "fp32"]["accuracy"] > 80.0
    for row in rows:
        if "accuracy" in row:
            assert 0.0 <= row["accuracy"] <= 100.0 and row["executor"]
    for row in report["bert"]["rows"]:
        assert "error" not in row, row
        assert -1.0 <= row["cosine_min"] <= row["cosine_mean"] <= 1.0 + 1e-9
    assert "| ours | int8 |" in (tmp_path / "smoke.md").read_text()


def test_bench_quant_small(tmp_path):
    done = _run("benchmarks.bench_quant", tmp_path, "--small", "--models", "mobilenet_v2", "--threads", "1",
                "--runs", "2", "--warmup", "1", "--rounds", "1", "--no-build")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["schema"] == "edgesplit.bench_quant/1"
    info = report["models"]["mobilenet_v2"]
    assert info["fp32_bytes"] > 0 and info["onnx_int8_bytes"] > 0
    assert not info["errors"], info["errors"]
    assert info["fp16_size_ratio"] == pytest.approx(info["fp16_bytes"] / info["fp32_bytes"])
    subjects = {m["subject"]: m for m in report["measurements"]}
    assert set(subjects) == {"edge fp32", "edge int8", "onnxruntime fp32", "onnxruntime int8"}
    for measured in subjects.values():
        assert "error" not in measured, measured["error"]
        assert measured["runs"] == 2 and measured["median_ms"] > 0
    row = report["rows"][0]
    assert not row["errors"], row["errors"]
    assert row["int8_over_fp32"] == pytest.approx(row["edge_int8_ms"] / row["edge_fp32_ms"])
    from benchmarks.bench_quant import INT8_PEER_FACTOR, INT8_SLACK
    assert 0 <= row["int8_error"] <= INT8_PEER_FACTOR * row["ort_int8_error"] + INT8_SLACK

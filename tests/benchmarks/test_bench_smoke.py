"""The model benchmark's harness (benchmarks/bench_models.py) on one tiny network: it runs end to
end in subprocesses, and its JSON has the figures the README and the closing notes read. Timings
are not checked, only that they are there and consistent; the outputs of both runtimes must agree."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_benchmark(out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks.bench_models", "--small", "--models", "lstm_lm", "--threads", "1,2",
               "--runs", "2", "--warmup", "1", "--no-build", "--no-roofline", "--out", str(out), "--name", "smoke",
               *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_bench_models_writes_the_documented_json(tmp_path):
    has_matplotlib = importlib.util.find_spec("matplotlib") is not None
    done = run_benchmark(tmp_path, *([] if has_matplotlib else ["--no-chart"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lstm_lm" in done.stdout

    report = json.loads((tmp_path / "smoke.json").read_text())
    assert report["schema"] == "edgesplit.bench_models/1"
    assert report["config"]["runs"] == 2 and report["config"]["threads"] == [1, 2]
    machine = report["machine"]
    for key in ("date", "cpu_model", "cpu_count", "python", "onnxruntime", "edge_runtime", "edge_isa", "edge_library"):
        assert machine[key], key
    assert report["models"]["lstm_lm"]["edge_bytes"] > 0

    measurements = report["measurements"]
    assert sorted((m["runtime"], m["threads"]) for m in measurements) == [
        ("edge", 1), ("edge", 2), ("onnxruntime", 1), ("onnxruntime", 2)]
    for m in measurements:
        assert "error" not in m, m
        assert len(m["times_ms"]) == 2 and all(t > 0 for t in m["times_ms"])
        assert m["median_ms"] == pytest.approx(float(np.median(m["times_ms"])))
        assert min(m["times_ms"]) <= m["p90_ms"] <= max(m["times_ms"])
        assert m["peak_memory_bytes"] >= 0 and m["rss_peak_bytes"] >= m["rss_baseline_bytes"] > 0
        if m["runtime"] == "edge":
            assert m["isa"] == machine["edge_isa"]
            assert m["arena_bytes"] > 0 and m["runtime_bytes"] == m["arena_bytes"] + m["persistent_bytes"]
            assert m["model_flops"] > 0

    ratios = report["ratios"]
    assert [(r["model"], r["threads"]) for r in ratios] == [("lstm_lm", 1), ("lstm_lm", 2)]
    by_key = {(m["runtime"], m["threads"]): m for m in measurements}
    for r in ratios:
        edge, peer = by_key["edge", r["threads"]], by_key["onnxruntime", r["threads"]]
        assert r["error"] is None
        assert r["median_ratio"] == pytest.approx(edge["median_ms"] / peer["median_ms"])
        assert r["p90_ratio"] == pytest.approx(edge["p90_ms"] / peer["p90_ms"])
        # Both runtimes saw the same inputs: a wrong kernel shows here, not only in the unit tests.
        assert r["output_max_rel_diff"] < 1e-4
    if has_matplotlib:
        assert (tmp_path / "smoke.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forced_isa_is_what_the_runtime_reports(tmp_path):
    done = run_benchmark(tmp_path, "--threads", "1", "--isa", "scalar", "--no-chart")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "smoke.json").read_text())
    (edge,) = [m for m in report["measurements"] if m["runtime"] == "edge"]
    assert edge["requested_isa"] == "scalar" and edge["isa"] == "scalar" and edge["edge_isa_env"] == "scalar"
    assert report["ratios"][0]["output_max_rel_diff"] < 1e-4


def test_each_listed_library_is_measured_in_the_same_run(tmp_path):
    from cruntime.binding import find_library

    built = find_library()
    copy = tmp_path / "libedge-copy.so"
    copy.write_bytes(built.read_bytes())
    done = run_benchmark(tmp_path, "--threads", "1", "--no-chart", "--library", f"before={copy}",
                         "--library", f"after={built}")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "smoke.json").read_text())
    edges = {m["library_label"]: m for m in report["measurements"] if m["runtime"] == "edge"}
    # Each measurement process loaded the build it was given, not the one the binding would find.
    assert {label: pathlib.Path(m["library"]).resolve() for label, m in edges.items()} == {
        "before": copy.resolve(), "after": built.resolve()}
    assert sorted(r["isa"].split(":")[0] for r in report["ratios"]) == ["after", "before"]
    assert all(r["output_max_rel_diff"] < 1e-4 for r in report["ratios"])


def test_output_difference_is_infinite_without_a_common_output_name(tmp_path):
    from benchmarks.bench_models import OUTPUT_BOUND, output_difference

    def saved(name: str, **outputs) -> dict:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **outputs)
        return {"outputs_file": str(path)}

    y = np.linspace(-2.0, 2.0, 8, dtype=np.float32)
    peer = saved("peer", y=y)
    assert output_difference(saved("same", y=y + 1e-6), peer) <= OUTPUT_BOUND
    assert output_difference(saved("renamed", logits=y), peer) == float("inf")
    assert output_difference(saved("wrong", y=-y), peer) > OUTPUT_BOUND


def test_roofline_output_is_parsed():
    from benchmarks.bench_models import parse_roofline

    text = ("isa avx512, kernel f32_gemm_minmax_8x32__avx512 (8x32), 1 thread\n"
            "fp32 FMA peak (measured): 117.8 GFLOP/s\n"
            "gemm m=1024 n=1024 k=1024: 110.3 GFLOP/s = 93.6% of peak\n"
            "gemm m=512 n=512 k=512: 116.0 GFLOP/s = 98.5% of peak\n")
    parsed = parse_roofline(text)
    assert parsed["isa"] == "avx512" and parsed["tile"] == "8x32"
    assert parsed["peak_gflops"] == 117.8 and parsed["best_gemm_gflops"] == 116.0
    assert parsed["best_ratio"] == pytest.approx(116.0 / 117.8)
    assert [g["m"] for g in parsed["gemm"]] == [1024, 512]
    with pytest.raises(ValueError):
        parse_roofline("make: *** No rule to make target 'roofline'.")


def test_profile_runs_a_model_whose_input_the_arena_reuses(tmp_path, capsys):
    """`edge profile` invokes several times: the LSTM model's token input shares arena bytes with
    later activations, and its LSTM leaves optional outputs out (shapes None in the table)."""
    import converter
    from edge.cli import main
    from tests.fixtures import models

    path = tmp_path / "lstm.edge"
    converter.convert(models.lstm_lm(vocab=50, hidden=16, layers=2, tokens=6), path)
    assert main(["profile", str(path), "--runs", "3"]) == 0
    table = capsys.readouterr().out
    assert "LSTM" in table and "FULLY_CONNECTED" in table and "GFLOP/s" in table
    assert main(["bench", str(path), "--runs", "3", "--warmup", "1"]) == 0


def test_bench_contention_measures_every_condition(tmp_path):
    """The busy-core benchmark end to end on a tiny network: every (condition, runtime, threads)
    measured, the spinner gone afterwards, the pair condition timing both copies."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks.bench_contention", "--small", "--models", "lstm_lm",
               "--runs", "2", "--rounds", "1", "--warmup", "1", "--no-build", "--out", str(tmp_path),
               "--name", "contention"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "contention.json").read_text())
    assert report["schema"] == "edgesplit.bench_contention/1"
    measured = sorted((m["condition"], m["label"], m["threads"]) for m in report["measurements"])
    assert measured == sorted((c, label, t) for c in ("quiet", "busy", "pair")
                              for label in ("edge", "onnxruntime") for t in (1, 2))
    for m in report["measurements"]:
        assert "error" not in m, m
        assert len(m["times_ms"]) == (4 if m["condition"] == "pair" else 2)
        assert m["copies"] == (2 if m["condition"] == "pair" else 1)
        if m["label"] == "edge":
            assert m["max_rel_diff_vs_onnxruntime"] < 1e-4
    assert [row[:2] for row in report["table"][1:]] == [["lstm_lm", c] for c in ("quiet", "busy", "pair")]
    spinners = subprocess.run(["pgrep", "-f", "os.sched_setaffinity"], capture_output=True, text=True)
    assert spinners.stdout.strip() == "", "the spinner outlived the benchmark"


def test_bench_zoo_measures_a_zoo_model_and_checks_its_output(tmp_path):
    pytest.importorskip("torch")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "benchmarks.bench_zoo", "--size", "test", "--models", "resnet", "--threads", "1",
               "--runs", "2", "--rounds", "1", "--warmup", "1", "--out", str(tmp_path), "--name", "zoo-smoke"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "zoo-smoke.json").read_text())
    (ratio,) = report["ratios"]
    assert ratio["model"] == "resnet" and ratio["error"] is None and ratio["output_max_rel_diff"] < 1e-4
    assert ratio["edge_median_ms"] > 0 and ratio["onnxruntime_median_ms"] > 0

"""Measurements behind `edge bench` and `edge profile`: latency, memory, per-op times.

Latency is wall time seen from Python (what an app sees) of a run that sets the inputs, invokes and
reads the outputs, measured the way benchmarks/ measure it (edge.measure). The inputs are drawn once.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from cruntime.binding import load_library
from edge.interpreter import Interpreter
from edge.measure import PeakMemory, invoke_with, latency_summary, timed_runs


def random_input(details: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """A random array for one input: normal floats, full-range 8-bit ints, and 0/1 for wider ints
    (those are usually indices or lengths, where only small values are certain to be valid)."""
    shape = tuple(int(d) for d in details["shape"])
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.integers(0, 2, size=shape).astype(dtype)


def random_inputs(interpreter: Interpreter, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    return [(details["index"], random_input(details, rng)) for details in interpreter.get_input_details()]


def benchmark(model_path: str, num_threads: int = 1, warmup: int = 5, runs: int = 50, seed: int = 0,
              backend: str = "cpu", gpu_precision: str = "fp32") -> dict[str, Any]:
    """Loads the model and runs ``warmup`` untimed then ``runs`` timed runs on random inputs."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    load_library()  # the library's own pages are not the model's memory
    rng = np.random.default_rng(seed)
    peak_memory = PeakMemory()
    peak_memory.start()
    load_start = time.perf_counter()
    with Interpreter(model_path=model_path, num_threads=num_threads, backend=backend,
                     gpu_precision=gpu_precision) as interpreter:
        interpreter.allocate_tensors()
        load_ms = (time.perf_counter() - load_start) * 1e3
        inputs = random_inputs(interpreter, rng)
        outputs = [d["index"] for d in interpreter.get_output_details()]
        times_ms = timed_runs(lambda: invoke_with(interpreter, inputs, outputs), warmup, runs)
        memory = interpreter.memory_info()
        placement = interpreter.placement()
    return {
        "model": str(model_path),
        "threads": num_threads,
        "backend": backend,
        "gpu_ops": placement["devices"].count("gpu"),
        "ops": len(placement["devices"]),
        "warmup": warmup,
        "runs": runs,
        "load_ms": load_ms,
        **latency_summary(times_ms),
        "arena_bytes": memory["arena_bytes"],
        "naive_bytes": memory["naive_bytes"],
        "persistent_bytes": memory["persistent_bytes"],
        "runtime_peak_bytes": memory["arena_bytes"] + memory["persistent_bytes"],
        "model_bytes": memory["model_bytes"],
        "peak_rss_growth_bytes": peak_memory.growth_bytes(),
        "peak_memory_source": peak_memory.source,
    }


def profile(model_path: str, runs: int = 10, num_threads: int = 1, seed: int = 0, backend: str = "cpu",
            gpu_precision: str = "fp32", gpu_device: int = 0) -> list[dict[str, Any]]:
    """Per-op mean times over ``runs`` invokes (after one untimed warm-up), slowest first, with each
    op's share of the total, its GFLOP/s (from the model's cost metadata) and its device. While
    profiling, each GPU op waits for its kernels, so its time is its own (transfers included)."""
    if runs < 1:
        raise ValueError(f"need runs >= 1, got {runs}")
    with Interpreter(model_path=model_path, num_threads=num_threads, backend=backend,
                     gpu_precision=gpu_precision, gpu_device=gpu_device) as interpreter:
        interpreter.allocate_tensors()
        inputs = random_inputs(interpreter, np.random.default_rng(seed))
        # Reading the outputs lets a GPU's kernels finish before the first profiled op.
        invoke_with(interpreter, inputs, [d["index"] for d in interpreter.get_output_details()])
        interpreter.profiling = True
        interpreter.reset_profile()
        for _ in range(runs):
            invoke_with(interpreter, inputs, [])
        entries = interpreter.profile()
        placement = interpreter.placement()
    for entry in entries:
        entry["device"] = placement["devices"][entry["index"]]
        entry["kernel"] = placement["kernels"][entry["index"]]
    total_ms = sum(entry["ms"] for entry in entries)
    for entry in entries:
        entry["share"] = entry["ms"] / total_ms if total_ms > 0 else 0.0
        entry["gflops"] = entry["flops"] / (entry["ms"] * 1e6) if entry["ms"] > 0 and entry["flops"] else None
    return sorted(entries, key=lambda entry: entry["ms"], reverse=True)


def _shape_label(shapes) -> str:
    return " ".join("x".join(str(d) for d in shape) or "scalar" for shape in shapes or () if shape is not None)


def save_profile_chart(entries: list[dict[str, Any]], path: str, top: int = 25) -> None:
    """A horizontal bar chart of the slowest ops. Needs matplotlib (the `bench` extra)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = entries[:top][::-1]
    labels = [f"#{entry['index']} {entry['op']} {_shape_label(entry.get('output_shapes'))}" for entry in shown]
    figure, axes = plt.subplots(figsize=(9, 0.3 * len(shown) + 1.2))
    bars = axes.barh(labels, [entry["ms"] for entry in shown])
    for bar, entry in zip(bars, shown):
        note = f" {entry['share'] * 100:.1f}%" if "share" in entry else ""
        if entry.get("gflops"):
            note += f", {entry['gflops']:.1f} GFLOP/s"
        axes.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=7)
    axes.margins(x=0.25)
    axes.tick_params(axis="y", labelsize=8)
    axes.set_xlabel("mean time per run (ms)")
    axes.set_title(f"slowest {len(shown)} of {len(entries)} ops")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

"""Measurements behind `edge bench` and `edge profile`: latency, memory, per-op times.

Latency is wall time of invoke() seen from Python (what an app sees). The inputs are drawn once and
copied in before every run, outside the timed part.
"""
from __future__ import annotations

import resource
import sys
import time
from typing import Any

import numpy as np

from cruntime.binding import load_library
from edge.interpreter import Interpreter


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # Linux reports KiB


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


def set_inputs(interpreter: Interpreter, inputs: list[tuple[int, np.ndarray]]) -> None:
    """Sets the inputs again before every run: the arena may reuse an input's bytes for later
    activations once the input's last consumer has run, so an input does not survive invoke()."""
    for index, value in inputs:
        interpreter.set_tensor(index, value)


def benchmark(model_path: str, num_threads: int = 1, warmup: int = 5, runs: int = 50, seed: int = 0,
              backend: str = "cpu", gpu_precision: str = "fp32") -> dict[str, Any]:
    """Loads the model, sets random inputs, runs ``warmup`` untimed then ``runs`` timed invokes.
    With a GPU backend a timed run also reads the outputs back (kernels run asynchronously, so
    invoke() alone would time their launches only)."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    load_library()  # the library's own pages are not the model's memory
    rng = np.random.default_rng(seed)
    rss_before = peak_rss_bytes()
    load_start = time.perf_counter()
    with Interpreter(model_path=model_path, num_threads=num_threads, backend=backend,
                     gpu_precision=gpu_precision) as interpreter:
        interpreter.allocate_tensors()
        load_ms = (time.perf_counter() - load_start) * 1e3
        inputs = random_inputs(interpreter, rng)
        outputs = [d["index"] for d in interpreter.get_output_details()] if backend != "cpu" else []
        for _ in range(warmup):
            set_inputs(interpreter, inputs)
            interpreter.invoke()
            for index in outputs:
                interpreter.get_tensor(index)
        times_ms = np.empty(runs)
        for i in range(runs):
            set_inputs(interpreter, inputs)
            start = time.perf_counter()
            interpreter.invoke()
            for index in outputs:
                interpreter.get_tensor(index)
            times_ms[i] = (time.perf_counter() - start) * 1e3
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
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(times_ms.mean()),
        "min_ms": float(times_ms.min()),
        "max_ms": float(times_ms.max()),
        "arena_bytes": memory["arena_bytes"],
        "naive_bytes": memory["naive_bytes"],
        "persistent_bytes": memory["persistent_bytes"],
        "runtime_peak_bytes": memory["arena_bytes"] + memory["persistent_bytes"],
        "model_bytes": memory["model_bytes"],
        "peak_rss_growth_bytes": max(0, peak_rss_bytes() - rss_before),
    }


def profile(model_path: str, runs: int = 10, num_threads: int = 1, seed: int = 0, backend: str = "cpu",
            gpu_precision: str = "fp32") -> list[dict[str, Any]]:
    """Per-op mean times over ``runs`` invokes (after one untimed warm-up), slowest first, with each
    op's share of the total, its GFLOP/s (from the model's cost metadata) and its device. While
    profiling, each GPU op waits for its kernels, so its time is its own (transfers included)."""
    if runs < 1:
        raise ValueError(f"need runs >= 1, got {runs}")
    with Interpreter(model_path=model_path, num_threads=num_threads, backend=backend,
                     gpu_precision=gpu_precision) as interpreter:
        interpreter.allocate_tensors()
        inputs = random_inputs(interpreter, np.random.default_rng(seed))
        set_inputs(interpreter, inputs)
        interpreter.invoke()
        for detail in interpreter.get_output_details():  # a GPU's kernels done before the first timed op
            interpreter.get_tensor(detail["index"])
        interpreter.profiling = True
        interpreter.reset_profile()
        for _ in range(runs):
            set_inputs(interpreter, inputs)
            interpreter.invoke()
        entries = interpreter.profile()
        devices = interpreter.placement()["devices"]
    for entry in entries:
        entry["device"] = devices[entry["index"]]
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

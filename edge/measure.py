"""How a model run is measured, one way for `edge bench`, benchmarks/ and cloudsplit.costs.

A timed run sets the inputs, invokes and reads the outputs back (``invoke_with``): an app needs all
three, onnxruntime's ``run()`` does all three, and on a GPU backend invoke() alone would time only
the kernel launches. ``timed_runs`` times such a run after untimed warm-ups; ``latency_summary``
gives the figures every report carries.

Peak memory (``PeakMemory``) is read from /proc/self/status (VmHWM), not from getrusage's
ru_maxrss: a child started by subprocess (vfork + exec) inherits the parent's high-water mark in
ru_maxrss, which would hide the model's memory behind the benchmark driver's. ``start()`` writes 5
to /proc/self/clear_refs, which resets VmHWM to the current RSS; that RSS is the baseline, and the
peak afterwards minus it is what the model cost. Where /proc is missing (not Linux), ru_maxrss is
the fallback and ``source`` says so.
"""
from __future__ import annotations

import platform
import resource
import sys
import time
from typing import Callable, Sequence

import numpy as np


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # Linux reports KiB


class PeakMemory:
    """Peak RSS growth of this process from ``start()`` on."""

    def __init__(self):
        self.source = "VmHWM"
        self.baseline_bytes = 0

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
                clear_refs.write("5")
            rss = _status_kib("VmRSS")
        except OSError:
            rss = None
        if rss is None:
            self.source = "ru_maxrss"
            self.baseline_bytes = _max_rss_bytes()
        else:
            self.baseline_bytes = rss * 1024

    def peak_bytes(self) -> int:
        """The process's peak RSS since ``start()`` (ru_maxrss: since the process began)."""
        if self.source == "VmHWM":
            return (_status_kib("VmHWM") or 0) * 1024
        return _max_rss_bytes()

    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes() - self.baseline_bytes)


def invoke_with(interpreter, inputs: Sequence[tuple[int, np.ndarray]], outputs: Sequence[int]) -> list[np.ndarray]:
    """Sets ``inputs`` ((index, array) pairs), invokes, and returns the ``outputs`` (indices) read
    back. The inputs are set on every call: the arena may reuse an input's bytes for later
    activations once the input's last reader has run, so an input does not survive invoke()."""
    for index, value in inputs:
        interpreter.set_tensor(index, value)
    interpreter.invoke()
    return [interpreter.get_tensor(index) for index in outputs]


def timed_runs(run: Callable[[], object], warmup: int, runs: int,
               after: Callable[[], None] | None = None) -> np.ndarray:
    """Milliseconds of ``runs`` calls of ``run`` after ``warmup`` untimed ones; ``after`` (untimed)
    follows each timed call, e.g. to read the profiler."""
    for _ in range(warmup):
        run()
    times_ms = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run()
        times_ms[i] = (time.perf_counter() - start) * 1e3
        if after is not None:
            after()
    return times_ms


def latency_summary(times_ms: np.ndarray) -> dict:
    return {
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(times_ms.mean()),
        "min_ms": float(times_ms.min()),
        "max_ms": float(times_ms.max()),
    }


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

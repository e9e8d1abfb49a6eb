"""One measurement in a fresh process: a model on one runtime at one thread count.

    python3 -m benchmarks._measure --runtime edge|onnxruntime --model FILE --inputs FEEDS.npz
                                   --threads N --warmup W --runs R [--outputs OUT.npz] [--copies C]

Prints one JSON object on stdout. bench_models.py starts one of these per (runtime, model,
threads, ISA), so each has its own address space and its peak memory is its own.

Peak memory is read from /proc/self/status (VmHWM), not from getrusage's ru_maxrss: a child
started by subprocess (vfork + exec) inherits the parent's high-water mark in ru_maxrss, which
would hide the model's memory behind the benchmark driver's. After the imports, the runtime's
library load and reading the inputs, writing 5 to /proc/self/clear_refs resets VmHWM to the
current RSS; that RSS is the idle baseline, and the peak after loading the model and all runs,
minus that baseline, is what the model cost. Where /proc is missing (not Linux), ru_maxrss is the
fallback and the figures say so.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time

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
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.baseline_bytes = int(peak) * (1 if sys.platform == "darwin" else 1024)
        else:
            self.baseline_bytes = rss * 1024

    def peak_bytes(self) -> int:
        if self.source == "VmHWM":
            return (_status_kib("VmHWM") or 0) * 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _summary(times_ms: np.ndarray) -> dict:
    return {
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "mean_ms": float(times_ms.mean()),
        "min_ms": float(times_ms.min()),
        "max_ms": float(times_ms.max()),
        "times_ms": [round(float(t), 6) for t in times_ms],
    }


def _timed_runs(run, warmup: int, runs: int) -> np.ndarray:
    for _ in range(warmup):
        run()
    times_ms = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run()
        times_ms[i] = (time.perf_counter() - start) * 1e3
    return times_ms


def _timed_copies(make_run, copies: int, warmup: int, runs: int) -> np.ndarray:
    """``copies`` independent instances (make_run() builds one and returns its run function), each
    timed on its own Python thread at the same time (both runtimes release the GIL while they
    compute); the times of all copies pooled. One copy is plain _timed_runs."""
    runs_of = [make_run() for _ in range(copies)]
    if copies == 1:
        return _timed_runs(runs_of[0], warmup, runs)
    start = threading.Barrier(copies)
    times: list[np.ndarray | None] = [None] * copies
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            start.wait()
            times[k] = _timed_runs(runs_of[k], warmup, runs)
        except BaseException as error:  # re-raised on the main thread
            errors.append(error)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return np.concatenate(times)


def _edge_feed(detail: dict, value: np.ndarray) -> np.ndarray:
    """The converter may narrow int64 indices to int32; the values here fit."""
    dtype = np.dtype(detail["dtype"])
    return value if value.dtype == dtype else value.astype(dtype)


def measure_edge(args, feeds: dict[str, np.ndarray], memory: PeakMemory) -> dict:
    import edge
    from cruntime.binding import find_library, load_library

    load_library()
    isa = edge.runtime_isa()
    memory.start()
    interpreters = []

    def make_run():
        load_start = time.perf_counter()
        interpreter = edge.Interpreter(model_path=args.model, num_threads=args.threads)
        interpreter.allocate_tensors()
        load_times.append((time.perf_counter() - load_start) * 1e3)
        interpreters.append(interpreter)
        inputs = [(detail["index"], _edge_feed(detail, feeds[detail["name"]]))
                  for detail in interpreter.get_input_details()]

        def run() -> None:
            # The inputs are set in every run, as onnxruntime's run() takes them in every call:
            # the arena may reuse an input's bytes once its last consumer has run.
            for index, value in inputs:
                interpreter.set_tensor(index, value)
            interpreter.invoke()
        return run

    load_times: list[float] = []
    times_ms = _timed_copies(make_run, args.copies, args.warmup, args.runs)
    load_ms = load_times[0]
    interpreter = interpreters[0]
    peak = memory.peak_bytes()
    info = interpreter.memory_info()
    outputs = {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}
    flops = sum(op["flops"] for op in interpreter.op_details())
    for each in interpreters:
        each.close()
    return {
        "isa": isa,
        "runtime_version": edge.runtime_version(),
        "library": str(find_library()),
        "load_ms": load_ms,
        "peak_rss_bytes": peak,
        "arena_bytes": info["arena_bytes"],
        "persistent_bytes": info["persistent_bytes"],
        "scratch_bytes": info["scratch_bytes"],
        "model_bytes": info["model_bytes"],
        "runtime_bytes": info["arena_bytes"] + info["persistent_bytes"],
        "model_flops": flops,
        "times": times_ms,
        "outputs": outputs,
    }


def measure_onnxruntime(args, feeds: dict[str, np.ndarray], memory: PeakMemory) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    memory.start()
    load_times: list[float] = []
    outputs: list[dict] = []

    def make_run():
        load_start = time.perf_counter()
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
        load_times.append((time.perf_counter() - load_start) * 1e3)
        wanted = {i.name for i in session.get_inputs()}
        session_feeds = {name: value for name, value in feeds.items() if name in wanted}
        names = [o.name for o in session.get_outputs()]
        last: dict = {}
        outputs.append(last)
        return lambda: last.update(zip(names, session.run(names, session_feeds)))

    times_ms = _timed_copies(make_run, args.copies, args.warmup, args.runs)
    load_ms = load_times[0]
    peak = memory.peak_bytes()
    return {
        "runtime_version": ort.__version__,
        "load_ms": load_ms,
        "peak_rss_bytes": peak,
        "times": times_ms,
        "outputs": outputs[0],
    }


MEASURE = {"edge": measure_edge, "onnxruntime": measure_onnxruntime}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=sorted(MEASURE), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--inputs", required=True, help=".npz of the model's inputs by name")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--outputs", help="write the last run's outputs here (.npz)")
    parser.add_argument("--copies", type=int, default=1,
                        help="run this many instances at once, each on its own Python thread (times pooled)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.threads < 1 or args.copies < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --threads >= 1, --copies >= 1")

    with np.load(args.inputs) as archive:
        feeds = {name: archive[name] for name in archive.files}
    memory = PeakMemory()
    result = MEASURE[args.runtime](args, feeds, memory)
    times_ms = result.pop("times")
    outputs = result.pop("outputs")
    if args.outputs:
        np.savez(args.outputs, **outputs)
    peak = result.pop("peak_rss_bytes")
    result.update(_summary(times_ms))
    result.update(runtime=args.runtime, threads=args.threads, copies=args.copies, warmup=args.warmup, runs=args.runs,
                  pid=os.getpid(), memory_source=memory.source, rss_baseline_bytes=memory.baseline_bytes,
                  rss_peak_bytes=peak, peak_memory_bytes=max(0, peak - memory.baseline_bytes),
                  edge_isa_env=os.environ.get("EDGE_ISA"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

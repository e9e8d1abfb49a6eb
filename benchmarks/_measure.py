"""One measurement in a fresh process: a model on one runtime at one thread count.

    python3 -m benchmarks._measure --runtime edge|onnxruntime --model FILE --inputs FEEDS.npz
                                   --threads N --warmup W --runs R [--outputs OUT.npz] [--copies C]

Prints one JSON object on stdout. bench_models.py starts one of these per (runtime, model,
threads, ISA), so each has its own address space and its peak memory is its own.

Timing and peak memory are edge.measure's (the same as `edge bench`): a timed run sets the inputs,
runs and reads the outputs, on both runtimes; the peak-memory baseline is taken after the imports,
the runtime's library load and reading the inputs, so the peak after loading the model and all
runs, minus that baseline, is what the model cost.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import numpy as np

from edge.measure import PeakMemory, invoke_with, latency_summary, timed_runs


def summary(times_ms: np.ndarray) -> dict:
    """latency_summary and every run's time."""
    return {**latency_summary(times_ms), "times_ms": [round(float(t), 6) for t in times_ms]}


def timed_copies(make_run, copies: int, warmup: int, runs: int) -> np.ndarray:
    """``copies`` independent instances (make_run() builds one and returns its run function), each
    timed on its own Python thread at the same time (both runtimes release the GIL while they
    compute); the times of all copies pooled. One copy is plain timed_runs."""
    runs_of = [make_run() for _ in range(copies)]
    if copies == 1:
        return timed_runs(runs_of[0], warmup, runs)
    start = threading.Barrier(copies)
    times: list[np.ndarray | None] = [None] * copies
    errors: list[BaseException] = []

    def one(k: int) -> None:
        try:
            start.wait()
            times[k] = timed_runs(runs_of[k], warmup, runs)
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
        outputs = [detail["index"] for detail in interpreter.get_output_details()]
        return lambda: invoke_with(interpreter, inputs, outputs)

    load_times: list[float] = []
    times_ms = timed_copies(make_run, args.copies, args.warmup, args.runs)
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

    times_ms = timed_copies(make_run, args.copies, args.warmup, args.runs)
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
    result.update(summary(times_ms))
    result.update(runtime=args.runtime, threads=args.threads, copies=args.copies, warmup=args.warmup, runs=args.runs,
                  pid=os.getpid(), memory_source=memory.source, rss_baseline_bytes=memory.baseline_bytes,
                  rss_peak_bytes=peak, peak_memory_bytes=max(0, peak - memory.baseline_bytes),
                  edge_isa_env=os.environ.get("EDGE_ISA"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

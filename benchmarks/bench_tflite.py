"""TFLite models: edge against LiteRT (XNNPACK) on MediaPipe's published models, side by side.

    nice python3 -m benchmarks.bench_tflite [--models face_detection_short_range,palm_detection_lite,...]
                                            [--threads 1,2] [--runs 200] [--warmup 20] [--rounds 4]
                                            [--out benchmarks/results]

Each model is read out of the mediapipe wheel (tests/fixtures/mediapipe_models.py), converted once
with ``edge convert``'s default pipeline, and measured in fresh processes per (runtime, model,
threads): edge through benchmarks/_measure.py, LiteRT through this file's ``--measure-litert`` mode,
which times it with the same helpers (the same inputs, ``--warmup`` untimed runs, wall time of
set_tensor + invoke, peak RSS growth over the idle process). LiteRT runs as its users run it:
``Interpreter(model_path, num_threads=N)``, whose default delegate is XNNPACK. The runs are split
over ``--rounds`` processes per runtime and the two runtimes take turns (LiteRT, edge, edge,
LiteRT, ...), so a neighbour's burst on a shared machine lands on both. The last run's outputs of
both are compared (max |edge - LiteRT| / max |LiteRT|, over every output).

Writes benchmarks/results/tflite-<date>.json (every run's time, machine, versions) and .md (the
table), and prints the table (ratio = edge / LiteRT median; below 1 means edge is faster).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_MODELS = ["face_detection_short_range", "palm_detection_lite", "hand_landmark_lite", "selfie_segmentation",
                  "face_detection_full_range_sparse"]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the LiteRT child process -----------------------------------------------------------

def measure_litert(args) -> int:
    from ai_edge_litert.interpreter import Interpreter
    import importlib.metadata

    from benchmarks._measure import summary, timed_copies
    from edge.measure import PeakMemory, invoke_with

    with np.load(args.inputs) as archive:
        feeds = {name: archive[name] for name in archive.files}
    memory = PeakMemory()
    memory.start()
    load_times, interpreters = [], []

    def make_run():
        start = time.perf_counter()
        interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
        interpreter.allocate_tensors()
        load_times.append((time.perf_counter() - start) * 1e3)
        interpreters.append(interpreter)
        inputs = [(d["index"], feeds[d["name"]]) for d in interpreter.get_input_details()]
        outputs = [d["index"] for d in interpreter.get_output_details()]
        return lambda: invoke_with(interpreter, inputs, outputs)

    times = timed_copies(make_run, 1, args.warmup, args.runs)
    peak = memory.peak_bytes()
    interpreter = interpreters[0]
    outputs = {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}
    if args.outputs:
        np.savez(args.outputs, **outputs)
    result = {"runtime": "litert", "runtime_version": importlib.metadata.version("ai-edge-litert"),
              "load_ms": load_times[0], "threads": args.threads, "warmup": args.warmup, "runs": args.runs,
              "memory_source": memory.source, "rss_baseline_bytes": memory.baseline_bytes, "rss_peak_bytes": peak,
              "peak_memory_bytes": max(0, peak - memory.baseline_bytes), **summary(times)}
    print(json.dumps(result))
    return 0


# ---- the driver ---------------------------------------------------------------------------

def prepare(names: list[str], workdir: pathlib.Path) -> list[dict]:
    from converter.api import convert
    from tests.fixtures import mediapipe_models
    from tests.fixtures.tflite_models import litert_interpreter

    models = []
    for name in names:
        path = mediapipe_models.model_path(name)
        edge_path = workdir / f"{name}.edge"
        convert(str(path), edge_path)
        interpreter = litert_interpreter(path.read_bytes())
        rng = np.random.default_rng(0)
        feeds = {d["name"]: rng.uniform(0, 1, d["shape"]).astype(np.float32) for d in interpreter.get_input_details()}
        inputs_path = workdir / f"{name}.inputs.npz"
        np.savez(inputs_path, **feeds)
        models.append({"name": name, "tflite_path": str(path), "edge_path": str(edge_path),
                       "inputs_path": str(inputs_path), "tflite_bytes": path.stat().st_size,
                       "edge_bytes": edge_path.stat().st_size})
    return models


def measure(runtime: str, model: dict, threads: int, runs: int, args, workdir: pathlib.Path) -> dict:
    from benchmarks.bench_models import run_measurement

    outputs = workdir / f"{model['name']}.{runtime}.{threads}.out.npz"
    common = ["--inputs", model["inputs_path"], "--threads", str(threads), "--warmup", str(args.warmup),
              "--runs", str(runs), "--outputs", str(outputs)]
    if runtime == "edge":
        command = [sys.executable, "-m", "benchmarks._measure", "--runtime", "edge", "--model", model["edge_path"]]
    else:
        command = [sys.executable, "-m", "benchmarks.bench_tflite", "--measure-litert", "--model", model["tflite_path"]]
    base = {"model": model["name"], "runtime": runtime, "threads": threads}
    _log(f"measuring {model['name']} {runtime} threads={threads} ({runs} runs) ...")
    result = run_measurement(command + common, base, args.timeout)
    if "error" not in result:
        result["outputs_file"] = str(outputs)
    return result


def measure_pair(model: dict, threads: int, args, workdir: pathlib.Path) -> dict[str, dict]:
    from benchmarks.bench_models import merge_rounds

    subjects = ["litert", "edge"]
    per_round = [args.runs // args.rounds + (1 if i < args.runs % args.rounds else 0) for i in range(args.rounds)]
    results: dict[str, list[dict]] = {s: [] for s in subjects}
    for index, runs in enumerate(per_round):
        for runtime in (subjects if index % 2 == 0 else subjects[::-1]):
            if results[runtime] and "error" in results[runtime][-1]:
                continue
            results[runtime].append(measure(runtime, model, threads, runs, args, workdir))
    return {s: merge_rounds(results[s]) for s in subjects}


def table(rows: list[dict]) -> str:
    lines = ["| model | threads | LiteRT median (p90) ms | edge median (p90) ms | edge / LiteRT | "
             "min LiteRT / edge ms | peak memory LiteRT / edge MiB | max rel. output diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lite, ours = r["litert"], r["edge"]
        if "error" in lite or "error" in ours:
            lines.append(f"| {r['model']} | {r['threads']} | {lite.get('error', '')} | {ours.get('error', '')} | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {r['threads']} | {lite['median_ms']:.2f} ({lite['p90_ms']:.2f}) | "
            f"{ours['median_ms']:.2f} ({ours['p90_ms']:.2f}) | {ours['median_ms'] / lite['median_ms']:.2f} | "
            f"{lite['min_ms']:.2f} / {ours['min_ms']:.2f} | {lite['peak_memory_bytes'] / 2**20:.1f} / {ours['peak_memory_bytes'] / 2**20:.1f} | "
            f"{r['output_difference']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    # child mode
    parser.add_argument("--measure-litert", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_litert:
        args.threads = int(args.threads)
        return measure_litert(args)

    from benchmarks.bench_models import output_difference

    names = [n for n in args.models.split(",") if n]
    threads = [int(t) for t in args.threads.split(",") if t]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tflite-") as tmp:
        workdir = pathlib.Path(tmp)
        models = prepare(names, workdir)
        for model in models:
            for n in threads:
                pair = measure_pair(model, n, args, workdir)
                difference = output_difference(pair["edge"], pair["litert"])
                for result in pair.values():
                    result.pop("outputs_file", None)
                rows.append({"model": model["name"], "threads": n, "output_difference": difference,
                             "tflite_bytes": model["tflite_bytes"], "edge_bytes": model["edge_bytes"], **pair})
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(rows)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    meta = {"date_utc": stamp, "command": " ".join(["python3", "-m", "benchmarks.bench_tflite", *(argv or sys.argv[1:])]),
            "cpu_count": os.cpu_count(), "load_average_at_end": load, "runs": args.runs, "rounds": args.rounds,
            "warmup": args.warmup}
    (out / f"tflite-{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"tflite-{stamp}.md").write_text(text + "\n")
    print(text)
    print(f"load average at the end: {load}; wrote {out}/tflite-{stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

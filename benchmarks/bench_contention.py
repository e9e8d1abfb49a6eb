"""Busy-core benchmark: edge against onnxruntime while another process spins on one core.

    python3 -m benchmarks.bench_contention [--models mobilenet_v2,resnet18,lstm_lm,bert_encoder]
                                           [--threads 1,2] [--runs 30] [--rounds 2]
                                           [--conditions quiet,busy] [--baseline LIBEDGE.so]
                                           [--out benchmarks/results]

Phones and servers always run something else. This benchmark measures each network (the four of
bench_models.py, at its sizes) with each runtime at 1 and 2 threads twice: on the quiet machine,
and with a background process spinning at full speed on the last CPU (pinned there with
sched_setaffinity; the measured processes are not pinned, as an app's threads are not). A third
condition, "pair", runs two instances of each runtime at once in one process (two interpreters
of --threads threads each; the times of both pooled): more threads than cores, from one app. Each
(runtime, model, threads) runs in a fresh process (benchmarks/_measure.py, as bench_models.py
does), ``--rounds`` processes per subject taking turns with the other runtimes, so a neighbour's
burst lands on all of them. ``--baseline`` adds another libedge.so build as a third runtime
("edge-baseline"), measured in the same rounds: the before/after figures of a change come from
one run.

The table gives medians and two ratios per (model, condition): edge at 2 threads over edge at
1 thread (the target: <= 1.1 when busy) and edge at 2 threads over onnxruntime at
2 threads (<= 1). The last run's outputs of every edge process are compared with onnxruntime's.

Writes benchmarks/results/contention-<date>.json (every run's time) and .md (the table).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any


ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_models  # noqa: E402

SCHEMA = "edgesplit.bench_contention/1"
# quiet: nothing else runs; busy: a process spins on one CPU; pair: quiet, but two instances of the
# runtime (two interpreters, two sessions) run at once in one process, each with --threads threads.
CONDITIONS = ("quiet", "busy", "pair")
SPINNER = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=bench_models.csv_list, default=list(bench_models.MODELS),
                        help="comma-separated subset of " + ",".join(bench_models.MODELS))
    parser.add_argument("--threads", type=bench_models.thread_counts, default=[1, 2])
    parser.add_argument("--conditions", type=bench_models.csv_list, default=list(CONDITIONS))
    parser.add_argument("--runs", type=int, default=30, help="timed runs per subject, over all rounds")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per subject, taking turns")
    parser.add_argument("--busy-cpu", type=int, default=None,
                        help="the CPU the spinner is pinned to (default: the last one this process may use)")
    parser.add_argument("--baseline", type=pathlib.Path, default=None,
                        help="another libedge.so, measured as runtime 'edge-baseline' in the same rounds")
    parser.add_argument("--small", action="store_true", help="tiny models (a smoke test of the benchmark itself)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measuring process")
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "cruntime" / "build")
    parser.add_argument("--no-build", action="store_true", help="measure the library EDGE_LIBRARY or the binding finds")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="file stem of the results (default contention-<date>)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in bench_models.MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(bench_models.MODELS)}")
    bad = [c for c in args.conditions if c not in CONDITIONS]
    if bad:
        parser.error(f"unknown conditions {bad}; choose from {', '.join(CONDITIONS)}")
    if args.runs < args.rounds or args.rounds < 1 or args.warmup < 0:
        parser.error("need --rounds >= 1, --runs >= --rounds and --warmup >= 0")
    if args.baseline is not None and not args.baseline.is_file():
        parser.error(f"--baseline {args.baseline} is not a file")
    allowed = sorted(os.sched_getaffinity(0))
    if args.busy_cpu is None:
        args.busy_cpu = allowed[-1]
    elif args.busy_cpu not in allowed:
        parser.error(f"--busy-cpu {args.busy_cpu} is not one of this process's CPUs {allowed}")
    return args


class Spinner:
    """A process burning one CPU until stopped (a context manager; stops on any exit)."""

    def __init__(self, cpu: int):
        self.cpu = cpu
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Spinner":
        self.process = subprocess.Popen([sys.executable, "-c", SPINNER, str(self.cpu)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        if self.process.poll() is not None:
            raise RuntimeError(f"the spinner exited at once with status {self.process.returncode}")
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


def subjects(args) -> list[tuple[str, str]]:
    """(label, runtime) pairs: 'edge', optionally 'edge-baseline', and 'onnxruntime'."""
    found = [("edge", "edge")]
    if args.baseline is not None:
        found.append(("edge-baseline", "edge"))
    return found + [("onnxruntime", "onnxruntime")]


def measure_condition(model: dict[str, Any], condition: str, args, environments: dict[str, dict[str, str]],
                      workdir: pathlib.Path) -> list[dict[str, Any]]:
    """Every subject at every thread count on one model under one condition, in rounds that take
    turns (the order reversed every other round)."""
    pairs = [(label, runtime, threads) for threads in args.threads for label, runtime in subjects(args)]
    per_round = [args.runs // args.rounds + (1 if i < args.runs % args.rounds else 0) for i in range(args.rounds)]
    results: dict[tuple[str, int], list[dict[str, Any]]] = {(label, t): [] for label, _, t in pairs}
    for round_index, runs in enumerate(per_round):
        for label, runtime, threads in (pairs if round_index % 2 == 0 else pairs[::-1]):
            if results[label, threads] and "error" in results[label, threads][-1]:
                continue
            bench_models.log(f"[{condition}] {label} ...")
            result = bench_models.measure(runtime, model, threads, None, runs, args, environments[label], workdir,
                                          copies=2 if condition == "pair" else 1)
            # measure() names the outputs file by runtime only: give each subject its own.
            if "outputs_file" in result:
                moved = pathlib.Path(result["outputs_file"]).with_suffix(f".{condition}.{label}.npz")
                os.replace(result["outputs_file"], moved)
                result["outputs_file"] = str(moved)
            results[label, threads].append(result)
    merged = []
    for (label, threads), rounds in results.items():
        entry = bench_models.merge_rounds(rounds)
        entry.update(label=label, condition=condition)
        merged.append(entry)
    peers = {m["threads"]: m for m in merged if m["label"] == "onnxruntime" and "error" not in m}
    for entry in merged:
        peer = peers.get(entry["threads"])
        if entry["label"] != "onnxruntime" and "error" not in entry and peer is not None:
            entry["max_rel_diff_vs_onnxruntime"] = bench_models.output_difference(entry, peer)
        entry.pop("outputs_file", None)
    return merged


def _median(measurements, model, condition, label, threads) -> float | None:
    for m in measurements:
        if (m["model"], m["condition"], m["label"], m["threads"]) == (model, condition, label, threads):
            return None if "error" in m else m["median_ms"]
    return None


def table(measurements: list[dict[str, Any]], args) -> list[list[str]]:
    labels = [label for label, _ in subjects(args)]
    header = ["model", "condition"] + [f"{label} {t} thr ms" for label in labels for t in args.threads]
    if set(args.threads) >= {1, 2}:
        header += [f"{label} 2/1 thr" for label in labels if label != "onnxruntime"]
        header += [f"{label} 2 thr / ort 2 thr" for label in labels if label != "onnxruntime"]
    rows = [header]
    for model in args.models:
        for condition in args.conditions:
            row = [model, condition]
            row += [bench_models.format_ms(_median(measurements, model, condition, label, t))
                    for label in labels for t in args.threads]
            if set(args.threads) >= {1, 2}:
                for label in labels:
                    if label != "onnxruntime":
                        row.append(bench_models.format_ratio(bench_models.ratio(
                            _median(measurements, model, condition, label, 2),
                            _median(measurements, model, condition, label, 1))))
                for label in labels:
                    if label != "onnxruntime":
                        row.append(bench_models.format_ratio(bench_models.ratio(
                            _median(measurements, model, condition, label, 2),
                            _median(measurements, model, condition, "onnxruntime", 2))))
            rows.append(row)
    return rows


def markdown(rows: list[list[str]], title: str, command: str) -> str:
    lines = [title, "", f"    {command}", "", "| " + " | ".join(rows[0]) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * (len(rows[0]) - 2)) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    environment = bench_models.measurement_environment(args)
    environments = {"edge": environment, "onnxruntime": environment}
    if args.baseline is not None:
        environments["edge-baseline"] = {**environment, "EDGE_LIBRARY": str(args.baseline.resolve())}
    machine = bench_models.machine_info(environment)

    measurements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_contention-") as tmp:
        workdir = pathlib.Path(tmp)
        prepared = bench_models.prepare_models(args.models, args.small, workdir)
        for name in args.models:
            for condition in args.conditions:
                if condition == "busy":
                    with Spinner(args.busy_cpu):
                        measurements += measure_condition(prepared[name], condition, args, environments, workdir)
                else:
                    measurements += measure_condition(prepared[name], condition, args, environments, workdir)

    rows = table(measurements, args)
    stem = args.name or "contention-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python3 -m benchmarks.bench_contention " + " ".join(argv if argv is not None else sys.argv[1:])
    title = (f"Busy cores: {machine['cpu_model']}, {os.cpu_count()} CPUs, spinner on CPU {args.busy_cpu}, "
             f"edge isa {machine['edge_isa']}, {args.runs} runs, medians, {machine['date'][:10]}")
    report = {"schema": SCHEMA, "command": command,
              "config": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
              "machine": machine, "measurements": measurements, "table": rows,
              "elapsed_s": time.perf_counter() - started}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text = markdown(rows, title, command)
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out / stem}.json and .md")
    failed = [m for m in measurements if "error" in m]
    for entry in failed:
        bench_models.log(f"failed: {entry['model']} {entry['label']} threads={entry['threads']}: {entry['error']}")
    wrong = [m for m in measurements if (m.get("max_rel_diff_vs_onnxruntime") or 0.0) > 1e-3]
    for entry in wrong:
        bench_models.log(f"output differs: {entry['model']} {entry['label']} threads={entry['threads']}: "
                          f"{entry['max_rel_diff_vs_onnxruntime']:.3g} of onnxruntime's scale")
    return 1 if failed or wrong else 0


if __name__ == "__main__":
    sys.exit(main())

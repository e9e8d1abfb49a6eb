"""The model zoo benchmark: every zoo architecture (tests/fixtures/zoo.py), edge against
onnxruntime at 1 and 2 threads, side by side, outputs checked in the same run.

    python3 -m benchmarks.bench_zoo [--size bench|test] [--models vit,gpt2,...] [--threads 1,2] [--runs N]
                                    [--warmup 5] [--rounds 3] [--out benchmarks/results] [--name STEM]

``--size bench`` (the default) measures each architecture at a mobile-scale size (zoo.BENCH_SIZES:
ViT-Tiny at 224 px, ResNet-18, MobileNetV2-1.0, EfficientNet-B0, 4-layer text models over 128
tokens, ...); ``--size test`` at the tiny sizes the tests use, where a run takes a fraction of a
millisecond and the figures are mostly per-call overhead.

Each model is exported by torch (cached, see the fixture), converted once at float32, then measured
by bench_models' harness: each (runtime, model, threads) in fresh processes (benchmarks/_measure.py),
``--rounds`` processes per runtime taking turns so a neighbour's burst lands on both, median of the
pooled runs; the table gives the ratio of the medians and of the fastest runs (least disturbed on a
shared machine). The last run's outputs of both runtimes are compared (max |edge - onnxruntime| / max
|onnxruntime|); a model whose difference exceeds 1e-4 is marked as not matching. A model that does
not export or convert is listed with the reason and not measured.

The measured library is the one the binding finds (``EDGE_LIBRARY``, else cruntime/build); nothing
is built here. Writes benchmarks/results/zoo-<UTC date and time>.json (every measurement, machine,
versions, load averages) and .md (the table), and prints the table.
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
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_models import (csv_list, log, format_ms, thread_counts, format_ratio, compare, machine_info,  # noqa: E402
                                     measure_model, measurement_environment, add_library_argument)
from tests.fixtures import zoo  # noqa: E402

SCHEMA = "edgesplit.bench_zoo/1"
MATCH = 1e-4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.bench_zoo",
                                     description="edge against onnxruntime on the model zoo.")
    parser.add_argument("--models", type=csv_list, default=list(zoo.ZOO),
                        help=f"comma-separated, from {','.join(zoo.ZOO)} (default all)")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2], help="thread counts (default 1,2)")
    parser.add_argument("--size", choices=("bench", "test"), default="bench",
                        help="bench: mobile-scale models (default); test: the tests' tiny models")
    parser.add_argument("--runs", type=int, help="timed runs per measurement (default 30 at bench size, 100 at "
                        "test size, where a run takes a fraction of a millisecond)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first, in each process (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="split the runs over this many processes per runtime, taking turns (default 3)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    add_library_argument(parser)
    parser.add_argument("--name", help="file name stem (default zoo-<UTC date and time>)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement (default 600)")
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 30 if args.size == "bench" else 100
    unknown = [m for m in args.models if m not in zoo.ZOO]
    if unknown or not args.models:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(zoo.ZOO)}")
    if args.runs < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error(f"need --runs >= 1, --warmup >= 0, --rounds >= 1; got {args.runs}, {args.warmup}, {args.rounds}")
    args.rounds = min(args.rounds, args.runs)
    return args


def prepare(name: str, size: str, workdir: pathlib.Path) -> dict[str, Any]:
    """Exports (or finds in the cache) and converts one model; on failure the entry says why."""
    import converter

    model = zoo.at_bench_size(zoo.ZOO[name]) if size == "bench" else zoo.ZOO[name]
    entry: dict[str, Any] = {"builder": name, "info": {"config_class": model.config_class,
                                                       "model_class": model.model_class,
                                                       "config": model.config, "input_shape": list(model.shape)}}
    try:
        onnx_path = zoo.export_onnx(model)
    except Exception as error:  # noqa: BLE001 - any exporter failure is a row in the table
        entry["failure"] = f"export: {type(error).__name__}: {error}"
        return entry
    edge_path = workdir / f"{name}.edge"
    inputs_path = workdir / f"{name}.inputs.npz"
    np.savez(inputs_path, **zoo.feeds(model))
    start = time.perf_counter()
    try:
        result = converter.convert(str(onnx_path), edge_path, input_shapes=zoo.input_shapes(model))
    except Exception as error:  # noqa: BLE001 - UnsupportedOpsError and ConversionError name the cause
        entry["failure"] = f"convert: {type(error).__name__}: {error}"
        return entry
    entry.update(onnx_path=onnx_path, edge_path=edge_path, inputs_path=inputs_path)
    entry["info"].update(onnx_bytes=onnx_path.stat().st_size, edge_bytes=edge_path.stat().st_size,
                         convert_s=time.perf_counter() - start,
                         edge_ops=dict(sorted(result.report.final_ops.items())))
    return entry


def zoo_rows(names: list[str], prepared: dict[str, dict], ratios: list[dict], threads: list[int]) -> list[dict]:
    """One row per model: the conversion, the worst output difference and, per thread count, the two
    medians and their ratio."""
    by_key = {(row["model"], row["threads"]): row for row in ratios}
    rows = []
    for name in names:
        row: dict[str, Any] = {"model": name, "failure": prepared[name].get("failure"), "threads": {}}
        differences = []
        for count in threads:
            ratio = by_key.get((name, count))
            if ratio is None:
                continue
            row["threads"][count] = {key: ratio[key] for key in (
                "edge_median_ms", "onnxruntime_median_ms", "median_ratio", "min_ratio", "error")}
            if ratio["output_max_rel_diff"] is not None:
                differences.append(ratio["output_max_rel_diff"])
        row["output_max_rel_diff"] = max(differences) if differences else None
        row["matches"] = row["output_max_rel_diff"] is not None and row["output_max_rel_diff"] <= MATCH
        rows.append(row)
    return rows


def table_lines(rows: list[dict], threads: list[int]) -> list[str]:
    columns = ["model", "convert", "match (max rel diff)"]
    for count in threads:
        columns += [f"edge ms {count}t", f"ort ms {count}t", f"ratio {count}t", f"min ratio {count}t"]
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join(" --- " if i < 3 else " ---: " for i in range(len(columns))) + "|"]
    for row in rows:
        if row["failure"]:
            stage, _, reason = row["failure"].partition(": ")
            reason = " ".join(reason.split())
            lines.append(f"| {row['model']} | failed ({stage}) | {reason} |" + " - |" * (4 * len(threads)))
            continue
        diff = row["output_max_rel_diff"]
        match = "-" if diff is None else f"{'yes' if row['matches'] else 'NO'} ({diff:.1e})"
        cells = [row["model"], "ok", match]
        for count in threads:
            figures = row["threads"].get(count)
            if figures is None or figures["error"]:
                cells += ["failed", "-", "-", "-"]
            else:
                cells += [format_ms(figures["edge_median_ms"]), format_ms(figures["onnxruntime_median_ms"]),
                          format_ratio(figures["median_ratio"]), format_ratio(figures["min_ratio"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    environment = measurement_environment()
    machine = machine_info(environment)

    measurements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_zoo-") as tmp:
        workdir = pathlib.Path(tmp)
        prepared = {}
        for name in args.models:
            log(f"exporting and converting {name} ...")
            prepared[name] = prepare(name, args.size, workdir)
        for name in args.models:
            if prepared[name].get("failure"):
                log(f"{name}: {prepared[name]['failure']}")
                continue
            for count in args.threads:
                measurements += measure_model(prepared[name], count, [None], args, environment, workdir)
        ratios = compare(measurements)
    for entry in measurements:
        entry.pop("outputs_file", None)
    rows = zoo_rows(args.models, prepared, ratios, args.threads)
    load_at_end = os.getloadavg()

    stem = args.name or "zoo-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    command = "python3 -m benchmarks.bench_zoo " + " ".join(argv if argv is not None else sys.argv[1:])
    title = (f"edge / onnxruntime on the model zoo ({args.size} size), {machine['cpu_model']}, edge isa {machine['edge_isa']}, "
             f"{args.runs} runs x {args.rounds} rounds, {machine['date'][:10]}; load average (1 min) "
             f"{load_at_start[0]:.2f} at the start, {load_at_end[0]:.2f} at the end")
    report = {
        "schema": SCHEMA,
        "command": command.strip(),
        "config": {"size": args.size, "models": args.models, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                   "rounds": args.rounds, "match_bound": MATCH},
        "machine": machine,
        "models": {name: {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in entry["info"].items()}
                   | ({"failure": entry["failure"]} if entry.get("failure") else {})
                   for name, entry in prepared.items()},
        "rows": rows,
        "measurements": measurements,
        "ratios": ratios,
        "load_average_at_start": list(load_at_start),
        "load_average_at_end": list(load_at_end),
        "elapsed_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    markdown_path = args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    lines = table_lines(rows, args.threads)
    markdown_path.write_text(f"{title}\n\n    {report['command']}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    print(title)
    print("\n".join(lines))
    print(f"wrote {json_path}")
    print(f"wrote {markdown_path}")
    failed = [row for row in rows if row["failure"] or not row["matches"]]
    for row in failed:
        log(f"{row['model']}: {row['failure'] or 'outputs differ from onnxruntime or were not measured'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

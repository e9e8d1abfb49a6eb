"""Quantization benchmark: int8 against float32 on our runtime, file sizes, and onnxruntime's int8.

    python3 -m benchmarks.bench_quant [--models mobilenet_v2,resnet18] [--threads 1,2] [--runs 30]
                                      [--warmup 5] [--rounds 3] [--small] [--out benchmarks/results]

For each network (tests/fixtures/models.py) it converts float32, fp16 and int8 .edge files and
makes onnxruntime's own int8 model (quantize_static, QDQ, per-channel int8 weights, int8
activations). Calibration data for both int8 models: 8 synthetic images drawn from N(0, 1), the
same for both. That is enough for latency and size (the accuracy of these untrained networks means
nothing; benchmarks/quant_accuracy.py measures accuracy on real data). Each (runtime, model file,
threads) is measured in fresh processes by benchmarks/_measure.py through bench_models.measure,
the runs split over --rounds processes taking turns; medians are over the pooled runs.

Checked first, in the same run: the int8 model's outputs against the float32 model's on the same
inputs, max |int8 - fp32| / max |fp32| over the outputs, ours and onnxruntime's (both calibrated
on the same images). Ours above its bound, INT8_PEER_FACTOR times onnxruntime's plus INT8_SLACK,
fails the run (exit status 1) before any speed is reported: a fast int8 kernel that computes the
wrong thing must not produce a table.

Reported: our int8 / float32 latency ratio (the target: int8 at least 2x faster at 1 thread,
i.e. a ratio <= 0.5), file size ratios int8/fp32 (<= 0.27) and fp16/fp32 (<= 0.52), and our int8
latency over onnxruntime's int8 latency. Writes benchmarks/results/<stem>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_models  # noqa: E402  (its measurement and machine helpers are reused)

SCHEMA = "edgesplit.bench_quant/1"
MODELS = {name: bench_models.MODELS[name] for name in ("mobilenet_v2", "resnet18")}
SMALL_MODELS = {name: bench_models.SMALL_MODELS[name] for name in MODELS}
CALIBRATION_IMAGES = 8
# Our int8 model's max |int8 - fp32| / max |fp32| may be at most INT8_PEER_FACTOR times
# onnxruntime's int8 model's on the same inputs, plus INT8_SLACK (untrained networks calibrated
# on 8 noise images are far from float32 in both: 0.11 ours against 0.15 onnxruntime's on the
# small MobileNetV2, 0.012 against 0.015 on the small ResNet-18).
INT8_PEER_FACTOR = 1.5
INT8_SLACK = 0.01
# (label, runtime, which file)
SUBJECTS = (("edge fp32", "edge", "fp32"), ("edge int8", "edge", "int8"),
            ("onnxruntime fp32", "onnxruntime", "onnx"), ("onnxruntime int8", "onnxruntime", "onnx_int8"))


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.bench_quant", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=bench_models.csv_list, default=list(MODELS))
    parser.add_argument("--threads", type=bench_models.thread_counts, default=[1, 2])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="tiny variants of the networks (harness check)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", help="file name stem (default quant-<UTC date and time>)")
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "cruntime" / "build")
    parser.add_argument("--no-build", action="store_true", help="measure the library the binding finds")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.runs < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("need --runs >= 1, --warmup >= 0, --rounds >= 1")
    args.rounds = min(args.rounds, args.runs)
    return args


def prepare(name: str, small: bool, workdir: pathlib.Path) -> dict[str, Any]:
    """Every file one network is measured from, and their sizes."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import converter
    from tests.fixtures import models as fixtures

    kwargs = (SMALL_MODELS if small else MODELS)[name]
    model = fixtures.BUILDERS[name](**kwargs)
    feeds = fixtures.sample_inputs(model)
    shape = feeds["input"].shape
    rng = np.random.default_rng(1234)
    calibration = [{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(CALIBRATION_IMAGES)]
    paths = {"onnx": workdir / f"{name}.onnx", "onnx_int8": workdir / f"{name}.ort-int8.onnx",
             "inputs": workdir / f"{name}.inputs.npz"}
    onnx.save(model, str(paths["onnx"]))
    np.savez(paths["inputs"], **feeds)
    info: dict[str, Any] = {"builder_kwargs": kwargs, "errors": {}}
    for mode in ("fp32", "fp16", "int8"):
        bench_models.log(f"{name}: converting {mode} ...")
        start = time.perf_counter()
        path = workdir / f"{name}.{mode}.edge"
        try:
            if mode == "fp32":
                converter.convert(model, path)
            else:
                converter.convert(model, path, quantize=mode,
                                  calibration=calibration if mode == "int8" else None)
            paths[mode] = path
            info[f"{mode}_bytes"] = path.stat().st_size
            info[f"{mode}_convert_s"] = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - recorded and reported
            info["errors"][mode] = f"{type(error).__name__}: {error}"
    bench_models.log(f"{name}: onnxruntime quantize_static ...")
    reader = type("Reader", (CalibrationDataReader,), {
        "__init__": lambda self: setattr(self, "items", iter(calibration)),
        "get_next": lambda self: next(self.items, None)})()
    quantize_static(str(paths["onnx"]), str(paths["onnx_int8"]), reader, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    info["onnx_bytes"] = paths["onnx"].stat().st_size
    info["onnx_int8_bytes"] = paths["onnx_int8"].stat().st_size
    for mode in ("fp16", "int8"):
        if f"{mode}_bytes" in info and "fp32_bytes" in info:
            info[f"{mode}_size_ratio"] = info[f"{mode}_bytes"] / info["fp32_bytes"]
    info["onnxruntime_int8_size_ratio"] = info["onnx_int8_bytes"] / info["onnx_bytes"]
    return {"name": name, "paths": paths, "info": info}


def measure_subject(prepared, label, runtime, which, threads, runs, args, environment, workdir):
    base = {"model": prepared["name"], "subject": label, "runtime": runtime, "threads": threads}
    path = prepared["paths"].get(which)
    if path is None:
        return {**base, "error": prepared["info"]["errors"].get(which, "no file")}
    entry = {"builder": f"{prepared['name']}.{which}", "edge_path": path, "onnx_path": path,
             "inputs_path": prepared["paths"]["inputs"]}
    result = bench_models.measure(runtime, entry, threads, None, runs, args, environment, workdir)
    result.update(base)
    return result


def int8_bounds(measurements) -> list[tuple[dict, float | None]]:
    """(our int8 measurement, its bound) for each one that ran; None where onnxruntime's int8
    model gave no error figure to bound it by."""
    peer = {(m["model"], m["threads"]): m.get("int8_error") for m in measurements
            if m["subject"] == "onnxruntime int8"}
    return [(m, None if peer.get((m["model"], m["threads"])) is None
             else INT8_PEER_FACTOR * peer[(m["model"], m["threads"])] + INT8_SLACK)
            for m in measurements if m["subject"] == "edge int8" and "error" not in m]


def summarize(prepared_all, measurements) -> list[dict[str, Any]]:
    by_key = {(m["model"], m["subject"], m["threads"]): m for m in measurements}
    rows = []
    for prepared in prepared_all:
        name, info = prepared["name"], prepared["info"]
        for threads in sorted({m["threads"] for m in measurements}):
            get = lambda s: by_key.get((name, s, threads), {}).get("median_ms")  # noqa: E731
            rows.append({"model": name, "threads": threads,
                         "edge_fp32_ms": get("edge fp32"), "edge_int8_ms": get("edge int8"),
                         "ort_fp32_ms": get("onnxruntime fp32"), "ort_int8_ms": get("onnxruntime int8"),
                         "int8_over_fp32": bench_models.ratio(get("edge int8"), get("edge fp32")),
                         "int8_error": by_key.get((name, "edge int8", threads), {}).get("int8_error"),
                         "ort_int8_error": by_key.get((name, "onnxruntime int8", threads), {}).get("int8_error"),
                         "edge_int8_over_ort_int8": bench_models.ratio(get("edge int8"), get("onnxruntime int8")),
                         "int8_size_ratio": info.get("int8_size_ratio"),
                         "fp16_size_ratio": info.get("fp16_size_ratio"),
                         "errors": {s: by_key[(name, s, threads)]["error"] for s, _, _ in SUBJECTS
                                    if "error" in by_key.get((name, s, threads), {})}})
    return rows


def _fmt(value, suffix="") -> str:
    return "-" if value is None else f"{value:.2f}{suffix}"


def _err(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def markdown(rows, report) -> str:
    lines = [f"Quantization speed and size, {report['machine']['cpu_model']}, edge isa "
             f"{report['machine']['edge_isa']}, {report['config']['runs']} runs, {report['machine']['date'][:10]}",
             "", f"    {report['command']}", "",
             "| model | thr | edge fp32 ms | edge int8 ms | int8/fp32 | ort fp32 ms | ort int8 ms | "
             "edge int8 / ort int8 | int8 size | fp16 size | int8 err | ort int8 err |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['threads']} | {_fmt(r['edge_fp32_ms'])} | {_fmt(r['edge_int8_ms'])} | "
                     f"{_fmt(r['int8_over_fp32'], 'x')} | {_fmt(r['ort_fp32_ms'])} | {_fmt(r['ort_int8_ms'])} | "
                     f"{_fmt(r['edge_int8_over_ort_int8'], 'x')} | {_fmt(r['int8_size_ratio'])} | "
                     f"{_fmt(r['fp16_size_ratio'])} | {_err(r['int8_error'])} | {_err(r['ort_int8_error'])} |")
    failures = [f"{r['model']} {r['threads']}t {s}: {e[-200:]}" for r in rows for s, e in r["errors"].items()]
    if failures:
        lines += ["", "Failed measurements:", *(f"- {f}" for f in failures)]
    lines += ["", "Calibration for both int8 models: 8 synthetic N(0, 1) images (latency and size only). "
              f"err: max |int8 - fp32| / max |fp32| on the measured inputs (ours must be <= {INT8_PEER_FACTOR:g} x "
              f"onnxruntime's + {INT8_SLACK:g})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    environment = bench_models.measurement_environment(args)
    machine = bench_models.machine_info(environment)
    per_round = [args.runs // args.rounds + (1 if i < args.runs % args.rounds else 0) for i in range(args.rounds)]
    measurements = []
    with tempfile.TemporaryDirectory(prefix="bench_quant-") as tmp:
        workdir = pathlib.Path(tmp)
        prepared_all = [prepare(name, args.small, workdir) for name in args.models]
        for prepared in prepared_all:
            for threads in args.threads:
                results = {subject: [] for subject in SUBJECTS}
                for index, runs in enumerate(per_round):
                    order = SUBJECTS if index % 2 == 0 else SUBJECTS[::-1]
                    for subject in order:
                        if results[subject] and "error" in results[subject][-1]:
                            continue
                        results[subject].append(measure_subject(prepared, *subject, threads, runs, args,
                                                                environment, workdir))
                merged = {subject[0]: bench_models.merge_rounds(results[subject]) for subject in SUBJECTS}
                for runtime in ("edge", "onnxruntime"):
                    merged[f"{runtime} int8"]["int8_error"] = bench_models.output_difference(
                        merged[f"{runtime} int8"], merged[f"{runtime} fp32"])
                for measured in merged.values():
                    measured.pop("outputs_file", None)
                    measurements.append(measured)
    wrong = [(m, bound) for m, bound in int8_bounds(measurements)
             if bound is None or m.get("int8_error") is None or not m["int8_error"] <= bound]
    for m, bound in wrong:
        bench_models.log(f"int8 outputs differ from float32: {m['model']} threads={m['threads']}: "
                         f"{m.get('int8_error')} of the output's scale (bound {bound}); no speed reported")
    if wrong:
        return 1
    rows = summarize(prepared_all, measurements)
    stem = args.name or "quant-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    report = {"schema": SCHEMA,
              "command": "python3 -m benchmarks.bench_quant " + " ".join(argv if argv is not None else sys.argv[1:]),
              "config": {"models": args.models, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                         "rounds": args.rounds, "small": args.small, "calibration_images": CALIBRATION_IMAGES,
                         "calibration": "synthetic N(0, 1) images",
                         "onnxruntime_int8": "quantize_static QDQ, per-channel int8 weights, int8 activations"},
              "machine": machine,
              "models": {p["name"]: p["info"] for p in prepared_all},
              "measurements": measurements, "rows": rows, "elapsed_s": time.perf_counter() - started}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    text = markdown(rows, report)
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out / (stem + '.json')}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

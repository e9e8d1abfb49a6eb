"""CPU kernels benchmark: edge against onnxruntime on whole networks, side by side.

    python3 -m benchmarks.bench_models [--models mobilenet_v2,resnet18,lstm_lm,bert_encoder]
                                       [--threads 1,2] [--runs 30] [--warmup 5] [--rounds 3]
                                       [--isa avx512,scalar] [--library before=PATH --library after=PATH]
                                       [--out benchmarks/results] [--no-roofline] [--no-chart]

One command, one run: it builds each network (tests/fixtures/models.py), converts it once, then
measures each (runtime, model, threads[, ISA]) in a fresh subprocess (benchmarks/_measure.py), so
each peak-memory figure belongs to that runtime and model alone: the same inputs, ``--warmup``
untimed runs, ``--runs`` timed runs (each sets the inputs, runs and reads the outputs: edge.measure),
median and p90 of their wall time, peak RSS growth
over an idle process (after the imports), and for edge also the arena and persistent bytes the
runtime itself reports. The runs are split over ``--rounds`` processes per runtime and the runtimes
of a (model, threads) pair take turns (onnxruntime, edge, edge, onnxruntime, ...), so a burst from a
neighbour on a shared machine lands on both; median and p90 are over the pooled runs, the peak is
the highest of the processes'. The last run's outputs are compared (max abs difference over
max |onnxruntime|, over the outputs both name) so a fast but wrong kernel cannot pass unnoticed: a
difference above OUTPUT_BOUND, or no output name in common, fails the run (exit status 1).

onnxruntime runs as its users run it: intra_op_num_threads = threads, inter_op 1, sequential
execution, all graph optimisations. ``--isa`` measures edge once per listed level (EDGE_ISA set in
that subprocess; the runtime reports what it picked). ``--library LABEL=PATH`` (repeated) measures
each listed build of libedge.so (EDGE_LIBRARY in that subprocess) in the same turns, so a change's
before and after are compared with each other and with onnxruntime in one run. With ``make -C cruntime roofline`` available,
the GEMM roofline (measured FMA peak against GEMM GFLOP/s at large sizes, one thread) is run too.

Writes benchmarks/results/models-<date>.json (raw figures, every run's time, machine, versions), the
table as .md and a .png chart beside it, and prints the ratio table (edge / onnxruntime; below 1
means edge wins).
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.measure import cpu_name  # noqa: E402

SCHEMA = "edgesplit.bench_models/1"
OUTPUT_BOUND = 1e-4
ISAS = ("scalar", "sse2", "avx2", "avx512", "neon", "neondot")

# The measured sizes: MobileNetV2-1.0 and ResNet-18 at 224x224, the 2x512 LSTM LM over 32 tokens with
# a 10k vocabulary, and a 6-layer MiniLM-sized encoder on a batch of 8 x 32 tokens.
MODELS = {
    "mobilenet_v2": dict(width=1.0, resolution=224, num_classes=1000),
    "resnet18": dict(resolution=224, num_classes=1000),
    "lstm_lm": dict(vocab=10000, hidden=512, layers=2, tokens=32, batch=1),
    "bert_encoder": dict(layers=6, hidden=384, heads=12, batch=8, tokens=32, intermediate=1536),
}
# Same graphs, tiny sizes: for the smoke test and for checking the harness itself.
SMALL_MODELS = {
    "mobilenet_v2": dict(width=0.35, resolution=32, num_classes=10),
    "resnet18": dict(resolution=32, base_width=8, num_classes=10),
    "lstm_lm": dict(vocab=200, hidden=32, layers=2, tokens=8, batch=1),
    "bert_encoder": dict(layers=1, hidden=32, heads=4, batch=2, tokens=8, intermediate=64),
}


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def thread_counts(text: str) -> list[int]:
    try:
        counts = [int(item) for item in csv_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads wants integers like 1,2, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--threads wants integers >= 1, got {text!r}")
    return counts


def add_library_argument(parser: argparse.ArgumentParser) -> None:
    """``--library LABEL=PATH``, which ``measure_model`` reads (bench_models and bench_zoo)."""
    parser.add_argument("--library", action="append", type=library_label, default=[], metavar="LABEL=PATH",
                        help="measure edge with this build of libedge.so as well (repeat for several: "
                             "before=/tmp/libedge-old.so --library after=cruntime/build/libedge.so); the "
                             "builds take turns with onnxruntime in every round")


def library_label(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    if not pathlib.Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return label, str(pathlib.Path(path).resolve())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.bench_models",
                                     description="edge against onnxruntime on whole networks (latency, memory).")
    parser.add_argument("--models", type=csv_list, default=list(MODELS),
                        help=f"comma-separated, from {','.join(MODELS)} (default all)")
    parser.add_argument("--threads", type=thread_counts, default=[1, 2], help="thread counts (default 1,2)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per measurement (default 30; >= 20 "
                        "for reported figures)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first, in each process (default 5)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="split the runs over this many processes per runtime, taking turns (default 3)")
    parser.add_argument("--isa", type=csv_list, default=[],
                        help="measure edge at each of these kernel levels (EDGE_ISA), e.g. avx512,avx2,scalar; "
                             "default: the level the runtime picks")
    add_library_argument(parser)
    parser.add_argument("--small", action="store_true", help="tiny variants of the networks (harness check)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results",
                        help="folder for the JSON and the chart (default benchmarks/results)")
    parser.add_argument("--name", help="file name stem (default models-<UTC date and time>)")
    parser.add_argument("--build-dir", type=pathlib.Path, default=ROOT / "cruntime" / "build",
                        help="C runtime build folder: `make shared` and `make roofline` run there and the "
                             "measured library is its libedge.so (unless EDGE_LIBRARY is set)")
    parser.add_argument("--no-build", action="store_true",
                        help="do not run make; measure the library the binding finds (cruntime/binding.py)")
    parser.add_argument("--no-roofline", action="store_true", help="skip the GEMM roofline")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table (written to .md anyway)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement (default 900)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    bad_isas = [isa for isa in args.isa if isa not in ISAS]
    if bad_isas:
        parser.error(f"unknown ISA(s) {bad_isas}; choose from {', '.join(ISAS)}")
    if args.runs < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error(f"need --runs >= 1, --warmup >= 0, --rounds >= 1; got {args.runs}, {args.warmup}, {args.rounds}")
    args.rounds = min(args.rounds, args.runs)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return value.split()
    except OSError:
        pass
    return []


def _command_output(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(environment: dict[str, str]) -> dict[str, Any]:
    """Where and with what the figures were taken. The runtime facts come from a subprocess with the
    measurement's environment, so they describe the library the measurements load."""
    import onnxruntime

    probe = ("import json, edge; from cruntime.binding import find_library; "
             "print(json.dumps({'edge_isa': edge.runtime_isa(), 'edge_version': edge.runtime_version(), "
             "'library': str(find_library())}))")
    runtime = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                        cwd=ROOT, env=environment).stdout)
    flags = set(cpu_flags())
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    status = _command_output(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cores": affinity,
        "cpu_simd_flags": sorted(flags & {"sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                                           "avx512dq", "avx512_vnni", "avx512_bf16", "asimd", "asimddp"}),
        "machine": platform.machine(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "edge_runtime": runtime["edge_version"],
        "edge_isa": runtime["edge_isa"],
        "edge_library": runtime["library"],
        "edge_isa_env": environment.get("EDGE_ISA"),
        "compiler": (_command_output([environment.get("CC", "cc"), "--version"]) or "").splitlines()[:1],
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "git_commit": _command_output(["git", "rev-parse", "HEAD"]),
        "git_dirty": bool(status) if status is not None else None,
    }


def measurement_environment(args=None) -> dict[str, str]:
    """The environment of the measurement processes: this one with the repository on PYTHONPATH,
    and, given the command's ``args``, EDGE_LIBRARY at a library built from the sources now
    (build_runtime)."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
    if args is not None:
        build_runtime(args, environment)
    return environment


def build_runtime(args, environment: dict[str, str]) -> None:
    """Brings the measured library up to date with the sources, unless EDGE_LIBRARY names one."""
    if environment.get("EDGE_LIBRARY") or args.no_build:
        return
    log(f"building the C runtime in {args.build_dir} ...")
    subprocess.run(["make", "-s", "-C", str(ROOT / "cruntime"), f"BUILD={args.build_dir.resolve()}", "shared"],
                   check=True, stdout=subprocess.DEVNULL)
    environment["EDGE_LIBRARY"] = str(args.build_dir.resolve() / "libedge.so")


def prepare_models(names: list[str], small: bool, workdir: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Builds, saves and converts each network once; the measurements read these files."""
    import onnx

    import converter
    from tests.fixtures import models as fixtures

    sizes = SMALL_MODELS if small else MODELS
    prepared = {}
    for name in names:
        kwargs = sizes[name]
        log(f"converting {name}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) ...")
        model = fixtures.BUILDERS[name](**kwargs)
        onnx_path = workdir / f"{name}.onnx"
        edge_path = workdir / f"{name}.edge"
        inputs_path = workdir / f"{name}.inputs.npz"
        onnx.save(model, str(onnx_path))
        np.savez(inputs_path, **fixtures.sample_inputs(model))
        start = time.perf_counter()
        result = converter.convert(model, edge_path)
        prepared[name] = {
            "builder": name,
            "kwargs": kwargs,
            "onnx_path": onnx_path,
            "edge_path": edge_path,
            "inputs_path": inputs_path,
            "info": {"builder_kwargs": kwargs, "onnx_bytes": onnx_path.stat().st_size,
                     "edge_bytes": edge_path.stat().st_size, "convert_s": time.perf_counter() - start,
                     "edge_ops": dict(sorted(result.report.final_ops.items()))},
        }
    return prepared


def measure(runtime: str, model: dict[str, Any], threads: int, isa: str | None, runs: int, args,
            environment: dict[str, str], workdir: pathlib.Path, copies: int = 1,
            library: tuple[str, str] | None = None) -> dict[str, Any]:
    path = model["edge_path"] if runtime == "edge" else model["onnx_path"]
    outputs = workdir / f"{model['builder']}.{runtime}.{threads}.{isa or 'default'}.{library[0] if library else 'lib'}.out.npz"
    command = [sys.executable, "-m", "benchmarks._measure", "--runtime", runtime, "--model", str(path),
               "--inputs", str(model["inputs_path"]), "--threads", str(threads), "--warmup", str(args.warmup),
               "--runs", str(runs), "--outputs", str(outputs), "--copies", str(copies)]
    env = dict(environment)
    if runtime == "edge" and isa:
        env["EDGE_ISA"] = isa
    if runtime == "edge" and library:
        env["EDGE_LIBRARY"] = library[1]
    variant = ", ".join(filter(None, [isa, library[0] if library else None]))
    label = f"{model['builder']} {runtime}{f' [{variant}]' if variant else ''} threads={threads}"
    log(f"measuring {label} ...")
    base = {"model": model["builder"], "runtime": runtime, "threads": threads, "requested_isa": isa,
            "library_label": library[0] if library else None}
    result = run_measurement(command, base, args.timeout, env)
    if "error" not in result:
        result["outputs_file"] = str(outputs)
    return result


def run_measurement(command: list[str], base: dict[str, Any], timeout: float,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    """One measurement process (benchmarks/_measure.py or a peer's): its last stdout line, a JSON
    object, merged with ``base``; a timeout or a non-zero exit gives ``base`` with an "error"."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {**base, "error": f"exit status {done.returncode}: " + " | ".join(tail)}
    return {**json.loads(done.stdout.strip().splitlines()[-1]), **base}


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One (runtime, model, threads, ISA) measured in several processes: the runs pooled, the
    highest peak memory, the median load time."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    merged = dict(rounds[-1])
    times = np.array([t for r in rounds for t in r["times_ms"]])
    merged.update(runs=len(times), processes=len(rounds), times_ms=[float(t) for t in times],
                  median_ms=float(np.median(times)), p90_ms=float(np.percentile(times, 90)),
                  mean_ms=float(times.mean()), min_ms=float(times.min()), max_ms=float(times.max()),
                  round_medians_ms=[r["median_ms"] for r in rounds],
                  load_ms=float(np.median([r["load_ms"] for r in rounds])),
                  peak_memory_bytes=max(r["peak_memory_bytes"] for r in rounds),
                  rss_peak_bytes=max(r["rss_peak_bytes"] for r in rounds))
    merged.pop("pid", None)
    return merged


def measure_model(model: dict[str, Any], threads: int, edge_isas: list[str | None], args,
                  environment: dict[str, str], workdir: pathlib.Path) -> list[dict[str, Any]]:
    """onnxruntime and edge (each ISA, each --library build) on one model at one thread count, in
    ``--rounds`` rounds of fresh processes that take turns, so a burst from a neighbour on a shared
    machine lands on every subject rather than on whichever happened to be running."""
    libraries: list[tuple[str, str] | None] = list(args.library) or [None]
    subjects = [("onnxruntime", None, None)] + [("edge", isa, library) for library in libraries for isa in edge_isas]
    per_round = [args.runs // args.rounds + (1 if i < args.runs % args.rounds else 0) for i in range(args.rounds)]
    results: dict[tuple, list[dict[str, Any]]] = {subject: [] for subject in subjects}
    for round_index, runs in enumerate(per_round):
        order = subjects if round_index % 2 == 0 else subjects[::-1]
        for subject in order:
            runtime, isa, library = subject
            if results[subject] and "error" in results[subject][-1]:
                continue
            results[subject].append(measure(runtime, model, threads, isa, runs, args, environment, workdir,
                                            library=library))
    return [merge_rounds(results[subject]) for subject in subjects]


def output_difference(edge_result: dict[str, Any], peer_result: dict[str, Any]) -> float | None:
    """max |edge - peer| / max |peer| over the outputs both have; inf where they have none in common
    or a shape differs."""
    if "error" in edge_result or "error" in peer_result:
        return None
    worst = 0.0
    with np.load(edge_result["outputs_file"]) as ours, np.load(peer_result["outputs_file"]) as theirs:
        if not set(theirs.files) & set(ours.files):
            return float("inf")
        for name in theirs.files:
            if name not in ours.files:
                continue
            want = theirs[name].astype(np.float64)
            got = ours[name].astype(np.float64)
            if got.shape != want.shape:
                return float("inf")
            scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-30)
            worst = max(worst, float(np.max(np.abs(got - want))) / scale if want.size else 0.0)
    return worst


def ratio(numerator, denominator) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _isa_label(measurement: dict[str, Any]) -> str | None:
    """The level the runtime ran at, and the one asked for when the runtime picked another (a level
    this CPU lacks leaves the detected one)."""
    picked, asked = measurement.get("isa"), measurement.get("requested_isa")
    level = f"{picked} (asked {asked})" if picked and asked and picked != asked else picked or asked
    label = measurement.get("library_label")
    return f"{label}: {level}" if label and level else label or level


def compare(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, threads, edge ISA): edge / onnxruntime."""
    peers = {(m["model"], m["threads"]): m for m in measurements if m["runtime"] == "onnxruntime"}
    rows = []
    for ours in (m for m in measurements if m["runtime"] == "edge"):
        peer = peers.get((ours["model"], ours["threads"]))
        if peer is None:
            continue
        ok = "error" not in ours and "error" not in peer
        rows.append({
            "model": ours["model"],
            "threads": ours["threads"],
            "isa": _isa_label(ours),
            "edge_median_ms": ours.get("median_ms"),
            "onnxruntime_median_ms": peer.get("median_ms"),
            "edge_p90_ms": ours.get("p90_ms"),
            "onnxruntime_p90_ms": peer.get("p90_ms"),
            "edge_peak_memory_bytes": ours.get("peak_memory_bytes"),
            "onnxruntime_peak_memory_bytes": peer.get("peak_memory_bytes"),
            "edge_runtime_bytes": ours.get("runtime_bytes"),
            "median_ratio": ratio(ours.get("median_ms"), peer.get("median_ms")) if ok else None,
            "p90_ratio": ratio(ours.get("p90_ms"), peer.get("p90_ms")) if ok else None,
            # The fastest runs: least disturbed by neighbours on a shared machine.
            "min_ratio": ratio(ours.get("min_ms"), peer.get("min_ms")) if ok else None,
            "memory_ratio": ratio(ours.get("peak_memory_bytes"), peer.get("peak_memory_bytes")) if ok else None,
            "output_max_rel_diff": output_difference(ours, peer),
            "error": ours.get("error") or peer.get("error"),
        })
    return rows


ROOFLINE_PEAK = re.compile(r"fp32 FMA peak \(measured\): ([0-9.]+) GFLOP/s")
ROOFLINE_GEMM = re.compile(r"gemm m=(\d+) n=(\d+) k=(\d+): ([0-9.]+) GFLOP/s = ([0-9.]+)% of peak")
ROOFLINE_HEAD = re.compile(r"isa (\S+), kernel (\S+) \((\d+)x(\d+)\)")


def roofline_available() -> bool:
    """Whether the Makefile has the roofline target and its source is here."""
    makefile = ROOT / "cruntime" / "Makefile"
    return (ROOT / "benchmarks" / "roofline.c").is_file() and makefile.is_file() and \
        re.search(r"^roofline:", makefile.read_text(encoding="utf-8"), re.M) is not None


def parse_roofline(text: str) -> dict[str, Any]:
    peak = ROOFLINE_PEAK.search(text)
    head = ROOFLINE_HEAD.search(text)
    gemms = [{"m": int(m), "n": int(n), "k": int(k), "gflops": float(rate), "percent_of_peak": float(share)}
             for m, n, k, rate, share in ROOFLINE_GEMM.findall(text)]
    if peak is None or not gemms:
        raise ValueError("no 'fp32 FMA peak' and 'gemm ...' lines in the roofline output")
    best = max(gemms, key=lambda g: g["gflops"])
    return {
        "isa": head.group(1) if head else None,
        "kernel": head.group(2) if head else None,
        "tile": f"{head.group(3)}x{head.group(4)}" if head else None,
        "peak_gflops": float(peak.group(1)),
        "gemm": gemms,
        "best_gemm_gflops": best["gflops"],
        "best_ratio": best["gflops"] / float(peak.group(1)),
    }


def run_roofline(isa: str | None, args, environment: dict[str, str]) -> dict[str, Any]:
    env = dict(environment)
    if isa:
        env["EDGE_ISA"] = isa
    log(f"roofline{f' [{isa}]' if isa else ''} ...")
    command = ["make", "-s", "-C", str(ROOT / "cruntime"), f"BUILD={args.build_dir.resolve()}", "roofline"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"requested_isa": isa, "error": f"timed out after {args.timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"requested_isa": isa, "error": f"make roofline: exit status {done.returncode}: " + " | ".join(tail)}
    try:
        return {"requested_isa": isa, **parse_roofline(done.stdout), "output": done.stdout.strip().splitlines()[-8:]}
    except ValueError as error:
        return {"requested_isa": isa, "error": str(error), "output": done.stdout.strip().splitlines()[-8:]}


def _mib(value) -> str:
    return f"{value / 2**20:.1f}" if value is not None else "-"


def format_ms(value) -> str:
    return f"{value:.2f}" if value is not None else "-"


def format_ratio(value) -> str:
    return f"{value:.2f}x" if value is not None else "-"


TABLE_COLUMNS = ("model", "thr", "isa", "edge ms", "ort ms", "median", "p90", "min", "edge MiB", "ort MiB",
                 "memory", "out diff")


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    lines = []
    for row in rows:
        if row["error"]:
            lines.append([row["model"], str(row["threads"]), row["isa"] or "-", "failed",
                          *["-"] * (len(TABLE_COLUMNS) - 4)])
            continue
        diff = row["output_max_rel_diff"]
        lines.append([row["model"], str(row["threads"]), row["isa"] or "-", format_ms(row["edge_median_ms"]),
                      format_ms(row["onnxruntime_median_ms"]), format_ratio(row["median_ratio"]), format_ratio(row["p90_ratio"]),
                      format_ratio(row["min_ratio"]),
                      _mib(row["edge_peak_memory_bytes"]), _mib(row["onnxruntime_peak_memory_bytes"]),
                      format_ratio(row["memory_ratio"]), f"{diff:.1e}" if diff is not None else "-"])
    return lines


def roofline_lines(rooflines: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in rooflines:
        if "error" in entry:
            isa = entry["requested_isa"]
            lines.append(f"roofline{f' [{isa}]' if isa else ''}: {entry['error']}")
            continue
        sizes = ", ".join(f"{g['m']}x{g['n']}x{g['k']} {g['gflops']:.1f}" for g in entry["gemm"])
        lines.append(f"roofline [{entry['isa']}, {entry['kernel']}]: FMA peak {entry['peak_gflops']:.1f} GFLOP/s, "
                     f"best GEMM {entry['best_gemm_gflops']:.1f} GFLOP/s = {100 * entry['best_ratio']:.1f}% "
                     f"of peak (m x n x k GFLOP/s: {sizes})")
    return lines


def print_table(rows: list[dict[str, Any]], rooflines: list[dict[str, Any]], title: str) -> None:
    lines = table_rows(rows)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c)
                  for i, c in enumerate(TABLE_COLUMNS)]
        print(title)
        print("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(TABLE_COLUMNS, widths))))
        for line in lines:
            print("  ".join(v.rjust(w) if i >= 3 else v.ljust(w) for i, (v, w) in enumerate(zip(line, widths))))
    else:
        table = Table(title=title)
        for i, column in enumerate(TABLE_COLUMNS):
            table.add_column(column, justify="right" if i >= 3 else "left")
        for line in lines:
            table.add_row(*line)
        console = Console()
        # Piped or redirected output would be cut at 80 columns.
        (console if console.is_terminal else Console(width=160)).print(table)
    for line in roofline_lines(rooflines):
        print(line)


def markdown_report(rows: list[dict[str, Any]], rooflines: list[dict[str, Any]], title: str, command: str) -> str:
    """The table and the roofline as Markdown, for benchmarks/README.md."""
    head = "| " + " | ".join(TABLE_COLUMNS) + " |\n|" + "|".join(
        " --- " if i < 3 else " ---: " for i in range(len(TABLE_COLUMNS))) + "|\n"
    table = head + "".join("| " + " | ".join(line) + " |\n" for line in table_rows(rows))
    roofline = "".join(f"\n{line}\n" for line in roofline_lines(rooflines))
    return f"{title}\n\n    {command}\n\n{table}{roofline}"


def draw_chart(rows: list[dict[str, Any]], title: str, path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    good = [row for row in rows if not row["error"]]
    labels = [f"{row['model']}\n{row['threads']}t" + (f" {row['isa']}" if row["isa"] else "") for row in good]
    positions = np.arange(len(good))
    width = 0.38
    figure, (latency, ratios, memory) = plt.subplots(3, 1, figsize=(max(8.0, 0.9 * len(good) + 3), 11))
    for offset, key, name in ((-width / 2, "onnxruntime", "onnxruntime"), (width / 2, "edge", "edge")):
        medians = [row[f"{key}_median_ms"] for row in good]
        p90s = [row[f"{key}_p90_ms"] for row in good]
        whiskers = [[0.0] * len(good), [max(0.0, p - m) for p, m in zip(p90s, medians)]]
        latency.bar(positions + offset, medians, width, yerr=whiskers, capsize=3, label=name)
        memory.bar(positions + offset, [row[f"{key}_peak_memory_bytes"] / 2**20 for row in good], width, label=name)
    latency.set_ylabel("median latency, ms (whisker: p90)")
    latency.set_yscale("log")
    latency.legend()
    latency.set_title(title)
    ratios.bar(positions - width / 2, [row["median_ratio"] for row in good], width, label="median")
    ratios.bar(positions + width / 2, [row["p90_ratio"] for row in good], width, label="p90")
    ratios.axhline(1.0, color="black", linewidth=1)
    ratios.axhline(0.8, color="gray", linewidth=1, linestyle="--")
    ratios.set_ylabel("edge / onnxruntime latency")
    ratios.set_yscale("log")
    ratios.legend()
    for axes in (latency, ratios):  # after set_yscale, which installs its own formatters
        axes.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axes.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axes.tick_params(axis="y", which="minor", labelsize=7)
    memory.set_ylabel("peak RSS growth, MiB")
    memory.legend()
    for axes in (latency, ratios, memory):
        axes.set_xticks(positions)
        axes.set_xticklabels(labels, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    environment = measurement_environment(args)
    machine = machine_info(environment)
    edge_isas: list[str | None] = list(args.isa) or [None]

    measurements: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_models-") as tmp:
        workdir = pathlib.Path(tmp)
        prepared = prepare_models(args.models, args.small, workdir)
        for name in args.models:
            for threads in args.threads:
                measurements += measure_model(prepared[name], threads, edge_isas, args, environment, workdir)
        rows = compare(measurements)
    for entry in measurements:
        entry.pop("outputs_file", None)

    rooflines = []
    if not args.no_roofline:
        if roofline_available():
            rooflines = [run_roofline(isa, args, environment) for isa in edge_isas]
        else:
            log("no roofline: cruntime/Makefile has no roofline target")

    stem = args.name or "models-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    title = (f"edge / onnxruntime, {machine['cpu_model']}, edge isa {machine['edge_isa']}, "
             f"{args.runs} runs, {machine['date'][:10]}")
    report = {
        "schema": SCHEMA,
        "command": "python3 -m benchmarks.bench_models " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"models": args.models, "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
                   "rounds": args.rounds,
                   "isa": args.isa, "library": [list(entry) for entry in args.library], "small": args.small,
                   "onnxruntime_options": {"intra_op_num_threads": "threads", "inter_op_num_threads": 1,
                                           "execution_mode": "ORT_SEQUENTIAL",
                                           "graph_optimization_level": "ORT_ENABLE_ALL"}},
        "machine": machine,
        "models": {name: prepared[name]["info"] for name in args.models},
        "measurements": measurements,
        "ratios": rows,
        "roofline": rooflines,
        "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "elapsed_s": time.perf_counter() - started,
    }
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print_table(rows, rooflines, title)
    markdown = markdown_report(rows, rooflines, title, report["command"])
    if args.markdown:
        print(markdown)
    markdown_path = args.out / f"{stem}.md"
    markdown_path.write_text(markdown, encoding="utf-8")
    print(f"wrote {json_path}")
    print(f"wrote {markdown_path}")
    if not args.no_chart:
        if importlib.util.find_spec("matplotlib") is None:
            log("no chart: matplotlib is not installed (pip install matplotlib)")
        else:
            chart_path = args.out / f"{stem}.png"
            draw_chart(rows, title, chart_path)
            print(f"wrote {chart_path}")
    failed = [m for m in measurements if "error" in m] + [r for r in rooflines if "error" in r]
    for entry in failed:
        log(f"failed: {entry.get('model', 'roofline')} {entry.get('runtime', '')} "
            f"threads={entry.get('threads', '-')}: {entry['error']}")
    differing = [r for r in rows if r["output_max_rel_diff"] is not None and not r["output_max_rel_diff"] <= OUTPUT_BOUND]
    for row in differing:
        log(f"outputs differ: {row['model']} threads={row['threads']}: {row['output_max_rel_diff']:.3g} of the "
            f"output's scale (bound {OUTPUT_BOUND:g}; inf: no output name or shape in common)")
    return 1 if failed or differing else 0


if __name__ == "__main__":
    sys.exit(main())

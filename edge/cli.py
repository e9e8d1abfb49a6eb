"""The `edge` command: one table of subcommands.

Host-only subcommands (convert, inspect) come from ``converter.cli`` and are imported only when
named on the command line, so a device install without onnx still runs ``edge run``. A lazily
imported ``add_*_parser(subparsers)`` adds its subparser and sets ``func`` (args -> exit code) as a
default, like the local ones below.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.errors import EdgeError, InvalidArgumentError

USAGE_ERROR = 2


class UsageError(Exception):
    def __init__(self, message: str, prog: str = "edge"):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of argparse's usage block
        raise UsageError(message, prog=self.prog)


def _resolve(target: str):
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _existing_file(path: str) -> str:
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    return path


def _load_array_file(path: str) -> dict[str, np.ndarray] | np.ndarray:
    _existing_file(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UsageError(f"{path}: not a .npy/.npz file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    return loaded


def _input_arrays(interpreter, specs: Sequence[str]) -> dict[int, np.ndarray]:
    """``--input`` values -> {tensor index: array}. ``x.npy`` fills the next unnamed input in order,
    ``name=x.npy`` the input called name, and an ``.npz`` fills inputs by its array names."""
    details = interpreter.get_input_details()
    by_name = {d["name"]: d["index"] for d in details}
    arrays: dict[int, np.ndarray] = {}
    positional: list[np.ndarray] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = "", spec
        loaded = _load_array_file(path)
        if isinstance(loaded, dict):
            if name:
                raise UsageError(f"--input {spec}: an .npz names its arrays itself; drop the '{name}=' prefix")
            entries = loaded.items()
        elif name:
            entries = [(name, loaded)]
        else:
            positional.append(loaded)
            continue
        for entry_name, array in entries:
            if entry_name not in by_name:
                raise UsageError(f"--input {spec}: the model has no input '{entry_name}' (inputs: {list(by_name)})")
            arrays[by_name[entry_name]] = array
    unnamed = [d["index"] for d in details if d["index"] not in arrays]
    if len(positional) > len(unnamed):
        raise UsageError(f"{len(positional)} unnamed --input files for {len(unnamed)} remaining inputs "
                         f"({[d['name'] for d in details if d['index'] in unnamed]})")
    arrays.update(zip(unnamed, positional))
    missing = [d["name"] for d in details if d["index"] not in arrays]
    if missing:
        raise UsageError(f"no --input for {missing}")
    return arrays


def _summary(array: np.ndarray) -> str:
    if array.size == 0:
        return "empty"
    if array.dtype.kind in "fiu":
        values = array.astype(np.float64)
        finite = np.isfinite(values)
        text = (f"min {values[finite].min():.6g} max {values[finite].max():.6g} "
                f"mean {values[finite].mean():.6g}") if finite.any() else "no finite values"
        if not finite.all():
            text += f", {int((~finite).sum())} non-finite"
    else:
        text = f"{int(np.count_nonzero(array))} of {array.size} true"
    flat = array.reshape(-1)
    head = np.array2string(flat[:6], precision=5, separator=", ")
    return f"{text}; first {head}{' ...' if flat.size > 6 else ''}"


def _kind(dtype: np.dtype) -> str:
    return {"u": "integer", "i": "integer", "f": "float", "b": "bool"}.get(dtype.kind, dtype.kind)


def _fit_dtype(details: dict, array: np.ndarray) -> np.ndarray:
    """.npy files are often float64/int64: convert within a kind when the values fit, refuse across kinds."""
    expected = np.dtype(details["dtype"])
    if array.dtype == expected:
        return array
    if _kind(array.dtype) != _kind(expected):
        raise InvalidArgumentError(f"input '{details['name']}': {array.dtype.name} data does not convert to the "
                                   f"model's {expected.name}")
    if expected.kind in "iu" and array.size:
        limits = np.iinfo(expected)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidArgumentError(f"input '{details['name']}': values in [{array.min()}, {array.max()}] do "
                                       f"not fit {expected.name}")
    return array.astype(expected)


def command_run(args) -> int:
    from edge.interpreter import Interpreter

    with Interpreter(model_path=_existing_file(args.model), num_threads=args.threads, backend=args.backend,
                     gpu_precision=args.gpu_precision) as interpreter:
        arrays = _input_arrays(interpreter, args.input)
        inputs = {d["index"]: d for d in interpreter.get_input_details()}
        for index, array in arrays.items():
            if array.shape != tuple(int(d) for d in inputs[index]["shape"]):
                interpreter.resize_tensor_input(index, array.shape)
        interpreter.allocate_tensors()
        for index, array in arrays.items():
            interpreter.set_tensor(index, _fit_dtype(inputs[index], array))
        interpreter.invoke()
        outputs = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    for name, value in outputs.items():
        print(f"{name}: {value.dtype.name}{list(value.shape)}  {_summary(value)}")
    if args.output:
        np.savez(args.output, **outputs)
        print(f"wrote {args.output}")
    return 0


def add_run_parser(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run a .edge model on .npy inputs",
                                   description="Run a .edge model once and print its outputs.")
    parser.add_argument("model", help="the .edge model")
    parser.add_argument("--input", action="append", default=[], metavar="[NAME=]FILE",
                        help="an input array (.npy; NAME= picks the input; an .npz fills inputs by name); repeat")
    parser.add_argument("--output", help="write the outputs to this .npz")
    parser.add_argument("--threads", type=_positive, default=1, help="threads per op (default 1)")
    _add_backend_arguments(parser)
    parser.set_defaults(func=command_run)


def _add_backend_arguments(parser) -> None:
    parser.add_argument("--backend", choices=("cpu", "opencl", "auto"), default="cpu",
                        help="where ops run: the CPU kernels (default), the OpenCL GPU backend with the CPU for "
                             "what it lacks, or auto (the GPU where it is expected to pay)")
    parser.add_argument("--gpu-precision", choices=("fp32", "fp16"), default="fp32",
                        help="activation storage on the GPU (arithmetic is fp32)")


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} B"


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value >= 0.1 else f"{value:.4g} ms"


def command_bench(args) -> int:
    from edge.bench import benchmark

    figures = benchmark(_existing_file(args.model), num_threads=args.threads, warmup=args.warmup, runs=args.runs,
                        seed=args.seed, backend=args.backend, gpu_precision=args.gpu_precision)
    on = "" if args.backend == "cpu" else \
        f", backend {args.backend} ({figures['gpu_ops']} of {figures['ops']} ops on the GPU)"
    print(f"{args.model}: {figures['runs']} runs after {figures['warmup']} warm-up, {figures['threads']} thread(s){on}")
    print(f"  latency  median {_ms(figures['median_ms'])}  p90 {_ms(figures['p90_ms'])}  "
          f"mean {_ms(figures['mean_ms'])}  min {_ms(figures['min_ms'])}")
    print(f"  memory   arena {_size(figures['arena_bytes'])} (naive {_size(figures['naive_bytes'])})  "
          f"persistent {_size(figures['persistent_bytes'])}  runtime peak {_size(figures['runtime_peak_bytes'])}  "
          f"process peak RSS growth {_size(figures['peak_rss_growth_bytes'])}")
    print(f"  model    {_size(figures['model_bytes'])}, loaded and allocated in {figures['load_ms']:.1f} ms")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)
        print(f"wrote {args.json}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_bench_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="latency and memory of a .edge model (random inputs)",
                                   description="Time runs over random inputs (set the inputs, invoke, read the outputs), "
                                               "like TFLite's benchmark_model, and the process's peak memory.")
    parser.add_argument("model", help="the .edge model")
    parser.add_argument("--threads", type=_positive, default=1, help="threads per op (default 1)")
    parser.add_argument("--warmup", type=_non_negative, default=5, help="untimed runs first (default 5)")
    parser.add_argument("--runs", type=_positive, default=50, help="timed runs (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    _add_backend_arguments(parser)
    parser.set_defaults(func=command_bench)


def _shape_text(shapes) -> str:
    # None: an optional output the model leaves out (an LSTM's final states, say).
    return " ".join("x".join(str(d) for d in shape) or "scalar" for shape in shapes if shape is not None)


def command_profile(args) -> int:
    from edge.bench import profile, save_profile_chart

    entries = profile(_existing_file(args.model), runs=args.runs, num_threads=args.threads, backend=args.backend,
                      gpu_precision=args.gpu_precision)
    total_ms = sum(entry["ms"] for entry in entries)
    print(f"{args.model}: {len(entries)} ops, {total_ms:.3f} ms per run (sum of op means over {args.runs} runs)")
    print(f"{'#':>5}  {'op':<20} {'output shape':<24} {'device':<6} {'ms':>10} {'share':>7} {'GFLOP/s':>9}")
    for entry in entries:
        gflops = f"{entry['gflops']:.2f}" if entry["gflops"] is not None else "-"
        print(f"{entry['index']:>5}  {entry['op']:<20} {_shape_text(entry['output_shapes']):<24} {entry['device']:<6} "
              f"{entry['ms']:>10.4f} {entry['share'] * 100:>6.1f}% {gflops:>9}")
    if args.chart:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            print("no chart: matplotlib is not installed (pip install 'edgesplit[bench]')", file=sys.stderr)
            return 0
        save_profile_chart(entries, args.chart)
        print(f"wrote {args.chart}")
    return 0


def add_profile_parser(subparsers) -> None:
    parser = subparsers.add_parser("profile", help="per-op times of a .edge model",
                                   description="Per-op mean times over several runs, slowest first.")
    parser.add_argument("model", help="the .edge model")
    parser.add_argument("--runs", type=_positive, default=10, help="profiled runs (default 10)")
    parser.add_argument("--threads", type=_positive, default=1, help="threads per op (default 1)")
    parser.add_argument("--chart", metavar="PNG", help="also draw a bar chart of the slowest ops (needs matplotlib)")
    _add_backend_arguments(parser)
    parser.set_defaults(func=command_profile)


def _training_arrays(path: str, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray]:
    loaded = _load_array_file(path)
    if not isinstance(loaded, dict) or x_key not in loaded or y_key not in loaded:
        names = list(loaded) if isinstance(loaded, dict) else "a single .npy array"
        raise UsageError(f"{path}: needs an .npz with arrays '{x_key}' and '{y_key}' (it has {names})")
    return loaded[x_key], loaded[y_key]


def command_train(args) -> int:
    from edge.trainer import Trainer

    x, y = _training_arrays(args.data, args.x_key, args.y_key)
    validation = _training_arrays(args.validation, args.x_key, args.y_key) if args.validation else None
    with Trainer(_existing_file(args.model), num_threads=args.threads) as trainer:
        if args.resume and args.checkpoint and os.path.exists(args.checkpoint):
            trainer.load_checkpoint(args.checkpoint)
            print(f"resumed from {args.checkpoint} ({trainer.epochs_trained} epochs trained)")
        if args.lr is not None:
            trainer.learning_rate = args.lr
        for epoch in range(args.epochs):
            trainer.fit(x, y, batch_size=args.batch_size, epochs=1, validation_data=validation,
                        seed=args.seed + trainer.epochs_trained, verbose=1)
            if args.checkpoint:
                trainer.save_checkpoint(args.checkpoint)
        if args.export:
            trainer.export(args.export)
            print(f"wrote {args.export}")
    return 0


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a trainable .edge model on .npz data",
                                   description="Train a model converted with --trainable, on the device's runtime.")
    parser.add_argument("model", help="the trainable .edge model (infer, grad and train signatures)")
    parser.add_argument("--data", required=True, help=".npz with the training inputs and labels")
    parser.add_argument("--validation", help=".npz with validation inputs and labels (metrics after each epoch)")
    parser.add_argument("--x-key", default="x", help="the inputs' array name in the .npz files (default x)")
    parser.add_argument("--y-key", default="y", help="the labels' array name in the .npz files (default y)")
    parser.add_argument("--epochs", type=_positive, default=1)
    parser.add_argument("--batch-size", type=_positive, help="default: the model's fixed batch, else 32")
    parser.add_argument("--lr", type=float, help="learning rate (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="shuffling seed")
    parser.add_argument("--threads", type=_positive, default=1, help="threads per op (default 1)")
    parser.add_argument("--checkpoint", help="save every variable here after each epoch (atomic)")
    parser.add_argument("--resume", action="store_true", help="start from --checkpoint when it exists")
    parser.add_argument("--export", metavar="OUT", help="write the model with the trained weights here at the end")
    parser.set_defaults(func=command_train)


def command_tune(args) -> int:
    from edge import opencl

    table = opencl.tune(_existing_file(args.model), precision=args.gpu_precision, device_index=args.device,
                        runs=args.runs, num_threads=args.threads)
    print(f"{args.model}: {len(table['ops'])} ops; CPU kernels ({args.threads} thread(s)) against OpenCL "
          f"({args.gpu_precision}), median op times over {args.runs} runs; link {table['link_bytes_per_s'] / 1e9:.2f} GB/s")
    if table.get("tiles"):
        print("GEMM tiles (ms of the kernel's ops per tile): " + "; ".join(
            f"{kernel} {tile}" + (" (" + ", ".join(f"{t}: {ms:.3f}" for t, ms in table["tiles"]["ms"][kernel].items())
                                  + ")" if kernel in table["tiles"]["ms"] else " (unused)")
            for kernel, tile in table["tiles"]["tiles"].items()) + f"; stored in {table['tiles']['path']}")
    print(f"{'#':>5}  {'op':<20} {'cpu ms':>9} {'gpu ms':>9}  placed")
    for i, op in enumerate(table["ops"]):
        gpu = f"{table['gpu_ms'][i]:9.4f}" if table["gpu_ms"][i] is not None else f"{'-':>9}"
        print(f"{i:>5}  {op:<20} {table['cpu_ms'][i]:9.4f} {gpu}  {table['devices'][i]}")
    on_gpu = table["devices"].count("gpu")
    print(f"placement: {on_gpu} of {len(table['ops'])} ops on the GPU, predicted {table['predicted_ms']:.3f} ms against "
          f"{table['all_cpu_ms']:.3f} ms all on the CPU")
    if "path" in table:
        print(f"stored in {table['path']}: Interpreter(backend='auto') follows it for this model and device")
    return 0


def add_tune_parser(subparsers) -> None:
    parser = subparsers.add_parser("tune", help="measure a model's ops on CPU and GPU and store the placement",
                                   description="Picks the device's GEMM tile sizes by timing the model's GEMM "
                                               "ops with each (stored per device), then times every op on the CPU "
                                               "kernels and on the OpenCL device, plans "
                                               "which run on the GPU (op times, copies where the device changes, a "
                                               "sync per change) and stores the plan for backend='auto'.")
    parser.add_argument("model", help="the .edge model")
    parser.add_argument("--gpu-precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--device", type=int, default=0, help="OpenCL device: 0 the first GPU, k the k-th listed")
    parser.add_argument("--runs", type=_positive, default=10, help="profiled runs per backend (default 10)")
    parser.add_argument("--threads", type=_positive, default=1, help="CPU threads per op (default 1)")
    parser.set_defaults(func=command_tune)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    # A function(subparsers), or "module:function" for a command imported only when it is used.
    add_parser: Callable | str
    # For lazy commands: "module:Exception" whose instances are user errors (printed, exit 2).
    user_errors: str | None = None
    # The extra that provides a lazy command's dependencies.
    extra: str | None = None


COMMANDS = [
    Command("convert", "convert an ONNX or TFLite model to .edge", "converter.cli:add_convert_parser",
            user_errors="converter.errors:ConversionError", extra="convert"),
    Command("inspect", "describe a .edge model", "converter.cli:add_inspect_parser",
            user_errors="converter.errors:ConversionError", extra="convert"),
    Command("run", "run a .edge model on .npy inputs", add_run_parser),
    Command("bench", "latency and memory of a .edge model", add_bench_parser),
    Command("tune", "place a model's ops on CPU and GPU by measured times", add_tune_parser),
    Command("profile", "per-op times of a .edge model", add_profile_parser),
    Command("train", "train a trainable .edge model", add_train_parser),
]


def _missing_extra(command: Command, error: ImportError) -> str:
    return f"edge {command.name} needs the host tools: pip install 'edgesplit[{command.extra}]' ({error})"


def _chosen_command(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, tuple[type[BaseException], ...]]:
    parser = _Parser(prog="edge",
                     description="edgesplit: convert, inspect, run, benchmark, profile and train .edge models.")
    parser.add_argument("--version", action="version", version="edgesplit 0.1.0")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_command(argv)
    user_errors: tuple[type[BaseException], ...] = ()
    for command in COMMANDS:
        if callable(command.add_parser):
            command.add_parser(subparsers)
        elif command.name == chosen:
            try:
                add_parser = _resolve(command.add_parser)
                if command.user_errors:
                    user_errors += (_resolve(command.user_errors),)
            except ImportError as error:
                raise UsageError(_missing_extra(command, error)) from None
            add_parser(subparsers)
        else:
            subparsers.add_parser(command.name, help=command.help, add_help=False)
    return parser, user_errors


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    user_errors: tuple[type[BaseException], ...] = ()
    try:
        parser, user_errors = build_parser(argv)
        args = parser.parse_args(argv)
        if not hasattr(args, "func"):
            raise UsageError(f"edge {args.command}: its parser set no handler")
        command = next(c for c in COMMANDS if c.name == args.command)
        try:
            return int(args.func(args) or 0)
        except ModuleNotFoundError as error:
            if command.extra is None:
                raise
            raise UsageError(_missing_extra(command, error)) from None
    except SystemExit as exit_:  # --help and --version
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else USAGE_ERROR)
    except (EdgeError, UsageError, OSError, ImportError) as error:
        _print_error(error)
        return USAGE_ERROR
    except Exception as error:
        if user_errors and isinstance(error, user_errors):
            _print_error(error, one_line=False)
            return USAGE_ERROR
        raise


def _print_error(error: BaseException, one_line: bool = True) -> None:
    message = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and error.strerror:
        message = f"{error.filename}: {error.strerror}"
    if one_line:
        message = " ".join(message.split("\n"))
    if isinstance(error, UsageError):
        print(f"{error.prog}: error: {message}", file=sys.stderr)
    else:
        print(f"edge: error: {type(error).__name__}: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

"""The ``convert`` and ``inspect`` subcommands.

``edge`` (edge/cli.py) registers them with ``add_convert_parser`` / ``add_inspect_parser``;
``python -m converter.cli`` runs them standalone. Errors print one message to stderr and exit 2,
never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys

from converter.errors import ConversionError, UnsupportedOpsError

EXIT_USAGE_OR_MODEL_ERROR = 2


def _parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=D0,D1,..., got {text!r}")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"dims of {name!r} must be integers, got {dims!r}") from None
    return name, shape


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE_OR_MODEL_ERROR


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (or HxW), got {text!r}") from None
    return height, width


def _add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("quantization")
    group.add_argument("--quantize", choices=("fp16", "dynamic", "int8"),
                       help="fp16: float16 weights; dynamic: int8 weights, float activations; "
                            "int8: full integer (needs --calibration)")
    group.add_argument("--calibration", metavar="DATA",
                       help="representative inputs: .npy (one input), .npz (keyed by input name) or a "
                            "folder of images (see --image-*)")
    group.add_argument("--calibration-method", choices=("minmax", "percentile", "mse", "auto"), default="minmax",
                       help="how activation ranges are chosen (default minmax; auto: per tensor, the "
                            "method with the smallest quantization error)")
    group.add_argument("--keep-float", nargs="+", default=[], metavar="NAME",
                       help="node or tensor names whose ops stay float32 (see the per-layer report)")
    group.add_argument("--image-size", type=_size, metavar="H,W", help="resize images to H,W (default: the input's)")
    group.add_argument("--image-mean", type=_floats, default=(0.0,), metavar="M[,M,M]",
                       help="subtracted after dividing pixels by --image-scale")
    group.add_argument("--image-std", type=_floats, default=(1.0,), metavar="S[,S,S]", help="divides after the mean")
    group.add_argument("--image-scale", type=float, default=255.0, help="pixels are divided by this first (255)")
    group.add_argument("--image-layout", choices=("NCHW", "NHWC"), help="default: guessed from the input shape")
    group.add_argument("--image-channels", choices=("RGB", "BGR"), default="RGB", help="channel order (RGB)")


def _quantize_options(args: argparse.Namespace) -> dict:
    if getattr(args, "quantize", None) is None:
        if getattr(args, "calibration", None) or getattr(args, "keep_float", None):
            raise ConversionError("--calibration and --keep-float need --quantize")
        return {}
    preprocessing = None
    if args.calibration and os.path.isdir(args.calibration):
        from converter.quantize import ImagePreprocessing

        preprocessing = ImagePreprocessing(size=args.image_size, mean=args.image_mean, std=args.image_std,
                                           layout=args.image_layout, channel_order=args.image_channels,
                                           scale=args.image_scale)
    return {"quantize": args.quantize, "calibration": args.calibration,
            "calibration_method": args.calibration_method, "keep_float": tuple(args.keep_float),
            "image_preprocessing": preprocessing, "progress": sys.stderr.isatty()}


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--trainable", action="store_true",
                       help="add grad and train signatures (autodiff) next to infer")
    group.add_argument("--freeze", nargs="+", action="extend", default=[], metavar="PREFIX",
                       help="parameters whose names start with PREFIX stay constant")
    group.add_argument("--loss", choices=("cross_entropy", "bce", "mse"), default="cross_entropy",
                       help="the loss the grad/train signatures compute (default cross_entropy)")
    group.add_argument("--optimizer", choices=("sgd", "momentum", "adam", "adamw", "adagrad"), default="sgd",
                       help="the update the train signature applies (default sgd)")
    group.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (a variable; default 1e-3)")
    group.add_argument("--momentum", type=float, default=0.9, help="momentum optimizer's factor (0.9)")
    group.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    group.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay (decoupled for adamw)")
    group.add_argument("--clip-norm", type=float, help="clip the gradients' global L2 norm to this")


def _training_options(args: argparse.Namespace) -> dict:
    if not getattr(args, "trainable", False):
        if getattr(args, "freeze", None):
            raise ConversionError("--freeze needs --trainable")
        return {}
    if getattr(args, "quantize", None) is not None:
        raise ConversionError(f"--trainable cannot be combined with --quantize {args.quantize}: training "
                              f"updates float32 weights; quantize the exported model instead")
    from converter.autodiff import TrainingConfig

    return {"training": TrainingConfig(
        loss=args.loss, optimizer=args.optimizer, lr=args.lr, freeze=tuple(args.freeze),
        momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
        clip_norm=args.clip_norm)}


def run_convert(args: argparse.Namespace) -> int:
    from converter.api import convert
    from converter.report import print_report

    output = args.output or os.path.splitext(args.model)[0] + ".edge"
    try:
        result = convert(args.model, None, input_shapes=dict(args.input_shape or []),
                         optimize=not args.no_optimize, **_quantize_options(args),
                         **_training_options(args))
    except UnsupportedOpsError as exc:
        return _fail(f"{args.model}: nothing written. {exc}")
    except ConversionError as exc:
        return _fail(f"{args.model}: {exc}")
    except OSError as exc:
        return _fail(f"{args.model}: {exc.strerror or exc}")
    try:
        result.save(output)
    except OSError as exc:
        return _fail(f"cannot write {output}: {exc.strerror or exc}")
    print_report(result.report, title=f"{args.model} -> {output}")
    return 0


def _shape_text(graph, names) -> str:
    return ", ".join("x".join(str(d) for d in graph.tensors[n].shape) or "scalar" for n in names if n)


def _source_text(metadata) -> str:
    """Where the model came from, as its importer recorded it in the file's metadata."""
    source = metadata.get("source", "-")
    if source == "onnx":
        return "ONNX" + (f" (opset {metadata['onnx_opset']})" if "onnx_opset" in metadata else "")
    if source == "tflite":
        return "TFLite" + (f" (schema v{metadata['tflite_schema_version']})"
                           if "tflite_schema_version" in metadata else "")
    return source


def _print_inspect(info, path: str) -> None:
    from converter.ops._common import conv_residual
    from converter.report import human_bytes

    graph = info.graph
    lines = [
        f"{path}: .edge schema v{info.version}, needs runtime >= {info.min_runtime_version}",
        f"producer: {info.producer or '-'}" + (f"; {info.description}" if info.description else ""),
        f"source: {_source_text(info.metadata)}",
        "metadata: " + ", ".join(f"{k}={v}" for k, v in info.metadata.items()),
        f"tensors: {len(graph.tensors)} ({len(graph.constants)} constant, {len(graph.variables)} variable); "
        f"weights {human_bytes(info.buffer_bytes)}; file {human_bytes(info.file_bytes)}",
        "inputs: " + ", ".join(f"{n} {graph.tensors[n].dtype}[{_shape_text(graph, [n])}]"
                               + (f" (dynamic axes {list(graph.dynamic_dims[n])})" if graph.dynamic_dims.get(n) else "")
                               for n in graph.inputs),
        "outputs: " + ", ".join(f"{n} {graph.tensors[n].dtype}[{_shape_text(graph, [n])}]" for n in graph.outputs),
    ]
    rows = []
    for op_info, node in zip(info.operators, graph.nodes):
        activations = [i for i in node.inputs if i and i not in graph.constants]
        residual = op_info.op == "Conv2D" and conv_residual(node)
        op = (op_info.op + ("+Add" if residual else "")
              + (f"+{node.attrs['activation'][0]}" if node.attrs.get("activation") else ""))
        rows.append((str(op_info.index), op, _shape_text(graph, activations),
                     _shape_text(graph, node.outputs), f"{op_info.flops:,}"))
    signatures = graph.signatures or {"infer": None}
    sig_lines = []
    for key, sig in signatures.items():
        if sig is None:
            sig_lines.append(f"  {key}: ({', '.join(graph.inputs)}) -> ({', '.join(graph.outputs)})")
        else:
            sig_lines.append(f"  {key}: ({', '.join(sig.inputs)}) -> ({', '.join(sig.outputs)})"
                             + ("" if sig.nodes is None else f" [{len(sig.nodes)} ops]"))
    total_flops = sum(o.flops for o in info.operators)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    if Console is None:
        print("\n".join(lines))
        header = ("#", "op", "inputs", "outputs", "flops")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(5)]
        for row in [header] + rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    else:
        console = Console(highlight=False, soft_wrap=True)
        for line in lines:
            console.print(line, markup=False)
        table = Table(show_edge=False)
        for column, justify in (("#", "right"), ("op", "left"), ("inputs", "left"),
                                ("outputs", "left"), ("flops", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    print(f"ops: {len(rows)}, total flops {total_flops:,}")
    print("signatures:")
    print("\n".join(sig_lines))


def run_inspect(args: argparse.Namespace) -> int:
    from converter.reader import read_model_info

    try:
        with open(args.model, "rb") as f:
            data = f.read()
    except OSError as exc:
        return _fail(f"{args.model}: {exc.strerror or exc}")
    try:
        info = read_model_info(data)
    except ConversionError as exc:
        return _fail(f"{args.model}: {str(exc).splitlines()[0]}")
    _print_inspect(info, args.model)
    if args.placement:
        return _print_placement(data, args.placement, args.gpu_precision)
    return 0


def _print_placement(data: bytes, backend: str, precision: str) -> int:
    """Each op's device under ``backend`` (the runtime decides at allocate), the partitions and the
    tensors copied between them on one run."""
    import numpy as np

    import edge
    from edge.bench import random_inputs
    from edge.measure import invoke_with

    try:
        with edge.Interpreter(model_content=data, backend=backend, gpu_precision=precision) as interpreter:
            interpreter.allocate_tensors()
            invoke_with(interpreter, random_inputs(interpreter, np.random.default_rng(0)),
                        [d["index"] for d in interpreter.get_output_details()])
            placement = interpreter.placement()
            ops = interpreter.op_details()
    except edge.EdgeError as exc:
        return _fail(f"placement ({backend}): {exc}")
    devices = placement["devices"]
    print(f"\nplacement ({backend}, {precision} on the GPU): {devices.count('gpu')} of {len(devices)} ops on the GPU")
    for part in placement["partitions"]:
        names = sorted({ops[i]["op"] for i in range(part["first_op"], part["last_op"] + 1)})
        print(f"  ops {part['first_op']}-{part['last_op']} on the {part['device'].upper()}: {', '.join(names)}")
    t = placement["transfers"]
    print(f"  one run: {t['uploads']} uploads ({t['upload_bytes']} bytes), {t['downloads']} downloads "
          f"({t['download_bytes']} bytes), {t['launches']} kernel launches")
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert an ONNX or TFLite model to .edge",
                                   description="Convert an ONNX or TFLite model to a .edge file (the format "
                                               "is told by the file's contents, not its extension).")
    parser.add_argument("model", help="ONNX or TFLite model file")
    parser.add_argument("-o", "--output", help="output .edge path (default: MODEL with .edge)")
    parser.add_argument("--input-shape", action="append", type=_parse_input_shape, metavar="NAME=D0,D1,...",
                        help="an ONNX input's shape (repeatable), e.g. input=1,3,224,224; a dim the model "
                             "declares dynamic then runs at any size up to the one given (a TFLite model's "
                             "shapes are fixed)")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip the optimization passes (layout conversion still required to write)")
    _add_quantize_arguments(parser)
    _add_training_arguments(parser)
    parser.set_defaults(func=run_convert)
    return parser


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("inspect", help="print a .edge model's contents",
                                   description="Print a .edge model: tensors, ops, signatures, sizes.")
    parser.add_argument("model", help=".edge file")
    parser.add_argument("--placement", choices=("opencl", "auto", "cpu"),
                        help="also run it once with this backend and show where each op ran")
    parser.add_argument("--gpu-precision", choices=("fp32", "fp16"), default="fp32",
                        help="activation storage on the GPU for --placement")
    parser.set_defaults(func=run_inspect)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m converter.cli")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_convert_parser(subparsers)
    add_inspect_parser(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

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


def run_convert(args: argparse.Namespace) -> int:
    from converter.api import convert
    from converter.report import print_report

    output = args.output or os.path.splitext(args.model)[0] + ".edge"
    try:
        result = convert(args.model, None, input_shapes=dict(args.input_shape or []),
                         optimize=not args.no_optimize)
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


def _print_inspect(info, path: str) -> None:
    from converter.report import human_bytes

    graph = info.graph
    lines = [
        f"{path}: .edge schema v{info.version}, needs runtime >= {info.min_runtime_version}",
        f"producer: {info.producer or '-'}" + (f"; {info.description}" if info.description else ""),
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
        op = op_info.op + (f"+{node.attrs['activation'][0]}" if node.attrs.get("activation") else "")
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
    return 0


def add_convert_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert an ONNX model to .edge",
                                   description="Convert an ONNX model to a .edge file.")
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("-o", "--output", help="output .edge path (default: MODEL with .edge)")
    parser.add_argument("--input-shape", action="append", type=_parse_input_shape, metavar="NAME=D0,D1,...",
                        help="fix an input's shape (repeatable), e.g. input=1,3,224,224")
    parser.add_argument("--no-optimize", action="store_true",
                        help="skip the optimization passes (layout conversion still required to write)")
    parser.set_defaults(func=run_convert)
    return parser


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("inspect", help="print a .edge model's contents",
                                   description="Print a .edge model: tensors, ops, signatures, sizes.")
    parser.add_argument("model", help=".edge file")
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

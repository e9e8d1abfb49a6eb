"""The ``cloudsplit`` command: one table of subcommands.

``plan`` (here) needs only ``edge``; ``serve`` comes from ``cloudsplit.server`` and ``train`` from
``cloudsplit.train_cli``, each imported only when named on the command line, so ``cloudsplit plan``
works without grpc (or Ray) installed.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import re
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from edge.errors import EdgeError

USAGE_ERROR = 2


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


_BIT_UNITS = {"": 1.0, "bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "bps": 1.0, "kbps": 1e3, "mbps": 1e6,
              "gbps": 1e9}
_TIME_UNITS = {"": 1e-3, "ms": 1e-3, "s": 1.0, "us": 1e-6}
_BYTE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "kib": 1024, "mib": 1024 ** 2,
               "gib": 1024 ** 3}


def _quantity(text: str, units: dict[str, float], what: str, example: str) -> float:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)\s*([a-z]*)(?:/s)?\s*", text.lower())
    if not match or match.group(2) not in units:
        raise argparse.ArgumentTypeError(f"{what} {text!r}: expected a number with a unit like {example} "
                                         f"(units: {', '.join(u for u in units if u)})")
    return float(match.group(1)) * units[match.group(2)]


def parse_bandwidth(text: str) -> float:
    """'10mbit', '1.5Mbit/s', '500kbit', '2gbit' -> bit/s (a bare number is bit/s)."""
    value = _quantity(text, _BIT_UNITS, "bandwidth", "10mbit")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"bandwidth {text!r} must be > 0")
    return value


def parse_duration(text: str) -> float:
    """'40ms', '0.1s', '40' (ms) -> seconds."""
    return _quantity(text, _TIME_UNITS, "duration", "40ms")


def parse_bytes(text: str) -> int:
    """'2MB', '512KiB', '100000' -> bytes."""
    return int(_quantity(text, _BYTE_UNITS, "size", "2MB"))


def _format_rate(bps: float) -> str:
    if bps >= 1e9:
        return f"{bps / 1e9:.4g} Gbit/s"
    return f"{bps / 1e6:.4g} Mbit/s" if bps >= 1e6 else f"{bps / 1e3:.4g} kbit/s"


def _format_bytes(count: int) -> str:
    for unit, size in (("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} B"


def add_plan_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan", help="where each op of a model should run for a given network",
        description="Measures each op's time on this machine (cached per model and thread count), predicts "
                    "the server's times as the local ones divided by --server-speedup (no server is "
                    "consulted), and prints the partitioner's plan and its predicted time breakdown.")
    parser.add_argument("model", help=".edge model file")
    parser.add_argument("--bandwidth", type=parse_bandwidth, help="uplink and downlink bandwidth, e.g. 10mbit")
    parser.add_argument("--uplink", type=parse_bandwidth, help="uplink bandwidth (overrides --bandwidth)")
    parser.add_argument("--downlink", type=parse_bandwidth, help="downlink bandwidth (overrides --bandwidth)")
    parser.add_argument("--rtt", type=parse_duration, help="round-trip time, e.g. 40ms")
    parser.add_argument("--profile", choices=sorted(_profiles()),
                        help="a network profile (bandwidths, RTT and radio model); explicit flags override it")
    parser.add_argument("--server-speedup", type=float, default=4.0,
                        help="server op time = measured local op time / this factor (default 4)")
    parser.add_argument("--server-load", type=float, default=1.0, help="server load factor (multiplies server times)")
    parser.add_argument("--threads", type=int, default=1, help="threads used to measure the device times")
    parser.add_argument("--objective", choices=("latency", "energy"), default="latency")
    parser.add_argument("--radio", choices=("3g", "4g", "wifi"), help="radio power model for --objective energy "
                                                                       "(default: the profile's, else wifi)")
    parser.add_argument("--compression", choices=("none", "fp16", "int8", "int8-per-tensor"), default="none",
                        help="cut-tensor compression when counting bytes on the wire (default none)")
    parser.add_argument("--pin", type=int, action="append", default=[], metavar="OP",
                        help="keep this op (and everything before it) on the device; repeatable")
    parser.add_argument("--memory-limit", type=parse_bytes,
                        help="device activation memory limit, e.g. 2MB (with --stages: per worker)")
    parser.add_argument("--runs", type=int, default=5, help="profiled runs per op (median taken)")
    parser.add_argument("--cache-dir", help="cost cache (default $EDGESPLIT_COST_CACHE or ~/.cache/edgesplit/costs)")
    parser.add_argument("--refresh", action="store_true", help="measure again even when cached")
    parser.add_argument("--sweep", action="store_true",
                        help="plan for bandwidths from 0.1 to 1000 Mbit/s (uplink = downlink) at the given RTT")
    parser.add_argument("--chart", help="with --sweep: write a PNG of the chosen cut and predicted latency; "
                                        "with --stages: of the stages' times and memory")
    parser.add_argument("--ops", action="store_true", help="list every op with its placement and times")
    stages = parser.add_argument_group(
        "pipeline stages", "with --stages K: cut the model into K contiguous stages across K workers (model "
        "parallelism) instead of device and server; worker op time = local time / --server-speedup, "
        "--memory-limit is per worker (weights, optimizer state and activations), --bandwidth the link "
        "between workers (default 10gbit)")
    stages.add_argument("--stages", type=int, help="number of pipeline stages (workers)")
    stages.add_argument("--training", action="store_true",
                        help="stages train: backward time, gradients sent back, gradients and optimizer state kept")
    stages.add_argument("--backward-factor", type=float, default=2.0,
                        help="backward time = forward time x this (default 2)")
    stages.add_argument("--optimizer-slots", type=int, default=2,
                        help="optimizer state per weight, in weights (default 2: Adam)")
    stages.add_argument("--micro-batches", type=int, default=8,
                        help="micro-batches per batch for the pipeline estimate and activations in flight "
                             "(GPipe; default 8)")
    stages.add_argument("--recompute", action="store_true",
                        help="keep only each stage's received activations; recompute the rest in backward")
    parser.set_defaults(func=plan_command)
    return parser


def _profiles():
    from cloudsplit.netem import PROFILES

    return PROFILES


def _network(args):
    from cloudsplit.partition import Network

    profile = _profiles()[args.profile] if args.profile else None
    uplink = args.uplink or args.bandwidth or (profile.uplink_bps if profile else None)
    downlink = args.downlink or args.bandwidth or (profile.downlink_bps if profile else None)
    if args.sweep and uplink is None and downlink is None:
        uplink = downlink = 1e6  # replaced by each bandwidth of the sweep
    if uplink is None or downlink is None:
        raise UsageError("cloudsplit plan: give --bandwidth (or --uplink and --downlink) or --profile")
    rtt = args.rtt if args.rtt is not None else (profile.rtt_s if profile else None)
    if rtt is None:
        raise UsageError("cloudsplit plan: give --rtt (e.g. 40ms) or --profile")
    return Network(uplink_bps=uplink, downlink_bps=downlink, rtt_s=rtt, name=args.profile or "")


def _describe_breakdown(b) -> str:
    return (f"device {b.device_ms:.2f} ms + upload {b.upload_ms:.2f} ms + server {b.server_ms:.2f} ms + "
            f"download {b.download_ms:.2f} ms + RTT {b.rtt_ms:.1f} ms = {b.total_ms:.2f} ms; "
            f"sent {_format_bytes(b.upload_bytes)} up, {_format_bytes(b.download_bytes)} down; "
            f"device energy {b.device_energy_mj:.2f} mJ")


def plan_command(args) -> int:
    from cloudsplit import partition

    if args.server_speedup <= 0 or args.threads < 1 or args.runs < 1:
        raise UsageError("cloudsplit plan: --server-speedup must be > 0, --threads and --runs >= 1")
    if args.stages is not None:
        return _stages_command(args)
    if args.chart and not args.sweep:
        raise UsageError("cloudsplit plan: --chart needs --sweep")
    network = _network(args)
    data, model_costs, details = _measured_costs(args)
    device_ms = [op.device_ms for op in model_costs.ops]
    ops = model_costs.ops
    wire = _wire_bytes(args, details)

    def wire_down(t: int) -> int:
        # SplitRunner's replies come back uncompressed unless it is told otherwise.
        return int(details[t]["nbytes"])

    radio = args.radio or (args.profile if args.profile else "wifi")
    options = dict(wire_bytes=wire, download_wire_bytes=wire_down, pinned_device_ops=args.pin, device_memory_limit=args.memory_limit,
                   server_load=args.server_load, objective=args.objective, radio=radio)
    try:
        plan = partition.solve(model_costs, network, **options)
    except ValueError as error:
        raise UsageError(f"cloudsplit plan: {error}") from None

    digest = hashlib.sha256(data).hexdigest()
    print(f"model: {args.model} (sha256 {digest[:12]}), {len(ops)} ops, "
          f"{'one topological order' if partition.OpGraph(model_costs).is_chain() else 'a DAG'}")
    print(f"device: measured here, {args.threads} thread(s), median of {args.runs} runs: "
          f"{sum(device_ms):.2f} ms in all")
    print(f"server: local times / {args.server_speedup:g} (--server-speedup; no server consulted), "
          f"load x{args.server_load:g}")
    print(f"network: up {_format_rate(network.uplink_bps)}, down {_format_rate(network.downlink_bps)}, "
          f"RTT {network.rtt_ms:.1f} ms; objective {args.objective}"
          + (f" (radio {radio})" if args.objective == "energy" else "") + f"; compression {args.compression}")
    if args.sweep:
        return _sweep(args, model_costs, network, options)
    print(f"plan: {plan.kind} ({plan.method}), {len(plan.device_ops)} ops on the device, "
          f"{len(plan.server_ops)} on the server; device peak activations {_format_bytes(plan.device_peak_bytes)}")
    if args.ops:
        where = plan.placement
        print(f"  {'op':>4} {'name':<22} {'where':<7} {'device ms':>10} {'server ms':>10}")
        for op in ops:
            print(f"  {op.index:>4} {op.name:<22} {where[op.index]:<7} {op.device_ms:>10.3f} "
                  f"{op.server_ms * args.server_load:>10.3f}")
    elif plan.kind == "split":
        print(f"  device ops: {_ranges(plan.device_ops)}; server ops: {_ranges(plan.server_ops)}")
    if plan.upload:
        print("sent up:")
        for t in plan.upload:
            d = details[t]
            print(f"  tensor {t} '{d['name']}' {list(int(x) for x in d['shape'])} {np.dtype(d['dtype']).name}: "
                  f"{wire(t)} bytes on the wire ({d['nbytes']} raw)")
    if plan.download:
        print("sent down: " + ", ".join(f"tensor {t} '{details[t]['name']}' ({wire_down(t)} bytes)" for t in plan.download))
    print("predicted: " + _describe_breakdown(plan.predicted))
    evaluate = _evaluator(model_costs, network, options)
    print(f"compare: all-device {evaluate(range(len(ops))).total_ms:.2f} ms, "
          f"all-server {evaluate(()).total_ms:.2f} ms")
    return 0


def _measured_costs(args):
    """The model's bytes, its ModelCosts (op times measured here, cached per model and thread count;
    server or worker times = those / --server-speedup) and its tensor details."""
    import edge
    from cloudsplit import costs

    with open(args.model, "rb") as f:
        data = f.read()
    local_ms = costs.cached_op_ms(data, args.threads, runs=args.runs, cache_dir=args.cache_dir, refresh=args.refresh)
    server_ms = [ms / args.server_speedup for ms in local_ms]
    with edge.Interpreter(model_content=data, num_threads=args.threads) as interpreter:
        interpreter.allocate_tensors()
        model_costs = costs.costs_from_interpreter(interpreter, local_ms, server_ms)
        details = interpreter.get_tensor_details()
    return data, model_costs, details


def _wire_bytes(args, details) -> Callable[[int], int]:
    """A tensor's bytes on the wire under --compression."""
    from cloudsplit import compression

    def wire(t: int) -> int:
        d = details[t]
        return compression.wire_bytes(args.compression, d["dtype"], tuple(int(v) for v in d["shape"]))

    return wire


def _stages_command(args) -> int:
    from cloudsplit import partition

    if args.stages < 1 or args.micro_batches < 1 or args.backward_factor < 0 or args.optimizer_slots < 0:
        raise UsageError("cloudsplit plan: --stages and --micro-batches must be >= 1, --backward-factor and "
                         "--optimizer-slots >= 0")
    if args.sweep:
        raise UsageError("cloudsplit plan: --sweep plans device and server; it does not combine with --stages")
    link = args.bandwidth or 10e9
    data, model_costs, details = _measured_costs(args)
    wire = _wire_bytes(args, details)

    try:
        plan = partition.solve_stages(model_costs, args.stages, link_bps=link, memory_limit=args.memory_limit,
                                      training=args.training, backward_factor=args.backward_factor,
                                      optimizer_slots=args.optimizer_slots, activation_copies=args.micro_batches,
                                      recompute=args.recompute, wire_bytes=wire)
    except ValueError as error:
        raise UsageError(f"cloudsplit plan: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    print(f"model: {args.model} (sha256 {digest[:12]}), {len(model_costs.ops)} ops; {plan.method}")
    print(f"workers: local times / {args.server_speedup:g} (measured here, {args.threads} thread(s)), "
          f"link {_format_rate(link)}, compression {args.compression}; "
          f"{'training' if args.training else 'inference'}, {args.micro_batches} micro-batches"
          + (", recompute" if args.recompute else ""))
    print(f"  {'stage':>5} {'ops':<12} {'compute ms':>10} {'send ms':>8} {'time ms':>8} {'sends':>10} "
          f"{'weights':>10} {'memory':>10}")
    for s, stage in enumerate(plan.stages):
        print(f"  {s:>5} {_ranges(stage.ops):<12} {stage.compute_ms:>10.3f} {stage.send_ms:>8.3f} "
              f"{stage.time_ms:>8.3f} {_format_bytes(stage.send_forward_bytes):>10} "
              f"{_format_bytes(stage.weight_bytes):>10} {_format_bytes(stage.memory_bytes):>10}")
    for s, stage in enumerate(plan.stages[:-1]):
        crossing = partition.cut_tensors(model_costs, stage.ops[-1] + 1)
        print(f"  cut {s}: " + ", ".join(repr(details[t]["name"]) for t in crossing))
    one = sum(op.server_ms for op in model_costs.ops) * ((1 + args.backward_factor) if args.training else 1)
    m = args.micro_batches
    print(f"slowest stage {plan.bottleneck_ms:.3f} ms per micro-batch; a batch of {m}: "
          f"{plan.pipeline_ms(m):.2f} ms pipelined (bubble {plan.bubble_fraction(m):.0%}) against "
          f"{one * m:.2f} ms on one worker")
    if args.chart:
        _stages_chart(args, plan)
        print(f"chart: {args.chart}")
    return 0


def _stages_chart(args, plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = range(len(plan.stages))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.bar(index, [s.compute_ms for s in plan.stages], label="compute")
    top.bar(index, [s.send_ms for s in plan.stages], bottom=[s.compute_ms for s in plan.stages], label="send")
    top.axhline(plan.bottleneck_ms, linestyle=":", color="grey")
    top.set_ylabel("ms per micro-batch")
    top.legend()
    top.set_title(f"{args.model}: {len(plan.stages)} stages ({'training' if plan.training else 'inference'})")
    bottom.bar(index, [s.memory_bytes / 1e6 for s in plan.stages])
    if args.memory_limit:
        bottom.axhline(args.memory_limit / 1e6, linestyle="--", color="red", label="limit")
        bottom.legend()
    bottom.set_ylabel("memory (MB)")
    bottom.set_xticks(list(index), [f"{s}\nops {_ranges(st.ops)}" for s, st in enumerate(plan.stages)])
    fig.tight_layout()
    fig.savefig(args.chart, dpi=120)
    plt.close(fig)


def _evaluator(model_costs, network, options) -> Callable:
    from cloudsplit import partition

    keep = {k: options[k] for k in ("wire_bytes", "download_wire_bytes", "server_load", "radio")}
    return lambda device, net=network: partition.evaluate(model_costs, net, device, **keep)


def _ranges(ops: Sequence[int]) -> str:
    parts, start = [], None
    for i, op in enumerate(ops):
        if start is None:
            start = op
        if i + 1 == len(ops) or ops[i + 1] != op + 1:
            parts.append(f"{start}" if start == op else f"{start}-{op}")
            start = None
    return ", ".join(parts) or "none"


def _sweep(args, model_costs, network, options) -> int:
    from dataclasses import replace

    from cloudsplit import partition

    bandwidths = np.logspace(-1, 3, 25) * 1e6
    evaluate = _evaluator(model_costs, network, options)
    n = len(model_costs.ops)
    rows = []
    print(f"{'Mbit/s':>9} {'plan':<7} {'device ops':>10} {'sent up':>10} {'predicted ms':>13} {'all-device':>11} "
          f"{'all-server':>11}")
    for bps in bandwidths:
        net = replace(network, uplink_bps=bps, downlink_bps=bps)
        plan = partition.solve(model_costs, net, **options)
        device_all, server_all = evaluate(range(n), net).total_ms, evaluate((), net).total_ms
        rows.append((bps, plan, device_all, server_all))
        print(f"{bps / 1e6:>9.3g} {plan.kind:<7} {len(plan.device_ops):>10} {_format_bytes(plan.predicted.upload_bytes):>10} "
              f"{plan.predicted.total_ms:>13.2f} {device_all:>11.2f} {server_all:>11.2f}")
    if args.chart:
        _sweep_chart(args, rows, n, network)
        print(f"chart: {args.chart}")
    return 0


def _sweep_chart(args, rows, n, network) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mbit = [bps / 1e6 for bps, *_ in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(mbit, [plan.predicted.total_ms for _, plan, *_ in rows], "o-", label="partitioner's plan")
    top.plot(mbit, [r[2] for r in rows], "--", label="all on device")
    top.plot(mbit, [r[3] for r in rows], ":", label="all on server")
    top.set_xscale("log")
    top.set_yscale("log")
    top.set_ylabel("predicted latency (ms)")
    top.legend()
    top.set_title(f"{args.model}: RTT {network.rtt_ms:.0f} ms, server = local / {args.server_speedup:g}")
    bottom.step(mbit, [len(plan.device_ops) for _, plan, *_ in rows], where="mid")
    bottom.set_ylim(-0.5, n + 0.5)
    bottom.set_ylabel(f"ops on the device (of {n})")
    bottom.set_xlabel("uplink = downlink bandwidth (Mbit/s)")
    fig.tight_layout()
    fig.savefig(args.chart, dpi=120)
    plt.close(fig)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_parser: Callable | str   # a function(subparsers), or "module:function" imported only when chosen
    extra: str | None = None     # the pip extra a lazy command needs


COMMANDS = [
    Command("plan", "where each op of a model should run for a given network", add_plan_parser),
    Command("serve", "serve .edge models for split inference over gRPC", "cloudsplit.server:add_serve_parser",
            extra="split"),
    Command("train", "train a model with replicas and parameter servers (here, or on a server)",
            "cloudsplit.train_cli:add_train_parser", extra="split"),
]


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = _Parser(prog="cloudsplit", description="Split inference between a device and a server.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for command in COMMANDS:
        if callable(command.add_parser):
            command.add_parser(subparsers)
        elif command.name == chosen:
            module, _, attribute = command.add_parser.partition(":")
            try:
                add_parser = getattr(importlib.import_module(module), attribute)
            except ImportError as error:
                raise UsageError(f"cloudsplit {command.name} needs: pip install 'edgesplit[{command.extra}]' "
                                 f"({error})") from None
            add_parser(subparsers)
        else:
            subparsers.add_parser(command.name, help=command.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else USAGE_ERROR)
    except (UsageError, EdgeError, OSError) as error:
        message = f"{error.filename}: {error.strerror}" if isinstance(error, OSError) and error.filename else str(error)
        print(f"cloudsplit: error: {message}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    # Through the package, not this __main__ copy: subcommand modules raise cloudsplit.cli.UsageError.
    from cloudsplit.cli import main as package_main

    sys.exit(package_main())

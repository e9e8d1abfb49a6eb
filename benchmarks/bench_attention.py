"""The fused Attention op against the unfused graph it replaces, in one process, interleaved.

    python -m benchmarks.bench_attention [--models gpt2,distilbert,vit,t5_encoder] [--lengths 128,512,2048]
                                         [--threads 1] [--runs 20]

Zoo models (tests/fixtures/zoo.py at bench size): each converted twice from the same export, with
the attention fusion (converter.passes.fuse_attention) and without it; the two interpreters run
one after the other, alternating, and the medians are compared. Every other op is the same in both
graphs, so the unfused attention costs (unfused model - fused model + fused Attention ops), the
fused Attention ops' time coming from the runtime's per-op profile; the per-op speed-up is that over
the fused Attention ops' time. Outputs of the two are checked against each other in the same run.

Op level: q, k, v [1, 8, S, 64] (no mask) as one Attention op, and as BatchMatMul(q, k^T) * scale ->
Softmax -> BatchMatMul(., v); time (median, interleaved) and memory (the interpreter's arena plus
scratch: the unfused graph holds the [8, S, S] scores, the fused op per-thread tiles).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import converter
from converter.api import _bind_lengths, _import
from converter.builder import GraphBuilder
from converter.passes import optimize
from converter.writer import write_model


def interleaved(runs: int, *calls) -> list[float]:
    """Median ms of each call, the calls alternating run by run after one warm-up each."""
    for call in calls:
        call()
    times = [[] for _ in calls]
    for _ in range(runs):
        for k, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - start) * 1e3)
    return [float(np.median(t)) for t in times]


def interpreter_for(data: bytes, feeds: dict, threads: int):
    import edge

    interpreter = edge.Interpreter(model_content=data, num_threads=threads, profiling=True)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], feeds[detail["name"]].astype(detail["dtype"]))
    return interpreter


def outputs_of(interpreter) -> list[np.ndarray]:
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def zoo_rows(names: list[str], threads: int, runs: int) -> None:
    import onnx

    from tests.fixtures import zoo

    print(f"| model | unfused ms | fused ms | model speed-up | Attention ops ms | unfused attention ms | per-op speed-up | max |diff| |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        model = zoo.at_bench_size(zoo.ZOO[name])
        proto = onnx.load(str(zoo.export_onnx(model)))
        shapes = zoo.input_shapes(model)
        source, _, _ = _bind_lengths(_import(proto, shapes), proto, shapes)
        fused, _ = optimize(source)
        unfused, _ = optimize(source, attention=False)
        feeds = zoo.feeds(model)
        a = interpreter_for(write_model(fused), feeds, threads)
        b = interpreter_for(write_model(unfused), feeds, threads)
        a.reset_profile()
        fused_ms, unfused_ms = interleaved(runs, a.invoke, b.invoke)
        attention_ms = sum(e["ms"] for e in a.profile() if e["op"] == "ATTENTION")
        diff = max(float(np.max(np.abs(x - y))) for x, y in zip(outputs_of(a), outputs_of(b)))
        attention_unfused = unfused_ms - fused_ms + attention_ms
        print(f"| {name} | {unfused_ms:.3f} | {fused_ms:.3f} | {unfused_ms / fused_ms:.2f}x | {attention_ms:.3f} | "
              f"{attention_unfused:.3f} | {attention_unfused / attention_ms:.2f}x | {diff:.2g} |")


def op_graphs(length: int, heads: int = 8, size: int = 64):
    shape = (1, heads, length, size)
    graphs = []
    for fused in (True, False):
        b = GraphBuilder()
        q, k, v = (b.input(n, shape) for n in ("q", "k", "v"))
        if fused:
            y = b.op("Attention", q, k, v, scale=size ** -0.5)
        else:
            scores = b.op("Mul", b.op("BatchMatMul", q, k, transpose_b=True), np.float32(size ** -0.5))
            y = b.op("BatchMatMul", b.op("Softmax", scores, axis=3), v)
        b.output(y, name="y")
        graphs.append(b.build())
    return graphs


def op_rows(lengths: list[int], threads: int, runs: int) -> None:
    print("| S | unfused ms | fused ms | speed-up | unfused arena+scratch MiB | fused arena+scratch MiB | max |diff| |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for length in lengths:
        fused, unfused = op_graphs(length)
        feeds = {n: rng.standard_normal((1, 8, length, 64)).astype(np.float32) for n in ("q", "k", "v")}
        a = interpreter_for(write_model(fused), feeds, threads)
        b = interpreter_for(write_model(unfused), feeds, threads)
        fused_ms, unfused_ms = interleaved(max(3, runs * 128 // length), a.invoke, b.invoke)
        memory = [(m["arena_bytes"] + m["scratch_bytes"]) / 2 ** 20 for m in (a.memory_info(), b.memory_info())]
        diff = float(np.max(np.abs(outputs_of(a)[0] - outputs_of(b)[0])))
        print(f"| {length} | {unfused_ms:.3f} | {fused_ms:.3f} | {unfused_ms / fused_ms:.2f}x | {memory[1]:.2f} | "
              f"{memory[0]:.2f} | {diff:.2g} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2,distilbert,vit,t5_encoder",
                        help="zoo models, comma-separated ('' for none)")
    parser.add_argument("--lengths", default="128,512,2048", help="op-level sequence lengths ('' for none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per side (op level: scaled down with S)")
    args = parser.parse_args(argv)
    print(f"threads={args.threads}, {args.runs} interleaved runs per side")
    if args.models:
        zoo_rows([m for m in args.models.split(",") if m], args.threads, args.runs)
    if args.lengths:
        op_rows([int(n) for n in args.lengths.split(",") if n], args.threads, args.runs)


if __name__ == "__main__":
    main()

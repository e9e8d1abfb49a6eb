"""Data-movement ops alone (Pad, Resize, Transpose, Concat, Slice, Gather) at the shapes real
models run them at, for two builds of the runtime side by side:

    nice python3 -m benchmarks.bench_data_ops --library old=/tmp/libedge-main.so \\
        --library new=cruntime/build/libedge.so

Each case is a one-op float32 model built with converter.GraphBuilder. Every (round, library)
pair is a fresh process (the library is picked by EDGE_LIBRARY when the binding loads), the
libraries taking turns round by round, so both see the same load. A process times --runs
invokes of each case after --warmup untimed ones at one thread; the table gives each library's
minimum and median over all its rounds and the ratio of the minima (old / new: above 1 is a
speed-up). The outputs of the libraries are compared bit for bit in the same run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.bench_models import library_label

# name -> (what it stands for, input shape, op, attrs, extra constant inputs)
CASES = {
    "pad-channels": ("BlazeFace's residual channel pad, 24 -> 28", (1, 64, 64, 24), "Pad",
                     {"pads": (0, 0, 0, 0, 0, 0, 0, 4)}, ()),
    "pad-spatial": ("TF-style SAME pad before a stride-2 conv", (1, 112, 112, 96), "Pad",
                    {"pads": (0, 0, 0, 0, 0, 1, 1, 0)}, ()),
    "pad-reflect": ("reflect pad of a feature map", (1, 64, 64, 16), "Pad",
                    {"pads": (0, 2, 2, 0, 0, 2, 2, 0), "mode": "reflect"}, ()),
    "resize-bilinear-2x": ("selfie_segmentation's decoder upsample", (1, 64, 64, 16), "Resize",
                           {"mode": "linear", "coordinate_mode": "half_pixel", "nearest_mode": "floor",
                            "scales": (1.0, 2.0, 2.0, 1.0)}, ()),
    "resize-bilinear-1.5x": ("a non-integer bilinear scale", (1, 40, 40, 32), "Resize",
                             {"mode": "linear", "coordinate_mode": "align_corners", "nearest_mode": "floor",
                              "scales": (1.0, 1.5, 1.5, 1.0)}, ()),
    "resize-nearest-2x": ("FPN-style nearest upsample", (1, 32, 32, 64), "Resize",
                          {"mode": "nearest", "coordinate_mode": "asymmetric", "nearest_mode": "floor",
                           "scales": (1.0, 2.0, 2.0, 1.0)}, ()),
    "transpose-depth-to-space": ("the shuffle after a lowered transposed conv", (128, 128, 2, 2), "Transpose",
                                 {"perm": (0, 2, 1, 3)}, ()),
    "transpose-pixel-shuffle-c8": ("depth-to-space with 8 channels", (1, 32, 32, 2, 2, 8), "Transpose",
                                   {"perm": (0, 1, 3, 2, 4, 5)}, ()),
    "transpose-last-two": ("attention's K^T", (4, 196, 64), "Transpose", {"perm": (0, 2, 1)}, ()),
    "concat-channels": ("a channel concat of two maps", (1, 56, 56, 48), "Concat", {"axis": 3}, ("same",)),
    "slice-channels": ("the first 24 of 28 channels", (1, 64, 64, 28), "Slice",
                       {"starts": (0, 0, 0, 0), "ends": (1, 64, 64, 24), "steps": (1, 1, 1, 1)}, ()),
    "gather-rows": ("an embedding lookup of 128 rows of 256", (1000, 256), "Gather", {"axis": 0}, ("indices",)),
}


def build_case(name: str) -> tuple[bytes, dict[str, np.ndarray]]:
    from converter import GraphBuilder
    from converter.writer import write_model

    _, shape, op, attrs, extras = CASES[name]
    b = GraphBuilder()
    x = b.input("x", shape)
    inputs = [x]
    for extra in extras:
        if extra == "same":
            inputs.append(b.input("x2", shape))
        elif extra == "indices":
            rng = np.random.default_rng(0)
            inputs.append(b.constant("indices", rng.integers(0, shape[0], 128).astype(np.int32)))
    b.output(b.op(op, *inputs, **attrs), name="y")
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    if "same" in extras:
        feeds["x2"] = rng.standard_normal(shape).astype(np.float32)
    return write_model(b.build()), feeds


def child(names: list[str], runs: int, warmup: int) -> None:
    import edge

    result = {}
    for name in names:
        model, feeds = build_case(name)
        interpreter = edge.Interpreter(model_content=model, num_threads=1)
        interpreter.allocate_tensors()
        details = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        for key, value in feeds.items():
            interpreter.set_tensor(details[key], value)
        for _ in range(warmup):
            interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.invoke()
            times.append(time.perf_counter() - start)
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        result[name] = {"times_ms": [t * 1e3 for t in times], "checksum": hashlib.sha1(out.tobytes()).hexdigest()}
    json.dump(result, sys.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", action="append", type=library_label, default=[], metavar="LABEL=PATH",
                        help="a libedge.so build to measure (give two or more: the ratio is first / last)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = args.cases.split(",")
    if args.child:
        child(names, args.runs, args.warmup)
        return 0
    if len(args.library) < 2:
        parser.error("give at least two --library LABEL=PATH builds to compare")
    libraries = args.library
    times: dict[tuple[str, str], list[float]] = {}
    sums: dict[tuple[str, str], set] = {}
    load = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        order = libraries if round_ % 2 == 0 else libraries[::-1]
        for label, path in order:
            env = {**os.environ, "EDGE_LIBRARY": path}
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_data_ops", "--child", "--cases", args.cases, "--runs", str(args.runs), "--warmup", str(args.warmup)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for name, entry in json.loads(out).items():
                times.setdefault((label, name), []).extend(entry["times_ms"])
                sums.setdefault((label, name), set()).add(entry["checksum"])
    load.append(os.getloadavg()[0])
    labels = [label for label, _ in libraries]
    print(f"load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after; {args.rounds} rounds x "
          f"{args.runs} runs per library, 1 thread")
    header = " | ".join(f"{label} min / median ms" for label in labels)
    print(f"| case | {header} | {labels[0]} / {labels[-1]} (minima) | same output |")
    print("|---|" + "---|" * len(labels) + "---|---|")
    for name in names:
        cells = []
        for label in labels:
            t = np.asarray(times[(label, name)])
            cells.append(f"{t.min():.4f} / {np.median(t):.4f}")
        ratio = min(times[(labels[0], name)]) / min(times[(labels[-1], name)])
        same = "yes" if len(set.union(*(sums[(label, name)] for label in labels))) == 1 else "NO"
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f}x | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

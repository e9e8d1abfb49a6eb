"""Split-execution benchmark: measured end-to-end latency of all-on-device, all-on-server, the
partitioner's plan and the oracle (the best of every measured cut), per model and network profile.

    python benchmarks/split_bench.py [--models mobilenet_v2,resnet18,bert_encoder,lstm_lm]
                                     [--profiles 3g,4g,wifi] [--share 0.1] [--out benchmarks/results]

Three processes per profile: this one (setup, results), a server process on the server side of a
shaped link (``cloudsplit.netem``) running the server part with the C runtime, and a device process
on the device side, slowed by ``cloudsplit.device`` (1 thread, ``--share`` of one core). The device
process measures its per-op times, asks the server for its own, plans with ``partition.solve`` for
the profile's nominal bandwidths and RTT, then measures requests over a plain TCP connection:
device part, cut tensors up (float32, uncompressed), server part, graph outputs down.

Oracle candidates: every prefix of the op order (a topological order; for chain-shaped graphs these
are all the cuts there are) plus the plan's own cut. Each candidate is measured once; a candidate
whose transfer time alone (bytes over the shaped rate, plus the round trip) already exceeds the best
measured total is skipped, since no run of it can beat that; the five best are measured ``--reps``
more times, and the oracle is the best median. All-device, all-server and the plan always get
``--reps`` runs. Every split answer is checked against the local one.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The fixtures' full sizes (BERT: batch 1, 64 tokens), as the split-computing papers use.
MODELS = {
    "mobilenet_v2": ("mobilenet_v2", dict(width=1.0, resolution=224, num_classes=1000)),
    "resnet18": ("resnet18", dict(resolution=224, base_width=64, num_classes=1000)),
    "bert_encoder": ("bert_encoder", dict(layers=6, hidden=384, heads=12, batch=1, tokens=64, intermediate=1536)),
    "lstm_lm": ("lstm_lm", dict(vocab=10000, hidden=512, layers=2, tokens=32, batch=1)),
}

SMALL = {
    "mobilenet_v2": ("mobilenet_v2", dict(width=0.35, resolution=32, num_classes=10)),
    "resnet18": ("resnet18", dict(resolution=32, base_width=8, num_classes=10)),
    "bert_encoder": ("bert_encoder", dict(layers=2, hidden=64, heads=4, batch=1, tokens=16, intermediate=128)),
    "lstm_lm": ("lstm_lm", dict(vocab=1000, hidden=64, layers=2, tokens=16, batch=1)),
}


def _send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    sock.sendall(struct.pack("!IQ", len(data), len(payload)) + data + payload)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    buffer = bytearray(count)
    view, got = memoryview(buffer), 0
    while got < count:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("peer closed the connection")
        got += n
    return bytes(buffer)


def _recv(sock: socket.socket) -> tuple[dict, bytes]:
    header_len, payload_len = struct.unpack("!IQ", _recv_exactly(sock, 12))
    return json.loads(_recv_exactly(sock, header_len)), _recv_exactly(sock, payload_len)


def _pack(arrays: dict[int, np.ndarray]) -> tuple[list, bytes]:
    meta, chunks = [], []
    for t, array in arrays.items():
        array = np.ascontiguousarray(array)
        meta.append([int(t), array.dtype.str, list(array.shape), array.nbytes])
        chunks.append(array.tobytes())
    return meta, b"".join(chunks)


def _unpack(meta: list, payload: bytes) -> dict[int, np.ndarray]:
    arrays, offset = {}, 0
    for t, dtype, shape, nbytes in meta:
        arrays[t] = np.frombuffer(payload[offset:offset + nbytes], dtype=dtype).reshape(shape)
        offset += nbytes
    return arrays


class _Model:
    def __init__(self, path: pathlib.Path, threads: int):
        import edge

        self.data = path.read_bytes()
        self.interpreter = edge.Interpreter(model_content=self.data, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.ops = self.interpreter.op_details()
        self.producer = {t: op["index"] for op in self.ops for t in op["outputs"] if t >= 0}
        self.inputs = [d["index"] for d in self.interpreter.get_input_details()]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]


def serve(args) -> int:
    """The server side: answers 'profile' and 'run' requests on one connection at a time."""
    from cloudsplit import costs, execution

    models = {p.stem: _Model(p, args.threads) for p in pathlib.Path(args.models).glob("*.edge")}
    server = socket.create_server((args.host, 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while True:
                try:
                    header, payload = _recv(conn)
                except ConnectionError:
                    break
                model = models[header["model"]]
                if header["kind"] == "profile":
                    feeds = _unpack(header["tensors"], payload)
                    op_ms = costs.measure_op_ms(model.data, args.threads, runs=5, inputs=feeds)
                    _send(conn, {"op_ms": op_ms})
                    continue
                began = time.perf_counter()
                execution.run_with_provided(model.interpreter, header["server_ops"], _unpack(header["tensors"], payload),
                                            model.producer)
                meta, out = _pack({t: model.interpreter.get_tensor(t) for t in header["downloads"]})
                _send(conn, {"tensors": meta, "server_ms": (time.perf_counter() - began) * 1e3}, out)
    return 0


def device(args) -> int:
    """The device side: plans, then measures every candidate; prints one JSON document."""
    from cloudsplit import costs, execution, netem, partition

    profile = netem.PROFILES[args.profile]
    network = profile.network()
    host, port = args.server.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    report = []
    for name in args.models.split(","):
        model = _Model(pathlib.Path(args.model_dir) / f"{name}.edge", 1)
        with np.load(pathlib.Path(args.model_dir) / f"{name}.npz") as stored:
            feeds_by_name = {key: stored[key] for key in stored.files}
        interpreter = model.interpreter
        feeds = {d["index"]: feeds_by_name[d["name"]] for d in interpreter.get_input_details()}
        device_ms = costs.measure_op_ms(model.data, 1, runs=5, inputs=feeds)
        meta, payload = _pack(feeds)
        _send(sock, {"kind": "profile", "model": name, "tensors": meta}, payload)
        server_ms = _recv(sock)[0]["op_ms"]
        model_costs = costs.costs_from_interpreter(interpreter, device_ms, server_ms)
        graph = partition._Graph(model_costs)
        n = len(model.ops)
        solve_began = time.perf_counter()
        plan = partition.solve(model_costs, network)
        solve_ms = (time.perf_counter() - solve_began) * 1e3

        for t, array in feeds.items():
            interpreter.set_tensor(t, array)
        interpreter.invoke()
        reference = {t: interpreter.get_tensor(t) for t in model.outputs}

        def run_once(device_set: frozenset[int]) -> float:
            device_ops = sorted(device_set)
            server_ops = [op for op in range(n) if op not in device_set]
            uploads = partition.uploads_for(graph, set(device_set)) if server_ops else []
            downloads = partition.downloads_for(graph, set(device_set))
            local = [t for t in model.outputs if t not in downloads]
            began = time.perf_counter()
            for t, array in feeds.items():
                if t not in uploads:
                    interpreter.set_tensor(t, array)
            captured = execution.run_capturing(interpreter, device_ops, uploads + local, model.producer,
                                               provided={t: feeds[t] for t in uploads if t in feeds})
            results = {t: captured[t] for t in local}
            if server_ops:
                meta, payload = _pack({t: captured[t] for t in uploads})
                _send(sock, {"kind": "run", "model": name, "server_ops": server_ops, "tensors": meta,
                             "downloads": downloads}, payload)
                header, body = _recv(sock)
                results.update(_unpack(header["tensors"], body))
            elapsed = (time.perf_counter() - began) * 1e3
            for t in model.outputs:
                np.testing.assert_allclose(results[t], reference[t], rtol=1e-4, atol=1e-4,
                                           err_msg=f"{name}: split at {len(device_ops)} device ops")
            return elapsed

        measured: dict[frozenset[int], list[float]] = {}

        def measure(device_set, reps):
            runs = measured.setdefault(device_set, [])
            runs.extend(run_once(device_set) for _ in range(reps))
            return statistics.median(runs)

        all_device, all_server, chosen = frozenset(range(n)), frozenset(), frozenset(plan.device_ops)
        run_once(all_server)  # warm the connection and both sides' caches
        for fixed in (all_device, all_server, chosen):
            if fixed not in measured:
                measure(fixed, args.reps)
        candidates = {frozenset(range(k)) for k in range(n + 1)} | {chosen}
        predicted = {c: partition.evaluate(model_costs, network, c) for c in candidates}
        best = min(statistics.median(v) for v in measured.values())
        skipped = 0
        for c in sorted(candidates, key=lambda c: predicted[c].total_ms):
            if c in measured:
                continue
            b = predicted[c]
            floor = b.upload_ms + b.download_ms + b.rtt_ms
            if floor > best:
                skipped += 1
                continue
            best = min(best, measure(c, 1))
        top = sorted(measured, key=lambda c: statistics.median(measured[c]))[:5]
        for c in top:
            if len(measured[c]) < args.reps:
                measure(c, args.reps - len(measured[c]))
        oracle = min(measured, key=lambda c: statistics.median(measured[c]))

        def entry(c):
            b = predicted.get(c) or partition.evaluate(model_costs, network, c)
            return {"device_ops": len(c), "kind": partition._kind(len(c), n), "measured_ms": statistics.median(measured[c]),
                    "runs_ms": measured[c], "predicted_ms": b.total_ms, "upload_bytes": b.upload_bytes,
                    "download_bytes": b.download_bytes}

        report.append({
            "model": name, "sizes": json.loads(args.sizes)[name], "ops": n, "dag": not graph.is_chain(),
            "device_total_ms": sum(device_ms), "server_total_ms": sum(server_ms),
            "slowdown": sum(device_ms) / max(sum(server_ms), 1e-9), "solve_ms": solve_ms,
            "plan": {**entry(chosen), "method": plan.method, "upload": list(plan.upload)},
            "all_device": entry(all_device), "all_server": entry(all_server), "oracle": entry(oracle),
            "candidates": len(candidates), "measured_candidates": len(measured), "skipped_by_floor": skipped,
        })
        print(f"[{args.profile}] {name}: plan {report[-1]['plan']['measured_ms']:.1f} ms, oracle "
              f"{report[-1]['oracle']['measured_ms']:.1f} ms", file=sys.stderr, flush=True)
    json.dump(report, sys.stdout)
    return 0


def orchestrate(args) -> int:
    import converter
    from cloudsplit import device as device_emulation
    from cloudsplit import netem
    from tests.fixtures import models as fixtures

    names = args.models.split(",")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = pathlib.Path(tmp)
        os.chmod(model_dir, 0o755)
        sizes = SMALL if args.small else MODELS
        for name in names:
            builder, kwargs = sizes[name]
            onnx_model = getattr(fixtures, builder)(**kwargs)
            (model_dir / f"{name}.edge").write_bytes(converter.convert(onnx_model).data)
            np.savez(model_dir / f"{name}.npz", **fixtures.sample_inputs(onnx_model))
        results = {"command": " ".join(["python", "benchmarks/split_bench.py", *sys.argv[1:]]),
                   "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                   "shaping": {}, "profiles": {}}
        with device_emulation.slow_device(args.share, period_us=20_000) as throttle:
            slowdown = device_emulation.measure_slowdown(throttle)
            results["device_emulation"] = {"method": throttle.description, "cpu_share": args.share,
                                           "measured_slowdown_spin": slowdown, "server_threads": args.server_threads}
            print(f"device: {throttle.description}; measured slowdown {slowdown:.2f}x", flush=True)
            for profile_name in args.profiles.split(","):
                with netem.shaped_link(profile_name, mode=args.shaping) as link:
                    print(f"link: {link.label}", flush=True)
                    results["shaping"][profile_name] = link.label
                    env = dict(os.environ, PYTHONPATH=str(ROOT))
                    server = link.start_server([sys.executable, __file__, "serve", "--models", str(model_dir),
                                                "--host", link.server_host, "--threads", str(args.server_threads)],
                                               stdout=subprocess.PIPE, text=True, env=env)
                    port = int(server.stdout.readline())
                    worker = throttle.popen(link.client_argv(
                        [sys.executable, __file__, "device", "--server", link.address(port), "--profile", profile_name,
                         "--models", ",".join(names), "--model-dir", str(model_dir), "--reps", str(args.reps),
                         "--sizes", json.dumps({n: sizes[n][1] for n in names})]),
                        stdout=subprocess.PIPE, text=True, env=env)
                    output, _ = worker.communicate()
                    if worker.returncode != 0:
                        raise RuntimeError(f"the device process failed on {profile_name} ({worker.returncode})")
                    results["profiles"][profile_name] = json.loads(output)
    results["wall_s"] = time.perf_counter() - started
    (out / "split_bench.json").write_text(json.dumps(results, indent=1))
    table = summarize(results)
    (out / "split_bench.md").write_text(table)
    print(table)
    chart(results, out / "split_bench.png")
    return 0


def summarize(results: dict) -> str:
    lines = ["| model | profile | all-device ms | all-server ms | plan ms (kind, device ops) | oracle ms (device ops) "
             "| plan / oracle | plan / best extreme | sent up (plan) |", "|" + "---|" * 9]
    over_server, over_device = [], []
    for profile, models in results["profiles"].items():
        for m in models:
            d, s, p, o = (m[k]["measured_ms"] for k in ("all_device", "all_server", "plan", "oracle"))
            over_server.append(s / p)
            over_device.append(d / p)
            lines.append(f"| {m['model']} | {profile} | {d:.1f} | {s:.1f} | {p:.1f} ({m['plan']['kind']}, "
                         f"{m['plan']['device_ops']}/{m['ops']}) | {o:.1f} ({m['oracle']['device_ops']}) | "
                         f"{p / o:.3f} | {p / min(d, s):.3f} | {m['plan']['upload_bytes'] / 1e3:.1f} kB |")
    lines.append("")
    lines.append(f"Gain of the plan over all-server: mean {statistics.mean(over_server):.2f}x, max {max(over_server):.2f}x; "
                 f"over all-device: mean {statistics.mean(over_device):.2f}x, max {max(over_device):.2f}x.")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = list(results["profiles"])
    models = [m["model"] for m in results["profiles"][profiles[0]]]
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.6), squeeze=False)
    keys = [("all_device", "all-device"), ("all_server", "all-server"), ("plan", "plan"), ("oracle", "oracle")]
    for ax, name in zip(axes[0], models):
        for i, (key, label) in enumerate(keys):
            values = [next(m for m in results["profiles"][p] if m["model"] == name)[key]["measured_ms"] for p in profiles]
            ax.bar([x + i * 0.2 for x in range(len(profiles))], values, width=0.2, label=label)
        ax.set_xticks([x + 0.3 for x in range(len(profiles))], profiles)
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_ylabel("measured latency (ms)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--profiles", default="3g,4g,wifi")
    parser.add_argument("--share", type=float, default=0.05, help="the device's share of one core")
    parser.add_argument("--server-threads", type=int, default=max(1, min(4, (os.cpu_count() or 2) // 4)))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--shaping", choices=("netem", "tbf+relay", "in-process"), help="default: the best available")
    parser.add_argument("--small", action="store_true", help="tiny models, for a quick check of the harness")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    s = sub.add_parser("serve")
    s.add_argument("--models", required=True)
    s.add_argument("--host", required=True)
    s.add_argument("--threads", type=int, default=1)
    d = sub.add_parser("device")
    d.add_argument("--server", required=True)
    d.add_argument("--profile", required=True)
    d.add_argument("--models", required=True)
    d.add_argument("--model-dir", required=True)
    d.add_argument("--reps", type=int, default=3)
    d.add_argument("--sizes", required=True)
    args = parser.parse_args(argv)
    if args.role == "serve":
        return serve(args)
    if args.role == "device":
        return device(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())

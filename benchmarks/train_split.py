"""Split learning against training all on the device and against uploading the data to train in
the datacenter, over shaped 3G / 4G / Wi-Fi links with a slowed device: time and bytes per epoch of
each, and the plan's cut against the best cut measured.

    python benchmarks/train_split.py [--profiles 3g,4g,wifi] [--batch 32] [--device-isa scalar]
                                     [--share 1] [--compression fp16] [--steps-per-cut 12]
                                     [--shaping MODE] [--out benchmarks/results]

The model is the digits CNN (tests/fixtures/digits.py: conv3x3(16)-pool-conv3x3(32)-pool-dense(64)-
head(10), Adam) on scikit-learn's digits (1347 training images); an epoch is len // batch steps.

Processes per profile, as benchmarks/split_bench.py runs them: this one (setup, the server-speed
reference, results), a SplitLearning server (``cloudsplit.split_learning.start_server``) on the
server side of a link shaped by ``cloudsplit.netem`` (its best mode here, or ``--shaping``), and a
device process on the device side, slowed by the runtime's reference kernels (``EDGE_ISA=scalar``,
one interpreter thread; ``--share`` < 1 adds a CPU quota through ``cloudsplit.device``). The device
process measures, in this order:

- all on the device: ``edge.Trainer`` on the whole trainable model, one epoch (no bytes);
- uploading the data: the training set as the uint8 pixels it is stored as (1 byte per pixel, the
  cheapest honest encoding of these images) plus uint8 labels, sent once through the link (an Echo
  call of that payload); the epoch then runs at the server's speed, measured in this process with
  the SIMD kernels. Its first epoch is the upload plus that; later epochs cost the server time only;
- split learning with ``cut="auto"``: one whole epoch through ``SplitTrainer`` as users call it
  (probes, planning, re-planning included), its bytes the serialized gRPC messages of the steps;
- every candidate cut, fixed: 2 warm-up steps, then ``--steps-per-cut`` timed steps; the epoch time
  of a cut is its mean step time x steps per epoch. The best measured cut is the oracle the plan is
  compared with (same measurement for both).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LR = 3e-3


def _load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def serve(args) -> int:
    """The server side: a SplitLearning server on ``--host``:0 until killed."""
    from cloudsplit import split_learning

    # Inside the link's server namespace when shaped: a private network (plaintext on purpose).
    handle = split_learning.start_server(f"{args.host}:0", max_workers=4, threads=1, insecure=True)
    print(f"listening on {handle.address}", flush=True)
    threading.Event().wait()
    return 0


def device(args) -> int:
    """The device side; prints one JSON document."""
    import grpc

    import edge
    from cloudsplit.client import SplitTrainer
    from cloudsplit.protos import split_learning_pb2 as pb
    from cloudsplit.protos import split_learning_pb2_grpc as pb_grpc

    directory = pathlib.Path(args.dir)
    with np.load(directory / "data.npz") as stored:
        x, y, pixels, labels = stored["x"], stored["y"], stored["pixels"], stored["labels"]
    batch = args.batch
    steps = len(x) // batch
    batches = [(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]) for i in range(steps)]
    model = str(directory / "cnn.edge")
    report: dict = {"steps_per_epoch": steps, "batch": batch}

    with edge.Trainer(str(directory / "whole.edge"), num_threads=1) as trainer:
        for bx, by in batches[:2]:
            trainer.train_step(bx, by)
        started = time.perf_counter()
        for bx, by in batches:
            trainer.train_step(bx, by)
        report["device"] = {"epoch_s": time.perf_counter() - started, "bytes": 0}

    channel = grpc.insecure_channel(args.server, options=[("grpc.max_send_message_length", 64 << 20),
                                                          ("grpc.max_receive_message_length", 64 << 20)])
    stub = pb_grpc.SplitLearningStub(channel)
    stub.Echo(pb.EchoRequest(), timeout=60)
    payload = pixels.tobytes() + labels.tobytes()
    request = pb.EchoRequest(payload=payload)
    started = time.perf_counter()
    stub.Echo(request, timeout=600)
    report["upload"] = {"upload_s": time.perf_counter() - started, "bytes": request.ByteSize()}
    channel.close()

    options = dict(server=args.server, optimizer="adam", lr=LR, compression=args.compression,
                   gradient_compression=args.compression, num_threads=1)
    with SplitTrainer(model, cut="auto", **options) as auto:
        planned = auto.plan
        started = time.perf_counter()
        for bx, by in batches:
            auto.step(bx, by)
        epoch_s = time.perf_counter() - started
        report["auto"] = {
            "epoch_s": epoch_s, "first_cut": list(planned.cut), "final_cut": list(auto.cut), "replans": auto.replans,
            "up_bytes": sum(r.upload_bytes for r in auto.history), "down_bytes": sum(r.download_bytes for r in auto.history),
            "link": vars(auto.link), "device_load": auto.device_load, "server_load": auto.server_load,
            "predicted_step_ms": {",".join(c.cut): c.total_ms for c in planned.candidates},
            "cuts_used": sorted({",".join(r.cut) for r in auto.history}),
            "probes": auto.probes,
            "steps": [{"cut": ",".join(r.cut), "total_ms": round(r.total_ms, 2), "device_ms": round(r.device_ms, 2),
                       "transfer_ms": round(r.transfer_ms, 2), "replanned": r.replanned} for r in auto.history],
        }
        candidates = [c.cut for c in planned.candidates]
    measured = {}
    for cut in candidates:
        with SplitTrainer(model, cut=list(cut), **options) as fixed:
            for bx, by in batches[:2]:
                fixed.step(bx, by)
            times = []
            for bx, by in batches[2:2 + args.steps_per_cut]:
                began = time.perf_counter()
                fixed.step(bx, by)
                times.append(time.perf_counter() - began)
            last = fixed.history[-1]
            measured[",".join(cut)] = {
                "mean_step_ms": statistics.mean(times) * 1e3, "median_step_ms": statistics.median(times) * 1e3,
                "epoch_s": statistics.mean(times) * steps,
                "up_bytes_per_step": last.upload_bytes, "down_bytes_per_step": last.download_bytes,
                "device_ms": statistics.mean(r.device_ms for r in fixed.history[2:]),
                "server_ms": statistics.mean(r.server_ms for r in fixed.history[2:]),
                "transfer_ms": statistics.mean(r.transfer_ms for r in fixed.history[2:]),
            }
    report["cuts"] = measured
    print(json.dumps(report))
    return 0


def _server_epoch_s(directory: pathlib.Path, batch: int) -> float:
    """One epoch of the whole model at the server's speed (this process: SIMD kernels)."""
    import edge

    with np.load(directory / "data.npz") as stored:
        x, y = stored["x"], stored["y"]
    steps = len(x) // batch
    with edge.Trainer(str(directory / "whole.edge"), num_threads=1) as trainer:
        for i in range(2):
            trainer.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
        started = time.perf_counter()
        for i in range(steps):
            trainer.train_step(x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch])
        return time.perf_counter() - started


def orchestrate(args) -> int:
    import converter
    from cloudsplit import device as device_emulation
    from cloudsplit import netem
    from tests.fixtures import digits

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {"command": " ".join(["python", "benchmarks/train_split.py", *sys.argv[1:]]),
               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
               "batch": args.batch, "compression": args.compression, "steps_per_cut": args.steps_per_cut,
               "shaping": {}, "load_average": {}, "profiles": {}}
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp)
        os.chmod(directory, 0o755)
        graph = digits.digits_cnn(batch=args.batch)
        (directory / "cnn.edge").write_bytes(converter.convert(graph).data)
        digits.write_trainable(graph, directory / "whole.edge", loss="cross_entropy", optimizer="adam", lr=LR)
        x, y, _, _ = digits.load_digits_split()
        pixels = np.round(x * 16).astype(np.uint8)  # the stored 0..16 grey levels
        np.savez(directory / "data.npz", x=x, y=y, pixels=pixels, labels=y.astype(np.uint8))
        server_epoch_s = _server_epoch_s(directory, args.batch)
        results["server_epoch_s"] = server_epoch_s
        print(f"server speed (SIMD, 1 thread): {server_epoch_s:.3f} s per epoch", flush=True)

        base_env = netem.child_env()
        env = dict(base_env, EDGESPLIT_COST_CACHE=tempfile.mkdtemp(prefix="train-split-server-costs-"))
        device_env = dict(base_env, EDGESPLIT_COST_CACHE=tempfile.mkdtemp(prefix="train-split-device-costs-"))
        if args.device_isa:
            device_env["EDGE_ISA"] = args.device_isa
        throttling = (device_emulation.slow_device(args.share) if args.share < 1 else contextlib.nullcontext(None))
        with throttling as throttle:
            kernels = (f"EDGE_ISA={args.device_isa} (reference kernels, no SIMD)" if args.device_isa == "scalar"
                       else f"EDGE_ISA={args.device_isa or '(detected)'}")
            results["device_emulation"] = (f"a separate process; {kernels}; 1 interpreter thread; "
                                           f"{throttle.description if throttle else 'no CPU quota'}")
            print(f"device: {results['device_emulation']}", flush=True)
            popen = throttle.popen if throttle else subprocess.Popen
            for name in args.profiles.split(","):
                with netem.shaped_link(name, mode=args.shaping) as link:
                    print(f"link: {link.label}", flush=True)
                    results["shaping"][name] = link.label
                    before = _load_average()
                    server = link.start_server([sys.executable, __file__, "serve", "--host", link.server_host],
                                               stdout=subprocess.PIPE, text=True, env=env)
                    line = server.stdout.readline()
                    match = re.search(r"listening on \S+:(\d+)", line)
                    if not match:
                        raise RuntimeError(f"the split-learning server did not start ({server.poll()}): {line!r}")
                    worker = popen(link.client_argv(
                        [sys.executable, __file__, "device", "--server", link.address(int(match.group(1))),
                         "--dir", str(directory), "--batch", str(args.batch), "--compression", args.compression,
                         "--steps-per-cut", str(args.steps_per_cut)]), stdout=subprocess.PIPE, text=True,
                        env=device_env)
                    output, _ = worker.communicate()
                    if worker.returncode != 0:
                        raise RuntimeError(f"the device process failed on {name} ({worker.returncode})")
                    results["profiles"][name] = json.loads(output)
                    results["load_average"][name] = {"before": before, "after": _load_average()}
                    print(summarize_profile(name, results["profiles"][name], server_epoch_s), flush=True)
    results["wall_s"] = time.perf_counter() - started
    (out / "train_split.json").write_text(json.dumps(results, indent=1))
    table = summarize(results)
    (out / "train_split.md").write_text(table)
    print(table)
    print(f"took {results['wall_s']:.0f} s")
    return 0


def _kb(n: float) -> str:
    return f"{n / 1024:.1f}"


def summarize_profile(name: str, p: dict, server_epoch_s: float) -> str:
    cuts = p["cuts"]
    best = min(cuts, key=lambda c: cuts[c]["epoch_s"])
    auto = p["auto"]
    steps = p["steps_per_epoch"]
    chosen = auto["first_cut"][0] if len(auto["first_cut"]) == 1 else ",".join(auto["first_cut"])
    final = ",".join(auto["final_cut"])
    ratio = cuts[final]["epoch_s"] / cuts[best]["epoch_s"]
    rows = [
        f"| {name} | all on the device | {p['device']['epoch_s']:.2f} | 0 | 0 | |",
        f"| {name} | upload the data, train in the datacenter | {p['upload']['upload_s'] + server_epoch_s:.2f} "
        f"(upload {p['upload']['upload_s']:.2f} + {server_epoch_s:.2f}; later epochs {server_epoch_s:.2f}) | "
        f"{_kb(p['upload']['bytes'])} (once) | 0 | |",
        f"| {name} | split learning, cut=\"auto\" (whole epoch) | {auto['epoch_s']:.2f} | {_kb(auto['up_bytes'])} | "
        f"{_kb(auto['down_bytes'])} | planned {chosen}, ended at {final}, {auto['replans']} re-plan(s) |",
    ]
    for cut, m in sorted(cuts.items(), key=lambda kv: kv[1]["epoch_s"]):
        mark = " **best measured**" if cut == best else ""
        mark += " (the plan's)" if cut == final else ""
        rows.append(f"| {name} | split learning at {cut}{mark} | {m['epoch_s']:.2f} | "
                    f"{_kb(m['up_bytes_per_step'] * steps)} | {_kb(m['down_bytes_per_step'] * steps)} | "
                    f"step {m['mean_step_ms']:.0f} ms: device {m['device_ms']:.0f}, server {m['server_ms']:.1f}, "
                    f"calls {m['transfer_ms']:.0f} |")
    rows.append(f"| {name} | plan vs best measured | {ratio:.2f}x | | | {final} vs {best} |")
    return "\n".join(rows)


def summarize(results: dict) -> str:
    head = ("| link | method | time per epoch (s) | up KiB per epoch | down KiB per epoch | notes |\n"
            "| --- | --- | --- | --- | --- | --- |")
    body = [summarize_profile(name, p, results["server_epoch_s"]) for name, p in results["profiles"].items()]
    return "\n".join([head, *body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    s = sub.add_parser("serve")
    s.add_argument("--host", default="127.0.0.1")
    d = sub.add_parser("device")
    d.add_argument("--server", required=True)
    d.add_argument("--dir", required=True)
    d.add_argument("--batch", type=int, default=32)
    d.add_argument("--compression", default="fp16")
    d.add_argument("--steps-per-cut", type=int, default=12)
    parser.add_argument("--profiles", default="3g,4g,wifi")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device-isa", default="scalar")
    parser.add_argument("--share", type=float, default=1.0)
    parser.add_argument("--compression", default="fp16")
    parser.add_argument("--steps-per-cut", type=int, default=12)
    parser.add_argument("--shaping", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "device":
        return device(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())

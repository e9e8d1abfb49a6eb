"""Load, overload and stalled clients against a real ``cloudsplit serve`` on loopback.

Three phases, each bounded in count and time, each against a fresh server subprocess:

- ``load``: ``--clients`` threads (spread over ``--client-processes`` processes) send
  ``--requests`` split requests each, alternating between two small converted models (an MLP and
  MobileNetV2 0.35 at 32x32, each cut after its first layers). Every answer is checked against a
  local ``edge.Interpreter`` run of the whole model (bit for bit: cut tensors travel uncompressed
  and the server runs the same kernels). Reports throughput, p50/p99 latency, errors, and the
  server's RSS sampled over the run (growth: mean of the last quarter over the first), after a
  warm-up round of ``--warmup-requests`` per client that is checked but not sampled.
- ``overload``: a server admitting ``--capacity`` requests at once. First ``--capacity`` clients
  (at capacity: its throughput and latency), then ``--overload-factor`` times as many, for
  ``--seconds`` each. A refused client waits ``--refused-pause-ms`` (the time a device spends
  answering by itself) and sends its next request. Reports the time to each refusal twice: as the
  client saw it (from its call to the error, its own scheduling included) and as the server did
  (from gRPC handing it the call to the refusal, which the refusal carries in its trailing
  metadata; calls gRPC itself refuses past its worker pool carry none and are counted apart), the
  admitted requests' latency next to the at-capacity run, and ``--runners`` SplitRunner clients
  running meanwhile, every answer checked: refused requests are answered on the device. Between
  the two runs, the refusal path alone: every slot held by a stalled call, one client sends
  ``--floor-requests`` requests in turn, each refused, timed on both sides.
- ``stall``: a server admitting ``--capacity`` requests, with ``--stream-idle-s`` and
  ``--max-call-s``. ``--capacity`` clients open an ``Infer`` call and then (a) stall after the
  header, (b) drip one small chunk every half second, (c) disconnect mid-stream. Each time:
  whether a normal request is refused while the slots are held, and how long until one is served.

    python benchmarks/load_test.py --out benchmarks/results          # the README table
    python benchmarks/load_test.py --quick                           # a smoke run (tests)

The machine's load average (1 minute) is recorded before and after each phase: on a shared
machine the latencies say as much about the other jobs as about the server.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
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

MODELS = {"mlp": 1, "mobilenet_v2_0.35_32": 20}   # model -> first server op (the cut)
INPUTS_PER_MODEL = 8


# ---- the workload --------------------------------------------------------------------------------

def build_models(directory: pathlib.Path) -> None:
    """Converts the two models into ``directory`` with their sample inputs and expected outputs."""
    import converter
    import edge
    from tests.cloudsplit.conftest import mlp_onnx
    from tests.fixtures import models

    graphs = {"mlp": mlp_onnx(), "mobilenet_v2_0.35_32": models.mobilenet_v2(width=0.35, resolution=32,
                                                                              num_classes=10)}
    rng = np.random.default_rng(7)
    for name, graph in graphs.items():
        data = converter.convert(graph).data
        (directory / f"{name}.edge").write_bytes(data)
        interpreter = edge.Interpreter(model_content=data)
        interpreter.allocate_tensors()
        (source,) = interpreter.get_input_details()
        (sink,) = interpreter.get_output_details()
        inputs, outputs = [], []
        for _ in range(INPUTS_PER_MODEL):
            x = rng.standard_normal(source["shape"]).astype(np.float32)
            interpreter.set_tensor(source["index"], x)
            interpreter.invoke()
            inputs.append(x)
            outputs.append(interpreter.get_tensor(sink["index"]).copy())
        np.savez(directory / f"{name}.npz", x=np.stack(inputs), y=np.stack(outputs))
        interpreter.close()


class Request:
    """One prepared split request: the device part already run, its cut tensors encoded."""

    def __init__(self, model_path: pathlib.Path, cut: int, x: np.ndarray, expected: np.ndarray):
        import hashlib

        import edge
        from cloudsplit import execution, transfer
        from cloudsplit.protos import split_pb2 as pb

        data = model_path.read_bytes()
        interpreter = edge.Interpreter(model_content=data)
        interpreter.allocate_tensors()
        ops = interpreter.op_details()
        kinds = [d["kind"] for d in interpreter.get_tensor_details()]
        producer = {t: op["index"] for op in ops for t in op["outputs"] if t >= 0}
        (source,) = interpreter.get_input_details()
        (self.output,) = [d["index"] for d in interpreter.get_output_details()]
        server_ops = list(range(cut, len(ops)))
        written = {t for op in server_ops for t in ops[op]["outputs"]}
        cut_tensors = sorted({t for op in server_ops for t in ops[op]["inputs"]
                              if t >= 0 and kinds[t] == "activation" and t not in written})
        interpreter.set_tensor(source["index"], x)
        captured = execution.run_capturing(interpreter, range(cut), cut_tensors, producer,
                                           {t: x for t in cut_tensors if t == source["index"]})
        interpreter.close()
        self.tensors = [transfer.encode_tensor(t, array, "none") for t, array in captured.items()]
        self.header = pb.InferHeader(model_sha256=hashlib.sha256(data).hexdigest(), server_ops=server_ops,
                                     uploads=[h for h, _ in self.tensors], outputs=[self.output])
        self.expected = expected
        self.model = model_path.stem

    def send(self, connection, request_id: int, timeout: float):
        """(correct?, reply) for one call; raises grpc.RpcError as the server answers it."""
        header = type(self.header)()
        header.CopyFrom(self.header)
        header.request_id = request_id
        reply = connection.infer(header, self.tensors, timeout=timeout)
        return bool(np.array_equal(reply.outputs[self.output], self.expected)), reply


def load_requests(directory: pathlib.Path) -> list[Request]:
    requests = []
    for name, cut in MODELS.items():
        with np.load(directory / f"{name}.npz") as arrays:
            requests += [Request(directory / f"{name}.edge", cut, x, y) for x, y in zip(arrays["x"], arrays["y"])]
    return requests


# ---- the server ----------------------------------------------------------------------------------

class Server:
    """``cloudsplit serve`` in a subprocess on 127.0.0.1, port 0; ``rss_kib()`` reads its RSS."""

    def __init__(self, models: pathlib.Path, *extra: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.pop("CLOUDSPLIT_TOKEN", None)
        self.process = subprocess.Popen([sys.executable, "-m", "cloudsplit.cli", "serve", "--models", str(models),
                                         "--port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, cwd=ROOT, env=env)
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            match = re.search(r"listening on \S+:(\d+)", line)
            if match:
                self.address = f"127.0.0.1:{match.group(1)}"
                break
        else:
            raise RuntimeError("cloudsplit serve did not start:\n" + "".join(lines))
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.process.stdout), daemon=True).start()

    def rss_kib(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---- clients -------------------------------------------------------------------------------------

def _client_loop(address, requests, first_request, count, stop_at, refused_pause_s, out, index):
    """One client: ``count`` requests (or until ``stop_at``), one at a time; appends records
    (model, outcome, seconds, correct) to ``out``."""
    import grpc

    from cloudsplit.connection import ServerConnection

    connection = ServerConnection(address)
    try:
        for k in range(count):
            if time.monotonic() >= stop_at:
                break
            request = requests[(first_request + k) % len(requests)]
            began = time.perf_counter()
            try:
                correct, reply = request.send(connection, request_id=index * 1_000_000 + k, timeout=30.0)
                out.append((request.model, "OK", time.perf_counter() - began, correct,
                            (reply.header.queue_ms + reply.header.server_ms) / 1e3))
            except grpc.RpcError as error:
                out.append((request.model, error.code().name, time.perf_counter() - began, None,
                            refused_after_s(error)))
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and refused_pause_s:
                    time.sleep(refused_pause_s)
    finally:
        connection.close()


def refused_after_s(error) -> float | None:
    """The server's time from the call's arrival to its refusal, from the refusal's trailing metadata."""
    from cloudsplit.service import REFUSED_AFTER_MS_KEY

    value = dict(error.trailing_metadata() or ()).get(REFUSED_AFTER_MS_KEY)
    return float(value) / 1e3 if value is not None else None


def _client_process(address, models_dir, clients, first_index, count, seconds, refused_pause_s, queue):
    requests = load_requests(pathlib.Path(models_dir))
    stop_at = time.monotonic() + seconds
    records: list[list] = [[] for _ in range(clients)]
    threads = [threading.Thread(target=_client_loop, args=(address, requests, first_index + i, count, stop_at,
                                                           refused_pause_s, records[i], first_index + i))
               for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((began, time.perf_counter(), [r for client in records for r in client]))


def run_clients(address, models_dir, clients, count, seconds, processes, refused_pause_s=0.0):
    """``clients`` closed-loop clients over ``processes`` processes (one GIL each); returns
    (wall seconds, records)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    shares = [clients // processes + (1 if p < clients % processes else 0) for p in range(processes)]
    workers, first = [], 0
    for share in shares:
        if share:
            workers.append(context.Process(target=_client_process, args=(address, str(models_dir), share, first,
                                                                         count, seconds, refused_pause_s, queue)))
            first += share
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 600) for _ in workers]
    for worker in workers:
        worker.join(60)
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    return ended - began, [record for r in results for record in r[2]]


def percentiles_ms(seconds) -> dict:
    if not seconds:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(values, 50)), 2), "p99_ms": round(float(np.percentile(values, 99)), 2),
            "max_ms": round(float(values.max()), 2)}


# ---- phases --------------------------------------------------------------------------------------

def phase_load(args, models_dir) -> dict:
    server = Server(models_dir, "--max-concurrency", str(max(64, args.clients + 8)))
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample():
        while not done.wait(0.2):
            samples.append((time.monotonic(), server.rss_kib()))

    try:
        # A warm-up round first (the server's interpreters and threads are made as clients arrive),
        # so the RSS sampled over the measured run shows growth, not start-up.
        _, warmup = run_clients(server.address, models_dir, args.clients, args.warmup_requests, args.max_seconds,
                                args.client_processes) if args.warmup_requests else (0.0, [])
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wall, records = run_clients(server.address, models_dir, args.clients, args.requests, args.max_seconds,
                                    args.client_processes)
        done.set()
        sampler.join()
    finally:
        done.set()
        server.close()
    ok = [r for r in records if r[1] == "OK"]
    errors: dict[str, int] = {}
    for r in records:
        if r[1] != "OK":
            errors[r[1]] = errors.get(r[1], 0) + 1
    quarter = max(1, len(samples) // 4)
    quarters = [statistics.mean(s for _, s in samples[k * quarter:(k + 1) * quarter] or samples[-1:])
                for k in range(4)] if samples else [0.0] * 4
    first, last = quarters[0], quarters[3]
    step = max(1, len(samples) // 100)
    series = [(round(t - samples[0][0], 1), round(s / 1024, 1)) for t, s in samples[::step]]
    return {"clients": args.clients, "requests_per_client": args.requests, "requests": len(records),
            "warmup_requests": len(warmup), "warmup_wrong_or_failed": sum(1 for r in warmup if r[1] != "OK" or not r[3]),
            "expected_requests": args.clients * args.requests, "answered": len(ok),
            "wrong": sum(1 for r in ok if not r[3]), "errors": errors, "wall_s": round(wall, 2),
            "throughput_rps": round(len(ok) / wall, 1), **percentiles_ms([r[2] for r in ok]),
            "per_model": {m: {"answered": sum(1 for r in ok if r[0] == m), **percentiles_ms([r[2] for r in ok
                                                                                           if r[0] == m])}
                          for m in MODELS},
            "rss_samples": len(samples), "rss_first_quarter_mib": round(first / 1024, 1),
            "rss_last_quarter_mib": round(last / 1024, 1),
            "rss_peak_mib": round(max((s for _, s in samples), default=0) / 1024, 1),
            "rss_growth_pct": round(100 * (last - first) / first, 2) if first else None,
            "rss_quarters_mib": [round(q / 1024, 1) for q in quarters],
            # Growth from the second quarter on (kept for runs without a warm-up round).
            "rss_growth_after_warmup_pct": round(100 * (last - quarters[1]) / quarters[1], 2) if quarters[1] else None,
            "rss_series_s_mib": series}


def _runner_loop(model_path, cut, inputs, expected, address, stop_at, interval_s, out):
    """A SplitRunner sending a request every ``interval_s`` while the server is overloaded; every
    answer checked. (Its answers on the device take this machine's CPU, which a real device would
    not: the interval keeps that small.)"""
    from cloudsplit.client import SplitRunner
    from tests.cloudsplit.test_client import cut_plan

    with SplitRunner(model_path, address, compression="none", deadline_s=5.0,
                     planner=lambda runner: cut_plan(runner, cut), probe_backoff_s=(0.05, 0.2)) as runner:
        name = runner.interpreter.get_input_details()[0]["name"]
        k = 0
        while time.monotonic() < stop_at:
            x = inputs[k % len(inputs)]
            outputs = runner.run({name: x})
            answer = next(iter(outputs.values()))
            out.append((runner.last_plan.offloaded, runner.last_plan.fallback_reason,
                        bool(np.array_equal(answer, expected[k % len(inputs)]))))
            k += 1
            time.sleep(interval_s)


def refusal_floor(address, request, capacity: int, count: int) -> dict:
    """Time to refusal with nothing else running: ``capacity`` stalled calls hold every slot, and one
    client sends ``count`` requests in turn, each refused. What the refusal path itself costs, on
    both sides, without the other clients' scheduling."""
    import grpc

    from cloudsplit.connection import ServerConnection

    stop = threading.Event()
    threads, _ = _open_stalled_calls(address, request, capacity, "stall", stop)
    connection = ServerConnection(address)
    client_s, server_s = [], []
    try:
        time.sleep(0.5)
        for k in range(count):
            began = time.perf_counter()
            try:
                request.send(connection, k, timeout=5.0)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and refused_after_s(error) is not None:
                    client_s.append(time.perf_counter() - began)
                    server_s.append(refused_after_s(error))
    finally:
        connection.close()
        stop.set()
        for thread in threads:
            thread.join(30)
    return {"requests": count, "refused": len(client_s), "client_side": percentiles_ms(client_s),
            "server_side": percentiles_ms(server_s)}


def phase_overload(args, models_dir) -> dict:
    capacity = args.capacity
    server = Server(models_dir, "--max-concurrency", str(capacity))
    try:
        at_capacity_wall, at_capacity = run_clients(server.address, models_dir, capacity, 10 ** 9, args.seconds,
                                                    args.client_processes)
        floor = refusal_floor(server.address, load_requests(models_dir)[0], capacity, args.floor_requests)
        runner_records: list = []
        stop_at = time.monotonic() + args.seconds + 2.0   # the client processes take a moment to start
        runners = []
        for k in range(args.runners):
            name = list(MODELS)[k % len(MODELS)]
            with np.load(models_dir / f"{name}.npz") as arrays:
                x, y = arrays["x"], arrays["y"]
            runners.append(threading.Thread(target=_runner_loop, args=(models_dir / f"{name}.edge", MODELS[name],
                                                                       x, y, server.address, stop_at,
                                                                       args.runner_interval_ms / 1e3,
                                                                       runner_records)))
        for runner in runners:
            runner.start()
        overload_wall, overload = run_clients(server.address, models_dir, capacity * args.overload_factor, 10 ** 9,
                                              args.seconds, args.client_processes, args.refused_pause_ms / 1e3)
        for runner in runners:
            runner.join(args.seconds + 120)
    finally:
        server.close()
    base_ok = [r for r in at_capacity if r[1] == "OK"]
    admitted = [r for r in overload if r[1] == "OK"]
    refused = [r for r in overload if r[1] == "RESOURCE_EXHAUSTED"]
    by_admission = [r for r in refused if r[4] is not None]   # the rest: gRPC's own, past its worker pool
    other = {}
    for r in at_capacity + overload:
        if r[1] not in ("OK", "RESOURCE_EXHAUSTED"):
            other[r[1]] = other.get(r[1], 0) + 1
    base = percentiles_ms([r[2] for r in base_ok])
    admitted_ms = percentiles_ms([r[2] for r in admitted])
    base_server = percentiles_ms([r[4] for r in base_ok])
    admitted_server = percentiles_ms([r[4] for r in admitted])
    refusal_ms = percentiles_ms([r[2] for r in refused])
    refusal_server_ms = percentiles_ms([r[4] for r in by_admission])
    by_pool_ms = percentiles_ms([r[2] for r in refused if r[4] is None])
    return {
        "capacity": capacity, "overload_clients": capacity * args.overload_factor, "refusal_floor": floor,
        "refused_pause_ms": args.refused_pause_ms, "seconds": args.seconds,
        "at_capacity": {"answered": len(base_ok), "refused": sum(1 for r in at_capacity if r[1] == "RESOURCE_EXHAUSTED"),
                        "wrong": sum(1 for r in base_ok if not r[3]),
                        "throughput_rps": round(len(base_ok) / at_capacity_wall, 1), **base,
                        "server_side": base_server},
        "overload": {"attempts": len(overload), "offered_rps": round(len(overload) / overload_wall, 1),
                     "admitted": len(admitted), "wrong": sum(1 for r in admitted if not r[3]),
                     "admitted_rps": round(len(admitted) / overload_wall, 1), "admitted_latency": admitted_ms,
                     "admitted_server_side": admitted_server,
                     "refused": len(refused), "refusal_latency": refusal_ms,
                     "refused_within_50ms_pct": round(100 * sum(1 for r in refused if r[2] <= 0.05) / len(refused), 2)
                     if refused else None,
                     "refused_by_admission": len(by_admission),
                     "refused_by_grpc_pool": len(refused) - len(by_admission),
                     "refusal_server_side": refusal_server_ms,
                     "refusal_latency_by_admission": percentiles_ms([r[2] for r in by_admission]),
                     "refusal_latency_by_grpc_pool": by_pool_ms,
                     "refused_within_50ms_server_side_pct":
                         round(100 * sum(1 for r in by_admission if r[4] <= 0.05) / len(by_admission), 2)
                         if by_admission else None,
                     "p50_ratio_to_capacity": round(admitted_ms["p50_ms"] / base["p50_ms"], 2)
                     if admitted and base_ok else None,
                     "p99_ratio_to_capacity": round(admitted_ms["p99_ms"] / base["p99_ms"], 2)
                     if admitted and base_ok else None},
        "other_errors": other,
        "runners": {"runners": args.runners, "requests": len(runner_records),
                    "offloaded": sum(1 for r in runner_records if r[0]),
                    "answered_on_device": sum(1 for r in runner_records if not r[0]),
                    "refused_then_device": sum(1 for r in runner_records if r[1] and "RESOURCE_EXHAUSTED" in r[1]),
                    "wrong": sum(1 for r in runner_records if not r[2])},
    }


def _open_stalled_calls(address, request, count, how, stop):
    """``count`` Infer calls that send their header and then stall / drip / hang up; returns the
    threads reading their outcomes (code names appended to ``outcomes``)."""
    import grpc

    from cloudsplit import transfer
    from cloudsplit.protos import split_pb2 as pb
    from cloudsplit.protos import split_pb2_grpc as pb_grpc

    outcomes: list[str] = []
    channels = [grpc.insecure_channel(address) for _ in range(count)]
    drip_chunks = list(transfer.chunk_messages(request.tensors, 16))   # many small chunks: a slow upload

    def messages():
        yield pb.InferMessage(header=request.header)
        if how == "drip":
            for message in drip_chunks:
                if stop.wait(0.5):
                    return
                yield message
        else:
            stop.wait()

    def read(channel):
        call = pb_grpc.SplitInferenceStub(channel).Infer(messages())   # no deadline: the server's limits apply
        if how == "disconnect":
            time.sleep(0.3)
            call.cancel()
        try:
            for _ in call:
                pass
            outcomes.append("OK")
        except grpc.RpcError as error:
            outcomes.append(error.code().name)
        channel.close()

    threads = [threading.Thread(target=read, args=(channel,), daemon=True) for channel in channels]
    for thread in threads:
        thread.start()
    return threads, outcomes


def _time_until_served(address, request, limit_s) -> tuple[float | None, int]:
    """Seconds until a normal request is answered (None past ``limit_s``), and the refusals before."""
    import grpc

    from cloudsplit.connection import ServerConnection

    connection = ServerConnection(address)
    began = time.monotonic()
    refusals = 0
    try:
        while time.monotonic() - began < limit_s:
            try:
                correct, _ = request.send(connection, 1, timeout=5.0)
                assert correct, "a wrong answer"
                return time.monotonic() - began, refusals
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refusals += 1
                time.sleep(0.02)
        return None, refusals
    finally:
        connection.close()


def phase_stall(args, models_dir) -> dict:
    request = load_requests(models_dir)[0]
    server = Server(models_dir, "--max-concurrency", str(args.capacity), "--stream-idle-s", str(args.stream_idle_s),
                    "--max-call-s", str(args.max_call_s))
    results = {"capacity": args.capacity, "stream_idle_s": args.stream_idle_s, "max_call_s": args.max_call_s}
    try:
        # Fewer stalled calls than slots: everyone else is still served, at once.
        stop = threading.Event()
        threads, outcomes = _open_stalled_calls(server.address, request, args.capacity - 1, "stall", stop)
        time.sleep(0.5)
        served_s, refusals = _time_until_served(server.address, request, 5.0)
        results["others_served_beside_stalled"] = {"stalled": args.capacity - 1, "served_after_s": served_s,
                                                   "refusals": refusals}
        stop.set()
        for thread in threads:
            thread.join(args.max_call_s + 10)
        for how in ("stall", "drip", "disconnect"):
            stop = threading.Event()
            threads, outcomes = _open_stalled_calls(server.address, request, args.capacity, how, stop)
            time.sleep(0.5 if how != "disconnect" else 0.1)
            served_s, refusals = _time_until_served(server.address, request, args.max_call_s + 10)
            stop.set()
            for thread in threads:
                thread.join(args.max_call_s + 10)
            results[how] = {"calls": args.capacity, "served_after_s": None if served_s is None else round(served_s, 2),
                            "refused_while_held": refusals, "their_outcomes": sorted(set(outcomes))}
    finally:
        server.close()
    return results


# ---- report --------------------------------------------------------------------------------------

def _load_average(phase: dict) -> str:
    before, after = phase.get("load_average", (None, None))
    return f"{before} before the phase, {after} after"


def markdown(report: dict) -> str:
    lines = []
    load = report.get("load")
    if load:
        lines += ["| clients | requests | answered | wrong | errors | throughput | p50 | p99 | server RSS by quarter "
                  "(peak) | growth Q1 → Q4 | growth Q2 → Q4 |", "|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| {load['clients']} | {load['requests']} of {load['expected_requests']} | {load['answered']} | "
                  f"{load['wrong']} | {sum(load['errors'].values())} | {load['throughput_rps']} req/s | "
                  f"{load['p50_ms']} ms | {load['p99_ms']} ms | "
                  f"{' / '.join(str(q) for q in load['rss_quarters_mib'])} MiB ({load['rss_peak_mib']}) | "
                  f"{load['rss_growth_pct']} % | {load['rss_growth_after_warmup_pct']} % |", "",
                  f"Before the measured run: a warm-up round of {load['warmup_requests']} requests "
                  f"({load['warmup_wrong_or_failed']} wrong or failed), not sampled. Load average "
                  f"{_load_average(load)}.", ""]
    over = report.get("overload")
    if over:
        cap, ov = over["at_capacity"], over["overload"]
        lines += ["| run | clients | answered by server | refused | wrong | server throughput | p50 | p99 | "
                  "server queue+compute p50 / p99 |", "|---|---|---|---|---|---|---|---|---|",
                  f"| at capacity | {over['capacity']} | {cap['answered']} | {cap['refused']} | {cap['wrong']} | "
                  f"{cap['throughput_rps']} req/s | {cap['p50_ms']} ms | {cap['p99_ms']} ms | "
                  f"{cap['server_side']['p50_ms']} / {cap['server_side']['p99_ms']} ms |",
                  f"| {over['overload_clients'] // over['capacity']}x overload | {over['overload_clients']} | "
                  f"{ov['admitted']} | {ov['refused']} | {ov['wrong']} | {ov['admitted_rps']} req/s | "
                  f"{ov['admitted_latency']['p50_ms']} ms | {ov['admitted_latency']['p99_ms']} ms | "
                  f"{ov['admitted_server_side']['p50_ms']} / {ov['admitted_server_side']['p99_ms']} ms |", "",
                  f"Time to refusal as the client saw it: p50 {ov['refusal_latency']['p50_ms']} ms, "
                  f"p99 {ov['refusal_latency']['p99_ms']} ms, max {ov['refusal_latency']['max_ms']} ms; "
                  f"{ov['refused_within_50ms_pct']} % within 50 ms. As the server saw it ({ov['refused_by_admission']} "
                  f"refused by admission, {ov['refused_by_grpc_pool']} by gRPC past its worker pool): "
                  f"p50 {ov['refusal_server_side']['p50_ms']} ms, p99 {ov['refusal_server_side']['p99_ms']} ms, "
                  f"max {ov['refusal_server_side']['max_ms']} ms; {ov['refused_within_50ms_server_side_pct']} % within "
                  f"50 ms. Client-side p50 / p99 of those refused by admission "
                  f"{ov['refusal_latency_by_admission']['p50_ms']} / "
                  f"{ov['refusal_latency_by_admission']['p99_ms']} ms, "
                  f"by the gRPC pool {ov['refusal_latency_by_grpc_pool']['p50_ms']} / "
                  f"{ov['refusal_latency_by_grpc_pool']['p99_ms']} ms. One client alone, every slot held by a "
                  f"stalled call ({over['refusal_floor']['refused']} "
                  f"refusals in turn): client p50 {over['refusal_floor']['client_side']['p50_ms']} / p99 "
                  f"{over['refusal_floor']['client_side']['p99_ms']} ms, server p50 "
                  f"{over['refusal_floor']['server_side']['p50_ms']} / p99 "
                  f"{over['refusal_floor']['server_side']['p99_ms']}"
                  f" ms. "
                  f"Admitted latency over the at-capacity run: p50 x{ov['p50_ratio_to_capacity']}, "
                  f"p99 x{ov['p99_ratio_to_capacity']}. Other errors: {over['other_errors'] or 'none'}.", "",
                  f"Load average {_load_average(over)}. SplitRunner clients meanwhile: "
                  f"{over['runners']['requests']} requests, "
                  f"{over['runners']['offloaded']} offloaded, {over['runners']['answered_on_device']} answered on the "
                  f"device ({over['runners']['refused_then_device']} right after a RESOURCE_EXHAUSTED), "
                  f"{over['runners']['wrong']} wrong.", ""]
    stall = report.get("stall")
    if stall:
        lines += ["| clients holding the slots | normal request refused meanwhile | served after | their calls ended |",
                  "|---|---|---|---|"]
        beside = stall["others_served_beside_stalled"]
        lines.append(f"| {beside['stalled']} stalled (1 slot free) | {beside['refusals']} | "
                     f"{beside['served_after_s'] and round(beside['served_after_s'], 2)} s | — |")
        for how in ("stall", "drip", "disconnect"):
            row = stall[how]
            lines.append(f"| {row['calls']} {how} | {row['refused_while_held']} | {row['served_after_s']} s | "
                         f"{', '.join(row['their_outcomes'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phases", nargs="*", default=["load", "overload", "stall"],
                        help="which phases to run (default: all three)")
    parser.add_argument("--clients", type=int, default=50, help="closed-loop clients in the load phase")
    parser.add_argument("--requests", type=int, default=1000, help="requests per client in the load phase")
    parser.add_argument("--client-processes", type=int, default=2, help="processes the clients run in")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="the load phase stops here, done or not")
    parser.add_argument("--warmup-requests", type=int, default=20,
                        help="requests per client sent before the measured load run (not sampled for RSS)")
    parser.add_argument("--capacity", type=int, default=4, help="overload and stall phases: --max-concurrency")
    parser.add_argument("--overload-factor", type=int, default=4,
                        help="the overload run has this many times --capacity clients")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each overload run")
    parser.add_argument("--refused-pause-ms", type=float, default=10.0,
                        help="a refused overload client waits this long before its next request")
    parser.add_argument("--floor-requests", type=int, default=200,
                        help="overload phase: refusals timed with one client alone and every slot held")
    parser.add_argument("--runners", type=int, default=2, help="SplitRunner clients during the overload")
    parser.add_argument("--runner-interval-ms", type=float, default=20.0, help="each runner's pause between requests")
    parser.add_argument("--stream-idle-s", type=float, default=1.0, help="stall phase: the server's --stream-idle-s")
    parser.add_argument("--max-call-s", type=float, default=3.0, help="stall phase: the server's --max-call-s")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 8 clients x 25 requests, 3 s overload runs, 50 refusals alone")
    parser.add_argument("--out", help="write load-<time>.json and .md here")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.requests, args.seconds, args.warmup_requests, args.floor_requests = 8, 25, 3.0, 2, 50
    unknown = set(args.phases) - {"load", "overload", "stall"}
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")

    report = {"command": " ".join([os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "cpu_count": os.cpu_count(),
              "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        models_dir = pathlib.Path(tmp)
        build_models(models_dir)
        for phase in ("load", "overload", "stall"):
            if phase in args.phases:
                before = os.getloadavg()[0]
                report[phase] = {"load": phase_load, "overload": phase_overload, "stall": phase_stall}[phase](
                    args, models_dir)
                report[phase]["load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
                print(f"{phase}: {json.dumps(report[phase])}", flush=True)
    report["load_average_after"] = os.getloadavg()
    table = markdown(report)
    print(table)
    print(json.dumps(report))
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"load-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
        stem.with_suffix(".md").write_text(table)
    load = report.get("load")
    failed = bool(load and (load["wrong"] or load["errors"] or load["answered"] != load["expected_requests"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""SplitRunner over real gRPC on loopback: correctness, fallback, recovery, re-planning.

Faults are real: the server runs in a subprocess that is killed with SIGKILL while it holds a request,
and restarted on the same port. The slow uplink is the in-process shaping fallback
(``SplitRunner.uplink_limit_bps``), which delays the sender so every timing the client takes sees it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

import edge
from cloudsplit.client import SplitRunner
from cloudsplit.server import start_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELATIVE_ERROR_BOUND = {"none": 0.0, "fp16": 5e-3, "int8": 4e-2, "int8-per-tensor": 6e-2}


@dataclass
class Predicted:
    total_ms: float


@dataclass
class FixedPlan:
    device_ops: list
    server_ops: list
    upload: list
    download: list
    predicted: Predicted = field(default_factory=lambda: Predicted(0.0))
    kind: str = "split"


def cut_plan(runner: SplitRunner, cut: int, total_ms: float = 0.0) -> FixedPlan:
    """Ops [0, cut) on the device, the rest on the server."""
    server_ops = list(range(cut, runner.num_ops))
    written = {t for op in server_ops for t in runner.ops[op]["outputs"]}
    upload = sorted({t for op in server_ops for t in runner.ops[op]["inputs"]
                     if t >= 0 and runner.tensor_details[t]["kind"] == "activation" and t not in written})
    download = [d["index"] for d in runner.interpreter.get_output_details() if d["index"] in written]
    kind = "device" if cut == runner.num_ops else "server" if cut == 0 else "split"
    return FixedPlan(list(range(cut)), server_ops, upload, download, Predicted(total_ms), kind)


def fixed_cut(cut: int):
    return lambda runner: cut_plan(runner, cut)


def chain_planner(device_slowdown: float):
    """A test oracle of the partitioner for chains: the cut with the least predicted latency, with the
    device ``device_slowdown`` times slower than its profile (a phone next to a server)."""

    def plan(runner: SplitRunner) -> FixedPlan:
        best = None
        net = runner.network
        for cut in range(runner.num_ops + 1):
            candidate = cut_plan(runner, cut)
            device = device_slowdown * sum(runner.device_costs[:cut])
            if cut == runner.num_ops:
                total = device
            else:
                upload = sum(runner.wire_bytes(t) for t in candidate.upload) * 8 / net.uplink_bps * 1e3
                server = net.server_load * sum(runner.server_op_ms[cut:])
                total = device + upload + server + net.rtt_ms
            if best is None or total < best.predicted.total_ms:
                candidate.predicted = Predicted(total)
                best = candidate
        return best

    return plan


def local_outputs(model) -> dict[str, np.ndarray]:
    interpreter = edge.Interpreter(model_content=model.data)
    return interpreter.get_signature_runner(None)(**model.feeds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_SCRIPT = """
import sys, time
from cloudsplit.server import start_server
handle = start_server(sys.argv[1], port=int(sys.argv[2]), delay_s=float(sys.argv[3]),
                      on_request=lambda digest: print("received", digest, flush=True))
print("listening", handle.port, flush=True)
handle.wait()
"""


class ServerProcess:
    def __init__(self, models_dir, port: int, delay_s: float = 0.0):
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(models_dir), str(port), str(delay_s)],
                                        stdout=subprocess.PIPE, text=True, env=env)
        self.wait_for("listening", timeout=30)

    def wait_for(self, word: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the server exited (status {self.process.poll()}) before printing {word!r}")
            if line.startswith(word):
                return line
        raise TimeoutError(word)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def assert_close(outputs, expected, mode):
    scale = max(float(np.max(np.abs(v))) for v in expected.values())
    for name, value in expected.items():
        assert outputs[name].shape == value.shape and outputs[name].dtype == value.dtype
        error = float(np.max(np.abs(outputs[name] - value))) / scale
        assert error <= RELATIVE_ERROR_BOUND[mode], f"{name}: relative error {error:.3g} under {mode}"
        if mode == "none":
            assert np.array_equal(outputs[name], value)


@pytest.mark.parametrize("mode", ["none", "fp16", "int8", "int8-per-tensor"])
@pytest.mark.parametrize("model_name, cut", [("mobilenet", 17), ("resnet", 9), ("bert", 30), ("bert", 0)])
def test_split_run_equals_local(request, tmp_path, server, model_name, cut, mode):
    model = request.getfixturevalue(model_name)
    path = model.write(tmp_path)
    with SplitRunner(path, server.address, compression=mode, planner=fixed_cut(cut)) as runner:
        outputs = runner.run(model.feeds)
        record = runner.last_plan
    assert_close(outputs, local_outputs(model), mode)
    assert record.offloaded and record.fallback_reason is None
    assert record.ran_on_server == list(range(cut, runner.num_ops))
    assert record.measured.server_ms > 0 and record.upload_bytes > 0 and record.download_bytes > 0
    assert record.predicted is not None


def test_all_device_plan_sends_nothing(tmp_path, server, mobilenet):
    path = mobilenet.write(tmp_path)
    with SplitRunner(path, server.address, planner=lambda r: cut_plan(r, r.num_ops)) as runner:
        outputs = runner.run(mobilenet.feeds)
        assert runner.last_plan.server_ops == [] and runner.last_plan.upload_bytes == 0
    assert_close(outputs, local_outputs(mobilenet), "none")


def test_unreachable_server_answers_locally(tmp_path, mobilenet):
    path = mobilenet.write(tmp_path)
    started = time.monotonic()
    with SplitRunner(path, f"127.0.0.1:{free_port()}", planner=fixed_cut(10), connect_timeout_s=1.0) as runner:
        outputs = runner.run(mobilenet.feeds)
        assert runner.plan is None and not runner.last_plan.offloaded
        assert runner.last_plan.placement == ["device"] * runner.num_ops
    assert_close(outputs, local_outputs(mobilenet), "none")
    assert time.monotonic() - started < 5


def test_server_slower_than_deadline_falls_back(tmp_path, mobilenet):
    path = mobilenet.write(tmp_path)
    with start_server([mobilenet.data], delay_s=0.6) as handle:
        with SplitRunner(path, handle.address, planner=fixed_cut(20), deadline_s=0.2) as runner:
            began = time.monotonic()
            outputs = runner.run(mobilenet.feeds)
            elapsed = time.monotonic() - began
            assert "DEADLINE_EXCEEDED" in runner.last_plan.fallback_reason
            assert not runner.last_plan.offloaded and runner.fallbacks == 1
    assert_close(outputs, local_outputs(mobilenet), "none")
    assert elapsed < 0.55, f"the fallback waited {elapsed:.2f} s, past the 0.2 s deadline"


def test_server_error_falls_back(tmp_path, mobilenet):
    """A server that refuses the runner (wrong token) is a server error: the answer comes locally."""
    path = mobilenet.write(tmp_path)
    with start_server([mobilenet.data], token="right") as handle:
        with SplitRunner(path, handle.address, planner=fixed_cut(20), token="wrong") as refused:
            outputs = refused.run(mobilenet.feeds)
            assert not refused.last_plan.offloaded and refused.plan is None
        with SplitRunner(path, handle.address, planner=fixed_cut(20), token="right") as accepted:
            accepted.run(mobilenet.feeds)
            assert accepted.last_plan.offloaded
    assert_close(outputs, local_outputs(mobilenet), "none")


def test_model_is_registered_when_the_server_lacks_it(tmp_path, resnet, mobilenet):
    path = resnet.write(tmp_path)
    with start_server([mobilenet.data]) as handle:
        assert handle.service.registry.get(resnet.sha256) is None
        with SplitRunner(path, handle.address, planner=fixed_cut(5), compression="none") as runner:
            outputs = runner.run(resnet.feeds)
            assert runner.last_plan.offloaded
        assert handle.service.registry.get(resnet.sha256) is not None
    assert_close(outputs, local_outputs(resnet), "none")


def test_server_killed_mid_request_then_back(tmp_path, models_dir, mobilenet):
    path = mobilenet.write(tmp_path)
    port = free_port()
    slow = ServerProcess(models_dir, port, delay_s=2.0)
    runner = SplitRunner(path, f"127.0.0.1:{port}", planner=fixed_cut(20), deadline_s=10.0, compression="none",
                         probe_backoff_s=(0.1, 0.4))
    assert runner.server_up
    expected = local_outputs(mobilenet)
    result = {}
    worker = threading.Thread(target=lambda: result.update(outputs=runner.run(mobilenet.feeds)))
    worker.start()
    slow.wait_for("received", timeout=10)
    slow.kill()
    worker.join(10)
    assert not worker.is_alive(), "run() did not return after the server died"
    assert_close(result["outputs"], expected, "none")
    record = runner.last_plan
    assert not record.offloaded and "UNAVAILABLE" in record.fallback_reason
    assert record.measured.total_ms < 5000, "the answer waited for the dead server's deadline"

    assert_close(runner.run(mobilenet.feeds), expected, "none")
    assert not runner.last_plan.offloaded

    back = ServerProcess(models_dir, port)
    try:
        resumed_after = None
        for attempt in range(60):
            outputs = runner.run(mobilenet.feeds)
            assert_close(outputs, expected, "none")
            if runner.last_plan.offloaded:
                resumed_after = attempt
                break
            time.sleep(0.05)
        assert resumed_after is not None, "offloading did not resume after the server came back"
        assert runner.last_plan.ran_on_server == list(range(20, runner.num_ops))
    finally:
        back.process.send_signal(signal.SIGTERM)
        back.process.wait(10)
        runner.close()


def profiled_device_ms(model, slowdown: float) -> list[float]:
    """Per-op times from the runtime's profiler, times ``slowdown`` (a phone next to a server)."""
    interpreter = edge.Interpreter(model_content=model.data, profiling=True)
    runner = interpreter.get_signature_runner(None)
    runner(**model.feeds)
    interpreter.reset_profile()
    for _ in range(3):
        runner(**model.feeds)
    return [slowdown * entry["ms"] for entry in interpreter.profile()]


@pytest.mark.parametrize("planner", ["partition", "chain oracle"])
def test_bandwidth_drop_leads_to_a_new_plan(tmp_path, server, mobilenet, planner):
    path = mobilenet.write(tmp_path)
    options = dict(compression="none", rtt_probe_interval_s=60)
    if planner == "partition":
        options["device_costs"] = profiled_device_ms(mobilenet, 200.0)
    else:
        options["planner"] = chain_planner(device_slowdown=200.0)
    with SplitRunner(path, server.address, **options) as runner:
        runner.run(mobilenet.feeds)
        fast_plan = runner.plan
        assert fast_plan.server_ops, "at loopback speed the slowed-down device should offload"
        first_upload = sum(runner.wire_bytes(t) for t in fast_plan.upload)
        replans_before = runner.replans
        runner.uplink_limit_bps = 2e6
        changed_after = None
        for request in range(1, 6):
            outputs = runner.run(mobilenet.feeds)
            # The cut tensors (12 kB and less) are too small to average in; a slow one flags the drop
            # and the uplink probe after the answer measures it. Between requests, as in an app.
            runner.settle()
            assert_close(outputs, local_outputs(mobilenet), "none")
            if runner.plan.server_ops != fast_plan.server_ops:
                changed_after = request
                break
        assert changed_after is not None and changed_after <= 3, "no new plan within 3 requests"
        assert runner.replans > replans_before
        assert 0.5e6 < runner.network.uplink_bps < 4e6, f"uplink estimate {runner.network.uplink_bps:.3g}"
        slow_plan = runner.plan
        assert sum(runner.wire_bytes(t) for t in slow_plan.upload) < first_upload or not slow_plan.server_ops


def test_partitioner_plan_runs_and_reports_both_breakdowns(tmp_path, server, resnet):
    from cloudsplit import partition

    path = resnet.write(tmp_path)
    with SplitRunner(path, server.address, compression="fp16",
                     device_costs=profiled_device_ms(resnet, 200.0)) as runner:
        outputs = runner.run(resnet.feeds)
        record = runner.last_plan
        assert isinstance(record.predicted, partition.Breakdown)
        assert record.kind in ("server", "split") and record.offloaded
        assert record.ran_on_server == list(runner.plan.server_ops)
        assert record.measured.server_ms > 0 and record.measured.total_ms > 0
    assert_close(outputs, local_outputs(resnet), "fp16")


def test_device_part_that_is_not_a_prefix(tmp_path, server, bert):
    """A predecessor-closed device part that skips ops (a DAG cut through the attention's query/key/value branches): the
    tensors must be copied out and set back without reading arena bytes another op reused."""
    from cloudsplit import partition

    path = bert.write(tmp_path)
    with SplitRunner(path, server.address, compression="none", planner=fixed_cut(0)) as probe:
        costs = partition.model_costs([1.0] * probe.num_ops, [1.0] * probe.num_ops, probe.ops,
                                      probe.tensor_details)
    graph = partition.OpGraph(costs)
    # A prefix with a hole: op `skipped` feeds only ops past the prefix, so the rest stays closed.
    device = next(set(range(end)) - {skipped} for end in range(12, graph.n) for skipped in range(1, end - 1)
                  if not any(skipped in graph.preds[op] for op in range(end)))

    def planner(runner):
        return FixedPlan(sorted(device), [op for op in range(runner.num_ops) if op not in device],
                         partition.uploads_for(graph, device), partition.downloads_for(graph, device))

    with SplitRunner(path, server.address, compression="none", planner=planner) as runner:
        outputs = runner.run(bert.feeds)
        assert runner.last_plan.offloaded
        assert runner.last_plan.device_ops != list(range(len(runner.last_plan.device_ops)))
    assert_close(outputs, local_outputs(bert), "none")


def test_serve_command_shuts_down_on_sigterm(models_dir):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen([sys.executable, "-m", "cloudsplit.server", "--models", str(models_dir),
                                "--port", str(port), "--host", "127.0.0.1", "--grace-s", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "listening" in line:
            break
    assert any(".edge" in line for line in lines), lines
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=15)
    assert process.returncode == 0, "".join(lines) + rest
    assert "shutting down" in rest

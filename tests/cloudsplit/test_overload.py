"""The server at and past its limits, over real gRPC on loopback.

Past ``max_concurrency`` a request is refused with RESOURCE_EXHAUSTED at once instead of waiting
in a queue; past the worker pool gRPC itself refuses; a SplitRunner answers every refused request
on the device; clients that stall, drip or hang up mid-stream lose their call at the server's
limits and free their worker and slot, and the server keeps serving everyone else. The one timing
asserted is "refused, not queued": a refusal must come well before the held requests finish (the
``delay_s`` hook keeps them on the server for a known time). The figures under real load are
benchmarks/load_test.py's (this file also runs its quick mode once).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from cloudsplit import transfer
from cloudsplit.client import SplitRunner
from cloudsplit.connection import ServerConnection
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc
from cloudsplit.server import start_server
from tests.cloudsplit.conftest import DevicePart
from tests.cloudsplit.test_client import fixed_cut, local_outputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUT = 1


def expected(model) -> np.ndarray:
    return next(iter(DevicePart(model, CUT).local_outputs().values()))


def send(address, model, timeout=20.0):
    """(seconds, status name, outputs or None) of one split request."""
    header, tensors = DevicePart(model, CUT).request()
    connection = ServerConnection(address)
    began = time.perf_counter()
    try:
        reply = connection.infer(header, tensors, timeout=timeout)
        return time.perf_counter() - began, "OK", next(iter(reply.outputs.values()))
    except grpc.RpcError as error:
        return time.perf_counter() - began, error.code().name, None
    finally:
        connection.close()


def in_background(function, *args):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function(*args)), daemon=True)
    thread.start()
    return thread, result


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


class StalledCall:
    """An Infer call from a raw stub that sends its header and then ``how``: "stall" (sends
    nothing more), "drip" (one 16-byte chunk every ``every_s``), or "disconnect" (cancels after
    the header). No deadline: only the server's limits end it."""

    def __init__(self, address, model, how: str, every_s: float = 0.2):
        header, tensors = DevicePart(model, CUT).request()
        self.release = threading.Event()
        chunks = list(transfer.chunk_messages(tensors, 16))

        def messages():
            yield pb.InferMessage(header=header)
            if how == "drip":
                for chunk in chunks:
                    if self.release.wait(every_s):
                        return
                    yield chunk
            self.release.wait()

        self.channel = grpc.insecure_channel(address)
        self.call = pb_grpc.SplitInferenceStub(self.channel).Infer(messages())
        self.outcome = None
        self.ended_at = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if how == "disconnect":
            time.sleep(0.2)
            self.call.cancel()

    def _read(self):
        try:
            for _ in self.call:
                pass
            self.outcome = "OK"
        except grpc.RpcError as error:
            self.outcome = error.code().name
        self.ended_at = time.monotonic()

    def close(self):
        self.release.set()
        self.thread.join(10)
        self.channel.close()


def test_requests_past_the_limit_are_refused_at_once_not_queued(mlp):
    with start_server([mlp.data], max_concurrency=2, delay_s=1.0, batching=False) as handle:
        admission = handle.service.admission
        holders = [in_background(send, handle.address, mlp) for _ in range(2)]
        assert wait_for(lambda: admission.in_flight == 2, 10)
        refused = [in_background(send, handle.address, mlp) for _ in range(8)]
        for thread, _ in refused:
            thread.join(20)
        outcomes = [result["value"] for _, result in refused]
        assert [o[1] for o in outcomes] == ["RESOURCE_EXHAUSTED"] * 8
        # Queued behind the held requests, a refusal would take their full second.
        assert max(o[0] for o in outcomes) < 0.5, [round(o[0], 3) for o in outcomes]
        assert admission.refused == 8
        for thread, result in holders:
            thread.join(20)
            seconds, status, outputs = result["value"]
            assert status == "OK"
            np.testing.assert_array_equal(outputs, expected(mlp))
        assert handle.service.requests_run == 2


def test_a_refusal_comes_before_the_request_is_read_and_says_how_long_it_took(mlp):
    """A call past the limit is refused before its header is read (this one never sends it), and
    the refusal's trailing metadata carries the server's time from the call's arrival to it."""
    from cloudsplit.service import REFUSED_AFTER_MS_KEY

    with start_server([mlp.data], max_concurrency=1, delay_s=1.0, batching=False) as handle:
        holder = in_background(send, handle.address, mlp)
        assert wait_for(lambda: handle.service.admission.in_flight == 1, 10)
        release = threading.Event()

        def nothing_yet():
            release.wait()
            yield from ()

        channel = grpc.insecure_channel(handle.address)
        try:
            began = time.perf_counter()
            with pytest.raises(grpc.RpcError) as caught:
                for _ in pb_grpc.SplitInferenceStub(channel).Infer(nothing_yet(), timeout=10):
                    pass
            client_ms = (time.perf_counter() - began) * 1e3
        finally:
            release.set()
            channel.close()
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
        assert client_ms < 500, "the refusal waited for the held request"
        server_ms = float(dict(caught.value.trailing_metadata())[REFUSED_AFTER_MS_KEY])
        assert 0 <= server_ms <= client_ms
        holder[0].join(20)
        assert holder[1]["value"][1] == "OK" and handle.service.admission.in_flight == 0


def test_calls_past_the_worker_pool_are_refused_by_grpc_not_queued(mlp):
    """Stalled calls fill every worker; the next call is refused instead of waiting for one."""
    with start_server([mlp.data], max_concurrency=1, stream_idle_s=30) as handle:
        release = threading.Event()
        channel = grpc.insecure_channel(handle.address)
        stub = pb_grpc.SplitInferenceStub(channel)

        def probe_chunks():   # an uplink probe that never ends: it holds a worker, not an inference slot
            yield pb.ProbeChunk(data=b"x")
            release.wait()

        stalled = [stub.MeasureUplink.future(probe_chunks()) for _ in range(handle.workers)]
        try:
            time.sleep(1.0)
            assert not any(call.done() for call in stalled)
            connection = ServerConnection(handle.address)
            began = time.perf_counter()
            with pytest.raises(grpc.RpcError) as caught:
                connection.get_profile(mlp.sha256, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
            assert time.perf_counter() - began < 5, "the call waited for a worker"
            connection.close()
        finally:
            release.set()
            for call in stalled:
                call.result(10)
            channel.close()
        seconds, status, outputs = send(handle.address, mlp)
        assert status == "OK"


def test_a_split_runner_answers_every_refused_request_on_the_device(tmp_path, mlp):
    with start_server([mlp.data], max_concurrency=1, delay_s=0.3, batching=False) as handle:
        stop = threading.Event()

        def hold():   # keeps the server's one slot busy
            while not stop.is_set():
                send(handle.address, mlp)

        holder = threading.Thread(target=hold, daemon=True)
        holder.start()
        assert wait_for(lambda: handle.service.admission.in_flight == 1, 10)
        reasons = []
        try:
            with SplitRunner(mlp.write(tmp_path), handle.address, planner=fixed_cut(CUT), compression="none",
                             deadline_s=5.0, probe_backoff_s=(0.01, 0.05)) as runner:
                for _ in range(10):
                    outputs = runner.run(mlp.feeds)
                    for name, value in local_outputs(mlp).items():
                        np.testing.assert_array_equal(outputs[name], value)
                    reasons.append(runner.last_plan.fallback_reason)
                    runner.settle(5)
        finally:
            stop.set()
            holder.join(10)
        assert any(reason and reason.startswith("RESOURCE_EXHAUSTED") for reason in reasons), reasons
        assert handle.service.admission.refused >= 1


@pytest.mark.parametrize("how", ["stall", "drip"])
def test_stalled_and_dripping_streams_lose_their_call_and_free_their_slot(mlp, how):
    idle_s, max_call_s = 0.5, 2.0
    with start_server([mlp.data], max_concurrency=2, stream_idle_s=idle_s, max_call_s=max_call_s) as handle:
        admission = handle.service.admission
        began = time.monotonic()
        held = [StalledCall(handle.address, mlp, how)]
        try:
            assert wait_for(lambda: admission.in_flight == 1, 5)
            seconds, status, outputs = send(handle.address, mlp)   # one slot left: served meanwhile
            assert status == "OK"
            np.testing.assert_array_equal(outputs, expected(mlp))
            held.append(StalledCall(handle.address, mlp, how))
            assert wait_for(lambda: admission.in_flight == 2, 5)
            assert send(handle.address, mlp)[1] == "RESOURCE_EXHAUSTED"   # every slot held
            limit = idle_s if how == "stall" else max_call_s
            assert wait_for(lambda: admission.in_flight == 0, limit + 5)
            freed_after = time.monotonic() - began
            assert wait_for(lambda: all(call.outcome for call in held), 5)
        finally:
            for call in held:
                call.close()
        assert [call.outcome for call in held] == ["CANCELLED", "CANCELLED"]
        assert handle.guard.cancelled == 2
        if how == "drip":   # each chunk came within the idle limit: the call limit ended it
            assert freed_after >= max_call_s - 0.1, freed_after
        seconds, status, outputs = send(handle.address, mlp)
        assert status == "OK"
        np.testing.assert_array_equal(outputs, expected(mlp))


def test_a_client_that_hangs_up_mid_stream_frees_its_slot_at_once(mlp):
    with start_server([mlp.data], max_concurrency=1, stream_idle_s=30, max_call_s=60) as handle:
        call = StalledCall(handle.address, mlp, "disconnect")
        try:
            assert wait_for(lambda: handle.service.admission.admitted == 1, 5)
            assert wait_for(lambda: handle.service.admission.in_flight == 0, 5)
        finally:
            call.close()
        assert call.outcome == "CANCELLED" and handle.guard.cancelled == 0
        assert send(handle.address, mlp)[1] == "OK"


def test_a_client_that_does_not_read_its_reply_loses_the_call_at_the_limit(mlp):
    with start_server([mlp.data], max_call_s=1.0) as handle:
        channel = grpc.insecure_channel(handle.address)
        stream = pb_grpc.SplitInferenceStub(channel).MeasureDownlink(pb.DownlinkProbeRequest(bytes=16 << 20))
        next(stream)   # the call is under way; the rest is never read
        assert wait_for(lambda: handle.guard.cancelled == 1, 10)
        with pytest.raises(grpc.RpcError) as caught:
            for _ in stream:
                pass
        assert caught.value.code() == grpc.StatusCode.CANCELLED
        channel.close()


def test_an_infer_stream_session_outlives_the_call_limit(mlp):
    """Sessions are bounded by the idle limit only: requests spaced within it keep the stream."""
    with start_server([mlp.data], stream_idle_s=2.0, max_call_s=0.5) as handle:
        part = DevicePart(mlp, CUT)

        def messages():
            for k in range(3):
                header, tensors = part.request(request_id=k + 1)
                yield pb.InferMessage(header=header)
                yield from transfer.chunk_messages(tensors, 1 << 20)
                time.sleep(0.4)

        channel = grpc.insecure_channel(handle.address)
        replies = [m.reply.request_id for m in pb_grpc.SplitInferenceStub(channel).InferStream(messages(), timeout=20)
                   if m.WhichOneof("part") == "reply"]
        channel.close()
        assert replies == [1, 2, 3] and handle.guard.cancelled == 0


def test_finished_calls_leave_nothing_behind_in_the_stream_guard(mlp):
    """Every call arms the guard's timers; a finished call's must not keep its context (and the
    messages it holds) alive until its limit comes up."""
    with start_server([mlp.data]) as handle:
        header, tensors = DevicePart(mlp, CUT).request()
        connection = ServerConnection(handle.address)
        for _ in range(400):
            connection.infer(header, tensors, timeout=20)
        connection.close()
        heap = handle.guard.watchdog._heap
        assert all(ticket[2] is None for ticket in heap), "a finished call's context is still held"
        assert len(heap) < 1000, len(heap)


def test_load_test_quick_answers_everything_right(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "benchmarks/load_test.py", "load", "--quick", "--client-processes", "1",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (report_path,) = tmp_path.glob("load-*.json")
    load = json.loads(report_path.read_text())["load"]
    assert load["answered"] == load["expected_requests"] == 8 * 25
    assert load["wrong"] == 0 and load["errors"] == {}
    assert load["p50_ms"] > 0 and load["rss_samples"] > 0

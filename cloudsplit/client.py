"""SplitRunner: run a model split between this device and a server, and always answer.

``SplitRunner(model_path, server="host:port").run({input_name: array})`` runs the device part of the
current plan with ``edge``, sends the cut tensors (compressed) to the server, which runs the rest with
the same runtime and the same model bytes, and returns ``{output_name: array}``. ``last_plan`` says
where each op ran and how long each part took, next to what the partitioner predicted.

What it keeps measuring, and what it does with it:

- uplink and downlink bandwidth, each from its own transfers, timed at the receiver: the server
  reports how long an upload took from its header's arrival to its last chunk's, the client times a
  reply from its header to its last chunk, so neither holds a round trip, the server's compute or the
  per-call overhead. Each is an EWMA of seconds per bit in which a sample weighs by its bytes
  (cloudsplit.link_estimate); transfers under ``MIN_SAMPLE_BYTES`` are not sampled (timed at the
  receiver they read fast: see the constant). While the plan's own transfers are too small to say
  anything (or absent), ``MeasureUplink`` / ``MeasureDownlink`` probes of about ``PROBE_SECONDS`` run
  every ``bandwidth_probe_interval_s``, after the answer; a transfer that overlapped another one is
  not sampled;
- round-trip time: an EWMA over health checks, at most every ``rtt_probe_interval_s``;
- the per-request overhead of offloading (what a request took past its transfers, the server's
  time and one round trip: compression, serialisation, gRPC, the server's own handling), an EWMA the
  partitioner adds to the round trip;
- the device's load: its measured time for the ops it ran over its profile for them;
- the server's per-op times (its own profiler, ``GetProfile``) and the load: the server's reported
  compute time for the ops it ran over what its profile says they take; its queue time, an EWMA
  charged per request like the round trip;
- when any estimate moves past ``replan_threshold`` from the one the plan was made with, it re-plans
  (cloudsplit.planning, ``cloudsplit.partition.solve``) before the next request; past
  ``refine_threshold``, on the background thread after the answer.

When the server is unreachable, slower than ``deadline_s``, or answers with any error, the request is
finished here from the tensors already computed (the exact ones, not the compressed copies), and the
server is left alone until a health check succeeds; checks back off from ``probe_backoff_s[0]`` to
``probe_backoff_s[1]``. No server-side failure reaches the caller: a server at its limit refuses
with RESOURCE_EXHAUSTED at once, and that request too is answered here.

``tls=ClientTLS(ca_cert=..., client_cert=..., client_key=...)`` (``cloudsplit.security``) talks TLS
(mutual TLS with a client certificate); ``token`` is sent as a bearer token on every call.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import grpc
import numpy as np

import edge
from cloudsplit import compression as compression_modes
from cloudsplit import execution, transfer
from cloudsplit import planning
from cloudsplit.connection import ProtocolError, ServerConnection
from cloudsplit.link_estimate import LinkEstimator, NetworkEstimate
from cloudsplit.protos import DEFAULT_MAX_MESSAGE_MB
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.security import ClientTLS
from cloudsplit.split_learning import SplitTrainer  # noqa: F401  (re-exported: split learning's device side)

log = logging.getLogger("cloudsplit.client")


@dataclass
class Measured:
    """What one run actually took, in ms. ``server_ms`` is the server's own report of its compute;
    ``upload_ms``/``download_ms`` are transfer times as their receiver timed them; ``overhead_ms`` is
    what the offload took past those, the server's time and one round trip (``rtt_ms``)."""

    device_ms: float = 0.0
    upload_ms: float = 0.0
    server_ms: float = 0.0
    queue_ms: float = 0.0
    download_ms: float = 0.0
    rtt_ms: float = 0.0
    overhead_ms: float = 0.0
    fallback_ms: float = 0.0
    total_ms: float = 0.0


@dataclass
class RunRecord:
    """Where one ``run`` executed each op and what it cost (``SplitRunner.last_plan``)."""

    kind: str                          # the plan's kind: "device", "server", "split"
    device_ops: list[int]
    server_ops: list[int]
    placement: list[str]               # per op: "device" or "server", where it actually ran
    measured: Measured
    predicted: Any                     # partition.Breakdown of the plan (None for the forced local plan)
    compression: str
    upload_bytes: int = 0
    download_bytes: int = 0
    batch_size: int = 0
    offloaded: bool = False
    fallback_reason: str | None = None
    replanned: bool = False

    @property
    def ran_on_server(self) -> list[int]:
        return [op for op, where in enumerate(self.placement) if where == "server"]



class SplitRunner:
    def __init__(self, model_path: str | os.PathLike, server: str = "127.0.0.1:50051", num_threads: int = 1,
                 compression: str = "int8", deadline_s: float = 2.0, token: str | None = None, *,
                 download_compression: str = "none", objective: str = "latency",
                 pinned_device_ops: Sequence[int] = (), device_memory_limit: int | None = None,
                 replan_threshold: float = 0.3, refine_threshold: float = 0.08, ewma_alpha: float = 0.5,
                 rtt_probe_interval_s: float = 2.0, bandwidth_probe_interval_s: float = 5.0,
                 probe_backoff_s: tuple[float, float] = (0.25, 8.0), connect_timeout_s: float = 2.0,
                 max_message_mb: float = DEFAULT_MAX_MESSAGE_MB, device_costs: Sequence[float] | None = None,
                 initial_network: NetworkEstimate | None = None,
                 planner=None, track_device_load: bool | None = None, tls: ClientTLS | None = None):
        self.model_path = os.fspath(model_path)
        with open(self.model_path, "rb") as f:
            self._data = f.read()
        self.model_sha256 = hashlib.sha256(self._data).hexdigest()
        self.compression = compression_modes.check_mode(compression)
        self.download_compression = compression_modes.check_mode(download_compression)
        self.deadline_s = float(deadline_s)
        self.objective = objective
        self.pinned_device_ops = tuple(pinned_device_ops)
        self.device_memory_limit = device_memory_limit
        self.replan_threshold = replan_threshold
        self.refine_threshold = refine_threshold
        self.rtt_probe_interval_s = rtt_probe_interval_s
        self.probe_backoff_s = probe_backoff_s
        self.connect_timeout_s = connect_timeout_s
        self._planner = planner

        self.interpreter = edge.Interpreter(model_content=self._data, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.ops = self.interpreter.op_details()
        self.num_ops = len(self.ops)
        details = self.interpreter.get_tensor_details()
        self._tensor_details = details
        self._kinds = [d["kind"] for d in details]
        self._producer = {t: op["index"] for op in self.ops for t in op["outputs"] if t >= 0}
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self._default_shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in self._inputs.values()}

        self.connection = ServerConnection(server, token=token, max_message_mb=max_message_mb, tls=tls)
        self.link = LinkEstimator(self.connection, initial_network, ewma_alpha, bandwidth_probe_interval_s)
        self.server_op_ms: list[float] | None = None
        self.device_costs = device_costs if device_costs is not None else self._measure_device_costs(num_threads)
        # Costs a caller hands in may stand for another device (a phone planned for on a workstation):
        # then measured times say nothing about them, unless the caller says they were measured here.
        self.track_device_load = device_costs is None if track_device_load is None else track_device_load
        self.server_up = False
        self._next_probe_at = 0.0
        self._backoff_s = probe_backoff_s[0]
        self._plan = None
        self._planned_with: NetworkEstimate | None = None
        self._request_id = 0
        self.replans = 0
        self.fallbacks = 0
        self.last_plan: RunRecord | None = None
        self._lock = threading.RLock()
        self._prober: threading.Thread | None = None
        self._replanned = False
        self._maintain(force_probe=True)

    def settle(self, timeout: float | None = None) -> None:
        """Waits for the background probes (health, bandwidth, reconnection) that are under way."""
        prober = self._prober
        if prober is not None:
            prober.join(timeout)

    def close(self) -> None:
        if self._prober is not None:
            self._prober.join(self.connect_timeout_s + 1)
        self.connection.close()
        self.interpreter.close()

    def __enter__(self) -> "SplitRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def uplink_limit_bps(self) -> float | None:
        """In-process shaping fallback (tests, benchmarks): slows this runner's sending to this rate."""
        return self.connection.uplink_limit_bps

    @uplink_limit_bps.setter
    def uplink_limit_bps(self, value: float | None) -> None:
        self.connection.uplink_limit_bps = value

    @property
    def network(self) -> NetworkEstimate:
        """The current estimates of the link, the server and the device (``link_estimate.LinkEstimator``)."""
        return self.link.network

    @network.setter
    def network(self, value: NetworkEstimate) -> None:
        self.link.network = value

    @property
    def ewma_alpha(self) -> float:
        return self.link.ewma_alpha

    @property
    def bandwidth_probe_interval_s(self) -> float:
        return self.link.bandwidth_probe_interval_s

    @property
    def plan(self):
        """The partitioner's current plan (``cloudsplit.partition.Plan``), or None while offline."""
        return self._plan if self.server_up else None


    def _measure_device_costs(self, num_threads: int) -> list[float]:
        """Median ms of each op on this device, from the runtime's profiler (cached per model hash)."""
        from cloudsplit.costs import cached_op_ms

        return cached_op_ms(self._data, num_threads=num_threads)

    def wire_bytes(self, tensor: int) -> int:
        """Bytes tensor ``tensor`` takes on the wire under this runner's compression."""
        return self._wire_bytes(tensor)

    def _solve(self):
        if self._planner is not None:
            return self._planner(self)
        return self.partition_plan()

    def partition_plan(self):
        """The partitioner's plan for the current estimates (what ``run`` uses unless a ``planner``
        hook was given; a hook may call this to defer to it)."""
        return planning.solve_split(self.network, self.device_costs, self.server_op_ms, self.ops, self._tensor_details,
                                    graph_inputs=[d["index"] for d in self._inputs.values()],
                                    graph_outputs=list(self._outputs.values()), wire_bytes=self._wire_bytes,
                                    download_wire_bytes=self.download_wire_bytes,
                                    pinned_device_ops=self.pinned_device_ops,
                                    device_memory_limit=self.device_memory_limit, objective=self.objective)

    def download_wire_bytes(self, tensor: int) -> int:
        """Bytes tensor ``tensor`` takes on the wire coming back, under ``download_compression``."""
        return planning.tensor_wire_bytes(self.download_compression, self._tensor_details[tensor])

    def _wire_bytes(self, tensor: int) -> int:
        return planning.tensor_wire_bytes(self.compression, self._tensor_details[tensor])

    def _replan(self, reason: str) -> None:
        self._plan = self._solve()
        self._planned_with = NetworkEstimate(**vars(self.network))
        self.replans += 1
        self._replanned = True
        log.info("re-planned (%s): %s, %d device ops, %d server ops, predicted %.2f ms", reason,
                 getattr(self._plan, "kind", "?"), len(self._plan.device_ops), len(self._plan.server_ops),
                 self._plan.predicted.total_ms)

    def _estimates_moved(self, threshold: float | None = None) -> str | None:
        return planning.estimates_moved(self._planned_with, self.network,
                                        self.replan_threshold if threshold is None else threshold)

    def _connect(self) -> None:
        """Health check, model registration, the server's profile, an uplink and a downlink sample;
        raises on failure."""
        self.connection.check_health(timeout=self.connect_timeout_s)  # the first call also opens the connection
        self.link.probe_rtt(self.connect_timeout_s)
        self.connection.ensure_model(self._data, self.model_sha256, timeout=max(self.connect_timeout_s, 30.0))
        profile = self.connection.get_profile(self.model_sha256, timeout=max(self.connect_timeout_s, 30.0))
        if len(profile.op_ms) != self.num_ops:
            raise ProtocolError(f"the server's profile has {len(profile.op_ms)} ops, the model {self.num_ops}")
        self.server_op_ms = list(profile.op_ms)
        self.network.server_load = max(1.0, profile.load_factor)
        self.link.probe_uplink()
        self.link.probe_downlink()

    def _maintain(self, force_probe: bool = False, probe: bool = True) -> None:
        """Between requests: bring the server back, refresh stale estimates, re-plan if they moved.

        The probes run on a background thread (one at a time) so that a request never waits on a
        server that does not answer; only the first connection, in the constructor, is waited for.
        ``run`` starts them after its answer is ready, not before its request, so that a probe does
        not share the link with the request it precedes (``settle`` waits for them).
        """
        if force_probe:
            self._probe()
            return
        now = time.monotonic()
        due = probe and ((now >= self._next_probe_at) if not self.server_up else (
            now - self.link.last_rtt_probe > self.rtt_probe_interval_s or bool(self.link.stale_directions(now))))
        with self._lock:
            if self.server_up:
                reason = self._estimates_moved()
                if reason:
                    self._replan(reason)
            refine = probe and self.server_up and self._estimates_moved(self.refine_threshold) is not None
            if (due or refine) and (self._prober is None or not self._prober.is_alive()):
                if due and self.server_up:
                    # Before the thread starts, so that no request slips in between.
                    self.link.note_link_probes(self.link.stale_directions(now))
                self._prober = threading.Thread(target=self._background, args=(due,), name="cloudsplit-probe",
                                                daemon=True)
                self._prober.start()


    def _background(self, probe: bool) -> None:
        """Probes (when due), then a re-plan for estimates that moved past ``refine_threshold`` but
        not ``replan_threshold``: small moves can still flip a close call between two cuts, and a
        solve of a large DAG takes tens of ms, which a request should not wait for."""
        if probe:
            self._probe()
        with self._lock:
            reason = self.server_up and self._estimates_moved(self.refine_threshold)
            if reason:
                self._replan(f"refined: {reason}")

    def _probe(self) -> None:
        if not self.server_up:
            try:
                self._connect()
            except (grpc.RpcError, ProtocolError) as error:
                with self._lock:
                    self._next_probe_at = time.monotonic() + self._backoff_s
                    self._backoff_s = min(self._backoff_s * 2, self.probe_backoff_s[1])
                log.info("server %s not usable (%s); next check in %.2f s", self.connection.address,
                         _describe(error), self._backoff_s)
                return
            with self._lock:
                self._backoff_s = self.probe_backoff_s[0]
                self._replan("server reachable")
                self.server_up = True
            return
        try:
            self.link.probe_rtt(self.connect_timeout_s)
            stale = self.link.stale_directions(time.monotonic())
            self.link.note_link_probes(stale)
            if "uplink_bps" in stale:
                self.link.probe_uplink()
            if "downlink_bps" in stale:
                self.link.probe_downlink()
        except (grpc.RpcError, ProtocolError) as error:
            with self._lock:
                self._mark_down(error)
        finally:
            self.link.probing_link = False

    def _mark_down(self, error) -> None:
        self.server_up = False
        self._next_probe_at = time.monotonic() + self._backoff_s
        log.info("server %s failed (%s); running locally", self.connection.address, _describe(error))


    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        arrays = self._check_inputs(inputs)
        self._replanned = False
        prober = self._prober
        if self.link.probing_link and prober is not None:
            # A bandwidth probe still on the link would share it with this request and spoil both
            # timings: wait for it, as long as it was expected to take and half that again.
            prober.join(1.5 * self.link.probe_expected_s + self.network.rtt_ms / 1e3)
        self._maintain(probe=False)
        plan = self.plan
        device_ops = list(plan.device_ops) if plan is not None else list(range(self.num_ops))
        server_ops = list(plan.server_ops) if plan is not None else []
        by_index = {self._inputs[name]["index"]: array for name, array in arrays.items()}
        uploads = list(plan.upload) if server_ops else []
        downloads = [t for t in self._outputs.values() if self._producer.get(t) in set(server_ops)]
        local_outputs = [t for t in self._outputs.values() if t not in downloads]

        measured = Measured()
        record = RunRecord(kind=plan.kind if plan is not None else "device (server unavailable)",
                           device_ops=device_ops, server_ops=server_ops, placement=["device"] * self.num_ops,
                           measured=measured, predicted=plan.predicted if plan is not None else None,
                           compression=self.compression, replanned=self._replanned)
        for op in server_ops:
            record.placement[op] = "server"

        self._resize_inputs(by_index)
        for t, array in by_index.items():
            self.interpreter.set_tensor(t, array)
        began = time.perf_counter()
        captured = execution.run_capturing(self.interpreter, device_ops, uploads + local_outputs, self._producer,
                                           provided={t: a for t, a in by_index.items() if t in uploads})
        measured.device_ms = (time.perf_counter() - began) * 1e3
        profiled_ms = sum(self.device_costs[op] for op in device_ops)
        if self.track_device_load and profiled_ms > 1.0:  # below 1 ms the ratio is mostly per-call overhead
            self.network.device_load = self.link.ewma(self.network.device_load,
                                                       min(4.0, max(0.5, measured.device_ms / profiled_ms)))

        results = {t: captured[t] for t in local_outputs}
        if server_ops:
            try:
                remote = self._offload(server_ops, uploads, downloads, captured, by_index, record)
                results.update(remote)
                record.offloaded = True
            except (grpc.RpcError, ProtocolError) as error:
                record.fallback_reason = _describe(error)
                self.fallbacks += 1
                with self._lock:
                    self._mark_down(error)
                began = time.perf_counter()
                execution.run_with_provided(self.interpreter, server_ops, {t: captured[t] for t in uploads},
                                            self._producer)
                results.update({t: self.interpreter.get_tensor(t) for t in downloads})
                measured.fallback_ms = (time.perf_counter() - began) * 1e3
                record.placement = ["device"] * self.num_ops
        measured.total_ms = (time.perf_counter() - started) * 1e3
        self.last_plan = record
        self._maintain()
        return {name: results[t] for name, t in self._outputs.items()}

    __call__ = run

    def _offload(self, server_ops, uploads, downloads, captured, by_index, record: RunRecord) -> dict[int, np.ndarray]:
        began = time.perf_counter()
        self._request_id += 1
        tensors = [transfer.encode_tensor(t, captured[t], self.compression) for t in uploads]
        input_shapes = [pb.InputShape(tensor_index=t, shape=list(a.shape)) for t, a in by_index.items()
                        if tuple(a.shape) != self._default_shapes[t]]
        header = pb.InferHeader(request_id=self._request_id, model_sha256=self.model_sha256, server_ops=server_ops,
                                uploads=[h for h, _ in tensors], outputs=downloads,
                                download_compression=transfer.COMPRESSION_BY_MODE[self.download_compression],
                                input_shapes=input_shapes)
        with self.link.transfers.span() as span:
            reply = self.connection.infer(header, tensors, timeout=self.deadline_s)
        elapsed_s = time.perf_counter() - began
        timing, head, measured = reply.timing, reply.header, record.measured
        rtt_s = self.network.rtt_ms / 1e3
        server_s = (head.server_ms + head.queue_ms) / 1e3
        # Both transfers are timed at their receiver, from the header's arrival to the last chunk's:
        # no round trip, no server compute and no per-call overhead in them.
        upload_s = head.receive_ms / 1e3
        download_s = max(0.0, timing.finished - timing.reply)
        overhead_s = elapsed_s - upload_s - server_s - download_s - rtt_s
        measured.upload_ms, measured.download_ms = upload_s * 1e3, download_s * 1e3
        measured.server_ms, measured.queue_ms, measured.rtt_ms = head.server_ms, head.queue_ms, self.network.rtt_ms
        measured.overhead_ms = overhead_s * 1e3
        record.upload_bytes, record.download_bytes = timing.upload_bytes, timing.download_bytes
        record.batch_size = head.batch_size
        profiled_s = sum(self.server_op_ms[op] for op in server_ops) / 1e3 if self.server_op_ms else 0.0
        self.link.observe_offload(timing.upload_bytes, upload_s, timing.download_bytes, download_s, overhead_s,
                                  head.queue_ms, head.server_ms, profiled_s, overlapped=span.overlapped)
        return reply.outputs

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [name for name in self._inputs if name not in inputs]
        unknown = [name for name in inputs if name not in self._inputs]
        if missing or unknown:
            raise edge.errors.InvalidArgumentError(
                f"SplitRunner.run: missing inputs {missing}, unknown inputs {unknown} (the model takes "
                f"{list(self._inputs)})")
        return {name: np.asarray(inputs[name]) for name in self._inputs}

    def _resize_inputs(self, by_index: Mapping[int, np.ndarray]) -> None:
        changed = False
        for t, array in by_index.items():
            current = tuple(int(v) for v in self.interpreter._details(t)["shape"])
            if array.shape != current:
                self.interpreter.resize_tensor_input(t, array.shape)
                changed = True
        if changed:
            self.interpreter.allocate_tensors()


def _describe(error) -> str:
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"

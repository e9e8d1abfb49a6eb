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

When the server is unreachable, slower than ``deadline_s``, answers with any error, or replies with
anything but the outputs asked for (another dtype, shape or byte length than this interpreter gives
them, a tensor not asked for, a code it does not know: ``connection.ServerConnection.infer``), the
request is finished here from the tensors already computed (the exact ones, not the compressed
copies), and the server is left alone until a health check succeeds; checks back off from
``probe_backoff_s[0]`` to ``probe_backoff_s[1]`` (cloudsplit.transport: the server's standing, the
probes and the offloaded call). No server-side failure reaches the caller: a server at its limit refuses
with RESOURCE_EXHAUSTED at once, and that request too is answered here.

``tls=ClientTLS(ca_cert=..., client_cert=..., client_key=...)`` (``cloudsplit.security``) talks TLS
(mutual TLS with a client certificate); ``token`` is sent as a bearer token on every call.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

import edge
from cloudsplit import compression as compression_modes
from cloudsplit import execution, transfer
from cloudsplit import planning
from cloudsplit.connection import ServerConnection
from cloudsplit.link_estimate import LinkEstimator, NetworkEstimate
from cloudsplit.protos import DEFAULT_MAX_MESSAGE_MB
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.security import ClientTLS
from cloudsplit.split_learning import SplitTrainer  # noqa: F401  (re-exported: split learning's device side)
from cloudsplit.transport import FAILURES, ServerTransport, describe

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
        self._planner = planner

        self.interpreter = edge.Interpreter(model_content=self._data, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.ops = self.interpreter.op_details()
        self.num_ops = len(self.ops)
        self.tensor_details = self.interpreter.get_tensor_details()
        self._producer = {t: op["index"] for op in self.ops for t in op["outputs"] if t >= 0}
        self._inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self._default_shapes = {d["index"]: tuple(int(v) for v in d["shape"]) for d in self._inputs.values()}

        self.connection = ServerConnection(server, token=token, max_message_mb=max_message_mb, tls=tls)
        self.link = LinkEstimator(self.connection, initial_network, ewma_alpha, bandwidth_probe_interval_s)
        self.transport = ServerTransport(self.connection, self.link, self._data, self.model_sha256, self.num_ops,
                                         connect_timeout_s=connect_timeout_s, probe_backoff_s=probe_backoff_s,
                                         rtt_probe_interval_s=rtt_probe_interval_s, on_connected=self._connected)
        self.server_op_ms: list[float] | None = None
        self.device_costs = device_costs if device_costs is not None else self._measure_device_costs(num_threads)
        # Costs a caller hands in may stand for another device (a phone planned for on a workstation):
        # then measured times say nothing about them, unless the caller says they were measured here.
        self.track_device_load = device_costs is None if track_device_load is None else track_device_load
        self._plan = None
        self._planned_with: NetworkEstimate | None = None
        self._request_id = 0
        self.replans = 0
        self.fallbacks = 0
        self.last_plan: RunRecord | None = None
        self._lock = self.transport.lock
        self._replanned = False
        self.transport.probe()  # the first connection is waited for; later ones run in the background

    def settle(self, timeout: float | None = None) -> None:
        """Waits for the background probes (health, bandwidth, reconnection) that are under way."""
        self.transport.settle(timeout)

    def close(self) -> None:
        self.transport.close()
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
    def server_up(self) -> bool:
        """Whether requests are offloaded: the server answered its last check and call."""
        return self.transport.up

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
        return planning.solve_split(self.network, self.device_costs, self.server_op_ms, self.ops, self.tensor_details,
                                    graph_inputs=[d["index"] for d in self._inputs.values()],
                                    graph_outputs=list(self._outputs.values()), wire_bytes=self._wire_bytes,
                                    download_wire_bytes=self.download_wire_bytes,
                                    pinned_device_ops=self.pinned_device_ops,
                                    device_memory_limit=self.device_memory_limit, objective=self.objective)

    def download_wire_bytes(self, tensor: int) -> int:
        """Bytes tensor ``tensor`` takes on the wire coming back, under ``download_compression``."""
        return planning.tensor_wire_bytes(self.download_compression, self.tensor_details[tensor])

    def _wire_bytes(self, tensor: int) -> int:
        return planning.tensor_wire_bytes(self.compression, self.tensor_details[tensor])

    def replan(self, reason: str) -> None:
        """Plans again now, from the current estimates (or with the ``planner`` hook); ``reason`` is logged."""
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

    def _connected(self, profile) -> None:
        """The server became usable: its per-op times, and a plan that uses them."""
        self.server_op_ms = list(profile.op_ms)
        self.replan("server reachable")

    def _maintain(self, probe: bool = True) -> None:
        """Between requests: re-plan if the estimates moved, and start the probes that are due.

        ``run`` calls it after its answer is ready, not before its request, so that a probe does
        not share the link with the request it precedes (``settle`` waits for them).
        """
        due = probe and self.transport.probe_due(time.monotonic())
        with self._lock:
            if self.server_up:
                reason = self._estimates_moved()
                if reason:
                    self.replan(reason)
            refine = probe and self.server_up and self._estimates_moved(self.refine_threshold) is not None
            if due or refine:
                self.transport.start_background(self._background, due, probing=due)

    def _background(self, probe: bool) -> None:
        """Probes (when due), then a re-plan for estimates that moved past ``refine_threshold`` but
        not ``replan_threshold``: small moves can still flip a close call between two cuts, and a
        solve of a large DAG takes tens of ms, which a request should not wait for."""
        if probe:
            self.transport.probe()
        with self._lock:
            reason = self.server_up and self._estimates_moved(self.refine_threshold)
            if reason:
                self.replan(f"refined: {reason}")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        arrays = self._check_inputs(inputs)
        self._replanned = False
        self.transport.wait_for_link_probe()
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
            except FAILURES as error:
                record.fallback_reason = describe(error)
                self.fallbacks += 1
                self.transport.mark_down(error)
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
        self._request_id += 1
        tensors = [transfer.encode_tensor(t, captured[t], self.compression) for t in uploads]
        input_shapes = [pb.InputShape(tensor_index=t, shape=list(a.shape)) for t, a in by_index.items()
                        if tuple(a.shape) != self._default_shapes[t]]
        header = pb.InferHeader(request_id=self._request_id, model_sha256=self.model_sha256, server_ops=server_ops,
                                uploads=[h for h, _ in tensors], outputs=downloads,
                                download_compression=transfer.COMPRESSION_BY_MODE[self.download_compression],
                                input_shapes=input_shapes)
        profiled_s = sum(self.server_op_ms[op] for op in server_ops) / 1e3 if self.server_op_ms else 0.0
        reply = self.transport.offload(header, tensors, timeout=self.deadline_s, profiled_server_s=profiled_s,
                                       measured=record.measured, expected=self._expected_outputs(downloads))
        record.upload_bytes, record.download_bytes = reply.timing.upload_bytes, reply.timing.download_bytes
        record.batch_size = reply.header.batch_size
        return reply.outputs

    def _expected_outputs(self, tensors: Sequence[int]) -> dict[int, tuple[np.dtype, tuple[int, ...]]]:
        """The dtype and shape each of ``tensors`` has on this interpreter at the current input
        shapes: what the server must send back (a reply that says otherwise is refused before its
        bytes are read, and the request is answered here)."""
        expected = {}
        for t in tensors:
            details = self.interpreter._details(t)
            expected[t] = (np.dtype(details["dtype"]), tuple(int(d) for d in details["shape"]))
        return expected

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


"""A SplitRunner's transport: its server's standing, bringing the server back, and the offloaded calls.

``ServerTransport`` owns one ``connection.ServerConnection`` and the ``link_estimate.LinkEstimator``
that measures it. It knows whether the server is usable (``up``); connects (health check, model
registration, the server's profile, a sample of each direction) and, while the server is down, tries
again at most every ``probe_backoff_s[0]`` seconds, doubling up to ``probe_backoff_s[1]``; while it is
up, refreshes the round trip and the stale bandwidth estimates. The probes run on one background
thread at a time (``start_background``), so a request never waits on a server that does not answer.

``offload`` sends one request and times it: the transfers as their receivers timed them, the
server's own compute and queue times, and what the call took past those and one round trip; the
estimator takes each sample in. A failure raises ``grpc.RpcError`` or ``ProtocolError``; the runner
then finishes the request on the device and calls ``mark_down``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

import grpc

from cloudsplit.connection import InferReply, ProtocolError, ServerConnection
from cloudsplit.link_estimate import LinkEstimator
from cloudsplit.protos import split_pb2 as pb

log = logging.getLogger("cloudsplit.client")

FAILURES = (grpc.RpcError, ProtocolError)


class ServerTransport:
    def __init__(self, connection: ServerConnection, link: LinkEstimator, model_data: bytes, model_sha256: str,
                 num_ops: int, *, connect_timeout_s: float, probe_backoff_s: tuple[float, float],
                 rtt_probe_interval_s: float, on_connected: Callable[[pb.ProfileReply], None]):
        """``on_connected(profile)`` runs under ``lock`` each time the server becomes usable, before
        ``up`` turns true (the runner takes the server's profile in and plans with it)."""
        self.connection = connection
        self.link = link
        self._model_data = model_data
        self._model_sha256 = model_sha256
        self._num_ops = num_ops
        self.connect_timeout_s = connect_timeout_s
        self.probe_backoff_s = probe_backoff_s
        self.rtt_probe_interval_s = rtt_probe_interval_s
        self._on_connected = on_connected
        self.lock = threading.RLock()
        self.up = False
        self._next_probe_at = 0.0
        self._backoff_s = probe_backoff_s[0]
        self._prober: threading.Thread | None = None

    def close(self) -> None:
        if self._prober is not None:
            self._prober.join(self.connect_timeout_s + 1)
        self.connection.close()

    def settle(self, timeout: float | None = None) -> None:
        """Waits for the background probes (health, bandwidth, reconnection) that are under way."""
        prober = self._prober
        if prober is not None:
            prober.join(timeout)

    def wait_for_link_probe(self) -> None:
        """A bandwidth probe still on the link would share it with the next request and spoil both
        timings: waits for it, as long as it was expected to take and half that again."""
        prober = self._prober
        if self.link.probing_link and prober is not None:
            prober.join(1.5 * self.link.probe_expected_s + self.link.network.rtt_ms / 1e3)

    def probe_due(self, now: float) -> bool:
        """Whether a reconnection (server down) or a refresh of the link's estimates (server up) is due."""
        if not self.up:
            return now >= self._next_probe_at
        return (now - self.link.last_rtt_probe > self.rtt_probe_interval_s
                or bool(self.link.stale_directions(now)))

    def start_background(self, target: Callable[..., None], *args, probing: bool) -> None:
        """Runs ``target(*args)`` on the background thread unless it is busy; ``probing``: the task
        probes the link, which is marked busy before the thread starts so that no request slips in."""
        with self.lock:
            if self._prober is not None and self._prober.is_alive():
                return
            if probing and self.up:
                self.link.note_link_probes(self.link.stale_directions(time.monotonic()))
            self._prober = threading.Thread(target=target, args=args, name="cloudsplit-probe", daemon=True)
            self._prober.start()

    def connect(self) -> pb.ProfileReply:
        """Health check, model registration, the server's profile, an uplink and a downlink sample;
        raises on failure."""
        timeout = self.connect_timeout_s
        self.connection.check_health(timeout=timeout)  # the first call also opens the connection
        self.link.probe_rtt(timeout)
        self.connection.ensure_model(self._model_data, self._model_sha256, timeout=max(timeout, 30.0))
        profile = self.connection.get_profile(self._model_sha256, timeout=max(timeout, 30.0))
        if len(profile.op_ms) != self._num_ops:
            raise ProtocolError(f"the server's profile has {len(profile.op_ms)} ops, the model {self._num_ops}")
        self.link.network.server_load = max(1.0, profile.load_factor)
        self.link.probe_uplink()
        self.link.probe_downlink()
        return profile

    def probe(self) -> None:
        """Brings a server that is down back (on success ``on_connected``, then ``up``; on failure the
        next try backs off), or refreshes the round trip and the stale bandwidth estimates of one that
        is up (a failure marks it down)."""
        if not self.up:
            try:
                profile = self.connect()
            except FAILURES as error:
                with self.lock:
                    self._next_probe_at = time.monotonic() + self._backoff_s
                    self._backoff_s = min(self._backoff_s * 2, self.probe_backoff_s[1])
                log.info("server %s not usable (%s); next check in %.2f s", self.connection.address,
                         describe(error), self._backoff_s)
                return
            with self.lock:
                self._backoff_s = self.probe_backoff_s[0]
                self._on_connected(profile)
                self.up = True
            return
        try:
            self.link.probe_rtt(self.connect_timeout_s)
            stale = self.link.stale_directions(time.monotonic())
            self.link.note_link_probes(stale)
            if "uplink_bps" in stale:
                self.link.probe_uplink()
            if "downlink_bps" in stale:
                self.link.probe_downlink()
        except FAILURES as error:
            self.mark_down(error)
        finally:
            self.link.probing_link = False

    def mark_down(self, error) -> None:
        """The server failed: requests run on the device until a health check succeeds."""
        with self.lock:
            self.up = False
            self._next_probe_at = time.monotonic() + self._backoff_s
        log.info("server %s failed (%s); running locally", self.connection.address, describe(error))

    def offload(self, header: pb.InferHeader, tensors: Sequence[tuple[pb.TensorHeader, bytes]], *, timeout: float,
                profiled_server_s: float, measured, expected=None) -> InferReply:
        """Sends one request and returns the server's reply (``expected``: each output's dtype and
        shape, which the reply must match, ``ServerConnection.infer``); fills ``measured``'s ``upload_ms``,
        ``download_ms``, ``server_ms``, ``queue_ms``, ``rtt_ms`` and ``overhead_ms`` and hands the
        samples to the estimator (``profiled_server_s``: what the server's profile says its ops take)."""
        network = self.link.network
        began = time.perf_counter()
        with self.link.transfers.span() as span:
            reply = self.connection.infer(header, tensors, timeout=timeout, expected=expected)
        elapsed_s = time.perf_counter() - began
        timing, head = reply.timing, reply.header
        rtt_s = network.rtt_ms / 1e3
        server_s = (head.server_ms + head.queue_ms) / 1e3
        # Both transfers are timed at their receiver, from the header's arrival to the last chunk's:
        # no round trip, no server compute and no per-call overhead in them.
        upload_s = head.receive_ms / 1e3
        download_s = max(0.0, timing.finished - timing.reply)
        overhead_s = elapsed_s - upload_s - server_s - download_s - rtt_s
        measured.upload_ms, measured.download_ms = upload_s * 1e3, download_s * 1e3
        measured.server_ms, measured.queue_ms, measured.rtt_ms = head.server_ms, head.queue_ms, network.rtt_ms
        measured.overhead_ms = overhead_s * 1e3
        self.link.observe_offload(timing.upload_bytes, upload_s, timing.download_bytes, download_s, overhead_s,
                                  head.queue_ms, head.server_ms, profiled_server_s, overlapped=span.overlapped)
        return reply


def describe(error) -> str:
    """A failure in a line: the gRPC status and its details, or the exception."""
    if isinstance(error, grpc.RpcError) and hasattr(error, "code"):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"

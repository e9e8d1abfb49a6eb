"""What a SplitRunner knows about its link and the server: measured, averaged, and probed for.

``LinkEstimator`` holds the ``NetworkEstimate`` the partitioner plans with and keeps it current:
uplink and downlink bandwidth, each from its own transfers timed at the receiver (an EWMA of seconds
per bit weighted by bytes, see ``bandwidth_sample``), the round trip from health checks, and
``MeasureUplink`` / ``MeasureDownlink`` probes sized to take about ``PROBE_SECONDS`` when the plan's
own transfers say too little. ``TransferLog`` tells which transfers overlapped another, whose timings
only count as evidence of a drop.
"""
from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import grpc


@dataclass
class NetworkEstimate:
    uplink_bps: float
    downlink_bps: float
    rtt_ms: float
    # The server's measured compute time over its profile for the same ops: what "server time under
    # load" is worth now (the partitioner multiplies every server op's profiled time by it).
    server_load: float = 1.0
    # The device's measured time for the ops it ran over its profile for them: contention, thermal
    # throttling or a cold cache since the profile was taken (the partitioner scales device times by it).
    device_load: float = 1.0
    # Time requests wait on the server before their ops run (a busy pool, a batch forming): a fixed
    # cost per offloaded request, whatever the cut, so it goes with the round trip.
    queue_ms: float = 0.0
    # What an offloaded request costs past device compute, transfers, server compute and one round
    # trip: compression, serialisation, gRPC on both ends, the server's validation. Measured per
    # request; the partitioner adds it to the round trip of every plan that offloads.
    overhead_ms: float = 0.0


# A request's transfer is sampled only from this size up. Timed at the receiver, a transfer misses
# the bytes that arrive with its first piece (a token bucket's burst, the first socket read: about
# 3 kB on the shaped links here), so small transfers read fast: 4 kB read 3x the rate of the 4G link,
# 16 kB 16 % over, 64 kB within 1 % (benchmarks/README.md). A sample weighs in as
# MAX_SAMPLE_WEIGHT x (1 - exp(-bytes / INFORMATIVE_BYTES)) of a full one.
MIN_SAMPLE_BYTES = 32 * 1024
INFORMATIVE_BYTES = 16 * 1024
# Smaller transfers from this size up still flag a drop (see ``LinkEstimator.bandwidth_sample``).
SUSPECT_BYTES = 2 * 1024
MAX_SAMPLE_WEIGHT = 0.75
# Probes (after an untimed lead-in chunk) are sized to take about this long at the current estimate,
# within these bounds.
PROBE_SECONDS = 0.1
PROBE_BYTES = (32 * 1024, 512 * 1024)


def request_latency_ms(network: NetworkEstimate) -> float:
    """The fixed cost of offloading one request: a round trip, the server's queue and the measured
    per-request overhead."""
    return max(0.0, network.rtt_ms + network.queue_ms + network.overhead_ms)


class _Span:
    __slots__ = ("overlapped",)

    def __init__(self):
        self.overlapped = False


class TransferLog:
    """Which transfers (requests, probes) overlapped another: their timings measured a shared link."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active: list[_Span] = []

    @contextlib.contextmanager
    def span(self) -> Iterator[_Span]:
        span = _Span()
        with self._lock:
            for other in self._active:
                other.overlapped = span.overlapped = True
            self._active.append(span)
        try:
            yield span
        finally:
            with self._lock:
                self._active.remove(span)


def estimate_moved(new: float, old: float, threshold: float) -> bool:
    """Whether ``new`` is more than ``threshold`` (relative, either way) off ``old``."""
    if old <= 0 or new <= 0:
        return new != old
    return abs(math.log(new / old)) > math.log1p(threshold)


class LinkEstimator:
    """The estimates of one runner's link (``network``) and the probes that refresh them over
    ``connection`` (a ``connection.ServerConnection``)."""

    def __init__(self, connection, initial_network: NetworkEstimate | None, ewma_alpha: float,
                 bandwidth_probe_interval_s: float):
        self.connection = connection
        self.ewma_alpha = ewma_alpha
        self.bandwidth_probe_interval_s = bandwidth_probe_interval_s
        self.network = initial_network or NetworkEstimate(uplink_bps=10e6, downlink_bps=10e6, rtt_ms=50.0)
        self.measured = dict.fromkeys(("uplink_bps", "downlink_bps", "rtt_ms"), initial_network is not None)
        self.last_informative = {"uplink_bps": -math.inf, "downlink_bps": -math.inf}
        self.probing_link = False
        self.probe_expected_s = 0.0
        self.suspected: dict[str, float] = {}  # rates small transfers hinted at, until a probe measures
        self.transfers = TransferLog()
        self.last_rtt_probe = -math.inf

    def ewma(self, old: float, sample: float) -> float:
        return (1 - self.ewma_alpha) * old + self.ewma_alpha * sample

    def probe_rtt(self, timeout: float) -> None:
        rtt = self.connection.check_health(timeout=timeout)
        self.network.rtt_ms = rtt if not self.measured["rtt_ms"] else self.ewma(self.network.rtt_ms, rtt)
        self.measured["rtt_ms"] = True
        self.last_rtt_probe = time.monotonic()

    def probe_size(self, name: str) -> int:
        low, high = PROBE_BYTES
        if not self.measured[name]:
            return low  # the first probe meets a link of unknown rate: the smallest that reads true
        rate = min(getattr(self.network, name), self.suspected.get(name, math.inf))
        return int(min(high, max(low, rate * PROBE_SECONDS / 8)))

    def probe_uplink(self) -> None:
        self.probe_link("uplink_bps", self.connection.measure_uplink)

    def probe_downlink(self) -> None:
        self.probe_link("downlink_bps", self.connection.measure_downlink)

    def probe_link(self, name: str, measure) -> None:
        nbytes = self.probe_size(name)
        expected_s = nbytes * 8 / min(getattr(self.network, name), self.suspected.get(name, math.inf))
        # A probe sized for the old rate may meet a link that just dropped: bounded, its running out
        # of time is itself the measurement (a rate below nbytes / timeout), and a smaller probe follows.
        timeout = max(1.0, 4 * expected_s) + self.network.rtt_ms / 1e3
        try:
            with self.transfers.span() as span:
                timed_bytes, seconds = measure(nbytes, timeout=timeout)
        except grpc.RpcError as error:
            if getattr(error, "code", lambda: None)() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            self.suspected[name] = min(self.suspected.get(name, math.inf), nbytes * 8 / timeout)
            self.last_informative[name] = -math.inf
            if not self.measured[name]:  # an upper bound of the rate, closer than the prior
                setattr(self.network, name, self.suspected[name])
            return
        self.bandwidth_sample(name, timed_bytes, seconds, drops_only=span.overlapped)

    def bandwidth_sample(self, name: str, nbytes: int, seconds: float, drops_only: bool = False) -> None:
        """One transfer of ``nbytes`` that took ``seconds`` at the receiver (no round trip, no compute).

        Averaged as seconds per bit, the quantity transfer times are linear in, so a drop shows in the
        next plan at once instead of after the old, fast samples have decayed; each sample weighs by
        its bytes (``INFORMATIVE_BYTES``), so one large transfer replaces most of the estimate and a
        transfer just over ``MIN_SAMPLE_BYTES`` a part of it. The two directions are estimated
        separately, each from its own transfers.

        Transfers under ``MIN_SAMPLE_BYTES`` read fast on a bursty link, and transfers that shared
        the link with another one (``drops_only``) read slow by the share; neither is averaged in,
        except when it reads under half the estimate: no burst explains that, and sharing halves a
        rate at most, so it is a drop, taken in at full weight (``MAX_SAMPLE_WEIGHT``: the next plan
        should see it) and confirmed by a probe at once.
        """
        if seconds <= 0 or nbytes <= 0:
            return
        rate = 8.0 * nbytes / seconds
        weight = MAX_SAMPLE_WEIGHT * (1.0 - math.exp(-nbytes / INFORMATIVE_BYTES))
        if nbytes < MIN_SAMPLE_BYTES or drops_only:
            if nbytes < SUSPECT_BYTES or rate >= 0.5 * getattr(self.network, name):
                return
            self.suspected[name] = rate
            weight = MAX_SAMPLE_WEIGHT
        else:
            self.suspected.pop(name, None)
        seconds_per_bit = 1.0 / rate
        if not self.measured[name]:
            setattr(self.network, name, rate)
            self.measured[name] = True
        else:
            old = 1.0 / getattr(self.network, name)
            setattr(self.network, name, 1.0 / ((1 - weight) * old + weight * seconds_per_bit))
        # A suspected drop leaves the direction stale, so the next probe confirms it.
        self.last_informative[name] = -math.inf if name in self.suspected else time.monotonic()

    def observe_offload(self, upload_bytes: int, upload_s: float, download_bytes: int, download_s: float,
                        overhead_s: float, queue_ms: float, server_ms: float, profiled_s: float, *,
                        overlapped: bool) -> None:
        """Takes in one offloaded request: its transfers (timed at their receivers), what it took past
        them, the server's compute and one round trip (``overhead_s``), the server's queue and compute
        times, and what the server's profile says its ops take (``profiled_s``)."""
        rtt_s = self.network.rtt_ms / 1e3
        # A transfer that shared the link with a probe only counts as evidence of a drop.
        self.bandwidth_sample("uplink_bps", upload_bytes, upload_s, drops_only=overlapped)
        self.bandwidth_sample("downlink_bps", download_bytes, download_s, drops_only=overlapped)
        if not overlapped:
            self.network.overhead_ms = self.ewma(self.network.overhead_ms, max(overhead_s, -rtt_s) * 1e3)
        self.network.queue_ms = self.ewma(self.network.queue_ms, queue_ms)
        if profiled_s > 5e-5:
            # The server's own profile was taken once, idle; what its part takes now. (Below 50 us the
            # ratio is mostly the per-call cost of invoking, which the overhead term carries.)
            self.network.server_load = self.ewma(self.network.server_load, max(0.25, server_ms / 1e3 / profiled_s))

    def stale_directions(self, now: float) -> list[str]:
        """Directions whose estimate no transfer of a useful size has refreshed lately."""
        return [name for name, when in self.last_informative.items() if now - when > self.bandwidth_probe_interval_s]

    def note_link_probes(self, stale: Sequence[str]) -> None:
        """Marks the link busy with probes of ``stale`` directions and how long they should take."""
        self.probe_expected_s = sum(self.probe_size(name) * 8 / min(getattr(self.network, name),
                                                                      self.suspected.get(name, math.inf))
                                     for name in stale)
        self.probing_link = bool(stale)

"""Shaped networks for tests and benchmarks: real sockets through a link with a set rate and delay.

Three ways, best first; ``capability()`` says which this machine allows and ``shaped_link`` uses it:

- ``netem``: two network namespaces joined by a veth pair (10.213.0.1/30 device side, 10.213.0.2/30
  server side; the addresses exist only inside those namespaces), each end shaped on egress with
  ``tc qdisc ... netem rate R delay RTT/2``. Needs root, iproute2 (``ip``, ``tc``) and the kernel's
  sch_netem (CI: ``apt-get install -y iproute2``; a sandboxed kernel may lack the module).
- ``tbf+relay``: the same namespaces and veth, the rate set by the kernel's token bucket (``tbf``) on
  each egress, and the propagation delay added by a relay in the server namespace that holds every
  chunk RTT/2 in each direction before passing it on. For kernels with tbf but without netem.
- ``in-process``: no namespaces (not root, or no iproute2): a relay thread on loopback in this
  process delays and rate-limits both directions itself. Every output of a run shaped this way must
  say "emulated in-process" (``Link.label`` does).

Profiles: OpenSignal's 2017 averages as used by DADS, JointDNN and BottleNet (uplink / downlink
Mbit/s) and our round-trip times (those papers ignore RTT): 3G 1.1 / 2.03, 100 ms; 4G 5.85 / 13.76,
50 ms; Wi-Fi 18.88 / 54.97, 10 ms.

Slow start after idle is turned off inside the namespaces (a per-namespace sysctl) so that a request
that follows a pause is not charged a fresh TCP ramp-up on top of the shaped rate.
"""
from __future__ import annotations

import contextlib
import heapq
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from cloudsplit.partition import Network

SUBNET_DEVICE_IP = "10.213.0.1"
SUBNET_SERVER_IP = "10.213.0.2"
IN_PROCESS_LABEL = "emulated in-process"


@dataclass(frozen=True)
class Profile:
    name: str
    uplink_bps: float
    downlink_bps: float
    rtt_s: float

    def network(self) -> Network:
        return Network(uplink_bps=self.uplink_bps, downlink_bps=self.downlink_bps, rtt_s=self.rtt_s, name=self.name)


PROFILES: dict[str, Profile] = {
    "3g": Profile("3g", 1.1e6, 2.03e6, 0.100),
    "4g": Profile("4g", 5.85e6, 13.76e6, 0.050),
    "wifi": Profile("wifi", 18.88e6, 54.97e6, 0.010),
}


@dataclass(frozen=True)
class Capability:
    mode: str      # "netem", "tbf+relay" or "in-process"
    reason: str    # why not a better mode ("" for netem)


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


_capability: Capability | None = None


def capability() -> Capability:
    """Which shaping this machine allows (probed once: a throwaway namespace and a qdisc on its lo)."""
    global _capability
    if _capability is not None:
        return _capability
    if os.geteuid() != 0:
        _capability = Capability("in-process", "not root: network namespaces need CAP_NET_ADMIN")
    elif not (shutil.which("ip") and shutil.which("tc")):
        _capability = Capability("in-process", "iproute2 missing (`ip`/`tc`): apt-get install -y iproute2")
    else:
        probe = f"es_probe{os.getpid()}"
        if _run(["ip", "netns", "add", probe], check=False).returncode != 0:
            _capability = Capability("in-process", "`ip netns add` refused (no namespaces in this sandbox)")
        else:
            try:
                _run(["ip", "netns", "exec", probe, "ip", "link", "set", "lo", "up"], check=False)
                netem = _run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                              "delay", "1ms"], check=False)
                if netem.returncode == 0:
                    _capability = Capability("netem", "")
                else:
                    _run(["ip", "netns", "exec", probe, "tc", "qdisc", "del", "dev", "lo", "root"], check=False)
                    tbf = _run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
                                "rate", "1mbit", "burst", "16kb", "latency", "1s"], check=False)
                    why = f"sch_netem unavailable ({netem.stderr.strip() or 'tc refused'})"
                    _capability = (Capability("tbf+relay", why) if tbf.returncode == 0 else
                                   Capability("in-process", f"{why}; tbf unavailable too"))
            finally:
                _run(["ip", "netns", "del", probe], check=False)
    return _capability


class Relay:
    """Forwards TCP connections from ``listen`` to ``target``, each direction delayed by ``delay_s``
    and, when given, limited to ``rate_bps`` (a token bucket with no burst: a chunk leaves when the
    previous one has drained at the rate). Runs in threads of the calling process."""

    def __init__(self, target: tuple[str, int], delay_s: float, up_bps: float | None = None,
                 down_bps: float | None = None, listen: tuple[str, int] = ("127.0.0.1", 0)):
        self.target, self.delay_s, self.up_bps, self.down_bps = target, delay_s, up_bps, down_bps
        self._server = socket.create_server(listen)
        self.address = self._server.getsockname()[:2]
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            for source, sink, rate in ((client, upstream, self.up_bps), (upstream, client, self.down_bps)):
                threading.Thread(target=self._pump, args=(source, sink, rate), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate_bps: float | None) -> None:
        queue: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        done = []

        def deliver() -> None:
            while True:
                with ready:
                    while not queue and not done:
                        ready.wait()
                    if not queue:
                        break
                    due, _, chunk = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        ready.wait(wait)
                        continue
                    heapq.heappop(queue)
                try:
                    sink.sendall(chunk)
                except OSError:
                    return
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        writer = threading.Thread(target=deliver, daemon=True)
        writer.start()
        line_free_at = 0.0
        sequence = 0
        # Bytes leave in pieces of about 2 ms of the rate (one MTU at least), as a link's packets do: a
        # receiver that times a transfer from its first piece must not find a 16 kB lump there.
        piece = max(1500, min(16384, int(rate_bps / 8 * 0.002))) if rate_bps else 16384
        while True:
            try:
                chunk = source.recv(piece)
            except OSError:
                chunk = b""
            now = time.monotonic()
            if not chunk:
                break
            departs = now
            if rate_bps:
                departs = max(now, line_free_at) + len(chunk) * 8 / rate_bps
                line_free_at = departs
            with ready:
                sequence += 1
                heapq.heappush(queue, (departs + self.delay_s, sequence, chunk))
                ready.notify()
        with ready:
            done.append(True)
            ready.notify()
        writer.join()

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._server.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@dataclass
class Link:
    """One shaped link. The server side listens on ``server_host``; the client dials ``address(port)``.

    ``server_argv``/``client_argv`` wrap a command so it runs on that side (``ip netns exec`` in the
    namespace modes, unchanged in-process); ``start_server`` runs one and stops it at teardown.
    """

    mode: str
    profile: Profile
    reason: str
    server_ns: str | None = None
    client_ns: str | None = None
    server_host: str = "127.0.0.1"
    _relays: list = field(default_factory=list)
    _processes: list = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.mode == "in-process":
            return (f"{self.profile.name}: {IN_PROCESS_LABEL} (user-space relay on loopback; "
                    f"{self.reason})")
        if self.mode == "tbf+relay":
            return (f"{self.profile.name}: network namespaces + veth, rate by tc tbf, delay by a relay in the "
                    f"server namespace ({self.reason})")
        return f"{self.profile.name}: network namespaces + veth shaped by tc netem"

    def server_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns, *argv] if self.server_ns else list(argv)

    def client_argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.client_ns, *argv] if self.client_ns else list(argv)

    def start_server(self, argv: Sequence[str], **popen) -> subprocess.Popen:
        process = subprocess.Popen(self.server_argv(argv), **popen)
        self._processes.append(process)
        return process

    def address(self, port: int) -> str:
        """What the client dials to reach a server listening on ``port`` on the server side."""
        host, dialled = self._endpoint(port)
        return f"{host}:{dialled}"

    def _endpoint(self, port: int) -> tuple[str, int]:
        if self.mode == "netem":
            return SUBNET_SERVER_IP, port
        if self.mode == "tbf+relay":
            relay = subprocess.Popen(self.server_argv(
                [sys.executable, "-m", "cloudsplit.netem", "relay", f"{SUBNET_SERVER_IP}:0", f"127.0.0.1:{port}",
                 str(self.profile.rtt_s / 2)]), stdout=subprocess.PIPE, text=True, env=child_env())
            self._processes.append(relay)
            line = relay.stdout.readline().strip()
            if not line:
                raise RuntimeError("the delay relay in the server namespace did not start")
            return SUBNET_SERVER_IP, int(line)
        relay = Relay(("127.0.0.1", port), self.profile.rtt_s / 2, self.profile.uplink_bps, self.profile.downlink_bps)
        self._relays.append(relay)
        return relay.address[0], relay.address[1]

    def _stop(self) -> None:
        for relay in self._relays:
            relay.close()
        for process in reversed(self._processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def child_env() -> dict[str, str]:
    """The environment for a child that imports cloudsplit from this source tree."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _namespaces(link: Link, profile: Profile, kind: str) -> None:
    suffix = f"{os.getpid()}_{int(time.monotonic() * 1000) % 100000}"
    link.client_ns, link.server_ns = f"es_dev{suffix}", f"es_srv{suffix}"
    veth_client, veth_server = f"esd{suffix}"[:15], f"ess{suffix}"[:15]
    link.server_host = "127.0.0.1" if kind == "tbf+relay" else "0.0.0.0"
    _run(["ip", "netns", "add", link.client_ns])
    _run(["ip", "netns", "add", link.server_ns])
    _run(["ip", "link", "add", veth_client, "type", "veth", "peer", "name", veth_server])
    for ns, dev, ip, rate in ((link.client_ns, veth_client, SUBNET_DEVICE_IP, profile.uplink_bps),
                              (link.server_ns, veth_server, SUBNET_SERVER_IP, profile.downlink_bps)):
        _run(["ip", "link", "set", dev, "netns", ns])
        inside = ["ip", "netns", "exec", ns]
        _run([*inside, "ip", "addr", "add", f"{ip}/30", "dev", dev])
        _run([*inside, "ip", "link", "set", dev, "up"])
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "sysctl", "-q", "-w", "net.ipv4.tcp_slow_start_after_idle=0"], check=False)
        if kind == "netem":
            _run([*inside, "tc", "qdisc", "add", "dev", dev, "root", "netem", "rate", f"{int(rate)}bit",
                  "delay", f"{profile.rtt_s / 2 * 1e6:.0f}us", "limit", "100000"])
        else:
            # A burst of one MTU keeps the link at its rate from the first packet.
            _run([*inside, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{int(rate)}bit",
                  "burst", "3000", "latency", "10s"])


@contextlib.contextmanager
def shaped_link(profile: Profile | str, mode: str | None = None) -> Iterator[Link]:
    """A link shaped to ``profile``; ``mode`` forces one (default: the best ``capability()``).
    Everything it made (namespaces, veth, processes, relays) is removed on exit, also on error."""
    profile = PROFILES[profile] if isinstance(profile, str) else profile
    available = capability()
    order = ["netem", "tbf+relay", "in-process"]
    chosen = mode or available.mode
    if chosen not in order:
        raise ValueError(f"mode must be one of {order}, got {chosen!r}")
    if order.index(chosen) < order.index(available.mode):
        raise RuntimeError(f"shaping mode {chosen!r} is not available here: {available.reason}")
    link = Link(mode=chosen, profile=profile, reason=available.reason)
    try:
        if chosen != "in-process":
            _namespaces(link, profile, chosen)
        yield link
    finally:
        link._stop()
        for ns in (link.client_ns, link.server_ns):
            if ns:
                _run(["ip", "netns", "del", ns], check=False)  # takes its end of the veth pair with it


def _relay_main(argv: Sequence[str]) -> int:
    listen, target, delay = argv
    host, port = listen.rsplit(":", 1)
    target_host, target_port = target.rsplit(":", 1)
    relay = Relay((target_host, int(target_port)), float(delay), listen=(host, int(port)))
    print(relay.address[1], flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "relay":
        sys.exit(_relay_main(sys.argv[2:]))
    print("usage: python -m cloudsplit.netem relay LISTEN_HOST:PORT TARGET_HOST:PORT ONE_WAY_DELAY_S", file=sys.stderr)
    sys.exit(2)

"""Shaped links: the rate and round trip a client sees match the profile, and teardown is complete."""
from __future__ import annotations

import subprocess
import sys

import pytest

from cloudsplit import netem

# Reads (upload length, download length), then the upload, then answers with the download.
SINK = r"""
import socket, struct, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
while True:
    conn, _ = server.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with conn:
        while True:
            head = conn.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                break
            up, down = struct.unpack("!II", head)
            while up:
                up -= len(conn.recv(min(up, 1 << 16)))
            conn.sendall(b"d" * down if down else b"!")
"""

PROFILE = netem.Profile("test", uplink_bps=8e6, downlink_bps=16e6, rtt_s=0.04)




def available_modes():
    order = ["netem", "tbf+relay", "in-process"]
    best = netem.capability().mode
    return order[order.index(best):]


@pytest.mark.parametrize("mode", ["netem", "tbf+relay", "in-process"])
def test_link_has_the_profile_rate_and_round_trip(mode):
    if mode not in available_modes():
        pytest.skip(f"{mode} not available here: {netem.capability().reason}")
    with netem.shaped_link(PROFILE, mode=mode) as link:
        sink = link.start_server([sys.executable, "-c", SINK, link.server_host], stdout=subprocess.PIPE, text=True)
        port = int(sink.stdout.readline())
        host, dialled = link.address(port).rsplit(":", 1)
        client = CLIENT.format(host=host, port=dialled)
        result = subprocess.run(link.client_argv([sys.executable, "-c", client]), capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        rtt, upload, download = (float(v) for v in result.stdout.split())
    assert PROFILE.rtt_s * 0.9 <= rtt <= PROFILE.rtt_s * 1.3 + 0.003
    # 200 kB up at 8 Mbit/s: 0.2 s plus a round trip; 400 kB down at 16 Mbit/s: 0.2 s plus a round trip.
    assert 0.2 * 0.9 + PROFILE.rtt_s <= upload <= 0.2 * 1.25 + PROFILE.rtt_s + 0.01, upload
    assert 0.2 * 0.9 + PROFILE.rtt_s <= download <= 0.2 * 1.25 + PROFILE.rtt_s + 0.01, download
    if link.mode == "in-process":
        assert netem.IN_PROCESS_LABEL in link.label
    if link.server_ns:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert link.server_ns not in names and link.client_ns not in names


CLIENT = r"""
import socket, struct, time
sock = socket.create_connection(("{host}", {port}))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def request(up, down):
    began = time.perf_counter()
    sock.sendall(struct.pack("!II", up, down) + b"u" * up)
    want = max(down, 1)
    while want:
        want -= len(sock.recv(min(want, 1 << 16)))
    return time.perf_counter() - began
request(20000, 20000)
rtt = min(request(0, 0) for _ in range(5))
upload = min(request(200_000, 0) for _ in range(2))
download = min(request(0, 400_000) for _ in range(2))
print(rtt, upload, download)
"""


def test_root_gets_namespaces():
    import os
    import shutil

    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("not root or no iproute2: the in-process fallback is the expected mode")
    capability = netem.capability()
    assert capability.mode in ("netem", "tbf+relay"), capability.reason


def test_teardown_on_error():
    if netem.capability().mode == "in-process":
        pytest.skip(f"no namespaces here: {netem.capability().reason}")
    with pytest.raises(RuntimeError, match="boom"):
        with netem.shaped_link("3g") as link:
            sleeper = link.start_server([sys.executable, "-c", "import time; time.sleep(60)"])
            raise RuntimeError("boom")
    assert sleeper.poll() is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert link.server_ns not in names and link.client_ns not in names


def test_profiles_are_the_papers():
    assert [(p.uplink_bps / 1e6, p.downlink_bps / 1e6, p.rtt_s) for p in netem.PROFILES.values()] == \
        [(1.1, 2.03, 0.1), (5.85, 13.76, 0.05), (18.88, 54.97, 0.01)]

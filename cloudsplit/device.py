"""Make a process an honestly slower "device" than the server on the same machine.

The split benchmark's default is not a quota but the kernels: the device process runs the runtime
with ``EDGE_ISA=scalar`` (``DEVICE_ISA_ENV``), the readable reference kernels, on one interpreter
thread, while the server runs the SIMD kernels the CPU has. That is a phone core without the wide
vector units, 10-25x slower per model on the benchmark's machine (measured per model, never
assumed: the benchmark reports device profile over server profile), and, unlike a quota, it slows
every op by its own kernel's factor at any time scale, with nothing to quantise. The quota below
remains for a milder slowdown or on top of the scalar kernels.

The device process runs its interpreter with one thread, and its CPU time is capped at ``share`` of
one core, by the first of these that works:

- cgroup v2: a child group with ``cpu.max = "<share x period> <period>"``;
- cgroup v1: a child of the cpu controller with ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``;
- a duty cycle: a thread here sends SIGCONT, lets the process run ``share x period``, then SIGSTOP
  for the rest of the period (coarser: a process stopped mid-request waits out the period).

The quota is enforced by the kernel scheduler per period, so wall time is quantised to periods: an
op shorter than ``share x period`` may run at full speed, and longer work averages to ``share`` only
over many periods. A 5 % share needs a 20 ms period (the kernel's minimum quota is 1 ms), which made
device parts of a few tens of ms land on whole periods and mispredicted cuts by up to 50 %; so the
period defaults to the shortest the share allows (``shortest_period_us``: 1 ms of quota per period,
4 ms at a 25 % share), and a larger share with a short period is the better emulation than a tiny
share with a long one. The factor actually obtained is measured, not assumed (``measure_slowdown``)
and reported by the benchmark; on a shared machine it is below 1 / share, since the unthrottled
reference run competes for the cores too.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import threading
import time
from typing import Iterator, Sequence

CGROUP_ROOT = pathlib.Path("/sys/fs/cgroup")
# The environment that makes a process's runtime use its reference kernels (cruntime/src/kernels/isa.c).
DEVICE_ISA_ENV = {"EDGE_ISA": "scalar"}


MIN_QUOTA_US = 1000


def shortest_period_us(share: float) -> int:
    """The shortest CFS period whose quota (``share`` of it) is still the kernel's 1 ms minimum."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    return max(MIN_QUOTA_US, int(round(MIN_QUOTA_US / share)))


class Throttle:
    """Where the throttled processes go. ``popen(argv)`` starts one already inside the limit."""

    def __init__(self, share: float, period_us: int | None = None):
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        if period_us is None:
            period_us = shortest_period_us(share)
        if period_us < 1000:
            raise ValueError(f"period must be >= 1000 us (the kernel's minimum), got {period_us}")
        self.share, self.period_us = share, period_us
        self.method = ""
        self._group: pathlib.Path | None = None
        self._procs_file: pathlib.Path | None = None
        self._stopped = threading.Event()
        self._duty_pids: list[int] = []
        self._duty_thread: threading.Thread | None = None

    @property
    def description(self) -> str:
        return f"{self.method}: {self.share:.0%} of one core per {self.period_us / 1000:g} ms period, 1 thread"

    def _setup(self) -> None:
        quota = max(MIN_QUOTA_US, int(self.share * self.period_us))
        name = f"edgesplit-device-{os.getpid()}"
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            group = CGROUP_ROOT / name
            with contextlib.suppress(OSError):
                if "cpu" not in (CGROUP_ROOT / "cgroup.subtree_control").read_text().split():
                    (CGROUP_ROOT / "cgroup.subtree_control").write_text("+cpu")
                group.mkdir()
                (group / "cpu.max").write_text(f"{quota} {self.period_us}")
                self._group, self._procs_file, self.method = group, group / "cgroup.procs", "cgroup v2 cpu.max"
                return
            _remove_group(group)
        v1 = CGROUP_ROOT / "cpu"
        if (v1 / "cpu.cfs_quota_us").exists():
            group = v1 / name
            with contextlib.suppress(OSError):
                group.mkdir()
                (group / "cpu.cfs_period_us").write_text(str(self.period_us))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
                self._group, self._procs_file, self.method = group, group / "cgroup.procs", "cgroup v1 cpu.cfs_quota_us"
                return
            _remove_group(group)
        self.method = "SIGSTOP/SIGCONT duty cycle"
        self._duty_thread = threading.Thread(target=self._duty_cycle, name="device-duty-cycle", daemon=True)
        self._duty_thread.start()

    def _duty_cycle(self) -> None:
        run_s = self.share * self.period_us / 1e6
        stop_s = self.period_us / 1e6 - run_s
        while not self._stopped.is_set():
            self._signal(signal.SIGCONT)
            time.sleep(run_s)
            if stop_s > 0:
                self._signal(signal.SIGSTOP)
                time.sleep(stop_s)
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> None:
        for pid in list(self._duty_pids):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                self._duty_pids.remove(pid)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Starts ``argv`` inside the limit (a cgroup is joined before exec, so no work escapes it)."""
        procs_file = self._procs_file
        if procs_file is not None:
            def join() -> None:
                procs_file.write_text(str(os.getpid()))
            kwargs["preexec_fn"] = join
        process = subprocess.Popen(list(argv), **kwargs)
        if procs_file is None:
            self._duty_pids.append(process.pid)
        return process

    def close(self) -> None:
        self._stopped.set()
        if self._duty_thread is not None:
            self._duty_thread.join()
        if self._group is not None:
            _remove_group(self._group)


def _remove_group(group: pathlib.Path) -> None:
    # A group can only be removed once empty: its processes go back to the parent first.
    parent_procs = group.parent / "cgroup.procs"
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                parent_procs.write_text(pid)
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


@contextlib.contextmanager
def slow_device(share: float = 0.25, period_us: int | None = None) -> Iterator[Throttle]:
    """A Throttle for device processes, removed (and its processes released) on exit; ``period_us``
    defaults to ``shortest_period_us(share)``."""
    throttle = Throttle(share, period_us)
    throttle._setup()
    try:
        yield throttle
    finally:
        throttle.close()


_SPIN = ("import time\nwall = time.perf_counter()\ncpu = time.process_time()\n"
         "while time.process_time() - cpu < {cpu_s}:\n    pass\nprint(time.perf_counter() - wall)\n")


def measure_slowdown(throttle: Throttle, cpu_s: float = 0.3) -> float:
    """Wall time of ``cpu_s`` of CPU work inside the throttle over the same work outside it (timed
    inside the child, so interpreter start-up is not counted)."""
    import sys

    def wall(start) -> float:
        process = start([sys.executable, "-c", _SPIN.format(cpu_s=cpu_s)], stdout=subprocess.PIPE, text=True)
        out, _ = process.communicate()
        return float(out)

    return wall(throttle.popen) / wall(subprocess.Popen)

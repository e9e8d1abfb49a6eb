"""Pieces the Kivy apps share: a frame-interval meter, percentiles, the model cache directory and
the latest-result hand-off from worker threads to the UI thread.

Nothing here imports Kivy at module level, so the apps' logic (and ``--selftest``) runs without a
window; ``FrameMeter.attach`` imports the Clock only when a UI asks for it.
"""
from __future__ import annotations

import math
import os
import pathlib
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100) of ``values``; nan when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


def cache_dir(app: str) -> pathlib.Path:
    """Where an app builds its models at first run: $EDGESPLIT_APPS_CACHE/<app>, else
    ~/.cache/edgesplit/apps/<app> (generated files never go into the source tree)."""
    root = os.environ.get("EDGESPLIT_APPS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgesplit", "apps")
    path = pathlib.Path(root) / app
    path.mkdir(parents=True, exist_ok=True)
    return path


class FrameMeter:
    """Records the interval between consecutive frames (ms), keeping the last ``window`` of them.

    ``tick()`` is called once per frame; a UI attaches it to Kivy's Clock with ``attach()`` (a
    callback scheduled every frame), a test may call it from its own frame loop. ``mark()`` starts a
    fresh series (e.g. when a fit begins) without forgetting the totals."""

    def __init__(self, window: int = 600, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self.intervals_ms: deque[float] = deque(maxlen=window)
        self.frames = 0
        self._last: float | None = None
        self._event = None

    def tick(self, *_args) -> None:
        now = self._clock()
        if self._last is not None:
            self.intervals_ms.append((now - self._last) * 1e3)
        self._last = now
        self.frames += 1

    def mark(self) -> None:
        self.intervals_ms.clear()
        self._last = None

    def attach(self) -> "FrameMeter":
        from kivy.clock import Clock

        if self._event is None:
            self._event = Clock.schedule_interval(self.tick, 0)
        return self

    def detach(self) -> None:
        if self._event is not None:
            self._event.cancel()
            self._event = None

    def summary(self) -> dict[str, float]:
        values = list(self.intervals_ms)
        return {"frames": len(values), "p50_ms": percentile(values, 50), "p95_ms": percentile(values, 95),
                "max_ms": max(values) if values else math.nan}


class Latest:
    """A one-slot mailbox from a worker thread to the UI thread: ``put`` overwrites what was not yet
    taken, so the UI only ever shows the newest result and never queues stale ones."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value: Any = None
        self._full = False

    def put(self, value: Any) -> None:
        with self._lock:
            self._value, self._full = value, True

    def take(self, default: Any = None) -> Any:
        with self._lock:
            if not self._full:
                return default
            value, self._value, self._full = self._value, None, False
            return value

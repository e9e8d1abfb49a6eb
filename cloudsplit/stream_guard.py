"""Keeps streaming calls from holding a server worker for as long as a client likes.

A handler of a client-streaming call blocks on the next request message, and one of a
server-streaming call blocks while the client does not read: a client that stalls, drips a byte
now and then, or never sets a deadline would hold a worker thread (and, for ``Infer``, an admission
slot) indefinitely, and enough of them would starve everyone else. gRPC enforces the client's own
deadline on the server too; ``StreamGuard`` adds the server's:

- every request stream must deliver its next message (or its end) within ``idle_s``;
- every streaming call must finish within ``max_call_s``, except the long-lived ones named in
  ``sessions`` (an ``InferStream`` session, a ``WatchJob`` subscription), which only the idle
  limit bounds.

A call past either limit is cancelled (the client sees CANCELLED); its handler wakes from the
blocked read or write, and its worker and any slot it held are freed. One watchdog thread serves
the whole server.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time

import grpc

from cloudsplit.security import original_behavior, replace_behavior

log = logging.getLogger("cloudsplit.server")


class _Watchdog:
    """Cancels calls whose time ran out: ``arm(context, when)`` returns a ticket, ``disarm(ticket)``."""

    def __init__(self):
        self._heap: list[list] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._closed = False
        self._disarmed = 0   # disarmed tickets still in the heap
        self.cancelled = 0
        self._thread = threading.Thread(target=self._loop, name="cloudsplit-stream-guard", daemon=True)
        self._thread.start()

    def arm(self, context, when: float, reason: str) -> list:
        ticket = [when, next(self._order), context, reason, True]
        with self._condition:
            if self._disarmed > 256 and self._disarmed * 2 > len(self._heap):
                # Most calls end long before their limit: drop their tickets now, not at the limit.
                self._heap = [t for t in self._heap if t[4]]
                heapq.heapify(self._heap)
                self._disarmed = 0
            heapq.heappush(self._heap, ticket)
            if self._heap[0] is ticket:
                self._condition.notify()
        return ticket

    def disarm(self, ticket: list) -> None:
        with self._condition:
            if ticket[4]:
                ticket[2] = None   # the call's context (and what it holds) is not kept alive by the heap
                ticket[4] = False
                self._disarmed += 1

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._thread.join(5)

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._closed:
                    while self._heap and not self._heap[0][4]:
                        heapq.heappop(self._heap)
                        self._disarmed -= 1
                    delay = self._heap[0][0] - time.monotonic() if self._heap else None
                    if delay is not None and delay <= 0:
                        break
                    self._condition.wait(delay)
                if self._closed:
                    return
                ticket = heapq.heappop(self._heap)
                context, reason = ticket[2], ticket[3]
                ticket[2], ticket[4] = None, False
                self.cancelled += 1
            log.warning("cancelling a call: %s (peer %s)", reason, _peer(context))
            context.cancel()   # outside the lock: handlers disarm their tickets under it


def _peer(context) -> str:
    try:
        return context.peer()
    except Exception:  # the call may be gone already
        return "?"


class _GuardedRequests:
    """A request iterator whose every ``next`` must come back within ``idle_s``."""

    def __init__(self, requests, context, watchdog: _Watchdog, idle_s: float, method: str):
        self._requests = requests
        self._context = context
        self._watchdog = watchdog
        self._idle_s = idle_s
        self._method = method

    def __iter__(self):
        return self

    def __next__(self):
        ticket = self._watchdog.arm(self._context, time.monotonic() + self._idle_s,
                                    f"{self._method}: no request message for {self._idle_s:g} s")
        try:
            return next(self._requests)
        finally:
            self._watchdog.disarm(ticket)


class StreamGuard(grpc.ServerInterceptor):
    """Bounds streaming calls by ``idle_s`` between request messages and ``max_call_s`` in all
    (``sessions``: full method names bounded by the idle limit only)."""

    def __init__(self, idle_s: float, max_call_s: float, sessions: frozenset[str] = frozenset()):
        self.idle_s = idle_s
        self.max_call_s = max_call_s
        self.sessions = sessions
        self.watchdog = _Watchdog()

    @property
    def cancelled(self) -> int:
        """Calls cancelled so far for running past a limit."""
        return self.watchdog.cancelled

    def close(self) -> None:
        self.watchdog.close()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method
        behavior = original_behavior(handler)
        bounded = method not in self.sessions
        watchdog, idle_s, max_call_s = self.watchdog, self.idle_s, self.max_call_s

        def arm_call(context):
            if not bounded:
                return None
            return watchdog.arm(context, time.monotonic() + max_call_s,
                                f"{method}: still running after the server's limit of {max_call_s:g} s")

        def requests_of(request, context):
            return _GuardedRequests(request, context, watchdog, idle_s, method) if handler.request_streaming \
                else request

        if handler.response_streaming:
            def guarded(request, context):
                ticket = arm_call(context)
                try:
                    yield from behavior(requests_of(request, context), context)
                finally:
                    if ticket is not None:
                        watchdog.disarm(ticket)
        else:
            def guarded(request, context):
                ticket = arm_call(context)
                try:
                    return behavior(requests_of(request, context), context)
                finally:
                    if ticket is not None:
                        watchdog.disarm(ticket)
        return replace_behavior(handler, guarded)

"""Opportunistic batching of requests that share a model and a cut.

Up to ``max_parallel`` batches of one key run at once. A request that finds a free slot runs at once
with whatever is queued (so an idle server adds no latency); a request that finds every slot busy
waits, and the next slot to free takes every waiting request (up to ``max_batch``) as one batch. Batches
therefore grow exactly when the server is saturated, which is when running them together pays.
``window_s`` > 0 makes a leader wait up to that long for more requests before it runs (TF Serving's
batch timeout): a latency cost paid on purpose for larger batches.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Ticket(Generic[Item]):
    __slots__ = ("item", "done", "result", "error", "lead", "batch_size", "wake")

    def __init__(self, item):
        self.item = item
        self.done = False
        self.lead = False
        self.result = None
        self.error: BaseException | None = None
        self.batch_size = 0
        # Each waiter sleeps on its own event and is woken only when it is done or must lead: one
        # condition shared by every waiter woke them all on each change, each taking the GIL in turn.
        self.wake = threading.Event()


class Batcher(Generic[Item, Result]):
    """``submit(item)`` returns ``(result, batch_size)``; ``run_batch(items) -> results`` runs a batch.

    A result that is an exception is raised in its own submitter only (one bad request of a batch
    does not fail the others); an exception from ``run_batch`` itself is raised in every submitter.
    """

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_parallel: int = 1,
                 max_batch: int = 16, window_s: float = 0.0):
        self._run_batch = run_batch
        self._max_parallel = max(1, int(max_parallel))
        self._max_batch = max(1, int(max_batch))
        self._window_s = max(0.0, float(window_s))
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # leaders waiting out a batch window
        self._queue: list[_Ticket] = []
        self._running = 0

    def submit(self, item: Item) -> tuple[Result, int]:
        ticket = _Ticket(item)
        with self._lock:
            self._queue.append(ticket)
            if self._window_s:
                self._arrived.notify_all()
            if self._running < self._max_parallel:
                self._running += 1
                ticket.lead = True
        while not ticket.done:
            if ticket.lead:
                ticket.lead = False
                self._lead()
            else:
                ticket.wake.wait()
                ticket.wake.clear()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result, ticket.batch_size

    def _lead(self) -> None:
        with self._lock:
            if self._window_s:
                closes = time.monotonic() + self._window_s
                while len(self._queue) < self._max_batch and time.monotonic() < closes:
                    self._arrived.wait(closes - time.monotonic())
            # Tickets already handed a slot (their threads not yet awake) lead their own batches.
            free = [t for t in self._queue if not t.lead]
            batch = free[:self._max_batch]
            taken = set(map(id, batch))
            self._queue = [t for t in self._queue if id(t) not in taken]
        try:
            results = self._run_batch([t.item for t in batch])
            errors = [None] * len(batch)
        except BaseException as error:  # every waiter must wake, whatever happened
            results, errors = [None] * len(batch), [error] * len(batch)
        successor = None
        with self._lock:
            for ticket, result, error in zip(batch, results, errors):
                if isinstance(result, BaseException):
                    result, error = None, result
                ticket.result, ticket.error, ticket.done, ticket.batch_size = result, error, True, len(batch)
            successor = next((t for t in self._queue if not t.lead), None)
            if successor is not None:
                successor.lead = True  # hand the slot over rather than freeing it
            else:
                self._running -= 1
        for ticket in batch:
            ticket.wake.set()
        if successor is not None:
            successor.wake.set()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

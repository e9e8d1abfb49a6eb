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
    __slots__ = ("item", "done", "result", "error", "lead", "batch_size")

    def __init__(self, item):
        self.item = item
        self.done = False
        self.lead = False
        self.result = None
        self.error: BaseException | None = None
        self.batch_size = 0


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
        self._lock = threading.Condition()
        self._queue: list[_Ticket] = []
        self._running = 0

    def submit(self, item: Item) -> tuple[Result, int]:
        ticket = _Ticket(item)
        with self._lock:
            self._queue.append(ticket)
            self._lock.notify_all()
            if self._running < self._max_parallel:
                self._running += 1
                ticket.lead = True
            while not (ticket.lead or ticket.done):
                self._lock.wait()
        if ticket.lead and not ticket.done:
            self._lead()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result, ticket.batch_size

    def _lead(self) -> None:
        with self._lock:
            if self._window_s:
                closes = time.monotonic() + self._window_s
                while len(self._queue) < self._max_batch and time.monotonic() < closes:
                    self._lock.wait(closes - time.monotonic())
            batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
        try:
            results = self._run_batch([t.item for t in batch])
            errors = [None] * len(batch)
        except BaseException as error:  # every waiter must wake, whatever happened
            results, errors = [None] * len(batch), [error] * len(batch)
        with self._lock:
            for ticket, result, error in zip(batch, results, errors):
                if isinstance(result, BaseException):
                    result, error = None, result
                ticket.result, ticket.error, ticket.done, ticket.batch_size = result, error, True, len(batch)
            if self._queue:
                self._queue[0].lead = True  # hand the slot over rather than freeing it
            else:
                self._running -= 1
            self._lock.notify_all()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._queue)

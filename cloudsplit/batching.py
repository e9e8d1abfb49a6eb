"""Opportunistic batching of requests that share a model and a cut, and the server's use of it.

Up to ``max_parallel`` batches of one key run at once. A request that finds a free slot runs at once
with whatever is queued (so an idle server adds no latency); a request that finds every slot busy
waits, and the next slot to free takes every waiting request (up to ``max_batch``) as one batch. Batches
therefore grow exactly when the server is saturated, which is when running them together pays.
``window_s`` > 0 makes a leader wait up to that long for more requests before it runs (TF Serving's
batch timeout): a latency cost paid on purpose for larger batches.

``BatchRunner`` runs the server's validated requests through one ``Batcher`` per model and cut, as
stacked batches in power-of-two sizes (``batch_bucket``) when the model allows it, and at most
``compute_slots`` of them on this process's interpreters at once, across every model.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

import grpc
import numpy as np

from cloudsplit.validation import Request, RequestError

log = logging.getLogger("cloudsplit.server")

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


def batch_bucket(count: int, max_batch: int) -> int:
    """The batch size ``count`` requests run at: the next power of two, at most ``max_batch``."""
    bucket = 1
    while bucket < count:
        bucket *= 2
    return max(count, min(bucket, max_batch))


@dataclass
class RequestResult:
    """One request's outputs and timings (``batch_size``: how many requests ran stacked with it)."""

    outputs: list[tuple[int, np.ndarray]]
    server_ms: float
    queue_ms: float
    batch_size: int = 1


class BatchRunner:
    """Runs validated requests' server ops, batching those that share a model and a cut.

    Requests with the same model, input shapes, server ops, uploads and outputs go through one
    ``Batcher``; a batch runs stacked along axis 0 when the model's batch dimension is dynamic and the
    stacked results match one-by-one results (checked once per key), else one request at a time.
    ``options`` is the server's ``ServerOptions``: batching, max_batch, batch_padding, batch_window_ms
    and the delay_s test hook are read from it.

    At most ``compute_slots`` invocations run on this process's interpreters at once (the rest wait
    for a slot, and that wait counts in their ``queue_ms``): more would only share the same cores,
    and each would need its own warm interpreter, so a model's interpreters would grow with the
    highest number of requests ever in flight instead of staying at ``compute_slots`` per input
    configuration. Models served by stage workers (``entry.stages``) compute elsewhere and are not
    counted.
    """

    def __init__(self, options, compute_slots: int):
        self.options = options
        self.compute_slots = compute_slots
        self._compute = threading.BoundedSemaphore(compute_slots)
        self._batchers: dict[tuple, Batcher] = {}
        self._batchers_lock = threading.Lock()
        self._running = 0
        self._running_lock = threading.Lock()
        self.requests_run = 0
        self.batches_run = 0
        self.batched_requests = 0

    def load_factor(self) -> float:
        """>= 1: requests executing or waiting, per compute slot."""
        with self._running_lock:
            return max(1.0, self._running / self.compute_slots)

    def execute(self, request: Request) -> RequestResult:
        if self.options.delay_s:
            time.sleep(self.options.delay_s)
        self.check_deadline(request)
        with self._running_lock:
            self._running += 1
        try:
            result = self._run(request)
            with self._running_lock:
                self.requests_run += 1
            return result
        finally:
            with self._running_lock:
                self._running -= 1

    def _run(self, request: Request) -> RequestResult:
        if not self.options.batching:
            return self.run_sequential([request])[0]
        key = (request.entry.sha256, request.key)
        with self._batchers_lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = Batcher(self._run_batch, max_parallel=self.compute_slots, max_batch=self.options.max_batch,
                                  window_s=self.options.batch_window_ms / 1e3)
                self._batchers[key] = batcher
        result, _ = batcher.submit(request)
        return result

    @staticmethod
    def check_deadline(request: Request) -> None:
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"request {request.request_id}: the deadline passed before the server ops ran")

    def _run_batch(self, requests: Sequence[Request]) -> list[Any]:
        results: list[Any] = [None] * len(requests)
        live = []
        for i, request in enumerate(requests):
            try:
                self.check_deadline(request)
                live.append(i)
            except RequestError as error:
                results[i] = error
        if not live:
            return results
        batch = [requests[i] for i in live]
        entry = batch[0].entry
        key = batch[0].key
        outcome = None
        if len(batch) > 1 and entry.batch_dimension_dynamic and entry.batchable.get(key, True):
            outcome = self.run_in_buckets(batch)
            if outcome is not None and key not in entry.batchable:
                sequential = self.run_sequential(batch)
                entry.batchable[key] = all(_outputs_close(a.outputs, b.outputs) for a, b in zip(outcome, sequential))
                if not entry.batchable[key]:
                    log.warning("model %s: batched results differ from one-by-one results for server ops %s; "
                                "running them one by one", entry.sha256[:12], list(key[1])[:6])
                    outcome = sequential
        if outcome is None:
            outcome = self.run_sequential(batch)
        for i, result in zip(live, outcome):
            results[i] = result
        return results

    def run_in_buckets(self, requests: Sequence[Request]) -> list[RequestResult] | None:
        """Runs the requests as stacked batches whose sizes are powers of two (each on an interpreter
        kept warm for that size). By default a batch of 13 runs as 8 + 4 + 1, in turn; with
        ``batch_padding`` it runs as one batch of 16 whose last 3 rows are padding. Splitting wastes
        no compute, padding saves the extra invokes; which pays is measured (benchmarks/README.md).
        None when the model does not batch along axis 0."""
        if self.options.batch_padding:
            return self.run_stacked(requests)
        results: list[RequestResult] = []
        start = 0
        while start < len(requests):
            size = 1
            while size * 2 <= min(len(requests) - start, self.options.max_batch):
                size *= 2
            group = requests[start:start + size]
            outcome = self.run_stacked(group) if size > 1 else self.run_sequential(group)
            if outcome is None:
                return None
            results.extend(outcome)
            start += size
        return results

    def _invoke(self, entry, config, ops, uploads, outputs) -> tuple[list[tuple[int, np.ndarray]], float]:
        """``entry.invoke`` in a compute slot; returns (outputs, monotonic time it began)."""
        if entry.stages is not None:
            began = time.monotonic()
            return entry.invoke(config, ops, uploads, outputs), began
        with self._compute:
            began = time.monotonic()
            return entry.invoke(config, ops, uploads, outputs), began

    def run_sequential(self, requests: Sequence[Request]) -> list[RequestResult]:
        results = []
        for request in requests:
            outputs, began = self._invoke(request.entry, request.config, request.server_ops, request.uploads,
                                          request.outputs)
            results.append(RequestResult(outputs, (time.monotonic() - began) * 1e3, (began - request.ready_at) * 1e3))
        return results

    def run_stacked(self, requests: Sequence[Request]) -> list[RequestResult] | None:
        """Runs the requests as one batch along axis 0, or returns None when the shapes don't follow.

        The batch is padded to its power-of-two bucket with copies of the first request (whose
        results are dropped) so that it runs on an interpreter already allocated for that size.
        """
        entry, first, count = requests[0].entry, requests[0], len(requests)
        if any(len(shape) == 0 for shape in first.config) or len({shape[0] for shape in first.config}) != 1:
            entry.batchable[first.key] = False
            return None
        bucket = batch_bucket(count, self.options.max_batch)
        batched_config = tuple((shape[0] * bucket, *shape[1:]) for shape in first.config)
        try:
            batched_shapes = entry.shapes_for(batched_config)
        except RequestError:
            entry.batchable[first.key] = False
            return None
        tensors = [t for t, _ in first.uploads] + list(first.outputs)
        if any(not first.shapes[t] or batched_shapes[t] != (first.shapes[t][0] * bucket, *first.shapes[t][1:])
               for t in tensors):
            entry.batchable[first.key] = False
            return None
        padding = [first] * (bucket - count)
        stacked = [(t, np.concatenate([r.uploads[k][1] for r in (*requests, *padding)]))
                   for k, (t, _) in enumerate(first.uploads)]
        outputs, began = self._invoke(entry, batched_config, first.server_ops, stacked, first.outputs)
        server_ms = (time.monotonic() - began) * 1e3
        self.batches_run += 1
        self.batched_requests += count
        split = [(t, np.split(array, bucket)) for t, array in outputs]
        results = []
        for i, request in enumerate(requests):
            pieces = [(t, np.ascontiguousarray(parts[i])) for t, parts in split]
            results.append(RequestResult(pieces, server_ms, (began - request.ready_at) * 1e3, count))
        return results


def _outputs_close(a: list[tuple[int, np.ndarray]], b: list[tuple[int, np.ndarray]]) -> bool:
    for (_, x), (_, y) in zip(a, b):
        if x.shape != y.shape:
            return False
        if x.dtype.kind == "f":
            scale = 1.0 + float(np.max(np.abs(y))) if y.size else 1.0
            if not np.allclose(x, y, rtol=1e-4, atol=1e-5 * scale):
                return False
        elif not np.array_equal(x, y):
            return False
    return True

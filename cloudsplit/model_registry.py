"""The models a server hosts: each by its SHA-256, with warm interpreters and its graph's structure.

``ModelRegistry`` holds the ``ModelEntry`` of every model the server has loaded. An entry knows its
graph (ops, tensors, who produces and reads each tensor), the shapes every tensor takes for a given
set of graph-input shapes, and runs a request's server ops (``invoke``) on a pooled interpreter of the
same C runtime the device uses (``edge``), or through stage workers when pipelined
(cloudsplit.pipeline_serving).
"""
from __future__ import annotations

import collections
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import grpc
import numpy as np

import edge
from cloudsplit import execution
from cloudsplit.validation import RequestError, invalid, shape_text
from edge.errors import EdgeError


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class _InterpreterPool:
    """Warm interpreters of one model, kept per input-shape configuration.

    An interpreter is allocated for one set of graph-input shapes (a batch size, for a batched
    request) and stays allocated for it: re-allocating one for another batch size costs more than
    the batch saves (benchmarks/README.md, "Server batching"), so a configuration with no idle
    interpreter gets a new one, and at most ``max_idle`` idle ones are kept, the least recently
    used dropped first. Batch sizes come in power-of-two buckets (``batching.batch_bucket``), so a model
    holds a handful of configurations, and the server runs at most its compute slots at once
    (``batching.BatchRunner``), so each configuration holds at most that many interpreters.
    """

    def __init__(self, data: bytes, threads: int, graph_inputs: Sequence[int], default_config, max_idle: int = 32):
        self._data = data
        self._threads = threads
        self._graph_inputs = list(graph_inputs)
        self._default_config = default_config
        self._idle: collections.OrderedDict[tuple, list[Any]] = collections.OrderedDict()
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self.created = 0

    def acquire(self, config) -> list[Any]:
        """A [interpreter, config] slot allocated for ``config``; give it back with ``release``."""
        with self._lock:
            idle = self._idle.get(config)
            if idle:
                slot = idle.pop()
                if not idle:
                    del self._idle[config]
                return slot
        interpreter = edge.Interpreter(model_content=self._data, num_threads=self._threads)
        try:
            if config != self._default_config:
                for tensor, shape in zip(self._graph_inputs, config):
                    interpreter.resize_tensor_input(tensor, shape)
            interpreter.allocate_tensors()
        except BaseException:
            interpreter.close()
            raise
        with self._lock:
            self.created += 1
        return [interpreter, config]

    def release(self, slot: list[Any]) -> None:
        dropped = []
        with self._lock:
            self._idle.setdefault(slot[1], []).append(slot)
            self._idle.move_to_end(slot[1])
            while sum(len(v) for v in self._idle.values()) > self._max_idle:
                oldest = next(iter(self._idle))
                dropped.append(self._idle[oldest].pop(0))
                if not self._idle[oldest]:
                    del self._idle[oldest]
        for stale in dropped:
            stale[0].close()

    @property
    def configs(self) -> list[tuple]:
        """The configurations that have an idle interpreter."""
        with self._lock:
            return list(self._idle)


@dataclass(frozen=True)
class PipelineOptions:
    """Serve every model through ``stages`` stage workers (cloudsplit.pipeline_serving)."""

    stages: int
    memory_limit: int | None = None   # bytes per stage worker
    address: str | None = None        # Ray cluster; default: a local one on loopback


class ModelEntry:
    """One model the server hosts: its bytes, graph structure, interpreters and profile.

    With ``pipeline`` the model runs on stage workers (``self.stages``) instead of interpreters in
    this process, and this process never allocates it."""

    def __init__(self, data: bytes, name: str, threads: int = 1, pipeline: PipelineOptions | None = None):
        self.data = bytes(data)
        self.sha256 = sha256_hex(self.data)
        self.name = name
        self.threads = threads
        meta = edge.Interpreter(model_content=self.data)
        if pipeline is None:
            meta.allocate_tensors()
        self._meta = meta
        self._meta_lock = threading.Lock()
        self.ops = meta.op_details()
        details = meta.get_tensor_details()
        self.num_tensors = len(details)
        self.tensor_names = [d["name"] or f"#{d['index']}" for d in details]
        self.dtypes = [np.dtype(d["dtype"]) for d in details]
        self.kinds = [d["kind"] for d in details]
        self.signatures = [tuple(int(v) for v in d["shape_signature"]) for d in details]
        self.graph_inputs = [d["index"] for d in meta.get_input_details()]
        self.graph_outputs = [d["index"] for d in meta.get_output_details()]
        self.default_config = tuple(tuple(int(v) for v in details[t]["shape"]) for t in self.graph_inputs)
        self._shapes = collections.OrderedDict()
        self._shapes[self.default_config] = tuple(tuple(int(v) for v in d["shape"]) for d in details)
        self.readers: dict[int, list[int]] = collections.defaultdict(list)
        self.producer: dict[int, int] = {}
        for op in self.ops:
            for t in op["inputs"]:
                if t >= 0:
                    self.readers[t].append(op["index"])
            for t in op["outputs"]:
                if t >= 0:
                    self.producer[t] = op["index"]
        self.pool = _InterpreterPool(self.data, threads, self.graph_inputs, self.default_config) \
            if pipeline is None else None
        self.stages = None
        if pipeline is not None:
            from cloudsplit.pipeline_serving import PipelineModel

            self.stages = PipelineModel(self.data, self.tensor_names, self.ops, stages=pipeline.stages,
                                        memory_limit=pipeline.memory_limit, threads=threads,
                                        address=pipeline.address)
        self.batchable: dict[tuple, bool] = {}
        self._profile: tuple[list[float], int, float] | None = None
        self._profile_lock = threading.Lock()

    @property
    def _runtime_errors(self) -> tuple[type[BaseException], ...]:
        """What running this model can raise for a bad request: the runtime's errors, or on stage
        workers anything (Ray wraps the worker's exception)."""
        return (Exception,) if self.stages is not None else (EdgeError,)

    @property
    def batch_dimension_dynamic(self) -> bool:
        return bool(self.graph_inputs) and all(
            len(self.signatures[t]) >= 1 and self.signatures[t][0] == -1 for t in self.graph_inputs)

    def tensor_label(self, index: int) -> str:
        return f"tensor {index} '{self.tensor_names[index]}'"

    def op_label(self, index: int) -> str:
        return f"op {index} ({self.ops[index]['op']})"

    def shapes_for(self, config) -> tuple[tuple[int, ...], ...]:
        """Every tensor's shape when the graph inputs have the shapes ``config`` (cached)."""
        with self._meta_lock:
            if config in self._shapes:
                self._shapes.move_to_end(config)
                return self._shapes[config]
            try:
                if self.stages is not None:
                    found = self.stages.shapes(dict(zip(self.graph_inputs, config)))
                    default = self._shapes[self.default_config]
                    shapes = tuple(found.get(t, default[t]) for t in range(self.num_tensors))
                else:
                    for tensor, shape in zip(self.graph_inputs, config):
                        self._meta.resize_tensor_input(tensor, shape)
                    self._meta.allocate_tensors()
                    shapes = tuple(tuple(int(v) for v in d["shape"]) for d in self._meta.get_tensor_details())
            except self._runtime_errors as error:
                raise invalid(f"the model cannot take input shapes "
                              f"{', '.join(shape_text(s) for s in config)}: {_cause(error)}") from None
            self._shapes[config] = shapes
            while len(self._shapes) > 64:
                self._shapes.popitem(last=False)
            return shapes

    def profile(self, runs: int) -> tuple[list[float], int, float]:
        """(median ms per op, runs, unix time measured) from the runtime's profiler, measured once
        (by each stage worker for its ops, when pipelined)."""
        with self._profile_lock:
            if self._profile is None:
                from cloudsplit.costs import measure_op_ms

                op_ms = self.stages.profile(runs) if self.stages is not None else \
                    measure_op_ms(self.data, num_threads=self.threads, runs=runs)
                self._profile = (op_ms, runs, time.time())
            return self._profile

    def invoke(self, config, ops: Sequence[int], uploads: Sequence[tuple[int, np.ndarray]],
               outputs: Sequence[int]) -> list[tuple[int, np.ndarray]]:
        """Runs the server ops ``ops`` for input configuration ``config`` on the uploaded tensors
        and returns ``outputs``: on a warm interpreter of the pool, or through the stage workers."""
        try:
            if self.stages is not None:
                return self.stages.run(self.shapes_for(config), ops, dict(uploads), outputs)
            slot = self.pool.acquire(config)
            try:
                execution.run_with_provided(slot[0], ops, dict(uploads), self.producer)
                return [(t, slot[0].get_tensor(t)) for t in outputs]
            finally:
                self.pool.release(slot)
        except RequestError:
            raise
        except self._runtime_errors as error:
            raise RequestError(grpc.StatusCode.INTERNAL,
                               f"the runtime failed running the server ops: {_cause(error)}") from None

    def close(self) -> None:
        if self.stages is not None:
            self.stages.close()


def _cause(error: BaseException) -> str:
    """An error's message; for one raised in a Ray worker, the worker's own exception's."""
    cause = getattr(error, "cause", None)
    return str(cause if isinstance(cause, BaseException) else error)


class ModelRegistry:
    def __init__(self, threads: int = 1, pipeline: PipelineOptions | None = None):
        self.threads = threads
        self.pipeline = pipeline
        self._models: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()

    def add(self, data: bytes, name: str) -> tuple[ModelEntry, bool]:
        digest = sha256_hex(data)
        with self._lock:
            if digest in self._models:
                return self._models[digest], False
        entry = ModelEntry(data, name, self.threads, self.pipeline)
        with self._lock:
            kept = self._models.setdefault(digest, entry)
        if kept is not entry:  # registered by another call meanwhile
            entry.close()
        return kept, kept is entry

    def get(self, digest: str) -> ModelEntry | None:
        with self._lock:
            return self._models.get(digest)

    def entries(self) -> list[ModelEntry]:
        with self._lock:
            return list(self._models.values())

    def close(self) -> None:
        for entry in self.entries():
            entry.close()

"""The datacenter side of split inference: ``cloudsplit serve`` and ``start_server()``.

Each model is held by its SHA-256 and run with the same C runtime the device uses (``edge``). A pool
of interpreters per model lets concurrent requests run side by side; requests that share a model and a
cut are batched when the model's batch dimension is dynamic (see ``_BatchRunner``). Every request is
checked against the model before anything runs (``_validate_header``): a wrong request gets
INVALID_ARGUMENT with a message naming the problem and the server keeps serving. With ``--stages K``
each model runs instead on K stage workers (cloudsplit.pipeline_serving), for models over one
server's memory.

Every service the server hosts shares its port, so TLS (``ServerTLS``; mutual with a client CA),
the bearer token (``security.TokenInterceptor``) and the stream limits (``StreamGuard``) cover them
all. Beyond ``max_concurrency`` inference requests, and beyond the worker pool for any call, the
server refuses with RESOURCE_EXHAUSTED at once instead of queueing.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import hashlib
import logging
import os
import pathlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import edge
from cloudsplit import compression, execution, security, transfer
from cloudsplit.batching import Batcher
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc
from cloudsplit.security import ServerTLS
from cloudsplit.stream_guard import StreamGuard
from edge.errors import EdgeError

log = logging.getLogger("cloudsplit.server")

SERVICE_NAME = "cloudsplit.v1.SplitInference"
MiB = 1 << 20
# Room for the fields around a chunk's data inside one gRPC message.
_CHUNK_OVERHEAD = 4096
# Bandwidth probes: at most this many bytes per call, sent in chunks of this size.
PROBE_LIMIT_BYTES = 16 * MiB
PROBE_CHUNK_BYTES = 16 * 1024


class RequestError(Exception):
    """A request the server refuses; ``code`` is the gRPC status it ends with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def sha256_hex(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _shape_text(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class _InterpreterPool:
    """Warm interpreters of one model, kept per input-shape configuration.

    An interpreter is allocated for one set of graph-input shapes (a batch size, for a batched
    request) and stays allocated for it: re-allocating one for another batch size costs more than
    the batch saves (benchmarks/README.md, "Server batching"), so a configuration with no idle
    interpreter gets a new one, and at most ``max_idle`` idle ones are kept, the least recently
    used dropped first. Batch sizes come in power-of-two buckets (``batch_bucket``), so a model
    holds a handful of configurations.
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


def batch_bucket(count: int, max_batch: int) -> int:
    """The batch size ``count`` requests run at: the next power of two, at most ``max_batch``."""
    bucket = 1
    while bucket < count:
        bucket *= 2
    return max(count, min(bucket, max_batch))


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
                raise _invalid(f"the model cannot take input shapes "
                               f"{', '.join(_shape_text(s) for s in config)}: {_cause(error)}") from None
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


@dataclass
class _Request:
    """A validated request, its tensors decoded."""

    entry: ModelEntry
    request_id: int
    config: tuple
    shapes: tuple
    server_ops: tuple[int, ...]
    uploads: list[tuple[int, np.ndarray]] = field(default_factory=list)
    outputs: tuple[int, ...] = ()
    download_mode: str = "none"
    deadline: float | None = None   # time.monotonic() value
    ready_at: float = 0.0
    header_at: float = 0.0          # time.monotonic() when the header arrived
    received_at: float = 0.0        # ... and when the last chunk did

    @property
    def key(self) -> tuple:
        return (self.config, self.server_ops, tuple(t for t, _ in self.uploads), self.outputs)


@dataclass
class _Result:
    outputs: list[tuple[int, np.ndarray]]
    server_ms: float
    queue_ms: float
    batch_size: int = 1


@dataclass
class ServerOptions:
    threads: int = 1
    max_concurrency: int = 16
    max_message_mb: float = 4.0
    max_request_mb: float = 256.0
    max_model_mb: float = 1024.0
    token: str | None = None
    batching: bool = True
    max_batch: int = 16
    batch_padding: bool = False        # pad a batch up to its power-of-two bucket instead of splitting it
    batch_window_ms: float = 0.0       # how long a batch waits for more requests (0: run at once)
    compute_slots: int | None = None   # batches of one key run side by side; default cores // threads
    allow_register: bool = True
    delay_s: float = 0.0               # test hook: sleep before running each request (a slow server)
    on_request: Callable[[str], None] | None = None  # test hook: called with the model hash per request


class _Admission:
    """Counts requests in flight and refuses the one past the limit at once: a request either
    runs now or is told to go elsewhere (the client runs it on the device), never queued."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.limit:
                self.refused += 1
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"the server is at its limit of {self.limit} concurrent requests; retry later")
            self.in_flight += 1
            self.admitted += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class SplitInferenceService(pb_grpc.SplitInferenceServicer):
    def __init__(self, registry: ModelRegistry, options: ServerOptions):
        self.registry = registry
        self.options = options
        self.admission = _Admission(options.max_concurrency)
        self.compute_slots = options.compute_slots or max(1, (os.cpu_count() or 1) // max(1, options.threads))
        self.chunk_bytes = max(1024, min(MiB, int(options.max_message_mb * MiB) - _CHUNK_OVERHEAD))
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


    def GetModel(self, request, context):
        entry = self.registry.get(request.model_sha256)
        if entry is None:
            return pb.ModelInfo(present=False, model_sha256=request.model_sha256)
        return pb.ModelInfo(present=True, model_sha256=entry.sha256, num_ops=len(entry.ops),
                            num_tensors=entry.num_tensors, size_bytes=len(entry.data))

    def RegisterModel(self, request_iterator, context):
        try:
            return self._register(request_iterator)
        except RequestError as error:
            context.abort(error.code, error.message)

    def _register(self, request_iterator) -> pb.RegisterModelReply:
        if not self.options.allow_register:
            raise RequestError(grpc.StatusCode.PERMISSION_DENIED, "this server does not accept model uploads")
        first = next(request_iterator, None)
        if first is None:
            raise _invalid("RegisterModel: the stream was empty")
        digest, total = first.model_sha256.lower(), first.total_bytes
        self._check_hash_format(digest)
        existing = self.registry.get(digest)
        if existing is not None:
            return pb.RegisterModelReply(model_sha256=digest, already_present=True, num_ops=len(existing.ops))
        limit = int(self.options.max_model_mb * MiB)
        if total > limit:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"model {digest[:12]}: {total} bytes is over the server's limit of {limit} bytes")
        data = bytearray()
        for chunk in [first] if first.data else []:
            data += chunk.data
        for chunk in request_iterator:
            data += chunk.data
            if len(data) > total:
                raise _invalid(f"model {digest[:12]}: the upload carries more than the {total} bytes it declared")
        if len(data) != total:
            raise _invalid(f"model {digest[:12]}: the upload ended after {len(data)} of its {total} bytes")
        actual = sha256_hex(data)
        if actual != digest:
            raise _invalid(f"model upload: the bytes hash to {actual}, not the declared {digest}")
        try:
            entry, _ = self.registry.add(bytes(data), f"uploaded-{digest[:12]}")
        except EdgeError as error:
            raise _invalid(f"model {digest[:12]} does not load: {error}") from None
        except (ValueError, MemoryError) as error:  # pipeline serving: no partition fits the workers
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"model {digest[:12]}: {error}") from None
        log.info("registered model %s (%d bytes, %d ops)", digest[:12], total, len(entry.ops))
        return pb.RegisterModelReply(model_sha256=digest, already_present=False, num_ops=len(entry.ops))

    @staticmethod
    def _check_hash_format(digest: str) -> None:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise _invalid(f"model_sha256 must be 64 hex digits, got {digest[:80]!r}")

    def GetProfile(self, request, context):
        try:
            entry = self._entry(request.model_sha256)
        except RequestError as error:
            context.abort(error.code, error.message)
        runs = request.runs if request.runs > 0 else 3
        op_ms, measured_runs, when = entry.profile(min(runs, 100))
        return pb.ProfileReply(model_sha256=entry.sha256, op_ms=op_ms, load_factor=self.load_factor(),
                               threads=entry.threads, runs=measured_runs, measured_unix_s=when)

    def MeasureUplink(self, request_iterator, context):
        limit = PROBE_LIMIT_BYTES
        received = first_bytes = 0
        first_at = last_at = None
        for chunk in request_iterator:
            last_at = time.perf_counter()
            if first_at is None:
                first_at, first_bytes = last_at, len(chunk.data)
            received += len(chunk.data)
            if received > limit:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"MeasureUplink takes at most {limit} bytes per call")
        timed = (last_at - first_at) * 1e3 if first_at is not None else 0.0
        return pb.ProbeReply(received_bytes=received, receive_ms=timed, timed_bytes=received - first_bytes)

    def MeasureDownlink(self, request, context):
        if request.bytes > PROBE_LIMIT_BYTES:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"MeasureDownlink sends at most {PROBE_LIMIT_BYTES} bytes per call, {request.bytes} asked")
        # The client times from the first chunk's arrival to the last one's; the bytes that arrive
        # with the first chunk (a link's burst allowance, the first socket read) are not timed.
        left = int(request.bytes)
        piece = bytes(min(left, PROBE_CHUNK_BYTES))
        while left > 0:
            size = min(left, len(piece))
            yield pb.ProbeChunk(data=piece[:size])
            left -= size

    def _entry(self, digest: str) -> ModelEntry:
        digest = digest.lower()
        self._check_hash_format(digest)
        entry = self.registry.get(digest)
        if entry is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {digest} is not on this server: register it first (RegisterModel)")
        return entry


    def Infer(self, request_iterator, context):
        try:
            self.admission.enter()
        except RequestError as error:
            context.abort(error.code, error.message)
        try:
            header = next(request_iterator, None)
            if header is None or header.WhichOneof("part") != "header":
                raise _invalid("Infer: the first message must be an InferHeader")
            header_at = time.monotonic()
            request, assembler = self._begin(header.header, context)
            request.header_at = request.received_at = header_at
            for message in request_iterator:
                self._add_chunk(assembler, message)
                request.received_at = time.monotonic()
                if assembler.complete:
                    break
            if not assembler.complete:
                raise _invalid(f"Infer: the stream ended before the tensors were complete ({assembler.missing()})")
            self._finish(request, assembler)
            result = self._execute(request)
            messages = self._reply_messages(request, result)
        except RequestError as error:
            context.abort(error.code, error.message)
        finally:
            self.admission.leave()
        yield from messages

    def InferStream(self, request_iterator, context):
        request = assembler = None
        skipping = False
        for message in request_iterator:
            kind = message.WhichOneof("part")
            if kind == "header":
                if assembler is not None:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"InferStream: request {request.request_id} was incomplete "
                                  f"({assembler.missing()}) when request {message.header.request_id} began")
                try:
                    header_at = time.monotonic()
                    request, assembler = self._begin(message.header, context)
                    request.header_at = request.received_at = header_at
                    skipping = False
                except RequestError as error:
                    skipping = True
                    yield self._error_reply(message.header.request_id, error)
                    continue
            elif kind == "chunk" and skipping:
                continue
            elif assembler is None:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"InferStream: a {kind or 'empty'} message arrived where a request header belongs")
            else:
                try:
                    self._add_chunk(assembler, message)
                    request.received_at = time.monotonic()
                except RequestError as error:
                    context.abort(error.code, error.message)
            if assembler is not None and assembler.complete:
                current, current_assembler = request, assembler
                request = assembler = None
                try:
                    self.admission.enter()
                    try:
                        self._finish(current, current_assembler)
                        result = self._execute(current)
                    finally:
                        self.admission.leave()
                except RequestError as error:
                    yield self._error_reply(current.request_id, error)
                    continue
                yield from self._reply_messages(current, result)
        if assembler is not None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"InferStream: the stream ended inside request {request.request_id} ({assembler.missing()})")

    @staticmethod
    def _error_reply(request_id: int, error: RequestError) -> pb.InferMessage:
        return pb.InferMessage(reply=pb.InferReplyHeader(
            request_id=request_id, error=pb.Status(code=error.code.value[0], message=error.message)))

    def _add_chunk(self, assembler: transfer.TensorAssembler, message: pb.InferMessage) -> None:
        if message.WhichOneof("part") != "chunk":
            raise _invalid(f"expected a TensorChunk ({assembler.missing()}), got a "
                           f"{message.WhichOneof('part') or 'empty message'}")
        try:
            assembler.add(message.chunk)
        except transfer.FramingError as error:
            raise _invalid(str(error)) from None


    def _begin(self, header: pb.InferHeader, context) -> tuple[_Request, transfer.TensorAssembler]:
        request = self._validate_header(header)
        remaining = context.time_remaining()
        if remaining is not None:
            request.deadline = time.monotonic() + remaining
        try:
            assembler = transfer.TensorAssembler(header.uploads, int(self.options.max_request_mb * MiB))
        except transfer.FramingError as error:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        if self.options.on_request is not None:
            self.options.on_request(request.entry.sha256)
        return request, assembler

    def _finish(self, request: _Request, assembler: transfer.TensorAssembler) -> None:
        for header, data in assembler.tensors():
            try:
                array = transfer.decode_tensor(header, data)
            except ValueError as error:
                raise _invalid(f"{request.entry.tensor_label(header.tensor_index)}: {error}") from None
            request.uploads.append((header.tensor_index, array))
        request.ready_at = time.monotonic()

    def _validate_header(self, header: pb.InferHeader) -> _Request:
        entry = self._entry(header.model_sha256)
        config = self._validate_input_shapes(entry, header.input_shapes)
        shapes = entry.shapes_for(config)
        ops = list(header.server_ops)
        if not ops:
            raise _invalid("server_ops is empty: a request must name the ops the server runs")
        out_of_range = [op for op in ops if not 0 <= op < len(entry.ops)]
        if out_of_range:
            raise _invalid(f"server_ops {out_of_range[:8]} are out of range: the model has {len(entry.ops)} ops")
        descending = next((i for i in range(1, len(ops)) if ops[i] <= ops[i - 1]), None)
        if descending is not None:
            raise _invalid(f"server_ops must be strictly ascending (graph order): op {ops[descending]} follows "
                           f"op {ops[descending - 1]}")

        written = {t for op in ops for t in entry.ops[op]["outputs"] if t >= 0}
        read = {t for op in ops for t in entry.ops[op]["inputs"] if t >= 0}
        uploaded: set[int] = set()
        total_bytes = 0
        for tensor_header in header.uploads:
            total_bytes += self._validate_upload(entry, shapes, tensor_header, uploaded)
            uploaded.add(tensor_header.tensor_index)
        limit = int(self.options.max_request_mb * MiB)
        if total_bytes > limit:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the uploads total {total_bytes} bytes, over the server's limit of {limit} bytes")

        available = set(uploaded)
        for op in ops:
            for t in entry.ops[op]["inputs"]:
                if t < 0 or t in available or entry.kinds[t] in ("constant", "variable"):
                    continue
                producer = entry.producer.get(t)
                where = (f"produced by {entry.op_label(producer)}, which runs later or not on the server"
                         if producer is not None else "a graph input")
                raise _invalid(f"{entry.op_label(op)} reads {entry.tensor_label(t)}, which is neither a constant, "
                               f"uploaded, nor produced by an earlier server op ({where})")
            available.update(entry.ops[op]["outputs"])
        for t in uploaded:
            if t in written:
                raise _invalid(f"{entry.tensor_label(t)} is uploaded but {entry.op_label(entry.producer[t])}, "
                               "a server op, writes it")
            if t not in read:
                raise _invalid(f"{entry.tensor_label(t)} is uploaded but no server op reads it")

        outputs = list(header.outputs)
        if not outputs:
            raise _invalid("outputs is empty: name the tensors the server should send back")
        for t in outputs:
            if not 0 <= t < entry.num_tensors:
                raise _invalid(f"output tensor {t} is out of range: the model has {entry.num_tensors} tensors")
            if t not in written:
                raise _invalid(f"output {entry.tensor_label(t)} is not produced by any of the server ops")
        if len(set(outputs)) != len(outputs):
            raise _invalid("outputs lists a tensor more than once")
        if header.download_compression not in transfer.MODE_BY_COMPRESSION:
            raise _invalid(f"download_compression {header.download_compression} is not a known compression")
        return _Request(entry=entry, request_id=header.request_id, config=config, shapes=shapes,
                        server_ops=tuple(ops), outputs=tuple(outputs),
                        download_mode=transfer.MODE_BY_COMPRESSION[header.download_compression])

    def _validate_input_shapes(self, entry: ModelEntry, input_shapes) -> tuple:
        config = list(entry.default_config)
        seen = set()
        limit = int(self.options.max_request_mb * MiB)
        for item in input_shapes:
            t = item.tensor_index
            if t not in entry.graph_inputs:
                raise _invalid(f"input_shapes names tensor {t}, which is not a graph input "
                               f"(the inputs are {entry.graph_inputs})")
            if t in seen:
                raise _invalid(f"input_shapes names {entry.tensor_label(t)} twice")
            seen.add(t)
            shape = tuple(int(d) for d in item.shape)
            signature = entry.signatures[t]
            fits = len(shape) == len(signature) and all(
                (s == -1 and d >= 1) or s == d for d, s in zip(shape, signature))
            if not fits:
                raise _invalid(f"input_shapes: {entry.tensor_label(t)} cannot take shape {_shape_text(shape)}; "
                               f"its shape signature is {_shape_text(signature)} (-1: dynamic)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * entry.dtypes[t].itemsize
            if nbytes > limit:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"input_shapes: {entry.tensor_label(t)} at {_shape_text(shape)} would hold "
                                   f"{nbytes} bytes, over the server's limit of {limit} bytes")
            config[entry.graph_inputs.index(t)] = shape
        return tuple(config)

    @staticmethod
    def _validate_upload(entry: ModelEntry, shapes, header: pb.TensorHeader, uploaded: set[int]) -> int:
        t = header.tensor_index
        if not 0 <= t < entry.num_tensors:
            raise _invalid(f"uploaded tensor {t} is out of range: the model has {entry.num_tensors} tensors")
        label = entry.tensor_label(t)
        if t in uploaded:
            raise _invalid(f"{label} is uploaded twice")
        if entry.kinds[t] != "activation":
            raise _invalid(f"{label} is a {entry.kinds[t]} of the model and cannot be uploaded")
        expected_dtype = entry.dtypes[t]
        if header.dtype not in transfer.NUMPY_BY_DTYPE:
            raise _invalid(f"{label}: dtype code {header.dtype} is unknown")
        if transfer.NUMPY_BY_DTYPE[header.dtype] != expected_dtype:
            raise _invalid(f"{label}: the model's tensor is {expected_dtype.name}, the request says "
                           f"{transfer.dtype_name(header.dtype)}")
        if tuple(header.shape) != shapes[t]:
            raise _invalid(f"{label}: the model's tensor has shape {_shape_text(shapes[t])} for these inputs, "
                           f"the request says {_shape_text(header.shape)}")
        if header.compression not in transfer.MODE_BY_COMPRESSION:
            raise _invalid(f"{label}: compression code {header.compression} is unknown")
        mode = transfer.MODE_BY_COMPRESSION[header.compression]
        if mode != "none" and expected_dtype != np.float32:
            raise _invalid(f"{label}: {mode} compression applies to float32 tensors only, this one is "
                           f"{expected_dtype.name}")
        if mode == "int8-per-tensor":
            if not (np.isfinite(header.scale) and header.scale > 0):
                raise _invalid(f"{label}: int8 scale must be finite and > 0, got {header.scale}")
            if not -128 <= header.zero_point <= 127:
                raise _invalid(f"{label}: int8 zero_point must be in [-128, 127], got {header.zero_point}")
        elif header.scale != 0 or header.zero_point != 0:
            raise _invalid(f"{label}: scale and zero_point apply to per-tensor int8 compression only, not {mode}")
        if mode == "int8":
            channels = shapes[t][-1] if shapes[t] else 0
            if len(header.channel_scales) != channels or len(header.channel_zero_points) != channels:
                raise _invalid(f"{label}: per-channel int8 needs one scale and one zero point per channel of the "
                               f"last axis ({channels}), got {len(header.channel_scales)} scales and "
                               f"{len(header.channel_zero_points)} zero points")
            scales = np.asarray(header.channel_scales, np.float32)
            bad = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
            if bad.size:
                raise _invalid(f"{label}: per-channel int8 scales must be finite and > 0; channel {int(bad[0])} "
                               f"has {float(scales[bad[0]])}")
            zero_points = np.asarray(header.channel_zero_points, np.int64)
            bad = np.flatnonzero((zero_points < -128) | (zero_points > 127))
            if bad.size:
                raise _invalid(f"{label}: per-channel int8 zero points must be in [-128, 127]; channel "
                               f"{int(bad[0])} has {int(zero_points[bad[0]])}")
        elif len(header.channel_scales) or len(header.channel_zero_points):
            raise _invalid(f"{label}: channel_scales and channel_zero_points apply to per-channel int8 "
                           f"compression only, not {mode}")
        expected_bytes = compression.data_bytes(mode, expected_dtype, int(np.prod(shapes[t], dtype=np.int64)))
        if header.byte_length != expected_bytes:
            raise _invalid(f"{label}: {_shape_text(shapes[t])} {expected_dtype.name} under {mode} compression is "
                           f"{expected_bytes} bytes, the request declares {header.byte_length}")
        return expected_bytes


    def _execute(self, request: _Request) -> _Result:
        if self.options.delay_s:
            time.sleep(self.options.delay_s)
        self._check_deadline(request)
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

    def _run(self, request: _Request) -> _Result:
        if not self.options.batching:
            return self._run_sequential([request])[0]
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
    def _check_deadline(request: _Request) -> None:
        if request.deadline is not None and time.monotonic() >= request.deadline:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"request {request.request_id}: the deadline passed before the server ops ran")

    def _run_batch(self, requests: Sequence[_Request]) -> list[Any]:
        results: list[Any] = [None] * len(requests)
        live = []
        for i, request in enumerate(requests):
            try:
                self._check_deadline(request)
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
            outcome = self._run_in_buckets(batch)
            if outcome is not None and key not in entry.batchable:
                sequential = self._run_sequential(batch)
                entry.batchable[key] = all(_close(a.outputs, b.outputs) for a, b in zip(outcome, sequential))
                if not entry.batchable[key]:
                    log.warning("model %s: batched results differ from one-by-one results for server ops %s; "
                                "running them one by one", entry.sha256[:12], list(key[1])[:6])
                    outcome = sequential
        if outcome is None:
            outcome = self._run_sequential(batch)
        for i, result in zip(live, outcome):
            results[i] = result
        return results

    def _run_in_buckets(self, requests: Sequence[_Request]) -> list[_Result] | None:
        """Runs the requests as stacked batches whose sizes are powers of two (each on an interpreter
        kept warm for that size). By default a batch of 13 runs as 8 + 4 + 1, in turn; with
        ``batch_padding`` it runs as one batch of 16 whose last 3 rows are padding. Splitting wastes
        no compute, padding saves the extra invokes; which pays is measured (benchmarks/README.md).
        None when the model does not batch along axis 0."""
        if self.options.batch_padding:
            return self._run_stacked(requests)
        results: list[_Result] = []
        start = 0
        while start < len(requests):
            size = 1
            while size * 2 <= min(len(requests) - start, self.options.max_batch):
                size *= 2
            group = requests[start:start + size]
            outcome = self._run_stacked(group) if size > 1 else self._run_sequential(group)
            if outcome is None:
                return None
            results.extend(outcome)
            start += size
        return results

    def _run_sequential(self, requests: Sequence[_Request]) -> list[_Result]:
        results = []
        for request in requests:
            began = time.monotonic()
            outputs = request.entry.invoke(request.config, request.server_ops, request.uploads, request.outputs)
            results.append(_Result(outputs, (time.monotonic() - began) * 1e3, (began - request.ready_at) * 1e3))
        return results

    def _run_stacked(self, requests: Sequence[_Request]) -> list[_Result] | None:
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
        began = time.monotonic()
        padding = [first] * (bucket - count)
        stacked = [(t, np.concatenate([r.uploads[k][1] for r in (*requests, *padding)]))
                   for k, (t, _) in enumerate(first.uploads)]
        outputs = entry.invoke(batched_config, first.server_ops, stacked, first.outputs)
        server_ms = (time.monotonic() - began) * 1e3
        self.batches_run += 1
        self.batched_requests += count
        split = [(t, np.split(array, bucket)) for t, array in outputs]
        results = []
        for i, request in enumerate(requests):
            pieces = [(t, np.ascontiguousarray(parts[i])) for t, parts in split]
            results.append(_Result(pieces, server_ms, (began - request.ready_at) * 1e3, count))
        return results

    def _reply_messages(self, request: _Request, result: _Result) -> list[pb.InferMessage]:
        tensors = [transfer.encode_tensor(t, array, request.download_mode) for t, array in result.outputs]
        header = pb.InferReplyHeader(request_id=request.request_id, outputs=[h for h, _ in tensors],
                                     server_ms=result.server_ms, queue_ms=result.queue_ms,
                                     batch_size=result.batch_size, load_factor=self.load_factor(),
                                     receive_ms=(request.received_at - request.header_at) * 1e3)
        return [pb.InferMessage(reply=header), *transfer.chunk_messages(tensors, self.chunk_bytes)]


def _close(a: list[tuple[int, np.ndarray]], b: list[tuple[int, np.ndarray]]) -> bool:
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


class ServerHandle:
    """A running server: ``port``, ``service``, ``stop(grace_s)``, ``wait()``."""

    def __init__(self, server: grpc.Server, port: int, service: SplitInferenceService,
                 health_servicer: health.HealthServicer, training=None, federated=None,
                 guard: StreamGuard | None = None):
        self.server = server
        self.port = port
        self.service = service
        self.health = health_servicer
        self.training = training   # the TrainingService, when enabled
        self.federated = federated   # the FederatedService, when enabled
        self.guard = guard           # the StreamGuard: ``guard.cancelled`` counts calls it cut off
        self.workers: int | None = None   # RPC worker threads; calls past them are refused
        self._stopped = False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, grace_s: float | None = 5.0) -> None:
        """Stops accepting calls, lets in-flight ones finish for up to ``grace_s``, then cancels the rest."""
        if self._stopped:
            return
        self._stopped = True
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        self.service.registry.close()
        if self.training is not None:
            self.training.close()
        if self.federated is not None:
            self.federated.close()
        if self.guard is not None:
            self.guard.close()

    def wait(self, timeout: float | None = None) -> bool:
        return self.server.wait_for_termination(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop(0)


# Long-lived streaming calls: bounded by the stream guard's idle limit, not its call limit.
_SESSION_METHODS = frozenset({f"/{SERVICE_NAME}/InferStream", "/cloudsplit.v1.Training/WatchJob"})


def _model_sources(models) -> list[tuple[bytes, str]]:
    if isinstance(models, (bytes, bytearray, memoryview)):
        return [(bytes(models), "model")]
    if isinstance(models, (str, os.PathLike)):
        path = pathlib.Path(models)
        if path.is_dir():
            files = sorted(path.glob("*.edge"))
            if not files:
                raise FileNotFoundError(f"{path}: no .edge files to serve")
            return [(f.read_bytes(), f.name) for f in files]
        return [(path.read_bytes(), path.name)]
    sources = []
    for item in models:
        sources.extend(_model_sources(item))
    return sources


def start_server(models=(), *, port: int = 0, host: str = "127.0.0.1", threads: int = 1,
                 max_concurrency: int = 16, max_message_mb: float = 4.0, token: str | None = None,
                 batching: bool = True, max_batch: int = 16, batch_window_ms: float = 0.0,
                 batch_padding: bool = False,
                 compute_slots: int | None = None,
                 max_request_mb: float = 256.0, max_model_mb: float = 1024.0, allow_register: bool = True,
                 delay_s: float = 0.0, on_request: Callable[[str], None] | None = None,
                 training=None, federated=None, pipeline: PipelineOptions | None = None,
                 split_learning: bool = False, tls: ServerTLS | None = None, insecure: bool = False,
                 stream_idle_s: float = 10.0, max_call_s: float = 60.0) -> ServerHandle:
    """Starts a server in this process and returns once it listens.

    ``models``: a directory of .edge files, a file, model bytes, or a list of these. ``port=0`` picks a
    free port (``handle.port``). ``training``: True or a ``training_service.TrainingOptions`` adds the
    Training service (distributed training jobs on the registered models). ``federated``: True or a
    ``federated_service.FederatedOptions`` adds the Federated service (federated averaging with
    devices; it needs no Ray). ``pipeline``: serve every model through stage workers on Ray
    (cloudsplit.pipeline_serving), for models over one server's memory. ``split_learning``: adds the
    SplitLearning service (cloudsplit.split_learning: devices train their first layers, this
    server the rest), behind the same token as everything else.

    ``tls``: serve over TLS (mutual TLS when it names a client CA); every hosted service shares the
    port, so TLS and ``token`` cover them all. A non-loopback ``host`` without ``tls`` is refused
    (``security.InsecureListenError``, before anything loads or binds) unless ``insecure``.
    ``stream_idle_s`` and ``max_call_s`` bound streaming calls (``stream_guard.StreamGuard``):
    a stalled or slow client loses its call, not a worker. At most ``max_concurrency`` inference
    requests run at once and the next is refused with RESOURCE_EXHAUSTED at once; calls past the
    worker pool are refused by gRPC itself, so no call waits in a queue for a worker.
    """
    security.check_listen_address(host, tls, insecure)
    options = ServerOptions(threads=threads, max_concurrency=max_concurrency, max_message_mb=max_message_mb,
                            max_request_mb=max_request_mb, max_model_mb=max_model_mb, token=token,
                            batching=batching, max_batch=max_batch, batch_window_ms=batch_window_ms,
                            batch_padding=batch_padding,
                            compute_slots=compute_slots,
                            allow_register=allow_register, delay_s=delay_s, on_request=on_request)
    if pipeline is not None:
        if pipeline.stages < 1 or (pipeline.memory_limit is not None and pipeline.memory_limit < 1):
            raise ValueError(f"pipeline serving needs stages >= 1 and a positive memory limit, got "
                             f"{pipeline.stages} and {pipeline.memory_limit}")
        from cloudsplit.training import ensure_ray

        ensure_ray(pipeline.address)  # here, before gRPC's threads run (see the training service below)
    registry = ModelRegistry(threads, pipeline)
    try:
        for data, name in _model_sources(models):
            registry.add(data, name)
    except BaseException:
        registry.close()
        raise
    service = SplitInferenceService(registry, options)
    message_bytes = int(max_message_mb * MiB)
    grpc_options = [("grpc.max_receive_message_length", message_bytes),
                    ("grpc.max_send_message_length", message_bytes),
                    ("grpc.so_reuseport", 0)]
    guard = StreamGuard(stream_idle_s, max_call_s, sessions=_SESSION_METHODS)
    interceptors = ([security.TokenInterceptor(token)] if token else []) + [guard]
    # Extra workers past the admission limit answer the refused calls and the health checks quickly.
    training_options = None
    if training:
        from cloudsplit import training_service

        training_options = training if isinstance(training, training_service.TrainingOptions) \
            else training_service.TrainingOptions()
        # Ray starts (or connects) here, in the calling thread and before gRPC's threads run:
        # starting its processes from inside an RPC handler raced the server's own threads
        # (a segmentation fault in one test run) and made the first job wait for the cluster.
        from cloudsplit.training import ensure_ray

        ensure_ray(training_options.cluster)
    watchers = training_options.max_watchers if training_options else 0
    federated_options = None
    if federated:
        from cloudsplit import federated_service

        federated_options = federated if isinstance(federated, federated_service.FederatedOptions) \
            else federated_service.FederatedOptions()
        watchers += federated_options.max_waiting   # JoinRound waits hold a thread each
    workers = max_concurrency + watchers + 8
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloudsplit-rpc")
    # Past ``workers`` calls in progress gRPC answers RESOURCE_EXHAUSTED itself instead of queueing
    # the call for a worker: under overload a refusal comes at once, never after a wait.
    server = grpc.server(executor, options=grpc_options, interceptors=interceptors,
                         maximum_concurrent_rpcs=workers)
    pb_grpc.add_SplitInferenceServicer_to_server(service, server)
    trainer_service = training_service.add_to_server(server, registry, training_options) if training_options else None
    federated_servicer = federated_service.add_to_server(server, registry, federated_options) \
        if federated_options else None
    split_servicer = None
    if split_learning:
        from cloudsplit import split_learning as split_learning_service

        split_servicer = split_learning_service.add_split_learning_servicer(server, threads=threads)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, tls.credentials()) if tls is not None \
            else server.add_insecure_port(address)
    except RuntimeError:   # grpcio raises where older releases returned 0
        bound = 0
    if bound == 0:
        guard.close()
        registry.close()
        hint = " over TLS: the address is taken or unavailable, or the certificate chain and key are not a " \
               "matching PEM pair" if tls is not None else ""
        raise OSError(f"cannot listen on {address}{hint}")
    server.start()
    for name in ("", SERVICE_NAME) + ((training_service.SERVICE_NAME,) if trainer_service else ()) \
            + ((federated_service.SERVICE_NAME,) if federated_servicer else ()) \
            + (("cloudsplit.v1.SplitLearning",) if split_servicer else ()):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    handle = ServerHandle(server, bound, service, health_servicer, trainer_service, federated_servicer, guard)
    handle.workers = workers
    return handle


def add_serve_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``serve`` to a ``cloudsplit`` argparse subparsers object; ``args.func(args)`` runs it."""
    from cloudsplit.cli import parse_bytes
    parser = subparsers.add_parser(
        "serve", help="host models for split inference over gRPC",
        description="Serves the .edge models in a directory for split inference. It listens on 127.0.0.1 unless "
                    "--host says otherwise; beyond loopback it needs TLS (--tls-cert, --tls-key) or --insecure. "
                    "The bearer token comes from --token-file or $CLOUDSPLIT_TOKEN, never the command line.")
    parser.add_argument("--models", required=True, help="directory of .edge files (each served by its SHA-256)")
    parser.add_argument("--port", type=int, default=50051)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                        "only); any other needs TLS or --insecure")
    parser.add_argument("--threads", type=int, default=1, help="threads per interpreter")
    parser.add_argument("--max-concurrency", type=int, default=16, help="requests in flight before "
                        "RESOURCE_EXHAUSTED")
    parser.add_argument("--max-message-mb", type=float, default=4.0, help="largest single gRPC message")
    parser.add_argument("--max-request-mb", type=float, default=256.0, help="largest request (all its tensors)")
    parser.add_argument("--stream-idle-s", type=float, default=10.0, help="cancel a streaming call whose client "
                        "sends no message for this long (default 10)")
    parser.add_argument("--max-call-s", type=float, default=60.0, help="cancel a streaming call still running after "
                        "this long, sessions (InferStream, WatchJob) excepted (default 60)")
    secure = parser.add_argument_group("security", "TLS and the bearer token; they cover every service served")
    secure.add_argument("--tls-cert", metavar="PEM", help="serve over TLS with this certificate chain")
    secure.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    secure.add_argument("--client-ca", metavar="PEM", help="mutual TLS: accept only clients whose certificate this "
                        "authority signed")
    secure.add_argument("--insecure", action="store_true", help="allow plaintext on a non-loopback --host (tokens "
                        "and tensors readable on the network)")
    security.add_token_arguments(secure, "require 'authorization: Bearer TOKEN' on every call but health checks")
    # Off by default: measured on a 2-core x86 with warm interpreters per batch size (benchmarks/README.md,
    # "Server batching"), batching changed throughput by -7 % to +4 % at 8-16 clients (an MLP,
    # MobileNetV2's tail and second half): a stacked batch saves ~7 % of the compute, and the CPU
    # kernels already run a batch-1 layer near their best.
    parser.add_argument("--batching", dest="batching", action="store_true", default=False,
                        help="batch concurrent requests that share a model and cut (dynamic-batch models only)")
    parser.add_argument("--no-batching", dest="batching", action="store_false", help="run every request on its own "
                        "(the default)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-padding", action="store_true", help="pad a batch up to the next power of two "
                        "(default: split it into power-of-two batches run in turn)")
    parser.add_argument("--batch-window-ms", type=float, default=0.0,
                        help="how long a batch waits for more requests before it runs (default: not at all)")
    parser.add_argument("--no-register", action="store_true", help="refuse model uploads")
    parser.add_argument("--grace-s", type=float, default=10.0, help="how long in-flight requests may finish "
                        "after SIGTERM/SIGINT")
    staged = parser.add_argument_group("pipeline serving", "models over one server's memory, run by stage "
                                       "workers on Ray")
    staged.add_argument("--stages", type=int, help="run every model as K stages, one Ray actor each, balanced by "
                        "the ops' FLOPs")
    staged.add_argument("--memory-limit", type=parse_bytes, help="bytes per stage worker (e.g. 2GB): the stages are "
                        "planned to fit it and the start fails if one does not")
    training = parser.add_argument_group("training", "the Training service (distributed training on Ray)")
    training.add_argument("--training", action="store_true", help="serve training jobs on the registered models")
    training.add_argument("--training-data", default=".", help="data paths of StartJob resolve inside this "
                          "directory (default: the current one)")
    training.add_argument("--max-jobs", type=int, default=2, help="training jobs running at once (default 2)")
    training.add_argument("--checkpoint-root", help="job checkpoints go to DIR/<job id> (default: temporary)")
    training.add_argument("--ray-address", help="join this Ray cluster (default: start one on loopback)")
    training.add_argument("--federated", action="store_true", help="serve federated jobs (federated averaging "
                          "with devices) on the registered models")
    training.add_argument("--split-learning", action="store_true", help="serve split learning: devices train the "
                          "layers before a cut, this server the rest (cloudsplit.client.SplitTrainer)")
    parser.set_defaults(func=serve_command)
    return parser


def _training_options(args):
    if not args.training:
        return None
    from cloudsplit.training_service import TrainingOptions

    if args.max_jobs < 1:
        raise ValueError(f"--max-jobs must be >= 1, got {args.max_jobs}")
    if not os.path.isdir(args.training_data):
        raise ValueError(f"--training-data {args.training_data}: not a directory")
    return TrainingOptions(max_jobs=args.max_jobs, data_root=os.path.abspath(args.training_data),
                           checkpoint_root=args.checkpoint_root, cluster=args.ray_address)


def _pipeline_options(args):
    if args.stages is None:
        if args.memory_limit is not None:
            raise ValueError("--memory-limit goes with --stages")
        return None
    return PipelineOptions(stages=args.stages, memory_limit=args.memory_limit, address=args.ray_address)


def _federated_options(args):
    if not args.federated:
        return None
    from cloudsplit.federated_service import FederatedOptions

    return FederatedOptions(data_root=os.path.abspath(args.training_data))


def _server_tls(args) -> ServerTLS | None:
    if args.tls_cert is None and args.tls_key is None:
        if args.client_ca is not None:
            raise ValueError("--client-ca needs TLS: give --tls-cert and --tls-key too")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return ServerTLS.from_files(args.tls_cert, args.tls_key, args.client_ca)


def serve_command(args) -> int:
    try:
        tls = _server_tls(args)
        token = security.read_token(args.token_file)
        security.check_listen_address(args.host, tls, args.insecure)
        handle = start_server(args.models, port=args.port, host=args.host, threads=args.threads,
                              max_concurrency=args.max_concurrency, max_message_mb=args.max_message_mb,
                              max_request_mb=args.max_request_mb, token=token, tls=tls, insecure=args.insecure,
                              stream_idle_s=args.stream_idle_s, max_call_s=args.max_call_s,
                              batching=args.batching, max_batch=args.max_batch, batch_padding=args.batch_padding,
                              batch_window_ms=args.batch_window_ms,
                              allow_register=not args.no_register, training=_training_options(args),
                              federated=_federated_options(args), pipeline=_pipeline_options(args),
                              split_learning=args.split_learning)
    except (OSError, EdgeError, ValueError, MemoryError) as error:
        print(f"cloudsplit serve: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    for entry in handle.service.registry.entries():
        batch = "dynamic batch" if entry.batch_dimension_dynamic else "fixed batch"
        staged = "" if entry.stages is None else \
            f", {len(entry.stages.actors)} stages at ops {entry.stages.bounds[:-1]} holding " \
            + "/".join(str(b) for b in entry.stages.memory) + " bytes"
        print(f"  {entry.sha256}  {entry.name}  ({len(entry.ops)} ops, {batch}{staged})")
    print(f"cloudsplit serve: listening on {args.host}:{handle.port}"
          f"{' over mutual TLS' if tls and tls.client_ca else ' over TLS' if tls else ' in plaintext'}"
          f"{' (token required)' if token else ''}", flush=True)
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(f"cloudsplit serve: shutting down (up to {args.grace_s:g} s for requests in flight)", flush=True)
    handle.stop(args.grace_s)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudsplit.server")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    args = parser.parse_args(["serve", *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

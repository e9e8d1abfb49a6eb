"""The SplitInference gRPC servicer: models, profiles, bandwidth probes and inference calls.

``SplitInferenceService`` reads requests off the gRPC streams, has them checked
(cloudsplit.validation), admits at most ``max_concurrency`` at once (``_Admission``: the one past the
limit is refused with RESOURCE_EXHAUSTED, never queued), runs them (``batching.BatchRunner``) and
streams the outputs back. ``cloudsplit.server.start_server`` hosts it, with the service's
``admission_interceptor`` deciding each ``Infer`` call's admission before anything else runs for it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc

from cloudsplit import transfer
from cloudsplit.batching import BatchRunner, RequestResult
from cloudsplit.model_registry import ModelEntry, ModelRegistry, sha256_hex
from cloudsplit.protos import DEFAULT_MAX_MESSAGE_MB, PROBE_CHUNK_BYTES, SPLIT_INFERENCE_SERVICE, MiB, chunk_bytes
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc
from cloudsplit.security import original_behavior, replace_behavior
from cloudsplit.validation import Request, RequestError, check_hash_format, invalid, validate_header
from edge.errors import EdgeError

log = logging.getLogger("cloudsplit.server")

SERVICE_NAME = SPLIT_INFERENCE_SERVICE
# Bandwidth probes: at most this many bytes per call.
PROBE_LIMIT_BYTES = 16 * MiB


@dataclass
class ServerOptions:
    threads: int = 1
    max_concurrency: int = 16
    max_message_mb: float = DEFAULT_MAX_MESSAGE_MB
    max_request_mb: float = transfer.DEFAULT_MAX_TENSOR_BYTES / MiB
    max_model_mb: float = 1024.0
    token: str | None = None
    batching: bool = True
    max_batch: int = 16
    batch_padding: bool = False        # pad a batch up to its power-of-two bucket instead of splitting it
    batch_window_ms: float = 0.0       # how long a batch waits for more requests (0: run at once)
    compute_slots: int | None = None   # requests or batches computing at once; default cores // threads
    allow_register: bool = True
    delay_s: float = 0.0               # test hook: sleep before running each request (a slow server)
    on_request: Callable[[str], None] | None = None  # test hook: called with the model hash per request


# Trailing metadata of a refused Infer call: milliseconds from the call's arrival (gRPC handing it
# to Python, on its polling thread) to the refusal, as this server's clock measured them.
REFUSED_AFTER_MS_KEY = "cloudsplit-refused-after-ms"


class _Admission:
    """Counts requests in flight and refuses the one past the limit at once: a request either
    runs now or is told to go elsewhere (the client runs it on the device), never queued."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self.admitted = 0
        self.refused = 0
        self.message = f"the server is at its limit of {limit} concurrent requests; retry later"
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                self.refused += 1
                return False
            self.in_flight += 1
            self.admitted += 1
            return True

    def enter(self) -> None:
        if not self.try_enter():
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, self.message)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _AdmissionInterceptor(grpc.ServerInterceptor):
    """Admits each call of ``method`` before any other part of the server runs for it.

    The decision is the first thing the call's worker does: before the stream guard arms its
    timers, before the handler starts and before any request message is read or deserialised. A
    refused call never gets a handler: its worker sets ``REFUSED_AFTER_MS_KEY`` (the time since gRPC
    handed the call to Python, which this interceptor notes on gRPC's polling thread; the hand-over
    to a worker is most of it) and ends the call with RESOURCE_EXHAUSTED. An admitted call holds its
    slot until its handler has the reply ready or fails (``_leaving``).
    """

    def __init__(self, admission: _Admission, method: str):
        self.admission = admission
        self.method = method

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method != self.method:
            return handler
        arrived = time.monotonic()
        admission, behavior = self.admission, original_behavior(handler)

        def admitted(request_iterator, context):
            if not admission.try_enter():
                context.set_trailing_metadata(((REFUSED_AFTER_MS_KEY, f"{(time.monotonic() - arrived) * 1e3:.3f}"),))
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, admission.message)
            return _leaving(behavior(request_iterator, context), admission)

        return replace_behavior(handler, admitted)


def _leaving(responses, admission: _Admission):
    """``responses``, giving the admission slot back once the first is ready, or the handler failed:
    an ``Infer`` handler reads, checks and runs its request before its first message, and streaming
    the reply out holds no slot. (gRPC iterates a handler's responses as soon as it has called it,
    so the slot always comes back.)"""
    try:
        first = next(responses, None)
    finally:
        admission.leave()
    if first is not None:
        yield first
        yield from responses


class SplitInferenceService(pb_grpc.SplitInferenceServicer):
    def __init__(self, registry: ModelRegistry, options: ServerOptions):
        self.registry = registry
        self.options = options
        self.admission = _Admission(options.max_concurrency)
        self.admission_interceptor = _AdmissionInterceptor(self.admission, f"/{SERVICE_NAME}/Infer")
        self.runner = BatchRunner(options, options.compute_slots
                                  or max(1, (os.cpu_count() or 1) // max(1, options.threads)))
        self.chunk_bytes = chunk_bytes(options.max_message_mb)

    def load_factor(self) -> float:
        """>= 1: requests executing or waiting, per compute slot."""
        return self.runner.load_factor()

    @property
    def requests_run(self) -> int:
        return self.runner.requests_run

    @property
    def batches_run(self) -> int:
        return self.runner.batches_run

    @property
    def batched_requests(self) -> int:
        return self.runner.batched_requests

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
            raise invalid("RegisterModel: the stream was empty")
        digest, total = first.model_sha256.lower(), first.total_bytes
        check_hash_format(digest)
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
                raise invalid(f"model {digest[:12]}: the upload carries more than the {total} bytes it declared")
        if len(data) != total:
            raise invalid(f"model {digest[:12]}: the upload ended after {len(data)} of its {total} bytes")
        actual = sha256_hex(data)
        if actual != digest:
            raise invalid(f"model upload: the bytes hash to {actual}, not the declared {digest}")
        try:
            entry, _ = self.registry.add(bytes(data), f"uploaded-{digest[:12]}")
        except EdgeError as error:
            raise invalid(f"model {digest[:12]} does not load: {error}") from None
        except (ValueError, MemoryError) as error:  # pipeline serving: no partition fits the workers
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"model {digest[:12]}: {error}") from None
        log.info("registered model %s (%d bytes, %d ops)", digest[:12], total, len(entry.ops))
        return pb.RegisterModelReply(model_sha256=digest, already_present=False, num_ops=len(entry.ops))

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
        check_hash_format(digest)
        entry = self.registry.get(digest)
        if entry is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {digest} is not on this server: register it first (RegisterModel)")
        return entry

    def Infer(self, request_iterator, context):
        """One request per call; admitted (or refused) by ``admission_interceptor`` before it starts."""
        try:
            header = next(request_iterator, None)
            if header is None or header.WhichOneof("part") != "header":
                raise invalid("Infer: the first message must be an InferHeader")
            header_at = time.monotonic()
            request, assembler = self._begin(header.header, context)
            request.header_at = request.received_at = header_at
            for message in request_iterator:
                self._add_chunk(assembler, message)
                request.received_at = time.monotonic()
                if assembler.complete:
                    break
            if not assembler.complete:
                raise invalid(f"Infer: the stream ended before the tensors were complete ({assembler.missing()})")
            self._finish(request, assembler)
            result = self.runner.execute(request)
            messages = self._reply_messages(request, result)
        except RequestError as error:
            context.abort(error.code, error.message)
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
                        result = self.runner.execute(current)
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
            raise invalid(f"expected a TensorChunk ({assembler.missing()}), got a "
                          f"{message.WhichOneof('part') or 'empty message'}")
        try:
            assembler.add(message.chunk)
        except transfer.FramingError as error:
            raise invalid(str(error)) from None

    def _begin(self, header: pb.InferHeader, context) -> tuple[Request, transfer.TensorAssembler]:
        request = self._validate_header(header)
        remaining = context.time_remaining()
        if remaining is not None:
            request.deadline = time.monotonic() + remaining
        try:
            assembler = transfer.TensorAssembler(header.uploads, int(self.options.max_request_mb * MiB),
                                                 "the request")
        except transfer.FramingError as error:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)) from None
        if self.options.on_request is not None:
            self.options.on_request(request.entry.sha256)
        return request, assembler

    def _validate_header(self, header: pb.InferHeader) -> Request:
        return validate_header(self._entry(header.model_sha256), header, int(self.options.max_request_mb * MiB))

    def _finish(self, request: Request, assembler: transfer.TensorAssembler) -> None:
        for header, data in assembler.tensors():
            try:
                array = transfer.decode_tensor(header, data)
            except ValueError as error:
                raise invalid(f"{request.entry.tensor_label(header.tensor_index)}: {error}") from None
            request.uploads.append((header.tensor_index, array))
        request.ready_at = time.monotonic()

    def _reply_messages(self, request: Request, result: RequestResult) -> list[pb.InferMessage]:
        tensors = [transfer.encode_tensor(t, array, request.download_mode) for t, array in result.outputs]
        header = pb.InferReplyHeader(request_id=request.request_id, outputs=[h for h, _ in tensors],
                                     server_ms=result.server_ms, queue_ms=result.queue_ms,
                                     batch_size=result.batch_size, load_factor=self.load_factor(),
                                     receive_ms=(request.received_at - request.header_at) * 1e3)
        return [pb.InferMessage(reply=header), *transfer.chunk_messages(tensors, self.chunk_bytes)]

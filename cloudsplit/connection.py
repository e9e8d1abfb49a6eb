"""The device's side of the wire: one gRPC channel to a split-inference server, with timings.

Every call takes a timeout and raises ``grpc.RpcError`` on failure; ``SplitRunner`` decides what a
failure means. ``uplink_limit_bps`` slows the sending of tensor chunks to a given rate: the in-process
shaping fallback for tests and benchmarks where network namespaces are not available (it delays the
sender, so every measurement the client takes sees the slower link).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudsplit import transfer
from cloudsplit.security import ClientTLS, bearer_metadata, make_channel
from cloudsplit.protos import (CHUNK_BYTES, DEFAULT_MAX_MESSAGE_MB, PROBE_CHUNK_BYTES, SPLIT_INFERENCE_SERVICE,
                              MiB, chunk_bytes as message_chunk_bytes)
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc


def model_chunks(data: bytes, digest: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[pb.ModelChunk]:
    """A RegisterModel stream: the model's bytes in chunks, the first naming its hash and size."""
    view = memoryview(data)
    yield pb.ModelChunk(model_sha256=digest, total_bytes=len(data), data=bytes(view[:chunk_bytes]))
    for offset in range(chunk_bytes, len(view), chunk_bytes):
        yield pb.ModelChunk(data=bytes(view[offset:offset + chunk_bytes]))


class ProtocolError(Exception):
    """The server's reply does not follow the protocol."""


@dataclass
class InferTiming:
    started: float      # perf_counter() seconds
    sent: float         # the last request message was handed to gRPC
    reply: float        # the reply header arrived
    finished: float     # the last reply chunk arrived
    upload_bytes: int
    download_bytes: int


@dataclass
class InferReply:
    header: pb.InferReplyHeader
    outputs: dict[int, np.ndarray]
    timing: InferTiming


class ServerConnection:
    def __init__(self, address: str, token: str | None = None, max_message_mb: float = DEFAULT_MAX_MESSAGE_MB,
                 chunk_bytes: int = CHUNK_BYTES, tls: ClientTLS | None = None,
                 max_reply_mb: float = transfer.DEFAULT_MAX_TENSOR_BYTES / MiB):
        self.address = address
        # A reply whose header declares more tensor bytes than this is refused before they are read.
        self.max_reply_bytes = int(max_reply_mb * MiB)
        self.chunk_bytes = message_chunk_bytes(max_message_mb, chunk_bytes)
        # Short reconnect backoff: a server that comes back is noticed within a second or two.
        self.channel = make_channel(address, tls, max_message_mb=max_message_mb, options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.enable_retries", 0),
        ])
        self.stub = pb_grpc.SplitInferenceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = bearer_metadata(token)
        self.uplink_limit_bps: float | None = None

    def close(self) -> None:
        self.channel.close()

    def check_health(self, timeout: float) -> float:
        """Round-trip time in ms of one health check; raises if the server is not SERVING."""
        started = time.perf_counter()
        reply = self.health.Check(health_pb2.HealthCheckRequest(service=SPLIT_INFERENCE_SERVICE),
                                  timeout=timeout, metadata=self.metadata)
        elapsed = (time.perf_counter() - started) * 1e3
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise ProtocolError(f"server {self.address} is "
                                f"{health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        return elapsed

    def ensure_model(self, data: bytes, digest: str, timeout: float) -> bool:
        """Registers the model unless the server has it; True if it was uploaded."""
        info = self.stub.GetModel(pb.ModelRef(model_sha256=digest), timeout=timeout, metadata=self.metadata)
        if info.present:
            return False

        self.stub.RegisterModel(model_chunks(data, digest, self.chunk_bytes), timeout=timeout, metadata=self.metadata)
        return True

    def get_profile(self, digest: str, timeout: float, runs: int = 3) -> pb.ProfileReply:
        return self.stub.GetProfile(pb.ProfileRequest(model_sha256=digest, runs=runs), timeout=timeout,
                                    metadata=self.metadata)

    def _throttle(self, nbytes: int) -> None:
        if self.uplink_limit_bps:
            time.sleep(nbytes * 8 / self.uplink_limit_bps)

    def measure_uplink(self, nbytes: int, timeout: float) -> tuple[int, float]:
        """Sends ``nbytes`` after a lead-in chunk of ``PROBE_CHUNK_BYTES``; returns (bytes, seconds)
        as the server timed them, from the lead-in's arrival to the last chunk's: no round trip in
        it, and the bytes a link lets through at once (a token bucket's burst, the first socket
        read) go with the untimed lead-in."""
        payload = bytes(PROBE_CHUNK_BYTES)

        def chunks() -> Iterator[pb.ProbeChunk]:
            yield pb.ProbeChunk(data=payload)
            left = nbytes
            while left > 0:
                piece = payload[:min(left, len(payload))]
                self._throttle(len(piece))
                yield pb.ProbeChunk(data=piece)
                left -= len(piece)

        reply = self.stub.MeasureUplink(chunks(), timeout=timeout, metadata=self.metadata)
        return int(reply.timed_bytes), reply.receive_ms / 1e3

    def measure_downlink(self, nbytes: int, timeout: float) -> tuple[int, float]:
        """Asks the server for a lead-in chunk plus ``nbytes``; returns (bytes, seconds) from the
        lead-in's arrival to the last chunk's, as ``measure_uplink``."""
        first_at = last_at = None
        timed = 0
        for chunk in self.stub.MeasureDownlink(pb.DownlinkProbeRequest(bytes=nbytes + PROBE_CHUNK_BYTES),
                                               timeout=timeout, metadata=self.metadata):
            last_at = time.perf_counter()
            if first_at is None:
                first_at = last_at
            else:
                timed += len(chunk.data)
        if first_at is None:
            return 0, 0.0
        return timed, last_at - first_at

    def infer(self, header: pb.InferHeader, tensors: Sequence[tuple[pb.TensorHeader, bytes]],
              timeout: float | None, expected: Mapping[int, tuple[np.dtype, Sequence[int]]] | None = None
              ) -> InferReply:
        """Sends one request and reads its reply. Raises ``grpc.RpcError`` as the server answers, or
        ``ProtocolError`` for a reply that does not follow the protocol: a header that names tensors
        not asked for, declares more bytes than ``max_reply_bytes``, or (given ``expected``: the
        dtype and shape of each output asked for) describes another dtype, shape or byte length
        than the output's; each is refused before its bytes are read or allocated."""
        marks: dict[str, float] = {}

        def requests() -> Iterator[pb.InferMessage]:
            marks["started"] = time.perf_counter()
            yield pb.InferMessage(header=header)
            for message in transfer.chunk_messages(tensors, self.chunk_bytes):
                self._throttle(len(message.chunk.data))
                yield message
            marks["sent"] = time.perf_counter()

        called = time.perf_counter()
        responses = self.stub.Infer(requests(), timeout=timeout, metadata=self.metadata)
        reply = None
        assembler = None
        try:
            for message in responses:
                if reply is None:
                    if message.WhichOneof("part") != "reply":
                        raise ProtocolError("the server's first message is not a reply header")
                    reply = message.reply
                    marks["reply"] = time.perf_counter()
                    _check_reply_header(reply, header.outputs, expected)
                    assembler = transfer.TensorAssembler(reply.outputs, self.max_reply_bytes, "the reply")
                elif message.WhichOneof("part") == "chunk":
                    assembler.add(message.chunk)
                else:
                    raise ProtocolError(f"unexpected {message.WhichOneof('part')} in the server's reply")
        except transfer.FramingError as error:
            responses.cancel()
            raise ProtocolError(f"the server's reply is malformed: {error}") from None
        except ProtocolError:
            responses.cancel()
            raise
        if reply is None or not assembler.complete:
            raise ProtocolError("the server's reply ended early" + (f" ({assembler.missing()})" if assembler else ""))
        finished = time.perf_counter()
        wanted = set(header.outputs)
        outputs = {}
        for tensor_header, data in assembler.tensors():
            try:
                outputs[tensor_header.tensor_index] = transfer.decode_tensor(tensor_header, data)
            except ValueError as error:
                raise ProtocolError(f"the server's tensor {tensor_header.tensor_index} does not decode: {error}") from None
        if set(outputs) != wanted:
            raise ProtocolError(f"the server left out tensors {sorted(wanted - set(outputs))}")
        timing = InferTiming(started=marks.get("started", called), sent=marks.get("sent", marks["reply"]),
                             reply=marks["reply"], finished=finished,
                             upload_bytes=sum(len(data) for _, data in tensors),
                             download_bytes=sum(h.byte_length for h in reply.outputs))
        return InferReply(reply, outputs, timing)


def _check_reply_header(reply: pb.InferReplyHeader, asked: Sequence[int],
                        expected: Mapping[int, tuple[np.dtype, Sequence[int]]] | None) -> None:
    """``transfer.FramingError`` unless each tensor the reply lists was asked for, once, and (given
    ``expected``) has the dtype, shape and byte length of that output."""
    seen: set[int] = set()
    for tensor_header in reply.outputs:
        index = tensor_header.tensor_index
        if index not in asked:
            raise transfer.FramingError(f"the reply lists tensor {index}, which was not asked for")
        if index in seen:
            raise transfer.FramingError(f"the reply lists tensor {index} twice")
        seen.add(index)
        if expected is not None:
            dtype, shape = expected[index]
            transfer.check_tensor_header(tensor_header, dtype, shape, f"tensor {index}", "the reply")

"""Reading tensor streams a peer wrote: the same limits and errors on the server and on the client.

The client reads replies from a server it may not trust as much as the server reads requests: a
reply header declaring a terabyte must be refused before anything is allocated, and a tensor with an
unknown dtype or compression code must raise the typed error, not a KeyError. A SplitRunner knows
what each output it asked for must be; a reply that says otherwise is a server failure, and the
request is answered on the device (the servers here misbehave on purpose, over real gRPC)."""
from __future__ import annotations

import concurrent.futures
import re

import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cloudsplit import transfer
from cloudsplit.client import SplitRunner
from cloudsplit.connection import ProtocolError, ServerConnection
from cloudsplit.federated import receive_tensors
from cloudsplit.model_registry import ModelRegistry
from cloudsplit.protos import SPLIT_INFERENCE_SERVICE
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc
from cloudsplit.service import ServerOptions, SplitInferenceService
from tests.cloudsplit.test_client import fixed_cut, local_outputs

FLOAT32 = transfer.DTYPE_BY_NUMPY[np.dtype(np.float32)]


def _header(index: int, nbytes: int, **fields) -> pb.TensorHeader:
    return pb.TensorHeader(tensor_index=index, dtype=fields.pop("dtype", FLOAT32), shape=[nbytes // 4],
                           byte_length=nbytes, compression=fields.pop("compression", pb.COMPRESSION_NONE), **fields)


def _chunks(header: pb.TensorHeader, data: bytes, size: int = 7):
    return [pb.TensorChunk(tensor_index=header.tensor_index, offset=k, data=data[k:k + size])
            for k in range(0, len(data), size)]


@pytest.mark.parametrize("field, value, words", [("dtype", 99, "unknown dtype code 99"),
                                                 ("compression", 42, "unknown compression code 42")])
def test_decode_tensor_refuses_unknown_codes_with_the_typed_error(field, value, words):
    header, data = transfer.encode_tensor(3, np.arange(6, dtype=np.float32), "none")
    setattr(header, field, value)
    with pytest.raises(transfer.FramingError, match=f"tensor 3: {words}"):
        transfer.decode_tensor(header, data)


def test_assembler_refuses_a_declared_size_over_its_limit_before_allocating():
    # 2**40 bytes: allocating it first would raise MemoryError (or take the machine's memory).
    with pytest.raises(transfer.FramingError, match=r"the reply declares 1099511627776 bytes .* limit of 1024 bytes"):
        transfer.TensorAssembler([_header(0, 1 << 39), _header(1, 1 << 39)], 1024, "the reply")
    assembler = transfer.TensorAssembler([_header(0, 512), _header(1, 512)], 1024)
    for header in assembler.headers:
        for chunk in _chunks(header, bytes(range(256)) * 2):
            assembler.add(chunk)
    assert assembler.complete


class _ReplyServicer(pb_grpc.SplitInferenceServicer):
    """A server whose Infer answers with the reply a test gives it, whatever was asked."""

    def __init__(self, reply: pb.InferReplyHeader, chunks=()):
        self.reply = reply
        self.chunks = list(chunks)

    def Infer(self, request_iterator, context):
        for _ in request_iterator:
            pass
        yield pb.InferMessage(reply=self.reply)
        for chunk in self.chunks:
            yield pb.InferMessage(chunk=chunk)


@pytest.fixture
def replying_server():
    servers = []

    def start(reply, chunks=()):
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_SplitInferenceServicer_to_server(_ReplyServicer(reply, chunks), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(0)


def _infer(address: str, **connection_options):
    connection = ServerConnection(address, **connection_options)
    try:
        return connection.infer(pb.InferHeader(model_sha256="0" * 64, outputs=[5]), [], timeout=10.0)
    finally:
        connection.close()


def test_client_refuses_a_reply_declaring_more_than_its_limit(replying_server):
    address = replying_server(pb.InferReplyHeader(outputs=[_header(5, 1 << 40)]))
    with pytest.raises(ProtocolError, match=r"reply is malformed: the reply declares 1099511627776 bytes .* "
                                            rf"limit of {transfer.DEFAULT_MAX_TENSOR_BYTES} bytes"):
        _infer(address)


def test_client_reply_limit_is_its_own_setting(replying_server):
    data = np.arange(1 << 18, dtype=np.float32).tobytes()   # 1 MiB
    header = _header(5, len(data))
    address = replying_server(pb.InferReplyHeader(outputs=[header]), _chunks(header, data, 1 << 16))
    assert np.array_equal(_infer(address).outputs[5], np.frombuffer(data, np.float32))
    with pytest.raises(ProtocolError, match=r"declares 1048576 bytes .* limit of 524288 bytes"):
        _infer(address, max_reply_mb=0.5)


def test_client_refuses_a_reply_tensor_with_an_unknown_dtype(replying_server):
    header = _header(5, 8, dtype=77)
    address = replying_server(pb.InferReplyHeader(outputs=[header]), _chunks(header, bytes(8)))
    with pytest.raises(ProtocolError, match="tensor 5 does not decode: tensor 5: unknown dtype code 77"):
        _infer(address)


def test_federated_receive_checks_the_limit_and_the_tensor_indices():
    value = np.arange(4, dtype=np.float32)
    header, data = transfer.encode_tensor(0, value, "none")
    got, nbytes = receive_tensors([header], _chunks(header, data), ["w"], value.nbytes)
    assert np.array_equal(got["w"], value) and nbytes == 16
    with pytest.raises(transfer.FramingError, match="declares 16 bytes of tensors, over the limit of 15"):
        receive_tensors([header], _chunks(header, data), ["w"], value.nbytes - 1)
    header.tensor_index = 3
    with pytest.raises(transfer.FramingError, match=r"lists tensors \[3\], not each of 0..0 once"):
        receive_tensors([header], _chunks(header, data), ["w"], value.nbytes)


def _with_shape(shape):
    """Another shape, with as many bytes as it takes."""
    def tamper(header, chunks):
        header.shape[:] = shape
        header.byte_length = 4 * int(np.prod(shape))
        return header, _chunks(header, bytes(header.byte_length), 1 << 16)
    return tamper


def _with(**fields):
    def tamper(header, chunks):
        for name, value in fields.items():
            setattr(header, name, value)
        return header, chunks
    return tamper


def _int8_with_nan_scale(header, chunks):
    header.compression, header.byte_length, header.scale = pb.COMPRESSION_INT8, 10, float("nan")
    return header, [pb.TensorChunk(tensor_index=header.tensor_index, data=bytes(10))]


def _with_unasked_tensor(header, chunks):
    extra = pb.TensorHeader()
    extra.CopyFrom(header)
    extra.tensor_index = 0
    return [extra, header], [pb.TensorChunk(tensor_index=0, data=bytes(header.byte_length)), *chunks]


class _TamperingService(SplitInferenceService):
    """The real servicer, except that each Infer reply's output header and chunks pass through
    ``tamper(header, chunks) -> (header or headers, chunks)`` on their way out."""

    def __init__(self, registry, tamper):
        super().__init__(registry, ServerOptions())
        self.tamper = tamper
        self.replies = 0

    def Infer(self, request_iterator, context):
        messages = list(super().Infer(request_iterator, context))
        reply = messages[0].reply
        output = pb.TensorHeader()
        (sent,) = reply.outputs
        output.CopyFrom(sent)
        headers, chunks = self.tamper(output, [m.chunk for m in messages[1:]])
        del reply.outputs[:]
        reply.outputs.extend(headers if isinstance(headers, list) else [headers])
        self.replies += 1
        yield pb.InferMessage(reply=reply)
        yield from (pb.InferMessage(chunk=chunk) for chunk in chunks)


@pytest.fixture
def tampering_server(mlp):
    started = []

    def start(tamper):
        registry = ModelRegistry()
        registry.add(mlp.data, "mlp")
        service = _TamperingService(registry, tamper)
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_SplitInferenceServicer_to_server(service, server)
        checks = health.HealthServicer()
        checks.set(SPLIT_INFERENCE_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        started.append((server, registry))
        return f"127.0.0.1:{port}", service

    yield start
    for server, registry in started:
        server.stop(0)
        registry.close()


# The MLP's output is tensor 'logits', float32 [1, 10]: 40 bytes, sent uncompressed.
@pytest.mark.parametrize("tamper, words", [
    (_with_shape([1, 12]), r"the model's tensor has shape \[1, 10\] for these inputs, the reply says \[1, 12\]"),
    (_with_shape([1, 1 << 20]), r"has shape \[1, 10\] for these inputs, the reply says \[1, 1048576\]"),
    (_with(dtype=transfer.DTYPE_BY_NUMPY[np.dtype(np.int32)]),
     "the model's tensor is float32, the reply says DTYPE_INT32"),
    (_with(dtype=77), "dtype code 77 is unknown"),
    (_with(compression=42), "compression code 42 is unknown"),
    (_with(byte_length=1 << 40), "under none compression is 40 bytes, the reply declares 1099511627776"),
    (_with(byte_length=1 << 20), "under none compression is 40 bytes, the reply declares 1048576"),
    (_int8_with_nan_scale, "int8 scale must be finite and > 0"),
    (_with_unasked_tensor, "the reply lists tensor 0, which was not asked for"),
], ids=["shape", "huge-shape", "dtype", "unknown-dtype", "unknown-compression", "declares-a-terabyte",
        "declares-a-mebibyte", "nan-scale", "unasked-tensor"])
def test_split_runner_answers_on_the_device_when_the_reply_is_not_what_it_asked_for(
        tmp_path, mlp, tampering_server, tamper, words):
    address, service = tampering_server(tamper)
    expected = local_outputs(mlp)
    with SplitRunner(mlp.write(tmp_path), address, compression="none", planner=fixed_cut(1),
                     deadline_s=5.0) as runner:
        began = time.monotonic()
        outputs = runner.run(mlp.feeds)
        elapsed = time.monotonic() - began
        record = runner.last_plan
    assert service.replies == 1, "the request did not reach the server"
    assert not record.offloaded and runner.fallbacks == 1
    assert record.placement == ["device"] * runner.num_ops
    assert record.fallback_reason.startswith("ProtocolError: the server's reply is malformed: ")
    assert re.search(words, record.fallback_reason), record.fallback_reason
    # Refused on the reply's header, not after waiting out the deadline for bytes that never come.
    assert elapsed < 2.0
    for name, value in expected.items():
        assert outputs[name].shape == value.shape and outputs[name].dtype == value.dtype
        assert np.array_equal(outputs[name], value)


def test_split_runner_takes_a_reply_that_is_what_it_asked_for(tmp_path, mlp, tampering_server):
    """Untouched replies are taken, at the model's batch size and at others (the expected shapes
    follow the runner's resized inputs)."""
    address, service = tampering_server(lambda header, chunks: (header, chunks))
    rng = np.random.default_rng(5)
    with SplitRunner(mlp.write(tmp_path), address, compression="none", planner=fixed_cut(1)) as runner:
        for batch in (1, 3):
            x = rng.standard_normal((batch, 64)).astype(np.float32)
            outputs = runner.run({"input": x})
            assert runner.last_plan.offloaded and runner.last_plan.fallback_reason is None
            for name, value in local_outputs(SimpleNamespace(data=mlp.data, feeds={"input": x})).items():
                assert outputs[name].shape == (batch, 10) and np.array_equal(outputs[name], value)
    assert service.replies == 2

"""Reading tensor streams a peer wrote: the same limits and errors on the server and on the client.

The client reads replies from a server it may not trust as much as the server reads requests: a
reply header declaring a terabyte must be refused before anything is allocated, and a tensor with an
unknown dtype or compression code must raise the typed error, not a KeyError."""
from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest

from cloudsplit import transfer
from cloudsplit.connection import ProtocolError, ServerConnection
from cloudsplit.federated import receive_tensors
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.protos import split_pb2_grpc as pb_grpc

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

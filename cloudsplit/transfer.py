"""Tensors in and out of InferMessage streams, in chunks.

A request (or reply) is a header followed by the wire bytes of each tensor the header lists, in the
header's order, cut into TensorChunks of at most ``chunk_bytes``. ``TensorAssembler`` takes the chunks
back in and checks that each one continues the tensor it claims to (index, offset, length), so a
malformed stream is rejected with a message naming the tensor instead of being misread.

Both ends read streams the other end wrote, so both hold them to the same rules: the assembler takes
a limit on the bytes a stream's headers may declare (the server's ``--max-request-mb``, the client's
``max_reply_mb``), checked before anything is allocated, and ``decode_tensor`` raises ``ValueError``
(``FramingError`` for codes it does not know) for anything it cannot decode. A reader that knows
what a tensor must be (the server from its model and the request's shapes, the client from the
outputs it asked for) checks each header against it with ``check_tensor_header`` before reading
any bytes: then the limit is exactly the tensors it expects.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from cloudsplit import compression
from cloudsplit.protos import CHUNK_BYTES
from cloudsplit.protos import split_pb2 as pb

DEFAULT_CHUNK_BYTES = CHUNK_BYTES
# The default limit on the tensor bytes one request or reply may declare, on either end.
DEFAULT_MAX_TENSOR_BYTES = 256 << 20

COMPRESSION_BY_MODE = {"none": pb.COMPRESSION_NONE, "fp16": pb.COMPRESSION_FP16,
                       "int8": pb.COMPRESSION_INT8_PER_CHANNEL, "int8-per-tensor": pb.COMPRESSION_INT8}
MODE_BY_COMPRESSION = {value: mode for mode, value in COMPRESSION_BY_MODE.items()}

# DType values equal edge_dtype values (cruntime/include/edge.h).
NUMPY_BY_DTYPE = {pb.DTYPE_FLOAT32: np.dtype(np.float32), pb.DTYPE_FLOAT16: np.dtype(np.float16),
                  pb.DTYPE_INT8: np.dtype(np.int8), pb.DTYPE_UINT8: np.dtype(np.uint8),
                  pb.DTYPE_INT32: np.dtype(np.int32), pb.DTYPE_INT64: np.dtype(np.int64),
                  pb.DTYPE_BOOL: np.dtype(np.bool_)}
DTYPE_BY_NUMPY = {dtype: value for value, dtype in NUMPY_BY_DTYPE.items()}


class FramingError(ValueError):
    """A stream whose chunks do not follow its header, or a header that declares what cannot be read:
    more bytes than the reader's limit, an unknown dtype or compression code."""


def dtype_name(value: int) -> str:
    return pb.DType.Name(value) if value in NUMPY_BY_DTYPE else f"unknown dtype code {value}"


def encode_tensor(index: int, array: np.ndarray, mode: str) -> tuple[pb.TensorHeader, bytes]:
    array = np.asarray(array)
    encoded = compression.encode(array, mode)
    header = pb.TensorHeader(tensor_index=int(index), dtype=DTYPE_BY_NUMPY[array.dtype], shape=list(array.shape),
                             compression=COMPRESSION_BY_MODE[encoded.mode], scale=encoded.scale,
                             zero_point=encoded.zero_point, byte_length=len(encoded.data),
                             channel_scales=encoded.channel_scales, channel_zero_points=encoded.channel_zero_points)
    return header, encoded.data


def decode_tensor(header: pb.TensorHeader, data: bytes | memoryview) -> np.ndarray:
    """The array ``header`` and its wire bytes ``data`` describe; ``ValueError`` (``FramingError`` for
    an unknown dtype or compression code) when they do not make one."""
    if header.dtype not in NUMPY_BY_DTYPE:
        raise FramingError(f"tensor {header.tensor_index}: {dtype_name(header.dtype)}")
    if header.compression not in MODE_BY_COMPRESSION:
        raise FramingError(f"tensor {header.tensor_index}: unknown compression code {header.compression}")
    return compression.decode(data, MODE_BY_COMPRESSION[header.compression], NUMPY_BY_DTYPE[header.dtype],
                              tuple(header.shape), header.scale, header.zero_point,
                              channel_scales=header.channel_scales, channel_zero_points=header.channel_zero_points)


def check_tensor_header(header: pb.TensorHeader, dtype: np.dtype, shape: Sequence[int], label: str,
                        whose: str) -> int:
    """Checks that ``header`` describes a tensor of ``dtype`` and ``shape`` its reader can decode:
    known codes, the compression's parameters in range, and the byte length that dtype, shape and
    compression take. Returns that byte length; raises ``FramingError`` naming ``label`` (the
    tensor) and ``whose`` (the stream: "the request", "the reply") otherwise."""
    dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
    if header.dtype not in NUMPY_BY_DTYPE:
        raise FramingError(f"{label}: dtype code {header.dtype} is unknown")
    if NUMPY_BY_DTYPE[header.dtype] != dtype:
        raise FramingError(f"{label}: the model's tensor is {dtype.name}, {whose} says {dtype_name(header.dtype)}")
    if tuple(header.shape) != shape:
        raise FramingError(f"{label}: the model's tensor has shape {shape_text(shape)} for these inputs, "
                           f"{whose} says {shape_text(header.shape)}")
    if header.compression not in MODE_BY_COMPRESSION:
        raise FramingError(f"{label}: compression code {header.compression} is unknown")
    mode = MODE_BY_COMPRESSION[header.compression]
    if mode != "none" and dtype != np.float32:
        raise FramingError(f"{label}: {mode} compression applies to float32 tensors only, this one is {dtype.name}")
    if mode == "int8-per-tensor":
        if not (np.isfinite(header.scale) and header.scale > 0):
            raise FramingError(f"{label}: int8 scale must be finite and > 0, got {header.scale}")
        if not -128 <= header.zero_point <= 127:
            raise FramingError(f"{label}: int8 zero_point must be in [-128, 127], got {header.zero_point}")
    elif header.scale != 0 or header.zero_point != 0:
        raise FramingError(f"{label}: scale and zero_point apply to per-tensor int8 compression only, not {mode}")
    if mode == "int8":
        channels = shape[-1] if shape else 0
        if len(header.channel_scales) != channels or len(header.channel_zero_points) != channels:
            raise FramingError(f"{label}: per-channel int8 needs one scale and one zero point per channel of the "
                               f"last axis ({channels}), got {len(header.channel_scales)} scales and "
                               f"{len(header.channel_zero_points)} zero points")
        scales = np.asarray(header.channel_scales, np.float32)
        bad = np.flatnonzero(~(np.isfinite(scales) & (scales > 0)))
        if bad.size:
            raise FramingError(f"{label}: per-channel int8 scales must be finite and > 0; channel {int(bad[0])} "
                               f"has {float(scales[bad[0]])}")
        zero_points = np.asarray(header.channel_zero_points, np.int64)
        bad = np.flatnonzero((zero_points < -128) | (zero_points > 127))
        if bad.size:
            raise FramingError(f"{label}: per-channel int8 zero points must be in [-128, 127]; channel "
                               f"{int(bad[0])} has {int(zero_points[bad[0]])}")
    elif len(header.channel_scales) or len(header.channel_zero_points):
        raise FramingError(f"{label}: channel_scales and channel_zero_points apply to per-channel int8 "
                           f"compression only, not {mode}")
    expected_bytes = compression.data_bytes(mode, dtype, int(np.prod(shape, dtype=np.int64)))
    if header.byte_length != expected_bytes:
        raise FramingError(f"{label}: {shape_text(shape)} {dtype.name} under {mode} compression is "
                           f"{expected_bytes} bytes, {whose} declares {header.byte_length}")
    return expected_bytes


def shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def chunk_messages(tensors: Sequence[tuple[pb.TensorHeader, bytes]],
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[pb.InferMessage]:
    """The TensorChunk messages carrying ``tensors``' bytes (zero-length tensors send none)."""
    for header, data in tensors:
        view = memoryview(data)
        for offset in range(0, len(view), chunk_bytes):
            yield pb.InferMessage(chunk=pb.TensorChunk(tensor_index=header.tensor_index, offset=offset,
                                                       data=bytes(view[offset:offset + chunk_bytes])))


class TensorAssembler:
    """Collects the chunks of the tensors ``headers`` lists, in order.

    ``max_total_bytes`` bounds what the headers may declare (``FramingError`` past it, before any
    buffer is allocated): the peer decides ``byte_length``, so without a bound one header could make
    the reader allocate any amount. ``what`` names the stream in that message."""

    def __init__(self, headers: Sequence[pb.TensorHeader], max_total_bytes: int, what: str = "the stream"):
        self.headers = list(headers)
        total = sum(h.byte_length for h in self.headers)
        if total > max_total_bytes:
            raise FramingError(f"{what} declares {total} bytes of tensors, over the limit of "
                               f"{max_total_bytes} bytes")
        self._buffers = [bytearray(h.byte_length) for h in self.headers]
        self._position = 0
        self._filled = 0
        self._skip_empty()

    def _skip_empty(self) -> None:
        while self._position < len(self.headers) and self._filled == self.headers[self._position].byte_length:
            self._position += 1
            self._filled = 0

    @property
    def complete(self) -> bool:
        return self._position >= len(self.headers)

    def add(self, chunk: pb.TensorChunk) -> None:
        if self.complete:
            raise FramingError(f"a chunk for tensor {chunk.tensor_index} arrived after every tensor the header "
                               "lists was complete")
        header = self.headers[self._position]
        if chunk.tensor_index != header.tensor_index:
            raise FramingError(f"a chunk names tensor {chunk.tensor_index} but tensor {header.tensor_index} is "
                               f"still missing bytes {self._filled}..{header.byte_length}")
        if chunk.offset != self._filled:
            raise FramingError(f"tensor {header.tensor_index}: a chunk starts at byte {chunk.offset}, expected "
                               f"{self._filled}")
        end = self._filled + len(chunk.data)
        if end > header.byte_length:
            raise FramingError(f"tensor {header.tensor_index}: chunks carry {end} bytes, more than the "
                               f"{header.byte_length} its header declares")
        self._buffers[self._position][self._filled:end] = chunk.data
        self._filled = end
        self._skip_empty()

    def missing(self) -> str:
        if self.complete:
            return ""
        header = self.headers[self._position]
        return f"tensor {header.tensor_index} has {self._filled} of its {header.byte_length} bytes"

    def tensors(self) -> list[tuple[pb.TensorHeader, bytearray]]:
        return list(zip(self.headers, self._buffers))

"""Checking a split-inference request against its model before anything runs.

A request names the model (by SHA-256), the shapes of its graph inputs, the server ops to run, the
tensors it uploads and the ones it wants back. ``validate_header`` checks every one of these against
the model and returns a ``Request``; any mismatch raises ``RequestError`` with INVALID_ARGUMENT (or
RESOURCE_EXHAUSTED past the server's size limits) and a message naming the tensor or op at fault, so
the server answers the client and keeps serving. The training and federated services raise the same
``RequestError`` and check uploads with the same ``validate_upload``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np

from cloudsplit import transfer
from cloudsplit.transfer import shape_text
from cloudsplit.protos import split_pb2 as pb

if TYPE_CHECKING:
    from cloudsplit.model_registry import ModelEntry


class RequestError(Exception):
    """A request the server refuses; ``code`` is the gRPC status it ends with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class Request:
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


def check_hash_format(digest: str) -> None:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise invalid(f"model_sha256 must be 64 hex digits, got {digest[:80]!r}")


def validate_header(entry: ModelEntry, header: pb.InferHeader, max_request_bytes: int) -> Request:
    config = validate_input_shapes(entry, header.input_shapes, max_request_bytes)
    shapes = entry.shapes_for(config)
    ops = list(header.server_ops)
    if not ops:
        raise invalid("server_ops is empty: a request must name the ops the server runs")
    out_of_range = [op for op in ops if not 0 <= op < len(entry.ops)]
    if out_of_range:
        raise invalid(f"server_ops {out_of_range[:8]} are out of range: the model has {len(entry.ops)} ops")
    descending = next((i for i in range(1, len(ops)) if ops[i] <= ops[i - 1]), None)
    if descending is not None:
        raise invalid(f"server_ops must be strictly ascending (graph order): op {ops[descending]} follows "
                      f"op {ops[descending - 1]}")

    written = {t for op in ops for t in entry.ops[op]["outputs"] if t >= 0}
    read = {t for op in ops for t in entry.ops[op]["inputs"] if t >= 0}
    uploaded: set[int] = set()
    total_bytes = 0
    for tensor_header in header.uploads:
        total_bytes += validate_upload(entry, shapes, tensor_header, uploaded)
        uploaded.add(tensor_header.tensor_index)
    limit = max_request_bytes
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
            raise invalid(f"{entry.op_label(op)} reads {entry.tensor_label(t)}, which is neither a constant, "
                          f"uploaded, nor produced by an earlier server op ({where})")
        available.update(entry.ops[op]["outputs"])
    for t in uploaded:
        if t in written:
            raise invalid(f"{entry.tensor_label(t)} is uploaded but {entry.op_label(entry.producer[t])}, "
                          "a server op, writes it")
        if t not in read:
            raise invalid(f"{entry.tensor_label(t)} is uploaded but no server op reads it")

    outputs = list(header.outputs)
    if not outputs:
        raise invalid("outputs is empty: name the tensors the server should send back")
    for t in outputs:
        if not 0 <= t < entry.num_tensors:
            raise invalid(f"output tensor {t} is out of range: the model has {entry.num_tensors} tensors")
        if t not in written:
            raise invalid(f"output {entry.tensor_label(t)} is not produced by any of the server ops")
    if len(set(outputs)) != len(outputs):
        raise invalid("outputs lists a tensor more than once")
    if header.download_compression not in transfer.MODE_BY_COMPRESSION:
        raise invalid(f"download_compression {header.download_compression} is not a known compression")
    return Request(entry=entry, request_id=header.request_id, config=config, shapes=shapes,
                   server_ops=tuple(ops), outputs=tuple(outputs),
                   download_mode=transfer.MODE_BY_COMPRESSION[header.download_compression])


def validate_input_shapes(entry: ModelEntry, input_shapes, max_request_bytes: int) -> tuple:
    config = list(entry.default_config)
    seen = set()
    limit = max_request_bytes
    for item in input_shapes:
        t = item.tensor_index
        if t not in entry.graph_inputs:
            raise invalid(f"input_shapes names tensor {t}, which is not a graph input "
                          f"(the inputs are {entry.graph_inputs})")
        if t in seen:
            raise invalid(f"input_shapes names {entry.tensor_label(t)} twice")
        seen.add(t)
        shape = tuple(int(d) for d in item.shape)
        signature = entry.signatures[t]
        fits = len(shape) == len(signature) and all(
            (s == -1 and d >= 1) or s == d for d, s in zip(shape, signature))
        if not fits:
            raise invalid(f"input_shapes: {entry.tensor_label(t)} cannot take shape {shape_text(shape)}; "
                          f"its shape signature is {shape_text(signature)} (-1: dynamic)")
        nbytes = int(np.prod(shape, dtype=np.int64)) * entry.dtypes[t].itemsize
        if nbytes > limit:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"input_shapes: {entry.tensor_label(t)} at {shape_text(shape)} would hold "
                               f"{nbytes} bytes, over the server's limit of {limit} bytes")
        config[entry.graph_inputs.index(t)] = shape
    return tuple(config)


def validate_upload(entry: ModelEntry, shapes, header: pb.TensorHeader, uploaded: set[int]) -> int:
    t = header.tensor_index
    if not 0 <= t < entry.num_tensors:
        raise invalid(f"uploaded tensor {t} is out of range: the model has {entry.num_tensors} tensors")
    label = entry.tensor_label(t)
    if t in uploaded:
        raise invalid(f"{label} is uploaded twice")
    if entry.kinds[t] != "activation":
        raise invalid(f"{label} is a {entry.kinds[t]} of the model and cannot be uploaded")
    try:
        return transfer.check_tensor_header(header, entry.dtypes[t], shapes[t], label, "the request")
    except transfer.FramingError as error:
        raise invalid(str(error)) from None

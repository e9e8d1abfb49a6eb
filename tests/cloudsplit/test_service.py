"""The split-inference server over real gRPC on loopback: results, validation, limits, auth, batching.

The device side here is written with edge.Interpreter and cloudsplit.execution directly (not
SplitRunner), so these tests check the server against the runtime's own all-local answer.
"""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import edge
from cloudsplit import compression, transfer
from cloudsplit.connection import ServerConnection
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.server import start_server
from tests.cloudsplit.conftest import DevicePart

# Stated accuracy cost of compressing the cut (measured over every cut of these models; see
# cloudsplit/compression.py): max |split - local| / max |local| over the final outputs.
RELATIVE_ERROR_BOUND = {"none": 0.0, "fp16": 5e-3, "int8": 4e-2, "int8-per-tensor": 6e-2}


@pytest.fixture(scope="module")
def connection(server):
    conn = ServerConnection(server.address)
    yield conn
    conn.close()


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


@pytest.mark.parametrize("model_name", ["mobilenet", "resnet", "bert"])
@pytest.mark.parametrize("mode", ["none", "fp16", "int8", "int8-per-tensor"])
def test_split_matches_local_at_every_cut(request, connection, model_name, mode):
    model = request.getfixturevalue(model_name)
    probe = DevicePart(model, 1)
    cuts = range(1, len(probe.ops)) if mode == "none" else range(1, len(probe.ops), 7)
    reference = probe.local_outputs()
    scale = max(float(np.max(np.abs(y))) for y in reference.values())
    worst = 0.0
    for cut in cuts:
        part = DevicePart(model, cut)
        header, tensors = part.request(mode)
        reply = connection.infer(header, tensors, timeout=10)
        for t, expected in reference.items():
            assert reply.outputs[t].shape == expected.shape and reply.outputs[t].dtype == expected.dtype
            if mode == "none":
                assert np.array_equal(reply.outputs[t], expected), f"cut {cut}: split differs from local"
            worst = max(worst, float(np.max(np.abs(reply.outputs[t] - expected))) / scale)
    assert worst <= RELATIVE_ERROR_BOUND[mode]
    if mode != "none":
        assert worst > 0, "a lossy compression left every output bit-identical: was it applied?"


def test_chunks_larger_cut_than_one_message(models_dir, mlp):
    """A 6 MiB upload through a server whose messages are capped at 1 MiB still goes through, chunked."""
    from tests.cloudsplit.conftest import Model, mlp_onnx

    wide = Model("wide", mlp_onnx(widths=(64, 1024, 16)), {})
    with start_server([wide.data], max_message_mb=1.0) as handle:
        conn = ServerConnection(handle.address, max_message_mb=1.0)
        batch = 1536
        hidden = np.random.default_rng(0).standard_normal((batch, 1024)).astype(np.float32)
        interpreter = edge.Interpreter(model_content=wide.data)
        input_index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(input_index, [batch, 64])
        interpreter.allocate_tensors()
        ops = interpreter.op_details()
        cut_tensor, output = ops[1]["inputs"][0], ops[1]["outputs"][0]
        interpreter.set_tensor(cut_tensor, hidden)
        interpreter.invoke_ops([1])
        expected = interpreter.get_tensor(output)
        tensor = transfer.encode_tensor(cut_tensor, hidden, "none")
        assert tensor[0].byte_length > 4 * (1 << 20)
        header = pb.InferHeader(model_sha256=wide.sha256, server_ops=[1], uploads=[tensor[0]], outputs=[output],
                                input_shapes=[pb.InputShape(tensor_index=input_index, shape=[batch, 64])])
        reply = conn.infer(header, [tensor], timeout=20)
        assert np.array_equal(reply.outputs[output], expected)
        conn.close()


def test_profile_and_health(connection, server, mobilenet):
    profile = connection.get_profile(mobilenet.sha256, timeout=10)
    num_ops = len(edge.Interpreter(model_content=mobilenet.data).op_details())
    assert len(profile.op_ms) == num_ops
    assert all(ms >= 0 for ms in profile.op_ms) and sum(profile.op_ms) > 0
    assert profile.load_factor >= 1.0
    assert connection.check_health(timeout=5) > 0
    missing = rpc_error(lambda: connection.get_profile("0" * 64, timeout=5))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


def _mutated(part: DevicePart, mode: str = "none", **changes):
    header, tensors = part.request(mode)
    for field, value in changes.items():
        if field.startswith("upload_"):
            name = field.removeprefix("upload_")
            if name == "shape":
                del header.uploads[0].shape[:]
                header.uploads[0].shape.extend(value)
            else:
                setattr(header.uploads[0], name, value)
        elif field in ("server_ops", "outputs"):
            del getattr(header, field)[:]
            getattr(header, field).extend(value)
        else:
            setattr(header, field, value)
    return header, tensors


@pytest.mark.parametrize("changes, code, words", [
    ({"model_sha256": "not-a-hash"}, grpc.StatusCode.INVALID_ARGUMENT, "64 hex digits"),
    ({"model_sha256": "ab" * 32}, grpc.StatusCode.NOT_FOUND, "register it first"),
    ({"server_ops": [10, 999]}, grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
    ({"server_ops": [11, 10]}, grpc.StatusCode.INVALID_ARGUMENT, "ascending"),
    ({"server_ops": [20, 21]}, grpc.StatusCode.INVALID_ARGUMENT, "neither a constant, uploaded"),
    ({"upload_tensor_index": 100000}, grpc.StatusCode.INVALID_ARGUMENT, "out of range"),
    ({"upload_dtype": pb.DTYPE_INT32}, grpc.StatusCode.INVALID_ARGUMENT, "float32, the request says DTYPE_INT32"),
    ({"upload_dtype": 77}, grpc.StatusCode.INVALID_ARGUMENT, "dtype code 77"),
    ({"upload_shape": [1, 2, 3]}, grpc.StatusCode.INVALID_ARGUMENT, "shape"),
    ({"upload_byte_length": 12}, grpc.StatusCode.INVALID_ARGUMENT, "the request declares 12"),
    ({"upload_compression": 9}, grpc.StatusCode.INVALID_ARGUMENT, "compression code 9"),
    ({"upload_scale": 0.5}, grpc.StatusCode.INVALID_ARGUMENT, "int8 compression only"),
    ({"outputs": [0]}, grpc.StatusCode.INVALID_ARGUMENT, "not produced by any of the server ops"),
    ({"outputs": []}, grpc.StatusCode.INVALID_ARGUMENT, "outputs is empty"),
])
def test_malformed_requests_are_rejected(connection, mobilenet, changes, code, words):
    part = DevicePart(mobilenet, 10)
    header, tensors = _mutated(part, **changes)
    error = rpc_error(lambda: connection.infer(header, tensors, timeout=10))
    assert error.code() == code, error.details()
    assert words in error.details()
    good_header, good_tensors = part.request()
    assert connection.infer(good_header, good_tensors, timeout=10).outputs, "the server stopped serving"


@pytest.mark.parametrize("scale, zero_point, words", [
    (0.0, 0, "scale must be finite and > 0"), (float("nan"), 0, "scale must be finite"),
    (0.1, 300, "zero_point must be in [-128, 127]")])
def test_bad_int8_parameters_are_rejected(connection, mobilenet, scale, zero_point, words):
    header, tensors = _mutated(DevicePart(mobilenet, 10), "int8-per-tensor", upload_scale=scale,
                               upload_zero_point=zero_point)
    error = rpc_error(lambda: connection.infer(header, tensors, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details()


def test_compression_of_an_integer_tensor_is_rejected(connection, bert):
    part = DevicePart(bert, 1)
    header, tensors = part.request()
    mask = next(i for i, h in enumerate(header.uploads) if h.dtype == pb.DTYPE_INT64)
    header.uploads[mask].compression = pb.COMPRESSION_FP16
    header.uploads[mask].byte_length //= 4
    error = rpc_error(lambda: connection.infer(header, tensors, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "float32 tensors only" in error.details()


def test_uploading_a_constant_or_an_unread_tensor_is_rejected(connection, mobilenet):
    part = DevicePart(mobilenet, 10)
    constant = next(t for t, kind in enumerate(part.kinds) if kind == "constant")
    header, tensors = _mutated(part, upload_tensor_index=constant)
    assert "is a constant" in rpc_error(lambda: connection.infer(header, tensors, timeout=10)).details()
    header, tensors = part.request()
    graph_input, array = next(iter(part.inputs.items()))
    extra = transfer.encode_tensor(graph_input, array, "none")
    header.uploads.append(extra[0])
    tensors.append(extra)
    error = rpc_error(lambda: connection.infer(header, tensors, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "no server op reads it" in error.details()


def test_framing_errors_are_rejected(connection, mobilenet):
    part = DevicePart(mobilenet, 10)
    header, tensors = part.request()
    cut = tensors[0][0].tensor_index

    def send(messages):
        return list(connection.stub.Infer(iter(messages), timeout=10))

    too_long = [pb.InferMessage(header=header),
                pb.InferMessage(chunk=pb.TensorChunk(tensor_index=cut, data=tensors[0][1] + b"xx"))]
    error = rpc_error(lambda: send(too_long))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "more than the" in error.details()
    wrong_offset = [pb.InferMessage(header=header),
                    pb.InferMessage(chunk=pb.TensorChunk(tensor_index=cut, offset=8, data=tensors[0][1]))]
    assert "expected 0" in rpc_error(lambda: send(wrong_offset)).details()
    truncated = [pb.InferMessage(header=header),
                 pb.InferMessage(chunk=pb.TensorChunk(tensor_index=cut, data=tensors[0][1][:16]))]
    assert "ended before the tensors were complete" in rpc_error(lambda: send(truncated)).details()
    no_header = [pb.InferMessage(chunk=pb.TensorChunk(tensor_index=cut, data=b"1234"))]
    assert "first message must be an InferHeader" in rpc_error(lambda: send(no_header)).details()


def test_oversized_message_is_refused_and_server_keeps_serving(mobilenet):
    with start_server([mobilenet.data], max_message_mb=0.01) as handle:
        conn = ServerConnection(handle.address, max_message_mb=8.0, chunk_bytes=1 << 20)
        part = DevicePart(mobilenet, 2)
        header, tensors = part.request()
        assert sum(len(d) for _, d in tensors) > 0.01 * (1 << 20), "the cut is too small for this test"
        error = rpc_error(lambda: conn.infer(header, tensors, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        conn.close()
        chunked = ServerConnection(handle.address, max_message_mb=0.01)
        reply = chunked.infer(header, tensors, timeout=10)
        assert np.array_equal(reply.outputs[part.outputs[0]], part.local_outputs()[part.outputs[0]])
        chunked.close()


def test_resized_input_beyond_the_limit_is_refused(mlp):
    with start_server([mlp.data], max_request_mb=1.0) as handle:
        conn = ServerConnection(handle.address)
        part = DevicePart(mlp, 1)
        header, tensors = part.request()
        header.input_shapes.append(pb.InputShape(tensor_index=next(iter(part.inputs)), shape=[100000, 64]))
        error = rpc_error(lambda: conn.infer(header, tensors, timeout=10))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in error.details()
        header.input_shapes[0].shape[:] = [2, 65]
        error = rpc_error(lambda: conn.infer(header, tensors, timeout=10))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape signature" in error.details()
        conn.close()


def test_stream_of_requests_reports_errors_per_request(connection, mobilenet):
    parts = [DevicePart(mobilenet, cut) for cut in (5, 30, 50)]
    expected = parts[0].local_outputs()
    messages = []
    for request_id, part in enumerate(parts, start=1):
        header, tensors = part.request(request_id=request_id)
        if request_id == 2:
            header.uploads[0].dtype = pb.DTYPE_INT64
        messages.append(pb.InferMessage(header=header))
        messages.extend(transfer.chunk_messages(tensors))
    replies = {}
    current = None
    for message in connection.stub.InferStream(iter(messages), timeout=20):
        if message.WhichOneof("part") == "reply":
            current = message.reply
            assembler = transfer.TensorAssembler(current.outputs, transfer.DEFAULT_MAX_TENSOR_BYTES)
            replies[current.request_id] = [current, assembler]
        else:
            replies[current.request_id][1].add(message.chunk)
    assert sorted(replies) == [1, 2, 3]
    assert replies[2][0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "DTYPE_INT64" in replies[2][0].error.message
    for request_id in (1, 3):
        header, assembler = replies[request_id]
        assert not header.HasField("error") and assembler.complete
        (tensor_header, data), = assembler.tensors()
        assert np.array_equal(transfer.decode_tensor(tensor_header, data), expected[tensor_header.tensor_index])


def test_register_model_by_hash(connection, mobilenet):
    from tests.cloudsplit.conftest import Model, mlp_onnx

    fresh = Model("fresh", mlp_onnx(widths=(8, 16, 4), seed=99), {})
    assert not connection.stub.GetModel(pb.ModelRef(model_sha256=fresh.sha256), timeout=5).present
    assert connection.ensure_model(fresh.data, fresh.sha256, timeout=10) is True
    info = connection.stub.GetModel(pb.ModelRef(model_sha256=fresh.sha256), timeout=5)
    assert info.present and info.size_bytes == len(fresh.data) and info.num_ops == 2
    assert connection.ensure_model(fresh.data, fresh.sha256, timeout=10) is False

    def upload(digest, data, total=None):
        chunks = [pb.ModelChunk(model_sha256=digest, total_bytes=len(data) if total is None else total, data=data)]
        return connection.stub.RegisterModel(iter(chunks), timeout=10)

    other = Model("other", mlp_onnx(widths=(8, 16, 5), seed=98), {})
    wrong = rpc_error(lambda: upload(other.sha256, other.data[:-1] + b"\x00"))
    assert wrong.code() == grpc.StatusCode.INVALID_ARGUMENT and "hash to" in wrong.details()
    garbage = b"not a model" * 10
    import hashlib
    broken = rpc_error(lambda: upload(hashlib.sha256(garbage).hexdigest(), garbage))
    assert broken.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not load" in broken.details()
    huge = rpc_error(lambda: upload(other.sha256, b"", total=1 << 40))
    assert huge.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_token_authentication(mlp):
    with start_server([mlp.data], token="s3cret") as handle:
        part = DevicePart(mlp, 1)
        header, tensors = part.request()
        anonymous = ServerConnection(handle.address)
        assert rpc_error(lambda: anonymous.infer(header, tensors, 5)).code() == grpc.StatusCode.UNAUTHENTICATED
        assert rpc_error(lambda: anonymous.get_profile(mlp.sha256, 5)).code() == grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.check_health(timeout=5) > 0, "health checks stay open without a token"
        wrong = ServerConnection(handle.address, token="guess")
        assert rpc_error(lambda: wrong.infer(header, tensors, 5)).code() == grpc.StatusCode.UNAUTHENTICATED
        right = ServerConnection(handle.address, token="s3cret")
        reply = right.infer(header, tensors, 5)
        assert np.array_equal(reply.outputs[part.outputs[0]], part.local_outputs()[part.outputs[0]])
        for conn in (anonymous, wrong, right):
            conn.close()


def test_expired_deadline_is_not_run(mlp):
    with start_server([mlp.data], delay_s=0.4) as handle:
        conn = ServerConnection(handle.address)
        header, tensors = DevicePart(mlp, 1).request()
        error = rpc_error(lambda: conn.infer(header, tensors, timeout=0.15))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)
        assert handle.service.requests_run == 0, "the server ran a request whose deadline had passed"
        conn.infer(header, tensors, timeout=5)
        assert handle.service.requests_run == 1
        conn.close()


def test_concurrency_limit(mlp):
    with start_server([mlp.data], max_concurrency=1, delay_s=0.5) as handle:
        conn = ServerConnection(handle.address)
        header, tensors = DevicePart(mlp, 1).request()
        first = threading.Thread(target=conn.infer, args=(header, tensors, 5))
        first.start()
        time.sleep(0.2)
        error = rpc_error(lambda: conn.infer(header, tensors, 5))
        first.join()
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 1" in error.details()
        assert conn.infer(header, tensors, 5).outputs
        conn.close()


def test_graceful_shutdown_finishes_in_flight_requests(mlp):
    handle = start_server([mlp.data], delay_s=0.5)
    conn = ServerConnection(handle.address)
    part = DevicePart(mlp, 1)
    header, tensors = part.request()
    results = {}

    def call():
        try:
            results["reply"] = conn.infer(header, tensors, 5)
        except grpc.RpcError as error:
            results["error"] = error

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.2)
    stopper = threading.Thread(target=handle.stop, args=(3.0,))
    stopper.start()
    time.sleep(0.1)
    health = health_pb2_grpc.HealthStub(conn.channel)
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    worker.join()
    stopper.join()
    assert "reply" in results, results.get("error")
    assert np.array_equal(results["reply"].outputs[part.outputs[0]], part.local_outputs()[part.outputs[0]])
    conn.close()


def test_concurrent_requests_are_batched_and_match(mlp):
    """One compute slot, a 100 ms batch window and 12 concurrent requests: they run as batches, and
    every reply equals the all-local answer for its own input."""
    with start_server([mlp.data], compute_slots=1, max_concurrency=32, batch_window_ms=100) as handle:
        part = DevicePart(mlp, 1)
        input_index = next(iter(part.inputs))
        rng = np.random.default_rng(5)
        inputs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(12)]
        expected = []
        for x in inputs:
            part.interpreter.set_tensor(input_index, x)
            part.interpreter.invoke()
            expected.append(part.interpreter.get_tensor(part.outputs[0]))
        conns = [ServerConnection(handle.address) for _ in range(4)]
        replies: list = [None] * len(inputs)
        barrier = threading.Barrier(len(inputs))

        def call(i):
            part_i = DevicePart(mlp, 1)
            part_i.inputs = {input_index: inputs[i]}
            header, tensors = part_i.request(request_id=i)
            barrier.wait()
            replies[i] = conns[i % len(conns)].infer(header, tensors, 10)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i, reply in enumerate(replies):
            assert reply.header.request_id == i
            np.testing.assert_allclose(reply.outputs[part.outputs[0]], expected[i], rtol=1e-5, atol=1e-6)
        assert max(r.header.batch_size for r in replies) > 1, "no request was batched"
        assert handle.service.batches_run >= 1
        for conn in conns:
            conn.close()


def test_batches_run_in_power_of_two_buckets():
    from cloudsplit.server import batch_bucket

    assert [batch_bucket(n, 16) for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [1, 2, 4, 4, 8, 8, 16, 16]
    assert batch_bucket(5, 6) == 6 and batch_bucket(12, 12) == 12


def test_interpreters_stay_warm_per_batch_size(mlp):
    """An interpreter allocated for one batch size is kept for it: going back to a size seen before
    reuses that interpreter instead of re-allocating another one."""
    from cloudsplit.server import ModelEntry

    entry = ModelEntry(mlp.data, "mlp")
    one, four = ((1, 64),), ((4, 64),)
    first = entry.pool.acquire(one)
    entry.pool.release(first)
    batched = entry.pool.acquire(four)
    assert batched[0] is not first[0] and batched[0].get_input_details()[0]["shape"].tolist() == [4, 64]
    entry.pool.release(batched)
    again = entry.pool.acquire(one)
    assert again[0] is first[0] and entry.pool.created == 2
    assert entry.pool.acquire(four)[0] is batched[0]
    busy = entry.pool.acquire(one)  # the warm one is taken: a second one is made for the same size
    assert busy[0] is not first[0] and entry.pool.created == 3


def test_interpreters_stay_at_the_compute_slots_however_many_requests_are_in_flight(mobilenet):
    """Twelve clients at once on a server with two compute slots: requests past the slots wait for
    one, so the model holds two interpreters, not one per request ever in flight (which made the
    server's memory step up whenever more requests than before arrived together)."""
    with start_server([mobilenet.data], compute_slots=2, max_concurrency=32, batching=False) as handle:
        part = DevicePart(mobilenet, 20)
        expected = part.local_outputs()[part.outputs[0]]
        header, tensors = part.request()
        barrier = threading.Barrier(12)
        answers = []

        def client():
            conn = ServerConnection(handle.address)
            barrier.wait()
            for _ in range(8):
                answers.append(conn.infer(header, tensors, 30).outputs[part.outputs[0]])
            conn.close()

        threads = [threading.Thread(target=client) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(answers) == 96 and all(np.array_equal(a, expected) for a in answers)
        (entry,) = handle.service.registry.entries()
        assert entry.pool.created <= 2, f"{entry.pool.created} interpreters for 2 compute slots"


def test_padded_batch_answers_each_request(mlp):
    """Three requests stacked into a bucket of four (one padding row): each gets its own answer."""
    with start_server([mlp.data], compute_slots=1, max_concurrency=8) as handle:
        service = handle.service
        part = DevicePart(mlp, 1)
        input_index = next(iter(part.inputs))
        rng = np.random.default_rng(8)
        requests, expected = [], []
        for i in range(3):
            x = rng.standard_normal((1, 64)).astype(np.float32)
            part.interpreter.set_tensor(input_index, x)
            part.interpreter.invoke()
            expected.append(part.interpreter.get_tensor(part.outputs[0]))
            part_i = DevicePart(mlp, 1)
            part_i.inputs = {input_index: x}
            header, tensors = part_i.request(request_id=i)
            request = service._validate_header(header)
            request.uploads = [(h.tensor_index, transfer.decode_tensor(h, data)) for h, data in tensors]
            requests.append(request)
        results = service.runner.run_stacked(requests)
        assert [r.batch_size for r in results] == [3, 3, 3]
        for result, want in zip(results, expected):
            np.testing.assert_allclose(result.outputs[0][1], want, rtol=1e-5, atol=1e-6)
        assert ((4, 64),) in requests[0].entry.pool.configs


def test_batch_splits_into_power_of_two_batches(mlp):
    """Seven requests run as batches of 4, 2 and 1 (no padding), each answer its own."""
    with start_server([mlp.data], compute_slots=1, max_concurrency=8) as handle:
        service = handle.service
        part = DevicePart(mlp, 1)
        input_index = next(iter(part.inputs))
        rng = np.random.default_rng(12)
        requests, expected = [], []
        for i in range(7):
            x = rng.standard_normal((1, 64)).astype(np.float32)
            part.interpreter.set_tensor(input_index, x)
            part.interpreter.invoke()
            expected.append(part.interpreter.get_tensor(part.outputs[0]))
            part_i = DevicePart(mlp, 1)
            part_i.inputs = {input_index: x}
            header, tensors = part_i.request(request_id=i)
            request = service._validate_header(header)
            request.uploads = [(h.tensor_index, transfer.decode_tensor(h, data)) for h, data in tensors]
            requests.append(request)
        results = service.runner.run_in_buckets(requests)
        assert [r.batch_size for r in results] == [4, 4, 4, 4, 2, 2, 1]
        for result, want in zip(results, expected):
            np.testing.assert_allclose(result.outputs[0][1], want, rtol=1e-5, atol=1e-6)
        assert {((4, 64),), ((2, 64),), ((1, 64),)} <= set(requests[0].entry.pool.configs)


def test_fixed_batch_model_runs_concurrent_requests_one_by_one(mobilenet):
    with start_server([mobilenet.data], compute_slots=1) as handle:
        part = DevicePart(mobilenet, 20)
        expected = part.local_outputs()
        header, tensors = part.request()
        conns = [ServerConnection(handle.address) for _ in range(6)]
        replies = [None] * len(conns)

        def call(i):
            replies[i] = conns[i].infer(header, tensors, 10)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(conns))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for reply in replies:
            assert np.array_equal(reply.outputs[part.outputs[0]], expected[part.outputs[0]])
        assert handle.service.batches_run == 0
        for conn in conns:
            conn.close()


def test_compression_round_trip_error_bound():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 1000)) * 3).astype(np.float32)
    encoded = compression.encode(x, "int8-per-tensor")
    back = compression.decode(encoded.data, "int8-per-tensor", np.float32, x.shape, encoded.scale, encoded.zero_point)
    assert np.max(np.abs(back - x)) <= encoded.scale / 2 * 1.0001
    relu = np.maximum(x, 0)
    encoded = compression.encode(relu, "int8-per-tensor")
    back = compression.decode(encoded.data, "int8-per-tensor", np.float32, x.shape, encoded.scale, encoded.zero_point)
    assert np.all(back[relu == 0] == 0), "zero must survive int8 exactly"
    half = compression.encode(x, "fp16")
    assert len(half.data) == x.size * 2
    tokens = np.arange(6, dtype=np.int64)
    assert compression.encode(tokens, "int8").mode == "none"


def test_per_channel_int8_bounds_each_channel_by_its_own_range():
    # NHWC activations whose channels span three orders of magnitude, as after a depthwise conv.
    rng = np.random.default_rng(1)
    ranges = np.geomspace(0.01, 10.0, 24).astype(np.float32)
    x = np.maximum(rng.standard_normal((1, 8, 8, 24)).astype(np.float32) * ranges, 0)
    x[..., 3] -= 0.5 * ranges[3]  # one channel with negative values too
    encoded = compression.encode(x, "int8")
    assert encoded.mode == "int8" and len(encoded.channel_scales) == 24 and len(encoded.data) == x.size
    back = compression.decode(encoded.data, "int8", np.float32, x.shape, channel_scales=encoded.channel_scales,
                              channel_zero_points=encoded.channel_zero_points)
    for c in range(24):
        span = max(float(x[..., c].max()), 0.0) - min(float(x[..., c].min()), 0.0)
        assert np.max(np.abs(back[..., c] - x[..., c])) <= span / 510 * 1.001 + 1e-12
    assert np.all(back[x == 0] == 0), "zero must survive int8 exactly"
    tensor = compression.encode(x, "int8-per-tensor")
    back_tensor = compression.decode(tensor.data, "int8-per-tensor", np.float32, x.shape, tensor.scale,
                                     tensor.zero_point)
    narrow = x[..., :6]
    assert np.max(np.abs(back[..., :6] - narrow)) < np.max(np.abs(back_tensor[..., :6] - narrow)) / 50
    # the partitioner is charged the data plus 8 header bytes per channel
    assert compression.wire_bytes("int8", np.float32, x.shape) == x.size + 8 * 24
    # too few values per channel: one map for the tensor
    assert compression.encode(x[0, 0, :4], "int8").mode == "int8-per-tensor"
    assert compression.wire_bytes("int8", np.float32, (4, 24)) == 4 * 24


def test_per_channel_int8_split_matches_local_within_its_bound(connection, mobilenet):
    part = DevicePart(mobilenet, 10)
    header, tensors = part.request("int8")
    assert header.uploads[0].compression == pb.COMPRESSION_INT8_PER_CHANNEL
    assert len(header.uploads[0].channel_scales) == header.uploads[0].shape[-1]
    reply = connection.infer(header, tensors, timeout=10)
    for t, expected in part.local_outputs().items():
        worst = float(np.max(np.abs(reply.outputs[t] - expected))) / float(np.max(np.abs(expected)))
        assert 0 < worst <= RELATIVE_ERROR_BOUND["int8"]


@pytest.mark.parametrize("mutate, words", [
    (lambda h: h.channel_scales.pop(), "one scale and one zero point per channel"),
    (lambda h: h.channel_zero_points.append(0), "one scale and one zero point per channel"),
    (lambda h: h.channel_scales.__setitem__(2, 0.0), "channel 2 has 0.0"),
    (lambda h: h.channel_scales.__setitem__(1, float("inf")), "finite and > 0; channel 1"),
    (lambda h: h.channel_zero_points.__setitem__(4, -129), "channel 4 has -129"),
    (lambda h: setattr(h, "compression", pb.COMPRESSION_FP16), "per-channel int8 compression only"),
])
def test_bad_per_channel_int8_parameters_are_rejected(connection, mobilenet, mutate, words):
    part = DevicePart(mobilenet, 10)
    header, tensors = part.request("int8")
    mutate(header.uploads[0])
    error = rpc_error(lambda: connection.infer(header, tensors, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details(), error.details()


def test_batcher_answers_everyone_and_frees_its_slots():
    """Many submitters, two slots: every submitter gets its own result, never more than two batches
    run at once, and once all are answered both slots are free again (none leaked to a successor
    that another leader's batch had already answered)."""
    from cloudsplit.batching import Batcher

    lock = threading.Lock()
    running, peak = [0], [0]

    def run_batch(items):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return [item * 10 for item in items]

    batcher = Batcher(run_batch, max_parallel=2, max_batch=4)
    answers = {}

    def client(k):
        for j in range(20):
            result, size = batcher.submit(k * 100 + j)
            answers[k * 100 + j] = (result, size)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 240 and all(result == item * 10 for item, (result, _) in answers.items())
    assert 1 <= peak[0] <= 2 and max(size for _, size in answers.values()) > 1
    assert batcher._running == 0 and batcher.waiting == 0

"""Pipeline serving (``cloudsplit serve --stages K``): the server side of split inference run by stage
workers on Ray, over real gRPC on loopback, against the runtime's own all-local answer."""
from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest

import edge
from cloudsplit import transfer
from cloudsplit.connection import ServerConnection
from cloudsplit.protos import split_pb2 as pb
from cloudsplit.server import PipelineOptions, start_server
from tests.cloudsplit.conftest import DevicePart, Model, mlp_onnx

ray = pytest.importorskip("cloudsplit.training").import_ray()

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    from cloudsplit import training

    training.ensure_ray(None, num_cpus=4)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def wide():
    """Weights dominate: 3 layers of 512 x 512 floats (1 MiB each)."""
    rng = np.random.default_rng(5)
    return Model("wide", mlp_onnx(widths=(64, 512, 512, 512, 10)),
                 {"input": rng.standard_normal((1, 64)).astype(np.float32)})


@pytest.fixture(scope="module")
def residual():
    """Six ops whose skip connection (h1, read by the Add) crosses two stage boundaries when every
    op is a stage of its own."""
    import hashlib

    from converter.writer import write_model
    from tests.fixtures.pipeline import residual_mlp

    model = Model.__new__(Model)
    model.name, model.data = "residual", write_model(residual_mlp(batch=4)[0])
    model.sha256 = hashlib.sha256(model.data).hexdigest()
    model.feeds = {"x": np.random.default_rng(8).standard_normal((4, 6)).astype(np.float32)}
    return model


@pytest.mark.parametrize("model_name,stages", [("mobilenet", 3), ("resnet", 4), ("bert", 2), ("residual", 6)])
def test_staged_server_matches_local_at_every_cut(request, model_name, stages):
    model = request.getfixturevalue(model_name)
    probe = DevicePart(model, 1)
    reference = probe.local_outputs()
    with start_server([model.data], pipeline=PipelineOptions(stages=stages)) as handle:
        entry = handle.service.registry.get(model.sha256)
        assert len(entry.stages.actors) == stages and entry.pool is None
        connection = ServerConnection(handle.address)
        for cut in range(0, len(probe.ops), 3 if len(probe.ops) > 12 else 1):  # 0: all on the server
            header, tensors = DevicePart(model, cut).request()
            reply = connection.infer(header, tensors, timeout=30)
            for t, expected in reference.items():
                assert np.array_equal(reply.outputs[t], expected), f"cut {cut}: staged server differs from local"
        profile = connection.get_profile(model.sha256, timeout=60)
        assert len(profile.op_ms) == len(probe.ops) and sum(profile.op_ms) > 0
        connection.close()


def test_a_stream_of_concurrent_batched_requests_flows_through_the_stages(mlp):
    interpreter = edge.Interpreter(model_content=mlp.data)
    interpreter.allocate_tensors()
    ops = interpreter.op_details()
    cut = ops[1]["inputs"][0]  # after the first layer
    output = interpreter.get_output_details()[0]["index"]
    rng = np.random.default_rng(2)
    hidden = [rng.standard_normal((1, 256)).astype(np.float32) for _ in range(24)]
    expected = []
    for h in hidden:
        interpreter.set_tensor(cut, h)
        interpreter.invoke_ops(list(range(1, len(ops))))
        expected.append(interpreter.get_tensor(output))
    with start_server([mlp.data], pipeline=PipelineOptions(stages=3), batching=True, batch_window_ms=5.0,
                      max_concurrency=16) as handle:
        connection = ServerConnection(handle.address)

        def call(i):
            tensor = transfer.encode_tensor(cut, hidden[i], "none")
            header = pb.InferHeader(request_id=i, model_sha256=mlp.sha256, server_ops=list(range(1, len(ops))),
                                    uploads=[tensor[0]], outputs=[output])
            return connection.infer(header, [tensor], timeout=30).outputs[output]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(call, range(len(hidden))))
        service = handle.service
        connection.close()
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=f"request {i}")
    assert service.batches_run >= 1  # some requests ran stacked, as one batch through the stages


def test_a_model_over_one_workers_memory_is_served_by_stages_that_fit(wide):
    with start_server([wide.data], pipeline=PipelineOptions(stages=1)) as handle:
        whole = handle.service.registry.get(wide.sha256).stages.memory[0]
    limit = whole // 2
    with pytest.raises((ValueError, MemoryError), match=f"memory limit of {limit} bytes"):
        start_server([wide.data], pipeline=PipelineOptions(stages=1, memory_limit=limit))
    probe = DevicePart(wide, 1)
    reference = probe.local_outputs()
    with start_server([wide.data], pipeline=PipelineOptions(stages=4, memory_limit=limit)) as handle:
        entry = handle.service.registry.get(wide.sha256)
        measured = ray.get([a.memory_bytes.remote() for a in entry.stages.actors])
        assert max(measured) <= limit < whole
        connection = ServerConnection(handle.address)
        header, tensors = probe.request()
        reply = connection.infer(header, tensors, timeout=30)
        for t, expected in reference.items():
            assert np.array_equal(reply.outputs[t], expected)
        connection.close()


def test_other_batch_sizes_run_through_the_stages_and_bad_shapes_are_refused(mlp):
    interpreter = edge.Interpreter(model_content=mlp.data)
    ops = interpreter.op_details()
    graph_input = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    x = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    interpreter.resize_tensor_input(graph_input, [3, 64])
    interpreter.allocate_tensors()
    interpreter.set_tensor(graph_input, x)
    interpreter.invoke()
    expected = interpreter.get_tensor(output)

    def header(array, shape):
        tensor = transfer.encode_tensor(graph_input, array, "none")
        return pb.InferHeader(model_sha256=mlp.sha256, server_ops=list(range(len(ops))), uploads=[tensor[0]],
                              outputs=[output], input_shapes=[pb.InputShape(tensor_index=graph_input, shape=shape)]), \
            [tensor]

    with start_server([mlp.data], pipeline=PipelineOptions(stages=2)) as handle:
        connection = ServerConnection(handle.address)
        with pytest.raises(grpc.RpcError) as caught:  # the model takes 64 features
            connection.infer(*header(np.zeros((2, 63), np.float32), [2, 63]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cannot take shape [2, 63]" in caught.value.details()
        reply = connection.infer(*header(x, [3, 64]), timeout=30)  # each stage allocated for a batch of 3
        assert np.array_equal(reply.outputs[output], expected)
        connection.close()


def test_serve_command_refuses_bad_pipeline_options(tmp_path, mlp, capsys):
    from cloudsplit.server import main

    mlp.write(tmp_path)
    assert main(["--models", str(tmp_path), "--port", "0", "--host", "127.0.0.1", "--memory-limit", "1000"]) == 1
    assert "--memory-limit goes with --stages" in capsys.readouterr().err
    assert main(["--models", str(tmp_path), "--port", "0", "--host", "127.0.0.1", "--stages", "99"]) == 1
    assert "--stages must be between 1 and the model's" in capsys.readouterr().err

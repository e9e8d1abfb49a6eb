"""edge.Interpreter against tiny models whose outputs are computed here in NumPy."""
import gc
import weakref

import numpy as np
import pytest

import edge
import tiny_models


def relu_add(x, bias):
    return np.maximum(x + bias, 0).astype(np.float32)


@pytest.fixture
def interpreter(add_relu_model):
    with edge.Interpreter(model_content=add_relu_model[0]) as interp:
        yield interp


def index_of(interp, name):
    return next(d["index"] for d in interp.get_tensor_details() if d["name"] == name)


def test_input_and_output_details(interpreter):
    (x,), (y,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert x["name"] == "x" and y["name"] == "y"
    assert x["index"] == 0 and y["index"] == 3
    assert x["shape"].dtype == np.int32 and x["shape"].tolist() == [1, 4]
    assert x["shape_signature"].tolist() == [-1, 4]
    assert x["dtype"] is np.float32
    assert x["quantization"] == (0.0, 0)
    assert x["quantization_parameters"]["scales"].size == 0
    assert x["quantization_parameters"]["quantized_dimension"] == 0


def test_per_channel_quantization_parameters(two_inputs_model):
    interp = edge.Interpreter(model_content=two_inputs_model)
    codes = next(d for d in interp.get_input_details() if d["name"] == "codes")
    assert codes["dtype"] is np.int8
    params = codes["quantization_parameters"]
    np.testing.assert_array_equal(params["scales"], np.array([0.5, 0.25], np.float32))
    np.testing.assert_array_equal(params["zero_points"], [0, 3])
    assert params["quantized_dimension"] == 0
    # Per-channel parameters have no single (scale, zero_point): TFLite reports (0.0, 0) then.
    assert codes["quantization"] == (0.0, 0)


def test_tensor_details_cover_every_tensor(interpreter):
    names = [d["name"] for d in interpreter.get_tensor_details()]
    assert names == ["x", "bias", "sum", "y"]
    kinds = {d["name"]: d["kind"] for d in interpreter.get_tensor_details()}
    assert kinds["bias"] == "constant" and kinds["x"] == "activation"


def test_set_get_round_trip_and_invoke(interpreter, add_relu_model):
    bias = add_relu_model[1]
    interpreter.allocate_tensors()
    x = np.array([[1.5, -2.0, 0.25, -0.1]], np.float32)
    interpreter.set_tensor(0, x)
    got = interpreter.get_tensor(0)
    np.testing.assert_array_equal(got, x)
    got[...] = 7  # a copy: the tensor keeps its value
    np.testing.assert_array_equal(interpreter.get_tensor(0), x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(3), relu_add(x, bias), rtol=0, atol=1e-6)
    np.testing.assert_allclose(interpreter.get_tensor(2), x + bias, rtol=0, atol=1e-6)


def test_set_tensor_wrong_dtype_names_tensor_and_types(interpreter):
    interpreter.allocate_tensors()
    with pytest.raises(edge.InvalidArgumentError) as error:
        interpreter.set_tensor(0, np.zeros((1, 4), np.float64))
    message = str(error.value)
    assert "'x'" in message and "float32" in message and "float64" in message


def test_set_tensor_wrong_shape_names_tensor_and_shapes(interpreter):
    interpreter.allocate_tensors()
    with pytest.raises(edge.InvalidArgumentError) as error:
        interpreter.set_tensor(0, np.zeros((1, 5), np.float32))
    message = str(error.value)
    assert "'x'" in message and "[1, 4]" in message and "[1, 5]" in message
    assert "resize_tensor_input" in message  # x's batch is dynamic


@pytest.mark.parametrize("index", [99, -1, "x", 1.5])
def test_bad_tensor_index(interpreter, index):
    interpreter.allocate_tensors()
    with pytest.raises(edge.InvalidArgumentError, match="index"):
        interpreter.set_tensor(index, np.zeros((1, 4), np.float32))
    with pytest.raises(edge.InvalidArgumentError, match="index"):
        interpreter.get_tensor(index)


def test_invoke_before_allocate_is_bad_state(interpreter):
    with pytest.raises(edge.BadStateError, match="allocate_tensors"):
        interpreter.invoke()


def test_invoke_after_resize_needs_allocate(interpreter):
    interpreter.allocate_tensors()
    interpreter.resize_tensor_input(0, [2, 4])
    with pytest.raises(edge.BadStateError):
        interpreter.invoke()


@pytest.mark.parametrize("content", [
    b"",
    b"EDG1",
    bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)),
    b"\x00" * 256,
], ids=["empty", "tiny", "random", "zeros"])
def test_bad_model_bytes_are_invalid_model(content):
    with pytest.raises(edge.InvalidModelError) as error:
        edge.Interpreter(model_content=content)
    assert str(error.value).strip()


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.99])
def test_truncated_model_file_is_invalid_model(tmp_path, add_relu_model, keep):
    data = add_relu_model[0]
    path = tmp_path / "truncated.edge"
    path.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(edge.InvalidModelError) as error:
        edge.Interpreter(model_path=path)
    assert str(error.value).strip()


def test_wrong_file_identifier(add_relu_model):
    data = bytearray(add_relu_model[0])
    data[4:8] = b"TFL3"
    with pytest.raises(edge.InvalidModelError):
        edge.Interpreter(model_content=bytes(data))


def test_missing_file_is_model_io_error(tmp_path):
    missing = tmp_path / "nope.edge"
    with pytest.raises(edge.ModelIOError) as error:
        edge.Interpreter(model_path=missing)
    assert "nope.edge" in str(error.value)
    assert isinstance(error.value, OSError) and isinstance(error.value, edge.EdgeError)


@pytest.mark.parametrize("kwargs", [{}, {"model_path": "a", "model_content": b"b"}, {"model_content": "text"},
                                    {"model_content": 5}])
def test_constructor_argument_errors(kwargs):
    with pytest.raises(edge.InvalidArgumentError):
        edge.Interpreter(**kwargs)


@pytest.mark.parametrize("threads", [0, -2, 1.5])
def test_bad_num_threads(add_relu_model, threads):
    with pytest.raises(edge.InvalidArgumentError, match="num_threads"):
        edge.Interpreter(model_content=add_relu_model[0], num_threads=threads)


def test_model_path_and_content_agree(add_relu_path, add_relu_model):
    x = np.random.default_rng(3).standard_normal((1, 4)).astype(np.float32)
    results = []
    for kwargs in ({"model_path": add_relu_path}, {"model_path": str(add_relu_path)},
                   {"model_content": add_relu_model[0]}, {"model_content": bytearray(add_relu_model[0])}):
        with edge.Interpreter(**kwargs) as interp:
            interp.allocate_tensors()
            interp.set_tensor(0, x)
            interp.invoke()
            results.append(interp.get_tensor(3))
    for result in results:
        np.testing.assert_array_equal(result, results[0])
    np.testing.assert_allclose(results[0], relu_add(x, add_relu_model[1]), atol=1e-6)


def test_model_content_outlives_callers_reference(add_relu_model):
    # A 64-byte aligned buffer is lent to the runtime rather than copied: the Interpreter must keep it.
    data = add_relu_model[0]
    storage = np.zeros(len(data) + 64, np.uint8)
    start = (-storage.ctypes.data) % 64
    aligned = storage[start:start + len(data)]
    aligned[:] = np.frombuffer(data, np.uint8)
    interp = edge.Interpreter(model_content=aligned)
    del storage, aligned
    gc.collect()
    np.zeros(len(data) * 4, np.uint8)  # reuse of freed memory would show up as wrong weights
    interp.allocate_tensors()
    x = np.ones((1, 4), np.float32)
    interp.set_tensor(0, x)
    interp.invoke()
    np.testing.assert_allclose(interp.get_tensor(3), relu_add(x, add_relu_model[1]), atol=1e-6)


def test_signature_list(two_inputs_model):
    interp = edge.Interpreter(model_content=two_inputs_model)
    assert interp.get_signature_list() == {
        "infer": {"inputs": ["a", "b"], "outputs": ["sum", "neg"]},
        "add_only": {"inputs": ["a", "b"], "outputs": ["sum"]},
    }


def test_signature_runner_computes_outputs(two_inputs_model):
    interp = edge.Interpreter(model_content=two_inputs_model)
    rng = np.random.default_rng(5)
    a, b = (rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    outputs = interp.get_signature_runner("infer")(a=a, b=b)
    assert set(outputs) == {"sum", "neg"}
    np.testing.assert_allclose(outputs["sum"], a + b, atol=1e-6)
    np.testing.assert_allclose(outputs["neg"], -(a * b), atol=1e-6)
    only_sum = interp.get_signature_runner("add_only")(a=b, b=b)
    assert list(only_sum) == ["sum"]
    np.testing.assert_allclose(only_sum["sum"], 2 * b, atol=1e-6)


def test_signature_runner_details(two_inputs_model):
    runner = edge.Interpreter(model_content=two_inputs_model).get_signature_runner()
    assert list(runner.get_input_details()) == ["a", "b"]
    assert runner.get_output_details()["neg"]["shape"].tolist() == [2, 3]


def test_signature_runner_missing_and_unknown_inputs(two_inputs_model):
    runner = edge.Interpreter(model_content=two_inputs_model).get_signature_runner("infer")
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(edge.InvalidArgumentError) as error:
        runner(a=a)
    assert "missing inputs ['b']" in str(error.value)
    with pytest.raises(edge.InvalidArgumentError) as error:
        runner(a=a, b=a, c=a)
    assert "unknown inputs ['c']" in str(error.value)
    with pytest.raises(edge.InvalidArgumentError) as error:
        runner(c=a)
    assert "missing inputs ['a', 'b']" in str(error.value) and "unknown inputs ['c']" in str(error.value)


def test_unknown_signature_key(two_inputs_model):
    interp = edge.Interpreter(model_content=two_inputs_model)
    with pytest.raises(edge.InvalidArgumentError, match="add_only"):
        interp.get_signature_runner("train")


def test_signature_runner_resizes_dynamic_batch(add_relu_model):
    runner = edge.Interpreter(model_content=add_relu_model[0]).get_signature_runner()
    for batch in (3, 1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 4)).astype(np.float32)
        np.testing.assert_allclose(runner(x=x)["y"], relu_add(x, add_relu_model[1]), atol=1e-6)


def test_resize_tensor_input_dynamic_batch(interpreter, add_relu_model):
    interpreter.resize_tensor_input(0, [3, 4])
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["shape"].tolist() == [3, 4]
    assert interpreter.get_output_details()[0]["shape"].tolist() == [3, 4]
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 6
    interpreter.set_tensor(0, x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(3), relu_add(x, add_relu_model[1]), atol=1e-6)


def test_resize_static_dimension_is_rejected(interpreter):
    with pytest.raises(edge.InvalidArgumentError):
        interpreter.resize_tensor_input(0, [2, 5])
    with pytest.raises(edge.InvalidArgumentError):
        interpreter.resize_tensor_input(0, [2, 4, 1])
    with pytest.raises(edge.InvalidArgumentError):
        interpreter.resize_tensor_input(0, ["a", 4])


def test_resize_fully_static_model():
    data, _ = tiny_models.add_relu(dynamic_batch=False)
    interp = edge.Interpreter(model_content=data)
    with pytest.raises(edge.InvalidArgumentError):
        interp.resize_tensor_input(0, [2, 4])


def test_threads_give_identical_results():
    data, bias = tiny_models.add_relu(width=50_000, seed=2)
    x = np.random.default_rng(9).standard_normal((4, 50_000)).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        interp = edge.Interpreter(model_content=data, num_threads=threads)
        assert interp.num_threads == threads
        results[threads] = interp.get_signature_runner()(x=x)["y"]
    np.testing.assert_array_equal(results[1], results[2])
    np.testing.assert_array_equal(results[1], results[3])
    np.testing.assert_allclose(results[1], relu_add(x, bias), atol=1e-6)


def test_tensor_views_are_zero_copy(interpreter, add_relu_model):
    interpreter.allocate_tensors()
    x_view, y_view = interpreter.tensor(0), interpreter.tensor(3)
    x_view()[...] = [[1, -1, 2, -2]]
    np.testing.assert_array_equal(interpreter.get_tensor(0), [[1, -1, 2, -2]])
    interpreter.invoke()
    expected = relu_add(np.array([[1, -1, 2, -2]], np.float32), add_relu_model[1])
    np.testing.assert_allclose(y_view(), expected, atol=1e-6)
    output = y_view()
    interpreter.set_tensor(0, np.zeros((1, 4), np.float32))
    interpreter.invoke()
    np.testing.assert_allclose(output, relu_add(np.zeros((1, 4), np.float32), add_relu_model[1]), atol=1e-6)


def test_allocate_refuses_while_a_view_is_alive(interpreter):
    interpreter.allocate_tensors()
    view = interpreter.tensor(0)()
    part = view[0, 1:]
    del view
    with pytest.raises(edge.BadStateError, match="tensor()"):
        interpreter.allocate_tensors()  # a slice still points into the arena
    del part
    interpreter.allocate_tensors()


def test_close_with_live_view_keeps_memory_valid(add_relu_model):
    interp = edge.Interpreter(model_content=add_relu_model[0])
    interp.allocate_tensors()
    interp.set_tensor(0, np.full((1, 4), 3.0, np.float32))
    view = interp.tensor(0)()
    interp.close()
    assert interp.closed
    gc.collect()
    np.testing.assert_array_equal(view, np.full((1, 4), 3.0, np.float32))


def test_closed_interpreter_raises(add_relu_model):
    interp = edge.Interpreter(model_content=add_relu_model[0])
    interp.close()
    interp.close()
    for call in (interp.allocate_tensors, interp.invoke, interp.get_input_details, interp.memory_info):
        with pytest.raises(edge.BadStateError, match="closed"):
            call()


def test_many_interpreters_are_freed():
    """200 interpreters made and dropped in turn: the process's peak memory grows by about one
    interpreter, not 200 (each holds a ~200 KiB arena and a thread pool, so a leak shows as tens of
    MiB), and no Python object outlives its last reference."""
    from edge.measure import PeakMemory

    data, _ = tiny_models.add_relu(width=16384)

    def make_and_drop(count: int) -> list[weakref.ref]:
        refs = []
        for _ in range(count):
            interp = edge.Interpreter(model_content=data, num_threads=2)
            interp.allocate_tensors()
            refs.append(weakref.ref(interp))
            del interp
        gc.collect()
        return refs

    make_and_drop(10)  # the allocator's and the thread stacks' first pages
    memory = PeakMemory()
    memory.start()
    refs = make_and_drop(200)
    assert all(ref() is None for ref in refs)
    assert memory.growth_bytes() < 8 << 20, f"peak grew by {memory.growth_bytes() >> 10} KiB"


def test_memory_info(two_inputs_model):
    interp = edge.Interpreter(model_content=two_inputs_model)
    interp.allocate_tensors()
    memory = interp.memory_info()
    assert memory["model_bytes"] == len(two_inputs_model)
    assert 0 < memory["arena_bytes"] <= memory["naive_bytes"]
    # Six [2, 3] float32 activations (a, b, codes is int8 so 6 bytes, sum, product, neg).
    assert memory["naive_bytes"] >= 5 * 24 + 6
    assert memory["persistent_bytes"] >= 0


def test_profile(add_relu_model):
    interp = edge.Interpreter(model_content=add_relu_model[0], profiling=True)
    interp.allocate_tensors()
    interp.set_tensor(0, np.ones((1, 4), np.float32))
    for _ in range(3):
        interp.invoke()
    entries = interp.profile()
    assert [e["op"] for e in entries] == ["BINARY", "UNARY"]
    assert [e["index"] for e in entries] == [0, 1]
    assert all(e["runs"] == 3 for e in entries)
    assert all(e["ms"] >= 0 and e["total_ms"] >= e["last_ms"] for e in entries)
    assert entries[0]["input_shapes"] == [(1, 4), (4,)] and entries[0]["output_shapes"] == [(1, 4)]
    assert entries[0]["flops"] == 4
    interp.reset_profile()
    assert all(e["runs"] == 0 for e in interp.profile())


def test_profile_needs_profiling_on(interpreter):
    interpreter.allocate_tensors()
    with pytest.raises(edge.BadStateError, match="profiling"):
        interpreter.profile()
    interpreter.profiling = True
    interpreter.set_tensor(0, np.ones((1, 4), np.float32))
    interpreter.invoke()
    assert [e["runs"] for e in interpreter.profile()] == [1, 1]


def test_invoke_ops_runs_a_subset(interpreter, add_relu_model):
    bias = add_relu_model[1]
    interpreter.allocate_tensors()
    x = np.array([[-3, 1, 2, -0.5]], np.float32)
    interpreter.set_tensor(0, x)
    interpreter.invoke_ops([0])
    np.testing.assert_allclose(interpreter.get_tensor(2), x + bias, atol=1e-6)
    # The second op alone, from a "sum" the caller sets (the server half of a split).
    interpreter.set_tensor(2, np.array([[-1, 1, -2, 2]], np.float32))
    interpreter.invoke_ops([1])
    np.testing.assert_array_equal(interpreter.get_tensor(3), [[0, 1, 0, 2]])
    with pytest.raises(edge.InvalidArgumentError, match="out of range"):
        interpreter.invoke_ops([2])


def test_description_and_metadata(interpreter):
    assert interpreter.description == "test model"
    assert interpreter.metadata() == {"purpose": "edge python API tests"}


def test_runtime_strings():
    assert edge.runtime_version()
    assert edge.runtime_isa()


def test_constant_views_are_read_only(add_relu_path, add_relu_model):
    # model_path maps the file read-only: a write through a view would crash the process.
    interp = edge.Interpreter(model_path=add_relu_path)
    interp.allocate_tensors()
    bias = interp.tensor(1)()
    np.testing.assert_array_equal(bias, add_relu_model[1])
    assert not bias.flags.writeable
    with pytest.raises(ValueError):
        bias[0] = 1.0
    np.testing.assert_array_equal(interp.get_tensor(1), add_relu_model[1])


def test_data_access_before_allocate_is_bad_state(interpreter):
    with pytest.raises(edge.BadStateError, match="before allocate"):
        interpreter.set_tensor(0, np.zeros((1, 4), np.float32))
    with pytest.raises(edge.BadStateError, match="before allocate"):
        interpreter.get_tensor(3)


def test_constants_cannot_be_set(interpreter):
    interpreter.allocate_tensors()
    with pytest.raises(edge.InvalidArgumentError, match="'bias'.*constant"):
        interpreter.set_tensor(1, np.zeros(4, np.float32))

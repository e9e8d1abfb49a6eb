"""Threads on whole networks: any num_threads gives bit-identical outputs, and two interpreters of
two threads each run at once in one process (more threads than this machine's cores) without
deadlock and with the same outputs.

The thread pool cuts each op's work into tiles that depend on the op's shape only and lets the
threads take them in any order (cruntime/src/threadpool.c); these tests are what holds it to
"results never depend on the thread count or on scheduling"."""
import threading

import numpy as np
import pytest

import edge

converter = pytest.importorskip("converter")
pytest.importorskip("onnx")
from tests.fixtures import models as fixtures  # noqa: E402

# Large enough that every op family crosses its parallel threshold (conv, GEMM, LSTM gates,
# attention, elementwise), small enough for a unit test.
NETWORKS = {
    "mobilenet_v2": dict(width=0.5, resolution=96, num_classes=100),
    "lstm_lm": dict(vocab=500, hidden=256, layers=2, tokens=8, batch=1),
    "bert_encoder": dict(layers=2, hidden=128, heads=4, batch=2, tokens=32, intermediate=512),
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def network(request):
    model = fixtures.BUILDERS[request.param](**NETWORKS[request.param])
    return request.param, converter.convert(model).data, fixtures.sample_inputs(model)


def run(data: bytes, feeds: dict, threads: int, repeats: int = 1) -> list[dict[str, np.ndarray]]:
    with edge.Interpreter(model_content=data, num_threads=threads) as interp:
        runner = interp.get_signature_runner()
        wanted = {d["name"]: np.dtype(d["dtype"]) for d in interp.get_input_details()}
        inputs = {name: np.asarray(value).astype(wanted[name]) for name, value in feeds.items() if name in wanted}
        return [{k: np.array(v) for k, v in runner(**inputs).items()} for _ in range(repeats)]


def test_any_thread_count_gives_identical_outputs(network):
    name, data, feeds = network
    (expected,) = run(data, feeds, 1)
    for threads in (2, 3, 4):
        for got in run(data, feeds, threads, repeats=3):
            for output, value in expected.items():
                np.testing.assert_array_equal(got[output], value, err_msg=f"{name}, {threads} threads, {output}")


def test_int8_network_identical_across_threads():
    model = fixtures.mobilenet_v2(**NETWORKS["mobilenet_v2"])
    feeds = fixtures.sample_inputs(model)
    data = converter.convert(model, quantize="int8", calibration=[feeds]).data
    (expected,) = run(data, feeds, 1)
    for threads in (2, 3):
        (got,) = run(data, feeds, threads)
        for output, value in expected.items():
            np.testing.assert_array_equal(got[output], value, err_msg=f"int8, {threads} threads")


def test_two_interpreters_with_two_threads_each_at_once(network):
    name, data, feeds = network
    (expected,) = run(data, feeds, 1)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(slot: int) -> None:
        try:
            results[slot] = run(data, feeds, 2, repeats=10)
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), f"{name}: an interpreter did not finish (deadlock?)"
    assert not errors, errors
    for slot in range(2):
        for got in results[slot]:
            for output, value in expected.items():
                np.testing.assert_array_equal(got[output], value, err_msg=f"{name}, interpreter {slot}, {output}")

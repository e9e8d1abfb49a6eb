"""The fused Attention op and RMSNorm (LAYER_NORM's rms form): the runtime against
converter.reference at every ISA level (each level in its own process, EDGE_ISA; scalar runs the C
reference loop, the others the tiled online-softmax path), on 1 and 3 threads.

Shapes cover one key block and several (blocks of 256 keys), tails of every SIMD width, grouped-query
heads, both causal alignments, the soft cap, K given transposed, float and bool masks broadcast
along different axes, fully masked rows (zeros) and an empty key sequence."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import converter.reference as reference
from converter.builder import GraphBuilder
from converter.writer import write_model
from tests.fixtures.harness import assert_close

LEVELS = ("scalar", "sse2", "avx2", "avx512")


def attention_case(b, hq, hkv, sq, sk, d, dv, mask=None, seed=0, **attrs):
    rng = np.random.default_rng(seed)
    builder = GraphBuilder()
    k_shape = (b, hkv, d, sk) if attrs.get("k_transposed") else (b, hkv, sk, d)
    feeds = {"q": rng.standard_normal((b, hq, sq, d)).astype(np.float32),
             "k": rng.standard_normal(k_shape).astype(np.float32),
             "v": rng.standard_normal((b, hkv, sk, dv)).astype(np.float32)}
    inputs = [builder.input(name, feeds[name].shape) for name in ("q", "k", "v")]
    if mask is not None:
        mask = mask(rng)
        feeds["mask"] = mask
        inputs.append(builder.input("mask", mask.shape, dtype=str(mask.dtype)))
    builder.output(builder.op("Attention", *inputs, **attrs), name="y")
    return builder.build(), feeds


def rms_case(shape, axis, bias, seed=0):
    rng = np.random.default_rng(seed)
    builder = GraphBuilder()
    x = builder.input("x", shape)
    scale = rng.standard_normal(shape[axis:]).astype(np.float32)
    extra = [rng.standard_normal(shape[axis:]).astype(np.float32)] if bias else []
    builder.output(builder.op("RMSNorm", x, scale, *extra, axis=axis, epsilon=1e-6), name="y")
    return builder.build(), {"x": (3 * rng.standard_normal(shape)).astype(np.float32)}


CASES = {
    "small": lambda: attention_case(1, 2, 2, 5, 7, 8, 8),
    "gqa-causal-blocks": lambda: attention_case(2, 4, 2, 40, 300, 16, 24, causal="upper_left"),
    "long-lower-right-softcap": lambda: attention_case(1, 4, 1, 300, 600, 64, 64, causal="lower_right",
                                                       softcap=5.0, scale=0.3),
    "k-transposed-tails": lambda: attention_case(1, 2, 2, 33, 517, 9, 7, k_transposed=True),
    "decode-one-row": lambda: attention_case(2, 8, 2, 1, 77, 32, 32, causal="lower_right"),
    "bool-key-padding": lambda: attention_case(2, 2, 2, 3, 9, 8, 8, mask=lambda r: r.standard_normal((2, 1, 1, 9)) > 0),
    "float-mask-2d": lambda: attention_case(2, 2, 2, 3, 9, 8, 8,
                                            mask=lambda r: r.standard_normal((3, 9)).astype(np.float32)),
    "float-mask-full-causal": lambda: attention_case(1, 3, 3, 70, 270, 16, 16, causal="upper_left",
                                                     mask=lambda r: r.standard_normal((1, 3, 70, 270)).astype(np.float32)),
    "all-masked-rows": lambda: attention_case(1, 2, 2, 3, 9, 8, 8, mask=lambda r: np.zeros((1, 1, 3, 9), bool)),
    "short-keys-lower-right": lambda: attention_case(1, 1, 1, 30, 2, 8, 8, causal="lower_right"),
    "no-keys": lambda: attention_case(1, 2, 2, 4, 0, 8, 8),
    "rms-row": lambda: rms_case((2, 5, 67), 2, False),
    "rms-two-axes-bias": lambda: rms_case((3, 4, 8), 1, True),
}

RUNNER = r"""
import pickle, sys
import edge
from tests.fixtures.harness import run_edge
jobs = pickle.load(open(sys.argv[1], "rb"))
out = {"isa": edge.runtime_isa(), "outputs": {}}
for key, (data, feeds) in jobs.items():
    for threads in (1, 3):
        out["outputs"][key, threads] = run_edge(data, feeds, num_threads=threads)["y"]
pickle.dump(out, open(sys.argv[2], "wb"))
"""


@pytest.fixture(scope="module")
def built():
    return {key: make() for key, make in CASES.items()}


@pytest.fixture(scope="module")
def runs(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("attention")
    jobs = folder / "jobs.pkl"
    jobs.write_bytes(pickle.dumps({key: (write_model(graph), feeds) for key, (graph, feeds) in built.items()}))
    results = {}
    for level in LEVELS:
        out = folder / f"{level}.pkl"
        done = subprocess.run([sys.executable, "-c", RUNNER, str(jobs), str(out)], cwd=os.getcwd(),
                              env={**os.environ, "EDGE_ISA": level}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"EDGE_ISA={level}: {done.stderr[-3000:]}"
        results[level] = pickle.loads(out.read_bytes())
    return results


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("key", list(CASES))
def test_runtime_matches_reference(built, runs, key, level):
    if runs[level]["isa"] != level:
        pytest.skip(f"this CPU runs {runs[level]['isa']} when asked for {level}")
    graph, feeds = built[key]
    expected = reference.run(graph, feeds)["y"]
    one, three = runs[level]["outputs"][key, 1], runs[level]["outputs"][key, 3]
    assert one.shape == expected.shape
    assert_close(one, expected, f"{key} at {level}")
    np.testing.assert_array_equal(one, three, err_msg="results depend on the thread count")


def test_all_masked_rows_are_zero_and_others_are_not(built):
    graph, feeds = built["short-keys-lower-right"]
    y = reference.run(graph, feeds)["y"]
    assert not y[0, 0, :28].any() and np.abs(y[0, 0, 28:]).min() > 0


def test_options_round_trip_through_the_schema():
    from converter.ops import OPS

    attrs = {"scale": 0.25, "causal": "lower_right", "softcap": 30.0, "k_transposed": True}
    _, _, options = OPS["Attention"].lower(attrs)
    assert OPS["Attention"].lift(options) == attrs


def test_bad_shapes_are_refused_naming_the_op():
    builder = GraphBuilder()
    q, k, v = (builder.input(n, s) for n, s in (("q", (1, 3, 4, 8)), ("k", (1, 2, 4, 8)), ("v", (1, 2, 4, 8))))
    with pytest.raises(Exception, match="Attention: .*heads a multiple"):
        builder.op("Attention", q, k, v)

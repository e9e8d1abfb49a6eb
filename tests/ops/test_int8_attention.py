"""int8 attention's ops in the C runtime against the converter's integer reference (the oracle,
converter/ops/int8_reference.py): LayerNorm on int8 (within 1 LSB by contract; the runtime
follows the same IEEE steps, so it is checked for equality too), an elementwise unary as an int8
[256] lookup table (bit-exact), and an attention block made of int8 ops only (Q.K^T and P.V as
BatchMatMul of two activations, the additive mask as an int8 Add, Softmax, the residual Add and
LayerNorm, GELU as a table), bit-exact except for LayerNorm's 1-LSB allowance.

Graphs are written by hand (tensor types given, not inferred) so the cases do not depend on what
the converter's quantizer emits. Each ISA level runs in its own process (EDGE_ISA), on 1 and 2
threads, through tests/ops/test_quantized_ops.py's runner.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from converter import reference
from converter.ir import Graph, Node, TensorType
from converter.ops.int8_reference import unary_table
from converter.writer import write_model
from tests.ops.test_quantized_ops import LEVELS, RUNNER, THREADS, Case, q, rng_for


def int8(rng, shape, low=-128, high=127) -> np.ndarray:
    return rng.integers(low, high + 1, shape).astype(np.int8)


def graph(nodes, inputs: dict[str, TensorType], constants: dict[str, np.ndarray], outputs: list[str],
          types: dict[str, TensorType], quantization) -> Graph:
    tensors = dict(inputs)
    tensors.update({name: TensorType(str(v.dtype), tuple(v.shape)) for name, v in constants.items()})
    tensors.update(types)
    return Graph(nodes=tuple(nodes), inputs=tuple(inputs), outputs=tuple(outputs), tensors=tensors,
                 constants=constants, quantization=quantization)


def layer_norm_cases() -> list[Case]:
    cases = []
    for id, shape, axis, scale_shape, bias in (("ln_bert_rows", (2, 9, 384), -1, (384,), True),
                                               ("ln_odd_rows_no_bias", (3, 5, 33), -1, (33,), False),
                                               ("ln_two_axes_broadcast_scale", (4, 2, 20), -2, (20,), True),
                                               ("ln_short_rows", (6, 7), -1, (7,), True)):
        rng = rng_for(id)
        constants = {"gamma": rng.uniform(0.5, 1.5, scale_shape).astype(np.float32)}
        if bias:
            constants["beta"] = rng.uniform(-0.5, 0.5, scale_shape).astype(np.float32)
        x = int8(rng, shape)
        x[0] = 5  # a constant row: variance 0, epsilon alone
        node = Node("LayerNorm", ["x", "gamma"] + (["beta"] if bias else []), ["y"], {"axis": axis, "epsilon": 1e-5})
        g = graph([node], {"x": TensorType("int8", shape)}, constants, ["y"], {"y": TensorType("int8", shape)},
                  {"x": q(rng.uniform(0.02, 0.08), int(rng.integers(-30, 30))), "y": q(0.02, int(rng.integers(-10, 10)))})
        cases.append(Case(id, g, {"x": x}, extra={"lsb": {"y"}}))
    return cases


def lut_cases() -> list[Case]:
    cases = []
    for op, attrs in (("Gelu", {}), ("Tanh", {}), ("Sigmoid", {}), ("HardSwish", {})):
        id = f"lut_{op.lower()}"
        rng = rng_for(id)
        x_params, y_params = q(0.05, int(rng.integers(-20, 20))), q(0.03, -60)
        table = unary_table(op, attrs, x_params, y_params)
        n = 1031
        x = np.concatenate([np.arange(-128, 128, dtype=np.int8), int8(rng, (n - 256,))]).reshape(1, n)
        g = graph([Node(op, ["x", "table"], ["y"], attrs)], {"x": TensorType("int8", x.shape)}, {"table": table}, ["y"],
                  {"y": TensorType("int8", x.shape)}, {"x": x_params, "y": y_params, "table": y_params})
        cases.append(Case(id, g, {"x": x}))
    return cases


def attention_case(batch=2, heads=3, tokens=16, head_dim=8) -> Case:
    """One post-LayerNorm attention block plus a GELU, every tensor int8."""
    id = "attention_block"
    rng = rng_for(id)
    hidden = heads * head_dim
    act = lambda low=0.02, high=0.08: q(rng.uniform(low, high), int(rng.integers(-20, 20)))  # noqa: E731
    params = {"q": act(), "kt": act(), "v": act(), "mask": q(10000.0 / 255, 127), "scores": act(0.1, 0.3),
              "masked": act(0.2, 0.5), "probs": q(1 / 256, -128), "context": act(), "x": act(), "residual": act(),
              "normed": q(0.03, 2), "gelu": q(0.02, -100)}
    gelu_table = unary_table("Gelu", {}, params["normed"], params["gelu"])
    nodes = [Node("BatchMatMul", ["q", "kt"], ["scores"], {}),
             Node("Add", ["scores", "mask"], ["masked"], {}),
             Node("Softmax", ["masked"], ["probs"], {"axis": -1}),
             Node("BatchMatMul", ["probs", "v"], ["context"], {}),
             Node("Transpose", ["context"], ["context_t"], {"perm": (0, 2, 1, 3)}),
             Node("Reshape", ["context_t"], ["merged"], {"shape": (batch, tokens, hidden)}),
             Node("Add", ["merged", "x"], ["residual"], {}),
             Node("LayerNorm", ["residual", "gamma", "beta"], ["normed"], {"axis": -1, "epsilon": 1e-12}),
             Node("Gelu", ["normed", "gelu_table"], ["gelu"], {})]
    params["context_t"] = params["merged"] = params["context"]
    shapes = {"q": (batch, heads, tokens, head_dim), "kt": (batch, heads, head_dim, tokens),
              "v": (batch, heads, tokens, head_dim), "mask": (batch, 1, 1, tokens), "x": (batch, tokens, hidden)}
    types = {"scores": (batch, heads, tokens, tokens), "masked": (batch, heads, tokens, tokens),
             "probs": (batch, heads, tokens, tokens), "context": (batch, heads, tokens, head_dim),
             "context_t": (batch, tokens, heads, head_dim), "merged": (batch, tokens, hidden),
             "residual": (batch, tokens, hidden), "normed": (batch, tokens, hidden), "gelu": (batch, tokens, hidden)}
    mask = np.full(shapes["mask"], 127, np.int8)  # 127 is 0.0; -128 is -10000 (padding)
    mask[1, ..., tokens - 5:] = -128
    feeds = {name: int8(rng, shape) for name, shape in shapes.items() if name != "mask"}
    feeds["mask"] = mask
    g = graph(nodes, {name: TensorType("int8", shape) for name, shape in shapes.items()},
              {"gamma": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
               "beta": rng.uniform(-0.5, 0.5, hidden).astype(np.float32), "gelu_table": gelu_table},
              ["probs", "context", "normed", "gelu"], {name: TensorType("int8", shape) for name, shape in types.items()},
              {**params, "gelu_table": params["gelu"]})
    # LayerNorm's 1-LSB allowance propagates into the GELU after it.
    return Case(id, g, feeds, extra={"lsb": {"normed", "gelu"}})


def all_cases() -> list[Case]:
    return layer_norm_cases() + lut_cases() + [attention_case()]


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {c.id: c for c in all_cases()}


@pytest.fixture(scope="module")
def runs(cases, tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("int8_attention")
    jobs = [(case.id, write_model(case.graph), case.feeds, t) for case in cases.values() for t in THREADS]
    job_file = folder / "jobs.pkl"
    job_file.write_bytes(pickle.dumps(jobs))
    results = {}
    for level in LEVELS:
        out = folder / f"{level}.pkl"
        done = subprocess.run([sys.executable, "-c", RUNNER, str(job_file), str(out)],
                              env={**os.environ, "EDGE_ISA": level}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"EDGE_ISA={level}: {done.stderr[-3000:]}"
        results[level] = pickle.loads(out.read_bytes())
    return results


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case_id", [c.id for c in all_cases()])
def test_int8_attention_op(cases, runs, case_id, level):
    if runs[level]["isa"] != level:
        pytest.skip(f"this CPU runs {runs[level]['isa']} when asked for {level}")
    case = cases[case_id]
    expected = reference.run(case.graph, case.feeds)
    outputs = runs[level]["outputs"]
    for threads in THREADS:
        got, stable = outputs[(case.id, threads)]
        assert stable, f"{case_id}: a second invoke changed the outputs"
        for name, want in expected.items():
            value = got[name]
            assert value.shape == want.shape and value.dtype == want.dtype, (name, value.shape, want.shape)
            diff = np.abs(value.astype(np.int32) - want.astype(np.int32))
            if name in case.extra.get("lsb", ()):
                assert diff.max() <= 1, f"{case_id}:{name} at {level}, {threads} threads: off by {diff.max()}"
            else:
                assert diff.max() == 0, (f"{case_id}:{name} at {level}, {threads} threads: {np.count_nonzero(diff)} "
                                         f"of {diff.size} differ")
            # Threads never change the bytes.
            assert value.tobytes() == outputs[(case.id, 1)][0][name].tobytes()


def test_layer_norm_matches_the_reference_exactly(cases, runs):
    """The 1-LSB allowance is for other kernels; this runtime does the reference's steps in order."""
    for level in LEVELS:
        if runs[level]["isa"] != level:
            continue
        for case in cases.values():
            if not case.id.startswith("ln_"):
                continue
            expected = reference.run(case.graph, case.feeds)["y"]
            got = runs[level]["outputs"][(case.id, 1)][0]["y"]
            assert np.array_equal(got, expected), f"{case.id} at {level}"

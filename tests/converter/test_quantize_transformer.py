"""Full int8 for transformers: sentinel values (attention masks) in calibration, per-tensor
calibration choice (``auto``), the --keep-float suggestion, and the integer references of int8
LayerNorm and of table (LUT) unary ops against their float definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from converter.builder import GraphBuilder
from converter.ir import Quantization
from converter.ops import lookup
from converter.passes import optimize
from converter.quantize import quantize
from converter.quantize import int8 as int8_mode
from converter.quantize.calibration import auto_candidates, calibrate, choose_auto, split_sentinels
from converter.quantize.params import activation_params
from converter.ops import OPS
from converter.ops.int8_reference import (SOFTMAX_OUTPUT, dequantize_values, layer_norm_int8, quantize_values,
                                          run_integer_node, unary_table)
from converter.quantize.report import LayerError, QuantizationReport
from converter.reference import run

RNG = np.random.default_rng(11)


def per_tensor(scale: float, zero_point: int) -> Quantization:
    return Quantization(scale=(scale,), zero_point=(zero_point,), axis=0)


# ---- sentinels ----

@pytest.mark.parametrize("sentinel", [-np.inf, -np.finfo(np.float32).max, -3.4e38, -1e4, -1e9])
def test_low_sentinels_are_split_from_the_range(sentinel):
    values = RNG.normal(0, 3, 200).astype(np.float32)
    values[::7] = sentinel
    ordinary, found = split_sentinels(values)
    assert found.low == len(values[::7]) and found.high == 0
    assert np.all(ordinary == (values != np.float32(sentinel)))


def test_scores_plus_minus_1e4_mask_are_split_but_large_ordinary_values_are_not():
    scores = RNG.normal(0, 4, (8, 16)).astype(np.float32)
    masked = scores.copy()
    masked[:, 12:] += -10000.0
    ordinary, found = split_sentinels(masked)
    assert found.low == 8 * 4 and ordinary[:, :12].all() and not ordinary[:, 12:].any()
    # a heavy but continuous tail is data, not a sentinel
    heavy = (RNG.standard_cauchy(4000) * 50).astype(np.float32)
    heavy = heavy[np.abs(heavy) < 5e4]
    assert not split_sentinels(heavy)[1]


def _masked_attention(seq: int = 8, dim: int = 6):
    """x [1, seq, dim] -> scores = (x Wq)(x Wk)^T + Where(mask, 0, -inf) -> Softmax ->
    Where(IsNaN(p), 0, p) -> p @ (x Wv) -> out; the mask [1, 1, seq] is a bool input."""
    rng = np.random.default_rng(1)
    b = GraphBuilder()
    x = b.input("x", (1, seq, dim))
    mask = b.input("mask", (1, 1, seq), dtype="bool")
    q = b.FullyConnected(x, rng.normal(0, 0.5, (dim, dim)).astype(np.float32), name="q")
    k = b.FullyConnected(x, rng.normal(0, 0.5, (dim, dim)).astype(np.float32), name="k")
    v = b.FullyConnected(x, rng.normal(0, 0.5, (dim, dim)).astype(np.float32), name="v")
    scores = b.BatchMatMul(q, k, transpose_b=True, name="scores")
    additive = b.Where(mask, np.array([0.0], np.float32), np.array([-np.inf], np.float32), name="mask_to_add")
    masked = b.Add(scores, additive, name="add_mask")
    p = b.Softmax(masked, axis=2, name="softmax")
    guarded = b.Where(b.IsNaN(p, name="isnan"), np.array([0.0], np.float32), p, name="nan_guard")
    y = b.BatchMatMul(guarded, v, name="context")
    b.output(y, name="out")
    graph, _ = optimize(b.build())
    return graph


def _attention_feeds(count: int, seq: int = 8, dim: int = 6, seed: int = 5):
    rng = np.random.default_rng(seed)
    feeds = []
    for k in range(count):
        valid = 3 + k % (seq - 3)
        mask = np.zeros((1, 1, seq), bool)
        mask[..., :valid] = True
        feeds.append({"x": rng.normal(0, 1, (1, seq, dim)).astype(np.float32), "mask": mask})
    return feeds


def test_masked_attention_converts_and_masked_scores_vanish():
    graph = _masked_attention()
    feeds = _attention_feeds(16)
    quantized, report = quantize(graph, "int8", calibration=feeds)
    handling = {entry.tensor: entry.handling for entry in report.sentinels}
    mask_tensor = next(n.outputs[0] for n in graph.nodes if n.name == "mask_to_add")
    scores_tensor = next(n.outputs[0] for n in graph.nodes if n.name == "add_mask")
    assert handling[mask_tensor] == "kept in float"
    assert handling[scores_tensor].startswith("saturate to int8 min")
    assert "vanish after softmax" in handling[scores_tensor]
    assert "mask path kept in float" in {f.node: f.reason for f in report.float_ops}["add_mask"]
    assert "softmax" in {node for node, _ in report.quantized}
    # the softmax is int8, and every masked key weighs exactly 0 (q = -128 at scale 1/256)
    softmax = next(n for n in quantized.nodes if n.op == "Softmax")
    assert quantized.quantization[softmax.outputs[0]] == SOFTMAX_OUTPUT
    for feed in _attention_feeds(6, seed=9):
        probabilities = run(quantized, feed, keep_all=True)[softmax.outputs[0]]
        hidden = ~feed["mask"][0, 0]
        assert np.all(probabilities[..., hidden] == -128)
        assert np.all(probabilities[..., ~hidden].astype(int).sum(axis=-1) + 128 * (~hidden).sum() > 0)
        want = run(graph, feed)["out"]
        got = run(quantized, feed)["out"]
        assert np.abs(got - want).max() <= 0.3 * np.abs(want).max() + 1e-6
    # the guard behind the int8 softmax passes its value through (no IsNaN left in the graph)
    assert not any(n.op == "IsNaN" for n in quantized.nodes)
    assert "sentinel values" in str(report)


def test_masked_attention_runs_on_the_runtime_as_the_reference_does():
    edge = pytest.importorskip("edge")
    from converter.writer import write_model

    graph = _masked_attention()
    quantized, _ = quantize(graph, "int8", calibration=_attention_feeds(16))
    interpreter = edge.Interpreter(model_content=write_model(quantized))
    interpreter.allocate_tensors()
    names = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    for feed in _attention_feeds(5, seed=21):
        for name, value in feed.items():
            interpreter.set_tensor(names[name], value)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_array_equal(got, run(quantized, feed)["out"])


def test_all_sentinel_tensor_gets_a_zero_range_not_an_error():
    graph = _masked_attention()
    calibration = calibrate(graph, _attention_feeds(4), [t for t in graph.tensors if not graph.is_constant(t)
                                                         and graph.tensors[t].dtype == "float32"])
    mask_tensor = next(n.outputs[0] for n in graph.nodes if n.name == "mask_to_add")
    assert calibration.ranges[mask_tensor] == (0.0, 0.0)
    assert calibration.sentinels[mask_tensor].low > 0


# ---- calibration methods ----

def test_auto_keeps_the_span_of_uniform_values_and_clips_a_heavy_tail():
    uniform = RNG.uniform(-2, 3, 100_000)
    method, (low, high) = choose_auto(uniform)
    # without a tail nothing is worth clipping: the chosen range keeps >= 99% of the span
    assert method != "float" and (high - low) >= 0.99 * (uniform.max() - uniform.min())
    # a heavy (Laplace) tail: clipping it costs less than the resolution it buys
    tailed = RNG.laplace(0, 1, 100_000)
    method, (low, high) = choose_auto(tailed)
    assert method not in ("minmax", "float")
    assert high - low < 0.95 * (tailed.max() - tailed.min())
    # two isolated huge values: clipping them would cost more (mean squared error) than it buys,
    # and keeping them leaves the bulk a few levels: the tensor stays float
    spiked = np.concatenate([RNG.normal(0, 1, 100_000), [400.0, -350.0]])
    assert choose_auto(spiked)[0] == "float"


def test_auto_leaves_an_outlier_dominated_tensor_float():
    # one channel in 384 at ~200x the others: int8 would leave the rest a few levels
    rows = RNG.normal(0, 1, (2000, 384))
    rows[:, 99] = 200 + RNG.normal(0, 5, 2000)
    values = rows.ravel()
    assert choose_auto(values)[0] == "float"
    # the same values without the outlier channel quantize well
    assert choose_auto(np.delete(rows, 99, axis=1).ravel())[0] != "float"


def test_auto_per_tensor_choice_is_reported_and_beats_minmax_on_a_heavy_tail():
    b = GraphBuilder()
    x = b.input("x", (1, 64))
    w = RNG.normal(0, 0.3, (64, 64)).astype(np.float32)
    y = b.FullyConnected(x, w, name="fc1")
    z = b.FullyConnected(y, RNG.normal(0, 0.3, (8, 64)).astype(np.float32), name="fc2")
    b.output(z, name="out")
    graph, _ = optimize(b.build())
    data = np.random.default_rng(4).laplace(0, 1, (256, 64)).astype(np.float32)   # heavy-tailed inputs
    quantized_minmax, _ = quantize(graph, "int8", calibration=data, method="minmax")
    quantized, report_auto = quantize(graph, "int8", calibration=data, method="auto")
    assert report_auto.methods and set(report_auto.methods.values()) <= {"minmax", "mse", "float"}
    assert report_auto.methods["x"] != "minmax"
    assert "calibration auto chose per tensor" in str(report_auto)
    # the range auto chose for x has the smallest measured error on the calibration values,
    # strictly below minmax's
    x_auto = next(t for t in quantized.quantization if t.startswith("x_int8"))
    x_minmax = next(t for t in quantized_minmax.quantization if t.startswith("x_int8"))
    def error(params):
        restored = dequantize_values(quantize_values(data, params), params)
        return float(np.mean((restored.astype(np.float64) - data) ** 2))
    assert error(quantized.quantization[x_auto]) < 0.99 * error(quantized_minmax.quantization[x_minmax])
    for bounds in auto_candidates(data.astype(np.float64).ravel()).values():
        assert error(quantized.quantization[x_auto]) <= error(activation_params(*bounds)) * (1 + 1e-9)


# ---- report ----

def test_report_suggests_keep_float_for_the_worst_layers():
    report = QuantizationReport(mode="int8")
    report.layers = [LayerError("a", "FullyConnected", "a:0", 35.0), LayerError("b", "Add", "b:0", 28.0),
                     LayerError("c", "Softmax", "c:0", math.inf), LayerError("d", "LayerNorm", "d:0", 31.0)]
    assert report.suggest_keep_float(2) == ["b", "d"]
    assert "--keep-float b d a" in str(report)
    report.layers.append(LayerError("e", "BatchMatMul", "e:0", 12.0))
    assert report.suggest_keep_float() == ["e"]
    assert "to keep the flagged layers in float: --keep-float e" in str(report)


# ---- int8 LayerNorm and table unary references ----

@pytest.mark.parametrize("shape,axis", [((2, 5, 64), 2), ((3, 384), 1), ((1, 4, 6, 8), 2)])
def test_int8_layer_norm_reference_is_within_half_a_step_of_float(shape, axis):
    x_params, y_params = per_tensor(0.043, 7), per_tensor(0.031, -3)
    q = RNG.integers(-128, 128, shape).astype(np.int8)
    gamma = RNG.normal(1, 0.2, shape[axis:]).astype(np.float32)
    beta = RNG.normal(0, 0.2, shape[axis:]).astype(np.float32)
    attrs = {"axis": axis, "epsilon": 1e-12}
    got = layer_norm_int8([q, gamma, beta], {**attrs, "quantization": ([x_params, None, None], [y_params])})[0]
    want = lookup("LayerNorm").reference([dequantize_values(q, x_params), gamma, beta], attrs)[0]
    inside = np.abs(want / 0.031) < 120
    step = np.abs(dequantize_values(got, y_params) - want)[inside] / 0.031
    assert got.dtype == np.int8 and step.max() <= 0.5 + 1e-3
    # saturates instead of wrapping
    assert np.array_equal(got[~inside], quantize_values(want[~inside], y_params))


def test_int8_layer_norm_reference_sums_are_order_free():
    x_params, y_params = per_tensor(0.05, 0), per_tensor(0.02, 0)
    q = RNG.integers(-128, 128, (4, 96)).astype(np.int8)
    gamma, beta = np.ones(96, np.float32), np.zeros(96, np.float32)
    attrs = {"axis": 1, "epsilon": 1e-5, "quantization": ([x_params, None, None], [y_params])}
    perm = RNG.permutation(96)
    a = layer_norm_int8([q, gamma, beta], attrs)[0]
    b = layer_norm_int8([q[:, perm], gamma, beta], attrs)[0]
    assert np.array_equal(a[:, perm], b)


@pytest.mark.parametrize("op", ["Gelu", "Erf", "Tanh", "Sigmoid", "HardSwish", "GeluTanh", "Exp"])
def test_table_unary_matches_quantized_float_op_exactly(op):
    assert OPS[op].int8_role == "table"
    x_params, y_params = per_tensor(0.04, -10), per_tensor(0.03, -60)
    table = unary_table(op, {}, x_params, y_params)
    assert table.dtype == np.int8 and table.shape == (256,)
    q = RNG.integers(-128, 128, (3, 50)).astype(np.int8)
    got = run_integer_node(op, [q, table], {"quantization": ([x_params, y_params], [y_params])})[0]
    x = dequantize_values(q, x_params).astype(np.float64)
    want = quantize_values(lookup(op).reference([x], {})[0].astype(np.float32), y_params)
    np.testing.assert_array_equal(got, want)


def test_table_unary_reference_refuses_a_missing_or_malformed_table():
    q = np.zeros(4, np.int8)
    params = per_tensor(0.1, 0)
    with pytest.raises(ValueError, match="lookup table"):
        run_integer_node("Gelu", [q], {"quantization": ([params], [params])})
    with pytest.raises(ValueError, match="int8 \\[256\\]"):
        run_integer_node("Gelu", [q, np.zeros(255, np.int8)], {"quantization": ([params, params], [params])})


def test_fused_table_activation_is_split_only_when_the_runtime_has_tables(monkeypatch):
    b = GraphBuilder()
    x = b.input("x", (1, 16))
    y = b.FullyConnected(x, RNG.normal(0, 0.5, (16, 16)).astype(np.float32), name="fc")
    y = b.Gelu(y, name="gelu")
    b.output(y, name="out")
    graph, _ = optimize(b.build())
    assert [n.op for n in graph.nodes] == ["FullyConnected"]          # Gelu fused
    assert int8_mode.split_table_activations(graph) is graph or int8_mode.RUNTIME_INT8_FORMS["unary_table"]
    monkeypatch.setitem(int8_mode.RUNTIME_INT8_FORMS, "unary_table", True)
    split = int8_mode.split_table_activations(graph)
    assert [n.op for n in split.nodes] == ["FullyConnected", "Gelu"]
    feed = {"x": RNG.normal(0, 1, (1, 16)).astype(np.float32)}
    np.testing.assert_allclose(run(split, feed)["out"], run(graph, feed)["out"], rtol=1e-5, atol=1e-6)
    data = RNG.normal(0, 1, (32, 16)).astype(np.float32)
    quantized, report = quantize(graph, "int8", calibration=data)
    gelu = next(n for n in quantized.nodes if n.op == "Gelu")
    assert quantized.tensors[gelu.inputs[0]].dtype == "int8" and len(gelu.inputs) == 2
    assert quantized.constants[gelu.inputs[1]].shape == (256,)

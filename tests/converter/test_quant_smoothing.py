"""Outlier smoothing before full int8 (converter.quantize.smoothing): the scales are what the
SmoothQuant formula says, the transform leaves the float model's outputs unchanged (shared and
unshared LayerNorm outputs), it evens out the channels int8 sees, and on a LayerNorm -> matmul
block with an outlier channel it makes the int8 model closer to float32 than it is without."""
from __future__ import annotations

import numpy as np
import pytest

from converter.builder import GraphBuilder
from converter.errors import ConversionError
from converter.passes import optimize
from converter.quantize import quantize
from converter.quantize.smoothing import (PEAK_FLOOR, channel_peaks, smooth_layer_norms, smoothing_scales,
                                          smoothing_sites)
from converter.reference import run

CHANNELS = 16
OUTLIER = 5                    # the channel whose LayerNorm scale makes it ~25x the others


def _post_ln_block(shared: bool = True, seed: int = 3):
    """x [1, 12, C] -> LayerNorm (gamma with one large channel) -> two FullyConnected (and, when
    ``shared``, a residual Add of the LayerNorm output) -> LayerNorm -> out, as in a post-LN BERT."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, CHANNELS).astype(np.float32)
    gamma[OUTLIER] = 25.0
    beta = rng.normal(0, 0.2, CHANNELS).astype(np.float32)
    b = GraphBuilder()
    x = b.input("x", (1, 12, CHANNELS))
    h = b.LayerNorm(x, gamma, beta, axis=2, epsilon=1e-5, name="norm")
    q = b.FullyConnected(h, rng.normal(0, 0.3, (CHANNELS, CHANNELS)).astype(np.float32),
                         rng.normal(0, 0.1, CHANNELS).astype(np.float32), name="q")
    k = b.FullyConnected(h, rng.normal(0, 0.3, (CHANNELS, CHANNELS)).astype(np.float32), name="k")
    y = b.Mul(q, k, name="mix")
    if shared:
        y = b.Add(y, h, name="residual")
    out = b.LayerNorm(y, np.ones(CHANNELS, np.float32), np.zeros(CHANNELS, np.float32), axis=2,
                      epsilon=1e-5, name="norm2")
    b.output(out, name="out")
    graph, _ = optimize(b.build())
    return graph


def _feeds(count: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 12, CHANNELS)).astype(np.float32)} for _ in range(count)]


def _norm_output(graph) -> str:
    return next(n.outputs[0] for n in graph.nodes if n.name == "norm")


def test_scales_follow_the_formula():
    x_peak = np.array([8.0, 0.5, 2.0, 0.0, 3.0])
    w_peak = np.array([0.5, 2.0, 1.0, 1.0, PEAK_FLOOR / 10])
    s = smoothing_scales(x_peak, w_peak, alpha=0.5)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s[:3], [np.sqrt(8.0 / 0.5), np.sqrt(0.5 / 2.0), np.sqrt(2.0)], rtol=1e-6)
    assert s[3] == 1.0 and s[4] == 1.0                # a zero channel or a zero weight column: no scale
    np.testing.assert_allclose(smoothing_scales(x_peak[:3], w_peak[:3], alpha=0.75),
                               x_peak[:3] ** 0.75 / w_peak[:3] ** 0.25, rtol=1e-6)


@pytest.mark.parametrize("shared", [True, False])
def test_smoothing_leaves_the_float_model_unchanged(shared):
    graph = _post_ln_block(shared)
    sites = smoothing_sites(graph)
    assert [(s.tensor, len(s.readers), s.shared) for s in sites] == [(_norm_output(graph), 2, shared)]
    feeds = _feeds(6)
    peaks = channel_peaks(graph, feeds, [sites[0].tensor])
    smoothed, done = smooth_layer_norms(graph, peaks)
    assert len(done) == 1 and done[0].readers == 2
    norms = [n for n in smoothed.nodes if n.op == "LayerNorm"]
    # shared: the residual keeps the original LayerNorm and the matmuls read a scaled copy;
    # unshared: the LayerNorm itself takes the scale (no op added).
    assert len(norms) == (3 if shared else 2)
    readers = [n for n in smoothed.nodes if n.op == "FullyConnected"]
    assert {n.inputs[0] for n in readers} == {done[0].smoothed}
    assert (done[0].smoothed != done[0].tensor) == shared
    for feed in _feeds(4, seed=11):
        want = run(graph, feed, keep_all=True)
        got = run(smoothed, feed, keep_all=True)
        for name in ("out", *(n.outputs[0] for n in readers)):
            np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-5 * np.abs(want[name]).max())


def test_smoothing_scales_the_weights_and_the_norm_per_channel():
    graph = _post_ln_block()
    site = smoothing_sites(graph)[0]
    peaks = channel_peaks(graph, _feeds(6), [site.tensor])
    smoothed, _ = smooth_layer_norms(graph, peaks, alpha=0.5)
    weights = [graph.constants[graph.nodes[i].inputs[1]] for i in site.readers]
    s = smoothing_scales(peaks[site.tensor], np.abs(np.concatenate(weights)).max(axis=0), 0.5)
    assert np.argmax(s) == OUTLIER
    for index in site.readers:
        name = graph.nodes[index].name
        before = graph.constants[graph.nodes[index].inputs[1]]
        after = smoothed.constants[next(n for n in smoothed.nodes if n.name == name).inputs[1]]
        np.testing.assert_allclose(after, before * s[np.newaxis, :], rtol=1e-6)
    copy = next(n for n in smoothed.nodes if n.op == "LayerNorm" and n.name == "norm/smoothed")
    np.testing.assert_allclose(smoothed.constants[copy.inputs[1]],
                               graph.constants[graph.nodes[site.norm].inputs[1]] / s, rtol=1e-6)
    # the channels int8 sees are evened out: the outlier channel's peak falls towards the others'
    x = run(smoothed, _feeds(1)[0], keep_all=True)[copy.outputs[0]].reshape(-1, CHANNELS)
    raw = run(graph, _feeds(1)[0], keep_all=True)[site.tensor].reshape(-1, CHANNELS)
    ratio = lambda v: np.abs(v).max() / np.median(np.abs(v).max(axis=0))
    assert ratio(x) < 0.5 * ratio(raw)


def test_int8_with_smoothing_is_closer_to_float32():
    graph = _post_ln_block()
    calibration = _feeds(16)
    plain, plain_report = quantize(graph, "int8", calibration=calibration, smoothing=None)
    smoothed, report = quantize(graph, "int8", calibration=calibration, smoothing=0.5)
    assert not plain_report.smoothed and [e.tensor for e in report.smoothed] == [_norm_output(graph)]
    assert "outlier smoothing" in str(report)
    for quantized in (plain, smoothed):                # the matmuls are int8 either way
        assert all(quantized.tensors[n.inputs[0]].dtype == "int8" for n in quantized.nodes
                   if n.op == "FullyConnected")
    for name in ("q", "k"):                            # SQNR of the matmul outputs against float32
        assert report.sqnr_of(name) > plain_report.sqnr_of(name) + 4.0


def test_residual_add_of_a_float_norm_output_stays_float():
    graph = _post_ln_block()
    quantized, report = quantize(graph, "int8", calibration=_feeds(8))
    reasons = {f.node: f.reason for f in report.float_ops}
    assert "feeds only float ops" in reasons["residual"]
    assert "mix" not in reasons                       # int8 Mul of two int8 matmul outputs
    residual = next(n for n in quantized.nodes if n.name == "residual")
    assert all(quantized.tensors[i].dtype == "float32" for i in residual.inputs)


def test_smoothing_strength_is_checked():
    with pytest.raises(ConversionError, match="smoothing strength"):
        quantize(_post_ln_block(), "int8", calibration=_feeds(2), smoothing=1.5)


def test_runtime_runs_the_smoothed_float_graph_as_the_original():
    edge = pytest.importorskip("edge")
    from converter.writer import write_model
    from tests.fixtures.harness import run_interpreter

    graph = _post_ln_block()
    site = smoothing_sites(graph)[0]
    smoothed, _ = smooth_layer_norms(graph, channel_peaks(graph, _feeds(6), [site.tensor]))
    interpreter = edge.Interpreter(model_content=write_model(smoothed))
    interpreter.allocate_tensors()
    for feed in _feeds(3, seed=13):
        want = run(graph, feed)["out"]
        np.testing.assert_allclose(run_interpreter(interpreter, feed)["out"], want, rtol=1e-4, atol=1e-4)

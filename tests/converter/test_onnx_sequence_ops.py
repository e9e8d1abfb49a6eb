"""DFT's transform matrix against numpy's FFT, and the refusals of the sequence ops' import (DFT,
RNN, CausalConvWithState, LinearAttention). Values through the runtime are checked in
tests/ops/test_onnx_ops.py (the DFT-*, STFT-*, RNN-*, CausalConvWithState-* and LinearAttention-*
cases) and by the ONNX backend suite."""
from __future__ import annotations

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers import load_onnx
from converter.importers.onnx_spectral import dft_matrix


def _complex_rows(rng, shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _apply(matrix, signal, channels):
    """signal [rows, samples] (complex) through the [bins * out, samples * channels] matrix."""
    if channels == 1:
        flat = signal.real
    else:
        flat = np.stack([signal.real, signal.imag], axis=-1).reshape(signal.shape[0], -1)
    return flat @ matrix.T


@pytest.mark.parametrize("samples, length", [(8, 8), (10, 7), (6, 9), (5, 5)])
@pytest.mark.parametrize("channels", [1, 2])
def test_forward_and_inverse_matrices_match_numpy(samples, length, channels):
    rng = np.random.default_rng(samples * 10 + length)
    signal = _complex_rows(rng, (3, samples))
    if channels == 1:
        signal = signal.real.astype(complex)
    for inverse, transform in ((False, np.fft.fft), (True, np.fft.ifft)):
        y = _apply(dft_matrix(samples, channels, length, length, inverse, False), signal, channels)
        want = transform(signal, n=length, axis=-1)
        np.testing.assert_allclose(y[:, 0::2] + 1j * y[:, 1::2], want, atol=1e-12)
    # One-sided forward: the first length // 2 + 1 bins.
    bins = length // 2 + 1
    y = _apply(dft_matrix(samples, channels, length, bins, False, False), signal, channels)
    np.testing.assert_allclose(y[:, 0::2] + 1j * y[:, 1::2], np.fft.fft(signal, n=length)[:, :bins], atol=1e-12)


@pytest.mark.parametrize("bins, length", [(5, 8), (5, 9), (3, 10), (7, 6)])
def test_inverse_of_a_one_sided_spectrum_matches_irfft(bins, length):
    rng = np.random.default_rng(bins * 100 + length)
    spectrum = _complex_rows(rng, (4, bins))
    y = _apply(dft_matrix(bins, 2, length, length, True, True), spectrum, 2)
    np.testing.assert_allclose(y, np.fft.irfft(spectrum, n=length, axis=-1), atol=1e-12)


def test_window_scales_each_sample():
    rng = np.random.default_rng(5)
    signal, window = rng.standard_normal((2, 12)), rng.uniform(0, 1, 12)
    y = _apply(dft_matrix(12, 1, 12, 7, False, False, window), signal.astype(complex), 1)
    np.testing.assert_allclose(y[:, 0::2] + 1j * y[:, 1::2], np.fft.rfft(signal * window), atol=1e-12)


def _model(node, inputs, initializers=(), opset=17, outputs=(("y", None),)):
    """A one-node model; an output given no shape is typed by onnx's shape inference."""
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [onnx.ValueInfoProto(name=o) if s is None else helper.make_tensor_value_info(o, TensorProto.FLOAT, s)
                               for o, s in outputs], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _refusal(model) -> dict:
    with pytest.raises(UnsupportedOpsError) as info:
        load_onnx(model)
    return info.value.ops


@pytest.mark.parametrize("length, factors", [(1024, (32, 32)), (1200, (30, 40)), (4096, (64, 64))])
def test_long_transforms_run_as_two_passes_of_short_matrices(length, factors):
    node = helper.make_node("DFT", ["x"], ["y"], axis=1)
    graph = load_onnx(_model(node, [("x", (2, length, 2))]))
    weights = [graph.tensors[n.inputs[1]].shape for n in graph.nodes if n.op == "FullyConnected"]
    assert weights == [(2 * factors[0], 2 * factors[0]), (2 * factors[1], 2 * factors[1])]


def test_a_second_pass_matrix_past_the_limit_is_refused():
    # 8 x 5003 (a prime): the second pass would need a 10006 x 10006 matrix.
    node = helper.make_node("DFT", ["x"], ["y"], name="long", axis=1)
    assert _refusal(_model(node, [("x", (1, 8 * 5003, 2))])) == {
        "DFT (a transform matrix of 10006 x 10006 (over 64 MiB))": ["long"]}


def test_a_transform_matrix_past_the_limit_is_refused():
    # 4099 is prime: no two-pass form, and its one matrix would be 8198 x 8198.
    node = helper.make_node("DFT", ["x"], ["y"], name="big", axis=1)
    ops = _refusal(_model(node, [("x", (1, 4099, 2))]))
    assert list(ops) == ["DFT (a transform matrix of 8198 x 8198 (over 64 MiB))"] and ops[list(ops)[0]] == ["big"]


def test_rnn_with_an_activation_that_has_parameters_is_refused():
    w, r = np.zeros((1, 3, 2), np.float32), np.zeros((1, 3, 3), np.float32)
    node = helper.make_node("RNN", ["x", "W", "R"], ["y"], name="rnn", hidden_size=3, activations=["Elu"])
    model = _model(node, [("x", (4, 1, 2))], [numpy_helper.from_array(w, "W"), numpy_helper.from_array(r, "R")])
    assert _refusal(model) == {"RNN (activations=['Elu'])": ["rnn"]}


def test_causal_conv_with_an_unknown_activation_is_refused():
    weight = numpy_helper.from_array(np.ones((2, 1, 3), np.float32), "w")
    node = helper.make_node("CausalConvWithState", ["x", "w"], ["y", "state"], name="conv", activation="gelu")
    model = _model(node, [("x", (1, 2, 5))], [weight], opset=27, outputs=(("y", (1, 2, 5)), ("state", (1, 2, 2))))
    assert _refusal(model) == {"CausalConvWithState (activation='gelu')": ["conv"]}


def test_linear_attention_with_an_unknown_rule_is_refused():
    node = helper.make_node("LinearAttention", ["q", "k", "v"], ["y", "state"], name="la", q_num_heads=1,
                            kv_num_heads=1, update_rule="softmax")
    model = _model(node, [("q", (1, 2, 4)), ("k", (1, 2, 4)), ("v", (1, 2, 4))], opset=27,
                   outputs=(("y", (1, 2, 4)), ("state", (1, 1, 4, 4))))
    assert _refusal(model) == {"LinearAttention (update_rule='softmax')": ["la"]}


def _raw_model(node, inputs, initializers=(), opset=17, outputs=()):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, s) for o, s in outputs],
                              [numpy_helper.from_array(v, n) for n, v in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


ZEROS = np.zeros
MALFORMED = {
    "dft-three-components": (helper.make_node("DFT", ["x"], ["y"], axis=1), [("x", (2, 8, 3))], [], 17,
                             [("y", (2, 8, 2))], "expected 1 (real) or 2 (complex)"),
    "dft-axis-on-components": (helper.make_node("DFT", ["x"], ["y"], axis=2), [("x", (2, 8, 2))], [], 17,
                               [("y", (2, 8, 2))], "is not a signal axis"),
    "stft-rank-2": (helper.make_node("STFT", ["x", "step", "", "len"], ["y"]), [("x", (2, 64))],
                    [("step", np.array(4, np.int64)), ("len", np.array(8, np.int64))], 17, [("y", (2, 15, 5, 2))],
                    "expected [batch, length, 1 or 2]"),
    "stft-frame-past-the-signal": (helper.make_node("STFT", ["x", "step", "", "len"], ["y"]), [("x", (1, 6, 1))],
                                   [("step", np.array(4, np.int64)), ("len", np.array(8, np.int64))], 17,
                                   [("y", (1, 1, 5, 2))], "do not frame a signal"),
    "rnn-weights-of-another-input-size": (
        helper.make_node("RNN", ["x", "W", "R"], ["y"], hidden_size=3), [("x", (4, 1, 2))],
        [("W", ZEROS((1, 3, 5), np.float32)), ("R", ZEROS((1, 3, 3), np.float32))], 14, [("y", (4, 1, 1, 3))],
        "do not fit direction"),
    "causal-conv-weight-not-depthwise": (
        helper.make_node("CausalConvWithState", ["x", "w"], ["y", "s"]), [("x", (1, 2, 5))],
        [("w", ZEROS((2, 2, 3), np.float32))], 27, [("y", (1, 2, 5)), ("s", (1, 2, 2))], "are not [N, C, L] and [C, 1, K]"),
    "linear-attention-decay-rank-2": (
        helper.make_node("LinearAttention", ["q", "k", "v", "", "g"], ["y", "s"], q_num_heads=1, kv_num_heads=1,
                         update_rule="gated"),
        [("q", (1, 2, 4)), ("k", (1, 2, 4)), ("v", (1, 2, 4)), ("g", (1, 2))], [], 27,
        [("y", (1, 2, 4)), ("s", (1, 1, 4, 4))], "decay has shape [1, 2]"),
    "linear-attention-heads-not-a-multiple": (
        helper.make_node("LinearAttention", ["q", "k", "v"], ["y", "s"], q_num_heads=3, kv_num_heads=2,
                         update_rule="linear"),
        [("q", (1, 2, 12)), ("k", (1, 2, 8)), ("v", (1, 2, 8))], [], 27, [("y", (1, 2, 12)), ("s", (1, 2, 4, 4))],
        "must be a positive multiple"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_operands_are_refused_with_the_reason(name):
    node, inputs, initializers, opset, outputs, words = MALFORMED[name]
    with pytest.raises(ConversionError) as info:
        load_onnx(_raw_model(node, inputs, initializers, opset, outputs))
    assert words in str(info.value)


def _typed_model(node, inputs, outputs, initializers=(), opset=17):
    return _raw_model(node, inputs, initializers, opset, outputs)


def test_lowerings_keep_a_dynamic_batch():
    """Converted once with a symbolic batch, run at other batch sizes against onnxruntime: the
    lowerings bound no axis but the ones they transform (Gathers, not Slices with a batch end)."""
    from tests.converter.test_dynamic_batch import assert_runs_at_batches, with_symbolic_batch

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((3, 1, 3)).astype(np.float32)
    models = [
        (_typed_model(helper.make_node("DFT", ["x", "n"], ["y"], axis=1, onesided=1), [("x", (2, 1100, 1))],
                      [("y", (2, 513, 2))], [("n", np.array(1024, np.int64))]), 0),
        (_typed_model(helper.make_node("DFT", ["x"], ["y"], axis=1), [("x", (2, 12, 2))], [("y", (2, 12, 2))]), 0),
        (_typed_model(helper.make_node("CausalConvWithState", ["x", "w"], ["y", "s"]), [("x", (2, 3, 6))],
                      [("y", (2, 3, 6)), ("s", (2, 3, 2))], [("w", weight)], 27), 0),
        (_typed_model(helper.make_node("LinearAttention", ["q", "k", "v", "", "g", "b"], ["y", "s"], q_num_heads=2,
                                       kv_num_heads=1),
                      [("q", (2, 3, 8)), ("k", (2, 3, 4)), ("v", (2, 3, 4)), ("g", (2, 3, 1)), ("b", (2, 3, 1))],
                      [("y", (2, 3, 8)), ("s", (2, 1, 4, 4))], opset=27), 0),
    ]
    # (RNN is left out: the harness takes the batch on axis 0, which onnxruntime's RNN (layout 0
    # only) does not have.)
    for model, axis in models:
        assert_runs_at_batches(with_symbolic_batch(model, axis=axis))

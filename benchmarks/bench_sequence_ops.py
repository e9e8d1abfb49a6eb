"""The lowered sequence ops (DFT and STFT as matrix products, RNN unrolled) against onnxruntime's
kernels, one-op models, in one process, interleaved.

    nice python3 -m benchmarks.bench_sequence_ops [--threads 1] [--runs 30]

Each case is a one-node ONNX model converted by converter.convert; edge.Interpreter and an
onnxruntime session (intra_op_num_threads = --threads, all graph optimisations) run it one after
the other, alternating, after a warm-up; the table gives each one's median and the ratio (edge /
onnxruntime: below 1 is edge faster). Both outputs are checked in the same run against the onnx
package's evaluator (numpy's float64 FFT; max abs difference over max |reference|).
"""
from __future__ import annotations

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import converter
from benchmarks.bench_attention import interleaved, interpreter_for, outputs_of


def _model(node, inputs: dict, initializers: dict, opset: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node], "bench",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in node.output],
        [numpy_helper.from_array(v, n) for n, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def _stft(rng, samples: int, frame: int, hop: int):
    """(model, feeds): an STFT of one random signal with a Hann window of ``frame`` samples."""
    signal = rng.standard_normal((1, samples, 1)).astype(np.float32)
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(frame) / frame)).astype(np.float32)
    node = helper.make_node("STFT", ["signal", "step", "window"], ["y"])
    return _model(node, {"signal": signal}, {"step": np.array(hop, np.int64), "window": hann}, 17), {"signal": signal}


def _dft(rng, shape: tuple, **attrs):
    """(model, feeds): a DFT along axis 1 of random signals of ``shape``."""
    x = rng.standard_normal(shape).astype(np.float32)
    return _model(helper.make_node("DFT", ["x"], ["y"], axis=1, **attrs), {"x": x}, {}, 17), {"x": x}


def cases(rng):
    """name -> (what it stands for, model, feeds)."""
    yield ("stft-whisper", "1 s at 16 kHz, 400-sample Hann frames every 160 (Whisper's front end)",
           *_stft(rng, 16000, 400, 160))
    yield "rfft-512", "64 real signals of 512, one-sided", *_dft(rng, (64, 512, 1), onesided=1)
    yield "dft-complex-256", "32 complex signals of 256", *_dft(rng, (32, 256, 2))
    yield ("stft-librosa", "1 s at 22.05 kHz, 2048-sample Hann frames every 512 (librosa's default)",
           *_stft(rng, 22050, 2048, 512))
    yield "dft-complex-2048", "8 complex signals of 2048 (two passes of 32 and 64)", *_dft(rng, (8, 2048, 2))
    for steps, state in ((1, True), (128, False)):
        heads, size = 8, 64
        q = rng.standard_normal((1, steps, heads * size)).astype(np.float32)
        k = rng.standard_normal((1, steps, heads, size)).astype(np.float32)
        k = (k / np.linalg.norm(k, axis=-1, keepdims=True)).reshape(1, steps, -1)
        v = rng.standard_normal((1, steps, heads * size)).astype(np.float32)
        decay = rng.uniform(-0.5, 0.0, (1, steps, heads)).astype(np.float32)
        beta = rng.uniform(0.1, 0.9, (1, steps, heads)).astype(np.float32)
        feeds = {"q": q, "k": k, "v": v, "decay": decay, "beta": beta}
        if state:
            feeds["past"] = rng.standard_normal((1, heads, size, size)).astype(np.float32)
        node = helper.make_node("LinearAttention", ["q", "k", "v", "past" if state else "", "decay", "beta"],
                                ["y", "state"], q_num_heads=heads, kv_num_heads=heads)
        yield (f"linear-attention-t{steps}", f"gated delta rule, {heads} heads of {size}, "
               + ("one decode step with a state" if state else f"a {steps}-token prefill"),
               _model(node, feeds, {}, 27), feeds)
    hidden, width, steps = 128, 64, 64
    bound = hidden ** -0.5
    x = rng.standard_normal((steps, 1, width)).astype(np.float32)
    weights = {"W": rng.uniform(-bound, bound, (1, hidden, width)).astype(np.float32),
               "R": rng.uniform(-bound, bound, (1, hidden, hidden)).astype(np.float32),
               "B": rng.uniform(-bound, bound, (1, 2 * hidden)).astype(np.float32)}
    yield ("rnn-t64", f"tanh RNN, {steps} steps, batch 1, {width} -> {hidden}",
           _model(helper.make_node("RNN", ["x", "W", "R", "B"], ["y", "y_h"], hidden_size=hidden), {"x": x}, weights, 14),
           {"x": x})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from onnx.reference import ReferenceEvaluator

    print("| case | what | edge ms | onnxruntime ms | edge / ort | edge error | onnxruntime error |")
    print("|---|---|---|---|---|---|---|")
    for name, what, model, feeds in cases(np.random.default_rng(0)):
        interpreter = interpreter_for(converter.convert(model).data, feeds, args.threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        edge_ms, ort_ms = interleaved(args.runs, interpreter.invoke, lambda: session.run(None, feeds))
        want = ReferenceEvaluator(model).run(None, feeds)
        errors = [max(float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), 1e-30) for g, w in zip(got, want))
                  for got in (outputs_of(interpreter), session.run(None, feeds))]
        print(f"| {name} | {what} | {edge_ms:.3f} | {ort_ms:.3f} | {edge_ms / ort_ms:.2f} | {errors[0]:.1e} | {errors[1]:.1e} |")


if __name__ == "__main__":
    main()

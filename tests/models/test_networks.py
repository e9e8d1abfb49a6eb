"""Whole networks built in tests/fixtures/models.py, converted and run on the C runtime, against
onnxruntime: max abs diff <= 1e-4 x max |reference|.

The CI variants are smaller than the full networks where the scalar kernels would make the suite
slow: MobileNetV2 and ResNet-18 keep every layer but see 96x96 images; the LSTM language model has a
4000-word vocabulary and 256 hidden units; the BERT encoder has 2 layers and a batch of 2 (hidden 384,
12 heads, 32 tokens, intermediate 1536 as in the full one). EDGESPLIT_FULL_MODELS=1 runs the full
sizes. ``pytest -s`` prints the errors and the arena figures.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fixtures import models
from tests.fixtures.harness import max_abs_diff, run_interpreter, run_onnxruntime

pytest.importorskip("onnxruntime")

FULL = os.environ.get("EDGESPLIT_FULL_MODELS") == "1"

NETWORKS = {
    "mobilenet_v2": dict(width=1.0, resolution=224 if FULL else 96),
    "resnet18": dict(resolution=224 if FULL else 96),
    "lstm_lm": dict() if FULL else dict(vocab=4000, hidden=256, layers=2, tokens=20),
    "bert_encoder": dict() if FULL else dict(layers=2, batch=2),
}
PLANNED_ARENA = ("mobilenet_v2", "resnet18")


def _describe(name: str, kwargs: dict) -> str:
    return f"{name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_matches_onnxruntime(name: str):
    import converter
    import edge

    kwargs = NETWORKS[name]
    model = models.BUILDERS[name](**kwargs)
    feeds = models.sample_inputs(model)
    expected = run_onnxruntime(model, feeds)

    result = converter.convert(model)
    interpreter = edge.Interpreter(model_content=result.data)
    interpreter.allocate_tensors()
    outputs = run_interpreter(interpreter, feeds)

    memory = interpreter.memory_info()
    for output_name, want in expected.items():
        got = outputs[output_name]
        assert got.shape == want.shape, f"{output_name}: shape {got.shape} vs onnxruntime {want.shape}"
        scale = float(np.max(np.abs(want)))
        error = max_abs_diff(got, want)
        print(f"\n{_describe(name, kwargs)} output {output_name!r}: max abs diff {error:.3g}, "
              f"max |onnxruntime| {scale:.3g}, ratio {error / scale:.3g}; "
              f"arena {memory['arena_bytes']:,} B vs naive {memory['naive_bytes']:,} B")
        assert error <= 1e-4 * scale, f"{output_name}: max abs diff {error:.3g} > 1e-4 x {scale:.3g}"

    if name in PLANNED_ARENA:
        assert 0 < memory["arena_bytes"] < memory["naive_bytes"], memory


def test_builders_are_deterministic():
    first = models.mobilenet_v2(width=0.35, resolution=32)
    second = models.mobilenet_v2(width=0.35, resolution=32)
    assert first.SerializeToString() == second.SerializeToString()

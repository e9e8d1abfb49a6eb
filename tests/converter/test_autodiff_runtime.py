"""Trainable files run by the C runtime against the reference executor: the grad signature's
loss and gradients, and the losses of consecutive train steps (which depend on every in-place
update before them), for models covering each kind of gradient rule."""
from __future__ import annotations

import numpy as np
import pytest

from converter.api import convert
from converter.autodiff import TrainingConfig, make_trainable
from converter.reference import run_signature
from converter.writer import write_model
from tests.converter.test_autodiff import conv_bn_model, embedding_model, recurrent_model, small_mlp
from tests.fixtures.digits import digits_cnn
from tests.fixtures.models import resnet18

edge = pytest.importorskip("edge")
RNG = np.random.default_rng(5)


def interpreter_for(graph):
    return edge.Interpreter(model_content=write_model(graph))


CASES = {
    "cnn-sgd": lambda: (convert(digits_cnn(batch=4), training=TrainingConfig(lr=0.1)).graph,
                        {"image": RNG.standard_normal((4, 8, 8, 1)), "labels": np.array([1, 2, 3, 4])}),
    "resnet-bn-nesterov-clip": lambda: (
        convert(resnet18(resolution=12, batch=2, num_classes=3, base_width=4, blocks_per_stage=(1, 1)),
                training=TrainingConfig(optimizer="momentum", nesterov=True, lr=0.05, clip_norm=1.0)).graph,
        {"input": RNG.standard_normal((2, 3, 12, 12)), "labels": np.array([1, 2])}),
    "conv-bn-adagrad": lambda: (make_trainable(conv_bn_model(), optimizer="adagrad", lr=0.1),
                                {"x": RNG.standard_normal((2, 5, 5, 2)), "labels": np.array([3, 1])}),
    "embedding-adam": lambda: (make_trainable(embedding_model(), optimizer="adam", lr=0.05),
                               {"ids": np.array([[1, 3, 3, 0, 6], [3, 2, 1, 1, 1]], np.int64),
                                "labels": np.array([0, 3])}),
    "layernorm-adamw": lambda: (make_trainable(small_mlp("Sigmoid"), optimizer="adamw", lr=0.01, weight_decay=0.1),
                                {"x": RNG.standard_normal((4, 6)), "labels": np.array([0, 2, 1, 2])}),
    "lstm": lambda: (make_trainable(recurrent_model("LSTM", "bidirectional", ("initial", "peephole", "clip"))),
                     {"x": RNG.standard_normal((3, 2, 4)), "labels": np.array([2, 0])}),
    "gru": lambda: (make_trainable(recurrent_model("GRU", "forward", ("linear",)), optimizer="momentum"),
                    {"x": RNG.standard_normal((3, 2, 4)), "labels": np.array([2, 0])}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_runtime_matches_reference(name):
    graph, feeds = CASES[name]()
    feeds = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int32) if k == "labels" else v)
             for k, v in feeds.items()}
    interpreter = interpreter_for(graph)
    actual = interpreter.get_signature_runner("grad")(**feeds)
    expected, _ = run_signature(graph, "grad", feeds)
    interpreter.reset_variables()  # grad updated the BatchNorm running statistics
    for key, value in expected.items():
        scale = max(float(np.max(np.abs(value))), 1e-3)
        assert np.max(np.abs(actual[key] - value)) / scale < 2e-5, key
    train = interpreter.get_signature_runner("train")
    for _ in range(3):
        loss = float(train(**feeds)["loss"])
        reference, variables = run_signature(graph, "train", feeds)
        graph = graph.replace(constants={**graph.constants, **variables})
        assert abs(loss - float(reference["loss"])) < 2e-5 * max(1.0, abs(loss))

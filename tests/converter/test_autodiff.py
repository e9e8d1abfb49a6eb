"""make_trainable and trainable conversions: whole-model gradients against central differences
(float64), train steps through the reference executor, sparse embedding gradients, frozen
parameters, the written file and the CLI."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from converter import cli
from converter.api import convert
from converter.autodiff import LEARNING_RATE, NotDifferentiableError, TrainingConfig, make_trainable
from converter.builder import GraphBuilder
from converter.errors import ConversionError
from converter.reader import read_model
from converter.reference import run_signature
from converter.writer import write_model
from tests.fixtures.digits import digits_cnn, digits_mlp
from tests.fixtures.models import resnet18

RNG = np.random.default_rng(11)


def float64_graph(graph, feeds):
    """The graph with every float constant and the float feeds as float64 constants, for runs
    with check_types=False."""
    constants = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in graph.constants.items()}
    for k, v in feeds.items():
        if np.asarray(v).dtype.kind == "f":
            constants[k] = np.asarray(v, np.float64)
    return graph.replace(constants=constants)


def check_whole_model_gradients(graph, feeds, per_param=4, tol=1e-6, h=1e-6):
    float_feeds = {k for k, v in feeds.items() if np.asarray(v).dtype.kind == "f"}
    other = {k: v for k, v in feeds.items() if k not in float_feeds}
    g64 = float64_graph(graph, feeds)
    outputs, _ = run_signature(g64, "grad", other, check_types=False)
    params = json.loads(graph.metadata["training.trainable"])
    assert params

    def loss_with(name, value):
        perturbed = g64.replace(constants={**g64.constants, name: value})
        return float(run_signature(perturbed, "grad", other, check_types=False)[0]["loss"])

    for name in params:
        grad = outputs.get(f"grad/{name}")
        if grad is None:  # sparse: scatter the rows
            grad = np.zeros(graph.tensors[name].shape)
            np.add.at(grad, outputs[f"grad/{name}/indices"], outputs[f"grad/{name}/rows"])
        base = g64.constants[name]
        assert grad.shape == base.shape
        flat = list(np.ndindex(base.shape))
        picks = [flat[k] for k in RNG.choice(len(flat), size=min(per_param, len(flat)), replace=False)]
        for index in picks:
            up, down = base.copy(), base.copy()
            up[index] += h
            down[index] -= h
            numeric = (loss_with(name, up) - loss_with(name, down)) / (2 * h)
            scale = max(abs(numeric), np.max(np.abs(grad)), 1e-8)
            assert abs(grad[index] - numeric) / scale < tol, f"{name}{index}: {grad[index]} vs {numeric}"


def small_mlp(activation="Tanh"):
    b = GraphBuilder("mlp")
    x = b.input("x", (4, 6))
    h = b.FullyConnected(x, b.constant("fc1.weight", RNG.standard_normal((5, 6))),
                         b.constant("fc1.bias", RNG.standard_normal(5)), activation=(activation, 0.0, 0.0))
    h = b.LayerNorm(h, b.constant("ln.scale", RNG.standard_normal(5)), b.constant("ln.bias", RNG.standard_normal(5)),
                    axis=1, epsilon=1e-3)
    h = b.Mul(h, b.constant("gain", RNG.standard_normal(5)))
    logits = b.FullyConnected(h, b.constant("fc2.weight", RNG.standard_normal((3, 5))),
                              b.constant("fc2.bias", RNG.standard_normal(3)))
    b.output(b.Softmax(logits, axis=1), name="probs")
    return b.build()


def test_mlp_gradients_match_finite_differences():
    graph = make_trainable(small_mlp("Sigmoid"))
    assert json.loads(graph.metadata["training.trainable"]) == [
        "fc1.weight", "fc1.bias", "ln.scale", "ln.bias", "gain", "fc2.weight", "fc2.bias"]
    feeds = {"x": RNG.standard_normal((4, 6)), "labels": np.array([0, 2, 1, 2], np.int32)}
    check_whole_model_gradients(graph, feeds)


def test_softmax_output_is_not_in_the_loss_and_infer_is_unchanged():
    source = small_mlp()
    graph = make_trainable(source)
    loss_node = next(n for n in graph.nodes if n.op == "Loss")
    producer = next(n for n in graph.nodes if loss_node.inputs[0] in n.outputs)
    assert producer.op == "FullyConnected"  # the logits, not the softmax
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    from converter.reference import run
    expected = run(source, {"x": x})["probs"]
    actual, _ = run_signature(graph, "infer", {"x": x})
    assert np.array_equal(actual["probs"], expected)


def test_resnet_with_batch_norm_gradients_and_running_statistics():
    model = resnet18(resolution=12, batch=2, num_classes=3, base_width=2, blocks_per_stage=(1, 1))
    graph = convert(model, training=TrainingConfig()).graph
    assert graph.op_counts()["BatchNormTrain"] == 6
    x = RNG.standard_normal((2, 3, 12, 12))
    check_whole_model_gradients(graph, {"input": x, "labels": np.array([2, 0], np.int32)}, per_param=2)
    # one train step moves the running statistics toward the batch statistics (momentum 0.9)
    feeds = {"input": x.astype(np.float32), "labels": np.array([2, 0], np.int32)}
    _, after = run_signature(graph, "train", feeds)
    stats = [n.inputs[3] for n in graph.nodes if n.op == "BatchNormTrain"]
    assert all(s in graph.variables for s in stats)
    assert all(not np.array_equal(after[s], graph.constants[s]) for s in stats)


def test_infer_signature_matches_onnxruntime_with_batch_norm_variables():
    import onnxruntime as ort

    model = resnet18(resolution=12, batch=2, num_classes=3, base_width=4, blocks_per_stage=(1, 1))
    graph = convert(model, training=TrainingConfig()).graph
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    actual, _ = run_signature(graph, "infer", {"input": x})
    assert np.max(np.abs(actual["logits"] - expected)) < 1e-4


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw", "adagrad"])
def test_train_steps_decrease_the_loss(optimizer):
    graph = convert(digits_mlp(batch=16, dynamic_batch=False),
                    training=TrainingConfig(optimizer=optimizer, lr=0.05 if optimizer in ("sgd", "momentum") else 0.01,
                                            weight_decay=1e-4)).graph
    x = RNG.standard_normal((16, 64)).astype(np.float32)
    feeds = {"pixels": x, "labels": RNG.integers(0, 10, 16).astype(np.int32)}
    losses = []
    for _ in range(8):
        out, variables = run_signature(graph, "train", feeds)
        losses.append(float(out["loss"]))
        graph = graph.replace(constants={**graph.constants, **variables})
    assert losses[-1] < losses[0] * 0.8, losses


def test_sgd_train_step_is_grad_times_learning_rate():
    graph = convert(digits_cnn(batch=4), training=TrainingConfig(optimizer="sgd", lr=0.1)).graph
    feeds = {"image": RNG.standard_normal((4, 8, 8, 1)).astype(np.float32),
             "labels": np.array([1, 2, 3, 4], np.int32)}
    grads, _ = run_signature(graph, "grad", feeds)
    out, after = run_signature(graph, "train", feeds)
    assert out["loss"] == grads["loss"]
    for name in json.loads(graph.metadata["training.trainable"]):
        expected = graph.constants[name] - np.float32(0.1) * grads[f"grad/{name}"]
        assert np.allclose(after[name], expected, rtol=1e-6, atol=1e-7), name
    assert after[LEARNING_RATE] == np.float32(0.1)


def embedding_model(vocab=7, dim=3, tokens=5):
    b = GraphBuilder("bag")
    ids = b.input("ids", (2, tokens), dtype="int64")
    table = b.constant("embedding", RNG.standard_normal((vocab, dim)))
    e = b.Gather(table, ids, axis=0)
    pooled = b.ReduceMean(e, axes=(1,), keepdims=False)
    b.output(b.FullyConnected(pooled, b.constant("head.weight", RNG.standard_normal((4, dim))),
                              b.constant("head.bias", np.zeros(4))), name="logits")
    return b.build()


def test_embedding_gradient_is_sparse_by_row_and_matches_the_dense_one():
    graph = make_trainable(embedding_model(), optimizer="momentum", lr=0.1)
    grad = graph.signatures["grad"]
    assert "grad/embedding/rows" in grad.outputs and "grad/embedding/indices" in grad.outputs
    assert "grad/embedding" not in grad.outputs
    ids = np.array([[1, 3, 3, 0, 6], [3, 2, 1, 1, 1]], np.int64)
    feeds = {"ids": ids, "labels": np.array([0, 3], np.int32)}
    check_whole_model_gradients(graph, feeds, per_param=6)
    out, _ = run_signature(graph, "grad", feeds)
    assert out["grad/embedding/indices"].dtype == np.int32
    assert out["grad/embedding/rows"].shape == (10, 3)
    # a train step changes exactly the rows that were looked up
    _, after = run_signature(graph, "train", feeds)
    changed = np.flatnonzero(np.any(after["embedding"] != graph.constants["embedding"], axis=1))
    assert changed.tolist() == [0, 1, 2, 3, 6]
    update = next(n for n in graph.nodes if n.name == "optimizer/update/embedding")
    assert update.attrs["sparse"] is True


def test_freeze_keeps_parameters_constant():
    graph = convert(digits_cnn(batch=4), training=TrainingConfig(freeze=("conv", "dense/bias"))).graph
    trainable = json.loads(graph.metadata["training.trainable"])
    assert trainable == ["dense/weights", "head/weights", "head/bias"]
    for frozen in ("conv1/weights", "conv2/bias", "dense/bias"):
        assert frozen in graph.constants and frozen not in graph.variables
        assert f"grad/{frozen}" not in graph.signatures["grad"].outputs
    # nothing before the first trainable layer is differentiated
    assert "Conv2DBackpropInput" not in graph.op_counts()
    assert "Conv2DBackpropFilter" not in graph.op_counts()


def conv_bn_model():
    b = GraphBuilder("conv_bn")
    x = b.input("x", (2, 5, 5, 2))
    y = b.Conv2D(x, b.constant("conv.weight", RNG.standard_normal((3, 3, 3, 2))), pads=(1, 1, 1, 1), layout="NHWC")
    y = b.BatchNorm(y, b.constant("bn.scale", RNG.standard_normal(3)), b.constant("bn.bias", RNG.standard_normal(3)),
                    b.constant("bn.mean", RNG.standard_normal(3)), b.constant("bn.var", RNG.uniform(0.5, 2, 3)),
                    epsilon=1e-3, layout="NHWC")
    y = b.ReduceMean(b.Relu(y), axes=(1, 2), keepdims=False)
    b.output(b.FullyConnected(y, b.constant("head.weight", RNG.standard_normal((4, 3)))), name="logits")
    return b.build()


def test_frozen_batch_norm_stays_in_inference_form():
    graph = make_trainable(conv_bn_model(), freeze=["bn."])
    assert "BatchNormTrain" not in graph.op_counts()
    assert not {"bn.mean", "bn.var"} & graph.variables
    feeds = {"x": RNG.standard_normal((2, 5, 5, 2)), "labels": np.array([3, 1], np.int32)}
    check_whole_model_gradients(graph, feeds)


def test_training_batch_norm_reads_variables_in_infer():
    graph = make_trainable(conv_bn_model())
    assert {"bn.mean", "bn.var", "bn.scale", "bn.bias"} <= graph.variables
    infer = [graph.nodes[i] for i in graph.signatures["infer"].nodes]
    read = {i for n in infer for i in n.inputs}
    assert {"bn.mean", "bn.var", "bn.scale", "bn.bias"} <= read
    feeds = {"x": RNG.standard_normal((2, 5, 5, 2)), "labels": np.array([3, 1], np.int32)}
    check_whole_model_gradients(graph, feeds)
    # after a step, infer reads the updated running statistics
    _, after = run_signature(graph, "train", {k: np.asarray(v, np.float32) if k == "x" else v
                                              for k, v in feeds.items()})
    stepped = graph.replace(constants={**graph.constants, **after})
    from converter.reference import run_node
    x = RNG.standard_normal((2, 5, 5, 2)).astype(np.float32)
    y, _ = run_signature(stepped, "infer", {"x": x})
    conv = run_node("Conv2D", [x, after["conv.weight"]], {"pads": (1, 1, 1, 1), "layout": "NHWC"})[0]
    bn = run_node("BatchNorm", [conv, after["bn.scale"], after["bn.bias"], after["bn.mean"], after["bn.var"]],
                  {"epsilon": 1e-3, "layout": "NHWC"})[0]
    pooled = np.maximum(bn, 0).mean(axis=(1, 2))
    assert np.allclose(y["logits"], pooled @ after["head.weight"].T, rtol=1e-5, atol=1e-6)


def test_freeze_prefix_matching_nothing_is_an_error():
    with pytest.raises(ConversionError, match=r"--freeze \['nope'\] match no parameter"):
        make_trainable(small_mlp(), freeze=["nope"])


def test_everything_frozen_is_an_error():
    with pytest.raises(ConversionError, match="nothing left to train"):
        make_trainable(small_mlp(), freeze=["fc", "ln", "gain"])


def test_non_differentiable_node_on_the_path_is_named():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    h = b.FullyConnected(x, b.constant("w1", RNG.standard_normal((3, 3))))
    h = b.op("Floor", h, name="the_floor")
    b.output(b.FullyConnected(h, b.constant("w2", RNG.standard_normal((2, 3)))), name="y")
    with pytest.raises(NotDifferentiableError, match="the_floor.*Floor"):
        make_trainable(b.build())
    # freezing what lies before it makes the model trainable
    make_trainable(b.build(), freeze=["w1"])


@pytest.mark.parametrize("loss,final", [("bce", "Sigmoid"), ("mse", None)])
def test_bce_and_mse(loss, final):
    b = GraphBuilder()
    x = b.input("x", (3, 4))
    y = b.FullyConnected(x, b.constant("w", RNG.standard_normal((2, 4))), b.constant("b", RNG.standard_normal(2)))
    if final:
        y = b.op(final, y)
    b.output(y, name="out")
    graph = make_trainable(b.build(), loss=loss)
    assert json.loads(graph.metadata["training.labels"]) == {"dtype": "float32", "shape": [3, 2]}
    loss_node = next(n for n in graph.nodes if n.op == "Loss")
    assert graph.tensors[loss_node.inputs[0]] == graph.tensors["out"]
    if final:
        assert loss_node.inputs[0] != "out"
    feeds = {"x": RNG.standard_normal((3, 4)), "labels": RNG.uniform(size=(3, 2))}
    check_whole_model_gradients(graph, feeds)


def test_clip_norm_bounds_the_applied_update():
    graph = make_trainable(small_mlp(), optimizer="sgd", lr=1.0, clip_norm=0.01)
    feeds = {"x": RNG.standard_normal((4, 6)).astype(np.float32), "labels": np.array([0, 1, 2, 0], np.int32)}
    _, after = run_signature(graph, "train", feeds)
    params = json.loads(graph.metadata["training.trainable"])
    step = np.sqrt(sum(np.sum((after[p].astype(np.float64) - graph.constants[p]) ** 2) for p in params))
    assert abs(step - 0.01) < 1e-6


def test_written_file_round_trips_with_three_signatures():
    data = convert(digits_cnn(batch=4), training=TrainingConfig(optimizer="adam", lr=3e-3)).data
    graph = read_model(data)
    assert sorted(graph.signatures) == ["grad", "infer", "train"]
    assert write_model(graph) == data
    assert graph.metadata["training.loss"] == "cross_entropy"
    options = json.loads(graph.metadata["training.optimizer"])
    assert options["kind"] == "adam" and abs(options["learning_rate"] - 3e-3) < 1e-12
    assert json.loads(graph.metadata["training.labels"]) == {"dtype": "int32", "shape": [4]}
    trainable = json.loads(graph.metadata["training.trainable"])
    for name in trainable:
        assert name in graph.variables
        for slot in ("m", "v", "step"):
            assert f"optimizer/{name}/{slot}" in graph.variables
    assert LEARNING_RATE in graph.variables and graph.constants[LEARNING_RATE] == np.float32(3e-3)
    assert graph.signatures["grad"].inputs == {"image": "image", "labels": "labels"}
    assert set(graph.signatures["grad"].outputs) == {"loss"} | {f"grad/{n}" for n in trainable}
    assert list(graph.signatures["train"].outputs) == ["loss"]
    feeds = {"image": RNG.standard_normal((4, 8, 8, 1)).astype(np.float32), "labels": np.array([0, 1, 2, 3], np.int32)}
    out_read, after_read = run_signature(graph, "train", feeds)
    out_built, after_built = run_signature(convert(digits_cnn(batch=4), training=TrainingConfig(
        optimizer="adam", lr=3e-3)).graph, "train", feeds)
    assert out_read["loss"] == out_built["loss"]
    for name in trainable:
        assert np.array_equal(after_read[name], after_built[name])


def test_trainable_with_quantize_is_refused():
    with pytest.raises(ConversionError, match="cannot be quantized"):
        convert(digits_mlp(batch=4, dynamic_batch=False), training=TrainingConfig(), quantize="fp16")


def _onnx_mlp(path):
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(RNG.standard_normal((8, 6)).astype(np.float32), "body.weight")
    b1 = numpy_helper.from_array(np.zeros(6, np.float32), "body.bias")
    w2 = numpy_helper.from_array(RNG.standard_normal((6, 3)).astype(np.float32), "head.weight")
    # The importer names a MatMul's (transposed) weight after the node, as PyTorch's exports
    # name nodes after modules ("/fc/Gemm"): freezing goes by those prefixes.
    nodes = [helper.make_node("MatMul", ["x", "body.weight"], ["h0"], name="body.matmul"),
             helper.make_node("Add", ["h0", "body.bias"], ["h1"], name="body.add"),
             helper.make_node("Relu", ["h1"], ["h2"], name="body.relu"),
             helper.make_node("MatMul", ["h2", "head.weight"], ["logits"], name="head.matmul")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [5, 3])], [w1, b1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_cli_trainable(tmp_path, capsys):
    model = tmp_path / "mlp.onnx"
    _onnx_mlp(str(model))
    out = tmp_path / "mlp.edge"
    code = cli.main(["convert", str(model), "-o", str(out), "--trainable", "--freeze", "body.",
                     "--loss", "cross_entropy", "--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.1"])
    assert code == 0, capsys.readouterr().err
    graph = read_model(out.read_bytes())
    assert json.loads(graph.metadata["training.trainable"]) == ["head.matmul/weight"]
    assert json.loads(graph.metadata["training.optimizer"])["weight_decay"] == pytest.approx(0.1)
    assert not [v for v in graph.variables if v.startswith("body.")]


@pytest.mark.parametrize("extra,message", [
    (["--trainable", "--freeze", "nothing"], "match no parameter"),
    (["--trainable", "--quantize", "fp16"], "cannot be combined with --quantize"),
    (["--freeze", "body."], "--freeze needs --trainable"),
])
def test_cli_errors(tmp_path, capsys, extra, message):
    model = tmp_path / "mlp.onnx"
    _onnx_mlp(str(model))
    code = cli.main(["convert", str(model), "-o", str(tmp_path / "x.edge")] + extra)
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.edge").exists()


def recurrent_model(op, direction, extras):
    """X [seq 3, batch 2, in 4] -> op -> mean over time of Y plus Y_h -> FC -> logits [2, 3]."""
    hidden, dirs = 3, 2 if direction == "bidirectional" else 1
    gates = 4 if op == "LSTM" else 3
    b = GraphBuilder(op.lower())
    x = b.input("x", (3, 2, 4))
    w = b.constant(f"{op}.W", RNG.standard_normal((dirs, gates * hidden, 4)) * 0.5)
    r = b.constant(f"{op}.R", RNG.standard_normal((dirs, gates * hidden, hidden)) * 0.5)
    inputs = [x, w, r, b.constant(f"{op}.B", RNG.standard_normal((dirs, 2 * gates * hidden)) * 0.5), None]
    if "initial" in extras:
        inputs.append(b.constant(f"{op}.h0", RNG.standard_normal((dirs, 2, hidden))))
        if op == "LSTM":
            inputs.append(b.constant(f"{op}.c0", RNG.standard_normal((dirs, 2, hidden))))
    if "peephole" in extras:
        inputs += [None] * (7 - len(inputs)) + [b.constant(f"{op}.P", RNG.standard_normal((dirs, 3 * hidden)))]
    attrs = {"hidden_size": hidden, "direction": direction, "clip": 1.5 if "clip" in extras else 0.0}
    if op == "GRU":
        attrs["linear_before_reset"] = "linear" in extras
    outs = b.op_multi(op, *inputs, **attrs)
    y, y_h = outs[0], outs[1]
    pooled = b.Reshape(b.ReduceMean(y, axes=(0,), keepdims=False), shape=(2, dirs * hidden))
    last = b.Reshape(b.Transpose(y_h, perm=(1, 0, 2)), shape=(2, dirs * hidden))
    features = b.Concat(pooled, last, axis=1)
    b.output(b.FullyConnected(features, b.constant("head.weight", RNG.standard_normal((3, 2 * dirs * hidden)))),
             name="logits")
    return b.build()


@pytest.mark.parametrize("op,direction,extras", [
    ("LSTM", "forward", ()), ("LSTM", "bidirectional", ("initial", "peephole", "clip")),
    ("LSTM", "reverse", ("initial",)),
    ("GRU", "forward", ()), ("GRU", "bidirectional", ("initial", "linear")), ("GRU", "reverse", ("clip",)),
])
def test_recurrent_ops_unrolled_for_training(op, direction, extras):
    source = recurrent_model(op, direction, extras)
    graph = make_trainable(source)
    assert op in graph.op_counts()  # the infer signature keeps the fused op
    train_ops = {graph.nodes[i].op for i in graph.signatures["grad"].nodes}
    assert op not in train_ops
    x = RNG.standard_normal((3, 2, 4))
    labels = np.array([2, 0], np.int32)
    # the unrolled forward computes what the fused op computes: same loss as Loss(infer logits)
    g64 = float64_graph(graph, {"x": x})
    loss = run_signature(g64, "grad", {"labels": labels}, check_types=False)[0]["loss"]
    logits = run_signature(g64, "infer", {}, check_types=False)[0]["logits"]
    from converter.reference import run_node
    assert abs(loss - run_node("Loss", [logits, labels], {"kind": "softmax_cross_entropy"})[0]) < 1e-12
    check_whole_model_gradients(graph, {"x": x, "labels": labels}, per_param=3)


def test_frozen_recurrent_layer_stays_fused_in_training():
    graph = make_trainable(recurrent_model("GRU", "forward", ()), freeze=["GRU."])
    train_ops = [graph.nodes[i].op for i in graph.signatures["grad"].nodes]
    assert "GRU" in train_ops and "Split" not in train_ops

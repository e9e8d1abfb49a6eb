"""Each pass on small graphs: the reference executor's outputs before and after agree (the pass
keeps values), and the structure is the one the pass promises."""
from __future__ import annotations

import numpy as np
import pytest

from converter import reference
from converter.builder import GraphBuilder
from converter.ir import Graph
from converter.passes import (
    PIPELINE, cancel_transposes, fold_batch_norm, fold_constants, fuse_activation,
    lower_batch_norm, optimize, remove_dead_nodes, remove_identities, to_nhwc)

RNG = np.random.default_rng(7)
TOLERANCE = 1e-5


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(graph.tensors[name].shape).astype(graph.tensors[name].dtype)
            for name in graph.inputs}


def assert_same_values(before: Graph, after: Graph, seed: int = 0) -> None:
    feeds = random_feeds(before, seed)
    expected = reference.run(before, feeds)
    actual = reference.run(after, feeds)
    assert list(after.outputs) == list(before.outputs)
    for name in before.outputs:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=TOLERANCE * scale,
                                   err_msg=f"output {name!r}")


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]


def batch_norm_params(b: GraphBuilder, channels: int, prefix: str):
    return (b.constant(f"{prefix}/scale", RNG.uniform(0.5, 1.5, channels).astype(np.float32)),
            b.constant(f"{prefix}/bias", randn(channels, scale=0.1)),
            b.constant(f"{prefix}/mean", randn(channels, scale=0.2)),
            b.constant(f"{prefix}/var", RNG.uniform(0.5, 2.0, channels).astype(np.float32)))


def conv(b, x, cin, cout, k=3, groups=1, stride=1, bias=True, name="conv"):
    w = b.constant(f"{name}/w", randn(cout, cin // groups, k, k, scale=0.3))
    bias_name = b.constant(f"{name}/b", randn(cout, scale=0.1)) if bias else None
    return b.Conv2D(x, w, bias_name, strides=(stride, stride), dilations=(1, 1),
                    pads=(k // 2,) * 4, groups=groups, layout="NCHW", name=name)


# ---- fold_constants ----

def test_fold_constants_evaluates_constant_subgraphs():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    c = b.Mul(b.constant("a", randn(2, 3)), b.constant("k", np.float32(2.0)))
    c = b.Add(c, b.constant("one", np.ones((1, 3), np.float32)))
    b.output(b.Add(x, c), "y")
    graph = b.build()
    folded = fold_constants(graph)
    assert ops(folded) == ["Add"]
    assert folded.nodes[0].inputs[1] in folded.constants
    assert set(folded.constants) == {folded.nodes[0].inputs[1]}, "the inputs of folded nodes were dropped"
    assert_same_values(graph, folded)


def test_fold_constants_leaves_variables_and_huge_broadcasts():
    b = GraphBuilder()
    x = b.input("x", (1,))
    v = b.variable("v", randn(3))
    big = b.BroadcastTo(b.constant("c", np.ones((1, 1), np.float32)), shape=(1200, 1000))
    small = b.Neg(v)
    b.output(b.Add(b.Add(big, x), b.ReduceSum(small, axes=(0,), keepdims=True)), "y")
    graph = b.build()
    folded = fold_constants(graph)
    assert "BroadcastTo" in ops(folded) and "Neg" in ops(folded)


def test_fold_constants_keeps_graph_outputs_produced_by_nodes():
    b = GraphBuilder()
    b.input("x", (2,))
    b.output(b.Neg(b.constant("c", randn(2))), "y")
    graph = b.build()
    assert ops(fold_constants(graph)) == ["Neg"]


# ---- cleanup ----

def test_remove_dead_nodes_drops_unreachable_nodes_and_constants():
    b = GraphBuilder()
    x = b.input("x", (4,))
    b.Mul(x, b.constant("unused_weight", randn(4)))
    b.output(b.Relu(x), "y")
    graph = b.build()
    cleaned = remove_dead_nodes(graph)
    assert ops(cleaned) == ["Relu"]
    assert "unused_weight" not in cleaned.constants and "unused_weight" not in cleaned.tensors
    assert len(graph.nodes) == 2, "the pass must not modify its argument"
    assert_same_values(graph, cleaned)


def test_remove_identities_renames_consumers_and_keeps_output_names():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4))
    y = b.Identity(x)
    y = b.Reshape(y, shape=(2, 3, 4))
    y = b.Transpose(b.Relu(y), perm=(0, 1, 2))
    y = b.Cast(y, to="float32")
    y = b.Slice(y, starts=(0, 0, 0), ends=(2, 3, 4), steps=(1, 1, 1))
    y = b.Pad(y, mode="constant", pads=(0,) * 6, value=0.0)
    b.output(y, "y")
    graph = b.build()
    cleaned = remove_identities(graph)
    assert ops(cleaned) == ["Relu"]
    assert cleaned.nodes[0].inputs == ("x",) and cleaned.nodes[0].outputs == ("y",)
    assert_same_values(graph, cleaned)


def test_remove_identities_keeps_real_slices_and_input_to_output_identity():
    b = GraphBuilder()
    x = b.input("x", (4, 3))
    b.output(b.Identity(x), "passthrough")
    b.output(b.Slice(x, starts=(3, 0), ends=(-5, 3), steps=(-1, 1)), "reversed")
    graph = b.build()
    cleaned = remove_identities(graph)
    assert sorted(ops(cleaned)) == ["Identity", "Slice"]
    assert_same_values(graph, cleaned)


# ---- BatchNorm ----

@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batch_norm_into_conv(groups):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 6))
    y = conv(b, x, 4, 6, groups=groups, bias=groups == 1)
    y = b.BatchNorm(y, *batch_norm_params(b, 6, "bn"), epsilon=1e-3, layout="NCHW")
    b.output(y, "y")
    graph = b.build()
    folded = fold_batch_norm(graph)
    assert ops(folded) == ["Conv2D"]
    assert_same_values(graph, folded)


@pytest.mark.parametrize("groups", [1, 2])
def test_fold_batch_norm_into_conv_transpose(groups):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 5, 5))
    w = b.constant("w", randn(4, 6 // groups, 3, 3, scale=0.3))
    y = b.ConvTranspose2D(x, w, strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1),
                          output_padding=(1, 1), groups=groups, layout="NCHW")
    b.output(b.BatchNorm(y, *batch_norm_params(b, 6, "bn"), epsilon=1e-5, layout="NCHW"), "y")
    graph = b.build()
    folded = fold_batch_norm(graph)
    assert ops(folded) == ["ConvTranspose2D"]
    assert_same_values(graph, folded)


def test_fold_batch_norm_into_fully_connected():
    b = GraphBuilder()
    x = b.input("x", (3, 8))
    y = b.FullyConnected(x, b.constant("w", randn(5, 8)), b.constant("b", randn(5)))
    b.output(b.BatchNorm(y, *batch_norm_params(b, 5, "bn"), epsilon=1e-5, layout="NCHW"), "y")
    graph = b.build()
    folded = fold_batch_norm(graph)
    assert ops(folded) == ["FullyConnected"]
    assert_same_values(graph, folded)


def test_fold_batch_norm_skips_shared_conv_output():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4))
    y = conv(b, x, 2, 2)
    b.output(b.BatchNorm(y, *batch_norm_params(b, 2, "bn"), epsilon=1e-5, layout="NCHW"), "y")
    b.output(y, "conv_out")
    graph = b.build()
    assert "BatchNorm" in ops(fold_batch_norm(graph))


def test_lower_batch_norm_to_mul_add():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 5))
    b.output(b.BatchNorm(x, *batch_norm_params(b, 3, "bn"), epsilon=1e-5, layout="NCHW"), "y")
    graph = b.build()
    lowered = lower_batch_norm(graph)
    assert ops(lowered) == ["Mul", "Add"]
    scale = lowered.constants[lowered.nodes[0].inputs[1]]
    assert scale.shape == (3, 1, 1)
    assert_same_values(graph, lowered)


# ---- fuse_activation ----

@pytest.mark.parametrize("activation, attrs, expected", [
    ("Relu", {}, ("Relu", 0.0, 0.0)),
    ("Clip", {"min": 0.0, "max": 6.0}, ("Clip", 0.0, 6.0)),
    ("LeakyRelu", {"alpha": 0.1}, ("LeakyRelu", 0.1, 0.0)),
    ("HardSigmoid", {"alpha": 0.2, "beta": 0.4}, ("HardSigmoid", 0.2, 0.4)),
    ("Sigmoid", {}, ("Sigmoid", 0.0, 0.0)),
])
def test_fuse_activation_into_conv(activation, attrs, expected):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 5, 5))
    b.output(b.op(activation, conv(b, x, 3, 4), **attrs), "y")
    graph = b.build()
    fused = fuse_activation(graph)
    assert ops(fused) == ["Conv2D"]
    name, alpha, beta = fused.nodes[0].attrs["activation"]
    assert name == expected[0] and (alpha, beta) == pytest.approx(expected[1:])
    assert fused.nodes[0].outputs == ("y",)
    assert_same_values(graph, fused)


def test_fuse_activation_needs_a_single_hidden_consumer():
    b = GraphBuilder()
    x = b.input("x", (2, 4))
    h = b.FullyConnected(x, b.constant("w", randn(4, 4)))
    b.output(b.Relu(h), "y")
    b.output(b.Tanh(h), "z")
    visible = b.Add(x, x)
    b.output(b.Relu(visible), "r")
    b.output(visible, "sum")
    graph = b.build()
    assert ops(fuse_activation(graph)) == ops(graph)


def test_fuse_activation_never_fuses_twice():
    b = GraphBuilder()
    x = b.input("x", (2, 4))
    b.output(b.Sigmoid(b.Relu(b.Add(x, x))), "y")
    graph = b.build()
    fused = fuse_activation(graph)
    assert ops(fused) == ["Add", "Sigmoid"]
    assert_same_values(graph, fused)



def test_fuse_activation_through_a_reshape():
    """FullyConnected -> Reshape -> GeluTanh (GPT-2's 2-D Gemm restored to [batch, sequence, N]):
    the activation moves onto the FullyConnected and the Reshape produces its output."""
    b = GraphBuilder()
    x = b.input("x", (6, 4))
    h = b.FullyConnected(x, b.constant("w", randn(8, 4)))
    b.output(b.op("GeluTanh", b.op("Reshape", h, shape=(2, 3, 8))), "y")
    graph = b.build()
    fused = fuse_activation(graph)
    assert ops(fused) == ["FullyConnected", "Reshape"]
    assert fused.nodes[0].attrs["activation"][0] == "GeluTanh"
    assert fused.nodes[1].outputs == ("y",)
    assert_same_values(graph, fused)


def test_fuse_activation_not_through_a_reshape_read_elsewhere():
    b = GraphBuilder()
    x = b.input("x", (6, 4))
    flat = b.op("Reshape", b.FullyConnected(x, b.constant("w", randn(8, 4))), shape=(2, 3, 8))
    b.output(b.Relu(flat), "y")
    b.output(b.Neg(flat), "z")
    graph = b.build()
    assert ops(fuse_activation(graph)) == ops(graph)


# ---- layout ----

def test_to_nhwc_wraps_conv_and_permutes_weights():
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 7))
    b.output(conv(b, x, 3, 5, k=3, stride=2), "y")
    graph = b.build()
    converted = to_nhwc(graph)
    assert ops(converted) == ["Transpose", "Conv2D", "Transpose"]
    node = converted.nodes[1]
    assert node.attrs["layout"] == "NHWC"
    assert converted.constants[node.inputs[1]].shape == (5, 3, 3, 3)
    assert converted.tensors["x"].shape == (1, 3, 6, 7), "graph inputs keep their declared layout"
    assert_same_values(graph, converted)


@pytest.mark.parametrize("groups", [1, 2])
def test_to_nhwc_conv_transpose_weights(groups):
    b = GraphBuilder()
    x = b.input("x", (1, 4, 3, 3))
    w = b.constant("w", randn(4, 6 // groups, 3, 2))
    b.output(b.ConvTranspose2D(x, w, strides=(2, 1), dilations=(1, 1), pads=(0, 1, 1, 0),
                               output_padding=(1, 0), groups=groups, layout="NCHW"), "y")
    graph = b.build()
    converted = to_nhwc(graph)
    node = next(n for n in converted.nodes if n.op == "ConvTranspose2D")
    assert converted.constants[node.inputs[1]].shape == (6, 3, 2, 4 // groups)
    assert_same_values(graph, converted)


def test_to_nhwc_pool_batch_norm_and_lrn():
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 6))
    y = b.MaxPool2D(x, kernel=(2, 2), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0), layout="NCHW")
    y = b.BatchNorm(y, *batch_norm_params(b, 4, "bn"), epsilon=1e-5, layout="NCHW")
    y = b.LRN(y, size=3, alpha=1e-3, beta=0.75, bias=1.0, layout="NCHW")
    b.output(y, "y")
    graph = b.build()
    converted = to_nhwc(graph)
    assert all(n.attrs.get("layout", "NHWC") == "NHWC" for n in converted.nodes)
    assert_same_values(graph, converted)


def test_cancel_transposes_removes_inverse_pairs():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4, 5))
    y = b.Transpose(b.Transpose(x, perm=(0, 2, 3, 1)), perm=(0, 3, 1, 2))
    b.output(b.Relu(y), "y")
    graph = b.build()
    cancelled = cancel_transposes(graph)
    assert ops(cancelled) == ["Relu"]
    assert_same_values(graph, cancelled)


def test_cancel_transposes_composes_non_inverse_pairs():
    b = GraphBuilder()
    x = b.input("x", (2, 3, 4))
    b.output(b.Transpose(b.Transpose(x, perm=(1, 0, 2)), perm=(0, 2, 1)), "y")
    graph = b.build()
    cancelled = cancel_transposes(graph)
    assert ops(cancelled) == ["Transpose"]
    assert_same_values(graph, cancelled)


NCHW_TO_NHWC, NHWC_TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


@pytest.mark.parametrize("middle", [
    lambda b, t: b.Add(t, b.constant(None, randn(3, 1, 1))),
    lambda b, t: b.Mul(t, b.constant(None, randn(1, 3, 4, 1))),
    lambda b, t: b.PRelu(t, b.constant(None, randn(3, 1, 1))),
    lambda b, t: b.Sub(b.constant(None, np.float32(1.5)), b.Sigmoid(t)),
    lambda b, t: b.Concat(t, b.Relu(t), axis=1),
    lambda b, t: b.Concat(*b.op_multi("Split", t, axis=1, sizes=(1, 2))[::-1], axis=1),
    lambda b, t: b.Softmax(t, axis=1),
    lambda b, t: b.ReduceMean(t, axes=(2, 3), keepdims=True),
    lambda b, t: b.Pad(t, mode="constant", pads=(0, 1, 0, 2, 0, 0, 1, 0), value=0.5),
    lambda b, t: b.Slice(t, starts=(0, 1, 0, 0), ends=(1, 3, 4, 5), steps=(1, 1, 2, 1)),
    lambda b, t: b.Resize(t, mode="nearest", coordinate_mode="asymmetric", nearest_mode="floor",
                          scales=(1.0, 1.0, 2.0, 2.0)),
], ids=["add-bias", "mul-full", "prelu", "scalar", "concat", "split", "softmax", "reduce",
        "pad", "slice", "resize"])
def test_cancel_transposes_pushes_through_ops(middle):
    """NHWC -> (to NCHW) -> op -> (to NHWC): the pair cancels through the op."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 5, 3))
    t = b.Transpose(x, perm=NHWC_TO_NCHW)
    y = middle(b, t)
    b.output(b.Transpose(y, perm=NCHW_TO_NHWC), "y")
    graph = b.build()
    cancelled = cancel_transposes(graph)
    assert "Transpose" not in ops(cancelled), ops(cancelled)
    assert_same_values(graph, cancelled)


def test_cancel_transposes_reduce_without_keepdims():
    b = GraphBuilder()
    x = b.input("x", (2, 4, 5, 3))
    b.output(b.ReduceSum(b.Transpose(x, perm=NHWC_TO_NCHW), axes=(2,), keepdims=False), "y")
    graph = b.build()
    cancelled = cancel_transposes(graph)
    assert_same_values(graph, cancelled)
    assert cancelled.nodes[0].op == "ReduceSum"


def test_size_one_transpose_becomes_reshape():
    b = GraphBuilder()
    x = b.input("x", (1, 1, 1, 8))
    b.output(b.Reshape(b.Transpose(x, perm=NHWC_TO_NCHW), shape=(1, 8)), "y")
    graph = b.build()
    cancelled = cancel_transposes(graph)
    assert ops(cancelled) == ["Reshape"]
    assert_same_values(graph, cancelled)


def conv_bn_relu_add_pool() -> Graph:
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    h = b.Relu(b.BatchNorm(conv(b, x, 3, 4, bias=False, name="stem"), *batch_norm_params(b, 4, "bn0"),
                           epsilon=1e-5, layout="NCHW"))
    y = b.Relu(b.BatchNorm(conv(b, h, 4, 4, name="c1"), *batch_norm_params(b, 4, "bn1"),
                           epsilon=1e-5, layout="NCHW"))
    y = b.BatchNorm(conv(b, y, 4, 4, name="c2"), *batch_norm_params(b, 4, "bn2"), epsilon=1e-5, layout="NCHW")
    h = b.Relu(b.Add(y, h))
    h = b.MaxPool2D(h, kernel=(2, 2), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0), layout="NCHW")
    # A BatchNorm with no conv before it (lowered to Mul/Add) between the pool and the head.
    h = b.BatchNorm(h, *batch_norm_params(b, 4, "bn3"), epsilon=1e-5, layout="NCHW")
    pooled = b.ReduceMean(h, axes=(2, 3), keepdims=True)
    flat = b.Reshape(pooled, shape=(1, 4))
    b.output(b.FullyConnected(flat, b.constant("fc/w", randn(10, 4)), b.constant("fc/b", randn(10))), "logits")
    b.output(b.Identity(h), "features")
    return b.build()


def test_optimize_conv_chain_leaves_only_boundary_transposes():
    graph = conv_bn_relu_add_pool()
    optimized, report = optimize(graph)
    counts = optimized.op_counts()
    assert "BatchNorm" not in counts and "Relu" not in counts
    # One at the input; the 4-D "features" output needs one back to NCHW; "logits" is 2-D.
    assert counts["Transpose"] == 2
    transposes = [n for n in optimized.nodes if n.op == "Transpose"]
    assert {transposes[0].inputs[0], transposes[1].outputs[0]} == {"x", "features"}
    assert all(n.attrs.get("layout", "NHWC") == "NHWC" for n in optimized.nodes)
    assert report.fused == 3 + 3 and report.transposes_left == 2
    assert [r.name for r in report.passes] == [p.__name__ for p in PIPELINE]
    assert_same_values(graph, optimized)


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v2"])
def test_optimize_imported_networks(model):
    from converter.importers.onnx import load_onnx
    from tests.fixtures import models

    proto = (models.resnet18(resolution=32, base_width=8, num_classes=10) if model == "resnet18"
             else models.mobilenet_v2(width=0.25, resolution=32, num_classes=10))
    graph = load_onnx(proto)
    optimized, report = optimize(graph)
    counts = optimized.op_counts()
    assert counts.get("Transpose") == 1 and optimized.nodes[0].op == "Transpose"
    assert optimized.nodes[0].inputs == ("input",)
    assert not {"BatchNorm", "Relu", "Relu6", "Clip"} & set(counts)
    assert report.fused == graph.op_counts()["BatchNorm"] + sum(
        graph.op_counts().get(a, 0) for a in ("Relu", "Relu6", "Clip"))
    assert_same_values(graph, optimized)


def test_passes_do_not_modify_their_argument():
    graph = conv_bn_relu_add_pool()
    snapshot = (graph.nodes, dict(graph.tensors), {k: v.copy() for k, v in graph.constants.items()})
    for run in PIPELINE:
        run(graph)
    assert graph.nodes == snapshot[0] and graph.tensors == snapshot[1]
    assert all(np.array_equal(graph.constants[k], v) for k, v in snapshot[2].items())

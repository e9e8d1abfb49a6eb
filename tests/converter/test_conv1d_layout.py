"""1-D convolutions in NHWC: a Conv over [N, C, W] is a Conv2D over [N, C, 1, W] between Reshapes,
so after to_nhwc its Transposes sit behind Reshapes that only drop or insert the size-1 axis.
cancel_transposes moves them through those Reshapes (through_unit_reshape) until they cancel,
fuse_activation fuses an activation through the Reshape left between a convolution and it, and
merge_reshapes removes the Reshape pairs that fusion leaves: a chain of 1-D convolutions with
activations (wav2vec2's feature encoder) runs as bare Conv2Ds, and an instance norm between two
of them (its group norm) runs channels-last with no Transpose. Each model is checked against
onnxruntime and the reference executor, at other lengths and batches too; the rule's own cases
(dropping, inserting, a Reshape that merges axes) are checked on small graphs by the reference."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
edge = pytest.importorskip("edge")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import converter  # noqa: E402
from converter import reference  # noqa: E402
from converter.builder import GraphBuilder  # noqa: E402
from converter.passes import cancel_transposes, fuse_activation, merge_reshapes  # noqa: E402
from tests.fixtures.harness import check_model, run_resized  # noqa: E402

RNG = np.random.default_rng(11)
CHANNELS, LENGTH = 6, 120


def _gelu_nodes(x: str, y: str) -> list:
    """GELU as torch exports it at opset 17: x * 0.5 * (1 + erf(x / sqrt 2))."""
    return [helper.make_node("Div", [x, "sqrt2"], [f"{y}_d"]), helper.make_node("Erf", [f"{y}_d"], [f"{y}_e"]),
            helper.make_node("Add", [f"{y}_e", "one"], [f"{y}_a"]), helper.make_node("Mul", [x, f"{y}_a"], [f"{y}_m"]),
            helper.make_node("Mul", [f"{y}_m", "half"], [y])]


def conv1d_chain(batch: int | str = 1, length: int | str = LENGTH, norm: bool = False) -> onnx.ModelProto:
    """x [N, 1, L] -> Conv k10 s5 (1 -> C channels) -> GELU -> Conv k3 s2 -> GELU -> Conv k2 s2
    (with bias) -> Relu -> y [N, C, L']: the shape of wav2vec2's feature encoder. ``norm``: the
    first convolution's output is normalised over L per channel first, as PyTorch exports
    GroupNorm(C, C): InstanceNormalization with unit scale and zero bias, then its own affine."""
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))]
    inits += [numpy_helper.from_array(RNG.standard_normal((CHANNELS, 1, 10)).astype(np.float32) * 0.3, "w0"),
              numpy_helper.from_array(RNG.standard_normal((CHANNELS, CHANNELS, 3)).astype(np.float32) * 0.3, "w1"),
              numpy_helper.from_array(RNG.standard_normal((CHANNELS, CHANNELS, 2)).astype(np.float32) * 0.3, "w2"),
              numpy_helper.from_array(RNG.standard_normal(CHANNELS).astype(np.float32) * 0.1, "b2")]
    first = [helper.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[10], strides=[5])]
    if norm:
        inits += [numpy_helper.from_array(np.ones(CHANNELS, np.float32), "ones"),
                  numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "zeros"),
                  numpy_helper.from_array(RNG.uniform(0.5, 1.5, (CHANNELS, 1)).astype(np.float32), "gamma"),
                  numpy_helper.from_array(RNG.standard_normal((CHANNELS, 1)).astype(np.float32) * 0.1, "beta")]
        first = [helper.make_node("Conv", ["x", "w0"], ["conv0"], kernel_shape=[10], strides=[5]),
                 helper.make_node("InstanceNormalization", ["conv0", "ones", "zeros"], ["n0"], epsilon=1e-5),
                 helper.make_node("Mul", ["n0", "gamma"], ["s0"]), helper.make_node("Add", ["s0", "beta"], ["c0"])]
    nodes = [*first, *_gelu_nodes("c0", "g0"),
             helper.make_node("Conv", ["g0", "w1"], ["c1"], kernel_shape=[3], strides=[2]), *_gelu_nodes("c1", "g1"),
             helper.make_node("Conv", ["g1", "w2", "b2"], ["c2"], kernel_shape=[2], strides=[2]),
             helper.make_node("Relu", ["c2"], ["y"])]
    graph = helper.make_graph(nodes, "conv1d_chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, length])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, CHANNELS, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def feeds(batch: int = 1, length: int = LENGTH) -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((batch, 1, length)).astype(np.float32)}


def test_a_1d_convolution_chain_runs_as_bare_conv2ds():
    comparison = check_model(conv1d_chain(), feeds())
    graph = comparison.converted.graph
    counts = graph.op_counts()
    assert counts.get("Conv2D") == 3, counts
    # The activations are fused; only the boundary is left: [N, 1, L] viewed as [N, 1, L, 1] in,
    # [N, 1, L', C] viewed as [N, L', C] and transposed to [N, C, L'] out.
    assert [n.op for n in graph.nodes] == ["Reshape", "Conv2D", "Conv2D", "Conv2D", "Reshape", "Transpose"]
    activations = [n.attrs.get("activation", ("",))[0] for n in graph.nodes if n.op == "Conv2D"]
    assert activations == ["Gelu", "Gelu", "Relu"]


def test_a_normalised_1d_convolution_chain_has_no_transpose_inside():
    # The instance norm (wav2vec2's group norm over the first layer) runs channels-last as
    # ReduceMeans and elementwise ops: no LayerNorm, whose row would need the channels first.
    comparison = check_model(conv1d_chain(norm=True), feeds())
    graph = comparison.converted.graph
    counts = graph.op_counts()
    assert "LayerNorm" not in counts and counts.get("ReduceMean") == 2, counts
    assert [n.op for n in graph.nodes if n.op == "Transpose"] == ["Transpose"], counts
    assert graph.nodes[-1].op == "Transpose" and graph.nodes[-1].outputs[0] in graph.outputs


def test_an_instance_norm_on_its_own_is_one_layer_norm():
    # With the spatial axes trailing (no layout change around it), fuse_patterns makes the
    # lowered ops one LayerNorm again.
    inits = [numpy_helper.from_array(RNG.uniform(0.5, 1.5, 3).astype(np.float32), "scale"),
             numpy_helper.from_array(RNG.standard_normal(3).astype(np.float32), "bias")]
    graph = helper.make_graph([helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"])], "norm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 5, 7])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (RNG.standard_normal((2, 3, 5, 7)) * 2 + 1).astype(np.float32)
    comparison = check_model(model, {"x": x})
    assert comparison.converted.graph.op_counts() == {"LayerNorm": 1, "Mul": 1, "Add": 1}


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("batch, length, shapes", [
    (1, "L", [(1, 90), (1, 61), (1, LENGTH)]),
    ("N", LENGTH, [(3, LENGTH), (1, LENGTH)]),
])
def test_a_1d_convolution_chain_with_a_dynamic_axis(batch, length, shapes, norm):
    model = conv1d_chain(batch, length, norm)
    data = converter.convert(model, input_shapes={"x": (1, 1, LENGTH)}).data
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n, size in shapes:
        x = feeds(n, size)["x"]
        (expected,) = session.run(None, {"x": x})
        (got,) = run_resized(edge.Interpreter(model_content=data), {"x": x}).values()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(expected).max()),
                                   err_msg=f"x {x.shape}")


def _same_values(before, after) -> None:
    x = {name: RNG.standard_normal(before.tensors[name].shape).astype(np.float32) for name in before.inputs}
    want, got = reference.run(before, x), reference.run(after, x)
    for name in before.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("source, perm, target", [
    ((2, 1, 5, 3), (0, 3, 1, 2), (2, 3, 5)),        # drops the size-1 axis
    ((2, 5, 3), (0, 2, 1), (2, 3, 1, 5)),           # inserts one
    ((1, 5, 1, 3), (2, 3, 0, 1), (3, 1, 5, 1, 1)),  # both, with size-1 axes on either side
])
def test_a_transpose_moves_through_a_reshape_of_size_1_axes(source, perm, target):
    b = GraphBuilder()
    x = b.input("x", source)
    b.output(b.Relu(b.Reshape(b.Transpose(b.Relu(x), perm=perm), shape=target)), "y")
    graph = b.build()
    moved = cancel_transposes(graph)
    ops = [n.op for n in moved.nodes]
    # The Transpose went below the Reshape (and then below the elementwise Relu).
    assert ops.index("Transpose") > ops.index("Reshape"), ops
    _same_values(graph, moved)


def test_a_reshape_that_merges_axes_keeps_the_transpose_above_it():
    b = GraphBuilder()
    x = b.input("x", (2, 4, 5, 3))
    b.output(b.Relu(b.Reshape(b.Transpose(x, perm=(0, 3, 1, 2)), shape=(2, 3, 20))), "y")
    graph = b.build()
    moved = cancel_transposes(graph)
    assert [n.op for n in moved.nodes] == ["Transpose", "Reshape", "Relu"]
    _same_values(graph, moved)


def test_a_transpose_stays_above_a_reshape_whose_reader_it_cannot_pass():
    # Grouped attention repeats key heads by Reshape [B, H, 1, S, D] -> BroadcastTo -> Reshape; the
    # attention fusion reads that chain from its first Reshape, so the Transpose must stay there.
    b = GraphBuilder()
    x = b.input("x", (1, 5, 2, 4))
    heads = b.Reshape(b.Transpose(x, perm=(0, 2, 1, 3)), shape=(1, 2, 1, 5, 4))
    b.output(b.BroadcastTo(heads, shape=(1, 2, 3, 5, 4)), "y")
    graph = b.build()
    moved = cancel_transposes(graph)
    assert [n.op for n in moved.nodes] == ["Transpose", "Reshape", "BroadcastTo"]


def _conv_reshape_activation(extra_reader: bool):
    b = GraphBuilder()
    x = b.input("x", (1, 1, 9, 3))
    w = b.constant("w", RNG.standard_normal((4, 1, 3, 3)).astype(np.float32))
    c = b.Conv2D(x, w, None, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1, layout="NHWC")
    flat = b.Reshape(c, shape=(1, 7, 4))
    b.output(b.Reshape(b.Tanh(flat), shape=(1, 1, 7, 4)), "y")
    if extra_reader:
        b.output(flat, "flat")
    return b.build()


def test_an_activation_fuses_through_a_reshape_and_the_reshape_pair_goes():
    graph = _conv_reshape_activation(extra_reader=False)
    fused = fuse_activation(graph)
    assert [n.op for n in fused.nodes] == ["Conv2D", "Reshape", "Reshape"]
    assert fused.nodes[0].attrs["activation"][0] == "Tanh"
    merged = merge_reshapes(fused)
    assert [n.op for n in merged.nodes] == ["Conv2D"]
    _same_values(graph, merged)


def test_an_activation_does_not_fuse_through_a_reshape_read_elsewhere():
    graph = _conv_reshape_activation(extra_reader=True)
    assert [n.op for n in fuse_activation(graph).nodes] == [n.op for n in graph.nodes]

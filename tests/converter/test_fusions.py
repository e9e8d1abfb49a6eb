"""The pattern fusions (converter/passes/fusion.py): each rule fires on the pattern as an exporter
writes it (built with onnx.helper, imported by the ONNX importer), leaves near-misses alone, and
keeps the reference executor's outputs within 1e-5."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter import reference
from converter.builder import GraphBuilder
from converter.importers.onnx import load_onnx
from converter.ir import Graph
from converter.passes import fuse_patterns, optimize, remove_identities
from tests.fixtures.models import bert_encoder

TOLERANCE = 1e-5


def scalar(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, np.float32), name)


def make_model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "pattern", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def float_input(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def feeds_for(graph: Graph, seed: int = 0, scale: float = 2.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype == "int64":
            feeds[name] = (rng.random(t.shape) > 0.3).astype(np.int64)
        else:
            feeds[name] = (scale * rng.standard_normal(t.shape)).astype(t.dtype)
    return feeds


def assert_same_values(before: Graph, after: Graph, seed: int = 0) -> None:
    feeds = feeds_for(before, seed)
    expected = reference.run(before, feeds)
    actual = reference.run(after, feeds)
    assert list(after.outputs) == list(before.outputs)
    for name in before.outputs:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(actual[name], expected[name], rtol=0, atol=TOLERANCE * scale,
                                   err_msg=f"output {name!r}")


def fused(model: onnx.ModelProto) -> tuple[Graph, Graph]:
    """(imported graph, the same after the cleanup before fusion and fuse_patterns), values
    checked equal."""
    graph = load_onnx(model)
    after = fuse_patterns(remove_identities(graph))
    assert_same_values(graph, after)
    return graph, after


def counts(graph: Graph) -> dict[str, int]:
    return graph.op_counts()


# ---- GELU ----

def gelu_erf_nodes(x: str, scaling: str, half: str, out: str = "y"):
    """PyTorch's erf GELU: x * 0.5 * (1 + erf(x / sqrt(2))) in the orderings exporters produce."""
    if scaling == "div":
        nodes = [helper.make_node("Div", [x, "sqrt2"], ["scaled"])]
    else:
        nodes = [helper.make_node("Mul", ["inv_sqrt2", x], ["scaled"])]
    nodes += [helper.make_node("Erf", ["scaled"], ["erf"]),
              helper.make_node("Add", ["erf", "one"], ["erf1"])]
    if half == "last":        # (x * (1 + erf)) * 0.5  (BERT, HF transformers)
        nodes += [helper.make_node("Mul", [x, "erf1"], ["prod"]),
                  helper.make_node("Mul", ["prod", "half"], [out])]
    elif half == "first":     # (x * 0.5) * (1 + erf)  (torch.onnx of F.gelu)
        nodes += [helper.make_node("Mul", [x, "half"], ["xhalf"]),
                  helper.make_node("Mul", ["xhalf", "erf1"], [out])]
    else:                     # x * ((1 + erf) / 2)
        nodes += [helper.make_node("Div", ["erf1", "two"], ["erfhalf"]),
                  helper.make_node("Mul", ["erfhalf", x], [out])]
    return nodes


GELU_CONSTANTS = [scalar("sqrt2", 1.4142135), scalar("inv_sqrt2", 0.70710678), scalar("one", 1.0),
                  scalar("half", 0.5), scalar("two", 2.0)]


@pytest.mark.parametrize("scaling", ["div", "mul"])
@pytest.mark.parametrize("half", ["last", "first", "divided"])
def test_gelu_erf_forms_become_gelu(scaling, half):
    model = make_model(gelu_erf_nodes("x", scaling, half), [float_input("x", [3, 17])],
                       [float_input("y", [3, 17])], GELU_CONSTANTS)
    before, after = fused(model)
    assert counts(after) == {"Gelu": 1}
    assert after.nodes[0].inputs == ("x",) and after.nodes[0].outputs == ("y",)


def gelu_tanh_model(cube: str, half_first: bool, cubic: float = 0.044715) -> onnx.ModelProto:
    nodes = []
    if cube == "pow":
        nodes.append(helper.make_node("Pow", ["x", "three"], ["cube"]))
    else:
        nodes += [helper.make_node("Mul", ["x", "x"], ["square"]),
                  helper.make_node("Mul", ["square", "x"], ["cube"])]
    nodes += [helper.make_node("Mul", ["cubic", "cube"], ["cubic_term"]),
              helper.make_node("Add", ["x", "cubic_term"], ["inner"]),
              helper.make_node("Mul", ["inner", "k"], ["arg"]),
              helper.make_node("Tanh", ["arg"], ["tanh"]),
              helper.make_node("Add", ["one", "tanh"], ["tanh1"])]
    if half_first:
        nodes += [helper.make_node("Mul", ["half", "x"], ["xhalf"]),
                  helper.make_node("Mul", ["xhalf", "tanh1"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "tanh1"], ["prod"]),
                  helper.make_node("Mul", ["prod", "half"], ["y"])]
    constants = [scalar("three", 3.0), scalar("cubic", cubic), scalar("k", math.sqrt(2 / math.pi)),
                 scalar("one", 1.0), scalar("half", 0.5)]
    return make_model(nodes, [float_input("x", [2, 4, 9])], [float_input("y", [2, 4, 9])], constants)


@pytest.mark.parametrize("cube", ["pow", "mul"])
@pytest.mark.parametrize("half_first", [False, True])
def test_gelu_tanh_forms_become_gelu_tanh(cube, half_first):
    _, after = fused(gelu_tanh_model(cube, half_first))
    assert counts(after) == {"GeluTanh": 1}


def test_gelu_tanh_with_wrong_cubic_coefficient_stays():
    _, after = fused(gelu_tanh_model("pow", False, cubic=0.047))
    assert "GeluTanh" not in counts(after) and "Tanh" in counts(after)


@pytest.mark.parametrize("constant, value", [("half", 0.6), ("sqrt2", 1.5), ("one", 1.001),
                                             ("sqrt2", 1.4142135 * (1 + 3e-6))])
def test_gelu_with_a_wrong_constant_stays(constant, value):
    initializers = [scalar(c.name, value) if c.name == constant else c for c in GELU_CONSTANTS]
    model = make_model(gelu_erf_nodes("x", "div", "last"), [float_input("x", [3, 5])],
                       [float_input("y", [3, 5])], initializers)
    _, after = fused(model)
    assert "Gelu" not in counts(after) and counts(after)["Erf"] == 1


def test_gelu_whose_intermediate_is_read_elsewhere_stays():
    nodes = gelu_erf_nodes("x", "div", "last") + [helper.make_node("Add", ["erf", "y"], ["z"])]
    model = make_model(nodes, [float_input("x", [3, 5])], [float_input("z", [3, 5])], GELU_CONSTANTS)
    _, after = fused(model)
    assert "Gelu" not in counts(after)


def test_gelu_whose_intermediate_is_a_graph_output_stays():
    model = make_model(gelu_erf_nodes("x", "div", "last"), [float_input("x", [3, 5])],
                       [float_input("y", [3, 5]), float_input("erf1", [3, 5])], GELU_CONSTANTS)
    _, after = fused(model)
    assert "Gelu" not in counts(after)


def test_gelu_of_two_different_tensors_stays():
    # x * 0.5 * (1 + erf(w / sqrt(2))) is not a GELU of anything.
    nodes = [helper.make_node("Div", ["w", "sqrt2"], ["scaled"]),
             helper.make_node("Erf", ["scaled"], ["erf"]),
             helper.make_node("Add", ["erf", "one"], ["erf1"]),
             helper.make_node("Mul", ["x", "erf1"], ["prod"]),
             helper.make_node("Mul", ["prod", "half"], ["y"])]
    model = make_model(nodes, [float_input("x", [3, 5]), float_input("w", [3, 5])],
                       [float_input("y", [3, 5])], GELU_CONSTANTS)
    _, after = fused(model)
    assert "Gelu" not in counts(after)


# ---- HardSwish ----

def test_x_times_hard_sigmoid_becomes_hard_swish():
    nodes = [helper.make_node("HardSigmoid", ["x"], ["gate"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["gate", "x"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 3, 4, 4])], [float_input("y", [2, 3, 4, 4])], [])
    _, after = fused(model)
    assert counts(after) == {"HardSwish": 1}


def test_x_times_default_hard_sigmoid_stays():
    nodes = [helper.make_node("HardSigmoid", ["x"], ["gate"]),   # alpha 0.2: not HardSwish's gate
             helper.make_node("Mul", ["gate", "x"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 8])], [float_input("y", [2, 8])], [])
    _, after = fused(model)
    assert "HardSwish" not in counts(after)


@pytest.mark.parametrize("form", ["div_after", "mul_sixth_first", "clip_inputs"])
def test_x_times_relu6_of_x_plus_3_over_6_becomes_hard_swish(form):
    clip_inputs = ["shifted", "zero", "six"]
    nodes = [helper.make_node("Add", ["x", "three"], ["shifted"]),
             helper.make_node("Clip", clip_inputs, ["relu6"])]
    if form == "div_after":
        nodes += [helper.make_node("Mul", ["x", "relu6"], ["prod"]),
                  helper.make_node("Div", ["prod", "six"], ["y"])]
    elif form == "mul_sixth_first":
        nodes += [helper.make_node("Mul", ["relu6", "sixth"], ["gate"]),
                  helper.make_node("Mul", ["x", "gate"], ["y"])]
    else:
        nodes += [helper.make_node("Div", ["relu6", "six"], ["gate"]),
                  helper.make_node("Mul", ["gate", "x"], ["y"])]
    constants = [scalar("three", 3.0), scalar("zero", 0.0), scalar("six", 6.0), scalar("sixth", 1 / 6)]
    model = make_model(nodes, [float_input("x", [2, 6, 5])], [float_input("y", [2, 6, 5])], constants)
    _, after = fused(model)
    assert counts(after) == {"HardSwish": 1}


def test_relu6_form_with_wrong_divisor_stays():
    nodes = [helper.make_node("Add", ["x", "three"], ["shifted"]),
             helper.make_node("Clip", ["shifted", "zero", "six"], ["relu6"]),
             helper.make_node("Mul", ["x", "relu6"], ["prod"]),
             helper.make_node("Div", ["prod", "five"], ["y"])]
    constants = [scalar("three", 3.0), scalar("zero", 0.0), scalar("six", 6.0), scalar("five", 5.0)]
    model = make_model(nodes, [float_input("x", [2, 6])], [float_input("y", [2, 6])], constants)
    _, after = fused(model)
    assert "HardSwish" not in counts(after)


# ---- SiLU ----

@pytest.mark.parametrize("order", [("x", "gate"), ("gate", "x")])
def test_x_times_sigmoid_of_x_becomes_silu(order):
    nodes = [helper.make_node("Sigmoid", ["x"], ["gate"]), helper.make_node("Mul", list(order), ["y"])]
    model = make_model(nodes, [float_input("x", [2, 3, 4, 4])], [float_input("y", [2, 3, 4, 4])], [])
    _, after = fused(model)
    assert counts(after) == {"Silu": 1}


def test_x_times_sigmoid_of_another_tensor_stays():
    nodes = [helper.make_node("Sigmoid", ["g"], ["gate"]), helper.make_node("Mul", ["x", "gate"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 8]), float_input("g", [2, 8])], [float_input("y", [2, 8])], [])
    _, after = fused(model)
    assert "Silu" not in counts(after)


def test_sigmoid_read_elsewhere_stays():
    nodes = [helper.make_node("Sigmoid", ["x"], ["gate"]), helper.make_node("Mul", ["x", "gate"], ["y"])]
    model = make_model(nodes, [float_input("x", [2, 8])], [float_input("y", [2, 8]), float_input("gate", [2, 8])], [])
    _, after = fused(model)
    assert "Silu" not in counts(after)


# ---- LayerNorm ----

def layer_norm_nodes(x: str, out: str, prefix: str, square: str = "pow", axes=(-1,),
                     scale: bool = True, bias: bool = True) -> list[onnx.NodeProto]:
    p = prefix
    nodes = [helper.make_node("ReduceMean", [x], [f"{p}mean"], axes=list(axes), keepdims=1),
             helper.make_node("Sub", [x, f"{p}mean"], [f"{p}d"])]
    if square == "pow":
        nodes.append(helper.make_node("Pow", [f"{p}d", "two"], [f"{p}sq"]))
    else:
        nodes.append(helper.make_node("Mul", [f"{p}d", f"{p}d"], [f"{p}sq"]))
    nodes += [helper.make_node("ReduceMean", [f"{p}sq"], [f"{p}var"], axes=list(axes), keepdims=1),
              helper.make_node("Add", [f"{p}var", "eps"], [f"{p}var_eps"]),
              helper.make_node("Sqrt", [f"{p}var_eps"], [f"{p}std"])]
    normalised = f"{p}normed" if (scale or bias) else out
    nodes.append(helper.make_node("Div", [f"{p}d", f"{p}std"], [normalised]))
    if scale:
        nodes.append(helper.make_node("Mul", [normalised, f"{p}gamma"], [f"{p}scaled" if bias else out]))
    if bias:
        nodes.append(helper.make_node("Add", [f"{p}scaled" if scale else normalised, f"{p}beta"], [out]))
    return nodes


def layer_norm_params(prefix: str, width: int, seed: int = 0) -> list[onnx.TensorProto]:
    rng = np.random.default_rng(seed)
    return [numpy_helper.from_array((1 + 0.2 * rng.standard_normal(width)).astype(np.float32), f"{prefix}gamma"),
            numpy_helper.from_array((0.3 * rng.standard_normal(width)).astype(np.float32), f"{prefix}beta")]


@pytest.mark.parametrize("square", ["pow", "mul"])
@pytest.mark.parametrize("scale, bias", [(True, True), (True, False), (False, False)])
def test_decomposed_layer_norm_becomes_layer_norm(square, scale, bias):
    nodes = layer_norm_nodes("x", "y", "", square, scale=scale, bias=bias)
    model = make_model(nodes, [float_input("x", [2, 5, 24])], [float_input("y", [2, 5, 24])],
                       [scalar("two", 2.0), scalar("eps", 1e-5)] + layer_norm_params("", 24))
    _, after = fused(model)
    assert counts(after) == {"LayerNorm": 1}
    (node,) = after.nodes
    assert node.attrs["axis"] == 2 and node.attrs["epsilon"] == pytest.approx(1e-5)
    assert bool(node.inputs[2]) == bias


def test_layer_norm_over_a_middle_axis_stays():
    nodes = layer_norm_nodes("x", "y", "", axes=(1,), scale=False, bias=False)
    model = make_model(nodes, [float_input("x", [2, 5, 24])], [float_input("y", [2, 5, 24])],
                       [scalar("two", 2.0), scalar("eps", 1e-5)])
    _, after = fused(model)
    assert "LayerNorm" not in counts(after)


def test_layer_norm_whose_centred_value_is_read_elsewhere_stays():
    nodes = layer_norm_nodes("x", "y", "") + [helper.make_node("Add", ["y", "d"], ["z"])]
    model = make_model(nodes, [float_input("x", [2, 24])], [float_input("z", [2, 24])],
                       [scalar("two", 2.0), scalar("eps", 1e-5)] + layer_norm_params("", 24))
    _, after = fused(model)
    assert "LayerNorm" not in counts(after)


def test_layer_norm_with_a_cubed_deviation_stays():
    nodes = layer_norm_nodes("x", "y", "")
    model = make_model(nodes, [float_input("x", [2, 24])], [float_input("y", [2, 24])],
                       [scalar("two", 3.0), scalar("eps", 1e-5)] + layer_norm_params("", 24))
    _, after = fused(model)
    assert "LayerNorm" not in counts(after)


def test_layer_norm_with_a_per_row_scale_keeps_the_scale_as_a_mul():
    # gamma of shape [5, 1] scales rows, which LayerNorm's scale cannot express: only the
    # normalisation fuses.
    gamma = numpy_helper.from_array(np.linspace(0.5, 1.5, 5, dtype=np.float32).reshape(5, 1), "gamma")
    nodes = layer_norm_nodes("x", "y", "", bias=False)
    model = make_model(nodes, [float_input("x", [2, 5, 24])], [float_input("y", [2, 5, 24])],
                       [scalar("two", 2.0), scalar("eps", 1e-5), gamma])
    _, after = fused(model)
    assert counts(after) == {"LayerNorm": 1, "Mul": 1}
    norm = next(n for n in after.nodes if n.op == "LayerNorm")
    np.testing.assert_array_equal(after.constants[norm.inputs[1]], np.ones(24, np.float32))
    assert after.nodes[-1].op == "Mul" and "gamma" in after.nodes[-1].inputs


# ---- bias ----

def matmul_add_model(bias_shape, extra_reader: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "c")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "c"], ["y"])]
    outputs = [float_input("y", [2, 4, 8])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["mm"], ["r"]))
        outputs.append(float_input("r", [2, 4, 8]))
    return make_model(nodes, [float_input("x", [2, 4, 16])], outputs, [w, c])


@pytest.mark.parametrize("bias_shape", [(8,), (1, 1, 8), (1, 8), (1,)])
def test_matmul_plus_channel_constant_becomes_fully_connected_bias(bias_shape):
    _, after = fused(matmul_add_model(bias_shape))
    assert counts(after) == {"FullyConnected": 1}
    fc = after.nodes[0]
    assert fc.outputs == ("y",) and after.tensors[fc.inputs[2]].shape == (8,)


@pytest.mark.parametrize("bias_shape", [(4, 1), (4, 8), (2, 1, 1)])
def test_constant_varying_along_another_axis_is_not_a_bias(bias_shape):
    _, after = fused(matmul_add_model(bias_shape))
    assert counts(after) == {"FullyConnected": 1, "Add": 1}


def test_bias_not_fused_when_the_product_is_read_elsewhere():
    _, after = fused(matmul_add_model((8,), extra_reader=True))
    assert counts(after) == {"FullyConnected": 1, "Add": 1, "Relu": 1}


def test_added_constant_sums_with_an_existing_bias():
    rng = np.random.default_rng(4)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    c = numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "c")
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
             helper.make_node("Add", ["c", "g"], ["y"])]
    model = make_model(nodes, [float_input("x", [3, 16])], [float_input("y", [3, 8])], [w, b, c])
    before, after = fused(model)
    assert counts(after) == {"FullyConnected": 1}
    fused_bias = after.constants[after.nodes[0].inputs[2]]
    np.testing.assert_allclose(fused_bias, numpy_helper.to_array(b) + numpy_helper.to_array(c)[0], rtol=1e-6)


def test_batch_matmul_with_constant_matrix_becomes_fully_connected_with_bias():
    rng = np.random.default_rng(5)
    for transpose_b in (False, True):
        b = GraphBuilder()
        x = b.input("x", (2, 3, 6))
        weights = rng.standard_normal((5, 6) if transpose_b else (6, 5)).astype(np.float32)
        y = b.BatchMatMul(x, b.constant("B", weights), transpose_a=False, transpose_b=transpose_b)
        b.output(b.Add(y, b.constant("c", rng.standard_normal(5).astype(np.float32))), name="y")
        graph = b.build()
        after = fuse_patterns(graph)
        assert counts(after) == {"FullyConnected": 1}
        fc = after.nodes[0]
        assert fc.inputs[2] and after.tensors[fc.inputs[1]].shape == (5, 6)
        assert_same_values(graph, after)


def test_batch_matmul_with_computed_or_batched_b_stays():
    rng = np.random.default_rng(6)
    b = GraphBuilder()
    x = b.input("x", (2, 3, 6))
    batched = b.BatchMatMul(x, b.constant("B", rng.standard_normal((2, 6, 5)).astype(np.float32)))
    transposed_a = b.BatchMatMul(b.input("a", (2, 6, 3)), b.constant("B2", rng.standard_normal((6, 5))
                                                                      .astype(np.float32)), transpose_a=True)
    b.output(b.Add(batched, transposed_a), name="y")
    graph = b.build()
    after = fuse_patterns(graph)
    assert counts(after) == {"BatchMatMul": 2, "Add": 1}


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose"])
def test_convolution_plus_per_channel_constant_fuses_after_nhwc(op):
    rng = np.random.default_rng(7)
    w_shape = (6, 3, 3, 3) if op == "Conv" else (3, 6, 3, 3)
    w = numpy_helper.from_array((0.3 * rng.standard_normal(w_shape)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal((1, 6, 1, 1)).astype(np.float32), "c")
    out_hw = 8 if op == "Conv" else 8
    nodes = [helper.make_node(op, ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["conv", "c"], ["biased"]),
             helper.make_node("Relu", ["biased"], ["y"])]
    model = make_model(nodes, [float_input("x", [1, 3, 8, 8])], [float_input("y", [1, 6, out_hw, out_hw])], [w, c])
    graph = load_onnx(model)
    after, _ = optimize(graph)
    assert_same_values(graph, after)
    conv_op = "Conv2D" if op == "Conv" else "ConvTranspose2D"
    assert "Add" not in counts(after)
    (conv,) = [n for n in after.nodes if n.op == conv_op]
    assert conv.inputs[2] and conv.attrs.get("activation") == ("Relu", 0.0, 0.0)


def test_nchw_convolution_bias_is_left_to_the_layout_pass():
    # Before to_nhwc a [C, 1, 1] constant varies along axis 1, not the last one.
    rng = np.random.default_rng(8)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 1, 1)).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal((4, 1, 1)).astype(np.float32), "c")
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"]), helper.make_node("Add", ["conv", "c"], ["y"])]
    model = make_model(nodes, [float_input("x", [1, 2, 4, 4])], [float_input("y", [1, 4, 4, 4])], [w, c])
    _, after = fused(model)
    assert counts(after) == {"Conv2D": 1, "Add": 1}


# ---- the pipeline: FC + bias + GELU ----

def test_pipeline_fuses_matmul_bias_and_gelu_into_one_op():
    rng = np.random.default_rng(9)
    w = numpy_helper.from_array((0.3 * rng.standard_normal((12, 20))).astype(np.float32), "w")
    c = numpy_helper.from_array(rng.standard_normal(20).astype(np.float32), "c")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "c"], ["h"])]
    nodes += gelu_erf_nodes("h", "mul", "first")
    model = make_model(nodes, [float_input("x", [2, 3, 12])], [float_input("y", [2, 3, 20])],
                       [w, c] + GELU_CONSTANTS)
    graph = load_onnx(model)
    after, _ = optimize(graph)
    assert_same_values(graph, after)
    assert counts(after) == {"FullyConnected": 1}
    assert after.nodes[0].attrs["activation"] == ("Gelu", 0.0, 0.0) and after.nodes[0].inputs[2]


# ---- BERT ----

def decompose_layer_norms(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every LayerNormalization written out as ReduceMean/Sub/Pow/.../Add, the way
    older exporters (and TF converters) emit it."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    nodes = []
    for k, node in enumerate(model.graph.node):
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        x, gamma, beta = node.input
        prefix = f"ln{k}/"
        decomposed = layer_norm_nodes(x, node.output[0], prefix)
        for n in decomposed:
            n.input[:] = [{f"{prefix}gamma": gamma, f"{prefix}beta": beta, "two": "ln_two",
                           "eps": "ln_eps"}.get(i, i) for i in n.input]
        nodes += decomposed
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend([scalar("ln_two", 2.0), scalar("ln_eps", 1e-12)])
    onnx.checker.check_model(model)
    return model


def bert_small(decomposed: bool = False) -> onnx.ModelProto:
    model = bert_encoder(layers=1, hidden=32, heads=4, batch=2, tokens=8, intermediate=64)
    return decompose_layer_norms(model) if decomposed else model


@pytest.mark.parametrize("decomposed", [False, True])
def test_bert_encoder_fusions(decomposed):
    graph = load_onnx(bert_small(decomposed))
    after, _ = optimize(graph)
    assert_same_values(graph, after)
    ops = counts(after)
    fully_connected = [n for n in after.nodes if n.op == "FullyConnected"]
    # query, key, value, attention output, intermediate, output: all six carry their bias.
    assert len(fully_connected) == 6 and all(n.inputs[2] for n in fully_connected)
    gelus = [n for n in after.nodes if n.op == "Gelu" or (n.attrs.get("activation") or ("",))[0] == "Gelu"]
    assert len(gelus) == 1
    assert ops.get("LayerNorm") == 2
    assert "Erf" not in ops and "Pow" not in ops and "Sqrt" not in ops and "ReduceMean" not in ops
    # Left: the two residual Adds; the attention-mask Add is an input of the fused Attention.
    assert ops.get("Add") == 2 and ops.get("Attention") == 1 and "Softmax" not in ops
    if decomposed:
        assert counts(graph)["ReduceMean"] == 4

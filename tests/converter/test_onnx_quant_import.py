"""Import of models onnxruntime quantized itself (QDQ, QOperator, quantize_dynamic), checked against
onnxruntime running the same quantized model.

The bound, stated once: for static int8 models our output, read back as integers (y / s_y + zp),
differs from onnxruntime's by at most one quantization step per element. onnxruntime requantizes
in float (acc * (s_x * s_w / s_y), rounded half to even) where we use a fixed-point multiplier
(rounded half up), so a result sitting on a rounding boundary may land on the neighbouring step;
nothing else may differ. The bound holds op by op (each int8 op run by the reference executor on
onnxruntime's values of its inputs); end to end, a one-step difference early can grow a little
through later ops. Each test asserts the bound and that the differing elements are a minority (a
systematic error would move most of them), and prints how many differ. Inputs are
drawn on the input's quantization grid so that onnxruntime's x / s and our x * (1 / s) quantize
them identically (both are then integers up to rounding error).

Dynamic models use our dynamic arithmetic (symmetric per-row int8 activations), not onnxruntime's
(asymmetric uint8 per tensor); they are checked against the float model with the error bound that
arithmetic implies, and the imported int8 weights against onnxruntime's bit for bit.
"""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,  # noqa: E402
                                      quantize_dynamic, quantize_static)

import converter  # noqa: E402
from converter import reference  # noqa: E402
from converter.errors import UnsupportedOpsError  # noqa: E402
from converter.importers.onnx import load_onnx  # noqa: E402
from tests.fixtures.harness import run_edge, run_onnxruntime  # noqa: E402

OPSET = 17


# ---------------------------------------------------------------- float models built here

def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "quant_import", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv+Relu, MaxPool, Conv, residual Add+Relu, Flatten, Gemm: input x [1, 3, 8, 8]."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": (0.3 * rng.standard_normal((8, 3, 3, 3))).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(8)).astype(np.float32),
        "w2": (0.2 * rng.standard_normal((8, 8, 3, 3))).astype(np.float32),
        "b2": (0.1 * rng.standard_normal(8)).astype(np.float32),
        "wf": (0.1 * rng.standard_normal((10, 128))).astype(np.float32),
        "bf": (0.1 * rng.standard_normal(10)).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "p1"], ["a2"]),
             helper.make_node("Relu", ["a2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], init)


def branch_net(seed: int = 1) -> onnx.ModelProto:
    """1x1 conv, depthwise 3x3 stride 2, AveragePool, Concat of two branches, GlobalAveragePool,
    MatMul: input x [2, 4, 8, 8]."""
    rng = np.random.default_rng(seed)
    init = {
        "w1": (0.4 * rng.standard_normal((12, 4, 1, 1))).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(12)).astype(np.float32),
        "wd": (0.4 * rng.standard_normal((12, 1, 3, 3))).astype(np.float32),
        "bd": (0.1 * rng.standard_normal(12)).astype(np.float32),
        "wm": (0.2 * rng.standard_normal((24, 6))).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], strides=[2, 2], group=12),
             helper.make_node("AveragePool", ["r1"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Concat", ["cd", "ap"], ["cat"], axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "wm"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])], init)


def mlp(seed: int = 2) -> onnx.ModelProto:
    """MatMul + bias + Relu, MatMul + bias on x [4, 5, 16] (rank 3, like a transformer's dense)."""
    rng = np.random.default_rng(seed)
    init = {"w1": (0.3 * rng.standard_normal((16, 32))).astype(np.float32),
            "b1": (0.1 * rng.standard_normal(32)).astype(np.float32),
            "w2": (0.2 * rng.standard_normal((32, 8))).astype(np.float32),
            "b2": (0.1 * rng.standard_normal(8)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["h1"]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 5, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 5, 8])], init)


# ---------------------------------------------------------------- onnxruntime's quantizers

class _Reader(CalibrationDataReader):
    def __init__(self, name: str, shape, count: int = 16, seed: int = 3):
        rng = np.random.default_rng(seed)
        self._feeds = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self):
        return next(self._feeds, None)


def _static(model: onnx.ModelProto, tmp_path, tag: str, **options) -> onnx.ModelProto:
    source, target = tmp_path / f"{tag}.float.onnx", tmp_path / f"{tag}.onnx"
    onnx.save(model, str(source))
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    quantize_static(str(source), str(target), _Reader(model.graph.input[0].name, shape), **options)
    return onnx.load(str(target))


def _dynamic(model: onnx.ModelProto, tmp_path, tag: str, **options) -> onnx.ModelProto:
    source, target = tmp_path / f"{tag}.float.onnx", tmp_path / f"{tag}.onnx"
    onnx.save(model, str(source))
    quantize_dynamic(str(source), str(target), **options)
    return onnx.load(str(target))


STATIC_VARIANTS = {
    "qdq-int8": dict(quant_format=QuantFormat.QDQ),
    "qdq-int8-per-channel": dict(quant_format=QuantFormat.QDQ, per_channel=True),
    "qdq-uint8-activations": dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8),
    "qoperator-int8": dict(quant_format=QuantFormat.QOperator),
    "qoperator-uint8-per-channel": dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                                        per_channel=True),
}


# ---------------------------------------------------------------- comparing

def _initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def _io_params(model: onnx.ModelProto, tensor: str, node_type: str) -> tuple[float, int]:
    """(scale, zero point) of the QuantizeLinear reading / DequantizeLinear writing ``tensor``."""
    for node in model.graph.node:
        if node.op_type != node_type:
            continue
        if (node_type == "QuantizeLinear" and node.input[0] == tensor) or \
                (node_type == "DequantizeLinear" and node.output[0] == tensor):
            return float(_initializer(model, node.input[1])), int(_initializer(model, node.input[2]))
    raise AssertionError(f"no {node_type} at {tensor!r}")


def _on_input_grid(model: onnx.ModelProto, name: str, shape, seed: int) -> np.ndarray:
    scale, zero = _io_params(model, name, "QuantizeLinear")
    low, high = (0, 255) if _initializer_dtype(model, name) == np.uint8 else (-128, 127)
    q = np.random.default_rng(seed).integers(low, high + 1, shape)
    return ((q - zero).astype(np.float32) * np.float32(scale)).astype(np.float32)


def _initializer_dtype(model: onnx.ModelProto, tensor: str):
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == tensor)
    return _initializer(model, node.input[2]).dtype


def _edge_available() -> bool:
    """Whether the C runtime is built. Only a missing library counts as absent: one that is there
    but fails to load raises, so a broken build fails these tests instead of skipping their
    runtime half."""
    from cruntime.binding import LibraryNotFoundError, find_library, load_library

    try:
        find_library()
    except LibraryNotFoundError:
        return False
    load_library()
    return True




# ---------------------------------------------------------------- static int8

def _with_all_outputs(model: onnx.ModelProto, names, elem_type: int) -> onnx.ModelProto:
    """The model with ``names`` (quantized intermediate tensors) as extra graph outputs."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in present:
            exposed.graph.output.append(helper.make_tensor_value_info(name, elem_type, None))
    return exposed


def _as_int8(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.int16) - 128).astype(np.int8) if values.dtype == np.uint8 else values


def check_each_op(graph, model: onnx.ModelProto, feeds, elem_type: int, what: str) -> int:
    """Every int8 node of the imported graph, run alone by the reference executor on onnxruntime's
    values of its inputs, gives onnxruntime's value of its output within one step. Returns the
    number of nodes checked."""
    nodes = [n for n in graph.nodes
             if n.outputs[0] in graph.quantization and graph.tensors[n.outputs[0]].dtype == "int8"
             and any(i and i not in graph.constants and graph.tensors[i].dtype == "int8" for i in n.inputs)]
    names = {name for n in nodes for name in (*n.inputs, *n.outputs) if name and name not in graph.constants}
    theirs = run_onnxruntime(_with_all_outputs(model, sorted(names), elem_type), feeds)
    checked = 0
    for node in nodes:
        moving = [i for i in node.inputs if i and i not in graph.constants]
        if not all(i in theirs for i in moving) or node.outputs[0] not in theirs:
            continue
        sub = graph.replace(nodes=(node,), inputs=tuple(moving), outputs=(node.outputs[0],),
                            signatures={}, dynamic_dims={})
        ours = reference.run(sub, {i: _as_int8(theirs[i]) for i in moving})[node.outputs[0]]
        want = _as_int8(theirs[node.outputs[0]])
        difference = np.abs(ours.astype(np.int64) - want.astype(np.int64))
        differing = int(np.count_nonzero(difference))
        assert difference.max(initial=0) <= 1, (f"{what}: node {node.name} ({node.op}): {differing}/"
                                                f"{difference.size} differ, by up to {difference.max()}")
        # Ties are where the rounding rules part (an average of 4 is a tie one time in 4); a
        # systematic error would move most elements.
        assert differing <= max(2, difference.size // 2), f"{what}: node {node.name}: {differing} differ"
        print(f"{what}: {node.op} {node.name}: {differing}/{difference.size} one step apart")
        checked += 1
    return checked


@pytest.mark.parametrize("variant", sorted(STATIC_VARIANTS))
@pytest.mark.parametrize("builder", [conv_net, branch_net], ids=["conv_net", "branch_net"])
def test_static_models_match_onnxruntime(tmp_path, builder, variant):
    float_model = builder()
    options = STATIC_VARIANTS[variant]
    quantized = _static(float_model, tmp_path, f"{builder.__name__}-{variant}", **options)
    shape = [d.dim_value for d in float_model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": _on_input_grid(quantized, "x", shape, seed=11)}
    elem_type = TensorProto.UINT8 if options.get("activation_type") == QuantType.QUInt8 else TensorProto.INT8

    # Op by op: the bound holds for each op given the same int8 inputs.
    imported = load_onnx(quantized)
    compute = [n for n in imported.nodes if n.op in ("Conv2D", "FullyConnected", "Add", "Concat", "AvgPool2D",
                                                      "ReduceMean", "MaxPool2D")]
    assert check_each_op(imported, quantized, feeds, elem_type, f"{builder.__name__} {variant}") >= len(compute)

    # The whole converted model: every compute op runs in int8.
    result = converter.convert(quantized)
    int8_ops = [n for n in result.graph.nodes if n.op in ("Conv2D", "FullyConnected", "BatchMatMul", "Add",
                                                           "Concat", "AvgPool2D", "ReduceMean")]
    assert len(int8_ops) >= len(compute) - 1, result.graph.op_counts()
    for node in int8_ops:
        assert result.graph.tensors[node.inputs[0]].dtype == "int8", node
        assert node.outputs[0] in result.graph.quantization, node
    ours = reference.run(result.graph, feeds)["y"]
    theirs = run_onnxruntime(quantized, feeds)["y"]
    # End to end, one-step differences of early ops can grow through later ones; they stay rare.
    y_scale, _ = _io_params(quantized, "y", "DequantizeLinear")
    steps = np.abs(np.rint((ours.astype(np.float64) - theirs) / y_scale))
    print(f"{builder.__name__} {variant}: end to end {np.count_nonzero(steps)}/{steps.size} outputs differ, "
          f"by up to {steps.max():.0f} steps")
    assert np.count_nonzero(steps) <= steps.size // 2

    if _edge_available():
        runtime = run_edge(result.data, feeds)["y"]
        # The C kernels follow the integer reference bit for bit.
        np.testing.assert_array_equal(runtime, ours)


def test_qdq_groups_fold_into_single_int8_ops(tmp_path):
    """The QDQ conv net becomes Quantize -> int8 ops -> Dequantize, nothing float in between."""
    quantized = _static(conv_net(), tmp_path, "fold", quant_format=QuantFormat.QDQ)
    graph = load_onnx(quantized)
    assert graph.op_counts() == {"Quantize": 1, "Conv2D": 2, "MaxPool2D": 1, "Add": 1, "Reshape": 1,
                                 "FullyConnected": 1, "Dequantize": 1}
    weights = [graph.constants[n.inputs[1]] for n in graph.nodes if n.op == "Conv2D"]
    expected = [_initializer(quantized, "w1_quantized"), _initializer(quantized, "w2_quantized")]
    for got, want in zip(weights, expected):
        np.testing.assert_array_equal(got, want)


def test_uint8_activations_become_int8_exactly(tmp_path):
    quantized = _static(conv_net(), tmp_path, "u8", quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8)
    graph = load_onnx(quantized)
    quantize = next(n for n in graph.nodes if n.op == "Quantize")
    params = graph.quantization[quantize.outputs[0]]
    scale, zero = _io_params(quantized, "x", "QuantizeLinear")
    assert params.scale == (float(np.float32(scale)),) and params.zero_point == (zero - 128,)
    assert all(t.dtype != "uint8" for t in graph.tensors.values())


# ---------------------------------------------------------------- dynamic

def _dynamic_fc_bound(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, w_float: np.ndarray) -> np.ndarray:
    """|ours - float| bound for y = x @ w: rows quantized symmetric (step s_row, error <= s_row/2 per
    element), weights int8 (error <= |w - w_q * s_w|), plus float32 rounding of the sums."""
    s_row = np.max(np.abs(x), axis=-1, keepdims=True) / 127.0
    w_deq = w_q.astype(np.float64).T * w_scale
    weight_error = np.abs(w_float.astype(np.float64) - w_deq)
    bound = np.abs(x) @ weight_error + (s_row / 2) @ np.abs(w_deq).sum(axis=0, keepdims=True)
    return bound + 1e-5 * (np.abs(x) @ np.abs(w_float) + 1.0)


def test_dynamic_mlp_maps_to_dynamic_fully_connected(tmp_path):
    float_model = mlp()
    quantized = _dynamic(float_model, tmp_path, "mlp", weight_type=QuantType.QInt8)
    graph = load_onnx(quantized)
    fcs = [n for n in graph.nodes if n.op == "FullyConnected"]
    assert len(fcs) == 2
    assert not any(n.op in ("Quantize", "Dequantize") for n in graph.nodes)
    for node, tensor in zip(fcs, ("w1_quantized", "w2_quantized")):
        assert graph.tensors[node.inputs[0]].dtype == "float32"
        w = graph.constants[node.inputs[1]]
        assert w.dtype == np.int8
        np.testing.assert_array_equal(w, _initializer(quantized, tensor).T)

    # One layer in isolation, against the float layer, with the bound the arithmetic gives.
    x = np.random.default_rng(7).standard_normal((4, 5, 16)).astype(np.float32)
    values = reference.run(graph, {"x": x}, keep_all=True)
    first = fcs[0]
    params = graph.quantization[first.inputs[1]]
    w_float = _initializer(float_model, "w1")
    got = values[first.outputs[0]].astype(np.float64)
    want = x.astype(np.float64) @ w_float
    bound = _dynamic_fc_bound(x, graph.constants[first.inputs[1]], np.asarray(params.scale), w_float)
    assert np.all(np.abs(got - want) <= bound), float(np.max(np.abs(got - want) - bound))

    # End to end against float32 and onnxruntime's own dynamic model (different arithmetic).
    ours = reference.run(graph, {"x": x})["y"]
    exact = run_onnxruntime(float_model, {"x": x})["y"]
    theirs = run_onnxruntime(quantized, {"x": x})["y"]
    scale = np.abs(exact).max()
    assert np.abs(ours - exact).max() / scale < 0.02
    assert np.abs(theirs - exact).max() / scale < 0.02

    if _edge_available():
        runtime = run_edge(converter.convert(quantized).data, {"x": x})["y"]
        np.testing.assert_allclose(runtime, ours, rtol=1e-5, atol=1e-5 * scale)


def test_dynamic_conv_net_maps_to_dynamic_conv(tmp_path):
    float_model = conv_net()
    quantized = _dynamic(float_model, tmp_path, "conv", weight_type=QuantType.QInt8)
    graph = load_onnx(quantized)
    convs = [n for n in graph.nodes if n.op == "Conv2D"]
    assert len(convs) == 2 and all(graph.constants[n.inputs[1]].dtype == np.int8 for n in convs)
    assert all(graph.tensors[n.inputs[0]].dtype == "float32" for n in convs)
    x = np.random.default_rng(8).standard_normal((1, 3, 8, 8)).astype(np.float32)
    ours = reference.run(converter.convert(quantized).graph, {"x": x})["y"]
    exact = run_onnxruntime(float_model, {"x": x})["y"]
    assert np.abs(ours - exact).max() / np.abs(exact).max() < 0.03


# ---------------------------------------------------------------- refusals

def test_integer_matmul_outside_the_dynamic_pattern_is_refused():
    w = numpy_helper.from_array(np.ones((4, 3), np.int8), "w")
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(UnsupportedOpsError) as caught:
        load_onnx(model)
    message = str(caught.value)
    assert "MatMulInteger" in message and "DynamicQuantizeLinear" in message
    assert "Cast -> Mul" in message


def test_weights_outside_the_symmetric_range_are_refused():
    """uint8 weights with zero point 0 span [0, 255] after the shift: not int8-representable."""
    init = [numpy_helper.from_array(np.arange(12, dtype=np.uint8).reshape(2, 6) * 20, "w"),
            numpy_helper.from_array(np.float32(0.01), "ws"), numpy_helper.from_array(np.uint8(0), "wz"),
            numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("QLinearMatMul", ["xq", "s", "z", "w", "ws", "wz", "s", "z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 6])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(UnsupportedOpsError, match=r"outside the symmetric int8 range"):
        load_onnx(model)


def test_float_models_are_untouched_by_the_quantized_rewrite():
    from converter.importers.onnx_quant import rewrite_quantized

    model = conv_net()
    assert rewrite_quantized(model) is model


def test_a_dead_channel_with_a_bias_imports_and_runs(tmp_path):
    # Weight decay can drive a unit's weights to ~0 while its bias stays: onnxruntime then stores an
    # int32 bias near 2**31 (bias / (s_x * s_w) with a tiny s_w), which would leave the accumulator
    # no room. The importer rescales that channel; the model loads and matches onnxruntime.
    rng = np.random.default_rng(7)
    w = (0.3 * rng.standard_normal((16, 8))).astype(np.float32)
    w[:, 2] = 1e-9
    b = np.full(8, 0.5, np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])], {"w": w, "b": b})
    quantized = _static(model, tmp_path, "dead", quant_format=QuantFormat.QOperator, per_channel=True)
    bias = next(_initializer(quantized, i.name) for i in quantized.graph.initializer
                if _initializer(quantized, i.name).dtype == np.int32)
    assert np.abs(bias.astype(np.int64)).max() > 2 ** 30          # the case this test is about
    x = np.random.default_rng(8).standard_normal((4, 16)).astype(np.float32)
    expected = run_onnxruntime(quantized, {"x": x})["y"]
    got = run_edge(converter.convert(quantized).data, {"x": x})["y"]
    step = float(np.max(np.abs(expected))) / 127
    assert np.max(np.abs(got - expected)) <= 2 * step
    np.testing.assert_allclose(got[:, 2], 0.5, atol=2 * step)

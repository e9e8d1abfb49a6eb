"""converter.reference against onnxruntime, op by op.

Each case builds the equivalent single-node (occasionally two-node) ONNX model with onnx.helper,
runs it in onnxruntime, and compares with the reference executor running a hand-built IR graph
on the same inputs. The IR graph's tensor types come from the op's ``infer``, and the executor
checks every result against them, so shape rules are exercised too. Layout-sensitive ops are
also run in NHWC on transposed data and must match their NCHW results.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.ir import Graph, Node, TensorType
from converter.ops import OPS
from converter.reference import ReferenceRunError, run

RNG = np.random.default_rng(20240601)
TO_NHWC = (0, 2, 3, 1)


def rand(*shape, low=-2.0, high=2.0, dtype=np.float32):
    return RNG.uniform(low, high, size=shape).astype(dtype)


def onnx_run(nodes, inputs: dict, outputs: list[str], opset: int = 17, initializers: dict | None = None):
    """Runs ONNX nodes on ``inputs`` (name -> array); ``initializers`` become constant tensors."""
    if isinstance(nodes, onnx.NodeProto):
        nodes = [nodes]
    inputs = {name: np.asarray(value) for name, value in inputs.items()}
    graph_inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape) for name, value in inputs.items()]
    graph = helper.make_graph(
        nodes, "case", graph_inputs, [onnx.ValueInfoProto(name=name) for name in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), name) for name, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(outputs, inputs)


def ir_run(op: str, inputs: list, attrs: dict | None = None, outputs: int = 1) -> list[np.ndarray]:
    """Runs one IR node through converter.reference.run; inputs are arrays or None (left out).
    Array inputs after the first become constants, so both feeds and constants are exercised."""
    attrs = dict(attrs or {})
    inputs = [None if v is None else np.asarray(v) for v in inputs]
    names = [f"in{k}" if v is not None else "" for k, v in enumerate(inputs)]
    types = [None if v is None else TensorType(str(v.dtype), v.shape) for v in inputs]
    out_types = OPS[op].infer(types, attrs)
    out_names = [f"out{k}" for k in range(len(out_types))][:outputs] if outputs else []
    tensors = {n: t for n, t in zip(names, types) if n}
    tensors.update(zip(out_names, out_types))
    constants = {n: v for k, (n, v) in enumerate(zip(names, inputs)) if n and k > 0}
    feeds = {names[0]: inputs[0]} if names[0] else {}
    graph = Graph(nodes=(Node(op, names, out_names, attrs, name=f"{op.lower()}_node"),),
                  inputs=tuple(feeds) + tuple(constants), outputs=tuple(out_names),
                  tensors=tensors, constants=constants)
    result = run(graph, feeds)
    return [result[n] for n in out_names]


def close(actual, expected, rtol=1e-5, atol=1e-5):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.dtype.kind == "f":
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(actual, expected)


# ---- binary ----

BINARY = {  # IR op: (ONNX op, ONNX attrs)
    "Add": ("Add", {}), "Sub": ("Sub", {}), "Mul": ("Mul", {}), "Div": ("Div", {}),
    "Pow": ("Pow", {}), "Min": ("Min", {}), "Max": ("Max", {}), "Mod": ("Mod", {}),
    "FMod": ("Mod", {"fmod": 1}), "PRelu": ("PRelu", {}), "Equal": ("Equal", {}),
    "Less": ("Less", {}), "LessEqual": ("LessOrEqual", {}), "Greater": ("Greater", {}),
    "GreaterEqual": ("GreaterOrEqual", {}), "And": ("And", {}), "Or": ("Or", {}), "Xor": ("Xor", {}),
    "BitwiseAnd": ("BitwiseAnd", {}), "BitwiseOr": ("BitwiseOr", {}), "BitwiseXor": ("BitwiseXor", {}),
    "ShiftLeft": ("BitShift", {"direction": "LEFT"}), "ShiftRight": ("BitShift", {"direction": "RIGHT"}),
}
BROADCAST_SHAPES = [((3, 4), (3, 4)), ((2, 3, 5), (5,)), ((1, 3, 1), (4, 1, 7)), ((), (2, 3)),
                    ((7, 1, 3), (1, 5, 1)), ((2, 1, 3, 1), (3, 5))]


def binary_operands(op, shape_a, shape_b):
    if op in ("And", "Or", "Xor"):
        return RNG.random(shape_a) < 0.5, RNG.random(shape_b) < 0.5
    if op.startswith("Bitwise"):
        return (RNG.integers(-2 ** 31, 2 ** 31, shape_a).astype(np.int32),
                RNG.integers(-2 ** 31, 2 ** 31, shape_b).astype(np.int32))
    if op.startswith("Shift"):
        # onnxruntime's BitShift takes unsigned types: non-negative values (given to it as uint32, which
        # wraps a left shift the same way), amounts inside the width.
        return RNG.integers(0, 2 ** 31, shape_a).astype(np.int32), RNG.integers(0, 32, shape_b).astype(np.int32)
    if op in ("Mod",):
        a = RNG.integers(-20, 20, shape_a).astype(np.int32)
        b = RNG.choice([-7, -3, -2, 2, 3, 5], shape_b).astype(np.int32)
        return a, b
    if op == "Pow":
        return rand(*shape_a, low=0.1, high=3.0), rand(*shape_b, low=-2.0, high=2.0)
    if op in ("Equal", "Less", "LessEqual", "Greater", "GreaterEqual"):
        # Small integer values make equal pairs common, so the "equal" branch is exercised.
        return (RNG.integers(-2, 3, shape_a).astype(np.float32),
                RNG.integers(-2, 3, shape_b).astype(np.float32))
    a = rand(*shape_a)
    b = rand(*shape_b)
    if op in ("Div", "FMod"):
        b = np.where(np.abs(b) < 0.3, np.float32(0.7), b).astype(np.float32)
    return a, b


def _binary_cases():
    for op in sorted(BINARY):
        for shapes in BROADCAST_SHAPES:
            # ONNX PRelu broadcasts the slope to x only (x's shape is the output's).
            if op == "PRelu" and (shapes[0] == () or np.broadcast_shapes(*shapes) != shapes[0]):
                continue
            yield pytest.param(op, shapes, id=f"{op}-{shapes[0]}x{shapes[1]}")


@pytest.mark.parametrize("op, shapes", _binary_cases())
def test_binary_broadcasting(op, shapes):
    a, b = binary_operands(op, *shapes)
    onnx_op, onnx_attrs = BINARY[op]
    feeds = {"a": a.view(np.uint32), "b": b.view(np.uint32)} if op.startswith("Shift") else {"a": a, "b": b}
    expected = onnx_run(helper.make_node(onnx_op, ["a", "b"], ["y"], **onnx_attrs), feeds, ["y"],
                        opset=18 if onnx_op.startswith("Bitwise") else 17)[0]
    close(ir_run(op, [a, b])[0], expected.view(np.int32) if op.startswith("Shift") else expected)


@pytest.mark.parametrize("op,dtype", [("Add", np.int32), ("Sub", np.int64), ("Mul", np.int32),
                                      ("Div", np.int32), ("Div", np.int64), ("Mod", np.int64),
                                      ("FMod", np.int32), ("Min", np.int32), ("Max", np.int64),
                                      ("Equal", np.int64), ("Less", np.int32)])
def test_binary_integers(op, dtype):
    a = RNG.integers(-50, 50, (4, 6)).astype(dtype)
    b = RNG.choice([-9, -4, -1, 1, 3, 8], (6,)).astype(dtype)
    onnx_op, onnx_attrs = BINARY[op]
    expected = onnx_run(helper.make_node(onnx_op, ["a", "b"], ["y"], **onnx_attrs), {"a": a, "b": b}, ["y"])[0]
    close(ir_run(op, [a, b])[0], expected)


def test_integer_div_truncates_and_mod_signs():
    a = np.array([7, -7, 7, -7, 6, -6], np.int32)
    b = np.array([2, 2, -2, -2, 3, 3], np.int32)
    close(ir_run("Div", [a, b])[0], np.array([3, -3, -3, 3, 2, -2], np.int32))
    close(ir_run("Mod", [a, b])[0], np.array([1, 1, -1, -1, 0, 0], np.int32))
    close(ir_run("FMod", [a, b])[0], np.array([1, -1, 1, -1, 0, 0], np.int32))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
@pytest.mark.parametrize("activation,onnx_nodes", [
    (("Relu", 0.0, 0.0), lambda: [helper.make_node("Relu", ["t"], ["y"])]),
    (("Clip", -0.5, 0.75), lambda: [helper.make_node("Clip", ["t", "lo", "hi"], ["y"])]),
    (("LeakyRelu", 0.2, 0.0), lambda: [helper.make_node("LeakyRelu", ["t"], ["y"], alpha=0.2)]),
])
def test_binary_fused_activation(op, activation, onnx_nodes):
    a, b = rand(3, 4, 5), rand(4, 1)
    nodes = [helper.make_node(op, ["a", "b"], ["t"])] + onnx_nodes()
    bounds = {"lo": np.float32(-0.5), "hi": np.float32(0.75)}
    expected = onnx_run(nodes, {"a": a, "b": b}, ["y"], initializers=bounds)[0]
    close(ir_run(op, [a, b], {"activation": activation})[0], expected)


# ---- unary ----

def _positive(shape):
    return rand(*shape, low=0.05, high=4.0)


UNARY = {  # IR op: (ONNX nodes builder "x" -> "y", opset, input maker, attrs)
    "Relu": (lambda: [helper.make_node("Relu", ["x"], ["y"])], 17, None, {}),
    "Relu6": (lambda: [helper.make_node("Clip", ["x", "zero", "six"], ["y"])], 17, None, {}),
    "Clip": (lambda: [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], 17, None,
             {"min": -0.5, "max": 1.25}),
    "LeakyRelu": (lambda: [helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.15)], 17, None, {"alpha": 0.15}),
    "Elu": (lambda: [helper.make_node("Elu", ["x"], ["y"], alpha=0.7)], 17, None, {"alpha": 0.7}),
    "Sigmoid": (lambda: [helper.make_node("Sigmoid", ["x"], ["y"])], 17, None, {}),
    "Tanh": (lambda: [helper.make_node("Tanh", ["x"], ["y"])], 17, None, {}),
    "HardSigmoid": (lambda: [helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], 17,
                    None, {"alpha": 0.3, "beta": 0.4}),
    "HardSwish": (lambda: [helper.make_node("HardSwish", ["x"], ["y"])], 17, None, {}),
    "Gelu": (lambda: [helper.make_node("Gelu", ["x"], ["y"])], 20, None, {}),
    "GeluTanh": (lambda: [helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], 20, None, {}),
    "Erf": (lambda: [helper.make_node("Erf", ["x"], ["y"])], 17, None, {}),
    "Exp": (lambda: [helper.make_node("Exp", ["x"], ["y"])], 17, None, {}),
    "Log": (lambda: [helper.make_node("Log", ["x"], ["y"])], 17, _positive, {}),
    "Sqrt": (lambda: [helper.make_node("Sqrt", ["x"], ["y"])], 17, _positive, {}),
    "Rsqrt": (lambda: [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Reciprocal", ["s"], ["y"])],
              17, _positive, {}),
    "Reciprocal": (lambda: [helper.make_node("Reciprocal", ["x"], ["y"])], 17, _positive, {}),
    "Neg": (lambda: [helper.make_node("Neg", ["x"], ["y"])], 17, None, {}),
    "Abs": (lambda: [helper.make_node("Abs", ["x"], ["y"])], 17, None, {}),
    "Floor": (lambda: [helper.make_node("Floor", ["x"], ["y"])], 17, None, {}),
    "Ceil": (lambda: [helper.make_node("Ceil", ["x"], ["y"])], 17, None, {}),
    "Round": (lambda: [helper.make_node("Round", ["x"], ["y"])], 17,
              lambda shape: (RNG.integers(-8, 8, shape) / 2).astype(np.float32), {}),
    "Sign": (lambda: [helper.make_node("Sign", ["x"], ["y"])], 17,
             lambda shape: RNG.integers(-2, 3, shape).astype(np.float32), {}),
    "Softplus": (lambda: [helper.make_node("Softplus", ["x"], ["y"])], 17, None, {}),
    "Sin": (lambda: [helper.make_node("Sin", ["x"], ["y"])], 17, None, {}),
    "Cos": (lambda: [helper.make_node("Cos", ["x"], ["y"])], 17, None, {}),
    "Asin": (lambda: [helper.make_node("Asin", ["x"], ["y"])], 17, lambda shape: rand(*shape, low=-1.0, high=1.0), {}),
    "Acos": (lambda: [helper.make_node("Acos", ["x"], ["y"])], 17, lambda shape: rand(*shape, low=-1.0, high=1.0), {}),
    "Atan": (lambda: [helper.make_node("Atan", ["x"], ["y"])], 17, None, {}),
    "Square": (lambda: [helper.make_node("Mul", ["x", "x"], ["y"])], 17, None, {}),
    "Silu": (lambda: [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])], 17,
             None, {}),
    "Not": (lambda: [helper.make_node("Not", ["x"], ["y"])], 17, lambda shape: RNG.random(shape) < 0.5, {}),
    "IsNaN": (lambda: [helper.make_node("IsNaN", ["x"], ["y"])], 17,
              lambda shape: np.where(RNG.random(shape) < 0.3, np.nan, rand(*shape)).astype(np.float32), {}),
    "IsInf": (lambda: [helper.make_node("IsInf", ["x"], ["y"])], 17,
              lambda shape: RNG.choice(np.array([np.inf, -np.inf, np.nan, 1.0, -3.0], np.float32), shape), {}),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    build, opset, make_input, attrs = UNARY[op]
    shape = (3, 5, 7)
    x = make_input(shape) if make_input else rand(*shape, low=-4.0, high=4.0)
    consts = {"zero": np.float32(0), "six": np.float32(6), "lo": np.float32(-0.5), "hi": np.float32(1.25)}
    expected = onnx_run(build(), {"x": x}, ["y"], opset=opset, initializers=consts)[0]
    close(ir_run(op, [x], attrs)[0], expected)


def test_unary_table_is_complete():
    unary_ops = {name for name, entry in OPS.items() if entry.opcode == OPS["Relu"].opcode}
    assert unary_ops == set(UNARY)
    binary_ops = {name for name, entry in OPS.items() if entry.opcode == OPS["Add"].opcode}
    assert binary_ops == set(BINARY)


@pytest.mark.parametrize("op,onnx_op", [("Abs", "Abs"), ("Neg", "Neg"), ("Sign", "Sign"), ("Relu", "Relu")])
def test_unary_integers(op, onnx_op):
    x = RNG.integers(-100, 100, (4, 9)).astype(np.int32)
    expected = onnx_run(helper.make_node(onnx_op, ["x"], ["y"]), {"x": x}, ["y"])[0]
    close(ir_run(op, [x])[0], expected)


def test_clip_integers_and_open_bounds():
    x = RNG.integers(-100, 100, (20,)).astype(np.int32)
    expected = onnx_run(helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), {"x": x}, ["y"],
                        initializers={"lo": np.int32(-7), "hi": np.int32(30)})[0]
    close(ir_run("Clip", [x], {"min": -7.0, "max": 30.0})[0], expected)
    xf = rand(50, low=-5, high=5)
    expected = onnx_run(helper.make_node("Clip", ["x", "lo"], ["y"]), {"x": xf}, ["y"],
                        initializers={"lo": np.float32(-1)})[0]
    close(ir_run("Clip", [xf], {"min": -1.0})[0], expected)


def test_where_and_cast():
    cond = RNG.random((3, 1, 5)) < 0.5
    a, b = rand(4, 5), rand(3, 4, 1)
    expected = onnx_run(helper.make_node("Where", ["c", "a", "b"], ["y"]), {"c": cond, "a": a, "b": b}, ["y"])[0]
    close(ir_run("Where", [cond, a, b])[0], expected)
    x = rand(6, 7, low=-20, high=20)
    x[0, :3] = [0.0, -0.0, 2.5]
    for to, proto in [("int32", TensorProto.INT32), ("int64", TensorProto.INT64), ("bool", TensorProto.BOOL),
                      ("float16", TensorProto.FLOAT16)]:
        expected = onnx_run(helper.make_node("Cast", ["x"], ["y"], to=proto), {"x": x}, ["y"])[0]
        close(ir_run("Cast", [x], {"to": to})[0], expected)
    i = RNG.integers(-5, 5, (8,)).astype(np.int64)
    expected = onnx_run(helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT), {"x": i}, ["y"])[0]
    close(ir_run("Cast", [i], {"to": "float32"})[0], expected)


# ---- convolution ----

def same_pads(size, kernel, stride, dilation, upper=True):
    """auto_pad SAME_* resolved independently of the converter: total padding split in two."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (small, large) if upper else (large, small)


CONV_CASES = [  # (N, C, H, W, O, KH, KW, strides, dilations, pads, groups, bias)
    (1, 3, 8, 8, 4, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 1, True),
    (2, 4, 9, 7, 6, 3, 2, (2, 1), (1, 1), (0, 1, 2, 0), 1, False),
    (1, 4, 10, 11, 8, 3, 3, (1, 2), (2, 1), (2, 1, 2, 1), 2, True),
    (1, 6, 7, 7, 6, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1), 6, True),       # depthwise
    (1, 4, 9, 9, 8, 5, 5, (2, 2), (1, 1), (2, 2, 2, 2), 4, False),      # depthwise, multiplier 2
    (2, 5, 6, 5, 3, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), 1, True),       # pointwise
    (1, 2, 13, 12, 3, 3, 3, (3, 3), (2, 2), (0, 0, 0, 0), 1, True),
]


def _conv_nhwc_check(op, x, w_nhwc, bias, attrs, expected_nchw):
    inputs = [np.ascontiguousarray(x.transpose(TO_NHWC)), w_nhwc] + ([bias] if bias is not None else [])
    y = ir_run(op, inputs, dict(attrs, layout="NHWC"))[0]
    close(y, np.ascontiguousarray(expected_nchw.transpose(TO_NHWC)))


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(case):
    n, c, h, w, o, kh, kw, strides, dilations, pads, groups, with_bias = case
    x, weights = rand(n, c, h, w), rand(o, c // groups, kh, kw)
    bias = rand(o) if with_bias else None
    feeds = {"x": x, "w": weights, **({"b": bias} if with_bias else {})}
    node = helper.make_node("Conv", list(feeds), ["y"], strides=strides, dilations=dilations,
                            pads=[pads[0], pads[1], pads[2], pads[3]], group=groups)
    expected = onnx_run(node, feeds, ["y"])[0]
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "groups": groups, "layout": "NCHW"}
    y = ir_run("Conv2D", [x, weights] + ([bias] if with_bias else []), attrs)[0]
    close(y, expected, rtol=1e-5, atol=2e-5)
    _conv_nhwc_check("Conv2D", x, np.ascontiguousarray(weights.transpose(0, 2, 3, 1)), bias, attrs, y)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("stride,dilation,kernel", [(1, 1, 3), (2, 1, 3), (2, 1, 4), (3, 1, 2)])
def test_conv2d_auto_pad_resolved(auto_pad, stride, dilation, kernel):
    x, weights = rand(1, 3, 11, 10), rand(4, 3, kernel, kernel)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride] * 2, dilations=[dilation] * 2,
                            auto_pad=auto_pad)
    expected = onnx_run(node, {"x": x, "w": weights}, ["y"])[0]
    upper = auto_pad == "SAME_UPPER"
    top, bottom = same_pads(11, kernel, stride, dilation, upper)
    left, right = same_pads(10, kernel, stride, dilation, upper)
    attrs = {"strides": (stride, stride), "dilations": (dilation, dilation), "pads": (top, left, bottom, right)}
    close(ir_run("Conv2D", [x, weights], attrs)[0], expected, atol=2e-5)


def test_conv2d_fused_clip():
    x, weights, bias = rand(1, 3, 6, 6), rand(5, 3, 3, 3), rand(5)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["t", "lo", "hi"], ["y"])]
    expected = onnx_run(nodes, {"x": x, "w": weights, "b": bias}, ["y"],
                        initializers={"lo": np.float32(0), "hi": np.float32(1)})[0]
    attrs = {"pads": (1, 1, 1, 1), "activation": ("Clip", 0.0, 1.0)}
    close(ir_run("Conv2D", [x, weights, bias], attrs)[0], expected, atol=2e-5)


CONV_TRANSPOSE_CASES = [  # (N, Cin, H, W, Cout, KH, KW, strides, dilations, pads, output_padding, groups)
    (1, 3, 5, 5, 4, 3, 3, (1, 1), (1, 1), (0, 0, 0, 0), (0, 0), 1),
    (2, 4, 4, 6, 6, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (1, 4, 5, 4, 4, 4, 3, (2, 3), (1, 1), (1, 0, 2, 1), (0, 2), 2),
    (1, 6, 3, 3, 6, 3, 3, (2, 2), (2, 1), (0, 1, 1, 0), (1, 0), 6),   # depthwise
]


def _conv_transpose_weights_to_nhwc(w, groups):
    """ONNX [Cin, Cout/g, KH, KW] -> runtime [Cout, KH, KW, Cin/g], written independently."""
    cin, cog, kh, kw = w.shape
    out = np.empty((cog * groups, kh, kw, cin // groups), w.dtype)
    for g in range(groups):
        for ci in range(cin // groups):
            for co in range(cog):
                out[g * cog + co, :, :, ci] = w[g * (cin // groups) + ci, co]
    return out


@pytest.mark.parametrize("case", CONV_TRANSPOSE_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_transpose2d(case, with_bias):
    n, cin, h, w, cout, kh, kw, strides, dilations, pads, output_padding, groups = case
    x, weights = rand(n, cin, h, w), rand(cin, cout // groups, kh, kw)
    bias = rand(cout) if with_bias else None
    feeds = {"x": x, "w": weights, **({"b": bias} if with_bias else {})}
    node = helper.make_node("ConvTranspose", list(feeds), ["y"], strides=strides, dilations=dilations,
                            pads=list(pads), output_padding=output_padding, group=groups)
    expected = onnx_run(node, feeds, ["y"])[0]
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "output_padding": output_padding,
             "groups": groups}
    y = ir_run("ConvTranspose2D", [x, weights] + ([bias] if with_bias else []), attrs)[0]
    close(y, expected, atol=2e-5)
    _conv_nhwc_check("ConvTranspose2D", x, _conv_transpose_weights_to_nhwc(weights, groups), bias, attrs, y)


# ---- matmul family ----

@pytest.mark.parametrize("x_shape", [(5, 7), (2, 3, 7), (7,)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fully_connected(x_shape, with_bias):
    x, weights, bias = rand(*x_shape), rand(4, 7), rand(4)
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["t" if with_bias else "y"])]
    if with_bias:
        nodes.append(helper.make_node("Add", ["t", "b"], ["y"]))
    expected = onnx_run(nodes, {"x": x}, ["y"], initializers={"wt": weights.T.copy(), "b": bias})[0]
    close(ir_run("FullyConnected", [x, weights] + ([bias] if with_bias else []))[0], expected)


def test_fully_connected_matches_gemm_with_relu():
    x, weights, bias = rand(6, 9), rand(5, 9), rand(5)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["t"], transB=1), helper.make_node("Relu", ["t"], ["y"])]
    expected = onnx_run(nodes, {"x": x, "w": weights, "b": bias}, ["y"])[0]
    close(ir_run("FullyConnected", [x, weights, bias], {"activation": ("Relu", 0.0, 0.0)})[0], expected)


@pytest.mark.parametrize("shape_a,shape_b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 6)),
                                             ((5, 2, 3), (1, 3, 2)), ((1, 1, 4), (6, 4, 1))])
@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True), (True, True)])
def test_batch_matmul(shape_a, shape_b, transpose_a, transpose_b):
    a, b = rand(*shape_a), rand(*shape_b)
    expected = onnx_run(helper.make_node("MatMul", ["a", "b"], ["y"]), {"a": a, "b": b}, ["y"])[0]
    stored_a = np.ascontiguousarray(np.swapaxes(a, -1, -2)) if transpose_a else a
    stored_b = np.ascontiguousarray(np.swapaxes(b, -1, -2)) if transpose_b else b
    y = ir_run("BatchMatMul", [stored_a, stored_b], {"transpose_a": transpose_a, "transpose_b": transpose_b})[0]
    close(y, expected)


# ---- normalisation ----

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape,axis", [((4, 10), 1), ((2, 3, 5), 0), ((2, 3, 5), 1), ((2, 3, 4, 5), 3)])
def test_softmax(op, shape, axis):
    x = rand(*shape, low=-6, high=6)
    expected = onnx_run(helper.make_node(op, ["x"], ["y"], axis=axis), {"x": x}, ["y"])[0]
    close(ir_run(op, [x], {"axis": axis})[0], expected)


@pytest.mark.parametrize("shape,axis", [((3, 8), 1), ((2, 4, 6), 2), ((2, 4, 6), 1), ((2, 3, 4, 5), 2)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_layer_norm(shape, axis, with_bias):
    x = rand(*shape, low=-3, high=3)
    scale, bias = rand(*shape[axis:]), rand(*shape[axis:])
    feeds = {"x": x, "s": scale, **({"b": bias} if with_bias else {})}
    node = helper.make_node("LayerNormalization", list(feeds), ["y"], axis=axis, epsilon=1e-3)
    expected = onnx_run(node, feeds, ["y"])[0]
    y = ir_run("LayerNorm", [x, scale] + ([bias] if with_bias else []), {"axis": axis, "epsilon": 1e-3})[0]
    close(y, expected, atol=3e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (4, 6)])
def test_batch_norm(shape):
    channels = shape[1]
    x, scale, bias, mean = rand(*shape), rand(channels), rand(channels), rand(channels)
    var = rand(channels, low=0.1, high=2.0)
    feeds = {"x": x, "s": scale, "b": bias, "m": mean, "v": var}
    expected = onnx_run(helper.make_node("BatchNormalization", list(feeds), ["y"], epsilon=1e-3), feeds, ["y"])[0]
    y = ir_run("BatchNorm", [x, scale, bias, mean, var], {"epsilon": 1e-3, "layout": "NCHW"})[0]
    close(y, expected)
    if len(shape) == 4:
        y_nhwc = ir_run("BatchNorm", [np.ascontiguousarray(x.transpose(TO_NHWC)), scale, bias, mean, var],
                        {"epsilon": 1e-3, "layout": "NHWC"})[0]
        close(y_nhwc, np.ascontiguousarray(y.transpose(TO_NHWC)))


@pytest.mark.parametrize("size", [1, 3, 5])  # onnxruntime takes odd sizes only
def test_lrn(size):
    x = rand(2, 7, 4, 5)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.02, beta=0.6, bias=1.5)
    expected = onnx_run(node, {"x": x}, ["y"])[0]
    attrs = {"size": size, "alpha": 0.02, "beta": 0.6, "bias": 1.5}
    y = ir_run("LRN", [x], dict(attrs, layout="NCHW"))[0]
    close(y, expected)
    y_nhwc = ir_run("LRN", [np.ascontiguousarray(x.transpose(TO_NHWC))], dict(attrs, layout="NHWC"))[0]
    close(y_nhwc, np.ascontiguousarray(y.transpose(TO_NHWC)))


@pytest.mark.parametrize("size", [2, 4])
def test_lrn_even_sizes_follow_the_onnx_window(size):
    """onnxruntime refuses even sizes, so the ONNX formula is spelled out here with loops: the window
    runs from c - floor((size-1)/2) to c + ceil((size-1)/2)."""
    x = rand(1, 6, 2, 3)
    alpha, beta, bias = 0.05, 0.7, 1.2
    expected = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + math.ceil((size - 1) / 2))
        square_sum = np.sum(x[:, lo:hi + 1].astype(np.float64) ** 2, axis=1)
        expected[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    close(ir_run("LRN", [x], {"size": size, "alpha": alpha, "beta": beta, "bias": bias})[0], expected)


def test_negative_onnx_axes_resolve_to_the_same_ir_node():
    x = rand(2, 3, 4)
    for onnx_op, op, onnx_attrs, attrs in [("Softmax", "Softmax", {"axis": -1}, {"axis": 2}),
                                           ("LogSoftmax", "LogSoftmax", {"axis": -2}, {"axis": 1}),
                                           ("Concat", "Concat", {"axis": -3}, {"axis": 0})]:
        expected = onnx_run(helper.make_node(onnx_op, ["x"], ["y"], **onnx_attrs), {"x": x}, ["y"])[0]
        close(ir_run(op, [x], attrs)[0], expected)
    indices = np.array([[-1, 1]], np.int64)
    expected = onnx_run(helper.make_node("Gather", ["x", "i"], ["y"], axis=-1), {"x": x, "i": indices}, ["y"])[0]
    close(ir_run("Gather", [x, indices], {"axis": 2})[0], expected)
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)
    expected = onnx_run(node, {"x": x}, ["y"], opset=18, initializers={"axes": np.array([-1, -3], np.int64)})[0]
    close(ir_run("ReduceMean", [x], {"axes": (0, 2), "keepdims": True})[0], expected)


# ---- pooling ----

POOL_CASES = [  # (H, W, kernel, strides, dilations, pads, ceil_mode)
    (8, 8, (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), False),
    (7, 9, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), False),
    (7, 9, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), True),
    (6, 6, (3, 3), (2, 2), (1, 1), (0, 0, 0, 0), True),        # ceil adds a partial window
    (5, 5, (2, 2), (2, 2), (1, 1), (1, 1, 1, 1), True),        # ceil window starting in padding dropped
    (10, 8, (3, 2), (3, 2), (1, 1), (1, 0, 2, 1), True),
    (9, 9, (2, 3), (1, 2), (2, 1), (0, 1, 1, 1), False),
    (11, 10, (3, 3), (2, 3), (2, 2), (2, 1, 1, 2), True),
]


def _pool_attrs(case):
    _, _, kernel, strides, dilations, pads, ceil_mode = case
    return {"kernel": kernel, "strides": strides, "dilations": dilations, "pads": pads, "ceil_mode": ceil_mode}


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool(case):
    h, w, kernel, strides, dilations, pads, ceil_mode = case
    x = rand(2, 3, h, w)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=kernel, strides=strides, dilations=dilations,
                            pads=list(pads), ceil_mode=int(ceil_mode))
    expected = onnx_run(node, {"x": x}, ["y"])[0]
    y = ir_run("MaxPool2D", [x], dict(_pool_attrs(case), layout="NCHW"))[0]
    close(y, expected)
    y_nhwc = ir_run("MaxPool2D", [np.ascontiguousarray(x.transpose(TO_NHWC))], dict(_pool_attrs(case), layout="NHWC"))[0]
    close(y_nhwc, np.ascontiguousarray(y.transpose(TO_NHWC)))


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avg_pool(case, count_include_pad):
    h, w, kernel, strides, dilations, pads, ceil_mode = case
    x = rand(2, 3, h, w)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=kernel, strides=strides, dilations=dilations,
                            pads=list(pads), ceil_mode=int(ceil_mode), count_include_pad=int(count_include_pad))
    expected = onnx_run(node, {"x": x}, ["y"], opset=19)[0]
    attrs = dict(_pool_attrs(case), count_include_pad=count_include_pad)
    y = ir_run("AvgPool2D", [x], dict(attrs, layout="NCHW"))[0]
    close(y, expected)
    y_nhwc = ir_run("AvgPool2D", [np.ascontiguousarray(x.transpose(TO_NHWC))], dict(attrs, layout="NHWC"))[0]
    close(y_nhwc, np.ascontiguousarray(y.transpose(TO_NHWC)))


def test_global_pools_as_full_kernel():
    x = rand(2, 4, 5, 6)
    for onnx_op, op in [("GlobalAveragePool", "AvgPool2D"), ("GlobalMaxPool", "MaxPool2D")]:
        expected = onnx_run(helper.make_node(onnx_op, ["x"], ["y"]), {"x": x}, ["y"])[0]
        close(ir_run(op, [x], {"kernel": (5, 6)})[0], expected)


# ---- reductions ----

REDUCE_ONNX = {"ReduceMean": "ReduceMean", "ReduceSum": "ReduceSum", "ReduceMax": "ReduceMax",
               "ReduceMin": "ReduceMin", "ReduceProd": "ReduceProd", "ReduceL1": "ReduceL1",
               "ReduceL2": "ReduceL2", "ReduceSumSquare": "ReduceSumSquare",
               "ReduceLogSumExp": "ReduceLogSumExp"}


@pytest.mark.parametrize("op", sorted(REDUCE_ONNX))
@pytest.mark.parametrize("axes", [(0,), (1,), (0, 2), (1, 2, 3), (0, 1, 2, 3)])
@pytest.mark.parametrize("keepdims", [True, False])
def test_reduce(op, axes, keepdims):
    x = rand(2, 3, 4, 5, low=0.6, high=1.4) if op == "ReduceProd" else rand(2, 3, 4, 5)
    node = helper.make_node(REDUCE_ONNX[op], ["x", "axes"], ["y"], keepdims=int(keepdims))
    expected = onnx_run(node, {"x": x}, ["y"], opset=18, initializers={"axes": np.array(axes, np.int64)})[0]
    close(ir_run(op, [x], {"axes": axes, "keepdims": keepdims})[0], expected)


def test_reduce_integers():
    x = RNG.integers(-9, 9, (3, 4)).astype(np.int64)
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    expected = onnx_run(node, {"x": x}, ["y"], opset=18, initializers={"axes": np.array([1], np.int64)})[0]
    close(ir_run("ReduceSum", [x], {"axes": (1,), "keepdims": False})[0], expected)


# ---- data movement ----

def test_reshape_identity_transpose_broadcast():
    x = rand(2, 3, 4)
    expected = onnx_run(helper.make_node("Reshape", ["x", "s"], ["y"]), {"x": x}, ["y"],
                        initializers={"s": np.array([4, 6], np.int64)})[0]
    close(ir_run("Reshape", [x], {"shape": (4, 6)})[0], expected)
    close(ir_run("Identity", [x])[0], onnx_run(helper.make_node("Identity", ["x"], ["y"]), {"x": x}, ["y"])[0])
    for perm in [(2, 0, 1), (0, 2, 1), (1, 2, 0)]:
        expected = onnx_run(helper.make_node("Transpose", ["x"], ["y"], perm=perm), {"x": x}, ["y"])[0]
        close(ir_run("Transpose", [x], {"perm": perm})[0], expected)
    small = rand(3, 1)
    for shape in [(2, 3, 4), (3, 5), (4, 1, 1)]:
        expected = onnx_run(helper.make_node("Expand", ["x", "s"], ["y"]), {"x": small}, ["y"],
                            initializers={"s": np.array(shape, np.int64)})[0]
        close(ir_run("BroadcastTo", [small], {"shape": shape})[0], expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_concat_and_split(axis):
    parts = [rand(*(s if k == axis else d for k, d in enumerate((2, 3, 4)))) for s in (1, 3, 2)]
    names = {f"x{k}": p for k, p in enumerate(parts)}
    expected = onnx_run(helper.make_node("Concat", list(names), ["y"], axis=axis), names, ["y"])[0]
    close(ir_run("Concat", parts, {"axis": axis})[0], expected)
    sizes = (1, 3, 2)
    outs = onnx_run(helper.make_node("Split", ["x", "split"], ["a", "b", "c"], axis=axis), {"x": expected},
                    ["a", "b", "c"], initializers={"split": np.array(sizes, np.int64)})
    for got, want in zip(ir_run("Split", [expected], {"axis": axis, "sizes": sizes}, outputs=3), outs):
        close(got, want)


SLICE_CASES = [  # per-dim (starts, ends, steps) on a (6, 7, 5) input
    ((0, 1, 0), (6, 7, 5), (1, 2, 1)),
    ((-3, -1, 1), (100, -8, 4), (1, -1, 1)),
    ((5, 6, -1), (-100, 0, -100), (-1, -2, -1)),
    ((4, 2, 4), (0, 5, 1), (-2, 3, -1)),
    ((1, 8, -7), (1, 9, 2), (1, 1, 1)),                      # empty along dims 0 and 1
    ((-1, 0, 0), (-9223372036854775807, 7, 5), (-1, 1, 1)),  # INT64-extreme end
]


@pytest.mark.parametrize("starts,ends,steps", SLICE_CASES)
def test_slice(starts, ends, steps):
    x = rand(6, 7, 5)
    consts = {"s": np.array(starts, np.int64), "e": np.array(ends, np.int64), "a": np.arange(3, dtype=np.int64),
              "t": np.array(steps, np.int64)}
    expected = onnx_run(helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"]), {"x": x}, ["y"],
                        initializers=consts)[0]
    close(ir_run("Slice", [x], {"starts": starts, "ends": ends, "steps": steps})[0], expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_gather(axis, index_dtype):
    x = rand(4, 5, 6)
    dim = x.shape[axis]
    indices = RNG.integers(-dim, dim, (2, 3)).astype(index_dtype)
    expected = onnx_run(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis), {"x": x, "i": indices}, ["y"])[0]
    close(ir_run("Gather", [x, indices], {"axis": axis})[0], expected)
    scalar = np.array(-1, index_dtype)
    expected = onnx_run(helper.make_node("Gather", ["x", "i"], ["y"], axis=axis), {"x": x, "i": scalar}, ["y"])[0]
    close(ir_run("Gather", [x, scalar], {"axis": axis})[0], expected)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_elements(axis):
    x = rand(4, 5, 6)
    shape = [3, 4, 2]
    indices = RNG.integers(-x.shape[axis], x.shape[axis], shape).astype(np.int64)
    node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=axis)
    expected = onnx_run(node, {"x": x, "i": indices}, ["y"])[0]
    close(ir_run("GatherElements", [x, indices], {"axis": axis})[0], expected)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", [(0, 1, 2, 0, 2, 1, 0, 3), (1, 0, 0, 2, 1, 2, 3, 0), (0, -1, 2, 1, 1, 2, 0, -2)])
def test_pad(mode, pads):
    x = rand(3, 4, 5, 6)
    node = helper.make_node("Pad", ["x", "p", "v"], ["y"], mode=mode)
    expected = onnx_run(node, {"x": x}, ["y"], opset=18,
                        initializers={"p": np.array(pads, np.int64), "v": np.float32(1.5)})[0]
    close(ir_run("Pad", [x], {"mode": mode, "pads": pads, "value": 1.5})[0], expected)


RESIZE_SCALES = [(1.0, 1.0, 2.0, 2.0), (1.0, 1.0, 0.5, 0.75), (1.0, 1.0, 1.5, 3.0), (1.0, 1.0, 0.6, 1.7)]


@pytest.mark.parametrize("scales", RESIZE_SCALES)
@pytest.mark.parametrize("coordinate_mode", ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
@pytest.mark.parametrize("mode,nearest_mode", [("linear", "round_prefer_floor"), ("nearest", "round_prefer_floor"),
                                               ("nearest", "round_prefer_ceil"), ("nearest", "floor"),
                                               ("nearest", "ceil")])
def test_resize(scales, coordinate_mode, mode, nearest_mode):
    x = rand(1, 2, 4, 5)
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode,
                            coordinate_transformation_mode=coordinate_mode, nearest_mode=nearest_mode)
    expected = onnx_run(node, {"x": x}, ["y"], opset=18, initializers={"scales": np.array(scales, np.float32)})[0]
    attrs = {"mode": mode, "coordinate_mode": coordinate_mode, "nearest_mode": nearest_mode, "scales": scales}
    close(ir_run("Resize", [x], attrs)[0], expected)


def test_resize_from_sizes():
    x = rand(1, 3, 3, 7)
    sizes = (1, 3, 7, 4)
    node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="linear")
    expected = onnx_run(node, {"x": x}, ["y"], opset=18, initializers={"sizes": np.array(sizes, np.int64)})[0]
    scales = tuple(o / i for o, i in zip(sizes, x.shape))
    close(ir_run("Resize", [x], {"mode": "linear", "scales": scales})[0], expected)


# ---- recurrent ----

def _rnn_inputs(gates, directions, seq, batch, width, hidden, with_bias, with_initial, with_peephole=False):
    inputs = {"X": rand(seq, batch, width), "W": rand(directions, gates * hidden, width, low=-0.6, high=0.6),
              "R": rand(directions, gates * hidden, hidden, low=-0.6, high=0.6)}
    optional = {"B": rand(directions, 2 * gates * hidden, low=-0.5, high=0.5) if with_bias else None,
                "sequence_lens": None,
                "initial_h": rand(directions, batch, hidden) if with_initial else None}
    if gates == 4:
        optional["initial_c"] = rand(directions, batch, hidden) if with_initial else None
        optional["P"] = rand(directions, 3 * hidden, low=-0.5, high=0.5) if with_peephole else None
    return inputs, optional


def _rnn_compare(op, onnx_op, gates, outputs, direction, with_bias, with_initial, attrs, onnx_attrs, peephole=False):
    directions = 2 if direction == "bidirectional" else 1
    hidden = 5
    inputs, optional = _rnn_inputs(gates, directions, 4, 3, 6, hidden, with_bias, with_initial, peephole)
    names = list(inputs) + [name if value is not None else "" for name, value in optional.items()]
    while names[-1] == "":
        names.pop()
    feeds = dict(inputs, **{k: v for k, v in optional.items() if v is not None})
    out_names = ["Y", "Y_h", "Y_c"][:outputs]
    node = helper.make_node(onnx_op, names, out_names, hidden_size=hidden, direction=direction, **onnx_attrs)
    expected = onnx_run(node, feeds, out_names)
    ir_inputs = list(inputs.values()) + list(optional.values())
    got = ir_run(op, ir_inputs, dict(attrs, hidden_size=hidden, direction=direction), outputs=outputs)
    for g, e in zip(got, expected):
        close(g, e, atol=2e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("with_bias,with_initial,peephole", [(False, False, False), (True, True, False),
                                                             (True, False, True), (True, True, True)])
def test_lstm(direction, with_bias, with_initial, peephole):
    _rnn_compare("LSTM", "LSTM", 4, 3, direction, with_bias, with_initial, {}, {}, peephole)


def test_lstm_clip():
    _rnn_compare("LSTM", "LSTM", 4, 3, "bidirectional", True, True, {"clip": 0.4}, {"clip": 0.4}, True)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("with_bias,with_initial", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("linear_before_reset", [False, True])
def test_gru(direction, with_bias, with_initial, linear_before_reset):
    _rnn_compare("GRU", "GRU", 3, 2, direction, with_bias, with_initial,
                 {"linear_before_reset": linear_before_reset}, {"linear_before_reset": int(linear_before_reset)})


def test_gru_clip():
    _rnn_compare("GRU", "GRU", 3, 2, "forward", True, True, {"clip": 0.3}, {"clip": 0.3})


# ---- the executor itself ----

def _two_node_graph():
    tensors = {"x": TensorType("float32", (2, 3)), "w": TensorType("float32", (3,)),
               "t": TensorType("float32", (2, 3)), "y": TensorType("float32", (2, 3))}
    nodes = [Node("Mul", ("x", "w"), ("t",)), Node("Relu", ("t",), ("y",))]
    return Graph(nodes, ("x",), ("y",), tensors, {"w": np.array([1, -2, 3], np.float32)})


def test_run_chains_nodes_and_keeps_values():
    x = rand(2, 3)
    values = run(_two_node_graph(), {"x": x}, keep_all=True)
    close(values["y"], np.maximum(x * np.array([1, -2, 3], np.float32), 0))
    assert set(values) == {"x", "w", "t", "y"}
    assert set(run(_two_node_graph(), {"x": x}, outputs=["t"])) == {"t"}


@pytest.mark.parametrize("feeds,message", [
    ({}, "no feed"),
    ({"x": np.zeros((2, 3), np.float32), "z": np.zeros(1)}, "not graph inputs"),
    ({"x": np.zeros((2, 3), np.float64)}, "dtype float64"),
    ({"x": np.zeros((3, 2), np.float32)}, "shape (3, 2)"),
])
def test_run_rejects_bad_feeds(feeds, message):
    with pytest.raises(ReferenceRunError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(_two_node_graph(), feeds)


def test_run_names_the_node_on_a_type_mismatch():
    graph = _two_node_graph()
    graph = graph.replace(tensors=dict(graph.tensors, t=TensorType("float32", (3, 2))))
    with pytest.raises(ReferenceRunError, match="node 0 't' \\(Mul\\): output 't'"):
        run(graph, {"x": rand(2, 3)})


def test_run_reports_unknown_inputs():
    graph = _two_node_graph()
    graph = graph.replace(nodes=(Node("Relu", ("nowhere",), ("y",)),))
    with pytest.raises(ReferenceRunError, match="'nowhere'"):
        run(graph, {"x": rand(2, 3)})


def test_symbolic_dims_accept_any_size():
    tensors = {"x": TensorType("float32", ("batch", 3)), "y": TensorType("float32", ("batch", 3))}
    graph = Graph([Node("Exp", ("x",), ("y",))], ("x",), ("y",), tensors)
    x = rand(5, 3)
    close(run(graph, {"x": x})["y"], np.exp(x.astype(np.float64)).astype(np.float32))
    assert math.isclose(float(run(graph, {"x": np.zeros((1, 3), np.float32)})["y"][0, 0]), 1.0)

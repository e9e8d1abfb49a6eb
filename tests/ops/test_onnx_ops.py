"""Every supported ONNX op, one small model at a time: the C runtime (through edge.Interpreter) vs
converter.reference on the converted graph vs onnxruntime.

Shapes include broadcasting (rank differences, size-1 dims) and odd sizes (1, 7, 13). Weights and
attribute-like inputs (Conv weights, Reshape shapes, Slice bounds, ...) are initializers, as exporters
write them; activations are graph inputs. Random data comes from a seed derived from the case id, so
each case is reproducible on its own (``pytest -k <id>``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.fixtures.harness import check_model, run_onnx_reference, run_onnxruntime

pytest.importorskip("onnxruntime")

DEFAULT_OPSET = 17


@dataclass
class Feed:
    """A graph input (``const=False``) or an initializer (``const=True``)."""
    value: np.ndarray
    const: bool = False


@dataclass
class Case:
    id: str
    op: str
    # rng -> input name -> Feed, in the node's input order; None marks an optional input left out.
    inputs: Callable[[np.random.Generator], list[tuple[str, Feed | None]]]
    attrs: dict = field(default_factory=dict)
    num_outputs: int = 1
    # Outputs left unnamed (optional outputs the case does not read).
    unread_outputs: tuple[int, ...] = ()
    opset: int = DEFAULT_OPSET
    # Extra nodes after the op (their outputs become the graph outputs instead), for ops tested
    # through what consumes them (Shape, ConstantOfShape, Range fold into constants).
    extra_nodes: Callable[[list[str]], tuple[list[onnx.NodeProto], list[str]]] | None = None
    # The output is typed like input 0, for ops onnx's shape inference leaves untyped
    # (GroupNormalization, a function op).
    output_like_input: bool = False
    # The oracle: onnxruntime, or the onnx package's ReferenceEvaluator ("onnx") for ops onnxruntime
    # lacks or computes otherwise than the ONNX definition.
    oracle: str = "onnxruntime"


CASES: list[Case] = []


def case(id: str, op: str, inputs, attrs=None, **kw) -> None:
    CASES.append(Case(id, op, inputs, attrs or {}, **kw))


def normal(rng, shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def uniform(rng, shape, low, high):
    return rng.uniform(low, high, shape).astype(np.float32)


def away_from_zero(rng, shape, low=0.3, high=3.0):
    return (uniform(rng, shape, low, high) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)


def ints(rng, shape, low, high, dtype=np.int64):
    return rng.integers(low, high, shape).astype(dtype)


def x_input(make):
    return lambda rng: [("x", Feed(make(rng)))]


def c(value, dtype=np.int64):
    return Feed(np.asarray(value, dtype), const=True)


ELEMENTWISE_SHAPES = [(7,), (2, 13), (1, 3, 5, 7), (2, 1, 4, 3, 5)]

UNARY = {
    "Relu": lambda rng, s: normal(rng, s),
    "Sigmoid": lambda rng, s: normal(rng, s, 3.0),
    "Tanh": lambda rng, s: normal(rng, s, 2.0),
    "Exp": lambda rng, s: uniform(rng, s, -5.0, 5.0),
    "Log": lambda rng, s: uniform(rng, s, 0.05, 10.0),
    "Sqrt": lambda rng, s: uniform(rng, s, 0.0, 10.0),
    "Reciprocal": lambda rng, s: away_from_zero(rng, s),
    "Neg": lambda rng, s: normal(rng, s),
    "Abs": lambda rng, s: normal(rng, s),
    "Erf": lambda rng, s: normal(rng, s, 1.5),
    "HardSwish": lambda rng, s: uniform(rng, s, -5.0, 5.0),
    "Asin": lambda rng, s: uniform(rng, s, -1.0, 1.0),
    "Acos": lambda rng, s: uniform(rng, s, -1.0, 1.0),
    "Atan": lambda rng, s: normal(rng, s, 4.0),
    "Identity": lambda rng, s: normal(rng, s),
}
for op, make in UNARY.items():
    for shape in ELEMENTWISE_SHAPES:
        case(f"{op}-{'x'.join(map(str, shape))}", op,
             (lambda make, shape: lambda rng: [("x", Feed(make(rng, shape)))])(make, shape),
             opset=14 if op == "HardSwish" else DEFAULT_OPSET)

for alpha in (None, 0.3):
    case(f"LeakyRelu-alpha{alpha}", "LeakyRelu", x_input(lambda rng: normal(rng, (2, 7, 13))),
         {} if alpha is None else {"alpha": alpha})
for attrs in ({}, {"alpha": 0.5, "beta": 0.3}):
    case(f"HardSigmoid-{len(attrs)}", "HardSigmoid", x_input(lambda rng: uniform(rng, (3, 13), -6, 6)), attrs)
case("Dropout-inference", "Dropout", x_input(lambda rng: normal(rng, (2, 13))), opset=13)
case("Dropout-ratio", "Dropout", lambda rng: [("x", Feed(normal(rng, (4, 7)))), ("ratio", Feed(np.float32(0.3), True))])
for approximate in ("none", "tanh"):
    case(f"Gelu-{approximate}", "Gelu", x_input(lambda rng: normal(rng, (2, 5, 13), 2.0)),
         {"approximate": approximate}, opset=20)

CLIP_BOUNDS = {"both": (-0.5, 1.5), "min": (-0.5, None), "max": (None, 0.7), "none": (None, None),
               "relu6": (0.0, 6.0)}
for name, (lo, hi) in CLIP_BOUNDS.items():
    case(f"Clip-{name}", "Clip",
         (lambda lo, hi: lambda rng: [("x", Feed(normal(rng, (3, 7, 5), 3.0))),
                                      ("min", None if lo is None else Feed(np.float32(lo), True)),
                                      ("max", None if hi is None else Feed(np.float32(hi), True))])(lo, hi))

for slope_shape, x_shape in (((3, 1, 1), (2, 3, 5, 7)), ((1,), (2, 3, 5)), ((7,), (2, 3, 7)), ((2, 3, 5), (2, 3, 5))):
    case(f"PRelu-{'x'.join(map(str, slope_shape))}", "PRelu",
         (lambda xs, ss: lambda rng: [("x", Feed(normal(rng, xs))), ("slope", Feed(uniform(rng, ss, 0.05, 0.5), True))])(
             x_shape, slope_shape))

BROADCAST_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4, 5), (5,)), ((2, 3, 4, 5), (3, 1, 1)), ((1, 13), (7, 1)),
                   ((7,), ()), ((2, 1, 3), (1, 4, 1)), ((1,), (2, 5, 3))]
BINARY = {
    "Add": (normal, normal),
    "Sub": (normal, normal),
    "Mul": (normal, normal),
    "Div": (normal, away_from_zero),
    "Pow": (lambda rng, s: uniform(rng, s, 0.2, 3.0), lambda rng, s: uniform(rng, s, -2.0, 2.0)),
    "Min": (normal, normal),
    "Max": (normal, normal),
}
for op, (make_a, make_b) in BINARY.items():
    for sa, sb in BROADCAST_PAIRS:
        name = f"{op}-{'x'.join(map(str, sa)) or 'scalar'}-{'x'.join(map(str, sb)) or 'scalar'}"
        case(name, op, (lambda ma, mb, sa, sb: lambda rng: [("a", Feed(ma(rng, sa))), ("b", Feed(mb(rng, sb)))])(
            make_a, make_b, sa, sb))
    case(f"{op}-const-channel", op, (lambda ma, mb: lambda rng: [
        ("a", Feed(ma(rng, (1, 8, 5, 5)))), ("b", Feed(mb(rng, (1, 8, 1, 1)), True))])(make_a, make_b))
case("Pow-const-square", "Pow", lambda rng: [("a", Feed(normal(rng, (3, 7)))), ("b", Feed(np.float32(2.0), True))])
case("Pow-const-sqrt", "Pow", lambda rng: [("a", Feed(uniform(rng, (3, 7), 0, 4))), ("b", Feed(np.float32(0.5), True))])
case("Min-three", "Min", lambda rng: [("a", Feed(normal(rng, (2, 3)))), ("b", Feed(normal(rng, (3,)))),
                                     ("c", Feed(normal(rng, (2, 1))))])
case("Max-three", "Max", lambda rng: [("a", Feed(normal(rng, (2, 3)))), ("b", Feed(normal(rng, (3,)))),
                                     ("c", Feed(normal(rng, (2, 1))))])
for dtype in (np.int32, np.int64):
    for op in ("Add", "Sub", "Mul", "Max", "Min"):
        case(f"{op}-{np.dtype(dtype).name}", op, (lambda dt: lambda rng: [
            ("a", Feed(ints(rng, (3, 5), -50, 50, dt))), ("b", Feed(ints(rng, (5,), -50, 50, dt)))])(dtype))
    case(f"Div-{np.dtype(dtype).name}-truncates", "Div", (lambda dt: lambda rng: [
        ("a", Feed(ints(rng, (4, 7), -100, 100, dt))),
        ("b", Feed((ints(rng, (7,), 1, 9, dt) * rng.choice([-1, 1], 7)).astype(dt)))])(dtype))

COMPARISONS = ("Equal", "Less", "Greater", "GreaterOrEqual")
for op in COMPARISONS:
    for sa, sb in (((4, 5), (4, 5)), ((2, 3, 4), (4,)), ((3, 1), (1, 7))):
        case(f"{op}-float-{'x'.join(map(str, sa))}-{'x'.join(map(str, sb))}", op,
             (lambda sa, sb: lambda rng: [("a", Feed(ints(rng, sa, -3, 3).astype(np.float32))),
                                          ("b", Feed(ints(rng, sb, -3, 3).astype(np.float32)))])(sa, sb))
    case(f"{op}-int64", op, lambda rng: [("a", Feed(ints(rng, (3, 7), -3, 3))), ("b", Feed(ints(rng, (7,), -3, 3)))])
    case(f"{op}-int32", op, lambda rng: [("a", Feed(ints(rng, (2, 5), -3, 3, np.int32))),
                                         ("b", Feed(ints(rng, (2, 5), -3, 3, np.int32)))])

for op in ("And", "Or"):
    for sa, sb in (((3, 4), (3, 4)), ((2, 3, 5), (5,)), ((4, 1), (1, 6))):
        case(f"{op}-{'x'.join(map(str, sa))}-{'x'.join(map(str, sb))}", op,
             (lambda sa, sb: lambda rng: [("a", Feed(rng.random(sa) < 0.5)), ("b", Feed(rng.random(sb) < 0.5))])(sa, sb))
case("Not", "Not", x_input(lambda rng: rng.random((3, 13)) < 0.5))


def with_nans(rng):
    x = normal(rng, (5, 13))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[0, :3] = [np.inf, -np.inf, 0.0]
    return x


case("IsNaN", "IsNaN", x_input(with_nans))

for sc, sa, sb in (((3, 4), (3, 4), (3, 4)), ((2, 1, 5), (5,), (3, 1)), ((7,), (), (7,))):
    case(f"Where-{'x'.join(map(str, sc))}", "Where", (lambda sc, sa, sb: lambda rng: [
        ("cond", Feed(rng.random(sc) < 0.5)), ("a", Feed(normal(rng, sa))), ("b", Feed(normal(rng, sb)))])(sc, sa, sb))
case("Where-int64", "Where", lambda rng: [("cond", Feed(rng.random((4, 6)) < 0.5)),
                                          ("a", Feed(ints(rng, (4, 6), -9, 9))), ("b", Feed(ints(rng, (6,), -9, 9)))])

CASTS = [
    ("float32", "int32", lambda rng: normal(rng, (4, 7), 20.0)),
    ("float32", "int64", lambda rng: normal(rng, (4, 7), 20.0)),
    ("float32", "bool", lambda rng: np.where(rng.random((4, 7)) < 0.4, 0.0, normal(rng, (4, 7))).astype(np.float32)),
    ("int64", "float32", lambda rng: ints(rng, (3, 5), -1000, 1000)),
    ("int32", "float32", lambda rng: ints(rng, (3, 5), -1000, 1000, np.int32)),
    ("int32", "int64", lambda rng: ints(rng, (3, 5), -1000, 1000, np.int32)),
    ("int64", "int32", lambda rng: ints(rng, (3, 5), -1000, 1000)),
    ("bool", "float32", lambda rng: rng.random((3, 5)) < 0.5),
    ("bool", "int64", lambda rng: rng.random((3, 5)) < 0.5),
]
for src, dst, make in CASTS:
    case(f"Cast-{src}-{dst}", "Cast", x_input(make), {"to": helper.np_dtype_to_tensor_dtype(np.dtype(dst))})

for axis in (-1, 0, 1):
    for op in ("Softmax", "LogSoftmax"):
        case(f"{op}-axis{axis}", op, x_input(lambda rng: normal(rng, (2, 3, 7), 3.0)), {"axis": axis}, opset=13)
case("Softmax-large-values", "Softmax", x_input(lambda rng: normal(rng, (3, 13), 1.0) + 1000.0), {"axis": -1})

for shape in ((2, 3, 5, 7), (4, 6), (2, 3, 7)):
    case(f"BatchNormalization-{'x'.join(map(str, shape))}", "BatchNormalization", (lambda shape: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("scale", Feed(uniform(rng, shape[1], 0.5, 1.5), True)),
        ("bias", Feed(normal(rng, shape[1]), True)), ("mean", Feed(normal(rng, shape[1]), True)),
        ("var", Feed(uniform(rng, shape[1], 0.5, 2.0), True))])(shape), {"epsilon": 1e-3}, opset=15)

for shape, axis, bias in (((2, 5, 8), -1, True), ((2, 3, 4, 5), 1, True), ((3, 13), -1, False), ((2, 3, 4, 5), -2, True)):
    norm_shape = shape[axis:]
    case(f"LayerNormalization-{'x'.join(map(str, shape))}-axis{axis}{'' if bias else '-nobias'}", "LayerNormalization",
         (lambda shape, ns, bias: lambda rng: [("x", Feed(normal(rng, shape, 2.0) + 1.0)),
                                               ("scale", Feed(uniform(rng, ns, 0.5, 1.5), True)),
                                               ("bias", Feed(normal(rng, ns), True) if bias else None)])(
             shape, norm_shape, bias), {"axis": axis, "epsilon": 1e-5})


def conv_inputs(x_shape, w_shape, bias=True):
    def make(rng):
        fan_in = int(np.prod(w_shape[1:]))
        feeds = [("x", Feed(normal(rng, x_shape))), ("w", Feed(normal(rng, w_shape, (2.0 / fan_in) ** 0.5), True))]
        if bias:
            feeds.append(("b", Feed(normal(rng, w_shape[0], 0.1), True)))
        return feeds
    return make


CONVS = {
    "basic-3x3-pad1": ((1, 3, 7, 7), (5, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "stride2-nopad-nobias": ((2, 4, 13, 11), (6, 4, 3, 3), {"strides": [2, 2]}),
    "asymmetric-pads": ((1, 3, 8, 9), (4, 3, 3, 3), {"pads": [0, 1, 2, 1]}),
    "same-upper-stride2": ((1, 3, 13, 10), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "same-lower-stride2": ((1, 3, 13, 10), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "same-upper-even-kernel": ((1, 2, 7, 7), (3, 2, 2, 2), {"auto_pad": "SAME_UPPER"}),
    "valid": ((1, 3, 9, 8), (4, 3, 3, 2), {"auto_pad": "VALID"}),
    "notset-explicit": ((1, 3, 6, 6), (4, 3, 3, 3), {"auto_pad": "NOTSET", "pads": [1, 2, 1, 0]}),
    "dilated": ((1, 2, 11, 9), (3, 2, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "dilated-strided": ((1, 2, 15, 15), (3, 2, 3, 3), {"dilations": [2, 3], "strides": [2, 2]}),
    "grouped": ((1, 4, 9, 9), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "grouped-3": ((2, 6, 7, 5), (9, 2, 3, 1), {"group": 3}),
    "depthwise": ((1, 8, 10, 10), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "depthwise-stride2": ((1, 7, 13, 13), (7, 1, 3, 3), {"group": 7, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "depthwise-multiplier2": ((1, 4, 9, 9), (8, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    "pointwise": ((1, 13, 5, 7), (7, 13, 1, 1), {}),
    "kernel-1x5": ((1, 3, 6, 11), (4, 3, 1, 5), {"pads": [0, 2, 0, 2]}),
    "kernel-5x5-stride-2x1": ((1, 5, 12, 9), (7, 5, 5, 5), {"strides": [2, 1], "pads": [2, 2, 2, 2]}),
    "kernel-shape-attr": ((1, 3, 7, 7), (4, 3, 3, 3), {"kernel_shape": [3, 3]}),
    "single-pixel": ((1, 3, 1, 1), (4, 3, 1, 1), {}),
}
for name, (xs, ws, attrs) in CONVS.items():
    case(f"Conv-{name}", "Conv", conv_inputs(xs, ws, bias="nobias" not in name), attrs)

CONVS_3D = {
    "3d-basic-pad1": ((1, 3, 5, 6, 7), (4, 3, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
    "3d-strided-dilated-nobias": ((2, 2, 9, 7, 8), (3, 2, 2, 3, 2), {"strides": [2, 1, 2], "dilations": [2, 1, 1]}),
    "3d-asymmetric-pads-grouped": ((1, 4, 6, 5, 5), (6, 2, 3, 1, 3), {"pads": [2, 0, 1, 0, 1, 1], "group": 2}),
    "3d-same-upper": ((1, 2, 7, 6, 5), (3, 2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2, 2]}),
    "3d-depth-one": ((1, 3, 1, 5, 5), (2, 3, 1, 3, 3), {}),
}
for name, (xs, ws, attrs) in CONVS_3D.items():
    case(f"Conv-{name}", "Conv", conv_inputs(xs, ws, bias="nobias" not in name), attrs)

CONV_TRANSPOSES = {
    "basic": ((1, 3, 5, 5), (3, 4, 3, 3), {}),
    "stride2-pads1-outpad1": ((1, 3, 5, 6), (3, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    "stride2-kernel2": ((2, 4, 4, 3), (4, 2, 2, 2), {"strides": [2, 2]}),
    "grouped": ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 2]}),
    "dilated": ((1, 2, 5, 5), (2, 3, 3, 3), {"dilations": [2, 2]}),
    "asymmetric-pads": ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),
    "same-upper": ((1, 2, 5, 5), (2, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "output-shape": ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
}
for name, (xs, ws, attrs) in CONV_TRANSPOSES.items():
    def make(rng, xs=xs, ws=ws, groups=attrs.get("group", 1)):
        return [("x", Feed(normal(rng, xs))), ("w", Feed(normal(rng, ws, 0.3), True)),
                ("b", Feed(normal(rng, ws[1] * groups, 0.1), True))]
    case(f"ConvTranspose-{name}", "ConvTranspose", make, attrs)

CONV_TRANSPOSES_3D = {
    "3d-basic": ((1, 3, 3, 4, 5), (3, 2, 2, 3, 3), {}),
    "3d-strided-padded": ((1, 2, 4, 3, 3), (2, 3, 3, 3, 2), {"strides": [2, 2, 1], "pads": [1, 0, 1, 1, 1, 0]}),
    "3d-dilated-output-padding": ((2, 2, 3, 4, 4), (2, 2, 2, 2, 3), {"strides": [3, 2, 2], "dilations": [2, 1, 1],
                                                                      "output_padding": [1, 1, 0]}),
    "3d-grouped": ((1, 4, 3, 3, 3), (4, 1, 3, 2, 2), {"group": 2, "strides": [2, 1, 1]}),
    "3d-output-shape": ((1, 2, 3, 4, 4), (2, 3, 3, 3, 3), {"strides": [2, 2, 2], "output_shape": [6, 8, 8]}),
}
for name, (xs, ws, attrs) in CONV_TRANSPOSES_3D.items():
    def make(rng, xs=xs, ws=ws, groups=attrs.get("group", 1)):
        return [("x", Feed(normal(rng, xs))), ("w", Feed(normal(rng, ws, 0.3), True)),
                ("b", Feed(normal(rng, ws[1] * groups, 0.1), True))]
    case(f"ConvTranspose-{name}", "ConvTranspose", make, attrs)
case("ConvTranspose-3d-no-bias", "ConvTranspose", lambda rng: [
    ("x", Feed(normal(rng, (1, 2, 2, 3, 3)))), ("w", Feed(normal(rng, (2, 2, 2, 2, 2), 0.3), True))],
    {"strides": [2, 2, 2]})

GEMMS = {
    "plain": ((4, 5), (5, 6), (6,), {}),
    "transA": ((5, 4), (5, 6), (6,), {"transA": 1}),
    "transB": ((4, 5), (6, 5), (6,), {"transB": 1}),
    "transA-transB": ((5, 4), (6, 5), (1, 6), {"transA": 1, "transB": 1}),
    "alpha-beta": ((3, 7), (7, 13), (3, 13), {"alpha": 0.5, "beta": 2.0}),
    "bias-column": ((4, 5), (5, 6), (4, 1), {}),
    "bias-scalar": ((4, 5), (5, 6), (), {"beta": 0.25}),
    "no-bias": ((1, 13), (7, 13), None, {"transB": 1}),
}
for name, (sa, sb, sc, attrs) in GEMMS.items():
    def make(rng, sa=sa, sb=sb, sc=sc):
        feeds = [("a", Feed(normal(rng, sa))), ("b", Feed(normal(rng, sb), True))]
        if sc is not None:
            feeds.append(("c", Feed(normal(rng, sc), True)))
        return feeds
    case(f"Gemm-{name}", "Gemm", make, attrs)
case("Gemm-b-runtime", "Gemm", lambda rng: [("a", Feed(normal(rng, (3, 5)))), ("b", Feed(normal(rng, (4, 5)))),
                                            ("c", Feed(normal(rng, (4,)), True))], {"transB": 1, "alpha": 1.5})

MATMULS = [((3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((3, 4), (2, 4, 5)),
           ((4,), (4, 5)), ((2, 3, 4), (4,)), ((1, 13), (13, 1)), ((2, 7, 13), (13, 7))]
for sa, sb in MATMULS:
    ident = f"{'x'.join(map(str, sa))}-{'x'.join(map(str, sb))}"
    case(f"MatMul-{ident}", "MatMul", (lambda sa, sb: lambda rng: [("a", Feed(normal(rng, sa))),
                                                                   ("b", Feed(normal(rng, sb)))])(sa, sb))
case("MatMul-const-weight", "MatMul", lambda rng: [("a", Feed(normal(rng, (2, 5, 13)))), ("b", Feed(normal(rng, (13, 7)), True))])

POOLS = {
    "MaxPool-3x3-s2-p1": ("MaxPool", (1, 3, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "MaxPool-2x2-s2": ("MaxPool", (2, 2, 8, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "MaxPool-ceil": ("MaxPool", (1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "MaxPool-same-upper": ("MaxPool", (1, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "MaxPool-same-lower": ("MaxPool", (1, 3, 7, 9), {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    "MaxPool-dilated": ("MaxPool", (1, 2, 11, 11), {"kernel_shape": [3, 3], "dilations": [2, 2]}),
    "MaxPool-2x3-asym": ("MaxPool", (1, 4, 9, 13), {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 2]}),
    "AveragePool-3x3-s2-p1-exclude": ("AveragePool", (1, 3, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "AveragePool-3x3-s2-p1-include": ("AveragePool", (1, 3, 13, 13), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
    "AveragePool-2x2": ("AveragePool", (2, 5, 6, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "AveragePool-ceil": ("AveragePool", (1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "AveragePool-ceil-include": ("AveragePool", (1, 2, 11, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1}),
    "AveragePool-same-upper": ("AveragePool", (1, 3, 7, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "AveragePool-1x7": ("AveragePool", (1, 3, 5, 13), {"kernel_shape": [1, 7]}),
    "MaxPool-3d-pads-strides": ("MaxPool", (1, 2, 7, 8, 6), {"kernel_shape": [3, 2, 3], "strides": [2, 2, 1],
                                                             "pads": [1, 0, 1, 1, 1, 0]}),
    "MaxPool-3d-ceil-dilated": ("MaxPool", (2, 2, 9, 7, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 2, 2],
                                                             "dilations": [2, 1, 1], "ceil_mode": 1}),
    "AveragePool-3d-exclude-pads": ("AveragePool", (1, 3, 7, 6, 6), {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2],
                                                                    "pads": [1, 1, 1, 2, 1, 1]}),
    "AveragePool-3d-include-pads": ("AveragePool", (1, 2, 6, 5, 7), {"kernel_shape": [3, 2, 3], "strides": [2, 1, 2],
                                                                    "pads": [1, 0, 1, 1, 1, 1], "count_include_pad": 1}),
    "AveragePool-3d-ceil-include": ("AveragePool", (1, 2, 8, 7, 7), {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2],
                                                                    "pads": [1, 1, 1, 0, 0, 0], "ceil_mode": 1,
                                                                    "count_include_pad": 1}),
    "AveragePool-3d-ceil-exclude-dilated": ("AveragePool", (1, 2, 10, 6, 6), {"kernel_shape": [2, 2, 2],
                                                                             "strides": [3, 2, 2], "dilations": [2, 1, 1],
                                                                             "ceil_mode": 1}),
}
for name, (op, shape, attrs) in POOLS.items():
    # AveragePool takes dilations from opset 19.
    opset = 19 if op == "AveragePool" and "dilations" in attrs else DEFAULT_OPSET
    case(name, op, (lambda shape: x_input(lambda rng: normal(rng, shape)))(shape), attrs, opset=opset)
for op in ("GlobalAveragePool", "GlobalMaxPool"):
    for shape in ((2, 5, 7, 3), (1, 13, 1, 1), (1, 3, 13, 7)):
        case(f"{op}-{'x'.join(map(str, shape))}", op, (lambda shape: x_input(lambda rng: normal(rng, shape)))(shape))

REDUCE_AXES = {"axis1": [1], "axes0-2": [0, 2], "last": [-1], "all": None}
for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2"):
    for axes_name, axes in REDUCE_AXES.items():
        for keepdims in (0, 1):
            # ReduceSum took axes as an input from opset 13, the others from opset 18.
            case(f"{op}-{axes_name}-keepdims{keepdims}-input-axes", op,
                 (lambda axes: lambda rng: [("x", Feed(normal(rng, (3, 4, 5)))),
                                            ("axes", None if axes is None else c(axes))])(axes),
                 {"keepdims": keepdims}, opset=18)
    case(f"{op}-attribute-axes", op, x_input(lambda rng: normal(rng, (2, 3, 7, 5))),
         {"axes": [2, 3], "keepdims": 1} if op != "ReduceSum" else {"keepdims": 1}, opset=13)
case("ReduceMean-rank4-spatial", "ReduceMean", lambda rng: [("x", Feed(normal(rng, (2, 13, 7, 5)))), ("axes", c([2, 3]))],
     {"keepdims": 1}, opset=18)

RESHAPES = {"2d": [4, 6], "zero-minus1": [0, -1], "flat": [-1], "ones": [2, 1, 12, 1], "minus1-middle": [2, -1, 3]}
for name, shape in RESHAPES.items():
    case(f"Reshape-{name}", "Reshape", (lambda shape: lambda rng: [("x", Feed(normal(rng, (2, 3, 4)))), ("shape", c(shape))])(shape))
for axis in (0, 1, 2, -1):
    case(f"Flatten-axis{axis}", "Flatten", x_input(lambda rng: normal(rng, (2, 3, 4, 5))), {"axis": axis})
for perm in (None, [0, 2, 3, 1], [1, 0, 2, 3], [3, 1, 2, 0]):
    case(f"Transpose-{'default' if perm is None else ''.join(map(str, perm))}", "Transpose",
         x_input(lambda rng: normal(rng, (2, 3, 5, 7))), {} if perm is None else {"perm": perm})
case("Transpose-rank2", "Transpose", x_input(lambda rng: normal(rng, (13, 7))), {"perm": [1, 0]})
for name, axes in (("axis1", [1]), ("negative", [-1]), ("all", None)):
    case(f"Squeeze-{name}", "Squeeze", (lambda axes: lambda rng: [("x", Feed(normal(rng, (3, 1, 5, 1)))),
                                                                  ("axes", None if axes is None else c(axes))])(axes))
for name, axes in (("axis0", [0]), ("two", [1, 3]), ("negative", [-1])):
    case(f"Unsqueeze-{name}", "Unsqueeze", (lambda axes: lambda rng: [("x", Feed(normal(rng, (3, 5)))), ("axes", c(axes))])(axes))

for axis in (0, 1, -1):
    case(f"Concat-axis{axis}", "Concat", (lambda axis: lambda rng: [
        (f"x{i}", Feed(normal(rng, tuple(k if d != axis % 3 else k + i for d, k in enumerate((2, 3, 4)))))) for i in range(3)])(axis),
        {"axis": axis})
case("Concat-with-constant", "Concat", lambda rng: [("x", Feed(normal(rng, (1, 3, 5)))), ("k", Feed(normal(rng, (1, 2, 5)), True))], {"axis": 1})
case("Concat-int64", "Concat", lambda rng: [("a", Feed(ints(rng, (2, 3), 0, 9))), ("b", Feed(ints(rng, (2, 1), 0, 9)))], {"axis": 1})

case("Split-sizes-opset13", "Split", lambda rng: [("x", Feed(normal(rng, (7, 4)))), ("split", c([2, 3, 2]))],
     {"axis": 0}, num_outputs=3, opset=13)
case("Split-equal-opset13", "Split", x_input(lambda rng: normal(rng, (2, 6, 5))), {"axis": 1}, num_outputs=3, opset=13)
case("Split-num-outputs-uneven", "Split", x_input(lambda rng: normal(rng, (3, 7))), {"axis": -1, "num_outputs": 3},
     num_outputs=3, opset=18)
case("Split-sizes-opset18", "Split", lambda rng: [("x", Feed(normal(rng, (2, 13)))), ("split", c([1, 12]))],
     {"axis": 1}, num_outputs=2, opset=18)

SLICES = {
    "basic": ([1, 0], [5, 13], [0, 1], [1, 1]),
    "negative-starts": ([-3], [100], [1], None),
    "reverse": ([-1], [-100], [0], [-1]),
    "negative-step2": ([12, 5], [0, -100], [1, 0], [-2, -3]),
    "stride3": ([0, 1], [7, 13], [0, 1], [2, 3]),
    "out-of-bounds": ([-100], [100], [1], None),
    "default-axes": ([1, 2], [5, 10], None, None),
    "empty": ([4], [2], [0], [1]),
}
for name, (starts, ends, axes, steps) in SLICES.items():
    case(f"Slice-{name}", "Slice", (lambda starts, ends, axes, steps: lambda rng: [
        ("x", Feed(normal(rng, (7, 13)))), ("starts", c(starts)), ("ends", c(ends)),
        ("axes", None if axes is None else c(axes)), ("steps", None if steps is None else c(steps))])(starts, ends, axes, steps))
case("Slice-rank3-int32-bounds", "Slice", lambda rng: [("x", Feed(normal(rng, (3, 5, 7)))), ("starts", c([1, -2], np.int32)),
                                                      ("ends", c([3, 0], np.int32)), ("axes", c([2, 1], np.int32)),
                                                      ("steps", c([2, -1], np.int32))])

GATHERS = {
    "axis0": ((5, 4), 0, (2, 3), np.int64),
    "axis1": ((3, 7, 2), 1, (4,), np.int64),
    "scalar-index": ((3, 7), 1, (), np.int64),
    "int32-indices": ((13, 3), 0, (2, 2), np.int32),
    "last-axis": ((2, 3, 5), 2, (3, 1), np.int64),
}
for name, (shape, axis, ishape, idtype) in GATHERS.items():
    case(f"Gather-{name}", "Gather", (lambda shape, axis, ishape, idtype: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("indices", Feed(ints(rng, ishape, -shape[axis], shape[axis], idtype)))])(
            shape, axis, ishape, idtype), {"axis": axis})
case("Gather-embedding-table", "Gather", lambda rng: [("table", Feed(normal(rng, (11, 6)), True)),
                                                      ("ids", Feed(ints(rng, (2, 5), 0, 11)))], {"axis": 0})
for axis in (0, 1, -1):
    case(f"GatherElements-axis{axis}", "GatherElements", (lambda axis: lambda rng: [
        ("x", Feed(normal(rng, (4, 5)))), ("indices", Feed(ints(rng, (3, 5) if axis == 0 else (4, 3), -4 if axis == 0 else -5, 4 if axis == 0 else 5)))])(axis),
        {"axis": axis})

PADS = {
    "constant": ("constant", [0, 0, 1, 2, 0, 0, 2, 1], 1.5),
    "constant-default-value": ("constant", [1, 0, 0, 0, 0, 1, 0, 3], None),
    "reflect": ("reflect", [0, 0, 2, 1, 0, 0, 1, 3], None),
    "edge": ("edge", [0, 1, 2, 3, 0, 1, 3, 2], None),
    "negative-crop": ("constant", [0, 0, -1, 2, 0, 0, 1, -2], 0.0),
}
for name, (mode, pads, value) in PADS.items():
    case(f"Pad-{name}", "Pad", (lambda pads, value: lambda rng: [
        ("x", Feed(normal(rng, (1, 3, 5, 7)))), ("pads", c(pads)),
        ("value", None if value is None else Feed(np.float32(value), True))])(pads, value), {"mode": mode})
case("Pad-axes-opset18", "Pad", lambda rng: [("x", Feed(normal(rng, (2, 5, 7)))), ("pads", c([1, 2, 3, 0])),
                                             ("value", Feed(np.float32(-1.0), True)), ("axes", c([1, 2]))], opset=18)

RESIZES = {
    "nearest-2x-asymmetric-floor": ([1, 1, 2, 2], None, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
    "nearest-2x-half-pixel": ([1, 1, 2, 2], None, {"mode": "nearest"}),
    "nearest-1.5x-round-prefer-ceil": ([1, 1, 1.5, 1.5], None, {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}),
    "nearest-downsample": ([1, 1, 0.5, 0.6], None, {"mode": "nearest"}),
    "nearest-sizes-align-corners-ceil": (None, [1, 3, 9, 11], {"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "ceil"}),
    "linear-2x-half-pixel": ([1, 1, 2, 2], None, {"mode": "linear"}),
    "linear-align-corners": ([1, 1, 2, 3], None, {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    "linear-asymmetric": ([1, 1, 2, 2], None, {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}),
    "linear-pytorch-half-pixel": (None, [1, 3, 1, 13], {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    "linear-downsample": ([1, 1, 0.6, 0.5], None, {"mode": "linear"}),
    "cubic-2x-half-pixel": ([1, 1, 2, 2], None, {"mode": "cubic"}),
    "cubic-align-corners": ([1, 1, 1.6, 2], None, {"mode": "cubic", "coordinate_transformation_mode": "align_corners"}),
    "cubic-asymmetric": ([1, 1, 2, 3], None, {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}),
    "cubic-pytorch-half-pixel-sizes": (None, [1, 3, 1, 13], {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    "cubic-downsample": ([1, 1, 0.6, 0.5], None, {"mode": "cubic"}),
    "cubic-a-0.5-exclude-outside": ([1, 1, 2.5, 1.5], None, {"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}),
    "cubic-exclude-outside-downsample": ([1, 1, 0.8, 0.4], None, {"mode": "cubic", "exclude_outside": 1}),
}
for name, (scales, sizes, attrs) in RESIZES.items():
    case(f"Resize-{name}", "Resize", (lambda scales, sizes: lambda rng: [
        ("x", Feed(normal(rng, (1, 3, 5, 7)))), ("roi", None),
        ("scales", None if scales is None else Feed(np.asarray(scales, np.float32), True)),
        ("sizes", None if sizes is None else c(sizes))])(scales, sizes), attrs, opset=13)
# onnxruntime's cubic resizes the two innermost dims only; other layouts are checked against the
# reference in tests/ops/test_resize_cubic.py.
case("Resize-cubic-2d-innermost-axis", "Resize", lambda rng: [
    ("x", Feed(normal(rng, (6, 9)))), ("roi", None), ("scales", Feed(np.array([1, 1.8], np.float32), True))],
    {"mode": "cubic"}, opset=13)
case("Resize-cubic-2d-both-axes", "Resize", lambda rng: [
    ("x", Feed(normal(rng, (5, 8)))), ("roi", None), ("scales", Feed(np.array([2.2, 0.75], np.float32), True))],
    {"mode": "cubic", "cubic_coeff_a": -0.6}, opset=13)

case("Expand-rank-up", "Expand", lambda rng: [("x", Feed(normal(rng, (3, 1)))), ("shape", c([2, 3, 4]))])
case("Expand-scalar-like", "Expand", lambda rng: [("x", Feed(normal(rng, (1,)))), ("shape", c([5, 1]))])
case("Expand-keeps-larger-dims", "Expand", lambda rng: [("x", Feed(normal(rng, (2, 1, 6)))), ("shape", c([3, 1]))])

case("LRN", "LRN", x_input(lambda rng: normal(rng, (1, 7, 5, 5))), {"size": 3, "alpha": 1e-3, "beta": 0.75, "bias": 1.5})


case("Shape-drives-Expand", "Identity", lambda rng: [("x", Feed(normal(rng, (1, 5))))], num_outputs=1,
     extra_nodes=lambda outs: ([helper.make_node("Shape", ["x"], ["x_shape"]),
                                helper.make_node("Concat", ["three", "x_shape"], ["target"], axis=0),
                                helper.make_node("Expand", [outs[0], "target"], ["out"])], ["out"]))
case("ConstantOfShape-plus-Range", "Identity", lambda rng: [("x", Feed(normal(rng, (2, 7))))],
     extra_nodes=lambda outs: ([helper.make_node("Shape", ["x"], ["x_shape"]),
                                helper.make_node("ConstantOfShape", ["x_shape"], ["fill"],
                                                 value=numpy_helper.from_array(np.array([0.25], np.float32))),
                                helper.make_node("Range", ["r_start", "r_limit", "r_delta"], ["ramp"]),
                                helper.make_node("Add", [outs[0], "fill"], ["shifted"]),
                                helper.make_node("Add", ["shifted", "ramp"], ["out"])], ["out"]))
case("Constant-node", "Identity", lambda rng: [("x", Feed(normal(rng, (3, 4))))],
     extra_nodes=lambda outs: ([helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(
                                    np.linspace(-1, 1, 4).astype(np.float32))),
                                helper.make_node("Mul", [outs[0], "k"], ["out"])], ["out"]))
EXTRA_CONSTANTS = {
    "window_size": np.array(10, np.int64),
    "three": np.array([3], np.int64),
    "r_start": np.float32(-1.0), "r_limit": np.float32(2.5), "r_delta": np.float32(0.5),
}


def rnn_case(op, direction, seq, batch, input_size, hidden, with_bias=True, with_initial=False, **attrs):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1

    def make(rng):
        bound = hidden ** -0.5
        feeds = [("X", Feed(normal(rng, (seq, batch, input_size)))),
                 ("W", Feed(uniform(rng, (dirs, gates * hidden, input_size), -bound, bound), True)),
                 ("R", Feed(uniform(rng, (dirs, gates * hidden, hidden), -bound, bound), True)),
                 ("B", Feed(uniform(rng, (dirs, 2 * gates * hidden), -bound, bound), True) if with_bias else None),
                 ("sequence_lens", None)]
        if with_initial:
            feeds.append(("initial_h", Feed(normal(rng, (dirs, batch, hidden), 0.5))))
            if op == "LSTM":
                feeds.append(("initial_c", Feed(normal(rng, (dirs, batch, hidden), 0.5))))
        return feeds

    flags = ("-bias" if with_bias else "") + ("-initial" if with_initial else "") + "".join(
        f"-{k}{v}" for k, v in attrs.items())
    case(f"{op}-{direction}-s{seq}b{batch}i{input_size}h{hidden}{flags}", op, make,
         {"hidden_size": hidden, "direction": direction, **attrs}, num_outputs=3 if op == "LSTM" else 2, opset=14)


for op in ("LSTM", "GRU"):
    for direction in ("forward", "reverse", "bidirectional"):
        rnn_case(op, direction, 5, 3, 4, 6)
    rnn_case(op, "forward", 7, 1, 13, 5, with_bias=False)
    rnn_case(op, "bidirectional", 3, 2, 5, 7, with_initial=True)
    rnn_case(op, "forward", 1, 1, 1, 1)
rnn_case("LSTM", "forward", 4, 2, 3, 5, clip=0.5)
rnn_case("GRU", "forward", 4, 2, 3, 5, linear_before_reset=1)
rnn_case("GRU", "bidirectional", 6, 2, 3, 4, with_initial=True, linear_before_reset=1)
for direction in ("forward", "reverse", "bidirectional"):
    rnn_case("RNN", direction, 5, 3, 4, 6)
rnn_case("RNN", "bidirectional", 4, 2, 5, 3, with_initial=True, clip=0.7, activations=["Relu", "Sigmoid"])
rnn_case("RNN", "forward", 1, 1, 3, 2, with_bias=False, with_initial=True)


def tied(rng, shape, dtype=np.float32):
    """Values from a small range, so most rows hold ties."""
    return rng.integers(-2, 3, shape).astype(dtype)


TRILUS = {"upper": (1, None), "lower": (0, None), "upper-k2": (1, 2), "lower-k-1": (0, -1),
          "upper-k-beyond": (1, 9), "lower-k-beyond": (0, -9), "upper-k-negative-beyond": (1, -9),
          "lower-k-beyond-cols": (0, 9)}
for name, (upper, k) in TRILUS.items():
    case(f"Trilu-{name}", "Trilu", (lambda k: lambda rng: [("x", Feed(normal(rng, (2, 4, 5)))),
                                                           ("k", None if k is None else c(k))])(k),
         {"upper": upper}, opset=14)
case("Trilu-int64-square", "Trilu", lambda rng: [("x", Feed(ints(rng, (6, 6), -9, 9))), ("k", c(1))], {"upper": 0},
     opset=14)
case("Trilu-rank4-wide", "Trilu", lambda rng: [("x", Feed(normal(rng, (2, 3, 3, 7))))], {}, opset=14)

CUMSUMS = {"axis0": (0, 0, 0), "axis1": (1, 0, 0), "last": (-1, 0, 0), "exclusive": (1, 1, 0),
           "reverse": (-1, 0, 1), "exclusive-reverse": (0, 1, 1), "middle-exclusive-reverse": (1, 1, 1)}
for name, (axis, exclusive, reverse) in CUMSUMS.items():
    case(f"CumSum-{name}", "CumSum", (lambda axis: lambda rng: [("x", Feed(normal(rng, (3, 5, 7)))),
                                                                ("axis", c(axis))])(axis),
         {"exclusive": exclusive, "reverse": reverse})
case("CumSum-wide-inner", "CumSum", lambda rng: [("x", Feed(normal(rng, (4, 300)))), ("axis", c(0, np.int32))])
case("CumSum-int32", "CumSum", lambda rng: [("x", Feed(ints(rng, (4, 6), -50, 50, np.int32))), ("axis", c(1))],
     {"reverse": 1})
case("CumSum-int64-1d", "CumSum", lambda rng: [("x", Feed(ints(rng, (9,), -50, 50))), ("axis", c(0))],
     {"exclusive": 1})

for name, (axis, exclusive, reverse) in CUMSUMS.items():
    case(f"CumProd-{name}", "CumProd", (lambda axis: lambda rng: [("x", Feed(uniform(rng, (3, 5, 7), 0.5, 1.5))),
                                                                  ("axis", c(axis))])(axis),
         {"exclusive": exclusive, "reverse": reverse}, opset=26)
case("CumProd-wide-inner", "CumProd", lambda rng: [("x", Feed(uniform(rng, (4, 300), 0.5, 1.5))), ("axis", c(0, np.int32))],
     opset=26)
case("CumProd-int64-wraps", "CumProd", lambda rng: [("x", Feed(ints(rng, (3, 40), -9, 9))), ("axis", c(1))], opset=26)

for op in ("ArgMax", "ArgMin"):
    for axis in (0, 1, -1):
        case(f"{op}-axis{axis}", op, (lambda: lambda rng: [("x", Feed(normal(rng, (3, 5, 4))))])(), {"axis": axis})
    case(f"{op}-no-keepdims", op, lambda rng: [("x", Feed(normal(rng, (3, 5, 4))))], {"axis": 1, "keepdims": 0})
    case(f"{op}-ties-first", op, lambda rng: [("x", Feed(tied(rng, (4, 9))))], {"axis": 1})
    case(f"{op}-ties-last", op, lambda rng: [("x", Feed(tied(rng, (4, 9))))], {"axis": 1, "select_last_index": 1})
    case(f"{op}-ties-last-axis0", op, lambda rng: [("x", Feed(tied(rng, (7, 3, 2))))],
         {"axis": 0, "keepdims": 0, "select_last_index": 1})
    case(f"{op}-int32", op, lambda rng: [("x", Feed(ints(rng, (3, 8), -5, 5, np.int32)))], {"axis": -1})
    case(f"{op}-int64-1d", op, lambda rng: [("x", Feed(ints(rng, (11,), -5, 5)))], {"keepdims": 0})

TOPKS = {"largest": ((3, 10), 3, -1, 1), "smallest": ((3, 10), 4, 1, 0), "axis0": ((8, 3, 2), 5, 0, 1),
         "k0": ((3, 6), 0, -1, 1), "k-full": ((2, 7), 7, -1, 1), "k-full-smallest": ((2, 7), 7, -1, 0),
         "k1": ((5, 4), 1, 0, 0), "middle-axis": ((2, 9, 3), 4, 1, 1)}
for name, (shape, k, axis, largest) in TOPKS.items():
    case(f"TopK-{name}", "TopK", (lambda shape, k: lambda rng: [("x", Feed(normal(rng, shape))), ("K", c([k]))])(
        shape, k), {"axis": axis, "largest": largest}, num_outputs=2)
for largest in (0, 1):
    case(f"TopK-ties-largest{largest}", "TopK", lambda rng: [("x", Feed(tied(rng, (4, 12)))), ("K", c([5]))],
         {"largest": largest}, num_outputs=2)
case("TopK-int64-ties", "TopK", lambda rng: [("x", Feed(tied(rng, (3, 8), np.int64))), ("K", c([3]))],
     {"largest": 1}, num_outputs=2)
case("TopK-int32-smallest", "TopK", lambda rng: [("x", Feed(ints(rng, (3, 8), -99, 99, np.int32))), ("K", c([4]))],
     {"largest": 0}, num_outputs=2)


INSTANCE_NORMS = {"rank4": ((2, 3, 5, 7), True, 1e-5), "rank3": ((2, 4, 9), True, 1e-3),
                  "unit-affine": ((1, 6, 11), False, 1e-5), "one-pixel": ((2, 3, 1, 1), True, 1e-5)}
for name, (shape, affine, epsilon) in INSTANCE_NORMS.items():
    case(f"InstanceNormalization-{name}", "InstanceNormalization", (lambda shape, affine: lambda rng: [
        ("x", Feed(normal(rng, shape, 2.0) + 1.0)),
        ("scale", Feed(normal(rng, shape[1:2]) if affine else np.ones(shape[1:2], np.float32), True)),
        ("bias", Feed(normal(rng, shape[1:2]) if affine else np.zeros(shape[1:2], np.float32), True))])(shape, affine),
        {"epsilon": epsilon})
case("InstanceNormalization-runtime-affine", "InstanceNormalization", lambda rng: [
    ("x", Feed(normal(rng, (2, 3, 4, 4)))), ("scale", Feed(normal(rng, (3,)))), ("bias", Feed(normal(rng, (3,))))])

GROUP_NORMS = {"groups2-opset21": ((2, 4, 3, 5), 2, 21), "groups1-opset21": ((1, 6, 7), 1, 21),
               "per-channel-groups-opset21": ((2, 6, 2, 3), 6, 21)}
for name, (shape, groups, opset) in GROUP_NORMS.items():
    size = shape[1] if opset >= 21 else groups
    case(f"GroupNormalization-{name}", "GroupNormalization", (lambda shape, size: lambda rng: [
        ("x", Feed(normal(rng, shape, 2.0))), ("scale", Feed(normal(rng, (size,)), True)),
        ("bias", Feed(normal(rng, (size,)), True))])(shape, size), {"num_groups": groups, "epsilon": 1e-4},
        opset=opset, output_like_input=True)


ONE_HOTS = {"last-axis": ((2, 3), 5, -1, np.int64), "axis0": ((4,), 3, 0, np.int64), "middle": ((2, 3), 4, 1, np.int32),
            "float-indices": ((3, 2), 6, -2, np.float32)}
for name, (shape, depth, axis, dtype) in ONE_HOTS.items():
    # Indices from -depth - 1 to depth: negative ones count from the end, the two extremes are out of range.
# (depth is float: the dtype mix onnxruntime implements for each indices dtype.)
    case(f"OneHot-{name}", "OneHot", (lambda shape, depth, dtype: lambda rng: [
        ("indices", Feed(rng.integers(-depth - 1, depth + 1, shape).astype(dtype))), ("depth", c(depth, np.float32)),
        ("values", c([-1.5, 2.0], np.float32))])(shape, depth, dtype), {"axis": axis})
case("OneHot-int-values-runtime", "OneHot", lambda rng: [
    ("indices", Feed(ints(rng, (2, 4), 0, 3))), ("depth", c([3.0], np.float32)), ("values", Feed(np.array([0, 7], np.int32)))])


GATHER_NDS = {"k1": ((5, 4, 3), (2, 1), 0), "k2": ((5, 4, 3), (3, 2), 0), "full-tuples": ((3, 4), (2, 3, 2), 0),
              "batch1": ((2, 5, 3), (2, 4, 1), 1), "batch1-full": ((2, 5, 3), (2, 2), 1),
              "batch2": ((2, 3, 4, 2), (2, 3, 1, 2), 2)}
for name, (shape, ishape, batch_dims) in GATHER_NDS.items():
    def make(rng, shape=shape, ishape=ishape, batch_dims=batch_dims):
        k = ishape[-1]
        dims = np.array(shape[batch_dims:batch_dims + k])
        # Negative entries count from the end of their dim.
        indices = rng.integers(-dims, dims, ishape[:-1] + (k,)).astype(np.int64)
        return [("data", Feed(normal(rng, shape))), ("indices", Feed(indices))]
    case(f"GatherND-{name}", "GatherND", make, {"batch_dims": batch_dims})
case("GatherND-int32-data-const-indices", "GatherND", lambda rng: [
    ("data", Feed(ints(rng, (4, 3), -9, 9, np.int32))), ("indices", c([[3, 2], [0, -1]]))])


# equation -> operand shapes; the second operand is an initializer when the id says "const".
EINSUMS = {
    "batch-matmul": ("bij,bjk->bik", [(3, 2, 5), (3, 5, 4)]),
    "attention-scores": ("bhid,bhjd->bhij", [(2, 3, 5, 4), (2, 3, 6, 4)]),
    "attention-values": ("bhij,bhjd->bhid", [(2, 3, 5, 6), (2, 3, 6, 4)]),
    "matmul": ("ij,jk", [(4, 7), (7, 3)]),
    "matmul-transposed-out": ("ij,jk->ki", [(4, 7), (7, 3)]),
    "ellipsis-matmul": ("...ij,jk->...ik", [(2, 3, 4, 5), (5, 6)]),
    "ellipsis-broadcast": ("...ij,...jk->...ik", [(2, 1, 4, 5), (1, 3, 5, 2)]),
    "transpose": ("ij->ji", [(3, 4)]),
    "permute-4d": ("abcd->dbca", [(2, 3, 4, 5)]),
    "sum-rows": ("ij->i", [(3, 4)]),
    "sum-all": ("ijk->", [(2, 3, 4)]),
    "inner-product": ("i,i", [(7,), (7,)]),
    "outer-product": ("i,j->ij", [(3,), (4,)]),
    "hadamard": ("ij,ij->ij", [(3, 4), (3, 4)]),
    "sum-before-product": ("ijk,jl->il", [(2, 3, 4), (3, 5)]),
    "three-operands": ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    "implicit-output": ("ba,ca", [(3, 4), (5, 4)]),
    "bilinear": ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
}
for name, (equation, shapes) in EINSUMS.items():
    def make(rng, shapes=shapes):
        return [(f"x{k}", Feed(normal(rng, shape))) for k, shape in enumerate(shapes)]
    case(f"Einsum-{name}", "Einsum", make, {"equation": equation}, opset=12)
case("Einsum-const-weight", "Einsum", lambda rng: [
    ("x", Feed(normal(rng, (2, 5, 8)))), ("w", Feed(normal(rng, (8, 3, 4)), True))], {"equation": "bsh,hnd->bsnd"}, opset=12)
case("Einsum-const-weight-transposed", "Einsum", lambda rng: [
    ("x", Feed(normal(rng, (2, 5, 8)))), ("w", Feed(normal(rng, (6, 8)), True))], {"equation": "bsh,dh->bds"}, opset=12)
case("Einsum-int32", "Einsum", lambda rng: [
    ("x", Feed(ints(rng, (2, 3, 4), -5, 5, np.int32))), ("y", Feed(ints(rng, (2, 4, 5), -5, 5, np.int32)))],
    {"equation": "bij,bjk->bki"}, opset=12)


def _distinct_rows(rng, dims, count):
    """count distinct index tuples into dims, some written negative (counting from the end)."""
    flat = rng.choice(int(np.prod(dims)), count, replace=False)
    tuples = np.stack(np.unravel_index(flat, dims), axis=-1).astype(np.int64)
    flip = rng.random(tuples.shape) < 0.3
    return np.where(flip, tuples - np.array(dims), tuples)


# name -> (data shape, index tuples shape without k, k, reduction, distinct tuples)
SCATTER_NDS = {"k1-slices": ((5, 4, 3), (2,), 1, "none", True), "k2": ((5, 4, 3), (3,), 2, "none", True),
               "full-tuples": ((4, 3), (2, 2), 2, "none", True), "add-duplicates": ((4, 3, 2), (6,), 1, "add", False),
               "mul": ((4, 3), (5,), 2, "mul", False), "max": ((3, 4, 2), (2, 3), 2, "max", False),
               "min": ((3, 4, 2), (4,), 1, "min", False)}
for name, (shape, tuple_shape, k, reduction, distinct) in SCATTER_NDS.items():
    def make(rng, shape=shape, tuple_shape=tuple_shape, k=k, distinct=distinct):
        count = int(np.prod(tuple_shape))
        if distinct:
            indices = _distinct_rows(rng, shape[:k], count)
        else:
            dims = np.array(shape[:k])
            indices = rng.integers(-dims, dims, (count, k))
        indices = indices.reshape(tuple_shape + (k,)).astype(np.int64)
        return [("data", Feed(normal(rng, shape))), ("indices", Feed(indices)),
                ("updates", Feed(normal(rng, tuple_shape + shape[k:])))]
    case(f"ScatterND-{name}", "ScatterND", make, {} if reduction == "none" else {"reduction": reduction}, opset=18)
case("ScatterND-int32-const-indices", "ScatterND", lambda rng: [
    ("data", Feed(ints(rng, (4, 3), -9, 9, np.int32))), ("indices", c([[3], [0]])),
    ("updates", Feed(ints(rng, (2, 3), -9, 9, np.int32)))], {"reduction": "add"}, opset=18)

# name -> (data shape, indices shape, axis, reduction)
SCATTER_ELEMENTS = {"axis0": ((4, 3), (2, 3), 0, "none"), "axis1-negative": ((3, 5), (3, 2), -1, "none"),
                    "3d-axis1": ((2, 5, 3), (2, 2, 3), 1, "none"), "add": ((4, 3), (5, 3), 0, "add"),
                    "mul": ((3, 4), (3, 6), 1, "mul"), "max": ((2, 3, 4), (2, 3, 5), 2, "max"),
                    "min": ((5, 2), (7, 1), 0, "min")}
for name, (shape, ishape, axis, reduction) in SCATTER_ELEMENTS.items():
    def make(rng, shape=shape, ishape=ishape, axis=axis, reduction=reduction):
        dim = shape[axis]
        if reduction == "none":
            # Distinct targets along the axis for each line, so no write shadows another.
            moved = list(ishape)
            n = moved.pop(axis % len(shape))
            lines = [rng.permutation(dim)[:n] for _ in range(int(np.prod(moved)))]
            indices = np.moveaxis(np.array(lines).reshape(tuple(moved) + (n,)), -1, axis % len(shape))
            indices = np.where(rng.random(indices.shape) < 0.3, indices - dim, indices)
        else:
            indices = rng.integers(-dim, dim, ishape)
        return [("data", Feed(normal(rng, shape))), ("indices", Feed(indices.astype(np.int64))),
                ("updates", Feed(normal(rng, ishape)))]
    attrs = {"axis": axis} | ({} if reduction == "none" else {"reduction": reduction})
    case(f"ScatterElements-{name}", "ScatterElements", make, attrs, opset=18)
case("Scatter-opset10", "Scatter", lambda rng: [
    ("data", Feed(normal(rng, (3, 4)))), ("indices", c([[1, 0, 2, -1]])), ("updates", Feed(normal(rng, (1, 4))))],
    {"axis": 0}, opset=10)


def _clustered_boxes(rng, batches, count, center_point):
    """Boxes around a few centres, so many overlap; corners given in either order."""
    centres = rng.uniform(0, 10, (batches, 3, 2))
    pick = rng.integers(0, 3, (batches, count))
    xy = np.take_along_axis(centres, pick[..., None], 1) + rng.normal(0, 0.6, (batches, count, 2))
    wh = rng.uniform(1, 4, (batches, count, 2))
    if center_point:
        return np.concatenate([xy, wh], -1).astype(np.float32)
    y1, x1 = xy[..., 1] - wh[..., 1] / 2, xy[..., 0] - wh[..., 0] / 2
    y2, x2 = y1 + wh[..., 1], x1 + wh[..., 0]
    flip = rng.random((batches, count)) < 0.3
    return np.stack([np.where(flip, y2, y1), x1, np.where(flip, y1, y2), x2], -1).astype(np.float32)


# name -> (batches, classes, boxes, max per class, iou threshold, score threshold or None, center_point_box)
NMS_CASES = {"corners": (1, 1, 30, 30, 0.5, None, 0), "center-point": (1, 1, 30, 30, 0.4, None, 1),
             "classes-batches": (2, 3, 25, 5, 0.5, 0.3, 0), "limit-1": (1, 2, 20, 1, 0.7, None, 0),
             "score-threshold-all-out": (1, 1, 10, 5, 0.5, 2.0, 0), "iou-zero": (1, 1, 20, 20, 0.0, 0.1, 1),
             "max-0": (1, 1, 8, 0, 0.5, None, 0), "more-than-boxes": (2, 1, 6, 50, 0.3, 0.5, 0)}
for name, (batches, classes, count, per_class, iou, score, center) in NMS_CASES.items():
    def make(rng, batches=batches, classes=classes, count=count, per_class=per_class, iou=iou, score=score,
             center=center):
        scores = rng.random((batches, classes, count)).astype(np.float32)
        return [("boxes", Feed(_clustered_boxes(rng, batches, count, center))), ("scores", Feed(scores)),
                ("max_output_boxes_per_class", c([per_class])), ("iou_threshold", c([iou], np.float32)),
                ("score_threshold", None if score is None else c([score], np.float32))]
    case(f"NonMaxSuppression-{name}", "NonMaxSuppression", make, {"center_point_box": center} if center else {},
         opset=11)
case("NonMaxSuppression-defaults", "NonMaxSuppression", lambda rng: [
    ("boxes", Feed(_clustered_boxes(rng, 1, 5, False))), ("scores", Feed(rng.random((1, 1, 5)).astype(np.float32)))],
    opset=11)
# IoU exactly at the threshold (1/2: kept) and scores exactly at the score threshold (left out).
case("NonMaxSuppression-boundaries", "NonMaxSuppression", lambda rng: [
    ("boxes", Feed(np.array([[[0, 0, 1, 1], [0, 0, 1, 2], [0, 0, 2, 1], [5, 5, 6, 6], [5, 5, 6, 7]]], np.float32))),
    ("scores", Feed(np.array([[[0.9, 0.8, 0.7, 0.5, 0.6]]], np.float32))),
    ("max_output_boxes_per_class", c([5])), ("iou_threshold", c([0.5], np.float32)),
    ("score_threshold", c([0.5], np.float32))], opset=11)
case("NonMaxSuppression-tied-scores", "NonMaxSuppression", lambda rng: [
    ("boxes", Feed(_clustered_boxes(rng, 1, 12, False))),
    ("scores", Feed(rng.integers(0, 3, (1, 2, 12)).astype(np.float32))),
    ("max_output_boxes_per_class", c([12])), ("iou_threshold", c([0.3], np.float32))], opset=11)


def _rois(rng, count, height, width, scale=1.0):
    """Regions in input coordinates (before spatial_scale), some reaching past the border, some
    under a pixel wide."""
    x1 = rng.uniform(-2, width / scale, count)
    y1 = rng.uniform(-2, height / scale, count)
    w = rng.choice([0.5, 3.0, 7.0, 15.0], count) / scale * rng.uniform(0.5, 1.5, count)
    h = rng.choice([0.5, 3.0, 7.0, 15.0], count) / scale * rng.uniform(0.5, 1.5, count)
    return np.stack([x1, y1, x1 + w, y1 + h], -1).astype(np.float32)


# name -> (x shape, rois, attrs, opset)
ROI_ALIGNS = {"avg-half-pixel": ((2, 3, 10, 12), 6, {"output_height": 3, "output_width": 4}, 16),
              "max-half-pixel-ratio2": ((1, 2, 9, 9), 5, {"mode": "max", "output_height": 2, "output_width": 3,
                                                          "sampling_ratio": 2}, 16),
              "avg-output-half-pixel": ((2, 4, 8, 11), 5, {"coordinate_transformation_mode": "output_half_pixel",
                                                           "output_height": 2, "output_width": 2}, 16),
              "max-output-half-pixel": ((1, 3, 12, 8), 4, {"coordinate_transformation_mode": "output_half_pixel",
                                                           "mode": "max", "output_height": 3, "output_width": 3,
                                                           "sampling_ratio": 3}, 16),
              "spatial-scale": ((2, 5, 16, 16), 6, {"spatial_scale": 0.25, "output_height": 4, "output_width": 2}, 16),
              "opset10-default-output-half-pixel": ((1, 2, 7, 9), 3, {"output_height": 2, "output_width": 3}, 10)}
for name, (shape, count, attrs, opset) in ROI_ALIGNS.items():
    def make(rng, shape=shape, count=count, attrs=attrs):
        return [("X", Feed(normal(rng, shape))),
                ("rois", Feed(_rois(rng, count, shape[2], shape[3], attrs.get("spatial_scale", 1.0)))),
                ("batch_indices", Feed(rng.integers(0, shape[0], count).astype(np.int64)))]
    case(f"RoiAlign-{name}", "RoiAlign", make, attrs, opset=opset)


# Elementwise ops mapped onto IR ops that exist for other importers.
ROUNDING = {"Floor": 2.5, "Ceil": 2.5, "Round": 4.0, "Sign": 2.0}
for op, scale in ROUNDING.items():
    # Round's halves are placed exactly so ties-to-even is what is checked.
    case(f"{op}-halves", op, x_input(lambda rng, scale=scale: np.round(normal(rng, (3, 17), scale) * 2) / 2))
for op in ("Sin", "Cos"):
    case(f"{op}-wide", op, x_input(lambda rng: uniform(rng, (4, 19), -10.0, 10.0)))
case("Softplus-wide", "Softplus", x_input(lambda rng: uniform(rng, (4, 19), -30.0, 30.0)))
for alpha in (None, 0.4):
    case(f"Elu-alpha{alpha}", "Elu", x_input(lambda rng: normal(rng, (3, 11), 2.0)), {} if alpha is None else {"alpha": alpha})
for positive, negative in ((1, 1), (1, 0), (0, 1), (0, 0)):
    case(f"IsInf-{positive}{negative}", "IsInf",
         x_input(lambda rng: np.array([np.inf, -np.inf, np.nan, 0.0, -1.5, 3.0e38], np.float32)),
         {"detect_positive": positive, "detect_negative": negative}, opset=20)
for fmod, dtype in ((0, np.int64), (0, np.int32), (1, np.int32), (1, np.float32)):
    case(f"Mod-fmod{fmod}-{np.dtype(dtype).name}", "Mod", (lambda dt: lambda rng: [
        ("a", Feed((rng.integers(-40, 40, (3, 7)) + (0.25 if dt == np.float32 else 0)).astype(dt))),
        ("b", Feed((rng.choice([-7, -3, 2, 5], (7,))).astype(dt)))])(dtype), {"fmod": fmod})
case("LessOrEqual-broadcast", "LessOrEqual", lambda rng: [
    ("a", Feed(np.round(normal(rng, (3, 5))))), ("b", Feed(np.round(normal(rng, (5,)))))])
case("Xor-broadcast", "Xor", lambda rng: [
    ("a", Feed(rng.integers(0, 2, (2, 3, 4)).astype(bool))), ("b", Feed(rng.integers(0, 2, (3, 1)).astype(bool)))])
case("Sum-three", "Sum", lambda rng: [("a", Feed(normal(rng, (2, 3)))), ("b", Feed(normal(rng, (3,)))),
                                     ("c", Feed(normal(rng, (2, 1))))])
case("Mean-three", "Mean", lambda rng: [("a", Feed(normal(rng, (2, 3)))), ("b", Feed(normal(rng, (3,)))),
                                       ("c", Feed(normal(rng, (2, 1))))])
case("CastLike-to-int32", "CastLike", lambda rng: [
    ("x", Feed(normal(rng, (3, 5), 9.0))), ("like", Feed(np.zeros((1,), np.int32), True))])
for op in ("ReduceL1", "ReduceLogSumExp", "ReduceProd", "ReduceSumSquare"):
    for axes, keepdims in (((1,), 1), ((0, 2), 0)):
        case(f"{op}-{'_'.join(map(str, axes))}-k{keepdims}", op, (lambda axes: lambda rng: [
            ("x", Feed(uniform(rng, (3, 4, 5), 0.5, 1.5))), ("axes", c(axes))])(axes), {"keepdims": keepdims}, opset=18)
case("Tile-2d", "Tile", lambda rng: [("x", Feed(normal(rng, (2, 3, 4)))), ("repeats", c([2, 1, 3]))])
case("DepthToSpace-DCR", "DepthToSpace", x_input(lambda rng: normal(rng, (1, 8, 2, 3))), {"blocksize": 2})
case("DepthToSpace-CRD", "DepthToSpace", x_input(lambda rng: normal(rng, (2, 8, 2, 3))), {"blocksize": 2, "mode": "CRD"})
case("SpaceToDepth-2", "SpaceToDepth", x_input(lambda rng: normal(rng, (2, 3, 4, 6))), {"blocksize": 2})
case("Upsample-nearest", "Upsample", lambda rng: [
    ("x", Feed(normal(rng, (1, 2, 3, 4)))), ("scales", c([1.0, 1.0, 2.0, 3.0], np.float32))], {"mode": "nearest"}, opset=9)
# Losses lowered to LogSoftmax / GatherElements / Gather / reductions; targets and weights at run time.
for op in ("NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"):
    for reduction in ("none", "sum", "mean"):
        for weighted, ignore_index, shape in ((False, None, (5, 4)), (True, None, (3, 4, 2)), (True, 2, (3, 4, 2)),
                                              (False, -1, (6, 3))):
            def loss_inputs(rng, shape=shape, weighted=weighted, ignore_index=ignore_index, op=op):
                target = rng.integers(0, shape[1], (shape[0],) + shape[2:])
                if ignore_index is not None:
                    target.reshape(-1)[::3] = ignore_index
                x = normal(rng, shape) if op == "SoftmaxCrossEntropyLoss" else np.log(
                    np.abs(normal(rng, shape)) + 0.1).astype(np.float32)
                return [("x", Feed(x)), ("target", Feed(target.astype(np.int64))),
                        ("weight", Feed(uniform(rng, (shape[1],), 0.2, 2.0)) if weighted else None)]
            attrs = {"reduction": reduction} | ({} if ignore_index is None else {"ignore_index": ignore_index})
            case(f"{op}-{reduction}-w{int(weighted)}-ii{ignore_index}-{len(shape)}d", op, loss_inputs, attrs,
                 num_outputs=2 if op == "SoftmaxCrossEntropyLoss" else 1, opset=13)

# Activations and functions lowered onto existing IR ops.
LOWERED_UNARY = {
    "Celu": ({"alpha": 0.7}, lambda rng: normal(rng, (3, 13), 2.0)),
    "Selu": ({}, lambda rng: normal(rng, (3, 13), 2.0)),
    "ThresholdedRelu": ({"alpha": 0.4}, lambda rng: normal(rng, (3, 13))),
    "Softsign": ({}, lambda rng: normal(rng, (3, 13), 3.0)),
    "Shrink": ({"bias": 0.2, "lambd": 0.6}, lambda rng: normal(rng, (3, 13))),
    "Mish": ({}, lambda rng: normal(rng, (3, 13), 3.0)),
    "Swish": ({"alpha": 1.5}, lambda rng: normal(rng, (3, 13), 3.0)),
    "Tan": ({}, lambda rng: uniform(rng, (3, 13), -1.4, 1.4)),
    "Sinh": ({}, lambda rng: uniform(rng, (3, 13), -4.0, 4.0)),
    "Cosh": ({}, lambda rng: uniform(rng, (3, 13), -4.0, 4.0)),
    "Asinh": ({}, lambda rng: uniform(rng, (3, 13), 0.0, 5.0)),
    "Acosh": ({}, lambda rng: uniform(rng, (3, 13), 1.0, 5.0)),
    "Atanh": ({}, lambda rng: uniform(rng, (3, 13), -0.9, 0.9)),
}
for op, (attrs, make) in LOWERED_UNARY.items():
    case(f"{op}-lowered", op, x_input(make), attrs, opset={"Celu": 12, "Mish": 18, "Swish": 24}.get(op, DEFAULT_OPSET))
for k in (0, 1, -2):
    case(f"EyeLike-k{k}", "Abs", x_input(lambda rng: normal(rng, (3, 4))), extra_nodes=lambda outs, k=k: (
        [helper.make_node("EyeLike", ["x"], ["eye"], k=k), helper.make_node("Mul", [outs[0], "eye"], ["y"])], ["y"]))
case("ReduceLogSum-1", "ReduceLogSum", lambda rng: [("x", Feed(uniform(rng, (3, 4, 5), 0.1, 2.0))), ("axes", c([1]))],
     {"keepdims": 0}, opset=18)
for axis in (-1, 1):
    case(f"RMSNormalization-axis{axis}", "RMSNormalization", (lambda axis: lambda rng: [
        ("x", Feed(normal(rng, (2, 3, 8), 2.0))), ("scale", Feed(normal(rng, (8,) if axis == -1 else (3, 8))))])(axis),
        {"axis": axis, "epsilon": 1e-3}, opset=23)
# Attention (opset 23): grouped-query heads with a causal float mask over 300 keys (two key
# blocks of the fused kernel); 3-D inputs with a bool mask and the key/value cache.
case("Attention-gqa-causal-mask", "Attention", lambda rng: [
    ("q", Feed(normal(rng, (2, 4, 20, 16)))), ("k", Feed(normal(rng, (2, 2, 300, 16)))),
    ("v", Feed(normal(rng, (2, 2, 300, 8)))), ("mask", Feed(normal(rng, (20, 300))))],
    {"is_causal": 1, "scale": 0.3}, opset=23)
# Scores spread far past exp's normal range (differences of hundreds, GPT-2's finfo.min mask
# entries): the terms below FLT_MIN are dropped, not carried as denormals.
case("Attention-wide-scores", "Attention", lambda rng: [
    ("q", Feed(normal(rng, (1, 2, 33, 16), 6.0))), ("k", Feed(normal(rng, (1, 2, 300, 16), 6.0))),
    ("v", Feed(normal(rng, (1, 2, 300, 8)))),
    ("mask", Feed(np.where(rng.random((33, 300)) < 0.3, np.finfo(np.float32).min, normal(rng, (33, 300), 40.0))
                  .astype(np.float32)))],
    {}, opset=23)
case("Attention-3d-cache-bool", "Attention", lambda rng: [
    ("q", Feed(normal(rng, (1, 5, 12)))), ("k", Feed(normal(rng, (1, 5, 12)))), ("v", Feed(normal(rng, (1, 5, 12)))),
    ("mask", Feed(rng.random((5, 9)) < 0.8)), ("past_key", Feed(normal(rng, (1, 3, 4, 4)))),
    ("past_value", Feed(normal(rng, (1, 3, 4, 4))))],
    {"q_num_heads": 3, "kv_num_heads": 3, "softcap": 2.0}, num_outputs=3, opset=23)
# A cache with more new keys than queries: the causal mask ends at query i + the cache's length,
# not where the keys end (the fused op's causal modes), so the attention is written out as ops.
case("Attention-cache-causal-more-keys", "Attention", lambda rng: [
    ("q", Feed(normal(rng, (2, 2, 3, 8)))), ("k", Feed(normal(rng, (2, 2, 5, 8)))),
    ("v", Feed(normal(rng, (2, 2, 5, 4)))),
    ("mask", None), ("past_key", Feed(normal(rng, (2, 2, 4, 8)))), ("past_value", Feed(normal(rng, (2, 2, 4, 4))))],
    {"is_causal": 1}, num_outputs=3, opset=23, oracle="onnx")
# qk_matmul_output (output 3) at each stage, with grouped-query heads: the product, after softcap,
# with a bool mask dropping every key of one query row, after softmax (that row zero).
for mode in range(4):
    case(f"Attention-qk-output-mode{mode}", "Attention", (lambda mode: lambda rng: [
        ("q", Feed(normal(rng, (2, 4, 3, 8)))), ("k", Feed(normal(rng, (2, 2, 6, 8)))),
        ("v", Feed(normal(rng, (2, 2, 6, 4)))),
        ("mask", Feed(np.array([[True, False, True, True, False, True], [False] * 6, [True] * 6])))])(mode),
        {"qk_matmul_output_mode": mode, **({"softcap": 1.5} if mode else {}), "scale": 0.7},
        num_outputs=4, unread_outputs=(1, 2), opset=23, oracle="onnx")
case("Attention-3d-qk-output-cache-causal", "Attention", lambda rng: [
    ("q", Feed(normal(rng, (1, 4, 16)))), ("k", Feed(normal(rng, (1, 4, 8)))), ("v", Feed(normal(rng, (1, 4, 8)))),
    ("mask", Feed(normal(rng, (4, 7)))), ("past_key", Feed(normal(rng, (1, 2, 3, 4)))),
    ("past_value", Feed(normal(rng, (1, 2, 3, 4))))],
    {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1, "qk_matmul_output_mode": 2},
    num_outputs=4, opset=23, oracle="onnx")
for interleaved in (0, 1):
    case(f"RotaryEmbedding-interleaved{interleaved}", "RotaryEmbedding", (lambda interleaved: lambda rng: [
        ("x", Feed(normal(rng, (2, 3, 5, 8)))), ("cos", Feed(normal(rng, (7, 2)), const=True)),
        ("sin", Feed(normal(rng, (7, 2)), const=True)), ("positions", Feed(ints(rng, (2, 5), 0, 7), const=True))])(interleaved),
        {"interleaved": interleaved, "rotary_embedding_dim": 4}, opset=23)

case("Size-folds", "Abs", x_input(lambda rng: normal(rng, (2, 3, 4))), extra_nodes=lambda outs: (
    [helper.make_node("Size", ["x"], ["size"]), helper.make_node("Cast", ["size"], ["size_f"], to=onnx.TensorProto.FLOAT),
     helper.make_node("Mul", [outs[0], "size_f"], ["y"])], ["y"]))


# Bitwise ops: unsigned types compute in a wider signed one inside the graph (boundary casts).
for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
    bits = 8 * np.dtype(dtype).itemsize
    for direction in ("LEFT", "RIGHT"):
        case(f"BitShift-{direction.lower()}-{np.dtype(dtype).name}", "BitShift", (lambda dtype, bits: lambda rng: [
            ("x", Feed(ints(rng, (3, 7), 0, min(2 ** bits, 2 ** 62), dtype))),
            ("y", Feed(ints(rng, (7,), 0, bits, dtype)))])(dtype, bits), {"direction": direction})
for op in ("BitwiseAnd", "BitwiseOr", "BitwiseXor"):
    for dtype, (low, high) in ((np.int32, (-2 ** 31, 2 ** 31)), (np.int64, (-2 ** 62, 2 ** 62)), (np.uint8, (0, 256)),
                               (np.uint32, (0, 2 ** 32))):
        case(f"{op}-{np.dtype(dtype).name}", op, (lambda dtype, low, high: lambda rng: [
            ("x", Feed(ints(rng, (2, 3, 5), low, high, dtype))), ("y", Feed(ints(rng, (3, 1), low, high, dtype)))])(
            dtype, low, high), opset=18)
for dtype, (low, high) in ((np.int32, (-2 ** 31, 2 ** 31)), (np.uint16, (0, 2 ** 16)), (np.int8, (-128, 128))):
    case(f"BitwiseNot-{np.dtype(dtype).name}", "BitwiseNot", (lambda dtype, low, high: lambda rng: [
        ("x", Feed(ints(rng, (3, 8), low, high, dtype)))])(dtype, low, high), opset=18)


# Lowered onto pooling, reductions and ArgMax.
LP_POOLS = {"2d-p2": ((2, 3, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
            "1d-p3": ((2, 4, 11), {"kernel_shape": [4], "p": 3, "strides": [2]}),
            "2d-p1-dilated": ((1, 2, 10, 10), {"kernel_shape": [2, 3], "p": 1, "dilations": [2, 2]}),
            "2d-same-upper": ((1, 3, 7, 6), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
            "3d-p2": ((1, 2, 5, 6, 4), {"kernel_shape": [2, 3, 2], "pads": [1, 0, 0, 0, 1, 1]})}
for name, (shape, attrs) in LP_POOLS.items():
    case(f"LpPool-{name}", "LpPool", (lambda shape: lambda rng: [("x", Feed(normal(rng, shape)))])(shape), attrs, opset=18)
for p in (1, 2):
    for axis in (0, -1):
        case(f"LpNormalization-p{p}-axis{axis}", "LpNormalization", lambda rng: [
            ("x", Feed(np.concatenate([normal(rng, (3, 5)), np.zeros((1, 5), np.float32)])))], {"p": p, "axis": axis})
for axis, opset in ((-1, 13), (1, 13), (0, 13)):
    case(f"Hardmax-axis{axis}-opset{opset}", "Hardmax", lambda rng: [("x", Feed(tied(rng, (3, 4, 5)).astype(np.float32)))],
         {"axis": axis}, opset=opset)
for axes in ([0, 2, 3], [1], [2, 3]):
    case(f"MeanVarianceNormalization-{'-'.join(map(str, axes))}", "MeanVarianceNormalization",
         lambda rng: [("x", Feed(normal(rng, (2, 3, 4, 5), 2.0) + 1.0))], {"axes": axes})


# Lowered onto Gather, GatherElements, Slice and Pad with indices known at import.
COMPRESSES = {"axis0": (0, [1, 0, 1, 1]), "axis-1-short": (-1, [0, 1, 1]), "flat": (None, [1, 0, 0, 1, 1, 0, 1])}
for name, (axis, condition) in COMPRESSES.items():
    case(f"Compress-{name}", "Compress", (lambda condition: lambda rng: [
        ("x", Feed(normal(rng, (4, 3, 5)))), ("condition", c(condition, np.bool_))])(condition),
        {} if axis is None else {"axis": axis})
REVERSE_SEQUENCES = {"time0": ((5, 3, 2), [5, 1, 3], 0, 1), "batch0": ((3, 6), [0, 6, 4], 1, 0),
                     "rank4": ((2, 4, 3, 2), [2, 4], 1, 0)}
for name, (shape, lens, time_axis, batch_axis) in REVERSE_SEQUENCES.items():
    case(f"ReverseSequence-{name}", "ReverseSequence", (lambda shape, lens: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("sequence_lens", c(lens))])(shape, lens),
        {"time_axis": time_axis, "batch_axis": batch_axis})
CENTER_CROP_PADS = {"crop-pad": ((5, 6, 3), [3, 9, 3], None), "odd-pad": ((4, 4), [7, 2], None),
                    "axes": ((2, 5, 7), [4, 2], [-2, 2])}
for name, (shape, target, axes) in CENTER_CROP_PADS.items():
    case(f"CenterCropPad-{name}", "CenterCropPad", (lambda shape, target: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("shape", c(target))])(shape, target), {} if axes is None else {"axes": axes},
        opset=18)
for op in ("HannWindow", "HammingWindow", "BlackmanWindow"):
    for periodic in (0, 1):
        case(f"{op}-periodic{periodic}", "Abs", x_input(lambda rng: normal(rng, (3, 10))), extra_nodes=lambda outs, op=op,
             periodic=periodic: ([helper.make_node(op, ["window_size"], ["window"], periodic=periodic),
                                  helper.make_node("Mul", [outs[0], "window"], ["y"])], ["y"]))


# DFT and STFT lowered onto FullyConnected with constant transform matrices (opset 17 takes axis as an
# attribute, 20 as an input); checked against the onnx package's evaluator (numpy's FFT).
DFTS = {"17-real-axis1": (17, (2, 12, 3, 1), {"axis": 1}, None),
        "17-complex-truncated": (17, (2, 3, 9, 2), {"axis": 2}, 7),
        "17-rfft-padded": (17, (2, 10, 1), {"axis": 1, "onesided": 1}, 16),
        "20-inverse-complex": (20, (3, 8, 2), {"inverse": 1}, None),
        "20-rfft-axis0": (20, (6, 4, 1), {"onesided": 1, "axis": 0}, None),
        "20-irfft-odd": (20, (2, 5, 3, 2), {"inverse": 1, "onesided": 1, "axis": 1}, 9),
        "20-irfft-default": (20, (4, 6, 2), {"inverse": 1, "onesided": 1}, None),
        # Long enough for two passes of short matrices (32 x 32, 30 x 40, 32 x 32), and a prime length.
        "17-complex-two-pass": (17, (2, 1024, 2), {"axis": 1}, None),
        "20-inverse-two-pass-padded": (20, (3, 900, 2), {"inverse": 1, "axis": 1}, 1200),
        "17-rfft-two-pass-truncated": (17, (2, 1100, 1), {"axis": 1, "onesided": 1}, 1024),
        "17-prime-one-matrix": (17, (1, 1021, 2), {"axis": 1}, None)}
for name, (opset, shape, attrs, length) in DFTS.items():
    node_attrs = {k: v for k, v in attrs.items() if opset == 17 or k != "axis"}
    case(f"DFT-{name}", "DFT", (lambda opset, shape, attrs, length: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("dft_length", None if length is None else c(length)),
        ("axis", c(attrs["axis"]) if opset >= 20 and "axis" in attrs else None)])(opset, shape, attrs, length),
        node_attrs, opset=opset, oracle="onnx")
case("STFT-hann-window", "STFT", lambda rng: [
    ("signal", Feed(normal(rng, (2, 64, 1)))), ("frame_step", c(8)),
    ("window", c(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(16) / 16), np.float32))], opset=17, oracle="onnx")
case("STFT-complex-two-sided", "STFT", lambda rng: [
    ("signal", Feed(normal(rng, (1, 30, 2)))), ("frame_step", c(5)), ("window", None), ("frame_length", c(10))],
    {"onesided": 0}, opset=17, oracle="onnx")
case("STFT-two-pass-hann-1024", "STFT", lambda rng: [
    ("signal", Feed(normal(rng, (1, 3000, 1)))), ("frame_step", c(256)),
    ("window", c(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024), np.float32))], opset=17, oracle="onnx")
case("STFT-two-pass-complex-run-time-window", "STFT", lambda rng: [
    ("signal", Feed(normal(rng, (2, 1500, 2)))), ("frame_step", c(300)), ("window", Feed(uniform(rng, (600,), 0.0, 1.0)))],
    {"onesided": 0}, opset=17, oracle="onnx")
case("STFT-window-at-run-time", "STFT", lambda rng: [
    ("signal", Feed(normal(rng, (2, 40, 1)))), ("frame_step", c(6)), ("window", Feed(uniform(rng, (12,), 0.0, 1.0)))],
    opset=17, oracle="onnx")

# New ops of onnx 1.23 lowered onto existing ones; SwiGLU against the onnx package's evaluator
# (onnxruntime has no kernel for the Swish of its body), CausalConvWithState against onnxruntime.
for alpha in (1.0, 1.7):
    case(f"SwiGLU-alpha{alpha}", "SwiGLU", lambda rng: [("a", Feed(normal(rng, (3, 5, 8), 2.0))),
                                                        ("b", Feed(normal(rng, (3, 5, 8))))],
         {"alpha": alpha}, opset=28, oracle="onnx")
CAUSAL_CONVS = {"past-bias-silu": ((2, 6, 9), 4, True, True, "silu"), "no-past": ((1, 3, 7), 3, False, False, "none"),
                "decode-step": ((3, 4, 1), 5, True, True, "swish"), "short-input": ((2, 2, 2), 5, False, True, "none")}
for name, (shape, kernel, past, bias, activation) in CAUSAL_CONVS.items():
    case(f"CausalConvWithState-{name}", "CausalConvWithState", (lambda shape, kernel, past, bias: lambda rng: [
        ("x", Feed(normal(rng, shape))), ("weight", Feed(normal(rng, (shape[1], 1, kernel)), const=True)),
        ("bias", Feed(normal(rng, (shape[1],)), const=True) if bias else None),
        ("past_state", Feed(normal(rng, shape[:2] + (kernel - 1,))) if past else None)])(shape, kernel, past, bias),
        {"activation": activation}, num_outputs=2, opset=27)
# LinearAttention (opset 27): every update rule, grouped-query heads, decay per head and per key
# dimension, beta per head and shared, a past state; unrolled over the steps.
LINEAR_ATTENTIONS = {"linear-past": ("linear", 4, 4, False, None, True), "gated-per-key-gqa": ("gated", 4, 2, True, None, False),
                     "delta-shared-beta": ("delta", 2, 2, False, 1, True),
                     "gated-delta-mqa": ("gated_delta", 3, 1, False, "heads", True)}
for name, (rule, q_heads, kv_heads, per_key, beta_width, past) in LINEAR_ATTENTIONS.items():
    def inputs(rng, rule=rule, q_heads=q_heads, kv_heads=kv_heads, per_key=per_key, beta_width=beta_width, past=past):
        b, t, d_k, d_v = 2, 5, 4, 3
        key = normal(rng, (b, t, kv_heads, d_k))
        key = key / np.linalg.norm(key, axis=-1, keepdims=True)
        feeds = [("query", Feed(normal(rng, (b, t, q_heads * d_k)))), ("key", Feed(key.reshape(b, t, -1))),
                 ("value", Feed(normal(rng, (b, t, kv_heads * d_v)))),
                 ("past_state", Feed(normal(rng, (b, kv_heads, d_k, d_v))) if past else None)]
        feeds.append(("decay", Feed(uniform(rng, (b, t, kv_heads * (d_k if per_key else 1)), -0.5, 0.0))
                      if "gated" in rule else None))
        width = kv_heads if beta_width == "heads" else beta_width
        feeds.append(("beta", Feed(uniform(rng, (b, t, width), 0.1, 0.9)) if "delta" in rule else None))
        return feeds
    case(f"LinearAttention-{name}", "LinearAttention", inputs,
         {"update_rule": rule, "q_num_heads": q_heads, "kv_num_heads": kv_heads}, num_outputs=2, opset=27)
case("LinearAttention-scale-one-step", "LinearAttention", lambda rng: [
    ("query", Feed(normal(rng, (1, 1, 8)))), ("key", Feed(normal(rng, (1, 1, 8)))), ("value", Feed(normal(rng, (1, 1, 6)))),
    ("past_state", Feed(normal(rng, (1, 2, 4, 3)))), ("decay", Feed(uniform(rng, (1, 1, 2), -1.0, 0.0))),
    ("beta", Feed(uniform(rng, (1, 1, 2), 0.0, 1.0)))], {"q_num_heads": 2, "kv_num_heads": 2, "scale": 0.7},
    num_outputs=2, opset=27)

# GridSample: grids reach past [-1, 1] so every padding mode matters; opset 16's mode names in 2-D,
# opset 20's in 3-D. Bicubic with border padding and 3-D cubic are checked against ONNX's reference
# in tests/ops/test_grid_sample.py (onnxruntime clamps bicubic's coordinate as PyTorch does, not as
# ONNX's reference does, and has no 3-D cubic).
for mode in ("bilinear", "nearest", "bicubic"):
    for padding in ("zeros", "border", "reflection"):
        for align in (0, 1) if (mode, padding) != ("bicubic", "border") else ():
            case(f"GridSample-{mode}-{padding}-align{align}", "GridSample", lambda rng: [
                ("x", Feed(normal(rng, (2, 3, 5, 6)))), ("grid", Feed(uniform(rng, (2, 4, 7, 2), -1.6, 1.6)))],
                {"mode": mode, "padding_mode": padding, "align_corners": align}, opset=16)
for mode in ("linear", "nearest"):
    for padding, align in (("zeros", 0), ("border", 1), ("reflection", 0), ("reflection", 1)):
        case(f"GridSample-3d-{mode}-{padding}-align{align}", "GridSample", lambda rng: [
            ("x", Feed(normal(rng, (2, 3, 4, 5, 3)))), ("grid", Feed(uniform(rng, (2, 3, 2, 4, 3), -1.4, 1.4)))],
            {"mode": mode, "padding_mode": padding, "align_corners": align}, opset=20)
# One pixel high with align_corners: the extent mirrored is empty (ONNX's reference divides by it).
case("GridSample-one-row-reflection-align1", "GridSample", lambda rng: [
    ("x", Feed(normal(rng, (1, 2, 1, 5)))), ("grid", Feed(uniform(rng, (1, 3, 4, 2), -1.7, 1.7)))],
    {"mode": "bicubic", "padding_mode": "reflection", "align_corners": 1}, opset=16)

# BitCast's special values and integer boundary types: tests/ops/test_bitcast.py.
case("BitCast-float32-int32", "BitCast", x_input(lambda rng: normal(rng, (3, 4), 100.0)), {"to": TensorProto.INT32},
     opset=26)

# Col2Im: (image, block, attrs) with overlapping blocks, padding that drops entries, dilations.
COL2IMS = {"overlap": ((5, 6), (2, 3), {}), "strided-padded": ((7, 5), (3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1]}),
           "dilated": ((6, 7), (2, 2), {"dilations": [2, 3], "pads": [0, 1, 1, 0]})}
for name, (image, block, attrs) in COL2IMS.items():
    blocks = [(image[d] + attrs.get("pads", [0] * 4)[d] + attrs.get("pads", [0] * 4)[2 + d]
               - attrs.get("dilations", [1, 1])[d] * (block[d] - 1) - 1) // attrs.get("strides", [1, 1])[d] + 1
              for d in range(2)]
    case(f"Col2Im-{name}", "Col2Im", (lambda image, block, blocks: lambda rng: [
        ("x", Feed(normal(rng, (2, 3 * block[0] * block[1], blocks[0] * blocks[1])))), ("image_shape", c(image)),
        ("block_shape", c(block))])(image, block, blocks), attrs, opset=18)

# AffineGrid, and a spatial transformer: its grid sampled by GridSample.
for name, (size, align) in {"2d": ((2, 3, 5, 1), 0), "2d-align": ((2, 1, 4, 6), 1), "3d": ((2, 3, 3, 4, 5), 0),
                            "3d-align": ((1, 2, 2, 3, 4), 1)}.items():
    dims = len(size) - 2
    case(f"AffineGrid-{name}", "AffineGrid", (lambda size, dims: lambda rng: [
        ("theta", Feed(normal(rng, (size[0], dims, dims + 1)))), ("size", c(size))])(size, dims),
        {"align_corners": align}, opset=20)
case("AffineGrid-GridSample", "AffineGrid", lambda rng: [
    ("theta", Feed(np.array([[[0.8, -0.3, 0.1], [0.25, 0.9, -0.2]]], np.float32))), ("size", c((1, 3, 6, 5)))], opset=20,
    extra_nodes=lambda outs: ([helper.make_node("GridSample", ["x_image", outs[0]], ["y"], mode="linear")], ["y"]))
EXTRA_CONSTANTS["x_image"] = np.linspace(-1.0, 2.0, 3 * 8 * 9, dtype=np.float32).reshape(1, 3, 8, 9)

# TensorScatter: a KV-cache write, linear and wrapping around the cache (circular).
TENSOR_SCATTERS = {"linear": ((2, 3, 8, 4), (2, 3, 3, 4), [0, 5], {}),
                   "circular": ((2, 3, 6, 4), (2, 3, 4, 4), [4, 1], {"mode": "circular"}),
                   "axis1-no-indices": ((3, 7, 5), (3, 2, 5), None, {"axis": 1})}
for name, (cache, update, starts, attrs) in TENSOR_SCATTERS.items():
    case(f"TensorScatter-{name}", "TensorScatter", (lambda cache, update, starts: lambda rng: [
        ("past_cache", Feed(normal(rng, cache))), ("update", Feed(normal(rng, update)))]
        + ([("write_indices", Feed(np.array(starts, np.int64)))] if starts is not None else []))(cache, update, starts),
        attrs, opset=24)

# MaxUnpool: distinct flat indices into the unpooled tensor (as MaxPool gives); an odd output_shape in
# test_max_unpool_reads_indices_in_output_shape.
MAX_UNPOOLS = {"2d": ((2, 3, 3, 4), None, {"kernel_shape": [2, 2], "strides": [2, 2]}),
               "1d-padded": ((2, 2, 4), None, {"kernel_shape": [3], "strides": [2], "pads": [1, 0]})}
for name, (x_shape, out_shape, attrs) in MAX_UNPOOLS.items():
    def _unpool_inputs(rng, x_shape=x_shape, out_shape=out_shape, attrs=attrs):
        dims = len(x_shape) - 2
        shape = out_shape or tuple(x_shape[:2]) + tuple(
            (x_shape[2 + d] - 1) * attrs["strides"][d] - sum(attrs.get("pads", [0] * 2 * dims)[d::dims])
            + attrs["kernel_shape"][d] for d in range(dims))
        indices = rng.permutation(int(np.prod(shape)))[:int(np.prod(x_shape))].reshape(x_shape).astype(np.int64)
        return ([("x", Feed(normal(rng, x_shape))), ("indices", Feed(indices))]
                + ([("output_shape", c(out_shape))] if out_shape else []))
    case(f"MaxUnpool-{name}", "MaxUnpool", _unpool_inputs, attrs, opset=11)

# Det: batches of matrices, one needing a row swap (zero corner) and one singular.
case("Det-batch", "Det", x_input(lambda rng: normal(rng, (2, 3, 4, 4))), opset=11)
case("Det-5x5", "Det", x_input(lambda rng: normal(rng, (5, 5))), opset=11)
case("Det-pivot-singular", "Det", x_input(lambda rng: np.array(
    [[[0, 2, 1], [3, 1, 4], [1, 5, 9]], [[1, 2, 3], [2, 4, 6], [0, 1, 7]]], np.float32)), opset=11)


def build(case_: Case) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(zlib.crc32(case_.id.encode()))
    inputs, initializers, feeds, node_inputs = [], [], {}, []
    for name, feed in case_.inputs(rng):
        if feed is None:
            node_inputs.append("")
            continue
        node_inputs.append(name)
        value = np.asarray(feed.value)
        if feed.const:
            initializers.append(numpy_helper.from_array(value, name))
        else:
            inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
            feeds[name] = value
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    named = ["" if i in case_.unread_outputs else f"y{i}" for i in range(case_.num_outputs)]
    nodes = [helper.make_node(case_.op, node_inputs, named, **case_.attrs)]
    outputs = [o for o in named if o]
    if case_.extra_nodes is not None:
        extra, outputs = case_.extra_nodes(outputs)
        nodes += extra
        used = {i for n in extra for i in n.input}
        initializers += [numpy_helper.from_array(np.asarray(v), k) for k, v in EXTRA_CONSTANTS.items() if k in used]
    graph_outputs = [onnx.ValueInfoProto(name=o) for o in outputs]
    if case_.output_like_input:
        graph_outputs = [helper.make_tensor_value_info(outputs[0], inputs[0].type.tensor_type.elem_type,
                                                       feeds[inputs[0].name].shape)]
    graph = helper.make_graph(nodes, case_.id.replace("-", "_"), inputs, graph_outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case_.opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    return model, feeds


@pytest.mark.parametrize("case_", CASES, ids=[c.id for c in CASES])
def test_op_matches_onnxruntime(case_: Case):
    model, feeds = build(case_)
    check_model(model, feeds, oracle=run_onnx_reference if case_.oracle == "onnx" else run_onnxruntime)


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_every_supported_onnx_op_has_cases():
    covered = {c.op for c in CASES}
    for c_ in CASES:
        if c_.extra_nodes is not None:
            covered |= {n.op_type for n in c_.extra_nodes(["y0"])[0]}
    from tests.fixtures.onnx_ops import SUPPORTED_ONNX_OPS

    assert not set(SUPPORTED_ONNX_OPS) - covered, sorted(set(SUPPORTED_ONNX_OPS) - covered)


def test_causal_mask_trilu_folds_to_a_constant():
    """GPT-2's export builds its causal mask with Trilu on a constant: it folds at import, so no
    TRILU op is left to run."""
    ones = numpy_helper.from_array(np.ones((5, 5), np.float32), "ones")
    nodes = [helper.make_node("Trilu", ["ones"], ["mask"], upper=0),
             helper.make_node("Mul", ["x", "mask"], ["y"])]
    graph = helper.make_graph(nodes, "causal_mask", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 5])], [ones])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    comparison = check_model(model, {"x": np.random.default_rng(3).standard_normal((2, 5, 5)).astype(np.float32)})
    assert "Trilu" not in {node.op for node in comparison.converted.graph.nodes}



@pytest.mark.parametrize("conv", ["3x3-pad1", "depthwise", "pointwise-odd-channels", "matmul-bias"])
def test_silu_fuses_into_the_producer_and_matches(conv):
    """x * Sigmoid(x) after a Conv (im2col-free, depthwise, 1x1 GEMM) or a MatMul + bias becomes the
    producer's fused SILU activation, computed in its epilogue; outputs match onnxruntime."""
    rng = np.random.default_rng(5)
    shapes = {"3x3-pad1": ((1, 6, 9, 9), (16, 6, 3, 3), 1), "depthwise": ((1, 24, 11, 11), (24, 1, 3, 3), 24),
              "pointwise-odd-channels": ((1, 13, 7, 5), (37, 13, 1, 1), 1)}
    if conv == "matmul-bias":
        x, w = normal(rng, (3, 17, 24), 2.0), normal(rng, (24, 45))
        first = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["pre"])]
        out_shape = [3, 17, 45]
    else:
        xs, ws, group = shapes[conv]
        x, w = normal(rng, xs, 2.0), normal(rng, ws, 0.5)
        first = [helper.make_node("Conv", ["x", "w", "b"], ["pre"], group=group,
                                  pads=[ws[2] // 2] * 4)]
        out_shape = [xs[0], ws[0], xs[2], xs[3]]
    bias = normal(rng, (w.shape[-1] if conv == "matmul-bias" else w.shape[0],))
    nodes = first + [helper.make_node("Sigmoid", ["pre"], ["gate"]), helper.make_node("Mul", ["pre", "gate"], ["y"])]
    graph = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    comparison = check_model(model, {"x": x})
    nodes = comparison.converted.graph.nodes
    assert {node.op for node in nodes} <= {"Conv2D", "FullyConnected", "Transpose", "Reshape"}, [n.op for n in nodes]
    assert any(node.attrs.get("activation", (None,))[0] == "Silu" for node in nodes)

def test_max_unpool_reads_indices_in_output_shape():
    """With an output_shape past the shape pooling inverts (MaxPool on odd sizes), the indices are
    flat positions in output_shape, as onnxruntime reads them."""
    rng = np.random.default_rng(11)
    x = normal(rng, (2, 2, 2, 2))
    indices = rng.permutation(2 * 2 * 5 * 5)[:16].reshape(2, 2, 2, 2).astype(np.int64)
    node = helper.make_node("MaxUnpool", ["x", "indices", "output_shape"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "max_unpool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                                                     helper.make_tensor_value_info("indices", TensorProto.INT64, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2, 5, 5])],
                              [numpy_helper.from_array(np.array([2, 2, 5, 5], np.int64), "output_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 8
    check_model(model, {"x": x, "indices": indices})


def test_attention_scores_before_softcap_are_refused():
    """qk_matmul_output_mode=0 with a softcap: ONNX's text says the product before the softcap,
    its reference implementation returns it after; the node is refused, naming why."""
    from converter.errors import UnsupportedOpsError
    from converter.importers.onnx import load_onnx

    shape = [1, 2, 3, 4]
    graph = helper.make_graph(
        [helper.make_node("Attention", ["q", "k", "v"], ["y", "", "", "scores"], softcap=2.0)], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "qkv"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    with pytest.raises(UnsupportedOpsError, match=r"qk_matmul_output_mode=0 with softcap"):
        load_onnx(model)

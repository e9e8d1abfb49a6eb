"""The C runtime's int8, dynamic and fp16 op paths against the converter's integer reference.

Each case is a small IR graph with Graph.quantization params, written to a .edge file and run by the
C runtime (edge.Interpreter) at every ISA level this CPU supports and on 1 and 2 threads. The oracle
is converter.reference, which runs quantized nodes through converter.ops.int8_reference (the
fixed-point arithmetic, written independently of the C code):

- int8 outputs must be equal bit for bit, at every level and thread count;
- dynamic outputs (float32) must be within a bound derived from the arithmetic: each output
  is float32(acc) * float32(s_row * s_w) + bias with an exact integer acc, so the only freedom is
  float32 rounding of those two or three steps: |diff| <= 4 ulp-ish = 2**-21 * (|y| + |bias|);
- fp16 models (float16 weights behind a Dequantize) must equal the float32 model run on the
  float16-rounded weights, within the float32 tolerance of the float tests.

The ISA is picked once per process, so each level runs in its own subprocess (EDGE_ISA=level) over
all cases at once; a level the CPU lacks is reported by the runtime as another level and skipped.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

from converter import reference
from converter.ir import Graph, Node, Quantization, TensorType
from converter.ops import lookup
from converter.writer import write_model

LEVELS = ("scalar", "sse2", "avx2", "avx512", "avx512vnni")
THREADS = (1, 2)


@dataclass
class Case:
    id: str
    graph: Graph
    feeds: dict[str, np.ndarray]
    kind: str = "int8"          # int8 (bit-exact) | dynamic (derived bound) | fp16 (vs a float graph)
    float_graph: Graph | None = None
    extra: dict = field(default_factory=dict)


def make_graph(nodes: list[Node], inputs: dict[str, TensorType], constants: dict[str, np.ndarray],
               outputs: list[str], quantization: dict[str, Quantization]) -> Graph:
    """A graph whose intermediate types come from each op's own shape rule."""
    tensors: dict[str, TensorType] = dict(inputs)
    tensors.update({name: TensorType(str(value.dtype), tuple(value.shape)) for name, value in constants.items()})
    for node in nodes:
        types = [tensors[name] if name else None for name in node.inputs]
        if types[0] is not None and types[0].dtype == "float32":
            # Dynamic mode: float activations with int8 weights have float results; the shape rule
            # is the float op's.
            types = [TensorType("float32", t.shape) if t is not None and t.dtype == "int8" else t for t in types]
        for name, t in zip(node.outputs, lookup(node.op).infer(types, node.attrs)):
            tensors[name] = t
    return Graph(nodes=tuple(nodes), inputs=tuple(inputs), outputs=tuple(outputs), tensors=tensors,
                 constants=constants, quantization=quantization)


def q(scale, zero_point=0, axis=0) -> Quantization:
    scale = tuple(float(np.float32(s)) for s in np.atleast_1d(scale))
    zero_point = tuple(int(z) for z in np.atleast_1d(zero_point))
    if len(zero_point) == 1 and len(scale) > 1:
        zero_point = zero_point * len(scale)
    return Quantization(scale=scale, zero_point=zero_point, axis=axis)


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def act_params(rng, low=0.02, high=0.08) -> Quantization:
    return q(rng.uniform(low, high), int(rng.integers(-30, 30)))


def int8_values(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def weights(rng, shape) -> np.ndarray:
    return rng.integers(-127, 128, size=shape).astype(np.int8)


ACTIVATIONS = (None, ("Relu", 0.0, 0.0), ("Relu6", 0.0, 0.0), ("Clip", -0.5, 0.7))


def with_activation(attrs: dict, activation) -> dict:
    return {**attrs, "activation": activation} if activation else attrs


# ---- int8 cases ----

def conv_case(id: str, n, h, w, c, o, kh, kw, groups, strides, dilations, pads, activation, bias=True) -> Case:
    rng = rng_for(id)
    x = TensorType("int8", (n, h, w, c))
    wt = weights(rng, (o, kh, kw, c // groups))
    s_x, s_w = act_params(rng), rng.uniform(0.002, 0.02, o).astype(np.float32)
    constants = {"w": wt}
    quant = {"x": s_x, "w": q(s_w, 0, 0), "y": q(rng.uniform(0.05, 0.3), int(rng.integers(-20, 20)))}
    inputs = ["x", "w"]
    if bias:
        constants["b"] = rng.integers(-3000, 3000, o).astype(np.int32)
        quant["b"] = q(np.float32(s_x.scale[0]) * s_w, 0, 0)
        inputs.append("b")
    attrs = with_activation({"strides": strides, "dilations": dilations, "pads": pads, "groups": groups,
                             "layout": "NHWC"}, activation)
    graph = make_graph([Node("Conv2D", inputs, ["y"], attrs)], {"x": x}, constants, ["y"], quant)
    return Case(id, graph, {"x": int8_values(rng, x.shape)})


def int8_cases() -> list[Case]:
    cases = [
        conv_case("conv3x3_pad_relu", 1, 7, 9, 5, 11, 3, 3, 1, (1, 1), (1, 1), (1, 1, 1, 1), ACTIVATIONS[1]),
        conv_case("conv_stride2_ragged", 2, 9, 6, 3, 17, 3, 2, 1, (2, 2), (1, 1), (1, 0, 2, 1), None),
        conv_case("conv_dilated_relu6", 1, 8, 8, 4, 6, 3, 3, 1, (1, 1), (2, 2), (2, 2, 2, 2), ACTIVATIONS[2]),
        conv_case("conv1x1_gemm", 1, 5, 7, 19, 33, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), None),
        conv_case("conv1x1_clip", 2, 3, 3, 8, 5, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), ACTIVATIONS[3]),
        conv_case("conv_groups", 1, 6, 5, 6, 9, 3, 3, 3, (1, 2), (1, 1), (1, 1, 1, 1), None),
        conv_case("depthwise3x3", 1, 9, 7, 13, 13, 3, 3, 13, (1, 1), (1, 1), (1, 1, 1, 1), ACTIVATIONS[2]),
        conv_case("depthwise_stride2", 2, 8, 8, 16, 16, 3, 3, 16, (2, 2), (1, 1), (0, 1, 1, 0), None),
        conv_case("depthwise_multiplier2", 1, 5, 6, 4, 8, 3, 3, 4, (1, 1), (1, 1), (1, 1, 1, 1), ACTIVATIONS[1]),
        conv_case("conv_no_bias", 1, 4, 4, 3, 4, 2, 2, 1, (1, 1), (1, 1), (0, 0, 0, 0), None, bias=False),
        conv_case("conv_5x5_wide", 1, 11, 10, 24, 40, 5, 5, 1, (1, 1), (1, 1), (2, 2, 2, 2), ACTIVATIONS[1]),
        # few input channels: im2col + GEMM (the stems of ResNet-18 and MobileNetV2)
        conv_case("conv7x7_stem_3ch", 2, 23, 21, 3, 40, 7, 7, 1, (2, 2), (1, 1), (3, 3, 3, 3), ACTIVATIONS[1]),
        conv_case("conv3x3_stem_3ch", 1, 17, 16, 3, 32, 3, 3, 1, (2, 2), (1, 1), (0, 0, 1, 1), ACTIVATIONS[2]),
        conv_case("conv3x3_dilated_2ch", 1, 9, 10, 2, 7, 3, 3, 1, (1, 2), (2, 1), (2, 1, 2, 1), None),
    ]

    for m, k, n, activation in ((1, 17, 10, None), (7, 64, 33, ACTIVATIONS[1]), (13, 5, 3, ACTIVATIONS[2])):
        id = f"fc_{m}x{k}x{n}"
        rng = rng_for(id)
        s_x, s_w = act_params(rng), rng.uniform(0.002, 0.02, n).astype(np.float32)
        quant = {"x": s_x, "w": q(s_w, 0, 0), "b": q(np.float32(s_x.scale[0]) * s_w, 0, 0),
                 "y": act_params(rng, 0.05, 0.3)}
        graph = make_graph([Node("FullyConnected", ["x", "w", "b"], ["y"], with_activation({}, activation))],
                           {"x": TensorType("int8", (m, k))},
                           {"w": weights(rng, (n, k)), "b": rng.integers(-5000, 5000, n).astype(np.int32)},
                           ["y"], quant)
        cases.append(Case(id, graph, {"x": int8_values(rng, (m, k))}))

    # BatchMatMul of two activations (per tensor, non-zero zero points), with transposes and broadcast.
    for shape_a, shape_b, ta, tb in (((2, 5, 7), (2, 7, 6), False, False), ((3, 4, 9), (1, 5, 9), False, True),
                                     ((2, 6, 3), (6, 4), True, False)):
        id = f"bmm_{'x'.join(map(str, shape_a))}_{'x'.join(map(str, shape_b))}_{int(ta)}{int(tb)}"
        rng = rng_for(id)
        quant = {"a": act_params(rng), "b": act_params(rng), "y": act_params(rng, 0.2, 0.6)}
        graph = make_graph([Node("BatchMatMul", ["a", "b"], ["y"], {"transpose_a": ta, "transpose_b": tb})],
                           {"a": TensorType("int8", shape_a), "b": TensorType("int8", shape_b)}, {}, ["y"], quant)
        cases.append(Case(id, graph, {"a": int8_values(rng, shape_a), "b": int8_values(rng, shape_b)}))
    # BatchMatMul by a constant per-column weight (the MatMul of a Linear layer): the packed GEMM path.
    for rows, k, n in ((3, 4, 20), (9, 33, 17)):
        id = f"bmm_const_{rows}x{k}x{n}"
        rng = rng_for(id)
        s_b = rng.uniform(0.002, 0.02, n).astype(np.float32)
        quant = {"a": act_params(rng), "b": q(s_b, 0, 1), "y": act_params(rng, 0.05, 0.3)}
        graph = make_graph([Node("BatchMatMul", ["a", "b"], ["y"], {})], {"a": TensorType("int8", (2, rows, k))},
                           {"b": weights(rng, (k, n))}, ["y"], quant)
        cases.append(Case(id, graph, {"a": int8_values(rng, (2, rows, k))}))

    for op, shape_a, shape_b, activation in (("Add", (2, 5, 7), (2, 5, 7), None), ("Add", (1, 4, 4, 9), (9,), ACTIVATIONS[1]),
                                             ("Sub", (3, 1, 6), (1, 4, 6), None), ("Mul", (2, 3, 5), (2, 3, 5), ACTIVATIONS[2]),
                                             ("Mul", (4, 1), (1, 37), None)):
        id = f"{op.lower()}_{'x'.join(map(str, shape_a))}_{'x'.join(map(str, shape_b))}"
        rng = rng_for(id)
        quant = {"a": act_params(rng), "b": act_params(rng, 0.01, 0.2), "y": act_params(rng, 0.03, 0.1)}
        graph = make_graph([Node(op, ["a", "b"], ["y"], with_activation({}, activation))],
                           {"a": TensorType("int8", shape_a), "b": TensorType("int8", shape_b)}, {}, ["y"], quant)
        cases.append(Case(id, graph, {"a": int8_values(rng, shape_a), "b": int8_values(rng, shape_b)}))

    for op, kernel, strides, pads, extra in (("AvgPool2D", (3, 3), (1, 1), (1, 1, 1, 1), {}),
                                             ("AvgPool2D", (3, 3), (2, 2), (1, 1, 1, 1), {"count_include_pad": True}),
                                             ("AvgPool2D", (2, 3), (2, 2), (0, 0, 0, 0), {"ceil_mode": True}),
                                             ("MaxPool2D", (3, 3), (2, 2), (1, 1, 1, 1), {}),
                                             ("MaxPool2D", (2, 2), (1, 1), (0, 0, 1, 1), {"ceil_mode": True})):
        id = f"{op.lower()}_{kernel[0]}x{kernel[1]}_s{strides[0]}_{'_'.join(extra) or 'plain'}"
        rng = rng_for(id)
        x_params = act_params(rng)
        quant = {"x": x_params, "y": x_params if op == "MaxPool2D" else act_params(rng)}
        attrs = {"kernel": kernel, "strides": strides, "pads": pads, "layout": "NHWC", **extra}
        graph = make_graph([Node(op, ["x"], ["y"], attrs)], {"x": TensorType("int8", (2, 7, 8, 5))}, {}, ["y"], quant)
        cases.append(Case(id, graph, {"x": int8_values(rng, (2, 7, 8, 5))}))

    rng = rng_for("reduce_mean_hw")
    graph = make_graph([Node("ReduceMean", ["x"], ["y"], {"axes": (1, 2), "keepdims": True})],
                       {"x": TensorType("int8", (2, 7, 7, 12))}, {}, ["y"], {"x": act_params(rng), "y": act_params(rng)})
    cases.append(Case("reduce_mean_hw", graph, {"x": int8_values(rng, (2, 7, 7, 12))}))

    # Channel counts that give the vector kernels (blocks of 64 / 16 lanes) a body and a ragged tail.
    for id, shape, kernel, strides, pads, dil, act in (
            ("maxpool_vec_c77", (2, 9, 10, 77), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), None),
            ("maxpool_vec_c150_dilated", (1, 8, 9, 150), (2, 3), (1, 2), (1, 1, 0, 2), (2, 2), None),
            ("maxpool_vec_c23", (1, 6, 6, 23), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), None),
            ("maxpool_vec_c40_relu", (1, 7, 7, 40), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), ACTIVATIONS[1]),
            ("maxpool_vec_c19_relu6", (1, 6, 6, 19), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), ACTIVATIONS[2])):
        rng = rng_for(id)
        x_params = act_params(rng)
        attrs = with_activation({"kernel": kernel, "strides": strides, "pads": pads, "dilations": dil,
                                 "layout": "NHWC"}, act)
        graph = make_graph([Node("MaxPool2D", ["x"], ["y"], attrs)], {"x": TensorType("int8", shape)}, {}, ["y"],
                           {"x": x_params, "y": x_params})
        cases.append(Case(id, graph, {"x": int8_values(rng, shape)}))
    for op, shape_a, shape_b, activation in (("Add", (2, 3, 5, 83), (2, 3, 5, 83), None),
                                             ("Add", (1, 7, 131), (1, 7, 131), ACTIVATIONS[2]),
                                             ("Sub", (3, 4, 45), (3, 4, 45), ACTIVATIONS[3]),
                                             ("Add", (2, 9, 64), (9, 64), None)):
        id = f"vec_{op.lower()}_{'x'.join(map(str, shape_a))}_{'x'.join(map(str, shape_b))}"
        rng = rng_for(id)
        quant = {"a": act_params(rng), "b": act_params(rng, 0.01, 0.2), "y": act_params(rng, 0.03, 0.1)}
        graph = make_graph([Node(op, ["a", "b"], ["y"], with_activation({}, activation))],
                           {"a": TensorType("int8", shape_a), "b": TensorType("int8", shape_b)}, {}, ["y"], quant)
        cases.append(Case(id, graph, {"a": int8_values(rng, shape_a), "b": int8_values(rng, shape_b)}))
    for id, shape, axes in (("reduce_mean_vec_c300", (2, 5, 6, 300), (1, 2)),
                            ("reduce_mean_vec_c37_axis1", (3, 11, 37), (1,))):
        rng = rng_for(id)
        graph = make_graph([Node("ReduceMean", ["x"], ["y"], {"axes": axes, "keepdims": True})],
                           {"x": TensorType("int8", shape)}, {}, ["y"], {"x": act_params(rng), "y": act_params(rng)})
        cases.append(Case(id, graph, {"x": int8_values(rng, shape)}))

    rng = rng_for("concat_mixed_params")
    shared = act_params(rng)
    quant = {"a": act_params(rng), "b": shared, "c": act_params(rng, 0.001, 0.01), "y": shared}
    graph = make_graph([Node("Concat", ["a", "b", "c"], ["y"], {"axis": 3})],
                       {"a": TensorType("int8", (1, 3, 4, 5)), "b": TensorType("int8", (1, 3, 4, 2)),
                        "c": TensorType("int8", (1, 3, 4, 7))}, {}, ["y"], quant)
    cases.append(Case("concat_mixed_params", graph, {k: int8_values(rng, graph.tensors[k].shape) for k in "abc"}))

    for axis, shape in ((1, (3, 10)), (1, (2, 37, 3)), (2, (4, 3, 50))):
        id = f"softmax_axis{axis}_{'x'.join(map(str, shape))}"
        rng = rng_for(id)
        quant = {"x": act_params(rng, 0.01, 0.05), "y": q(1.0 / 256.0, -128)}
        graph = make_graph([Node("Softmax", ["x"], ["y"], {"axis": axis})], {"x": TensorType("int8", shape)}, {},
                           ["y"], quant)
        cases.append(Case(id, graph, {"x": int8_values(rng, shape)}))

    # Quantize -> int8 pad -> Dequantize: the float edges of an int8 region; values on rounding ties.
    rng = rng_for("quantize_pad_dequantize")
    params = q(0.05, 7)
    x = (np.round(rng.uniform(-8, 8, (2, 5, 6, 3)) * 40) / 40).astype(np.float32)  # many exact .5 ties
    x.flat[:3] = [np.inf, -np.inf, 1e30]  # NaN has no defined int8 value in the reference
    graph = make_graph([Node("Quantize", ["x"], ["xq"], {}),
                        Node("Pad", ["xq"], ["xp"], {"pads": (0, 1, 2, 0, 0, 2, 1, 0), "mode": "constant", "value": 0.0}),
                        Node("Transpose", ["xp"], ["xt"], {"perm": (0, 3, 1, 2)}),
                        Node("Dequantize", ["xt"], ["y"], {})],
                       {"x": TensorType("float32", x.shape)}, {}, ["y", "xt"],
                       {"xq": params, "xp": params, "xt": params})
    cases.append(Case("quantize_pad_dequantize", graph, {"x": x}))

    # A larger QUANTIZE (vector body, ragged tail, work split over threads): ties, values far out of
    # range both ways, infinities, signed zeros.
    rng = rng_for("quantize_vec")
    params = q(0.03, -11)
    x = (np.round(rng.uniform(-6, 6, (1, 37, 41, 3)) * (1 / 0.03) * 2) / 2 * np.float32(0.03)).astype(np.float32)
    x.flat[5::97] = rng.uniform(-1e6, 1e6, x.flat[5::97].shape).astype(np.float32)
    x.flat[:4] = [np.inf, -np.inf, -0.0, 0.0]
    graph = make_graph([Node("Quantize", ["x"], ["xq"], {}), Node("Dequantize", ["xq"], ["y"], {})],
                       {"x": TensorType("float32", x.shape)}, {}, ["y", "xq"], {"xq": params})
    cases.append(Case("quantize_vec", graph, {"x": x}))
    return cases


# ---- dynamic cases ----

def dynamic_cases() -> list[Case]:
    cases = []
    for m, k, n, activation in ((1, 40, 12, None), (6, 17, 33, ("Relu", 0.0, 0.0))):
        id = f"dynamic_fc_{m}x{k}x{n}"
        rng = rng_for(id)
        s_w = rng.uniform(0.002, 0.02, n).astype(np.float32)
        x = rng.standard_normal((m, k)).astype(np.float32)
        x[0] = 0.0  # an all-zero row takes scale 1
        graph = make_graph([Node("FullyConnected", ["x", "w", "b"], ["y"], with_activation({}, activation))],
                           {"x": TensorType("float32", (m, k))},
                           {"w": weights(rng, (n, k)), "b": rng.standard_normal(n).astype(np.float32)},
                           ["y"], {"w": q(s_w, 0, 0)})
        cases.append(Case(id, graph, {"x": x}, kind="dynamic"))
    for id, (n, h, w, c, o, kh, groups, pads) in {
            "dynamic_conv3x3": (1, 6, 7, 5, 8, 3, 1, (1, 1, 1, 1)),
            "dynamic_depthwise": (1, 6, 6, 8, 8, 3, 8, (1, 1, 1, 1))}.items():
        rng = rng_for(id)
        s_w = rng.uniform(0.002, 0.02, o).astype(np.float32)
        attrs = {"strides": (1, 1), "dilations": (1, 1), "pads": pads, "groups": groups, "layout": "NHWC",
                 "activation": ("Relu6", 0.0, 0.0)}
        graph = make_graph([Node("Conv2D", ["x", "w", "b"], ["y"], attrs)], {"x": TensorType("float32", (n, h, w, c))},
                           {"w": weights(rng, (o, kh, kh, c // groups)), "b": rng.standard_normal(o).astype(np.float32)},
                           ["y"], {"w": q(s_w, 0, 0)})
        cases.append(Case(id, graph, {"x": rng.standard_normal((n, h, w, c)).astype(np.float32)}, kind="dynamic"))
    rng = rng_for("dynamic_bmm")
    s_b = rng.uniform(0.002, 0.02, 9).astype(np.float32)
    graph = make_graph([Node("BatchMatMul", ["a", "b"], ["y"], {})], {"a": TensorType("float32", (2, 5, 11))},
                       {"b": weights(rng, (11, 9))}, ["y"], {"b": q(s_b, 0, 1)})
    cases.append(Case("dynamic_bmm", graph, {"a": rng.standard_normal((2, 5, 11)).astype(np.float32)}, kind="dynamic"))
    return cases


# ---- fp16 cases ----

def fp16_cases() -> list[Case]:
    rng = rng_for("fp16_conv_fc")
    w = rng.standard_normal((8, 3, 3, 4)).astype(np.float32)
    fw = rng.standard_normal((5, 8 * 5 * 5)).astype(np.float32)
    x = rng.standard_normal((1, 5, 5, 4)).astype(np.float32)
    conv = {"strides": (1, 1), "dilations": (1, 1), "pads": (1, 1, 1, 1), "groups": 1, "layout": "NHWC",
            "activation": ("Relu", 0.0, 0.0)}

    def build(half: bool) -> Graph:
        nodes, constants = [], {}
        if half:
            constants = {"w16": w.astype(np.float16), "fw16": fw.astype(np.float16)}
            nodes += [Node("Dequantize", ["w16"], ["w"], {}), Node("Dequantize", ["fw16"], ["fw"], {})]
        else:
            constants = {"w": w.astype(np.float16).astype(np.float32), "fw": fw.astype(np.float16).astype(np.float32)}
        nodes += [Node("Conv2D", ["x", "w"], ["c"], conv), Node("Reshape", ["c"], ["r"], {"shape": (1, 200)}),
                  Node("FullyConnected", ["r", "fw"], ["y"], {})]
        return make_graph(nodes, {"x": TensorType("float32", x.shape)}, constants, ["y"], {})

    return [Case("fp16_conv_fc", build(True), {"x": x}, kind="fp16", float_graph=build(False))]


def all_cases() -> list[Case]:
    cases = int8_cases() + dynamic_cases() + fp16_cases()
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique"
    return cases


# ---- running the C runtime at each ISA level ----

RUNNER = r"""
import pickle, sys
import numpy as np
import edge
jobs = pickle.load(open(sys.argv[1], "rb"))
results = {"isa": edge.runtime_isa(), "outputs": {}}
for id, model, feeds, threads in jobs:
    interpreter = edge.Interpreter(model_content=model, num_threads=threads)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], feeds[d["name"]])
    interpreter.invoke()
    outs = {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}
    interpreter.invoke()  # a second run on the same inputs must give the same bytes
    again = {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in interpreter.get_output_details()}
    results["outputs"][(id, threads)] = (outs, all(outs[k].tobytes() == again[k].tobytes() for k in outs))
pickle.dump(results, open(sys.argv[2], "wb"))
"""


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    return {c.id: c for c in all_cases()}


@pytest.fixture(scope="module")
def runs(cases, tmp_path_factory) -> dict[str, dict]:
    """level -> {"isa": the level the runtime reports, "outputs": {(id, threads): (outputs, stable)}}."""
    folder = tmp_path_factory.mktemp("quantized_ops")
    jobs = []
    for case in cases.values():
        model = write_model(case.graph)
        jobs += [(case.id, model, case.feeds, t) for t in THREADS]
        if case.float_graph is not None:
            jobs += [(case.id + "/float", write_model(case.float_graph), case.feeds, 1)]
    job_file = folder / "jobs.pkl"
    job_file.write_bytes(pickle.dumps(jobs))
    results = {}
    for level in LEVELS:
        out = folder / f"{level}.pkl"
        env = {**os.environ, "EDGE_ISA": level}
        done = subprocess.run([sys.executable, "-c", RUNNER, str(job_file), str(out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"EDGE_ISA={level}: {done.stderr[-3000:]}"
        results[level] = pickle.loads(out.read_bytes())
    return results


def level_results(runs, level):
    result = runs[level]
    if result["isa"] != level:
        pytest.skip(f"this CPU runs {result['isa']} when asked for {level}")
    return result["outputs"]


def dynamic_bound(case: Case, name: str, expected: np.ndarray) -> np.ndarray:
    """Per element: float32(acc) and float32(s_row * s_w) are each rounded once, the product once
    and the bias add once: 4 roundings of relative 2**-24 on |acc * s| + |bias| <= |y| + 2|bias|."""
    bias = next((case.graph.constants[i] for n in case.graph.nodes for i in n.inputs[2:3]
                 if i in case.graph.constants), None)
    magnitude = np.abs(expected.astype(np.float64))
    if bias is not None:
        magnitude = magnitude + 2 * np.max(np.abs(bias))
    return 4 * 2.0 ** -24 * magnitude + 1e-30


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case_id", [c.id for c in all_cases()])
def test_quantized_op(cases, runs, case_id, level):
    case = cases[case_id]
    outputs = level_results(runs, level)
    if case.kind == "fp16":
        want = outputs[(case.id + "/float", 1)][0]
        for threads in THREADS:
            got, stable = outputs[(case.id, threads)]
            assert stable
            for name, value in want.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5, err_msg=f"{case_id}:{name}")
        return
    expected = reference.run(case.graph, case.feeds)
    single = outputs[(case.id, 1)][0]
    for threads in THREADS:
        got, stable = outputs[(case.id, threads)]
        assert stable, f"{case_id}: a second invoke changed the outputs"
        for name, want in expected.items():
            value = got[name]
            assert value.shape == want.shape and value.dtype == want.dtype, (
                f"{case_id}:{name}: {value.dtype}{value.shape} vs reference {want.dtype}{want.shape}")
            if case.kind == "int8" or want.dtype.kind in "iu":
                mismatch = np.flatnonzero(value.ravel() != want.ravel())
                if want.dtype.kind == "f":
                    mismatch = np.flatnonzero(~((value == want) | (np.isnan(value) & np.isnan(want))).ravel())
                assert mismatch.size == 0, (
                    f"{case_id}:{name} at {level}/{threads} threads: {mismatch.size} of {want.size} differ; first "
                    f"at {mismatch[0]}: {value.ravel()[mismatch[0]]} != {want.ravel()[mismatch[0]]}")
            else:
                bound = dynamic_bound(case, name, want)
                excess = np.abs(value.astype(np.float64) - want) - bound
                assert np.all(excess <= 0), (
                    f"{case_id}:{name} at {level}/{threads}: max error {np.max(np.abs(value - want)):.3g} over "
                    f"the derived bound at {int(np.argmax(excess))}")
            # Thread counts give the same bytes, float outputs included.
            assert value.tobytes() == single[name].tobytes(), f"{case_id}:{name}: {threads} threads differ from 1"


def test_every_level_gives_the_scalar_bytes(cases, runs):
    """Across levels the int8 outputs are identical (the scalar reference is the oracle inside C)."""
    scalar = runs["scalar"]["outputs"]
    for level in LEVELS[1:]:
        if runs[level]["isa"] != level:
            continue
        for key, (outputs, _) in runs[level]["outputs"].items():
            if cases.get(key[0]) is None or cases[key[0]].kind != "int8":
                continue
            for name, value in outputs.items():
                assert value.tobytes() == scalar[key][0][name].tobytes(), f"{key}:{name} at {level} vs scalar"


def test_fp16_dequantize_is_folded_at_prepare():
    """A Dequantize of a float16 constant is computed once: its output is not in the arena, and the
    dequantized weights count as persistent memory."""
    import edge

    case = fp16_cases()[0]
    half = edge.Interpreter(model_content=write_model(case.graph))
    full = edge.Interpreter(model_content=write_model(case.float_graph))
    half.allocate_tensors()
    full.allocate_tensors()
    half_memory, full_memory = half.memory_info(), full.memory_info()
    assert half_memory["arena_bytes"] == full_memory["arena_bytes"]
    folded = (8 * 3 * 3 * 4 + 5 * 200) * 4
    assert half_memory["persistent_bytes"] >= folded


@pytest.mark.parametrize("case_id", [c.id for c in int8_cases() if c.graph.nodes[0].op in ("AvgPool2D", "ReduceMean")])
def test_int8_average_is_the_float_average(cases, runs, case_id):
    """Independent of the integer reference: an int8 average is the float average of the
    dequantized input (padding cells counted as real zeros with count_include_pad), quantized with
    the output params, give or take the one rounding step of each side."""
    case = cases[case_id]
    node = case.graph.nodes[0]
    x_params, y_params = case.graph.quantization["x"], case.graph.quantization["y"]
    x = (case.feeds["x"].astype(np.float32) - x_params.zero_point[0]) * np.float32(x_params.scale[0])
    float_graph = make_graph([Node(node.op, ["x"], ["y"], node.attrs)], {"x": TensorType("float32", x.shape)}, {},
                             ["y"], {})
    mean = reference.run(float_graph, {"x": x})["y"]
    want = np.clip(np.rint(mean / np.float32(y_params.scale[0])) + y_params.zero_point[0], -128, 127)
    got = level_results(runs, "scalar")[(case.id, 1)][0]["y"]
    assert np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))) <= 1

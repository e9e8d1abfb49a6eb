"""The op table itself: every README op has a complete entry; lowering then lifting (through a real
FlatBuffer) gives the attributes back; the shape rule agrees with the reference; bad shapes are
refused with a message naming the op."""
from __future__ import annotations

import math
import pathlib
import re

import flatbuffers
import numpy as np
import pytest

from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.Operator import Operator, OperatorT
from converter.edgefb.UnaryOp import UnaryOp
from converter.ir import Quantization, TensorType
from converter.ops import OPS, OpDef
from converter.ops._common import lifted_op

README = pathlib.Path(__file__).resolve().parents[2] / "converter" / "ops" / "README.md"
RNG = np.random.default_rng(7)

LAYOUT_SENSITIVE = {"Conv2D", "ConvTranspose2D", "MaxPool2D", "AvgPool2D", "BatchNorm", "LRN", "RoiAlign",
                    "GridSample"}
FUSABLE = {"Conv2D", "ConvTranspose2D", "FullyConnected", "BatchMatMul", "Add", "Sub", "Mul"}
BINARY_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "Min", "Max", "Mod", "FMod", "PRelu", "Equal", "Less",
              "LessEqual", "Greater", "GreaterEqual", "And", "Or", "Xor", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
              "ShiftLeft", "ShiftRight"}
UNARY_OPS = {"Relu", "Relu6", "Sigmoid", "Tanh", "HardSwish", "Gelu", "GeluTanh", "Erf", "Exp", "Log",
             "Sqrt", "Rsqrt", "Reciprocal", "Neg", "Abs", "Floor", "Ceil", "Round", "Sign", "Softplus",
             "Sin", "Cos", "Square", "Clip", "LeakyRelu", "Elu", "HardSigmoid", "Not", "IsNaN", "IsInf",
             "Asin", "Acos", "Atan", "Silu"}
# Attributes the schema does not carry: the reader takes them from the output tensors (or, for the
# fused activation, from Operator.activation).
# "quantization" is the tensors' params the reference executor passes (Quantize's sample needs them).
IMPLIED_BY_TENSORS = {"shape", "sizes", "to", "activation", "quantization"}


def readme_ops() -> set[str]:
    names = set()
    for line in README.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| IR op") and not line.startswith("|---"):
            names.update(re.sub(r"\*\(.*?\)\*", "", line.split("|")[1]).split())
    return names


def f32(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


def _binary_sample(op):
    if op in ("And", "Or", "Xor"):
        return [RNG.random((2, 3)) < 0.5, RNG.random((3,)) < 0.5], {}
    if op.startswith(("Bitwise", "Shift")):
        return [RNG.integers(-999, 999, (2, 3)).astype(np.int32), np.array([0, 3, 31], np.int32)], {}
    if op in ("Mod", "Div"):
        return [RNG.integers(-9, 9, (2, 3)).astype(np.int32), np.array([2, -3, 5], np.int32)], {}
    return [f32(2, 3, low=0.5), f32(3, low=0.5)], {}


def _unary_sample(op):
    if op == "Not":
        return [RNG.random((2, 5)) < 0.5], {}
    params = {"Clip": {"min": -1.0, "max": 0.5}, "LeakyRelu": {"alpha": 0.25}, "Elu": {"alpha": 0.5},
              "HardSigmoid": {"alpha": 0.25, "beta": 0.375}}
    if op in ("Asin", "Acos"):
        return [f32(2, 5, low=-0.9, high=0.9)], {}
    return [f32(2, 5, low=0.1)], params.get(op, {})


def _rnn_sample(gates, directions, hidden=3, batch=2, width=4, seq=5):
    direction = "bidirectional" if directions == 2 else "reverse"
    inputs = [f32(seq, batch, width), f32(directions, gates * hidden, width), f32(directions, gates * hidden, hidden),
              f32(directions, 2 * gates * hidden), None, f32(directions, batch, hidden)]
    if gates == 4:
        inputs += [f32(directions, batch, hidden), f32(directions, 3 * hidden)]
    attrs = {"hidden_size": hidden, "direction": direction, "clip": 2.5}
    if gates == 3:
        attrs["linear_before_reset"] = True
    return inputs, attrs


WINDOW = {"strides": (2, 1), "dilations": (1, 2), "pads": (1, 0, 2, 1)}
SAMPLES = {
    "Conv2D": ([f32(1, 7, 8, 4), f32(6, 3, 2, 2), f32(6)], dict(WINDOW, groups=2, layout="NHWC")),
    "ConvTranspose2D": ([f32(1, 5, 4, 4), f32(6, 3, 2, 2), f32(6)],
                        dict(WINDOW, groups=2, output_padding=(1, 0), layout="NHWC")),
    "FullyConnected": ([f32(2, 3, 5), f32(4, 5), f32(4)], {}),
    "BatchMatMul": ([f32(2, 1, 5, 3), f32(3, 4, 5)], {"transpose_a": True, "transpose_b": True}),
    "Softmax": ([f32(2, 3, 4)], {"axis": 1}),
    "LogSoftmax": ([f32(2, 3, 4)], {"axis": 2}),
    "LayerNorm": ([f32(2, 3, 4), f32(3, 4), f32(4)], {"axis": 1, "epsilon": 1e-3}),
    "RMSNorm": ([f32(2, 3, 4), f32(3, 4), f32(4)], {"axis": 1, "epsilon": 1e-3}),
    "Attention": ([f32(2, 4, 3, 5), f32(2, 2, 5, 6), f32(2, 2, 6, 3), f32(3, 6)],
                  {"scale": 0.5, "causal": "lower_right", "softcap": 2.0, "k_transposed": True}),
    "BatchNorm": ([f32(2, 4, 3, 5), f32(5), f32(5), f32(5), f32(5, low=0.5)], {"epsilon": 1e-3, "layout": "NHWC"}),
    "MaxPool2D": ([f32(1, 7, 6, 2)], {"kernel": (3, 2), "strides": (2, 2), "dilations": (1, 1),
                                      "pads": (1, 0, 1, 1), "ceil_mode": True, "layout": "NHWC"}),
    "AvgPool2D": ([f32(1, 7, 6, 2)], {"kernel": (2, 3), "strides": (2, 1), "dilations": (2, 1),
                                      "pads": (0, 1, 1, 1), "ceil_mode": False, "count_include_pad": True,
                                      "layout": "NHWC"}),
    "LRN": ([f32(1, 3, 3, 6)], {"size": 3, "alpha": 0.001, "beta": 0.75, "bias": 2.0, "layout": "NHWC"}),
    "Reshape": ([f32(2, 6)], {"shape": (3, 2, 2)}),
    "Identity": ([f32(2, 6)], {}),
    "Transpose": ([f32(2, 3, 4)], {"perm": (1, 2, 0)}),
    "Concat": ([f32(2, 3), f32(2, 1), f32(2, 4)], {"axis": 1}),
    "Split": ([f32(5, 3)], {"axis": 0, "sizes": (1, 4)}),
    "Slice": ([f32(6, 5)], {"starts": (-1, 1), "ends": (-100, 9223372036854775807), "steps": (-2, 2)}),
    "Gather": ([f32(4, 5), np.array([[-1, 0], [2, 3]], np.int64)], {"axis": 1}),
    "GatherElements": ([f32(4, 5), np.array([[-1, 0], [2, 3]], np.int32)], {"axis": 0}),
    "Pad": ([f32(3, 4)], {"mode": "reflect", "pads": (1, -1, 2, 2), "value": 0.0}),
    "Resize": ([f32(1, 2, 3, 4)], {"mode": "linear", "coordinate_mode": "align_corners",
                                   "nearest_mode": "ceil", "scales": (1.0, 1.0, 2.0, 0.5)}),
    "Cast": ([f32(2, 3)], {"to": "int32"}),
    "Where": ([RNG.random((2, 1)) < 0.5, f32(2, 3), f32(3)], {}),
    "BroadcastTo": ([f32(3, 1)], {"shape": (2, 3, 4)}),
    "LSTM": _rnn_sample(4, 2),
    "GRU": _rnn_sample(3, 1),
    "Quantize": ([f32(2, 3)], {"quantization": ([None], [Quantization((0.1,), (3,), 0)])}),
    "Dequantize": ([f32(2, 3).astype(np.float16)], {}),
    # training ops (converter/ops/training.py)
    "Conv2DBackpropInput": ([f32(1, 3, 3, 2), f32(2, 3, 3, 4)],
                            {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 1, 1), "groups": 1,
                             "layout": "NHWC", "shape": (1, 5, 5, 4)}),
    "Conv2DBackpropFilter": ([f32(1, 5, 5, 4), f32(1, 3, 3, 2)],
                             {"strides": (2, 2), "dilations": (1, 1), "pads": (1, 1, 1, 1), "groups": 2,
                              "layout": "NHWC", "shape": (2, 3, 3, 2)}),
    "Pool2DGrad": ([f32(1, 4, 4, 2), f32(1, 2, 2, 2)],
                   {"pool": "average", "kernel": (2, 2), "strides": (2, 2), "dilations": (1, 1),
                    "pads": (0, 0, 0, 0), "ceil_mode": False, "count_include_pad": True, "layout": "NHWC"}),
    "ActivationGrad": ([f32(2, 3), f32(2, 3)], {"function": "HardSigmoid", "alpha": 0.25, "beta": 0.5}),
    "Loss": ([f32(3, 4), np.array([1, 0, 3], np.int32)], {"kind": "softmax_cross_entropy"}),
    "LayerNormGrad": ([f32(2, 5), f32(5), f32(2, 5)], {"axis": 1, "epsilon": 1e-5}),
    "BatchNormTrain": ([f32(4, 3), f32(3), f32(3), f32(3), f32(3, low=0.5)],
                       {"epsilon": 1e-3, "momentum": 0.9, "layout": "NHWC"}),
    "BatchNormGrad": ([f32(4, 3), f32(3), f32(3), f32(3, low=0.5), f32(4, 3)],
                      {"epsilon": 1e-3, "momentum": 0.9, "layout": "NHWC"}),
    "GatherGrad": ([f32(2, 3), np.array([3, 3], np.int32)], {"axis": 0, "shape": (5, 3)}),
    "OptimizerUpdate": ([f32(3), f32(3), np.array(0.1, np.float32), f32(3), f32(3), np.array(0.0, np.float32)],
                        {"kind": "adam", "momentum": 0.0, "nesterov": False, "beta1": 0.9, "beta2": 0.999,
                         "epsilon": 1e-8, "weight_decay": 0.0, "sparse": False}),
    "ClipByGlobalNorm": ([f32(3), f32(2, 2)], {"max_norm": 1.0}),
    "Trilu": ([f32(2, 3, 4)], {"upper": False, "k": -1}),
    "CumSum": ([f32(2, 3, 4)], {"axis": 1, "exclusive": True, "reverse": True}),
    "ArgMax": ([f32(2, 3, 4)], {"axis": 2, "keepdims": False, "select_last_index": True}),
    "ArgMin": ([f32(2, 3, 4)], {"axis": 0, "keepdims": True, "select_last_index": False}),
    "TopK": ([f32(2, 5, 3)], {"k": 3, "axis": 1, "largest": False, "sorted": True}),
    "GatherND": ([f32(2, 5, 3), np.array([[[4, -1]], [[0, 2]]], np.int64)], {"batch_dims": 1}),
    "ScatterND": ([f32(4, 3, 2), np.array([[3, -1], [0, 1]], np.int64), f32(2, 2)], {"reduction": "add"}),
    "ScatterElements": ([f32(3, 4), np.array([[0, -1], [2, 1]], np.int64), f32(2, 2)],
                        {"axis": 1, "reduction": "max"}),
    "RoiAlign": ([f32(2, 6, 7, 3), np.array([[0.5, 1, 4, 5.5], [-1, 2, 8, 3]], np.float32), np.array([1, 0], np.int64)],
                 {"mode": "max", "output_height": 2, "output_width": 3, "sampling_ratio": 0, "spatial_scale": 0.5,
                  "half_pixel": False, "layout": "NHWC"}),
    "BitCast": ([f32(3, 4)], {"to": "int32"}),
    "Det": ([f32(2, 3, 3)], {}),
    "GridSample": ([f32(2, 5, 6, 3), (RNG.uniform(-1.3, 1.3, (2, 4, 3, 2))).astype(np.float32)],
                   {"mode": "cubic", "padding_mode": "reflection", "align_corners": False, "layout": "NHWC"}),
    "NonMaxSuppression": ([np.array([[[0, 0, 1, 1], [0, 0.2, 1, 1.2], [3, 3, 4, 4]]], np.float32), f32(1, 2, 3)],
                          {"center_point_box": False, "max_output_boxes_per_class": 2, "iou_threshold": 0.5,
                           "score_threshold": 0.25}),
}
for _name in BINARY_OPS:
    SAMPLES[_name] = _binary_sample(_name)
for _name in UNARY_OPS:
    SAMPLES[_name] = _unary_sample(_name)
for _name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSumExp"):
    SAMPLES[_name] = ([f32(2, 3, 4)], {"axes": (0, 2), "keepdims": _name < "ReduceM"})


def types_of(arrays):
    return [None if a is None else TensorType(str(a.dtype), a.shape) for a in arrays]


def test_every_readme_op_has_exactly_one_entry():
    assert readme_ops() == set(OPS)
    assert set(SAMPLES) == set(OPS)


@pytest.mark.parametrize("name", sorted(OPS))
def test_entry_is_complete(name):
    entry: OpDef = OPS[name]
    assert entry.name == name
    for field in ("infer", "reference", "lower", "lift", "flops"):
        assert callable(getattr(entry, field)), field
    assert isinstance(entry.opcode, int)
    assert entry.layout_sensitive == (name in LAYOUT_SENSITIVE)
    assert entry.fusable == (name in FUSABLE)
    assert entry.elementwise == (name in BINARY_OPS | UNARY_OPS | {"Where", "Cast"})


def test_lift_keys_identify_every_written_op():
    seen = {}
    for name, entry in OPS.items():
        if name == "BatchNorm":
            continue
        key = (entry.opcode, entry.lift_key)
        assert key not in seen, f"{name} and {seen[key]} share opcode/lift_key {key}"
        seen[key] = name
    assert OPS["Softmax"].lift_key == 0 and OPS["LogSoftmax"].lift_key == 1
    assert OPS["Gelu"].lift_key == UnaryOp.GELU and OPS["Clip"].lift_key == UnaryOp.CLIP


@pytest.mark.parametrize("name", sorted(OPS))
def test_infer_agrees_with_reference(name):
    inputs, attrs = SAMPLES[name]
    inferred = OPS[name].infer(types_of(inputs), attrs)
    outputs = OPS[name].reference(inputs, attrs)
    assert len(outputs) == len(inferred)
    for t, value in zip(inferred, outputs):
        if OPS[name].rows_set_at_eval:  # the type's leading dim is the most rows the op gives
            assert value.shape[0] <= t.shape[0]
            t = TensorType(t.dtype, (value.shape[0],) + tuple(t.shape[1:]))
        assert (t.dtype, tuple(t.shape)) == (str(value.dtype), value.shape)
    flops = OPS[name].flops(types_of(inputs), inferred, attrs)
    assert isinstance(flops, int) and flops >= 0


def _pack_and_unpack(opcode_union: int, options):
    builder = flatbuffers.Builder(256)
    operator = OperatorT()
    operator.optionsType, operator.options = opcode_union, options
    builder.Finish(operator.Pack(builder))
    read = OperatorT.InitFromObj(Operator.GetRootAs(builder.Output(), 0))
    assert read.optionsType == opcode_union
    return read.options


def _normalise(value):
    """Tuples of ints stay; floats compare as the float32 the file holds."""
    if isinstance(value, (tuple, list)):
        return tuple(_normalise(v) for v in value)
    if isinstance(value, float):
        return float(np.float32(value))
    return value


@pytest.mark.parametrize("name", sorted(set(OPS) - {"BatchNorm"}))
def test_lower_then_lift_round_trips(name):
    entry = OPS[name]
    _, attrs = SAMPLES[name]
    opcode, union, options = entry.lower(attrs)
    assert opcode == entry.opcode
    assert (options is None) == (union == OpOptions.NONE)
    lifted = entry.lift(_pack_and_unpack(union, options) if options is not None else None)
    expected = {k: _normalise(v) for k, v in attrs.items() if k not in IMPLIED_BY_TENSORS}
    assert {k: _normalise(v) for k, v in lifted.items()} == expected
    if options is not None and name not in ("Identity",):
        assert lifted_op(opcode, options) == name


def test_lowering_fills_runtime_fields():
    _, _, conv = OPS["Conv2D"].lower(SAMPLES["Conv2D"][1])
    assert (list(conv.strides), list(conv.dilations), list(conv.pads), conv.groups) == \
        ([2, 1], [1, 2], [1, 0, 2, 1], 2)
    _, _, conv_t = OPS["ConvTranspose2D"].lower(SAMPLES["ConvTranspose2D"][1])
    assert list(conv_t.outputPadding) == [1, 0]
    _, _, default_conv = OPS["Conv2D"].lower({"layout": "NHWC"})
    assert (default_conv.strides, default_conv.dilations, default_conv.pads) == ([1, 1], [1, 1], [0, 0, 0, 0])
    _, _, clip = OPS["Clip"].lower({})
    assert (clip.op, clip.alpha, clip.beta) == (UnaryOp.CLIP, -math.inf, math.inf)
    _, _, relu6 = OPS["Relu6"].lower({})
    assert relu6.op == UnaryOp.RELU6
    assert OPS["Reshape"].lower({"shape": (2,)})[:2] == (OpCode.RESHAPE, OpOptions.NONE)
    assert OPS["Identity"].lower({})[:2] == (OpCode.RESHAPE, OpOptions.NONE)
    assert lifted_op(OpCode.RESHAPE, None) == "Reshape"


@pytest.mark.parametrize("name", sorted(LAYOUT_SENSITIVE - {"BatchNorm"}))
def test_lower_refuses_nchw(name):
    _, attrs = SAMPLES[name]
    with pytest.raises(ValueError, match=f"{name}: layout 'NCHW'"):
        OPS[name].lower(dict(attrs, layout="NCHW"))


def test_batch_norm_is_never_written():
    with pytest.raises(ValueError, match="BatchNorm has no runtime op"):
        OPS["BatchNorm"].lower({"epsilon": 1e-5, "layout": "NHWC"})


def test_fused_activation_reads_alpha_beta_like_the_runtime():
    a, b = f32(3, 4), f32(4)
    for activation, unary_attrs in [(("HardSigmoid", 0.25, 0.375), {"alpha": 0.25, "beta": 0.375}),
                                    (("Clip", -0.5, 0.5), {"min": -0.5, "max": 0.5}),
                                    (("Elu", 0.5, 0.0), {"alpha": 0.5}), (("Tanh", 0.0, 0.0), {})]:
        fused = OPS["Mul"].reference([a, b], {"activation": activation})[0]
        separate = OPS[activation[0]].reference([a * b], unary_attrs)[0]
        np.testing.assert_array_equal(fused, separate)


T = TensorType
BAD_SHAPES = [
    ("Add", [T("float32", (2, 3)), T("float32", (4,))], {}, "do not broadcast"),
    ("Add", [T("float32", (2, 3)), T("int32", (3,))], {}, "different dtypes"),
    ("And", [T("float32", (2,)), T("bool", (2,))], {}, "dtype float32"),
    ("Relu", [T("float32", (2,)), T("float32", (2,))], {}, "takes 1 inputs"),
    ("Conv2D", [T("float32", (1, 3, 8, 8)), T("float32", (4, 2, 3, 3))], {}, "do not agree"),
    ("Conv2D", [T("float32", (1, 3, 2, 2)), T("float32", (4, 3, 5, 5))], {}, "larger than the padded input"),
    ("Conv2D", [T("float32", (1, 3, 8, 8)), T("float32", (4, 3, 3, 3)), T("float32", (5,))], {}, "bias shape"),
    ("Conv2D", [T("float32", (1, 3, 8, 8)), None], {}, "input 1 is required"),
    ("ConvTranspose2D", [T("float32", (1, 3, 4, 4)), T("float32", (4, 2, 3, 3))], {}, "do not agree"),
    ("FullyConnected", [T("float32", (2, 5)), T("float32", (4, 6))], {}, "do not agree"),
    ("BatchMatMul", [T("float32", (2, 3, 4)), T("float32", (2, 5, 6))], {}, "inner dims differ"),
    ("BatchMatMul", [T("float32", (2, 3, 4)), T("float32", (3, 4, 6))], {}, "do not broadcast"),
    ("Softmax", [T("float32", (2, 3))], {"axis": -1}, "non-negative"),
    ("LayerNorm", [T("float32", (2, 3, 4)), T("float32", (5,))], {"axis": 2}, "scale shape"),
    ("MaxPool2D", [T("float32", (1, 3, 8))], {"kernel": (2, 2)}, "rank 4"),
    ("MaxPool2D", [T("float32", (1, 3, 8, 8))], {"kernel": (2, 2), "pads": (2, 0, 0, 0)}, "smaller than the kernel"),
    ("ReduceSum", [T("float32", (2, 3))], {"axes": (1, 0)}, "sorted"),
    ("ReduceSum", [T("float32", (2, 3))], {"axes": ()}, "non-empty"),
    ("Reshape", [T("float32", (2, 3))], {"shape": (4, 2)}, "cannot reshape"),
    ("Reshape", [T("float32", (2, 3))], {"shape": (-1, 2)}, "static non-negative"),
    ("Transpose", [T("float32", (2, 3))], {"perm": (0, 0)}, "not a permutation"),
    ("Concat", [T("float32", (2, 3)), T("float32", (3, 3))], {"axis": 1}, "off axis 1"),
    ("Split", [T("float32", (5, 3))], {"axis": 0, "sizes": (2, 2)}, "add up"),
    ("Slice", [T("float32", (5, 3))], {"starts": (0,), "ends": (1,), "steps": (1,)}, "one entry per dim"),
    ("Slice", [T("float32", (5,))], {"starts": (0,), "ends": (1,), "steps": (0,)}, "contain 0"),
    ("Gather", [T("float32", (5, 3)), T("float32", (2,))], {"axis": 0}, "indices have dtype"),
    ("GatherElements", [T("float32", (5, 3)), T("int64", (2,))], {"axis": 0}, "rank"),
    ("Pad", [T("float32", (5, 3))], {"mode": "constant", "pads": (0, 0, -6, 0)}, "below zero"),
    ("Pad", [T("float32", (2, 3))], {"mode": "wrap", "pads": (0, 0, 0, 0)}, "mode 'wrap'"),
    ("Resize", [T("float32", (1, 3))], {"scales": (1.0,)}, "one positive entry per dim"),
    ("Cast", [T("float32", (1, 3))], {"to": "complex64"}, "attribute 'to'"),
    ("Where", [T("float32", (3,)), T("float32", (3,)), T("float32", (3,))], {}, "condition has dtype"),
    ("BroadcastTo", [T("float32", (3,))], {"shape": (2, 4)}, "do not broadcast"),
    ("LSTM", [T("float32", (5, 2, 4)), T("float32", (1, 12, 4)), T("float32", (1, 12, 3))],
     {"hidden_size": 4}, "input 1 has shape"),
    ("GRU", [T("float32", (5, 2, 4)), T("float32", (1, 9, 4)), T("float32", (1, 9, 3)), None,
             T("int32", (2,))], {"hidden_size": 3}, "sequence_lens"),
]


@pytest.mark.parametrize("name,types,attrs,message", BAD_SHAPES, ids=[f"{c[0]}-{c[3]}" for c in BAD_SHAPES])
def test_infer_refuses_bad_shapes(name, types, attrs, message):
    with pytest.raises(ValueError, match=f"^{name}: .*{re.escape(message)}"):
        OPS[name].infer(types, attrs)


def test_symbolic_batch_dims_pass_through():
    x = T("float32", ("batch", 3, 8, 8))
    (y,) = OPS["Conv2D"].infer([x, T("float32", (4, 3, 3, 3))], {"pads": (1, 1, 1, 1)})
    assert y.shape == ("batch", 4, 8, 8)
    (y,) = OPS["Add"].infer([T("float32", ("batch", 1)), T("float32", (5,))], {})
    assert y.shape == ("batch", 5)
    (y,) = OPS["FullyConnected"].infer([T("float32", ("n", 7)), T("float32", (2, 7))], {})
    assert y.shape == ("n", 2)


def test_flops_counts_multiply_adds_twice():
    x, w = T("float32", (1, 4, 8, 8)), T("float32", (6, 2, 3, 3))
    attrs = {"groups": 2, "pads": (1, 1, 1, 1)}
    out = OPS["Conv2D"].infer([x, w], attrs)
    assert OPS["Conv2D"].flops([x, w], out, attrs) == 2 * 6 * 8 * 8 * 2 * 3 * 3
    a, b = T("float32", (3, 5, 7)), T("float32", (7, 2))
    out = OPS["BatchMatMul"].infer([a, b], {})
    assert OPS["BatchMatMul"].flops([a, b], out, {}) == 2 * 3 * 5 * 7 * 2
    out = OPS["Add"].infer([a, T("float32", (7,))], {})
    assert OPS["Add"].flops([a, T("float32", (7,))], out, {}) == 3 * 5 * 7

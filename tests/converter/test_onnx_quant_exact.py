"""Quantization ops in models with integer boundaries: exact integer arithmetic
(converter.importers.onnx_quant_exact), checked bit for bit against the ONNX reference
implementation (onnx.reference) on the runtime and on the converter's reference executor.

The cases aim at the places where a near-miss would show: halves in QuantizeLinear (ties to even),
products whose float32 rounding lands on a half-integer the exact product is not on, sums big
enough that a Winograd transform would round them, and the refusals where float32 cannot be exact.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import converter
from converter import reference
from converter.errors import UnsupportedOpsError
from converter.importers.onnx import load_onnx
from tests.fixtures.harness import run_edge

OPSET = 21


def _model(node, inputs, outputs, initializers=(), opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph([node], "exact", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def check_exact(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The runtime and the IR reference give the ONNX reference's outputs exactly, dtype included."""
    expected = ReferenceEvaluator(model).run(None, feeds)
    result = converter.convert(model)
    assert not result.graph.quantization, "took the int8 (quantized-model) path"
    runtime = run_edge(result.data, feeds)
    ours = reference.run(result.graph, feeds)
    for output, want in zip(model.graph.output, expected):
        for what, got in (("runtime", runtime[output.name]), ("reference", ours[output.name])):
            got = np.asarray(got)
            assert got.shape == want.shape, f"{what} {output.name}: shape {got.shape}, expected {want.shape}"
            assert got.dtype == want.dtype, f"{what} {output.name}: dtype {got.dtype}, expected {want.dtype}"
            differ = np.flatnonzero(~_same_values(got.ravel(), want.ravel()))
            assert differ.size == 0, (f"{what} {output.name}: {differ.size}/{want.size} differ, first at "
                                      f"{differ[0]}: {got.ravel()[differ[0]]} vs {want.ravel()[differ[0]]}")
    return runtime


def _same_values(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Elementwise: equal values of the same sign (so -0 is not +0), or both NaN."""
    if want.dtype.kind not in "fV" and "float" not in want.dtype.name:
        return got == want
    wide_got, wide_want = got.astype(np.float32), want.astype(np.float32)
    both_nan = np.isnan(wide_got) & np.isnan(wide_want)
    return both_nan | ((wide_got == wide_want) & (np.signbit(wide_got) == np.signbit(wide_want)))


def test_quantize_linear_rounds_halves_to_even_and_saturates():
    scale = np.float32(0.5)
    # x / scale = k + 0.5 for every k in -300..300: every tie, both parities, and both saturations
    x = ((np.arange(-300, 301, dtype=np.float32) + 0.5) * scale).reshape(1, -1)
    for elem, zero in ((TensorProto.UINT8, np.uint8(3)), (TensorProto.INT8, np.int8(-2))):
        model = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                       [("x", TensorProto.FLOAT, list(x.shape))], [("y", elem, list(x.shape))],
                       {"s": scale, "z": zero})
        y = check_exact(model, {"x": x})["y"]
        assert y.min() == np.iinfo(zero.dtype).min and y.max() == np.iinfo(zero.dtype).max


def test_quantize_linear_divides_float16_in_float16():
    scale = np.float16(0.0123)
    x = (np.arange(-2000, 2000, dtype=np.float16) * np.float16(0.00037)).reshape(1, -1)
    model = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                   [("x", TensorProto.FLOAT16, list(x.shape))], [("y", TensorProto.INT8, list(x.shape))],
                   {"s": scale, "z": np.int8(0)})
    check_exact(model, {"x": x})


def test_quantize_linear_per_axis_and_blocked_int16():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 300, (2, 6, 3)).astype(np.float32)
    per_axis = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1),
                      [("x", TensorProto.FLOAT, [2, 6, 3])], [("y", TensorProto.INT16, [2, 6, 3])],
                      {"s": rng.uniform(0.01, 0.1, 6).astype(np.float32),
                       "z": rng.integers(-50, 50, 6).astype(np.int16)})
    check_exact(per_axis, {"x": x})
    blocked = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1, block_size=4),
                     [("x", TensorProto.FLOAT, [2, 6, 3])], [("y", TensorProto.UINT16, [2, 6, 3])],
                     {"s": rng.uniform(0.001, 0.01, (2, 2, 3)).astype(np.float32),
                      "z": rng.integers(0, 60000, (2, 2, 3)).astype(np.uint16)})
    check_exact(blocked, {"x": x})


def test_dequantize_linear_per_axis_from_an_integer_input():
    rng = np.random.default_rng(2)
    x = rng.integers(-128, 128, (3, 4, 5)).astype(np.int8)
    model = _model(helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], axis=1),
                   [("x", TensorProto.INT8, [3, 4, 5])], [("y", TensorProto.FLOAT, [3, 4, 5])],
                   {"s": rng.uniform(0.01, 1, 4).astype(np.float32), "z": np.array([0, -3, 7, 127], np.int8)})
    check_exact(model, {"x": x})


@pytest.mark.parametrize("case", ["mixed", "positive", "constant"])
def test_dynamic_quantize_linear(case):
    rng = np.random.default_rng(3)
    x = {"mixed": rng.normal(0, 3, (4, 7)), "positive": rng.uniform(1, 9, (4, 7)),
         "constant": np.zeros((4, 7))}[case].astype(np.float32)
    model = _model(helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"]),
                   [("x", TensorProto.FLOAT, [4, 7])],
                   [("y", TensorProto.UINT8, [4, 7]), ("s", TensorProto.FLOAT, []), ("z", TensorProto.UINT8, [])])
    check_exact(model, {"x": x})


def test_matmul_integer_with_per_column_zero_points():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (2, 3, 40)).astype(np.uint8)
    b = rng.integers(-128, 128, (40, 5)).astype(np.int8)
    model = _model(helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]),
                   [("a", TensorProto.UINT8, [2, 3, 40]), ("b", TensorProto.INT8, [40, 5])],
                   [("y", TensorProto.INT32, [2, 3, 5])],
                   {"az": np.uint8(201), "bz": np.array([0, -128, 127, 5, -1], np.int8)})
    check_exact(model, {"a": a, "b": b})


def test_matmul_integer_with_per_row_zero_points():
    """A 1-D a_zero_point is per row of a (the ONNX definition; onnx.reference subtracts it along
    the last axis instead, so NumPy is the oracle here)."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (3, 40)).astype(np.uint8)
    b = rng.integers(0, 256, (40, 5)).astype(np.uint8)
    zero = np.array([0, 128, 255], np.uint8)
    model = _model(helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"]),
                   [("a", TensorProto.UINT8, [3, 40]), ("b", TensorProto.UINT8, [40, 5])],
                   [("y", TensorProto.INT32, [3, 5])], {"az": zero})
    result = converter.convert(model)
    want = (a.astype(np.int64) - zero[:, None]) @ b.astype(np.int64)
    for got in (run_edge(result.data, {"a": a, "b": b})["y"], reference.run(result.graph, {"a": a, "b": b})["y"]):
        assert got.dtype == np.int32 and np.array_equal(got, want)


def test_conv_integer_of_a_winograd_shape_is_exact():
    """3x3, stride 1, 32 channels: the float convolution would take the Winograd path, whose
    transforms round sums this large."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 32, 8, 8)).astype(np.uint8)
    w = rng.integers(-128, 128, (32, 32, 3, 3)).astype(np.int8)
    model = _model(helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1]),
                   [("x", TensorProto.UINT8, [1, 32, 8, 8])], [("y", TensorProto.INT32, [1, 32, 8, 8])],
                   {"w": w, "xz": np.uint8(100)})
    y = check_exact(model, {"x": x})["y"]
    assert np.abs(y).max() > 2 ** 18


def test_conv_integer_strided_dilated_grouped():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (2, 4, 9, 10)).astype(np.int8)
    w = rng.integers(0, 256, (6, 2, 2, 3)).astype(np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "", "wz"], ["y"], strides=[2, 1], dilations=[2, 2],
                            group=2, pads=[1, 0, 0, 2])
    model = _model(node, [("x", TensorProto.INT8, [2, 4, 9, 10])], [("y", TensorProto.INT32, [2, 6, 5, 6])],
                   {"w": w, "wz": rng.integers(0, 256, 6).astype(np.uint8)})
    check_exact(model, {"x": x})


def _tie_case() -> tuple[np.float32, int]:
    """(multiplier, integer) whose float32 product is a half-integer rounding (to even) the other way
    from the exact product, inside int8's range."""
    multipliers = np.random.default_rng(7).uniform(0.01, 1, 4000).astype(np.float32)
    integers = np.arange(1, 3000)
    rounded = integers[None, :].astype(np.float32) * multipliers[:, None]
    exact = integers[None, :] * multipliers[:, None].astype(np.float64)
    found = np.argwhere((rounded % 1 == 0.5) & (np.rint(exact) != np.rint(rounded)) & (rounded < 120))
    row, column = found[0]
    return multipliers[row], int(integers[column])


def test_qlinear_matmul_rounds_the_exact_product():
    m, acc = _tie_case()
    k = (acc + 126) // 127
    a = np.full((1, k), 127, np.int8)
    a[0, -1] -= 127 * k - acc
    b = np.ones((k, 3), np.int8)
    b[:, 1] = -1
    b[:, 2] = 0
    model = _model(helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
                   [("a", TensorProto.INT8, [1, k])], [("y", TensorProto.INT8, [1, 3])],
                   {"as": m, "az": np.int8(0), "b": b, "bs": np.float32(1), "bz": np.int8(0), "ys": np.float32(1),
                    "yz": np.int8(1)})
    check_exact(model, {"a": a})


@pytest.mark.parametrize("scale_type", [np.float32, np.float16])
def test_qlinear_matmul_batched(scale_type):
    rng = np.random.default_rng(8)
    a = rng.integers(0, 256, (2, 4, 6)).astype(np.uint8)
    b = rng.integers(0, 256, (2, 6, 3)).astype(np.uint8)
    model = _model(helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
                   [("a", TensorProto.UINT8, [2, 4, 6]), ("b", TensorProto.UINT8, [2, 6, 3])],
                   [("y", TensorProto.UINT8, [2, 4, 3])],
                   {"as": scale_type(0.0131), "az": np.uint8(113), "bs": scale_type(0.00721), "bz": np.uint8(98),
                    "ys": scale_type(0.0195), "yz": np.uint8(121)})
    check_exact(model, {"a": a, "b": b})


def test_qlinear_conv_per_channel_with_bias():
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, (1, 3, 7, 7)).astype(np.uint8)
    inputs = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"]
    model = _model(helper.make_node("QLinearConv", inputs, ["y"], pads=[1, 1, 1, 1], strides=[2, 2]),
                   [("x", TensorProto.UINT8, [1, 3, 7, 7])], [("y", TensorProto.INT8, [1, 4, 4, 4])],
                   {"xs": np.float32(0.02), "xz": np.uint8(128), "w": rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8),
                    "ws": rng.uniform(0.001, 0.01, 4).astype(np.float32), "wz": np.zeros(4, np.int8),
                    "ys": np.float32(0.05), "yz": np.int8(-5), "bias": rng.integers(-2000, 2000, 4).astype(np.int32)})
    check_exact(model, {"x": x})


def test_integer_sums_past_2_24_are_summed_in_int32():
    """Sums float32 cannot hold: each slice of the inner dim (each kernel position) is exact in
    float32, and the slices add up in int32."""
    k = 300  # 300 * 255 * 255 > 2^24
    a = np.full((2, k), 255, np.uint8)
    a[1] = np.random.default_rng(12).integers(0, 256, k)
    b = np.full((k, 2), 255, np.uint8)
    model = _model(helper.make_node("MatMulInteger", ["a", "b"], ["y"]),
                   [("a", TensorProto.UINT8, [2, k]), ("b", TensorProto.UINT8, [k, 2])],
                   [("y", TensorProto.INT32, [2, 2])])
    assert check_exact(model, {"a": a, "b": b})["y"].max() > 2 ** 24
    rng = np.random.default_rng(13)
    x = rng.integers(200, 256, (1, 64, 5, 5)).astype(np.uint8)
    conv = _model(helper.make_node("ConvInteger", ["x", "w"], ["y"]),
                  [("x", TensorProto.UINT8, [1, 64, 5, 5])], [("y", TensorProto.INT32, [1, 2, 3, 3])],
                  {"w": rng.integers(200, 256, (2, 64, 3, 3)).astype(np.uint8)})
    assert check_exact(conv, {"x": x})["y"].max() > 2 ** 24


def test_requantized_products_past_float32s_exact_range_are_refused():
    k = 300
    model = _model(helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"]),
                   [("a", TensorProto.UINT8, [2, k]), ("b", TensorProto.UINT8, [k, 2])],
                   [("y", TensorProto.UINT8, [2, 2])],
                   {"as": np.float32(1), "az": np.uint8(0), "bs": np.float32(1), "bz": np.uint8(0),
                    "ys": np.float32(1), "yz": np.uint8(0)})
    with pytest.raises(UnsupportedOpsError, match=r"QLinearMatMul \(the integer product can reach \d+, past 2\^24"):
        load_onnx(model)


# Every value class a narrow float cast can meet: ties between neighbours, the largest finite
# values and past them, subnormals, signed zeros, infinities and NaN.
_EDGE_FLOATS = np.array([0.0, -0.0, 0.25, 0.75, 1.0625, 1.1875, 2.5, 3.5, 5.0, 6.0, 7.0, 100.0, 448.0, 464.0,
                         480.0, 57344.0, 61440.0, 1e6, -1e6, 2.0 ** -9, 2.0 ** -10, 3 * 2.0 ** -10, 2.0 ** -17,
                         np.inf, -np.inf, np.nan, -3.25, -0.125], np.float32)
_FLOAT_QUANTIZED = [TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
                    TensorProto.FLOAT8E5M2FNUZ, TensorProto.FLOAT4E2M1]


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("elem", _FLOAT_QUANTIZED, ids=onnx.TensorProto.DataType.Name)
def test_quantize_linear_to_float8_and_float4(elem, saturate):
    """x / scale rounded to the float type (ties to even), saturating or not; the zero point as
    ONNX's reference applies it (a float4 one added, so -0 becomes +0)."""
    x = np.concatenate([_EDGE_FLOATS, -_EDGE_FLOATS]).reshape(2, -1)
    scale = np.array([0.5, 1.0], np.float32)
    zero = numpy_helper.from_array(np.zeros(2, helper.tensor_dtype_to_np_dtype(elem)), "z")
    model = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0, saturate=saturate),
                   [("x", TensorProto.FLOAT, list(x.shape)), ("z", elem, [2])], [("y", elem, list(x.shape))],
                   {"s": scale}, opset=25)
    check_exact(model, {"x": x, "z": numpy_helper.to_array(zero)})


@pytest.mark.parametrize("elem", _FLOAT_QUANTIZED, ids=onnx.TensorProto.DataType.Name)
def test_dequantize_linear_from_float8_and_float4_blocked(elem):
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    x = np.arange(256, dtype=np.uint8).view(dtype)[:240].reshape(4, 60) if dtype.itemsize == 1 else None
    if elem == TensorProto.FLOAT4E2M1:
        x = np.tile(np.arange(16, dtype=np.uint8), 15).view(dtype).reshape(4, 60)
    scale = np.random.default_rng(12).uniform(0.1, 3, (4, 4)).astype(np.float16)
    model = _model(helper.make_node("DequantizeLinear", ["x", "s"], ["y"], axis=1, block_size=16),
                   [("x", elem, [4, 60])], [("y", TensorProto.FLOAT16, [4, 60])], {"s": scale}, opset=25)
    check_exact(model, {"x": x})
    # Inside the graph too the float16 output holds float16 values (computed in float32): the
    # product rounded before the next op reads it.
    graph = model.graph
    graph.node[0].output[0] = "d"
    graph.node.append(helper.make_node("Mul", ["d", "k"], ["y"]))
    graph.initializer.append(numpy_helper.from_array(np.float16(1.0009766), "k"))
    check_exact(model, {"x": x})


@pytest.mark.parametrize("elem", [TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2],
                         ids=onnx.TensorProto.DataType.Name)
def test_sub_byte_integers_round_trip(elem):
    """QuantizeLinear to a 4- or 2-bit integer (ties to even, saturated to its range) and
    DequantizeLinear back, per axis, with the zero point a graph input."""
    low, high = (-8, 7) if elem == TensorProto.INT4 else (0, 15) if elem == TensorProto.UINT4 else \
        (-2, 1) if elem == TensorProto.INT2 else (0, 3)
    x = (np.arange(2 * (high - low + 6), dtype=np.float32) / 2 + low - 3).reshape(1, -1)
    x = np.concatenate([x, x * 3])
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    zero = np.array([0, high // 2], dtype)
    quantize = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=0),
                      [("x", TensorProto.FLOAT, list(x.shape)), ("z", elem, [2])], [("y", elem, list(x.shape))],
                      {"s": np.array([1.0, 2.0], np.float32)}, opset=25)
    y = check_exact(quantize, {"x": x, "z": zero})["y"]
    assert y.astype(np.int32).min() == low and y.astype(np.int32).max() == high
    dequantize = _model(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=0),
                        [("q", elem, list(x.shape)), ("z", elem, [2])], [("y", TensorProto.FLOAT, list(x.shape))],
                        {"s": np.array([0.5, 3.0], np.float32)}, opset=25)
    check_exact(dequantize, {"q": y, "z": zero})


def test_nonzero_float8_zero_points_are_refused():
    """ONNX's formula adds a float8 zero point, its reference implementation leaves it out: a
    nonzero constant one has no single meaning, so the node is refused naming it."""
    zero = np.array([1.0], ml_dtypes.float8_e4m3fn)
    model = _model(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                   [("x", TensorProto.FLOAT, [4])], [("y", TensorProto.FLOAT8E4M3FN, [4])],
                   {"s": np.float32(1), "z": zero}, opset=25)
    with pytest.raises(UnsupportedOpsError, match=r"QuantizeLinear \(nonzero float8_e4m3fn zero point"):
        load_onnx(model)
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.zeros(1, ml_dtypes.float8_e4m3fn), "z"))
    check_exact(model, {"x": np.array([0.3, -7, 500, -0.0], np.float32)})


def test_float_boundaries_keep_the_quantized_model_path():
    """The same Q -> DQ pair: with float boundaries it is a quantized float model (int8 tensor with
    params); with an integer output it is integer arithmetic."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    init = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])]
    float_model = helper.make_model(helper.make_graph(
        nodes, "g", x, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], init),
        opset_imports=[helper.make_opsetid("", OPSET)])
    graph = load_onnx(float_model)
    assert [n.op for n in graph.nodes] == ["Quantize", "Dequantize"] and graph.quantization
    integer_model = helper.make_model(helper.make_graph(
        nodes, "g", x, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
                        helper.make_tensor_value_info("q", TensorProto.INT8, [4])], init),
        opset_imports=[helper.make_opsetid("", OPSET)])
    graph = load_onnx(integer_model)
    assert not graph.quantization and "Quantize" not in {n.op for n in graph.nodes}
    check_exact(integer_model, {"x": np.linspace(-20, 20, 4).astype(np.float32)})


# ---------------------------------------------------------------- inside quantized float models

def _float_model(nodes, x_shape, y_shape, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def test_16_bit_qdq_in_a_float_model_is_exact():
    """int16 Q -> Reshape -> DQ between float boundaries: beyond the int8 path, lowered exactly."""
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("Reshape", ["q", "shape"], ["r"]),
             helper.make_node("DequantizeLinear", ["r", "s", "z"], ["y"])]
    model = _float_model(nodes, [2, 6], [3, 4], {"s": np.float32(0.001), "z": np.int16(-7),
                                                 "shape": np.array([3, 4], np.int64)})
    x = np.random.default_rng(10).normal(0, 20, (2, 6)).astype(np.float32)
    check_exact(model, {"x": x})


def test_blocked_weights_of_a_float_model_fold_exactly():
    rng = np.random.default_rng(11)
    w = rng.integers(0, 256, (8, 3)).astype(np.uint8)
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0, block_size=4),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    model = _float_model(nodes, [2, 8], [2, 3], {"w": w, "ws": rng.uniform(0.01, 0.1, (2, 3)).astype(np.float32),
                                                 "wz": rng.integers(0, 256, (2, 3)).astype(np.uint8)})
    graph = load_onnx(model)
    assert not graph.quantization and "Dequantize" not in {n.op for n in graph.nodes}
    folded = next(graph.constants[i] for n in graph.nodes for i in n.inputs if i in graph.constants)
    want = ReferenceEvaluator(helper.make_model(helper.make_graph(
        nodes[:1], "w", [], [helper.make_tensor_value_info("wf", TensorProto.FLOAT, [8, 3])], model.graph.initializer),
        opset_imports=[helper.make_opsetid("", OPSET)])).run(None, {})[0]
    assert np.array_equal(folded, want) or np.array_equal(folded, want.T)  # FullyConnected takes w[N, K]


@pytest.mark.parametrize("dtype", [ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.float4_e2m1fn,
                                   ml_dtypes.int4, ml_dtypes.uint4])
def test_narrow_weights_of_a_float_model_keep_their_values(dtype):
    """A float8, float4 or 4-bit weight dequantized in a float model: beyond the int8 path, its
    values (fractions included) are kept, not truncated to integers."""
    rng = np.random.default_rng(13)
    values = np.array([-3.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.0, 3.0], np.float32)
    if np.dtype(dtype).name.startswith(("int", "uint")):
        values = np.arange(8, dtype=np.float32) - (4 if np.dtype(dtype).name == "int4" else 0)
    w = rng.choice(values, (4, 3)).astype(dtype)
    nodes = [helper.make_node("DequantizeLinear", ["w", "ws"], ["wf"], axis=1),
             helper.make_node("MatMul", ["x", "wf"], ["y"])]
    model = _float_model(nodes, [2, 4], [2, 3], {"w": w, "ws": np.array([0.5, 2.0, 0.25], np.float32)})
    check_exact(model, {"x": rng.integers(-4, 5, (2, 4)).astype(np.float32)})

"""float8, float4, int4/uint4 and int2/uint2 at an ONNX model's boundary: the runtime's CAST decodes and
encodes them (cruntime/src/narrow.c), checked code for code against ml_dtypes (and, for float8_e8m0fnu's
rounding modes, ONNX's reference): every code decoded, every grid value, the midpoints between
neighbours and the floats either side of them encoded, with and without saturation; packed tensors
of lengths that end inside a byte; a Cast inside the graph rounding to the narrow grid; and the
runtime refusing a packed buffer of the wrong size."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
from edge.errors import EdgeError
from tests.fixtures.harness import run_edge

FLOATS = {  # ONNX type, ml_dtypes type, code bits
    "float8_e4m3fn": (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn, 8),
    "float8_e4m3fnuz": (TensorProto.FLOAT8E4M3FNUZ, ml_dtypes.float8_e4m3fnuz, 8),
    "float8_e5m2": (TensorProto.FLOAT8E5M2, ml_dtypes.float8_e5m2, 8),
    "float8_e5m2fnuz": (TensorProto.FLOAT8E5M2FNUZ, ml_dtypes.float8_e5m2fnuz, 8),
    "float4_e2m1fn": (TensorProto.FLOAT4E2M1, ml_dtypes.float4_e2m1fn, 4),
}
INTEGERS = {
    "int4": (TensorProto.INT4, ml_dtypes.int4, 4),
    "uint4": (TensorProto.UINT4, ml_dtypes.uint4, 4),
    "int2": (TensorProto.INT2, ml_dtypes.int2, 2),
    "uint2": (TensorProto.UINT2, ml_dtypes.uint2, 2),
}
SATURATING = ("float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")


def _cast_model(elem_in: int, elem_out: int, n: int, opset: int = 25, **attrs):
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["y"], to=elem_out, **attrs)], "cast",
                              [helper.make_tensor_value_info("x", elem_in, [n])],
                              [helper.make_tensor_value_info("y", elem_out, [n])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _cast(values: np.ndarray, elem_in: int, elem_out: int, num_threads: int = 1, **attrs) -> np.ndarray:
    data = converter.convert(_cast_model(elem_in, elem_out, values.size, **attrs)).data
    return run_edge(data, {"x": values}, num_threads=num_threads)["y"]


def _all_codes(ml_type, bits: int) -> np.ndarray:
    return np.arange(1 << bits, dtype=np.uint8).view(ml_type)


def _same_floats(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal values with equal signs (zeros included) and NaN in the same places."""
    actual, expected = actual.astype(np.float32), expected.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_array_equal(actual[finite], expected[finite])
    np.testing.assert_array_equal(np.signbit(actual[finite]), np.signbit(expected[finite]))


def _encoding_probes(ml_type, bits: int) -> np.ndarray:
    """Every finite grid value, the midpoints between neighbours (ties) and the float32s just either
    side of each, values past the largest finite one, infinities, NaNs of both signs, zeros."""
    grid = np.unique(_all_codes(ml_type, bits).astype(np.float32))
    grid = grid[np.isfinite(grid)]
    mids = (grid[:-1].astype(np.float64) + grid[1:]) / 2
    mids = mids.astype(np.float32)
    top = np.float32(ml_dtypes.finfo(ml_type).max)
    extra = np.array([top * 1.03, top * 1.2, top * 4, 1e30, np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0,
                      1e-30, -1e-30], np.float32)
    probes = np.concatenate([grid, mids, np.nextafter(mids, np.float32(np.inf)),
                             np.nextafter(mids, np.float32(-np.inf)), extra])
    return np.concatenate([probes, -probes[:-4]]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(FLOATS))
def test_every_code_decodes_as_ml_dtypes_does(name):
    elem, ml_type, bits = FLOATS[name]
    codes = _all_codes(ml_type, bits)
    _same_floats(_cast(codes, elem, TensorProto.FLOAT), codes.astype(np.float32))
    np.testing.assert_array_equal(_cast(codes, elem, TensorProto.FLOAT16), codes.astype(np.float16))


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("name", sorted(FLOATS))
def test_encoding_rounds_to_nearest_even_as_ml_dtypes(name, saturate):
    elem, ml_type, bits = FLOATS[name]
    probes = _encoding_probes(ml_type, bits)
    with np.errstate(all="ignore"):
        if saturate and name in SATURATING:  # ONNX: clamp to the largest finite value, then round
            info = ml_dtypes.finfo(ml_type)
            expected = np.clip(probes, np.float32(info.min), np.float32(info.max)).astype(ml_type)
        else:
            expected = probes.astype(ml_type)
    attrs = {"saturate": saturate} if name in SATURATING else {}
    ours = _cast(probes, TensorProto.FLOAT, elem, **attrs)
    assert ours.dtype == np.dtype(ml_type)
    mismatched = np.flatnonzero(ours.view(np.uint8) != expected.view(np.uint8))
    assert mismatched.size == 0, [(probes[i], ours.view(np.uint8)[i], expected.view(np.uint8)[i])
                                  for i in mismatched[:8]]


@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("saturate", [1, 0])
def test_e8m0_follows_onnx_rounding_modes(round_mode, saturate):
    from onnx.numpy_helper import to_float8e8m0

    codes = _all_codes(ml_dtypes.float8_e8m0fnu, 8)
    _same_floats(_cast(codes, TensorProto.FLOAT8E8M0, TensorProto.FLOAT), codes.astype(np.float32))
    powers = codes.astype(np.float32)[np.isfinite(codes.astype(np.float32))]
    probes = np.concatenate([powers, powers * 1.25, powers * 1.5, powers * 1.75,
                             np.nextafter(powers * 1.5, np.float32(0)), np.float32([3.4e38, np.inf, np.nan, 0.0])])
    probes = probes[np.isfinite(probes) | np.isnan(probes) | np.isinf(probes)].astype(np.float32)
    ours = _cast(probes, TensorProto.FLOAT, TensorProto.FLOAT8E8M0, saturate=saturate, round_mode=round_mode)
    expected = to_float8e8m0(probes, bool(saturate), round_mode)
    np.testing.assert_array_equal(ours.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("n", [1, 5, 6, 7, 33])
@pytest.mark.parametrize("name", sorted(INTEGERS) + ["float4_e2m1fn"])
def test_packed_tensors_of_any_length(name, n):
    elem, ml_type, bits = {**INTEGERS, **FLOATS}[name]
    rng = np.random.default_rng(n)
    codes = rng.integers(0, 1 << bits, n).astype(np.uint8).view(ml_type)
    if name in INTEGERS:
        np.testing.assert_array_equal(_cast(codes, elem, TensorProto.INT32), codes.astype(np.int32))
    else:
        _same_floats(_cast(codes, elem, TensorProto.FLOAT), codes.astype(np.float32))
    floats = rng.uniform(-20, 20, n).astype(np.float32)
    floats[rng.integers(0, n, max(n // 4, 1))] = np.nan
    with np.errstate(all="ignore"):
        expected = floats.astype(ml_type)
    ours = _cast(floats, TensorProto.FLOAT, elem)
    np.testing.assert_array_equal(ours.view(np.uint8) & ((1 << bits) - 1), expected.view(np.uint8) & ((1 << bits) - 1))


@pytest.mark.parametrize("name", sorted(INTEGERS))
def test_packed_integers_from_floats_and_wrapping_integers(name):
    elem, ml_type, bits = INTEGERS[name]
    # float: truncation toward zero; outside the range (undefined in ONNX) and NaN give 0, as ml_dtypes
    floats = np.concatenate([np.arange(-12, 20, 0.25), [np.nan, np.inf, -np.inf, 1e10, -1e10]]).astype(np.float32)
    with np.errstate(all="ignore"):
        expected = floats.astype(ml_type)
    np.testing.assert_array_equal(_cast(floats, TensorProto.FLOAT, elem).astype(np.int32), expected.astype(np.int32))
    # integers wrap to the low bits (ONNX: discard the higher bits, two's complement)
    ints = np.arange(-40, 40, dtype=np.int32)
    wrapped = ints & ((1 << bits) - 1)
    if name.startswith("int"):
        wrapped = np.where(wrapped >= 1 << (bits - 1), wrapped - (1 << bits), wrapped)
    np.testing.assert_array_equal(_cast(ints, TensorProto.INT32, elem).astype(np.int32), wrapped)


def test_threads_split_packed_tensors_on_byte_boundaries():
    # Large enough that CAST runs on both threads; neighbouring elements share bytes.
    n = 200_003
    values = np.random.default_rng(1).integers(-2, 2, n).astype(np.float32)
    for elem, ml_type in ((TensorProto.INT2, ml_dtypes.int2), (TensorProto.INT4, ml_dtypes.int4)):
        ours = _cast(values, TensorProto.FLOAT, elem, num_threads=2)
        np.testing.assert_array_equal(ours.astype(np.int32), values.astype(np.int32))
        back = _cast(values.astype(ml_type), elem, TensorProto.FLOAT, num_threads=2)
        np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"])
def test_cast_inside_the_graph_rounds_to_the_narrow_grid(name):
    elem, ml_type, _ = FLOATS[name]
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
             helper.make_node("Cast", ["sq"], ["narrow"], to=elem, saturate=0),
             helper.make_node("Cast", ["narrow"], ["back"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["back", "x"], ["y"])]
    graph = helper.make_graph(nodes, "round", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    x = np.random.default_rng(2).uniform(-3, 3, 64).astype(np.float32)
    y = run_edge(converter.convert(model).data, {"x": x})["y"]
    with np.errstate(all="ignore"):
        expected = (x * x).astype(ml_type).astype(np.float32) + x
    np.testing.assert_array_equal(y, expected)
    assert not np.array_equal(y, x * x + x)  # the rounding is visible at this spread


def test_narrow_constants_convert_exactly():
    values = np.array([-8, -1, 0, 3, 7], np.int8).astype(ml_dtypes.int4)
    nodes = [helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT), helper.make_node("Add", ["cf", "x"], ["y"])]
    graph = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])],
                              initializer=[numpy_helper.from_array(values, "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    y = run_edge(converter.convert(model).data, {"x": np.zeros(5, np.float32)})["y"]
    np.testing.assert_array_equal(y, values.astype(np.float32))


def test_packed_buffers_of_the_wrong_size_are_refused():
    import edge
    from cruntime.binding import ffi, load_library

    data = converter.convert(_cast_model(TensorProto.INT4, TensorProto.FLOAT, 5)).data
    interpreter = edge.Interpreter(model_content=data)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    assert details["nbytes"] == 3  # ceil(5 * 4 / 8)
    lib = load_library()
    for wrong in (5, 2, 4):
        buffer = ffi.new("uint8_t[]", wrong)
        status = lib.edge_interpreter_set_tensor(interpreter._handle(), details["index"], buffer, wrong)
        assert status != 0
        assert "holds 3 bytes (int4 [5])" in ffi.string(lib.edge_last_error()).decode()
    with pytest.raises(EdgeError, match="packed"):
        interpreter.tensor(details["index"])()


def test_cast_options_round_trip_through_the_file():
    from converter.reader import read_model

    model = _cast_model(TensorProto.FLOAT, TensorProto.FLOAT8E8M0, 4, saturate=0, round_mode="nearest")
    graph = read_model(converter.convert(model).data)
    narrow_casts = [n.attrs for n in graph.nodes if n.op == "Cast" and n.attrs["to"] == "float8_e8m0fnu"]
    assert {"to": "float8_e8m0fnu", "saturate": False, "round_mode": "nearest"} in narrow_casts


def test_a_packed_tensor_outside_cast_is_refused_by_the_loader():
    import edge
    from converter.ir import Graph, Node, TensorType
    from converter.writer import write_model

    types = {"x": TensorType("int4", (6,)), "y": TensorType("int4", (2, 3))}
    graph = Graph(nodes=(Node("Reshape", ("x",), ("y",), {"shape": (2, 3)}, "reshape"),), inputs=("x",),
                  outputs=("y",), tensors=types)
    with pytest.raises(EdgeError, match="int4, a packed dtype that only CAST reads or writes"):
        edge.Interpreter(model_content=write_model(graph))

"""GraphBuilder: graphs written in Python, checked against NumPy written here independently."""
from __future__ import annotations

import numpy as np
import pytest

from converter import GraphBuilder, reference
from converter.errors import ConversionError
from converter.ir import TensorType
from converter.ops import OPS

RNG = np.random.default_rng(11)


def test_fully_connected_with_activation_matches_numpy():
    b = GraphBuilder()
    x = b.input("x", (2, 8), "float32")
    w = b.constant("w", RNG.standard_normal((4, 8)).astype(np.float32))
    bias = b.constant("bias", RNG.standard_normal(4).astype(np.float32))
    y = b.op("FullyConnected", x, w, bias, activation=("Relu", 0.0, 0.0))
    assert b.type_of(y) == TensorType("float32", (2, 4))
    b.output(y, name="y")
    graph = b.build()
    assert graph.inputs == ("x",) and graph.outputs == ("y",)
    feed = RNG.standard_normal((2, 8)).astype(np.float32)
    expected = np.maximum(feed @ graph.constants["w"].T + graph.constants["bias"], 0)
    np.testing.assert_allclose(reference.run(graph, {"x": feed})["y"], expected, rtol=1e-6, atol=1e-6)


def test_every_op_in_the_table_is_a_method():
    b = GraphBuilder()
    for name in OPS:
        assert callable(getattr(b, name))
    assert set(OPS) <= set(dir(b))
    with pytest.raises(AttributeError):
        b.NoSuchOp


def test_arrays_and_numbers_become_constants():
    b = GraphBuilder()
    x = b.input("x", (3,))
    y = b.Mul(b.Add(x, np.arange(3, dtype=np.float32)), 2.0)
    b.output(y, "y")
    graph = b.build()
    assert len(graph.constants) == 2
    assert all(v.dtype == np.float32 for v in graph.constants.values())
    feed = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(reference.run(graph, {"x": feed})["y"], (feed + np.arange(3)) * 2)


def test_multi_output_ops_return_tuples():
    b = GraphBuilder()
    x = b.input("x", (2, 5))
    first, second = b.Split(x, axis=1, sizes=(2, 3))
    assert b.type_of(first).shape == (2, 2) and b.type_of(second).shape == (2, 3)
    (only,) = b.op_multi("Relu", x)
    b.output(second, "tail")
    b.output(only, "relu")
    graph = b.build()
    feed = RNG.standard_normal((2, 5)).astype(np.float32)
    out = reference.run(graph, {"x": feed})
    np.testing.assert_array_equal(out["tail"], feed[:, 2:])
    np.testing.assert_array_equal(out["relu"], np.maximum(feed, 0))


def test_variables_signatures_and_dynamic_axes():
    b = GraphBuilder("train")
    x = b.input("x", (4, 3), dynamic_axes=(0,))
    w = b.variable("w", np.zeros((2, 3), np.float32))
    y = b.FullyConnected(x, w)
    b.output(y, "y")
    b.signature("predict", {"features": x}, {"scores": y})
    graph = b.build()
    assert graph.variables == {"w"} and not graph.is_constant("w")
    assert graph.dynamic_dims == {"x": (0,)}
    assert graph.signatures["predict"].outputs == {"scores": "y"}, "the handle follows the rename"


def test_output_renames_and_old_handles_keep_working():
    b = GraphBuilder()
    x = b.input("x", (2,))
    h = b.Relu(x)
    b.output(h, "hidden")
    y = b.Neg(h)
    b.output(y, "y")
    b.output(x, "x_copy")
    graph = b.build()
    assert graph.outputs == ("hidden", "y", "x_copy")
    assert [n.op for n in graph.nodes] == ["Relu", "Neg", "Identity"]
    assert graph.nodes[1].inputs == ("hidden",)


def test_errors_name_the_op_and_tensor():
    b = GraphBuilder()
    x = b.input("x", (2, 3))
    with pytest.raises(ConversionError, match="'nope'"):
        b.Relu("nope")
    with pytest.raises(ConversionError, match="Frobnicate"):
        b.op("Frobnicate", x)
    with pytest.raises(ConversionError, match="MatMul1|FullyConnected"):
        b.FullyConnected(x, np.zeros((4, 5), np.float32), name="MatMul1")
    with pytest.raises(ConversionError, match="already exists"):
        b.input("x", (1,))
    with pytest.raises(ConversionError, match="no outputs"):
        b.build()

"""Einsum's import: the equation parser, which IR each common equation becomes, and the refusals.
Values are checked against onnxruntime in tests/ops/test_onnx_ops.py (the Einsum-* cases)."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers import load_onnx
from converter.importers.onnx_einsum import parse_einsum


def einsum_model(equation: str, shapes, constants=None):
    constants = constants or {}
    names = [f"x{k}" for k in range(len(shapes))]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)
              if n not in constants]
    initializers = [numpy_helper.from_array(v, n) for n, v in constants.items()]
    node = helper.make_node("Einsum", names, ["y"], name="e", equation=equation)
    try:
        out_shape = list(np.einsum(equation, *[np.zeros(s, np.float32) for s in shapes]).shape)
    except ValueError:  # an equation numpy refuses too: the converter must name it
        out_shape = ["d"]
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph([node], "einsum", inputs, [output],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    return model


def ops_of(graph):
    return [node.op for node in graph.nodes if node.op != "Identity"]


def test_parse_labels_ellipsis_and_implicit_output():
    plan = parse_einsum("...ij, ...jk", [4, 3])
    assert plan.operands == (("1", "0", "i", "j"), ("0", "j", "k"))
    assert plan.output == ("1", "0", "i", "k")
    assert parse_einsum("ba,ca", [2, 2]).output == ("b", "c")
    assert parse_einsum("i,i", [1, 1]).output == ()


@pytest.mark.parametrize("equation, shapes, expected", [
    ("bhid,bhjd->bhij", [(2, 3, 5, 4), (2, 3, 6, 4)], ["BatchMatMul"]),
    ("bhij,bhjd->bhid", [(2, 3, 5, 6), (2, 3, 6, 4)], ["BatchMatMul"]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], ["BatchMatMul"]),
    ("ij->ji", [(3, 4)], ["Transpose"]),
    ("ij->i", [(3, 4)], ["ReduceSum"]),
])
def test_common_equations_lower_without_extra_nodes(equation, shapes, expected):
    graph = load_onnx(einsum_model(equation, shapes))
    assert ops_of(graph) == expected
    matmuls = [n for n in graph.nodes if n.op == "BatchMatMul"]
    if equation.startswith("bhid"):
        assert matmuls[0].attrs["transpose_b"] and not matmuls[0].attrs["transpose_a"]


def test_constant_operand_becomes_a_fully_connected_weight():
    w = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    graph = load_onnx(einsum_model("bsh,hd->bsd", [(2, 5, 8), (8, 6)], {"x1": w}))
    assert "FullyConnected" in ops_of(graph) and "BatchMatMul" not in ops_of(graph)


@pytest.mark.parametrize("equation, shapes", [("ii->i", [(3, 3)]), ("ii", [(3, 3)]), ("...ii->...i", [(2, 3, 3)]),
                                              ("bii,bij->bj", [(2, 3, 3), (2, 3, 4)])])
def test_diagonals_and_traces_are_refused_naming_the_equation(equation, shapes):
    with pytest.raises(UnsupportedOpsError) as info:
        load_onnx(einsum_model(equation, shapes))
    assert f"Einsum (equation {equation!r}: a diagonal or trace)" in info.value.ops


@pytest.mark.parametrize("equation, shapes, message", [
    ("ij,jk->ik", [(2, 3), (4, 5)], "label 'j' has sizes 3 and 4"),
    ("ij,jk->iz", [(2, 3), (3, 5)], "output label 'z' names no input dim"),
    ("ijk->i", [(2, 3)], "does not fit an input of rank 2"),
])
def test_bad_equations_are_refused_naming_the_equation(equation, shapes, message):
    with pytest.raises(ConversionError, match=f"Einsum.*{equation!r}.*{message}"):
        load_onnx(einsum_model(equation, shapes))

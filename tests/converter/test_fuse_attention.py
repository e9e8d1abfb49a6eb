"""fuse_attention and the RMSNorm rules: each fires on the pattern as torch.onnx.export writes it
(built here with onnx.helper), the converted model matches onnxruntime and converter.reference, and
near-misses stay unfused. The zoo (tests/models/test_zoo.py) checks the same on real exports."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import converter
from tests.fixtures.harness import check_model

B, H, S, D = 2, 4, 12, 8


def const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32 if np.asarray(value).dtype.kind == "f" else None),
                                   name)


def model(nodes, inputs, initializers, outputs=("y",), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "attention", inputs, [onnx.ValueInfoProto(name=o) for o in outputs],
                              initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def heads(x: str, out: str, perm=(0, 2, 1, 3)) -> list[onnx.NodeProto]:
    """[B, S, H*D] -> [B, S, H, D] -> Transpose(perm)."""
    return [helper.make_node("Reshape", [x, "split_heads"], [f"{out}_r"]),
            helper.make_node("Transpose", [f"{out}_r"], [out], perm=list(perm))]


def attention_model(style: str, mask: str | None, guard: bool = False, extra_output: bool = False):
    """style: "eager" (MatMul(q, k^T) / sqrt(D)), "sdpa" (q * c and k^T * c, c = D^-1/4), "t5" (no scale)."""
    nodes = heads("xq", "q") + heads("xv", "v")
    initializers = [const("split_heads", np.array([B, S, H, D], np.int64))]
    if style == "sdpa":
        nodes += heads("xk", "kt", perm=(0, 2, 3, 1))
        nodes += [helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
                  helper.make_node("MatMul", ["qs", "ks"], ["s"])]
        initializers.append(const("c", D ** -0.25))
    else:
        nodes += heads("xk", "k") + [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2])]
        nodes.append(helper.make_node("MatMul", ["q", "kt"], ["s0" if style == "eager" else "s"]))
        if style == "eager":
            nodes.append(helper.make_node("Div", ["s0", "root_d"], ["s"]))
            initializers.append(const("root_d", np.sqrt(D)))
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, S, H * D]) for n in ("xq", "xk", "xv")]
    scores = "s"
    if mask == "padding":  # BERT: (1 - m) * -10000 from an int64 [B, S] attention mask
        inputs.append(helper.make_tensor_value_info("m", TensorProto.FLOAT, [B, 1, 1, S]))
        nodes += [helper.make_node("Add", ["s", "m"], ["sm"])]
        scores = "sm"
    elif mask == "causal":  # GPT-2: Where(lower triangle, 0, -inf) added
        tril = np.tril(np.ones((S, S), bool))
        initializers += [numpy_helper.from_array(tril, "tril"), const("zero", 0.0), const("minus_inf", -np.inf)]
        nodes += [helper.make_node("Where", ["tril", "zero", "minus_inf"], ["bias"]),
                  helper.make_node("Add", ["s", "bias"], ["sm"])]
        scores = "sm"
    nodes.append(helper.make_node("Softmax", [scores], ["p"], axis=-1))
    probabilities = "p"
    if guard:
        nodes += [helper.make_node("IsNaN", ["p"], ["nan"]), helper.make_node("Where", ["nan", "zero", "p"], ["pg"])]
        probabilities = "pg"
        if mask != "causal":
            initializers.append(const("zero", 0.0))
    nodes.append(helper.make_node("MatMul", [probabilities, "v"], ["y"]))
    return model(nodes, inputs, initializers, ("y", "p") if extra_output else ("y",))


def feeds(proto, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in proto.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        out[i.name] = rng.standard_normal(shape).astype(np.float32)
        if i.name == "m":
            out[i.name] = np.where(rng.random(shape) < 0.3, -10000.0, 0.0).astype(np.float32)
    return out


@pytest.mark.parametrize("style, mask, guard", [
    ("eager", "padding", False),    # BERT / DistilBERT / ALBERT eager attention
    ("sdpa", "causal", True),       # GPT-2 / LLaMA through F.scaled_dot_product_attention
    ("sdpa", None, False),          # ViT
    ("t5", "padding", False),       # T5: no scale, a float bias
])
def test_exported_attention_becomes_one_op(style, mask, guard):
    proto = attention_model(style, mask, guard)
    comparison = check_model(proto, feeds(proto))
    ops = comparison.converted.graph.op_counts()
    assert ops.get("Attention") == 1 and "Softmax" not in ops and "BatchMatMul" not in ops, ops
    node = next(n for n in comparison.converted.graph.nodes if n.op == "Attention")
    expected = {"eager": D ** -0.5, "sdpa": D ** -0.5, "t5": 1.0}[style]
    assert node.attrs["scale"] == pytest.approx(expected, rel=1e-6)


def test_scores_read_elsewhere_stay_unfused():
    proto = attention_model("eager", None, extra_output=True)
    result = converter.convert(proto)
    assert "Attention" not in result.graph.op_counts()


def test_int8_mode_keeps_the_unfused_products():
    graph = converter.api._import(attention_model("eager", None), None)
    fused, _ = converter.passes.optimize(graph, attention=False)
    assert "Attention" not in fused.op_counts() and fused.op_counts().get("Softmax") == 1


def grouped_model():
    """LLaMA's repeat_kv: k, v [B, 2, S, D] unsqueezed, expanded to 2 groups, reshaped to 4 heads."""
    hkv = 2
    nodes, initializers = [], [const("unsq", np.array([B, hkv, 1, S, D], np.int64)),
                               const("expand", np.array([B, hkv, H // hkv, S, D], np.int64)),
                               const("merged", np.array([B, H, S, D], np.int64)), const("c", D ** -0.25)]
    for name in ("k", "v"):
        nodes += [helper.make_node("Reshape", [name, "unsq"], [f"{name}5"]),
                  helper.make_node("Expand", [f"{name}5", "expand"], [f"{name}e"]),
                  helper.make_node("Reshape", [f"{name}e", "merged"], [f"{name}h"])]
    nodes += [helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("Mul", ["q", "c"], ["qs"]), helper.make_node("Mul", ["kt", "c"], ["ks"]),
              helper.make_node("MatMul", ["qs", "ks"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "vh"], ["y"])]
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [B, H, S, D])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, hkv, S, D]) for n in ("k", "v")]
    return model(nodes, inputs, initializers)


def test_grouped_query_expansion_is_looked_through():
    proto = grouped_model()
    comparison = check_model(proto, feeds(proto))
    graph = comparison.converted.graph
    node = next(n for n in graph.nodes if n.op == "Attention")
    assert graph.tensors[node.inputs[1]].shape == (B, 2, S, D), "k should be read at its 2 key/value heads"
    assert "BroadcastTo" not in graph.op_counts()


def rms_model(form: str):
    """T5 / LLaMA RMSNorm over the last axis of [2, 5, 16]."""
    nodes = [helper.make_node("Pow", ["x", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["mse"]), helper.make_node("Sqrt", ["mse"], ["rms"])]
    if form == "reciprocal":
        nodes += [helper.make_node("Div", ["one", "rms"], ["inv"]), helper.make_node("Mul", ["x", "inv"], ["n"])]
    elif form == "reciprocal-op":
        nodes += [helper.make_node("Reciprocal", ["rms"], ["inv"]), helper.make_node("Mul", ["inv", "x"], ["n"])]
    else:
        nodes += [helper.make_node("Div", ["x", "rms"], ["n"])]
    nodes.append(helper.make_node("Mul", ["weight", "n"], ["y"]))
    rng = np.random.default_rng(3)
    initializers = [const("two", 2.0), const("eps", 1e-6), const("one", 1.0),
                    const("weight", rng.standard_normal(16).astype(np.float32))]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 16])], initializers)


@pytest.mark.parametrize("form", ["reciprocal", "reciprocal-op", "divide"])
def test_rms_norm_becomes_one_op(form):
    proto = rms_model(form)
    comparison = check_model(proto, feeds(proto))
    ops = comparison.converted.graph.op_counts()
    assert ops == {"RMSNorm": 1}, ops


def test_onnx_attention_refuses_what_the_kernel_does_not_take_naming_it():
    from converter.errors import UnsupportedOpsError

    node = helper.make_node("Attention", ["q", "k", "v", "", "", "", "lengths"], ["y"])
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, [B]))
    proto = model([node], inputs, [], opset=24)
    with pytest.raises(UnsupportedOpsError, match="nonpad_kv_seqlen"):
        converter.convert(proto)


def test_onnx_attention_is_written_out_only_where_its_scores_are_read():
    """The fused op serves a node whose qk_matmul_output is not read; one that reads it is
    written out as separate ops, whose scores that output is."""
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [B, H, S, D]) for n in ("q", "k", "v")]
    for outputs, fused in ((["y"], True), (["y", "", "", "qk"], False)):
        node = helper.make_node("Attention", ["q", "k", "v"], outputs, qk_matmul_output_mode=1)
        graph = converter.convert(model([node], inputs, [], outputs=[o for o in outputs if o], opset=23)).graph
        assert ("Attention" in {n.op for n in graph.nodes}) == fused

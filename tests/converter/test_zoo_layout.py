"""cancel_transposes turns a Transpose that ends an order-keeping Reshape/Transpose chain into a
Reshape: the pattern hybrid convolution-attention networks (SegFormer, Swin, DETR) export when they
flatten a convolution's output to tokens (``x.flatten(2).transpose(1, 2)``) and fold tokens back
into an image; and it pulls a Transpose above Concats and Resizes whose inputs are such chains
(SegFormer's decode head). Each model is checked against onnxruntime and the reference executor, on the
runtime too; the chains that do not keep the order, and graphs with dynamic dims, keep their
Transposes."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from converter.passes.layout import cancel_transposes  # noqa: E402
from tests.fixtures.harness import check_model  # noqa: E402

RNG = np.random.default_rng(5)
CHANNELS, SIZE, FEATURES = 8, 6, 5


def conv_to_tokens(token_major: bool, batch: int | str = 1) -> onnx.ModelProto:
    """x [N, 3, S, S] -> Conv 3x3 -> Reshape [N, C, S*S] -> (Transpose to [N, S*S, C] when
    ``token_major``) -> MatMul with a weight over the last axis."""
    inner = CHANNELS if token_major else SIZE * SIZE
    inits = [numpy_helper.from_array(RNG.standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32) * 0.3, "w"),
             numpy_helper.from_array(np.array([0, CHANNELS, SIZE * SIZE], np.int64), "tokens_shape"),
             numpy_helper.from_array(RNG.standard_normal((inner, FEATURES)).astype(np.float32), "m")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "tokens_shape"], ["flat"])]
    last = "flat"
    if token_major:
        nodes.append(helper.make_node("Transpose", ["flat"], ["tokens"], perm=[0, 2, 1]))
        last = "tokens"
    nodes.append(helper.make_node("MatMul", [last, "m"], ["y"]))
    rows = SIZE * SIZE if token_major else CHANNELS
    graph = helper.make_graph(nodes, "conv_to_tokens",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, rows, FEATURES])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def tokens_to_conv() -> onnx.ModelProto:
    """x [1, S*S, C] tokens -> Transpose [1, C, S*S] -> Reshape [1, C, S, S] -> Conv 1x1: the
    way back from tokens to an image."""
    inits = [numpy_helper.from_array(np.array([1, CHANNELS, SIZE, SIZE], np.int64), "image_shape"),
             numpy_helper.from_array(RNG.standard_normal((4, CHANNELS, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("Transpose", ["x"], ["channels"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["channels", "image_shape"], ["image"]),
             helper.make_node("Conv", ["image", "w"], ["y"])]
    graph = helper.make_graph(nodes, "tokens_to_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZE * SIZE, CHANNELS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def decode_head(image_input: bool = False) -> onnx.ModelProto:
    """SegFormer's decode head: two token maps ([1, S*S, C] and [1, S*S/4, C]) each Transposed and
    Reshaped to NCHW, the small one Resized (bilinear) to S x S, both Concatenated on channels
    and fused by a 1x1 Conv. ``image_input``: the second branch is an NCHW graph input instead."""
    half = SIZE // 2
    inits = [numpy_helper.from_array(np.array([1, CHANNELS, SIZE, SIZE], np.int64), "big_shape"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(RNG.standard_normal((4, 2 * CHANNELS, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("Transpose", ["x"], ["big_t"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["big_t", "big_shape"], ["big"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZE * SIZE, CHANNELS])]
    if image_input:
        inputs.append(helper.make_tensor_value_info("small", TensorProto.FLOAT, [1, CHANNELS, half, half]))
    else:
        inputs.append(helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [1, half * half, CHANNELS]))
        inits.append(numpy_helper.from_array(np.array([1, CHANNELS, half, half], np.int64), "small_shape"))
        nodes += [helper.make_node("Transpose", ["tokens"], ["small_t"], perm=[0, 2, 1]),
                  helper.make_node("Reshape", ["small_t", "small_shape"], ["small"])]
    nodes += [helper.make_node("Resize", ["small", "", "scales"], ["up"], mode="linear"),
              helper.make_node("Concat", ["big", "up"], ["both"], axis=1),
              helper.make_node("Conv", ["both", "w"], ["y"])]
    graph = helper.make_graph(nodes, "decode_head", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, SIZE, SIZE])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def feeds(model: onnx.ModelProto, batch: int = 1) -> dict[str, np.ndarray]:
    return {value.name: RNG.standard_normal([d.dim_value or batch for d in value.type.tensor_type.shape.dim])
            .astype(np.float32) for value in model.graph.input}


def transposes(comparison) -> int:
    """Transposes inside the graph (not the ones that keep the declared NCHW input or output)."""
    graph = comparison.converted.graph
    return sum(1 for n in graph.nodes if n.op == "Transpose"
               and n.inputs[0] not in graph.inputs and n.outputs[0] not in graph.outputs)


def test_flatten_to_tokens_needs_no_transpose():
    model = conv_to_tokens(token_major=True)
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) == 0, comparison.converted.graph.op_counts()


def test_tokens_back_to_an_image_need_no_transpose():
    model = tokens_to_conv()
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) == 0, comparison.converted.graph.op_counts()


def test_a_chain_that_reorders_the_elements_keeps_its_transpose():
    # Flattening NCHW without the token transpose reads the channels-first order: the NHWC
    # wrapper of the convolution must stay.
    model = conv_to_tokens(token_major=False)
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) == 1, comparison.converted.graph.op_counts()


def test_a_graph_with_a_dynamic_batch_keeps_its_transposes():
    # At batch 1 the chain keeps the order whatever the batch axis does; at another batch it may
    # not, and the rule cannot see which, so it stays out of graphs with dynamic dims.
    model = conv_to_tokens(token_major=True, batch="N")
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) > 0, comparison.converted.graph.op_counts()


def test_the_rewrite_is_idempotent():
    import converter

    graph = converter.convert(conv_to_tokens(token_major=True)).graph
    again = cancel_transposes(graph)
    assert [n.op for n in again.nodes] == [n.op for n in graph.nodes]


def test_a_decode_head_runs_resize_and_concat_without_transposes():
    model = decode_head()
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) == 0, comparison.converted.graph.op_counts()


def test_a_branch_from_an_nchw_input_keeps_the_transpose_above_the_concat():
    # The image input is NCHW with no chain to reshape: pulling the Transpose up would only move it.
    model = decode_head(image_input=True)
    comparison = check_model(model, feeds(model))
    assert transposes(comparison) == 1, comparison.converted.graph.op_counts()

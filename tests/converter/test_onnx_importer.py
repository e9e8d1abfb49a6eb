"""ONNX importer: each mapping checked by running the imported IR with the reference executor
against onnxruntime on the original model; folding, shapes and errors checked directly."""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from converter.errors import ConversionError, UnsupportedOpsError
from converter.importers import load_onnx
from converter.ir import TensorType

F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL
ONNX_OF = {np.dtype(np.float32): F, np.dtype(np.int64): I64, np.dtype(np.int32): I32,
           np.dtype(bool): B, np.dtype(np.float64): TensorProto.DOUBLE}
RNG = np.random.default_rng(1234)


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def positive(*shape):
    return (RNG.random(shape) + 0.5).astype(np.float32)


def make(nodes, feeds, consts=None, outputs=("y",), out_types=None, opset=17, inputs=None,
         other_domains=()):
    """A model over ``nodes``: graph inputs typed from ``feeds`` (or ``inputs``: name -> (elem,
    shape)), initializers from ``consts``, outputs float unless ``out_types`` says otherwise."""
    out_types = out_types or {}
    if inputs is None:
        inputs = {name: (ONNX_OF[value.dtype], value.shape) for name, value in feeds.items()}
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(o, *_elem_and_shape(out_types.get(o, F))) for o in outputs if o],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in other_domains]
    model = helper.make_model(graph, opset_imports=opsets)
    # The checker wants graph outputs shaped; shape inference fills in what the test left out.
    return onnx.shape_inference.infer_shapes(model)


def _elem_and_shape(out_type):
    return out_type if isinstance(out_type, tuple) else (out_type, None)


def op_model(op_type, node_inputs, feeds, consts=None, outputs=("y",), out_types=None, opset=17,
             **attrs):
    node = helper.make_node(op_type, list(node_inputs), list(outputs), name="n0", **attrs)
    return make([node], feeds, consts, outputs, out_types, opset)


def run_onnxruntime(model, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def run_ir(graph, feeds):
    from converter.reference import run
    return run(graph, feeds)


def assert_matches(model, feeds, rtol=1e-5, atol=1e-5, **load_kwargs):
    onnx.checker.check_model(model)
    expected = run_onnxruntime(model, feeds)
    graph = load_onnx(model, **load_kwargs)
    assert_static_and_consistent(graph)
    got = run_ir(graph, feeds)
    assert set(graph.outputs) == set(expected)
    for name, want in expected.items():
        have = np.asarray(got[name])
        assert have.shape == want.shape, f"{name}: shape {have.shape} != {want.shape}"
        assert have.dtype == want.dtype, f"{name}: dtype {have.dtype} != {want.dtype}"
        if want.dtype == bool or want.dtype.kind in "iu":
            np.testing.assert_array_equal(have, want, err_msg=name)
        else:
            np.testing.assert_allclose(have, want, rtol=rtol, atol=atol, err_msg=name)
    return graph


def assert_static_and_consistent(graph):
    from converter.ops import OPS
    for name, tensor_type in graph.tensors.items():
        assert tensor_type.is_static, f"{name}: {tensor_type.shape}"
    for name, value in graph.constants.items():
        assert graph.tensors[name] == TensorType(value.dtype.name, value.shape), name
    available = set(graph.inputs) | set(graph.constants)
    for node in graph.nodes:
        assert all(i in available for i in node.inputs if i), node
        types = [graph.tensors[i] if i else None for i in node.inputs]
        inferred = OPS[node.op].infer(types, node.attrs)
        for output, inferred_type in zip(node.outputs, inferred):
            if output:
                assert graph.tensors[output] == inferred_type, output
                available.add(output)
    assert all(o in available for o in graph.outputs)


def _cases():
    """(id, model, feeds): every ONNX -> IR mapping the importer has."""
    cases = []

    def add(case_id, model, feeds):
        cases.append(pytest.param(model, feeds, id=case_id))

    # --- convolution
    x = {"x": randn(1, 4, 9, 8)}
    w = randn(6, 4, 3, 3, scale=0.3)
    add("conv_pads_strides_dilations", op_model(
        "Conv", ["x", "w", "b"], x, {"w": w, "b": randn(6)}, pads=[1, 0, 2, 1], strides=[2, 1],
        dilations=[2, 1]), x)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        add(f"conv_{auto_pad}", op_model("Conv", ["x", "w"], x, {"w": randn(6, 4, 4, 3, scale=0.3)},
                                         auto_pad=auto_pad, strides=[2, 2]), x)
    add("conv_grouped", op_model("Conv", ["x", "w"], x, {"w": randn(6, 2, 3, 3)}, group=2,
                                 pads=[1, 1, 1, 1]), x)
    add("conv_depthwise", op_model("Conv", ["x", "w", "b"], x, {"w": randn(8, 1, 3, 3), "b": randn(8)},
                                   group=4, strides=[2, 2], pads=[1, 1, 1, 1]), x)
    add("conv_weights_at_run_time", op_model(
        "Conv", ["x", "w"], {"x": x["x"], "w": w}, kernel_shape=[3, 3]), {"x": x["x"], "w": w})
    x1 = {"x": randn(2, 4, 11)}
    add("conv_1d", op_model("Conv", ["x", "w", "b"], x1, {"w": randn(6, 2, 3), "b": randn(6)},
                            group=2, pads=[2, 1], strides=[2], dilations=[2]), x1)
    add("conv_1d_same", op_model("Conv", ["x", "w"], x1, {"w": randn(3, 4, 4)}, auto_pad="SAME_UPPER"), x1)

    xt = {"x": randn(1, 4, 5, 6)}
    add("conv_transpose", op_model(
        "ConvTranspose", ["x", "w", "b"], xt, {"w": randn(4, 3, 3, 3), "b": randn(6)}, group=2,
        strides=[2, 2], pads=[1, 0, 1, 2], output_padding=[1, 1], dilations=[1, 2]), xt)
    add("conv_transpose_output_shape", op_model(
        "ConvTranspose", ["x", "w"], xt, {"w": randn(4, 2, 3, 3)}, strides=[2, 2],
        output_shape=[10, 12]), xt)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        add(f"conv_transpose_{auto_pad}", op_model(
            "ConvTranspose", ["x", "w"], xt, {"w": randn(4, 2, 4, 3)}, strides=[2, 2],
            auto_pad=auto_pad), xt)
    add("conv_transpose_1d", op_model("ConvTranspose", ["x", "w"], x1, {"w": randn(4, 3, 3)},
                                      strides=[3], pads=[1, 0]), x1)

    # --- matrix products
    a = {"a": randn(3, 5)}
    add("gemm_const_b_transb", op_model("Gemm", ["a", "w", "c"], a, {"w": randn(4, 5), "c": randn(4)},
                                        transB=1, alpha=0.5, beta=2.0), a)
    add("gemm_transa_full_c", op_model("Gemm", ["a", "w", "c"], {"a": randn(5, 3)},
                                       {"w": randn(5, 4), "c": randn(3, 4)}, transA=1, beta=0.5),
        {"a": randn(5, 3)})
    ab = {"a": randn(3, 5), "b": randn(4, 5)}
    add("gemm_run_time_b", op_model("Gemm", ["a", "b", "c"], ab, {"c": np.float32(1.5)}, transB=1,
                                    alpha=0.25, beta=3.0), ab)
    add("gemm_no_c", op_model("Gemm", ["a", "w"], a, {"w": randn(5, 2)}), a)
    a3 = {"a": randn(2, 3, 5)}
    add("matmul_const_b", op_model("MatMul", ["a", "w"], a3, {"w": randn(5, 4)}), a3)
    mm = {"a": randn(2, 1, 3, 4), "b": randn(5, 4, 6)}
    add("matmul_batched_broadcast", op_model("MatMul", ["a", "b"], mm), mm)
    mv = {"a": randn(4), "b": randn(2, 4, 3)}
    add("matmul_1d_a", op_model("MatMul", ["a", "b"], mv), mv)
    add("matmul_1d_const_b", op_model("MatMul", ["a", "w"], a3, {"w": randn(5)}), a3)

    # --- elementwise binary
    xy = {"a": randn(2, 3, 4), "b": randn(3, 1)}
    for op in ("Add", "Sub", "Mul", "Div", "Min", "Max"):
        add(f"binary_{op}", op_model(op, ["a", "b"], xy), xy)
    for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
        ints = {"a": RNG.integers(-3, 3, (2, 3, 4)).astype(np.float32),
                "b": RNG.integers(-3, 3, (3, 1)).astype(np.float32)}
        add(f"compare_{op}", op_model(op, ["a", "b"], ints, out_types={"y": B}), ints)
    bools = {"p": RNG.random((3, 4)) > 0.5, "q": RNG.random((4,)) > 0.5}
    for op in ("And", "Or", "Xor"):
        add(f"logic_{op}", op_model(op, ["p", "q"], bools, out_types={"y": B}), bools)
    add("logic_Not", op_model("Not", ["p"], {"p": bools["p"]}, out_types={"y": B}), {"p": bools["p"]})
    pw = {"a": positive(3, 4)}
    add("pow_int_exponent", op_model("Pow", ["a", "e"], pw, {"e": np.array([2, 3, 1, 0], np.int64)}), pw)
    add("pow_float", op_model("Pow", ["a", "b"], {"a": positive(3, 4), "b": randn(4)}),
        {"a": positive(3, 4), "b": randn(4)})
    three = {"a": randn(3, 4), "b": randn(4), "c": randn(1, 4)}
    for op in ("Min", "Max", "Sum", "Mean"):
        add(f"variadic_{op}", op_model(op, ["a", "b", "c"], three), three)
    add("mean_single", op_model("Mean", ["a"], {"a": three["a"]}), {"a": three["a"]})
    md = {"a": randn(3, 4, scale=5), "b": positive(4) * np.float32(2)}
    add("mod_fmod", op_model("Mod", ["a", "b"], md, fmod=1), md)
    mi = {"a": RNG.integers(-20, 20, (3, 4)).astype(np.int64),
          "b": np.array([3, -4, 5, -7], np.int64)}
    add("mod_int", op_model("Mod", ["a", "b"], mi, out_types={"y": I64}), mi)
    add("div_int", op_model("Div", ["a", "b"], mi, out_types={"y": I64}), mi)
    pr = {"x": randn(2, 3, 4, 4)}
    add("prelu", op_model("PRelu", ["x", "s"], pr, {"s": randn(3, 1, 1)}), pr)

    # --- elementwise unary
    u = {"x": randn(2, 3, 5, scale=2)}
    for op in ("Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Floor", "Ceil", "Sign", "Sin",
               "Cos", "Erf", "Softplus", "HardSwish", "Identity"):
        add(f"unary_{op}", op_model(op, ["x"], u), u)
    p = {"x": positive(2, 3, 5)}
    for op in ("Log", "Sqrt", "Reciprocal"):
        add(f"unary_{op}", op_model(op, ["x"], p), p)
    halves = {"x": np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4, -0.6], np.float32)}
    add("unary_Round_half_even", op_model("Round", ["x"], halves), halves)
    special = {"x": np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32)}
    add("isnan", op_model("IsNaN", ["x"], special, out_types={"y": B}), special)
    add("isinf", op_model("IsInf", ["x"], special, out_types={"y": B}), special)
    add("hard_sigmoid", op_model("HardSigmoid", ["x"], u, alpha=0.3, beta=0.4), u)
    add("hard_sigmoid_defaults", op_model("HardSigmoid", ["x"], u), u)
    add("leaky_relu", op_model("LeakyRelu", ["x"], u), u)
    add("leaky_relu_alpha", op_model("LeakyRelu", ["x"], u, alpha=0.2), u)
    add("elu", op_model("Elu", ["x"], u), u)
    add("elu_alpha", op_model("Elu", ["x"], u, alpha=0.5), u)
    add("gelu", op_model("Gelu", ["x"], u, opset=20), u)
    add("gelu_tanh", op_model("Gelu", ["x"], u, approximate="tanh", opset=20), u)
    add("clip_inputs", op_model("Clip", ["x", "lo", "hi"], u, {"lo": np.float32(-0.5), "hi": np.float32(1.2)}), u)
    add("clip_relu6", op_model("Clip", ["x", "lo", "hi"], {"x": randn(2, 3, 5, scale=5)},
                               {"lo": np.float32(0), "hi": np.float32(6)}), {"x": randn(2, 3, 5, scale=5)})
    add("clip_min_only", op_model("Clip", ["x", "lo"], u, {"lo": np.float32(0.1)}), u)
    add("clip_max_only", op_model("Clip", ["x", "", "hi"], u, {"hi": np.float32(0.1)}), u)
    add("clip_none", op_model("Clip", ["x"], u), u)
    ci = {"x": RNG.integers(-10, 10, (4, 5)).astype(np.int64)}
    add("clip_int64", op_model("Clip", ["x", "lo", "hi"], ci, {"lo": np.int64(-3), "hi": np.int64(4)},
                               out_types={"y": I64}), ci)

    # --- Dropout, Softmax, normalisation
    add("dropout_with_mask", op_model("Dropout", ["x"], u, outputs=("y", "mask"), out_types={"mask": B}), u)
    sm = {"x": randn(2, 3, 4)}
    for op in ("Softmax", "LogSoftmax"):
        add(f"{op}_axis1", op_model(op, ["x"], sm, axis=1), sm)
        add(f"{op}_default", op_model(op, ["x"], sm), sm)
    bn = {"x": randn(2, 3, 4, 5)}
    bn_params = {"s": randn(3), "bias": randn(3), "m": randn(3), "v": positive(3)}
    add("batch_norm", op_model("BatchNormalization", ["x", "s", "bias", "m", "v"], bn, bn_params,
                               epsilon=1e-3), bn)
    add("batch_norm_rank2", op_model("BatchNormalization", ["x", "s", "bias", "m", "v"],
                                     {"x": randn(4, 3)}, bn_params), {"x": randn(4, 3)})
    ln = {"x": randn(2, 3, 8)}
    add("layer_norm", op_model("LayerNormalization", ["x", "g", "b"], ln, {"g": randn(8), "b": randn(8)}), ln)
    add("layer_norm_axis1_no_bias", op_model("LayerNormalization", ["x", "g"], ln, {"g": randn(3, 8)},
                                             axis=1, epsilon=1e-3), ln)
    add("lrn", op_model("LRN", ["x"], {"x": randn(1, 6, 3, 3)}, size=3, alpha=1e-3, beta=0.6,
                        bias=2.0), {"x": randn(1, 6, 3, 3)})

    # --- pooling
    px = {"x": randn(1, 3, 9, 10)}
    add("maxpool_pads_strides", op_model("MaxPool", ["x"], px, kernel_shape=[3, 2], strides=[2, 2],
                                         pads=[1, 0, 1, 1]), px)
    add("maxpool_ceil_dilations", op_model("MaxPool", ["x"], px, kernel_shape=[2, 3], strides=[2, 3],
                                           dilations=[2, 1], ceil_mode=1), px)
    add("maxpool_same_upper", op_model("MaxPool", ["x"], px, kernel_shape=[3, 3], strides=[2, 2],
                                       auto_pad="SAME_UPPER"), px)
    add("avgpool_exclude_pad", op_model("AveragePool", ["x"], px, kernel_shape=[3, 3], strides=[2, 2],
                                        pads=[1, 1, 1, 1]), px)
    add("avgpool_include_pad", op_model("AveragePool", ["x"], px, kernel_shape=[3, 3], strides=[2, 2],
                                        pads=[1, 1, 1, 1], count_include_pad=1), px)
    add("avgpool_ceil", op_model("AveragePool", ["x"], px, kernel_shape=[2, 2], strides=[2, 2],
                                 ceil_mode=1), px)
    add("avgpool_same_lower", op_model("AveragePool", ["x"], px, kernel_shape=[2, 3], strides=[1, 2],
                                       auto_pad="SAME_LOWER"), px)
    add("maxpool_1d", op_model("MaxPool", ["x"], x1, kernel_shape=[3], strides=[2], pads=[1, 1]), x1)
    add("avgpool_1d", op_model("AveragePool", ["x"], x1, kernel_shape=[2]), x1)
    add("global_avg_pool", op_model("GlobalAveragePool", ["x"], px), px)
    add("global_max_pool", op_model("GlobalMaxPool", ["x"], px), px)

    # --- reductions
    r = {"x": randn(2, 3, 4)}
    for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceSumSquare", "ReduceLogSumExp"):
        add(f"{op}_attr_axes", op_model(op, ["x"], r, axes=[-1, 0], keepdims=0), r)
        add(f"{op}_all_axes", op_model(op, ["x"], r), r)
    add("ReduceSum_axes_input", op_model("ReduceSum", ["x", "axes"], r, {"axes": np.array([1], np.int64)}), r)
    add("ReduceSum_all", op_model("ReduceSum", ["x"], r, keepdims=0), r)
    add("ReduceSum_noop", op_model("ReduceSum", ["x"], r, noop_with_empty_axes=1), r)
    add("ReduceMean_opset18_input", op_model("ReduceMean", ["x", "axes"], r,
                                             {"axes": np.array([2, -3], np.int64)}, opset=18), r)
    add("ReduceMax_int", op_model("ReduceMax", ["x"], {"x": ci["x"]}, axes=[1], out_types={"y": I64}),
        {"x": ci["x"]})

    # --- shapes and data movement
    s = {"x": randn(2, 3, 4)}
    add("reshape_zero_minus_one", op_model("Reshape", ["x", "s"], s, {"s": np.array([0, -1], np.int64)}), s)
    add("reshape_allowzero", op_model("Reshape", ["x", "s"], s, {"s": np.array([4, 0, 2], np.int64)},
                                      allowzero=0), s)
    for axis in (0, 2, -1):
        add(f"flatten_{axis}", op_model("Flatten", ["x"], s, axis=axis), s)
    sq = {"x": randn(1, 3, 1, 4)}
    add("squeeze_axes", op_model("Squeeze", ["x", "ax"], sq, {"ax": np.array([-2], np.int64)}), sq)
    add("squeeze_all", op_model("Squeeze", ["x"], sq), sq)
    add("unsqueeze", op_model("Unsqueeze", ["x", "ax"], s, {"ax": np.array([0, -1, 3], np.int64)}), s)
    add("transpose_default", op_model("Transpose", ["x"], s), s)
    add("transpose_perm", op_model("Transpose", ["x"], s, perm=[1, 2, 0]), s)
    cc = {"a": randn(2, 3, 4), "b": randn(2, 3, 1)}
    add("concat", op_model("Concat", ["a", "b", "c"], cc, {"c": randn(2, 3, 2)}, axis=-1), cc)
    sp = {"x": randn(2, 7, 3)}
    add("split_input", op_model("Split", ["x", "sizes"], sp, {"sizes": np.array([2, 4, 1], np.int64)},
                                outputs=("y0", "y1", "y2"), axis=1), sp)
    add("split_num_outputs", op_model("Split", ["x"], sp, outputs=("y0", "y1", "y2"), axis=1,
                                      num_outputs=3, opset=18), sp)
    add("split_equal", op_model("Split", ["x"], {"x": randn(2, 6)}, outputs=("y0", "y1"), axis=-1),
        {"x": randn(2, 6)})
    sl = {"x": randn(5, 6, 7)}
    add("slice_steps", op_model("Slice", ["x", "st", "en", "ax", "stp"], sl, {
        "st": np.array([-1, 1], np.int64), "en": np.array([np.iinfo(np.int64).min, 100], np.int64),
        "ax": np.array([2, 0], np.int64), "stp": np.array([-2, 2], np.int64)}), sl)
    add("slice_defaults", op_model("Slice", ["x", "st", "en"], sl, {
        "st": np.array([1, -4], np.int64), "en": np.array([np.iinfo(np.int64).max, -1], np.int64)}), sl)
    g = {"x": randn(5, 4, 3)}
    add("gather_negative", op_model("Gather", ["x", "i"], g, {"i": np.array([[0, -1], [2, 1]], np.int64)},
                                    axis=1), g)
    emb = {"i": RNG.integers(0, 10, (2, 5)).astype(np.int64)}
    add("gather_embedding", op_model("Gather", ["w", "i"], emb, {"w": randn(10, 4)}), emb)
    ge = {"x": randn(3, 4), "i": RNG.integers(-3, 3, (2, 4)).astype(np.int64)}
    add("gather_elements", op_model("GatherElements", ["x", "i"], ge, axis=0), ge)
    pd = {"x": randn(1, 2, 4, 5)}
    add("pad_constant", op_model("Pad", ["x", "p", "v"], pd, {"p": np.array([0, 0, 1, 2, 0, 1, 2, -1], np.int64),
                                                             "v": np.float32(1.5)}), pd)
    for mode in ("reflect", "edge"):
        add(f"pad_{mode}", op_model("Pad", ["x", "p"], pd, {"p": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)},
                                    mode=mode), pd)
    add("pad_axes_opset18", op_model("Pad", ["x", "p", "", "ax"], pd, {
        "p": np.array([1, 2, 3, 0], np.int64), "ax": np.array([-1, 2], np.int64)}, opset=18), pd)
    rs = {"x": randn(1, 2, 3, 4)}
    add("resize_nearest_scales", op_model("Resize", ["x", "", "sc"], rs,
                                          {"sc": np.array([1, 1, 2, 1.5], np.float32)}), rs)
    for nearest in ("floor", "ceil", "round_prefer_ceil"):
        add(f"resize_nearest_{nearest}_asymmetric", op_model(
            "Resize", ["x", "", "sc"], rs, {"sc": np.array([1, 1, 1.7, 2.5], np.float32)},
            coordinate_transformation_mode="asymmetric", nearest_mode=nearest), rs)
    for coordinate in ("half_pixel", "align_corners", "pytorch_half_pixel", "asymmetric"):
        add(f"resize_linear_sizes_{coordinate}", op_model(
            "Resize", ["x", "", "", "sz"], rs, {"sz": np.array([1, 2, 7, 5], np.int64)}, mode="linear",
            coordinate_transformation_mode=coordinate), rs)
    add("resize_linear_downscale", op_model("Resize", ["x", "", "sc"], {"x": randn(1, 2, 8, 9)},
                                            {"sc": np.array([1, 1, 0.5, 0.6], np.float32)}, mode="linear"),
        {"x": randn(1, 2, 8, 9)})
    add("resize_axes_opset18", op_model("Resize", ["x", "", "", "sz"], rs, {"sz": np.array([6, 9], np.int64)},
                                        axes=[2, 3], mode="linear", opset=18), rs)
    casts = {"x": randn(3, 4, scale=4)}
    add("cast_to_int64", op_model("Cast", ["x"], casts, to=I64, out_types={"y": I64}), casts)
    add("cast_to_bool", op_model("Cast", ["x"], casts, to=B, out_types={"y": B}), casts)
    add("cast_int_to_float", op_model("Cast", ["x"], {"x": ci["x"]}, to=F), {"x": ci["x"]})
    add("cast_like", op_model("CastLike", ["x", "t"], casts, {"t": np.array([1], np.int32)},
                              out_types={"y": I32}), casts)
    wh = {"c": RNG.random((3, 1)) > 0.5, "a": randn(3, 4), "b": randn(4)}
    add("where", op_model("Where", ["c", "a", "b"], wh), wh)
    ex = {"x": randn(3, 1)}
    add("expand", op_model("Expand", ["x", "s"], ex, {"s": np.array([2, 1, 4], np.int64)}), ex)
    add("expand_same_shape", op_model("Expand", ["x", "s"], ex, {"s": np.array([1, 1], np.int64)}), ex)
    add("tile", op_model("Tile", ["x", "r"], s, {"r": np.array([2, 1, 3], np.int64)}), s)
    d2s = {"x": randn(1, 8, 2, 3)}
    add("depth_to_space_dcr", op_model("DepthToSpace", ["x"], d2s, blocksize=2), d2s)
    add("depth_to_space_crd", op_model("DepthToSpace", ["x"], d2s, blocksize=2, mode="CRD"), d2s)
    add("space_to_depth", op_model("SpaceToDepth", ["x"], {"x": randn(1, 2, 4, 6)}, blocksize=2),
        {"x": randn(1, 2, 4, 6)})

    # --- recurrent
    for direction in ("forward", "reverse", "bidirectional"):
        dirs = 2 if direction == "bidirectional" else 1
        seq, batch, inp, hid = 4, 2, 3, 5
        lstm_feeds = {"X": randn(seq, batch, inp)}
        consts = {"W": randn(dirs, 4 * hid, inp, scale=0.5), "R": randn(dirs, 4 * hid, hid, scale=0.5),
                  "B": randn(dirs, 8 * hid, scale=0.5), "h0": randn(dirs, batch, hid),
                  "c0": randn(dirs, batch, hid), "P": randn(dirs, 3 * hid, scale=0.5),
                  "lens": np.full(batch, seq, np.int32)}
        add(f"lstm_{direction}", op_model(
            "LSTM", ["X", "W", "R", "B", "lens", "h0", "c0", "P"], lstm_feeds, consts,
            outputs=("Y", "Y_h", "Y_c"), hidden_size=hid, direction=direction, clip=3.0), lstm_feeds)
        gru_consts = {"W": randn(dirs, 3 * hid, inp, scale=0.5), "R": randn(dirs, 3 * hid, hid, scale=0.5),
                      "B": randn(dirs, 6 * hid, scale=0.5), "h0": randn(dirs, batch, hid)}
        add(f"gru_{direction}", op_model(
            "GRU", ["X", "W", "R", "B", "", "h0"], lstm_feeds, gru_consts, outputs=("Y", "Y_h"),
            hidden_size=hid, direction=direction, linear_before_reset=int(direction == "reverse")),
            lstm_feeds)
    return cases


@pytest.mark.parametrize("model, feeds", _cases())
def test_op_matches_onnxruntime(model, feeds):
    assert_matches(model, feeds)


@pytest.mark.parametrize("op, outputs", [("LSTM", ("Y", "Y_h", "Y_c")), ("GRU", ("", "Y_h"))])
def test_batch_first_rnn_matches_time_major_onnxruntime(op, outputs):
    # onnxruntime runs layout=1 on no CPU kernel, so the oracle is the layout-0 model on
    # transposed data.
    seq, batch, inp, hid, dirs = 4, 2, 3, 5, 2
    gates = 4 if op == "LSTM" else 3
    consts = {"W": randn(dirs, gates * hid, inp, scale=0.5), "R": randn(dirs, gates * hid, hid, scale=0.5),
              "B": randn(dirs, 2 * gates * hid, scale=0.5)}
    x, h0 = randn(batch, seq, inp), randn(batch, dirs, hid)
    inputs = ["X", "W", "R", "B", "", "h0"]
    batch_first = op_model(op, inputs, {"X": x, "h0": h0}, consts, outputs=outputs,
                           hidden_size=hid, direction="bidirectional", layout=1)
    time_major_feeds = {"X": x.transpose(1, 0, 2), "h0": h0.transpose(1, 0, 2)}
    time_major = op_model(op, inputs, time_major_feeds, consts, outputs=outputs,
                          hidden_size=hid, direction="bidirectional")
    expected = run_onnxruntime(time_major, time_major_feeds)
    got = run_ir(load_onnx(batch_first), {"X": x, "h0": h0})
    for name in outputs:
        if not name:
            continue
        want = expected[name].transpose((2, 0, 1, 3) if name == "Y" else (1, 0, 2))
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_upsample_from_opset_9():
    feeds = {"x": randn(1, 2, 3, 4)}
    scales = helper.make_node("Constant", [], ["s"], value=numpy_helper.from_array(
        np.array([1, 1, 2, 3], np.float32)))
    node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")
    model = make([scales, node], feeds, opset=9)
    assert_matches(model, feeds)


def test_constant_forms_and_shape_arithmetic_fold_to_one_reshape():
    feeds = {"x": randn(2, 3, 4)}
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Shape", ["x"], ["tail"], start=-2),
        helper.make_node("Constant", [], ["idx"], value_int=0),
        helper.make_node("Gather", ["shape", "idx"], ["batch"], axis=0),
        helper.make_node("Constant", [], ["ones"], value_ints=[1]),
        helper.make_node("Unsqueeze", ["batch", "ones0"], ["batch1"]),
        helper.make_node("ReduceProd", ["tail"], ["features"], keepdims=1),
        helper.make_node("Concat", ["batch1", "features"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Size", ["x"], ["count"]),
        helper.make_node("Cast", ["count"], ["countf"], to=F),
        helper.make_node("Constant", [], ["half"], value_float=0.5),
        helper.make_node("Constant", [], ["vec"], value_floats=[1.0, 2.0]),
        helper.make_node("Mul", ["countf", "half"], ["scaled"]),
        helper.make_node("Sub", ["flat", "scaled"], ["y"]),
        helper.make_node("ConstantOfShape", ["tail"], ["filled"],
                         value=numpy_helper.from_array(np.array([7], np.int64))),
        helper.make_node("Range", ["r0", "r1", "r2"], ["range"]),
        helper.make_node("Add", ["vec", "sparse"], ["vec_sum"]),
    ]
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([5.0], np.float32)),
                                       numpy_helper.from_array(np.array([1], np.int64)), [2])
    nodes.append(helper.make_node("Constant", [], ["sparse"], sparse_value=sparse))
    nodes.insert(0, nodes.pop())
    model = make(nodes, feeds, {"ones0": np.array([0], np.int64), "r0": np.float32(1),
                                "r1": np.float32(2.2), "r2": np.float32(0.3)},
                 outputs=("y", "filled", "shape", "range", "vec_sum"),
                 out_types={"filled": I64, "shape": I64})
    graph = assert_matches(model, feeds)
    assert [n.op for n in graph.nodes] == ["Reshape", "Sub"]
    assert graph.nodes[0].attrs["shape"] == (2, 12)
    for name in ("filled", "shape", "range", "vec_sum"):
        assert name in graph.constants
    np.testing.assert_array_equal(graph.constants["shape"], [2, 3, 4])


def test_reshape_of_a_run_time_shape_is_refused():
    feeds = {"x": randn(2, 6), "s": np.array([3, 4], np.int64)}
    model = op_model("Reshape", ["x", "s"], feeds)
    with pytest.raises(ConversionError, match="n0.*constant at import.*dynamic"):
        load_onnx(model)


def test_unsupported_ops_are_listed_together():
    feeds = {"x": randn(1, 2, 4, 4)}
    nodes = [
        helper.make_node("NonZero", ["x"], ["v"], name="top1"),
        helper.make_node("NonZero", ["x"], ["v2"], name="top2"),
        helper.make_node("Resize", ["x", "", "sc"], ["r"], name="antialiased", mode="linear", antialias=1),
        helper.make_node("MaxPool", ["x"], ["mp", "mpi"], name="pool_idx", kernel_shape=[2, 2]),
        helper.make_node("Cast", ["x"], ["d"], name="to_complex", to=TensorProto.COMPLEX64),
        helper.make_node("LSTM", ["seq", "W", "R"], ["lstm_y"], name="custom_lstm", hidden_size=2,
                         activations=["Relu", "Tanh", "Tanh"]),
        helper.make_node("Relu", ["x"], ["ok"], name="fine"),
        helper.make_node("MaxRoiPool", ["x", "rois"], ["roi"], name="roipool", pooled_shape=[2, 2]),
        helper.make_node("Gelu", ["x"], ["g"], name="ms_gelu", domain="com.microsoft"),
        helper.make_node("Pad", ["x", "pads"], ["wrapped"], name="wrap", mode="wrap"),
        helper.make_node("Resize", ["x", "", "sc"], ["tf"], name="tf_nn",
                         coordinate_transformation_mode="tf_half_pixel_for_nn"),
        helper.make_node("LSTM", ["seq", "W", "R", "", "lens"], ["lstm2_y"], name="ragged_lstm",
                         hidden_size=2),
        helper.make_node("Dropout", ["x", "", "train"], ["dropped"], name="train_dropout"),
    ]
    model = make(nodes, feeds, {"k": np.array([1], np.int64), "sc": np.array([1, 1, 2, 2], np.float32),
                                "W": randn(1, 8, 3), "R": randn(1, 8, 2), "rois": randn(1, 5),
                                "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                "train": np.array(True)},
                 outputs=("v", "v2", "r", "mp", "mpi", "d", "lstm_y", "ok", "roi", "g", "wrapped",
                          "tf", "lstm2_y", "dropped"),
                 out_types={"mpi": I64, "d": TensorProto.COMPLEX64, "g": (F, (1, 2, 4, 4)), "v": I64, "v2": I64},
                 inputs={"x": (F, (1, 2, 4, 4)), "seq": (F, (3, 1, 3)), "lens": (I32, (1,))},
                 other_domains=["com.microsoft"], opset=19)
    with pytest.raises(UnsupportedOpsError) as info:
        load_onnx(model)
    ops = info.value.ops
    assert ops["NonZero"] == ["top1", "top2"]
    assert ops["MaxRoiPool"] == ["roipool"]
    assert ops["com.microsoft.Gelu"] == ["ms_gelu"]
    assert ops["Resize (antialias=1)"] == ["antialiased"]
    assert ops["MaxPool (Indices output)"] == ["pool_idx"]
    assert ops["Cast (to=complex64)"] == ["to_complex"]
    assert any(k.startswith("LSTM (activations") for k in ops)
    assert ops["Pad (mode=wrap)"] == ["wrap"]
    assert ops["Resize (coordinate_transformation_mode=tf_half_pixel_for_nn)"] == ["tf_nn"]
    assert ops["LSTM (sequence_lens given at run time)"] == ["ragged_lstm"]
    assert ops["Dropout (training_mode=true)"] == ["train_dropout"]
    assert not any("Relu" == k or "fine" in v for k, v in ops.items())
    message = str(info.value)
    assert "NonZero x2: 'top1', 'top2'" in message


def test_complex_tensors_are_unsupported():
    feeds = {"x": np.zeros((2, 2), np.float32)}
    model = op_model("Relu", ["x"], feeds, out_types={"y": (TensorProto.COMPLEX64, (2, 2))})
    with pytest.raises(UnsupportedOpsError) as info:
        load_onnx(model)
    assert info.value.ops == {"Relu (dtype complex64)": ["n0"]}


def test_symbolic_dims_take_default_or_given_shapes():
    node = helper.make_node("Relu", ["x"], ["y"])
    model = make([node], {}, inputs={"x": (F, ("batch", 3, None))})
    graph = load_onnx(model)
    assert graph.tensors["x"].shape == (1, 3, 1)
    assert graph.tensors["y"].shape == (1, 3, 1)
    assert graph.dynamic_dims == {"x": (0, 2)}
    graph = load_onnx(model, input_shapes={"x": (4, 3, 7)}, default_dim=2)
    assert graph.tensors["y"].shape == (4, 3, 7)
    assert graph.dynamic_dims == {"x": (0, 2)}
    assert load_onnx(model, default_dim=5).tensors["y"].shape == (5, 3, 5)
    with pytest.raises(ConversionError, match="axis 1 is fixed to 3"):
        load_onnx(model, input_shapes={"x": (4, 2, 7)})
    with pytest.raises(ConversionError, match="not graph inputs"):
        load_onnx(model, input_shapes={"nope": (1,)})


def test_symbolic_batch_runs_at_the_requested_size():
    feeds = {"x": randn(3, 5)}
    model = make([helper.make_node("MatMul", ["x", "w"], ["y"])], feeds, {"w": randn(5, 2)},
                 inputs={"x": (F, ("n", 5))})
    assert_matches(model, feeds, input_shapes={"x": (3, 5)})


def test_opset_and_checker_errors():
    # Opset 22 only widened Relu's and Conv's types: imported as the opset-21 definitions.
    assert_matches(op_model("Relu", ["x"], {"x": randn(2)}, opset=22), {"x": randn(2)})
    # The model declares no default-domain opset at all.
    model = op_model("Relu", ["x"], {"x": randn(2)})
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(ConversionError):
        load_onnx(model)
    broken = op_model("Relu", ["x"], {"x": randn(2)})
    broken.graph.node[0].input[0] = "missing"
    with pytest.raises(ConversionError, match="checker"):
        load_onnx(broken)


def test_file_path_and_names_kept(tmp_path):
    feeds = {"input.1": randn(2, 3)}
    nodes = [helper.make_node("Relu", ["input.1"], ["mid"], name="act"),
             helper.make_node("Gemm", ["mid", "w"], ["out:0"], name="fc", transB=1)]
    model = make(nodes, feeds, {"w": randn(4, 3)}, outputs=("out:0",))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert_matches(onnx.load(str(path)), feeds)
    graph_from_path = load_onnx(path)
    assert graph_from_path.inputs == ("input.1",) and graph_from_path.outputs == ("out:0",)
    assert [n.name for n in graph_from_path.nodes] == ["act", "fc"]
    assert [n.op for n in graph_from_path.nodes] == ["Relu", "FullyConnected"]
    external = tmp_path / "external.onnx"
    onnx.save(model, str(external), save_as_external_data=True, size_threshold=0,
              location="external.bin")
    graph_external = load_onnx(external)
    np.testing.assert_array_equal(graph_external.constants[graph_external.nodes[1].inputs[1]],
                                  graph_from_path.constants[graph_from_path.nodes[1].inputs[1]])


LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


# light_vgg19 is left out: its full-resolution 3x3 convolutions take the NumPy reference
# 15-30 s, and its shipped output is the same uniform softmax the others check.
LIGHT_MODELS = sorted(f[:-5] for f in os.listdir(LIGHT_DIR)
                      if f.endswith(".onnx") and f != "light_vgg19.onnx")


def _light_input(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The input onnx's backend runner makes for light models: arange(n) / n in the input's shape."""
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for value_info in model.graph.input:
        if value_info.name in initializers:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                      for d in value_info.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds[value_info.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feeds


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_shipped_output(name):
    model = onnx.load(os.path.join(LIGHT_DIR, f"{name}.onnx"))
    assert model.opset_import[0].version < 13
    feeds = _light_input(model)
    expected = numpy_helper.to_array(onnx.load_tensor(os.path.join(LIGHT_DIR, f"{name}_output_0.pb")))
    graph = load_onnx(model)
    got = run_ir(graph, feeds)[graph.outputs[0]]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def _with_random_weights(model: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """The light models build every weight with ConstantOfShape(0.02), so their shipped output is
    a uniform softmax; random weights make a comparison that can tell channels apart."""
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in initializers:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in initializers[node.input[0]])
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            # biases, BatchNorm scale/shift/mean/var: positive keeps the variances valid
            value = rng.uniform(0.5, 1.5, shape)
        model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
        if model.ir_version < 4:  # initializers had to be graph inputs too
            model.graph.input.append(helper.make_tensor_value_info(node.output[0], F, shape))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet", "light_inception_v1",
                                  "light_densenet121"])
def test_light_model_with_random_weights_matches_onnxruntime(name):
    model = _with_random_weights(onnx.load(os.path.join(LIGHT_DIR, f"{name}.onnx")), seed=7)
    feeds = {k: RNG.random(v.shape, dtype=np.float32) for k, v in _light_input(model).items()}
    expected = run_onnxruntime(model, feeds)
    graph = load_onnx(model)
    got = run_ir(graph, feeds)
    for output, want in expected.items():
        assert want.std() > 1e-4, "the weights did not make the output informative"
        # float32 sums over hundreds of layers: the error scales with the output's magnitude
        np.testing.assert_allclose(got[output], want, rtol=1e-4, atol=1e-5 * np.abs(want).max(),
                                   err_msg=output)


def test_reshape_copying_a_dim_the_input_lacks_is_refused():
    """A 0 in Reshape's shape copies the input's dim at that position; past the input's rank there
    is none, and the importer says so (a fuzzed file once made this an IndexError)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])], "reshape_copy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2, 1])],
        [numpy_helper.from_array(np.array([3, 2, 0], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match="copies dim 2 .* has only 2 dims"):
        load_onnx(model)


@pytest.mark.parametrize("op, attrs, words", [
    ("Conv", {"strides": []}, r"strides \[\] must hold 2 values >= 1"),
    ("Conv", {"strides": [0, 1]}, r"strides \[0, 1\] must hold 2 values >= 1"),
    ("Conv", {"dilations": [1]}, r"dilations \[1\] must hold 2 values >= 1"),
    ("MaxPool", {"kernel_shape": [3]}, r"kernel_shape \[3\] must hold 2 values >= 1"),
    ("AveragePool", {"kernel_shape": [3, 3], "strides": [1, 1, 1]}, r"strides \[1, 1, 1\] must hold 2"),
])
def test_spatial_attributes_without_one_positive_value_per_dim_are_refused(op, attrs, words):
    """Kernel, strides and dilations give one value >= 1 per spatial dim; a fuzzed file with an
    empty strides list once made this an IndexError (a zero stride, a ZeroDivisionError)."""
    inputs, consts = ["x"], []
    if op == "Conv":
        inputs.append("w")
        consts.append(numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w"))
        attrs = {"kernel_shape": [3, 3], **attrs}
    node = helper.make_node(op, inputs, ["y"], name="n0")
    node.attribute.extend(helper.make_attribute(key, value, attr_type=onnx.AttributeProto.INTS)
                          for key, value in attrs.items())
    graph = helper.make_graph(
        [node], "spatial",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ConversionError, match="node 'n0' .*" + words):
        load_onnx(model)

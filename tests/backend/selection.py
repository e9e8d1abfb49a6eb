"""Which tests of the ONNX backend suite (shipped in the ``onnx`` package) we run, and why some are
left out.

Node tests: every test whose model uses only ONNX ops the importer accepts (its table,
``converter.importers.onnx.ONNX_OPS``: the ops of ``SUPPORTED_ONNX_OPS`` and the quantization ops; the
``*_expanded`` function-body variants count when all their ops are accepted; the ops of If, Loop and
Scan subgraphs count too). Of those, a test is
excluded only for a reason the design states on purpose, one line each in ``EXCLUDED`` or by the
rules of ``exclusion_reason`` (dtypes the runtime does not compute in; quantization ops in a model with
float boundaries that is not a quantized float model); everything else is attempted and must pass.
Quantization ops with quantized tensors (integers other than int32, float8, float4) at the model's
boundary are exact arithmetic (``converter.importers.onnx_quant_exact``) and run.

Model tests: the ``real`` models (Inception v1/v2, ResNet-50, SqueezeNet, DenseNet-121, ShuffleNet,
VGG-19, AlexNet, ZFNet-512). Since onnx 1.16 the suite runs them from the ``light_*`` copies shipped in
``onnx/backend/test/data/light`` (same graphs, constant-filled weights, no download), with reference
outputs stored beside them.
"""
from __future__ import annotations

import functools
import re

import ml_dtypes
import numpy as np
import onnx


# (regex on the test name, reason). Each is a deliberate limit of the converter's design.
EXCLUDED: list[tuple[str, str]] = [
    (r"^test_batchnorm_.*_training_mode", "training-mode BatchNormalization (batch statistics): inference only"),
    (r"^test_training_dropout", "training-mode Dropout (random masks): inference only"),
    (r"^test_resize_.*antialias", "Resize antialias=1: not supported"),
    (r"^test_resize_tf_crop_and_resize", "Resize coordinate mode tf_crop_and_resize (roi): not supported"),
    (r"^test_resize_.*half_pixel_symmetric", "Resize coordinate mode half_pixel_symmetric: not supported"),
    (r"^test_resize_.*_not_(larger|smaller)$", "Resize keep_aspect_ratio_policy: not supported"),
    (r"^test_maxpool_with_argmax", "MaxPool's Indices output: not supported"),
    (r"^test_wrap_pad$", "Pad mode=wrap: constant, reflect and edge only"),
    (r"^test_equal_string", "string tensors: numeric and bool only"),
    (r"^test_spacetodepth_crd_mode_example$", "SpaceToDepth mode=CRD: newer than the installed onnx package's schema, refused"),
    (r"^test_maxpool_2d_uint8$", "MaxPool on integers: float only"),
    (r"^test_range_b?float16_type_positive_delta$", "Range at an opset newer than the installed onnx package can convert down: refused"),
    (r"^test_attention_4d_causal_fp16_expanded$",
     "float16 computed in float32: the long attention chain differs from the float16-computed reference beyond the suite's tolerance"),
    (r"^test_scan_sum$",
     "Scan at opset 8 (the batch form): the onnx package's version converter cannot bring it to opset 9; refused"),
    (r"^test_einsum_batch_diagonal", "Einsum with a repeated label in one term (diagonal or trace): refused"),
    (r"^test_attention_(?!.*_expanded).*(nonpad|padded_kv)", "Attention's nonpad_kv_seqlen (input 6, opset 24's external cache): refused"),
    (r"^test_attention_(3d_)?(local|bidirectional)_window(?!.*_expanded)",
     "Attention at opset 25 (sliding windows): the importer converts Attention up to opset 24; refused"),
    (r"^test_dft_inverse(_opset19)?$",
     "DFT inverse computed in float32: imaginary parts that cancel to zero come out ~2e-7, over the suite's 1e-7 "
     "absolute tolerance (the reference computes in float64; onnxruntime fails every DFT test here)"),
    (r"^test_maxunpool_export_with_output_shape$",
     "MaxUnpool with an output_shape past the inverted shape: the suite's output reads the indices in the inverted "
     "shape; the importer reads them in output_shape, the tensor MaxPool pooled, as onnxruntime does"),
    (r"^test_bitcast_(float64_to|.*_to_float64)",
     "BitCast to or from float64: computed in float32, so its bits are not kept; refused"),
]

# The dtypes a model may use: the runtime's computing ones, and those kept at the model's boundary
# (the importer casts them to float32 or int32 there; converter.importers.onnx_builder.BOUNDARY_DTYPES).
NARROW_DTYPES = {np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz, ml_dtypes.float8_e5m2,
                                       ml_dtypes.float8_e5m2fnuz, ml_dtypes.float8_e8m0fnu, ml_dtypes.float4_e2m1fn,
                                       ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)}
RUNTIME_DTYPES = {np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.bool_),
                  np.dtype(np.float16), np.dtype(np.float64), np.dtype(np.int8), np.dtype(np.uint8),
                  np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64),
                  np.dtype(ml_dtypes.bfloat16), *NARROW_DTYPES}

REAL_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
               "squeezenet", "vgg19", "zfnet512")


def _graph_dtypes(model: onnx.ModelProto) -> set[np.dtype]:
    dtypes = set()
    graph = model.graph
    for value in [*graph.input, *graph.output, *graph.value_info]:
        elem = value.type.tensor_type.elem_type
        if value.type.HasField("tensor_type") and elem:
            try:
                dtypes.add(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))
            except Exception:
                dtypes.add(np.dtype("V1"))
        elif not value.type.HasField("tensor_type"):
            dtypes.add(np.dtype("O"))
    for tensor in graph.initializer:
        dtypes.add(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)))
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to":
                dtypes.add(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr.i)))
            if attr.type == onnx.AttributeProto.TENSOR:
                dtypes.add(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(attr.t.data_type)))
    return dtypes


QUANTIZED_MODELS_ONLY = ("quantization ops between float boundaries: the importer takes them as the patterns of a "
                         "quantized float model (QDQ groups, QOperator ops, quantize_dynamic; tests/converter/"
                         "test_onnx_quant_import.py); with quantized boundaries they are exact arithmetic")


def exclusion_reason(name: str, model: onnx.ModelProto) -> str | None:
    from converter.importers.onnx import QUANTIZATION_OPS
    from converter.importers.onnx_quant_exact import computes_exactly

    for pattern, reason in EXCLUDED:
        if re.search(pattern, name):
            return reason
    dtypes = _graph_dtypes(model)
    unsupported = sorted(str(d) for d in dtypes - RUNTIME_DTYPES)
    if unsupported:
        return (f"dtype outside float32, int32, int64 and bool (computed) and float16, bfloat16, float64, int8, "
                f"uint8, int16, uint16, uint32, uint64, float8, float4, int4, uint4, int2, uint2 (boundary) "
                f"| {', '.join(unsupported)}")
    if any(node.op_type in QUANTIZATION_OPS for node in model.graph.node) and not computes_exactly(model, QUANTIZATION_OPS):
        return QUANTIZED_MODELS_ONLY
    return None


@functools.lru_cache(maxsize=1)
def node_tests() -> tuple:
    """The backend suite's node test cases for supported ops: (name, TestCase) pairs."""
    from onnx.backend.test.loader import load_model_tests

    from converter.importers.onnx import ONNX_OPS

    from converter.importers.onnx_control import all_nodes

    supported = set(ONNX_OPS)
    with np.errstate(all="ignore"):
        cases = load_model_tests(kind="node")
    # The nodes of If/Loop/Scan subgraphs count: the importer writes them out as ops of the graph.
    return tuple((c.name, c) for c in cases if c.model is not None
                 and {n.op_type for n in all_nodes(c.model.graph)} <= supported)


@functools.lru_cache(maxsize=1)
def classified() -> tuple[tuple[str, ...], dict[str, str]]:
    """(attempted node test names, {excluded name: reason})."""
    attempted, excluded = [], {}
    for name, test_case in node_tests():
        reason = exclusion_reason(name, test_case.model)
        if reason:
            excluded[name] = reason
        else:
            attempted.append(name)
    return tuple(attempted), excluded

"""Every mapped TFLite op, in a small .tflite file built here, converted and run by the C runtime
against LiteRT running the same file: max |edge - LiteRT| <= 1e-5 * max |LiteRT|."""
from __future__ import annotations

import importlib
import struct

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (the LiteRT oracle) is not installed")

from converter.api import convert  # noqa: E402
from converter.errors import ConversionError, UnsupportedOpsError  # noqa: E402
from tests.fixtures.tflite_models import TFLiteBuilder, relative_error, run_edge, run_litert  # noqa: E402

TOLERANCE = 1e-5
RELU, RELU_N1_TO_1, RELU6, TANH = 1, 2, 3, 4
SAME, VALID = 0, 1


def opts(name: str, **fields):
    cls = getattr(importlib.import_module(f"converter.tflitefb.{name}"), name + "T")
    obj = cls()
    for key, value in fields.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{name} has no field {key}")
        setattr(obj, key, value)
    return obj


def rand(rng, *shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, shape).astype(np.float32)


def single(op, x_shape, consts=(), options=None, extra_inputs=(), custom=None, n_outputs=1, version=1,
           const_first=False, low=-1.0, high=1.0):
    """One op over input x (plus constants, in order) -> outputs y0..; returns (file, feeds)."""
    rng = np.random.default_rng(sum(op.encode()))
    b = TFLiteBuilder()
    x = b.input("x", x_shape)
    ins = [b.constant(f"c{k}", c) if c is not None else -1 for k, c in enumerate(consts)]
    inputs = ins + [x] if const_first else [x] + ins
    outs = [b.tensor(f"y{k}") for k in range(n_outputs)]
    b.op(op, inputs, outs, options, custom, version)
    return b.finish([x], outs), {"x": rand(rng, *x_shape, low=low, high=high)}


def binary(op, a_shape, b_shape, activation=0):
    rng = np.random.default_rng(7)
    b = TFLiteBuilder()
    x = b.input("a", a_shape)
    y = b.input("b", b_shape)
    out = b.tensor("y")
    name = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}.get(op)
    options = opts(name, fusedActivationFunction=activation) if name else None
    b.op(op, [x, y], [out], options)
    feeds = {"a": rand(rng, *a_shape, low=-3, high=3), "b": rand(rng, *b_shape, low=0.5, high=2)}
    if op != "DIV":
        feeds["b"] *= np.where(rng.random(b_shape) < 0.5, -1, 1).astype(np.float32)
    return b.finish([x, y], [out]), feeds


R = np.random.default_rng(1)


def conv(padding, stride, dilation, activation, cin=3, cout=5, k=3, shape=(1, 9, 11, 3)):
    return single("CONV_2D", shape, [rand(R, cout, k, k, cin), rand(R, cout)],
                  opts("Conv2DOptions", padding=padding, strideW=stride[1], strideH=stride[0],
                       dilationWFactor=dilation[1], dilationHFactor=dilation[0],
                       fusedActivationFunction=activation), version=2)


def depthwise(padding, stride, multiplier, activation=0, cin=4):
    return single("DEPTHWISE_CONV_2D", (1, 10, 9, cin), [rand(R, 1, 3, 3, cin * multiplier), rand(R, cin * multiplier)],
                  opts("DepthwiseConv2DOptions", padding=padding, strideW=stride, strideH=stride,
                       depthMultiplier=multiplier, fusedActivationFunction=activation), version=2)


def pool(op, padding, kernel, stride, activation=0):
    return single(op, (1, 9, 10, 4), (), opts("Pool2DOptions", padding=padding, strideW=stride, strideH=stride,
                                              filterWidth=kernel, filterHeight=kernel,
                                              fusedActivationFunction=activation))


def transpose_conv(padding, stride, out_hw, with_bias, kernel=3, activation=0):
    rng = np.random.default_rng(3)
    b = TFLiteBuilder()
    x = b.input("x", (1, 5, 6, 4))
    shape = b.constant("shape", np.array([1, *out_hw, 3], np.int32))
    w = b.constant("w", rand(rng, 3, kernel, kernel, 4))
    ins = [shape, w, x]
    if with_bias:
        ins.append(b.constant("bias", rand(rng, 3)))
    y = b.tensor("y")
    b.op("TRANSPOSE_CONV", ins, [y], opts("TransposeConvOptions", padding=padding, strideW=stride, strideH=stride,
                                          fusedActivationFunction=activation),
         version=4 if activation else 3 if with_bias else 1)
    return b.finish([x], [y]), {"x": rand(rng, 1, 5, 6, 4)}


def mediapipe_transpose(padding, stride, kernel):
    rng = np.random.default_rng(4)
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 7, 5))
    w = b.constant("w", rand(rng, 2, kernel, kernel, 5))
    bias = b.constant("bias", rand(rng, 2))
    y = b.tensor("y", shape=(1, 6 * stride, 7 * stride, 2) if padding == 1 else
                 (1, 5 * stride + kernel, 6 * stride + kernel, 2))
    b.op("CUSTOM:Convolution2DTransposeBias", [x, w, bias], [y],
         custom_options=struct.pack("<iii", padding, stride, stride))
    return b.finish([x], [y]), {"x": rand(rng, 1, 6, 7, 5)}


def fp16_weights():
    rng = np.random.default_rng(5)
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 6, 3))
    w16 = b.constant("w16", rand(rng, 4, 3, 3, 3).astype(np.float16))
    w = b.tensor("w")
    b.op("DEQUANTIZE", [w16], [w])
    y = b.tensor("y")
    bias = b.constant("bias", np.zeros(4, np.float32))
    b.op("CONV_2D", [x, w, bias], [y], opts("Conv2DOptions", padding=SAME, strideW=1, strideH=1))
    return b.finish([x], [y]), {"x": rand(rng, 1, 6, 6, 3)}


def resize(op, size, align=False, half=False, shape=(1, 5, 7, 3)):
    name = "ResizeBilinearOptions" if op == "RESIZE_BILINEAR" else "ResizeNearestNeighborOptions"
    return single(op, shape, [np.array(size, np.int32)], opts(name, alignCorners=align, halfPixelCenters=half),
                  version=3 if half else 1)


def strided_slice(begin, end, strides, begin_mask=0, end_mask=0, shrink=0, offset=False, ellipsis=0, new_axis=0):
    return single("STRIDED_SLICE", (2, 7, 8, 3), [np.array(v, np.int32) for v in (begin, end, strides)],
                  opts("StridedSliceOptions", beginMask=begin_mask, endMask=end_mask, shrinkAxisMask=shrink,
                       offset=offset, ellipsisMask=ellipsis, newAxisMask=new_axis), version=5 if offset else 1)


def gather(params_shape, indices, axis, batch_dims, indices_fed=False):
    """GATHER of x by ``indices``: a constant, or with ``indices_fed`` a second graph input."""
    if not indices_fed:
        return single("GATHER", params_shape, [indices], opts("GatherOptions", axis=axis, batchDims=batch_dims))
    rng = np.random.default_rng(13)
    b = TFLiteBuilder()
    x, i = b.input("x", params_shape), b.input("i", indices.shape, str(indices.dtype))
    y = b.tensor("y")
    b.op("GATHER", [x, i], [y], opts("GatherOptions", axis=axis, batchDims=batch_dims))
    return b.finish([x, i], [y]), {"x": rand(rng, *params_shape), "i": indices}


def reduce(op, axes, keep):
    return single(op, (2, 5, 6, 3), [np.array(axes, np.int32)], opts("ReducerOptions", keepDims=keep))


def fully_connected(shape, n, keep, activation=0):
    k = shape[-1] if keep else int(np.prod(shape[1:]))
    return single("FULLY_CONNECTED", shape, [rand(R, n, k), rand(R, n)],
                  opts("FullyConnectedOptions", keepNumDims=keep, fusedActivationFunction=activation),
                  version=5 if keep else 1)


def sparse_weights(block):
    """DENSIFY of a [6, 8] weight stored dense in dim 0 and CSR in dim 1 (in blocks of 1x4 along
    dim 1 with ``block``), feeding a FULLY_CONNECTED."""
    from converter.tflitefb.DimensionMetadata import DimensionMetadataT
    from converter.tflitefb.Int32Vector import Int32VectorT
    from converter.tflitefb.SparsityParameters import SparsityParametersT
    from converter.tflitefb.Uint8Vector import Uint8VectorT

    rng = np.random.default_rng(9)
    dense = rand(rng, 6, 8)
    bs = 4 if block else 1
    keep = rng.random((6, 8 // bs)) < 0.5
    dense *= np.repeat(keep, bs, axis=1)
    values, segments, indices = [], [0], []
    for row in range(6):
        for col in range(8 // bs):
            if keep[row, col]:
                indices.append(col)
                values.extend(dense[row, col * bs:(col + 1) * bs])
        segments.append(len(indices))

    def level(fmt, size=0, seg=None, idx=None):
        meta = DimensionMetadataT()
        meta.format, meta.denseSize = fmt, size
        if seg is not None:
            meta.arraySegmentsType, meta.arraySegments = 1, Int32VectorT()
            meta.arraySegments.values = seg
            meta.arrayIndicesType, meta.arrayIndices = 3, Uint8VectorT()
            meta.arrayIndices.values = idx
        return meta

    sparsity = SparsityParametersT()
    sparsity.traversalOrder = [0, 1, 2] if block else [0, 1]
    sparsity.blockMap = [1] if block else None
    sparsity.dimMetadata = [level(0, 6), level(1, seg=segments, idx=indices)] + ([level(0, bs)] if block else [])
    b = TFLiteBuilder()
    x = b.input("x", (3, 8))
    w_sparse = b.constant("w_sparse", np.array(values, np.float32))
    b.tensors[w_sparse].shape = [6, 8]
    b.tensors[w_sparse].sparsity = sparsity
    w = b.tensor("w")
    b.op("DENSIFY", [w_sparse], [w])
    y = b.tensor("y")
    b.op("FULLY_CONNECTED", [x, w, b.constant("bias", rand(rng, 6))], [y], opts("FullyConnectedOptions"))
    return b.finish([x], [y]), {"x": rand(rng, 3, 8)}


CASES = {
    "densify_csr": lambda: sparse_weights(False),
    "densify_block_csr": lambda: sparse_weights(True),
    "conv_same_relu": lambda: conv(SAME, (1, 1), (1, 1), RELU),
    "conv_valid_stride2_relu6": lambda: conv(VALID, (2, 2), (1, 1), RELU6),
    "conv_same_stride2_odd": lambda: conv(SAME, (2, 2), (1, 1), 0, shape=(1, 10, 11, 3)),
    "conv_dilated": lambda: conv(SAME, (1, 1), (2, 2), 0),
    "conv_1x1_relu_n1_to_1": lambda: conv(VALID, (1, 1), (1, 1), RELU_N1_TO_1, cin=8, cout=6, k=1, shape=(1, 4, 5, 8)),
    "depthwise_same": lambda: depthwise(SAME, 1, 1, RELU),
    "depthwise_stride2": lambda: depthwise(SAME, 2, 1, RELU6),
    "depthwise_multiplier2_valid": lambda: depthwise(VALID, 1, 2),
    "transpose_conv_same_s2": lambda: transpose_conv(SAME, 2, (10, 12), False),
    "transpose_conv_valid_bias": lambda: transpose_conv(VALID, 2, (11, 13), True),
    "transpose_conv_k2_s2_bias_relu": lambda: transpose_conv(SAME, 2, (10, 12), True, kernel=2, activation=RELU),
    "transpose_conv_k2_s2_valid": lambda: transpose_conv(VALID, 2, (10, 12), False, kernel=2),
    "transpose_conv_same_s1_bias": lambda: transpose_conv(SAME, 1, (5, 6), True),
    "mediapipe_transpose_same": lambda: mediapipe_transpose(1, 2, 2),
    "mediapipe_transpose_same_k4": lambda: mediapipe_transpose(1, 2, 4),
    "fully_connected": lambda: fully_connected((3, 10), 7, False, RELU),
    "fully_connected_flattens": lambda: fully_connected((2, 3, 4), 5, False),
    "fully_connected_keep_dims": lambda: fully_connected((2, 3, 4), 5, True),
    "batch_matmul": lambda: single("BATCH_MATMUL", (2, 3, 4), [rand(R, 2, 5, 4)], opts("BatchMatMulOptions", adjY=True)),
    "add_broadcast_relu": lambda: binary("ADD", (1, 4, 5, 3), (3,), RELU),
    "sub_relu6": lambda: binary("SUB", (1, 4, 5, 3), (1, 4, 5, 3), RELU6),
    "mul_broadcast_relu_n1_to_1": lambda: binary("MUL", (2, 3, 4), (1, 3, 1), RELU_N1_TO_1),
    "div_relu_n1_to_1": lambda: binary("DIV", (2, 3, 4), (2, 3, 4), RELU_N1_TO_1),
    "div": lambda: binary("DIV", (2, 3, 4), (4,)),
    "maximum": lambda: binary("MAXIMUM", (2, 3, 4), (3, 4)),
    "minimum": lambda: binary("MINIMUM", (2, 3, 4), (3, 4)),
    "squared_difference": lambda: binary("SQUARED_DIFFERENCE", (2, 3, 4), (2, 3, 4)),
    "prelu": lambda: single("PRELU", (1, 4, 5, 3), [rand(R, 1, 1, 3)]),
    "relu": lambda: single("RELU", (2, 3, 4)),
    "relu6": lambda: single("RELU6", (2, 3, 4)),
    "relu_n1_to_1": lambda: single("RELU_N1_TO_1", (2, 3, 4)),
    "logistic": lambda: single("LOGISTIC", (2, 3, 4)),
    "tanh": lambda: single("TANH", (2, 3, 4)),
    "hard_swish": lambda: single("HARD_SWISH", (2, 3, 40)),
    "leaky_relu": lambda: single("LEAKY_RELU", (2, 3, 4), (), opts("LeakyReluOptions", alpha=0.2)),
    "elu": lambda: single("ELU", (2, 3, 4)),
    "gelu": lambda: single("GELU", (2, 3, 4), (), opts("GeluOptions", approximate=False)),
    "gelu_tanh": lambda: single("GELU", (2, 3, 4), (), opts("GeluOptions", approximate=True)),
    "exp": lambda: single("EXP", (2, 3, 4)),
    "abs": lambda: single("ABS", (2, 3, 4)),
    "neg": lambda: single("NEG", (2, 3, 4)),
    "square": lambda: single("SQUARE", (2, 3, 4)),
    "floor": lambda: single("FLOOR", (2, 3, 4), low=-3, high=3),
    "ceil": lambda: single("CEIL", (2, 3, 4), low=-3, high=3),
    "sin": lambda: single("SIN", (2, 3, 4), low=-3, high=3),
    "cos": lambda: single("COS", (2, 3, 4), low=-3, high=3),
    "log": lambda: single("LOG", (2, 3, 4), low=0.1, high=4),
    "sqrt": lambda: single("SQRT", (2, 3, 4), low=0.0, high=4),
    "rsqrt": lambda: single("RSQRT", (2, 3, 4), low=0.1, high=4),
    "relu_0_to_1": lambda: single("RELU_0_TO_1", (2, 3, 4), low=-2, high=2),
    "pow": lambda: single("POW", (2, 3, 4), [np.array([2.5, 1.0, 0.5, 3.0], np.float32)], low=0.1, high=2),
    "reduce_min": lambda: reduce("REDUCE_MIN", [2], False),
    "reduce_prod": lambda: reduce("REDUCE_PROD", [3], True),
    "max_pool_same": lambda: pool("MAX_POOL_2D", SAME, 3, 2),
    "max_pool_valid_relu": lambda: pool("MAX_POOL_2D", VALID, 2, 2, RELU),
    "avg_pool_same": lambda: pool("AVERAGE_POOL_2D", SAME, 3, 2),
    "avg_pool_valid": lambda: pool("AVERAGE_POOL_2D", VALID, 3, 1),
    "mean_hw_keep": lambda: reduce("MEAN", [1, 2], True),
    "mean_last": lambda: reduce("MEAN", [-1], False),
    "sum": lambda: reduce("SUM", [0, 2], False),
    "reduce_max": lambda: reduce("REDUCE_MAX", [1], True),
    "reshape": lambda: single("RESHAPE", (2, 3, 4), [np.array([4, -1], np.int32)]),
    "squeeze": lambda: single("SQUEEZE", (1, 3, 1, 4), (), opts("SqueezeOptions", squeezeDims=[2])),
    "expand_dims": lambda: single("EXPAND_DIMS", (3, 4), [np.array([1], np.int32)]),
    "concatenation": lambda: single("CONCATENATION", (1, 4, 5, 3), [rand(R, 1, 4, 5, 2)],
                                    opts("ConcatenationOptions", axis=-1, fusedActivationFunction=RELU)),
    "pad": lambda: single("PAD", (1, 4, 5, 3), [np.array([[0, 0], [1, 2], [2, 1], [0, 0]], np.int32)]),
    "padv2": lambda: single("PADV2", (1, 4, 5, 3), [np.array([[0, 0], [1, 0], [0, 3], [1, 1]], np.int32),
                                                     np.array([0.5], np.float32)]),
    "mirror_pad_reflect": lambda: single("MIRROR_PAD", (1, 4, 5, 3), [np.array([[0, 0], [2, 1], [1, 3], [0, 0]], np.int32)],
                                         opts("MirrorPadOptions", mode=0)),
    "mirror_pad_symmetric": lambda: single("MIRROR_PAD", (1, 4, 5, 3),
                                           [np.array([[0, 0], [2, 1], [1, 3], [0, 0]], np.int32)],
                                           opts("MirrorPadOptions", mode=1)),
    # SYMMETRIC pads may reach the whole dimension (3 of 3, 5 of 5), on every axis, the batch too.
    "mirror_pad_symmetric_whole_dims": lambda: single("MIRROR_PAD", (2, 3, 5, 2),
                                                      [np.array([[1, 2], [3, 0], [5, 4], [2, 1]], np.int32)],
                                                      opts("MirrorPadOptions", mode=1)),
    "strided_slice": lambda: strided_slice([0, 1, 0, 0], [2, 6, 8, 3], [1, 2, 3, 1]),
    "strided_slice_masks": lambda: strided_slice([1, 5, 2, 1], [0, 0, 7, 0], [1, 1, 2, 1], begin_mask=0b0001,
                                                 end_mask=0b1011),
    "strided_slice_negative": lambda: strided_slice([0, -1, 0, 0], [2, -8, 8, 3], [1, -2, 1, 1], end_mask=0b0010),
    "strided_slice_reverse_masked": lambda: strided_slice([0, 3, 0, 0], [2, 0, 8, 3], [1, -1, 1, 1],
                                                          begin_mask=0b0010, end_mask=0b0010),
    "strided_slice_shrink": lambda: strided_slice([0, 2, 0, 1], [2, 3, 8, 2], [1, 1, 1, 1], shrink=0b1010),
    "strided_slice_offset": lambda: strided_slice([0, 1, 2, 0], [2, 3, 4, 3], [1, 1, 1, 1], offset=True),
    # offset: the size counts from the resolved start, -1 -> 6 here (not from the -1 written).
    "strided_slice_offset_negative_begin": lambda: strided_slice([0, -1, -5, 0], [2, 1, 3, 3], [1, 1, 1, 1],
                                                                 offset=True),
    "strided_slice_offset_backward": lambda: strided_slice([0, -2, 6, 0], [2, -3, -6, 3], [1, -1, -2, 1],
                                                           offset=True),
    # x[1:2, ..., ::-2]: the ellipsis covers H and W, the last spec C backward.
    "strided_slice_ellipsis_middle": lambda: strided_slice([1, 0, 0], [2, 0, 0], [1, 1, -2], begin_mask=0b100,
                                                           end_mask=0b100, ellipsis=0b010),
    # x[None, ..., 6:0:-3, ::-1]: a new leading axis, the ellipsis over N and H, W and C backward.
    "strided_slice_new_axis_ellipsis_backward": lambda: strided_slice([0, 0, 6, 0], [0, 0, 0, 0], [1, 1, -3, -1],
                                                                      begin_mask=0b1000, end_mask=0b1000,
                                                                      ellipsis=0b0010, new_axis=0b0001),
    # x[1, None, :, -2]: shrunk N and C around a new axis.
    "strided_slice_new_axis_shrink": lambda: strided_slice([1, 0, 0, -2], [2, 0, 0, -1], [1, 1, 1, 1],
                                                           begin_mask=0b0100, end_mask=0b0100, shrink=0b1001,
                                                           new_axis=0b0010),
    # x[..., 0:1, 1:6:2, 0:3, 0:1] on a rank-4 input: TensorFlow's ellipsis would cover no axis;
    # LiteRT's covers one (N), gives the next three specs to H, W, C and drops the last.
    "strided_slice_ellipsis_over_nothing": lambda: strided_slice([0, 0, 1, 0, 0], [0, 1, 6, 3, 1], [1, 1, 2, 1, 1],
                                                                 ellipsis=0b00001),
    # x[..., 2:5:2, None, 1:-1, ::2]: the ellipsis covers N, with a new axis after H.
    "strided_slice_ellipsis_new_axis_inside": lambda: strided_slice([0, 2, 0, 1, 0], [0, 5, 0, -1, 0],
                                                                    [1, 2, 1, 1, 2], begin_mask=0b10000,
                                                                    end_mask=0b10000, ellipsis=0b00001,
                                                                    new_axis=0b00100),
    # A new-axis bit on the ellipsis's own spec does nothing; a shrink with begin_mask takes index 0.
    "strided_slice_ellipsis_and_new_axis_bit": lambda: strided_slice([0, 3, 0], [0, 4, 0], [1, 1, 1],
                                                                     begin_mask=0b100, shrink=0b100,
                                                                     ellipsis=0b001, new_axis=0b001),
    "slice": lambda: single("SLICE", (2, 7, 8, 3), [np.array([1, 2, 0, 1], np.int32), np.array([1, -1, 5, 2], np.int32)]),
    "transpose": lambda: single("TRANSPOSE", (2, 3, 4, 5), [np.array([0, 3, 1, 2], np.int32)]),
    "resize_bilinear": lambda: resize("RESIZE_BILINEAR", [10, 14]),
    "resize_bilinear_align": lambda: resize("RESIZE_BILINEAR", [9, 11], align=True),
    "resize_bilinear_half_pixel": lambda: resize("RESIZE_BILINEAR", [10, 21], half=True),
    "resize_bilinear_down": lambda: resize("RESIZE_BILINEAR", [3, 4], half=True, shape=(1, 9, 12, 2)),
    "resize_nearest": lambda: resize("RESIZE_NEAREST_NEIGHBOR", [10, 21]),
    "resize_nearest_align": lambda: resize("RESIZE_NEAREST_NEIGHBOR", [9, 11], align=True),
    "resize_nearest_half_pixel": lambda: resize("RESIZE_NEAREST_NEIGHBOR", [13, 10], half=True),
    "depth_to_space": lambda: single("DEPTH_TO_SPACE", (1, 3, 4, 12), (), opts("DepthToSpaceOptions", blockSize=2)),
    "space_to_depth": lambda: single("SPACE_TO_DEPTH", (1, 4, 6, 3), (), opts("SpaceToDepthOptions", blockSize=2)),
    "softmax": lambda: single("SOFTMAX", (2, 3, 10), (), opts("SoftmaxOptions", beta=1.0)),
    "softmax_beta": lambda: single("SOFTMAX", (4, 10), (), opts("SoftmaxOptions", beta=0.5)),
    "l2_normalization": lambda: single("L2_NORMALIZATION", (2, 3, 8), (), opts("L2NormOptions")),
    "gather": lambda: single("GATHER", (5, 4, 3), [np.array([3, 0, 2, 2], np.int32)], opts("GatherOptions", axis=1)),
    # batch_dims: y[b0, b1, c, i] = x[b0, b1, indices[b0, b1, c], i].
    "gather_batch_dims_2": lambda: gather((2, 3, 5, 4), R.integers(0, 5, (2, 3, 6)).astype(np.int32), 2, 2),
    # Negative axis and batch_dims (-2 -> 2, -1 -> 1), a dim between the batch and the axis.
    "gather_batch_dims_negative": lambda: gather((2, 4, 5, 3), R.integers(0, 5, (2, 7)).astype(np.int32), -2, -1),
    # Indices only of the batch: one index per batch row, the axis dropped.
    "gather_batch_dims_scalar_indices": lambda: gather((3, 5, 2), np.array([4, 0, 2], np.int32), 1, 1),
    # Indices fed at run time (so the row offsets are added by the runtime, not folded), int64.
    "gather_batch_dims_fed_indices": lambda: gather((2, 3, 6, 2), R.integers(0, 6, (2, 4, 2)).astype(np.int64),
                                                    2, 1, indices_fed=True),
    "split": lambda: single("SPLIT", (2, 6, 4), [np.array(1, np.int32)], opts("SplitOptions", numSplits=3),
                            n_outputs=3, const_first=True),
    "split_v": lambda: single("SPLIT_V", (2, 6, 4), [np.array([1, -1, 2], np.int32), np.array(-1, np.int32)],
                              opts("SplitVOptions", numSplits=3), n_outputs=3),
    "dequantize_fp16_weights": fp16_weights,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_litert(case):
    data, feeds = CASES[case]()
    expected = run_litert(data, feeds)
    result = convert(data)
    got = run_edge(result.data, feeds)
    assert len(got) == len(expected)
    for k, (e, g) in enumerate(zip(expected, got)):
        assert relative_error(e, g) <= TOLERANCE, f"{case} output {k}: {relative_error(e, g):.3g}"


def test_format_detected_from_identifier_not_extension(tmp_path):
    data, feeds = CASES["relu"]()
    path = tmp_path / "model.onnx"  # the wrong extension on purpose
    path.write_bytes(data)
    result = convert(str(path))
    assert result.graph.metadata["source"] == "tflite"
    assert np.allclose(run_edge(result.data, feeds)[0], np.maximum(feeds["x"], 0))


def test_tensor_names_are_kept():
    data, _ = CASES["conv_same_relu"]()
    graph = convert(data, optimize=False).graph
    assert graph.inputs == ("x",) and graph.outputs == ("y0",)


def test_every_unsupported_op_listed_at_once():
    b = TFLiteBuilder()
    x = b.input("x", (2, 3))
    y1, y2, y3 = b.tensor("y1"), b.tensor("y2", "int64"), b.tensor("y3")
    b.op("FLOOR_DIV", [x, x], [y1])
    b.op("ARG_MAX", [x, b.constant("axis", np.array([1], np.int32))], [y2])
    ranges = [b.constant(k, np.array(v, np.int32)) for k, v in (("b", [0]), ("e", [1]), ("s", [-1]))]
    b.op("STRIDED_SLICE", [x, *ranges], [y3], opts("StridedSliceOptions", shrinkAxisMask=1))
    data = b._pack([x], [y1, y2, y3])
    with pytest.raises(UnsupportedOpsError) as info:
        convert(data)
    assert set(info.value.ops) == {"FLOOR_DIV", "ARG_MAX", "STRIDED_SLICE (shrink_axis_mask with a negative stride)"}


def test_fused_tanh_is_unsupported_not_guessed():
    # LiteRT ignores a fused TANH on ADD (it clamps only); the converter refuses it.
    data, _ = binary("ADD", (2, 3), (2, 3), TANH)
    with pytest.raises(UnsupportedOpsError, match="ADD \\(fused activation TANH\\)"):
        convert(data)


def test_declared_shape_disagreement_is_an_error():
    b = TFLiteBuilder()
    x = b.input("x", (2, 3))
    y = b.tensor("y", shape=(3, 2))
    b.op("RELU", [x], [y])
    with pytest.raises(ConversionError, match="declares"):
        convert(b._pack([x], [y]))


def test_signature_defs_become_edge_signatures():
    import edge

    rng = np.random.default_rng(2)
    b = TFLiteBuilder()
    x = b.input("x", (2, 5))
    y = b.tensor("y")
    b.op("RELU6", [x], [y])
    b.signatures["serving_default"] = ({"pixels": x}, {"scores": y})
    data = b.finish([x], [y])
    result = convert(data)
    sig = result.graph.signatures["serving_default"]
    assert dict(sig.inputs) == {"pixels": "x"} and dict(sig.outputs) == {"scores": "y"}
    interpreter = edge.Interpreter(model_content=result.data)
    runner = interpreter.get_signature_runner("serving_default")
    feed = rand(rng, 2, 5) * 10
    got = runner(pixels=feed)["scores"]
    from ai_edge_litert.interpreter import Interpreter

    reference = Interpreter(model_content=data).get_signature_runner("serving_default")(pixels=feed)["scores"]
    assert relative_error(reference, got) <= TOLERANCE


def test_float16_weights_stay_exact_when_written_as_float16():
    # The importer widens float16 weights to float32; --quantize fp16 narrows them back, which is
    # exact, so the file is the source's size again and the outputs do not change at all.
    data, feeds = fp16_weights()
    wide, narrow = convert(data), convert(data, quantize="fp16")
    assert "float16" in {t.dtype for t in narrow.graph.tensors.values()}
    assert np.array_equal(run_edge(wide.data, feeds)[0], run_edge(narrow.data, feeds)[0])


def test_cli_converts_and_inspect_names_the_source(tmp_path, capsys):
    from converter.cli import main

    data, _ = CASES["conv_same_relu"]()
    source = tmp_path / "model.bin"  # no .tflite extension: the identifier decides
    source.write_bytes(data)
    out = tmp_path / "model.edge"
    assert main(["convert", str(source), "-o", str(out)]) == 0
    assert main(["inspect", str(out)]) == 0
    assert "source: TFLite (schema v3)" in capsys.readouterr().out
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(data[:len(data) // 3])
    assert main(["convert", str(broken), "-o", str(tmp_path / "b.edge")]) != 0
    err = capsys.readouterr().err
    assert "broken.tflite: " in err and "Traceback" not in err and not (tmp_path / "b.edge").exists()


def test_shrink_with_a_negative_stride_is_refused():
    # LiteRT's loop runs from the index toward index + 1 by a negative step: it writes no value.
    data, _ = strided_slice([0, 2, 0, 0], [2, 1, 8, 3], [1, -1, 1, 1], shrink=0b0010)
    with pytest.raises(UnsupportedOpsError, match=r"STRIDED_SLICE \(shrink_axis_mask with a negative stride\)"):
        convert(data)


def test_offset_past_the_axis_is_an_error():
    # LiteRT's builtin kernel reads past the tensor here and its XNNPACK delegate gives an empty slice.
    data, _ = strided_slice([0, -3, 0, 0], [2, 5, 8, 3], [1, 1, 1, 1], offset=True)
    with pytest.raises(ConversionError, match="LiteRT's kernels disagree"):
        convert(data)


@pytest.mark.parametrize("params_shape, index_shape, axis, batch_dims", [
    ((2, 6, 3), (2, 4), 1, 1),        # the axis right after the batch dim
    ((2, 3, 6, 2), (2, 4, 2), 2, 1),  # a dim between the batch dim and the axis
])
def test_batched_gather_refuses_an_index_past_the_axis(params_shape, index_shape, axis, batch_dims):
    """An index past the axis, in the second batch, is refused at invoke by LiteRT and by edge,
    naming the index: it must not read the next batch's row (which the flattened rows would hold)."""
    indices = np.zeros(index_shape, np.int32)
    indices[1, 0] = params_shape[axis]
    data, feeds = gather(params_shape, indices, axis, batch_dims, indices_fed=True)
    with pytest.raises(Exception):
        run_litert(data, feeds)
    from edge.errors import EdgeError
    with pytest.raises(EdgeError, match=f"index {params_shape[axis]} .* out of range"):
        run_edge(convert(data).data, feeds)
    indices[1, 0] = params_shape[axis] - 1  # the last row is fine
    assert relative_error(run_litert(data, feeds)[0], run_edge(convert(data).data, feeds)[0]) == 0

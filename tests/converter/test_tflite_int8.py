"""int8 TFLite models (per-tensor activations, per-channel and per-tensor weights): float input ->
QUANTIZE -> int8 op -> DEQUANTIZE -> float output, built here, converted into the runtime's int8
ops and compared with LiteRT running the same file.

Inputs lie on the input's quantization grid, so QUANTIZE is exact in both runtimes. The int8 op
then requantizes its int32 sums; LiteRT rounds ties away from zero (gemmlowp's fixed point), the
runtime adds half and shifts (ties toward +infinity, converter/ops/int8_reference.py), so an
output may differ by one quantization step and by no more: |edge - LiteRT| <= 1 output scale per
element. Against the converter's integer reference (converter.reference) the runtime is bit-exact. At least half the elements must agree exactly (a one-step bias everywhere would not)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (the LiteRT oracle) is not installed")

from converter.api import convert  # noqa: E402
from tests.converter.test_tflite_ops import opts  # noqa: E402
from tests.fixtures.tflite_models import TFLiteBuilder, run_edge, run_litert  # noqa: E402

RELU, RELU6 = 1, 3
SAME, VALID = 0, 1


def _weights(rng, shape, axis, per_channel):
    w = rng.integers(-127, 128, shape).astype(np.int8)
    channels = shape[axis] if per_channel else 1
    scales = rng.uniform(0.002, 0.02, channels).astype(np.float32)
    return w, (scales, [0] * channels, axis if per_channel else 0)


def model(body, x_shape, x_params=(0.05, 3), y_params=(0.1, -5), y_dtype="int8", extra_inputs=(), dtype="int8"):
    """float x -> QUANTIZE -> body(builder, xq, yq) -> DEQUANTIZE -> float y."""
    rng = np.random.default_rng(11)
    b = TFLiteBuilder()
    x = b.input("x", x_shape)
    xq = b.tensor("x_q", dtype, quant=(x_params[0], x_params[1]))
    b.op("QUANTIZE", [x], [xq])
    yq = b.tensor("y_q", dtype, quant=(y_params[0], y_params[1]))
    body(b, xq, yq, rng, x_params)
    y = b.tensor("y")
    b.op("DEQUANTIZE", [yq], [y])
    data = b.finish([x], [y])
    low = -128 if dtype == "int8" else 0
    q = rng.integers(low, low + 256, x_shape)
    return data, {"x": ((q - x_params[1]) * x_params[0]).astype(np.float32)}, y_params[0]


def conv(per_channel, padding, stride, activation):
    def body(b, xq, yq, rng, x_params):
        w, w_params = _weights(rng, (6, 3, 3, 4), 0, per_channel)
        scales = np.asarray(w_params[0], np.float32)
        bias = rng.integers(-2000, 2000, 6).astype(np.int32)
        wi = b.constant("w", w, w_params)
        bi = b.constant("b", bias, ((np.float32(x_params[0]) * scales).astype(np.float32), [0] * scales.size, 0))
        b.op("CONV_2D", [xq, wi, bi], [yq], opts("Conv2DOptions", padding=padding, strideW=stride, strideH=stride,
                                                 fusedActivationFunction=activation), version=3)
    return model(body, (1, 9, 10, 4))


def depthwise(per_channel, multiplier):
    def body(b, xq, yq, rng, x_params):
        c = 4 * multiplier
        w, w_params = _weights(rng, (1, 3, 3, c), 3, per_channel)
        scales = np.broadcast_to(w_params[0], (c,)).astype(np.float32)
        bi = b.constant("b", rng.integers(-500, 500, c).astype(np.int32),
                        ((np.float32(x_params[0]) * scales).astype(np.float32), [0] * c, 0))
        b.op("DEPTHWISE_CONV_2D", [xq, b.constant("w", w, w_params), bi], [yq],
             opts("DepthwiseConv2DOptions", padding=SAME, strideW=1, strideH=1, depthMultiplier=multiplier,
                  fusedActivationFunction=RELU6), version=3)
    return model(body, (1, 8, 7, 4))


def fully_connected():
    def body(b, xq, yq, rng, x_params):
        w, w_params = _weights(rng, (5, 12), 0, False)
        bi = b.constant("b", rng.integers(-300, 300, 5).astype(np.int32),
                        ((np.float32(x_params[0]) * w_params[0]).astype(np.float32), [0], 0))
        b.op("FULLY_CONNECTED", [xq, b.constant("w", w, w_params), bi], [yq],
             opts("FullyConnectedOptions", fusedActivationFunction=RELU), version=4)
    return model(body, (3, 12))


def add(op):
    def body(b, xq, yq, rng, x_params):
        other = b.constant("c", rng.integers(-128, 128, (1, 1, 1, 4)).astype(np.int8), (0.03, -7))
        name = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}[op]
        b.op(op, [xq, other], [yq], opts(name), version=2)
    return model(body, (1, 5, 6, 4))


def unary(op, options=None, y_params=None, **kw):
    def body(b, xq, yq, rng, x_params):
        b.op(op, [xq] + [b.constant(f"a{k}", v) for k, v in enumerate(kw.get("consts", ()))], [yq], options,
             version=kw.get("version", 2))
    return model(body, kw.get("shape", (1, 6, 8, 4)), y_params=y_params or (0.05, 3))


def uint8_conv():
    def body(b, xq, yq, rng, x_params):
        w = rng.integers(1, 256, (5, 3, 3, 4)).astype(np.uint8)  # w - 128 stays within [-127, 127]
        bi = b.constant("b", rng.integers(-2000, 2000, 5).astype(np.int32),
                        (np.float32(x_params[0]) * np.float32(0.01), [0], 0))
        b.op("CONV_2D", [xq, b.constant("w", w, (0.01, 128)), bi], [yq],
             opts("Conv2DOptions", padding=SAME, strideW=1, strideH=1, fusedActivationFunction=RELU6))
    return model(body, (1, 7, 8, 4), x_params=(0.05, 130), y_params=(0.05, 20), dtype="uint8")


def uint8_unary(op, options, y_params, consts=(), shape=(1, 6, 8, 4)):
    def body(b, xq, yq, rng, x_params):
        ins = [xq] + [b.constant(f"a{k}", v, q) if q else b.constant(f"a{k}", v) for k, (v, q) in enumerate(consts)]
        b.op(op, ins, [yq], options)
    return model(body, shape, x_params=(0.05, 130), y_params=y_params, dtype="uint8")


def _split():
    rng = np.random.default_rng(12)
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 6, 4))
    xq = b.tensor("x_q", "int8", quant=(0.05, 3))
    b.op("QUANTIZE", [x], [xq])
    parts = [b.tensor(f"p{k}", "int8", quant=(0.05, 3)) for k in range(2)]
    b.op("SPLIT", [b.constant("axis", np.array(2, np.int32)), xq], parts, opts("SplitOptions", numSplits=2))
    yq = b.tensor("y_q", "int8", quant=(0.1, -5))
    b.op("ADD", [parts[0], parts[1]], [yq], opts("AddOptions"))
    y = b.tensor("y")
    b.op("DEQUANTIZE", [yq], [y])
    data = b.finish([x], [y])
    q = rng.integers(-128, 128, (1, 4, 6, 4))
    return data, {"x": ((q - 3) * 0.05).astype(np.float32)}, 0.1


CASES = {
    "uint8_conv_relu6": uint8_conv,
    "uint8_add": lambda: uint8_unary("ADD", opts("AddOptions"), (0.1, 120),
                                     [(np.arange(4, dtype=np.uint8).reshape(1, 1, 1, 4) * 50, (0.02, 100))]),
    "uint8_avg_pool": lambda: uint8_unary("AVERAGE_POOL_2D", opts("Pool2DOptions", padding=VALID, strideW=2, strideH=2,
                                                                  filterWidth=2, filterHeight=2), (0.05, 130)),
    "uint8_softmax": lambda: uint8_unary("SOFTMAX", opts("SoftmaxOptions", beta=1.0), (1 / 256, 0), shape=(3, 10)),
    "conv_per_channel_same_relu": lambda: conv(True, SAME, 1, RELU),
    "conv_per_tensor_valid_stride2": lambda: conv(False, VALID, 2, 0),
    "depthwise_per_channel": lambda: depthwise(True, 1),
    "depthwise_multiplier2": lambda: depthwise(True, 2),
    "fully_connected_per_tensor": fully_connected,
    "add": lambda: add("ADD"),
    "sub": lambda: add("SUB"),
    "mul": lambda: add("MUL"),
    "avg_pool": lambda: unary("AVERAGE_POOL_2D", opts("Pool2DOptions", padding=VALID, strideW=2, strideH=2,
                                                      filterWidth=2, filterHeight=2)),
    "max_pool": lambda: unary("MAX_POOL_2D", opts("Pool2DOptions", padding=SAME, strideW=2, strideH=2,
                                                  filterWidth=3, filterHeight=3)),
    "mean_spatial": lambda: unary("MEAN", opts("ReducerOptions", keepDims=True), y_params=(0.02, 1),
                                  consts=[np.array([1, 2], np.int32)]),
    "split": lambda: _split(),
    "reshape": lambda: unary("RESHAPE", None, consts=[np.array([1, 48, 4], np.int32)], version=1),
    "softmax": lambda: unary("SOFTMAX", opts("SoftmaxOptions", beta=1.0), y_params=(1 / 256, -128), shape=(4, 10)),
    "gather_batch_dims": lambda: unary("GATHER", opts("GatherOptions", axis=2, batchDims=1), shape=(2, 5, 6, 3),
                                       consts=[np.array([[5, 0, 2, 2], [1, 3, 4, 0]], np.int32)]),
    "strided_slice_new_axis_ellipsis": lambda: unary(
        "STRIDED_SLICE", opts("StridedSliceOptions", ellipsisMask=0b10, newAxisMask=0b01, endMask=0b100),
        consts=[np.array(v, np.int32) for v in ([0, 0, 6], [0, 0, 0], [1, 1, -2])]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_int8_op_within_one_step_of_litert(case):
    data, feeds, y_scale = CASES[case]()
    expected = run_litert(data, feeds)[0]
    result = convert(data)
    int8_ops = [n.op for n in result.graph.nodes
                if any(result.graph.tensors[o].dtype == "int8" for o in n.outputs)]
    assert int8_ops, "nothing was converted to an int8 op"
    got = run_edge(result.data, feeds)[0]
    # The runtime computes what the integer reference says, bit for bit.
    from converter.reference import run as run_reference

    (reference,) = run_reference(result.graph, feeds).values()
    assert np.array_equal(got, reference), f"{case}: runtime differs from converter.reference"
    steps = np.abs(got.astype(np.float64) - expected.astype(np.float64)) / y_scale
    assert steps.max() <= 1.0 + 1e-3, f"{case}: {steps.max():.2f} output steps apart"
    print(f"{case}: {np.mean(steps < 0.5):.1%} of outputs equal LiteRT's, the rest one step apart")
    assert np.mean(steps < 0.5) >= 0.5, f"{case}: only {np.mean(steps < 0.5):.1%} of outputs agree exactly"


def test_ops_without_an_int8_form_are_listed():
    from converter.errors import UnsupportedOpsError

    def body(b, xq, yq, rng, x_params):
        mid = b.tensor("mid", "int8", quant=(0.05, 3))
        b.op("LOGISTIC", [xq], [mid])
        b.op("RESIZE_BILINEAR", [mid, b.constant("size", np.array([8, 8], np.int32))], [yq],
             opts("ResizeBilinearOptions"))
    data, _, _ = model(body, (1, 4, 4, 2), y_params=(0.05, 3))
    with pytest.raises(UnsupportedOpsError) as info:
        convert(data)
    assert set(info.value.ops) == {"LOGISTIC (quantized INT8)", "RESIZE_BILINEAR (quantized INT8)"}


def test_int8_mean_over_channels_is_refused():
    from converter.errors import UnsupportedOpsError

    def body(b, xq, yq, rng, x_params):
        b.op("MEAN", [xq, b.constant("axes", np.array([3], np.int32))], [yq], opts("ReducerOptions", keepDims=True))
    data, _, _ = model(body, (1, 4, 4, 6))
    with pytest.raises(UnsupportedOpsError, match="int8 mean over axes other than H, W"):
        convert(data)


def pad(op, dtype, mode=None, value=None):
    """PADV2 / MIRROR_PAD on int8 or uint8 values; PADV2's constant is quantized with the input's
    params (LiteRT requires it), so the op only moves bytes."""
    x_params = (0.05, 3) if dtype == "int8" else (0.05, 130)

    def body(b, xq, yq, rng, x_params):
        ins = [xq, b.constant("paddings", np.array([[0, 0], [2, 1], [1, 3], [0, 0]], np.int32))]
        if value is not None:
            ins.append(b.constant("constant", np.array([value], dtype), x_params))
        b.op(op, ins, [yq], opts("MirrorPadOptions", mode=mode) if op == "MIRROR_PAD" else None)
    return model(body, (1, 4, 5, 2), x_params=x_params, y_params=x_params, dtype=dtype)


PAD_CASES = {
    "padv2_int8": lambda: pad("PADV2", "int8", value=-77),
    "padv2_int8_at_the_limit": lambda: pad("PADV2", "int8", value=127),
    "padv2_uint8": lambda: pad("PADV2", "uint8", value=201),
    "padv2_uint8_zero": lambda: pad("PADV2", "uint8", value=0),
    "mirror_pad_reflect_int8": lambda: pad("MIRROR_PAD", "int8", mode=0),
    "mirror_pad_symmetric_uint8": lambda: pad("MIRROR_PAD", "uint8", mode=1),
}


@pytest.mark.parametrize("case", sorted(PAD_CASES))
def test_int8_pad_equals_litert(case):
    # Padding moves bytes and writes the constant's own byte: equal to LiteRT, not one step off.
    data, feeds, _ = PAD_CASES[case]()
    result = convert(data)
    assert any(n.op == "Pad" and result.graph.tensors[n.outputs[0]].dtype == "int8" for n in result.graph.nodes)
    assert np.array_equal(run_edge(result.data, feeds)[0], run_litert(data, feeds)[0])


def uint8_boundary(op):
    """A uint8 quantized graph input and output, no QUANTIZE/DEQUANTIZE: the caller feeds and reads
    uint8 bytes, as with LiteRT."""
    rng = np.random.default_rng(14)
    b = TFLiteBuilder()
    x = b.input("x", (1, 6, 8, 4), "uint8", quant=(0.05, 130))
    y = b.tensor("y", "uint8", quant=(0.05, 130) if op == "MAX_POOL_2D" else (0.08, 97))
    if op == "MAX_POOL_2D":
        b.op(op, [x], [y], opts("Pool2DOptions", padding=SAME, strideW=2, strideH=2, filterWidth=3, filterHeight=3))
    else:
        other = b.constant("c", rng.integers(0, 256, (1, 1, 1, 4)).astype(np.uint8), (0.03, 121))
        b.op(op, [x, other], [y], opts("AddOptions"))
    b.signatures["serving_default"] = ({"pixels": x}, {"scores": y})
    return b.finish([x], [y]), {"x": rng.integers(0, 256, (1, 6, 8, 4)).astype(np.uint8)}


@pytest.mark.parametrize("op", ["MAX_POOL_2D", "ADD"])
def test_uint8_graph_input_and_output(op):
    data, feeds = uint8_boundary(op)
    expected = run_litert(data, feeds)[0]
    result = convert(data)
    # The boundary tensors keep the file's names (and so its signature), the int8 ones inside do not.
    assert result.graph.inputs == ("x",) and result.graph.outputs == ("y",)
    assert dict(result.graph.signatures["serving_default"].outputs) == {"scores": "y"}
    got = run_edge(result.data, feeds)[0]
    assert got.dtype == np.uint8 and got.shape == expected.shape
    steps = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    if op == "MAX_POOL_2D":  # moves bytes: equal
        assert np.array_equal(got, expected)
    assert steps.max() <= 1 and np.mean(steps == 0) >= 0.5, f"{steps.max()} steps, {np.mean(steps == 0):.1%} equal"

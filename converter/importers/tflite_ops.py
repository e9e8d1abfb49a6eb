"""TFLite op -> IR mapping: one entry per TFLite op in ``TABLE``.

Every entry is ``(convert, check)``: ``convert(ctx, op)`` emits IR nodes writing the op's
outputs under their TFLite names; ``check(ctx_model, op)`` returns why a particular use cannot be
converted (an option value the IR has no form for) or None. The importer asks every op's check
before building anything, so all unsupported ops are reported together.

Each converted op's outputs are compared with the shapes the file declares; a disagreement is a
ConversionError (a malformed file, or a mapping that does not mean what TFLite means).
Fused activations become their own activation node; the fuse_activation pass folds them back
into the producer where the runtime can fuse them.
"""
from __future__ import annotations

import math
import struct
from typing import Callable

import numpy as np

from converter.builder import GraphBuilder
from converter.errors import ConversionError
from converter.importers.tflite import OperatorInfo, TFLiteModel
from converter.ir import Quantization

SAME, VALID = 0, 1
# ActivationFunctionType -> (IR op, attrs). LiteRT's float kernels apply only the clamping ones:
# a fused TANH or SIGN_BIT is silently ignored there, so such an op is reported as unsupported
# rather than given a meaning the file's own runtime does not give it.
FUSED_ACTIVATIONS = {
    1: ("Relu", {}),
    2: ("Clip", {"min": -1.0, "max": 1.0}),
    3: ("Relu6", {}),
}
ACTIVATION_NAMES = {4: "TANH", 5: "SIGN_BIT"}


class ImportContext:
    def __init__(self, model: TFLiteModel, builder: GraphBuilder, names: list[str]):
        self.model = model
        self.b = builder
        self.names = list(names)
        # uint8 quantized graph outputs: the ops write their int8 form under an internal name and
        # uint8_output adds the shift back to uint8 under the file's name (index -> that name).
        self.public: dict[int, str] = {}
        taken = set(names)
        for index in model.outputs:
            if self.uint8_quantized(index) and index not in self.public:
                self.public[index] = internal = names[index]
                while internal in taken:
                    internal += "_int8"
                taken.add(internal)
                self.names[index] = internal
        self.values: dict[int, str] = {}
        # Constant data of tensors made by ops at import (the float32 side of a float16 DEQUANTIZE).
        self.constant_data: dict[int, np.ndarray] = {}
        # IR tensor -> int8 params (Graph.quantization), for the tensors of quantized models.
        self.quantization: dict[str, Quantization] = {}

    def params(self, index: int) -> Quantization | None:
        """TFLite tensor ``index``'s params as the IR keeps them (int8; per-channel axis as stored)."""
        t = self.tensor(index)
        if not t.scale or t.type_code not in (INT8, UINT8, INT32):  # int8/uint8 values, int32 biases
            return None
        if len(t.zero_point) != len(t.scale):
            raise ConversionError(f"tensor {t.name!r}: {len(t.scale)} scales, {len(t.zero_point)} zero points")
        if any(not (s > 0 and math.isfinite(s)) for s in t.scale):
            raise ConversionError(f"tensor {t.name!r}: scales must be positive and finite")
        if len(t.scale) > 1 and not 0 <= t.quantized_dimension < max(len(t.shape), 1):
            raise ConversionError(f"tensor {t.name!r}: quantized dimension {t.quantized_dimension} out of range")
        # uint8 becomes int8 exactly: q - 128 with zero point zp - 128.
        shift = 128 if t.type_code == UINT8 else 0
        return Quantization(tuple(t.scale), tuple(z - shift for z in t.zero_point),
                            t.quantized_dimension if len(t.scale) > 1 else 0)

    def weights(self, op: OperatorInfo, position: int) -> tuple[np.ndarray, Quantization | None]:
        """A convolution's or matmul's constant weights as the runtime's int8 kernels take them:
        symmetric (zero point 0), w - zp in [-127, 127]; float weights as they are."""
        index = self.input_index(op, position)
        data = self.const(op, position, "weights")
        params = self.params(index)
        if params is None:
            return data, None
        shape = [1] * data.ndim
        if len(params.scale) > 1:
            shape[params.axis] = -1
        shift = 128 if self.tensor(index).type_code == UINT8 else 0
        centered = data.astype(np.int64) - shift - np.asarray(params.zero_point, np.int64).reshape(shape)
        if centered.size and (centered.min() < -127 or centered.max() > 127):
            raise ConversionError(f"{op.name}: weights {self.tensor(index).name!r} minus their zero point leave "
                                  f"[-127, 127], the runtime's symmetric int8 range")
        return centered.astype(np.int8), Quantization(params.scale, (0,) * len(params.scale), params.axis)

    def weights_input(self, op: OperatorInfo, position: int) -> str:
        index = self.input_index(op, position)
        if self.params(index) is None or self.tensor(index).type_code == INT8 and \
                not any(self.tensor(index).zero_point):
            return self.input(op, position)
        data, params = self.weights(op, position)
        name = self.b.constant(self.b._fresh(self.names[index] + "_int8"), data)
        self.record(name, params)
        return name

    def record(self, name: str, params: Quantization | None) -> None:
        if params is not None:
            self.quantization[name] = params

    def tensor(self, index: int):
        return self.model.tensors[index]

    def uint8_quantized(self, index: int) -> bool:
        return self.tensor(index).type_code == UINT8 and bool(self.tensor(index).scale)

    def shift_uint8(self, source: str, to: str, output: str | None = None) -> str:
        """uint8 q -> int8 q - 128, or back (to="uint8"): the runtime's quantized ops take int8,
        and the params' zero point moves by the same 128, so the shift is exact. It runs in int32,
        where neither direction can overflow."""
        wide = self.b.op("Cast", source, to="int32")
        offset = self.b.constant(self.b._fresh("uint8_offset"), np.int32(-128 if to == "int8" else 128))
        return self.b.op("Cast", self.b.op("Add", wide, offset), to=to, outputs=[output] if output else None)

    def define_input(self, index: int) -> None:
        t = self.tensor(index)
        self.values[index] = self.b.input(self.names[index], t.shape, t.dtype)
        if self.uint8_quantized(index):
            # The graph input stays uint8 (what the caller feeds); its int8 form is what ops read.
            self.values[index] = self.shift_uint8(self.values[index], "int8")
        self.record(self.values[index], self.params(index))

    def uint8_output(self, index: int) -> str:
        """Graph output ``index``, a uint8 quantized tensor, as uint8 under the file's name."""
        return self.shift_uint8(self.value(index, f"graph output {self.public[index]!r}"), "uint8",
                                self.public[index])

    def value(self, index: int, what: str) -> str:
        """The IR tensor holding TFLite tensor ``index`` (constants are added on first use)."""
        if index in self.values:
            return self.values[index]
        t = self.tensor(index)
        if t.data is None:
            raise ConversionError(f"{what}: tensor {t.name!r} is read before any op writes it")
        data = t.data.astype(np.float32) if t.data.dtype == np.float16 else t.data
        if t.type_code == UINT8 and t.scale:
            data = (data.astype(np.int16) - 128).astype(np.int8)
        self.values[index] = self.b.constant(self.names[index], data)
        self.record(self.values[index], self.params(index))
        return self.values[index]

    def const(self, op: OperatorInfo, position: int, what: str) -> np.ndarray:
        index = self.input_index(op, position)
        t = self.tensor(index)
        data = self.constant_data.get(index, t.data)
        if data is None:
            raise ConversionError(f"{op.name}: {what} (input {position}, {t.name!r}) must be a constant")
        return data

    def const_ints(self, op: OperatorInfo, position: int, what: str) -> np.ndarray:
        """A constant argument that must hold integers (axes, shapes, sizes, paddings, a permutation)."""
        data = np.asarray(self.const(op, position, what))
        if data.dtype.kind not in "iu":
            raise ConversionError(f"{op.name}: {what} (input {position}) must be integers, not {data.dtype}")
        return data

    def input_index(self, op: OperatorInfo, position: int) -> int:
        if position >= len(op.inputs) or op.inputs[position] < 0:
            raise ConversionError(f"{op.name}: input {position} is missing")
        return op.inputs[position]

    def input(self, op: OperatorInfo, position: int) -> str:
        return self.value(self.input_index(op, position), op.name)

    def optional_input(self, op: OperatorInfo, position: int) -> str:
        if position >= len(op.inputs) or op.inputs[position] < 0:
            return ""
        return self.value(op.inputs[position], op.name)

    def input_shape(self, op: OperatorInfo, position: int) -> tuple[int, ...]:
        return tuple(self.b.type_of(self.input(op, position)).shape)

    def output_index(self, op: OperatorInfo, position: int = 0) -> int:
        if position >= len(op.outputs):
            raise ConversionError(f"{op.name}: output {position} is missing")
        return op.outputs[position]

    def emit(self, op: OperatorInfo, ir_op: str, inputs, attrs=None, output: int | None = None,
             activation: int = 0) -> str:
        """Adds ``ir_op``; with ``output`` (a TFLite tensor index) it writes that tensor, after the
        fused ``activation`` if any, and checks its declared shape."""
        attrs = dict(attrs or {})
        if output is None:
            name = self.b.op(ir_op, *inputs, name=None, **attrs)
            if ir_op in MOVES_BYTES and isinstance(inputs[0], str) and inputs[0] in self.quantization:
                self.record(name, self.quantization[inputs[0]])
            return name
        if output in self.values:
            raise ConversionError(f"{op.name}: tensor {self.tensor(output).name!r} is written twice")
        final = self.names[output]
        params = self.params(output)
        if activation and params is not None:
            # int8 ops clamp in the quantized domain themselves; the activation stays on the op.
            act_op, act_attrs = FUSED_ACTIVATIONS[activation]
            attrs["activation"] = (act_op, act_attrs.get("min", 0.0), act_attrs.get("max", 0.0))
            activation = 0
        if activation:
            act_op, act_attrs = FUSED_ACTIVATIONS[activation]
            pre = self.b.op(ir_op, *inputs, **attrs)
            name = self.b.op(act_op, pre, outputs=[final], **act_attrs)
        else:
            name = self.b.op(ir_op, *inputs, outputs=[final], **attrs)
        self.values[output] = name
        self.record(name, params)
        declared = self.tensor(output).shape
        got = tuple(self.b.type_of(name).shape)
        if declared != got:
            raise ConversionError(f"{op.name}: output {self.tensor(output).name!r} comes out "
                                  f"{list(got)}, the file declares {list(declared)}")
        return name

    def alias(self, op: OperatorInfo, source: str, output: int) -> str:
        """Writes TFLite tensor ``output`` as a reshape of ``source`` to its declared shape."""
        shape = self.tensor(output).shape
        have = tuple(self.b.type_of(source).shape)
        if int(np.prod(shape, dtype=object)) != int(np.prod(have, dtype=object)):
            raise ConversionError(f"{op.name}: cannot reshape {list(have)} to {list(shape)}")
        return self.emit(op, "Reshape", [source], {"shape": tuple(shape)}, output)


def _options(op: OperatorInfo, attr: str, default):
    if op.options is None or not hasattr(op.options, attr):
        return default
    return getattr(op.options, attr)()


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _window(op: OperatorInfo, h: int, w: int, kh: int, kw: int, padding: int, stride: tuple[int, int],
            dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    if min(stride) < 1 or min(dilation) < 1:
        raise ConversionError(f"{op.name}: strides {stride} and dilations {dilation} must be positive")
    if padding == VALID:
        return 0, 0, 0, 0
    top, bottom = _same_pads(h, kh, stride[0], dilation[0])
    left, right = _same_pads(w, kw, stride[1], dilation[1])
    return top, left, bottom, right


def _rank4(ctx: ImportContext, op: OperatorInfo, position: int, what: str) -> tuple[int, ...]:
    shape = ctx.input_shape(op, position)
    if len(shape) != 4:
        raise ConversionError(f"{op.name}: {what} must be rank 4, got {list(shape)}")
    return shape


# ---- convolutions and dense ----

def _conv2d(ctx: ImportContext, op: OperatorInfo) -> None:
    n, h, w, cin = _rank4(ctx, op, 0, "input")
    weights = ctx.const(op, 1, "weights")
    if weights.ndim != 4 or weights.shape[3] == 0 or cin % weights.shape[3]:
        raise ConversionError(f"{op.name}: weights {list(weights.shape)} do not fit {cin} input channels")
    stride = (_options(op, "StrideH", 1), _options(op, "StrideW", 1))
    dilation = (_options(op, "DilationHFactor", 1), _options(op, "DilationWFactor", 1))
    pads = _window(op, h, w, weights.shape[1], weights.shape[2], _options(op, "Padding", SAME), stride, dilation)
    attrs = {"strides": stride, "dilations": dilation, "pads": pads, "groups": cin // weights.shape[3],
             "layout": "NHWC"}
    ctx.emit(op, "Conv2D", [ctx.input(op, 0), ctx.weights_input(op, 1), ctx.optional_input(op, 2)], attrs,
             ctx.output_index(op), _options(op, "FusedActivationFunction", 0))


def _depthwise_conv2d(ctx: ImportContext, op: OperatorInfo) -> None:
    n, h, w, cin = _rank4(ctx, op, 0, "input")
    weights = ctx.const(op, 1, "weights")
    if weights.ndim != 4 or weights.shape[0] != 1 or cin == 0 or weights.shape[3] % cin:
        raise ConversionError(f"{op.name}: depthwise weights {list(weights.shape)} do not fit {cin} channels")
    stride = (_options(op, "StrideH", 1), _options(op, "StrideW", 1))
    dilation = (_options(op, "DilationHFactor", 1), _options(op, "DilationWFactor", 1))
    pads = _window(op, h, w, weights.shape[1], weights.shape[2], _options(op, "Padding", SAME), stride, dilation)
    # [1, KH, KW, Cin * multiplier] -> OHWI [Cout, KH, KW, 1] with Cin groups; output channel
    # c * multiplier + m reads input channel c in both.
    weights, w_params = ctx.weights(op, 1)
    ohwi = np.ascontiguousarray(np.transpose(weights, (3, 1, 2, 0)))
    if ohwi.dtype == np.float16:
        ohwi = ohwi.astype(np.float32)
    w_name = ctx.b.constant(ctx.b._fresh(ctx.names[ctx.input_index(op, 1)] + "_ohwi"), ohwi)
    if w_params is not None:
        if len(w_params.scale) > 1 and w_params.axis != 3:
            raise ConversionError(f"{op.name}: depthwise weights quantized along axis {w_params.axis}, not 3")
        ctx.record(w_name, Quantization(w_params.scale, w_params.zero_point, 0))
    attrs = {"strides": stride, "dilations": dilation, "pads": pads, "groups": cin, "layout": "NHWC"}
    ctx.emit(op, "Conv2D", [ctx.input(op, 0), w_name, ctx.optional_input(op, 2)], attrs,
             ctx.output_index(op), _options(op, "FusedActivationFunction", 0))


def _transpose_conv_common(ctx: ImportContext, op: OperatorInfo, x: str, w_position: int, bias: str,
                           padding: int, stride: tuple[int, int], activation: int) -> None:
    n, h, w, cin = ctx.b.type_of(x).shape
    weights = ctx.const(op, w_position, "weights")
    if weights.ndim != 4 or weights.shape[3] != cin:
        raise ConversionError(f"{op.name}: weights {list(weights.shape)} do not fit {cin} input channels")
    if min(stride) < 1:
        raise ConversionError(f"{op.name}: strides {stride} must be positive")
    out_shape = ctx.tensor(ctx.output_index(op)).shape
    if len(out_shape) != 4:
        raise ConversionError(f"{op.name}: output must be rank 4, got {list(out_shape)}")
    pads, extra = [0, 0, 0, 0], [0, 0]
    for axis, (size, k, s, out) in enumerate(((h, weights.shape[1], stride[0], out_shape[1]),
                                              (w, weights.shape[2], stride[1], out_shape[2]))):
        full = (size - 1) * s + k
        # TFLite places the full (size - 1) * s + k result at -before and keeps `out` values.
        before = max((size - 1) * s + k - out, 0) // 2 if padding == SAME else 0
        after = full - out - before
        if after < 0:
            extra[axis], after = -after, 0
        pads[axis], pads[axis + 2] = before, after
    kernel = tuple(weights.shape[1:3])
    if (stride == kernel and not any(pads) and not any(extra) and weights.dtype == np.float32
            and ctx.params(ctx.output_index(op)) is None):
        _transpose_conv_as_depth_to_space(ctx, op, x, weights, bias, activation)
        return
    attrs = {"strides": stride, "dilations": (1, 1), "pads": tuple(pads), "output_padding": tuple(extra),
             "groups": 1, "layout": "NHWC"}
    ctx.emit(op, "ConvTranspose2D", [x, ctx.input(op, w_position), bias], attrs, ctx.output_index(op), activation)


def _transpose_conv_as_depth_to_space(ctx: ImportContext, op: OperatorInfo, x: str, weights: np.ndarray,
                                      bias: str, activation: int) -> None:
    """A transposed convolution whose stride equals its kernel, unpadded, gives every output pixel
    exactly one tap: y[h*kh + i, w*kw + j, o] = sum_c x[h, w, c] * W[o, i, j, c] + b[o]. That is a
    1x1 convolution to kh*kw*Cout channels (channel (i*kw + j)*Cout + o) and a depth-to-space
    shuffle, which run as GEMM and a transpose (MediaPipe's selfie model ends in one)."""
    n, h, w, cin = ctx.b.type_of(x).shape
    cout, kh, kw, _ = weights.shape
    w1x1 = np.ascontiguousarray(np.transpose(weights, (1, 2, 0, 3)).reshape(kh * kw * cout, 1, 1, cin))
    w_name = ctx.b.constant(ctx.b._fresh(ctx.names[op.inputs[1]] + "_1x1"), w1x1)
    b_name = ""
    if bias:
        bias_data = ctx.b._constants.get(bias)
        if bias_data is None:
            raise ConversionError(f"{op.name}: bias must be a constant")
        b_name = ctx.b.constant(ctx.b._fresh(bias + "_tiled"), np.tile(np.asarray(bias_data, np.float32), kh * kw))
    y = ctx.emit(op, "Conv2D", [x, w_name, b_name], {"strides": (1, 1), "dilations": (1, 1), "pads": (0, 0, 0, 0),
                                                     "groups": 1, "layout": "NHWC"})
    # [N*H, W, kh, kw*Cout] -> [N*H, kh, W, kw*Cout] is [N, H*kh, W*kw, Cout] in memory order.
    y = ctx.emit(op, "Reshape", [y], {"shape": (n * h, w, kh, kw * cout)})
    y = ctx.emit(op, "Transpose", [y], {"perm": (0, 2, 1, 3)})
    if activation:
        y = ctx.emit(op, "Reshape", [y], {"shape": (n, h * kh, w * kw, cout)})
        ctx.emit(op, FUSED_ACTIVATIONS[activation][0], [y], FUSED_ACTIVATIONS[activation][1], ctx.output_index(op))
        return
    ctx.alias(op, y, ctx.output_index(op))


def _transpose_conv(ctx: ImportContext, op: OperatorInfo) -> None:
    # inputs: output_shape, weights [Cout, KH, KW, Cin], x, bias?
    shape = ctx.const_ints(op, 0, "output_shape")
    if tuple(int(d) for d in shape.reshape(-1)) != ctx.tensor(ctx.output_index(op)).shape:
        raise ConversionError(f"{op.name}: output_shape {shape.tolist()} differs from the output tensor's "
                              f"{list(ctx.tensor(ctx.output_index(op)).shape)}")
    _rank4(ctx, op, 2, "input")
    stride = (_options(op, "StrideH", 1), _options(op, "StrideW", 1))
    _transpose_conv_common(ctx, op, ctx.input(op, 2), 1, ctx.optional_input(op, 3),
                           _options(op, "Padding", SAME), stride, _options(op, "FusedActivationFunction", 0))


def _mediapipe_params(op: OperatorInfo) -> tuple[int, int, int]:
    # MediaPipe writes TfLiteTransposeConvParams raw: int32 padding (1 SAME, 2 VALID), stride_w, stride_h.
    if len(op.custom_options) < 12:
        raise ConversionError(f"{op.name}: custom options hold {len(op.custom_options)} bytes, "
                              f"Convolution2DTransposeBias needs 12")
    return struct.unpack_from("<iii", op.custom_options, 0)


def _check_mediapipe_transpose(model: TFLiteModel, op: OperatorInfo) -> str | None:
    if len(op.custom_options) >= 12 and _mediapipe_params(op)[0] not in (1, 2):
        return f"padding={_mediapipe_params(op)[0]}"
    return None


def _convolution2d_transpose_bias(ctx: ImportContext, op: OperatorInfo) -> None:
    padding, stride_w, stride_h = _mediapipe_params(op)
    _rank4(ctx, op, 0, "input")
    _transpose_conv_common(ctx, op, ctx.input(op, 0), 1, ctx.optional_input(op, 2),
                           SAME if padding == 1 else VALID, (stride_h, stride_w), 0)


def _fully_connected(ctx: ImportContext, op: OperatorInfo) -> None:
    x = ctx.input(op, 0)
    weights = ctx.const(op, 1, "weights")
    if weights.ndim != 2:
        raise ConversionError(f"{op.name}: weights must be [N, K], got {list(weights.shape)}")
    shape = ctx.b.type_of(x).shape
    k = weights.shape[1]
    total = int(np.prod(shape, dtype=object)) if shape else 1
    if k == 0 or total % k:
        raise ConversionError(f"{op.name}: input {list(shape)} does not divide into rows of {k}")
    if not _options(op, "KeepNumDims", False) and len(shape) != 2:
        x = ctx.emit(op, "Reshape", [x], {"shape": (total // k, k)})
    ctx.emit(op, "FullyConnected", [x, ctx.weights_input(op, 1), ctx.optional_input(op, 2)], {},
             ctx.output_index(op), _options(op, "FusedActivationFunction", 0))


def _batch_matmul(ctx: ImportContext, op: OperatorInfo) -> None:
    attrs = {"transpose_a": bool(_options(op, "AdjX", False)), "transpose_b": bool(_options(op, "AdjY", False))}
    ctx.emit(op, "BatchMatMul", [ctx.input(op, 0), ctx.input(op, 1)], attrs, ctx.output_index(op))


# ---- elementwise ----

def _binary(ir_op: str) -> Callable:
    def convert(ctx: ImportContext, op: OperatorInfo) -> None:
        ctx.emit(op, ir_op, [ctx.input(op, 0), ctx.input(op, 1)], {}, ctx.output_index(op),
                 _options(op, "FusedActivationFunction", 0))
    return convert


def _squared_difference(ctx: ImportContext, op: OperatorInfo) -> None:
    d = ctx.emit(op, "Sub", [ctx.input(op, 0), ctx.input(op, 1)])
    ctx.emit(op, "Mul", [d, d], {}, ctx.output_index(op))


def _unary(ir_op: str, **attrs) -> Callable:
    def convert(ctx: ImportContext, op: OperatorInfo) -> None:
        ctx.emit(op, ir_op, [ctx.input(op, 0)], attrs, ctx.output_index(op))
    return convert


def _leaky_relu(ctx: ImportContext, op: OperatorInfo) -> None:
    ctx.emit(op, "LeakyRelu", [ctx.input(op, 0)], {"alpha": float(_options(op, "Alpha", 0.0))}, ctx.output_index(op))


def _gelu(ctx: ImportContext, op: OperatorInfo) -> None:
    ir_op = "GeluTanh" if _options(op, "Approximate", False) else "Gelu"
    ctx.emit(op, ir_op, [ctx.input(op, 0)], {}, ctx.output_index(op))


def _prelu(ctx: ImportContext, op: OperatorInfo) -> None:
    ctx.emit(op, "PRelu", [ctx.input(op, 0), ctx.input(op, 1)], {}, ctx.output_index(op))


def _softmax(ctx: ImportContext, op: OperatorInfo) -> None:
    x = ctx.input(op, 0)
    rank = len(ctx.b.type_of(x).shape)
    if rank == 0:
        raise ConversionError(f"{op.name}: input must have at least one axis")
    beta = float(_options(op, "Beta", 1.0))
    if beta != 1.0:
        x = ctx.emit(op, "Mul", [x, np.array(beta, np.float32)])
    ctx.emit(op, "Softmax", [x], {"axis": rank - 1}, ctx.output_index(op))


def _l2_normalization(ctx: ImportContext, op: OperatorInfo) -> None:
    # TFLite: x / max(sqrt(sum(x^2 over the last axis)), 1e-6).
    x = ctx.input(op, 0)
    rank = len(ctx.b.type_of(x).shape)
    if rank == 0:
        raise ConversionError(f"{op.name}: input must have at least one axis")
    squares = ctx.emit(op, "ReduceSumSquare", [x], {"axes": (rank - 1,), "keepdims": True})
    norm = ctx.emit(op, "Max", [ctx.emit(op, "Sqrt", [squares]), np.array(1e-6, np.float32)])
    ctx.emit(op, "Div", [x, norm], {}, ctx.output_index(op),
             _options(op, "FusedActivationFunction", 0))


# ---- pooling and reductions ----

def _pool(ir_op: str) -> Callable:
    def convert(ctx: ImportContext, op: OperatorInfo) -> None:
        n, h, w, c = _rank4(ctx, op, 0, "input")
        kernel = (_options(op, "FilterHeight", 1), _options(op, "FilterWidth", 1))
        stride = (_options(op, "StrideH", 1), _options(op, "StrideW", 1))
        if min(kernel) < 1:
            raise ConversionError(f"{op.name}: filter {kernel} must be positive")
        pads = _window(op, h, w, kernel[0], kernel[1], _options(op, "Padding", SAME), stride, (1, 1))
        attrs = {"kernel": kernel, "strides": stride, "dilations": (1, 1), "pads": pads,
                 "ceil_mode": False, "layout": "NHWC"}
        if ir_op == "AvgPool2D":
            attrs["count_include_pad"] = False  # TFLite averages over the in-bounds taps only
        ctx.emit(op, ir_op, [ctx.input(op, 0)], attrs, ctx.output_index(op),
                 _options(op, "FusedActivationFunction", 0))
    return convert


def _axes(op: OperatorInfo, values, rank: int) -> tuple[int, ...]:
    axes = set()
    for a in np.asarray(values).reshape(-1).tolist():
        if not -rank <= a < rank:
            raise ConversionError(f"{op.name}: axis {a} out of range for rank {rank}")
        axes.add(a % rank)
    return tuple(sorted(axes))


def _reduce(ir_op: str) -> Callable:
    def convert(ctx: ImportContext, op: OperatorInfo) -> None:
        x = ctx.input(op, 0)
        shape = ctx.b.type_of(x).shape
        axes = _axes(op, ctx.const_ints(op, 1, "axes"), len(shape))
        keep = bool(_options(op, "KeepDims", False))
        if not axes:
            ctx.alias(op, x, ctx.output_index(op))
            return
        ctx.emit(op, ir_op, [x], {"axes": axes, "keepdims": keep}, ctx.output_index(op))
    return convert


# ---- shapes and data movement ----

def _reshape_like_output(ctx: ImportContext, op: OperatorInfo) -> None:
    """RESHAPE / SQUEEZE / EXPAND_DIMS: the output tensor's declared shape is the result; the
    op's own shape arguments are checked against it."""
    x = ctx.input(op, 0)
    have = tuple(ctx.b.type_of(x).shape)
    out = ctx.tensor(ctx.output_index(op)).shape
    expected = None
    if op.op == "RESHAPE":
        new_shape = None
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and ctx.tensor(op.inputs[1]).data is not None:
            new_shape = ctx.const_ints(op, 1, "shape").reshape(-1).tolist()
        elif len(op.option_vectors.get("new_shape", ())):
            new_shape = op.option_vectors["new_shape"].tolist()
        if new_shape is not None:
            total = int(np.prod(have, dtype=object))
            known = int(np.prod([d for d in new_shape if d != -1], dtype=object))
            if new_shape.count(-1) == 1 and known:
                new_shape = [total // known if d == -1 else d for d in new_shape]
            expected = tuple(new_shape)
    elif op.op == "SQUEEZE":
        dims = op.option_vectors.get("squeeze_dims", np.zeros(0, np.int32)).tolist()
        axes = _axes(op, dims, len(have)) if dims else tuple(i for i, d in enumerate(have) if d == 1)
        expected = tuple(d for i, d in enumerate(have) if i not in axes)
    elif op.op == "EXPAND_DIMS":
        axis = int(np.asarray(ctx.const_ints(op, 1, "axis")).reshape(-1)[0])
        if not -len(have) - 1 <= axis <= len(have):
            raise ConversionError(f"{op.name}: axis {axis} out of range for rank {len(have)}")
        axis %= len(have) + 1
        expected = have[:axis] + (1,) + have[axis:]
    if expected is not None and tuple(expected) != tuple(out):
        raise ConversionError(f"{op.name}: gives {list(expected)}, the file declares {list(out)}")
    ctx.alias(op, x, ctx.output_index(op))


def _concatenation(ctx: ImportContext, op: OperatorInfo) -> None:
    inputs = [ctx.input(op, k) for k in range(len(op.inputs))]
    rank = len(ctx.b.type_of(inputs[0]).shape) if inputs else 0
    axis = _axes(op, [_options(op, "Axis", 0)], rank)[0]
    # LiteRT's CONCATENATION kernel never applies the fused activation its options may name; the
    # file means what LiteRT computes, so it is ignored here too.
    ctx.emit(op, "Concat", inputs, {"axis": axis}, ctx.output_index(op))


# MirrorPadMode -> the IR's Pad mode (REFLECT leaves the border element out, SYMMETRIC repeats it).
MIRROR_PAD_MODES = {0: "reflect", 1: "symmetric"}


def _pads(ctx: ImportContext, op: OperatorInfo, rank: int) -> tuple[int, ...]:
    paddings = np.asarray(ctx.const_ints(op, 1, "paddings"))
    if paddings.shape != (rank, 2):
        raise ConversionError(f"{op.name}: paddings {list(paddings.shape)} should be [{rank}, 2]")
    return tuple(int(p) for p in paddings[:, 0]) + tuple(int(p) for p in paddings[:, 1])


def _pad(ctx: ImportContext, op: OperatorInfo) -> None:
    x = ctx.input(op, 0)
    pads = _pads(ctx, op, len(ctx.b.type_of(x).shape))
    value = 0.0
    if op.op == "PADV2" and len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = _pad_value(ctx, op)
    if op.op == "MIRROR_PAD":
        mode = MIRROR_PAD_MODES.get(_options(op, "Mode", 0))
        if mode is None:
            raise ConversionError(f"{op.name}: unknown mirror pad mode {_options(op, 'Mode', 0)}")
        ctx.emit(op, "Pad", [x], {"mode": mode, "pads": pads, "value": 0.0}, ctx.output_index(op))
        return
    ctx.emit(op, "Pad", [x], {"mode": "constant", "pads": pads, "value": value}, ctx.output_index(op))


def _pad_value(ctx: ImportContext, op: OperatorInfo) -> float:
    """PADV2's constant as the real value the IR's Pad takes. A quantized one (int8 or uint8,
    with the input's params, which LiteRT requires) is (q - zp) * scale: the runtime quantizes it
    back to q exactly, since |q - zp| <= 255 keeps the float32 error far below half a step."""
    constant = np.asarray(ctx.const(op, 2, "constant_values")).reshape(-1)
    if constant.size != 1:
        raise ConversionError(f"{op.name}: constant_values must hold one value")
    t = ctx.tensor(ctx.input_index(op, 2))
    if ctx.params(ctx.input_index(op, 2)) is None:
        return float(constant[0])
    source = ctx.tensor(ctx.input_index(op, 0))
    if (t.scale, t.zero_point) != (source.scale, source.zero_point):
        raise ConversionError(f"{op.name}: constant_values {t.name!r} is quantized with params other than "
                              f"input {source.name!r}'s")
    return float((int(constant[0]) - t.zero_point[0]) * np.float64(t.scale[0]))


BIG = 1 << 62


def _strided_slice_axes(rank: int, specs: int, ellipsis_mask: int, new_axis_mask: int) -> list[tuple[str, int]]:
    """LiteRT's expansion of a STRIDED_SLICE spec over a rank-``rank`` input: per axis of the
    effective input (the input with the new axes inserted), ("ellipsis" | "new" | "spec" | "full",
    the spec it reads or -1). The ellipsis covers the input axes no other spec names, but always
    at least one; a new-axis bit on the ellipsis's own spec has no effect; specs past the end read
    whole axes. (LiteRT's kernel, not TensorFlow's documentation, is the meaning: the two differ
    where the ellipsis would cover no axis.)"""
    added = sum(1 for i in range(specs) if new_axis_mask >> i & 1 and not ellipsis_mask >> i & 1)
    effective = rank + added
    axes: list[tuple[str, int]] = []
    expanded = 0  # axes the ellipsis covers beyond its own spec
    while len(axes) < effective:
        i = len(axes)
        if ellipsis_mask >> i & 1:
            end = max(i + 1, min(i + 1 + added + rank - specs, effective))
            axes += [("ellipsis", i)] * (end - i)
            expanded = end - i - 1
        elif new_axis_mask >> (i - expanded) & 1:
            axes.append(("new", i - expanded))
        elif i >= specs + expanded:
            axes.append(("full", -1))
        else:
            axes.append(("spec", i - expanded))
    return axes


def _clamp_index(index: int, size: int, stride: int) -> int:
    return min(max(index, 0), size) if stride > 0 else min(max(index, -1), size - 1)


def _strided_slice_range(op: OperatorInfo, size: int, begin: int, end: int, stride: int, begin_masked: bool,
                         end_masked: bool, offset: bool) -> tuple[int, int]:
    """LiteRT's first index and end on one axis: negatives count from the end, then clamp to
    [0, size] (forward) or [-1, size - 1] (backward); the masks override after clamping. With
    ``offset`` the end is a size counted from the resolved start; LiteRT's builtin kernel and its
    XNNPACK delegate disagree on an end mask or a begin or size past the axis there (one reads
    past the tensor), so those have no one meaning and are refused."""
    start = _clamp_index(begin + size if begin < 0 else begin, size, stride)
    if begin_masked:
        start = 0 if stride > 0 else size - 1
    if offset:
        if end_masked or not -size <= begin < size or _clamp_index(start + end, size, stride) != start + end:
            raise ConversionError(f"{op.name}: offset slice begin {begin}, size {end}{', end_mask' * end_masked} "
                                  f"past an axis of {size} (LiteRT's kernels disagree on it)")
        return start, start + end
    stop = _clamp_index(end + size if end < 0 else end, size, stride)
    if end_masked:
        stop = size if stride > 0 else -1
    return start, stop


def _strided_slice(ctx: ImportContext, op: OperatorInfo) -> None:
    """The effective input (a Reshape adding the new axes), one Slice with every range resolved
    as LiteRT resolves it, and a Reshape dropping the shrunk axes."""
    x = ctx.input(op, 0)
    shape = ctx.b.type_of(x).shape
    begin, end, strides = (np.asarray(ctx.const_ints(op, k, n)).reshape(-1).tolist()
                           for k, n in ((1, "begin"), (2, "end"), (3, "strides")))
    if not (len(begin) == len(end) == len(strides)):
        raise ConversionError(f"{op.name}: begin/end/strides of lengths {len(begin)}, {len(end)}, {len(strides)}")
    begin_mask, end_mask = _options(op, "BeginMask", 0), _options(op, "EndMask", 0)
    shrink = _options(op, "ShrinkAxisMask", 0)
    offset = bool(_options(op, "Offset", False))
    ellipsis_mask, new_axis_mask = _options(op, "EllipsisMask", 0), _options(op, "NewAxisMask", 0)
    if (ellipsis_mask | new_axis_mask) >> len(begin):
        raise ConversionError(f"{op.name}: ellipsis_mask {ellipsis_mask} or new_axis_mask {new_axis_mask} names a "
                              f"spec past the {len(begin)} given")
    axes = _strided_slice_axes(len(shape), len(begin), ellipsis_mask, new_axis_mask)
    if sum(kind != "new" for kind, _ in axes) != len(shape):
        raise ConversionError(f"{op.name}: {len(begin)} specs do not fit rank {len(shape)}")
    effective, starts, ends, steps = [], [], [], []
    dims = iter(shape)
    for axis, (kind, spec) in enumerate(axes):
        size = 1 if kind == "new" else next(dims)
        effective.append(size)
        start, stop, step = 0, size, 1
        if kind == "spec":
            step = int(strides[spec])
            if step == 0:
                raise ConversionError(f"{op.name}: stride 0 on axis {axis}")
            start, stop = _strided_slice_range(op, size, int(begin[spec]), int(end[spec]), step,
                                               bool(begin_mask >> spec & 1), bool(end_mask >> spec & 1), offset)
            if shrink >> spec & 1:
                if not 0 <= start < size:
                    raise ConversionError(f"{op.name}: index {begin[spec]} out of range on axis {axis} ({size})")
                stop, step = start + 1, 1
        count = max(-(-(stop - start) // step), 0)
        if count == 0:
            start, stop, step = 0, 0, 1
        stop = start + count * step
        # An end before index 0 of a backward range is -BIG: a Slice end of -1 would mean size - 1.
        starts.append(start), ends.append(stop if stop >= 0 else -BIG), steps.append(step)
    if len(effective) > len(shape):
        x = ctx.emit(op, "Reshape", [x], {"shape": tuple(effective)})
    y = ctx.emit(op, "Slice", [x], {"starts": tuple(starts), "ends": tuple(ends), "steps": tuple(steps)})
    ctx.alias(op, y, ctx.output_index(op))


def _check_strided_slice(model: TFLiteModel, op: OperatorInfo) -> str | None:
    ellipsis, shrink = _options(op, "EllipsisMask", 0), _options(op, "ShrinkAxisMask", 0)
    if ellipsis & (ellipsis - 1):
        return "more than one ellipsis"
    strides = model.tensors[op.inputs[3]].data if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
    if shrink and strides is not None and np.asarray(strides).dtype.kind in "iu" and any(
            shrink >> i & 1 and s < 0 for i, s in enumerate(np.asarray(strides).reshape(-1).tolist())):
        # LiteRT's loop runs from the index to index + 1 by the negative stride: it writes nothing.
        return "shrink_axis_mask with a negative stride"
    return None


def _slice(ctx: ImportContext, op: OperatorInfo) -> None:
    x = ctx.input(op, 0)
    shape = ctx.b.type_of(x).shape
    begin = np.asarray(ctx.const_ints(op, 1, "begin")).reshape(-1).tolist()
    size = np.asarray(ctx.const_ints(op, 2, "size")).reshape(-1).tolist()
    if len(begin) != len(shape) or len(size) != len(shape):
        raise ConversionError(f"{op.name}: begin {begin} and size {size} for rank {len(shape)}")
    ends = []
    for axis, (b, s) in enumerate(zip(begin, size)):
        e = shape[axis] if s == -1 else b + s
        if b < 0 or s < -1 or e > shape[axis]:
            raise ConversionError(f"{op.name}: begin {b}, size {s} out of range on axis {axis} ({shape[axis]})")
        ends.append(e)
    ctx.emit(op, "Slice", [x], {"starts": tuple(begin), "ends": tuple(ends), "steps": (1,) * len(shape)},
             ctx.output_index(op))


def _transpose(ctx: ImportContext, op: OperatorInfo) -> None:
    x = ctx.input(op, 0)
    rank = len(ctx.b.type_of(x).shape)
    perm = tuple(int(p) for p in np.asarray(ctx.const_ints(op, 1, "perm")).reshape(-1))
    if sorted(p % rank if -rank <= p < rank else -1 for p in perm) != list(range(rank)):
        raise ConversionError(f"{op.name}: perm {list(perm)} is not a permutation of {rank} axes")
    ctx.emit(op, "Transpose", [x], {"perm": tuple(p % rank for p in perm)}, ctx.output_index(op))


def _resize(ctx: ImportContext, op: OperatorInfo) -> None:
    n, h, w, c = _rank4(ctx, op, 0, "input")
    size = np.asarray(ctx.const_ints(op, 1, "size")).reshape(-1).tolist()
    if len(size) != 2 or min(size) < 1 or h < 1 or w < 1:
        raise ConversionError(f"{op.name}: size {size} for input {[n, h, w, c]}")
    align = bool(_options(op, "AlignCorners", False))
    half = bool(_options(op, "HalfPixelCenters", False))
    bilinear = op.op == "RESIZE_BILINEAR"
    if align:
        coordinate = "align_corners"
    elif half:
        coordinate = "half_pixel"
    else:
        coordinate = "asymmetric"
    # TFLite nearest: floor(x * scale) (asymmetric), round half up with align_corners, and
    # floor((x + 0.5) * scale) with half-pixel centers, which is half_pixel's
    # (x + 0.5) * scale - 0.5 rounded half up.
    nearest = "floor" if not (align or half) else "round_prefer_ceil"
    attrs = {"mode": "linear" if bilinear else "nearest", "coordinate_mode": coordinate,
             "nearest_mode": nearest, "scales": (1.0, size[0] / h, size[1] / w, 1.0)}
    ctx.emit(op, "Resize", [ctx.input(op, 0)], attrs, ctx.output_index(op))


def _check_resize(model: TFLiteModel, op: OperatorInfo) -> str | None:
    if _options(op, "AlignCorners", False) and _options(op, "HalfPixelCenters", False):
        return "align_corners with half_pixel_centers"
    return None


def _depth_to_space(ctx: ImportContext, op: OperatorInfo) -> None:
    n, h, w, c = _rank4(ctx, op, 0, "input")
    b = int(_options(op, "BlockSize", 0))
    if b < 1 or c % (b * b):
        raise ConversionError(f"{op.name}: block size {b} does not divide {c} channels")
    x = ctx.emit(op, "Reshape", [ctx.input(op, 0)], {"shape": (n * h, w, b, b * (c // (b * b)))})
    # [N*H, W, b, b*C'] -> [N*H, b, W, b*C']: rows of each block move next to their source row.
    x = ctx.emit(op, "Transpose", [x], {"perm": (0, 2, 1, 3)})
    ctx.alias(op, x, ctx.output_index(op))


def _space_to_depth(ctx: ImportContext, op: OperatorInfo) -> None:
    n, h, w, c = _rank4(ctx, op, 0, "input")
    b = int(_options(op, "BlockSize", 0))
    if b < 1 or h % b or w % b:
        raise ConversionError(f"{op.name}: block size {b} does not divide {h}x{w}")
    x = ctx.emit(op, "Reshape", [ctx.input(op, 0)], {"shape": (n * h // b, b, w // b, b * c)})
    x = ctx.emit(op, "Transpose", [x], {"perm": (0, 2, 1, 3)})
    ctx.alias(op, x, ctx.output_index(op))


def _gather(ctx: ImportContext, op: OperatorInfo) -> None:
    x, indices = ctx.input(op, 0), ctx.input(op, 1)
    shape, index_shape = ctx.b.type_of(x).shape, ctx.b.type_of(indices).shape
    axis = _axes(op, [_options(op, "Axis", 0)], len(shape))[0]
    batch_dims = int(_options(op, "BatchDims", 0))
    batch_dims += len(index_shape) if batch_dims < 0 else 0
    if not 0 <= batch_dims <= min(axis, len(index_shape)) or shape[:batch_dims] != index_shape[:batch_dims]:
        raise ConversionError(f"{op.name}: batch_dims {_options(op, 'BatchDims', 0)} does not fit params "
                              f"{list(shape)}, indices {list(index_shape)} and axis {axis}")
    if batch_dims == 0:
        ctx.emit(op, "Gather", [x, indices], {"axis": axis}, ctx.output_index(op))
        return
    _batched_gather(ctx, op, x, indices, axis, batch_dims)


def _batched_gather(ctx: ImportContext, op: OperatorInfo, x: str, indices: str, axis: int, batch_dims: int) -> None:
    """GATHER with batch dims reads y[b, o, c, i] = x[b, o, indices[b, c], i] with b the batch
    dims, o the dims between them and the axis, c the indices' other dims, i the dims after the
    axis. With x as [B, O, A, i...] and the indices as [B, O, C, 1] (repeated over O), that is
    GatherND with two batch dims, which checks every index against A at run time as LiteRT does
    (a negative index counts from the end, as in ONNX, where LiteRT refuses it)."""
    shape, index_shape = ctx.b.type_of(x).shape, ctx.b.type_of(indices).shape
    batch, outer = math.prod(shape[:batch_dims]), math.prod(shape[batch_dims:axis])
    size, inner = shape[axis], tuple(shape[axis + 1:])
    index_dtype = np.dtype(ctx.b.type_of(indices).dtype)
    if index_dtype.kind != "i":
        raise ConversionError(f"{op.name}: indices must be int32 or int64, not {index_dtype}")
    count = math.prod(index_shape[batch_dims:])
    rows = ctx.emit(op, "Reshape", [x], {"shape": (batch, outer, size) + inner})
    tuples = ctx.emit(op, "Reshape", [indices], {"shape": (batch, 1, count, 1)})
    if outer > 1:
        repeat = np.zeros((batch, outer, 1, 1), index_dtype)
        tuples = ctx.emit(op, "Add", [tuples, ctx.b.constant(ctx.b._fresh(ctx.names[op.inputs[1]] + "_outer"), repeat)])
    picked = ctx.emit(op, "GatherND", [rows, tuples], {"batch_dims": 2})
    out_shape = tuple(shape[:axis]) + tuple(index_shape[batch_dims:]) + inner
    ctx.alias(op, ctx.emit(op, "Reshape", [picked], {"shape": out_shape}), ctx.output_index(op))


def _split(ctx: ImportContext, op: OperatorInfo) -> None:
    if op.op == "SPLIT":
        axis_value, x = ctx.const_ints(op, 0, "axis"), ctx.input(op, 1)
    else:
        axis_value, x = ctx.const_ints(op, 2, "axis"), ctx.input(op, 0)
    shape = ctx.b.type_of(x).shape
    axis = _axes(op, axis_value, len(shape))[0]
    count = len(op.outputs)
    if op.op == "SPLIT":
        if count == 0 or shape[axis] % count:
            raise ConversionError(f"{op.name}: {shape[axis]} does not split into {count} parts")
        sizes = [shape[axis] // count] * count
    else:
        sizes = np.asarray(ctx.const_ints(op, 1, "size_splits")).reshape(-1).tolist()
        if sizes.count(-1) == 1:
            sizes[sizes.index(-1)] = shape[axis] - (sum(sizes) + 1)
        if len(sizes) != count or sum(sizes) != shape[axis] or min(sizes, default=0) < 0:
            raise ConversionError(f"{op.name}: sizes {sizes} do not split {shape[axis]} into {count}")
    names = [ctx.names[o] for o in op.outputs]
    for o in op.outputs:
        if o in ctx.values:
            raise ConversionError(f"{op.name}: tensor {ctx.tensor(o).name!r} is written twice")
    outs = ctx.b.op_multi("Split", x, outputs=names, axis=axis, sizes=tuple(sizes))
    for o, name in zip(op.outputs, outs):
        ctx.values[o] = name
        ctx.record(name, ctx.params(o))
        if tuple(ctx.b.type_of(name).shape) != ctx.tensor(o).shape:
            raise ConversionError(f"{op.name}: output {ctx.tensor(o).name!r} comes out "
                                  f"{list(ctx.b.type_of(name).shape)}, the file declares {list(ctx.tensor(o).shape)}")


def _densify(ctx: ImportContext, op: OperatorInfo) -> None:
    """The sparse constant was made dense when the file was read (tflite_sparse.densify)."""
    source = ctx.tensor(ctx.input_index(op, 0))
    out = ctx.output_index(op)
    if source.data is None or not source.sparse:
        raise ConversionError(f"{op.name}: input {source.name!r} is not a sparse constant")
    if out in ctx.values:
        raise ConversionError(f"{op.name}: tensor {ctx.tensor(out).name!r} is written twice")
    if source.shape != ctx.tensor(out).shape or source.type_code != ctx.tensor(out).type_code:
        raise ConversionError(f"{op.name}: output {list(ctx.tensor(out).shape)} {ctx.tensor(out).type_name} differs "
                              f"from input {list(source.shape)} {source.type_name}")
    ctx.constant_data[out] = source.data
    ctx.values[out] = ctx.b.constant(ctx.names[out], source.data.astype(np.float32)
                                     if source.data.dtype == np.float16 else source.data)


def _dequantize(ctx: ImportContext, op: OperatorInfo) -> None:
    source = ctx.tensor(ctx.input_index(op, 0))
    data = ctx.constant_data.get(ctx.input_index(op, 0), source.data)
    if data is not None and data.dtype == np.float16:
        # Constant float16 weights: widened exactly, once, here.
        out = ctx.output_index(op)
        if out in ctx.values:
            raise ConversionError(f"{op.name}: tensor {ctx.tensor(out).name!r} is written twice")
        if source.shape != ctx.tensor(out).shape:
            raise ConversionError(f"{op.name}: output {list(ctx.tensor(out).shape)} differs from input "
                                  f"{list(source.shape)}")
        ctx.constant_data[out] = data.astype(np.float32)
        ctx.values[out] = ctx.b.constant(ctx.names[out], ctx.constant_data[out])
        return
    ctx.emit(op, "Dequantize", [ctx.input(op, 0)], {}, ctx.output_index(op))


def _check_dequantize(model: TFLiteModel, op: OperatorInfo) -> str | None:
    if op.inputs and op.inputs[0] >= 0:
        source = model.tensors[op.inputs[0]]
        if source.type_code == 1 or (source.type_code in (INT8, UINT8) and source.quantized and source.data is None):
            return None
        return f"from {'constant ' if source.data is not None else ''}{source.type_name}"
    return None


def _quantize(ctx: ImportContext, op: OperatorInfo) -> None:
    ctx.emit(op, "Quantize", [ctx.input(op, 0)], {}, ctx.output_index(op))


def _check_quantize(model: TFLiteModel, op: OperatorInfo) -> str | None:
    if not (op.inputs and op.outputs and op.inputs[0] >= 0):
        return None
    source, target = model.tensors[op.inputs[0]], model.tensors[op.outputs[0]]
    if source.type_code != 0 or target.type_code not in (INT8, UINT8) or len(target.scale) != 1:
        return f"{source.type_name} to {target.type_name}"
    return None


# TFLite op -> (convert, check or None)
TABLE: dict[str, tuple[Callable, Callable | None]] = {
    "CONV_2D": (_conv2d, None),
    "DEPTHWISE_CONV_2D": (_depthwise_conv2d, None),
    "TRANSPOSE_CONV": (_transpose_conv, None),
    "CUSTOM:Convolution2DTransposeBias": (_convolution2d_transpose_bias, _check_mediapipe_transpose),
    "FULLY_CONNECTED": (_fully_connected, None),
    "BATCH_MATMUL": (_batch_matmul, None),
    "ADD": (_binary("Add"), None),
    "SUB": (_binary("Sub"), None),
    "MUL": (_binary("Mul"), None),
    "DIV": (_binary("Div"), None),
    "MAXIMUM": (_binary("Max"), None),
    "MINIMUM": (_binary("Min"), None),
    "POW": (_binary("Pow"), None),
    "SQUARED_DIFFERENCE": (_squared_difference, None),
    "PRELU": (_prelu, None),
    "RELU": (_unary("Relu"), None),
    "RELU6": (_unary("Relu6"), None),
    "RELU_N1_TO_1": (_unary("Clip", min=-1.0, max=1.0), None),
    "RELU_0_TO_1": (_unary("Clip", min=0.0, max=1.0), None),
    "LOGISTIC": (_unary("Sigmoid"), None),
    "TANH": (_unary("Tanh"), None),
    "HARD_SWISH": (_unary("HardSwish"), None),
    "LEAKY_RELU": (_leaky_relu, None),
    "ELU": (_unary("Elu", alpha=1.0), None),
    "GELU": (_gelu, None),
    "EXP": (_unary("Exp"), None),
    "LOG": (_unary("Log"), None),
    "SQRT": (_unary("Sqrt"), None),
    "RSQRT": (_unary("Rsqrt"), None),
    "NEG": (_unary("Neg"), None),
    "ABS": (_unary("Abs"), None),
    "SQUARE": (_unary("Square"), None),
    "FLOOR": (_unary("Floor"), None),
    "CEIL": (_unary("Ceil"), None),
    "SIN": (_unary("Sin"), None),
    "COS": (_unary("Cos"), None),
    "SOFTMAX": (_softmax, None),
    "L2_NORMALIZATION": (_l2_normalization, None),
    "MAX_POOL_2D": (_pool("MaxPool2D"), None),
    "AVERAGE_POOL_2D": (_pool("AvgPool2D"), None),
    "MEAN": (_reduce("ReduceMean"), None),
    "SUM": (_reduce("ReduceSum"), None),
    "REDUCE_MAX": (_reduce("ReduceMax"), None),
    "REDUCE_MIN": (_reduce("ReduceMin"), None),
    "REDUCE_PROD": (_reduce("ReduceProd"), None),
    "RESHAPE": (_reshape_like_output, None),
    "SQUEEZE": (_reshape_like_output, None),
    "EXPAND_DIMS": (_reshape_like_output, None),
    "CONCATENATION": (_concatenation, None),
    "PAD": (_pad, None),
    "PADV2": (_pad, None),
    "MIRROR_PAD": (_pad, None),
    "STRIDED_SLICE": (_strided_slice, _check_strided_slice),
    "SLICE": (_slice, None),
    "TRANSPOSE": (_transpose, None),
    "RESIZE_BILINEAR": (_resize, _check_resize),
    "RESIZE_NEAREST_NEIGHBOR": (_resize, _check_resize),
    "DEPTH_TO_SPACE": (_depth_to_space, None),
    "SPACE_TO_DEPTH": (_space_to_depth, None),
    "GATHER": (_gather, None),
    "SPLIT": (_split, None),
    "SPLIT_V": (_split, None),
    "DEQUANTIZE": (_dequantize, _check_dequantize),
    "QUANTIZE": (_quantize, _check_quantize),
    "DENSIFY": (_densify, None),
}
INT8, UINT8, INT32 = 9, 3, 2
# IR ops that only move bytes: on int8 tensors their outputs keep the input's params.
MOVES_BYTES = ("Reshape", "Transpose", "Slice", "MaxPool2D", "Gather", "Split", "Pad")
# TFLite ops with int8 forms in the runtime (its int8 compute ops and the byte movers).
INT8_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D",
                "MEAN", "CONCATENATION", "SOFTMAX"}
INT8_FOLLOW = {"MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "SLICE", "STRIDED_SLICE",
               "GATHER", "SPLIT", "SPLIT_V", "PAD", "PADV2", "MIRROR_PAD"}
INT8_OPS = INT8_COMPUTE | INT8_FOLLOW


def _int8_reason(model: TFLiteModel, op: OperatorInfo) -> str | None:
    """Why an op of a quantized model has no int8 form here, or None."""
    tensors = [model.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
    quantized = [t for t in tensors if t.quantized]
    if not quantized:
        return None
    data = [model.tensors[i] for i in op.inputs if i >= 0 and model.tensors[i].data is None]
    outputs = [model.tensors[i] for i in op.outputs]
    if any(len(t.scale) != 1 for t in data + outputs):
        return "activations quantized per channel"
    if any(t.dtype == "float32" for t in data + outputs):
        return "float and int8 operands mixed"
    if op.op in INT8_FOLLOW and data and any((t.scale, t.zero_point) != (data[0].scale, data[0].zero_point)
                                             for t in outputs):
        return "output params differ from the input's"
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(op.inputs) > 1 and op.inputs[1] >= 0:
        weights = model.tensors[op.inputs[1]]
        if weights.data is None or not weights.quantized:
            return "weights not constant and quantized"
    if op.op == "SOFTMAX" and outputs and (outputs[0].scale != (1.0 / 256.0,) or
                                           outputs[0].zero_point != ((-128,) if outputs[0].type_code == INT8 else (0,))):
        return "output params other than 1/256 from the type's minimum"
    if len({t.type_code for t in data + outputs}) > 1:
        return "int8 and uint8 mixed"
    if op.op == "SOFTMAX" and _options(op, "Beta", 1.0) != 1.0:
        return "beta other than 1"
    if op.op == "MEAN":
        # The runtime's int8 mean averages the H, W axes of an NHWC tensor.
        axes = model.tensors[op.inputs[1]].data if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        rank = len(data[0].shape) if data else 0
        if rank != 4 or axes is None or sorted({int(a) % 4 for a in np.asarray(axes).reshape(-1)}) != [1, 2]:
            return "int8 mean over axes other than H, W"
    return None


def unsupported_reason(model: TFLiteModel, op: OperatorInfo) -> str | None:
    """The UnsupportedOpsError key for ``op``, or None when it converts."""
    if op.op not in TABLE:
        return op.op
    _, check = TABLE[op.op]
    activation = _options(op, "FusedActivationFunction", 0)
    if activation and activation not in FUSED_ACTIVATIONS:
        return f"{op.op} (fused activation {ACTIVATION_NAMES.get(activation, activation)})"
    if op.op not in ("DEQUANTIZE", "QUANTIZE", "DENSIFY"):
        for index in (*op.inputs, *op.outputs):
            if index < 0:
                continue
            t = model.tensors[index]
            if t.sparse:
                return f"{op.op} (sparse tensor)"
            if t.quantized and (t.type_code not in (INT8, UINT8) or op.op not in INT8_OPS):
                return f"{op.op} (quantized {t.type_name})"
            if t.dtype is None:
                return f"{op.op} ({t.type_name})"
        reason = _int8_reason(model, op)
        if reason:
            return f"{op.op} ({reason})"
    if check is not None:
        reason = check(model, op)
        if reason:
            return f"{op.op} ({reason})"
    return None


def convert_operator(ctx: ImportContext, op: OperatorInfo) -> None:
    convert, _ = TABLE[op.op]
    convert(ctx, op)

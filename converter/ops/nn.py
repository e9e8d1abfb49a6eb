"""Neural-network ops: convolutions, matmuls, normalisations, pooling, reductions, LRN.

Layout-sensitive references compute in NCHW with ONNX weight layouts; an NHWC node is transposed
to that form, computed, and transposed back, so both layouts share one implementation.
Floats accumulate in float64 and are rounded once to the input's dtype.
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.BatchMatMulOptions import BatchMatMulOptionsT
from converter.edgefb.Conv2DOptions import Conv2DOptionsT
from converter.edgefb.LayerNormOptions import LayerNormOptionsT
from converter.edgefb.LrnOptions import LrnOptionsT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.Pool2DOptions import Pool2DOptionsT
from converter.edgefb.PoolType import PoolType
from converter.edgefb.ReduceOp import ReduceOp
from converter.edgefb.ReduceOptions import ReduceOptionsT
from converter.edgefb.SoftmaxOptions import SoftmaxOptionsT
from converter.ir import TensorType
from converter.ops import OPS, OpDef, register
from converter.ops._common import (FLOAT_DTYPES, accumulate_dtype, apply_activation, broadcast_dims,
                                   check_axis, conv2d_nchw, conv_residual, count_elements, fail, float32_value,
                                   int8_matmul, int8_weighted, ints, layout_of, need, no_attrs,
                                   no_options, require_nhwc, static_shape)
from converter.ops.int8_reference import (avg_pool_int8, batch_matmul_dynamic, batch_matmul_int8,
                                          conv2d_dynamic, conv2d_int8, fully_connected_dynamic,
                                          fully_connected_int8, layer_norm_int8, max_pool_int8,
                                          reduce_mean_int8, softmax_int8)

F64 = np.float64
TO_NCHW = (0, 3, 1, 2)
TO_NHWC = (0, 2, 3, 1)


def _float_input(op: str, t: TensorType, what: str = "input") -> None:
    """A float input; an op with an int8 form also takes int8 (the params in Graph.quantization
    select the integer arithmetic)."""
    if t.dtype not in FLOAT_DTYPES and not (t.dtype == "int8" and OPS[op].int8 is not None):
        fail(op, f"{what} has dtype {t.dtype}; expected a float dtype")


def _window_attrs(attrs) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
    return strides, dilations, pads


def _check_window(op: str, strides, dilations, pads) -> None:
    if len(strides) != 2 or min(strides) < 1:
        fail(op, f"strides {strides} must be two positive ints")
    if len(dilations) != 2 or min(dilations) < 1:
        fail(op, f"dilations {dilations} must be two positive ints")
    if len(pads) != 4 or min(pads) < 0:
        fail(op, f"pads {pads} must be four non-negative ints (top, left, bottom, right)")


def _sliding_size(op: str, size: int, kernel: int, stride: int, dilation: int, pad_begin: int,
                  pad_end: int, ceil_mode: bool = False) -> int:
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if span < 0:
        fail(op, f"kernel {kernel} (dilation {dilation}) is larger than the padded input "
                 f"{size} + {pad_begin} + {pad_end}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # A ceil-mode window that would start in the end padding is dropped (onnxruntime, PyTorch).
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def _to_nchw(x, layout):
    return x if layout == "NCHW" else np.transpose(x, TO_NCHW)


def _from_nchw(y, layout):
    return y if layout == "NCHW" else np.ascontiguousarray(np.transpose(y, TO_NHWC))


def _spatial(op: str, t: TensorType, layout: str) -> tuple:
    if t.rank != 4:
        fail(op, f"input must be rank 4 ({layout}), got shape {t.shape}")
    n, c, h, w = t.shape if layout == "NCHW" else (t.shape[0], t.shape[3], t.shape[1], t.shape[2])
    if not all(isinstance(d, int) for d in (c, h, w)):
        fail(op, f"channel and spatial dims of {t.shape} must be static")
    return n, c, h, w


def _nchw_shape(layout: str, n, c, h, w) -> tuple:
    return (n, c, h, w) if layout == "NCHW" else (n, h, w, c)


# ---- Conv2D, ConvTranspose2D ----

def _conv_lower(opcode: int, transposed: bool):
    def lower(attrs):
        require_nhwc("ConvTranspose2D" if transposed else "Conv2D", attrs)
        strides, dilations, pads = _window_attrs(attrs)
        options = Conv2DOptionsT()
        options.strides, options.dilations, options.pads = list(strides), list(dilations), list(pads)
        options.groups = int(attrs.get("groups", 1))
        if transposed:
            options.outputPadding = list(attrs.get("output_padding", (0, 0)))
        return opcode, OpOptions.Conv2DOptions, options
    return lower


def _conv_lift(transposed: bool):
    def lift(options):
        attrs = {"strides": ints(options.strides, (1, 1)), "dilations": ints(options.dilations, (1, 1)),
                 "pads": ints(options.pads, (0, 0, 0, 0)), "groups": int(options.groups),
                 "layout": "NHWC"}
        if transposed:
            attrs["output_padding"] = ints(options.outputPadding, (0, 0))
        return attrs
    return lift


def _check_bias(op: str, bias: TensorType | None, channels: int) -> None:
    if bias is not None and tuple(bias.shape) != (channels,):
        fail(op, f"bias shape {bias.shape} must be ({channels},)")


def _conv_infer(types, attrs):
    op = "Conv2D"
    need(op, types, 2, optional=2)
    x, w = types[0], types[1]
    layout = layout_of(op, attrs)
    _float_input(op, x)
    strides, dilations, pads = _window_attrs(attrs)
    _check_window(op, strides, dilations, pads)
    groups = int(attrs.get("groups", 1))
    n, c, h, wd = _spatial(op, x, layout)
    if w.rank != 4:
        fail(op, f"weights must be rank 4, got {w.shape}")
    o, cg, kh, kw = static_shape(op, w, "weight") if layout == "NCHW" else (
        w.shape[0], w.shape[3], w.shape[1], w.shape[2])
    if groups < 1 or c != cg * groups or o % groups:
        fail(op, f"{c} input channels, weights {w.shape} ({layout}) and groups={groups} do not agree")
    _check_bias(op, types[2] if len(types) > 2 else None, o)
    oh = _sliding_size(op, h, kh, strides[0], dilations[0], pads[0], pads[2])
    ow = _sliding_size(op, wd, kw, strides[1], dilations[1], pads[1], pads[3])
    y = TensorType(x.dtype, _nchw_shape(layout, n, o, oh, ow))
    residual = types[3] if len(types) > 3 else None
    if residual is not None:
        _check_residual(op, residual, y, layout)
    return [y]


def _check_residual(op: str, residual: TensorType, y: TensorType, layout: str) -> None:
    """A fused residual (fusion.fuse_residual_add) has the output's shape but for its channels, of
    which it may have fewer (zero-padded at the end); NHWC only, as the runtime takes it."""
    if layout != "NHWC" or residual.dtype != y.dtype or residual.rank != 4:
        fail(op, f"a residual must be an NHWC {y.dtype} tensor of rank 4, got {residual.dtype} {residual.shape} "
                 f"({layout})")
    channels = residual.shape[3]
    if tuple(residual.shape[:3]) != tuple(y.shape[:3]) or not (
            isinstance(channels, int) and isinstance(y.shape[3], int) and 1 <= channels <= y.shape[3]):
        fail(op, f"residual {residual.shape} must match the output {y.shape} but for 1 .. {y.shape[3]} channels")


def _add_residual(y: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """y + residual over the residual's channels, the first of y's (the rest are its zero padding)."""
    out = y.copy()
    out[..., :residual.shape[-1]] += residual
    return out


def _conv_reference(inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    layout = layout_of("Conv2D", attrs)
    strides, dilations, pads = _window_attrs(attrs)
    w_oihw = w if layout == "NCHW" else np.transpose(w, TO_NCHW)
    y = _from_nchw(conv2d_nchw(_to_nchw(x, layout), w_oihw, bias, strides, dilations, pads,
                               int(attrs.get("groups", 1))), layout).astype(x.dtype)
    if len(inputs) > 3 and inputs[3] is not None:
        y = _add_residual(y, inputs[3])
    return [apply_activation(y, attrs)]


def _conv_flops(in_types, out_types, attrs):
    w = in_types[1]
    per_output = w.shape[1] * w.shape[2] * w.shape[3]  # (I/g)*KH*KW in either weight layout
    return 2 * out_types[0].size * per_output


def _channel_sum(g, dy: str, layout: str) -> str:
    """A bias gradient: dy summed over every axis but the channel one."""
    axes = (0, 2, 3) if layout == "NCHW" else (0, 1, 2)
    return g.emit("ReduceSum", [dy], {"axes": axes, "keepdims": False})


def _conv_grad(g, node, dys):
    if conv_residual(node):
        fail("Conv2D", "a fused residual has no gradient; trainable graphs keep the ADD separate")
    x, w = node.inputs[0], node.inputs[1]
    geometry = {k: node.attrs[k] for k in ("strides", "dilations", "pads", "groups", "layout")
                if k in node.attrs}
    dx = dw = db = None
    if g.wants(0):
        dx = g.emit("Conv2DBackpropInput", [dys[0], w], {**geometry, "shape": g.shape(x)})
    if g.wants(1):
        dw = g.emit("Conv2DBackpropFilter", [x, dys[0]], {**geometry, "shape": g.shape(w)})
    if len(node.inputs) > 2 and g.wants(2):
        db = _channel_sum(g, dys[0], layout_of("Conv2D", node.attrs))
    return [dx, dw, db]


register(OpDef(name="Conv2D", infer=_conv_infer, reference=_conv_reference,
               lower=_conv_lower(OpCode.CONV_2D, False), lift=_conv_lift(False),
               opcode=OpCode.CONV_2D, flops=_conv_flops, layout_sensitive=True, fusable=True,
               gradient=_conv_grad, int8=conv2d_int8, int8_role="compute", int8_condition=int8_weighted,
               weight_slot=1, bias_slot=2, dynamic=conv2d_dynamic))


def _conv_transpose_weights_to_onnx(w, groups):
    """[Cout, KH, KW, Cin/g] (runtime) -> [Cin, Cout/g, KH, KW] (ONNX)."""
    cout, kh, kw, cin_g = w.shape
    per_group = w.reshape(groups, cout // groups, kh, kw, cin_g)
    return per_group.transpose(0, 4, 1, 2, 3).reshape(groups * cin_g, cout // groups, kh, kw)


def _conv_transpose_infer(types, attrs):
    op = "ConvTranspose2D"
    need(op, types, 2, optional=1)
    x, w = types[0], types[1]
    layout = layout_of(op, attrs)
    _float_input(op, x)
    strides, dilations, pads = _window_attrs(attrs)
    _check_window(op, strides, dilations, pads)
    out_pad = tuple(attrs.get("output_padding", (0, 0)))
    groups = int(attrs.get("groups", 1))
    n, cin, h, wd = _spatial(op, x, layout)
    ws = static_shape(op, w, "weight")
    if len(ws) != 4:
        fail(op, f"weights must be rank 4, got {ws}")
    if layout == "NCHW":
        w_cin, cout, kh, kw = ws[0], ws[1] * groups, ws[2], ws[3]
    else:
        w_cin, cout, kh, kw = ws[3] * groups, ws[0], ws[1], ws[2]
    if groups < 1 or w_cin != cin or cin % groups or cout % groups:
        fail(op, f"{cin} input channels, weights {ws} ({layout}) and groups={groups} do not agree")
    _check_bias(op, types[2] if len(types) > 2 else None, cout)
    oh = (h - 1) * strides[0] + dilations[0] * (kh - 1) + 1 + out_pad[0] - pads[0] - pads[2]
    ow = (wd - 1) * strides[1] + dilations[1] * (kw - 1) + 1 + out_pad[1] - pads[1] - pads[3]
    if oh < 1 or ow < 1:
        fail(op, f"output would be {oh}x{ow}; pads {pads} are too large")
    return [TensorType(x.dtype, _nchw_shape(layout, n, cout, oh, ow))]


def conv_transpose2d_nchw(x, w, bias, strides, dilations, pads, output_padding, groups):
    """ONNX ConvTranspose: x [N, Cin, H, W], w [Cin, Cout/groups, KH, KW]. Every input pixel
    scatters its kernel into a full-size output, which the pads then crop."""
    n, cin, h, wd = x.shape
    _, cog, kh, kw = w.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + output_padding[0]
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]
    x_groups = x.astype(F64).reshape(n, groups, cin // groups, h, wd)
    w_groups = w.astype(F64).reshape(groups, cin // groups, cog, kh, kw)
    full = np.zeros((n, groups, cog, full_h, full_w))
    for i in range(kh):
        for j in range(kw):
            contribution = np.einsum("ngchw,gco->ngohw", x_groups, w_groups[:, :, :, i, j])
            full[..., i * dh: i * dh + sh * (h - 1) + 1: sh,
                 j * dw: j * dw + sw * (wd - 1) + 1: sw] += contribution
    y = full.reshape(n, groups * cog, full_h, full_w)[:, :, pt: full_h - pb, pl: full_w - pr]
    if bias is not None:
        y = y + bias.astype(F64)[None, :, None, None]
    return y


def _conv_transpose_reference(inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    layout = layout_of("ConvTranspose2D", attrs)
    groups = int(attrs.get("groups", 1))
    strides, dilations, pads = _window_attrs(attrs)
    w_onnx = w if layout == "NCHW" else _conv_transpose_weights_to_onnx(w, groups)
    y = conv_transpose2d_nchw(_to_nchw(x, layout), w_onnx, bias, strides, dilations, pads,
                              tuple(attrs.get("output_padding", (0, 0))), groups)
    return [apply_activation(_from_nchw(y, layout).astype(x.dtype), attrs)]


def _conv_transpose_flops(in_types, out_types, attrs):
    w = in_types[1]
    groups = int(attrs.get("groups", 1))
    nchw = attrs.get("layout", "NCHW") == "NCHW"
    cout_per_group = w.shape[1] if nchw else w.shape[0] // groups
    kernel = w.shape[2] * w.shape[3] if nchw else w.shape[1] * w.shape[2]
    return 2 * in_types[0].size * cout_per_group * kernel


def _conv_transpose_grad(g, node, dys):
    """A transposed convolution is the input-gradient of the convolution with the same geometry
    whose weights w' are its own with the channel roles swapped, so dx = Conv2D(dy, w') and
    dw' = Conv2DBackpropFilter(dy, x). In NCHW, ONNX's [Cin, Cout/g, kh, kw] already is w'
    (OIHW); in NHWC, [Cout, kh, kw, Cin/g] becomes [Cin, kh, kw, Cout/g] per group (and dw'
    goes back the same way: swapping axes 1 and 4 of the grouped form is its own inverse)."""
    x, w = node.inputs[0], node.inputs[1]
    layout = layout_of("ConvTranspose2D", node.attrs)
    groups = int(node.attrs.get("groups", 1))
    geometry = {k: node.attrs[k] for k in ("strides", "dilations", "pads", "groups", "layout") if k in node.attrs}
    dy = dys[0]

    def swap_roles(weights, rows, cols):
        _, kh, kw, _ = g.shape(weights)
        grouped = g.emit("Reshape", [weights], {"shape": (groups, rows // groups, kh, kw, cols)})
        swapped = g.emit("Transpose", [grouped], {"perm": (0, 4, 2, 3, 1)})
        return g.emit("Reshape", [swapped], {"shape": (groups * cols, kh, kw, rows // groups)})

    w_conv = w
    if layout == "NHWC":
        cout, _, _, cin_g = g.shape(w)
        w_conv = swap_roles(w, cout, cin_g)
    dx = dw = db = None
    if g.wants(0):
        dx = g.emit("Conv2D", [dy, w_conv], geometry)
    if g.wants(1):
        dw = g.emit("Conv2DBackpropFilter", [dy, x], {**geometry, "shape": g.shape(w_conv)})
        if layout == "NHWC":
            cin, _, _, cout_g = g.shape(w_conv)
            dw = swap_roles(dw, cin, cout_g)
    if len(node.inputs) > 2 and g.wants(2):
        db = _channel_sum(g, dy, layout)
    return [dx, dw, db]


register(OpDef(name="ConvTranspose2D", infer=_conv_transpose_infer,
               reference=_conv_transpose_reference,
               lower=_conv_lower(OpCode.CONV_TRANSPOSE_2D, True), lift=_conv_lift(True),
               opcode=OpCode.CONV_TRANSPOSE_2D, flops=_conv_transpose_flops,
               layout_sensitive=True, fusable=True, gradient=_conv_transpose_grad))


# ---- FullyConnected, BatchMatMul ----

def _fc_infer(types, attrs):
    op = "FullyConnected"
    need(op, types, 2, optional=1)
    x, w = types[0], types[1]
    _float_input(op, x)
    if x.rank < 1 or w.rank != 2 or x.shape[-1] != w.shape[1]:
        fail(op, f"input {x.shape} and weights {w.shape} do not agree (need x[..., K], w[N, K])")
    _check_bias(op, types[2] if len(types) > 2 else None, w.shape[0])
    return [TensorType(x.dtype, x.shape[:-1] + (w.shape[0],))]


def _fc_reference(inputs, attrs):
    x, w = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    y = x.astype(F64) @ w.astype(F64).T
    if bias is not None:
        y = y + bias.astype(F64)
    return [apply_activation(y.astype(x.dtype), attrs)]


def _fc_grad(g, node, dys):
    # y = x @ w.T + b over x's leading dims: dx = dy @ w, dw = dy2.T @ x2 (dims flattened).
    x, w = node.inputs[0], node.inputs[1]
    dy = dys[0]
    dx = dw = db = None
    if g.wants(0):
        dy_rows = dy if len(g.shape(dy)) >= 2 else g.emit("Reshape", [dy], {"shape": (1,) + g.shape(dy)})
        dx = g.emit("BatchMatMul", [dy_rows, w])
        if g.shape(dx) != g.shape(x):
            dx = g.emit("Reshape", [dx], {"shape": g.shape(x)})
    rows = int(np.prod(g.shape(x)[:-1], dtype=np.int64))
    if g.wants(1):
        dy2 = g.emit("Reshape", [dy], {"shape": (rows, g.shape(w)[0])}) if len(g.shape(dy)) != 2 else dy
        x2 = g.emit("Reshape", [x], {"shape": (rows, g.shape(w)[1])}) if len(g.shape(x)) != 2 else x
        dw = g.emit("BatchMatMul", [dy2, x2], {"transpose_a": True})
    if len(node.inputs) > 2 and g.wants(2):
        leading = tuple(range(len(g.shape(dy)) - 1))
        db = g.emit("ReduceSum", [dy], {"axes": leading, "keepdims": False}) if leading else dy
    return [dx, dw, db]


register(OpDef(name="FullyConnected", infer=_fc_infer, reference=_fc_reference,
               lower=no_options(OpCode.FULLY_CONNECTED), lift=no_attrs,
               opcode=OpCode.FULLY_CONNECTED,
               flops=lambda i, o, a: 2 * o[0].size * i[1].shape[1], fusable=True,
               gradient=_fc_grad, int8=fully_connected_int8, int8_role="compute",
               int8_condition=int8_weighted, weight_slot=1, bias_slot=2, dynamic=fully_connected_dynamic))


def _matmul_operands(shape_a, shape_b, attrs):
    if attrs.get("transpose_a"):
        shape_a = shape_a[:-2] + (shape_a[-1], shape_a[-2])
    if attrs.get("transpose_b"):
        shape_b = shape_b[:-2] + (shape_b[-1], shape_b[-2])
    return shape_a, shape_b


def _bmm_infer(types, attrs):
    op = "BatchMatMul"
    need(op, types, 2)
    a, b = types
    if a.rank < 2 or b.rank < 2:
        fail(op, f"both inputs need rank >= 2, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype:
        fail(op, f"inputs have different dtypes {a.dtype} and {b.dtype}")
    sa, sb = _matmul_operands(a.shape, b.shape, attrs)
    if sa[-1] != sb[-2]:
        fail(op, f"inner dims differ: {sa} x {sb} (after transpose_a/transpose_b)")
    batch = broadcast_dims(op, sa[:-2], sb[:-2])
    return [TensorType(a.dtype, batch + (sa[-2], sb[-1]))]


def _bmm_reference(inputs, attrs):
    a, b = inputs
    acc = accumulate_dtype(a.dtype)
    a_acc, b_acc = a.astype(acc), b.astype(acc)
    if attrs.get("transpose_a"):
        a_acc = np.swapaxes(a_acc, -1, -2)
    if attrs.get("transpose_b"):
        b_acc = np.swapaxes(b_acc, -1, -2)
    return [apply_activation(np.matmul(a_acc, b_acc).astype(a.dtype), attrs)]


def _bmm_lower(attrs):
    options = BatchMatMulOptionsT()
    options.transposeA = bool(attrs.get("transpose_a", False))
    options.transposeB = bool(attrs.get("transpose_b", False))
    return OpCode.BATCH_MATMUL, OpOptions.BatchMatMulOptions, options


def _bmm_flops(in_types, out_types, attrs):
    sa, _ = _matmul_operands(in_types[0].shape, in_types[1].shape, attrs)
    return 2 * out_types[0].size * sa[-1]


def _bmm_grad(g, node, dys):
    # y = A' @ B' with A' = A.T if transpose_a (likewise B): dA' = dy @ B'.T, dB' = A'.T @ dy,
    # each written as one BatchMatMul with the transposes folded into its flags, then summed
    # over the batch dims the operand was broadcast along.
    a, b = node.inputs
    ta, tb = bool(node.attrs.get("transpose_a")), bool(node.attrs.get("transpose_b"))
    dy = dys[0]
    da = db = None
    if g.wants(0):
        if not ta:
            da = g.emit("BatchMatMul", [dy, b], {"transpose_b": not tb})
        else:
            da = g.emit("BatchMatMul", [b, dy], {"transpose_a": tb, "transpose_b": True})
        da = g.unbroadcast(da, g.shape(a))
    if g.wants(1):
        if not tb:
            db = g.emit("BatchMatMul", [a, dy], {"transpose_a": not ta})
        else:
            db = g.emit("BatchMatMul", [dy, a], {"transpose_a": True, "transpose_b": ta})
        db = g.unbroadcast(db, g.shape(b))
    return [da, db]


register(OpDef(name="BatchMatMul", infer=_bmm_infer, reference=_bmm_reference, lower=_bmm_lower,
               lift=lambda o: {"transpose_a": bool(o.transposeA), "transpose_b": bool(o.transposeB)},
               opcode=OpCode.BATCH_MATMUL, flops=_bmm_flops, fusable=True, gradient=_bmm_grad,
               int8=batch_matmul_int8, int8_role="compute", int8_condition=int8_matmul,
               dynamic=batch_matmul_dynamic))


# ---- Softmax, LogSoftmax, LayerNorm, BatchNorm ----

def _softmax(name: str, log: bool, **int8_form) -> OpDef:
    def infer(types, attrs):
        need(name, types, 1)
        _float_input(name, types[0])
        check_axis(name, attrs.get("axis", -1), types[0].rank)
        return [types[0]]

    def reference(inputs, attrs):
        x = inputs[0]
        axis = attrs["axis"]
        shifted = x.astype(F64) - np.max(x.astype(F64), axis=axis, keepdims=True)
        log_sum = np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        y = shifted - log_sum if log else np.exp(shifted - log_sum)
        return [y.astype(x.dtype)]

    def lower(attrs):
        options = SoftmaxOptionsT()
        options.axis, options.log = int(attrs["axis"]), log
        return OpCode.SOFTMAX, OpOptions.SoftmaxOptions, options

    def gradient(g, node, dys):
        # softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
        y, dy = node.outputs[0], dys[0]
        axis = {"axes": (int(node.attrs["axis"]),), "keepdims": True}
        if log:
            total = g.emit("ReduceSum", [dy], axis)
            return [g.emit("Sub", [dy, g.emit("Mul", [g.emit("Exp", [y]), total])])]
        total = g.emit("ReduceSum", [g.emit("Mul", [dy, y])], axis)
        return [g.emit("Mul", [y, g.emit("Sub", [dy, total])])]

    # Softmax and LogSoftmax share SOFTMAX; lift_key is the options' log flag (0 or 1).
    return register(OpDef(name=name, infer=infer, reference=reference, lower=lower,
                          lift=lambda o: {"axis": int(o.axis)}, opcode=OpCode.SOFTMAX,
                          lift_key=int(log), flops=lambda i, o, a: 5 * o[0].size,
                          gradient=gradient, **int8_form))


_softmax("Softmax", False, int8=softmax_int8, int8_role="compute")
_softmax("LogSoftmax", True)


def _layer_norm_infer(types, attrs, op="LayerNorm"):
    need(op, types, 2, optional=1)
    x = types[0]
    _float_input(op, x)
    axis = check_axis(op, attrs.get("axis", -1), x.rank)
    normalised = x.shape[axis:]
    for what, t in (("scale", types[1]), ("bias", types[2] if len(types) > 2 else None)):
        if t is None:
            continue
        fits = t.rank <= len(normalised) and all(
            s in (1, n) for s, n in zip(reversed(t.shape), reversed(normalised)))
        if not fits:
            fail(op, f"{what} shape {t.shape} does not broadcast to the normalised shape {normalised}")
    return [x]


def _layer_norm_reference(inputs, attrs, rms=False):
    x, scale = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    axes = tuple(range(attrs["axis"], x.ndim))
    x64 = x.astype(F64)
    mean = 0.0 if rms else x64.mean(axis=axes, keepdims=True)
    variance = np.square(x64 - mean).mean(axis=axes, keepdims=True)
    y = (x64 - mean) / np.sqrt(variance + attrs.get("epsilon", 1e-5)) * scale.astype(F64)
    if bias is not None:
        y = y + bias.astype(F64)
    return [y.astype(x.dtype)]


def _layer_norm_lower(attrs, rms=False):
    options = LayerNormOptionsT()
    options.axis, options.epsilon = int(attrs["axis"]), float(attrs.get("epsilon", 1e-5))
    options.rms = rms
    return OpCode.LAYER_NORM, OpOptions.LayerNormOptions, options


def _layer_norm_grad(g, node, dys):
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    attrs = {"axis": int(node.attrs["axis"]), "epsilon": float(node.attrs.get("epsilon", 1e-5))}
    dx, dscale, dbias = g.emit("LayerNormGrad", [x, scale, dys[0]], attrs)
    if bias and g.wants(2) and g.shape(bias) != g.shape(scale):
        dbias = g.unbroadcast(dys[0], g.shape(bias))
    return [dx, dscale, dbias if bias else None]


def _layer_norm_int8_condition(graph, node) -> str | None:
    if not all(graph.is_constant(i) for i in node.inputs[1:] if i):
        return "scale or bias is not constant"
    return None


def _layer_norm_lift(options):
    return {"axis": int(options.axis), "epsilon": float32_value(options.epsilon)}


# LayerNorm and RMSNorm share LAYER_NORM; lift_key is the options' rms flag (0 or 1).
register(OpDef(name="LayerNorm", infer=_layer_norm_infer, reference=_layer_norm_reference,
               lower=_layer_norm_lower, lift=_layer_norm_lift, lift_key=0,
               opcode=OpCode.LAYER_NORM, flops=lambda i, o, a: 8 * o[0].size,
               gradient=_layer_norm_grad, int8=layer_norm_int8, int8_role="compute",
               int8_condition=_layer_norm_int8_condition, int8_inputs=(0,)))


def _rms_norm_grad(g, node, dys):
    # y = x * r * scale (+ bias), r = (mean(x^2) + eps)^-1/2 over the normalised axes:
    # dx = r * d - x * r^3 * mean(d * x) with d = dy * scale; dscale = dy * x * r summed back.
    x, scale = node.inputs[0], node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    dy = dys[0]
    reduce = {"axes": tuple(range(int(node.attrs["axis"]), len(g.shape(x)))), "keepdims": True}
    mean_square = g.emit("ReduceMean", [g.emit("Mul", [x, x])], reduce)
    r = g.emit("Rsqrt", [g.emit("Add", [mean_square, g.scalar(float(node.attrs.get("epsilon", 1e-5)), x)])])
    d = g.emit("Mul", [dy, scale])
    dx = dscale = dbias = None
    if g.wants(0):
        r3 = g.emit("Mul", [g.emit("Mul", [r, r]), r])
        along = g.emit("Mul", [g.emit("Mul", [x, r3]), g.emit("ReduceMean", [g.emit("Mul", [d, x])], reduce)])
        dx = g.emit("Sub", [g.emit("Mul", [d, r]), along])
    if g.wants(1):
        dscale = g.unbroadcast(g.emit("Mul", [dy, g.emit("Mul", [x, r])]), g.shape(scale))
    if bias and g.wants(2):
        dbias = g.unbroadcast(dy, g.shape(bias))
    return [dx, dscale, dbias]


register(OpDef(name="RMSNorm", infer=lambda t, a: _layer_norm_infer(t, a, op="RMSNorm"),
               reference=lambda i, a: _layer_norm_reference(i, a, rms=True),
               lower=lambda a: _layer_norm_lower(a, rms=True), lift=_layer_norm_lift, lift_key=1,
               opcode=OpCode.LAYER_NORM, flops=lambda i, o, a: 6 * o[0].size, gradient=_rms_norm_grad))


def _batch_norm_infer(types, attrs):
    op = "BatchNorm"
    need(op, types, 5)
    x = types[0]
    _float_input(op, x)
    if x.rank < 2:
        fail(op, f"input needs rank >= 2, got {x.shape}")
    channels = x.shape[1] if layout_of(op, attrs) == "NCHW" else x.shape[-1]
    for what, t in zip(("scale", "bias", "mean", "var"), types[1:]):
        if tuple(t.shape) != (channels,):
            fail(op, f"{what} shape {t.shape} must be ({channels},)")
    return [x]


def _batch_norm_reference(inputs, attrs):
    x, scale, bias, mean, var = inputs
    channel_axis = 1 if layout_of("BatchNorm", attrs) == "NCHW" else x.ndim - 1
    along_channels = [1] * x.ndim
    along_channels[channel_axis] = -1

    def per_channel(v):
        return v.astype(F64).reshape(along_channels)

    std = np.sqrt(per_channel(var) + attrs.get("epsilon", 1e-5))
    y = (x.astype(F64) - per_channel(mean)) / std * per_channel(scale) + per_channel(bias)
    return [y.astype(x.dtype)]


def _batch_norm_lower(attrs):
    raise ValueError("BatchNorm has no runtime op: the fold_batch_norm pass folds it into a "
                     "Conv2D/FullyConnected or rewrites it to Mul/Add before writing")


register(OpDef(name="BatchNorm", infer=_batch_norm_infer, reference=_batch_norm_reference,
               lower=_batch_norm_lower, lift=_batch_norm_lower, opcode=OpCode.CUSTOM,
               lift_key=-1, flops=lambda i, o, a: 2 * o[0].size, layout_sensitive=True))


# ---- MaxPool2D, AvgPool2D ----

def _pool(name: str, pool_type: int, **int8_form) -> OpDef:
    is_max = pool_type == PoolType.MAX

    def geometry(attrs):
        kernel = tuple(attrs["kernel"])
        strides, dilations, pads = _window_attrs(attrs)
        return kernel, strides, dilations, pads, bool(attrs.get("ceil_mode", False))

    def infer(types, attrs):
        need(name, types, 1)
        layout = layout_of(name, attrs)
        _float_input(name, types[0])
        kernel, strides, dilations, pads, ceil_mode = geometry(attrs)
        if len(kernel) != 2 or min(kernel) < 1:
            fail(name, f"kernel {kernel} must be two positive ints")
        _check_window(name, strides, dilations, pads)
        if max(pads[0], pads[2]) >= kernel[0] or max(pads[1], pads[3]) >= kernel[1]:
            fail(name, f"pads {pads} must be smaller than the kernel {kernel}")
        n, c, h, w = _spatial(name, types[0], layout)
        oh = _sliding_size(name, h, kernel[0], strides[0], dilations[0], pads[0], pads[2], ceil_mode)
        ow = _sliding_size(name, w, kernel[1], strides[1], dilations[1], pads[1], pads[3], ceil_mode)
        return [TensorType(types[0].dtype, _nchw_shape(layout, n, c, oh, ow))]

    def reference(inputs, attrs):
        layout = layout_of(name, attrs)
        x = _to_nchw(inputs[0], layout)
        kernel, strides, dilations, pads, ceil_mode = geometry(attrs)
        _, _, h, w = x.shape
        oh = _sliding_size(name, h, kernel[0], strides[0], dilations[0], pads[0], pads[2], ceil_mode)
        ow = _sliding_size(name, w, kernel[1], strides[1], dilations[1], pads[1], pads[3], ceil_mode)
        row_starts = np.arange(oh) * strides[0] - pads[0]
        col_starts = np.arange(ow) * strides[1] - pads[1]
        x64 = x.astype(F64)
        result = np.full(x.shape[:2] + (oh, ow), -np.inf if is_max else 0.0)
        count = np.zeros((oh, ow))
        for i in range(kernel[0]):
            rows = row_starts + i * dilations[0]
            for j in range(kernel[1]):
                cols = col_starts + j * dilations[1]
                inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
                values = x64[:, :, np.clip(rows, 0, h - 1)][:, :, :, np.clip(cols, 0, w - 1)]
                if is_max:
                    result = np.where(inside, np.maximum(result, values), result)
                    continue
                result += np.where(inside, values, 0.0)
                if attrs.get("count_include_pad", False):
                    # Padding cells count; the extra cells ceil_mode reads past the padding don't.
                    in_padded = (rows < h + pads[2])[:, None] & (cols < w + pads[3])[None, :]
                    count += in_padded
                else:
                    count += inside
        if not is_max:
            result = result / count
        return [_from_nchw(result.astype(inputs[0].dtype), layout)]

    def lower(attrs):
        require_nhwc(name, attrs)
        kernel, strides, dilations, pads, ceil_mode = geometry(attrs)
        options = Pool2DOptionsT()
        options.type = pool_type
        options.kernel, options.strides = list(kernel), list(strides)
        options.dilations, options.pads = list(dilations), list(pads)
        options.ceilMode = ceil_mode
        options.countIncludePad = bool(attrs.get("count_include_pad", False)) and not is_max
        return OpCode.POOL_2D, OpOptions.Pool2DOptions, options

    def lift(options):
        attrs = {"kernel": ints(options.kernel), "strides": ints(options.strides, (1, 1)),
                 "dilations": ints(options.dilations, (1, 1)),
                 "pads": ints(options.pads, (0, 0, 0, 0)), "ceil_mode": bool(options.ceilMode),
                 "layout": "NHWC"}
        if not is_max:
            attrs["count_include_pad"] = bool(options.countIncludePad)
        return attrs

    def flops(in_types, out_types, attrs):
        return out_types[0].size * attrs["kernel"][0] * attrs["kernel"][1]

    def gradient(g, node, dys):
        return [g.emit("Pool2DGrad", [node.inputs[0], dys[0]],
                       {**node.attrs, "pool": "max" if is_max else "average"})]

    # MaxPool2D and AvgPool2D share POOL_2D; lift_key is the options' PoolType.
    return register(OpDef(name=name, infer=infer, reference=reference, lower=lower, lift=lift,
                          opcode=OpCode.POOL_2D, lift_key=pool_type, flops=flops,
                          layout_sensitive=True, gradient=gradient, **int8_form))


_pool("MaxPool2D", PoolType.MAX, int8=max_pool_int8, int8_role="follow")
_pool("AvgPool2D", PoolType.AVERAGE, int8=avg_pool_int8, int8_role="compute")


# ---- reductions ----

def _log_sum_exp(x, axis, keepdims):
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    y = np.log(np.sum(np.exp(x - peak), axis=axis, keepdims=True)) + peak
    return y if keepdims else np.squeeze(y, axis=axis)


REDUCTIONS = {
    "ReduceMean": (ReduceOp.MEAN, np.mean),
    "ReduceSum": (ReduceOp.SUM, np.sum),
    "ReduceMax": (ReduceOp.MAX, np.max),
    "ReduceMin": (ReduceOp.MIN, np.min),
    "ReduceProd": (ReduceOp.PROD, np.prod),
    "ReduceL1": (ReduceOp.L1, lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims)),
    "ReduceL2": (ReduceOp.L2,
                 lambda x, axis, keepdims: np.sqrt(np.sum(np.square(x), axis=axis, keepdims=keepdims))),
    "ReduceSumSquare": (ReduceOp.SUM_SQUARE,
                        lambda x, axis, keepdims: np.sum(np.square(x), axis=axis, keepdims=keepdims)),
    "ReduceLogSumExp": (ReduceOp.LOG_SUM_EXP, _log_sum_exp),
}


def _reduce_grad(g, node, dys):
    """dx = dy spread back over the reduced axes, times d(reduction)/dx."""
    x, y = node.inputs[0], node.outputs[0]
    axes, keepdims = tuple(node.attrs["axes"]), bool(node.attrs.get("keepdims", True))
    spread = g.broadcast_back(dys[0], x, axes, keepdims)
    if node.op == "ReduceSum":
        return [spread]
    count = int(np.prod([g.shape(x)[a] for a in axes], dtype=np.int64))
    if node.op == "ReduceMean":
        return [g.emit("Mul", [spread, g.scalar(1.0 / count, x)])]
    if node.op == "ReduceSumSquare":
        return [g.emit("Mul", [spread, g.emit("Mul", [x, g.scalar(2.0, x)])])]
    if node.op == "ReduceL1":
        return [g.emit("Mul", [spread, g.emit("Sign", [x])])]
    y_spread = g.broadcast_back(y, x, axes, keepdims)
    if node.op == "ReduceL2":
        return [g.emit("Mul", [spread, g.emit("Div", [x, y_spread])])]
    if node.op == "ReduceLogSumExp":
        return [g.emit("Mul", [spread, g.emit("Exp", [g.emit("Sub", [x, y_spread])])])]
    # ReduceMax / ReduceMin: the gradient is shared equally by the elements that attain it.
    hit = g.emit("Cast", [g.emit("Equal", [x, y_spread])], {"to": g.type(x).dtype})
    ties = g.broadcast_back(g.emit("ReduceSum", [hit], {"axes": axes, "keepdims": True}), x, axes, True)
    return [g.emit("Mul", [spread, g.emit("Div", [hit, ties])])]


REDUCE_GRADIENTS = ("ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2",
                    "ReduceLogSumExp", "ReduceMax", "ReduceMin")


def _reduce(name: str, code: int, compute, **int8_form) -> OpDef:
    def infer(types, attrs):
        need(name, types, 1)
        x = types[0]
        axes = tuple(attrs.get("axes", ()))
        if not axes or list(axes) != sorted(set(axes)) or not all(0 <= a < x.rank for a in axes):
            fail(name, f"axes {axes} must be non-empty, sorted, unique and in [0, {x.rank})")
        keepdims = attrs.get("keepdims", True)
        shape = tuple(1 if k in axes else d for k, d in enumerate(x.shape) if keepdims or k not in axes)
        return [TensorType(x.dtype, shape)]

    def reference(inputs, attrs):
        x = inputs[0]
        with np.errstate(all="ignore"):
            y = compute(x.astype(accumulate_dtype(x.dtype)), axis=tuple(attrs["axes"]),
                        keepdims=bool(attrs.get("keepdims", True)))
        return [np.asarray(y).astype(x.dtype)]

    def lower(attrs):
        options = ReduceOptionsT()
        options.op, options.axes = code, list(attrs["axes"])
        options.keepdims = bool(attrs.get("keepdims", True))
        return OpCode.REDUCE, OpOptions.ReduceOptions, options

    return register(OpDef(name=name, infer=infer, reference=reference, lower=lower,
                          lift=lambda o: {"axes": ints(o.axes), "keepdims": bool(o.keepdims)},
                          opcode=OpCode.REDUCE, lift_key=code,
                          flops=lambda i, o, a: count_elements(i[:1]),
                          gradient=_reduce_grad if name in REDUCE_GRADIENTS else None, **int8_form))


def _spatial_mean(graph, node) -> str | None:
    x = graph.tensors[node.inputs[0]]
    if x.rank != 4 or tuple(node.attrs.get("axes", ())) != (1, 2):
        return "int8 ReduceMean covers the H, W axes of an NHWC tensor only"
    return None


for _name, (_code, _compute) in REDUCTIONS.items():
    _reduce(_name, _code, _compute, **(dict(int8=reduce_mean_int8, int8_role="compute",
                                            int8_condition=_spatial_mean) if _name == "ReduceMean" else {}))


# ---- LRN ----

def _lrn_infer(types, attrs):
    need("LRN", types, 1)
    _float_input("LRN", types[0])
    layout_of("LRN", attrs)
    if types[0].rank < 2:
        fail("LRN", f"input needs rank >= 2, got {types[0].shape}")
    if int(attrs.get("size", 0)) < 1:
        fail("LRN", f"size {attrs.get('size')} must be a positive int")
    return [types[0]]


def _lrn_reference(inputs, attrs):
    """ONNX LRN: y = x / (bias + alpha / size * sum of x^2 over the channel window)^beta, the
    window spanning floor((size-1)/2) channels before and ceil((size-1)/2) after."""
    x = inputs[0]
    size = int(attrs["size"])
    alpha, beta, bias = attrs.get("alpha", 1e-4), attrs.get("beta", 0.75), attrs.get("bias", 1.0)
    channel_axis = 1 if layout_of("LRN", attrs) == "NCHW" else x.ndim - 1
    squares = np.moveaxis(np.square(x.astype(F64)), channel_axis, -1)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    padded = np.pad(squares, [(0, 0)] * (squares.ndim - 1) + [(before, after)])
    channels = squares.shape[-1]
    window_sum = sum(padded[..., k: k + channels] for k in range(size))
    window_sum = np.moveaxis(window_sum, -1, channel_axis)
    y = x.astype(F64) / (bias + alpha / size * window_sum) ** beta
    return [y.astype(x.dtype)]


def _lrn_lower(attrs):
    require_nhwc("LRN", attrs)
    options = LrnOptionsT()
    options.size = int(attrs["size"])
    options.alpha = float(attrs.get("alpha", 1e-4))
    options.beta = float(attrs.get("beta", 0.75))
    options.bias = float(attrs.get("bias", 1.0))
    return OpCode.LRN, OpOptions.LrnOptions, options


register(OpDef(name="LRN", infer=_lrn_infer, reference=_lrn_reference, lower=_lrn_lower,
               lift=lambda o: {"size": int(o.size), "alpha": float32_value(o.alpha),
                               "beta": float32_value(o.beta), "bias": float32_value(o.bias),
                               "layout": "NHWC"},
               opcode=OpCode.LRN, flops=lambda i, o, a: o[0].size * (int(a["size"]) + 3),
               layout_sensitive=True))

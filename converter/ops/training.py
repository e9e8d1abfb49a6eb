"""Training-only ops: the backward kernels autodiff emits (convolution/pooling/activation/norm
gradients, the fused losses, the gather scatter-add) and the ops that change state (BatchNormTrain,
OptimizerUpdate, ClipByGlobalNorm).

References compute in float64 and round once to the dtype of the tensor they produce; they also
take float64 inputs unchanged, which is how the finite-difference gradient checks run whole
graphs in float64.

Two ops update variables in place (OptimizerUpdate: the parameter and its slots;
BatchNormTrain: the running statistics). Their OpDef's ``updates`` computes the new values of
those inputs ({input index: array}), and the reference executor writes them back over the
inputs' values after the node; ``reference`` returns only the outputs. Neither mutates its
arguments.

Conv2DBackpropInput, Conv2DBackpropFilter and GatherGrad carry their output's shape as "shape"
(like Reshape): the file keeps it in the output tensor, not the options.
"""
from __future__ import annotations

import math

import numpy as np

from converter.edgefb.AxisOptions import AxisOptionsT
from converter.edgefb.BatchNormOptions import BatchNormOptionsT
from converter.edgefb.ClipOptions import ClipOptionsT
from converter.edgefb.Conv2DOptions import Conv2DOptionsT
from converter.edgefb.LayerNormOptions import LayerNormOptionsT
from converter.edgefb.LossKind import LossKind
from converter.edgefb.LossOptions import LossOptionsT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.OptimizerKind import OptimizerKind
from converter.edgefb.OptimizerOptions import OptimizerOptionsT
from converter.edgefb.Pool2DOptions import Pool2DOptionsT
from converter.edgefb.PoolType import PoolType
from converter.ir import TensorType
from converter.ops import OPS, OpDef, register
from converter.ops._common import (FLOAT_DTYPES, erf, fail, float32_value, ints, layout_of,
                                   need, output_elements, require_nhwc, unary_options)
from converter.ops.nn import (F64, TO_NCHW, TO_NHWC, _from_nchw, _sliding_size, _to_nchw,
                              _window_attrs)

LOSS_KINDS = {"softmax_cross_entropy": LossKind.SOFTMAX_CROSS_ENTROPY,
              "bce_with_logits": LossKind.BCE_WITH_LOGITS, "mse": LossKind.MSE}
OPTIMIZER_KINDS = {"sgd": OptimizerKind.SGD, "momentum": OptimizerKind.MOMENTUM,
                   "adam": OptimizerKind.ADAM, "adamw": OptimizerKind.ADAMW,
                   "adagrad": OptimizerKind.ADAGRAD}
# Slot variables each optimizer keeps per parameter, in OptimizerUpdate's input order. "step" is
# a float32 scalar; the others have the parameter's shape.
OPTIMIZER_SLOTS = {"sgd": (), "momentum": ("velocity",), "adagrad": ("accumulator",),
                   "adam": ("m", "v", "step"), "adamw": ("m", "v", "step")}
POOL_KINDS = {"max": PoolType.MAX, "average": PoolType.AVERAGE}


def _float(op: str, t: TensorType, what: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        fail(op, f"{what} has dtype {t.dtype}; expected a float dtype")


def _result(value, like) -> np.ndarray:
    """float64 math rounded once to the dtype of ``like`` (float64 stays float64)."""
    return np.array(value, dtype=np.asarray(like).dtype, order="C")


def sum_to_shape(value: np.ndarray, shape) -> np.ndarray:
    """Sums a broadcast result back to ``shape`` (the inverse of numpy broadcasting)."""
    shape = tuple(shape)
    extra = value.ndim - len(shape)
    if extra:
        value = value.sum(axis=tuple(range(extra)))
    axes = tuple(k for k, d in enumerate(shape) if d == 1 and value.shape[k] != 1)
    return value.sum(axis=axes, keepdims=True) if axes else value


# ---- Conv2DBackpropInput, Conv2DBackpropFilter ----

def _conv_geometry(op: str, attrs):
    strides, dilations, pads = _window_attrs(attrs)
    groups = int(attrs.get("groups", 1))
    if groups < 1:
        fail(op, f"groups {groups} must be positive")
    return strides, dilations, pads, groups


def _weights_nchw(w, layout):
    return w if layout == "NCHW" else np.transpose(w, TO_NCHW)


def conv2d_backprop_input_nchw(dy, w, x_shape, strides, dilations, pads, groups):
    """d(conv)/dx: every output pixel scatters dy * w back over the window it read."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    _, _, oh, ow = dy.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    padded = np.zeros((n, groups, cg, h + pt + pb, wd + pl + pr))
    dy_groups = dy.astype(F64).reshape(n, groups, o // groups, oh, ow)
    w_groups = w.astype(F64).reshape(groups, o // groups, cg, kh, kw)
    for i in range(kh):
        for j in range(kw):
            padded[..., i * dh: i * dh + sh * (oh - 1) + 1: sh,
                   j * dw: j * dw + sw * (ow - 1) + 1: sw] += np.einsum(
                "ngohw,goc->ngchw", dy_groups, w_groups[:, :, :, i, j])
    return padded.reshape(n, c, h + pt + pb, wd + pl + pr)[:, :, pt: pt + h, pl: pl + wd]


def conv2d_backprop_filter_nchw(x, dy, w_shape, strides, dilations, pads, groups):
    """d(conv)/dw [O, C/g, KH, KW]: each tap's weight sees the input patch it multiplied."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w_shape
    _, _, oh, ow = dy.shape
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    padded = np.pad(x.astype(F64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    x_groups = padded.reshape(n, groups, cg, *padded.shape[2:])
    dy_groups = dy.astype(F64).reshape(n, groups, o // groups, oh, ow)
    dw_ = np.zeros((groups, o // groups, cg, kh, kw))
    for i in range(kh):
        for j in range(kw):
            patch = x_groups[..., i * dh: i * dh + sh * (oh - 1) + 1: sh,
                             j * dw: j * dw + sw * (ow - 1) + 1: sw]
            dw_[:, :, :, i, j] = np.einsum("ngohw,ngchw->goc", dy_groups, patch)
    return dw_.reshape(o, cg, kh, kw)


def _conv_lower(opcode: int, op: str):
    def lower(attrs):
        require_nhwc(op, attrs)
        strides, dilations, pads, groups = _conv_geometry(op, attrs)
        options = Conv2DOptionsT()
        options.strides, options.dilations, options.pads = list(strides), list(dilations), list(pads)
        options.groups = groups
        return opcode, OpOptions.Conv2DOptions, options
    return lower


def _conv_lift(options):
    return {"strides": ints(options.strides, (1, 1)), "dilations": ints(options.dilations, (1, 1)),
            "pads": ints(options.pads, (0, 0, 0, 0)), "groups": int(options.groups), "layout": "NHWC"}


def _backprop_input_infer(types, attrs):
    op = "Conv2DBackpropInput"
    need(op, types, 2)
    dy, w = types
    _float(op, dy, "dy")
    layout_of(op, attrs)
    _conv_geometry(op, attrs)
    shape = tuple(attrs.get("shape", ()))
    if len(shape) != 4 or w.rank != 4 or dy.rank != 4:
        fail(op, f"dy {dy.shape}, w {w.shape} and shape {shape} must all be rank 4")
    return [TensorType(dy.dtype, shape)]


def _backprop_input_reference(inputs, attrs):
    dy, w = inputs
    layout = layout_of("Conv2DBackpropInput", attrs)
    strides, dilations, pads, groups = _conv_geometry("Conv2DBackpropInput", attrs)
    shape = tuple(attrs["shape"])
    x_shape = shape if layout == "NCHW" else tuple(shape[k] for k in TO_NCHW)
    dx = conv2d_backprop_input_nchw(_to_nchw(dy, layout), _weights_nchw(w, layout), x_shape,
                                    strides, dilations, pads, groups)
    return [_result(_from_nchw(dx, layout), dy)]


def _backprop_filter_infer(types, attrs):
    op = "Conv2DBackpropFilter"
    need(op, types, 2)
    x, dy = types
    _float(op, dy, "dy")
    layout_of(op, attrs)
    _conv_geometry(op, attrs)
    shape = tuple(attrs.get("shape", ()))
    if len(shape) != 4 or x.rank != 4 or dy.rank != 4:
        fail(op, f"x {x.shape}, dy {dy.shape} and shape {shape} must all be rank 4")
    return [TensorType(dy.dtype, shape)]


def _backprop_filter_reference(inputs, attrs):
    x, dy = inputs
    layout = layout_of("Conv2DBackpropFilter", attrs)
    strides, dilations, pads, groups = _conv_geometry("Conv2DBackpropFilter", attrs)
    shape = tuple(attrs["shape"])
    w_shape = shape if layout == "NCHW" else tuple(shape[k] for k in TO_NCHW)
    dw = conv2d_backprop_filter_nchw(_to_nchw(x, layout), _to_nchw(dy, layout), w_shape,
                                     strides, dilations, pads, groups)
    if layout == "NHWC":
        dw = np.transpose(dw, TO_NHWC)
    return [_result(dw, dy)]


def _conv_grad_flops(dy_index: int):
    """The forward convolution's multiply-adds: one per (output pixel, tap, input channel)."""
    def flops(in_types, out_types, attrs):
        w_shape = attrs.get("shape") or tuple(in_types[1].shape)
        return 2 * in_types[dy_index].size * int(np.prod(w_shape[1:]))
    return flops


register(OpDef(name="Conv2DBackpropInput", infer=_backprop_input_infer,
               reference=_backprop_input_reference,
               lower=_conv_lower(OpCode.CONV_2D_BACKPROP_INPUT, "Conv2DBackpropInput"),
               lift=_conv_lift, opcode=OpCode.CONV_2D_BACKPROP_INPUT, flops=_conv_grad_flops(0)))
register(OpDef(name="Conv2DBackpropFilter", infer=_backprop_filter_infer,
               reference=_backprop_filter_reference,
               lower=_conv_lower(OpCode.CONV_2D_BACKPROP_FILTER, "Conv2DBackpropFilter"),
               lift=_conv_lift, opcode=OpCode.CONV_2D_BACKPROP_FILTER, flops=_conv_grad_flops(1)))


# ---- Pool2DGrad ----

def _pool_geometry(attrs):
    kernel = tuple(attrs["kernel"])
    strides, dilations, pads = _window_attrs(attrs)
    return kernel, strides, dilations, pads, bool(attrs.get("ceil_mode", False))


def _pool_kind(attrs) -> str:
    kind = attrs.get("pool")
    if kind not in POOL_KINDS:
        fail("Pool2DGrad", f"pool {kind!r} is not one of {', '.join(POOL_KINDS)}")
    return kind


def _pool_grad_infer(types, attrs):
    op = "Pool2DGrad"
    need(op, types, 2)
    x, dy = types
    _float(op, dy, "dy")
    _pool_kind(attrs)
    expected = OPS["MaxPool2D"].infer([x], {k: v for k, v in attrs.items() if k != "pool"})[0]
    if tuple(expected.shape) != tuple(dy.shape):
        fail(op, f"dy shape {dy.shape} is not the pooled shape {expected.shape} of x {x.shape}")
    return [TensorType(dy.dtype, x.shape)]


def _pool_grad_reference(inputs, attrs):
    """MAX: each window's dy goes to its first maximal element in row-major window order (a
    strictly greater later element takes over; padding never wins). AVERAGE: dy / count to every
    counted cell, the count as the forward pool takes it."""
    layout = layout_of("Pool2DGrad", attrs)
    is_max = _pool_kind(attrs) == "max"
    x = _to_nchw(inputs[0], layout).astype(F64)
    dy = _to_nchw(inputs[1], layout).astype(F64)
    kernel, strides, dilations, pads, ceil_mode = _pool_geometry(attrs)
    n, c, h, w = x.shape
    oh = _sliding_size("Pool2DGrad", h, kernel[0], strides[0], dilations[0], pads[0], pads[2], ceil_mode)
    ow = _sliding_size("Pool2DGrad", w, kernel[1], strides[1], dilations[1], pads[1], pads[3], ceil_mode)
    row_starts = np.arange(oh) * strides[0] - pads[0]
    col_starts = np.arange(ow) * strides[1] - pads[1]
    dx = np.zeros_like(x)
    n_index = np.arange(n)[:, None, None, None]
    c_index = np.arange(c)[None, :, None, None]
    taps = [(i, j) for i in range(kernel[0]) for j in range(kernel[1])]
    if is_max:
        best = np.full((n, c, oh, ow), -np.inf)
        best_row = np.zeros((n, c, oh, ow), dtype=np.int64)
        best_col = np.zeros((n, c, oh, ow), dtype=np.int64)
        found = np.zeros((n, c, oh, ow), dtype=bool)
    else:
        count = np.zeros((oh, ow))
        for i, j in taps:
            rows = row_starts + i * dilations[0]
            cols = col_starts + j * dilations[1]
            if attrs.get("count_include_pad", False):
                count += (rows < h + pads[2])[:, None] & (cols < w + pads[3])[None, :]
            else:
                count += ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
        share = dy / count
    for i, j in taps:
        rows = row_starts + i * dilations[0]
        cols = col_starts + j * dilations[1]
        inside = ((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]
        r = np.broadcast_to(np.clip(rows, 0, h - 1)[:, None], (oh, ow))
        q = np.broadcast_to(np.clip(cols, 0, w - 1)[None, :], (oh, ow))
        if is_max:
            values = x[:, :, r, q]
            take = inside & ((values > best) | ~found)
            best = np.where(take, values, best)
            best_row = np.where(take, r, best_row)
            best_col = np.where(take, q, best_col)
            found |= inside
        else:
            contribution = np.where(inside, share, 0.0)
            np.add.at(dx, (n_index, c_index, r[None, None], q[None, None]), contribution)
    if is_max:
        np.add.at(dx, (n_index, c_index, best_row, best_col), np.where(found, dy, 0.0))
    return [_result(_from_nchw(dx, layout), inputs[1])]


def _pool_grad_lower(attrs):
    require_nhwc("Pool2DGrad", attrs)
    kernel, strides, dilations, pads, ceil_mode = _pool_geometry(attrs)
    options = Pool2DOptionsT()
    options.type = POOL_KINDS[_pool_kind(attrs)]
    options.kernel, options.strides = list(kernel), list(strides)
    options.dilations, options.pads = list(dilations), list(pads)
    options.ceilMode = ceil_mode
    options.countIncludePad = bool(attrs.get("count_include_pad", False)) and attrs["pool"] == "average"
    return OpCode.POOL_2D_GRAD, OpOptions.Pool2DOptions, options


def _pool_grad_lift(options):
    kind = {v: k for k, v in POOL_KINDS.items()}[int(options.type)]
    attrs = {"pool": kind, "kernel": ints(options.kernel), "strides": ints(options.strides, (1, 1)),
             "dilations": ints(options.dilations, (1, 1)), "pads": ints(options.pads, (0, 0, 0, 0)),
             "ceil_mode": bool(options.ceilMode), "layout": "NHWC"}
    if kind == "average":
        attrs["count_include_pad"] = bool(options.countIncludePad)
    return attrs


register(OpDef(name="Pool2DGrad", infer=_pool_grad_infer, reference=_pool_grad_reference,
               lower=_pool_grad_lower, lift=_pool_grad_lift, opcode=OpCode.POOL_2D_GRAD,
               flops=lambda i, o, a: i[1].size * a["kernel"][0] * a["kernel"][1]))


# ---- ActivationGrad ----

def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gelu_tanh_derivative(x, alpha, beta):
    c = math.sqrt(2.0 / math.pi)
    t = np.tanh(c * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * x * x)


# f'(x) in float64 for every differentiable unary op; alpha/beta are the op's UnaryOptions
# parameters (Clip: min, max). The values at kinks are the contract the C kernels share.
DERIVATIVES = {
    "Relu": lambda x, a, b: (x > 0).astype(F64),
    "Relu6": lambda x, a, b: ((x > 0) & (x < 6)).astype(F64),
    "Clip": lambda x, a, b: ((x > a) & (x < b)).astype(F64),
    "LeakyRelu": lambda x, a, b: np.where(x > 0, 1.0, a),
    "Elu": lambda x, a, b: np.where(x < 0, a * np.exp(np.minimum(x, 0.0)), 1.0),
    "Sigmoid": lambda x, a, b: _sigmoid(x) * (1.0 - _sigmoid(x)),
    "Tanh": lambda x, a, b: 1.0 - np.tanh(x) ** 2,
    "HardSigmoid": lambda x, a, b: np.where((a * x + b > 0) & (a * x + b < 1), a, 0.0),
    "HardSwish": lambda x, a, b: np.where(x >= 3.0, 1.0, np.where(x > -3.0, x / 3.0 + 0.5, 0.0)),
    "Gelu": lambda x, a, b: 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi),
    "GeluTanh": _gelu_tanh_derivative,
    "Silu": lambda x, a, b: _sigmoid(x) * (1.0 + x * (1.0 - _sigmoid(x))),
    "Erf": lambda x, a, b: 2.0 / math.sqrt(math.pi) * np.exp(-x * x),
    "Exp": lambda x, a, b: np.exp(x),
    "Log": lambda x, a, b: 1.0 / x,
    "Sqrt": lambda x, a, b: 0.5 / np.sqrt(x),
    "Rsqrt": lambda x, a, b: -0.5 / (x * np.sqrt(x)),
    "Reciprocal": lambda x, a, b: -1.0 / (x * x),
    "Neg": lambda x, a, b: -np.ones_like(x),
    "Abs": lambda x, a, b: np.sign(x),
    "Softplus": lambda x, a, b: _sigmoid(x),
    "Sin": lambda x, a, b: np.cos(x),
    "Cos": lambda x, a, b: -np.sin(x),
    "Asin": lambda x, a, b: 1.0 / np.sqrt(1.0 - x * x),
    "Acos": lambda x, a, b: -1.0 / np.sqrt(1.0 - x * x),
    "Atan": lambda x, a, b: 1.0 / (1.0 + x * x),
    "Square": lambda x, a, b: 2.0 * x,
}
# Unary ops whose derivative is zero almost everywhere or undefined: autodiff refuses them.
NOT_DIFFERENTIABLE = ("Floor", "Ceil", "Round", "Sign", "Not", "IsNaN", "IsInf")


def activation_params(name: str, attrs) -> tuple[float, float]:
    """(alpha, beta) as the unary op ``name`` with ``attrs`` writes them in UnaryOptions."""
    _, _, options = OPS[name].lower(attrs)
    return float(options.alpha), float(options.beta)


def _activation_name(attrs) -> str:
    # "function", not "activation": that attribute name means a fused activation to the writer.
    name = attrs.get("function")
    if name not in DERIVATIVES:
        fail("ActivationGrad", f"function {name!r} has no derivative; differentiable: "
                               f"{', '.join(DERIVATIVES)}")
    return name


def _activation_grad_infer(types, attrs):
    op = "ActivationGrad"
    need(op, types, 2)
    x, dy = types
    _float(op, dy, "dy")
    _activation_name(attrs)
    if tuple(x.shape) != tuple(dy.shape):
        fail(op, f"x {x.shape} and dy {dy.shape} must have the same shape")
    return [dy]


def _activation_grad_reference(inputs, attrs):
    x, dy = inputs
    derivative = DERIVATIVES[_activation_name(attrs)]
    with np.errstate(all="ignore"):
        slope = derivative(x.astype(F64), float(attrs.get("alpha", 0.0)), float(attrs.get("beta", 0.0)))
    return [_result(dy.astype(F64) * slope, dy)]


def _activation_grad_lower(attrs):
    name = _activation_name(attrs)
    options = unary_options(OPS[name].lift_key, attrs.get("alpha", 0.0), attrs.get("beta", 0.0))
    return OpCode.ACTIVATION_GRAD, OpOptions.UnaryOptions, options


def _activation_grad_lift(options):
    for entry in OPS.values():
        if entry.opcode == OpCode.UNARY and entry.lift_key == int(options.op):
            return {"function": entry.name, "alpha": float32_value(options.alpha),
                    "beta": float32_value(options.beta)}
    raise ValueError(f"ActivationGrad: unknown unary op code {options.op}")


register(OpDef(name="ActivationGrad", infer=_activation_grad_infer,
               reference=_activation_grad_reference, lower=_activation_grad_lower,
               lift=_activation_grad_lift, opcode=OpCode.ACTIVATION_GRAD, flops=output_elements))


# ---- Loss ----

def _loss_kind(attrs) -> str:
    kind = attrs.get("kind")
    if kind not in LOSS_KINDS:
        fail("Loss", f"kind {kind!r} is not one of {', '.join(LOSS_KINDS)}")
    return kind


def _loss_infer(types, attrs):
    op = "Loss"
    need(op, types, 2)
    prediction, target = types
    _float(op, prediction, "prediction")
    kind = _loss_kind(attrs)
    if kind == "softmax_cross_entropy":
        if prediction.rank != 2:
            fail(op, f"softmax_cross_entropy takes logits [N, C], got {prediction.shape}")
        class_ids = target.dtype in ("int32", "int64") and tuple(target.shape) == prediction.shape[:1]
        probabilities = target.dtype == prediction.dtype and tuple(target.shape) == tuple(prediction.shape)
        if not (class_ids or probabilities):
            fail(op, f"target {target.dtype}{list(target.shape)} must be int32 class ids "
                     f"[{prediction.shape[0]}] or {prediction.dtype} probabilities {list(prediction.shape)}")
    elif target.dtype != prediction.dtype or tuple(target.shape) != tuple(prediction.shape):
        fail(op, f"{kind} target {target.dtype}{list(target.shape)} must match the prediction "
                 f"{prediction.dtype}{list(prediction.shape)}")
    return [TensorType(prediction.dtype, ()), prediction]


def _log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _loss_reference(inputs, attrs):
    prediction, target = inputs
    kind = _loss_kind(attrs)
    z = prediction.astype(F64)
    if kind == "softmax_cross_entropy":
        n, classes = z.shape
        if target.dtype.kind in "iu":
            ids = target.astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= classes):
                bad = ids.min() if ids.min() < 0 else ids.max()
                fail("Loss", f"class id {bad} is out of range for {classes} classes")
            t = np.zeros_like(z)
            t[np.arange(n), ids] = 1.0
        else:
            t = target.astype(F64)
        log_p = _log_softmax(z)
        loss = -(t * log_p).sum() / n
        d = (np.exp(log_p) - t) / n
    elif kind == "bce_with_logits":
        t = target.astype(F64)
        loss = np.mean(np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z))))
        d = (_sigmoid(z) - t) / z.size
    else:
        t = target.astype(F64)
        loss = np.mean(np.square(z - t))
        d = 2.0 * (z - t) / z.size
    return [_result(np.asarray(loss), prediction), _result(d, prediction)]


def _loss_lower(attrs):
    options = LossOptionsT()
    options.kind = LOSS_KINDS[_loss_kind(attrs)]
    return OpCode.LOSS, OpOptions.LossOptions, options


register(OpDef(name="Loss", infer=_loss_infer, reference=_loss_reference, lower=_loss_lower,
               lift=lambda o: {"kind": {v: k for k, v in LOSS_KINDS.items()}[int(o.kind)]},
               opcode=OpCode.LOSS, flops=lambda i, o, a: 6 * i[0].size))


# ---- LayerNormGrad ----

def _layer_norm_grad_infer(types, attrs):
    op = "LayerNormGrad"
    need(op, types, 3)
    x, scale, dy = types
    _float(op, dy, "dy")
    axis = int(attrs.get("axis", -1))
    if not 0 <= axis < x.rank:
        fail(op, f"axis {axis} must be in [0, {x.rank})")
    if tuple(x.shape) != tuple(dy.shape):
        fail(op, f"x {x.shape} and dy {dy.shape} must have the same shape")
    return [dy, TensorType(dy.dtype, scale.shape), TensorType(dy.dtype, scale.shape)]


def _layer_norm_grad_reference(inputs, attrs):
    x, scale, dy = inputs
    axes = tuple(range(int(attrs["axis"]), x.ndim))
    x64, dy64 = x.astype(F64), dy.astype(F64)
    mean = x64.mean(axis=axes, keepdims=True)
    invstd = 1.0 / np.sqrt(np.square(x64 - mean).mean(axis=axes, keepdims=True)
                           + attrs.get("epsilon", 1e-5))
    x_hat = (x64 - mean) * invstd
    dx_hat = dy64 * scale.astype(F64)
    dx = invstd * (dx_hat - dx_hat.mean(axis=axes, keepdims=True)
                   - x_hat * (dx_hat * x_hat).mean(axis=axes, keepdims=True))
    dscale = sum_to_shape(dy64 * x_hat, scale.shape)
    dbias = sum_to_shape(dy64, scale.shape)
    return [_result(dx, dy), _result(dscale, dy), _result(dbias, dy)]


def _layer_norm_grad_lower(attrs):
    options = LayerNormOptionsT()
    options.axis, options.epsilon = int(attrs["axis"]), float(attrs.get("epsilon", 1e-5))
    return OpCode.LAYER_NORM_GRAD, OpOptions.LayerNormOptions, options


register(OpDef(name="LayerNormGrad", infer=_layer_norm_grad_infer,
               reference=_layer_norm_grad_reference, lower=_layer_norm_grad_lower,
               lift=lambda o: {"axis": int(o.axis), "epsilon": float32_value(o.epsilon)},
               opcode=OpCode.LAYER_NORM_GRAD, flops=lambda i, o, a: 10 * i[0].size))


# ---- BatchNormTrain, BatchNormGrad ----

def _channel_axis(op: str, attrs, rank: int) -> int:
    return 1 if layout_of(op, attrs) == "NCHW" and rank > 2 else rank - 1


def _per_channel(op, attrs, x, v):
    shape = [1] * x.ndim
    shape[_channel_axis(op, attrs, x.ndim)] = -1
    return np.asarray(v).astype(F64).reshape(shape)


def _batch_axes(op, attrs, rank) -> tuple[int, ...]:
    channel = _channel_axis(op, attrs, rank)
    return tuple(k for k in range(rank) if k != channel)


def _bn_channels(op: str, types, attrs, names) -> None:
    x = types[0]
    _float(op, x, "x")
    if x.rank < 2:
        fail(op, f"x needs rank >= 2, got {x.shape}")
    channels = x.shape[_channel_axis(op, attrs, x.rank)]
    for what, t in zip(names, types[1:]):
        if tuple(t.shape) != (channels,):
            fail(op, f"{what} shape {t.shape} must be ({channels},)")


def _bn_train_infer(types, attrs):
    op = "BatchNormTrain"
    need(op, types, 5)
    _bn_channels(op, types, attrs, ("scale", "bias", "running_mean", "running_var"))
    channel = TensorType(types[0].dtype, types[1].shape)
    return [types[0], channel, channel]


def _bn_train_reference(inputs, attrs):
    """([y, batch_mean, batch_invstd], {3: new running_mean, 4: new running_var})."""
    x, scale, bias, running_mean, running_var = inputs
    op = "BatchNormTrain"
    axes = _batch_axes(op, attrs, x.ndim)
    x64 = x.astype(F64)
    count = x.size // x.shape[_channel_axis(op, attrs, x.ndim)]
    mean = x64.mean(axis=axes)
    variance = np.square(x64 - _per_channel(op, attrs, x, mean)).mean(axis=axes)
    invstd = 1.0 / np.sqrt(variance + attrs.get("epsilon", 1e-5))
    y = ((x64 - _per_channel(op, attrs, x, mean)) * _per_channel(op, attrs, x, invstd * scale.astype(F64))
         + _per_channel(op, attrs, x, bias))
    momentum = float(attrs.get("momentum", 0.9))
    unbiased = variance * count / max(count - 1, 1)
    new_mean = momentum * running_mean.astype(F64) + (1.0 - momentum) * mean
    new_var = momentum * running_var.astype(F64) + (1.0 - momentum) * unbiased
    return [_result(y, x), _result(mean, x), _result(invstd, x)], {
        3: _result(new_mean, running_mean), 4: _result(new_var, running_var)}


def _bn_grad_infer(types, attrs):
    op = "BatchNormGrad"
    need(op, types, 5)
    _bn_channels(op, types[:4], attrs, ("scale", "batch_mean", "batch_invstd"))
    if tuple(types[4].shape) != tuple(types[0].shape):
        fail(op, f"dy {types[4].shape} and x {types[0].shape} must have the same shape")
    channel = TensorType(types[4].dtype, types[1].shape)
    return [types[4], channel, channel]


def _bn_grad_reference(inputs, attrs):
    x, scale, mean, invstd, dy = inputs
    op = "BatchNormGrad"
    axes = _batch_axes(op, attrs, x.ndim)
    count = x.size // x.shape[_channel_axis(op, attrs, x.ndim)]
    dy64 = dy.astype(F64)
    x_hat = (x.astype(F64) - _per_channel(op, attrs, x, mean)) * _per_channel(op, attrs, x, invstd)
    dbias = dy64.sum(axis=axes)
    dscale = (dy64 * x_hat).sum(axis=axes)
    dx = (_per_channel(op, attrs, x, scale.astype(F64) * invstd.astype(F64)) / count
          * (count * dy64 - _per_channel(op, attrs, x, dbias) - x_hat * _per_channel(op, attrs, x, dscale)))
    return [_result(dx, dy), _result(dscale, dy), _result(dbias, dy)]


def _bn_lower(opcode: int, op: str):
    def lower(attrs):
        require_nhwc(op, attrs)
        options = BatchNormOptionsT()
        options.epsilon = float(attrs.get("epsilon", 1e-5))
        options.momentum = float(attrs.get("momentum", 0.9))
        return opcode, OpOptions.BatchNormOptions, options
    return lower


def _bn_lift(options):
    return {"epsilon": float32_value(options.epsilon), "momentum": float32_value(options.momentum),
            "layout": "NHWC"}


def _bn_train_grad(g, node, dys):
    """Through the batch statistics (BatchNormGrad); the batch mean/invstd outputs are
    statistics for the backward pass, not differentiated themselves."""
    if dys[0] is None:
        return [None] * 5
    x, scale = node.inputs[0], node.inputs[1]
    attrs = {k: node.attrs[k] for k in ("epsilon", "momentum", "layout") if k in node.attrs}
    dx, dscale, dbias = g.emit("BatchNormGrad", [x, scale, node.outputs[1], node.outputs[2], dys[0]], attrs)
    return [dx, dscale, dbias, None, None]


register(OpDef(name="BatchNormTrain", infer=_bn_train_infer,
               reference=lambda inputs, attrs: _bn_train_reference(inputs, attrs)[0],
               lower=_bn_lower(OpCode.BATCH_NORM_TRAIN, "BatchNormTrain"), lift=_bn_lift,
               opcode=OpCode.BATCH_NORM_TRAIN, flops=lambda i, o, a: 6 * i[0].size,
               updates=lambda inputs, attrs: _bn_train_reference(inputs, attrs)[1],
               gradient=_bn_train_grad))
register(OpDef(name="BatchNormGrad", infer=_bn_grad_infer, reference=_bn_grad_reference,
               lower=_bn_lower(OpCode.BATCH_NORM_GRAD, "BatchNormGrad"), lift=_bn_lift,
               opcode=OpCode.BATCH_NORM_GRAD, flops=lambda i, o, a: 8 * i[0].size))


# ---- GatherGrad ----

def _gather_grad_infer(types, attrs):
    op = "GatherGrad"
    need(op, types, 2)
    dy, indices = types
    _float(op, dy, "dy")
    if indices.dtype not in ("int32", "int64"):
        fail(op, f"indices have dtype {indices.dtype}; expected int32 or int64")
    shape = tuple(attrs.get("shape", ()))
    axis = int(attrs.get("axis", -1))
    if not 0 <= axis < len(shape):
        fail(op, f"axis {axis} must be in [0, {len(shape)}) for the gathered tensor {shape}")
    expected = shape[:axis] + tuple(indices.shape) + shape[axis + 1:]
    if tuple(dy.shape) != expected:
        fail(op, f"dy shape {dy.shape} is not the gathered shape {expected}")
    return [TensorType(dy.dtype, shape)]


def _gather_grad_reference(inputs, attrs):
    dy, indices = inputs
    shape, axis = tuple(attrs["shape"]), int(attrs["axis"])
    dim = shape[axis]
    ids = np.asarray(indices).astype(np.int64).ravel()
    if ids.size and (ids.min() < -dim or ids.max() >= dim):
        fail("GatherGrad", f"index {ids.min() if ids.min() < -dim else ids.max()} is out of range "
                           f"for a dim of {dim}")
    ids = np.where(ids < 0, ids + dim, ids)
    dx = np.zeros(shape)
    rows = dy.astype(F64).reshape(shape[:axis] + (ids.size,) + shape[axis + 1:])
    np.add.at(np.moveaxis(dx, axis, 0), ids, np.moveaxis(rows, axis, 0))
    return [_result(dx, dy)]


def _gather_grad_lower(attrs):
    options = AxisOptionsT()
    options.axis = int(attrs["axis"])
    return OpCode.GATHER_GRAD, OpOptions.AxisOptions, options


register(OpDef(name="GatherGrad", infer=_gather_grad_infer, reference=_gather_grad_reference,
               lower=_gather_grad_lower, lift=lambda o: {"axis": int(o.axis)},
               opcode=OpCode.GATHER_GRAD, flops=lambda i, o, a: i[0].size))


# ---- OptimizerUpdate ----

def _optimizer_kind(attrs) -> str:
    kind = attrs.get("kind")
    if kind not in OPTIMIZER_KINDS:
        fail("OptimizerUpdate", f"kind {kind!r} is not one of {', '.join(OPTIMIZER_KINDS)}")
    return kind


def optimizer_layout(attrs) -> tuple[int, int]:
    """(index of learning_rate, index of the first slot) in OptimizerUpdate's inputs."""
    lr = 3 if attrs.get("sparse", False) else 2
    return lr, lr + 1


def _optimizer_infer(types, attrs):
    op = "OptimizerUpdate"
    kind = _optimizer_kind(attrs)
    sparse = bool(attrs.get("sparse", False))
    lr_index, first_slot = optimizer_layout(attrs)
    slots = OPTIMIZER_SLOTS[kind]
    need(op, types, first_slot + len(slots))
    param = types[0]
    _float(op, param, "param")
    if sparse:
        rows, indices = types[1], types[2]
        if indices.dtype != "int32" or indices.rank != 1:
            fail(op, f"sparse grad_indices must be int32 [n], got {indices.dtype}{list(indices.shape)}")
        if tuple(rows.shape) != (indices.shape[0],) + tuple(param.shape[1:]):
            fail(op, f"sparse grad_rows {rows.shape} must be [{indices.shape[0]}, "
                     f"{', '.join(map(str, param.shape[1:]))}] for param {param.shape}")
    elif tuple(types[1].shape) != tuple(param.shape):
        fail(op, f"grad shape {types[1].shape} differs from param {param.shape}")
    if tuple(types[lr_index].shape) != ():
        fail(op, f"learning_rate must be a scalar, got {types[lr_index].shape}")
    for name, t in zip(slots, types[first_slot:]):
        expected = () if name == "step" else tuple(param.shape)
        if tuple(t.shape) != expected:
            fail(op, f"slot {name} has shape {t.shape}; expected {expected}")
    return []


def _optimizer_step(kind, attrs, p, g, lr, slots):
    """One update of rows ``p`` (float64) with gradient ``g``; returns (new p, new slots)."""
    decay = float(attrs.get("weight_decay", 0.0))
    eps = float(attrs.get("epsilon", 1e-8))
    if kind != "adamw" and decay:
        g = g + decay * p
    if kind == "sgd":
        return p - lr * g, []
    if kind == "momentum":
        momentum = float(attrs.get("momentum", 0.0))
        v = momentum * slots[0] + g
        step = g + momentum * v if attrs.get("nesterov", False) else v
        return p - lr * step, [v]
    if kind == "adagrad":
        a = slots[0] + g * g
        return p - lr * g / (np.sqrt(a) + eps), [a]
    b1, b2 = float(attrs.get("beta1", 0.9)), float(attrs.get("beta2", 0.999))
    m, v, t = slots
    t = t + 1.0
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    m_hat, v_hat = m / (1.0 - b1 ** t), v / (1.0 - b2 ** t)
    new_p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    if kind == "adamw":
        new_p = new_p - lr * decay * p
    return new_p, [m, v, t]


def _optimizer_updates(inputs, attrs):
    """{0: new param, slot index: new slot value, ...}."""
    kind = _optimizer_kind(attrs)
    lr_index, first_slot = optimizer_layout(attrs)
    param = inputs[0]
    lr = float(np.asarray(inputs[lr_index]).astype(F64))
    slots = [np.asarray(s).astype(F64) for s in inputs[first_slot:]]
    shaped = [i for i, name in enumerate(OPTIMIZER_SLOTS[kind]) if name != "step"]
    p = param.astype(F64)
    if not attrs.get("sparse", False):
        new_p, new_slots = _optimizer_step(kind, attrs, p, inputs[1].astype(F64), lr, slots)
    else:
        ids = np.asarray(inputs[2]).astype(np.int64)
        dim = param.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= dim):
            fail("OptimizerUpdate", f"row index {ids.min() if ids.min() < 0 else ids.max()} is out "
                                    f"of range for {dim} rows")
        # Duplicate rows are summed first, so each listed row is updated once.
        unique, where = np.unique(ids, return_inverse=True)
        g = np.zeros((unique.size,) + param.shape[1:])
        np.add.at(g, where, inputs[1].astype(F64))
        row_slots = [s[unique] if k in shaped else s for k, s in enumerate(slots)]
        rows_p, rows_slots = _optimizer_step(kind, attrs, p[unique], g, lr, row_slots)
        new_p = p.copy()
        new_p[unique] = rows_p
        new_slots = []
        for k, (old, new) in enumerate(zip(slots, rows_slots)):
            if k in shaped:
                full = old.copy()
                full[unique] = new
                new_slots.append(full)
            else:
                new_slots.append(new)
    updated = {0: _result(new_p, param)}
    for k, (new, old) in enumerate(zip(new_slots, inputs[first_slot:])):
        updated[first_slot + k] = _result(new, old)
    return updated


def _optimizer_lower(attrs):
    options = OptimizerOptionsT()
    options.kind = OPTIMIZER_KINDS[_optimizer_kind(attrs)]
    options.momentum = float(attrs.get("momentum", 0.0))
    options.nesterov = bool(attrs.get("nesterov", False))
    options.beta1 = float(attrs.get("beta1", 0.9))
    options.beta2 = float(attrs.get("beta2", 0.999))
    options.epsilon = float(attrs.get("epsilon", 1e-8))
    options.weightDecay = float(attrs.get("weight_decay", 0.0))
    options.sparse = bool(attrs.get("sparse", False))
    return OpCode.OPTIMIZER_UPDATE, OpOptions.OptimizerOptions, options


def _optimizer_lift(options):
    return {"kind": {v: k for k, v in OPTIMIZER_KINDS.items()}[int(options.kind)],
            "momentum": float32_value(options.momentum), "nesterov": bool(options.nesterov),
            "beta1": float32_value(options.beta1), "beta2": float32_value(options.beta2),
            "epsilon": float32_value(options.epsilon),
            "weight_decay": float32_value(options.weightDecay), "sparse": bool(options.sparse)}


register(OpDef(name="OptimizerUpdate", infer=_optimizer_infer, reference=lambda inputs, attrs: [],
               lower=_optimizer_lower, lift=_optimizer_lift, opcode=OpCode.OPTIMIZER_UPDATE,
               flops=lambda i, o, a: 4 * i[0].size, updates=_optimizer_updates))


# ---- ClipByGlobalNorm ----

def _clip_infer(types, attrs):
    op = "ClipByGlobalNorm"
    if not types or any(t is None for t in types):
        fail(op, "needs at least one gradient and none left out")
    for t in types:
        _float(op, t, "gradient")
    if not float(attrs.get("max_norm", 0.0)) > 0:
        fail(op, f"max_norm {attrs.get('max_norm')} must be positive")
    return list(types)


def _clip_reference(inputs, attrs):
    norm = math.sqrt(sum(float(np.sum(np.square(g.astype(F64)))) for g in inputs))
    max_norm = float(attrs["max_norm"])
    factor = max_norm / norm if norm > max_norm else 1.0
    return [_result(g.astype(F64) * factor, g) for g in inputs]


def _clip_lower(attrs):
    options = ClipOptionsT()
    options.maxNorm = float(attrs["max_norm"])
    return OpCode.CLIP_BY_GLOBAL_NORM, OpOptions.ClipOptions, options


register(OpDef(name="ClipByGlobalNorm", infer=_clip_infer, reference=_clip_reference,
               lower=_clip_lower, lift=lambda o: {"max_norm": float32_value(o.maxNorm)},
               opcode=OpCode.CLIP_BY_GLOBAL_NORM, flops=lambda i, o, a: 3 * sum(t.size for t in i)))

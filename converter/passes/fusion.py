"""Fusions: bias, GELU, SiLU, LayerNorm, RMSNorm and HardSwish patterns (rule tables), then activations."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from converter.ir import Graph, Node
from converter.ops import OPS
from converter.ops._common import conv_residual
from converter.passes._edit import GraphEdit, activation_of
from converter.passes.patterns import (
    AnyOf, Const, Match, Op, Product, Rule, Var, apply_rules, output_type_kept)

# activation op -> its (alpha, beta) in the fused form, per the schema's UnaryOp conventions.
FUSABLE_ACTIVATIONS: dict[str, Callable[[dict], tuple[float, float]]] = {
    "Relu": lambda a: (0.0, 0.0),
    "Relu6": lambda a: (0.0, 0.0),
    "Clip": lambda a: (float(a.get("min", float("-inf"))), float(a.get("max", float("inf")))),
    "LeakyRelu": lambda a: (float(a.get("alpha", 0.01)), 0.0),
    "Elu": lambda a: (float(a.get("alpha", 1.0)), 0.0),
    "HardSigmoid": lambda a: (float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))),
    "Sigmoid": lambda a: (0.0, 0.0),
    "Tanh": lambda a: (0.0, 0.0),
    "HardSwish": lambda a: (0.0, 0.0),
    "Gelu": lambda a: (0.0, 0.0),
    "GeluTanh": lambda a: (0.0, 0.0),
    "Silu": lambda a: (0.0, 0.0),
}

BIASED_OPS = ("FullyConnected", "Conv2D", "ConvTranspose2D")
CHANNELS_LAST_OPS = ("Conv2D", "ConvTranspose2D")
SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_TANH_CUBIC = 0.044715


# ---- rewrites ----

def _matmul_to_fully_connected(edit: GraphEdit, m: Match, root: str) -> list[Node] | None:
    node, a, b = m.nodes["matmul"], m.tensors["a"], m.tensors["b"]
    weights = edit.constants[b]
    a_type = edit.type_of(a)
    if (node.attrs.get("transpose_a") or weights.ndim != 2 or a_type.rank < 2
            or a_type.dtype != "float32" or weights.dtype != np.float32):
        return None
    w = weights if node.attrs.get("transpose_b") else weights.T
    attrs = {"activation": node.attrs["activation"]} if activation_of(node) else {}
    w_name = edit.add_constant(f"{b}_fc", np.ascontiguousarray(w), dtype="float32")
    if not output_type_kept(edit, "FullyConnected", [a, w_name, ""], attrs, root):
        return None
    return [node.with_(op="FullyConnected", inputs=(a, w_name, ""), attrs=attrs)]


def _fold_bias(edit: GraphEdit, m: Match, root: str) -> list[Node] | None:
    node, y, addend = m.nodes["op"], m.tensors["y"], m.tensors["bias"]
    if activation_of(node) or len(node.inputs) < 2:
        return None
    if node.op in CHANNELS_LAST_OPS and node.attrs.get("layout", "NCHW") != "NHWC":
        return None
    y_type = edit.type_of(y)
    value = edit.constants[addend]
    channels = y_type.shape[-1] if y_type.rank else 0
    # Only a constant that varies along the last (channel) axis alone is a bias.
    per_channel = (value.ndim <= y_type.rank and all(d == 1 for d in value.shape[:-1])
                   and (value.ndim == 0 or value.shape[-1] in (1, channels)))
    if not per_channel or y_type.dtype != "float32" or value.dtype != np.float32 or edit.type_of(root) != y_type:
        return None
    old = node.inputs[2] if len(node.inputs) > 2 else ""
    if old and not edit.is_constant(old):
        return None
    total = np.broadcast_to(value.reshape(-1) if value.ndim else value, (channels,)).astype(np.float64)
    if old:
        total = total + edit.constants[old].astype(np.float64)
    bias = edit.add_constant(f"{old or y}_bias", total, dtype="float32")
    return [node.with_(inputs=(node.inputs[0], node.inputs[1], bias), outputs=(root,))]


def _replace_with(op: str) -> Callable[[GraphEdit, Match, str], list[Node] | None]:
    """Rewrite: the matched computation becomes ``op`` applied to the pattern's ``x``."""
    def rewrite(edit: GraphEdit, m: Match, root: str) -> list[Node] | None:
        x = m.tensors["x"]
        if edit.type_of(x).dtype != "float32" or not output_type_kept(edit, op, [x], {}, root):
            return None
        return [Node(op, (x,), (root,), {}, name=edit.new_name(f"{op}:{root}"))]
    return rewrite


def _trailing_axes(node: Node, rank: int) -> int | None:
    """k when the Reduce node averages axes k..rank-1 keeping dims, else None."""
    axes = tuple(node.attrs.get("axes", ()))
    if not axes or not node.attrs.get("keepdims", True) or axes != tuple(range(axes[0], rank)):
        return None
    return axes[0]


def _norm_parameter(edit: GraphEdit, name: str, normalised: tuple) -> str | None:
    """The constant as LayerNorm's scale/bias: its leading size-1 dims past the normalised rank
    dropped; None when it varies along a dim that is not normalised."""
    value = edit.constants[name]
    shape = value.shape
    while len(shape) > len(normalised) and shape[0] == 1:
        shape = shape[1:]
    if len(shape) > len(normalised):
        return None
    if shape == value.shape:
        return name
    return edit.add_constant(f"{name}_ln", value.reshape(shape), dtype=str(value.dtype))


def _layer_norm(edit: GraphEdit, m: Match, root: str, op: str = "LayerNorm") -> list[Node] | None:
    x = m.tensors["x"]
    x_type = edit.type_of(x)
    axis = _trailing_axes(m.nodes["mean"], x_type.rank)
    if x_type.dtype != "float32" or axis is None or _trailing_axes(m.nodes.get("var", m.nodes["mean"]),
                                                                     x_type.rank) != axis:
        return None
    epsilon = float(edit.constants[m.tensors["eps"]].reshape(()))
    if not epsilon >= 0.0:
        return None
    normalised = tuple(x_type.shape[axis:])
    if "gamma" in m.tensors:
        scale = _norm_parameter(edit, m.tensors["gamma"], normalised)
    else:
        scale = edit.add_constant(f"{root}_scale", np.ones(normalised, np.float32))
    bias = _norm_parameter(edit, m.tensors["beta"], normalised) if "beta" in m.tensors else ""
    if scale is None or bias is None:
        return None
    inputs = [x, scale, bias]
    attrs = {"axis": axis, "epsilon": epsilon}
    if not output_type_kept(edit, op, inputs, attrs, root):
        return None
    return [Node(op, tuple(inputs), (root,), attrs, name=edit.new_name(f"{op}:{root}"))]


def _rms_norm(edit: GraphEdit, m: Match, root: str) -> list[Node] | None:
    return _layer_norm(edit, m, root, op="RMSNorm")


# ---- patterns ----

def _close(value, expected, rel=1e-6) -> bool:
    return abs(float(value) - expected) <= rel * abs(expected)


X = Var("x")
ONE = Const(1.0)
_HARD_SIGMOID_SIXTH = Op("HardSigmoid", (X,), where=lambda n, m: _close(n.attrs.get("alpha", 0.2), 1 / 6)
                         and _close(n.attrs.get("beta", 0.5), 0.5))
_RELU6 = Op(("Relu6", "Clip"), (Op("Add", (X, Const(3.0))),),
            where=lambda n, m: n.op == "Relu6" or (n.attrs.get("min") == 0.0 and n.attrs.get("max") == 6.0))
_ERF_TERM = Op("Add", (Op("Erf", (Product((X,), scale=1 / SQRT_2),)), ONE))
_TANH_TERM = Op("Add", (Op("Tanh", (Product((Op("Add", (X, Product((X, X, X), scale=GELU_TANH_CUBIC))),),
                                            scale=SQRT_2_OVER_PI),)), ONE))
_D = Var("d")
_NORMALISED = Op("Div", (
    Var("d", Op("Sub", (X, Op("ReduceMean", (X,), name="mean")))),
    Op("Sqrt", (Op("Add", (Op("ReduceMean", (Product((_D, _D)),), name="var"), Const(name="eps"))),))))
_MEAN_SQUARE_EPS = Op("Add", (Op("ReduceMean", (Product((X, X)),), name="mean"), Const(name="eps")))
_RMS = Op("Sqrt", (_MEAN_SQUARE_EPS,))
_INVERSE_RMS = AnyOf((Op("Div", (ONE, _RMS)), Op("Reciprocal", (_RMS,)), Op("Rsqrt", (_MEAN_SQUARE_EPS,))))
_GAMMA = Const(name="gamma", scalar=False)
_BETA = Const(name="beta", scalar=False)

# Run first, so that the bias rules see the FullyConnected.
MATMUL_RULES: tuple[Rule, ...] = (
    # BatchMatMul(a[..., K], B[K, N]) with a constant 2-D B is FullyConnected with w = B^T (w = B
    # when transpose_b): packed weights, and a bias input for the next table.
    Rule("matmul_to_fully_connected",
         Op("BatchMatMul", (Var("a"), Const(name="b", scalar=False)), name="matmul"),
         _matmul_to_fully_connected),
)

BIAS_RULES: tuple[Rule, ...] = (
    # op(x) + c, c constant along the output's last (channel) axis only ([N], [1, .., 1, N]):
    # c becomes (or is added to) the op's bias.
    Rule("bias", Op("Add", (Var("y", Op(BIASED_OPS, None, name="op")), Const(name="bias", scalar=False))),
         _fold_bias),
)

ACTIVATION_RULES: tuple[Rule, ...] = (
    # x * 0.5 * (1 + erf(x / sqrt(2))), as PyTorch exports nn.GELU(); any association or order of
    # the products, x / 1.4142135 or x * 0.70710678.
    Rule("gelu_erf", Product((X, _ERF_TERM), scale=0.5), _replace_with("Gelu")),
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), x^3 as Pow(x, 3) or x * x * x.
    Rule("gelu_tanh", Product((X, _TANH_TERM), scale=0.5), _replace_with("GeluTanh")),
    # x * HardSigmoid(x) with alpha 1/6, beta 0.5.
    Rule("hard_swish_sigmoid", Product((X, _HARD_SIGMOID_SIXTH)), _replace_with("HardSwish")),
    # x * Relu6(x + 3) / 6 (or * 1/6, in any order).
    Rule("hard_swish_relu6", Product((X, _RELU6), scale=1 / 6), _replace_with("HardSwish")),
    # x * Sigmoid(x) (SiLU / Swish, as PyTorch exports nn.SiLU()).
    Rule("silu", Product((X, Op("Sigmoid", (X,)))), _replace_with("Silu")),
    # (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta, means over the trailing
    # axes; the square as Pow(d, 2) or d * d.
    Rule("layer_norm", Op("Add", (Op("Mul", (_NORMALISED, _GAMMA)), _BETA)), _layer_norm),
    # The same without beta.
    Rule("layer_norm_no_bias", Op("Mul", (_NORMALISED, _GAMMA)), _layer_norm),
    # The same without gamma and beta (LayerNorm with a scale of ones).
    Rule("layer_norm_plain", _NORMALISED, _layer_norm),
    # x * (1 / sqrt(mean(x^2) + eps)) * gamma (T5, LLaMA), the inverse as 1 / sqrt, Reciprocal(Sqrt)
    # or Rsqrt, the square as Pow(x, 2) or x * x, the products in any order; mean over trailing axes.
    Rule("rms_norm", Product((X, _INVERSE_RMS, _GAMMA)), _rms_norm),
    # x / sqrt(mean(x^2) + eps) * gamma.
    Rule("rms_norm_div", Product((Op("Div", (X, _RMS)), _GAMMA)), _rms_norm),
    # The same two without gamma (a scale of ones).
    Rule("rms_norm_plain", Product((X, _INVERSE_RMS)), _rms_norm),
    Rule("rms_norm_div_plain", Op("Div", (X, _RMS)), _rms_norm),
)

RULE_TABLES: tuple[tuple[Rule, ...], ...] = (MATMUL_RULES, BIAS_RULES, ACTIVATION_RULES)


def fuse_patterns(graph: Graph) -> Graph:
    """Rewrites the patterns of the rule tables above, in order (BatchMatMul -> FullyConnected,
    bias, then GELU / SiLU / HardSwish / LayerNorm), each until no match is left. A rewrite replaces
    only nodes that nothing outside the match reads, and keeps the root's name and type; values
    are unchanged up to float rounding."""
    edit = GraphEdit(graph)
    for rules in RULE_TABLES:
        apply_rules(edit, rules)
    return edit.build()


def fuse_activation(graph: Graph) -> Graph:
    """An activation whose input is the only-read, not-externally-visible output of a fusable op
    without an activation becomes that op's ``activation`` attribute; the op then produces the
    activation's output name. An activation is elementwise, so it also fuses through a Reshape
    between the two (a 1-D convolution's output reshaped from [N, 1, W, C] to [N, W, C], or a 2-D
    Gemm's output restored to [batch, sequence, N]; the Reshape then produces the activation's
    output name). Values are unchanged."""
    edit = GraphEdit(graph)
    producers, consumers, boundary = edit.producers(), edit.consumers(), edit.boundary()
    replaced = {}
    removed = set()

    def only_read_by_one(name: str) -> bool:
        return len(consumers.get(name, ())) == 1 and name not in boundary

    for act in edit.nodes:
        if act.op not in FUSABLE_ACTIVATIONS or not act.inputs or act.inputs[0] not in producers:
            continue
        x = act.inputs[0]
        index, prev = producers[x]
        reshape = None
        if prev.op == "Reshape" and only_read_by_one(x) and prev.inputs[0] in producers:
            reshape, (index, prev) = (index, prev), producers[prev.inputs[0]]
            x = reshape[1].inputs[0]
        prev = replaced.get(index, prev)
        if (not OPS[prev.op].fusable or activation_of(prev) or len(prev.outputs) != 1
                or not only_read_by_one(x)):
            continue
        alpha, beta = FUSABLE_ACTIVATIONS[act.op](act.attrs)
        attrs = {**prev.attrs, "activation": (act.op, alpha, beta)}
        if reshape is None:
            replaced[index] = prev.with_(outputs=act.outputs, attrs=attrs)
        else:
            replaced[index] = prev.with_(attrs=attrs)
            replaced[reshape[0]] = reshape[1].with_(outputs=act.outputs)
        removed.add(id(act))
    edit.nodes = [replaced.get(i, n) for i, n in enumerate(edit.nodes) if id(n) not in removed]
    return edit.build()


def _channel_padding(pad: Node) -> bool:
    """Whether a Pad only appends zero channels to an NHWC tensor (a skip connection widened to the
    channels of the branch it joins)."""
    pads = tuple(pad.attrs.get("pads", ()))
    return (len(pad.inputs) == 1 and pad.attrs.get("mode", "constant") == "constant"
            and float(pad.attrs.get("value", 0.0)) == 0.0 and len(pads) == 8
            and not any(pads[:7]) and pads[7] > 0)


def fuse_residual_add(graph: Graph) -> Graph:
    """An Add of a Conv2D's output and another tensor of the same shape and type (a skip connection)
    becomes the Conv2D's fourth input, its residual: the runtime adds it to each output tile while
    the tile is in cache instead of making a separate pass over memory, with the same floats (one
    rounded addition per element either way). The Add's activation moves to the Conv2D, which
    takes the Add's place in the order and its output name.

    The Conv2D must be float32 NHWC without an activation of its own, and read by the Add alone.
    The other operand may come through a Pad that only appends zero channels (BlazeFace's skips);
    a Pad read by that Add alone goes too, and the residual has fewer channels than the output.
    Run after quantization, and only for float models: int8 and dynamic Conv2D take no residual."""
    edit = GraphEdit(graph)
    producers, consumers, boundary = edit.producers(), edit.consumers(), edit.boundary()

    def only_read_by(name: str, reader: Node) -> bool:
        return name not in boundary and [id(n) for n in consumers.get(name, ())] == [id(reader)]

    def fusable_conv(name: str, add: Node) -> Node | None:
        found = producers.get(name)
        conv = found[1] if found else None
        if (conv is None or conv.op != "Conv2D" or id(conv) in used or activation_of(conv)
                or conv_residual(conv) or conv.attrs.get("layout", "NCHW") != "NHWC"
                or edit.type_of(conv.inputs[1]).dtype != "float32" or not only_read_by(name, add)):
            return None
        return conv

    replaced: dict[int, Node] = {}
    used: set[int] = set()
    for index, add in enumerate(edit.nodes):
        if add.op != "Add" or len(add.inputs) != 2 or len(add.outputs) != 1:
            continue
        y = edit.type_of(add.outputs[0])
        a, b = add.inputs
        if (y is None or y.dtype != "float32" or a == b
                or edit.type_of(a) != y or edit.type_of(b) != y):
            continue
        # The later of two convolutions takes the other's output as its residual.
        candidates = sorted(((producers[n][0], n, other) for n, other in ((a, b), (b, a)) if n in producers),
                            reverse=True)
        for _, name, other in candidates:
            conv = fusable_conv(name, add)
            if conv is None:
                continue
            residual = other
            pad = producers.get(other, (None, None))[1]
            if (pad is not None and pad.op == "Pad" and id(pad) not in used and _channel_padding(pad)
                    and only_read_by(other, add) and edit.type_of(pad.inputs[0]).dtype == "float32"):
                residual = pad.inputs[0]
                used.add(id(pad))
            bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
            attrs = dict(conv.attrs)
            if activation_of(add):
                attrs["activation"] = add.attrs["activation"]
            replaced[index] = conv.with_(inputs=(conv.inputs[0], conv.inputs[1], bias, residual),
                                         outputs=add.outputs, attrs=attrs)
            used.add(id(conv))
            break
    edit.nodes = [replaced.get(i, n) for i, n in enumerate(edit.nodes) if id(n) not in used]
    return edit.build()

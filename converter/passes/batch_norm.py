"""BatchNorm (inference form) folded into the op before it, or lowered to Mul + Add."""
from __future__ import annotations

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph, Node
from converter.passes._edit import GraphEdit, activation_of


def _scale_and_shift(edit: GraphEdit, bn: Node) -> tuple[np.ndarray, np.ndarray] | None:
    """y = x * scale + shift per channel, or None when a parameter is not a constant."""
    _, gamma, beta, mean, var = bn.inputs
    if not all(edit.is_constant(p) for p in (gamma, beta, mean, var)):
        return None
    eps = float(bn.attrs.get("epsilon", 1e-5))
    g, b, m, v = (edit.constants[p].astype(np.float64) for p in (gamma, beta, mean, var))
    scale = g / np.sqrt(v + eps)
    return scale, b - m * scale


def _channel_axis(bn: Node, rank: int) -> int:
    return 1 if bn.attrs.get("layout", "NCHW") == "NCHW" and rank >= 2 else rank - 1


def _scale_output_channels(op: str, attrs, weights: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """The weights with output channel c multiplied by scale[c], for each weight layout."""
    if op == "Conv2D" or op == "FullyConnected":
        # OIHW, OHWI and [N, K] all keep the output channel on axis 0.
        return weights * scale.reshape((-1,) + (1,) * (weights.ndim - 1))
    if op == "ConvTranspose2D":
        if attrs.get("layout", "NCHW") == "NHWC":
            return weights * scale.reshape(-1, 1, 1, 1)
        groups = int(attrs.get("groups", 1))
        cin, cout_per_group, kh, kw = weights.shape
        grouped = weights.reshape(groups, cin // groups, cout_per_group, kh, kw)
        grouped = grouped * scale.reshape(groups, 1, cout_per_group, 1, 1)
        return grouped.reshape(weights.shape)
    return None


FOLDABLE_INTO = ("Conv2D", "ConvTranspose2D", "FullyConnected")


def fold_batch_norm(graph: Graph) -> Graph:
    """BatchNorm whose input comes from a Conv2D, ConvTranspose2D or FullyConnected (with
    constant weights, no fused activation, and the BatchNorm as the only reader of its output)
    is folded into that op's weights and bias. The BatchNorm's output name is kept (the folded
    op now produces it); the values are unchanged up to float rounding."""
    edit = GraphEdit(graph)
    changed = True
    while changed:
        changed = False
        producers, consumers, boundary = edit.producers(), edit.consumers(), edit.boundary()
        for bn in edit.nodes:
            if bn.op != "BatchNorm" or bn.inputs[0] not in producers:
                continue
            x = bn.inputs[0]
            _, prev = producers[x]
            if (prev.op not in FOLDABLE_INTO or activation_of(prev) or len(consumers.get(x, ())) != 1
                    or x in boundary or not edit.is_constant(prev.inputs[1])):
                continue
            bias = prev.inputs[2] if len(prev.inputs) > 2 else ""
            if bias and not edit.is_constant(bias):
                continue
            out_type = edit.type_of(x)
            if prev.op == "FullyConnected" and _channel_axis(bn, out_type.rank) != out_type.rank - 1:
                continue
            if prev.op != "FullyConnected" and bn.attrs.get("layout", "NCHW") != prev.attrs.get("layout", "NCHW"):
                continue
            params = _scale_and_shift(edit, bn)
            if params is None:
                continue
            scale, shift = params
            w_name = prev.inputs[1]
            weights = edit.constants[w_name]
            new_weights = _scale_output_channels(prev.op, prev.attrs, weights.astype(np.float64), scale)
            old_bias = edit.constants[bias].astype(np.float64) if bias else 0.0
            new_bias = old_bias * scale + shift
            w_new = edit.add_constant(f"{w_name}_bn", new_weights, dtype=str(weights.dtype))
            b_new = edit.add_constant(f"{bias or prev.outputs[0] + '_bias'}_bn", new_bias,
                                      dtype=str(weights.dtype))
            folded = prev.with_(inputs=(prev.inputs[0], w_new, b_new), outputs=(bn.outputs[0],))
            index = edit.nodes.index(prev)
            edit.nodes[index] = folded
            edit.nodes.remove(bn)
            changed = True
            break
    return edit.build()


def _per_channel_shape(rank: int, axis: int) -> tuple[int, ...]:
    """The broadcast shape that puts a length-C vector on ``axis`` of a rank-``rank`` tensor,
    with the leading ones left out (numpy broadcasting supplies them)."""
    return (-1,) + (1,) * (rank - 1 - axis)


def lower_batch_norm(graph: Graph) -> Graph:
    """Every BatchNorm becomes Mul(x, scale) then Add(., shift) with per-channel constants shaped
    for its layout ([C, 1, 1] for NCHW 4-D, [C] for NHWC). Output name and values are kept."""
    edit = GraphEdit(graph)
    lowered: list[Node] = []
    for bn in edit.nodes:
        if bn.op != "BatchNorm":
            lowered.append(bn)
            continue
        params = _scale_and_shift(edit, bn)
        if params is None:
            raise ConversionError(
                f"BatchNorm {bn.name or bn.outputs[0]!r}: scale, bias, mean and var must be constants")
        scale, shift = params
        x_type = edit.type_of(bn.inputs[0])
        shape = _per_channel_shape(x_type.rank, _channel_axis(bn, x_type.rank))
        dtype = x_type.dtype
        base = bn.outputs[0]
        scale_name = edit.add_constant(f"{base}_scale", scale.reshape(shape), dtype=dtype)
        shift_name = edit.add_constant(f"{base}_shift", shift.reshape(shape), dtype=dtype)
        mul = edit.make_node("Mul", [bn.inputs[0], scale_name], {}, f"{base}_scaled")
        add = edit.make_node("Add", [mul.outputs[0], shift_name], {}, base, output_names=[base])
        lowered += [mul, add]
    edit.nodes = lowered
    return edit.build()

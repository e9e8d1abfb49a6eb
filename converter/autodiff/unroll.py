"""LSTM/GRU in training form: unrolled over the (static) sequence length into primitive ops
(FullyConnected, Split, Sigmoid, Tanh, Mul, Add, Slice, Concat, Reshape), so their gradients
come from the primitives' rules. The infer signature keeps the fused op.

Semantics follow converter/ops/rnn.py (ONNX, layout 0, default activations): per direction d and
step t, LSTM gates i o f c = x_t W_d^T + h R_d^T + Wb_d + Rb_d, with peepholes and clipping;
GRU gates z r h, with linear_before_reset. Missing initial states are zeros.
"""
from __future__ import annotations

import numpy as np

from converter.ir import Node


class _Emitter:
    def __init__(self, b, node: Node):
        self.b = b
        self.base = f"train/{node.name or node.outputs[0]}"
        self.nodes: list[Node] = []

    def __call__(self, op: str, inputs, attrs=None, what: str = "t"):
        made = self.b.node(op, list(inputs), dict(attrs or {}), base=f"{self.base}/{what}")
        self.nodes.append(made)
        return made.outputs[0] if len(made.outputs) == 1 else made.outputs

    def shape(self, name):
        return tuple(self.b.tensors[name].shape)

    def take(self, tensor: str, direction: int, lo: int | None = None, hi: int | None = None) -> str:
        """tensor[direction, lo:hi] with the direction axis dropped."""
        shape = self.shape(tensor)
        lo = 0 if lo is None else lo
        hi = shape[1] if hi is None else hi
        starts = (direction, lo) + (0,) * (len(shape) - 2)
        ends = (direction + 1, hi) + tuple(shape[2:])
        sliced = self("Slice", [tensor], {"starts": starts, "ends": ends, "steps": (1,) * len(shape)}, "slice")
        return self("Reshape", [sliced], {"shape": (hi - lo,) + tuple(shape[2:])}, "param")

    def clipped(self, name: str, clip: float) -> str:
        return self("Clip", [name], {"min": -clip, "max": clip}, "clip") if clip > 0 else name


def _optional(inputs, k):
    return inputs[k] if len(inputs) > k and inputs[k] else ""


def _time_slices(e: _Emitter, x: str) -> list[str]:
    seq, batch, width = e.shape(x)
    parts = e("Split", [x], {"axis": 0, "sizes": (1,) * seq}, "x") if seq > 1 else (x,)
    parts = [parts] if isinstance(parts, str) else list(parts)
    return [e("Reshape", [p], {"shape": (batch, width)}, "x_t") for p in parts]


def _stack(e: _Emitter, tensors: list[str], axis: int, shape_each: tuple[int, ...], what: str) -> str:
    shaped = [e("Reshape", [t], {"shape": shape_each}, what) for t in tensors]
    return shaped[0] if len(shaped) == 1 else e("Concat", shaped, {"axis": axis}, what)


def _initial_state(e: _Emitter, given: str, direction: int, batch: int, hidden: int, dtype: str) -> str:
    if given:
        return e.take(given, direction)
    return e.b.constant(f"{e.base}/zeros", np.zeros((batch, hidden)), dtype)


def _directions(node: Node) -> list[bool]:
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[node.attrs.get("direction", "forward")]


def _lstm(e: _Emitter, node: Node, inputs) -> list[str]:
    x, w, r = inputs[:3]
    bias, h0, c0, peephole = (_optional(inputs, k) for k in (3, 5, 6, 7))
    hidden = int(node.attrs["hidden_size"])
    clip = float(node.attrs.get("clip", 0.0))
    seq, batch, _ = e.shape(x)
    dtype = e.b.tensors[x].dtype
    xs = _time_slices(e, x)
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(_directions(node)):
        w_d, r_d = e.take(w, d), e.take(r, d)
        b_d = ""
        if bias:
            b_d = e("Add", [e.take(bias, d, 0, 4 * hidden), e.take(bias, d, 4 * hidden, 8 * hidden)], {}, "bias")
        p_i = p_o = p_f = ""
        if peephole:
            p_i, p_o, p_f = (e.take(peephole, d, k * hidden, (k + 1) * hidden) for k in range(3))
        h = _initial_state(e, h0, d, batch, hidden, dtype)
        c = _initial_state(e, c0, d, batch, hidden, dtype)
        outputs = [""] * seq
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            gates = e("Add", [e("FullyConnected", [xs[t], w_d, b_d], {}, "gx"),
                              e("FullyConnected", [h, r_d, ""], {}, "gh")], {}, "gates")
            i, o, f, cell = e("Split", [gates], {"axis": 1, "sizes": (hidden,) * 4}, "gate")
            if peephole:
                i = e("Add", [i, e("Mul", [p_i, c], {}, "peep_i")], {}, "i")
                f = e("Add", [f, e("Mul", [p_f, c], {}, "peep_f")], {}, "f")
            i = e("Sigmoid", [e.clipped(i, clip)], {}, "i")
            f = e("Sigmoid", [e.clipped(f, clip)], {}, "f")
            cell = e("Tanh", [e.clipped(cell, clip)], {}, "cell")
            c = e("Add", [e("Mul", [f, c], {}, "fc"), e("Mul", [i, cell], {}, "ic")], {}, "c")
            if peephole:
                o = e("Add", [o, e("Mul", [p_o, c], {}, "peep_o")], {}, "o")
            o = e("Sigmoid", [e.clipped(o, clip)], {}, "o")
            h = e("Mul", [o, e("Tanh", [c], {}, "tanh_c")], {}, "h")
            outputs[t] = h
        ys.append(_stack(e, outputs, 0, (1, 1, batch, hidden), "y"))
        hs.append(h)
        cs.append(c)
    return [_stack(e, ys, 1, (seq, 1, batch, hidden), "Y") if len(ys) > 1 else ys[0],
            _stack(e, hs, 0, (1, batch, hidden), "Y_h"), _stack(e, cs, 0, (1, batch, hidden), "Y_c")]


def _gru(e: _Emitter, node: Node, inputs) -> list[str]:
    x, w, r = inputs[:3]
    bias, h0 = _optional(inputs, 3), _optional(inputs, 5)
    hidden = int(node.attrs["hidden_size"])
    clip = float(node.attrs.get("clip", 0.0))
    linear_before_reset = bool(node.attrs.get("linear_before_reset", False))
    seq, batch, _ = e.shape(x)
    dtype = e.b.tensors[x].dtype
    xs = _time_slices(e, x)
    ys, hs = [], []
    for d, reverse in enumerate(_directions(node)):
        w_d = e.take(w, d)
        r_gates, r_hidden = e.take(r, d, 0, 2 * hidden), e.take(r, d, 2 * hidden, 3 * hidden)
        wb = rb_gates = rb_hidden = ""
        if bias:
            wb = e.take(bias, d, 0, 3 * hidden)
            rb_gates, rb_hidden = e.take(bias, d, 3 * hidden, 5 * hidden), e.take(bias, d, 5 * hidden, 6 * hidden)
        h = _initial_state(e, h0, d, batch, hidden, dtype)
        outputs = [""] * seq
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            x_z, x_r, x_h = e("Split", [e("FullyConnected", [xs[t], w_d, wb], {}, "gx")],
                              {"axis": 1, "sizes": (hidden,) * 3}, "gx_part")
            h_z, h_r = e("Split", [e("FullyConnected", [h, r_gates, rb_gates], {}, "gh")],
                         {"axis": 1, "sizes": (hidden,) * 2}, "gh_part")
            z = e("Sigmoid", [e.clipped(e("Add", [x_z, h_z], {}, "z"), clip)], {}, "z")
            reset = e("Sigmoid", [e.clipped(e("Add", [x_r, h_r], {}, "r"), clip)], {}, "r")
            if linear_before_reset:
                recurrent = e("Mul", [reset, e("FullyConnected", [h, r_hidden, rb_hidden], {}, "hh")], {}, "rec")
            else:
                recurrent = e("FullyConnected", [e("Mul", [reset, h], {}, "rh"), r_hidden, rb_hidden], {}, "rec")
            candidate = e("Tanh", [e.clipped(e("Add", [x_h, recurrent], {}, "cand"), clip)], {}, "cand")
            # h = (1 - z) * candidate + z * h, written as candidate + z * (h - candidate)
            h = e("Add", [candidate, e("Mul", [z, e("Sub", [h, candidate], {}, "diff")], {}, "zd")], {}, "h")
            outputs[t] = h
        ys.append(_stack(e, outputs, 0, (1, 1, batch, hidden), "y"))
        hs.append(h)
    return [_stack(e, ys, 1, (seq, 1, batch, hidden), "Y") if len(ys) > 1 else ys[0],
            _stack(e, hs, 0, (1, batch, hidden), "Y_h")]


UNROLL = {"LSTM": _lstm, "GRU": _gru}


def unroll_recurrent(b, node: Node, inputs) -> tuple[list[Node], dict[str, str]]:
    """The primitive nodes computing ``node`` (an LSTM or GRU) on ``inputs``, and the original
    output names -> the unrolled tensors."""
    e = _Emitter(b, node)
    results = UNROLL[node.op](e, node, inputs)
    renamed = {out: made for out, made in zip(node.outputs, results) if out}
    return e.nodes, renamed

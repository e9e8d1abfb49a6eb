"""Recurrent ops with ONNX semantics (layout 0: X is [seq, batch, input]; default activations;
no sequence_lens). Computed in float64, rounded once to X's dtype."""
from __future__ import annotations

import numpy as np

from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.RnnDirection import RnnDirection
from converter.edgefb.RnnOptions import RnnOptionsT
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import FLOAT_DTYPES, fail, float32_value, need

DIRECTIONS = {"forward": RnnDirection.FORWARD, "reverse": RnnDirection.REVERSE,
              "bidirectional": RnnDirection.BIDIRECTIONAL}
F64 = np.float64


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _clipper(clip: float):
    """ONNX clips every gate's pre-activation (bias and peephole included) to [-clip, clip]."""
    return (lambda v: np.clip(v, -clip, clip)) if clip > 0 else (lambda v: v)


def _time_steps(seq_len: int, reverse: bool) -> range:
    return range(seq_len - 1, -1, -1) if reverse else range(seq_len)


def _directions(op: str, attrs) -> list[bool]:
    """One entry per direction: whether it runs backward in time."""
    direction = attrs.get("direction", "forward")
    if direction not in DIRECTIONS:
        fail(op, f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _rnn_infer(op: str, gates: int, optional_shapes: dict, outputs: int):
    """Checks X, W, R and the optional inputs' shapes; optional_shapes maps an input index to a
    function (num_directions, batch, hidden) -> expected shape."""
    def infer(types, attrs):
        need(op, types, 3, optional=max(optional_shapes) - 2)
        x, w, r = types[:3]
        if x.dtype not in FLOAT_DTYPES:
            fail(op, f"X has dtype {x.dtype}; expected a float dtype")
        hidden = int(attrs.get("hidden_size", 0))
        directions = len(_directions(op, attrs))
        if x.rank != 3:
            fail(op, f"X must be [seq, batch, input], got {x.shape}")
        seq, batch, width = x.shape
        expected = {1: (directions, gates * hidden, width), 2: (directions, gates * hidden, hidden)}
        expected.update({k: f(directions, batch, hidden) for k, f in optional_shapes.items()})
        if len(types) > 4 and types[4] is not None:
            fail(op, "sequence_lens is not supported; it must be left out")
        for k, shape in expected.items():
            if k < len(types) and types[k] is not None and tuple(types[k].shape) != shape:
                fail(op, f"input {k} has shape {types[k].shape}; expected {shape} "
                         f"(hidden_size {hidden}, {directions} direction(s))")
        state = TensorType(x.dtype, (directions, batch, hidden))
        return [TensorType(x.dtype, (seq, directions, batch, hidden))] + [state] * (outputs - 1)
    return infer


def _optional(inputs, k):
    return inputs[k] if len(inputs) > k and inputs[k] is not None else None


def _lstm_direction(x, w, r, bias, h, c, peephole, clip, reverse):
    hidden = r.shape[-1]
    bias = np.zeros(8 * hidden) if bias is None else bias
    peephole = np.zeros(3 * hidden) if peephole is None else peephole
    p_input, p_output, p_forget = np.split(peephole, 3)
    clipped = _clipper(clip)
    ys = np.zeros((x.shape[0],) + h.shape)
    for t in _time_steps(x.shape[0], reverse):
        gates = x[t] @ w.T + h @ r.T + bias[:4 * hidden] + bias[4 * hidden:]
        input_gate, output_gate, forget_gate, cell_gate = np.split(gates, 4, axis=-1)
        input_gate = _sigmoid(clipped(input_gate + p_input * c))
        forget_gate = _sigmoid(clipped(forget_gate + p_forget * c))
        c = forget_gate * c + input_gate * np.tanh(clipped(cell_gate))
        output_gate = _sigmoid(clipped(output_gate + p_output * c))
        h = output_gate * np.tanh(c)
        ys[t] = h
    return ys, h, c


def _lstm_reference(inputs, attrs):
    x, w, r = (v.astype(F64) for v in inputs[:3])
    batch, hidden = x.shape[1], int(attrs["hidden_size"])
    directions = _directions("LSTM", attrs)
    results = []
    for d, reverse in enumerate(directions):
        def per_direction(k, width):
            value = _optional(inputs, k)
            return np.zeros(width) if value is None else value[d].astype(F64)
        results.append(_lstm_direction(
            x, w[d], r[d], per_direction(3, 8 * hidden), per_direction(5, (batch, hidden)),
            per_direction(6, (batch, hidden)), per_direction(7, 3 * hidden),
            float(attrs.get("clip", 0.0)), reverse))
    dtype = inputs[0].dtype
    y = np.stack([ys for ys, _, _ in results], axis=1).astype(dtype)
    y_h = np.stack([h for _, h, _ in results]).astype(dtype)
    y_c = np.stack([c for _, _, c in results]).astype(dtype)
    return [y, y_h, y_c]


def _gru_direction(x, w, r, bias, h, clip, reverse, linear_before_reset):
    hidden = r.shape[-1]
    w_bias, r_bias = bias[:3 * hidden], bias[3 * hidden:]
    r_update_reset, r_hidden = r[:2 * hidden], r[2 * hidden:]
    clipped = _clipper(clip)
    ys = np.zeros((x.shape[0],) + h.shape)
    for t in _time_steps(x.shape[0], reverse):
        from_x = x[t] @ w.T + w_bias
        x_update, x_reset, x_hidden = np.split(from_x, 3, axis=-1)
        h_update, h_reset = np.split(h @ r_update_reset.T + r_bias[:2 * hidden], 2, axis=-1)
        update = _sigmoid(clipped(x_update + h_update))
        reset = _sigmoid(clipped(x_reset + h_reset))
        if linear_before_reset:
            recurrent = reset * (h @ r_hidden.T + r_bias[2 * hidden:])
        else:
            recurrent = (reset * h) @ r_hidden.T + r_bias[2 * hidden:]
        candidate = np.tanh(clipped(x_hidden + recurrent))
        h = (1.0 - update) * candidate + update * h
        ys[t] = h
    return ys, h


def _gru_reference(inputs, attrs):
    x, w, r = (v.astype(F64) for v in inputs[:3])
    batch, hidden = x.shape[1], int(attrs["hidden_size"])
    results = []
    for d, reverse in enumerate(_directions("GRU", attrs)):
        bias, initial = _optional(inputs, 3), _optional(inputs, 5)
        results.append(_gru_direction(
            x, w[d], r[d], np.zeros(6 * hidden) if bias is None else bias[d].astype(F64),
            np.zeros((batch, hidden)) if initial is None else initial[d].astype(F64),
            float(attrs.get("clip", 0.0)), reverse, bool(attrs.get("linear_before_reset", False))))
    dtype = inputs[0].dtype
    return [np.stack([ys for ys, _ in results], axis=1).astype(dtype),
            np.stack([h for _, h in results]).astype(dtype)]


def _rnn_lower(opcode: int, op: str):
    def lower(attrs):
        _directions(op, attrs)
        options = RnnOptionsT()
        options.hiddenSize = int(attrs["hidden_size"])
        options.direction = DIRECTIONS[attrs.get("direction", "forward")]
        options.clip = float(attrs.get("clip", 0.0))
        options.linearBeforeReset = bool(attrs.get("linear_before_reset", False))
        return opcode, OpOptions.RnnOptions, options
    return lower


def _rnn_lift(with_reset_flag: bool):
    def lift(options):
        attrs = {"hidden_size": int(options.hiddenSize),
                 "direction": {v: k for k, v in DIRECTIONS.items()}[options.direction],
                 "clip": float32_value(options.clip)}
        if with_reset_flag:
            attrs["linear_before_reset"] = bool(options.linearBeforeReset)
        return attrs
    return lift


def _rnn_flops(gates: int):
    def flops(in_types, out_types, attrs):
        seq, batch, width = in_types[0].shape
        hidden = int(attrs["hidden_size"])
        directions = len(_directions("RNN", attrs))
        return 2 * seq * batch * directions * gates * hidden * (width + hidden)
    return flops


register(OpDef(
    name="LSTM",
    infer=_rnn_infer("LSTM", 4, {3: lambda d, b, h: (d, 8 * h), 5: lambda d, b, h: (d, b, h),
                                 6: lambda d, b, h: (d, b, h), 7: lambda d, b, h: (d, 3 * h)}, 3),
    reference=_lstm_reference, lower=_rnn_lower(OpCode.LSTM, "LSTM"), lift=_rnn_lift(False),
    opcode=OpCode.LSTM, flops=_rnn_flops(4)))

register(OpDef(
    name="GRU",
    infer=_rnn_infer("GRU", 3, {3: lambda d, b, h: (d, 6 * h), 5: lambda d, b, h: (d, b, h)}, 2),
    reference=_gru_reference, lower=_rnn_lower(OpCode.GRU, "GRU"), lift=_rnn_lift(True),
    opcode=OpCode.GRU, flops=_rnn_flops(3)))

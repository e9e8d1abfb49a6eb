"""ONNX LinearAttention (opset 27) lowered onto elementwise ops and BatchMatMul, one time step after
the other as the operator defines it.

Per key/value head the state S is a [d_k, d_v] matrix. For each step t:

    gated rules:  S = exp(g_t) * S                       (g_t per head or per key dimension)
    delta rules:  v_t = beta_t * (v_t - k_t S)           (k_t as a [1, d_k] row: one BatchMatMul)
    every rule:   S = S + k_t^T v_t                      (an outer product: one broadcast Mul)
                  o_t = q_t S                            (the head's G query heads at once)

The inputs are unpacked once ([B, T, H * D] -> [B, H, T, D], query heads grouped under their
key/value head for grouped-query attention) and split into steps; the steps' outputs are joined,
scaled once and packed back. The graph grows with T (about seven ops a step): fine for decoding
(T = 1) and short prefills, a long prefill makes a long graph.
"""
from __future__ import annotations

import numpy as np

from converter.importers.onnx_builder import NodeContext

RULES = ("linear", "gated", "delta", "gated_delta")


def _steps(ctx: NodeContext, x: str, heads: int, width: int) -> list[str]:
    """x [B, T, heads * width] as T tensors [B, heads, 1, width]."""
    batch, steps, _ = ctx.shape(x)
    moved = ctx.emit1("Transpose", [ctx.reshape(x, (batch, steps, heads, width))], {"perm": (0, 2, 1, 3)})
    if steps == 1:
        return [moved]
    return ctx.emit("Split", [moved], {"axis": 2, "sizes": (1,) * steps}, steps)


def lower_linear_attention(ctx: NodeContext) -> None:
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in RULES:
        raise ctx.unsupported(f"update_rule={rule!r}")
    q_heads, kv_heads = ctx.attr("q_num_heads"), ctx.attr("kv_num_heads")
    if not q_heads or not kv_heads or q_heads % kv_heads:
        raise ctx.error(f"q_num_heads {q_heads} must be a positive multiple of kv_num_heads {kv_heads}")
    query, key, value, past, decay, beta = (ctx.input(i) for i in range(6))
    for index, what in ((0, "query"), (1, "key"), (2, "value")):
        if ctx.rank(index) != 3:
            raise ctx.error(f"{what} has shape {list(ctx.shape(index))}; expected [B, T, H * D]")
    batch, steps, q_width = ctx.shape(0)
    if q_width % q_heads or ctx.shape(2)[2] % kv_heads or ctx.shape(1) != (batch, steps, kv_heads * (q_width // q_heads)):
        raise ctx.error(f"query {list(ctx.shape(0))}, key {list(ctx.shape(1))} and value {list(ctx.shape(2))} do not "
                        f"split into {q_heads} query and {kv_heads} key/value heads")
    d_k, d_v, group = q_width // q_heads, ctx.shape(2)[2] // kv_heads, q_heads // kv_heads
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gated != bool(decay) or delta != bool(beta):
        raise ctx.error(f"update_rule {rule!r} takes {'a' if gated else 'no'} decay and {'a' if delta else 'no'} beta")
    state_shape = (batch, kv_heads, d_k, d_v)
    if past and ctx.shape(3) != state_shape:
        raise ctx.error(f"past_state has shape {list(ctx.shape(3))}, expected {list(state_shape)}")
    scale = float(ctx.attr("scale", 0.0)) or 1.0 / float(np.sqrt(d_k))

    keys = _steps(ctx, key, kv_heads, d_k)
    values = _steps(ctx, value, kv_heads, d_v)
    # Query heads kv * G + g read key/value head kv: [B, kv_heads, T, G * d_k] split per step.
    queries = _steps(ctx, query, kv_heads, group * d_k)
    decays = betas = None
    for index, what in ((4, "decay"), (5, "beta")):
        if ctx.input(index) and (ctx.rank(index) != 3 or ctx.shape(index)[:2] != (batch, steps)):
            raise ctx.error(f"{what} has shape {list(ctx.shape(index))}; expected [{batch}, {steps}, ...]")
    if gated:
        width = ctx.shape(4)[2]
        if width not in (kv_heads, kv_heads * d_k):
            raise ctx.error(f"decay's last axis is {width}; expected {kv_heads} or {kv_heads * d_k}")
        decays = _steps(ctx, ctx.emit1("Exp", [decay]), kv_heads, width // kv_heads)
    if delta:
        width = ctx.shape(5)[2]
        if width not in (kv_heads, 1):
            raise ctx.error(f"beta's last axis is {width}; expected {kv_heads} or 1")
        betas = _steps(ctx, beta, width, 1)

    state = past or None
    outputs = []
    for t in range(steps):
        k_row, v_row = keys[t], values[t]                       # [B, H, 1, d_k], [B, H, 1, d_v]
        if state is not None and gated:
            factor = ctx.reshape(decays[t], (batch, kv_heads, ctx.shape(decays[t])[3], 1))
            state = ctx.emit1("Mul", [state, factor])
        if delta:
            if state is not None:
                retrieved = ctx.emit1("BatchMatMul", [k_row, state], {"transpose_a": False, "transpose_b": False})
                v_row = ctx.emit1("Sub", [v_row, retrieved])
            v_row = ctx.emit1("Mul", [v_row, betas[t]])
        outer = ctx.emit1("Mul", [ctx.reshape(k_row, (batch, kv_heads, d_k, 1)), v_row])
        state = outer if state is None else ctx.emit1("Add", [state, outer])
        q_rows = ctx.reshape(queries[t], (batch, kv_heads, group, d_k))
        outputs.append(ctx.emit1("BatchMatMul", [q_rows, state], {"transpose_a": False, "transpose_b": False}))

    # [B, kv_heads, G, d_v] per step -> [B, T, q_heads * d_v]
    rows = [ctx.reshape(o, (batch, kv_heads, 1, group * d_v)) for o in outputs]
    joined = rows[0] if steps == 1 else ctx.emit1("Concat", rows, {"axis": 2})
    packed = ctx.reshape(ctx.emit1("Transpose", [joined], {"perm": (0, 2, 1, 3)}), (batch, steps, q_heads * d_v))
    scale_name = ctx.constant(np.array(scale, np.float32), base="scale")
    ctx.emit("Mul", [packed, scale_name], {}, [ctx.output(0)])
    if ctx.output(1):
        ctx.copy_to(state, ctx.output(1))

"""Fused scaled-dot-product attention (the runtime's ATTENTION; kernel in cruntime/src/ops/attention.c).

    y = softmax(cap(scale * q @ k^T) + mask + causal) @ v      (softmax over the keys)

q [B, Hq, Sq, D], k [B, Hkv, Sk, D] (``k_transposed``: [B, Hkv, D, Sk]), v [B, Hkv, Sk, Dv] ->
y [B, Hq, Sq, Dv]. Hq is a multiple of Hkv; query head h reads key/value head h // (Hq // Hkv)
(grouped-query attention). Attributes: ``scale`` (None: 1 / sqrt(D)), ``causal`` ("none",
"upper_left": key j kept for query i when j <= i, "lower_right": when j <= i + Sk - Sq),
``softcap`` (0: none; else s -> softcap * tanh(s / softcap), before the mask), ``k_transposed``.
The optional mask is float32 (added to the scores) or bool (False drops the key) and broadcasts to
[B, Hq, Sq, Sk]. A query row whose keys are all dropped gives zeros (ONNX Attention's rule).

No gradient rule: autodiff refuses a trainable model whose loss depends on an Attention node
(converter.autodiff names it). The trainable pipeline (converter.autodiff.pipeline) does not run
fuse_attention, so an exported model made trainable keeps its differentiable unfused attention.
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.AttentionOptions import AttentionOptionsT
from converter.edgefb.CausalMode import CausalMode
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import FLOAT_DTYPES, broadcast_dims, fail, float32_value, need

OP = "Attention"
CAUSAL_MODES = {"none": CausalMode.NONE, "upper_left": CausalMode.UPPER_LEFT,
                "lower_right": CausalMode.LOWER_RIGHT}


def _dims_agree(a, b) -> bool:
    return a == b or isinstance(a, str) or isinstance(b, str)


def _key_dims(k: TensorType, attrs) -> tuple:
    """(key length, head size) of k in either layout."""
    return (k.shape[3], k.shape[2]) if attrs.get("k_transposed") else (k.shape[2], k.shape[3])


def _infer(types, attrs):
    need(OP, types, 3, optional=1)
    q, k, v = types[:3]
    mask = types[3] if len(types) > 3 else None
    for what, t in (("query", q), ("key", k), ("value", v)):
        if t.rank != 4:
            fail(OP, f"{what} has shape {t.shape}; it must be rank 4 [batch, heads, sequence, size]")
        if t.dtype not in FLOAT_DTYPES or t.dtype != q.dtype:
            fail(OP, f"{what} is {t.dtype}; query, key and value must share one float dtype")
    if attrs.get("causal", "none") not in CAUSAL_MODES:
        fail(OP, f"causal {attrs.get('causal')!r} is not one of {tuple(CAUSAL_MODES)}")
    kv_len, k_size = _key_dims(k, attrs)
    fits = (_dims_agree(k.shape[0], q.shape[0]) and _dims_agree(v.shape[0], q.shape[0])
            and _dims_agree(v.shape[1], k.shape[1]) and _dims_agree(v.shape[2], kv_len)
            and _dims_agree(k_size, q.shape[3]))
    if fits and isinstance(q.shape[1], int) and isinstance(k.shape[1], int):
        fits = k.shape[1] > 0 and q.shape[1] % k.shape[1] == 0
    if not fits:
        fail(OP, f"query {q.shape}, key {k.shape}{' (transposed)' if attrs.get('k_transposed') else ''} "
                 f"and value {v.shape} do not fit (batch, heads a multiple of the key/value heads, "
                 f"key length, head size)")
    scores = (q.shape[0], q.shape[1], q.shape[2], kv_len)
    if mask is not None:
        if mask.dtype not in ("float32", "bool"):
            fail(OP, f"mask is {mask.dtype}; it must be float32 or bool")
        if mask.rank > 4 or broadcast_dims(OP, mask.shape, scores) != scores:
            fail(OP, f"mask {mask.shape} does not broadcast to the scores {scores}")
    return [TensorType(q.dtype, (q.shape[0], q.shape[1], q.shape[2], v.shape[3]))]


def _reference(inputs, attrs):
    q, k, v = (x.astype(np.float64) for x in inputs[:3])
    mask = inputs[3] if len(inputs) > 3 else None
    if attrs.get("k_transposed"):
        k = np.swapaxes(k, -1, -2)
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = attrs.get("scale")
    scale = float32_value(scale) if scale else 1.0 / np.sqrt(q.shape[3])
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    softcap = float(attrs.get("softcap") or 0.0)
    if softcap > 0:
        scores = softcap * np.tanh(scores / softcap)
    if mask is not None:
        scores = scores + (np.where(mask, 0.0, -np.inf) if mask.dtype == np.bool_ else mask.astype(np.float64))
    causal = attrs.get("causal", "none")
    if causal != "none":
        sq, sk = scores.shape[-2:]
        offset = sk - sq if causal == "lower_right" else 0
        keep = np.arange(sk)[None, :] <= np.arange(sq)[:, None] + offset
        scores = np.where(keep, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True) if scores.shape[-1] else np.zeros(scores.shape[:-1] + (1,))
    dropped = np.isneginf(top)
    e = np.exp(scores - np.where(dropped, 0.0, top))
    total = np.sum(e, axis=-1, keepdims=True)
    p = np.where(dropped, 0.0, e / np.where(total == 0, 1.0, total))
    return [(p @ v).astype(inputs[0].dtype)]


def _lower(attrs):
    options = AttentionOptionsT()
    options.scale = float(attrs.get("scale") or 0.0)
    options.causal = CAUSAL_MODES[attrs.get("causal", "none")]
    options.softcap = float(attrs.get("softcap") or 0.0)
    options.kTransposed = bool(attrs.get("k_transposed", False))
    return OpCode.ATTENTION, OpOptions.AttentionOptions, options


def _lift(options):
    names = {code: name for name, code in CAUSAL_MODES.items()}
    scale = float32_value(options.scale)
    return {"scale": scale or None, "causal": names[int(options.causal)],
            "softcap": float32_value(options.softcap), "k_transposed": bool(options.kTransposed)}


def _flops(in_types, out_types, attrs):
    q, k, v = in_types[:3]
    if not (q.is_static and k.is_static and v.is_static):
        return 0
    kv_len, _ = _key_dims(k, attrs)
    scores = q.shape[0] * q.shape[1] * q.shape[2] * kv_len
    return 2 * scores * (q.shape[3] + v.shape[3]) + 5 * scores


register(OpDef(name=OP, infer=_infer, reference=_reference, lower=_lower, lift=_lift,
               opcode=OpCode.ATTENTION, flops=_flops))

"""The C runtime's training ops through edge.Interpreter, on small .edge files written directly with
the FlatBuffers object API (tests/fixtures/raw_edge.py), against NumPy:

- CONV_2D_BACKPROP_INPUT / _FILTER against converter/ops/training.py's float64 references (NCHW,
  transposed here) across strides, dilations, groups (depthwise included) and padding;
- a training step in one graph: LOSS (MSE and softmax cross-entropy) -> OPTIMIZER_UPDATE (no
  outputs, variables updated in place) for several steps against the update rules in NumPy;
- 1 and 2 threads bit-identical; edge_interpreter_save_model writes the trained variables.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

import edge
from converter.edgefb.Conv2DOptions import Conv2DOptionsT
from converter.edgefb.LossOptions import LossOptionsT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.OptimizerOptions import OptimizerOptionsT
from converter.ops.training import conv2d_backprop_filter_nchw, conv2d_backprop_input_nchw
from cruntime.binding import ffi
from tests.fixtures import raw_edge

F32, I32 = 0, 4


def blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array).tobytes()


def conv_options(strides, dilations, pads, groups):
    o = Conv2DOptionsT()
    o.strides, o.dilations, o.pads, o.groups = list(strides), list(dilations), list(pads), groups
    return o


def interpreter(builder, model, threads):
    return edge.Interpreter(model_content=raw_edge.serialize(builder, model), num_threads=threads)


CONV_CASES = [
    # n, h, w, c, o, kh, kw, groups, strides, dilations, pads
    (2, 7, 6, 3, 4, 3, 3, 1, (1, 1), (1, 1), (1, 1, 1, 1)),
    (1, 9, 8, 4, 6, 3, 2, 2, (2, 1), (1, 2), (0, 1, 2, 0)),
    (3, 8, 8, 6, 6, 3, 3, 6, (2, 2), (1, 1), (1, 1, 1, 1)),      # depthwise
    (2, 10, 7, 4, 8, 2, 3, 4, (1, 3), (2, 1), (2, 0, 1, 1)),     # depthwise, multiplier 2
    (4, 12, 12, 8, 16, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 13, 11, 5, 7, 5, 4, 1, (3, 2), (1, 1), (2, 2, 2, 2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_conv_backprop_matches_reference(case):
    n, h, w, c, o, kh, kw, groups, strides, dilations, pads = case
    rng = np.random.default_rng(len(CONV_CASES) + h * 31 + w)
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    wt = rng.standard_normal((o, kh, kw, c // groups)).astype(np.float32)
    dy = rng.standard_normal((n, oh, ow, o)).astype(np.float32)

    b = raw_edge.ModelBuilder()
    tx = b.tensor("x", list(x.shape))
    tdy = b.tensor("dy", list(dy.shape))
    tw = b.tensor("w", list(wt.shape), data=blob(wt), variable=True)
    tdx = b.tensor("dx", list(x.shape))
    tdw = b.tensor("dw", list(wt.shape))
    opts = conv_options(strides, dilations, pads, groups)
    b.op(OpCode.CONV_2D_BACKPROP_INPUT, [tdy, tw], [tdx], OpOptions.Conv2DOptions, opts)
    b.op(OpCode.CONV_2D_BACKPROP_FILTER, [tx, tdy], [tdw], OpOptions.Conv2DOptions, opts)
    model = b.model([tx, tdy], [tdx, tdw])

    results = []
    for threads in (1, 2):
        interp = interpreter(b, model, threads)
        interp.allocate_tensors()
        interp.set_tensor(tx, x)
        interp.set_tensor(tdy, dy)
        interp.invoke()
        results.append((interp.get_tensor(tdx).copy(), interp.get_tensor(tdw).copy()))
    assert np.array_equal(results[0][0], results[1][0]) and np.array_equal(results[0][1], results[1][1])

    nchw = lambda a: a.transpose(0, 3, 1, 2)  # noqa: E731
    want_dx = conv2d_backprop_input_nchw(nchw(dy), wt.transpose(0, 3, 1, 2), (n, c, h, w), strides, dilations,
                                         pads, groups).transpose(0, 2, 3, 1)
    want_dw = conv2d_backprop_filter_nchw(nchw(x), nchw(dy), (o, c // groups, kh, kw), strides, dilations, pads,
                                          groups).transpose(0, 2, 3, 1)
    dx, dw = results[0]
    # float32 sums of a few hundred terms against float64
    np.testing.assert_allclose(dx, want_dx, rtol=1e-4, atol=1e-4 * np.abs(want_dx).max())
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-4 * np.abs(want_dw).max())


def adam_reference(p, m, v, t, g, lr, b1, b2, eps, wd, decoupled):
    g = g if decoupled else g + wd * p
    t += 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step = lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    if decoupled:
        step = step + lr * wd * p
    return p - step, m, v, t


def build_train_model(kind, loss_kind, shape, param, lr, weight_decay=0.0):
    """target -> LOSS(param, target) -> loss, dparam -> OPTIMIZER_UPDATE(param, dparam, lr, slots)."""
    b = raw_edge.ModelBuilder()
    classes = shape[-1]
    if loss_kind == 0:
        target = b.tensor("labels", [shape[0]], dtype=I32)
    else:
        target = b.tensor("target", list(shape))
    tp = b.tensor("param", list(shape), data=blob(param), variable=True)
    loss = b.tensor("loss", [])
    dp = b.tensor("grad/param", list(shape))
    tlr = b.tensor("optimizer/learning_rate", [], data=struct.pack("<f", lr), variable=True)
    slots = []
    if kind in (2, 3):
        zeros = np.zeros(shape, np.float32)
        slots = [b.tensor("param/m", list(shape), data=blob(zeros), variable=True),
                 b.tensor("param/v", list(shape), data=blob(zeros), variable=True),
                 b.tensor("param/step", [], data=struct.pack("<f", 0.0), variable=True)]
    elif kind in (1, 4):
        slots = [b.tensor("param/slot", list(shape), data=blob(np.zeros(shape, np.float32)), variable=True)]
    lo = LossOptionsT()
    lo.kind = loss_kind
    b.op(OpCode.LOSS, [tp, target], [loss, dp], OpOptions.LossOptions, lo)
    oo = OptimizerOptionsT()
    oo.kind, oo.momentum, oo.beta1, oo.beta2, oo.epsilon, oo.weightDecay = kind, 0.9, 0.9, 0.999, 1e-8, weight_decay
    b.op(OpCode.OPTIMIZER_UPDATE, [tp, dp, tlr] + slots, [], OpOptions.OptimizerOptions, oo)
    model = b.model([target], [loss], [("train", [("labels", target)], [("loss", loss)], [0, 1])])
    del classes
    return b, model, dict(target=target, param=tp, loss=loss, lr=tlr, slots=slots)


@pytest.mark.parametrize("kind,loss_kind,weight_decay", [(0, 2, 0.0), (1, 2, 0.01), (2, 0, 0.0), (3, 0, 0.1),
                                                         (4, 2, 0.0), (2, 1, 0.05)])
def test_training_step_matches_numpy(kind, loss_kind, weight_decay, tmp_path):
    rng = np.random.default_rng(kind * 10 + loss_kind)
    shape = (6, 5)
    param = rng.standard_normal(shape).astype(np.float32)
    lr = 0.05
    b, model, t = build_train_model(kind, loss_kind, shape, param, lr, weight_decay)
    targets = [rng.integers(0, shape[1], shape[0]).astype(np.int32) if loss_kind == 0
               else (rng.random(shape) if loss_kind == 1 else rng.standard_normal(shape)).astype(np.float32)
               for _ in range(4)]

    runs = []
    for threads in (1, 2):
        interp = interpreter(b, model, threads)
        interp.allocate_tensors()
        runner = interp.get_signature_runner("train")
        losses, params = [], []
        for target in targets:
            out = runner(labels=target)
            losses.append(float(out["loss"]))
            params.append(interp.get_tensor(t["param"]).copy())
        runs.append((losses, params, interp))
    assert runs[0][0] == runs[1][0] and all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))

    p = param.astype(np.float64)
    m = np.zeros(shape)
    v = np.zeros(shape)
    step = 0
    for i, target in enumerate(targets):
        if loss_kind == 0:
            z = p - p.max(axis=1, keepdims=True)
            soft = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            onehot = np.eye(shape[1])[target]
            loss = np.mean(np.log(np.exp(z).sum(axis=1)) - (onehot * z).sum(axis=1))
            g = (soft - onehot) / shape[0]
        elif loss_kind == 1:
            loss = np.mean(np.maximum(p, 0) - p * target + np.log1p(np.exp(-np.abs(p))))
            g = (1 / (1 + np.exp(-p)) - target) / p.size
        else:
            loss = np.mean((p - target) ** 2)
            g = 2 * (p - target) / p.size
        assert runs[0][0][i] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        if kind == 0:
            p = p - lr * (g + weight_decay * p)
        elif kind == 1:
            gg = g + weight_decay * p
            m = 0.9 * m + gg
            p = p - lr * m
        elif kind == 4:
            gg = g + weight_decay * p
            m = m + gg * gg
            p = p - lr * gg / (np.sqrt(m) + 1e-8)
        else:
            p, m, v, step = adam_reference(p, m, v, step, g, lr, 0.9, 0.999, 1e-8, weight_decay, kind == 3)
        np.testing.assert_allclose(runs[0][1][i], p, rtol=1e-5, atol=1e-6)

    # The trained variables written into a new file that loads and carries them.
    interp = runs[0][2]
    path = tmp_path / "trained.edge"
    status = interp._lib.edge_interpreter_save_model(interp._handle(), str(path).encode())
    assert status == 0, ffi.string(interp._lib.edge_interpreter_error(interp._handle())).decode()
    again = edge.Interpreter(model_path=str(path))
    assert np.array_equal(again.get_tensor(t["param"]), runs[0][1][-1])
    if kind in (2, 3):
        assert again.get_tensor(t["slots"][2]) == np.float32(len(targets))


def test_learning_rate_variable_is_settable():
    shape = (3, 4)
    param = np.ones(shape, np.float32)
    b, model, t = build_train_model(0, 2, shape, param, 0.1)
    interp = interpreter(b, model, 1)
    interp.allocate_tensors()
    interp.set_tensor(t["lr"], np.array(0.0, np.float32))
    interp.get_signature_runner("train")(labels=np.zeros(shape, np.float32))
    assert np.array_equal(interp.get_tensor(t["param"]), param)  # lr 0: nothing moves
    interp.set_tensor(t["lr"], np.array(0.5, np.float32))
    interp.get_signature_runner("train")(labels=np.zeros(shape, np.float32))
    np.testing.assert_allclose(interp.get_tensor(t["param"]), param - 0.5 * 2 * param / param.size, rtol=1e-6)


def test_optimizer_refuses_a_constant_param():
    b = raw_edge.ModelBuilder()
    shape = [2, 2]
    g = b.tensor("grad", shape)
    p = b.tensor("param", shape, data=blob(np.ones(shape, np.float32)))  # a constant
    lr = b.tensor("lr", [], data=struct.pack("<f", 0.1), variable=True)
    oo = OptimizerOptionsT()
    b.op(OpCode.OPTIMIZER_UPDATE, [p, g, lr], [], OpOptions.OptimizerOptions, oo)
    model = b.model([g], [])
    interp = interpreter(b, model, 1)
    with pytest.raises(edge.EdgeError, match="param 'param' is updated in place, so it must be a variable"):
        interp.allocate_tensors()


def test_optimizer_options_are_validated():
    b = raw_edge.ModelBuilder()
    shape = [2]
    g = b.tensor("grad", shape)
    p = b.tensor("param", shape, data=blob(np.ones(shape, np.float32)), variable=True)
    lr = b.tensor("lr", [], data=struct.pack("<f", 0.1), variable=True)
    oo = OptimizerOptionsT()
    oo.kind, oo.beta1 = 2, 1.5
    b.op(OpCode.OPTIMIZER_UPDATE, [p, g, lr], [], OpOptions.OptimizerOptions, oo)
    with pytest.raises(edge.EdgeError, match="beta1 1.5"):
        interpreter(b, b.model([g], []), 1)

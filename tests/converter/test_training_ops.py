"""The training-only ops' NumPy references (converter/ops/training.py) against independent
formulations: adjoint identities and central differences of the forward ops (float64), loops
written out here for the optimizers, and the lower/lift round trip through a written file."""
from __future__ import annotations

import math

import numpy as np
import pytest

from converter.ir import Graph, Node, TensorType
from converter.ops import OPS
from converter.reader import read_model
from converter.reference import run, run_node
from converter.writer import write_model

RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.standard_normal(shape)


def numeric_vjp(f, x, dy, h=1e-6):
    """d(sum(f(x) * dy))/dx by central differences, every element (float64)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (np.sum(f(up) * dy) - np.sum(f(down) * dy)) / (2 * h)
    return grad


def assert_rel(actual, expected, tol=1e-6):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(np.max(np.abs(expected), initial=0.0), 1e-12)
    assert np.max(np.abs(actual - expected), initial=0.0) / scale < tol


# ---- convolution gradients: adjoint identities <conv(x, w), dy> = <x, dx> = <w, dw> ----

CONV_CASES = [
    dict(x=(2, 6, 7, 4), w=(6, 3, 3, 4), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1),
    dict(x=(1, 7, 9, 4), w=(6, 3, 2, 2), strides=(2, 3), dilations=(1, 1), pads=(0, 1, 2, 0), groups=2),
    dict(x=(2, 8, 8, 3), w=(3, 3, 3, 1), strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1), groups=3),  # depthwise
    dict(x=(1, 9, 9, 2), w=(4, 3, 3, 2), strides=(1, 2), dilations=(2, 3), pads=(2, 1, 0, 3), groups=1),
    dict(x=(1, 5, 5, 2), w=(2, 1, 1, 2), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0), groups=1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"x{c['x']}-w{c['w']}-g{c['groups']}-s{c['strides']}")
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_conv_backprop_is_the_adjoint_of_conv(case, layout):
    attrs = {k: case[k] for k in ("strides", "dilations", "pads", "groups")} | {"layout": layout}
    x, w = randn(*case["x"]), randn(*case["w"])
    if layout == "NCHW":
        x, w = x.transpose(0, 3, 1, 2).copy(), w.transpose(0, 3, 1, 2).copy()
    y = run_node("Conv2D", [x, w], attrs)[0]
    dy = randn(*y.shape)
    dx = run_node("Conv2DBackpropInput", [dy, w], {**attrs, "shape": x.shape})[0]
    dw = run_node("Conv2DBackpropFilter", [x, dy], {**attrs, "shape": w.shape})[0]
    assert dx.shape == x.shape and dw.shape == w.shape
    inner = np.sum(y * dy)
    assert abs(np.sum(x * dx) - inner) < 1e-9 * max(1.0, abs(inner))
    assert abs(np.sum(w * dw) - inner) < 1e-9 * max(1.0, abs(inner))
    # and elementwise: the backprop ops are the forward conv's vector-Jacobian products
    assert_rel(dw, numeric_vjp(lambda v: run_node("Conv2D", [x, v], attrs)[0], w, dy))


def test_conv_backprop_keeps_float32():
    attrs = dict(strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, layout="NHWC")
    dy, w = randn(1, 4, 4, 2).astype(np.float32), randn(2, 3, 3, 3).astype(np.float32)
    dx = run_node("Conv2DBackpropInput", [dy, w], {**attrs, "shape": (1, 4, 4, 3)})[0]
    assert dx.dtype == np.float32


# ---- pooling gradient ----

POOL_CASES = [
    dict(kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0)),
    dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    dict(kernel=(3, 2), strides=(1, 2), pads=(1, 0, 1, 1), dilations=(2, 1)),
    dict(kernel=(3, 3), strides=(2, 2), pads=(0, 0, 0, 0), ceil_mode=True),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("pool,forward", [("max", "MaxPool2D"), ("average", "AvgPool2D")])
def test_pool_grad_matches_finite_differences(case, pool, forward):
    attrs = {**case, "layout": "NHWC"}
    # distinct values so a perturbation of 1e-6 never changes a window's maximum
    x = RNG.permutation(2 * 7 * 8 * 3).reshape(2, 7, 8, 3) * 0.01 + randn(2, 7, 8, 3) * 1e-4
    y = run_node(forward, [x], attrs)[0]
    dy = randn(*y.shape)
    dx = run_node("Pool2DGrad", [x, dy], {**attrs, "pool": pool})[0]
    assert_rel(dx, numeric_vjp(lambda v: run_node(forward, [v], attrs)[0], x, dy))


def test_average_pool_grad_counts_padding_when_asked():
    attrs = dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), layout="NHWC", count_include_pad=True)
    x = randn(1, 4, 4, 1)
    y = run_node("AvgPool2D", [x], attrs)[0]
    dy = randn(*y.shape)
    dx = run_node("Pool2DGrad", [x, dy], {**attrs, "pool": "average"})[0]
    assert_rel(dx, numeric_vjp(lambda v: run_node("AvgPool2D", [v], attrs)[0], x, dy))
    # every window counts 9 cells, so a corner pixel (in 4 windows) gets sum(dy of those) / 9
    assert math.isclose(dx[0, 0, 0, 0], dy[0, :2, :2, 0].sum() / 9)


def test_max_pool_grad_goes_to_the_first_maximum_and_never_to_padding():
    x = np.array([[5.0, 5.0], [5.0, 1.0]]).reshape(1, 2, 2, 1)
    attrs = dict(kernel=(2, 2), strides=(1, 1), pads=(0, 0, 0, 0), layout="NHWC", pool="max")
    dx = run_node("Pool2DGrad", [x, np.ones((1, 1, 1, 1))], attrs)[0]
    assert dx.reshape(-1).tolist() == [1.0, 0.0, 0.0, 0.0]
    # all-negative input with padding: the maximum is a real cell, never the zero padding
    x = -np.arange(1, 5, dtype=np.float64).reshape(1, 2, 2, 1)
    attrs = dict(kernel=(3, 3), strides=(1, 1), pads=(1, 1, 1, 1), layout="NHWC", pool="max")
    dx = run_node("Pool2DGrad", [x, np.ones((1, 2, 2, 1))], attrs)[0]
    assert dx.reshape(-1).tolist() == [4.0, 0.0, 0.0, 0.0]


# ---- activation gradient ----

from converter.ops.training import DERIVATIVES, activation_params  # noqa: E402

UNARY_PARAMS = {"Clip": {"min": -0.5, "max": 0.7}, "LeakyRelu": {"alpha": 0.1}, "Elu": {"alpha": 0.8},
                "HardSigmoid": {"alpha": 0.3, "beta": 0.4}}
POSITIVE_DOMAIN = ("Log", "Sqrt", "Rsqrt", "Reciprocal")
UNIT_DOMAIN = ("Asin", "Acos")  # defined on (-1, 1); kept off the ends, where the derivative grows without bound


@pytest.mark.parametrize("name", sorted(DERIVATIVES))
def test_activation_grad_matches_finite_differences(name):
    attrs = UNARY_PARAMS.get(name, {})
    x = randn(3, 5) * 2
    if name in POSITIVE_DOMAIN:
        x = np.abs(x) + 0.3
    if name in UNIT_DOMAIN:
        x = 0.9 * np.tanh(x)
    # stay clear of the kinks, where the one-sided derivatives differ
    kinks = {"Relu": [0], "Relu6": [0, 6], "Clip": [-0.5, 0.7], "LeakyRelu": [0], "Abs": [0],
             "HardSigmoid": [-4 / 3, 2], "HardSwish": [-3, 3], "Elu": [0]}.get(name, [])
    for kink in kinks:
        x = np.where(np.abs(x - kink) < 1e-3, x + 0.01, x)
    alpha, beta = activation_params(name, attrs)
    dy = randn(3, 5)
    dx = run_node("ActivationGrad", [x, dy], {"function": name, "alpha": alpha, "beta": beta})[0]
    assert_rel(dx, numeric_vjp(lambda v: run_node(name, [v], attrs)[0], x, dy))


@pytest.mark.parametrize("name,attrs,points,slopes", [
    ("Relu", {}, [0.0], [0.0]),
    ("Relu6", {}, [0.0, 6.0], [0.0, 0.0]),
    ("Clip", {"min": -1.0, "max": 1.0}, [-1.0, 1.0, 0.5], [0.0, 0.0, 1.0]),
    ("LeakyRelu", {"alpha": 0.2}, [0.0, -1.0], [0.2, 0.2]),
    ("Abs", {}, [0.0], [0.0]),
])
def test_activation_grad_values_at_kinks(name, attrs, points, slopes):
    alpha, beta = activation_params(name, attrs)
    dx = run_node("ActivationGrad", [np.array(points), np.ones(len(points))],
                  {"function": name, "alpha": alpha, "beta": beta})[0]
    assert dx.tolist() == slopes


# ---- losses ----

def test_softmax_cross_entropy_with_class_ids_and_probabilities():
    z = randn(5, 4) * 3
    ids = np.array([0, 3, 1, 1, 2], np.int32)
    loss, d = run_node("Loss", [z, ids], {"kind": "softmax_cross_entropy"})
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss.shape == ()
    assert math.isclose(loss, -np.mean(np.log(p[np.arange(5), ids])), rel_tol=1e-12)
    onehot = np.eye(4)[ids]
    assert_rel(d, (p - onehot) / 5, 1e-12)
    soft = RNG.dirichlet(np.ones(4), size=5)
    loss_soft, d_soft = run_node("Loss", [z, soft], {"kind": "softmax_cross_entropy"})
    assert math.isclose(loss_soft, -np.mean(np.sum(soft * np.log(p), axis=1)), rel_tol=1e-12)
    assert_rel(d_soft, numeric_vjp(lambda v: run_node("Loss", [v, soft], {"kind": "softmax_cross_entropy"})[0],
                                   z, np.array(1.0)))


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    z = np.array([[1000.0, 0.0], [-1000.0, 1000.0]], np.float32)
    loss, d = run_node("Loss", [z, np.array([0, 0], np.int32)], {"kind": "softmax_cross_entropy"})
    assert np.isfinite(loss) and np.all(np.isfinite(d))
    assert math.isclose(float(loss), 1000.0, rel_tol=1e-6)


def test_class_id_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="class id 4 is out of range"):
        run_node("Loss", [randn(2, 4), np.array([0, 4], np.int32)], {"kind": "softmax_cross_entropy"})


@pytest.mark.parametrize("kind", ["bce_with_logits", "mse"])
def test_elementwise_losses(kind):
    z = randn(3, 4) * 4
    t = RNG.uniform(size=(3, 4)) if kind == "bce_with_logits" else randn(3, 4)
    loss, d = run_node("Loss", [z, t], {"kind": kind})
    if kind == "mse":
        expected = np.mean((z - t) ** 2)
    else:
        s = 1 / (1 + np.exp(-z))
        expected = -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s))
    assert math.isclose(loss, expected, rel_tol=1e-10)
    assert_rel(d, numeric_vjp(lambda v: run_node("Loss", [v, t], {"kind": kind})[0], z, np.array(1.0)))


# ---- normalisation gradients ----

@pytest.mark.parametrize("shape,axis,scale_shape", [((4, 6), 1, (6,)), ((2, 3, 5), 2, (5,)),
                                                      ((2, 3, 4), 1, (3, 4)), ((2, 3, 4), 1, (1, 4))])
def test_layer_norm_grad_matches_finite_differences(shape, axis, scale_shape):
    x, scale, bias, dy = randn(*shape), randn(*scale_shape), randn(*scale_shape), randn(*shape)
    attrs = {"axis": axis, "epsilon": 1e-3}
    dx, dscale, dbias = run_node("LayerNormGrad", [x, scale, dy], attrs)
    forward = lambda x_, s_, b_: run_node("LayerNorm", [x_, s_, b_], attrs)[0]  # noqa: E731
    assert_rel(dx, numeric_vjp(lambda v: forward(v, scale, bias), x, dy))
    assert_rel(dscale, numeric_vjp(lambda v: forward(x, v, bias), scale, dy))
    assert_rel(dbias, numeric_vjp(lambda v: forward(x, scale, v), bias, dy))


def _batch_norm_numpy(x, scale, bias, eps):
    axes = tuple(range(x.ndim - 1))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mean) / np.sqrt(var + eps) * scale + bias, mean, var


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 5)])
def test_batch_norm_train_statistics_and_running_update(shape):
    x = randn(*shape) * 2 + 1
    c = shape[-1]
    scale, bias, rm, rv = randn(c), randn(c), randn(c), np.abs(randn(c)) + 0.5
    attrs = {"epsilon": 1e-3, "momentum": 0.8, "layout": "NHWC"}
    y, mean, invstd = run_node("BatchNormTrain", [x, scale, bias, rm, rv], attrs)
    updated = OPS["BatchNormTrain"].updates([x, scale, bias, rm, rv], attrs)
    assert sorted(updated) == [3, 4]
    new_rm, new_rv = updated[3], updated[4]
    expected_y, expected_mean, var = _batch_norm_numpy(x, scale, bias, 1e-3)
    n = x.size // c
    assert_rel(y, expected_y, 1e-12)
    assert_rel(mean, expected_mean, 1e-12)
    assert_rel(invstd, 1 / np.sqrt(var + 1e-3), 1e-12)
    assert_rel(new_rm, 0.8 * rm + 0.2 * expected_mean, 1e-12)
    assert_rel(new_rv, 0.8 * rv + 0.2 * var * n / (n - 1), 1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 4, 5)])
def test_batch_norm_grad_matches_finite_differences(shape):
    x, c = randn(*shape), shape[-1]
    scale, bias, rm, rv = randn(c), randn(c), np.zeros(c), np.ones(c)
    attrs = {"epsilon": 1e-3, "layout": "NHWC"}
    y, mean, invstd = run_node("BatchNormTrain", [x, scale, bias, rm, rv], attrs)
    dy = randn(*shape)
    dx, dscale, dbias = run_node("BatchNormGrad", [x, scale, mean, invstd, dy], attrs)
    forward = lambda x_, s_, b_: run_node("BatchNormTrain", [x_, s_, b_, rm, rv], attrs)[0]  # noqa: E731
    assert_rel(dx, numeric_vjp(lambda v: forward(v, scale, bias), x, dy))
    assert_rel(dscale, numeric_vjp(lambda v: forward(x, v, bias), scale, dy))
    assert_rel(dbias, numeric_vjp(lambda v: forward(x, scale, v), bias, dy))


# ---- gather gradient ----

@pytest.mark.parametrize("axis", [0, 1, 2])
def test_gather_grad_is_the_adjoint_of_gather_with_duplicates(axis):
    x = randn(4, 5, 3)
    indices = np.array([[1, -1], [1, 0]], np.int64) if axis != 2 else np.array([2, 2, -3], np.int32)
    y = run_node("Gather", [x, indices], {"axis": axis})[0]
    dy = randn(*y.shape)
    dx = run_node("GatherGrad", [dy, indices], {"axis": axis, "shape": x.shape})[0]
    assert_rel(dx, numeric_vjp(lambda v: run_node("Gather", [v, indices], {"axis": axis})[0], x, dy))


def test_gather_grad_rejects_out_of_range_indices():
    with pytest.raises(ValueError, match="index 5 is out of range"):
        run_node("GatherGrad", [randn(2, 3), np.array([0, 5], np.int32)], {"axis": 0, "shape": (5, 3)})


# ---- optimizers, against loops written out here ----

def _numpy_optimizer(kind, p, g, lr, state, wd=0.0, momentum=0.9, nesterov=False, b1=0.9, b2=0.999, eps=1e-8):
    p, state = p.copy(), {k: np.array(v, dtype=np.float64) for k, v in state.items()}
    if kind != "adamw":
        g = g + wd * p
    if kind == "sgd":
        p = p - lr * g
    elif kind == "momentum":
        state["velocity"] = momentum * state["velocity"] + g
        p = p - lr * (g + momentum * state["velocity"] if nesterov else state["velocity"])
    elif kind == "adagrad":
        state["accumulator"] = state["accumulator"] + g ** 2
        p = p - lr * g / (np.sqrt(state["accumulator"]) + eps)
    else:
        state["step"] = state["step"] + 1
        t = state["step"]
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * g ** 2
        update = lr * (state["m"] / (1 - b1 ** t)) / (np.sqrt(state["v"] / (1 - b2 ** t)) + eps)
        p_old = p
        p = p - update
        if kind == "adamw":
            p = p - lr * wd * p_old
    return p, state


def optimizer_step(inputs, attrs):
    """The new values of param and slots (OptimizerUpdate has no outputs; it updates in place)."""
    assert run_node("OptimizerUpdate", inputs, attrs) == []
    updated = OPS["OptimizerUpdate"].updates(inputs, attrs)
    return [updated[k] for k in sorted(updated)]


SLOTS = {"sgd": (), "momentum": ("velocity",), "adagrad": ("accumulator",), "adam": ("m", "v", "step"),
         "adamw": ("m", "v", "step")}


def _initial_state(kind, shape):
    return {name: (np.float64(0.0) if name == "step" else np.zeros(shape)) for name in SLOTS[kind]}


@pytest.mark.parametrize("kind,extra", [
    ("sgd", {}), ("sgd", {"weight_decay": 0.1}), ("momentum", {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.01}), ("adagrad", {}),
    ("adam", {}), ("adam", {"weight_decay": 0.05}), ("adamw", {"weight_decay": 0.05}),
])
def test_optimizer_steps_match_numpy(kind, extra):
    p = randn(3, 4)
    state = _initial_state(kind, p.shape)
    ours = {"p": p.copy(), **{k: np.array(v) for k, v in state.items()}}
    attrs = {"kind": kind, **extra}
    lr = np.array(0.05)
    for _ in range(3):
        g = randn(3, 4)
        new = optimizer_step([ours["p"], g, lr] + [ours[s] for s in SLOTS[kind]], attrs)
        ours = dict(zip(["p", *SLOTS[kind]], new))
        p, state = _numpy_optimizer(kind, p, g, 0.05, state, wd=extra.get("weight_decay", 0.0),
                                    momentum=extra.get("momentum", 0.0), nesterov=extra.get("nesterov", False))
    assert_rel(ours["p"], p, 1e-12)
    for name in SLOTS[kind]:
        assert_rel(ours[name], state[name], 1e-12)


@pytest.mark.parametrize("kind", ["sgd", "momentum", "adagrad", "adam", "adamw"])
def test_sparse_update_touches_only_listed_rows_and_sums_duplicates(kind):
    p = randn(6, 3)
    rows = randn(4, 3)
    ids = np.array([4, 1, 4, 0], np.int32)
    attrs = {"kind": kind, "momentum": 0.9, "weight_decay": 0.01}
    state = _initial_state(kind, p.shape)
    new = optimizer_step([p, rows, ids, np.array(0.1)] + [state[s] for s in SLOTS[kind]], {**attrs, "sparse": True})
    dense = np.zeros_like(p)
    np.add.at(dense, ids, rows)
    touched = [0, 1, 4]
    expected_rows, expected_state = _numpy_optimizer(
        kind, p[touched], dense[touched], 0.1,
        {k: (v if k == "step" else v[touched]) for k, v in state.items()}, wd=0.01, momentum=0.9)
    assert_rel(new[0][touched], expected_rows, 1e-12)
    untouched = [2, 3, 5]
    assert np.array_equal(new[0][untouched], p[untouched])
    for name, value in zip(SLOTS[kind], new[1:]):
        if name == "step":
            assert value == 1.0
        else:
            assert_rel(value[touched], expected_state[name], 1e-12)
            assert not value[untouched].any()


def test_clip_by_global_norm():
    grads = [randn(3, 2) * 5, randn(4) * 5]
    norm = math.sqrt(sum(np.sum(g ** 2) for g in grads))
    clipped = run_node("ClipByGlobalNorm", grads, {"max_norm": 1.5})
    for c, g in zip(clipped, grads):
        assert_rel(c, g * 1.5 / norm, 1e-12)
    assert math.isclose(math.sqrt(sum(np.sum(c ** 2) for c in clipped)), 1.5, rel_tol=1e-12)
    untouched = run_node("ClipByGlobalNorm", grads, {"max_norm": norm * 2})
    for c, g in zip(untouched, grads):
        assert np.array_equal(c, g)


# ---- lowering and lifting: every training op survives a written file ----

def _single_op_graph(op, inputs: dict[str, np.ndarray], attrs, n_outputs=None):
    from converter.ops import OPS

    types = {k: TensorType(str(v.dtype), v.shape) for k, v in inputs.items()}
    out_types = OPS[op].infer(list(types.values()), attrs)
    outs = [f"out{k}" for k in range(len(out_types))]
    tensors = {**types, **dict(zip(outs, out_types))}
    variables = frozenset(list(inputs)[:1]) if op == "OptimizerUpdate" else frozenset()
    node = Node(op, tuple(inputs), tuple(outs), attrs, name=f"the_{op}")
    return Graph((node,), (), tuple(outs) or (), tensors, dict(inputs), variables=variables)


F32 = np.float32
ROUND_TRIP = [
    ("Conv2DBackpropInput", {"dy": randn(1, 3, 3, 2).astype(F32), "w": randn(2, 3, 3, 4).astype(F32)},
     dict(strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, layout="NHWC", shape=(1, 5, 5, 4))),
    ("Conv2DBackpropFilter", {"x": randn(1, 5, 5, 4).astype(F32), "dy": randn(1, 3, 3, 2).astype(F32)},
     dict(strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1), groups=2, layout="NHWC", shape=(2, 3, 3, 2))),
    ("Pool2DGrad", {"x": randn(1, 4, 4, 2).astype(F32), "dy": randn(1, 2, 2, 2).astype(F32)},
     dict(pool="average", kernel=(2, 2), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0), ceil_mode=False,
          count_include_pad=False, layout="NHWC")),
    ("ActivationGrad", {"x": randn(3, 4).astype(F32), "dy": randn(3, 4).astype(F32)},
     dict(function="LeakyRelu", alpha=float(F32(0.1)), beta=0.0)),
    ("Loss", {"z": randn(3, 4).astype(F32), "t": np.array([1, 0, 3], np.int32)}, dict(kind="softmax_cross_entropy")),
    ("LayerNormGrad", {"x": randn(2, 5).astype(F32), "s": randn(5).astype(F32), "dy": randn(2, 5).astype(F32)},
     dict(axis=1, epsilon=float(F32(1e-5)))),
    ("BatchNormGrad", {"x": randn(4, 3).astype(F32), "s": randn(3).astype(F32), "m": randn(3).astype(F32),
                       "i": np.ones(3, F32), "dy": randn(4, 3).astype(F32)},
     dict(epsilon=float(F32(1e-3)), momentum=float(F32(0.9)), layout="NHWC")),
    ("GatherGrad", {"dy": randn(2, 3).astype(F32), "i": np.array([3, 3], np.int32)}, dict(axis=0, shape=(5, 3))),
    ("OptimizerUpdate", {"p": randn(3).astype(F32), "g": randn(3).astype(F32), "lr": np.array(0.1, F32),
                         "m": np.zeros(3, F32), "v": np.zeros(3, F32), "t": np.array(0.0, F32)},
     dict(kind="adamw", momentum=0.0, nesterov=False, beta1=float(F32(0.9)), beta2=float(F32(0.999)),
          epsilon=float(F32(1e-8)), weight_decay=float(F32(0.01)), sparse=False)),
    ("ClipByGlobalNorm", {"a": randn(3).astype(F32), "b": randn(2, 2).astype(F32)}, dict(max_norm=1.0)),
]


@pytest.mark.parametrize("op,inputs,attrs", ROUND_TRIP, ids=[c[0] for c in ROUND_TRIP])
def test_training_op_round_trips_through_a_file(op, inputs, attrs):
    graph = _single_op_graph(op, inputs, attrs)
    data = write_model(graph)
    back = read_model(data)
    assert back.nodes[0].op == op
    lifted = back.nodes[0].attrs
    for key, value in attrs.items():
        assert lifted[key] == value, key
    assert write_model(back) == data
    expected = run_node(op, list(inputs.values()), attrs)
    actual = run_node(op, [back.constants[n] for n in back.nodes[0].inputs], lifted)
    for a, e in zip(actual, expected):
        assert np.array_equal(a, e)
    if OPS[op].updates is not None:
        before = OPS[op].updates(list(inputs.values()), attrs)
        after = OPS[op].updates([back.constants[n] for n in back.nodes[0].inputs], lifted)
        assert sorted(before) == sorted(after)
        assert all(np.array_equal(before[k], after[k]) for k in before)


def test_optimizer_update_writes_back_through_the_executor():
    p, g = randn(3).astype(F32), randn(3).astype(F32)
    graph = _single_op_graph("OptimizerUpdate", {"p": p, "g": g, "lr": np.array(0.5, F32)}, {"kind": "sgd"})
    values = run(graph, {}, keep_all=True)
    assert np.allclose(values["p"], p - 0.5 * g)
    assert np.array_equal(graph.constants["p"], p)  # the graph itself is unchanged

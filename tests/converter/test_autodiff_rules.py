"""Every gradient rule (OpDef.gradient) against central differences, in float64.

Each case is one op on small random inputs. The backward graph the rule builds is run by the
reference executor with every float tensor in float64; the forward op is perturbed one input
element at a time to get d(sum(y * seed))/dx numerically."""
from __future__ import annotations

import numpy as np
import pytest

from converter.autodiff import GradContext, NotDifferentiableError, backward
from converter.ir import Graph, Node, TensorType
from converter.ops import OPS
from converter.reference import run, run_node

RNG = np.random.default_rng(7)


def randn(*shape):
    return RNG.standard_normal(shape)


def _as_float64(arrays: dict) -> dict:
    return {k: (np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
            for k, v in arrays.items()}


def analytic_gradients(op, inputs: dict, attrs, wrt, seeded=None):
    """Runs the rule's backward graph in float64; returns (input name -> gradient, seeds)."""
    names = list(inputs)
    types = {k: TensorType("float32" if v.dtype.kind == "f" else str(v.dtype), v.shape) for k, v in inputs.items()}
    out_types = OPS[op].infer([types[n] if n else None for n in names], attrs)
    outputs = [f"y{k}" for k in range(len(out_types))]
    tensors = {**types, **dict(zip(outputs, out_types))}
    seeds = {}
    constants = dict(inputs)
    for k, (out, t) in enumerate(zip(outputs, out_types)):
        if t.dtype == "float32" and (seeded is None or k in seeded):
            seeds[out] = randn(*t.shape)
            constants[f"seed/{out}"] = seeds[out]
            tensors[f"seed/{out}"] = t
    node = Node(op, tuple(names), tuple(outputs), attrs, name="under_test")
    g = GradContext(tensors, constants, set(tensors))
    grads = backward(g, [node], {out: f"seed/{out}" for out in seeds}, wrt)
    graph = Graph((node, *g.nodes), (), tuple(grads.values()), tensors, _as_float64(constants))
    values = run(graph, {}, keep_all=True, check_types=False)
    return {name: values[grads[name]] for name in wrt}, seeds


def numeric_gradient(op, inputs: dict, attrs, name, seeds, h=1e-6):
    def objective(arrays):
        results = run_node(op, [arrays[n] for n in inputs], attrs)
        return sum(np.sum(results[int(out[1:])] * seed) for out, seed in seeds.items())

    x = inputs[name]
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = dict(inputs), dict(inputs)
        up[name], down[name] = x.copy(), x.copy()
        up[name][index] += h
        down[name][index] -= h
        grad[index] = (objective(up) - objective(down)) / (2 * h)
    return grad


def check(op, inputs: dict, attrs=None, wrt=None, tol=1e-6, seeded=None):
    """``seeded``: the outputs the objective reads (default: every float output)."""
    attrs = dict(attrs or {})
    inputs = _as_float64(inputs)
    wrt = wrt or [k for k, v in inputs.items() if v.dtype.kind == "f"]
    analytic, seeds = analytic_gradients(op, inputs, attrs, wrt, seeded)
    for name in wrt:
        expected = numeric_gradient(op, inputs, attrs, name, seeds)
        actual = analytic[name]
        assert actual.shape == expected.shape, name
        scale = max(np.max(np.abs(expected)), 1e-12)
        error = np.max(np.abs(actual - expected)) / scale
        assert error < tol, f"{op} d/d{name}: relative error {error:.2e}"


CONV = [
    dict(strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, x=(2, 5, 5, 3), w=(4, 3, 3, 3)),
    dict(strides=(2, 1), dilations=(1, 1), pads=(0, 1, 1, 0), groups=2, x=(1, 6, 5, 4), w=(4, 2, 3, 2)),
    dict(strides=(1, 1), dilations=(2, 2), pads=(2, 2, 2, 2), groups=3, x=(1, 5, 5, 3), w=(3, 3, 3, 1)),
    dict(strides=(2, 2), dilations=(1, 1), pads=(1, 1, 0, 0), groups=1, x=(1, 6, 6, 2), w=(3, 2, 2, 2)),
]


@pytest.mark.parametrize("case", CONV, ids=lambda c: f"g{c['groups']}s{c['strides']}d{c['dilations']}")
@pytest.mark.parametrize("fused", [None, ("Relu", 0.0, 0.0)])
def test_conv2d(case, fused):
    attrs = {k: case[k] for k in ("strides", "dilations", "pads", "groups")} | {"layout": "NHWC"}
    if fused:
        attrs["activation"] = fused
    check("Conv2D", {"x": randn(*case["x"]), "w": randn(*case["w"]), "b": randn(case["w"][0])}, attrs)


def test_conv2d_nchw():
    check("Conv2D", {"x": randn(1, 2, 5, 5), "w": randn(3, 2, 3, 3), "b": randn(3)},
          dict(strides=(2, 2), pads=(1, 1, 1, 1), layout="NCHW"))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("case", [
    dict(strides=(2, 2), dilations=(1, 1), pads=(1, 1, 1, 1), output_padding=(1, 0), groups=1, cin=3, cout=2),
    dict(strides=(1, 2), dilations=(2, 1), pads=(0, 1, 2, 0), output_padding=(0, 1), groups=2, cin=4, cout=6),
], ids=["s2", "grouped-dilated"])
def test_conv_transpose2d(case, layout):
    g = case["groups"]
    attrs = {k: case[k] for k in ("strides", "dilations", "pads", "output_padding", "groups")} | {"layout": layout}
    if layout == "NHWC":
        x, w = randn(1, 3, 4, case["cin"]), randn(case["cout"], 3, 2, case["cin"] // g)
    else:
        x, w = randn(1, case["cin"], 3, 4), randn(case["cin"], case["cout"] // g, 3, 2)
    check("ConvTranspose2D", {"x": x, "w": w, "b": randn(case["cout"])}, attrs)


@pytest.mark.parametrize("x_shape", [(3, 5), (2, 3, 5), (5,)])
def test_fully_connected(x_shape):
    check("FullyConnected", {"x": randn(*x_shape), "w": randn(4, 5), "b": randn(4)})


@pytest.mark.parametrize("a,b,ta,tb", [((3, 4), (4, 5), False, False), ((2, 4, 3), (4, 5), True, False),
                                       ((2, 3, 4), (1, 5, 4), False, True), ((4, 3), (2, 5, 4), True, True)])
def test_batch_matmul(a, b, ta, tb):
    check("BatchMatMul", {"a": randn(*a), "b": randn(*b)}, {"transpose_a": ta, "transpose_b": tb})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Min", "Max", "PRelu"])
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((2, 1, 4), (3, 1))])
def test_binary_with_broadcasting(op, shapes):
    a, b = randn(*shapes[0]), randn(*shapes[1])
    if op == "Div":
        b = np.sign(b) * (np.abs(b) + 0.5)
    check(op, {"a": a, "b": b})


def test_pow():
    check("Pow", {"a": np.abs(randn(3, 4)) + 0.5, "b": randn(4)})


UNARY = {"Relu": {}, "Relu6": {}, "Clip": {"min": -0.4, "max": 0.6}, "LeakyRelu": {"alpha": 0.2},
         "Elu": {"alpha": 0.7}, "Sigmoid": {}, "Tanh": {}, "HardSigmoid": {"alpha": 0.3, "beta": 0.4},
         "HardSwish": {}, "Gelu": {}, "GeluTanh": {}, "Erf": {}, "Exp": {}, "Log": {}, "Sqrt": {}, "Rsqrt": {},
         "Reciprocal": {}, "Neg": {}, "Abs": {}, "Softplus": {}, "Sin": {}, "Cos": {}, "Square": {},
         "Asin": {}, "Acos": {}, "Atan": {}, "Silu": {}}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    x = randn(3, 5) * 2
    if op in ("Log", "Sqrt", "Rsqrt", "Reciprocal"):
        x = np.abs(x) + 0.3
    if op in ("Asin", "Acos"):
        x = np.clip(x / 3, -0.9, 0.9)
    x = np.where(np.abs(x) < 1e-3, 0.5, x)
    x = np.where(np.abs(np.abs(x) - 3) < 1e-3, 2.5, x)
    check(op, {"x": x}, UNARY[op])


@pytest.mark.parametrize("op", ["Floor", "Sign"])
def test_non_differentiable_unary_is_refused_by_name(op):
    with pytest.raises(NotDifferentiableError, match=f"under_test.*{op}"):
        check(op, {"x": randn(3)})


@pytest.mark.parametrize("activation", [("Relu", 0.0, 0.0), ("Relu6", 0.0, 0.0), ("Clip", -0.5, 0.5)])
def test_fused_clamping_activation(activation):
    """Relu/Relu6/Clip stay fused in training: their derivative is read off the output. (The
    other activations are un-fused by make_trainable; see test_autodiff.py.)"""
    x = randn(3, 5)
    check("FullyConnected", {"x": x, "w": randn(4, 5), "b": randn(4)}, {"activation": activation})


def test_where():
    check("Where", {"c": RNG.uniform(size=(3, 4)) > 0.5, "a": randn(3, 4), "b": randn(4)})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax(op, axis):
    check(op, {"x": randn(2, 3, 4)}, {"axis": axis})


@pytest.mark.parametrize("bias_shape", [(4,), (3, 4), None])
def test_layer_norm(bias_shape):
    inputs = {"x": randn(2, 3, 4), "s": randn(3, 4)}
    if bias_shape:
        inputs["b"] = randn(*bias_shape)
    check("LayerNorm", inputs, {"axis": 1, "epsilon": 1e-3})


@pytest.mark.parametrize("axis, scale_shape, bias_shape", [(2, (4,), None), (1, (3, 4), (4,)), (1, (4,), (3, 4))])
def test_rms_norm(axis, scale_shape, bias_shape):
    inputs = {"x": randn(2, 3, 4), "s": randn(*scale_shape)}
    if bias_shape:
        inputs["b"] = randn(*bias_shape)
    check("RMSNorm", inputs, {"axis": axis, "epsilon": 1e-3})


def test_batch_norm_train():
    inputs = {"x": randn(2, 3, 3, 4), "s": randn(4), "b": randn(4), "m": randn(4), "v": np.abs(randn(4)) + 1}
    # the batch mean/invstd outputs feed the backward pass only; the objective reads y
    check("BatchNormTrain", inputs, {"epsilon": 1e-3, "layout": "NHWC"}, wrt=["x", "s", "b"], seeded=[0])


POOLS = [dict(kernel=(2, 2), strides=(2, 2)), dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
         dict(kernel=(3, 3), strides=(2, 2), ceil_mode=True)]


@pytest.mark.parametrize("op", ["MaxPool2D", "AvgPool2D"])
@pytest.mark.parametrize("case", POOLS, ids=str)
def test_pooling(op, case):
    x = RNG.permutation(2 * 5 * 6 * 2).reshape(2, 5, 6, 2) * 0.1
    check(op, {"x": x}, {**case, "layout": "NHWC"})


REDUCE = ["ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
          "ReduceMax", "ReduceMin"]


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes,keepdims", [((1,), True), ((0, 2), False), ((1, 2), True)])
def test_reductions(op, axes, keepdims):
    x = RNG.permutation(24).reshape(2, 3, 4) * 0.3 - 3.1
    check(op, {"x": x}, {"axes": axes, "keepdims": keepdims})


def test_global_average_pool_as_imported():
    check("ReduceMean", {"x": randn(2, 3, 3, 4)}, {"axes": (1, 2), "keepdims": False})


def test_reshape_transpose_broadcast():
    check("Reshape", {"x": randn(2, 6)}, {"shape": (3, 4)})
    check("Transpose", {"x": randn(2, 3, 4)}, {"perm": (2, 0, 1)})
    check("BroadcastTo", {"x": randn(3, 1)}, {"shape": (2, 3, 4)})
    check("Identity", {"x": randn(3)})


def test_concat_split():
    check("Concat", {"a": randn(2, 3), "b": randn(2, 1), "c": randn(2, 2)}, {"axis": 1})
    check("Split", {"x": randn(5, 2)}, {"axis": 0, "sizes": (2, 0, 3)})


def test_split_with_an_unused_output():
    inputs = _as_float64({"x": randn(4, 3)})
    types = {"x": TensorType("float32", (4, 3)), "y0": TensorType("float32", (1, 3)),
             "y1": TensorType("float32", (3, 3)), "seed": TensorType("float32", (3, 3))}
    node = Node("Split", ("x",), ("y0", "y1"), {"axis": 0, "sizes": (1, 3)}, name="split")
    seed = randn(3, 3)
    g = GradContext(dict(types), {"seed": seed, **inputs}, set(types))
    grads = backward(g, [node], {"y1": "seed"}, ["x"])
    graph = Graph((node, *g.nodes), (), (grads["x"],), g.tensors, _as_float64(g.constants))
    dx = run(graph, {}, check_types=False)[grads["x"]]
    assert np.array_equal(dx, np.concatenate([np.zeros((1, 3)), seed]))


@pytest.mark.parametrize("starts,ends", [((0, 1), (2, 3)), ((-2, 0), (5, -1)), ((1, 0), (2, 4))])
def test_slice(starts, ends):
    check("Slice", {"x": randn(3, 4)}, {"starts": starts, "ends": ends, "steps": (1, 1)})


def test_strided_slice_is_refused():
    with pytest.raises(NotDifferentiableError, match="step 2"):
        check("Slice", {"x": randn(6)}, {"starts": (0,), "ends": (6,), "steps": (2,)})


@pytest.mark.parametrize("pads", [(1, 0, 2, 1), (-1, 1, 0, -1)])
def test_pad(pads):
    check("Pad", {"x": randn(3, 4)}, {"pads": pads, "mode": "constant", "value": 0.5})


def test_reflect_pad_is_refused():
    with pytest.raises(NotDifferentiableError, match="reflect"):
        check("Pad", {"x": randn(3, 4)}, {"pads": (1, 1, 1, 1), "mode": "reflect"})


@pytest.mark.parametrize("attrs", [
    {"mode": "nearest", "coordinate_mode": "asymmetric", "nearest_mode": "floor", "scales": (1.0, 1.0, 2.0, 2.0)},
    {"mode": "nearest", "coordinate_mode": "half_pixel", "scales": (1.0, 1.0, 0.5, 1.5)},
    {"mode": "linear", "coordinate_mode": "half_pixel", "scales": (1.0, 1.0, 2.0, 1.5)},
    {"mode": "linear", "coordinate_mode": "align_corners", "scales": (1.0, 2.0, 1.5, 1.0)},
    {"mode": "cubic", "coordinate_mode": "half_pixel", "scales": (1.0, 1.0, 2.0, 0.75), "cubic_coeff_a": -0.5,
     "exclude_outside": True},
], ids=["nearest-up", "nearest-mixed", "linear", "linear-align-corners", "cubic-exclude-outside"])
def test_resize(attrs):
    check("Resize", {"x": randn(1, 2, 4, 4)}, attrs)


@pytest.mark.parametrize("axis", [0, 1])
def test_gather(axis):
    check("Gather", {"x": randn(4, 3), "i": np.array([[0, 2], [2, -1]], np.int64)}, {"axis": axis}, wrt=["x"])


@pytest.mark.parametrize("upper,k", [(True, 0), (False, -1), (True, 2)])
def test_trilu(upper, k):
    check("Trilu", {"x": randn(2, 3, 4)}, {"upper": upper, "k": k})


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_cumsum(axis, exclusive, reverse):
    check("CumSum", {"x": randn(3, 4)}, {"axis": axis, "exclusive": exclusive, "reverse": reverse})


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_nd(reduction):
    check("ScatterND", {"x": randn(4, 3, 2), "i": np.array([[3, -1], [0, 1], [2, 0]], np.int64),
                        "u": randn(3, 2)}, {"reduction": reduction}, wrt=["x", "u"])


@pytest.mark.parametrize("reduction", ["none", "add"])
def test_scatter_elements(reduction):
    check("ScatterElements", {"x": randn(3, 4), "i": np.array([[0, -1], [2, 1], [3, 0]], np.int64),
                              "u": randn(3, 2)}, {"axis": 1, "reduction": reduction}, wrt=["x", "u"])


def test_op_without_a_rule_is_named():
    with pytest.raises(NotDifferentiableError, match="under_test.*Mod.*no gradient rule"):
        check("Mod", {"a": randn(3), "b": randn(3) + 5})


def test_rule_table_coverage():
    """The ops with a gradient rule, listed so a change to the table is a visible diff."""
    with_rule = sorted(name for name, entry in OPS.items() if entry.gradient is not None)
    for expected in ["Conv2D", "ConvTranspose2D", "FullyConnected", "BatchMatMul", "Add", "Mul", "Relu", "Softmax", "LogSoftmax",
                     "LayerNorm", "BatchNormTrain", "MaxPool2D", "AvgPool2D", "ReduceMean", "ReduceSum",
                     "Reshape", "Transpose", "Concat", "Split", "Slice", "Pad", "Gather", "Where", "Cast"]:
        assert expected in with_rule

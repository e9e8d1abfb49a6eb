"""Ops that select or accumulate along positions: Trilu, CumSum, ArgMax, ArgMin, TopK, GatherND,
ScatterND, ScatterElements.

Index outputs (ArgMax, ArgMin, TopK's indices) are int64 as ONNX declares them, kept so at the model
boundary; the runtime also accepts an int32 index output in a file. Axes are non-negative here (importers resolve
them); the schema keeps an int so a file may still carry a negative one, which the runtime resolves.
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.ArgOptions import ArgOptionsT
from converter.edgefb.CumSumOptions import CumSumOptionsT
from converter.edgefb.GatherNdOptions import GatherNdOptionsT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.ScatterOptions import ScatterOptionsT
from converter.edgefb.ScatterReduction import ScatterReduction
from converter.edgefb.TopKOptions import TopKOptionsT
from converter.edgefb.TriluOptions import TriluOptionsT
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import check_axis, fail, need, output_elements, zero_flops
from converter.ops.int8_reference import same_params_int8

NUMERIC_DTYPES = ("float32", "float16", "int32", "int64", "int8", "uint8")


def _numeric_input(op: str, t: TensorType, dtypes=NUMERIC_DTYPES) -> None:
    if t.dtype not in dtypes:
        fail(op, f"input has dtype {t.dtype}; expected one of {', '.join(dtypes)}")


# ---- Trilu ----

def _trilu_infer(types, attrs):
    need("Trilu", types, 1)
    x = types[0]
    if x.rank < 2:
        fail("Trilu", f"input {x.shape} needs rank >= 2")
    return [x]


def _trilu_reference(inputs, attrs):
    x, k = inputs[0], int(attrs.get("k", 0))
    return [np.triu(x, k) if attrs.get("upper", True) else np.tril(x, k)]


def _trilu_lower(attrs):
    options = TriluOptionsT()
    options.upper, options.k = bool(attrs.get("upper", True)), int(attrs.get("k", 0))
    return OpCode.TRILU, OpOptions.TriluOptions, options


register(OpDef(name="Trilu", infer=_trilu_infer, reference=_trilu_reference, lower=_trilu_lower,
               lift=lambda o: {"upper": bool(o.upper), "k": int(o.k)}, opcode=OpCode.TRILU,
               flops=zero_flops,
               # The mask is linear and fixed: dx is dy masked the same way.
               gradient=lambda g, node, dys: [g.emit("Trilu", [dys[0]], dict(node.attrs))]))


# ---- CumSum ----

def _cumsum_infer(types, attrs):
    need("CumSum", types, 1)
    x = types[0]
    _numeric_input("CumSum", x, ("float32", "int32", "int64"))
    check_axis("CumSum", attrs.get("axis", 0), x.rank)
    return [x]


def _cumsum_reference(inputs, attrs):
    """Sums (multiplies, with ``product``) in the input's dtype, one step at a time along the axis,
    as the runtime does (float32 arithmetic is not associative, so a pairwise sum would differ in
    the last bits)."""
    x = inputs[0]
    axis = attrs["axis"]
    moved = np.moveaxis(x, axis, 0)
    if attrs.get("reverse", False):
        moved = moved[::-1]
    y = np.zeros_like(moved)
    product = attrs.get("product", False)
    total = (np.ones if product else np.zeros)(moved.shape[1:], dtype=x.dtype)
    combine = np.multiply if product else np.add
    exclusive = attrs.get("exclusive", False)
    for i in range(moved.shape[0]):
        with np.errstate(over="ignore"):
            if exclusive:
                y[i] = total
                total = combine(total, moved[i])
            else:
                total = combine(total, moved[i])
                y[i] = total
    if attrs.get("reverse", False):
        y = y[::-1]
    return [np.ascontiguousarray(np.moveaxis(y, 0, axis))]


def _cumsum_lower(attrs):
    options = CumSumOptionsT()
    options.axis = int(attrs["axis"])
    options.exclusive, options.reverse = bool(attrs.get("exclusive", False)), bool(attrs.get("reverse", False))
    options.product = bool(attrs.get("product", False))
    return OpCode.CUMSUM, OpOptions.CumSumOptions, options


def _cumsum_grad(g, node, dys):
    """Each x[i] reaches every y it is summed into, so dx is the cumulative sum of dy the other
    way round (exclusive stays exclusive). A running product has no rule here: its gradient divides
    by x, which may be zero."""
    attrs = dict(node.attrs)
    if attrs.get("product", False):
        fail("CumSum", "no gradient rule for a running product (CumProd)")
    attrs["reverse"] = not attrs.get("reverse", False)
    return [g.emit("CumSum", [dys[0]], attrs)]


register(OpDef(name="CumSum", infer=_cumsum_infer, reference=_cumsum_reference, lower=_cumsum_lower,
               lift=lambda o: {"axis": int(o.axis), "exclusive": bool(o.exclusive), "reverse": bool(o.reverse),
                               **({"product": True} if o.product else {})},
               opcode=OpCode.CUMSUM, flops=output_elements, gradient=_cumsum_grad))


# ---- ArgMax, ArgMin ----

def _reduced_shape(shape, axis, keepdims):
    return shape[:axis] + ((1,) if keepdims else ()) + shape[axis + 1:]


def _arg(name: str, opcode: int, pick_max: bool) -> OpDef:
    def infer(types, attrs):
        need(name, types, 1)
        x = types[0]
        _numeric_input(name, x)
        axis = check_axis(name, attrs.get("axis", 0), x.rank)
        if x.shape[axis] == 0:
            fail(name, f"axis {axis} of {x.shape} is empty")
        return [TensorType("int64", _reduced_shape(x.shape, axis, attrs.get("keepdims", True)))]

    def reference(inputs, attrs):
        x, axis = inputs[0], attrs["axis"]
        find = np.argmax if pick_max else np.argmin
        if attrs.get("select_last_index", False):
            flipped = np.flip(x, axis=axis)
            index = x.shape[axis] - 1 - find(flipped, axis=axis)
        else:
            index = find(x, axis=axis)
        if attrs.get("keepdims", True):
            index = np.expand_dims(index, axis)
        return [np.asarray(index, dtype="int64")]

    def lower(attrs):
        options = ArgOptionsT()
        options.axis, options.keepdims = int(attrs["axis"]), bool(attrs.get("keepdims", True))
        options.selectLastIndex = bool(attrs.get("select_last_index", False))
        return opcode, OpOptions.ArgOptions, options

    return OpDef(name=name, infer=infer, reference=reference, lower=lower,
                 lift=lambda o: {"axis": int(o.axis), "keepdims": bool(o.keepdims),
                                 "select_last_index": bool(o.selectLastIndex)},
                 opcode=opcode, flops=lambda i, o, a: i[0].size if i[0].is_static else 0)


register(_arg("ArgMax", OpCode.ARG_MAX, True))
register(_arg("ArgMin", OpCode.ARG_MIN, False))


# ---- TopK ----

def _top_k_infer(types, attrs):
    op = "TopK"
    need(op, types, 1)
    x = types[0]
    _numeric_input(op, x)
    axis = check_axis(op, attrs.get("axis", x.rank - 1), x.rank)
    k = attrs.get("k")
    if not isinstance(k, (int, np.integer)) or k < 0:
        fail(op, f"k {k!r} must be a non-negative int")
    if isinstance(x.shape[axis], int) and k > x.shape[axis]:
        fail(op, f"k {k} exceeds axis {axis} of {x.shape}")
    shape = x.shape[:axis] + (int(k),) + x.shape[axis + 1:]
    return [TensorType(x.dtype, shape), TensorType("int64", shape)]


def top_k_order(row: np.ndarray, largest: bool) -> np.ndarray:
    """Positions of one row best first; equal values keep their order (lower index first). Sorting
    the values' ranks, not the values, lets "largest" negate without overflowing an integer."""
    _, rank = np.unique(row, return_inverse=True)
    rank = rank.reshape(-1).astype(np.int64)
    return np.argsort(-rank if largest else rank, kind="stable")


def _top_k_reference(inputs, attrs):
    x = inputs[0]
    axis, k = attrs.get("axis", x.ndim - 1), int(attrs["k"])
    largest = attrs.get("largest", True)
    moved = np.moveaxis(x, axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    orders = np.zeros((len(rows), k), np.int64)
    for r, row in enumerate(rows):
        orders[r] = top_k_order(row, largest)[:k]
    orders = orders.reshape(moved.shape[:-1] + (k,)).astype(np.int64)
    values = np.take_along_axis(moved, orders, axis=-1)
    return [np.ascontiguousarray(np.moveaxis(values, -1, axis)),
            np.ascontiguousarray(np.moveaxis(orders, -1, axis))]


def _top_k_lower(attrs):
    options = TopKOptionsT()
    options.k, options.axis = int(attrs["k"]), int(attrs["axis"])
    options.largest, options.sorted = bool(attrs.get("largest", True)), bool(attrs.get("sorted", True))
    return OpCode.TOP_K, OpOptions.TopKOptions, options


register(OpDef(name="TopK", infer=_top_k_infer, reference=_top_k_reference, lower=_top_k_lower,
               lift=lambda o: {"k": int(o.k), "axis": int(o.axis), "largest": bool(o.largest),
                               "sorted": bool(o.sorted)},
               opcode=OpCode.TOP_K, flops=lambda i, o, a: i[0].size if i[0].is_static else 0))


# ---- GatherND ----

def _gather_nd_infer(types, attrs):
    op = "GatherND"
    need(op, types, 2)
    x, indices = types
    if indices.dtype not in ("int32", "int64"):
        fail(op, f"indices have dtype {indices.dtype}; expected int32 or int64")
    b = attrs.get("batch_dims", 0)
    if not isinstance(b, (int, np.integer)) or not 0 <= b < min(x.rank, indices.rank):
        fail(op, f"batch_dims {b} must be in [0, {min(x.rank, indices.rank)})")
    k = indices.shape[-1]
    if not isinstance(k, int) or not 1 <= k <= x.rank - b:
        fail(op, f"index tuples of {k} entries do not fit {x.shape} past {b} batch dims")
    if tuple(x.shape[:b]) != tuple(indices.shape[:b]):
        fail(op, f"batch dims of {x.shape} and indices {indices.shape} differ")
    return [TensorType(x.dtype, tuple(indices.shape[:-1]) + tuple(x.shape[b + k:]))]


def _gather_nd_reference(inputs, attrs):
    x, indices = inputs
    b = attrs.get("batch_dims", 0)
    k = indices.shape[-1]
    dims = np.array(x.shape[b:b + k], np.int64)
    idx = np.asarray(indices).astype(np.int64)
    if idx.size and (np.any(idx < -dims) or np.any(idx >= dims)):
        fail("GatherND", f"an index is out of range for dims {tuple(dims)}")
    idx = np.where(idx < 0, idx + dims, idx)
    batch_shape = x.shape[:b]
    rows = x.reshape((int(np.prod(batch_shape, dtype=np.int64)),) + x.shape[b:])
    tuples = idx.reshape(rows.shape[0], -1, k)
    picked = np.stack([rows[n][tuple(tuples[n].T)] for n in range(rows.shape[0])]) if rows.shape[0] else \
        np.zeros((0, tuples.shape[1]) + x.shape[b + k:], x.dtype)
    return [np.ascontiguousarray(picked.reshape(tuple(indices.shape[:-1]) + x.shape[b + k:]))]


def _gather_nd_lower(attrs):
    options = GatherNdOptionsT()
    options.batchDims = int(attrs.get("batch_dims", 0))
    return OpCode.GATHER_ND, OpOptions.GatherNdOptions, options


register(OpDef(name="GatherND", infer=_gather_nd_infer, reference=_gather_nd_reference, lower=_gather_nd_lower,
               lift=lambda o: {"batch_dims": int(o.batchDims)}, opcode=OpCode.GATHER_ND, flops=zero_flops,
               int8=same_params_int8("GatherND"), int8_role="follow", int8_inputs=(0,)))


# ---- ScatterND, ScatterElements ----

SCATTER_REDUCTIONS = {"none": ScatterReduction.NONE, "add": ScatterReduction.ADD, "mul": ScatterReduction.MUL,
                      "max": ScatterReduction.MAX, "min": ScatterReduction.MIN}
_COMBINE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter_common(op, types, attrs):
    need(op, types, 3)
    x, indices, updates = types
    if indices.dtype not in ("int32", "int64"):
        fail(op, f"indices have dtype {indices.dtype}; expected int32 or int64")
    if updates.dtype != x.dtype:
        fail(op, f"updates are {updates.dtype} but data is {x.dtype}")
    reduction = attrs.get("reduction", "none")
    if reduction not in SCATTER_REDUCTIONS:
        fail(op, f"reduction {reduction!r} is not one of {', '.join(SCATTER_REDUCTIONS)}")
    if reduction != "none" and x.dtype not in ("float32", "int32", "int64"):
        fail(op, f"reduction {reduction!r} on {x.dtype}; float32, int32 and int64 only")
    return x, indices, updates


def _scatter_nd_infer(types, attrs):
    op = "ScatterND"
    x, indices, updates = _scatter_common(op, types, attrs)
    k = indices.shape[-1] if indices.rank else 0
    if not isinstance(k, int) or not 1 <= k <= x.rank:
        fail(op, f"index tuples of {k} entries do not fit data {x.shape}")
    want = tuple(indices.shape[:-1]) + tuple(x.shape[k:])
    if tuple(updates.shape) != want:
        fail(op, f"updates {updates.shape} must be indices.shape[:-1] + data.shape[{k}:] = {want}")
    return [x]


def _combine_one(y, position, value, reduction):
    """One update, applied in place: written, or combined in the data's dtype (integers wrap)."""
    if reduction == "none":
        y[position] = value
    else:
        with np.errstate(over="ignore"):
            y[position] = _COMBINE[reduction](y[position], value)


def _scatter_nd_reference(inputs, attrs):
    """Updates applied one tuple at a time in index order, as the runtime does, so duplicate tuples
    give the same result."""
    x, indices, updates = inputs
    k = indices.shape[-1]
    dims = np.array(x.shape[:k], np.int64)
    tuples = np.asarray(indices).astype(np.int64).reshape(-1, k)
    if tuples.size and (np.any(tuples < -dims) or np.any(tuples >= dims)):
        fail("ScatterND", f"an index is out of range for dims {tuple(dims)}")
    tuples = np.where(tuples < 0, tuples + dims, tuples)
    rows = updates.reshape((tuples.shape[0],) + x.shape[k:])
    y = np.array(x, copy=True)
    reduction = attrs.get("reduction", "none")
    for t, row in zip(tuples, rows):
        _combine_one(y, tuple(t), row, reduction)
    return [y]


def _scatter_lower(opcode):
    def lower(attrs):
        options = ScatterOptionsT()
        options.axis = int(attrs.get("axis", 0))
        options.reduction = SCATTER_REDUCTIONS[attrs.get("reduction", "none")]
        return opcode, OpOptions.ScatterOptions, options
    return lower


def _scatter_lift(with_axis):
    names = {v: k for k, v in SCATTER_REDUCTIONS.items()}
    return lambda o: ({"axis": int(o.axis)} if with_axis else {}) | {"reduction": names[int(o.reduction)]}


def _scatter_grad(gather_op, gather_attrs):
    """Without a reduction the written positions take their gradient from the updates and the rest
    from data; with add, data's gradient is dy everywhere. The updates' gradient is dy gathered at
    their positions (for duplicates under "none" that is what a later write shadows: undefined in
    ONNX too). mul, max and min have no rule."""
    def rule(g, node, dys):
        reduction = node.attrs.get("reduction", "none")
        if reduction not in ("none", "add"):
            g.fail(f"no gradient for reduction {reduction!r}")
        dy = dys[0]
        x, indices, updates = node.inputs
        d_updates = g.emit(gather_op, [dy, indices], gather_attrs(node.attrs)) if g.wants(2) else None
        d_x = None
        if g.wants(0):
            d_x = dy if reduction == "add" else g.emit(node.op, [dy, indices, g.zeros_like(updates)],
                                                       dict(node.attrs))
        return [d_x, None, d_updates]
    return rule


register(OpDef(name="ScatterND", infer=_scatter_nd_infer, reference=_scatter_nd_reference,
               lower=_scatter_lower(OpCode.SCATTER_ND), lift=_scatter_lift(False), opcode=OpCode.SCATTER_ND,
               flops=zero_flops, gradient=_scatter_grad("GatherND", lambda attrs: {"batch_dims": 0})))


def _scatter_elements_infer(types, attrs):
    op = "ScatterElements"
    x, indices, updates = _scatter_common(op, types, attrs)
    axis = check_axis(op, attrs.get("axis", 0), x.rank)
    if indices.rank != x.rank or tuple(updates.shape) != tuple(indices.shape):
        fail(op, f"indices {indices.shape} and updates {updates.shape} must have one shape of data {x.shape}'s rank")
    for d, (i, n) in enumerate(zip(indices.shape, x.shape)):
        if d != axis and isinstance(i, int) and isinstance(n, int) and i > n:
            fail(op, f"indices {indices.shape} exceed data {x.shape} on axis {d}")
    return [x]


def _scatter_elements_reference(inputs, attrs):
    x, indices, updates = inputs
    axis = attrs["axis"]
    dim = x.shape[axis]
    idx = np.asarray(indices).astype(np.int64)
    if idx.size and (np.any(idx < -dim) or np.any(idx >= dim)):
        fail("ScatterElements", f"an index is out of range for axis {axis} of size {dim}")
    idx = np.where(idx < 0, idx + dim, idx)
    y = np.array(x, copy=True)
    reduction = attrs.get("reduction", "none")
    for position in np.ndindex(idx.shape):
        target = position[:axis] + (int(idx[position]),) + position[axis + 1:]
        _combine_one(y, target, updates[position], reduction)
    return [y]


register(OpDef(name="ScatterElements", infer=_scatter_elements_infer, reference=_scatter_elements_reference,
               lower=_scatter_lower(OpCode.SCATTER_ELEMENTS), lift=_scatter_lift(True),
               opcode=OpCode.SCATTER_ELEMENTS, flops=zero_flops,
               gradient=_scatter_grad("GatherElements", lambda attrs: {"axis": attrs["axis"]})))

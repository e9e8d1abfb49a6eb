"""ONNX Einsum lowered at import to the IR's ReduceSum, Transpose, Reshape and BatchMatMul.

Every operand's subscripts are parsed into labels (letters; an ellipsis becomes one label per
broadcast dim, right-aligned across operands as numpy does). Operands are contracted pairwise from
the left. For one pair, a label that neither the other operand nor anything later (the output, the
operands still to come) reads is summed out first; the rest sort into batch labels (both operands,
still needed), contracted labels (both, no longer needed), left labels (first operand only) and
right labels (second only). The pair is then one BatchMatMul of [batch..., L, K] by
[batch..., K, R], with L, K and R the products of the left, contracted and right sizes; batch dims
stay separate so size-1 ellipsis dims broadcast. The matmul's transpose flags absorb an operand
already ordered [batch..., K, L] (attention's ``bhid,bhjd->bhij`` needs no Transpose node). A
constant second operand without batch labels (``bsh,hd->bsd``) becomes a FullyConnected weight.
Integer operands (the runtime's matmul is float32 only) multiply as a broadcast Mul summed by
ReduceSum instead.

A label repeated inside one operand (a diagonal, ``ii->i``, or a trace, ``ii->``) is refused, as are
operands with dims that do not match; the ConversionError names the equation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ConversionError

LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class EinsumPlan:
    """The parsed equation: each operand's labels (one per dim) and the output's labels."""
    operands: tuple[tuple[str, ...], ...]
    output: tuple[str, ...]


def _split_terms(term: str, where: str) -> tuple[list[str], bool]:
    """A subscript string -> its letter labels with "..." kept as one marker, and whether it had one."""
    labels, k, ellipsis = [], 0, False
    while k < len(term):
        if term.startswith("...", k):
            if ellipsis:
                raise ConversionError(f"{where}: a term has two ellipses")
            labels.append("...")
            ellipsis = True
            k += 3
        elif term[k] in LETTERS:
            labels.append(term[k])
            k += 1
        else:
            raise ConversionError(f"{where}: {term[k]!r} is not a subscript letter")
    return labels, ellipsis


def parse_einsum(equation: str, ranks: list[int]) -> EinsumPlan:
    """Labels for every dim of every operand and of the output; ellipsis dims get the labels
    "0", "1", ... counted from the right, so broadcast dims line up."""
    where = f"Einsum equation {equation!r}"
    text = equation.replace(" ", "")
    if text.count("->") > 1:
        raise ConversionError(f"{where}: more than one '->'")
    inputs_text, arrow, output_text = text.partition("->")
    terms = inputs_text.split(",")
    if len(terms) != len(ranks):
        raise ConversionError(f"{where}: {len(terms)} terms for {len(ranks)} inputs")
    operands, ellipsis_rank = [], 0
    for term, rank in zip(terms, ranks):
        labels, has_ellipsis = _split_terms(term, where)
        letters = len(labels) - has_ellipsis
        extra = rank - letters
        if extra < 0 or (extra and not has_ellipsis):
            raise ConversionError(f"{where}: term {term!r} does not fit an input of rank {rank}")
        ellipsis_rank = max(ellipsis_rank, extra)
        expanded = []
        for label in labels:
            expanded.extend(str(k) for k in range(extra - 1, -1, -1)) if label == "..." else expanded.append(label)
        operands.append(tuple(expanded))
    for labels, term in zip(operands, terms):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ConversionError(f"{where}: label {repeated[0]!r} repeats within term {term!r} (a diagonal or "
                                  f"trace); only equations each of whose terms names a dim once are lowered")
    ellipsis_labels = tuple(str(k) for k in range(ellipsis_rank - 1, -1, -1))
    if arrow:
        labels, has_ellipsis = _split_terms(output_text, where)
        output = []
        for label in labels:
            output.extend(ellipsis_labels) if label == "..." else output.append(label)
        if ellipsis_rank and not has_ellipsis:
            raise ConversionError(f"{where}: the inputs' ellipsis dims must appear in the output")
    else:
        counts: dict[str, int] = {}
        for labels in operands:
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        output = list(ellipsis_labels) + sorted(l for l, n in counts.items() if n == 1 and l in LETTERS)
    known = {label for labels in operands for label in labels}
    for label in output:
        if label not in known:
            raise ConversionError(f"{where}: output label {label!r} names no input dim")
    if len(set(output)) != len(output):
        raise ConversionError(f"{where}: the output names a label twice")
    return EinsumPlan(tuple(operands), tuple(output))


def _check_sizes(plan: EinsumPlan, shapes: list[tuple], where: str) -> None:
    """Every label has one size in all operands; ellipsis labels may also be 1 (they broadcast)."""
    sizes: dict[str, int] = {}
    for labels, shape in zip(plan.operands, shapes):
        for label, dim in zip(labels, shape):
            if not isinstance(dim, (int, np.integer)):
                raise ConversionError(f"{where}: dim {label!r} is symbolic ({dim}); static shapes only")
            known = sizes.setdefault(label, int(dim))
            if dim == known:
                continue
            if label in LETTERS or 1 not in (known, dim):
                raise ConversionError(f"{where}: label {label!r} has sizes {known} and {dim}")
            sizes[label] = max(known, int(dim))


def _transpose(ctx, name: str, labels: tuple, order: tuple) -> str:
    if labels == order:
        return name
    return ctx.emit1("Transpose", [name], {"perm": tuple(labels.index(label) for label in order)})


def _sum_out(ctx, name: str, labels: tuple, keep: set) -> tuple[str, tuple]:
    axes = tuple(k for k, label in enumerate(labels) if label not in keep)
    if not axes:
        return name, labels
    name = ctx.emit1("ReduceSum", [name], {"axes": axes, "keepdims": False})
    return name, tuple(label for label in labels if label in keep)


def _contract(ctx, a: str, a_labels: tuple, b: str, b_labels: tuple, needed: set) -> tuple[str, tuple]:
    """a times b summed over the labels ``needed`` does not hold; returns the product and its labels,
    ordered batch, left, right."""
    a, a_labels = _sum_out(ctx, a, a_labels, needed | set(b_labels))
    b, b_labels = _sum_out(ctx, b, b_labels, needed | set(a_labels))
    a_dims = dict(zip(a_labels, (int(d) for d in ctx.shape(a))))
    b_dims = dict(zip(b_labels, (int(d) for d in ctx.shape(b))))
    batch = tuple(l for l in a_labels if l in b_labels and l in needed)
    contracted = tuple(l for l in a_labels if l in b_labels and l not in needed)
    left = tuple(l for l in a_labels if l not in b_labels)
    right = tuple(l for l in b_labels if l not in a_labels)
    size = lambda dims, labels: int(np.prod([dims[l] for l in labels], dtype=np.int64))
    left_size, right_size, inner = size(a_dims, left), size(b_dims, right), size(a_dims, contracted)
    result_shape = (tuple(max(a_dims[l], b_dims[l]) for l in batch) + tuple(a_dims[l] for l in left)
                    + tuple(b_dims[l] for l in right))
    weight = ctx.const(b)
    if not batch and weight is not None and ctx.type(a).dtype == "float32":
        # A constant second operand with no batch labels is a layer's weight: FullyConnected
        # packs it once at prepare.
        a = ctx.reshape(_transpose(ctx, a, a_labels, left + contracted), (left_size, inner))
        order = tuple(b_labels.index(l) for l in right + contracted)
        w = ctx.constant(np.ascontiguousarray(np.transpose(weight, order).reshape(right_size, inner)),
                         base="weight")
        y = ctx.emit1("FullyConnected", [a, w, ""])
        return ctx.reshape(y, result_shape), left + right
    if ctx.type(a).dtype != "float32":
        # The runtime's matmul is float32 only; integers multiply exactly as a broadcast Mul of
        # [batch..., L, K, 1] by [batch..., 1, K, R], summed over K.
        a = _transpose(ctx, a, a_labels, batch + left + contracted)
        b = _transpose(ctx, b, b_labels, batch + contracted + right)
        a = ctx.reshape(a, tuple(a_dims[l] for l in batch) + (left_size, inner, 1))
        b = ctx.reshape(b, tuple(b_dims[l] for l in batch) + (1, inner, right_size))
        product = ctx.emit1("Mul", [a, b])
        y = ctx.emit1("ReduceSum", [product], {"axes": (len(batch) + 1,), "keepdims": False})
        return ctx.reshape(y, result_shape), batch + left + right
    transpose_a = a_labels == batch + contracted + left and a_labels != batch + left + contracted
    a = _transpose(ctx, a, a_labels, batch + (contracted + left if transpose_a else left + contracted))
    transpose_b = b_labels == batch + right + contracted and b_labels != batch + contracted + right
    b = _transpose(ctx, b, b_labels, batch + (right + contracted if transpose_b else contracted + right))
    a_mat = (inner, left_size) if transpose_a else (left_size, inner)
    b_mat = (right_size, inner) if transpose_b else (inner, right_size)
    a = ctx.reshape(a, tuple(a_dims[l] for l in batch) + a_mat)
    b = ctx.reshape(b, tuple(b_dims[l] for l in batch) + b_mat)
    y = ctx.emit1("BatchMatMul", [a, b], {"transpose_a": transpose_a, "transpose_b": transpose_b})
    return ctx.reshape(y, result_shape), batch + left + right


def lower_einsum(ctx) -> None:
    """Emits the IR for the Einsum node ``ctx`` describes (NodeContext of the ONNX importer)."""
    equation = str(ctx.attr("equation"))
    where = f"node {ctx.name!r} (Einsum): equation {equation!r}"
    names = ctx.inputs
    shapes = [ctx.shape(name) for name in names]
    try:
        plan = parse_einsum(equation, [len(s) for s in shapes])
        _check_sizes(plan, shapes, f"Einsum equation {equation!r}")
    except ConversionError as exc:
        raise ConversionError(f"node {ctx.name!r} (Einsum): {exc}") from None
    dtypes = {ctx.type(name).dtype for name in names}
    if len(dtypes) != 1:
        raise ConversionError(f"{where}: inputs have different dtypes {sorted(dtypes)}")
    output = set(plan.output)
    name, labels = names[0], plan.operands[0]
    for k in range(1, len(names)):
        later = output.union(*plan.operands[k + 1:])
        name, labels = _contract(ctx, name, labels, names[k], plan.operands[k], later)
    name, labels = _sum_out(ctx, name, labels, output)
    name = _transpose(ctx, name, labels, plan.output)
    ctx.copy_to(name, ctx.output(0))

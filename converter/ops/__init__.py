"""The op table: one declarative entry per IR op.

Every consumer reads this table instead of keeping its own ``if op == ...`` chain:
shape inference (``infer``), the NumPy reference executor (``reference``), the FlatBuffer writer
(``lower``) and reader (``lift``), the cost metadata (``flops``), the layout pass
(``layout``), autodiff (``gradient``), and the int8 and dynamic forms (``int8``,
``int8_role``, ``dynamic`` ...: the quantization passes and the integer reference executor).

An op's entry lives in the module of its family (``converter/ops/elementwise.py``, ``nn.py``, ...);
importing this package registers them all. ``OPS[name]`` is the entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from converter.ir import TensorType

Attrs = Mapping[str, Any]


@dataclass(frozen=True)
class OpDef:
    name: str
    # (input types, attrs) -> output types. Inputs left out ("") arrive as None.
    infer: Callable[[Sequence[TensorType | None], Attrs], list[TensorType]]
    # (input arrays, attrs) -> output arrays; the semantic oracle. Layout-sensitive ops honour
    # attrs["layout"] ("NCHW" or "NHWC").
    reference: Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]]
    # attrs -> (schema OpCode, OpOptions union type, options object or None) for the writer.
    lower: Callable[[Attrs], tuple[int, int, Any]]
    # (options object or None) -> attrs, for the reader. ``lift_key`` picks the entry when several
    # IR ops share an opcode (BINARY/UNARY/REDUCE: the options' ``op`` field).
    lift: Callable[[Any], dict]
    opcode: int
    lift_key: int | None = None
    # (input types, output types, attrs) -> multiply-adds * 2 (or elementwise op count).
    flops: Callable[[Sequence[TensorType | None], Sequence[TensorType], Attrs], int] | None = None
    # True: the op has a data layout (attrs["layout"]) that the layout pass converts to NHWC.
    layout_sensitive: bool = False
    # True: elementwise with numpy broadcasting (transpose-cancellation can move through it).
    elementwise: bool = False
    # True: the op may carry a fused activation (attrs["activation"] = (unary op name, alpha, beta)).
    fusable: bool = False
    # (GradContext, node, output gradient names or None) -> input gradient names or None, aligned
    # with node.inputs (converter/autodiff). None: the op has no gradient rule.
    gradient: Callable | None = None
    # (input arrays, attrs) -> {input index: new value} for the inputs the op overwrites in place
    # (variables: optimizer state, running statistics); the reference executor writes them back.
    updates: Callable[[Sequence[np.ndarray | None], Attrs], dict[int, np.ndarray]] | None = None
    # True: output 0's leading dim in the op's type is the most rows it can give; the reference
    # returns the real rows and the runtime sets the real count at invoke (NonMaxSuppression), so
    # no other node may read that output.
    rows_set_at_eval: bool = False
    # The integer reference of the op's int8 form (converter.ops.int8_reference): int8 in and out,
    # attrs["quantization"] = (input params, output params). None: no int8 kernel.
    int8: Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]] | None = None
    # How int8 mode (converter.quantize.int8) treats the op: "compute" (int8 with output params
    # of its own, calibrated), "table" (compute through a [256] lookup table the converter adds as
    # the last input), "follow" (moves bytes: int8 only when its data input already is; outputs
    # keep that input's params). None: it stays float.
    int8_role: str | None = None
    # (graph, node) -> why int8 mode keeps this node float, or None where it may be int8.
    int8_condition: Callable[[Any, Any], str | None] | None = None
    # The input slots int8 mode reads as int8 (the first is a follow op's data input); None:
    # every input except the bias.
    int8_inputs: tuple[int, ...] | None = None
    # Input slots of the weights (int8 per output channel) and the bias (int32 in int8 mode).
    weight_slot: int | None = None
    bias_slot: int | None = None
    # The integer reference of the dynamic form: float activations, int8 weights at input 1
    # (converter.quantize.dynamic). None: no dynamic kernel.
    dynamic: Callable[[Sequence[np.ndarray | None], Attrs], list[np.ndarray]] | None = None


OPS: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in OPS:
        raise ValueError(f"op {op.name} registered twice")
    OPS[op.name] = op
    return op


def lookup(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"no IR op named {name!r}") from None


from converter.ops import (  # noqa: E402,F401  (registers the ops)
    elementwise, nn, shape_ops, rnn, quantization, training, indexing, detection, attention, sampling, linalg)

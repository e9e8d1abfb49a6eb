"""Running one side of a split on an edge.Interpreter without reading memory the arena has reused.

The runtime plans one arena for the whole graph in op order: a tensor's bytes are only guaranteed
from the op that produces it to its last reader. A split that is not a prefix of the op order (a DAG
cut, e.g. a skip connection kept on the device) breaks the naive "set every input, run the ops" in
two ways, and both are handled here:

- a side must copy out each tensor it hands over as soon as its producer has run (``run_capturing``):
  a later op of the same side may be planned into its bytes once its last reader (on the other side)
  has passed in op order;
- a side must set each tensor it receives only when the ops it runs have reached that tensor's
  producer in op order (``run_with_provided``): an earlier op may still be using those bytes.

Both walk the ops in ascending order, which is also a topological order (the writer emits ops sorted).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def run_capturing(interpreter, ops: Sequence[int], capture: Sequence[int], producer: Mapping[int, int],
                  provided: Mapping[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Runs ``ops`` (ascending) and returns a copy of each ``capture`` tensor taken right after its
    producer ran; captured tensors without a producer among ``ops`` come from ``provided``."""
    provided = dict(provided or {})
    captured: dict[int, np.ndarray] = {}
    due: dict[int, list[int]] = {}
    for t in capture:
        if t in provided:
            captured[t] = provided[t]
        else:
            due.setdefault(producer[t], []).append(t)
    run_with_provided(interpreter, ops, provided, producer, after_op=due, captured=captured)
    missing = [t for t in capture if t not in captured]
    if missing:
        raise ValueError(f"tensors {missing} are neither provided nor produced by the ops run")
    return captured


def run_with_provided(interpreter, ops: Sequence[int], provided: Mapping[int, np.ndarray],
                      producer: Mapping[int, int], *, after_op: Mapping[int, list[int]] | None = None,
                      captured: dict[int, np.ndarray] | None = None) -> None:
    """Runs ``ops`` in ascending order, setting each provided tensor just before the first op whose
    index is past the tensor's producer (graph inputs: before everything)."""
    ops = sorted(ops)
    after_op = after_op or {}
    pending = sorted(provided, key=lambda t: producer.get(t, -1))
    segment: list[int] = []

    def flush() -> None:
        if segment:
            interpreter.invoke_ops(segment)
            segment.clear()

    for op in ops:
        while pending and producer.get(pending[0], -1) < op:
            flush()
            t = pending.pop(0)
            interpreter.set_tensor(t, provided[t])
        segment.append(op)
        if op in after_op:
            flush()
            for t in after_op[op]:
                captured[t] = interpreter.get_tensor(t)
    flush()

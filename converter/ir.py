"""The converter's intermediate representation.

Graphs are values: a pass takes a Graph and returns a new one (``graph.replace(...)``), never
mutating its argument. Nodes are immutable; their ``attrs`` mapping is treated as immutable too.

Tensors are named. ``Graph.tensors`` holds the type (dtype + shape) of every value, graph inputs
and outputs included; ``Graph.constants`` holds the data of constant tensors (weights);
``Graph.variables`` names the constants that are mutable at run time (trainable weights).
Shapes are tuples of ints; a dimension may be a string (a symbolic dim, e.g. "batch") until the
graph is made static.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool", "float64",
          "int16", "uint16", "uint32", "uint64", "bfloat16",
          "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
          "float4_e2m1fn", "int4", "uint4", "int2", "uint2")
# Dtypes stored below a byte per element: a tensor holds ceil(size * bits / 8) bytes.
PACKED_BITS = {"float4_e2m1fn": 4, "int4": 4, "uint4": 4, "int2": 2, "uint2": 2}
# Names NumPy knows only once ml_dtypes is imported (one byte per element there, packed or not).
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu",
              "float4_e2m1fn", "int4", "uint4", "int2", "uint2")


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of an IR dtype name (ml_dtypes' types for bfloat16, float8, float4, int4, int2)."""
    if name in _ML_DTYPES:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)
Dim = int | str


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        if self.dtype in PACKED_BITS:
            return (self.size * PACKED_BITS[self.dtype] + 7) // 8
        return self.size * numpy_dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Quantization:
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[str, ...]            # "" marks an optional input left out
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", dict(self.attrs))

    def with_(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)

    def __hash__(self):
        return hash((self.op, self.inputs, self.outputs, self.name))


@dataclass(frozen=True)
class Signature:
    """A named entry point: input/output names -> tensor names. ``nodes`` (indices into
    Graph.nodes) lists what it runs; None means every node its outputs need."""
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    nodes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tensors: Mapping[str, TensorType]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    variables: frozenset[str] = frozenset()
    quantization: Mapping[str, Quantization] = field(default_factory=dict)
    name: str = "main"
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Signatures written into the file; empty means one "infer" over inputs/outputs.
    signatures: Mapping[str, Signature] = field(default_factory=dict)
    # Graph input -> the axes that were symbolic in the source model (written as -1 in the
    # tensor's shape_signature so the runtime may resize them).
    dynamic_dims: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "tensors", dict(self.tensors))
        object.__setattr__(self, "constants", dict(self.constants))
        object.__setattr__(self, "variables", frozenset(self.variables))
        object.__setattr__(self, "quantization", dict(self.quantization))
        object.__setattr__(self, "metadata", dict(self.metadata))
        object.__setattr__(self, "signatures", dict(self.signatures))
        object.__setattr__(self, "dynamic_dims", dict(self.dynamic_dims))

    def replace(self, **changes) -> "Graph":
        return dataclasses.replace(self, **changes)

    # ---- queries ----
    def producers(self) -> dict[str, Node]:
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    users.setdefault(i, []).append(n)
        return users

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return counts

    def is_constant(self, name: str) -> bool:
        return name in self.constants and name not in self.variables

    def unique_name(self, base: str) -> str:
        taken = set(self.tensors) | {n.name for n in self.nodes}
        if base not in taken:
            return base
        k = 1
        while f"{base}_{k}" in taken:
            k += 1
        return f"{base}_{k}"

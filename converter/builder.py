"""Graphs written in Python.

    b = GraphBuilder()
    x = b.input("x", (1, 8))
    w = b.constant("w", np.ones((4, 8), np.float32))
    y = b.FullyConnected(x, w, activation=("Relu", 0.0, 0.0))
    b.output(y, name="y")
    graph = b.build()

Every IR op in converter.ops.OPS is available as ``b.op("Name", *inputs, **attrs)`` and as the
method ``b.Name(*inputs, **attrs)``; output types come from the op's shape rule. NumPy arrays
and Python numbers given as inputs become constants. A single-output op returns its tensor
name, a multi-output op (Split, LSTM, GRU) a tuple of names.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph, Node, Signature, TensorType
from converter.ops import OPS

TensorLike = str | np.ndarray | int | float


class GraphBuilder:
    def __init__(self, name: str = "main"):
        self.name = name
        self._nodes: list[Node] = []
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._tensors: dict[str, TensorType] = {}
        self._constants: dict[str, np.ndarray] = {}
        self._variables: set[str] = set()
        self._dynamic_dims: dict[str, tuple[int, ...]] = {}
        self._signatures: dict[str, Signature] = {}
        self._metadata: dict[str, str] = {"source": "builder"}
        self._counters: dict[str, int] = {}
        # Names given away by output(t, name=...) -> the name the tensor has now, so handles the
        # caller already holds keep working.
        self._renamed: dict[str, str] = {}

    def _fresh(self, base: str) -> str:
        base = base or "t"
        k = self._counters.get(base, 0)
        name = base if k == 0 and base not in self._tensors else None
        while name is None or name in self._tensors:
            k += 1
            name = f"{base}_{k}"
        self._counters[base] = k
        return name

    def _claim(self, name: str) -> str:
        if name in self._tensors:
            raise ConversionError(f"tensor {name!r} already exists in the graph being built")
        return name

    def type_of(self, name: str) -> TensorType:
        return self._tensors[self._renamed.get(name, name)]

    def input(self, name: str, shape: Sequence[int], dtype: str = "float32",
              dynamic_axes: Iterable[int] = ()) -> str:
        """A graph input. ``dynamic_axes`` are written as -1 in the file's shape signature."""
        self._tensors[self._claim(name)] = TensorType(dtype, tuple(int(d) for d in shape))
        self._inputs.append(name)
        if tuple(dynamic_axes):
            self._dynamic_dims[name] = tuple(dynamic_axes)
        return name

    def constant(self, name: str | None, value, dtype: str | None = None) -> str:
        array = np.asarray(value)
        if dtype is None and array.dtype == np.float64:
            dtype = "float32"
        if dtype is not None:
            array = array.astype(dtype)
        name = self._claim(name) if name else self._fresh("const")
        self._constants[name] = np.asarray(array, order="C")
        self._tensors[name] = TensorType(str(array.dtype), array.shape)
        return name

    def variable(self, name: str, value, dtype: str | None = None) -> str:
        """A constant the runtime may change (trainable weights, optimizer state)."""
        name = self.constant(name, value, dtype)
        self._variables.add(name)
        return name

    def _as_tensor(self, value: TensorLike | None) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            value = self._renamed.get(value, value)
            if value and value not in self._tensors:
                raise ConversionError(f"unknown tensor {value!r}")
            return value
        return self.constant(None, value)

    def op(self, op: str, *inputs: TensorLike | None, name: str | None = None,
           outputs: Sequence[str] | None = None, **attrs):
        """Adds one ``op`` node; returns its output name (or a tuple for multi-output ops)."""
        if op not in OPS:
            raise ConversionError(f"no IR op named {op!r}")
        input_names = [self._as_tensor(v) for v in inputs]
        types = [self._tensors[i] if i else None for i in input_names]
        attrs = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items()}
        try:
            out_types = list(OPS[op].infer(types, attrs))
        except Exception as exc:
            where = f"{op} {name!r}" if name else op
            message = str(exc)
            raise ConversionError(message if message.startswith(op) and not name else f"{where}: {message}") from exc
        base = name or op.lower()
        if outputs is not None:
            if len(outputs) != len(out_types):
                raise ConversionError(f"{op} has {len(out_types)} outputs, {len(outputs)} names given")
            out_names = [self._claim(o) for o in outputs]
        elif len(out_types) == 1:
            out_names = [self._fresh(base)]
        else:
            out_names = [self._fresh(f"{base}_{k}") for k in range(len(out_types))]
        for out, t in zip(out_names, out_types):
            self._tensors[out] = t
        self._nodes.append(Node(op, tuple(input_names), tuple(out_names), attrs, name=name or out_names[0]))
        return out_names[0] if len(out_names) == 1 else tuple(out_names)

    def op_multi(self, op: str, *inputs: TensorLike | None, **kw) -> tuple[str, ...]:
        """Like ``op`` but always returns a tuple of output names."""
        result = self.op(op, *inputs, **kw)
        return result if isinstance(result, tuple) else (result,)

    def output(self, tensor: str, name: str | None = None) -> str:
        """Marks ``tensor`` as a graph output, optionally under another name (the producing
        node's output is renamed, and the old name keeps referring to it; graph inputs and
        constants get an Identity)."""
        tensor = self._renamed.get(tensor, tensor)
        if tensor not in self._tensors:
            raise ConversionError(f"unknown tensor {tensor!r}")
        if name is None or name == tensor:
            self._outputs.append(tensor)
            return tensor
        self._claim(name)
        produced = any(tensor in n.outputs for n in self._nodes)
        if produced and tensor not in self._outputs:
            self._rename(tensor, name)
        else:
            self.op("Identity", tensor, outputs=[name])
        self._outputs.append(name)
        return name

    def _rename(self, old: str, new: str) -> None:
        self._renamed = {k: new if v == old else v for k, v in self._renamed.items()}
        self._renamed[old] = new
        self._tensors[new] = self._tensors.pop(old)
        swap = lambda names: tuple(new if x == old else x for x in names)  # noqa: E731
        self._nodes = [n.with_(inputs=swap(n.inputs), outputs=swap(n.outputs),
                               name=new if n.name == old else n.name) for n in self._nodes]

    def signature(self, key: str, inputs: dict[str, str] | Sequence[str],
                  outputs: dict[str, str] | Sequence[str], nodes: Sequence[int] | None = None) -> None:
        resolve = lambda n: self._renamed.get(n, n)  # noqa: E731
        as_map = lambda v: ({k: resolve(t) for k, t in v.items()} if isinstance(v, dict)  # noqa: E731
                            else {resolve(n): resolve(n) for n in v})
        self._signatures[key] = Signature(as_map(inputs), as_map(outputs),
                                          None if nodes is None else tuple(nodes))

    def metadata(self, key: str, value: str) -> None:
        self._metadata[key] = value

    def build(self) -> Graph:
        if not self._outputs:
            raise ConversionError("graph has no outputs; call output()")
        return Graph(tuple(self._nodes), tuple(self._inputs), tuple(self._outputs), dict(self._tensors),
                     dict(self._constants), variables=frozenset(self._variables), name=self.name,
                     metadata=dict(self._metadata), signatures=dict(self._signatures),
                     dynamic_dims=dict(self._dynamic_dims))

    def __getattr__(self, op: str):
        # Only reached for names that are not attributes: b.Conv2D(...), b.Add(...), ...
        if op[:1].isupper() and op in OPS:
            return lambda *inputs, **attrs: self.op(op, *inputs, **attrs)
        raise AttributeError(f"{type(self).__name__} has no attribute {op!r} (and no IR op of that name)")

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(OPS))

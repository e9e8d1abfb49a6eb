"""Reverse-mode differentiation of a list of IR nodes.

``backward`` walks the forward nodes last to first and asks each op's gradient rule
(``OPS[op].gradient``, written next to the op's forward definition) for the gradients of its
inputs, given the gradients of its outputs. Rules build their result out of ordinary IR nodes
through a ``GradContext`` (``g.emit("Mul", [dy, b])``), so the backward pass is itself a graph the
reference executor runs, the writer lowers, and the runtime executes.

A rule receives ``dys`` aligned with ``node.outputs`` (None where no gradient flows back) and
returns a list aligned with ``node.inputs`` (None where it computes none); ``g.wants(k)`` says
whether input ``k`` needs one at all, so rules skip work nobody reads (the input image's
gradient, a frozen weight's).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from converter.errors import ConversionError
from converter.ir import Node, TensorType
from converter.ops import OPS

FLOAT = ("float32", "float16")


class NotDifferentiableError(ConversionError):
    """A node between the trainable variables and the loss has no gradient; names the node."""


def node_label(node: Node) -> str:
    return f"node {node.name or (node.outputs or ('?',))[0]!r} ({node.op})"


class GradContext:
    """What a gradient rule may use: tensor types, constant values, and ``emit`` to add nodes.
    Emitted nodes land in ``self.nodes`` in the order they are made (a valid execution order,
    since a rule only reads tensors that exist already)."""

    def __init__(self, tensors: dict[str, TensorType], constants: dict[str, np.ndarray],
                 taken: set[str]):
        self.tensors = tensors
        self.constants = constants
        self.taken = taken
        self.nodes: list[Node] = []
        self._wanted: Sequence[bool] = ()
        self._node: Node | None = None

    # ---- queries ----
    def type(self, name: str) -> TensorType:
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.tensors[name].shape)

    def wants(self, k: int) -> bool:
        return k < len(self._wanted) and self._wanted[k]

    def fail(self, message: str):
        raise NotDifferentiableError(f"{node_label(self._node)}: {message}")

    # ---- building ----
    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name

    def _base(self) -> str:
        node = self._node
        return f"d/{node.outputs[0] if node is not None and node.outputs else 'grad'}"

    def emit(self, op: str, inputs: Sequence[str], attrs: dict | None = None,
             outputs: Sequence[str] | None = None, name: str | None = None):
        """Adds one node; returns its output name (a tuple when it has several)."""
        attrs = dict(attrs or {})
        types = [self.tensors[i] if i else None for i in inputs]
        try:
            out_types = OPS[op].infer(types, attrs)
        except Exception as exc:
            where = node_label(self._node) if self._node is not None else "autodiff"
            raise ConversionError(f"{where}: building its gradient: {op} on "
                                  f"{[str(t.shape) if t else None for t in types]}: {exc}") from exc
        if outputs is None:
            base = self._base() + f":{op}"
            outputs = [self.fresh(base if len(out_types) == 1 else f"{base}:{k}")
                       for k in range(len(out_types))]
        else:
            outputs = list(outputs)
            for o in outputs:
                if o:
                    self.taken.add(o)
        for o, t in zip(outputs, out_types):
            if o:
                self.tensors[o] = t
        node_name = self.fresh(name or f"grad:{op}:{outputs[0] if outputs else op}")
        self.nodes.append(Node(op, tuple(inputs), tuple(outputs), attrs, name=node_name))
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def const(self, value, dtype: str, base: str = "d/const") -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(base)
        self.constants[name] = array
        self.tensors[name] = TensorType(dtype, array.shape)
        return name

    def scalar(self, value: float, like: str) -> str:
        return self.const(value, self.tensors[like].dtype)

    # ---- shared shapes of gradient ----
    def unbroadcast(self, grad: str, shape: Sequence[int]) -> str:
        """``grad`` (shaped like a broadcast result) summed back to ``shape``."""
        shape = tuple(shape)
        have = self.shape(grad)
        if have == shape:
            return grad
        extra = len(have) - len(shape)
        axes = tuple(range(extra)) + tuple(extra + k for k, d in enumerate(shape)
                                           if d == 1 and have[extra + k] != 1)
        summed = self.emit("ReduceSum", [grad], {"axes": axes, "keepdims": True}) if axes else grad
        return summed if self.shape(summed) == shape else self.emit("Reshape", [summed], {"shape": shape})

    def broadcast_back(self, dy: str, x: str, axes: Sequence[int], keepdims: bool) -> str:
        """A reduction's output gradient ``dy`` spread back over ``x``'s shape."""
        x_shape = self.shape(x)
        kept = tuple(1 if k in axes else d for k, d in enumerate(x_shape))
        if not keepdims:
            dy = self.emit("Reshape", [dy], {"shape": kept})
        return self.emit("BroadcastTo", [dy], {"shape": x_shape})

    def zeros_like(self, name: str) -> str:
        t = self.type(name)
        return self.emit("BroadcastTo", [self.const(0.0, t.dtype)], {"shape": tuple(t.shape)})

    def activation_grad(self, x: str, dy: str, activation: str, attrs) -> str:
        from converter.ops.training import DERIVATIVES, activation_params

        if activation not in DERIVATIVES:
            self.fail(f"activation {activation} is not differentiable")
        alpha, beta = activation_params(activation, attrs)
        return self.emit("ActivationGrad", [x, dy], {"function": activation, "alpha": alpha, "beta": beta})


def _sum(g: GradContext, parts: list[str]) -> str:
    total = parts[0]
    for part in parts[1:]:
        total = g.emit("Add", [total, part])
    return total


def differentiable_tensors(nodes: Sequence[Node], sources: Iterable[str],
                           tensors: dict[str, TensorType]) -> set[str]:
    """Float tensors that depend on ``sources`` through ``nodes`` (the sources included)."""
    reached = {s for s in sources}
    for node in nodes:
        if any(i in reached for i in node.inputs if i):
            reached.update(o for o in node.outputs if o and tensors[o].dtype in FLOAT)
    return reached


def backward(g: GradContext, nodes: Sequence[Node], seeds: dict[str, str], sources: Iterable[str],
             stop: dict[str, Node] | None = None) -> dict[str, str]:
    """Gradients of the seeded tensors' loss with respect to ``sources``.

    ``seeds``: tensor -> its gradient (e.g. the logits -> the loss's dlogits). ``sources``: the
    tensors whose gradients are wanted. Returns source -> gradient tensor for every source the
    loss depends on. Raises NotDifferentiableError naming the first node on a path from a
    source to the loss that has no gradient rule."""
    sources = list(sources)
    wanted_sources = set(sources)
    reached = differentiable_tensors(nodes, sources, g.tensors)
    contributions: dict[str, list[str]] = {t: [d] for t, d in seeds.items()}
    results: dict[str, str] = {}
    for node in reversed(list(nodes)):
        dys = [None] * len(node.outputs)
        for k, out in enumerate(node.outputs):
            parts = contributions.pop(out, None) if out else None
            if parts:
                dys[k] = _sum(g, parts)
                if out in wanted_sources:
                    results[out] = dys[k]
        wanted = [bool(i) and i in reached and g.tensors[i].dtype in FLOAT for i in node.inputs]
        if all(d is None for d in dys) or not any(wanted):
            continue
        g._node, g._wanted = node, wanted
        rule = OPS[node.op].gradient
        if rule is None:
            raise NotDifferentiableError(
                f"{node_label(node)} has no gradient rule, and it lies between the trainable "
                f"variables and the loss; freeze the variables before it or replace the op")
        activation = node.attrs.get("activation")
        if activation and dys[0] is not None:
            # Fused activations reaching here are those whose derivative reads the output as well
            # as the input (Relu, Relu6, Clip: the output is inside the open range iff the input
            # is); the others were un-fused for training.
            name, alpha, beta = activation
            if name != "Identity":
                dys[0] = g.emit("ActivationGrad", [node.outputs[0], dys[0]],
                                {"function": name, "alpha": float(alpha), "beta": float(beta)})
            node = node.with_(attrs={k: v for k, v in node.attrs.items() if k != "activation"})
        grads = rule(g, node, dys)
        for name, grad, want in zip(node.inputs, grads, wanted):
            if want and grad is not None:
                if g.shape(grad) != g.shape(name):
                    raise ConversionError(f"{node_label(node)}: gradient rule gave {name!r} a gradient "
                                          f"of shape {g.shape(grad)}, the tensor is {g.shape(name)}")
                contributions.setdefault(name, []).append(grad)
        g._node, g._wanted = None, ()
    for s in dict.fromkeys(sources):
        if s not in results and contributions.get(s):
            results[s] = _sum(g, contributions[s])
    return results

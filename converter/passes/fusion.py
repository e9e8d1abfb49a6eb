"""Activation fusion."""
from __future__ import annotations

from typing import Callable

from converter.ir import Graph
from converter.ops import OPS
from converter.passes._edit import GraphEdit, activation_of

# activation op -> its (alpha, beta) in the fused form, per the schema's UnaryOp conventions.
FUSABLE_ACTIVATIONS: dict[str, Callable[[dict], tuple[float, float]]] = {
    "Relu": lambda a: (0.0, 0.0),
    "Relu6": lambda a: (0.0, 0.0),
    "Clip": lambda a: (float(a.get("min", float("-inf"))), float(a.get("max", float("inf")))),
    "LeakyRelu": lambda a: (float(a.get("alpha", 0.01)), 0.0),
    "Elu": lambda a: (float(a.get("alpha", 1.0)), 0.0),
    "HardSigmoid": lambda a: (float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))),
    "Sigmoid": lambda a: (0.0, 0.0),
    "Tanh": lambda a: (0.0, 0.0),
    "HardSwish": lambda a: (0.0, 0.0),
    "Gelu": lambda a: (0.0, 0.0),
}


def fuse_activation(graph: Graph) -> Graph:
    """An activation whose input is the only-read, not-externally-visible output of a fusable op
    without an activation becomes that op's ``activation`` attribute; the op then produces the
    activation's output name. Values are unchanged."""
    edit = GraphEdit(graph)
    producers, consumers, boundary = edit.producers(), edit.consumers(), edit.boundary()
    replaced = {}
    removed = set()
    for act in edit.nodes:
        if act.op not in FUSABLE_ACTIVATIONS or not act.inputs or act.inputs[0] not in producers:
            continue
        x = act.inputs[0]
        index, prev = producers[x]
        prev = replaced.get(index, prev)
        if (not OPS[prev.op].fusable or activation_of(prev) or len(prev.outputs) != 1
                or len(consumers.get(x, ())) != 1 or x in boundary):
            continue
        alpha, beta = FUSABLE_ACTIVATIONS[act.op](act.attrs)
        replaced[index] = prev.with_(outputs=act.outputs,
                                     attrs={**prev.attrs, "activation": (act.op, alpha, beta)})
        removed.add(id(act))
    edit.nodes = [replaced.get(i, n) for i, n in enumerate(edit.nodes) if id(n) not in removed]
    return edit.build()

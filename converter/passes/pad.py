"""Explicit Pad folded into the window op after it.

Exporters of TensorFlow-style "SAME" networks (and PyTorch models that call F.pad) write the
padding as a separate Pad before a convolution or pooling: a full copy of the activation that the
window op's own (possibly asymmetric) padding does for free. This pass moves it there.
"""
from __future__ import annotations

import math

from converter.ir import Graph, Node
from converter.passes._edit import GraphEdit

# Window ops whose padding can take a Pad's, and the spatial axes of their input by layout.
WINDOW_OPS = ("Conv2D", "AvgPool2D", "MaxPool2D")
SPATIAL_AXES = {"NHWC": (1, 2), "NCHW": (2, 3)}


def _spatial_pads(edit: GraphEdit, pad: Node, layout: str) -> tuple[int, int, int, int] | None:
    """The Pad's (top, left, bottom, right) when it pads only the spatial axes of a rank-4 tensor
    by non-negative amounts; None otherwise."""
    x = edit.type_of(pad.inputs[0])
    pads = tuple(pad.attrs.get("pads", ()))
    if x is None or x.rank != 4 or len(pads) != 8 or min(pads) < 0 or layout not in SPATIAL_AXES:
        return None
    h, w = SPATIAL_AXES[layout]
    if any(pads[axis] or pads[axis + 4] for axis in range(4) if axis not in (h, w)):
        return None
    return pads[h], pads[w], pads[h + 4], pads[w + 4]


def _fill_matches(pad: Node, consumer: Node) -> bool:
    """The Pad's fill is what the window op's own padding means: zero for a convolution and for an
    average that counts padding, minus infinity for a maximum."""
    if pad.attrs.get("mode", "constant") != "constant" or len(pad.inputs) > 1 and pad.inputs[1]:
        return False
    value = float(pad.attrs.get("value", 0.0))
    if consumer.op == "MaxPool2D":
        return value == -math.inf
    return value == 0.0


def _folded_attrs(consumer: Node, extra: tuple[int, int, int, int]) -> dict | None:
    own = tuple(consumer.attrs.get("pads", (0, 0, 0, 0)))
    attrs = {**consumer.attrs, "pads": tuple(a + b for a, b in zip(own, extra))}
    if consumer.op == "AvgPool2D":
        # The Pad's zeros were real cells of the average: they count. That equals counting all
        # padding only when the op's own padding counted too (or it had none).
        if any(own) and not consumer.attrs.get("count_include_pad", False):
            return None
        attrs["count_include_pad"] = True
    return attrs


def fold_pads(graph: Graph) -> Graph:
    """Removes each Pad whose every consumer is a Conv2D, AvgPool2D or MaxPool2D reading it as its
    data input, padding only spatial axes with that op's own fill: the consumers take the padding
    as their (possibly asymmetric) pads instead. A Pad whose output the outside world sees, or
    whose folded padding a consumer cannot take (a pool's padding must stay below its kernel),
    stays. Output shapes and values are unchanged."""
    edit = GraphEdit(graph)
    boundary = edit.boundary()
    consumers = edit.consumers()
    replaced: dict[int, Node] = {}
    dropped: set[int] = set()
    for pad in edit.nodes:
        if pad.op != "Pad" or not pad.inputs or pad.outputs[0] in boundary:
            continue
        users = consumers.get(pad.outputs[0], [])
        plans = []
        for user in users:
            if user.op not in WINDOW_OPS or user.inputs[0] != pad.outputs[0] or \
                    pad.outputs[0] in user.inputs[1:] or id(user) in replaced:
                break
            extra = _spatial_pads(edit, pad, user.attrs.get("layout", "NCHW"))
            attrs = _folded_attrs(user, extra) if extra is not None and _fill_matches(pad, user) else None
            if attrs is None:
                break
            inputs = (pad.inputs[0],) + tuple(user.inputs[1:])
            try:
                (out,) = edit.infer(user.op, inputs, attrs)
            except Exception:  # the op refuses the folded padding: keep the Pad
                break
            if out != edit.type_of(user.outputs[0]):
                break
            plans.append((user, user.with_(inputs=inputs, attrs=attrs)))
        else:
            if plans:
                for user, folded in plans:
                    replaced[id(user)] = folded
                dropped.add(id(pad))
    edit.nodes = [replaced.get(id(n), n) for n in edit.nodes if id(n) not in dropped]
    return edit.build()

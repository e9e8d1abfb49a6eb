"""Dead code, no-op ops and unused constants."""
from __future__ import annotations

from typing import Callable

from converter.ir import Graph, Node
from converter.passes._edit import GraphEdit


def remove_dead_nodes(graph: Graph) -> Graph:
    """Removes nodes none of whose outputs reaches a graph output or a signature, then drops
    the tensors and constants nothing refers to any more. Graph outputs are unchanged."""
    edit = GraphEdit(graph)
    edit.prune_dead()
    return edit.build()


def drop_unused_constants(graph: Graph) -> Graph:
    """Drops constants (and tensor types) no node, graph end or signature refers to. Variables
    stay even when unused: they are state the runtime must keep."""
    return GraphEdit(graph).build()


def _same_type(edit: GraphEdit, node: Node) -> bool:
    src, dst = edit.type_of(node.inputs[0]), edit.type_of(node.outputs[0])
    return src is not None and dst is not None and src == dst


def _slice_is_noop(edit: GraphEdit, node: Node) -> bool:
    src = edit.type_of(node.inputs[0])
    if not _same_type(edit, node) or node.attrs.get("ends_from") is not None:
        return False    # a slice to a run-time length is whole only at the length converted for
    steps = node.attrs.get("steps") or (1,) * src.rank
    # Equal shapes with unit steps can only mean the whole range; a size-1 dim is unchanged
    # whatever its step.
    return all(step == 1 or dim == 1 for step, dim in zip(steps, src.shape))


def _reshape_is_noop(edit: GraphEdit, node: Node) -> bool:
    """Same type, and (when the importer recorded where each output dim comes from) every dim
    passes its own input dim through: [B, 4] -> [1, -1] is a no-op only at batch 1, and a graph
    with a dynamic batch runs it at other batches too."""
    if not _same_type(edit, node):
        return False
    sources = node.attrs.get("dim_sources")
    return sources is None or tuple(sources) == tuple(range(len(sources)))


# op -> "does this node compute its input unchanged?"; each such node is an identity.
NO_OP_RULES: dict[str, Callable[[GraphEdit, Node], bool]] = {
    "Identity": lambda edit, node: True,
    "Reshape": _reshape_is_noop,
    "Transpose": lambda edit, node: tuple(node.attrs["perm"]) == tuple(range(len(node.attrs["perm"]))),
    "Cast": lambda edit, node: _same_type(edit, node),
    "Slice": _slice_is_noop,
    "Pad": lambda edit, node: _same_type(edit, node) and not any(node.attrs.get("pads", ())),
}


def is_noop(edit: GraphEdit, node: Node) -> bool:
    rule = NO_OP_RULES.get(node.op)
    return rule is not None and len(node.inputs) >= 1 and bool(node.inputs[0]) and rule(edit, node)


def remove_identities(graph: Graph) -> Graph:
    """Removes Identity and no-op Reshape/Transpose/Cast/Slice/Pad nodes; consumers read the
    input instead. Graph input and output names are kept: when the no-op's output is a graph
    output, its input is renamed to that output instead, and the node stays only when it joins
    a graph input (or constant, or another graph output) directly to a graph output."""
    edit = GraphEdit(graph)
    changed = True
    while changed:
        changed = False
        producers = edit.producers()
        boundary = edit.boundary()
        for node in edit.nodes:
            if not is_noop(edit, node):
                continue
            src, dst = node.inputs[0], node.outputs[0]
            if dst not in boundary:
                edit.nodes.remove(node)
                edit.rename(dst, src)
            elif src not in boundary and src in producers and src not in edit.constants:
                edit.nodes.remove(node)
                edit.rename_everywhere(src, dst)
            else:
                continue
            changed = True
            break
    return edit.build()


def reshape_source(producers: dict[str, tuple[int, Node]], node: Node) -> str | None:
    """The input of the Reshape that produces a Reshape ``node``'s input (a Reshape of a Reshape
    is one Reshape of that), else None."""
    if node.op != "Reshape":
        return None
    found = producers.get(node.inputs[0])
    return found[1].inputs[0] if found and found[1].op == "Reshape" else None


def merge_reshapes(graph: Graph) -> Graph:
    """Every Reshape of a Reshape reads the first one's input instead; Reshapes that then keep
    their input unchanged are removed (remove_identities), and so are the first ones when nothing
    else reads them. Fusing an activation through a Reshape (fuse_activation) leaves such pairs
    between 1-D convolutions."""
    edit = GraphEdit(graph)
    producers = edit.producers()
    changed = False
    for i, node in enumerate(edit.nodes):
        source = reshape_source(producers, node)
        if source is not None:
            edit.nodes[i] = node.with_(inputs=(source,))
            producers[node.outputs[0]] = (i, edit.nodes[i])  # a later Reshape of this one reads its new source
            changed = True
    if not changed:
        return graph
    edit.prune_dead()
    return remove_identities(edit.build())

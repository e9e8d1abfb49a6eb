"""fuse_attention: the exported scaled-dot-product attention pattern becomes one Attention node.

What torch.onnx.export writes for attention (eager or F.scaled_dot_product_attention, GPT-2, BERT,
ViT, T5, LLaMA), once the importer and the layout pass are done with it:

    s = BatchMatMul(q', k')                    q' = [Transpose](q * c1), k' = [Transpose](k * c2)
    s = s * c | s / c                          (optional; any scalar constants c, c1, c2)
    s = s + mask                               (optional; float additive mask of any broadcast shape)
    p = Softmax(s, axis=-1)
    p = Where(IsNaN(p), 0, p)                  (optional; torch's guard for rows with every key masked)
    y = BatchMatMul(p, v)

The constants multiply into the op's scale (1.0 when there are none: T5). A transpose in front of
q or k is kept as one Transpose giving [B, H, S, D] (k' may be [B, H, D, S], k^T as written, or
[B, H, S, D] with transpose_b). LLaMA's grouped-query expansion of k and v (Reshape to
[B, Hkv, 1, S, D], BroadcastTo [B, Hkv, g, S, D], Reshape to [B, Hkv * g, S, D]) is looked through so
the op reads the Hkv heads directly. The mask stays an input of the op; a causal mask made of
constants (GPT-2's sliced lower triangle) is an additive mask like any other.

Invariants: the matched nodes from the QK product to the output product are read by nothing else
(patterns.Matcher.self_contained), so replacing them changes no other value; the Muls and
Transposes looked through in front of q and k stay in place and fall to remove_dead_nodes when
nothing else reads them. Values differ from the unfused graph by float rounding only, except a
row whose every key is masked with -inf: the op gives zeros there, as the Where guard does (an
export without the guard would give NaN).
"""
from __future__ import annotations

from converter.ir import Graph, Node
from converter.passes._edit import GraphEdit, activation_of
from converter.passes.patterns import (AnyOf, Const, Match, Op, Rule, Var, apply_rules, output_type_kept,
                                       scalar_value)


def _plain_matmul(node: Node, m: Match) -> bool:
    return not node.attrs.get("transpose_a") and not node.attrs.get("transpose_b") and not activation_of(node)


def _last_axis_softmax(node: Node, m: Match) -> bool:
    return not activation_of(node)


_QK = Op("BatchMatMul", (Var("q"), Var("k")), name="qk",
         where=lambda n, m: not n.attrs.get("transpose_a") and not activation_of(n))
_SCORES = AnyOf((Op("Mul", (_QK, Const(name="scale"))), Op("Div", (_QK, Const(name="divisor"))), _QK))
_SOFTMAX = Op("Softmax", (AnyOf((Op("Add", (_SCORES, Var("mask"))), _SCORES)),), name="softmax",
              where=_last_axis_softmax)
_PROBABILITIES = AnyOf((Op("Where", (Op("IsNaN", (Var("p", _SOFTMAX),)), Const(0.0), Var("p"))), _SOFTMAX))


def _peel(edit: GraphEdit, producers, tensor: str) -> tuple[str, float, tuple[int, ...] | None]:
    """tensor = Transpose(base * factor, perm) in any nesting of scalar-constant Muls and at most one
    Transpose -> (base, factor, perm or None)."""
    factor, perm = 1.0, None
    while tensor in producers:
        node = producers[tensor][1]
        if node.op == "Mul" and len(node.inputs) == 2 and not activation_of(node):
            constants = [scalar_value(edit, i) for i in node.inputs]
            if constants[1] is not None and constants[0] is None:
                factor, tensor = factor * constants[1], node.inputs[0]
                continue
            if constants[0] is not None and constants[1] is None:
                factor, tensor = factor * constants[0], node.inputs[1]
                continue
        if node.op == "Transpose" and perm is None:
            perm, tensor = tuple(node.attrs["perm"]), node.inputs[0]
            continue
        break
    return tensor, factor, perm


def _grouped_source(edit: GraphEdit, producers, tensor: str) -> tuple[str, int] | None:
    """(x, g) when tensor = Reshape(BroadcastTo(Reshape(x))) repeats each of x's Hkv heads g times in
    place ([B, Hkv, S, D] -> [B, Hkv, 1, S, D] -> [B, Hkv, g, S, D] -> [B, Hkv * g, S, D])."""
    chain = []
    for op in ("Reshape", "BroadcastTo", "Reshape"):
        found = producers.get(tensor)
        if found is None or found[1].op != op:
            return None
        chain.append(tensor)
        tensor = found[1].inputs[0]
    out, expanded, unsqueezed = (edit.type_of(t).shape for t in chain)
    source = edit.type_of(tensor).shape
    if len(source) != 4 or len(unsqueezed) != 5 or len(expanded) != 5 or len(out) != 4:
        return None
    b, heads, s, d = source
    group = expanded[2]
    if (unsqueezed != (b, heads, 1, s, d) or expanded != (b, heads, group, s, d) or not isinstance(group, int)
            or not isinstance(heads, int) or out != (b, heads * group, s, d)):
        return None
    return tensor, group


def _fuse(edit: GraphEdit, m: Match, root: str) -> list[Node] | None:
    pv, qk = m.nodes["pv"], m.nodes["qk"]
    if not _plain_matmul(pv, m):
        return None
    scores_rank = edit.type_of(qk.outputs[0]).rank
    if scores_rank != 4 or m.nodes["softmax"].attrs.get("axis") != 3 or edit.type_of(root).dtype != "float32":
        return None
    producers = edit.producers()
    scale = 1.0
    if "scale" in m.tensors:
        scale = scalar_value(edit, m.tensors["scale"])
    elif "divisor" in m.tensors:
        divisor = scalar_value(edit, m.tensors["divisor"])
        scale = 1.0 / divisor if divisor else None
    if scale is None or not scale > 0:
        return None
    new_nodes: list[Node] = []

    def arrange(base: str, perm: tuple[int, ...] | None) -> str:
        if perm is None or perm == (0, 1, 2, 3):
            return base
        node = edit.make_node("Transpose", [base], {"perm": perm}, f"{base}/heads")
        new_nodes.append(node)
        return node.outputs[0]

    q, q_factor, q_perm = _peel(edit, producers, m.tensors["q"])
    k, k_factor, k_perm = _peel(edit, producers, m.tensors["k"])
    # The product reads k' as [B, H, D, S] (or [B, H, S, D] with transpose_b); the op wants
    # [B, H, S, D]: swap the last two axes of the transpose that makes k'.
    if not qk.attrs.get("transpose_b"):
        k_perm = (0, 1, 3, 2) if k_perm is None else k_perm[:2] + (k_perm[3], k_perm[2])
    if k_perm is not None and len(k_perm) != 4 or q_perm is not None and len(q_perm) != 4:
        return None
    v = m.tensors["v"]
    if k_perm in (None, (0, 1, 2, 3)):
        grouped_k, grouped_v = _grouped_source(edit, producers, k), _grouped_source(edit, producers, v)
        if grouped_k and grouped_v and grouped_k[1] == grouped_v[1]:
            k, v = grouped_k[0], grouped_v[0]
    inputs = [arrange(q, q_perm), arrange(k, k_perm), v]
    if "mask" in m.tensors:
        inputs.append(m.tensors["mask"])
    attrs = {"scale": float(scale * q_factor * k_factor), "causal": "none", "softcap": 0.0, "k_transposed": False}
    if not output_type_kept(edit, "Attention", inputs, attrs, root):
        return None
    return new_nodes + [Node("Attention", tuple(inputs), (root,), attrs, name=edit.new_name(f"Attention:{root}"))]


ATTENTION_RULES: tuple[Rule, ...] = (
    # BatchMatMul(softmax(scale * q k^T + mask), v), the mask, the scale and torch's NaN guard each
    # optional (the module docstring has the whole pattern).
    Rule("attention", Op("BatchMatMul", (_PROBABILITIES, Var("v")), name="pv"), _fuse),
)


def fuse_attention(graph: Graph) -> Graph:
    """Replaces each exported scaled-dot-product attention (module docstring) with one Attention
    node producing the same tensor; values are unchanged up to float rounding."""
    edit = GraphEdit(graph)
    apply_rules(edit, ATTENTION_RULES)
    return edit.build()

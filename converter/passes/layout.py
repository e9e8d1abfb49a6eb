"""NCHW -> NHWC layout conversion and transpose cancellation."""
from __future__ import annotations

from typing import Callable

import numpy as np

from converter.ir import Graph, Node, TensorType
from converter.ops import OPS
from converter.passes._edit import GraphEdit
from converter.passes.cleanup import remove_identities, reshape_source


def channels_last_perm(rank: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, rank)) + (1,)


def channels_first_perm(rank: int) -> tuple[int, ...]:
    return (0, rank - 1) + tuple(range(1, rank - 1))


def inverse_perm(perm) -> tuple[int, ...]:
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return tuple(inverse)


def is_identity_perm(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _conv_weights_to_ohwi(w: np.ndarray) -> np.ndarray:
    return w.transpose(0, 2, 3, 1)


def _conv_transpose_weights_to_ohwi(w: np.ndarray, groups: int) -> np.ndarray:
    """[Cin, Cout/g, kh, kw] -> [Cout, kh, kw, Cin/g]."""
    cin, cout_g, kh, kw = w.shape
    grouped = w.reshape(groups, cin // groups, cout_g, kh, kw).transpose(0, 2, 3, 4, 1)
    return grouped.reshape(groups * cout_g, kh, kw, cin // groups)


def _transpose_node(edit: GraphEdit, x: str, perm, output_base: str, output: str | None = None) -> Node:
    return edit.make_node("Transpose", [x], {"perm": tuple(perm)}, output_base,
                          output_names=[output] if output else None)


def _nhwc_weights(edit: GraphEdit, node: Node, emitted: list[Node]) -> str:
    """The node's weight input in the NHWC-side layout: permuted data for a constant used only
    here (new constant when shared), ops inserted for a computed or variable one."""
    w = node.inputs[1]
    groups = int(node.attrs.get("groups", 1))
    if node.op == "Conv2D":
        convert = _conv_weights_to_ohwi
    else:
        convert = lambda a: _conv_transpose_weights_to_ohwi(a, groups)  # noqa: E731
    if edit.is_constant(w):
        data = convert(edit.constants[w])
        name = edit.add_constant(f"{w}_ohwi", data, dtype=str(edit.constants[w].dtype))
        if node.op == "Conv2D" and w in edit.quantization:
            # int8 weights: the output channel stays axis 0 (OIHW -> OHWI).
            edit.quantization[name] = edit.quantization[w]
        return name
    if node.op == "Conv2D":
        t = _transpose_node(edit, w, (0, 2, 3, 1), f"{w}_ohwi")
        emitted.append(t)
        return t.outputs[0]
    cin, cout_g, kh, kw = edit.type_of(w).shape
    steps = [("Reshape", {"shape": (groups, cin // groups, cout_g, kh, kw)}),
             ("Transpose", {"perm": (0, 2, 3, 4, 1)}),
             ("Reshape", {"shape": (groups * cout_g, kh, kw, cin // groups)})]
    current = w
    for op, attrs in steps:
        made = edit.make_node(op, [current], attrs, f"{w}_ohwi")
        emitted.append(made)
        current = made.outputs[0]
    return current


def to_nhwc(graph: Graph) -> Graph:
    """Every layout-sensitive op in NCHW becomes its NHWC form (convolution weights permuted to
    OHWI), wrapped in a Transpose to channels-last before and back to channels-first after, so
    every tensor outside the op keeps its shape and value; graph inputs keep their declared
    layout. cancel_transposes then removes the wrappers between neighbouring ops."""
    edit = GraphEdit(graph)
    to_last_cache: dict[str, str] = {}
    rewritten: list[Node] = []
    for node in edit.nodes:
        definition = OPS.get(node.op)
        if not (definition is not None and definition.layout_sensitive and node.attrs.get("layout", "NCHW") == "NCHW"):
            rewritten.append(node)
            continue
        x = node.inputs[0]
        rank = edit.type_of(x).rank
        attrs = {**node.attrs, "layout": "NHWC"}
        if rank <= 2:
            # [N, C] is the same in both layouts.
            rewritten.append(node.with_(attrs=attrs))
            continue
        emitted: list[Node] = []
        if x not in to_last_cache:
            t_in = _transpose_node(edit, x, channels_last_perm(rank), f"{x}_nhwc")
            emitted.append(t_in)
            to_last_cache[x] = t_in.outputs[0]
        inputs = list(node.inputs)
        inputs[0] = to_last_cache[x]
        if node.op in ("Conv2D", "ConvTranspose2D") and inputs[1]:
            inputs[1] = _nhwc_weights(edit, node, emitted)
        inner = edit.make_node(node.op, inputs, attrs, f"{node.outputs[0]}_nhwc")
        inner = inner.with_(name=node.name or inner.name)
        emitted.append(inner)
        for y_inner, y in zip(inner.outputs, node.outputs):
            out_rank = edit.type_of(y_inner).rank
            emitted.append(_transpose_node(edit, y_inner, channels_first_perm(out_rank), y, output=y))
        rewritten += emitted
    edit.nodes = rewritten
    return edit.build()


# ---- transpose cancellation ----

def _permuted_type(t: TensorType, perm) -> TensorType:
    return TensorType(t.dtype, tuple(t.shape[p] for p in perm))


def _remap_per_dim(values, perm):
    """Per-dim attribute of T_perm(x) -> the same attribute for x (dim perm[i] of x is dim i)."""
    out = [None] * len(perm)
    for i, p in enumerate(perm):
        out[p] = values[i]
    return tuple(out)


def _reduce_axes(attrs, perm):
    return {**attrs, "axes": tuple(sorted(perm[a] for a in attrs["axes"]))}


def _pad_attrs(attrs, perm):
    rank = len(perm)
    pads = tuple(attrs["pads"])
    return {**attrs, "pads": _remap_per_dim(pads[:rank], perm) + _remap_per_dim(pads[rank:], perm)}


def _slice_attrs(attrs, perm):
    new = dict(attrs)
    for key in ("starts", "ends", "steps", "ends_from"):
        if attrs.get(key) is not None:
            new[key] = _remap_per_dim(tuple(attrs[key]), perm)
    return new


# op -> how its attributes change when its input's transpose (perm) moves below it. Each of
# these ops keeps the rank, so the same perm is re-applied to every output afterwards.
AXIS_REMAPS: dict[str, Callable[[dict, tuple], dict]] = {
    "Softmax": lambda a, p: {**a, "axis": p[a["axis"]]},
    "LogSoftmax": lambda a, p: {**a, "axis": p[a["axis"]]},
    "Concat": lambda a, p: {**a, "axis": p[a["axis"]]},
    "Split": lambda a, p: {**a, "axis": p[a["axis"]]},
    "Pad": _pad_attrs,
    "Slice": _slice_attrs,
    "Resize": lambda a, p: {**a, "scales": _remap_per_dim(tuple(a["scales"]), p)},
}
REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp")


# How many Reshape/Transpose ops chain_to_reshape looks back through, and the largest tensor whose
# element order it checks (by moving an index array through the chain).
RESHAPE_CHAIN_DEPTH = 4
# The ops pull_up moves a Transpose above, and how many of them deep.
PULLED_THROUGH = ("Concat", "Resize")
PULL_DEPTH = 3
ORDER_CHECK_MAX_ELEMENTS = 1 << 24


def _keeps_element_order(edit: GraphEdit, x: str, chain: list[Node]) -> bool:
    """Whether Reshapes and Transposes ``chain``, applied to ``x``, leave its elements in their
    row-major order (so the whole chain is one Reshape)."""
    shape = tuple(edit.type_of(x).shape)
    count = int(np.prod(shape, dtype=np.int64))
    if count > ORDER_CHECK_MAX_ELEMENTS:
        return False
    index = np.arange(count, dtype=np.int64).reshape(shape)
    moved = index
    for step in chain:
        if step.op == "Transpose":
            moved = moved.transpose(step.attrs["perm"])
        else:
            moved = moved.reshape(edit.type_of(step.outputs[0]).shape)
    return bool(np.array_equal(moved.ravel(), index.ravel()))


def _unit_alignment(before, after):
    """How ``after`` is ``before`` with size-1 axes dropped and inserted: ``(matched, dropped,
    inserted)`` with matched the (before axis, after axis) pairs read left to right, or None when
    the two shapes differ in more than size-1 axes (a Reshape that merges or splits)."""
    matched, dropped, inserted = [], [], []
    i = j = 0
    while i < len(before) or j < len(after):
        if i < len(before) and j < len(after) and before[i] == after[j]:
            matched.append((i, j))
            i, j = i + 1, j + 1
        elif i < len(before) and before[i] == 1:
            dropped.append(i)
            i += 1
        elif j < len(after) and after[j] == 1:
            inserted.append(j)
            j += 1
        else:
            return None
    return matched, dropped, inserted


class _Cancel:
    def __init__(self, edit: GraphEdit):
        self.edit = edit
        # An order that holds at the declared size of a dynamic dim may not hold at another.
        self.has_dynamic_dims = any(edit.dynamic_dims.values())
        self.refresh()

    def refresh(self):
        self.producers = self.edit.producers()
        self.consumers = self.edit.consumers()

    def transpose_source(self, name: str):
        """(x, perm) when ``name`` is the output of a Transpose, else None."""
        found = self.producers.get(name)
        if found and found[1].op == "Transpose":
            return found[1].inputs[0], tuple(found[1].attrs["perm"])
        return None

    def replace(self, old: Node, new_nodes: list[Node]) -> None:
        i = self.edit.nodes.index(old)
        self.edit.nodes[i:i + 1] = new_nodes
        self.refresh()

    # Transpose(q) of Transpose(p) -> one Transpose (or nothing when they cancel).
    def compose(self, node: Node) -> bool:
        if node.op != "Transpose":
            return False
        inner = self.transpose_source(node.inputs[0])
        if inner is None:
            return False
        x, p = inner
        q = tuple(node.attrs["perm"])
        combined = tuple(p[i] for i in q)
        y = node.outputs[0]
        if is_identity_perm(combined) and y not in self.edit.boundary():
            self.edit.nodes.remove(node)
            self.edit.rename(y, x)
            self.refresh()
        else:
            self.replace(node, [node.with_(inputs=(x,), attrs={**node.attrs, "perm": combined})])
        return True

    # Two Transposes of the same tensor with the same perm -> one.
    def deduplicate(self, node: Node) -> bool:
        if node.op != "Transpose":
            return False
        for other in self.consumers.get(node.inputs[0], ()):
            if (other is not node and other.op == "Transpose"
                    and tuple(other.attrs["perm"]) == tuple(node.attrs["perm"])
                    and other.outputs[0] not in self.edit.boundary()
                    and self.edit.nodes.index(other) > self.edit.nodes.index(node)):
                self.edit.nodes.remove(other)
                self.edit.rename(other.outputs[0], node.outputs[0])
                self.refresh()
                return True
        return False

    def _operand_for(self, name: str, perm, rank: int):
        """How input ``name`` of an op reads after the transpose moves below the op: the
        transpose's source, a permuted constant, or None when it cannot follow."""
        src = self.transpose_source(name)
        if src is not None and src[1] == perm:
            return src[0]
        if self.edit.is_constant(name):
            value = self.edit.constants[name]
            if value.ndim == 0:
                return name
            if value.ndim > rank:
                return None
            full = value.reshape((1,) * (rank - value.ndim) + value.shape)
            moved = full.transpose(inverse_perm(perm))
            if moved.shape == value.shape and np.array_equal(moved.reshape(value.shape), value):
                return name
            return self.edit.add_constant(f"{name}_t", moved, dtype=str(value.dtype))
        return None

    # op(T_p(x), ...) -> T_p(op'(x, ...)) for ops that commute with a permutation.
    def push_down(self, node: Node) -> bool:
        definition = OPS.get(node.op)
        if definition is None or node.op == "Transpose":
            return False
        sources = [self.transpose_source(i) if i else None for i in node.inputs]
        moving = [s for s in sources if s is not None]
        if not moving:
            return False
        perm = moving[0][1]
        rank = len(perm)
        if definition.elementwise or node.op == "Concat":
            if any(self.edit.type_of(o).rank != rank for o in node.outputs if o):
                return False
            new_inputs = []
            for name in node.inputs:
                if not name:
                    new_inputs.append(name)
                    continue
                operand = self._operand_for(name, perm, rank)
                if operand is None:
                    return False
                new_inputs.append(operand)
            attrs = AXIS_REMAPS["Concat"](node.attrs, perm) if node.op == "Concat" else node.attrs
            return self._emit(node, new_inputs, attrs, perm, perm)
        if len(moving) != 1 or sources[0] is None:
            return False
        x = sources[0][0]
        new_inputs = [x] + list(node.inputs[1:])
        if node.op in AXIS_REMAPS:
            return self._emit(node, new_inputs, AXIS_REMAPS[node.op](node.attrs, perm), perm, perm)
        if node.op in REDUCE_OPS:
            attrs = _reduce_axes(node.attrs, perm)
            if attrs.get("keepdims", True):
                return self._emit(node, new_inputs, attrs, perm, perm)
            reduced = set(attrs["axes"])
            kept_x = [d for d in range(rank) if d not in reduced]
            wanted = [perm[i] for i in range(rank) if i not in set(node.attrs["axes"])]
            after = tuple(kept_x.index(d) for d in wanted)
            return self._emit(node, new_inputs, attrs, perm, after)
        return False

    def _emit(self, node: Node, inputs, attrs, perm, perm_after) -> bool:
        """Replaces ``node`` with the op on untransposed inputs followed by Transpose(perm_after)
        on each output, which keeps the original output names."""
        edit = self.edit
        if is_identity_perm(perm_after):
            self.replace(node, [node.with_(inputs=tuple(inputs), attrs=attrs)])
            return True
        reduces_rank = node.op in REDUCE_OPS and not node.attrs.get("keepdims", True)
        inferred = edit.infer(node.op, inputs, attrs) if reduces_rank else None
        inner_outputs, transposes = [], []
        for k, y in enumerate(node.outputs):
            if not y:
                inner_outputs.append(y)
                continue
            inner_name = edit.new_name(f"{y}_t")
            if reduces_rank:
                edit.set_tensor(inner_name, inferred[k])
            else:
                edit.set_tensor(inner_name, _permuted_type(edit.type_of(y), inverse_perm(perm_after)))
            inner_outputs.append(inner_name)
            transposes.append(_transpose_node(edit, inner_name, perm_after, y, output=y))
        inner = node.with_(inputs=tuple(inputs), outputs=tuple(inner_outputs), attrs=attrs)
        self.replace(node, [inner] + transposes)
        return True

    # Reshape(T_p(x)) that only drops or inserts size-1 dims -> T_q(Reshape'(x)), so the
    # Transpose keeps moving down. A 1-D convolution is a Conv2D over [N, C, 1, W] between
    # Reshapes from and to [N, C, W]; in NHWC its output Transpose (and the next one's input
    # Transpose) sit behind those Reshapes, with the activation between them (wav2vec2's feature
    # encoder). A new size-1 dim of x' goes just before the dim the next kept one reads, which
    # puts it where a channels-last Transpose back will find it. Only where the Transpose can go on
    # moving (every reader of the Reshape is one push_down, compose or this rule takes): elsewhere
    # it would just change places with the Reshape, and patterns that read a Reshape there (the
    # grouped attention's Reshape -> BroadcastTo -> Reshape) would no longer match.
    def through_unit_reshape(self, node: Node) -> bool:
        if node.op != "Reshape":
            return False
        t = node.inputs[0]
        source = self.transpose_source(t)
        if source is None or len(self.consumers.get(t, ())) != 1 or t in self.edit.boundary():
            return False
        x, perm = source
        y = node.outputs[0]
        readers = self.consumers.get(y, ())
        if not readers or y in self.edit.boundary() or not all(self._moves_through(r) for r in readers):
            return False
        x_shape, t_shape, y_shape = (tuple(self.edit.type_of(n).shape) for n in (x, t, y))
        if any(x_shape[a] == 1 and a in self.edit.dynamic_dims.get(x, ()) for a in range(len(x_shape))) or any(
                shape[a] == 1 and a in self.edit.dynamic_dims.get(name, ())
                for name, shape in ((t, t_shape), (y, y_shape)) for a in range(len(shape))):
            return False    # a size-1 dim that may grow at run time is not a size-1 dim
        alignment = _unit_alignment(t_shape, y_shape)
        if alignment is None:
            return False
        matched, _, inserted = alignment
        slots = [("x", a) for a in sorted(perm[i] for i, _ in matched)]
        reads = {j: ("x", perm[i]) for i, j in matched}
        for j in inserted:
            later = [reads[k] for k in sorted(reads) if k > j]
            slots.insert(slots.index(later[0]) if later else len(slots), ("new", j))
            reads[j] = ("new", j)
        shape = tuple(x_shape[a] if kind == "x" else 1 for kind, a in slots)
        q = tuple(slots.index(reads[j]) for j in range(len(y_shape)))
        if is_identity_perm(q):
            self.replace(node, [node.with_(inputs=(x,), attrs={"shape": shape})])
            return True
        reshaped = self.edit.make_node("Reshape", [x], {"shape": shape}, f"{y}_r")
        self.replace(node, [reshaped, _transpose_node(self.edit, reshaped.outputs[0], q, y, output=y)])
        return True

    @staticmethod
    def _moves_through(node: Node) -> bool:
        """Whether a Transpose on node's input can move on below it (push_down, compose, or this
        rule again)."""
        definition = OPS.get(node.op)
        return definition is not None and (definition.elementwise or node.op in AXIS_REMAPS
                                           or node.op in REDUCE_OPS or node.op in ("Transpose", "Reshape"))

    # A Transpose that only moves size-1 dims is a Reshape.
    def to_reshape(self, node: Node) -> bool:
        if node.op != "Transpose":
            return False
        shape = self.edit.type_of(node.inputs[0]).shape
        perm = node.attrs["perm"]
        moved_big = [p for p in perm if shape[p] != 1]
        if moved_big != sorted(moved_big):
            return False
        out_shape = self.edit.type_of(node.outputs[0]).shape
        self.replace(node, [node.with_(op="Reshape", attrs={"shape": tuple(out_shape)})])
        return True

    # Transpose(... Reshape(Transpose(x))) that keeps x's elements in order -> Reshape(x). The
    # NHWC wrapper of a convolution followed by a flatten to tokens (NHWC -> NCHW -> [N, C, HW]
    # -> [N, HW, C], and back) is such a chain; push_down cannot move a Transpose through the
    # Reshape, so without this rule both transposes stay.
    def chain_to_reshape(self, node: Node) -> bool:
        if node.op != "Transpose" or self.has_dynamic_dims:
            return False
        source = self._reshape_source(node.inputs[0], tuple(node.attrs["perm"]))
        if source is None:
            return False
        out_shape = tuple(self.edit.type_of(node.outputs[0]).shape)
        self.replace(node, [node.with_(op="Reshape", inputs=(source,), attrs={"shape": out_shape})])
        return True

    # Transpose(q) of Concats and Resizes whose inputs all end order-keeping Reshape/Transpose
    # chains -> the same ops on inputs Reshaped straight into q's layout, with no Transpose left.
    # SegFormer's decode head is such a tree (tokens -> Transpose -> Reshape to NCHW -> Resize ->
    # Concat -> Transpose to NHWC for the fusing convolution): push_down cannot help there, as
    # no Transpose sits directly on the Resizes' or the Concat's inputs.
    def pull_up(self, node: Node) -> bool:
        if node.op != "Transpose" or self.has_dynamic_dims:
            return False
        perm = tuple(node.attrs["perm"])
        found = self.producers.get(node.inputs[0])
        if not found or found[1].op not in PULLED_THROUGH or not self._pulls_up(node.inputs[0], perm, PULL_DEPTH):
            return False
        emitted: list[Node] = []
        self._transposed(node.inputs[0], perm, emitted, output=node.outputs[0])
        self.replace(node, emitted)
        return True

    def _reshape_source(self, name: str, perm) -> str | None:
        """x when Transpose(perm) of ``name`` is a Reshape of x through a Reshape/Transpose chain."""
        chain = [Node("Transpose", (name,), ("",), {"perm": perm})]
        x = name
        for _ in range(RESHAPE_CHAIN_DEPTH):
            found = self.producers.get(x)
            if not found or found[1].op not in ("Reshape", "Transpose"):
                return None
            chain.insert(0, found[1])
            x = found[1].inputs[0]
            if _keeps_element_order(self.edit, x, chain):
                return x
        return None

    def _pulled_inputs(self, producer: Node) -> list[str]:
        return list(producer.inputs) if producer.op == "Concat" else list(producer.inputs[:1])

    def _pulls_up(self, name: str, perm, depth: int) -> bool:
        if self._reshape_source(name, perm) is not None:
            return True
        found = self.producers.get(name)
        if depth == 0 or not found or found[1].op not in PULLED_THROUGH:
            return False
        producer = found[1]
        if len(self.consumers.get(name, ())) != 1 or name in self.edit.boundary():
            return False
        if any(i for i in producer.inputs[len(self._pulled_inputs(producer)):]):
            return False
        return all(i and not self.edit.is_constant(i) and self._pulls_up(i, perm, depth - 1)
                   for i in self._pulled_inputs(producer))

    def _transposed(self, name: str, perm, emitted: list[Node], output: str | None = None) -> str:
        """Emits ops computing Transpose(perm) of ``name`` as _pulls_up found them; returns the
        result's name (``output`` when given)."""
        outputs = [output] if output else None
        source = self._reshape_source(name, perm)
        if source is not None:
            shape = _permuted_type(self.edit.type_of(name), perm).shape
            emitted.append(self.edit.make_node("Reshape", [source], {"shape": tuple(shape)}, f"{name}_t", outputs))
        else:
            producer = self.producers[name][1]
            inputs = [self._transposed(i, perm, emitted) for i in self._pulled_inputs(producer)]
            attrs = AXIS_REMAPS[producer.op](producer.attrs, inverse_perm(perm))
            emitted.append(self.edit.make_node(producer.op, inputs, attrs, f"{name}_t", outputs))
        return emitted[-1].outputs[0]

    # Reshape of a Reshape -> one Reshape.
    def merge_reshapes(self, node: Node) -> bool:
        source = reshape_source(self.producers, node)
        if source is None:
            return False
        self.replace(node, [node.with_(inputs=(source,))])
        return True


def cancel_transposes(graph: Graph) -> Graph:
    """Moves Transposes down through ops that commute with a permutation (elementwise ops,
    Concat/Split, Reduce, Softmax/LogSoftmax, Pad, Slice, Resize; attributes and constant
    operands permuted to match) until they meet another Transpose and cancel or merge; turns a
    Transpose that only moves size-1 dims, or that ends a Reshape/Transpose chain leaving the
    elements in order (in a graph without dynamic dims), into a Reshape. Repeats until nothing
    changes.
    Values and graph-visible names are unchanged; no dead Transpose or Reshape is left."""
    edit = GraphEdit(graph)
    state = _Cancel(edit)
    structural = (state.compose, state.deduplicate, state.push_down, state.through_unit_reshape)
    cleanup = (state.to_reshape, state.chain_to_reshape, state.pull_up, state.merge_reshapes)
    budget = 50 * (len(edit.nodes) + 10)
    for rules in (structural, structural + cleanup):
        progress = True
        while progress and budget > 0:
            progress = False
            for node in list(edit.nodes):
                if node not in edit.nodes:
                    continue
                if any(rule(node) for rule in rules):
                    progress = True
                    budget -= 1
                    edit.prune_dead()
                    state.refresh()
                    break
    edit.prune_dead()
    return _drop_noop_reshapes(edit)


def _drop_noop_reshapes(edit: GraphEdit) -> Graph:
    graph = edit.build()
    if any(n.op in ("Reshape", "Transpose") for n in graph.nodes):
        graph = remove_identities(graph)
    return graph

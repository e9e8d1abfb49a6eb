"""make_trainable: one graph, three signatures sharing the variables.

    infer  inputs           -> outputs                 the model as converted (BatchNorm reads its
                                                       running statistics from variables)
    grad   inputs + labels  -> loss, grad/<variable>   forward in training form, loss, backward
                                                       (embedding tables: grad/<v>/rows, /indices)
    train  inputs + labels  -> loss                    grad's nodes, optional global-norm clipping,
                                                       one OptimizerUpdate per variable (in place)

The node list is [infer nodes] + [training-only forward nodes] + [loss, backward] + [clip,
updates]; a signature lists the indices it runs. Forward nodes whose training form is identical
(no BatchNorm upstream, no activation that must be un-fused) are shared by infer and grad.
Passes must not run on the result: they would renumber the nodes the signatures list.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from converter.autodiff.context import FLOAT, GradContext, backward, differentiable_tensors
from converter.autodiff.unroll import unroll_recurrent
from converter.errors import ConversionError
from converter.ir import Graph, Node, Signature, TensorType
from converter.ops import OPS
from converter.ops._common import unary_options
from converter.ops.training import OPTIMIZER_KINDS, OPTIMIZER_SLOTS

# User-facing loss names -> the Loss op's kind.
LOSSES = {"cross_entropy": "softmax_cross_entropy", "bce": "bce_with_logits", "mse": "mse"}
# The op a model often ends with that the fused loss takes the place of: the loss reads the
# op's input (the logits) and the op stays in the infer signature only.
LOSS_SQUASH = {"cross_entropy": ("Softmax", "LogSoftmax"), "bce": ("Sigmoid",)}
# Inputs of each op that hold its parameters: the constants there become trainable variables.
# Elementwise ops count only constants of more than one element (a bias vector, a PReLU slope;
# not a scalar like the 0.5 of x * 0.5).
PARAMETER_SLOTS = {
    "Conv2D": (1, 2), "ConvTranspose2D": (1, 2), "FullyConnected": (1, 2), "BatchMatMul": (0, 1),
    "LayerNorm": (1, 2), "BatchNorm": (1, 2), "Gather": (0,), "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3),
    "Add": (0, 1), "Sub": (0, 1), "Mul": (0, 1), "PRelu": (1,),
}
ELEMENTWISE_PARAMETERS = ("Add", "Sub", "Mul", "PRelu")
# Fused activations whose derivative the output determines (kept fused in training).
SELF_GRADIENT_ACTIVATIONS = ("Relu", "Relu6", "Clip", "Identity")
LEARNING_RATE = "optimizer/learning_rate"


@dataclass(frozen=True)
class TrainingConfig:
    """What ``make_trainable`` (and ``converter.api.convert(..., training=...)``) builds.

    trainable: None (every parameter) or names / name prefixes; freeze: prefixes kept constant.
    clip_norm: clip the gradients' joint L2 norm to this before the update. weight_decay: L2
    added to the gradient (decoupled for adamw). prediction: the output the loss reads (default:
    the graph's only output)."""
    loss: str = "cross_entropy"
    optimizer: str = "sgd"
    lr: float = 1e-3
    trainable: tuple[str, ...] | None = None
    freeze: tuple[str, ...] = ()
    clip_norm: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8
    prediction: str | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ConversionError(f"loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZER_KINDS:
            raise ConversionError(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZER_KINDS)}")
        if not self.lr > 0:
            raise ConversionError(f"learning rate {self.lr} must be positive")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConversionError(f"clip_norm {self.clip_norm} must be positive")
        if self.weight_decay < 0:
            raise ConversionError(f"weight_decay {self.weight_decay} must be >= 0")
        if isinstance(self.trainable, str) or isinstance(self.freeze, str):
            raise ConversionError("trainable and freeze take a list of names or prefixes, not a string")
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if self.trainable is not None:
            object.__setattr__(self, "trainable", tuple(self.trainable))

    def optimizer_attrs(self) -> dict:
        return {"kind": self.optimizer, "momentum": float(self.momentum) if self.optimizer == "momentum" else 0.0,
                "nesterov": bool(self.nesterov) if self.optimizer == "momentum" else False,
                "beta1": float(self.beta1), "beta2": float(self.beta2), "epsilon": float(self.epsilon),
                "weight_decay": float(self.weight_decay)}


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p) for p in patterns)


def parameter_candidates(graph: Graph) -> list[str]:
    """Float constants (and variables) in a parameter slot of some node, in first-use order."""
    found: dict[str, None] = {}
    for node in graph.nodes:
        for k in PARAMETER_SLOTS.get(node.op, ()):
            name = node.inputs[k] if k < len(node.inputs) else ""
            if not name or name not in graph.constants or graph.tensors[name].dtype not in FLOAT:
                continue
            if node.op in ELEMENTWISE_PARAMETERS and graph.tensors[name].size <= 1:
                continue
            found[name] = None
    for name in sorted(graph.variables):
        if graph.tensors[name].dtype in FLOAT:
            found.setdefault(name, None)
    return list(found)


def choose_trainable(graph: Graph, config: TrainingConfig) -> list[str]:
    candidates = parameter_candidates(graph)
    if config.trainable is None:
        chosen = list(candidates)
    else:
        unmatched = [p for p in config.trainable if not any(_matches(c, [p]) for c in candidates)]
        if unmatched:
            raise ConversionError(f"trainable {unmatched} match no parameter; the parameters are {candidates}")
        chosen = [c for c in candidates if _matches(c, config.trainable)]
    unmatched = [p for p in config.freeze if not any(_matches(c, [p]) for c in candidates)]
    if unmatched:
        raise ConversionError(f"--freeze {unmatched} match no parameter; the parameters are {candidates}")
    chosen = [c for c in chosen if not _matches(c, config.freeze)]
    if not chosen:
        raise ConversionError("nothing left to train: every parameter is frozen "
                              f"(parameters: {candidates})")
    return chosen


class _Builder:
    """The tensors, constants and names of the graph being assembled."""

    def __init__(self, graph: Graph):
        self.tensors = dict(graph.tensors)
        self.constants = dict(graph.constants)
        self.variables = set(graph.variables)
        self.taken = set(self.tensors) | {n.name for n in graph.nodes if n.name}

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name

    def node(self, op: str, inputs, attrs, outputs: Sequence[str] | None = None, base: str = "t",
             name: str | None = None) -> Node:
        types = [self.tensors[i] if i else None for i in inputs]
        try:
            out_types = OPS[op].infer(types, attrs)
        except Exception as exc:
            raise ConversionError(f"building {op} {name or base!r} for training: {exc}") from exc
        if outputs is None:
            outputs = [self.fresh(base if len(out_types) == 1 else f"{base}:{k}") for k in range(len(out_types))]
        for o, t in zip(outputs, out_types):
            self.taken.add(o)
            self.tensors[o] = t
        return Node(op, tuple(inputs), tuple(outputs), dict(attrs), name=self.fresh(name or f"{op}:{outputs[0]}"))

    def constant(self, base: str, value, dtype: str) -> str:
        name = self.fresh(base)
        self.constants[name] = np.asarray(value, dtype=dtype)
        self.tensors[name] = TensorType(dtype, self.constants[name].shape)
        return name

    def variable(self, base: str, value, dtype: str) -> str:
        name = self.constant(base, value, dtype)
        self.variables.add(name)
        return name


def _channel_shape(node: Node, rank: int) -> tuple[int, ...] | None:
    """How a [C] vector must be reshaped to broadcast against the BatchNorm input, or None when
    [C] already lines up with the last axis."""
    if node.attrs.get("layout", "NCHW") == "NCHW" and rank > 2:
        return (-1,) + (1,) * (rank - 2)
    return None


def _lower_batch_norm(b: _Builder, node: Node, output: str | None = None) -> list[Node]:
    """BatchNorm in inference form as ops the runtime has: y = (x - mean) * (scale * rsqrt(var +
    eps)) + bias. Reads the parameters as tensors (they may be variables); with all four constant
    it folds to one Mul and one Add by precomputed constants."""
    x, scale, bias, mean, var = node.inputs
    eps = float(node.attrs.get("epsilon", 1e-5))
    y = output or node.outputs[0]
    rank = b.tensors[x].rank
    reshape = _channel_shape(node, rank)
    dtype = b.tensors[x].dtype
    base = f"{y}/bn"
    if not any(p in b.variables for p in (scale, bias, mean, var)):
        g, beta, m, v = (b.constants[p].astype(np.float64) for p in (scale, bias, mean, var))
        factor = g / np.sqrt(v + eps)
        shift = beta - m * factor
        shape = reshape and tuple(len(g) if d == -1 else d for d in reshape)
        k = b.constant(f"{base}/scale", factor.reshape(shape) if shape else factor, dtype)
        s = b.constant(f"{base}/shift", shift.reshape(shape) if shape else shift, dtype)
        mul = b.node("Mul", [x, k], {}, base=f"{base}/scaled")
        return [mul, b.node("Add", [mul.outputs[0], s], {}, outputs=[y], name=node.name or None)]
    nodes = []

    def per_channel(name):
        if reshape is None:
            return name
        nodes.append(b.node("Reshape", [name], {"shape": tuple(b.tensors[name].shape[0] if d == -1 else d
                                                                for d in reshape)}, base=f"{base}/{name}"))
        return nodes[-1].outputs[0]

    shifted_var = b.node("Add", [var, b.constant(f"{base}/epsilon", eps, dtype)], {}, base=f"{base}/var_eps")
    invstd = b.node("Rsqrt", [shifted_var.outputs[0]], {}, base=f"{base}/invstd")
    factor = b.node("Mul", [scale, invstd.outputs[0]], {}, base=f"{base}/factor")
    nodes += [shifted_var, invstd, factor]
    centered = b.node("Sub", [x, per_channel(mean)], {}, base=f"{base}/centered")
    scaled = b.node("Mul", [centered.outputs[0], per_channel(factor.outputs[0])], {}, base=f"{base}/scaled")
    nodes += [centered, scaled]
    nodes.append(b.node("Add", [scaled.outputs[0], per_channel(bias)], {}, outputs=[y], name=node.name or None))
    return nodes


def _ancestors(nodes: Sequence[Node], target: str | Sequence[str]) -> list[Node]:
    needed, keep = ({target} if isinstance(target, str) else set(target)), []
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs if o):
            keep.append(node)
            needed.update(i for i in node.inputs if i)
    return keep[::-1]


def _unfused(b: _Builder, node: Node, inputs, renamed: dict[str, str]) -> list[Node]:
    """``node`` with its fused activation as a separate unary node (training reads the
    pre-activation value), outputs renamed for the training forward."""
    name, alpha, beta = node.attrs["activation"]
    entry = OPS[name]
    out = node.outputs[0]
    pre = b.node(node.op, inputs, {k: v for k, v in node.attrs.items() if k != "activation"},
                 base=f"train/{out}/pre", name=f"train/{node.name or out}")
    unary_attrs = entry.lift(unary_options(entry.lift_key, alpha, beta))
    act = b.node(name, [pre.outputs[0]], unary_attrs, base=f"train/{out}")
    renamed[out] = act.outputs[0]
    return [pre, act]


def _training_forward(b: _Builder, nodes: Sequence[Node], lowered_bn: dict[int, list[Node]],
                      train_bn: set[int], target: str | Sequence[str],
                      reached: set[str]) -> tuple[list[Node], dict[str, str]]:
    """The forward nodes that compute ``target`` (one tensor or several) in training form: BatchNorm with batch
    statistics where its parameters train, fused activations other than Relu/Relu6/Clip split
    out, recurrent ops unrolled. Returns the nodes (shared Node objects where the infer form is
    identical) and original tensor -> training tensor names."""
    renamed: dict[str, str] = {}
    result: list[Node] = []
    for node in _ancestors(nodes, target):
        inputs = [renamed.get(i, i) for i in node.inputs]
        changed = inputs != list(node.inputs)
        if node.op == "BatchNorm":
            if id(node) in train_bn:
                x, scale, bias, mean, var = inputs
                y = node.outputs[0]
                attrs = {"epsilon": float(node.attrs.get("epsilon", 1e-5)),
                         "momentum": float(node.attrs.get("momentum", 0.9)),
                         "layout": node.attrs.get("layout", "NCHW")}
                made = b.node("BatchNormTrain", [x, scale, bias, mean, var], attrs,
                              outputs=[b.fresh(f"train/{y}"), b.fresh(f"train/{y}/batch_mean"),
                                       b.fresh(f"train/{y}/batch_invstd")], name=f"train/{node.name or y}")
                renamed[y] = made.outputs[0]
                result.append(made)
            elif not changed:
                result += lowered_bn[id(node)]
            else:
                y = b.fresh(f"train/{node.outputs[0]}")
                result += _lower_batch_norm(b, node.with_(inputs=tuple(inputs)), output=y)
                renamed[node.outputs[0]] = y
            continue
        if node.op in ("LSTM", "GRU") and any(i in reached for i in node.inputs if i):
            made, outputs = unroll_recurrent(b, node, inputs)
            result += made
            renamed.update(outputs)
            continue
        activation = node.attrs.get("activation")
        if activation and activation[0] not in SELF_GRADIENT_ACTIVATIONS:
            result += _unfused(b, node, inputs, renamed)
            continue
        if not changed:
            result.append(node)
            continue
        outputs = []
        for o in node.outputs:
            if o:
                renamed[o] = b.fresh(f"train/{o}")
                b.tensors[renamed[o]] = b.tensors[o]
            outputs.append(renamed.get(o, ""))
        result.append(node.with_(inputs=tuple(inputs), outputs=tuple(outputs),
                                 name=b.fresh(f"train/{node.name or node.outputs[0]}")))
    return result, renamed


def _logits(forward: list[Node], prediction: str, loss: str) -> str:
    """The tensor the fused loss reads: the input of a final Softmax/LogSoftmax (cross-entropy,
    over the last axis) or Sigmoid (bce), else the prediction itself."""
    producer = next((n for n in forward if prediction in n.outputs), None)
    if producer is not None and producer.op in LOSS_SQUASH.get(loss, ()):
        return producer.inputs[0]
    return prediction


def _labels_type(loss: str, logits: TensorType) -> TensorType:
    if loss == "cross_entropy":
        if logits.rank != 2:
            raise ConversionError(f"cross_entropy needs logits [N, classes]; the prediction is {list(logits.shape)}")
        return TensorType("int32", logits.shape[:1])
    return logits


def make_trainable(graph: Graph, config: TrainingConfig | None = None, **options) -> Graph:
    """The graph with infer, grad and train signatures (see the module docstring). ``options``
    are TrainingConfig fields, for ``make_trainable(graph, loss="mse", optimizer="adam")``."""
    if config is None:
        config = TrainingConfig(**options)
    elif options:
        raise ConversionError("give either a TrainingConfig or keyword options, not both")
    if graph.quantization:
        raise ConversionError("a quantized graph cannot be made trainable; convert without --quantize")
    if any(key != "infer" for key in graph.signatures):
        raise ConversionError(f"the graph already has signatures {sorted(graph.signatures)}")
    prediction = config.prediction
    if prediction is None:
        if len(graph.outputs) != 1:
            raise ConversionError(f"the graph has outputs {list(graph.outputs)}; name the one the loss "
                                  f"reads with prediction=")
        prediction = graph.outputs[0]
    if prediction not in graph.tensors or prediction in graph.inputs:
        raise ConversionError(f"prediction {prediction!r} is not a computed tensor of the graph")
    if graph.tensors[prediction].dtype not in FLOAT:
        raise ConversionError(f"prediction {prediction!r} is {graph.tensors[prediction].dtype}, not float")

    params = choose_trainable(graph, config)
    b = _Builder(graph)
    b.variables.update(params)

    # BatchNorm trains (batch statistics, running statistics updated) where its scale or bias
    # does; a fully frozen BatchNorm keeps its running statistics and stays constant.
    train_bn = {id(n) for n in graph.nodes if n.op == "BatchNorm" and any(p in params for p in n.inputs[1:3])}
    for node in graph.nodes:
        if id(node) in train_bn:
            for stat in node.inputs[3:5]:
                if stat in graph.constants:
                    b.variables.add(stat)
    infer_nodes: list[Node] = []
    lowered_bn: dict[int, list[Node]] = {}
    for node in graph.nodes:
        if node.op == "BatchNorm":
            lowered_bn[id(node)] = _lower_batch_norm(b, node)
            infer_nodes += lowered_bn[id(node)]
        else:
            infer_nodes.append(node)

    reached = differentiable_tensors(graph.nodes, params, graph.tensors)
    forward, renamed = _training_forward(b, graph.nodes, lowered_bn, train_bn, prediction, reached)
    logits = _logits(forward, renamed.get(prediction, prediction), config.loss)
    if logits != renamed.get(prediction, prediction) and config.loss == "cross_entropy":
        squash = next(n for n in forward if renamed.get(prediction, prediction) in n.outputs)
        if int(squash.attrs["axis"]) != b.tensors[logits].rank - 1:
            logits = renamed.get(prediction, prediction)
    forward = _ancestors(forward, logits)
    labels_type = _labels_type(config.loss, b.tensors[logits])
    labels = b.fresh("labels")
    b.tensors[labels] = labels_type
    loss_node = b.node("Loss", [logits, labels], {"kind": LOSSES[config.loss]},
                       outputs=[b.fresh("loss"), b.fresh(f"d/{logits}")], name="loss")
    loss, dlogits = loss_node.outputs

    # Trainable embedding tables read by one Gather along axis 0 get row gradients.
    readers: dict[str, list[Node]] = {}
    for node in forward:
        for i in node.inputs:
            readers.setdefault(i, []).append(node)
    sparse = {p: readers[p][0] for p in params if len(readers.get(p, [])) == 1
              and readers[p][0].op == "Gather" and readers[p][0].inputs[0] == p
              and int(readers[p][0].attrs.get("axis", 0)) == 0 and readers[p][0].inputs[1] != p}
    dense = [p for p in params if p not in sparse]
    sources = dense + [n.outputs[0] for n in sparse.values()]

    g = GradContext(b.tensors, b.constants, b.taken)
    grads = backward(g, forward, {logits: dlogits}, sources)
    unreached = [p for p in dense if p not in grads] + [p for p, n in sparse.items() if n.outputs[0] not in grads]
    if unreached:
        raise ConversionError(f"variables {unreached} do not affect the loss (they are not on the path "
                              f"to {prediction!r}); freeze them")
    tail: list[Node] = []
    grad_outputs: dict[str, str] = {}
    for p in dense:
        grad_outputs[f"grad/{p}"] = _name_gradient(g, b, grads[p], f"grad/{p}", tail)
    for p, gather in sparse.items():
        dy = grads[gather.outputs[0]]
        indices = gather.inputs[1]
        count = b.tensors[indices].size
        rows = b.node("Reshape", [dy], {"shape": (count,) + tuple(b.tensors[p].shape[1:])},
                      outputs=[b.fresh(f"grad/{p}/rows")])
        index_source = indices
        if b.tensors[indices].dtype != "int32":
            cast = b.node("Cast", [indices], {"to": "int32"}, base=f"grad/{p}/indices_int32")
            tail.append(cast)
            index_source = cast.outputs[0]
        flat = b.node("Reshape", [index_source], {"shape": (count,)}, outputs=[b.fresh(f"grad/{p}/indices")])
        tail += [rows, flat]
        grad_outputs[f"grad/{p}/rows"] = rows.outputs[0]
        grad_outputs[f"grad/{p}/indices"] = flat.outputs[0]

    # train: clip, then update every variable in place.
    update_nodes: list[Node] = []
    update_grads = {p: grad_outputs[f"grad/{p}"] for p in dense}
    update_grads.update({p: grad_outputs[f"grad/{p}/rows"] for p in sparse})
    if config.clip_norm is not None:
        order = list(update_grads)
        clip = b.node("ClipByGlobalNorm", [update_grads[p] for p in order], {"max_norm": float(config.clip_norm)},
                      outputs=[b.fresh(f"clipped/{p}") for p in order], name="optimizer/clip")
        update_nodes.append(clip)
        update_grads = dict(zip(order, clip.outputs))
    lr = b.variable(LEARNING_RATE, np.float32(config.lr), "float32")
    attrs = config.optimizer_attrs()
    for p in params:
        slots = optimizer_slots(b, p, config.optimizer)
        if p in sparse:
            inputs = [p, update_grads[p], grad_outputs[f"grad/{p}/indices"], lr] + slots
        else:
            inputs = [p, update_grads[p], lr] + slots
        update_nodes.append(b.node("OptimizerUpdate", inputs, {**attrs, "sparse": p in sparse},
                                   outputs=[], name=f"optimizer/update/{p}"))

    nodes = infer_nodes + [n for n in forward if not any(n is m for m in infer_nodes)]
    grad_start = len(nodes)
    nodes += [loss_node] + g.nodes + tail
    train_start = len(nodes)
    nodes += update_nodes
    index = {id(n): k for k, n in enumerate(nodes)}
    forward_indices = sorted(index[id(n)] for n in forward)
    grad_indices = tuple(forward_indices + list(range(grad_start, train_start)))
    signature_inputs = {name: name for name in graph.inputs}
    signatures = {
        "infer": Signature(dict(signature_inputs), {name: name for name in graph.outputs},
                           tuple(range(len(infer_nodes)))),
        "grad": Signature({**signature_inputs, "labels": labels}, {"loss": loss, **grad_outputs}, grad_indices),
        "train": Signature({**signature_inputs, "labels": labels}, {"loss": loss},
                           grad_indices + tuple(range(train_start, len(nodes)))),
    }
    metadata = dict(graph.metadata)
    metadata.update({
        "training.loss": config.loss,
        "training.optimizer": json.dumps({**attrs, "learning_rate": float(config.lr),
                                          "clip_norm": config.clip_norm,
                                          "learning_rate_variable": lr}, sort_keys=True),
        "training.trainable": json.dumps(params),
        "training.labels": json.dumps({"dtype": labels_type.dtype, "shape": list(labels_type.shape)}),
    })
    used = set(graph.inputs) | {labels} | set(graph.outputs) | b.variables
    for n in nodes:
        used.update(x for x in (*n.inputs, *n.outputs) if x)
    tensors = {k: v for k, v in b.tensors.items() if k in used}
    constants = {k: v for k, v in b.constants.items() if k in used}
    return graph.replace(nodes=tuple(nodes), inputs=tuple(graph.inputs) + (labels,), tensors=tensors,
                         constants=constants, variables=frozenset(b.variables & set(constants)),
                         signatures=signatures, metadata=metadata, dynamic_dims={})


def optimizer_slots(b: _Builder, p: str, optimizer: str) -> list[str]:
    """New variables holding the optimizer's state for parameter ``p`` (zeros like ``p``; the step
    count a float32 scalar), in the order OptimizerUpdate reads them."""
    slots = []
    for slot in OPTIMIZER_SLOTS[optimizer]:
        if slot == "step":
            slots.append(b.variable(f"optimizer/{p}/step", 0.0, "float32"))
        else:
            slots.append(b.variable(f"optimizer/{p}/{slot}", np.zeros(b.tensors[p].shape), b.tensors[p].dtype))
    return slots


def _name_gradient(g: GradContext, b: _Builder, tensor: str, wanted: str, tail: list[Node]) -> str:
    """Gives the gradient tensor its public name: renames it where a backward node made it for
    this purpose alone, else copies it through an Identity."""
    name = b.fresh(wanted) if wanted in b.taken else wanted
    b.taken.add(name)
    producers = [n for n in g.nodes if tensor in n.outputs]
    readers = [n for n in g.nodes + tail if tensor in n.inputs]
    if producers and not readers:
        k = g.nodes.index(producers[0])
        node = producers[0]
        g.nodes[k] = node.with_(outputs=tuple(name if o == tensor else o for o in node.outputs))
        b.tensors[name] = b.tensors.pop(tensor)
        return name
    tail.append(b.node("Identity", [tensor], {}, outputs=[name]))
    return name

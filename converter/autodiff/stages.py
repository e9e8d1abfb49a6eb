"""Pipeline stages of a trainable model: one graph per stage, each with forward, backward and
update signatures over its own variables (model parallelism, split learning).

A stage is the nodes computing its ``outputs`` (the tensors the next stage reads; the last stage:
the loss) from its ``inputs`` (the previous stage's outputs; the first stage: the model's inputs).

    forward   inputs                        -> outputs                  training form
              (last stage: infer  inputs    -> the model's prediction, for serving)
    backward  inputs + grad_in/<output>     -> grad/<input>, grad/<p>   forward again, then
              (last stage: inputs + labels  -> loss, grad/<input>, grad/<p>)   reverse mode
    update    grad/<p> for every variable p -> (nothing)                the optimizer, in place

With ``recompute=True`` (the default) backward recomputes the forward from the stage's inputs: a
stage keeps only its received tensors per micro-batch (GPipe with recomputation), at the cost of a
second forward. With ``recompute=False`` forward also returns saved/<t> for every activation t its
backward reads, and backward takes them (with the inputs it reads) instead of running the forward
again: no repeated work, more memory per micro-batch in flight. The last stage runs its forward
only inside backward (its loss needs the labels), so the option changes nothing there. grad/<input> is given for float inputs that the
stage's computation depends on (a stage whose inputs are the model's inputs still returns them:
split learning's device never needs them, a test may). Gradients from several micro-batches are
summed by the caller and handed to update once; the optimizer slots live in the stage's file.

Not supported yet (refused with the stage and the op named): BatchNorm whose parameters train
(its batch statistics would need the whole batch in one stage call), and clip_norm (a global
norm spans every stage).
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from converter.autodiff.context import FLOAT, GradContext, backward, differentiable_tensors
from converter.autodiff.trainable import (LEARNING_RATE, LOSSES, TrainingConfig, _ancestors, _Builder, _labels_type,
                                          _logits, _name_gradient, _training_forward, choose_trainable,
                                          optimizer_slots, parameter_candidates)
from converter.errors import ConversionError
from converter.ir import Graph, Node, Signature


def make_stages(graph: Graph, cuts: Sequence[Sequence[str]], config: TrainingConfig | None = None, *,
                recompute: bool = True, **options) -> list[Graph]:
    """The stages of ``graph`` (after converter.autodiff.pipeline.TRAINABLE_PIPELINE) cut at
    ``cuts``: cut k is the tensors stage k sends to stage k + 1. ``config`` as for make_trainable
    (trainable / freeze apply to the whole model; a stage may end up with no variable);
    ``recompute``: see the module."""
    if config is None:
        config = TrainingConfig(**options)
    elif options:
        raise ConversionError("give either a TrainingConfig or keyword options, not both")
    if config.clip_norm is not None:
        raise ConversionError("clip_norm is not supported across pipeline stages (the global norm spans them)")
    if graph.quantization:
        raise ConversionError("a quantized graph cannot be made trainable; convert without --quantize")
    params = set(choose_trainable(graph, config))
    boundaries = [tuple(graph.inputs)] + [tuple(c) for c in cuts]
    for k, cut in enumerate(boundaries[1:], 1):
        unknown = [t for t in cut if t not in graph.tensors or t in graph.constants]
        if unknown or not cut:
            raise ConversionError(f"cut {k - 1}: {unknown or 'no tensors'} are not computed tensors of the graph")
    stages = []
    for k in range(len(boundaries)):
        outputs = boundaries[k + 1] if k + 1 < len(boundaries) else None
        stages.append(_stage(graph, k, boundaries[k], outputs, params, config, recompute))
    return stages


def _stage(graph: Graph, k: int, inputs: tuple[str, ...], outputs: tuple[str, ...] | None, params: set[str],
           config: TrainingConfig, recompute: bool) -> Graph:
    last = outputs is None
    if last:
        if len(graph.outputs) != 1 and config.prediction is None:
            raise ConversionError(f"the graph has outputs {list(graph.outputs)}; name the one the loss reads "
                                  f"with prediction=")
        targets: tuple[str, ...] = (config.prediction or graph.outputs[0],)
    else:
        targets = outputs
    nodes = _stage_nodes(graph, k, inputs, targets)
    stage = graph.replace(nodes=tuple(nodes), inputs=inputs, outputs=targets, signatures={})
    stage_params = [p for p in parameter_candidates(stage) if p in params]
    for node in nodes:
        if node.op == "BatchNorm" and any(p in stage_params for p in node.inputs[1:3]):
            raise ConversionError(f"stage {k}: BatchNorm {node.name or node.outputs[0]!r} trains; pipeline "
                                  "stages do not train BatchNorm yet (freeze it)")
    b = _Builder(stage)
    b.variables.update(stage_params)
    float_inputs = [t for t in inputs if b.tensors[t].dtype in FLOAT]
    reached = differentiable_tensors(nodes, list(stage_params) + float_inputs, b.tensors)
    forward, renamed = _training_forward(b, nodes, {}, set(), list(targets), reached)
    g_inputs: dict[str, str] = {name: name for name in inputs}
    loss = None
    if last:
        prediction = renamed.get(targets[0], targets[0])
        logits = _logits(forward, prediction, config.loss)
        forward = _ancestors(forward, logits)
        labels = b.fresh("labels")
        b.tensors[labels] = _labels_type(config.loss, b.tensors[logits])
        loss_node = b.node("Loss", [logits, labels], {"kind": LOSSES[config.loss]},
                           outputs=[b.fresh("loss"), b.fresh(f"d/{logits}")], name="loss")
        loss, seed = loss_node.outputs
        seeds = {logits: seed}
        g_inputs["labels"] = labels
        head = [loss_node]
    else:
        seeds, head = {}, []
        for t in targets:
            seed = b.fresh(f"grad_in/{t}")
            b.tensors[seed] = b.tensors[t]
            seeds[renamed.get(t, t)] = seed
            g_inputs[f"grad_in/{t}"] = seed
    g = GradContext(b.tensors, b.constants, b.taken)
    sources = list(stage_params) + [t for t in float_inputs if t in reached]
    grads = backward(g, forward, seeds, sources)
    unreached = [p for p in stage_params if p not in grads]
    if unreached:
        raise ConversionError(f"stage {k}: variables {unreached} do not affect its outputs; freeze them")
    tail: list[Node] = []
    grad_outputs = {f"grad/{t}": _name_gradient(g, b, grads[t], f"grad/{t}", tail) for t in sources if t in grads}

    update_inputs: dict[str, str] = {}
    updates: list[Node] = []
    if stage_params:
        lr = b.variable(LEARNING_RATE, np.float32(config.lr), "float32")
        attrs = config.optimizer_attrs()
        for p in stage_params:
            given = b.fresh(f"update/grad/{p}")
            b.tensors[given] = b.tensors[p]
            update_inputs[f"grad/{p}"] = given
            slots = optimizer_slots(b, p, config.optimizer)
            updates.append(b.node("OptimizerUpdate", [p, given, lr] + slots, {**attrs, "sparse": False},
                                  outputs=[], name=f"optimizer/update/{p}"))

    all_nodes = forward + head + g.nodes + tail
    n_forward, n_backward = len(forward), len(all_nodes)
    all_nodes += updates
    infer_indices: tuple[int, ...] = ()
    if last:  # the model's own prediction (a final Softmax and all), for serving through the stages
        all_nodes += [n for n in nodes if not any(n is m for m in forward)]
        position = {id(n): i for i, n in enumerate(all_nodes)}
        infer_indices = tuple(sorted(position[id(n)] for n in nodes))
    forward_outputs = {} if last else {t: renamed.get(t, t) for t in targets}
    backward_nodes = range(n_backward)
    if not (last or recompute):
        saved = _saved_activations(forward, all_nodes[n_forward:n_backward], set(inputs) | b.variables)
        forward_outputs.update({f"saved/{t}": t for t in saved})
        read = {i for n in all_nodes[n_forward:n_backward] for i in n.inputs}
        g_inputs = {**{name: t for name, t in g_inputs.items() if name.startswith("grad_in/") or t in read},
                    **{f"saved/{t}": t for t in saved}}
        backward_nodes = range(n_forward, n_backward)
    signatures = {
        "backward": Signature(g_inputs, {**({"loss": loss} if last else {}), **grad_outputs},
                              tuple(backward_nodes)),
    }
    if not last:
        signatures["forward"] = Signature({t: t for t in inputs}, forward_outputs, tuple(range(n_forward)))
    else:
        signatures["infer"] = Signature({t: t for t in inputs}, {targets[0]: targets[0]}, infer_indices)
    if updates:
        signatures["update"] = Signature(update_inputs, {}, tuple(range(n_backward, n_backward + len(updates))))
    used = set(inputs) | set(g_inputs.values()) | set(update_inputs.values()) | b.variables | set(targets)
    for n in all_nodes:
        used.update(x for x in (*n.inputs, *n.outputs) if x)
    metadata = dict(graph.metadata)
    metadata.update({"pipeline.stage": str(k), "training.trainable": json.dumps(stage_params)})
    stage_inputs = tuple(dict.fromkeys(list(inputs) + [t for name, t in g_inputs.items() if not name.startswith("saved/")]
                                       + list(update_inputs.values())))
    return stage.replace(nodes=tuple(all_nodes), inputs=stage_inputs,
                         outputs=tuple(dict.fromkeys(list(forward_outputs.values()) + list(grad_outputs.values())
                                                     + ([loss, targets[0]] if loss else []))),
                         tensors={t: v for t, v in b.tensors.items() if t in used},
                         constants={t: v for t, v in b.constants.items() if t in used},
                         variables=frozenset(b.variables & used), signatures=signatures, metadata=metadata,
                         dynamic_dims={})


def _saved_activations(forward: Sequence[Node], backward_nodes: Sequence[Node], live: set[str]) -> list[str]:
    """The forward's tensors that ``backward_nodes`` read and that change from call to call (they
    depend on the stage's inputs or variables; those computed from constants alone the runtime
    folds once), in forward order."""
    live = set(live)
    for node in forward:
        if any(i in live for i in node.inputs if i):
            live.update(o for o in node.outputs if o)
    read = {i for n in backward_nodes for i in n.inputs if i}
    return [o for n in forward for o in n.outputs if o and o in read and o in live]


def _stage_nodes(graph: Graph, k: int, inputs: Sequence[str], targets: Sequence[str]) -> list[Node]:
    """The nodes computing ``targets`` from ``inputs`` and constants; an error naming the tensor when
    one they need comes from neither."""
    given = set(inputs)
    needed, keep = set(targets) - given, []
    for node in reversed(graph.nodes):
        if any(o in needed for o in node.outputs if o):
            keep.append(node)
            needed.update(i for i in node.inputs if i and i not in given)
    produced = {o for n in keep for o in n.outputs}
    missing = sorted(t for t in needed if t not in produced and t not in graph.constants and t not in given)
    if missing:
        raise ConversionError(f"stage {k} needs {missing}, which earlier stages compute but its cut does not "
                              f"carry; add them to the cut")
    return keep[::-1]


def stage_files(model, cuts: Sequence[Sequence[str]], config: TrainingConfig | None = None, *,
                input_shapes=None, recompute: bool = True, **options) -> list[bytes]:
    """ONNX model (path or ModelProto) or IR Graph -> the .edge bytes of each stage: the passes
    safe for training (TRAINABLE_PIPELINE), then make_stages. Cut tensor names are the
    converted graph's (the ONNX names, where no pass renamed them)."""
    from converter.api import _import
    from converter.autodiff.pipeline import TRAINABLE_PIPELINE
    from converter.passes import run_passes
    from converter.writer import write_model

    graph, _ = run_passes(_import(model, input_shapes), TRAINABLE_PIPELINE)
    return [write_model(stage) for stage in make_stages(graph, cuts, config, recompute=recompute, **options)]

"""Outlier smoothing (SmoothQuant-style): activation outliers moved into the weights that read them.

Transformers carry a few activation channels whose values are 10-30x the others' (on
all-MiniLM-L6-v2 the LayerNorm outputs reach 28 in one of 384 channels while most stay within
+-2). One per-tensor int8 scale spends its 256 steps on those few channels and rounds the rest
coarsely. Matmuls do not need the channels at their own magnitude: for a FullyConnected
``y = x @ W.T`` and any positive per-channel ``s``,

    y = (x / s) @ (W * s).T          (column j of W [N, K] times s_j)

exactly. With ``s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha)`` (max|W_j| over column j of
every FullyConnected that reads x) the activation's channels are evened out and the weights,
quantized per output channel, absorb the difference.

Where ``x`` is a LayerNorm's output, ``x / s`` is free: it folds into the LayerNorm's scale and
bias (gamma / s, beta / s). When the LayerNorm's output also feeds something other than those
FullyConnected layers (a post-LN BERT's residual Add, which must see the unscaled values), the
FullyConnected layers read a copy of the LayerNorm with the folded scale and bias; the copy reads
the same input and costs one LayerNorm, small beside the matmuls it makes accurate.

``smooth_layer_norms`` is a pure graph transform, exact in real arithmetic (float32 rounding of
the rescaled constants aside); ``channel_peaks`` measures max|x_j| on the calibration data.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from converter.ir import Graph, Node, TensorType
from converter.quantize.common import drop_unused

# SmoothQuant's migration strength: 0.5 splits the outlier ratio evenly between activations and
# weights. On all-MiniLM-L6-v2, 0.5 and 0.75 gave the same accuracy; 0 would leave x unchanged.
DEFAULT_ALPHA = 0.5
# Channels whose activation or weight peak is below this get s = 1 (nothing to even out, and a
# zero peak would make s 0 or infinite).
PEAK_FLOOR = 1e-5


@dataclass(frozen=True)
class SmoothingSite:
    """A LayerNorm whose output ``tensor`` feeds the FullyConnected nodes ``readers`` (indices
    into graph.nodes); ``shared``: the output also feeds other ops or is a graph output."""
    norm: int
    tensor: str
    readers: tuple[int, ...]
    shared: bool


@dataclass(frozen=True)
class Smoothed:
    """What the transform did to one site, for the report: the LayerNorm output smoothed, the
    tensor the FullyConnected layers now read, and the range of the scales s."""
    tensor: str
    smoothed: str
    readers: int
    scale_min: float
    scale_max: float


def _per_channel(graph: Graph, name: str, channels: int) -> bool:
    """A constant that broadcasts as one value per channel of the last axis (a LayerNorm's
    scale or bias)."""
    return graph.is_constant(name) and name not in graph.variables and \
        graph.constants[name].size == channels and graph.constants[name].shape[-1:] == (channels,)


def smoothing_sites(graph: Graph) -> list[SmoothingSite]:
    """LayerNorms over the last axis with constant per-channel scale (and bias) whose output
    feeds at least one FullyConnected with constant weights."""
    readers: dict[str, list[int]] = {}
    others: set[str] = set(graph.outputs)
    for index, node in enumerate(graph.nodes):
        for slot, name in enumerate(node.inputs):
            if not name:
                continue
            weights = node.inputs[1] if node.op == "FullyConnected" and len(node.inputs) > 1 else ""
            if slot == 0 and weights and graph.is_constant(weights) and weights not in graph.variables:
                readers.setdefault(name, []).append(index)
            else:
                others.add(name)
    sites = []
    for index, node in enumerate(graph.nodes):
        if node.op != "LayerNorm" or node.outputs[0] not in readers:
            continue
        x = graph.tensors[node.inputs[0]]
        channels = x.shape[-1] if x.rank else 0
        if not isinstance(channels, int) or int(node.attrs.get("axis", -1)) % max(x.rank, 1) != x.rank - 1:
            continue
        bias = node.inputs[2] if len(node.inputs) > 2 else ""
        if not _per_channel(graph, node.inputs[1], channels) or bias and not _per_channel(graph, bias, channels):
            continue
        output = node.outputs[0]
        sites.append(SmoothingSite(index, output, tuple(readers[output]), output in others))
    return sites


def channel_peaks(graph: Graph, batches: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]
                  ) -> dict[str, np.ndarray]:
    """name -> max |x_j| per channel of the last axis over ``batches`` (finite values only)."""
    from converter.reference import run

    peaks: dict[str, np.ndarray] = {}
    if not names:
        return peaks
    for feeds in batches:
        values = run(graph, feeds, outputs=list(names))
        for name in names:
            value = np.asarray(values[name], np.float64)
            value = np.abs(np.where(np.isfinite(value), value, 0.0)).reshape(-1, value.shape[-1])
            peak = value.max(axis=0) if value.shape[0] else np.zeros(value.shape[1])
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def smoothing_scales(activation_peak: np.ndarray, weight_peak: np.ndarray, alpha: float = DEFAULT_ALPHA
                     ) -> np.ndarray:
    """s_j = max|x_j| ** alpha / max|W_j| ** (1 - alpha) as float32; 1 where either peak is below
    PEAK_FLOOR."""
    a = np.asarray(activation_peak, np.float64)
    w = np.asarray(weight_peak, np.float64)
    usable = (a >= PEAK_FLOOR) & (w >= PEAK_FLOOR)
    s = np.where(usable, np.maximum(a, PEAK_FLOOR) ** alpha / np.maximum(w, PEAK_FLOOR) ** (1.0 - alpha), 1.0)
    return s.astype(np.float32)


def _fresh(taken: set[str], base: str) -> str:
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def smooth_layer_norms(graph: Graph, peaks: Mapping[str, np.ndarray], alpha: float = DEFAULT_ALPHA
                       ) -> tuple[Graph, list[Smoothed]]:
    """The graph with every smoothing site whose output has a peak in ``peaks`` smoothed (see the
    module doc); the FullyConnected layers compute the same values (up to float32 rounding)."""
    sites = [site for site in smoothing_sites(graph) if site.tensor in peaks]
    if not sites:
        return graph, []
    nodes = list(graph.nodes)
    constants = dict(graph.constants)
    tensors = dict(graph.tensors)
    taken = set(tensors) | {node.name for node in graph.nodes if node.name}
    inserted: dict[int, Node] = {}
    done = []
    for site in sites:
        norm = graph.nodes[site.norm]
        weights = [graph.constants[graph.nodes[i].inputs[1]] for i in site.readers]
        weight_peak = np.max(np.abs(np.concatenate(weights, axis=0).astype(np.float64)), axis=0)
        s = smoothing_scales(peaks[site.tensor], weight_peak, alpha)
        inverse = np.float32(1.0) / s
        folded = []
        for slot in (1, 2):
            if slot < len(norm.inputs) and norm.inputs[slot]:
                name = norm.inputs[slot]
                value = graph.constants[name]
                new = _fresh(taken, f"{name}_smoothed")
                constants[new] = (value.reshape(-1) * inverse).astype(value.dtype).reshape(value.shape)
                tensors[new] = graph.tensors[name]
                folded.append(new)
        output = _fresh(taken, f"{site.tensor}_smoothed") if site.shared else site.tensor
        norm_inputs = (norm.inputs[0], *folded)
        if site.shared:
            tensors[output] = graph.tensors[site.tensor]
            label = norm.name or norm.outputs[0]
            inserted[site.norm] = norm.with_(inputs=norm_inputs, outputs=(output,),
                                             name=_fresh(taken, f"{label}/smoothed"))
        else:
            nodes[site.norm] = norm.with_(inputs=norm_inputs)
        for i in site.readers:
            reader = nodes[i]
            w = reader.inputs[1]
            new = _fresh(taken, f"{w}_smoothed")
            constants[new] = (graph.constants[w] * s[np.newaxis, :]).astype(graph.constants[w].dtype)
            tensors[new] = TensorType(graph.tensors[w].dtype, graph.tensors[w].shape)
            nodes[i] = reader.with_(inputs=(output, new, *reader.inputs[2:]))
        done.append(Smoothed(site.tensor, output, len(site.readers), float(s.min()), float(s.max())))
    ordered = []
    for index, node in enumerate(nodes):
        ordered.append(node)
        if index in inserted:
            ordered.append(inserted[index])
    result = graph.replace(nodes=tuple(ordered), constants=constants, tensors=tensors)
    constants, tensors = drop_unused(result.constants, dict(result.tensors), result.nodes,
                                     (*result.inputs, *result.outputs))
    return result.replace(constants=constants, tensors=tensors), done

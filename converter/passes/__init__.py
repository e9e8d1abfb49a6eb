"""Graph -> graph passes and the default optimization pipeline.

Each pass is a pure function (the argument graph is never modified) that keeps the graph's
values at its outputs; its docstring states the structural invariant it establishes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from converter.ir import Graph
from converter.passes.attention import fuse_attention
from converter.passes.batch_norm import fold_batch_norm, lower_batch_norm
from converter.passes.cleanup import drop_unused_constants, merge_reshapes, remove_dead_nodes, remove_identities
from converter.passes.folding import fold_constants
from converter.passes.fusion import FUSABLE_ACTIVATIONS, fuse_activation, fuse_patterns, fuse_residual_add
from converter.passes.layout import cancel_transposes, to_nhwc
from converter.passes.pad import fold_pads

Pass = Callable[[Graph], Graph]

PIPELINE: tuple[Pass, ...] = (
    fold_constants,
    remove_identities,
    remove_dead_nodes,
    fold_batch_norm,
    lower_batch_norm,
    to_nhwc,
    cancel_transposes,
    fold_pads,
    fuse_patterns,
    fuse_attention,
    fuse_activation,
    merge_reshapes,
    fold_constants,
    remove_dead_nodes,
)


@dataclass(frozen=True)
class PassRecord:
    name: str
    nodes_before: int
    nodes_after: int
    # op -> change in its node count (only ops whose count changed)
    op_delta: dict[str, int]
    activations_fused: int = 0


@dataclass
class PassReport:
    passes: list[PassRecord] = field(default_factory=list)
    transposes_left: int = 0

    def _removed_by(self, name: str) -> int:
        return sum(r.nodes_before - r.nodes_after for r in self.passes if r.name == name)

    @property
    def folded(self) -> int:
        """Nodes replaced by constants."""
        return self._removed_by("fold_constants")

    @property
    def fused(self) -> int:
        """Activations fused into the op before them, BatchNorms folded into weights, and skip
        connections' Adds (with the channel Pads before them) fused into convolutions."""
        return (sum(r.activations_fused for r in self.passes) + self._removed_by("fold_batch_norm")
                + self._removed_by("fuse_residual_add"))

    @property
    def removed(self) -> int:
        """Dead or no-op nodes removed."""
        return self._removed_by("remove_dead_nodes") + self._removed_by("remove_identities")

    def summary(self) -> dict[str, int]:
        return {"folded": self.folded, "fused": self.fused, "removed": self.removed,
                "transposes_left": self.transposes_left}


def _op_delta(before: Graph, after: Graph) -> dict[str, int]:
    a, b = before.op_counts(), after.op_counts()
    return {op: b.get(op, 0) - a.get(op, 0) for op in sorted(set(a) | set(b)) if b.get(op, 0) != a.get(op, 0)}


def _fused_count(graph: Graph) -> int:
    return sum(1 for n in graph.nodes if n.attrs.get("activation"))


def run_passes(graph: Graph, passes: tuple[Pass, ...] = PIPELINE) -> tuple[Graph, PassReport]:
    report = PassReport()
    for run in passes:
        after = run(graph)
        report.passes.append(PassRecord(
            run.__name__, len(graph.nodes), len(after.nodes), _op_delta(graph, after),
            max(0, _fused_count(after) - _fused_count(graph))))
        graph = after
    report.transposes_left = graph.op_counts().get("Transpose", 0)
    return graph, report


def optimize(graph: Graph, attention: bool = True) -> tuple[Graph, PassReport]:
    """The default pipeline: fold constants, clean up, fold/lower BatchNorm, convert to NHWC,
    cancel transposes, fuse patterns (bias, GELU, SiLU, LayerNorm, RMSNorm, HardSwish), then attention
    (unless ``attention`` is False: int8 mode quantizes the unfused products), activations, merge
    the Reshape pairs activation fusion leaves, fold and clean up again."""
    return run_passes(graph, PIPELINE if attention else tuple(p for p in PIPELINE if p is not fuse_attention))


__all__ = [
    "PIPELINE", "PassRecord", "PassReport", "optimize", "run_passes", "fold_constants",
    "remove_dead_nodes", "remove_identities", "merge_reshapes", "drop_unused_constants", "fold_batch_norm",
    "lower_batch_norm", "to_nhwc", "cancel_transposes", "fold_pads", "fuse_patterns", "fuse_attention", "fuse_activation",
    "fuse_residual_add", "FUSABLE_ACTIVATIONS",
]

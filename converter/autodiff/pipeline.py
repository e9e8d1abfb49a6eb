"""The passes a graph goes through before make_trainable.

The default pipeline minus the BatchNorm passes: folding BatchNorm into the weights before it
would freeze its statistics, and lowering it to Mul/Add by constants would lose the running
statistics the train signature updates. make_trainable lowers BatchNorm itself (reading the
statistics from variables). Constant folding is safe: it only folds constants, never
variables, and the weights become variables only afterwards.
"""
from __future__ import annotations

from converter.autodiff.trainable import TrainingConfig, make_trainable
from converter.ir import Graph
from converter.passes import (PassReport, cancel_transposes, fold_constants, fuse_activation, fuse_patterns,
                              remove_dead_nodes, remove_identities, run_passes, to_nhwc)

TRAINABLE_PIPELINE = (
    fold_constants,
    remove_identities,
    remove_dead_nodes,
    to_nhwc,
    cancel_transposes,
    fuse_patterns,
    fuse_activation,
    fold_constants,
    remove_dead_nodes,
)
# With optimize=False: only what writing needs.
TRAINABLE_REQUIRED = (to_nhwc,)


def trainable_graph(graph: Graph, config: TrainingConfig, optimize: bool = True) -> tuple[Graph, PassReport]:
    """Passes safe for training, then make_trainable."""
    prepared, report = run_passes(graph, TRAINABLE_PIPELINE if optimize else TRAINABLE_REQUIRED)
    return make_trainable(prepared, config), report

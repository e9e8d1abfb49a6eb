"""Which samples each replica trains on, as a pure function of (seed, step, member).

A group of replicas that average their gradients (all of Sync, one group of Hybrid) shares one
stream of global batches: epoch e is ``permutation(seed + e)`` of the group's samples, cut into
global batches of ``members * batch`` with the remainder dropped; member m of step t takes the m-th
``batch`` of global batch t. One process training at batch ``members * batch`` on the same stream
(``global_batch(..)``) therefore sees exactly the same samples per step, which is how the sync
equivalence test checks the whole system against edge.Trainer.

Groups split the data: group g of G owns the samples ``g::G`` (Async is G groups of one).
"""
from __future__ import annotations

import numpy as np


def group_samples(count: int, group: int, groups: int) -> np.ndarray:
    return np.arange(group, count, groups, dtype=np.int64)


def steps_per_epoch(samples: int, global_batch: int) -> int:
    return max(samples // global_batch, 1)


def global_batch(samples: np.ndarray, seed: int, step: int, size: int) -> np.ndarray:
    """Indices (into the dataset) of global batch ``step`` of size ``size`` over ``samples``."""
    if len(samples) < size:
        raise ValueError(f"a global batch of {size} needs at least that many samples, the group has {len(samples)}")
    per_epoch = steps_per_epoch(len(samples), size)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(len(samples))
    return samples[order[k * size:(k + 1) * size]]


def member_batch(samples: np.ndarray, seed: int, step: int, batch: int, member: int, members: int) -> np.ndarray:
    whole = global_batch(samples, seed, step, batch * members)
    return whole[member * batch:(member + 1) * batch]

"""How replicas' gradients become updates: every strategy is groups of replicas.

A group averages the gradients of its members computed from the same parameters (a synchronous
round) and its average is applied as one update; groups do not wait for one another. So

    Sync(backup_workers=b)     one group of N + b members; a round closes on the first N gradients
                               and the b late ones are dropped (Chen et al. 2016, TF's
                               SyncReplicasOptimizer): N replicas act as one N times larger batch
    Async(n_fetch, n_push)     N groups of one (Downpour): each replica pulls every n_fetch steps,
                               pushes the mean of its last n_push gradients, and never waits
    BoundedStaleness(s)        Async whose pushes computed from parameters more than s updates old
                               are rejected (the replica pulls and recomputes): stale-synchronous
                               parallel's bound, enforced at the shards
    Hybrid(groups=M, per_group=N)  M asynchronous groups of N synchronous replicas

``layout(replicas)`` gives (groups, members per group, gradients that close a round).
"""
from __future__ import annotations

from dataclasses import dataclass

from cloudsplit.training.model import TrainingError


@dataclass(frozen=True)
class Sync:
    backup_workers: int = 0
    name = "sync"

    def layout(self, replicas: int) -> tuple[int, int, int]:
        if not 0 <= self.backup_workers < replicas:
            raise TrainingError(f"backup_workers must be in [0, replicas), got {self.backup_workers} with {replicas} replicas")
        return 1, replicas, replicas - self.backup_workers

    max_staleness = None


@dataclass(frozen=True)
class Async:
    n_fetch: int = 1
    n_push: int = 1
    name = "async"
    max_staleness = None

    def __post_init__(self):
        if self.n_fetch < 1 or self.n_push < 1 or self.n_fetch > 1000 or self.n_push > 1000:
            raise TrainingError(f"n_fetch and n_push must be in [1, 1000], got {self.n_fetch}, {self.n_push}")

    def layout(self, replicas: int) -> tuple[int, int, int]:
        return replicas, 1, 1


@dataclass(frozen=True)
class BoundedStaleness(Async):
    staleness: int = 4
    name = "ssp"

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.staleness <= 1_000_000:
            raise TrainingError(f"staleness must be in [0, 1000000], got {self.staleness}")

    @property
    def max_staleness(self) -> int:
        return self.staleness


@dataclass(frozen=True)
class Hybrid:
    groups: int = 2
    per_group: int = 2
    name = "hybrid"
    max_staleness = None

    def layout(self, replicas: int) -> tuple[int, int, int]:
        if self.groups < 1 or self.per_group < 1 or self.groups * self.per_group != replicas:
            raise TrainingError(f"hybrid needs groups x per_group = replicas, got {self.groups} x {self.per_group} "
                             f"for {replicas} replicas")
        return self.groups, self.per_group, self.per_group


Strategy = Sync | Async | BoundedStaleness | Hybrid


def parse(name: str, *, backup_workers: int = 0, staleness: int = 4, groups: int = 2, replicas: int = 1,
          n_fetch: int = 1, n_push: int = 1) -> Strategy:
    """A strategy from its command-line spelling: sync, async, ssp, hybrid."""
    if name == "sync":
        return Sync(backup_workers)
    if name == "async":
        return Async(n_fetch, n_push)
    if name in ("ssp", "bounded-staleness", "bounded_staleness"):
        return BoundedStaleness(n_fetch, n_push, staleness)
    if name == "hybrid":
        if groups < 1 or replicas % groups:
            raise TrainingError(f"hybrid: {replicas} replicas do not split into {groups} equal groups")
        return Hybrid(groups, replicas // groups)
    raise TrainingError(f"strategy must be sync, async, ssp or hybrid, got {name!r}")

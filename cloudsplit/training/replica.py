"""A model replica: pulls parameters from the shards, computes gradients with the C runtime's
``grad`` signature on its batches, and pushes them back, round after round (see ``shard`` for the
round protocol and ``strategies`` for what the groups mean).

A replica is only told its group, its place in it and the shards' handles; it never waits for other
replicas except through the shards' rounds. It survives a shard's restart: a call that fails is
retried after a pause, and the next pull re-synchronises its round numbers with the shard's.
"""
from __future__ import annotations

import collections
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from cloudsplit.training import codecs, data as sampling
from cloudsplit.training.model import GRAD_PREFIX, Placement
from edge.trainer import LABELS, Trainer

RETRY_PAUSE_S = 0.2


@dataclass
class ReplicaConfig:
    index: int
    group: int
    member: int
    members: int
    groups: int
    batch: int
    seed: int = 0
    n_fetch: int = 1
    n_push: int = 1
    compression: str = "none"
    num_threads: int = 1
    clip_norm: float | None = None
    slowdown: float = 1.0                    # stragglers in benchmarks: sleep (slowdown - 1) x compute
    stand_in_compute_s: float | None = None  # overhead benchmarks: a fixed sleep instead of the grad signature
    table_inputs: dict[str, str] = field(default_factory=dict)  # sparse table -> the input holding its ids


class Replica:
    def __init__(self, model_data: bytes, placement: Placement, config: ReplicaConfig, features, labels, shards):
        self.config = config
        self.placement = placement
        self.shards = shards
        self._folder = tempfile.mkdtemp(prefix=f"edge-replica-{config.index}-")
        path = os.path.join(self._folder, "model.edge")
        with open(path, "wb") as out:
            out.write(model_data)
        self.trainer = Trainer(path, num_threads=config.num_threads)
        self._stand_in: dict[str, np.ndarray] | None = None
        self._step_times = collections.deque(maxlen=4096)   # when each of the last steps finished
        self._grad = self.trainer.interpreter.get_signature_runner("grad")
        self.features = features    # name -> array (read-only, from the object store)
        self.labels = labels
        count = len(labels)
        self.samples = sampling.group_samples(count, config.group, config.groups)
        self.compressor = codecs.Compressor(config.compression)
        self.rounds = [0] * placement.shards
        self.versions = [0] * placement.shards
        self.stop_requested = False
        self.stats = {"index": config.index, "group": config.group, "member": config.member, "steps": 0,
                      "samples": 0, "pushes": 0, "late": 0, "stale": 0, "loss": None, "compute_s": 0.0,
                      "wait_s": 0.0, "bytes_pushed": 0, "bytes_pulled": 0, "shard_errors": 0, "pid": os.getpid(),
                      "host": socket.gethostname(), "node": None, "started": time.time()}

    # -- talking to the shards (Ray handles) --------------------------------------------------------

    def _gather(self, calls):
        import ray

        while True:
            try:
                return ray.get(calls(), timeout=120)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.GetTimeoutError, ray.exceptions.ObjectLostError):
                self.stats["shard_errors"] += 1
                if self.stop_requested:
                    raise
                time.sleep(RETRY_PAUSE_S)

    def _pull(self, min_rounds, ids: dict[str, np.ndarray]) -> bool:
        """Pulls every shard's values (waiting for the rounds asked for); False when the job is done."""
        start = time.perf_counter()
        replies = self._gather(lambda: [s.pull.remote(self.config.group, int(r), ids or None)
                                        for s, r in zip(self.shards, min_rounds)])
        self.stats["wait_s"] += time.perf_counter() - start
        return self._take_values(replies)

    @staticmethod
    def _resolve_shared(replies) -> bool:
        """Fetches the values a synchronous shard shares through the object store (``values_ref``)."""
        shared = [reply["values_ref"] for reply in replies if "values_ref" in reply]
        if not shared:
            return True
        import ray

        try:
            resolved = iter(ray.get(shared, timeout=120))
        except (ray.exceptions.ObjectLostError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False
        for reply in replies:
            if "values_ref" in reply:
                reply["values"] = next(resolved)
                del reply["values_ref"]
        return True

    def _take_values(self, replies) -> bool:
        """Loads the values the shards sent; False when every shard says the job is done (shards
        are not in lockstep: each closes its own rounds)."""
        while not self._resolve_shared(replies):
            # A shard died after putting its values in the object store: ask again.
            self.stats["shard_errors"] += 1
            time.sleep(RETRY_PAUSE_S)
            replies = self._gather(lambda: [s.pull.remote(self.config.group, 0, None) for s in self.shards])
        for k, reply in enumerate(replies):
            self.rounds[k], self.versions[k] = reply["round"], reply["version"]
            values = reply["values"]
            for name, value in (codecs.unpack_arrays(values) if isinstance(values, codecs.Packed) else values).items():
                self.trainer.set_variable(name, value)
                self.stats["bytes_pulled"] += value.nbytes
            for table, (row_ids, rows) in reply["rows"].items():
                if len(row_ids):
                    current = self.trainer.get_variable(table)
                    current[row_ids] = rows
                    self.trainer.set_variable(table, current)
                self.stats["bytes_pulled"] += row_ids.nbytes + rows.nbytes
        return not all(reply["done"] for reply in replies)

    def _gradients(self, batch: np.ndarray) -> tuple[float, dict[str, np.ndarray], dict]:
        config = self.config
        inputs = {name: np.ascontiguousarray(array[batch]) for name, array in self.features.items()}
        labels = np.ascontiguousarray(self.labels[batch])
        start = time.perf_counter()
        if config.stand_in_compute_s is not None:
            time.sleep(config.stand_in_compute_s)
            if self._stand_in is None:   # one constant gradient, made once
                self._stand_in = {name: np.full(self.trainer.get_variable(name).shape, 1e-6, np.float32)
                                  for name in self.placement.dense}
            dense = self._stand_in
            loss, sparse = float("nan"), {}
        else:
            out = self._grad(**inputs, **{LABELS: labels})
            loss = float(out["loss"])
            dense = {name: out[f"{GRAD_PREFIX}{name}"] for name in self.placement.dense}
            sparse = {t: (out[f"{GRAD_PREFIX}{t}/indices"].astype(np.int64), out[f"{GRAD_PREFIX}{t}/rows"])
                      for t in self.placement.rows}
        elapsed = time.perf_counter() - start
        if config.slowdown > 1:
            time.sleep((config.slowdown - 1) * elapsed)
        self.stats["compute_s"] += time.perf_counter() - start
        if config.clip_norm:
            total = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in dense.values())
            total += sum(float(np.sum(np.square(r, dtype=np.float64))) for _, r in sparse.values())
            norm = total ** 0.5
            if norm > config.clip_norm:
                scale = np.float32(config.clip_norm / norm)
                dense = {k: v * scale for k, v in dense.items()}
                sparse = {k: (i, r * scale) for k, (i, r) in sparse.items()}
        return loss, dense, sparse

    def _batch_ids(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return {table: np.unique(np.asarray(self.features[name][batch]).reshape(-1).astype(np.int64))
                for table, name in self.config.table_inputs.items()}

    def _push(self, dense: dict[str, np.ndarray], sparse: dict, fetch: bool, next_ids: dict) -> list[dict]:
        placement = self.placement
        messages = []
        for k in range(placement.shards):
            payload = {name: self.compressor.encode(name, g) for name, g in dense.items() if placement.dense[name] == k}
            rows = {}
            for table, (ids, values) in sparse.items():
                begin, end = placement.rows[table][k]
                keep = (ids >= begin) & (ids < end)
                if keep.any():
                    rows[table] = (ids[keep], self.compressor.encode_rows(values[keep]))
            self.stats["bytes_pushed"] += (sum(p.wire_bytes for p in payload.values())
                                           + sum(i.nbytes + p.wire_bytes for i, p in rows.values()))
            messages.append((codecs.pack_payloads(payload), rows))
        start = time.perf_counter()
        replies = self._gather(lambda: [s.push.remote(self.config.group, self.config.member, int(self.rounds[k]),
                                                      int(self.versions[k]), *messages[k], fetch, next_ids or None)
                                        for k, s in enumerate(self.shards)])
        self.stats["wait_s"] += time.perf_counter() - start
        return replies

    def _batch(self, step: int) -> np.ndarray:
        config = self.config
        return sampling.member_batch(self.samples, config.seed + config.group, step, config.batch,
                                     config.member, config.members)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, max_steps: int | None = None) -> dict:
        """Trains until every shard reports the job done (or ``max_steps`` local steps).

        A synchronous member's data step is its group's round (so member m of round r trains on the
        m-th slice of global batch r); a group of one counts its own steps. Values come with the
        push's reply whenever the replica is due to fetch (every step in a synchronous group, every
        ``n_fetch`` steps otherwise), with the rows of the next batch's ids; a separate pull happens
        only at the start and when the rounds moved in a way the reply did not foresee."""
        config = self.config
        try:
            import ray

            self.stats["node"] = ray.get_runtime_context().get_node_id()
        except Exception:  # noqa: BLE001 - outside Ray (tests of the class itself)
            pass
        self.stop_requested = False
        synchronous = config.members > 1
        local_step = 0
        need_values, values_for = True, None
        accumulated: tuple[dict, dict] | None = None
        accumulated_count = 0
        while not self.stop_requested and (max_steps is None or local_step < max_steps):
            step = self.rounds[0] if synchronous else local_step
            if need_values or (config.table_inputs and values_for != step):
                if not self._pull(self.rounds, self._batch_ids(self._batch(step))):
                    break
                if synchronous and self.rounds[0] != step:
                    step = self.rounds[0]
                    if config.table_inputs and not self._pull(self.rounds, self._batch_ids(self._batch(step))):
                        break
                need_values, values_for = False, step
            batch = self._batch(step)
            loss, dense, sparse = self._gradients(batch)
            local_step += 1
            self.stats["steps"] += 1
            self.stats["samples"] += len(batch)
            self.stats["loss"] = loss
            self._step_times.append(time.time())
            if self.stats.get("first_step_at") is None:
                self.stats["first_step_at"], self.stats["samples_at_first_step"] = time.time(), self.stats["samples"]
            if accumulated is None:
                accumulated, accumulated_count = (dense, sparse), 1
            else:
                accumulated = ({k: accumulated[0][k] + v for k, v in dense.items()},
                               {t: (np.concatenate([accumulated[1][t][0], i]), np.concatenate([accumulated[1][t][1], r]))
                                for t, (i, r) in sparse.items()})
                accumulated_count += 1
            fetch = synchronous or local_step % config.n_fetch == 0
            if accumulated_count < config.n_push:
                need_values = fetch
                continue
            scale = np.float32(1.0 / accumulated_count)
            dense_mean = {k: v * scale for k, v in accumulated[0].items()} if accumulated_count > 1 else accumulated[0]
            sparse_mean = ({t: (i, r * scale) for t, (i, r) in accumulated[1].items()}
                           if accumulated_count > 1 else accumulated[1])
            accumulated = None
            next_step = self.rounds[0] + 1 if synchronous else local_step
            next_ids = self._batch_ids(self._batch(next_step)) if fetch else {}
            replies = self._push(dense_mean, sparse_mean, fetch, next_ids)
            self.stats["pushes"] += 1
            for reply in replies:
                self.stats["late"] += reply["status"] == "late"
                self.stats["stale"] += reply["status"] == "stale"
            if fetch:
                if not self._take_values(replies):
                    break
                values_for = next_step
            else:
                for k, reply in enumerate(replies):
                    self.rounds[k] = reply["round"]
                if all(reply["done"] for reply in replies):
                    break
        self.stats["finished"] = time.time()
        return self.get_stats()

    def get_stats(self) -> dict:
        """Counters and timings; ``step_ms`` is the median time between the replica's recent steps."""
        stats = dict(self.stats)
        times = np.asarray(self._step_times)
        stats["step_ms"] = float(np.median(np.diff(times)) * 1e3) if len(times) > 2 else None
        return stats

    def local_state(self, names) -> dict[str, np.ndarray]:
        """Variables the replica updates itself rather than the shards (BatchNorm running
        statistics: the grad signature updates them in place from each batch)."""
        return {name: self.trainer.get_variable(name) for name in names}

    def stop(self) -> None:
        self.stop_requested = True

    def ping(self) -> int:
        return os.getpid()

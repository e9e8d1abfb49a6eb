"""A parameter-server shard: a share of the variables, their optimizer state and a version counter.

The shard is a plain class (tested directly); ``cloudsplit.training.engine`` runs it as a threaded
Ray actor, so pulls that wait for a round to close and pushes from other replicas run at once.

Rounds. Replicas belong to groups (see ``strategies``). Each group has a round number per shard.
A member pulls (waiting until the group's round reaches the one it asks for), computes its gradient
from those values and pushes it tagged with the round. The shard keeps the gradients of the open
round by member; when ``required`` of them are in, it averages them in member order (so the sum's
rounding does not depend on arrival order), applies the average with the update program and
advances the round and the shard's ``version`` (updates applied). A push for a round that is
already closed is dropped (a backup worker's straggler). With ``max_staleness`` set, a push whose
parameters are more than that many versions old is rejected instead of applied.

Checkpoints. Every ``checkpoint_every`` updates (and on ``checkpoint()``) the shard writes its
variables, optimizer slots, version and rounds with ``edge.checkpoint.save`` (temporary file, fsync,
rename): a crash leaves the previous complete checkpoint. A shard created with a checkpoint folder
that holds one resumes from it, so after a restart its version is the checkpoint's and the
updates applied since are lost, never applied twice (their pushes carry rounds the restored shard
has not reached and are dropped, or are fresh gradients the replicas compute again).

Arrays that arrive through Ray's object store are read-only views: the shard copies what it keeps.
"""
from __future__ import annotations

import collections
import math
import os
import threading
import time
from typing import Mapping

import numpy as np

from cloudsplit.training import codecs
from cloudsplit.training.model import GRAD_PREFIX, Optimizer, update_program
from edge import checkpoint as checkpoints
from edge.interpreter import Interpreter

CHECKPOINT_FILE = "shard-{index}.ckpt"
# The learning rate over a job of T updates, as a factor of the optimizer's rate at update v.
LR_SCHEDULES = {
    "constant": lambda v, total: 1.0,
    "cosine": lambda v, total: 0.5 * (1.0 + math.cos(math.pi * min(v, total) / total)),
    "linear": lambda v, total: max(1.0 - v / total, 0.0),
}


def _bucket(count: int) -> int:
    size = 1
    while size < count:
        size *= 2
    return size


class ParameterShard:
    def __init__(self, index: int, dense: Mapping[str, np.ndarray], tables: Mapping[str, tuple[int, int, np.ndarray]],
                 optimizer: Optimizer, groups: int, required: int, *, max_staleness: int | None = None,
                 slots: Mapping[str, np.ndarray] | None = None, checkpoint_dir: str | None = None,
                 checkpoint_every: int = 0, target_version: int | None = None, num_threads: int = 1,
                 lr_schedule: str = "constant"):
        self.index = index
        self.optimizer = optimizer
        self.groups, self.required, self.max_staleness = groups, required, max_staleness
        self.tables = {name: (int(begin), int(end)) for name, (begin, end, _) in tables.items()}
        self._row_shapes = {name: tuple(piece.shape[1:]) for name, (_, _, piece) in tables.items()}
        self.dense_names = list(dense)
        values = {name: np.array(v) for name, v in dense.items()}
        values.update({name: np.array(piece) for name, (_, _, piece) in tables.items()})
        self.checkpoint_path = (os.path.join(checkpoint_dir, CHECKPOINT_FILE.format(index=index))
                                if checkpoint_dir else None)
        self.checkpoint_every = int(checkpoint_every)
        self.version = 0
        self.rounds = [0] * groups
        restored = None
        if self.checkpoint_path and os.path.isfile(self.checkpoint_path):
            restored = checkpoints.load(self.checkpoint_path)
            info = restored.info
            if info.get("shard") != index or sorted(info.get("variables", [])) != sorted(values):
                raise checkpoints.CheckpointError(f"checkpoint {self.checkpoint_path!r} belongs to another "
                                                  f"shard or model (shard {info.get('shard')!r})")
            values = {name: restored.variables[name] for name in values}
            slots = {k: v for k, v in restored.variables.items() if k.startswith("optimizer/")}
            self.version = int(info["version"])
            self.rounds = [int(r) for r in info["rounds"]]
        self.restored_version = self.version if restored is not None else None
        program = update_program(values, list(self.tables), optimizer, slots)
        self._interpreter = Interpreter(model_content=program, num_threads=num_threads)
        self._apply = self._interpreter.get_signature_runner("apply")
        self._tensors = {d["name"]: d["index"] for d in self._interpreter.get_tensor_details()}
        self._state_names = [d["name"] for d in self._interpreter.get_tensor_details() if d["kind"] == "variable"]
        self._lock = threading.Condition()
        self._pending: list[dict[int, tuple[dict, dict]]] = [{} for _ in range(groups)]
        self.target_version = target_version
        self.lr_schedule = LR_SCHEDULES[lr_schedule]
        self.schedule_length = target_version if lr_schedule != "constant" else None
        self.stopped = False
        self.stats = {"pushes": 0, "applied_pushes": 0, "dropped_late": 0, "rejected_stale": 0,
                      "bytes_in": 0, "bytes_out": 0, "checkpoints": 0, "apply_ms": 0.0}
        self.staleness = collections.Counter()
        self._last_checkpoint = self.version
        self.node = None
        self._shared = None     # (version, object-store reference of the dense values)
        try:
            import ray

            if ray.is_initialized():
                self.node = ray.get_runtime_context().get_node_id()
        except ImportError:
            pass

    # -- reading ----------------------------------------------------------------------------------

    def _value(self, name: str) -> np.ndarray:
        return self._interpreter.get_tensor(self._tensors[name])

    def _done(self) -> bool:
        return self.stopped or (self.target_version is not None and self.version >= self.target_version)

    def pull(self, group: int, min_round: int = 0, rows: Mapping[str, np.ndarray] | None = None,
             timeout: float = 30.0) -> dict:
        """Waits (up to ``timeout`` s) until ``group``'s round reaches ``min_round`` or the job is
        done, then returns {"version", "round", "done", "values", "rows": table
        -> (ids, rows) for the global ids asked for that this shard owns, "timed_out"}; the dense
        values come as one ``codecs.Packed`` buffer (``codecs.unpack_arrays``)."""
        with self._lock:
            self._wait_round(group, min_round, timeout)
            return self._values_reply(group, min_round, rows)

    def _wait_round(self, group: int, min_round: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.rounds[group] < min_round and not self._done():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._lock.wait(left)

    def _values_reply(self, group: int, min_round: int, rows: Mapping[str, np.ndarray] | None) -> dict:
        reply = {"version": self.version, "round": self.rounds[group], "done": self._done(),
                 "timed_out": self.rounds[group] < min_round and not self._done(), "values": {}, "rows": {}}
        if self.required > 1 and self.node is not None:
            # Every member of a synchronous group asks for the same values after a round: they are
            # put in the object store once per version and each reply carries the reference
            # (serialising N copies of the parameters in this one actor bounded sync scaling).
            if self._shared is None or self._shared[0] != self.version:
                import ray

                values = codecs.pack_arrays({name: self._value(name) for name in self.dense_names})
                self._shared = (self.version, ray.put(values))
                self.stats["bytes_out"] += values.nbytes
            reply["values_ref"] = self._shared[1]
        else:
            reply["values"] = codecs.pack_arrays({name: self._value(name) for name in self.dense_names})
            self.stats["bytes_out"] += reply["values"].nbytes
        for table, ids in (rows or {}).items():
            if table not in self.tables:
                continue
            begin, end = self.tables[table]
            ids = np.asarray(ids, np.int64)
            mine = ids[(ids >= begin) & (ids < end)]
            reply["rows"][table] = (mine, self._value(table)[mine - begin])
        self.stats["bytes_out"] += sum(i.nbytes + r.nbytes for i, r in reply["rows"].values())
        return reply

    def pull_all(self) -> dict[str, np.ndarray]:
        """Every variable this shard owns (a sparse table's piece as its rows), for evaluation and export."""
        with self._lock:
            return {name: self._value(name) for name in (*self.dense_names, *self.tables)}

    def state(self) -> dict:
        with self._lock:
            return {"index": self.index, "version": self.version, "rounds": list(self.rounds),
                    "done": self._done(), "stats": dict(self.stats), "staleness": dict(self.staleness),
                    "restored_version": self.restored_version, "pid": os.getpid(), "node": self.node}

    # -- writing ----------------------------------------------------------------------------------

    def push(self, group: int, member: int, round_: int, base_version: int,
             dense: Mapping[str, codecs.Payload], sparse: Mapping[str, tuple[np.ndarray, codecs.Payload]],
             fetch: bool = False, rows: Mapping[str, np.ndarray] | None = None, timeout: float = 30.0) -> dict:
        """One member's gradient for ``round_`` of ``group``, computed from parameters at
        ``base_version``. ``dense``: name -> payload; ``sparse``: table -> (global row ids, payload of
        the rows), or the payloads in one ``codecs.Packed`` buffer. Returns {"status":
        "applied"|"pending"|"late"|"stale"|"done", "version", "round"}.

        With ``fetch``, the reply also carries the next values, as ``pull`` would return them (rows
        for the ids in ``rows``): after the round closes when the push left it open ("pending"), at
        once otherwise. One call per step instead of a push and a pull."""
        if isinstance(dense, codecs.Packed):
            dense = codecs.unpack_payloads(dense)
        size = sum(p.wire_bytes for p in dense.values()) + sum(ids.nbytes + p.wire_bytes for ids, p in sparse.values())
        with self._lock:
            reply = self._accept(group, member, round_, base_version, dense, sparse, size)
            if fetch:
                wanted = round_ + 1 if reply["status"] == "pending" else self.rounds[group]
                self._wait_round(group, wanted, timeout)
                reply.update(self._values_reply(group, wanted, rows))
            return reply

    def _accept(self, group, member, round_, base_version, dense, sparse, size) -> dict:
        self.stats["pushes"] += 1
        self.stats["bytes_in"] += size
        if self._done():
            return self._reply("done", group)
        if round_ != self.rounds[group]:
            self.stats["dropped_late"] += 1
            return self._reply("late", group)
        staleness = max(self.version - base_version, 0)
        if self.max_staleness is not None and staleness > self.max_staleness:
            self.stats["rejected_stale"] += 1
            return self._reply("stale", group)
        pending = self._pending[group]
        if member in pending:
            return self._reply("late", group)
        grads = {name: codecs.decode(p) for name, p in dense.items() if name in self.dense_names}
        rows = {}
        for table, (ids, payload) in sparse.items():
            if table in self.tables:
                rows[table] = (np.asarray(ids, np.int64), codecs.decode(payload))
        pending[member] = (grads, rows, staleness)
        if len(pending) < self.required:
            return self._reply("pending", group)
        self._apply_round(group)
        return self._reply("applied", group)

    def _reply(self, status: str, group: int) -> dict:
        return {"status": status, "version": self.version, "round": self.rounds[group], "done": self._done()}

    def _apply_round(self, group: int) -> None:
        pending = self._pending[group]
        members = sorted(pending)
        count = len(members)
        inputs = {}
        for name in self.dense_names:
            parts = [pending[m][0][name] for m in members if name in pending[m][0]]
            total = parts[0].astype(np.float32, copy=True)
            for part in parts[1:]:
                total += part
            inputs[f"{GRAD_PREFIX}{name}"] = total / np.float32(count)
        for table, (begin, end) in self.tables.items():
            ids = [pending[m][1][table][0] for m in members if table in pending[m][1]]
            vals = [pending[m][1][table][1] for m in members if table in pending[m][1]]
            row_shape = self._row_shapes[table]   # (reading the table here would copy it)
            if ids:
                ids = np.concatenate(ids)
                vals = np.concatenate(vals).reshape((-1,) + row_shape) / np.float32(count)
                keep = (ids >= begin) & (ids < end)
                ids, vals = ids[keep] - begin, vals[keep]
            if not len(ids):
                ids, vals = np.zeros(0, np.int64), np.zeros((0,) + row_shape, np.float32)
            # Padded to a power of two with zero rows at an existing id (the kernel sums duplicate
            # ids, so padding changes nothing) so the program re-plans for few distinct sizes.
            size = _bucket(max(len(ids), 1))
            padded_ids = np.zeros(size, np.int32)
            padded_rows = np.zeros((size,) + row_shape, np.float32)
            padded_ids[:len(ids)] = ids
            padded_ids[len(ids):] = ids[0] if len(ids) else 0
            padded_rows[:len(ids)] = vals
            inputs[f"{GRAD_PREFIX}{table}/rows"] = padded_rows
            inputs[f"{GRAD_PREFIX}{table}/indices"] = padded_ids
        if self.schedule_length:
            factor = self.lr_schedule(self.version, self.schedule_length)
            self._interpreter.set_tensor(self._tensors["optimizer/learning_rate"],
                                         np.float32(self.optimizer.learning_rate * factor))
        start = time.perf_counter()
        self._apply(**inputs)
        self.stats["apply_ms"] += (time.perf_counter() - start) * 1e3
        for m in members:
            self.staleness[int(pending[m][2])] += 1
        self.stats["applied_pushes"] += count
        pending.clear()
        self.version += 1
        self.rounds[group] += 1
        if self.checkpoint_every and self.version - self._last_checkpoint >= self.checkpoint_every:
            self._checkpoint_locked()
        self._lock.notify_all()

    # -- control ----------------------------------------------------------------------------------

    def checkpoint(self) -> int:
        with self._lock:
            return self._checkpoint_locked()

    def _checkpoint_locked(self) -> int:
        if not self.checkpoint_path:
            return self.version
        state = {name: self._value(name) for name in self._state_names}
        checkpoints.save(self.checkpoint_path, state,
                         {"shard": self.index, "version": self.version, "rounds": self.rounds,
                          "variables": [*self.dense_names, *self.tables], "optimizer": self.optimizer.kind})
        self._last_checkpoint = self.version
        self.stats["checkpoints"] += 1
        return self.version

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            self._lock.notify_all()

    def set_target(self, version: int | None) -> None:
        with self._lock:
            self.target_version = version
            self._lock.notify_all()

    def ping(self) -> int:
        return os.getpid()

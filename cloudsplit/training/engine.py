"""Runs a training job on Ray: parameter-shard actors, replica actors, and a monitor in the driver.

Ray places, restarts and resizes the actors; this module does not manage machines. ``ray.init()``
without an address starts a local cluster inside the job's process tree (the embedded default);
``address`` ("ray://host:port" or "host:port") joins an existing one. An embedded cluster is bound
to the loopback interface: Ray otherwise advertises the machine's external address, and a job
started from a test or a laptop has no business listening there.

The monitor (a thread of ``TrainingJob``) polls the shards and replicas every ``report_every``
seconds and emits one metrics record: step (updates applied by shard 0), samples/s, the replicas'
latest loss, validation accuracy every ``eval_every`` steps (parameters pulled into a local
edge.Trainer), the staleness histogram, bytes on the wire and worker changes. A replica whose
actor dies is restarted by Ray (``max_restarts``) and its loop is started again; a shard likewise,
from its last checkpoint.
"""
from __future__ import annotations

import collections
import operator
import os
import queue
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from cloudsplit.training import codecs, strategies
from cloudsplit.training.model import ModelSpec, Optimizer, Placement, TrainingError, place
from cloudsplit.training.replica import Replica, ReplicaConfig
from cloudsplit.training.shard import LR_SCHEDULES, ParameterShard

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # makes Ray's node address 127.0.0.1
MAX_REPLICAS = 256
MAX_SHARDS = 64


def import_ray(embedded: bool = True):
    """Imports Ray; for an embedded (local) cluster, makes it bind to loopback. Ray reads the
    setting from the environment when it is first imported (and its child processes inherit the
    environment); if something imported Ray earlier, the constant it derived is set too, since
    that is what its address lookup reads at ``ray.init``."""
    if embedded:
        for key, value in LOOPBACK_ENV.items():
            os.environ[key] = value
    import ray

    if embedded:
        from ray._private import ray_constants

        if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):
            ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None):
    ray = import_ray(embedded=address is None)
    if not ray.is_initialized():
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": dict(LOOPBACK_ENV)})
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    return ray


@dataclass
class JobConfig:
    replicas: int = 2
    ps_shards: int = 1
    strategy: Any = field(default_factory=strategies.Sync)
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None
    num_threads: int = 1
    seed: int = 0
    compression: str = "none"
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    eval_every: int = 50
    report_every: float = 1.0
    optimizer: str | None = None
    learning_rate: float | None = None
    slowdown: dict[int, float] = field(default_factory=dict)   # replica -> slowdown factor (benchmarks)
    stand_in_compute_s: float | None = None
    max_restarts: int = 5
    target_accuracy: float | None = None    # stop once validation accuracy reaches it
    lr_schedule: str = "constant"           # constant | cosine | linear: the rate over the job's updates

    def validate(self) -> None:
        def integer(value, what, low, high):
            try:
                number = operator.index(value)
            except TypeError:
                raise TrainingError(f"{what} must be an integer in [{low}, {high}], got {value!r}") from None
            if not low <= number <= high:
                raise TrainingError(f"{what} must be an integer in [{low}, {high}], got {number}")
            return number

        self.replicas = integer(self.replicas, "replicas", 1, MAX_REPLICAS)
        self.ps_shards = integer(self.ps_shards, "ps_shards", 1, MAX_SHARDS)
        if (self.steps is None) == (self.epochs is None):
            raise TrainingError("give exactly one of steps and epochs")
        if self.steps is not None:
            self.steps = integer(self.steps, "steps", 1, 10_000_000)
        if self.epochs is not None and not (isinstance(self.epochs, (int, float, np.number))
                                            and 0 < float(self.epochs) <= 100_000):
            raise TrainingError(f"epochs must be a number in (0, 100000], got {self.epochs!r}")
        if self.batch_size is not None:
            self.batch_size = integer(self.batch_size, "batch_size", 1, 1_000_000)
        self.num_threads = integer(self.num_threads, "num_threads", 1, 256)
        self.seed = integer(self.seed, "seed", 0, 2**63 - 1)
        self.checkpoint_every = integer(self.checkpoint_every, "checkpoint_every", 0, 10_000_000)
        self.eval_every = integer(self.eval_every, "eval_every", 0, 10_000_000)
        self.max_restarts = integer(self.max_restarts, "max_restarts", -1, 1_000_000)
        if not (isinstance(self.report_every, (int, float)) and 0.01 <= self.report_every <= 3600):
            raise TrainingError(f"report_every must be in [0.01, 3600] seconds, got {self.report_every!r}")
        if self.target_accuracy is not None and not (isinstance(self.target_accuracy, (int, float))
                                                     and 0 < self.target_accuracy <= 1):
            raise TrainingError(f"target_accuracy must be in (0, 1], got {self.target_accuracy!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TrainingError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.stand_in_compute_s is not None and not 0 <= self.stand_in_compute_s <= 60:
            raise TrainingError(f"stand_in_compute_s must be in [0, 60], got {self.stand_in_compute_s!r}")
        for replica, factor in self.slowdown.items():
            if not (0 <= replica < self.replicas and 1 <= factor <= 1000):
                raise TrainingError(f"slowdown {{{replica}: {factor}}}: needs a replica index and a factor in [1, 1000]")
        try:
            codecs.check(self.compression)
            self.strategy.layout(self.replicas)
        except ValueError as error:
            raise TrainingError(str(error)) from None


def _as_features(spec: ModelSpec, x) -> dict[str, np.ndarray]:
    names = list(spec.inputs)
    if isinstance(x, Mapping):
        missing = [n for n in names if n not in x]
        if missing:
            raise TrainingError(f"data lacks the model's inputs {missing} (it has {sorted(x)})")
        return {n: np.asarray(x[n]) for n in names}
    if len(names) != 1:
        raise TrainingError(f"the model has inputs {names}: give the features as a dict by input name")
    return {names[0]: np.asarray(x)}


def check_data(spec: ModelSpec, x, y, batch: int, what: str = "data") -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The features and labels as arrays, checked against the model's inputs and labels."""
    features = _as_features(spec, x)
    labels = np.asarray(y)
    count = len(labels)
    if count < 1:
        raise TrainingError(f"{what}: no samples")
    for name, array in features.items():
        shape, dtype, _ = spec.inputs[name]
        if array.ndim != len(shape) or tuple(array.shape[1:]) != tuple(shape[1:]):
            raise TrainingError(f"{what}: input '{name}' has samples of shape {list(array.shape[1:])}, "
                                f"the model takes {list(shape[1:])}")
        if len(array) != count:
            raise TrainingError(f"{what}: input '{name}' has {len(array)} samples but there are {count} labels")
        if np.dtype(dtype).kind == "f":
            if array.dtype.kind not in "fiu":
                raise TrainingError(f"{what}: input '{name}' is {array.dtype}, the model takes {dtype}")
            array = array.astype(dtype, copy=False)
            if not np.isfinite(array).all():
                raise TrainingError(f"{what}: input '{name}' holds NaN or infinite values")
        elif array.dtype.kind not in "iu":
            raise TrainingError(f"{what}: input '{name}' is {array.dtype}, the model takes {dtype}")
        features[name] = np.ascontiguousarray(array.astype(dtype, copy=False))
    label_shape, label_dtype = spec.labels
    if tuple(labels.shape[1:]) != tuple(label_shape[1:]):
        raise TrainingError(f"{what}: labels have samples of shape {list(labels.shape[1:])}, "
                            f"the model's labels are {list(label_shape[1:])}")
    if np.dtype(label_dtype).kind in "iu":
        if labels.dtype.kind not in "iu":
            raise TrainingError(f"{what}: labels are {labels.dtype}; the model takes integer class ids")
        classes = spec.classes
        if classes is not None and (labels.min() < 0 or labels.max() >= classes):
            raise TrainingError(f"{what}: labels must be class ids in [0, {classes}), "
                                f"got values in [{labels.min()}, {labels.max()}]")
    elif not np.isfinite(labels.astype(np.float64)).all():
        raise TrainingError(f"{what}: labels hold NaN or infinite values")
    labels = np.ascontiguousarray(labels.astype(label_dtype, copy=False))
    return features, labels


def _table_inputs(spec: ModelSpec, trainer) -> dict[str, str]:
    """Sparse table -> the model input whose values are its row ids (a Gather reading the input
    directly); tables read through computed ids are pulled whole."""
    interpreter = trainer.interpreter
    details = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    by_name = {v: k for k, v in details.items()}
    result = {}
    for table, var in spec.variables.items():
        if not var.sparse:
            continue
        for op in interpreter.op_details():
            if op["op"].upper() == "GATHER" and op["inputs"] and op["inputs"][0] == by_name.get(table):
                source = details.get(op["inputs"][1])
                if source in spec.inputs:
                    result[table] = source
    return result


class TrainingJob:
    """One distributed training job (see ``cloudsplit.training.fit`` for the arguments)."""

    def __init__(self, model, x, y, config: JobConfig, *, validation_data=None, address: str | None = None,
                 on_metrics: Callable[[dict], None] | None = None, name: str = "job"):
        config.validate()
        if isinstance(model, (bytes, bytearray, memoryview)):
            data, label = bytes(model), name
        else:
            label = os.fspath(model)
            try:
                with open(label, "rb") as f:
                    data = f.read()
            except OSError as error:
                raise TrainingError(f"model {label!r}: {error.strerror or error}") from None
        self.spec = ModelSpec.from_bytes(data, name=label)
        self.config = config
        self.name = name
        fixed = self.spec.fixed_batch
        if fixed is not None:
            if config.batch_size not in (None, fixed):
                raise TrainingError(f"the model's batch is fixed at {fixed}; batch_size {config.batch_size} differs "
                                    f"(convert with a dynamic batch, or use {fixed})")
            self.batch = fixed
        else:
            self.batch = config.batch_size if config.batch_size is not None else 32
        if not 1 <= self.batch <= 1_000_000:
            raise TrainingError(f"batch_size must be in [1, 1000000], got {self.batch}")
        self.features, self.labels = check_data(self.spec, x, y, self.batch)
        self.validation = None
        if validation_data is not None:
            self.validation = check_data(self.spec, validation_data[0], validation_data[1], self.batch, "validation data")
        self.groups, self.members, self.required = config.strategy.layout(config.replicas)
        per_group = len(self.labels) // self.groups
        if per_group < self.batch * self.members:
            raise TrainingError(f"{len(self.labels)} samples split over {self.groups} group(s) leave {per_group} per group, "
                                f"fewer than one global batch of {self.batch * self.members}")
        self.optimizer: Optimizer = self.spec.optimizer.with_overrides(kind=config.optimizer,
                                                                       learning_rate=config.learning_rate)
        self.placement: Placement = place(self.spec.variables, config.ps_shards)
        samples_per_update = self.batch * self.required
        self.target_steps = (config.steps if config.steps is not None
                             else max(1, int(round(float(config.epochs) * len(self.labels) / samples_per_update))))
        self.address = address
        self.on_metrics = on_metrics
        self.history: list[dict] = []
        self.events: list[dict] = []
        self._subscribers: list[queue.Queue] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.state = "created"
        self.error: str | None = None
        self.started_at = None
        self.finished_at = None
        self._owned_checkpoints = None
        self.final_variables: dict[str, np.ndarray] | None = None
        self.final_stats: dict | None = None
        self.final_local_state: dict[str, np.ndarray] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> "TrainingJob":
        """Creates the shard and replica actors and the monitor; if any of that fails, whatever
        was created is removed again and the job is left "failed"."""
        self.shards, self.replicas = [], []
        try:
            return self._launch()
        except BaseException as error:
            self.error = f"{type(error).__name__}: {error}"
            self.state = "failed"
            ray = getattr(self, "_ray", None)
            for actor in (*self.replicas, *self.shards):
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass
            raise

    def _launch(self) -> "TrainingJob":
        config = self.config
        cpus = None
        if self.address is None:
            cpus = max(os.cpu_count() or 1, config.replicas * config.num_threads + config.ps_shards)
        ray = ensure_ray(self.address, cpus)
        self._ray = ray
        checkpoint_dir = config.checkpoint_dir
        if checkpoint_dir is None:
            checkpoint_dir = self._owned_checkpoints = tempfile.mkdtemp(prefix="edge-train-")
        os.makedirs(checkpoint_dir, exist_ok=True)
        self.checkpoint_dir = checkpoint_dir
        shard_cls = ray.remote(ParameterShard).options(num_cpus=1 if self.address else 0.01, max_concurrency=64,
                                                         max_restarts=config.max_restarts, max_task_retries=0)
        self.shards = []
        for k in range(config.ps_shards):
            dense = {v: self.spec.initial[v] for v in self.placement.shard_variables(k)}
            tables = {t: (b, e, self.spec.initial[t][b:e]) for t, (b, e) in self.placement.shard_tables(k).items()}
            slots = {}
            for v in dense:
                slots.update({key: val for key, val in self.spec.initial.items() if key.startswith(f"optimizer/{v}/")})
            self.shards.append(shard_cls.remote(k, dense, tables, self.optimizer, self.groups, self.required,
                                                max_staleness=config.strategy.max_staleness, slots=slots,
                                                checkpoint_dir=checkpoint_dir, checkpoint_every=config.checkpoint_every,
                                                target_version=self.target_steps, lr_schedule=config.lr_schedule))
        from edge.trainer import Trainer

        folder = tempfile.mkdtemp(prefix="edge-job-")
        self._folder = folder
        model_path = os.path.join(folder, "model.edge")
        with open(model_path, "wb") as out:
            out.write(self.spec.data)
        self._evaluator = Trainer(model_path, num_threads=1)
        self._evaluator_lock = threading.Lock()   # the monitor and callers of evaluate/export share it
        table_inputs = _table_inputs(self.spec, self._evaluator)
        feature_refs = {k: ray.put(v) for k, v in self.features.items()}
        labels_ref = ray.put(self.labels)
        model_ref = ray.put(self.spec.data)
        # Held for the job's life: a restarted replica is constructed from these again.
        self._object_refs = (feature_refs, labels_ref, model_ref)
        replica_cls = ray.remote(_ReplicaActor).options(num_cpus=config.num_threads if self.address else 0.01,
                                                         max_concurrency=4, max_restarts=config.max_restarts,
                                                         max_task_retries=0)
        strategy = config.strategy
        self.replicas = []
        for i in range(config.replicas):
            group, member = divmod(i, self.members)
            rc = ReplicaConfig(index=i, group=group, member=member, members=self.members, groups=self.groups,
                               batch=self.batch, seed=config.seed, n_fetch=getattr(strategy, "n_fetch", 1),
                               n_push=getattr(strategy, "n_push", 1), compression=config.compression,
                               num_threads=config.num_threads, clip_norm=self.optimizer.clip_norm,
                               slowdown=float(config.slowdown.get(i, 1.0)),
                               stand_in_compute_s=config.stand_in_compute_s, table_inputs=table_inputs)
            self.replicas.append(replica_cls.remote(model_ref, self.placement, rc, feature_refs, labels_ref, self.shards))
        self.state = "running"
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._monitor, name=f"training-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Asks the job to stop; it finishes its current round, checkpoints and exports."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def subscribe(self) -> queue.Queue:
        """A queue that receives every metrics record from now on, then None when the job ends."""
        q: queue.Queue = queue.Queue(maxsize=10_000)
        with self._lock:
            for record in self.history[-1:]:
                q.put(record)
            if self.state in ("finished", "failed", "stopped"):
                q.put(None)
            else:
                self._subscribers.append(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._lock:
            if q in self._subscribers:
                self._subscribers.remove(q)

    # -- the monitor -------------------------------------------------------------------------------

    def _emit(self, record: dict) -> None:
        with self._lock:
            self.history.append(record)
            for q in self._subscribers:
                try:
                    q.put_nowait(record)
                except queue.Full:
                    pass
        if self.on_metrics is not None:
            try:
                self.on_metrics(record)
            except Exception:  # noqa: BLE001 - a metrics sink must not end the job
                traceback.print_exc()

    def _event(self, kind: str, **detail) -> None:
        event = {"time": time.time() - self.started_at, "event": kind, **detail}
        self.events.append(event)

    def _call_each(self, refs, timeout=30.0) -> list:
        """Each call's result, or None for an actor that died or did not answer within ``timeout``
        (the calls were all sent before the first wait, so they run at once)."""
        ray = self._ray
        deadline = time.monotonic() + timeout
        results = []
        for ref in refs:
            try:
                results.append(ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0)))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                    ray.exceptions.GetTimeoutError):
                results.append(None)
        return results

    def _shard_states(self) -> list[dict | None]:
        return self._call_each([s.state.remote() for s in self.shards], 10)

    def _replica_stats(self) -> list[dict | None]:
        return self._call_each([r.get_stats.remote() for r in self.replicas], 5)

    def _monitor(self) -> None:
        ray = self._ray
        runs = {i: r.run.remote() for i, r in enumerate(self.replicas)}
        last_eval = -1
        last_samples, last_time = 0, time.time()
        pids: dict[int, int] = {}
        nodes_seen = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        accuracy_reached = False
        try:
            while True:
                ready, _ = ray.wait(list(runs.values()), num_returns=len(runs), timeout=self.config.report_every)
                for i, ref in list(runs.items()):
                    if ref in ready:
                        try:
                            ray.get(ref)
                            del runs[i]
                        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as error:
                            self._event("replica_failed", replica=i, error=type(error).__name__)
                            states = self._shard_states()
                            if any(s and s["done"] for s in states) or self._stop.is_set():
                                del runs[i]
                            else:
                                time.sleep(0.5)
                                runs[i] = self.replicas[i].run.remote()
                                self._event("replica_restarted", replica=i)
                alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
                for node in alive - nodes_seen:
                    self._event("node_added", node=node)
                for node in nodes_seen - alive:
                    self._event("node_removed", node=node)
                nodes_seen = alive
                states = self._shard_states()
                stats = self._replica_stats()
                for i, s in enumerate(stats):
                    if s is not None:
                        if i in pids and pids[i] != s["pid"]:
                            self._event("worker_changed", replica=i, old_pid=pids[i], new_pid=s["pid"], node=s.get("node"))
                        pids[i] = s["pid"]
                for k, s in enumerate(states):
                    if s is not None and s.get("restored_version") is not None and not any(
                            e["event"] == "shard_restored" and e["shard"] == k and e["pid"] == s["pid"] for e in self.events):
                        self._event("shard_restored", shard=k, version=s["restored_version"], pid=s["pid"])
                now = time.time()
                step = states[0]["version"] if states[0] else (self.history[-1]["step"] if self.history else 0)
                record = self._record(states, stats, now, last_samples, last_time)
                last_samples, last_time = record["samples"], now
                if self.validation is not None and self.config.eval_every and (
                        step - last_eval >= self.config.eval_every or not runs):
                    record.update(self._evaluate())
                    last_eval = step
                    if self.config.target_accuracy is not None and record.get("val_accuracy", 0) >= self.config.target_accuracy:
                        accuracy_reached = True
                self._emit(record)
                if not runs:
                    break
                if self._stop.is_set() or accuracy_reached:
                    # Sent on every pass, not once: a shard or replica that Ray restarts meanwhile
                    # comes back without the flag.
                    for s in self.shards:
                        s.stop.remote()
                    for r in self.replicas:
                        r.stop.remote()
            self._finish("stopped" if self._stop.is_set() else "finished")
        except Exception as error:  # noqa: BLE001 - reported through the job's state
            self.error = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            self._finish("failed")

    def _record(self, states, stats, now, last_samples, last_time) -> dict:
        live = [s for s in stats if s is not None]
        samples = sum(s["samples"] for s in live)
        staleness = collections.Counter()
        for s in states:
            if s is not None:
                staleness.update({int(k): v for k, v in s["staleness"].items()})
        losses = [s["loss"] for s in live if s["loss"] is not None and np.isfinite(s["loss"])]
        shard_stats = [s["stats"] for s in states if s is not None]
        return {
            "time": now - self.started_at, "step": states[0]["version"] if states[0] else None,
            "target_steps": self.target_steps, "samples": samples,
            "samples_per_s": max(samples - last_samples, 0) / max(now - last_time, 1e-9),
            "loss": float(np.mean(losses)) if losses else None,
            "staleness": dict(sorted(staleness.items())),
            "bytes_pushed": sum(s["bytes_pushed"] for s in live), "bytes_pulled": sum(s["bytes_pulled"] for s in live),
            "late": sum(s["late"] for s in live), "stale": sum(s["stale"] for s in live),
            "updates": sum(s["applied_pushes"] for s in shard_stats),
            "replicas_alive": len(live), "events": list(self.events),
        }

    def workers(self) -> dict[str, list[dict | None]]:
        """After the job: what they reported last (``final_stats``). What each shard and replica reports now (None for one that does not answer): versions,
        rounds, staleness and byte counters, process ids and nodes."""
        if self.final_stats is not None:
            return self.final_stats
        return {"shards": self._shard_states(), "replicas": self._replica_stats()}

    def variables(self) -> dict[str, np.ndarray]:
        """Every trainable variable as the shards hold it now (tables reassembled from their pieces);
        after the job, as it ended."""
        if self.final_variables is not None:
            return dict(self.final_variables)
        pieces = self._call_each([s.pull_all.remote() for s in self.shards], 60)
        if any(p is None for p in pieces):
            raise TrainingError("a parameter shard is not answering")
        values = {}
        for k, piece in enumerate(pieces):
            for name, value in piece.items():
                if name in self.placement.rows:
                    values.setdefault(name, {})[k] = value
                else:
                    values[name] = value
        for table in self.placement.rows:
            parts = values.get(table, {})
            values[table] = np.concatenate([parts[k] for k in sorted(parts)], axis=0)
        return values

    def _evaluate(self) -> dict:
        x_val, y_val = self.validation
        return {f"val_{k}": v for k, v in self._with_weights(lambda t: t.evaluate(x_val, y_val)).items()}

    def _local_state(self) -> dict[str, np.ndarray]:
        """The replicas' own variables (BatchNorm running statistics), averaged over the replicas
        that answer; after the job, as they were at its end."""
        if self.final_local_state is not None or not self.spec.other_variables:
            return dict(self.final_local_state or {})
        names = list(self.spec.other_variables)
        states = self._call_each([r.local_state.remote(names) for r in self.replicas], 10)
        states = [s for s in states if s]
        if not states:
            return {}
        return {name: np.mean([s[name] for s in states], axis=0).astype(states[0][name].dtype) for name in names}

    def _with_weights(self, use):
        """Runs ``use(trainer)`` on the job's local Trainer loaded with the current weights (and
        the replicas' averaged running statistics)."""
        values = self.variables()
        values.update(self._local_state())
        with self._evaluator_lock:
            for name, value in values.items():
                self._evaluator.set_variable(name, value)
            return use(self._evaluator)

    def _finish(self, state: str) -> None:
        try:
            self._call_each([s.checkpoint.remote() for s in self.shards], 60)
            self.final_stats = self.workers()
            self.final_local_state = self._local_state()
            self.final_variables = self.variables()
        except Exception as error:  # noqa: BLE001
            if state != "failed":
                self.error = f"final pull failed: {error}"
                state = "failed"
        self.finished_at = time.time()
        for actor in (*self.replicas, *self.shards):
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        with self._lock:
            self.state = state
            for q in self._subscribers:
                try:
                    q.put_nowait(None)
                except queue.Full:
                    pass
            self._subscribers.clear()

    # -- results -----------------------------------------------------------------------------------

    def evaluate(self, x, y) -> dict:
        """Loss and accuracy of the current (after the job: the final) weights on (x, y)."""
        features, labels = check_data(self.spec, x, y, self.batch, "evaluation data")
        return self._with_weights(lambda t: t.evaluate(features, labels))

    def export(self, path: str | os.PathLike) -> str:
        """Writes the trained model: a normal trainable .edge (edge.Trainer opens it; its ``export``
        or plain ``infer`` serve inference). While the job runs, a snapshot of the shards."""
        self._with_weights(lambda t: t.export(path))
        return os.fspath(path)

    def close(self) -> None:
        self.stop()
        self.wait(60)
        self._evaluator.close()
        shutil.rmtree(self._folder, ignore_errors=True)
        if self._owned_checkpoints:
            shutil.rmtree(self._owned_checkpoints, ignore_errors=True)


class _ReplicaActor(Replica):
    """The Ray actor around Replica: the object-store arguments arrive resolved."""

    def __init__(self, model_data, placement, config, features, labels, shards):
        import ray

        features = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in features.items()}
        super().__init__(model_data, placement, config, features, labels, shards)

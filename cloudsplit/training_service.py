"""The Training gRPC service of ``cloudsplit serve``: the front door of ``cloudsplit.training``.

A job trains a model the inference service already holds (the same ``ModelRegistry``, so a model
is uploaded once with RegisterModel and named by its SHA-256) on .npz files on the server's
filesystem (``training_data``). Everything a client sends is checked before a Ray actor starts:
the model's hash and trainability, the hyper-parameters (the server's own limits first, then
``JobConfig.validate``), the data files' size and layout, the data against the model
(``TrainingJob``'s checks). A refusal ends the call with INVALID_ARGUMENT or NOT_FOUND and a
message naming the problem; the service goes on serving.

Jobs belong to the service, not to a call: a client that disconnects or cancels WatchJob leaves its
job running. At most ``max_jobs`` run at once (RESOURCE_EXHAUSTED past it) and ``max_watchers``
streams are open at once (each holds one of the server's RPC threads); ended jobs are kept for
GetJob and ExportModel, the oldest closed once more than ``max_kept_jobs`` have ended.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import grpc

from cloudsplit import training_data
from cloudsplit.protos import CHUNK_BYTES, MiB, split_pb2
from cloudsplit.protos import training_pb2 as pb
from cloudsplit.protos import training_pb2_grpc as pb_grpc
from cloudsplit.validation import RequestError, check_hash_format, invalid

log = logging.getLogger("cloudsplit.training_service")

SERVICE_NAME = "cloudsplit.v1.Training"
ENDED = ("finished", "stopped", "failed")
STRATEGIES = ("sync", "async", "ssp", "hybrid")
MAX_NAME = 128
MAX_EVERY = 10_000_000
POLL_S = 0.5   # how often a watch with nothing to send checks that its client is still there


@dataclass
class TrainingOptions:
    max_jobs: int = 2               # jobs running at once
    max_kept_jobs: int = 32         # ended jobs kept for GetJob / ExportModel
    max_watchers: int = 8           # WatchJob streams open at once
    max_replicas: int = 64
    max_data_mb: float = 1024.0     # per data file, on disk and decompressed
    data_root: str | None = None    # data paths resolve inside it (None: any path of the server)
    checkpoint_root: str | None = None  # job checkpoints go to <root>/<job id> (None: a temporary folder)
    cluster: str | None = None      # Ray address (None: an embedded cluster on loopback)
    chunk_bytes: int = CHUNK_BYTES          # ExportModel chunk size


@dataclass
class _Job:
    job_id: str
    job: Any                        # cloudsplit.training.TrainingJob
    model_sha256: str
    strategy: str
    name: str
    export_lock: threading.Lock


def _event_message(event: dict) -> pb.JobEvent:
    detail = {str(k): str(v) for k, v in event.items() if k not in ("time", "event")}
    return pb.JobEvent(time_s=float(event.get("time", 0.0)), event=str(event.get("event", "")), detail=detail)


def metrics_message(job_id: str, state: str, record: dict, previous: dict | None = None,
                    events_sent: int = 0) -> pb.JobMetrics:
    """One metrics record of ``TrainingJob.history`` as a JobMetrics; ``events`` carries the events
    after the first ``events_sent`` (a record holds every event so far)."""
    message = pb.JobMetrics(
        job_id=job_id, state=state, time_s=float(record.get("time") or 0.0), step=int(record.get("step") or 0),
        target_steps=int(record.get("target_steps") or 0), samples=int(record.get("samples") or 0),
        samples_per_s=float(record.get("samples_per_s") or 0.0), updates=int(record.get("updates") or 0),
        staleness={int(k): int(v) for k, v in (record.get("staleness") or {}).items()},
        bytes_pushed=int(record.get("bytes_pushed") or 0), bytes_pulled=int(record.get("bytes_pulled") or 0),
        late=int(record.get("late") or 0), stale=int(record.get("stale") or 0),
        replicas_alive=int(record.get("replicas_alive") or 0),
        events=[_event_message(e) for e in (record.get("events") or [])[events_sent:]])
    for key in ("loss", "val_loss", "val_accuracy"):
        value = record.get(key)
        if value is not None and math.isfinite(value):
            setattr(message, key, float(value))
    if previous is not None:
        elapsed = float(record.get("time") or 0.0) - float(previous.get("time") or 0.0)
        if elapsed > 0:
            message.updates_per_s = max(0, int(record.get("updates") or 0) - int(previous.get("updates") or 0)) / elapsed
    return message


class TrainingService(pb_grpc.TrainingServicer):
    def __init__(self, registry, options: TrainingOptions | None = None):
        self.registry = registry
        self.options = options or TrainingOptions()
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._starting = 0
        self._start_lock = threading.Lock()   # one Ray start at a time: ray.init is not re-entrant
        self._watchers = 0

    # -- admission ---------------------------------------------------------------------------------

    def _active(self) -> int:
        return self._starting + sum(1 for j in self._jobs.values() if j.job.state not in ENDED)

    def _reserve(self) -> None:
        with self._lock:
            if self._active() >= self.options.max_jobs:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"the server runs at most {self.options.max_jobs} training jobs at once; "
                                   "stop one or retry later")
            self._starting += 1

    def _release(self) -> None:
        with self._lock:
            self._starting -= 1

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            record = self._jobs.get(job_id)
        if record is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no training job {job_id[:80]!r} on this server")
        return record

    # -- StartJob ----------------------------------------------------------------------------------

    def StartJob(self, request, context):
        try:
            return self._start(request)
        except RequestError as error:
            context.abort(error.code, error.message)

    def _start(self, request) -> pb.JobStatus:
        from cloudsplit import training

        entry = self._model(request.model_sha256)
        config, strategy = self._config(request)
        self._reserve()
        try:
            x, y = self._load(request.data_path, "data")
            validation = self._load(request.validation_path, "validation data") if request.validation_path else None
            job_id = secrets.token_hex(8)
            if self.options.checkpoint_root:
                config.checkpoint_dir = os.path.join(self.options.checkpoint_root, job_id)
            name = request.name or job_id
            try:
                job = training.TrainingJob(entry.data, x, y, config, validation_data=validation,
                                           address=self.options.cluster, name=name)
            except training.TrainingError as error:
                raise invalid(str(error)) from None
            with self._start_lock:
                try:
                    job.start()
                except Exception as error:  # noqa: BLE001 - Ray's own failures, reported to the client
                    log.exception("training job %s did not start", job_id)
                    raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                       f"the training cluster did not start the job: {type(error).__name__}: {error}") from None
            record = _Job(job_id, job, entry.sha256, strategy, name, threading.Lock())
            with self._lock:
                self._jobs[job_id] = record
                self._starting -= 1
                evicted = self._evict()
        except BaseException:
            self._release()
            raise
        for old in evicted:
            old.job.close()
        log.info("training job %s started: model %s, %s x%d, %d steps", job_id, entry.sha256[:12], strategy,
                 config.replicas, job.target_steps)
        return self._status(record)

    def _evict(self) -> list[_Job]:
        ended = [j for j in self._jobs.values() if j.job.state in ENDED]
        ended.sort(key=lambda j: j.job.finished_at or 0.0)
        evicted = ended[:max(0, len(ended) - self.options.max_kept_jobs)]
        for j in evicted:
            del self._jobs[j.job_id]
        return evicted

    def _model(self, digest: str):
        digest = digest.lower()
        check_hash_format(digest)
        entry = self.registry.get(digest)
        if entry is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"model {digest[:12]} is not on this server: upload it with RegisterModel first")
        import edge

        with edge.Interpreter(model_content=entry.data) as interpreter:
            signatures = sorted(interpreter.get_signature_list())
        if "grad" not in signatures or "train" not in signatures:
            raise invalid(f"model {digest[:12]} ({entry.name}) is not trainable: it has signatures {signatures}, "
                          "no 'grad' and 'train' (convert it with: edge convert --trainable)")
        return entry

    def _config(self, request):
        """The job's JobConfig from the request, checked against the server's limits and the engine's."""
        from cloudsplit import training
        from cloudsplit.training.engine import JobConfig

        def given(field: str, default=None):
            return getattr(request, field) if request.HasField(field) else default

        if len(request.name) > MAX_NAME or not request.name.isprintable():
            raise invalid(f"name must be at most {MAX_NAME} printable characters")
        strategy_name = request.strategy or "sync"
        if strategy_name not in STRATEGIES:
            raise invalid(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy_name[:40]!r}")
        replicas = given("replicas", 2)
        if not 1 <= replicas <= self.options.max_replicas:
            raise invalid(f"replicas must be in [1, {self.options.max_replicas}] on this server, got {replicas}")
        batch_size = given("batch_size")
        if batch_size is not None and not 1 <= batch_size <= 1_000_000:
            raise invalid(f"batch_size must be in [1, 1000000], got {batch_size}")
        seed = given("seed", 0)
        if seed >= 2 ** 63:
            raise invalid(f"seed must be below 2**63, got {seed}")
        target = given("target_accuracy")
        if target is not None and not 0 < target <= 1:
            raise invalid(f"target_accuracy must be in (0, 1], got {target}")
        report_every = given("report_every_s", 1.0)
        if not 0.05 <= report_every <= 60:
            raise invalid(f"report_every_s must be in [0.05, 60], got {report_every}")
        every = {}
        for field, default in (("checkpoint_every", 50), ("eval_every", 50)):
            every[field] = given(field, default)
            if not 0 <= every[field] <= MAX_EVERY:
                raise invalid(f"{field} must be in [0, {MAX_EVERY}], got {every[field]}")
        try:
            strategy = training.parse_strategy(strategy_name, backup_workers=given("backup_workers", 0),
                                               staleness=given("staleness", 4), groups=given("groups", 2),
                                               replicas=replicas, n_fetch=given("n_fetch", 1), n_push=given("n_push", 1))
            config = JobConfig(replicas=replicas, ps_shards=given("ps_shards", 1), strategy=strategy,
                               steps=given("steps"), epochs=given("epochs"), batch_size=batch_size,
                               num_threads=given("num_threads", 1), seed=seed, compression=request.compression or "none",
                               optimizer=request.optimizer or None, learning_rate=given("learning_rate"),
                               target_accuracy=target, report_every=report_every,
                               lr_schedule=request.lr_schedule or "constant", **every)
            config.validate()
            # The optimizer's own checks (kind, learning rate) before any data is read.
            training.Optimizer().with_overrides(kind=config.optimizer, learning_rate=config.learning_rate)
        except ValueError as error:   # TrainingError is one
            raise invalid(str(error)) from None
        return config, strategy_name

    def _load(self, path: str, what: str):
        try:
            full = training_data.resolve(path, self.options.data_root)
            return training_data.load_npz(full, int(self.options.max_data_mb * MiB), what)
        except training_data.DataError as error:
            code = grpc.StatusCode.NOT_FOUND if error.missing else grpc.StatusCode.INVALID_ARGUMENT
            raise RequestError(code, str(error)) from None

    # -- status ------------------------------------------------------------------------------------

    def _status(self, record: _Job) -> pb.JobStatus:
        job = record.job
        history = job.history
        last = history[-1] if history else None
        config = job.config
        status = pb.JobStatus(job_id=record.job_id, name=record.name, state=job.state, error=job.error or "",
                              model_sha256=record.model_sha256, strategy=record.strategy, replicas=config.replicas,
                              ps_shards=config.ps_shards, target_steps=int(job.target_steps),
                              step=int(last.get("step") or 0) if last else 0,
                              started_unix_s=float(job.started_at or 0.0), finished_unix_s=float(job.finished_at or 0.0))
        if last is not None:
            events = len(last.get("events") or [])
            status.last.CopyFrom(metrics_message(record.job_id, job.state, last, None, events))
        return status

    def GetJob(self, request, context):
        try:
            return self._status(self._job(request.job_id))
        except RequestError as error:
            context.abort(error.code, error.message)

    def ListJobs(self, request, context):
        with self._lock:
            records = list(self._jobs.values())
        return pb.ListJobsReply(jobs=[self._status(r) for r in records])

    def StopJob(self, request, context):
        try:
            record = self._job(request.job_id)
        except RequestError as error:
            context.abort(error.code, error.message)
        record.job.stop()
        log.info("training job %s: stop asked", record.job_id)
        return self._status(record)

    # -- WatchJob ----------------------------------------------------------------------------------

    def WatchJob(self, request, context):
        try:
            record = self._job(request.job_id)
            with self._lock:
                if self._watchers >= self.options.max_watchers:
                    raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"the server streams at most {self.options.max_watchers} job watches at once")
                self._watchers += 1
        except RequestError as error:
            context.abort(error.code, error.message)
        try:
            yield from self._watch(record, request.from_start, context)
        finally:
            with self._lock:
                self._watchers -= 1

    def _watch(self, record: _Job, from_start: bool, context) -> Iterator[pb.JobMetrics]:
        job = record.job
        updates = job.subscribe()   # first the latest record, then each new one, then None
        try:
            backlog = list(job.history) if from_start else []
            sent: set[int] = set()   # history records stay alive, so their ids stay unique
            previous, events_sent = None, 0
            ended = False
            for item in self._drain(updates, context, backlog):
                if item is None:
                    ended = True
                    break
                if id(item) in sent:
                    continue   # the backlog's last record, which the subscription also delivers
                sent.add(id(item))
                yield metrics_message(record.job_id, "running", item, previous, events_sent)
                events_sent = len(item.get("events") or [])
                previous = item
            if not ended:
                return   # the client went away: the job goes on
            final = job.history[-1] if job.history else {}
            message = metrics_message(record.job_id, job.state, final, previous, events_sent)
            message.final = True
            message.error = job.error or ""
            yield message
        finally:
            job.unsubscribe(updates)

    @staticmethod
    def _drain(updates: queue.Queue, context, backlog: list[dict]) -> Iterator[dict | None]:
        yield from backlog
        while True:
            try:
                item = updates.get(timeout=POLL_S)
            except queue.Empty:
                if not context.is_active():
                    return
                continue
            yield item
            if item is None:
                return

    # -- ExportModel -------------------------------------------------------------------------------

    def ExportModel(self, request, context):
        try:
            record = self._job(request.job_id)
            data = self._export(record)
        except RequestError as error:
            context.abort(error.code, error.message)
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        size = max(1024, self.options.chunk_bytes)
        for offset in range(0, len(data), size):
            chunk = split_pb2.ModelChunk(data=data[offset:offset + size])
            if offset == 0:
                chunk.model_sha256, chunk.total_bytes = digest, len(data)
            yield chunk

    def _export(self, record: _Job) -> bytes:
        """The model with the job's parameters: its final ones once it ended; while it runs, the
        shards' current ones written through a Trainer of our own (the job's evaluator belongs to
        its monitor thread)."""
        from cloudsplit import training
        from edge.trainer import Trainer

        job = record.job
        with record.export_lock, tempfile.TemporaryDirectory(prefix="edge-export-") as folder:
            out = os.path.join(folder, "trained.edge")
            values = None
            if job.state not in ENDED:
                try:
                    values = job.variables()
                except training.TrainingError:
                    values = None   # it ended meanwhile: its final parameters follow
            if values is not None:
                model = os.path.join(folder, "model.edge")
                with open(model, "wb") as f:
                    f.write(job.spec.data)
                with Trainer(model) as trainer:
                    for name, value in values.items():
                        trainer.set_variable(name, value)
                    trainer.export(out)
            else:
                job.wait(120)
                if job.final_variables is None:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"training job {record.job_id} ({job.state}) has no parameters to export: "
                                       f"{job.error or 'its parameter shards are gone'}")
                job.export(out)
            with open(out, "rb") as f:
                return f.read()

    # -- shutdown ----------------------------------------------------------------------------------

    def close(self, timeout_s: float = 60.0) -> None:
        """Stops every job and frees what they hold (their Ray actors, temporary folders)."""
        with self._lock:
            records = list(self._jobs.values())
            self._jobs.clear()
        for record in records:
            record.job.stop()
        deadline = time.monotonic() + timeout_s
        for record in records:
            record.job.wait(max(0.0, deadline - time.monotonic()))
            try:
                record.job.close()
            except Exception:  # noqa: BLE001 - closing what is left; one job's failure must not keep the others
                log.exception("closing training job %s", record.job_id)


def add_to_server(server: grpc.Server, registry, options: TrainingOptions | None = None) -> TrainingService:
    service = TrainingService(registry, options)
    pb_grpc.add_TrainingServicer_to_server(service, server)
    return service

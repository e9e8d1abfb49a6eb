"""``cloudsplit train``: a distributed training job from the command line, here or on a server.

Locally (the default) the job runs through ``cloudsplit.training.start`` on an embedded Ray cluster
(or ``--address`` of a real one). With ``--server HOST:PORT`` the model is uploaded to a
``cloudsplit serve --training`` server, which runs the job on data already on its filesystem
(``--data`` and ``--validation`` then name files there); Ctrl-C asks the job to stop either way.

While it runs: a progress bar with a live metrics line (loss, validation accuracy, samples/s,
updates/s, staleness, bytes on the wire, replicas alive) and worker changes as they happen.
Metrics also go to ``--jsonl`` (one record a line), to TensorBoard event files (``--tensorboard``,
with tensorboardX), and to a plot of loss and accuracy against steps and wall time (``--plot``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterator

from cloudsplit import security
from cloudsplit.cli import UsageError

STRATEGIES = ("sync", "async", "ssp", "hybrid")
FAILED = 1
INTERRUPTED = 130


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a model with replicas and parameter servers (here, or on a server)",
        description="Trains a trainable .edge model (edge convert --trainable) with model replicas and "
                    "parameter-server shards on Ray. Data: a .npz with 'y' (labels) and 'x' (features), or one "
                    "array per model input.")
    parser.add_argument("model", help="trainable .edge model file (a local file, uploaded with --server)")
    parser.add_argument("--data", required=True, help=".npz training data (with --server: a path on the server)")
    parser.add_argument("--validation", help=".npz validation data, evaluated every --eval-every steps")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="updates to apply")
    length.add_argument("--epochs", type=float, help="passes over the data")
    job = parser.add_argument_group("strategy and cluster")
    job.add_argument("--strategy", choices=STRATEGIES, default="sync",
                     help="sync (optionally with backup workers), async (Downpour), ssp (bounded staleness), "
                          "hybrid (async groups of sync replicas); default sync")
    job.add_argument("--replicas", type=int, default=2, help="model replicas (default 2)")
    job.add_argument("--ps", type=int, default=1, dest="ps_shards", help="parameter-server shards (default 1)")
    job.add_argument("--backup-workers", type=int, default=0, help="sync: gradients a round does not wait for")
    job.add_argument("--staleness", type=int, default=4, help="ssp: how many updates old a push may be (default 4)")
    job.add_argument("--groups", type=int, default=2, help="hybrid: asynchronous groups (default 2)")
    job.add_argument("--n-fetch", type=int, default=1, help="async/ssp: pull parameters every N steps")
    job.add_argument("--n-push", type=int, default=1, help="async/ssp: push the mean of N gradients")
    job.add_argument("--address", help="Ray cluster to join (default: start one on loopback)")
    job.add_argument("--server", help="submit to a 'cloudsplit serve --training' server at HOST:PORT instead")
    security.add_token_arguments(job, "with --server")
    security.add_client_tls_arguments(parser)
    hyper = parser.add_argument_group("hyper-parameters")
    hyper.add_argument("--batch-size", type=int, help="samples per replica step (default: the model's fixed batch, else 32)")
    hyper.add_argument("--threads", type=int, default=1, help="threads per replica (default 1)")
    hyper.add_argument("--seed", type=int, default=0)
    hyper.add_argument("--compression", default="none", help="gradients on the wire: none, fp16, int8, topk:FRACTION")
    hyper.add_argument("--optimizer", help="sgd, momentum, adam, adamw, adagrad (default: the model's)")
    hyper.add_argument("--lr", type=float, dest="learning_rate", help="learning rate (default: the model's)")
    hyper.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine", "linear"),
                       help="the learning rate over the job's updates (default constant)")
    hyper.add_argument("--target-accuracy", type=float, help="stop once validation accuracy reaches it")
    hyper.add_argument("--checkpoint-dir", help="where the shards checkpoint (default: a temporary folder)")
    hyper.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (0: at the end)")
    hyper.add_argument("--eval-every", type=int, default=50, help="steps between validations (0: never)")
    hyper.add_argument("--report-every", type=float, default=1.0, help="seconds between metrics records")
    out = parser.add_argument_group("output")
    out.add_argument("--name", default="train", help="the job's name")
    out.add_argument("--export", help="write the trained model (a trainable .edge) here")
    out.add_argument("--jsonl", help="write every metrics record to this file, one JSON object a line")
    out.add_argument("--plot", help="write a PNG of loss and accuracy against steps and wall time")
    out.add_argument("--tensorboard", help="write TensorBoard event files to this folder (needs tensorboardX)")
    out.add_argument("--quiet", action="store_true", help="no progress bar; only the summary")
    parser.set_defaults(func=train_command)
    return parser


# -- metrics -------------------------------------------------------------------------------------------

def _local_records(records: Iterator[dict | None]) -> Iterator[dict]:
    """TrainingJob records, each with updates/s since the previous one and only its new events."""
    previous, seen = None, 0
    for record in records:
        if record is None:
            return
        events = list(record.get("events") or [])
        row = {k: v for k, v in record.items() if k != "events"}
        row["events"] = events[seen:]
        seen = len(events)
        elapsed = (record.get("time") or 0.0) - (previous.get("time") or 0.0) if previous else 0.0
        row["updates_per_s"] = (max(0, record["updates"] - previous["updates"]) / elapsed) if elapsed > 0 else 0.0
        previous = record
        yield row


def _message_record(message) -> dict:
    row = {"time": message.time_s, "step": message.step, "target_steps": message.target_steps,
           "samples": message.samples, "samples_per_s": message.samples_per_s, "updates": message.updates,
           "updates_per_s": message.updates_per_s, "staleness": dict(message.staleness),
           "bytes_pushed": message.bytes_pushed, "bytes_pulled": message.bytes_pulled, "late": message.late,
           "stale": message.stale, "replicas_alive": message.replicas_alive,
           "events": [{"time": e.time_s, "event": e.event, **dict(e.detail)} for e in message.events]}
    for key in ("loss", "val_loss", "val_accuracy"):
        row[key] = getattr(message, key) if message.HasField(key) else None
    return row


def _format_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} B"


def metrics_line(row: dict) -> str:
    parts = []
    if row.get("loss") is not None:
        parts.append(f"loss {row['loss']:.4f}")
    if row.get("val_accuracy") is not None:
        parts.append(f"val acc {row['val_accuracy']:.3f}")
    parts.append(f"{row.get('samples_per_s') or 0:.0f} samples/s")
    parts.append(f"{row.get('updates_per_s') or 0:.1f} updates/s")
    staleness = row.get("staleness") or {}
    if staleness:
        parts.append("staleness " + " ".join(f"{k}:{v}" for k, v in sorted(staleness.items(), key=lambda kv: int(kv[0]))))
    parts.append(f"up {_format_bytes(row.get('bytes_pushed') or 0)} down {_format_bytes(row.get('bytes_pulled') or 0)}")
    parts.append(f"{row.get('replicas_alive', 0)} replicas")
    return " | ".join(parts)


class _Sinks:
    """Where each record goes: the progress display, the JSONL file, TensorBoard, the plot's series."""

    def __init__(self, args):
        self.rows: list[dict] = []
        self.jsonl = open(args.jsonl, "w") if args.jsonl else None
        self.tensorboard = None
        if args.tensorboard:
            from tensorboardX import SummaryWriter   # checked before the job starts

            self.tensorboard = SummaryWriter(args.tensorboard)
        self.progress = None
        if not args.quiet:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = Console(stderr=True)
            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[metrics]}"),
                                     console=self.console, transient=False)
            self.task = self.progress.add_task(args.name, total=None, metrics="starting")
            self.progress.start()

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if self.jsonl:
            self.jsonl.write(json.dumps(row, default=float) + "\n")
            self.jsonl.flush()
        step = row.get("step") or 0
        if self.tensorboard:
            for key in ("loss", "val_loss", "val_accuracy", "samples_per_s", "updates_per_s"):
                if row.get(key) is not None:
                    self.tensorboard.add_scalar(key, row[key], step, walltime=None)
            self.tensorboard.add_scalar("bytes_pushed", row.get("bytes_pushed") or 0, step)
            self.tensorboard.add_scalar("replicas_alive", row.get("replicas_alive") or 0, step)
        if self.progress is not None:
            for event in row.get("events") or []:
                detail = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("time", "event"))
                self.console.log(f"{event['event']}: {detail}")
            self.progress.update(self.task, completed=step, total=row.get("target_steps") or None,
                                 metrics=metrics_line(row))

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.jsonl:
            self.jsonl.close()
        if self.tensorboard:
            self.tensorboard.close()


def plot_curves(rows: list[dict], path: str, title: str = "") -> None:
    """Loss (training and validation) and validation accuracy against steps (top) and wall time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for row_axes, axis_key, label in ((axes[0], "step", "step"), (axes[1], "time", "wall time (s)")):
        loss_ax, acc_ax = row_axes
        for key, style, name in (("loss", "-", "training loss"), ("val_loss", "o--", "validation loss")):
            points = [(r[axis_key], r[key]) for r in rows if r.get(key) is not None and r.get(axis_key) is not None]
            if points:
                loss_ax.plot(*zip(*points), style, label=name)
        points = [(r[axis_key], r["val_accuracy"]) for r in rows
                  if r.get("val_accuracy") is not None and r.get(axis_key) is not None]
        if points:
            acc_ax.plot(*zip(*points), "o-", color="tab:green", label="validation accuracy")
        acc_ax.set_ylim(0, 1)
        loss_ax.set_ylabel("loss")
        acc_ax.set_ylabel("validation accuracy")
        for ax in row_axes:
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
        if loss_ax.lines:
            loss_ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command -----------------------------------------------------------------------------------

def _check(args) -> None:
    if args.tensorboard:
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise UsageError("cloudsplit train: --tensorboard needs tensorboardX: pip install tensorboardX") from None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("cloudsplit train: --plot needs matplotlib: pip install matplotlib") from None
    if args.server and (args.address or args.checkpoint_dir):
        raise UsageError("cloudsplit train: --address and --checkpoint-dir are the server's business with --server")
    if not os.path.isfile(args.model):
        raise UsageError(f"cloudsplit train: {args.model}: no such model file")


def train_command(args) -> int:
    _check(args)
    run = _run_remote if args.server else _run_local
    sinks = None
    try:
        sinks, state, error, export = run(args, lambda: _Sinks(args))
    finally:
        if sinks is not None:
            sinks.close()
    rows = sinks.rows
    if args.plot and rows:
        plot_curves(rows, args.plot, f"{os.path.basename(args.model)}: {args.strategy} x{args.replicas}")
    last = rows[-1] if rows else {}
    summary = [f"{state}: step {last.get('step') or 0}/{last.get('target_steps') or '?'}"]
    if last.get("loss") is not None:
        summary.append(f"loss {last['loss']:.4f}")
    accuracy = next((r["val_accuracy"] for r in reversed(rows) if r.get("val_accuracy") is not None), None)
    if accuracy is not None:
        summary.append(f"val accuracy {accuracy:.3f}")
    summary.append(f"{last.get('time') or 0:.1f} s")
    print("cloudsplit train: " + ", ".join(summary))
    for what, path in (("metrics", args.jsonl), ("plot", args.plot), ("tensorboard", args.tensorboard),
                       ("model", export)):
        if path:
            print(f"  {what}: {path}")
    if state == "failed":
        print(f"cloudsplit train: error: the job failed: {error}", file=sys.stderr)
        return FAILED
    return INTERRUPTED if state == "stopped" else 0


def _run_local(args, make_sinks):
    from cloudsplit import training, training_data

    try:
        strategy = training.parse_strategy(args.strategy, backup_workers=args.backup_workers, staleness=args.staleness,
                                           groups=args.groups, replicas=args.replicas, n_fetch=args.n_fetch,
                                           n_push=args.n_push)
        x, y = training_data.load_npz(args.data)
        validation = training_data.load_npz(args.validation, what="validation data") if args.validation else None
        job = training.start(args.model, (x, y), strategy=strategy, cluster=args.address, replicas=args.replicas,
                             ps_shards=args.ps_shards, checkpoint_dir=args.checkpoint_dir, steps=args.steps,
                             epochs=args.epochs, validation_data=validation, name=args.name,
                             batch_size=args.batch_size, num_threads=args.threads, seed=args.seed,
                             compression=args.compression, optimizer=args.optimizer,
                             learning_rate=args.learning_rate, target_accuracy=args.target_accuracy,
                             checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                             report_every=args.report_every, lr_schedule=args.lr_schedule)
    except ValueError as error:   # TrainingError, DataError, a strategy's own check
        raise UsageError(f"cloudsplit train: {error}") from None
    sinks = make_sinks()
    updates = job.subscribe()
    try:
        def records():
            while True:
                try:
                    item = updates.get()
                except KeyboardInterrupt:
                    job.stop()   # it finishes its round, and the records go on to the end
                    continue
                yield item
                if item is None:
                    return

        rows = _local_records(records())
        while True:
            try:
                for row in rows:
                    sinks.add(row)
                break
            except KeyboardInterrupt:   # while a record was being shown: the same stop, then on
                job.stop()
        job.wait()
        export = None
        if args.export and job.final_variables is not None:
            export = job.export(args.export)
        return sinks, job.state, job.error, export
    finally:
        job.close()


def _run_remote(args, make_sinks):
    import grpc

    from cloudsplit.connection import model_chunks
    from cloudsplit.protos import split_pb2_grpc, training_pb2, training_pb2_grpc

    metadata = security.bearer_metadata(security.read_token(args.token_file))
    channel = security.make_channel(args.server, security.client_tls_from_args(args))
    try:
        inference = split_pb2_grpc.SplitInferenceStub(channel)
        service = training_pb2_grpc.TrainingStub(channel)
        with open(args.model, "rb") as f:
            data = f.read()
        import hashlib

        digest = hashlib.sha256(data).hexdigest()

        try:
            inference.RegisterModel(model_chunks(data, digest), metadata=metadata, timeout=120)
            request = training_pb2.StartJobRequest(
                model_sha256=digest, data_path=args.data, validation_path=args.validation or "", name=args.name,
                strategy=args.strategy, replicas=args.replicas, ps_shards=args.ps_shards,
                backup_workers=args.backup_workers, staleness=args.staleness, groups=args.groups,
                n_fetch=args.n_fetch, n_push=args.n_push, num_threads=args.threads, seed=args.seed,
                compression=args.compression, optimizer=args.optimizer or "", checkpoint_every=args.checkpoint_every,
                eval_every=args.eval_every, report_every_s=args.report_every, lr_schedule=args.lr_schedule)
            for key in ("steps", "epochs", "batch_size", "learning_rate", "target_accuracy"):
                if getattr(args, key) is not None:
                    setattr(request, key, getattr(args, key))
            status = service.StartJob(request, metadata=metadata, timeout=300)
        except grpc.RpcError as error:
            raise UsageError(f"cloudsplit train: the server refused the job: {error.code().name}: {error.details()}") from None
        except ValueError as error:   # a value out of the proto field's range
            raise UsageError(f"cloudsplit train: {error}") from None
        sinks = make_sinks()
        job_id, final = status.job_id, None
        while final is None:
            try:
                for message in service.WatchJob(training_pb2.WatchJobRequest(job_id=job_id, from_start=not sinks.rows),
                                                metadata=metadata):
                    if message.final:
                        final = message
                        break
                    sinks.add(_message_record(message))
            except KeyboardInterrupt:
                service.StopJob(training_pb2.JobRef(job_id=job_id), metadata=metadata, timeout=30)
            except grpc.RpcError as error:
                raise UsageError(f"cloudsplit train: watching job {job_id}: {error.code().name}: {error.details()}") from None
        if not sinks.rows or sinks.rows[-1]["step"] != final.step:
            sinks.add(_message_record(final))
        export = None
        if args.export and final.state != "failed":
            with open(args.export + ".part", "wb") as out:
                for chunk in service.ExportModel(training_pb2.ExportModelRequest(job_id=job_id), metadata=metadata,
                                                 timeout=300):
                    out.write(chunk.data)
            os.replace(args.export + ".part", args.export)
            export = args.export
        return sinks, final.state, final.error, export
    finally:
        channel.close()

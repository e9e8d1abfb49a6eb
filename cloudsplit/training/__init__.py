"""Distributed training in the datacenter: parameter-server shards and model replicas on Ray.

    from cloudsplit import training
    job = training.fit("digits.train.edge", (x, y), strategy=training.Sync(backup_workers=1),
                       replicas=4, ps_shards=2, epochs=10, validation_data=(x_val, y_val))
    job.history[-1]["val_accuracy"]; job.export("digits.trained.edge")

The model is a trainable .edge file (``edge convert --trainable``); replicas run its ``grad``
signature with the C runtime, shards apply updates with the runtime's optimizer kernels (see
``model``, ``shard``, ``replica``, ``strategies``, ``engine``). Ray is imported only here, on the
datacenter side; device code never needs it.
"""
from __future__ import annotations

import os
from typing import Callable

from cloudsplit.training.engine import JobConfig, TrainingJob, ensure_ray, import_ray
from cloudsplit.training.model import ModelSpec, Optimizer, TrainingError
from cloudsplit.training.strategies import Async, BoundedStaleness, Hybrid, Sync, parse as parse_strategy

__all__ = ["fit", "start", "Sync", "Async", "BoundedStaleness", "Hybrid", "TrainingJob", "TrainingError",
           "JobConfig", "ModelSpec", "Optimizer", "parse_strategy", "ensure_ray", "import_ray"]


def start(model, data, *, strategy=None, cluster: str | None = None, replicas: int = 2, ps_shards: int = 1,
          checkpoint_dir: str | os.PathLike | None = None, steps: int | None = None, epochs: float | None = None,
          validation_data=None, on_metrics: Callable[[dict], None] | None = None, name: str = "job",
          **options) -> TrainingJob:
    """Starts a job and returns at once (``job.wait()``, ``job.stop()``, ``job.subscribe()``).

    ``model``: a path or the bytes of a trainable .edge. ``data``: (features, labels), features an
    array (one input) or a dict by input name. ``cluster``: None starts an embedded Ray cluster on
    loopback; "ray://host:port" or "host:port" joins one. ``options``: the other JobConfig fields
    (batch_size, num_threads, seed, compression, checkpoint_every, eval_every, optimizer,
    learning_rate, target_accuracy, ...)."""
    x, y = data
    config = JobConfig(replicas=replicas, ps_shards=ps_shards, strategy=strategy or Sync(), steps=steps,
                       epochs=epochs, checkpoint_dir=os.fspath(checkpoint_dir) if checkpoint_dir else None, **options)
    job = TrainingJob(model, x, y, config, validation_data=validation_data, address=cluster, on_metrics=on_metrics,
                      name=name)
    return job.start()


def fit(model, data, **kwargs) -> TrainingJob:
    """``start`` and wait for the job to end; raises TrainingError if it failed."""
    job = start(model, data, **kwargs)
    job.wait()
    if job.state == "failed":
        raise TrainingError(f"training job failed: {job.error}")
    return job

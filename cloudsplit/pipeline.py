"""Pipeline-parallel training: a model's stages (converter.autodiff.stages) on Ray actors, one per
stage, fed micro-batches in a GPipe or 1F1B order.

Each actor (``StageWorker``) holds one stage file in an edge.Interpreter: its variables and
optimizer slots live there and nowhere else. Per micro-batch it keeps what the stage's backward
reads: with stages converted with recomputation (the default), only the tensors it received
(backward runs the forward again from them); without, also the activations forward saved. A
stage's activation memory is that times the micro-batches in flight. A batch of M micro-batches:

- gpipe: every stage runs the M forwards, then the M backwards;
- 1f1b: stage s runs min(K - 1 - s, M) forwards to fill the pipeline, then alternates one forward
  and one backward, then drains the backwards: at most K - s micro-batches in flight at stage s
  instead of M.

Activations and gradients pass between actors as Ray object references, so a stage starts a
micro-batch as soon as its input exists and the driver only submits calls (each actor runs its
calls in the order the schedule submits them). Each stage sums its variables' gradients over the
micro-batches and, after the last backward, applies their mean once through its update signature:
with micro-batches of equal size and a mean loss this is one step of the whole batch.

Ray: ``ensure_ray`` from cloudsplit.training.engine (a local cluster bound to loopback unless an
address is given). With ``checkpoint_dir`` every stage saves itself after each update and Ray
restarts a stage that dies; the driver then runs the batch again (see ``PipelineTrainer.step``).
``replicas`` R > 1 runs R copies of the pipeline on shares of the batch (data parallelism), stage k
of each applying the mean gradient of all of them. ``predict`` serves through the same stages (the
last stage's infer signature gives the model's own prediction), pipelined over micro-batches, with
the weights as trained so far. Serving a converted model through stages behind ``cloudsplit serve``
is cloudsplit.pipeline_serving.
"""
from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

SCHEDULES = ("gpipe", "1f1b")


class StageRestarted(RuntimeError):
    """A stage was asked for the backward of a micro-batch whose forward it no longer holds: it
    restarted in between. The driver runs the batch again."""


class StageWorker:
    """One stage: forward(micro, inputs), backward(micro, upstream), update() (see the module)."""

    def __init__(self, stage: bytes, threads: int = 1, delay_s: tuple[float, float] = (0.0, 0.0),
                 checkpoint: str | None = None):
        """``delay_s``: (forward, backward) seconds slept per call on top of the real work; a
        benchmark's stand-in for a stage's compute (labelled as such where it is reported).
        ``checkpoint``: a file the stage writes after every update (variables, optimizer slots
        and its step count, atomically) and restores from when it starts, e.g. when Ray restarts
        the actor after a crash."""
        import edge
        from edge import checkpoint as checkpoints

        self._delay = delay_s
        self._checkpoint = checkpoint
        self._incarnation = f"{os.getpid()}-{time.monotonic_ns()}"

        self._interpreter = edge.Interpreter(model_content=stage, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        runner = self._interpreter.get_signature_runner
        self._forward = runner("forward") if "forward" in signatures else None
        self._infer = runner("infer") if "infer" in signatures else self._forward
        self._backward = runner("backward")
        self._update = runner("update") if "update" in signatures else None
        self._update_inputs = list(signatures["update"]["inputs"]) if self._update else []
        backward_inputs = signatures["backward"]["inputs"]
        # what backward reads besides the upstream gradient: received tensors, and (stages converted
        # without recompute) the activations forward returns as saved/<t>
        self._keep = [k for k in backward_inputs if not k.startswith("grad_in/") and k != "labels"]
        self._inputs = list(signatures["forward"]["inputs"]) if self._forward else self._keep
        self._seeds = [k[len("grad_in/"):] for k in backward_inputs if k.startswith("grad_in/")]
        self._kept: dict[int, dict[str, np.ndarray]] = {}
        self._sums: dict[str, np.ndarray] = {}
        self._count = 0
        self.steps = 0
        self.busy_s = 0.0
        self.peak_kept_bytes = 0
        self._variables = {d["name"]: d["index"] for d in self._interpreter.get_tensor_details()
                           if d.get("kind") == "variable"}
        if checkpoint and os.path.exists(checkpoint):
            specs = {name: (tuple(v.shape), v.dtype) for name, v in self.variables().items()}
            loaded = checkpoints.restore(checkpoint, self._interpreter, self._variables, specs)
            self.steps = int(loaded.info["steps"])

    def forward(self, micro: int, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Returns (the stage's outputs, micro): the driver hands the second, a small object, to this
        stage's backward of the micro-batch, so that backward fails with forward's error if forward
        failed (or never ran because its input failed)."""
        start = time.perf_counter()
        feeds = {k: np.asarray(inputs[k]) for k in self._inputs}
        # the last stage sends nothing forward: its backward computes the forward and the loss
        outputs = dict(self._forward(**feeds)) if self._forward else {}
        self._kept[micro] = {k: feeds[k] if k in feeds else outputs.pop(k) for k in self._keep}
        kept = sum(v.nbytes for f in self._kept.values() for v in f.values())
        self.peak_kept_bytes = max(self.peak_kept_bytes, kept)
        if self._delay[0]:
            time.sleep(self._delay[0])
        self.busy_s += time.perf_counter() - start
        return outputs, micro

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inference: the stage's outputs (the last stage: the model's prediction); nothing kept."""
        outputs = self._infer(**{k: np.asarray(inputs[k]) for k in self._inputs})
        return {k: v for k, v in outputs.items() if not k.startswith("saved/")}

    def backward(self, micro: int, upstream: Mapping[str, np.ndarray], forward_done: int | None = None
                 ) -> dict[str, np.ndarray]:
        """``upstream``: the next stage's backward result (its grad/<tensor> for this stage's
        outputs), or {"labels": ...} on the last stage. Returns grad/<input> (and loss)."""
        start = time.perf_counter()
        if micro not in self._kept:
            raise StageRestarted(f"backward of micro-batch {micro} without its forward (the stage restarted)")
        feeds = self._kept.pop(micro)
        if self._seeds:
            feeds.update({f"grad_in/{t}": upstream[f"grad/{t}"] for t in self._seeds})
        else:
            feeds["labels"] = upstream["labels"]
        out = dict(self._backward(**feeds))
        if self._delay[1]:
            time.sleep(self._delay[1])
        for key in self._update_inputs:
            self._sums[key] = self._sums[key] + out[key] if key in self._sums else np.array(out[key])
        self._count += 1
        self.busy_s += time.perf_counter() - start
        return {k: v for k, v in out.items() if k not in self._update_inputs}

    def micro_size(self) -> int:
        """Rows per micro-batch: the first input's batch dimension, fixed at conversion."""
        details = self._interpreter.get_signature_runner("forward" if self._forward else "backward").get_input_details()
        return int(details[self._inputs[0]]["shape"][0])

    def gradients(self) -> tuple[dict[str, np.ndarray], int]:
        """Its gradient sums over the batch so far and how many micro-batches they cover."""
        return dict(self._sums), self._count

    def update(self, mean: Mapping[str, np.ndarray] | None = None) -> int:
        """Applies ``mean`` (with replicas: the mean over every replica's micro-batches) or, by
        default, the mean of its own summed gradients; returns the stage's step count."""
        if self._kept:
            raise RuntimeError(f"update with micro-batches {sorted(self._kept)} still waiting for backward")
        if self._update and (mean is not None or self._count):
            self._update(**(mean if mean is not None else {k: self._sums[k] / self._count for k in self._update_inputs}))
        self._sums.clear()
        self._count = 0
        self.steps += 1
        if self._checkpoint:
            from edge import checkpoint as checkpoints

            checkpoints.save(self._checkpoint, self.variables(), info={"steps": self.steps})
        return self.steps

    def incarnation(self) -> str:
        """Differs each time the actor (re)starts."""
        return self._incarnation

    def discard(self) -> int:
        """Drops what a batch left behind (kept inputs, gradient sums): before it runs again."""
        self._kept.clear()
        self._sums.clear()
        self._count = 0
        return self.steps

    def variables(self) -> dict[str, np.ndarray]:
        return {name: self._interpreter.get_tensor(index) for name, index in self._variables.items()}

    def stats(self) -> dict[str, Any]:
        return {"steps": self.steps, "busy_s": self.busy_s, "peak_kept_bytes": self.peak_kept_bytes,
                "memory_bytes": self.memory_bytes()}

    def memory_bytes(self) -> int:
        """What the stage holds, as the runtime accounts it: its model (weights), variables and
        optimizer slots, activation arena and scratch, plus the received tensors kept per
        micro-batch at their peak. (The actor's resident memory adds Python and Ray, the same
        for every stage.)"""
        info = self._interpreter.memory_info()
        return (info["model_bytes"] + info["persistent_bytes"] + info["arena_bytes"] + info["scratch_bytes"]
                + self.peak_kept_bytes)

    def reset_stats(self) -> None:
        self.busy_s = 0.0
        self.peak_kept_bytes = 0


def schedule(kind: str, stages: int, micro_batches: int) -> list[list[tuple[str, int]]]:
    """Per stage, its ("F" | "B", micro-batch) calls in order."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    order = []
    for s in range(stages):
        if kind == "gpipe":
            ops = [("F", i) for i in range(micro_batches)] + [("B", i) for i in range(micro_batches)]
        else:
            warm = min(stages - 1 - s, micro_batches)
            ops = [("F", i) for i in range(warm)]
            for i in range(micro_batches - warm):
                ops += [("F", warm + i), ("B", i)]
            ops += [("B", i) for i in range(micro_batches - warm, micro_batches)]
        order.append(ops)
    return order


class PipelineTrainer:
    """K stage actors trained batch by batch: ``step(inputs, labels)`` returns the batch's mean loss.

    ``stages``: the .edge bytes of each stage in order (converter.autodiff.stages.stage_files), all
    converted at the micro-batch size; a batch holds ``replicas`` x ``micro_batches`` of them along
    axis 0. With ``replicas`` R > 1 (data parallelism over pipelines) there are R copies of the K
    stage actors, each running its share of the micro-batches; stage k of every replica applies
    the same mean gradient, which the driver gathers from them and hands back (an all-reduce
    through the driver), so the replicas stay identical and a step equals one of the whole batch.
    """

    def __init__(self, stages: Sequence[bytes], *, micro_batches: int, schedule: str = "1f1b",
                 address: str | None = None, threads: int = 1, num_cpus: int | None = None,
                 delay_s: tuple[float, float] = (0.0, 0.0), checkpoint_dir: str | None = None,
                 max_restarts: int = 3, restart_timeout_s: float = 60.0, replicas: int = 1,
                 memory_limit: int | None = None):
        from cloudsplit.training.engine import ensure_ray

        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        if micro_batches < 1 or replicas < 1:
            raise ValueError(f"micro_batches and replicas must be >= 1, got {micro_batches} and {replicas}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self._ray = ensure_ray(address, num_cpus)
        actor = self._ray.remote(StageWorker)
        restarts = max_restarts if checkpoint_dir else 0
        self.replicas: list[list[Any]] = []
        for r in range(replicas):
            row = []
            for k, stage in enumerate(stages):
                name = f"stage-{k}.ckpt" if replicas == 1 else f"replica-{r}-stage-{k}.ckpt"
                path = os.path.join(checkpoint_dir, name) if checkpoint_dir else None
                row.append(actor.options(num_cpus=0, max_restarts=restarts).remote(stage, threads, delay_s, path))
            self.replicas.append(row)
        self.actors = self.replicas[0]
        self.micro_batches = micro_batches
        self.schedule = schedule
        self.restart_timeout_s = restart_timeout_s
        self.memory_limit = memory_limit
        self.recoveries = 0
        self._incarnations = self._ray.get([a.incarnation.remote() for a in self._all()])
        self._micro = self._ray.get(self.actors[0].micro_size.remote())  # rows per micro-batch
        self.steps = min(self._ray.get([a.discard.remote() for a in self._all()]))

    def _all(self) -> list[Any]:
        return [a for row in self.replicas for a in row]

    def step(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        """One batch. With checkpoints, a stage that dies is restarted by Ray from its last
        checkpoint and the batch runs again; a stage whose update of this batch had already been
        saved does not apply it a second time."""
        from ray.exceptions import RayActorError

        while True:
            try:
                loss = self._step(inputs, labels)
                self.steps += 1
                if self.memory_limit is not None and self.steps == 1:
                    self._check_memory()
                return loss
            except (RayActorError, StageRestarted):
                if not self._recover():
                    raise
            except Exception:
                # bad input or a stage's error: the batch is dropped everywhere, the model unchanged
                self._ray.get([a.discard.remote() for a in self._all()])
                raise

    def _check_memory(self) -> None:
        """After the first batch (the arenas exist then): every stage within memory_limit."""
        used = self._ray.get([a.memory_bytes.remote() for a in self.actors])
        over = [(s, b) for s, b in enumerate(used) if b > self.memory_limit]
        if over:
            raise MemoryError(f"pipeline stages over the memory limit of {self.memory_limit} bytes per worker: "
                              + ", ".join(f"stage {s} holds {b} bytes" for s, b in over)
                              + "; cut the model into more stages (cloudsplit plan --stages K --memory-limit)")

    def _recover(self) -> bool:
        """Waits for restarted stages and drops every stage's partial batch; False when no stage
        restarted (the error was not a crash: the caller re-raises it)."""
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            try:
                incarnations = self._ray.get([a.incarnation.remote() for a in self._all()], timeout=5.0)
                self._ray.get([a.discard.remote() for a in self._all()], timeout=5.0)
                break
            except Exception:  # the actor is still restarting (or gone for good: the deadline says so)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        restarted = incarnations != self._incarnations
        self._incarnations = incarnations
        self.recoveries += restarted
        return restarted

    def _step(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        k, m, replicas = len(self.actors), self.micro_batches, len(self.replicas)
        batch = len(labels)
        if batch % (m * replicas):
            raise ValueError(f"a batch of {batch} does not split into {m * replicas} equal micro-batches "
                             f"({replicas} replica(s) x {m})")
        size = batch // (m * replicas)
        order = schedule(self.schedule, k, m)
        last_backward = []
        for r, actors in enumerate(self.replicas):
            first = r * m
            micro_inputs = [{name: np.asarray(v)[(first + i) * size:(first + i + 1) * size] for name, v in inputs.items()}
                            for i in range(m)]
            micro_labels = [np.asarray(labels)[(first + i) * size:(first + i + 1) * size] for i in range(m)]
            last_backward += self._submit(actors, order, micro_inputs, micro_labels)
        losses = self._ray.get(last_backward)
        done = self._ray.get([a.stats.remote() for a in self._all()])
        pending = [d["steps"] == self.steps for d in done]  # False: saved this batch's update already
        if replicas == 1:
            self._ray.get([a.update.remote() if go else a.discard.remote() for a, go in zip(self.actors, pending)])
        else:
            calls = []
            for s in range(k):
                column = [actors[s] for actors in self.replicas]
                parts = self._ray.get([a.gradients.remote() for a in column])
                count = sum(c for _, c in parts)
                mean = {name: sum(g[name] for g, _ in parts) / count for name in parts[0][0]} if count else None
                for r, a in enumerate(column):
                    calls.append(a.update.remote(mean) if pending[r * k + s] else a.discard.remote())
            self._ray.get(calls)
        return float(np.mean([out["loss"] for out in losses]))

    @staticmethod
    def _submit(actors, order, micro_inputs, micro_labels) -> list[Any]:
        """Submits one replica's calls in schedule order; returns its last stage's backward refs."""
        k, m = len(actors), len(micro_inputs)
        forward: list[dict[int, Any]] = [{} for _ in range(k)]
        done: list[dict[int, Any]] = [{} for _ in range(k)]
        backward: list[dict[int, Any]] = [{} for _ in range(k)]
        position = [0] * k
        while any(position[s] < len(order[s]) for s in range(k)):
            progressed = False
            for s in range(k):
                if position[s] == len(order[s]):
                    continue
                kind, i = order[s][position[s]]
                if kind == "F":
                    source = micro_inputs[i] if s == 0 else forward[s - 1].get(i)
                    if source is None:
                        continue
                    forward[s][i], done[s][i] = actors[s].forward.options(num_returns=2).remote(i, source)
                else:
                    source = {"labels": micro_labels[i]} if s == k - 1 else backward[s + 1].get(i)
                    if source is None:
                        continue
                    backward[s][i] = actors[s].backward.remote(i, source, done[s][i])
                position[s] += 1
                progressed = True
            if not progressed:
                raise RuntimeError(f"schedule is stuck at {position}")  # a bug, not bad input
        return [backward[k - 1][i] for i in range(m)]

    def predict(self, inputs: Mapping[str, np.ndarray], replica: int = 0) -> dict[str, np.ndarray]:
        """Serving through the stages: the batch (any multiple of the micro-batch size the stages
        were converted at) goes through as micro-batches, pipelined, with the current weights;
        returns the model's outputs, concatenated."""
        sizes = {len(v) for v in inputs.values()}
        micro = self._micro
        if len(sizes) != 1 or next(iter(sizes)) % micro:
            raise ValueError(f"inputs of {sorted(sizes)} rows: predict takes one batch size, a multiple of {micro}")
        batch = next(iter(sizes))
        pending = []
        for i in range(batch // micro):
            ref: Any = {name: np.asarray(v)[i * micro:(i + 1) * micro] for name, v in inputs.items()}
            for actor in self.replicas[replica]:
                ref = actor.infer.remote(ref)
            pending.append(ref)
        parts = self._ray.get(pending)
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def variables(self, replica: int = 0) -> list[dict[str, np.ndarray]]:
        return self._ray.get([a.variables.remote() for a in self.replicas[replica]])

    def stats(self, replica: int = 0) -> list[dict[str, Any]]:
        return self._ray.get([a.stats.remote() for a in self.replicas[replica]])

    def reset_stats(self) -> None:
        self._ray.get([a.reset_stats.remote() for a in self._all()])

    def close(self) -> None:
        for a in self._all():
            self._ray.kill(a)
        self.replicas, self.actors = [], []

    def __enter__(self) -> "PipelineTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Pipeline-parallel training: a model's stages (converter.autodiff.stages) on Ray actors, one per
stage, fed micro-batches in a GPipe or 1F1B order.

Each actor (``StageWorker``) holds one stage file in an edge.Interpreter: its variables and
optimizer slots live there and nowhere else. Per micro-batch it keeps only the tensors it received
(the stage's backward signature recomputes the forward from them), so a stage's activation memory
is its received tensors times the micro-batches in flight. A batch of M micro-batches:

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
Not done yet: combining with data parallelism (R replicas of the pipeline).
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

        self._interpreter = edge.Interpreter(model_content=stage, num_threads=threads)
        signatures = self._interpreter.get_signature_list()
        runner = self._interpreter.get_signature_runner
        self._forward = runner("forward") if "forward" in signatures else None
        self._backward = runner("backward")
        self._update = runner("update") if "update" in signatures else None
        self._update_inputs = list(signatures["update"]["inputs"]) if self._update else []
        backward_inputs = signatures["backward"]["inputs"]
        self._inputs = [k for k in backward_inputs if not k.startswith("grad_in/") and k != "labels"]
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
            loaded = checkpoints.load(checkpoint)
            specs = {name: (tuple(v.shape), v.dtype) for name, v in self.variables().items()}
            checkpoints.check_matches(checkpoint, loaded, specs)
            for name, value in loaded.variables.items():
                self._interpreter.set_tensor(self._variables[name], value)
            self.steps = int(loaded.info["steps"])

    def forward(self, micro: int, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        feeds = {k: np.asarray(inputs[k]) for k in self._inputs}
        self._kept[micro] = feeds
        kept = sum(v.nbytes for f in self._kept.values() for v in f.values())
        self.peak_kept_bytes = max(self.peak_kept_bytes, kept)
        # the last stage sends nothing forward: its backward computes the forward and the loss
        outputs = dict(self._forward(**feeds)) if self._forward else {}
        if self._delay[0]:
            time.sleep(self._delay[0])
        self.busy_s += time.perf_counter() - start
        return outputs

    def backward(self, micro: int, upstream: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
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

    def update(self) -> int:
        """Applies the mean of the summed gradients; returns the stage's step count."""
        if self._kept:
            raise RuntimeError(f"update with micro-batches {sorted(self._kept)} still waiting for backward")
        if self._update and self._count:
            self._update(**{k: self._sums[k] / self._count for k in self._update_inputs})
        self._sums.clear()
        self._count = 0
        self.steps += 1
        if self._checkpoint:
            from edge import checkpoint as checkpoints

            checkpoints.save(self._checkpoint, self.variables(), info={"steps": self.steps})
        return self.steps

    def discard(self) -> int:
        """Drops what a batch left behind (kept inputs, gradient sums): before it runs again."""
        self._kept.clear()
        self._sums.clear()
        self._count = 0
        return self.steps

    def variables(self) -> dict[str, np.ndarray]:
        return {name: self._interpreter.get_tensor(index) for name, index in self._variables.items()}

    def stats(self) -> dict[str, Any]:
        return {"steps": self.steps, "busy_s": self.busy_s, "peak_kept_bytes": self.peak_kept_bytes}

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
    converted at the micro-batch size; a batch holds ``micro_batches`` of them along axis 0.
    """

    def __init__(self, stages: Sequence[bytes], *, micro_batches: int, schedule: str = "1f1b",
                 address: str | None = None, threads: int = 1, num_cpus: int | None = None,
                 delay_s: tuple[float, float] = (0.0, 0.0), checkpoint_dir: str | None = None,
                 max_restarts: int = 3, restart_timeout_s: float = 60.0):
        from cloudsplit.training.engine import ensure_ray

        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self._ray = ensure_ray(address, num_cpus)
        actor = self._ray.remote(StageWorker)
        restarts = max_restarts if checkpoint_dir else 0
        self.actors = []
        for k, stage in enumerate(stages):
            path = os.path.join(checkpoint_dir, f"stage-{k}.ckpt") if checkpoint_dir else None
            self.actors.append(actor.options(num_cpus=0, max_restarts=restarts).remote(stage, threads, delay_s, path))
        self.micro_batches = micro_batches
        self.schedule = schedule
        self.restart_timeout_s = restart_timeout_s
        self.recoveries = 0
        self.steps = min(self._ray.get([a.discard.remote() for a in self.actors]))

    def step(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        """One batch. With checkpoints, a stage that dies is restarted by Ray from its last
        checkpoint and the batch runs again; a stage whose update of this batch had already been
        saved does not apply it a second time."""
        from ray.exceptions import RayActorError

        while True:
            try:
                loss = self._step(inputs, labels)
                self.steps += 1
                return loss
            except (RayActorError, StageRestarted):
                self._recover()

    def _recover(self) -> None:
        deadline = time.monotonic() + self.restart_timeout_s
        while True:
            try:
                self._ray.get([a.discard.remote() for a in self.actors], timeout=5.0)
                break
            except Exception:  # the actor is still restarting (or gone for good: the deadline says so)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.recoveries += 1

    def _step(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
        k, m = len(self.actors), self.micro_batches
        batch = len(labels)
        if batch % m:
            raise ValueError(f"a batch of {batch} does not split into {m} equal micro-batches")
        size = batch // m
        micro_inputs = [{name: np.asarray(v)[i * size:(i + 1) * size] for name, v in inputs.items()} for i in range(m)]
        micro_labels = [np.asarray(labels)[i * size:(i + 1) * size] for i in range(m)]
        order = schedule(self.schedule, k, m)
        forward: list[dict[int, Any]] = [{} for _ in range(k)]
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
                    forward[s][i] = self.actors[s].forward.remote(i, source)
                else:
                    source = {"labels": micro_labels[i]} if s == k - 1 else backward[s + 1].get(i)
                    if source is None:
                        continue
                    backward[s][i] = self.actors[s].backward.remote(i, source)
                position[s] += 1
                progressed = True
            if not progressed:
                raise RuntimeError(f"schedule {self.schedule} is stuck at {position}")  # a bug, not bad input
        losses = self._ray.get([backward[k - 1][i] for i in range(m)])
        done = self._ray.get([a.stats.remote() for a in self.actors])
        # a stage that already saved this batch's update (a re-run after a crash) only drops its sums
        self._ray.get([a.update.remote() if d["steps"] == self.steps else a.discard.remote()
                       for a, d in zip(self.actors, done)])
        return float(np.mean([out["loss"] for out in losses]))

    def variables(self) -> list[dict[str, np.ndarray]]:
        return self._ray.get([a.variables.remote() for a in self.actors])

    def stats(self) -> list[dict[str, Any]]:
        return self._ray.get([a.stats.remote() for a in self.actors])

    def reset_stats(self) -> None:
        self._ray.get([a.reset_stats.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []

    def __enter__(self) -> "PipelineTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

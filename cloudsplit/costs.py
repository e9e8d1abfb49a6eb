"""Per-op device times from the runtime's profiler, cached per model, and ModelCosts from them.

Times are the median over several runs of each op's own time (``Interpreter.profile()``'s
``last_ms`` after each run), so one preempted run does not move the figure. The cache key is the
model's sha256, the thread count and a caller-chosen ``variant`` (e.g. the device emulation in use);
an entry measured by another runtime version or kernel ISA is measured again.
Cache directory: ``cache_dir`` argument, else ``$EDGESPLIT_COST_CACHE``, else ~/.cache/edgesplit/costs.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import statistics
from typing import Mapping, Sequence

import numpy as np

import edge
from edge.measure import invoke_with, timed_runs
from cloudsplit.partition import ModelCosts, model_costs


def default_cache_dir() -> pathlib.Path:
    configured = os.environ.get("EDGESPLIT_COST_CACHE")
    if configured:
        return pathlib.Path(configured)
    return pathlib.Path.home() / ".cache" / "edgesplit" / "costs"


def _runtime_id() -> dict[str, str]:
    return {"runtime": edge.runtime_version(), "isa": edge.runtime_isa()}


def default_inputs(interpreter: edge.Interpreter, seed: int = 0) -> dict[int, np.ndarray]:
    """Inputs that every model accepts: zeros for integer inputs (valid token ids and indices) and
    seeded normal noise for float inputs (op times do not depend on the values here, but zeros could
    take a kernel's fast path somewhere)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for detail in interpreter.get_input_details():
        shape, dtype = tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"])
        if dtype.kind == "f":
            feeds[detail["index"]] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[detail["index"]] = np.zeros(shape, dtype)
    return feeds


def measure_op_ms(model_content: bytes, num_threads: int = 1, runs: int = 5, warmup: int = 1,
                  inputs: Mapping[int, np.ndarray] | None = None) -> list[float]:
    """Each op's median ms over ``runs`` invokes (after ``warmup`` unrecorded ones), scaled so the
    ops add up to the median time of a whole run (edge.measure.timed_runs: inputs set, invoke).

    The scaling matters on a throttled device: under a CPU quota the scheduler's stalls land in
    whichever op is running when the quota runs out, a different one each run, so every op's
    median misses them and the medians add up to a fraction of the real time. Spreading the whole
    run's extra time over the ops in proportion to their own time gives each op its expected share.
    Inputs are set before every invoke: the arena may reuse an input's bytes once its last reader
    has run, so a second invoke without them would read whatever was written there.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    with edge.Interpreter(model_content=model_content, num_threads=num_threads, profiling=True) as interpreter:
        interpreter.allocate_tensors()
        feeds = list((dict(inputs) if inputs is not None else default_inputs(interpreter)).items())
        samples: list[list[float]] = []

        def run() -> None:
            interpreter.reset_profile()
            invoke_with(interpreter, feeds, [])

        whole = timed_runs(run, warmup, runs,
                           after=lambda: samples.append([entry["last_ms"] for entry in interpreter.profile()]))
    medians = [statistics.median(column) for column in zip(*samples)]
    total = sum(medians)
    scale = float(np.median(whole)) / total if total > 0 else 1.0
    return [ms * scale for ms in medians]


def cached_op_ms(model_content: bytes, num_threads: int = 1, *, variant: str = "", runs: int = 5,
                 cache_dir: str | os.PathLike | None = None, refresh: bool = False) -> list[float]:
    """``measure_op_ms`` through the cache (see the module docstring for the key)."""
    digest = hashlib.sha256(model_content).hexdigest()
    directory = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    suffix = f"-{variant}" if variant else ""
    path = directory / f"{digest}-t{num_threads}{suffix}.json"
    runtime = _runtime_id()
    if not refresh and path.exists():
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            entry = None
        if entry and entry.get("runtime") == runtime and entry.get("sha256") == digest:
            return [float(ms) for ms in entry["op_ms"]]
    op_ms = measure_op_ms(model_content, num_threads=num_threads, runs=runs)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(json.dumps({"sha256": digest, "num_threads": num_threads, "variant": variant,
                                     "runtime": runtime, "runs": runs, "op_ms": op_ms}))
    os.replace(temporary, path)
    return op_ms


def costs_from_interpreter(interpreter: edge.Interpreter, device_ms: Sequence[float],
                           server_ms: Sequence[float]) -> ModelCosts:
    """ModelCosts for ``interpreter``'s model (allocated): tensor sizes from its tensor details,
    constants and variables marked as never sent, the arena's shared scratch as fixed device memory."""
    memory = interpreter.memory_info()
    return model_costs(device_ms, server_ms, interpreter.op_details(), interpreter.get_tensor_details(),
                       graph_inputs=[d["index"] for d in interpreter.get_input_details()],
                       graph_outputs=[d["index"] for d in interpreter.get_output_details()],
                       fixed_device_bytes=memory["scratch_bytes"])

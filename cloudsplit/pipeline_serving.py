"""Pipeline serving: the server side of split inference run by K stage workers (Ray actors), for a
model whose weights and activations do not fit one server's memory.

``cloudsplit serve --stages K [--memory-limit BYTES]`` hosts every model this way. The front end
(the gRPC service) holds the model file to hash, plan and validate requests with, but never
allocates it; stage k's actor holds a model file of only its ops (``stage_models``: their weights,
their activations, written through the converter's reader and writer) and allocates that. A
request's server ops run stage by stage: each stage runs the requested ops in its range and
returns the tensors later stages or the reply need. The calls are chained by Ray object references,
so the driver does not wait between stages and concurrent requests (or the server's stacked
batches) flow through the stages as a pipeline: stage 0 works on one request while stage 1 works
on the one before.

Stage boundaries come from ``plan_bounds``: cloudsplit.partition.solve_stages for inference, with
each op's cost taken from the file's FLOP count (a static estimate: timing ops would need the whole
model allocated in one place, which is what this mode avoids) and the memory limit checked against
each stage's weights and activations. After start, each actor reports its real footprint (the
runtime's accounting: model bytes, arena, scratch) and a stage over the limit stops the start.
"""
from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence

import numpy as np

# Per-op cost floor for ops the file gives no FLOPs (reshapes, copies): their bytes moved count.
_MS_PER_GFLOP = 1.0


def plan_bounds(data: bytes, stages: int, memory_limit: int | None = None) -> list[int]:
    """Op positions [0, b1, ..., n]: stage s holds ops [bounds[s], bounds[s + 1]), balanced by
    FLOPs under ``memory_limit`` bytes per worker. ValueError (naming the need) when no K-stage
    partition fits."""
    import edge
    from cloudsplit import partition

    with edge.Interpreter(model_content=data) as interpreter:  # metadata only: never allocated
        ops = interpreter.op_details()
        details = interpreter.get_tensor_details()
        inputs = [d["index"] for d in interpreter.get_input_details()]
        outputs = [d["index"] for d in interpreter.get_output_details()]
    if not 1 <= stages <= len(ops):
        raise ValueError(f"--stages must be between 1 and the model's {len(ops)} ops, got {stages}")
    # ms per op: FLOPs at a nominal rate, and at least the bytes it reads and writes at 10 GB/s
    ms = []
    for op in ops:
        moved = sum(int(details[t]["nbytes"]) for t in (*op["inputs"], *op["outputs"]) if t >= 0)
        ms.append(max(op["flops"] / 1e9 * _MS_PER_GFLOP, moved / 1e7))
    costs = partition.model_costs(ms, ms, ops, details, graph_inputs=inputs, graph_outputs=outputs)
    plan = partition.solve_stages(costs, stages, link_bps=10e9, memory_limit=memory_limit)
    return [stage.ops[0] for stage in plan.stages] + [len(ops)]


def stage_models(data: bytes, bounds: Sequence[int]) -> list[tuple[bytes, tuple[str, ...]]]:
    """Each stage's .edge bytes and input names: its ops, the constants they read, as inputs every activation
    it reads from an earlier stage (or the graph), as outputs every one it computes that a later
    stage reads or the graph returns. Tensor names are the model's; the batch axis stays dynamic
    where the model's is."""
    from converter.reader import read_model
    from converter.writer import write_model

    graph = read_model(bytes(data))
    nodes = list(graph.nodes)
    if bounds[0] != 0 or bounds[-1] != len(nodes) or list(bounds) != sorted(set(bounds)):
        raise ValueError(f"stage bounds {list(bounds)} do not cover the model's {len(nodes)} ops in order")
    fixed = set(graph.constants) | set(graph.variables)
    dynamic_batch = bool(graph.inputs) and all(0 in graph.dynamic_dims.get(t, ()) for t in graph.inputs)
    files = []
    for first, end in zip(bounds, bounds[1:]):
        own = nodes[first:end]
        produced = {o for n in own for o in n.outputs if o}
        read = [i for n in own for i in n.inputs if i]
        later = {i for n in nodes[end:] for i in n.inputs if i} | set(graph.outputs)
        stage_inputs = tuple(dict.fromkeys(t for t in read if t not in produced and t not in fixed))
        stage_outputs = tuple(dict.fromkeys(o for n in own for o in n.outputs if o and o in later))
        used = set(read) | produced
        stage = graph.replace(
            nodes=tuple(own), inputs=stage_inputs, outputs=stage_outputs,
            tensors={t: v for t, v in graph.tensors.items() if t in used},
            constants={t: v for t, v in graph.constants.items() if t in used},
            variables=frozenset(graph.variables & used),
            quantization={t: q for t, q in graph.quantization.items() if t in used},
            signatures={}, name=f"{graph.name}/stage{len(files)}",
            dynamic_dims={t: (0,) for t in stage_inputs if dynamic_batch and graph.tensors[t].shape})
        files.append((write_model(stage), stage_inputs))
    return files


class StageServer:
    """One stage's worker: its model file on edge.Interpreters, one allocated per input-shape
    configuration (a handful kept, least recently used dropped)."""

    def __init__(self, stage: bytes, first_op: int, threads: int = 1, max_configs: int = 8):
        import edge

        self._data = stage
        self._threads = threads
        self._first = first_op
        self._max_configs = max_configs
        self._interpreters: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        meta = edge.Interpreter(model_content=stage)
        details = meta.get_tensor_details()
        self._index = {d["name"]: d["index"] for d in details}
        self._names = [d["name"] for d in details]
        self._inputs = [d["name"] for d in meta.get_input_details()]
        self._default = {d["name"]: tuple(int(v) for v in d["shape"]) for d in meta.get_input_details()}
        self._ops = meta.op_details()
        self._activations = {d["name"] for d in details if d["kind"] == "activation"}
        self._producer = {t: op["index"] for op in self._ops for t in op["outputs"] if t >= 0}
        self._reads = [{self._names[t] for t in op["inputs"] if t >= 0} for op in self._ops]
        meta.close()
        self._interpreter({})  # allocates now: a stage that cannot run fails at start, not on a request

    def _interpreter(self, shapes: Mapping[str, Sequence[int]]):
        import edge

        config = tuple(tuple(int(v) for v in shapes.get(name, self._default[name])) for name in self._inputs)
        interpreter = self._interpreters.get(config)
        if interpreter is None:
            interpreter = edge.Interpreter(model_content=self._data, num_threads=self._threads)
            for name, shape in zip(self._inputs, config):
                if shape != self._default[name]:
                    interpreter.resize_tensor_input(self._index[name], list(shape))
            interpreter.allocate_tensors()
            self._interpreters[config] = interpreter
            while len(self._interpreters) > self._max_configs:
                self._interpreters.popitem(last=False)[1].close()
        self._interpreters.move_to_end(config)
        return interpreter

    def shapes(self, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape (by name) when the stage's inputs have ``input_shapes``."""
        interpreter = self._interpreter({k: v for k, v in input_shapes.items() if k in self._index})
        return {d["name"]: tuple(int(v) for v in d["shape"]) for d in interpreter.get_tensor_details()}

    def run(self, ops: Sequence[int], shapes: Mapping[str, Sequence[int]], uploads: Mapping[str, np.ndarray],
            wanted: Sequence[str], *earlier: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the model's ops ``ops`` (model op indices, all in this stage) on the tensors the
        client uploaded and earlier stages returned; returns the ``wanted`` tensors. ``shapes``:
        the stage's input shapes for this request (the interpreter allocated for them runs it)."""
        from cloudsplit import execution

        local = [op - self._first for op in ops]
        if any(not 0 <= op < len(self._ops) for op in local):
            raise ValueError(f"ops {list(ops)} are not all in this stage "
                             f"({self._first}..{self._first + len(self._ops) - 1})")
        available: dict[str, np.ndarray] = dict(uploads)
        for result in earlier:
            available.update(result)
        run = set(local)
        produced = {self._names[t] for op in local for t in self._ops[op]["outputs"] if t >= 0}
        needed = ({name for op in local for name in self._reads[op]} - produced) & self._activations
        missing = sorted(needed - set(available))
        if missing:
            raise ValueError(f"ops {list(ops)} read {missing}, which neither the request nor an earlier stage gave")
        provided = {self._index[name]: np.asarray(available[name]) for name in needed}
        interpreter = self._interpreter(shapes)
        captured = execution.run_capturing(interpreter, sorted(run), [self._index[n] for n in wanted],
                                           self._producer, provided)
        return {self._names[t]: np.array(array) for t, array in captured.items()}

    def profile(self, runs: int) -> list[float]:
        """Median ms per op of the stage, measured on its own inputs."""
        from cloudsplit.costs import measure_op_ms

        return measure_op_ms(self._data, num_threads=self._threads, runs=runs)

    def memory_bytes(self) -> int:
        """What the stage holds as the runtime accounts it: its model file, and per allocated
        configuration the arena, scratch and persistent state."""
        total = len(self._data)
        for interpreter in self._interpreters.values():
            info = interpreter.memory_info()
            total += info["arena_bytes"] + info["scratch_bytes"] + info["persistent_bytes"]
        return total


class PipelineModel:
    """The stage actors of one model and the driver that chains a request through them.

    ``names``: the model's tensor names by index (the split protocol speaks indices), ``ops``: its
    op details (inputs and outputs by index)."""

    def __init__(self, data: bytes, names: Sequence[str], ops: Sequence[Mapping[str, Any]], *, stages: int,
                 memory_limit: int | None = None, threads: int = 1, address: str | None = None):
        from cloudsplit.training.engine import ensure_ray

        self.bounds = plan_bounds(data, stages, memory_limit)
        files = stage_models(data, self.bounds)
        self._stage_inputs = [inputs for _, inputs in files]
        self._ray = ensure_ray(address)
        actor = self._ray.remote(StageServer)
        self.actors = [actor.options(num_cpus=0).remote(f, first, threads) for (f, _), first in zip(files, self.bounds)]
        self._names = list(names)
        self._index = {name: t for t, name in enumerate(self._names)}
        self._stage_of = [s for s in range(len(files)) for _ in range(self.bounds[s], self.bounds[s + 1])]
        self._reads = [[t for t in op["inputs"] if t >= 0] for op in ops]
        self._writes = [[t for t in op["outputs"] if t >= 0] for op in ops]
        try:
            self.memory = self._ray.get([a.memory_bytes.remote() for a in self.actors])
        except Exception:
            self.close()
            raise
        if memory_limit is not None and max(self.memory) > memory_limit:
            over = ", ".join(f"stage {s} holds {b} bytes" for s, b in enumerate(self.memory) if b > memory_limit)
            self.close()
            raise MemoryError(f"stages over the memory limit of {memory_limit} bytes per worker: {over}; "
                              "serve with more --stages")

    def shapes(self, graph_input_shapes: Mapping[int, Sequence[int]]) -> dict[int, tuple[int, ...]]:
        """Every activation's shape (by tensor index) for these graph-input shapes, stage by stage."""
        known = {self._names[t]: tuple(shape) for t, shape in graph_input_shapes.items()}
        for actor in self.actors:
            known.update(self._ray.get(actor.shapes.remote(known)))
        return {self._index[name]: shape for name, shape in known.items() if name in self._index}

    def run(self, shapes: Sequence[Sequence[int]], ops: Sequence[int], uploads: Mapping[int, np.ndarray],
            outputs: Sequence[int]) -> list[tuple[int, np.ndarray]]:
        """Runs ``ops`` (model op indices) from ``uploads`` and returns ``outputs``, by index.
        ``shapes``: every tensor's shape for this request's input configuration (``shapes()``)."""
        ops = sorted(ops)
        by_stage: dict[int, list[int]] = collections.defaultdict(list)
        for op in ops:
            by_stage[self._stage_of[op]].append(op)
        wanted_later = set(outputs)
        wanted: dict[int, list[int]] = {}
        for s in sorted(by_stage, reverse=True):   # what each stage must hand on: read later or returned
            written = {t for op in by_stage[s] for t in self._writes[op]}
            wanted[s] = sorted(written & wanted_later)
            wanted_later |= {t for op in by_stage[s] for t in self._reads[op]}
        refs = []
        for s in sorted(by_stage):
            reads = {t for op in by_stage[s] for t in self._reads[op]}
            mine = {self._names[t]: array for t, array in uploads.items() if t in reads}
            stage_shapes = {name: tuple(shapes[self._index[name]]) for name in self._stage_inputs[s]}
            refs.append(self.actors[s].run.remote(by_stage[s], stage_shapes, mine,
                                                  [self._names[t] for t in wanted[s]], *refs))
        results: dict[str, np.ndarray] = {}
        for result in self._ray.get(refs):
            results.update(result)
        return [(t, results[self._names[t]]) for t in outputs]

    def profile(self, runs: int) -> list[float]:
        """Median ms per model op: each stage's ops measured by its actor."""
        return [ms for part in self._ray.get([a.profile.remote(runs) for a in self.actors]) for ms in part]

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []

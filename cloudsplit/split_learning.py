"""Split learning: the device trains the first layers of a model, the datacenter the rest, and the
device's inputs never leave it.

``SplitTrainer(model_path, server=..., cut="auto" | tensor name(s))`` (re-exported by
``cloudsplit.client``) registers the model (the same .edge file split inference runs) with a
``SplitLearning`` server and opens a session at a cut; the server builds the stages with
``converter.autodiff.stages`` and returns the ones the device runs. Then per ``step(inputs, labels)``:

    device   head.forward(inputs) -> cut activations  --codec-->  server (with the labels)
    server   its stage's forward, the loss, backward, its own optimizer step
    server   grad/<cut tensor>                        --codec-->  device
    device   head.backward(inputs, grad) and head.update

U-shaped (``u_shaped=True``): the labels stay on the device. A second cut (``tail_cut``, by default
the input of the model's last op) gives the last layers and the loss back to the device: the
server's middle stage answers ``Forward`` with the second cut's activations and ``Backward`` (the
gradient there) with the gradient at the first cut.

Both sides drive their stages with ``cloudsplit.pipeline.StageWorker`` (forward keeps what backward
reads; backward; update with the summed gradients), so one step here is one step of the whole
batch, the same arithmetic as single-process training of the whole model. Activations and
gradients travel through the cut-tensor codecs (``compression``, ``gradient_compression``; fp16
by default); labels and variables are sent raw.

``cut="auto"`` picks the cut with ``plan_training_cut``: the partitioner's cost model
(``cloudsplit.partition``: ModelCosts, cut_tensors, Network) with the backward pass in it and both
directions' bytes. One step at a cut before op k costs, sequentially,

    device  sum(device_ms[:k]) x (1 + backward_factor (+ 1 with recomputation))
  + upload  wire bytes of the cut activations (+ the labels) over the uplink
  + server  sum(server_ms[k:]) x (1 + backward_factor)        (its backward runs its forward)
  + download the cut gradients over the downlink
  + one round trip (two when U-shaped, whose device tail and second-cut bytes are added likewise)

evaluated at every cut position whose crossing tensors exclude the model's inputs (the device
never sends them; position 0, all on the server, would) and the cheapest taken: exact for chains,
contiguous-in-op-order for other DAGs (as ``partition.solve_stages``). Per-op forward times: the
device's from its own profiler (``cloudsplit.costs.cached_op_ms``), the server's from
``RegisterModel``; measured device and server step times scale them (``device_load``,
``server_load``). The link (round trip, uplink, downlink) is measured with ``Echo`` probes at the
start, every ``probe_interval_s`` and whenever two steps in a row leave their transfer-time
prediction by more than ``replan_threshold``; when an estimate moved past ``replan_threshold`` since
the plan, it re-plans, and when the best cut beats the current one by ``min_gain`` of a step (moving
costs a round trip and the stages' bytes; close calls would flip with noise), ``Replan`` moves it: the device hands in its variables
(weights and optimizer slots), the server rebuilds every stage from the session's current state and
returns the device's new stages, so training goes on exactly where it was.

The server side is ``add_split_learning_servicer(server)`` on any ``grpc.Server``; bad requests
end with INVALID_ARGUMENT (a message naming the tensor, shape, dtype or byte count),
FAILED_PRECONDITION (a replayed or out-of-order step, a call the session's kind does not take),
NOT_FOUND (an unknown session or model) or RESOURCE_EXHAUSTED (too many sessions or models); a
refused step changes nothing.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import grpc
import numpy as np

from cloudsplit import compression as codecs
from cloudsplit import partition, transfer
from cloudsplit.link_estimate import estimate_moved
from cloudsplit.pipeline import StageWorker
from cloudsplit.protos import MiB
from cloudsplit.protos import split_learning_pb2 as pb
from cloudsplit.protos import split_learning_pb2_grpc as pb_grpc
from cloudsplit.security import ClientTLS, bearer_metadata, make_channel

log = logging.getLogger("cloudsplit.split_learning")

DEFAULT_MAX_MESSAGE_MB = 32
MAX_ECHO_BYTES = 4 * MiB
# Link probes are sized to take about this long at the current estimate, within these bounds.
PROBE_SECONDS = 0.1
PROBE_BYTES = (16 * 1024, 512 * 1024)
# A step's transfers must miss their prediction by this much as well as by the relative threshold
# before the link is probed again: on a fast link a few ms are scheduling noise, not the link.
REPLAN_FLOOR_MS = 5.0
# Loads are learned only from parts predicted to take at least this long: below it a step's time is
# mostly the per-call cost of the signature runners and the codecs, which does not scale with the
# ops, and a ratio to it would swing with the cut (a tiny device part reads as a "slow" device).
MIN_LOAD_SAMPLE_MS = 2.0


# ---- tensors on the wire -------------------------------------------------------------------------

class RequestError(Exception):
    """A request refused with ``code`` and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: np.dtype


def encode_named(name: str, array: np.ndarray, mode: str) -> pb.NamedTensor:
    header, data = transfer.encode_tensor(0, np.asarray(array), mode)
    return pb.NamedTensor(name=name, header=header, data=data)


def decode_named(messages: Sequence[pb.NamedTensor], expected: Mapping[str, TensorSpec],
                 what: str) -> dict[str, np.ndarray]:
    """The arrays in ``messages``, which must be exactly the tensors ``expected`` names with their
    shapes and dtypes; RequestError(INVALID_ARGUMENT) naming the first thing that is not."""
    names = [m.name for m in messages]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in expected if n not in names]
    unknown = [n for n in names if n not in expected]
    if duplicated or missing or unknown:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{what}: expected tensors {list(expected)}; missing {missing}, unknown "
                           f"{unknown[:8]}, sent twice {duplicated}")
    return {m.name: _decode_one(m, expected[m.name], what) for m in messages}


def _decode_one(message: pb.NamedTensor, spec: TensorSpec, what: str) -> np.ndarray:
    h, where = message.header, f"{what}: tensor {message.name!r}"
    bad = lambda text: RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {text}")  # noqa: E731
    if h.dtype not in transfer.NUMPY_BY_DTYPE:
        raise bad(f"{transfer.dtype_name(h.dtype)}")
    dtype = transfer.NUMPY_BY_DTYPE[h.dtype]
    if dtype != spec.dtype:
        raise bad(f"dtype {dtype.name}, the stage takes {spec.dtype.name}")
    shape = tuple(int(d) for d in h.shape)
    if shape != spec.shape:
        raise bad(f"shape {list(shape)}, the stage takes {list(spec.shape)}")
    if h.compression not in transfer.MODE_BY_COMPRESSION:
        raise bad(f"unknown compression code {h.compression}")
    mode = transfer.MODE_BY_COMPRESSION[h.compression]
    if mode != "none" and dtype != np.float32:
        raise bad(f"{mode} compression applies to float32 tensors only, not {dtype.name}")
    count = int(np.prod(shape, dtype=np.int64))
    length = codecs.data_bytes(mode, dtype, count)
    if h.byte_length != length or len(message.data) != length:
        raise bad(f"{len(message.data)} bytes of data (header: {h.byte_length}); {list(shape)} {dtype.name} "
                  f"under {mode} is {length} bytes")
    if mode == "int8-per-tensor" and not (math.isfinite(h.scale) and h.scale > 0 and -128 <= h.zero_point <= 127):
        raise bad(f"int8 scale {h.scale} / zero point {h.zero_point} out of range")
    if mode == "int8":
        channels = shape[-1] if shape else 0
        scales = np.asarray(h.channel_scales, np.float64)
        if (len(scales) != channels or len(h.channel_zero_points) != channels or not np.all(np.isfinite(scales))
                or not np.all(scales > 0) or any(not -128 <= z <= 127 for z in h.channel_zero_points)):
            raise bad(f"per-channel int8 needs {channels} positive scales and zero points in [-128, 127]")
    return transfer.decode_tensor(h, message.data)


def _spec(graph, name: str) -> TensorSpec:
    tensor = graph.tensors[name]
    return TensorSpec(tuple(int(d) for d in tensor.shape), np.dtype(tensor.dtype))


# ---- the cut's cost ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CutCost:
    """The predicted cost of one training step with the device running ops [0, position) (and,
    U-shaped, the tail from ``tail_position``)."""

    position: int
    cut: tuple[str, ...]
    device_ms: float
    upload_ms: float
    server_ms: float
    download_ms: float
    rtt_ms: float
    total_ms: float
    upload_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class TrainingPlan:
    chosen: CutCost
    candidates: tuple[CutCost, ...]
    network: partition.Network
    tail_cut: tuple[str, ...] = ()

    @property
    def cut(self) -> tuple[str, ...]:
        return self.chosen.cut


def _transfer_ms(nbytes: int, bps: float) -> float:
    return nbytes * 8.0 / bps * 1e3 if nbytes else 0.0


def plan_training_cut(costs: partition.ModelCosts, tensor_names: Mapping[int, str], network: partition.Network, *,
                      wire_up: Callable[[int], int], wire_down: Callable[[int], int], labels_bytes: int,
                      backward_factor: float = 2.0, recompute: bool = False, tail_position: int | None = None,
                      device_load: float = 1.0, server_load: float = 1.0,
                      positions: Sequence[int] | None = None) -> TrainingPlan:
    """The cheapest cut for one training step (the model in the module docstring).

    ``wire_up(t)`` / ``wire_down(t)``: bytes of tensor ``t`` (an activation, or its gradient, which
    has its shape) on the uplink / downlink under the codecs. ``tail_position``: U-shaped, the
    device also runs ops [tail_position, n) and the loss, and the labels stay. ``positions``: the
    cut positions to consider (default: every one that keeps the inputs on the device)."""
    if not (network.uplink_bps > 0 and network.downlink_bps > 0 and network.rtt_s >= 0):
        raise ValueError(f"network: bandwidths must be > 0 and the round trip >= 0, got {network}")
    if backward_factor < 0:
        raise ValueError(f"backward_factor must be >= 0, got {backward_factor}")
    graph = partition.OpGraph(costs)
    n = graph.n
    end = n if tail_position is None else tail_position
    if not 1 < end <= n:
        raise ValueError(f"tail_position must leave the server at least one op of the {n}, got {tail_position}")
    head_factor = 1.0 + backward_factor + (1.0 if recompute else 0.0)
    last_factor = 1.0 + backward_factor
    middle_factor = last_factor if tail_position is None else head_factor
    inputs = set(costs.graph_inputs)
    tail_cut = partition.cut_tensors(costs, end, graph) if tail_position is not None else []
    if inputs & set(tail_cut):
        raise ValueError("the second cut carries a model input; move tail_position")
    tail_ms = sum(op.device_ms for op in costs.ops[end:]) * last_factor * device_load
    tail_up = sum(wire_up(t) for t in tail_cut)      # the gradient at the second cut
    tail_down = sum(wire_down(t) for t in tail_cut)  # the second cut's activations
    candidates = []
    for k in (positions if positions is not None else range(1, end)):
        if not 1 <= k < end:
            raise ValueError(f"cut position {k} is outside 1..{end - 1}")
        cut = partition.cut_tensors(costs, k, graph)
        if inputs & set(cut):
            continue  # the server would receive the device's inputs
        device_ms = sum(op.device_ms for op in costs.ops[:k]) * head_factor * device_load + tail_ms
        server_ms = sum(op.server_ms for op in costs.ops[k:end]) * middle_factor * server_load
        upload = sum(wire_up(t) for t in cut) + (labels_bytes if tail_position is None else tail_up)
        download = sum(wire_down(t) for t in cut) + (tail_down if tail_position is not None else 0)
        upload_ms, download_ms = _transfer_ms(upload, network.uplink_bps), _transfer_ms(download, network.downlink_bps)
        rtt_ms = network.rtt_s * 1e3 * (1 if tail_position is None else 2)
        candidates.append(CutCost(position=k, cut=tuple(tensor_names[t] for t in cut), device_ms=device_ms,
                                  upload_ms=upload_ms, server_ms=server_ms, download_ms=download_ms, rtt_ms=rtt_ms,
                                  total_ms=device_ms + upload_ms + server_ms + download_ms + rtt_ms,
                                  upload_bytes=upload, download_bytes=download))
    if not candidates:
        raise ValueError("no cut keeps the model's inputs on the device")
    chosen = min(candidates, key=lambda c: (c.total_ms, c.upload_bytes + c.download_bytes))
    return TrainingPlan(chosen=chosen, candidates=tuple(candidates), network=network,
                        tail_cut=tuple(tensor_names[t] for t in tail_cut))


# ---- the server ----------------------------------------------------------------------------------

@dataclass
class _Model:
    sha256: str
    graph: Any              # the IR graph after the training-safe passes
    op_ms: list[float]


@dataclass
class _Layout:
    """Where a session's model is cut, the server's stage and what its calls must carry."""

    worker: StageWorker
    cuts: list[tuple[str, ...]]
    inputs: dict[str, TensorSpec]                # the first cut's tensors
    labels: TensorSpec | None                    # labels on the server
    gradients_in: dict[str, TensorSpec]          # U-shaped: grad/<second cut tensor>
    device_variables: dict[str, TensorSpec]      # the variables of the device's stages
    device_files: list[bytes]

    @property
    def u_shaped(self) -> bool:
        return len(self.cuts) == 2


class _Session:
    """One device's server stage, its step counter and its specs. Callers hold ``lock``."""

    def __init__(self, session_id: str, model: _Model, config, gradient_mode: str, threads: int):
        self.id = session_id
        self.model = model
        self.config = config
        self.gradient_mode = gradient_mode
        self.threads = threads
        self.lock = threading.Lock()
        self.next_step = 1
        self.pending: int | None = None   # U-shaped: the step whose Forward awaits its Backward
        self.layout: _Layout | None = None
        self.last_used = time.monotonic()

    @property
    def worker(self) -> StageWorker:
        return self.layout.worker

    def build(self, cuts: Sequence[Sequence[str]], recompute: bool, state: Mapping[str, np.ndarray]) -> _Layout:
        """The stages for ``cuts`` holding the variables in ``state`` (by name; the rest as
        converted), the server's loaded. Raises RequestError on a bad cut; changes nothing."""
        from converter.autodiff.stages import make_stages
        from converter.errors import ConversionError
        from converter.writer import write_model

        graph = self.model.graph
        if len(cuts) not in (1, 2) or any(not cut for cut in cuts):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"a session takes one cut (labels on the server) or two (U-shaped), each naming "
                               f"tensors; got {[list(c) for c in cuts]}")
        sent = sorted(set(cuts[0]) & set(graph.inputs))
        if sent:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"the cut carries the model input(s) {sent}: a split-learning device never sends "
                               f"its inputs; cut after the first op")
        try:
            stages = make_stages(graph, [list(c) for c in cuts], self.config, recompute=recompute)
            stages = [_with_state(stage, state) for stage in stages]
            files = [write_model(stage) for stage in stages]
        except (ConversionError, ValueError) as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot cut the model there: {error}") from None
        server = stages[1]
        u_shaped = len(cuts) == 2
        device = stages[:1] + stages[2:]
        return _Layout(
            worker=StageWorker(files[1], threads=self.threads), cuts=[tuple(c) for c in cuts],
            inputs={t: _spec(server, t) for t in cuts[0]},
            labels=None if u_shaped else _spec(server, server.signatures["backward"].inputs["labels"]),
            gradients_in={f"grad/{t}": _spec(server, t) for t in cuts[1]} if u_shaped else {},
            device_variables={name: TensorSpec(tuple(np.shape(stage.constants[name])),
                                               np.dtype(stage.tensors[name].dtype))
                              for stage in device for name in stage.variables},
            device_files=[files[0]] + files[2:])

    def check_step(self, step_id: int, what: str) -> None:
        if step_id != self.next_step:
            kind = "replayed" if step_id < self.next_step else "out of order"
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"session {self.id}: {what} of step {step_id} is {kind}; the next step is "
                               f"{self.next_step}")


def _with_state(stage, state: Mapping[str, np.ndarray]):
    """``stage`` with the values in ``state`` for the variables it holds (weights and slots)."""
    constants = dict(stage.constants)
    for name in stage.variables:
        if name in state:
            value = np.asarray(state[name])
            if value.shape != np.shape(constants[name]):
                raise ValueError(f"variable {name!r}: state of shape {list(value.shape)}, the stage holds "
                                 f"{list(np.shape(constants[name]))}")
            constants[name] = value.astype(np.asarray(constants[name]).dtype)
    return stage.replace(constants=constants)


class SplitLearningServicer(pb_grpc.SplitLearningServicer):
    """The server's side of split learning (see the module docstring)."""

    def __init__(self, *, threads: int = 1, max_sessions: int = 64, max_models: int = 16,
                 cost_cache_dir: str | None = None):
        self.threads = threads
        self.max_sessions = max_sessions
        self.max_models = max_models
        self.cost_cache_dir = cost_cache_dir
        self._models: dict[str, _Model] = {}
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    # -- helpers
    def _call(self, context, body: Callable[[], Any]):
        try:
            return body()
        except RequestError as error:
            context.abort(error.code, error.message)

    def _session(self, session_id: str) -> _Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no split-learning session {session_id[:80]!r}")
        session.last_used = time.monotonic()
        return session

    # -- RPCs
    def RegisterModel(self, request, context):
        def body():
            from converter.autodiff.pipeline import TRAINABLE_PIPELINE
            from converter.passes import run_passes
            from converter.reader import read_model

            from cloudsplit.costs import cached_op_ms

            digest = hashlib.sha256(request.model).hexdigest()
            if digest != request.model_sha256:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"the model's {len(request.model)} bytes hash to {digest}, not the "
                                   f"{request.model_sha256[:80]!r} the request names")
            with self._lock:
                known = self._models.get(digest)
                if known is None and len(self._models) >= self.max_models:
                    raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"the server holds {self.max_models} training models already")
            if known is None:
                try:
                    graph, _ = run_passes(read_model(request.model), TRAINABLE_PIPELINE)
                    op_ms = cached_op_ms(request.model, num_threads=self.threads, cache_dir=self.cost_cache_dir)
                except Exception as error:  # the bytes are untrusted: any failure to read them is theirs
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"not a usable .edge model: {type(error).__name__}: {error}") from None
                known = _Model(digest, graph, op_ms)
                with self._lock:
                    self._models.setdefault(digest, known)
            return pb.TrainingModelInfo(model_sha256=digest, op_ms=known.op_ms)
        return self._call(context, body)

    def OpenSession(self, request, context):
        def body():
            from converter.autodiff import TrainingConfig
            from converter.errors import ConversionError

            with self._lock:
                model = self._models.get(request.model_sha256)
                if len(self._sessions) >= self.max_sessions:
                    raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"the server holds {self.max_sessions} split-learning sessions already")
            if model is None:
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"no model {request.model_sha256[:80]!r}: register it first")
            if request.gradient_compression not in transfer.MODE_BY_COMPRESSION:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"unknown gradient compression code {request.gradient_compression}")
            c = request.config
            try:
                if not (math.isfinite(c.lr) and c.lr > 0):
                    raise ValueError(f"lr must be a positive number, got {c.lr}")
                config = TrainingConfig(loss=c.loss or "cross_entropy", optimizer=c.optimizer or "sgd", lr=c.lr)
            except (ConversionError, ValueError, TypeError) as error:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"training config: {error}") from None
            session = _Session(uuid.uuid4().hex, model, config,
                               transfer.MODE_BY_COMPRESSION[request.gradient_compression], self.threads)
            with session.lock:
                session.layout = session.build([list(cut.tensors) for cut in request.cuts], request.recompute, {})
            with self._lock:
                self._sessions[session.id] = session
            return pb.OpenSessionReply(session_id=session.id, device_stages=session.layout.device_files,
                                       next_step=session.next_step)
        return self._call(context, body)

    def Step(self, request, context):
        def body():
            session = self._session(request.session_id)
            with session.lock:
                if session.layout.u_shaped:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id} is U-shaped (labels on the device): use Forward "
                                       "and Backward")
                session.check_step(request.step_id, "Step")
                cut = decode_named(request.tensors, session.layout.inputs, f"step {request.step_id}")
                if not request.HasField("labels"):
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"step {request.step_id}: no labels")
                labels = decode_named([request.labels], {"labels": session.layout.labels}, f"step {request.step_id}")
                started = time.perf_counter()
                out = self._run(session, request.step_id, lambda w: (
                    w.forward(request.step_id, cut), w.backward(request.step_id, labels))[1])
                server_ms = (time.perf_counter() - started) * 1e3
                session.next_step += 1
                return pb.StepReply(step_id=request.step_id, loss=float(out["loss"]), server_ms=server_ms,
                                    tensors=[encode_named(f"grad/{t}", out[f"grad/{t}"], session.gradient_mode)
                                             for t in session.layout.cuts[0]])
        return self._call(context, body)

    def Forward(self, request, context):
        def body():
            session = self._session(request.session_id)
            with session.lock:
                if not session.layout.u_shaped:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id} has the labels on the server: use Step")
                if session.pending is not None:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id}: step {session.pending} awaits its Backward")
                session.check_step(request.step_id, "Forward")
                cut = decode_named(request.tensors, session.layout.inputs, f"step {request.step_id}")
                started = time.perf_counter()
                out, _ = self._run(session, request.step_id, lambda w: w.forward(request.step_id, cut), update=False)
                session.pending = request.step_id
                return pb.StepReply(step_id=request.step_id, server_ms=(time.perf_counter() - started) * 1e3,
                                    tensors=[encode_named(t, out[t], session.gradient_mode) for t in session.layout.cuts[1]])
        return self._call(context, body)

    def Backward(self, request, context):
        def body():
            session = self._session(request.session_id)
            with session.lock:
                if not session.layout.u_shaped:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id} has the labels on the server: use Step")
                if session.pending != request.step_id:
                    waiting = f"step {session.pending}" if session.pending is not None else "no step"
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id}: Backward of step {request.step_id}, but {waiting} "
                                       "awaits its Backward")
                grads = decode_named(request.tensors, session.layout.gradients_in, f"step {request.step_id}")
                started = time.perf_counter()
                out = self._run(session, request.step_id, lambda w: w.backward(request.step_id, grads))
                session.pending = None
                session.next_step += 1
                return pb.StepReply(step_id=request.step_id, server_ms=(time.perf_counter() - started) * 1e3,
                                    tensors=[encode_named(f"grad/{t}", out[f"grad/{t}"], session.gradient_mode)
                                             for t in session.layout.cuts[0]])
        return self._call(context, body)

    @staticmethod
    def _run(session: _Session, step_id: int, work: Callable[[StageWorker], Any], update: bool = True):
        """``work`` on the session's stage, then its update; a runtime error drops what the step
        left (the stage is as before it) and refuses the request."""
        import edge

        try:
            result = work(session.worker)
            if update:
                session.worker.update()
            return result
        except (edge.errors.EdgeError, ValueError, KeyError) as error:
            session.worker.discard()
            session.pending = None
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"step {step_id}: the server's stage refused it: {error}") from None

    def Replan(self, request, context):
        def body():
            session = self._session(request.session_id)
            with session.lock:
                if session.pending is not None:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"session {session.id}: step {session.pending} awaits its Backward")
                layout = session.layout
                specs = {v.name: layout.device_variables.get(v.name) for v in request.device_variables}
                unknown = [name for name, spec in specs.items() if spec is None]
                if unknown:
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"replan: {unknown[:8]} are not variables of the device's stages")
                device = decode_named(request.device_variables, specs, "replan")
                if set(device) != set(layout.device_variables):
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"replan: the device's variables "
                                       f"{sorted(set(layout.device_variables) - set(device))[:8]} are missing")
                if len(request.cuts) != len(layout.cuts):
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                       "replan: a session keeps its kind (labels on the server or U-shaped)")
                new = session.build([list(c.tensors) for c in request.cuts], request.recompute,
                                    {**layout.worker.variables(), **device})
                new.worker.steps = layout.worker.steps
                session.layout = new
                return pb.OpenSessionReply(session_id=session.id, device_stages=new.device_files,
                                           next_step=session.next_step)
        return self._call(context, body)

    def GetServerVariables(self, request, context):
        def body():
            session = self._session(request.session_id)
            with session.lock:
                return pb.Variables(steps=session.next_step - 1,
                                    variables=[encode_named(name, value, "none")
                                               for name, value in session.worker.variables().items()])
        return self._call(context, body)

    def CloseSession(self, request, context):
        def body():
            session = self._session(request.session_id)
            with self._lock:
                self._sessions.pop(session.id, None)
            return pb.CloseSessionReply(steps=session.next_step - 1)
        return self._call(context, body)

    def Echo(self, request, context):
        def body():
            if not 0 <= request.reply_bytes <= MAX_ECHO_BYTES:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"reply_bytes must be in [0, {MAX_ECHO_BYTES}], got {request.reply_bytes}")
            return pb.EchoReply(payload=bytes(request.reply_bytes))
        return self._call(context, body)


def add_split_learning_servicer(server: grpc.Server, **options) -> SplitLearningServicer:
    """Adds the SplitLearning service to ``server`` (before it starts); ``options`` as for
    SplitLearningServicer. Returns the servicer."""
    servicer = SplitLearningServicer(**options)
    pb_grpc.add_SplitLearningServicer_to_server(servicer, server)
    return servicer


@dataclass
class ServerHandle:
    server: grpc.Server
    servicer: SplitLearningServicer
    address: str

    def stop(self, grace: float | None = 0) -> None:
        self.server.stop(grace)


def start_server(address: str = "127.0.0.1:0", *, max_workers: int = 4,
                 max_message_mb: float = DEFAULT_MAX_MESSAGE_MB, insecure: bool = False,
                 **options) -> ServerHandle:
    """A plaintext gRPC server hosting only SplitLearning (tests, benchmarks; ``cloudsplit serve``
    hosts it beside the other services, with TLS and a token). Port 0 picks a free one. Like
    ``cloudsplit serve``, it refuses a non-loopback address unless ``insecure`` says the network
    is private (a benchmark's own network namespace)."""
    from cloudsplit.security import check_listen_address

    check_listen_address(address.rsplit(":", 1)[0], None, insecure)
    message_bytes = int(max_message_mb * MiB)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_receive_message_length", message_bytes),
                                  ("grpc.max_send_message_length", message_bytes)])
    servicer = add_split_learning_servicer(server, **options)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    host = address.rsplit(":", 1)[0]
    return ServerHandle(server, servicer, f"{host}:{port}")


# ---- the device ----------------------------------------------------------------------------------

@dataclass
class LinkEstimate:
    uplink_bps: float
    downlink_bps: float
    rtt_ms: float

    def network(self) -> partition.Network:
        return partition.Network(self.uplink_bps, self.downlink_bps, self.rtt_ms / 1e3)


@dataclass
class StepRecord:
    """What one ``SplitTrainer.step`` cost (``SplitTrainer.last_step``)."""

    step: int
    loss: float
    cut: tuple[str, ...]
    device_ms: float = 0.0
    server_ms: float = 0.0
    transfer_ms: float = 0.0    # the calls' time past the server's compute: transfers, round trips, overhead
    total_ms: float = 0.0
    upload_bytes: int = 0       # serialized request messages
    download_bytes: int = 0     # serialized replies
    replanned: str | None = None


def _by_parameter(gradients: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{"grad/<p>": g} -> {p: g}."""
    return {name.removeprefix("grad/"): value for name, value in gradients.items()}


class SplitTrainer:
    """Trains a model split between this device and a SplitLearning server (module docstring).

    ``step({input: array} | array, labels)`` runs one step and returns its loss; ``variables()``
    the device's weights and optimizer slots; ``last_gradients`` the gradients of the device's
    weights in the last step (by weight name); ``plan`` the cut plan (None for a fixed cut); ``history`` every
    step's ``StepRecord``. Training options as for ``converter.autodiff.TrainingConfig``; the batch
    size is the model's (stage files have fixed shapes).

    ``cut``: "auto", a tensor name or the names of every tensor crossing the cut. ``u_shaped`` /
    ``tail_cut``: the labels stay here (see the module). ``compression`` codes what this device
    sends (activations; U-shaped also the second cut's gradient), ``gradient_compression`` what the
    server sends back. ``recompute``: stage backwards recompute their forward instead of keeping
    its activations. ``device_costs``: per-op forward ms of the device (default: measured here);
    ``track_device_load`` (default: only when measured here) scales them by the measured step
    times. ``replan_threshold``, ``min_gain``, ``probe_interval_s``: see the module. ``channel``:
    a grpc.Channel to use instead of dialling ``server`` (interceptors, TLS).
    """

    def __init__(self, model_path: str | os.PathLike, server: str = "127.0.0.1:50051",
                 cut: str | Sequence[str] = "auto", *, loss: str = "cross_entropy", optimizer: str = "sgd",
                 lr: float = 0.01, compression: str = "fp16", gradient_compression: str = "fp16",
                 u_shaped: bool = False, tail_cut: str | Sequence[str] | None = None, recompute: bool = False,
                 num_threads: int = 1, timeout_s: float = 60.0, max_message_mb: float = DEFAULT_MAX_MESSAGE_MB,
                 channel: grpc.Channel | None = None, token: str | None = None, tls: ClientTLS | None = None,
                 backward_factor: float = 2.0,
                 replan_threshold: float = 0.3, min_gain: float = 0.1, probe_interval_s: float = 30.0,
                 initial_link: LinkEstimate | None = None, device_costs: Sequence[float] | None = None,
                 track_device_load: bool | None = None):
        import edge

        self.model_path = os.fspath(model_path)
        with open(self.model_path, "rb") as f:
            self._model = f.read()
        self.model_sha256 = hashlib.sha256(self._model).hexdigest()
        self.compression = codecs.check_mode(compression)
        self.gradient_compression = codecs.check_mode(gradient_compression)
        self.u_shaped = bool(u_shaped)
        self.recompute = bool(recompute)
        self.num_threads = num_threads
        self.timeout_s = timeout_s
        self.backward_factor = backward_factor
        self.replan_threshold = replan_threshold
        self.min_gain = min_gain
        self._off_steps = 0
        self.probe_interval_s = probe_interval_s
        self._config = pb.TrainingConfig(loss=loss, optimizer=optimizer, lr=lr)
        self._loss = loss

        interpreter = edge.Interpreter(model_content=self._model, num_threads=num_threads)
        interpreter.allocate_tensors()
        self._ops = interpreter.op_details()
        self._tensors = interpreter.get_tensor_details()
        self._names = {int(d["index"]): d["name"] for d in self._tensors}
        self._by_name = {d["name"]: int(d["index"]) for d in self._tensors}
        self._input_indices = [int(d["index"]) for d in interpreter.get_input_details()]
        self._output_indices = [int(d["index"]) for d in interpreter.get_output_details()]
        self.input_names = [self._names[t] for t in self._input_indices]
        interpreter.close()
        self.device_op_ms = list(device_costs) if device_costs is not None else None
        # Costs a caller hands in may stand for another device (planned for on a workstation): then
        # this process's step times say nothing about them, unless the caller says they do.
        self.track_device_load = device_costs is None if track_device_load is None else track_device_load

        if channel is None:
            channel = make_channel(server, tls, max_message_mb=max_message_mb)
        self._channel = channel
        self._stub = pb_grpc.SplitLearningStub(channel)
        self._metadata = bearer_metadata(token)

        info = self._stub.RegisterModel(pb.RegisterTrainingModelRequest(model_sha256=self.model_sha256,
                                                                        model=self._model),
                                        timeout=max(timeout_s, 60.0), metadata=self._metadata)
        self.server_op_ms = list(info.op_ms)
        if len(self.server_op_ms) != len(self._ops):
            raise RuntimeError(f"the server's profile has {len(self.server_op_ms)} ops, the model {len(self._ops)}")

        self.link = initial_link
        self.device_load = 1.0
        self.server_load = 1.0
        self.plan: TrainingPlan | None = None
        self._planned_with: tuple[LinkEstimate, float, float] | None = None
        self._last_probe = -math.inf
        self.replans = 0
        self.probes = 0
        self.history: list[StepRecord] = []
        self.last_step: StepRecord | None = None
        self.last_gradients: dict[str, np.ndarray] = {}
        self.auto = isinstance(cut, str) and cut == "auto"
        self.tail_cut = self._tail_cut(tail_cut) if self.u_shaped else ()
        if self.auto:
            self.probe_link()
            self.plan = self.plan_cut()
            self._planned_with = (LinkEstimate(**vars(self.link)), self.device_load, self.server_load)
            self.cut = self.plan.cut
        else:
            self.cut = (cut,) if isinstance(cut, str) else tuple(cut)
        sent = sorted(set(self.cut) & set(self.input_names))
        if sent:
            raise ValueError(f"cut {list(self.cut)} carries the model input(s) {sent}: the device never sends its inputs")
        self._step = 0
        reply = self._stub.OpenSession(pb.OpenSessionRequest(
            model_sha256=self.model_sha256, cuts=self._cut_messages(self.cut), config=self._config,
            gradient_compression=transfer.COMPRESSION_BY_MODE[self.gradient_compression], recompute=self.recompute),
            timeout=max(timeout_s, 60.0), metadata=self._metadata)
        self.session_id = reply.session_id
        self._install(reply)

    # -- stages
    def _tail_cut(self, tail_cut) -> tuple[str, ...]:
        if tail_cut is not None:
            return (tail_cut,) if isinstance(tail_cut, str) else tuple(tail_cut)
        costs = self._costs()
        return tuple(self._names[t] for t in partition.cut_tensors(costs, len(self._ops) - 1))

    def _cut_messages(self, cut: Sequence[str]) -> list[pb.Cut]:
        cuts = [pb.Cut(tensors=list(cut))]
        if self.u_shaped:
            cuts.append(pb.Cut(tensors=list(self.tail_cut)))
        return cuts

    def _install(self, reply: pb.OpenSessionReply) -> None:
        expected = 2 if self.u_shaped else 1
        if len(reply.device_stages) != expected:
            raise RuntimeError(f"the server sent {len(reply.device_stages)} device stages, expected {expected}")
        self._head = StageWorker(reply.device_stages[0], threads=self.num_threads)
        self._tail = StageWorker(reply.device_stages[1], threads=self.num_threads) if self.u_shaped else None
        self._step = int(reply.next_step) - 1

    def _workers(self) -> list[StageWorker]:
        return [self._head] + ([self._tail] if self._tail is not None else [])

    def variables(self) -> dict[str, np.ndarray]:
        """The device's variables: its weights and their optimizer slots."""
        return {name: value for w in self._workers() for name, value in w.variables().items()}

    def server_variables(self) -> dict[str, np.ndarray]:
        reply = self._stub.GetServerVariables(pb.SessionRef(session_id=self.session_id), timeout=self.timeout_s,
                                              metadata=self._metadata)
        return {v.name: transfer.decode_tensor(v.header, v.data) for v in reply.variables}

    # -- planning
    def _costs(self) -> partition.ModelCosts:
        device = self.device_op_ms if self.device_op_ms is not None else [0.0] * len(self._ops)
        server = getattr(self, "server_op_ms", None) or [0.0] * len(self._ops)
        return partition.model_costs(device, server, self._ops, self._tensors, graph_inputs=self._input_indices,
                                     graph_outputs=self._output_indices)

    def _labels_bytes(self) -> int:
        output = self._tensors[self._output_indices[0]]
        if self._loss == "cross_entropy":
            return int(output["shape"][0]) * 4
        return int(output["nbytes"])

    def plan_cut(self, link: LinkEstimate | None = None) -> TrainingPlan:
        """The cheapest cut for ``link`` (default: the measured one) and the current loads."""
        if self.device_op_ms is None:
            from cloudsplit.costs import cached_op_ms

            self.device_op_ms = cached_op_ms(self._model, num_threads=self.num_threads)
        link = link or self.link
        costs = self._costs()

        def wire(mode):
            def size(t: int) -> int:
                d = self._tensors[t]
                return codecs.wire_bytes(mode, d["dtype"], tuple(int(v) for v in d["shape"]))
            return size

        tail = None
        if self.u_shaped:
            tail = min(self._producer_position(t) for t in self.tail_cut) + 1
        return plan_training_cut(costs, self._names, link.network(), wire_up=wire(self.compression),
                                 wire_down=wire(self.gradient_compression), labels_bytes=self._labels_bytes(),
                                 backward_factor=self.backward_factor, recompute=self.recompute,
                                 tail_position=tail, device_load=self.device_load, server_load=self.server_load)

    def _producer_position(self, tensor: str) -> int:
        index = self._by_name[tensor]
        for op in self._ops:
            if index in op["outputs"]:
                return int(op["index"])
        raise ValueError(f"tensor {tensor!r} is not computed by an op")

    def probe_link(self) -> LinkEstimate:
        """Measures the round trip, uplink and downlink with Echo calls; returns the estimate."""
        def call(payload: int, reply: int) -> float:
            started = time.perf_counter()
            self._stub.Echo(pb.EchoRequest(payload=bytes(payload), reply_bytes=reply), timeout=self.timeout_s,
                            metadata=self._metadata)
            return time.perf_counter() - started

        call(0, 0)  # the connection is open after this one
        rtt = min(call(0, 0) for _ in range(3))
        current = self.link or LinkEstimate(10e6, 10e6, rtt * 1e3)

        def rate(bps: float, up: bool) -> float:
            size = int(min(max(PROBE_SECONDS * bps / 8, PROBE_BYTES[0]), PROBE_BYTES[1]))
            seconds = min(call(size, 0) if up else call(0, size) for _ in range(2))
            return size * 8 / max(seconds - rtt, 1e-5)

        self.link = LinkEstimate(rate(current.uplink_bps, True), rate(current.downlink_bps, False), rtt * 1e3)
        self._last_probe = time.monotonic()
        self.probes += 1
        return self.link

    def replan(self, link: LinkEstimate | None = None, *, reason: str = "asked") -> bool:
        """Plans for ``link`` (default: the measured one) and moves the cut when the best one
        changed; True when it moved."""
        plan = self.plan_cut(link)
        self.plan = plan
        self._planned_with = (LinkEstimate(**vars(link or self.link)), self.device_load, self.server_load)
        current = next((c for c in plan.candidates if c.cut == self.cut), None)
        # Moving costs a round trip and the stages' bytes, and close calls flip with noise: move
        # only for a gain of at least min_gain of the step.
        if plan.cut == self.cut or (current is not None and plan.chosen.total_ms > (1 - self.min_gain) * current.total_ms):
            return False
        self.move_cut(plan.cut)
        log.info("split learning: cut moved to %s (%s)", list(plan.cut), reason)
        return True

    def move_cut(self, cut: str | Sequence[str]) -> None:
        """Moves the cut to ``cut``, the device's and the server's state carried over."""
        cut = (cut,) if isinstance(cut, str) else tuple(cut)
        sent = sorted(set(cut) & set(self.input_names))
        if sent:
            raise ValueError(f"cut {list(cut)} carries the model input(s) {sent}: the device never sends its inputs")
        variables = [encode_named(name, value, "none") for name, value in self.variables().items()]
        reply = self._stub.Replan(pb.ReplanRequest(session_id=self.session_id, cuts=self._cut_messages(cut),
                                                   device_variables=variables, recompute=self.recompute),
                                  timeout=max(self.timeout_s, 60.0), metadata=self._metadata)
        self._install(reply)
        self.cut = cut
        self.replans += 1

    def _after_step(self, record: StepRecord, upload_wire: int, download_wire: int, calls: int) -> None:
        """Loads and link from the step just taken; probes and re-plans when they moved."""
        if not self.auto or self.plan is None:
            return
        chosen = next((c for c in self.plan.candidates if c.cut == self.cut), None)
        if chosen is None:
            return
        alpha = 0.5
        planned, planned_device_load, planned_server_load = self._planned_with
        predicted_device = chosen.device_ms / planned_device_load   # the profile's figure, unscaled
        predicted_server = chosen.server_ms / planned_server_load
        if self.track_device_load and predicted_device >= MIN_LOAD_SAMPLE_MS:
            self.device_load = (1 - alpha) * self.device_load + alpha * record.device_ms / predicted_device
        if predicted_server >= MIN_LOAD_SAMPLE_MS:
            self.server_load = (1 - alpha) * self.server_load + alpha * record.server_ms / predicted_server
        link = self.link
        predicted = (_transfer_ms(upload_wire, link.uplink_bps) + _transfer_ms(download_wire, link.downlink_bps)
                     + calls * link.rtt_ms)
        off = estimate_moved(record.transfer_ms, predicted, self.replan_threshold) and \
            abs(record.transfer_ms - predicted) > REPLAN_FLOOR_MS
        # two mispredicted steps in a row, not one (a pause of the process, a collection)
        self._off_steps = self._off_steps + 1 if off else 0
        if self._off_steps >= 2 or time.monotonic() - self._last_probe > self.probe_interval_s:
            self._off_steps = 0
            self.probe_link()
        moved = [name for name in ("uplink_bps", "downlink_bps", "rtt_ms")
                 if estimate_moved(getattr(self.link, name), getattr(planned, name), self.replan_threshold)]
        if estimate_moved(self.device_load, planned_device_load, self.replan_threshold):
            moved.append("device_load")
        if estimate_moved(self.server_load, planned_server_load, self.replan_threshold):
            moved.append("server_load")
        if moved and self.replan(reason=", ".join(moved)):
            record.replanned = ", ".join(moved)

    # -- training
    def step(self, inputs: Mapping[str, np.ndarray] | np.ndarray, labels: np.ndarray) -> float:
        """One training step on a batch; returns the loss. A call the server refuses raises
        grpc.RpcError and leaves the device's stages as they were."""
        if not isinstance(inputs, Mapping):
            if len(self.input_names) != 1:
                raise ValueError(f"the model takes inputs {self.input_names}: pass a dict")
            inputs = {self.input_names[0]: inputs}
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(f"missing inputs {missing} (the model takes {self.input_names})")
        labels = np.asarray(labels)
        step = self._step + 1
        record = StepRecord(step=step, loss=math.nan, cut=self.cut)
        started = time.perf_counter()
        try:
            upload_wire, download_wire, calls = (self._u_step if self.u_shaped else self._step_labels_sent)(
                step, inputs, labels, record)
        except BaseException:
            for worker in self._workers():
                worker.discard()
            raise
        self._step = step
        record.total_ms = (time.perf_counter() - started) * 1e3
        self.last_step = record
        self.history.append(record)
        self._after_step(record, upload_wire, download_wire, calls)
        return record.loss

    def _call(self, method, request, record: StepRecord) -> pb.StepReply:
        started = time.perf_counter()
        reply = method(request, timeout=self.timeout_s, metadata=self._metadata)
        elapsed = (time.perf_counter() - started) * 1e3
        record.server_ms += reply.server_ms
        record.transfer_ms += max(0.0, elapsed - reply.server_ms)
        record.upload_bytes += request.ByteSize()
        record.download_bytes += reply.ByteSize()
        if reply.step_id != request.step_id:
            raise RuntimeError(f"the server answered step {reply.step_id} to step {request.step_id}")
        return reply

    @staticmethod
    def _received(reply: pb.StepReply, names: Sequence[str]) -> dict[str, np.ndarray]:
        got = {m.name: transfer.decode_tensor(m.header, m.data) for m in reply.tensors}
        if sorted(got) != sorted(names):
            raise RuntimeError(f"the server sent {sorted(got)}, expected {sorted(names)}")
        return got

    def _device(self, record: StepRecord, work: Callable[[], Any]):
        started = time.perf_counter()
        result = work()
        record.device_ms += (time.perf_counter() - started) * 1e3
        return result

    def _step_labels_sent(self, step, inputs, labels, record):
        head = self._head
        outputs, _ = self._device(record, lambda: head.forward(step, inputs))
        request = pb.StepRequest(session_id=self.session_id, step_id=step,
                                 tensors=[encode_named(t, outputs[t], self.compression) for t in self.cut],
                                 labels=encode_named("labels", labels, "none"))
        reply = self._call(self._stub.Step, request, record)
        grads = self._received(reply, [f"grad/{t}" for t in self.cut])
        self._device(record, lambda: head.backward(step, grads))
        self.last_gradients = _by_parameter(head.gradients()[0])
        self._device(record, head.update)
        record.loss = float(reply.loss)
        up = sum(len(m.data) for m in request.tensors) + len(request.labels.data)
        return up, sum(len(m.data) for m in reply.tensors), 1

    def _u_step(self, step, inputs, labels, record):
        head, tail = self._head, self._tail
        outputs, _ = self._device(record, lambda: head.forward(step, inputs))
        forward = pb.StepRequest(session_id=self.session_id, step_id=step,
                                 tensors=[encode_named(t, outputs[t], self.compression) for t in self.cut])
        reply = self._call(self._stub.Forward, forward, record)
        middle = self._received(reply, self.tail_cut)

        def tail_step():
            tail.forward(step, middle)
            return tail.backward(step, {"labels": labels})

        out = self._device(record, tail_step)
        backward = pb.StepRequest(session_id=self.session_id, step_id=step,
                                  tensors=[encode_named(f"grad/{t}", out[f"grad/{t}"], self.compression)
                                           for t in self.tail_cut])
        reply2 = self._call(self._stub.Backward, backward, record)
        grads = self._received(reply2, [f"grad/{t}" for t in self.cut])
        self._device(record, lambda: head.backward(step, grads))
        self.last_gradients = _by_parameter({**head.gradients()[0], **tail.gradients()[0]})
        self._device(record, lambda: (head.update(), tail.update()))
        record.loss = float(out["loss"])
        up = sum(len(m.data) for m in forward.tensors) + sum(len(m.data) for m in backward.tensors)
        down = sum(len(m.data) for m in reply.tensors) + sum(len(m.data) for m in reply2.tensors)
        return up, down, 2

    def close(self) -> None:
        try:
            self._stub.CloseSession(pb.SessionRef(session_id=self.session_id), timeout=self.timeout_s,
                                    metadata=self._metadata)
        except grpc.RpcError as error:  # the server may be gone; the session dies with it
            log.info("split learning: closing session %s: %s", self.session_id, error)
        self._channel.close()

    def __enter__(self) -> "SplitTrainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

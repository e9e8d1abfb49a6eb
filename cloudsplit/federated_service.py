"""The Federated gRPC service of ``cloudsplit serve``: federated averaging with devices as clients.

A job federates the trainable weights of a model the server holds (registered with RegisterModel,
like the Training service's jobs). Its round loop (``FederatedJob._run``) waits for enough
connected clients, samples a fraction C of them, opens a round with a deadline, and closes it when
every sampled client has pushed or the deadline passes. At the close the updates' weighted mean
(by sample count) is added to the global weights if at least ``min_clients`` arrived; otherwise
the round is abandoned and the next one samples again. A client that dies or is slow therefore
holds a round for at most one deadline, and whatever it pushes after the close is refused as late
and counted.

The strategies differ only in what sampled clients are told to run (``STRATEGIES``): FedAvg is E
local epochs of batch B; FedSGD one step on all of a client's data, i.e. one gradient per client
and round, the baseline of McMahan et al.; FedProx adds a proximal pull towards the round's
weights (``prox_mu``) to FedAvg's local steps. The server's side is the same for all three.

Aggregation keeps running sums only (``WeightedSum``): sum_k n_k * delta_k and sum_k n_k, never one
client's delta. With ``secure_aggregation`` a round runs the protocol of ``cloudsplit.secagg``
(Bonawitz et al. 2017) through four more stages (keys, shares, masked updates, unmasking): each
client pushes [n_k * delta_k, n_k] in fixed point plus masks that cancel in the sum, the server
keeps only the ring sum of those vectors, and removes what is left of the masks of clients that
dropped after sharing from the shares the survivors reveal. With ``dp_clip_norm`` every update is
clipped and weighted 1, and ``dp_noise_multiplier`` adds Gaussian noise to the round's sum before
it is applied; ``cloudsplit.privacy`` accounts the (epsilon, delta) of the rounds applied.

Every call of a client carries its job id, client id and the secret Connect gave it (besides the
server's bearer token, checked by the server's interceptor when one is set). Each refusal ends the
call with a status naming the problem and leaves the round as it was: UNAUTHENTICATED (a wrong
secret or an unknown client id), NOT_FOUND (an unknown job), INVALID_ARGUMENT (a tensor that does not match the
job's variables, non-finite values), FAILED_PRECONDITION (a round that is not open, a client not
sampled for it, a secure-aggregation message for a stage the round is not in), ALREADY_EXISTS (a
second update, key, share set or reveal of a client for one round).
"""
from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import grpc
import numpy as np

from cloudsplit import privacy, secagg, training_data, transfer
from cloudsplit.federated import receive_tensors
from cloudsplit.protos import CHUNK_BYTES, MiB
from cloudsplit.protos import training_pb2 as pb
from cloudsplit.protos import training_pb2_grpc as pb_grpc
from cloudsplit.validation import RequestError, invalid, validate_upload

log = logging.getLogger("cloudsplit.federated_service")

SERVICE_NAME = "cloudsplit.v1.Federated"
MAX_NAME = 128
PULL_COMPRESSION = ("none", "fp16")
MASKED_UPDATE = "masked update"      # the name a secure round's single pushed tensor is read under


@dataclass(frozen=True)
class Strategy:
    """What a sampled client runs in a round."""
    name: str
    full_batch: bool        # one step on all of the client's samples (E = 1, B = infinity)
    proximal: bool          # prox_mu applies


STRATEGIES = {
    "fedavg": Strategy("fedavg", full_batch=False, proximal=True),
    "fedprox": Strategy("fedprox", full_batch=False, proximal=True),
    "fedsgd": Strategy("fedsgd", full_batch=True, proximal=False),
}


@dataclass
class FederatedOptions:
    max_jobs: int = 4               # jobs running at once
    max_kept_jobs: int = 16         # ended jobs kept for GetFederatedJob
    max_clients: int = 10_000       # clients connected to one job
    max_waiting: int = 64           # JoinRound calls waiting at once (each holds an RPC thread)
    liveness_s: float = 10.0        # a client not heard from for this long is not counted as connected
    max_wait_s: float = 5.0         # the longest JoinRound wait
    chunk_bytes: int = CHUNK_BYTES          # PullWeights chunk size
    max_update_mb: float = 256.0    # one update's tensors
    data_root: str | None = None    # validation paths resolve inside it (None: any path of the server)
    max_data_mb: float = 1024.0


@dataclass
class JobConfig:
    strategy: str = "fedavg"
    epochs: int = 5
    batch_size: int = 10
    learning_rate: float | None = None
    prox_mu: float = 0.0
    fraction: float = 0.1
    min_clients: int = 1
    wait_for_clients: int | None = None
    round_timeout_s: float = 30.0
    rounds: int = 100
    seed: int = 0
    target_accuracy: float | None = None
    secure_aggregation: bool = False
    secagg_threshold: float = 2 / 3        # fraction of a round's sampled clients that must stay
    secagg_stage_timeout_s: float = 10.0
    dp_clip_norm: float | None = None      # None: no differential privacy
    dp_noise_multiplier: float = 0.0
    dp_delta: float = 1e-5

    @property
    def private(self) -> bool:
        return self.dp_clip_norm is not None

    def validate(self) -> "JobConfig":
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy[:40]!r}")
        if not 1 <= self.epochs <= 10_000:
            raise ValueError(f"epochs must be in [1, 10000], got {self.epochs}")
        if not 1 <= self.batch_size <= 1_000_000:
            raise ValueError(f"batch_size must be in [1, 1000000], got {self.batch_size}")
        if self.learning_rate is not None and not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be finite and > 0, got {self.learning_rate}")
        if not (math.isfinite(self.prox_mu) and self.prox_mu >= 0):
            raise ValueError(f"prox_mu must be finite and >= 0, got {self.prox_mu}")
        if self.prox_mu and not STRATEGIES[self.strategy].proximal:
            raise ValueError(f"prox_mu applies to fedavg/fedprox local epochs, not {self.strategy}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if not 1 <= self.min_clients <= 100_000:
            raise ValueError(f"min_clients must be in [1, 100000], got {self.min_clients}")
        if self.wait_for_clients is not None and not self.min_clients <= self.wait_for_clients <= 100_000:
            raise ValueError(f"wait_for_clients must be in [min_clients, 100000], got {self.wait_for_clients}")
        if not 0.05 <= self.round_timeout_s <= 86_400:
            raise ValueError(f"round_timeout_s must be in [0.05, 86400], got {self.round_timeout_s}")
        if not 1 <= self.rounds <= 1_000_000:
            raise ValueError(f"rounds must be in [1, 1000000], got {self.rounds}")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if self.secure_aggregation and self.min_clients < 2:
            raise ValueError("secure aggregation needs min_clients >= 2: the sum of one client's update is the update")
        if not 0.5 < self.secagg_threshold <= 1:
            raise ValueError(f"secagg_threshold must be in (0.5, 1], got {self.secagg_threshold}")
        if not 0.05 <= self.secagg_stage_timeout_s <= 3600:
            raise ValueError(f"secagg_stage_timeout_s must be in [0.05, 3600], got {self.secagg_stage_timeout_s}")
        if self.dp_clip_norm is not None and not (math.isfinite(self.dp_clip_norm) and self.dp_clip_norm > 0):
            raise ValueError(f"dp_clip_norm must be finite and > 0, got {self.dp_clip_norm}")
        if not (math.isfinite(self.dp_noise_multiplier) and self.dp_noise_multiplier >= 0):
            raise ValueError(f"dp_noise_multiplier must be finite and >= 0, got {self.dp_noise_multiplier}")
        if self.dp_noise_multiplier and self.dp_clip_norm is None:
            raise ValueError("dp_noise_multiplier needs dp_clip_norm (the noise is a multiple of the clipping norm)")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_delta must be in (0, 1), got {self.dp_delta}")
        return self


class WeightedSum:
    """sum_k n_k * delta_k per variable (float64) and sum_k n_k: the only state a round keeps of its
    updates. ``mean()`` is the FedAvg aggregate."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.sums = {name: np.zeros(shape, np.float64) for name, shape in shapes.items()}
        self.weight = 0
        self.count = 0

    def add(self, deltas: dict[str, np.ndarray], num_samples: int) -> None:
        for name, total in self.sums.items():
            total += num_samples * deltas[name].astype(np.float64)
        self.weight += num_samples
        self.count += 1

    def totals(self) -> tuple[dict[str, np.ndarray], float, int]:
        return self.sums, float(self.weight), self.count


# A secure round's stages, in order: which one a WaitSecAggStage waits past.
KEYS, SHARES, MASKED, REVEAL, DONE, ABANDONED = "keys", "shares", "masked", "reveal", "done", "abandoned"
STAGE_ORDER = {KEYS: 1, SHARES: 2, MASKED: 3, REVEAL: 4, DONE: 5}
STAGE_BY_PROTO = {pb.SECAGG_KEYS: KEYS, pb.SECAGG_SHARES: SHARES, pb.SECAGG_MASKED: MASKED}


@dataclass
class _Client:
    client_id: str
    secret: str
    num_samples: int
    capability: dict[str, str]
    last_seen: float
    sequence: int                   # the order of its Connect: clients are sampled from this order
    served_rounds: set[int] = field(default_factory=set)   # rounds it was told to run
    pushed_rounds: set[int] = field(default_factory=set)   # rounds it pushed an accepted update for


@dataclass
class _Round:
    number: int
    selected: frozenset[str]
    opened: float
    deadline: float
    weights: dict[str, np.ndarray]  # the global weights the round started from
    aggregate: WeightedSum
    pulled: set[str] = field(default_factory=set)
    pushed: set[str] = field(default_factory=set)
    bytes_pushed: int = 0
    closed: bool = False
    sampled_from: int = 0             # clients connected when it was sampled (q = sampled / this)
    secure: secagg.ServerRound | None = None
    stage: str = MASKED               # a plain round is in the masked (push) stage from the start
    shared: set[str] = field(default_factory=set)


class _VariableTable:
    """The job's variables in the shape ``validation.validate_upload`` checks uploads
    against: tensor index i is the i-th variable, float32, uploadable."""

    def __init__(self, names: list[str], shapes: dict[str, tuple[int, ...]]):
        self.names = names
        self.num_tensors = len(names)
        self.kinds = ["activation"] * len(names)
        self.dtypes = [np.dtype(np.float32)] * len(names)
        self.shapes = tuple(shapes[name] for name in names)

    def tensor_label(self, index: int) -> str:
        return f"variable {index} ({self.names[index]!r})"


class FederatedJob:
    """One federated job: its global weights, connected clients and round loop (a thread).

    ``aggregator`` makes a plain round's accumulator from the variables' shapes: anything with
    ``add(deltas, weight)``, ``count`` and ``totals()`` -> (sums, weight, count). A secure round
    keeps a ``secagg.ServerRound`` instead, which holds only the ring sum of masked vectors."""

    aggregator = WeightedSum

    def __init__(self, job_id: str, name: str, model: bytes, config: JobConfig, options: FederatedOptions,
                 validation=None):
        from edge.trainer import Trainer

        self.job_id, self.name, self.config, self.options = job_id, name, config.validate(), options
        self.strategy = STRATEGIES[config.strategy]
        self._folder = tempfile.TemporaryDirectory(prefix="edge-federated-")
        self.model_path = os.path.join(self._folder.name, "model.edge")
        with open(self.model_path, "wb") as f:
            f.write(model)
        # The server's own Trainer: the variable list, the initial weights, and validation.
        self._evaluator = Trainer(self.model_path)
        self.names = list(self._evaluator.trainable)
        if not self.names:
            self._evaluator.close()
            raise ValueError("the model has no trainable variables to federate")
        self.weights = {name: np.array(self._evaluator.get_variable(name), np.float32) for name in self.names}
        self.shapes = {name: tuple(value.shape) for name, value in self.weights.items()}
        self.table = _VariableTable(self.names, self.shapes)
        self.sizes = [int(np.prod(self.shapes[name], dtype=np.int64)) for name in self.names]
        self.vector_length = sum(self.sizes) + 1     # a secure update: the floats, then its weight
        self.accountant = privacy.RdpAccountant() if config.private and config.dp_noise_multiplier > 0 else None
        self._noise = np.random.default_rng()        # unseeded: DP noise must not be predictable
        self.validation = validation
        self.state = "waiting"
        self.error = ""
        self.started_at = time.time()
        self.finished_at = 0.0
        self.clients: dict[str, _Client] = {}
        self.round: _Round | None = None
        self.history: list[pb.FederatedRound] = []
        self.counts = {"updates": 0, "late": 0, "refused": 0, "bytes_pushed": 0, "bytes_pulled": 0,
                       "applied": 0, "abandoned": 0}
        self._changed = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"federated-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def ended(self) -> bool:
        return self.state in ("finished", "stopped", "failed")

    # -- clients -----------------------------------------------------------------------------------

    def connect(self, num_samples: int, capability: dict[str, str]) -> _Client:
        if num_samples < 1:
            raise invalid(f"num_samples must be >= 1, got {num_samples}")
        if len(capability) > 32 or any(len(k) > 64 or len(v) > 256 for k, v in capability.items()):
            raise invalid("capability holds at most 32 entries of 64-character keys and 256-character values")
        with self._changed:
            if len(self.clients) >= self.options.max_clients:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"job {self.job_id} has its {self.options.max_clients} clients")
            client = _Client(secrets.token_hex(8), secrets.token_hex(16), int(num_samples), dict(capability),
                             time.monotonic(), len(self.clients))
            self.clients[client.client_id] = client
            self._changed.notify_all()
        return client

    def authenticate(self, auth: pb.ClientAuth) -> _Client:
        with self._changed:
            client = self.clients.get(auth.client_id)
            if client is None:   # as a wrong secret: an id alone proves nothing
                raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                                   f"job {self.job_id} has no client {auth.client_id[:40]!r}: Connect first")
            if not hmac.compare_digest(auth.client_secret.encode(), client.secret.encode()):
                raise RequestError(grpc.StatusCode.UNAUTHENTICATED,
                                   f"wrong secret for client {client.client_id} of job {self.job_id}")
            client.last_seen = time.monotonic()
            self._changed.notify_all()
            return client

    def _connected(self, now: float) -> list[str]:
        """Clients heard from within the liveness window, or busy with the open round, in the order
        they connected (so that a seed and an order of connection give the same samples; the ids
        are random)."""
        busy = self.round.pulled - self.round.pushed if self.round and not self.round.closed else set()
        alive = [c for c in self.clients.values()
                 if now - c.last_seen <= self.options.liveness_s or c.client_id in busy]
        return [c.client_id for c in sorted(alive, key=lambda c: c.sequence)]

    # -- JoinRound ---------------------------------------------------------------------------------

    def join(self, client: _Client, wait_s: float) -> pb.JoinRoundReply:
        deadline = time.monotonic() + min(max(wait_s, 0.0), self.options.max_wait_s)
        with self._changed:
            while True:
                if self.ended:
                    return pb.JoinRoundReply(finished=True, round=self.round.number if self.round else 0)
                current = self.round
                if (current is not None and not current.closed and client.client_id in current.selected
                        and current.number not in client.served_rounds):
                    client.served_rounds.add(current.number)
                    config = self.config
                    return pb.JoinRoundReply(
                        selected=True, round=current.number, deadline_s=max(0.0, current.deadline - time.monotonic()),
                        strategy=self.strategy.name, epochs=1 if self.strategy.full_batch else config.epochs,
                        batch_size=0 if self.strategy.full_batch else config.batch_size,
                        learning_rate=config.learning_rate or 0.0, prox_mu=config.prox_mu,
                        secure_aggregation=config.secure_aggregation, clip_norm=config.dp_clip_norm or 0.0)
                left = deadline - time.monotonic()
                if left <= 0:
                    return pb.JoinRoundReply(selected=False, round=current.number if current else 0)
                self._changed.wait(left)
                client.last_seen = time.monotonic()

    # -- PullWeights -------------------------------------------------------------------------------

    def round_weights(self, client: _Client, number: int) -> dict[str, np.ndarray]:
        with self._changed:
            current = self._open_round_for(client, number)
            current.pulled.add(client.client_id)
            return current.weights

    def _open_round_for(self, client: _Client, number: int) -> _Round:
        current = self.round
        if current is None or number != current.number or current.closed:
            state = "closed" if current is not None and number <= current.number else "not open"
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"round {number} of job {self.job_id} is {state} "
                               f"(the current round is {current.number if current else 0}"
                               f"{', closed' if current is not None and current.closed else ''})")
        if client.client_id not in current.selected:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"client {client.client_id} was not sampled for round {number} of job {self.job_id}")
        return current

    # -- PushUpdate --------------------------------------------------------------------------------

    def check_push(self, client: _Client, header: pb.UpdateHeader) -> None:
        """Everything about an update that its header decides, before its bytes are read."""
        with self._changed:
            current = self.round
            late = (current is not None and header.round in client.served_rounds
                    and header.round not in client.pushed_rounds and (header.round < current.number or current.closed))
            try:
                if header.round in client.pushed_rounds:
                    raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                       f"client {client.client_id} already pushed its update for round {header.round}")
                if late:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"round {header.round} of job {self.job_id} closed before this update arrived "
                                       "(late updates are dropped)")
                current = self._open_round_for(client, header.round)
                if current.secure is not None:
                    self._check_masked(client, current, header)
                else:
                    if not 1 <= header.num_samples <= 1 << 40:
                        raise invalid(f"num_samples must be in [1, 2**40], got {header.num_samples}")
                    self._check_tensors(header.tensors)
            except RequestError:
                self.counts["late" if late else "refused"] += 1
                raise

    def _check_masked(self, client: _Client, current: _Round, header: pb.UpdateHeader) -> None:
        """A secure round takes one int64 tensor of vector_length elements, uncompressed (masked
        values are uniform in the ring: there is nothing to compress), from a share holder."""
        if current.stage != MASKED or client.client_id not in current.secure.holders:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"client {client.client_id} holds no shares of round {current.number} of job "
                               f"{self.job_id} (stage {current.stage}): it cannot push a masked update")
        if header.num_samples != 0:
            raise invalid("under secure aggregation num_samples must be 0: the weight travels masked, "
                          "as the last element of the vector")
        if len(header.tensors) != 1:
            raise invalid(f"a masked update is one tensor, this one has {len(header.tensors)}")
        tensor = header.tensors[0]
        expected = (0, transfer.DTYPE_BY_NUMPY[np.dtype(np.int64)], transfer.COMPRESSION_BY_MODE["none"])
        if (tensor.tensor_index, tensor.dtype, tensor.compression) != expected:
            raise invalid(f"a masked update is tensor 0, int64, uncompressed; got tensor {tensor.tensor_index}, "
                          f"{transfer.dtype_name(tensor.dtype)}, compression {tensor.compression}")
        if list(tensor.shape) != [self.vector_length] or tensor.byte_length != 8 * self.vector_length:
            raise invalid(f"a masked update has shape [{self.vector_length}] ({8 * self.vector_length} bytes), "
                          f"got {list(tensor.shape)} ({tensor.byte_length} bytes)")

    def _check_tensors(self, headers) -> None:
        if len(headers) != len(self.names):
            raise invalid(f"an update carries one tensor per variable ({len(self.names)}: "
                          f"{', '.join(self.names)}), this one {len(headers)}")
        uploaded: set[int] = set()
        total = 0
        for header in headers:
            total += validate_upload(self.table, self.table.shapes, header, uploaded)
            uploaded.add(header.tensor_index)
        if total > self.options.max_update_mb * MiB:
            raise invalid(f"the update declares {total} bytes, over the server's {self.options.max_update_mb:g} MiB")

    def accept(self, client: _Client, header: pb.UpdateHeader, deltas: dict[str, np.ndarray], wire_bytes: int) -> int:
        with self._changed:
            try:
                bad = [name for name, value in deltas.items() if not np.all(np.isfinite(value))]
                if bad:
                    raise invalid(f"the update of variable {bad[0]!r} holds inf or nan")
                if header.round in client.pushed_rounds:
                    raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                       f"client {client.client_id} already pushed its update for round {header.round}")
                current = self.round
                if (current is None or current.number != header.round or current.closed
                        or (current.secure is not None) != (MASKED_UPDATE in deltas)):
                    self.counts["late"] += 1
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"round {header.round} of job {self.job_id} closed while this update arrived "
                                       "(late updates are dropped)")
            except RequestError as error:
                if error.code != grpc.StatusCode.FAILED_PRECONDITION:
                    self.counts["refused"] += 1
                raise
            if current.secure is not None:
                # Only the ring sum grows; the masked vector itself is not kept.
                current.secure.add_masked(client.client_id, deltas[MASKED_UPDATE].view(np.uint64))
            elif self.config.private:
                # The server clips again: it does not trust a client to have clipped.
                clipped, _ = privacy.clip_update(deltas, self.config.dp_clip_norm)
                current.aggregate.add(clipped, 1)
            else:
                current.aggregate.add(deltas, int(header.num_samples))
            current.pushed.add(client.client_id)
            current.bytes_pushed += wire_bytes
            client.pushed_rounds.add(header.round)
            self.counts["updates"] += 1
            self.counts["bytes_pushed"] += wire_bytes
            self._changed.notify_all()
            return len(current.pushed)

    # -- secure aggregation's stages --------------------------------------------------------------

    def _secure_round(self, client: _Client, number: int, stage: str) -> _Round:
        """The open secure round ``number`` in ``stage``, for a client sampled for it."""
        current = self.round
        if not self.config.secure_aggregation:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"job {self.job_id} does not run secure aggregation")
        if current is None or current.number != number or current.stage == ABANDONED:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"round {number} of job {self.job_id} is not open (the current round is "
                               f"{current.number if current else 0}"
                               f"{', abandoned' if current is not None and current.stage == ABANDONED else ''})")
        if client.client_id not in current.selected:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"client {client.client_id} was not sampled for round {number} of job {self.job_id}")
        if current.stage != stage:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"round {number} of job {self.job_id} is in its {current.stage} stage, not {stage}")
        return current

    @contextlib.contextmanager
    def _refusing(self):
        """Counts a refused secure-aggregation message; a protocol error is INVALID_ARGUMENT."""
        try:
            yield
        except secagg.SecAggError as error:
            self.counts["refused"] += 1
            raise invalid(str(error)) from None
        except RequestError:
            self.counts["refused"] += 1
            raise

    def advertise(self, client: _Client, request: pb.AdvertiseKeysRequest) -> None:
        with self._changed, self._refusing():
            current = self._secure_round(client, request.round, KEYS)
            if client.client_id in current.secure.keys:
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                   f"client {client.client_id} already advertised keys for round {request.round}")
            current.secure.add_keys(client.client_id, request.cipher_public_key, request.mask_public_key)
            self._changed.notify_all()

    def share(self, client: _Client, request: pb.ShareKeysRequest) -> None:
        with self._changed, self._refusing():
            current = self._secure_round(client, request.round, SHARES)
            if client.client_id not in current.secure.order:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"client {client.client_id} advertised no keys in round {request.round}")
            if client.client_id in current.shared:
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                   f"client {client.client_id} already sent its shares for round {request.round}")
            shares = {}
            for item in request.shares:
                if item.sender != client.client_id:
                    raise secagg.SecAggError(f"client {client.client_id} sent a share marked as {item.sender[:40]!r}'s")
                if item.recipient in shares:
                    raise secagg.SecAggError(f"client {client.client_id} sent two shares to {item.recipient[:40]!r}")
                shares[item.recipient] = item.ciphertext
            current.secure.add_shares(client.client_id, shares)
            current.shared.add(client.client_id)
            self._changed.notify_all()

    def reveal(self, client: _Client, request: pb.RevealSharesRequest) -> None:
        with self._changed, self._refusing():
            current = self._secure_round(client, request.round, REVEAL)
            secure = current.secure
            if client.client_id not in secure.survivors:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                   f"client {client.client_id} pushed no masked update in round {request.round}")
            if client.client_id in secure.revealed:
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                   f"client {client.client_id} already revealed its shares for round {request.round}")
            seeds = {item.owner: item.share for item in request.self_seed_shares}
            keys = {item.owner: item.share for item in request.mask_key_shares}
            if len(seeds) != len(request.self_seed_shares) or len(keys) != len(request.mask_key_shares):
                raise secagg.SecAggError(f"client {client.client_id} revealed two shares of one owner")
            secure.add_reveal(client.client_id, seeds, keys)
            self._changed.notify_all()

    def wait_stage(self, client: _Client, request: pb.SecAggStageRequest, wait_s: float) -> pb.SecAggStageReply:
        """Waits until the round is past ``request.stage``; then what the client needs from it."""
        stage = STAGE_BY_PROTO.get(request.stage)
        if stage is None:
            raise invalid(f"stage must be SECAGG_KEYS, SECAGG_SHARES or SECAGG_MASKED, got {request.stage}")
        deadline = time.monotonic() + min(max(wait_s, 0.0), self.options.max_wait_s)
        with self._changed:
            while True:
                current = self.round
                if current is not None and current.number == request.round and current.stage != ABANDONED \
                        and STAGE_ORDER[current.stage] > STAGE_ORDER[stage]:
                    break
                self._secure_round(client, request.round, stage)   # still in it: refuses what cannot wait
                left = deadline - time.monotonic()
                if left <= 0:
                    return pb.SecAggStageReply(ready=False, round=request.round, stage=request.stage)
                self._changed.wait(left)
            secure = current.secure
            reply = pb.SecAggStageReply(ready=True, round=request.round, stage=request.stage,
                                        threshold=secure.threshold, vector_length=self.vector_length)
            me = client.client_id
            if stage == KEYS:
                if me not in secure.order:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"client {me} advertised no keys before the key stage of round "
                                       f"{request.round} closed")
                reply.participants.extend(pb.ParticipantKeys(client_id=p.client_id, cipher_public_key=p.cipher_public,
                                                             mask_public_key=p.mask_public)
                                          for p in (secure.keys[c] for c in secure.order))
            elif stage == SHARES:
                if me not in secure.holders:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"client {me} sent no shares before round {request.round}'s share stage closed")
                reply.holders.extend(secure.holders)
                reply.shares.extend(pb.EncryptedShare(sender=sender, recipient=me, ciphertext=blob)
                                    for sender, blob in sorted(secure.inbox(me).items()))
            else:
                if me not in secure.survivors:
                    raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"client {me}'s masked update is not in round {request.round}")
                reply.survivors.extend(secure.survivors)
                reply.dropped.extend(secure.dropped)
            return reply

    def refuse(self) -> None:
        with self._changed:
            self.counts["refused"] += 1

    def count_pulled(self, nbytes: int) -> None:
        with self._changed:
            self.counts["bytes_pulled"] += nbytes

    # -- the round loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._rounds()
        except Exception as error:  # noqa: BLE001 - the job fails, the server goes on
            log.exception("federated job %s failed", self.job_id)
            with self._changed:
                self.state, self.error = "failed", f"{type(error).__name__}: {error}"
        finally:
            with self._changed:
                if not self.ended:
                    self.state = "stopped" if self._stopping else "finished"
                self.finished_at = time.time()
                self._changed.notify_all()
            self._evaluator.close()

    def _rounds(self) -> None:
        config = self.config
        rng = np.random.default_rng(config.seed)
        number = 0
        while number < config.rounds:
            with self._changed:
                needed = (config.wait_for_clients or config.min_clients) if number == 0 else config.min_clients
                while not self._stopping and len(self._connected(time.monotonic())) < needed:
                    self._changed.wait(0.25)
                if self._stopping:
                    return
                connected = self._connected(time.monotonic())
                take = min(len(connected), max(config.min_clients, math.ceil(config.fraction * len(connected))))
                selected = frozenset(rng.choice(connected, size=take, replace=False).tolist())
                number += 1
                now = time.monotonic()
                current = _Round(number, selected, now, now + config.round_timeout_s, dict(self.weights),
                                 self.aggregator(self.shapes), sampled_from=len(connected))
                if config.secure_aggregation:
                    current.aggregate = None
                    current.secure = secagg.ServerRound(secagg.round_context(self.job_id, number), selected,
                                                        secagg.threshold_for(len(selected), config.secagg_threshold),
                                                        self.vector_length)
                    current.stage = KEYS
                self.round, self.state = current, "running"
                self._changed.notify_all()
                totals = self._close_secure(current) if current.secure is not None else self._close_plain(current)
                applied = totals is not None
                record = pb.FederatedRound(round=number, sampled=len(selected), updates=len(current.pushed),
                                           applied=applied, bytes_pushed=current.bytes_pushed)
                if applied:
                    sums, weight, count = totals
                    if self.accountant is not None:
                        std = config.dp_noise_multiplier * config.dp_clip_norm
                        sums = {name: total + self._noise.normal(0.0, std, total.shape) for name, total in sums.items()}
                        self.accountant.add(len(selected) / current.sampled_from, config.dp_noise_multiplier)
                        record.dp_epsilon = self.accountant.epsilon(config.dp_delta)
                    self.weights = {name: self.weights[name] + (sums[name] / weight).astype(np.float32)
                                    for name in self.names}
                    self.counts["applied"] += 1
                    record.samples = int(round(weight))
                else:
                    self.counts["abandoned"] += 1
                if current.secure is not None:
                    record.dropped = len(current.secure.dropped)
                    record.secagg_bytes = current.secure.bytes_received
                record.duration_s = time.monotonic() - current.opened
                log.info("federated job %s round %d: %s, %d of %d sampled clients' updates%s", self.job_id, number,
                         "applied" if applied else "abandoned", len(current.pushed), len(selected),
                         f", masks of {record.dropped} dropped clients removed" if record.dropped else "")
                # The sums go with the round: nothing of an update outlives it.
                current.aggregate = None
                totals = sums = None
                weights = self.weights
                self._changed.notify_all()
            if applied and self.validation is not None:
                metrics = self._evaluate(weights)
                record.val_loss, record.val_accuracy = metrics["loss"], metrics["accuracy"]
            with self._changed:
                self.history.append(record)
                if self._stopping:
                    return
                target = config.target_accuracy
                if target is not None and record.HasField("val_accuracy") and record.val_accuracy >= target:
                    return

    def _wait_until(self, ready, deadline: float) -> None:
        """Waits (holding the lock between checks) until ``ready()``, the deadline or a stop."""
        while not self._stopping and not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._changed.wait(left)

    def _close_plain(self, current: _Round):
        self._wait_until(lambda: len(current.pushed) >= len(current.selected), current.deadline)
        current.closed = True
        sums, weight, count = current.aggregate.totals()
        return (sums, weight, count) if count >= self.config.min_clients else None

    def _close_secure(self, current: _Round):
        """Runs the round's secure-aggregation stages; the unmasked (sums, weight, count), or None
        when a stage kept fewer clients than it needs (the round is then abandoned)."""
        secure, config = current.secure, self.config

        def stage_deadline() -> float:
            return min(current.deadline, time.monotonic() + config.secagg_stage_timeout_s)

        def advance(stage: str) -> None:
            current.stage = stage
            self._changed.notify_all()

        try:
            self._wait_until(lambda: set(secure.keys) >= current.selected, stage_deadline())
            secure.close_keys()
            advance(SHARES)
            if len(secure.order) < secure.threshold:
                return None
            self._wait_until(lambda: current.shared >= set(secure.order), stage_deadline())
            secure.close_shares(sorted(current.shared))
            advance(MASKED)
            if len(secure.holders) < secure.threshold:
                return None
            self._wait_until(lambda: current.pushed >= set(secure.holders), current.deadline)
            current.closed = True
            secure.close_masked()
            advance(REVEAL)
            if len(secure.survivors) < max(secure.threshold, config.min_clients):
                return None
            self._wait_until(lambda: secure.revealed >= set(secure.survivors),
                             time.monotonic() + config.secagg_stage_timeout_s)
            if len(secure.revealed) < secure.threshold:
                return None
            try:
                total = secagg.decode_fixed(secure.unmask())
            except secagg.SecAggError as error:
                log.warning("federated job %s round %d: unmasking failed: %s", self.job_id, current.number, error)
                return None
            advance(DONE)
        finally:
            current.closed = True
            secure.outbox, secure.seed_shares, secure.key_shares = {}, {}, {}
            if current.stage != DONE:
                advance(ABANDONED)
        sums, offset = {}, 0
        for name, size in zip(self.names, self.sizes):
            sums[name] = total[offset:offset + size].reshape(self.shapes[name])
            offset += size
        return sums, float(np.rint(total[-1])), len(secure.survivors)

    def _evaluate(self, weights: dict[str, np.ndarray]) -> dict[str, float]:
        for name, value in weights.items():
            self._evaluator.set_variable(name, value)
        return self._evaluator.evaluate(*self.validation)

    def global_weights(self) -> dict[str, np.ndarray]:
        with self._changed:
            return {name: value.copy() for name, value in self.weights.items()}

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def wait(self, timeout_s: float | None = None) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def close(self) -> None:
        self.stop()
        self.wait(30)
        self._folder.cleanup()

    def status(self) -> pb.FederatedJobStatus:
        with self._changed:
            now = time.monotonic()
            counts = self.counts
            return pb.FederatedJobStatus(
                job_id=self.job_id, name=self.name, state=self.state, strategy=self.strategy.name,
                round=self.round.number if self.round else 0, rounds=self.config.rounds,
                applied_rounds=counts["applied"], abandoned_rounds=counts["abandoned"],
                connected=len(self._connected(now)), updates=counts["updates"], late=counts["late"],
                refused=counts["refused"], bytes_pushed=counts["bytes_pushed"], bytes_pulled=counts["bytes_pulled"],
                history=list(self.history), secure_aggregation=self.config.secure_aggregation,
                dp_clip_norm=self.config.dp_clip_norm or 0.0, dp_noise_multiplier=self.config.dp_noise_multiplier,
                dp_delta=self.config.dp_delta,
                **({"dp_epsilon": self.accountant.epsilon(self.config.dp_delta)} if self.accountant else {}))


class FederatedService(pb_grpc.FederatedServicer):
    def __init__(self, registry, options: FederatedOptions | None = None):
        self.registry = registry
        self.options = options or FederatedOptions()
        self.jobs: dict[str, FederatedJob] = {}
        self._lock = threading.Lock()
        self._waiting = 0

    # -- jobs --------------------------------------------------------------------------------------

    def start_job(self, model: bytes, config: JobConfig, name: str = "", validation=None) -> FederatedJob:
        """Starts a job in this process (what StartFederatedJob does after its checks)."""
        with self._lock:
            running = sum(1 for j in self.jobs.values() if not j.ended)
            if running >= self.options.max_jobs:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"the server runs at most {self.options.max_jobs} federated jobs at once")
        job_id = secrets.token_hex(8)
        job = FederatedJob(job_id, name or job_id, model, config, self.options, validation)
        with self._lock:
            self.jobs[job_id] = job
            ended = sorted((j for j in self.jobs.values() if j.ended), key=lambda j: j.finished_at)
            evicted = ended[:max(0, len(ended) - self.options.max_kept_jobs)]
            for old in evicted:
                del self.jobs[old.job_id]
        for old in evicted:
            old.close()
        job.start()
        log.info("federated job %s started: %s, %d rounds, C=%g%s%s", job_id, config.strategy, config.rounds,
                 config.fraction, ", secure aggregation" if config.secure_aggregation else "",
                 f", DP clip {config.dp_clip_norm:g} noise {config.dp_noise_multiplier:g}" if config.private else "")
        return job

    def job(self, job_id: str) -> FederatedJob:
        with self._lock:
            job = self.jobs.get(job_id)
        if job is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"no federated job {job_id[:80]!r} on this server")
        return job

    def StartFederatedJob(self, request, context):
        try:
            return self._start(request).status()
        except RequestError as error:
            context.abort(error.code, error.message)

    def _start(self, request) -> FederatedJob:
        from cloudsplit.training_service import TrainingService

        # The same model checks as a training job's (registered, trainable); they read only the registry.
        entry = TrainingService._model(self, request.model_sha256)
        if len(request.name) > MAX_NAME or not request.name.isprintable():
            raise invalid(f"name must be at most {MAX_NAME} printable characters")
        given = {field: getattr(request, field) for field in
                 ("epochs", "batch_size", "learning_rate", "prox_mu", "fraction", "min_clients", "wait_for_clients",
                  "round_timeout_s", "rounds", "seed", "target_accuracy", "secagg_threshold",
                  "secagg_stage_timeout_s", "dp_clip_norm", "dp_noise_multiplier", "dp_delta")
                 if request.HasField(field)}
        given["secure_aggregation"] = request.secure_aggregation
        if given.get("seed", 0) >= 2 ** 63:
            raise invalid(f"seed must be below 2**63, got {given['seed']}")
        try:
            config = replace(JobConfig(), strategy=request.strategy or "fedavg", **given).validate()
        except ValueError as error:
            raise invalid(str(error)) from None
        if config.target_accuracy is not None and not request.validation_path:
            raise invalid("target_accuracy needs validation_path")
        validation = None
        if request.validation_path:
            try:
                full = training_data.resolve(request.validation_path, self.options.data_root)
                validation = training_data.load_npz(full, int(self.options.max_data_mb * MiB), "validation data")
            except training_data.DataError as error:
                code = grpc.StatusCode.NOT_FOUND if error.missing else grpc.StatusCode.INVALID_ARGUMENT
                raise RequestError(code, str(error)) from None
        try:
            return self.start_job(entry.data, config, request.name, validation)
        except ValueError as error:
            raise invalid(str(error)) from None

    def GetFederatedJob(self, request, context):
        try:
            return self.job(request.job_id).status()
        except RequestError as error:
            context.abort(error.code, error.message)

    def StopFederatedJob(self, request, context):
        try:
            job = self.job(request.job_id)
        except RequestError as error:
            context.abort(error.code, error.message)
        job.stop()
        job.wait(10)
        return job.status()

    # -- clients -----------------------------------------------------------------------------------

    def _client(self, auth: pb.ClientAuth) -> tuple[FederatedJob, _Client]:
        job = self.job(auth.job_id)
        return job, job.authenticate(auth)

    def Connect(self, request, context):
        try:
            job = self.job(request.job_id)
            if job.ended:
                raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f"federated job {job.job_id} has ended")
            client = job.connect(request.num_samples, dict(request.capability))
        except RequestError as error:
            context.abort(error.code, error.message)
        return pb.ConnectReply(client_id=client.client_id, client_secret=client.secret, variables=job.names)

    def JoinRound(self, request, context):
        try:
            job, client = self._client(request.auth)
            with self._held_wait():
                wait_s = request.wait_s if math.isfinite(request.wait_s) else 0.0
                return job.join(client, wait_s)
        except RequestError as error:
            context.abort(error.code, error.message)

    def PullWeights(self, request, context):
        try:
            job, client = self._client(request.auth)
            mode = request.compression or "none"
            if mode not in PULL_COMPRESSION:
                raise invalid(f"PullWeights compression must be one of {', '.join(PULL_COMPRESSION)}, "
                              f"got {mode[:40]!r}")
            weights = job.round_weights(client, request.round)
        except RequestError as error:
            context.abort(error.code, error.message)
        tensors = [transfer.encode_tensor(i, weights[name], mode) for i, name in enumerate(job.names)]
        yield pb.WeightsMessage(header=pb.WeightsHeader(round=request.round, tensors=[h for h, _ in tensors]))
        for message in transfer.chunk_messages(tensors, max(1024, self.options.chunk_bytes)):
            yield pb.WeightsMessage(chunk=message.chunk)
        job.count_pulled(sum(len(data) for _, data in tensors))

    def PushUpdate(self, request_iterator, context):
        try:
            return self._push(request_iterator)
        except RequestError as error:
            context.abort(error.code, error.message)

    def _push(self, messages: Iterator[pb.UpdateMessage]) -> pb.PushUpdateReply:
        first = next(messages, None)
        if first is None or first.WhichOneof("kind") != "header":
            raise invalid("an update starts with its UpdateHeader")
        header = first.header
        job, client = self._client(header.auth)
        job.check_push(client, header)
        def chunks():
            for message in messages:
                if message.WhichOneof("kind") != "chunk":
                    raise invalid("an update has one UpdateHeader, then only chunks")
                yield message.chunk

        names = [MASKED_UPDATE] if job.config.secure_aggregation else job.names
        try:
            deltas, wire_bytes = receive_tensors(header.tensors, chunks(), names,
                                                 int(self.options.max_update_mb * MiB))
        except transfer.FramingError as error:
            job.refuse()
            raise invalid(str(error)) from None
        except RequestError:
            job.refuse()
            raise
        count = job.accept(client, header, deltas, wire_bytes)
        return pb.PushUpdateReply(round=header.round, updates_in_round=count)

    # -- secure aggregation ------------------------------------------------------------------------

    def AdvertiseKeys(self, request, context):
        try:
            job, client = self._client(request.auth)
            job.advertise(client, request)
        except RequestError as error:
            context.abort(error.code, error.message)
        return pb.SecAggAck(round=request.round)

    def ShareKeys(self, request, context):
        try:
            job, client = self._client(request.auth)
            job.share(client, request)
        except RequestError as error:
            context.abort(error.code, error.message)
        return pb.SecAggAck(round=request.round)

    def RevealShares(self, request, context):
        try:
            job, client = self._client(request.auth)
            job.reveal(client, request)
        except RequestError as error:
            context.abort(error.code, error.message)
        return pb.SecAggAck(round=request.round)

    def WaitSecAggStage(self, request, context):
        try:
            job, client = self._client(request.auth)
            with self._held_wait():
                wait_s = request.wait_s if math.isfinite(request.wait_s) else 0.0
                return job.wait_stage(client, request, wait_s)
        except RequestError as error:
            context.abort(error.code, error.message)

    @contextlib.contextmanager
    def _held_wait(self):
        """Counts a call that waits (JoinRound, WaitSecAggStage) against max_waiting."""
        with self._lock:
            if self._waiting >= self.options.max_waiting:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"the server holds at most {self.options.max_waiting} waiting calls at once")
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def close(self) -> None:
        with self._lock:
            jobs = list(self.jobs.values())
            self.jobs.clear()
        for job in jobs:
            job.close()


def add_to_server(server: grpc.Server, registry, options: FederatedOptions | None = None) -> FederatedService:
    service = FederatedService(registry, options)
    pb_grpc.add_FederatedServicer_to_server(service, server)
    return service

"""The device side of federated averaging: ``Client`` trains on data that never leaves the device.

    client = Client("digits.train.edge", server="10.0.0.5:50051", job_id=job, data=(x, y))
    client.run()        # until the job finishes: join rounds, pull, train E epochs of batch B, push

Each round the server samples the client for, it pulls the round's weights, trains them with
``edge.Trainer`` as the server's JoinRound reply says (E local epochs of batch B for FedAvg, one
step on all its data for FedSGD, FedProx's proximal step after each step when ``prox_mu`` > 0)
and pushes the weight delta, compressed as asked (none, fp16, int8 per channel or per tensor:
the split protocol's codecs, ``cloudsplit.transfer``). The optimizer starts afresh every round
(slots and step back to the model file's, the weights the server's).

It needs only the device install (``edge``, its C runtime, NumPy) and grpcio: the server side
(``federated_service``) and anything heavier are never imported.

When the job asks for secure aggregation (``JoinRoundReply.secure_aggregation``) a round goes
through ``cloudsplit.secagg``'s stages around the training: advertise keys, send sealed shares,
train, push the masked update, reveal the shares the server needs to unmask the sum. When it asks
for clipping (``clip_norm``, differential privacy) the delta is clipped to that L2 norm and
counts with weight 1.

``step_delay_s`` sleeps after every local step: an emulated slower device for tests and
benchmarks.
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from cloudsplit import security, transfer
from cloudsplit.compression import MODES, check_mode
from cloudsplit.protos import CHUNK_BYTES, DEFAULT_MAX_MESSAGE_MB, chunk_bytes as message_chunk_bytes
from cloudsplit.protos import training_pb2 as pb
from cloudsplit.protos import training_pb2_grpc as pb_grpc
from cloudsplit.security import ClientTLS, bearer_metadata, make_channel

JOIN_WAIT_S = 2.0
CALL_TIMEOUT_S = 60.0
RETRY_S = 0.5
# JoinRound failures worth waiting out: the server is away, slow, or holds its most waits.
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass
class RoundReport:
    round: int
    pushed: bool                   # accepted by the server
    status: str                    # "ok", or the refusal's gRPC status name
    loss: float                    # mean local training loss
    steps: int
    train_s: float
    bytes_pulled: int              # the messages' serialized bytes (gRPC and HTTP/2 framing not counted)
    bytes_pushed: int
    secagg_bytes_sent: int = 0     # secure aggregation's own messages (keys, shares, reveals), serialized
    secagg_bytes_received: int = 0


def receive_tensors(headers, chunks, names: list[str], max_total_bytes: int) -> tuple[dict[str, np.ndarray], int]:
    """The tensors ``headers`` announce, read from their ``chunks`` and decoded, keyed by
    ``names[tensor_index]``, and their wire bytes. A stream that does not follow its headers, or
    that declares more than ``max_total_bytes``, raises ``transfer.FramingError`` (the server and
    the client read weights and deltas the same way)."""
    indices = [header.tensor_index for header in headers]
    if sorted(indices) != list(range(len(names))):
        raise transfer.FramingError(f"the stream lists tensors {indices[:8]}, not each of 0..{len(names) - 1} once")
    assembler = transfer.TensorAssembler(headers, max_total_bytes)
    for chunk in chunks:
        assembler.add(chunk)
    if not assembler.complete:
        raise transfer.FramingError(f"the stream ended early: {assembler.missing()}")
    tensors, nbytes = {}, 0
    for header, data in assembler.tensors():
        tensors[names[header.tensor_index]] = transfer.decode_tensor(header, data)
        nbytes += len(data)
    return tensors, nbytes


class Client:
    def __init__(self, model_path, server: str, data, job_id: str, *, token: str | None = None,
                 tls: ClientTLS | None = None,
                 compression: str = "none", pull_compression: str = "none", num_threads: int = 1,
                 seed: int = 0, step_delay_s: float = 0.0, capability: dict[str, str] | None = None,
                 max_message_mb: float = DEFAULT_MAX_MESSAGE_MB, chunk_bytes: int = CHUNK_BYTES):
        from edge.trainer import Trainer

        self.compression = check_mode(compression)
        self.pull_compression = pull_compression
        self.job_id = job_id
        self.x, self.y = data
        if len(self.x) != len(self.y) or len(self.x) == 0:
            raise ValueError(f"data must be (x, y) of one non-zero length, got {len(self.x)} and {len(self.y)}")
        self.trainer = Trainer(model_path, num_threads=num_threads)
        self.step_delay_s = float(step_delay_s)
        self.rng = np.random.default_rng(seed)
        self.capability = {"runtime": "edge", "threads": str(num_threads), **(capability or {})}
        self.chunk_bytes = message_chunk_bytes(max_message_mb, chunk_bytes)
        self.channel = make_channel(server, tls, max_message_mb=max_message_mb, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])
        self.stub = pb_grpc.FederatedStub(self.channel)
        self.metadata = bearer_metadata(token)
        self.auth: pb.ClientAuth | None = None
        self.variables: list[str] = []
        self.reports: list[RoundReport] = []

    def close(self) -> None:
        self.channel.close()
        self.trainer.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def num_samples(self) -> int:
        return len(self.y)

    def connect(self) -> None:
        reply = self.stub.Connect(pb.ConnectRequest(job_id=self.job_id, num_samples=self.num_samples,
                                                    capability=self.capability),
                                  timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        unknown = [name for name in reply.variables if name not in self.trainer.variable_names]
        if unknown:
            raise ValueError(f"the job federates variables {unknown} that this model does not have")
        self.auth = pb.ClientAuth(job_id=self.job_id, client_id=reply.client_id, client_secret=reply.client_secret)
        self.variables = list(reply.variables)

    @property
    def client_id(self) -> str:
        return self.auth.client_id if self.auth else ""

    def join(self, wait_s: float = JOIN_WAIT_S) -> pb.JoinRoundReply:
        return self.stub.JoinRound(pb.JoinRoundRequest(auth=self.auth, wait_s=wait_s),
                                   timeout=wait_s + CALL_TIMEOUT_S, metadata=self.metadata)

    def run(self, max_rounds: int | None = None, stop: threading.Event | None = None,
            timeout_s: float | None = None) -> list[RoundReport]:
        """Serves rounds until the job finishes, ``max_rounds`` were served, ``stop`` is set or
        ``timeout_s`` passed; returns the reports of the rounds served."""
        if self.auth is None:
            self.connect()
        end = time.monotonic() + timeout_s if timeout_s is not None else math.inf
        served = []
        while (max_rounds is None or len(served) < max_rounds) and not (stop and stop.is_set()):
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                reply = self.join(min(JOIN_WAIT_S, left))
            except grpc.RpcError as error:
                if error.code() not in RETRIED:
                    raise
                time.sleep(min(RETRY_S, max(0.0, end - time.monotonic())))   # the server may come back
                continue
            if reply.finished:
                break
            if reply.selected:
                served.append(self.serve_round(reply))
        return served

    # -- one round ---------------------------------------------------------------------------------

    def pull(self, number: int) -> tuple[dict[str, np.ndarray], int]:
        stream = self.stub.PullWeights(pb.PullWeightsRequest(auth=self.auth, round=number,
                                                             compression=self.pull_compression),
                                       timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        first = next(stream)
        if first.WhichOneof("kind") != "header" or len(first.header.tensors) != len(self.variables):
            raise ValueError("PullWeights did not start with a header listing every federated variable")
        size = first.ByteSize()

        def chunks():
            nonlocal size
            for message in stream:
                size += message.ByteSize()
                yield message.chunk

        # The weights cannot take more bytes than this model's own variables, uncompressed.
        limit = sum(self.trainer.get_variable(name).nbytes for name in self.variables)
        weights, _ = receive_tensors(first.header.tensors, chunks(), self.variables, limit)
        return weights, size

    def train_locally(self, start: dict[str, np.ndarray], reply: pb.JoinRoundReply) -> tuple[float, int]:
        """Trains from ``start`` as the round asks; returns (mean loss, steps)."""
        trainer = self.trainer
        trainer.reset()
        for name, value in start.items():
            trainer.set_variable(name, value)
        if reply.learning_rate > 0:
            trainer.learning_rate = reply.learning_rate
        rate = trainer.learning_rate if reply.prox_mu > 0 else 0.0
        count = self.num_samples
        batch = count if reply.batch_size <= 0 else min(reply.batch_size, count)
        total, steps = 0.0, 0
        for _ in range(max(1, reply.epochs)):
            order = self.rng.permutation(count)
            for offset in range(0, count, batch):
                chosen = order[offset:offset + batch]
                total += trainer.train_step(self.x[chosen], self.y[chosen])
                steps += 1
                if reply.prox_mu > 0:
                    self._proximal_step(start, rate * reply.prox_mu)
                if self.step_delay_s:
                    time.sleep(self.step_delay_s)
        return total / steps, steps

    def _proximal_step(self, start: dict[str, np.ndarray], strength: float) -> None:
        """The proximal operator of (mu / 2) |w - w_round|^2 at the local rate: FedProx's term
        applied after the optimizer's step (a proximal-gradient step)."""
        for name, anchor in start.items():
            value = self.trainer.get_variable(name)
            self.trainer.set_variable(name, (value + strength * anchor) / (1.0 + strength))

    def push(self, number: int, deltas: dict[str, np.ndarray]) -> tuple[pb.PushUpdateReply, int]:
        """Sends the update; returns the reply and the messages' serialized bytes."""
        tensors = [transfer.encode_tensor(i, deltas[name], self.compression) for i, name in enumerate(self.variables)]
        return self._push_tensors(number, tensors, self.num_samples)

    def _push_tensors(self, number: int, tensors, num_samples: int) -> tuple[pb.PushUpdateReply, int]:
        header = pb.UpdateHeader(auth=self.auth, round=number, num_samples=num_samples,
                                 tensors=[h for h, _ in tensors])
        size = 0

        def messages():
            nonlocal size
            first = pb.UpdateMessage(header=header)
            size += first.ByteSize()
            yield first
            for message in transfer.chunk_messages(tensors, self.chunk_bytes):
                chunk = pb.UpdateMessage(chunk=message.chunk)
                size += chunk.ByteSize()
                yield chunk

        reply = self.stub.PushUpdate(messages(), timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        return reply, size

    def serve_round(self, reply: pb.JoinRoundReply) -> RoundReport:
        if reply.secure_aggregation:
            return self.serve_secure_round(reply)
        number = reply.round
        try:
            start, pulled = self.pull(number)
        except grpc.RpcError as error:
            return self._record(RoundReport(number, False, error.code().name, math.nan, 0, 0.0, 0, 0))
        began = time.perf_counter()
        loss, steps = self.train_locally(start, reply)
        train_s = time.perf_counter() - began
        deltas = self._clipped(self._deltas(start), reply.clip_norm)
        try:
            _, pushed = self.push(number, deltas)
            status = "ok"
        except grpc.RpcError as error:
            pushed, status = 0, error.code().name
        return self._record(RoundReport(number, status == "ok", status, loss, steps, train_s, pulled, pushed))

    def _deltas(self, start: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: self.trainer.get_variable(name) - start[name] for name in self.variables}

    @staticmethod
    def _clipped(deltas: dict[str, np.ndarray], clip_norm: float) -> dict[str, np.ndarray]:
        if clip_norm <= 0:
            return deltas
        from cloudsplit.privacy import clip_update

        return clip_update(deltas, clip_norm)[0]

    # -- a secure round ----------------------------------------------------------------------------

    def serve_secure_round(self, reply: pb.JoinRoundReply) -> RoundReport:
        """A round under secure aggregation; a refusal by the server or a protocol message this
        client will not follow ends its part in the round (the server drops it)."""
        from cloudsplit.secagg import SecAggError

        number, pulled, pushed, loss, steps, train_s = reply.round, 0, 0, math.nan, 0, 0.0
        session = None
        try:
            session = self.secure_setup(number)
            start, pulled = self.pull(number)
            began = time.perf_counter()
            loss, steps = self.train_locally(start, reply)
            train_s = time.perf_counter() - began
            _, pushed = self.secure_push(number, session, self._deltas(start), reply.clip_norm)
            self.secure_reveal(number, session)
            status = "ok"
        except grpc.RpcError as error:
            status = error.code().name
        except (SecAggError, TimeoutError) as error:   # this client stops; the server drops it
            status = f"secagg: {error}"
        sent, received = (session.bytes_sent, session.bytes_received) if session is not None else (0, 0)
        return self._record(RoundReport(number, status == "ok", status, loss, steps, train_s, pulled, pushed,
                                        sent, received))

    def wait_stage(self, number: int, stage: int, timeout_s: float = CALL_TIMEOUT_S) -> pb.SecAggStageReply:
        """The server's answer once ``stage`` of round ``number`` is complete."""
        end = time.monotonic() + timeout_s
        while True:
            reply = self.stub.WaitSecAggStage(pb.SecAggStageRequest(auth=self.auth, round=number, stage=stage,
                                                                    wait_s=JOIN_WAIT_S),
                                              timeout=JOIN_WAIT_S + CALL_TIMEOUT_S, metadata=self.metadata)
            if reply.ready:
                return reply
            if time.monotonic() > end:
                raise TimeoutError(f"stage {pb.SecAggStage.Name(stage)} of round {number} did not complete "
                                   f"in {timeout_s:g} s")

    def secure_setup(self, number: int):
        """Advertises keys, sends the sealed shares and takes the others'; returns the round's
        ``secagg.ClientSession`` (which counts the protocol's message bytes)."""
        from cloudsplit import secagg

        session = secagg.ClientSession(self.client_id, secagg.round_context(self.job_id, number))
        cipher_key, mask_key = session.advertise()
        advert = pb.AdvertiseKeysRequest(auth=self.auth, round=number, cipher_public_key=cipher_key,
                                         mask_public_key=mask_key)
        self.stub.AdvertiseKeys(advert, timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        keys = self.wait_stage(number, pb.SECAGG_KEYS)
        participants = [secagg.Participant(p.client_id, p.cipher_public_key, p.mask_public_key)
                        for p in keys.participants]
        sealed = session.share(participants, keys.threshold)
        request = pb.ShareKeysRequest(auth=self.auth, round=number, shares=[
            pb.EncryptedShare(sender=self.client_id, recipient=recipient, ciphertext=blob)
            for recipient, blob in sealed.items()])
        self.stub.ShareKeys(request, timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        held = self.wait_stage(number, pb.SECAGG_SHARES)
        if any(item.recipient != self.client_id for item in held.shares):
            raise secagg.SecAggError("the server delivered shares sealed for another client")
        session.receive(list(held.holders), {item.sender: item.ciphertext for item in held.shares})
        session.bytes_sent += advert.ByteSize() + request.ByteSize()
        session.bytes_received += keys.ByteSize() + held.ByteSize()
        return session

    def secure_vector(self, deltas: dict[str, np.ndarray], clip_norm: float = 0.0) -> np.ndarray:
        """The update a secure round sums: [weight * delta (all variables, flattened), weight] in
        fixed point; the weight is the sample count, or 1 with clipping."""
        from cloudsplit import secagg

        deltas = self._clipped(deltas, clip_norm)
        weight = 1.0 if clip_norm > 0 else float(self.num_samples)
        flat = np.concatenate([np.asarray(deltas[name], np.float64).ravel() for name in self.variables] + [[1.0]])
        return secagg.encode_fixed(weight * flat)

    def secure_push(self, number: int, session, deltas: dict[str, np.ndarray],
                    clip_norm: float = 0.0) -> tuple[pb.PushUpdateReply, int]:
        masked = session.mask(self.secure_vector(deltas, clip_norm))
        return self.push_masked(number, masked)

    def push_masked(self, number: int, masked: np.ndarray) -> tuple[pb.PushUpdateReply, int]:
        tensor = transfer.encode_tensor(0, np.asarray(masked, np.uint64).view(np.int64), "none")
        return self._push_tensors(number, [tensor], num_samples=0)

    def secure_reveal(self, number: int, session) -> int:
        """Reveals the shares the server needs once the masked updates are in."""
        outcome = self.wait_stage(number, pb.SECAGG_MASKED)
        seeds, keys = session.reveal(list(outcome.survivors), list(outcome.dropped))
        request = pb.RevealSharesRequest(
            auth=self.auth, round=number,
            self_seed_shares=[pb.RevealedShare(owner=owner, share=share) for owner, share in seeds.items()],
            mask_key_shares=[pb.RevealedShare(owner=owner, share=share) for owner, share in keys.items()])
        self.stub.RevealShares(request, timeout=CALL_TIMEOUT_S, metadata=self.metadata)
        session.bytes_sent += request.ByteSize()
        session.bytes_received += outcome.ByteSize()

    def _record(self, report: RoundReport) -> RoundReport:
        self.reports.append(report)
        return report


def main(argv=None) -> int:
    """``python -m cloudsplit.federated --server HOST:PORT --job ID --model M.edge --data D.npz``:
    one client in its own process (the .npz holds "x" and "y")."""
    parser = argparse.ArgumentParser(prog="python -m cloudsplit.federated")
    parser.add_argument("--server", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    security.add_token_arguments(parser, "the server's")
    security.add_client_tls_arguments(parser)
    parser.add_argument("--compression", default="none", choices=MODES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-delay-s", type=float, default=0.0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    with np.load(args.data) as data:
        x, y = data["x"], data["y"]
    with Client(args.model, args.server, (x, y), args.job, token=security.read_token(args.token_file),
                tls=security.client_tls_from_args(args), compression=args.compression,
                seed=args.seed, step_delay_s=args.step_delay_s) as client:
        client.connect()
        print(f"client {client.client_id} connected", flush=True)
        for report in client.run(timeout_s=args.timeout_s):
            print(f"round {report.round}: {report.status} loss {report.loss:.4f} {report.steps} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

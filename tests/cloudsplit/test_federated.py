"""Federated averaging over real gRPC on 127.0.0.1: convergence on non-IID digits, drop-outs and
stragglers, the refusals of bad updates, and the device client's imports.

Clients are threads with their own channels (one process) except in the drop-out test, where they
are separate processes and one is killed with SIGKILL in the middle of a round. Every job has a
bound on its rounds and every wait a timeout.
"""
from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from cloudsplit import privacy, transfer
from cloudsplit.federated import Client
from cloudsplit.federated_service import FederatedOptions, JobConfig
from cloudsplit.protos import split_pb2, training_pb2 as pb
from cloudsplit.server import start_server
from tests.fixtures import federated

REPO = pathlib.Path(__file__).resolve().parents[2]

# Rounds to the held-out targets on the non-IID split, FedAvg E=5 B=10 C=0.25 at the benchmark's best
# rate (0.3), measured with benchmarks/train_federated.py over seeds 0-10 (benchmarks/README.md,
# "Federated averaging"): 90 % at 18-29 rounds, 95 % at 39-57 (this test's seed 0: 24 and 39; a
# seed gives the same run every time). The bounds leave room for a change of seed or of the
# sampling; FedSGD at its best rate took 43-58 rounds to 90 %, past the first bound.
FEDAVG_LR = 0.3
ROUNDS_TO_90 = 40
ROUNDS_TO_95 = 100


@pytest.fixture(scope="module")
def digits_data():
    return federated.flat_digits()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return federated.federated_mlp(tmp_path_factory.mktemp("federated") / "mlp.edge")


def test_non_iid_split_gives_two_classes_to_each_client_and_every_sample_once(digits_data):
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)
    assert len(shards) == federated.CLIENTS
    assert all(len(np.unique(sy)) == 2 for _, sy in shards)
    assert sum(len(sy) for _, sy in shards) == len(y)
    rows = np.concatenate([sx for sx, _ in shards])
    assert len(np.unique(rows, axis=0)) == len(np.unique(x, axis=0))


def test_fedavg_on_non_iid_digits_reaches_90_then_95_percent(model_path, digits_data):
    x, y, x_test, y_test = digits_data
    config = JobConfig(strategy="fedavg", epochs=5, batch_size=10, learning_rate=FEDAVG_LR, fraction=0.25,
                       min_clients=3,
                       wait_for_clients=federated.CLIENTS, round_timeout_s=30, rounds=ROUNDS_TO_95,
                       target_accuracy=0.95)
    with start_server(federated=True) as handle:
        job, clients, _ = federated.run_federation(handle, model_path, federated.non_iid_split(x, y), config,
                                                   (x_test, y_test), timeout_s=240)
        status = job.status()
    assert status.state == "finished"
    history = list(status.history)
    assert all(r.sampled == 5 and r.updates == 5 and r.applied for r in history)
    assert status.late == 0 and status.refused == 0
    assert history[0].val_accuracy < 0.6    # it starts far from the targets
    to_90, to_95 = federated.rounds_to(history, 0.90), federated.rounds_to(history, 0.95)
    assert to_90 is not None and to_90 <= ROUNDS_TO_90, [round(r.val_accuracy, 3) for r in history]
    assert to_95 is not None and to_95 <= ROUNDS_TO_95
    # The job stopped at its target; every client served rounds and the server's count agrees.
    assert history[-1].round == to_95
    assert sum(len(c.reports) for c in clients) == status.updates == 5 * len(history)


def test_same_seed_same_clients_same_weights(model_path, digits_data):
    """Sampling follows the seed and the order of connection (not the random client ids), so a job
    run twice samples the same clients and ends with the same weights."""
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)
    runs = []
    for _ in range(2):
        config = JobConfig(fraction=0.25, min_clients=3, wait_for_clients=federated.CLIENTS, rounds=3, seed=5,
                           learning_rate=FEDAVG_LR)
        with start_server(federated=True) as handle:
            job, clients, _ = federated.run_federation(handle, model_path, shards, config, None, timeout_s=60)
        served = [[k for k, c in enumerate(clients) if any(r.round == n for r in c.reports)] for n in (1, 2, 3)]
        runs.append((served, job.global_weights()))
    assert runs[0][0] == runs[1][0] and all(len(s) == 5 for s in runs[0][0])
    assert runs[0][0][0] != runs[0][0][1]
    for name, value in runs[0][1].items():
        np.testing.assert_array_equal(value, runs[1][1][name])


def test_slow_client_past_the_deadline_does_not_stall_rounds(model_path, digits_data):
    x, y, x_test, y_test = digits_data
    shards = federated.non_iid_split(x, y)[:4]
    timeout = 1.0
    # 5 epochs of ~7 batches: ~35 steps, 2 s at 60 ms a step for the slow one.
    config = JobConfig(fraction=1.0, min_clients=3, wait_for_clients=4, round_timeout_s=timeout, rounds=3,
                       learning_rate=0.1)
    with start_server(federated=True) as handle:
        job, clients, wall = federated.run_federation(handle, model_path, shards, config, (x_test, y_test),
                                                      timeout_s=60,
                                                      clients_kwargs=[{}, {}, {}, {"step_delay_s": 0.06}])
        status = job.status()
    assert status.state == "finished" and status.round == 3
    assert [r.applied for r in status.history] == [True, True, True]
    assert all(r.updates == 3 and r.duration_s < timeout + 0.5 for r in status.history)
    slow = clients[3]
    assert slow.reports and all(r.status == "FAILED_PRECONDITION" and not r.pushed for r in slow.reports)
    assert status.late == len(slow.reports)
    assert wall < 3 * (timeout + 0.5) + 10


def _write_shard(folder: pathlib.Path, k: int, shard) -> str:
    path = folder / f"client{k}.npz"
    np.savez(path, x=shard[0], y=shard[1])
    return str(path)


def test_client_process_killed_mid_round_does_not_stall_rounds(model_path, digits_data, tmp_path):
    x, y, x_test, y_test = digits_data
    shards = federated.non_iid_split(x, y)[:3]
    timeout = 3.0
    config = JobConfig(fraction=1.0, min_clients=2, wait_for_clients=3, round_timeout_s=timeout, rounds=3,
                       learning_rate=0.1)
    with start_server(federated=True) as handle, open(model_path, "rb") as f:
        job = handle.federated.start_job(f.read(), config, validation=(x_test, y_test))
        processes = []
        try:
            for k, shard in enumerate(shards):
                # The victim's steps are slow enough (35 x 0.2 s) to be killed while it trains.
                delay = ["--step-delay-s", "0.2"] if k == 2 else []
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "cloudsplit.federated", "--server", handle.address, "--job", job.job_id,
                     "--model", model_path, "--data", _write_shard(tmp_path, k, shard), "--seed", str(k),
                     "--timeout-s", "60", *delay],
                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            victim = processes[2]
            victim_id = victim.stdout.readline().split()[1]   # "client <id> connected"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                current = job.round
                if current is not None and not current.closed and victim_id in current.pulled:
                    break
                time.sleep(0.02)
            else:
                pytest.fail("the victim never pulled the weights of an open round")
            killed_in = current.number
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            assert job.wait(60), "the job did not finish"
            outputs = [p.communicate(timeout=60)[0] for p in processes[:2]]
        finally:
            for p in processes:
                if p.poll() is None:
                    p.kill()
                    p.wait(10)
        status = job.status()
    assert status.state == "finished" and status.round == 3, outputs
    assert all(r.applied and r.updates >= 2 for r in status.history)
    killed = status.history[killed_in - 1]
    assert killed.updates == 2 and killed.duration_s == pytest.approx(timeout, abs=1.0)
    assert all(p.returncode == 0 for p in processes[:2]), outputs


class _Round1:
    """A job of two clients, both sampled for round 1, with a server token."""

    TOKEN = "federated-test-token"

    def __init__(self, handle, model_path, digits_data, rounds: int = 2, **config):
        x, y, _, _ = digits_data
        shards = federated.non_iid_split(x, y)[:2]
        with open(model_path, "rb") as f:
            self.job = handle.federated.start_job(f.read(), JobConfig(
                fraction=1.0, min_clients=2, wait_for_clients=2, round_timeout_s=60, rounds=rounds, learning_rate=0.1,
                **config))
        self.initial = self.job.global_weights()
        # 1 KiB chunks: every weight matrix travels in several (8 KiB for the hidden layer's).
        self.clients = [Client(model_path, handle.address, shard, self.job.job_id, token=self.TOKEN, seed=k,
                               chunk_bytes=1024) for k, shard in enumerate(shards)]
        for client in self.clients:
            client.connect()
        self.replies = [self._join(c) for c in self.clients]
        assert all(r.selected and r.round == 1 for r in self.replies)

    @staticmethod
    def _join(client):
        for _ in range(20):
            reply = client.join(1.0)
            if reply.selected:
                return reply
        raise AssertionError("not sampled")

    def delta(self, k: int) -> dict[str, np.ndarray]:
        client = self.clients[k]
        start, _ = client.pull(1)
        client.train_locally(start, self.replies[k])
        return {name: client.trainer.get_variable(name) - start[name] for name in client.variables}

    def close(self):
        for client in self.clients:
            client.close()


def _refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_bad_updates_are_refused_with_their_status_and_leave_the_round_as_it_was(model_path, digits_data):
    with start_server(federated=FederatedOptions(chunk_bytes=1024), token=_Round1.TOKEN) as handle:
        setup = _Round1(handle, model_path, digits_data)
        try:
            a, b = setup.clients
            good_a, good_b = setup.delta(0), setup.delta(1)
            names = a.variables
            wrong_shape = {**good_a, names[0]: np.zeros((3, 3), np.float32)}
            assert _refused(lambda: a.push(1, wrong_shape)) == grpc.StatusCode.INVALID_ARGUMENT
            non_finite = {**good_a, names[1]: np.full_like(good_a[names[1]], np.nan)}
            assert _refused(lambda: a.push(1, non_finite)) == grpc.StatusCode.INVALID_ARGUMENT
            for stale in (0, 2, 7):
                assert _refused(lambda: a.push(stale, good_a)) == grpc.StatusCode.FAILED_PRECONDITION
            # Chunks that do not follow their header (the second starts at the wrong byte).
            tensors = [transfer.encode_tensor(i, good_a[name], "none") for i, name in enumerate(names)]
            header = pb.UpdateHeader(auth=a.auth, round=1, num_samples=a.num_samples, tensors=[h for h, _ in tensors])
            first_bytes = tensors[0][1][:1024]
            misframed = [pb.UpdateMessage(header=header),
                         pb.UpdateMessage(chunk=split_pb2.TensorChunk(tensor_index=0, offset=0, data=first_bytes)),
                         pb.UpdateMessage(chunk=split_pb2.TensorChunk(tensor_index=0, offset=2048, data=first_bytes))]
            assert _refused(lambda: a.stub.PushUpdate(iter(misframed), metadata=a.metadata, timeout=10)) \
                == grpc.StatusCode.INVALID_ARGUMENT
            # A wrong client secret, and no server token at all.
            stranger = Client(model_path, handle.address, (np.zeros((1, 64), np.float32), np.zeros(1, np.int32)),
                              setup.job.job_id, token=_Round1.TOKEN)
            stranger.auth, stranger.variables = pb.ClientAuth(job_id=setup.job.job_id, client_id=a.client_id,
                                                              client_secret="0" * 32), names
            assert _refused(lambda: stranger.push(1, good_a)) == grpc.StatusCode.UNAUTHENTICATED
            assert _refused(lambda: stranger.pull(1)) == grpc.StatusCode.UNAUTHENTICATED
            stranger.auth = pb.ClientAuth(job_id=setup.job.job_id, client_id="made-up", client_secret="0" * 32)
            assert _refused(lambda: stranger.push(1, good_a)) == grpc.StatusCode.UNAUTHENTICATED
            stranger.auth, stranger.metadata = a.auth, ()
            assert _refused(lambda: stranger.push(1, good_a)) == grpc.StatusCode.UNAUTHENTICATED
            stranger.close()
            status = setup.job.status()
            assert (status.round, status.updates, status.refused, status.late) == (1, 0, 6, 0)
            assert not setup.job.round.closed
            reply, _ = a.push(1, good_a)
            assert reply.updates_in_round == 1
            assert _refused(lambda: a.push(1, good_a)) == grpc.StatusCode.ALREADY_EXISTS
            assert setup.job.status().updates == 1 and not setup.job.round.closed
            b.push(1, good_b)
            deadline = time.monotonic() + 10
            while setup.job.status().applied_rounds < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            # The round applied the two good updates and nothing else, weighted by sample count.
            na, nb = a.num_samples, b.num_samples
            after = setup.job.global_weights()
            for name in names:
                expected = setup.initial[name] + (na * good_a[name] + nb * good_b[name]) / (na + nb)
                np.testing.assert_allclose(after[name], expected, rtol=1e-5, atol=1e-7)
            # A replay after the close is still a replay; the late push of a closed round is late.
            assert _refused(lambda: a.push(1, good_a)) == grpc.StatusCode.ALREADY_EXISTS
        finally:
            setup.close()


def test_fedsgd_round_applies_the_weighted_mean_gradient_step(model_path, digits_data):
    """FedSGD's aggregate is -lr * (the sample-weighted mean of the clients' full-data gradients),
    the gradients taken from the model's own grad signature."""
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:2]
    lr = 0.5
    with start_server(federated=True) as handle, open(model_path, "rb") as f:
        job = handle.federated.start_job(f.read(), JobConfig(strategy="fedsgd", learning_rate=lr, fraction=1.0,
                                                             min_clients=2, wait_for_clients=2, rounds=1))
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        threads = [threading.Thread(target=c.run, kwargs=dict(timeout_s=30)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(40)
        assert job.wait(10)
        after = job.global_weights()
        grad = clients[0].trainer.interpreter.get_signature_runner("grad")
        gradients = []
        for client, (sx, sy) in zip(clients, shards):
            for name, value in initial.items():
                client.trainer.set_variable(name, value)
            gradients.append(grad(pixels=sx, labels=sy))
        for c in clients:
            c.close()
    counts = [len(sy) for _, sy in shards]
    assert [r.steps for c in clients for r in c.reports] == [1, 1]
    for name in initial:
        mean = sum(n * g[f"grad/{name}"] for n, g in zip(counts, gradients)) / sum(counts)
        np.testing.assert_allclose(after[name] - initial[name], -lr * mean, rtol=1e-4, atol=1e-6)


def test_fedprox_term_keeps_local_weights_nearer_the_round_start(model_path, digits_data):
    x, y, _, _ = digits_data
    shard = federated.non_iid_split(x, y)[0]
    distances = []
    for mu in (0.0, 1.0, 10.0):
        with Client(model_path, "127.0.0.1:1", shard, "no-job", seed=0) as client:
            client.variables = list(client.trainer.trainable)
            start = {name: client.trainer.get_variable(name) for name in client.variables}
            client.train_locally(start, pb.JoinRoundReply(epochs=5, batch_size=10, learning_rate=0.1, prox_mu=mu))
            distances.append(sum(float(np.sum((client.trainer.get_variable(n) - start[n]) ** 2)) for n in start))
    assert distances[0] > distances[1] > distances[2] > 0


def test_device_client_imports_nothing_of_the_server_side():
    code = ("import sys, cloudsplit.federated; "
            "print([m for m in ('converter', 'onnx', 'ray', 'sklearn', 'cloudsplit.server', "
            "'cloudsplit.federated_service', 'cloudsplit.training') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_jobs_started_and_stopped_over_grpc_and_bad_job_requests_refused(model_path, digits_data, tmp_path):
    import hashlib

    from converter.api import convert
    from cloudsplit.protos import training_pb2_grpc
    from tests.fixtures.digits import digits_mlp

    _, _, x_test, y_test = digits_data
    np.savez(tmp_path / "held_out.npz", x=x_test, y=y_test)
    inference_only = tmp_path / "infer.edge"
    inference_only.write_bytes(convert(digits_mlp()).data)
    with open(model_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    options = FederatedOptions(data_root=str(tmp_path))
    with start_server([model_path, str(inference_only)], federated=options) as handle:
        channel = grpc.insecure_channel(handle.address)
        stub = training_pb2_grpc.FederatedStub(channel)
        status = stub.StartFederatedJob(pb.FederatedJobRequest(model_sha256=digest, name="digits", rounds=5,
                                                               min_clients=2, validation_path="held_out.npz"),
                                        timeout=30)
        assert (status.state, status.strategy, status.rounds, status.round) == ("waiting", "fedavg", 5, 0)
        assert stub.GetFederatedJob(pb.JobRef(job_id=status.job_id), timeout=10).name == "digits"
        bad = [pb.FederatedJobRequest(model_sha256=digest, strategy="fedmagic"),
               pb.FederatedJobRequest(model_sha256=digest, fraction=1.5),
               pb.FederatedJobRequest(model_sha256=digest, strategy="fedsgd", prox_mu=0.1),
               pb.FederatedJobRequest(model_sha256=digest, target_accuracy=0.9),
               pb.FederatedJobRequest(model_sha256=hashlib.sha256(inference_only.read_bytes()).hexdigest())]
        for request in bad:
            assert _refused(lambda: stub.StartFederatedJob(request, timeout=30)) == grpc.StatusCode.INVALID_ARGUMENT
        for request in (pb.FederatedJobRequest(model_sha256="ab" * 32),
                        pb.FederatedJobRequest(model_sha256=digest, validation_path="missing.npz")):
            assert _refused(lambda: stub.StartFederatedJob(request, timeout=30)) == grpc.StatusCode.NOT_FOUND
        assert _refused(lambda: stub.GetFederatedJob(pb.JobRef(job_id="nope"), timeout=10)) == grpc.StatusCode.NOT_FOUND
        assert _refused(lambda: stub.Connect(pb.ConnectRequest(job_id=status.job_id, num_samples=0), timeout=10)) \
            == grpc.StatusCode.INVALID_ARGUMENT
        stopped = stub.StopFederatedJob(pb.JobRef(job_id=status.job_id), timeout=30)
        assert stopped.state == "stopped"
        assert _refused(lambda: stub.Connect(pb.ConnectRequest(job_id=status.job_id, num_samples=5), timeout=10)) \
            == grpc.StatusCode.FAILED_PRECONDITION
        channel.close()


# -- differential privacy ----------------------------------------------------------------------------

# epsilon of `steps` rounds of the Gaussian mechanism with noise multiplier z on a Poisson sample of
# rate q, at delta, printed by Google's dp-accounting 0.6.0 (RdpAccountant(orders=privacy.ORDERS),
# SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps)), run in its own venv.
DP_ACCOUNTING_EPSILONS = [  # (q, z, steps, delta, epsilon)
    (0.25, 1.0, 50, 1e-5, 15.227043901821876), (0.25, 0.5, 100, 1e-5, 157.14155758022824),
    (0.25, 2.0, 200, 1e-3, 8.079864303183948), (0.01, 1.1, 10000, 1e-5, 5.6543080001495145),
    (1.0, 2.0, 10, 1e-5, 8.087861628831664), (0.004, 4.0, 10000, 1e-5, 0.383767042658125),
    (0.05, 0.8, 300, 1e-6, 11.881393859235143), (1.0, 2.0, 1, 1e-5, 2.1680106367839715),
    (0.25, 4.0, 100, 1e-5, 2.9405682298898688)]


@pytest.mark.parametrize("q, z, steps, delta, expected", DP_ACCOUNTING_EPSILONS)
def test_rdp_accountant_matches_the_dp_accounting_library(q, z, steps, delta, expected):
    accountant = privacy.RdpAccountant()
    accountant.add(q, z, steps)
    assert accountant.epsilon(delta) == pytest.approx(expected, rel=1e-9)


def test_rdp_of_the_unsampled_gaussian_is_mironovs_closed_form():
    """q = 1 is the plain Gaussian mechanism: RDP a / (2 z^2) at every order (Mironov 2017); the
    binomial sum at q just below 1 must approach it."""
    for order in (2, 3, 10, 64):
        assert privacy.rdp_subsampled_gaussian(1.0, 1.5, order) == order / (2 * 1.5 ** 2)
        assert privacy.rdp_subsampled_gaussian(1 - 1e-12, 1.5, order) == pytest.approx(order / (2 * 1.5 ** 2), rel=1e-6)
    assert privacy.rdp_subsampled_gaussian(0.0, 1.0, 8) == 0.0
    assert privacy.rdp_subsampled_gaussian(0.5, 0.0, 8) == float("inf")


def test_clip_update_bounds_the_norm_over_all_variables_and_keeps_small_updates():
    rng = np.random.default_rng(0)
    big = {"w": rng.normal(size=(8, 4)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    clipped, norm = privacy.clip_update(big, 0.5)
    after = np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in clipped.values()))
    assert norm > 0.5 and after == pytest.approx(0.5, rel=1e-6)
    np.testing.assert_allclose(clipped["w"] / big["w"], 0.5 / norm, rtol=1e-5)   # one scale for all
    small = {name: value * (0.1 / norm) for name, value in big.items()}
    kept, _ = privacy.clip_update(small, 0.5)
    for name in small:
        np.testing.assert_array_equal(kept[name], small[name])


def test_dp_round_clips_every_update_on_the_server_and_adds_noise_of_the_asked_scale(model_path, digits_data):
    """Two jobs of two clients that push unclipped deltas (one 100x too big) straight to the
    server. Without noise the applied step is the equal-weight mean of the clipped deltas exactly;
    with noise multiplier z it differs from that by N(0, (z C / 2)^2) per weight, and the status
    reports the epsilon of one round at q = 1."""
    clip, z = 0.5, 2.0
    steps = []
    for noise in (0.0, z):
        with start_server(federated=FederatedOptions(chunk_bytes=1024), token=_Round1.TOKEN) as handle:
            setup = _Round1(handle, model_path, digits_data, rounds=1, dp_clip_norm=clip, dp_noise_multiplier=noise)
            job = setup.job
            try:
                assert all(r.clip_norm == clip for r in setup.replies)
                deltas = [setup.delta(0), {n: 100 * v for n, v in setup.delta(1).items()}]
                for client, delta in zip(setup.clients, deltas):
                    client.push(1, delta)
                assert job.wait(30)
                status, after = job.status(), job.global_weights()
            finally:
                setup.close()
        clipped = [privacy.clip_update(d, clip)[0] for d in deltas]
        assert all(privacy.clip_update(d, clip)[1] > clip for d in deltas)   # both needed clipping
        names = list(after)
        step = np.concatenate([(after[n] - setup.initial[n]).ravel() for n in names]).astype(np.float64)
        mean = np.concatenate([((clipped[0][n] + clipped[1][n]) / 2).ravel() for n in names]).astype(np.float64)
        steps.append((step, mean, status))
    step, mean, status = steps[0]
    np.testing.assert_allclose(step, mean, rtol=1e-5, atol=1e-7)
    assert np.linalg.norm(step) <= clip * (1 + 1e-6)
    assert status.dp_clip_norm == clip and not status.HasField("dp_epsilon")
    step, mean, status = steps[1]
    noise = step - mean
    assert np.std(noise) == pytest.approx(z * clip / 2, rel=0.1) and abs(np.mean(noise)) < 0.05 * z * clip
    assert status.dp_noise_multiplier == z and status.history[0].samples == 2
    assert status.dp_epsilon == pytest.approx(2.1680106367839715, rel=1e-9)   # dp-accounting, q=1, z=2, 1 step
    assert status.history[0].dp_epsilon == status.dp_epsilon


def test_privacy_options_are_checked():
    for bad in (dict(dp_clip_norm=0.0), dict(dp_clip_norm=-1.0), dict(dp_noise_multiplier=1.0),
                dict(dp_clip_norm=1.0, dp_noise_multiplier=float("nan")), dict(dp_clip_norm=1.0, dp_delta=1.0),
                dict(secure_aggregation=True, min_clients=2, secagg_threshold=0.5), dict(secagg_stage_timeout_s=0.0),
                dict(secure_aggregation=True, min_clients=1)):
        with pytest.raises(ValueError):
            JobConfig(**bad).validate()

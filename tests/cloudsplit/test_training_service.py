"""The Training service and ``cloudsplit train`` over real gRPC on loopback.

One server (and one embedded Ray cluster, started by the first job) serves the whole module; jobs
are a small MLP on the digits for a few dozen steps. The server runs at most one job at a time, so
that a second job during a running one is refused, and each test waits for its job to end.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

# Ray imported the project's way (bound to loopback), before anything else imports it.
pytest.importorskip("cloudsplit.training").import_ray()

from cloudsplit.protos import split_pb2_grpc, training_pb2 as pb, training_pb2_grpc  # noqa: E402
from cloudsplit.server import start_server  # noqa: E402

# Every module that starts Ray runs on one xdist worker, one after another: two clusters
# starting at once on a 2-core machine slowed each past Ray's start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")
from cloudsplit.training_service import TrainingOptions  # noqa: E402
from tests.fixtures.digits import digits_mlp, load_digits_split, write_trainable  # noqa: E402

STEPS = 40
WAIT_S = 120
CHANCE = 0.1


class Setup:
    def __init__(self, folder):
        import hashlib

        from converter.api import convert

        x_train, y_train, x_test, y_test = load_digits_split()
        self.x_test, self.y_test = x_test.reshape(len(x_test), 64), y_test
        self.folder = folder
        self.model_path = write_trainable(digits_mlp(), folder / "mlp.train.edge", dynamic_batch=True,
                                          loss="cross_entropy", optimizer="adam", lr=3e-3)
        self.model_sha = hashlib.sha256(open(self.model_path, "rb").read()).hexdigest()
        plain = convert(digits_mlp()).data
        (folder / "plain.edge").write_bytes(plain)
        self.plain_sha = hashlib.sha256(plain).hexdigest()
        np.savez(folder / "train.npz", x=x_train.reshape(len(x_train), 64), y=y_train)
        np.savez(folder / "val.npz", x=self.x_test, y=y_test)
        np.savez(folder / "wrong_shape.npz", x=x_train, y=y_train)                      # [N, 8, 8, 1], not [N, 64]
        np.savez(folder / "labels_range.npz", x=x_train.reshape(len(x_train), 64), y=y_train + 5)
        np.savez(folder / "labels_count.npz", x=x_train.reshape(len(x_train), 64), y=y_train[:-7])
        np.savez(folder / "no_labels.npz", x=x_train.reshape(len(x_train), 64))
        (folder / "not_npz.npz").write_bytes(b"not a zip file")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("training-service"))


@pytest.fixture(scope="module")
def server(setup):
    handle = start_server([setup.model_path, setup.folder / "plain.edge"],
                          training=TrainingOptions(max_jobs=1, data_root=str(setup.folder), max_replicas=8))
    yield handle
    handle.stop(0)


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield training_pb2_grpc.TrainingStub(channel)
    channel.close()


def good_request(setup, **overrides) -> pb.StartJobRequest:
    fields = dict(model_sha256=setup.model_sha, data_path="train.npz", validation_path="val.npz", name="digits",
                  strategy="sync", replicas=2, steps=STEPS, batch_size=16, eval_every=20, report_every_s=0.2)
    fields.update(overrides)
    return pb.StartJobRequest(**fields)


def wait_ended(stub, job_id: str) -> pb.JobStatus:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status = stub.GetJob(pb.JobRef(job_id=job_id), timeout=10)
        if status.state in ("finished", "stopped", "failed"):
            return status
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not end within {WAIT_S} s")


def export_model(stub, job_id: str, path) -> None:
    chunks = list(stub.ExportModel(pb.ExportModelRequest(job_id=job_id), timeout=WAIT_S))
    assert chunks and chunks[0].total_bytes == sum(len(c.data) for c in chunks)
    path.write_bytes(b"".join(c.data for c in chunks))


def accuracy(setup, path) -> float:
    from edge.trainer import Trainer

    with Trainer(path) as trainer:
        return trainer.evaluate(setup.x_test, setup.y_test)["accuracy"]


def run_good_job(stub, setup, tmp_path) -> float:
    status = stub.StartJob(good_request(setup), timeout=WAIT_S)
    assert status.state == "running" and status.target_steps == STEPS
    messages = list(stub.WatchJob(pb.WatchJobRequest(job_id=status.job_id, from_start=True), timeout=WAIT_S))
    final = messages[-1]
    assert final.final and final.state == "finished", final
    assert final.step == STEPS
    export_model(stub, status.job_id, tmp_path / "trained.edge")
    return accuracy(setup, tmp_path / "trained.edge")


def test_job_trains_streams_and_exports(stub, setup, tmp_path):
    status = stub.StartJob(good_request(setup), timeout=WAIT_S)
    messages = list(stub.WatchJob(pb.WatchJobRequest(job_id=status.job_id, from_start=True), timeout=WAIT_S))
    final = messages[-1]
    assert final.final and final.state == "finished" and not final.error
    assert sum(m.final for m in messages) == 1
    assert final.step == STEPS and final.target_steps == STEPS
    assert final.updates >= STEPS and final.bytes_pushed > 0 and final.bytes_pulled > 0
    assert final.replicas_alive == 2 and sum(final.staleness.values()) > 0
    assert final.HasField("val_accuracy") and final.HasField("loss")
    steps = [m.step for m in messages]
    assert steps == sorted(steps)
    export_model(stub, status.job_id, tmp_path / "trained.edge")
    trained = accuracy(setup, tmp_path / "trained.edge")
    assert trained > CHANCE + 0.4, trained
    assert abs(trained - final.val_accuracy) < 1e-6
    listed = {job.job_id: job for job in stub.ListJobs(pb.ListJobsRequest(), timeout=10).jobs}
    assert listed[status.job_id].state == "finished" and listed[status.job_id].model_sha256 == setup.model_sha


def test_cancelled_watch_leaves_the_job_running(server, stub, setup, tmp_path):
    long_steps = 400
    status = stub.StartJob(good_request(setup, steps=long_steps, eval_every=0, report_every_s=0.1), timeout=WAIT_S)
    call = stub.WatchJob(pb.WatchJobRequest(job_id=status.job_id), timeout=WAIT_S)
    first = next(call)
    assert not first.final
    call.cancel()
    # While it runs, the server's one job slot is taken.
    with pytest.raises(grpc.RpcError) as refused:
        stub.StartJob(good_request(setup), timeout=WAIT_S)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 1" in refused.value.details()
    ended = wait_ended(stub, status.job_id)
    assert ended.state == "finished" and ended.step == long_steps, ended
    deadline = time.monotonic() + 10
    while server.training._watchers and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.training._watchers == 0


BAD_REQUESTS = {
    "unknown model": (dict(model_sha256="ab" * 32), grpc.StatusCode.NOT_FOUND, "not on this server"),
    "malformed hash": (dict(model_sha256="xyz"), grpc.StatusCode.INVALID_ARGUMENT, "64 hex digits"),
    "plain model": ("plain", grpc.StatusCode.INVALID_ARGUMENT, "not trainable"),
    "sample shape": (dict(data_path="wrong_shape.npz"), grpc.StatusCode.INVALID_ARGUMENT, "shape [8, 8, 1]"),
    "labels out of range": (dict(data_path="labels_range.npz"), grpc.StatusCode.INVALID_ARGUMENT, "class ids in [0, 10)"),
    "labels count": (dict(data_path="labels_count.npz"), grpc.StatusCode.INVALID_ARGUMENT, "labels"),
    "no labels": (dict(data_path="no_labels.npz"), grpc.StatusCode.INVALID_ARGUMENT, "no 'y' array"),
    "not npz": (dict(data_path="not_npz.npz"), grpc.StatusCode.INVALID_ARGUMENT, "not a .npz"),
    "missing data": (dict(data_path="absent.npz"), grpc.StatusCode.NOT_FOUND, "does not exist"),
    "outside data root": (dict(data_path="/etc/passwd"), grpc.StatusCode.INVALID_ARGUMENT, "outside"),
    "bad validation": (dict(validation_path="wrong_shape.npz"), grpc.StatusCode.INVALID_ARGUMENT, "validation data"),
    "negative lr": (dict(learning_rate=-0.1), grpc.StatusCode.INVALID_ARGUMENT, "learning rate"),
    "replicas 10000": (dict(replicas=10000), grpc.StatusCode.INVALID_ARGUMENT, "replicas"),
    "steps 0": (dict(steps=0), grpc.StatusCode.INVALID_ARGUMENT, "steps"),
    "no length": (dict(steps=None), grpc.StatusCode.INVALID_ARGUMENT, "steps and epochs"),
    "unknown strategy": (dict(strategy="gossip"), grpc.StatusCode.INVALID_ARGUMENT, "strategy"),
    "bad compression": (dict(compression="zip"), grpc.StatusCode.INVALID_ARGUMENT, "zip"),
    "backup workers": (dict(backup_workers=2), grpc.StatusCode.INVALID_ARGUMENT, "backup_workers"),
    "hybrid groups": (dict(strategy="hybrid", groups=3), grpc.StatusCode.INVALID_ARGUMENT, "groups"),
    "batch 0": (dict(batch_size=0), grpc.StatusCode.INVALID_ARGUMENT, "batch_size"),
    "unknown optimizer": (dict(optimizer="lion"), grpc.StatusCode.INVALID_ARGUMENT, "optimizer"),
    "target accuracy": (dict(target_accuracy=7.0), grpc.StatusCode.INVALID_ARGUMENT, "target_accuracy"),
    "batch too large": (dict(batch_size=100_000), grpc.StatusCode.INVALID_ARGUMENT, "global batch"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_is_refused_naming_the_problem(stub, setup, case):
    overrides, code, words = BAD_REQUESTS[case]
    if overrides == "plain":
        overrides = dict(model_sha256=setup.plain_sha)
    request = good_request(setup, **{k: v for k, v in overrides.items() if v is not None})
    for key, value in overrides.items():
        if value is None:
            request.ClearField(key)
    with pytest.raises(grpc.RpcError) as caught:
        stub.StartJob(request, timeout=WAIT_S)
    assert caught.value.code() == code, caught.value.details()
    assert words in caught.value.details(), caught.value.details()


@pytest.mark.parametrize("call", ["GetJob", "StopJob", "WatchJob", "ExportModel"])
def test_unknown_job_is_not_found(stub, call):
    request = {"GetJob": pb.JobRef, "StopJob": pb.JobRef, "WatchJob": pb.WatchJobRequest,
               "ExportModel": pb.ExportModelRequest}[call](job_id="nope")
    with pytest.raises(grpc.RpcError) as caught:
        result = getattr(stub, call)(request, timeout=10)
        list(result) if call in ("WatchJob", "ExportModel") else result
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in caught.value.details()


def test_service_still_trains_after_refusals(stub, setup, tmp_path):
    assert run_good_job(stub, setup, tmp_path) > CHANCE + 0.4


def test_stop_job_ends_it_early_and_keeps_its_parameters(stub, setup, tmp_path):
    status = stub.StartJob(good_request(setup, steps=5000, eval_every=0), timeout=WAIT_S)
    call = stub.WatchJob(pb.WatchJobRequest(job_id=status.job_id), timeout=WAIT_S)
    next(message for message in call if message.step > 0)
    export_model(stub, status.job_id, tmp_path / "snapshot.edge")   # a live checkpoint of the shards
    assert 0.0 <= accuracy(setup, tmp_path / "snapshot.edge") <= 1.0
    stub.StopJob(pb.JobRef(job_id=status.job_id), timeout=10)
    final = [m for m in call][-1]
    assert final.final and final.state == "stopped" and 0 < final.step < 5000
    export_model(stub, status.job_id, tmp_path / "stopped.edge")
    assert accuracy(setup, tmp_path / "stopped.edge") > CHANCE


def test_token_covers_the_training_service(setup):
    with start_server(setup.model_path, token="s3cret", training=TrainingOptions(data_root=str(setup.folder))) as handle:
        with grpc.insecure_channel(handle.address) as channel:
            stub = training_pb2_grpc.TrainingStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListJobs(pb.ListJobsRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.ListJobs(pb.ListJobsRequest(), timeout=10, metadata=(("authorization", "Bearer s3cret"),))
            assert list(reply.jobs) == []


def test_registered_model_is_trainable_by_hash(server, setup):
    """A model uploaded with RegisterModel is the one StartJob names (the registry is shared)."""
    from cloudsplit.protos import split_pb2

    data = open(setup.model_path, "rb").read()
    with grpc.insecure_channel(server.address) as channel:
        reply = split_pb2_grpc.SplitInferenceStub(channel).RegisterModel(
            iter([split_pb2.ModelChunk(model_sha256=setup.model_sha, total_bytes=len(data), data=data)]), timeout=30)
    assert reply.model_sha256 == setup.model_sha and server.training.registry.get(setup.model_sha) is not None


# -- cloudsplit train ------------------------------------------------------------------------------

def test_cli_trains_locally_and_writes_metrics_and_plot(setup, tmp_path, capsys):
    from cloudsplit.cli import main

    jsonl, plot, model = tmp_path / "metrics.jsonl", tmp_path / "curves.png", tmp_path / "out.edge"
    code = main(["train", setup.model_path, "--data", str(setup.folder / "train.npz"),
                 "--validation", str(setup.folder / "val.npz"), "--replicas", "2", "--ps", "2", "--steps", str(STEPS),
                 "--batch-size", "16", "--eval-every", "20", "--report-every", "0.2", "--quiet",
                 "--jsonl", str(jsonl), "--plot", str(plot), "--export", str(model)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "finished: step 40/40" in out
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert rows and rows[-1]["step"] == STEPS and rows[-1]["val_accuracy"] > CHANCE + 0.4
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert accuracy(setup, model) > CHANCE + 0.4


def test_cli_submits_to_a_server(server, setup, tmp_path, capsys):
    from cloudsplit.cli import main

    jsonl, model = tmp_path / "remote.jsonl", tmp_path / "remote.edge"
    code = main(["train", setup.model_path, "--server", server.address, "--data", "train.npz", "--validation",
                 "val.npz", "--steps", str(STEPS), "--batch-size", "16", "--eval-every", "20",
                 "--report-every", "0.2", "--quiet", "--jsonl", str(jsonl), "--export", str(model)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert rows[-1]["step"] == STEPS
    assert accuracy(setup, model) > CHANCE + 0.4


def test_cli_tensorboard_without_tensorboardx_is_refused_before_training(setup, monkeypatch, capsys):
    from cloudsplit.cli import main

    monkeypatch.setitem(sys.modules, "tensorboardX", None)   # as if it were not installed
    code = main(["train", setup.model_path, "--data", str(setup.folder / "train.npz"), "--steps", "5",
                 "--tensorboard", "runs"])
    assert code != 0 and "pip install tensorboardX" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--replicas", "0", "--steps", "10"], "replicas"),
    (["--steps", "10", "--lr", "-1"], "learning rate"),
    (["--steps", "10", "--strategy", "gossip"], "invalid choice"),
    (["--epochs", "1", "--compression", "zip"], "zip"),
])
def test_cli_bad_argument_exits_with_one_line(setup, args, words):
    result = subprocess.run([sys.executable, "-m", "cloudsplit.cli", "train", setup.model_path,
                             "--data", str(setup.folder / "train.npz"), "--quiet", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr, result.stderr

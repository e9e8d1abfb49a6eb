"""The service, secure by default: TLS and mutual TLS, the bearer token, and the loopback rule.

Real gRPC over loopback with certificates made in the test (tests/fixtures/certificates.py). Each
refusal is checked twice: the client gets the right status (UNAVAILABLE when the handshake fails,
UNAUTHENTICATED for a missing or wrong token), and the server ran nothing for it: its request
counters and its per-request hook did not move.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import grpc
import numpy as np
import pytest

from cloudsplit import security
from cloudsplit.client import SplitRunner
from cloudsplit.connection import ServerConnection
from cloudsplit.protos import split_learning_pb2, split_learning_pb2_grpc, training_pb2, training_pb2_grpc
from cloudsplit.security import ClientTLS, InsecureListenError, ServerTLS
from cloudsplit.server import start_server
from tests.cloudsplit.conftest import DevicePart
from tests.cloudsplit.test_client import fixed_cut, local_outputs
from tests.fixtures.certificates import make_pki

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUT = 2   # the mlp's first layer on the device, the rest on the server


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def server_tls(pki, issued=None, mutual=False) -> ServerTLS:
    issued = issued or pki.server
    return ServerTLS(issued.cert, issued.key, pki.ca.cert if mutual else None)


class Served:
    """A server with a hook that records every request that reached the split-inference code."""

    def __init__(self, model, **options):
        self.seen: list[str] = []
        self.handle = start_server([model.data], on_request=self.seen.append, **options)

    def counters(self) -> tuple:
        service = self.handle.service
        return len(self.seen), service.requests_run, service.admission.admitted, service.admission.refused

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.stop(0)


def infer(address, model, *, tls=None, token=None, timeout=10.0):
    header, tensors = DevicePart(model, CUT).request()
    connection = ServerConnection(address, token=token, tls=tls)
    try:
        return connection.infer(header, tensors, timeout=timeout)
    finally:
        connection.close()


def expected_logits(model) -> np.ndarray:
    return next(iter(DevicePart(model, CUT).local_outputs().values()))


def assert_refused(served: Served, model, code: grpc.StatusCode, **client):
    before = served.counters()
    with pytest.raises(grpc.RpcError) as caught:
        infer(served.handle.address, model, **client)
    assert caught.value.code() == code, caught.value.details()
    assert served.counters() == before, "the server ran something for a refused client"
    return caught.value


def test_tls_split_inference_answers_like_a_local_run(tmp_path, pki, mlp):
    with Served(mlp, tls=server_tls(pki)) as served:
        reply = infer(served.handle.address, mlp, tls=ClientTLS(ca_cert=pki.ca.cert))
        np.testing.assert_array_equal(next(iter(reply.outputs.values())), expected_logits(mlp))
        # By name instead of the address's IP: the certificate names both.
        reply = infer(f"localhost:{served.handle.port}", mlp, tls=ClientTLS(ca_cert=pki.ca.cert))
        np.testing.assert_array_equal(next(iter(reply.outputs.values())), expected_logits(mlp))

        path = mlp.write(tmp_path)
        with SplitRunner(path, served.handle.address, planner=fixed_cut(CUT), compression="none",
                         tls=ClientTLS(ca_cert=pki.ca.cert)) as runner:
            outputs = runner.run(mlp.feeds)
            assert runner.last_plan.offloaded, runner.last_plan.fallback_reason
        for name, value in local_outputs(mlp).items():
            np.testing.assert_array_equal(outputs[name], value)
        assert served.counters()[1] == 3


def test_mutual_tls_serves_a_client_with_a_certificate_from_its_ca(pki, mlp):
    with Served(mlp, tls=server_tls(pki, mutual=True)) as served:
        tls = ClientTLS(ca_cert=pki.ca.cert, client_cert=pki.client.cert, client_key=pki.client.key)
        reply = infer(served.handle.address, mlp, tls=tls)
        np.testing.assert_array_equal(next(iter(reply.outputs.values())), expected_logits(mlp))


@pytest.mark.parametrize("case", ["server cert from another CA", "client trusts another CA", "expired server cert",
                                  "plaintext client"])
def test_a_server_the_client_cannot_verify_is_refused_in_the_handshake(pki, mlp, case):
    issued = {"server cert from another CA": pki.foreign_server, "expired server cert": pki.expired_server}
    client = {"client trusts another CA": ClientTLS(ca_cert=pki.other_ca.cert), "plaintext client": None}
    with Served(mlp, tls=server_tls(pki, issued.get(case))) as served:
        assert_refused(served, mlp, grpc.StatusCode.UNAVAILABLE, tls=client.get(case, ClientTLS(ca_cert=pki.ca.cert)))


@pytest.mark.parametrize("case", ["no client cert", "client cert from another CA"])
def test_mutual_tls_refuses_a_client_without_a_certificate_from_its_ca(pki, mlp, case):
    certificate = {"client cert from another CA": pki.foreign_client}.get(case)
    tls = ClientTLS(ca_cert=pki.ca.cert, client_cert=certificate and certificate.cert,
                    client_key=certificate and certificate.key)
    with Served(mlp, tls=server_tls(pki, mutual=True)) as served:
        error = assert_refused(served, mlp, grpc.StatusCode.UNAVAILABLE, tls=tls)
        assert "handshake" in error.details().lower() or "ssl" in error.details().lower() \
            or "connect" in error.details().lower(), error.details()


def test_a_wrong_or_missing_token_is_unauthenticated_over_tls(pki, mlp):
    tls = ClientTLS(ca_cert=pki.ca.cert)
    with Served(mlp, tls=server_tls(pki), token="s3cret-token") as served:
        for token in (None, "s3cret-tokem", "s3cret-token-and-more", ""):
            assert_refused(served, mlp, grpc.StatusCode.UNAUTHENTICATED, tls=tls, token=token)
        reply = infer(served.handle.address, mlp, tls=tls, token="s3cret-token")
        np.testing.assert_array_equal(next(iter(reply.outputs.values())), expected_logits(mlp))


def test_tls_and_the_token_cover_every_hosted_service(pki, mlp):
    """The training-side services share the port: the same handshake, the same token."""
    with start_server([mlp.data], tls=server_tls(pki, mutual=True), token="t0ken", federated=True,
                      split_learning=True) as handle:
        good_tls = ClientTLS(ca_cert=pki.ca.cert, client_cert=pki.client.cert, client_key=pki.client.key)
        calls = {
            "federated": lambda channel, metadata: training_pb2_grpc.FederatedStub(channel).GetFederatedJob(
                training_pb2.JobRef(job_id="no-such-job"), timeout=10, metadata=metadata),
            "split learning": lambda channel, metadata: split_learning_pb2_grpc.SplitLearningStub(channel).Echo(
                split_learning_pb2.EchoRequest(payload=b"x"), timeout=10, metadata=metadata),
        }
        for name, call in calls.items():
            for tls, token, expected in ((ClientTLS(ca_cert=pki.ca.cert), "t0ken", grpc.StatusCode.UNAVAILABLE),
                                         (good_tls, "wrong", grpc.StatusCode.UNAUTHENTICATED),
                                         (good_tls, None, grpc.StatusCode.UNAUTHENTICATED)):
                with security.make_channel(handle.address, tls) as channel, \
                        pytest.raises(grpc.RpcError) as caught:
                    call(channel, security.bearer_metadata(token))
                assert caught.value.code() == expected, (name, caught.value.details())
            with security.make_channel(handle.address, good_tls) as channel:
                try:
                    call(channel, security.bearer_metadata("t0ken"))
                except grpc.RpcError as error:   # past the door: the service's own answer
                    assert error.code() == grpc.StatusCode.NOT_FOUND, (name, error.details())


def test_a_runner_that_cannot_verify_the_server_answers_from_the_device(tmp_path, pki, mlp):
    with Served(mlp, tls=server_tls(pki, pki.foreign_server)) as served:
        with SplitRunner(mlp.write(tmp_path), served.handle.address, planner=fixed_cut(CUT),
                         tls=ClientTLS(ca_cert=pki.ca.cert), connect_timeout_s=5) as runner:
            outputs = runner.run(mlp.feeds)
            assert not runner.last_plan.offloaded
        assert served.counters()[:3] == (0, 0, 0)
    for name, value in local_outputs(mlp).items():
        np.testing.assert_array_equal(outputs[name], value)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"])
def test_loopback_addresses(host):
    assert security.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "", "10.1.2.3", "192.0.2.7", "fe80::1", "example.com",
                                  "localhost.example.com"])
def test_non_loopback_addresses(host):
    assert not security.is_loopback(host)


def test_a_plaintext_server_beyond_loopback_refuses_to_start_before_it_binds(pki, mlp):
    # 192.0.2.7 (TEST-NET-1) is on no interface: a bind there would fail with OSError, so the
    # InsecureListenError shows the refusal came first.
    with pytest.raises(InsecureListenError, match="--tls-cert and --tls-key .* --insecure"):
        start_server([mlp.data], host="192.0.2.7")
    with pytest.raises(InsecureListenError):
        start_server([mlp.data], host="0.0.0.0")
    with pytest.raises(OSError, match="cannot listen"):   # allowed, so it gets as far as the bind
        start_server([mlp.data], host="192.0.2.7", insecure=True)
    with pytest.raises(OSError, match="cannot listen"):
        start_server([mlp.data], host="192.0.2.7", tls=server_tls(pki))


def test_a_key_that_does_not_match_the_certificate_stops_the_start(pki, mlp):
    with pytest.raises(OSError, match="not a matching PEM pair"):
        start_server([mlp.data], tls=ServerTLS(pki.server.cert, pki.client.key))


def cli(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cloudsplit.cli", *argv], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_serve_refuses_a_token_on_the_command_line_and_plaintext_beyond_loopback(tmp_path, mlp):
    mlp.write(tmp_path)
    for argv in (["--token", "s3cret"], ["--token=s3cret"]):
        done = cli("serve", "--models", str(tmp_path), "--port", "0", *argv)
        assert done.returncode != 0 and "--token is not accepted" in done.stderr and "--token-file" in done.stderr
    done = cli("serve", "--models", str(tmp_path), "--port", "0", "--host", "0.0.0.0")
    assert done.returncode == 1 and "refusing to listen on 0.0.0.0 without TLS" in done.stderr, done.stderr
    done = cli("serve", "--models", str(tmp_path), "--port", "0", "--client-ca", "ca.pem")
    assert done.returncode == 1 and "--client-ca needs TLS" in done.stderr, done.stderr


def test_read_token(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("  from-a-file\n")
    monkeypatch.setenv(security.TOKEN_ENV, "from-the-environment")
    assert security.read_token(tmp_path / "token") == "from-a-file"
    assert security.read_token() == "from-the-environment"
    monkeypatch.delenv(security.TOKEN_ENV)
    assert security.read_token() is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        security.read_token(tmp_path / "empty")
    monkeypatch.setenv(security.TOKEN_ENV, " ")
    with pytest.raises(ValueError, match="empty"):
        security.read_token()


class ServeProcess:
    """``cloudsplit serve`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, argv, env=None):
        self.process = subprocess.Popen([sys.executable, "-m", "cloudsplit.cli", "serve", "--port", "0", *argv],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                        env=env)
        self.banner = ""
        for line in self.process.stdout:
            self.banner += line
            match = re.search(r"listening on \S+:(\d+)(.*)", line)
            if match:
                self.port, self.mode = int(match.group(1)), match.group(2)
                break
        else:
            raise AssertionError(f"cloudsplit serve did not start:\n{self.banner}")
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


@pytest.mark.parametrize("source", ["file", "environment"])
def test_serve_over_mutual_tls_with_the_token_from_a_file_or_the_environment(tmp_path, pki, mlp, source):
    models = tmp_path / "models"
    models.mkdir()
    mlp.write(models)
    cert, key = pki.server.write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(pki.ca.cert)
    (tmp_path / "token").write_text("file-token\n")
    env = {k: v for k, v in os.environ.items() if k != security.TOKEN_ENV}
    argv = ["--models", str(models), "--tls-cert", str(cert), "--tls-key", str(key), "--client-ca",
            str(tmp_path / "ca.pem")]
    if source == "file":
        argv += ["--token-file", str(tmp_path / "token")]
        token = "file-token"
    else:
        env[security.TOKEN_ENV] = token = "environment-token"
    with ServeProcess(argv, env=env) as served:
        assert "over mutual TLS" in served.mode and "token required" in served.mode, served.banner
        address = f"127.0.0.1:{served.port}"
        tls = ClientTLS.from_files(tmp_path / "ca.pem", *pki.client.write(tmp_path, "client"))
        reply = infer(address, mlp, tls=tls, token=token)
        np.testing.assert_array_equal(next(iter(reply.outputs.values())), expected_logits(mlp))
        for wrong in ("file-token" if source == "environment" else "environment-token", None):
            with pytest.raises(grpc.RpcError) as caught:
                infer(address, mlp, tls=tls, token=wrong)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            infer(address, mlp, tls=ClientTLS(ca_cert=pki.ca.cert), token=token)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

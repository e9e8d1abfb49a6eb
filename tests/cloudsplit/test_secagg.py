"""Secure aggregation: the protocol's pieces (Shamir shares, masks that cancel, what a client
refuses to reveal), then whole rounds over real gRPC on 127.0.0.1: the unmasked aggregate against
the plain weighted sum of the clients' deltas, a client that drops after masking, what the server
holds while and after a round runs, and the refusals of bad protocol messages.

Clients are threads with their own channels. The stages that wait for every sampled client (keys,
shares, reveals) run in threads; pushes are made one by one from the test so that the server's
state can be read after each. Every wait has a timeout.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

import grpc
import numpy as np
import pytest

from cloudsplit import secagg, transfer
from cloudsplit.federated import Client
from cloudsplit.federated_service import FederatedJob, JobConfig
from cloudsplit.protos import split_pb2, training_pb2 as pb
from cloudsplit.server import start_server
from tests.fixtures import federated

LR = 0.3


@pytest.fixture(scope="module")
def digits_data():
    return federated.flat_digits()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return federated.federated_mlp(tmp_path_factory.mktemp("secagg") / "mlp.edge")


# -- the protocol's pieces ---------------------------------------------------------------------------

def test_shamir_any_threshold_shares_give_the_secret_and_fewer_do_not():
    secret = bytes(range(32))
    shares = secagg.shamir_split(secret, threshold=3, count=5)
    points = {x: share for x, share in enumerate(shares, start=1)}
    for chosen in ((1, 2, 3), (2, 4, 5), (1, 3, 5), (3, 4, 5)):
        assert secagg.shamir_combine({x: points[x] for x in chosen}, 3) == secret
    with pytest.raises(secagg.SecAggError):
        secagg.shamir_combine({1: points[1], 2: points[2]}, 3)
    # Two shares interpolated as if the threshold were 2 give something else (or nothing of the size).
    try:
        assert secagg.shamir_combine({1: points[1], 2: points[2]}, 2) != secret
    except secagg.SecAggError:
        pass


def test_fixed_point_round_trip_and_range():
    values = np.array([0.0, 1.5, -2.25, 1e-7, -123456.789])
    np.testing.assert_allclose(secagg.decode_fixed(secagg.encode_fixed(values)), values, atol=2 ** -25)
    # Negative values wrap in the ring and come back: the sum of encodings decodes to the sum.
    a, b = np.array([-3.0, 5.0]), np.array([1.0, -7.5])
    np.testing.assert_allclose(secagg.decode_fixed(secagg.encode_fixed(a) + secagg.encode_fixed(b)), a + b)
    for bad in (np.array([np.nan]), np.array([2.0 ** 40])):
        with pytest.raises(secagg.SecAggError):
            secagg.encode_fixed(bad)


def _sessions(ids, threshold, context=b"test|1"):
    """The key and share stages between in-process sessions, the server's part by ServerRound."""
    sessions = {c: secagg.ClientSession(c, context) for c in ids}
    server = secagg.ServerRound(context, frozenset(ids), threshold, 9)
    for c in ids:
        server.add_keys(c, *sessions[c].advertise())
    participants = server.close_keys()
    for c in ids:
        server.add_shares(c, sessions[c].share(participants, threshold))
    server.close_shares(list(ids))
    for c in ids:
        sessions[c].receive(server.holders, server.inbox(c))
    return sessions, server


def test_masked_vectors_look_random_and_their_masks_cancel_only_in_the_sum():
    ids = ["a", "b", "c"]
    sessions, server = _sessions(ids, 2)
    updates = {c: secagg.encode_fixed(np.full(9, k + 1.0)) for k, c in enumerate(ids)}
    masked = {c: sessions[c].mask(updates[c]) for c in ids}
    for c in ids:
        assert not np.any(masked[c] == updates[c])
    # Without the self masks the pair masks cancel: the sum of y minus the self masks is the sum of x.
    total = sum(masked.values())
    for c in ids:
        server.add_masked(c, masked[c])
    server.close_masked()
    for c in ids:
        server.add_reveal(c, *sessions[c].reveal(server.survivors, server.dropped))
    np.testing.assert_array_equal(secagg.decode_fixed(server.unmask()), np.full(9, 6.0))
    assert not np.array_equal(secagg.decode_fixed(total), np.full(9, 6.0))


def test_a_client_never_reveals_both_secrets_of_one_client_or_below_the_threshold():
    ids = ["a", "b", "c", "d"]
    sessions, _ = _sessions(ids, 3)
    a = sessions["a"]
    with pytest.raises(secagg.SecAggError, match="both secrets"):
        a.reveal(["a", "b", "c"], ["c", "d"])
    with pytest.raises(secagg.SecAggError, match="below the threshold"):
        a.reveal(["a", "b"], ["c", "d"])
    with pytest.raises(secagg.SecAggError, match="did not hold shares"):
        a.reveal(["a", "b", "c", "e"], ["d"])
    seeds, keys = a.reveal(["a", "b", "c"], ["d"])
    assert set(seeds) == {"a", "b", "c"} and set(keys) == {"d"}
    with pytest.raises(secagg.SecAggError, match="already revealed"):
        a.reveal(["a", "b", "c"], ["d"])


def test_a_share_sealed_for_another_pair_or_altered_is_refused():
    ids = ["a", "b", "c"]
    sessions = {c: secagg.ClientSession(c, b"ctx") for c in ids}
    participants = [secagg.Participant(c, *sessions[c].advertise()) for c in ids]
    sealed = {c: sessions[c].share(participants, 2) for c in ids}
    inbox = {sender: sealed[sender]["a"] for sender in ids}
    swapped = {**inbox, "b": sealed["b"]["c"]}          # b's share for c, handed to a
    with pytest.raises(secagg.SecAggError, match="does not decrypt"):
        sessions["a"].receive(ids, swapped)
    altered = {**inbox, "c": inbox["c"][:-1] + bytes([inbox["c"][-1] ^ 1])}
    with pytest.raises(secagg.SecAggError, match="does not decrypt"):
        sessions["a"].receive(ids, altered)
    sessions["a"].receive(ids, inbox)


# -- whole rounds over gRPC --------------------------------------------------------------------------

def _start(handle, model_path, **config):
    with open(model_path, "rb") as f:
        return handle.federated.start_job(f.read(), JobConfig(secure_aggregation=True, learning_rate=LR, **config))


def _join(client):
    for _ in range(20):
        reply = client.join(1.0)
        if reply.selected:
            return reply
    raise AssertionError("not sampled")


def _in_threads(functions, timeout_s=60):
    results, errors = [None] * len(functions), []

    def call(k, function):
        try:
            results[k] = function()
        except Exception as error:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=call, args=(k, f), daemon=True) for k, f in enumerate(functions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    if errors:
        raise errors[0]
    return results


def _wait_for(condition, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _weighted_mean(deltas, counts):
    return {name: sum(n * d[name].astype(np.float64) for d, n in zip(deltas, counts)) / sum(counts)
            for name in deltas[0]}


def test_secure_round_applies_the_plain_weighted_mean(model_path, digits_data):
    """Three clients through Client.run: the weights the server applies equal the sample-weighted
    mean of the deltas the clients computed (read back from their trainers)."""
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:3]
    with start_server(federated=True) as handle:
        job = _start(handle, model_path, fraction=1.0, min_clients=2, wait_for_clients=3, rounds=1)
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        for client in clients:
            client.connect()
        reports = _in_threads([lambda c=c: c.run(max_rounds=1, timeout_s=60) for c in clients])
        assert job.wait(30)
        status, after = job.status(), job.global_weights()
        deltas = [{n: c.trainer.get_variable(n) - initial[n] for n in c.variables} for c in clients]
        for c in clients:
            c.close()
    assert [r[0].status for r in reports] == ["ok"] * 3
    record = status.history[0]
    samples = sum(len(s[1]) for s in shards)
    assert (record.applied, record.updates, record.dropped, record.samples) == (True, 3, 0, samples)
    assert status.refused == 0 and status.secure_aggregation
    mean = _weighted_mean(deltas, [len(s[1]) for s in shards])
    for name in initial:
        np.testing.assert_allclose(after[name], initial[name] + mean[name], rtol=1e-5, atol=1e-7)
    # The masked pushes are int64 vectors: 8 bytes per weight plus the weight element.
    assert status.bytes_pushed == 3 * 8 * (sum(v.size for v in initial.values()) + 1)


def _stored_arrays(root) -> list[np.ndarray]:
    """Every array and byte string reachable from the job's Python state, integer arrays also
    decoded from fixed point. Left out: its C-runtime evaluator, thread, lock and held-out data,
    and the global weights (``weights`` of the job and of the round: the model the job publishes,
    which after the close holds the aggregate by design; the test checks it equals the sum)."""
    skip = {"_evaluator", "_thread", "_changed", "_folder", "validation", "options", "_noise", "weights"}
    found, seen, stack = [], set(), [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            found.append(item.astype(np.float64).ravel())
            if item.dtype.kind in "iu" and item.dtype.itemsize == 8:
                found.append(secagg.decode_fixed(item.view(np.uint64)).ravel())
        elif isinstance(item, (bytes, bytearray)):
            if len(item) % 8 == 0 and item:
                found.append(secagg.decode_fixed(np.frombuffer(item, np.uint64)).ravel())
            found.append(np.frombuffer(item, np.uint8).astype(np.float64))
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) or isinstance(item, FederatedJob):
            stack.extend(v for k, v in vars(item).items() if k not in skip)
    return found


def _assert_no_update_in(stored, updates):
    """No stored array equals, or is correlated with, any one client's update in any of the forms
    it had on the client: each variable's delta, all of them flattened, scaled by the sample
    count, with the weight appended."""
    forms = []
    for deltas, n in updates:
        flat = np.concatenate([d.astype(np.float64).ravel() for d in deltas.values()])
        forms += [flat, n * flat, np.append(n * flat, n), np.append(flat, 1.0)]
        forms += [f for d in deltas.values() for f in (d.astype(np.float64).ravel(), n * d.astype(np.float64).ravel())]
    compared = 0
    for array in stored:
        for form in forms:
            if form.size != array.size or form.size < 8:
                continue
            compared += 1
            assert not np.allclose(array, form, rtol=1e-3, atol=1e-6), "a stored array is a client's update"
            # Unrelated vectors correlate by chance as N(0, 1/n): 5 sigma, from 64 elements on.
            if form.size >= 64 and np.std(array) > 0 and np.std(form) > 0:
                assert abs(np.corrcoef(array, form)[0, 1]) < 5 / np.sqrt(form.size), \
                    "a stored array follows a client's update"
    assert compared > 0


def test_client_dropped_after_masking_round_completes_and_server_holds_no_single_update(
        model_path, digits_data, caplog):
    """Four clients share keys; three push and reveal, the fourth masks its update and leaves.
    At the deadline the survivors' shares rebuild the dropped client's mask key, the round applies
    the survivors' weighted mean, and at no point (after one push, after three, after the close)
    does the server hold an array that is, or follows, one client's update."""
    caplog.set_level(logging.DEBUG)
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:4]
    timeout = 5.0
    with start_server(federated=True) as handle:
        job = _start(handle, model_path, fraction=1.0, min_clients=2, wait_for_clients=4, rounds=1,
                     round_timeout_s=timeout, secagg_stage_timeout_s=timeout)
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        for client in clients:
            client.connect()
        replies = [_join(c) for c in clients]
        sessions = _in_threads([lambda c=c: c.secure_setup(1) for c in clients])
        assert job.round.stage == "masked" and job.round.secure.threshold == 3
        deltas, updates, states = [], [], []
        for client, reply, session in zip(clients, replies, sessions):
            start, _ = client.pull(1)
            client.train_locally(start, reply)
            delta = {n: client.trainer.get_variable(n) - start[n] for n in client.variables}
            deltas.append(delta)
            updates.append((delta, client.num_samples))
            if client is clients[3]:
                dropped_masked = session.mask(client.secure_vector(delta))   # masked, never sent
                break
            client.secure_push(1, session, delta)
            states.append(_stored_arrays(job))
        assert len(job.round.pushed) == 3 and not job.round.closed
        survivors = clients[:3]
        _in_threads([lambda c=c, s=s: c.secure_reveal(1, s) for c, s in zip(survivors, sessions)])
        assert job.wait(30)
        status, after = job.status(), job.global_weights()
        states.append(_stored_arrays(job))
        for c in clients:
            c.close()
    record = status.history[0]
    assert (record.applied, record.sampled, record.updates, record.dropped) == (True, 4, 3, 1)
    assert record.duration_s == pytest.approx(timeout, abs=1.5)
    mean = _weighted_mean(deltas[:3], [c.num_samples for c in survivors])
    for name in initial:
        np.testing.assert_allclose(after[name], initial[name] + mean[name], rtol=1e-5, atol=1e-7)
    # The server's state after each push and after the close; the dropped client's masked vector too.
    for stored in states:
        _assert_no_update_in(stored, updates)
    _assert_no_update_in([secagg.decode_fixed(dropped_masked)], updates)
    # The logs name clients and counts, never values: no update's leading numbers appear in them.
    text = caplog.text
    assert "round 1: applied, 3 of 4" in text and "masks of 1 dropped clients removed" in text
    for delta, n in updates:
        flat = np.concatenate([d.ravel() for d in delta.values()])
        for value in flat[np.abs(flat) > 1e-3][:20]:
            assert f"{value:.6f}" not in text and f"{n * value:.6f}" not in text


def test_bad_protocol_messages_are_refused_and_the_round_still_applies_the_sum(model_path, digits_data):
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:3]
    with start_server(federated=True) as handle:
        job = _start(handle, model_path, fraction=1.0, min_clients=2, wait_for_clients=3, rounds=2,
                     round_timeout_s=30)
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        for client in clients:
            client.connect()
        replies = [_join(c) for c in clients]
        a = clients[0]

        def refused(call) -> grpc.StatusCode:
            with pytest.raises(grpc.RpcError) as info:
                call()
            return info.value.code()

        keys = pb.AdvertiseKeysRequest(auth=a.auth, round=1, cipher_public_key=b"\1" * 31, mask_public_key=b"\2" * 32)
        assert refused(lambda: a.stub.AdvertiseKeys(keys, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        keys.round = 2
        assert refused(lambda: a.stub.AdvertiseKeys(keys, timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
        # Shares before the key stage closed: the wrong stage.
        assert refused(lambda: a.stub.ShareKeys(pb.ShareKeysRequest(auth=a.auth, round=1), timeout=10)) \
            == grpc.StatusCode.FAILED_PRECONDITION
        sessions = _in_threads([lambda c=c: c.secure_setup(1) for c in clients])
        # A second set of keys, and shares, once their stages are over.
        advert = pb.AdvertiseKeysRequest(auth=a.auth, round=1, cipher_public_key=b"\3" * 32, mask_public_key=b"\4" * 32)
        assert refused(lambda: a.stub.AdvertiseKeys(advert, timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
        deltas = []
        for client, reply in zip(clients, replies):
            start, _ = client.pull(1)
            client.train_locally(start, reply)
            deltas.append({n: client.trainer.get_variable(n) - start[n] for n in client.variables})
        masked = sessions[0].mask(a.secure_vector(deltas[0]))
        # A masked vector one element short, and one too long.
        assert refused(lambda: a.push_masked(1, masked[:-1])) == grpc.StatusCode.INVALID_ARGUMENT
        assert refused(lambda: a.push_masked(1, np.append(masked, masked[:1]))) == grpc.StatusCode.INVALID_ARGUMENT
        # A plain float update where a masked one is due.
        assert refused(lambda: a.push(1, deltas[0])) == grpc.StatusCode.INVALID_ARGUMENT
        # Chunks that claim more bytes than the header: misframed.
        tensor = transfer.encode_tensor(0, masked.view(np.int64), "none")
        header = pb.UpdateHeader(auth=a.auth, round=1, num_samples=0, tensors=[tensor[0]])
        misframed = [pb.UpdateMessage(header=header),
                     pb.UpdateMessage(chunk=split_pb2.TensorChunk(tensor_index=0, offset=8, data=tensor[1]))]
        assert refused(lambda: a.stub.PushUpdate(iter(misframed), timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        # A stale round and a future one.
        for stale in (0, 2):
            assert refused(lambda: a.push_masked(stale, masked)) == grpc.StatusCode.FAILED_PRECONDITION
        a.push_masked(1, masked)
        assert refused(lambda: a.push_masked(1, masked)) == grpc.StatusCode.ALREADY_EXISTS   # a replay
        for client, session, delta in zip(clients[1:], sessions[1:], deltas[1:]):
            client.secure_push(1, session, delta)
        # Reveals: shares of the wrong size; then the right ones, and a replay of them.
        outcome = a.wait_stage(1, pb.SECAGG_MASKED)
        assert list(outcome.dropped) == []
        short = pb.RevealSharesRequest(auth=a.auth, round=1, self_seed_shares=[
            pb.RevealedShare(owner=s, share=b"\0" * 10) for s in outcome.survivors])
        assert refused(lambda: a.stub.RevealShares(short, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        missing = pb.RevealSharesRequest(auth=a.auth, round=1, self_seed_shares=[
            pb.RevealedShare(owner=outcome.survivors[0], share=b"\0" * secagg.SHARE_BYTES)])
        assert refused(lambda: a.stub.RevealShares(missing, timeout=10)) == grpc.StatusCode.INVALID_ARGUMENT
        seeds, _ = sessions[0].reveal(list(outcome.survivors), [])
        good = pb.RevealSharesRequest(auth=a.auth, round=1, self_seed_shares=[
            pb.RevealedShare(owner=o, share=s) for o, s in seeds.items()])
        a.stub.RevealShares(good, timeout=10)
        assert refused(lambda: a.stub.RevealShares(good, timeout=10)) == grpc.StatusCode.ALREADY_EXISTS
        # A wrong client secret.
        stranger = pb.ClientAuth(job_id=job.job_id, client_id=a.client_id, client_secret="0" * 32)
        assert refused(lambda: a.stub.WaitSecAggStage(pb.SecAggStageRequest(auth=stranger, round=1,
                                                                            stage=pb.SECAGG_KEYS), timeout=10)) \
            == grpc.StatusCode.UNAUTHENTICATED
        _in_threads([lambda c=c, s=s: c.secure_reveal(1, s) for c, s in zip(clients[1:], sessions[1:])])
        _wait_for(lambda: job.status().applied_rounds == 1)
        after, status = job.global_weights(), job.status()
        job.stop()
        for c in clients:
            c.close()
    assert status.history[0].updates == 3 and status.history[0].dropped == 0
    assert status.refused == 14
    mean = _weighted_mean(deltas, [c.num_samples for c in clients])
    for name in initial:
        np.testing.assert_allclose(after[name], initial[name] + mean[name], rtol=1e-5, atol=1e-7)


def test_secure_round_with_dp_clipping_applies_the_equal_weight_mean_of_clipped_deltas(model_path, digits_data):
    """Under secure aggregation the server cannot clip (it never sees an update): each client clips
    its own delta and pushes it with weight 1; the unmasked sum is their plain mean."""
    from cloudsplit import privacy

    clip = 0.2
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:3]
    with start_server(federated=True) as handle:
        job = _start(handle, model_path, fraction=1.0, min_clients=2, wait_for_clients=3, rounds=1, dp_clip_norm=clip)
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        for client in clients:
            client.connect()
        _in_threads([lambda c=c: c.run(max_rounds=1, timeout_s=60) for c in clients])
        assert job.wait(30)
        status, after = job.status(), job.global_weights()
        deltas = [{n: c.trainer.get_variable(n) - initial[n] for n in c.variables} for c in clients]
        for c in clients:
            c.close()
    assert status.history[0].applied and status.history[0].samples == 3
    clipped = [privacy.clip_update(d, clip) for d in deltas]
    assert all(norm > clip for _, norm in clipped)
    for name in initial:
        mean = sum(c[name].astype(np.float64) for c, _ in clipped) / 3
        np.testing.assert_allclose(after[name], initial[name] + mean, rtol=1e-5, atol=1e-7)


def test_a_client_gone_before_sharing_is_left_out_and_too_few_survivors_abandon_the_round(model_path, digits_data):
    """Round 1: the fourth client advertises keys and leaves; the share stage closes at its timeout
    without it, and the other three complete the round (nothing of the fourth's to remove).
    Round 2: two of four push; two survivors are below the threshold of three, so the round is
    abandoned, nothing is revealed and the weights stay as round 1 left them."""
    x, y, _, _ = digits_data
    shards = federated.non_iid_split(x, y)[:4]
    with start_server(federated=True) as handle:
        job = _start(handle, model_path, fraction=1.0, min_clients=2, wait_for_clients=4, rounds=2,
                     round_timeout_s=4.0, secagg_stage_timeout_s=1.5)
        initial = job.global_weights()
        clients = [Client(model_path, handle.address, shard, job.job_id, seed=k) for k, shard in enumerate(shards)]
        for client in clients:
            client.connect()
        replies = [_join(c) for c in clients]
        gone = clients[3]
        gone.stub.AdvertiseKeys(pb.AdvertiseKeysRequest(auth=gone.auth, round=1, cipher_public_key=b"\5" * 32,
                                                        mask_public_key=b"\6" * 32), timeout=10)
        sessions = _in_threads([lambda c=c: c.secure_setup(1) for c in clients[:3]])
        assert gone.client_id in job.round.secure.order and gone.client_id not in job.round.secure.holders
        deltas = []
        for client, reply, session in zip(clients, replies, sessions):
            start, _ = client.pull(1)
            client.train_locally(start, reply)
            deltas.append({n: client.trainer.get_variable(n) - start[n] for n in client.variables})
            client.secure_push(1, session, deltas[-1])
        _in_threads([lambda c=c, s=s: c.secure_reveal(1, s) for c, s in zip(clients, sessions)])
        _wait_for(lambda: job.status().applied_rounds == 1)
        after_first = job.global_weights()

        replies = [_join(c) for c in clients]
        assert all(r.round == 2 for r in replies)
        sessions = _in_threads([lambda c=c: c.secure_setup(2) for c in clients])
        for client, reply, session in list(zip(clients, replies, sessions))[:2]:
            start, _ = client.pull(2)
            client.train_locally(start, reply)
            client.secure_push(2, session, {n: client.trainer.get_variable(n) - start[n] for n in client.variables})
        with pytest.raises(grpc.RpcError) as info:
            clients[0].secure_reveal(2, sessions[0])
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "abandoned" in info.value.details()
        assert job.wait(30)
        status, after = job.status(), job.global_weights()
        for c in clients:
            c.close()
    first, second = status.history
    assert (first.applied, first.updates, first.dropped) == (True, 3, 0)
    assert (second.applied, second.updates, second.dropped) == (False, 2, 2)
    assert status.abandoned_rounds == 1
    mean = _weighted_mean(deltas, [c.num_samples for c in clients[:3]])
    for name in initial:
        np.testing.assert_allclose(after_first[name], initial[name] + mean[name], rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(after[name], after_first[name])

"""The federated benchmark's emulated devices (benchmarks/train_federated.py ``--parts emulated``):
every client its own process with the reference kernels, the server in another process, across a
shaped link (the in-process relay: no namespaces needed). A short job must run its rounds with
every client, lose no update, and learn."""
from __future__ import annotations

import numpy as np

from benchmarks import train_federated
from tests.fixtures import federated

CLIENTS = 10


def test_emulated_clients_are_processes_that_train_across_a_shaped_link(tmp_path):
    x_train, y_train, x_test, y_test = federated.flat_digits()
    for k, (x, y) in enumerate(federated.non_iid_split(x_train, y_train, clients=CLIENTS)):
        np.savez(tmp_path / f"shard{k}.npz", x=x, y=y)
    np.savez(tmp_path / "validation.npz", x=x_test, y=y_test)
    federated.federated_mlp(tmp_path / "mlp.edge")

    result = train_federated.emulated_run(tmp_path, "wifi", "fedavg", 0.3, seed=0, rounds=12,
                                          shaping="in-process", device_isa="scalar", timeout_s=300)

    assert result["part"] == "emulated" and "emulated in-process" in result["link"]
    assert "EDGE_ISA=scalar" in result["device"]
    accuracy = result["accuracy_per_round"]
    assert result["rounds_run"] == len(accuracy) >= 1
    assert result["rounds_to_95"] is not None or result["rounds_run"] == 12
    assert result["late"] == 0 and result["refused"] == 0 and result["abandoned_rounds"] == 0
    # Training improves the global model well past chance (10 classes) within the rounds.
    assert accuracy[-1] > max(0.5, accuracy[0])
    assert result["server_tensor_bytes_pushed_per_update"] > 0

"""A job on a multi-node Ray cluster (ray.cluster_utils.Cluster: separate raylets on this machine,
bound to 127.0.0.1): a node is removed mid-run and another added; training goes on and the job
reports both changes."""
from __future__ import annotations

import time

import pytest

training = pytest.importorskip("cloudsplit.training")
ray = training.import_ray()

from tests.fixtures import digits  # noqa: E402

# Every module that starts Ray runs on one xdist worker, one after another: two clusters
# starting at once on a 2-core machine slowed each past Ray's start-up timeouts.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def test_node_removed_and_added_mid_run(cluster, tmp_path):
    first = cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
    x, y, x_test, y_test = digits.load_digits_split()
    path = digits.write_trainable(digits.digits_cnn(batch=16), tmp_path / "cnn16.edge", loss="cross_entropy",
                                  optimizer="adam", lr=3e-3)
    job = training.start(path, (x, y), strategy=training.Async(), replicas=2, ps_shards=1, epochs=10,
                         cluster=cluster.address, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=20,
                         eval_every=0, report_every=0.3, lr_schedule="cosine")
    deadline = time.monotonic() + 120
    while not job.history or (job.history[-1]["step"] or 0) < 60:
        assert time.monotonic() < deadline, "the job made no progress"
        time.sleep(0.2)
    first_node_id = first.node_id
    on_first = [r for r in job.workers()["replicas"] + job.workers()["shards"]
                if r and r.get("node", None) == first_node_id]
    cluster.remove_node(first)
    cluster.add_node(num_cpus=2)
    assert job.wait(300)
    assert job.state == "finished", job.error
    events = {e["event"] for e in job.events}
    assert {"node_removed", "node_added"} <= events, job.events
    if on_first:
        assert events & {"replica_failed", "worker_changed", "shard_restored"}, job.events
    assert job.history[-1]["step"] >= job.target_steps
    assert job.evaluate(x_test, y_test)["accuracy"] >= 0.97

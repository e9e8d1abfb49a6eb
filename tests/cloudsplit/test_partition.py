"""The partitioner against brute force over every predecessor-closed device set."""
from __future__ import annotations

import dataclasses
import math
import random

import pytest

from cloudsplit import partition
from cloudsplit.partition import ModelCosts, Network, OpCost


def random_graph(rng: random.Random, n: int, chain: bool) -> ModelCosts:
    """Ops 0..n-1 in topological order; tensor 0 is the graph input, constants start at 1000.

    A chain reads the previous op's output (plus, sometimes, an older tensor: a skip connection,
    which keeps the topological order unique); a DAG reads 1-3 random earlier tensors.
    """
    tensor_bytes = {0: rng.randrange(1000, 200_000)}
    produced = [0]
    ops = []
    constants = set()
    for i in range(n):
        if chain:
            inputs = [produced[-1]]
            if len(produced) > 2 and rng.random() < 0.3:
                inputs.append(rng.choice(produced[:-1]))
        else:
            inputs = rng.sample(produced, k=min(len(produced), rng.randint(1, 3)))
        weight = 1000 + i
        constants.add(weight)
        tensor_bytes[weight] = 4096
        outputs = [len(tensor_bytes) + 2000]
        if rng.random() < 0.2:
            outputs.append(outputs[0] + 1)
        for t in outputs:
            tensor_bytes[t] = rng.choice([rng.randrange(100, 5000), rng.randrange(10_000, 400_000)])
        produced.extend(outputs)
        ops.append(OpCost(index=i, name=f"op{i}", device_ms=rng.uniform(0.1, 30.0), server_ms=rng.uniform(0.01, 5.0),
                          inputs=tuple(inputs) + (weight,), outputs=tuple(outputs),
                          device_power_mw=rng.choice([None, rng.uniform(500, 3000)])))
    read = {t for op in ops for t in op.inputs}
    outputs = [t for t in produced[1:] if t not in read]
    if rng.random() < 0.3:
        outputs.append(ops[n // 2].outputs[0])  # a graph output that a later op also reads
    return ModelCosts(ops=tuple(ops), tensor_bytes=tensor_bytes, graph_inputs=(0,), graph_outputs=tuple(outputs),
                      constant_tensors=frozenset(constants))


def closed_sets(costs: ModelCosts):
    graph = partition.OpGraph(costs)
    for mask in range(1 << graph.n):
        device = {i for i in range(graph.n) if mask >> i & 1}
        if graph.is_closed(device):
            yield device


def brute_force(costs, network, objective="latency", pinned=(), limit=None, **kwargs):
    best = math.inf
    for device in closed_sets(costs):
        if not set(pinned) <= device:
            continue
        if limit is not None and partition.peak_device_memory(costs, device) > limit:
            continue
        b = partition.evaluate(costs, network, device, **kwargs)
        best = min(best, b.total_ms if objective == "latency" else b.device_energy_mj)
    return best


def score(plan, objective):
    return plan.predicted.total_ms if objective == "latency" else plan.predicted.device_energy_mj


NETWORKS = [Network(1.1e6, 2.03e6, 0.1, "3g"), Network(5.85e6, 13.76e6, 0.05, "4g"),
            Network(18.88e6, 54.97e6, 0.01, "wifi"), Network(1e9, 1e9, 0.0, "fast")]


@pytest.mark.parametrize("chain", [True, False], ids=["chain", "dag"])
@pytest.mark.parametrize("objective", ["latency", "energy"])
def test_solver_matches_brute_force(chain, objective):
    rng = random.Random(17 if chain else 29)
    kinds = set()
    for trial in range(25):
        costs = random_graph(rng, rng.randint(3, 9), chain)
        assert partition.OpGraph(costs).is_chain() or not chain
        network = rng.choice(NETWORKS)
        load = rng.choice([1.0, 1.0, 3.0])
        radio = network.name if network.name in partition.RADIO_MODELS else "wifi"
        plan = partition.solve(costs, network, objective=objective, server_load=load, radio=radio)
        expected = brute_force(costs, network, objective, server_load=load, radio=radio)
        assert score(plan, objective) == pytest.approx(expected, rel=1e-9, abs=1e-9), (trial, plan)
        assert plan.method == ("exhaustive" if partition.OpGraph(costs).is_chain() else "min-cut")
        kinds.add(plan.kind)
    assert "split" in kinds  # the random costs exercise real cuts, not only the two extremes


def test_compressed_wire_bytes_are_what_is_charged():
    rng = random.Random(5)
    for _ in range(15):
        costs = random_graph(rng, rng.randint(4, 8), chain=False)
        wire = lambda t: costs.tensor_bytes[t] // 4  # noqa: E731 (int8 of float32)
        network = Network(2e6, 2e6, 0.02)
        plan = partition.solve(costs, network, wire_bytes=wire)
        assert plan.predicted.total_ms == pytest.approx(brute_force(costs, network, wire_bytes=wire), rel=1e-9)
        assert plan.predicted.upload_bytes == sum(wire(t) for t in plan.upload)


def test_downloads_are_charged_at_their_own_compression():
    """A runner compresses its uploads (here 4x) but gets the answer back raw: the download is charged
    raw, by the solver (chains and DAGs) as by evaluate."""
    rng = random.Random(9)
    for chain in (True, False):
        for _ in range(10):
            costs = random_graph(rng, rng.randint(4, 8), chain=chain)
            up = lambda t: costs.tensor_bytes[t] // 4  # noqa: E731
            down = lambda t: costs.tensor_bytes[t]  # noqa: E731
            network = Network(2e6, 1e6, 0.02)
            plan = partition.solve(costs, network, wire_bytes=up, download_wire_bytes=down)
            best = brute_force(costs, network, wire_bytes=up, download_wire_bytes=down)
            assert plan.predicted.total_ms == pytest.approx(best, rel=1e-9)
            assert plan.predicted.download_bytes == sum(down(t) for t in plan.download)
            assert plan.predicted.download_ms == pytest.approx(plan.predicted.download_bytes * 8 / 1e6 * 1e3)


@pytest.mark.parametrize("chain", [True, False], ids=["chain", "dag"])
def test_pinned_ops_stay_on_the_device(chain):
    rng = random.Random(41)
    for _ in range(20):
        costs = random_graph(rng, rng.randint(4, 9), chain)
        graph = partition.OpGraph(costs)
        pinned = rng.sample(range(graph.n), k=rng.randint(1, 2))
        # A fast link and a fast server: without the pins everything would go to the server.
        network = Network(1e9, 1e9, 0.0)
        plan = partition.solve(costs, network, pinned_device_ops=pinned)
        assert graph.closure(pinned) <= set(plan.device_ops)
        assert plan.predicted.total_ms == pytest.approx(brute_force(costs, network, pinned=graph.closure(pinned)),
                                                        rel=1e-9)


@pytest.mark.parametrize("chain", [True, False], ids=["chain", "dag"])
def test_memory_limit_is_honoured(chain):
    rng = random.Random(43)
    constrained = 0
    for _ in range(25):
        costs = random_graph(rng, rng.randint(4, 9), chain)
        network = Network(0.5e6, 0.5e6, 0.2)  # slow: the unconstrained plan keeps most ops on the device
        free = partition.solve(costs, network)
        limit = int(free.device_peak_bytes * rng.uniform(0.3, 0.9))
        if limit < partition.peak_device_memory(costs, set()) or free.device_peak_bytes == 0:
            continue
        plan = partition.solve(costs, network, device_memory_limit=limit)
        constrained += 1
        assert plan.device_peak_bytes <= limit
        assert partition.peak_device_memory(costs, plan.device_ops) == plan.device_peak_bytes
        best = brute_force(costs, network, limit=limit)
        if chain:
            assert plan.predicted.total_ms == pytest.approx(best, rel=1e-9)
        else:
            # Feasible, no better than the true optimum, no worse than any feasible topological prefix.
            assert plan.predicted.total_ms >= best - 1e-9
            prefixes = [set(range(k)) for k in range(len(costs.ops) + 1)
                        if partition.peak_device_memory(costs, set(range(k))) <= limit]
            assert plan.predicted.total_ms <= min(partition.evaluate(costs, network, p).total_ms
                                                  for p in prefixes) + 1e-9
    assert constrained >= 10


def test_extreme_networks_pick_the_obvious_side():
    rng = random.Random(3)
    for chain in (True, False):
        costs = random_graph(rng, 8, chain)
        costs = dataclasses.replace(costs, ops=tuple(dataclasses.replace(op, server_ms=op.device_ms / 10)
                                                     for op in costs.ops))
        crawl = partition.solve(costs, Network(1e3, 1e3, 1.0))
        assert crawl.kind == "device" and crawl.upload == () and crawl.predicted.upload_bytes == 0
        instant = partition.solve(costs, Network(1e12, 1e12, 0.0))
        assert instant.kind == "server" and instant.device_ops == ()
        assert instant.upload == costs.graph_inputs
        assert set(instant.download) == set(costs.graph_outputs)
        # A server loaded a thousand-fold is slower than the device however fast the link.
        assert partition.solve(costs, Network(1e12, 1e12, 0.0), server_load=1e3).kind == "device"


def test_evaluate_by_hand():
    # input(0) -> op0 -> t10 -> op1 -> t11 (output); op0 also -> t12 -> op1 (two cut tensors).
    costs = ModelCosts(
        ops=(OpCost(0, "a", device_ms=10.0, server_ms=2.0, inputs=(0, 100), outputs=(10, 12)),
             OpCost(1, "b", device_ms=20.0, server_ms=4.0, inputs=(10, 12), outputs=(11,), device_power_mw=1000.0)),
        tensor_bytes={0: 1000, 100: 50, 10: 2000, 12: 500, 11: 250}, graph_inputs=(0,), graph_outputs=(11,),
        constant_tensors=frozenset({100}))
    network = Network(uplink_bps=8e6, downlink_bps=4e6, rtt_s=0.03)  # 1 byte/us up, 0.5 byte/us down
    split = partition.evaluate(costs, network, {0}, server_load=2.0, radio="4g", device_power_mw=500.0)
    assert split.upload_bytes == 2500 and split.download_bytes == 250
    assert split.upload_ms == pytest.approx(2.5)
    assert split.download_ms == pytest.approx(0.5)
    assert split.server_ms == pytest.approx(8.0)
    assert split.rtt_ms == pytest.approx(30.0)
    assert split.total_ms == pytest.approx(10 + 2.5 + 8 + 0.5 + 30)
    up_mw = 438.39 * 8 + 1288.04
    down_mw = 51.97 * 4 + 1288.04
    assert split.device_energy_mj == pytest.approx((10 * 500 + 2.5 * up_mw + 0.5 * down_mw) / 1e3)
    local = partition.evaluate(costs, network, {0, 1}, device_power_mw=500.0)
    assert local.total_ms == 30.0 and local.rtt_ms == 0.0 and local.upload_bytes == 0
    assert local.device_energy_mj == pytest.approx((10 * 500 + 20 * 1000) / 1e3)
    assert partition.peak_device_memory(costs, {0}) == 1000 + 2000 + 500
    assert partition.peak_device_memory(costs, {0, 1}) == 1000 + 2000 + 500
    with pytest.raises(ValueError, match="predecessor-closed"):
        partition.evaluate(costs, network, {1})


def test_bad_arguments_are_named():
    costs = random_graph(random.Random(1), 4, chain=True)
    with pytest.raises(ValueError, match="objective"):
        partition.solve(costs, NETWORKS[0], objective="cost")
    with pytest.raises(ValueError, match="out of range"):
        partition.solve(costs, NETWORKS[0], pinned_device_ops=[7])
    with pytest.raises(ValueError, match="radio"):
        partition.solve(costs, NETWORKS[0], radio="5g")
    with pytest.raises(ValueError, match="over the limit"):
        partition.solve(costs, NETWORKS[0], pinned_device_ops=[3], device_memory_limit=10)


def test_costs_are_measured_once_per_model_and_thread_count(tmp_path, monkeypatch, mlp):
    import edge
    from cloudsplit import costs

    first = costs.cached_op_ms(mlp.data, 1, runs=3, cache_dir=tmp_path)
    with edge.Interpreter(model_content=mlp.data) as interpreter:
        assert len(first) == len(interpreter.op_details()) and all(ms > 0 for ms in first)
    files = list(tmp_path.glob(f"{mlp.sha256}-t1.json"))
    assert len(files) == 1

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(costs, "measure_op_ms", no_measuring)
    assert costs.cached_op_ms(mlp.data, 1, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="measured again"):
        costs.cached_op_ms(mlp.data, 2, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="measured again"):
        costs.cached_op_ms(mlp.data, 1, cache_dir=tmp_path, refresh=True)


def test_model_costs_from_an_interpreter(resnet):
    import edge
    from cloudsplit import costs

    with edge.Interpreter(model_content=resnet.data) as interpreter:
        interpreter.allocate_tensors()
        n = len(interpreter.op_details())
        model_costs = costs.costs_from_interpreter(interpreter, [1.0] * n, [0.25] * n)
        details = interpreter.get_tensor_details()
        inputs = [d["index"] for d in interpreter.get_input_details()]
    assert model_costs.graph_inputs == tuple(inputs)
    assert all(details[t]["kind"] == "constant" for t in model_costs.constant_tensors)
    assert all(model_costs.tensor_bytes[t] == details[t]["nbytes"] for t in model_costs.tensor_bytes)
    # The shortcuts' tensors skip ops: some op reads one written before its predecessor. (With the
    # skip connections' Adds fused into convolutions every op also reads its predecessor's output,
    # so the closed device sets are the prefixes: OpGraph.is_chain.)
    graph = partition.OpGraph(model_costs)
    assert any(p < i - 1 for i in range(graph.n) for p in graph.preds[i])
    everything = partition.solve(model_costs, Network(1e12, 1e12, 0.0))
    assert everything.kind == "server" and everything.upload == tuple(inputs)

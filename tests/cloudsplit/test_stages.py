"""K-way pipeline stages (partition.solve_stages) against brute force over stage assignments."""
from __future__ import annotations

import itertools
import random

import pytest

from cloudsplit import partition
from cloudsplit.partition import ModelCosts, OpCost
from tests.cloudsplit.test_partition import random_graph

LINK = 1e9  # bit/s


def assignments(n: int, k: int, graph: partition.OpGraph):
    """Every assignment of ops to stages 0..k-1, each stage used, no op before a producer's stage."""
    for stage_of in itertools.product(range(k), repeat=n):
        if len(set(stage_of)) != k:
            continue
        if all(stage_of[p] <= stage_of[op] for op in range(n) for p in graph.preds[op]):
            yield stage_of


def contiguous(stage_of) -> bool:
    return all(a <= b for a, b in zip(stage_of, stage_of[1:]))


def oracle(costs: ModelCosts, stage_of, k: int, *, training=False, backward_factor=2.0, optimizer_slots=2,
           copies=1, recompute=False):
    """(slowest stage ms, largest stage memory) of an assignment, computed from the assignment."""
    graph = partition.OpGraph(costs)
    scale = 1 + backward_factor if training else 1
    # bytes crossing from stage s to s + 1: produced at or before s (graph inputs: before 0), read after s
    crossing = [0] * k
    for t, readers in graph.consumers.items():
        p = graph.producer.get(t)
        first = stage_of[p] if p is not None else -1
        last = max(stage_of[r] for r in readers)
        for s in range(max(first, 0), last):
            crossing[s] += costs.tensor_bytes[t]
    times, memories = [], []
    for s in range(k):
        ops = [op for op in range(graph.n) if stage_of[op] == s]
        compute = sum(costs.ops[op].server_ms for op in ops) * scale
        send = (crossing[s] * 8 / LINK * 1e3 if s < k - 1 else 0.0)
        if training and s > 0:
            send += crossing[s - 1] * 8 / LINK * 1e3
        times.append(compute + send)
        weights = {t for op in ops for t in costs.ops[op].inputs if t in costs.constant_tensors}
        weight_bytes = sum(costs.tensor_bytes[t] for t in weights) * ((2 * (1 + optimizer_slots) + 2) if training else 1)
        produced = sum(costs.tensor_bytes[t] for op in ops for t in costs.ops[op].outputs)
        received = crossing[s - 1] if s > 0 else sum(
            costs.tensor_bytes[t] for t in costs.graph_inputs if any(stage_of[r] == 0 for r in graph.consumers.get(t, [])))
        kept = received * copies + produced if recompute else (received + produced) * copies
        memories.append(weight_bytes + kept)
    return max(times), max(memories)


@pytest.mark.parametrize("chain", [True, False])
@pytest.mark.parametrize("training", [False, True])
def test_slowest_stage_matches_brute_force(chain, training):
    rng = random.Random(11 if chain else 12)
    for trial in range(12):
        costs = random_graph(rng, rng.randint(3, 7), chain)
        graph = partition.OpGraph(costs)
        for k in range(1, min(4, graph.n) + 1):
            plan = partition.solve_stages(costs, k, link_bps=LINK, training=training)
            stage_of = [None] * graph.n
            for s, stage in enumerate(plan.stages):
                for op in stage.ops:
                    stage_of[op] = s
            assert sorted(op for st in plan.stages for op in st.ops) == list(range(graph.n))
            assert contiguous(stage_of)
            got, _ = oracle(costs, stage_of, k, training=training)
            assert got == pytest.approx(plan.bottleneck_ms, rel=1e-9)
            # exact among contiguous partitions always; among every dependency-respecting
            # assignment when the graph is a chain (they are then all contiguous)
            family = [a for a in assignments(graph.n, k, graph) if graph.is_chain() or contiguous(a)]
            best = min(oracle(costs, a, k, training=training)[0] for a in family)
            assert plan.bottleneck_ms == pytest.approx(best, rel=1e-9), (trial, k)


@pytest.mark.parametrize("recompute", [False, True])
def test_memory_limit_is_honoured_and_the_optimum_kept(recompute):
    rng = random.Random(5)
    for _ in range(10):
        costs = random_graph(rng, 6, True)
        graph = partition.OpGraph(costs)
        k = 3
        options = dict(training=True, copies=4, recompute=recompute)
        family = list(assignments(graph.n, k, graph))
        memories = sorted({oracle(costs, a, k, **options)[1] for a in family})
        limit = memories[len(memories) // 2]
        plan = partition.solve_stages(costs, k, link_bps=LINK, memory_limit=limit, training=True,
                                      activation_copies=4, recompute=recompute)
        assert all(stage.memory_bytes <= limit for stage in plan.stages)
        feasible = [oracle(costs, a, k, **options) for a in family]
        best = min(t for t, m in feasible if m <= limit)
        assert plan.bottleneck_ms == pytest.approx(best, rel=1e-9)
        stage_of = [s for s, stage in enumerate(plan.stages) for _ in stage.ops]
        assert max(st.memory_bytes for st in plan.stages) == oracle(costs, stage_of, k, **options)[1]
        with pytest.raises(ValueError, match=f"needs {memories[0]} bytes"):
            partition.solve_stages(costs, k, link_bps=LINK, memory_limit=memories[0] - 1, training=True,
                                   activation_copies=4, recompute=recompute)


def test_a_skip_connection_crosses_every_cut_it_spans():
    # op0 -> op1 -> op2 -> op3, and op3 also reads op0's output
    ops = (OpCost(0, "a", 1.0, 1.0, (0,), (1,)), OpCost(1, "b", 1.0, 1.0, (1,), (2,)),
           OpCost(2, "c", 1.0, 1.0, (2,), (3,)), OpCost(3, "d", 1.0, 1.0, (3, 1), (4,)))
    costs = ModelCosts(ops=ops, tensor_bytes={0: 10, 1: 1000, 2: 10, 3: 10, 4: 10}, graph_inputs=(0,),
                       graph_outputs=(4,), constant_tensors=frozenset())
    assert partition.cut_tensors(costs, 2) == [1, 2]
    assert partition.cut_tensors(costs, 3) == [1, 3]
    plan = partition.solve_stages(costs, 4, link_bps=8e3)  # 1 byte per ms
    assert [st.send_forward_bytes for st in plan.stages] == [1000, 1010, 1010, 0]
    assert plan.bottleneck_ms == pytest.approx(1.0 + 1010.0)


def test_balance_by_hand():
    # times 4, 1, 1, 1, 1: two stages split after the first op; the link is free
    ops = tuple(OpCost(i, f"op{i}", 0.0, ms, (i,), (i + 1,)) for i, ms in enumerate((4, 1, 1, 1, 1)))
    costs = ModelCosts(ops=ops, tensor_bytes={i: 4 for i in range(6)}, graph_inputs=(0,), graph_outputs=(5,),
                       constant_tensors=frozenset())
    plan = partition.solve_stages(costs, 2, link_bps=1e15)
    assert [st.ops for st in plan.stages] == [(0,), (1, 2, 3, 4)]
    assert plan.bottleneck_ms == pytest.approx(4.0)
    assert plan.pipeline_ms(8) == pytest.approx(9 * 4.0)
    assert plan.bubble_fraction(8) == pytest.approx(1 / 9)
    three = partition.solve_stages(costs, 3, link_bps=1e15)
    assert three.bottleneck_ms == pytest.approx(4.0)
    assert sum(st.time_ms for st in three.stages) == pytest.approx(8.0)


def test_bad_arguments_are_named():
    costs = random_graph(random.Random(1), 4, True)
    with pytest.raises(ValueError, match="stages must be between 1 and the number of ops"):
        partition.solve_stages(costs, 5, link_bps=LINK)
    with pytest.raises(ValueError, match="stages must be between"):
        partition.solve_stages(costs, 0, link_bps=LINK)
    with pytest.raises(ValueError, match="link bandwidth"):
        partition.solve_stages(costs, 2, link_bps=0)
    with pytest.raises(ValueError, match="activation_copies"):
        partition.solve_stages(costs, 2, link_bps=LINK, activation_copies=0)


def test_plan_command_prints_the_stages(tmp_path, resnet, capsys):
    from cloudsplit import cli

    path = resnet.write(tmp_path)
    chart = tmp_path / "stages.png"
    code = cli.main(["plan", str(path), "--stages", "3", "--training", "--bandwidth", "1gbit",
                     "--runs", "1", "--chart", str(chart)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    assert "slowest stage" in out and "bubble" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("cut ")]) == 2
    assert chart.stat().st_size > 0
    assert cli.main(["plan", str(path), "--stages", "0"]) == cli.USAGE_ERROR
    assert cli.main(["plan", str(path), "--stages", "2", "--memory-limit", "10"]) == cli.USAGE_ERROR
    assert "fits the memory limit" in capsys.readouterr().err


def test_plan_command_device_and_server(tmp_path, resnet, capsys):
    from cloudsplit import cli

    path = resnet.write(tmp_path)
    assert cli.main(["plan", str(path), "--bandwidth", "10mbit", "--rtt", "40ms", "--runs", "1", "--ops"]) == 0
    out = capsys.readouterr().out
    assert "predicted: device" in out and "compare: all-device" in out
    op_rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(op_rows) == int(out.split(" ops, ")[0].rsplit(" ", 1)[-1])
    chart = tmp_path / "sweep.png"
    assert cli.main(["plan", str(path), "--rtt", "40ms", "--runs", "1", "--sweep", "--chart", str(chart)]) == 0
    assert chart.stat().st_size > 0
    assert cli.main(["plan", str(path), "--runs", "1"]) == cli.USAGE_ERROR  # no network given


@pytest.mark.parametrize("model_name", ["mobilenet", "resnet", "bert"])
def test_balance_on_the_benchmark_networks_is_within_ten_percent_of_the_bound(request, model_name):
    """Op costs in proportion to the file's FLOPs (deterministic): the slowest stage is within 10 % of
    max(total / K, the slowest op), a bound no partition beats."""
    import edge
    from cloudsplit import costs

    model = request.getfixturevalue(model_name)
    with edge.Interpreter(model_content=model.data) as interpreter:
        interpreter.allocate_tensors()
        op_ms = [max(op["flops"], 1) / 1e9 for op in interpreter.op_details()]
        model_costs = costs.costs_from_interpreter(interpreter, op_ms, op_ms)
    for k in (2, 4):
        plan = partition.solve_stages(model_costs, k, link_bps=1e18, training=True)
        bound = max(sum(op_ms) * 3 / k, max(op_ms) * 3)
        assert plan.bottleneck_ms <= 1.10 * bound, (k, plan.bottleneck_ms / bound)

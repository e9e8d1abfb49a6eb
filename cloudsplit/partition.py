"""Where each op runs: the device part and the server part of one request.

A plan is one cut of the op graph: the device runs a predecessor-closed set of ops (every producer of
a tensor it reads is also on the device), sends the tensors the server's ops read (``upload``), the
server runs the rest and sends back the graph outputs it computed (``download``). All-device and
all-server are two of the candidates and always considered.

The cost model (``evaluate``) is sequential: device compute, then upload, then server compute, then
download, plus one round trip when anything is offloaded. Every term except the round trip is a sum
over ops or tensors, which is what makes the problem a minimum s-t cut:

- chain-shaped graphs (each op reads the previous op's output: one topological order, so every
  predecessor-closed set is a prefix): every cut point is evaluated, which is exact for any cost;
- other DAGs (branches, skip connections): a minimum s-t cut (networkx) over op nodes and one node
  per cut-able tensor, so a tensor read by several server ops is sent once. The round trip is a
  constant added to every plan with a server part and is handled outside the cut, which keeps it
  exact. The min-cut is exact for the latency objective only because the model is sequential: a
  runtime that overlaps device compute with transfers or server compute finishes sooner than
  predicted, and then the min-cut's sum is an upper bound, not the optimum of the overlapped time.

Constraints: ``pinned_device_ops`` (with all their predecessors) stay on the device (privacy: e.g.
the first layers, so raw inputs never leave); ``device_memory_limit`` bounds the device part's peak
activation memory (``peak_device_memory``). Peak memory grows with the device set, so for chains the
limit just removes long prefixes and the result stays exact; for DAGs, when the unconstrained min-cut
breaks the limit, the cut is re-solved inside the longest topological prefix that fits, which is
feasible but may miss a feasible set that is not contained in that prefix.

Objectives: ``latency`` (the request's end-to-end time) and ``energy`` (the device's energy per
request: compute power x device time per op, plus the radio power model P = alpha x throughput + beta
of Huang et al., MobiSys 2012, as used by JointDNN, for the time spent uploading and downloading;
the round trip and the wait for the server are not charged, as in JointDNN).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

# Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE Networks",
# MobiSys 2012, Table 4: radio power P = alpha_u * uplink Mbit/s + alpha_d * downlink Mbit/s + beta
# (mW). JointDNN (Eshratifar et al. 2018) uses the same numbers for 3G, 4G and Wi-Fi.
RADIO_MODELS: dict[str, dict[str, float]] = {
    "3g": {"alpha_up": 868.98, "alpha_down": 122.12, "beta": 817.88},
    "4g": {"alpha_up": 438.39, "alpha_down": 51.97, "beta": 1288.04},
    "wifi": {"alpha_up": 283.17, "alpha_down": 137.01, "beta": 132.86},
}

# Compute power of the device while it runs an op, when the op has no figure of its own. A phone's
# big CPU cluster at full load draws a few watts; this is an assumption, not a measurement.
DEFAULT_DEVICE_POWER_MW = 2000.0

OBJECTIVES = ("latency", "energy")


@dataclass(frozen=True)
class OpCost:
    index: int
    name: str
    device_ms: float
    server_ms: float                       # on an unloaded server; solve() multiplies by server_load
    inputs: tuple[int, ...]                # tensor indices; -1 (optional input left out) is dropped
    outputs: tuple[int, ...]
    device_power_mw: float | None = None   # compute power while this op runs (energy objective)


@dataclass(frozen=True)
class ModelCosts:
    ops: tuple[OpCost, ...]                # in the model's op order, which is topological
    tensor_bytes: Mapping[int, int]        # every tensor an op reads or writes: its raw byte size
    graph_inputs: tuple[int, ...]
    graph_outputs: tuple[int, ...]
    constant_tensors: frozenset[int]       # weights and variables: both sides hold them, never sent
    # Activation bytes the device holds whatever the cut (scratch, persistent op state); added to
    # the peak of the device part when checking device_memory_limit.
    fixed_device_bytes: int = 0


@dataclass(frozen=True)
class Network:
    uplink_bps: float
    downlink_bps: float
    rtt_s: float
    name: str = ""

    @property
    def rtt_ms(self) -> float:
        return self.rtt_s * 1e3


@dataclass(frozen=True)
class Breakdown:
    device_ms: float
    upload_ms: float
    server_ms: float
    download_ms: float
    rtt_ms: float
    total_ms: float
    upload_bytes: int
    download_bytes: int
    device_energy_mj: float


@dataclass(frozen=True)
class Plan:
    device_ops: tuple[int, ...]
    server_ops: tuple[int, ...]
    upload: tuple[int, ...]      # tensors sent up: cut tensors and graph inputs the server reads
    download: tuple[int, ...]    # graph outputs computed on the server
    predicted: Breakdown
    kind: str                    # "device", "server" or "split"
    objective: str = "latency"
    method: str = ""             # "exhaustive" (chains) or "min-cut" (DAGs)
    device_peak_bytes: int = 0   # peak activation memory of the device part

    @property
    def placement(self) -> tuple[str, ...]:
        where = {op: "device" for op in self.device_ops}
        where.update({op: "server" for op in self.server_ops})
        return tuple(where[op] for op in sorted(where))


def model_costs(device_ms: Sequence[float], server_ms: Sequence[float], ops: Sequence[Mapping[str, Any]],
                tensors: Sequence[Mapping[str, Any]], *, graph_inputs: Iterable[int] | None = None,
                graph_outputs: Iterable[int] | None = None, fixed_device_bytes: int = 0) -> ModelCosts:
    """ModelCosts from ``Interpreter.op_details()`` and ``Interpreter.get_tensor_details()``.

    ``device_ms`` / ``server_ms``: per-op times in op order. Graph inputs default to the activation
    tensors some op reads and none writes; graph outputs to those some op writes and none reads
    (pass the interpreter's own lists when a graph output is also read by a later op).
    """
    if len(device_ms) != len(ops) or len(server_ms) != len(ops):
        raise ValueError(f"{len(ops)} ops but {len(device_ms)} device times and {len(server_ms)} server times")
    by_index = {int(t["index"]): t for t in tensors}
    constants = frozenset(i for i, t in by_index.items() if t.get("kind") in ("constant", "variable"))
    op_costs = []
    for op, dev, srv in zip(ops, device_ms, server_ms):
        op_costs.append(OpCost(index=int(op["index"]), name=str(op.get("op", "")), device_ms=float(dev),
                               server_ms=float(srv), inputs=tuple(int(t) for t in op["inputs"] if t >= 0),
                               outputs=tuple(int(t) for t in op["outputs"] if t >= 0)))
    produced = {t for op in op_costs for t in op.outputs}
    consumed = {t for op in op_costs for t in op.inputs}
    if graph_inputs is None:
        graph_inputs = sorted(t for t in consumed - produced if t not in constants)
    if graph_outputs is None:
        graph_outputs = sorted(produced - consumed)
    used = consumed | produced | set(graph_inputs) | set(graph_outputs)
    missing = sorted(t for t in used if t not in by_index)
    if missing:
        raise ValueError(f"tensors {missing[:8]} are used by ops but absent from the tensor details")
    return ModelCosts(ops=tuple(op_costs), tensor_bytes={t: int(by_index[t]["nbytes"]) for t in sorted(used)},
                      graph_inputs=tuple(graph_inputs), graph_outputs=tuple(graph_outputs),
                      constant_tensors=constants & used, fixed_device_bytes=int(fixed_device_bytes))


class OpGraph:
    """Producer/consumer structure of a ModelCosts, computed once per solve."""

    def __init__(self, costs: ModelCosts):
        self.costs = costs
        self.n = len(costs.ops)
        for position, op in enumerate(costs.ops):
            if op.index != position:
                raise ValueError(f"op at position {position} has index {op.index}: ops must be listed in order")
        self.producer: dict[int, int] = {}
        for op in costs.ops:
            for t in op.outputs:
                self.producer[t] = op.index
        self.consumers: dict[int, list[int]] = {}
        for op in costs.ops:
            for t in dict.fromkeys(op.inputs):
                if t not in costs.constant_tensors:
                    self.consumers.setdefault(t, []).append(op.index)
        self.preds: list[set[int]] = [set() for _ in range(self.n)]
        for op in costs.ops:
            for t in op.inputs:
                p = self.producer.get(t)
                if p is not None and t not in costs.constant_tensors:
                    if p >= op.index:
                        raise ValueError(f"op {op.index} ({op.name}) reads tensor {t} written by op {p}, "
                                         "which is not earlier: ops must be in topological order")
                    self.preds[op.index].add(p)
        self.graph_outputs = set(costs.graph_outputs)

    def is_chain(self) -> bool:
        return all(i - 1 in self.preds[i] for i in range(1, self.n))

    def closure(self, ops: Iterable[int]) -> set[int]:
        """``ops`` and every op they depend on."""
        result: set[int] = set()
        stack = list(ops)
        while stack:
            op = stack.pop()
            if op not in result:
                result.add(op)
                stack.extend(self.preds[op])
        return result

    def is_closed(self, device: set[int]) -> bool:
        return all(self.preds[op] <= device for op in device)


def _raw_bytes(costs: ModelCosts) -> Callable[[int], int]:
    return lambda t: int(costs.tensor_bytes[t])


def _radio(radio: str) -> dict[str, float]:
    try:
        return RADIO_MODELS[radio.lower()]
    except KeyError:
        raise ValueError(f"radio must be one of {sorted(RADIO_MODELS)}, got {radio!r}") from None


def _transfer_ms(nbytes: int, bps: float) -> float:
    if nbytes == 0:
        return 0.0
    if bps <= 0:
        return math.inf
    return nbytes * 8.0 / bps * 1e3


def uploads_for(graph: OpGraph, device: set[int]) -> list[int]:
    """Tensors the server's ops read that the device holds: cut tensors and graph inputs."""
    sent = []
    for t, readers in graph.consumers.items():
        if any(c not in device for c in readers):
            p = graph.producer.get(t)
            if p is None or p in device:
                sent.append(t)
    return sorted(sent)


def downloads_for(graph: OpGraph, device: set[int]) -> list[int]:
    return sorted(t for t in graph.costs.graph_outputs
                  if graph.producer.get(t) is not None and graph.producer[t] not in device)


def peak_device_memory(costs: ModelCosts, device_ops: Iterable[int], graph: OpGraph | None = None) -> int:
    """Peak bytes of activations the device holds while running ``device_ops`` in op order.

    A tensor is held from its producer (graph inputs: from the start) through its last reader on the
    device; a tensor the device sends or returns is held until its producer has run (it is copied out
    then) or, for a graph output, to the end. Constants are in the model file, not counted here.
    ``fixed_device_bytes`` is added.
    """
    graph = graph or OpGraph(costs)
    device = set(device_ops)
    order = sorted(device)
    if not order:
        return 0
    position = {op: i for i, op in enumerate(order)}
    last = len(order) - 1
    spans: dict[int, tuple[int, int]] = {}
    for t in costs.graph_inputs:
        readers = [position[c] for c in graph.consumers.get(t, []) if c in device]
        if readers:
            spans[t] = (0, max(readers))
    for op in order:
        for t in costs.ops[op].outputs:
            if t in costs.constant_tensors:
                continue
            readers = [position[c] for c in graph.consumers.get(t, []) if c in device]
            end = max(readers, default=position[op])
            if t in graph.graph_outputs:
                end = last
            spans[t] = (position[op], end)
    events = [0] * (len(order) + 1)
    for t, (start, end) in spans.items():
        events[start] += costs.tensor_bytes[t]
        events[end + 1] -= costs.tensor_bytes[t]
    peak = running = 0
    for delta in events[:-1]:
        running += delta
        peak = max(peak, running)
    return peak + costs.fixed_device_bytes


def evaluate(costs: ModelCosts, network: Network, device_ops: Iterable[int], *,
             wire_bytes: Callable[[int], int] | None = None,
             download_wire_bytes: Callable[[int], int] | None = None, server_load: float = 1.0, radio: str = "wifi",
             device_power_mw: float = DEFAULT_DEVICE_POWER_MW, graph: OpGraph | None = None) -> Breakdown:
    """The predicted breakdown of running ``device_ops`` on the device and the rest on the server."""
    graph = graph or OpGraph(costs)
    device = set(device_ops)
    if not graph.is_closed(device):
        raise ValueError("the device ops are not predecessor-closed: some device op reads a tensor "
                         "computed on the server")
    wire = wire_bytes or _raw_bytes(costs)
    down_wire = download_wire_bytes or wire
    model = _radio(radio)
    device_ms = sum(costs.ops[op].device_ms for op in device)
    server_ms = sum(costs.ops[op].server_ms for op in range(graph.n) if op not in device) * server_load
    upload_bytes = sum(wire(t) for t in uploads_for(graph, device))
    download_bytes = sum(down_wire(t) for t in downloads_for(graph, device))
    upload_ms = _transfer_ms(upload_bytes, network.uplink_bps)
    download_ms = _transfer_ms(download_bytes, network.downlink_bps)
    rtt_ms = network.rtt_ms if len(device) < graph.n else 0.0
    compute_uj = sum(costs.ops[op].device_ms * (costs.ops[op].device_power_mw or device_power_mw) for op in device)
    up_mw = model["alpha_up"] * network.uplink_bps / 1e6 + model["beta"]
    down_mw = model["alpha_down"] * network.downlink_bps / 1e6 + model["beta"]
    energy_mj = (compute_uj + up_mw * upload_ms + down_mw * download_ms) / 1e3
    return Breakdown(device_ms=device_ms, upload_ms=upload_ms, server_ms=server_ms, download_ms=download_ms,
                     rtt_ms=rtt_ms, total_ms=device_ms + upload_ms + server_ms + download_ms + rtt_ms,
                     upload_bytes=upload_bytes, download_bytes=download_bytes, device_energy_mj=energy_mj)


def _score(breakdown: Breakdown, objective: str) -> tuple[float, float]:
    if objective == "latency":
        return (breakdown.total_ms, breakdown.device_energy_mj)
    return (breakdown.device_energy_mj, breakdown.total_ms)


def plan_kind(n_device: int, n: int) -> str:
    """What a plan with ``n_device`` of the model's ``n`` ops on the device is called."""
    if n_device == n:
        return "device"
    return "server" if n_device == 0 else "split"


def _plan(graph: OpGraph, device: set[int], breakdown: Breakdown, objective: str, method: str) -> Plan:
    return Plan(device_ops=tuple(sorted(device)), server_ops=tuple(op for op in range(graph.n) if op not in device),
                upload=tuple(uploads_for(graph, device)) if len(device) < graph.n else (),
                download=tuple(downloads_for(graph, device)), predicted=breakdown,
                kind=plan_kind(len(device), graph.n), objective=objective, method=method,
                device_peak_bytes=peak_device_memory(graph.costs, device, graph))


def plan_for(costs: ModelCosts, network: Network, device_ops: Iterable[int], *,
             wire_bytes: Callable[[int], int] | None = None, download_wire_bytes: Callable[[int], int] | None = None,
             server_load: float = 1.0, objective: str = "latency", method: str = "given",
             graph: OpGraph | None = None) -> Plan:
    """The plan that runs ``device_ops`` on the device and the rest on the server, priced as ``evaluate``
    prices it (a cut chosen elsewhere than ``solve``: a benchmark's forced cut, a user's choice)."""
    graph = graph or OpGraph(costs)
    device = set(device_ops)
    breakdown = evaluate(costs, network, device, wire_bytes=wire_bytes, download_wire_bytes=download_wire_bytes,
                         server_load=server_load, graph=graph)
    return _plan(graph, device, breakdown, objective, method)


def _min_cut(graph: OpGraph, op_cost: Callable[[int, bool], float], tensor_cost: Callable[[int], float],
             forced_device: set[int], allowed_device: set[int]) -> set[int]:
    """The device set minimising the additive cost; source side = device, sink side = server.

    Op v on the device pays ``op_cost(v, True)`` (edge v -> sink, cut when v is on the source side);
    on the server ``op_cost(v, False)`` (edge source -> v). A tensor t with a node of its own: edge
    producer -> t of capacity ``tensor_cost(t)`` and uncapacitated t -> reader edges, so t is paid once
    when any reader is on the server while its producer is on the device (graph inputs: the source
    is the producer). Uncapacitated reader -> producer edges make the device side predecessor-closed.
    """
    import networkx as nx

    source, sink = "device", "server"
    g = nx.DiGraph()
    g.add_node(source)
    g.add_node(sink)
    for v in range(graph.n):
        g.add_edge(v, sink, capacity=op_cost(v, True))
        g.add_edge(source, v, capacity=op_cost(v, False))
        for p in graph.preds[v]:
            g.add_edge(v, p)
        if v in forced_device:
            g[source][v].pop("capacity")
        if v not in allowed_device:
            g[v][sink].pop("capacity")
    for t, readers in graph.consumers.items():
        p = graph.producer.get(t)
        node = ("tensor", t)
        g.add_edge(source if p is None else p, node, capacity=tensor_cost(t))
        for reader in readers:
            g.add_edge(node, reader)
    _, (device_side, _) = nx.minimum_cut(g, source, sink)
    return {v for v in device_side if isinstance(v, int)}


def solve(costs: ModelCosts, network: Network, *, wire_bytes: Callable[[int], int] | None = None,
          download_wire_bytes: Callable[[int], int] | None = None,
          pinned_device_ops: Iterable[int] = (), device_memory_limit: int | None = None,
          server_load: float = 1.0, objective: str = "latency", radio: str = "wifi",
          device_power_mw: float = DEFAULT_DEVICE_POWER_MW) -> Plan:
    """The cheapest plan under ``objective``; see the module docstring for the method and its limits.

    ``wire_bytes(tensor_index)`` is a tensor's size on the wire after compression (default: raw);
    ``download_wire_bytes`` the same for what the server sends back (default: ``wire_bytes``), which a
    runner may compress differently from its uploads.
    ``server_load`` multiplies every server time (SplitRunner passes its measured server time over
    the profile). ``network.rtt_s`` is the fixed cost of one offloaded request: SplitRunner passes the
    round trip plus the server's queue time plus its measured per-request overhead.
    ``radio`` picks the power model of the energy objective ("3g", "4g", "wifi").
    Raises ValueError when no plan satisfies the constraints (the pinned ops alone exceed the limit).
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    _radio(radio)
    if not (network.uplink_bps > 0 and network.downlink_bps > 0 and network.rtt_s >= 0):
        raise ValueError(f"network {network.name or ''}: bandwidths must be > 0 and the round trip >= 0, got "
                         f"{network.uplink_bps} / {network.downlink_bps} bit/s, {network.rtt_s} s")
    graph = OpGraph(costs)
    n = graph.n
    pinned = {int(op) for op in pinned_device_ops}
    bad = sorted(op for op in pinned if not 0 <= op < n)
    if bad:
        raise ValueError(f"pinned ops {bad} are out of range: the model has {n} ops")
    forced = graph.closure(pinned)
    wire = wire_bytes or _raw_bytes(costs)
    down_wire = download_wire_bytes or wire

    def breakdown(device: set[int]) -> Breakdown:
        return evaluate(costs, network, device, wire_bytes=wire, download_wire_bytes=down_wire,
                        server_load=server_load, radio=radio,
                        device_power_mw=device_power_mw, graph=graph)

    def fits(device: set[int]) -> bool:
        return device_memory_limit is None or peak_device_memory(costs, device, graph) <= device_memory_limit

    if not fits(forced):
        raise ValueError(f"the pinned ops (with their predecessors, {len(forced)} ops) need "
                         f"{peak_device_memory(costs, forced, graph)} bytes of device memory, over the "
                         f"limit of {device_memory_limit}")

    if graph.is_chain():
        start = max(forced) + 1 if forced else 0
        best = None
        for k in range(start, n + 1):
            device = set(range(k))
            if not fits(device):
                break  # peak memory only grows with the prefix
            candidate = breakdown(device)
            if best is None or _score(candidate, objective) < _score(best[1], objective):
                best = (device, candidate)
        return _plan(graph, best[0], best[1], objective, "exhaustive")

    model = _radio(radio)
    up_mw = model["alpha_up"] * network.uplink_bps / 1e6 + model["beta"]
    down_mw = model["alpha_down"] * network.downlink_bps / 1e6 + model["beta"]

    def download_ms(v: int) -> float:
        return sum(_transfer_ms(down_wire(t), network.downlink_bps) for t in costs.ops[v].outputs
                   if t in graph.graph_outputs)

    if objective == "latency":
        def op_cost(v: int, on_device: bool) -> float:
            op = costs.ops[v]
            return op.device_ms if on_device else op.server_ms * server_load + download_ms(v)

        def tensor_cost(t: int) -> float:
            return _transfer_ms(wire(t), network.uplink_bps)
    else:
        def op_cost(v: int, on_device: bool) -> float:
            op = costs.ops[v]
            return op.device_ms * (op.device_power_mw or device_power_mw) if on_device else download_ms(v) * down_mw

        def tensor_cost(t: int) -> float:
            return _transfer_ms(wire(t), network.uplink_bps) * up_mw

    # The pinned set itself (all-server when nothing is pinned) and all-device are always candidates.
    candidates = [forced, set(range(n))]
    cut = _min_cut(graph, op_cost, tensor_cost, forced, set(range(n)))
    candidates.append(cut)
    if not fits(cut):
        longest = 0
        while longest < n and fits(set(range(longest + 1))):
            longest += 1
        candidates.append(_min_cut(graph, op_cost, tensor_cost, forced, set(range(longest)) | forced))
    best = None
    for device in candidates:
        if not fits(device):
            continue
        candidate = breakdown(device)
        if best is None or _score(candidate, objective) < _score(best[1], objective):
            best = (device, candidate)
    return _plan(graph, best[0], best[1], objective, "min-cut")


# ---- K-way stage partitioning (model parallelism) ----
#
# A pipeline of K workers runs contiguous ranges of the ops in the model's order (stage s holds ops
# [bounds[s], bounds[s + 1])). At a cut position b every activation produced before b (or fed to
# the graph) and read at or after b crosses to the next stage, also when its reader is further on:
# a pipeline forwards it through the stages between. Per micro-batch, stage s costs
#     its ops' worker time x (1 + backward_factor when training)
#   + sending its outgoing cut forward (and, training, the gradients of its incoming cut back)
# over ``link_bps``. The pipeline's throughput is set by the slowest stage (GPipe: a batch of M
# micro-batches takes about (M + K - 1) x the slowest stage), so the objective is the slowest
# stage; ties go to the smaller sum of stage times.
#
# Memory of a stage: the constant tensors its ops read (weights), plus its activations. Training,
# each weight byte costs 2 x (1 + ``optimizer_slots``) + 2 bytes as the runtime holds them: the
# stage file keeps the initial variable and slots and the interpreter its live copies of both, the
# backward writes a gradient, and the update signature reads one (measured by the runtime's own
# accounting, memory_info, on the stages of benchmarks/train_pipeline.py). Activations: everything
# it produces or receives, times ``activation_copies`` (micro-batches in flight: M for GPipe, up to
# K - s for 1F1B); with ``recompute`` only the received cut is kept per micro-batch, plus one
# micro-batch's activations while it is recomputed. Inference keeps nothing for a backward: the received cut per micro-batch
# in flight plus one micro-batch's activations, an upper bound of its peak.
#
# Method: dynamic programming over the cut positions, O(K n^2). For a chain every assignment of
# ops to K ordered stages that respects the dependencies is such a partition, so the result is
# exact. For other DAGs it is exact among partitions contiguous in the model's op order, a
# heuristic among all dependency-respecting assignments (one that regroups independent branches
# can do better).


@dataclass(frozen=True)
class Stage:
    ops: tuple[int, ...]
    compute_ms: float           # worker time of its ops, backward included when training
    send_ms: float              # its outgoing cut forward (+ gradients of its incoming cut, training)
    time_ms: float              # compute_ms + send_ms: its time per micro-batch
    send_forward_bytes: int     # bytes of the outgoing cut per micro-batch
    weight_bytes: int
    memory_bytes: int


@dataclass(frozen=True)
class StagePlan:
    stages: tuple[Stage, ...]
    bottleneck_ms: float        # the slowest stage's time per micro-batch
    training: bool
    method: str                 # "exact (chain)" or "contiguous in op order (DAG heuristic)"

    def pipeline_ms(self, micro_batches: int) -> float:
        """GPipe estimate of one batch of ``micro_batches``: (M + K - 1) x the slowest stage."""
        return (micro_batches + len(self.stages) - 1) * self.bottleneck_ms

    def bubble_fraction(self, micro_batches: int) -> float:
        """(K - 1) / (M + K - 1): the share of a balanced pipeline's time its stages sit idle."""
        k = len(self.stages)
        return (k - 1) / (micro_batches + k - 1)


def cut_tensors(costs: ModelCosts, position: int, graph: OpGraph | None = None) -> list[int]:
    """Activations crossing a cut before op ``position``: written before it (or graph inputs) and
    read at or after it."""
    graph = graph or OpGraph(costs)
    crossing = []
    for t, readers in graph.consumers.items():
        p = graph.producer.get(t)
        if (p is None or p < position) and any(r >= position for r in readers):
            crossing.append(t)
    return sorted(crossing)


def solve_stages(costs: ModelCosts, stages: int, *, link_bps: float, memory_limit: int | None = None,
                 training: bool = False, backward_factor: float = 2.0, optimizer_slots: int = 2,
                 activation_copies: int = 1, recompute: bool = False,
                 wire_bytes: Callable[[int], int] | None = None) -> StagePlan:
    """K contiguous stages minimising the slowest stage (see the comment above for the model).

    Worker times are the ops' ``server_ms``. ``wire_bytes(tensor)``: a cut tensor's bytes on the link
    (default raw). Raises ValueError for bad arguments and when no partition fits ``memory_limit``
    (naming the smallest memory any K-stage partition needs).
    """
    graph = OpGraph(costs)
    n = graph.n
    if not 1 <= stages <= n:
        raise ValueError(f"stages must be between 1 and the number of ops ({n}), got {stages}")
    if not link_bps > 0:
        raise ValueError(f"link bandwidth must be > 0 bit/s, got {link_bps}")
    if backward_factor < 0 or optimizer_slots < 0 or activation_copies < 1:
        raise ValueError("backward_factor and optimizer_slots must be >= 0 and activation_copies >= 1, got "
                         f"{backward_factor}, {optimizer_slots}, {activation_copies}")
    wire = wire_bytes or _raw_bytes(costs)
    compute_scale = 1.0 + backward_factor if training else 1.0
    prefix_ms = [0.0]
    for op in costs.ops:
        prefix_ms.append(prefix_ms[-1] + op.server_ms * compute_scale)
    cuts = [cut_tensors(costs, b, graph) for b in range(n + 1)]
    cut_bytes = [sum(wire(t) for t in cut) for cut in cuts]
    cut_raw = [sum(costs.tensor_bytes[t] for t in cut) for cut in cuts]
    produced = [sum(costs.tensor_bytes[t] for t in op.outputs if t not in costs.constant_tensors)
                for op in costs.ops]
    weight_factor = 2 * (1 + optimizer_slots) + 2 if training else 1

    def send_ms(i: int, j: int) -> float:
        out = _transfer_ms(cut_bytes[j], link_bps) if j < n else 0.0
        back = _transfer_ms(cut_bytes[i], link_bps) if training and i > 0 else 0.0
        return out + back

    def stage_cost(i: int, j: int) -> float:
        return prefix_ms[j] - prefix_ms[i] + send_ms(i, j)

    # memory[i][j] for every range, built by extending each range to the left
    memory: list[dict[int, int]] = [dict() for _ in range(n + 1)]
    weights_of: list[dict[int, int]] = [dict() for _ in range(n + 1)]
    for j in range(1, n + 1):
        seen: set[int] = set()
        weight = activations = 0
        for i in range(j - 1, -1, -1):
            for t in costs.ops[i].inputs:
                if t in costs.constant_tensors and t not in seen:
                    seen.add(t)
                    weight += costs.tensor_bytes[t]
            activations += produced[i]
            received = cut_raw[i]
            if recompute or not training:
                kept = received * activation_copies + activations
            else:
                kept = (received + activations) * activation_copies
            weights_of[i][j] = weight
            memory[i][j] = weight * weight_factor + kept

    def fits(i: int, j: int) -> bool:
        return memory_limit is None or memory[i][j] <= memory_limit

    inf = (math.inf, math.inf)
    # best[s][j]: (slowest, sum) of the first j ops in s stages; back[s][j]: where stage s starts
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    back = [[-1] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = (0.0, 0.0)
    for s in range(1, stages + 1):
        for j in range(s, n - (stages - s) + 1):
            for i in range(s - 1, j):
                if best[s - 1][i][0] == math.inf or not fits(i, j):
                    continue
                c = stage_cost(i, j)
                candidate = (max(best[s - 1][i][0], c), best[s - 1][i][1] + c)
                if candidate < best[s][j]:
                    best[s][j], back[s][j] = candidate, i
    if best[stages][n][0] == math.inf:
        smallest = _smallest_memory(n, stages, memory)
        raise ValueError(f"no {stages}-stage partition fits the memory limit of {memory_limit} bytes per "
                         f"worker: the best needs {smallest} bytes on its largest stage")
    bounds = [n]
    for s in range(stages, 0, -1):
        bounds.append(back[s][bounds[-1]])
    bounds.reverse()
    plan_stages = []
    for i, j in zip(bounds, bounds[1:]):
        plan_stages.append(Stage(ops=tuple(range(i, j)), compute_ms=prefix_ms[j] - prefix_ms[i],
                                 send_ms=send_ms(i, j), time_ms=stage_cost(i, j),
                                 send_forward_bytes=cut_bytes[j] if j < n else 0,
                                 weight_bytes=weights_of[i][j], memory_bytes=memory[i][j]))
    method = "exact (chain)" if graph.is_chain() else "contiguous in op order (DAG heuristic)"
    return StagePlan(stages=tuple(plan_stages), bottleneck_ms=best[stages][n][0], training=training, method=method)


def _smallest_memory(n: int, stages: int, memory: list[dict[int, int]]) -> int:
    """The least, over K-stage partitions, of the largest stage's memory (same DP, memory as cost)."""
    best = [[math.inf] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for s in range(1, stages + 1):
        for j in range(s, n - (stages - s) + 1):
            best[s][j] = min(max(best[s - 1][i], memory[i][j]) for i in range(s - 1, j))
    return int(best[stages][n])

"""A SplitRunner's plan: the partitioner's inputs from the runner's model and estimates, and when
those estimates have moved far enough from the ones a plan was made with to plan again.

The runner keeps the plan and decides when to call these (``SplitRunner.replan``); everything here is
a pure function of what it is handed, so a ``planner=`` hook and the runner price cuts the same way.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from cloudsplit import compression as compression_modes
from cloudsplit.link_estimate import NetworkEstimate, estimate_moved, request_latency_ms


def tensor_wire_bytes(mode: str, info: Mapping[str, Any]) -> int:
    """Bytes the tensor described by ``info`` (an ``edge`` tensor detail) takes on the wire under ``mode``."""
    return compression_modes.wire_bytes(mode, info["dtype"], tuple(int(d) for d in info["shape"]))


def solve_split(network: NetworkEstimate, device_costs: Sequence[float], server_op_ms: Sequence[float] | None,
                ops, tensor_details, *, graph_inputs: Sequence[int], graph_outputs: Sequence[int],
                wire_bytes: Callable[[int], int], download_wire_bytes: Callable[[int], int],
                pinned_device_ops: Sequence[int], device_memory_limit: int | None, objective: str):
    """The partitioner's plan (``cloudsplit.partition.solve``) for the model's ops priced by the
    device's profile scaled by its load, the server's profile, and the link in ``network``."""
    from cloudsplit import partition

    device_ms = [ms * network.device_load for ms in device_costs]
    costs = partition.model_costs(device_ms, server_op_ms, ops, tensor_details,
                                  graph_inputs=graph_inputs, graph_outputs=graph_outputs)
    link = partition.Network(uplink_bps=network.uplink_bps, downlink_bps=network.downlink_bps,
                             rtt_s=request_latency_ms(network) / 1e3)
    return partition.solve(costs, link, wire_bytes=wire_bytes,
                           download_wire_bytes=download_wire_bytes, pinned_device_ops=pinned_device_ops,
                           device_memory_limit=device_memory_limit, server_load=network.server_load,
                           objective=objective)


def estimates_moved(old: NetworkEstimate | None, new: NetworkEstimate, threshold: float) -> str | None:
    """Why a plan made with estimates ``old`` is out of date under ``new`` (any of them moved by more
    than ``threshold``, relatively), or None."""
    if old is None:
        return "no plan yet"
    for name in ("uplink_bps", "downlink_bps", "server_load", "device_load"):
        if estimate_moved(getattr(new, name), getattr(old, name), threshold):
            return f"{name} {getattr(old, name):.4g} -> {getattr(new, name):.4g}"
    # Loopback and LAN round trips jitter by fractions of a millisecond; those never change a plan.
    old_latency, new_latency = request_latency_ms(old), request_latency_ms(new)
    if estimate_moved(new_latency, old_latency, threshold) and abs(new_latency - old_latency) > 2.0:
        return (f"request latency (round trip + overhead) {old_latency:.3g} -> {new_latency:.3g} ms")
    return None

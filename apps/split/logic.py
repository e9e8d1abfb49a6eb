"""The split dashboard without its window: a SplitRunner whose partitioner reads the link the user
sets (bandwidth, round trip), requests on a worker thread, and the per-layer picture of a plan.

This CPU is far faster than a phone, so (as apps/demo.py does) the runner plans with its measured
per-op device times multiplied by ``phone_slowdown``: over loopback the partitioner then offloads,
on a 3G-like link it keeps the work on the device. The default is 1000x. The demo CNN is tiny; at
200x, on a fast CPU, its 10 fused ops cost the phone about 9 ms. A server busy with other work
then measures a per-request overhead that large, and the partitioner rightly kept everything on
the device, even over loopback. The slider's bandwidth also shapes this runner's
uploads (``SplitRunner.uplink_limit_bps``), so what is measured matches what was planned for.
"""
from __future__ import annotations

import dataclasses
import pathlib
import threading
import time
from dataclasses import dataclass

import numpy as np

import edge
from apps.shared import cache_dir

MODEL_FILE = "small_cnn.edge"
LOOPBACK = (1e9, 0.2)   # (bits/s, round trip ms)
THREE_G = (1.1e6, 100.0)


def ensure_model(directory: pathlib.Path | None = None) -> pathlib.Path:
    """The demo's MobileNet-like CNN (apps/demo.py) converted to .edge, built once into the cache."""
    directory = pathlib.Path(directory) if directory else cache_dir("split")
    path = directory / MODEL_FILE
    if not path.exists():
        import onnx

        import converter
        from apps.demo import build_small_cnn

        onnx_path = directory / "small_cnn.onnx"
        onnx.save(build_small_cnn(), onnx_path)
        partial = directory / (MODEL_FILE + ".partial")
        converter.convert(str(onnx_path), output_path=str(partial))
        partial.replace(path)
    return path


@dataclass
class Layer:
    index: int
    name: str
    op: str
    where: str             # "device" or "server"
    cut_bytes: int         # bytes sent up after this layer (0 when nothing crosses here)


@dataclass
class RequestResult:
    outputs: dict
    placement: list[str]
    kind: str
    device_layers: int
    offloaded: bool
    fallback_reason: str | None
    estimated_ms: float | None
    measured_ms: float
    upload_bytes: int
    link: tuple[float, float]
    finished_at: float
    server_up: bool = True

    @property
    def fallback(self) -> bool:
        """The answer came from the device because the service failed or is known to be down."""
        return self.fallback_reason is not None or not self.server_up


class SplitDashboard:
    def __init__(self, model_path: str | pathlib.Path | None = None, server: str | None = None, *,
                 phone_slowdown: float = 1000.0, compression: str = "fp16", deadline_s: float = 1.0,
                 num_threads: int = 1):
        from cloudsplit.client import SplitRunner
        from cloudsplit.server import start_server

        self.model_path = pathlib.Path(model_path) if model_path else ensure_model()
        self.server_handle = None
        if server is None:
            self.server_handle = start_server([str(self.model_path)], threads=2)
            server = f"127.0.0.1:{self.server_handle.port}"
        self.server_address = server
        self.phone_slowdown = phone_slowdown
        with SplitRunner(self.model_path, server=server, num_threads=num_threads) as measured:
            self.phone_costs = [ms * phone_slowdown for ms in measured.device_costs]
        self._lock = threading.RLock()
        self.link = LOOPBACK
        self.shape_uplink = True
        self.runner = SplitRunner(self.model_path, server=server, num_threads=num_threads, compression=compression,
                                  deadline_s=deadline_s, device_costs=self.phone_costs, planner=self._plan_for_link)
        self.deadline_s = deadline_s
        self.ops = self.runner.ops
        self._input = self.runner.interpreter.get_input_details()[0]
        self._applied_link = None
        self.local = edge.Interpreter(model_path=str(self.model_path), num_threads=num_threads)
        self.local.allocate_tensors()

    # ---- the link the user sets ----

    def set_link(self, bandwidth_bps: float, rtt_ms: float) -> None:
        """Takes effect at the next request (the runner re-plans before it)."""
        with self._lock:
            self.link = (float(bandwidth_bps), float(rtt_ms))

    def _apply_link(self) -> None:
        bandwidth, rtt = self.link
        if self._applied_link == self.link:
            return
        runner = self.runner
        runner.uplink_limit_bps = bandwidth if self.shape_uplink and bandwidth < 1e9 else None
        # The runner re-plans when its estimates move past its threshold from the planned ones.
        runner.network.uplink_bps = runner.network.downlink_bps = bandwidth
        runner.network.rtt_ms = rtt
        self._applied_link = self.link

    def _plan_for_link(self, runner):
        """The runner's planner hook: its own partitioner, fed the user's link instead of its
        measured one (its measured server times, loads and per-request overhead are kept)."""
        bandwidth, rtt = self.link
        measured = runner.network
        runner.network = dataclasses.replace(measured, uplink_bps=bandwidth, downlink_bps=bandwidth, rtt_ms=rtt)
        try:
            return runner.partition_plan()
        finally:
            runner.network = measured

    def plan_for(self, bandwidth_bps: float, rtt_ms: float):
        """What the partitioner picks for this link (no request is sent)."""
        with self._lock:
            saved = self.link
            self.link = (float(bandwidth_bps), float(rtt_ms))
            try:
                return self._plan_for_link(self.runner)
            finally:
                self.link = saved

    # ---- requests ----

    def sample_input(self, seed: int = 0) -> np.ndarray:
        shape = tuple(int(d) for d in self._input["shape"])
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

    def run_local(self, image: np.ndarray) -> dict:
        self.local.set_tensor(self._input["index"], image)
        self.local.invoke()
        return {d["name"]: self.local.get_tensor(d["index"]).copy() for d in self.local.get_output_details()}

    def request(self, image: np.ndarray) -> RequestResult:
        with self._lock:
            self._apply_link()
            link = self.link
            outputs = self.runner.run({self._input["name"]: image})
            record = self.runner.last_plan
            server_up = self.runner.server_up
        device_layers = sum(1 for where in record.placement if where == "device")
        return RequestResult(
            outputs={k: np.array(v) for k, v in outputs.items()}, placement=list(record.placement), kind=record.kind,
            device_layers=device_layers, offloaded=record.offloaded, fallback_reason=record.fallback_reason,
            estimated_ms=record.predicted.total_ms if record.predicted is not None else None,
            measured_ms=record.measured.total_ms, upload_bytes=record.upload_bytes, link=link,
            finished_at=time.monotonic(), server_up=server_up)

    def input_upload_bytes(self, plan) -> int:
        """Bytes of graph inputs the plan sends up as they are (the server runs from the first op)."""
        producer = {t for op in self.ops for t in op["outputs"] if t >= 0}
        return sum(self.runner.wire_bytes(t) for t in (plan.upload if plan is not None and plan.server_ops else ())
                   if t not in producer)

    def layers(self, plan) -> list[Layer]:
        """One entry per op with where the plan runs it and the bytes that cross after it."""
        placement = plan.placement if plan is not None else ("device",) * len(self.ops)
        producer = {t: op["index"] for op in self.ops for t in op["outputs"] if t >= 0}
        crossing: dict[int, int] = {}
        for tensor in (plan.upload if plan is not None and plan.server_ops else ()):
            op = producer.get(tensor, -1)
            crossing[op] = crossing.get(op, 0) + self.runner.wire_bytes(tensor)
        return [Layer(op["index"], op.get("name", ""), op["op"], placement[op["index"]],
                      crossing.get(op["index"], 0)) for op in self.ops]

    # ---- the service ----

    def stop_server(self) -> None:
        if self.server_handle is not None:
            self.server_handle.stop(0)

    def close(self) -> None:
        self.runner.close()
        self.local.close()
        self.stop_server()


class RequestLoop:
    """Sends requests one after another on a worker thread while running; each result goes to
    ``on_result`` (from the worker: the UI hands it to its own thread)."""

    def __init__(self, dashboard: SplitDashboard, on_result, interval_s: float = 0.05):
        self.dashboard, self.on_result, self.interval_s = dashboard, on_result, interval_s
        self.image = dashboard.sample_input()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="split-requests", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.on_result(self.dashboard.request(self.image))
            except Exception as error:  # a result is always expected; anything else is shown
                self.errors.append(f"{type(error).__name__}: {error}")
            self._stop.wait(self.interval_s)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

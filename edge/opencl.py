"""OpenCL devices the runtime can use (``Interpreter(..., backend="opencl")``), and the placement
policy of ``backend="auto"``.

    import edge.opencl
    for device in edge.opencl.devices():
        print(device["index"], device["name"], device["type"])
    table = edge.opencl.tune("model.edge")     # what `edge tune` runs: tiles, times, plan, stored

The C runtime opens libOpenCL at the first call ($EDGE_OPENCL_LIBRARY names another library);
``available()`` is False, and ``devices()`` empty, where it cannot. The runtime provides the
mechanism (which ops the GPU may take: ``Interpreter.set_op_devices``); the policy is here:
``plan_placement`` picks, from measured op times and copy costs, which ops run where, ``tune``
measures them and stores the plan that ``Interpreter(backend="auto")`` then follows. ``tune_tiles``
picks, per device, the tile size of the GEMM kernels (FULLY_CONNECTED, MatMul, 1x1 and implicit-GEMM
convolutions) by timing the model's ops with each candidate; the runtime reads that table whenever
it opens the device and uses a 16 x 16 tile where there is none.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from cruntime.binding import ffi, load_library
from edge.errors import UnsupportedError, error_for_status


def _string(chars) -> str:
    return ffi.string(chars).decode("utf-8", "replace")


def devices() -> list[dict[str, Any]]:
    """Every OpenCL device, in platform order, with its limits. ``index`` is what
    ``Interpreter(gpu_device=...)`` takes (1-based; 0 means the first GPU)."""
    lib = load_library()
    count = ffi.new("int32_t *")
    status = lib.edge_opencl_num_devices(count)
    if status != 0:
        error = error_for_status(status, _string(lib.edge_last_error()))
        if isinstance(error, UnsupportedError):
            return []
        raise error
    found = []
    for i in range(count[0]):
        info = ffi.new("edge_opencl_device_info *")
        status = lib.edge_opencl_device(i, info)
        if status != 0:
            raise error_for_status(status, _string(lib.edge_last_error()))
        found.append({
            "index": i + 1, "platform": _string(info.platform), "name": _string(info.name),
            "vendor": _string(info.vendor), "version": _string(info.version), "driver": _string(info.driver),
            "type": "gpu" if info.is_gpu else "other", "compute_units": info.compute_units,
            "clock_mhz": info.clock_mhz, "fp16": bool(info.fp16), "global_memory": int(info.global_memory),
            "local_memory": int(info.local_memory), "max_allocation": int(info.max_allocation),
            "max_work_group": int(info.max_work_group),
        })
    return found


def available() -> bool:
    """Whether an OpenCL library with at least one device could be opened."""
    return bool(devices())


# ---- placement from measured times (`edge tune`, backend="auto") ----
#
# Ops run in model order, each on the CPU or (where the GPU has a kernel) the GPU. A run of ops on
# one device is a partition; where the device changes, the tensors live across that point move
# (bytes / link rate) and the queue is synchronised (sync_ms). The host holds the inputs before the
# first op and reads the outputs after the last. Dynamic programming over (op, device) gives the
# cheapest assignment: exact for this cost model, which counts each crossing point's live tensors
# (a tensor read far later crosses once per change of device it outlives, as the runtime copies
# it at most once per direction; the model may count it more often: an upper bound).

DEFAULT_LINK_BYTES_PER_S = 8e9     # host <-> device copies; `edge tune` measures the device's own
DEFAULT_SYNC_MS = 0.02


def crossing_bytes(ops: Sequence[Mapping[str, Any]], tensor_bytes: Mapping[int, int],
                   graph_inputs: Sequence[int], graph_outputs: Sequence[int]) -> list[int]:
    """bytes[i]: activations written before op i (or fed to the graph) and read at or after op i;
    bytes[n]: the graph's outputs."""
    n = len(ops)
    producer = {t: i for i, op in enumerate(ops) for t in op["outputs"] if t >= 0}
    last_read: dict[int, int] = {}
    for i, op in enumerate(ops):
        for t in op["inputs"]:
            if t >= 0 and t in tensor_bytes:
                last_read[t] = i
    result = [0] * (n + 1)
    for t, last in last_read.items():
        first = producer.get(t, -1) + 1 if t in producer else (0 if t in graph_inputs else None)
        if first is None:
            continue
        for i in range(max(first, 0), last + 1):
            result[i] += tensor_bytes[t]
    result[n] = sum(tensor_bytes.get(t, 0) for t in graph_outputs)
    return result


def plan_placement(cpu_ms: Sequence[float], gpu_ms: Sequence[float | None], crossing: Sequence[int], *,
                   link_bytes_per_s: float = DEFAULT_LINK_BYTES_PER_S,
                   sync_ms: float = DEFAULT_SYNC_MS) -> tuple[list[str], float, float]:
    """(per op "cpu" or "gpu", the plan's predicted ms, the all-CPU ms). ``gpu_ms[i]`` None: the GPU
    has no kernel for op i. ``crossing``: crossing_bytes()."""
    n = len(cpu_ms)
    if len(gpu_ms) != n or len(crossing) != n + 1:
        raise ValueError(f"{n} CPU times need {n} GPU times and {n + 1} crossing sizes")

    def move(i: int) -> float:
        return crossing[i] / link_bytes_per_s * 1e3 + sync_ms

    inf = float("inf")
    best = [[inf, inf] for _ in range(n + 1)]   # best[i][d]: ops [0, i) done, the data on device d (0 CPU)
    back: list[list[int]] = [[0, 0] for _ in range(n + 1)]
    best[0][0] = 0.0
    for i in range(n):
        for d, cost in ((0, cpu_ms[i]), (1, gpu_ms[i])):
            if cost is None:
                continue
            for prev in (0, 1):
                total = best[i][prev] + (move(i) if prev != d else 0.0) + cost
                if total < best[i + 1][d]:
                    best[i + 1][d], back[i + 1][d] = total, prev
    end = min((best[n][0], 0), (best[n][1] + move(n), 1))
    devices, d = [], end[1]
    for i in range(n, 0, -1):
        devices.append("gpu" if d else "cpu")
        d = back[i][d]
    return devices[::-1], end[0], float(sum(cpu_ms))


def _cache_dir():
    import os
    import pathlib

    configured = os.environ.get("EDGE_OPENCL_CACHE")
    base = pathlib.Path(configured) if configured else pathlib.Path.home() / ".cache" / "edgesplit" / "opencl"
    return base / "tuning"


def _pick_device(device_index: int) -> dict[str, Any] | None:
    """The device ``gpu_device=device_index`` opens (0: the first GPU, else the first device)."""
    found = devices()
    if not found:
        return None
    if device_index == 0:
        return next((d for d in found if d["type"] == "gpu"), found[0])
    return found[device_index - 1] if 0 < device_index <= len(found) else None


def _table_path(model, precision: str, device_index: int):
    import hashlib
    import os

    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as f:
            data = f.read()
    else:
        data = bytes(model)
    pick = _pick_device(device_index)
    if pick is None:
        return None
    key = hashlib.sha256(data + f"|{pick['name']}|{pick['driver']}|{precision}".encode()).hexdigest()[:32]
    return _cache_dir() / f"{key}.json"


def tuned_placement(model, precision: str = "fp32", device_index: int = 0) -> list[str] | None:
    """The placement ``edge tune`` stored for this model (bytes or path), device and precision."""
    import json

    path = _table_path(model, precision, device_index)
    if path is None or not path.exists():
        return None
    try:
        devices_ = json.loads(path.read_text())["devices"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged entry is ignored, never trusted
    return devices_ if isinstance(devices_, list) and all(d in ("cpu", "gpu") for d in devices_) else None


# ---- the per-device tile table (gemm.cl's kernels; `edge tune`, read by the runtime) ----

TILED_KERNELS = ("gemm", "conv_gemm")
TILE_CANDIDATES = (8, 16, 32)      # work-groups of tile x tile / 4


def tuning_file(device_index: int = 0):
    """The device's tile table (the C runtime's path: in the binary cache's folder, keyed by the
    device's name and driver)."""
    import pathlib

    lib = load_library()
    path = ffi.new("char[1024]")
    status = lib.edge_opencl_tuning_file(device_index, path, 1024)
    if status != 0:
        raise error_for_status(status, _string(lib.edge_last_error()))
    return pathlib.Path(_string(path))


def read_tiles(device_index: int = 0) -> dict[str, int]:
    """The tile sizes stored for the device (the runtime uses 16 for a kernel not listed)."""
    try:
        lines = tuning_file(device_index).read_text().splitlines()
    except OSError:
        return {}
    tiles = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0] in TILED_KERNELS and parts[1] in {str(t) for t in TILE_CANDIDATES}:
            tiles[parts[0]] = int(parts[1])
    return tiles


def write_tiles(tiles: Mapping[str, int], device_index: int = 0) -> None:
    """Stores the device's tile table (atomically); interpreters created afterwards use it."""
    import os

    unknown = {k: v for k, v in tiles.items() if k not in TILED_KERNELS or v not in TILE_CANDIDATES}
    if unknown:
        raise ValueError(f"tiles {unknown}: kernels are {TILED_KERNELS}, tiles {TILE_CANDIDATES}")
    path = tuning_file(device_index)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text("".join(f"{kernel} {tile}\n" for kernel, tile in sorted(tiles.items())))
    os.replace(temporary, path)


def tune_tiles(model_path: str, *, precision: str = "fp32", device_index: int = 0, runs: int = 10) -> dict[str, Any]:
    """For each tiled kernel the model's GPU ops use, times those ops with each candidate tile the
    device can run (the others at their best so far) and stores the fastest. Returns
    {"tiles": chosen, "ms": {kernel: {tile: ms of its ops}}}."""
    from edge.bench import profile

    device = _pick_device(device_index)
    candidates = [t for t in TILE_CANDIDATES if device is None or t * t // 4 <= device["max_work_group"]]
    previous = read_tiles(device_index)
    tiles = dict(previous)
    measured: dict[str, dict[int, float]] = {}

    def kernel_ms(kernel: str) -> tuple[float, int]:
        entries = profile(model_path, runs=runs, backend="opencl", gpu_precision=precision, gpu_device=device_index)
        mine = [e["ms"] for e in entries if e["kernel"] and e["kernel"]["name"] == kernel]
        return sum(mine), len(mine)

    try:
        for kernel in TILED_KERNELS:
            for tile in candidates:
                write_tiles({**tiles, kernel: tile}, device_index)
                ms, count = kernel_ms(kernel)
                if count == 0:
                    break  # the model has no op on this kernel
                measured.setdefault(kernel, {})[tile] = ms
            if kernel in measured:
                tiles[kernel] = min(measured[kernel], key=measured[kernel].get)
    finally:
        write_tiles(tiles, device_index)
    return {"tiles": {k: tiles.get(k, 16) for k in TILED_KERNELS}, "ms": measured, "path": str(tuning_file(device_index))}


def tune(model_path: str, *, precision: str = "fp32", device_index: int = 0, runs: int = 10,
         num_threads: int = 1, tiles: bool = True) -> dict[str, Any]:
    """Measures every op on the CPU kernels and (where it has a kernel) on the GPU, plans the
    placement and stores it for ``backend="auto"``. With ``tiles``, first picks the device's tile
    sizes (tune_tiles), so the GPU times are those of the tuned kernels. Returns the table."""
    import json
    import os

    from edge.bench import profile
    from edge.interpreter import Interpreter

    tuned = tune_tiles(model_path, precision=precision, device_index=device_index, runs=runs) if tiles else None
    cpu = {e["index"]: e["ms"] for e in profile(model_path, runs=runs, num_threads=num_threads)}
    gpu_entries = profile(model_path, runs=runs, num_threads=num_threads, backend="opencl", gpu_precision=precision,
                          gpu_device=device_index)
    gpu = {e["index"]: e["ms"] if e["device"] == "gpu" else None for e in gpu_entries}
    with Interpreter(model_path=model_path) as interpreter:
        interpreter.allocate_tensors()
        ops = interpreter.op_details()
        details = interpreter.get_tensor_details()
        tensor_bytes = {d["index"]: int(d["nbytes"]) for d in details if d["kind"] == "activation"}
        crossing = crossing_bytes(ops, tensor_bytes, [d["index"] for d in interpreter.get_input_details()],
                                  [d["index"] for d in interpreter.get_output_details()])
    n = len(ops)
    link = _measure_link(precision, device_index)
    placement, predicted, all_cpu = plan_placement([cpu[i] for i in range(n)], [gpu[i] for i in range(n)], crossing,
                                                   link_bytes_per_s=link)
    table = {"model": os.path.abspath(model_path), "precision": precision, "cpu_ms": [cpu[i] for i in range(n)],
             "gpu_ms": [gpu[i] for i in range(n)], "crossing_bytes": crossing, "link_bytes_per_s": link,
             "devices": placement, "predicted_ms": predicted, "all_cpu_ms": all_cpu,
             "ops": [op["op"] for op in ops], "tiles": tuned}
    path = _table_path(model_path, precision, device_index)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        temporary.write_text(json.dumps(table))
        os.replace(temporary, path)
        table["path"] = str(path)
    return table


def _measure_link(precision: str, device_index: int) -> float:
    """Host -> device -> host bytes per second of a 16 MiB copy on the device (the C runtime's own
    transfers; fp16 storage moves half the bytes of the float32 it converts)."""
    lib = load_library()
    rate = ffi.new("double *")
    status = lib.edge_opencl_copy_rate(device_index, 16 << 20, 5, rate)
    if status != 0:
        raise error_for_status(status, _string(lib.edge_last_error()))
    return float(rate[0]) * (2.0 if precision == "fp16" else 1.0)

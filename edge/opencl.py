"""OpenCL devices the runtime can use (``Interpreter(..., backend="opencl")``).

    import edge.opencl
    for device in edge.opencl.devices():
        print(device["index"], device["name"], device["type"])

The C runtime opens libOpenCL at the first call ($EDGE_OPENCL_LIBRARY names another library);
``available()`` is False, and ``devices()`` empty, where it cannot.
"""
from __future__ import annotations

from typing import Any

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

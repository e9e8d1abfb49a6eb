"""Typed exceptions, one per edge_status, each carrying the C runtime's message."""
from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the runtime reports. ``status`` is the C edge_status name."""

    status = "EDGE_ERROR"


class InvalidModelError(EdgeError):
    status = "EDGE_INVALID_MODEL"


class InvalidArgumentError(EdgeError, ValueError):
    status = "EDGE_INVALID_ARGUMENT"


class UnsupportedError(EdgeError):
    status = "EDGE_UNSUPPORTED"


class OutOfMemoryError(EdgeError, MemoryError):
    status = "EDGE_OUT_OF_MEMORY"


class BadStateError(EdgeError):
    status = "EDGE_BAD_STATE"


class EdgeRuntimeError(EdgeError, RuntimeError):
    status = "EDGE_RUNTIME_ERROR"


class ModelIOError(EdgeError, OSError):
    status = "EDGE_IO_ERROR"


# edge_status value -> exception class (the values of the enum in cruntime/include/edge.h).
ERROR_BY_STATUS: dict[int, type[EdgeError]] = {
    1: InvalidModelError,
    2: InvalidArgumentError,
    3: UnsupportedError,
    4: OutOfMemoryError,
    5: BadStateError,
    6: EdgeRuntimeError,
    7: ModelIOError,
}


def error_for_status(status: int, message: str) -> EdgeError:
    cls = ERROR_BY_STATUS.get(int(status))
    if cls is None:
        return EdgeError(f"unknown status {int(status)}: {message}")
    return cls(message)

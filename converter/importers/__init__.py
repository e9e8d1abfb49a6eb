"""Importers: source model formats -> IR graphs.

``load_onnx`` is imported on first use so that importing the package does not need onnx.
"""
from __future__ import annotations

__all__ = ["load_onnx"]


def __getattr__(name):
    if name == "load_onnx":
        from converter.importers.onnx import load_onnx
        return load_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Host tooling: ONNX/TFLite/builder graphs -> IR -> passes -> .edge files.

Public API: ``convert`` (source model -> ConversionResult), ``load_onnx``, ``optimize``,
``write_model``, ``read_model``, ``GraphBuilder``, ``ConversionError``. Submodules load on first
use, so ``import converter`` needs neither onnx nor the op table.
"""
from __future__ import annotations

from converter.errors import ConversionError, UnsupportedOpsError

_LAZY = {
    "convert": ("converter.api", "convert"),
    "ConversionResult": ("converter.api", "ConversionResult"),
    "ConversionReport": ("converter.report", "ConversionReport"),
    "load_onnx": ("converter.importers.onnx", "load_onnx"),
    "optimize": ("converter.passes", "optimize"),
    "write_model": ("converter.writer", "write_model"),
    "read_model": ("converter.reader", "read_model"),
    "GraphBuilder": ("converter.builder", "GraphBuilder"),
}

__all__ = ["ConversionError", "UnsupportedOpsError", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'converter' has no attribute {name!r}")

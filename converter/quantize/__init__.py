"""Quantization of an optimized IR graph: float16 weights, dynamic int8, full int8.

Public API
----------
    from converter.quantize import quantize, ImagePreprocessing

    graph_q, report = quantize(graph, "int8", calibration="data.npy",
                               method="minmax", keep_float=("conv3",))
    print(report)                      # per-layer SQNR vs float32, ops left in float
    report.layers                      # [LayerError(node, op, tensor, sqnr_db)]
    report.flagged()                   # layers below report.flag_below_db (20 dB)

``graph`` is the graph ``converter.passes.optimize`` returns (NHWC, activations fused); the
result is written by ``converter.writer.write_model`` and runs in ``converter.reference.run``
(its int8 nodes through converter.ops.int8_reference, the bit-exact integer oracle).

``mode``:
  * "fp16"    float32 constants with >= 16 elements become float16 + a Dequantize node.
  * "dynamic" FullyConnected / Conv2D / BatchMatMul-with-constant-b get int8 per-channel
              weights; activations stay float32 (quantized per row at run time by the kernel).
  * "int8"    full integer: int8 per-channel symmetric weights, int32 biases, int8 per-tensor
              asymmetric activations from calibration; ops without an int8 kernel stay float
              with Quantize/Dequantize inserted; graph inputs and outputs stay float32.
``calibration`` (int8; optional for the others, then used for the SQNR report only):
  a path to a .npy (single-input models: samples stacked on the batch axis), a .npz (one
  array per input name), or a folder of images (with ``preprocessing=ImagePreprocessing(...)``
  for resize/mean/std/layout/channel order); or an array, a {input name: array} dict, or a
  list of feed dicts. Bad data raises ConversionError naming the problem.
``method``: "minmax", "percentile" (``percentile=99.99``), "mse" (clipping threshold that
  minimises the quantization MSE over each tensor's histogram) or "auto" (per tensor, the one of
  those with the smallest histogram MSE; ``report.methods`` lists the choice).
Sentinels (-inf attention masks, finfo.min padding) never set a range: see
  converter.quantize.int8 and ``report.sentinels``.
``keep_float``: node names or output tensor names whose ops stay float32.
``smoothing`` (int8): the SmoothQuant migration strength alpha in (0, 1) with which LayerNorm
  outputs feeding FullyConnected layers are evened out before calibration (per-channel scales
  folded into the LayerNorm and the weights; exact in float, see converter.quantize.smoothing;
  ``report.smoothed`` lists them); None turns it off.
``sqnr_batches``: how many calibration batches the per-layer error is measured on.
``progress``: show a rich progress bar while calibrating.
"""
from __future__ import annotations

from typing import Iterable

from converter.errors import ConversionError
from converter.ir import Graph
from converter.reference import ReferenceRunError
from converter.quantize.calibration import CALIBRATION_NAMES as CALIBRATION_METHODS
from converter.quantize.calibration import ImagePreprocessing, load_calibration
from converter.quantize.common import (QuantizedLayer, check_quantizable, drop_unused, measure_sqnr,
                                       resolve_keep_float, used_constants)
from converter.quantize.report import FloatOp, LayerError, QuantizationReport, SentinelHandling
from converter.quantize.smoothing import DEFAULT_ALPHA as SMOOTHING_ALPHA

MODES = ("fp16", "dynamic", "int8")
DEFAULT_SQNR_BATCHES = 8


def _fp16(graph, keep, batches, options, report):
    from converter.quantize.fp16 import quantize_fp16

    result, layers, added = quantize_fp16(graph, keep)
    report.dequantize_nodes = added
    return result, layers


def _dynamic(graph, keep, batches, options, report):
    from converter.quantize.dynamic import quantize_dynamic

    result, layers, left = quantize_dynamic(graph, keep)
    report.float_ops.extend(FloatOp(*entry) for entry in left)
    return result, layers


def _int8(graph, keep, batches, options, report):
    from converter.quantize.int8 import quantize_int8

    if not batches:
        raise ConversionError("int8 quantization needs calibration data (--calibration DATA): "
                              "a .npy, a .npz keyed by input name, or a folder of images")
    return quantize_int8(graph, keep, batches, options, report)


# mode -> (graph, kept node indices, calibration batches, options, report) -> (graph, layers)
MODE_TABLE = {"fp16": _fp16, "dynamic": _dynamic, "int8": _int8}


def quantize(graph: Graph, mode: str, calibration=None, method: str = "minmax", *,
             keep_float: Iterable[str] = (), percentile: float = 99.99,
             preprocessing: ImagePreprocessing | None = None, max_batches: int | None = None,
             sqnr_batches: int = DEFAULT_SQNR_BATCHES, progress: bool = False,
             smoothing: float | None = SMOOTHING_ALPHA) -> tuple[Graph, QuantizationReport]:
    """Quantizes ``graph``; returns the new graph and its QuantizationReport (see the module doc)."""
    if mode not in MODE_TABLE:
        raise ConversionError(f"quantization mode {mode!r} is not one of {', '.join(MODES)}")
    if method not in CALIBRATION_METHODS:
        raise ConversionError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if not 50.0 < percentile <= 100.0:
        raise ConversionError(f"percentile {percentile} must be in (50, 100]")
    check_quantizable(graph)
    keep = resolve_keep_float(graph, keep_float)
    batches = load_calibration(calibration, graph, preprocessing, max_batches) if calibration is not None else []
    report = QuantizationReport(mode=mode, method=method if mode == "int8" else None,
                                kept_float=[n for n in keep_float or () if n])
    before = used_constants(graph)
    report.weights_bytes_before = sum(graph.tensors[n].nbytes for n in before)
    if smoothing is not None and not 0.0 < smoothing < 1.0:
        raise ConversionError(f"smoothing strength {smoothing} must be in (0, 1), or None for no smoothing")
    options = {"method": method, "percentile": percentile, "progress": progress, "smoothing": smoothing}
    try:
        result, layers = MODE_TABLE[mode](graph, keep, batches, options, report)
    except ReferenceRunError as exc:
        raise ConversionError(f"calibration: the reference executor failed: {exc}") from exc
    constants, tensors = drop_unused(result.constants, dict(result.tensors), result.nodes,
                                     (*result.inputs, *result.outputs))
    quantization = {k: v for k, v in result.quantization.items() if k in tensors}
    result = result.replace(constants=constants, tensors=tensors, quantization=quantization)
    report.quantized = list(dict.fromkeys((layer.node, layer.op) for layer in layers))
    report.weights_bytes_after = sum(result.tensors[n].nbytes for n in used_constants(result))
    if batches and layers:
        measured = batches[:max(0, sqnr_batches)]
        report.sqnr_samples = len(measured)
        if measured:
            try:
                report.layers = measure_sqnr(graph, result, measured, layers)
            except ReferenceRunError as exc:
                raise ConversionError(f"quantization error report: the reference executor failed: {exc}") from exc
    return result, report


__all__ = ["quantize", "MODES", "CALIBRATION_METHODS", "ImagePreprocessing", "QuantizationReport",
           "LayerError", "FloatOp", "SentinelHandling", "QuantizedLayer", "load_calibration"]

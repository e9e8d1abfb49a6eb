"""One call from a source model to .edge bytes: import, optimize, write."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from converter.errors import ConversionError
from converter.ir import Graph
from converter.passes import fuse_residual_add, lower_batch_norm, optimize as optimize_graph, run_passes, to_nhwc
from converter.report import BOUNDARY_KEY, ConversionReport
from converter.writer import write_model


# What a graph needs before it can be written at all, when the optimizations are skipped.
REQUIRED_PASSES = (lower_batch_norm, to_nhwc)


@dataclass
class ConversionResult:
    graph: Graph
    data: bytes
    report: ConversionReport

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as f:
            f.write(self.data)


def _import(model, input_shapes) -> Graph:
    if isinstance(model, Graph):
        if input_shapes:
            raise ConversionError("input_shapes applies to ONNX models, not to an IR Graph")
        return model
    if _is_tflite(model):
        from converter.importers.tflite import load_tflite

        if input_shapes:
            raise ConversionError("input_shapes applies to ONNX models; a TFLite model's shapes are fixed")
        return load_tflite(model)
    from converter.importers.onnx import load_onnx

    return load_onnx(model, input_shapes=input_shapes)


def _bind_lengths(graph: Graph, model, input_shapes) -> tuple[Graph, list[str], list[str]]:
    """An ONNX model with dynamic input dims converted at sizes >= 2 is imported once more with
    them halved, and its length-dependent constants become run-time slices
    (converter.passes.length), so the model runs at any size up to the converted one."""
    from converter.passes.length import bind_length_constants, shrunk_lengths

    if isinstance(model, Graph) or _is_tflite(model):
        return graph, [], []
    shorter = shrunk_lengths(graph)
    if not shorter:
        return graph, [], []
    try:
        other = _import(model, {**(input_shapes or {}), **shorter})
    except ConversionError as error:
        return graph, [], [f"the model does not import at the shorter sizes {shorter}: {error}"]
    return bind_length_constants(graph, other)


def _is_tflite(model) -> bool:
    """TFLite files are recognised by their FlatBuffer file identifier, not by their extension."""
    from converter.importers.tflite import is_tflite

    if isinstance(model, (bytes, bytearray, memoryview)):
        return is_tflite(bytes(model[:8]))
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                return is_tflite(f.read(8))
        except OSError:
            return False
    return False


def _quantize(graph: Graph, mode: str, calibration, method: str, keep_float, preprocessing, progress):
    from converter.quantize import quantize

    return quantize(graph, mode, calibration=calibration, method=method, keep_float=keep_float,
                    preprocessing=preprocessing, progress=progress)


def _trainable(graph: Graph, training, optimize: bool, quantize):
    """``training``: a converter.autodiff.TrainingConfig (or a dict of its fields)."""
    from converter.autodiff import TrainingConfig
    from converter.autodiff.pipeline import trainable_graph

    if quantize is not None:
        raise ConversionError(f"a trainable model cannot be quantized (--quantize {quantize}): training "
                              f"updates float32 weights; quantize the exported model instead")
    config = TrainingConfig(**training) if isinstance(training, dict) else training
    return trainable_graph(graph, config, optimize)


def convert(model, output_path: str | os.PathLike | None = None, *,
            input_shapes: Mapping[str, tuple[int, ...]] | None = None,
            optimize: bool = True, quantize: str | None = None, calibration=None,
            calibration_method: str = "minmax", keep_float=(), image_preprocessing=None,
            progress: bool = False, training=None) -> ConversionResult:
    """Converts an ONNX model (path or ModelProto), a TFLite model (path or bytes, recognised by its
    ``TFL3`` file identifier) or an IR Graph to .edge bytes.

    Raises UnsupportedOpsError (listing every unsupported op) or ConversionError before anything
    is written; writes ``output_path`` only on success. ``optimize=False`` runs only the passes
    writing needs (BatchNorm lowering, NHWC conversion).

    ``quantize`` ("fp16", "dynamic", "int8") quantizes the optimized graph before it is written,
    with ``calibration`` data, ``calibration_method``, ``keep_float`` names and
    ``image_preprocessing`` as converter.quantize.quantize takes them; the report then carries
    the QuantizationReport as ``report.quantization``.

    ``training`` (a converter.autodiff.TrainingConfig or a dict of its fields) makes the model
    trainable: the file gets the infer, grad and train signatures (see converter.autodiff).
    """
    source = _import(model, input_shapes)
    source, bound, notes = _bind_lengths(source, model, input_shapes)
    if training is not None:
        graph, passes = _trainable(source, training, optimize, quantize)
    else:
        # int8 mode has int8 kernels for the unfused attention products, none for Attention.
        graph, passes = (optimize_graph(source, attention=quantize != "int8") if optimize
                         else run_passes(source, REQUIRED_PASSES))
    quantization = None
    if quantize is not None:
        graph, quantization = _quantize(graph, quantize, calibration, calibration_method, keep_float,
                                        image_preprocessing, progress)
    if optimize and training is None and quantize in (None, "fp16"):
        # After quantization, which has no int8 convolution with a residual to map it to.
        graph, residual = run_passes(graph, (fuse_residual_add,))
        passes.passes.extend(residual.passes)
    data = write_model(graph)
    report = ConversionReport(
        source_ops=source.op_counts(), final_ops=graph.op_counts(),
        folded=passes.folded, fused=passes.fused, removed=passes.removed,
        transposes_left=graph.op_counts().get("Transpose", 0),
        constants_bytes=sum(graph.tensors[n].nbytes for n in graph.constants),
        file_size=len(data), passes=passes, quantization=quantization,
        length_bound=tuple(bound), length_notes=tuple(notes),
        boundary_dtypes={key.removeprefix(BOUNDARY_KEY): how for key, how in source.metadata.items()
                         if key.startswith(BOUNDARY_KEY)})
    result = ConversionResult(graph, data, report)
    if output_path is not None:
        result.save(output_path)
    return result

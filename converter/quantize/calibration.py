"""Calibration: representative data in, one float range per activation tensor out.

Data (``load_calibration``): a .npy (single-input models), a .npz keyed by input name, a folder
of images (single image-input models; ``ImagePreprocessing`` says how pixels become the input),
an array, a {input name: array} dict, or a list of feed dicts. Arrays stack samples on the
input's batch axis (``[N, *shape[1:]]``) or stack whole feeds (``[N, *shape]``); they are cut
into feeds of the graph's static batch size. Anything that does not fit raises ConversionError
naming the file, the input and the expected shape.

Ranges (``collect_ranges``): the float graph runs in the reference executor on every batch with
every intermediate kept. ``CALIBRATION_METHODS`` is the table of range rules:
  * minmax      the observed [min, max];
  * percentile  the [100-p, p] percentiles (p = 99.99 by default) of the observed values;
  * mse         the clipping of [min, max] (scaled by a factor in (0, 1]) whose int8 quantization
                has the smallest mean squared error over the tensor's value histogram.
The last two need a histogram over [min, max], so they take a second pass over the data (the
first pass's values are reused instead when they fit in ``CACHE_BYTES``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph

HISTOGRAM_BINS = 2048
CACHE_BYTES = 256 << 20
MSE_CANDIDATES = 128
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
LAYOUTS = ("NCHW", "NHWC")
CHANNEL_ORDERS = ("RGB", "BGR")

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ImagePreprocessing:
    """How an image file becomes one sample: resize to ``size`` (H, W; default the input's),
    divide by ``scale``, subtract ``mean`` and divide by ``std`` (one value or one per channel,
    in ``channel_order``), laid out as ``layout`` (default: guessed from the input shape)."""
    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str | None = None
    channel_order: str = "RGB"
    scale: float = 255.0

    def __post_init__(self):
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConversionError(f"image layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.channel_order not in CHANNEL_ORDERS:
            raise ConversionError(f"channel order {self.channel_order!r} is not one of {', '.join(CHANNEL_ORDERS)}")
        if any(s == 0 for s in self.std) or not self.scale:
            raise ConversionError("image std and scale must be non-zero")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConversionError(f"image size {self.size} must be two positive ints (H, W)")


# ---- data ----

def _model_inputs(graph: Graph) -> list[str]:
    return [name for name in graph.inputs if name not in graph.constants]


def _source_name(data) -> str:
    return f"calibration data {str(data)!r}" if isinstance(data, (str, os.PathLike)) else "calibration data"


def load_calibration(data, graph: Graph, preprocessing: ImagePreprocessing | None = None,
                     max_batches: int | None = None) -> list[Feeds]:
    """The calibration feeds (one dict per run of the graph) from any accepted form of ``data``."""
    where = _source_name(data)
    inputs = _model_inputs(graph)
    if not inputs:
        raise ConversionError("the graph has no inputs to calibrate")
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            arrays = {_image_input(graph, path): _load_images(path, graph, preprocessing or ImagePreprocessing())}
        elif not path.exists():
            raise ConversionError(f"{where}: no such file or folder")
        elif path.suffix == ".npy":
            arrays = {_single_input(inputs, where, "a .npy file"): _load(np.load, path, where)}
        elif path.suffix == ".npz":
            with _load(np.load, path, where) as archive:
                arrays = {key: archive[key] for key in archive.files}
            arrays = _by_input(arrays, inputs, where)
        else:
            raise ConversionError(f"{where}: expected a .npy file, a .npz file or a folder of images")
        batches = _batches(arrays, graph, where)
    elif isinstance(data, np.ndarray):
        batches = _batches({_single_input(inputs, where, "one array"): data}, graph, where)
    elif isinstance(data, Mapping):
        batches = _batches(_by_input(dict(data), inputs, where), graph, where)
    elif isinstance(data, Iterable):
        batches = [_check_feed(dict(feed), graph, f"{where}, feed {k}") for k, feed in enumerate(data)]
    else:
        raise ConversionError(f"{where}: unsupported type {type(data).__name__}")
    if not batches:
        raise ConversionError(f"{where}: holds no samples")
    return batches[:max_batches] if max_batches else batches


def _load(loader, path: Path, where: str):
    try:
        return loader(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{where}: cannot be read ({exc})") from None


def _single_input(inputs: list[str], where: str, what: str) -> str:
    if len(inputs) != 1:
        raise ConversionError(f"{where}: {what} fits a single-input model, but this one has inputs "
                              f"{inputs}; use a .npz with one array per input name")
    return inputs[0]


def _by_input(arrays: dict, inputs: list[str], where: str) -> dict:
    missing = [name for name in inputs if name not in arrays]
    if missing:
        raise ConversionError(f"{where}: no array for input(s) {missing} (it has {sorted(arrays)}; the "
                              f"model's inputs are {inputs})")
    return {name: arrays[name] for name in inputs}


def _as_input_dtype(array: np.ndarray, dtype: str, name: str, where: str) -> np.ndarray:
    array = np.asarray(array)
    target = np.dtype(dtype)
    if array.dtype == target:
        return array
    if target.kind == "f" and array.dtype.kind in "fiu":
        return array.astype(target)
    if target.kind in "iu" and array.dtype.kind in "iu":
        return array.astype(target)
    if target.kind == "b" and array.dtype.kind == "b":
        return array
    raise ConversionError(f"{where}: input {name!r} is {dtype}, the data is {array.dtype}")


def _batches(arrays: dict[str, np.ndarray], graph: Graph, where: str) -> list[Feeds]:
    """Cuts each input's samples into feeds of the input's declared shape."""
    per_input: dict[str, np.ndarray] = {}
    counts = {}
    for name, array in arrays.items():
        declared = tuple(graph.tensors[name].shape)
        array = _as_input_dtype(array, graph.tensors[name].dtype, name, where)
        if not all(isinstance(d, int) for d in declared):
            raise ConversionError(f"input {name!r} has symbolic shape {declared}; give static input shapes")
        if array.ndim == len(declared) + 1 and tuple(array.shape[1:]) == declared:
            stacked = array                                        # [N, *shape]: N whole feeds
        elif declared and array.ndim == len(declared) and tuple(array.shape[1:]) == declared[1:] \
                and declared[0] > 0:
            batch = declared[0]
            usable = array.shape[0] // batch * batch               # [N, *shape[1:]]: N samples
            stacked = array[:usable].reshape((-1,) + declared)
        else:
            expect = f"[N, {', '.join(map(str, declared[1:]))}]" if declared else "[N]"
            raise ConversionError(f"{where}: array for input {name!r} has shape {tuple(array.shape)}, which "
                                  f"does not fit the input's shape {declared}; expected {expect} "
                                  f"(N samples) or [N, {', '.join(map(str, declared))}]")
        if stacked.shape[0] == 0:
            raise ConversionError(f"{where}: array for input {name!r} holds no samples (shape {array.shape}"
                                  f", batch size {declared[0] if declared else 1})")
        if stacked.dtype.kind == "f" and not np.all(np.isfinite(stacked)):
            raise ConversionError(f"{where}: array for input {name!r} has NaN or infinite values")
        per_input[name] = stacked
        counts[name] = stacked.shape[0]
    if len(set(counts.values())) > 1:
        raise ConversionError(f"{where}: inputs have different sample counts {counts}")
    count = next(iter(counts.values()))
    return [{name: np.ascontiguousarray(array[k]) for name, array in per_input.items()} for k in range(count)]


def _check_feed(feed: dict, graph: Graph, where: str) -> Feeds:
    inputs = _model_inputs(graph)
    feed = _by_input(feed, inputs, where)
    out = {}
    for name in inputs:
        array = _as_input_dtype(feed[name], graph.tensors[name].dtype, name, where)
        if tuple(array.shape) != tuple(graph.tensors[name].shape):
            raise ConversionError(f"{where}: input {name!r} has shape {tuple(array.shape)}, expected "
                                  f"{tuple(graph.tensors[name].shape)}")
        out[name] = array
    return out


# ---- images ----

def _image_input(graph: Graph, folder: Path) -> str:
    inputs = _model_inputs(graph)
    where = f"calibration folder {str(folder)!r}"
    name = _single_input(inputs, where, "a folder of images")
    ttype = graph.tensors[name]
    if ttype.rank != 4 or ttype.dtype not in ("float32", "float16"):
        raise ConversionError(f"{where}: images need a rank-4 float input, but {name!r} is "
                              f"{ttype.dtype}{list(ttype.shape)}")
    return name


def _image_layout(shape: tuple[int, ...], preprocessing: ImagePreprocessing) -> str:
    if preprocessing.layout:
        return preprocessing.layout
    return "NHWC" if shape[3] in (1, 3) and shape[1] not in (1, 3) else "NCHW"


def _load_images(folder: Path, graph: Graph, preprocessing: ImagePreprocessing) -> np.ndarray:
    where = f"calibration folder {str(folder)!r}"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConversionError(f"{where} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        from PIL import Image
    except ImportError:
        raise ConversionError("calibrating from a folder of images needs Pillow (pip install pillow)") from None
    shape = tuple(graph.tensors[_image_input(graph, folder)].shape)
    layout = _image_layout(shape, preprocessing)
    channels = shape[1] if layout == "NCHW" else shape[3]
    if channels not in (1, 3):
        raise ConversionError(f"{where}: the input has {channels} channels; images give 1 or 3")
    height, width = preprocessing.size or ((shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2]))
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    for what, values in (("mean", mean), ("std", std)):
        if values.size not in (1, channels):
            raise ConversionError(f"image {what} has {values.size} values; the input has {channels} channels")
    samples = []
    for path in files:
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
                pixels = np.asarray(image, np.float32).reshape(height, width, channels)
        except (OSError, ValueError) as exc:
            raise ConversionError(f"{where}: image {path.name!r} cannot be read ({exc})") from None
        if channels == 3 and preprocessing.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        pixels = (pixels / np.float32(preprocessing.scale) - mean) / std
        samples.append(np.transpose(pixels, (2, 0, 1)) if layout == "NCHW" else pixels)
    return np.stack(samples).astype(np.float32)


# ---- ranges ----

class _Histogram:
    def __init__(self, low: float, high: float):
        self.low, self.high = low, high
        self.counts = np.zeros(HISTOGRAM_BINS, np.float64)

    def add(self, values: np.ndarray) -> None:
        if self.high > self.low:
            counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(self.low, self.high))
            self.counts += counts

    def centers(self) -> np.ndarray:
        edges = np.linspace(self.low, self.high, HISTOGRAM_BINS + 1)
        return (edges[:-1] + edges[1:]) / 2


def _percentile_range(low: float, high: float, histogram: _Histogram | None, percentile: float):
    if histogram is None or histogram.counts.sum() == 0:
        return low, high
    cdf = np.cumsum(histogram.counts) / histogram.counts.sum()
    edges = np.linspace(histogram.low, histogram.high, HISTOGRAM_BINS + 1)
    tail = 1.0 - percentile / 100.0
    lo_bin = int(np.searchsorted(cdf, tail, side="right"))
    hi_bin = int(np.searchsorted(cdf, 1.0 - tail, side="left"))
    return float(edges[min(lo_bin, HISTOGRAM_BINS)]) if tail > 0 else low, \
        float(edges[min(hi_bin + 1, HISTOGRAM_BINS)]) if tail > 0 else high


def _mse_range(low: float, high: float, histogram: _Histogram | None, percentile: float):
    """The clipping factor a in (0, 1] of [min(low, 0), max(high, 0)] minimising the expected
    squared error of int8 quantize-dequantize over the histogram (bin centers, counts)."""
    from converter.quantize.params import activation_params
    from converter.quantize.int8_reference import dequantize_values, quantize_values

    if histogram is None or histogram.counts.sum() == 0:
        return low, high
    centers, counts = histogram.centers(), histogram.counts
    low, high = min(low, 0.0), max(high, 0.0)
    best, best_error = (low, high), np.inf
    for factor in np.linspace(1.0, 1.0 / MSE_CANDIDATES, MSE_CANDIDATES):
        params = activation_params(low * factor, high * factor)
        restored = dequantize_values(quantize_values(centers.astype(np.float32), params), params)
        error = float(np.sum(counts * (centers - restored.astype(np.float64)) ** 2))
        if error < best_error:
            best, best_error = (low * factor, high * factor), error
    return best


# method -> (observed min, observed max, histogram over [min, max] or None, percentile) -> range
CALIBRATION_METHODS: dict[str, Callable] = {
    "minmax": lambda low, high, histogram, percentile: (low, high),
    "percentile": _percentile_range,
    "mse": _mse_range,
}
NEEDS_HISTOGRAM = {"percentile", "mse"}


def _progress(enabled: bool, total: int, description: str):
    if not enabled:
        return None
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True)
    progress.start()
    progress.add_task(description, total=total)
    return progress


def _runs(graph: Graph, batches: Sequence[Feeds], names: set[str], progress, description: str):
    """Yields, per batch, the float values of ``names`` (the reference executor, keep_all)."""
    from converter.reference import run

    for feeds in batches:
        values = run(graph, feeds, keep_all=True)
        yield {name: values[name] for name in names if name in values}
        if progress is not None:
            progress.update(progress.task_ids[0], advance=1, description=description)


def collect_ranges(graph: Graph, batches: Sequence[Feeds], names: Iterable[str], method: str = "minmax",
                   percentile: float = 99.99, progress: bool = False) -> dict[str, tuple[float, float]]:
    """name -> (low, high) for every tensor in ``names`` (float tensors the graph computes or
    takes as input), by ``method`` over ``batches``."""
    names = set(names)
    if method not in CALIBRATION_METHODS:
        raise ConversionError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    histograms_needed = method in NEEDS_HISTOGRAM
    bar = _progress(progress, len(batches) * (2 if histograms_needed else 1), "calibrating")
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    cache: list[dict[str, np.ndarray]] | None = [] if histograms_needed else None
    cached_bytes = 0
    try:
        for values in _runs(graph, batches, names, bar, "calibrating: ranges"):
            for name, value in values.items():
                value = np.asarray(value)
                if value.size == 0 or value.dtype.kind != "f":
                    continue
                if not np.all(np.isfinite(value)):
                    raise ConversionError(f"calibration: tensor {name!r} takes NaN or infinite values")
                low[name] = min(low.get(name, np.inf), float(value.min()))
                high[name] = max(high.get(name, -np.inf), float(value.max()))
            if cache is not None:
                cached_bytes += sum(v.nbytes for v in values.values())
                cache = cache + [values] if cached_bytes <= CACHE_BYTES else None
        histograms: dict[str, _Histogram] = {}
        if histograms_needed:
            histograms = {name: _Histogram(low[name], high[name]) for name in low}
            second = cache if cache is not None else _runs(graph, batches, names, bar, "calibrating: histograms")
            for values in second:
                for name, value in values.items():
                    if name in histograms:
                        histograms[name].add(np.asarray(value, np.float64))
                if cache is not None and bar is not None:
                    bar.update(bar.task_ids[0], advance=1)
    finally:
        if bar is not None:
            bar.stop()
    rule = CALIBRATION_METHODS[method]
    return {name: tuple(float(v) for v in rule(low[name], high[name], histograms.get(name), percentile))
            for name in low}

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
  * auto        per tensor, whichever of minmax and mse (the clipping factor of [min, max]
                with the smallest squared error) quantizes a random sample of the tensor's
                values (AUTO_SAMPLES, spread over the batches) with the smallest mean squared
                error; "float" when even that leaves the tensor's bulk (its [1, 99] percentiles)
                below AUTO_FLOAT_BELOW_DB: the int8 rewrite then keeps its producer and
                consumers float, with int8 weights (``Calibration.methods`` says which).
The histogram methods take a second pass over the data (the first pass's values are reused
instead when they fit in ``CACHE_BYTES``).

Sentinels (``split_sentinels``): attention masks and padding carry values that stand for "never"
(-inf, +-finfo(float32).max, -1e4, -3.4e38) rather than magnitudes. A value is a sentinel when it
is not finite, when |v| >= SENTINEL_MAGNITUDE, or when |v| >= SENTINEL_FLOOR and it sits beyond a
gap of SENTINEL_GAP x in magnitude above every other value of its tensor. Ranges are calibrated on
the other values; ``Calibration.sentinels`` records, per tensor, which sentinels it carried, so
the int8 rewrite can let them saturate to the int8 minimum / maximum (and say so in the report).
For tensors named in ``row_axes`` (Softmax inputs) the smallest row maximum over the non-sentinel
values is recorded too: the int8 rewrite widens the range below it so that a saturated -inf
still vanishes after the int8 softmax.
"""
from __future__ import annotations

import lzma
import math
import os
import struct
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from converter.errors import ConversionError
from converter.ir import Graph
from converter.ops.int8_reference import dequantize_values, quantize_values
from converter.quantize.params import activation_params

HISTOGRAM_BINS = 2048
# Sentinel detection (see the module doc).
SENTINEL_MAGNITUDE = 1e30
SENTINEL_FLOOR = 1e3
SENTINEL_GAP = 100.0
# ``auto`` leaves a tensor float when even its best int8 range gives less than this SQNR over the
# tensor's bulk (the values inside its [1, 99] percentiles): outlier-dominated tensors (a
# residual stream with one channel at 200x the others) whose small values int8 would erase.
AUTO_FLOAT_BELOW_DB = 20.0
BULK_PERCENTILE = 99.0
AUTO_MSE_CANDIDATES = 128
AUTO_SAMPLES = 131072                 # per tensor, spread over the batches
AUTO_MIN_SAMPLES_PER_BATCH = 1024
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
            arrays = {_single_input(inputs, where, "a .npy file"): _read_arrays(path, where, archive=False)}
        elif path.suffix == ".npz":
            arrays = _by_input(_read_arrays(path, where, archive=True), inputs, where)
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


# What reading a damaged .npy or .npz can raise: NumPy's header parser (tokenize, literal_eval) and zipfile with its
# decompressors (an unknown compression method, an encrypted member, a corrupt stream).
_ARRAY_FILE_ERRORS = (OSError, ValueError, EOFError, KeyError, TypeError, NotImplementedError, RuntimeError,
                      OverflowError, MemoryError, SyntaxError, RecursionError, tokenize.TokenError, zipfile.BadZipFile,
                      zlib.error, lzma.LZMAError, struct.error)


def _read_arrays(path: Path, where: str, archive: bool):
    """A .npz file's {name: array} (``archive``) or a .npy file's array, read in full (a .npz reads
    its members lazily, so every member is read here, where its errors are caught), never unpickling."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                loaded = {key: loaded[key] for key in loaded.files}
    except _ARRAY_FILE_ERRORS as exc:
        raise ConversionError(f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
    if archive != isinstance(loaded, dict):
        raise ConversionError(f"{where}: holds {'one array' if archive else 'a .npz archive'}, expected "
                              f"{'a .npz archive' if archive else 'one array'}")
    return loaded


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


def quantization_error(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per value: the error int8 quantize-dequantize with range [low, high] makes."""
    params = activation_params(low, high)
    restored = dequantize_values(quantize_values(values.astype(np.float32), params), params)
    return values - restored.astype(np.float64)


def auto_candidates(samples: np.ndarray, low: float | None = None, high: float | None = None
                    ) -> dict[str, tuple[float, float]]:
    """The ranges ``auto`` chooses among, by name, from a sample of a tensor's values and its
    observed [low, high] (default: the sample's)."""
    low = float(samples.min()) if low is None else min(float(low), float(samples.min()))
    high = float(samples.max()) if high is None else max(float(high), float(samples.max()))
    # Percentile ranges are not candidates: on MiniLM they won on squared error and lost the
    # model (min cosine 0.57 against 0.98), clipping the few values attention and LayerNorm live on.
    candidates = {"minmax": (low, high)}
    low0, high0 = min(low, 0.0), max(high, 0.0)
    best, best_error = (low0, high0), np.inf
    for factor in np.linspace(1.0, 1.0 / AUTO_MSE_CANDIDATES, AUTO_MSE_CANDIDATES):
        error = float(np.mean(quantization_error(samples, low0 * factor, high0 * factor) ** 2))
        if error < best_error:
            best, best_error = (low0 * factor, high0 * factor), error
    candidates["mse"] = best
    return candidates


def bulk_sqnr_db(samples: np.ndarray, low: float, high: float) -> float:
    """SQNR (dB) of int8 quantization with range [low, high] over the tensor's bulk: the sampled
    values inside its [100 - BULK_PERCENTILE, BULK_PERCENTILE] percentiles."""
    lo, hi = np.percentile(samples, [100.0 - BULK_PERCENTILE, BULK_PERCENTILE])
    bulk = samples[(samples >= lo) & (samples <= hi)]
    if bulk.size == 0:
        return math.inf
    noise = float(np.sum(quantization_error(bulk, low, high) ** 2))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(float(np.sum(bulk ** 2)), 1e-300) / noise)


def choose_auto(samples: np.ndarray, low: float | None = None, high: float | None = None
                ) -> tuple[str, tuple[float, float]]:
    """(method, range): the candidate range with the smallest mean squared error over the
    samples (minmax on ties), or ("float", that range) when even it leaves the tensor's bulk
    below AUTO_FLOAT_BELOW_DB. ``low``/``high``: the observed extremes, which a sample may miss."""
    samples = np.asarray(samples, np.float64).ravel()
    if samples.size == 0 or samples.min() == samples.max() and low == high:
        value = float(samples[0]) if samples.size else 0.0
        return "minmax", (value if low is None else low, value if high is None else high)
    candidates = auto_candidates(samples, low, high)
    errors = {name: float(np.mean(quantization_error(samples, *bounds) ** 2)) for name, bounds in candidates.items()}
    best = min(errors, key=lambda name: (errors[name], name != "minmax"))
    if bulk_sqnr_db(samples, *candidates[best]) < AUTO_FLOAT_BELOW_DB:
        return "float", candidates[best]
    return best, candidates[best]


def sample_values(values: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``values`` (flattened), drawn at random with a fixed seed (a stride
    would alias with the channel dimension and see only some channels)."""
    values = np.asarray(values).ravel()
    if values.size <= limit:
        return values
    return values[np.random.default_rng(values.size).choice(values.size, limit, replace=False)]


# method -> (observed min, observed max, histogram over [min, max] or None, percentile) -> range
CALIBRATION_METHODS: dict[str, Callable] = {
    "minmax": lambda low, high, histogram, percentile: (low, high),
    "percentile": _percentile_range,
    "mse": _mse_range,
}
NEEDS_HISTOGRAM = {"percentile", "mse"}
# "auto" works on a strided sample of each tensor's values instead of a histogram (a histogram
# over a tail-stretched range is too coarse to measure clipping with).
AUTO_METHOD = "auto"
CALIBRATION_NAMES = (*CALIBRATION_METHODS, AUTO_METHOD)


# ---- sentinels ----

@dataclass
class Sentinels:
    """What a tensor carried besides its range: counts of sentinel values below and above it."""
    low: int = 0               # -inf, -finfo.max, -1e4 ... values
    high: int = 0              # +inf, +finfo.max ...
    nan: int = 0
    examples: set = field(default_factory=set)   # a few distinct sentinel values, for the report

    def add(self, other: "Sentinels") -> None:
        self.low += other.low
        self.high += other.high
        self.nan += other.nan
        self.examples = set(sorted(self.examples | other.examples)[:4])

    def __bool__(self) -> bool:
        return bool(self.low or self.high or self.nan)


def split_sentinels(value: np.ndarray) -> tuple[np.ndarray, Sentinels]:
    """(the mask of ordinary values, the Sentinels found) for one tensor's values."""
    value = np.asarray(value)
    finite = np.isfinite(value)
    magnitude = np.abs(np.where(finite, value, 0.0))
    peak = float(magnitude.max()) if magnitude.size else 0.0
    if finite.all() and peak < SENTINEL_FLOOR:
        return finite, Sentinels()
    ordinary = finite & (magnitude < SENTINEL_MAGNITUDE)
    if ordinary.any() and float(magnitude[ordinary].max()) >= SENTINEL_FLOOR:
        # The largest gap (as a ratio) in the sorted distinct magnitudes above the floor's 1/gap.
        levels = np.unique(magnitude[ordinary].astype(np.float64))
        big = levels[levels >= SENTINEL_FLOOR]
        below = levels[levels < SENTINEL_FLOOR]
        smaller = below.max() if below.size else 0.0
        # The first magnitude >= the floor that is SENTINEL_GAP x above everything under it.
        for level in big:
            if level >= SENTINEL_GAP * smaller:
                ordinary &= magnitude < level
                break
            smaller = level
    outside = ~ordinary
    found = Sentinels()
    if outside.any():
        values = value[outside]
        found.nan = int(np.isnan(values).sum())
        found.low = int((values < 0).sum())
        found.high = int((values > 0).sum())
        found.examples = {float(v) for v in np.unique(values[~np.isnan(values)])[:4]}
    return ordinary, found


@dataclass
class Calibration:
    """What calibration measured: the range each tensor gets, the method that chose it (for
    ``auto``), the sentinels it carried, and for Softmax inputs the smallest row maximum."""
    ranges: dict[str, tuple[float, float]]
    methods: dict[str, str]
    sentinels: dict[str, Sentinels]
    row_max_min: dict[str, float]
    observed: dict[str, tuple[float, float]] = field(default_factory=dict)   # [min, max], no sentinels


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
    takes as input), by ``method`` over ``batches`` (sentinels left out; see ``calibrate``)."""
    return calibrate(graph, batches, names, method, percentile, progress).ranges


def calibrate(graph: Graph, batches: Sequence[Feeds], names: Iterable[str], method: str = "minmax",
              percentile: float = 99.99, progress: bool = False,
              row_axes: Mapping[str, int] | None = None) -> Calibration:
    """The Calibration of every tensor in ``names`` by ``method`` over ``batches``; ``row_axes``
    names tensors (Softmax inputs) whose smallest row maximum along the axis is wanted."""
    names = set(names)
    row_axes = dict(row_axes or {})
    if method not in CALIBRATION_METHODS and method != AUTO_METHOD:
        raise ConversionError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_NAMES)}")
    histograms_needed = method in NEEDS_HISTOGRAM
    samples: dict[str, list[np.ndarray]] = {}
    per_batch = max(AUTO_MIN_SAMPLES_PER_BATCH, AUTO_SAMPLES // max(1, len(batches)))
    bar = _progress(progress, len(batches) * (2 if histograms_needed else 1), "calibrating")
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    sentinels: dict[str, Sentinels] = {}
    row_max_min: dict[str, float] = {}
    cache: list[dict[str, np.ndarray]] | None = [] if histograms_needed else None
    cached_bytes = 0
    try:
        for values in _runs(graph, batches, names, bar, "calibrating: ranges"):
            kept = {}
            for name, value in values.items():
                value = np.asarray(value)
                if value.size == 0 or value.dtype.kind != "f":
                    continue
                ordinary, found = split_sentinels(value)
                if found:
                    sentinels.setdefault(name, Sentinels()).add(found)
                    value = np.where(ordinary, value, np.nan)
                    bulk = value[ordinary]
                else:
                    bulk = value
                kept[name] = bulk
                if bulk.size == 0:
                    continue
                if method == AUTO_METHOD:
                    samples.setdefault(name, []).append(sample_values(bulk, per_batch).astype(np.float64))
                low[name] = min(low.get(name, np.inf), float(bulk.min()))
                high[name] = max(high.get(name, -np.inf), float(bulk.max()))
                if name in row_axes:
                    rows = np.max(np.where(np.isnan(value), -np.inf, value), axis=row_axes[name])
                    rows = rows[np.isfinite(rows)]
                    if rows.size:
                        row_max_min[name] = min(row_max_min.get(name, np.inf), float(rows.min()))
            if cache is not None:
                cached_bytes += sum(v.nbytes for v in kept.values())
                cache = cache + [kept] if cached_bytes <= CACHE_BYTES else None
        for name, found in sentinels.items():
            if name not in low:                      # nothing but sentinels: the range is {0}
                low[name] = high[name] = 0.0
        histograms: dict[str, _Histogram] = {}
        if histograms_needed:
            histograms = {name: _Histogram(low[name], high[name]) for name in low}
            second = cache if cache is not None else _runs(graph, batches, names, bar, "calibrating: histograms")
            for values in second:
                for name, value in values.items():
                    if name in histograms:
                        value = np.asarray(value, np.float64)
                        if name in sentinels:
                            value = value[split_sentinels(value)[0]]
                        histograms[name].add(value)
                if cache is not None and bar is not None:
                    bar.update(bar.task_ids[0], advance=1)
    finally:
        if bar is not None:
            bar.stop()
    ranges, methods = {}, {}
    for name in low:
        if method == AUTO_METHOD:
            methods[name], bounds = choose_auto(np.concatenate(samples[name]) if name in samples
                                                else np.array([low[name], high[name]]), low[name], high[name])
        else:
            methods[name] = method
            bounds = CALIBRATION_METHODS[method](low[name], high[name], histograms.get(name), percentile)
        ranges[name] = tuple(float(v) for v in bounds)
    observed = {name: (float(low[name]), float(high[name])) for name in low}
    return Calibration(ranges, methods, sentinels, row_max_min, observed)

"""The data-movement ops' fast paths (Transpose, Pad, Resize, Concat, Slice, Gather) against NumPy
at odd shapes, every mode, several dtypes and 1 and 2 threads.

These ops only move (or, for linear Resize, weigh) values, so copies must match NumPy bit for
bit; a linear Resize is held to float32 rounding of the NumPy reference. Shapes are picked to hit
each fast path and its edges: runs shared by input and output (moved as wider elements), narrow
and odd 2-d transposes, padding on the innermost axis only, crops, and tails that are not a
multiple of any vector width. The ISA is picked once per process, so the scalar kernels run in a
child process (EDGE_ISA=scalar) over the same cases.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from converter import GraphBuilder
from converter.writer import write_model
from tests.fixtures.harness import run_edge


def run_op(op: str, x: np.ndarray, threads: int = 1, extra=(), **attrs) -> np.ndarray:
    b = GraphBuilder()
    inputs = [b.input("x", x.shape, str(x.dtype))]
    feeds = {"x": x}
    for k, value in enumerate(extra):
        name = f"x{k + 2}"
        inputs.append(b.input(name, value.shape, str(value.dtype)))
        feeds[name] = value
    b.output(b.op(op, *inputs, **attrs), name="y")
    return run_edge(write_model(b.build()), feeds, num_threads=threads)["y"]


def data(shape, dtype, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed + len(shape) * 31 + int(np.prod(shape)))
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.tobytes() == expected.tobytes(), \
        f"{int(np.sum(actual != expected))} of {actual.size} elements differ"


TRANSPOSES = {
    "depth-to-space-run2": ((5, 7, 3, 2), (0, 2, 1, 3)),
    "depth-to-space-large": ((64, 48, 2, 2), (0, 2, 1, 3)),
    "pixel-shuffle-odd": ((1, 3, 5, 2, 3, 5), (0, 1, 3, 2, 4, 5)),
    "last-two-odd": ((3, 37, 29), (0, 2, 1)),
    "last-two-large": ((2, 130, 67), (0, 2, 1)),
    "nhwc-to-nchw": ((2, 3, 5, 7), (0, 3, 1, 2)),
    "reverse": ((2, 3, 5, 7), (3, 2, 1, 0)),
    "swap-outer-run5": ((4, 3, 5), (1, 0, 2)),
    "heads": ((2, 9, 3, 8), (0, 2, 1, 3)),
}


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "int32"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(TRANSPOSES))
def test_transpose_moves_every_element(name, threads, dtype):
    shape, perm = TRANSPOSES[name]
    x = data(shape, dtype)
    assert_same(run_op("Transpose", x, threads, perm=perm), np.ascontiguousarray(np.transpose(x, perm)))


# (shape, pads [begins..., ends...]); negative pads crop.
PADS = {
    "channels-24-to-28": ((1, 6, 5, 24), (0, 0, 0, 0, 0, 0, 0, 4)),
    "channels-odd-both": ((2, 3, 5, 7), (0, 0, 0, 3, 0, 0, 0, 2)),
    "spatial-tf-same": ((1, 7, 9, 5), (0, 0, 0, 0, 0, 1, 1, 0)),
    "spatial-both": ((2, 5, 6, 3), (0, 2, 1, 0, 0, 1, 2, 0)),
    "every-axis": ((2, 3, 4, 5), (1, 2, 1, 2, 2, 1, 3, 1)),
    "batch-only": ((2, 3, 4, 5), (1, 0, 0, 0, 2, 0, 0, 0)),
    "crop-and-pad": ((2, 6, 7, 5), (0, -1, 2, 0, 0, 1, -2, 1)),
    "none": ((2, 3, 4), (0, 0, 0, 0, 0, 0)),
    "rank1": ((11,), (3, 2)),
    "large-channels": ((1, 33, 31, 24), (0, 0, 0, 0, 0, 0, 0, 4)),
}


def pad_reference(x, pads, mode, value):
    rank = x.ndim
    begins, ends = np.asarray(pads[:rank]), np.asarray(pads[rank:])
    crop = tuple(slice(max(0, -b), x.shape[d] - max(0, -e)) for d, (b, e) in enumerate(zip(begins, ends)))
    x = x[crop]
    widths = [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(value, x.dtype))
    return np.pad(x, widths, mode=mode)


def _pad_applies(shape, pads, mode) -> bool:
    """Crops are checked in constant mode (np.pad has no negative widths to mirror); reflect needs
    each pad below its dimension, symmetric at most its dimension."""
    if mode == "constant":
        return True
    rank = len(shape)
    reach = {"reflect": -1, "symmetric": 0}.get(mode)
    return min(pads) >= 0 and (reach is None or
                               all(max(pads[d], pads[rank + d]) <= shape[d] + reach for d in range(rank)))


PAD_CASES = [(name, mode, value) for name in PADS for mode, value in
             (("constant", 0.0), ("constant", -2.0), ("reflect", 0.0), ("edge", 0.0), ("symmetric", 0.0))
             if _pad_applies(*PADS[name], mode)]


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8", "int32"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, mode, value", PAD_CASES, ids=[f"{n}-{m}-{v}" for n, m, v in PAD_CASES])
def test_pad_matches_numpy(name, mode, value, threads, dtype):
    shape, pads = PADS[name]
    if dtype == "uint8" and value < 0:
        value = 7.0
    x = data(shape, dtype)
    actual = run_op("Pad", x, threads, pads=pads, mode=mode, value=value)
    assert_same(actual, pad_reference(x, pads, mode, value))


# NHWC-shaped inputs (the runtime's layout, where the line path applies) and other layouts that
# take the general path; scales that are integers, fractions and downsamples.
RESIZES = {
    "2x-c16": ((1, 9, 11, 16), (1, 2, 2, 1)),
    "2x-c1": ((1, 7, 5, 1), (1, 2, 2, 1)),
    "1.5x-c17-batch2": ((2, 6, 4, 17), (1, 1.5, 1.5, 1)),
    "3x-c3": ((1, 4, 5, 3), (1, 3, 3, 1)),
    "down-c35": ((1, 13, 11, 35), (1, 0.5, 0.6, 1)),
    "height-only-c8": ((1, 5, 6, 8), (1, 2, 1, 1)),
    "width-only-c8": ((2, 5, 6, 8), (1, 1, 1.8, 1)),
    "rank3-c5": ((6, 7, 5), (2, 1.5, 1)),
    "nchw-like": ((1, 3, 6, 7), (1, 1, 2, 2)),
}
LINEAR_MODES = ("half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel")
NEAREST_MODES = (("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                 ("align_corners", "round_prefer_ceil"), ("half_pixel", "ceil"))


def resize_reference(x, **attrs):
    from converter.ops import OPS
    return OPS["Resize"].reference([x], attrs)[0]


def reference_agrees_on(shape, scales, coordinate_mode) -> bool:
    """align_corners divides by in * scale - 1 in the runtime (as onnxruntime does) but by
    out - 1 in converter.reference; they agree where in * scale is a whole number."""
    return coordinate_mode != "align_corners" or all(float(d * s).is_integer() for d, s in zip(shape, scales))


LINEAR_CASES = [(name, mode) for name in RESIZES for mode in LINEAR_MODES if reference_agrees_on(*RESIZES[name], mode)]
NEAREST_CASES = [(name, modes) for name in RESIZES for modes in NEAREST_MODES
                 if reference_agrees_on(*RESIZES[name], modes[0])]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, coordinate_mode", LINEAR_CASES, ids=["-".join(c) for c in LINEAR_CASES])
def test_linear_resize_matches_numpy(name, coordinate_mode, threads):
    shape, scales = RESIZES[name]
    x = data(shape, "float32")
    attrs = {"mode": "linear", "coordinate_mode": coordinate_mode, "scales": scales}
    actual, expected = run_op("Resize", x, threads, **attrs), resize_reference(x, **attrs)
    assert actual.shape == expected.shape
    # The corners are summed in float32 (by multiply-adds in the vector kernels), the reference in
    # float64: a few roundings of the largest corner.
    bound = 4 * np.finfo(np.float32).eps * np.max(np.abs(x))
    assert np.max(np.abs(actual - expected)) <= bound, np.max(np.abs(actual - expected))


@pytest.mark.parametrize("dtype", ["float32", "int64", "uint8"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name, modes", NEAREST_CASES, ids=[f"{n}-{'-'.join(m)}" for n, m in NEAREST_CASES])
def test_nearest_resize_copies_the_reference_pick(name, modes, threads, dtype):
    shape, scales = RESIZES[name]
    x = data(shape, dtype)
    attrs = {"mode": "nearest", "coordinate_mode": modes[0], "nearest_mode": modes[1], "scales": scales}
    assert_same(run_op("Resize", x, threads, **attrs), resize_reference(x, **attrs))


@pytest.mark.skipif(os.environ.get("EDGE_ISA") == "scalar", reason="this is the scalar run's parent")
def test_the_scalar_kernels_pass_the_same_cases():
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           __file__, "-k", "not scalar_kernels"],
                          env={**os.environ, "EDGE_ISA": "scalar"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

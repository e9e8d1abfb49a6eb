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


@pytest.mark.skipif(os.environ.get("EDGE_ISA") == "scalar", reason="this is the scalar run's parent")
def test_the_scalar_kernels_pass_the_same_cases():
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           __file__, "-k", "not scalar_kernels"],
                          env={**os.environ, "EDGE_ISA": "scalar"}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]

"""Sparse TFLite constants (SparsityParameters, TACO-style) made dense at import: what a DENSIFY
op computes, done once by the converter so the runtime sees an ordinary dense weight.

The format: the dense tensor of shape (d0..dn-1), optionally split into blocks (block k has size
bk along original dim block_map[k]), is walked in ``traversal_order`` over the n + k expanded
dims. Each level is DENSE (every coordinate 0..dense_size-1 present) or SPARSE_CSR (for entry p of
the previous level, coordinates array_indices[array_segments[p]:array_segments[p + 1]]). The
buffer holds the values in walk order. Every count, segment and index is checked against the
shapes before use, so a malformed file cannot make the walk larger than the dense tensor.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from converter.errors import ConversionError

DENSE, SPARSE_CSR = 0, 1


@dataclass
class SparseLevel:
    format: int
    dense_size: int
    segments: np.ndarray | None = None
    indices: np.ndarray | None = None


@dataclass
class Sparsity:
    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    levels: list[SparseLevel]


def densify(values: np.ndarray, shape: tuple[int, ...], sparsity: Sparsity, what: str) -> np.ndarray:
    """The dense array of ``shape`` whose nonzeros ``values`` and ``sparsity`` describe."""
    n, k = len(shape), len(sparsity.block_map)
    order, levels = sparsity.traversal_order, sparsity.levels
    if len(order) != n + k or sorted(order) != list(range(n + k)) or len(levels) != n + k:
        raise ConversionError(f"{what}: traversal order {list(order)} and {len(levels)} levels do not fit "
                              f"rank {n} with {k} block dims")
    if any(not 0 <= d < n for d in sparsity.block_map) or len(set(sparsity.block_map)) != k:
        raise ConversionError(f"{what}: block map {list(sparsity.block_map)} out of range for rank {n}")
    # Size of every expanded dim, as the levels declare it.
    expanded = [0] * (n + k)
    for level, dim in zip(levels, order):
        if level.format == DENSE:
            expanded[dim] = level.dense_size
    blocks = {}
    for j, dim in enumerate(sparsity.block_map):
        size = expanded[n + j]
        if size < 1 or shape[dim] % size:
            raise ConversionError(f"{what}: block size {size} does not divide dim {dim} ({shape[dim]})")
        blocks[dim] = (j, size)
    for dim in range(n):
        expanded_size = shape[dim] // blocks[dim][1] if dim in blocks else shape[dim]
        if expanded[dim] and expanded[dim] != expanded_size:
            raise ConversionError(f"{what}: level of dim {dim} is {expanded[dim]} wide, the shape gives {expanded_size}")
        expanded[dim] = expanded_size
    total = int(np.prod(shape, dtype=object)) if shape else 1

    # Walk the levels: one row per reached entry, its coordinates and its position in the level.
    coords = np.zeros((1, 0), np.int64)
    positions = np.zeros(1, np.int64)
    for level_index, (level, dim) in enumerate(zip(levels, order)):
        size = expanded[dim]
        if level.format == DENSE:
            if len(positions) * size > total:
                raise ConversionError(f"{what}: level {level_index} reaches more entries than the dense tensor has")
            inner = np.arange(size, dtype=np.int64)
            coords = np.concatenate([np.repeat(coords, size, axis=0), np.tile(inner, len(positions))[:, None]], 1)
            positions = (positions[:, None] * size + inner[None, :]).reshape(-1)
        elif level.format == SPARSE_CSR:
            segments, indices = level.segments, level.indices
            if segments is None or indices is None or len(segments) < 1 or len(segments) - 1 < positions.max(initial=-1) + 1:
                raise ConversionError(f"{what}: level {level_index} has {0 if segments is None else len(segments)} "
                                      f"segment bounds for {len(positions)} entries")
            segments = segments.astype(np.int64)
            if segments[0] != 0 or np.any(np.diff(segments) < 0) or segments[-1] > len(indices):
                raise ConversionError(f"{what}: level {level_index} segments are not increasing within "
                                      f"{len(indices)} indices")
            if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= size):
                raise ConversionError(f"{what}: level {level_index} index out of range 0..{size - 1}")
            starts, ends = segments[positions], segments[positions + 1]
            counts = ends - starts
            if int(counts.sum()) > total:
                raise ConversionError(f"{what}: level {level_index} reaches more entries than the dense tensor has")
            new_positions = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + \
                np.arange(int(counts.sum()), dtype=np.int64)
            coords = np.concatenate([np.repeat(coords, counts, axis=0), indices.astype(np.int64)[new_positions][:, None]], 1)
            positions = new_positions
        else:
            raise ConversionError(f"{what}: level {level_index} has unknown format {level.format}")
    if len(positions) != len(values):
        raise ConversionError(f"{what}: the sparsity pattern holds {len(positions)} values, the buffer {len(values)}")
    # Expanded coordinates (in traversal order) back to the original dims.
    by_dim = np.empty_like(coords)
    by_dim[:, list(order)] = coords
    original = by_dim[:, :n].copy()
    for dim, (j, size) in blocks.items():
        original[:, dim] = original[:, dim] * size + by_dim[:, n + j]
    dense = np.zeros(total, values.dtype)
    if len(values):
        # The buffer holds the values in walk order, the order of these rows.
        dense[np.ravel_multi_index(tuple(original.T), shape)] = values
    return dense.reshape(shape)

"""Training checkpoints: every variable of a model (weights, BatchNorm running statistics, optimizer
slots, the Adam step, the learning rate) in one .npz, written atomically.

Layout of the archive (plain NumPy, readable without edge, ``allow_pickle=False`` throughout):
    "manifest"   uint8 array holding UTF-8 JSON: {"format": "edge-checkpoint", "version": 1,
                 "variables": [{"name", "dtype", "shape", "key"}...], "info": {...}}
    "v0", "v1"…  one array per variable, in manifest order
Variable names are kept in the manifest rather than used as archive keys because tensor names may
hold any character (slashes, colons) that a zip member name would mangle.

Atomicity: ``save`` writes a temporary file in the destination's directory, flushes and fsyncs it,
then renames it over the destination (``os.replace``: atomic on POSIX and Windows) and fsyncs the
directory so the rename itself is durable. A crash at any point before the rename leaves the
previous checkpoint untouched (a stray ``.<name>.*.tmp`` file at worst, which the next save of the
same checkpoint removes); after it, the new checkpoint is complete.
"""
from __future__ import annotations

import glob
import io
import json
import lzma
import os
import struct
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edge.errors import InvalidArgumentError

FORMAT = "edge-checkpoint"
VERSION = 1
_MANIFEST = "manifest"


class CheckpointError(InvalidArgumentError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    variables: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def _temporary_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


def _fsync_directory(directory: str) -> None:
    # Makes the rename durable. Not every platform can open a directory (Windows cannot), and
    # there os.replace is as durable as it gets.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    pattern = os.path.join(glob.escape(directory), glob.escape(_temporary_prefix(path)) + "*.tmp")
    for stale in glob.glob(pattern):
        try:
            os.unlink(stale)
        except OSError:
            pass


def save(path: str | os.PathLike, variables: Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> None:
    """Writes ``variables`` (name -> array) to ``path`` atomically (see the module docstring)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    entries, arrays = [], {}
    for k, (name, value) in enumerate(variables.items()):
        array = np.array(value, order="C")  # not ascontiguousarray: it turns a scalar into shape [1]
        key = f"v{k}"
        entries.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape), "key": key})
        arrays[key] = array
    manifest = {"format": FORMAT, "version": VERSION, "variables": entries, "info": dict(info or {})}
    arrays[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode("utf-8"), dtype=np.uint8)

    _remove_stale_temporaries(path)
    fd, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


# What reading a damaged archive can raise: NumPy's .npy header parser (tokenize, literal_eval), zipfile and its decompressors
# (an unknown compression method, an encrypted member, a corrupt stream), json on the manifest.
_ARCHIVE_ERRORS = (ValueError, OSError, KeyError, TypeError, EOFError, NotImplementedError, RuntimeError,
                   OverflowError, MemoryError, SyntaxError, RecursionError, tokenize.TokenError, zipfile.BadZipFile,
                   zlib.error, lzma.LZMAError, struct.error)


def load(path: str | os.PathLike) -> Checkpoint:
    """Reads a checkpoint; CheckpointError (naming the file and what is wrong) for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r}: no such file")
    try:
        with open(path, "rb") as f:
            data = f.read()
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if _MANIFEST not in archive.files:
                raise CheckpointError(f"checkpoint {path!r}: not an edge checkpoint (no manifest)")
            manifest = archive[_MANIFEST]
            if not isinstance(manifest, np.ndarray):  # a member that is not .npy reads as raw bytes
                raise CheckpointError(f"checkpoint {path!r}: the manifest is not an array")
            manifest = json.loads(manifest.tobytes().decode("utf-8"))
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise CheckpointError(f"checkpoint {path!r}: not an edge checkpoint (format "
                                      f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
            if manifest.get("version") != VERSION:
                raise CheckpointError(f"checkpoint {path!r}: format version {manifest.get('version')!r}, "
                                      f"this edge reads version {VERSION}")
            variables = {}
            for entry in manifest["variables"]:
                name, key = entry["name"], entry["key"]
                if key not in archive.files:
                    raise CheckpointError(f"checkpoint {path!r}: variable '{name}' has no data ({key} is missing)")
                array = archive[key]
                if not isinstance(array, np.ndarray):
                    raise CheckpointError(f"checkpoint {path!r}: variable '{name}' ({key}) is not a .npy array")
                if array.dtype.str != entry["dtype"] or list(array.shape) != list(entry["shape"]):
                    raise CheckpointError(f"checkpoint {path!r}: variable '{name}' is {array.dtype.name}"
                                          f"{list(array.shape)}, its manifest says {entry['dtype']}{entry['shape']}")
                variables[name] = array
            info = manifest.get("info") or {}
            if not isinstance(info, dict):
                raise CheckpointError(f"checkpoint {path!r}: its info is a {type(info).__name__}, not a mapping")
    except CheckpointError:
        raise
    except _ARCHIVE_ERRORS as error:
        raise CheckpointError(f"checkpoint {path!r} is damaged or not a checkpoint: "
                              f"{type(error).__name__}: {error}") from None
    return Checkpoint(variables, info)


def check_matches(path: str, checkpoint: Checkpoint, expected: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Raises CheckpointError naming every variable that is missing, unexpected or of another
    shape or dtype than ``expected`` (name -> (shape, dtype)), before anything is changed."""
    problems = []
    missing = [name for name in expected if name not in checkpoint.variables]
    extra = [name for name in checkpoint.variables if name not in expected]
    if missing:
        problems.append(f"missing variables {missing}")
    if extra:
        problems.append(f"variables the model does not have {extra}")
    for name, (shape, dtype) in expected.items():
        value = checkpoint.variables.get(name)
        if value is None:
            continue
        if tuple(value.shape) != tuple(shape) or value.dtype != np.dtype(dtype):
            problems.append(f"variable '{name}' is {value.dtype.name}{list(value.shape)} in the checkpoint, "
                            f"{np.dtype(dtype).name}{list(shape)} in the model")
    if problems:
        model = checkpoint.info.get("model")
        origin = f" (saved from {model!r})" if model else ""
        raise CheckpointError(f"checkpoint {path!r}{origin} does not fit this model: " + "; ".join(problems))


def restore(path: str | os.PathLike, interpreter, variables: Mapping[str, int],
            expected: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> Checkpoint:
    """Loads ``path`` into ``interpreter``'s variables (name -> tensor index) after check_matches
    against ``expected``; if writing them fails part-way, the previous values are put back, so
    the model is either wholly restored or unchanged. Returns the checkpoint (for its info)."""
    path = os.fspath(path)
    loaded = load(path)
    check_matches(path, loaded, expected)
    previous = {name: interpreter.get_tensor(index) for name, index in variables.items()}
    try:
        for name, value in loaded.variables.items():
            interpreter.set_tensor(variables[name], value)
    except BaseException:
        for name, value in previous.items():
            interpreter.set_tensor(variables[name], value)
        raise
    return loaded

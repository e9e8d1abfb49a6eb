"""The .npz data sets a training job reads, for ``cloudsplit train`` and the Training service.

Layout: ``y`` holds the labels; ``x`` the features of a one-input model, or else one array per
model input, named as the input. The file is untrusted input (a client names it): it must be a
regular file under the size limit, its arrays' decompressed size is checked from the zip directory
before anything is read (a small compressed file may expand to any size), and it is opened with
``allow_pickle=False`` so that no object array can run code.
"""
from __future__ import annotations

import os
import stat
import zipfile

import numpy as np

from cloudsplit.protos import MiB

LABELS_KEY = "y"
FEATURES_KEY = "x"


class DataError(ValueError):
    """A data file that cannot be used; ``missing`` when it does not exist."""

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


def resolve(path: str, root: str | os.PathLike | None) -> str:
    """``path`` made absolute against ``root``; with a root, a path that leads outside it (through
    ``..`` or a symbolic link) is refused."""
    if not path:
        raise DataError("no data path given")
    if "\x00" in path or len(path) > 4096:
        raise DataError(f"data path {path[:80]!r} is not a usable path")
    if root is None:
        return os.path.realpath(path)
    root = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, full]) != root:
        raise DataError(f"data path {path!r} is outside the server's training data directory {root}")
    return full


def load_npz(path: str | os.PathLike, max_bytes: int = 1024 * MiB, what: str = "data") -> tuple[object, np.ndarray]:
    """(features, labels) from ``path``: features an array (``x``) or a dict by input name."""
    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{what} file {path} does not exist", missing=True) from None
    except OSError as error:
        raise DataError(f"{what} file {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{what} file {path} is not a regular file")
    if info.st_size > max_bytes:
        raise DataError(f"{what} file {path} has {info.st_size} bytes, over the limit of {max_bytes}")
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{what} file {path} is not a .npz archive ({error})") from None
    if expanded > max_bytes:
        raise DataError(f"{what} file {path} expands to {expanded} bytes, over the limit of {max_bytes}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{what} file {path}: cannot read its arrays ({error})") from None
    if LABELS_KEY not in arrays:
        raise DataError(f"{what} file {path} has no '{LABELS_KEY}' array of labels (it has {sorted(arrays)})")
    labels = arrays.pop(LABELS_KEY)
    if not arrays:
        raise DataError(f"{what} file {path} has labels but no features: add '{FEATURES_KEY}' "
                        "or one array per model input")
    for key, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise DataError(f"{what} file {path}: array '{key}' is {array.dtype}, not numbers")
    if labels.dtype.kind not in "biuf":
        raise DataError(f"{what} file {path}: labels are {labels.dtype}, not numbers")
    features = arrays[FEATURES_KEY] if set(arrays) == {FEATURES_KEY} else arrays
    return features, labels

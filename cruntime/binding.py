"""cffi (ABI mode) binding of cruntime/include/edge.h.

``ffi`` is ready at import; ``lib`` opens the shared library the first time it is touched, so that
importing ``edge`` or ``cruntime`` never fails on a machine where the library is missing until a
model is actually loaded. The library is looked up in this order:

1. ``$EDGE_LIBRARY`` (a path to a libedge.so build),
2. ``cruntime/_libedge<EXT_SUFFIX>`` next to this file (what ``pip install`` builds),
3. ``cruntime/build/libedge.so`` (a development build from ``make -C cruntime``); when both 2 and 3
   exist (an editable install) the more recently built one wins.

``find_library()`` says which file that order picks; ``library_path()`` which one this process has
loaded: a child process given ``EDGE_LIBRARY=library_path()`` runs the same build.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import os
import pathlib
import re
import threading

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
HEADER = PACKAGE_DIR / "include" / "edge.h"
DEV_LIBRARY = PACKAGE_DIR / "build" / "libedge.so"


class LibraryNotFoundError(ImportError):
    pass


class LibraryLoadError(ImportError):
    pass


def header_declarations(text: str) -> str:
    """The header's declarations as cffi's cdef accepts them.

    cdef knows no preprocessor except integer ``#define NAME value``: the include guard, the
    includes and the C++ guard are dropped, and so is ``__attribute__`` should it ever appear.
    """
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"#ifdef\s+__cplusplus.*?#endif", "", text, flags=re.S)
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if re.fullmatch(r"#\s*define\s+\w+\s+-?(0x[0-9A-Fa-f]+|\d+)[uUlL]*", stripped):
                kept.append(stripped)
            continue
        kept.append(line)
    return "\n".join(kept)


def _load_ffi():
    """The ahead-of-time module (cruntime/generate_ffi.py) when it matches the header, so that no C
    is parsed at import (python-for-android runs -OO, under which pycparser cannot parse);
    otherwise the header itself through ``ffi.cdef``."""
    try:
        from cruntime import _edge_ffi
    except ImportError:
        _edge_ffi = None
    # only the module beside this file: an editable install's import hook can otherwise hand out
    # the source tree's copy to a cruntime imported from elsewhere
    if _edge_ffi is not None and pathlib.Path(_edge_ffi.__file__).resolve().parent != PACKAGE_DIR:
        _edge_ffi = None
    if _edge_ffi is not None:
        try:
            current = hashlib.sha256(HEADER.read_bytes()).hexdigest()
        except OSError:
            current = None  # a packaged app may ship without the header: the generated module is all there is
        if current is None or current == _edge_ffi.HEADER_SHA256:
            return _edge_ffi.ffi
    from cffi import FFI

    parsed = FFI()
    parsed.cdef(header_declarations(HEADER.read_text(encoding="utf-8")))
    return parsed


ffi = _load_ffi()


def packaged_library() -> pathlib.Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = PACKAGE_DIR / f"_libedge{suffix}"
        if path.is_file():
            return path
    return next(iter(sorted(PACKAGE_DIR.glob("_libedge*.so"))), None)


def find_library() -> pathlib.Path:
    override = os.environ.get("EDGE_LIBRARY")
    if override:
        if not pathlib.Path(override).is_file():
            raise LibraryNotFoundError(f"EDGE_LIBRARY={override!r} is not a file")
        return pathlib.Path(override)
    packaged = packaged_library()
    dev = DEV_LIBRARY if DEV_LIBRARY.is_file() else None
    if packaged and dev:
        # An editable install has both; after `make -C cruntime` the dev build is the current one.
        return dev if dev.stat().st_mtime > packaged.stat().st_mtime else packaged
    if packaged or dev:
        return packaged or dev
    raise LibraryNotFoundError(
        "the edgesplit C runtime library was not found (looked for $EDGE_LIBRARY, "
        f"{PACKAGE_DIR}/_libedge*.so and {DEV_LIBRARY}). Build it with `pip install .` "
        "(or `pip install -e .`) from the source tree, or `make -C cruntime shared` for a development build.")


def check_abi_version(library, path) -> None:
    """LibraryLoadError unless the library was built with this header's EDGE_ABI_VERSION: a library
    of another version would be called with struct layouts and signatures it does not have."""
    expected = library.EDGE_ABI_VERSION
    try:
        built = library.edge_abi_version()
    except (AttributeError, ffi.error):  # cffi's ABI mode reports a missing symbol as ffi.error
        raise LibraryLoadError(
            f"the edgesplit C runtime {path} has no edge_abi_version(): it predates ABI version {expected} of "
            f"{HEADER.name}. Rebuild it (`pip install .`, or `make -C cruntime shared`).") from None
    if built != expected:
        raise LibraryLoadError(
            f"the edgesplit C runtime {path} was built for ABI version {built}, but this binding ({HEADER.name}) "
            f"speaks ABI version {expected}. Rebuild the library from this source tree (`pip install .`, or "
            "`make -C cruntime shared`), or point EDGE_LIBRARY at a matching build.")


_lock = threading.Lock()
_lib = None
_library_path: pathlib.Path | None = None


def load_library():
    global _lib, _library_path
    with _lock:
        if _lib is None:
            path = find_library()
            try:
                library = ffi.dlopen(str(path))
            except OSError as error:
                raise LibraryLoadError(
                    f"cannot load the edgesplit C runtime {path}: {error}. Rebuild it (`pip install .`, or "
                    "`make -C cruntime shared` for a development build).") from None
            check_abi_version(library, path)
            _lib = library
            _library_path = path
        return _lib


def library_path() -> pathlib.Path:
    """The file of the C runtime this process loaded (loading it first if nothing has yet)."""
    load_library()
    assert _library_path is not None
    return _library_path


def __getattr__(name: str):
    # PEP 562: `binding.lib` and `from cruntime.binding import lib` load on first use.
    if name == "lib":
        return load_library()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

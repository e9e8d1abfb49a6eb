"""libedge.so's ABI: it exports exactly the functions include/edge.h declares, and cruntime.binding
refuses a library built for another EDGE_ABI_VERSION (or one without edge_abi_version)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cffi import FFI

from cruntime.binding import HEADER, header_declarations

ROOT = Path(__file__).resolve().parents[2]
CRUNTIME = ROOT / "cruntime"
BUILD = CRUNTIME / "build"
CC = os.environ.get("CC", "cc")

needs_toolchain = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in ("make", CC, "nm", "ar")),
    reason="needs make, a C compiler, nm and ar")


def header_functions() -> set[str]:
    """The functions the header declares, as cffi's C parser (pycparser) reads them."""
    ffi = FFI()
    ffi.cdef(header_declarations(HEADER.read_text(encoding="utf-8")))
    return {key.split(" ", 1)[1] for key in ffi._parser._declarations if key.startswith("function ")}


def exported(library: Path) -> set[str]:
    listing = subprocess.run(["nm", "-D", "--defined-only", str(library)], check=True, capture_output=True,
                             text=True).stdout
    return {line.split()[-1].split("@")[0] for line in listing.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def library() -> Path:
    completed = subprocess.run(["make", "-C", str(CRUNTIME), "shared", "static", "-j2"], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return BUILD / "libedge.so"


@needs_toolchain
def test_library_exports_exactly_the_header_functions(library):
    declared, symbols = header_functions(), exported(library)
    assert len(declared) > 40
    assert symbols - declared == set(), f"exported but not in edge.h: {sorted(symbols - declared)}"
    assert declared - symbols == set(), f"declared in edge.h but not exported: {sorted(declared - symbols)}"


def _load_in_subprocess(library: Path) -> subprocess.CompletedProcess:
    code = ("from cruntime import binding\n"
            "try:\n"
            "    binding.load_library()\n"
            "except binding.LibraryLoadError as error:\n"
            "    print('LibraryLoadError:', error)\n"
            "else:\n"
            "    print('loaded ABI', binding.lib.edge_abi_version())\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "EDGE_LIBRARY": str(library)})


@needs_toolchain
def test_binding_loads_a_library_of_its_own_abi_version(library):
    completed = _load_in_subprocess(library)
    assert completed.returncode == 0, completed.stderr
    from cruntime import binding

    assert completed.stdout.strip() == f"loaded ABI {binding.ffi.integer_const('EDGE_ABI_VERSION')}"


@needs_toolchain
def test_binding_refuses_a_library_built_for_another_abi_version(library, tmp_path):
    # The runtime exactly as the Makefile builds it (its static library, not whatever objects other
    # builds left in build/obj), with interpreter.c (which defines edge_abi_version) compiled again
    # claiming version 99, linked with the same version script.
    archive = tmp_path / "libedge_without_interpreter.a"
    shutil.copyfile(BUILD / "libedge.a", archive)
    members = subprocess.run(["ar", "t", str(archive)], check=True, capture_output=True, text=True).stdout.split()
    assert members.count("interpreter.o") == 1, members
    subprocess.run(["ar", "d", str(archive), "interpreter.o"], check=True)
    other = tmp_path / "interpreter.o"
    subprocess.run([CC, "-std=c11", "-O1", "-fPIC", "-pthread", "-Iinclude", "-Isrc", "-DEDGE_ABI_VERSION=99", "-c",
                    "src/interpreter.c", "-o", str(other)], cwd=CRUNTIME, check=True)
    built = tmp_path / "libedge.so"
    subprocess.run([CC, "-shared", "-pthread", "-Wl,-z,defs", f"-Wl,--version-script={BUILD / 'libedge.map'}", "-o",
                    str(built), str(other), "-Wl,--whole-archive", str(archive), "-Wl,--no-whole-archive",
                    "-lm", "-lpthread", "-ldl"], check=True)
    completed = _load_in_subprocess(built)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("LibraryLoadError:"), completed.stdout
    assert "built for ABI version 99" in completed.stdout and "Rebuild" in completed.stdout


@needs_toolchain
def test_binding_refuses_a_library_without_an_abi_version(tmp_path):
    source = tmp_path / "old.c"
    source.write_text('const char *edge_version(void) { return "0.0.1"; }\n')
    built = tmp_path / "libold.so"
    subprocess.run([CC, "-shared", "-fPIC", "-o", str(built), str(source)], check=True)
    completed = _load_in_subprocess(built)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("LibraryLoadError:") and "no edge_abi_version()" in completed.stdout

"""cruntime.binding: the header as cffi reads it, library lookup, and the status -> exception table."""
import os
import subprocess
import sys

import pytest

from cruntime import binding
from edge.errors import ERROR_BY_STATUS, EdgeError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_header_declarations_keep_constants_and_drop_preprocessor():
    text = binding.header_declarations(binding.HEADER.read_text())
    assert "#define EDGE_MAX_RANK 8" in text
    assert "#ifndef" not in text and "#include" not in text and 'extern "C"' not in text
    assert "EDGE_H" not in text


def test_cdef_matches_the_header():
    ffi = binding.ffi
    assert ffi.typeof("edge_tensor_info").fields[4][0] == "shape"
    assert ffi.typeof("edge_tensor_info").fields[4][1].type.length == binding.load_library().EDGE_MAX_RANK
    assert ffi.typeof("edge_status").relements["EDGE_OK"] == 0


def test_every_status_has_its_exception():
    statuses = binding.ffi.typeof("edge_status").relements
    assert set(ERROR_BY_STATUS) == {value for name, value in statuses.items() if name != "EDGE_OK"}
    for name, value in statuses.items():
        if value:
            assert ERROR_BY_STATUS[value].status == name
            assert issubclass(ERROR_BY_STATUS[value], EdgeError)


def test_c_status_names_agree():
    lib = binding.load_library()
    for name, value in binding.ffi.typeof("edge_status").relements.items():
        assert binding.ffi.string(lib.edge_status_name(value)).decode() in (name, name.removeprefix("EDGE_"))


def test_missing_override_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGE_LIBRARY", str(tmp_path / "libnothing.so"))
    with pytest.raises(binding.LibraryNotFoundError, match="libnothing.so"):
        binding.find_library()


def test_import_does_not_load_the_library(tmp_path):
    code = ("import cruntime, cruntime.binding, edge, edge.cli\n"
            "assert cruntime.binding._lib is None\n"
            "try:\n    edge.Interpreter(model_content=b'')\n"
            "except ImportError as error:\n    print(error)\n")
    env = dict(os.environ, EDGE_LIBRARY=str(tmp_path / "missing.so"), PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "missing.so" in result.stdout


def test_library_lookup_order(monkeypatch, tmp_path):
    import importlib.machinery

    monkeypatch.delenv("EDGE_LIBRARY", raising=False)
    monkeypatch.setattr(binding, "PACKAGE_DIR", tmp_path)
    dev = tmp_path / "build" / "libedge.so"
    monkeypatch.setattr(binding, "DEV_LIBRARY", dev)
    with pytest.raises(binding.LibraryNotFoundError, match="make -C cruntime shared"):
        binding.find_library()
    dev.parent.mkdir()
    dev.write_bytes(b"dev")
    assert binding.find_library() == dev
    packaged = tmp_path / f"_libedge{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    packaged.write_bytes(b"pip")
    os.utime(dev, (1_000_000, 1_000_000))
    assert binding.find_library() == packaged
    os.utime(dev, None)
    os.utime(packaged, (1_000_000, 1_000_000))
    assert binding.find_library() == dev  # rebuilt with make after an editable install
    override = tmp_path / "custom.so"
    override.write_bytes(b"x")
    monkeypatch.setenv("EDGE_LIBRARY", str(override))
    assert binding.find_library() == override


def test_unloadable_library_is_explained(monkeypatch, tmp_path):
    broken = tmp_path / "libbroken.so"
    broken.write_bytes(b"not an ELF file")
    monkeypatch.setenv("EDGE_LIBRARY", str(broken))
    monkeypatch.setattr(binding, "_lib", None)
    with pytest.raises(binding.LibraryLoadError, match="libbroken.so"):
        binding.load_library()

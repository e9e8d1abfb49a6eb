"""The Python parsers' contracts the fuzzers hold them to, as plain tests: no pickle anywhere, and
the inputs the fuzzers found that escaped as other exception types now raise the documented one."""
from __future__ import annotations

import io
import json
import pathlib
import re
import zipfile

import numpy as np
import pytest

from converter.errors import ConversionError
from edge import checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("converter", "edge", "cloudsplit", "cruntime", "apps", "benchmarks", "tests")


REGRESSIONS = pathlib.Path(__file__).resolve().parent / "regressions"


@pytest.mark.parametrize("target", ["onnx", "tflite", "checkpoint", "calibration", "cut_tensor"])
def test_inputs_the_python_fuzzers_found_raise_only_documented_errors(target):
    """Every file under regressions/<target> once escaped as another exception type; each target
    function (tests/fuzz/python_fuzz.py) lets through nothing but the documented one."""
    from tests.fuzz.python_fuzz import TARGETS

    files = sorted((REGRESSIONS / target).glob("*")) if (REGRESSIONS / target).is_dir() else []
    for path in files:
        TARGETS[target](path.read_bytes())


def test_numpy_load_never_allows_pickle():
    offenders = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in re.finditer(r"allow_pickle\s*=\s*(?!False\b)\w+", text):
                offenders.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, match.start()) + 1}")
    assert not offenders, f"allow_pickle other than False: {offenders}"


def _pickled_checkpoint(path: pathlib.Path) -> None:
    """An archive shaped like a checkpoint whose one variable is an object array (a pickle)."""
    manifest = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION,
                "variables": [{"name": "w", "key": "v0", "dtype": "|O", "shape": [1]}]}
    buffer = io.BytesIO()
    np.savez(buffer, **{checkpoint._MANIFEST: np.frombuffer(json.dumps(manifest).encode(), np.uint8),
                        "v0": np.array([{"run": "code"}], dtype=object)})
    path.write_bytes(buffer.getvalue())


def test_checkpoint_loader_refuses_a_pickled_archive(tmp_path):
    path = tmp_path / "pickled.npz"
    _pickled_checkpoint(path)
    with zipfile.ZipFile(path) as archive:  # the object array really is a pickle inside the archive
        assert b"pickle" in archive.read("v0.npy")[:128] or archive.read("v0.npy")[:6] == b"\x93NUMPY"
    with pytest.raises(checkpoint.CheckpointError, match="pickle"):
        checkpoint.load(path)


def _zip_with_unknown_compression(member: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # a fixed date: the bytes name a test, the same in every worker
        archive.writestr(zipfile.ZipInfo(member, date_time=(2020, 1, 1, 0, 0, 0)), data)
    raw = bytearray(buffer.getvalue())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # both headers' method field
        at = raw.find(signature)
        raw[at + offset:at + offset + 2] = (99).to_bytes(2, "little")
    return bytes(raw)


def test_checkpoint_with_an_unknown_zip_compression_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "method99.npz"
    path.write_bytes(_zip_with_unknown_compression(checkpoint._MANIFEST + ".npy", b"\x93NUMPY"))
    with pytest.raises(checkpoint.CheckpointError, match="NotImplementedError"):
        checkpoint.load(path)


def _one_input_graph():
    from converter.importers.onnx import load_onnx
    from tests.fuzz.python_fuzz import _onnx_seed_models

    return load_onnx(_onnx_seed_models()["classifier"])


@pytest.mark.parametrize("name,data,message", [
    ("empty.npy", b"", "EOFError"),
    ("header.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': ('<f4'\n", "cannot be read"),
    ("method99.npz", _zip_with_unknown_compression("input.npy", b"\x93NUMPY"), "NotImplementedError"),
], ids=["empty", "header", "method99"])
def test_damaged_calibration_files_are_conversion_errors(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ConversionError, match=message):
        from converter.quantize.calibration import load_calibration

        load_calibration(path, _one_input_graph())


def test_onnx_file_with_a_name_that_is_not_utf8_is_a_conversion_error(tmp_path):
    from converter.importers.onnx import load_onnx
    from tests.fuzz.python_fuzz import _onnx_seed_models

    data = bytearray(_onnx_seed_models()["classifier"].SerializeToString())
    at = data.find(b"logits")
    data[at:at + 2] = b"\xf3\x28"  # an invalid UTF-8 sequence inside a string field
    path = tmp_path / "bad-name.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(ConversionError):
        load_onnx(path)


def test_onnx_value_of_an_unknown_dtype_code_is_a_conversion_error(tmp_path):
    from onnx import TensorProto

    from converter.importers.onnx import load_onnx
    from tests.fuzz.python_fuzz import _onnx_seed_models

    model = _onnx_seed_models()["classifier"]
    model.graph.value_info.add(name="odd").type.tensor_type.elem_type = 33  # not a TensorProto.DataType
    model.graph.input[0].type.tensor_type.elem_type = 33
    assert TensorProto.DataType.Name(TensorProto.FLOAT)  # the enum is there; 33 is just not in it
    path = tmp_path / "dtype33.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ConversionError):
        load_onnx(path)

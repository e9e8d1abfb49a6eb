"""Malformed .tflite files: every mutant either converts or raises ConversionError naming the
problem; no other exception, no crash, no hang (each mutant gets a 10 s alarm)."""
from __future__ import annotations

import signal

import numpy as np
import pytest

from converter.api import convert
from converter.errors import ConversionError
from converter.importers.tflite import load_tflite, read_tflite
from tests.fixtures import mediapipe_models
from tests.fixtures.tflite_mutants import mutants

PER_MUTANT_SECONDS = 10


class _Hang(Exception):
    pass


def _campaign(data: bytes, count: int, seed: int, run) -> dict[str, int]:
    def on_alarm(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outcomes = {"converted": 0, "ConversionError": 0}
    failures = []
    try:
        for description, mutant in mutants(data, count, seed):
            signal.alarm(PER_MUTANT_SECONDS)
            try:
                run(mutant)
                outcomes["converted"] += 1
            except ConversionError as exc:
                assert str(exc), description
                outcomes["ConversionError"] += 1
            except _Hang:
                failures.append(f"{description}: no answer in {PER_MUTANT_SECONDS} s")
            except Exception as exc:  # noqa: BLE001 - the point is to catch anything else
                failures.append(f"{description}: {type(exc).__name__}: {exc}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not failures, f"{len(failures)} of {count} mutants escaped:\n" + "\n".join(failures[:20])
    return outcomes


def _real_model(name: str) -> bytes:
    try:
        return mediapipe_models.model_path(name).read_bytes()
    except mediapipe_models.Unavailable as exc:
        pytest.skip(f"MediaPipe models cannot be downloaded here: {exc}")


@pytest.mark.parametrize("name,count", [("face_detection_short_range", 2500), ("selfie_segmentation", 1000),
                                        ("face_detection_full_range_sparse", 500)])
def test_mutants_of_a_real_model_convert_or_raise_conversion_error(name, count):
    outcomes = _campaign(_real_model(name), count, seed=len(name), run=convert)
    # The campaign must reach past the header checks: some mutants (weight bytes, harmless
    # fields) still convert and most are caught by verification.
    assert outcomes["converted"] > count // 20 and outcomes["ConversionError"] > count // 2, outcomes


def test_mutants_of_small_files_with_option_vectors():
    pytest.importorskip("ai_edge_litert")
    from tests.converter.test_tflite_ops import CASES

    for case in ("reshape", "squeeze", "strided_slice_masks", "transpose_conv_valid_bias",
                 "mediapipe_transpose_same", "split_v", "resize_bilinear_half_pixel",
                 "strided_slice_new_axis_ellipsis_backward", "gather_batch_dims_negative", "mirror_pad_symmetric"):
        data, _ = CASES[case]()
        _campaign(data, 300, seed=7, run=load_tflite)
    from tests.converter.test_tflite_int8 import CASES as INT8_CASES
    from tests.converter.test_tflite_int8 import PAD_CASES, uint8_boundary

    for case in ("conv_per_channel_same_relu", "depthwise_per_channel", "uint8_conv_relu6"):
        data, _, _ = INT8_CASES[case]()
        _campaign(data, 300, seed=8, run=convert)
    _campaign(PAD_CASES["padv2_uint8"]()[0], 300, seed=8, run=convert)
    _campaign(uint8_boundary("ADD")[0], 300, seed=8, run=convert)


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\x10\x00\x00\x00ONNX" + bytes(16), "file identifier"),
    (b"\xff\xff\xff\x7fTFL3" + bytes(8), "outside"),
])
def test_named_errors(data, message):
    with pytest.raises(ConversionError, match=message):
        read_tflite(data)


def test_error_names_the_part():
    data = bytearray(_real_model("face_detection_short_range"))
    model = read_tflite(bytes(data))
    # Point the first operator's first input past the tensor table.
    from converter.tflitefb.Model import Model

    op = Model.GetRootAs(bytes(data), 0).Subgraphs(0).Operators(0)
    start = op._tab.Vector(op._tab.Offset(6))
    data[start:start + 4] = np.int32(len(model.tensors) + 5).tobytes()
    with pytest.raises(ConversionError, match=r"operator 0 \(.*\) inputs: tensor index \d+ out of range"):
        read_tflite(bytes(data))

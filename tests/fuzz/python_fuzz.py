"""Coverage-guided fuzzing (atheris, libFuzzer's engine for Python) of the Python parsers of files and
messages a user or a peer hands us.

    python3 -m tests.fuzz.python_fuzz TARGET [libFuzzer flags...]     e.g. -runs=100000 -timeout=5

Targets, and the only exceptions each may raise (anything else, a hang past -timeout or a crash is a
finding that atheris reports and saves as build-fuzz/py/<target>/crash-* or timeout-*):

    onnx         converter.importers.onnx.load_onnx on the bytes as a .onnx file   ConversionError
    tflite       converter.importers.tflite.load_tflite on the bytes              ConversionError
    checkpoint   edge.checkpoint.load on the bytes as a .npz file                 CheckpointError (an EdgeError)
    calibration  converter.quantize.calibration.load_calibration on the bytes as
                 a .npz or .npy file (first byte) for a one-input image model     ConversionError
    cut_tensor   the split protocol's cut-tensor path, as the server and the client
                 both read it: a serialized TensorHeader (length-prefixed) and
                 chunks fed to cloudsplit.transfer.TensorAssembler, then
                 decode_tensor                                                    ValueError (FramingError)

Each run starts from seeds written into build-fuzz/py/<target>/seeds (valid files made by the code
under test: converted-network ONNX models, TFLite models from the test builders, checkpoints from
edge.checkpoint.save, calibration arrays, encoded cut tensors); the corpus it grows goes to
build-fuzz/py/<target>/corpus. The cut-tensor decoder exists only in Python, so it is fuzzed here
rather than by a libFuzzer target in C.
"""
from __future__ import annotations

import io
import os
import pathlib
import struct
import sys
import tempfile

import contextlib

import numpy as np

try:
    import atheris
except ImportError:  # the targets still run as plain functions (tests/fuzz/test_parsers.py replays)
    atheris = None

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORK = ROOT / "cruntime" / "build-fuzz" / "py"

with (atheris.instrument_imports(include=["converter", "edge", "cloudsplit"]) if atheris else contextlib.nullcontext()):
    from cloudsplit import transfer
    from cloudsplit.protos import split_pb2 as pb
    from converter.errors import ConversionError
    from converter.importers.onnx import load_onnx
    from converter.importers.tflite import load_tflite
    from converter.quantize.calibration import load_calibration
    from edge import checkpoint

# A file the parsers read by path: in memory where the system has it, so a run is not disk-bound.
_SCRATCH = tempfile.mkdtemp(prefix="edge-pyfuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def _as_file(data: bytes, suffix: str) -> str:
    path = os.path.join(_SCRATCH, "input" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def fuzz_onnx(data: bytes) -> None:
    try:
        load_onnx(_as_file(data, ".onnx"))
    except ConversionError as error:
        assert str(error)


def fuzz_tflite(data: bytes) -> None:
    try:
        load_tflite(data)
    except ConversionError as error:
        assert str(error)


def fuzz_checkpoint(data: bytes) -> None:
    try:
        checkpoint.load(_as_file(data, ".npz"))
    except checkpoint.CheckpointError as error:
        assert str(error)


_calibration_graph = None


def fuzz_calibration(data: bytes) -> None:
    global _calibration_graph
    if _calibration_graph is None:
        _calibration_graph = load_onnx(_onnx_seed_models()["classifier"])
    suffix = ".npy" if data[:1] == b"\x93" else ".npz"  # the .npy magic; anything else is tried as .npz
    try:
        load_calibration(_as_file(data, suffix), _calibration_graph, max_batches=4)
    except ConversionError as error:
        assert str(error)


def fuzz_cut_tensor(data: bytes) -> None:
    """[u16 n][n bytes: TensorHeader][u16 chunk length, chunk bytes]... as the stream carries them."""
    if len(data) < 2:
        return
    n = struct.unpack_from("<H", data)[0]
    header = pb.TensorHeader()
    try:
        header.ParseFromString(data[2:2 + n])
    except Exception:  # noqa: BLE001 - a message gRPC cannot parse never reaches our code
        return
    rest = data[2 + n:]
    try:
        assembler = transfer.TensorAssembler([header], max_total_bytes=1 << 20)
        offset = 0
        while len(rest) >= 2 and not assembler.complete:
            size = struct.unpack_from("<H", rest)[0]
            chunk, rest = rest[2:2 + size], rest[2 + size:]
            assembler.add(pb.TensorChunk(tensor_index=header.tensor_index, offset=offset, data=chunk))
            offset += len(chunk)
        if assembler.complete:
            for tensor_header, payload in assembler.tensors():
                transfer.decode_tensor(tensor_header, payload)
    except ValueError as error:
        assert str(error)


TARGETS = {"onnx": fuzz_onnx, "tflite": fuzz_tflite, "checkpoint": fuzz_checkpoint,
           "calibration": fuzz_calibration, "cut_tensor": fuzz_cut_tensor}


def _onnx_seed_models() -> dict:
    from onnx import TensorProto, helper

    from tests.fixtures import models
    from tests.fuzz.make_corpus import _mobilenet_block

    b = models.OnnxModelBuilder(0)
    x = b.op("Relu", [b.conv("input", 3, 4, 3, name="conv")])
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    b.linear(x, 4, 2, name="fc")
    b.nodes[-1].output[0] = "logits"
    classifier = b.model([helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                         [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], "classifier")
    return {"classifier": classifier, "mobilenet": _mobilenet_block(),
            "resnet": models.resnet18(resolution=8, num_classes=4, base_width=2, blocks_per_stage=(1, 1)),
            "lstm": models.lstm_lm(vocab=12, hidden=4, layers=1, tokens=3),
            "bert": models.bert_encoder(layers=1, hidden=8, heads=2, batch=1, tokens=3, intermediate=8)}


def _tflite_seeds() -> dict[str, bytes]:
    from tests.converter.test_tflite_int8 import CASES as INT8_CASES
    from tests.converter.test_tflite_ops import CASES

    seeds = {}
    for case in ("reshape", "strided_slice_masks", "transpose_conv_valid_bias", "split_v",
                 "resize_bilinear_half_pixel", "mediapipe_transpose_same"):
        seeds[case] = CASES[case]()[0]
    for case in ("conv_per_channel_same_relu", "depthwise_per_channel"):
        seeds[case] = INT8_CASES[case]()[0]
    return seeds


def seeds(target: str) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    if target == "onnx":
        return {name: model.SerializeToString() for name, model in _onnx_seed_models().items()}
    if target == "tflite":
        return _tflite_seeds()
    if target == "checkpoint":
        out = {}
        for name, variables in {"mlp": {"fc/w": rng.normal(size=(4, 3)).astype(np.float32),
                                        "fc/b": np.zeros(3, np.float32), "step": np.array(7, np.int64)},
                                "empty": {}}.items():
            path = pathlib.Path(_SCRATCH) / f"{name}.npz"
            checkpoint.save(path, variables, info={"step": 7})
            out[name] = path.read_bytes()
        return out
    if target == "calibration":
        images = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
        npy, npz = io.BytesIO(), io.BytesIO()
        np.save(npy, images)
        np.savez(npz, input=images)
        return {"images.npy": npy.getvalue(), "images.npz": npz.getvalue()}
    if target == "cut_tensor":
        out = {}
        for mode in ("none", "fp16", "int8", "int8-per-tensor"):
            array = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)
            try:
                header, payload = transfer.encode_tensor(5, array, mode)
            except ValueError:
                continue
            raw = header.SerializeToString()
            half = len(payload) // 2
            out[mode] = (struct.pack("<H", len(raw)) + raw + struct.pack("<H", half) + payload[:half]
                         + struct.pack("<H", len(payload) - half) + payload[half:])
        return out
    raise KeyError(target)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(__doc__, file=sys.stderr)
        return 2
    target = argv[1]
    if atheris is None:
        print("python_fuzz needs atheris: pip install atheris", file=sys.stderr)
        return 2
    seed_dir, corpus = WORK / target / "seeds", WORK / target / "corpus"
    seed_dir.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds(target).items():
        (seed_dir / name).write_bytes(data)
        TARGETS[target](data)  # a valid seed must pass before the campaign means anything
    flags = argv[2:]
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        flags.append(f"-artifact_prefix={WORK / target}/")
    atheris.Setup([argv[0], *flags, str(corpus), str(seed_dir)], TARGETS[target])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())

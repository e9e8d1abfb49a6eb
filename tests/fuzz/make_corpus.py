"""Writes the fuzzers' committed seed corpus and dictionary (tests/fuzz/corpus/, tests/fuzz/edge.dict).

    python3 -m tests.fuzz.make_corpus [--out tests/fuzz]

Seeds are real networks converted at toy sizes (ResNet-, MobileNetV2-, LSTM- and BERT-shaped, from
tests/fixtures/models.py), each also as int8 and as a trainable model (grad and train signatures),
plus the C tests' hand-built seed models (tests/c/make_seed_models.py), so that the fuzzers start
from every table, union member and op family a converter writes. Everything is seeded: rerunning
writes the same bytes. Sizes are kept to a few kB per file so that libFuzzer mutates quickly.

The dictionary holds the FlatBuffer file identifier and every identifier of cruntime/schema/*.fbs
(table, field, enum and union member names) as strings, and every enum value and op code as 32-bit
little-endian words, so that mutations can splice in well-formed names and codes.
"""
from __future__ import annotations

import argparse
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "cruntime" / "schema"


def _networks():
    from tests.fixtures import models

    yield "resnet", models.resnet18(resolution=8, num_classes=4, base_width=2, blocks_per_stage=(1, 1)), (1, 3, 8, 8)
    yield "mobilenet", _mobilenet_block(), (1, 3, 8, 8)
    yield "lstm", models.lstm_lm(vocab=12, hidden=4, layers=1, tokens=3), None
    yield "bert", models.bert_encoder(layers=1, hidden=8, heads=2, batch=1, tokens=3, intermediate=8), None


def _mobilenet_block():
    """MobileNetV2's inverted residual (expand 1x1, depthwise 3x3, project 1x1, residual add) between a
    stem and a classifier, at 8 channels: the real network's head alone (1280 channels) is 300 kB."""
    from onnx import TensorProto, helper

    from tests.fixtures.models import OnnxModelBuilder

    b = OnnxModelBuilder(0)
    x = b.relu6(b.batch_norm(b.conv("input", 3, 8, 3, stride=2, name="stem"), 8))
    y = b.relu6(b.batch_norm(b.conv(x, 8, 16, 1, name="expand"), 16))
    y = b.relu6(b.batch_norm(b.conv(y, 16, 16, 3, groups=16, name="depthwise"), 16))
    y = b.batch_norm(b.conv(y, 16, 8, 1, name="project"), 8)
    x = b.op("Add", [x, y], name="residual")
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    b.linear(x, 8, 4, name="classifier")
    b.nodes[-1].output[0] = "logits"
    return b.model([helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])], "mobilenet_block")


def model_seeds(out: pathlib.Path) -> list[pathlib.Path]:
    from converter.api import convert
    from converter.autodiff import TrainingConfig
    from converter.errors import ConversionError

    out.mkdir(parents=True, exist_ok=True)
    written = []
    rng = np.random.default_rng(0)
    for name, onnx_model, image_shape in _networks():
        variants = {"float": {}}
        if image_shape is not None:
            variants["int8"] = {"quantize": "int8", "calibration": rng.normal(0, 1, (4,) + image_shape[1:]).astype(np.float32)}
            variants["trainable"] = {"training": TrainingConfig(optimizer="adam")}
        variants["fp16"] = {"quantize": "fp16"}
        for variant, kwargs in variants.items():
            try:
                data = convert(onnx_model, **kwargs).data
            except ConversionError as error:  # a variant this network does not support is left out, said aloud
                print(f"make_corpus: {name}/{variant} skipped: {error}", file=sys.stderr)
                continue
            path = out / f"{name}-{variant}.edge"
            path.write_bytes(data)
            written.append(path)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "tests" / "c" / "make_seed_models.py"), tmp], check=True,
                       stdout=subprocess.DEVNULL)
        for path in sorted(pathlib.Path(tmp).glob("*.edge")):
            target = out / f"unit-{path.name}"
            shutil.copyfile(path, target)
            written.append(target)
    return written


def run_seeds(models: list[pathlib.Path], out: pathlib.Path) -> list[pathlib.Path]:
    """Inputs of the fuzz_run target (its layout is in tests/fuzz/fuzz_run.c) for each seed model, by
    its place in the sorted list: every signature, the whole op list and its second half (a split's
    server part), with the inputs and the variables set from random bytes, and once with input 0
    resized. A model the target leaves out (over its memory limit) shifts the indices; byte 0 is taken
    modulo the count, so the seeds still land on real models."""
    from cruntime.binding import ffi, lib

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    written = []

    def record(tensor: int, nbytes: int) -> bytes:
        return struct.pack("<h", tensor) + rng.integers(0, 256, min(nbytes, 64), dtype=np.uint8).tobytes()

    for index, path in enumerate(sorted(models)):
        model_ptr, interp_ptr = ffi.new("edge_model **"), ffi.new("edge_interpreter **")
        if lib.edge_model_load_file(str(path).encode(), model_ptr) != 0:
            continue
        model = model_ptr[0]
        options = ffi.new("edge_interpreter_options *", {"num_threads": 1})
        if lib.edge_interpreter_create(model, options, interp_ptr) != 0:
            lib.edge_model_free(model)
            continue
        interp = interp_ptr[0]
        num_ops = min(lib.edge_interpreter_num_ops(interp), 255)
        info = ffi.new("edge_tensor_info *")
        records = b""
        for t in range(min(lib.edge_interpreter_num_tensors(interp), 32767)):
            lib.edge_interpreter_tensor_info(interp, t, info)
            if info.kind == 2 or t in [lib.edge_interpreter_input(interp, i) for i in range(lib.edge_interpreter_num_inputs(interp))]:
                records += record(t, int(info.nbytes))
        inputs = []
        for signature in range(lib.edge_model_num_signatures(model)):
            inputs.append(bytes([index, 1, signature]) + records)
        ops = list(range(num_ops))
        for chosen in (ops, ops[len(ops) // 2:]):
            inputs.append(bytes([index, 0, len(chosen)]) + b"".join(struct.pack("<h", op) for op in chosen) + records)
        inputs.append(bytes([index, 3, 0, 1, 4, 4, 3, 1, 1, 1, 1]) + records)
        for k, data in enumerate(inputs):
            target = out / f"{path.stem}-{k}"
            target.write_bytes(data[:4096])
            written.append(target)
        lib.edge_interpreter_free(interp)
        lib.edge_model_free(model)
    return written


def schema_identifiers(schema_text: str) -> tuple[list[str], list[int]]:
    """Names (tables, structs, enums, unions, fields, enum members) and the enum members' values."""
    text = re.sub(r"//[^\n]*", "", schema_text)
    names, values = set(), set()
    for kind, name, body in re.findall(r"\b(table|struct|enum|union)\s+(\w+)[^{]*\{(.*?)\}", text, flags=re.S):
        names.add(name)
        if kind in ("table", "struct"):
            names.update(re.findall(r"(\w+)\s*:", body))
            continue
        value = -1
        for member in re.findall(r"(\w+)\s*(?:=\s*(-?\w+))?\s*(?:,|$)", body.strip()):
            member_name, explicit = member
            if not member_name:
                continue
            names.add(member_name)
            value = int(explicit, 0) if explicit else value + 1
            values.add(value)
    return sorted(names), sorted(values)


def dictionary(schema_dir: pathlib.Path = SCHEMA_DIR) -> str:
    def quoted(data: bytes) -> str:
        return '"' + "".join(f"\\x{b:02x}" if b < 0x20 or b > 0x7e or b in (0x22, 0x5c) else chr(b) for b in data) + '"'

    names, values = set(), set()
    lines = ["# libFuzzer dictionary generated by tests/fuzz/make_corpus.py from cruntime/schema/*.fbs; do not edit."]
    for fbs in sorted(schema_dir.glob("*.fbs")):
        text = fbs.read_text(encoding="utf-8")
        for identifier in re.findall(r'file_identifier\s+"(\w{4})"', text):
            lines.append(f"file_identifier={quoted(identifier.encode())}")
        n, v = schema_identifiers(text)
        names.update(n)
        values.update(v)
    lines += [f"name_{name}={quoted(name.encode())}" for name in sorted(names)]
    lines += [f"value_{value & 0xffffffff:x}={quoted(struct.pack('<i', value))}"
              for value in sorted(values) if -2**31 <= value < 2**31]
    for special in (0, 1, 0x7fffffff, -1, 64):
        lines.append(f"word_{special & 0xffffffff:x}={quoted(struct.pack('<i', special))}")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    corpus = args.out / "corpus" / "model"
    if corpus.exists():
        shutil.rmtree(corpus)
    written = model_seeds(corpus)
    run_corpus = args.out / "corpus" / "run"
    if run_corpus.exists():
        shutil.rmtree(run_corpus)
    written += run_seeds(written, run_corpus)
    (args.out / "edge.dict").write_text(dictionary(), encoding="utf-8")
    total = sum(p.stat().st_size for p in written)
    print(f"{len(written)} seeds, {total} bytes, in {corpus} and {run_corpus}; dictionary {args.out / 'edge.dict'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

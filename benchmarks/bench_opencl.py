"""The OpenCL backend, measured: kernel throughput, launch overhead, kernels per model, cold and warm
start; on a real GPU also against PyTorch (CUDA eager, TF32 off) in the same run.

    python3 benchmarks/bench_opencl.py [--out benchmarks/results] [--runs 20] [--gpu-only]

Every figure names the OpenCL device it came from. On PoCL (a CPU implementation of OpenCL, what
CI and this VM have) the figures say what the backend costs on top of its kernels, not what a GPU
does: no GPU speed is claimed from them. Parts:

- kernels: GFLOP/s of the GEMM (FULLY_CONNECTED 256 x 1024 x 1024), a 3x3 convolution, a depthwise
  3x3 and a 1x1 convolution (56 x 56, 64 -> 64 channels), each one op timed through edge.Interpreter
  with its output read back (median of --runs), beside the CPU kernels on the same op;
- launch: host time per kernel launch, from a chain of 256 tiny ReLUs: invoke() enqueues and returns
  (the kernels run asynchronously), so its time over 256 is the host's cost of one launch, from C;
- models: MobileNetV2, ResNet-18 and a BERT-style encoder (the tests' fixtures, full size for the
  CNNs): ops on the GPU, kernel launches and transfers per run, latency fp32 and fp16 beside the
  CPU kernels, output error against the CPU;
- start: allocate_tensors() of ResNet-18 in a fresh process with an empty binary cache (cold) and
  again with the cache filled (warm).
- gpu (only where the OpenCL device is a GPU and torch sees CUDA): SGEMM 4096^3 against
  torch.matmul with TF32 off, as GFLOP/s, and the error between them. The networks are not
  measured against PyTorch eager on CUDA.

Writes <out>/opencl-<UTC stamp>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _median_ms(interpreter, feeds: dict[int, np.ndarray], runs: int) -> float:
    """Median of ``runs`` timed runs (inputs set, invoke, outputs read) after two warm-ups."""
    from edge.measure import invoke_with, timed_runs

    outputs = [d["index"] for d in interpreter.get_output_details()]
    inputs = list(feeds.items())
    return float(np.median(timed_runs(lambda: invoke_with(interpreter, inputs, outputs), 2, runs)))


def _feeds(interpreter, seed: int = 0) -> dict[int, np.ndarray]:
    from edge.bench import random_inputs

    return dict(random_inputs(interpreter, np.random.default_rng(seed)))


def _one_op(kind: str) -> tuple[bytes, int]:
    """A one-op model and its FLOPs."""
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    rng = np.random.default_rng(1)
    b = GraphBuilder(kind)
    if kind == "gemm 256x1024x1024":
        x = b.input("x", (256, 1024))
        b.output(b.FullyConnected(x, b.constant("w", rng.standard_normal((1024, 1024)).astype(np.float32))), name="y")
        flops = 2 * 256 * 1024 * 1024
    else:
        x = b.input("x", (1, 56, 56, 64))
        if kind == "conv 3x3":
            w, groups = rng.standard_normal((64, 3, 3, 64)), 1
        elif kind == "depthwise 3x3":
            w, groups = rng.standard_normal((64, 3, 3, 1)), 64
        else:
            w, groups = rng.standard_normal((64, 1, 1, 64)), 1
        pads = (1, 1, 1, 1) if w.shape[1] == 3 else (0, 0, 0, 0)
        b.output(b.Conv2D(x, b.constant("w", w.astype(np.float32)), pads=pads, groups=groups, layout="NHWC"),
                 name="y")
        flops = 2 * 56 * 56 * 64 * w.shape[1] * w.shape[2] * w.shape[3]
    return write_model(b.build()), flops


def kernels(args) -> list[dict]:
    import edge

    rows = []
    for kind in ("gemm 256x1024x1024", "conv 3x3", "depthwise 3x3", "conv 1x1"):
        data, flops = _one_op(kind)
        row = {"op": kind, "flops": flops}
        for backend in ("cpu", "opencl"):
            with edge.Interpreter(model_content=data, backend=backend) as interpreter:
                interpreter.allocate_tensors()
                ms = _median_ms(interpreter, _feeds(interpreter), args.runs)
            row[f"{backend}_ms"] = ms
            row[f"{backend}_gflops"] = flops / (ms * 1e6)
        rows.append(row)
        print(f"kernels {kind:<20} opencl {row['opencl_gflops']:7.2f} GFLOP/s   cpu {row['cpu_gflops']:7.2f} GFLOP/s",
              flush=True)
    return rows


def launch(args) -> dict:
    import edge
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    b = GraphBuilder("chain")
    h = b.input("x", (16,))
    for _ in range(256):
        h = b.Relu(h)
    b.output(h, name="y")
    with edge.Interpreter(model_content=write_model(b.build()), backend="opencl") as interpreter:
        interpreter.allocate_tensors()
        feeds = _feeds(interpreter)
        out = interpreter.get_output_details()[0]["index"]
        enqueue, total = [], []
        for i in range(args.runs + 2):
            for index, value in feeds.items():
                interpreter.set_tensor(index, value)
            interpreter.get_tensor(out)  # nothing queued before the timed invoke
            start = time.perf_counter()
            interpreter.invoke()
            queued = time.perf_counter()
            interpreter.get_tensor(out)
            done = time.perf_counter()
            if i >= 2:
                enqueue.append((queued - start) * 1e6 / 256)
                total.append((done - start) * 1e6 / 256)
    row = {"launch_us": float(np.median(enqueue)), "launch_and_run_us": float(np.median(total))}
    print(f"launch  host cost per kernel launch {row['launch_us']:.2f} us (with the tiny kernel run: "
          f"{row['launch_and_run_us']:.2f} us)", flush=True)
    return row


def _networks():
    from tests.fixtures import models

    return {"MobileNetV2": models.mobilenet_v2(), "ResNet-18": models.resnet18(),
            "BERT 4x256, 64 tokens": models.bert_encoder(layers=4, hidden=256, heads=4, batch=1, tokens=64,
                                                         intermediate=1024)}


def networks(args) -> list[dict]:
    import converter
    import edge

    rows = []
    for name, onnx_model in _networks().items():
        data = converter.convert(onnx_model).data
        row = {"model": name}
        reference = None
        for backend, precision in (("cpu", "fp32"), ("opencl", "fp32"), ("opencl", "fp16")):
            with edge.Interpreter(model_content=data, backend=backend, gpu_precision=precision) as interpreter:
                interpreter.allocate_tensors()
                feeds = _feeds(interpreter)
                ms = _median_ms(interpreter, feeds, max(3, args.runs // 4))
                before = interpreter.placement()["transfers"]
                _median_ms(interpreter, feeds, 1)  # two warm-up runs and one timed: three runs
                placement = interpreter.placement()
                out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            after = placement["transfers"]
            key = "cpu" if backend == "cpu" else f"opencl_{precision}"
            row[f"{key}_ms"] = ms
            if backend == "cpu":
                reference = out
                continue
            row[f"{key}_error"] = float(np.max(np.abs(out - reference)) / np.max(np.abs(reference)))
            row["gpu_ops"], row["ops"] = placement["devices"].count("gpu"), len(placement["devices"])
            row["launches_per_run"] = (after["launches"] - before["launches"]) // 3
            row["transfers_per_run"] = (after["uploads"] + after["downloads"] - before["uploads"]
                                        - before["downloads"]) // 3
        rows.append(row)
        print(f"models  {name:<22} {row['gpu_ops']}/{row['ops']} ops on the GPU, {row['launches_per_run']} launches, "
              f"{row['transfers_per_run']} transfers per run; cpu {row['cpu_ms']:.1f} ms, opencl fp32 "
              f"{row['opencl_fp32_ms']:.1f} ms (error {row['opencl_fp32_error']:.1e}), fp16 {row['opencl_fp16_ms']:.1f} ms "
              f"(error {row['opencl_fp16_error']:.1e})", flush=True)
    return rows


START_CODE = """
import time, edge, converter
from tests.fixtures import models
data = converter.convert(models.resnet18()).data
start = time.perf_counter()
interpreter = edge.Interpreter(model_content=data, backend="opencl")
interpreter.allocate_tensors()
print(time.perf_counter() - start)
"""


def start(args) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "EDGE_OPENCL_CACHE": cache, "POCL_KERNEL_CACHE": "0", "PYTHONPATH": str(ROOT)}
        times = []
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", START_CODE], env=env, capture_output=True, text=True,
                                  check=True, cwd=ROOT)
            times.append(float(done.stdout.split()[-1]))
    row = {"cold_s": times[0], "warm_s": times[1]}
    print(f"start   ResNet-18 allocate_tensors: cold {row['cold_s']:.2f} s, warm {row['warm_s']:.3f} s "
          f"({row['cold_s'] / row['warm_s']:.0f}x)", flush=True)
    return row


def gpu(args) -> dict:
    """SGEMM against torch.matmul (TF32 off) when the OpenCL device is a GPU and torch has CUDA."""
    import edge
    import edge.opencl

    devices = [d for d in edge.opencl.devices() if d["type"] == "gpu"]
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not devices or not cuda:
        reason = "no OpenCL GPU" if not devices else "torch has no CUDA"
        print(f"gpu     skipped: {reason}", flush=True)
        return {"skipped": reason}
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    n = 4096
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    w = rng.standard_normal((n, n)).astype(np.float32)
    b = GraphBuilder("sgemm")
    b.output(b.FullyConnected(b.input("x", (n, n)), b.constant("w", w)), name="y")
    with edge.Interpreter(model_content=write_model(b.build()), backend="opencl") as interpreter:
        interpreter.allocate_tensors()
        ours_ms = _median_ms(interpreter, {interpreter.get_input_details()[0]["index"]: a}, 10)
        ours = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    ta, tw = torch.from_numpy(a).cuda(), torch.from_numpy(w).cuda()
    times = []
    for i in range(12):
        torch.cuda.synchronize()
        started = time.perf_counter()
        result = ta @ tw.T
        torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - started) * 1e3)
    torch_ms = float(np.median(times))
    error = float(np.max(np.abs(ours - result.cpu().numpy())) / np.max(np.abs(ours)))
    row = {"device": devices[0]["name"], "sgemm_ms": ours_ms, "sgemm_gflops": 2 * n ** 3 / (ours_ms * 1e6),
           "torch_ms": torch_ms, "torch_gflops": 2 * n ** 3 / (torch_ms * 1e6), "error": error,
           "note": "edge's time includes uploading the input and reading the output back; torch's is on-device"}
    print(f"gpu     SGEMM 4096^3 on {row['device']}: {row['sgemm_gflops']:.0f} GFLOP/s against torch "
          f"{row['torch_gflops']:.0f} GFLOP/s (error {error:.1e})", flush=True)
    return row


def markdown(report: dict) -> str:
    lines = [f"# OpenCL backend, {report['date']}", "", f"OpenCL device: {report['device']}", "",
             f"Machine: {report['machine']}", ""]
    if "kernels" in report:
        lines += ["| op | OpenCL GFLOP/s | CPU kernels GFLOP/s |", "|---|---|---|"]
        lines += [f"| {r['op']} | {r['opencl_gflops']:.2f} | {r['cpu_gflops']:.2f} |" for r in report["kernels"]]
        lines.append("")
    if "launch" in report:
        r = report["launch"]
        lines += [f"Host cost per kernel launch: {r['launch_us']:.2f} us (launch and run of a tiny kernel: "
                  f"{r['launch_and_run_us']:.2f} us).", ""]
    if "networks" in report:
        lines += ["| model | ops on the GPU | launches / run | transfers / run | CPU ms | OpenCL fp32 ms (error) | "
                  "OpenCL fp16 ms (error) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['gpu_ops']}/{r['ops']} | {r['launches_per_run']} | {r['transfers_per_run']} | "
                  f"{r['cpu_ms']:.1f} | {r['opencl_fp32_ms']:.1f} ({r['opencl_fp32_error']:.1e}) | "
                  f"{r['opencl_fp16_ms']:.1f} ({r['opencl_fp16_error']:.1e}) |" for r in report["networks"]]
        lines.append("")
    if "start" in report:
        r = report["start"]
        lines += [f"ResNet-18 allocate_tensors(): cold {r['cold_s']:.2f} s, warm (binary cache) {r['warm_s']:.3f} s.",
                  ""]
    if "gpu" in report:
        r = report["gpu"]
        lines += [f"GPU: {r.get('skipped') or json.dumps(r)}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="kernels,launch,networks,start,gpu")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    import edge.opencl

    devices = edge.opencl.devices()
    if not devices:
        print("no OpenCL device: install ocl-icd-libopencl1 and pocl-opencl-icd (or a GPU driver)", file=sys.stderr)
        return 1
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    first = next((d for d in devices if d["type"] == "gpu"), devices[0])
    report = {"date": stamp, "device": f"{first['name']} ({first['platform']}, {first['type']}, driver "
                                      f"{first['driver']})",
              "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
              "args": {"runs": args.runs, "parts": args.parts}}
    print(f"OpenCL device: {report['device']}", flush=True)
    parts = {"kernels": kernels, "launch": launch, "networks": networks, "start": start, "gpu": gpu}
    for name in args.parts.split(","):
        report[name] = parts[name](args)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"opencl-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

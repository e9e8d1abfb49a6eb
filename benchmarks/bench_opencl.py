"""The OpenCL backend, measured: kernel throughput, launch overhead, kernels per model, cold and warm
start; with --gpu, a real GPU against PyTorch (CUDA eager, TF32 off) in the same run.

    python3 benchmarks/bench_opencl.py [--out benchmarks/results] [--runs 20] [--parts kernels,launch,...]
    python3 benchmarks/bench_opencl.py --gpu [--peak-gflops G] [--opencl-loader libOpenCL.so.1] [--runs 100]
    python3 benchmarks/bench_opencl.py --gpu --dry-run       # the same on any OpenCL device, small sizes
    eval "$(python3 benchmarks/bench_opencl.py --opencl-env)"  # only the driver setup, for a shell

Every figure names the OpenCL device it came from. On PoCL (a CPU implementation of OpenCL, what
CI and this VM have) the figures say what the backend costs on top of its kernels, not what a GPU
does: no GPU speed is claimed from them. Parts (without --gpu):

- kernels: GFLOP/s of the GEMM (FULLY_CONNECTED 256 x 1024 x 1024), a 3x3 convolution, a depthwise
  3x3 and a 1x1 convolution (56 x 56, 64 -> 64 channels), each one op timed through edge.Interpreter
  with its output read back (median of --runs), beside the CPU kernels on the same op; the 3x3 one
  on OpenCL both as Winograd F(4x4, 3x3) (the runtime's choice) and as the implicit GEMM;
- launch: host time per kernel launch, from a chain of 256 tiny ReLUs: invoke() enqueues and returns
  (the kernels run asynchronously), so its time over 256 is the host's cost of one launch, from C;
- models: MobileNetV2, ResNet-18 and a BERT-style encoder (the tests' fixtures, full size for the
  CNNs): ops on the GPU, kernel launches and transfers per run, latency fp32 and fp16 beside the
  CPU kernels, output error against the CPU;
- start: allocate_tensors() of ResNet-18 in a fresh process with an empty binary cache (cold) and
  again with the cache filled (warm).

Writes <out>/opencl-<UTC stamp>.json and .md.

--gpu (the first OpenCL GPU; exits 1 when there is none or torch has no CUDA, never estimates):
first makes NVIDIA's OpenCL driver visible where no .icd registers it (a vendors folder with an
.icd naming libnvidia-opencl.so.1, $OCL_ICD_VENDORS; --opencl-loader names an ICD loader to carry
where libOpenCL.so.1 is missing), then:

- SGEMM 4096^3 fp32 (FULLY_CONNECTED), device time per product (ten products queued, one wait, less
  one product and one wait), against torch.matmul with TF32 off timed the same way, and against the
  card's FP32 non-tensor-core peak: --peak-gflops, else KNOWN_FP32_PEAKS when the device's name
  matches an entry there, else no ratio;
- MobileNetV2 and ResNet-18 at batch 1 and 32, fp32 and fp16 storage, beside the same ONNX graph run
  op by op with torch.nn.functional on CUDA (TorchGraph: PyTorch eager with the model's weights):
  median of --runs (default 100) latencies, the input already on the device, the logits read back;
  accuracy on the GPU against the CPU kernels over --accuracy-inputs inputs (fp32 max |error|
  <= 1e-4 and identical top-1, fp16 cosine >= 0.999 per input); exits 2 when a check fails.

Writes <out>/opencl-gpu-<UTC stamp>.json and .md. --dry-run takes any OpenCL device, torch on the
CPU when it has no CUDA, SGEMM 256^3, the networks at 32 x 32 and batch 1 and 4: it checks the
script, not a GPU.
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


class _WinogradOff:
    """Interpreters opened inside run 3x3 convolutions as implicit GEMMs: a temporary cache folder
    whose tuning table says "winograd 0" (its program binaries are built afresh)."""

    def __enter__(self):
        import edge.opencl

        self.folder = tempfile.TemporaryDirectory()
        self.previous = os.environ.get("EDGE_OPENCL_CACHE")
        os.environ["EDGE_OPENCL_CACHE"] = self.folder.name
        edge.opencl.tuning_file().write_text("winograd 0\n")
        return self

    def __exit__(self, *exc):
        if self.previous is None:
            os.environ.pop("EDGE_OPENCL_CACHE", None)
        else:
            os.environ["EDGE_OPENCL_CACHE"] = self.previous
        self.folder.cleanup()


def kernels(args) -> list[dict]:
    """Each op on the CPU kernels and on OpenCL; the 3x3 convolution on OpenCL both as Winograd
    (what the runtime picks for it) and as the implicit GEMM, interleaved in the same run."""
    import contextlib

    import edge

    rows = []
    for kind in ("gemm 256x1024x1024", "conv 3x3", "depthwise 3x3", "conv 1x1"):
        data, flops = _one_op(kind)
        row = {"op": kind, "flops": flops}
        variants = [("cpu", "cpu", contextlib.nullcontext), ("opencl", "opencl", contextlib.nullcontext)]
        if kind == "conv 3x3":
            variants.append(("opencl_implicit_gemm", "opencl", _WinogradOff))
        for key, backend, setting in variants:
            with setting(), edge.Interpreter(model_content=data, backend=backend) as interpreter:
                interpreter.allocate_tensors()
                ms = _median_ms(interpreter, _feeds(interpreter), args.runs)
                if backend == "opencl":
                    row[f"{key}_kernel"] = interpreter.placement()["kernels"][0]["name"]
            row[f"{key}_ms"] = ms
            row[f"{key}_gflops"] = flops / (ms * 1e6)
        rows.append(row)
        if "opencl_implicit_gemm_gflops" in row:
            print(f"kernels {kind:<20} implicit GEMM (Winograd off) {row['opencl_implicit_gemm_gflops']:7.2f} GFLOP/s",
                  flush=True)
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


# ---- --gpu: a real GPU beside PyTorch (CUDA eager, TF32 off) in the same run ----

# FP32 peak without tensor cores, GFLOP/s at the boost clock (NVIDIA's datasheets), by a pattern
# of the OpenCL device's name, most specific first. A peak is taken from here only when the
# device's name matches; otherwise only --peak-gflops gives one (clock x compute units does not:
# NVIDIA reports SMs, not FP32 lanes per clock).
KNOWN_FP32_PEAKS = (
    ("H100 PCIe", r"H100.*PCIe", 51_000.0),
    ("H100 NVL", r"H100.*NVL", 60_000.0),
    ("H100 SXM", r"H100", 67_000.0),
    ("H200 NVL", r"H200.*NVL", 60_000.0),
    ("H200 SXM", r"H200", 67_000.0),
    ("A100", r"A100", 19_500.0),
    ("L40S", r"L40S", 91_600.0),
    ("L4", r"\bL4\b", 30_300.0),
    ("A10", r"\bA10\b", 31_200.0),
    ("T4", r"\bT4\b", 8_100.0),
)

NVIDIA_LIBRARY_DIRS = ("/usr/local/nvidia/lib64", "/usr/local/nvidia/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                       "/usr/lib/aarch64-linux-gnu", "/usr/local/cuda/compat", "/usr/lib")


def known_peak(device_name: str) -> tuple[str, float] | None:
    """(the card, its FP32 GFLOP/s) when the device's name matches a KNOWN_FP32_PEAKS entry."""
    import re

    return next(((card, peak) for card, pattern, peak in KNOWN_FP32_PEAKS if re.search(pattern, device_name)), None)


def _nvidia_opencl_library() -> str | None:
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        if "libnvidia-opencl.so.1" in line and "=>" in line:
            return line.split("=>")[-1].strip()
    return next((str(pathlib.Path(d) / "libnvidia-opencl.so.1") for d in NVIDIA_LIBRARY_DIRS
                 if (pathlib.Path(d) / "libnvidia-opencl.so.1").exists()), None)


def find_opencl(loader: str | None = None, vendors_dir: str | None = None) -> list[str]:
    """Makes NVIDIA's OpenCL driver visible before the runtime opens OpenCL (so call it before any
    edge.opencl call): ``loader`` (an ICD loader, libOpenCL.so.1, carried to a machine without one)
    becomes $EDGE_OPENCL_LIBRARY; when no registered .icd names NVIDIA's driver and
    $OCL_ICD_VENDORS is unset, a vendors folder with one .icd pointing at libnvidia-opencl.so.1 is
    written and $OCL_ICD_VENDORS names it. Returns what it found and did, for the report."""
    import ctypes.util
    import glob

    notes = []
    if loader:
        os.environ["EDGE_OPENCL_LIBRARY"] = str(pathlib.Path(loader).resolve())
        notes.append(f"ICD loader {os.environ['EDGE_OPENCL_LIBRARY']} (--opencl-loader)")
    elif "EDGE_OPENCL_LIBRARY" in os.environ:
        notes.append(f"ICD loader {os.environ['EDGE_OPENCL_LIBRARY']} ($EDGE_OPENCL_LIBRARY)")
    elif ctypes.util.find_library("OpenCL") is None:
        notes.append("no libOpenCL found by the linker: pass --opencl-loader PATH to an ICD loader")
    if os.environ.get("OCL_ICD_VENDORS"):
        notes.append(f"OCL_ICD_VENDORS={os.environ['OCL_ICD_VENDORS']} (given)")
        return notes
    for icd in sorted(glob.glob("/etc/OpenCL/vendors/*.icd")):
        try:
            if "nvidia" in pathlib.Path(icd).read_text().lower():
                notes.append(f"NVIDIA's driver registered in {icd}")
                return notes
        except OSError:
            continue
    library = _nvidia_opencl_library()
    if library is None:
        notes.append("no libnvidia-opencl.so.1 on this machine (ldconfig, " + ", ".join(NVIDIA_LIBRARY_DIRS) + ")")
        return notes
    vendors = pathlib.Path(vendors_dir or tempfile.mkdtemp(prefix="edge-opencl-vendors-"))
    vendors.mkdir(parents=True, exist_ok=True)
    (vendors / "nvidia.icd").write_text(library + "\n")
    os.environ["OCL_ICD_VENDORS"] = str(vendors)
    notes.append(f"wrote {vendors / 'nvidia.icd'} -> {library}; OCL_ICD_VENDORS={vendors}")
    return notes


class TorchGraph:
    """The fixtures' CNN graphs (Conv, BatchNormalization, Relu, Clip, Add, MaxPool,
    GlobalAveragePool, Flatten, Gemm) run node by node with torch.nn.functional on ``device``, with
    the ONNX model's own weights: PyTorch eager as torchvision's modules run these networks in eval
    mode (BatchNorm a separate op)."""

    def __init__(self, model, device: str):
        import torch
        from onnx import helper, numpy_helper

        self.torch, self.device = torch, device
        constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.values = {name: torch.from_numpy(np.array(v)).to(device) for name, v in constants.items()}
        self.nodes = []
        for node in model.graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Clip":  # bounds as Python floats: no device read per run
                attrs["bounds"] = tuple(float(constants[name]) for name in node.input[1:3])
            self.nodes.append((node.op_type, list(node.input), node.output[0], attrs))
        self.input = next(v.name for v in model.graph.input if v.name not in constants)
        self.output = model.graph.output[0].name

    def __call__(self, x):
        torch = self.torch
        functional = torch.nn.functional
        env = dict(self.values)
        env[self.input] = x
        for op, inputs, output, attrs in self.nodes:
            a = [env[name] for name in inputs]
            if op == "Conv":
                pads = attrs.get("pads", [0, 0, 0, 0])
                if pads[:2] != pads[2:]:
                    raise NotImplementedError("asymmetric Conv padding")
                y = functional.conv2d(a[0], a[1], a[2] if len(a) > 2 else None, stride=attrs.get("strides", 1),
                                      padding=tuple(pads[:2]), dilation=attrs.get("dilations", 1),
                                      groups=attrs.get("group", 1))
            elif op == "BatchNormalization":
                y = functional.batch_norm(a[0], a[3], a[4], a[1], a[2], False, 0.0, attrs.get("epsilon", 1e-5))
            elif op == "Relu":
                y = functional.relu(a[0])
            elif op == "Clip":
                y = torch.clamp(a[0], *attrs["bounds"])
            elif op == "Add":
                y = a[0] + a[1]
            elif op == "MaxPool":
                pads = attrs.get("pads", [0, 0, 0, 0])
                y = functional.max_pool2d(a[0], attrs["kernel_shape"], attrs.get("strides", 1), tuple(pads[:2]))
            elif op == "GlobalAveragePool":
                y = functional.adaptive_avg_pool2d(a[0], 1)
            elif op == "Flatten":
                y = torch.flatten(a[0], attrs.get("axis", 1))
            elif op == "Gemm" and attrs.get("transB") == 1 and not attrs.get("transA"):
                y = functional.linear(a[0], a[1], a[2] if len(a) > 2 else None)
            else:
                raise NotImplementedError(f"TorchGraph has no {op}")
            env[output] = y
        return env[self.output]


def _per_run_ms(step, finish, k: int, samples: int) -> float:
    """Device milliseconds per ``step``: k steps queued back to back then one ``finish`` (a wait,
    and for edge a read-back), less one step and one finish, over k - 1: the finish's own cost
    cancels. Median over ``samples``."""
    step()
    finish()
    results = []
    for _ in range(samples):
        t0 = time.perf_counter()
        step()
        finish()
        t1 = time.perf_counter()
        for _ in range(k):
            step()
        finish()
        t2 = time.perf_counter()
        results.append(((t2 - t1) - (t1 - t0)) / (k - 1) * 1e3)
    return float(np.median(results))


def _latency_ms(step, runs: int) -> float:
    """Median wall milliseconds of ``step`` (which ends with its result on the host), after two warm-ups."""
    from edge.measure import timed_runs

    return float(np.median(timed_runs(step, 2, runs)))


def _torch_setup(dry_run: bool):
    """(torch, its device, why not CUDA or None)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    if torch.cuda.is_available():
        return torch, "cuda", None
    torch.set_num_threads(1)  # beside the OpenCL device's own threads on the same cores
    return torch, "cpu", ("--dry-run: torch on the CPU" if dry_run else "torch sees no CUDA device")


def gpu_sgemm(args, device: dict, torch, torch_device: str) -> dict:
    import edge
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    n = args.sgemm_n
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    w = rng.standard_normal((n, n)).astype(np.float32)
    b = GraphBuilder("sgemm")
    b.output(b.FullyConnected(b.input("x", (n, n)), b.constant("w", w)), name="y")
    k, samples = (10, 5) if not args.dry_run else (3, 3)
    with edge.Interpreter(model_content=write_model(b.build()), backend="opencl",
                          gpu_device=device["index"]) as interpreter:
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], a)
        out = interpreter.get_output_details()[0]["index"]
        ours_ms = _per_run_ms(interpreter.invoke, lambda: interpreter.get_tensor(out), k, samples)
        ours = np.array(interpreter.get_tensor(out))
    ta, tw = torch.from_numpy(a).to(torch_device), torch.from_numpy(w).to(torch_device)
    finish = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)
    theirs = {}

    def step():
        theirs["y"] = ta @ tw.T

    torch_ms = _per_run_ms(step, finish, k, samples)
    reference = theirs["y"].cpu().numpy()
    flops = 2 * n ** 3
    row = {"n": n, "edge_ms": ours_ms, "edge_gflops": flops / (ours_ms * 1e6), "torch_ms": torch_ms,
           "torch_gflops": flops / (torch_ms * 1e6),
           "error_vs_torch": float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))}
    row["edge_vs_torch"] = row["edge_gflops"] / row["torch_gflops"]
    if args.peak_gflops:
        row["peak_gflops"], row["peak_source"] = args.peak_gflops, "--peak-gflops"
    elif (known := known_peak(device["name"])) is not None:
        row["peak_gflops"], row["peak_source"] = known[1], f"datasheet, {known[0]} (matched '{device['name']}')"
    else:
        row["peak_gflops"], row["peak_source"] = None, f"'{device['name']}' is not in the table: pass --peak-gflops"
    row["fraction_of_peak"] = row["edge_gflops"] / row["peak_gflops"] if row["peak_gflops"] else None
    peak = (f"{100 * row['fraction_of_peak']:.0f} % of the {row['peak_gflops']:.0f} GFLOP/s FP32 peak "
            f"({row['peak_source']})") if row["peak_gflops"] else f"no peak: {row['peak_source']}"
    print(f"sgemm   {n}^3 fp32: edge {row['edge_gflops']:.4g} GFLOP/s, torch ({torch_device}, TF32 off) "
          f"{row['torch_gflops']:.4g} GFLOP/s = {100 * row['edge_vs_torch']:.0f} %; {peak}; "
          f"error vs torch {row['error_vs_torch']:.1e}", flush=True)
    return row


def _gpu_networks(dry_run: bool) -> dict:
    from tests.fixtures import models

    if dry_run:
        return {"MobileNetV2": lambda batch: models.mobilenet_v2(width=0.35, resolution=32, num_classes=10,
                                                                 batch=batch),
                "ResNet-18": lambda batch: models.resnet18(resolution=32, base_width=8, num_classes=10, batch=batch)}
    return {"MobileNetV2": lambda batch: models.mobilenet_v2(batch=batch),
            "ResNet-18": lambda batch: models.resnet18(batch=batch)}


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    a, b = got.reshape(got.shape[0], -1).astype(np.float64), want.reshape(want.shape[0], -1).astype(np.float64)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def gpu_network(args, name: str, build, batch: int, device: dict, torch, torch_device: str) -> dict:
    """Accuracy against the CPU kernels, then latency: edge fp32 and fp16 storage and PyTorch eager,
    each with its input already on the device and its logits read back to the host per run."""
    import converter
    import edge
    from tests.fixtures import models
    from tests.fixtures.harness import run_interpreter

    onnx_model = build(batch)
    data = converter.convert(onnx_model).data
    graph = TorchGraph(onnx_model, torch_device)
    row = {"model": name, "batch": batch}
    interpreters = {"cpu": edge.Interpreter(model_content=data, num_threads=os.cpu_count() or 1)}
    for precision in ("fp32", "fp16"):
        interpreters[precision] = edge.Interpreter(model_content=data, backend="opencl", gpu_precision=precision,
                                                   gpu_device=device["index"])
    try:
        for interpreter in interpreters.values():
            interpreter.allocate_tensors()
        worst32, worst_torch, top32, top16, cosines, rows = 0.0, 0.0, 0, 0, [], 0
        for seed in range(max(1, -(-args.accuracy_inputs // batch))):
            feeds = models.sample_inputs(onnx_model, seed=seed)
            want = next(iter(run_interpreter(interpreters["cpu"], feeds).values()))
            got32 = next(iter(run_interpreter(interpreters["fp32"], feeds).values()))
            got16 = next(iter(run_interpreter(interpreters["fp16"], feeds).values()))
            with torch.inference_mode():
                theirs = graph(torch.from_numpy(feeds[graph.input]).to(torch_device)).cpu().numpy()
            worst32 = max(worst32, float(np.max(np.abs(got32 - want))))
            worst_torch = max(worst_torch, float(np.max(np.abs(theirs - want))))
            top32 += int(np.sum(np.argmax(got32, -1) == np.argmax(want, -1)))
            top16 += int(np.sum(np.argmax(got16, -1) == np.argmax(want, -1)))
            cosines.extend(_cosines(got16, want).tolist())
            rows += batch
        row.update({"inputs": rows, "fp32_max_abs_error": worst32, "fp32_top1_agreement": top32 / rows,
                    "fp16_min_cosine": min(cosines), "fp16_top1_agreement": top16 / rows,
                    "torch_max_abs_error": worst_torch})
        row["fp32_ok"] = worst32 <= 1e-4 and top32 == rows
        row["fp16_ok"] = min(cosines) >= 0.999
        placement = interpreters["fp32"].placement()
        row["gpu_ops"], row["ops"] = placement["devices"].count("gpu"), len(placement["devices"])
        feeds = models.sample_inputs(onnx_model, seed=0)
        for precision in ("fp32", "fp16"):
            interpreter = interpreters[precision]
            detail = interpreter.get_input_details()[0]
            interpreter.set_tensor(detail["index"], feeds[detail["name"]])
            out = interpreter.get_output_details()[0]["index"]

            def step(interpreter=interpreter, out=out):
                interpreter.invoke()
                interpreter.get_tensor(out)

            row[f"edge_{precision}_ms"] = _latency_ms(step, args.runs)
        x = torch.from_numpy(feeds[graph.input]).to(torch_device)

        def torch_step():
            with torch.inference_mode():
                graph(x).cpu()

        row["torch_ms"] = _latency_ms(torch_step, args.runs)
    finally:
        for interpreter in interpreters.values():
            interpreter.close()
    for key in ("edge_fp32", "edge_fp16", "torch"):
        row[f"{key}_images_per_s"] = batch / row[f"{key}_ms"] * 1e3
    row["fp32_vs_torch"] = row["torch_ms"] / row["edge_fp32_ms"]  # > 1: edge is faster
    row["fp16_vs_torch"] = row["torch_ms"] / row["edge_fp16_ms"]
    print(f"network {name:<12} batch {batch:>2}: edge fp32 {row['edge_fp32_ms']:.2f} ms, fp16 "
          f"{row['edge_fp16_ms']:.2f} ms, torch ({torch_device}) {row['torch_ms']:.2f} ms; fp32 error "
          f"{worst32:.1e} top-1 {100 * row['fp32_top1_agreement']:.0f} %, fp16 cosine >= "
          f"{row['fp16_min_cosine']:.5f} top-1 {100 * row['fp16_top1_agreement']:.0f} %; "
          f"{row['gpu_ops']}/{row['ops']} ops on the GPU", flush=True)
    return row


def gpu_markdown(report: dict) -> str:
    lines = [f"# OpenCL backend on a GPU, {report['date']}" + (" (--dry-run)" if report["dry_run"] else ""), "",
             f"OpenCL device: {report['device']}", "", f"PyTorch: {report['torch']}", "",
             f"Machine: {report['machine']}", "", "OpenCL driver: " + "; ".join(report["opencl_setup"]), ""]
    r = report.get("sgemm")
    if r:
        peak = (f"{100 * r['fraction_of_peak']:.0f} % of {r['peak_gflops']:.0f} ({r['peak_source']})"
                if r["peak_gflops"] else r["peak_source"])
        lines += ["| SGEMM fp32 | edge GFLOP/s | torch GFLOP/s (TF32 off) | edge / torch | of FP32 peak | error vs torch |",
                  "|---|---|---|---|---|---|",
                  f"| {r['n']}^3 | {r['edge_gflops']:.4g} | {r['torch_gflops']:.4g} | {100 * r['edge_vs_torch']:.0f} % | "
                  f"{peak} | {r['error_vs_torch']:.1e} |", ""]
    if report.get("networks"):
        lines += ["Latency: median of the runs, input already on the device, logits read back to the host. Errors "
                  "against the CPU kernels; top-1: agreement with them.", "",
                  "| model | batch | edge fp32 ms | edge fp16 ms | torch eager ms | torch / edge fp32 | "
                  "torch / edge fp16 | fp32 max abs error (top-1) | fp16 min cosine (top-1) | torch max abs error | "
                  "ops on the GPU |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['edge_fp32_ms']:.2f} | {r['edge_fp16_ms']:.2f} | "
                  f"{r['torch_ms']:.2f} | {r['fp32_vs_torch']:.2f} | {r['fp16_vs_torch']:.2f} | "
                  f"{r['fp32_max_abs_error']:.1e} ({100 * r['fp32_top1_agreement']:.0f} %) | "
                  f"{r['fp16_min_cosine']:.5f} ({100 * r['fp16_top1_agreement']:.0f} %) | {r['torch_max_abs_error']:.1e} | "
                  f"{r['gpu_ops']}/{r['ops']} |"
                  for r in report["networks"]]
        lines.append("")
    return "\n".join(lines) + "\n"


def gpu_main(args) -> int:
    """The --gpu report; --dry-run runs it on any OpenCL device with torch on the CPU, small sizes."""
    setup = find_opencl(args.opencl_loader)
    for note in setup:
        print(f"opencl  {note}", flush=True)
    import edge.opencl

    found = edge.opencl.devices()
    device = next((d for d in found if d["type"] == "gpu"), None)
    if device is None and args.dry_run and found:
        device = found[0]
    if device is None:
        print("no OpenCL GPU: " + ("; ".join(f"{d['name']} ({d['type']})" for d in found) or "no OpenCL device"),
              file=sys.stderr)
        return 1
    torch, torch_device, why = _torch_setup(args.dry_run)
    if why and not args.dry_run:
        print(f"PyTorch cannot run on a GPU here: {why}", file=sys.stderr)
        return 1
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    torch_name = torch.cuda.get_device_name() if torch_device == "cuda" else "CPU"
    report = {"date": stamp, "dry_run": args.dry_run,
              "device": f"{device['name']} ({device['platform']}, {device['type']}, driver {device['driver']}, "
                        f"{device['compute_units']} compute units at {device['clock_mhz']} MHz)",
              "torch": f"{torch.__version__} on {torch_name}, TF32 off" + (f" ({why})" if why else ""),
              "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
              "opencl_setup": setup, "args": {k: v for k, v in vars(args).items() if k not in ("out",)}}
    print(f"OpenCL device: {report['device']}\nPyTorch: {report['torch']}", flush=True)
    report["sgemm"] = gpu_sgemm(args, device, torch, torch_device)
    report["networks"] = [gpu_network(args, name, build, batch, device, torch, torch_device)
                          for name, build in _gpu_networks(args.dry_run).items()
                          for batch in ((1, 4) if args.dry_run else (1, 32))]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"opencl-gpu-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    stem.with_suffix(".md").write_text(gpu_markdown(report))
    print(f"wrote {stem}.json and .md")
    failed = [f"{r['model']} batch {r['batch']} {p}" for r in report["networks"] for p in ("fp32", "fp16")
              if not r[f"{p}_ok"]]
    if failed:
        print("accuracy checks failed: " + ", ".join(failed), file=sys.stderr)
        return 2
    return 0


def markdown(report: dict) -> str:
    lines = [f"# OpenCL backend, {report['date']}", "", f"OpenCL device: {report['device']}", "",
             f"Machine: {report['machine']}", ""]
    if "kernels" in report:
        lines += ["| op | OpenCL GFLOP/s (kernel) | CPU kernels GFLOP/s |", "|---|---|---|"]
        for r in report["kernels"]:
            lines.append(f"| {r['op']} | {r['opencl_gflops']:.2f} ({r['opencl_kernel']}) | {r['cpu_gflops']:.2f} |")
            if "opencl_implicit_gemm_gflops" in r:
                lines.append(f"| {r['op']}, Winograd off | {r['opencl_implicit_gemm_gflops']:.2f} "
                             f"({r['opencl_implicit_gemm_kernel']}) | |")
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
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter,
                                     epilog="FP32 peaks --gpu knows (GFLOP/s; used only when the device's name "
                                            "matches):\n" + "\n".join(f"  {card:<10} {peak:>8.0f}" for card, _, peak
                                                                      in KNOWN_FP32_PEAKS))
    parser.add_argument("--parts", default="kernels,launch,networks,start", help="without --gpu: which parts to run")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per figure (20; with --gpu 100; "
                                                                "--dry-run 5)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--gpu", action="store_true", help="the GPU report against PyTorch (see above)")
    parser.add_argument("--dry-run", action="store_true", help="with --gpu: any OpenCL device, small sizes")
    parser.add_argument("--peak-gflops", type=float, default=None, help="with --gpu: the card's FP32 peak")
    parser.add_argument("--opencl-loader", default=None, help="with --gpu: an ICD loader (libOpenCL.so.1) to use")
    parser.add_argument("--sgemm-n", type=int, default=None, help="with --gpu: SGEMM size (4096; --dry-run 256)")
    parser.add_argument("--accuracy-inputs", type=int, default=None,
                        help="with --gpu: inputs per network and batch for the accuracy checks (32; --dry-run 4)")
    parser.add_argument("--opencl-env", action="store_true",
                        help="only register NVIDIA's OpenCL driver as --gpu does and print the shell exports\n"
                             "that make the same setup hold for other programs (benchmarks/gpu_check.sh)")
    args = parser.parse_args(argv)
    if args.opencl_env:
        import shlex

        for note in find_opencl(args.opencl_loader):
            print(f"# {note}")
        for name in ("EDGE_OPENCL_LIBRARY", "OCL_ICD_VENDORS"):
            if os.environ.get(name):
                print(f"export {name}={shlex.quote(os.environ[name])}")
        return 0
    if args.gpu:
        args.runs = args.runs or (5 if args.dry_run else 100)
        args.accuracy_inputs = args.accuracy_inputs or (4 if args.dry_run else 32)
        args.sgemm_n = args.sgemm_n or (256 if args.dry_run else 4096)
        return gpu_main(args)
    args.runs = args.runs or 20
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
    parts = {"kernels": kernels, "launch": launch, "networks": networks, "start": start}
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

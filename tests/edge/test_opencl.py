"""The OpenCL backend against the CPU path, on PoCL (a CPU OpenCL implementation) where no GPU is
present: every ONNX op case of tests/ops/test_onnx_ops.py (ragged shapes, broadcasting, padding,
stride, dilation, groups), whole networks, placement with CPU fallback, errors, the binary cache.

CI installs pocl-opencl-icd, so these run there; without OpenCL they are skipped locally only
(under CI=true a missing OpenCL fails the module).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import edge
import edge.opencl

if not edge.opencl.available():
    if os.environ.get("CI"):
        raise RuntimeError("CI installs an OpenCL driver (pocl-opencl-icd), but edge.opencl finds no device")
    pytest.skip("no OpenCL device (install ocl-icd-libopencl1 and pocl-opencl-icd)", allow_module_level=True)

from tests.fixtures import models  # noqa: E402
from tests.fixtures.harness import run_interpreter  # noqa: E402
from tests.ops.test_onnx_ops import CASES, build  # noqa: E402

FP32_BOUND, FP16_BOUND = 1e-5, 2e-3


@pytest.fixture(autouse=True, scope="module")
def binary_cache(tmp_path_factory):
    """Program binaries go to a temporary cache, not the user's."""
    previous = os.environ.get("EDGE_OPENCL_CACHE")
    os.environ["EDGE_OPENCL_CACHE"] = str(tmp_path_factory.mktemp("opencl-cache"))
    yield
    if previous is None:
        os.environ.pop("EDGE_OPENCL_CACHE", None)
    else:
        os.environ["EDGE_OPENCL_CACHE"] = previous


def run(data: bytes, feeds, **options):
    interpreter = edge.Interpreter(model_content=data, **options)
    interpreter.allocate_tensors()
    return run_interpreter(interpreter, feeds), interpreter


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    if want.size == 0:
        return 0.0
    finite = np.isfinite(want)
    assert np.array_equal(np.isfinite(got), finite) and np.array_equal(np.isnan(got), np.isnan(want))
    scale = max(float(np.max(np.abs(want[finite]))) if finite.any() else 0.0, 1e-6)
    return float(np.max(np.abs(got[finite].astype(np.float64) - want[finite]))) / scale if finite.any() else 0.0


CONVERTED: dict[str, tuple[bytes, dict]] = {}


def converted(case_):
    if case_.id not in CONVERTED:
        import converter

        model, feeds = build(case_)
        CONVERTED[case_.id] = (converter.convert(model).data, feeds)
    return CONVERTED[case_.id]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case_", CASES, ids=[c.id for c in CASES])
def test_op_on_the_gpu_matches_the_cpu(case_, precision):
    data, feeds = converted(case_)
    if precision == "fp16":  # fp16 storage holds the inputs as fp16: the CPU gets the same values
        feeds = {k: v.astype(np.float16).astype(np.float32) if v.dtype == np.float32 else v for k, v in feeds.items()}
    want, _ = run(data, feeds)
    got, interpreter = run(data, feeds, backend="opencl", gpu_precision=precision)
    placement = interpreter.placement()
    bound = FP32_BOUND if precision == "fp32" else FP16_BOUND
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
        if expected.dtype.kind != "f":
            np.testing.assert_array_equal(actual, expected, err_msg=name)
        elif "gpu" in placement["devices"]:
            assert relative_error(actual, expected) <= bound, (name, placement["devices"])
        else:  # nothing on the GPU: the CPU kernels, bit for bit
            np.testing.assert_array_equal(actual, expected, err_msg=name)


def _network(name):
    if name == "mobilenet_v2":
        return models.mobilenet_v2(width=0.35, resolution=32, num_classes=10)
    if name == "resnet18":
        return models.resnet18(resolution=32, base_width=8, num_classes=10)
    return models.bert_encoder(layers=2, hidden=64, heads=4, batch=1, tokens=16, intermediate=128)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18", "bert_encoder"])
def test_networks_on_the_gpu_match_the_cpu(name):
    import converter

    onnx_model = _network(name)
    data = converter.convert(onnx_model).data
    cpu = edge.Interpreter(model_content=data)
    gpu32 = edge.Interpreter(model_content=data, backend="opencl")
    gpu16 = edge.Interpreter(model_content=data, backend="opencl", gpu_precision="fp16")
    for interpreter in (cpu, gpu32, gpu16):
        interpreter.allocate_tensors()
    worst32, cosines, agree = 0.0, [], 0
    runs = 100
    for seed in range(runs):
        feeds = models.sample_inputs(onnx_model, seed=seed)
        want = next(iter(run_interpreter(cpu, feeds).values()))
        got32 = next(iter(run_interpreter(gpu32, feeds).values()))
        got16 = next(iter(run_interpreter(gpu16, feeds).values()))
        worst32 = max(worst32, float(np.max(np.abs(got32 - want))))
        a, b = got16.ravel().astype(np.float64), want.ravel().astype(np.float64)
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        agree += int(np.array_equal(np.argmax(got16.reshape(got16.shape[0], -1), -1),
                                    np.argmax(want.reshape(want.shape[0], -1), -1)))
        assert np.array_equal(np.argmax(got32.reshape(got32.shape[0], -1), -1),
                              np.argmax(want.reshape(want.shape[0], -1), -1))
    placement = gpu32.placement()
    assert placement["devices"].count("gpu") >= 0.9 * len(placement["devices"]), placement["partitions"]
    assert worst32 <= 1e-4
    assert min(cosines) >= 0.999
    assert agree >= 0.99 * runs  # random weights: one input in 100 has a near-tie (margin 0.1 %) fp16 flips


def test_an_op_the_gpu_lacks_runs_on_the_cpu_with_the_transfers_counted():
    """Cast has no GPU kernel: the ops before it run on the GPU, Cast on the CPU (downloading its
    input), the ops after on the GPU again (uploading)."""
    from converter.builder import GraphBuilder

    rng = np.random.default_rng(3)
    b = GraphBuilder("mixed")
    x = b.input("x", (4, 24))
    h = b.FullyConnected(x, b.constant("w1", rng.standard_normal((16, 24))), activation=("Relu", 0.0, 0.0))
    h = b.Cast(b.Cast(h, to="int32"), to="float32")
    y = b.FullyConnected(h, b.constant("w2", rng.standard_normal((5, 16))))
    b.output(b.Softmax(y, axis=1), name="probs")
    from converter.writer import write_model

    data = write_model(b.build())
    feeds = {"x": rng.standard_normal((4, 24)).astype(np.float32)}
    want, _ = run(data, feeds)
    got, interpreter = run(data, feeds, backend="opencl")
    np.testing.assert_allclose(got["probs"], want["probs"], rtol=1e-5, atol=1e-6)
    placement = interpreter.placement()
    ops = [op["op"] for op in interpreter.op_details()]
    assert [d for d, op in zip(placement["devices"], ops) if op == "CAST"] == ["cpu", "cpu"]
    assert placement["devices"][0] == "gpu" and placement["devices"][-1] == "gpu"
    assert [p["device"] for p in placement["partitions"]] == ["gpu", "cpu", "gpu"]
    transfers = placement["transfers"]
    # x up; the FC output down for Cast; Cast's output up; probs down
    assert transfers["uploads"] == 2 and transfers["downloads"] == 2, transfers


def test_auto_keeps_a_cpu_opencl_device_off_and_runs_the_cpu_kernels():
    import converter

    onnx_model = _network("mobilenet_v2")
    data = converter.convert(onnx_model).data
    feeds = models.sample_inputs(onnx_model)
    not_gpus = [d for d in edge.opencl.devices() if d["type"] != "gpu"]
    if not not_gpus:
        pytest.skip("every OpenCL device here is a GPU")
    want, _ = run(data, feeds)
    got, interpreter = run(data, feeds, backend="auto", gpu_device=not_gpus[0]["index"])
    assert interpreter.placement()["devices"] == ["cpu"] * len(interpreter.op_details())  # PoCL is not a GPU
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


def _child(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env}, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_without_opencl_the_gpu_is_refused_by_name_and_auto_runs_on_the_cpu(tmp_path):
    code = """
import numpy as np, edge, edge.opencl
from converter.builder import GraphBuilder
from converter.writer import write_model
b = GraphBuilder("m"); x = b.input("x", (2, 3)); b.output(b.Relu(x), name="y")
data = write_model(b.build())
assert edge.opencl.devices() == []
try:
    edge.Interpreter(model_content=data, backend="opencl")
except edge.UnsupportedError as error:
    print("refused:", error)
i = edge.Interpreter(model_content=data, backend="auto"); i.allocate_tensors()
i.set_tensor(i.get_input_details()[0]["index"], np.array([[-1, 2, -3], [4, -5, 6]], np.float32)); i.invoke()
print("auto:", i.get_tensor(i.get_output_details()[0]["index"]).tolist(), i.placement()["devices"])
"""
    result = _child(code, EDGE_OPENCL_LIBRARY=str(tmp_path / "libOpenCL-missing.so"),
                    OCL_ICD_VENDORS=str(tmp_path / "no-vendors"))
    assert result.returncode == 0, result.stderr
    assert "refused: backend opencl: OpenCL is not available" in result.stdout or \
           "refused: backend opencl: OpenCL is installed but reports no platform" in result.stdout, result.stdout
    assert "auto: [[0.0, 2.0, 0.0], [4.0, 0.0, 6.0]] ['cpu']" in result.stdout


def test_binary_cache_makes_the_second_start_fast_and_a_corrupt_entry_is_rebuilt(tmp_path):
    """Each start in its own process (the driver keeps its own in-memory programs)."""
    code = """
import time, edge, converter
from tests.fixtures import models
data = converter.convert(models.resnet18(resolution=32, base_width=8, num_classes=10)).data
start = time.perf_counter()
i = edge.Interpreter(model_content=data, backend="opencl"); i.allocate_tensors()
print("seconds", time.perf_counter() - start)
"""
    cache = tmp_path / "cache"
    env = {"EDGE_OPENCL_CACHE": str(cache), "POCL_KERNEL_CACHE": "0"}
    cold = _child(code, **env)
    assert cold.returncode == 0, cold.stderr
    entries = sorted(cache.glob("*.bin"))
    assert entries
    warm = _child(code, **env)
    cold_s, warm_s = float(cold.stdout.split()[-1]), float(warm.stdout.split()[-1])
    assert warm_s * 10 <= cold_s, (cold_s, warm_s)
    for entry in entries:  # flip bytes in the middle of each binary: never trusted, rebuilt
        raw = bytearray(entry.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        entry.write_bytes(bytes(raw))
    rebuilt = _child(code, **env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert float(rebuilt.stdout.split()[-1]) > 3 * warm_s
    fixed = _child(code, **env)
    assert float(fixed.stdout.split()[-1]) * 10 <= cold_s


def test_bad_options_and_out_of_range_indices_are_errors():
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    b = GraphBuilder("g")
    ids = b.input("ids", (3,), dtype="int64")
    b.output(b.Gather(b.constant("table", np.arange(20, dtype=np.float32).reshape(5, 4)), ids, axis=0), name="y")
    data = write_model(b.build())
    with pytest.raises(edge.InvalidArgumentError, match="backend must be one of"):
        edge.Interpreter(model_content=data, backend="cuda")
    with pytest.raises(edge.InvalidArgumentError, match="gpu_device 99"):
        edge.Interpreter(model_content=data, backend="opencl", gpu_device=99)
    interpreter = edge.Interpreter(model_content=data, backend="opencl")
    interpreter.allocate_tensors()
    assert interpreter.placement()["devices"] == ["gpu"]
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, np.array([4, -5, 0], np.int64))
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
                                  np.arange(20, dtype=np.float32).reshape(5, 4)[[4, 0, 0]])
    interpreter.set_tensor(index, np.array([4, 5, 0], np.int64))
    with pytest.raises(edge.EdgeRuntimeError, match="index 5 of 'ids' is out of range"):
        interpreter.invoke()


def test_tensor_views_see_gpu_results_and_host_writes():
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    b = GraphBuilder("v")
    x = b.input("x", (2, 8))
    b.output(b.Relu(b.FullyConnected(x, b.constant("w", np.eye(8, dtype=np.float32)))), name="y")
    interpreter = edge.Interpreter(model_content=write_model(b.build()), backend="opencl")
    interpreter.allocate_tensors()
    x_view = interpreter.tensor(interpreter.get_input_details()[0]["index"])
    y_view = interpreter.tensor(interpreter.get_output_details()[0]["index"])
    for value in (np.arange(16, dtype=np.float32).reshape(2, 8) - 8, np.full((2, 8), 3.0, np.float32)):
        x_view()[...] = value
        interpreter.invoke()
        np.testing.assert_array_equal(y_view(), np.maximum(value, 0))


def test_devices_are_listed_with_their_limits():
    devices = edge.opencl.devices()
    assert devices and devices[0]["index"] == 1
    for d in devices:
        assert d["name"] and d["compute_units"] >= 1 and d["global_memory"] > 0 and d["max_work_group"] >= 1


def test_cli_shows_the_placement_and_benchmarks_and_profiles_on_the_gpu(tmp_path, capsys):
    import converter
    from edge.cli import main

    path = tmp_path / "bert.edge"
    path.write_bytes(converter.convert(_network("bert_encoder")).data)
    assert main(["inspect", str(path), "--placement", "opencl"]) == 0
    out = capsys.readouterr().out
    # The two fused ATTENTION ops have no GPU kernel yet: they run on the CPU between GPU segments.
    assert "38 of 42 ops on the GPU" in out and "ops 0-1 on the CPU: CAST, RESHAPE" in out, out
    assert out.count("on the CPU: ATTENTION") == 2 and "one run: 4 uploads" in out, out
    assert main(["bench", str(path), "--backend", "opencl", "--runs", "3", "--warmup", "1"]) == 0
    assert "backend opencl (38 of 42 ops on the GPU)" in capsys.readouterr().out
    assert main(["profile", str(path), "--backend", "opencl", "--runs", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    devices = {row[1]: row[3] for row in rows if len(row) > 3}
    assert devices.get("CAST") == "cpu" and devices.get("FULLY_CONNECTED") == "gpu", devices


def test_placement_plan_is_the_cheapest_assignment():
    """plan_placement against every assignment, costed by the same rule written out directly."""
    import itertools
    import random

    rng = random.Random(5)
    for trial in range(40):
        n = rng.randint(1, 7)
        cpu = [rng.uniform(0.1, 2.0) for _ in range(n)]
        gpu = [rng.uniform(0.01, 1.0) if rng.random() < 0.8 else None for _ in range(n)]
        crossing = [rng.randint(0, 4000) for _ in range(n + 1)]
        link, sync = rng.choice([1e5, 1e6, 1e9]), 0.05
        devices, predicted, all_cpu = edge.opencl.plan_placement(cpu, gpu, crossing, link_bytes_per_s=link,
                                                                 sync_ms=sync)
        best = float("inf")
        for choice in itertools.product((0, 1), repeat=n):
            if any(c and gpu[i] is None for i, c in enumerate(choice)):
                continue
            cost, where = 0.0, 0
            for i, c in enumerate(choice):
                if c != where:
                    cost += crossing[i] / link * 1e3 + sync
                cost += gpu[i] if c else cpu[i]
                where = c
            cost += (crossing[n] / link * 1e3 + sync) if where else 0.0
            best = min(best, cost)
        assert predicted == pytest.approx(best, rel=1e-9), trial
        assert all_cpu == pytest.approx(sum(cpu))
        assert all(d == "cpu" for i, d in enumerate(devices) if gpu[i] is None)


def test_set_op_devices_keeps_ops_on_the_cpu_and_auto_follows_a_tuned_placement(tmp_path, monkeypatch):
    import converter

    monkeypatch.setenv("EDGE_OPENCL_CACHE", str(tmp_path))
    onnx_model = _network("bert_encoder")
    data = converter.convert(onnx_model).data
    feeds = models.sample_inputs(onnx_model)
    want, _ = run(data, feeds)
    interpreter = edge.Interpreter(model_content=data, backend="opencl")
    ops = len(interpreter.op_details())
    pattern = ["gpu" if i % 3 else "cpu" for i in range(ops)]
    interpreter.set_op_devices(pattern)
    interpreter.allocate_tensors()
    got = run_interpreter(interpreter, feeds)
    placed = interpreter.placement()["devices"]
    assert all(p == "cpu" for p, allowed in zip(placed, pattern) if allowed == "cpu")
    assert placed.count("gpu") >= 0.5 * ops
    for name in want:
        assert relative_error(got[name], want[name]) <= FP32_BOUND
    with pytest.raises(edge.InvalidArgumentError, match="entries for a model of"):
        interpreter.set_op_devices(["gpu"])
    with pytest.raises(edge.InvalidArgumentError, match="'cpu' or 'gpu'"):
        interpreter.set_op_devices(["tpu"] * ops)

    path = tmp_path / "bert.edge"
    path.write_bytes(data)
    table = edge.opencl.tune(str(path), runs=3, tiles=False)  # the default tiles (tune_tiles: its own test)
    assert len(table["devices"]) == ops and table["link_bytes_per_s"] > 0
    # PoCL's kernels are far slower than the CPU's here: the measured plan keeps everything on the CPU
    assert table["devices"] == ["cpu"] * ops and table["predicted_ms"] == pytest.approx(table["all_cpu_ms"])
    assert all(g is None or g > c for c, g in zip(table["cpu_ms"], table["gpu_ms"]))
    assert edge.opencl.tuned_placement(str(path)) == table["devices"]
    # auto follows the stored plan (here: nothing on the GPU); a forced all-GPU plan is followed too
    tuned = edge.Interpreter(model_path=str(path), backend="auto")
    tuned.allocate_tensors()
    assert tuned.placement()["devices"] == ["cpu"] * ops
    forced = dict(table, devices=["gpu"] * ops)
    stored = pathlib.Path(table["path"])
    stored.write_text(json.dumps(forced))
    followed = edge.Interpreter(model_path=str(path), backend="auto")
    followed.allocate_tensors()
    assert followed.placement()["devices"].count("gpu") == 38  # every op the GPU has a kernel for
    stored.write_text("{not json")  # damaged: ignored, auto's own rule (PoCL: the CPU)
    damaged = edge.Interpreter(model_path=str(path), backend="auto")
    damaged.allocate_tensors()
    assert damaged.placement()["devices"] == ["cpu"] * ops


def test_a_callers_pyopencl_queue_keeps_tensors_on_the_device():
    """The model runs on the caller's queue: the input is written and the output read by pyopencl
    kernels and copies, never through the host arrays, against NumPy."""
    cl = pytest.importorskip("pyopencl")
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    rng = np.random.default_rng(9)
    w = rng.standard_normal((5, 12)).astype(np.float32)
    b = GraphBuilder("interop")
    b.output(b.Relu(b.FullyConnected(b.input("x", (3, 12)), b.constant("w", w))), name="y")
    context = cl.create_some_context(interactive=False)
    queue = cl.CommandQueue(context)
    interpreter = edge.Interpreter(model_content=write_model(b.build()), backend="opencl", opencl_queue=queue)
    interpreter.allocate_tensors()
    x_index = interpreter.get_input_details()[0]["index"]
    y_index = interpreter.get_output_details()[0]["index"]
    x = rng.standard_normal((3, 12)).astype(np.float32)
    buffer, offset = interpreter.gpu_buffer(x_index)
    assert buffer.context == context
    cl.enqueue_copy(queue, buffer, x, dst_offset=offset)  # the caller writes the input on the device
    interpreter.gpu_written(x_index)
    before = interpreter.placement()["transfers"]
    interpreter.invoke()
    out_buffer, out_offset = interpreter.gpu_buffer(y_index)
    y = np.empty((3, 5), np.float32)
    cl.enqueue_copy(queue, y, out_buffer, src_offset=out_offset)
    queue.finish()
    np.testing.assert_allclose(y, np.maximum(x @ w.T, 0), rtol=1e-5, atol=1e-6)
    after = interpreter.placement()["transfers"]
    assert (after["uploads"], after["downloads"]) == (before["uploads"], before["downloads"])  # none via the host
    np.testing.assert_allclose(interpreter.get_tensor(y_index), y)  # and the host reads still work
    np.testing.assert_array_equal(interpreter.get_tensor(x_index), x)  # the device's copy, written by the caller
    with pytest.raises(edge.UnsupportedError, match="no device memory"):
        interpreter.gpu_buffer(interpreter.get_tensor_details()[1]["index"])  # the weights: a constant
    with pytest.raises(edge.InvalidArgumentError, match="needs backend"):
        edge.Interpreter(model_content=write_model(b.build()), opencl_queue=queue)


def test_gpu_benchmark_dry_run_writes_the_report_and_its_accuracy_checks_hold(tmp_path):
    """benchmarks/bench_opencl.py --gpu --dry-run end to end on this OpenCL device with torch on the
    CPU: SGEMM beside torch.matmul, both networks at two batch sizes beside TorchGraph (the ONNX
    graph run op by op by torch, an oracle independent of the converter and the runtime)."""
    pytest.importorskip("torch")
    done = _child("import sys; from benchmarks.bench_opencl import main; "
                  f"sys.exit(main(['--gpu', '--dry-run', '--runs', '2', '--out', {str(tmp_path)!r}]))")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(next(tmp_path.glob("opencl-gpu-*.json")).read_text())
    assert report["dry_run"] and report["sgemm"]["n"] == 256
    assert report["sgemm"]["error_vs_torch"] <= 1e-5 and report["sgemm"]["edge_ms"] > 0
    rows = report["networks"]
    assert [(r["model"], r["batch"]) for r in rows] == [("MobileNetV2", 1), ("MobileNetV2", 4), ("ResNet-18", 1),
                                                       ("ResNet-18", 4)]
    for r in rows:
        assert r["fp32_ok"] and r["fp16_ok"] and r["fp32_top1_agreement"] == 1.0, r
        assert r["torch_max_abs_error"] <= 1e-4, r  # TorchGraph agrees with the CPU kernels
        assert r["inputs"] >= 4 and r["edge_fp32_ms"] > 0 and r["torch_ms"] > 0
    markdown = next(tmp_path.glob("opencl-gpu-*.md")).read_text()
    assert "| ResNet-18 | 4 |" in markdown and "| 256^3 |" in markdown


def test_gpu_benchmark_registers_nvidias_driver_and_names_peaks_only_for_known_cards(tmp_path, monkeypatch):
    from benchmarks import bench_opencl

    library_dir = tmp_path / "lib"
    library_dir.mkdir()
    (library_dir / "libnvidia-opencl.so.1").write_bytes(b"")
    monkeypatch.setattr(bench_opencl, "NVIDIA_LIBRARY_DIRS", (str(library_dir),))
    monkeypatch.delenv("OCL_ICD_VENDORS", raising=False)
    registered = any("nvidia" in p.read_text().lower() for p in pathlib.Path("/etc/OpenCL/vendors").glob("*.icd"))
    notes = bench_opencl.find_opencl(vendors_dir=str(tmp_path / "vendors"))
    if registered:
        assert "OCL_ICD_VENDORS" not in os.environ, notes
    else:
        assert os.environ["OCL_ICD_VENDORS"] == str(tmp_path / "vendors"), notes
        written = (tmp_path / "vendors" / "nvidia.icd").read_text().strip()
        assert written.endswith("libnvidia-opencl.so.1"), written
    monkeypatch.setenv("OCL_ICD_VENDORS", "/somewhere")
    assert "OCL_ICD_VENDORS=/somewhere (given)" in bench_opencl.find_opencl()
    assert bench_opencl.known_peak("NVIDIA H100 80GB HBM3") == ("H100 SXM", 67_000.0)
    assert bench_opencl.known_peak("NVIDIA H100 PCIe")[0] == "H100 PCIe"
    assert bench_opencl.known_peak("NVIDIA H200")[0] == "H200 SXM"
    assert bench_opencl.known_peak("NVIDIA L40S")[0] == "L40S" and bench_opencl.known_peak("NVIDIA L4")[0] == "L4"
    assert bench_opencl.known_peak("NVIDIA A100-SXM4-80GB")[1] == 19_500.0
    assert bench_opencl.known_peak("NVIDIA GeForce RTX 4090") is None
    assert bench_opencl.known_peak("pthread-haswell-AMD EPYC") is None


def test_tuned_tiles_are_read_back_used_and_leave_the_results_equal(tmp_path, monkeypatch):
    """The per-device tile table: written, read back by the runtime at the next interpreter (the
    launches' work-group sizes show it), damaged lines ignored, and `tune_tiles` storing the fastest
    measured tile; results equal the CPU path whichever tile runs."""
    import converter

    monkeypatch.setenv("EDGE_OPENCL_CACHE", str(tmp_path))
    onnx_model = _network("resnet18")  # FULLY_CONNECTED and 1x1 convs (gemm), 3x3 and 7x7 convs (conv_gemm)
    data = converter.convert(onnx_model).data
    feeds = models.sample_inputs(onnx_model)
    want, _ = run(data, feeds)

    def locals_by_kernel(interpreter):
        found = {}
        for kernel in interpreter.placement()["kernels"]:
            if kernel and kernel["name"] in edge.opencl.TILED_KERNELS:
                found.setdefault(kernel["name"], set()).add(tuple(kernel["local"]))
        return found

    got, interpreter = run(data, feeds, backend="opencl")
    assert locals_by_kernel(interpreter) == {"gemm": {(16, 4, 1)}, "conv_gemm": {(16, 4, 1)}}
    for precision, bound in (("fp32", FP32_BOUND), ("fp16", FP16_BOUND)):
        edge.opencl.write_tiles({"gemm": 8, "conv_gemm": 32})
        assert edge.opencl.read_tiles() == {"gemm": 8, "conv_gemm": 32}
        got, interpreter = run(data, feeds, backend="opencl", gpu_precision=precision)
        assert locals_by_kernel(interpreter) == {"gemm": {(8, 2, 1)}, "conv_gemm": {(32, 8, 1)}}
        for name in want:
            assert relative_error(got[name], want[name]) <= bound, (precision, name)
    edge.opencl.tuning_file().write_text("gemm 12\nconv_gemm 32 x\nnonsense\nconv_gemm\n")
    got, interpreter = run(data, feeds, backend="opencl")
    assert locals_by_kernel(interpreter) == {"gemm": {(16, 4, 1)}, "conv_gemm": {(32, 8, 1)}}
    with pytest.raises(ValueError, match="tiles"):
        edge.opencl.write_tiles({"gemm": 12})

    path = tmp_path / "resnet.edge"
    path.write_bytes(data)
    result = edge.opencl.tune_tiles(str(path), runs=1)
    assert set(result["ms"]) == {"gemm", "conv_gemm"}
    for kernel, times in result["ms"].items():
        assert sorted(times) == [8, 16, 32] and all(ms > 0 for ms in times.values())
        assert result["tiles"][kernel] == min(times, key=times.get)
    assert edge.opencl.read_tiles() == result["tiles"]


def _conv3x3(batch: int, height: int, width: int, channels: int, out_channels: int, pads, seed: int = 3):
    from converter.builder import GraphBuilder
    from converter.writer import write_model

    rng = np.random.default_rng(seed)
    b = GraphBuilder("conv3x3")
    x = b.input("x", (batch, height, width, channels))
    w = b.constant("w", rng.standard_normal((out_channels, 3, 3, channels)).astype(np.float32))
    bias = b.constant("b", rng.standard_normal(out_channels).astype(np.float32))
    b.output(b.Relu(b.Conv2D(x, w, bias, pads=pads, layout="NHWC")), name="y")
    return write_model(b.build()), {"x": rng.standard_normal((batch, height, width, channels)).astype(np.float32)}


WINOGRAD_BOUND = 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(2, 11, 9, 13, 18, (1, 1, 1, 1)), (1, 7, 5, 8, 8, (0, 0, 0, 0)),
                                   (3, 6, 13, 9, 21, (0, 1, 1, 0)), (1, 1, 1, 10, 12, (1, 1, 1, 1))],
                         ids=["pad1-batch2", "nopad", "ragged-pads-batch3", "one-pixel"])
def test_winograd_3x3_convolutions_match_the_cpu(shape, precision, tmp_path, monkeypatch):
    """3x3 stride-1 convolutions with >= 8 channels run as Winograd F(4x4, 3x3) (C not a multiple of
    4, odd H and W, padding on some sides, batch > 1); the tuning table's "winograd 0" turns it off."""
    monkeypatch.setenv("EDGE_OPENCL_CACHE", str(tmp_path))
    data, feeds = _conv3x3(*shape)
    if precision == "fp16":
        feeds = {k: v.astype(np.float16).astype(np.float32) for k, v in feeds.items()}
    want, _ = run(data, feeds)
    got, interpreter = run(data, feeds, backend="opencl", gpu_precision=precision)
    assert interpreter.placement()["kernels"][0]["name"] == "winograd_input"
    assert relative_error(got["y"], want["y"]) <= (WINOGRAD_BOUND if precision == "fp32" else FP16_BOUND)
    edge.opencl.tuning_file().write_text("winograd 0\n")
    got, interpreter = run(data, feeds, backend="opencl", gpu_precision=precision)
    assert interpreter.placement()["kernels"][0]["name"] == "conv_gemm"
    assert relative_error(got["y"], want["y"]) <= (FP32_BOUND if precision == "fp32" else FP16_BOUND)


@pytest.mark.parametrize("name", ["winograd_relu", "igemm_5x5_relu6", "gemm_1x1_none", "depthwise_sigmoid",
                                  "blaze_channel_pad"])
def test_convolutions_with_a_fused_residual(name):
    """A residual as wide as the output runs on the GPU as a second launch (an in-place ADD with
    the activation); a narrower one (BlazeFace's zero-padded skip) keeps that convolution on the CPU."""
    import converter
    from tests.converter.test_fuse_residual import FUSED

    proto = FUSED[name]()
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": np.random.default_rng(3).standard_normal(shape).astype(np.float32)}
    result = converter.convert(proto)
    index = next(i for i, n in enumerate(result.graph.nodes) if n.op == "Conv2D" and len(n.inputs) > 3)
    want, _ = run(result.data, feeds)
    got, gpu = run(result.data, feeds, backend="opencl")
    for key, value in want.items():
        assert relative_error(got[key], value) <= FP32_BOUND, key
    narrow = name == "blaze_channel_pad"
    assert gpu.placement()["devices"][index] == ("cpu" if narrow else "gpu"), gpu.placement()

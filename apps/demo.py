"""The edgesplit demo: build a small CNN in ONNX, convert it to .edge, run it on the C runtime,
then split it between this "device" and a local datacenter service.

    python -m apps.demo [--out DIR] [--runs N] [--threads N]

Compares the result with onnxruntime when it is installed and prints the latency. Needs the
`convert` extra (onnx) for the conversion step and the `split` extra (grpcio, networkx) for the
split step; running the .edge file needs only `edge`.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE = 64
NUM_CLASSES = 10


def build_small_cnn(seed: int = 0):
    """A MobileNet-like classifier: conv-BN-ReLU stem, a depthwise-separable block with a residual
    connection, global pooling, a linear layer and a softmax. Input "image" [1, 3, 64, 64] (NCHW, as
    PyTorch exports it); output "probabilities" [1, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    initializers = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def conv_weight(name: str, cout: int, cin_per_group: int, k: int) -> str:
        fan_in = cin_per_group * k * k
        return const(name, rng.standard_normal((cout, cin_per_group, k, k)) * math.sqrt(2.0 / fan_in))

    def batch_norm(prefix: str, channels: int) -> list[str]:
        return [const(f"{prefix}.scale", rng.uniform(0.7, 1.3, channels)),
                const(f"{prefix}.bias", 0.1 * rng.standard_normal(channels)),
                const(f"{prefix}.mean", 0.1 * rng.standard_normal(channels)),
                const(f"{prefix}.var", rng.uniform(0.5, 1.5, channels))]

    nodes = [
        helper.make_node("Conv", ["image", conv_weight("stem.w", 16, 3, 3)], ["stem"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["stem", *batch_norm("stem.bn", 16)], ["stem_bn"]),
        helper.make_node("Relu", ["stem_bn"], ["stem_relu"]),
        helper.make_node("Conv", ["stem_relu", conv_weight("dw.w", 16, 1, 3)], ["dw"], group=16, pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["dw", *batch_norm("dw.bn", 16)], ["dw_bn"]),
        helper.make_node("Clip", ["dw_bn", const("zero", np.array(0.0)), const("six", np.array(6.0))], ["dw_relu6"]),
        helper.make_node("Conv", ["dw_relu6", conv_weight("pw.w", 16, 16, 1), const("pw.b", np.zeros(16))], ["pw"]),
        helper.make_node("Add", ["pw", "stem_relu"], ["residual"]),
        helper.make_node("Conv", ["residual", conv_weight("down.w", 32, 16, 3)], ["down"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["down"], ["down_relu"]),
        helper.make_node("MaxPool", ["down_relu"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["pooled"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", const("fc.w", rng.uniform(-0.2, 0.2, (NUM_CLASSES, 32))),
                                  const("fc.b", rng.uniform(-0.2, 0.2, NUM_CLASSES))], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, NUM_CLASSES])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgesplit-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Convert a small CNN to .edge and run it on the C runtime.")
    parser.add_argument("--out", type=Path, help="directory for small_cnn.onnx and small_cnn.edge (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    args = parser.parse_args(argv)

    import onnx

    import converter
    import edge

    with tempfile.TemporaryDirectory(prefix="edgesplit-demo-") as scratch:
        out_dir = args.out or Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path, edge_path = out_dir / "small_cnn.onnx", out_dir / "small_cnn.edge"

        model = build_small_cnn()
        onnx.save(model, onnx_path)
        print(f"1. built {onnx_path} ({onnx_path.stat().st_size:,} bytes, {len(model.graph.node)} ONNX nodes)")

        result = converter.convert(str(onnx_path), output_path=str(edge_path))
        print(f"2. converted to {edge_path} ({edge_path.stat().st_size:,} bytes)")
        print("   " + str(result.report).rstrip().replace("\n", "\n   "))

        image = np.random.default_rng(42).standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        interpreter = edge.Interpreter(model_path=str(edge_path), num_threads=args.threads)
        interpreter.allocate_tensors()
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        interpreter.set_tensor(input_detail["index"], image)
        interpreter.invoke()
        probabilities = interpreter.get_tensor(output_detail["index"])
        top = int(np.argmax(probabilities))
        print(f"3. ran it with edge.Interpreter: input {input_detail['name']!r} {[int(d) for d in input_detail['shape']]}, "
              f"output {output_detail['name']!r} {[int(d) for d in output_detail['shape']]}; "
              f"top class {top} (p={probabilities.ravel()[top]:.4f}), probabilities sum to {probabilities.sum():.6f}")

        try:
            import onnxruntime
        except ImportError:
            print("4. onnxruntime is not installed: skipping the comparison (pip install onnxruntime)")
        else:
            session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            expected = session.run(None, {"image": image})[0]
            print(f"4. onnxruntime {onnxruntime.__version__}: max abs diff {float(np.max(np.abs(probabilities - expected))):.3g}")

        for _ in range(3):
            interpreter.invoke()
        times_ms = []
        for _ in range(max(1, args.runs)):
            start = time.perf_counter()
            interpreter.invoke()
            times_ms.append((time.perf_counter() - start) * 1e3)
        times_ms.sort()
        p90 = times_ms[min(len(times_ms) - 1, int(math.ceil(0.9 * len(times_ms))) - 1)]
        memory = interpreter.memory_info()
        print(f"5. latency over {len(times_ms)} runs ({args.threads} thread(s), {edge.runtime_isa()} kernels): "
              f"median {statistics.median(times_ms):.3f} ms, p90 {p90:.3f} ms; "
              f"activation arena {memory['arena_bytes']:,} bytes (naive sum {memory['naive_bytes']:,})")
        interpreter.close()
        split_demo(edge_path, image, probabilities, args.threads)
    return 0


def split_demo(edge_path: Path, image: np.ndarray, local: np.ndarray, threads: int,
               phone_slowdown: float = 1000.0) -> None:
    """Steps 6-7: serve the same .edge file from a local gRPC service and run it through a
    SplitRunner. This CPU is far faster than a phone, so the runner plans with its measured
    per-op device times multiplied by ``phone_slowdown`` (said so in the output): over loopback
    the partitioner then offloads; with the uplink throttled to 3G's 1.1 Mbit/s (in-process
    shaping) it keeps the work on the device. Then the service stops and the answer still comes,
    from the device. 1000x, as in the split app (apps/split/logic.py says why not 200x: the small
    CNN's fused ops are too cheap for a busy server to beat at 200x)."""
    try:
        from cloudsplit.client import SplitRunner
        from cloudsplit.server import start_server
    except ImportError as exc:
        print(f"6. split execution skipped: {exc} (pip install 'edgesplit[split]')")
        return
    server = start_server([str(edge_path)], threads=max(2, threads))
    address = f"127.0.0.1:{server.port}"
    with SplitRunner(edge_path, server=address, num_threads=threads) as measured:
        phone_costs = [ms * phone_slowdown for ms in measured.device_costs]
    print(f"6. split execution with a local service at {address}, planning for a device "
          f"{phone_slowdown:g}x slower than this CPU:")
    with SplitRunner(edge_path, server=address, num_threads=threads, compression="fp16",
                     device_costs=phone_costs) as runner:
        for label, uplink_bps in (("loopback", None), ("uplink throttled to 1.1 Mbit/s", 1.1e6)):
            runner.uplink_limit_bps = uplink_bps
            for _ in range(4):  # the first runs measure the link and the server, then it re-plans
                out = runner.run({"image": image})["probabilities"]
            plan = runner.last_plan
            print(f"   {label}: plan '{plan.kind}' ({len(plan.device_ops)} ops on the device, "
                  f"{len(plan.server_ops)} on the server, {plan.upload_bytes:,} bytes up, fp16), "
                  f"{plan.measured.total_ms:.2f} ms; max abs diff from local {float(np.max(np.abs(out - local))):.3g}")
    with SplitRunner(edge_path, server=address, num_threads=threads, compression="fp16",
                     device_costs=phone_costs) as runner:
        runner.run({"image": image})
        runner.settle()  # the link probes that follow an answer finish first: the next request meets the stop
        server.stop()
        out = runner.run({"image": image})["probabilities"]
        plan = runner.last_plan
        where = f"fell back: {plan.fallback_reason}" if plan.fallback_reason else f"plan '{plan.kind}'"
        print(f"7. service stopped: the answer still came from the device ({where}); "
              f"max abs diff from local {float(np.max(np.abs(out - local))):.3g}")


if __name__ == "__main__":
    sys.exit(main())

"""fuse_residual_add: a skip connection's Add (and a channel Pad on its skip) fused into the
convolution before it as a residual input. Each model is checked against onnxruntime and the
reference executor on the runtime at 1 and 2 threads (every convolution method: 1x1 GEMM, depthwise,
Winograd, indirect GEMM), the fused file must give the same floats as the unfused one, and the Adds
that must stay do."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import converter  # noqa: E402
from converter.passes import fuse_residual_add  # noqa: E402
from tests.fixtures.harness import check_model, run_edge  # noqa: E402

RNG = np.random.default_rng(5)


class Net:
    """A small ONNX graph, written node by node."""

    def __init__(self, channels: int, size: int):
        """Starts with a stem convolution x -> t, so that the blocks run inside the NHWC region
        (a graph input is NCHW; an Add read straight off it stays there)."""
        self.channels, self.size = channels, size
        self.nodes, self.inits = [], []
        self.conv("x", "t", channels, channels)

    def weight(self, name, shape):
        self.inits.append(numpy_helper.from_array((RNG.standard_normal(shape) * 0.3).astype(np.float32), name))
        return name

    def conv(self, x, out, cin, cout, k=3, stride=1, group=1, bias=True):
        inputs = [x, self.weight(f"{out}_w", (cout, cin // group, k, k))]
        if bias:
            inputs.append(self.weight(f"{out}_b", (cout,)))
        self.nodes.append(helper.make_node("Conv", inputs, [out], pads=[k // 2] * 4, strides=[stride] * 2,
                                           group=group))
        return out

    def op(self, op, inputs, out, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def pad_channels(self, x, out, extra):
        self.inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), f"{out}_p"))
        return self.op("Pad", [x, f"{out}_p"], out)

    def model(self, outputs=("y",)) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, self.channels, self.size, self.size])
        ys = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
        graph = helper.make_graph(self.nodes, "residual", [x], ys, self.inits)
        return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def resnet_block(channels=8, size=13, k=3, activation="Relu"):
    """t -> conv k x k -> + t -> activation: Winograd (3x3, 32 channels) or igemm (5x5) or GEMM (1x1)."""
    n = Net(channels, size)
    n.conv("t", "c", channels, channels, k=k)
    if activation is None:
        n.op("Add", ["c", "t"], "y")
    else:
        n.op("Add", ["t", "c"], "s")
        n.op(activation, ["s"], "y", **({"min": 0.0, "max": 6.0} if activation == "Clip" else {}))
    if activation == "Clip":  # Clip's bounds are inputs from opset 11 on
        n.nodes[-1] = helper.make_node("Clip", ["s", "lo", "hi"], ["y"])
        n.inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                    numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    return n.model()


def blaze_block(channels=8, extra=4, size=16):
    """BlazeFace's downsampling block: depthwise 3x3 stride 2 -> 1x1 to more channels, plus the
    max-pooled input padded with zero channels -> Relu."""
    n = Net(channels, size)
    n.conv("t", "d", channels, channels, stride=2, group=channels)
    n.conv("d", "c", channels, channels + extra, k=1)
    n.op("MaxPool", ["t"], "m", kernel_shape=[2, 2], strides=[2, 2])
    n.pad_channels("m", "mp", extra)
    n.op("Add", ["c", "mp"], "s")
    n.op("Relu", ["s"], "y")
    return n.model()


def depthwise_block(channels=16, size=11):
    """Depthwise 3x3 -> + x -> Sigmoid (an activation the kernels cannot clamp)."""
    n = Net(channels, size)
    n.conv("t", "c", channels, channels, group=channels)
    n.op("Add", ["c", "t"], "s")
    n.op("Sigmoid", ["s"], "y")
    return n.model()


def two_branches(channels=8, size=9):
    """Two convolutions added: the later one takes the earlier one's output as its residual."""
    n = Net(channels, size)
    n.conv("t", "a", channels, channels, k=1)
    n.conv("t", "b", channels, channels, k=3, bias=False)
    n.op("Add", ["a", "b"], "s")
    n.op("Relu", ["s"], "y")
    return n.model()


FUSED = {
    "winograd_relu": lambda: resnet_block(channels=32, size=12),
    "igemm_5x5_relu6": lambda: resnet_block(k=5, activation="Clip"),
    "gemm_1x1_none": lambda: resnet_block(k=1, activation=None),
    "blaze_channel_pad": blaze_block,
    "depthwise_sigmoid": depthwise_block,
    "two_convolutions": two_branches,
}


def unfused(model) -> bytes:
    graph, _ = converter.optimize(converter.load_onnx(model))
    return converter.write_model(graph)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_block_matches_onnxruntime_and_the_unfused_file(name, threads):
    proto = FUSED[name]()
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32)}
    result = check_model(proto, feeds, num_threads=threads).converted
    ops = result.graph.op_counts()
    assert "Add" not in ops and "Pad" not in ops, ops
    fused = [n for n in result.graph.nodes if n.op == "Conv2D" and len(n.inputs) > 3]
    assert len(fused) == 1, [n.op for n in result.graph.nodes]
    assert result.report.fused >= 1
    plain = run_edge(unfused(proto), feeds, num_threads=threads)
    ours = run_edge(result.data, feeds, num_threads=threads)
    for name_, value in plain.items():
        np.testing.assert_array_equal(ours[name_], value, err_msg="fused and unfused files differ")


def kept_cases():
    # The convolution's output is read twice (the Add and the graph's output).
    n = Net(8, 9)
    n.conv("t", "c", 8, 8)
    n.op("Add", ["c", "t"], "y")
    yield "read_twice", n.model(outputs=("y", "c"))
    # The convolution has an activation of its own, which must come before the Add.
    n = Net(8, 9)
    n.conv("t", "c", 8, 8)
    n.op("Relu", ["c"], "r")
    n.op("Add", ["r", "t"], "y")
    yield "own_activation", n.model()
    # A broadcast Add (a per-channel tensor that is not a constant) is not a residual.
    n = Net(8, 9)
    n.conv("t", "c", 8, 8)
    n.op("ReduceMean", ["t"], "m", axes=[2, 3], keepdims=1)
    n.op("Add", ["c", "m"], "y")
    yield "broadcast", n.model()


@pytest.mark.parametrize("name,proto", list(kept_cases()))
def test_adds_that_are_not_a_residual_stay(name, proto):
    feeds = {"x": RNG.standard_normal((1, 8, 9, 9)).astype(np.float32)}
    result = check_model(proto, feeds, num_threads=2).converted
    assert result.graph.op_counts().get("Add") == 1, (name, result.graph.op_counts())
    assert not any(n.op == "Conv2D" and len(n.inputs) > 3 for n in result.graph.nodes)


def test_a_pad_that_is_not_zero_channels_stays():
    n = Net(8, 16)
    n.conv("t", "d", 8, 8, stride=2, group=8)
    n.conv("d", "c", 8, 12, k=1)
    n.op("MaxPool", ["t"], "m", kernel_shape=[2, 2], strides=[2, 2])
    n.inits.append(numpy_helper.from_array(np.array([0, 2, 0, 0, 0, 2, 0, 0], np.int64), "mp_p"))
    n.op("Pad", ["m", "mp_p"], "mp")  # channels added at both ends: not the residual's zero tail
    n.op("Add", ["c", "mp"], "y")
    proto = n.model()
    feeds = {"x": RNG.standard_normal((1, 8, 16, 16)).astype(np.float32)}
    result = check_model(proto, feeds, num_threads=2).converted
    ops = result.graph.op_counts()
    assert ops.get("Pad") == 1 and "Add" not in ops, ops  # the Pad's output is still a full-width residual


def test_quantized_models_keep_the_add():
    proto = resnet_block()
    feeds = {"x": RNG.standard_normal((1, 8, 13, 13)).astype(np.float32)}
    for mode in ("dynamic", "int8"):
        result = converter.convert(proto, quantize=mode, calibration=feeds["x"])
        assert not any(n.op == "Conv2D" and len(n.inputs) > 3 for n in result.graph.nodes), mode
    fp16 = converter.convert(proto, quantize="fp16")
    assert any(n.op == "Conv2D" and len(n.inputs) > 3 for n in fp16.graph.nodes)


def test_the_pass_is_a_function_of_its_graph():
    graph, _ = converter.optimize(converter.load_onnx(blaze_block()))
    before = [n.inputs for n in graph.nodes]
    fused = fuse_residual_add(graph)
    assert [n.inputs for n in graph.nodes] == before
    assert len(fused.nodes) == len(graph.nodes) - 2


RUNNER = """
import pickle, sys
import numpy as np
from tests.fixtures.harness import run_edge
import edge
jobs = pickle.loads(open(sys.argv[1], "rb").read())
out = {"isa": edge.runtime_isa()}
for key, (fused, plain, feeds) in jobs.items():
    out[key] = [run_edge(data, feeds, num_threads=2) for data in (fused, plain)]
pickle.dump(out, open(sys.argv[2], "wb"))
"""


@pytest.mark.parametrize("level", ["scalar", "sse2", "avx2"])
def test_every_isa_level_gives_the_unfused_floats(level, tmp_path):
    """Below this CPU's best level: the scalar reference convolution, and the sse2 / avx2 kernels
    with their own tile shapes, each in its own process (EDGE_ISA is read once)."""
    import os
    import pickle
    import subprocess
    import sys

    jobs = {}
    for name, make in FUSED.items():
        proto = make()
        shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
        feeds = {"x": RNG.standard_normal(shape).astype(np.float32)}
        jobs[name] = (converter.convert(proto).data, unfused(proto), feeds)
    (tmp_path / "jobs.pkl").write_bytes(pickle.dumps(jobs))
    done = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "jobs.pkl"), str(tmp_path / "out.pkl")],
                          env={**os.environ, "EDGE_ISA": level}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert results["isa"] == level
    for name in FUSED:
        fused, plain = results[name]
        for output, value in plain.items():
            np.testing.assert_array_equal(fused[output], value, err_msg=f"{name} at {level}")


def test_the_runtime_refuses_a_residual_of_the_wrong_shape():
    import dataclasses

    import edge

    result = converter.convert(blaze_block())
    graph = result.graph
    conv = next(n for n in graph.nodes if n.op == "Conv2D" and len(n.inputs) > 3)
    # The graph's (transposed) input has the block's input shape (16x16), not its output's (8x8).
    nodes = tuple(n.with_(inputs=n.inputs[:3] + (graph.nodes[0].outputs[0],)) if n is conv else n
                  for n in graph.nodes)
    data = converter.write_model(dataclasses.replace(graph, nodes=nodes))
    interpreter = edge.Interpreter(model_content=data)
    with pytest.raises(edge.InvalidModelError, match="residual .* expected \\[1, 8, 8, 1 .. 12\\]"):
        interpreter.allocate_tensors()

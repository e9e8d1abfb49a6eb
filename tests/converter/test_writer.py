""".edge writer and reader: round trips (bytes and values), the file layout the runtime relies
on (64-byte aligned buffers after the FlatBuffer), signatures, variables, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from converter import reference
from converter.builder import GraphBuilder
from converter.edgefb.DType import DType
from converter.edgefb.Model import Model, ModelT
from converter.edgefb.OpCode import OpCode
from converter.errors import ConversionError
from converter.ir import Graph, Quantization
from converter.passes import optimize
from converter.reader import ModelFileError, read_model, read_model_info
from converter.writer import write_model

RNG = np.random.default_rng(3)


def randn(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def conv_net() -> Graph:
    b = GraphBuilder("conv_net")
    x = b.input("x", (1, 3, 8, 8), dynamic_axes=(0,))
    y = b.Conv2D(x, b.constant("c1/w", randn(6, 3, 3, 3, scale=0.3)), b.constant("c1/b", randn(6)),
                 strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1), groups=1, layout="NCHW")
    y = b.Clip(y, min=0.0, max=6.0)
    y = b.Conv2D(y, b.constant("dw/w", randn(6, 1, 3, 3, scale=0.3)), None, strides=(2, 2),
                 dilations=(1, 1), pads=(1, 1, 1, 1), groups=6, layout="NCHW")
    y = b.LeakyRelu(y, alpha=0.1)
    y = b.AvgPool2D(y, kernel=(2, 2), strides=(2, 2), dilations=(1, 1), pads=(0, 0, 0, 0),
                    count_include_pad=False, ceil_mode=False, layout="NCHW")
    y = b.Reshape(y, shape=(1, 24))
    y = b.FullyConnected(y, b.constant("fc/w", randn(5, 24)), b.constant("fc/b", randn(5)))
    b.output(b.Softmax(y, axis=1), "probs")
    graph, _ = optimize(b.build())
    return graph


def mixed_ops() -> Graph:
    b = GraphBuilder("mixed")
    x = b.input("x", (2, 6, 4))
    ids = b.input("ids", (3,), "int64")
    a, c = b.op_multi("Split", x, axis=1, sizes=(2, 4))
    y = b.Concat(b.Exp(a), b.Tanh(c), axis=1)
    y = b.ReduceMax(y, axes=(2,), keepdims=False)
    g = b.Gather(y, ids, axis=1)
    mask = b.Greater(g, b.constant("zero", np.zeros((), np.float32)))
    picked = b.Where(mask, g, b.Neg(g))
    b.output(b.Cast(picked, to="float16"), "half")
    b.output(b.Transpose(b.Slice(x, starts=(0, 1, 0), ends=(2, 5, 4), steps=(1, 2, 1)), perm=(2, 0, 1)), "t")
    b.output(b.Pad(x, mode="reflect", pads=(0, 1, 1, 0, 1, 1), value=0.0), "padded")
    b.output(b.BatchMatMul(x, b.constant("m", randn(4, 3)), transpose_a=False, transpose_b=False), "mm")
    b.output(b.LayerNorm(x, b.constant("ln/s", randn(4)), b.constant("ln/b", randn(4)), axis=2, epsilon=1e-5),
             "ln")
    return b.build()


def lstm_graph() -> Graph:
    b = GraphBuilder("lstm")
    x = b.input("x", (5, 2, 3))
    hidden = 4
    y, h, c = b.LSTM(x, b.constant("W", randn(1, 4 * hidden, 3)), b.constant("R", randn(1, 4 * hidden, hidden)),
                     b.constant("B", randn(1, 8 * hidden)), hidden_size=hidden, direction="forward", clip=0.0)
    b.output(y, "y")
    b.output(h, "h")
    return b.build()


def feeds_for(graph: Graph, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.dtype.startswith("int"):
            feeds[name] = rng.integers(-2, 2, t.shape).astype(t.dtype)
        else:
            feeds[name] = rng.standard_normal(t.shape).astype(t.dtype)
    return feeds


GRAPHS = {"conv_net": conv_net, "mixed_ops": mixed_ops, "lstm": lstm_graph}


@pytest.mark.parametrize("make", GRAPHS.values(), ids=GRAPHS.keys())
def test_round_trip_bytes_and_values(make):
    graph = make()
    data = write_model(graph)
    back = read_model(data)
    assert write_model(back) == data
    assert [n.op for n in back.nodes] == [n.op for n in graph.nodes]
    assert back.inputs == graph.inputs and back.outputs == graph.outputs
    feeds = feeds_for(graph)
    expected, actual = reference.run(graph, feeds), reference.run(back, feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(actual[name].astype(np.float64), expected[name].astype(np.float64),
                                   rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("make", GRAPHS.values(), ids=GRAPHS.keys())
def test_buffers_are_64_byte_aligned_after_the_flatbuffer(make):
    graph = make()
    data = write_model(graph)
    model = ModelT.InitFromObj(Model.GetRootAs(data, 0))
    assert Model.ModelBufferHasIdentifier(data, 0)
    assert model.version == 1 and model.minRuntimeVersion == 100
    assert (model.buffers[0].offset, model.buffers[0].size) == (0, 0)
    tensors = model.graphs[0].tensors
    flatbuffer_end = min(b.offset for b in model.buffers[1:])
    previous_end = flatbuffer_end
    for buffer in model.buffers[1:]:
        assert buffer.offset % 64 == 0
        assert buffer.offset >= previous_end, "buffers overlap or are out of order"
        previous_end = buffer.offset + buffer.size
    assert previous_end == len(data)
    for t in tensors:
        name = t.name.decode()
        if name in graph.constants:
            buffer = model.buffers[t.buffer]
            assert data[buffer.offset:buffer.offset + buffer.size] == graph.constants[name].tobytes()
        else:
            assert t.buffer == 0


def test_tensor_and_operator_fields():
    graph = conv_net()
    graph = graph.replace(quantization={"probs": Quantization((0.5,), (3,), 0)})
    data = write_model(graph, description="tiny conv net")
    model = ModelT.InitFromObj(Model.GetRootAs(data, 0))
    g = model.graphs[0]
    by_name = {t.name.decode(): t for t in g.tensors}
    assert list(by_name["x"].shapeSignature) == [-1, 3, 8, 8]
    assert by_name["x"].dtype == DType.FLOAT32
    assert by_name["probs"].quantization.scale[0] == 0.5
    assert model.description == b"tiny conv net"
    meta = {m.name.decode(): m.value.decode() for m in model.metadata}
    assert {"producer", "source", "converter_version"} <= set(meta)
    codes = [(c.opcode, c.version) for c in model.operatorCodes]
    assert len(codes) == len(set(codes)), "operator codes are deduplicated"
    fc_index = [n.op for n in graph.nodes].index("FullyConnected")
    fc = g.operators[fc_index]
    assert model.operatorCodes[fc.opcodeIndex].opcode == OpCode.FULLY_CONNECTED
    assert fc.cost.bytesWeights == (5 * 24 + 5) * 4
    assert fc.cost.bytesIn == 24 * 4 and fc.cost.bytesOut == 5 * 4
    assert fc.cost.flops >= 2 * 5 * 24
    first_conv = g.operators[[n.op for n in graph.nodes].index("Conv2D")]
    assert first_conv.activation != 0 and first_conv.activationBeta == 6.0
    sig = model.signatures[0]
    assert sig.key == b"infer" and [m.name for m in sig.inputs] == [b"x"]


def test_variable_and_two_signatures():
    b = GraphBuilder("trainable")
    x = b.input("x", (2, 3))
    target = b.input("target", (2, 4))
    w = b.variable("w", randn(4, 3))
    y = b.FullyConnected(x, w, b.constant("bias", randn(4)))
    b.output(y, "y")
    diff = b.Sub(y, target)
    b.output(b.ReduceMean(b.Mul(diff, diff), axes=(0, 1), keepdims=False), "loss")
    b.signature("infer", {"input": "x"}, {"prediction": "y"})
    b.signature("loss", {"input": "x", "target": "target"}, {"loss": "loss"}, nodes=(0, 1, 2, 3))
    graph = b.build()
    data = write_model(graph)
    info = read_model_info(data)
    back = info.graph
    assert back.variables == {"w"}
    assert back.signatures == graph.signatures
    assert write_model(back) == data
    model = ModelT.InitFromObj(Model.GetRootAs(data, 0))
    by_name = {t.name.decode(): t for t in model.graphs[0].tensors}
    assert by_name["w"].isVariable and not by_name["bias"].isVariable
    assert [s.key for s in model.signatures] == [b"infer", b"loss"]
    assert list(model.signatures[1].operators) == [0, 1, 2, 3]
    assert model.signatures[0].operators is None
    feeds = feeds_for(graph)
    np.testing.assert_array_equal(reference.run(back, feeds)["loss"], reference.run(graph, feeds)["loss"])


def test_writer_rejects_nchw_and_batch_norm():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4))
    y = b.Conv2D(x, b.constant("w", randn(2, 2, 1, 1)), None, strides=(1, 1), dilations=(1, 1),
                 pads=(0, 0, 0, 0), groups=1, layout="NCHW")
    params = [b.constant(f"p{i}", np.ones(4, np.float32)) for i in range(4)]
    b.output(b.BatchNorm(y, *params, epsilon=1e-5, layout="NHWC"), "y")
    with pytest.raises(ConversionError) as error:
        write_model(b.build())
    message = str(error.value)
    assert "BatchNorm" in message and "NCHW" in message and "to_nhwc" in message


def test_writer_rejects_symbolic_shapes():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    b.output(b.Relu(x), "y")
    graph = b.build()
    graph = graph.replace(tensors={**graph.tensors, "x": graph.tensors["x"].__class__("float32", ("n", 4))})
    with pytest.raises(ConversionError, match="symbolic"):
        write_model(graph)


def test_write_is_deterministic():
    graph = mixed_ops()
    copy = graph.replace(constants={k: v.copy() for k, v in graph.constants.items()})
    assert write_model(graph) == write_model(copy)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d: d[:6], "too short"),
    (lambda d: d[:4] + b"XXXX" + d[8:], "identifier"),
    (lambda d: d[:len(d) - 64], "past the"),
])
def test_reader_rejects_malformed_files(corrupt, message):
    data = write_model(conv_net())
    with pytest.raises(ModelFileError, match=message):
        read_model(corrupt(data))

#!/usr/bin/env python3
"""Writes small .edge models for the C tests and the mutation campaign.

usage: make_seed_models.py OUTDIR

OUTDIR/*.edge           valid models (the campaign's seeds; the C tests run some of them)
OUTDIR/invalid/X.edge   deliberately broken models; OUTDIR/invalid/X.expect holds the status the
                        loader must return on its first line and a fragment of its message on the
                        second.
OUTDIR/allocate/X.edge  models that load but must fail at allocate (shapes inconsistent with ops).

Built with tests/fixtures/raw_edge.py (the FlatBuffers object API in converter.edgefb, no converter
passes), so the bytes are exactly what each case describes. Needs only the repository and the flatbuffers package.
"""
import os
import struct
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, REPO)

from tests.fixtures.raw_edge import ModelBuilder, serialize  # noqa: E402
from converter.edgefb.BinaryOptions import BinaryOptionsT  # noqa: E402
from converter.edgefb.Conv2DOptions import Conv2DOptionsT  # noqa: E402
from converter.edgefb.DType import DType  # noqa: E402
from converter.edgefb.Graph import GraphT  # noqa: E402
from converter.edgefb.OpCode import OpCode  # noqa: E402
from converter.edgefb.OpOptions import OpOptions  # noqa: E402
from converter.edgefb.OperatorCode import OperatorCodeT  # noqa: E402
from converter.edgefb.Pool2DOptions import Pool2DOptionsT  # noqa: E402
from converter.edgefb.Quantization import QuantizationT  # noqa: E402
from converter.edgefb.TransposeOptions import TransposeOptionsT  # noqa: E402
from converter.edgefb.NonMaxSuppressionOptions import NonMaxSuppressionOptionsT  # noqa: E402
from converter.edgefb.ResizeOptions import ResizeOptionsT  # noqa: E402
from converter.edgefb.RoiAlignOptions import RoiAlignOptionsT  # noqa: E402
from converter.edgefb.ScatterOptions import ScatterOptionsT  # noqa: E402
from converter.edgefb.UnaryOptions import UnaryOptionsT  # noqa: E402

INT8 = 2
ADD, RELU = 0, 1


def floats(values):
    return struct.pack("<%df" % len(values), *values)


def conv_options(strides=(1, 1), pads=(0, 0, 0, 0), groups=1):
    o = Conv2DOptionsT()
    o.strides, o.dilations, o.pads, o.groups = list(strides), [1, 1], list(pads), groups
    return o


def binary(op):
    o = BinaryOptionsT()
    o.op = op
    return o


def unary(op):
    o = UnaryOptionsT()
    o.op = op
    return o


def ramp(n, scale=0.1, start=-0.5):
    return [start + scale * i for i in range(n)]


# ---- valid models ----

def add_relu():
    """y = relu(x + c); x has a dynamic batch."""
    b = ModelBuilder()
    x = b.tensor("x", [1, 4], signature=[-1, 4])
    c = b.tensor("c", [1, 4], data=floats([0.5, -1.0, 2.0, -3.0]))
    s = b.tensor("sum", [1, 4], signature=[-1, 4])
    y = b.tensor("y", [1, 4], signature=[-1, 4])
    b.op(OpCode.BINARY, [x, c], [s], OpOptions.BinaryOptions, binary(ADD), flops=4)
    b.op(OpCode.UNARY, [s], [y], OpOptions.UnaryOptions, unary(RELU), flops=4)
    return b, b.model([x], [y], [("infer", [("x", x)], [("y", y)], None)], [("author", "seed")])


def passthrough():
    """No ops: the input is the output. Exercises the interpreter without any kernel."""
    b = ModelBuilder()
    x = b.tensor("x", [2, 3], signature=[-1, 3])
    return b, b.model([x], [x], [("infer", [("x", x)], [("x", x)], None)])


def reshape_add():
    b = ModelBuilder()
    x = b.tensor("x", [2, 3])
    r = b.tensor("reshaped", [3, 2])
    c = b.tensor("c", [3, 2], data=floats(ramp(6)))
    y = b.tensor("y", [3, 2])
    b.op(OpCode.RESHAPE, [x], [r])
    b.op(OpCode.BINARY, [r, c], [y], OpOptions.BinaryOptions, binary(ADD))
    return b, b.model([x], [y])


def conv():
    b = ModelBuilder()
    x = b.tensor("x", [1, 5, 5, 2])
    w = b.tensor("conv/w", [3, 3, 3, 2], data=floats(ramp(54, 0.02)))
    bias = b.tensor("conv/b", [3], data=floats([0.1, -0.2, 0.3]))
    y = b.tensor("y", [1, 5, 5, 3])
    b.op(OpCode.CONV_2D, [x, w, bias], [y], OpOptions.Conv2DOptions, conv_options(pads=(1, 1, 1, 1)),
         activation=RELU, flops=2 * 5 * 5 * 3 * 3 * 3 * 2)
    return b, b.model([x], [y])


def fully_connected():
    b = ModelBuilder()
    x = b.tensor("x", [2, 4])
    w = b.tensor("fc/w", [3, 4], data=floats(ramp(12)))
    bias = b.tensor("fc/b", [3], data=floats([1.0, 0.0, -1.0]))
    y = b.tensor("y", [2, 3])
    b.op(OpCode.FULLY_CONNECTED, [x, w, bias], [y])
    return b, b.model([x], [y])


def chain():
    """conv (stride 2, fused relu) -> reshape -> fully connected -> add a variable; plus an unused
    per-channel quantized int8 constant so quantization parsing is exercised."""
    b = ModelBuilder()
    x = b.tensor("x", [1, 4, 4, 1])
    w = b.tensor("conv/w", [2, 3, 3, 1], data=floats(ramp(18, 0.05)))
    c = b.tensor("conv/out", [1, 2, 2, 2])
    r = b.tensor("flat", [1, 8])
    fw = b.tensor("fc/w", [3, 8], data=floats(ramp(24, 0.03)))
    f = b.tensor("fc/out", [1, 3])
    v = b.tensor("bias_var", [1, 3], data=floats([0.25, 0.5, 0.75]), variable=True)
    y = b.tensor("y", [1, 3])
    b.tensor("q", [2, 2], dtype=INT8, data=bytes([1, 2, 255, 4]), quant=([0.5, 0.25], [0, -1], 0))
    b.op(OpCode.CONV_2D, [x, w, -1], [c], OpOptions.Conv2DOptions, conv_options((2, 2), (1, 1, 1, 1)), activation=RELU)
    b.op(OpCode.RESHAPE, [c], [r])
    b.op(OpCode.FULLY_CONNECTED, [r, fw, -1], [f])
    b.op(OpCode.BINARY, [f, v], [y], OpOptions.BinaryOptions, binary(ADD))
    sigs = [("infer", [("x", x)], [("y", y)], [0, 1, 2, 3]), ("features", [("x", x)], [("flat", r)], None)]
    return b, b.model([x], [y], sigs, [("license", "test")])


VALID = [add_relu, passthrough, reshape_add, conv, fully_connected, chain]


# ---- invalid models: (name, status, message fragment, builder) ----

def _mutated(base, change, after_layout=None):
    def build():
        b, m = base()
        change(b, m)
        return b, m, after_layout
    return build


def _graph(m):
    return m.graphs[0]


def _set_shape(index, shape, signature=None):
    def change(b, m):
        _graph(m).tensors[index].shape = shape
        if signature is not None:
            _graph(m).tensors[index].shapeSignature = signature
    return change


def _cycle(b, m):
    # relu reads what add writes and add reads what relu writes.
    ops = _graph(m).operators
    ops[0].inputs = [0, 3]


def _out_of_order(b, m):
    ops = _graph(m).operators
    ops[0], ops[1] = ops[1], ops[0]


def _bad_union(b, m):
    op = _graph(m).operators[0]
    op.optionsType, op.options = OpOptions.Conv2DOptions, conv_options()


def _union_tag(b, m):
    _graph(m).operators[0].optionsType = 77


def _buffer_offset(value):
    def after(m):
        m.buffers[1].offset = value
    return after


def _buffer_size(value):
    def after(m):
        m.buffers[1].size = value
    return after


def _opcode(value):
    def change(b, m):
        m.operatorCodes[0].opcode = value
    return change


def _version(value):
    def change(b, m):
        m.version = value
    return change


def _min_runtime(b, m):
    m.minRuntimeVersion = 1000


def _second_graph_signature(b, m):
    extra = GraphT()
    extra.name = "other"
    m.graphs.append(extra)
    m.signatures[0].graph = 1


def _written_twice(b, m):
    _graph(m).operators[1].outputs = [2]


def _constant_input(b, m):
    _graph(m).inputs = [1]


def _output_never_written(b, m):
    _graph(m).operators.pop()


def _tensor_index(b, m):
    _graph(m).operators[0].inputs = [0, 99]


def _opcode_index(b, m):
    _graph(m).operators[1].opcodeIndex = 9


def _quant_counts(b, m):
    t = _graph(m).tensors[1]
    t.quantization = QuantizationT()
    t.quantization.scale, t.quantization.zeroPoint = [0.5, 0.5, 0.5], [0, 0]


def _conv_stride(b, m):
    _graph(m).operators[0].options.strides = [0, 1]


def _conv_pad(b, m):
    _graph(m).operators[0].options.pads = [0, -1, 0, 0]


def _conv_strides_length(b, m):
    _graph(m).operators[0].options.strides = [1, 1, 1]


def _dynamic_constant(b, m):
    _graph(m).tensors[1].shapeSignature = [-1, 4]


# One past the schema's last dtype: a value a newer converter might write, unknown to this runtime.
UNKNOWN_DTYPE = max(value for name, value in vars(DType).items() if not name.startswith("_")) + 1


def _dtype(value):
    def change(b, m):
        _graph(m).tensors[0].dtype = value
    return change


def _no_graph(b, m):
    m.graphs = []


def _signature_tensor(b, m):
    m.signatures[0].outputs[0].tensor = 50


def _signature_op(b, m):
    m.signatures[0].operators = [0, 7]


def _writes_constant(b, m):
    _graph(m).operators[1].outputs = [1]


def _writes_input(b, m):
    _graph(m).operators[1].outputs = [0]


def _transpose_perm(b, m):
    op = _graph(m).operators[1]
    m.operatorCodes.append(OperatorCodeT())
    m.operatorCodes[-1].opcode = OpCode.TRANSPOSE
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.optionsType = OpOptions.TransposeOptions
    op.options = TransposeOptionsT()
    op.options.perm = [0, 0]


def _pool_without_kernel(b, m):
    op = _graph(m).operators[1]
    m.operatorCodes.append(OperatorCodeT())
    m.operatorCodes[-1].opcode = OpCode.POOL_2D
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.optionsType = OpOptions.Pool2DOptions
    op.options = Pool2DOptionsT()


def _op_with_options(opcode, options_type, options_class, **fields):
    """Turns op 1 into ``opcode`` with an options table whose ``fields`` are set (invalid ones)."""
    def change(b, m):
        op = _graph(m).operators[1]
        m.operatorCodes.append(OperatorCodeT())
        m.operatorCodes[-1].opcode = opcode
        op.opcodeIndex = len(m.operatorCodes) - 1
        op.optionsType = options_type
        op.options = options_class()
        for key, value in fields.items():
            setattr(op.options, key, value)
    return change


def _activation(b, m):
    _graph(m).operators[0].activation = 100


def _graph_input_twice(b, m):
    _graph(m).inputs = [0, 0]


INVALID = [
    ("cycle", "INVALID_MODEL", "is read before", _mutated(add_relu, _cycle)),
    ("out_of_order", "INVALID_MODEL", "is read before", _mutated(add_relu, _out_of_order)),
    ("negative_dim", "INVALID_MODEL", "dimension 0 is -3", _mutated(add_relu, _set_shape(0, [-3, 4], []))),
    ("huge_shape", "INVALID_MODEL", "2^46", _mutated(add_relu, _set_shape(2, [1 << 30, 1 << 30, 1 << 30], []))),
    ("rank_too_big", "UNSUPPORTED", "rank 9", _mutated(add_relu, _set_shape(2, [1] * 9, []))),
    ("bad_union", "INVALID_MODEL", "has Conv2DOptions, expected BinaryOptions", _mutated(add_relu, _bad_union)),
    ("unknown_union_tag", "INVALID_MODEL", "options type 77", _mutated(add_relu, _union_tag)),
    ("buffer_past_end", "INVALID_MODEL", "past the", _mutated(add_relu, lambda b, m: None, _buffer_offset(1 << 20))),
    ("buffer_huge_offset", "INVALID_MODEL", "past the",
     _mutated(add_relu, lambda b, m: None, _buffer_offset((1 << 64) - 64))),
    ("buffer_misaligned", "INVALID_MODEL", "not 64-byte aligned",
     _mutated(conv, lambda b, m: None, lambda m: setattr(m.buffers[2], "offset", m.buffers[2].offset - 4))),
    ("constant_size", "INVALID_MODEL", "holds 12 bytes", _mutated(add_relu, lambda b, m: None, _buffer_size(12))),
    ("unknown_opcode", "UNSUPPORTED", "opcode 200 is unknown", _mutated(add_relu, _opcode(200))),
    ("custom_op", "UNSUPPORTED", "custom op", _mutated(add_relu, _opcode(OpCode.CUSTOM))),
    ("newer_schema", "UNSUPPORTED", "schema version 2", _mutated(add_relu, _version(2))),
    ("schema_zero", "INVALID_MODEL", "schema version 0", _mutated(add_relu, _version(0))),
    ("newer_runtime", "UNSUPPORTED", "runtime version 1000", _mutated(add_relu, _min_runtime)),
    ("signature_graph", "UNSUPPORTED", "only graph 0", _mutated(add_relu, _second_graph_signature)),
    ("written_twice", "INVALID_MODEL", "already written by op 0", _mutated(add_relu, _written_twice)),
    ("constant_graph_input", "INVALID_MODEL", "is a constant", _mutated(add_relu, _constant_input)),
    ("graph_input_twice", "INVALID_MODEL", "twice", _mutated(add_relu, _graph_input_twice)),
    ("output_never_written", "INVALID_MODEL", "never written", _mutated(add_relu, _output_never_written)),
    ("tensor_index", "INVALID_MODEL", "tensor 99, out of range", _mutated(add_relu, _tensor_index)),
    ("opcode_index", "INVALID_MODEL", "opcode_index 9", _mutated(add_relu, _opcode_index)),
    ("quant_counts", "INVALID_MODEL", "3 scales but 2 zero points", _mutated(add_relu, _quant_counts)),
    ("conv_zero_stride", "INVALID_MODEL", "strides[0] is 0", _mutated(conv, _conv_stride)),
    ("conv_negative_pad", "INVALID_MODEL", "pads[1] is -1", _mutated(conv, _conv_pad)),
    ("conv_strides_length", "INVALID_MODEL", "strides has 3 entries", _mutated(conv, _conv_strides_length)),
    ("dynamic_constant", "INVALID_MODEL", "dynamic dimension", _mutated(add_relu, _dynamic_constant)),
    ("negative_dtype", "INVALID_MODEL", "dtype -2", _mutated(add_relu, _dtype(-2))),
    ("unknown_dtype", "UNSUPPORTED", f"dtype {UNKNOWN_DTYPE}", _mutated(add_relu, _dtype(UNKNOWN_DTYPE))),
    ("no_graph", "INVALID_MODEL", "no graph", _mutated(add_relu, _no_graph)),
    ("signature_tensor", "INVALID_MODEL", "tensor 50 is out of range", _mutated(add_relu, _signature_tensor)),
    ("signature_op", "INVALID_MODEL", "op 7, out of range", _mutated(add_relu, _signature_op)),
    ("writes_constant", "INVALID_MODEL", "writes constant tensor 'c'", _mutated(add_relu, _writes_constant)),
    ("writes_graph_input", "INVALID_MODEL", "writes graph input 'x'", _mutated(add_relu, _writes_input)),
    ("transpose_perm", "INVALID_MODEL", "not a permutation", _mutated(add_relu, _transpose_perm)),
    ("pool_without_kernel", "INVALID_MODEL", "pool kernel", _mutated(add_relu, _pool_without_kernel)),
    ("unknown_activation", "UNSUPPORTED", "fused activation 100", _mutated(add_relu, _activation)),
    ("scatter_reduction", "UNSUPPORTED", "scatter reduction 9 is unknown",
     _mutated(add_relu, _op_with_options(OpCode.SCATTER_ND, OpOptions.ScatterOptions, ScatterOptionsT, reduction=9))),
    ("nms_negative_max", "INVALID_MODEL", "max_output_boxes_per_class is -1",
     _mutated(add_relu, _op_with_options(OpCode.NON_MAX_SUPPRESSION, OpOptions.NonMaxSuppressionOptions,
                                         NonMaxSuppressionOptionsT, maxOutputBoxesPerClass=-1))),
    ("roi_align_output", "INVALID_MODEL", "roi-align output 0x1",
     _mutated(add_relu, _op_with_options(OpCode.ROI_ALIGN, OpOptions.RoiAlignOptions, RoiAlignOptionsT,
                                         outputHeight=0))),
    ("resize_cubic_coefficient", "INVALID_MODEL", "cubic_coeff_a",
     _mutated(add_relu, _op_with_options(OpCode.RESIZE, OpOptions.ResizeOptions, ResizeOptionsT,
                                         cubicCoeffA=float("nan")))),
]


def wrong_declared_shape():
    """add_relu whose intermediate declares [1, 5]: BINARY computes [1, 4] from its inputs."""
    b, m = add_relu()
    _graph(m).tensors[2].shape = [1, 5]
    _graph(m).tensors[2].shapeSignature = [-1, 5]
    return b, m


ALLOCATE_FAILS = [wrong_declared_shape]


def converter_seeds(out):
    """Three seeds written by the converter itself, so the mutation campaign also reaches the int8
    kernels' parameter checks, the training ops' options and the data-checked index ops: a small
    int8 network (conv, depthwise, max pool, residual add, mean, FC, softmax), a trainable MLP
    (loss, gradients, Adam updates), and scatter, NMS, RoiAlign and cubic Resize side by side.
    Skipped, with a note, where numpy is missing."""
    try:
        import numpy as np

        from converter.api import convert
        from converter.builder import GraphBuilder
    except ImportError as error:
        print("converter seeds skipped: %s" % error)
        return 0
    rng = np.random.default_rng(0)
    b = GraphBuilder("int8_seed")
    x = b.input("x", (1, 6, 6, 4))
    w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)
    h = b.Conv2D(x, w(8, 3, 3, 4), np.zeros(8, np.float32), pads=(1, 1, 1, 1), layout="NHWC",
                 activation=("Relu", 0.0, 0.0))
    d = b.Conv2D(h, w(8, 3, 3, 1), w(8), pads=(1, 1, 1, 1), groups=8, layout="NHWC")
    p = b.MaxPool2D(b.Add(h, d), kernel=(2, 2), strides=(2, 2), layout="NHWC")
    m = b.Reshape(b.ReduceMean(p, axes=(1, 2), keepdims=False), shape=(1, 8))
    b.output(b.Softmax(b.FullyConnected(m, w(5, 8), w(5)), axis=1), name="y")
    samples = rng.normal(0, 1, (4, 1, 6, 6, 4)).astype(np.float32)
    seeds = {"int8_net.edge": convert(b.build(), quantize="int8", calibration=samples).data}
    t = GraphBuilder("train_seed")
    x = t.input("x", (4, 6))
    hidden = t.Relu(t.FullyConnected(x, t.constant("fc1/weights", w(8, 6)), t.constant("fc1/bias", w(8))))
    t.output(t.FullyConnected(hidden, t.constant("head/weights", w(3, 8)), t.constant("head/bias", w(3))),
             name="logits")
    seeds["train_mlp.edge"] = convert(t.build(), training=dict(loss="cross_entropy", optimizer="adam",
                                                               lr=1e-2, clip_norm=1.0)).data
    # The index, detection and region ops, whose indices, boxes and rois are data the runtime checks.
    r = GraphBuilder("index_seed")
    data = r.input("data", (4, 3))
    ids = r.input("ids", (2, 1), dtype="int64")
    rows = r.input("rows", (2, 3))
    r.output(r.ScatterND(data, ids, rows, reduction="add"), name="scattered")
    where = r.input("where", (2, 3), dtype="int64")
    r.output(r.ScatterElements(data, where, rows, axis=0, reduction="max"), name="elements")
    boxes, scores = r.input("boxes", (1, 5, 4)), r.input("scores", (1, 2, 5))
    r.output(r.NonMaxSuppression(boxes, scores, max_output_boxes_per_class=3, iou_threshold=0.5,
                                 score_threshold=0.1), name="selected")
    image, rois = r.input("image", (2, 5, 6, 3)), r.input("rois", (3, 4))
    batch = r.input("batch", (3,), dtype="int64")
    r.output(r.RoiAlign(image, rois, batch, mode="avg", output_height=2, output_width=2, sampling_ratio=0,
                        spatial_scale=0.5, half_pixel=True, layout="NHWC"), name="pooled")
    r.output(r.Resize(image, mode="cubic", coordinate_mode="half_pixel", nearest_mode="round_prefer_floor",
                      scales=(1.0, 1.6, 1.5, 1.0), cubic_coeff_a=-0.5, exclude_outside=True), name="resized")
    seeds["index_ops.edge"] = convert(r.build()).data
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    return len(seeds)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(os.path.join(out, "invalid"), exist_ok=True)
    os.makedirs(os.path.join(out, "allocate"), exist_ok=True)
    for make in VALID:
        b, m = make()
        with open(os.path.join(out, make.__name__ + ".edge"), "wb") as f:
            f.write(serialize(b, m))
    for name, status, fragment, build in INVALID:
        b, m, after_layout = build()
        with open(os.path.join(out, "invalid", name + ".edge"), "wb") as f:
            f.write(serialize(b, m, after_layout))
        with open(os.path.join(out, "invalid", name + ".expect"), "w") as f:
            f.write(status + "\n" + fragment + "\n")
    for make in ALLOCATE_FAILS:
        b, m = make()
        with open(os.path.join(out, "allocate", make.__name__ + ".edge"), "wb") as f:
            f.write(serialize(b, m))
    made = converter_seeds(out)
    print("wrote %d valid and %d invalid models to %s" % (len(VALID) + made, len(INVALID), out))


if __name__ == "__main__":
    main()

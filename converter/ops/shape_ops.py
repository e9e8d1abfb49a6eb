"""Data-movement ops: Reshape, Identity, Transpose, Concat, Split, Slice, Gather, GatherElements,
Pad, Resize, BroadcastTo. Where an attribute is implied by the output tensor (Reshape/BroadcastTo
shape, Split sizes), the schema does not carry it: lift leaves it out and the reader fills it in
from the output tensors' types."""
from __future__ import annotations

import math

import numpy as np

from converter.edgefb.AxisOptions import AxisOptionsT
from converter.edgefb.CoordinateMode import CoordinateMode
from converter.edgefb.NearestMode import NearestMode
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.PadMode import PadMode
from converter.edgefb.PadOptions import PadOptionsT
from converter.edgefb.ResizeMode import ResizeMode
from converter.edgefb.ResizeOptions import ResizeOptionsT
from converter.edgefb.SliceOptions import SliceOptionsT
from converter.edgefb.TransposeOptions import TransposeOptionsT
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import (FLOAT_DTYPES, broadcast_dims, check_axis, fail, float32_value,
                                   floats, ints, need, no_attrs, no_options, output_elements,
                                   static_shape, zero_flops)
from converter.ops.int8_reference import concat_int8, pad_int8, same_params_int8


def _axis_lower(opcode: int):
    def lower(attrs):
        options = AxisOptionsT()
        options.axis = int(attrs["axis"])
        return opcode, OpOptions.AxisOptions, options
    return lower


def _axis_lift(options) -> dict:
    return {"axis": int(options.axis)}


def _shape_product(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


# ---- Reshape, Identity, Transpose, BroadcastTo ----

def _reshape_infer(types, attrs):
    need("Reshape", types, 1)
    shape = tuple(attrs.get("shape", ()))
    # A 0 here is a zero-size dimension (ONNX's allowzero): copies and -1 are resolved at import.
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        fail("Reshape", f"shape {shape} must be static non-negative dims (-1 and copied dims are resolved at import)")
    x = types[0]
    if x.is_static and x.size != _shape_product(shape):
        fail("Reshape", f"cannot reshape {x.shape} ({x.size} elements) to {shape}")
    return [TensorType(x.dtype, tuple(int(d) for d in shape))]


def _reshape_back(g, node, dys):
    return [g.emit("Reshape", [dys[0]], {"shape": g.shape(node.inputs[0])})]


register(OpDef(name="Reshape", infer=_reshape_infer,
               reference=lambda inputs, attrs: [np.reshape(inputs[0], tuple(attrs["shape"]))],
               lower=no_options(OpCode.RESHAPE), lift=no_attrs, opcode=OpCode.RESHAPE,
               flops=zero_flops, gradient=_reshape_back, int8=same_params_int8("Reshape"), int8_role="follow"))


def _identity_infer(types, attrs):
    need("Identity", types, 1)
    return [types[0]]


# Identity is written as RESHAPE (to the same shape) and read back as Reshape: lift_key -1 keeps
# it out of the reader's lookup.
register(OpDef(name="Identity", infer=_identity_infer,
               reference=lambda inputs, attrs: [np.array(inputs[0], copy=True)],
               lower=no_options(OpCode.RESHAPE), lift=no_attrs, opcode=OpCode.RESHAPE, lift_key=-1,
               flops=zero_flops, gradient=lambda g, node, dys: [dys[0]],
               int8=same_params_int8("Identity"), int8_role="follow"))


def _transpose_infer(types, attrs):
    need("Transpose", types, 1)
    perm = tuple(attrs.get("perm", ()))
    if sorted(perm) != list(range(types[0].rank)):
        fail("Transpose", f"perm {perm} is not a permutation of the {types[0].rank} axes")
    return [TensorType(types[0].dtype, tuple(types[0].shape[p] for p in perm))]


def _transpose_lower(attrs):
    options = TransposeOptionsT()
    options.perm = list(attrs["perm"])
    return OpCode.TRANSPOSE, OpOptions.TransposeOptions, options


register(OpDef(name="Transpose", infer=_transpose_infer,
               reference=lambda inputs, attrs: [np.ascontiguousarray(np.transpose(inputs[0], attrs["perm"]))],
               lower=_transpose_lower, lift=lambda o: {"perm": ints(o.perm)},
               opcode=OpCode.TRANSPOSE, flops=zero_flops,
               gradient=lambda g, node, dys: [g.emit(
                   "Transpose", [dys[0]], {"perm": tuple(int(k) for k in np.argsort(node.attrs["perm"]))})],
               int8=same_params_int8("Transpose"), int8_role="follow"))


def _broadcast_to_infer(types, attrs):
    need("BroadcastTo", types, 1)
    return [TensorType(types[0].dtype, broadcast_dims("BroadcastTo", types[0].shape, tuple(attrs["shape"])))]


def _broadcast_to_reference(inputs, attrs):
    x = inputs[0]
    shape = np.broadcast_shapes(x.shape, tuple(attrs["shape"]))
    return [np.array(np.broadcast_to(x, shape))]


register(OpDef(name="BroadcastTo", infer=_broadcast_to_infer, reference=_broadcast_to_reference,
               lower=no_options(OpCode.BROADCAST_TO), lift=no_attrs, opcode=OpCode.BROADCAST_TO,
               flops=zero_flops,
               gradient=lambda g, node, dys: [g.unbroadcast(dys[0], g.shape(node.inputs[0]))]))


# ---- Concat, Split ----

def _concat_infer(types, attrs):
    op = "Concat"
    if not types or any(t is None for t in types):
        fail(op, "needs at least one input and none left out")
    first = types[0]
    axis = check_axis(op, attrs.get("axis", -1), first.rank)
    total = 0
    for k, t in enumerate(types):
        if t.dtype != first.dtype or t.rank != first.rank:
            fail(op, f"input {k} is {t.dtype}{list(t.shape)}; input 0 is {first.dtype}{list(first.shape)}")
        if any(a != b for d, (a, b) in enumerate(zip(t.shape, first.shape)) if d != axis):
            fail(op, f"input {k} shape {t.shape} differs from {first.shape} off axis {axis}")
        if not isinstance(t.shape[axis], int):
            fail(op, f"input {k} has a symbolic dim {t.shape[axis]!r} on the concat axis")
        total += t.shape[axis]
    return [TensorType(first.dtype, first.shape[:axis] + (total,) + first.shape[axis + 1:])]


def _concat_grad(g, node, dys):
    axis = int(node.attrs["axis"])
    sizes = tuple(g.shape(i)[axis] for i in node.inputs)
    if len(sizes) == 1:
        return [dys[0]]
    parts = g.emit("Split", [dys[0]], {"axis": axis, "sizes": sizes})
    return list(parts)


def _split_grad(g, node, dys):
    parts = [dy if dy is not None else g.zeros_like(out) for dy, out in zip(dys, node.outputs)]
    if len(parts) == 1:
        return [parts[0]]
    return [g.emit("Concat", parts, {"axis": int(node.attrs["axis"])})]


register(OpDef(name="Concat", infer=_concat_infer,
               reference=lambda inputs, attrs: [np.concatenate(inputs, axis=attrs["axis"])],
               lower=_axis_lower(OpCode.CONCAT), lift=_axis_lift, opcode=OpCode.CONCAT,
               flops=zero_flops, gradient=_concat_grad, int8=concat_int8, int8_role="compute"))


def _split_infer(types, attrs):
    op = "Split"
    need(op, types, 1)
    x = types[0]
    axis = check_axis(op, attrs.get("axis", -1), x.rank)
    sizes = tuple(attrs.get("sizes", ()))
    if not sizes or min(sizes) < 0 or sum(sizes) != x.shape[axis]:
        fail(op, f"sizes {sizes} must be non-negative and add up to dim {axis} of {x.shape}")
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1:]) for s in sizes]


def _split_reference(inputs, attrs):
    boundaries = np.cumsum(attrs["sizes"])[:-1]
    return [np.ascontiguousarray(part) for part in np.split(inputs[0], boundaries, axis=attrs["axis"])]


register(OpDef(name="Split", infer=_split_infer, reference=_split_reference,
               lower=_axis_lower(OpCode.SPLIT), lift=_axis_lift, opcode=OpCode.SPLIT,
               flops=zero_flops, gradient=_split_grad, int8=same_params_int8("Split"), int8_role="follow"))


# ---- Slice ----

def slice_range(dim: int, start: int, end: int, step: int) -> range:
    """The indices ONNX Slice takes along one axis: negative start/end count from the end, then
    both are clamped (to [0, dim] going forward, [-1, dim - 1] going backward)."""
    if step == 0:
        raise ValueError("Slice: a step of 0 is not allowed")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return range(start, end, step)


def _slice_params(op, x_rank, attrs):
    starts, ends = tuple(attrs.get("starts", ())), tuple(attrs.get("ends", ()))
    steps = tuple(attrs.get("steps", (1,) * len(starts)))
    if not len(starts) == len(ends) == len(steps) == x_rank:
        fail(op, f"starts {starts}, ends {ends}, steps {steps} need one entry per dim ({x_rank})")
    if 0 in steps:
        fail(op, f"steps {steps} contain 0")
    return starts, ends, steps


def _slice_ends(op, x_shape, ref_shape, attrs) -> tuple:
    """The ends, with those ``ends_from`` names taken from the second input's shape: a constant
    stored at a maximum length, read up to the length the model is run at (start 0, step 1)."""
    ends = tuple(attrs.get("ends", ()))
    ends_from = attrs.get("ends_from")
    if ends_from is None:
        return ends
    if ref_shape is None:
        fail(op, "ends_from needs the second input whose dims give the ends")
    if len(ends_from) != len(x_shape):
        fail(op, f"ends_from {tuple(ends_from)} needs one entry per dim ({len(x_shape)})")
    ends = list(ends)
    for d, source in enumerate(ends_from):
        if source < 0:
            continue
        if source >= len(ref_shape) or attrs["starts"][d] != 0 or attrs["steps"][d] != 1:
            fail(op, f"ends_from {tuple(ends_from)}: dim {d} must start at 0 with step 1 and name an axis "
                     f"of the rank-{len(ref_shape)} second input")
        length = ref_shape[source]
        if length > x_shape[d]:
            fail(op, f"length {length} along dim {d} exceeds {x_shape[d]}, the maximum the model was converted for")
        ends[d] = length
    return tuple(ends)


def _slice_infer(types, attrs):
    need("Slice", types, 1, optional=1)
    x = types[0]
    ref = types[1] if len(types) > 1 else None
    shape = static_shape("Slice", x)
    ends = _slice_ends("Slice", shape, ref.shape if ref is not None else None, attrs)
    params = _slice_params("Slice", x.rank, {**attrs, "ends": ends})
    return [TensorType(x.dtype, tuple(len(slice_range(d, *p)) for d, p in zip(shape, zip(*params))))]


def _slice_reference(inputs, attrs):
    x = inputs[0]
    ref = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    ends = _slice_ends("Slice", x.shape, ref.shape if ref is not None else None, attrs)
    params = _slice_params("Slice", x.ndim, {**attrs, "ends": ends})
    index = []
    for dim, p in zip(x.shape, zip(*params)):
        taken = slice_range(dim, *p)
        # A backward range ending at -1 means "through index 0"; Python slices spell that None.
        index.append(slice(taken.start, taken.stop if taken.stop >= 0 else None, taken.step))
    return [np.ascontiguousarray(x[tuple(index)])]


def _slice_lower(attrs):
    options = SliceOptionsT()
    starts, ends, steps = _slice_params("Slice", len(attrs["starts"]), attrs)
    options.starts, options.ends, options.steps = list(starts), list(ends), list(steps)
    if attrs.get("ends_from") is not None:
        options.endsFrom = [int(v) for v in attrs["ends_from"]]
    return OpCode.SLICE, OpOptions.SliceOptions, options


def _slice_lift(o) -> dict:
    attrs = {"starts": ints(o.starts), "ends": ints(o.ends), "steps": ints(o.steps)}
    if o.endsFrom is not None and len(o.endsFrom):
        attrs["ends_from"] = ints(o.endsFrom)
    return attrs


def _slice_grad(g, node, dys):
    """A unit-step slice's gradient is dy padded with zeros back to the input's extent."""
    shape = g.shape(node.inputs[0])
    begins, ends = [], []
    for dim, p in zip(shape, zip(*_slice_params("Slice", len(shape), node.attrs))):
        taken = slice_range(dim, *p)
        if taken.step != 1 and len(taken) > 1:
            g.fail(f"a slice with step {taken.step} has no gradient rule (only unit steps)")
        start = taken.start if len(taken) else 0
        begins.append(start)
        ends.append(dim - start - len(taken))
    return [g.emit("Pad", [dys[0]], {"pads": tuple(begins + ends), "mode": "constant", "value": 0.0})]


register(OpDef(name="Slice", infer=_slice_infer, reference=_slice_reference, lower=_slice_lower,
               lift=_slice_lift, opcode=OpCode.SLICE, flops=zero_flops, gradient=_slice_grad,
               int8=same_params_int8("Slice"), int8_role="follow"))


# ---- Gather, GatherElements ----

def _check_indices(op: str, t: TensorType) -> None:
    if t.dtype not in ("int32", "int64"):
        fail(op, f"indices have dtype {t.dtype}; expected int32 or int64")


def _resolve_indices(op: str, indices: np.ndarray, dim: int) -> np.ndarray:
    indices = np.asarray(indices).astype(np.int64)
    if indices.size and (indices.min() < -dim or indices.max() >= dim):
        fail(op, f"index {indices.min() if indices.min() < -dim else indices.max()} is out of range "
                 f"for a dim of {dim}")
    return np.where(indices < 0, indices + dim, indices)


def _gather_infer(types, attrs):
    need("Gather", types, 2)
    x, indices = types
    _check_indices("Gather", indices)
    axis = check_axis("Gather", attrs.get("axis", -1), x.rank)
    return [TensorType(x.dtype, x.shape[:axis] + indices.shape + x.shape[axis + 1:])]


def _gather_reference(inputs, attrs):
    x, indices = inputs
    axis = attrs["axis"]
    return [np.take(x, _resolve_indices("Gather", indices, x.shape[axis]), axis=axis)]


def _gather_grad(g, node, dys):
    """Dense scatter-add of dy into a zero tensor of x's shape. (Trainable embedding tables get
    sparse row gradients instead; converter.autodiff arranges that before this rule runs.)"""
    x, indices = node.inputs
    return [g.emit("GatherGrad", [dys[0], indices], {"axis": int(node.attrs["axis"]), "shape": g.shape(x)}),
            None]


register(OpDef(name="Gather", infer=_gather_infer, reference=_gather_reference,
               lower=_axis_lower(OpCode.GATHER), lift=_axis_lift, opcode=OpCode.GATHER,
               flops=zero_flops, gradient=_gather_grad, int8=same_params_int8("Gather"), int8_role="follow",
               int8_inputs=(0,)))


def _gather_elements_infer(types, attrs):
    op = "GatherElements"
    need(op, types, 2)
    x, indices = types
    _check_indices(op, indices)
    check_axis(op, attrs.get("axis", -1), x.rank)
    if indices.rank != x.rank:
        fail(op, f"indices rank {indices.rank} differs from the input's ({x.rank})")
    axis = attrs["axis"]
    if any(k != axis and i > d for k, (i, d) in enumerate(zip(indices.shape, x.shape))):
        fail(op, f"indices shape {indices.shape} exceeds the input's {x.shape} off axis {axis}")
    return [TensorType(x.dtype, indices.shape)]


def _gather_elements_reference(inputs, attrs):
    x, indices = inputs
    axis = attrs["axis"]
    # Output element [i0, .., ik, ..] = x[i0, .., indices[i0, .., ik, ..], ..] with ik on the axis;
    # indices may be smaller than x off the axis, so build the coordinates instead of broadcasting.
    coordinates = list(np.indices(indices.shape, sparse=True))
    coordinates[axis] = _resolve_indices("GatherElements", indices, x.shape[axis])
    return [x[tuple(coordinates)]]


register(OpDef(name="GatherElements", infer=_gather_elements_infer,
               reference=_gather_elements_reference, lower=_axis_lower(OpCode.GATHER_ELEMENTS),
               lift=_axis_lift, opcode=OpCode.GATHER_ELEMENTS, flops=zero_flops))


# ---- Pad ----

# reflect mirrors about the border element (abc -> cb|abc|ba), symmetric repeats it (ba|abc|cb):
# NumPy's modes of the same names; TFLite's MIRROR_PAD has both, ONNX's Pad only reflect.
PAD_MODES = {"constant": PadMode.CONSTANT, "reflect": PadMode.REFLECT, "edge": PadMode.EDGE,
             "symmetric": PadMode.SYMMETRIC}


def _pad_infer(types, attrs):
    op = "Pad"
    need(op, types, 1)
    x = types[0]
    pads = tuple(attrs.get("pads", ()))
    if attrs.get("mode", "constant") not in PAD_MODES:
        fail(op, f"mode {attrs.get('mode')!r} is not one of {', '.join(PAD_MODES)}")
    if len(pads) != 2 * x.rank:
        fail(op, f"pads {pads} need 2 entries per dim ({2 * x.rank})")
    shape = static_shape(op, x)
    out = tuple(d + pads[k] + pads[k + x.rank] for k, d in enumerate(shape))
    if min(out, default=0) < 0:
        fail(op, f"pads {pads} crop {shape} below zero")
    if attrs.get("mode", "constant") == "reflect" and any(
            max(pads[k], pads[k + x.rank]) >= d for k, d in enumerate(shape)):
        fail(op, f"reflect pads {pads} must be smaller than the dims {shape}")
    if attrs.get("mode", "constant") == "symmetric" and any(
            max(pads[k], pads[k + x.rank]) > d for k, d in enumerate(shape)):
        fail(op, f"symmetric pads {pads} may not exceed the dims {shape}")
    return [TensorType(x.dtype, out)]


def _pad_reference(inputs, attrs):
    x = inputs[0]
    pads = tuple(attrs["pads"])
    rank = x.ndim
    begins, ends = pads[:rank], pads[rank:]
    # Negative pads crop first; the rest pads the cropped tensor (onnxruntime's order).
    cropped = x[tuple(slice(max(-b, 0), d - max(-e, 0)) for b, e, d in zip(begins, ends, x.shape))]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]
    mode = attrs.get("mode", "constant")
    if mode == "constant":
        value = np.array(attrs.get("value", 0.0)).astype(x.dtype)
        return [np.pad(cropped, widths, mode="constant", constant_values=value)]
    return [np.pad(cropped, widths, mode=mode)]


def _pad_lower(attrs):
    options = PadOptionsT()
    options.mode = PAD_MODES[attrs.get("mode", "constant")]
    options.pads = list(attrs["pads"])
    options.value = float(attrs.get("value", 0.0))
    return OpCode.PAD, OpOptions.PadOptions, options


def _pad_lift(options):
    mode = {code: name for name, code in PAD_MODES.items()}[options.mode]
    return {"mode": mode, "pads": ints(options.pads), "value": float32_value(options.value)}


def _pad_grad(g, node, dys):
    """Constant padding's gradient crops dy back; padding by the negated pads does exactly that
    (and pads zeros back where a negative pad cropped)."""
    if node.attrs.get("mode", "constant") != "constant":
        g.fail(f"{node.attrs.get('mode')} padding has no gradient rule (only constant)")
    return [g.emit("Pad", [dys[0]], {"pads": tuple(-int(p) for p in node.attrs["pads"]),
                                     "mode": "constant", "value": 0.0})]


def _pad_int8_condition(graph, node) -> str | None:
    if node.attrs.get("mode", "constant") == "constant" and float(node.attrs.get("value", 0.0)) != 0.0:
        return "constant padding with a non-zero value"
    return None


register(OpDef(name="Pad", infer=_pad_infer, reference=_pad_reference, lower=_pad_lower,
               lift=_pad_lift, opcode=OpCode.PAD, flops=zero_flops, gradient=_pad_grad,
               int8=pad_int8, int8_role="follow", int8_condition=_pad_int8_condition))


# ---- Resize ----

RESIZE_MODES = {"nearest": ResizeMode.NEAREST, "linear": ResizeMode.LINEAR, "cubic": ResizeMode.CUBIC}
COORDINATE_MODES = {"half_pixel": CoordinateMode.HALF_PIXEL, "asymmetric": CoordinateMode.ASYMMETRIC,
                    "align_corners": CoordinateMode.ALIGN_CORNERS,
                    "pytorch_half_pixel": CoordinateMode.PYTORCH_HALF_PIXEL}
NEAREST_MODES = {"round_prefer_floor": NearestMode.ROUND_PREFER_FLOOR,
                 "round_prefer_ceil": NearestMode.ROUND_PREFER_CEIL,
                 "floor": NearestMode.FLOOR, "ceil": NearestMode.CEIL}


def resize_output_dim(size: int, scale: float) -> int:
    """floor(size * scale) as ONNX defines it; the small slack absorbs the rounding of scales that
    an importer computed as output_size / input_size."""
    return int(math.floor(size * scale + 1e-4))


def _resize_modes(attrs):
    modes = (attrs.get("mode", "nearest"), attrs.get("coordinate_mode", "half_pixel"),
             attrs.get("nearest_mode", "round_prefer_floor"))
    for value, table, what in zip(modes, (RESIZE_MODES, COORDINATE_MODES, NEAREST_MODES),
                                  ("mode", "coordinate_mode", "nearest_mode")):
        if value not in table:
            fail("Resize", f"{what} {value!r} is not one of {', '.join(table)}")
    return modes


def _resize_infer(types, attrs):
    need("Resize", types, 1)
    x = types[0]
    _resize_modes(attrs)
    scales = tuple(attrs.get("scales", ()))
    if len(scales) != x.rank or min(scales, default=1.0) <= 0:
        fail("Resize", f"scales {scales} need one positive entry per dim ({x.rank})")
    if attrs.get("mode", "nearest") in ("linear", "cubic") and x.dtype not in FLOAT_DTYPES:
        fail("Resize", f"{attrs['mode']} mode needs a float input, got {x.dtype}")
    shape = static_shape("Resize", x)
    out = tuple(resize_output_dim(d, s) for d, s in zip(shape, scales))
    if min(out, default=1) < 1:
        fail("Resize", f"scales {scales} shrink {shape} to {out}")
    return [TensorType(x.dtype, out)]


def _source_coordinates(coordinate_mode: str, in_size: int, out_size: int, scale: float) -> np.ndarray:
    """Where each output index samples the input, in float32 as onnxruntime computes it."""
    f32 = np.float32
    x = np.arange(out_size, dtype=f32)
    scale = f32(scale)
    if coordinate_mode == "asymmetric":
        return x / scale
    if coordinate_mode == "align_corners":
        return x * 0 if out_size == 1 else x * f32(in_size - 1) / f32(out_size - 1)
    if coordinate_mode == "pytorch_half_pixel" and out_size == 1:
        return x * 0
    return (x + f32(0.5)) / scale - f32(0.5)


def _nearest_index(coords: np.ndarray, nearest_mode: str, in_size: int) -> np.ndarray:
    floor = np.floor(coords)
    if nearest_mode == "floor":
        index = floor
    elif nearest_mode == "ceil":
        index = np.ceil(coords)
    else:
        halfway = coords - floor == 0.5
        rounded = np.where(coords >= 0, np.floor(coords + 0.5), np.ceil(coords - 0.5))
        tie = floor if nearest_mode == "round_prefer_floor" else floor + 1
        index = np.where(halfway, tie, rounded)
    return np.clip(index, 0, in_size - 1).astype(np.int64)


def _cubic_taps(coords: np.ndarray, in_size: int, a: float, exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """Keys' cubic convolution: per output, the four source indices (clamped to the input) and
    their weights; with exclude_outside the taps outside the input weigh 0 and the rest are
    renormalised."""
    base = np.floor(coords.astype(np.float64))
    t = coords.astype(np.float64) - base
    index = base[:, None].astype(np.int64) + np.arange(-1, 3)
    s = np.abs(t[:, None] - np.arange(-1, 3))
    weight = np.where(s < 1, ((a + 2) * s - (a + 3)) * s * s + 1,
                      np.where(s < 2, ((a * s - 5 * a) * s + 8 * a) * s - 4 * a, 0.0))
    if exclude_outside:
        weight = np.where((index < 0) | (index >= in_size), 0.0, weight)
        weight = weight / weight.sum(axis=1, keepdims=True)
    return np.clip(index, 0, in_size - 1), weight


def _resize_reference(inputs, attrs):
    """Separable: one axis at a time, each nearest-sampled or interpolated (linear, or cubic over
    four taps), in float64 from float32 source coordinates."""
    x = inputs[0]
    mode, coordinate_mode, nearest_mode = _resize_modes(attrs)
    y = x if mode == "nearest" else x.astype(np.float64)
    for axis, (in_size, scale) in enumerate(zip(x.shape, attrs["scales"])):
        out_size = resize_output_dim(in_size, scale)
        if out_size == in_size and scale == 1.0:
            continue
        coords = _source_coordinates(coordinate_mode, in_size, out_size, scale)
        if mode == "nearest":
            y = np.take(y, _nearest_index(coords, nearest_mode, in_size), axis=axis)
            continue
        weight_shape = [1] * y.ndim
        weight_shape[axis] = out_size
        if mode == "cubic":
            index, weight = _cubic_taps(coords, in_size, float(attrs.get("cubic_coeff_a", -0.75)),
                                        bool(attrs.get("exclude_outside", False)))
            y = sum(np.take(y, index[:, k], axis=axis) * weight[:, k].reshape(weight_shape) for k in range(4))
            continue
        coords = np.clip(coords.astype(np.float64), 0, in_size - 1)
        low = np.floor(coords).astype(np.int64)
        high = np.minimum(low + 1, in_size - 1)
        frac = (coords - low).reshape(weight_shape)
        y = np.take(y, low, axis=axis) * (1 - frac) + np.take(y, high, axis=axis) * frac
    return [np.ascontiguousarray(y.astype(x.dtype))]


def _resize_lower(attrs):
    mode, coordinate_mode, nearest_mode = _resize_modes(attrs)
    options = ResizeOptionsT()
    options.mode, options.coordinateMode = RESIZE_MODES[mode], COORDINATE_MODES[coordinate_mode]
    options.nearestMode = NEAREST_MODES[nearest_mode]
    options.scales = [float(s) for s in attrs["scales"]]
    options.cubicCoeffA = float(attrs.get("cubic_coeff_a", -0.75))
    options.excludeOutside = bool(attrs.get("exclude_outside", False))
    return OpCode.RESIZE, OpOptions.ResizeOptions, options


def _resize_lift(options):
    def name_of(table, code):
        return {v: k for k, v in table.items()}[code]
    attrs = {"mode": name_of(RESIZE_MODES, options.mode),
             "coordinate_mode": name_of(COORDINATE_MODES, options.coordinateMode),
             "nearest_mode": name_of(NEAREST_MODES, options.nearestMode),
             "scales": tuple(float32_value(s) for s in floats(options.scales, ()))}
    if attrs["mode"] == "cubic":
        attrs.update(cubic_coeff_a=float32_value(options.cubicCoeffA), exclude_outside=bool(options.excludeOutside))
    return attrs


def _resize_grad(g, node, dys):
    """Resize is separable and linear in x: along each resized axis y = A @ x with A [out, in]
    (0/1 rows for nearest, interpolation weights for linear), so dx = A.T @ dy axis by axis.
    A is the reference resize of an identity matrix along that axis, so it follows every mode."""
    x = node.inputs[0]
    shape = g.shape(x)
    dy = dys[0]
    for axis in reversed(range(len(shape))):
        scale = float(node.attrs["scales"][axis])
        out = resize_output_dim(shape[axis], scale)
        if out == shape[axis] and scale == 1.0:
            continue
        one_axis = {**node.attrs, "scales": (scale, 1.0)}
        matrix = _resize_reference([np.eye(shape[axis])], one_axis)[0]  # [out, in]
        perm = tuple(k for k in range(len(shape)) if k != axis) + (axis,)
        moved = g.emit("Transpose", [dy], {"perm": perm})
        summed = g.emit("BatchMatMul", [moved, g.const(matrix, g.type(dy).dtype, "d/resize_matrix")])
        dy = g.emit("Transpose", [summed], {"perm": tuple(int(k) for k in np.argsort(perm))})
    return [dy]


register(OpDef(name="Resize", infer=_resize_infer, reference=_resize_reference,
               lower=_resize_lower, lift=_resize_lift, opcode=OpCode.RESIZE,
               flops=output_elements, gradient=_resize_grad))

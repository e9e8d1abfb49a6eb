"""Detector post-processing and region ops: NonMaxSuppression, RoiAlign.

NonMaxSuppression's row count depends on the data. Its IR type (and the file) carries the most
rows it can give, B * C * min(max_output_boxes_per_class, N); the reference returns the real rows
and the runtime sets the real count at invoke (``OpDef.rows_set_at_eval``). Since every other op
is prepared for fixed shapes, the output can only be a graph output: the writer refuses a graph
where another node reads it.
"""
from __future__ import annotations

import numpy as np

from converter.edgefb.NonMaxSuppressionOptions import NonMaxSuppressionOptionsT
from converter.edgefb.OpCode import OpCode
from converter.edgefb.OpOptions import OpOptions
from converter.edgefb.RoiAlignMode import RoiAlignMode
from converter.edgefb.RoiAlignOptions import RoiAlignOptionsT
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import fail, float32_value, layout_of, need, require_nhwc, zero_flops


def _nms_infer(types, attrs):
    op = "NonMaxSuppression"
    need(op, types, 2)
    boxes, scores = types
    if boxes.dtype != "float32" or scores.dtype != "float32":
        fail(op, f"boxes are {boxes.dtype} and scores {scores.dtype}; float32 only")
    if boxes.rank != 3 or boxes.shape[2] != 4 or scores.rank != 3 or scores.shape[0] != boxes.shape[0] \
            or scores.shape[2] != boxes.shape[1]:
        fail(op, f"boxes {boxes.shape} and scores {scores.shape} must be [B, N, 4] and [B, C, N]")
    per_class = int(attrs.get("max_output_boxes_per_class", 0))
    if per_class < 0:
        fail(op, f"max_output_boxes_per_class {per_class} must be >= 0")
    batches, count, classes = boxes.shape[0], boxes.shape[1], scores.shape[1]
    return [TensorType("int64", (batches * classes * min(per_class, count), 3))]


def _corners(boxes: np.ndarray, center_point_box: bool) -> np.ndarray:
    """[..., 4] boxes as float32 [ymin, xmin, ymax, xmax]."""
    b = boxes.astype(np.float32)
    if center_point_box:
        half_w, half_h = b[..., 2] / np.float32(2), b[..., 3] / np.float32(2)
        return np.stack([b[..., 1] - half_h, b[..., 0] - half_w, b[..., 1] + half_h, b[..., 0] + half_w], -1)
    return np.stack([np.minimum(b[..., 0], b[..., 2]), np.minimum(b[..., 1], b[..., 3]),
                     np.maximum(b[..., 0], b[..., 2]), np.maximum(b[..., 1], b[..., 3])], -1)


def _suppresses(a: np.ndarray, b: np.ndarray, threshold: np.float32) -> bool:
    """IoU of two corner boxes above threshold, in float32 step by step (a zero-area box overlaps nothing)."""
    ymin, xmin = max(a[0], b[0]), max(a[1], b[1])
    ymax, xmax = min(a[2], b[2]), min(a[3], b[3])
    if ymin >= ymax or xmin >= xmax:
        return False
    intersection = (ymax - ymin) * (xmax - xmin)
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    union = area_a + area_b - intersection
    if area_a <= 0 or area_b <= 0 or union <= 0:
        return False
    return bool(np.float32(intersection / union) > threshold)


def _nms_reference(inputs, attrs):
    """Greedy per (batch, class): candidates above the score threshold best first (ties: lower box
    index first), each kept unless it overlaps a kept one by more than the IoU threshold."""
    boxes, scores = inputs
    corners = _corners(np.asarray(boxes), bool(attrs.get("center_point_box", False)))
    per_class = int(attrs.get("max_output_boxes_per_class", 0))
    iou = np.float32(attrs.get("iou_threshold", 0.0))
    score_threshold = attrs.get("score_threshold")
    rows = []
    for b in range(scores.shape[0]):
        for k in range(scores.shape[1]):
            score = np.asarray(scores[b, k], np.float32)
            candidates = [i for i in range(score.shape[0])
                          if score_threshold is None or score[i] > np.float32(score_threshold)]
            candidates.sort(key=lambda i: (-score[i], i))
            kept: list[int] = []
            for i in candidates:
                if len(kept) >= per_class:
                    break
                if not any(_suppresses(corners[b, j], corners[b, i], iou) for j in kept):
                    kept.append(i)
            rows += [(b, k, i) for i in kept]
    return [np.array(rows, np.int64).reshape(-1, 3)]


def _nms_lower(attrs):
    options = NonMaxSuppressionOptionsT()
    options.centerPointBox = bool(attrs.get("center_point_box", False))
    options.maxOutputBoxesPerClass = int(attrs.get("max_output_boxes_per_class", 0))
    options.iouThreshold = float(attrs.get("iou_threshold", 0.0))
    score_threshold = attrs.get("score_threshold")
    options.hasScoreThreshold = score_threshold is not None
    options.scoreThreshold = float(score_threshold) if score_threshold is not None else 0.0
    return OpCode.NON_MAX_SUPPRESSION, OpOptions.NonMaxSuppressionOptions, options


def _nms_lift(o):
    return {"center_point_box": bool(o.centerPointBox), "max_output_boxes_per_class": int(o.maxOutputBoxesPerClass),
            "iou_threshold": float32_value(o.iouThreshold),
            "score_threshold": float32_value(o.scoreThreshold) if o.hasScoreThreshold else None}


register(OpDef(name="NonMaxSuppression", infer=_nms_infer, reference=_nms_reference, lower=_nms_lower,
               lift=_nms_lift, opcode=OpCode.NON_MAX_SUPPRESSION, flops=zero_flops, rows_set_at_eval=True))


# ---- RoiAlign ----

ROI_ALIGN_MODES = {"avg": RoiAlignMode.AVG, "max": RoiAlignMode.MAX}


def _roi_align_infer(types, attrs):
    op = "RoiAlign"
    need(op, types, 3)
    x, rois, indices = types
    if x.dtype != "float32" or rois.dtype != "float32":
        fail(op, f"x is {x.dtype} and rois {rois.dtype}; float32 only")
    if indices.dtype not in ("int32", "int64"):
        fail(op, f"batch indices are {indices.dtype}; expected int32 or int64")
    if x.rank != 4 or rois.rank != 2 or rois.shape[1] != 4 or indices.shape != (rois.shape[0],):
        fail(op, f"x {x.shape}, rois {rois.shape} and batch indices {indices.shape} must be 4-D, [R, 4] and [R]")
    if attrs.get("mode", "avg") not in ROI_ALIGN_MODES:
        fail(op, f"mode {attrs.get('mode')!r} is not one of {', '.join(ROI_ALIGN_MODES)}")
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    if oh < 1 or ow < 1 or int(attrs.get("sampling_ratio", 0)) < 0:
        fail(op, f"output {oh}x{ow} and sampling_ratio {attrs.get('sampling_ratio', 0)} must be positive")
    r = rois.shape[0]
    channels = x.shape[1] if layout_of(op, attrs) == "NCHW" else x.shape[3]
    shape = (r, channels, oh, ow) if layout_of(op, attrs) == "NCHW" else (r, oh, ow, channels)
    return [TensorType("float32", shape)]


def _bilinear_sample(image: np.ndarray, sy: np.float32, sx: np.float32, is_max: bool) -> np.ndarray:
    """onnxruntime's sample of image [H, W, C] at (sy, sx): 0 more than a pixel outside, else the
    four corners' bilinear weights (summed, or for max the largest weighted corner)."""
    f32 = np.float32
    height, width = image.shape[:2]
    if sy < -1.0 or sy > height or sx < -1.0 or sx > width:
        return np.zeros(image.shape[2], np.float32)
    sy, sx = max(sy, f32(0)), max(sx, f32(0))
    y0, x0 = int(sy), int(sx)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        sy = f32(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        sx = f32(x0)
    else:
        x1 = x0 + 1
    ly, lx = f32(sy - f32(y0)), f32(sx - f32(x0))
    hy, hx = f32(1) - ly, f32(1) - lx
    corners = [hy * hx * image[y0, x0], hy * lx * image[y0, x1], ly * hx * image[y1, x0], ly * lx * image[y1, x1]]
    if is_max:
        return np.maximum.reduce(corners).astype(np.float32)
    return (corners[0] + corners[1] + corners[2] + corners[3]).astype(np.float32)


def _roi_align_reference(inputs, attrs):
    """Per roi and bin, a grid of bilinear samples (float32, as the runtime and onnxruntime compute
    them), averaged or maxed."""
    x, rois, indices = inputs
    nhwc = x if layout_of("RoiAlign", attrs) == "NHWC" else np.transpose(x, (0, 2, 3, 1))
    f32 = np.float32
    oh, ow = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    ratio, scale = int(attrs.get("sampling_ratio", 0)), f32(attrs.get("spatial_scale", 1.0))
    half_pixel, is_max = bool(attrs.get("half_pixel", True)), attrs.get("mode", "avg") == "max"
    offset = f32(0.5) if half_pixel else f32(0)
    y = np.zeros((rois.shape[0], oh, ow, nhwc.shape[3]), np.float32)
    for r, roi in enumerate(np.asarray(rois, np.float32)):
        b = int(indices[r])
        if not 0 <= b < nhwc.shape[0]:
            fail("RoiAlign", f"batch index {b} of roi {r} is out of range for {nhwc.shape[0]} images")
        start_x, start_y = roi[0] * scale - offset, roi[1] * scale - offset
        w, h = roi[2] * scale - offset - start_x, roi[3] * scale - offset - start_y
        if not half_pixel:
            w, h = max(w, f32(1)), max(h, f32(1))
        bin_h, bin_w = f32(h / f32(oh)), f32(w / f32(ow))
        grid_h = ratio if ratio > 0 else max(int(np.ceil(h / f32(oh))), 0)
        grid_w = ratio if ratio > 0 else max(int(np.ceil(w / f32(ow))), 0)
        for ph in range(oh):
            for pw in range(ow):
                samples = [_bilinear_sample(nhwc[b],
                                            f32(start_y + f32(ph) * bin_h + f32(iy + 0.5) * bin_h / f32(grid_h)),
                                            f32(start_x + f32(pw) * bin_w + f32(ix + 0.5) * bin_w / f32(grid_w)), is_max)
                           for iy in range(grid_h) for ix in range(grid_w)]
                if not samples:
                    y[r, ph, pw] = np.finfo(np.float32).min if is_max else 0.0
                elif is_max:
                    y[r, ph, pw] = np.maximum.reduce(samples)
                else:
                    total = np.zeros(nhwc.shape[3], np.float32)
                    for s in samples:
                        total = total + s
                    y[r, ph, pw] = total / f32(len(samples))
    return [y if layout_of("RoiAlign", attrs) == "NHWC" else np.ascontiguousarray(np.transpose(y, (0, 3, 1, 2)))]


def _roi_align_lower(attrs):
    require_nhwc("RoiAlign", attrs)
    options = RoiAlignOptionsT()
    options.mode = ROI_ALIGN_MODES[attrs.get("mode", "avg")]
    options.outputHeight, options.outputWidth = int(attrs.get("output_height", 1)), int(attrs.get("output_width", 1))
    options.samplingRatio = int(attrs.get("sampling_ratio", 0))
    options.spatialScale = float(attrs.get("spatial_scale", 1.0))
    options.halfPixel = bool(attrs.get("half_pixel", True))
    return OpCode.ROI_ALIGN, OpOptions.RoiAlignOptions, options


def _roi_align_lift(o):
    return {"mode": {v: k for k, v in ROI_ALIGN_MODES.items()}[int(o.mode)], "output_height": int(o.outputHeight),
            "output_width": int(o.outputWidth), "sampling_ratio": int(o.samplingRatio),
            "spatial_scale": float32_value(o.spatialScale), "half_pixel": bool(o.halfPixel), "layout": "NHWC"}


register(OpDef(name="RoiAlign", infer=_roi_align_infer, reference=_roi_align_reference, lower=_roi_align_lower,
               lift=_roi_align_lift, opcode=OpCode.ROI_ALIGN, flops=zero_flops, layout_sensitive=True))

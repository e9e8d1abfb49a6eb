"""Detector post-processing: NonMaxSuppression.

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
from converter.ir import TensorType
from converter.ops import OpDef, register
from converter.ops._common import fail, float32_value, need, zero_flops


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

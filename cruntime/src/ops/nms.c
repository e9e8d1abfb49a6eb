/* NON_MAX_SUPPRESSION (ONNX NonMaxSuppression): boxes [B, N, 4], scores [B, C, N] float32 ->
 * selected int64 (or int32) [rows, 3] of (batch, class, box) triples, batch by batch, class by
 * class, each class's boxes in the order they were kept.
 *
 * Per (batch, class): the boxes scoring above score_threshold (all, without one) are taken best
 * first, ties by lower box index (onnxruntime's order); a box is kept unless its IoU with a box
 * already kept is above iou_threshold, until max_output_boxes_per_class are kept. Boxes are two
 * corners in either order ([y1, x1, y2, x2]) or, with center_point_box, [xc, yc, w, h]; IoU is
 * computed in float32 as onnxruntime does, and a box of zero area overlaps nothing.
 *
 * The row count depends on the data: prepare declares the most, B * C * min(max, N), which the
 * arena holds; eval writes the rows it keeps and sets the output's leading dim to their count
 * (node->rows_set_at_eval; allocate refuses a model where another op reads the output).
 * Scratch: per box its corners (4 floats) and one (score, index) pair for the sort, plus the kept
 * list. One thread: the greedy pass is sequential and the work is small next to a detector. */
#include <stdlib.h>

#include "tensor_access.h"
#include "ops.h"

typedef struct {
  float score;
  int32_t index;
} scored_box;

/* Scratch layout, from the start: corners[4 * N] floats, candidates[N], kept[N] int32. */
static size_t scratch_for(int64_t boxes) {
  return (size_t)boxes * (4 * sizeof(float) + sizeof(scored_box) + sizeof(int32_t));
}

static edge_status nms_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "NON_MAX_SUPPRESSION", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *boxes = edge_op_input(ctx, node, 0), *scores = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (boxes->dtype != EDGE_FLOAT32 || scores->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "NON_MAX_SUPPRESSION '%s': boxes '%s' are %s and scores '%s' %s; float32 only",
                     name, edge_tensor_name(boxes), edge_dtype_name(boxes->dtype), edge_tensor_name(scores),
                     edge_dtype_name(scores->dtype));
  if (y->dtype != EDGE_INT64 && y->dtype != EDGE_INT32)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "NON_MAX_SUPPRESSION '%s': output is %s, expected int64 or int32", name,
                     edge_dtype_name(y->dtype));
  if (boxes->rank != 3 || boxes->shape[2] != 4 || scores->rank != 3 || scores->shape[0] != boxes->shape[0] ||
      scores->shape[2] != boxes->shape[1]) {
    char box_shape[96], score_shape[96];
    edge_format_shape(box_shape, sizeof box_shape, boxes->rank, boxes->shape);
    edge_format_shape(score_shape, sizeof score_shape, scores->rank, scores->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "NON_MAX_SUPPRESSION '%s': boxes %s and scores %s must be [B, N, 4] and [B, C, N]", name,
                     box_shape, score_shape);
  }
  int64_t batches = boxes->shape[0], count = boxes->shape[1], classes = scores->shape[1];
  if (count > INT32_MAX)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "NON_MAX_SUPPRESSION '%s': %lld boxes; at most %d", name,
                     (long long)count, INT32_MAX);
  int64_t per_class = node->options.nms.max_output_boxes_per_class;
  if (per_class > count) per_class = count;
  int64_t shape[2] = {batches * classes * per_class, 3};
  node->scratch_bytes = scratch_for(count);
  node->rows_set_at_eval = true;
  return edge_set_shape(ctx, y, 2, shape);
}

static int better_first(const void *a, const void *b) {
  const scored_box *x = a, *y = b;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

/* Whether the boxes at corners a and b ([ymin, xmin, ymax, xmax]) overlap by more than threshold. */
static bool suppresses(const float *a, const float *b, float threshold) {
  float ymin = a[0] > b[0] ? a[0] : b[0], xmin = a[1] > b[1] ? a[1] : b[1];
  float ymax = a[2] < b[2] ? a[2] : b[2], xmax = a[3] < b[3] ? a[3] : b[3];
  if (ymin >= ymax || xmin >= xmax) return false;
  float intersection = (ymax - ymin) * (xmax - xmin);
  float area_a = (a[2] - a[0]) * (a[3] - a[1]), area_b = (b[2] - b[0]) * (b[3] - b[1]);
  float union_area = area_a + area_b - intersection;
  if (area_a <= 0.0f || area_b <= 0.0f || union_area <= 0.0f) return false;
  return intersection / union_area > threshold;
}

static edge_status nms_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *boxes = edge_op_input(ctx, node, 0), *scores = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  const edge_nms_options *o = &node->options.nms;
  int64_t batches = boxes->shape[0], count = boxes->shape[1], classes = scores->shape[1];
  int64_t per_class = o->max_output_boxes_per_class < count ? o->max_output_boxes_per_class : count;
  float *corners = node->scratch;
  scored_box *candidates = (scored_box *)(corners + 4 * count);
  int32_t *kept = (int32_t *)(candidates + count);
  int64_t rows = 0;
  for (int64_t b = 0; b < batches; ++b) {
    const float *box = (const float *)boxes->data + b * count * 4;
    for (int64_t i = 0; i < count; ++i) {
      const float *in = box + 4 * i;
      float *c = corners + 4 * i;
      if (o->center_point_box) {
        float half_w = in[2] / 2.0f, half_h = in[3] / 2.0f;
        c[0] = in[1] - half_h, c[1] = in[0] - half_w, c[2] = in[1] + half_h, c[3] = in[0] + half_w;
      } else {
        c[0] = in[0] < in[2] ? in[0] : in[2], c[2] = in[0] < in[2] ? in[2] : in[0];
        c[1] = in[1] < in[3] ? in[1] : in[3], c[3] = in[1] < in[3] ? in[3] : in[1];
      }
    }
    for (int64_t k = 0; k < classes; ++k) {
      const float *score = (const float *)scores->data + (b * classes + k) * count;
      int64_t n = 0, num_kept = 0;
      for (int64_t i = 0; i < count; ++i)
        if (!o->has_score_threshold || score[i] > o->score_threshold)
          candidates[n++] = (scored_box){score[i], (int32_t)i};
      qsort(candidates, (size_t)n, sizeof *candidates, better_first);
      for (int64_t i = 0; i < n && num_kept < per_class; ++i) {
        const float *c = corners + 4 * (int64_t)candidates[i].index;
        bool keep = true;
        for (int64_t j = 0; keep && j < num_kept; ++j)
          keep = !suppresses(corners + 4 * (int64_t)kept[j], c, o->iou_threshold);
        if (!keep) continue;
        kept[num_kept++] = candidates[i].index;
        int64_t triple[3] = {b, k, candidates[i].index};
        for (int32_t t = 0; t < 3; ++t) {
          if (y->dtype == EDGE_INT64) ((int64_t *)y->data)[rows * 3 + t] = triple[t];
          else ((int32_t *)y->data)[rows * 3 + t] = (int32_t)triple[t];
        }
        ++rows;
      }
    }
  }
  int64_t shape[2] = {rows, 3};
  return edge_set_shape(ctx, y, 2, shape);
}

const edge_op_registration edge_op_non_max_suppression = {nms_prepare, nms_eval, NULL};

/* CONCAT of int8 tensors: every input is brought to the output's params,
 *     y = clamp(zp_y + requantize(x - zp_x, m_i, shift_i)),  M_i = s_i / s_y,
 * and an input whose params equal the output's is copied byte for byte. concat_split.c has
 * already checked shapes and dtypes and set the output shape; this adds the params. The joined
 * tensor is [outer, axis * inner] rows; work is split over the outer rows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  int32_t zp_x, multiplier, shift;
  bool copy;
} qconcat_input;

typedef struct {
  int32_t axis, zp_y;
  int64_t outer, inner;
  qconcat_input inputs[]; /* one per node input */
} qconcat_plan;

void edge_qconcat_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  node->quantized = false;
}

edge_status edge_qconcat_prepare(edge_context *ctx, edge_node *node) {
  edge_qconcat_release(node);
  node->quantized = true;
  edge_tensor *y = edge_op_output(ctx, node, 0);
  char what[160];
  snprintf(what, sizeof what, "CONCAT '%s'", edge_tensor_name(y));
  edge_qparams yp;
  edge_status status = edge_q_tensor_params(ctx, what, y, false, &yp);
  if (status != EDGE_OK) return status;
  qconcat_plan *s = calloc(1, sizeof *s + (size_t)node->num_inputs * sizeof(qconcat_input));
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  node->plan = s;
  s->axis = node->options.axis.axis;
  edge_normalize_axis(&s->axis, y->rank);
  s->zp_y = yp.zero_point;
  s->outer = edge_num_elements(s->axis, y->shape);
  s->inner = edge_num_elements(y->rank - s->axis - 1, y->shape + s->axis + 1);
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    edge_tensor *x = edge_op_input(ctx, node, i);
    edge_qparams xp;
    if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
    qconcat_input *in = &s->inputs[i];
    in->zp_x = xp.zero_point;
    in->copy = edge_q_same_params(x, y);
    if (!in->copy &&
        (status = edge_q_multiplier(ctx, what, "input", (double)xp.scale / (double)yp.scale, &in->multiplier,
                                    &in->shift)) != EDGE_OK)
      return status;
  }
  return EDGE_OK;
}

typedef struct {
  edge_context *ctx;
  const edge_node *node;
  const qconcat_plan *s;
  int64_t y_row;
} qconcat_job;

static void qconcat_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qconcat_job *job = arg;
  const qconcat_plan *s = job->s;
  int8_t *y = edge_op_output(job->ctx, job->node, 0)->data;
  for (int64_t o = begin; o < end; ++o) {
    int64_t offset = 0;
    for (int32_t i = 0; i < job->node->num_inputs; ++i) {
      const edge_tensor *x = edge_op_input(job->ctx, job->node, i);
      int64_t x_row = x->shape[s->axis] * s->inner;
      const int8_t *src = (const int8_t *)x->data + o * x_row;
      int8_t *dst = y + o * job->y_row + offset;
      const qconcat_input *in = &s->inputs[i];
      if (in->copy) {
        if (x_row) memcpy(dst, src, (size_t)x_row);
      } else {
        for (int64_t k = 0; k < x_row; ++k)
          dst[k] = (int8_t)edge_q_requantize_clamp((int32_t)src[k] - in->zp_x, in->multiplier, in->shift, s->zp_y,
                                                   -128, 127);
      }
      offset += x_row;
    }
  }
}

edge_status edge_qconcat_eval(edge_context *ctx, edge_node *node) {
  const qconcat_plan *s = node->plan;
  edge_tensor *y = edge_op_output(ctx, node, 0);
  if (edge_num_elements(y->rank, y->shape) == 0) return EDGE_OK;
  qconcat_job job = {ctx, node, s, y->shape[s->axis] * s->inner};
  edge_nd_parallel(ctx, s->outer, 1 + 16384 / (job.y_row + 1), qconcat_rows, &job);
  return EDGE_OK;
}

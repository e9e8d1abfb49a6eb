/* SOFTMAX over one axis on int8 tensors. The output params are fixed: scale 1/256, zero point
 * -128 (so [0, 1) maps onto the whole int8 range). For each softmax row:
 *     d = max_q - x_q                                   (an integer in [0, 255])
 *     LUT[d] = llround(exp(-d * s_x) * 2^16)            (256 entries, in double, at prepare)
 *     sum = sum over the row of LUT[d]                  (int64; >= 2^16 since the max has d = 0)
 *     y = clamp(-128 + floor((LUT[d] * 512 + sum) / (2 * sum)), -128, 127)
 * i.e. LUT * 256 / sum rounded half up, with integer division only. Rows are (outer, inner)
 * pairs with `length` elements `inner` apart; each is done by one thread. Above EDGE_ISA_SCALAR,
 * contiguous rows (inner 1) of at most EDGE_S8_SOFTMAX_MAX_LENGTH go to the vector family's
 * s8_softmax kernel, which computes the same integers without a division per element. */
#include <stdio.h>
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  int64_t outer, length, inner;
  int64_t lut[256];
  int32_t lut32[256];          /* the same values (<= 65536), for the vector kernel */
  edge_s8_softmax_ukernel row; /* NULL: the loops below */
} qsoftmax_plan;

void edge_qsoftmax_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  node->quantized = false;
}

edge_status edge_qsoftmax_prepare(edge_context *ctx, edge_node *node) {
  edge_qsoftmax_release(node);
  node->quantized = true;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  char what[160];
  snprintf(what, sizeof what, "SOFTMAX '%s'", edge_tensor_name(y));
  if (node->options.softmax.log)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: log-softmax has no int8 kernel", what);
  if (node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: a fused activation on an int8 softmax is not supported", what);
  edge_qparams xp, yp;
  edge_status status;
  if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  if (yp.scale != 1.0f / 256.0f || yp.zero_point != -128)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: an int8 softmax output must have scale 1/256 and zero point -128; '%s' has %g and %d", what,
                     edge_tensor_name(y), (double)yp.scale, yp.zero_point);
  int32_t axis = node->options.softmax.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: axis %d is out of range for input '%s' of rank %d", what,
                     node->options.softmax.axis, edge_tensor_name(x), x->rank);
  if ((status = edge_set_shape(ctx, y, x->rank, x->shape)) != EDGE_OK) return status;
  qsoftmax_plan *s = malloc(sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  node->plan = s;
  s->outer = edge_num_elements(axis, x->shape);
  s->length = x->shape[axis];
  s->inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  if (s->length > ((int64_t)1 << 40))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: rows of %lld elements are too long", what, (long long)s->length);
  for (int32_t d = 0; d < 256; ++d) {
    s->lut[d] = llround(exp(-(double)d * (double)xp.scale) * 65536.0);
    s->lut32[d] = (int32_t)s->lut[d];
  }
  s->row = s->inner == 1 && s->length <= EDGE_S8_SOFTMAX_MAX_LENGTH ? edge_kernels()->vector.s8_softmax : NULL;
  return EDGE_OK;
}

typedef struct {
  const qsoftmax_plan *s;
  const int8_t *x;
  int8_t *y;
} qsoftmax_job;

static void qsoftmax_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qsoftmax_job *job = arg;
  const qsoftmax_plan *s = job->s;
  if (s->row) {
    for (int64_t r = begin; r < end; ++r)
      s->row((size_t)s->length, job->x + r * s->length, job->y + r * s->length, s->lut32);
    return;
  }
  for (int64_t r = begin; r < end; ++r) {
    int64_t o = r / s->inner, i = r % s->inner, step = s->inner;
    const int8_t *x = job->x + o * s->length * s->inner + i;
    int8_t *y = job->y + o * s->length * s->inner + i;
    int32_t max = -128;
    for (int64_t k = 0; k < s->length; ++k) max = x[k * step] > max ? x[k * step] : max;
    int64_t sum = 0;
    for (int64_t k = 0; k < s->length; ++k) sum += s->lut[max - x[k * step]];
    for (int64_t k = 0; k < s->length; ++k) {
      int64_t q = (s->lut[max - x[k * step]] * 512 + sum) / (2 * sum);
      y[k * step] = (int8_t)edge_clamp_int64(-128 + q, -128, 127);
    }
  }
}

edge_status edge_qsoftmax_eval(edge_context *ctx, edge_node *node) {
  const qsoftmax_plan *s = node->plan;
  if (s->length == 0) return EDGE_OK;
  qsoftmax_job job = {s, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, s->outer * s->inner, 1 + 4096 / (s->length + 1), qsoftmax_rows, &job);
  return EDGE_OK;
}

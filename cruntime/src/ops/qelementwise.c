/* BINARY ADD, SUB and MUL on int8 tensors with numpy broadcasting, per-tensor params a, b, y.
 *
 *   ADD/SUB: one shared shift s (requant.h's edge_quantize_add_multipliers: the largest s <= 62
 *            with llround(max(Ma, Mb) * 2^s) < 2^31), ma = llround(s_a / s_y * 2^s), mb likewise
 *            (negated for SUB):
 *            y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(s-1)) >> s))
 *   MUL:     y = clamp(zp_y + requantize((a - zp_a) * (b - zp_b), m, shift)), M = s_a * s_b / s_y
 *
 * The clamp is the output range narrowed by a fused RELU / RELU6 / CLIP. The space is walked
 * with the strided iterator (broadcast.h) in runs along the innermost dimension; work is split
 * over linear ranges of the output, so any thread count gives the same bytes. */
#include <stdio.h>
#include <stdlib.h>

#include "../kernels/config.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  edge_nd_iter iter;
  bool multiply;
  int32_t zp_a, zp_b, zp_y, lo, hi;
  int32_t ma, mb, shift;   /* ADD/SUB: the two multipliers and the shared shift; MUL: m in ma */
  edge_s8_vadd_params vadd; /* ADD/SUB: the same numbers for the vector kernel */
  edge_s8_vadd_ukernel vadd_kernel; /* NULL: scalar path (EDGE_ISA=scalar, MUL) */
} qbinary_plan;

void edge_qbinary_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  node->quantized = false;
}

edge_status edge_qbinary_prepare(edge_context *ctx, edge_node *node) {
  edge_qbinary_release(node);
  node->quantized = true;
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_binary_kind op = node->options.binary.op;
  char what[160];
  snprintf(what, sizeof what, "BINARY %s '%s'", edge_binary_names[op], edge_tensor_name(y));
  if (op != EDGE_BINARY_ADD && op != EDGE_BINARY_SUB && op != EDGE_BINARY_MUL)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: int8 inputs are supported for ADD, SUB and MUL only", what);
  edge_qparams ap, bp, yp;
  edge_status status;
  if ((status = edge_q_tensor_params(ctx, what, a, false, &ap)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, b, false, &bp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  int32_t rank;
  int64_t shape[EDGE_MAX_RANK];
  if ((status = edge_broadcast_shape(ctx, a, b, &rank, shape)) != EDGE_OK) return status;
  if ((status = edge_set_shape(ctx, y, rank, shape)) != EDGE_OK) return status;
  qbinary_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  node->plan = s;
  s->zp_a = ap.zero_point;
  s->zp_b = bp.zero_point;
  s->zp_y = yp.zero_point;
  if ((status = edge_q_activation_range(ctx, what, y, &yp, &node->activation, &s->lo, &s->hi)) != EDGE_OK)
    return status;
  s->multiply = op == EDGE_BINARY_MUL;
  if (s->multiply) {
    double real = (double)ap.scale * (double)bp.scale / (double)yp.scale;
    if ((status = edge_q_multiplier(ctx, what, "product", real, &s->ma, &s->shift)) != EDGE_OK) return status;
  } else {
    double real_a = (double)ap.scale / (double)yp.scale, real_b = (double)bp.scale / (double)yp.scale;
    if (!edge_quantize_add_multipliers(real_a, real_b, &s->ma, &s->mb, &s->shift))
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s: input/output scale ratios %g and %g have no fixed-point form (each must be < 2^30)", what,
                       real_a, real_b);
    if (op == EDGE_BINARY_SUB) s->mb = -s->mb;
  }
  if (!s->multiply) {
    s->vadd = (edge_s8_vadd_params){s->zp_a, s->zp_b, s->zp_y, s->lo, s->hi, s->ma, s->mb, s->shift};
    s->vadd_kernel = edge_kernels()->vector.s8_vadd;
  }
  int64_t y_strides[EDGE_MAX_RANK], a_strides[EDGE_MAX_RANK], b_strides[EDGE_MAX_RANK];
  edge_nd_contiguous_strides(rank, shape, y_strides);
  edge_nd_broadcast_strides(rank, shape, a->rank, a->shape, a_strides);
  edge_nd_broadcast_strides(rank, shape, b->rank, b->shape, b_strides);
  const int64_t *strides[3] = {y_strides, a_strides, b_strides};
  edge_nd_iter_init(&s->iter, rank, shape, 3, strides);
  return EDGE_OK;
}

typedef struct {
  const qbinary_plan *s;
  const int8_t *a, *b;
  int8_t *y;
} qbinary_job;

static void qbinary_run(void *arg, const int64_t *offsets, int64_t count) {
  const qbinary_job *job = arg;
  const qbinary_plan *s = job->s;
  int32_t last = s->iter.rank - 1;
  int64_t sy = s->iter.strides[0][last], sa = s->iter.strides[1][last], sb = s->iter.strides[2][last];
  const int8_t *a = job->a + offsets[1], *b = job->b + offsets[2];
  int8_t *y = job->y + offsets[0];
  if (s->multiply) {
    for (int64_t i = 0; i < count; ++i) {
      int32_t product = ((int32_t)a[i * sa] - s->zp_a) * ((int32_t)b[i * sb] - s->zp_b);
      y[i * sy] = (int8_t)edge_q_requantize_clamp(product, s->ma, s->shift, s->zp_y, s->lo, s->hi);
    }
    return;
  }
  if (s->vadd_kernel && sa == 1 && sb == 1 && sy == 1) {
    s->vadd_kernel((size_t)count, a, b, y, &s->vadd);
    return;
  }
  const int64_t rounding = (int64_t)1 << (s->shift - 1);
  for (int64_t i = 0; i < count; ++i) {
    int64_t sum = (int64_t)((int32_t)a[i * sa] - s->zp_a) * s->ma + (int64_t)((int32_t)b[i * sb] - s->zp_b) * s->mb;
    y[i * sy] = (int8_t)edge_clamp_int64(s->zp_y + ((sum + rounding) >> s->shift), s->lo, s->hi);
  }
}

static void qbinary_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qbinary_job *job = arg;
  edge_nd_iter_runs(&job->s->iter, begin, end, qbinary_run, arg);
}

edge_status edge_qbinary_eval(edge_context *ctx, edge_node *node) {
  qbinary_job job = {node->plan, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                     edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, job.s->iter.total, 16384, qbinary_range, &job);
  return EDGE_OK;
}

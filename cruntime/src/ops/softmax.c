/* SOFTMAX (and log-softmax with `log`), float32 scalar reference over one axis (ONNX opset 13).
 *
 * The tensor is outer x axis x inner; each (outer, inner) pair is one independent softmax over
 * `axis` elements spaced `inner` apart. The maximum is subtracted before exp so large inputs do
 * not overflow; the sum accumulates in double. Work is split over the (outer, inner) pairs, each
 * done by one thread, so results do not depend on the thread count. A fused activation, if the
 * model sets one, is applied to the result.
 *
 * Above EDGE_ISA_SCALAR the vector family (kernels/vector.h) does the work: a row kernel when the
 * axis is innermost, else a column kernel over the run of (outer, inner) pairs a thread owns that
 * share one outer index (each column computed alone, so any split gives the same values). Its
 * error against this reference is stated in kernels/vector/f32-softmax.c. */
#include <math.h>
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  bool log;
  int64_t outer, length, inner;
} softmax_plan;

static void softmax_release(edge_node *node);

static edge_status softmax_prepare(edge_context *ctx, edge_node *node) {
  softmax_release(node);
  edge_status status = edge_op_check_arity(ctx, node, "SOFTMAX", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (edge_q_is_int8(x)) return edge_qsoftmax_prepare(ctx, node);
  const char *name = edge_tensor_name(y);
  if (x->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "SOFTMAX '%s': input is %s and output %s; only float32 is supported", name,
                     edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  int32_t axis = node->options.softmax.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "SOFTMAX '%s': axis %d is out of range for input '%s' of rank %d", name,
                     node->options.softmax.axis, edge_tensor_name(x), x->rank);
  if ((status = edge_set_shape(ctx, y, x->rank, x->shape)) != EDGE_OK) return status;
  softmax_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "SOFTMAX '%s': out of memory", name);
  plan->log = node->options.softmax.log;
  plan->outer = edge_num_elements(axis, x->shape);
  plan->length = x->shape[axis];
  plan->inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  node->plan = plan;
  return EDGE_OK;
}

typedef struct {
  const softmax_plan *plan;
  const edge_activation *activation;
  const float *x;
  float *y;
} softmax_job;

static bool softmax_vector_range(const softmax_job *job, int64_t begin, int64_t end) {
  const edge_vector_kernels *v = &edge_kernels()->vector;
  const softmax_plan *p = job->plan;
  if (!v->softmax || p->length == 0) return false;
  if (p->inner == 1) {
    for (int64_t row = begin; row < end; ++row) {
      const float *x = job->x + row * p->length;
      float *y = job->y + row * p->length;
      (p->log ? v->log_softmax : v->softmax)((size_t)p->length, x, y);
      edge_activation_apply(job->activation, y, (size_t)p->length);
    }
    return true;
  }
  for (int64_t unit = begin; unit < end;) {
    int64_t outer = unit / p->inner, column = unit % p->inner;
    int64_t columns = p->inner - column < end - unit ? p->inner - column : end - unit;
    int64_t base = outer * p->length * p->inner + column;
    v->softmax_strided((size_t)p->length, (size_t)columns, (size_t)p->inner, job->x + base, job->y + base, p->log);
    if (job->activation->op != EDGE_UNARY_IDENTITY)
      for (int64_t i = 0; i < p->length; ++i)
        edge_activation_apply(job->activation, job->y + base + i * p->inner, (size_t)columns);
    unit += columns;
  }
  return true;
}

static void softmax_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const softmax_job *job = arg;
  const softmax_plan *p = job->plan;
  if (softmax_vector_range(job, begin, end)) return;
  int64_t n = p->length, step = p->inner;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t base = unit / p->inner * p->length * p->inner + unit % p->inner;
    const float *x = job->x + base;
    float *y = job->y + base;
    float max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) max = x[i * step] > max || x[i * step] != x[i * step] ? x[i * step] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      float e = expf(x[i * step] - max);
      sum += e;
      if (!p->log) y[i * step] = e;
    }
    if (p->log) {
      float log_sum = (float)log(sum);
      for (int64_t i = 0; i < n; ++i) y[i * step] = (x[i * step] - max) - log_sum;
    } else {
      float total = (float)sum;
      for (int64_t i = 0; i < n; ++i) y[i * step] = y[i * step] / total;
    }
    if (job->activation->op != EDGE_UNARY_IDENTITY)
      for (int64_t i = 0; i < n; ++i) edge_activation_apply(job->activation, y + i * step, 1);
  }
}

static edge_status softmax_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qsoftmax_eval(ctx, node);
  const softmax_plan *p = node->plan;
  softmax_job job = {p, &node->activation, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, p->outer * p->inner, 1 + 8192 / (p->length + 1), softmax_range, &job);
  return EDGE_OK;
}

static void softmax_release(edge_node *node) {
  if (node->quantized) {
    edge_qsoftmax_release(node);
    return;
  }
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_softmax = {softmax_prepare, softmax_eval, softmax_release};

/* DET (ONNX Det): x [..., n, n] float32 -> y [...], each matrix's determinant, by Gaussian
 * elimination with partial pivoting in double (the largest magnitude in the column is the pivot),
 * rounded to float32 once. An all-zero pivot column gives 0; NaN and infinities propagate through
 * the arithmetic. Each matrix is copied to its thread's n x n doubles of the node's scratch first,
 * so x is only read. Work is split over the matrices. */
#include <math.h>

#include "broadcast.h"
#include "ops.h"

static edge_status det_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "DET", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (x->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "DET '%s': x '%s' is %s; float32 only", edge_tensor_name(y),
                     edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (x->rank < 2 || x->shape[x->rank - 1] != x->shape[x->rank - 2]) {
    char xs[96];
    edge_format_shape(xs, sizeof xs, x->rank, x->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "DET '%s': x '%s' is %s; it must be [..., n, n]", edge_tensor_name(y),
                     edge_tensor_name(x), xs);
  }
  int64_t n = x->shape[x->rank - 1];
  if (n > 4096)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "DET '%s': %lld x %lld matrices; at most 4096 x 4096", edge_tensor_name(y),
                     (long long)n, (long long)n);
  int32_t threads = ctx->num_threads > 0 ? ctx->num_threads : 1;
  node->scratch_bytes = (size_t)threads * (size_t)(n * n) * sizeof(double);
  return edge_set_shape(ctx, y, x->rank - 2, x->shape);
}

typedef struct {
  int64_t n;
  const float *x;
  float *y;
  double *scratch;
} det_job;

static double determinant(double *a, int64_t n) {
  double det = 1.0;
  for (int64_t k = 0; k < n; ++k) {
    int64_t pivot = k;
    for (int64_t i = k + 1; i < n; ++i)
      if (fabs(a[i * n + k]) > fabs(a[pivot * n + k])) pivot = i;
    if (a[pivot * n + k] == 0.0) return 0.0;
    if (pivot != k) {
      for (int64_t j = k; j < n; ++j) {
        double t = a[k * n + j];
        a[k * n + j] = a[pivot * n + j];
        a[pivot * n + j] = t;
      }
      det = -det;
    }
    double p = a[k * n + k];
    det *= p;
    for (int64_t i = k + 1; i < n; ++i) {
      double f = a[i * n + k] / p;
      for (int64_t j = k + 1; j < n; ++j) a[i * n + j] -= f * a[k * n + j];
    }
  }
  return det;
}

static void det_matrices(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const det_job *job = arg;
  int64_t n = job->n, size = n * n;
  if (size == 0) {
    for (int64_t m = begin; m < end; ++m) job->y[m] = 1.0f; /* the empty product */
    return;
  }
  double *a = job->scratch + (size_t)thread * (size_t)size;
  for (int64_t m = begin; m < end; ++m) {
    const float *x = job->x + m * size;
    for (int64_t i = 0; i < size; ++i) a[i] = x[i];
    job->y[m] = (float)determinant(a, n);
  }
}

static edge_status det_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  det_job job = {x->shape[x->rank - 1], x->data, y->data, node->scratch};
  int64_t count = edge_num_elements(y->rank, y->shape);
  if (count) edge_nd_parallel(ctx, count, 1, det_matrices, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_det = {det_prepare, det_eval, NULL};

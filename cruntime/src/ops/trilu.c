/* TRILU (ONNX Trilu): over the last two axes [i, j] of x, keeps the elements with j - i >= k (upper)
 * or j - i <= k (lower) and zeroes the rest; leading axes are a batch of matrices. Any dtype: every
 * row is one kept run copied and one zero run cleared (all-zero bytes are 0, 0.0f and false alike),
 * so the op is two memory passes whatever k is. k is any int64: past either edge the row is all
 * kept or all zero, clamped here rather than by the converter so an untrusted k cannot overflow. */
#include <string.h>

#include "broadcast.h"
#include "ops.h"

typedef struct {
  const char *x;
  char *y;
  int64_t rows, cols; /* of one matrix */
  int64_t k;
  bool upper;
  size_t size;
} trilu_job;

/* The kept columns of row i: [begin, end). */
static void kept_columns(const trilu_job *job, int64_t i, int64_t *begin, int64_t *end) {
  int64_t n = job->cols, k = job->k;
  /* i + k cannot overflow: rows <= 2^62 and k is clamped to [-rows - 1, cols + 1] by trilu_eval. */
  int64_t edge = i + k;
  if (job->upper) {
    *begin = edge < 0 ? 0 : edge > n ? n : edge;
    *end = n;
  } else {
    *begin = 0;
    *end = edge + 1 < 0 ? 0 : edge + 1 > n ? n : edge + 1;
  }
}

static void trilu_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const trilu_job *job = arg;
  size_t row_bytes = (size_t)job->cols * job->size;
  for (int64_t r = begin; r < end; ++r) {
    int64_t first, last;
    kept_columns(job, r % job->rows, &first, &last);
    const char *src = job->x + (size_t)r * row_bytes;
    char *dst = job->y + (size_t)r * row_bytes;
    memset(dst, 0, (size_t)first * job->size);
    if (last > first) memcpy(dst + (size_t)first * job->size, src + (size_t)first * job->size,
                             (size_t)(last - first) * job->size);
    memset(dst + (size_t)last * job->size, 0, (size_t)(job->cols - last) * job->size);
  }
}

static edge_status trilu_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "TRILU", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (x->rank < 2)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TRILU '%s': input '%s' has rank %d; it needs rank >= 2",
                     edge_tensor_name(y), edge_tensor_name(x), x->rank);
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TRILU '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

static edge_status trilu_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int64_t cols = x->shape[x->rank - 1], rows = x->shape[x->rank - 2];
  int64_t total_rows = edge_num_elements(x->rank - 1, x->shape);
  if (total_rows == 0 || cols == 0) return EDGE_OK;
  int64_t k = node->options.trilu.k;
  if (k > cols + 1) k = cols + 1;
  if (k < -rows - 1) k = -rows - 1;
  trilu_job job = {x->data, y->data, rows, cols, k, node->options.trilu.upper, edge_dtype_size(x->dtype)};
  int64_t rows_per_tile = 16384 / cols > 1 ? 16384 / cols : 1;
  edge_nd_parallel(ctx, total_rows, rows_per_tile, trilu_rows, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_trilu = {trilu_prepare, trilu_eval, NULL};

/* WHERE: y = cond ? a : b with cond, a and b broadcast together; any dtype, copied by size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"

typedef struct {
  const edge_nd_iter *iter; /* operands: y, cond, a, b */
  const uint8_t *cond;
  const char *a, *b;
  char *y;
  size_t size;
} where_job;

static void where_run(void *arg, const int64_t *offsets, int64_t n) {
  const where_job *job = arg;
  int32_t inner = job->iter->rank - 1;
  int64_t sc = job->iter->strides[1][inner], sa = job->iter->strides[2][inner], sb = job->iter->strides[3][inner];
  const uint8_t *cond = job->cond + offsets[1];
  const char *a = job->a + offsets[2] * (int64_t)job->size, *b = job->b + offsets[3] * (int64_t)job->size;
  char *y = job->y + offsets[0] * (int64_t)job->size;
  switch (job->size) {
#define EDGE_WHERE_CASE(size)                                                                        \
  case size:                                                                                         \
    for (int64_t i = 0; i < n; ++i)                                                                  \
      memcpy(y + i * size, cond[i * sc] ? a + i * sa * size : b + i * sb * size, size);              \
    return;
    EDGE_WHERE_CASE(1)
    EDGE_WHERE_CASE(2)
    EDGE_WHERE_CASE(4)
    EDGE_WHERE_CASE(8)
#undef EDGE_WHERE_CASE
    default: return;
  }
}

static void where_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  where_job *job = arg;
  edge_nd_iter_runs(job->iter, begin, end, where_run, job);
}

static edge_status where_prepare(edge_context *ctx, edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "WHERE", 3, 3, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *cond = edge_op_input(ctx, node, 0), *a = edge_op_input(ctx, node, 1), *b = edge_op_input(ctx, node, 2);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  if (cond->dtype != EDGE_BOOL)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "WHERE '%s': condition '%s' is %s, expected bool", edge_tensor_name(y),
                     edge_tensor_name(cond), edge_dtype_name(cond->dtype));
  if (a->dtype != b->dtype || y->dtype != a->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "WHERE '%s': a '%s' is %s, b '%s' is %s, output is %s; all must match",
                     edge_tensor_name(y), edge_tensor_name(a), edge_dtype_name(a->dtype), edge_tensor_name(b),
                     edge_dtype_name(b->dtype), edge_dtype_name(y->dtype));
  int32_t ranks[3] = {cond->rank, a->rank, b->rank}, rank;
  const int64_t *shapes[3] = {cond->shape, a->shape, b->shape};
  int64_t shape[EDGE_MAX_RANK];
  char what[160];
  snprintf(what, sizeof what, "WHERE '%s'", edge_tensor_name(y));
  status = edge_nd_broadcast_shapes(ctx, what, 3, ranks, shapes, &rank, shape);
  if (status != EDGE_OK) return status;
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  edge_nd_iter *iter = malloc(sizeof *iter);
  if (!iter) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "WHERE '%s': out of memory", edge_tensor_name(y));
  int64_t strides[4][EDGE_MAX_RANK];
  edge_nd_contiguous_strides(rank, shape, strides[0]);
  for (int32_t k = 0; k < 3; ++k) edge_nd_broadcast_strides(rank, shape, ranks[k], shapes[k], strides[k + 1]);
  const int64_t *stride_list[4] = {strides[0], strides[1], strides[2], strides[3]};
  edge_nd_iter_init(iter, rank, shape, 4, stride_list);
  node->plan = iter;
  return EDGE_OK;
}

static edge_status where_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *cond = edge_op_input(ctx, node, 0), *a = edge_op_input(ctx, node, 1), *b = edge_op_input(ctx, node, 2);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  where_job job = {node->plan, cond->data, a->data, b->data, y->data, edge_dtype_size(y->dtype)};
  edge_nd_parallel(ctx, job.iter->total, 16384, where_range, &job);
  return EDGE_OK;
}

static void where_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_where = {where_prepare, where_eval, where_release};

/* TRANSPOSE: y[i0..in] = x[permuted], any dtype. The output is walked contiguously while x is read
 * through permuted strides; collapsing merges dimensions that stay adjacent under the permutation,
 * so e.g. NHWC -> NCHW becomes a 3-d walk. */
#include <stdlib.h>

#include "broadcast.h"
#include "ops.h"

static edge_status transpose_prepare(edge_context *ctx, edge_node *node) {
  free(node->state);
  node->state = NULL;
  edge_status status = edge_nd_check_arity(ctx, node, "TRANSPOSE", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_nd_input(ctx, node, 0), *y = edge_nd_output(ctx, node, 0);
  const edge_transpose_options *options = &node->options.transpose;
  int32_t rank = x->rank, perm[EDGE_MAX_RANK];
  if (options->rank == 0) { /* ONNX's default: reverse the dimensions */
    for (int32_t d = 0; d < rank; ++d) perm[d] = rank - 1 - d;
  } else {
    if (options->rank != rank)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "TRANSPOSE '%s': perm has %d entries but input '%s' has rank %d",
                       edge_nd_name(y), options->rank, edge_nd_name(x), rank);
    bool seen[EDGE_MAX_RANK] = {false};
    for (int32_t d = 0; d < rank; ++d) {
      int32_t p = options->perm[d];
      if (p < 0 || p >= rank || seen[p])
        return edge_fail(ctx, EDGE_INVALID_MODEL,
                         "TRANSPOSE '%s': perm entry %d is %d, not a permutation of 0..%d", edge_nd_name(y), d, p,
                         rank - 1);
      seen[p] = true;
      perm[d] = p;
    }
  }
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TRANSPOSE '%s': output is %s but input '%s' is %s", edge_nd_name(y),
                     edge_dtype_name(y->dtype), edge_nd_name(x), edge_dtype_name(x->dtype));
  int64_t shape[EDGE_MAX_RANK], x_strides[EDGE_MAX_RANK], y_strides[EDGE_MAX_RANK], read_strides[EDGE_MAX_RANK];
  for (int32_t d = 0; d < rank; ++d) shape[d] = x->shape[perm[d]];
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  edge_nd_iter *iter = malloc(sizeof *iter);
  if (!iter) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "TRANSPOSE '%s': out of memory", edge_nd_name(y));
  edge_nd_contiguous_strides(rank, x->shape, x_strides);
  edge_nd_contiguous_strides(rank, shape, y_strides);
  for (int32_t d = 0; d < rank; ++d) read_strides[d] = x_strides[perm[d]];
  const int64_t *strides[2] = {y_strides, read_strides};
  edge_nd_iter_init(iter, rank, shape, 2, strides);
  node->state = iter;
  return EDGE_OK;
}

static edge_status transpose_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_nd_input(ctx, node, 0), *y = edge_nd_output(ctx, node, 0);
  edge_nd_copy(ctx, node->state, y->data, x->data, edge_dtype_size(x->dtype));
  return EDGE_OK;
}

static void transpose_release(edge_node *node) {
  free(node->state);
  node->state = NULL;
}

const edge_op_registration edge_op_transpose = {transpose_prepare, transpose_eval, transpose_release};

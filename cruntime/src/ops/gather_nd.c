/* GATHER_ND (ONNX GatherND): with b = batch_dims and k = the last dim of indices, each index tuple
 * indices[B..., J..., :] picks the slice x[B..., i0, .., ik-1, ...] (negative entries count from the
 * end of their dim); y has shape indices.shape[:-1] + x.shape[b + k:]. Any data dtype, copied by
 * size; int32 or int64 indices. Indices are data, so eval checks every entry against its dim and
 * stops with EDGE_RUNTIME_ERROR instead of reading outside x. */
#include <string.h>

#include "tensor_access.h"
#include "ops.h"

static int64_t index_at(const edge_tensor *indices, int64_t i) {
  return indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[i] : ((const int64_t *)indices->data)[i];
}

static edge_status gather_nd_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "GATHER_ND", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER_ND '%s': indices '%s' are %s, expected int32 or int64", name,
                     edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER_ND '%s': output is %s but data '%s' is %s", name,
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int32_t b = node->options.gather_nd.batch_dims, r = x->rank, q = indices->rank;
  if (q < 1 || b < 0 || b >= q || b >= r)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "GATHER_ND '%s': batch_dims %d must be below the ranks of data '%s' (%d) and indices '%s' (%d)",
                     name, b, edge_tensor_name(x), r, edge_tensor_name(indices), q);
  int64_t k = indices->shape[q - 1];
  if (k < 1 || k > r - b)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "GATHER_ND '%s': index tuples of %lld entries do not fit data '%s' of rank %d past %d batch dims",
                     name, (long long)k, edge_tensor_name(x), r, b);
  for (int32_t d = 0; d < b; ++d)
    if (indices->shape[d] != x->shape[d])
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "GATHER_ND '%s': batch dim %d is %lld in indices '%s' but %lld in data '%s'", name, d,
                       (long long)indices->shape[d], edge_tensor_name(indices), (long long)x->shape[d], edge_tensor_name(x));
  int32_t rank = q - 1 + r - b - (int32_t)k;
  if (rank > EDGE_MAX_RANK)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "GATHER_ND '%s': output rank %d exceeds %d", name, rank, EDGE_MAX_RANK);
  int64_t shape[EDGE_MAX_RANK];
  int32_t n = 0;
  for (int32_t d = 0; d < q - 1; ++d) shape[n++] = indices->shape[d];
  for (int32_t d = b + (int32_t)k; d < r; ++d) shape[n++] = x->shape[d];
  return edge_set_shape(ctx, y, rank, shape);
}

static edge_status gather_nd_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  int32_t b = node->options.gather_nd.batch_dims, r = x->rank, q = indices->rank;
  int64_t k = indices->shape[q - 1];
  int64_t batches = edge_num_elements(b, x->shape);
  int64_t tuples = edge_num_elements(q - 1 - b, indices->shape + b); /* per batch */
  int64_t slice = edge_num_elements(r - b - (int32_t)k, x->shape + b + k);
  int64_t batch_stride = edge_num_elements(r - b, x->shape + b);
  size_t size = edge_dtype_size(x->dtype);
  const char *src = x->data;
  char *dst = y->data;
  for (int64_t batch = 0; batch < batches; ++batch) {
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t tuple = batch * tuples + t, offset = 0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t dim = x->shape[b + j], index = index_at(indices, tuple * k + j);
        if (index < -dim || index >= dim)
          return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                           "GATHER_ND '%s': index %lld (entry %lld of tuple %lld in '%s') is out of range for dim "
                           "%lld of '%s', which has %lld entries", edge_tensor_name(y), (long long)index, (long long)j,
                           (long long)tuple, edge_tensor_name(indices), (long long)(b + j), edge_tensor_name(x),
                           (long long)dim);
        offset = offset * dim + (index < 0 ? index + dim : index);
      }
      offset = batch * batch_stride + offset * slice;
      if (slice) memcpy(dst + (size_t)(tuple * slice) * size, src + (size_t)offset * size, (size_t)slice * size);
    }
  }
  return EDGE_OK;
}

const edge_op_registration edge_op_gather_nd = {gather_nd_prepare, gather_nd_eval, NULL};

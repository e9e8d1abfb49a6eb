/* GATHER and GATHER_ELEMENTS (ONNX semantics), any data dtype, int32 or int64 indices; negative
 * indices count from the end. Indices are data, so eval checks every one against its bound and
 * stops with EDGE_RUNTIME_ERROR instead of reading outside x. */
#include <string.h>

#include "broadcast.h"
#include "ops.h"

static int64_t index_at(const edge_tensor *indices, int64_t i) {
  return indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[i] : ((const int64_t *)indices->data)[i];
}

static edge_status check_index_dtype(edge_context *ctx, const char *op, const edge_tensor *y,
                                     const edge_tensor *indices) {
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': indices '%s' are %s, expected int32 or int64", op,
                     edge_tensor_name(y), edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  return EDGE_OK;
}

static edge_status gather_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "GATHER", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  if ((status = check_index_dtype(ctx, "GATHER", y, indices)) != EDGE_OK) return status;
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER '%s': output is %s but data '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int32_t axis = node->options.axis.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER '%s': axis %d is out of range for data '%s' of rank %d",
                     edge_tensor_name(y), node->options.axis.axis, edge_tensor_name(x), x->rank);
  int32_t rank = x->rank - 1 + indices->rank;
  if (rank > EDGE_MAX_RANK)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "GATHER '%s': output rank %d exceeds %d", edge_tensor_name(y), rank,
                     EDGE_MAX_RANK);
  int64_t shape[EDGE_MAX_RANK];
  int32_t r = 0;
  for (int32_t d = 0; d < axis; ++d) shape[r++] = x->shape[d];
  for (int32_t d = 0; d < indices->rank; ++d) shape[r++] = indices->shape[d];
  for (int32_t d = axis + 1; d < x->rank; ++d) shape[r++] = x->shape[d];
  return edge_set_shape(ctx, y, rank, shape);
}

static edge_status gather_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.axis.axis;
  edge_normalize_axis(&axis, x->rank);
  int64_t count = edge_num_elements(indices->rank, indices->shape), dim = x->shape[axis];
  for (int64_t j = 0; j < count; ++j) {
    int64_t index = index_at(indices, j);
    if (index < -dim || index >= dim)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "GATHER '%s': index %lld (element %lld of '%s') is out of range for axis %d of '%s', "
                       "which has %lld entries", edge_tensor_name(y), (long long)index, (long long)j,
                       edge_tensor_name(indices), axis, edge_tensor_name(x), (long long)dim);
  }
  if (edge_num_elements(y->rank, y->shape) == 0) return EDGE_OK;
  int64_t outer = edge_num_elements(axis, x->shape);
  size_t row = (size_t)edge_num_elements(x->rank - axis - 1, x->shape + axis + 1) * edge_dtype_size(x->dtype);
  const char *src = x->data;
  char *dst = y->data;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t j = 0; j < count; ++j) {
      int64_t index = index_at(indices, j);
      if (index < 0) index += dim;
      memcpy(dst + (size_t)(o * count + j) * row, src + (size_t)(o * dim + index) * row, row);
    }
  }
  return EDGE_OK;
}

static edge_status gather_elements_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "GATHER_ELEMENTS", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  if ((status = check_index_dtype(ctx, "GATHER_ELEMENTS", y, indices)) != EDGE_OK) return status;
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER_ELEMENTS '%s': output is %s but data '%s' is %s",
                     edge_tensor_name(y), edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int32_t axis = node->options.axis.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GATHER_ELEMENTS '%s': axis %d is out of range for data '%s' of rank %d",
                     edge_tensor_name(y), node->options.axis.axis, edge_tensor_name(x), x->rank);
  bool fits = indices->rank == x->rank;
  /* Off the axis, an output position reads the same position of x, so it must exist there. */
  for (int32_t d = 0; d < x->rank && fits; ++d) fits = d == axis || indices->shape[d] <= x->shape[d];
  if (!fits) {
    char a[128], b[128];
    edge_format_shape(a, sizeof a, x->rank, x->shape);
    edge_format_shape(b, sizeof b, indices->rank, indices->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "GATHER_ELEMENTS '%s': indices '%s' of shape %s do not fit data '%s' of shape %s off axis %d",
                     edge_tensor_name(y), edge_tensor_name(indices), b, edge_tensor_name(x), a, axis);
  }
  return edge_set_shape(ctx, y, indices->rank, indices->shape);
}

static edge_status gather_elements_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.axis.axis, rank = x->rank;
  edge_normalize_axis(&axis, rank);
  int64_t count = edge_num_elements(indices->rank, indices->shape), dim = x->shape[axis];
  if (count == 0) return EDGE_OK;
  int64_t x_strides[EDGE_MAX_RANK], position[EDGE_MAX_RANK] = {0};
  edge_nd_contiguous_strides(rank, x->shape, x_strides);
  size_t size = edge_dtype_size(x->dtype);
  const char *src = x->data;
  char *dst = y->data;
  int64_t base = 0; /* x offset of the current position with the axis coordinate left out */
  for (int64_t j = 0; j < count; ++j) {
    int64_t index = index_at(indices, j);
    if (index < -dim || index >= dim)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "GATHER_ELEMENTS '%s': index %lld (element %lld of '%s') is out of range for axis %d of "
                       "'%s', which has %lld entries", edge_tensor_name(y), (long long)index, (long long)j,
                       edge_tensor_name(indices), axis, edge_tensor_name(x), (long long)dim);
    if (index < 0) index += dim;
    memcpy(dst + (size_t)j * size, src + (size_t)(base + index * x_strides[axis]) * size, size);
    for (int32_t d = rank - 1; d >= 0; --d) {
      int64_t step = d == axis ? 0 : x_strides[d];
      base += step;
      if (++position[d] < indices->shape[d]) break;
      base -= position[d] * step;
      position[d] = 0;
    }
  }
  return EDGE_OK;
}

const edge_op_registration edge_op_gather = {gather_prepare, gather_eval, NULL};
const edge_op_registration edge_op_gather_elements = {gather_elements_prepare, gather_elements_eval, NULL};

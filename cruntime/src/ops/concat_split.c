/* CONCAT and SPLIT along one axis, any dtype. Both are seen as [outer, axis * inner] blocks: each
 * outer row of the joined tensor is the pieces' rows laid end to end, so both are row copies. */
#include <string.h>

#include "tensor_access.h"
#include "ops.h"
#include "qcommon.h"

/* Elements before the axis and after it. */
static void outer_inner(const edge_tensor *t, int32_t axis, int64_t *outer, int64_t *inner) {
  *outer = edge_num_elements(axis, t->shape);
  *inner = edge_num_elements(t->rank - axis - 1, t->shape + axis + 1);
}

static void concat_release(edge_node *node) {
  if (node->quantized) edge_qconcat_release(node);
}

static edge_status concat_prepare(edge_context *ctx, edge_node *node) {
  concat_release(node);
  edge_status status = edge_op_check_arity(ctx, node, "CONCAT", 1, INT32_MAX, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *first = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int32_t rank = first->rank, axis = node->options.axis.axis;
  if (!edge_normalize_axis(&axis, rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "CONCAT '%s': axis %d is out of range for rank %d", edge_tensor_name(y),
                     node->options.axis.axis, rank);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d < rank; ++d) shape[d] = first->shape[d];
  shape[axis] = 0;
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    edge_tensor *x = edge_op_input(ctx, node, i);
    if (x->dtype != y->dtype)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "CONCAT '%s': input %d '%s' is %s, output is %s", edge_tensor_name(y), i,
                       edge_tensor_name(x), edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
    bool matches = x->rank == rank;
    for (int32_t d = 0; d < rank && matches; ++d) matches = d == axis || x->shape[d] == first->shape[d];
    if (!matches) {
      char a[128], b[128];
      edge_format_shape(a, sizeof a, first->rank, first->shape);
      edge_format_shape(b, sizeof b, x->rank, x->shape);
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "CONCAT '%s': input %d '%s' has shape %s, which differs from input 0's %s off axis %d",
                       edge_tensor_name(y), i, edge_tensor_name(x), b, a, axis);
    }
    shape[axis] += x->shape[axis];
  }
  if ((status = edge_set_shape(ctx, y, rank, shape)) != EDGE_OK) return status;
  /* Quantized int8: inputs with other params than the output's are requantized (qconcat.c). */
  if (edge_q_is_int8(y) && y->num_quant_params > 0) return edge_qconcat_prepare(ctx, node);
  return EDGE_OK;
}

static edge_status concat_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qconcat_eval(ctx, node);
  edge_tensor *y = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.axis.axis;
  edge_normalize_axis(&axis, y->rank);
  if (edge_num_elements(y->rank, y->shape) == 0) return EDGE_OK;
  size_t size = edge_dtype_size(y->dtype);
  int64_t outer, y_inner;
  outer_inner(y, axis, &outer, &y_inner);
  size_t y_row = (size_t)(y->shape[axis] * y_inner) * size, offset = 0;
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    const edge_tensor *x = edge_op_input(ctx, node, i);
    size_t x_row = (size_t)(x->shape[axis] * y_inner) * size;
    if (x_row == 0) continue;
    const char *src = x->data;
    char *dst = (char *)y->data + offset;
    for (int64_t o = 0; o < outer; ++o) memcpy(dst + (size_t)o * y_row, src + (size_t)o * x_row, x_row);
    offset += x_row;
  }
  return EDGE_OK;
}

static edge_status split_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "SPLIT", 1, 1, 1, INT32_MAX);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0);
  int32_t rank = x->rank, axis = node->options.axis.axis;
  if (!edge_normalize_axis(&axis, rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "SPLIT of '%s': axis %d is out of range for rank %d", edge_tensor_name(x),
                     node->options.axis.axis, rank);
  int64_t total = 0;
  for (int32_t i = 0; i < node->num_outputs; ++i) {
    edge_tensor *y = edge_op_output(ctx, node, i);
    if (y->dtype != x->dtype)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "SPLIT of '%s': output %d '%s' is %s, input is %s", edge_tensor_name(x), i,
                       edge_tensor_name(y), edge_dtype_name(y->dtype), edge_dtype_name(x->dtype));
    if (y->declared_rank != rank || y->declared_shape[axis] < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "SPLIT of '%s': output %d '%s' declares rank %d, so its size along axis %d is unknown "
                       "(input rank %d)", edge_tensor_name(x), i, edge_tensor_name(y), y->declared_rank, axis, rank);
    total += y->declared_shape[axis];
  }
  if (total != x->shape[axis])
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "SPLIT of '%s': the outputs' declared sizes along axis %d sum to %lld, but the input has %lld",
                     edge_tensor_name(x), axis, (long long)total, (long long)x->shape[axis]);
  for (int32_t i = 0; i < node->num_outputs; ++i) {
    edge_tensor *y = edge_op_output(ctx, node, i);
    int64_t shape[EDGE_MAX_RANK];
    for (int32_t d = 0; d < rank; ++d) shape[d] = x->shape[d];
    shape[axis] = y->declared_shape[axis];
    status = edge_set_shape(ctx, y, rank, shape);
    if (status != EDGE_OK) return status;
  }
  return EDGE_OK;
}

static edge_status split_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0);
  int32_t axis = node->options.axis.axis;
  edge_normalize_axis(&axis, x->rank);
  if (edge_num_elements(x->rank, x->shape) == 0) return EDGE_OK;
  size_t size = edge_dtype_size(x->dtype);
  int64_t outer, inner;
  outer_inner(x, axis, &outer, &inner);
  size_t x_row = (size_t)(x->shape[axis] * inner) * size, offset = 0;
  for (int32_t i = 0; i < node->num_outputs; ++i) {
    edge_tensor *y = edge_op_output(ctx, node, i);
    size_t y_row = (size_t)(y->shape[axis] * inner) * size;
    if (y_row == 0) continue;
    const char *src = (const char *)x->data + offset;
    char *dst = y->data;
    for (int64_t o = 0; o < outer; ++o) memcpy(dst + (size_t)o * y_row, src + (size_t)o * x_row, y_row);
    offset += y_row;
  }
  return EDGE_OK;
}

const edge_op_registration edge_op_concat = {concat_prepare, concat_eval, concat_release};
const edge_op_registration edge_op_split = {split_prepare, split_eval, NULL};

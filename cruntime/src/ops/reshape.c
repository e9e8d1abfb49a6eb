/* RESHAPE and BROADCAST_TO, whose target shapes come from the output tensor's declared shape.
 *
 * RESHAPE copies the bytes (the memory planner may alias the output to the input later, in which
 * case the copy is skipped). When an input was resized so the element counts no longer match, the
 * one output dimension marked dynamic (-1 in the shape signature) absorbs the difference; with no
 * such dimension the reshape is rejected. With several (batch and sequence both dynamic), each takes
 * the size of the input dim it passes through unchanged (follow_input_dims). The converter marks,
 * per tensor, the dims that follow a dynamic input dim, so a resized batch lands on the dim that
 * carries it.
 *
 * BROADCAST_TO broadcasts the input against the declared output shape, except that a dynamic
 * output dim takes the input's size: the declared size there is only the one the model was
 * converted at. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"

/* Several dynamic output dims (batch and sequence both resized): each takes the current size of
 * the input dim it passes through unchanged, found in the declared shapes as the input dim of the
 * same size whose preceding dims hold as many elements as the output dim's (row-major order keeps
 * such a dim intact), matching left to right. False when some dynamic dim has no such input dim. */
static bool follow_input_dims(const edge_tensor *x, const edge_tensor *y, int64_t *shape) {
  int32_t next_input = 0;
  int64_t out_prefix = 1;
  for (int32_t d = 0; d < y->declared_rank; ++d) {
    if (y->shape_signature[d] < 0) {
      int64_t in_prefix = 1;
      for (int32_t i = 0; i < next_input; ++i) in_prefix *= x->declared_shape[i];
      int32_t i = next_input;
      while (i < x->declared_rank && !(in_prefix == out_prefix && x->declared_shape[i] == y->declared_shape[d]))
        in_prefix *= x->declared_shape[i++];
      if (i == x->declared_rank || x->rank != x->declared_rank) return false;
      shape[d] = x->shape[i];
      next_input = i + 1;
    }
    out_prefix *= y->declared_shape[d];
  }
  return true;
}

static edge_status reshape_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "RESHAPE", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "RESHAPE '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int32_t rank = y->declared_rank, dynamic = -1, num_dynamic = 0;
  int64_t shape[EDGE_MAX_RANK], known = 1;
  for (int32_t d = 0; d < rank; ++d) {
    shape[d] = y->declared_shape[d];
    if (shape[d] < 0 || y->shape_signature[d] < 0) {
      dynamic = d;
      ++num_dynamic;
    } else {
      known *= shape[d];
    }
  }
  int64_t count = edge_num_elements(x->rank, x->shape);
  if (edge_num_elements(rank, shape) == count) return edge_set_shape(ctx, y, rank, shape);
  if (num_dynamic == 1 && known > 0 && count % known == 0) {
    shape[dynamic] = count / known;
    return edge_set_shape(ctx, y, rank, shape);
  }
  if (num_dynamic > 1 && follow_input_dims(x, y, shape) && edge_num_elements(rank, shape) == count)
    return edge_set_shape(ctx, y, rank, shape);
  char in[128], out[128], signature[128];
  int64_t marked[EDGE_MAX_RANK];
  for (int32_t d = 0; d < rank; ++d) marked[d] = y->shape_signature[d];
  edge_format_shape(in, sizeof in, x->rank, x->shape);
  edge_format_shape(out, sizeof out, rank, y->declared_shape);
  edge_format_shape(signature, sizeof signature, rank, marked);
  if (num_dynamic == 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "RESHAPE '%s': input '%s' has shape %s (%lld elements), which is not a multiple of the %lld "
                     "elements of the fixed dims of %s (signature %s)",
                     edge_tensor_name(y), edge_tensor_name(x), in, (long long)count, (long long)known, out, signature);
  return edge_fail(ctx, EDGE_INVALID_MODEL,
                   "RESHAPE '%s': input '%s' has shape %s (%lld elements), which cannot become the declared %s: "
                   "its signature %s marks %d dims dynamic, and they neither follow input dims nor is there one "
                   "to absorb the difference",
                   edge_tensor_name(y), edge_tensor_name(x), in, (long long)count, out, signature, num_dynamic);
}

static edge_status reshape_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (y->data != x->data && x->nbytes > 0) memcpy(y->data, x->data, x->nbytes);
  return EDGE_OK;
}

static edge_status broadcast_to_prepare(edge_context *ctx, edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "BROADCAST_TO", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BROADCAST_TO '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int64_t target[EDGE_MAX_RANK];
  for (int32_t d = 0; d < y->declared_rank; ++d) {
    int32_t from_input = d - (y->declared_rank - x->rank);
    bool follows_input = y->shape_signature[d] < 0 && from_input >= 0;
    target[d] = follows_input ? x->shape[from_input] : y->declared_shape[d];
  }
  int32_t ranks[2] = {x->rank, y->declared_rank}, rank;
  const int64_t *shapes[2] = {x->shape, target};
  int64_t shape[EDGE_MAX_RANK];
  char what[160];
  snprintf(what, sizeof what, "BROADCAST_TO '%s' (input, declared output)", edge_tensor_name(y));
  status = edge_nd_broadcast_shapes(ctx, what, 2, ranks, shapes, &rank, shape);
  if (status != EDGE_OK) return status;
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  edge_nd_iter *iter = malloc(sizeof *iter);
  if (!iter) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "BROADCAST_TO '%s': out of memory", edge_tensor_name(y));
  int64_t y_strides[EDGE_MAX_RANK], x_strides[EDGE_MAX_RANK];
  edge_nd_contiguous_strides(rank, shape, y_strides);
  edge_nd_broadcast_strides(rank, shape, x->rank, x->shape, x_strides);
  const int64_t *strides[2] = {y_strides, x_strides};
  edge_nd_iter_init(iter, rank, shape, 2, strides);
  node->plan = iter;
  return EDGE_OK;
}

static edge_status broadcast_to_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_nd_copy(ctx, node->plan, y->data, x->data, edge_dtype_size(x->dtype));
  return EDGE_OK;
}

static void broadcast_to_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_reshape = {reshape_prepare, reshape_eval, NULL};
const edge_op_registration edge_op_broadcast_to = {broadcast_to_prepare, broadcast_to_eval, broadcast_to_release};

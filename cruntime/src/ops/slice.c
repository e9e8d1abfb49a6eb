/* SLICE: per-dimension starts/ends/steps with ONNX semantics. The output is x read through strides
 * multiplied by the steps, from a base offset at the starts; any dtype. A dim with ends_from reads
 * x's leading elements up to the size of that axis of the second input (ref), which must not be
 * longer than x: a constant stored at the longest length the model runs at. */
#include <stdlib.h>

#include "broadcast.h"
#include "ops.h"

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

static edge_status slice_prepare(edge_context *ctx, edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "SLICE", 1, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_tensor *ref = node->num_inputs > 1 ? edge_op_input(ctx, node, 1) : NULL;
  const edge_slice_options *options = &node->options.slice;
  int32_t rank = x->rank;
  if (options->rank != rank)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "SLICE '%s': options have %d entries but input '%s' has rank %d",
                     edge_tensor_name(y), options->rank, edge_tensor_name(x), rank);
  for (int32_t d = 0; d < rank && options->has_ends_from; ++d) {
    int64_t axis = options->ends_from[d];
    if (axis < 0) continue;
    if (!ref || axis >= ref->rank)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "SLICE '%s': dim %d takes its end from axis %lld of a second input, "
                       "which %s", edge_tensor_name(y), d, (long long)axis, ref ? "has fewer dims" : "is missing");
    if (ref->shape[axis] > x->shape[d])
      return edge_fail(ctx, EDGE_INVALID_ARGUMENT,
                       "SLICE '%s': '%s' is %lld long along its axis %lld, more than the %lld the model was converted "
                       "for (the longest it runs at); convert it again at the longer size",
                       edge_tensor_name(y), edge_tensor_name(ref), (long long)ref->shape[axis], (long long)axis,
                       (long long)x->shape[d]);
  }
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "SLICE '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int64_t shape[EDGE_MAX_RANK], x_strides[EDGE_MAX_RANK], y_strides[EDGE_MAX_RANK], read_strides[EDGE_MAX_RANK];
  int64_t base = 0;
  edge_nd_contiguous_strides(rank, x->shape, x_strides);
  for (int32_t d = 0; d < rank; ++d) {
    int64_t dim = x->shape[d], step = options->steps[d];
    if (step == 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "SLICE '%s': step of dimension %d is 0", edge_tensor_name(y), d);
    /* Adding dim to a negative value cannot overflow: dim is at most 2^46. */
    bool run_time_end = options->has_ends_from && options->ends_from[d] >= 0;
    int64_t start = options->starts[d], end = run_time_end ? ref->shape[options->ends_from[d]] : options->ends[d];
    /* A step longer than the dimension reads one element either way; bounding it keeps -step and
     * step * stride from overflowing. */
    if (step > dim + 1) step = dim + 1;
    if (step < -(dim + 1)) step = -(dim + 1);
    if (start < 0) start += dim;
    if (end < 0) end += dim;
    int64_t count;
    if (step > 0) {
      start = clamp64(start, 0, dim);
      end = clamp64(end, 0, dim);
      count = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
      start = clamp64(start, 0, dim - 1);
      end = clamp64(end, -1, dim - 1);
      count = start > end ? (start - end - 1) / -step + 1 : 0;
    }
    shape[d] = count;
    read_strides[d] = step * x_strides[d];
    if (count > 0) base += start * x_strides[d];
  }
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  edge_nd_iter *iter = malloc(sizeof *iter);
  if (!iter) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "SLICE '%s': out of memory", edge_tensor_name(y));
  edge_nd_contiguous_strides(rank, shape, y_strides);
  const int64_t *strides[2] = {y_strides, read_strides};
  edge_nd_iter_init(iter, rank, shape, 2, strides);
  iter->base[1] = base;
  node->plan = iter;
  return EDGE_OK;
}

static edge_status slice_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_nd_copy(ctx, node->plan, y->data, x->data, edge_dtype_size(x->dtype));
  return EDGE_OK;
}

static void slice_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_slice = {slice_prepare, slice_eval, slice_release};

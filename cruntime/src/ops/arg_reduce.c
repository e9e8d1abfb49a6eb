/* ARG_MAX and ARG_MIN (ONNX ArgMax/ArgMin): the index of the largest (smallest) element along an
 * axis, int64 or int32 output. Ties give the first index, or the last with select_last_index. A NaN
 * compares false, so it is never picked over a number (it is returned only where it is first and
 * nothing compares above it). Inputs float32, int32, int64, int8 or uint8.
 *
 * x is viewed as [outer, n, inner] around the axis; each of the outer * inner output positions is
 * one strided scan, and positions are split over threads (each result depends on its scan only). */
#include "broadcast.h"
#include "ops.h"

typedef struct {
  const void *x;
  void *y;
  int64_t n, inner;
  bool pick_max, last;
  edge_dtype dtype, index_dtype;
} arg_job;

/* Scan of n elements at stride `stride`; better(a, b): a replaces the current best b. */
#define EDGE_ARG_SCAN(T)                                                                              \
  static int64_t arg_scan_##T(const T *x, int64_t n, int64_t stride, bool pick_max, bool last) {     \
    int64_t best = 0;                                                                                 \
    T value = x[0];                                                                                   \
    for (int64_t d = 1; d < n; ++d) {                                                                 \
      T v = x[d * stride];                                                                            \
      bool better = pick_max ? (last ? v >= value : v > value) : (last ? v <= value : v < value);    \
      if (better) {                                                                                   \
        best = d;                                                                                     \
        value = v;                                                                                    \
      }                                                                                               \
    }                                                                                                 \
    return best;                                                                                      \
  }
EDGE_ARG_SCAN(float)
EDGE_ARG_SCAN(int32_t)
EDGE_ARG_SCAN(int64_t)
EDGE_ARG_SCAN(int8_t)
EDGE_ARG_SCAN(uint8_t)
#undef EDGE_ARG_SCAN

static void arg_positions(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const arg_job *job = arg;
  for (int64_t p = begin; p < end; ++p) {
    int64_t o = p / job->inner, i = p % job->inner;
    int64_t start = o * job->n * job->inner + i, best;
    switch (job->dtype) {
      case EDGE_FLOAT32: best = arg_scan_float((const float *)job->x + start, job->n, job->inner, job->pick_max, job->last); break;
      case EDGE_INT32: best = arg_scan_int32_t((const int32_t *)job->x + start, job->n, job->inner, job->pick_max, job->last); break;
      case EDGE_INT64: best = arg_scan_int64_t((const int64_t *)job->x + start, job->n, job->inner, job->pick_max, job->last); break;
      case EDGE_INT8: best = arg_scan_int8_t((const int8_t *)job->x + start, job->n, job->inner, job->pick_max, job->last); break;
      default: best = arg_scan_uint8_t((const uint8_t *)job->x + start, job->n, job->inner, job->pick_max, job->last); break;
    }
    if (job->index_dtype == EDGE_INT64) ((int64_t *)job->y)[p] = best;
    else ((int32_t *)job->y)[p] = (int32_t)best;
  }
}

static edge_status arg_prepare(edge_context *ctx, edge_node *node) {
  const char *op = node->opcode == EDGE_OP_ARG_MAX ? "ARG_MAX" : "ARG_MIN";
  edge_status status = edge_op_check_arity(ctx, node, op, 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (x->dtype != EDGE_FLOAT32 && x->dtype != EDGE_INT32 && x->dtype != EDGE_INT64 && x->dtype != EDGE_INT8 &&
      x->dtype != EDGE_UINT8)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': input '%s' is %s; float32, int32, int64, int8 and uint8 are "
                     "supported", op, edge_tensor_name(y), edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (y->dtype != EDGE_INT64 && y->dtype != EDGE_INT32)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': output is %s, expected int64 or int32", op, edge_tensor_name(y),
                     edge_dtype_name(y->dtype));
  int32_t axis = node->options.arg.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': axis %d is out of range for input '%s' of rank %d", op,
                     edge_tensor_name(y), node->options.arg.axis, edge_tensor_name(x), x->rank);
  if (x->shape[axis] == 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': axis %d of input '%s' is empty; there is no index to give",
                     op, edge_tensor_name(y), axis, edge_tensor_name(x));
  if (y->dtype == EDGE_INT32 && x->shape[axis] > INT32_MAX)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': axis of %lld entries does not fit an int32 output", op,
                     edge_tensor_name(y), (long long)x->shape[axis]);
  int64_t shape[EDGE_MAX_RANK];
  int32_t rank = 0;
  for (int32_t d = 0; d < x->rank; ++d) {
    if (d != axis) shape[rank++] = x->shape[d];
    else if (node->options.arg.keepdims) shape[rank++] = 1;
  }
  return edge_set_shape(ctx, y, rank, shape);
}

static edge_status arg_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.arg.axis;
  edge_normalize_axis(&axis, x->rank);
  int64_t n = x->shape[axis];
  int64_t outer = edge_num_elements(axis, x->shape), inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  if (outer * inner == 0) return EDGE_OK;
  arg_job job = {x->data, y->data, n, inner, node->opcode == EDGE_OP_ARG_MAX, node->options.arg.select_last_index,
                 x->dtype, y->dtype};
  int64_t per_tile = n >= 16384 ? 1 : 16384 / n;
  edge_nd_parallel(ctx, outer * inner, per_tile, arg_positions, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_arg_max = {arg_prepare, arg_eval, NULL};
const edge_op_registration edge_op_arg_min = {arg_prepare, arg_eval, NULL};

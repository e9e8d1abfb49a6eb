/* TOP_K (ONNX TopK): the k largest (or smallest) elements along an axis, best first, with their
 * indices (int64 or int32). Equal values come lowest index first, as onnxruntime orders them; the
 * output is always sorted (ONNX leaves the order free when sorted=0, so sorting is a valid order).
 * Inputs float32, int32, int64, int8 or uint8; k from the options, 0 <= k <= the axis size, checked
 * at prepare.
 *
 * x is viewed as [outer, n, inner]; each of the outer * inner rows is a strided scan of n that
 * keeps the best k seen in a binary heap whose root is the worst kept (O(n log k)), then sorts the
 * heap in place by popping the worst to the back. Each thread has its own k-index heap in scratch. */
#include <string.h>

#include "broadcast.h"
#include "ops.h"

typedef struct {
  const char *x;
  char *values;
  void *indices;
  int64_t n, inner, k;
  bool largest;
  edge_dtype dtype, index_dtype;
  int64_t *heaps; /* k per thread */
} top_k_job;

/* better(a, b): element a ranks ahead of element b. */
#define EDGE_TOP_K_ROW(T)                                                                                  \
  static inline bool better_##T(const T *x, int64_t stride, bool largest, int64_t a, int64_t b) {         \
    T va = x[a * stride], vb = x[b * stride];                                                              \
    if (va != vb) return largest ? va > vb : va < vb;                                                      \
    return a < b;                                                                                          \
  }                                                                                                        \
  static void sift_down_##T(const T *x, int64_t stride, bool largest, int64_t *heap, int64_t size,        \
                            int64_t i) {                                                                   \
    for (;;) {                                                                                             \
      int64_t worst = i, left = 2 * i + 1, right = left + 1;                                               \
      if (left < size && better_##T(x, stride, largest, heap[worst], heap[left])) worst = left;            \
      if (right < size && better_##T(x, stride, largest, heap[worst], heap[right])) worst = right;         \
      if (worst == i) return;                                                                              \
      int64_t t = heap[i];                                                                                 \
      heap[i] = heap[worst];                                                                               \
      heap[worst] = t;                                                                                     \
      i = worst;                                                                                           \
    }                                                                                                      \
  }                                                                                                        \
  /* heap[0..k) = the row's best k positions, best first. */                                               \
  static void top_k_row_##T(const T *x, int64_t n, int64_t stride, int64_t k, bool largest, int64_t *heap) { \
    for (int64_t j = 0; j < k; ++j) heap[j] = j;                                                           \
    for (int64_t i = k / 2 - 1; i >= 0; --i) sift_down_##T(x, stride, largest, heap, k, i);                \
    for (int64_t j = k; j < n; ++j) {                                                                      \
      if (better_##T(x, stride, largest, j, heap[0])) {                                                    \
        heap[0] = j;                                                                                       \
        sift_down_##T(x, stride, largest, heap, k, 0);                                                     \
      }                                                                                                    \
    }                                                                                                      \
    for (int64_t size = k; size > 1; --size) {                                                             \
      int64_t t = heap[0];                                                                                 \
      heap[0] = heap[size - 1];                                                                            \
      heap[size - 1] = t;                                                                                  \
      sift_down_##T(x, stride, largest, heap, size - 1, 0);                                                \
    }                                                                                                      \
  }
EDGE_TOP_K_ROW(float)
EDGE_TOP_K_ROW(int32_t)
EDGE_TOP_K_ROW(int64_t)
EDGE_TOP_K_ROW(int8_t)
EDGE_TOP_K_ROW(uint8_t)
#undef EDGE_TOP_K_ROW

static void top_k_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const top_k_job *job = arg;
  int64_t *heap = job->heaps + (size_t)thread * (size_t)job->k;
  size_t size = edge_dtype_size(job->dtype);
  for (int64_t r = begin; r < end; ++r) {
    int64_t o = r / job->inner, i = r % job->inner;
    const char *row = job->x + (size_t)(o * job->n * job->inner + i) * size;
    switch (job->dtype) {
      case EDGE_FLOAT32: top_k_row_float((const float *)row, job->n, job->inner, job->k, job->largest, heap); break;
      case EDGE_INT32: top_k_row_int32_t((const int32_t *)row, job->n, job->inner, job->k, job->largest, heap); break;
      case EDGE_INT64: top_k_row_int64_t((const int64_t *)row, job->n, job->inner, job->k, job->largest, heap); break;
      case EDGE_INT8: top_k_row_int8_t((const int8_t *)row, job->n, job->inner, job->k, job->largest, heap); break;
      default: top_k_row_uint8_t((const uint8_t *)row, job->n, job->inner, job->k, job->largest, heap); break;
    }
    int64_t out = o * job->k * job->inner + i;
    for (int64_t j = 0; j < job->k; ++j, out += job->inner) {
      memcpy(job->values + (size_t)out * size, row + (size_t)(heap[j] * job->inner) * size, size);
      if (job->index_dtype == EDGE_INT64) ((int64_t *)job->indices)[out] = heap[j];
      else ((int32_t *)job->indices)[out] = (int32_t)heap[j];
    }
  }
}

static edge_status top_k_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "TOP_K", 1, 1, 2, 2);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *values = edge_op_output(ctx, node, 0);
  edge_tensor *indices = edge_op_output(ctx, node, 1);
  const char *name = edge_tensor_name(values);
  if (x->dtype != EDGE_FLOAT32 && x->dtype != EDGE_INT32 && x->dtype != EDGE_INT64 && x->dtype != EDGE_INT8 &&
      x->dtype != EDGE_UINT8)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "TOP_K '%s': input '%s' is %s; float32, int32, int64, int8 and uint8 are "
                     "supported", name, edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (values->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TOP_K '%s': values output is %s but input '%s' is %s", name,
                     edge_dtype_name(values->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (indices->dtype != EDGE_INT64 && indices->dtype != EDGE_INT32)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TOP_K '%s': indices output '%s' is %s, expected int64 or int32", name,
                     edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  if (node->outputs[0] == node->outputs[1])
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TOP_K '%s': values and indices are the same tensor", name);
  int32_t axis = node->options.top_k.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TOP_K '%s': axis %d is out of range for input '%s' of rank %d", name,
                     node->options.top_k.axis, edge_tensor_name(x), x->rank);
  int64_t k = node->options.top_k.k;
  if (k < 0 || k > x->shape[axis])
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TOP_K '%s': k %lld is outside [0, %lld], the size of axis %d of '%s'",
                     name, (long long)k, (long long)x->shape[axis], axis, edge_tensor_name(x));
  if (indices->dtype == EDGE_INT32 && x->shape[axis] > INT32_MAX)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "TOP_K '%s': axis of %lld entries does not fit int32 indices", name,
                     (long long)x->shape[axis]);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d < x->rank; ++d) shape[d] = d == axis ? k : x->shape[d];
  if ((status = edge_set_shape(ctx, values, x->rank, shape)) != EDGE_OK) return status;
  if ((status = edge_set_shape(ctx, indices, x->rank, shape)) != EDGE_OK) return status;
  int32_t threads = ctx->pool ? edge_threadpool_size(ctx->pool) : 1;
  if (ctx->num_threads > threads) threads = ctx->num_threads;
  node->scratch_bytes = (size_t)threads * (size_t)(k > 0 ? k : 1) * sizeof(int64_t);
  return EDGE_OK;
}

static edge_status top_k_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *values = edge_op_output(ctx, node, 0);
  edge_tensor *indices = edge_op_output(ctx, node, 1);
  int32_t axis = node->options.top_k.axis;
  edge_normalize_axis(&axis, x->rank);
  int64_t n = x->shape[axis], k = node->options.top_k.k;
  int64_t outer = edge_num_elements(axis, x->shape), inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  if (outer * inner * k == 0) return EDGE_OK;
  top_k_job job = {x->data, values->data, indices->data, n, inner, k, node->options.top_k.largest, x->dtype,
                   indices->dtype, node->scratch};
  int64_t per_tile = n >= 16384 ? 1 : 16384 / n;
  edge_nd_parallel(ctx, outer * inner, per_tile, top_k_rows, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_top_k = {top_k_prepare, top_k_eval, NULL};

/* SCATTER_ND and SCATTER_ELEMENTS (ONNX ScatterND, ScatterElements): y is a copy of data with each
 * update written to, or combined by the reduction (add, mul, max, min) with, the position its
 * index names. Duplicate positions are applied in index order, one after the other, so a run is
 * deterministic. NONE copies any dtype by size; the reductions take float32, int32 and int64
 * (integers wrap in their unsigned type, as onnxruntime's do, instead of overflowing).
 *
 * Indices are data: eval checks every one against its dim (negative entries count from the end)
 * before writing anything, and stops with EDGE_RUNTIME_ERROR naming the first bad one, so a bad
 * index never reaches memory. Eval runs on one thread: duplicates make the order matter. */
#include <string.h>

#include "broadcast.h"
#include "ops.h"

static int64_t index_at(const edge_tensor *indices, int64_t i) {
  return indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[i] : ((const int64_t *)indices->data)[i];
}

#define EDGE_SCATTER_COMBINE(T, U)                                                                  \
  static void combine_##T(T *dst, const T *src, int64_t n, edge_scatter_kind reduction) {          \
    switch (reduction) {                                                                            \
      case EDGE_SCATTER_ADD:                                                                        \
        for (int64_t i = 0; i < n; ++i) dst[i] = (T)((U)dst[i] + (U)src[i]);                       \
        break;                                                                                      \
      case EDGE_SCATTER_MUL:                                                                        \
        for (int64_t i = 0; i < n; ++i) dst[i] = (T)((U)dst[i] * (U)src[i]);                       \
        break;                                                                                      \
      case EDGE_SCATTER_MAX:                                                                        \
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] > dst[i] ? src[i] : dst[i];                \
        break;                                                                                      \
      case EDGE_SCATTER_MIN:                                                                        \
        for (int64_t i = 0; i < n; ++i) dst[i] = src[i] < dst[i] ? src[i] : dst[i];                \
        break;                                                                                      \
      default:                                                                                      \
        memcpy(dst, src, (size_t)n * sizeof(T));                                                    \
        break;                                                                                      \
    }                                                                                               \
  }

/* float32 arithmetic is done in float itself (U = float: no wrap needed). */
EDGE_SCATTER_COMBINE(float, float)
EDGE_SCATTER_COMBINE(int32_t, uint32_t)
EDGE_SCATTER_COMBINE(int64_t, uint64_t)

/* Applies n contiguous updates at dst (element offsets already scaled by the caller). */
static void combine(void *dst, const void *src, int64_t n, edge_dtype dtype, size_t size,
                    edge_scatter_kind reduction) {
  if (reduction == EDGE_SCATTER_NONE) {
    memcpy(dst, src, (size_t)n * size);
  } else if (dtype == EDGE_FLOAT32) {
    combine_float(dst, src, n, reduction);
  } else if (dtype == EDGE_INT32) {
    combine_int32_t(dst, src, n, reduction);
  } else {
    combine_int64_t(dst, src, n, reduction);
  }
}

static const char *const reduction_names[EDGE_SCATTER_COUNT_] = {"none", "add", "mul", "max", "min"};

/* Checks shared by both ops: arity, index dtype, data/updates/output dtypes, and that the
 * reduction has arithmetic for the dtype. */
static edge_status check_common(edge_context *ctx, const edge_node *node, const char *op) {
  edge_status status = edge_op_check_arity(ctx, node, op, 3, 3, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *updates = edge_op_input(ctx, node, 2), *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': indices '%s' are %s, expected int32 or int64", op, name,
                     edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  if (updates->dtype != x->dtype || y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': data '%s' is %s, updates '%s' %s and the output %s; they must match",
                     op, name, edge_tensor_name(x), edge_dtype_name(x->dtype), edge_tensor_name(updates),
                     edge_dtype_name(updates->dtype), edge_dtype_name(y->dtype));
  edge_scatter_kind reduction = node->options.scatter.reduction;
  if (reduction != EDGE_SCATTER_NONE && x->dtype != EDGE_FLOAT32 && x->dtype != EDGE_INT32 && x->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': reduction %s on %s data; float32, int32 and int64 only", op, name,
                     reduction_names[reduction], edge_dtype_name(x->dtype));
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

/* ---- SCATTER_ND ---- */

static edge_status scatter_nd_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = check_common(ctx, node, "SCATTER_ND");
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *updates = edge_op_input(ctx, node, 2);
  const char *name = edge_tensor_name(edge_op_output(ctx, node, 0));
  int32_t r = x->rank, q = indices->rank;
  int64_t k = q >= 1 ? indices->shape[q - 1] : 0;
  if (q < 1 || k < 1 || k > r)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "SCATTER_ND '%s': index tuples of %lld entries do not fit data '%s' of rank %d", name,
                     (long long)k, edge_tensor_name(x), r);
  /* updates must be indices.shape[:-1] + data.shape[k:] exactly. */
  int32_t want_rank = q - 1 + r - (int32_t)k;
  bool ok = updates->rank == want_rank;
  for (int32_t d = 0; ok && d < want_rank; ++d)
    ok = updates->shape[d] == (d < q - 1 ? indices->shape[d] : x->shape[k + d - (q - 1)]);
  if (!ok) {
    char have[96], data_shape[96], index_shape[96];
    edge_format_shape(have, sizeof have, updates->rank, updates->shape);
    edge_format_shape(data_shape, sizeof data_shape, r, x->shape);
    edge_format_shape(index_shape, sizeof index_shape, q, indices->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "SCATTER_ND '%s': updates '%s' are %s; data %s and indices %s need indices.shape[:-1] + "
                     "data.shape[%lld:]", name, edge_tensor_name(updates), have, data_shape, index_shape, (long long)k);
  }
  return EDGE_OK;
}

static edge_status scatter_nd_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *updates = edge_op_input(ctx, node, 2), *y = edge_op_output(ctx, node, 0);
  int32_t r = x->rank, q = indices->rank;
  int64_t k = indices->shape[q - 1];
  int64_t tuples = edge_num_elements(q - 1, indices->shape);
  int64_t slice = edge_num_elements(r - (int32_t)k, x->shape + k);
  size_t size = edge_dtype_size(x->dtype);
  for (int64_t i = 0; i < tuples * k; ++i) {
    int64_t dim = x->shape[i % k], index = index_at(indices, i);
    if (index < -dim || index >= dim)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "SCATTER_ND '%s': index %lld (entry %lld of tuple %lld in '%s') is out of range for dim %lld "
                       "of '%s', which has %lld entries", edge_tensor_name(y), (long long)index, (long long)(i % k),
                       (long long)(i / k), edge_tensor_name(indices), (long long)(i % k), edge_tensor_name(x), (long long)dim);
  }
  if (y->data != x->data) memcpy(y->data, x->data, y->nbytes);
  char *dst = y->data;
  const char *src = updates->data;
  edge_scatter_kind reduction = node->options.scatter.reduction;
  for (int64_t t = 0; t < tuples; ++t) {
    int64_t offset = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t dim = x->shape[j], index = index_at(indices, t * k + j);
      offset = offset * dim + (index < 0 ? index + dim : index);
    }
    if (slice)
      combine(dst + (size_t)(offset * slice) * size, src + (size_t)(t * slice) * size, slice, x->dtype, size,
              reduction);
  }
  return EDGE_OK;
}

/* ---- SCATTER_ELEMENTS ---- */

static edge_status scatter_elements_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = check_common(ctx, node, "SCATTER_ELEMENTS");
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *updates = edge_op_input(ctx, node, 2);
  const char *name = edge_tensor_name(edge_op_output(ctx, node, 0));
  int32_t r = x->rank, axis = node->options.scatter.axis;
  if (r < 1 || !edge_normalize_axis(&axis, r))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "SCATTER_ELEMENTS '%s': axis %d is out of range for data '%s' of rank %d",
                     name, node->options.scatter.axis, edge_tensor_name(x), r);
  bool ok = indices->rank == r && updates->rank == r;
  for (int32_t d = 0; ok && d < r; ++d)
    ok = updates->shape[d] == indices->shape[d] && (d == axis || indices->shape[d] <= x->shape[d]);
  if (!ok) {
    char data_shape[96], index_shape[96], update_shape[96];
    edge_format_shape(data_shape, sizeof data_shape, r, x->shape);
    edge_format_shape(index_shape, sizeof index_shape, indices->rank, indices->shape);
    edge_format_shape(update_shape, sizeof update_shape, updates->rank, updates->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "SCATTER_ELEMENTS '%s': indices %s and updates %s must have one shape, of data %s's rank and "
                     "within its dims off axis %d", name, index_shape, update_shape, data_shape, axis);
  }
  return EDGE_OK;
}

static edge_status scatter_elements_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *updates = edge_op_input(ctx, node, 2), *y = edge_op_output(ctx, node, 0);
  int32_t r = x->rank, axis = node->options.scatter.axis;
  edge_normalize_axis(&axis, r);
  int64_t count = edge_num_elements(r, indices->shape), dim = x->shape[axis];
  for (int64_t i = 0; i < count; ++i) {
    int64_t index = index_at(indices, i);
    if (index < -dim || index >= dim)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "SCATTER_ELEMENTS '%s': index %lld (element %lld of '%s') is out of range for axis %d of '%s', "
                       "which has %lld entries", edge_tensor_name(y), (long long)index, (long long)i,
                       edge_tensor_name(indices), axis, edge_tensor_name(x), (long long)dim);
  }
  if (y->data != x->data) memcpy(y->data, x->data, y->nbytes);
  int64_t strides[EDGE_MAX_RANK], position[EDGE_MAX_RANK] = {0};
  edge_nd_contiguous_strides(r, x->shape, strides);
  size_t size = edge_dtype_size(x->dtype);
  char *dst = y->data;
  const char *src = updates->data;
  edge_scatter_kind reduction = node->options.scatter.reduction;
  /* position walks the indices' shape in row-major order; offset is its place in data with the
   * axis coordinate left out, kept in step with position. */
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    int64_t index = index_at(indices, i);
    if (index < 0) index += dim;
    combine(dst + (size_t)(offset + index * strides[axis]) * size, src + (size_t)i * size, 1, x->dtype, size,
            reduction);
    for (int32_t d = r - 1; d >= 0; --d) {
      if (++position[d] < indices->shape[d]) {
        if (d != axis) offset += strides[d];
        break;
      }
      if (d != axis) offset -= (position[d] - 1) * strides[d];
      position[d] = 0;
    }
  }
  return EDGE_OK;
}

const edge_op_registration edge_op_scatter_nd = {scatter_nd_prepare, scatter_nd_eval, NULL};
const edge_op_registration edge_op_scatter_elements = {scatter_elements_prepare, scatter_elements_eval, NULL};

/* CUMSUM (ONNX CumSum, and CumProd with the product option): y[.., i, ..] = sum (product) of
 * x[.., j, ..] for j <= i along the axis (j < i when exclusive, whose first row is 0 (1); j >= i,
 * j > i when reverse). float32, int32 or int64, combined in that type one step at a time along the
 * axis, as onnxruntime does (float addition and multiplication are not associative, so this order
 * is part of the result).
 *
 * x is viewed as [outer, n, inner] around the axis. Along the innermost axis (inner == 1) each row
 * is a sequential scan. Along an outer axis, each step adds one whole contiguous inner row to the
 * previous running row: y_row(i) = y_row(i - 1) + x_row(i), for float32 the vector family's ADD
 * (MUL) kernel (kernels/vector.h; IEEE addition, so bit for bit the scalar scan's per-element order). Work is split over outer blocks
 * and, within a block, over inner columns, so any thread split gives identical results. */
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"

typedef struct {
  const char *x;
  char *y;
  int64_t outer, n, inner;
  int64_t column_tiles; /* inner split into this many tiles of tile_width columns */
  int64_t tile_width;
  bool exclusive, reverse, product;
  edge_dtype dtype;
  edge_f32_vbinary_ukernel add_rows; /* float32 row adds (multiplies); NULL: the scalar loop */
} cumsum_job;

/* One block [n, inner] of x, columns [c0, c1): running rows in the op's order. Integers add and
 * multiply in their unsigned type U, so a result past the range wraps (as onnxruntime's does)
 * instead of being undefined behaviour on data an untrusted model supplies. */
#define EDGE_CUMSUM_BLOCK(T, U)                                                                         \
  static void cumsum_block_##T(const T *x, T *y, int64_t n, int64_t inner, int64_t c0, int64_t c1,     \
                               bool exclusive, bool reverse, bool product,                             \
                               edge_f32_vbinary_ukernel add_rows) {                                    \
    int64_t width = c1 - c0;                                                                            \
    const T *previous_x = NULL;                                                                         \
    T *previous_y = NULL;                                                                               \
    for (int64_t s = 0; s < n; ++s) {                                                                   \
      int64_t i = reverse ? n - 1 - s : s;                                                              \
      const T *xr = x + i * inner + c0;                                                                 \
      T *yr = y + i * inner + c0;                                                                       \
      if (s == 0) {                                                                                     \
        if (exclusive && product) for (int64_t c = 0; c < width; ++c) yr[c] = (T)1;                     \
        else if (exclusive) memset(yr, 0, (size_t)width * sizeof(T));                                   \
        else memcpy(yr, xr, (size_t)width * sizeof(T));                                                 \
      } else {                                                                                          \
        /* exclusive: y(i) = y(i - 1) + x(i - 1); inclusive: y(i) = y(i - 1) + x(i). */                 \
        const T *add = exclusive ? previous_x : xr;                                                     \
        if (add_rows && width > 1)                                                                      \
          add_rows((size_t)width, (const float *)previous_y, (const float *)add, (float *)yr);          \
        else if (product)                                                                               \
          for (int64_t c = 0; c < width; ++c) yr[c] = (T)((U)previous_y[c] * (U)add[c]);               \
        else                                                                                            \
          for (int64_t c = 0; c < width; ++c) yr[c] = (T)((U)previous_y[c] + (U)add[c]);               \
      }                                                                                                 \
      previous_x = xr;                                                                                  \
      previous_y = yr;                                                                                  \
    }                                                                                                   \
  }
EDGE_CUMSUM_BLOCK(float, float)
EDGE_CUMSUM_BLOCK(int32_t, uint32_t)
EDGE_CUMSUM_BLOCK(int64_t, uint64_t)
#undef EDGE_CUMSUM_BLOCK

static void cumsum_tiles(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const cumsum_job *job = arg;
  size_t size = edge_dtype_size(job->dtype);
  for (int64_t t = begin; t < end; ++t) {
    int64_t o = t / job->column_tiles, c0 = (t % job->column_tiles) * job->tile_width;
    int64_t c1 = c0 + job->tile_width < job->inner ? c0 + job->tile_width : job->inner;
    size_t offset = (size_t)(o * job->n * job->inner) * size;
    const void *x = job->x + offset;
    void *y = job->y + offset;
    switch (job->dtype) {
      case EDGE_FLOAT32:
        cumsum_block_float(x, y, job->n, job->inner, c0, c1, job->exclusive, job->reverse, job->product, job->add_rows);
        break;
      case EDGE_INT32:
        cumsum_block_int32_t(x, y, job->n, job->inner, c0, c1, job->exclusive, job->reverse, job->product, NULL);
        break;
      default: cumsum_block_int64_t(x, y, job->n, job->inner, c0, c1, job->exclusive, job->reverse, job->product, NULL); break;
    }
  }
}

static edge_status cumsum_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "CUMSUM", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (x->dtype != EDGE_FLOAT32 && x->dtype != EDGE_INT32 && x->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "CUMSUM '%s': input '%s' is %s; float32, int32 and int64 are supported",
                     edge_tensor_name(y), edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "CUMSUM '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int32_t axis = node->options.cumsum.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "CUMSUM '%s': axis %d is out of range for input '%s' of rank %d",
                     edge_tensor_name(y), node->options.cumsum.axis, edge_tensor_name(x), x->rank);
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

static edge_status cumsum_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.cumsum.axis;
  edge_normalize_axis(&axis, x->rank);
  int64_t n = x->shape[axis];
  int64_t outer = edge_num_elements(axis, x->shape), inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
  if (outer * n * inner == 0) return EDGE_OK;
  /* Column tiles of at least 256 elements keep each thread on whole cache lines. */
  int64_t tile_width = inner < 256 ? inner : 256;
  cumsum_job job = {x->data, y->data, outer, n, inner, (inner + tile_width - 1) / tile_width, tile_width,
                    node->options.cumsum.exclusive, node->options.cumsum.reverse, node->options.cumsum.product, x->dtype,
                    x->dtype == EDGE_FLOAT32
                        ? edge_kernels()->vector.binary_vv[node->options.cumsum.product ? EDGE_BINARY_MUL : EDGE_BINARY_ADD]
                        : NULL};
  int64_t work_per_tile = n * tile_width;
  int64_t tiles_per_thread = work_per_tile >= 16384 ? 1 : 16384 / work_per_tile;
  edge_nd_parallel(ctx, outer * job.column_tiles, tiles_per_thread, cumsum_tiles, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_cumsum = {cumsum_prepare, cumsum_eval, NULL};

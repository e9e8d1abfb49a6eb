/* A strided N-d iterator shared by the elementwise and data-movement reference kernels.
 *
 * An iteration space is a row-major shape walked in linear order; each operand (the output, the
 * inputs) has its own element strides over that space plus a base offset. Broadcasting is a stride
 * of 0, a transpose is permuted strides, a slice is scaled strides with a base. Kernels get the
 * space as contiguous "runs" along the innermost dimension, so the per-element work is a plain loop
 * with one stride per operand.
 *
 * Collapsing merges adjacent dimensions that every operand walks contiguously, so same-shape
 * elementwise work becomes one run and a bias add over channels becomes runs of C elements.
 * Collapsing keeps the linear order, so linear ranges of the space are ranges of a contiguous
 * output, which is how work is split over threads (bit-identical for any thread count).
 */
#ifndef EDGE_OPS_BROADCAST_H
#define EDGE_OPS_BROADCAST_H

#include "../internal.h"
#include "tensor_access.h"

#define EDGE_ND_MAX_OPERANDS 4

typedef struct {
  int32_t rank; /* >= 1 after edge_nd_iter_init: a scalar space is [1] */
  int32_t num_operands;
  int64_t shape[EDGE_MAX_RANK];
  int64_t strides[EDGE_ND_MAX_OPERANDS][EDGE_MAX_RANK];
  int64_t base[EDGE_ND_MAX_OPERANDS];
  int64_t total;
} edge_nd_iter;

/* A run: count elements, operand k starting at element offsets[k] and stepping
 * iter->strides[k][iter->rank - 1]. */
typedef void (*edge_nd_run_fn)(void *arg, const int64_t *offsets, int64_t count);

/* Row-major contiguous strides of shape. */
void edge_nd_contiguous_strides(int32_t rank, const int64_t *shape, int64_t *strides);

/* Strides that read a tensor of in_shape (contiguous) broadcast to out_shape (numpy rules: aligned
 * to the right, stride 0 where the input's dimension is 1 or missing). The caller has checked that
 * the shapes broadcast. */
void edge_nd_broadcast_strides(int32_t out_rank, const int64_t *out_shape, int32_t in_rank,
                               const int64_t *in_shape, int64_t *strides);

/* Sets up a space of rank/shape with num_operands operands whose strides are strides[k] (rank
 * entries each) and bases zero, then collapses it. */
void edge_nd_iter_init(edge_nd_iter *it, int32_t rank, const int64_t *shape, int32_t num_operands,
                       const int64_t *const *strides);
/* Drops size-1 dimensions and merges dimensions every operand walks contiguously. Call again after
 * changing strides or bases by hand. */
void edge_nd_iter_collapse(edge_nd_iter *it);

/* Calls fn for every run covering linear positions [begin, end) of the space. */
void edge_nd_iter_runs(const edge_nd_iter *it, int64_t begin, int64_t end, edge_nd_run_fn fn, void *arg);

/* Runs fn over [0, n) on the context's pool, in tiles of min_per_thread items (coarser where that
 * would make more than 256), when there are at least two; else on the caller in one call. fn must
 * give the same result for any split. */
void edge_nd_parallel(edge_context *ctx, int64_t n, int64_t min_per_thread, edge_parallel_fn fn, void *arg);

/* Numpy broadcast of num_shapes shapes; EDGE_INVALID_MODEL naming the op's output if they clash. */
edge_status edge_nd_broadcast_shapes(edge_context *ctx, const char *what, int32_t num_shapes,
                                     const int32_t *ranks, const int64_t *const *shapes, int32_t *out_rank,
                                     int64_t *out_shape);

/* Copies count elements of elem_size bytes between strided positions (strides in elements). */
void edge_nd_copy_strided(void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t count,
                          size_t elem_size);

/* dst[i] = src[source[i]] for i < count, elements of elem_size bytes (indices in elements). */
void edge_nd_gather_elements(void *dst, const void *src, const int64_t *source, int64_t count, size_t elem_size);

/* Copies elements of elem_size bytes from src to dst over a two-operand space (operand 0: dst,
 * operand 1: src), split over the context's threads. */
void edge_nd_copy(edge_context *ctx, const edge_nd_iter *iter, void *dst, const void *src, size_t elem_size);

#endif

/* TRANSPOSE: y[i0..in] = x[permuted], any dtype. The output is walked contiguously while x is read
 * through permuted strides; collapsing merges dimensions that stay adjacent under the permutation,
 * so e.g. NHWC -> NCHW becomes a 3-d walk.
 *
 * When the collapsed walk's innermost dimension is contiguous in both x and y (a permutation that
 * keeps x's last dimensions last: depth-to-space, pixel shuffle, [B,T,H,D] -> [B,H,T,D]), that
 * dimension is one wider element: the shuffle of 2 x 2 blocks of one channel becomes a 2-d walk
 * of 8-byte elements instead of one call per run of 2 floats.
 *
 * Above EDGE_ISA_SCALAR, 4-byte elements whose collapsed walk reads x with a stride in the
 * innermost dimension (a real transpose: 2-d, NHWC <-> NCHW, ...) are copied as 2-d tiles by the
 * vector family's transpose kernel: x's contiguous dimension against y's, every other dimension an
 * outer loop, work split over (outer, block of 64 y-rows). Walks whose innermost reads are
 * contiguous (e.g. [B,T,H,D] -> [B,H,T,D]) already copy whole runs and keep the strided copy,
 * which is also the reference EDGE_ISA=scalar runs. */
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"

typedef struct {
  edge_nd_iter iter;
  /* Tiled path: dim `contiguous` is x's stride-1 dim, `last` y's; -1 when it does not apply. */
  int32_t contiguous, last;
  int64_t outer_count, row_blocks;
  size_t element_size; /* bytes moved as one element: the dtype's, times a shared contiguous run */
} transpose_plan;

#define TRANSPOSE_ROW_BLOCK 64

/* Folds a collapsed innermost dimension that both operands walk with stride 1 into the element. */
static void widen_elements(transpose_plan *plan) {
  edge_nd_iter *it = &plan->iter;
  int32_t last = it->rank - 1;
  if (it->rank < 2 || it->total == 0 || it->strides[0][last] != 1 || it->strides[1][last] != 1) return;
  /* Every other dimension is outside that run in x and in y, so its strides are multiples of it. */
  int64_t run = it->shape[last];
  plan->element_size *= (size_t)run;
  for (int32_t k = 0; k < 2; ++k)
    for (int32_t d = 0; d < last; ++d) it->strides[k][d] /= run;
  it->rank = last;
  it->total /= run;
}

static void plan_tiles(transpose_plan *plan, size_t elem_size) {
  const edge_nd_iter *it = &plan->iter;
  plan->contiguous = plan->last = -1;
  int32_t last = it->rank - 1;
  if (elem_size != 4 || it->rank < 2 || it->strides[1][last] == 1) return;
  for (int32_t d = 0; d < last; ++d)
    if (it->strides[1][d] == 1) plan->contiguous = d;
  if (plan->contiguous < 0) return;
  plan->last = last;
  plan->outer_count = 1;
  for (int32_t d = 0; d < last; ++d)
    if (d != plan->contiguous) plan->outer_count *= it->shape[d];
  plan->row_blocks = (it->shape[last] + TRANSPOSE_ROW_BLOCK - 1) / TRANSPOSE_ROW_BLOCK;
}

typedef struct {
  const transpose_plan *plan;
  edge_x32_transpose_ukernel kernel;
  const uint32_t *x;
  uint32_t *y;
} transpose_job;

static void transpose_tiles(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const transpose_job *job = arg;
  const transpose_plan *p = job->plan;
  const edge_nd_iter *it = &p->iter;
  int32_t c = p->contiguous, l = p->last;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t outer = unit / p->row_blocks, block = unit % p->row_blocks;
    int64_t x_offset = it->base[1], y_offset = it->base[0];
    for (int32_t d = l - 1; d >= 0; --d) {
      if (d == c) continue;
      int64_t i = outer % it->shape[d];
      outer /= it->shape[d];
      x_offset += i * it->strides[1][d];
      y_offset += i * it->strides[0][d];
    }
    int64_t row0 = block * TRANSPOSE_ROW_BLOCK;
    int64_t rows = it->shape[l] - row0 < TRANSPOSE_ROW_BLOCK ? it->shape[l] - row0 : TRANSPOSE_ROW_BLOCK;
    job->kernel((size_t)rows, (size_t)it->shape[c], job->x + x_offset + row0 * it->strides[1][l],
                (size_t)it->strides[1][l], job->y + y_offset + row0, (size_t)it->strides[0][c]);
  }
}

static edge_status transpose_prepare(edge_context *ctx, edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "TRANSPOSE", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const edge_transpose_options *options = &node->options.transpose;
  int32_t rank = x->rank, perm[EDGE_MAX_RANK];
  if (options->rank == 0) { /* ONNX's default: reverse the dimensions */
    for (int32_t d = 0; d < rank; ++d) perm[d] = rank - 1 - d;
  } else {
    if (options->rank != rank)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "TRANSPOSE '%s': perm has %d entries but input '%s' has rank %d",
                       edge_tensor_name(y), options->rank, edge_tensor_name(x), rank);
    bool seen[EDGE_MAX_RANK] = {false};
    for (int32_t d = 0; d < rank; ++d) {
      int32_t p = options->perm[d];
      if (p < 0 || p >= rank || seen[p])
        return edge_fail(ctx, EDGE_INVALID_MODEL,
                         "TRANSPOSE '%s': perm entry %d is %d, not a permutation of 0..%d", edge_tensor_name(y), d, p,
                         rank - 1);
      seen[p] = true;
      perm[d] = p;
    }
  }
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "TRANSPOSE '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  int64_t shape[EDGE_MAX_RANK], x_strides[EDGE_MAX_RANK], y_strides[EDGE_MAX_RANK], read_strides[EDGE_MAX_RANK];
  for (int32_t d = 0; d < rank; ++d) shape[d] = x->shape[perm[d]];
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  transpose_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "TRANSPOSE '%s': out of memory", edge_tensor_name(y));
  edge_nd_contiguous_strides(rank, x->shape, x_strides);
  edge_nd_contiguous_strides(rank, shape, y_strides);
  for (int32_t d = 0; d < rank; ++d) read_strides[d] = x_strides[perm[d]];
  const int64_t *strides[2] = {y_strides, read_strides};
  edge_nd_iter_init(&plan->iter, rank, shape, 2, strides);
  plan->element_size = edge_dtype_size(x->dtype);
  widen_elements(plan);
  plan_tiles(plan, plan->element_size);
  node->plan = plan;
  return EDGE_OK;
}

static edge_status transpose_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const transpose_plan *plan = node->plan;
  edge_x32_transpose_ukernel kernel = edge_kernels()->vector.transpose;
  if (kernel && plan->contiguous >= 0 && plan->iter.total > 0) {
    transpose_job job = {plan, kernel, x->data, y->data};
    int64_t units = plan->outer_count * plan->row_blocks;
    int64_t per_unit = plan->iter.total / (units ? units : 1);
    edge_nd_parallel(ctx, units, 1 + 16384 / (per_unit + 1), transpose_tiles, &job);
    return EDGE_OK;
  }
  edge_nd_copy(ctx, &plan->iter, y->data, x->data, plan->element_size);
  return EDGE_OK;
}

static void transpose_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_transpose = {transpose_prepare, transpose_eval, transpose_release};

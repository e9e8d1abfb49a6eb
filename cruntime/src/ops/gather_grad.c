/* GATHER_GRAD: (dy, indices int32|int64) -> dx, the gradient of GATHER along AxisOptions.axis.
 *
 * dx's shape comes from its output tensor (the gathered-from data's shape; its leading dimensions
 * before the axis follow dy when the batch was resized); dy must be dx's shape with the axis
 * replaced by the indices' shape. dx is zero-filled, then every dy row is added to the dx row its
 * index names: duplicates accumulate in index order, negative indices count from the end, and an
 * index out of range is EDGE_RUNTIME_ERROR (checked before anything is written).
 *
 * Cells are (outer position, block of 256 columns of a row): a cell walks every index in order, so
 * each dx value has one owner and one summation order whatever the thread count. */
#include <string.h>

#include "ops.h"
#include "training.h"

#define GATHER_GRAD_COLUMNS 256

static int64_t index_at(const edge_tensor *indices, int64_t i) {
  return indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[i] : ((const int64_t *)indices->data)[i];
}

static edge_status gather_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "GATHER_GRAD";
  edge_status status = edge_training_check_arity(ctx, node, op, 2, 2, 1, 1, false);
  if (status != EDGE_OK) return status;
  edge_tensor *dy = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *dx = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(dx);
  if ((status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "output", dx)) != EDGE_OK)
    return status;
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': indices '%s' are %s, expected int32 or int64", op, name,
                     edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  int32_t rank = dx->declared_rank, axis = node->options.axis.axis;
  if (!edge_normalize_axis(&axis, rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': axis %d is out of range for the output's rank %d", op, name,
                     node->options.axis.axis, rank);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d < rank; ++d) shape[d] = dx->declared_shape[d];
  /* Dimensions before the axis are batch-like: take them from dy so a resized batch flows through. */
  bool fits = dy->rank == rank - 1 + indices->rank;
  for (int32_t d = 0; fits && d < axis; ++d) shape[d] = dy->shape[d];
  for (int32_t d = 0; fits && d < indices->rank; ++d) fits = dy->shape[axis + d] == indices->shape[d];
  for (int32_t d = axis + 1; fits && d < rank; ++d) fits = dy->shape[d - 1 + indices->rank] == shape[d];
  if (!fits) {
    char ds[128], is[128], xs[128];
    edge_format_shape(ds, sizeof ds, dy->rank, dy->shape);
    edge_format_shape(is, sizeof is, indices->rank, indices->shape);
    edge_format_shape(xs, sizeof xs, rank, shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': gradient '%s' is %s, but gathering indices '%s' %s along axis %d of %s gives another shape",
                     op, name, edge_tensor_name(dy), ds, edge_tensor_name(indices), is, axis, xs);
  }
  return edge_set_shape(ctx, dx, rank, shape);
}

typedef struct {
  const edge_tensor *indices;
  const float *dy;
  float *dx;
  int64_t count, dim, row, column_blocks;
} gather_grad_job;

static void gather_grad_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const gather_grad_job *job = arg;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t o = cell / job->column_blocks, c0 = cell % job->column_blocks * GATHER_GRAD_COLUMNS;
    int64_t cols = job->row - c0 < GATHER_GRAD_COLUMNS ? job->row - c0 : GATHER_GRAD_COLUMNS;
    float *dx = job->dx + o * job->dim * job->row + c0;
    for (int64_t i = 0; i < job->dim; ++i) memset(dx + i * job->row, 0, (size_t)cols * sizeof(float));
    const float *dy = job->dy + o * job->count * job->row + c0;
    for (int64_t j = 0; j < job->count; ++j) {
      int64_t index = index_at(job->indices, j);
      if (index < 0) index += job->dim;
      float *to = dx + index * job->row;
      const float *from = dy + j * job->row;
      for (int64_t c = 0; c < cols; ++c) to[c] += from[c];
    }
  }
}

static edge_status gather_grad_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *dy = edge_op_input(ctx, node, 0), *indices = edge_op_input(ctx, node, 1);
  edge_tensor *dx = edge_op_output(ctx, node, 0);
  int32_t axis = node->options.axis.axis;
  edge_normalize_axis(&axis, dx->rank);
  int64_t count = edge_num_elements(indices->rank, indices->shape), dim = dx->shape[axis];
  for (int64_t j = 0; j < count; ++j) {
    int64_t index = index_at(indices, j);
    if (index < -dim || index >= dim)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "GATHER_GRAD '%s': index %lld (element %lld of '%s') is out of range for axis %d, which has "
                       "%lld entries",
                       edge_tensor_name(dx), (long long)index, (long long)j, edge_tensor_name(indices), axis, (long long)dim);
  }
  gather_grad_job job = {indices, dy->data, dx->data, count, dim,
                         edge_num_elements(dx->rank - axis - 1, dx->shape + axis + 1), 0};
  int64_t outer = edge_num_elements(axis, dx->shape);
  if (job.row == 0 || outer == 0 || dim == 0) return EDGE_OK;
  job.column_blocks = (job.row + GATHER_GRAD_COLUMNS - 1) / GATHER_GRAD_COLUMNS;
  edge_nd_parallel(ctx, outer * job.column_blocks, 1 + 65536 / ((count + dim) * GATHER_GRAD_COLUMNS + 1),
                   gather_grad_cells, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_gather_grad = {gather_grad_prepare, gather_grad_eval, NULL};

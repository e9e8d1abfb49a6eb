/* FULLY_CONNECTED and BATCH_MATMUL, float32 scalar reference.
 *
 * Every output element is a sum over k in increasing order starting from zero, computed by one
 * thread, so results are bit-identical for any thread count. Work is split over (row, block of
 * output columns) so that a single-row product (batch-1 FC, a decoder step) still spreads over
 * the threads.
 *
 * FULLY_CONNECTED: x[..., K] . w[N, K]^T + bias; dot products over contiguous K, four outputs at a
 * time for independent accumulation chains.
 * BATCH_MATMUL: per batch element, y[m, :] += a[m, k] * b[k, :] streams the rows of b; with
 * transpose_b the rows of b are the dot products' contiguous operand instead. Batch dimensions
 * broadcast (numpy); prepare turns each output batch index into the two input offsets.
 *
 * Above EDGE_ISA_SCALAR both run on the GEMM family (kernels/gemm.h) instead; the loops above stay
 * as the reference EDGE_ISA=scalar runs. Constant weights (and bias) are packed once at prepare
 * into node->plan; a B computed by the graph (attention's K^T) is packed per call into scratch.
 * BATCH_MATMUL folds the batch into M when every batch element multiplies the same B by
 * consecutive rows of A (MatMul of [batch, m, k] by a [k, n] weight); otherwise small products
 * go over the threads one batch element each (each thread packs into its own scratch slot), large
 * ones one after another with the GEMM's own split. Results do not depend on the path or the
 * threads: every output is the same chain of multiply-adds (gemm.h). */
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

/* The GEMM kernels when the picked level has them, NULL for the scalar reference. */
static const edge_gemm_kernels *fast_gemm(void) {
  const edge_kernel_config *config = edge_kernels();
  return config->isa == EDGE_ISA_SCALAR ? NULL : &config->gemm;
}

static size_t round_up_64(size_t bytes) { return (bytes + 63) / 64 * 64; }

#define FC_BLOCK 4
#define MATMUL_COLUMN_BLOCK 64

static edge_status check_float32(edge_context *ctx, const char *op, const edge_tensor *t, const char *role) {
  if (t->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' is %s; only float32 is supported", op, role, edge_tensor_name(t),
                     edge_dtype_name(t->dtype));
  return EDGE_OK;
}

/* Input/output counts, and every index a tensor; inputs from optional_from on may be -1. */
static edge_status check_indices(edge_context *ctx, const edge_node *node, const char *op, int32_t min_inputs,
                                 int32_t max_inputs, int32_t optional_from) {
  if (node->num_inputs < min_inputs || node->num_inputs > max_inputs || node->num_outputs != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d inputs and %d outputs, expects %d to %d inputs and 1 output",
                     op, node->num_inputs, node->num_outputs, min_inputs, max_inputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < (i >= optional_from ? -1 : 0) || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input %d is tensor %d, not one of the %d tensors", op, i,
                       node->inputs[i], ctx->num_tensors);
  if (node->outputs[0] < 0 || node->outputs[0] >= ctx->num_tensors)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: output is tensor %d, not one of the %d tensors", op,
                     node->outputs[0], ctx->num_tensors);
  return EDGE_OK;
}

typedef struct {
  int64_t rows, depth, columns; /* M, K, N */
  const edge_gemm_kernels *gemm; /* NULL: reference loops */
  void *packed;                  /* weights + bias packed at prepare; NULL: packed per call in scratch */
} fc_plan;

static void fc_release(edge_node *node) {
  if (node->quantized) {
    edge_qfc_release(node);
    return;
  }
  fc_plan *plan = node->plan;
  if (plan) free(plan->packed);
  free(plan);
  node->plan = NULL;
}

static edge_status fc_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "FULLY_CONNECTED";
  fc_release(node);
  edge_status status = check_indices(ctx, node, op, 2, 3, 2);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *w = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  if (edge_q_is_int8(w)) return edge_qfc_prepare(ctx, node); /* int8 or dynamic */
  if ((status = check_float32(ctx, op, x, "input")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, w, "weights")) != EDGE_OK) return status;
  if (bias && (status = check_float32(ctx, op, bias, "bias")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, y, "output")) != EDGE_OK) return status;
  char xs[128], ws[128];
  edge_format_shape(xs, sizeof xs, x->rank, x->shape);
  edge_format_shape(ws, sizeof ws, w->rank, w->shape);
  if (x->rank < 1 || w->rank != 2 || w->shape[1] != x->shape[x->rank - 1])
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' %s and weights '%s' %s do not fit x[..., K], w[N, K]",
                     op, edge_tensor_name(y), edge_tensor_name(x), xs, edge_tensor_name(w), ws);
  if (bias && (bias->rank != 1 || bias->shape[0] != w->shape[0]))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': bias '%s' must have shape [%lld]", op, edge_tensor_name(y),
                     edge_tensor_name(bias), (long long)w->shape[0]);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d < x->rank - 1; ++d) shape[d] = x->shape[d];
  shape[x->rank - 1] = w->shape[0];
  if ((status = edge_set_shape(ctx, y, x->rank, shape)) != EDGE_OK) return status;
  fc_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, edge_tensor_name(y));
  plan->rows = edge_num_elements(x->rank - 1, x->shape);
  plan->depth = w->shape[1];
  plan->columns = w->shape[0];
  node->plan = plan;
  plan->gemm = fast_gemm();
  if (plan->gemm) {
    const size_t bytes = edge_gemm_packed_bytes(plan->gemm, (size_t)plan->columns, (size_t)plan->depth);
    if (w->kind == EDGE_TENSOR_CONSTANT && (!bias || bias->kind == EDGE_TENSOR_CONSTANT)) {
      plan->packed = aligned_alloc(64, bytes ? bytes : 64);
      node->plan_bytes = bytes;
      if (!plan->packed)
        return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory packing %zu bytes of weights '%s'", op,
                         edge_tensor_name(y), bytes, edge_tensor_name(w));
      edge_gemm_pack_weights(plan->gemm, (size_t)plan->columns, (size_t)plan->depth, w->data, (size_t)plan->depth,
                             bias ? bias->data : NULL, plan->packed);
    } else {
      node->scratch_bytes = bytes;
    }
  }
  return EDGE_OK;
}

typedef struct {
  const edge_node *node;
  const fc_plan *plan;
  const float *x, *w, *bias;
  float *y;
  int64_t blocks_per_row;
} fc_job;

static void fc_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const fc_job *job = arg;
  int64_t k_size = job->plan->depth, n_size = job->plan->columns;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t m = unit / job->blocks_per_row, n0 = unit % job->blocks_per_row * FC_BLOCK;
    int64_t n1 = n0 + FC_BLOCK < n_size ? n0 + FC_BLOCK : n_size;
    const float *x = job->x + m * k_size;
    float *y = job->y + m * n_size;
    int64_t n = n0;
    if (n1 - n0 == FC_BLOCK) {
      const float *w0 = job->w + n * k_size, *w1 = w0 + k_size, *w2 = w1 + k_size, *w3 = w2 + k_size;
      float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
      for (int64_t k = 0; k < k_size; ++k) {
        float v = x[k];
        a0 += v * w0[k];
        a1 += v * w1[k];
        a2 += v * w2[k];
        a3 += v * w3[k];
      }
      y[n] = a0;
      y[n + 1] = a1;
      y[n + 2] = a2;
      y[n + 3] = a3;
      n += FC_BLOCK;
    }
    for (; n < n1; ++n) {
      const float *wn = job->w + n * k_size;
      float a = 0.0f;
      for (int64_t k = 0; k < k_size; ++k) a += x[k] * wn[k];
      y[n] = a;
    }
    if (job->bias)
      for (n = n0; n < n1; ++n) y[n] += job->bias[n];
    edge_activation_apply(&job->node->activation, y + n0, (size_t)(n1 - n0));
  }
}

static edge_status fc_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qfc_eval(ctx, node);
  const fc_plan *plan = node->plan;
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  if (plan->gemm) {
    const void *packed = plan->packed;
    if (!packed) {
      edge_gemm_pack_weights(plan->gemm, (size_t)plan->columns, (size_t)plan->depth, edge_op_input(ctx, node, 1)->data,
                             (size_t)plan->depth, bias ? bias->data : NULL, node->scratch);
      packed = node->scratch;
    }
    edge_gemm_compute(plan->gemm, ctx->pool, (size_t)plan->rows, (size_t)plan->columns, (size_t)plan->depth,
                      edge_op_input(ctx, node, 0)->data, (size_t)plan->depth, packed, edge_op_output(ctx, node, 0)->data,
                      (size_t)plan->columns, &node->activation);
    return EDGE_OK;
  }
  fc_job job = {node, plan, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                bias ? bias->data : NULL, edge_op_output(ctx, node, 0)->data, (plan->columns + FC_BLOCK - 1) / FC_BLOCK};
  edge_nd_parallel(ctx, plan->rows * job.blocks_per_row, 1 + 16384 / (FC_BLOCK * plan->depth + 1), fc_blocks, &job);
  return EDGE_OK;
}

typedef struct {
  bool transpose_a, transpose_b;
  int64_t batch, m, k, n;
  int64_t *a_offsets, *b_offsets; /* per output batch index, in elements */
  const edge_gemm_kernels *gemm;  /* NULL: reference loops */
  bool fold_batch;                /* one GEMM with M = batch * m */
  bool by_batch;                  /* batch elements spread over the threads */
  void *packed_b;                 /* constant B: each of its matrices packed at prepare, else NULL */
  size_t packed_bytes;            /* one packed B matrix */
  size_t slot_bytes;              /* per-thread scratch: packed B (not constant) + A^T (transpose_a) */
  int32_t slots;
} matmul_plan;

static void matmul_release(edge_node *node) {
  if (node->quantized) {
    edge_qmatmul_release(node);
    return;
  }
  matmul_plan *plan = node->plan;
  if (plan) {
    free(plan->a_offsets);
    free(plan->b_offsets);
    free(plan->packed_b);
  }
  free(plan);
  node->plan = NULL;
}

static void matmul_pack_b(const matmul_plan *p, const float *b, void *packed) {
  if (p->transpose_b) edge_gemm_pack_weights(p->gemm, (size_t)p->n, (size_t)p->k, b, (size_t)p->k, NULL, packed);
  else edge_gemm_pack_weights_kn(p->gemm, (size_t)p->n, (size_t)p->k, b, (size_t)p->n, NULL, packed);
}

/* Products below this many multiply-adds per batch element go over the threads by batch. */
#define MATMUL_SMALL_MACS (1u << 20)

static edge_status matmul_prepare_gemm(edge_context *ctx, edge_node *node, matmul_plan *p, const edge_tensor *b) {
  p->gemm = fast_gemm();
  if (!p->gemm || p->batch == 0 || p->m == 0 || p->n == 0) return EDGE_OK;
  p->packed_bytes = round_up_64(edge_gemm_packed_bytes(p->gemm, (size_t)p->n, (size_t)p->k));
  const int64_t b_matrices = edge_num_elements(b->rank - 2, b->shape);
  p->fold_batch = !p->transpose_a && b_matrices == 1;
  for (int64_t i = 0; p->fold_batch && i < p->batch; ++i) p->fold_batch = p->a_offsets[i] == i * p->m * p->k;
  if (b->kind == EDGE_TENSOR_CONSTANT) {
    p->packed_b = aligned_alloc(64, (size_t)b_matrices * p->packed_bytes);
    node->plan_bytes = (size_t)b_matrices * p->packed_bytes;
    if (!p->packed_b)
      return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "BATCH_MATMUL '%s': out of memory packing %lld x %zu bytes of '%s'",
                       edge_tensor_name(edge_op_output(ctx, node, 0)), (long long)b_matrices, p->packed_bytes,
                       edge_tensor_name(b));
    for (int64_t j = 0; j < b_matrices; ++j)
      matmul_pack_b(p, (const float *)b->data + j * p->k * p->n, (char *)p->packed_b + (size_t)j * p->packed_bytes);
  }
  p->slot_bytes = (p->packed_b ? 0 : p->packed_bytes) + (p->transpose_a ? round_up_64((size_t)(p->m * p->k) * 4) : 0);
  int32_t threads = ctx->num_threads > 1 ? ctx->num_threads : 1;
  if (ctx->pool && edge_threadpool_size(ctx->pool) > threads) threads = edge_threadpool_size(ctx->pool);
  p->by_batch = !p->fold_batch && p->batch > 1 && threads > 1 &&
                ((double)p->m * (double)p->n * (double)p->k < MATMUL_SMALL_MACS || p->batch >= 4 * threads);
  p->slots = p->by_batch ? threads : 1;
  node->scratch_bytes = p->slot_bytes * (size_t)p->slots;
  return EDGE_OK;
}

static edge_status matmul_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_MATMUL";
  matmul_release(node);
  edge_status status = check_indices(ctx, node, op, 2, 2, 2);
  if (status != EDGE_OK) return status;
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  if (edge_q_is_int8(b)) return edge_qmatmul_prepare(ctx, node); /* int8 or dynamic */
  if ((status = check_float32(ctx, op, a, "input")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, b, "input")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, y, "output")) != EDGE_OK) return status;
  char as[128], bs[128];
  edge_format_shape(as, sizeof as, a->rank, a->shape);
  edge_format_shape(bs, sizeof bs, b->rank, b->shape);
  if (a->rank < 2 || b->rank < 2)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': inputs '%s' %s and '%s' %s must both have rank >= 2", op,
                     edge_tensor_name(y), edge_tensor_name(a), as, edge_tensor_name(b), bs);
  const edge_batch_matmul_options *o = &node->options.batch_matmul;
  int64_t a_rows = a->shape[a->rank - 2], a_cols = a->shape[a->rank - 1];
  int64_t b_rows = b->shape[b->rank - 2], b_cols = b->shape[b->rank - 1];
  int64_t m = o->transpose_a ? a_cols : a_rows, k = o->transpose_a ? a_rows : a_cols;
  int64_t n = o->transpose_b ? b_rows : b_cols, kb = o->transpose_b ? b_cols : b_rows;
  if (k != kb)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': inputs '%s' %s and '%s' %s (transpose_a %d, transpose_b %d) disagree on K: %lld vs %lld",
                     op, edge_tensor_name(y), edge_tensor_name(a), as, edge_tensor_name(b), bs, o->transpose_a, o->transpose_b,
                     (long long)k, (long long)kb);
  int32_t batch_ranks[2] = {a->rank - 2, b->rank - 2}, rank;
  const int64_t *batch_shapes[2] = {a->shape, b->shape};
  int64_t shape[EDGE_MAX_RANK];
  if ((status = edge_nd_broadcast_shapes(ctx, edge_tensor_name(y), 2, batch_ranks, batch_shapes, &rank, shape)) != EDGE_OK)
    return status;
  shape[rank] = m;
  shape[rank + 1] = n;
  if ((status = edge_set_shape(ctx, y, rank + 2, shape)) != EDGE_OK) return status;

  matmul_plan *plan = calloc(1, sizeof *plan);
  int64_t batch = edge_num_elements(rank, shape);
  if (plan) {
    plan->a_offsets = malloc((size_t)(batch ? batch : 1) * sizeof(int64_t));
    plan->b_offsets = malloc((size_t)(batch ? batch : 1) * sizeof(int64_t));
  }
  node->plan = plan;
  if (!plan || !plan->a_offsets || !plan->b_offsets)
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory for %lld batch offsets", op, edge_tensor_name(y),
                     (long long)batch);
  plan->transpose_a = o->transpose_a;
  plan->transpose_b = o->transpose_b;
  plan->batch = batch;
  plan->m = m;
  plan->k = k;
  plan->n = n;
  int64_t a_strides[EDGE_MAX_RANK] = {0}, b_strides[EDGE_MAX_RANK] = {0}, index[EDGE_MAX_RANK] = {0};
  edge_nd_broadcast_strides(rank, shape, a->rank - 2, a->shape, a_strides);
  edge_nd_broadcast_strides(rank, shape, b->rank - 2, b->shape, b_strides);
  for (int64_t i = 0; i < batch; ++i) {
    int64_t a_offset = 0, b_offset = 0;
    for (int32_t d = 0; d < rank; ++d) {
      a_offset += index[d] * a_strides[d];
      b_offset += index[d] * b_strides[d];
    }
    plan->a_offsets[i] = a_offset * m * k;
    plan->b_offsets[i] = b_offset * k * n;
    for (int32_t d = rank - 1; d >= 0 && ++index[d] == shape[d]; --d) index[d] = 0;
  }
  return matmul_prepare_gemm(ctx, node, plan, b);
}

typedef struct {
  const edge_node *node;
  const matmul_plan *plan;
  const float *a, *b;
  float *y;
  int64_t blocks_per_row;
} matmul_job;

static void matmul_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const matmul_job *job = arg;
  const matmul_plan *p = job->plan;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t row = unit / job->blocks_per_row, n0 = unit % job->blocks_per_row * MATMUL_COLUMN_BLOCK;
    int64_t n1 = n0 + MATMUL_COLUMN_BLOCK < p->n ? n0 + MATMUL_COLUMN_BLOCK : p->n;
    int64_t batch = row / p->m, m = row % p->m;
    const float *a = job->a + p->a_offsets[batch], *b = job->b + p->b_offsets[batch];
    int64_t a_step = p->transpose_a ? p->m : 1; /* a[m, k] is a[m * a_row + k * a_step] */
    const float *a_row = a + (p->transpose_a ? m : m * p->k);
    float *y = job->y + row * p->n;
    if (p->transpose_b) {
      for (int64_t n = n0; n < n1; ++n) {
        const float *b_row = b + n * p->k;
        float acc = 0.0f;
        for (int64_t k = 0; k < p->k; ++k) acc += a_row[k * a_step] * b_row[k];
        y[n] = acc;
      }
    } else {
      for (int64_t n = n0; n < n1; ++n) y[n] = 0.0f;
      for (int64_t k = 0; k < p->k; ++k) {
        float v = a_row[k * a_step];
        const float *b_row = b + k * p->n;
        for (int64_t n = n0; n < n1; ++n) y[n] += v * b_row[n];
      }
    }
    edge_activation_apply(&job->node->activation, y + n0, (size_t)(n1 - n0));
  }
}

typedef struct {
  edge_context *ctx;
  const edge_node *node;
  const matmul_plan *plan;
  const float *a, *b;
  float *y;
} matmul_gemm_job;

/* Batch elements [begin, end) in scratch slot `slot`; pool: the GEMM's own split, or NULL. */
static void matmul_gemm_batches(const matmul_gemm_job *job, int64_t begin, int64_t end, int32_t slot,
                                edge_threadpool *pool) {
  const matmul_plan *p = job->plan;
  char *scratch = (char *)job->node->scratch + (size_t)slot * p->slot_bytes;
  void *packed_scratch = scratch;
  float *a_transposed = (float *)(scratch + (p->packed_b ? 0 : p->packed_bytes));
  int64_t packed_offset = -1;
  for (int64_t i = begin; i < end; ++i) {
    const void *packed;
    if (p->packed_b) {
      packed = (const char *)p->packed_b + (size_t)(p->b_offsets[i] / (p->k * p->n)) * p->packed_bytes;
    } else {
      if (packed_offset != p->b_offsets[i]) matmul_pack_b(p, job->b + p->b_offsets[i], packed_scratch);
      packed_offset = p->b_offsets[i];
      packed = packed_scratch;
    }
    const float *a = job->a + p->a_offsets[i];
    if (p->transpose_a) {
      for (int64_t r = 0; r < p->m; ++r)
        for (int64_t q = 0; q < p->k; ++q) a_transposed[r * p->k + q] = a[q * p->m + r];
      a = a_transposed;
    }
    edge_gemm_compute(p->gemm, pool, (size_t)p->m, (size_t)p->n, (size_t)p->k, a, (size_t)p->k, packed,
                      job->y + i * p->m * p->n, (size_t)p->n, &job->node->activation);
  }
}

static void matmul_gemm_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  matmul_gemm_batches(arg, begin, end, thread, NULL);
}

static edge_status matmul_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qmatmul_eval(ctx, node);
  const matmul_plan *p = node->plan;
  if (p->gemm) {
    if (p->batch == 0 || p->m == 0 || p->n == 0) return EDGE_OK;
    matmul_gemm_job job = {ctx, node, p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                           edge_op_output(ctx, node, 0)->data};
    if (p->fold_batch) {
      const void *packed = p->packed_b;
      if (!packed) {
        matmul_pack_b(p, job.b, node->scratch);
        packed = node->scratch;
      }
      edge_gemm_compute(p->gemm, ctx->pool, (size_t)(p->batch * p->m), (size_t)p->n, (size_t)p->k, job.a,
                        (size_t)p->k, packed, job.y, (size_t)p->n, &node->activation);
    } else if (p->by_batch && ctx->pool && edge_threadpool_size(ctx->pool) <= p->slots) {
      edge_nd_parallel(ctx, p->batch, 1, matmul_gemm_range, &job);
    } else {
      matmul_gemm_batches(&job, 0, p->batch, 0, ctx->pool);
    }
    return EDGE_OK;
  }
  matmul_job job = {node, p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                    edge_op_output(ctx, node, 0)->data, (p->n + MATMUL_COLUMN_BLOCK - 1) / MATMUL_COLUMN_BLOCK};
  edge_nd_parallel(ctx, p->batch * p->m * job.blocks_per_row, 1 + 16384 / (MATMUL_COLUMN_BLOCK * p->k + 1),
                   matmul_blocks, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_fully_connected = {fc_prepare, fc_eval, fc_release};
const edge_op_registration edge_op_batch_matmul = {matmul_prepare, matmul_eval, matmul_release};

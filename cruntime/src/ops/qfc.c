/* FULLY_CONNECTED and BATCH_MATMUL on int8 tensors, in the two modes dtypes pick:
 *
 *   int8:    x int8, w int8 (FC: [N, K] per output channel, symmetric; BMM: a second int8
 *            operand, per tensor with any zero point, or a constant per channel along N), bias
 *            int32 (FC), y int8:
 *              acc[n] = bias[n] + sum_k (x[k] - zp_x) * (w[n][k] - zp_w)
 *              y = clamp(zp_y + requantize(acc, m[n], shift[n])), M[n] = s_x * s_w[n] / s_y
 *   dynamic: x float32, w int8 constant per output channel, bias float32 (FC), y float32. Each row
 *            of x (its last dimension) is quantized alone: s_row = max|x_row| / 127 (1 for a zero
 *            row), x_q = clamp(nearbyint(x / s_row), -127, 127) in float32; acc = sum x_q * w;
 *            y = (float)acc * (s_row * s_w[n]) + bias[n], then the fused activation in float.
 *
 * Above EDGE_ISA_SCALAR, constant weights are packed once for the qs8 GEMM (kernels/qgemm.h) and
 * the rows go through its threaded driver (a BMM whose batch folds into rows: B shared by every
 * batch element, A not transposed). An int8 BMM of two activations (attention's Q.K^T and P.V:
 * both operands with zero points, which the qs8 GEMM cannot fold) packs both as int16 differences
 * per call into per-thread scratch and runs the vector family's s8_matmul and s8_requantize, batch
 * elements spread over the threads. Everything else runs the reference loops below, which are
 * also what EDGE_ISA=scalar runs. Integer sums are exact, so every path gives the same bytes;
 * work is split over output rows (FC) or (batch, row) pairs (BMM), identical for any thread count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/config.h"
#include "../kernels/qgemm.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

static size_t round_up_64(size_t n) { return (n + 63) / 64 * 64; }

/* What FC and BMM share: the product rows x depth times columns weights and both epilogues. */
typedef struct {
  bool dynamic;
  int64_t rows, depth, columns;     /* M (all batch elements for a folded BMM), K, N */
  int32_t zp_x, zp_w;               /* int8 mode */
  edge_qs8_requant_params out;      /* int8 mode */
  int32_t *multiplier, *shift;      /* int8 mode, per column */
  int32_t *bias;                    /* int8 mode, per column (zeros when absent) */
  float *weight_scale;              /* dynamic mode, per column */
  const edge_qs8_kernels *kernels;  /* set when packed */
  void *packed;                     /* constant weights packed for the qs8 GEMM, or NULL */
  size_t quantized_bytes;           /* dynamic: scratch head for x_q (64-byte multiple), then row scales */
  /* BMM only */
  bool transpose_a, transpose_b;
  int64_t batch, m;                 /* output batch count and rows per batch element */
  int64_t *a_offsets, *b_offsets;   /* per output batch index, in elements */
  /* BMM of two int8 activations on the vector kernels (NULL matmul: not used) */
  edge_s8_matmul_ukernel matmul;
  edge_s8_matmul_pack_ukernel pack_a, pack_b; /* row-major operands; the transposed ones pack here */
  edge_s8_requantize_ukernel requantize;
  edge_s8_requantize_params requant;
  int64_t kp;                       /* depth rounded up to even */
  size_t a16_bytes, b16_bytes, slot_bytes; /* per-thread scratch: A block, packed B, int32 block */
  int32_t slots;
} qproduct_plan;

/* Rows of A packed per step of the activation BMM (bounds the int32 block in scratch). */
#define QMATMUL_ROW_BLOCK 64

static void qproduct_free(qproduct_plan *s) {
  if (!s) return;
  free(s->multiplier);
  free(s->shift);
  free(s->bias);
  free(s->weight_scale);
  free(s->packed);
  free(s->a_offsets);
  free(s->b_offsets);
  free(s);
}

void edge_qfc_release(edge_node *node) {
  qproduct_plan *s = node->plan;
  qproduct_free(s);
  node->plan = NULL;
  node->quantized = false;
}
void edge_qmatmul_release(edge_node *node) { edge_qfc_release(node); }

static edge_status begin(edge_context *ctx, edge_node *node, const char *op, qproduct_plan **out) {
  edge_qfc_release(node);
  node->quantized = true;
  qproduct_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  node->plan = s;
  *out = s;
  return EDGE_OK;
}

/* Epilogue constants for `columns` outputs of weight tensor w (axis: its channel dimension). */
static edge_status prepare_epilogue(edge_context *ctx, edge_node *node, const char *what, qproduct_plan *s,
                                    const edge_tensor *x, const edge_tensor *w, int32_t axis, const edge_tensor *bias,
                                    const edge_tensor *y) {
  size_t n = (size_t)s->columns;
  edge_status status;
  if (s->depth > EDGE_Q_MAX_DEPTH)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %lld products per output overflow an int32 accumulator (max %d)",
                     what, (long long)s->depth, EDGE_Q_MAX_DEPTH);
  if (s->dynamic) {
    if ((status = edge_q_weight_params(ctx, what, w, axis, s->columns)) != EDGE_OK) return status;
    if (y->dtype != EDGE_FLOAT32 || (bias && bias->dtype != EDGE_FLOAT32))
      return edge_fail(ctx, EDGE_UNSUPPORTED,
                       "%s: dynamic product (float32 input '%s', int8 weights '%s') needs a float32 output and "
                       "bias",
                       what, edge_tensor_name(x), edge_tensor_name(w));
    if (w->kind != EDGE_TENSOR_CONSTANT || !w->data)
      return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: dynamic weights '%s' must be a constant", what,
                       edge_tensor_name(w));
    s->weight_scale = malloc(n * sizeof(float) + 1);
    if (!s->weight_scale) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
    for (size_t c = 0; c < n; ++c) s->weight_scale[c] = edge_q_channel_scale(w, (int64_t)c);
    return EDGE_OK;
  }
  edge_qparams xp, yp, wp;
  if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  if (w->num_quant_params > 1 || node->opcode == EDGE_OP_FULLY_CONNECTED) {
    if ((status = edge_q_weight_params(ctx, what, w, axis, s->columns)) != EDGE_OK) return status;
    s->zp_w = 0;
  } else {
    if ((status = edge_q_tensor_params(ctx, what, w, false, &wp)) != EDGE_OK) return status;
    s->zp_w = wp.zero_point;
  }
  if (bias && (status = edge_q_bias_params(ctx, what, bias, xp.scale, w, s->columns)) != EDGE_OK) return status;
  s->zp_x = xp.zero_point;
  s->out.zero_point = yp.zero_point;
  if ((status = edge_q_activation_range(ctx, what, y, &yp, &node->activation, &s->out.qmin, &s->out.qmax)) != EDGE_OK)
    return status;
  s->multiplier = malloc(n * sizeof(int32_t) + 1);
  s->shift = malloc(n * sizeof(int32_t) + 1);
  s->bias = calloc(n + 1, sizeof(int32_t));
  if (!s->multiplier || !s->shift || !s->bias) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  if (bias && bias->data) memcpy(s->bias, bias->data, n * sizeof(int32_t));
  if ((status = edge_q_check_accumulator(ctx, what, s->bias, n, (size_t)s->depth)) != EDGE_OK) return status;
  for (size_t c = 0; c < n; ++c) {
    double real = (double)xp.scale * (double)edge_q_channel_scale(w, (int64_t)c) / (double)yp.scale;
    if ((status = edge_q_multiplier(ctx, what, "output channel", real, &s->multiplier[c], &s->shift[c])) != EDGE_OK)
      return status;
  }
  return EDGE_OK;
}

/* Packs constant weights w (element [n][k] at w[n * n_stride + k * k_stride]) for the qs8 GEMM
 * when the picked level is above scalar; leaves s->packed NULL otherwise. */
static edge_status pack_weights(edge_context *ctx, edge_node *node, const char *what, qproduct_plan *s,
                                const int8_t *w, size_t n_stride, size_t k_stride, const float *fbias) {
  const edge_qs8_kernels *k = &edge_kernels()->qs8;
  if (!k || edge_isa_level_get() == EDGE_ISA_SCALAR || s->zp_w != 0 || s->rows == 0 || s->columns == 0) return EDGE_OK;
  size_t bytes = edge_qs8_gemm_packed_bytes(k, (size_t)s->columns, 1, (size_t)s->depth);
  s->packed = aligned_alloc(64, bytes ? bytes : 64);
  if (!s->packed) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory packing %zu bytes of weights", what, bytes);
  edge_status status =
      s->dynamic ? edge_qs8_gemm_pack_dynamic(k, (size_t)s->columns, 1, (size_t)s->depth, w, n_stride, k_stride,
                                              s->weight_scale, fbias, s->packed)
                 : edge_qs8_gemm_pack(k, (size_t)s->columns, 1, (size_t)s->depth, w, n_stride, k_stride, s->bias,
                                      s->zp_x, s->multiplier, s->shift, s->packed);
  if (status != EDGE_OK) {
    char message[EDGE_ERROR_CAPACITY];
    snprintf(message, sizeof message, "%s", edge_last_error());
    return edge_fail(ctx, status, "%s: %s", what, message);
  }
  s->kernels = k;
  node->plan_bytes = bytes;
  return EDGE_OK;
}

/* ---- dynamic mode's row quantization ---- */

typedef struct {
  const float *x;
  int64_t depth, x_row_stride, x_step; /* element k of row r at x[r * x_row_stride + k * x_step] */
  int8_t *q;                           /* row r at q + r * depth */
  float *scales;
} row_quantize_job;

static void row_quantize_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const row_quantize_job *job = arg;
  for (int64_t r = begin; r < end; ++r) {
    const float *x = job->x + r * job->x_row_stride;
    float max_abs = 0.0f;
    for (int64_t k = 0; k < job->depth; ++k) {
      float a = fabsf(x[k * job->x_step]);
      max_abs = a > max_abs ? a : max_abs;
    }
    float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
    int8_t *q = job->q + r * job->depth;
    for (int64_t k = 0; k < job->depth; ++k) {
      float v = nearbyintf(x[k * job->x_step] / scale);
      q[k] = (int8_t)(v > 127.0f ? 127 : (v < -127.0f ? -127 : (v == v ? (int32_t)v : 0)));
    }
    job->scales[r] = scale;
  }
}

static void quantize_rows(edge_context *ctx, const float *x, int64_t rows, int64_t depth, int64_t row_stride,
                          int64_t step, int8_t *q, float *scales) {
  row_quantize_job job = {x, depth, row_stride, step, q, scales};
  edge_nd_parallel(ctx, rows, 1 + 8192 / (depth + 1), row_quantize_rows, &job);
}

/* ---- the reference product ---- */

typedef struct {
  const edge_node *node;
  const qproduct_plan *s;
  const int8_t *x;             /* int8 rows (dynamic: x_q) */
  int64_t x_row_stride, x_step;
  const int8_t *w;             /* element [n][k] at w[n * w_n_stride + k * w_k_stride] */
  int64_t w_n_stride, w_k_stride;
  const float *row_scale;      /* dynamic */
  const float *fbias;          /* dynamic */
  void *y;                     /* row r at y + r * columns */
} product_job;

static void product_row(const product_job *job, int64_t r, const int8_t *x, const int8_t *w) {
  const qproduct_plan *s = job->s;
  int32_t zp_x = s->dynamic ? 0 : s->zp_x, zp_w = s->dynamic ? 0 : s->zp_w;
  for (int64_t n = 0; n < s->columns; ++n) {
    const int8_t *wn = w + n * job->w_n_stride;
    int32_t acc = s->dynamic ? 0 : s->bias[n];
    for (int64_t k = 0; k < s->depth; ++k)
      acc += ((int32_t)x[k * job->x_step] - zp_x) * ((int32_t)wn[k * job->w_k_stride] - zp_w);
    if (s->dynamic) {
      float v = (float)acc * (job->row_scale[r] * s->weight_scale[n]);
      ((float *)job->y)[r * s->columns + n] = job->fbias ? v + job->fbias[n] : v;
    } else {
      ((int8_t *)job->y)[r * s->columns + n] = (int8_t)edge_q_requantize_clamp(
          acc, s->multiplier[n], s->shift[n], s->out.zero_point, s->out.qmin, s->out.qmax);
    }
  }
  if (s->dynamic) edge_activation_apply(&job->node->activation, (float *)job->y + r * s->columns, (size_t)s->columns);
}

/* FC rows: x row r at x + r * x_row_stride, one w. */
static void fc_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const product_job *job = arg;
  for (int64_t r = begin; r < end; ++r) product_row(job, r, job->x + r * job->x_row_stride, job->w);
}

/* BMM rows: r = batch * m + row; offsets per batch element. */
static void matmul_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const product_job *job = arg;
  const qproduct_plan *s = job->s;
  for (int64_t r = begin; r < end; ++r) {
    int64_t i = r / s->m, row = r % s->m;
    const int8_t *x;
    if (s->dynamic) x = job->x + r * s->depth; /* x_q rows are packed */
    else x = job->x + s->a_offsets[i] + (s->transpose_a ? row : row * s->depth);
    product_row(job, r, x, job->w + s->b_offsets[i]);
  }
}

/* ---- FULLY_CONNECTED ---- */

edge_status edge_qfc_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "FULLY_CONNECTED";
  qproduct_plan *s = NULL;
  edge_status status = begin(ctx, node, op, &s);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *w = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  char what[160];
  snprintf(what, sizeof what, "%s '%s'", op, edge_tensor_name(y));
  if (x->rank < 1 || w->rank != 2 || w->shape[1] != x->shape[x->rank - 1]) {
    char xs[128], ws[128];
    edge_format_shape(xs, sizeof xs, x->rank, x->shape);
    edge_format_shape(ws, sizeof ws, w->rank, w->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input '%s' %s and weights '%s' %s do not fit x[..., K], w[N, K]",
                     what, edge_tensor_name(x), xs, edge_tensor_name(w), ws);
  }
  if (bias && (bias->rank != 1 || bias->shape[0] != w->shape[0]))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: bias '%s' must have shape [%lld]", what, edge_tensor_name(bias),
                     (long long)w->shape[0]);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d < x->rank - 1; ++d) shape[d] = x->shape[d];
  shape[x->rank - 1] = w->shape[0];
  if ((status = edge_set_shape(ctx, y, x->rank, shape)) != EDGE_OK) return status;
  s->dynamic = x->dtype == EDGE_FLOAT32;
  s->rows = edge_num_elements(x->rank - 1, x->shape);
  s->depth = w->shape[1];
  s->columns = w->shape[0];
  if ((status = prepare_epilogue(ctx, node, what, s, x, w, 0, bias, y)) != EDGE_OK) return status;
  if (s->dynamic) {
    s->quantized_bytes = round_up_64((size_t)(s->rows * s->depth));
    node->scratch_bytes = s->quantized_bytes + (size_t)s->rows * sizeof(float);
  }
  bool constant = w->kind == EDGE_TENSOR_CONSTANT && w->data && (!bias || (bias->kind == EDGE_TENSOR_CONSTANT && bias->data));
  if (!constant) return EDGE_OK;
  return pack_weights(ctx, node, what, s, w->data, (size_t)s->depth, 1,
                      s->dynamic && bias ? (const float *)bias->data : NULL);
}

edge_status edge_qfc_eval(edge_context *ctx, edge_node *node) {
  const qproduct_plan *s = node->plan;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  if (s->rows == 0 || s->columns == 0) return EDGE_OK;
  const int8_t *xq = x->data;
  float *row_scale = NULL;
  if (s->dynamic) {
    row_scale = (float *)((char *)node->scratch + s->quantized_bytes);
    quantize_rows(ctx, x->data, s->rows, s->depth, s->depth, 1, node->scratch, row_scale);
    xq = node->scratch;
  }
  if (s->packed) {
    if (s->dynamic)
      edge_qs8_gemm_dynamic_compute(s->kernels, ctx->pool, (size_t)s->rows, (size_t)s->columns, (size_t)s->depth, xq,
                                    (size_t)s->depth, s->packed, y->data, (size_t)s->columns, row_scale, 1,
                                    &node->activation);
    else
      edge_qs8_gemm_compute(s->kernels, ctx->pool, (size_t)s->rows, (size_t)s->columns, (size_t)s->depth, xq,
                            (size_t)s->depth, s->packed, y->data, (size_t)s->columns, &s->out);
    return EDGE_OK;
  }
  product_job job = {node, s, xq, s->depth, 1, edge_op_input(ctx, node, 1)->data, s->depth, 1, row_scale,
                     s->dynamic && bias ? bias->data : NULL, y->data};
  edge_nd_parallel(ctx, s->rows, 1 + 16384 / (s->depth * s->columns + 1), fc_rows, &job);
  return EDGE_OK;
}

/* ---- BATCH_MATMUL of two int8 activations on the vector kernels ---- */

/* Picks the path when the level has the kernels, the product is int8 with one multiplier for every
 * column, and the depth fits the int16 kernel's accumulator; sizes the per-thread scratch. */
static edge_status prepare_activation_product(edge_context *ctx, edge_node *node, qproduct_plan *s) {
  const edge_vector_kernels *v = &edge_kernels()->vector;
  if (s->dynamic || s->packed || !v->s8_matmul || !v->s8_matmul_pack_a || !v->s8_matmul_pack_b || !v->s8_requantize ||
      s->rows == 0 || s->columns == 0)
    return EDGE_OK;
  for (int64_t c = 1; c < s->columns; ++c)
    if (s->multiplier[c] != s->multiplier[0] || s->shift[c] != s->shift[0]) return EDGE_OK;
  s->kp = (s->depth + 1) / 2 * 2;
  if (s->kp > EDGE_S8_MATMUL_MAX_DEPTH) return EDGE_OK;
  int64_t block = s->m < QMATMUL_ROW_BLOCK ? s->m : QMATMUL_ROW_BLOCK;
  s->a16_bytes = round_up_64((size_t)(block * s->kp) * sizeof(int16_t));
  s->b16_bytes = round_up_64((size_t)((s->columns + 7) / 8 * 8 * s->kp) * sizeof(int16_t));
  s->slot_bytes = s->a16_bytes + s->b16_bytes + round_up_64((size_t)(block * s->columns) * sizeof(int32_t));
  int32_t threads = ctx->num_threads > 1 ? ctx->num_threads : 1;
  if (ctx->pool && edge_threadpool_size(ctx->pool) > threads) threads = edge_threadpool_size(ctx->pool);
  s->slots = threads;
  node->scratch_bytes = s->slot_bytes * (size_t)threads;
  s->requant = (edge_s8_requantize_params){s->multiplier[0], s->shift[0], s->out.zero_point, s->out.qmin, s->out.qmax};
  s->matmul = v->s8_matmul;
  s->pack_a = v->s8_matmul_pack_a;
  s->pack_b = v->s8_matmul_pack_b;
  s->requantize = v->s8_requantize;
  return EDGE_OK;
}

/* Rows [r0, r0 + rows) of batch element A as int16 a - zp, kp per row (the odd k tail zero): the
 * vector family's packing for a row-major A, a strided loop for a transposed one. */
static void pack_a16(const qproduct_plan *s, const int8_t *a, int64_t r0, int64_t rows, int16_t *out) {
  const int64_t k_size = s->depth, kp = s->kp;
  if (!s->transpose_a) {
    s->pack_a((size_t)rows, (size_t)k_size, a + r0 * k_size, (size_t)k_size, s->zp_x, out);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    int16_t *o = out + r * kp;
    for (int64_t k = 0; k < k_size; ++k) o[k] = (int16_t)(a[k * s->m + r0 + r] - s->zp_x);
    if (kp != k_size) o[k_size] = 0;
  }
}

/* B of one batch element as s8_matmul's panels of b - zp (panel p, pair q, column j holds
 * b[2q][8p + j] and b[2q + 1][8p + j]): the vector family's packing for a row-major [K, N] B, a
 * strided loop for a transposed one ([N, K], element [k][n] at b[n * K + k]). */
static void pack_b16(const qproduct_plan *s, const int8_t *b, int16_t *out) {
  const int64_t k_size = s->depth, n_size = s->columns, kp = s->kp;
  if (!s->transpose_b) {
    s->pack_b((size_t)k_size, (size_t)n_size, b, (size_t)n_size, s->zp_w, out);
    return;
  }
  for (int64_t n0 = 0; n0 < n_size; n0 += 8) {
    int16_t *panel = out + n0 * kp;
    int64_t cols = n_size - n0 < 8 ? n_size - n0 : 8;
    if (cols < 8 || kp != k_size) memset(panel, 0, (size_t)(kp * 8) * sizeof(int16_t));
    for (int64_t j = 0; j < cols; ++j) {
      const int8_t *column = b + (n0 + j) * k_size;
      for (int64_t k = 0; k < k_size; ++k) panel[(k / 2) * 16 + 2 * j + (k % 2)] = (int16_t)(column[k] - s->zp_w);
    }
  }
}

typedef struct {
  const qproduct_plan *s;
  const int8_t *a, *b;
  int8_t *y;
  char *scratch;
} activation_product_job;

static void activation_product_batches(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const activation_product_job *job = arg;
  const qproduct_plan *s = job->s;
  char *slot = job->scratch + (size_t)thread * s->slot_bytes;
  int16_t *a16 = (int16_t *)slot, *b16 = (int16_t *)(slot + s->a16_bytes);
  int32_t *c32 = (int32_t *)(slot + s->a16_bytes + s->b16_bytes);
  int64_t packed_offset = -1;
  for (int64_t i = begin; i < end; ++i) {
    if (s->b_offsets[i] != packed_offset) pack_b16(s, job->b + s->b_offsets[i], b16);
    packed_offset = s->b_offsets[i];
    for (int64_t r0 = 0; r0 < s->m; r0 += QMATMUL_ROW_BLOCK) {
      int64_t rows = s->m - r0 < QMATMUL_ROW_BLOCK ? s->m - r0 : QMATMUL_ROW_BLOCK;
      pack_a16(s, job->a + s->a_offsets[i], r0, rows, a16);
      s->matmul((size_t)rows, (size_t)s->columns, (size_t)s->kp, a16, b16, c32, (size_t)s->columns);
      s->requantize((size_t)(rows * s->columns), c32, job->y + (i * s->m + r0) * s->columns, &s->requant);
    }
  }
}

/* ---- BATCH_MATMUL ---- */

edge_status edge_qmatmul_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_MATMUL";
  qproduct_plan *s = NULL;
  edge_status status = begin(ctx, node, op, &s);
  if (status != EDGE_OK) return status;
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  char what[160];
  snprintf(what, sizeof what, "%s '%s'", op, edge_tensor_name(y));
  char as[128], bs[128];
  edge_format_shape(as, sizeof as, a->rank, a->shape);
  edge_format_shape(bs, sizeof bs, b->rank, b->shape);
  if (a->rank < 2 || b->rank < 2)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: inputs '%s' %s and '%s' %s must both have rank >= 2", what,
                     edge_tensor_name(a), as, edge_tensor_name(b), bs);
  const edge_batch_matmul_options *o = &node->options.batch_matmul;
  int64_t a_rows = a->shape[a->rank - 2], a_cols = a->shape[a->rank - 1];
  int64_t b_rows = b->shape[b->rank - 2], b_cols = b->shape[b->rank - 1];
  int64_t m = o->transpose_a ? a_cols : a_rows, k = o->transpose_a ? a_rows : a_cols;
  int64_t n = o->transpose_b ? b_rows : b_cols, kb = o->transpose_b ? b_cols : b_rows;
  if (k != kb)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: inputs '%s' %s and '%s' %s disagree on K: %lld vs %lld", what,
                     edge_tensor_name(a), as, edge_tensor_name(b), bs, (long long)k, (long long)kb);
  int32_t batch_ranks[2] = {a->rank - 2, b->rank - 2}, rank;
  const int64_t *batch_shapes[2] = {a->shape, b->shape};
  int64_t shape[EDGE_MAX_RANK];
  if ((status = edge_nd_broadcast_shapes(ctx, edge_tensor_name(y), 2, batch_ranks, batch_shapes, &rank, shape)) != EDGE_OK)
    return status;
  shape[rank] = m;
  shape[rank + 1] = n;
  if ((status = edge_set_shape(ctx, y, rank + 2, shape)) != EDGE_OK) return status;
  s->dynamic = a->dtype == EDGE_FLOAT32;
  s->transpose_a = o->transpose_a;
  s->transpose_b = o->transpose_b;
  s->batch = edge_num_elements(rank, shape);
  s->m = m;
  s->rows = s->batch * m;
  s->depth = k;
  s->columns = n;
  if ((status = prepare_epilogue(ctx, node, what, s, a, b, o->transpose_b ? b->rank - 2 : b->rank - 1, NULL, y)) !=
      EDGE_OK)
    return status;
  s->a_offsets = malloc((size_t)(s->batch ? s->batch : 1) * sizeof(int64_t));
  s->b_offsets = malloc((size_t)(s->batch ? s->batch : 1) * sizeof(int64_t));
  if (!s->a_offsets || !s->b_offsets) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  int64_t a_strides[EDGE_MAX_RANK] = {0}, b_strides[EDGE_MAX_RANK] = {0}, index[EDGE_MAX_RANK] = {0};
  edge_nd_broadcast_strides(rank, shape, a->rank - 2, a->shape, a_strides);
  edge_nd_broadcast_strides(rank, shape, b->rank - 2, b->shape, b_strides);
  bool b_shared = true, a_contiguous = !s->transpose_a;
  for (int64_t i = 0; i < s->batch; ++i) {
    int64_t a_offset = 0, b_offset = 0;
    for (int32_t d = 0; d < rank; ++d) {
      a_offset += index[d] * a_strides[d];
      b_offset += index[d] * b_strides[d];
    }
    s->a_offsets[i] = a_offset * m * k;
    s->b_offsets[i] = b_offset * k * n;
    b_shared &= s->b_offsets[i] == 0;
    a_contiguous &= s->a_offsets[i] == i * m * k;
    for (int32_t d = rank - 1; d >= 0 && ++index[d] == shape[d]; --d) index[d] = 0;
  }
  if (s->dynamic) {
    s->quantized_bytes = round_up_64((size_t)(s->rows * s->depth));
    node->scratch_bytes = s->quantized_bytes + (size_t)s->rows * sizeof(float);
  }
  /* The GEMM driver takes every row at once: B shared by every batch element and A's rows laid
   * out one after another. */
  if (b->kind == EDGE_TENSOR_CONSTANT && b->data && b_shared && (a_contiguous || s->dynamic)) {
    status = pack_weights(ctx, node, what, s, b->data, s->transpose_b ? (size_t)k : 1, s->transpose_b ? 1 : (size_t)n,
                          NULL);
    if (status != EDGE_OK || s->packed) return status;
  }
  return prepare_activation_product(ctx, node, s);
}

edge_status edge_qmatmul_eval(edge_context *ctx, edge_node *node) {
  const qproduct_plan *s = node->plan;
  edge_tensor *a = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (s->rows == 0 || s->columns == 0) return EDGE_OK;
  const int8_t *aq = a->data;
  float *row_scale = NULL;
  if (s->dynamic) {
    /* Row r = (batch i, row) of A, whatever its layout, becomes packed row r of x_q. */
    row_scale = (float *)((char *)node->scratch + s->quantized_bytes);
    int8_t *q = node->scratch;
    for (int64_t i = 0; i < s->batch; ++i) {
      const float *base = (const float *)a->data + s->a_offsets[i];
      if (s->transpose_a)
        quantize_rows(ctx, base, s->m, s->depth, 1, s->m, q + i * s->m * s->depth, row_scale + i * s->m);
      else
        quantize_rows(ctx, base, s->m, s->depth, s->depth, 1, q + i * s->m * s->depth, row_scale + i * s->m);
    }
    aq = q;
  }
  if (s->packed) {
    if (s->dynamic)
      edge_qs8_gemm_dynamic_compute(s->kernels, ctx->pool, (size_t)s->rows, (size_t)s->columns, (size_t)s->depth, aq,
                                    (size_t)s->depth, s->packed, y->data, (size_t)s->columns, row_scale, 1,
                                    &node->activation);
    else
      edge_qs8_gemm_compute(s->kernels, ctx->pool, (size_t)s->rows, (size_t)s->columns, (size_t)s->depth, aq,
                            (size_t)s->depth, s->packed, y->data, (size_t)s->columns, &s->out);
    return EDGE_OK;
  }
  if (s->matmul) {
    activation_product_job job = {s, a->data, edge_op_input(ctx, node, 1)->data, y->data, node->scratch};
    if (ctx->pool && edge_threadpool_size(ctx->pool) > s->slots) activation_product_batches(&job, 0, s->batch, 0);
    else edge_nd_parallel(ctx, s->batch, 1, activation_product_batches, &job);
    return EDGE_OK;
  }
  product_job job = {node, s, aq, 0, s->transpose_a && !s->dynamic ? s->m : 1, edge_op_input(ctx, node, 1)->data,
                     s->transpose_b ? s->depth : 1, s->transpose_b ? 1 : s->columns, row_scale, NULL, y->data};
  edge_nd_parallel(ctx, s->rows, 1 + 16384 / (s->depth * s->columns + 1), matmul_rows, &job);
  return EDGE_OK;
}

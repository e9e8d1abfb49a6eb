/* ATTENTION: fused scaled-dot-product attention, float32.
 *
 *   y[b, h, i, :] = sum_j p_ij v[b, h / g, j, :],   p_i = softmax_j(c(scale * q_i . k_j) + mask_ij)
 *
 * q [B, Hq, Sq, D], k [B, Hkv, Sk, D] (or [B, Hkv, D, Sk] with k_transposed), v [B, Hkv, Sk, Dv],
 * g = Hq / Hkv (grouped-query attention: g query heads share one key/value head), y [B, Hq, Sq, Dv].
 * c is the soft cap (softcap * tanh(t / softcap)) when softcap > 0. The optional mask is float32
 * (added) or bool (false drops the key) and broadcasts to [B, Hq, Sq, Sk]; the causal mode drops
 * key j for query i when j > i (UPPER_LEFT) or j > i + Sk - Sq (LOWER_RIGHT). A row whose keys are
 * all dropped (every score -inf) gives zeros, as ONNX's Attention does.
 *
 * Work is split over units of (batch, query head, tile of query rows), each done by one thread in
 * the same order whatever the split, so results do not depend on the thread count.
 *
 * The reference (EDGE_ISA=scalar) takes one query row at a time: its Sk scores in double in the
 * thread's scratch, the maximum, exp, the sum, then the weighted sum of v rows in double.
 *
 * Above EDGE_ISA_SCALAR the unit's rows go through key blocks of ATTENTION_BLOCK keys with an online
 * softmax, so no [Sq, Sk] score matrix exists (scratch is per thread and independent of Sk):
 *   1. the f32 GEMM micro-kernel gives S = Q_tile K_block^T (raw dot products) from the head's
 *      keys packed as GEMM B panels;
 *   2. per row, the vector family's attention_row kernel scales, caps and masks S, updates the
 *      row's running maximum m and turns S into exp(x - m), returning the block's sum and the
 *      factor exp(m_old - m) that rescales the row's earlier sum l and output;
 *   3. the GEMM gives T = P V_block from the block's packed values; y_row = y_row * factor + T.
 * Finally y_row /= l. A thread packs the keys and values of one (batch, key/value head) once, into its
 * scratch (about 2 x Sk x D floats), and reuses them for the following units of the same head. Key blocks past the causal limit of the tile's last row are skipped, and keys
 * past a row's own limit are simply not part of that row's block. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"

#define ATTENTION_BLOCK 256  /* keys per block of the online softmax */
#define ATTENTION_ROWS 32    /* query rows per unit (rounded up to a multiple of the GEMM's mr) */

typedef struct {
  int64_t batch, q_heads, kv_heads, q_len, kv_len, head_size, value_size;
  int64_t tile_rows, tiles;     /* query rows per unit, units per (batch, head) */
  int64_t causal_offset;        /* key j is kept for query i when j <= i + offset (causal only) */
  bool causal, k_transposed, mask_bool, fast;
  float scale, softcap;
  int64_t mask_strides[4];      /* over [B, Hq, Sq, Sk]; 0 along broadcast dims */
  size_t slot_bytes;            /* per-thread scratch */
  size_t packed_k_bytes, packed_v_bytes;  /* every key of one head / every block's values */
} attention_plan;

/* The head whose keys and values a thread's scratch holds (at the slot's start; -1: none). */
typedef struct {
  int64_t batch, kv_head;
} packed_head;

static void attention_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

static size_t round_up64(size_t n) { return (n + 63) & ~(size_t)63; }

static edge_status attention_prepare(edge_context *ctx, edge_node *node) {
  attention_release(node);
  if (node->num_inputs < 3 || node->num_inputs > 4 || node->num_outputs != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION: has %d inputs and %d outputs, expects 3 or 4 inputs and 1 output",
                     node->num_inputs, node->num_outputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < (i == 3 ? -1 : 0) || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION: input %d is tensor %d, not one of the %d tensors", i,
                       node->inputs[i], ctx->num_tensors);
  if (node->outputs[0] < 0 || node->outputs[0] >= ctx->num_tensors)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION: output is tensor %d, not one of the %d tensors",
                     node->outputs[0], ctx->num_tensors);
  edge_tensor *q = edge_op_input(ctx, node, 0), *k = edge_op_input(ctx, node, 1), *v = edge_op_input(ctx, node, 2);
  edge_tensor *mask = node->num_inputs > 3 && node->inputs[3] >= 0 ? edge_op_input(ctx, node, 3) : NULL;
  edge_tensor *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  const edge_attention_options *o = &node->options.attention;
  const edge_tensor *operands[4] = {q, k, v, y};
  static const char *const roles[4] = {"query", "key", "value", "output"};
  for (int i = 0; i < 4; ++i) {
    if (operands[i]->dtype != EDGE_FLOAT32)
      return edge_fail(ctx, EDGE_UNSUPPORTED, "ATTENTION '%s': %s '%s' is %s; only float32 is supported", name, roles[i],
                       edge_tensor_name(operands[i]), edge_dtype_name(operands[i]->dtype));
    if (i < 3 && operands[i]->rank != 4)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION '%s': %s '%s' has rank %d; it must be 4 ([batch, heads, "
                       "sequence, size])", name, roles[i], edge_tensor_name(operands[i]), operands[i]->rank);
  }
  int64_t kv_len = o->k_transposed ? k->shape[3] : k->shape[2], k_size = o->k_transposed ? k->shape[2] : k->shape[3];
  char qs[128], ks[128], vs[128];
  edge_format_shape(qs, sizeof qs, 4, q->shape);
  edge_format_shape(ks, sizeof ks, 4, k->shape);
  edge_format_shape(vs, sizeof vs, 4, v->shape);
  if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || v->shape[1] != k->shape[1] ||
      v->shape[2] != kv_len || k_size != q->shape[3] || k->shape[1] == 0 || q->shape[1] % k->shape[1] != 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION '%s': query %s, key %s%s and value %s do not fit (batch, "
                     "heads a multiple of the key/value heads, key length, head size)", name, qs, ks,
                     o->k_transposed ? " (transposed)" : "", vs);
  if (!(o->scale >= 0.0f) || !(o->softcap >= 0.0f))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION '%s': scale %g and softcap %g must be >= 0", name,
                     (double)o->scale, (double)o->softcap);
  int64_t out_shape[4] = {q->shape[0], q->shape[1], q->shape[2], v->shape[3]};
  int64_t full[4] = {q->shape[0], q->shape[1], q->shape[2], kv_len};
  attention_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "ATTENTION '%s': out of memory", name);
  node->plan = plan;
  if (mask) {
    if (mask->dtype != EDGE_FLOAT32 && mask->dtype != EDGE_BOOL)
      return edge_fail(ctx, EDGE_UNSUPPORTED, "ATTENTION '%s': mask '%s' is %s; it must be float32 or bool", name,
                       edge_tensor_name(mask), edge_dtype_name(mask->dtype));
    bool fits = mask->rank <= 4;
    for (int32_t d = 0; fits && d < mask->rank; ++d) {
      int64_t want = full[4 - mask->rank + d];
      fits = mask->shape[d] == 1 || mask->shape[d] == want;
    }
    if (!fits) {
      char ms[128], fs[128];
      edge_format_shape(ms, sizeof ms, mask->rank, mask->shape);
      edge_format_shape(fs, sizeof fs, 4, full);
      return edge_fail(ctx, EDGE_INVALID_MODEL, "ATTENTION '%s': mask '%s' %s does not broadcast to the scores %s", name,
                       edge_tensor_name(mask), ms, fs);
    }
    edge_nd_broadcast_strides(4, full, mask->rank, mask->shape, plan->mask_strides);
    plan->mask_bool = mask->dtype == EDGE_BOOL;
  }
  edge_status status = edge_set_shape(ctx, y, 4, out_shape);
  if (status != EDGE_OK) return status;
  plan->batch = q->shape[0];
  plan->q_heads = q->shape[1];
  plan->kv_heads = k->shape[1];
  plan->q_len = q->shape[2];
  plan->kv_len = kv_len;
  plan->head_size = q->shape[3];
  plan->value_size = v->shape[3];
  plan->causal = o->causal != EDGE_CAUSAL_NONE;
  plan->causal_offset = o->causal == EDGE_CAUSAL_LOWER_RIGHT ? kv_len - plan->q_len : 0;
  plan->k_transposed = o->k_transposed;
  plan->scale = o->scale > 0.0f ? o->scale : (float)(1.0 / sqrt((double)(plan->head_size ? plan->head_size : 1)));
  plan->softcap = o->softcap;
  const edge_kernel_config *kernels = edge_kernels();
  plan->fast = kernels->vector.attention_row != NULL && plan->head_size > 0 && plan->value_size > 0;
  size_t slot;
  if (plan->fast) {
    int64_t mr = kernels->gemm.mr;
    plan->tile_rows = (ATTENTION_ROWS + mr - 1) / mr * mr;
    size_t rows = (size_t)plan->tile_rows, block = ATTENTION_BLOCK;
    plan->packed_k_bytes = edge_gemm_packed_bytes(&kernels->gemm, (size_t)kv_len, (size_t)plan->head_size);
    plan->packed_v_bytes = 0;
    for (int64_t k0 = 0; k0 < kv_len; k0 += ATTENTION_BLOCK) {
      size_t width = (size_t)(kv_len - k0 < ATTENTION_BLOCK ? kv_len - k0 : ATTENTION_BLOCK);
      plan->packed_v_bytes += edge_gemm_packed_bytes(&kernels->gemm, (size_t)plan->value_size, width);
    }
    slot = round_up64(sizeof(packed_head)) + plan->packed_k_bytes + plan->packed_v_bytes + round_up64(rows * block * sizeof(float)) +
           round_up64(rows * (size_t)plan->value_size * sizeof(float)) + round_up64(3 * rows * sizeof(float)) +
           round_up64(block * sizeof(float));
  } else {
    plan->tile_rows = ATTENTION_ROWS;
    slot = round_up64((size_t)(plan->kv_len ? plan->kv_len : 1) * sizeof(double)) +
           round_up64((size_t)(plan->value_size ? plan->value_size : 1) * sizeof(double));
  }
  plan->tiles = (plan->q_len + plan->tile_rows - 1) / plan->tile_rows;
  plan->slot_bytes = round_up64(slot);
  node->scratch_bytes = plan->slot_bytes * (size_t)(ctx->num_threads > 0 ? ctx->num_threads : 1);
  return EDGE_OK;
}

typedef struct {
  const attention_plan *plan;
  const edge_kernel_config *kernels;
  const float *q, *k, *v, *mask_f32;
  const uint8_t *mask_bool;
  float *y;
  char *scratch;
} attention_job;

/* Keys [0, limit) are visible to query row i. */
static int64_t visible_keys(const attention_plan *p, int64_t i) {
  if (!p->causal) return p->kv_len;
  int64_t limit = i + p->causal_offset + 1;
  return limit < 0 ? 0 : limit > p->kv_len ? p->kv_len : limit;
}

static int64_t mask_base(const attention_plan *p, int64_t b, int64_t h, int64_t i) {
  return b * p->mask_strides[0] + h * p->mask_strides[1] + i * p->mask_strides[2];
}

/* The additive mask value of key j (base from mask_base); 0 without a mask. */
static float mask_at(const attention_job *job, int64_t base, int64_t j) {
  int64_t at = base + j * job->plan->mask_strides[3];
  if (job->mask_bool) return job->mask_bool[at] ? 0.0f : -INFINITY;
  return job->mask_f32 ? job->mask_f32[at] : 0.0f;
}

static const float *key_row_or_column(const attention_job *job, const float *k, int64_t j, int64_t d) {
  const attention_plan *p = job->plan;
  return p->k_transposed ? k + d * p->kv_len + j : k + j * p->head_size + d;
}

static void attention_reference_unit(const attention_job *job, int64_t b, int64_t h, int64_t i0, int64_t i1,
                                     char *slot) {
  const attention_plan *p = job->plan;
  int64_t kv_head = h / (p->q_heads / p->kv_heads), n = p->kv_len, dv = p->value_size;
  const float *k = job->k + (b * p->kv_heads + kv_head) * n * p->head_size;
  const float *v = job->v + (b * p->kv_heads + kv_head) * n * dv;
  double *scores = (double *)slot, *acc = (double *)(slot + round_up64((size_t)(n ? n : 1) * sizeof(double)));
  for (int64_t i = i0; i < i1; ++i) {
    const float *q = job->q + ((b * p->q_heads + h) * p->q_len + i) * p->head_size;
    float *y = job->y + ((b * p->q_heads + h) * p->q_len + i) * dv;
    int64_t visible = visible_keys(p, i), base = mask_base(p, b, h, i);
    double max = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      double s = -INFINITY;
      if (j < visible) {
        double dot = 0.0;
        for (int64_t d = 0; d < p->head_size; ++d) dot += (double)q[d] * *key_row_or_column(job, k, j, d);
        s = dot * p->scale;
        if (p->softcap > 0.0f) s = p->softcap * tanh(s / p->softcap);
        s += mask_at(job, base, j);
      }
      scores[j] = s;
      if (s > max) max = s;
    }
    for (int64_t d = 0; d < dv; ++d) acc[d] = 0.0;
    double sum = 0.0;
    if (max != -INFINITY) {
      for (int64_t j = 0; j < n; ++j) {
        double e = exp(scores[j] - max);
        sum += e;
        if (e != 0.0)
          for (int64_t d = 0; d < dv; ++d) acc[d] += e * v[j * dv + d];
      }
    }
    for (int64_t d = 0; d < dv; ++d) y[d] = sum > 0.0 ? (float)(acc[d] / sum) : 0.0f;
  }
}

/* C rows [0, rows) of A (a_stride) times the packed B (n columns, kdim deep) into c (c_stride). */
static void gemm_rows(const edge_gemm_kernels *g, size_t rows, size_t n, size_t kdim, const float *a, size_t a_stride,
                      const void *packed, float *c, size_t c_stride) {
  const edge_f32_minmax_params params = {-INFINITY, INFINITY};
  for (size_t r = 0; r < rows; r += g->mr) {
    size_t mr = rows - r < g->mr ? rows - r : g->mr;
    (mr == 1 ? g->ukernel_1 : g->ukernel)(mr, n, kdim, a + r * a_stride, a_stride, packed, c + r * c_stride, c_stride,
                                          &params);
  }
}

static void attention_fast_unit(const attention_job *job, int64_t b, int64_t h, int64_t i0, int64_t i1, char *slot) {
  const attention_plan *p = job->plan;
  const edge_gemm_kernels *g = &job->kernels->gemm;
  edge_f32_attention_row_ukernel row_kernel = job->kernels->vector.attention_row;
  int64_t kv_head = h / (p->q_heads / p->kv_heads), n = p->kv_len, dq = p->head_size, dv = p->value_size;
  size_t rows = (size_t)(i1 - i0), block = ATTENTION_BLOCK, tile = (size_t)p->tile_rows;
  const float *k = job->k + (b * p->kv_heads + kv_head) * n * dq;
  const float *v = job->v + (b * p->kv_heads + kv_head) * n * dv;
  const float *q = job->q + ((b * p->q_heads + h) * p->q_len + i0) * dq;
  float *y = job->y + ((b * p->q_heads + h) * p->q_len + i0) * dv;
  packed_head *cached = (packed_head *)slot;
  char *at = slot + round_up64(sizeof(packed_head));
  char *packed_k = at;
  at += p->packed_k_bytes;
  char *packed_v = at;
  at += p->packed_v_bytes;
  if (cached->batch != b || cached->kv_head != kv_head) {
    if (p->k_transposed) edge_gemm_pack_weights_kn(g, (size_t)n, (size_t)dq, k, (size_t)n, NULL, packed_k);
    else edge_gemm_pack_weights(g, (size_t)n, (size_t)dq, k, (size_t)dq, NULL, packed_k);
    char *v_block = packed_v;
    for (int64_t k0 = 0; k0 < n; k0 += (int64_t)block) {
      size_t width = (size_t)(n - k0 < (int64_t)block ? n - k0 : (int64_t)block);
      edge_gemm_pack_weights_kn(g, (size_t)dv, width, v + k0 * dv, (size_t)dv, NULL, v_block);
      v_block += edge_gemm_packed_bytes(g, (size_t)dv, width);
    }
    cached->batch = b;
    cached->kv_head = kv_head;
  }
  float *scores = (float *)at;
  at += round_up64(tile * block * sizeof(float));
  float *product = (float *)at;
  at += round_up64(tile * (size_t)dv * sizeof(float));
  float *row_max = (float *)at, *row_sum = row_max + tile, *correction = row_sum + tile;
  at += round_up64(3 * tile * sizeof(float));
  float *bias_row = (float *)at;

  for (size_t r = 0; r < rows; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.0f;
  }
  memset(y, 0, rows * (size_t)dv * sizeof(float));
  int64_t keys = visible_keys(p, i1 - 1);
  bool mask_direct = job->mask_f32 && p->mask_strides[3] == 1;
  char *v_block = packed_v;
  for (int64_t k0 = 0; k0 < keys; k0 += (int64_t)block) {
    /* The keys past `keys` in this block are in the packed panels but not computed. */
    size_t width = (size_t)(keys - k0 < (int64_t)block ? keys - k0 : (int64_t)block);
    size_t packed_width = (size_t)(n - k0 < (int64_t)block ? n - k0 : (int64_t)block);
    const float *k_block = (const float *)packed_k + (size_t)k0 * (size_t)(dq + 1);
    gemm_rows(g, rows, width, (size_t)dq, q, (size_t)dq, k_block, scores, block);
    for (size_t r = 0; r < rows; ++r) {
      float *s = scores + r * block;
      int64_t visible = visible_keys(p, i0 + (int64_t)r) - k0;
      size_t live = visible <= 0 ? 0 : (size_t)visible < width ? (size_t)visible : width;
      const float *bias = NULL;
      if (job->mask_f32 || job->mask_bool) {
        int64_t base = mask_base(p, b, h, i0 + (int64_t)r);
        if (mask_direct) {
          bias = job->mask_f32 + base + k0;
        } else {
          for (size_t j = 0; j < live; ++j) bias_row[j] = mask_at(job, base, k0 + (int64_t)j);
          bias = bias_row;
        }
      }
      float block_sum = row_kernel(live, s, p->scale, p->softcap, bias, &row_max[r], &correction[r]);
      row_sum[r] = row_sum[r] * correction[r] + block_sum;
      for (size_t j = live; j < width; ++j) s[j] = 0.0f;
    }
    /* The values were packed per block of packed_width keys; the probabilities past width are 0. */
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = width; j < packed_width; ++j) scores[r * block + j] = 0.0f;
    gemm_rows(g, rows, (size_t)dv, packed_width, scores, block, v_block, product, (size_t)dv);
    v_block += edge_gemm_packed_bytes(g, (size_t)dv, packed_width);
    for (size_t r = 0; r < rows; ++r) {
      float c = correction[r], *out = y + r * (size_t)dv;
      const float *t = product + r * (size_t)dv;
      for (int64_t d = 0; d < dv; ++d) out[d] = out[d] * c + t[d];
    }
  }
  for (size_t r = 0; r < rows; ++r) {
    float *out = y + r * (size_t)dv, inverse = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;
    for (int64_t d = 0; d < dv; ++d) out[d] = row_sum[r] > 0.0f ? out[d] * inverse : 0.0f;
  }
}

static void attention_units(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const attention_job *job = arg;
  const attention_plan *p = job->plan;
  char *slot = job->scratch + (size_t)thread * p->slot_bytes;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t tile = unit % p->tiles, head = unit / p->tiles % p->q_heads, b = unit / p->tiles / p->q_heads;
    int64_t i0 = tile * p->tile_rows, i1 = i0 + p->tile_rows < p->q_len ? i0 + p->tile_rows : p->q_len;
    if (p->fast) attention_fast_unit(job, b, head, i0, i1, slot);
    else attention_reference_unit(job, b, head, i0, i1, slot);
  }
}

static edge_status attention_eval(edge_context *ctx, edge_node *node) {
  const attention_plan *p = node->plan;
  edge_tensor *mask = node->num_inputs > 3 && node->inputs[3] >= 0 ? edge_op_input(ctx, node, 3) : NULL;
  attention_job job = {p, edge_kernels(), edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                       edge_op_input(ctx, node, 2)->data, NULL, NULL, edge_op_output(ctx, node, 0)->data,
                       node->scratch};
  if (mask && !p->mask_bool) job.mask_f32 = mask->data;
  if (mask && p->mask_bool) job.mask_bool = mask->data;
  int64_t units = p->batch * p->q_heads * p->tiles;
  if (units == 0 || p->value_size == 0) return EDGE_OK;
  if (p->fast)
    for (int32_t t = 0; t < (ctx->num_threads > 0 ? ctx->num_threads : 1); ++t)
      *(packed_head *)(job.scratch + (size_t)t * p->slot_bytes) = (packed_head){-1, -1};
  edge_nd_parallel(ctx, units, 1, attention_units, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_attention = {attention_prepare, attention_eval, attention_release};

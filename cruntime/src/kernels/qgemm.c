/* qs8 weight packing (with the zero-point fold) and the threaded GEMM drivers (qgemm.h).
 *
 * Work split: cells are (N block, row tile), numbered block-major so a thread's consecutive
 * cells reuse one block's panels from L2; an N block is as many panels as fit QGEMM_SLAB_BYTES.
 * Every output is computed by exactly one kernel call over the whole K, so the bytes never
 * depend on the thread count. */
#include <math.h>
#include <string.h>

#include "qgemm.h"

#define QGEMM_SLAB_BYTES (256u * 1024u)
/* Below this many multiply-adds a product runs on the calling thread. */
#define QGEMM_MIN_PARALLEL_MACS (1u << 17)

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

size_t edge_qs8_gemm_panel_bytes(const edge_qs8_kernels *k, size_t ks, size_t kc) {
  return k->nr * (sizeof(int32_t) * 3 + ks * round_up(kc, k->kr));
}

size_t edge_qs8_gemm_packed_bytes(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc) {
  return round_up((n + k->nr - 1) / k->nr * edge_qs8_gemm_panel_bytes(k, ks, kc), 64);
}

/* Largest |accumulator| of a column: |bias| + kdim * 256 * 128 bounds every partial sum of every
 * kernel (x - zp_x in [-255, 255], x + 128 in [0, 255], |w| <= 128, folded terms included). */
static edge_status check_range(size_t j, int64_t bias, size_t kdim) {
  const double worst = fabs((double)bias) + (double)kdim * 32768.0;
  if (worst > 2147483647.0)
    return edge_set_last_error(EDGE_UNSUPPORTED,
                               "qs8 GEMM: output channel %zu: bias %lld plus %zu products of int8 values may "
                               "overflow the int32 accumulator",
                               j, (long long)bias, kdim);
  return EDGE_OK;
}

/* Writes every panel's bias and weights; the epilogue words are left to the caller (fill). */
static edge_status pack_common(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc, const int8_t *w,
                               size_t w_n_stride, size_t w_k_stride, const int32_t *bias, int32_t input_zero_point,
                               void *packed) {
  const size_t nr = k->nr, kr = k->kr, kc_padded = round_up(kc, kr), kdim = ks * kc;
  const size_t panel = edge_qs8_gemm_panel_bytes(k, ks, kc);
  const int64_t fold = (int64_t)input_zero_point + (k->input_offset_128 ? 128 : 0);
  uint8_t *out = packed;
  memset(packed, 0, edge_qs8_gemm_packed_bytes(k, n, ks, kc));
  for (size_t n0 = 0; n0 < n; n0 += nr, out += panel) {
    const size_t cols = n - n0 < nr ? n - n0 : nr;
    int32_t folded[64];
    for (size_t j = 0; j < cols; ++j) {
      const int8_t *col = w + (n0 + j) * w_n_stride;
      int64_t sum = 0;
      for (size_t kk = 0; kk < kdim; ++kk) sum += col[kk * w_k_stride];
      const int64_t b = bias ? bias[n0 + j] : 0;
      const edge_status status = check_range(n0 + j, b, kdim);
      if (status != EDGE_OK) return status;
      folded[j] = (int32_t)(b - fold * sum);
    }
    memcpy(out, folded, cols * sizeof(int32_t));
    int8_t *weights = (int8_t *)(out + nr * sizeof(int32_t));
    for (size_t t = 0; t < ks; ++t)
      for (size_t c = 0; c < kc; ++c) {
        const size_t group = c / kr, within = c % kr;
        int8_t *dst = weights + (t * kc_padded + group * kr) * nr + within;
        for (size_t j = 0; j < cols; ++j) dst[j * kr] = w[(n0 + j) * w_n_stride + (t * kc + c) * w_k_stride];
      }
  }
  return EDGE_OK;
}

static void fill_epilogue(const edge_qs8_kernels *k, size_t n, size_t panel, const void *first, const void *second,
                          void *packed) {
  const size_t nr = k->nr;
  uint8_t *out = packed;
  for (size_t n0 = 0; n0 < n; n0 += nr, out += panel) {
    const size_t cols = n - n0 < nr ? n - n0 : nr;
    uint8_t *epilogue = out + panel - 2 * nr * sizeof(int32_t);
    memcpy(epilogue, (const int32_t *)first + n0, cols * sizeof(int32_t));
    if (second) memcpy(epilogue + nr * sizeof(int32_t), (const int32_t *)second + n0, cols * sizeof(int32_t));
  }
}

edge_status edge_qs8_gemm_pack(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc, const int8_t *w,
                               size_t w_n_stride, size_t w_k_stride, const int32_t *bias, int32_t input_zero_point,
                               const int32_t *multiplier, const int32_t *shift, void *packed) {
  for (size_t j = 0; j < n; ++j)
    if (shift[j] < 1 || shift[j] > 62 || multiplier[j] < 0)
      return edge_set_last_error(EDGE_INVALID_ARGUMENT,
                                 "qs8 GEMM: output channel %zu: requantization multiplier %d, shift %d out of range "
                                 "(multiplier >= 0, shift in [1, 62])",
                                 j, (int)multiplier[j], (int)shift[j]);
  const edge_status status = pack_common(k, n, ks, kc, w, w_n_stride, w_k_stride, bias, input_zero_point, packed);
  if (status != EDGE_OK) return status;
  fill_epilogue(k, n, edge_qs8_gemm_panel_bytes(k, ks, kc), multiplier, shift, packed);
  return EDGE_OK;
}

edge_status edge_qs8_gemm_pack_dynamic(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc, const int8_t *w,
                                       size_t w_n_stride, size_t w_k_stride, const float *weight_scale,
                                       const float *bias, void *packed) {
  const edge_status status = pack_common(k, n, ks, kc, w, w_n_stride, w_k_stride, NULL, 0, packed);
  if (status != EDGE_OK) return status;
  fill_epilogue(k, n, edge_qs8_gemm_panel_bytes(k, ks, kc), weight_scale, bias, packed);
  return EDGE_OK;
}

/* ---- depthwise packing ---- */

/* Bytes of one block's weights. */
static size_t dwconv_weight_bytes(const edge_qs8_kernels *k, size_t taps) {
  const size_t ct = k->dwconv_channel_tile;
  return k->dwconv_layout == EDGE_QS8_DWCONV_INT16_PAIRS ? (taps + 1) / 2 * ct * 2 * sizeof(int16_t) : taps * ct;
}

size_t edge_qs8_dwconv_packed_bytes(const edge_qs8_kernels *k, size_t channels, size_t taps) {
  const size_t ct = k->dwconv_channel_tile;
  return round_up((channels + ct - 1) / ct * (ct * 3 * sizeof(int32_t) + dwconv_weight_bytes(k, taps)), 64);
}

/* Where weight (tap t, channel j of the block) goes, in bytes from the block's weights. */
static size_t dwconv_weight_offset(const edge_qs8_kernels *k, size_t t, size_t j) {
  const size_t ct = k->dwconv_channel_tile;
  if (k->dwconv_layout != EDGE_QS8_DWCONV_INT16_PAIRS) return t * ct + j;
  const size_t half = j % 8 < 4 ? 0 : 1, lane = j / 8 * 4 + j % 4;
  return ((t / 2 * 2 + half) * (ct / 2) + lane) * 2 * sizeof(int16_t) + t % 2 * sizeof(int16_t);
}

static edge_status dwconv_pack(const edge_qs8_kernels *k, size_t channels, size_t taps, const int8_t *w,
                               const int32_t *bias, int32_t input_zero_point, const void *first,
                               const void *second, void *packed) {
  const size_t ct = k->dwconv_channel_tile, weight_bytes = dwconv_weight_bytes(k, taps);
  const size_t block = ct * 3 * sizeof(int32_t) + weight_bytes;
  const bool wide = k->dwconv_layout == EDGE_QS8_DWCONV_INT16_PAIRS;
  memset(packed, 0, edge_qs8_dwconv_packed_bytes(k, channels, taps));
  uint8_t *out = packed;
  for (size_t c0 = 0; c0 < channels; c0 += ct, out += block) {
    const size_t cols = channels - c0 < ct ? channels - c0 : ct;
    uint8_t *weights = out + ct * sizeof(int32_t), *epilogue = weights + weight_bytes;
    for (size_t j = 0; j < cols; ++j) {
      const size_t c = c0 + j;
      int64_t sum = 0;
      for (size_t t = 0; t < taps; ++t) {
        const int8_t v = w[c * taps + t];
        sum += v;
        uint8_t *dst = weights + dwconv_weight_offset(k, t, j);
        if (wide) {
          const int16_t wide_v = v;
          memcpy(dst, &wide_v, sizeof wide_v);
        } else {
          *(int8_t *)dst = v;
        }
      }
      const int64_t b = bias ? bias[c] : 0;
      const edge_status status = check_range(c, b, taps);
      if (status != EDGE_OK) return status;
      const int32_t folded = (int32_t)(b - (int64_t)input_zero_point * sum);
      memcpy(out + j * sizeof(int32_t), &folded, sizeof folded);
      memcpy(epilogue + j * sizeof(int32_t), (const int32_t *)first + c, sizeof(int32_t));
      if (second) memcpy(epilogue + (ct + j) * sizeof(int32_t), (const int32_t *)second + c, sizeof(int32_t));
    }
  }
  return EDGE_OK;
}

edge_status edge_qs8_dwconv_pack(const edge_qs8_kernels *k, size_t channels, size_t taps, const int8_t *w,
                                 const int32_t *bias, int32_t input_zero_point, const int32_t *multiplier,
                                 const int32_t *shift, void *packed) {
  for (size_t c = 0; c < channels; ++c)
    if (shift[c] < 1 || shift[c] > 62 || multiplier[c] < 0)
      return edge_set_last_error(EDGE_INVALID_ARGUMENT,
                                 "qs8 depthwise: channel %zu: requantization multiplier %d, shift %d out of range "
                                 "(multiplier >= 0, shift in [1, 62])",
                                 c, (int)multiplier[c], (int)shift[c]);
  return dwconv_pack(k, channels, taps, w, bias, input_zero_point, multiplier, shift, packed);
}

edge_status edge_qs8_dwconv_pack_dynamic(const edge_qs8_kernels *k, size_t channels, size_t taps, const int8_t *w,
                                         const float *weight_scale, const float *bias, void *packed) {
  return dwconv_pack(k, channels, taps, w, NULL, 0, weight_scale, bias, packed);
}

/* ---- GEMM drivers ---- */

typedef struct {
  const edge_qs8_kernels *k;
  size_t m, n, kdim, m_tiles, block_columns, panel_bytes;
  const int8_t *a;
  size_t a_stride;
  const uint8_t *packed;
  void *c;
  size_t c_stride;
  const edge_qs8_requant_params *rq;
  edge_qs8_dq_params dq; /* dynamic mode when dq.row_scale != NULL */
  const edge_activation *after;
} qgemm_job;

static void qgemm_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qgemm_job *job = arg;
  const edge_qs8_kernels *k = job->k;
  for (int64_t cell = begin; cell < end; ++cell) {
    const size_t block = (size_t)cell / job->m_tiles, tile = (size_t)cell % job->m_tiles;
    const size_t n0 = block * job->block_columns, m0 = tile * k->mr;
    const size_t nc = job->n - n0 < job->block_columns ? job->n - n0 : job->block_columns;
    const size_t mr = job->m - m0 < k->mr ? job->m - m0 : k->mr;
    const uint8_t *w = job->packed + n0 / k->nr * job->panel_bytes;
    const int8_t *a = job->a + m0 * job->a_stride;
    if (job->dq.row_scale) {
      edge_qs8_dq_params dq = job->dq;
      dq.row_scale += m0 * dq.row_scale_stride;
      float *c = (float *)job->c + m0 * job->c_stride + n0;
      k->gemm_dq[mr == 1](mr, nc, job->kdim, a, job->a_stride, w, c, job->c_stride, &dq);
      if (job->after)
        for (size_t r = 0; r < mr; ++r) edge_activation_apply(job->after, c + r * job->c_stride, nc);
    } else {
      int8_t *c = (int8_t *)job->c + m0 * job->c_stride + n0;
      k->gemm[mr == 1](mr, nc, job->kdim, a, job->a_stride, w, c, job->c_stride, job->rq);
    }
  }
}

static void qgemm_run(qgemm_job *job, edge_threadpool *pool) {
  const edge_qs8_kernels *k = job->k;
  const size_t nr = k->nr, n = job->n;
  job->panel_bytes = edge_qs8_gemm_panel_bytes(k, 1, job->kdim);
  job->m_tiles = (job->m + k->mr - 1) / k->mr;
  size_t block_columns = QGEMM_SLAB_BYTES / job->panel_bytes * nr;
  if (block_columns < nr) block_columns = nr;
  const int32_t threads = pool ? edge_threadpool_size(pool) : 1;
  const int parallel =
      threads > 1 && (double)job->m * (double)n * (double)job->kdim >= (double)QGEMM_MIN_PARALLEL_MACS;
  if (parallel) {
    const size_t wanted = 4 * (size_t)threads;
    if (job->m_tiles * ((n + block_columns - 1) / block_columns) < wanted) {
      const size_t blocks = (wanted + job->m_tiles - 1) / job->m_tiles;
      const size_t columns = round_up((n + blocks - 1) / blocks, nr);
      if (columns < block_columns) block_columns = columns;
    }
  }
  job->block_columns = block_columns;
  const size_t cells = job->m_tiles * ((n + block_columns - 1) / block_columns);
  if (parallel && cells > 1) edge_parallel_for(pool, (int64_t)cells, qgemm_cells, job);
  else qgemm_cells(job, 0, (int64_t)cells, 0);
}

void edge_qs8_gemm_compute(const edge_qs8_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                           const int8_t *a, size_t a_stride, const void *packed, int8_t *c, size_t c_stride,
                           const edge_qs8_requant_params *params) {
  if (m == 0 || n == 0) return;
  qgemm_job job = {.k = k, .m = m, .n = n, .kdim = kdim, .a = a, .a_stride = a_stride, .packed = packed,
                   .c = c, .c_stride = c_stride, .rq = params};
  qgemm_run(&job, pool);
}

/* The float clamp a fused activation becomes, or NULL bounds plus an activation to apply after. */
void edge_qs8_dq_activation(const edge_activation *act, edge_qs8_dq_params *dq, const edge_activation **after) {
  dq->min = -INFINITY;
  dq->max = INFINITY;
  *after = NULL;
  switch (act ? act->op : EDGE_UNARY_IDENTITY) {
    case EDGE_UNARY_IDENTITY: break;
    case EDGE_UNARY_RELU: dq->min = 0.0f; break;
    case EDGE_UNARY_RELU6: dq->min = 0.0f; dq->max = 6.0f; break;
    case EDGE_UNARY_CLIP: dq->min = act->alpha; dq->max = act->beta; break;
    default: *after = act;
  }
}

void edge_qs8_gemm_dynamic_compute(const edge_qs8_kernels *k, edge_threadpool *pool, size_t m, size_t n,
                                   size_t kdim, const int8_t *a, size_t a_stride, const void *packed, float *c,
                                   size_t c_stride, const float *row_scale, size_t row_scale_stride,
                                   const edge_activation *act) {
  if (m == 0 || n == 0) return;
  qgemm_job job = {.k = k, .m = m, .n = n, .kdim = kdim, .a = a, .a_stride = a_stride, .packed = packed,
                   .c = c, .c_stride = c_stride};
  edge_qs8_dq_activation(act, &job.dq, &job.after);
  job.dq.row_scale = row_scale;
  job.dq.row_scale_stride = row_scale_stride;
  qgemm_run(&job, pool);
}

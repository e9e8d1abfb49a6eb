/* Scalar qs8 GEMM / IGEMM tiles, 4x4 and 1x4, k group 1 (contracts in qgemm.h): the reference
 * every SIMD level is tested against byte for byte. One template serves the plain and the
 * indirect GEMM (the plain one is the indirect one with a single tap whose row pointers are
 * a + m * a_stride) and both epilogues. */
#include "../qgemm.h"

#define NR 4

static inline __attribute__((always_inline)) void qs8_tile_scalar(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const uint8_t *p = w;
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    int32_t acc[4][NR];
    int32_t bias[NR];
    __builtin_memcpy(bias, p, sizeof bias);
    p += sizeof bias;
    for (size_t m = 0; m < MR; ++m)
      for (size_t j = 0; j < NR; ++j) acc[m][j] = bias[j];
    for (size_t t = 0; t < ks; ++t) {
      const int8_t *rows[4];
      for (size_t m = 0; m < MR; ++m) {
        const int8_t *r = a[t * TILE_MR + m];
        rows[m] = r == zero ? r : r + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        const int8_t *wk = (const int8_t *)p;
        for (size_t m = 0; m < MR; ++m) {
          const int32_t x = rows[m][k];
          for (size_t j = 0; j < NR; ++j) acc[m][j] += x * (int32_t)wk[j];
        }
        p += NR;
      }
    }
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    if (dq) {
      float scale[NR], fbias[NR];
      __builtin_memcpy(scale, p, sizeof scale);
      __builtin_memcpy(fbias, p + sizeof scale, sizeof fbias);
      for (size_t m = 0; m < mr; ++m) {
        const float row_scale = dqp->row_scale[m * dqp->row_scale_stride];
        float *out = (float *)c + m * c_stride + n0;
        for (size_t j = 0; j < cols; ++j) {
          const float v = (float)acc[m][j] * (row_scale * scale[j]) + fbias[j];
          out[j] = v < dqp->min ? dqp->min : (v > dqp->max ? dqp->max : v);
        }
      }
    } else {
      int32_t multiplier[NR], shift[NR];
      __builtin_memcpy(multiplier, p, sizeof multiplier);
      __builtin_memcpy(shift, p + sizeof multiplier, sizeof shift);
      for (size_t m = 0; m < mr; ++m) {
        int8_t *out = (int8_t *)c + m * c_stride + n0;
        for (size_t j = 0; j < cols; ++j)
          out[j] = edge_requantize_s8(acc[m][j], multiplier[j], shift[j], rq->zero_point, rq->qmin, rq->qmax);
      }
    }
    p += 2 * NR * sizeof(int32_t);
  }
}

#define GEMM_ROWS(MR)                                                  \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

#define DEFINE_QS8_SCALAR(MR)                                                                                     \
  void edge_qs8_gemm_ukernel_##MR##x4__scalar(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride, \
                                              const void *w, int8_t *c, size_t c_stride,                         \
                                              const edge_qs8_requant_params *params) {                           \
    GEMM_ROWS(MR);                                                                                                \
    qs8_tile_scalar(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                   \
  }                                                                                                               \
  void edge_qs8_gemm_dq_ukernel_##MR##x4__scalar(size_t mr, size_t nc, size_t kc, const int8_t *a,                \
                                                 size_t a_stride, const void *w, float *c, size_t c_stride,      \
                                                 const edge_qs8_dq_params *params) {                              \
    GEMM_ROWS(MR);                                                                                                \
    qs8_tile_scalar(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                    \
  }                                                                                                               \
  void edge_qs8_igemm_ukernel_##MR##x4__scalar(size_t mr, size_t nc, size_t kc, size_t ks,                        \
                                               const int8_t *const *a, const void *w, int8_t *c,                 \
                                               size_t c_stride, size_t input_offset, const int8_t *zero,         \
                                               const edge_qs8_requant_params *params) {                          \
    qs8_tile_scalar(MR, 4, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params, NULL);           \
  }                                                                                                               \
  void edge_qs8_igemm_dq_ukernel_##MR##x4__scalar(size_t mr, size_t nc, size_t kc, size_t ks,                     \
                                                  const int8_t *const *a, const void *w, float *c,               \
                                                  size_t c_stride, size_t input_offset, const int8_t *zero,      \
                                                  const edge_qs8_dq_params *params) {                            \
    qs8_tile_scalar(MR, 4, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL, params);            \
  }

DEFINE_QS8_SCALAR(4)
DEFINE_QS8_SCALAR(1)

/* SSE2 qs8 GEMM / IGEMM tiles 4x4 and 1x4, k groups of 4 (contracts in qgemm.h): the x86-64
 * baseline's int8 path. Products: pmaddwd on int8 values sign-extended to int16 (unpack with
 * itself, then an arithmetic shift by 8), exact like the AVX2 kernel's; the 4 columns x 4 k
 * bytes of a group widen to two vectors of 2 columns, each 32-bit lane half a column's group,
 * joined by one shuffle-and-add at the end. SSE2 has no signed 32x32->64 multiply, so the
 * epilogue runs the scalar requant.h functions on the 4 sums of a row (a cost per output, not
 * per multiply-add), which makes it bit-exact by construction. */
#include <emmintrin.h>
#include <string.h>

#include "../qgemm.h"

#define NR 4
#define KR 4
#define MAX_MR 4

static inline __attribute__((always_inline)) __m128i widen_lo(__m128i v) {
  return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8);
}
static inline __attribute__((always_inline)) __m128i widen_hi(__m128i v) {
  return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8);
}

/* 4 bytes of a row as int16, in both 64-bit halves. */
static inline __attribute__((always_inline)) __m128i row_group(const int8_t *p, size_t n) {
  int32_t v = 0;
  memcpy(&v, p, n);
  const __m128i x = widen_lo(_mm_cvtsi32_si128(v));
  return _mm_unpacklo_epi64(x, x);
}

static inline __attribute__((always_inline)) void qs8_tile_sse2(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  const size_t kc_full = kc & ~(size_t)(KR - 1), k_rest = kc - kc_full;
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    const __m128i bias = _mm_loadu_si128((const __m128i *)p);
    p += NR * 4;
    __m128i acc_lo[MAX_MR], acc_hi[MAX_MR];
    for (size_t m = 0; m < MR; ++m) acc_lo[m] = acc_hi[m] = _mm_setzero_si128();
    for (size_t t = 0; t < ks; ++t) {
      const int8_t *rows[MAX_MR];
      for (size_t m = 0; m < MR; ++m) {
        const int8_t *r = a[t * TILE_MR + m];
        rows[m] = r == zero ? r : r + input_offset;
      }
      for (size_t k = 0; k < kc; k += KR) {
        const __m128i wv = _mm_loadu_si128((const __m128i *)p);
        const __m128i w_lo = widen_lo(wv), w_hi = widen_hi(wv);
        p += NR * KR;
        const bool tail = k >= kc_full;
        for (size_t m = 0; m < MR; ++m) {
          /* a constant length in the common case, so the copy is one load */
          const __m128i x = tail ? row_group(rows[m] + k, k_rest) : row_group(rows[m] + k, KR);
          acc_lo[m] = _mm_add_epi32(acc_lo[m], _mm_madd_epi16(x, w_lo));
          acc_hi[m] = _mm_add_epi32(acc_hi[m], _mm_madd_epi16(x, w_hi));
        }
      }
    }
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    int32_t first[NR], second[NR];
    memcpy(first, p, sizeof first);
    memcpy(second, p + sizeof first, sizeof second);
    for (size_t m = 0; m < MR && m < mr; ++m) {
      /* lanes (c0 k0-1, c0 k2-3, c1 ..) and (c2 .., c3 ..): even + odd lanes = columns 0..3 */
      const __m128 lo = _mm_castsi128_ps(acc_lo[m]), hi = _mm_castsi128_ps(acc_hi[m]);
      const __m128i sum = _mm_add_epi32(_mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))),
                                        _mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))));
      int32_t acc[NR];
      _mm_storeu_si128((__m128i *)acc, _mm_add_epi32(bias, sum));
      if (dq) {
        float scale[NR], fbias[NR];
        memcpy(scale, first, sizeof scale);
        memcpy(fbias, second, sizeof fbias);
        const float row_scale = dqp->row_scale[m * dqp->row_scale_stride];
        float *out = (float *)c + m * c_stride + n0;
        for (size_t j = 0; j < cols; ++j) {
          const float v = (float)acc[j] * (row_scale * scale[j]) + fbias[j];
          out[j] = v < dqp->min ? dqp->min : (v > dqp->max ? dqp->max : v);
        }
      } else {
        int8_t *out = (int8_t *)c + m * c_stride + n0;
        for (size_t j = 0; j < cols; ++j)
          out[j] = edge_requantize_s8(acc[j], first[j], second[j], rq->zero_point, rq->qmin, rq->qmax);
      }
    }
    p += 2 * NR * 4;
  }
}

#define GEMM_ROWS(MR)                                                  \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

#define DEFINE_QS8_SSE2(MR)                                                                                      \
  void edge_qs8_gemm_ukernel_##MR##x4c4__sse2(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride, \
                                              const void *w, int8_t *c, size_t c_stride,                         \
                                              const edge_qs8_requant_params *params) {                           \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_sse2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                    \
  }                                                                                                              \
  void edge_qs8_gemm_dq_ukernel_##MR##x4c4__sse2(size_t mr, size_t nc, size_t kc, const int8_t *a,               \
                                                 size_t a_stride, const void *w, float *c, size_t c_stride,      \
                                                 const edge_qs8_dq_params *params) {                             \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_sse2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                     \
  }                                                                                                              \
  void edge_qs8_igemm_ukernel_##MR##x4c4__sse2(size_t mr, size_t nc, size_t kc, size_t ks,                       \
                                               const int8_t *const *a, const void *w, int8_t *c,                 \
                                               size_t c_stride, size_t input_offset, const int8_t *zero,         \
                                               const edge_qs8_requant_params *params) {                          \
    qs8_tile_sse2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params, NULL);       \
  }                                                                                                              \
  void edge_qs8_igemm_dq_ukernel_##MR##x4c4__sse2(size_t mr, size_t nc, size_t kc, size_t ks,                    \
                                                  const int8_t *const *a, const void *w, float *c,               \
                                                  size_t c_stride, size_t input_offset, const int8_t *zero,      \
                                                  const edge_qs8_dq_params *params) {                            \
    qs8_tile_sse2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL, params);        \
  }

DEFINE_QS8_SSE2(4)
DEFINE_QS8_SSE2(1)

/* AVX2 qs8 GEMM / IGEMM tiles, 4x8 and 1x8, k groups of 4 (contracts in qgemm.h).
 *
 * Products: vpmaddwd on int8 values sign-extended to int16, which is exact (|x * w| <= 2^14, a
 * pair sums to at most 2^15 in magnitude, within int32); vpmaddubsw is not used because its
 * int16 pair sums saturate. A k group of one row (4 bytes -> 4 int16) is broadcast to every
 * 64-bit lane; the panel's 8 columns x 4 k bytes widen to two vectors of 4 columns, so each
 * 32-bit accumulator lane holds half of one column's group (k 0-1 or k 2-3), and one hadd at
 * the end joins the halves.
 *
 * Requantization: qs8-avx2.h. */
#include "qs8-avx2.h"

#define NR 8
#define KR 4
#define MAX_MR 4

static inline __attribute__((always_inline)) void qs8_tile_avx2(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  const size_t kc_full = kc & ~(size_t)(KR - 1), k_rest = kc - kc_full;
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    const __m256i bias = _mm256_loadu_si256((const __m256i *)p);
    p += NR * 4;
    __m256i acc_lo[MAX_MR], acc_hi[MAX_MR];
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) acc_lo[m] = acc_hi[m] = _mm256_setzero_si256();
    for (size_t t = 0; t < ks; ++t) {
      const int8_t *rows[MAX_MR];
      _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
        const int8_t *r = a[t * TILE_MR + m];
        rows[m] = r == zero ? r : r + input_offset;
      }
      size_t k = 0;
      for (; k < kc_full; k += KR) {
        const __m256i w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
        const __m256i w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16)));
        p += NR * KR;
        _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
          const __m256i x = _mm256_cvtepi8_epi16(_mm_set1_epi32(load4(rows[m] + k)));
          acc_lo[m] = _mm256_add_epi32(acc_lo[m], _mm256_madd_epi16(x, w_lo));
          acc_hi[m] = _mm256_add_epi32(acc_hi[m], _mm256_madd_epi16(x, w_hi));
        }
      }
      if (k_rest) {
        const __m256i w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
        const __m256i w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16)));
        p += NR * KR;
        _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
          const __m256i x =
              _mm256_cvtepi8_epi16(_mm_set1_epi32(load_tail(rows[m] + k, k_rest)));
          acc_lo[m] = _mm256_add_epi32(acc_lo[m], _mm256_madd_epi16(x, w_lo));
          acc_hi[m] = _mm256_add_epi32(acc_hi[m], _mm256_madd_epi16(x, w_hi));
        }
      }
    }
    /* hadd per 128-bit lane gives columns (0 1 4 5 | 2 3 6 7); the permute puts them in order */
    __m256i acc[MAX_MR];
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) acc[m] = _mm256_add_epi32(
        bias, _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc_lo[m], acc_hi[m]), _MM_SHUFFLE(3, 1, 2, 0)));
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    if (dq) {
      const __m256 scale = _mm256_loadu_ps((const float *)p), fbias = _mm256_loadu_ps((const float *)p + NR);
      const __m256 vmin = _mm256_set1_ps(dqp->min), vmax = _mm256_set1_ps(dqp->max);
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
        if (m >= mr) break;
        const __m256 s = _mm256_mul_ps(_mm256_set1_ps(dqp->row_scale[m * dqp->row_scale_stride]), scale);
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[m]), s), fbias);
        v = _mm256_min_ps(vmax, _mm256_max_ps(vmin, v));
        float *out = (float *)c + m * c_stride + n0;
        if (cols == NR) _mm256_storeu_ps(out, v);
        else _mm256_maskstore_ps(out, mask, v);
      }
    } else {
      const __m256i multiplier = _mm256_loadu_si256((const __m256i *)p);
      const __m256i shift = _mm256_loadu_si256((const __m256i *)(p + NR * 4));
      const __m256i lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point), hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
      const __m256i zp = _mm256_set1_epi32(rq->zero_point);
      _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
        if (m >= mr) break;
        const __m256i v = _mm256_add_epi32(requantize8(acc[m], multiplier, shift, lo, hi), zp);
        /* values are in [-128, 127]: the saturating packs only narrow */
        const __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        const __m128i v8 = _mm_packs_epi16(v16, v16);
        int8_t *out = (int8_t *)c + m * c_stride + n0;
        if (cols == NR) _mm_storel_epi64((__m128i *)out, v8);
        else {
          int8_t bytes[16];
          _mm_storeu_si128((__m128i *)bytes, v8);
          memcpy(out, bytes, cols);
        }
      }
    }
    p += 2 * NR * 4;
  }
}

#define GEMM_ROWS(MR)                                                  \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

#define DEFINE_QS8_AVX2(MR)                                                                                      \
  void edge_qs8_gemm_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride, \
                                              const void *w, int8_t *c, size_t c_stride,                         \
                                              const edge_qs8_requant_params *params) {                           \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_avx2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                    \
  }                                                                                                              \
  void edge_qs8_gemm_dq_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, const int8_t *a,               \
                                                 size_t a_stride, const void *w, float *c, size_t c_stride,      \
                                                 const edge_qs8_dq_params *params) {                             \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_avx2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                     \
  }                                                                                                              \
  void edge_qs8_igemm_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks,                       \
                                               const int8_t *const *a, const void *w, int8_t *c,                 \
                                               size_t c_stride, size_t input_offset, const int8_t *zero,         \
                                               const edge_qs8_requant_params *params) {                          \
    qs8_tile_avx2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params, NULL);       \
  }                                                                                                              \
  void edge_qs8_igemm_dq_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks,                    \
                                                  const int8_t *const *a, const void *w, float *c,               \
                                                  size_t c_stride, size_t input_offset, const int8_t *zero,      \
                                                  const edge_qs8_dq_params *params) {                            \
    qs8_tile_avx2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL, params);        \
  }

DEFINE_QS8_AVX2(4)
DEFINE_QS8_AVX2(1)

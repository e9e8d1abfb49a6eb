/* The AVX-512 qs8 GEMM template shared by avx512 (vpmaddwd on int16-widened int8, AVX-512BW) and
 * avx512vnni (vpdpbusd on x + 128 as unsigned bytes): MR rows x 16 * NV columns, k groups of 4,
 * both epilogues, plain and indirect GEMM (contracts in qgemm.h). The including file defines
 * QS8_AVX512_VNNI (0 or 1), QS8_AVX512_NV and QS8_AVX512_MAX_MR before including.
 *
 * Requantization: qs8-avx512.h, the fast or the general sequence chosen per panel from its packed
 * shifts. Column tails are masked stores. */
#include "qs8-avx512.h"

/* NV vectors of 16 columns per panel (the including file defines QS8_AVX512_NV). */
#define NV QS8_AVX512_NV
#define NR (16 * NV)
#define KR 4

static inline __attribute__((always_inline)) void qs8_tile_avx512(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  const size_t kc_full = kc & ~(size_t)(KR - 1), k_rest = kc - kc_full;
#if QS8_AVX512_VNNI
  const int32_t flip = (int32_t)0x80808080u; /* x ^ 0x80 = x + 128 as an unsigned byte */
#endif
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    __m512i bias[NV];
    _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) bias[v] = _mm512_loadu_si512(p + 64 * v);
    p += NR * 4;
    __m512i acc[QS8_AVX512_MAX_MR][NV];
#if !QS8_AVX512_VNNI
    __m512i acc_hi[QS8_AVX512_MAX_MR][NV];
#endif
    _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
      _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
#if QS8_AVX512_VNNI
        acc[m][v] = bias[v];
#else
        acc[m][v] = acc_hi[m][v] = _mm512_setzero_si512();
#endif
      }
    }
    for (size_t t = 0; t < ks; ++t) {
      const int8_t *rows[QS8_AVX512_MAX_MR];
      _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
        const int8_t *r = a[t * TILE_MR + m];
        rows[m] = r == zero ? r : r + input_offset;
      }
      /* full k groups, then the short last group loaded piecewise (never read past kc) */
      for (size_t k = 0; k < kc; k += KR) {
        const bool tail = k >= kc_full;
        int32_t bytes[QS8_AVX512_MAX_MR];
        if (__builtin_expect(!tail, 1)) {
          _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) bytes[m] = qs8_load4(rows[m] + k);
        } else {
          _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) bytes[m] = qs8_load_tail(rows[m] + k, k_rest);
        }
#if QS8_AVX512_VNNI
        __m512i wv[NV];
        _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) wv[v] = _mm512_loadu_si512(p + 64 * v);
#else
        __m512i w_lo[NV], w_hi[NV];
        _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
          w_lo[v] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 64 * v)));
          w_hi[v] = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(p + 64 * v + 32)));
        }
#endif
        p += NR * KR;
        _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
#if QS8_AVX512_VNNI
          const __m512i x = _mm512_set1_epi32(bytes[m] ^ flip);
          _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbusd_epi32(acc[m][v], x, wv[v]);
#else
          const __m512i x = _mm512_cvtepi8_epi16(_mm256_set1_epi32(bytes[m]));
          _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
            acc[m][v] = _mm512_add_epi32(acc[m][v], _mm512_madd_epi16(x, w_lo[v]));
            acc_hi[m][v] = _mm512_add_epi32(acc_hi[m][v], _mm512_madd_epi16(x, w_hi[v]));
          }
#endif
        }
      }
    }
#if !QS8_AVX512_VNNI
    /* lanes hold (column, k 0-1) and (column, k 2-3) pairs: gather even and odd lanes and add */
    {
      const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
      const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
      _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
        _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) acc[m][v] = _mm512_add_epi32(
            bias[v], _mm512_add_epi32(_mm512_permutex2var_epi32(acc[m][v], even, acc_hi[m][v]),
                                      _mm512_permutex2var_epi32(acc[m][v], odd, acc_hi[m][v])));
      }
    }
#endif
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    __mmask16 mask[NV];
    _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
      const size_t in_vector = cols > 16 * v ? cols - 16 * v : 0;
      mask[v] = in_vector >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << in_vector) - 1u);
    }
    if (dq) {
      const __m512 vmin = _mm512_set1_ps(dqp->min), vmax = _mm512_set1_ps(dqp->max);
      _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
        const __m512 scale = _mm512_loadu_ps(p + 64 * v), fbias = _mm512_loadu_ps(p + NR * 4 + 64 * v);
        _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
          if (m >= mr) break;
          const __m512 s = _mm512_mul_ps(_mm512_set1_ps(dqp->row_scale[m * dqp->row_scale_stride]), scale);
          __m512 y = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc[m][v]), s), fbias);
          y = _mm512_min_ps(vmax, _mm512_max_ps(vmin, y));
          _mm512_mask_storeu_ps((float *)c + m * c_stride + n0 + 16 * v, mask[v], y);
        }
      }
    } else {
      const __m512i zp = _mm512_set1_epi32(rq->zero_point);
      __m512i multiplier[NV], shift[NV];
      __mmask16 below_33 = 0;
      _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
        multiplier[v] = _mm512_loadu_si512(p + 64 * v);
        shift[v] = _mm512_loadu_si512(p + NR * 4 + 64 * v);
        below_33 |= qs8_shifts_below_33(shift[v], mask[v]);
      }
      /* chosen per panel from its shifts: the cheaper exact sequence when every shift is >= 33 */
      if (__builtin_expect(!below_33, 1)) {
        const __m128i qmin8 = _mm_set1_epi8((char)rq->qmin), qmax8 = _mm_set1_epi8((char)rq->qmax);
        const __m512i high_words = qs8_high_words();
        _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
          const qs8_requant16_fast k = qs8_requant16_fast_prepare(multiplier[v], shift[v]);
          _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
            if (m >= mr) break;
            const __m128i y = qs8_requantize16_fast(acc[m][v], &k, high_words, zp);
            _mm_mask_storeu_epi8((int8_t *)c + m * c_stride + n0 + 16 * v, mask[v],
                                 _mm_min_epi8(qmax8, _mm_max_epi8(qmin8, y)));
          }
        }
      } else {
        const __m512i lo = _mm512_set1_epi64(rq->qmin - rq->zero_point);
        const __m512i hi = _mm512_set1_epi64(rq->qmax - rq->zero_point);
        _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) {
          const qs8_requant16_constants k = qs8_requant16_prepare(multiplier[v], shift[v]);
          _Pragma("GCC unroll 8") for (size_t m = 0; m < MR; ++m) {
            if (m >= mr) break;
            const __m512i y = _mm512_add_epi32(qs8_requantize16_with(acc[m][v], &k, lo, hi), zp);
            _mm_mask_storeu_epi8((int8_t *)c + m * c_stride + n0 + 16 * v, mask[v], _mm512_cvtsepi32_epi8(y));
          }
        }
      }
    }
    p += 2 * NR * 4;
  }
}

#define QS8_AVX512_GEMM_ROWS(MR)                                       \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

/* Defines the four entry points of one tile: edge_qs8_{gemm,gemm_dq,igemm,igemm_dq}_ukernel_<MR>x<tile>__<isa>. */
#define QS8_AVX512_DEFINE(MR, tile, isa)                                                                                 \
  void edge_qs8_gemm_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride, \
                                                const void *w, int8_t *c, size_t c_stride,                         \
                                                const edge_qs8_requant_params *params) {                           \
    QS8_AVX512_GEMM_ROWS(MR);                                                                                      \
    qs8_tile_avx512(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                    \
  }                                                                                                                \
  void edge_qs8_gemm_dq_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a,               \
                                                   size_t a_stride, const void *w, float *c, size_t c_stride,      \
                                                   const edge_qs8_dq_params *params) {                             \
    QS8_AVX512_GEMM_ROWS(MR);                                                                                      \
    qs8_tile_avx512(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                     \
  }                                                                                                                \
  void edge_qs8_igemm_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks,                       \
                                                 const int8_t *const *a, const void *w, int8_t *c,                 \
                                                 size_t c_stride, size_t input_offset, const int8_t *zero,         \
                                                 const edge_qs8_requant_params *params) {                          \
    qs8_tile_avx512(MR, QS8_AVX512_MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params,   \
                    NULL);                                                                                         \
  }                                                                                                                \
  void edge_qs8_igemm_dq_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks,                    \
                                                    const int8_t *const *a, const void *w, float *c,               \
                                                    size_t c_stride, size_t input_offset, const int8_t *zero,      \
                                                    const edge_qs8_dq_params *params) {                            \
    qs8_tile_avx512(MR, QS8_AVX512_MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL,      \
                    params);                                                                                       \
  }

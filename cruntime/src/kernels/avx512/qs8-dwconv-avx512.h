/* The AVX-512 qs8 depthwise template (contract in qgemm.h), 32 channels per step, any tap count,
 * shared by avx512 (vpmaddwd + vpaddd) and avx512vnni (vpdpwssd); the including file defines
 * QS8_DWCONV_VNNI to 0 or 1 and QS8_DWCONV_ISA.
 *
 * Two taps at a time: both input rows' 32 channels widen to int16 and vpunpcklwd / vpunpckhwd
 * interleave them into (tap a, tap b) pairs per channel, which one vpmaddwd multiplies by the
 * packed int16 weight pairs (EDGE_QS8_DWCONV_INT16_PAIRS) into int32 sums, exactly (two products
 * of at most 2^14 each). An odd last tap pairs with a zero weight. The unpacks scramble channels
 * within 128-bit lanes; one vpermt2d per 16 channels puts them back in order before the
 * epilogue. Channel tails use masked loads and stores, so rows are never touched past
 * `channels`. Requantization: qs8-avx512.h, bit-exact with requant.h. */
#include "qs8-avx512.h"

#define CT 32

/* Blocks of CT channels outside, output pixels inside, so the block's weights and epilogue
 * constants stay in registers (or L1) across the row; TAPS is 9 or 25 for the unrolled 3x3 / 5x5
 * copies and 0 for any count; FAST: every shift is >= 33 (qs8_requantize16_fast in qs8-avx512.h;
 * a compile-time choice, so the pixel loop carries only one epilogue's constants). */
static inline __attribute__((always_inline)) void qs8_dwconv_avx512(
    const size_t TAPS, const bool FAST, size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
    size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights, void *output,
    size_t output_stride, const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + weight_bytes;
  /* lanes of (lo, hi) holding channels 0-15 and 16-31 in order */
  const __m512i order0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i order1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const int8_t *p = weights;
  for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
    const size_t cols = channels - c0 < CT ? channels - c0 : CT;
    const __mmask32 mask = cols == CT ? 0xffffffffu : (__mmask32)((1u << cols) - 1u);
    const __mmask16 mask0 = (__mmask16)mask, mask1 = (__mmask16)(mask >> 16);
    const __m512i bias0 = _mm512_loadu_si512(p), bias1 = _mm512_loadu_si512(p + 64);
    const int8_t *w = p + CT * sizeof(int32_t), *e = w + weight_bytes;
    /* epilogue constants of the block */
    qs8_requant16_constants k0, k1;
    qs8_requant16_fast f0, f1;
    const bool fast = FAST && !dq;
    __m128i qmin8 = _mm_setzero_si128(), qmax8 = qmin8;
    const __m512i high_words = qs8_high_words();
    __m512i lo = _mm512_setzero_si512(), hi = lo, zp = lo;
    __m512 scale0 = _mm512_setzero_ps(), scale1 = scale0, fbias0 = scale0, fbias1 = scale0, vmin = scale0, vmax = scale0;
    if (dq) {
      const __m512 row_scale = _mm512_set1_ps(dqp->row_scale[0]);
      scale0 = _mm512_mul_ps(row_scale, _mm512_loadu_ps(e));
      scale1 = _mm512_mul_ps(row_scale, _mm512_loadu_ps(e + 64));
      fbias0 = _mm512_loadu_ps(e + 128);
      fbias1 = _mm512_loadu_ps(e + 192);
      vmin = _mm512_set1_ps(dqp->min);
      vmax = _mm512_set1_ps(dqp->max);
    } else {
      const __m512i shift0 = _mm512_loadu_si512(e + 128), shift1 = _mm512_loadu_si512(e + 192);
      if (fast) {
        f0 = qs8_requant16_fast_prepare(_mm512_loadu_si512(e), shift0);
        f1 = qs8_requant16_fast_prepare(_mm512_loadu_si512(e + 64), shift1);
        qmin8 = _mm_set1_epi8((char)rq->qmin);
        qmax8 = _mm_set1_epi8((char)rq->qmax);
      } else {
        k0 = qs8_requant16_prepare(_mm512_loadu_si512(e), shift0);
        k1 = qs8_requant16_prepare(_mm512_loadu_si512(e + 64), shift1);
      }
      lo = _mm512_set1_epi64(rq->qmin - rq->zero_point);
      hi = _mm512_set1_epi64(rq->qmax - rq->zero_point);
      zp = _mm512_set1_epi32(rq->zero_point);
    }
    for (size_t x = 0; x < output_width; ++x) {
      const int8_t *const *rows = input + x * input_stride;
      __m512i acc_lo = _mm512_setzero_si512(), acc_hi = _mm512_setzero_si512();
      _Pragma("GCC unroll 13") for (size_t t = 0; t < taps; t += 2) {
        const int8_t *ra = rows[t];
        ra = (ra == zero ? ra : ra + input_offset) + c0;
        const int8_t *rb = t + 1 < taps ? rows[t + 1] : rows[t];
        rb = (rb == zero ? rb : rb + input_offset) + c0;
        const __m512i xa = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, ra));
        const __m512i xb = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, rb));
        const __m512i pair_lo = _mm512_unpacklo_epi16(xa, xb), pair_hi = _mm512_unpackhi_epi16(xa, xb);
        const __m512i w_lo = _mm512_loadu_si512(w + t / 2 * 128), w_hi = _mm512_loadu_si512(w + t / 2 * 128 + 64);
#if QS8_DWCONV_VNNI
        acc_lo = _mm512_dpwssd_epi32(acc_lo, pair_lo, w_lo);
        acc_hi = _mm512_dpwssd_epi32(acc_hi, pair_hi, w_hi);
#else
        acc_lo = _mm512_add_epi32(acc_lo, _mm512_madd_epi16(pair_lo, w_lo));
        acc_hi = _mm512_add_epi32(acc_hi, _mm512_madd_epi16(pair_hi, w_hi));
#endif
      }
      const __m512i acc0 = _mm512_add_epi32(bias0, _mm512_permutex2var_epi32(acc_lo, order0, acc_hi));
      const __m512i acc1 = _mm512_add_epi32(bias1, _mm512_permutex2var_epi32(acc_lo, order1, acc_hi));
      if (dq) {
        float *out = (float *)output + x * output_stride + c0;
        const __m512 v0 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc0), scale0), fbias0);
        const __m512 v1 = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc1), scale1), fbias1);
        _mm512_mask_storeu_ps(out, mask0, _mm512_min_ps(vmax, _mm512_max_ps(vmin, v0)));
        _mm512_mask_storeu_ps(out + 16, mask1, _mm512_min_ps(vmax, _mm512_max_ps(vmin, v1)));
      } else if (fast) {
        int8_t *out = (int8_t *)output + x * output_stride + c0;
        const __m128i v0 = qs8_requantize16_fast(acc0, &f0, high_words, zp);
        const __m128i v1 = qs8_requantize16_fast(acc1, &f1, high_words, zp);
        _mm_mask_storeu_epi8(out, mask0, _mm_min_epi8(qmax8, _mm_max_epi8(qmin8, v0)));
        _mm_mask_storeu_epi8(out + 16, mask1, _mm_min_epi8(qmax8, _mm_max_epi8(qmin8, v1)));
      } else {
        const __m512i v0 = _mm512_add_epi32(qs8_requantize16_with(acc0, &k0, lo, hi), zp);
        const __m512i v1 = _mm512_add_epi32(qs8_requantize16_with(acc1, &k1, lo, hi), zp);
        int8_t *out = (int8_t *)output + x * output_stride + c0;
        _mm_mask_storeu_epi8(out, mask0, _mm512_cvtsepi32_epi8(v0));
        _mm_mask_storeu_epi8(out + 16, mask1, _mm512_cvtsepi32_epi8(v1));
      }
    }
  }
}

/* Whether every channel's shift is >= 33 (int8 mode), read from the packed epilogue words. */
static inline __attribute__((always_inline)) bool qs8_dwconv_all_shifts_33(size_t channels, size_t taps,
                                                                          const void *weights) {
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + weight_bytes;
  const int8_t *p = weights;
  for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
    const size_t cols = channels - c0 < CT ? channels - c0 : CT;
    const __mmask32 mask = cols == CT ? 0xffffffffu : (__mmask32)((1u << cols) - 1u);
    const int8_t *e = p + CT * sizeof(int32_t) + weight_bytes;
    if (qs8_shifts_below_33(_mm512_loadu_si512(e + 128), (__mmask16)mask) |
        qs8_shifts_below_33(_mm512_loadu_si512(e + 192), (__mmask16)(mask >> 16)))
      return false;
  }
  return true;
}

#define QS8_DWCONV_CALL(TAPS, FAST)                                                                               \
  qs8_dwconv_avx512(TAPS, FAST, channels, output_width, taps, input, input_stride, input_offset, zero, weights, \
                    output, output_stride, dq, rq, dqp)

static inline __attribute__((always_inline)) void qs8_dwconv_avx512_dispatch(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const bool fast = !dq && qs8_dwconv_all_shifts_33(channels, taps, weights);
  if (taps == 9) {
    if (fast) QS8_DWCONV_CALL(9, true);
    else QS8_DWCONV_CALL(9, false);
  } else if (taps == 25) {
    if (fast) QS8_DWCONV_CALL(25, true);
    else QS8_DWCONV_CALL(25, false);
  } else {
    if (fast) QS8_DWCONV_CALL(0, true);
    else QS8_DWCONV_CALL(0, false);
  }
}

#define QS8_DWCONV_DEFINE_NAMES(isa)                                                                                \
  void edge_qs8_dwconv_ukernel__##isa(size_t channels, size_t output_width, size_t taps,                           \
                                      const int8_t *const *input, size_t input_stride, size_t input_offset,        \
                                      const int8_t *zero, const void *weights, int8_t *output,                     \
                                      size_t output_stride, const edge_qs8_requant_params *params) {               \
    qs8_dwconv_avx512_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,      \
                      output_stride, false, params, NULL);                                                         \
  }                                                                                                                \
  void edge_qs8_dwconv_dq_ukernel__##isa(size_t channels, size_t output_width, size_t taps,                        \
                                         const int8_t *const *input, size_t input_stride, size_t input_offset,     \
                                         const int8_t *zero, const void *weights, float *output,                   \
                                         size_t output_stride, const edge_qs8_dq_params *params) {                 \
    qs8_dwconv_avx512_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,      \
                      output_stride, true, NULL, params);                                                          \
  }
#define QS8_DWCONV_DEFINE(isa) QS8_DWCONV_DEFINE_NAMES(isa)

/* AVX2 qs8 depthwise kernel, 16 channels per step, any tap count (contract in qgemm.h).
 *
 * Two taps at a time: both input rows' 16 channels widen to int16, vpunpcklwd / vpunpckhwd
 * interleave them into (tap a, tap b) pairs per channel, and one vpmaddwd multiplies them by the
 * packed int16 weight pairs (EDGE_QS8_DWCONV_INT16_PAIRS) into int32 sums, exactly (two products
 * of at most 2^14 each). An odd last tap pairs with a zero weight. The unpacks scramble channels
 * within 128-bit lanes; two vperm2i128 put them back in order before the epilogue. A channel
 * tail is loaded through a small buffer, so rows are never read past `channels`.
 * Requantization: qs8-avx2.h, bit-exact with requant.h. */
#include "qs8-avx2.h"

#define CT 16

static inline __attribute__((always_inline)) __m256i load_channels16(const int8_t *p, size_t cols) {
  if (cols == CT) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
  int8_t tmp[CT] = {0};
  memcpy(tmp, p, cols);
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)tmp));
}

/* Blocks of CT channels outside, output pixels inside, so the block's weights and epilogue
 * constants are loaded once per row; TAPS is 9 or 25 for the unrolled 3x3 / 5x5 copies and 0 for
 * any count. */
static inline __attribute__((always_inline)) void qs8_dwconv_avx2(
    const size_t TAPS, size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
    size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights, void *output,
    size_t output_stride, const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + weight_bytes;
  const int8_t *p = weights;
  for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
    const size_t cols = channels - c0 < CT ? channels - c0 : CT;
    const __m256i bias0 = _mm256_loadu_si256((const __m256i *)p), bias1 = _mm256_loadu_si256((const __m256i *)(p + 32));
    const int8_t *w = p + CT * sizeof(int32_t), *epilogue = w + weight_bytes;
    const __m256i *e = (const __m256i *)epilogue;
    for (size_t x = 0; x < output_width; ++x) {
      const int8_t *const *rows = input + x * input_stride;
      __m256i acc_lo = _mm256_setzero_si256(), acc_hi = _mm256_setzero_si256();
      _Pragma("GCC unroll 13") for (size_t t = 0; t < taps; t += 2) {
        const int8_t *ra = rows[t];
        ra = (ra == zero ? ra : ra + input_offset) + c0;
        const int8_t *rb = t + 1 < taps ? rows[t + 1] : rows[t];
        rb = (rb == zero ? rb : rb + input_offset) + c0;
        const __m256i xa = load_channels16(ra, cols), xb = load_channels16(rb, cols);
        const __m256i *wp = (const __m256i *)(w + t / 2 * 64);
        acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_loadu_si256(wp)));
        acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_loadu_si256(wp + 1)));
      }
      /* lo holds channels 0-3 | 8-11, hi 4-7 | 12-15 */
      const __m256i acc0 = _mm256_add_epi32(bias0, _mm256_permute2x128_si256(acc_lo, acc_hi, 0x20));
      const __m256i acc1 = _mm256_add_epi32(bias1, _mm256_permute2x128_si256(acc_lo, acc_hi, 0x31));
      if (dq) {
        const __m256 row_scale = _mm256_set1_ps(dqp->row_scale[0]);
        const __m256 vmin = _mm256_set1_ps(dqp->min), vmax = _mm256_set1_ps(dqp->max);
        float tmp[CT];
        const __m256i accs[2] = {acc0, acc1};
        for (int h = 0; h < 2; ++h) {
          const __m256 scale = _mm256_loadu_ps((const float *)epilogue + 8 * h);
          const __m256 bias = _mm256_loadu_ps((const float *)epilogue + CT + 8 * h);
          __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(accs[h]), _mm256_mul_ps(row_scale, scale)), bias);
          _mm256_storeu_ps(tmp + 8 * h, _mm256_min_ps(vmax, _mm256_max_ps(vmin, v)));
        }
        memcpy((float *)output + x * output_stride + c0, tmp, cols * sizeof(float));
      } else {
        const __m256i lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point);
        const __m256i hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
        const __m256i zp = _mm256_set1_epi32(rq->zero_point);
        const __m128i v = _mm_unpacklo_epi64(
            requantize8_s8(acc0, _mm256_loadu_si256(e), _mm256_loadu_si256(e + 2), lo, hi, zp),
            requantize8_s8(acc1, _mm256_loadu_si256(e + 1), _mm256_loadu_si256(e + 3), lo, hi, zp));
        int8_t *out = (int8_t *)output + x * output_stride + c0;
        if (cols == CT) _mm_storeu_si128((__m128i *)out, v);
        else {
          int8_t tmp[CT];
          _mm_storeu_si128((__m128i *)tmp, v);
          memcpy(out, tmp, cols);
        }
      }
    }
  }
}

static inline __attribute__((always_inline)) void qs8_dwconv_avx2_dispatch(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (taps == 9)
    qs8_dwconv_avx2(9, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
  else if (taps == 25)
    qs8_dwconv_avx2(25, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
  else
    qs8_dwconv_avx2(0, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
}

void edge_qs8_dwconv_ukernel__avx2(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                   size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights,
                                   int8_t *output, size_t output_stride, const edge_qs8_requant_params *params) {
  qs8_dwconv_avx2_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                  output_stride, false, params, NULL);
}

void edge_qs8_dwconv_dq_ukernel__avx2(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                      size_t input_stride, size_t input_offset, const int8_t *zero,
                                      const void *weights, float *output, size_t output_stride,
                                      const edge_qs8_dq_params *params) {
  qs8_dwconv_avx2_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                  output_stride, true, NULL, params);
}

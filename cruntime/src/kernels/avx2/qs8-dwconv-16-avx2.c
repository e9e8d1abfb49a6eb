/* AVX2 qs8 depthwise kernel, 16 channels per step, any tap count (contract in qgemm.h).
 *
 * Two taps at a time: both input rows' 16 channels widen to int16, vpunpcklwd / vpunpckhwd
 * interleave them into (tap a, tap b) pairs per channel, and one vpmaddwd multiplies them by the
 * packed int16 weight pairs (EDGE_QS8_DWCONV_INT16_PAIRS) into int32 sums, exactly (two products
 * of at most 2^14 each). An odd last tap pairs with itself against a zero weight.
 *
 * Where the time went, and what this file does about it (measured on a 2-core Zen 3 VM): the
 * kernel is bound by the number of instructions per output, not by one port, so every step takes
 * instructions out of the pixel loop:
 *  - the unpacks leave channels 0-3 | 8-11 in acc_lo and 4-7 | 12-15 in acc_hi; rather than two
 *    vperm2i128 per pixel putting them back, the block's bias and epilogue constants are permuted
 *    into that order once per block, and the final vpackssdw of (acc_lo, acc_hi) lands the int16
 *    results in channel order;
 *  - requantization takes the 32-bit path of qs8_requantize8_fast (every shift >= 33, true for
 *    nearly every layer; decided once per call from the packed shifts), a quarter of the
 *    instructions of the general 64-bit one, which is kept for blocks with smaller shifts;
 *  - with input_offset 0 (one image, the usual case) the row pointers are used as they are, with
 *    no compare against `zero` per tap.
 * A channel tail is loaded through a small buffer, so rows are never read past `channels`.
 * Requantization: qs8-avx2.h, bit-exact with requant.h. */
#include "qs8-avx2.h"

#define CT 16

static inline __attribute__((always_inline)) __m256i load_channels16(const int8_t *p, bool full, size_t cols) {
  if (full) return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
  int8_t tmp[CT] = {0};
  memcpy(tmp, p, cols);
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)tmp));
}

/* (channels 0-7, channels 8-15) -> (0-3 | 8-11, 4-7 | 12-15), the order the unpacks leave. */
static inline __attribute__((always_inline)) void to_pair_order(__m256i v0, __m256i v1, __m256i *lo, __m256i *hi) {
  *lo = _mm256_permute2x128_si256(v0, v1, 0x20);
  *hi = _mm256_permute2x128_si256(v0, v1, 0x31);
}

static inline __attribute__((always_inline)) const int8_t *tap_row(const int8_t *r, bool offset_rows,
                                                                    size_t input_offset, const int8_t *zero) {
  return offset_rows && r != zero ? r + input_offset : r;
}

/* One block of CT channels (cols valid) over all output pixels: weights and epilogue constants
 * stay in registers or L1 across the row. TAPS is 9 or 25 for the unrolled 3x3 / 5x5 copies and 0
 * for any count; FAST: every shift of the call is >= 33; FULL: cols == CT. */
static inline __attribute__((always_inline)) void qs8_dwconv_block(
    const size_t TAPS, const bool FAST, const bool FULL, const bool offset_rows, size_t c0, size_t cols,
    size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride, size_t input_offset,
    const int8_t *zero, const int8_t *p, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const int8_t *w = p + CT * sizeof(int32_t);
  const __m256i *e = (const __m256i *)(w + weight_bytes);
  __m256i bias_lo, bias_hi;
  to_pair_order(_mm256_loadu_si256((const __m256i *)p), _mm256_loadu_si256((const __m256i *)p + 1), &bias_lo,
                &bias_hi);
  /* epilogue constants in pair order */
  qs8_requant8_fast f_lo, f_hi;
  __m256i m_lo, m_hi, s_lo, s_hi, lo, hi, zp;
  __m256 scale_lo, scale_hi, fbias_lo, fbias_hi, vmin, vmax;
  to_pair_order(_mm256_loadu_si256(e), _mm256_loadu_si256(e + 1), &m_lo, &m_hi);
  to_pair_order(_mm256_loadu_si256(e + 2), _mm256_loadu_si256(e + 3), &s_lo, &s_hi);
  if (dq) {
    const __m256 row_scale = _mm256_set1_ps(dqp->row_scale[0]);
    scale_lo = _mm256_mul_ps(row_scale, _mm256_castsi256_ps(m_lo));
    scale_hi = _mm256_mul_ps(row_scale, _mm256_castsi256_ps(m_hi));
    fbias_lo = _mm256_castsi256_ps(s_lo);
    fbias_hi = _mm256_castsi256_ps(s_hi);
    vmin = _mm256_set1_ps(dqp->min);
    vmax = _mm256_set1_ps(dqp->max);
  } else {
    if (FAST) {
      f_lo = qs8_requant8_fast_prepare(m_lo, s_lo);
      f_hi = qs8_requant8_fast_prepare(m_hi, s_hi);
    }
    lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point);
    hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
    zp = _mm256_set1_epi32(rq->zero_point);
  }
  const __m128i qmin8 = _mm_set1_epi8((char)(dq ? 0 : rq->qmin)), qmax8 = _mm_set1_epi8((char)(dq ? 0 : rq->qmax));
  for (size_t x = 0; x < output_width; ++x) {
    const int8_t *const *rows = input + x * input_stride;
    __m256i acc_lo = bias_lo, acc_hi = bias_hi;
    _Pragma("GCC unroll 13") for (size_t t = 0; t < taps; t += 2) {
      const __m256i xa = load_channels16(tap_row(rows[t], offset_rows, input_offset, zero) + c0, FULL, cols);
      const __m256i xb =
          t + 1 < taps ? load_channels16(tap_row(rows[t + 1], offset_rows, input_offset, zero) + c0, FULL, cols) : xa;
      const __m256i *wp = (const __m256i *)(w + t / 2 * 64);
      acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_loadu_si256(wp)));
      acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_loadu_si256(wp + 1)));
    }
    if (dq) {
      const __m256 v_lo = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_lo), scale_lo), fbias_lo);
      const __m256 v_hi = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_hi), scale_hi), fbias_hi);
      const __m256 c_lo = _mm256_min_ps(vmax, _mm256_max_ps(vmin, v_lo));
      const __m256 c_hi = _mm256_min_ps(vmax, _mm256_max_ps(vmin, v_hi));
      float tmp[CT];
      float *out = FULL ? (float *)output + x * output_stride + c0 : tmp;
      _mm256_storeu_ps(out, _mm256_permute2f128_ps(c_lo, c_hi, 0x20));
      _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(c_lo, c_hi, 0x31));
      if (!FULL) memcpy((float *)output + x * output_stride + c0, tmp, cols * sizeof(float));
    } else {
      __m256i v_lo, v_hi;
      if (FAST) {
        v_lo = _mm256_add_epi32(qs8_requantize8_fast(acc_lo, &f_lo), zp);
        v_hi = _mm256_add_epi32(qs8_requantize8_fast(acc_hi, &f_hi), zp);
      } else {
        v_lo = _mm256_add_epi32(requantize8(acc_lo, m_lo, s_lo, lo, hi), zp);
        v_hi = _mm256_add_epi32(requantize8(acc_hi, m_hi, s_hi, lo, hi), zp);
      }
      /* int16 in channel order, then saturated to int8 and clamped to [qmin, qmax] */
      const __m256i v16 = _mm256_packs_epi32(v_lo, v_hi);
      __m128i v = _mm_packs_epi16(_mm256_castsi256_si128(v16), _mm256_extracti128_si256(v16, 1));
      v = _mm_min_epi8(qmax8, _mm_max_epi8(qmin8, v));
      int8_t *out = (int8_t *)output + x * output_stride + c0;
      if (FULL) {
        _mm_storeu_si128((__m128i *)out, v);
      } else {
        int8_t tmp[CT];
        _mm_storeu_si128((__m128i *)tmp, v);
        memcpy(out, tmp, cols);
      }
    }
  }
}

/* Whether every channel's shift is >= 33 (int8 mode), read from the packed epilogue words. */
static bool all_shifts_33(size_t channels, size_t taps, const void *weights) {
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + weight_bytes;
  const int8_t *p = weights;
  for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
    const size_t cols = channels - c0 < CT ? channels - c0 : CT;
    const int8_t *shift = p + CT * sizeof(int32_t) + weight_bytes + CT * sizeof(int32_t);
    for (size_t j = 0; j < cols; ++j) {
      int32_t s;
      memcpy(&s, shift + j * sizeof(int32_t), sizeof s);
      if (s < 33) return false;
    }
  }
  return true;
}

static inline __attribute__((always_inline)) void qs8_dwconv_avx2(
    const size_t TAPS, const bool FAST, const bool offset_rows, size_t channels, size_t output_width, size_t taps,
    const int8_t *const *input, size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights,
    void *output, size_t output_stride, const bool dq, const edge_qs8_requant_params *rq,
    const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const int8_t *p = weights;
  size_t c0 = 0;
  for (; c0 + CT <= channels; c0 += CT, p += block_bytes)
    qs8_dwconv_block(TAPS, FAST, true, offset_rows, c0, CT, output_width, taps, input, input_stride, input_offset,
                     zero, p, output, output_stride, dq, rq, dqp);
  if (c0 < channels)
    qs8_dwconv_block(TAPS, FAST, false, offset_rows, c0, channels - c0, output_width, taps, input, input_stride,
                     input_offset, zero, p, output, output_stride, dq, rq, dqp);
}

#define QS8_DWCONV_CALL(TAPS, FAST, OFFSET)                                                                        \
  qs8_dwconv_avx2(TAPS, FAST, OFFSET, channels, output_width, taps, input, input_stride, input_offset, zero,     \
                  weights, output, output_stride, dq, rq, dqp)

/* 3x3 gets copies for each (fast epilogue, offset rows) pair; other tap counts take the general
 * epilogue choice at run time only through FAST. */
static inline __attribute__((always_inline)) void qs8_dwconv_avx2_dispatch(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const bool fast = !dq && all_shifts_33(channels, taps, weights), offset = input_offset != 0;
  if (taps == 9) {
    if (fast && !offset) QS8_DWCONV_CALL(9, true, false);
    else if (fast) QS8_DWCONV_CALL(9, true, true);
    else if (!offset) QS8_DWCONV_CALL(9, false, false);
    else QS8_DWCONV_CALL(9, false, true);
  } else if (taps == 25) {
    if (fast) QS8_DWCONV_CALL(25, true, true);
    else QS8_DWCONV_CALL(25, false, true);
  } else {
    if (fast) QS8_DWCONV_CALL(0, true, true);
    else QS8_DWCONV_CALL(0, false, true);
  }
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

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
 *    no compare against `zero` per tap;
 *  - 3x3 at unit horizontal stride (edge_qs8_dwconv_3x3s1_ukernel__avx2) walks input columns
 *    instead of pixels, so each column is loaded, widened and interleaved once for the three
 *    pixels that read it (3 loads and 7 shuffles per pixel instead of 9 and 19).
 * Without requantization the pixel loop would run at about 1.5x the speed it does with it: the
 * exact 32x32 -> 64-bit products (two vpmuldq per 8 lanes) are what remains costly.
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

/* A block's epilogue constants, in pair order, prepared once per block. */
typedef struct {
  __m256i bias_lo, bias_hi;
  qs8_requant8_fast f_lo, f_hi;
  __m256i m_lo, m_hi, s_lo, s_hi, lo, hi, zp;
  __m128i qmin8, qmax8;
  __m256 scale_lo, scale_hi, fbias_lo, fbias_hi, vmin, vmax;
} block_epilogue;

static inline __attribute__((always_inline)) void block_epilogue_prepare(
    block_epilogue *k, const int8_t *p, size_t weight_bytes, const bool FAST, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const __m256i *e = (const __m256i *)(p + CT * sizeof(int32_t) + weight_bytes);
  to_pair_order(_mm256_loadu_si256((const __m256i *)p), _mm256_loadu_si256((const __m256i *)p + 1), &k->bias_lo,
                &k->bias_hi);
  to_pair_order(_mm256_loadu_si256(e), _mm256_loadu_si256(e + 1), &k->m_lo, &k->m_hi);
  to_pair_order(_mm256_loadu_si256(e + 2), _mm256_loadu_si256(e + 3), &k->s_lo, &k->s_hi);
  if (dq) {
    const __m256 row_scale = _mm256_set1_ps(dqp->row_scale[0]);
    k->scale_lo = _mm256_mul_ps(row_scale, _mm256_castsi256_ps(k->m_lo));
    k->scale_hi = _mm256_mul_ps(row_scale, _mm256_castsi256_ps(k->m_hi));
    k->fbias_lo = _mm256_castsi256_ps(k->s_lo);
    k->fbias_hi = _mm256_castsi256_ps(k->s_hi);
    k->vmin = _mm256_set1_ps(dqp->min);
    k->vmax = _mm256_set1_ps(dqp->max);
    return;
  }
  if (FAST) {
    k->f_lo = qs8_requant8_fast_prepare(k->m_lo, k->s_lo);
    k->f_hi = qs8_requant8_fast_prepare(k->m_hi, k->s_hi);
  }
  k->lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point);
  k->hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
  k->zp = _mm256_set1_epi32(rq->zero_point);
  k->qmin8 = _mm_set1_epi8((char)rq->qmin);
  k->qmax8 = _mm_set1_epi8((char)rq->qmax);
}

/* Requantizes (or dequantizes) one pixel's sums in pair order and stores its cols channels at out
 * (int8_t * or float *). */
static inline __attribute__((always_inline)) void block_epilogue_store(const block_epilogue *k, __m256i acc_lo,
                                                                        __m256i acc_hi, void *out, const bool FAST,
                                                                        const bool FULL, size_t cols, const bool dq) {
  if (dq) {
    const __m256 v_lo = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_lo), k->scale_lo), k->fbias_lo);
    const __m256 v_hi = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc_hi), k->scale_hi), k->fbias_hi);
    const __m256 c_lo = _mm256_min_ps(k->vmax, _mm256_max_ps(k->vmin, v_lo));
    const __m256 c_hi = _mm256_min_ps(k->vmax, _mm256_max_ps(k->vmin, v_hi));
    float tmp[CT];
    float *dst = FULL ? (float *)out : tmp;
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(c_lo, c_hi, 0x20));
    _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(c_lo, c_hi, 0x31));
    if (!FULL) memcpy(out, tmp, cols * sizeof(float));
    return;
  }
  __m256i v_lo, v_hi;
  if (FAST) {
    v_lo = _mm256_add_epi32(qs8_requantize8_fast(acc_lo, &k->f_lo), k->zp);
    v_hi = _mm256_add_epi32(qs8_requantize8_fast(acc_hi, &k->f_hi), k->zp);
  } else {
    v_lo = _mm256_add_epi32(requantize8(acc_lo, k->m_lo, k->s_lo, k->lo, k->hi), k->zp);
    v_hi = _mm256_add_epi32(requantize8(acc_hi, k->m_hi, k->s_hi, k->lo, k->hi), k->zp);
  }
  /* int16 in channel order, then saturated to int8 and clamped to [qmin, qmax] */
  const __m256i v16 = _mm256_packs_epi32(v_lo, v_hi);
  __m128i v = _mm_packs_epi16(_mm256_castsi256_si128(v16), _mm256_extracti128_si256(v16, 1));
  v = _mm_min_epi8(k->qmax8, _mm_max_epi8(k->qmin8, v));
  if (FULL) {
    _mm_storeu_si128((__m128i *)out, v);
  } else {
    int8_t tmp[CT];
    _mm_storeu_si128((__m128i *)tmp, v);
    memcpy(out, tmp, cols);
  }
}

static inline __attribute__((always_inline)) void *pixel_output(void *output, size_t index, const bool dq) {
  return dq ? (void *)((float *)output + index) : (void *)((int8_t *)output + index);
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
  block_epilogue k;
  block_epilogue_prepare(&k, p, weight_bytes, FAST, dq, rq, dqp);
  for (size_t x = 0; x < output_width; ++x) {
    const int8_t *const *rows = input + x * input_stride;
    __m256i acc_lo = k.bias_lo, acc_hi = k.bias_hi;
    _Pragma("GCC unroll 13") for (size_t t = 0; t < taps; t += 2) {
      const __m256i xa = load_channels16(tap_row(rows[t], offset_rows, input_offset, zero) + c0, FULL, cols);
      const __m256i xb =
          t + 1 < taps ? load_channels16(tap_row(rows[t + 1], offset_rows, input_offset, zero) + c0, FULL, cols) : xa;
      const __m256i *wp = (const __m256i *)(w + t / 2 * 64);
      acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), _mm256_loadu_si256(wp)));
      acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), _mm256_loadu_si256(wp + 1)));
    }
    block_epilogue_store(&k, acc_lo, acc_hi, pixel_output(output, x * output_stride + c0, dq), FAST, FULL, cols, dq);
  }
}

/* The int16 weight of tap t in the low half of each 32-bit lane of one pair-order half. */
static inline __attribute__((always_inline)) __m256i tap_weights(const __m256i *pairs, size_t t, size_t half) {
  const __m256i v = _mm256_loadu_si256(pairs + t / 2 * 2 + half);
  return t % 2 ? _mm256_srli_epi32(v, 16) : _mm256_and_si256(v, _mm256_set1_epi32(0xffff));
}

/* Input column j (0 <= j <= output_width + 2) of kernel row r for a 3x3 kernel at unit horizontal
 * stride and dilation: pixel j's tap (r, 0) inside the row, the last pixel's taps (r, 1), (r, 2)
 * past it (column output_width + 2 is read only against zero weights and repeats the last). */
static inline __attribute__((always_inline)) const int8_t *column_row(const int8_t *const *input,
                                                                       size_t input_stride, size_t width, size_t j,
                                                                       size_t r) {
  if (j < width) return input[j * input_stride + 3 * r];
  const size_t k = j - width + 1;
  return input[(width - 1) * input_stride + 3 * r + (k > 2 ? 2 : k)];
}

/* 3x3 at unit horizontal stride and dilation, one full block: neighbouring output pixels share
 * input columns, so each column is loaded and interleaved once instead of three times. Column j
 * gives the pairs A(j) = (row 0, row 1) and P(j) = (row 2 at j, row 2 at j + 1); output pixel x
 * sums A(x) (w0, w3) + A(x + 1) (w1, w4) + A(x + 2) (w2, w5) + P(x) (w6, w7) + P(x + 2) (w8, 0),
 * which is every tap once. P's pairs are the packed pairs 3 and 4 as they are; A's are re-paired
 * from the packing once per block. Sums are exact integers, so the order does not matter. */
static inline __attribute__((always_inline)) void qs8_dwconv_3x3s1_block(
    const bool FAST, const bool offset_rows, size_t c0, size_t output_width, const int8_t *const *input,
    size_t input_stride, size_t input_offset, const int8_t *zero, const int8_t *p, void *output,
    size_t output_stride, const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const size_t weight_bytes = 5 * CT * 2 * sizeof(int16_t);
  const __m256i *pairs = (const __m256i *)(p + CT * sizeof(int32_t));
  block_epilogue k;
  block_epilogue_prepare(&k, p, weight_bytes, FAST, dq, rq, dqp);
  __m256i wa[3][2];
  for (size_t kx = 0; kx < 3; ++kx)
    for (size_t half = 0; half < 2; ++half)
      wa[kx][half] =
          _mm256_or_si256(tap_weights(pairs, kx, half), _mm256_slli_epi32(tap_weights(pairs, 3 + kx, half), 16));
  const __m256i w67_lo = _mm256_loadu_si256(pairs + 6), w67_hi = _mm256_loadu_si256(pairs + 7);
  const __m256i w8_lo = _mm256_loadu_si256(pairs + 8), w8_hi = _mm256_loadu_si256(pairs + 9);
#define COLUMN(j, r) \
  load_channels16(tap_row(column_row(input, input_stride, output_width, j, r), offset_rows, input_offset, zero) + c0, \
                  true, CT)
  /* sums of pixels j - 2, j - 1 (finished by later columns) */
  __m256i acc2_lo = k.bias_lo, acc2_hi = k.bias_hi, acc1_lo = k.bias_lo, acc1_hi = k.bias_hi;
  __m256i x2 = COLUMN(0, 2);
  for (size_t j = 0; j < output_width + 2; ++j) {
    const __m256i x0 = COLUMN(j, 0), x1 = COLUMN(j, 1), x2_next = COLUMN(j + 1, 2);
    const __m256i a_lo = _mm256_unpacklo_epi16(x0, x1), a_hi = _mm256_unpackhi_epi16(x0, x1);
    const __m256i p_lo = _mm256_unpacklo_epi16(x2, x2_next), p_hi = _mm256_unpackhi_epi16(x2, x2_next);
    const __m256i acc0_lo = _mm256_add_epi32(_mm256_add_epi32(k.bias_lo, _mm256_madd_epi16(a_lo, wa[0][0])),
                                             _mm256_madd_epi16(p_lo, w67_lo));
    const __m256i acc0_hi = _mm256_add_epi32(_mm256_add_epi32(k.bias_hi, _mm256_madd_epi16(a_hi, wa[0][1])),
                                             _mm256_madd_epi16(p_hi, w67_hi));
    acc1_lo = _mm256_add_epi32(acc1_lo, _mm256_madd_epi16(a_lo, wa[1][0]));
    acc1_hi = _mm256_add_epi32(acc1_hi, _mm256_madd_epi16(a_hi, wa[1][1]));
    acc2_lo = _mm256_add_epi32(_mm256_add_epi32(acc2_lo, _mm256_madd_epi16(a_lo, wa[2][0])),
                               _mm256_madd_epi16(p_lo, w8_lo));
    acc2_hi = _mm256_add_epi32(_mm256_add_epi32(acc2_hi, _mm256_madd_epi16(a_hi, wa[2][1])),
                               _mm256_madd_epi16(p_hi, w8_hi));
    if (j >= 2)
      block_epilogue_store(&k, acc2_lo, acc2_hi, pixel_output(output, (j - 2) * output_stride + c0, dq), FAST, true,
                           CT, dq);
    acc2_lo = acc1_lo;
    acc2_hi = acc1_hi;
    acc1_lo = acc0_lo;
    acc1_hi = acc0_hi;
    x2 = x2_next;
  }
#undef COLUMN
}

/* Whether every shift of a block's cols channels is >= 33 (int8 mode), from its packed epilogue words:
 * a few instructions per block, so the choice costs nothing next to the block's row of pixels. */
static inline __attribute__((always_inline)) bool block_shifts_33(const int8_t *p, size_t weight_bytes, size_t cols) {
  const int8_t *shift = p + 2 * CT * sizeof(int32_t) + weight_bytes;
  if (cols == CT) {
    const __m256i limit = _mm256_set1_epi32(33);
    const __m256i below = _mm256_or_si256(_mm256_cmpgt_epi32(limit, _mm256_loadu_si256((const __m256i *)shift)),
                                          _mm256_cmpgt_epi32(limit, _mm256_loadu_si256((const __m256i *)shift + 1)));
    return _mm256_testz_si256(below, below);
  }
  for (size_t j = 0; j < cols; ++j) {
    int32_t s;
    memcpy(&s, shift + j * sizeof(int32_t), sizeof s);
    if (s < 33) return false;
  }
  return true;
}

static inline __attribute__((always_inline)) void qs8_dwconv_avx2(
    const size_t TAPS, const bool offset_rows, size_t channels, size_t output_width, size_t taps,
    const int8_t *const *input, size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights,
    void *output, size_t output_stride, const bool dq, const edge_qs8_requant_params *rq,
    const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  const int8_t *p = weights;
  size_t c0 = 0;
  const size_t weight_bytes = (taps + 1) / 2 * CT * 2 * sizeof(int16_t);
  for (; c0 + CT <= channels; c0 += CT, p += block_bytes) {
    if (!dq && block_shifts_33(p, weight_bytes, CT))
      qs8_dwconv_block(TAPS, true, true, offset_rows, c0, CT, output_width, taps, input, input_stride, input_offset,
                       zero, p, output, output_stride, dq, rq, dqp);
    else
      qs8_dwconv_block(TAPS, false, true, offset_rows, c0, CT, output_width, taps, input, input_stride, input_offset,
                       zero, p, output, output_stride, dq, rq, dqp);
  }
  const size_t cols = channels - c0;
  if (cols && !dq && block_shifts_33(p, weight_bytes, cols))
    qs8_dwconv_block(TAPS, true, false, offset_rows, c0, cols, output_width, taps, input, input_stride, input_offset,
                     zero, p, output, output_stride, dq, rq, dqp);
  else if (cols)
    qs8_dwconv_block(TAPS, false, false, offset_rows, c0, cols, output_width, taps, input, input_stride,
                     input_offset, zero, p, output, output_stride, dq, rq, dqp);
}

/* The 3x3 unit-width entry: shared columns for whole blocks, the per-pixel loop for a tail.
 * (Stride 2 has no entry of its own: the same carrying of columns measured no faster there than
 * the per-pixel kernel, whose requantization and sums, not its loads, set the pace.) */
static inline __attribute__((always_inline)) void qs8_dwconv_3x3s1_avx2(
    const bool offset_rows, size_t channels, size_t output_width, const int8_t *const *input,
    size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights, void *output,
    size_t output_stride, const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const size_t block_bytes = CT * 3 * sizeof(int32_t) + 5 * CT * 2 * sizeof(int16_t);
  const int8_t *p = weights;
  size_t c0 = 0;
  for (; c0 + CT <= channels; c0 += CT, p += block_bytes) {
    if (!dq && block_shifts_33(p, 5 * CT * 2 * sizeof(int16_t), CT))
      qs8_dwconv_3x3s1_block(true, offset_rows, c0, output_width, input, input_stride, input_offset, zero, p, output,
                             output_stride, dq, rq, dqp);
    else
      qs8_dwconv_3x3s1_block(false, offset_rows, c0, output_width, input, input_stride, input_offset, zero, p,
                             output, output_stride, dq, rq, dqp);
  }
  const size_t cols = channels - c0;
  if (cols && !dq && block_shifts_33(p, 5 * CT * 2 * sizeof(int16_t), cols))
    qs8_dwconv_block(9, true, false, offset_rows, c0, cols, output_width, 9, input, input_stride, input_offset, zero,
                     p, output, output_stride, dq, rq, dqp);
  else if (cols)
    qs8_dwconv_block(9, false, false, offset_rows, c0, cols, output_width, 9, input, input_stride, input_offset,
                     zero, p, output, output_stride, dq, rq, dqp);
}

#define QS8_DWCONV_CALL(TAPS, OFFSET)                                                                          \
  qs8_dwconv_avx2(TAPS, OFFSET, channels, output_width, taps, input, input_stride, input_offset, zero, weights, \
                  output, output_stride, dq, rq, dqp)

/* Copies for 3x3 and 5x5 (unrolled taps), each with and without offset rows. */
static inline __attribute__((always_inline)) void qs8_dwconv_avx2_dispatch(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const bool offset = input_offset != 0;
  if (taps == 9) {
    if (offset) QS8_DWCONV_CALL(9, true);
    else QS8_DWCONV_CALL(9, false);
  } else if (taps == 25) {
    if (offset) QS8_DWCONV_CALL(25, true);
    else QS8_DWCONV_CALL(25, false);
  } else {
    QS8_DWCONV_CALL(0, true);
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

static inline __attribute__((always_inline)) void qs8_dwconv_3x3s1_avx2_dispatch(
    size_t channels, size_t output_width, const int8_t *const *input, size_t input_stride, size_t input_offset,
    const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (input_offset)
    qs8_dwconv_3x3s1_avx2(true, channels, output_width, input, input_stride, input_offset, zero, weights, output,
                          output_stride, dq, rq, dqp);
  else
    qs8_dwconv_3x3s1_avx2(false, channels, output_width, input, input_stride, input_offset, zero, weights, output,
                          output_stride, dq, rq, dqp);
}

void edge_qs8_dwconv_3x3s1_ukernel__avx2(size_t channels, size_t output_width, size_t taps,
                                         const int8_t *const *input, size_t input_stride, size_t input_offset,
                                         const int8_t *zero, const void *weights, int8_t *output,
                                         size_t output_stride, const edge_qs8_requant_params *params) {
  (void)taps;
  qs8_dwconv_3x3s1_avx2_dispatch(channels, output_width, input, input_stride, input_offset, zero, weights, output,
                                 output_stride, false, params, NULL);
}

void edge_qs8_dwconv_3x3s1_dq_ukernel__avx2(size_t channels, size_t output_width, size_t taps,
                                            const int8_t *const *input, size_t input_stride, size_t input_offset,
                                            const int8_t *zero, const void *weights, float *output,
                                            size_t output_stride, const edge_qs8_dq_params *params) {
  (void)taps;
  qs8_dwconv_3x3s1_avx2_dispatch(channels, output_width, input, input_stride, input_offset, zero, weights, output,
                                 output_stride, true, NULL, params);
}

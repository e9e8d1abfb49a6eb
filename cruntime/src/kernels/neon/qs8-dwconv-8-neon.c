/* NEON qs8 depthwise kernel, 8 channels per step, any tap count (contract in qgemm.h): per tap one
 * widening multiply of 8 input by 8 weight bytes (smull: exact int16 products) and two widening
 * adds into int32.
 *
 * Blocks of 8 channels outside, output pixels inside: a block's weights (up to 25 taps fit in
 * d registers), bias and epilogue constants are loaded once per row rather than once per pixel.
 * Requantization takes qs8_neon_requantize4_fast (sqdmulh + srshl, exact when every shift of the
 * block is >= 32: nearly every layer) and otherwise the general 64-bit qs8_neon_requantize4; both
 * are bit-exact with requant.h. A channel tail is loaded through a small buffer, so rows are never
 * read past `channels`. */
#include "qs8-neon.h"

#define CT 8

static inline __attribute__((always_inline)) int8x8_t load_channels(const int8_t *p, bool full, size_t cols) {
  if (full) return vld1_s8(p);
  int8_t tmp[CT] = {0};
  memcpy(tmp, p, cols);
  return vld1_s8(tmp);
}

/* One block over all output pixels; TAPS is 9 or 25 for unrolled copies, 0 for any count. */
static inline __attribute__((always_inline)) void qs8_dwconv_neon_block(
    const size_t TAPS, const bool FAST, const bool FULL, size_t c0, size_t cols, size_t output_width, size_t taps,
    const int8_t *const *input, size_t input_stride, size_t input_offset, const int8_t *zero, const int8_t *p,
    void *output, size_t output_stride, const bool dq, const edge_qs8_requant_params *rq,
    const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const int32x4_t bias0 = vld1q_s32((const int32_t *)p), bias1 = vld1q_s32((const int32_t *)p + 4);
  const int8_t *w = p + CT * sizeof(int32_t), *e = w + CT * taps;
  const int32x4_t m0 = vld1q_s32((const int32_t *)e), m1 = vld1q_s32((const int32_t *)e + 4);
  const int32x4_t s0 = vld1q_s32((const int32_t *)e + 8), s1 = vld1q_s32((const int32_t *)e + 12);
  /* fast: negated shift - 31 (srshl's right shift); general: [qmin - zp, qmax - zp] */
  const int32x4_t r0 = vsubq_s32(vdupq_n_s32(31), s0), r1 = vsubq_s32(vdupq_n_s32(31), s1);
  const int32x4_t lo = vdupq_n_s32(dq ? 0 : rq->qmin - rq->zero_point);
  const int32x4_t hi = vdupq_n_s32(dq ? 0 : rq->qmax - rq->zero_point);
  const int32x4_t zp = vdupq_n_s32(dq ? 0 : rq->zero_point);
  const int8x8_t qmin8 = vdup_n_s8((int8_t)(dq ? 0 : rq->qmin)), qmax8 = vdup_n_s8((int8_t)(dq ? 0 : rq->qmax));
  for (size_t x = 0; x < output_width; ++x) {
    const int8_t *const *rows = input + x * input_stride;
    int32x4_t acc0 = bias0, acc1 = bias1;
    _Pragma("GCC unroll 25") for (size_t t = 0; t < taps; ++t) {
      const int8_t *r = rows[t];
      r = (r == zero ? r : r + input_offset) + c0;
      const int16x8_t product = vmull_s8(load_channels(r, FULL, cols), vld1_s8(w + t * CT));
      acc0 = vaddw_s16(acc0, vget_low_s16(product));
      acc1 = vaddw_high_s16(acc1, product);
    }
    if (dq) {
      void *out = (float *)output + x * output_stride + c0;
      qs8_neon_store8(acc0, acc1, e, cols, out, true, rq, dqp, dqp->row_scale[0]);
    } else {
      int8_t *out = (int8_t *)output + x * output_stride + c0;
      int8x8_t v8;
      if (FAST) {
        const int32x4_t v0 = vaddq_s32(qs8_neon_requantize4_fast(acc0, m0, r0), zp);
        const int32x4_t v1 = vaddq_s32(qs8_neon_requantize4_fast(acc1, m1, r1), zp);
        v8 = vmin_s8(qmax8, vmax_s8(qmin8, vqmovn_s16(vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1)))));
      } else {
        const int32x4_t v0 = vaddq_s32(qs8_neon_requantize4(acc0, m0, s0, lo, hi), zp);
        const int32x4_t v1 = vaddq_s32(qs8_neon_requantize4(acc1, m1, s1, lo, hi), zp);
        v8 = vqmovn_s16(vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1)));
      }
      if (FULL) {
        vst1_s8(out, v8);
      } else {
        int8_t tmp[CT];
        vst1_s8(tmp, v8);
        memcpy(out, tmp, cols);
      }
    }
  }
}

/* Whether every shift of the block's cols channels is >= 32 (int8 mode). */
static inline __attribute__((always_inline)) bool block_shifts_32(const int8_t *p, size_t taps, size_t cols) {
  const int32_t *shift = (const int32_t *)(p + CT * sizeof(int32_t) + CT * taps) + CT;
  int32_t s[CT];
  memcpy(s, shift, sizeof s);
  for (size_t j = 0; j < cols; ++j)
    if (s[j] < 32) return false;
  return true;
}

static inline __attribute__((always_inline)) void qs8_dwconv_neon(
    const size_t TAPS, size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
    size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights, void *output,
    size_t output_stride, const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (TAPS) taps = TAPS;
  const size_t block_bytes = CT * (taps + 3 * sizeof(int32_t));
  const int8_t *p = weights;
  for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
    const size_t cols = channels - c0 < CT ? channels - c0 : CT;
    const bool fast = !dq && block_shifts_32(p, taps, cols);
#define QS8_DWCONV_NEON_BLOCK(FAST, FULL)                                                                           \
  qs8_dwconv_neon_block(TAPS, FAST, FULL, c0, cols, output_width, taps, input, input_stride, input_offset, zero, p, \
                        output, output_stride, dq, rq, dqp)
    if (cols == CT && fast) QS8_DWCONV_NEON_BLOCK(true, true);
    else if (cols == CT) QS8_DWCONV_NEON_BLOCK(false, true);
    else if (fast) QS8_DWCONV_NEON_BLOCK(true, false);
    else QS8_DWCONV_NEON_BLOCK(false, false);
#undef QS8_DWCONV_NEON_BLOCK
  }
}

static inline __attribute__((always_inline)) void qs8_dwconv_neon_dispatch(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  if (taps == 9)
    qs8_dwconv_neon(9, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
  else if (taps == 25)
    qs8_dwconv_neon(25, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
  else
    qs8_dwconv_neon(0, channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, dq, rq, dqp);
}

void edge_qs8_dwconv_ukernel__neon(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                   size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights,
                                   int8_t *output, size_t output_stride, const edge_qs8_requant_params *params) {
  qs8_dwconv_neon_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                           output_stride, false, params, NULL);
}

void edge_qs8_dwconv_dq_ukernel__neon(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                      size_t input_stride, size_t input_offset, const int8_t *zero,
                                      const void *weights, float *output, size_t output_stride,
                                      const edge_qs8_dq_params *params) {
  qs8_dwconv_neon_dispatch(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                           output_stride, true, NULL, params);
}

/* NEON qs8 depthwise kernel, 8 channels per step, any tap count (contract in qgemm.h): per tap one
 * widening multiply of 8 input by 8 weight bytes (smull: exact int16 products) and two widening
 * adds into int32. A channel tail is loaded through a small buffer, so rows are never read past
 * `channels`. Requantization and stores: qs8-neon.h (bit-exact with requant.h). */
#include "qs8-neon.h"

#define CT 8

static inline __attribute__((always_inline)) int8x8_t load_channels(const int8_t *p, size_t cols) {
  if (cols == CT) return vld1_s8(p);
  int8_t tmp[CT] = {0};
  memcpy(tmp, p, cols);
  return vld1_s8(tmp);
}

static inline __attribute__((always_inline)) void qs8_dwconv_neon(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const size_t block_bytes = CT * (taps + 3 * sizeof(int32_t));
  for (size_t x = 0; x < output_width; ++x) {
    const int8_t *const *rows = input + x * input_stride;
    const int8_t *p = weights;
    for (size_t c0 = 0; c0 < channels; c0 += CT, p += block_bytes) {
      const size_t cols = channels - c0 < CT ? channels - c0 : CT;
      int32x4_t acc0 = vld1q_s32((const int32_t *)p), acc1 = vld1q_s32((const int32_t *)p + 4);
      const int8_t *w = p + CT * sizeof(int32_t);
      for (size_t t = 0; t < taps; ++t, w += CT) {
        const int8_t *r = rows[t];
        r = (r == zero ? r : r + input_offset) + c0;
        const int16x8_t product = vmull_s8(load_channels(r, cols), vld1_s8(w));
        acc0 = vaddw_s16(acc0, vget_low_s16(product));
        acc1 = vaddw_high_s16(acc1, product);
      }
      void *out = dq ? (void *)((float *)output + x * output_stride + c0)
                     : (void *)((int8_t *)output + x * output_stride + c0);
      qs8_neon_store8(acc0, acc1, p + CT * (sizeof(int32_t) + taps), cols, out, dq, rq, dqp,
                      dq ? dqp->row_scale[0] : 0.0f);
    }
  }
}

void edge_qs8_dwconv_ukernel__neon(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                   size_t input_stride, size_t input_offset, const int8_t *zero, const void *weights,
                                   int8_t *output, size_t output_stride, const edge_qs8_requant_params *params) {
  qs8_dwconv_neon(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                  output_stride, false, params, NULL);
}

void edge_qs8_dwconv_dq_ukernel__neon(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                      size_t input_stride, size_t input_offset, const int8_t *zero,
                                      const void *weights, float *output, size_t output_stride,
                                      const edge_qs8_dq_params *params) {
  qs8_dwconv_neon(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                  output_stride, true, NULL, params);
}

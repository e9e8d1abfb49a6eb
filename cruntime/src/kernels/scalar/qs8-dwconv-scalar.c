/* Scalar qs8 depthwise kernel, channel tile 1, any tap count (contract in qgemm.h): the reference
 * the SIMD depthwise kernels are tested against. Packed per channel: int32 bias, taps int8
 * weights, then int32 multiplier and shift (or float scale and bias). */
#include "../qgemm.h"

static inline __attribute__((always_inline)) void qs8_dwconv_scalar(
    size_t channels, size_t output_width, size_t taps, const int8_t *const *input, size_t input_stride,
    size_t input_offset, const int8_t *zero, const void *weights, void *output, size_t output_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const size_t block_bytes = 4 + taps + 8;
  for (size_t x = 0; x < output_width; ++x) {
    const int8_t *const *rows = input + x * input_stride;
    const uint8_t *p = weights;
    for (size_t c = 0; c < channels; ++c, p += block_bytes) {
      int32_t acc;
      __builtin_memcpy(&acc, p, 4);
      const int8_t *w = (const int8_t *)p + 4;
      for (size_t t = 0; t < taps; ++t) {
        const int8_t *r = rows[t];
        const int8_t v = r == zero ? r[c] : r[input_offset + c];
        acc += (int32_t)v * (int32_t)w[t];
      }
      if (dq) {
        float scale, fbias;
        __builtin_memcpy(&scale, p + 4 + taps, 4);
        __builtin_memcpy(&fbias, p + 8 + taps, 4);
        const float v = (float)acc * (dqp->row_scale[0] * scale) + fbias;
        ((float *)output)[x * output_stride + c] = v < dqp->min ? dqp->min : (v > dqp->max ? dqp->max : v);
      } else {
        int32_t multiplier, shift;
        __builtin_memcpy(&multiplier, p + 4 + taps, 4);
        __builtin_memcpy(&shift, p + 8 + taps, 4);
        ((int8_t *)output)[x * output_stride + c] =
            edge_requantize_s8(acc, multiplier, shift, rq->zero_point, rq->qmin, rq->qmax);
      }
    }
  }
}

void edge_qs8_dwconv_ukernel__scalar(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                     size_t input_stride, size_t input_offset, const int8_t *zero,
                                     const void *weights, int8_t *output, size_t output_stride,
                                     const edge_qs8_requant_params *params) {
  qs8_dwconv_scalar(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, false, params, NULL);
}

void edge_qs8_dwconv_dq_ukernel__scalar(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                        size_t input_stride, size_t input_offset, const int8_t *zero,
                                        const void *weights, float *output, size_t output_stride,
                                        const edge_qs8_dq_params *params) {
  qs8_dwconv_scalar(channels, output_width, taps, input, input_stride, input_offset, zero, weights, output,
                    output_stride, true, NULL, params);
}

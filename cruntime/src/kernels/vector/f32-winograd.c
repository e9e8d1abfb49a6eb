/* Winograd F(4x4, 3x3) input and output transforms written once over simd.h (contract in conv.h),
 * EDGE_SIMD_N channels at a time. B^T and A^T are Lavin & Gray's for interpolation points
 * 0, +-1, +-2 and infinity; each 6x6 (or 6x6 -> 4x4) transform is done as columns then rows
 * through a small stack tile, so only one column or row lives in registers at a time. The
 * factored forms below share the sums the matrices' rows have in common. */
#include "../conv_kernels.h"
#include "../simd.h"

/* r = B^T d for one column d of six vectors. */
EDGE_SIMD_INLINE void input_column(const f32xN d[6], f32xN r[6]) {
  const f32xN four = vf_set1(4.0f), five = vf_set1(5.0f), two = vf_set1(2.0f);
  const f32xN d4_minus_d2 = vf_sub(d[4], d[2]);
  r[0] = vf_add(vf_fnma(five, d[2], vf_mul(four, d[0])), d[4]);
  r[1] = vf_fnma(four, vf_add(d[1], d[2]), vf_add(d[3], d[4]));
  r[2] = vf_fma(four, vf_sub(d[1], d[2]), vf_sub(d[4], d[3]));
  r[3] = vf_fma(two, vf_sub(d[3], d[1]), d4_minus_d2);
  r[4] = vf_fma(two, vf_sub(d[1], d[3]), d4_minus_d2);
  r[5] = vf_add(vf_fnma(five, d[3], vf_mul(four, d[1])), d[5]);
}

/* o = A^T m for one column m of six vectors. */
EDGE_SIMD_INLINE void output_column(const f32xN m[6], f32xN o[4]) {
  const f32xN two = vf_set1(2.0f), four = vf_set1(4.0f), eight = vf_set1(8.0f);
  const f32xN s12 = vf_add(m[1], m[2]), d12 = vf_sub(m[1], m[2]);
  const f32xN s34 = vf_add(m[3], m[4]), d34 = vf_sub(m[3], m[4]);
  o[0] = vf_add(vf_add(m[0], s12), s34);
  o[1] = vf_fma(two, d34, d12);
  o[2] = vf_fma(four, s34, s12);
  o[3] = vf_add(vf_fma(eight, d34, d12), m[5]);
}

EDGE_SIMD_INLINE f32xN load_lanes(const float *p, size_t rest) {
  return rest >= EDGE_SIMD_N ? vf_loadu(p) : vf_load_partial(p, rest);
}

EDGE_SIMD_INLINE void store_lanes(float *p, f32xN v, size_t rest) {
  if (rest >= EDGE_SIMD_N)
    vf_storeu(p, v);
  else
    vf_store_partial(p, v, rest);
}

void EDGE_SIMD_FN(f32_winograd_input_ukernel_4x4_3x3)(size_t channels, const float *const *input,
                                                      size_t input_offset, const float *zero, float *output,
                                                      size_t output_stride) {
  const float *rows[36];
  for (int i = 0; i < 36; ++i) rows[i] = input[i] == zero ? zero : input[i] + input_offset;
  for (size_t c = 0; c < channels; c += EDGE_SIMD_N) {
    const size_t rest = channels - c;
    f32xN tile[6][6], column[6], result[6];
    for (int j = 0; j < 6; ++j) {
      for (int i = 0; i < 6; ++i) column[i] = load_lanes(rows[i * 6 + j] + c, rest);
      input_column(column, result);
      for (int i = 0; i < 6; ++i) tile[i][j] = result[i];
    }
    for (int i = 0; i < 6; ++i) {
      input_column(tile[i], result);
      for (int j = 0; j < 6; ++j) store_lanes(output + (size_t)(i * 6 + j) * output_stride + c, result[j], rest);
    }
  }
}

void EDGE_SIMD_FN(f32_winograd_output_ukernel_4x4_3x3)(size_t channels, const float *input, size_t input_stride,
                                                       const float *bias, float *const *output,
                                                       const edge_f32_minmax_params *params) {
  const f32xN vmin = vf_set1(params->min), vmax = vf_set1(params->max);
  for (size_t c = 0; c < channels; c += EDGE_SIMD_N) {
    const size_t rest = channels - c;
    f32xN tile[4][6], column[6], result[4];
    for (int j = 0; j < 6; ++j) {
      for (int i = 0; i < 6; ++i) column[i] = load_lanes(input + (size_t)(i * 6 + j) * input_stride + c, rest);
      output_column(column, result);
      for (int i = 0; i < 4; ++i) tile[i][j] = result[i];
    }
    const f32xN b = bias ? load_lanes(bias + c, rest) : vf_zero();
    for (int i = 0; i < 4; ++i) {
      output_column(tile[i], result);
      for (int j = 0; j < 4; ++j) store_lanes(output[i * 4 + j] + c, vf_clamp(vf_add(result[j], b), vmin, vmax), rest);
    }
  }
}

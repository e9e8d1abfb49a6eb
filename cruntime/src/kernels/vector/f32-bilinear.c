/* Bilinear samples of n channels (edge_f32_bilinear_ukernel, kernels/vector.h), compiled once per
 * ISA (see simd.h): corners[0..3] are the four neighbouring pixels' channel rows, weights their
 * bilinear weights.
 *   EDGE_BILINEAR_ADD:       acc[i] += w0 c0[i] + w1 c1[i] + w2 c2[i] + w3 c3[i]
 *   EDGE_BILINEAR_MAX_FIRST: acc[i]  = the largest of the four weighted corners
 *   EDGE_BILINEAR_MAX:       acc[i]  = the larger of acc[i] and that
 * The sum is a chain of multiply-adds in corner order (fused where the ISA has FMA), so it differs
 * from ops/roi_align.c's scalar reference by a few roundings; the maxima compare as vf_max does
 * (the reference's "later wins only if greater"), so they match it bit for bit on finite values.
 * Channels are independent: any split gives the same bits.
 *
 * f32_bilinear_line (edge_f32_bilinear_line_ukernel) is a whole output line of an NHWC resize:
 * the same sum as EDGE_BILINEAR_ADD without acc, the four weights formed once per pixel, so a
 * pixel costs its loads and multiply-adds and no call. */
#include "../vector.h"
#include "../simd.h"

EDGE_SIMD_INLINE void bilinear_lanes(const float *const *corners, const float *weights, float *acc,
                                     edge_bilinear_mode mode, size_t i, size_t width) {
  const int full = width == EDGE_SIMD_N;
  f32xN v[4];
  for (int k = 0; k < 4; ++k) v[k] = full ? vf_loadu(corners[k] + i) : vf_load_partial(corners[k] + i, width);
  f32xN result;
  if (mode == EDGE_BILINEAR_ADD) {
    f32xN sum = vf_mul(vf_set1(weights[0]), v[0]);
    for (int k = 1; k < 4; ++k) sum = vf_fma(vf_set1(weights[k]), v[k], sum);
    const f32xN old = full ? vf_loadu(acc + i) : vf_load_partial(acc + i, width);
    result = vf_add(old, sum);
  } else {
    result = vf_mul(vf_set1(weights[0]), v[0]);
    for (int k = 1; k < 4; ++k) result = vf_max(vf_mul(vf_set1(weights[k]), v[k]), result);
    if (mode == EDGE_BILINEAR_MAX) {
      const f32xN old = full ? vf_loadu(acc + i) : vf_load_partial(acc + i, width);
      result = vf_max(result, old);
    }
  }
  if (full) vf_storeu(acc + i, result);
  else vf_store_partial(acc + i, result, width);
}

void EDGE_SIMD_FN(f32_bilinear)(size_t n, const float *const *corners, const float *weights, float *acc,
                                edge_bilinear_mode mode) {
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) bilinear_lanes(corners, weights, acc, mode, i, EDGE_SIMD_N);
  if (i < n) bilinear_lanes(corners, weights, acc, mode, i, n - i);
}

EDGE_SIMD_INLINE f32xN bilinear_pixel_lanes(const float *a0, const float *b0, const float *a1, const float *b1,
                                            f32xN w00, f32xN w10, f32xN w01, f32xN w11, size_t width) {
  const int full = width == EDGE_SIMD_N;
  f32xN sum = vf_mul(w00, full ? vf_loadu(a0) : vf_load_partial(a0, width));
  sum = vf_fma(w10, full ? vf_loadu(b0) : vf_load_partial(b0, width), sum);
  sum = vf_fma(w01, full ? vf_loadu(a1) : vf_load_partial(a1, width), sum);
  return vf_fma(w11, full ? vf_loadu(b1) : vf_load_partial(b1, width), sum);
}

void EDGE_SIMD_FN(f32_bilinear_line)(size_t width, size_t channels, const float *row0, const float *row1,
                                     const int64_t *x0, const int64_t *x1, const float *wx, float wy,
                                     size_t pixel_stride, float *out) {
  for (size_t p = 0; p < width; ++p, out += channels) {
    const float w = wx[p];
    const f32xN w00 = vf_set1((1.0f - wy) * (1.0f - w)), w10 = vf_set1(wy * (1.0f - w));
    const f32xN w01 = vf_set1((1.0f - wy) * w), w11 = vf_set1(wy * w);
    const size_t i0 = (size_t)x0[p] * pixel_stride, i1 = (size_t)x1[p] * pixel_stride;
    const float *a0 = row0 + i0, *b0 = row1 + i0, *a1 = row0 + i1, *b1 = row1 + i1;
    size_t i = 0;
    for (; i + EDGE_SIMD_N <= channels; i += EDGE_SIMD_N)
      vf_storeu(out + i, bilinear_pixel_lanes(a0 + i, b0 + i, a1 + i, b1 + i, w00, w10, w01, w11, EDGE_SIMD_N));
    if (i < channels)
      vf_store_partial(out + i, bilinear_pixel_lanes(a0 + i, b0 + i, a1 + i, b1 + i, w00, w10, w01, w11, channels - i),
                       channels - i);
  }
}

/* Bilinear samples of n channels (edge_f32_bilinear_ukernel, kernels/vector.h), compiled once per
 * ISA (see simd.h): corners[0..3] are the four neighbouring pixels' channel rows, weights their
 * bilinear weights.
 *   EDGE_BILINEAR_ADD:       acc[i] += w0 c0[i] + w1 c1[i] + w2 c2[i] + w3 c3[i]
 *   EDGE_BILINEAR_MAX_FIRST: acc[i]  = the largest of the four weighted corners
 *   EDGE_BILINEAR_MAX:       acc[i]  = the larger of acc[i] and that
 * The sum is a chain of multiply-adds in corner order (fused where the ISA has FMA), so it differs
 * from ops/roi_align.c's scalar reference by a few roundings; the maxima compare as vf_max does
 * (the reference's "later wins only if greater"), so they match it bit for bit on finite values.
 * Channels are independent: any split gives the same bits. */
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

/* float32 -> int8 quantization (edge_s8_quantize_ukernel), requant.h's rule
 *   q = clamp(zp + nearbyint(x * inv_scale), -128, 127)      (float32 product, ties to even, NaN -> zp)
 * bit for bit: the product is one float32 multiply (this file is ISO C and -ffp-contract=off, and a
 * select separates the multiply from the add below, so nothing can fuse); NaN lanes become +0; the
 * value is clamped to [-256, 256], which changes no result (zp + 256 > 127 and zp - 256 < -128
 * saturate either way), rounded to the nearest integer with ties to even (vf_round_i32, the default
 * rounding mode nearbyint uses too), and narrowed with saturation, which is the final clamp; two
 * vectors at a time, so they share the narrowing. */
#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

void EDGE_SIMD_FN(s8_quantize)(size_t n, const float *x, int8_t *y, float inv_scale, int32_t zero_point) {
  const f32xN inv = vf_set1(inv_scale);
  const i32xN zp = vi_set1(zero_point);
  size_t i = 0;
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    const f32xN v0 = vf_mul(vf_loadu(x + i), inv), v1 = vf_mul(vf_loadu(x + i + EDGE_SIMD_N), inv);
    vi_store_s8_sat2(y + i, vi_round_scaled(v0, zp), vi_round_scaled(v1, zp));
  }
  for (; i < n; ++i) y[i] = s8_round_scaled(x[i] * inv_scale, zero_point);
}

/* float32 -> int8 quantization (edge_s8_quantize_ukernel), the issue-4 rule
 *   q = clamp(zp + nearbyint(x * inv_scale), -128, 127)      (float32 product, ties to even, NaN -> zp)
 * bit for bit: the product is one float32 multiply (this file is ISO C, -ffp-contract=off, and a
 * select separates the multiply from the add below, so nothing can fuse); it is then clamped to
 * [-256, 256], which changes no result (zp + 256 > 127 and zp - 256 < -128 saturate either way),
 * and rounded to the nearest integer, ties to even, by adding and subtracting 1.5 * 2^23 (exact
 * for |v| <= 2^22 under the default rounding mode, the mode nearbyint uses too). x86 rounds the
 * clamped value with cvtps2dq instead (the current rounding mode, again nearbyint's) and narrows
 * with saturating packs, which are the final clamp. */
#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

void EDGE_SIMD_FN(s8_quantize)(size_t n, const float *x, int8_t *y, float inv_scale, int32_t zero_point) {
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX512)
  const __m512 inv = _mm512_set1_ps(inv_scale), lo = _mm512_set1_ps(-256.0f), hi = _mm512_set1_ps(256.0f);
  const __m512i zp = _mm512_set1_epi32(zero_point), qmin = _mm512_set1_epi32(-128), qmax = _mm512_set1_epi32(127);
  for (; i + 16 <= n; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), inv);
    v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v); /* NaN -> +0 */
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), zp);
    q = _mm512_min_epi32(_mm512_max_epi32(q, qmin), qmax);
    _mm_storeu_si128((__m128i *)(y + i), _mm512_cvtepi32_epi8(q));
  }
#elif defined(EDGE_SIMD_ISA_AVX2)
  const __m256 inv = _mm256_set1_ps(inv_scale);
  const __m256i zp = _mm256_set1_epi32(zero_point);
  for (; i + 16 <= n; i += 16)
    s8_store_rounded16(y + i, m256_round_scaled(_mm256_mul_ps(_mm256_loadu_ps(x + i), inv), zp),
                       m256_round_scaled(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv), zp));
#else
  for (; i + 16 <= n; i += 16) s8x16_store(y + i, f32x16_round_scaled(f32x16_load(x + i) * inv_scale, zero_point));
#endif
  for (; i < n; ++i) y[i] = s8_round_scaled(x[i] * inv_scale, zero_point);
}

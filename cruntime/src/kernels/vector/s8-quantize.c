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
#include <math.h>

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#endif

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
  const __m256 inv = _mm256_set1_ps(inv_scale), lo = _mm256_set1_ps(-256.0f), hi = _mm256_set1_ps(256.0f);
  const __m256i zp = _mm256_set1_epi32(zero_point);
  for (; i + 16 <= n; i += 16) {
    __m256 v0 = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv), v1 = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8), inv);
    v0 = _mm256_and_ps(v0, _mm256_cmp_ps(v0, v0, _CMP_ORD_Q)); /* NaN -> +0 */
    v1 = _mm256_and_ps(v1, _mm256_cmp_ps(v1, v1, _CMP_ORD_Q));
    v0 = _mm256_min_ps(_mm256_max_ps(v0, lo), hi);
    v1 = _mm256_min_ps(_mm256_max_ps(v1, lo), hi);
    __m256i q0 = _mm256_add_epi32(_mm256_cvtps_epi32(v0), zp), q1 = _mm256_add_epi32(_mm256_cvtps_epi32(v1), zp);
    /* |q| <= 256 + 128: int16 packing is exact, the int8 packing saturates = clamp(-128, 127). */
    __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
    __m256i bytes = _mm256_packs_epi16(words, words);
    _mm_storeu_si128((__m128i *)(y + i),
                     _mm_unpacklo_epi64(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)));
  }
#else
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  for (; i + 16 <= n; i += 16) {
    edge_f32x16 v = f32x16_load(x + i) * inv_scale;
    edge_i32x16 bits = (edge_i32x16)v & (v == v);   /* NaN -> +0 */
    v = (edge_f32x16)bits;
    edge_i32x16 above = v > 256.0f, below = v < -256.0f;
    bits = (bits & ~above) | ((edge_i32x16)((edge_f32x16){0} + 256.0f) & above);
    bits = (bits & ~below) | ((edge_i32x16)((edge_f32x16){0} - 256.0f) & below);
    v = (edge_f32x16)bits;
    v = (v + magic) - magic;
    edge_i32x16 q = i32x16_clamp(__builtin_convertvector(v, edge_i32x16) + zero_point, -128, 127);
    s8x16_store(y + i, __builtin_convertvector(q, edge_s8x16));
  }
#endif
  for (; i < n; ++i) {
    float r = nearbyintf(x[i] * inv_scale);
    if (r != r) r = 0.0f;
    if (r > 256.0f) r = 256.0f;
    if (r < -256.0f) r = -256.0f;
    int32_t q = zero_point + (int32_t)r;
    y[i] = (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
  }
}

/* int8 LayerNorm of one row (edge_s8_layernorm_ukernel), the int8 reference's arithmetic
 * (converter/quantize/int8_reference.py, layer_norm_int8) step for step:
 *   d_i = x_i - zp_x;  S1 = sum d_i,  S2 = sum d_i^2                  (exact integers)
 *   mean = S1 / n,  var = (n * S2 - S1^2) / n^2                        (double)
 *   r = float(s_x / sqrt(s_x^2 * var + epsilon)),  c = float(mean)
 *   y_i = ((float(d_i) - c) * r) * gamma_i + beta_i                    (float32, four roundings)
 *   q_i = clamp(nearbyint(y_i * inv_scale_y) + zp_y, -128, 127)        (NaN -> zp_y)
 * The sums are int32 lanes flushed into int64 every 1024 vectors (1024 * 65025 fits a lane). The
 * float steps are separate IEEE operations (ISO C: no FMA contraction) in the same order on every
 * ISA, so the bytes are the scalar reference's (ops/norm.c) and the Python oracle's. The product
 * y * inv_scale_y is clamped to [-256, 256] (no result changes: zp_y +- 256 saturates either way)
 * and rounded half to even by adding and subtracting 1.5 * 2^23, as in s8-quantize.c.
 *
 * AVX2 (and the avx512 objects) spell the same steps in intrinsics (GCC lowers the 64-byte generic
 * vectors poorly there): sums by vpmaddwd of the int16 differences with ones and with themselves,
 * 8 floats per step, rounding by cvtps2dq (the default rounding mode: ties to even, what the magic
 * constant gives), saturating packs as the final clamp. */
#include <math.h>

#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#endif

/* c and r of one row from its exact sums; ops/norm.c's reference does the same. */
static inline void row_constants(int64_t s1, int64_t s2, size_t n, const edge_s8_layernorm_params *p, float *c,
                                 float *r) {
  double mean = (double)s1 / (double)n;
  double var = (double)((int64_t)n * s2 - s1 * s1) / ((double)n * (double)n);
  double s_x = (double)p->scale_x;
  *r = (float)(s_x / sqrt(s_x * s_x * var + (double)p->epsilon));
  *c = (float)mean;
}

void EDGE_SIMD_FN(s8_layernorm)(size_t n, const int8_t *x, int8_t *y, const float *gamma, const float *beta,
                                const edge_s8_layernorm_params *p) {
  const int32_t zp_x = p->zp_x;
  int64_t s1 = 0, s2 = 0;
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  const __m256i zp16 = _mm256_set1_epi16((int16_t)zp_x), ones = _mm256_set1_epi16(1);
  while (i + 16 <= n) {
    __m256i a1 = _mm256_setzero_si256(), a2 = a1;
    for (size_t blocks = 0; blocks < 1024 && i + 16 <= n; ++blocks, i += 16) {
      __m256i d = _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(x + i))), zp16);
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(d, ones));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(d, d));
    }
    int32_t l1[8], l2[8];
    _mm256_storeu_si256((__m256i *)l1, a1);
    _mm256_storeu_si256((__m256i *)l2, a2);
    for (int lane = 0; lane < 8; ++lane) {
      s1 += l1[lane];
      s2 += l2[lane];
    }
  }
#else
  while (i + 16 <= n) {
    edge_i32x16 a1 = {0}, a2 = {0};
    for (size_t blocks = 0; blocks < 1024 && i + 16 <= n; ++blocks, i += 16) {
      edge_i32x16 d = __builtin_convertvector(s8x16_load(x + i), edge_i32x16) - zp_x;
      a1 += d;
      a2 += d * d;
    }
    for (int lane = 0; lane < 16; ++lane) {
      s1 += a1[lane];
      s2 += a2[lane];
    }
  }
#endif
  for (; i < n; ++i) {
    int64_t d = (int64_t)x[i] - zp_x;
    s1 += d;
    s2 += d * d;
  }
  float c, r;
  row_constants(s1, s2, n, p, &c, &r);
  const float inv = p->inv_scale_y;
  const int32_t zp_y = p->zp_y;
  i = 0;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  const __m256i vzp_x = _mm256_set1_epi32(zp_x), vzp_y = _mm256_set1_epi32(zp_y);
  const __m256 vc = _mm256_set1_ps(c), vr = _mm256_set1_ps(r), vinv = _mm256_set1_ps(inv);
  for (; i + 16 <= n; i += 16) {
    __m256i q[2];
    for (int h = 0; h < 2; ++h) {
      __m256i xi = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x + i + 8 * h)));
      __m256 d = _mm256_cvtepi32_ps(_mm256_sub_epi32(xi, vzp_x));
      __m256 t = _mm256_mul_ps(_mm256_sub_ps(d, vc), vr);
      __m256 v = _mm256_mul_ps(t, _mm256_loadu_ps(gamma + i + 8 * h));
      q[h] = m256_round_scaled(_mm256_mul_ps(_mm256_add_ps(v, _mm256_loadu_ps(beta + i + 8 * h)), vinv), vzp_y);
    }
    s8_store_rounded16(y + i, q[0], q[1]);
  }
#else
  for (; i + 16 <= n; i += 16) {
    edge_f32x16 d = __builtin_convertvector(__builtin_convertvector(s8x16_load(x + i), edge_i32x16) - zp_x,
                                            edge_f32x16);
    edge_f32x16 t = (d - c) * r;
    s8x16_store(y + i, f32x16_round_scaled((t * f32x16_load(gamma + i) + f32x16_load(beta + i)) * inv, zp_y));
  }
#endif
  for (; i < n; ++i) {
    float t = ((float)((int32_t)x[i] - zp_x) - c) * r;
    y[i] = s8_round_scaled((t * gamma[i] + beta[i]) * inv, zp_y);
  }
}

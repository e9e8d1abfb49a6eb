/* int8 softmax of one contiguous row (edge_s8_softmax_ukernel), ops/qsoftmax.c's rule exactly:
 *   d = max - x,  L = lut[d],  S = sum of L over the row,
 *   y = clamp(-128 + floor((512 L + S) / (2 S)), -128, 127)
 * with n <= EDGE_S8_SOFTMAX_MAX_LENGTH, so S <= 2^28 and every step fits int32.
 *
 * No division per element: the quotient, an integer in [0, 256], is estimated in float32 as
 * num * (1 / den) (relative error below 2^-21, so the estimate's truncation is q - 1, q or q + 1)
 * and corrected with exact integer remainders: r = num - q den < 0 steps q down, r >= den steps it
 * up. The lookups are scalar loads into a row buffer (on the AMD cores we measured, vpgatherdd was
 * slower). AVX2 (and the avx512 objects): the row max by vpmaxsb, the quotients 8 lanes at a time;
 * NEON likewise with two 4-lane halves. SSE2 has no 32-bit vector multiply: its quotients, like
 * every ISA's tail, use the division itself. */
#include "../vector.h"
#include "../simd.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#elif defined(EDGE_SIMD_ISA_NEON)
#include <arm_neon.h>
#endif

/* The tails, and SSE2 (no 32-bit vector multiply): the rule's own division. */
static inline int8_t quotient_one(int32_t lut_value, int32_t sum, int32_t den) {
  int32_t q = (lut_value * 512 + sum) / den - 128;
  return (int8_t)(q > 127 ? 127 : q);
}

void EDGE_SIMD_FN(s8_softmax)(size_t n, const int8_t *x, int8_t *y, const int32_t *lut) {
#if !defined(EDGE_SIMD_ISA_AVX2) && !defined(EDGE_SIMD_ISA_AVX512) && !defined(EDGE_SIMD_ISA_NEON)
  /* SSE2: the reference's loops (a row buffer and float estimates measured slower here). */
  int32_t row_max = -128, total = 0;
  for (size_t k = 0; k < n; ++k) row_max = x[k] > row_max ? x[k] : row_max;
  for (size_t k = 0; k < n; ++k) total += lut[row_max - x[k]];
  for (size_t k = 0; k < n; ++k) y[k] = quotient_one(lut[row_max - x[k]], total, 2 * total);
  return;
#endif
  size_t i = 0;
  int32_t max = -128;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  if (n >= 16) {
    __m128i m = _mm_loadu_si128((const __m128i *)x);
    for (i = 16; i + 16 <= n; i += 16) m = _mm_max_epi8(m, _mm_loadu_si128((const __m128i *)(x + i)));
    m = _mm_max_epi8(m, _mm_srli_si128(m, 8));
    m = _mm_max_epi8(m, _mm_srli_si128(m, 4));
    m = _mm_max_epi8(m, _mm_srli_si128(m, 2));
    m = _mm_max_epi8(m, _mm_srli_si128(m, 1));
    max = (int8_t)_mm_cvtsi128_si32(m);
  }
#endif
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  /* The lookups once, into a row buffer (scalar loads beat vpgatherdd on the cores we measured). */
  int32_t values[EDGE_S8_SOFTMAX_MAX_LENGTH];
  int32_t sum = 0;
  for (i = 0; i < n; ++i) sum += values[i] = lut[max - x[i]];
  const int32_t den = 2 * sum;
  const float inv = 1.0f / (float)den;
  i = 0;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  const __m256i vden = _mm256_set1_epi32(den), vsum_all = _mm256_set1_epi32(sum), bias = _mm256_set1_epi32(128);
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; i + 8 <= n; i += 8) {
    __m256i num = _mm256_add_epi32(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)(values + i)), 9), vsum_all);
    __m256i q = _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(num), vinv));
    __m256i r = _mm256_sub_epi32(num, _mm256_mullo_epi32(q, vden));
    __m256i low = _mm256_cmpgt_epi32(_mm256_setzero_si256(), r); /* -1: one too high */
    q = _mm256_add_epi32(q, low);
    r = _mm256_add_epi32(r, _mm256_and_si256(vden, low));
    q = _mm256_sub_epi32(q, _mm256_cmpgt_epi32(r, _mm256_sub_epi32(vden, _mm256_set1_epi32(1)))); /* r >= den */
    q = _mm256_sub_epi32(q, bias); /* in [-128, 128]: the saturating packs clamp 128 to 127 */
    __m256i words = _mm256_packs_epi32(q, q);
    __m256i bytes = _mm256_packs_epi16(words, words);
    __m128i out = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    _mm_storel_epi64((__m128i *)(y + i), out);
  }
#elif defined(EDGE_SIMD_ISA_NEON)
  const int32x4_t vden = vdupq_n_s32(den), vsum_all = vdupq_n_s32(sum), bias = vdupq_n_s32(128);
  for (; i + 8 <= n; i += 8) {
    int32x4_t half[2];
    for (int h = 0; h < 2; ++h) {
      int32x4_t num = vaddq_s32(vshlq_n_s32(vld1q_s32(values + i + 4 * h), 9), vsum_all);
      int32x4_t q = vcvtq_s32_f32(vmulq_n_f32(vcvtq_f32_s32(num), inv)); /* truncates */
      int32x4_t r = vmlsq_s32(num, q, vden);
      uint32x4_t low = vcltzq_s32(r);
      q = vaddq_s32(q, vreinterpretq_s32_u32(low));
      r = vaddq_s32(r, vandq_s32(vden, vreinterpretq_s32_u32(low)));
      q = vsubq_s32(q, vreinterpretq_s32_u32(vcgeq_s32(r, vden)));
      half[h] = vsubq_s32(q, bias);
    }
    int16x8_t words = vcombine_s16(vqmovn_s32(half[0]), vqmovn_s32(half[1]));
    vst1_s8(y + i, vqmovn_s16(words));
  }
#else
  (void)inv;
#endif
  for (; i < n; ++i) y[i] = quotient_one(values[i], sum, den);
}

/* int32 accumulators -> int8 (edge_s8_requantize_ukernel), the issue-4 rule of requant.h:
 *   y = clamp(zp + ((int64)acc * m + 2^(shift-1)) >> shift, lo, hi),   m > 0, 1 <= shift <= 62
 * exactly (|acc * m| < 2^62, so no step overflows).
 *
 * AVX2 (and the avx512 objects): vpmuldq on the even lanes and on the odd ones shifted down gives
 * exact 64-bit products; AVX2 has no 64-bit arithmetic shift, so the sum is biased by 2^62 (into
 * (0, 2^64)), shifted logically and unbiased by 2^(62 - shift): the same floor division. The
 * shifted value is clamped in 64 bits against lo - zp and hi - zp before narrowing (s8-vadd.c does
 * the same). NEON: smull, then srshl by -shift, which is the round-half-up shift computed without
 * overflow; a saturating narrow to int32 and a saturating add of zp keep out-of-range values out
 * of range for the final clamp. SSE2 (no vpmuldq) and the tails: the scalar formula. */
#include "../vector.h"
#include "../simd.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#elif defined(EDGE_SIMD_ISA_NEON)
#include <arm_neon.h>
#endif

void EDGE_SIMD_FN(s8_requantize)(size_t n, const int32_t *acc, int8_t *y, const edge_s8_requantize_params *p) {
  const int64_t rounding = (int64_t)1 << (p->shift - 1);
  const int64_t lo = (int64_t)p->lo - p->zero_point, hi = (int64_t)p->hi - p->zero_point;
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  const __m256i m = _mm256_set1_epi64x(p->multiplier), zp = _mm256_set1_epi32(p->zero_point);
  const __m256i round = _mm256_set1_epi64x(rounding + ((int64_t)1 << 62));
  const __m256i unbias = _mm256_set1_epi64x((int64_t)1 << (62 - p->shift));
  const __m256i lo64 = _mm256_set1_epi64x(lo), hi64 = _mm256_set1_epi64x(hi);
  const __m128i count = _mm_cvtsi32_si128(p->shift);
  for (; i + 16 <= n; i += 16) {
    __m256i r[2];
    for (int half = 0; half < 2; ++half) {
      __m256i v = _mm256_loadu_si256((const __m256i *)(acc + i + 8 * half));
      __m256i even = _mm256_add_epi64(_mm256_mul_epi32(v, m), round);
      __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), m), round);
      even = _mm256_sub_epi64(_mm256_srl_epi64(even, count), unbias);
      odd = _mm256_sub_epi64(_mm256_srl_epi64(odd, count), unbias);
      even = _mm256_blendv_epi8(even, lo64, _mm256_cmpgt_epi64(lo64, even));
      even = _mm256_blendv_epi8(even, hi64, _mm256_cmpgt_epi64(even, hi64));
      odd = _mm256_blendv_epi8(odd, lo64, _mm256_cmpgt_epi64(lo64, odd));
      odd = _mm256_blendv_epi8(odd, hi64, _mm256_cmpgt_epi64(odd, hi64));
      r[half] = _mm256_add_epi32(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA), zp);
    }
    /* Lanes are in [-128, 127]: the saturating packs only narrow; then the 128-bit halves' order. */
    __m256i words = _mm256_packs_epi32(r[0], r[1]);
    __m256i bytes = _mm256_packs_epi16(words, words);
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
    _mm_storeu_si128((__m128i *)(y + i), _mm256_castsi256_si128(bytes));
  }
#elif defined(EDGE_SIMD_ISA_NEON)
  const int32x2_t m = vdup_n_s32(p->multiplier);
  const int64x2_t shift = vdupq_n_s64(-(int64_t)p->shift);
  const int32x4_t zp = vdupq_n_s32(p->zero_point), lo32 = vdupq_n_s32(p->lo), hi32 = vdupq_n_s32(p->hi);
  for (; i + 8 <= n; i += 8) {
    int32x4_t v0 = vld1q_s32(acc + i), v1 = vld1q_s32(acc + i + 4);
    int64x2_t q0 = vrshlq_s64(vmull_s32(vget_low_s32(v0), m), shift);
    int64x2_t q1 = vrshlq_s64(vmull_high_s32(v0, vcombine_s32(m, m)), shift);
    int64x2_t q2 = vrshlq_s64(vmull_s32(vget_low_s32(v1), m), shift);
    int64x2_t q3 = vrshlq_s64(vmull_high_s32(v1, vcombine_s32(m, m)), shift);
    int32x4_t r0 = vqaddq_s32(vcombine_s32(vqmovn_s64(q0), vqmovn_s64(q1)), zp);
    int32x4_t r1 = vqaddq_s32(vcombine_s32(vqmovn_s64(q2), vqmovn_s64(q3)), zp);
    r0 = vminq_s32(vmaxq_s32(r0, lo32), hi32);
    r1 = vminq_s32(vmaxq_s32(r1, lo32), hi32);
    vst1_s8(y + i, vmovn_s16(vcombine_s16(vmovn_s32(r0), vmovn_s32(r1))));
  }
#endif
  for (; i < n; ++i) {
    int64_t v = ((int64_t)acc[i] * p->multiplier + rounding) >> p->shift;
    v = v < lo ? lo : (v > hi ? hi : v);
    y[i] = (int8_t)(v + p->zero_point);
  }
}

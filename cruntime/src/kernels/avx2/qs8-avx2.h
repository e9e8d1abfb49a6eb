/* Shared pieces of the AVX2 qs8 kernels (GEMM and depthwise): the in-lane widening of a k group and
 * the bit-exact requantization of requant.h.
 *
 * Requantization, bit-exact with requant.h: 64-bit products of even and odd lanes
 * (vpmuldq), the rounding term added in 64 bits, the arithmetic right shift built from the
 * logical one (AVX2 has no 64-bit arithmetic shift): for x < 0, x >> s = ~(~x >>> s). The
 * 64-bit value is clamped to [qmin - zp, qmax - zp] before narrowing, so nothing wraps. */
#ifndef EDGE_KERNELS_AVX2_QS8_AVX2_H
#define EDGE_KERNELS_AVX2_QS8_AVX2_H

#include <immintrin.h>
#include <string.h>

#include "../qgemm.h"

/* The 4 int8 of v (a k group, little-endian) sign-extended to int16 and repeated in all four
 * 64-bit lanes: a broadcast (a load-only uop when v comes from memory), then a compare and an
 * in-lane unpack; a lane-crossing vpmovsxbw would be a GEMM loop's bottleneck. */
static inline __attribute__((always_inline)) __m256i widen_broadcast4(int32_t v) {
  float f;
  memcpy(&f, &v, 4);
  const __m256i x = _mm256_castps_si256(_mm256_set1_ps(f));
  return _mm256_unpacklo_epi8(x, _mm256_cmpgt_epi8(_mm256_setzero_si256(), x));
}

/* Arithmetic right shift of 64-bit lanes by per-lane counts (0..63). */
static inline __attribute__((always_inline)) __m256i sra64(__m256i x, __m256i count) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
  return _mm256_xor_si256(_mm256_srlv_epi64(_mm256_xor_si256(x, sign), count), sign);
}

static inline __attribute__((always_inline)) __m256i clamp64(__m256i x, __m256i lo, __m256i hi) {
  x = _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
  return _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
}

/* requantize(acc) clamped to [lo, hi] (zero point not yet added) for 8 int32 lanes. */
static inline __attribute__((always_inline)) __m256i requantize8(__m256i acc, __m256i multiplier, __m256i shift,
                                                                 __m256i lo, __m256i hi) {
  const __m256i one = _mm256_set1_epi64x(1), low_mask = _mm256_set1_epi64x(0xffffffff);
  const __m256i shift_even = _mm256_and_si256(shift, low_mask), shift_odd = _mm256_srli_epi64(shift, 32);
  __m256i even = _mm256_mul_epi32(acc, multiplier);
  __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(multiplier, 32));
  even = _mm256_add_epi64(even, _mm256_sllv_epi64(one, _mm256_sub_epi64(shift_even, one)));
  odd = _mm256_add_epi64(odd, _mm256_sllv_epi64(one, _mm256_sub_epi64(shift_odd, one)));
  even = clamp64(sra64(even, shift_even), lo, hi);
  odd = clamp64(sra64(odd, shift_odd), lo, hi);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xaa);
}


/* Requantization of 8 lanes whose every shift is >= 33 (real multipliers below 1/4, nearly every
 * conv layer), exact in 32-bit lanes after the products. With P = acc * m (|P| < 2^62) and
 * H = floor(P / 2^32) (|H| < 2^30): (P + 2^(s-1)) >> s == (H + 2^(s-33)) >> (s-32), because
 * 2^(s-1) is a multiple of 2^32 and the dropped low word adds less than 1 to an integer numerator
 * before a floor division by 2^(s-32). The result is unclamped, within +-2^30: zp plus it narrowed
 * with saturation and then clamped to [qmin, qmax] gives clamp(zp + requantize(acc), qmin, qmax). */
typedef struct {
  __m256i multiplier, multiplier_odd, round, shift;
} qs8_requant8_fast;

static inline __attribute__((always_inline)) qs8_requant8_fast qs8_requant8_fast_prepare(__m256i multiplier,
                                                                                         __m256i shift) {
  qs8_requant8_fast k;
  k.multiplier = multiplier;
  k.multiplier_odd = _mm256_srli_epi64(multiplier, 32);
  k.shift = _mm256_sub_epi32(shift, _mm256_set1_epi32(32));
  k.round = _mm256_sllv_epi32(_mm256_set1_epi32(1), _mm256_sub_epi32(shift, _mm256_set1_epi32(33)));
  return k;
}

static inline __attribute__((always_inline)) __m256i qs8_requantize8_fast(__m256i acc, const qs8_requant8_fast *k) {
  const __m256i even = _mm256_mul_epi32(acc, k->multiplier);
  const __m256i odd = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), k->multiplier_odd);
  /* the high words: even products' moved down into the even lanes, odd products' already in place */
  const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xaa);
  return _mm256_srav_epi32(_mm256_add_epi32(h, k->round), k->shift);
}

/* qs8_requantize8_fast plus the zero point, narrowed with saturation and clamped to
 * [qmin, qmax]: 8 int8 in the low half of the result, the bytes of requantize8_s8. */
static inline __attribute__((always_inline)) __m128i requantize8_fast_s8(__m256i acc, const qs8_requant8_fast *k,
                                                                         __m256i zp, __m128i qmin8, __m128i qmax8) {
  const __m256i v = _mm256_add_epi32(qs8_requantize8_fast(acc, k), zp);
  const __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_min_epi8(qmax8, _mm_max_epi8(qmin8, _mm_packs_epi16(v16, v16)));
}

/* requantize8 plus the zero point, narrowed to 8 int8 in the low half of the result. */
static inline __attribute__((always_inline)) __m128i requantize8_s8(__m256i acc, __m256i multiplier, __m256i shift,
                                                                    __m256i lo, __m256i hi, __m256i zp) {
  const __m256i v = _mm256_add_epi32(requantize8(acc, multiplier, shift, lo, hi), zp);
  /* values are in [-128, 127]: the saturating packs only narrow */
  const __m128i v16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  return _mm_packs_epi16(v16, v16);
}

#endif

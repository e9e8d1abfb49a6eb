/* Shared pieces of the AVX-512 qs8 kernels (GEMM, depthwise; avx512 and avx512vnni folders):
 * k-group loads that never read past the row, and the bit-exact requantization of requant.h.
 *
 * Requantization, bit-exact with requant.h: 64-bit products of even and odd lanes (vpmuldq), the
 * rounding term added in 64 bits, vpsravq (a true 64-bit arithmetic shift), the 64-bit value
 * clamped to [qmin - zp, qmax - zp] before the lanes are narrowed, so nothing wraps or saturates
 * differently from the scalar clamp. When every shift of a block is >= 33 (nearly every layer),
 * qs8_requantize16_fast gives the same bytes from the high words of the products in 32-bit lanes;
 * the kernels choose between the two from the packed shifts (qs8_shifts_below_33). */
#ifndef EDGE_KERNELS_AVX512_QS8_AVX512_H
#define EDGE_KERNELS_AVX512_QS8_AVX512_H

#include <immintrin.h>
#include <string.h>

#include "../qgemm.h"

static inline __attribute__((always_inline)) int32_t qs8_load4(const int8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

static inline __attribute__((always_inline)) int32_t qs8_load_tail(const int8_t *p, size_t n) {
  int32_t v = 0;
  memcpy(&v, p, n);
  return v;
}

/* The per-channel constants of requantize, computed once where a kernel reuses them. */
typedef struct {
  __m512i multiplier, multiplier_odd, shift_even, shift_odd, round_even, round_odd;
} qs8_requant16_constants;

static inline __attribute__((always_inline)) qs8_requant16_constants qs8_requant16_prepare(__m512i multiplier,
                                                                                          __m512i shift) {
  const __m512i one = _mm512_set1_epi64(1);
  qs8_requant16_constants k;
  k.multiplier = multiplier;
  k.multiplier_odd = _mm512_srli_epi64(multiplier, 32);
  k.shift_even = _mm512_and_si512(shift, _mm512_set1_epi64(0xffffffff));
  k.shift_odd = _mm512_srli_epi64(shift, 32);
  k.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_even, one));
  k.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(k.shift_odd, one));
  return k;
}

/* requantize(acc) clamped to [lo, hi] (64-bit lanes of qmin - zp, qmax - zp), 16 int32 lanes. */
static inline __attribute__((always_inline)) __m512i qs8_requantize16_with(__m512i acc,
                                                                           const qs8_requant16_constants *k,
                                                                           __m512i lo, __m512i hi) {
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(acc, k->multiplier), k->round_even);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(acc, 32), k->multiplier_odd), k->round_odd);
  even = _mm512_max_epi64(lo, _mm512_min_epi64(hi, _mm512_srav_epi64(even, k->shift_even)));
  odd = _mm512_max_epi64(lo, _mm512_min_epi64(hi, _mm512_srav_epi64(odd, k->shift_odd)));
  return _mm512_mask_blend_epi32(0xaaaa, even, _mm512_slli_epi64(odd, 32));
}

static inline __attribute__((always_inline)) __m512i qs8_requantize16(__m512i acc, __m512i multiplier, __m512i shift,
                                                                      __m512i lo, __m512i hi) {
  const qs8_requant16_constants k = qs8_requant16_prepare(multiplier, shift);
  return qs8_requantize16_with(acc, &k, lo, hi);
}

/* Requantization of 16 lanes whose every shift is >= 33 (real multipliers below 1/4, i.e. nearly
 * every conv layer), exact and in 32-bit lanes after the products. With P = acc * m (|P| < 2^62)
 * and H = floor(P / 2^32) (|H| < 2^30): (P + 2^(s-1)) >> s == (H + 2^(s-33)) >> (s-32), because
 * 2^(s-1) is a multiple of 2^32 and the dropped low word adds less than 1 to an integer numerator
 * before a floor division by the integer 2^(s-32). One vpermt2d collects the high words of the even
 * and odd products; zp + that lies within +-2^30 + 128, so the saturating narrow to int8 followed by
 * the [qmin, qmax] clamp in bytes equals clamp(zp + requantize(acc), qmin, qmax). */
typedef struct {
  __m512i multiplier, multiplier_odd, round, shift;
} qs8_requant16_fast;

static inline __attribute__((always_inline)) qs8_requant16_fast qs8_requant16_fast_prepare(__m512i multiplier,
                                                                                           __m512i shift) {
  qs8_requant16_fast k;
  k.multiplier = multiplier;
  k.multiplier_odd = _mm512_srli_epi64(multiplier, 32);
  k.shift = _mm512_sub_epi32(shift, _mm512_set1_epi32(32));
  k.round = _mm512_sllv_epi32(_mm512_set1_epi32(1), _mm512_sub_epi32(shift, _mm512_set1_epi32(33)));
  return k;
}

/* The vpermt2d index of qs8_requantize16_fast: the high word of each 64-bit product, in lane order. */
static inline __attribute__((always_inline)) __m512i qs8_high_words(void) {
  return _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
}

/* The lanes of `mask` whose shift is below 33: none means qs8_requantize16_fast applies to them
 * (lanes past the last column hold packing's zeros and are left out by the mask). */
static inline __attribute__((always_inline)) __mmask16 qs8_shifts_below_33(__m512i shift, __mmask16 mask) {
  return _mm512_mask_cmplt_epi32_mask(mask, shift, _mm512_set1_epi32(33));
}

/* int8 (still unclamped to [qmin, qmax]) of zp + requantize(acc), 16 lanes. */
static inline __attribute__((always_inline)) __m128i qs8_requantize16_fast(__m512i acc, const qs8_requant16_fast *k,
                                                                         __m512i high_words, __m512i zp) {
  const __m512i even = _mm512_mul_epi32(acc, k->multiplier);
  const __m512i odd = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), k->multiplier_odd);
  const __m512i h = _mm512_permutex2var_epi32(even, high_words, odd);
  const __m512i r = _mm512_srav_epi32(_mm512_add_epi32(h, k->round), k->shift);
  return _mm512_cvtsepi32_epi8(_mm512_add_epi32(r, zp));
}

#endif

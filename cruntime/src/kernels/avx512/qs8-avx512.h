/* Shared pieces of the AVX-512 qs8 kernels (GEMM, depthwise; avx512 and avx512vnni folders):
 * k-group loads that never read past the row, and the bit-exact requantization of requant.h.
 *
 * Requantization, bit-exact with requant.h: 64-bit products of even and odd lanes (vpmuldq), the
 * rounding term added in 64 bits, vpsravq (a true 64-bit arithmetic shift), the 64-bit value
 * clamped to [qmin - zp, qmax - zp] before the lanes are narrowed, so nothing wraps or saturates
 * differently from the scalar clamp. */
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

#endif

/* The int8 GEMM words of the SIMD vocabulary (simd.h's types, one block per ISA), which
 * qs8-gemm-tile.h writes the qs8 GEMM / IGEMM family in once. A panel of the packed weights
 * (qgemm.h) is split in vectors of EDGE_SIMD_N columns; per ISA:
 *
 *   QS8_KR                  k group: bytes of a row taken at once, and of each column's weights
 *   QS8_PARTS               accumulators per row and vector of columns: the ISA's product may
 *                           leave a column's group in several lanes (pmaddwd: two half sums), so
 *                           a vector's columns spread over QS8_PARTS vectors, part j against
 *                           its own part of the weights
 *   qs8_acc, qs8_w          one part's accumulator and weights (one register each)
 *   qs8_x                   one row's k group, ready to multiply against any part's qs8_w
 *   qs8_acc_zero()          an empty qs8_acc
 *   qs8_w_load(p, j)        part j of the N * QS8_KR weight bytes at p
 *   qs8_x_load(p)           reads the QS8_KR bytes at p
 *   qs8_x_load_tail(p, n)   reads p[0..n), 0 < n < QS8_KR, the rest of the group being 0
 *   qs8_madd(acc, x, w)     acc + the products of x and w, exactly (int32)
 *   qs8_acc_sum(parts, bias)  the N column sums of a vector's QS8_PARTS accumulators, in column
 *                           order, plus the N int32 of bias (exact)
 *   qs8_requant             one vector's requantization constants (int8 mode), prepared once per
 *                           panel by qs8_requant_prepare(multiplier, shift, params) from the
 *                           packed words; qs8_requant_store(&k, sums, out, n) writes the n <= N
 *                           bytes clamp(zp + requantize(sum), qmin, qmax) of requant.h, bit-exact
 *
 * Where QS8_WIDE_K is defined (avx2), a GEMM tile whose rows serve several panels sign-extends
 * them once to int16 (QS8_WIDE_K values per row at most): qs8_widen_row(dst, src, kc, kc_padded)
 * writes src[0..kc) and zeros up to kc_padded, and qs8_x_load_wide(g) takes a group from there.
 *
 * Every product is exact in int32 (the packing bounds the sums, qgemm.h), so any grouping gives
 * the bytes of the scalar reference. The AVX-512 and NEON levels keep their own tiles
 * (avx512/qs8-gemm-avx512.h, neon/, neondot/): their products (vpdpbusd on x + 128, smlal and
 * sdot by lane over 8 or 16 k of a row) do not take one row group at a time. */
#ifndef EDGE_KERNELS_SIMD_QS8_H
#define EDGE_KERNELS_SIMD_QS8_H

#include <string.h>

#include "qs8.h"
#include "requant.h"
#include "simd.h"

EDGE_SIMD_INLINE int32_t qs8_group_bytes(const int8_t *p, size_t n) {
  int32_t v = 0;
  memcpy(&v, p, n);
  return v;
}

#if defined(EDGE_SIMD_ISA_AVX2)

#include "avx2/qs8-avx2.h"

#define QS8_KR 4
#define QS8_WIDE_K 4608
/* pmaddwd leaves each column's group as two half sums (k 0-1, k 2-3) in neighbouring lanes: part 0
 * holds columns 0-3, part 1 columns 4-7, each against its half of the group's weights. */
#define QS8_PARTS 2
typedef __m256i qs8_acc;
typedef __m256i qs8_w;
typedef __m256i qs8_x;

EDGE_SIMD_INLINE qs8_acc qs8_acc_zero(void) { return _mm256_setzero_si256(); }
EDGE_SIMD_INLINE qs8_w qs8_w_load(const int8_t *p, size_t part) {
  return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16 * part)));
}
EDGE_SIMD_INLINE qs8_x qs8_x_load(const int8_t *p) { return widen_broadcast4(qs8_group_bytes(p, 4)); }
EDGE_SIMD_INLINE qs8_x qs8_x_load_tail(const int8_t *p, size_t n) { return widen_broadcast4(qs8_group_bytes(p, n)); }
EDGE_SIMD_INLINE qs8_acc qs8_madd(qs8_acc acc, qs8_x x, qs8_w w) { return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w)); }
/* hadd per 128-bit lane gives columns (0 1 4 5 | 2 3 6 7); the permute puts them in order */
EDGE_SIMD_INLINE i32xN qs8_acc_sum(const qs8_acc *parts, const int8_t *bias) {
  return _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)bias),
                          _mm256_permute4x64_epi64(_mm256_hadd_epi32(parts[0], parts[1]), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* Every tap's rows to int16 once: 16 at a time with vpmovsxbw (once per row, not per step). */
EDGE_SIMD_INLINE void qs8_widen_row(int16_t *dst, const int8_t *r, size_t kc, size_t kc_padded) {
  size_t k = 0;
  for (; k + 16 <= kc; k += 16)
    _mm256_storeu_si256((__m256i *)(dst + k), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + k))));
  for (; k < kc; ++k) dst[k] = r[k];
  for (; k < kc_padded; ++k) dst[k] = 0;
}
/* The four int16 of a widened group in every 64-bit lane: one load-only broadcast. */
EDGE_SIMD_INLINE qs8_x qs8_x_load_wide(const int16_t *g) {
  double d;
  memcpy(&d, g, sizeof d);
  return _mm256_castpd_si256(_mm256_set1_pd(d));
}

/* Panels whose shifts are all >= 33 (nearly every layer; a partial panel's padding has 0)
 * requantize in 32 bits (qs8-avx2.h), the others in 64. */
typedef struct {
  __m256i multiplier, shift, zp, lo, hi;
  qs8_requant8_fast fast_k;
  __m128i qmin8, qmax8;
  bool fast;
} qs8_requant;

EDGE_SIMD_INLINE qs8_requant qs8_requant_prepare(const int8_t *multiplier, const int8_t *shift,
                                                 const edge_qs8_requant_params *rq) {
  qs8_requant k;
  k.multiplier = _mm256_loadu_si256((const __m256i *)multiplier);
  k.shift = _mm256_loadu_si256((const __m256i *)shift);
  k.zp = _mm256_set1_epi32(rq->zero_point);
  k.fast = !_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(33), k.shift));
  k.fast_k = qs8_requant8_fast_prepare(k.multiplier, k.shift);
  k.qmin8 = _mm_set1_epi8((char)rq->qmin);
  k.qmax8 = _mm_set1_epi8((char)rq->qmax);
  k.lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point);
  k.hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
  return k;
}
EDGE_SIMD_INLINE void qs8_requant_store(const qs8_requant *k, i32xN sums, int8_t *out, size_t n) {
  const __m128i v8 = k->fast ? requantize8_fast_s8(sums, &k->fast_k, k->zp, k->qmin8, k->qmax8)
                             : requantize8_s8(sums, k->multiplier, k->shift, k->lo, k->hi, k->zp);
  if (n == 8) _mm_storel_epi64((__m128i *)out, v8);
  else {
    int8_t bytes[16];
    _mm_storeu_si128((__m128i *)bytes, v8);
    memcpy(out, bytes, n);
  }
}

#elif defined(EDGE_SIMD_ISA_SSE2)

#define QS8_KR 4
/* pmaddwd on int8 sign-extended to int16 (unpack with itself, arithmetic shift by 8): part 0 holds
 * columns 0-1, part 1 columns 2-3, each 32-bit lane half a column's group. */
#define QS8_PARTS 2
typedef __m128i qs8_acc;
typedef __m128i qs8_w;
typedef __m128i qs8_x;

EDGE_SIMD_INLINE __m128i qs8_widen_lo(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }

EDGE_SIMD_INLINE qs8_acc qs8_acc_zero(void) { return _mm_setzero_si128(); }
EDGE_SIMD_INLINE qs8_w qs8_w_load(const int8_t *p, size_t part) {
  return qs8_widen_lo(_mm_loadl_epi64((const __m128i *)(p + 8 * part)));
}
/* 4 bytes of a row as int16, in both 64-bit halves. */
EDGE_SIMD_INLINE qs8_x qs8_x_load_tail(const int8_t *p, size_t n) {
  const __m128i x = qs8_widen_lo(_mm_cvtsi32_si128(qs8_group_bytes(p, n)));
  return _mm_unpacklo_epi64(x, x);
}
EDGE_SIMD_INLINE qs8_x qs8_x_load(const int8_t *p) { return qs8_x_load_tail(p, 4); }
EDGE_SIMD_INLINE qs8_acc qs8_madd(qs8_acc acc, qs8_x x, qs8_w w) { return _mm_add_epi32(acc, _mm_madd_epi16(x, w)); }
/* lanes (c0 k0-1, c0 k2-3, c1 ..) and (c2 .., c3 ..): even + odd lanes = columns 0..3 */
EDGE_SIMD_INLINE i32xN qs8_acc_sum(const qs8_acc *parts, const int8_t *bias) {
  const __m128 lo = _mm_castsi128_ps(parts[0]), hi = _mm_castsi128_ps(parts[1]);
  const __m128i sum = _mm_add_epi32(_mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0))),
                                    _mm_castps_si128(_mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1))));
  return _mm_add_epi32(_mm_loadu_si128((const __m128i *)bias), sum);
}

#elif defined(EDGE_SIMD_ISA_SCALAR)

#define QS8_KR 1
#define QS8_PARTS 1
typedef int32_t qs8_acc;
typedef int32_t qs8_w;
typedef int32_t qs8_x;

EDGE_SIMD_INLINE qs8_acc qs8_acc_zero(void) { return 0; }
EDGE_SIMD_INLINE qs8_w qs8_w_load(const int8_t *p, size_t part) { return p[part]; }
EDGE_SIMD_INLINE qs8_x qs8_x_load(const int8_t *p) { return *p; }
EDGE_SIMD_INLINE qs8_x qs8_x_load_tail(const int8_t *p, size_t n) { return n ? *p : 0; }
EDGE_SIMD_INLINE qs8_acc qs8_madd(qs8_acc acc, qs8_x x, qs8_w w) { return acc + x * w; }
EDGE_SIMD_INLINE i32xN qs8_acc_sum(const qs8_acc *parts, const int8_t *bias) {
  int32_t b;
  memcpy(&b, bias, sizeof b);
  return b + parts[0];
}

#else
#error "simd-qs8.h: the qs8 GEMM template serves the scalar, sse2 and avx2 levels"
#endif

#if !defined(EDGE_SIMD_ISA_AVX2)
/* Without a vector 32x32 -> 64-bit multiply (sse2) or a vector at all (scalar), the requantization
 * is requant.h's, per output: a cost per output, not per multiply-add, and bit-exact by
 * construction. */
typedef struct {
  int32_t multiplier[EDGE_SIMD_N], shift[EDGE_SIMD_N];
  int32_t zero_point, qmin, qmax;
} qs8_requant;

EDGE_SIMD_INLINE qs8_requant qs8_requant_prepare(const int8_t *multiplier, const int8_t *shift,
                                                 const edge_qs8_requant_params *rq) {
  qs8_requant k;
  memcpy(k.multiplier, multiplier, sizeof k.multiplier);
  memcpy(k.shift, shift, sizeof k.shift);
  k.zero_point = rq->zero_point;
  k.qmin = rq->qmin;
  k.qmax = rq->qmax;
  return k;
}
EDGE_SIMD_INLINE void qs8_requant_store(const qs8_requant *k, i32xN sums, int8_t *out, size_t n) {
  int32_t acc[EDGE_SIMD_N];
  memcpy(acc, &sums, sizeof acc);
  for (size_t j = 0; j < n; ++j)
    out[j] = edge_requantize_s8(acc[j], k->multiplier[j], k->shift[j], k->zero_point, k->qmin, k->qmax);
}
#endif

#endif

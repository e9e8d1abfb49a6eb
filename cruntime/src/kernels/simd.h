/* The SIMD vocabulary the vector kernels (the files in kernels/vector/) are written in, once, for every ISA
 * (ggml's simd-mappings idea): one float vector type f32xN of EDGE_SIMD_N lanes, an int32 vector
 * i32xN of the same lane count, a lane mask maskxN, and small inline functions over them. The
 * including file is compiled once per ISA with exactly one of
 *
 *   -DEDGE_SIMD_ISA_SCALAR   N = 1   plain C
 *   -DEDGE_SIMD_ISA_SSE2     N = 4   (x86-64 baseline)
 *   -DEDGE_SIMD_ISA_AVX2     N = 8   with -mavx2 -mfma
 *   -DEDGE_SIMD_ISA_AVX512   N = 16  with -mavx512f -mavx512bw -mavx512vl -mavx512dq
 *   -DEDGE_SIMD_ISA_NEON     N = 4   aarch64
 *
 * and defines its symbols through EDGE_SIMD_FN(name), which appends the ISA: EDGE_SIMD_FN(f32_vexp)
 * is edge_f32_vexp__avx2 in the avx2 object.
 *
 * Semantics every mapping keeps, so a kernel gives the same answer shape on every ISA:
 * - vf_load/vf_store need EDGE_SIMD_N*4-byte alignment; vf_loadu/vf_storeu need none.
 * - vf_load_partial(p, n) reads exactly p[0..n) (0 < n < N; other lanes are 0) and
 *   vf_store_partial writes exactly p[0..n): tails go through the same vector arithmetic as the
 *   body, so an element's value never depends on where a thread's range starts.
 * - vf_fma(a, b, c) = a*b + c, fused (one rounding) where the ISA has FMA (avx2, avx512, neon),
 *   two roundings on sse2 and scalar. Where EDGE_SIMD_HAS_FMA_LANE is defined (neon),
 *   vf_fma_lane(a, x, lane, c) = a*x[lane] + c, fused, for a constant lane.
 * - vf_max(a, b) / vf_min(a, b) are "a > b ? a : b" / "a < b ? a : b" lane-wise when neither is
 *   NaN. With a NaN lane the result is b on x86 and scalar and NaN on NEON: so clamping as
 *   vf_min(hi, vf_max(lo, x)) lets a NaN in x through everywhere; kernels that need "NaN wins"
 *   otherwise test vf_unord explicitly.
 * - vf_reduce_add/max/min fold the lanes in a fixed order per ISA (deterministic).
 * - vm_first(n) is the mask of lanes 0..n-1 (for tails: 0 <= n <= N).
 * - vf_nan_to_zero(a) is a with NaN lanes replaced by +0.
 * - vf_round_i32 rounds to nearest even (the default rounding mode); vf_trunc_i32 truncates.
 * - Integer lanes for the int8 kernels: vi_loadu / vi_storeu move N int32; vi_load_s8(p) reads
 *   exactly p[0..N) and sign-extends each byte to a lane; vi_store_s8_sat(p, v) writes exactly
 *   p[0..N), each lane saturated to [-128, 127], and vi_store_s8_sat2(p, v0, v1) p[0..2N) from two
 *   vectors. Where EDGE_SIMD_HAS_FIXED2 is defined (avx2, avx512, neon: a vector 32x32 -> 64-bit
 *   multiply), vi_fixed2(a, b, &k), with
 *   k = vi_fixed2_prepare(ma, mb, s, lo, hi) (1 <= s <= 62), is per lane
 *   clamp((int64(a) * ma + int64(b) * mb + 2^(s-1)) >> s, lo, hi) in exact 64-bit arithmetic
 *   (arithmetic shift; |a|, |b| < 2^9 in the int8 kernels), the int8 ADD rule of requant.h, and
 *   vi_fixed1(a, &k) with k = vi_fixed2_prepare(m, 0, s, lo, hi) is clamp((int64(a) * m + 2^(s-1)) >> s,
 *   lo, hi), the requantization of an int32 accumulator (any int32 a and m).
 * - vi_gt(a, b) is -1 in the lanes where a > b (signed), 0 elsewhere. Where EDGE_SIMD_HAS_MULLO is
 *   defined (avx2, avx512, neon), vi_mullo(a, b) is the low 32 bits of each product.
 */
#ifndef EDGE_KERNELS_SIMD_H
#define EDGE_KERNELS_SIMD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EDGE_SIMD_CAT_(a, b) a##b
#define EDGE_SIMD_CAT(a, b) EDGE_SIMD_CAT_(a, b)
#define EDGE_SIMD_FN(name) EDGE_SIMD_CAT(EDGE_SIMD_CAT(edge_, name), EDGE_SIMD_SUFFIX)

#define EDGE_SIMD_INLINE static inline __attribute__((always_inline))

#if defined(EDGE_SIMD_ISA_AVX512)

#include <immintrin.h>
#define EDGE_SIMD_N 16
#define EDGE_SIMD_SUFFIX __avx512
typedef __m512 f32xN;
typedef __m512i i32xN;
typedef __mmask16 maskxN;

EDGE_SIMD_INLINE f32xN vf_load(const float *p) { return _mm512_load_ps(p); }
EDGE_SIMD_INLINE f32xN vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
EDGE_SIMD_INLINE void vf_store(float *p, f32xN v) { _mm512_store_ps(p, v); }
EDGE_SIMD_INLINE void vf_storeu(float *p, f32xN v) { _mm512_storeu_ps(p, v); }
EDGE_SIMD_INLINE __mmask16 edge_simd_tail_mask(size_t n) { return (__mmask16)((1u << n) - 1u); }
EDGE_SIMD_INLINE f32xN vf_load_partial(const float *p, size_t n) {
  return _mm512_maskz_loadu_ps(edge_simd_tail_mask(n), p);
}
EDGE_SIMD_INLINE void vf_store_partial(float *p, f32xN v, size_t n) {
  _mm512_mask_storeu_ps(p, edge_simd_tail_mask(n), v);
}
EDGE_SIMD_INLINE f32xN vf_set1(float x) { return _mm512_set1_ps(x); }
EDGE_SIMD_INLINE f32xN vf_zero(void) { return _mm512_setzero_ps(); }
EDGE_SIMD_INLINE f32xN vf_add(f32xN a, f32xN b) { return _mm512_add_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sub(f32xN a, f32xN b) { return _mm512_sub_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_mul(f32xN a, f32xN b) { return _mm512_mul_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_div(f32xN a, f32xN b) { return _mm512_div_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_fma(f32xN a, f32xN b, f32xN c) { return _mm512_fmadd_ps(a, b, c); }
EDGE_SIMD_INLINE f32xN vf_fnma(f32xN a, f32xN b, f32xN c) { return _mm512_fnmadd_ps(a, b, c); }
EDGE_SIMD_INLINE f32xN vf_max(f32xN a, f32xN b) { return _mm512_max_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_min(f32xN a, f32xN b) { return _mm512_min_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sqrt(f32xN a) { return _mm512_sqrt_ps(a); }
EDGE_SIMD_INLINE i32xN vf_as_i32(f32xN a) { return _mm512_castps_si512(a); }
EDGE_SIMD_INLINE f32xN vi_as_f32(i32xN a) { return _mm512_castsi512_ps(a); }
EDGE_SIMD_INLINE i32xN vi_set1(int32_t x) { return _mm512_set1_epi32(x); }
EDGE_SIMD_INLINE i32xN vi_add(i32xN a, i32xN b) { return _mm512_add_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_sub(i32xN a, i32xN b) { return _mm512_sub_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_and(i32xN a, i32xN b) { return _mm512_and_si512(a, b); }
EDGE_SIMD_INLINE i32xN vi_or(i32xN a, i32xN b) { return _mm512_or_si512(a, b); }
EDGE_SIMD_INLINE i32xN vi_xor(i32xN a, i32xN b) { return _mm512_xor_si512(a, b); }
#define vi_shl(a, bits) _mm512_slli_epi32((a), (bits))
#define vi_sra(a, bits) _mm512_srai_epi32((a), (bits))
#define vi_srl(a, bits) _mm512_srli_epi32((a), (bits))
EDGE_SIMD_INLINE i32xN vf_round_i32(f32xN a) { return _mm512_cvtps_epi32(a); }
EDGE_SIMD_INLINE i32xN vf_trunc_i32(f32xN a) { return _mm512_cvttps_epi32(a); }
EDGE_SIMD_INLINE f32xN vi_to_f32(i32xN a) { return _mm512_cvtepi32_ps(a); }
EDGE_SIMD_INLINE maskxN vf_lt(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
EDGE_SIMD_INLINE maskxN vf_le(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
EDGE_SIMD_INLINE maskxN vf_gt(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
EDGE_SIMD_INLINE maskxN vf_ge(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
EDGE_SIMD_INLINE maskxN vf_eq(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
EDGE_SIMD_INLINE maskxN vf_unord(f32xN a, f32xN b) { return _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q); }
EDGE_SIMD_INLINE f32xN vf_nan_to_zero(f32xN a) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a); }
EDGE_SIMD_INLINE f32xN vf_select(maskxN m, f32xN a, f32xN b) { return _mm512_mask_blend_ps(m, b, a); }
EDGE_SIMD_INLINE maskxN vm_or(maskxN a, maskxN b) { return (maskxN)(a | b); }
EDGE_SIMD_INLINE maskxN vm_and(maskxN a, maskxN b) { return (maskxN)(a & b); }
EDGE_SIMD_INLINE maskxN vm_none(void) { return 0; }
EDGE_SIMD_INLINE int vm_any(maskxN m) { return m != 0; }
EDGE_SIMD_INLINE float vf_reduce_add(f32xN a) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_max(f32xN a) {
  __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_min(f32xN a) {
  __m256 h = _mm256_min_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  __m128 q = _mm_min_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_min_ps(q, _mm_movehl_ps(q, q));
  q = _mm_min_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}

EDGE_SIMD_INLINE maskxN vm_first(size_t n) { return edge_simd_tail_mask(n); }

/* int8 <-> int32 lanes and the 64-bit fixed-point sum of the int8 kernels. */
#define EDGE_SIMD_HAS_FIXED2 1
EDGE_SIMD_INLINE i32xN vi_loadu(const int32_t *p) { return _mm512_loadu_si512(p); }
EDGE_SIMD_INLINE void vi_storeu(int32_t *p, i32xN v) { _mm512_storeu_si512(p, v); }
EDGE_SIMD_INLINE i32xN vi_load_s8(const int8_t *p) { return _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)); }
EDGE_SIMD_INLINE void vi_store_s8_sat(int8_t *p, i32xN v) { _mm_storeu_si128((__m128i *)p, _mm512_cvtsepi32_epi8(v)); }
EDGE_SIMD_INLINE void vi_store_s8_sat2(int8_t *p, i32xN v0, i32xN v1) {
  vi_store_s8_sat(p, v0);
  vi_store_s8_sat(p + 16, v1);
}
typedef struct {
  __m512i ma, mb, round, lo, hi;
  __m128i count;
} edge_simd_fixed2;
EDGE_SIMD_INLINE edge_simd_fixed2 vi_fixed2_prepare(int32_t ma, int32_t mb, int32_t shift, int64_t lo, int64_t hi) {
  return (edge_simd_fixed2){_mm512_set1_epi64(ma), _mm512_set1_epi64(mb), _mm512_set1_epi64((int64_t)1 << (shift - 1)),
                            _mm512_set1_epi64(lo), _mm512_set1_epi64(hi), _mm_cvtsi32_si128(shift)};
}
/* vpmuldq multiplies the even lanes, and the odd ones after a 32-bit shift down: exact 64-bit products. */
EDGE_SIMD_INLINE i32xN vi_fixed2(i32xN a, i32xN b, const edge_simd_fixed2 *k) {
  __m512i even = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epi32(a, k->ma), _mm512_mul_epi32(b, k->mb)), k->round);
  __m512i odd = _mm512_add_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), k->ma), _mm512_mul_epi32(_mm512_srli_epi64(b, 32), k->mb)),
      k->round);
  even = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(even, k->count), k->lo), k->hi);
  odd = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(odd, k->count), k->lo), k->hi);
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
EDGE_SIMD_INLINE i32xN vi_fixed1(i32xN a, const edge_simd_fixed2 *k) {
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(a, k->ma), k->round);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(a, 32), k->ma), k->round);
  even = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(even, k->count), k->lo), k->hi);
  odd = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(odd, k->count), k->lo), k->hi);
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
#define EDGE_SIMD_HAS_MULLO 1
EDGE_SIMD_INLINE i32xN vi_mullo(i32xN a, i32xN b) { return _mm512_mullo_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_gt(i32xN a, i32xN b) { return _mm512_movm_epi32(_mm512_cmpgt_epi32_mask(a, b)); }

#elif defined(EDGE_SIMD_ISA_AVX2)

#include <immintrin.h>
#define EDGE_SIMD_N 8
#define EDGE_SIMD_SUFFIX __avx2
typedef __m256 f32xN;
typedef __m256i i32xN;
typedef __m256 maskxN; /* all-ones lanes */

EDGE_SIMD_INLINE f32xN vf_load(const float *p) { return _mm256_load_ps(p); }
EDGE_SIMD_INLINE f32xN vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
EDGE_SIMD_INLINE void vf_store(float *p, f32xN v) { _mm256_store_ps(p, v); }
EDGE_SIMD_INLINE void vf_storeu(float *p, f32xN v) { _mm256_storeu_ps(p, v); }
/* Masked lanes of vmaskmov neither read nor fault, so a tail next to an unmapped page is safe. */
EDGE_SIMD_INLINE __m256i edge_simd_tail_mask(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
EDGE_SIMD_INLINE f32xN vf_load_partial(const float *p, size_t n) {
  return _mm256_maskload_ps(p, edge_simd_tail_mask(n));
}
/* Pieces of 4, 2 and 1 lanes rather than vmaskmovps, whose store form AMD's Zen 1-3 run as
 * microcode: a GEMM to 12 or 28 columns (every 6-row tile ending in partial stores) took 6-8% less
 * time on a Zen 3 VM this way. Plain stores of exactly n floats, so the contract is unchanged. */
EDGE_SIMD_INLINE void vf_store_partial(float *p, f32xN v, size_t n) {
  __m128 piece = _mm256_castps256_ps128(v);
  if (n & 4) {
    _mm_storeu_ps(p, piece);
    piece = _mm256_extractf128_ps(v, 1);
    p += 4;
  }
  if (n & 2) {
    _mm_storel_pi((__m64 *)p, piece);
    piece = _mm_movehl_ps(piece, piece);
    p += 2;
  }
  if (n & 1) _mm_store_ss(p, piece);
}
EDGE_SIMD_INLINE f32xN vf_set1(float x) { return _mm256_set1_ps(x); }
EDGE_SIMD_INLINE f32xN vf_zero(void) { return _mm256_setzero_ps(); }
EDGE_SIMD_INLINE f32xN vf_add(f32xN a, f32xN b) { return _mm256_add_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sub(f32xN a, f32xN b) { return _mm256_sub_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_mul(f32xN a, f32xN b) { return _mm256_mul_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_div(f32xN a, f32xN b) { return _mm256_div_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_fma(f32xN a, f32xN b, f32xN c) { return _mm256_fmadd_ps(a, b, c); }
EDGE_SIMD_INLINE f32xN vf_fnma(f32xN a, f32xN b, f32xN c) { return _mm256_fnmadd_ps(a, b, c); }
EDGE_SIMD_INLINE f32xN vf_max(f32xN a, f32xN b) { return _mm256_max_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_min(f32xN a, f32xN b) { return _mm256_min_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sqrt(f32xN a) { return _mm256_sqrt_ps(a); }
EDGE_SIMD_INLINE i32xN vf_as_i32(f32xN a) { return _mm256_castps_si256(a); }
EDGE_SIMD_INLINE f32xN vi_as_f32(i32xN a) { return _mm256_castsi256_ps(a); }
EDGE_SIMD_INLINE i32xN vi_set1(int32_t x) { return _mm256_set1_epi32(x); }
EDGE_SIMD_INLINE i32xN vi_add(i32xN a, i32xN b) { return _mm256_add_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_sub(i32xN a, i32xN b) { return _mm256_sub_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_and(i32xN a, i32xN b) { return _mm256_and_si256(a, b); }
EDGE_SIMD_INLINE i32xN vi_or(i32xN a, i32xN b) { return _mm256_or_si256(a, b); }
EDGE_SIMD_INLINE i32xN vi_xor(i32xN a, i32xN b) { return _mm256_xor_si256(a, b); }
#define vi_shl(a, bits) _mm256_slli_epi32((a), (bits))
#define vi_sra(a, bits) _mm256_srai_epi32((a), (bits))
#define vi_srl(a, bits) _mm256_srli_epi32((a), (bits))
EDGE_SIMD_INLINE i32xN vf_round_i32(f32xN a) { return _mm256_cvtps_epi32(a); }
EDGE_SIMD_INLINE i32xN vf_trunc_i32(f32xN a) { return _mm256_cvttps_epi32(a); }
EDGE_SIMD_INLINE f32xN vi_to_f32(i32xN a) { return _mm256_cvtepi32_ps(a); }
EDGE_SIMD_INLINE maskxN vf_lt(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
EDGE_SIMD_INLINE maskxN vf_le(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
EDGE_SIMD_INLINE maskxN vf_gt(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
EDGE_SIMD_INLINE maskxN vf_ge(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
EDGE_SIMD_INLINE maskxN vf_eq(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
EDGE_SIMD_INLINE maskxN vf_unord(f32xN a, f32xN b) { return _mm256_cmp_ps(a, b, _CMP_UNORD_Q); }
EDGE_SIMD_INLINE f32xN vf_nan_to_zero(f32xN a) { return _mm256_and_ps(a, _mm256_cmp_ps(a, a, _CMP_ORD_Q)); }
EDGE_SIMD_INLINE f32xN vf_select(maskxN m, f32xN a, f32xN b) { return _mm256_blendv_ps(b, a, m); }
EDGE_SIMD_INLINE maskxN vm_or(maskxN a, maskxN b) { return _mm256_or_ps(a, b); }
EDGE_SIMD_INLINE maskxN vm_and(maskxN a, maskxN b) { return _mm256_and_ps(a, b); }
EDGE_SIMD_INLINE maskxN vm_none(void) { return _mm256_setzero_ps(); }
EDGE_SIMD_INLINE int vm_any(maskxN m) { return _mm256_movemask_ps(m) != 0; }
EDGE_SIMD_INLINE float vf_reduce_add(f32xN a) {
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_max(f32xN a) {
  __m128 q = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_min(f32xN a) {
  __m128 q = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  q = _mm_min_ps(q, _mm_movehl_ps(q, q));
  q = _mm_min_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}

EDGE_SIMD_INLINE maskxN vm_first(size_t n) { return _mm256_castsi256_ps(edge_simd_tail_mask(n)); }

/* int8 <-> int32 lanes and the 64-bit fixed-point sum of the int8 kernels. */
#define EDGE_SIMD_HAS_FIXED2 1
EDGE_SIMD_INLINE i32xN vi_loadu(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
EDGE_SIMD_INLINE void vi_storeu(int32_t *p, i32xN v) { _mm256_storeu_si256((__m256i *)p, v); }
EDGE_SIMD_INLINE i32xN vi_load_s8(const int8_t *p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
EDGE_SIMD_INLINE void vi_store_s8_sat(int8_t *p, i32xN v) {
  const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(words, words));
}
/* packs work per 128-bit lane: the permute puts the int16 words of v0 and v1 in order */
EDGE_SIMD_INLINE void vi_store_s8_sat2(int8_t *p, i32xN v0, i32xN v1) {
  const __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8);
  const __m256i bytes = _mm256_packs_epi16(words, words);
  _mm_storeu_si128((__m128i *)p, _mm_unpacklo_epi64(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)));
}
/* AVX2 has no 64-bit arithmetic shift: (x + 2^62) is shifted logically and 2^(62-s) subtracted, the
 * same floor(x / 2^s) while |x| < 2^62 (the sums here stay below 2^41 + 2^61). */
typedef struct {
  __m256i ma, mb, round, unbias, lo, hi;
  __m128i count;
} edge_simd_fixed2;
EDGE_SIMD_INLINE edge_simd_fixed2 vi_fixed2_prepare(int32_t ma, int32_t mb, int32_t shift, int64_t lo, int64_t hi) {
  return (edge_simd_fixed2){_mm256_set1_epi64x(ma), _mm256_set1_epi64x(mb),
                            _mm256_set1_epi64x(((int64_t)1 << (shift - 1)) + ((int64_t)1 << 62)),
                            _mm256_set1_epi64x((int64_t)1 << (62 - shift)), _mm256_set1_epi64x(lo),
                            _mm256_set1_epi64x(hi), _mm_cvtsi32_si128(shift)};
}
EDGE_SIMD_INLINE __m256i edge_simd_clamp64(__m256i x, __m256i lo, __m256i hi) {
  x = _mm256_blendv_epi8(x, lo, _mm256_cmpgt_epi64(lo, x));
  return _mm256_blendv_epi8(x, hi, _mm256_cmpgt_epi64(x, hi));
}
EDGE_SIMD_INLINE i32xN vi_fixed2(i32xN a, i32xN b, const edge_simd_fixed2 *k) {
  __m256i even = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(a, k->ma), _mm256_mul_epi32(b, k->mb)), k->round);
  __m256i odd = _mm256_add_epi64(
      _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), k->ma), _mm256_mul_epi32(_mm256_srli_epi64(b, 32), k->mb)),
      k->round);
  even = edge_simd_clamp64(_mm256_sub_epi64(_mm256_srl_epi64(even, k->count), k->unbias), k->lo, k->hi);
  odd = edge_simd_clamp64(_mm256_sub_epi64(_mm256_srl_epi64(odd, k->count), k->unbias), k->lo, k->hi);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
EDGE_SIMD_INLINE i32xN vi_fixed1(i32xN a, const edge_simd_fixed2 *k) {
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(a, k->ma), k->round);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), k->ma), k->round);
  even = edge_simd_clamp64(_mm256_sub_epi64(_mm256_srl_epi64(even, k->count), k->unbias), k->lo, k->hi);
  odd = edge_simd_clamp64(_mm256_sub_epi64(_mm256_srl_epi64(odd, k->count), k->unbias), k->lo, k->hi);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}
#define EDGE_SIMD_HAS_MULLO 1
EDGE_SIMD_INLINE i32xN vi_mullo(i32xN a, i32xN b) { return _mm256_mullo_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_gt(i32xN a, i32xN b) { return _mm256_cmpgt_epi32(a, b); }

#elif defined(EDGE_SIMD_ISA_SSE2)

#include <emmintrin.h>
#define EDGE_SIMD_N 4
#define EDGE_SIMD_SUFFIX __sse2
typedef __m128 f32xN;
typedef __m128i i32xN;
typedef __m128 maskxN; /* all-ones lanes */

EDGE_SIMD_INLINE f32xN vf_load(const float *p) { return _mm_load_ps(p); }
EDGE_SIMD_INLINE f32xN vf_loadu(const float *p) { return _mm_loadu_ps(p); }
EDGE_SIMD_INLINE void vf_store(float *p, f32xN v) { _mm_store_ps(p, v); }
EDGE_SIMD_INLINE void vf_storeu(float *p, f32xN v) { _mm_storeu_ps(p, v); }
EDGE_SIMD_INLINE f32xN vf_load_partial(const float *p, size_t n) {
  float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  memcpy(lanes, p, n * sizeof(float));
  return _mm_loadu_ps(lanes);
}
EDGE_SIMD_INLINE void vf_store_partial(float *p, f32xN v, size_t n) {
  float lanes[4];
  _mm_storeu_ps(lanes, v);
  memcpy(p, lanes, n * sizeof(float));
}
EDGE_SIMD_INLINE f32xN vf_set1(float x) { return _mm_set1_ps(x); }
EDGE_SIMD_INLINE f32xN vf_zero(void) { return _mm_setzero_ps(); }
EDGE_SIMD_INLINE f32xN vf_add(f32xN a, f32xN b) { return _mm_add_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sub(f32xN a, f32xN b) { return _mm_sub_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_mul(f32xN a, f32xN b) { return _mm_mul_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_div(f32xN a, f32xN b) { return _mm_div_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_fma(f32xN a, f32xN b, f32xN c) { return _mm_add_ps(_mm_mul_ps(a, b), c); }
EDGE_SIMD_INLINE f32xN vf_fnma(f32xN a, f32xN b, f32xN c) { return _mm_sub_ps(c, _mm_mul_ps(a, b)); }
EDGE_SIMD_INLINE f32xN vf_max(f32xN a, f32xN b) { return _mm_max_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_min(f32xN a, f32xN b) { return _mm_min_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_sqrt(f32xN a) { return _mm_sqrt_ps(a); }
EDGE_SIMD_INLINE i32xN vf_as_i32(f32xN a) { return _mm_castps_si128(a); }
EDGE_SIMD_INLINE f32xN vi_as_f32(i32xN a) { return _mm_castsi128_ps(a); }
EDGE_SIMD_INLINE i32xN vi_set1(int32_t x) { return _mm_set1_epi32(x); }
EDGE_SIMD_INLINE i32xN vi_add(i32xN a, i32xN b) { return _mm_add_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_sub(i32xN a, i32xN b) { return _mm_sub_epi32(a, b); }
EDGE_SIMD_INLINE i32xN vi_and(i32xN a, i32xN b) { return _mm_and_si128(a, b); }
EDGE_SIMD_INLINE i32xN vi_or(i32xN a, i32xN b) { return _mm_or_si128(a, b); }
EDGE_SIMD_INLINE i32xN vi_xor(i32xN a, i32xN b) { return _mm_xor_si128(a, b); }
#define vi_shl(a, bits) _mm_slli_epi32((a), (bits))
#define vi_sra(a, bits) _mm_srai_epi32((a), (bits))
#define vi_srl(a, bits) _mm_srli_epi32((a), (bits))
EDGE_SIMD_INLINE i32xN vf_round_i32(f32xN a) { return _mm_cvtps_epi32(a); }
EDGE_SIMD_INLINE i32xN vf_trunc_i32(f32xN a) { return _mm_cvttps_epi32(a); }
EDGE_SIMD_INLINE f32xN vi_to_f32(i32xN a) { return _mm_cvtepi32_ps(a); }
EDGE_SIMD_INLINE maskxN vf_lt(f32xN a, f32xN b) { return _mm_cmplt_ps(a, b); }
EDGE_SIMD_INLINE maskxN vf_le(f32xN a, f32xN b) { return _mm_cmple_ps(a, b); }
EDGE_SIMD_INLINE maskxN vf_gt(f32xN a, f32xN b) { return _mm_cmpgt_ps(a, b); }
EDGE_SIMD_INLINE maskxN vf_ge(f32xN a, f32xN b) { return _mm_cmpge_ps(a, b); }
EDGE_SIMD_INLINE maskxN vf_eq(f32xN a, f32xN b) { return _mm_cmpeq_ps(a, b); }
EDGE_SIMD_INLINE maskxN vf_unord(f32xN a, f32xN b) { return _mm_cmpunord_ps(a, b); }
EDGE_SIMD_INLINE f32xN vf_nan_to_zero(f32xN a) { return _mm_and_ps(a, _mm_cmpord_ps(a, a)); }
EDGE_SIMD_INLINE f32xN vf_select(maskxN m, f32xN a, f32xN b) {
  return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b));
}
EDGE_SIMD_INLINE maskxN vm_or(maskxN a, maskxN b) { return _mm_or_ps(a, b); }
EDGE_SIMD_INLINE maskxN vm_and(maskxN a, maskxN b) { return _mm_and_ps(a, b); }
EDGE_SIMD_INLINE maskxN vm_none(void) { return _mm_setzero_ps(); }
EDGE_SIMD_INLINE int vm_any(maskxN m) { return _mm_movemask_ps(m) != 0; }
EDGE_SIMD_INLINE float vf_reduce_add(f32xN q) {
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_max(f32xN q) {
  q = _mm_max_ps(q, _mm_movehl_ps(q, q));
  q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}
EDGE_SIMD_INLINE float vf_reduce_min(f32xN q) {
  q = _mm_min_ps(q, _mm_movehl_ps(q, q));
  q = _mm_min_ss(q, _mm_shuffle_ps(q, q, 1));
  return _mm_cvtss_f32(q);
}

EDGE_SIMD_INLINE maskxN vm_first(size_t n) {
  return _mm_castsi128_ps(_mm_cmpgt_epi32(_mm_set1_epi32((int)n), _mm_setr_epi32(0, 1, 2, 3)));
}

/* int8 <-> int32 lanes (no vi_fixed2: SSE2 has no signed 32x32 -> 64-bit multiply). */
EDGE_SIMD_INLINE i32xN vi_loadu(const int32_t *p) { return _mm_loadu_si128((const __m128i *)p); }
EDGE_SIMD_INLINE void vi_storeu(int32_t *p, i32xN v) { _mm_storeu_si128((__m128i *)p, v); }
EDGE_SIMD_INLINE i32xN vi_load_s8(const int8_t *p) {
  int32_t bytes;
  memcpy(&bytes, p, sizeof bytes);
  __m128i v = _mm_cvtsi32_si128(bytes);
  v = _mm_unpacklo_epi8(v, v);
  return _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 24);
}
EDGE_SIMD_INLINE void vi_store_s8_sat(int8_t *p, i32xN v) {
  const __m128i words = _mm_packs_epi32(v, v);
  const int32_t bytes = _mm_cvtsi128_si32(_mm_packs_epi16(words, words));
  memcpy(p, &bytes, sizeof bytes);
}
EDGE_SIMD_INLINE void vi_store_s8_sat2(int8_t *p, i32xN v0, i32xN v1) {
  const __m128i words = _mm_packs_epi32(v0, v1);
  _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(words, words));
}
EDGE_SIMD_INLINE i32xN vi_gt(i32xN a, i32xN b) { return _mm_cmpgt_epi32(a, b); }

#elif defined(EDGE_SIMD_ISA_NEON)

#include <arm_neon.h>
#define EDGE_SIMD_N 4
#define EDGE_SIMD_SUFFIX __neon
typedef float32x4_t f32xN;
typedef int32x4_t i32xN;
typedef uint32x4_t maskxN;

EDGE_SIMD_INLINE f32xN vf_load(const float *p) { return vld1q_f32(p); }
EDGE_SIMD_INLINE f32xN vf_loadu(const float *p) { return vld1q_f32(p); }
EDGE_SIMD_INLINE void vf_store(float *p, f32xN v) { vst1q_f32(p, v); }
EDGE_SIMD_INLINE void vf_storeu(float *p, f32xN v) { vst1q_f32(p, v); }
EDGE_SIMD_INLINE f32xN vf_load_partial(const float *p, size_t n) {
  float lanes[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  memcpy(lanes, p, n * sizeof(float));
  return vld1q_f32(lanes);
}
EDGE_SIMD_INLINE void vf_store_partial(float *p, f32xN v, size_t n) {
  float lanes[4];
  vst1q_f32(lanes, v);
  memcpy(p, lanes, n * sizeof(float));
}
EDGE_SIMD_INLINE f32xN vf_set1(float x) { return vdupq_n_f32(x); }
EDGE_SIMD_INLINE f32xN vf_zero(void) { return vdupq_n_f32(0.0f); }
EDGE_SIMD_INLINE f32xN vf_add(f32xN a, f32xN b) { return vaddq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_sub(f32xN a, f32xN b) { return vsubq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_mul(f32xN a, f32xN b) { return vmulq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_div(f32xN a, f32xN b) { return vdivq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_fma(f32xN a, f32xN b, f32xN c) { return vfmaq_f32(c, a, b); }
/* a * x[lane] + c, fused (lane a constant 0..3): the GEMM tiles load 4 values of A at once. */
#define EDGE_SIMD_HAS_FMA_LANE 1
#define vf_fma_lane(a, x, lane, c) vfmaq_laneq_f32((c), (a), (x), (lane))
EDGE_SIMD_INLINE f32xN vf_fnma(f32xN a, f32xN b, f32xN c) { return vfmsq_f32(c, a, b); }
EDGE_SIMD_INLINE f32xN vf_max(f32xN a, f32xN b) { return vmaxq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_min(f32xN a, f32xN b) { return vminq_f32(a, b); }
EDGE_SIMD_INLINE f32xN vf_sqrt(f32xN a) { return vsqrtq_f32(a); }
EDGE_SIMD_INLINE i32xN vf_as_i32(f32xN a) { return vreinterpretq_s32_f32(a); }
EDGE_SIMD_INLINE f32xN vi_as_f32(i32xN a) { return vreinterpretq_f32_s32(a); }
EDGE_SIMD_INLINE i32xN vi_set1(int32_t x) { return vdupq_n_s32(x); }
EDGE_SIMD_INLINE i32xN vi_add(i32xN a, i32xN b) { return vaddq_s32(a, b); }
EDGE_SIMD_INLINE i32xN vi_sub(i32xN a, i32xN b) { return vsubq_s32(a, b); }
EDGE_SIMD_INLINE i32xN vi_and(i32xN a, i32xN b) { return vandq_s32(a, b); }
EDGE_SIMD_INLINE i32xN vi_or(i32xN a, i32xN b) { return vorrq_s32(a, b); }
EDGE_SIMD_INLINE i32xN vi_xor(i32xN a, i32xN b) { return veorq_s32(a, b); }
#define vi_shl(a, bits) vshlq_n_s32((a), (bits))
#define vi_sra(a, bits) vshrq_n_s32((a), (bits))
#define vi_srl(a, bits) vreinterpretq_s32_u32(vshrq_n_u32(vreinterpretq_u32_s32(a), (bits)))
EDGE_SIMD_INLINE i32xN vf_round_i32(f32xN a) { return vcvtnq_s32_f32(a); }
EDGE_SIMD_INLINE i32xN vf_trunc_i32(f32xN a) { return vcvtq_s32_f32(a); }
EDGE_SIMD_INLINE f32xN vi_to_f32(i32xN a) { return vcvtq_f32_s32(a); }
EDGE_SIMD_INLINE maskxN vf_lt(f32xN a, f32xN b) { return vcltq_f32(a, b); }
EDGE_SIMD_INLINE maskxN vf_le(f32xN a, f32xN b) { return vcleq_f32(a, b); }
EDGE_SIMD_INLINE maskxN vf_gt(f32xN a, f32xN b) { return vcgtq_f32(a, b); }
EDGE_SIMD_INLINE maskxN vf_ge(f32xN a, f32xN b) { return vcgeq_f32(a, b); }
EDGE_SIMD_INLINE maskxN vf_eq(f32xN a, f32xN b) { return vceqq_f32(a, b); }
EDGE_SIMD_INLINE maskxN vf_unord(f32xN a, f32xN b) {
  return vmvnq_u32(vandq_u32(vceqq_f32(a, a), vceqq_f32(b, b)));
}
EDGE_SIMD_INLINE f32xN vf_select(maskxN m, f32xN a, f32xN b) { return vbslq_f32(m, a, b); }
EDGE_SIMD_INLINE f32xN vf_nan_to_zero(f32xN a) {
  return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(a), vceqq_f32(a, a)));
}
EDGE_SIMD_INLINE maskxN vm_or(maskxN a, maskxN b) { return vorrq_u32(a, b); }
EDGE_SIMD_INLINE maskxN vm_and(maskxN a, maskxN b) { return vandq_u32(a, b); }
EDGE_SIMD_INLINE maskxN vm_none(void) { return vdupq_n_u32(0); }
EDGE_SIMD_INLINE int vm_any(maskxN m) { return vmaxvq_u32(m) != 0; }
EDGE_SIMD_INLINE float vf_reduce_add(f32xN a) {
  float32x2_t h = vadd_f32(vget_low_f32(a), vget_high_f32(a));
  return vget_lane_f32(h, 0) + vget_lane_f32(h, 1);
}
EDGE_SIMD_INLINE float vf_reduce_max(f32xN a) { return vmaxvq_f32(a); }
EDGE_SIMD_INLINE float vf_reduce_min(f32xN a) { return vminvq_f32(a); }

EDGE_SIMD_INLINE maskxN vm_first(size_t n) {
  static const uint32_t lanes[4] = {0, 1, 2, 3};
  return vcltq_u32(vld1q_u32(lanes), vdupq_n_u32((uint32_t)n));
}

/* int8 <-> int32 lanes and the 64-bit fixed-point sum of the int8 kernels. */
#define EDGE_SIMD_HAS_FIXED2 1
EDGE_SIMD_INLINE i32xN vi_loadu(const int32_t *p) { return vld1q_s32(p); }
EDGE_SIMD_INLINE void vi_storeu(int32_t *p, i32xN v) { vst1q_s32(p, v); }
EDGE_SIMD_INLINE i32xN vi_load_s8(const int8_t *p) {
  int32_t bytes;
  memcpy(&bytes, p, sizeof bytes);
  return vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes)))));
}
EDGE_SIMD_INLINE void vi_store_s8_sat(int8_t *p, i32xN v) {
  const int16x4_t words = vqmovn_s32(v);
  const int32_t bytes = vget_lane_s32(vreinterpret_s32_s8(vqmovn_s16(vcombine_s16(words, words))), 0);
  memcpy(p, &bytes, sizeof bytes);
}
EDGE_SIMD_INLINE void vi_store_s8_sat2(int8_t *p, i32xN v0, i32xN v1) {
  vst1_s8(p, vqmovn_s16(vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1))));
}
/* smull / smlal give exact 64-bit products; sshl by -s is the arithmetic right shift. */
typedef struct {
  int32x4_t ma, mb;
  int64x2_t round, shift, lo, hi;
} edge_simd_fixed2;
EDGE_SIMD_INLINE edge_simd_fixed2 vi_fixed2_prepare(int32_t ma, int32_t mb, int32_t shift, int64_t lo, int64_t hi) {
  return (edge_simd_fixed2){vdupq_n_s32(ma), vdupq_n_s32(mb), vdupq_n_s64((int64_t)1 << (shift - 1)),
                            vdupq_n_s64(-(int64_t)shift), vdupq_n_s64(lo), vdupq_n_s64(hi)};
}
EDGE_SIMD_INLINE int64x2_t edge_simd_clamp64(int64x2_t x, int64x2_t lo, int64x2_t hi) {
  x = vbslq_s64(vcgtq_s64(lo, x), lo, x);
  return vbslq_s64(vcgtq_s64(x, hi), hi, x);
}
EDGE_SIMD_INLINE i32xN vi_fixed2(i32xN a, i32xN b, const edge_simd_fixed2 *k) {
  int64x2_t low = vmlal_s32(vmull_s32(vget_low_s32(a), vget_low_s32(k->ma)), vget_low_s32(b), vget_low_s32(k->mb));
  int64x2_t high = vmlal_high_s32(vmull_high_s32(a, k->ma), b, k->mb);
  low = edge_simd_clamp64(vshlq_s64(vaddq_s64(low, k->round), k->shift), k->lo, k->hi);
  high = edge_simd_clamp64(vshlq_s64(vaddq_s64(high, k->round), k->shift), k->lo, k->hi);
  return vcombine_s32(vmovn_s64(low), vmovn_s64(high));
}
EDGE_SIMD_INLINE i32xN vi_fixed1(i32xN a, const edge_simd_fixed2 *k) {
  int64x2_t low = vmull_s32(vget_low_s32(a), vget_low_s32(k->ma)), high = vmull_high_s32(a, k->ma);
  low = edge_simd_clamp64(vshlq_s64(vaddq_s64(low, k->round), k->shift), k->lo, k->hi);
  high = edge_simd_clamp64(vshlq_s64(vaddq_s64(high, k->round), k->shift), k->lo, k->hi);
  return vcombine_s32(vmovn_s64(low), vmovn_s64(high));
}
#define EDGE_SIMD_HAS_MULLO 1
EDGE_SIMD_INLINE i32xN vi_mullo(i32xN a, i32xN b) { return vmulq_s32(a, b); }
EDGE_SIMD_INLINE i32xN vi_gt(i32xN a, i32xN b) { return vreinterpretq_s32_u32(vcgtq_s32(a, b)); }

#elif defined(EDGE_SIMD_ISA_SCALAR)

#include <math.h>
#define EDGE_SIMD_N 1
#define EDGE_SIMD_SUFFIX __scalar
typedef float f32xN;
typedef int32_t i32xN;
typedef int maskxN;

EDGE_SIMD_INLINE f32xN vf_load(const float *p) { return *p; }
EDGE_SIMD_INLINE f32xN vf_loadu(const float *p) { return *p; }
EDGE_SIMD_INLINE void vf_store(float *p, f32xN v) { *p = v; }
EDGE_SIMD_INLINE void vf_storeu(float *p, f32xN v) { *p = v; }
/* With one lane there is never a partial vector; these keep kernels' tail code compiling. */
EDGE_SIMD_INLINE f32xN vf_load_partial(const float *p, size_t n) { return n ? *p : 0.0f; }
EDGE_SIMD_INLINE void vf_store_partial(float *p, f32xN v, size_t n) {
  if (n) *p = v;
}
EDGE_SIMD_INLINE f32xN vf_set1(float x) { return x; }
EDGE_SIMD_INLINE f32xN vf_zero(void) { return 0.0f; }
EDGE_SIMD_INLINE f32xN vf_add(f32xN a, f32xN b) { return a + b; }
EDGE_SIMD_INLINE f32xN vf_sub(f32xN a, f32xN b) { return a - b; }
EDGE_SIMD_INLINE f32xN vf_mul(f32xN a, f32xN b) { return a * b; }
EDGE_SIMD_INLINE f32xN vf_div(f32xN a, f32xN b) { return a / b; }
EDGE_SIMD_INLINE f32xN vf_fma(f32xN a, f32xN b, f32xN c) { return a * b + c; }
EDGE_SIMD_INLINE f32xN vf_fnma(f32xN a, f32xN b, f32xN c) { return c - a * b; }
EDGE_SIMD_INLINE f32xN vf_max(f32xN a, f32xN b) { return a > b ? a : b; }
EDGE_SIMD_INLINE f32xN vf_min(f32xN a, f32xN b) { return a < b ? a : b; }
EDGE_SIMD_INLINE f32xN vf_sqrt(f32xN a) { return sqrtf(a); }
EDGE_SIMD_INLINE i32xN vf_as_i32(f32xN a) {
  i32xN r;
  memcpy(&r, &a, sizeof r);
  return r;
}
EDGE_SIMD_INLINE f32xN vi_as_f32(i32xN a) {
  f32xN r;
  memcpy(&r, &a, sizeof r);
  return r;
}
EDGE_SIMD_INLINE i32xN vi_set1(int32_t x) { return x; }
EDGE_SIMD_INLINE i32xN vi_add(i32xN a, i32xN b) { return (int32_t)((uint32_t)a + (uint32_t)b); }
EDGE_SIMD_INLINE i32xN vi_sub(i32xN a, i32xN b) { return (int32_t)((uint32_t)a - (uint32_t)b); }
EDGE_SIMD_INLINE i32xN vi_and(i32xN a, i32xN b) { return a & b; }
EDGE_SIMD_INLINE i32xN vi_or(i32xN a, i32xN b) { return a | b; }
EDGE_SIMD_INLINE i32xN vi_xor(i32xN a, i32xN b) { return a ^ b; }
#define vi_shl(a, bits) ((int32_t)((uint32_t)(a) << (bits)))
/* Arithmetic shift written so it does not depend on the compiler's choice for negative values. */
#define vi_sra(a, bits) ((a) < 0 ? ~(int32_t)(~(uint32_t)(a) >> (bits)) : (int32_t)((uint32_t)(a) >> (bits)))
#define vi_srl(a, bits) ((int32_t)((uint32_t)(a) >> (bits)))
EDGE_SIMD_INLINE i32xN vf_round_i32(f32xN a) { return (int32_t)lrintf(a); }
EDGE_SIMD_INLINE i32xN vf_trunc_i32(f32xN a) { return (int32_t)a; }
EDGE_SIMD_INLINE f32xN vi_to_f32(i32xN a) { return (float)a; }
EDGE_SIMD_INLINE maskxN vf_lt(f32xN a, f32xN b) { return a < b; }
EDGE_SIMD_INLINE maskxN vf_le(f32xN a, f32xN b) { return a <= b; }
EDGE_SIMD_INLINE maskxN vf_gt(f32xN a, f32xN b) { return a > b; }
EDGE_SIMD_INLINE maskxN vf_ge(f32xN a, f32xN b) { return a >= b; }
EDGE_SIMD_INLINE maskxN vf_eq(f32xN a, f32xN b) { return a == b; }
EDGE_SIMD_INLINE maskxN vf_unord(f32xN a, f32xN b) { return a != a || b != b; }
EDGE_SIMD_INLINE f32xN vf_nan_to_zero(f32xN a) { return a != a ? 0.0f : a; }
EDGE_SIMD_INLINE f32xN vf_select(maskxN m, f32xN a, f32xN b) { return m ? a : b; }
EDGE_SIMD_INLINE maskxN vm_or(maskxN a, maskxN b) { return a | b; }
EDGE_SIMD_INLINE maskxN vm_and(maskxN a, maskxN b) { return a & b; }
EDGE_SIMD_INLINE maskxN vm_none(void) { return 0; }
EDGE_SIMD_INLINE int vm_any(maskxN m) { return m != 0; }
EDGE_SIMD_INLINE float vf_reduce_add(f32xN a) { return a; }
EDGE_SIMD_INLINE float vf_reduce_max(f32xN a) { return a; }
EDGE_SIMD_INLINE float vf_reduce_min(f32xN a) { return a; }

EDGE_SIMD_INLINE maskxN vm_first(size_t n) { return n > 0; }

/* int8 <-> int32 lanes. */
EDGE_SIMD_INLINE i32xN vi_loadu(const int32_t *p) { return *p; }
EDGE_SIMD_INLINE void vi_storeu(int32_t *p, i32xN v) { *p = v; }
EDGE_SIMD_INLINE i32xN vi_load_s8(const int8_t *p) { return *p; }
EDGE_SIMD_INLINE void vi_store_s8_sat(int8_t *p, i32xN v) { *p = (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v)); }
EDGE_SIMD_INLINE void vi_store_s8_sat2(int8_t *p, i32xN v0, i32xN v1) {
  vi_store_s8_sat(p, v0);
  vi_store_s8_sat(p + 1, v1);
}
EDGE_SIMD_INLINE i32xN vi_gt(i32xN a, i32xN b) { return -(int32_t)(a > b); }

#else
#error "define one of EDGE_SIMD_ISA_SCALAR, _SSE2, _AVX2, _AVX512, _NEON before including simd.h"
#endif

/* Int16 pair words of the int8 kernels, a fixed 16 int16 / 8 int32 lanes on every ISA (what an
 * int8 matmul panel row of 8 columns x 2 k holds, whatever EDGE_SIMD_N is):
 *   i16x16, i32x8              16 int16 lanes, 8 int32 lanes
 *   vw_load_s8(p, zp)          p[0..16) sign-extended, minus zp
 *   vw_zip_s8(r0, r1, zp)      r0[j] - zp and r1[j] - zp interleaved, j < 8
 *   vw_storeu(p, v)            writes p[0..16)
 *   vw_set1(x), vw_zero()      16 copies of x; 8 zero int32
 *   vw_madd(acc, a, b)         acc[j] + a[2j] b[2j] + a[2j+1] b[2j+1], exact when that fits int32
 *   i16x16p, vw_load_pairs(p)  8 (k, k + 1) pairs of int16 at p, laid out for vw_madd_pair
 *   vw_madd_pair(acc, q, w)    acc[j] + q[0] w[2j] + q[1] w[2j+1] (q: two int16 at any address)
 *   vw_store_i32(p, v)         writes p[0..8)
 * AVX2 and AVX-512 (the 256-bit half of the latter) run vpmaddwd; SSE2 the same on two halves;
 * NEON smull + addp, and for the pairs smlal by lane on weights split in their k rows (ld2).
 *
 * A byte table lookup, where EDGE_SIMD_HAS_LUT8 is defined: t = vb_lut8_prepare(table) takes a
 * 256-byte table, vb_lut8(&t, x, y) writes y[i] = table[x[i] + 128] for i < EDGE_SIMD_LUT8_BYTES.
 * AVX2 / AVX-512 (32 bytes; a 64-byte vpermb needs VBMI, which the avx512 level does not require):
 * the index u = x ^ 0x80 splits into a high nibble h (which 16-entry slice) and a low nibble l;
 * vpshufb looks l up in all 16 slices (its index has bit 7 clear, so no lane is zeroed), then a tree
 * of 15 vpblendvb picks slice h: level b selects by bit b of h, moved to each byte's sign bit by a
 * 16-bit shift (a byte's bit 7 after shifting its word left by s is its own bit 7 - s, whichever
 * half of the word it is). NEON (16 bytes): four 64-byte tables through tbl/tbx (an index past a
 * table leaves tbx's lane alone), the index stepped down by 64 per table. SSE2 has no byte shuffle. */
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)

typedef __m256i i16x16;
typedef __m256i i16x16p;
typedef __m256i i32x8;
EDGE_SIMD_INLINE i16x16 vw_load_s8(const int8_t *p, int16_t zp) {
  return _mm256_sub_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)), _mm256_set1_epi16(zp));
}
EDGE_SIMD_INLINE i16x16 vw_zip_s8(const int8_t *r0, const int8_t *r1, int16_t zp) {
  const __m128i z = _mm_set1_epi16(zp);
  const __m128i a = _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)r0)), z);
  const __m128i b = _mm_sub_epi16(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)r1)), z);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_unpacklo_epi16(a, b)), _mm_unpackhi_epi16(a, b), 1);
}
EDGE_SIMD_INLINE void vw_storeu(int16_t *p, i16x16 v) { _mm256_storeu_si256((__m256i *)p, v); }
EDGE_SIMD_INLINE i16x16 vw_set1(int16_t x) { return _mm256_set1_epi16(x); }
EDGE_SIMD_INLINE i32x8 vw_zero(void) { return _mm256_setzero_si256(); }
EDGE_SIMD_INLINE i32x8 vw_madd(i32x8 acc, i16x16 a, i16x16 b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
EDGE_SIMD_INLINE i16x16p vw_load_pairs(const int16_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
EDGE_SIMD_INLINE i32x8 vw_madd_pair(i32x8 acc, const int16_t *q, i16x16p w) {
  int32_t pair;
  memcpy(&pair, q, sizeof pair);
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_set1_epi32(pair), w));
}
EDGE_SIMD_INLINE void vw_store_i32(int32_t *p, i32x8 v) { _mm256_storeu_si256((__m256i *)p, v); }

#define EDGE_SIMD_HAS_LUT8 1
#define EDGE_SIMD_LUT8_BYTES 32
typedef struct {
  __m256i slice[16];
} edge_simd_lut8;
EDGE_SIMD_INLINE edge_simd_lut8 vb_lut8_prepare(const int8_t *table) {
  edge_simd_lut8 t;
  for (int s = 0; s < 16; ++s) t.slice[s] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + 16 * s)));
  return t;
}
EDGE_SIMD_INLINE void vb_lut8(const edge_simd_lut8 *t, const int8_t *x, int8_t *y) {
  const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x), _mm256_set1_epi8((char)0x80));
  const __m256i l = _mm256_and_si256(u, _mm256_set1_epi8(0x0F));
  __m256i r[16];
  for (int s = 0; s < 16; ++s) r[s] = _mm256_shuffle_epi8(t->slice[s], l);
  const __m256i bit0 = _mm256_slli_epi16(u, 3); /* bit 4 of u (h's bit 0) to bit 7 */
  for (int s = 0; s < 8; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit0);
  const __m256i bit1 = _mm256_slli_epi16(u, 2);
  for (int s = 0; s < 4; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit1);
  const __m256i bit2 = _mm256_slli_epi16(u, 1);
  for (int s = 0; s < 2; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit2);
  _mm256_storeu_si256((__m256i *)y, _mm256_blendv_epi8(r[0], r[1], u));
}

#elif defined(EDGE_SIMD_ISA_SSE2)

typedef struct {
  __m128i lo, hi;
} i16x16;
typedef i16x16 i16x16p;
typedef i16x16 i32x8;
/* Bytes 0..7 / 8..15 of v sign-extended to int16 (unpack with itself, arithmetic shift by 8). */
EDGE_SIMD_INLINE __m128i edge_simd_widen_lo(__m128i v) { return _mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8); }
EDGE_SIMD_INLINE __m128i edge_simd_widen_hi(__m128i v) { return _mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8); }
EDGE_SIMD_INLINE i16x16 vw_load_s8(const int8_t *p, int16_t zp) {
  const __m128i v = _mm_loadu_si128((const __m128i *)p), z = _mm_set1_epi16(zp);
  return (i16x16){_mm_sub_epi16(edge_simd_widen_lo(v), z), _mm_sub_epi16(edge_simd_widen_hi(v), z)};
}
EDGE_SIMD_INLINE i16x16 vw_zip_s8(const int8_t *r0, const int8_t *r1, int16_t zp) {
  const __m128i z = _mm_set1_epi16(zp);
  const __m128i a = _mm_sub_epi16(edge_simd_widen_lo(_mm_loadl_epi64((const __m128i *)r0)), z);
  const __m128i b = _mm_sub_epi16(edge_simd_widen_lo(_mm_loadl_epi64((const __m128i *)r1)), z);
  return (i16x16){_mm_unpacklo_epi16(a, b), _mm_unpackhi_epi16(a, b)};
}
EDGE_SIMD_INLINE void vw_storeu(int16_t *p, i16x16 v) {
  _mm_storeu_si128((__m128i *)p, v.lo);
  _mm_storeu_si128((__m128i *)(p + 8), v.hi);
}
EDGE_SIMD_INLINE i16x16 vw_set1(int16_t x) { return (i16x16){_mm_set1_epi16(x), _mm_set1_epi16(x)}; }
EDGE_SIMD_INLINE i32x8 vw_zero(void) { return (i32x8){_mm_setzero_si128(), _mm_setzero_si128()}; }
EDGE_SIMD_INLINE i32x8 vw_madd(i32x8 acc, i16x16 a, i16x16 b) {
  return (i32x8){_mm_add_epi32(acc.lo, _mm_madd_epi16(a.lo, b.lo)), _mm_add_epi32(acc.hi, _mm_madd_epi16(a.hi, b.hi))};
}
EDGE_SIMD_INLINE i16x16p vw_load_pairs(const int16_t *p) {
  return (i16x16p){_mm_loadu_si128((const __m128i *)p), _mm_loadu_si128((const __m128i *)(p + 8))};
}
EDGE_SIMD_INLINE i32x8 vw_madd_pair(i32x8 acc, const int16_t *q, i16x16p w) {
  int32_t pair;
  memcpy(&pair, q, sizeof pair);
  const __m128i x = _mm_set1_epi32(pair);
  return (i32x8){_mm_add_epi32(acc.lo, _mm_madd_epi16(x, w.lo)), _mm_add_epi32(acc.hi, _mm_madd_epi16(x, w.hi))};
}
EDGE_SIMD_INLINE void vw_store_i32(int32_t *p, i32x8 v) {
  _mm_storeu_si128((__m128i *)p, v.lo);
  _mm_storeu_si128((__m128i *)(p + 4), v.hi);
}

#elif defined(EDGE_SIMD_ISA_NEON)

typedef int16x8x2_t i16x16;  /* lanes 0..7, 8..15 */
typedef int16x8x2_t i16x16p; /* val[0]: the k of each pair, val[1]: the k + 1 */
typedef int32x4x2_t i32x8;
EDGE_SIMD_INLINE i16x16 vw_load_s8(const int8_t *p, int16_t zp) {
  const int8x16_t v = vld1q_s8(p);
  const int16x8_t z = vdupq_n_s16(zp);
  return (i16x16){{vsubq_s16(vmovl_s8(vget_low_s8(v)), z), vsubq_s16(vmovl_high_s8(v), z)}};
}
EDGE_SIMD_INLINE i16x16 vw_zip_s8(const int8_t *r0, const int8_t *r1, int16_t zp) {
  const int16x8_t z = vdupq_n_s16(zp);
  const int16x8_t a = vsubq_s16(vmovl_s8(vld1_s8(r0)), z), b = vsubq_s16(vmovl_s8(vld1_s8(r1)), z);
  return (i16x16){{vzip1q_s16(a, b), vzip2q_s16(a, b)}};
}
EDGE_SIMD_INLINE void vw_storeu(int16_t *p, i16x16 v) { vst1q_s16_x2(p, v); }
EDGE_SIMD_INLINE i16x16 vw_set1(int16_t x) { return (i16x16){{vdupq_n_s16(x), vdupq_n_s16(x)}}; }
EDGE_SIMD_INLINE i32x8 vw_zero(void) { return (i32x8){{vdupq_n_s32(0), vdupq_n_s32(0)}}; }
EDGE_SIMD_INLINE int32x4_t edge_simd_madd_half(int16x8_t a, int16x8_t b) {
  return vpaddq_s32(vmull_s16(vget_low_s16(a), vget_low_s16(b)), vmull_high_s16(a, b));
}
EDGE_SIMD_INLINE i32x8 vw_madd(i32x8 acc, i16x16 a, i16x16 b) {
  return (i32x8){{vaddq_s32(acc.val[0], edge_simd_madd_half(a.val[0], b.val[0])),
                  vaddq_s32(acc.val[1], edge_simd_madd_half(a.val[1], b.val[1]))}};
}
EDGE_SIMD_INLINE i16x16p vw_load_pairs(const int16_t *p) { return vld2q_s16(p); }
EDGE_SIMD_INLINE i32x8 vw_madd_pair(i32x8 acc, const int16_t *q, i16x16p w) {
  int32_t pair;
  memcpy(&pair, q, sizeof pair);
  const int16x4_t x = vreinterpret_s16_s32(vdup_n_s32(pair)); /* lanes q[0], q[1], q[0], q[1] */
  int32x4_t lo = vmlal_lane_s16(acc.val[0], vget_low_s16(w.val[0]), x, 0);
  int32x4_t hi = vmlal_lane_s16(acc.val[1], vget_high_s16(w.val[0]), x, 0);
  lo = vmlal_lane_s16(lo, vget_low_s16(w.val[1]), x, 1);
  hi = vmlal_lane_s16(hi, vget_high_s16(w.val[1]), x, 1);
  return (i32x8){{lo, hi}};
}
EDGE_SIMD_INLINE void vw_store_i32(int32_t *p, i32x8 v) { vst1q_s32_x2(p, v); }

#define EDGE_SIMD_HAS_LUT8 1
#define EDGE_SIMD_LUT8_BYTES 16
typedef struct {
  int8x16x4_t part[4];
} edge_simd_lut8;
EDGE_SIMD_INLINE edge_simd_lut8 vb_lut8_prepare(const int8_t *table) {
  return (edge_simd_lut8){{vld1q_s8_x4(table), vld1q_s8_x4(table + 64), vld1q_s8_x4(table + 128), vld1q_s8_x4(table + 192)}};
}
EDGE_SIMD_INLINE void vb_lut8(const edge_simd_lut8 *t, const int8_t *x, int8_t *y) {
  const uint8x16_t step = vdupq_n_u8(64);
  uint8x16_t u = veorq_u8(vreinterpretq_u8_s8(vld1q_s8(x)), vdupq_n_u8(0x80));
  int8x16_t r = vqtbl4q_s8(t->part[0], u);
  u = vsubq_u8(u, step);
  r = vqtbx4q_s8(r, t->part[1], u);
  u = vsubq_u8(u, step);
  r = vqtbx4q_s8(r, t->part[2], u);
  u = vsubq_u8(u, step);
  r = vqtbx4q_s8(r, t->part[3], u);
  vst1q_s8(y, r);
}

#else /* scalar */

typedef struct {
  int16_t v[16];
} i16x16;
typedef i16x16 i16x16p;
typedef struct {
  int32_t v[8];
} i32x8;
EDGE_SIMD_INLINE i16x16 vw_load_s8(const int8_t *p, int16_t zp) {
  i16x16 r;
  for (int j = 0; j < 16; ++j) r.v[j] = (int16_t)(p[j] - zp);
  return r;
}
EDGE_SIMD_INLINE i16x16 vw_zip_s8(const int8_t *r0, const int8_t *r1, int16_t zp) {
  i16x16 r;
  for (int j = 0; j < 8; ++j) {
    r.v[2 * j] = (int16_t)(r0[j] - zp);
    r.v[2 * j + 1] = (int16_t)(r1[j] - zp);
  }
  return r;
}
EDGE_SIMD_INLINE void vw_storeu(int16_t *p, i16x16 v) { memcpy(p, v.v, sizeof v.v); }
EDGE_SIMD_INLINE i16x16 vw_set1(int16_t x) {
  i16x16 r;
  for (int j = 0; j < 16; ++j) r.v[j] = x;
  return r;
}
EDGE_SIMD_INLINE i32x8 vw_zero(void) { return (i32x8){{0}}; }
EDGE_SIMD_INLINE i32x8 vw_madd(i32x8 acc, i16x16 a, i16x16 b) {
  for (int j = 0; j < 8; ++j) acc.v[j] += (int32_t)a.v[2 * j] * b.v[2 * j] + (int32_t)a.v[2 * j + 1] * b.v[2 * j + 1];
  return acc;
}
EDGE_SIMD_INLINE i16x16p vw_load_pairs(const int16_t *p) {
  i16x16p r;
  memcpy(r.v, p, sizeof r.v);
  return r;
}
EDGE_SIMD_INLINE i32x8 vw_madd_pair(i32x8 acc, const int16_t *q, i16x16p w) {
  for (int j = 0; j < 8; ++j) acc.v[j] += (int32_t)q[0] * w.v[2 * j] + (int32_t)q[1] * w.v[2 * j + 1];
  return acc;
}
EDGE_SIMD_INLINE void vw_store_i32(int32_t *p, i32x8 v) { memcpy(p, v.v, sizeof v.v); }

#endif

/* 16 int8 lanes as a GCC/Clang generic vector on every ISA, and their lane-wise maximum: pmaxsb
 * (SSE4.1, so avx2 and avx512) or smax (NEON) where the ISA has one, a compare and select elsewhere. */
typedef int8_t edge_simd_s8x16 __attribute__((vector_size(16)));
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
EDGE_SIMD_INLINE edge_simd_s8x16 vb_max16(edge_simd_s8x16 a, edge_simd_s8x16 b) {
  return (edge_simd_s8x16)_mm_max_epi8((__m128i)a, (__m128i)b);
}
#elif defined(EDGE_SIMD_ISA_NEON)
EDGE_SIMD_INLINE edge_simd_s8x16 vb_max16(edge_simd_s8x16 a, edge_simd_s8x16 b) {
  return (edge_simd_s8x16)vmaxq_s8((int8x16_t)a, (int8x16_t)b);
}
#else
EDGE_SIMD_INLINE edge_simd_s8x16 vb_max16(edge_simd_s8x16 a, edge_simd_s8x16 b) {
  const edge_simd_s8x16 m = a > b;
  return (a & m) | (b & ~m);
}
#endif

/* Derived operations, the same on every ISA. */
EDGE_SIMD_INLINE f32xN vf_abs(f32xN a) { return vi_as_f32(vi_and(vf_as_i32(a), vi_set1(0x7fffffff))); }
EDGE_SIMD_INLINE f32xN vf_neg(f32xN a) { return vi_as_f32(vi_xor(vf_as_i32(a), vi_set1((int32_t)0x80000000u))); }
/* a with the sign bit of s (s's magnitude ignored). */
EDGE_SIMD_INLINE f32xN vf_copysign(f32xN a, f32xN s) {
  i32xN sign = vi_and(vf_as_i32(s), vi_set1((int32_t)0x80000000u));
  return vi_as_f32(vi_or(vi_and(vf_as_i32(a), vi_set1(0x7fffffff)), sign));
}
/* lo <= x <= hi with NaN passed through (see vf_max / vf_min). */
EDGE_SIMD_INLINE f32xN vf_clamp(f32xN x, f32xN lo, f32xN hi) { return vf_min(hi, vf_max(lo, x)); }

#endif

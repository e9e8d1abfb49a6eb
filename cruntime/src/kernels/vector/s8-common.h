/* GCC/Clang generic vectors for the int8 kernels of kernels/vector/s8-*.c. simd.h's vocabulary is
 * float32 / int32 lanes; int8 data wants 16/64 byte lanes and widening, which these portable vector
 * types give on every ISA (each file is compiled once per ISA, so the same source lowers to SSE2,
 * AVX2, AVX-512BW or NEON instructions). All arithmetic here is integer or exactly representable,
 * so every ISA gives the scalar reference's bytes. Loads and stores go through memcpy: no
 * alignment is assumed. */
#ifndef EDGE_KERNELS_VECTOR_S8_COMMON_H
#define EDGE_KERNELS_VECTOR_S8_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#endif

/* The baseline objects of these files (sse2, neon) pass 64-byte vectors between inline functions
 * only; GCC's note that such a signature would differ under AVX-512 is no concern here. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int8_t edge_s8x64 __attribute__((vector_size(64)));
typedef int8_t edge_s8x16 __attribute__((vector_size(16)));
typedef int32_t edge_i32x16 __attribute__((vector_size(64)));
typedef int64_t edge_i64x16 __attribute__((vector_size(128)));
typedef float edge_f32x16 __attribute__((vector_size(64)));

#define EDGE_S8_INLINE static inline __attribute__((always_inline))

EDGE_S8_INLINE edge_s8x64 s8x64_load(const int8_t *p) { edge_s8x64 v; memcpy(&v, p, sizeof v); return v; }
EDGE_S8_INLINE void s8x64_store(int8_t *p, edge_s8x64 v) { memcpy(p, &v, sizeof v); }
EDGE_S8_INLINE edge_s8x16 s8x16_load(const int8_t *p) { edge_s8x16 v; memcpy(&v, p, sizeof v); return v; }
EDGE_S8_INLINE void s8x16_store(int8_t *p, edge_s8x16 v) { memcpy(p, &v, sizeof v); }
EDGE_S8_INLINE edge_i32x16 i32x16_load(const int32_t *p) { edge_i32x16 v; memcpy(&v, p, sizeof v); return v; }
EDGE_S8_INLINE void i32x16_store(int32_t *p, edge_i32x16 v) { memcpy(p, &v, sizeof v); }
EDGE_S8_INLINE edge_f32x16 f32x16_load(const float *p) { edge_f32x16 v; memcpy(&v, p, sizeof v); return v; }

/* Lane-wise max / min through a compare mask (vector ?: is C++ only). */
EDGE_S8_INLINE edge_s8x64 s8x64_max(edge_s8x64 a, edge_s8x64 b) { edge_s8x64 m = a > b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_s8x64 s8x64_min(edge_s8x64 a, edge_s8x64 b) { edge_s8x64 m = a < b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_s8x16 s8x16_max(edge_s8x16 a, edge_s8x16 b) { edge_s8x16 m = a > b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_s8x16 s8x16_min(edge_s8x16 a, edge_s8x16 b) { edge_s8x16 m = a < b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_i32x16 i32x16_clamp(edge_i32x16 v, int32_t lo, int32_t hi) {
  edge_i32x16 m = v < lo;
  v = (v & ~m) | (lo & m);
  m = v > hi;
  return (v & ~m) | (hi & m);
}
EDGE_S8_INLINE edge_i64x16 i64x16_clamp(edge_i64x16 v, int64_t lo, int64_t hi) {
  edge_i64x16 m = v < lo;
  v = (v & ~m) | (lo & m);
  m = v > hi;
  return (v & ~m) | (hi & m);
}

/* The float -> int8 rounding step shared by quantization and requantizing kernels: for an
 * already scaled value v, clamp(zp + nearbyint(v), -128, 127), NaN -> zp. v is first clamped to
 * [-256, 256], which changes no result (zp + 256 > 127 and zp - 256 < -128 saturate either way)
 * and keeps the rounding exact: adding and subtracting 1.5 * 2^23 rounds ties to even for
 * |v| <= 2^22 under the default rounding mode, the mode nearbyint uses too. */
EDGE_S8_INLINE int8_t s8_round_scaled(float v, int32_t zp) {
  if (v != v) v = 0.0f;
  if (v > 256.0f) v = 256.0f;
  if (v < -256.0f) v = -256.0f;
  int32_t q = zp + (int32_t)nearbyintf(v);
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

EDGE_S8_INLINE edge_s8x16 f32x16_round_scaled(edge_f32x16 v, int32_t zp) {
  const float magic = 12582912.0f; /* 1.5 * 2^23 */
  edge_i32x16 bits = (edge_i32x16)v & (v == v); /* NaN -> +0 */
  v = (edge_f32x16)bits;
  edge_i32x16 above = v > 256.0f, below = v < -256.0f;
  bits = (bits & ~above) | ((edge_i32x16)((edge_f32x16){0} + 256.0f) & above);
  bits = (bits & ~below) | ((edge_i32x16)((edge_f32x16){0} - 256.0f) & below);
  v = (edge_f32x16)bits;
  v = (v + magic) - magic;
  return __builtin_convertvector(i32x16_clamp(__builtin_convertvector(v, edge_i32x16) + zp, -128, 127), edge_s8x16);
}

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
/* The same step on x86, eight lanes: NaN -> +0, clamp to [-256, 256], round by cvtps2dq (the
 * current rounding mode, nearbyint's), add zp; the int8 clamp is left to s8_store_rounded16. */
EDGE_S8_INLINE __m256i m256_round_scaled(__m256 v, __m256i zp) {
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-256.0f)), _mm256_set1_ps(256.0f));
  return _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
}

/* Stores 16 lanes of m256_round_scaled: |q| <= 256 + 128, so the int16 packing is exact and the
 * saturating int8 packing is the clamp to [-128, 127]. */
EDGE_S8_INLINE void s8_store_rounded16(int8_t *y, __m256i q0, __m256i q1) {
  __m256i words = _mm256_permute4x64_epi64(_mm256_packs_epi32(q0, q1), 0xD8);
  __m256i bytes = _mm256_packs_epi16(words, words);
  _mm_storeu_si128((__m128i *)y, _mm_unpacklo_epi64(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1)));
}
#endif

#endif

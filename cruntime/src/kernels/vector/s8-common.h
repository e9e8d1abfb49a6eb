/* What the int8 kernels of kernels/vector/s8-*.c share beyond simd.h: byte vectors of 16 and 64
 * lanes as GCC/Clang generic vectors (max pooling and the softmax row max want more byte lanes than
 * simd.h's int32 vectors hold; each file is compiled once per ISA, so the same source lowers to
 * SSE2, AVX2, AVX-512BW or NEON instructions), and the float -> int8 rounding step, per element and
 * on simd.h's lanes. All byte arithmetic here is exact, so every ISA gives the scalar reference's
 * bytes. Loads and stores go through memcpy: no alignment is assumed. */
#ifndef EDGE_KERNELS_VECTOR_S8_COMMON_H
#define EDGE_KERNELS_VECTOR_S8_COMMON_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../simd.h"

/* The baseline objects of these files (sse2, neon) pass 64-byte vectors between inline functions
 * only; GCC's note that such a signature would differ under AVX-512 is no concern here. */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int8_t edge_s8x64 __attribute__((vector_size(64)));
typedef edge_simd_s8x16 edge_s8x16;

#define EDGE_S8_INLINE static inline __attribute__((always_inline))

EDGE_S8_INLINE edge_s8x64 s8x64_load(const int8_t *p) { edge_s8x64 v; memcpy(&v, p, sizeof v); return v; }
EDGE_S8_INLINE void s8x64_store(int8_t *p, edge_s8x64 v) { memcpy(p, &v, sizeof v); }
EDGE_S8_INLINE edge_s8x16 s8x16_load(const int8_t *p) { edge_s8x16 v; memcpy(&v, p, sizeof v); return v; }
EDGE_S8_INLINE void s8x16_store(int8_t *p, edge_s8x16 v) { memcpy(p, &v, sizeof v); }

/* Lane-wise max / min: simd.h's vb_max16 for 16 lanes, else through a compare mask (vector ?: is C++
 * only). */
EDGE_S8_INLINE edge_s8x64 s8x64_max(edge_s8x64 a, edge_s8x64 b) { edge_s8x64 m = a > b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_s8x64 s8x64_min(edge_s8x64 a, edge_s8x64 b) { edge_s8x64 m = a < b; return (a & m) | (b & ~m); }
EDGE_S8_INLINE edge_s8x16 s8x16_max(edge_s8x16 a, edge_s8x16 b) { return vb_max16(a, b); }
EDGE_S8_INLINE edge_s8x16 s8x16_min(edge_s8x16 a, edge_s8x16 b) { edge_s8x16 m = a < b; return (a & m) | (b & ~m); }
/* The largest of the 16 lanes: four halving steps (the upper half's lanes over the lower's). */
EDGE_S8_INLINE int8_t s8x16_reduce_max(edge_s8x16 v) {
  v = s8x16_max(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15));
  v = s8x16_max(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7));
  v = s8x16_max(v, __builtin_shufflevector(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3));
  v = s8x16_max(v, __builtin_shufflevector(v, v, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1));
  return v[0];
}

/* The float -> int8 rounding step shared by quantization and requantizing kernels: for an
 * already scaled value v, clamp(zp + nearbyint(v), -128, 127), NaN -> zp. v is first clamped to
 * [-256, 256], which changes no result (zp + 256 > 127 and zp - 256 < -128 saturate either way)
 * and keeps the rounded value well inside int32; nearbyint rounds ties to even under the default
 * rounding mode. */
EDGE_S8_INLINE int8_t s8_round_scaled(float v, int32_t zp) {
  if (v != v) v = 0.0f;
  if (v > 256.0f) v = 256.0f;
  if (v < -256.0f) v = -256.0f;
  int32_t q = zp + (int32_t)nearbyintf(v);
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

/* The same step on simd.h's lanes: NaN -> +0, clamp to [-256, 256], round to nearest even
 * (vf_round_i32: the default rounding mode, nearbyint's), add zp. The int8 clamp is left to the
 * saturating store (vi_store_s8_sat / _sat2): |result| <= 256 + 128. */
EDGE_S8_INLINE i32xN vi_round_scaled(f32xN v, i32xN zp) {
  return vi_add(vf_round_i32(vf_clamp(vf_nan_to_zero(v), vf_set1(-256.0f), vf_set1(256.0f))), zp);
}

#endif

/* GCC/Clang generic vectors for the int8 kernels of kernels/vector/s8-*.c. simd.h's vocabulary is
 * float32 / int32 lanes; int8 data wants 16/64 byte lanes and widening, which these portable vector
 * types give on every ISA (each file is compiled once per ISA, so the same source lowers to SSE2,
 * AVX2, AVX-512BW or NEON instructions). All arithmetic here is integer or exactly representable,
 * so every ISA gives the scalar reference's bytes. Loads and stores go through memcpy: no
 * alignment is assumed. */
#ifndef EDGE_KERNELS_VECTOR_S8_COMMON_H
#define EDGE_KERNELS_VECTOR_S8_COMMON_H

#include <stdint.h>
#include <string.h>

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

#endif

/* int32 accumulators -> int8 (edge_s8_requantize_ukernel), requant.h's rule:
 *   y = clamp(zp + ((int64)acc * m + 2^(shift-1)) >> shift, lo, hi),   m > 0, 1 <= shift <= 62
 * exactly (|acc * m| < 2^62, so no step overflows). Where the ISA has a vector 32x32 -> 64-bit
 * product (EDGE_SIMD_HAS_FIXED2: avx2, avx512, neon), two vectors at a time: vi_fixed1 (simd.h)
 * computes the shifted value in exact 64-bit lanes and clamps it against lo - zp and hi - zp, so
 * after adding zp every lane is in [lo, hi] and the saturating store only narrows. SSE2, scalar and
 * the tails: the formula per element. */
#include "../vector.h"
#include "../simd.h"

void EDGE_SIMD_FN(s8_requantize)(size_t n, const int32_t *acc, int8_t *y, const edge_s8_requantize_params *p) {
  const int64_t rounding = (int64_t)1 << (p->shift - 1);
  const int64_t lo = (int64_t)p->lo - p->zero_point, hi = (int64_t)p->hi - p->zero_point;
  size_t i = 0;
#if defined(EDGE_SIMD_HAS_FIXED2)
  const edge_simd_fixed2 k = vi_fixed2_prepare(p->multiplier, 0, p->shift, lo, hi);
  const i32xN zp = vi_set1(p->zero_point);
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N)
    vi_store_s8_sat2(y + i, vi_add(vi_fixed1(vi_loadu(acc + i), &k), zp),
                     vi_add(vi_fixed1(vi_loadu(acc + i + EDGE_SIMD_N), &k), zp));
#endif
  for (; i < n; ++i) {
    int64_t v = ((int64_t)acc[i] * p->multiplier + rounding) >> p->shift;
    v = v < lo ? lo : (v > hi ? hi : v);
    y[i] = (int8_t)(v + p->zero_point);
  }
}

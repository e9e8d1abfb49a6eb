/* int8 ADD / SUB of two same-layout runs (edge_s8_vadd_ukernel), requant.h's add rule:
 *   y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(s-1)) >> s), lo, hi)
 * (mb already negated for SUB). EDGE_SIMD_N elements at a time: both inputs widened to int32
 * lanes, the sum in exact 64-bit lanes clamped to [lo - zp_y, hi - zp_y] (vi_fixed2, simd.h), so
 * the result is the scalar reference's exactly; the tail runs the same formula per element, and so
 * does every element where the ISA has no vector 64-bit product (sse2, scalar). */
#include "../vector.h"
#include "../simd.h"

static inline int8_t vadd_one(int8_t a, int8_t b, const edge_s8_vadd_params *p, int64_t rounding, int64_t lo,
                              int64_t hi) {
  int64_t sum = (int64_t)((int32_t)a - p->zp_a) * p->ma + (int64_t)((int32_t)b - p->zp_b) * p->mb + rounding;
  int64_t r = sum >> p->shift;
  r = r < lo ? lo : (r > hi ? hi : r);
  return (int8_t)(r + p->zp_y);
}

void EDGE_SIMD_FN(s8_vadd)(size_t n, const int8_t *a, const int8_t *b, int8_t *y, const edge_s8_vadd_params *p) {
  const int64_t rounding = (int64_t)1 << (p->shift - 1);
  const int64_t lo = (int64_t)p->lo - p->zp_y, hi = (int64_t)p->hi - p->zp_y;
  size_t i = 0;
#if defined(EDGE_SIMD_HAS_FIXED2)
  const edge_simd_fixed2 k = vi_fixed2_prepare(p->ma, p->mb, p->shift, lo, hi);
  const i32xN zp_a = vi_set1(p->zp_a), zp_b = vi_set1(p->zp_b), zp_y = vi_set1(p->zp_y);
  /* lanes are in [lo, hi] after the zero point: the saturating store only narrows */
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N)
    vi_store_s8_sat(y + i, vi_add(vi_fixed2(vi_sub(vi_load_s8(a + i), zp_a), vi_sub(vi_load_s8(b + i), zp_b), &k), zp_y));
#endif
  for (; i < n; ++i) y[i] = vadd_one(a[i], b[i], p, rounding, lo, hi);
}

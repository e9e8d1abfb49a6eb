/* int8 softmax of one contiguous row (edge_s8_softmax_ukernel), ops/qsoftmax.c's rule exactly:
 *   d = max - x,  L = lut[d],  S = sum of L over the row,
 *   y = clamp(-128 + floor((512 L + S) / (2 S)), -128, 127)
 * with n <= EDGE_S8_SOFTMAX_MAX_LENGTH, so S <= 2^28 and every step fits int32.
 *
 * Where the ISA multiplies int32 vectors (EDGE_SIMD_HAS_MULLO: avx2, avx512, neon) there is no
 * division per element: the quotient, an integer in [0, 256], is estimated in float32 as
 * num * (1 / den) (relative error below 2^-21, so the estimate's truncation is q - 1, q or q + 1)
 * and corrected with exact integer remainders: r = num - q den < 0 steps q down, r >= den steps it
 * up. The row max goes 16 bytes at a time (s8-common.h's byte vectors); the lookups are scalar
 * loads into a row buffer (on the AMD cores we measured, vpgatherdd was slower). SSE2 and scalar
 * run the rule's own loops (a row buffer and float estimates measured slower there), and every
 * ISA's tail the division itself. */
#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

static inline int8_t quotient_one(int32_t lut_value, int32_t sum, int32_t den) {
  int32_t q = (lut_value * 512 + sum) / den - 128;
  return (int8_t)(q > 127 ? 127 : q);
}

void EDGE_SIMD_FN(s8_softmax)(size_t n, const int8_t *x, int8_t *y, const int32_t *lut) {
#if !defined(EDGE_SIMD_HAS_MULLO)
  int32_t row_max = -128, total = 0;
  for (size_t k = 0; k < n; ++k) row_max = x[k] > row_max ? x[k] : row_max;
  for (size_t k = 0; k < n; ++k) total += lut[row_max - x[k]];
  for (size_t k = 0; k < n; ++k) y[k] = quotient_one(lut[row_max - x[k]], total, 2 * total);
#else
  size_t i = 0;
  int32_t max = -128;
  if (n >= 16) {
    edge_s8x16 m = s8x16_load(x);
    for (i = 16; i + 16 <= n; i += 16) m = s8x16_max(m, s8x16_load(x + i));
    max = s8x16_reduce_max(m);
  }
  for (; i < n; ++i) max = x[i] > max ? x[i] : max;
  int32_t values[EDGE_S8_SOFTMAX_MAX_LENGTH];
  int32_t sum = 0;
  for (i = 0; i < n; ++i) sum += values[i] = lut[max - x[i]];
  const int32_t den = 2 * sum;
  const i32xN vden = vi_set1(den), vden_less = vi_set1(den - 1), vsum = vi_set1(sum), bias = vi_set1(128);
  const f32xN inv = vf_set1(1.0f / (float)den);
  i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    const i32xN num = vi_add(vi_shl(vi_loadu(values + i), 9), vsum);
    i32xN q = vf_trunc_i32(vf_mul(vi_to_f32(num), inv));
    i32xN r = vi_sub(num, vi_mullo(q, vden));
    const i32xN low = vi_gt(vi_set1(0), r); /* -1: one too high */
    q = vi_add(q, low);
    r = vi_add(r, vi_and(vden, low));
    q = vi_sub(q, vi_gt(r, vden_less)); /* r >= den: one too low */
    vi_store_s8_sat(y + i, vi_sub(q, bias)); /* in [-128, 128]: the saturating store clamps 128 to 127 */
  }
  for (; i < n; ++i) y[i] = quotient_one(values[i], sum, den);
#endif
}

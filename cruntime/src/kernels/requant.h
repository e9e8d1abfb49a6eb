/* Fixed-point requantization: the one rounding rule every int8 kernel uses, bit for bit.
 *
 * A real multiplier M > 0 (computed in double from the float32 scales of the file) becomes an
 * int32 multiplier m in [2^30, 2^31) and a right shift 0 < shift < 63 with M ~= m * 2^-shift
 * (edge_quantize_multiplier). An int32 accumulator then maps to
 *     requantize(acc) = (int64(acc) * m + 2^(shift-1)) >> shift      (arithmetic shift)
 * i.e. acc * M rounded to nearest with halves going toward +infinity, computed exactly in 64 bits
 * (|acc * m| < 2^62, so the sum cannot overflow). The value is NOT narrowed to int32: with a small
 * shift it may exceed the int32 range, and the clamp below decides the output either way (SIMD
 * kernels clamp the 64-bit value, or narrow with saturation, which gives the same byte).
 *     y = clamp(zero_point + requantize(acc), qmin, qmax)
 * Every SIMD kernel is tested bit for bit against these inline functions. */
#ifndef EDGE_KERNELS_REQUANT_H
#define EDGE_KERNELS_REQUANT_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

/* (m, shift) for a real multiplier M:
 *   frac, exp = frexp(M); m = llround(frac * 2^31) (halves away from zero); if m == 2^31 then
 *   m = 2^30 and exp += 1; shift = 31 - exp.
 * M below 2^-32 gives m = 0, shift = 62 (every output is the zero point). Returns false (and
 * leaves the outputs 0, 0) when M is not finite, M <= 0, or M >= 2^30 (shift would be <= 0):
 * prepare rejects such a layer with a message naming it. */
bool edge_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift);

/* ADD/SUB of two int8 tensors (spec): one shared shift s, the largest in [1, 62] with
 * llround(max(Ma, Mb) * 2^s) < 2^31; ma = llround(Ma * 2^s), mb = llround(Mb * 2^s).
 * y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(s-1)) >> s)).
 * Returns false when Ma or Mb is not finite or negative, or no such s exists. */
bool edge_quantize_add_multipliers(double real_a, double real_b, int32_t *multiplier_a, int32_t *multiplier_b,
                                   int32_t *shift);

/* acc * M rounded half toward +infinity (exact; see above). shift in [1, 62]. */
static inline int64_t edge_requantize(int32_t acc, int32_t multiplier, int32_t shift) {
  return ((int64_t)acc * multiplier + ((int64_t)1 << (shift - 1))) >> shift;
}

static inline int32_t edge_clamp_int64(int64_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* The whole epilogue: clamp(zero_point + requantize(acc), qmin, qmax), -128 <= qmin <= qmax <= 127. */
static inline int8_t edge_requantize_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t zero_point,
                                        int32_t qmin, int32_t qmax) {
  return (int8_t)edge_clamp_int64(zero_point + edge_requantize(acc, multiplier, shift), qmin, qmax);
}

/* QUANTIZE (spec): q = clamp(zp + nearbyint(x * inv_scale), -128, 127), inv_scale = (float)(1.0f / s)
 * computed in float32 by the caller, the product rounded to float32 and then to an integer with
 * halves to even (the default rounding mode). NaN maps to the zero point. */
static inline int8_t edge_quantize_f32_s8(float x, float inv_scale, int32_t zero_point) {
  const float v = nearbyintf(x * inv_scale);
  if (!(v == v)) return (int8_t)zero_point;
  if (v >= 255.0f) return 127;
  if (v <= -256.0f) return -128;
  const int32_t q = zero_point + (int32_t)v;
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

#endif

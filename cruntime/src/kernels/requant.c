/* Fixed-point multipliers for requantization (requant.h). Computed in double from the float32
 * scales, with the spec's steps in the spec's order so the Python reference gets the same pairs. */
#include "requant.h"

#include <math.h>

bool edge_quantize_multiplier(double real, int32_t *multiplier, int32_t *shift) {
  *multiplier = 0;
  *shift = 0;
  if (!isfinite(real) || real <= 0.0) return false;
  if (real < ldexp(1.0, -32)) {
    *shift = 62;
    return true;
  }
  int exponent = 0;
  const double fraction = frexp(real, &exponent); /* real = fraction * 2^exponent, fraction in [0.5, 1) */
  long long m = llround(ldexp(fraction, 31));     /* in [2^30, 2^31] */
  if (m == (1ll << 31)) {
    m /= 2;
    exponent += 1;
  }
  const int s = 31 - exponent;
  if (s <= 0 || s >= 63) return false;
  *multiplier = (int32_t)m;
  *shift = s;
  return true;
}

bool edge_quantize_add_multipliers(double real_a, double real_b, int32_t *multiplier_a, int32_t *multiplier_b,
                                   int32_t *shift) {
  *multiplier_a = *multiplier_b = 0;
  *shift = 0;
  if (!isfinite(real_a) || !isfinite(real_b) || real_a < 0.0 || real_b < 0.0) return false;
  const double largest = real_a > real_b ? real_a : real_b;
  for (int s = 62; s >= 1; --s) {
    /* llround(x) < 2^31 exactly when x < 2^31 - 0.5; testing first keeps llround in range */
    if (!(ldexp(largest, s) < 2147483647.5)) continue;
    *multiplier_a = (int32_t)llround(ldexp(real_a, s));
    *multiplier_b = (int32_t)llround(ldexp(real_b, s));
    *shift = s;
    return true;
  }
  return false;
}

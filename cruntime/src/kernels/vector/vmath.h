/* Vector exp, sigmoid, tanh, erf and the activations built from them, over simd.h (one text for
 * every ISA). Each is range reduction plus a polynomial or rational fitted for minimax relative
 * error (coefficients fitted by us: Lawson-weighted least squares, then rounded to float).
 *
 * Maximum error against libm evaluated in double, measured by tests/c/test_kernels_vector.c
 * (EDGE_TEST_SWEEP_STEP=5: every 5th float bit pattern of |x| up to past each function's
 * saturation, both signs, denormals included; plus +-0, +-inf, NaN, FLT_MAX, the overflow and
 * underflow edges). "ulp" is the float spacing at the exact result. Measured / bound the test
 * enforces, the same on every ISA (sse2 has no FMA and is the worst):
 *
 *   vf_exp      0.89 ulp (avx2, avx512)  1.17 (sse2)  / 1.5 ulp;  x > 88.7228 -> +inf,
 *               x < -103.98 -> 0, denormal results within 1 ulp of the smallest denormal
 *   vf_sigmoid  2.40 ulp                               / 3 ulp   (1 / (1 + e) or e / (1 + e), e = exp(-|x|))
 *   vf_tanh     5.43 ulp (avx2, avx512)  6.95 (sse2)  / 8 ulp   (x P(x^2) / Q(x^2) on |x| <= 9, +-1 beyond;
 *               the worst is near saturation, |x| ~ 8.5, where the result is 1 - 1e-7)
 *   vf_erf      5.69 ulp (avx2, avx512)  6.77 (sse2)  / 8 ulp   (x P(x^2) / Q(x^2) on |x| <= 4, +-1 beyond;
 *               the worst at |x| ~ 3.58, result 1 - 4e-7)
 *   GELU, SiLU  0.5 x (1 + erf(x / sqrt 2)), the tanh form and x sigmoid(x): |error| <= 4e-7 max(1, |x|) against
 *               the scalar formula (for x << 0 the result is tiny and 1 + erf cancels, exactly as
 *               in the scalar formula, so only an absolute bound is meaningful)
 *
 * NaN in gives NaN out; +-inf give the limits. Relative error of 8 ulp is < 1e-6. */
#ifndef EDGE_KERNELS_VECTOR_VMATH_H
#define EDGE_KERNELS_VECTOR_VMATH_H

#include "../simd.h"

/* e^x = p(r) * 2^n for x in range (|x| <= 104): returns p(r) in [0.7, 1.42] and sets *n_int. */
EDGE_SIMD_INLINE f32xN exp_reduced(f32xN x, i32xN *n_int) {
  /* Adding 1.5 * 2^23 rounds x log2(e) to an integer held in the low mantissa bits. */
  const f32xN round_bias = vf_set1(12582912.0f);
  f32xN biased = vf_fma(x, vf_set1(1.44269502f), round_bias);
  f32xN n = vf_sub(biased, round_bias);
  *n_int = vi_sub(vf_as_i32(biased), vf_as_i32(round_bias));
  /* ln 2 split so that n * ln2_hi is exact for |n| <= 150 (Cody-Waite). */
  f32xN r = vf_fnma(n, vf_set1(0.693359375f), x);
  r = vf_fnma(n, vf_set1(-2.12194440e-4f), r);
  f32xN p = vf_set1(0.00138131436f);
  p = vf_fma(p, r, vf_set1(0.00836941879f));
  p = vf_fma(p, r, vf_set1(0.041668456f));
  p = vf_fma(p, r, vf_set1(0.166665152f));
  p = vf_fma(p, r, vf_set1(0.49999994f));
  p = vf_fma(p, r, vf_set1(1.0f));
  return vf_fma(p, r, vf_set1(1.0f));
}

/* e^x. The result is p(r) * 2^n with 2^n applied as two factors 2^(n/2) 2^(n - n/2) so that
 * results that overflow or are denormal come out right without a special-case branch. */
EDGE_SIMD_INLINE f32xN vf_exp(f32xN x) {
  i32xN n_int;
  f32xN p = exp_reduced(vf_clamp(x, vf_set1(-104.0f), vf_set1(89.0f)), &n_int);
  i32xN n_half = vi_sra(n_int, 1);
  i32xN n_rest = vi_sub(n_int, n_half);
  f32xN scale_half = vi_as_f32(vi_shl(vi_add(n_half, vi_set1(127)), 23));
  f32xN scale_rest = vi_as_f32(vi_shl(vi_add(n_rest, vi_set1(127)), 23));
  return vf_mul(vf_mul(p, scale_half), scale_rest);
}

/* e^x for x in [-87, 0] (NaN passes through), where e^x and every 2^n it scales by are normal
 * floats: vf_exp's reduction and polynomial with one scaling and no clamp, so the same results
 * for a third fewer operations. Softmax rows call it with x = score - row maximum. */
EDGE_SIMD_INLINE f32xN vf_exp_nonpositive(f32xN x) {
  i32xN n_int;
  f32xN p = exp_reduced(x, &n_int);
  return vf_mul(p, vi_as_f32(vi_shl(vi_add(n_int, vi_set1(127)), 23)));
}

/* 1 / (1 + e^-x) from e = e^-|x| only, so nothing overflows: x >= 0 gives 1 / (1 + e), x < 0
 * gives e / (1 + e). */
EDGE_SIMD_INLINE f32xN vf_sigmoid(f32xN x) {
  f32xN e = vf_exp(vf_neg(vf_abs(x)));
  f32xN numerator = vf_select(vf_lt(x, vf_zero()), e, vf_set1(1.0f));
  return vf_div(numerator, vf_add(vf_set1(1.0f), e));
}

EDGE_SIMD_INLINE f32xN vf_tanh(f32xN x) {
  x = vf_clamp(x, vf_set1(-9.0f), vf_set1(9.0f));
  f32xN u = vf_mul(x, x);
  f32xN p = vf_set1(1.33543923e-08f);
  p = vf_fma(p, u, vf_set1(2.06088826e-05f));
  p = vf_fma(p, u, vf_set1(0.00349557586f));
  p = vf_fma(p, u, vf_set1(0.133810148f));
  p = vf_fma(p, u, vf_set1(1.0f));
  f32xN q = vf_set1(7.7764463e-07f);
  q = vf_fma(q, u, vf_set1(0.000328561495f));
  q = vf_fma(q, u, vf_set1(0.0258769356f));
  q = vf_fma(q, u, vf_set1(0.467143297f));
  q = vf_fma(q, u, vf_set1(1.0f));
  f32xN y = vf_div(vf_mul(x, p), q);
  return vf_clamp(y, vf_set1(-1.0f), vf_set1(1.0f));
}

EDGE_SIMD_INLINE f32xN vf_erf(f32xN x) {
  x = vf_clamp(x, vf_set1(-4.0f), vf_set1(4.0f));
  f32xN u = vf_mul(x, x);
  f32xN p = vf_set1(1.98677253e-06f);
  p = vf_fma(p, u, vf_set1(0.000284564332f));
  p = vf_fma(p, u, vf_set1(0.00388332037f));
  p = vf_fma(p, u, vf_set1(0.0531016737f));
  p = vf_fma(p, u, vf_set1(0.193544671f));
  p = vf_fma(p, u, vf_set1(1.12837911f));
  f32xN q = vf_set1(3.74199881e-05f);
  q = vf_fma(q, u, vf_set1(0.00118556339f));
  q = vf_fma(q, u, vf_set1(0.015207205f));
  q = vf_fma(q, u, vf_set1(0.115349822f));
  q = vf_fma(q, u, vf_set1(0.504857063f));
  q = vf_fma(q, u, vf_set1(1.0f));
  f32xN y = vf_div(vf_mul(x, p), q);
  return vf_clamp(y, vf_set1(-1.0f), vf_set1(1.0f));
}

/* x * sigmoid(x) with sigmoid(x) = (1 + tanh(x / 2)) / 2: vf_tanh's one rational function costs
 * about two thirds of vf_exp and its division. Where the sigmoid is tiny (x << 0) the sum cancels,
 * so the bound is absolute, like GELU's: |error| <= 4e-7 max(1, |x|); below x = -18 the sigmoid is 0
 * and the result -0 (the exact one is under 3e-7 in magnitude). */
EDGE_SIMD_INLINE f32xN vf_silu(f32xN x) {
  f32xN half = vf_set1(0.5f);
  return vf_mul(x, vf_fma(half, vf_tanh(vf_mul(half, x)), half));
}

EDGE_SIMD_INLINE f32xN vf_gelu(f32xN x) {
  f32xN e = vf_erf(vf_mul(x, vf_set1(0.70710678118654752f)));
  return vf_mul(vf_mul(vf_set1(0.5f), x), vf_add(vf_set1(1.0f), e));
}

EDGE_SIMD_INLINE f32xN vf_gelu_tanh(f32xN x) {
  f32xN cube = vf_mul(vf_mul(vf_mul(vf_set1(0.044715f), x), x), x);
  f32xN t = vf_tanh(vf_mul(vf_set1(0.7978845608028654f), vf_add(x, cube)));
  return vf_mul(vf_mul(vf_set1(0.5f), x), vf_add(vf_set1(1.0f), t));
}

#endif

/* Layer normalisation of one row (edge_f32_layernorm_ukernel), compiled once per ISA.
 * mean = sum(x) / n, var = sum((x - mean)^2) / n (two passes, float vector accumulators; the
 * reference uses double), y = (x - mean) * (1 / sqrt(var + epsilon)) * scale + bias.
 * Error against the reference: a few ulp of the normalised value for rows up to thousands of
 * elements (the float sums' rounding, <= about n * 2^-24 relative). */
#include <math.h>

#include "../vector.h"
#include "../simd.h"

void EDGE_SIMD_FN(f32_layernorm)(size_t n, const float *x, const float *scale, const float *bias, float epsilon,
                                 float *y) {
  f32xN s0 = vf_zero(), s1 = vf_zero();
  size_t i = 0;
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    s0 = vf_add(s0, vf_loadu(x + i));
    s1 = vf_add(s1, vf_loadu(x + i + EDGE_SIMD_N));
  }
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) s0 = vf_add(s0, vf_loadu(x + i));
  if (i < n) s1 = vf_add(s1, vf_load_partial(x + i, n - i));
  const float mean = vf_reduce_add(vf_add(s0, s1)) / (float)n;
  const f32xN vmean = vf_set1(mean);

  f32xN q0 = vf_zero(), q1 = vf_zero();
  for (i = 0; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    f32xN d0 = vf_sub(vf_loadu(x + i), vmean), d1 = vf_sub(vf_loadu(x + i + EDGE_SIMD_N), vmean);
    q0 = vf_fma(d0, d0, q0);
    q1 = vf_fma(d1, d1, q1);
  }
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN d = vf_sub(vf_loadu(x + i), vmean);
    q0 = vf_fma(d, d, q0);
  }
  if (i < n) {
    f32xN d = vf_select(vm_first(n - i), vf_sub(vf_load_partial(x + i, n - i), vmean), vf_zero());
    q1 = vf_fma(d, d, q1);
  }
  const float variance = vf_reduce_add(vf_add(q0, q1)) / (float)n;
  const f32xN inv_std = vf_set1(1.0f / sqrtf(variance + epsilon));

  const f32xN one = vf_set1(1.0f), zero = vf_zero();
  for (i = 0; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN v = vf_mul(vf_sub(vf_loadu(x + i), vmean), inv_std);
    f32xN g = scale ? vf_loadu(scale + i) : one, b = bias ? vf_loadu(bias + i) : zero;
    vf_storeu(y + i, vf_fma(v, g, b));
  }
  if (i < n) {
    size_t rest = n - i;
    f32xN v = vf_mul(vf_sub(vf_load_partial(x + i, rest), vmean), inv_std);
    f32xN g = scale ? vf_load_partial(scale + i, rest) : one, b = bias ? vf_load_partial(bias + i, rest) : zero;
    vf_store_partial(y + i, vf_fma(v, g, b), rest);
  }
}

/* RMS normalisation of one row (the same edge_f32_layernorm_ukernel signature):
 * y = x * (1 / sqrt(sum(x^2) / n + epsilon)) * scale + bias, no centring. One float vector sum of
 * squares (the reference uses double); error as above. */
void EDGE_SIMD_FN(f32_rmsnorm)(size_t n, const float *x, const float *scale, const float *bias, float epsilon,
                               float *y) {
  f32xN q0 = vf_zero(), q1 = vf_zero();
  size_t i = 0;
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    f32xN a = vf_loadu(x + i), b = vf_loadu(x + i + EDGE_SIMD_N);
    q0 = vf_fma(a, a, q0);
    q1 = vf_fma(b, b, q1);
  }
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN a = vf_loadu(x + i);
    q0 = vf_fma(a, a, q0);
  }
  if (i < n) {
    f32xN a = vf_load_partial(x + i, n - i);
    q1 = vf_fma(a, a, q1);
  }
  const float mean_square = vf_reduce_add(vf_add(q0, q1)) / (float)n;
  const f32xN inv_rms = vf_set1(1.0f / sqrtf(mean_square + epsilon));
  const f32xN one = vf_set1(1.0f), zero = vf_zero();
  for (i = 0; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN v = vf_mul(vf_loadu(x + i), inv_rms);
    f32xN g = scale ? vf_loadu(scale + i) : one, b = bias ? vf_loadu(bias + i) : zero;
    vf_storeu(y + i, vf_fma(v, g, b));
  }
  if (i < n) {
    size_t rest = n - i;
    f32xN v = vf_mul(vf_load_partial(x + i, rest), inv_rms);
    f32xN g = scale ? vf_load_partial(scale + i, rest) : one, b = bias ? vf_load_partial(bias + i, rest) : zero;
    vf_store_partial(y + i, vf_fma(v, g, b), rest);
  }
}

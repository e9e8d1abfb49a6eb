/* Softmax and log-softmax, compiled once per ISA (see simd.h).
 *
 * Row form (edge_f32_softmax_ukernel, contiguous n > 0): the maximum (NaN wins), then
 * e = exp(x - max) stored while summed in vector lanes, then y = e * (1 / sum); log-softmax is
 * (x - max) - log(sum). Column form (edge_f32_softmax_strided_ukernel): the same three passes
 * over `length` rows for a block of columns held side by side in vectors.
 * Error against the scalar reference (which sums in double): exp's <= 2 ulp, plus the float sum's
 * rounding (<= about n * 2^-24 relative) and one rounding of the reciprocal; see vmath.h. */
#include <math.h>

#include "../vector.h"
#include "vmath.h"

EDGE_SIMD_INLINE f32xN max_step(f32xN acc, f32xN v) { return vf_select(vf_unord(v, v), v, vf_max(v, acc)); }

static float row_max(size_t n, const float *x) {
  f32xN m0 = vf_set1(-INFINITY), m1 = m0;
  size_t i = 0;
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    m0 = max_step(m0, vf_loadu(x + i));
    m1 = max_step(m1, vf_loadu(x + i + EDGE_SIMD_N));
  }
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) m0 = max_step(m0, vf_loadu(x + i));
  if (i < n) m1 = vf_select(vm_first(n - i), max_step(m1, vf_load_partial(x + i, n - i)), m1);
  f32xN m = max_step(m0, m1);
  return vm_any(vf_unord(m, m)) ? NAN : vf_reduce_max(m);
}

/* Sum of exp(x - max), storing the exponentials into y when y is not NULL. */
static float row_exp_sum(size_t n, const float *x, float max, float *y) {
  const f32xN vmax = vf_set1(max);
  f32xN s0 = vf_zero(), s1 = vf_zero();
  size_t i = 0;
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {
    f32xN e0 = vf_exp(vf_sub(vf_loadu(x + i), vmax));
    f32xN e1 = vf_exp(vf_sub(vf_loadu(x + i + EDGE_SIMD_N), vmax));
    if (y) {
      vf_storeu(y + i, e0);
      vf_storeu(y + i + EDGE_SIMD_N, e1);
    }
    s0 = vf_add(s0, e0);
    s1 = vf_add(s1, e1);
  }
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN e = vf_exp(vf_sub(vf_loadu(x + i), vmax));
    if (y) vf_storeu(y + i, e);
    s0 = vf_add(s0, e);
  }
  if (i < n) {
    f32xN e = vf_exp(vf_sub(vf_load_partial(x + i, n - i), vmax));
    if (y) vf_store_partial(y + i, e, n - i);
    s1 = vf_add(s1, vf_select(vm_first(n - i), e, vf_zero()));
  }
  return vf_reduce_add(vf_add(s0, s1));
}

/* y = x * s, or y = x + s when add is set. */
static void row_scale(size_t n, const float *x, float s, float *y, int add) {
  const f32xN vs = vf_set1(s);
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN v = vf_loadu(x + i);
    vf_storeu(y + i, add ? vf_add(v, vs) : vf_mul(v, vs));
  }
  if (i < n) {
    f32xN v = vf_load_partial(x + i, n - i);
    vf_store_partial(y + i, add ? vf_add(v, vs) : vf_mul(v, vs), n - i);
  }
}

void EDGE_SIMD_FN(f32_softmax)(size_t n, const float *x, float *y) {
  float max = row_max(n, x);
  float sum = row_exp_sum(n, x, max, y);
  row_scale(n, y, 1.0f / sum, y, 0);
}

/* (x - max) - log(sum) with the reference's two subtractions, so the rounding matches it. */
void EDGE_SIMD_FN(f32_log_softmax)(size_t n, const float *x, float *y) {
  float max = row_max(n, x);
  float log_sum = logf(row_exp_sum(n, x, max, NULL));
  const f32xN vmax = vf_set1(max), vlog = vf_set1(log_sum);
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) vf_storeu(y + i, vf_sub(vf_sub(vf_loadu(x + i), vmax), vlog));
  if (i < n) vf_store_partial(y + i, vf_sub(vf_sub(vf_load_partial(x + i, n - i), vmax), vlog), n - i);
}

EDGE_SIMD_INLINE f32xN load_columns(const float *p, size_t width) {
  return width == EDGE_SIMD_N ? vf_loadu(p) : vf_load_partial(p, width);
}
EDGE_SIMD_INLINE void store_columns(float *p, f32xN v, size_t width) {
  if (width == EDGE_SIMD_N) vf_storeu(p, v);
  else vf_store_partial(p, v, width);
}

/* One block of `width` <= EDGE_SIMD_N columns (a partial vector when width < N). */
static void softmax_columns(size_t length, size_t width, size_t stride, const float *x, float *y, int log) {
  f32xN m = vf_set1(-INFINITY);
  for (size_t r = 0; r < length; ++r) m = max_step(m, load_columns(x + r * stride, width));
  f32xN s = vf_zero();
  for (size_t r = 0; r < length; ++r) {
    f32xN e = vf_exp(vf_sub(load_columns(x + r * stride, width), m));
    if (!log) store_columns(y + r * stride, e, width);
    s = vf_add(s, e);
  }
  if (log) {
    float sums[EDGE_SIMD_N], logs[EDGE_SIMD_N];
    vf_storeu(sums, s);
    for (size_t k = 0; k < EDGE_SIMD_N; ++k) logs[k] = logf(sums[k]);
    f32xN vlog = vf_loadu(logs);
    for (size_t r = 0; r < length; ++r) {
      f32xN v = load_columns(x + r * stride, width);
      store_columns(y + r * stride, vf_sub(vf_sub(v, m), vlog), width);
    }
  } else {
    f32xN inv = vf_div(vf_set1(1.0f), s);
    for (size_t r = 0; r < length; ++r)
      store_columns(y + r * stride, vf_mul(load_columns(y + r * stride, width), inv), width);
  }
}

void EDGE_SIMD_FN(f32_softmax_strided)(size_t length, size_t inner, size_t stride, const float *x, float *y,
                                       int log) {
  size_t j = 0;
  for (; j + EDGE_SIMD_N <= inner; j += EDGE_SIMD_N) softmax_columns(length, EDGE_SIMD_N, stride, x + j, y + j, log);
  if (j < inner) softmax_columns(length, inner - j, stride, x + j, y + j, log);
}

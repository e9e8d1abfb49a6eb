/* Gradient kernels of the training ops, written once over simd.h:
 *   edge_f32_vrelu_grad__isa     dx[i] = x[i] > 0 ? dy[i] : 0 * dy[i]  (ACTIVATION_GRAD of RELU)
 *   edge_f32_maxpool_grad__isa   one max-pool window: for each channel j, the first tap t (in the
 *                                order given) whose x[t][j] is maximal (a NaN wins over a number,
 *                                the first NaN over later ones) gets dx[t][j] += dy[j]
 * Both give the scalar references' results bit for bit (ops/activation_grad.c, ops/pool_grad.c):
 * the same comparisons and one IEEE add or multiply per value. Exactly n / channels elements are
 * read and written (tails masked). Compiled once per ISA (see simd.h). */
#include "../vector.h"
#include "../simd.h"

void EDGE_SIMD_FN(f32_vrelu_grad)(size_t n, const float *x, const float *dy, float *dx) {
  const f32xN zero = vf_zero();
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    const f32xN g = vf_loadu(dy + i);
    vf_storeu(dx + i, vf_select(vf_gt(vf_loadu(x + i), zero), g, vf_mul(g, zero)));
  }
  if (i < n) {
    const f32xN g = vf_load_partial(dy + i, n - i);
    vf_store_partial(dx + i, vf_select(vf_gt(vf_load_partial(x + i, n - i), zero), g, vf_mul(g, zero)), n - i);
  }
}

/* The winning tap of a lane is kept as a float index (exact for any tap count a window has). */
EDGE_SIMD_INLINE void maxpool_grad_block(size_t taps, const float *const *x, float *const *dx, const float *dy,
                                         size_t offset, size_t count) {
  const int full = count == EDGE_SIMD_N;
  f32xN best = full ? vf_loadu(x[0] + offset) : vf_load_partial(x[0] + offset, count);
  f32xN where = vf_zero();
  for (size_t t = 1; t < taps; ++t) {
    const f32xN v = full ? vf_loadu(x[t] + offset) : vf_load_partial(x[t] + offset, count);
    const maskxN wins = vm_or(vf_gt(v, best), vm_and(vf_unord(v, v), vf_eq(best, best)));
    best = vf_select(wins, v, best);
    where = vf_select(wins, vf_set1((float)t), where);
  }
  const f32xN g = full ? vf_loadu(dy + offset) : vf_load_partial(dy + offset, count);
  for (size_t t = 0; t < taps; ++t) {
    float *d = dx[t] + offset;
    const f32xN old = full ? vf_loadu(d) : vf_load_partial(d, count);
    const f32xN updated = vf_select(vf_eq(where, vf_set1((float)t)), vf_add(old, g), old);
    if (full) vf_storeu(d, updated);
    else vf_store_partial(d, updated, count);
  }
}

void EDGE_SIMD_FN(f32_maxpool_grad)(size_t taps, const float *const *x, float *const *dx, const float *dy,
                                    size_t channels) {
  size_t j = 0;
  for (; j + EDGE_SIMD_N <= channels; j += EDGE_SIMD_N) maxpool_grad_block(taps, x, dx, dy, j, EDGE_SIMD_N);
  if (j < channels) maxpool_grad_block(taps, x, dx, dy, j, channels - j);
}

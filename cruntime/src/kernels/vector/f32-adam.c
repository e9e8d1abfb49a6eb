/* The Adam / AdamW update of n values (edge_f32_adam_ukernel, kernels/vector.h), compiled once per
 * ISA (see simd.h). In float, one vector of values at a time, each value on its own:
 *   g' = g + weight_decay * p (Adam; AdamW: g' = g)
 *   m = beta1 m + (1 - beta1) g',  v = beta2 v + (1 - beta2) g'^2
 *   p -= lr (m / correction1) / (sqrt(v / correction2) + epsilon)  (AdamW: also lr weight_decay p_old)
 * The scalar reference (ops/optimizer.c) runs the same steps in double; these differ from it by a
 * few float roundings of each value. Elements are independent: any split gives the same bits. */
#include "../vector.h"
#include "../simd.h"

EDGE_SIMD_INLINE void adam_lanes(float *p, const float *g, float *m, float *v, const edge_f32_adam_params *a,
                                 size_t width) {
  const int full = width == EDGE_SIMD_N;
  const f32xN old = full ? vf_loadu(p) : vf_load_partial(p, width);
  f32xN grad = full ? vf_loadu(g) : vf_load_partial(g, width);
  if (!a->decoupled) grad = vf_fma(vf_set1(a->weight_decay), old, grad);
  f32xN mv = full ? vf_loadu(m) : vf_load_partial(m, width);
  f32xN vv = full ? vf_loadu(v) : vf_load_partial(v, width);
  mv = vf_fma(vf_set1(a->beta1), mv, vf_mul(vf_set1(a->one_minus_beta1), grad));
  vv = vf_fma(vf_set1(a->beta2), vv, vf_mul(vf_set1(a->one_minus_beta2), vf_mul(grad, grad)));
  const f32xN denominator = vf_add(vf_sqrt(vf_div(vv, vf_set1(a->correction2))), vf_set1(a->epsilon));
  f32xN step = vf_div(vf_mul(vf_set1(a->lr), vf_div(mv, vf_set1(a->correction1))), denominator);
  if (a->decoupled) step = vf_fma(vf_set1(a->lr * a->weight_decay), old, step);
  const f32xN updated = vf_sub(old, step);
  if (full) {
    vf_storeu(m, mv);
    vf_storeu(v, vv);
    vf_storeu(p, updated);
  } else {
    vf_store_partial(m, mv, width);
    vf_store_partial(v, vv, width);
    vf_store_partial(p, updated, width);
  }
}

void EDGE_SIMD_FN(f32_adam)(size_t n, float *p, const float *g, float *m, float *v, const edge_f32_adam_params *params) {
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) adam_lanes(p + i, g + i, m + i, v + i, params, EDGE_SIMD_N);
  if (i < n) adam_lanes(p + i, g + i, m + i, v + i, params, n - i);
}

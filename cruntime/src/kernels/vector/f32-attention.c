/* One query row's step of the online softmax over a block of keys (edge_f32_attention_row_ukernel),
 * compiled once per ISA; ops/attention.c drives it between two GEMMs (scores, then probabilities x V).
 *
 * For j < n: x_j = c(scale * s[j]) + bias[j], with c(t) = softcap * tanh(t / softcap) when
 * softcap > 0, else t; bias NULL adds nothing. With m_old = *max and m = max(m_old, max_j x_j):
 * s[j] becomes exp(x_j - m), *max becomes m, *correction is exp(m_old - m) (what the row's earlier
 * sums and outputs are multiplied by), and the block's sum of s[j] is returned. While every score
 * seen is -inf (keys masked out), m stays -inf, every s[j] is 0, the sum 0 and the correction 1.
 * The sum is accumulated in float vectors (the reference in ops/attention.c uses double); exp is
 * vmath.h's (about 1 ulp), with results below FLT_MIN given as 0. */
#include <math.h>

#include "../vector.h"
#include "vmath.h"

/* exp(d) for d = x - max <= 0, with the results below FLT_MIN (d < -87) flushed to 0: next to the
 * row's largest term, 1, they are lost in the sum anyway, and as denormals they would slow the
 * exp's scaling and the probabilities-times-V GEMM several times over on rows with a wide spread
 * of scores. NaN stays NaN. */
EDGE_SIMD_INLINE f32xN exp_or_zero(f32xN d) {
  /* Those lanes take exp(0) and are zeroed after: even a discarded denormal costs its assists. */
  maskxN tiny = vf_lt(d, vf_set1(-87.0f));
  return vf_select(tiny, vf_zero(), vf_exp_nonpositive(vf_select(tiny, vf_zero(), d)));
}

float EDGE_SIMD_FN(f32_attention_row)(size_t n, float *s, float scale, float softcap, const float *bias,
                                      float *max, float *correction) {
  const f32xN vscale = vf_set1(scale), vcap = vf_set1(softcap), vinv_cap = vf_set1(softcap > 0.0f ? 1.0f / softcap : 0.0f);
  f32xN vmax = vf_set1(-INFINITY);
  size_t i = 0;
  for (; i < n; i += EDGE_SIMD_N) {
    size_t rest = n - i;
    f32xN x = rest >= EDGE_SIMD_N ? vf_loadu(s + i) : vf_load_partial(s + i, rest);
    x = vf_mul(x, vscale);
    if (softcap > 0.0f) x = vf_mul(vcap, vf_tanh(vf_mul(x, vinv_cap)));
    if (bias) x = vf_add(x, rest >= EDGE_SIMD_N ? vf_loadu(bias + i) : vf_load_partial(bias + i, rest));
    if (rest >= EDGE_SIMD_N) {
      vf_storeu(s + i, x);
      vmax = vf_max(vmax, x);
    } else {
      vf_store_partial(s + i, x, rest);
      vmax = vf_max(vmax, vf_select(vm_first(rest), x, vf_set1(-INFINITY)));
    }
  }
  float block_max = vf_reduce_max(vmax), old = *max;
  float m = block_max > old ? block_max : old;
  if (m == -INFINITY) {
    for (size_t j = 0; j < n; ++j) s[j] = 0.0f;
    *correction = 1.0f;
    return 0.0f;
  }
  *correction = old == -INFINITY ? 0.0f : expf(old - m);
  *max = m;
  const f32xN vm = vf_set1(m);
  f32xN sum = vf_zero();
  for (i = 0; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    f32xN p = exp_or_zero(vf_sub(vf_loadu(s + i), vm));
    vf_storeu(s + i, p);
    sum = vf_add(sum, p);
  }
  if (i < n) {
    size_t rest = n - i;
    f32xN p = vf_select(vm_first(rest), exp_or_zero(vf_sub(vf_load_partial(s + i, rest), vm)), vf_zero());
    vf_store_partial(s + i, p, rest);
    sum = vf_add(sum, p);
  }
  return vf_reduce_add(sum);
}

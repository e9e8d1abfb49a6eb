/* Elementwise unary kernels (edge_f32_vunary_ukernel): y[i] = op(x[i]) for i < n, x == y
 * allowed, no alignment needed, exactly n elements read and written. The tail goes through the
 * same vector code as the body (a partial load), so an element's result does not depend on its
 * position, and so not on how threads split a range. Compiled once per ISA (see simd.h). */
#include "../vector.h"
#include "vmath.h"

/* Defines edge_f32_v<name>__<isa>; BODY maps f32xN v to a result with params in scope. */
#define EDGE_VUNARY_KERNEL(name, BODY)                                                          \
  void EDGE_SIMD_FN(f32_v##name)(size_t n, const float *x, float *y,                            \
                                 const edge_f32_unary_params *params) {                         \
    (void)params;                                                                               \
    EDGE_VUNARY_SETUP                                                                           \
    size_t i = 0;                                                                               \
    for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N) {                                    \
      f32xN v = vf_loadu(x + i), w = vf_loadu(x + i + EDGE_SIMD_N);                             \
      f32xN rv, rw;                                                                             \
      { f32xN in = v; rv = (BODY); }                                                            \
      { f32xN in = w; rw = (BODY); }                                                            \
      vf_storeu(y + i, rv);                                                                     \
      vf_storeu(y + i + EDGE_SIMD_N, rw);                                                       \
    }                                                                                           \
    for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {                                            \
      f32xN in = vf_loadu(x + i);                                                               \
      vf_storeu(y + i, (BODY));                                                                 \
    }                                                                                           \
    if (i < n) {                                                                                \
      f32xN in = vf_load_partial(x + i, n - i);                                                 \
      vf_store_partial(y + i, (BODY), n - i);                                                   \
    }                                                                                           \
  }

#define EDGE_VUNARY_SETUP                                          \
  const f32xN alpha = vf_set1(params ? params->alpha : 0.0f);      \
  const f32xN beta = vf_set1(params ? params->beta : 0.0f);        \
  const f32xN zero = vf_zero();                                    \
  (void)alpha; (void)beta; (void)zero;

EDGE_VUNARY_KERNEL(relu, vf_max(zero, in))
EDGE_VUNARY_KERNEL(relu6, vf_clamp(in, zero, vf_set1(6.0f)))
EDGE_VUNARY_KERNEL(clip, vf_clamp(in, alpha, beta))
EDGE_VUNARY_KERNEL(leaky_relu, vf_select(vf_lt(in, zero), vf_mul(alpha, in), in))
EDGE_VUNARY_KERNEL(hard_sigmoid, vf_clamp(vf_fma(alpha, in, beta), zero, vf_set1(1.0f)))
/* Divided by 6, not multiplied by 1/6, to round like the scalar reference. */
EDGE_VUNARY_KERNEL(hard_swish,
                   vf_div(vf_mul(in, vf_clamp(vf_add(in, vf_set1(3.0f)), zero, vf_set1(6.0f))), vf_set1(6.0f)))
EDGE_VUNARY_KERNEL(exp, vf_exp(in))
EDGE_VUNARY_KERNEL(sigmoid, vf_sigmoid(in))
EDGE_VUNARY_KERNEL(tanh, vf_tanh(in))
EDGE_VUNARY_KERNEL(erf, vf_erf(in))
EDGE_VUNARY_KERNEL(gelu, vf_gelu(in))
EDGE_VUNARY_KERNEL(gelu_tanh, vf_gelu_tanh(in))
/* SiLU / Swish, x * sigmoid(x), the converter's fusion of MUL(x, SIGMOID(x)). */
EDGE_VUNARY_KERNEL(silu, vf_silu(in))
EDGE_VUNARY_KERNEL(sqrt, vf_sqrt(in))
EDGE_VUNARY_KERNEL(rsqrt, vf_div(vf_set1(1.0f), vf_sqrt(in)))
EDGE_VUNARY_KERNEL(reciprocal, vf_div(vf_set1(1.0f), in))
EDGE_VUNARY_KERNEL(neg, vf_neg(in))
EDGE_VUNARY_KERNEL(abs, vf_abs(in))
EDGE_VUNARY_KERNEL(square, vf_mul(in, in))
/* sign(NaN) is NaN and sign(+-0) is +-0, as in the reference. */
EDGE_VUNARY_KERNEL(sign, vf_select(vf_gt(in, zero), vf_set1(1.0f), vf_select(vf_lt(in, zero), vf_set1(-1.0f), in)))

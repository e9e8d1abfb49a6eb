/* int8 LayerNorm of one row (edge_s8_layernorm_ukernel), the int8 reference's arithmetic
 * (converter/quantize/int8_reference.py, layer_norm_int8) step for step:
 *   d_i = x_i - zp_x;  S1 = sum d_i,  S2 = sum d_i^2                  (exact integers)
 *   mean = S1 / n,  var = (n * S2 - S1^2) / n^2                        (double)
 *   r = float(s_x / sqrt(s_x^2 * var + epsilon)),  c = float(mean)
 *   y_i = ((float(d_i) - c) * r) * gamma_i + beta_i                    (float32, four roundings)
 *   q_i = clamp(nearbyint(y_i * inv_scale_y) + zp_y, -128, 127)        (NaN -> zp_y)
 * The sums take 16 bytes at a time as int16 differences multiplied in pairs (simd.h's vw_madd: by
 * ones for S1, by themselves for S2) into 8 int32 lanes, flushed into int64 every 1024 steps
 * (1024 * 2 * 255^2 fits a lane). The float steps are separate IEEE operations (ISO C: no FMA
 * contraction) in the same order on every ISA, so the bytes are the scalar reference's
 * (ops/norm.c) and the Python oracle's; the rounding is s8-quantize.c's (vi_round_scaled). */
#include <math.h>

#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

/* c and r of one row from its exact sums; ops/norm.c's reference does the same. */
static inline void row_constants(int64_t s1, int64_t s2, size_t n, const edge_s8_layernorm_params *p, float *c,
                                 float *r) {
  double mean = (double)s1 / (double)n;
  double var = (double)((int64_t)n * s2 - s1 * s1) / ((double)n * (double)n);
  double s_x = (double)p->scale_x;
  *r = (float)(s_x / sqrt(s_x * s_x * var + (double)p->epsilon));
  *c = (float)mean;
}

void EDGE_SIMD_FN(s8_layernorm)(size_t n, const int8_t *x, int8_t *y, const float *gamma, const float *beta,
                                const edge_s8_layernorm_params *p) {
  const int32_t zp_x = p->zp_x;
  int64_t s1 = 0, s2 = 0;
  size_t i = 0;
  const i16x16 ones = vw_set1(1);
  while (i + 16 <= n) {
    i32x8 a1 = vw_zero(), a2 = vw_zero();
    for (size_t blocks = 0; blocks < 1024 && i + 16 <= n; ++blocks, i += 16) {
      const i16x16 d = vw_load_s8(x + i, (int16_t)zp_x);
      a1 = vw_madd(a1, d, ones);
      a2 = vw_madd(a2, d, d);
    }
    int32_t l1[8], l2[8];
    vw_store_i32(l1, a1);
    vw_store_i32(l2, a2);
    for (int lane = 0; lane < 8; ++lane) {
      s1 += l1[lane];
      s2 += l2[lane];
    }
  }
  for (; i < n; ++i) {
    int64_t d = (int64_t)x[i] - zp_x;
    s1 += d;
    s2 += d * d;
  }
  float c, r;
  row_constants(s1, s2, n, p, &c, &r);
  const float inv = p->inv_scale_y;
  const int32_t zp_y = p->zp_y;
  const i32xN vzp_x = vi_set1(zp_x), vzp_y = vi_set1(zp_y);
  const f32xN vc = vf_set1(c), vr = vf_set1(r), vinv = vf_set1(inv);
  i = 0;
#define NORMALIZE_LANES(j)                                                                          \
  vi_round_scaled(vf_mul(vf_add(vf_mul(vf_mul(vf_sub(vi_to_f32(vi_sub(vi_load_s8(x + (j)), vzp_x)), vc), vr), \
                                       vf_loadu(gamma + (j))),                                     \
                                vf_loadu(beta + (j))),                                              \
                         vinv),                                                                     \
                  vzp_y)
  for (; i + 2 * EDGE_SIMD_N <= n; i += 2 * EDGE_SIMD_N)
    vi_store_s8_sat2(y + i, NORMALIZE_LANES(i), NORMALIZE_LANES(i + EDGE_SIMD_N));
#undef NORMALIZE_LANES
  for (; i < n; ++i) {
    float t = ((float)((int32_t)x[i] - zp_x) - c) * r;
    y[i] = s8_round_scaled((t * gamma[i] + beta[i]) * inv, zp_y);
  }
}

/* int8 LayerNorm of one row (edge_s8_layernorm_ukernel), the int8 reference's arithmetic
 * (converter/quantize/int8_reference.py, layer_norm_int8) step for step:
 *   d_i = x_i - zp_x;  S1 = sum d_i,  S2 = sum d_i^2                  (exact integers)
 *   mean = S1 / n,  var = (n * S2 - S1^2) / n^2                        (double)
 *   r = float(s_x / sqrt(s_x^2 * var + epsilon)),  c = float(mean)
 *   y_i = ((float(d_i) - c) * r) * gamma_i + beta_i                    (float32, four roundings)
 *   q_i = clamp(nearbyint(y_i * inv_scale_y) + zp_y, -128, 127)        (NaN -> zp_y)
 * The sums are int32 lanes flushed into int64 every 1024 vectors (1024 * 65025 fits a lane). The
 * float steps are separate IEEE operations (ISO C: no FMA contraction) in the same order on every
 * ISA, so the bytes are the scalar reference's (ops/norm.c) and the Python oracle's. The product
 * y * inv_scale_y is clamped to [-256, 256] (no result changes: zp_y +- 256 saturates either way)
 * and rounded half to even by adding and subtracting 1.5 * 2^23, as in s8-quantize.c. */
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

static inline int8_t quantize_one(float y, float inv, int32_t zp) {
  float v = y * inv;
  if (v != v) v = 0.0f;
  if (v > 256.0f) v = 256.0f;
  if (v < -256.0f) v = -256.0f;
  int32_t q = zp + (int32_t)nearbyintf(v);
  return (int8_t)(q < -128 ? -128 : (q > 127 ? 127 : q));
}

void EDGE_SIMD_FN(s8_layernorm)(size_t n, const int8_t *x, int8_t *y, const float *gamma, const float *beta,
                                const edge_s8_layernorm_params *p) {
  const int32_t zp_x = p->zp_x;
  int64_t s1 = 0, s2 = 0;
  size_t i = 0;
  while (i + 16 <= n) {
    edge_i32x16 a1 = {0}, a2 = {0};
    for (size_t blocks = 0; blocks < 1024 && i + 16 <= n; ++blocks, i += 16) {
      edge_i32x16 d = __builtin_convertvector(s8x16_load(x + i), edge_i32x16) - zp_x;
      a1 += d;
      a2 += d * d;
    }
    for (int lane = 0; lane < 16; ++lane) {
      s1 += a1[lane];
      s2 += a2[lane];
    }
  }
  for (; i < n; ++i) {
    int64_t d = (int64_t)x[i] - zp_x;
    s1 += d;
    s2 += d * d;
  }
  float c, r;
  row_constants(s1, s2, n, p, &c, &r);
  const float inv = p->inv_scale_y, magic = 12582912.0f; /* 1.5 * 2^23 */
  const int32_t zp_y = p->zp_y;
  for (i = 0; i + 16 <= n; i += 16) {
    edge_f32x16 d = __builtin_convertvector(__builtin_convertvector(s8x16_load(x + i), edge_i32x16) - zp_x,
                                            edge_f32x16);
    edge_f32x16 t = (d - c) * r;
    edge_f32x16 v = (t * f32x16_load(gamma + i) + f32x16_load(beta + i)) * inv;
    edge_i32x16 bits = (edge_i32x16)v & (v == v); /* NaN -> +0 */
    v = (edge_f32x16)bits;
    edge_i32x16 above = v > 256.0f, below = v < -256.0f;
    bits = (bits & ~above) | ((edge_i32x16)((edge_f32x16){0} + 256.0f) & above);
    bits = (bits & ~below) | ((edge_i32x16)((edge_f32x16){0} - 256.0f) & below);
    v = (edge_f32x16)bits;
    v = (v + magic) - magic;
    edge_i32x16 q = i32x16_clamp(__builtin_convertvector(v, edge_i32x16) + zp_y, -128, 127);
    s8x16_store(y + i, __builtin_convertvector(q, edge_s8x16));
  }
  for (; i < n; ++i) {
    float t = ((float)((int32_t)x[i] - zp_x) - c) * r;
    y[i] = quantize_one(t * gamma[i] + beta[i], inv, zp_y);
  }
}

/* The fused-activation epilogue and the scalar definition of every unary function (common.h).
 * NaN propagates through the clamping ones (RELU, CLIP ...) as it does in NumPy, so comparisons are
 * written to let it through. */
#include <math.h>

#include "config.h"

static float sigmoid(float x) {
  /* exp of a negative argument only, so neither branch overflows for large |x|. */
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  float e = expf(x);
  return e / (1.0f + e);
}

static float clamp(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* ONNX's Clip is min(max(x, lo), hi): when lo > hi every output is hi. */
static float clip(float x, float lo, float hi) {
  float y = x < lo ? lo : x;
  return y > hi ? hi : y;
}

float edge_unary_float(edge_unary_kind op, float x, float alpha, float beta) {
  switch (op) {
    case EDGE_UNARY_IDENTITY: return x;
    case EDGE_UNARY_RELU: return x < 0.0f ? 0.0f : x;
    case EDGE_UNARY_RELU6: return clamp(x, 0.0f, 6.0f);
    case EDGE_UNARY_CLIP: return clip(x, alpha, beta);
    case EDGE_UNARY_LEAKY_RELU: return x < 0.0f ? alpha * x : x;
    case EDGE_UNARY_ELU: return x < 0.0f ? alpha * expm1f(x) : x;
    case EDGE_UNARY_SIGMOID: return sigmoid(x);
    case EDGE_UNARY_TANH: return tanhf(x);
    case EDGE_UNARY_HARD_SIGMOID: return clamp(alpha * x + beta, 0.0f, 1.0f);
    case EDGE_UNARY_HARD_SWISH: return x * clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f;
    case EDGE_UNARY_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case EDGE_UNARY_GELU_TANH: {
      const float sqrt_2_over_pi = 0.7978845608028654f;
      return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * (x + 0.044715f * x * x * x)));
    }
    case EDGE_UNARY_ERF: return erff(x);
    case EDGE_UNARY_EXP: return expf(x);
    case EDGE_UNARY_LOG: return logf(x);
    case EDGE_UNARY_SQRT: return sqrtf(x);
    case EDGE_UNARY_RSQRT: return 1.0f / sqrtf(x);
    case EDGE_UNARY_RECIPROCAL: return 1.0f / x;
    case EDGE_UNARY_NEG: return -x;
    case EDGE_UNARY_ABS: return fabsf(x);
    case EDGE_UNARY_FLOOR: return floorf(x);
    case EDGE_UNARY_CEIL: return ceilf(x);
    case EDGE_UNARY_ROUND: return nearbyintf(x); /* half to even under the default rounding mode */
    case EDGE_UNARY_SIGN: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
    case EDGE_UNARY_SOFTPLUS: return log1pf(expf(-fabsf(x))) + (x > 0.0f ? x : 0.0f);
    case EDGE_UNARY_SIN: return sinf(x);
    case EDGE_UNARY_COS: return cosf(x);
    case EDGE_UNARY_SQUARE: return x * x;
    case EDGE_UNARY_ASIN: return asinf(x);
    case EDGE_UNARY_ACOS: return acosf(x);
    case EDGE_UNARY_ATAN: return atanf(x);
    case EDGE_UNARY_SILU: return x * sigmoid(x);
    case EDGE_UNARY_NOT: return x == 0.0f ? 1.0f : 0.0f;
    case EDGE_UNARY_IS_NAN: return isnan(x) ? 1.0f : 0.0f;
    case EDGE_UNARY_IS_INF: return isinf(x) ? 1.0f : 0.0f;
    case EDGE_UNARY_COUNT_: break;
  }
  return x;
}

void edge_activation_apply(const edge_activation *act, float *data, size_t n) {
  if (act->op == EDGE_UNARY_IDENTITY || n == 0) return;
  edge_f32_vunary_ukernel vector = (unsigned)act->op < EDGE_UNARY_COUNT_ ? edge_kernels()->vector.unary[act->op] : NULL;
  if (vector) {
    edge_f32_unary_params params = {act->alpha, act->beta};
    vector(n, data, data, &params);
    return;
  }
  /* The common activations get their own loops; the rest go through the scalar definition. */
  switch (act->op) {
    case EDGE_UNARY_IDENTITY: return;
    case EDGE_UNARY_RELU:
      for (size_t i = 0; i < n; ++i) data[i] = data[i] < 0.0f ? 0.0f : data[i];
      return;
    case EDGE_UNARY_RELU6:
      for (size_t i = 0; i < n; ++i) data[i] = clamp(data[i], 0.0f, 6.0f);
      return;
    case EDGE_UNARY_CLIP:
      for (size_t i = 0; i < n; ++i) data[i] = clip(data[i], act->alpha, act->beta);
      return;
    default:
      for (size_t i = 0; i < n; ++i) data[i] = edge_unary_float(act->op, data[i], act->alpha, act->beta);
  }
}

/* Quantization params, multipliers and activation ranges shared by the integer op paths
 * (qcommon.h states the arithmetic). Everything here runs at prepare. */
#include <math.h>
#include <string.h>

#include "tensor_access.h"
#include "qcommon.h"

static edge_status check_scale(edge_context *ctx, const char *op, const edge_tensor *t, int32_t i) {
  float s = t->scales[i];
  if (!isfinite(s) || !(s > 0.0f))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: tensor '%s' has quantization scale %d = %g; scales must be finite and > 0",
                     op, edge_tensor_name(t), i, (double)s);
  return EDGE_OK;
}

edge_status edge_q_tensor_params(edge_context *ctx, const char *op, const edge_tensor *t, bool allow_uint8,
                                 edge_qparams *out) {
  if (t->dtype != EDGE_INT8 && !(allow_uint8 && t->dtype == EDGE_UINT8))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: tensor '%s' is %s; expected int8%s", op, edge_tensor_name(t),
                     edge_dtype_name(t->dtype), allow_uint8 ? " or uint8" : "");
  if (t->num_quant_params != 1 || !t->scales || !t->zero_points)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: tensor '%s' (%s) has %d quantization params; a quantized activation needs exactly 1", op,
                     edge_tensor_name(t), edge_dtype_name(t->dtype), t->num_quant_params);
  edge_status status = check_scale(ctx, op, t, 0);
  if (status != EDGE_OK) return status;
  out->qmin = t->dtype == EDGE_UINT8 ? 0 : -128;
  out->qmax = t->dtype == EDGE_UINT8 ? 255 : 127;
  int64_t zp = t->zero_points[0];
  if (zp < out->qmin || zp > out->qmax)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: tensor '%s' has zero point %lld, outside [%d, %d] of %s", op,
                     edge_tensor_name(t), (long long)zp, out->qmin, out->qmax, edge_dtype_name(t->dtype));
  out->scale = t->scales[0];
  out->zero_point = (int32_t)zp;
  return EDGE_OK;
}

edge_status edge_q_weight_params(edge_context *ctx, const char *op, const edge_tensor *w, int32_t axis,
                                 int64_t channels) {
  if (w->dtype != EDGE_INT8)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: weights '%s' are %s; expected int8", op, edge_tensor_name(w),
                     edge_dtype_name(w->dtype));
  if (!w->scales || !w->zero_points || (w->num_quant_params != 1 && w->num_quant_params != channels))
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: weights '%s' have %d quantization scales; expected 1 or one per output channel (%lld)", op,
                     edge_tensor_name(w), w->num_quant_params, (long long)channels);
  if (w->num_quant_params > 1 && w->quantized_dimension != axis)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: weights '%s' are quantized along dimension %d; the output channels are dimension %d", op,
                     edge_tensor_name(w), w->quantized_dimension, axis);
  for (int32_t i = 0; i < w->num_quant_params; ++i) {
    edge_status status = check_scale(ctx, op, w, i);
    if (status != EDGE_OK) return status;
    if (w->zero_points[i] != 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s: weights '%s' have zero point %lld at channel %d; int8 weights must be symmetric (0)", op,
                       edge_tensor_name(w), (long long)w->zero_points[i], i);
  }
  return EDGE_OK;
}

edge_status edge_q_bias_params(edge_context *ctx, const char *op, const edge_tensor *bias, float x_scale,
                               const edge_tensor *w, int64_t channels) {
  if (bias->dtype != EDGE_INT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: bias '%s' is %s; an int8 op takes an int32 bias", op,
                     edge_tensor_name(bias), edge_dtype_name(bias->dtype));
  if (bias->rank != 1 || bias->shape[0] != channels)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: bias '%s' must have shape [%lld]", op, edge_tensor_name(bias),
                     (long long)channels);
  if (bias->num_quant_params == 0) return EDGE_OK;
  if (!bias->scales || !bias->zero_points || (bias->num_quant_params != 1 && bias->num_quant_params != channels))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: bias '%s' has %d quantization scales; expected 1 or %lld", op,
                     edge_tensor_name(bias), bias->num_quant_params, (long long)channels);
  for (int64_t c = 0; c < channels; ++c) {
    int32_t i = bias->num_quant_params == 1 ? 0 : (int32_t)c;
    /* The float32 product, which is what the converter stores; the double product of two floats
     * is exact, so rounding it once gives the same value. */
    float want = (float)((double)x_scale * (double)edge_q_channel_scale(w, c));
    float got = bias->scales[i];
    if (!(fabsf(got - want) <= 1e-5f * want) || bias->zero_points[i] != 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s: bias '%s' channel %lld has scale %g and zero point %lld; expected input scale x weight "
                       "scale = %g and 0",
                       op, edge_tensor_name(bias), (long long)c, (double)got, (long long)bias->zero_points[i],
                       (double)want);
  }
  return EDGE_OK;
}

edge_status edge_q_multiplier(edge_context *ctx, const char *op, const char *what, double real, int32_t *m,
                              int32_t *shift) {
  if (edge_quantize_multiplier(real, m, shift)) return EDGE_OK;
  return edge_fail(ctx, EDGE_INVALID_MODEL,
                   "%s: %s multiplier is %g; it must be finite, > 0 and < 2^30 for a fixed-point requantization "
                   "(check the quantization scales)",
                   op, what, real);
}

edge_status edge_q_activation_range(edge_context *ctx, const char *op, const edge_tensor *y, const edge_qparams *yp,
                                    const edge_activation *act, int32_t *lo, int32_t *hi) {
  *lo = yp->qmin;
  *hi = yp->qmax;
  const float inv = 1.0f / yp->scale;
  switch (act->op) {
    case EDGE_UNARY_IDENTITY: return EDGE_OK;
    case EDGE_UNARY_RELU: *lo = yp->zero_point; return EDGE_OK;
    case EDGE_UNARY_RELU6: {
      *lo = yp->zero_point;
      float six = (float)nearbyint(6.0 / (double)yp->scale); /* double, as the reference does */
      if (six < (float)(*hi - yp->zero_point)) *hi = yp->zero_point + (int32_t)six;
      return EDGE_OK;
    }
    case EDGE_UNARY_CLIP:
      if (act->alpha == act->alpha) *lo = edge_q_quantize(act->alpha, inv, yp->zero_point, yp->qmin, yp->qmax);
      if (act->beta == act->beta) *hi = edge_q_quantize(act->beta, inv, yp->zero_point, yp->qmin, yp->qmax);
      if (*lo > *hi)
        return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': fused CLIP(%g, %g) is empty", op, edge_tensor_name(y),
                         (double)act->alpha, (double)act->beta);
      return EDGE_OK;
    default:
      return edge_fail(ctx, EDGE_UNSUPPORTED,
                       "%s '%s': fused activation %d on an int8 output; only RELU, RELU6 and CLIP fuse into integer "
                       "kernels",
                       op, edge_tensor_name(y), (int)act->op);
  }
}

bool edge_q_same_params(const edge_tensor *a, const edge_tensor *b) {
  return a->num_quant_params == 1 && b->num_quant_params == 1 && a->dtype == b->dtype &&
         memcmp(&a->scales[0], &b->scales[0], sizeof(float)) == 0 && a->zero_points[0] == b->zero_points[0];
}

edge_status edge_q_check_accumulator(edge_context *ctx, const char *what, const int32_t *bias, size_t channels,
                                     size_t depth) {
  for (size_t c = 0; c < channels; ++c)
    if (fabs((double)bias[c]) + (double)depth * 32768.0 > 2147483647.0)
      return edge_fail(ctx, EDGE_UNSUPPORTED,
                       "%s: output channel %zu: int32 bias %d plus %zu products of int8 values may overflow the "
                       "int32 accumulator (the channel's weight scale is too small for its bias)",
                       what, c, (int)bias[c], depth);
  return EDGE_OK;
}

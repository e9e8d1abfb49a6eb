/* What every integer (int8) and dynamic op path shares: validating a tensor's quantization
 * params, fixed-point multipliers, the clamp range a fused activation gives, and the scalar
 * requantize / quantize / dequantize steps. The arithmetic is the issue-4 contract
 * (cruntime/src/kernels/requant.h holds the kernels' side of it, used here too):
 *
 *   multiplier M > 0 (double, from float32 scales) -> m = llround(frac * 2^31), shift = 31 - exp
 *   requantize(acc) = (int64(acc) * m + 2^(shift-1)) >> shift      (rounds half toward +infinity)
 *   y = clamp(zp_y + requantize(acc), qmin, qmax)
 *   quantize(x)     = clamp(zp + nearbyint(x * (1.0f / s)), qmin, qmax)   (float32, ties to even)
 *   dequantize(q)   = (float)(q - zp) * s
 *
 * The int8 path of an op is picked by its prepare from the tensors' dtypes; prepare then sets
 * node->quantized so that the op's eval and release hand over to the integer kernel's. */
#ifndef EDGE_OPS_QCOMMON_H
#define EDGE_OPS_QCOMMON_H

#include <math.h>

#include "../internal.h"
#include "../kernels/requant.h"

/* One tensor's per-tensor params with the integer range of its dtype. */
typedef struct {
  float scale;
  int32_t zero_point;
  int32_t qmin, qmax; /* [-128, 127] for int8, [0, 255] for uint8 */
} edge_qparams;

/* A per-tensor quantized activation: dtype int8 (or uint8 when allow_uint8), exactly one scale
 * that is finite and > 0, a zero point inside the dtype's range. Errors name op and tensor. */
edge_status edge_q_tensor_params(edge_context *ctx, const char *op, const edge_tensor *t, bool allow_uint8,
                                 edge_qparams *out);

/* Symmetric int8 weights quantized per channel along `axis` (channels entries) or per tensor:
 * dtype int8, 1 or `channels` scales (finite, > 0), every zero point 0. */
edge_status edge_q_weight_params(edge_context *ctx, const char *op, const edge_tensor *w, int32_t axis,
                                 int64_t channels);
static inline float edge_q_channel_scale(const edge_tensor *w, int64_t c) {
  return w->num_quant_params == 1 ? w->scales[0] : w->scales[c];
}

/* An int32 bias of shape [channels] whose scale, when the file gives one, is s_x * s_w[c]. */
edge_status edge_q_bias_params(edge_context *ctx, const char *op, const edge_tensor *bias, float x_scale,
                               const edge_tensor *w, int64_t channels);

/* The fixed-point form of real multiplier M (what: words for the message). M must be finite and
 * > 0; M >= 2^30 is refused (the shift would not be positive); M < 2^-32 gives m = 0, shift = 62. */
/* Refuses (EDGE_UNSUPPORTED, naming the channel) an int32 bias that leaves too little room for
 * depth products of int8 differences (each at most 255 * 128): the same test at every ISA level, so
 * no level computes what another refuses. */
edge_status edge_q_check_accumulator(edge_context *ctx, const char *what, const int32_t *bias, size_t channels,
                                     size_t depth);
edge_status edge_q_multiplier(edge_context *ctx, const char *op, const char *what, double real, int32_t *m,
                              int32_t *shift);

/* The output clamp [*lo, *hi] of a quantized output y with a fused activation: IDENTITY keeps
 * the dtype range, RELU starts at zp, RELU6 ends at zp + round_half_even(6 / s), CLIP quantizes
 * its bounds. Any other activation is EDGE_UNSUPPORTED (the converter keeps such ops in float). */
edge_status edge_q_activation_range(edge_context *ctx, const char *op, const edge_tensor *y, const edge_qparams *yp,
                                    const edge_activation *act, int32_t *lo, int32_t *hi);

/* Whether two tensors carry the same per-tensor params (scale bits and zero point). */
bool edge_q_same_params(const edge_tensor *a, const edge_tensor *b);

/* Largest count of int8 x int8 products (each |.| <= 255 * 128) an int32 sum holds with room
 * for a bias: prepare refuses longer dot products instead of letting the accumulator wrap. */
#define EDGE_Q_MAX_DEPTH 65000

/* clamp(zp + requantize(acc, m, shift), lo, hi): requant.h's rule. */
static inline int32_t edge_q_requantize_clamp(int32_t acc, int32_t m, int32_t shift, int32_t zp, int32_t lo,
                                              int32_t hi) {
  return edge_clamp_int64(zp + edge_requantize(acc, m, shift), lo, hi);
}

static inline int32_t edge_q_clamp(int64_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : (int32_t)v);
}

/* clamp(zp + nearbyint(x * inv_scale)) with inv_scale = 1.0f / scale computed by the caller in
 * float32. NaN quantizes to the zero point; the rounding is the FPU's default (ties to even). */
static inline int32_t edge_q_quantize(float x, float inv_scale, int32_t zero_point, int32_t lo, int32_t hi) {
  float r = nearbyintf(x * inv_scale);
  if (r != r) r = 0.0f;
  if (r > 1e9f) r = 1e9f;
  if (r < -1e9f) r = -1e9f;
  return edge_q_clamp((int64_t)zero_point + (int64_t)r, lo, hi);
}

/* Integer kernels of the op families (one file each), called from the float ops' prepare when the
 * dtypes ask for them, and from their eval / release when node->quantized is set. */
edge_status edge_qconv_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qconv_eval(edge_context *ctx, edge_node *node);
void edge_qconv_release(edge_node *node);
edge_status edge_qfc_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qfc_eval(edge_context *ctx, edge_node *node);
void edge_qfc_release(edge_node *node);
edge_status edge_qmatmul_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qmatmul_eval(edge_context *ctx, edge_node *node);
void edge_qmatmul_release(edge_node *node);
edge_status edge_qbinary_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qbinary_eval(edge_context *ctx, edge_node *node);
void edge_qbinary_release(edge_node *node);
edge_status edge_qpool_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qpool_eval(edge_context *ctx, edge_node *node);
void edge_qpool_release(edge_node *node);
edge_status edge_qreduce_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qreduce_eval(edge_context *ctx, edge_node *node);
void edge_qreduce_release(edge_node *node);
edge_status edge_qsoftmax_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qsoftmax_eval(edge_context *ctx, edge_node *node);
void edge_qsoftmax_release(edge_node *node);
edge_status edge_qconcat_prepare(edge_context *ctx, edge_node *node);
edge_status edge_qconcat_eval(edge_context *ctx, edge_node *node);
void edge_qconcat_release(edge_node *node);

/* Dynamic mode's input step over n floats: s = max|x| / 127 (1 when all are zero), then
 * q = clamp(nearbyint(x / s), -127, 127) in float32 (NaN -> 0). Returns s. */
float edge_q_dynamic_quantize(edge_context *ctx, const float *x, int64_t n, int8_t *q);

/* Whether a tensor is int8 (the dtype that selects the integer kernels). */
static inline bool edge_q_is_int8(const edge_tensor *t) { return t->dtype == EDGE_INT8; }

#endif

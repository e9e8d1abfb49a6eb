/* CONV_2D on int8 tensors (NHWC, weights OHWI), depthwise and grouped included, in two modes
 * picked by dtypes:
 *
 *   int8:    x int8 (per tensor), w int8 per output channel (symmetric), bias int32, y int8:
 *            acc[o] = bias[o] + sum over taps and channels of (x - zp_x) * w[o]   (padding adds 0)
 *            y = clamp(zp_y + requantize(acc, m[o], shift[o])), M[o] = s_x * s_w[o] / s_y
 *   dynamic: x float32, w int8 per output channel, bias float32, y float32: the whole input is
 *            quantized symmetrically with s = max|x| / 127 (1 when x is all zeros),
 *            x_q = clamp(nearbyint(x / s), -127, 127), acc = sum x_q * w (int32), then
 *            y = (float)acc * (s * s_w[o]) + bias[o] and the fused activation in float.
 *
 * Above EDGE_ISA_SCALAR, with constant weights and bias, the qs8 convolution plans of
 * kernels/qgemm.h run (GEMM, depthwise or indirect GEMM, weights packed once here); the loops
 * below are the reference EDGE_ISA=scalar runs and the path for weights computed by the graph.
 * Both sum exact integers, so every ISA gives the same bytes. Work is split over N*OH output rows
 * (bit-identical for any thread count). Scratch: the quantized input (dynamic mode), then the
 * plan's scratch or one tap list per thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/qgemm.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  edge_conv_shape shape;
  int64_t group_in_c, group_out_c;
  bool dynamic;
  int32_t zp_x;
  edge_qs8_requant_params out;
  int32_t *multiplier, *shift, *bias; /* int8 mode, per output channel (bias: zeros when absent) */
  float *weight_scale;                /* dynamic mode, per output channel */
  edge_qs8_conv_plan *fast;           /* NULL: the reference loops */
  size_t quantized_bytes;             /* dynamic mode: scratch head holding x_q (64-byte multiple) */
} qconv_plan;

typedef struct {
  int64_t x_offset, w_offset;
} qconv_tap;

void edge_qconv_release(edge_node *node) {
  qconv_plan *s = node->plan;
  if (s) {
    edge_qs8_conv_plan_free(s->fast);
    free(s->multiplier);
    free(s->shift);
    free(s->bias);
    free(s->weight_scale);
  }
  free(s);
  node->plan = NULL;
  node->quantized = false;
}

static size_t round_up_64(size_t n) { return (n + 63) / 64 * 64; }

edge_status edge_qconv_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "CONV_2D";
  edge_qconv_release(node);
  node->quantized = true;
  qconv_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  node->plan = s;
  edge_tensor *x = edge_op_input(ctx, node, 0), *w = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  const char *name = edge_tensor_name(y);
  s->dynamic = x->dtype == EDGE_FLOAT32;
  if (s->dynamic && (y->dtype != EDGE_FLOAT32 || (bias && bias->dtype != EDGE_FLOAT32)))
    return edge_fail(ctx, EDGE_UNSUPPORTED,
                     "%s '%s': dynamic conv (float32 input '%s', int8 weights '%s') needs a float32 output and "
                     "bias; output is %s",
                     op, name, edge_tensor_name(x), edge_tensor_name(w), edge_dtype_name(y->dtype));
  if (x->rank != 4 || w->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' has rank %d and weights '%s' rank %d; both must be 4",
                     op, name, edge_tensor_name(x), x->rank, edge_tensor_name(w), w->rank);
  const edge_conv2d_options *o = &node->options.conv2d;
  for (int32_t i = 0; i < 2; ++i)
    if (o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': strides (%d, %d) and dilations (%d, %d) must be >= 1", op,
                       name, o->strides[0], o->strides[1], o->dilations[0], o->dilations[1]);
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pads (%d, %d, %d, %d) must be >= 0", op, name, o->pads[0],
                       o->pads[1], o->pads[2], o->pads[3]);
  edge_conv_shape *p = &s->shape;
  p->batch = x->shape[0];
  p->in_h = x->shape[1];
  p->in_w = x->shape[2];
  p->in_c = x->shape[3];
  p->out_c = w->shape[0];
  p->kernel_h = w->shape[1];
  p->kernel_w = w->shape[2];
  p->groups = o->groups;
  p->stride_h = o->strides[0];
  p->stride_w = o->strides[1];
  p->dilation_h = o->dilations[0];
  p->dilation_w = o->dilations[1];
  p->pad_top = o->pads[0];
  p->pad_left = o->pads[1];
  if (p->groups < 1 || p->in_c % p->groups != 0 || p->out_c % p->groups != 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': groups is %lld; it must be >= 1 and divide both the %lld input and %lld output channels",
                     op, name, (long long)p->groups, (long long)p->in_c, (long long)p->out_c);
  s->group_in_c = p->in_c / p->groups;
  s->group_out_c = p->out_c / p->groups;
  if (w->shape[3] != s->group_in_c || p->kernel_h < 1 || p->kernel_w < 1) {
    char ws[128];
    edge_format_shape(ws, sizeof ws, w->rank, w->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': weights '%s' are %s; expected [out_channels, kh >= 1, kw >= 1, %lld] for %lld input "
                     "channels in %lld groups",
                     op, name, edge_tensor_name(w), ws, (long long)s->group_in_c, (long long)p->in_c, (long long)p->groups);
  }
  int64_t depth = p->kernel_h * p->kernel_w * s->group_in_c;
  if (depth > EDGE_Q_MAX_DEPTH)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': %lld products per output overflow an int32 accumulator (max %d)",
                     op, name, (long long)depth, EDGE_Q_MAX_DEPTH);
  int64_t span_h = p->dilation_h * (p->kernel_h - 1) + 1, span_w = p->dilation_w * (p->kernel_w - 1) + 1;
  int64_t reach_h = p->in_h + o->pads[0] + o->pads[2] - span_h, reach_w = p->in_w + o->pads[1] + o->pads[3] - span_w;
  p->out_h = reach_h < 0 ? -1 : reach_h / p->stride_h + 1;
  p->out_w = reach_w < 0 ? -1 : reach_w / p->stride_w + 1;
  if (p->out_h < 0 || p->out_w < 0 || p->in_h < 1 || p->in_w < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input %lldx%lld with kernel %lldx%lld gives no output", op, name,
                     (long long)p->in_h, (long long)p->in_w, (long long)p->kernel_h, (long long)p->kernel_w);
  int64_t shape[4] = {p->batch, p->out_h, p->out_w, p->out_c};
  edge_status status = edge_set_shape(ctx, y, 4, shape);
  if (status != EDGE_OK) return status;

  char what[160];
  snprintf(what, sizeof what, "%s '%s'", op, name);
  if ((status = edge_q_weight_params(ctx, what, w, 0, p->out_c)) != EDGE_OK) return status;
  size_t channels = (size_t)p->out_c;
  if (s->dynamic) {
    if (bias && (bias->rank != 1 || bias->shape[0] != p->out_c))
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: bias '%s' must have shape [%lld]", what, edge_tensor_name(bias),
                       (long long)p->out_c);
    s->weight_scale = malloc(channels * sizeof(float) + 1);
    if (!s->weight_scale) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
    for (size_t c = 0; c < channels; ++c) s->weight_scale[c] = edge_q_channel_scale(w, (int64_t)c);
    s->quantized_bytes = round_up_64((size_t)edge_num_elements(4, x->shape));
  } else {
    edge_qparams xp, yp;
    if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
    if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
    if (bias && (status = edge_q_bias_params(ctx, what, bias, xp.scale, w, p->out_c)) != EDGE_OK) return status;
    s->zp_x = xp.zero_point;
    s->out.zero_point = yp.zero_point;
    if ((status = edge_q_activation_range(ctx, op, y, &yp, &node->activation, &s->out.qmin, &s->out.qmax)) != EDGE_OK)
      return status;
    s->multiplier = malloc(channels * sizeof(int32_t) + 1);
    s->shift = malloc(channels * sizeof(int32_t) + 1);
    s->bias = calloc(channels + 1, sizeof(int32_t));
    if (!s->multiplier || !s->shift || !s->bias) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
    if (bias && bias->data) memcpy(s->bias, bias->data, channels * sizeof(int32_t));
    if ((status = edge_q_check_accumulator(ctx, what, s->bias, channels,
                                           (size_t)(w->shape[1] * w->shape[2] * w->shape[3]))) != EDGE_OK)
      return status;
    for (size_t c = 0; c < channels; ++c) {
      double real = (double)xp.scale * (double)edge_q_channel_scale(w, (int64_t)c) / (double)yp.scale;
      if ((status = edge_q_multiplier(ctx, what, "output channel", real, &s->multiplier[c], &s->shift[c])) != EDGE_OK)
        return status;
    }
  }

  const edge_qs8_kernels *kernels = &edge_kernels()->qs8;
  bool constant = w->kind == EDGE_TENSOR_CONSTANT && w->data && (!bias || (bias->kind == EDGE_TENSOR_CONSTANT && bias->data));
  if (kernels && edge_isa_level_get() != EDGE_ISA_SCALAR && constant) {
    status = s->dynamic ? edge_qs8_conv_plan_create_dynamic(kernels, p, w->data, s->weight_scale,
                                                            bias ? bias->data : NULL, &node->activation, &s->fast)
                        : edge_qs8_conv_plan_create(kernels, p, w->data, s->bias, s->zp_x, s->multiplier, s->shift,
                                                    &s->out, &s->fast);
    if (status != EDGE_OK) {
      char message[EDGE_ERROR_CAPACITY];
      snprintf(message, sizeof message, "%s", edge_last_error());
      return edge_fail(ctx, status, "%s: %s", what, message);
    }
    node->scratch_bytes = s->quantized_bytes + edge_qs8_conv_plan_scratch_bytes(s->fast);
    node->plan_bytes = edge_qs8_conv_plan_kept_bytes(s->fast);
    return EDGE_OK;
  }
  node->scratch_bytes = s->quantized_bytes + (size_t)ctx->num_threads * (size_t)(p->kernel_h * p->kernel_w) * sizeof(qconv_tap);
  return EDGE_OK;
}

/* The taps of output pixel (n, oh, ow) that land on real input; returns how many. */
static int32_t qconv_taps(const edge_conv_shape *p, int64_t group_in_c, int64_t n, int64_t oh, int64_t ow,
                          qconv_tap *taps) {
  int32_t count = 0;
  for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
    int64_t ih = oh * p->stride_h - p->pad_top + kh * p->dilation_h;
    if (ih < 0 || ih >= p->in_h) continue;
    for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
      int64_t iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
      if (iw < 0 || iw >= p->in_w) continue;
      taps[count].x_offset = ((n * p->in_h + ih) * p->in_w + iw) * p->in_c;
      taps[count].w_offset = (kh * p->kernel_w + kw) * group_in_c;
      ++count;
    }
  }
  return count;
}

typedef struct {
  const edge_node *node;
  const qconv_plan *s;
  const int8_t *x, *w;
  const float *fbias;   /* dynamic mode */
  float x_scale;        /* dynamic mode */
  void *y;
  char *taps;           /* per-thread tap lists */
} qconv_job;

static void qconv_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const qconv_job *job = arg;
  const qconv_plan *s = job->s;
  const edge_conv_shape *p = &s->shape;
  qconv_tap *taps = (qconv_tap *)job->taps + (int64_t)thread * p->kernel_h * p->kernel_w;
  int64_t row = p->kernel_h * p->kernel_w * s->group_in_c, cg = s->group_in_c;
  int32_t zp = s->zp_x;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->out_h, oh = r % p->out_h;
    for (int64_t ow = 0; ow < p->out_w; ++ow) {
      int32_t num_taps = qconv_taps(p, cg, n, oh, ow, taps);
      int64_t pixel = (r * p->out_w + ow) * p->out_c;
      for (int64_t o = 0; o < p->out_c; ++o) {
        int64_t g = o / s->group_out_c;
        const int8_t *x = job->x + g * cg, *w = job->w + o * row;
        int32_t acc = s->dynamic ? 0 : s->bias[o];
        for (int32_t t = 0; t < num_taps; ++t) {
          const int8_t *xt = x + taps[t].x_offset, *wt = w + taps[t].w_offset;
          for (int64_t c = 0; c < cg; ++c) acc += ((int32_t)xt[c] - zp) * (int32_t)wt[c];
        }
        if (s->dynamic) {
          float v = (float)acc * (job->x_scale * s->weight_scale[o]);
          ((float *)job->y)[pixel + o] = job->fbias ? v + job->fbias[o] : v;
        } else {
          ((int8_t *)job->y)[pixel + o] = (int8_t)edge_q_requantize_clamp(acc, s->multiplier[o], s->shift[o],
                                                                          s->out.zero_point, s->out.qmin, s->out.qmax);
        }
      }
    }
    if (s->dynamic)
      edge_activation_apply(&job->node->activation, (float *)job->y + r * p->out_w * p->out_c,
                            (size_t)(p->out_w * p->out_c));
  }
}

/* Dynamic mode's input quantization: max|x| then x_q, both in float32. */
typedef struct {
  const float *x;
  int8_t *q;
  float scale;
  int64_t n;
} dynamic_quantize_job;

#define QUANTIZE_BLOCK 4096

static void dynamic_quantize_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const dynamic_quantize_job *job = arg;
  for (int64_t b = begin; b < end; ++b) {
    int64_t i0 = b * QUANTIZE_BLOCK, i1 = i0 + QUANTIZE_BLOCK < job->n ? i0 + QUANTIZE_BLOCK : job->n;
    for (int64_t i = i0; i < i1; ++i) {
      float v = nearbyintf(job->x[i] / job->scale);
      job->q[i] = (int8_t)(v > 127.0f ? 127 : (v < -127.0f ? -127 : (v == v ? (int32_t)v : 0)));
    }
  }
}

/* s = max|x| / 127 (1 for all zeros); x_q into q. Returns s. */
float edge_q_dynamic_quantize(edge_context *ctx, const float *x, int64_t n, int8_t *q) {
  float max_abs = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    float a = fabsf(x[i]);
    max_abs = a > max_abs ? a : max_abs;
  }
  float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
  dynamic_quantize_job job = {x, q, scale, n};
  edge_nd_parallel(ctx, (n + QUANTIZE_BLOCK - 1) / QUANTIZE_BLOCK, 4, dynamic_quantize_blocks, &job);
  return scale;
}

edge_status edge_qconv_eval(edge_context *ctx, edge_node *node) {
  const qconv_plan *s = node->plan;
  const edge_conv_shape *p = &s->shape;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  const int8_t *xq = x->data;
  float x_scale = 1.0f;
  char *scratch = node->scratch;
  /* No scratch when neither the dynamic quantization nor the kernel needs one: no offset on NULL. */
  char *work = scratch ? scratch + s->quantized_bytes : NULL;
  if (s->dynamic) {
    x_scale = edge_q_dynamic_quantize(ctx, x->data, edge_num_elements(4, x->shape), (int8_t *)scratch);
    xq = (const int8_t *)scratch;
  }
  if (s->fast) {
    edge_qs8_conv_plan_run(s->fast, ctx->pool, xq, y->data, x_scale, work);
    return EDGE_OK;
  }
  qconv_job job = {node, s, xq, edge_op_input(ctx, node, 1)->data, s->dynamic && bias ? bias->data : NULL,
                   x_scale, y->data, work};
  int64_t macs_per_row = p->out_w * p->out_c * p->kernel_h * p->kernel_w * s->group_in_c;
  edge_nd_parallel(ctx, p->batch * p->out_h, 1 + 32768 / (macs_per_row + 1), qconv_rows, &job);
  return EDGE_OK;
}

/* CONV_2D and CONV_TRANSPOSE_2D, float32 scalar reference, NHWC activations.
 *
 * CONV_2D may take a fourth input, a residual (a skip connection's ADD fused by the converter):
 * y = act(conv(x) + bias + residual), the residual's channels added to the first of the output's
 * (fewer are a zero-padded residual, the channel PAD BlazeFace's skips make). It is added in the
 * epilogue of each tile while the tile is in cache, saving the ADD's pass over memory; the floats
 * are those of the separate ADD.
 *
 * Both are written as a gather per output pixel: a list of "taps" (kernel positions that land on
 * a real input pixel) is built first, then every output channel is a dot product over those taps
 * and the group's contiguous input channels against the weight row w[o], which is also contiguous
 * over (kh, kw, c) in both weight layouts. Padding taps are skipped, never multiplied by zero, so
 * the sum is exactly the ONNX one. Four output channels are computed together to share the input
 * loads and give four independent accumulation chains.
 *
 * Work is split over N*OH output rows; each output value is computed by one thread in a fixed
 * order, so results are bit-identical for any thread count. Scratch: one tap list per thread.
 *
 * This reference runs at EDGE_ISA=scalar (and with EDGE_CONV=reference). Above scalar, prepare
 * builds a plan from kernels/conv_driver.h instead (GEMM for 1x1, depthwise kernels, Winograd,
 * indirect GEMM, GEMM + col2im for the transpose). Constant weights are packed once at prepare.
 * Weights that are variables (training) are packed again by eval whenever ctx->variables_version
 * moved since the last packing, so once per optimizer step, into memory the plan allocated at
 * prepare; weights computed by the graph (an activation) are packed on every eval. */
#include <stdlib.h>
#include <string.h>

#include "../kernels/conv_driver.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  bool transposed;
  int64_t batch, in_h, in_w, in_c;
  int64_t out_h, out_w, out_c;
  int64_t kernel_h, kernel_w;
  int64_t groups, group_in_c, group_out_c;
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int64_t residual_c; /* channels of the fused residual input (3), 0: none */
} conv_geometry;

typedef struct {
  conv_geometry geometry;
  edge_conv_plan *fast;     /* NULL: the reference below */
  bool repack;              /* fast was made for changing weights: eval packs them (edge_conv_plan_pack) */
  bool weights_persistent;  /* weights and bias are variables or constants: pack only on a version change */
  bool packed;              /* packed_version is valid */
  uint64_t packed_version;  /* ctx->variables_version the packed weights were made at */
} conv_plan;

static void conv_release(edge_node *node);

/* A kernel position that reads input pixel x_offset (element offset of its channel 0) with weight
 * elements starting at w_offset within each output channel's row. */
typedef struct {
  int64_t x_offset, w_offset;
} conv_tap;

static edge_tensor *optional_input(edge_context *ctx, const edge_node *node, int32_t i) {
  return i < node->num_inputs && node->inputs[i] >= 0 ? &ctx->tensors[node->inputs[i]] : NULL;
}

static edge_status check_float32(edge_context *ctx, const char *op, const edge_tensor *t, const char *role) {
  if (t->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' is %s; only float32 is supported", op, role, edge_tensor_name(t),
                     edge_dtype_name(t->dtype));
  return EDGE_OK;
}

static edge_status conv_prepare_common(edge_context *ctx, edge_node *node, bool transposed) {
  const char *op = transposed ? "CONV_TRANSPOSE_2D" : "CONV_2D";
  conv_release(node);
  const int32_t most_inputs = transposed ? 3 : 4;
  if (node->num_inputs < 2 || node->num_inputs > most_inputs || node->num_outputs != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d inputs and %d outputs, expects 2 to %d inputs and 1 output",
                     op, node->num_inputs, node->num_outputs, most_inputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < (i >= 2 ? -1 : 0) || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input %d is tensor %d, not one of the %d tensors", op, i,
                       node->inputs[i], ctx->num_tensors);
  if (node->outputs[0] < 0 || node->outputs[0] >= ctx->num_tensors)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: output is tensor %d, not one of the %d tensors", op,
                     node->outputs[0], ctx->num_tensors);
  edge_tensor *x = edge_op_input(ctx, node, 0), *w = edge_op_input(ctx, node, 1), *bias = optional_input(ctx, node, 2);
  edge_tensor *residual = optional_input(ctx, node, 3), *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  edge_status status;
  if (residual && edge_q_is_int8(w))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': a residual input ('%s') is supported for float32 weights only",
                     op, name, edge_tensor_name(residual));
  if (!transposed && edge_q_is_int8(w)) return edge_qconv_prepare(ctx, node); /* int8 or dynamic */
  if ((status = check_float32(ctx, op, x, "input")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, w, "weights")) != EDGE_OK) return status;
  if (bias && (status = check_float32(ctx, op, bias, "bias")) != EDGE_OK) return status;
  if (residual && (status = check_float32(ctx, op, residual, "residual")) != EDGE_OK) return status;
  if ((status = check_float32(ctx, op, y, "output")) != EDGE_OK) return status;
  if (x->rank != 4 || w->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' has rank %d and weights '%s' rank %d; both must be 4",
                     op, name, edge_tensor_name(x), x->rank, edge_tensor_name(w), w->rank);

  const edge_conv2d_options *o = &node->options.conv2d;
  for (int32_t i = 0; i < 2; ++i) {
    if (o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': strides (%d, %d) and dilations (%d, %d) must be >= 1", op,
                       name, o->strides[0], o->strides[1], o->dilations[0], o->dilations[1]);
    if (transposed && o->output_padding[i] < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': output_padding (%d, %d) must be >= 0", op, name,
                       o->output_padding[0], o->output_padding[1]);
  }
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pads (%d, %d, %d, %d) must be >= 0", op, name, o->pads[0],
                       o->pads[1], o->pads[2], o->pads[3]);

  conv_geometry p = {0};
  p.transposed = transposed;
  p.batch = x->shape[0];
  p.in_h = x->shape[1];
  p.in_w = x->shape[2];
  p.in_c = x->shape[3];
  p.kernel_h = w->shape[1];
  p.kernel_w = w->shape[2];
  p.out_c = w->shape[0];
  p.groups = o->groups;
  p.stride_h = o->strides[0];
  p.stride_w = o->strides[1];
  p.dilation_h = o->dilations[0];
  p.dilation_w = o->dilations[1];
  p.pad_top = o->pads[0];
  p.pad_left = o->pads[1];
  if (p.groups < 1 || p.in_c % p.groups != 0 || p.out_c % p.groups != 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': groups is %lld; it must be >= 1 and divide both the %lld input and %lld output channels",
                     op, name, (long long)p.groups, (long long)p.in_c, (long long)p.out_c);
  p.group_in_c = p.in_c / p.groups;
  p.group_out_c = p.out_c / p.groups;
  if (w->shape[3] != p.group_in_c || p.kernel_h < 1 || p.kernel_w < 1) {
    char ws[128];
    edge_format_shape(ws, sizeof ws, w->rank, w->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': weights '%s' are %s; expected [out_channels, kh >= 1, kw >= 1, %lld] for %lld input "
                     "channels in %lld groups",
                     op, name, edge_tensor_name(w), ws, (long long)p.group_in_c, (long long)p.in_c, (long long)p.groups);
  }
  if (bias && (bias->rank != 1 || bias->shape[0] != p.out_c))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': bias '%s' must have shape [%lld]", op, name,
                     edge_tensor_name(bias), (long long)p.out_c);

  int64_t span_h = p.dilation_h * (p.kernel_h - 1) + 1, span_w = p.dilation_w * (p.kernel_w - 1) + 1;
  if (transposed) {
    p.out_h = (p.in_h - 1) * p.stride_h - o->pads[0] - o->pads[2] + span_h + o->output_padding[0];
    p.out_w = (p.in_w - 1) * p.stride_w - o->pads[1] - o->pads[3] + span_w + o->output_padding[1];
  } else {
    int64_t reach_h = p.in_h + o->pads[0] + o->pads[2] - span_h, reach_w = p.in_w + o->pads[1] + o->pads[3] - span_w;
    p.out_h = reach_h < 0 ? -1 : reach_h / p.stride_h + 1;
    p.out_w = reach_w < 0 ? -1 : reach_w / p.stride_w + 1;
  }
  if (p.out_h < 0 || p.out_w < 0 || p.in_h < 1 || p.in_w < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': input %lldx%lld with kernel %lldx%lld, dilations (%lld, %lld), pads (%d, %d, %d, %d) "
                     "gives no output",
                     op, name, (long long)p.in_h, (long long)p.in_w, (long long)p.kernel_h, (long long)p.kernel_w,
                     (long long)p.dilation_h, (long long)p.dilation_w, o->pads[0], o->pads[1], o->pads[2], o->pads[3]);
  int64_t shape[4] = {p.batch, p.out_h, p.out_w, p.out_c};
  /* The residual is read after the output is written: it must be another tensor, of the output's
   * shape but for its channels (1 .. out_c; fewer are zero-padded at the end). */
  if (residual && (residual == y || residual->rank != 4 || residual->shape[0] != p.batch ||
                   residual->shape[1] != p.out_h || residual->shape[2] != p.out_w || residual->shape[3] < 1 ||
                   residual->shape[3] > p.out_c)) {
    char rs[128];
    edge_format_shape(rs, sizeof rs, residual->rank, residual->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': residual '%s' is %s; expected [%lld, %lld, %lld, 1 .. %lld], a tensor other than the "
                     "output",
                     op, name, edge_tensor_name(residual), rs, (long long)p.batch, (long long)p.out_h,
                     (long long)p.out_w, (long long)p.out_c);
  }
  p.residual_c = residual ? residual->shape[3] : 0;
  if ((status = edge_set_shape(ctx, y, 4, shape)) != EDGE_OK) return status;

  conv_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
  plan->geometry = p;
  node->plan = plan;
  const edge_kernel_config *kernels = edge_kernels();
  const bool constant_weights = w->kind == EDGE_TENSOR_CONSTANT && w->data &&
                                (!bias || (bias->kind == EDGE_TENSOR_CONSTANT && bias->data));
  const char *forced = getenv("EDGE_CONV");
  if (kernels->isa != EDGE_ISA_SCALAR && !(forced && strcmp(forced, "reference") == 0)) {
    edge_conv_shape shape = {transposed, p.batch, p.in_h, p.in_w, p.in_c, p.out_h, p.out_w, p.out_c, p.kernel_h,
                             p.kernel_w, p.groups, p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_top,
                             p.pad_left, p.residual_c};
    plan->repack = !constant_weights;
    plan->weights_persistent = w->kind != EDGE_TENSOR_ACTIVATION && (!bias || bias->kind != EDGE_TENSOR_ACTIVATION);
    plan->fast = edge_conv_plan_create(kernels, &shape, constant_weights ? w->data : NULL,
                                        constant_weights && bias ? bias->data : NULL, &node->activation,
                                        edge_conv_winograd_mode_from_env());
    if (!plan->fast)
      return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory packing the weights of '%s'", op, name,
                       edge_tensor_name(w));
    node->scratch_bytes = edge_conv_plan_scratch_bytes(plan->fast, ctx->num_threads);
    node->plan_bytes = edge_conv_plan_kept_bytes(plan->fast);
    return EDGE_OK;
  }
  node->scratch_bytes = (size_t)ctx->num_threads * (size_t)(p.kernel_h * p.kernel_w) * sizeof(conv_tap);
  return EDGE_OK;
}

/* The taps of output pixel (n, oh, ow); returns how many. */
static int32_t conv_taps(const conv_geometry *p, int64_t n, int64_t oh, int64_t ow, conv_tap *taps) {
  int32_t count = 0;
  for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
    int64_t ih;
    if (p->transposed) { /* oh = ih * stride - pad + kh * dilation */
      int64_t t = oh + p->pad_top - kh * p->dilation_h;
      if (t < 0 || t % p->stride_h) continue;
      ih = t / p->stride_h;
    } else {
      ih = oh * p->stride_h - p->pad_top + kh * p->dilation_h;
    }
    if (ih < 0 || ih >= p->in_h) continue;
    for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
      int64_t iw;
      if (p->transposed) {
        int64_t t = ow + p->pad_left - kw * p->dilation_w;
        if (t < 0 || t % p->stride_w) continue;
        iw = t / p->stride_w;
      } else {
        iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
      }
      if (iw < 0 || iw >= p->in_w) continue;
      taps[count].x_offset = ((n * p->in_h + ih) * p->in_w + iw) * p->in_c;
      taps[count].w_offset = (kh * p->kernel_w + kw) * p->group_in_c;
      ++count;
    }
  }
  return count;
}

typedef struct {
  edge_context *ctx;
  edge_node *node;
  const conv_geometry *geometry;
  const float *x, *w, *bias, *residual;
  float *y;
} conv_job;

/* y[o] for o in [0, count) of one group at one pixel: x points at the group's first channel, w at
 * the first output channel's weight row. */
static void conv_pixel_group(const conv_geometry *p, const conv_tap *taps, int32_t num_taps, const float *x,
                             const float *w, int64_t count, float *y) {
  int64_t cg = p->group_in_c, row = p->kernel_h * p->kernel_w * cg, o = 0;
  for (; o + 4 <= count; o += 4) {
    const float *w0 = w + o * row, *w1 = w0 + row, *w2 = w1 + row, *w3 = w2 + row;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    for (int32_t t = 0; t < num_taps; ++t) {
      const float *xt = x + taps[t].x_offset;
      int64_t wt = taps[t].w_offset;
      for (int64_t c = 0; c < cg; ++c) {
        float v = xt[c];
        a0 += v * w0[wt + c];
        a1 += v * w1[wt + c];
        a2 += v * w2[wt + c];
        a3 += v * w3[wt + c];
      }
    }
    y[o] = a0;
    y[o + 1] = a1;
    y[o + 2] = a2;
    y[o + 3] = a3;
  }
  for (; o < count; ++o) {
    const float *wo = w + o * row;
    float a = 0.0f;
    for (int32_t t = 0; t < num_taps; ++t) {
      const float *xt = x + taps[t].x_offset;
      int64_t wt = taps[t].w_offset;
      for (int64_t c = 0; c < cg; ++c) a += xt[c] * wo[wt + c];
    }
    y[o] = a;
  }
}

static void conv_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const conv_job *job = arg;
  const conv_geometry *p = job->geometry;
  conv_tap *taps = (conv_tap *)job->node->scratch + (int64_t)thread * p->kernel_h * p->kernel_w;
  int64_t row = p->kernel_h * p->kernel_w * p->group_in_c;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->out_h, oh = r % p->out_h;
    float *y_row = job->y + r * p->out_w * p->out_c;
    for (int64_t ow = 0; ow < p->out_w; ++ow) {
      float *y = y_row + ow * p->out_c;
      int32_t num_taps = conv_taps(p, n, oh, ow, taps);
      for (int64_t g = 0; g < p->groups; ++g)
        conv_pixel_group(p, taps, num_taps, job->x + g * p->group_in_c, job->w + g * p->group_out_c * row,
                         p->group_out_c, y + g * p->group_out_c);
      if (job->bias)
        for (int64_t o = 0; o < p->out_c; ++o) y[o] += job->bias[o];
      if (job->residual) {
        const float *add = job->residual + (r * p->out_w + ow) * p->residual_c;
        for (int64_t o = 0; o < p->residual_c; ++o) y[o] += add[o];
      }
    }
    edge_activation_apply(&job->node->activation, y_row, (size_t)(p->out_w * p->out_c));
  }
}

static edge_status conv_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qconv_eval(ctx, node);
  conv_plan *plan = node->plan;
  if (plan->fast) {
    if (plan->repack && (!plan->weights_persistent || !plan->packed ||
                          plan->packed_version != ctx->variables_version)) {
      const edge_tensor *bias = optional_input(ctx, node, 2);
      edge_conv_plan_pack(plan->fast, edge_op_input(ctx, node, 1)->data, bias ? bias->data : NULL);
      plan->packed = true;
      plan->packed_version = ctx->variables_version;
    }
    const edge_tensor *residual = optional_input(ctx, node, 3);
    edge_conv_plan_run(plan->fast, ctx->pool, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data,
                       residual ? residual->data : NULL, node->scratch);
    return EDGE_OK;
  }
  const conv_geometry *p = &plan->geometry;
  edge_tensor *bias = optional_input(ctx, node, 2), *residual = optional_input(ctx, node, 3);
  conv_job job = {ctx, node, p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                  bias ? bias->data : NULL, residual ? residual->data : NULL, edge_op_output(ctx, node, 0)->data};
  int64_t macs_per_row = p->out_w * p->out_c * p->kernel_h * p->kernel_w * p->group_in_c;
  edge_nd_parallel(ctx, p->batch * p->out_h, 1 + 32768 / (macs_per_row + 1), conv_rows, &job);
  return EDGE_OK;
}

static edge_status conv2d_prepare(edge_context *ctx, edge_node *node) { return conv_prepare_common(ctx, node, false); }

static edge_status conv_transpose2d_prepare(edge_context *ctx, edge_node *node) {
  return conv_prepare_common(ctx, node, true);
}

static void conv_release(edge_node *node) {
  if (node->quantized) {
    edge_qconv_release(node);
    return;
  }
  conv_plan *plan = node->plan;
  if (plan) edge_conv_plan_free(plan->fast);
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_conv2d = {conv2d_prepare, conv_eval, conv_release};
const edge_op_registration edge_op_conv_transpose2d = {conv_transpose2d_prepare, conv_eval, conv_release};

/* LAYER_NORM and LRN, float32 scalar reference.
 *
 * LAYER_NORM normalises each row of the trailing dims axis..rank-1 (mean, then the biased
 * variance of the centred values, both in double; with `rms` the mean is taken as 0, so the row is
 * divided by its root mean square: RMSNorm), then applies scale and bias broadcast to the
 * row's shape. When scale or bias is neither the row's full shape nor a single value, prepare
 * builds a table mapping each row position to its element. Rows are split over threads.
 *
 * LRN (ONNX, NHWC, across channels): for channel c the window is
 * [c - floor((size-1)/2), c + ceil((size-1)/2)] clipped to the channels, and
 * y = x / (bias + alpha / size * sum of squares)^beta. Pixels are split over threads.
 *
 * Both apply a fused activation, if the model sets one, to each finished row or pixel.
 *
 * Above EDGE_ISA_SCALAR, LAYER_NORM rows whose scale and bias are absent or full rows run on the
 * vector family's row kernel (kernels/vector.h; float sums, error stated in
 * kernels/vector/f32-layernorm.c); the loops here stay the reference EDGE_ISA=scalar runs.
 *
 * LAYER_NORM on int8 x and y (per-tensor params; scale and bias stay float32): the integer
 * reference's arithmetic (converter/quantize/int8_reference.py, layer_norm_int8; restated in
 * kernels/vector/s8-layernorm.c): exact integer row sums, the row's mean and 1/std in double
 * rounded once to float32, then float32 steps and a requantization. Prepare expands scale and bias
 * to full rows (bias zeros when absent; adding +0 changes no quantized value), so one row loop
 * serves every broadcast layout. Above EDGE_ISA_SCALAR rows run on the vector family's
 * s8_layernorm kernel, which gives the same bytes as the loop here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef enum { OPERAND_ABSENT, OPERAND_SCALAR, OPERAND_FULL, OPERAND_TABLE } operand_layout;

typedef struct {
  float epsilon;
  bool rms;                          /* RMSNorm: no centring, the mean of squares for the variance */
  int64_t rows, row_size;
  operand_layout scale_layout, bias_layout;
  int64_t *scale_index, *bias_index; /* OPERAND_TABLE: element of the operand per row position */
  /* int8 */
  edge_s8_layernorm_params q;
  float *gamma, *beta;               /* row_size each, expanded from scale and bias */
} layer_norm_plan;

static void layer_norm_release(edge_node *node) {
  layer_norm_plan *plan = node->plan;
  if (plan) {
    free(plan->scale_index);
    free(plan->bias_index);
    free(plan->gamma);
    free(plan->beta);
  }
  free(plan);
  node->plan = NULL;
  node->quantized = false;
}

/* Checks that operand t broadcasts to the row shape (shape[axis..rank)) and picks its layout. */
static edge_status plan_operand(edge_context *ctx, const char *name, const char *role, const edge_tensor *t,
                                const edge_tensor *x, int32_t axis, operand_layout *layout, int64_t **index) {
  *layout = OPERAND_ABSENT;
  *index = NULL;
  if (!t) return EDGE_OK;
  if (t->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "LAYER_NORM '%s': %s '%s' is %s; only float32 is supported", name, role,
                     edge_tensor_name(t), edge_dtype_name(t->dtype));
  int32_t row_rank = x->rank - axis;
  const int64_t *row_shape = x->shape + axis;
  bool fits = true;
  for (int32_t d = 0; d < t->rank; ++d) {
    int32_t rd = d - (t->rank - row_rank);
    int64_t want = rd >= 0 ? row_shape[rd] : 1;
    if (t->shape[d] != 1 && t->shape[d] != want) fits = false;
  }
  if (!fits) {
    char ts[128], rs[128];
    edge_format_shape(ts, sizeof ts, t->rank, t->shape);
    edge_format_shape(rs, sizeof rs, row_rank, row_shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM '%s': %s '%s' %s does not broadcast to the normalised shape %s",
                     name, role, edge_tensor_name(t), ts, rs);
  }
  int64_t count = edge_num_elements(t->rank, t->shape), row_size = edge_num_elements(row_rank, row_shape);
  if (count == 1) {
    *layout = OPERAND_SCALAR;
  } else if (count == row_size) {
    *layout = OPERAND_FULL;
  } else {
    int64_t strides[EDGE_MAX_RANK], position[EDGE_MAX_RANK] = {0};
    /* The operand's shape without its leading dims beyond the row rank (they are all 1). */
    int32_t lead = t->rank > row_rank ? t->rank - row_rank : 0;
    edge_nd_broadcast_strides(row_rank, row_shape, t->rank - lead, t->shape + lead, strides);
    *index = malloc((size_t)(row_size ? row_size : 1) * sizeof(int64_t));
    if (!*index) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "LAYER_NORM '%s': out of memory", name);
    for (int64_t i = 0; i < row_size; ++i) {
      int64_t at = 0;
      for (int32_t d = 0; d < row_rank; ++d) at += position[d] * strides[d];
      (*index)[i] = at;
      for (int32_t d = row_rank - 1; d >= 0 && ++position[d] == row_shape[d]; --d) position[d] = 0;
    }
    *layout = OPERAND_TABLE;
  }
  return EDGE_OK;
}

static float operand_at(operand_layout layout, const float *data, const int64_t *index, int64_t i, float absent);

/* The int8 form: per-tensor params on x and y, float32 constant scale and bias. */
static edge_status layer_norm_prepare_int8(edge_context *ctx, edge_node *node, layer_norm_plan *plan,
                                           const edge_tensor *x, const edge_tensor *scale, const edge_tensor *bias,
                                           const edge_tensor *y) {
  char what[160];
  snprintf(what, sizeof what, "LAYER_NORM '%s'", edge_tensor_name(y));
  if (x->dtype != EDGE_INT8 || y->dtype != EDGE_INT8)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: input is %s and output %s; int8 needs both int8", what,
                     edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  if (node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: a fused activation on an int8 layer norm is not supported", what);
  edge_qparams xp, yp;
  edge_status status;
  if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  const edge_tensor *operands[2] = {scale, bias};
  for (int i = 0; i < 2; ++i)
    if (operands[i] && (operands[i]->kind != EDGE_TENSOR_CONSTANT || !operands[i]->data))
      return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' must be a float32 constant for an int8 layer norm", what,
                       i ? "bias" : "scale", edge_tensor_name(operands[i]));
  int64_t n = plan->row_size;
  if (n > ((int64_t)1 << 24))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: rows of %lld elements are too long for the int8 kernel", what,
                     (long long)n);
  plan->gamma = malloc((size_t)(n ? n : 1) * sizeof(float));
  plan->beta = malloc((size_t)(n ? n : 1) * sizeof(float));
  if (!plan->gamma || !plan->beta) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  for (int64_t i = 0; i < n; ++i) {
    plan->gamma[i] = operand_at(plan->scale_layout, scale->data, plan->scale_index, i, 1.0f);
    plan->beta[i] = operand_at(plan->bias_layout, bias ? bias->data : NULL, plan->bias_index, i, 0.0f);
  }
  plan->q.zp_x = xp.zero_point;
  plan->q.zp_y = yp.zero_point;
  plan->q.scale_x = xp.scale;
  plan->q.epsilon = plan->epsilon;
  plan->q.inv_scale_y = 1.0f / yp.scale;
  node->plan_bytes = 2 * (size_t)n * sizeof(float);
  node->quantized = true;
  return EDGE_OK;
}

static edge_status layer_norm_prepare(edge_context *ctx, edge_node *node) {
  layer_norm_release(node);
  if (node->num_inputs < 2 || node->num_inputs > 3 || node->num_outputs != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM: has %d inputs and %d outputs, expects 2 or 3 inputs and 1 output",
                     node->num_inputs, node->num_outputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < (i == 2 ? -1 : 0) || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM: input %d is tensor %d, not one of the %d tensors", i,
                       node->inputs[i], ctx->num_tensors);
  if (node->outputs[0] < 0 || node->outputs[0] >= ctx->num_tensors)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM: output is tensor %d, not one of the %d tensors",
                     node->outputs[0], ctx->num_tensors);
  edge_tensor *x = edge_op_input(ctx, node, 0), *scale = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  const char *name = edge_tensor_name(y);
  bool int8 = edge_q_is_int8(x);
  if (!int8 && (x->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "LAYER_NORM '%s': input is %s and output %s; only float32 and int8 are "
                     "supported", name, edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  int32_t axis = node->options.layer_norm.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM '%s': axis %d is out of range for input '%s' of rank %d", name,
                     node->options.layer_norm.axis, edge_tensor_name(x), x->rank);
  float epsilon = node->options.layer_norm.epsilon;
  if (!(epsilon >= 0.0f) || isinf(epsilon))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LAYER_NORM '%s': epsilon %g must be finite and >= 0", name,
                     (double)epsilon);
  edge_status status = edge_set_shape(ctx, y, x->rank, x->shape);
  if (status != EDGE_OK) return status;
  layer_norm_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "LAYER_NORM '%s': out of memory", name);
  node->plan = plan;
  plan->epsilon = epsilon;
  plan->rms = node->options.layer_norm.rms;
  plan->rows = edge_num_elements(axis, x->shape);
  plan->row_size = edge_num_elements(x->rank - axis, x->shape + axis);
  status = plan_operand(ctx, name, "scale", scale, x, axis, &plan->scale_layout, &plan->scale_index);
  if (status != EDGE_OK) return status;
  status = plan_operand(ctx, name, "bias", bias, x, axis, &plan->bias_layout, &plan->bias_index);
  if (status != EDGE_OK || !int8) return status;
  if (plan->rms)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "LAYER_NORM '%s': the rms form has no int8 kernel", name);
  return layer_norm_prepare_int8(ctx, node, plan, x, scale, bias, y);
}

typedef struct {
  const layer_norm_plan *plan;
  const edge_activation *activation;
  const float *x, *scale, *bias;
  float *y;
} layer_norm_job;

static float operand_at(operand_layout layout, const float *data, const int64_t *index, int64_t i, float absent) {
  switch (layout) {
    case OPERAND_ABSENT: return absent;
    case OPERAND_SCALAR: return data[0];
    case OPERAND_FULL: return data[i];
    case OPERAND_TABLE: return data[index[i]];
  }
  return absent;
}

static void layer_norm_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const layer_norm_job *job = arg;
  const layer_norm_plan *p = job->plan;
  int64_t n = p->row_size;
  edge_f32_layernorm_ukernel vector = p->rms ? edge_kernels()->vector.rmsnorm : edge_kernels()->vector.layernorm;
  bool simple_operands = (p->scale_layout == OPERAND_ABSENT || p->scale_layout == OPERAND_FULL) &&
                         (p->bias_layout == OPERAND_ABSENT || p->bias_layout == OPERAND_FULL);
  if (vector && simple_operands && n > 0) {
    const float *scale = p->scale_layout == OPERAND_FULL ? job->scale : NULL;
    const float *bias = p->bias_layout == OPERAND_FULL ? job->bias : NULL;
    for (int64_t r = begin; r < end; ++r) {
      vector((size_t)n, job->x + r * n, scale, bias, p->epsilon, job->y + r * n);
      edge_activation_apply(job->activation, job->y + r * n, (size_t)n);
    }
    return;
  }
  for (int64_t r = begin; r < end; ++r) {
    const float *x = job->x + r * n;
    float *y = job->y + r * n;
    double sum = 0.0;
    if (!p->rms)
      for (int64_t i = 0; i < n; ++i) sum += x[i];
    double mean = sum / (double)n, square_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) square_sum += (x[i] - mean) * (x[i] - mean);
    double inv_std = 1.0 / sqrt(square_sum / (double)n + p->epsilon);
    for (int64_t i = 0; i < n; ++i) {
      float normalised = (float)((x[i] - mean) * inv_std);
      y[i] = normalised * operand_at(p->scale_layout, job->scale, p->scale_index, i, 1.0f) +
             operand_at(p->bias_layout, job->bias, p->bias_index, i, 0.0f);
    }
    edge_activation_apply(job->activation, y, (size_t)n);
  }
}

typedef struct {
  const layer_norm_plan *plan;
  const int8_t *x;
  int8_t *y;
} layer_norm_int8_job;

/* The reference for int8 rows; the steps and their order are s8-layernorm.c's. */
static void layer_norm_int8_row(const layer_norm_plan *p, const int8_t *x, int8_t *y) {
  const edge_s8_layernorm_params *q = &p->q;
  int64_t n = p->row_size, s1 = 0, s2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    int64_t d = (int64_t)x[i] - q->zp_x;
    s1 += d;
    s2 += d * d;
  }
  double mean = (double)s1 / (double)n;
  double var = (double)(n * s2 - s1 * s1) / ((double)n * (double)n);
  double s_x = (double)q->scale_x;
  float r = (float)(s_x / sqrt(s_x * s_x * var + (double)q->epsilon)), c = (float)mean;
  for (int64_t i = 0; i < n; ++i) {
    float t = ((float)((int32_t)x[i] - q->zp_x) - c) * r;
    float v = (t * p->gamma[i] + p->beta[i]) * q->inv_scale_y;
    y[i] = (int8_t)edge_q_quantize(v, 1.0f, q->zp_y, -128, 127);
  }
}

static void layer_norm_int8_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const layer_norm_int8_job *job = arg;
  const layer_norm_plan *p = job->plan;
  int64_t n = p->row_size;
  edge_s8_layernorm_ukernel vector = edge_kernels()->vector.s8_layernorm;
  for (int64_t r = begin; r < end; ++r) {
    if (vector) vector((size_t)n, job->x + r * n, job->y + r * n, p->gamma, p->beta, &p->q);
    else layer_norm_int8_row(p, job->x + r * n, job->y + r * n);
  }
}

static edge_status layer_norm_eval(edge_context *ctx, edge_node *node) {
  const layer_norm_plan *p = node->plan;
  if (node->quantized) {
    if (p->row_size == 0) return EDGE_OK;
    layer_norm_int8_job job = {p, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
    edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->row_size + 1), layer_norm_int8_rows, &job);
    return EDGE_OK;
  }
  edge_tensor *bias = node->num_inputs > 2 && node->inputs[2] >= 0 ? edge_op_input(ctx, node, 2) : NULL;
  layer_norm_job job = {p, &node->activation, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                        bias ? bias->data : NULL, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->row_size + 1), layer_norm_rows, &job);
  return EDGE_OK;
}

typedef struct {
  int64_t pixels, channels, before, after;
  float alpha_over_size, beta, bias;
} lrn_plan;

static edge_status lrn_prepare(edge_context *ctx, edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "LRN", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (x->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "LRN '%s': input is %s and output %s; only float32 is supported", name,
                     edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  if (x->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LRN '%s': input '%s' has rank %d; expected NHWC (rank 4)", name,
                     edge_tensor_name(x), x->rank);
  const edge_lrn_options *o = &node->options.lrn;
  if (o->size < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "LRN '%s': size is %d; it must be >= 1", name, o->size);
  if ((status = edge_set_shape(ctx, y, 4, x->shape)) != EDGE_OK) return status;
  lrn_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "LRN '%s': out of memory", name);
  plan->channels = x->shape[3];
  plan->pixels = x->shape[0] * x->shape[1] * x->shape[2];
  plan->before = (o->size - 1) / 2;
  plan->after = o->size - 1 - plan->before;
  plan->alpha_over_size = o->alpha / (float)o->size;
  plan->beta = o->beta;
  plan->bias = o->bias;
  node->plan = plan;
  return EDGE_OK;
}

typedef struct {
  const lrn_plan *plan;
  const edge_activation *activation;
  const float *x;
  float *y;
} lrn_job;

static void lrn_pixels(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const lrn_job *job = arg;
  const lrn_plan *p = job->plan;
  int64_t channels = p->channels;
  for (int64_t pixel = begin; pixel < end; ++pixel) {
    const float *x = job->x + pixel * channels;
    float *y = job->y + pixel * channels;
    for (int64_t c = 0; c < channels; ++c) {
      int64_t lo = c - p->before < 0 ? 0 : c - p->before;
      int64_t hi = c + p->after >= channels ? channels - 1 : c + p->after;
      float square_sum = 0.0f;
      for (int64_t k = lo; k <= hi; ++k) square_sum += x[k] * x[k];
      y[c] = x[c] / powf(p->bias + p->alpha_over_size * square_sum, p->beta);
    }
    edge_activation_apply(job->activation, y, (size_t)channels);
  }
}

static edge_status lrn_eval(edge_context *ctx, edge_node *node) {
  const lrn_plan *p = node->plan;
  lrn_job job = {p, &node->activation, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, p->pixels, 1 + 4096 / (p->channels + 1), lrn_pixels, &job);
  return EDGE_OK;
}

static void lrn_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_layer_norm = {layer_norm_prepare, layer_norm_eval, layer_norm_release};
const edge_op_registration edge_op_lrn = {lrn_prepare, lrn_eval, lrn_release};

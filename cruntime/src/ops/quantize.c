/* QUANTIZE (float32 -> int8 / uint8, params of the output) and DEQUANTIZE (int8 / uint8 / int32
 * with the input's params, or float16 without, -> float32). Params may be per tensor or per
 * channel along their quantized dimension: the tensor is seen as [outer, channels, inner].
 *
 * quantize:   q = clamp(zp + nearbyint(x * inv_s), qmin, qmax), inv_s = 1.0f / s in float32
 * dequantize: x = (float)(q - zp) * s;  float16 -> float32 is exact.
 * (This file must not contract x * inv_s into anything else: the runtime builds with -std=c11,
 * which keeps -ffp-contract=off.)
 *
 * A DEQUANTIZE whose input is a constant (fp16 mode's float16 weights, or int8 weights kept for a
 * float op) runs once, at prepare, into node->plan; its output is then marked folded: it reads
 * as a constant (consumers such as CONV_2D prepack it as they do float32 weights), it is left out
 * of the arena, and eval does nothing. So an fp16 model runs at float32 speed. */
#include <stdlib.h>
#include <string.h>

#include "../kernels/config.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  int64_t outer, channels, inner;   /* channels = 1 for per-tensor params */
  float *scales, *inverse_scales;   /* per channel */
  int32_t *zero_points;
  int32_t qmin, qmax;
  edge_dtype quantized;             /* dtype of the integer side */
  void *folded;                     /* DEQUANTIZE of a constant: the float32 output, computed once */
} quantize_plan;

static void quantize_release(edge_node *node) {
  quantize_plan *s = node->plan;
  if (s) {
    free(s->scales);
    free(s->inverse_scales);
    free(s->zero_points);
    free(s->folded);
  }
  free(s);
  node->plan = NULL;
}

/* Reads t's params (per tensor or per channel) into s; t is the integer side. */
static edge_status read_params(edge_context *ctx, const char *op, const edge_tensor *t, quantize_plan *s) {
  const char *name = edge_tensor_name(t);
  if (t->num_quant_params < 1 || !t->scales || !t->zero_points)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: tensor '%s' (%s) has no quantization params", op, name,
                     edge_dtype_name(t->dtype));
  int32_t axis = t->quantized_dimension;
  if (t->num_quant_params > 1 && (axis < 0 || axis >= t->rank || t->shape[axis] != t->num_quant_params))
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: tensor '%s' has %d quantization params along dimension %d, which does not fit its rank %d "
                     "shape",
                     op, name, t->num_quant_params, axis, t->rank);
  switch (t->dtype) {
    case EDGE_INT8: s->qmin = -128; s->qmax = 127; break;
    case EDGE_UINT8: s->qmin = 0; s->qmax = 255; break;
    case EDGE_INT32: s->qmin = INT32_MIN; s->qmax = INT32_MAX; break;
    default:
      return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: tensor '%s' is %s; expected int8, uint8%s", op, name,
                       edge_dtype_name(t->dtype), strcmp(op, "DEQUANTIZE") == 0 ? ", int32 or float16" : "");
  }
  s->quantized = t->dtype;
  if (t->num_quant_params > 1) {
    s->outer = edge_num_elements(axis, t->shape);
    s->channels = t->shape[axis];
    s->inner = edge_num_elements(t->rank - axis - 1, t->shape + axis + 1);
  } else {
    s->outer = 1;
    s->channels = 1;
    s->inner = edge_num_elements(t->rank, t->shape);
  }
  size_t n = (size_t)s->channels;
  s->scales = malloc(n * sizeof(float));
  s->inverse_scales = malloc(n * sizeof(float));
  s->zero_points = malloc(n * sizeof(int32_t));
  if (!s->scales || !s->inverse_scales || !s->zero_points)
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
  for (size_t c = 0; c < n; ++c) {
    float scale = t->scales[c];
    int64_t zp = t->zero_points[c];
    if (!isfinite(scale) || !(scale > 0.0f))
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: tensor '%s' has quantization scale %zu = %g; scales must be finite and > 0",
                       op, name, c, (double)scale);
    if (zp < s->qmin || zp > s->qmax)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: tensor '%s' has zero point %lld, outside the range of %s", op, name,
                       (long long)zp, edge_dtype_name(t->dtype));
    s->scales[c] = scale;
    s->inverse_scales[c] = 1.0f / scale;
    s->zero_points[c] = (int32_t)zp;
  }
  return EDGE_OK;
}

static edge_status prepare_common(edge_context *ctx, edge_node *node, const char *op, quantize_plan **out) {
  quantize_release(node);
  edge_status status = edge_op_check_arity(ctx, node, op, 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': has a fused activation; it takes none", op, edge_tensor_name(y));
  if ((status = edge_set_shape(ctx, y, x->rank, x->shape)) != EDGE_OK) return status;
  quantize_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, edge_tensor_name(y));
  node->plan = s;
  *out = s;
  return EDGE_OK;
}

static edge_status quantize_prepare(edge_context *ctx, edge_node *node) {
  quantize_plan *s;
  edge_status status = prepare_common(ctx, node, "QUANTIZE", &s);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (x->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "QUANTIZE '%s': input '%s' is %s; expected float32", edge_tensor_name(y),
                     edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (y->dtype != EDGE_INT8 && y->dtype != EDGE_UINT8)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "QUANTIZE '%s': output is %s; expected int8 or uint8", edge_tensor_name(y),
                     edge_dtype_name(y->dtype));
  return read_params(ctx, "QUANTIZE", y, s);
}

typedef struct {
  const quantize_plan *s;
  const void *x;
  void *y;
} quantize_job;

/* Elements per work item of QUANTIZE: a per-tensor block (one [1, 1, n] block) still spreads
 * over the threads. */
#define QUANTIZE_CHUNK 8192

/* Work is split over pieces of at most QUANTIZE_CHUNK elements of the (outer, channel) blocks of
 * `inner` elements; int8 pieces go through the vector kernel where there is one (the same bytes). */
static void quantize_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const quantize_job *job = arg;
  const quantize_plan *s = job->s;
  int64_t pieces = (s->inner + QUANTIZE_CHUNK - 1) / QUANTIZE_CHUNK;
  edge_s8_quantize_ukernel kernel = edge_kernels()->vector.s8_quantize;
  for (int64_t item = begin; item < end; ++item) {
    int64_t b = item / pieces, i0 = item % pieces * QUANTIZE_CHUNK;
    int64_t n = s->inner - i0 < QUANTIZE_CHUNK ? s->inner - i0 : QUANTIZE_CHUNK;
    int64_t c = b % s->channels;
    const float *x = (const float *)job->x + b * s->inner + i0;
    float inv = s->inverse_scales[c];
    int32_t zp = s->zero_points[c];
    if (s->quantized == EDGE_INT8) {
      int8_t *y = (int8_t *)job->y + b * s->inner + i0;
      if (kernel) kernel((size_t)n, x, y, inv, zp);
      else
        for (int64_t i = 0; i < n; ++i) y[i] = (int8_t)edge_q_quantize(x[i], inv, zp, -128, 127);
    } else {
      uint8_t *y = (uint8_t *)job->y + b * s->inner + i0;
      for (int64_t i = 0; i < n; ++i) y[i] = (uint8_t)edge_q_quantize(x[i], inv, zp, 0, 255);
    }
  }
}

static edge_status quantize_eval(edge_context *ctx, edge_node *node) {
  const quantize_plan *s = node->plan;
  quantize_job job = {s, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  int64_t pieces = (s->inner + QUANTIZE_CHUNK - 1) / QUANTIZE_CHUNK;
  int64_t per_item = s->inner < QUANTIZE_CHUNK ? s->inner : QUANTIZE_CHUNK;
  edge_nd_parallel(ctx, s->outer * s->channels * pieces, 1 + 16384 / (per_item + 1), quantize_blocks, &job);
  return EDGE_OK;
}

static void dequantize_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const quantize_job *job = arg;
  const quantize_plan *s = job->s;
  for (int64_t b = begin; b < end; ++b) {
    float *y = (float *)job->y + b * s->inner;
    if (s->quantized == EDGE_FLOAT16) {
      const uint16_t *x = (const uint16_t *)job->x + b * s->inner;
      for (int64_t i = 0; i < s->inner; ++i) y[i] = edge_half_to_float(x[i]);
      continue;
    }
    int64_t c = b % s->channels;
    float scale = s->scales[c];
    int32_t zp = s->zero_points[c];
    switch (s->quantized) {
      case EDGE_INT8: {
        const int8_t *x = (const int8_t *)job->x + b * s->inner;
        for (int64_t i = 0; i < s->inner; ++i) y[i] = (float)(x[i] - zp) * scale;
        break;
      }
      case EDGE_UINT8: {
        const uint8_t *x = (const uint8_t *)job->x + b * s->inner;
        for (int64_t i = 0; i < s->inner; ++i) y[i] = (float)(x[i] - zp) * scale;
        break;
      }
      default: {
        const int32_t *x = (const int32_t *)job->x + b * s->inner;
        for (int64_t i = 0; i < s->inner; ++i) y[i] = (float)((int64_t)x[i] - zp) * scale;
        break;
      }
    }
  }
}

static edge_status dequantize_prepare(edge_context *ctx, edge_node *node) {
  quantize_plan *s;
  edge_status status = prepare_common(ctx, node, "DEQUANTIZE", &s);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "DEQUANTIZE '%s': output is %s; expected float32", edge_tensor_name(y),
                     edge_dtype_name(y->dtype));
  if (x->dtype == EDGE_FLOAT16) {
    s->quantized = EDGE_FLOAT16;
    s->outer = s->channels = 1;
    s->inner = edge_num_elements(x->rank, x->shape);
  } else if ((status = read_params(ctx, "DEQUANTIZE", x, s)) != EDGE_OK) {
    return status;
  }
  if (x->kind != EDGE_TENSOR_CONSTANT || !x->data || (y->kind != EDGE_TENSOR_ACTIVATION && !y->folded)) return EDGE_OK;
  /* Fold: y is computed now and kept. */
  s->folded = aligned_alloc(EDGE_ALIGNMENT, (y->nbytes + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT +
                                                EDGE_ALIGNMENT);
  if (!s->folded)
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "DEQUANTIZE '%s': out of memory for %zu bytes of dequantized '%s'",
                     edge_tensor_name(y), y->nbytes, edge_tensor_name(x));
  quantize_job job = {s, x->data, s->folded};
  dequantize_blocks(&job, 0, s->outer * s->channels, 0);
  y->data = s->folded;
  y->kind = EDGE_TENSOR_CONSTANT;
  y->folded = true;
  node->plan_bytes = y->nbytes;
  return EDGE_OK;
}

static edge_status dequantize_eval(edge_context *ctx, edge_node *node) {
  const quantize_plan *s = node->plan;
  if (s->folded) return EDGE_OK;
  quantize_job job = {s, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, s->outer * s->channels, 1 + 16384 / (s->inner + 1), dequantize_blocks, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_quantize = {quantize_prepare, quantize_eval, quantize_release};
const edge_op_registration edge_op_dequantize = {dequantize_prepare, dequantize_eval, quantize_release};

/* UNARY: x -> y, elementwise, over edge_unary_float, the scalar definition of each function, which
 * the fused activations of other ops share (kernels/activation.c). NaN propagates through the
 * clamping ops (RELU, CLIP ...) as it does in NumPy.
 *
 * Above EDGE_ISA_SCALAR, float ops and activations that the vector family implements
 * (kernels/vector.h: exact for the clamps and arithmetic, within the ulp bounds of
 * kernels/vector/vmath.h for exp, sigmoid, tanh, erf, GELU) run on its kernels; the loops here
 * stay the reference, and what EDGE_ISA=scalar runs.
 *
 * int8 input (any float op kind): the function comes as a second input, a constant int8 table of
 * shape [256] whose entry j is the int8 output for input code j - 128 (the converter samples the
 * float function between the two tensors' quantizations, so the table already holds the
 * requantized result); y[i] = table[x[i] + 128], exact by construction. Prepare validates the
 * table (the file is untrusted) and copies it into the node's plan; eval runs the vector
 * family's s8_lut kernel, or the loop here at EDGE_ISA_SCALAR. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  edge_unary_kind op;
  float alpha, beta;
  edge_dtype in_dtype, out_dtype;
  const void *x;
  void *y;
  edge_activation activation;
} unary_job;

static void unary_float_range(const unary_job *job, int64_t begin, int64_t end) {
  const float *x = (const float *)job->x + begin;
  float *y = (float *)job->y + begin;
  size_t n = (size_t)(end - begin);
  edge_activation act = {job->op, job->alpha, job->beta};
  edge_f32_vunary_ukernel vector = edge_kernels()->vector.unary[job->op];
  if (vector) {
    edge_f32_unary_params params = {job->alpha, job->beta};
    vector(n, x, y, &params);
  } else {
    if (x != y) memcpy(y, x, n * sizeof *y);
    edge_activation_apply(&act, y, n);
  }
  edge_activation_apply(&job->activation, y, n);
}

/* Negation and absolute value wrap at the most negative integer (as NumPy does) instead of
 * overflowing, which would be undefined behaviour. */
#define EDGE_INTEGER_UNARY(type, utype)                                                         \
  static void unary_##type##_range(const unary_job *job, int64_t begin, int64_t end) {          \
    const type *x = job->x;                                                                     \
    type *y = job->y;                                                                           \
    for (int64_t i = begin; i < end; ++i) {                                                     \
      type v = x[i];                                                                            \
      switch (job->op) {                                                                        \
        case EDGE_UNARY_NEG: y[i] = (type)(utype)(0u - (utype)v); break;                        \
        case EDGE_UNARY_ABS: y[i] = v < 0 ? (type)(utype)(0u - (utype)v) : v; break;            \
        case EDGE_UNARY_SIGN: y[i] = (type)((v > 0) - (v < 0)); break;                          \
        default: y[i] = v; break;                                                               \
      }                                                                                         \
    }                                                                                           \
  }
EDGE_INTEGER_UNARY(int32_t, uint32_t)
EDGE_INTEGER_UNARY(int64_t, uint64_t)
#undef EDGE_INTEGER_UNARY

static void unary_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const unary_job *job = arg;
  if (job->op == EDGE_UNARY_IDENTITY && job->in_dtype != EDGE_FLOAT32) {
    size_t size = edge_dtype_size(job->in_dtype);
    memcpy((char *)job->y + begin * (int64_t)size, (const char *)job->x + begin * (int64_t)size,
           (size_t)(end - begin) * size);
    return;
  }
  if (job->op == EDGE_UNARY_NOT) {
    const uint8_t *x = job->x;
    uint8_t *y = job->y;
    for (int64_t i = begin; i < end; ++i) y[i] = x[i] == 0;
    return;
  }
  if (job->op == EDGE_UNARY_IS_NAN || job->op == EDGE_UNARY_IS_INF) {
    const float *x = job->x;
    uint8_t *y = job->y;
    if (job->op == EDGE_UNARY_IS_NAN)
      for (int64_t i = begin; i < end; ++i) y[i] = isnan(x[i]) ? 1 : 0;
    else
      for (int64_t i = begin; i < end; ++i) y[i] = isinf(x[i]) ? 1 : 0;
    return;
  }
  switch (job->in_dtype) {
    case EDGE_FLOAT32: unary_float_range(job, begin, end); return;
    case EDGE_INT32: unary_int32_t_range(job, begin, end); return;
    case EDGE_INT64: unary_int64_t_range(job, begin, end); return;
    default: return;
  }
}

/* The input dtypes each op accepts and the output dtype it produces (-1: none accepted). */
static edge_dtype unary_output_dtype(edge_unary_kind op, edge_dtype in) {
  switch (op) {
    case EDGE_UNARY_IDENTITY: return in;
    case EDGE_UNARY_NEG: case EDGE_UNARY_ABS: case EDGE_UNARY_SIGN:
      return (in == EDGE_FLOAT32 || in == EDGE_INT32 || in == EDGE_INT64) ? in : (edge_dtype)-1;
    case EDGE_UNARY_NOT: return in == EDGE_BOOL ? EDGE_BOOL : (edge_dtype)-1;
    case EDGE_UNARY_IS_NAN: case EDGE_UNARY_IS_INF: return in == EDGE_FLOAT32 ? EDGE_BOOL : (edge_dtype)-1;
    default: return in == EDGE_FLOAT32 ? EDGE_FLOAT32 : (edge_dtype)-1;
  }
}

/* ---- int8: a 256-entry table ---- */

typedef struct {
  _Alignas(64) int8_t table[256];
} unary_lut_plan;

static void unary_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
  node->quantized = false;
}

static edge_status unary_lut_prepare(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_unary_kind op = node->options.unary.op;
  char what[160];
  snprintf(what, sizeof what, "UNARY %s '%s'", edge_unary_names[op], edge_tensor_name(y));
  if (op != EDGE_UNARY_IDENTITY && unary_output_dtype(op, EDGE_FLOAT32) != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: input '%s' is int8, which this op does not take", what,
                     edge_tensor_name(x));
  if (node->num_inputs != 2)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: an int8 input '%s' needs a second input, a [256] int8 table",
                     what, edge_tensor_name(x));
  const edge_tensor *table = edge_op_input(ctx, node, 1);
  if (table->dtype != EDGE_INT8 || table->rank != 1 || table->shape[0] != 256) {
    char shape[128];
    edge_format_shape(shape, sizeof shape, table->rank, table->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: table '%s' is %s %s; it must be int8 [256]", what,
                     edge_tensor_name(table), edge_dtype_name(table->dtype), shape);
  }
  if (table->kind != EDGE_TENSOR_CONSTANT || !table->data || table->nbytes < 256)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: table '%s' must be a constant with 256 bytes of data", what,
                     edge_tensor_name(table));
  if (y->dtype != EDGE_INT8)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: output is %s; an int8 input with a table gives int8", what,
                     edge_dtype_name(y->dtype));
  if (node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: fused activation %s on an int8 table lookup (fold it into the table)",
                     what, edge_unary_names[node->activation.op]);
  edge_qparams xp, yp;
  edge_status status;
  if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  /* The table holds output codes: when it carries params of its own they must be the output's. */
  if (table->num_quant_params != 0 && !edge_q_same_params(table, y))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: table '%s' is quantized differently from output '%s'", what,
                     edge_tensor_name(table), edge_tensor_name(y));
  if ((status = edge_set_shape(ctx, y, x->rank, x->shape)) != EDGE_OK) return status;
  unary_lut_plan *s = aligned_alloc(64, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  memcpy(s->table, table->data, 256);
  node->plan = s;
  node->quantized = true;
  return EDGE_OK;
}

typedef struct {
  const int8_t *table, *x;
  int8_t *y;
} unary_lut_job;

static void unary_lut_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const unary_lut_job *job = arg;
  edge_s8_lut_ukernel lut = edge_kernels()->vector.s8_lut;
  if (lut) {
    lut((size_t)(end - begin), job->x + begin, job->y + begin, job->table);
    return;
  }
  for (int64_t i = begin; i < end; ++i) job->y[i] = job->table[(int32_t)job->x[i] + 128];
}

static edge_status unary_prepare(edge_context *ctx, edge_node *node) {
  unary_release(node);
  edge_status status = edge_op_check_arity(ctx, node, "UNARY", 1, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  edge_unary_kind op = node->options.unary.op;
  if ((int)op < 0 || op >= EDGE_UNARY_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "UNARY '%s': unknown op %d", edge_tensor_name(y), (int)op);
  if (x->dtype == EDGE_INT8 && (op != EDGE_UNARY_IDENTITY || node->num_inputs == 2))
    return unary_lut_prepare(ctx, node);
  if (node->num_inputs != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "UNARY %s '%s': has %d inputs; only an int8 input takes a table",
                     edge_unary_names[op], edge_tensor_name(y), node->num_inputs);
  edge_dtype expected = unary_output_dtype(op, x->dtype);
  if ((int)expected < 0)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "UNARY %s '%s': input '%s' is %s, which this op does not take",
                     edge_unary_names[op], edge_tensor_name(y), edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (y->dtype != expected)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "UNARY %s '%s': output is %s, expected %s", edge_unary_names[op],
                     edge_tensor_name(y), edge_dtype_name(y->dtype), edge_dtype_name(expected));
  if (node->activation.op != EDGE_UNARY_IDENTITY && y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "UNARY '%s': fused activation %s on a %s output",
                     edge_tensor_name(y), edge_unary_names[node->activation.op], edge_dtype_name(y->dtype));
  return edge_set_shape(ctx, y, x->rank, x->shape);
}

static edge_status unary_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (node->quantized) {
    unary_lut_job job = {((const unary_lut_plan *)node->plan)->table, x->data, y->data};
    edge_nd_parallel(ctx, edge_num_elements(x->rank, x->shape), 65536, unary_lut_range, &job);
    return EDGE_OK;
  }
  unary_job job = {node->options.unary.op, node->options.unary.alpha, node->options.unary.beta,
                   x->dtype, y->dtype, x->data, y->data,
                   {node->activation.op, node->activation.alpha, node->activation.beta}};
  edge_nd_parallel(ctx, edge_num_elements(x->rank, x->shape), 16384, unary_range, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_unary = {unary_prepare, unary_eval, unary_release};

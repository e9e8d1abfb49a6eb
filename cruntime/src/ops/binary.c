/* BINARY: a, b -> y with NumPy broadcasting over any rank. The space is collapsed once in prepare,
 * so same-shape work is one contiguous run and a bias add over channels is runs of C elements with
 * b's stride 0; each run is a loop specialised for the strides 0 and 1 that broadcasting produces.
 *
 * Above EDGE_ISA_SCALAR, float runs of ADD SUB MUL DIV MIN MAX PRELU with strides (1, 1), (1, 0)
 * or (0, 1) (same shape, a scalar or a broadcast channel vector on either side) run on the vector
 * family's kernels (kernels/vector.h), which give these loops' results bit for bit; other strides
 * and ops stay on the loops, which are the reference EDGE_ISA=scalar runs.
 *
 * Integer arithmetic wraps on overflow (as NumPy does) through unsigned types, because signed
 * overflow is undefined behaviour. Integer division or modulo by zero stops the invoke with
 * EDGE_RUNTIME_ERROR. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  edge_nd_iter iter; /* operands: y, a, b */
} binary_plan;

typedef struct {
  const binary_plan *plan;
  const edge_vector_kernels *vector;
  edge_binary_kind op;
  edge_dtype in_dtype, out_dtype;
  const void *a, *b;
  void *y;
  edge_activation activation;
  atomic_int divided_by_zero;
} binary_job;

static float float_binary(edge_binary_kind op, float a, float b) {
  switch (op) {
    case EDGE_BINARY_ADD: return a + b;
    case EDGE_BINARY_SUB: return a - b;
    case EDGE_BINARY_MUL: return a * b;
    case EDGE_BINARY_DIV: return a / b;
    case EDGE_BINARY_POW: return powf(a, b);
    /* NaN in either operand gives NaN, like np.minimum / np.maximum. */
    case EDGE_BINARY_MIN: return isnan(a) ? a : (isnan(b) ? b : (b < a ? b : a));
    case EDGE_BINARY_MAX: return isnan(a) ? a : (isnan(b) ? b : (b > a ? b : a));
    case EDGE_BINARY_MOD: {
      float r = fmodf(a, b);
      if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
      return r;
    }
    case EDGE_BINARY_FMOD: return fmodf(a, b);
    case EDGE_BINARY_PRELU: return a < 0.0f ? a * b : a;
    default: return 0.0f;
  }
}

/* One loop per stride combination so the common ones are plain contiguous loops. */
#define EDGE_STRIDED_LOOP(EXPR)                                                       \
  do {                                                                                \
    if (sa == 1 && sb == 1) {                                                         \
      for (int64_t i = 0; i < n; ++i) { A_T av = a[i], bv = b[i]; y[i] = (EXPR); }    \
    } else if (sa == 1 && sb == 0) {                                                  \
      A_T bv = b[0];                                                                  \
      for (int64_t i = 0; i < n; ++i) { A_T av = a[i]; y[i] = (EXPR); }               \
    } else if (sa == 0 && sb == 1) {                                                  \
      A_T av = a[0];                                                                  \
      for (int64_t i = 0; i < n; ++i) { A_T bv = b[i]; y[i] = (EXPR); }               \
    } else {                                                                          \
      for (int64_t i = 0; i < n; ++i) { A_T av = a[i * sa], bv = b[i * sb]; y[i] = (EXPR); } \
    }                                                                                 \
  } while (0)

#define A_T float
static void float_run(edge_binary_kind op, const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                      int64_t n) {
  switch (op) {
    case EDGE_BINARY_ADD: EDGE_STRIDED_LOOP(av + bv); return;
    case EDGE_BINARY_SUB: EDGE_STRIDED_LOOP(av - bv); return;
    case EDGE_BINARY_MUL: EDGE_STRIDED_LOOP(av * bv); return;
    case EDGE_BINARY_DIV: EDGE_STRIDED_LOOP(av / bv); return;
    default: EDGE_STRIDED_LOOP(float_binary(op, av, bv)); return;
  }
}

static void float_compare_run(edge_binary_kind op, const float *a, int64_t sa, const float *b, int64_t sb,
                              uint8_t *y, int64_t n) {
  switch (op) {
    case EDGE_BINARY_EQUAL: EDGE_STRIDED_LOOP(av == bv); return;
    case EDGE_BINARY_LESS: EDGE_STRIDED_LOOP(av < bv); return;
    case EDGE_BINARY_LESS_EQUAL: EDGE_STRIDED_LOOP(av <= bv); return;
    case EDGE_BINARY_GREATER: EDGE_STRIDED_LOOP(av > bv); return;
    case EDGE_BINARY_GREATER_EQUAL: EDGE_STRIDED_LOOP(av >= bv); return;
    default: return;
  }
}
#undef A_T

#define A_T uint8_t
static void bool_run(edge_binary_kind op, const uint8_t *a, int64_t sa, const uint8_t *b, int64_t sb, uint8_t *y,
                     int64_t n) {
  switch (op) {
    case EDGE_BINARY_AND: EDGE_STRIDED_LOOP((av != 0) & (bv != 0)); return;
    case EDGE_BINARY_OR: EDGE_STRIDED_LOOP((av != 0) | (bv != 0)); return;
    case EDGE_BINARY_XOR: EDGE_STRIDED_LOOP((av != 0) ^ (bv != 0)); return;
    case EDGE_BINARY_EQUAL: EDGE_STRIDED_LOOP((av != 0) == (bv != 0)); return;
    default: return;
  }
}
#undef A_T

/* Integer ops; *zero is set when a division or modulo has a zero divisor. Division by -1 is
 * negation, written out because INT_MIN / -1 overflows. */
#define EDGE_INTEGER_BINARY(T, U)                                                                  \
  static T T##_binary(edge_binary_kind op, T a, T b, int *zero) {                                  \
    switch (op) {                                                                                  \
      case EDGE_BINARY_ADD: return (T)((U)a + (U)b);                                               \
      case EDGE_BINARY_SUB: return (T)((U)a - (U)b);                                               \
      case EDGE_BINARY_MUL: return (T)((U)a * (U)b);                                               \
      case EDGE_BINARY_MIN: return b < a ? b : a;                                                  \
      case EDGE_BINARY_MAX: return b > a ? b : a;                                                  \
      case EDGE_BINARY_POW: {                                                                      \
        /* Exact, by squaring; wraps like the other integer ops. a^-n truncates toward zero. */    \
        if (b < 0) return a == 1 ? 1 : a == -1 ? ((b & 1) ? -1 : 1) : 0;                            \
        U r = 1, base = (U)a;                                                                      \
        for (T e = b; e > 0; e >>= 1, base *= base)                                                \
          if (e & 1) r *= base;                                                                    \
        return (T)r;                                                                               \
      }                                                                                            \
      case EDGE_BINARY_DIV: case EDGE_BINARY_MOD: case EDGE_BINARY_FMOD: {                         \
        if (b == 0) { *zero = 1; return 0; }                                                       \
        if (b == -1) return op == EDGE_BINARY_DIV ? (T)((U)0 - (U)a) : 0;                           \
        if (op == EDGE_BINARY_DIV) return a / b;                                                   \
        T r = a % b;                                                                               \
        if (op == EDGE_BINARY_MOD && r != 0 && ((r < 0) != (b < 0))) r += b;                       \
        return r;                                                                                  \
      }                                                                                            \
      case EDGE_BINARY_BITWISE_AND: return a & b;                                                  \
      case EDGE_BINARY_BITWISE_OR: return a | b;                                                   \
      case EDGE_BINARY_BITWISE_XOR: return a ^ b;                                                  \
      case EDGE_BINARY_SHIFT_LEFT: return b < 0 || b >= (T)(8 * sizeof(T)) ? 0 : (T)((U)a << b);     \
      case EDGE_BINARY_SHIFT_RIGHT: /* arithmetic, written without shifting a negative value */     \
        if (b < 0 || b >= (T)(8 * sizeof(T))) return a < 0 ? -1 : 0;                                \
        return a < 0 ? ~(~a >> b) : a >> b;                                                        \
      default: return 0;                                                                           \
    }                                                                                              \
  }                                                                                                \
  static void T##_run(edge_binary_kind op, const T *a, int64_t sa, const T *b, int64_t sb, T *y, int64_t n, \
                      int *zero) {                                                                 \
    switch (op) {                                                                                  \
      case EDGE_BINARY_ADD: EDGE_STRIDED_LOOP((T)((U)av + (U)bv)); return;                         \
      case EDGE_BINARY_SUB: EDGE_STRIDED_LOOP((T)((U)av - (U)bv)); return;                         \
      case EDGE_BINARY_MUL: EDGE_STRIDED_LOOP((T)((U)av * (U)bv)); return;                         \
      default: EDGE_STRIDED_LOOP(T##_binary(op, av, bv, zero)); return;                            \
    }                                                                                              \
  }                                                                                                \
  static void T##_compare_run(edge_binary_kind op, const T *a, int64_t sa, const T *b, int64_t sb,  \
                              uint8_t *y, int64_t n) {                                             \
    switch (op) {                                                                                  \
      case EDGE_BINARY_EQUAL: EDGE_STRIDED_LOOP(av == bv); return;                                 \
      case EDGE_BINARY_LESS: EDGE_STRIDED_LOOP(av < bv); return;                                   \
      case EDGE_BINARY_LESS_EQUAL: EDGE_STRIDED_LOOP(av <= bv); return;                            \
      case EDGE_BINARY_GREATER: EDGE_STRIDED_LOOP(av > bv); return;                                \
      case EDGE_BINARY_GREATER_EQUAL: EDGE_STRIDED_LOOP(av >= bv); return;                         \
      default: return;                                                                             \
    }                                                                                              \
  }

#define A_T int32_t
EDGE_INTEGER_BINARY(int32_t, uint32_t)
#undef A_T
#define A_T int64_t
EDGE_INTEGER_BINARY(int64_t, uint64_t)
#undef A_T
#undef EDGE_INTEGER_BINARY
#undef EDGE_STRIDED_LOOP

static bool is_comparison(edge_binary_kind op) {
  return op == EDGE_BINARY_EQUAL || op == EDGE_BINARY_LESS || op == EDGE_BINARY_LESS_EQUAL ||
         op == EDGE_BINARY_GREATER || op == EDGE_BINARY_GREATER_EQUAL;
}
static bool is_logical(edge_binary_kind op) {
  return op == EDGE_BINARY_AND || op == EDGE_BINARY_OR || op == EDGE_BINARY_XOR;
}
static bool is_bitwise(edge_binary_kind op) {
  return op == EDGE_BINARY_BITWISE_AND || op == EDGE_BINARY_BITWISE_OR || op == EDGE_BINARY_BITWISE_XOR ||
         op == EDGE_BINARY_SHIFT_LEFT || op == EDGE_BINARY_SHIFT_RIGHT;
}

/* The run on a vector kernel when one fits its strides; false leaves it to float_run. */
static bool float_vector_run(const binary_job *job, const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                             int64_t n) {
  const edge_vector_kernels *v = job->vector;
  edge_f32_vbinary_ukernel kernel;
  if (sa == 1 && sb == 1 && (kernel = v->binary_vv[job->op])) kernel((size_t)n, a, b, y);
  else if (sa == 1 && sb == 0 && (kernel = v->binary_vc[job->op])) kernel((size_t)n, a, b, y);
  else if (sa == 0 && sb == 1 && (kernel = v->binary_rvc[job->op])) kernel((size_t)n, b, a, y);
  else return false;
  return true;
}

static void binary_run(void *arg, const int64_t *offsets, int64_t n) {
  binary_job *job = arg;
  const edge_nd_iter *it = &job->plan->iter;
  int32_t inner = it->rank - 1;
  int64_t sa = it->strides[1][inner], sb = it->strides[2][inner];
  int64_t oy = offsets[0], oa = offsets[1], ob = offsets[2];
  bool compare = is_comparison(job->op);
  int zero = 0;
  switch (job->in_dtype) {
    case EDGE_FLOAT32:
      if (compare)
        float_compare_run(job->op, (const float *)job->a + oa, sa, (const float *)job->b + ob, sb,
                          (uint8_t *)job->y + oy, n);
      else if (!float_vector_run(job, (const float *)job->a + oa, sa, (const float *)job->b + ob, sb,
                                 (float *)job->y + oy, n))
        float_run(job->op, (const float *)job->a + oa, sa, (const float *)job->b + ob, sb, (float *)job->y + oy, n);
      break;
    case EDGE_INT32:
      if (compare)
        int32_t_compare_run(job->op, (const int32_t *)job->a + oa, sa, (const int32_t *)job->b + ob, sb,
                            (uint8_t *)job->y + oy, n);
      else
        int32_t_run(job->op, (const int32_t *)job->a + oa, sa, (const int32_t *)job->b + ob, sb,
                    (int32_t *)job->y + oy, n, &zero);
      break;
    case EDGE_INT64:
      if (compare)
        int64_t_compare_run(job->op, (const int64_t *)job->a + oa, sa, (const int64_t *)job->b + ob, sb,
                            (uint8_t *)job->y + oy, n);
      else
        int64_t_run(job->op, (const int64_t *)job->a + oa, sa, (const int64_t *)job->b + ob, sb,
                    (int64_t *)job->y + oy, n, &zero);
      break;
    case EDGE_BOOL:
      bool_run(job->op, (const uint8_t *)job->a + oa, sa, (const uint8_t *)job->b + ob, sb, (uint8_t *)job->y + oy,
               n);
      break;
    default: break;
  }
  if (zero) atomic_store(&job->divided_by_zero, 1);
}

static void binary_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  binary_job *job = arg;
  edge_nd_iter_runs(&job->plan->iter, begin, end, binary_run, job);
  if (job->out_dtype == EDGE_FLOAT32)
    edge_activation_apply(&job->activation, (float *)job->y + begin, (size_t)(end - begin));
}

static bool binary_dtype_supported(edge_binary_kind op, edge_dtype dtype) {
  if (is_logical(op)) return dtype == EDGE_BOOL;
  if (is_bitwise(op)) return dtype == EDGE_INT32 || dtype == EDGE_INT64;
  if (op == EDGE_BINARY_EQUAL && dtype == EDGE_BOOL) return true;
  if (op == EDGE_BINARY_PRELU) return dtype == EDGE_FLOAT32;
  return dtype == EDGE_FLOAT32 || dtype == EDGE_INT32 || dtype == EDGE_INT64;
}

static void binary_release(edge_node *node);

static edge_status binary_prepare(edge_context *ctx, edge_node *node) {
  binary_release(node);
  edge_status status = edge_op_check_arity(ctx, node, "BINARY", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  edge_binary_kind op = node->options.binary.op;
  if ((int)op < 0 || op >= EDGE_BINARY_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BINARY '%s': unknown op %d", edge_tensor_name(y), (int)op);
  const char *op_name = edge_binary_names[op];
  if (edge_q_is_int8(a)) return edge_qbinary_prepare(ctx, node);
  if (a->dtype != b->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BINARY %s '%s': inputs '%s' (%s) and '%s' (%s) differ in dtype",
                     op_name, edge_tensor_name(y), edge_tensor_name(a), edge_dtype_name(a->dtype), edge_tensor_name(b),
                     edge_dtype_name(b->dtype));
  if (!binary_dtype_supported(op, a->dtype))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "BINARY %s '%s': inputs are %s, which this op does not take", op_name,
                     edge_tensor_name(y), edge_dtype_name(a->dtype));
  edge_dtype expected = (is_comparison(op) || is_logical(op)) ? EDGE_BOOL : a->dtype;
  if (y->dtype != expected)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BINARY %s '%s': output is %s, expected %s", op_name,
                     edge_tensor_name(y), edge_dtype_name(y->dtype), edge_dtype_name(expected));
  if (node->activation.op != EDGE_UNARY_IDENTITY && y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "BINARY %s '%s': fused activation on a %s output", op_name,
                     edge_tensor_name(y), edge_dtype_name(y->dtype));

  int32_t rank;
  int64_t shape[EDGE_MAX_RANK];
  status = edge_broadcast_shape(ctx, a, b, &rank, shape);
  if (status != EDGE_OK) return status;
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;

  binary_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "BINARY '%s': out of memory", edge_tensor_name(y));
  int64_t y_strides[EDGE_MAX_RANK], a_strides[EDGE_MAX_RANK], b_strides[EDGE_MAX_RANK];
  edge_nd_contiguous_strides(rank, shape, y_strides);
  edge_nd_broadcast_strides(rank, shape, a->rank, a->shape, a_strides);
  edge_nd_broadcast_strides(rank, shape, b->rank, b->shape, b_strides);
  const int64_t *strides[3] = {y_strides, a_strides, b_strides};
  edge_nd_iter_init(&plan->iter, rank, shape, 3, strides);
  node->plan = plan;
  return EDGE_OK;
}

static edge_status binary_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qbinary_eval(ctx, node);
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  binary_job job = {.plan = node->plan,
                    .vector = &edge_kernels()->vector,
                    .op = node->options.binary.op,
                    .in_dtype = a->dtype,
                    .out_dtype = y->dtype,
                    .a = a->data,
                    .b = b->data,
                    .y = y->data,
                    .activation = node->activation};
  atomic_init(&job.divided_by_zero, 0);
  edge_nd_parallel(ctx, job.plan->iter.total, 16384, binary_range, &job);
  if (atomic_load(&job.divided_by_zero))
    return edge_fail(ctx, EDGE_RUNTIME_ERROR, "BINARY %s '%s': integer division by zero (divisor '%s')",
                     edge_binary_names[job.op], edge_tensor_name(y), edge_tensor_name(b));
  return EDGE_OK;
}

static void binary_release(edge_node *node) {
  if (node->quantized) {
    edge_qbinary_release(node);
    return;
  }
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_binary = {binary_prepare, binary_eval, binary_release};

/* REDUCE: MEAN SUM MAX MIN PROD L1 L2 SUM_SQUARE LOG_SUM_EXP over a set of axes, scalar reference.
 *
 * float32 for every op; int32 and int64 for MAX, MIN and SUM (SUM wraps like two's complement).
 * The input is viewed as kept dims x reduced dims: output element i (kept dims in order, which is
 * the output's row-major order with or without keepdims) starts at a base offset, and its
 * reduction walks the reduced dims in row-major order, the last reduced dim as the inner run.
 * Float sums and products accumulate in double; LOG_SUM_EXP subtracts the maximum first. One
 * output element is one thread's work in a fixed order, so results do not depend on threads.
 * An empty reduction gives the identity (SUM 0, PROD 1, MAX -inf, MIN +inf, MEAN NaN). A fused
 * activation is applied to float results; on integer ones it is rejected.
 *
 * Above EDGE_ISA_SCALAR, float SUM MEAN MAX MIN L1 L2 SUM_SQUARE run on the vector family
 * (kernels/vector.h) in two layouts found at prepare: the reduced elements of each output are one
 * contiguous run (a row reduction), or the innermost kept dimension is contiguous (reduced dims
 * outside it, e.g. NHWC over H and W), where a thread's outputs along that dimension are
 * accumulated side by side in vectors, row by row in the reference's order. Sums are then in
 * float (MAX/MIN exact). PROD and LOG_SUM_EXP, integers and other layouts stay on the reference
 * code, which is also what EDGE_ISA=scalar runs. */
#include <math.h>
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  edge_reduce_kind op;
  edge_dtype dtype;
  int64_t outputs, reduced_count;
  int32_t kept_rank, reduced_rank;
  int64_t kept_shape[EDGE_MAX_RANK], kept_strides[EDGE_MAX_RANK];
  int64_t reduced_shape[EDGE_MAX_RANK], reduced_strides[EDGE_MAX_RANK];
  /* The vector paths: the reduced dims with neighbours that are contiguous in memory merged (same
   * walk order), and which layout applies. */
  enum { VECTOR_NONE, VECTOR_ROWS, VECTOR_COLUMNS } vector_layout;
  int32_t vector_kind; /* edge_vreduce_kind */
  int32_t merged_rank;
  int64_t merged_shape[EDGE_MAX_RANK], merged_strides[EDGE_MAX_RANK];
} reduce_plan;

/* The vector reduction behind a REDUCE op, or -1 when it has none. */
static int32_t vector_reduce_kind(edge_reduce_kind op) {
  switch (op) {
    case EDGE_REDUCE_SUM: case EDGE_REDUCE_MEAN: return EDGE_VREDUCE_SUM;
    case EDGE_REDUCE_MAX: return EDGE_VREDUCE_MAX;
    case EDGE_REDUCE_MIN: return EDGE_VREDUCE_MIN;
    case EDGE_REDUCE_L1: return EDGE_VREDUCE_ABS_SUM;
    case EDGE_REDUCE_L2: case EDGE_REDUCE_SUM_SQUARE: return EDGE_VREDUCE_SQUARE_SUM;
    default: return -1;
  }
}

static void plan_vector_layout(reduce_plan *p) {
  p->vector_layout = VECTOR_NONE;
  p->vector_kind = vector_reduce_kind(p->op);
  if (p->dtype != EDGE_FLOAT32 || p->vector_kind < 0 || p->reduced_count == 0) return;
  p->merged_rank = 0;
  for (int32_t d = 0; d < p->reduced_rank; ++d) {
    if (p->reduced_shape[d] == 1) continue;
    int32_t last = p->merged_rank - 1;
    if (last >= 0 && p->merged_strides[last] == p->reduced_strides[d] * p->reduced_shape[d]) {
      p->merged_shape[last] *= p->reduced_shape[d];
      p->merged_strides[last] = p->reduced_strides[d];
    } else {
      p->merged_shape[p->merged_rank] = p->reduced_shape[d];
      p->merged_strides[p->merged_rank++] = p->reduced_strides[d];
    }
  }
  if (p->merged_rank == 0) { /* every reduced dim has size 1 */
    p->merged_shape[0] = 1;
    p->merged_strides[0] = 1;
    p->merged_rank = 1;
  }
  if (p->merged_rank == 1 && p->merged_strides[0] == 1)
    p->vector_layout = VECTOR_ROWS;
  else if (p->kept_rank > 0 && p->kept_strides[p->kept_rank - 1] == 1 && p->kept_shape[p->kept_rank - 1] > 1)
    p->vector_layout = VECTOR_COLUMNS;
}

static const char *reduce_name(edge_reduce_kind op) {
  return (unsigned)op < EDGE_REDUCE_COUNT_ ? edge_reduce_names[op] : "unknown";
}

static void reduce_release(edge_node *node);

static edge_status reduce_prepare(edge_context *ctx, edge_node *node) {
  reduce_release(node);
  edge_status status = edge_op_check_arity(ctx, node, "REDUCE", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (edge_q_is_int8(x)) return edge_qreduce_prepare(ctx, node);
  const char *name = edge_tensor_name(y);
  const edge_reduce_options *o = &node->options.reduce;
  if ((unsigned)o->op > EDGE_REDUCE_LOG_SUM_EXP)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "REDUCE '%s': unknown reduce op %d", name, (int)o->op);
  bool integer_ok = o->op == EDGE_REDUCE_MAX || o->op == EDGE_REDUCE_MIN || o->op == EDGE_REDUCE_SUM;
  bool bool_ok = o->op == EDGE_REDUCE_MAX || o->op == EDGE_REDUCE_MIN; /* any / all */
  if (!(x->dtype == EDGE_FLOAT32 || (integer_ok && (x->dtype == EDGE_INT32 || x->dtype == EDGE_INT64)) ||
        (bool_ok && x->dtype == EDGE_BOOL)))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "REDUCE %s '%s': input '%s' is %s; supported: float32%s", reduce_name(o->op),
                     name, edge_tensor_name(x), edge_dtype_name(x->dtype), integer_ok ? ", int32, int64" : "");
  if (x->dtype != EDGE_FLOAT32 && node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "REDUCE '%s': a fused activation on %s is not supported", name,
                     edge_dtype_name(x->dtype));
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "REDUCE '%s': output is %s but input '%s' is %s", name,
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  if (o->num_axes < 0 || o->num_axes > x->rank)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "REDUCE '%s': %d axes for an input of rank %d", name, o->num_axes, x->rank);
  bool reduced[EDGE_MAX_RANK] = {false};
  for (int32_t i = 0; i < o->num_axes; ++i) {
    int32_t axis = o->axes[i];
    if (!edge_normalize_axis(&axis, x->rank) || reduced[axis])
      return edge_fail(ctx, EDGE_INVALID_MODEL, "REDUCE '%s': axis %d is out of range or repeated for rank %d", name,
                       o->axes[i], x->rank);
    reduced[axis] = true;
  }
  if (o->num_axes == 0) /* ONNX: no axes reduces everything */
    for (int32_t d = 0; d < x->rank; ++d) reduced[d] = true;

  reduce_plan p = {0};
  p.op = o->op;
  p.dtype = x->dtype;
  int64_t strides[EDGE_MAX_RANK], shape[EDGE_MAX_RANK];
  int32_t out_rank = 0;
  edge_nd_contiguous_strides(x->rank, x->shape, strides);
  for (int32_t d = 0; d < x->rank; ++d) {
    if (reduced[d]) {
      p.reduced_shape[p.reduced_rank] = x->shape[d];
      p.reduced_strides[p.reduced_rank++] = strides[d];
      if (o->keepdims) shape[out_rank++] = 1;
    } else {
      p.kept_shape[p.kept_rank] = x->shape[d];
      p.kept_strides[p.kept_rank++] = strides[d];
      shape[out_rank++] = x->shape[d];
    }
  }
  if (p.reduced_rank == 0) { /* a rank-0 input: one element reduced over nothing but itself */
    p.reduced_shape[0] = 1;
    p.reduced_strides[0] = 1;
    p.reduced_rank = 1;
  }
  p.outputs = edge_num_elements(p.kept_rank, p.kept_shape);
  p.reduced_count = edge_num_elements(p.reduced_rank, p.reduced_shape);
  if ((status = edge_set_shape(ctx, y, out_rank, shape)) != EDGE_OK) return status;
  plan_vector_layout(&p);
  reduce_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "REDUCE '%s': out of memory", name);
  *plan = p;
  node->plan = plan;
  return EDGE_OK;
}

typedef enum { PASS_SUM, PASS_ABS_SUM, PASS_SQUARE_SUM, PASS_PROD, PASS_MAX, PASS_MIN, PASS_EXP_SUM } float_pass;

/* One walk over the reduced elements from base. PASS_EXP_SUM sums exp(x - shift). */
static double float_walk(const reduce_plan *p, const float *x, int64_t base, float_pass pass, double shift) {
  int32_t inner = p->reduced_rank - 1;
  int64_t len = p->reduced_shape[inner], step = p->reduced_strides[inner], index[EDGE_MAX_RANK] = {0};
  double acc = pass == PASS_PROD ? 1.0 : pass == PASS_MAX ? -INFINITY : pass == PASS_MIN ? INFINITY : 0.0;
  if (p->reduced_count == 0) return acc;
  int64_t offset = base;
  for (;;) {
    const float *run = x + offset;
    switch (pass) {
      case PASS_SUM: for (int64_t i = 0; i < len; ++i) acc += run[i * step]; break;
      case PASS_ABS_SUM: for (int64_t i = 0; i < len; ++i) acc += fabs((double)run[i * step]); break;
      case PASS_SQUARE_SUM:
        for (int64_t i = 0; i < len; ++i) acc += (double)run[i * step] * run[i * step];
        break;
      case PASS_PROD: for (int64_t i = 0; i < len; ++i) acc *= run[i * step]; break;
      case PASS_MAX: /* NaN wins, as in NumPy */
        for (int64_t i = 0; i < len; ++i) acc = run[i * step] > acc || run[i * step] != run[i * step] ? run[i * step] : acc;
        break;
      case PASS_MIN:
        for (int64_t i = 0; i < len; ++i) acc = run[i * step] < acc || run[i * step] != run[i * step] ? run[i * step] : acc;
        break;
      case PASS_EXP_SUM: for (int64_t i = 0; i < len; ++i) acc += exp((double)run[i * step] - shift); break;
    }
    int32_t d = inner - 1;
    for (; d >= 0; --d) {
      offset += p->reduced_strides[d];
      if (++index[d] < p->reduced_shape[d]) break;
      offset -= index[d] * p->reduced_strides[d];
      index[d] = 0;
    }
    if (d < 0) return acc;
  }
}

static float float_reduce(const reduce_plan *p, const float *x, int64_t base) {
  switch (p->op) {
    case EDGE_REDUCE_MEAN: return (float)(float_walk(p, x, base, PASS_SUM, 0.0) / (double)p->reduced_count);
    case EDGE_REDUCE_SUM: return (float)float_walk(p, x, base, PASS_SUM, 0.0);
    case EDGE_REDUCE_MAX: return (float)float_walk(p, x, base, PASS_MAX, 0.0);
    case EDGE_REDUCE_MIN: return (float)float_walk(p, x, base, PASS_MIN, 0.0);
    case EDGE_REDUCE_PROD: return (float)float_walk(p, x, base, PASS_PROD, 0.0);
    case EDGE_REDUCE_L1: return (float)float_walk(p, x, base, PASS_ABS_SUM, 0.0);
    case EDGE_REDUCE_L2: return (float)sqrt(float_walk(p, x, base, PASS_SQUARE_SUM, 0.0));
    case EDGE_REDUCE_SUM_SQUARE: return (float)float_walk(p, x, base, PASS_SQUARE_SUM, 0.0);
    case EDGE_REDUCE_LOG_SUM_EXP: {
      double max = float_walk(p, x, base, PASS_MAX, 0.0);
      if (isinf(max) || isnan(max)) return (float)max; /* all -inf, any +inf, or NaN */
      return (float)(max + log(float_walk(p, x, base, PASS_EXP_SUM, max)));
    }
    default: return NAN;
  }
}

static int64_t int_reduce(const reduce_plan *p, const void *x, int64_t base) {
  int32_t inner = p->reduced_rank - 1;
  bool wide = p->dtype == EDGE_INT64, flag = p->dtype == EDGE_BOOL;
  int64_t len = p->reduced_shape[inner], step = p->reduced_strides[inner], index[EDGE_MAX_RANK] = {0};
  int64_t lowest = flag ? 0 : wide ? INT64_MIN : INT32_MIN, highest = flag ? 1 : wide ? INT64_MAX : INT32_MAX;
  int64_t best = p->op == EDGE_REDUCE_MAX ? lowest : highest;
  uint64_t sum = 0;
  if (p->reduced_count == 0) return p->op == EDGE_REDUCE_SUM ? 0 : best;
  int64_t offset = base;
  for (;;) {
    for (int64_t i = 0; i < len; ++i) {
      int64_t at = offset + i * step;
      int64_t v = flag ? ((const uint8_t *)x)[at] != 0 : wide ? ((const int64_t *)x)[at] : ((const int32_t *)x)[at];
      if (p->op == EDGE_REDUCE_SUM) sum += (uint64_t)v;
      else if (p->op == EDGE_REDUCE_MAX ? v > best : v < best) best = v;
    }
    int32_t d = inner - 1;
    for (; d >= 0; --d) {
      offset += p->reduced_strides[d];
      if (++index[d] < p->reduced_shape[d]) break;
      offset -= index[d] * p->reduced_strides[d];
      index[d] = 0;
    }
    if (d < 0) break;
  }
  return p->op == EDGE_REDUCE_SUM ? (int64_t)sum : best;
}

typedef struct {
  const reduce_plan *plan;
  const edge_activation *activation;
  const void *x;
  void *y;
} reduce_job;

static int64_t kept_base(const reduce_plan *p, int64_t output) {
  int64_t base = 0, rest = output;
  for (int32_t d = p->kept_rank - 1; d >= 0; --d) {
    base += rest % p->kept_shape[d] * p->kept_strides[d];
    rest /= p->kept_shape[d];
  }
  return base;
}

/* MEAN, L2: the step after the vector reduction. */
static float finish_reduction(const reduce_plan *p, float value) {
  if (p->op == EDGE_REDUCE_MEAN) return value / (float)p->reduced_count;
  if (p->op == EDGE_REDUCE_L2) return sqrtf(value);
  return value;
}

static float vector_identity(int32_t kind) {
  return kind == EDGE_VREDUCE_MAX ? -INFINITY : kind == EDGE_VREDUCE_MIN ? INFINITY : 0.0f;
}

static bool reduce_vector_range(const reduce_job *job, int64_t begin, int64_t end) {
  const reduce_plan *p = job->plan;
  if (p->vector_layout == VECTOR_NONE) return false;
  const edge_vector_kernels *v = &edge_kernels()->vector;
  edge_f32_rreduce_ukernel row = v->rreduce[p->vector_kind];
  edge_f32_raccumulate_ukernel columns = v->raccumulate[p->vector_kind];
  if (!row || !columns) return false;
  const float *x = job->x;
  float *y = job->y;
  if (p->vector_layout == VECTOR_ROWS) {
    for (int64_t i = begin; i < end; ++i) {
      y[i] = finish_reduction(p, row((size_t)p->reduced_count, x + kept_base(p, i)));
      edge_activation_apply(job->activation, y + i, 1);
    }
    return true;
  }
  /* Runs of outputs along the contiguous kept dim; the reduced positions walked as rows of the
   * innermost merged dim, the outer merged dims by an odometer. */
  int64_t width = p->kept_shape[p->kept_rank - 1];
  int32_t inner = p->merged_rank - 1;
  for (int64_t i = begin; i < end;) {
    int64_t run = width - i % width < end - i ? width - i % width : end - i;
    int64_t base = kept_base(p, i);
    float identity = vector_identity(p->vector_kind);
    for (int64_t j = 0; j < run; ++j) y[i + j] = identity;
    int64_t index[EDGE_MAX_RANK] = {0}, offset = 0;
    for (;;) {
      columns((size_t)p->merged_shape[inner], (size_t)run, x + base + offset, (size_t)p->merged_strides[inner], y + i);
      int32_t d = inner - 1;
      for (; d >= 0; --d) {
        offset += p->merged_strides[d];
        if (++index[d] < p->merged_shape[d]) break;
        offset -= index[d] * p->merged_strides[d];
        index[d] = 0;
      }
      if (d < 0) break;
    }
    for (int64_t j = 0; j < run; ++j) y[i + j] = finish_reduction(p, y[i + j]);
    edge_activation_apply(job->activation, y + i, (size_t)run);
    i += run;
  }
  return true;
}

static void reduce_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const reduce_job *job = arg;
  const reduce_plan *p = job->plan;
  if (reduce_vector_range(job, begin, end)) return;
  for (int64_t i = begin; i < end; ++i) {
    int64_t base = 0, rest = i;
    for (int32_t d = p->kept_rank - 1; d >= 0; --d) {
      base += rest % p->kept_shape[d] * p->kept_strides[d];
      rest /= p->kept_shape[d];
    }
    switch (p->dtype) {
      case EDGE_FLOAT32:
        ((float *)job->y)[i] = float_reduce(p, job->x, base);
        edge_activation_apply(job->activation, (float *)job->y + i, 1);
        break;
      case EDGE_INT32: ((int32_t *)job->y)[i] = (int32_t)(uint32_t)(uint64_t)int_reduce(p, job->x, base); break;
      case EDGE_INT64: ((int64_t *)job->y)[i] = int_reduce(p, job->x, base); break;
      case EDGE_BOOL: ((uint8_t *)job->y)[i] = (uint8_t)int_reduce(p, job->x, base); break;
      default: break;
    }
  }
}

static edge_status reduce_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qreduce_eval(ctx, node);
  const reduce_plan *p = node->plan;
  reduce_job job = {p, &node->activation, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  edge_nd_parallel(ctx, p->outputs, 1 + 16384 / (p->reduced_count + 1), reduce_range, &job);
  return EDGE_OK;
}

static void reduce_release(edge_node *node) {
  if (node->quantized) {
    edge_qreduce_release(node);
    return;
  }
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_reduce = {reduce_prepare, reduce_eval, reduce_release};

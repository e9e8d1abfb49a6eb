/* OPTIMIZER_UPDATE and CLIP_BY_GLOBAL_NORM.
 *
 * OPTIMIZER_UPDATE inputs: param, grad (or, with options.sparse, grad_rows [n, row...] and
 * grad_indices int32|int64 [n]), learning_rate (float32, one element), then the slots of the kind:
 *   SGD none; MOMENTUM velocity; ADAGRAD accumulator; ADAM / ADAMW m, v, step (float32, one element).
 * No outputs: param and the slots (variables, checked at prepare) are updated in place. With
 * g = grad + weight_decay * param (ADAMW: g = grad, decay decoupled):
 *   SGD       p -= lr g
 *   MOMENTUM  v = mu v + g;  p -= lr (g + mu v) with Nesterov, else lr v
 *   ADAGRAD   a += g^2;  p -= lr g / (sqrt(a) + eps)
 *   ADAM      t += 1; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *             p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)
 *   ADAMW     as ADAM, then p -= lr wd p_old (p_old: before this step)
 * Per element in double, stored as float; above EDGE_ISA=scalar ADAM / ADAMW run the vector
 * family's float kernel instead (kernels/vector.h adam; EDGE_OPTIMIZER=reference keeps the double
 * loop). Sparse: duplicate indices are summed first (in index
 * order, through an open-addressing table in scratch), then only the listed rows of param and
 * slots change; the step still advances once. Cells are fixed blocks of elements (dense) or
 * unique rows (sparse): no two cells touch the same value, so any thread count gives the same bits.
 *
 * CLIP_BY_GLOBAL_NORM: (g0..gn) -> (g0'..gn'); norm = sqrt of the sum of every square (double,
 * per fixed block, blocks summed in order); when norm > max_norm each g is scaled by
 * max_norm / norm, else copied. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/config.h"
#include "ops.h"
#include "training.h"

static int32_t slot_count(edge_optimizer_kind kind) {
  switch (kind) {
    case EDGE_OPTIMIZER_SGD: return 0;
    case EDGE_OPTIMIZER_MOMENTUM: case EDGE_OPTIMIZER_ADAGRAD: return 1;
    case EDGE_OPTIMIZER_ADAM: case EDGE_OPTIMIZER_ADAMW: return 3;
    default: return -1;
  }
}

static const char *const slot_names[EDGE_OPTIMIZER_COUNT_][3] = {
    [EDGE_OPTIMIZER_MOMENTUM] = {"velocity"},
    [EDGE_OPTIMIZER_ADAGRAD] = {"accumulator"},
    [EDGE_OPTIMIZER_ADAM] = {"m", "v", "step"},
    [EDGE_OPTIMIZER_ADAMW] = {"m", "v", "step"},
};

typedef struct {
  int32_t grad_inputs;  /* 1 dense, 2 sparse */
  int64_t count;        /* param elements */
  int64_t rows, row;    /* sparse: param rows and elements per row */
  int64_t sparse_rows;  /* sparse: rows in grad_rows */
  int64_t table_size;   /* sparse: hash table slots (a power of two) */
  size_t summed_offset; /* sparse scratch layout: table (int64), unique (int64 x2), summed rows */
  size_t unique_offset;
  edge_f32_adam_ukernel adam; /* ADAM / ADAMW in float; NULL: the double loop */
} optimizer_plan;

static edge_status optimizer_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "OPTIMIZER_UPDATE";
  free(node->plan);
  node->plan = NULL;
  const edge_optimizer_options *o = &node->options.optimizer;
  int32_t slots = slot_count(o->kind);
  if (slots < 0) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: optimizer kind %d is unknown", op, (int)o->kind);
  int32_t grad_inputs = o->sparse ? 2 : 1, want = 1 + grad_inputs + 1 + slots;
  const char *kind = edge_optimizer_names[o->kind];
  if (node->num_inputs != want)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s %s%s: has %d inputs, expects %d (param, %s, learning_rate%s%s%s%s%s%s)", op, kind,
                     o->sparse ? " (sparse)" : "", node->num_inputs, want,
                     o->sparse ? "grad_rows, grad_indices" : "grad", slots > 0 ? ", " : "",
                     slots > 0 ? slot_names[o->kind][0] : "", slots > 1 ? ", " : "", slots > 1 ? slot_names[o->kind][1] : "",
                     slots > 2 ? ", " : "", slots > 2 ? slot_names[o->kind][2] : "");
  edge_status status = edge_training_check_arity(ctx, node, op, want, want, 0, 0, false);
  if (status != EDGE_OK) return status;
  edge_tensor *param = edge_op_input(ctx, node, 0), *grad = edge_op_input(ctx, node, 1);
  edge_tensor *lr = edge_op_input(ctx, node, 1 + grad_inputs);
  if ((status = edge_training_check_float(ctx, op, "param", param)) != EDGE_OK ||
      (status = edge_training_check_variable(ctx, op, "param", param)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "gradient", grad)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "learning_rate", lr)) != EDGE_OK)
    return status;
  if (edge_num_elements(lr->rank, lr->shape) != 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: learning_rate '%s' must hold one value", op, edge_tensor_name(lr));
  for (int32_t s = 0; s < slots; ++s) {
    edge_tensor *slot = edge_op_input(ctx, node, 2 + grad_inputs + s);
    const char *role = slot_names[o->kind][s];
    if ((status = edge_training_check_float(ctx, op, role, slot)) != EDGE_OK ||
        (status = edge_training_check_variable(ctx, op, role, slot)) != EDGE_OK)
      return status;
    bool step = s == 2;
    if (step && edge_num_elements(slot->rank, slot->shape) != 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: step '%s' must hold one value", op, edge_tensor_name(slot));
    if (!step && (status = edge_training_check_same_shape(ctx, op, role, slot, "param", param)) != EDGE_OK) return status;
    for (int32_t k = 0; k < node->num_inputs; ++k)
      if (k != 2 + grad_inputs + s && node->inputs[k] == node->inputs[2 + grad_inputs + s])
        return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' is also input %d", op, role, edge_tensor_name(slot), k);
  }
  for (int32_t k = 1; k < node->num_inputs; ++k)
    if (node->inputs[k] == node->inputs[0])
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: param '%s' is also input %d", op, edge_tensor_name(param), k);
  optimizer_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  node->plan = plan;
  plan->grad_inputs = grad_inputs;
  plan->count = edge_num_elements(param->rank, param->shape);
  const char *forced = getenv("EDGE_OPTIMIZER");
  if ((o->kind == EDGE_OPTIMIZER_ADAM || o->kind == EDGE_OPTIMIZER_ADAMW) && !(forced && strcmp(forced, "reference") == 0))
    plan->adam = edge_kernels()->vector.adam;
  if (!o->sparse) return edge_training_check_same_shape(ctx, op, "gradient", grad, "param", param);

  edge_tensor *indices = edge_op_input(ctx, node, 2);
  if (param->rank < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: sparse updates need a param with rows; '%s' has rank 0", op,
                     edge_tensor_name(param));
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: grad_indices '%s' are %s, expected int32 or int64", op,
                     edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  bool fits = indices->rank == 1 && grad->rank == param->rank && grad->shape[0] == indices->shape[0];
  for (int32_t d = 1; fits && d < param->rank; ++d) fits = grad->shape[d] == param->shape[d];
  if (!fits) {
    char gs[128], is[128], ps[128];
    edge_format_shape(gs, sizeof gs, grad->rank, grad->shape);
    edge_format_shape(is, sizeof is, indices->rank, indices->shape);
    edge_format_shape(ps, sizeof ps, param->rank, param->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s: grad_rows '%s' %s and grad_indices '%s' %s must be [n, rows of param...] and [n] for param "
                     "'%s' %s",
                     op, edge_tensor_name(grad), gs, edge_tensor_name(indices), is, edge_tensor_name(param), ps);
  }
  plan->rows = param->shape[0];
  plan->row = plan->rows ? plan->count / plan->rows : 0;
  plan->sparse_rows = indices->shape[0];
  plan->table_size = 1;
  while (plan->table_size < 2 * plan->sparse_rows) plan->table_size *= 2;
  plan->unique_offset = edge_training_align((size_t)plan->table_size * sizeof(int64_t));
  plan->summed_offset =
      plan->unique_offset + edge_training_align((size_t)(plan->sparse_rows + 1) * 2 * sizeof(int64_t));
  node->scratch_bytes = plan->summed_offset + (size_t)(plan->sparse_rows * plan->row + 1) * sizeof(float);
  return EDGE_OK;
}

typedef struct {
  const edge_optimizer_options *o;
  double lr, correction1, correction2;
  float *param, *slot0, *slot1;
  const float *grad;
  /* sparse */
  const int64_t *unique; /* pairs: param row, first row of the summed gradient */
  int64_t row;
  edge_f32_adam_ukernel adam;
  edge_f32_adam_params adam_params;
} optimizer_job;

/* Updates count values: param p, gradient g, slots s0/s1 (NULL when the kind has fewer). */
static void update_values(const optimizer_job *job, int64_t count, float *p, const float *g, float *s0, float *s1) {
  const edge_optimizer_options *o = job->o;
  const double lr = job->lr, wd = o->weight_decay;
  switch (o->kind) {
    case EDGE_OPTIMIZER_SGD:
      for (int64_t i = 0; i < count; ++i) p[i] = (float)(p[i] - lr * ((double)g[i] + wd * p[i]));
      break;
    case EDGE_OPTIMIZER_MOMENTUM: {
      const double mu = o->momentum;
      for (int64_t i = 0; i < count; ++i) {
        double gi = (double)g[i] + wd * p[i];
        double v = mu * s0[i] + gi;
        s0[i] = (float)v;
        p[i] = (float)(p[i] - lr * (o->nesterov ? gi + mu * v : v));
      }
      break;
    }
    case EDGE_OPTIMIZER_ADAGRAD:
      for (int64_t i = 0; i < count; ++i) {
        double gi = (double)g[i] + wd * p[i];
        double a = s0[i] + gi * gi;
        s0[i] = (float)a;
        p[i] = (float)(p[i] - lr * gi / (sqrt(a) + o->epsilon));
      }
      break;
    case EDGE_OPTIMIZER_ADAM:
    case EDGE_OPTIMIZER_ADAMW: {
      if (job->adam) {
        job->adam((size_t)count, p, g, s0, s1, &job->adam_params);
        break;
      }
      const double b1 = o->beta1, b2 = o->beta2;
      const bool decoupled = o->kind == EDGE_OPTIMIZER_ADAMW;
      for (int64_t i = 0; i < count; ++i) {
        double old = p[i], gi = decoupled ? (double)g[i] : (double)g[i] + wd * old;
        double m = b1 * s0[i] + (1.0 - b1) * gi, v = b2 * s1[i] + (1.0 - b2) * gi * gi;
        s0[i] = (float)m;
        s1[i] = (float)v;
        double step = lr * (m / job->correction1) / (sqrt(v / job->correction2) + o->epsilon);
        if (decoupled) step += lr * wd * old;
        p[i] = (float)(old - step);
      }
      break;
    }
    default: break;
  }
}

static void dense_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const optimizer_job *job = arg;
  for (int64_t b = begin; b < end; ++b) {
    int64_t first = b * EDGE_TRAINING_BLOCK;
    int64_t count = job->row - first < EDGE_TRAINING_BLOCK ? job->row - first : EDGE_TRAINING_BLOCK;
    update_values(job, count, job->param + first, job->grad + first, job->slot0 ? job->slot0 + first : NULL,
                  job->slot1 ? job->slot1 + first : NULL);
  }
}

static void sparse_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const optimizer_job *job = arg;
  for (int64_t u = begin; u < end; ++u) {
    int64_t at = job->unique[2 * u] * job->row;
    update_values(job, job->row, job->param + at, job->grad + job->unique[2 * u + 1] * job->row,
                  job->slot0 ? job->slot0 + at : NULL, job->slot1 ? job->slot1 + at : NULL);
  }
}

static edge_status optimizer_eval(edge_context *ctx, edge_node *node) {
  const optimizer_plan *plan = node->plan;
  const edge_optimizer_options *o = &node->options.optimizer;
  int32_t g = plan->grad_inputs, slots = slot_count(o->kind);
  edge_tensor *param = edge_op_input(ctx, node, 0), *grad = edge_op_input(ctx, node, 1);
  optimizer_job job = {.o = o,
                       .lr = *(const float *)edge_op_input(ctx, node, 1 + g)->data,
                       .correction1 = 1.0,
                       .correction2 = 1.0,
                       .param = param->data,
                       .slot0 = slots > 0 ? edge_op_input(ctx, node, 2 + g)->data : NULL,
                       .slot1 = slots > 1 ? edge_op_input(ctx, node, 3 + g)->data : NULL,
                       .grad = grad->data};
  if (o->kind == EDGE_OPTIMIZER_ADAM || o->kind == EDGE_OPTIMIZER_ADAMW) {
    float *step = edge_op_input(ctx, node, 4 + g)->data;
    double t = (double)*step + 1.0;
    *step = (float)t;
    job.correction1 = 1.0 - pow(o->beta1, t);
    job.correction2 = 1.0 - pow(o->beta2, t);
    job.adam = plan->adam;
    job.adam_params = (edge_f32_adam_params){(float)job.lr, o->beta1, o->beta2, (float)(1.0 - (double)o->beta1),
                                             (float)(1.0 - (double)o->beta2), (float)job.correction1,
                                             (float)job.correction2, o->epsilon, o->weight_decay,
                                             o->kind == EDGE_OPTIMIZER_ADAMW};
  }
  if (g == 1) {
    job.row = plan->count; /* dense: the whole tensor is one row split into blocks */
    edge_nd_parallel(ctx, (plan->count + EDGE_TRAINING_BLOCK - 1) / EDGE_TRAINING_BLOCK, 2, dense_blocks, &job);
    return EDGE_OK;
  }

  /* Sparse: sum duplicate rows (first occurrence order), then update each distinct row once. */
  edge_tensor *indices = edge_op_input(ctx, node, 2);
  int64_t n = plan->sparse_rows, row = plan->row, mask = plan->table_size - 1;
  int64_t *table = node->scratch, *unique = (int64_t *)((char *)node->scratch + plan->unique_offset);
  float *summed = (float *)((char *)node->scratch + plan->summed_offset);
  for (int64_t s = 0; s < plan->table_size; ++s) table[s] = -1;
  int64_t distinct = 0;
  for (int64_t j = 0; j < n; ++j) {
    int64_t index = indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[j] : ((const int64_t *)indices->data)[j];
    if (index < -plan->rows || index >= plan->rows)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "OPTIMIZER_UPDATE: grad_indices '%s' element %lld is %lld, out of range for the %lld rows of "
                       "param '%s'",
                       edge_tensor_name(indices), (long long)j, (long long)index, (long long)plan->rows, edge_tensor_name(param));
    if (index < 0) index += plan->rows;
    int64_t s = (int64_t)(((uint64_t)index * 0x9E3779B97F4A7C15ull) >> 17) & mask;
    while (table[s] >= 0 && unique[2 * table[s]] != index) s = (s + 1) & mask;
    const float *from = (const float *)grad->data + j * row;
    if (table[s] < 0) {
      table[s] = distinct;
      unique[2 * distinct] = index;
      unique[2 * distinct + 1] = distinct;
      memcpy(summed + distinct * row, from, (size_t)row * sizeof(float));
      ++distinct;
    } else {
      float *to = summed + table[s] * row;
      for (int64_t c = 0; c < row; ++c) to[c] += from[c];
    }
  }
  job.grad = summed;
  job.unique = unique;
  job.row = row;
  edge_nd_parallel(ctx, distinct, 1 + EDGE_TRAINING_BLOCK / (row + 1), sparse_rows, &job);
  return EDGE_OK;
}

static void optimizer_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

/* ---- CLIP_BY_GLOBAL_NORM ---- */

typedef struct {
  int64_t cells;
} clip_plan;

static edge_status clip_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "CLIP_BY_GLOBAL_NORM";
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_training_check_arity(ctx, node, op, 1, 1 << 20, 1, 1 << 20, false);
  if (status != EDGE_OK) return status;
  if (node->num_inputs != node->num_outputs)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d inputs and %d outputs; each gradient needs its clipped output",
                     op, node->num_inputs, node->num_outputs);
  if (!(node->options.clip.max_norm > 0) || !isfinite(node->options.clip.max_norm))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: max_norm %g must be finite and > 0", op,
                     (double)node->options.clip.max_norm);
  int64_t cells = 0;
  for (int32_t i = 0; i < node->num_inputs; ++i) {
    edge_tensor *g = edge_op_input(ctx, node, i), *out = edge_op_output(ctx, node, i);
    if ((status = edge_training_check_float(ctx, op, "gradient", g)) != EDGE_OK ||
        (status = edge_training_check_float(ctx, op, "output", out)) != EDGE_OK ||
        (status = edge_set_shape(ctx, out, g->rank, g->shape)) != EDGE_OK)
      return status;
    cells += (edge_num_elements(g->rank, g->shape) + EDGE_TRAINING_BLOCK - 1) / EDGE_TRAINING_BLOCK;
  }
  clip_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  plan->cells = cells;
  node->plan = plan;
  node->scratch_bytes = (size_t)(cells + 1) * sizeof(double);
  return EDGE_OK;
}

typedef struct {
  edge_context *ctx;
  const edge_node *node;
  double *partial;
  float scale;
  bool scaling;
} clip_job;

/* Cell c -> (tensor, block); the blocks of the tensors, in input order. */
static void clip_locate(const clip_job *job, int64_t cell, int32_t *tensor, int64_t *first, int64_t *count) {
  for (int32_t i = 0; i < job->node->num_inputs; ++i) {
    const edge_tensor *g = edge_op_input(job->ctx, job->node, i);
    int64_t n = edge_num_elements(g->rank, g->shape), blocks = (n + EDGE_TRAINING_BLOCK - 1) / EDGE_TRAINING_BLOCK;
    if (cell < blocks) {
      *tensor = i;
      *first = cell * EDGE_TRAINING_BLOCK;
      *count = n - *first < EDGE_TRAINING_BLOCK ? n - *first : EDGE_TRAINING_BLOCK;
      return;
    }
    cell -= blocks;
  }
  *tensor = -1;
}

static void clip_squares(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const clip_job *job = arg;
  for (int64_t cell = begin; cell < end; ++cell) {
    int32_t t;
    int64_t first, count;
    clip_locate(job, cell, &t, &first, &count);
    const float *g = (const float *)edge_op_input(job->ctx, job->node, t)->data + first;
    double sum = 0.0;
    for (int64_t i = 0; i < count; ++i) sum += (double)g[i] * g[i];
    job->partial[cell] = sum;
  }
}

static void clip_apply(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const clip_job *job = arg;
  for (int64_t cell = begin; cell < end; ++cell) {
    int32_t t;
    int64_t first, count;
    clip_locate(job, cell, &t, &first, &count);
    const float *g = (const float *)edge_op_input(job->ctx, job->node, t)->data + first;
    float *out = (float *)edge_op_output(job->ctx, job->node, t)->data + first;
    if (job->scaling)
      for (int64_t i = 0; i < count; ++i) out[i] = g[i] * job->scale;
    else
      memcpy(out, g, (size_t)count * sizeof(float));
  }
}

static edge_status clip_eval(edge_context *ctx, edge_node *node) {
  const clip_plan *plan = node->plan;
  clip_job job = {ctx, node, node->scratch, 1.0f, false};
  edge_nd_parallel(ctx, plan->cells, 2, clip_squares, &job);
  double total = 0.0;
  for (int64_t c = 0; c < plan->cells; ++c) total += job.partial[c];
  double norm = sqrt(total), max_norm = node->options.clip.max_norm;
  job.scaling = norm > max_norm;
  job.scale = job.scaling ? (float)(max_norm / norm) : 1.0f;
  edge_nd_parallel(ctx, plan->cells, 2, clip_apply, &job);
  return EDGE_OK;
}

static void clip_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_optimizer_update = {optimizer_prepare, optimizer_eval, optimizer_release};
const edge_op_registration edge_op_clip_by_global_norm = {clip_prepare, clip_eval, clip_release};

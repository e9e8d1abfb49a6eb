/* LOSS: (prediction, target) -> loss (float32, rank 0), dprediction (optional, prediction's shape).
 *
 * SOFTMAX_CROSS_ENTROPY over the last axis, rows = every other position: the target is int32 class
 * ids (prediction's shape without the last axis) or float32 probabilities (prediction's shape).
 *   loss = mean over rows of logsumexp(z) - sum_c t_c z_c, computed from max-subtracted logits;
 *   d = (softmax(z) - t) / rows.
 * BCE_WITH_LOGITS, elementwise, mean over all elements:
 *   loss = mean(max(z, 0) - z t + log1p(exp(-|z|)));  d = (sigmoid(z) - t) / numel.
 * MSE: loss = mean((p - t)^2);  d = 2 (p - t) / numel.
 *
 * Everything is computed in double and rounded once. Cells are rows (softmax cross-entropy) or
 * fixed blocks of EDGE_TRAINING_BLOCK elements; each cell's loss goes to scratch (one double per
 * cell) and the cells are summed in order afterwards, so the loss does not depend on the thread
 * count. A class id outside [0, classes) is EDGE_RUNTIME_ERROR. */
#include <math.h>
#include <stdlib.h>

#include "ops.h"
#include "training.h"

typedef struct {
  edge_loss_kind kind;
  bool class_ids;
  int64_t rows, classes, count, cells;
} loss_plan;

static edge_status loss_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "LOSS";
  edge_status status = edge_training_check_arity(ctx, node, op, 2, 2, 1, 2, false);
  if (status != EDGE_OK) return status;
  edge_tensor *p = edge_op_input(ctx, node, 0), *t = edge_op_input(ctx, node, 1), *loss = edge_op_output(ctx, node, 0);
  edge_tensor *d = edge_training_optional(ctx, node, true, 1);
  edge_loss_kind kind = node->options.loss.kind;
  if ((status = edge_training_check_float(ctx, op, "prediction", p)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "loss", loss)) != EDGE_OK ||
      (d && (status = edge_training_check_float(ctx, op, "dprediction", d)) != EDGE_OK))
    return status;
  int64_t count = edge_num_elements(p->rank, p->shape);
  if (kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY) {
    if (p->rank < 1 || p->shape[p->rank - 1] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s SOFTMAX_CROSS_ENTROPY: logits '%s' need a non-empty class axis",
                       op, edge_tensor_name(p));
    bool ids = t->dtype == EDGE_INT32;
    bool fits = ids ? t->rank == p->rank - 1 : t->dtype == EDGE_FLOAT32 && t->rank == p->rank;
    for (int32_t i = 0; fits && i < t->rank; ++i) fits = t->shape[i] == p->shape[i];
    if (!fits) {
      char ps[128], ts[128];
      edge_format_shape(ps, sizeof ps, p->rank, p->shape);
      edge_format_shape(ts, sizeof ts, t->rank, t->shape);
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s SOFTMAX_CROSS_ENTROPY: target '%s' is %s %s; for logits '%s' %s it must be int32 class ids "
                       "of the shape without the last axis, or float32 probabilities of the same shape",
                       op, edge_tensor_name(t), edge_dtype_name(t->dtype), ts, edge_tensor_name(p), ps);
    }
  } else if (kind == EDGE_LOSS_BCE_WITH_LOGITS || kind == EDGE_LOSS_MSE) {
    if ((status = edge_training_check_float(ctx, op, "target", t)) != EDGE_OK ||
        (status = edge_training_check_same_shape(ctx, op, "prediction", p, "target", t)) != EDGE_OK)
      return status;
  } else {
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: loss kind %d is unknown", op, (int)kind);
  }
  if (count == 0) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: prediction '%s' is empty", op, edge_tensor_name(p));
  if ((status = edge_set_shape(ctx, loss, 0, NULL)) != EDGE_OK) return status;
  if (d && (status = edge_set_shape(ctx, d, p->rank, p->shape)) != EDGE_OK) return status;
  loss_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  free(node->plan);
  node->plan = plan;
  plan->kind = kind;
  plan->count = count;
  if (kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY) {
    plan->classes = p->shape[p->rank - 1];
    plan->rows = count / plan->classes;
    plan->class_ids = t->dtype == EDGE_INT32;
    plan->cells = plan->rows;
  } else {
    plan->cells = (count + EDGE_TRAINING_BLOCK - 1) / EDGE_TRAINING_BLOCK;
  }
  node->scratch_bytes = (size_t)plan->cells * sizeof(double);
  return EDGE_OK;
}

typedef struct {
  const loss_plan *plan;
  const float *p, *t;
  const int32_t *ids;
  float *d;
  double *cell_loss;
} loss_job;

static void softmax_cross_entropy_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  loss_job *job = arg;
  const loss_plan *plan = job->plan;
  int64_t classes = plan->classes;
  double inv_rows = 1.0 / (double)plan->rows;
  for (int64_t r = begin; r < end; ++r) {
    const float *z = job->p + r * classes;
    double max = z[0];
    for (int64_t c = 1; c < classes; ++c) max = z[c] > max ? z[c] : max;
    double sum = 0.0;
    for (int64_t c = 0; c < classes; ++c) sum += exp(z[c] - max);
    double log_sum = log(sum) + max, loss = log_sum;
    if (plan->class_ids) {
      int32_t label = job->ids[r]; /* checked by loss_eval */
      loss -= z[label];
      if (job->d)
        for (int64_t c = 0; c < classes; ++c)
          job->d[r * classes + c] = (float)((exp(z[c] - log_sum) - (c == label ? 1.0 : 0.0)) * inv_rows);
    } else {
      const float *t = job->t + r * classes;
      for (int64_t c = 0; c < classes; ++c) loss -= (double)t[c] * z[c];
      if (job->d)
        for (int64_t c = 0; c < classes; ++c)
          job->d[r * classes + c] = (float)((exp(z[c] - log_sum) - t[c]) * inv_rows);
    }
    job->cell_loss[r] = loss;
  }
}

static void elementwise_loss_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  loss_job *job = arg;
  const loss_plan *plan = job->plan;
  double inv_count = 1.0 / (double)plan->count;
  for (int64_t b = begin; b < end; ++b) {
    int64_t first = b * EDGE_TRAINING_BLOCK, last = first + EDGE_TRAINING_BLOCK;
    if (last > plan->count) last = plan->count;
    double sum = 0.0;
    if (plan->kind == EDGE_LOSS_MSE) {
      for (int64_t i = first; i < last; ++i) {
        double diff = (double)job->p[i] - job->t[i];
        sum += diff * diff;
        if (job->d) job->d[i] = (float)(2.0 * diff * inv_count);
      }
    } else {
      for (int64_t i = first; i < last; ++i) {
        double z = job->p[i], t = job->t[i];
        sum += (z > 0.0 ? z : 0.0) - z * t + log1p(exp(-fabs(z)));
        if (job->d) {
          double s = z >= 0.0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
          job->d[i] = (float)((s - t) * inv_count);
        }
      }
    }
    job->cell_loss[b] = sum;
  }
}

static edge_status loss_eval(edge_context *ctx, edge_node *node) {
  const loss_plan *plan = node->plan;
  edge_tensor *t = edge_op_input(ctx, node, 1), *d = edge_training_optional(ctx, node, true, 1);
  loss_job job = {plan, edge_op_input(ctx, node, 0)->data, t->data, t->data, d ? d->data : NULL, node->scratch};
  if (plan->kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY) {
    if (plan->class_ids)
      for (int64_t r = 0; r < plan->rows; ++r)
        if (job.ids[r] < 0 || job.ids[r] >= plan->classes)
          return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                           "LOSS SOFTMAX_CROSS_ENTROPY: class id %d (row %lld of target '%s') is outside [0, %lld)",
                           job.ids[r], (long long)r, edge_tensor_name(t), (long long)plan->classes);
    edge_nd_parallel(ctx, plan->rows, 1 + 4096 / (plan->classes + 1), softmax_cross_entropy_rows, &job);
  } else {
    edge_nd_parallel(ctx, plan->cells, 2, elementwise_loss_blocks, &job);
  }
  double total = 0.0;
  for (int64_t c = 0; c < plan->cells; ++c) total += job.cell_loss[c];
  double denominator = plan->kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY ? (double)plan->rows : (double)plan->count;
  *(float *)edge_op_output(ctx, node, 0)->data = (float)(total / denominator);
  return EDGE_OK;
}

static void loss_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_loss = {loss_prepare, loss_eval, loss_release};

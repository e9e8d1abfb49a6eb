/* LAYER_NORM_GRAD, BATCH_NORM_TRAIN and BATCH_NORM_GRAD, float32, statistics in double.
 *
 * LAYER_NORM_GRAD (x, scale, dy) -> dx, dscale?, dbias?: rows are normalised over [axis, rank)
 * as in LAYER_NORM (biased variance + epsilon). scale holds one value per row position or a
 * single value. With xhat = (x - mean) * invstd and g = dy * scale:
 *   dx = invstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the row)
 *   dscale = sum over rows of dy * xhat,  dbias = sum over rows of dy  (then summed to scale's shape)
 * Pass 1 (cells: rows) computes each row's mean and invstd into scratch and dx; pass 2 (cells:
 * blocks of columns) sums dscale/dbias over the rows in order.
 *
 * BATCH_NORM_TRAIN (x [..., C], scale, bias, running_mean, running_var) -> y, batch_mean?,
 * batch_invstd?: statistics over every axis but the last (M values per channel), two passes
 * (mean, then the centred sum of squares), invstd = 1 / sqrt(var + eps);
 * y = (x - mean) * invstd * scale + bias; running_mean = m * running_mean + (1 - m) * mean and
 * running_var likewise with the unbiased variance var * M / (M - 1) (the biased one when M = 1).
 * The running statistics are variables updated in place.
 *
 * BATCH_NORM_GRAD (x, scale, batch_mean, batch_invstd, dy) -> dx, dscale?, dbias?:
 *   dbias = sum dy, dscale = sum dy * xhat, dx = scale * invstd / M * (M dy - dbias - xhat dscale).
 *
 * Channel statistics are computed per cell of 16 channels walking all M rows in order, then the
 * elementwise pass is split over rows: every value has one owner and one order, so any thread
 * count gives the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "training.h"

#define NORM_GRAD_CHANNEL_BLOCK 16

/* ---- LAYER_NORM_GRAD ---- */

typedef struct {
  float epsilon;
  int64_t rows, row_size;
  bool scalar_scale;
} layer_norm_grad_plan;

static void plan_release(edge_node *node) {
  free(node->state);
  node->state = NULL;
}

static edge_status layer_norm_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "LAYER_NORM_GRAD";
  plan_release(node);
  edge_status status = edge_training_check_arity(ctx, node, op, 3, 3, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_nd_input(ctx, node, 0), *scale = edge_nd_input(ctx, node, 1), *dy = edge_nd_input(ctx, node, 2);
  edge_tensor *dx = edge_nd_output(ctx, node, 0), *dscale = edge_training_optional(ctx, node, true, 1),
              *dbias = edge_training_optional(ctx, node, true, 2);
  if ((status = edge_training_check_float(ctx, op, "input", x)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "scale", scale)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "dx", dx)) != EDGE_OK ||
      (dscale && (status = edge_training_check_float(ctx, op, "dscale", dscale)) != EDGE_OK) ||
      (dbias && (status = edge_training_check_float(ctx, op, "dbias", dbias)) != EDGE_OK) ||
      (status = edge_training_check_same_shape(ctx, op, "input", x, "gradient", dy)) != EDGE_OK)
    return status;
  int32_t axis = node->options.layer_norm.axis;
  if (!edge_nd_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': axis %d is out of range for input '%s' of rank %d", op,
                     edge_nd_name(dx), node->options.layer_norm.axis, edge_nd_name(x), x->rank);
  float epsilon = node->options.layer_norm.epsilon;
  if (!(epsilon >= 0.0f) || isinf(epsilon))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: epsilon %g must be finite and >= 0", op, (double)epsilon);
  layer_norm_grad_plan p = {epsilon, edge_num_elements(axis, x->shape), edge_num_elements(x->rank - axis, x->shape + axis),
                            false};
  int64_t scale_count = edge_num_elements(scale->rank, scale->shape);
  if (scale_count != p.row_size && scale_count != 1) {
    char ss[128], rs[128];
    edge_format_shape(ss, sizeof ss, scale->rank, scale->shape);
    edge_format_shape(rs, sizeof rs, x->rank - axis, x->shape + axis);
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: scale '%s' %s must hold one value or one per normalised position %s",
                     op, edge_nd_name(scale), ss, rs);
  }
  p.scalar_scale = scale_count == 1 && p.row_size != 1;
  if ((status = edge_set_shape(ctx, dx, x->rank, x->shape)) != EDGE_OK) return status;
  if (dscale && (status = edge_set_shape(ctx, dscale, scale->rank, scale->shape)) != EDGE_OK) return status;
  if (dbias && (status = edge_set_shape(ctx, dbias, scale->rank, scale->shape)) != EDGE_OK) return status;
  layer_norm_grad_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  *plan = p;
  node->state = plan;
  node->scratch_bytes = (size_t)(2 * p.rows + 2 * p.row_size + 2) * sizeof(double);
  return EDGE_OK;
}

typedef struct {
  const layer_norm_grad_plan *plan;
  const float *x, *scale, *dy;
  float *dx;
  double *stats;          /* mean, invstd per row */
  double *dscale, *dbias; /* per row position, double */
} layer_norm_grad_job;

static void layer_norm_grad_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const layer_norm_grad_job *job = arg;
  const layer_norm_grad_plan *p = job->plan;
  int64_t n = p->row_size;
  for (int64_t r = begin; r < end; ++r) {
    const float *x = job->x + r * n, *dy = job->dy + r * n;
    float *dx = job->dx + r * n;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += x[i];
    double mean = sum / (double)n, squares = 0.0;
    for (int64_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
    double invstd = 1.0 / sqrt(squares / (double)n + p->epsilon);
    job->stats[2 * r] = mean;
    job->stats[2 * r + 1] = invstd;
    double g_sum = 0.0, gx_sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double g = (double)dy[i] * job->scale[p->scalar_scale ? 0 : i], xhat = (x[i] - mean) * invstd;
      g_sum += g;
      gx_sum += g * xhat;
    }
    double g_mean = g_sum / (double)n, gx_mean = gx_sum / (double)n;
    for (int64_t i = 0; i < n; ++i) {
      double g = (double)dy[i] * job->scale[p->scalar_scale ? 0 : i], xhat = (x[i] - mean) * invstd;
      dx[i] = (float)(invstd * (g - g_mean - xhat * gx_mean));
    }
  }
}

static void layer_norm_grad_columns(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const layer_norm_grad_job *job = arg;
  const layer_norm_grad_plan *p = job->plan;
  int64_t n = p->row_size;
  for (int64_t i = begin; i < end; ++i) {
    double ds = 0.0, db = 0.0;
    for (int64_t r = 0; r < p->rows; ++r) {
      double g = job->dy[r * n + i];
      ds += g * ((job->x[r * n + i] - job->stats[2 * r]) * job->stats[2 * r + 1]);
      db += g;
    }
    job->dscale[i] = ds;
    job->dbias[i] = db;
  }
}

static edge_status layer_norm_grad_eval(edge_context *ctx, edge_node *node) {
  const layer_norm_grad_plan *p = node->state;
  double *scratch = node->scratch;
  layer_norm_grad_job job = {p, edge_nd_input(ctx, node, 0)->data, edge_nd_input(ctx, node, 1)->data,
                             edge_nd_input(ctx, node, 2)->data, edge_nd_output(ctx, node, 0)->data, scratch,
                             scratch + 2 * p->rows, scratch + 2 * p->rows + p->row_size};
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->row_size + 1), layer_norm_grad_rows, &job);
  edge_tensor *dscale = edge_training_optional(ctx, node, true, 1), *dbias = edge_training_optional(ctx, node, true, 2);
  if (!dscale && !dbias) return EDGE_OK;
  edge_nd_parallel(ctx, p->row_size, 1 + 8192 / (p->rows + 1), layer_norm_grad_columns, &job);
  double ds = 0.0, db = 0.0;
  for (int64_t i = 0; i < p->row_size; ++i) ds += job.dscale[i], db += job.dbias[i];
  for (int32_t k = 0; k < 2; ++k) {
    edge_tensor *t = k == 0 ? dscale : dbias;
    if (!t) continue;
    float *out = t->data;
    const double *sums = k == 0 ? job.dscale : job.dbias;
    if (p->scalar_scale) out[0] = (float)(k == 0 ? ds : db);
    else
      for (int64_t i = 0; i < p->row_size; ++i) out[i] = (float)sums[i];
  }
  return EDGE_OK;
}

/* ---- BATCH_NORM_TRAIN and BATCH_NORM_GRAD ---- */

typedef struct {
  int64_t rows, channels; /* rows: M, the values per channel */
} batch_norm_plan;

static edge_status check_channel_vector(edge_context *ctx, const char *op, const char *role, const edge_tensor *t,
                                        int64_t channels) {
  edge_status status = edge_training_check_float(ctx, op, role, t);
  if (status != EDGE_OK) return status;
  if (t->rank != 1 || t->shape[0] != channels) {
    char ts[128];
    edge_format_shape(ts, sizeof ts, t->rank, t->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' is %s; expected [%lld], one per channel", op, role,
                     edge_nd_name(t), ts, (long long)channels);
  }
  return EDGE_OK;
}

static edge_status batch_norm_common(edge_context *ctx, edge_node *node, const char *op, const edge_tensor *x) {
  plan_release(node);
  const edge_batch_norm_options *o = &node->options.batch_norm;
  if (!(o->epsilon >= 0.0f) || isinf(o->epsilon) || !(o->momentum >= 0.0f && o->momentum <= 1.0f))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: epsilon %g must be finite and >= 0 and momentum %g in [0, 1]", op,
                     (double)o->epsilon, (double)o->momentum);
  edge_status status = edge_training_check_float(ctx, op, "input", x);
  if (status != EDGE_OK) return status;
  if (x->rank < 2)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input '%s' has rank %d; expected [..., C] with rank >= 2", op,
                     edge_nd_name(x), x->rank);
  batch_norm_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  plan->channels = x->shape[x->rank - 1];
  plan->rows = plan->channels ? edge_num_elements(x->rank, x->shape) / plan->channels : 0;
  node->state = plan;
  if (plan->rows < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input '%s' has no values per channel", op, edge_nd_name(x));
  node->scratch_bytes = (size_t)(2 * plan->channels + 2) * sizeof(double);
  return EDGE_OK;
}

static edge_status batch_norm_train_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_NORM_TRAIN";
  edge_status status = edge_training_check_arity(ctx, node, op, 5, 5, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_nd_input(ctx, node, 0);
  if ((status = batch_norm_common(ctx, node, op, x)) != EDGE_OK) return status;
  int64_t channels = ((batch_norm_plan *)node->state)->channels;
  static const char *const roles[5] = {"input", "scale", "bias", "running_mean", "running_var"};
  for (int32_t i = 1; i < 5; ++i)
    if ((status = check_channel_vector(ctx, op, roles[i], edge_nd_input(ctx, node, i), channels)) != EDGE_OK)
      return status;
  for (int32_t i = 3; i < 5; ++i)
    if ((status = edge_training_check_variable(ctx, op, roles[i], edge_nd_input(ctx, node, i))) != EDGE_OK)
      return status;
  if (node->inputs[3] == node->inputs[4])
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: running_mean and running_var are the same tensor '%s'", op,
                     edge_nd_name(edge_nd_input(ctx, node, 3)));
  edge_tensor *y = edge_nd_output(ctx, node, 0);
  if ((status = edge_training_check_float(ctx, op, "output", y)) != EDGE_OK ||
      (status = edge_set_shape(ctx, y, x->rank, x->shape)) != EDGE_OK)
    return status;
  for (int32_t i = 1; i < 3; ++i) {
    edge_tensor *t = edge_training_optional(ctx, node, true, i);
    if (t && ((status = edge_training_check_float(ctx, op, i == 1 ? "batch_mean" : "batch_invstd", t)) != EDGE_OK ||
              (status = edge_set_shape(ctx, t, 1, &channels)) != EDGE_OK))
      return status;
  }
  return EDGE_OK;
}

typedef struct {
  const batch_norm_plan *plan;
  const float *x, *dy, *scale, *bias, *mean_in, *invstd_in;
  float *y;
  double *a, *b; /* train: mean, invstd; grad: sum dy, sum dy * xhat */
  double epsilon;
} batch_norm_job;

static void batch_norm_statistics(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const int64_t C = job->plan->channels, M = job->plan->rows;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t c0 = cell * NORM_GRAD_CHANNEL_BLOCK, cc = C - c0 < NORM_GRAD_CHANNEL_BLOCK ? C - c0 : NORM_GRAD_CHANNEL_BLOCK;
    double sum[NORM_GRAD_CHANNEL_BLOCK] = {0}, squares[NORM_GRAD_CHANNEL_BLOCK] = {0};
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < cc; ++c) sum[c] += job->x[r * C + c0 + c];
    for (int64_t c = 0; c < cc; ++c) sum[c] /= (double)M;
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < cc; ++c) {
        double d = job->x[r * C + c0 + c] - sum[c];
        squares[c] += d * d;
      }
    for (int64_t c = 0; c < cc; ++c) {
      job->a[c0 + c] = sum[c];
      job->b[c0 + c] = squares[c] / (double)M; /* biased variance; invstd taken by the caller */
    }
  }
}

static void batch_norm_normalise(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const int64_t C = job->plan->channels;
  for (int64_t r = begin; r < end; ++r)
    for (int64_t c = 0; c < C; ++c)
      job->y[r * C + c] = (float)((job->x[r * C + c] - job->a[c]) * job->b[c] * job->scale[c] + job->bias[c]);
}

static edge_status batch_norm_train_eval(edge_context *ctx, edge_node *node) {
  const batch_norm_plan *p = node->state;
  const edge_batch_norm_options *o = &node->options.batch_norm;
  double *scratch = node->scratch;
  batch_norm_job job = {p, edge_nd_input(ctx, node, 0)->data, NULL, edge_nd_input(ctx, node, 1)->data,
                        edge_nd_input(ctx, node, 2)->data, NULL, NULL, edge_nd_output(ctx, node, 0)->data,
                        scratch, scratch + p->channels, o->epsilon};
  int64_t cells = (p->channels + NORM_GRAD_CHANNEL_BLOCK - 1) / NORM_GRAD_CHANNEL_BLOCK;
  edge_nd_parallel(ctx, cells, 1 + 65536 / (p->rows * NORM_GRAD_CHANNEL_BLOCK + 1), batch_norm_statistics, &job);
  float *running_mean = edge_nd_input(ctx, node, 3)->data, *running_var = edge_nd_input(ctx, node, 4)->data;
  edge_tensor *mean_out = edge_training_optional(ctx, node, true, 1), *invstd_out = edge_training_optional(ctx, node, true, 2);
  double m = o->momentum, unbias = p->rows > 1 ? (double)p->rows / (double)(p->rows - 1) : 1.0;
  for (int64_t c = 0; c < p->channels; ++c) {
    double mean = job.a[c], var = job.b[c];
    running_mean[c] = (float)(m * running_mean[c] + (1.0 - m) * mean);
    running_var[c] = (float)(m * running_var[c] + (1.0 - m) * var * unbias);
    job.b[c] = 1.0 / sqrt(var + o->epsilon);
    if (mean_out) ((float *)mean_out->data)[c] = (float)mean;
    if (invstd_out) ((float *)invstd_out->data)[c] = (float)job.b[c];
  }
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->channels + 1), batch_norm_normalise, &job);
  return EDGE_OK;
}

static edge_status batch_norm_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_NORM_GRAD";
  edge_status status = edge_training_check_arity(ctx, node, op, 5, 5, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_nd_input(ctx, node, 0), *dy = edge_nd_input(ctx, node, 4);
  if ((status = batch_norm_common(ctx, node, op, x)) != EDGE_OK) return status;
  int64_t channels = ((batch_norm_plan *)node->state)->channels;
  static const char *const roles[4] = {"input", "scale", "batch_mean", "batch_invstd"};
  for (int32_t i = 1; i < 4; ++i)
    if ((status = check_channel_vector(ctx, op, roles[i], edge_nd_input(ctx, node, i), channels)) != EDGE_OK)
      return status;
  if ((status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_same_shape(ctx, op, "input", x, "gradient", dy)) != EDGE_OK)
    return status;
  edge_tensor *dx = edge_nd_output(ctx, node, 0);
  if ((status = edge_training_check_float(ctx, op, "dx", dx)) != EDGE_OK ||
      (status = edge_set_shape(ctx, dx, x->rank, x->shape)) != EDGE_OK)
    return status;
  for (int32_t i = 1; i < 3; ++i) {
    edge_tensor *t = edge_training_optional(ctx, node, true, i);
    if (t && ((status = edge_training_check_float(ctx, op, i == 1 ? "dscale" : "dbias", t)) != EDGE_OK ||
              (status = edge_set_shape(ctx, t, 1, &channels)) != EDGE_OK))
      return status;
  }
  return EDGE_OK;
}

static void batch_norm_grad_sums(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const int64_t C = job->plan->channels, M = job->plan->rows;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t c0 = cell * NORM_GRAD_CHANNEL_BLOCK, cc = C - c0 < NORM_GRAD_CHANNEL_BLOCK ? C - c0 : NORM_GRAD_CHANNEL_BLOCK;
    double sum[NORM_GRAD_CHANNEL_BLOCK] = {0}, dot[NORM_GRAD_CHANNEL_BLOCK] = {0};
    for (int64_t r = 0; r < M; ++r)
      for (int64_t c = 0; c < cc; ++c) {
        int64_t k = c0 + c;
        double g = job->dy[r * C + k];
        sum[c] += g;
        dot[c] += g * ((job->x[r * C + k] - (double)job->mean_in[k]) * job->invstd_in[k]);
      }
    for (int64_t c = 0; c < cc; ++c) job->a[c0 + c] = sum[c], job->b[c0 + c] = dot[c];
  }
}

static void batch_norm_grad_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const int64_t C = job->plan->channels;
  const double M = (double)job->plan->rows;
  for (int64_t r = begin; r < end; ++r)
    for (int64_t c = 0; c < C; ++c) {
      double invstd = job->invstd_in[c], xhat = (job->x[r * C + c] - (double)job->mean_in[c]) * invstd;
      job->y[r * C + c] = (float)(job->scale[c] * invstd / M * (M * job->dy[r * C + c] - job->a[c] - xhat * job->b[c]));
    }
}

static edge_status batch_norm_grad_eval(edge_context *ctx, edge_node *node) {
  const batch_norm_plan *p = node->state;
  double *scratch = node->scratch;
  batch_norm_job job = {p, edge_nd_input(ctx, node, 0)->data, edge_nd_input(ctx, node, 4)->data,
                        edge_nd_input(ctx, node, 1)->data, NULL, edge_nd_input(ctx, node, 2)->data,
                        edge_nd_input(ctx, node, 3)->data, edge_nd_output(ctx, node, 0)->data,
                        scratch, scratch + p->channels, 0.0};
  int64_t cells = (p->channels + NORM_GRAD_CHANNEL_BLOCK - 1) / NORM_GRAD_CHANNEL_BLOCK;
  edge_nd_parallel(ctx, cells, 1 + 65536 / (p->rows * NORM_GRAD_CHANNEL_BLOCK + 1), batch_norm_grad_sums, &job);
  edge_tensor *dscale = edge_training_optional(ctx, node, true, 1), *dbias = edge_training_optional(ctx, node, true, 2);
  for (int64_t c = 0; c < p->channels; ++c) {
    if (dscale) ((float *)dscale->data)[c] = (float)job.b[c];
    if (dbias) ((float *)dbias->data)[c] = (float)job.a[c];
  }
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->channels + 1), batch_norm_grad_rows, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_layer_norm_grad = {layer_norm_grad_prepare, layer_norm_grad_eval, plan_release};
const edge_op_registration edge_op_batch_norm_train = {batch_norm_train_prepare, batch_norm_train_eval, plan_release};
const edge_op_registration edge_op_batch_norm_grad = {batch_norm_grad_prepare, batch_norm_grad_eval, plan_release};

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
 * Reference (EDGE_ISA=scalar, or EDGE_BATCH_NORM=reference): channel statistics are computed in
 * double per cell of 16 channels walking all M rows in order, then the elementwise pass is split
 * over rows. Fast path (the vector family's channel_* kernels, kernels/vector.h): the rows are cut
 * into blocks (<= 4096 floats, <= 256 rows) and cells of whole blocks, both sized from the shape
 * alone. A kernel gives a block's float statistics (train: mean and the centred sum of squares;
 * grad: sum dy and sum dy * (x - mean)); each cell folds its blocks into double in order (moments
 * merged pairwise, Chan et al.), then the cells are folded in order; the elementwise pass is
 * y = (x - mean) * (invstd * scale) + bias, dx = a dy + (b (x - mean) + d) with per-channel
 * float coefficients computed in double. Either way every value has one owner and one order, so
 * any thread count gives the same bits. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/config.h"
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
  free(node->plan);
  node->plan = NULL;
}

static edge_status layer_norm_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "LAYER_NORM_GRAD";
  plan_release(node);
  edge_status status = edge_training_check_arity(ctx, node, op, 3, 3, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *scale = edge_op_input(ctx, node, 1), *dy = edge_op_input(ctx, node, 2);
  edge_tensor *dx = edge_op_output(ctx, node, 0), *dscale = edge_training_optional(ctx, node, true, 1),
              *dbias = edge_training_optional(ctx, node, true, 2);
  if ((status = edge_training_check_float(ctx, op, "input", x)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "scale", scale)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "dx", dx)) != EDGE_OK ||
      (dscale && (status = edge_training_check_float(ctx, op, "dscale", dscale)) != EDGE_OK) ||
      (dbias && (status = edge_training_check_float(ctx, op, "dbias", dbias)) != EDGE_OK) ||
      (status = edge_training_check_same_shape(ctx, op, "input", x, "gradient", dy)) != EDGE_OK)
    return status;
  if (node->options.layer_norm.rms)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': the rms form has no gradient kernel (autodiff writes RMSNorm's "
                     "gradient as elementwise ops)", op, edge_tensor_name(dx));
  int32_t axis = node->options.layer_norm.axis;
  if (!edge_normalize_axis(&axis, x->rank))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': axis %d is out of range for input '%s' of rank %d", op,
                     edge_tensor_name(dx), node->options.layer_norm.axis, edge_tensor_name(x), x->rank);
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
                     op, edge_tensor_name(scale), ss, rs);
  }
  p.scalar_scale = scale_count == 1 && p.row_size != 1;
  if ((status = edge_set_shape(ctx, dx, x->rank, x->shape)) != EDGE_OK) return status;
  if (dscale && (status = edge_set_shape(ctx, dscale, scale->rank, scale->shape)) != EDGE_OK) return status;
  if (dbias && (status = edge_set_shape(ctx, dbias, scale->rank, scale->shape)) != EDGE_OK) return status;
  layer_norm_grad_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  *plan = p;
  node->plan = plan;
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
  const layer_norm_grad_plan *p = node->plan;
  double *scratch = node->scratch;
  layer_norm_grad_job job = {p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                             edge_op_input(ctx, node, 2)->data, edge_op_output(ctx, node, 0)->data, scratch,
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

/* The fast path's blocks: at most BATCH_NORM_BLOCK_FLOATS floats (L1-sized, the kernels walk each
 * channel down the block's rows) and BATCH_NORM_BLOCK_ROWS rows (the float chains' length); cells
 * of about BATCH_NORM_CELL_FLOATS floats, a whole number of blocks. */
#define BATCH_NORM_BLOCK_FLOATS 4096
#define BATCH_NORM_BLOCK_ROWS 256
#define BATCH_NORM_CELL_FLOATS 16384

typedef struct {
  int64_t rows, channels; /* rows: M, the values per channel */
  bool fast;              /* the vector family's channel_* kernels (kernels/vector.h) */
  int64_t block_rows, cell_rows, cells;
  size_t offset_cells, offset_blocks, offset_params; /* fast scratch: per-cell doubles, block floats, params */
} batch_norm_plan;

static edge_status check_channel_vector(edge_context *ctx, const char *op, const char *role, const edge_tensor *t,
                                        int64_t channels) {
  edge_status status = edge_training_check_float(ctx, op, role, t);
  if (status != EDGE_OK) return status;
  if (t->rank != 1 || t->shape[0] != channels) {
    char ts[128];
    edge_format_shape(ts, sizeof ts, t->rank, t->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' is %s; expected [%lld], one per channel", op, role,
                     edge_tensor_name(t), ts, (long long)channels);
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
                     edge_tensor_name(x), x->rank);
  batch_norm_plan *plan = calloc(1, sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  plan->channels = x->shape[x->rank - 1];
  plan->rows = plan->channels ? edge_num_elements(x->rank, x->shape) / plan->channels : 0;
  node->plan = plan;
  if (plan->rows < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input '%s' has no values per channel", op, edge_tensor_name(x));
  const int64_t C = plan->channels;
  node->scratch_bytes = (size_t)(2 * C + 2) * sizeof(double);
  const edge_vector_kernels *vector = &edge_kernels()->vector;
  const char *forced = getenv("EDGE_BATCH_NORM");
  plan->fast = vector->channel_moments && vector->channel_grad_sums && vector->channel_affine &&
               vector->channel_grad_apply && !(forced && strcmp(forced, "reference") == 0);
  if (plan->fast) {
    int64_t block_rows = BATCH_NORM_BLOCK_FLOATS / C;
    plan->block_rows = block_rows < 1 ? 1 : block_rows > BATCH_NORM_BLOCK_ROWS ? BATCH_NORM_BLOCK_ROWS : block_rows;
    int64_t blocks_per_cell = BATCH_NORM_CELL_FLOATS / (plan->block_rows * C);
    plan->cell_rows = plan->block_rows * (blocks_per_cell < 1 ? 1 : blocks_per_cell);
    plan->cells = (plan->rows + plan->cell_rows - 1) / plan->cell_rows;
    plan->offset_cells = edge_training_align((size_t)(2 * C + 2) * sizeof(double));
    plan->offset_blocks = plan->offset_cells + edge_training_align((size_t)(2 * plan->cells * C) * sizeof(double));
    plan->offset_params = plan->offset_blocks + edge_training_align((size_t)(2 * plan->cells * C) * sizeof(float));
    node->scratch_bytes = plan->offset_params + (size_t)(4 * C) * sizeof(float);
  }
  return EDGE_OK;
}

static edge_status batch_norm_train_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_NORM_TRAIN";
  edge_status status = edge_training_check_arity(ctx, node, op, 5, 5, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0);
  if ((status = batch_norm_common(ctx, node, op, x)) != EDGE_OK) return status;
  int64_t channels = ((batch_norm_plan *)node->plan)->channels;
  static const char *const roles[5] = {"input", "scale", "bias", "running_mean", "running_var"};
  for (int32_t i = 1; i < 5; ++i)
    if ((status = check_channel_vector(ctx, op, roles[i], edge_op_input(ctx, node, i), channels)) != EDGE_OK)
      return status;
  for (int32_t i = 3; i < 5; ++i)
    if ((status = edge_training_check_variable(ctx, op, roles[i], edge_op_input(ctx, node, i))) != EDGE_OK)
      return status;
  if (node->inputs[3] == node->inputs[4])
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: running_mean and running_var are the same tensor '%s'", op,
                     edge_tensor_name(edge_op_input(ctx, node, 3)));
  edge_tensor *y = edge_op_output(ctx, node, 0);
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
  /* fast path */
  const edge_vector_kernels *vector;
  double *cell_a, *cell_b; /* per cell, C each: train mean, m2; grad sum dy, sum dy * (x - mean) */
  float *block;            /* per cell, 2 C: one block's float results */
  float *params;           /* 4 C: train shift, mul, add; grad a, b, d */
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

/* Adds the moments (count, mean, m2) of a group of n_b values to those of n_a values, channel by
 * channel (Chan et al.'s pairwise update): the result is the moments of all n_a + n_b values. */
static void merge_moments(int64_t C, double n_a, double *mean, double *m2, double n_b, const double *mean_b,
                          const double *m2_b) {
  const double total = n_a + n_b;
  for (int64_t c = 0; c < C; ++c) {
    double delta = mean_b[c] - mean[c];
    mean[c] += delta * (n_b / total);
    m2[c] += m2_b[c] + delta * delta * (n_a * n_b / total);
  }
}

/* Fast statistics: each cell walks its blocks in order, the kernel giving a block's float mean and
 * m2 and the cell merging them in double; eval then merges the cells in order. */
static void batch_norm_fast_statistics(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const batch_norm_plan *p = job->plan;
  const int64_t C = p->channels;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t r0 = cell * p->cell_rows, r1 = r0 + p->cell_rows < p->rows ? r0 + p->cell_rows : p->rows;
    double *mean = job->cell_a + cell * C, *m2 = job->cell_b + cell * C;
    float *block_mean = job->block + cell * 2 * C, *block_m2 = block_mean + C;
    for (int64_t r = r0; r < r1; r += p->block_rows) {
      const int64_t rows = r1 - r < p->block_rows ? r1 - r : p->block_rows;
      job->vector->channel_moments((size_t)rows, (size_t)C, job->x + r * C, block_mean, block_m2);
      if (r == r0) {
        for (int64_t c = 0; c < C; ++c) mean[c] = block_mean[c], m2[c] = block_m2[c];
        continue;
      }
      const double n_a = (double)(r - r0), n_b = (double)rows, total = n_a + n_b;
      for (int64_t c = 0; c < C; ++c) {
        double delta = (double)block_mean[c] - mean[c];
        mean[c] += delta * (n_b / total);
        m2[c] += (double)block_m2[c] + delta * delta * (n_a * n_b / total);
      }
    }
  }
}

static void batch_norm_fast_normalise(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const batch_norm_plan *p = job->plan;
  const int64_t C = p->channels;
  const float *shift = job->params, *mul = shift + C, *add = mul + C;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t r0 = cell * p->cell_rows, r1 = r0 + p->cell_rows < p->rows ? r0 + p->cell_rows : p->rows;
    for (int64_t r = r0; r < r1; r += p->block_rows) {
      const int64_t rows = r1 - r < p->block_rows ? r1 - r : p->block_rows;
      job->vector->channel_affine((size_t)rows, (size_t)C, job->x + r * C, shift, mul, add, job->y + r * C);
    }
  }
}

/* Cells are 1/BATCH_NORM_CELL_FLOATS of the tensor: worth a second thread from 4 cells on. */
#define BATCH_NORM_MIN_CELLS_PER_THREAD 2

static edge_status batch_norm_train_eval(edge_context *ctx, edge_node *node) {
  const batch_norm_plan *p = node->plan;
  const edge_batch_norm_options *o = &node->options.batch_norm;
  char *scratch = node->scratch;
  batch_norm_job job = {p, edge_op_input(ctx, node, 0)->data, NULL, edge_op_input(ctx, node, 1)->data,
                        edge_op_input(ctx, node, 2)->data, NULL, NULL, edge_op_output(ctx, node, 0)->data,
                        (double *)scratch, (double *)scratch + p->channels, o->epsilon, NULL, NULL, NULL, NULL, NULL};
  if (p->fast) {
    const int64_t C = p->channels;
    job.vector = &edge_kernels()->vector;
    job.cell_a = (double *)(scratch + p->offset_cells);
    job.cell_b = job.cell_a + p->cells * C;
    job.block = (float *)(scratch + p->offset_blocks);
    job.params = (float *)(scratch + p->offset_params);
    edge_nd_parallel(ctx, p->cells, BATCH_NORM_MIN_CELLS_PER_THREAD, batch_norm_fast_statistics, &job);
    memcpy(job.a, job.cell_a, (size_t)C * sizeof(double));
    memcpy(job.b, job.cell_b, (size_t)C * sizeof(double));
    for (int64_t cell = 1; cell < p->cells; ++cell) {
      const int64_t first = cell * p->cell_rows, rows = p->rows - first < p->cell_rows ? p->rows - first : p->cell_rows;
      merge_moments(C, (double)first, job.a, job.b, (double)rows, job.cell_a + cell * C, job.cell_b + cell * C);
    }
    for (int64_t c = 0; c < C; ++c) job.b[c] /= (double)p->rows; /* biased variance */
  } else {
    int64_t cells = (p->channels + NORM_GRAD_CHANNEL_BLOCK - 1) / NORM_GRAD_CHANNEL_BLOCK;
    edge_nd_parallel(ctx, cells, 1 + 65536 / (p->rows * NORM_GRAD_CHANNEL_BLOCK + 1), batch_norm_statistics, &job);
  }
  float *running_mean = edge_op_input(ctx, node, 3)->data, *running_var = edge_op_input(ctx, node, 4)->data;
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
  if (p->fast) {
    const int64_t C = p->channels;
    for (int64_t c = 0; c < C; ++c) {
      job.params[c] = (float)job.a[c];
      job.params[C + c] = (float)(job.b[c] * job.scale[c]);
      job.params[2 * C + c] = job.bias[c];
    }
    edge_nd_parallel(ctx, p->cells, BATCH_NORM_MIN_CELLS_PER_THREAD, batch_norm_fast_normalise, &job);
    return EDGE_OK;
  }
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->channels + 1), batch_norm_normalise, &job);
  return EDGE_OK;
}

static edge_status batch_norm_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "BATCH_NORM_GRAD";
  edge_status status = edge_training_check_arity(ctx, node, op, 5, 5, 1, 3, true);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *dy = edge_op_input(ctx, node, 4);
  if ((status = batch_norm_common(ctx, node, op, x)) != EDGE_OK) return status;
  int64_t channels = ((batch_norm_plan *)node->plan)->channels;
  static const char *const roles[4] = {"input", "scale", "batch_mean", "batch_invstd"};
  for (int32_t i = 1; i < 4; ++i)
    if ((status = check_channel_vector(ctx, op, roles[i], edge_op_input(ctx, node, i), channels)) != EDGE_OK)
      return status;
  if ((status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_same_shape(ctx, op, "input", x, "gradient", dy)) != EDGE_OK)
    return status;
  edge_tensor *dx = edge_op_output(ctx, node, 0);
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

/* Fast sums: per cell, the blocks' float sums of dy and dy * (x - mean) added in double in order. */
static void batch_norm_fast_grad_sums(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const batch_norm_plan *p = job->plan;
  const int64_t C = p->channels;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t r0 = cell * p->cell_rows, r1 = r0 + p->cell_rows < p->rows ? r0 + p->cell_rows : p->rows;
    double *sum = job->cell_a + cell * C, *dot = job->cell_b + cell * C;
    float *block_sum = job->block + cell * 2 * C, *block_dot = block_sum + C;
    for (int64_t c = 0; c < C; ++c) sum[c] = 0.0, dot[c] = 0.0;
    for (int64_t r = r0; r < r1; r += p->block_rows) {
      const int64_t rows = r1 - r < p->block_rows ? r1 - r : p->block_rows;
      job->vector->channel_grad_sums((size_t)rows, (size_t)C, job->x + r * C, job->dy + r * C, job->mean_in,
                                     block_sum, block_dot);
      for (int64_t c = 0; c < C; ++c) sum[c] += block_sum[c], dot[c] += block_dot[c];
    }
  }
}

static void batch_norm_fast_grad_apply(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const batch_norm_job *job = arg;
  const batch_norm_plan *p = job->plan;
  const int64_t C = p->channels;
  const float *a = job->params, *b = a + C, *d = b + C;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t r0 = cell * p->cell_rows, r1 = r0 + p->cell_rows < p->rows ? r0 + p->cell_rows : p->rows;
    for (int64_t r = r0; r < r1; r += p->block_rows) {
      const int64_t rows = r1 - r < p->block_rows ? r1 - r : p->block_rows;
      job->vector->channel_grad_apply((size_t)rows, (size_t)C, job->x + r * C, job->dy + r * C, job->mean_in, a, b, d,
                                      job->y + r * C);
    }
  }
}

static edge_status batch_norm_grad_eval(edge_context *ctx, edge_node *node) {
  const batch_norm_plan *p = node->plan;
  char *scratch = node->scratch;
  const int64_t C = p->channels;
  batch_norm_job job = {p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 4)->data,
                        edge_op_input(ctx, node, 1)->data, NULL, edge_op_input(ctx, node, 2)->data,
                        edge_op_input(ctx, node, 3)->data, edge_op_output(ctx, node, 0)->data,
                        (double *)scratch, (double *)scratch + C, 0.0, NULL, NULL, NULL, NULL, NULL};
  if (p->fast) {
    job.vector = &edge_kernels()->vector;
    job.cell_a = (double *)(scratch + p->offset_cells);
    job.cell_b = job.cell_a + p->cells * C;
    job.block = (float *)(scratch + p->offset_blocks);
    job.params = (float *)(scratch + p->offset_params);
    edge_nd_parallel(ctx, p->cells, BATCH_NORM_MIN_CELLS_PER_THREAD, batch_norm_fast_grad_sums, &job);
    for (int64_t c = 0; c < C; ++c) {
      double sum = 0.0, dot = 0.0;
      for (int64_t cell = 0; cell < p->cells; ++cell) sum += job.cell_a[cell * C + c], dot += job.cell_b[cell * C + c];
      job.a[c] = sum;
      job.b[c] = dot * job.invstd_in[c];
    }
  } else {
    int64_t cells = (C + NORM_GRAD_CHANNEL_BLOCK - 1) / NORM_GRAD_CHANNEL_BLOCK;
    edge_nd_parallel(ctx, cells, 1 + 65536 / (p->rows * NORM_GRAD_CHANNEL_BLOCK + 1), batch_norm_grad_sums, &job);
  }
  edge_tensor *dscale = edge_training_optional(ctx, node, true, 1), *dbias = edge_training_optional(ctx, node, true, 2);
  for (int64_t c = 0; c < C; ++c) {
    if (dscale) ((float *)dscale->data)[c] = (float)job.b[c];
    if (dbias) ((float *)dbias->data)[c] = (float)job.a[c];
  }
  if (p->fast) {
    /* dx = s i dy - s i sum / M - s i^2 dot' / M (x - mean), dot' = sum dy * (x - mean) */
    const double M = (double)p->rows;
    for (int64_t c = 0; c < C; ++c) {
      const double si = (double)job.scale[c] * job.invstd_in[c];
      job.params[c] = (float)si;
      job.params[C + c] = (float)(-si * job.invstd_in[c] * job.b[c] / M);
      job.params[2 * C + c] = (float)(-si * job.a[c] / M);
    }
    edge_nd_parallel(ctx, p->cells, BATCH_NORM_MIN_CELLS_PER_THREAD, batch_norm_fast_grad_apply, &job);
    return EDGE_OK;
  }
  edge_nd_parallel(ctx, p->rows, 1 + 8192 / (p->channels + 1), batch_norm_grad_rows, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_layer_norm_grad = {layer_norm_grad_prepare, layer_norm_grad_eval, plan_release};
const edge_op_registration edge_op_batch_norm_train = {batch_norm_train_prepare, batch_norm_train_eval, plan_release};
const edge_op_registration edge_op_batch_norm_grad = {batch_norm_grad_prepare, batch_norm_grad_eval, plan_release};

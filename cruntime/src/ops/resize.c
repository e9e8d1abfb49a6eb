/* RESIZE: NEAREST (any dtype) or separable N-d LINEAR or CUBIC (float32) over every dimension
 * whose size changes, with ONNX's coordinate transforms and nearest rounding modes. CUBIC is Keys'
 * cubic convolution with coefficient a over four taps, indices clamped to the input (or, with
 * exclude_outside, the taps outside it weighted 0 and the rest renormalised), as onnxruntime does.
 *
 * Output size: when the input still has its declared shape, the output's declared shape (the
 * converter computed it, exactly). When the input was resized at run time, floor(in * scale) as in
 * ONNX, or with no scale the declared output/input ratio. The coordinate transform uses the given
 * scale when there is one (as ONNX does), else out/in.
 *
 * Prepare turns each resized dimension into a table: output coordinate -> two source coordinates
 * and their weights (NEAREST: one coordinate; CUBIC: four, in tables of their own). Eval walks output rows (the innermost dimension),
 * combining the corners of the outer resized dimensions once per row; where the innermost
 * dimension keeps its size (NHWC's channels) a row is a weighted sum of whole corner rows, done by
 * the vector multiply and add kernels in the scalar loop's order, so the result is the same. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "resize.h"

static void free_resize_plan(resize_plan *plan) {
  if (!plan) return;
  free(plan->tables);
  free(plan->cubic_tables);
  free(plan);
}

/* In float32, operation for operation as onnxruntime does: whether a coordinate lands just below
 * or exactly on an integer decides NEAREST's pick, so double precision would disagree with it. */
static float source_coordinate(edge_coord_kind mode, int64_t out_coord, int64_t in_dim, int64_t out_dim,
                               float scale) {
  float x = (float)out_coord;
  switch (mode) {
    case EDGE_COORD_HALF_PIXEL: return (x + 0.5f) / scale - 0.5f;
    case EDGE_COORD_PYTORCH_HALF_PIXEL: return out_dim > 1 ? (x + 0.5f) / scale - 0.5f : 0.0f;
    case EDGE_COORD_ALIGN_CORNERS: {
      /* ONNX divides by the unrounded resized length, in * scale, not by the output size. */
      float resized = scale > 0.0f ? (float)in_dim * scale : (float)out_dim;
      return resized > 1.0f ? x * (float)(in_dim - 1) / (resized - 1.0f) : 0.0f;
    }
    case EDGE_COORD_ASYMMETRIC: return x / scale;
    default: return 0.0f;
  }
}

static int64_t nearest_index(edge_nearest_kind mode, float x, int64_t in_dim) {
  float r;
  switch (mode) {
    case EDGE_NEAREST_ROUND_PREFER_FLOOR: r = (x == floorf(x) + 0.5f) ? floorf(x) : roundf(x); break;
    case EDGE_NEAREST_ROUND_PREFER_CEIL: r = (x == floorf(x) + 0.5f) ? ceilf(x) : roundf(x); break;
    case EDGE_NEAREST_FLOOR: r = floorf(x); break;
    case EDGE_NEAREST_CEIL: r = ceilf(x); break;
    default: r = x; break;
  }
  if (!(r >= 0.0f)) return 0; /* NaN included */
  if (r >= (float)(in_dim - 1)) return in_dim - 1;
  return (int64_t)r;
}

/* Keys' cubic convolution kernel at distance s (onnxruntime's coefficients, in float32). */
static float cubic_kernel(float s, float a) {
  s = fabsf(s);
  if (s < 1.0f) return ((a + 2.0f) * s - (a + 3.0f)) * s * s + 1.0f;
  if (s < 2.0f) return ((a * s - 5.0f * a) * s + 8.0f * a) * s - 4.0f * a;
  return 0.0f;
}

/* The four taps of source coordinate x over an input of size in: clamped indices and weights. */
static void cubic_taps(float x, int64_t in, float a, bool exclude_outside, int64_t *index, float *weight) {
  /* Past two samples outside the input every tap is outside too and the weights sum to 1, so
   * clamping there changes no result and keeps the index arithmetic in range (a file's scale may
   * be tiny, and NaN lands at the low end). */
  if (!(x >= -3.0f)) x = -3.0f;
  if (x > (float)in + 2.0f) x = (float)in + 2.0f;
  float base = floorf(x), t = x - base, total = 0.0f;
  for (int32_t k = 0; k < 4; ++k) {
    int64_t i = (int64_t)base - 1 + k;
    weight[k] = cubic_kernel(t - (float)(k - 1), a);
    if (exclude_outside && (i < 0 || i >= in)) weight[k] = 0.0f;
    total += weight[k];
    index[k] = i < 0 ? 0 : i >= in ? in - 1 : i;
  }
  if (exclude_outside && total != 0.0f)
    for (int32_t k = 0; k < 4; ++k) weight[k] /= total;
}

static edge_status output_dim(edge_context *ctx, const edge_tensor *x, const edge_tensor *y, int32_t d, float scale,
                              int64_t *out) {
  int64_t in = x->shape[d];
  bool declared = y->declared_rank == x->rank && y->declared_shape[d] >= 0;
  bool input_as_declared = x->declared_rank == x->rank && x->declared_shape[d] == in;
  if (declared && input_as_declared) {
    *out = y->declared_shape[d];
  } else if (scale > 0.0f) {
    /* The tolerance absorbs a scale stored as out/in rounded to float (e.g. 7/3). */
    double size = floor((double)in * (double)scale + 1e-4);
    if (!(size <= (double)((int64_t)1 << 46)))
      return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': scale %g on dimension %d of size %lld is too large",
                       edge_tensor_name(y), (double)scale, d, (long long)in);
    *out = (int64_t)size;
  } else if (declared && x->declared_rank == x->rank && x->declared_shape[d] > 0) {
    int64_t num = y->declared_shape[d], den = x->declared_shape[d];
    if (num > 0 && in > ((int64_t)1 << 46) / num)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': dimension %d of size %lld resized too large",
                       edge_tensor_name(y), d, (long long)in);
    *out = in * num / den;
  } else {
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "RESIZE '%s': no scale and no declared size for dimension %d of input '%s'", edge_tensor_name(y), d,
                     edge_tensor_name(x));
  }
  return EDGE_OK;
}

static edge_status resize_prepare(edge_context *ctx, edge_node *node) {
  free_resize_plan(node->plan);
  node->plan = NULL;
  edge_status status = edge_op_check_arity(ctx, node, "RESIZE", 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const edge_resize_options *options = &node->options.resize;
  int32_t rank = x->rank;
  if ((int)options->mode < 0 || options->mode >= EDGE_RESIZE_COUNT_ || (int)options->coordinate_mode < 0 ||
      options->coordinate_mode >= EDGE_COORD_COUNT_ || (int)options->nearest_mode < 0 ||
      options->nearest_mode >= EDGE_NEAREST_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': mode %d, coordinate mode %d or nearest mode %d is unknown",
                     edge_tensor_name(y), (int)options->mode, (int)options->coordinate_mode, (int)options->nearest_mode);
  if (options->rank != 0 && options->rank != rank)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': %d scales for input '%s' of rank %d", edge_tensor_name(y),
                     options->rank, edge_tensor_name(x), rank);
  if (y->dtype != x->dtype)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': output is %s but input '%s' is %s", edge_tensor_name(y),
                     edge_dtype_name(y->dtype), edge_tensor_name(x), edge_dtype_name(x->dtype));
  bool linear = options->mode == EDGE_RESIZE_LINEAR, cubic = options->mode == EDGE_RESIZE_CUBIC;
  if ((linear || cubic) && x->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "RESIZE '%s': %s resize of %s input '%s' (float32 only)",
                     edge_tensor_name(y), linear ? "linear" : "cubic", edge_dtype_name(x->dtype), edge_tensor_name(x));

  int64_t shape[EDGE_MAX_RANK], entries = 0;
  for (int32_t d = 0; d < rank; ++d) {
    float scale = options->rank == rank ? options->scales[d] : 0.0f;
    status = output_dim(ctx, x, y, d, scale, &shape[d]);
    if (status != EDGE_OK) return status;
    if (x->shape[d] == 0 && shape[d] > 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "RESIZE '%s': dimension %d of input '%s' is empty", edge_tensor_name(y), d,
                       edge_tensor_name(x));
    if (shape[d] != x->shape[d]) entries += shape[d];
  }
  status = edge_set_shape(ctx, y, rank, shape);
  if (status != EDGE_OK) return status;
  if (cubic) {
    /* Each resized outer dimension multiplies a row's corners by four. */
    int64_t corners = 1;
    for (int32_t d = 0; d + 1 < rank; ++d)
      if (shape[d] != x->shape[d]) corners *= 4;
    if (corners > (1 << (EDGE_MAX_RANK - 1)))
      return edge_fail(ctx, EDGE_UNSUPPORTED, "RESIZE '%s': cubic resize of more than 3 outer dimensions",
                       edge_tensor_name(y));
  }

  /* An empty output has nothing to compute (eval returns at once), however long its other
   * dimensions are: build no tables for it. */
  if (edge_num_elements(rank, shape) == 0) return EDGE_OK;

  /* The tables are kept with the plan, so they count against the memory limit before they are built. */
  size_t entry_bytes = 2 * sizeof(int64_t) + sizeof(float), cubic_entry_bytes = 4 * (sizeof(int64_t) + sizeof(float));
  size_t table_bytes = (size_t)entries * (entry_bytes + (cubic ? cubic_entry_bytes : 0));
  if (ctx->memory_limit && table_bytes > ctx->memory_limit)
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY,
                     "RESIZE '%s': its tables would need %zu bytes, over the memory limit of %llu", edge_tensor_name(y),
                     table_bytes, (unsigned long long)ctx->memory_limit);
  node->plan_bytes = table_bytes;
  resize_plan *plan = calloc(1, sizeof *plan);
  if (plan) plan->tables = malloc((size_t)(entries > 0 ? entries : 1) * entry_bytes);
  if (!plan || !plan->tables) {
    free_resize_plan(plan);
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "RESIZE '%s': out of memory", edge_tensor_name(y));
  }
  if (plan && cubic) plan->cubic_tables = malloc((size_t)(entries > 0 ? entries : 1) * cubic_entry_bytes);
  if (cubic && !plan->cubic_tables) {
    free_resize_plan(plan);
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "RESIZE '%s': out of memory", edge_tensor_name(y));
  }
  plan->rank = rank;
  plan->linear = linear;
  plan->cubic = cubic;
  int64_t *next_cubic_index = plan->cubic_tables;
  float *next_cubic_weight = cubic ? (float *)(next_cubic_index + 4 * entries) : NULL;
  edge_nd_contiguous_strides(rank, x->shape, plan->x_strides);
  int64_t *next_index = plan->tables;
  float *next_weight = (float *)(next_index + 2 * entries);
  for (int32_t d = 0; d < rank; ++d) {
    int64_t in = x->shape[d], out = shape[d];
    if (in == out) continue;
    plan->resized[d] = true;
    plan->lower[d] = next_index;
    plan->upper[d] = next_index + out;
    plan->upper_weight[d] = next_weight;
    next_index += 2 * out;
    next_weight += out;
    float given = options->rank == rank ? options->scales[d] : 0.0f;
    float scale = given > 0.0f ? given : (float)out / (float)in;
    if (cubic) {
      plan->cubic_index[d] = next_cubic_index;
      plan->cubic_weight[d] = next_cubic_weight;
      next_cubic_index += 4 * out;
      next_cubic_weight += 4 * out;
    }
    for (int64_t o = 0; o < out; ++o) {
      float s = source_coordinate(options->coordinate_mode, o, in, out, scale);
      if (cubic) { /* unclamped: the taps clamp (or drop) themselves */
        cubic_taps(s, in, options->cubic_coeff_a, options->exclude_outside, plan->cubic_index[d] + 4 * o,
                   plan->cubic_weight[d] + 4 * o);
        plan->lower[d][o] = plan->upper[d][o] = 0;
        plan->upper_weight[d][o] = 0.0f;
        continue;
      }
      if (!linear) {
        plan->lower[d][o] = plan->upper[d][o] = nearest_index(options->nearest_mode, s, in);
        plan->upper_weight[d][o] = 0.0f;
        continue;
      }
      /* ONNX clamps the source coordinate to the input, so borders repeat the edge value. */
      if (!(s > 0.0f)) s = 0.0f;
      if (s > (float)(in - 1)) s = (float)(in - 1);
      int64_t lower = (int64_t)s;
      plan->lower[d][o] = lower;
      plan->upper[d][o] = lower + 1 < in ? lower + 1 : in - 1;
      plan->upper_weight[d][o] = s - (float)lower;
    }
  }
  if (!cubic && rank >= 3 && !plan->resized[rank - 1]) {
    plan->lines = true;
    for (int32_t d = 0; d + 3 < rank; ++d) plan->lines = plan->lines && !plan->resized[d];
  }
  node->plan = plan;
  return EDGE_OK;
}

typedef struct {
  const resize_plan *plan;
  const edge_tensor *x, *y;
  int64_t row, rows;
  size_t size;
  /* LINEAR with an unresized innermost dimension (NHWC: the channels): the corners' weighted sum
   * by the vector kernels, in the scalar loop's order (first product, then each next added). */
  edge_f32_vbinary_ukernel mul_c, add;
  edge_f32_bilinear_line_ukernel bilinear_line; /* the line path's LINEAR lines; NULL: its scalar loop */
} resize_job;

#define RESIZE_CHUNK 256

/* y[0..n) = sum over corners of weights[c] * x[offsets[c] + 0..n), summed in corner order. */
static void weighted_rows(const resize_job *job, int32_t corners, const int64_t *offsets, const float *weights,
                          float *y, int64_t n) {
  const float *x = job->x->data;
  float product[RESIZE_CHUNK];
  for (int64_t j = 0; j < n; j += RESIZE_CHUNK) {
    const size_t m = (size_t)(n - j < RESIZE_CHUNK ? n - j : RESIZE_CHUNK);
    job->mul_c(m, x + offsets[0] + j, &weights[0], y + j);
    for (int32_t c = 1; c < corners; ++c) {
      job->mul_c(m, x + offsets[c] + j, &weights[c], product);
      job->add(m, y + j, product, y + j);
    }
  }
}

#define RESIZE_MAX_CORNERS (1 << (EDGE_MAX_RANK - 1))

static void resize_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const resize_job *job = arg;
  const resize_plan *plan = job->plan;
  int32_t inner = plan->rank - 1;
  const int64_t *y_shape = job->y->shape;
  int64_t position[EDGE_MAX_RANK];
  int64_t rest = begin;
  for (int32_t d = inner - 1; d >= 0; --d) {
    position[d] = rest % y_shape[d];
    rest /= y_shape[d];
  }
  bool inner_resized = plan->resized[inner];
  int64_t inner_stride = plan->x_strides[inner];
  for (int64_t r = begin; r < end; ++r) {
    /* The x offsets and weights of the row's corners over the outer dimensions. */
    int64_t offsets[RESIZE_MAX_CORNERS];
    float weights[RESIZE_MAX_CORNERS];
    int32_t corners = 1;
    offsets[0] = 0;
    weights[0] = 1.0f;
    for (int32_t d = 0; d < inner; ++d) {
      int64_t p = position[d], stride = plan->x_strides[d];
      if (!plan->resized[d]) {
        for (int32_t c = 0; c < corners; ++c) offsets[c] += p * stride;
        continue;
      }
      if (plan->cubic) {
        const int64_t *index = plan->cubic_index[d] + 4 * p;
        const float *w = plan->cubic_weight[d] + 4 * p;
        for (int32_t c = corners - 1; c >= 0; --c)
          for (int32_t k = 3; k >= 0; --k) {
            offsets[4 * c + k] = offsets[c] + index[k] * stride;
            weights[4 * c + k] = weights[c] * w[k];
          }
        corners *= 4;
        continue;
      }
      int64_t lower = plan->lower[d][p], upper = plan->upper[d][p];
      float w = plan->upper_weight[d][p];
      if (w == 0.0f) { /* NEAREST, or a coordinate landing exactly on a source sample */
        for (int32_t c = 0; c < corners; ++c) offsets[c] += lower * stride;
        continue;
      }
      for (int32_t c = 0; c < corners; ++c) {
        offsets[corners + c] = offsets[c] + upper * stride;
        weights[corners + c] = weights[c] * w;
        offsets[c] += lower * stride;
        weights[c] *= 1.0f - w;
      }
      corners *= 2;
    }
    int64_t row = job->row;
    bool interpolate = plan->linear || plan->cubic;
    if (interpolate && !inner_resized && job->mul_c && inner_stride == 1) {
      weighted_rows(job, corners, offsets, weights, (float *)job->y->data + r * row, row);
    } else if (interpolate) {
      const float *x = job->x->data;
      float *y = (float *)job->y->data + r * row;
      for (int64_t o = 0; o < row; ++o) {
        float sum = 0.0f;
        if (inner_resized && plan->cubic) {
          const int64_t *index = plan->cubic_index[inner] + 4 * o;
          const float *w = plan->cubic_weight[inner] + 4 * o;
          for (int32_t c = 0; c < corners; ++c)
            sum += weights[c] * (w[0] * x[offsets[c] + index[0] * inner_stride] +
                                 w[1] * x[offsets[c] + index[1] * inner_stride] +
                                 w[2] * x[offsets[c] + index[2] * inner_stride] +
                                 w[3] * x[offsets[c] + index[3] * inner_stride]);
        } else if (inner_resized) {
          int64_t lower = plan->lower[inner][o] * inner_stride, upper = plan->upper[inner][o] * inner_stride;
          float w = plan->upper_weight[inner][o];
          for (int32_t c = 0; c < corners; ++c)
            sum += weights[c] * ((1.0f - w) * x[offsets[c] + lower] + w * x[offsets[c] + upper]);
        } else {
          for (int32_t c = 0; c < corners; ++c) sum += weights[c] * x[offsets[c] + o * inner_stride];
        }
        y[o] = sum;
      }
    } else {
      const char *x = (const char *)job->x->data + (size_t)offsets[0] * job->size;
      char *y = (char *)job->y->data + (size_t)(r * row) * job->size;
      if (inner_resized)
        edge_nd_gather_elements(y, x, plan->lower[inner], row, job->size);
      else /* the innermost dimension is contiguous in x: the row is one block */
        memcpy(y, x, (size_t)row * job->size);
    }
    for (int32_t d = inner - 1; d >= 0; --d) {
      if (++position[d] < y_shape[d]) break;
      position[d] = 0;
    }
  }
}

/* Source coordinates of output coordinate o along dim d: lower, upper and upper's weight. */
static inline void source_pair(const resize_plan *plan, int32_t d, int64_t o, int64_t *lower, int64_t *upper,
                               float *weight) {
  if (!plan->resized[d]) {
    *lower = *upper = o;
    *weight = 0.0f;
    return;
  }
  *lower = plan->lower[d][o];
  *upper = plan->upper[d][o];
  *weight = plan->upper_weight[d][o];
}

/* The line path: output lines [begin, end) of [..., H, W, C] where only H and W are resized. A
 * LINEAR pixel is the weighted sum of its four corners' channel rows, with the weights and corner
 * order of resize_rows, so the scalar loop here gives resize_rows' bits; the vector line kernel
 * (where W is resized) sums the corners by multiply-adds instead, so it differs by roundings.
 * NEAREST copies each pixel's channel row, and a line whose source row is the previous line's
 * (every other line at 2x) copies that line whole. */
static void resize_lines(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const resize_job *job = arg;
  const resize_plan *plan = job->plan;
  const int32_t rank = plan->rank, h = rank - 3, w = rank - 2;
  const int64_t out_h = job->y->shape[h], out_w = job->y->shape[w], channels = job->y->shape[rank - 1];
  const int64_t in_h = job->x->shape[h], h_stride = plan->x_strides[h], w_stride = plan->x_strides[w];
  const int64_t line = out_w * channels;
  const size_t size = job->size;
  for (int64_t l = begin; l < end; ++l) {
    const int64_t oy = l % out_h, base = (l / out_h) * in_h * h_stride;
    int64_t y0, y1;
    float wy;
    source_pair(plan, h, oy, &y0, &y1, &wy);
    if (!plan->linear) {
      char *out = (char *)job->y->data + (size_t)(l * line) * size;
      const char *row = (const char *)job->x->data + (size_t)(base + y0 * h_stride) * size;
      if (l > begin && oy > 0 && plan->resized[h] && plan->lower[h][oy - 1] == y0) {
        memcpy(out, out - (size_t)line * size, (size_t)line * size);
      } else if (!plan->resized[w]) {
        memcpy(out, row, (size_t)line * size);
      } else {
        const int64_t *columns = plan->lower[w];
        const size_t pixel = (size_t)channels * size;
        for (int64_t ox = 0; ox < out_w; ++ox)
          memcpy(out + (size_t)ox * pixel, row + (size_t)(columns[ox] * w_stride) * size, pixel);
      }
      continue;
    }
    const float *x = (const float *)job->x->data + base;
    const float *row0 = x + y0 * h_stride, *row1 = x + y1 * h_stride;
    float *out = (float *)job->y->data + l * line;
    if (job->bilinear_line && plan->resized[w]) {
      job->bilinear_line((size_t)out_w, (size_t)channels, row0, row1, plan->lower[w], plan->upper[w],
                         plan->upper_weight[w], wy, (size_t)w_stride, out);
      continue;
    }
    for (int64_t ox = 0; ox < out_w; ++ox, out += channels) {
      int64_t x0, x1;
      float wx;
      source_pair(plan, w, ox, &x0, &x1, &wx);
      const float *corners[4] = {row0 + x0 * w_stride, row1 + x0 * w_stride, row0 + x1 * w_stride,
                                 row1 + x1 * w_stride};
      const float weights[4] = {(1.0f - wy) * (1.0f - wx), wy * (1.0f - wx), (1.0f - wy) * wx, wy * wx};
      for (int64_t c = 0; c < channels; ++c) {
        float sum = 0.0f;
        for (int32_t k = 0; k < 4; ++k)
          if ((!(k & 1) || wy != 0.0f) && (!(k & 2) || wx != 0.0f)) sum += weights[k] * corners[k][c];
        out[c] = sum;
      }
    }
  }
}

static edge_status resize_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  int64_t total = edge_num_elements(y->rank, y->shape);
  if (total == 0) return EDGE_OK;
  size_t size = edge_dtype_size(y->dtype);
  if (y->rank == 0) {
    memcpy(y->data, x->data, size);
    return EDGE_OK;
  }
  int64_t row = y->shape[y->rank - 1];
  const edge_vector_kernels *vector = &edge_kernels()->vector;
  const resize_plan *plan = node->plan;
  resize_job job = {plan, x, y, row, total / row, size, vector->binary_vc[EDGE_BINARY_MUL],
                    vector->binary_vv[EDGE_BINARY_ADD], vector->bilinear_line};
  if (plan->lines) {
    const int64_t line = y->shape[y->rank - 2] * row;
    edge_nd_parallel(ctx, total / line, 1 + 16384 / line, resize_lines, &job);
    return EDGE_OK;
  }
  edge_nd_parallel(ctx, job.rows, 64, resize_rows, &job);
  return EDGE_OK;
}

static void resize_release(edge_node *node) {
  free_resize_plan(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_resize = {resize_prepare, resize_eval, resize_release};

/* POOL_2D (MAX, AVERAGE) and REDUCE MEAN / MAX on int8 tensors.
 *
 *   MAX:     the largest x_q of the window's real taps (padding never wins); input and output
 *            params must be equal (the converter forces it), a fused RELU/RELU6/CLIP clamps.
 *   AVERAGE: sum of the counted taps' x_q (count_include_pad honoured: padding cells count and
 *            read zp_x, i.e. a real 0), then y = clamp(zp_y + requantize(sum - count * zp_x, m, shift))
 *            with M = s_x / (s_y * count): one (m, shift) per possible count, made at prepare. The
 *            padding cells' zp_x cancel, so the kernel sums the real taps and subtracts
 *            real_taps * zp_x: the same integer, and the float average of the dequantized input.
 *   REDUCE MEAN is the same average over the reduced axes (GlobalAveragePool lowers to it); REDUCE
 *   MAX the same max (equal params).
 *
 * Window geometry is pool.c's (ONNX output sizes, ceil_mode's overhang not counted). Work is split
 * over N*OH rows (pool) or output elements (reduce), each computed by one thread. */
#include <stdio.h>
#include <stdlib.h>

#include "../kernels/config.h"
#include "broadcast.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  bool average, count_include_pad;
  int64_t batch, in_h, in_w, channels, out_h, out_w;
  int64_t kernel[2], strides[2], dilations[2], pads[4];
  int32_t zp_x, zp_y, lo, hi;
  int32_t *multiplier, *shift; /* average: indexed by count, 0 .. kernel area */
} qpool_plan;

static void qpool_free(qpool_plan *s) {
  if (!s) return;
  free(s->multiplier);
  free(s->shift);
  free(s);
}

void edge_qpool_release(edge_node *node) {
  qpool_free(node->plan);
  node->plan = NULL;
  node->quantized = false;
}

static int64_t pooled_size(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                           int64_t dilation, bool ceil_mode) {
  int64_t reach = in + pad_begin + pad_end - (dilation * (kernel - 1) + 1);
  if (reach < 0) return -1;
  int64_t out = (ceil_mode ? (reach + stride - 1) / stride : reach / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

/* Params of x and y, the clamp, and for an average one multiplier per count 1 .. max_count
 * (count 0, a window on padding only, gives the zero point), or with only_max just the one for
 * max_count, at index 0. */
static edge_status prepare_params(edge_context *ctx, edge_node *node, const char *what, const edge_tensor *x,
                                  const edge_tensor *y, bool average, int64_t max_count, bool only_max,
                                  int32_t *zp_x, int32_t *zp_y,
                                  int32_t *lo, int32_t *hi, int32_t **multiplier, int32_t **shift) {
  edge_qparams xp, yp;
  edge_status status;
  if ((status = edge_q_tensor_params(ctx, what, x, false, &xp)) != EDGE_OK) return status;
  if ((status = edge_q_tensor_params(ctx, what, y, false, &yp)) != EDGE_OK) return status;
  if ((status = edge_q_activation_range(ctx, what, y, &yp, &node->activation, lo, hi)) != EDGE_OK) return status;
  *zp_x = xp.zero_point;
  *zp_y = yp.zero_point;
  if (!average) {
    if (!edge_q_same_params(x, y))
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s: a max over int8 needs equal input and output params; '%s' has (%g, %d), '%s' (%g, %d)", what,
                       edge_tensor_name(x), (double)xp.scale, xp.zero_point, edge_tensor_name(y), (double)yp.scale,
                       yp.zero_point);
    return EDGE_OK;
  }
  if (max_count > EDGE_Q_MAX_DEPTH * 128)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: averages %lld elements; an int32 sum holds at most %d", what,
                     (long long)max_count, EDGE_Q_MAX_DEPTH * 128);
  size_t entries = only_max ? 1 : (size_t)max_count + 1;
  *multiplier = malloc(entries * sizeof(int32_t));
  *shift = malloc(entries * sizeof(int32_t));
  if (!*multiplier || !*shift) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  (*multiplier)[0] = 0;
  (*shift)[0] = 62;
  for (int64_t count = only_max ? max_count : 1; count <= max_count; ++count) {
    if (count == 0) continue;
    size_t i = only_max ? 0 : (size_t)count;
    double real = (double)xp.scale / ((double)yp.scale * (double)count);
    if ((status = edge_q_multiplier(ctx, what, "average", real, &(*multiplier)[i], &(*shift)[i])) != EDGE_OK)
      return status;
  }
  return EDGE_OK;
}

edge_status edge_qpool_prepare(edge_context *ctx, edge_node *node) {
  edge_qpool_release(node);
  node->quantized = true;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  char what[160];
  snprintf(what, sizeof what, "POOL_2D '%s'", edge_tensor_name(y));
  if (x->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input '%s' has rank %d; expected NHWC (rank 4)", what,
                     edge_tensor_name(x), x->rank);
  const edge_pool2d_options *o = &node->options.pool2d;
  if (o->type != EDGE_POOL_MAX && o->type != EDGE_POOL_AVERAGE)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: pool type %d is neither MAX nor AVERAGE", what, (int)o->type);
  for (int32_t i = 0; i < 2; ++i)
    if (o->kernel[i] < 1 || o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: kernel, strides and dilations must all be >= 1", what);
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: pads must be >= 0", what);
  qpool_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  node->plan = s;
  s->average = o->type == EDGE_POOL_AVERAGE;
  s->count_include_pad = o->count_include_pad;
  s->batch = x->shape[0];
  s->in_h = x->shape[1];
  s->in_w = x->shape[2];
  s->channels = x->shape[3];
  for (int32_t i = 0; i < 2; ++i) {
    s->kernel[i] = o->kernel[i];
    s->strides[i] = o->strides[i];
    s->dilations[i] = o->dilations[i];
  }
  for (int32_t i = 0; i < 4; ++i) s->pads[i] = o->pads[i];
  s->out_h = pooled_size(s->in_h, s->pads[0], s->pads[2], s->kernel[0], s->strides[0], s->dilations[0], o->ceil_mode);
  s->out_w = pooled_size(s->in_w, s->pads[1], s->pads[3], s->kernel[1], s->strides[1], s->dilations[1], o->ceil_mode);
  if (s->out_h < 1 || s->out_w < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input %lldx%lld with this kernel, dilations and pads gives no output",
                     what, (long long)s->in_h, (long long)s->in_w);
  int64_t shape[4] = {s->batch, s->out_h, s->out_w, s->channels};
  edge_status status = edge_set_shape(ctx, y, 4, shape);
  if (status != EDGE_OK) return status;
  return prepare_params(ctx, node, what, x, y, s->average, s->kernel[0] * s->kernel[1], false, &s->zp_x, &s->zp_y, &s->lo,
                        &s->hi, &s->multiplier, &s->shift);
}

/* Window taps along one axis: on real input, and on the padded input (ceil_mode's overhang out). */
static void window_counts(int64_t start, int64_t kernel, int64_t dilation, int64_t in, int64_t pad_begin,
                          int64_t pad_end, int64_t *real, int64_t *padded) {
  *real = *padded = 0;
  for (int64_t k = 0; k < kernel; ++k) {
    int64_t i = start + k * dilation;
    *real += i >= 0 && i < in;
    *padded += i >= -pad_begin && i < in + pad_end;
  }
}

typedef struct {
  const qpool_plan *s;
  const int8_t *x;
  int8_t *y;
} qpool_job;

static void qpool_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qpool_job *job = arg;
  const qpool_plan *s = job->s;
  int64_t channels = s->channels;
  edge_s8_maxpool_ukernel maxpool = edge_kernels()->vector.s8_maxpool;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / s->out_h, oh = r % s->out_h, h0 = oh * s->strides[0] - s->pads[0];
    int64_t real_h, padded_h;
    window_counts(h0, s->kernel[0], s->dilations[0], s->in_h, s->pads[0], s->pads[2], &real_h, &padded_h);
    for (int64_t ow = 0; ow < s->out_w; ++ow) {
      int64_t w0 = ow * s->strides[1] - s->pads[1];
      int64_t real_w, padded_w;
      window_counts(w0, s->kernel[1], s->dilations[1], s->in_w, s->pads[1], s->pads[3], &real_w, &padded_w);
      int64_t count = s->count_include_pad ? padded_h * padded_w : real_h * real_w;
      int8_t *y = job->y + (r * s->out_w + ow) * channels;
      if (!s->average && maxpool && real_h > 0 && real_w > 0) {
        /* The real taps form a real_h x real_w rectangle from the first real tap on. */
        int64_t ih = h0, iw = w0;
        while (ih < 0) ih += s->dilations[0];
        while (iw < 0) iw += s->dilations[1];
        maxpool((size_t)real_h, (size_t)real_w, job->x + ((n * s->in_h + ih) * s->in_w + iw) * channels,
                (size_t)(s->dilations[0] * s->in_w * channels), (size_t)(s->dilations[1] * channels),
                (size_t)channels, y, (int8_t)s->lo, (int8_t)s->hi);
        continue;
      }
      for (int64_t c = 0; c < channels; ++c) {
        int32_t acc = s->average ? 0 : -129; /* -129: no real tap yet */
        for (int64_t kh = 0; kh < s->kernel[0]; ++kh) {
          int64_t ih = h0 + kh * s->dilations[0];
          if (ih < 0 || ih >= s->in_h) continue;
          for (int64_t kw = 0; kw < s->kernel[1]; ++kw) {
            int64_t iw = w0 + kw * s->dilations[1];
            if (iw < 0 || iw >= s->in_w) continue;
            int32_t v = job->x[((n * s->in_h + ih) * s->in_w + iw) * channels + c];
            if (s->average) acc += v;
            else acc = v > acc ? v : acc;
          }
        }
        if (s->average)
          y[c] = (int8_t)edge_q_requantize_clamp(acc - (int32_t)(real_h * real_w) * s->zp_x, s->multiplier[count], s->shift[count],
                                                 s->zp_y, s->lo, s->hi);
        else /* a window on padding only (possible with large pads) gives the zero point, a real 0 */
          y[c] = (int8_t)edge_q_clamp(acc == -129 ? s->zp_y : acc, s->lo, s->hi);
      }
    }
  }
}

edge_status edge_qpool_eval(edge_context *ctx, edge_node *node) {
  const qpool_plan *s = node->plan;
  qpool_job job = {s, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  int64_t work_per_row = s->out_w * s->channels * s->kernel[0] * s->kernel[1];
  edge_nd_parallel(ctx, s->batch * s->out_h, 1 + 32768 / (work_per_row + 1), qpool_rows, &job);
  return EDGE_OK;
}

/* ---- REDUCE MEAN / MAX ---- */

typedef struct {
  bool average;
  int32_t zp_x, zp_y, lo, hi;
  int32_t *multiplier, *shift;  /* [0]: the one for count */
  int64_t count;                /* reduced elements per output */
  int32_t kept_rank, reduced_rank;
  int64_t kept_shape[EDGE_MAX_RANK], kept_strides[EDGE_MAX_RANK];
  int64_t reduced_shape[EDGE_MAX_RANK], reduced_strides[EDGE_MAX_RANK];
  int64_t outputs;
  /* Reduced axes that form one block of adjacent dimensions make x an [outer, count, inner] array,
   * which the vector kernels reduce over contiguous inner runs (column_blocks > 0 then). */
  int64_t outer, inner, column_blocks;
} qreduce_plan;

/* Inner elements per work item of the column path (the int32 sums live on the stack). */
#define QREDUCE_COLUMNS 256

void edge_qreduce_release(edge_node *node) {
  qreduce_plan *s = node->plan;
  if (s) {
    free(s->multiplier);
    free(s->shift);
  }
  free(s);
  node->plan = NULL;
  node->quantized = false;
}

edge_status edge_qreduce_prepare(edge_context *ctx, edge_node *node) {
  edge_qreduce_release(node);
  node->quantized = true;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  const edge_reduce_options *o = &node->options.reduce;
  char what[160];
  snprintf(what, sizeof what, "REDUCE '%s'", edge_tensor_name(y));
  if (o->op != EDGE_REDUCE_MEAN && o->op != EDGE_REDUCE_MAX)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: int8 input '%s' is supported for MEAN and MAX only", what,
                     edge_tensor_name(x));
  if (o->num_axes < 0 || o->num_axes > x->rank)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %d axes for an input of rank %d", what, o->num_axes, x->rank);
  bool reduced[EDGE_MAX_RANK] = {false};
  for (int32_t i = 0; i < o->num_axes; ++i) {
    int32_t axis = o->axes[i];
    if (!edge_normalize_axis(&axis, x->rank) || reduced[axis])
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: axis %d is out of range or repeated for rank %d", what, o->axes[i],
                       x->rank);
    reduced[axis] = true;
  }
  if (o->num_axes == 0)
    for (int32_t d = 0; d < x->rank; ++d) reduced[d] = true;
  qreduce_plan *s = calloc(1, sizeof *s);
  if (!s) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", what);
  node->plan = s;
  s->average = o->op == EDGE_REDUCE_MEAN;
  int64_t strides[EDGE_MAX_RANK], shape[EDGE_MAX_RANK];
  int32_t out_rank = 0;
  edge_nd_contiguous_strides(x->rank, x->shape, strides);
  s->count = 1;
  s->outputs = 1;
  for (int32_t d = 0; d < x->rank; ++d) {
    if (reduced[d]) {
      s->reduced_shape[s->reduced_rank] = x->shape[d];
      s->reduced_strides[s->reduced_rank++] = strides[d];
      s->count *= x->shape[d];
      if (o->keepdims) shape[out_rank++] = 1;
    } else {
      s->kept_shape[s->kept_rank] = x->shape[d];
      s->kept_strides[s->kept_rank++] = strides[d];
      s->outputs *= x->shape[d];
      shape[out_rank++] = x->shape[d];
    }
  }
  edge_status status = edge_set_shape(ctx, y, out_rank, shape);
  if (status != EDGE_OK) return status;
  if (!s->average && s->count == 0)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: MAX over an empty set of elements", what);
  int32_t first = -1, last = -1;
  for (int32_t d = 0; d < x->rank; ++d)
    if (reduced[d]) {
      if (first < 0) first = d;
      last = d;
    }
  bool block = first >= 0 && s->count > 0;
  for (int32_t d = first; block && d <= last; ++d) block = reduced[d];
  if (block) {
    s->outer = edge_num_elements(first, x->shape);
    s->inner = edge_num_elements(x->rank - last - 1, x->shape + last + 1);
    const edge_vector_kernels *v = &edge_kernels()->vector;
    if (s->inner >= 8 && (s->average ? v->s8_raccumulate_sum != NULL : v->s8_maxpool != NULL))
      s->column_blocks = (s->inner + QREDUCE_COLUMNS - 1) / QREDUCE_COLUMNS;
  }
  return prepare_params(ctx, node, what, x, y, s->average, s->count, true, &s->zp_x, &s->zp_y, &s->lo, &s->hi,
                        &s->multiplier, &s->shift);
}

typedef struct {
  const qreduce_plan *s;
  const int8_t *x;
  int8_t *y;
} qreduce_job;

static void qreduce_outputs(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qreduce_job *job = arg;
  const qreduce_plan *s = job->s;
  for (int64_t out = begin; out < end; ++out) {
    int64_t base = 0, rest = out;
    for (int32_t d = s->kept_rank - 1; d >= 0; --d) {
      base += rest % s->kept_shape[d] * s->kept_strides[d];
      rest /= s->kept_shape[d];
    }
    int32_t acc = s->average ? 0 : -128;
    for (int64_t i = 0; i < s->count; ++i) {
      int64_t offset = base, r = i;
      for (int32_t d = s->reduced_rank - 1; d >= 0; --d) {
        offset += r % s->reduced_shape[d] * s->reduced_strides[d];
        r /= s->reduced_shape[d];
      }
      int32_t v = job->x[offset];
      if (s->average) acc += v;
      else acc = v > acc ? v : acc;
    }
    job->y[out] = (int8_t)(s->average ? edge_q_requantize_clamp(acc - (int32_t)s->count * s->zp_x,
                                                                s->multiplier[0], s->shift[0], s->zp_y,
                                                                s->lo, s->hi)
                                      : edge_q_clamp(acc, s->lo, s->hi));
  }
}

/* Work items are (outer, block of QREDUCE_COLUMNS inner elements); each reduces its columns over
 * the count rows with the vector kernels: the same integers as qreduce_outputs. */
static void qreduce_columns(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qreduce_job *job = arg;
  const qreduce_plan *s = job->s;
  const edge_vector_kernels *v = &edge_kernels()->vector;
  for (int64_t item = begin; item < end; ++item) {
    int64_t o = item / s->column_blocks, c0 = item % s->column_blocks * QREDUCE_COLUMNS;
    size_t width = (size_t)(s->inner - c0 < QREDUCE_COLUMNS ? s->inner - c0 : QREDUCE_COLUMNS);
    const int8_t *x = job->x + o * s->count * s->inner + c0;
    int8_t *y = job->y + o * s->inner + c0;
    if (!s->average) {
      v->s8_maxpool((size_t)s->count, 1, x, (size_t)s->inner, 0, width, y, (int8_t)s->lo, (int8_t)s->hi);
      continue;
    }
    int32_t acc[QREDUCE_COLUMNS] = {0};
    v->s8_raccumulate_sum((size_t)s->count, width, x, (size_t)s->inner, acc);
    int32_t offset = (int32_t)s->count * s->zp_x;
    for (size_t i = 0; i < width; ++i)
      y[i] = (int8_t)edge_q_requantize_clamp(acc[i] - offset, s->multiplier[0], s->shift[0], s->zp_y, s->lo, s->hi);
  }
}

edge_status edge_qreduce_eval(edge_context *ctx, edge_node *node) {
  const qreduce_plan *s = node->plan;
  qreduce_job job = {s, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  if (s->column_blocks > 0) {
    edge_nd_parallel(ctx, s->outer * s->column_blocks, 1 + 16384 / (s->count * QREDUCE_COLUMNS + 1), qreduce_columns,
                     &job);
    return EDGE_OK;
  }
  edge_nd_parallel(ctx, s->outputs, 1 + 16384 / (s->count + 1), qreduce_outputs, &job);
  return EDGE_OK;
}

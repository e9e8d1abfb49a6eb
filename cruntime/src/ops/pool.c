/* POOL_2D (MAX, AVERAGE), float32 scalar reference over NHWC.
 *
 * Output size follows ONNX: floor or, with ceil_mode, ceil of (in + pads - span) / stride + 1,
 * then a last window that would start inside the bottom/right padding is dropped. Each output
 * pixel walks its window's taps that fall on real input and reduces the contiguous channel vector
 * into the output row. AVERAGE divides by the real taps, or with count_include_pad by the taps
 * inside the padded input (never the extra cells ceil_mode adds), as onnxruntime does. Split over
 * N*OH rows; every value is produced by one thread in a fixed order. A fused activation, if the
 * model sets one, is applied to each finished row.
 *
 * Above EDGE_ISA_SCALAR each output pixel's taps on real input (always a rectangle of the
 * window) go to the vector family's pooling kernel (kernels/vector.h), vectorised over channels,
 * which folds them in the same order and so gives these loops' results bit for bit; the loops stay
 * the reference EDGE_ISA=scalar runs. */
#include <math.h>
#include <stdlib.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"
#include "qcommon.h"

typedef struct {
  bool average, count_include_pad;
  int64_t batch, in_h, in_w, channels, out_h, out_w;
  int64_t kernel[2], strides[2], dilations[2], pads[4];
} pool_plan;

static int64_t pooled_size(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                           int64_t dilation, bool ceil_mode) {
  int64_t reach = in + pad_begin + pad_end - (dilation * (kernel - 1) + 1);
  if (reach < 0) return -1;
  int64_t out = (ceil_mode ? (reach + stride - 1) / stride : reach / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

static void pool_release(edge_node *node);

static edge_status pool_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "POOL_2D";
  pool_release(node);
  edge_status status = edge_op_check_arity(ctx, node, op, 1, 1, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *y = edge_op_output(ctx, node, 0);
  if (edge_q_is_int8(x)) return edge_qpool_prepare(ctx, node);
  const char *name = edge_tensor_name(y);
  if (x->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s '%s': input is %s and output %s; only float32 is supported", op, name,
                     edge_dtype_name(x->dtype), edge_dtype_name(y->dtype));
  if (x->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' has rank %d; expected NHWC (rank 4)", op, name,
                     edge_tensor_name(x), x->rank);
  const edge_pool2d_options *o = &node->options.pool2d;
  if (o->type != EDGE_POOL_MAX && o->type != EDGE_POOL_AVERAGE)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pool type %d is neither MAX nor AVERAGE", op, name, (int)o->type);
  for (int32_t i = 0; i < 2; ++i)
    if (o->kernel[i] < 1 || o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL,
                       "%s '%s': kernel (%d, %d), strides (%d, %d) and dilations (%d, %d) must all be >= 1", op, name,
                       o->kernel[0], o->kernel[1], o->strides[0], o->strides[1], o->dilations[0], o->dilations[1]);
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pads (%d, %d, %d, %d) must be >= 0", op, name, o->pads[0],
                       o->pads[1], o->pads[2], o->pads[3]);
  pool_plan p = {0};
  p.average = o->type == EDGE_POOL_AVERAGE;
  p.count_include_pad = o->count_include_pad;
  p.batch = x->shape[0];
  p.in_h = x->shape[1];
  p.in_w = x->shape[2];
  p.channels = x->shape[3];
  for (int32_t i = 0; i < 2; ++i) {
    p.kernel[i] = o->kernel[i];
    p.strides[i] = o->strides[i];
    p.dilations[i] = o->dilations[i];
  }
  for (int32_t i = 0; i < 4; ++i) p.pads[i] = o->pads[i];
  p.out_h = pooled_size(p.in_h, p.pads[0], p.pads[2], p.kernel[0], p.strides[0], p.dilations[0], o->ceil_mode);
  p.out_w = pooled_size(p.in_w, p.pads[1], p.pads[3], p.kernel[1], p.strides[1], p.dilations[1], o->ceil_mode);
  if (p.out_h < 1 || p.out_w < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': input %lldx%lld with kernel (%d, %d), dilations (%d, %d), pads (%d, %d, %d, %d) gives "
                     "no output",
                     op, name, (long long)p.in_h, (long long)p.in_w, o->kernel[0], o->kernel[1], o->dilations[0],
                     o->dilations[1], o->pads[0], o->pads[1], o->pads[2], o->pads[3]);
  int64_t shape[4] = {p.batch, p.out_h, p.out_w, p.channels};
  if ((status = edge_set_shape(ctx, y, 4, shape)) != EDGE_OK) return status;
  pool_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
  *plan = p;
  node->plan = plan;
  return EDGE_OK;
}

typedef struct {
  const pool_plan *plan;
  const edge_activation *activation;
  const float *x;
  float *y;
} pool_job;

/* Taps of one window along one axis: how many fall on real input, and how many on the padded
 * input (real or padding, excluding ceil_mode's overhang). */
static void window_counts(int64_t start, int64_t kernel, int64_t dilation, int64_t in, int64_t pad_begin,
                          int64_t pad_end, int64_t *real, int64_t *padded) {
  *real = *padded = 0;
  for (int64_t k = 0; k < kernel; ++k) {
    int64_t i = start + k * dilation;
    *real += i >= 0 && i < in;
    *padded += i >= -pad_begin && i < in + pad_end;
  }
}

/* The taps k of a window starting at `start` whose position start + k * dilation is inside
 * [0, in): they are consecutive, [*first, *first + *count). */
static void real_taps(int64_t start, int64_t kernel, int64_t dilation, int64_t in, int64_t *first, int64_t *count) {
  int64_t k = 0;
  while (k < kernel && start + k * dilation < 0) ++k;
  *first = k;
  while (k < kernel && start + k * dilation < in) ++k;
  *count = k - *first;
}

static void pool_rows_vector(const pool_job *job, edge_f32_pool_ukernel kernel, int64_t begin, int64_t end) {
  const pool_plan *p = job->plan;
  int64_t channels = p->channels;
  size_t row_step = (size_t)(p->dilations[0] * p->in_w * channels), col_step = (size_t)(p->dilations[1] * channels);
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->out_h, oh = r % p->out_h, h0 = oh * p->strides[0] - p->pads[0];
    int64_t real_h, padded_h, first_h, taps_h;
    window_counts(h0, p->kernel[0], p->dilations[0], p->in_h, p->pads[0], p->pads[2], &real_h, &padded_h);
    real_taps(h0, p->kernel[0], p->dilations[0], p->in_h, &first_h, &taps_h);
    for (int64_t ow = 0; ow < p->out_w; ++ow) {
      int64_t w0 = ow * p->strides[1] - p->pads[1];
      int64_t real_w, padded_w, first_w, taps_w;
      window_counts(w0, p->kernel[1], p->dilations[1], p->in_w, p->pads[1], p->pads[3], &real_w, &padded_w);
      real_taps(w0, p->kernel[1], p->dilations[1], p->in_w, &first_w, &taps_w);
      int64_t count = p->count_include_pad ? padded_h * padded_w : real_h * real_w;
      int64_t ih = h0 + first_h * p->dilations[0], iw = w0 + first_w * p->dilations[1];
      /* With no real taps nothing is read; clamp the start so the pointer stays inside x. */
      if (taps_h == 0 || taps_w == 0) ih = iw = taps_h = taps_w = 0;
      const float *x = job->x + ((n * p->in_h + ih) * p->in_w + iw) * channels;
      float *y = job->y + (r * p->out_w + ow) * channels;
      kernel((size_t)taps_h, (size_t)taps_w, x, row_step, col_step, (size_t)channels, y,
             count > 0 ? (float)count : 1.0f);
    }
    edge_activation_apply(job->activation, job->y + r * p->out_w * channels, (size_t)(p->out_w * channels));
  }
}

static void pool_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const pool_job *job = arg;
  const pool_plan *p = job->plan;
  const edge_vector_kernels *vector = &edge_kernels()->vector;
  edge_f32_pool_ukernel kernel = p->average ? vector->avgpool : vector->maxpool;
  if (kernel) {
    pool_rows_vector(job, kernel, begin, end);
    return;
  }
  int64_t channels = p->channels;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->out_h, oh = r % p->out_h, h0 = oh * p->strides[0] - p->pads[0];
    int64_t real_h, padded_h;
    window_counts(h0, p->kernel[0], p->dilations[0], p->in_h, p->pads[0], p->pads[2], &real_h, &padded_h);
    for (int64_t ow = 0; ow < p->out_w; ++ow) {
      int64_t w0 = ow * p->strides[1] - p->pads[1];
      float *y = job->y + (r * p->out_w + ow) * channels;
      float init = p->average ? 0.0f : -INFINITY;
      for (int64_t c = 0; c < channels; ++c) y[c] = init;
      for (int64_t kh = 0; kh < p->kernel[0]; ++kh) {
        int64_t ih = h0 + kh * p->dilations[0];
        if (ih < 0 || ih >= p->in_h) continue;
        for (int64_t kw = 0; kw < p->kernel[1]; ++kw) {
          int64_t iw = w0 + kw * p->dilations[1];
          if (iw < 0 || iw >= p->in_w) continue;
          const float *x = job->x + ((n * p->in_h + ih) * p->in_w + iw) * channels;
          if (p->average) {
            for (int64_t c = 0; c < channels; ++c) y[c] += x[c];
          } else {
            /* Written so that a NaN input wins, as in NumPy's max. */
            for (int64_t c = 0; c < channels; ++c) y[c] = x[c] > y[c] || x[c] != x[c] ? x[c] : y[c];
          }
        }
      }
      if (p->average) {
        int64_t real_w, padded_w;
        window_counts(w0, p->kernel[1], p->dilations[1], p->in_w, p->pads[1], p->pads[3], &real_w, &padded_w);
        int64_t count = p->count_include_pad ? padded_h * padded_w : real_h * real_w;
        for (int64_t c = 0; c < channels; ++c) y[c] = count > 0 ? y[c] / (float)count : 0.0f;
      }
    }
    edge_activation_apply(job->activation, job->y + r * p->out_w * channels, (size_t)(p->out_w * channels));
  }
}

static edge_status pool_eval(edge_context *ctx, edge_node *node) {
  if (node->quantized) return edge_qpool_eval(ctx, node);
  const pool_plan *p = node->plan;
  pool_job job = {p, &node->activation, edge_op_input(ctx, node, 0)->data, edge_op_output(ctx, node, 0)->data};
  int64_t work_per_row = p->out_w * p->channels * p->kernel[0] * p->kernel[1];
  edge_nd_parallel(ctx, p->batch * p->out_h, 1 + 32768 / (work_per_row + 1), pool_rows, &job);
  return EDGE_OK;
}

static void pool_release(edge_node *node) {
  if (node->quantized) {
    edge_qpool_release(node);
    return;
  }
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_pool2d = {pool_prepare, pool_eval, pool_release};

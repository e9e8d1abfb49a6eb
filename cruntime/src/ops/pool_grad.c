/* POOL_2D_GRAD: (x, dy) -> dx, the gradient of POOL_2D (same Pool2DOptions) with respect to x.
 *
 * MAX sends each window's gradient to the FIRST maximal element of the window's real taps in
 * row-major scan order (padding never wins; a NaN counts as maximal, as in the forward);
 * AVERAGE spreads dy / count over the real taps, count as in the forward (count_include_pad,
 * ceil_mode's overhang never counted). Output geometry is the forward's (pool.c).
 *
 * Windows overlap, so the kernel scatters: a cell is (image, block of 16 channels); it zeroes its
 * part of dx and adds every output pixel's contribution in output order. Each dx value is owned
 * by one cell and summed in a fixed order, so the result does not depend on the thread count.
 * The loop is the reference. Above EDGE_ISA=scalar, MAX with at most POOL_GRAD_MAX_TAPS taps per
 * window runs kernels/vector.h maxpool_grad instead, one cell per image (all channels), visiting
 * the windows in the same order with the same comparisons: bit-identical to the loop. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/config.h"
#include "ops.h"
#include "training.h"

#define POOL_GRAD_CHANNEL_BLOCK 16
#define POOL_GRAD_MAX_TAPS 64

typedef struct {
  bool average, count_include_pad;
  int64_t batch, in_h, in_w, channels, out_h, out_w, channel_blocks;
  int64_t kernel[2], strides[2], dilations[2], pads[4];
} pool_grad_plan;

/* Same rule as POOL_2D (pool.c). */
static int64_t pooled_size(int64_t in, int64_t pad_begin, int64_t pad_end, int64_t kernel, int64_t stride,
                           int64_t dilation, bool ceil_mode) {
  int64_t reach = in + pad_begin + pad_end - (dilation * (kernel - 1) + 1);
  if (reach < 0) return -1;
  int64_t out = (ceil_mode ? (reach + stride - 1) / stride : reach / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

static edge_status pool_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "POOL_2D_GRAD";
  free(node->plan);
  node->plan = NULL;
  edge_status status = edge_training_check_arity(ctx, node, op, 2, 2, 1, 1, false);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *dy = edge_op_input(ctx, node, 1), *dx = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(dx);
  if ((status = edge_training_check_float(ctx, op, "input", x)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "output", dx)) != EDGE_OK)
    return status;
  if (x->rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' has rank %d; expected NHWC (rank 4)", op, name,
                     edge_tensor_name(x), x->rank);
  const edge_pool2d_options *o = &node->options.pool2d;
  if (o->type != EDGE_POOL_MAX && o->type != EDGE_POOL_AVERAGE)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pool type %d is neither MAX nor AVERAGE", op, name, (int)o->type);
  for (int32_t i = 0; i < 2; ++i)
    if (o->kernel[i] < 1 || o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': kernel, strides and dilations must all be >= 1", op, name);
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pads must be >= 0", op, name);
  pool_grad_plan p = {0};
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
  int64_t want[4] = {p.batch, p.out_h, p.out_w, p.channels};
  bool fits = dy->rank == 4 && p.out_h >= 1 && p.out_w >= 1;
  for (int32_t d = 0; fits && d < 4; ++d) fits = dy->shape[d] == want[d];
  if (!fits) {
    char ds[128], ws[128];
    edge_format_shape(ds, sizeof ds, dy->rank, dy->shape);
    edge_format_shape(ws, sizeof ws, 4, want);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': gradient '%s' is %s; the forward pool of input '%s' gives %s", op,
                     name, edge_tensor_name(dy), ds, edge_tensor_name(x), ws);
  }
  if ((status = edge_set_shape(ctx, dx, 4, x->shape)) != EDGE_OK) return status;
  p.channel_blocks = (p.channels + POOL_GRAD_CHANNEL_BLOCK - 1) / POOL_GRAD_CHANNEL_BLOCK;
  pool_grad_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
  *plan = p;
  node->plan = plan;
  return EDGE_OK;
}

typedef struct {
  const pool_grad_plan *plan;
  const float *x, *dy;
  float *dx;
} pool_grad_job;

/* Taps of a window along one axis counted as the forward counts them. */
static int64_t window_count(int64_t start, int64_t kernel, int64_t dilation, int64_t in, int64_t pad_begin,
                            int64_t pad_end, bool include_pad) {
  int64_t count = 0;
  for (int64_t k = 0; k < kernel; ++k) {
    int64_t i = start + k * dilation;
    count += include_pad ? i >= -pad_begin && i < in + pad_end : i >= 0 && i < in;
  }
  return count;
}

static void pool_grad_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const pool_grad_job *job = arg;
  const pool_grad_plan *p = job->plan;
  const int64_t C = p->channels;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t n = cell / p->channel_blocks, c0 = cell % p->channel_blocks * POOL_GRAD_CHANNEL_BLOCK;
    int64_t cc = C - c0 < POOL_GRAD_CHANNEL_BLOCK ? C - c0 : POOL_GRAD_CHANNEL_BLOCK;
    const float *x = job->x + n * p->in_h * p->in_w * C + c0;
    float *dx = job->dx + n * p->in_h * p->in_w * C + c0;
    const float *dy = job->dy + n * p->out_h * p->out_w * C + c0;
    for (int64_t i = 0; i < p->in_h * p->in_w; ++i) memset(dx + i * C, 0, (size_t)cc * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; ++oh) {
      int64_t h0 = oh * p->strides[0] - p->pads[0];
      for (int64_t ow = 0; ow < p->out_w; ++ow) {
        int64_t w0 = ow * p->strides[1] - p->pads[1];
        const float *g = dy + (oh * p->out_w + ow) * C;
        if (p->average) {
          int64_t count = window_count(h0, p->kernel[0], p->dilations[0], p->in_h, p->pads[0], p->pads[2],
                                       p->count_include_pad) *
                          window_count(w0, p->kernel[1], p->dilations[1], p->in_w, p->pads[1], p->pads[3],
                                       p->count_include_pad);
          if (count <= 0) continue;
          float share[POOL_GRAD_CHANNEL_BLOCK];
          for (int64_t c = 0; c < cc; ++c) share[c] = g[c] / (float)count;
          for (int64_t kh = 0; kh < p->kernel[0]; ++kh) {
            int64_t ih = h0 + kh * p->dilations[0];
            if (ih < 0 || ih >= p->in_h) continue;
            for (int64_t kw = 0; kw < p->kernel[1]; ++kw) {
              int64_t iw = w0 + kw * p->dilations[1];
              if (iw < 0 || iw >= p->in_w) continue;
              float *d = dx + (ih * p->in_w + iw) * C;
              for (int64_t c = 0; c < cc; ++c) d[c] += share[c];
            }
          }
        } else {
          float best[POOL_GRAD_CHANNEL_BLOCK];
          int64_t where[POOL_GRAD_CHANNEL_BLOCK];
          for (int64_t c = 0; c < cc; ++c) where[c] = -1, best[c] = 0.0f;
          for (int64_t kh = 0; kh < p->kernel[0]; ++kh) {
            int64_t ih = h0 + kh * p->dilations[0];
            if (ih < 0 || ih >= p->in_h) continue;
            for (int64_t kw = 0; kw < p->kernel[1]; ++kw) {
              int64_t iw = w0 + kw * p->dilations[1];
              if (iw < 0 || iw >= p->in_w) continue;
              int64_t at = (ih * p->in_w + iw) * C;
              for (int64_t c = 0; c < cc; ++c) {
                float v = x[at + c];
                bool wins = where[c] < 0 || v > best[c] || (v != v && best[c] == best[c]);
                if (wins) best[c] = v, where[c] = at;
              }
            }
          }
          for (int64_t c = 0; c < cc; ++c)
            if (where[c] >= 0) dx[where[c] + c] += g[c];
        }
      }
    }
  }
}

/* The vector path: cell = image; each window's real taps as pointer lists, in scan order. */
static void max_pool_grad_images(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const pool_grad_job *job = arg;
  const pool_grad_plan *p = job->plan;
  const edge_f32_maxpool_grad_ukernel kernel = edge_kernels()->vector.maxpool_grad;
  const int64_t C = p->channels;
  const float *x_taps[POOL_GRAD_MAX_TAPS];
  float *dx_taps[POOL_GRAD_MAX_TAPS];
  for (int64_t n = begin; n < end; ++n) {
    const float *x = job->x + n * p->in_h * p->in_w * C;
    float *dx = job->dx + n * p->in_h * p->in_w * C;
    const float *dy = job->dy + n * p->out_h * p->out_w * C;
    memset(dx, 0, (size_t)(p->in_h * p->in_w * C) * sizeof(float));
    for (int64_t oh = 0; oh < p->out_h; ++oh) {
      const int64_t h0 = oh * p->strides[0] - p->pads[0];
      for (int64_t ow = 0; ow < p->out_w; ++ow) {
        const int64_t w0 = ow * p->strides[1] - p->pads[1];
        size_t taps = 0;
        for (int64_t kh = 0; kh < p->kernel[0]; ++kh) {
          const int64_t ih = h0 + kh * p->dilations[0];
          if (ih < 0 || ih >= p->in_h) continue;
          for (int64_t kw = 0; kw < p->kernel[1]; ++kw) {
            const int64_t iw = w0 + kw * p->dilations[1];
            if (iw < 0 || iw >= p->in_w) continue;
            x_taps[taps] = x + (ih * p->in_w + iw) * C;
            dx_taps[taps++] = dx + (ih * p->in_w + iw) * C;
          }
        }
        if (taps) kernel(taps, x_taps, dx_taps, dy + (oh * p->out_w + ow) * C, (size_t)C);
      }
    }
  }
}

static edge_status pool_grad_eval(edge_context *ctx, edge_node *node) {
  const pool_grad_plan *p = node->plan;
  pool_grad_job job = {p, edge_op_input(ctx, node, 0)->data, edge_op_input(ctx, node, 1)->data,
                       edge_op_output(ctx, node, 0)->data};
  if (!p->average && edge_kernels()->vector.maxpool_grad && p->kernel[0] * p->kernel[1] <= POOL_GRAD_MAX_TAPS)
    edge_nd_parallel(ctx, p->batch, 1, max_pool_grad_images, &job);
  else
    edge_nd_parallel(ctx, p->batch * p->channel_blocks, 1, pool_grad_cells, &job);
  return EDGE_OK;
}

static void pool_grad_release(edge_node *node) {
  free(node->plan);
  node->plan = NULL;
}

const edge_op_registration edge_op_pool2d_grad = {pool_grad_prepare, pool_grad_eval, pool_grad_release};

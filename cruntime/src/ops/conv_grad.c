/* CONV_2D_BACKPROP_INPUT (dy, w) -> dx and CONV_2D_BACKPROP_FILTER (x, dy) -> dw, the gradients of
 * CONV_2D (NHWC, OHWI weights [O, KH, KW, I/groups]) under the forward's Conv2DOptions.
 *
 * The gradient's shape comes from its output tensor: dx's H and W (several input sizes give the
 * same forward output under a stride) and dw's KH and KW; the batch follows dy and the channel
 * counts follow the other operand. Prepare checks that the forward conv of that shape gives dy.
 *
 * Methods (picked at prepare; EDGE_CONV_GRAD=reference forces the scalar loops, which are also
 * what EDGE_ISA=scalar runs; EDGE_CONV_GRAD=gemm keeps every gradient on GEMM, =taps puts every
 * filter gradient on TAPS):
 *   REFERENCE  scalar loops: each dx / dw value is one float sum in a fixed order (taps, then
 *              channels; or batch, rows, columns). Cells: dx rows (N*H) / dw rows (O*KH).
 *   DEPTHWISE  one input channel per group: input gradient gathered per input pixel over taps,
 *              vectorised over channels against the weights transposed to [tap][O] in scratch;
 *              filter gradient per (tap, 64-channel block) summed over every output pixel in order.
 *   AS_CONV    input gradient at stride 1 (any dilation, pads within the kernel's span), not
 *              depthwise: dx is the forward convolution of dy with the weights turned around
 *              (W'[g Cg + c][kh][kw][o] = W[g Og + o][KH-1-kh][KW-1-kw][c], written into scratch
 *              each run) and pads dilation * (K - 1) - pad, run by a conv plan (kernels/
 *              conv_driver.h: igemm or Winograd, weights packed again each run).
 *   TAPS       filter gradient, not depthwise, where it beats GEMM (pick_method): one GEMM per tap and group,
 *              dw_tap^T[Cg][Og] = xT[Cg][K] x dy'[K][Og], over a chunk of whole images. The
 *              zero-padded input is split into stride phases (phase (py, px) holds the padded
 *              pixels (i sh + py, j sw + px): Hq x Wq frames, one per image, concatenated); xT
 *              holds each phase's frames transposed (a row of positions per channel), dy' the
 *              gradient at each frame position (zero where no output pixel is) packed once into
 *              GEMM panels. Tap (kh, kw) reads phase (kh dh % sh, kw dw % sw) shifted by
 *              (kh dh / sh) Wq + kw dw / sw positions, so the GEMM reads A in place: no im2col.
 *              Cells: (group, tap, MR rows of Cg), each one whole product; chunks are added in
 *              order, then the [group][tap][Cg][Og] sums are written out as OHWI.
 *   GEMM       otherwise, per group through the f32 GEMM (kernels/gemm.h):
 *              input:  cols[P][KH*KW*Cg] = dy_g[P][Og] x W_g[Og][KH*KW*Cg] over a chunk of whole
 *                      images (W packed into scratch each run), then col2im as a gather: every dx
 *                      value sums the column entries of the taps that reach it, in tap order.
 *              filter: dw_g[Og][KH*KW*Cg] = dy_g^T[Og][P] x patches[P][KH*KW*Cg]; dy_g^T is
 *                      transposed into scratch and the patches (im2col) are written straight into
 *                      the GEMM's packed-panel layout. P is cut into fixed chunks (sized from the
 *                      shape only) whose products are added in chunk order.
 * The GEMM splits its work over output cells and never splits a sum, the gathers own their
 * outputs, and chunks are fixed by the shape: every method is bit-identical for any thread count.
 * No allocation at run time: packed weights, columns, transposes and partial products live in the
 * scratch asked for at prepare. */
#include <stdlib.h>
#include <string.h>

#include "kernels/config.h"
#include "kernels/conv_driver.h"
#include "ops.h"
#include "training.h"

/* Target bytes for the GEMM paths' column / patch buffers per chunk: the L2 of the Zen 4 cores
 * (1 MiB), so the filter path's patches stay there while every row tile of dy^T streams them
 * (ResNet-8's stride-2 layers: up to 1.4x faster than with 4 MiB chunks). */
#define CONV_GRAD_CHUNK_BYTES ((size_t)1 << 20)
#define CONV_GRAD_DW_CHANNELS 64

typedef enum {
  CONV_GRAD_REFERENCE,
  CONV_GRAD_DEPTHWISE,
  CONV_GRAD_AS_CONV,
  CONV_GRAD_TAPS,
  CONV_GRAD_GEMM
} conv_grad_method;

/* TAPS: target bytes of one chunk's transposed frames plus packed gradient (L2-sized: every tap's
 * product streams both). */
#define CONV_GRAD_TAPS_CHUNK_BYTES ((size_t)512 << 10)

typedef struct {
  bool filter; /* BACKPROP_FILTER, else BACKPROP_INPUT */
  conv_grad_method method;
  int64_t batch, in_h, in_w, in_c, out_h, out_w, out_c, kernel_h, kernel_w;
  int64_t groups, cg, og, kkc; /* kkc = KH * KW * Cg, one weight row */
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, pad_bottom, pad_right;
  const edge_gemm_kernels *gemm;
  edge_conv_plan *forward;           /* AS_CONV: the plan over dy; scratch: turned weights, then its scratch */
  /* GEMM input: images per chunk; GEMM filter: pixels per chunk */
  int64_t chunk;
  size_t packed_bytes;               /* one group's packed B */
  size_t offset_a, offset_b, offset_c, offset_d; /* scratch layout */
  int64_t frame_h, frame_w, row_floats, m_tiles;  /* TAPS: a phase's frame, xT row length, tiles of Cg */
} conv_grad_plan;

static void conv_grad_release(edge_node *node) {
  conv_grad_plan *plan = node->plan;
  if (plan) edge_conv_plan_free(plan->forward);
  free(node->plan);
  node->plan = NULL;
}

static conv_grad_method pick_method(const conv_grad_plan *p) {
  const char *forced = getenv("EDGE_CONV_GRAD");
  if (forced && strcmp(forced, "reference") == 0) return CONV_GRAD_REFERENCE;
  if (edge_kernels()->isa == EDGE_ISA_SCALAR && !(forced && strcmp(forced, "fast") == 0)) return CONV_GRAD_REFERENCE;
  if (p->cg == 1 && p->groups > 1) return CONV_GRAD_DEPTHWISE;
  if (!p->filter && p->stride_h == 1 && p->stride_w == 1 && p->pad_top <= p->dilation_h * (p->kernel_h - 1) &&
      p->pad_bottom <= p->dilation_h * (p->kernel_h - 1) && p->pad_left <= p->dilation_w * (p->kernel_w - 1) &&
      p->pad_right <= p->dilation_w * (p->kernel_w - 1) && !(forced && strcmp(forced, "gemm") == 0))
    return CONV_GRAD_AS_CONV;
  if (p->filter && !(forced && strcmp(forced, "gemm") == 0)) {
    if (forced && strcmp(forced, "taps") == 0) return CONV_GRAD_TAPS;
    /* TAPS saves the im2col copy (KH*KW values per input value at stride 1) but multiplies the
     * padding positions too; measured against GEMM on ResNet-8's layers (avx2): well ahead for
     * 1x1 kernels, few input channels (the stem) and stride 1 with <= 15% padding positions
     * (32x32 frames), even at 16x16 (27%), behind at 8x8 (56%) and at stride 2 for 3x3. */
    const int64_t frame_h = (p->in_h + p->pad_top + p->pad_bottom + p->stride_h - 1) / p->stride_h;
    const int64_t frame_w = (p->in_w + p->pad_left + p->pad_right + p->stride_w - 1) / p->stride_w;
    const bool little_padding = (double)(frame_h * frame_w) <= 1.15 * (double)(p->out_h * p->out_w);
    if ((p->kernel_h == 1 && p->kernel_w == 1) || p->cg < 8 ||
        (p->stride_h == 1 && p->stride_w == 1 && little_padding))
      return CONV_GRAD_TAPS;
  }
  return CONV_GRAD_GEMM;
}

static edge_status conv_grad_prepare(edge_context *ctx, edge_node *node, bool filter) {
  const char *op = filter ? "CONV_2D_BACKPROP_FILTER" : "CONV_2D_BACKPROP_INPUT";
  conv_grad_release(node);
  edge_status status = edge_training_check_arity(ctx, node, op, 2, 2, 1, 1, false);
  if (status != EDGE_OK) return status;
  /* input: (dy, w) -> dx; filter: (x, dy) -> dw */
  edge_tensor *a = edge_op_input(ctx, node, 0), *b = edge_op_input(ctx, node, 1), *out = edge_op_output(ctx, node, 0);
  edge_tensor *dy = filter ? b : a, *other = filter ? a : b;
  const char *name = edge_tensor_name(out);
  if ((status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, filter ? "input" : "weights", other)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "output", out)) != EDGE_OK)
    return status;
  if (dy->rank != 4 || other->rank != 4 || out->declared_rank != 4)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': gradient '%s', %s '%s' and the output must all have rank 4", op,
                     name, edge_tensor_name(dy), filter ? "input" : "weights", edge_tensor_name(other));
  const edge_conv2d_options *o = &node->options.conv2d;
  for (int32_t i = 0; i < 2; ++i)
    if (o->strides[i] < 1 || o->dilations[i] < 1)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': strides and dilations must be >= 1", op, name);
  for (int32_t i = 0; i < 4; ++i)
    if (o->pads[i] < 0) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': pads must be >= 0", op, name);
  if (o->groups < 1) return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': groups %d must be >= 1", op, name, o->groups);

  conv_grad_plan p = {0};
  p.filter = filter;
  p.groups = o->groups;
  p.stride_h = o->strides[0];
  p.stride_w = o->strides[1];
  p.dilation_h = o->dilations[0];
  p.dilation_w = o->dilations[1];
  p.pad_top = o->pads[0];
  p.pad_left = o->pads[1];
  p.pad_bottom = o->pads[2];
  p.pad_right = o->pads[3];
  p.batch = dy->shape[0];
  p.out_h = dy->shape[1];
  p.out_w = dy->shape[2];
  p.out_c = dy->shape[3];
  int64_t result[4];
  if (filter) {
    p.in_h = other->shape[1];
    p.in_w = other->shape[2];
    p.in_c = other->shape[3];
    p.kernel_h = out->declared_shape[1];
    p.kernel_w = out->declared_shape[2];
    p.cg = p.in_c / p.groups;
    if (other->shape[0] != p.batch)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': input '%s' has batch %lld but gradient '%s' %lld", op, name,
                       edge_tensor_name(other), (long long)other->shape[0], edge_tensor_name(dy), (long long)p.batch);
    int64_t shape[4] = {p.out_c, p.kernel_h, p.kernel_w, p.cg};
    memcpy(result, shape, sizeof shape);
  } else {
    p.in_h = out->declared_shape[1];
    p.in_w = out->declared_shape[2];
    p.kernel_h = other->shape[1];
    p.kernel_w = other->shape[2];
    p.cg = other->shape[3];
    p.in_c = p.cg * p.groups;
    if (other->shape[0] != p.out_c)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': weights '%s' have %lld output channels but gradient '%s' %lld",
                       op, name, edge_tensor_name(other), (long long)other->shape[0], edge_tensor_name(dy), (long long)p.out_c);
    int64_t shape[4] = {p.batch, p.in_h, p.in_w, p.in_c};
    memcpy(result, shape, sizeof shape);
  }
  if (p.in_c % p.groups != 0 || p.out_c % p.groups != 0 || p.cg < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': groups %lld must divide the %lld input and %lld output channels", op, name,
                     (long long)p.groups, (long long)p.in_c, (long long)p.out_c);
  p.og = p.out_c / p.groups;
  p.kkc = p.kernel_h * p.kernel_w * p.cg;
  int64_t span_h = p.dilation_h * (p.kernel_h - 1) + 1, span_w = p.dilation_w * (p.kernel_w - 1) + 1;
  int64_t reach_h = p.in_h + o->pads[0] + o->pads[2] - span_h, reach_w = p.in_w + o->pads[1] + o->pads[3] - span_w;
  int64_t want_h = reach_h < 0 ? -1 : reach_h / p.stride_h + 1, want_w = reach_w < 0 ? -1 : reach_w / p.stride_w + 1;
  if (p.kernel_h < 1 || p.kernel_w < 1 || p.in_h < 1 || p.in_w < 1 || want_h != p.out_h || want_w != p.out_w) {
    char ds[128], rs[128];
    edge_format_shape(ds, sizeof ds, 4, dy->shape);
    edge_format_shape(rs, sizeof rs, 4, result);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "%s '%s': gradient '%s' is %s, but the forward conv of input %lldx%lld, kernel %lldx%lld, strides "
                     "(%lld, %lld), dilations (%lld, %lld), pads (%d, %d, %d, %d) gives %lldx%lld (result %s)",
                     op, name, edge_tensor_name(dy), ds, (long long)p.in_h, (long long)p.in_w, (long long)p.kernel_h,
                     (long long)p.kernel_w, (long long)p.stride_h, (long long)p.stride_w, (long long)p.dilation_h,
                     (long long)p.dilation_w, o->pads[0], o->pads[1], o->pads[2], o->pads[3], (long long)want_h,
                     (long long)want_w, rs);
  }
  if ((status = edge_set_shape(ctx, out, 4, result)) != EDGE_OK) return status;

  p.method = pick_method(&p);
  p.gemm = &edge_kernels()->gemm;
  size_t scratch = 0;
  node->plan_bytes = 0;
  if (p.method == CONV_GRAD_AS_CONV) {
    edge_conv_shape shape = {false, p.batch, p.out_h, p.out_w, p.out_c, p.in_h, p.in_w, p.in_c, p.kernel_h,
                             p.kernel_w, p.groups, 1, 1, p.dilation_h, p.dilation_w,
                             p.dilation_h * (p.kernel_h - 1) - p.pad_top, p.dilation_w * (p.kernel_w - 1) - p.pad_left, 0};
    p.forward = edge_conv_plan_create(edge_kernels(), &shape, NULL, NULL, NULL, edge_conv_winograd_mode_from_env());
    if (!p.forward) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
    p.offset_b = edge_training_align((size_t)(p.out_c * p.kkc) * sizeof(float)); /* after the turned weights */
    scratch = p.offset_b + edge_conv_plan_scratch_bytes(p.forward, ctx->num_threads);
    node->plan_bytes = edge_conv_plan_kept_bytes(p.forward);
  } else if (p.method == CONV_GRAD_TAPS) {
    p.frame_h = (p.in_h + o->pads[0] + o->pads[2] + p.stride_h - 1) / p.stride_h;
    p.frame_w = (p.in_w + o->pads[1] + o->pads[3] + p.stride_w - 1) / p.stride_w;
    const int64_t frame = p.frame_h * p.frame_w, og_padded = (p.og + p.gemm->nr - 1) / p.gemm->nr * p.gemm->nr;
    const int64_t phases = p.stride_h * p.stride_w;
    const size_t image_bytes = (size_t)(frame * (phases * p.in_c + p.groups * og_padded)) * sizeof(float);
    p.chunk = (int64_t)(CONV_GRAD_TAPS_CHUNK_BYTES / image_bytes);
    if (p.chunk < 1) p.chunk = 1;
    if (p.chunk > p.batch) p.chunk = p.batch;
    p.row_floats = (p.chunk * frame + 15) / 16 * 16;
    p.m_tiles = (p.cg + p.gemm->mr - 1) / p.gemm->mr;
    p.packed_bytes = edge_gemm_packed_bytes(p.gemm, (size_t)p.og, (size_t)(p.chunk * frame));
    const size_t sums = (size_t)(p.groups * p.kernel_h * p.kernel_w * p.cg * p.og) * sizeof(float);
    p.offset_a = 0;                                                                       /* xT */
    p.offset_b = edge_training_align((size_t)(phases * p.in_c * p.row_floats) * sizeof(float)); /* dy' */
    p.offset_c = p.offset_b + edge_training_align(p.packed_bytes * (size_t)p.groups);   /* sums */
    p.offset_d = p.offset_c + edge_training_align(sums);                                 /* a chunk's */
    scratch = p.offset_d + sums;
  } else if (p.method == CONV_GRAD_DEPTHWISE && !filter) {
    scratch = (size_t)(p.kernel_h * p.kernel_w * p.out_c) * sizeof(float); /* weights as [tap][O] */
  } else if (p.method == CONV_GRAD_GEMM && !filter) {
    int64_t image_cols = p.out_h * p.out_w * p.kkc;
    p.chunk = (int64_t)(CONV_GRAD_CHUNK_BYTES / sizeof(float)) / (image_cols ? image_cols : 1);
    if (p.chunk < 1) p.chunk = 1;
    if (p.chunk > p.batch) p.chunk = p.batch;
    p.packed_bytes = edge_gemm_packed_bytes(p.gemm, (size_t)p.kkc, (size_t)p.og);
    p.offset_a = 0;                                                     /* packed W, every group */
    p.offset_b = edge_training_align(p.packed_bytes * (size_t)p.groups); /* columns */
    scratch = p.offset_b + (size_t)(p.chunk * image_cols) * sizeof(float);
  } else if (p.method == CONV_GRAD_GEMM && filter) {
    int64_t pixels = p.batch * p.out_h * p.out_w;
    size_t row_bytes = (size_t)((p.kkc + p.gemm->nr) / p.gemm->nr * p.gemm->nr) * sizeof(float);
    p.chunk = (int64_t)(CONV_GRAD_CHUNK_BYTES / row_bytes);
    if (p.chunk < 64) p.chunk = 64;
    if (p.chunk > pixels) p.chunk = pixels;
    p.packed_bytes = edge_gemm_packed_bytes(p.gemm, (size_t)p.kkc, (size_t)p.chunk);
    p.offset_a = 0;                                                                      /* dy_g^T */
    p.offset_b = edge_training_align((size_t)(p.og * p.chunk) * sizeof(float));         /* patches */
    p.offset_c = p.offset_b + edge_training_align(p.packed_bytes);                       /* partial dw */
    scratch = p.offset_c + (size_t)(p.og * p.kkc) * sizeof(float);
  }
  conv_grad_plan *plan = malloc(sizeof *plan);
  if (!plan) {
    edge_conv_plan_free(p.forward);
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s '%s': out of memory", op, name);
  }
  *plan = p;
  node->plan = plan;
  node->scratch_bytes = scratch;
  return EDGE_OK;
}

typedef struct {
  const conv_grad_plan *plan;
  const float *x, *w, *dy;
  float *out;
  float *a, *b, *c; /* scratch pieces */
  int64_t group, first, count; /* GEMM paths: the group and the chunk being worked on */
  int64_t kdim;                /* TAPS: frame positions of the chunk that reach an output pixel */
} conv_grad_job;

/* ---- reference ---- */

/* The output position a tap of input coordinate i reaches along one axis, or -1. */
static inline int64_t tap_output(int64_t i, int64_t k, int64_t pad, int64_t dilation, int64_t stride, int64_t out) {
  int64_t t = i + pad - k * dilation;
  if (t < 0 || t % stride) return -1;
  t /= stride;
  return t < out ? t : -1;
}

static void reference_input_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->in_h, ih = r % p->in_h;
    for (int64_t iw = 0; iw < p->in_w; ++iw) {
      float *dx = job->out + ((n * p->in_h + ih) * p->in_w + iw) * p->in_c;
      for (int64_t c = 0; c < p->in_c; ++c) {
        int64_t g = c / p->cg, ci = c % p->cg;
        float acc = 0.0f;
        for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
          int64_t oh = tap_output(ih, kh, p->pad_top, p->dilation_h, p->stride_h, p->out_h);
          if (oh < 0) continue;
          for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
            int64_t ow = tap_output(iw, kw, p->pad_left, p->dilation_w, p->stride_w, p->out_w);
            if (ow < 0) continue;
            const float *dy = job->dy + ((n * p->out_h + oh) * p->out_w + ow) * p->out_c + g * p->og;
            const float *w = job->w + (g * p->og * p->kernel_h * p->kernel_w + kh * p->kernel_w + kw) * p->cg + ci;
            for (int64_t o = 0; o < p->og; ++o) acc += dy[o] * w[o * p->kkc];
          }
        }
        dx[c] = acc;
      }
    }
  }
}

static void reference_filter_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  for (int64_t r = begin; r < end; ++r) {
    int64_t o = r / p->kernel_h, kh = r % p->kernel_h, g = o / p->og;
    for (int64_t kw = 0; kw < p->kernel_w; ++kw)
      for (int64_t ci = 0; ci < p->cg; ++ci) {
        float acc = 0.0f;
        for (int64_t n = 0; n < p->batch; ++n)
          for (int64_t oh = 0; oh < p->out_h; ++oh) {
            int64_t ih = oh * p->stride_h - p->pad_top + kh * p->dilation_h;
            if (ih < 0 || ih >= p->in_h) continue;
            for (int64_t ow = 0; ow < p->out_w; ++ow) {
              int64_t iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
              if (iw < 0 || iw >= p->in_w) continue;
              acc += job->dy[((n * p->out_h + oh) * p->out_w + ow) * p->out_c + o] *
                     job->x[((n * p->in_h + ih) * p->in_w + iw) * p->in_c + g * p->cg + ci];
            }
          }
        job->out[((o * p->kernel_h + kh) * p->kernel_w + kw) * p->cg + ci] = acc;
      }
  }
}

/* ---- depthwise ---- */

static void depthwise_input_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t C = p->in_c, mult = p->og, O = p->out_c;
  for (int64_t r = begin; r < end; ++r) {
    int64_t n = r / p->in_h, ih = r % p->in_h;
    for (int64_t iw = 0; iw < p->in_w; ++iw) {
      float *dx = job->out + ((n * p->in_h + ih) * p->in_w + iw) * C;
      for (int64_t c = 0; c < C; ++c) dx[c] = 0.0f;
      for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
        int64_t oh = tap_output(ih, kh, p->pad_top, p->dilation_h, p->stride_h, p->out_h);
        if (oh < 0) continue;
        for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
          int64_t ow = tap_output(iw, kw, p->pad_left, p->dilation_w, p->stride_w, p->out_w);
          if (ow < 0) continue;
          const float *dy = job->dy + ((n * p->out_h + oh) * p->out_w + ow) * O;
          const float *w = job->a + (kh * p->kernel_w + kw) * O; /* [tap][O] */
          if (mult == 1) {
            for (int64_t c = 0; c < C; ++c) dx[c] += dy[c] * w[c];
          } else {
            for (int64_t c = 0; c < C; ++c) {
              float acc = 0.0f;
              for (int64_t m = 0; m < mult; ++m) acc += dy[c * mult + m] * w[c * mult + m];
              dx[c] += acc;
            }
          }
        }
      }
    }
  }
}

static void depthwise_filter_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t O = p->out_c, C = p->in_c, mult = p->og, taps = p->kernel_h * p->kernel_w;
  const int64_t blocks = (O + CONV_GRAD_DW_CHANNELS - 1) / CONV_GRAD_DW_CHANNELS;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t tap = cell / blocks, o0 = cell % blocks * CONV_GRAD_DW_CHANNELS;
    int64_t kh = tap / p->kernel_w, kw = tap % p->kernel_w;
    int64_t oc = O - o0 < CONV_GRAD_DW_CHANNELS ? O - o0 : CONV_GRAD_DW_CHANNELS;
    float acc[CONV_GRAD_DW_CHANNELS] = {0};
    for (int64_t n = 0; n < p->batch; ++n)
      for (int64_t oh = 0; oh < p->out_h; ++oh) {
        int64_t ih = oh * p->stride_h - p->pad_top + kh * p->dilation_h;
        if (ih < 0 || ih >= p->in_h) continue;
        for (int64_t ow = 0; ow < p->out_w; ++ow) {
          int64_t iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
          if (iw < 0 || iw >= p->in_w) continue;
          const float *dy = job->dy + ((n * p->out_h + oh) * p->out_w + ow) * O + o0;
          const float *x = job->x + ((n * p->in_h + ih) * p->in_w + iw) * C;
          if (mult == 1)
            for (int64_t k = 0; k < oc; ++k) acc[k] += dy[k] * x[o0 + k];
          else
            for (int64_t k = 0; k < oc; ++k) acc[k] += dy[k] * x[(o0 + k) / mult];
        }
      }
    for (int64_t k = 0; k < oc; ++k) job->out[(o0 + k) * taps + tap] = acc[k];
  }
}

/* ---- input gradient as a forward convolution ---- */

/* turned[g Cg + c][kh][kw][o] = w[g Og + o][KH-1-kh][KW-1-kw][c]: OHWI weights of the conv over dy. */
static void as_conv_input(edge_context *ctx, const conv_grad_plan *p, const conv_grad_job *job, void *scratch) {
  float *turned = scratch;
  const int64_t KH = p->kernel_h, KW = p->kernel_w, cg = p->cg, og = p->og;
  for (int64_t g = 0; g < p->groups; ++g)
    for (int64_t o = 0; o < og; ++o)
      for (int64_t kh = 0; kh < KH; ++kh)
        for (int64_t kw = 0; kw < KW; ++kw) {
          const float *from = job->w + (((g * og + o) * KH + kh) * KW + kw) * cg;
          float *to = turned + ((g * cg * KH + (KH - 1 - kh)) * KW + (KW - 1 - kw)) * og + o;
          for (int64_t c = 0; c < cg; ++c) to[c * KH * KW * og] = from[c];
        }
  edge_conv_plan_pack(p->forward, turned, NULL);
  edge_conv_plan_run(p->forward, ctx->pool, job->dy, job->out, NULL, (char *)scratch + p->offset_b);
}

/* ---- filter gradient per tap (TAPS) ---- */

/* Whether some tap reads stride phase `phase` of an axis: kernel positions k with k dil % stride. */
static bool phase_used(int64_t phase, int64_t kernel, int64_t dilation, int64_t stride) {
  for (int64_t k = 0; k < kernel; ++k)
    if (k * dilation % stride == phase) return true;
  return false;
}

/* xT[phase][c][n * frame + i * Wq + j] = x[first + n][i sh + py - pad_top][j sw + px - pad_left][c],
 * zero in the padding; phases no tap reads are skipped. Cells: (phase, image, frame row). */
static void taps_transpose_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const edge_x32_transpose_ukernel transpose = edge_kernels()->vector.transpose;
  const int64_t C = p->in_c, Wq = p->frame_w, W = p->in_w, L = p->row_floats, sw = p->stride_w;
  const int64_t rows_per_phase = job->count * p->frame_h;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t phase = r / rows_per_phase, py = phase / sw, px = phase % sw;
    const int64_t n = r % rows_per_phase / p->frame_h, i = r % p->frame_h;
    if (!phase_used(py, p->kernel_h, p->dilation_h, p->stride_h) ||
        !phase_used(px, p->kernel_w, p->dilation_w, p->stride_w))
      continue;
    float *row = job->a + phase * C * L + n * p->frame_h * Wq + i * Wq;
    const int64_t ih = i * p->stride_h + py - p->pad_top;
    /* columns j with 0 <= j sw + px - pad_left < W */
    const int64_t lead = p->pad_left - px, last = W - 1 + p->pad_left - px;
    int64_t j_lo = lead > 0 ? (lead + sw - 1) / sw : 0, j_hi = last < 0 ? 0 : last / sw + 1;
    if (j_hi > Wq) j_hi = Wq;
    if (ih < 0 || ih >= p->in_h || j_lo >= j_hi) {
      for (int64_t c = 0; c < C; ++c) memset(row + c * L, 0, (size_t)Wq * sizeof(float));
      continue;
    }
    for (int64_t c = 0; c < C; ++c) {
      memset(row + c * L, 0, (size_t)j_lo * sizeof(float));
      memset(row + c * L + j_hi, 0, (size_t)(Wq - j_hi) * sizeof(float));
    }
    const float *src = job->x + (((job->first + n) * p->in_h + ih) * W + j_lo * sw + px - p->pad_left) * C;
    if (transpose) {
      transpose((size_t)(j_hi - j_lo), (size_t)C, (const uint32_t *)src, (size_t)(sw * C), (uint32_t *)(row + j_lo),
                (size_t)L);
    } else {
      for (int64_t j = 0; j < j_hi - j_lo; ++j)
        for (int64_t c = 0; c < C; ++c) row[c * L + j_lo + j] = src[j * sw * C + c];
    }
  }
}

/* dy' packed per group into GEMM panels (gemm.h): for each frame position kk < kdim, the group's
 * Og gradients of the output pixel at that position, zero where there is none. Cells: (group,
 * block of 256 positions); block 0 also writes the panels' zero bias rows. */
#define TAPS_PACK_POSITIONS 256

static void taps_pack_dy_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t nr = p->gemm->nr, og = p->og, panels = (og + nr - 1) / nr, kdim = job->kdim;
  const int64_t frame = p->frame_h * p->frame_w, blocks = (kdim + TAPS_PACK_POSITIONS - 1) / TAPS_PACK_POSITIONS;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t g = cell / blocks, block = cell % blocks;
    float *packed = (float *)((char *)job->b + (size_t)g * p->packed_bytes);
    const int64_t panel_floats = (kdim + 1) * nr;
    if (block == 0)
      for (int64_t panel = 0; panel < panels; ++panel) memset(packed + panel * panel_floats, 0, (size_t)nr * sizeof(float));
    int64_t kk = block * TAPS_PACK_POSITIONS, kk_end = kk + TAPS_PACK_POSITIONS < kdim ? kk + TAPS_PACK_POSITIONS : kdim;
    int64_t n = kk / frame, fh = kk % frame / p->frame_w, fw = kk % p->frame_w;
    for (; kk < kk_end; ++kk) {
      const bool valid = fh < p->out_h && fw < p->out_w;
      const float *src = job->dy + (((job->first + n) * p->out_h + fh) * p->out_w + fw) * p->out_c + g * og;
      for (int64_t panel = 0; panel < panels; ++panel) {
        float *dst = packed + panel * panel_floats + nr + kk * nr;
        const int64_t cols = og - panel * nr < nr ? og - panel * nr : nr;
        if (valid) {
          memcpy(dst, src + panel * nr, (size_t)cols * sizeof(float));
          if (cols < nr) memset(dst + cols, 0, (size_t)(nr - cols) * sizeof(float));
        } else {
          memset(dst, 0, (size_t)nr * sizeof(float));
        }
      }
      if (++fw == p->frame_w) {
        fw = 0;
        if (++fh == p->frame_h) fh = 0, ++n;
      }
    }
  }
}

/* Cells: (group, tap, tile of MR rows of Cg), each one single-threaded GEMM over the chunk. */
static void taps_gemm_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t taps = p->kernel_h * p->kernel_w, mr = p->gemm->mr;
  for (int64_t cell = begin; cell < end; ++cell) {
    const int64_t tile = cell % p->m_tiles, tap = cell / p->m_tiles % taps, g = cell / (p->m_tiles * taps);
    const int64_t kh = tap / p->kernel_w * p->dilation_h, kw = tap % p->kernel_w * p->dilation_w, m0 = tile * mr;
    const int64_t rows = p->cg - m0 < mr ? p->cg - m0 : mr;
    const int64_t phase = kh % p->stride_h * p->stride_w + kw % p->stride_w;
    const int64_t shift = kh / p->stride_h * p->frame_w + kw / p->stride_w;
    edge_gemm_compute(p->gemm, NULL, (size_t)rows, (size_t)p->og, (size_t)job->kdim,
                      job->a + (phase * p->in_c + g * p->cg + m0) * p->row_floats + shift, (size_t)p->row_floats,
                      (const char *)job->b + (size_t)g * p->packed_bytes,
                      job->c + ((g * taps + tap) * p->cg + m0) * p->og, (size_t)p->og, NULL);
  }
}

static void taps_filter(edge_context *ctx, const conv_grad_plan *p, conv_grad_job *job, void *scratch) {
  const int64_t taps = p->kernel_h * p->kernel_w, frame = p->frame_h * p->frame_w;
  const int64_t sums = p->groups * taps * p->cg * p->og;
  float *total = (float *)((char *)scratch + p->offset_c), *part = (float *)((char *)scratch + p->offset_d);
  job->a = (float *)((char *)scratch + p->offset_a);
  job->b = (float *)((char *)scratch + p->offset_b);
  if (p->batch == 0) memset(total, 0, (size_t)sums * sizeof(float));
  for (int64_t first = 0; first < p->batch; first += p->chunk) {
    const int64_t images = p->batch - first < p->chunk ? p->batch - first : p->chunk;
    job->first = first;
    job->count = images;
    job->kdim = (images - 1) * frame + (p->out_h - 1) * p->frame_w + p->out_w;
    edge_nd_parallel(ctx, p->stride_h * p->stride_w * images * p->frame_h, 1 + 8192 / (p->frame_w * p->in_c + 1),
                     taps_transpose_rows, job);
    const int64_t blocks = (job->kdim + TAPS_PACK_POSITIONS - 1) / TAPS_PACK_POSITIONS;
    edge_nd_parallel(ctx, p->groups * blocks, 1 + 16384 / (TAPS_PACK_POSITIONS * p->og + 1), taps_pack_dy_cells, job);
    job->c = first == 0 ? total : part;
    edge_nd_parallel(ctx, p->groups * taps * p->m_tiles, 1 + 65536 / (job->kdim * p->og * p->gemm->mr + 1),
                     taps_gemm_cells, job);
    if (first != 0)
      for (int64_t i = 0; i < sums; ++i) total[i] += part[i];
  }
  for (int64_t g = 0; g < p->groups; ++g)
    for (int64_t tap = 0; tap < taps; ++tap)
      for (int64_t c = 0; c < p->cg; ++c) {
        const float *from = total + ((g * taps + tap) * p->cg + c) * p->og;
        for (int64_t o = 0; o < p->og; ++o) job->out[((g * p->og + o) * taps + tap) * p->cg + c] = from[o];
      }
}

/* ---- GEMM: input gradient ---- */

/* cols (chunk of images, one group) -> dx: every dx value of the group gathers its taps' columns. */
static void col2im_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t cg = p->cg;
  for (int64_t r = begin; r < end; ++r) {
    int64_t local = r / p->in_h, ih = r % p->in_h, n = job->first + local;
    for (int64_t iw = 0; iw < p->in_w; ++iw) {
      float *dx = job->out + ((n * p->in_h + ih) * p->in_w + iw) * p->in_c + job->group * cg;
      for (int64_t c = 0; c < cg; ++c) dx[c] = 0.0f;
      for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
        int64_t oh = tap_output(ih, kh, p->pad_top, p->dilation_h, p->stride_h, p->out_h);
        if (oh < 0) continue;
        for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
          int64_t ow = tap_output(iw, kw, p->pad_left, p->dilation_w, p->stride_w, p->out_w);
          if (ow < 0) continue;
          const float *col = job->b + ((local * p->out_h + oh) * p->out_w + ow) * p->kkc + (kh * p->kernel_w + kw) * cg;
          for (int64_t c = 0; c < cg; ++c) dx[c] += col[c];
        }
      }
    }
  }
}

static void gemm_input(edge_context *ctx, const conv_grad_plan *p, conv_grad_job *job, void *scratch) {
  const edge_gemm_kernels *k = p->gemm;
  char *packed = (char *)scratch + p->offset_a;
  job->b = (float *)((char *)scratch + p->offset_b);
  for (int64_t g = 0; g < p->groups; ++g) /* B[o][j] = W[g * og + o][j] */
    edge_gemm_pack_weights_kn(k, (size_t)p->kkc, (size_t)p->og, job->w + g * p->og * p->kkc, (size_t)p->kkc, NULL,
                              packed + (size_t)g * p->packed_bytes);
  const int64_t image_pixels = p->out_h * p->out_w;
  for (int64_t first = 0; first < p->batch; first += p->chunk) {
    int64_t images = p->batch - first < p->chunk ? p->batch - first : p->chunk;
    job->first = first;
    job->count = images;
    for (int64_t g = 0; g < p->groups; ++g) {
      job->group = g;
      edge_gemm_compute(k, ctx->pool, (size_t)(images * image_pixels), (size_t)p->kkc, (size_t)p->og,
                        job->dy + first * image_pixels * p->out_c + g * p->og, (size_t)p->out_c,
                        packed + (size_t)g * p->packed_bytes, job->b, (size_t)p->kkc, NULL);
      edge_nd_parallel(ctx, images * p->in_h, 1 + 16384 / (p->in_w * p->kkc + 1), col2im_rows, job);
    }
  }
}

/* ---- GEMM: filter gradient ---- */

/* A = dy_g^T for the chunk: a[o][q] = dy[first + q][g * og + o]. Cells: 256-pixel blocks. */
static void transpose_dy_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  for (int64_t cell = begin; cell < end; ++cell) {
    int64_t q0 = cell * 256, q1 = q0 + 256 < job->count ? q0 + 256 : job->count;
    for (int64_t q = q0; q < q1; ++q) {
      const float *dy = job->dy + (job->first + q) * p->out_c + job->group * p->og;
      for (int64_t o = 0; o < p->og; ++o) job->a[o * job->count + q] = dy[o];
    }
  }
}

/* The patches of the chunk straight into packed panels (layout in kernels/gemm.h): panel j0 holds
 * NR zeros (the bias) then, for each pixel q, the NR entries patch[q][j0 .. j0 + NR). Cells:
 * blocks of PATCH_PIXELS pixels. A pixel's patch is tap-major, Cg contiguous input channels per
 * tap, so each tap is one run of copies (or zeros in the padding) whose destination walks the
 * panels by counting: no division per element. Pure data movement: any split gives the same bytes. */
#define PATCH_PIXELS 64

static void pack_patches_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_grad_job *job = arg;
  const conv_grad_plan *p = job->plan;
  const int64_t nr = p->gemm->nr, cg = p->cg, panels = (p->kkc + nr - 1) / nr;
  const int64_t panel_floats = (job->count + 1) * nr, tail = panels * nr - p->kkc;
  if (begin == 0)
    for (int64_t panel = 0; panel < panels; ++panel) memset(job->b + panel * panel_floats, 0, (size_t)nr * sizeof(float));
  int64_t q = begin * PATCH_PIXELS, q_end = end * PATCH_PIXELS < job->count ? end * PATCH_PIXELS : job->count;
  int64_t pixel = job->first + q, ow = pixel % p->out_w, oh = pixel / p->out_w % p->out_h;
  int64_t n = pixel / (p->out_w * p->out_h);
  for (; q < q_end; ++q) {
    const float *image = job->x + n * p->in_h * p->in_w * p->in_c + job->group * cg;
    float *panel_row = job->b + nr + q * nr; /* panel 0, this pixel */
    int64_t offset = 0;
    for (int64_t kh = 0; kh < p->kernel_h; ++kh) {
      const int64_t ih = oh * p->stride_h - p->pad_top + kh * p->dilation_h;
      for (int64_t kw = 0; kw < p->kernel_w; ++kw) {
        const int64_t iw = ow * p->stride_w - p->pad_left + kw * p->dilation_w;
        const bool inside = ih >= 0 && ih < p->in_h && iw >= 0 && iw < p->in_w;
        const float *src = inside ? image + (ih * p->in_w + iw) * p->in_c : NULL;
        for (int64_t c = 0; c < cg;) {
          int64_t run = nr - offset < cg - c ? nr - offset : cg - c;
          if (src) memcpy(panel_row + offset, src + c, (size_t)run * sizeof(float));
          else memset(panel_row + offset, 0, (size_t)run * sizeof(float));
          c += run;
          offset += run;
          if (offset == nr) offset = 0, panel_row += panel_floats;
        }
      }
    }
    if (tail) memset(panel_row + offset, 0, (size_t)tail * sizeof(float));
    if (++ow == p->out_w) {
      ow = 0;
      if (++oh == p->out_h) oh = 0, ++n;
    }
  }
}

static void gemm_filter(edge_context *ctx, const conv_grad_plan *p, conv_grad_job *job, void *scratch) {
  const edge_gemm_kernels *k = p->gemm;
  job->a = (float *)((char *)scratch + p->offset_a);
  job->b = (float *)((char *)scratch + p->offset_b);
  job->c = (float *)((char *)scratch + p->offset_c);
  const int64_t pixels = p->batch * p->out_h * p->out_w;
  for (int64_t g = 0; g < p->groups; ++g) {
    float *dw = job->out + g * p->og * p->kkc;
    job->group = g;
    for (int64_t first = 0; first < pixels; first += p->chunk) {
      job->first = first;
      job->count = pixels - first < p->chunk ? pixels - first : p->chunk;
      edge_nd_parallel(ctx, (job->count + 255) / 256, 1 + 4096 / (p->og + 1), transpose_dy_cells, job);
      /* the packed size for this chunk's K; the last chunk may be shorter than p->chunk */
      edge_nd_parallel(ctx, (job->count + PATCH_PIXELS - 1) / PATCH_PIXELS, 1 + 16384 / (PATCH_PIXELS * p->kkc + 1),
                       pack_patches_cells, job);
      float *c = first == 0 ? dw : job->c;
      edge_gemm_compute(k, ctx->pool, (size_t)p->og, (size_t)p->kkc, (size_t)job->count, job->a, (size_t)job->count,
                        job->b, c, (size_t)p->kkc, NULL);
      if (first != 0)
        for (int64_t i = 0; i < p->og * p->kkc; ++i) dw[i] += job->c[i];
    }
  }
}

static edge_status conv_grad_eval(edge_context *ctx, edge_node *node) {
  const conv_grad_plan *p = node->plan;
  conv_grad_job job = {0};
  job.plan = p;
  job.out = edge_op_output(ctx, node, 0)->data;
  if (p->filter) {
    job.x = edge_op_input(ctx, node, 0)->data;
    job.dy = edge_op_input(ctx, node, 1)->data;
  } else {
    job.dy = edge_op_input(ctx, node, 0)->data;
    job.w = edge_op_input(ctx, node, 1)->data;
  }
  switch (p->method) {
    case CONV_GRAD_REFERENCE:
      if (p->filter)
        edge_nd_parallel(ctx, p->out_c * p->kernel_h, 1, reference_filter_rows, &job);
      else
        edge_nd_parallel(ctx, p->batch * p->in_h, 1 + 8192 / (p->in_w * p->in_c * p->kkc + 1), reference_input_rows,
                         &job);
      break;
    case CONV_GRAD_DEPTHWISE:
      if (p->filter) {
        int64_t blocks = (p->out_c + CONV_GRAD_DW_CHANNELS - 1) / CONV_GRAD_DW_CHANNELS;
        edge_nd_parallel(ctx, p->kernel_h * p->kernel_w * blocks, 1, depthwise_filter_cells, &job);
      } else {
        float *wt = node->scratch; /* [tap][O] */
        int64_t taps = p->kernel_h * p->kernel_w;
        for (int64_t o = 0; o < p->out_c; ++o)
          for (int64_t t = 0; t < taps; ++t) wt[t * p->out_c + o] = job.w[o * taps + t];
        job.a = wt;
        edge_nd_parallel(ctx, p->batch * p->in_h, 1 + 8192 / (p->in_w * p->out_c * taps + 1), depthwise_input_rows,
                         &job);
      }
      break;
    case CONV_GRAD_AS_CONV: as_conv_input(ctx, p, &job, node->scratch); break;
    case CONV_GRAD_TAPS: taps_filter(ctx, p, &job, node->scratch); break;
    case CONV_GRAD_GEMM:
      if (p->filter) gemm_filter(ctx, p, &job, node->scratch);
      else gemm_input(ctx, p, &job, node->scratch);
      break;
  }
  return EDGE_OK;
}

static edge_status backprop_input_prepare(edge_context *ctx, edge_node *node) {
  return conv_grad_prepare(ctx, node, false);
}
static edge_status backprop_filter_prepare(edge_context *ctx, edge_node *node) {
  return conv_grad_prepare(ctx, node, true);
}

const edge_op_registration edge_op_conv2d_backprop_input = {backprop_input_prepare, conv_grad_eval, conv_grad_release};
const edge_op_registration edge_op_conv2d_backprop_filter = {backprop_filter_prepare, conv_grad_eval,
                                                             conv_grad_release};

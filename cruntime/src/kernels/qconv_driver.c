/* int8 convolution plans (qgemm.h): method choice, weight packing with the zero-point fold,
 * indirection buffers and the threaded drivers, mirroring conv_driver.c for float.
 *
 * Padding taps point at `zero`, a buffer filled with the input zero point, so they add
 * (zp_x - zp_x) * w = 0 like the reference's padding. Cells are fixed and each output is one kernel
 * call, so the bytes do not depend on the thread count. */
#include <stdlib.h>
#include <string.h>

#include "qgemm.h"

#define QCONV_MIN_PARALLEL_MACS (1 << 18)
#define QIGEMM_BLOCK_BYTES (256 * 1024)
/* Below this many input channels per tap (one group) the IGEMM runs as im2col + GEMM. */
#define QCONV_IM2COL_MAX_CIN 8
/* Patch bytes one im2col cell copies and then multiplies while they are still in L1. */
#define QCONV_IM2COL_CELL_BYTES (16 * 1024)

struct edge_qs8_conv_plan {
  size_t kept_bytes;
  edge_conv_method method;
  edge_conv_shape s;
  const edge_qs8_kernels *k;
  int64_t group_in_c, group_out_c, taps;
  bool dynamic;
  edge_qs8_requant_params rq;
  edge_qs8_dq_params dq;
  const edge_activation *after; /* &act when it is not a clamp (applied after the kernels) */
  edge_activation act;          /* dynamic mode: the fused activation as given */
  uint8_t *packed;
  size_t packed_stride; /* bytes between groups */
  int8_t *zero;
  const int8_t **indirection;
  size_t indirection_count;
  const int8_t *indirection_base;
  int64_t multiplier; /* DWCONV channel multiplier */
  edge_qs8_dwconv_ukernel dwconv;       /* DWCONV: the table's 3x3s1 kernel where it applies */
  edge_qs8_dwconv_dq_ukernel dwconv_dq;
  size_t m_tiles;     /* IGEMM row tiles per image */
  /* IGEMM over few input channels (one group, < QCONV_IM2COL_MAX_CIN): each tap's k group would be
   * mostly padding, so the patches are copied into scratch rows of kh * kw * in_c bytes (padding =
   * zp_x) and the plain GEMM kernels run over them with the weights packed as one tap. */
  bool im2col;
  size_t im2col_stride; /* bytes between patch rows in scratch */
  size_t im2col_block;  /* output pixels per cell (a multiple of MR) */
};

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static void *plan_alloc(edge_qs8_conv_plan *p, size_t bytes) {
  bytes = round_up(bytes ? bytes : 1, EDGE_ALIGNMENT);
  void *memory = aligned_alloc(EDGE_ALIGNMENT, bytes);
  if (memory) p->kept_bytes += bytes;
  return memory;
}

static edge_conv_method choose_method(const edge_conv_shape *s, int64_t group_in_c) {
  if (s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
      s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w)
    return EDGE_CONV_METHOD_GEMM;
  if (group_in_c == 1 && s->groups == s->in_c) return EDGE_CONV_METHOD_DWCONV;
  return EDGE_CONV_METHOD_IGEMM;
}

/* Weights, per-channel epilogue words and bias slices for group grp of the GEMM/IGEMM methods. */
static edge_status pack_groups(edge_qs8_conv_plan *p, const int8_t *weights, const int32_t *bias, int32_t zp,
                               const void *first, const void *second, size_t ks, size_t kc) {
  const size_t n = (size_t)p->group_out_c;
  p->packed_stride = edge_qs8_gemm_packed_bytes(p->k, n, ks, kc);
  p->packed = plan_alloc(p, p->packed_stride * (size_t)p->s.groups);
  if (!p->packed) return edge_set_last_error(EDGE_OUT_OF_MEMORY, "qs8 conv: out of memory for packed weights");
  for (int64_t grp = 0; grp < p->s.groups; ++grp) {
    const int8_t *w = weights + (size_t)grp * n * ks * kc;
    uint8_t *out = p->packed + (size_t)grp * p->packed_stride;
    const size_t c0 = (size_t)grp * n;
    const edge_status status =
        p->dynamic ? edge_qs8_gemm_pack_dynamic(p->k, n, ks, kc, w, ks * kc, 1, (const float *)first + c0,
                                                second ? (const float *)second + c0 : NULL, out)
                   : edge_qs8_gemm_pack(p->k, n, ks, kc, w, ks * kc, 1, bias ? bias + c0 : NULL, zp,
                                        (const int32_t *)first + c0, (const int32_t *)second + c0, out);
    if (status != EDGE_OK) return status;
  }
  return EDGE_OK;
}

static edge_status create(const edge_qs8_kernels *k, const edge_conv_shape *shape, const int8_t *weights,
                          const int32_t *bias, int32_t zp, const void *first, const void *second, bool dynamic,
                          edge_qs8_conv_plan **out) {
  *out = NULL;
  if (shape->transposed || shape->groups < 1 || shape->in_c % shape->groups || shape->out_c % shape->groups)
    return edge_set_last_error(EDGE_UNSUPPORTED, "qs8 conv: transposed or unevenly grouped convolution");
  edge_qs8_conv_plan *p = calloc(1, sizeof *p);
  if (!p) return edge_set_last_error(EDGE_OUT_OF_MEMORY, "qs8 conv: out of memory for the plan");
  p->s = *shape;
  p->k = k;
  p->dynamic = dynamic;
  p->group_in_c = shape->in_c / shape->groups;
  p->group_out_c = shape->out_c / shape->groups;
  p->taps = shape->kernel_h * shape->kernel_w;
  p->method = choose_method(shape, p->group_in_c);
  const edge_conv_shape *s = &p->s;
  const int64_t out_pixels = s->out_h * s->out_w;
  edge_status status = EDGE_OK;
  size_t zero_bytes = (size_t)s->in_c;
  switch (p->method) {
    case EDGE_CONV_METHOD_GEMM: status = pack_groups(p, weights, bias, zp, first, second, 1, (size_t)p->group_in_c); break;
    case EDGE_CONV_METHOD_IGEMM: {
      const size_t mr = k->mr;
      if (s->groups == 1 && p->group_in_c < QCONV_IM2COL_MAX_CIN) {
        /* OHWI weights [out][kh][kw][in_c] are rows of kh * kw * in_c: one tap of that k, padded
         * with zero weights (and zp_x patch bytes) to whole k groups of 4 so the kernels never
         * take their piecewise tail loads. */
        const size_t kdim = (size_t)(p->taps * p->group_in_c), kpad = round_up(kdim, k->kr > 4 ? k->kr : 4);
        int8_t *padded = calloc((size_t)s->out_c * kpad + 1, 1);
        if (!padded) {
          status = edge_set_last_error(EDGE_OUT_OF_MEMORY, "qs8 conv: out of memory for packed weights");
          break;
        }
        for (int64_t o = 0; o < s->out_c; ++o) memcpy(padded + (size_t)o * kpad, weights + (size_t)o * kdim, kdim);
        p->im2col = true;
        p->im2col_stride = kpad;
        size_t block = QCONV_IM2COL_CELL_BYTES / kpad / mr * mr;
        p->im2col_block = block < mr ? mr : block;
        status = pack_groups(p, padded, bias, zp, first, second, 1, kpad);
        free(padded);
        break;
      }
      p->m_tiles = ((size_t)out_pixels + mr - 1) / mr;
      p->indirection_count = p->m_tiles * mr * (size_t)p->taps;
      status = pack_groups(p, weights, bias, zp, first, second, (size_t)p->taps, (size_t)p->group_in_c);
      break;
    }
    default: { /* DWCONV */
      p->multiplier = s->out_c / s->in_c;
      zero_bytes = (size_t)s->out_c;
      const bool unit_width_3x3 = s->kernel_h == 3 && s->kernel_w == 3 && s->stride_w == 1 && s->dilation_w == 1;
      p->dwconv = unit_width_3x3 && k->dwconv_3x3s1 ? k->dwconv_3x3s1 : k->dwconv;
      p->dwconv_dq = unit_width_3x3 && k->dwconv_dq_3x3s1 ? k->dwconv_dq_3x3s1 : k->dwconv_dq;
      p->indirection_count = (size_t)(out_pixels * p->taps);
      const size_t bytes = edge_qs8_dwconv_packed_bytes(k, (size_t)s->out_c, (size_t)p->taps);
      p->packed = plan_alloc(p, bytes);
      if (!p->packed) {
        status = edge_set_last_error(EDGE_OUT_OF_MEMORY, "qs8 conv: out of memory for packed weights");
        break;
      }
      status = dynamic ? edge_qs8_dwconv_pack_dynamic(k, (size_t)s->out_c, (size_t)p->taps, weights, first, second,
                                                      p->packed)
                       : edge_qs8_dwconv_pack(k, (size_t)s->out_c, (size_t)p->taps, weights, bias, zp, first,
                                              second, p->packed);
    }
  }
  if (status == EDGE_OK) {
    p->zero = plan_alloc(p, zero_bytes + 64);
    if (p->zero) memset(p->zero, (int)(int8_t)zp, zero_bytes + 64);
    if (p->zero && p->indirection_count) p->indirection = malloc(p->indirection_count * sizeof *p->indirection);
    if (!p->zero || (p->indirection_count && !p->indirection))
      status = edge_set_last_error(EDGE_OUT_OF_MEMORY, "qs8 conv: out of memory for the indirection buffer");
  }
  if (status != EDGE_OK) {
    edge_qs8_conv_plan_free(p);
    return status;
  }
  *out = p;
  return EDGE_OK;
}

edge_status edge_qs8_conv_plan_create(const edge_qs8_kernels *k, const edge_conv_shape *shape, const int8_t *weights,
                                      const int32_t *bias, int32_t input_zero_point, const int32_t *multiplier,
                                      const int32_t *shift, const edge_qs8_requant_params *out,
                                      edge_qs8_conv_plan **plan) {
  const edge_status status = create(k, shape, weights, bias, input_zero_point, multiplier, shift, false, plan);
  if (status == EDGE_OK) (*plan)->rq = *out;
  return status;
}

edge_status edge_qs8_conv_plan_create_dynamic(const edge_qs8_kernels *k, const edge_conv_shape *shape,
                                              const int8_t *weights, const float *weight_scale, const float *bias,
                                              const edge_activation *act, edge_qs8_conv_plan **plan) {
  const edge_status status = create(k, shape, weights, NULL, 0, weight_scale, bias, true, plan);
  if (status != EDGE_OK) return status;
  edge_qs8_conv_plan *p = *plan;
  const edge_activation *after = NULL;
  edge_qs8_dq_activation(act, &p->dq, &after);
  p->act = act ? *act : (edge_activation){EDGE_UNARY_IDENTITY, 0.0f, 0.0f};
  p->after = after ? &p->act : NULL;
  return EDGE_OK;
}

void edge_qs8_conv_plan_free(edge_qs8_conv_plan *plan) {
  if (!plan) return;
  free(plan->packed);
  free(plan->zero);
  free(plan->indirection);
  free(plan);
}

edge_conv_method edge_qs8_conv_plan_method(const edge_qs8_conv_plan *plan) { return plan->method; }
size_t edge_qs8_conv_plan_kept_bytes(const edge_qs8_conv_plan *plan) { return plan->kept_bytes; }

size_t edge_qs8_conv_plan_scratch_bytes(const edge_qs8_conv_plan *p) {
  const edge_conv_shape *s = &p->s;
  if (p->method == EDGE_CONV_METHOD_DWCONV && p->multiplier > 1)
    return (size_t)(s->batch * s->in_h * s->in_w * s->out_c);
  if (p->im2col) return (size_t)(s->batch * s->out_h * s->out_w) * p->im2col_stride;
  return 0;
}

/* ---- indirection (pointers into one image; batch and group slices through input_offset) ---- */

static const int8_t *input_row(const edge_qs8_conv_plan *p, const int8_t *base, int64_t row_bytes, int64_t ih,
                               int64_t iw) {
  if (ih < 0 || ih >= p->s.in_h || iw < 0 || iw >= p->s.in_w) return p->zero;
  return base + (ih * p->s.in_w + iw) * row_bytes;
}

static void build_indirection(edge_qs8_conv_plan *p, const int8_t *base) {
  const edge_conv_shape *s = &p->s;
  const int64_t out_pixels = s->out_h * s->out_w;
  if (p->method == EDGE_CONV_METHOD_IGEMM) {
    const int64_t mr = p->k->mr;
    for (size_t tile = 0; tile < p->m_tiles; ++tile)
      for (int64_t t = 0; t < p->taps; ++t)
        for (int64_t m = 0; m < mr; ++m) {
          const int64_t pixel = min64((int64_t)tile * mr + m, out_pixels - 1);
          const int64_t oh = pixel / s->out_w, ow = pixel % s->out_w, kh = t / s->kernel_w, kw = t % s->kernel_w;
          p->indirection[((int64_t)tile * p->taps + t) * mr + m] =
              input_row(p, base, s->in_c, oh * s->stride_h - s->pad_top + kh * s->dilation_h,
                        ow * s->stride_w - s->pad_left + kw * s->dilation_w);
        }
  } else if (p->method == EDGE_CONV_METHOD_DWCONV) {
    for (int64_t pixel = 0; pixel < out_pixels; ++pixel)
      for (int64_t t = 0; t < p->taps; ++t) {
        const int64_t oh = pixel / s->out_w, ow = pixel % s->out_w, kh = t / s->kernel_w, kw = t % s->kernel_w;
        p->indirection[pixel * p->taps + t] =
            input_row(p, base, s->out_c, oh * s->stride_h - s->pad_top + kh * s->dilation_h,
                      ow * s->stride_w - s->pad_left + kw * s->dilation_w);
      }
  }
  p->indirection_base = base;
}

/* ---- drivers ---- */

typedef struct {
  const edge_qs8_conv_plan *p;
  const int8_t *x;
  void *y;
  int8_t *scratch;
  edge_qs8_dq_params dq;
  size_t block_columns, n_blocks;
} qconv_job;

static void run_cells(edge_threadpool *pool, double macs, int64_t cells, edge_parallel_fn fn, void *job) {
  if (cells <= 0) return;
  if (pool && edge_threadpool_size(pool) > 1 && macs >= QCONV_MIN_PARALLEL_MACS && cells > 1)
    edge_parallel_for(pool, cells, fn, job);
  else
    fn(job, 0, cells, 0);
}

static void apply_after(const edge_qs8_conv_plan *p, float *row, size_t n) {
  if (p->after) edge_activation_apply(p->after, row, n);
}

/* Cells (image, group, column block, row tile). */
static void igemm_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qconv_job *job = arg;
  const edge_qs8_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const size_t mr_max = p->k->mr, nr = p->k->nr;
  const size_t out_pixels = (size_t)(s->out_h * s->out_w), kc = (size_t)p->group_in_c, ks = (size_t)p->taps;
  const size_t panel_bytes = edge_qs8_gemm_panel_bytes(p->k, ks, kc);
  for (int64_t cell = begin; cell < end; ++cell) {
    size_t rest = (size_t)cell;
    const size_t tile = rest % p->m_tiles;
    rest /= p->m_tiles;
    const size_t block = rest % job->n_blocks;
    rest /= job->n_blocks;
    const size_t group = rest % (size_t)s->groups, image = rest / (size_t)s->groups;
    const size_t m0 = tile * mr_max, n0 = block * job->block_columns;
    const size_t mr = out_pixels - m0 < mr_max ? out_pixels - m0 : mr_max;
    const size_t columns_left = (size_t)p->group_out_c - n0;
    const size_t nc = columns_left < job->block_columns ? columns_left : job->block_columns;
    const size_t out_offset = (image * out_pixels + m0) * (size_t)s->out_c + group * (size_t)p->group_out_c + n0;
    const uint8_t *w = p->packed + group * p->packed_stride + n0 / nr * panel_bytes;
    const size_t input_offset = image * (size_t)(s->in_h * s->in_w * s->in_c) + group * kc;
    const int8_t *const *a = p->indirection + tile * ks * mr_max;
    if (p->dynamic) {
      float *c = (float *)job->y + out_offset;
      p->k->igemm_dq[mr == 1](mr, nc, kc, ks, a, w, c, (size_t)s->out_c, input_offset, p->zero, &job->dq);
      for (size_t m = 0; p->after && m < mr; ++m) apply_after(p, c + m * (size_t)s->out_c, nc);
    } else {
      p->k->igemm[mr == 1](mr, nc, kc, ks, a, w, (int8_t *)job->y + out_offset, (size_t)s->out_c, input_offset,
                           p->zero, &p->rq);
    }
  }
}

static void run_igemm(edge_qs8_conv_plan *p, edge_threadpool *pool, qconv_job *job) {
  const edge_conv_shape *s = &p->s;
  if (p->indirection_base != job->x) build_indirection(p, job->x);
  const size_t nr = p->k->nr, panel_bytes = edge_qs8_gemm_panel_bytes(p->k, (size_t)p->taps, (size_t)p->group_in_c);
  size_t block_columns = QIGEMM_BLOCK_BYTES / panel_bytes * nr;
  if (block_columns < nr) block_columns = nr;
  const int32_t threads = pool ? edge_threadpool_size(pool) : 1;
  const size_t outer = (size_t)(s->batch * s->groups) * p->m_tiles, wanted = 4 * (size_t)threads;
  if (threads > 1 && outer * (((size_t)p->group_out_c + block_columns - 1) / block_columns) < wanted) {
    const size_t blocks = (wanted + outer - 1) / outer;
    const size_t columns = round_up(((size_t)p->group_out_c + blocks - 1) / blocks, nr);
    if (columns < block_columns) block_columns = columns;
  }
  job->block_columns = block_columns;
  job->n_blocks = ((size_t)p->group_out_c + block_columns - 1) / block_columns;
  const double macs = (double)(s->batch * s->out_h * s->out_w * s->out_c) * (double)(p->taps * p->group_in_c);
  run_cells(pool, macs, (int64_t)(outer * job->n_blocks), igemm_cells, job);
}

/* Patch rows are short runs (kw * in_c bytes: 9 for a 3x3 RGB stem), where a memcpy / memset call
 * would cost more than the copy: 8-byte moves, the last one overlapping. */
static inline void copy_run(int8_t *dst, const int8_t *src, size_t n) {
  if (n >= 8) {
    size_t i = 0;
    for (; i + 8 < n; i += 8) memcpy(dst + i, src + i, 8);
    memcpy(dst + n - 8, src + n - 8, 8);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

static inline void fill_run(int8_t *dst, int8_t value, size_t n) {
  if (n >= 8) {
    const uint64_t word = 0x0101010101010101ull * (uint8_t)value;
    size_t i = 0;
    for (; i + 8 < n; i += 8) memcpy(dst + i, &word, 8);
    memcpy(dst + n - 8, &word, 8);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = value;
  }
}

/* One patch row per output pixel (global pixel index over the batch): kh * kw * in_c bytes, tap-major
 * like the OHWI weights, zp_x where a tap falls in the padding and in the k padding up to the stride. */
static void im2col_pixel(const edge_qs8_conv_plan *p, const int8_t *x, int64_t n, int64_t oh, int64_t ow,
                         int8_t *dst) {
  const edge_conv_shape *s = &p->s;
  const int64_t cin = s->in_c, kw_count = s->kernel_w;
  const size_t run = (size_t)(kw_count * cin), kdim = (size_t)s->kernel_h * run;
  const int8_t zp = p->zero[0];
  for (size_t i = kdim; i < p->im2col_stride; ++i) dst[i] = zp;
  const int64_t iw0 = ow * s->stride_w - s->pad_left;
  const bool inside_w = s->dilation_w == 1 && iw0 >= 0 && iw0 + kw_count <= s->in_w;
  for (int64_t kh = 0; kh < s->kernel_h; ++kh, dst += run) {
    const int64_t ih = oh * s->stride_h - s->pad_top + kh * s->dilation_h;
    if (ih < 0 || ih >= s->in_h) {
      fill_run(dst, zp, run);
      continue;
    }
    const int8_t *row = x + (n * s->in_h + ih) * s->in_w * cin;
    if (inside_w) {
      copy_run(dst, row + iw0 * cin, run);
      continue;
    }
    for (int64_t kw = 0; kw < kw_count; ++kw) {
      const int64_t iw = iw0 + kw * s->dilation_w;
      int8_t *d = dst + kw * cin;
      if (iw < 0 || iw >= s->in_w)
        for (int64_t c = 0; c < cin; ++c) d[c] = zp;
      else
        for (int64_t c = 0; c < cin; ++c) d[c] = row[iw * cin + c];
    }
  }
}

/* Cells: blocks of im2col_block output pixels over the whole batch; each copies its patches into
 * its own slice of scratch and multiplies them right away (all columns per MR rows, one kernel call
 * over the whole k per output, so the bytes do not depend on the thread count). */
static void im2col_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qconv_job *job = arg;
  const edge_qs8_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const size_t pixels = (size_t)(s->batch * s->out_h * s->out_w), mr_max = p->k->mr, stride = p->im2col_stride;
  const size_t kdim = stride, n = (size_t)s->out_c;
  for (int64_t cell = begin; cell < end; ++cell) {
    const size_t p0 = (size_t)cell * p->im2col_block;
    const size_t p1 = p0 + p->im2col_block < pixels ? p0 + p->im2col_block : pixels;
    int8_t *patches = job->scratch + p0 * stride;
    const int64_t out_pixels = s->out_h * s->out_w;
    int64_t image = (int64_t)p0 / out_pixels, oh = (int64_t)p0 % out_pixels / s->out_w, ow = (int64_t)p0 % s->out_w;
    for (size_t pixel = p0; pixel < p1; ++pixel) {
      im2col_pixel(p, job->x, image, oh, ow, patches + (pixel - p0) * stride);
      if (++ow == s->out_w) {
        ow = 0;
        if (++oh == s->out_h) oh = 0, ++image;
      }
    }
    for (size_t m0 = p0; m0 < p1; m0 += mr_max) {
      const size_t mr = p1 - m0 < mr_max ? p1 - m0 : mr_max;
      const int8_t *a = patches + (m0 - p0) * stride;
      if (p->dynamic) {
        float *c = (float *)job->y + m0 * n;
        p->k->gemm_dq[mr == 1](mr, n, kdim, a, stride, p->packed, c, n, &job->dq);
        for (size_t m = 0; p->after && m < mr; ++m) apply_after(p, c + m * n, n);
      } else {
        p->k->gemm[mr == 1](mr, n, kdim, a, stride, p->packed, (int8_t *)job->y + m0 * n, n, &p->rq);
      }
    }
  }
}

static void run_im2col(edge_qs8_conv_plan *p, edge_threadpool *pool, qconv_job *job) {
  const edge_conv_shape *s = &p->s;
  const size_t pixels = (size_t)(s->batch * s->out_h * s->out_w);
  const double macs = (double)pixels * (double)s->out_c * (double)(p->taps * s->in_c);
  run_cells(pool, macs, (int64_t)((pixels + p->im2col_block - 1) / p->im2col_block), im2col_cells, job);
}

static void run_gemm(edge_qs8_conv_plan *p, edge_threadpool *pool, qconv_job *job) {
  const edge_conv_shape *s = &p->s;
  const size_t pixels = (size_t)(s->batch * s->out_h * s->out_w);
  for (int64_t grp = 0; grp < s->groups; ++grp) {
    const int8_t *a = job->x + grp * p->group_in_c;
    const uint8_t *w = p->packed + (size_t)grp * p->packed_stride;
    if (p->dynamic)
      edge_qs8_gemm_dynamic_compute(p->k, pool, pixels, (size_t)p->group_out_c, (size_t)p->group_in_c, a,
                                    (size_t)s->in_c, w, (float *)job->y + grp * p->group_out_c, (size_t)s->out_c,
                                    job->dq.row_scale, 0, &p->act);
    else
      edge_qs8_gemm_compute(p->k, pool, pixels, (size_t)p->group_out_c, (size_t)p->group_in_c, a, (size_t)s->in_c, w,
                            (int8_t *)job->y + grp * p->group_out_c, (size_t)s->out_c, &p->rq);
  }
}

static void expand_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qconv_job *job = arg;
  const edge_qs8_conv_plan *p = job->p;
  const int64_t cin = p->s.in_c, cout = p->s.out_c, mult = p->multiplier;
  for (int64_t pixel = begin; pixel < end; ++pixel)
    for (int64_t o = 0; o < cout; ++o) job->scratch[pixel * cout + o] = job->x[pixel * cin + o / mult];
}

static void dwconv_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const qconv_job *job = arg;
  const edge_qs8_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const size_t row = (size_t)s->out_c, image_bytes = (size_t)(s->in_h * s->in_w) * row;
  for (int64_t r = begin; r < end; ++r) {
    const size_t image = (size_t)(r / s->out_h), oh = (size_t)(r % s->out_h);
    const int8_t *const *in = p->indirection + oh * (size_t)(s->out_w * p->taps);
    const size_t out_offset = (size_t)r * (size_t)s->out_w * row;
    if (p->dynamic) {
      float *out = (float *)job->y + out_offset;
      p->dwconv_dq(row, (size_t)s->out_w, (size_t)p->taps, in, (size_t)p->taps, image * image_bytes, p->zero,
                      p->packed, out, row, &job->dq);
      apply_after(p, out, (size_t)s->out_w * row);
    } else {
      p->dwconv(row, (size_t)s->out_w, (size_t)p->taps, in, (size_t)p->taps, image * image_bytes, p->zero,
                   p->packed, (int8_t *)job->y + out_offset, row, &p->rq);
    }
  }
}

static void run_dwconv(edge_qs8_conv_plan *p, edge_threadpool *pool, qconv_job *job) {
  const edge_conv_shape *s = &p->s;
  const int8_t *base = job->x;
  if (p->multiplier > 1) {
    run_cells(pool, (double)(s->batch * s->in_h * s->in_w * s->out_c), s->batch * s->in_h * s->in_w, expand_cells,
              job);
    base = job->scratch;
  }
  if (p->indirection_base != base) build_indirection(p, base);
  const double macs = (double)(s->batch * s->out_h * s->out_w * s->out_c * p->taps);
  run_cells(pool, macs, s->batch * s->out_h, dwconv_cells, job);
}

void edge_qs8_conv_plan_run(edge_qs8_conv_plan *plan, edge_threadpool *pool, const int8_t *x, void *y,
                            float x_scale, void *scratch) {
  const edge_conv_shape *s = &plan->s;
  if (s->batch == 0 || s->out_h == 0 || s->out_w == 0 || s->out_c == 0) return;
  qconv_job job = {.p = plan, .x = x, .y = y, .scratch = scratch, .dq = plan->dq};
  job.dq.row_scale = &x_scale;
  job.dq.row_scale_stride = 0;
  switch (plan->method) {
    case EDGE_CONV_METHOD_GEMM: run_gemm(plan, pool, &job); break;
    case EDGE_CONV_METHOD_DWCONV: run_dwconv(plan, pool, &job); break;
    default:
      if (plan->im2col) run_im2col(plan, pool, &job);
      else run_igemm(plan, pool, &job);
      break;
  }
}

/* Convolution plans: method choice, weight packing, indirection buffers and the threaded drivers
 * (conv_driver.h). The kernels they call are in conv.h / gemm.h. */
#include "conv_driver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Below this many multiply-adds (a few microseconds of work) a layer runs on the calling thread,
 * where waking the pool's worker costs more than it saves. Above it, splitting also keeps each
 * thread on the rows the previous layer's threads wrote (the GEMM driver splits rows the same
 * way), which on the 2-core Zen 4 VM mattered more than the wake-up for depthwise layers. */
#define CONV_MIN_PARALLEL_MACS (1 << 18)
/* IGEMM reads whole kernel rows at once below this many input channels (use_row_runs). */
#define ROW_RUN_MAX_IN_C 8
/* igemm keeps the weight panels of one column block under this size, so a thread reuses them
 * from L2 across the row tiles it walks. */
#define IGEMM_BLOCK_BYTES (256 * 1024)
/* Winograd transforms a block of tiles at a time; the block's transformed inputs and GEMM outputs
 * (36 x tiles x (in_c + out_c) floats) are kept under this size. */
#define WINOGRAD_BLOCK_BYTES (384 * 1024)

struct edge_conv_plan {
  size_t kept_bytes; /* packed weights, kept from prepare to release */
  edge_conv_method method;
  edge_conv_shape s;
  const edge_kernel_config *k;
  int64_t group_in_c, group_out_c, taps;
  edge_f32_minmax_params clamp;          /* what the kernels clamp to */
  edge_activation act;                   /* the fused activation as given */
  edge_f32_epilogue epilogue;            /* the residual (its address set per run) and the rest of act */
  float *packed;          /* per group (GEMM/IGEMM/DECONV), per Winograd position, or depthwise */
  size_t packed_stride;   /* floats between consecutive groups / positions */
  float *bias;            /* out_c floats, for methods that add the bias outside the GEMM; else NULL */
  float *zero;            /* zeros, at least one input row */
  const float **indirection;
  size_t indirection_count;
  const float *indirection_base; /* the input address the pointers were built against */
  int64_t multiplier;            /* DWCONV: output channels per input channel */
  /* DWCONV: pointers per output row in the indirection, and the kernels' input_stride and
   * row_pitch for them (conv.h: per pixel, or per output row with shared columns) */
  size_t dw_row_pointers, dw_input_stride, dw_row_pitch;
  edge_f32_dwconv_ukernel dwconv;
  size_t m_tiles;                /* IGEMM: row tiles per image and group */
  /* IGEMM: what the kernel calls its taps and channels per tap: kernel_h * kernel_w and in_c, or
   * for row runs kernel_h and kernel_w * in_c (see use_row_runs) */
  size_t igemm_taps, igemm_kc;
  /* IGEMM row runs: output columns whose window crosses the left or right edge are the first
   * edge_left and those from edge_right on; each (output row, such column, kernel row) has a patch
   * of kernel_w * in_c floats, refilled from the input every run */
  int64_t edge_left, edge_right, edge_columns;
  float *patches;
  int64_t tiles_h, tiles_w;      /* WINOGRAD: 4x4 output tiles per image */
  size_t tile_block;             /* WINOGRAD: tiles per cell (a multiple of the GEMM's mr) */
  size_t winograd_thread_floats; /* WINOGRAD: scratch floats per thread */
  int64_t columns;               /* DECONV: kernel_h * kernel_w * group_out_c */
  float *pack_temp;              /* plans made for changing weights: what pack_weights works in */
};

/* aligned_alloc that remembers how much the plan keeps (reported as persistent memory). */
static void *plan_alloc(edge_conv_plan *p, size_t bytes) {
  bytes = (bytes + EDGE_ALIGNMENT - 1) / EDGE_ALIGNMENT * EDGE_ALIGNMENT;
  void *memory = aligned_alloc(EDGE_ALIGNMENT, bytes ? bytes : EDGE_ALIGNMENT);
  if (memory) p->kept_bytes += bytes;
  return memory;
}


static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

const char *edge_conv_method_name(edge_conv_method method) {
  switch (method) {
    case EDGE_CONV_METHOD_GEMM: return "gemm";
    case EDGE_CONV_METHOD_DWCONV: return "dwconv";
    case EDGE_CONV_METHOD_WINOGRAD: return "winograd";
    case EDGE_CONV_METHOD_IGEMM: return "igemm";
    case EDGE_CONV_METHOD_DECONV: return "deconv";
  }
  return "?";
}

edge_conv_method edge_conv_plan_method(const edge_conv_plan *plan) { return plan->method; }

edge_conv_winograd_mode edge_conv_winograd_mode_from_env(void) {
  const char *v = getenv("EDGE_WINOGRAD");
  if (!v) return EDGE_CONV_WINOGRAD_AUTO;
  if (strcmp(v, "0") == 0) return EDGE_CONV_WINOGRAD_OFF;
  if (strcmp(v, "1") == 0) return EDGE_CONV_WINOGRAD_ON;
  return EDGE_CONV_WINOGRAD_AUTO;
}

bool edge_conv_winograd_eligible(const edge_conv_shape *s) {
  return !s->transposed && s->kernel_h == 3 && s->kernel_w == 3 && s->stride_h == 1 && s->stride_w == 1 &&
         s->dilation_h == 1 && s->dilation_w == 1 && s->groups == 1;
}

/* Measured on Zen 4 (AVX-512, one thread), igemm time / Winograd time for C -> C channels, 3x3
 * stride 1 pad 1 at HxW (the layer alone, weights packed):
 *            4x4   7x7   8x8  14x14  28x28  56x56
 *   C = 8    0.70  0.48  0.56  0.97   1.22   1.21
 *   C = 16   1.18  0.96  1.06  1.43   1.81   1.79
 *   C = 32   1.24  1.10  1.26  1.61   2.06   2.00
 *   C = 64   1.53  1.33  1.52  2.00   2.49   2.50
 *   C = 256  1.48  1.61  1.84  2.71   3.13   3.22
 * and C = 512: 1.41 at 7x7, 2.15 at 14x14. Winograd wins from 32 channels at any size, from 16
 * at 8x8 outputs and from 8 at 28x28. Its transformed weights are 4x the originals (36 / 9 per
 * channel pair), so layers whose transformed weights pass WINOGRAD_MAX_WEIGHT_BYTES stay on igemm
 * for memory's sake (ResNet-18's 512-channel layers: 1.4x faster but 38 MB each). */
#define WINOGRAD_MAX_WEIGHT_BYTES (16u << 20)

bool edge_conv_winograd_wins(const edge_conv_shape *s) {
  if (36.0 * 4.0 * (double)s->in_c * (double)s->out_c > (double)WINOGRAD_MAX_WEIGHT_BYTES) return false;
  const int64_t channels = s->in_c < s->out_c ? s->in_c : s->out_c, pixels = s->out_h * s->out_w;
  if (channels >= 32) return true;
  if (channels >= 16) return pixels >= 8 * 8;
  if (channels >= 8) return pixels >= 28 * 28;
  return false;
}

/* One run's work, shared by its cells. */
typedef struct {
  const edge_conv_plan *p;
  const float *x;
  float *y;
  float *scratch;
  size_t block_columns, n_blocks;
  edge_f32_epilogue epilogue; /* the plan's, with this run's residual */
} conv_job;

static void set_activation(edge_conv_plan *p, const edge_activation *act) {
  p->act = act ? *act : (edge_activation){EDGE_UNARY_IDENTITY, 0.0f, 0.0f};
  p->clamp = edge_f32_epilogue_init(&p->epilogue, p->k->isa, &p->act, (size_t)p->s.residual_c);
}

/* The epilogue of `rows` output pixels from pixel `pixel` on, channels [col0, col0 + nc), row r
 * at c + r * out_c. */
static void finish(const conv_job *job, float *c, size_t rows, size_t pixel, size_t col0, size_t nc) {
  if (edge_f32_epilogue_active(&job->epilogue))
    edge_f32_epilogue_rows(&job->epilogue, c, (size_t)job->p->s.out_c, rows, pixel, col0, nc);
}

/* Row runs: with unit dilation along the width, one kernel row's taps at an output pixel read
 * kernel_w consecutive input pixels, kernel_w * in_c consecutive floats of an NHWC image. IGEMM
 * then takes one row pointer per kernel row instead of one per tap, and the kernel's inner loop
 * runs kernel_w * in_c long instead of in_c: the packed weights are the same (taps by row, then
 * channels), only the split between the kernel's two loops moves. Worth it where in_c is a few
 * channels (an image stem: 3x3 stride 2 from RGB ran 27 multiply-adds per output in 9 loops of 3,
 * each loading MR row pointers). Windows that cross the image's left or right edge read a
 * zero-padded copy of their row (the patches); batch 1 only, since the kernels offset every
 * pointer but `zero` by the image. */
static bool use_row_runs(const edge_conv_shape *s, int64_t group_in_c) {
  return s->groups == 1 && s->batch == 1 && s->kernel_w > 1 && s->dilation_w == 1 && group_in_c < ROW_RUN_MAX_IN_C;
}

static edge_conv_method choose_method(const edge_conv_shape *s, int64_t group_in_c,
                                      edge_conv_winograd_mode winograd) {
  if (s->transposed) return EDGE_CONV_METHOD_DECONV;
  if (s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
      s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w)
    return EDGE_CONV_METHOD_GEMM;
  /* One input channel and one group is an ordinary convolution, however many outputs: as depthwise
   * with multiplier out_c it would first copy the input out_c times (wav2vec2's 1 -> 512 channel
   * waveform layer, 10 taps at stride 5, took 20x longer that way than as igemm with K = 10). */
  if (group_in_c == 1 && s->groups == s->in_c && s->groups > 1) return EDGE_CONV_METHOD_DWCONV;
  if (edge_conv_winograd_eligible(s) &&
      (winograd == EDGE_CONV_WINOGRAD_ON || (winograd == EDGE_CONV_WINOGRAD_AUTO && edge_conv_winograd_wins(s))))
    return EDGE_CONV_METHOD_WINOGRAD;
  return EDGE_CONV_METHOD_IGEMM;
}

/* ---- weight preparation ----
 *
 * Split in two so that weights which change between runs (training variables) can be packed again
 * into the same memory: allocate_weights sizes and allocates everything packing writes (and the
 * temporary it needs, kept only by plans made for changing weights), pack_weights only writes. */

static size_t pack_temp_floats(const edge_conv_plan *p) {
  switch (p->method) {
    case EDGE_CONV_METHOD_WINOGRAD: return (size_t)(36 * p->s.out_c * p->s.in_c);
    case EDGE_CONV_METHOD_DECONV: return (size_t)(p->taps * p->group_out_c * p->group_in_c);
    default: return 0;
  }
}

static bool allocate_weights(edge_conv_plan *p) {
  const edge_gemm_kernels *g = &p->k->gemm;
  size_t count = (size_t)p->s.groups;
  switch (p->method) {
    case EDGE_CONV_METHOD_GEMM:
    case EDGE_CONV_METHOD_IGEMM:
      p->packed_stride =
          edge_gemm_packed_bytes(g, (size_t)p->group_out_c, (size_t)(p->taps * p->group_in_c)) / sizeof(float);
      break;
    case EDGE_CONV_METHOD_DWCONV: {
      const size_t ct = p->k->conv.dwconv_channel_tile, blocks = ((size_t)p->s.out_c + ct - 1) / ct;
      p->packed_stride = round_up(blocks * (size_t)(p->taps + 1) * ct, EDGE_ALIGNMENT / sizeof(float));
      count = 1;
      break;
    }
    case EDGE_CONV_METHOD_WINOGRAD:
      p->packed_stride = edge_gemm_packed_bytes(g, (size_t)p->s.out_c, (size_t)p->s.in_c) / sizeof(float);
      count = 36;
      break;
    case EDGE_CONV_METHOD_DECONV:
      p->columns = p->taps * p->group_out_c;
      p->packed_stride = edge_gemm_packed_bytes(g, (size_t)p->columns, (size_t)p->group_in_c) / sizeof(float);
      break;
  }
  p->packed = plan_alloc(p, p->packed_stride * sizeof(float) * count);
  if (!p->packed) return false;
  if (p->method == EDGE_CONV_METHOD_WINOGRAD || p->method == EDGE_CONV_METHOD_DECONV) {
    p->bias = calloc((size_t)p->s.out_c, sizeof(float));
    if (!p->bias) return false;
  }
  return true;
}

static void pack_groups(edge_conv_plan *p, const float *weights, const float *bias) {
  const int64_t n = p->group_out_c, kdim = p->taps * p->group_in_c;
  for (int64_t grp = 0; grp < p->s.groups; ++grp)
    edge_gemm_pack_weights(&p->k->gemm, (size_t)n, (size_t)kdim, weights + grp * n * kdim, (size_t)kdim,
                           bias ? bias + grp * n : NULL, p->packed + (size_t)grp * p->packed_stride);
}

/* CONV_TRANSPOSE_2D weights [out_c, kh, kw, cin_g] as the B of x_g [pixels, cin_g] x B
 * [cin_g, (kh, kw, co)]: B transposed is row (kh, kw, co) = w[g*cout_g + co][kh][kw][:]. */
static void pack_deconv(edge_conv_plan *p, const float *weights, float *rows) {
  const int64_t kk = p->taps, cin = p->group_in_c, cout = p->group_out_c;
  for (int64_t grp = 0; grp < p->s.groups; ++grp) {
    for (int64_t t = 0; t < kk; ++t)
      for (int64_t co = 0; co < cout; ++co)
        memcpy(rows + (t * cout + co) * cin, weights + ((grp * cout + co) * kk + t) * cin, (size_t)cin * sizeof(float));
    edge_gemm_pack_weights(&p->k->gemm, (size_t)p->columns, (size_t)cin, rows, (size_t)cin, NULL,
                           p->packed + (size_t)grp * p->packed_stride);
  }
}

/* Per block of CT channels: CT biases, then taps rows of CT weights (dwconv contract, conv.h). */
static void pack_depthwise(edge_conv_plan *p, const float *weights, const float *bias) {
  const size_t ct = p->k->conv.dwconv_channel_tile, channels = (size_t)p->s.out_c, taps = (size_t)p->taps;
  const size_t blocks = (channels + ct - 1) / ct;
  float *out = p->packed;
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t j = 0; j < ct; ++j) {
      const size_t c = b * ct + j;
      out[j] = c < channels && bias ? bias[c] : 0.0f;
      for (size_t t = 0; t < taps; ++t) out[(t + 1) * ct + j] = c < channels ? weights[c * taps + t] : 0.0f;
    }
    out += (taps + 1) * ct;
  }
}

/* U = G g G^T for every (o, c), G the F(4x4, 3x3) kernel transform, computed in double; position
 * i of U is the B of GEMM i, packed as [in_c, out_c] with no bias (the output transform adds it).
 * The channel loop is innermost (contiguous in both layouts) so the compiler can vectorise it;
 * every value is the same expression in the same order whatever the loop nest. */
static void pack_winograd(edge_conv_plan *p, const float *weights, float *transformed) {
  static const double G[6][3] = {{1.0 / 4, 0, 0},
                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                 {0, 0, 1}};
  enum { CHANNEL_BLOCK = 16 };
  const int64_t cin = p->s.in_c, cout = p->s.out_c;
  for (int64_t o = 0; o < cout; ++o)
    for (int64_t c0 = 0; c0 < cin; c0 += CHANNEL_BLOCK) {
      const int64_t cb = cin - c0 < CHANNEL_BLOCK ? cin - c0 : CHANNEL_BLOCK;
      double g[3][3][CHANNEL_BLOCK], gg[6][3][CHANNEL_BLOCK];
      for (int kh = 0; kh < 3; ++kh)
        for (int kw = 0; kw < 3; ++kw)
          for (int64_t c = 0; c < cb; ++c) g[kh][kw][c] = weights[((o * 3 + kh) * 3 + kw) * cin + c0 + c];
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 3; ++j)
          for (int64_t c = 0; c < cb; ++c)
            gg[i][j][c] = G[i][0] * g[0][j][c] + G[i][1] * g[1][j][c] + G[i][2] * g[2][j][c];
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) {
          float *out = transformed + ((int64_t)(i * 6 + j) * cout + o) * cin + c0;
          for (int64_t c = 0; c < cb; ++c)
            out[c] = (float)(gg[i][0][c] * G[j][0] + gg[i][1][c] * G[j][1] + gg[i][2][c] * G[j][2]);
        }
    }
  for (int i = 0; i < 36; ++i)
    edge_gemm_pack_weights(&p->k->gemm, (size_t)cout, (size_t)cin, transformed + (size_t)i * cout * cin,
                           (size_t)cin, NULL, p->packed + (size_t)i * p->packed_stride);
}

static void pack_weights(edge_conv_plan *p, const float *weights, const float *bias, float *temp) {
  switch (p->method) {
    case EDGE_CONV_METHOD_GEMM:
    case EDGE_CONV_METHOD_IGEMM: pack_groups(p, weights, bias); break;
    case EDGE_CONV_METHOD_DWCONV: pack_depthwise(p, weights, bias); break;
    case EDGE_CONV_METHOD_WINOGRAD: pack_winograd(p, weights, temp); break;
    case EDGE_CONV_METHOD_DECONV: pack_deconv(p, weights, temp); break;
  }
  if (p->bias) {
    if (bias) memcpy(p->bias, bias, (size_t)p->s.out_c * sizeof(float));
    else memset(p->bias, 0, (size_t)p->s.out_c * sizeof(float));
  }
}

void edge_conv_plan_pack(edge_conv_plan *plan, const float *weights, const float *bias) {
  pack_weights(plan, weights, bias, plan->pack_temp);
}

edge_conv_plan *edge_conv_plan_create(const edge_kernel_config *kernels, const edge_conv_shape *shape,
                                      const float *weights, const float *bias, const edge_activation *act,
                                      edge_conv_winograd_mode winograd) {
  edge_conv_plan *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->s = *shape;
  p->k = kernels;
  p->group_in_c = shape->in_c / shape->groups;
  p->group_out_c = shape->out_c / shape->groups;
  p->taps = shape->kernel_h * shape->kernel_w;
  p->method = choose_method(shape, p->group_in_c, winograd);
  set_activation(p, act);
  const edge_conv_shape *s = &p->s;
  const int64_t out_pixels = s->out_h * s->out_w;
  size_t zero_floats = (size_t)s->in_c;
  switch (p->method) {
    case EDGE_CONV_METHOD_IGEMM: {
      const size_t mr = kernels->conv.igemm_mr;
      p->m_tiles = ((size_t)out_pixels + mr - 1) / mr;
      p->igemm_taps = (size_t)p->taps;
      p->igemm_kc = (size_t)p->group_in_c;
      if (use_row_runs(s, p->group_in_c)) {
        p->igemm_taps = (size_t)s->kernel_h;
        p->igemm_kc = (size_t)(s->kernel_w * s->in_c);
        zero_floats = p->igemm_kc;
        /* columns from 0 whose window starts left of the image, and from edge_right on those
         * whose window ends right of it (the two may meet on a narrow image) */
        while (p->edge_left < s->out_w && p->edge_left * s->stride_w < s->pad_left) ++p->edge_left;
        p->edge_right = s->out_w;
        while (p->edge_right > p->edge_left &&
               (p->edge_right - 1) * s->stride_w - s->pad_left + s->kernel_w > s->in_w)
          --p->edge_right;
        p->edge_columns = p->edge_left + s->out_w - p->edge_right;
      }
      p->indirection_count = p->m_tiles * mr * p->igemm_taps;
      break;
    }
    case EDGE_CONV_METHOD_DWCONV: {
      p->multiplier = s->out_c / s->in_c;
      zero_floats = (size_t)s->out_c;
      const bool unit_width = s->stride_w == 1 && s->dilation_w == 1;
      const bool stride_2 = s->stride_w == 2 && s->dilation_w == 1;
      if (s->kernel_h == 3 && s->kernel_w == 3)
        p->dwconv = unit_width ? kernels->conv.dwconv_3x3_s1
                    : stride_2 ? kernels->conv.dwconv_3x3_s2
                               : kernels->conv.dwconv_3x3;
      else if (s->kernel_h == 5 && s->kernel_w == 5)
        p->dwconv = unit_width ? kernels->conv.dwconv_5x5_s1
                    : stride_2 ? kernels->conv.dwconv_5x5_s2
                               : kernels->conv.dwconv_5x5;
      else
        p->dwconv = p->taps == 9 ? kernels->conv.dwconv_3x3
                    : p->taps == 25 ? kernels->conv.dwconv_5x5
                                    : kernels->conv.dwconv_any;
      if (s->kernel_h == s->kernel_w && (s->kernel_w == 3 || s->kernel_w == 5) && s->dilation_w == 1) {
        /* per output row: every input column the row's pixels read, once per kernel row */
        const size_t columns = (size_t)((s->out_w - 1) * s->stride_w + s->kernel_w);
        p->dw_row_pointers = (size_t)s->kernel_h * columns;
        p->dw_input_stride = (size_t)s->stride_w;
        p->dw_row_pitch = columns;
      } else {
        p->dw_row_pointers = (size_t)(s->out_w * p->taps);
        p->dw_input_stride = (size_t)p->taps;
        /* the 9- and 25-tap kernels read tap t at (t / K) * row_pitch + t % K: row_pitch = K keeps
         * it t, whatever the kernel's shape (a 1x9 runs on the 3x3 kernel) */
        p->dw_row_pitch = p->taps == 9 ? 3 : p->taps == 25 ? 5 : 0;
      }
      p->indirection_count = (size_t)s->out_h * p->dw_row_pointers;
      break;
    }
    case EDGE_CONV_METHOD_WINOGRAD: {
      p->tiles_h = (s->out_h + 3) / 4;
      p->tiles_w = (s->out_w + 3) / 4;
      p->indirection_count = (size_t)(p->tiles_h * p->tiles_w) * 36;
      const size_t mr = kernels->gemm.mr;
      size_t block = WINOGRAD_BLOCK_BYTES / (36 * sizeof(float) * (size_t)(s->in_c + s->out_c)) / mr * mr;
      p->tile_block = block < mr ? mr : block;
      p->winograd_thread_floats =
          round_up(36 * p->tile_block * (size_t)(s->in_c + s->out_c) + (size_t)s->out_c,
                   EDGE_ALIGNMENT / sizeof(float));
      break;
    }
    default: break;
  }
  bool ok = allocate_weights(p);
  const size_t temp_floats = pack_temp_floats(p);
  if (ok && !weights && temp_floats) {
    p->pack_temp = plan_alloc(p, temp_floats * sizeof(float));
    ok = p->pack_temp != NULL;
  }
  if (ok && weights) {
    float *temp = temp_floats ? malloc(temp_floats * sizeof(float)) : NULL;
    ok = !temp_floats || temp;
    if (ok) pack_weights(p, weights, bias, temp);
    free(temp);
  }
  if (ok) {
    p->zero = calloc(zero_floats + 1, sizeof(float));
    ok = p->zero != NULL;
  }
  if (ok && p->indirection_count) {
    p->indirection = malloc(p->indirection_count * sizeof *p->indirection);
    ok = p->indirection != NULL;
  }
  if (ok && p->edge_columns) {
    p->patches = malloc((size_t)(s->out_h * p->edge_columns * s->kernel_h) * p->igemm_kc * sizeof(float));
    ok = p->patches != NULL;
  }
  if (!ok) {
    edge_conv_plan_free(p);
    return NULL;
  }
  return p;
}

void edge_conv_plan_free(edge_conv_plan *plan) {
  if (!plan) return;
  free(plan->packed);
  free(plan->pack_temp);
  free(plan->bias);
  free(plan->zero);
  free(plan->indirection);
  free(plan->patches);
  free(plan);
}

size_t edge_conv_plan_kept_bytes(const edge_conv_plan *p) { return p->kept_bytes; }

size_t edge_conv_plan_scratch_bytes(const edge_conv_plan *p, int32_t num_threads) {
  const edge_conv_shape *s = &p->s;
  switch (p->method) {
    case EDGE_CONV_METHOD_DWCONV:
      return p->multiplier > 1 ? (size_t)(s->batch * s->in_h * s->in_w * s->out_c) * sizeof(float) : 0;
    case EDGE_CONV_METHOD_WINOGRAD:
      return (size_t)(num_threads < 1 ? 1 : num_threads) * p->winograd_thread_floats * sizeof(float);
    case EDGE_CONV_METHOD_DECONV: return (size_t)(s->batch * s->in_h * s->in_w * p->columns) * sizeof(float);
    default: return 0;
  }
}

/* ---- indirection buffers (pointers into one image of the input; batch and group slices are
 * reached through the kernels' input_offset) ---- */

static const float *input_row(const edge_conv_plan *p, const float *base, int64_t row_floats, int64_t ih,
                              int64_t iw) {
  if (ih < 0 || ih >= p->s.in_h || iw < 0 || iw >= p->s.in_w) return p->zero;
  return base + (ih * p->s.in_w + iw) * row_floats;
}

/* Row runs: the patch of output row oh, output column ow (an edge column) and kernel row kh. */
static float *row_run_patch(const edge_conv_plan *p, int64_t oh, int64_t ow, int64_t kh) {
  const int64_t column = ow < p->edge_left ? ow : p->edge_left + ow - p->edge_right;
  return p->patches + (size_t)((oh * p->edge_columns + column) * p->s.kernel_h + kh) * p->igemm_kc;
}

/* The row of kernel row kh at output pixel (oh, ow) for row runs: `zero` above or below the
 * image, its patch at the edge columns, else the input itself. */
static const float *row_run(const edge_conv_plan *p, const float *base, int64_t oh, int64_t ow, int64_t kh) {
  const edge_conv_shape *s = &p->s;
  const int64_t ih = oh * s->stride_h - s->pad_top + kh * s->dilation_h;
  if (ih < 0 || ih >= s->in_h) return p->zero;
  if (ow < p->edge_left || ow >= p->edge_right) return row_run_patch(p, oh, ow, kh);
  return base + (ih * s->in_w + ow * s->stride_w - s->pad_left) * s->in_c;
}

/* Copies this run's input into the patches, zeros where the window leaves the image. */
static void fill_patches(const edge_conv_plan *p, const float *x) {
  const edge_conv_shape *s = &p->s;
  const size_t c = (size_t)s->in_c;
  for (int64_t oh = 0; oh < s->out_h; ++oh)
    for (int64_t kh = 0; kh < s->kernel_h; ++kh) {
      const int64_t ih = oh * s->stride_h - s->pad_top + kh * s->dilation_h;
      if (ih < 0 || ih >= s->in_h) continue;
      for (int64_t column = 0; column < p->edge_columns; ++column) {
        const int64_t ow = column < p->edge_left ? column : p->edge_right + column - p->edge_left;
        float *patch = row_run_patch(p, oh, ow, kh);
        for (int64_t kw = 0; kw < s->kernel_w; ++kw) {
          const int64_t iw = ow * s->stride_w - s->pad_left + kw;
          if (iw < 0 || iw >= s->in_w) memset(patch + kw * s->in_c, 0, c * sizeof(float));
          else memcpy(patch + kw * s->in_c, x + (ih * s->in_w + iw) * s->in_c, c * sizeof(float));
        }
      }
    }
}

static void build_indirection(edge_conv_plan *p, const float *base) {
  const edge_conv_shape *s = &p->s;
  const int64_t out_pixels = s->out_h * s->out_w;
  switch (p->method) {
    case EDGE_CONV_METHOD_IGEMM: {
      const int64_t mr = p->k->conv.igemm_mr, taps = (int64_t)p->igemm_taps;
      const bool runs = taps != p->taps;
      for (size_t tile = 0; tile < p->m_tiles; ++tile)
        for (int64_t t = 0; t < taps; ++t)
          for (int64_t m = 0; m < mr; ++m) {
            const int64_t pixel = min64((int64_t)tile * mr + m, out_pixels - 1);
            const int64_t oh = pixel / s->out_w, ow = pixel % s->out_w, kh = t / s->kernel_w, kw = t % s->kernel_w;
            p->indirection[((int64_t)tile * taps + t) * mr + m] =
                runs ? row_run(p, base, oh, ow, t)
                     : input_row(p, base, s->in_c, oh * s->stride_h - s->pad_top + kh * s->dilation_h,
                                 ow * s->stride_w - s->pad_left + kw * s->dilation_w);
          }
      break;
    }
    case EDGE_CONV_METHOD_DWCONV: {
      const int64_t row_floats = s->out_c; /* the input, or its channels repeated per multiplier */
      if (p->dw_input_stride == (size_t)p->taps) {
        for (int64_t pixel = 0; pixel < out_pixels; ++pixel)
          for (int64_t t = 0; t < p->taps; ++t) {
            const int64_t oh = pixel / s->out_w, ow = pixel % s->out_w, kh = t / s->kernel_w, kw = t % s->kernel_w;
            p->indirection[pixel * p->taps + t] =
                input_row(p, base, row_floats, oh * s->stride_h - s->pad_top + kh * s->dilation_h,
                          ow * s->stride_w - s->pad_left + kw * s->dilation_w);
          }
      } else {
        const int64_t columns = (int64_t)p->dw_row_pitch;
        for (int64_t oh = 0; oh < s->out_h; ++oh)
          for (int64_t kh = 0; kh < s->kernel_h; ++kh)
            for (int64_t u = 0; u < columns; ++u)
              p->indirection[(size_t)oh * p->dw_row_pointers + (size_t)(kh * columns + u)] =
                  input_row(p, base, row_floats, oh * s->stride_h - s->pad_top + kh * s->dilation_h, u - s->pad_left);
      }
      break;
    }
    case EDGE_CONV_METHOD_WINOGRAD:
      for (int64_t th = 0; th < p->tiles_h; ++th)
        for (int64_t tw = 0; tw < p->tiles_w; ++tw)
          for (int64_t i = 0; i < 36; ++i)
            p->indirection[(th * p->tiles_w + tw) * 36 + i] =
                input_row(p, base, s->in_c, th * 4 - s->pad_top + i / 6, tw * 4 - s->pad_left + i % 6);
      break;
    default: break;
  }
  p->indirection_base = base;
}

/* ---- threaded drivers ---- */

static void run_cells(edge_threadpool *pool, double macs, int64_t cells, edge_parallel_fn fn, void *job) {
  if (cells <= 0) return;
  if (pool && edge_threadpool_size(pool) > 1 && macs >= CONV_MIN_PARALLEL_MACS && cells > 1)
    edge_parallel_for(pool, cells, fn, job);
  else
    fn(job, 0, cells, 0);
}

/* Cells ordered (image, group, column block, row tile): a thread's consecutive cells share the
 * column block's weight panels. */
static void igemm_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_job *job = arg;
  const edge_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const size_t mr_max = p->k->conv.igemm_mr, nr = p->k->conv.igemm_nr;
  const size_t out_pixels = (size_t)(s->out_h * s->out_w), kc = p->igemm_kc, ks = p->igemm_taps;
  const size_t panel_floats = (ks * kc + 1) * nr;
  /* The position of `begin`, then stepped cell by cell (divisions per cell cost as much as a small
   * tile's work). */
  size_t rest = (size_t)begin;
  size_t tile = rest % p->m_tiles;
  rest /= p->m_tiles;
  size_t block = rest % job->n_blocks;
  rest /= job->n_blocks;
  size_t group = rest % (size_t)s->groups, image = rest / (size_t)s->groups;
  for (int64_t cell = begin; cell < end; ++cell) {
    const size_t m0 = tile * mr_max, n0 = block * job->block_columns;
    const size_t mr = out_pixels - m0 < mr_max ? out_pixels - m0 : mr_max;
    const size_t columns_left = (size_t)p->group_out_c - n0;
    const size_t nc = columns_left < job->block_columns ? columns_left : job->block_columns;
    float *c = job->y + (image * out_pixels + m0) * (size_t)s->out_c + group * (size_t)p->group_out_c + n0;
    (mr == 1 ? p->k->conv.igemm_1 : p->k->conv.igemm)(mr, nc, kc, ks, p->indirection + tile * ks * mr_max,
                     p->packed + group * p->packed_stride + n0 / nr * panel_floats, c, (size_t)s->out_c,
                     image * (size_t)(s->in_h * s->in_w * s->in_c) + group * (size_t)p->group_in_c, p->zero, &p->clamp);
    finish(job, c, mr, image * out_pixels + m0, group * (size_t)p->group_out_c + n0, nc);
    if (++tile < p->m_tiles) continue;
    tile = 0;
    if (++block < job->n_blocks) continue;
    block = 0;
    if (++group < (size_t)s->groups) continue;
    group = 0;
    ++image;
  }
}

static void run_igemm(edge_conv_plan *p, edge_threadpool *pool, const float *x, float *y,
                      const edge_f32_epilogue *epilogue) {
  const edge_conv_shape *s = &p->s;
  if (p->indirection_base != x) build_indirection(p, x);
  if (p->edge_columns) fill_patches(p, x);
  const size_t nr = p->k->conv.igemm_nr, kdim = (size_t)(p->taps * p->group_in_c);
  const size_t panel_bytes = (kdim + 1) * nr * sizeof(float);
  size_t block_columns = IGEMM_BLOCK_BYTES / panel_bytes * nr;
  if (block_columns < nr) block_columns = nr;
  const int32_t threads = pool ? edge_threadpool_size(pool) : 1;
  const size_t outer = (size_t)(s->batch * s->groups) * p->m_tiles, wanted = 4 * (size_t)threads;
  if (threads > 1 && outer * (((size_t)p->group_out_c + block_columns - 1) / block_columns) < wanted) {
    const size_t blocks = (wanted + outer - 1) / outer;
    const size_t columns = round_up(((size_t)p->group_out_c + blocks - 1) / blocks, nr);
    if (columns < block_columns) block_columns = columns;
  }
  conv_job job = {p, x, y, NULL, block_columns, ((size_t)p->group_out_c + block_columns - 1) / block_columns,
                  *epilogue};
  const double macs = (double)(s->batch * s->out_h * s->out_w * s->out_c) * (double)kdim;
  run_cells(pool, macs, (int64_t)(outer * job.n_blocks), igemm_cells, &job);
}

static void run_gemm(edge_conv_plan *p, edge_threadpool *pool, const float *x, float *y, const float *residual) {
  const edge_conv_shape *s = &p->s;
  const size_t pixels = (size_t)(s->batch * s->out_h * s->out_w);
  const size_t residual_c = (size_t)s->residual_c;
  for (int64_t grp = 0; grp < s->groups; ++grp) {
    /* The group's slice of the residual: its columns from the group's first output channel on. */
    const size_t first = (size_t)(grp * p->group_out_c);
    const edge_f32_residual slice = {residual && first < residual_c ? residual + first : NULL, residual_c,
                                     residual && first < residual_c ? residual_c - first : 0};
    edge_gemm_compute_residual(&p->k->gemm, pool, pixels, (size_t)p->group_out_c, (size_t)p->group_in_c,
                               x + grp * p->group_in_c, (size_t)s->in_c, p->packed + (size_t)grp * p->packed_stride,
                               y + grp * p->group_out_c, (size_t)s->out_c, &p->act, &slice);
  }
}

/* Depthwise with a channel multiplier reads input channel o / multiplier for output channel o;
 * repeating each input channel multiplier times turns it into multiplier 1. */
static void expand_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_job *job = arg;
  const edge_conv_plan *p = job->p;
  const int64_t cin = p->s.in_c, cout = p->s.out_c, mult = p->multiplier;
  for (int64_t pixel = begin; pixel < end; ++pixel)
    for (int64_t o = 0; o < cout; ++o) job->scratch[pixel * cout + o] = job->x[pixel * cin + o / mult];
}

static void dwconv_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const conv_job *job = arg;
  const edge_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const size_t row_floats = (size_t)s->out_c, image_floats = (size_t)(s->in_h * s->in_w) * row_floats;
  for (int64_t row = begin; row < end; ++row) {
    const size_t image = (size_t)(row / s->out_h), oh = (size_t)(row % s->out_h);
    float *out = job->y + (size_t)row * (size_t)s->out_w * row_floats;
    p->dwconv(row_floats, (size_t)s->out_w, (size_t)p->taps, p->indirection + oh * p->dw_row_pointers,
              p->dw_input_stride, p->dw_row_pitch, image * image_floats, p->zero, p->packed, out, row_floats,
              &p->clamp);
    finish(job, out, (size_t)s->out_w, (size_t)row * (size_t)s->out_w, 0, row_floats);
  }
}

static void run_dwconv(edge_conv_plan *p, edge_threadpool *pool, const float *x, float *y, float *scratch,
                       const edge_f32_epilogue *epilogue) {
  const edge_conv_shape *s = &p->s;
  conv_job job = {p, x, y, scratch, 0, 0, *epilogue};
  const float *base = x;
  if (p->multiplier > 1) {
    run_cells(pool, (double)(s->batch * s->in_h * s->in_w * s->out_c), s->batch * s->in_h * s->in_w, expand_cells,
              &job);
    base = scratch;
  }
  if (p->indirection_base != base) build_indirection(p, base);
  const double macs = (double)(s->batch * s->out_h * s->out_w * s->out_c * p->taps);
  run_cells(pool, macs, s->batch * s->out_h, dwconv_cells, &job);
}

/* One cell: tile_block tiles (of all images' tiles in order) through input transform, 36 GEMMs
 * and output transform, in the thread's own scratch. */
static void winograd_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  const conv_job *job = arg;
  const edge_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const edge_gemm_kernels *g = &p->k->gemm;
  const size_t cin = (size_t)s->in_c, cout = (size_t)s->out_c, block = p->tile_block;
  const size_t tiles_per_image = (size_t)(p->tiles_h * p->tiles_w), total = tiles_per_image * (size_t)s->batch;
  float *v = job->scratch + (size_t)thread * p->winograd_thread_floats;
  float *m = v + 36 * block * cin, *sink = m + 36 * block * cout;
  const edge_f32_minmax_params none = {-INFINITY, INFINITY};
  for (int64_t cell = begin; cell < end; ++cell) {
    const size_t first = (size_t)cell * block, count = total - first < block ? total - first : block;
    for (size_t b = 0; b < count; ++b) {
      const size_t tile = first + b, image = tile / tiles_per_image, local = tile % tiles_per_image;
      p->k->conv.winograd_input(cin, p->indirection + local * 36, image * (size_t)(s->in_h * s->in_w) * cin, p->zero,
                                v + b * cin, block * cin);
    }
    for (size_t i = 0; i < 36; ++i) {
      const float *a = v + i * block * cin, *w = p->packed + i * p->packed_stride;
      float *c = m + i * block * cout;
      for (size_t r = 0; r < count; r += g->mr) {
        const size_t rows = count - r < g->mr ? count - r : g->mr;
        (rows == 1 ? g->ukernel_1 : g->ukernel)(rows, cout, cin, a + r * cin, cin, w, c + r * cout, cout, &none);
      }
    }
    for (size_t b = 0; b < count; ++b) {
      const size_t tile = first + b, image = tile / tiles_per_image, local = tile % tiles_per_image;
      const int64_t oh0 = (int64_t)(local / (size_t)p->tiles_w) * 4, ow0 = (int64_t)(local % (size_t)p->tiles_w) * 4;
      float *outputs[16];
      for (int64_t j = 0; j < 16; ++j) {
        const int64_t oh = oh0 + j / 4, ow = ow0 + j % 4;
        outputs[j] = oh < s->out_h && ow < s->out_w
                         ? job->y + (((int64_t)image * s->out_h + oh) * s->out_w + ow) * s->out_c
                         : sink;
      }
      p->k->conv.winograd_output(cout, m + b * cout, block * cout, p->bias, outputs, &p->clamp);
      for (int64_t j = 0; j < 16; ++j)
        if (outputs[j] != sink)
          finish(job, outputs[j], 1, (size_t)(((int64_t)image * s->out_h + oh0 + j / 4) * s->out_w + ow0 + j % 4), 0,
                 cout);
    }
  }
}

static void run_winograd(edge_conv_plan *p, edge_threadpool *pool, const float *x, float *y, float *scratch,
                         const edge_f32_epilogue *epilogue) {
  const edge_conv_shape *s = &p->s;
  if (p->indirection_base != x) build_indirection(p, x);
  conv_job job = {p, x, y, scratch, 0, 0, *epilogue};
  const size_t total = (size_t)(p->tiles_h * p->tiles_w * s->batch);
  const double macs = (double)total * 36.0 * (double)(s->in_c * s->out_c);
  run_cells(pool, macs, (int64_t)((total + p->tile_block - 1) / p->tile_block), winograd_cells, &job);
}

/* out[n][oh][ow][group slice] = bias + sum over the taps (kh, kw) whose input pixel exists of
 * columns[n][ih][iw][(kh, kw, co)], taps in order: a gather, so rows split over threads freely. */
typedef struct {
  const edge_conv_plan *p;
  const float *columns;
  float *y;
  int64_t group;
} col2im_job;

static void col2im_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const col2im_job *job = arg;
  const edge_conv_plan *p = job->p;
  const edge_conv_shape *s = &p->s;
  const int64_t cout = p->group_out_c;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t image = row / s->out_h, oh = row % s->out_h;
    for (int64_t ow = 0; ow < s->out_w; ++ow) {
      float *out = job->y + ((image * s->out_h + oh) * s->out_w + ow) * s->out_c + job->group * cout;
      const float *bias = p->bias + job->group * cout;
      for (int64_t co = 0; co < cout; ++co) out[co] = bias[co];
      for (int64_t kh = 0; kh < s->kernel_h; ++kh) {
        const int64_t th = oh + s->pad_top - kh * s->dilation_h;
        if (th < 0 || th % s->stride_h) continue;
        const int64_t ih = th / s->stride_h;
        if (ih >= s->in_h) continue;
        for (int64_t kw = 0; kw < s->kernel_w; ++kw) {
          const int64_t tw = ow + s->pad_left - kw * s->dilation_w;
          if (tw < 0 || tw % s->stride_w) continue;
          const int64_t iw = tw / s->stride_w;
          if (iw >= s->in_w) continue;
          const float *col =
              job->columns + ((image * s->in_h + ih) * s->in_w + iw) * p->columns + (kh * s->kernel_w + kw) * cout;
          for (int64_t co = 0; co < cout; ++co) out[co] += col[co];
        }
      }
      for (int64_t co = 0; co < cout; ++co) {
        const float v = out[co] < p->clamp.min ? p->clamp.min : out[co];
        out[co] = v > p->clamp.max ? p->clamp.max : v;
      }
      if (edge_f32_epilogue_active(&p->epilogue))
        edge_f32_epilogue_rows(&p->epilogue, out, (size_t)cout, 1, 0, 0, (size_t)cout);
    }
  }
}

static void run_deconv(edge_conv_plan *p, edge_threadpool *pool, const float *x, float *y, float *scratch) {
  const edge_conv_shape *s = &p->s;
  const size_t pixels = (size_t)(s->batch * s->in_h * s->in_w);
  for (int64_t grp = 0; grp < s->groups; ++grp) {
    edge_gemm_compute(&p->k->gemm, pool, pixels, (size_t)p->columns, (size_t)p->group_in_c, x + grp * p->group_in_c,
                      (size_t)s->in_c, p->packed + (size_t)grp * p->packed_stride, scratch, (size_t)p->columns, NULL);
    col2im_job job = {p, scratch, y, grp};
    run_cells(pool, (double)pixels * (double)p->columns, s->batch * s->out_h, col2im_rows, &job);
  }
}

void edge_conv_plan_run(edge_conv_plan *plan, edge_threadpool *pool, const float *x, float *y, const float *residual,
                        void *scratch) {
  const edge_conv_shape *s = &plan->s;
  if (s->batch == 0 || s->out_h == 0 || s->out_w == 0 || s->out_c == 0) return;
  edge_f32_epilogue epilogue = plan->epilogue;
  if (residual && s->residual_c > 0)
    epilogue.residual = (edge_f32_residual){residual, (size_t)s->residual_c, (size_t)s->residual_c};
  switch (plan->method) {
    case EDGE_CONV_METHOD_GEMM: run_gemm(plan, pool, x, y, epilogue.residual.data); break;
    case EDGE_CONV_METHOD_IGEMM: run_igemm(plan, pool, x, y, &epilogue); break;
    case EDGE_CONV_METHOD_DWCONV: run_dwconv(plan, pool, x, y, scratch, &epilogue); break;
    case EDGE_CONV_METHOD_WINOGRAD: run_winograd(plan, pool, x, y, scratch, &epilogue); break;
    case EDGE_CONV_METHOD_DECONV: run_deconv(plan, pool, x, y, scratch); break;
  }
}

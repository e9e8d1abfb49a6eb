/* The vector kernel family: elementwise, activations, softmax, norms, reductions, pooling helpers,
 * transposes and the training kernels (gradients, batch norm, Adam), written once over simd.h (the files in kernels/vector/) and compiled per ISA; the table
 * for a level is filled by edge_vector_kernels_init (vector_config.c).
 *
 * Contracts shared by every kernel here: pointers need no alignment; a kernel reads and writes
 * exactly the n elements it is given (tails are masked or done lane by lane, never over-read);
 * unless stated, x == y (in place) is allowed. A NULL entry means "no fast kernel": the op keeps
 * its scalar reference path. At EDGE_ISA_SCALAR every entry is NULL, so EDGE_ISA=scalar runs the
 * ops' reference code unchanged. */
#ifndef EDGE_KERNELS_VECTOR_H
#define EDGE_KERNELS_VECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "schema_enums.h"

/* alpha/beta as in edge_unary_options (CLIP: alpha=min, beta=max; LEAKY_RELU/ELU: alpha;
 * HARD_SIGMOID: alpha*x+beta). */
typedef struct {
  float alpha, beta;
} edge_f32_unary_params;

/* y[i] = op(x[i]) for i < n. */
typedef void (*edge_f32_vunary_ukernel)(size_t n, const float *x, float *y, const edge_f32_unary_params *params);

/* Elementwise binary: vv  y[i] = a[i] op b[i]
 *                     vc  y[i] = a[i] op b[0]
 *                     rvc y[i] = b[0] op a[i]   (so a scalar first operand needs no second table)
 * y may alias a or b. */
typedef void (*edge_f32_vbinary_ukernel)(size_t n, const float *a, const float *b, float *y);

/* A reduction of x[0..n) to one value: sum, max ... (n == 0 gives the identity). */
typedef float (*edge_f32_rreduce_ukernel)(size_t n, const float *x);

/* Softmax (or log-softmax) of one contiguous row of n > 0 elements. */
typedef void (*edge_f32_softmax_ukernel)(size_t n, const float *x, float *y);

/* Softmax over `length` rows of `inner` contiguous elements spaced `stride` apart (an axis that is
 * not innermost): each column is one softmax, columns done side by side in vectors. */
typedef void (*edge_f32_softmax_strided_ukernel)(size_t length, size_t inner, size_t stride, const float *x,
                                                 float *y, int log);

/* y = (x - mean) / sqrt(var + epsilon) * scale + bias over one row of n > 0; scale / bias may be
 * NULL (absent), else n elements each. */
typedef void (*edge_f32_layernorm_ukernel)(size_t n, const float *x, const float *scale, const float *bias,
                                           float epsilon, float *y);

/* One query row's online-softmax step over a block of n keys: s[j] <- exp(x_j - m) with
 * x_j = softcap(scale * s[j]) + bias[j] (bias may be NULL; softcap 0: none), m the running max
 * (*max in and out), *correction = exp(old max - m); returns the block's sum. Contract and the
 * all-masked case in kernels/vector/f32-attention.c. */
typedef float (*edge_f32_attention_row_ukernel)(size_t n, float *s, float scale, float softcap, const float *bias,
                                                float *max, float *correction);

/* Column reduction: acc[i] = acc[i] op x[i] folded over `rows` rows of n elements spaced `stride`
 * apart (reductions over an outer axis, pooling windows). acc holds the running value on entry. */
typedef void (*edge_f32_raccumulate_ukernel)(size_t rows, size_t n, const float *x, size_t stride, float *acc);

/* Pooling of one NHWC output pixel: the window's taps inside the input are a rows x cols
 * rectangle from x, tap (r, c) at x + r * row_step + c * col_step, each `channels` contiguous
 * floats; y[j] = max over taps (NaN wins; -inf for no taps) or sum over taps / divisor. */
typedef void (*edge_f32_pool_ukernel)(size_t rows, size_t cols, const float *x, size_t row_step, size_t col_step,
                                      size_t channels, float *y, float divisor);

/* 32-bit element transpose of a rows x cols block: y[c * y_stride + r] = x[r * x_stride + c].
 * x and y must not overlap. */
typedef void (*edge_x32_transpose_ukernel)(size_t rows, size_t cols, const uint32_t *x, size_t x_stride,
                                           uint32_t *y, size_t y_stride);

/* Training gradients (kernels/vector/f32-grad.c), bit-identical to the ops' scalar references.
 * relu_grad: dx[i] = x[i] > 0 ? dy[i] : 0 * dy[i] (dx may alias dy, not x).
 * maxpool_grad: one max-pool window of `taps` real taps in scan order, tap t's channels at x[t] and
 * dx[t]: per channel, the first maximal tap (a NaN wins) gets dx[t][j] += dy[j]. */
typedef void (*edge_f32_vgrad_ukernel)(size_t n, const float *x, const float *dy, float *dx);
typedef void (*edge_f32_maxpool_grad_ukernel)(size_t taps, const float *const *x, float *const *dx, const float *dy,
                                              size_t channels);

/* BatchNorm over one block of `rows` rows of `channels` contiguous floats (kernels/vector/
 * f32-batchnorm.c; float sums in a fixed order that depends only on rows, channels and the ISA):
 * moments:    mean[c] = sum_r x[r][c] / rows, m2[c] = sum_r (x[r][c] - mean[c])^2 (rows >= 1)
 * grad_sums:  sum[c] = sum_r dy[r][c], dot[c] = sum_r dy[r][c] * (x[r][c] - mean[c])
 * affine:     y[r][c] = (x[r][c] - shift[c]) * mul[c] + add[c]  (y may alias x)
 * grad_apply: dx[r][c] = a[c] * dy[r][c] + (b[c] * (x[r][c] - mean[c]) + d[c])  (dx may alias dy)
 * Row r starts at r * channels; exactly rows * channels elements are read and written. */
typedef void (*edge_f32_channel_moments_ukernel)(size_t rows, size_t channels, const float *x, float *mean, float *m2);
typedef void (*edge_f32_channel_grad_sums_ukernel)(size_t rows, size_t channels, const float *x, const float *dy,
                                                   const float *mean, float *sum, float *dot);
typedef void (*edge_f32_channel_affine_ukernel)(size_t rows, size_t channels, const float *x, const float *shift,
                                                const float *mul, const float *add, float *y);
typedef void (*edge_f32_channel_grad_apply_ukernel)(size_t rows, size_t channels, const float *x, const float *dy,
                                                    const float *mean, const float *a, const float *b,
                                                    const float *d, float *dx);

/* Adam / AdamW over n values in float (kernels/vector/f32-adam.c; the op's reference runs in
 * double): p, m, v updated in place from g; correction1/2 = 1 - beta1^t, 1 - beta2^t. */
typedef struct {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, correction1, correction2, epsilon, weight_decay;
  int decoupled; /* AdamW */
} edge_f32_adam_params;
typedef void (*edge_f32_adam_ukernel)(size_t n, float *p, const float *g, float *m, float *v,
                                      const edge_f32_adam_params *params);

/* Bilinear samples over n channels (kernels/vector/f32-bilinear.c; ops/roi_align.c's reference):
 * corners[0..3] the four neighbours' channel rows, weights[0..3] theirs; ADD accumulates the
 * weighted sum into acc, MAX_FIRST writes the largest weighted corner, MAX keeps the larger of acc
 * and it. */
typedef enum { EDGE_BILINEAR_ADD = 0, EDGE_BILINEAR_MAX_FIRST = 1, EDGE_BILINEAR_MAX = 2 } edge_bilinear_mode;
typedef void (*edge_f32_bilinear_ukernel)(size_t n, const float *const *corners, const float *weights, float *acc,
                                          edge_bilinear_mode mode);
/* One output line of a bilinear resize of [W, C] rows (kernels/vector/f32-bilinear.c;
 * ops/resize.c's line path): for each of width pixels p, with a = row0, b = row1,
 * i0 = x0[p] * pixel_stride, i1 = x1[p] * pixel_stride and w = wx[p],
 *   out[p * channels + i] = (1-wy)(1-w) a[i0+i] + wy(1-w) b[i0+i] + (1-wy)w a[i1+i] + wy w b[i1+i]
 * summed in that order by multiply-adds. */
typedef void (*edge_f32_bilinear_line_ukernel)(size_t width, size_t channels, const float *row0, const float *row1,
                                               const int64_t *x0, const int64_t *x1, const float *wx, float wy,
                                               size_t pixel_stride, float *out);

/* Reductions the family provides (index into rreduce / raccumulate). */
typedef enum {
  EDGE_VREDUCE_SUM = 0,
  EDGE_VREDUCE_MAX = 1,    /* NaN wins, as in the scalar reference */
  EDGE_VREDUCE_MIN = 2,
  EDGE_VREDUCE_ABS_SUM = 3,
  EDGE_VREDUCE_SQUARE_SUM = 4,
  EDGE_VREDUCE_COUNT_
} edge_vreduce_kind;

/* int8 kernels (kernels/vector/s8-*.c); NULL at the scalar level like the rest.
 * maxpool: y[j] = clamp(max over the rows x cols real taps of x[tap][j], lo, hi), rows, cols >= 1
 *          (the edge_f32_pool_ukernel geometry; also REDUCE MAX over an outer axis with cols = 1). */
typedef void (*edge_s8_maxpool_ukernel)(size_t rows, size_t cols, const int8_t *x, size_t row_step, size_t col_step,
                                        size_t channels, int8_t *y, int8_t lo, int8_t hi);
/* acc[i] += x[r * stride + i] over r < rows (int32 column sums for int8 averages). */
typedef void (*edge_s8_raccumulate_ukernel)(size_t rows, size_t n, const int8_t *x, size_t stride, int32_t *acc);
/* int8 ADD / SUB over n elements of equal layout, the issue-4 add rule (mb negated for SUB):
 * y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(shift-1)) >> shift), lo, hi). */
typedef struct {
  int32_t zp_a, zp_b, zp_y, lo, hi;
  int32_t ma, mb, shift;
} edge_s8_vadd_params;
typedef void (*edge_s8_vadd_ukernel)(size_t n, const int8_t *a, const int8_t *b, int8_t *y,
                                     const edge_s8_vadd_params *params);
/* y[i] = clamp(zp + nearbyint(x[i] * inv_scale), -128, 127) (float32 product, ties to even, NaN -> zp). */
typedef void (*edge_s8_quantize_ukernel)(size_t n, const float *x, int8_t *y, float inv_scale, int32_t zero_point);
/* y[i] = table[x[i] + 128] over n elements (table: 256 entries, entry j the output for input j - 128). */
typedef void (*edge_s8_lut_ukernel)(size_t n, const int8_t *x, int8_t *y, const int8_t *table);
/* LayerNorm of one int8 row of n > 0 (kernels/vector/s8-layernorm.c states the arithmetic): gamma and
 * beta are n floats each (beta zeros when the model has none). x and y must not overlap partially. */
typedef struct {
  int32_t zp_x, zp_y;
  float scale_x, epsilon, inv_scale_y; /* inv_scale_y = 1.0f / s_y in float32 */
} edge_s8_layernorm_params;
typedef void (*edge_s8_layernorm_ukernel)(size_t n, const int8_t *x, int8_t *y, const float *gamma, const float *beta,
                                          const edge_s8_layernorm_params *params);
/* Product of two int8 activations as int16 differences (kernels/vector/s8-matmul.c states the
 * packing): c[i][j] = sum_k a[i][k] * b[k][j] (int32, exact) for i < m, j < n, over kp (even)
 * k; a: m rows of kp int16; b: ceil(n / 8) panels of [kp / 2][8][2] int16; c row stride c_stride. */
#define EDGE_S8_MATMUL_MAX_DEPTH 32768 /* kp * 255^2 < 2^31 */
typedef void (*edge_s8_matmul_ukernel)(size_t m, size_t n, size_t kp, const int16_t *a, const int16_t *b, int32_t *c,
                                       size_t c_stride);
/* Packing for it from row-major int8 with a zero point: pack_a writes m rows of kp = k rounded up to
 * even from a (row stride a_stride); pack_b writes the panels of a k x n matrix b (row stride
 * b_stride), zero past n and past k. */
typedef void (*edge_s8_matmul_pack_ukernel)(size_t rows, size_t cols, const int8_t *src, size_t stride,
                                            int32_t zero_point, int16_t *out);
/* y[i] = clamp(zero_point + ((int64)acc[i] * multiplier + 2^(shift-1)) >> shift, lo, hi) (requant.h's rule). */
typedef struct {
  int32_t multiplier, shift, zero_point, lo, hi;
} edge_s8_requantize_params;
typedef void (*edge_s8_requantize_ukernel)(size_t n, const int32_t *acc, int8_t *y,
                                           const edge_s8_requantize_params *params);
/* int8 softmax of one contiguous row of 1 <= n <= EDGE_S8_SOFTMAX_MAX_LENGTH, ops/qsoftmax.c's rule
 * (output scale 1/256, zero point -128); lut[d] (<= 65536) for d = max - x in [0, 255]. */
#define EDGE_S8_SOFTMAX_MAX_LENGTH 4096
typedef void (*edge_s8_softmax_ukernel)(size_t n, const int8_t *x, int8_t *y, const int32_t *lut);

typedef struct {
  const char *isa_name;                                        /* "avx512" ...; "scalar" when all NULL */
  edge_f32_vunary_ukernel unary[EDGE_UNARY_COUNT_];            /* indexed by edge_unary_kind */
  edge_f32_vbinary_ukernel binary_vv[EDGE_BINARY_COUNT_];      /* indexed by edge_binary_kind (float ops) */
  edge_f32_vbinary_ukernel binary_vc[EDGE_BINARY_COUNT_];
  edge_f32_vbinary_ukernel binary_rvc[EDGE_BINARY_COUNT_];
  edge_f32_rreduce_ukernel rreduce[EDGE_VREDUCE_COUNT_];
  edge_f32_raccumulate_ukernel raccumulate[EDGE_VREDUCE_COUNT_];
  edge_f32_softmax_ukernel softmax;
  edge_f32_softmax_ukernel log_softmax;
  edge_f32_softmax_strided_ukernel softmax_strided;
  edge_f32_layernorm_ukernel layernorm;
  edge_f32_layernorm_ukernel rmsnorm;                          /* y = x / rms(x) * scale + bias */
  edge_f32_attention_row_ukernel attention_row;
  edge_f32_pool_ukernel maxpool;
  edge_f32_pool_ukernel avgpool;
  edge_x32_transpose_ukernel transpose;
  edge_f32_vgrad_ukernel relu_grad;
  edge_f32_maxpool_grad_ukernel maxpool_grad;
  edge_f32_channel_moments_ukernel channel_moments;
  edge_f32_channel_grad_sums_ukernel channel_grad_sums;
  edge_f32_channel_affine_ukernel channel_affine;
  edge_f32_channel_grad_apply_ukernel channel_grad_apply;
  edge_f32_adam_ukernel adam;
  edge_f32_bilinear_ukernel bilinear;
  edge_f32_bilinear_line_ukernel bilinear_line;
  edge_s8_maxpool_ukernel s8_maxpool;
  edge_s8_raccumulate_ukernel s8_raccumulate_sum;
  edge_s8_vadd_ukernel s8_vadd;
  edge_s8_quantize_ukernel s8_quantize;
  edge_s8_lut_ukernel s8_lut;
  edge_s8_layernorm_ukernel s8_layernorm;
  edge_s8_matmul_ukernel s8_matmul;
  edge_s8_matmul_pack_ukernel s8_matmul_pack_a; /* (m, k, a, ...) */
  edge_s8_matmul_pack_ukernel s8_matmul_pack_b; /* (k, n, b, ...) */
  edge_s8_requantize_ukernel s8_requantize;
  edge_s8_softmax_ukernel s8_softmax;
} edge_vector_kernels;

#endif

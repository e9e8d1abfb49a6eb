/* The convolution kernel family: indirect GEMM (igemm), depthwise (dwconv) and Winograd F(4x4,3x3)
 * transforms, one signature per kind, a table per ISA level filled by edge_conv_kernels_init
 * (conv_config.c). The drivers that build indirection buffers, pack weights and split work over
 * threads are in conv_driver.c (conv_driver.h); CONV_2D / CONV_TRANSPOSE_2D (ops/conv.c) use them
 * above EDGE_ISA_SCALAR and keep their scalar reference at it.
 *
 * Indirection (XNNPACK's idea): instead of an im2col copy, a kernel gets, per output pixel and
 * kernel tap, a pointer to the input row of channels it reads; a tap that falls in the padding
 * points at `zero`, a buffer of zeros at least as long as a row. The pointers are built at prepare
 * from shapes alone, relative to a base, and `input_offset` (in floats) is added to every pointer
 * that is not `zero` at eval, so one buffer serves every batch image and group slice. */
#ifndef EDGE_KERNELS_CONV_H
#define EDGE_KERNELS_CONV_H

#include <stddef.h>

#include "params.h"


/* Indirect GEMM over one tile of up to MR output pixels and all nc output channels:
 *   c[m * c_stride + n] = clamp(w_bias[n] + sum_{t < ks} sum_{k < kc} a[t * MR + m][k] * W[t][k][n])
 * for m < mr (mr <= MR) and n < nc. a holds ks * MR row pointers, tap-major (rows m >= mr may
 * be read but are not stored, so they must be valid: the driver repeats the last row). A pointer equal to
 * `zero` is read as is; every other pointer is read at +input_offset floats.
 * w: packed exactly as edge_gemm_pack_weights packs a [ks * kc, nc] matrix (gemm.h): panels of NR
 * columns, each NR bias values then ks * kc rows of NR weights, the last panel zero-padded; the
 * kernel walks nc in NR panels, so a call covers every panel. kc, c_stride in floats. Sums run in
 * the same order for every mr and every panel, so results do not depend on the tiling. The 1 x NR
 * variant reads only a[t * MR] (same layout, MR of the full tile) and computes one row. */
typedef void (*edge_f32_igemm_ukernel)(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
                                       const float *w, float *c, size_t c_stride, size_t input_offset,
                                       const float *zero, const edge_f32_minmax_params *params);

/* Depthwise convolution of output_width consecutive output pixels, `channels` channels each:
 *   out[x][c] = clamp(bias[c] + sum_{t < taps} in_x_t[c] * w[t][c])
 * where, for a KxK kernel (t = r * K + k), in_x_t = input[x * input_stride + r * row_pitch + k]
 * (+input_offset unless it is `zero`). taps is 9 for the 3x3 kernels and 25 for the 5x5 ones (the
 * argument is then ignored), any value >= 1 for the generic one, which reads input[x *
 * input_stride + t] and ignores row_pitch. Stride and dilation live in the indirection, so one
 * kernel serves them all, in either of two layouts:
 *  - per pixel: input_stride = taps, row_pitch = K (each pixel's taps listed in order);
 *  - per output row, at horizontal dilation 1: row r holds the pointers of every input column the
 *    row's pixels read, input_stride = horizontal stride, row_pitch = the columns in a row.
 *    Neighbouring pixels share their columns' pointers, so the buffer is K * columns pointers per
 *    output row instead of K * K * output_width.
 * weights: per block of CT channels (CT = channel_tile of the table): CT biases then taps x CT
 * weights, zero-padded past `channels`. Output pixel x starts at output + x * output_stride.
 * Reads and writes exactly `channels` floats per row (tails are masked or lane by lane). */
typedef void (*edge_f32_dwconv_ukernel)(size_t channels, size_t output_width, size_t taps,
                                        const float *const *input, size_t input_stride, size_t row_pitch,
                                        size_t input_offset, const float *zero, const float *weights,
                                        float *output, size_t output_stride, const edge_f32_minmax_params *params);

/* Winograd F(4x4, 3x3) input transform of one 6x6 input tile: input[36] are its rows of channels
 * (row-major over the tile; `zero` for padding, others read at +input_offset); writes
 * V[i] = (B^T d B)[i] for the 36 positions i to output + i * output_stride, `channels` floats each. */
typedef void (*edge_f32_winograd_input_ukernel)(size_t channels, const float *const *input, size_t input_offset,
                                                const float *zero, float *output, size_t output_stride);

/* Winograd F(4x4, 3x3) output transform: M[i] = input + i * input_stride (i < 36, `channels`
 * floats each); writes clamp(A^T M A + bias) to output[j] for the 16 output pixels j (row-major),
 * `channels` floats each; pixels outside the image point at a sink the driver ignores. bias may be
 * NULL. */
typedef void (*edge_f32_winograd_output_ukernel)(size_t channels, const float *input, size_t input_stride,
                                                 const float *bias, float *const *output,
                                                 const edge_f32_minmax_params *params);

typedef struct {
  const char *isa_name;
  edge_f32_igemm_ukernel igemm;   /* tile mr x nr: the same as the GEMM family's at this level */
  edge_f32_igemm_ukernel igemm_1; /* 1 x nr, same packing and a layout: a tile's single last row */
  unsigned igemm_mr, igemm_nr;
  edge_f32_dwconv_ukernel dwconv_3x3; /* 9 taps (3x3 at any stride / dilation) */
  edge_f32_dwconv_ukernel dwconv_5x5; /* 25 taps */
  /* 3x3 / 5x5 with horizontal stride and dilation 1 (vertical ones free): neighbouring output
   * pixels share input columns, which these load once; same results as dwconv_3x3 / 5x5. */
  edge_f32_dwconv_ukernel dwconv_3x3_s1;
  edge_f32_dwconv_ukernel dwconv_5x5_s1;
  /* the same at horizontal stride 2 (dilation 1): pixel x + 1's first column is pixel x's last */
  edge_f32_dwconv_ukernel dwconv_3x3_s2;
  edge_f32_dwconv_ukernel dwconv_5x5_s2;
  edge_f32_dwconv_ukernel dwconv_any; /* any tap count */
  unsigned dwconv_channel_tile;
  edge_f32_winograd_input_ukernel winograd_input;
  edge_f32_winograd_output_ukernel winograd_output;
} edge_conv_kernels;

#endif

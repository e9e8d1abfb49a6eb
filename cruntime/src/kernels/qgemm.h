/* The int8 (qs8) GEMM family: int8 x int8 -> int32 accumulators -> int8 (requantized) or float
 * (dynamic mode), as plain GEMM, indirect GEMM (convolution without im2col) and depthwise.
 *
 * Arithmetic (requant.h): for output column n
 *     acc[n] = bias[n] + sum_k (x[k] - zp_x) * w[n][k]                    (int32, exact)
 *     int8 mode:    y = clamp(zp_y + requantize(acc, m[n], shift[n]), qmin, qmax)
 *     dynamic mode: y = clamp((float)acc * (row_scale * w_scale[n]) + fbias[n], min, max)   (zp_x = 0)
 * Packing folds -zp_x * sum_k w[n][k] into the int32 bias (and, for kernels that feed x + 128 to an
 * unsigned x signed dot product such as vpdpbusd, another -128 * sum_k w[n][k]). Every kernel sums
 * exact integers, so all ISAs and all tilings and thread counts give the same bytes; the dynamic
 * epilogue is done in the same float steps everywhere (no FMA: the qs8 files build with
 * -ffp-contract=off), so it is bit-identical too.
 *
 * Range: the pack functions refuse (EDGE_UNSUPPORTED) a layer whose worst-case accumulator
 * |bias| + ks * kc * 256 * 128 does not fit int32 (kdim up to about 65000 with small biases), so no
 * kernel ever wraps and the result is the exact integer the reference computes.
 *
 * Packed weights (what edge_qs8_*_pack write and every kernel of the table reads; opaque to ops):
 * ceil(n / NR) panels one after another, each
 *     int32  bias[NR]                       folded bias (zero past n)
 *     int8   w[ks][ceil(kc / KR)][NR][KR]   tap t, k-group g, column j, k = g*KR + i  (zero padded)
 *     int32  multiplier[NR], shift[NR]      int8 mode      \ the epilogue, read after the sums
 *     float  scale[NR], bias[NR]            dynamic mode   /
 * (edge_qs8_gemm_panel_bytes). Each tap's k is padded separately, so a kernel never needs a k
 * group spanning two input rows. No alignment is required of packed data, A or C.
 *
 * What kernels read: row pointers / rows of A for exactly kc bytes (never past: k tails are loaded
 * piecewise), the panels they walk, and nothing else; they write exactly mr x nc outputs.
 *
 * Tables: one per ISA level (qs8.h), the qs8 part of edge_kernel_config (config.h); ops read it at
 * prepare.
 *   level       GEMM / IGEMM tile                    depthwise
 *   scalar      4x4, k group 1 (the reference)       1 channel, int8 weights (the reference)
 *   sse2        4x4c4, pmaddwd                       scalar's
 *   avx2        4x8c4, vpmaddwd                      16 channels, tap pairs through vpmaddwd; 3x3s1
 *                                                    on shared input columns
 *   avx512      4x32c4, vpmaddwd (AVX-512BW)         32 channels, tap pairs through vpmaddwd
 *   avx512vnni  8x32c4, vpdpbusd on x + 128          32 channels, tap pairs through vpdpwssd
 *   neon        4x8, smlal by lane                   8 channels, smull + saddw
 *   neondot     4x8c4, sdot by lane                  neon's
 * The scalar, sse2 and avx2 GEMM / IGEMM tiles are one template (qs8-gemm-tile.h over simd-qs8.h's
 * int8 words); avx512 and avx512vnni share avx512/qs8-gemm-avx512.h; neon and neondot share
 * neon/qs8-neon.h's epilogue. Every one is tested byte for byte against the spec formula
 * (tests/c/test_kernels_qgemm.c). */
#ifndef EDGE_KERNELS_QGEMM_H
#define EDGE_KERNELS_QGEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conv_driver.h"
#include "qs8.h"
#include "common.h"
#include "isa.h"
#include "params.h"
#include "requant.h"

/* ---- packing (prepare) ---- */

/* Bytes of one panel for ks taps of kc, and of the whole packed B for n columns (a multiple of 64). */
size_t edge_qs8_gemm_panel_bytes(const edge_qs8_kernels *k, size_t ks, size_t kc);
size_t edge_qs8_gemm_packed_bytes(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc);

/* B[kk][j] = w[j * w_n_stride + kk * w_k_stride], kk < ks * kc (kk = t * kc + c: OHWI conv
 * weights [out][kh][kw][cin_g] are w_n_stride = ks * kc, w_k_stride = 1; FULLY_CONNECTED [N][K]
 * likewise with ks = 1; a constant MatMul B [K][N] is w_n_stride = 1, w_k_stride = N).
 * int8 mode: bias int32 (NULL: zeros), input_zero_point zp_x, multiplier/shift per column (from
 * edge_quantize_multiplier). EDGE_UNSUPPORTED with a message when the accumulator range does not
 * fit int32 (see above), EDGE_INVALID_ARGUMENT for a shift outside [1, 62]. */
edge_status edge_qs8_gemm_pack(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc, const int8_t *w,
                               size_t w_n_stride, size_t w_k_stride, const int32_t *bias, int32_t input_zero_point,
                               const int32_t *multiplier, const int32_t *shift, void *packed);
/* Dynamic mode: zp_x = 0; weight_scale[n] (s_w per column) and float bias (NULL: zeros). */
edge_status edge_qs8_gemm_pack_dynamic(const edge_qs8_kernels *k, size_t n, size_t ks, size_t kc, const int8_t *w,
                                       size_t w_n_stride, size_t w_k_stride, const float *weight_scale,
                                       const float *bias, void *packed);

/* Depthwise packing, per block of CT channels: int32 bias[CT], the weights, then
 * int32 multiplier[CT], shift[CT] (int8) or float scale[CT], bias[CT] (dynamic); zero past
 * `channels`. w[c * taps + t] (OHWI depthwise weights [C][kh][kw][1]). The weights are
 *   EDGE_QS8_DWCONV_INT8:        int8 w[taps][CT]
 *   EDGE_QS8_DWCONV_INT16_PAIRS: for each pair of taps (2p, 2p + 1; a missing last tap has weight 0)
 *     two halves of CT / 2 int32 lanes, each lane the int16 pair (w[2p][ch], w[2p + 1][ch]); lane i
 *     of the first half is channel 8 * (i / 4) + i % 4, of the second 8 * (i / 4) + 4 + i % 4: the
 *     order vpunpcklwd / vpunpckhwd give two rows of int16 channels, so one vpmaddwd (or vpdpwssd)
 *     adds two taps of CT / 2 channels. */
size_t edge_qs8_dwconv_packed_bytes(const edge_qs8_kernels *k, size_t channels, size_t taps);
edge_status edge_qs8_dwconv_pack(const edge_qs8_kernels *k, size_t channels, size_t taps, const int8_t *w,
                                 const int32_t *bias, int32_t input_zero_point, const int32_t *multiplier,
                                 const int32_t *shift, void *packed);
edge_status edge_qs8_dwconv_pack_dynamic(const edge_qs8_kernels *k, size_t channels, size_t taps, const int8_t *w,
                                         const float *weight_scale, const float *bias, void *packed);

/* ---- threaded drivers (eval: no allocation, no checks) ---- */

/* C[m x n] int8 = requant(A[m x kdim] int8 * packed): A row i at a + i * a_stride bytes, C row i
 * at c + i * c_stride bytes. Split over fixed (N block x row tile) cells like edge_gemm_compute;
 * identical bytes for any thread count. pool may be NULL. */
void edge_qs8_gemm_compute(const edge_qs8_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                           const int8_t *a, size_t a_stride, const void *packed, int8_t *c, size_t c_stride,
                           const edge_qs8_requant_params *params);
/* Dynamic mode: C float, row i scaled by row_scale[i * row_scale_stride]; act may be NULL; RELU,
 * RELU6 and CLIP are fused, others applied to each tile after it is computed. */
void edge_qs8_gemm_dynamic_compute(const edge_qs8_kernels *k, edge_threadpool *pool, size_t m, size_t n,
                                   size_t kdim, const int8_t *a, size_t a_stride, const void *packed, float *c,
                                   size_t c_stride, const float *row_scale, size_t row_scale_stride,
                                   const edge_activation *act);

/* The float clamp of a fused activation for the dq kernels (RELU, RELU6, CLIP); any other
 * activation comes back in *after, to be applied to the outputs (edge_activation_apply). */
void edge_qs8_dq_activation(const edge_activation *act, edge_qs8_dq_params *dq, const edge_activation **after);

/* Convolution plans (the int8 twin of conv_driver.h; same edge_conv_shape, not transposed):
 * GEMM for 1x1 / stride 1 / no padding, DWCONV for one input channel per group (any channel
 * multiplier), IGEMM (indirection, no im2col) for the rest, groups over their channel slices;
 * an IGEMM with one group and fewer than 8 input channels (RGB stems) instead copies its patches
 * into scratch (im2col, k = kh * kw * in_c padded to whole k groups) and runs the GEMM kernels.
 * weights OHWI int8 [out_c][kh][kw][in_c / groups]. int8 mode: bias int32 per out channel (NULL:
 * zeros), zp_x, per-channel multiplier/shift, out params. Dynamic mode: per-channel weight scale,
 * float bias, fused activation; the input is int8 quantized symmetrically with ONE scale given
 * to run. create returns EDGE_OUT_OF_MEMORY / the pack's status, with the message set. */
typedef struct edge_qs8_conv_plan edge_qs8_conv_plan;
edge_status edge_qs8_conv_plan_create(const edge_qs8_kernels *k, const edge_conv_shape *shape, const int8_t *weights,
                                      const int32_t *bias, int32_t input_zero_point, const int32_t *multiplier,
                                      const int32_t *shift, const edge_qs8_requant_params *out,
                                      edge_qs8_conv_plan **plan);
edge_status edge_qs8_conv_plan_create_dynamic(const edge_qs8_kernels *k, const edge_conv_shape *shape,
                                              const int8_t *weights, const float *weight_scale, const float *bias,
                                              const edge_activation *act, edge_qs8_conv_plan **plan);
void edge_qs8_conv_plan_free(edge_qs8_conv_plan *plan);
edge_conv_method edge_qs8_conv_plan_method(const edge_qs8_conv_plan *plan);
/* Scratch bytes run needs (depthwise with a channel multiplier expands the input there). */
size_t edge_qs8_conv_plan_scratch_bytes(const edge_qs8_conv_plan *plan);
size_t edge_qs8_conv_plan_kept_bytes(const edge_qs8_conv_plan *plan);
/* y = conv(x): int8 y in int8 mode; float y in dynamic mode, where x_scale is the input's scale. */
void edge_qs8_conv_plan_run(edge_qs8_conv_plan *plan, edge_threadpool *pool, const int8_t *x, void *y,
                            float x_scale, void *scratch);

#endif

/* The fp32 GEMM family: C[m][n] = act(bias[n] + sum_k A[m][k] * B[k][n]).
 *
 * Micro-kernels compute an MR x NR register tile over a packed B panel; the driver (gemm.c) packs
 * B once (at prepare for constant weights), splits C into (M tiles x N blocks) over the thread pool
 * and applies activations the kernels cannot fuse. A table per ISA level is filled by
 * edge_gemm_kernels_init (config.h); FULLY_CONNECTED, BATCH_MATMUL, LSTM/GRU and the 1x1 / igemm
 * convolutions (conv.h packs with the same layout) read it.
 *
 * Packed B layout (what edge_gemm_pack_weights* write and every kernel reads): ceil(n / NR)
 * panels, one after another; a panel is NR bias values followed by kdim rows of NR weights
 * (row k holds B[k][n0 .. n0 + NR)); columns past n in the last panel are zero (bias too).
 *
 * Summation order: every output starts from its bias and adds a[k] * b[k] for k = 0 .. kdim-1 in
 * order, one multiply-add at a time (fused on avx2/avx512/neon, a rounded product then a sum on
 * scalar/sse2), whatever the tile, the row count mr or the panel. So results never depend on how
 * the driver tiles or threads the work, and sse2 matches scalar bit for bit. */
#ifndef EDGE_KERNELS_GEMM_H
#define EDGE_KERNELS_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "isa.h"
#include "params.h"
#include "vector.h"

/* One row tile: rows m < mr (1 <= mr <= MR) of A (row m at a + m * a_stride floats, kc floats
 * read), all nc >= 1 columns of the packed B starting at panel w (the kernel walks ceil(nc / NR)
 * panels of kc rows each), c row m at c + m * c_stride floats. Writes exactly mr x nc floats,
 * clamped to [params->min, params->max]. Reads nothing outside the mr A rows and the panels;
 * no alignment is required of a, c or w. */
typedef void (*edge_f32_gemm_ukernel)(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                      const float *w, float *c, size_t c_stride,
                                      const edge_f32_minmax_params *params);

typedef struct {
  edge_f32_gemm_ukernel ukernel;   /* MR x NR */
  edge_f32_gemm_ukernel ukernel_1; /* 1 x NR, same NR and packing: used for single rows (GEMV) */
  uint32_t mr, nr;
  const char *name;                /* e.g. "f32_gemm_minmax_8x32__avx512" */
  edge_isa_level isa;
} edge_gemm_kernels;

/* Bytes of the packed B for an n x kdim product (a multiple of 64). */
size_t edge_gemm_packed_bytes(const edge_gemm_kernels *k, size_t n, size_t kdim);

/* Packs B given transposed, w[j * w_row_stride + kk] = B[kk][j] (FULLY_CONNECTED's [out][in]
 * weights, MatMul with transpose_b). bias: n floats, NULL for zeros. packed: edge_gemm_packed_bytes. */
void edge_gemm_pack_weights(const edge_gemm_kernels *k, size_t n, size_t kdim, const float *w, size_t w_row_stride,
                            const float *bias, void *packed);
/* Packs B given as is, w[kk * w_row_stride + j] = B[kk][j] (MatMul, ONNX Gemm layout, conv HWIO). */
void edge_gemm_pack_weights_kn(const edge_gemm_kernels *k, size_t n, size_t kdim, const float *w,
                               size_t w_row_stride, const float *bias, void *packed);

/* C = act(A * B + bias): A is m x kdim (row i at a + i * a_stride floats), C is m x n (row i at
 * c + i * c_stride). act may be NULL (identity); RELU, RELU6 and CLIP are fused in the kernel,
 * any other activation is applied to each tile right after it is computed. pool may be NULL (one
 * thread). Work is split over fixed (M tile x N block) cells; results are identical for any
 * thread count. */
void edge_gemm_compute(const edge_gemm_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                       const float *a, size_t a_stride, const void *packed, float *c, size_t c_stride,
                       const edge_activation *act);

/* A residual added to a product's outputs before its activation (a convolution with a fused
 * skip connection): output (row i, column j) gets data[i * stride + j] for j < columns; the
 * columns past it get nothing (a residual with fewer channels, zero-padded at the end). */
typedef struct {
  const float *data;
  size_t stride, columns;
} edge_f32_residual;

/* What runs on a tile after the kernel, while it is in cache: the residual (when there is one),
 * then the activation the kernel did not fuse. */
typedef struct {
  edge_f32_residual residual;               /* data NULL: none */
  edge_f32_vbinary_ukernel add;
  edge_activation act;                      /* IDENTITY: none left to apply */
  edge_f32_vunary_ukernel act_kernel;       /* its vector kernel, or NULL for the scalar definition */
  edge_f32_unary_params act_params;
} edge_f32_epilogue;

/* Fills *e for act (NULL: identity) and a residual of residual_columns columns (0: none; the caller
 * sets e->residual before running, since its address changes between runs) and returns the clamp
 * the kernel applies itself: RELU, RELU6 and CLIP when no residual must come first, else none.
 * Adding in the epilogue and then activating gives the same floats as a separate ADD op after the
 * product (one rounded addition per element either way). */
edge_f32_minmax_params edge_f32_epilogue_init(edge_f32_epilogue *e, edge_isa_level isa, const edge_activation *act,
                                              size_t residual_columns);
/* Whether edge_f32_epilogue_rows has anything to do. */
static inline bool edge_f32_epilogue_active(const edge_f32_epilogue *e) {
  return e->residual.data || e->act.op != EDGE_UNARY_IDENTITY;
}
/* Runs the epilogue on `rows` rows of nc outputs, row r at c + r * c_stride: output rows row0 ..,
 * columns col0 .. col0 + nc of the product (what locates the residual). */
void edge_f32_epilogue_rows(const edge_f32_epilogue *e, float *c, size_t c_stride, size_t rows, size_t row0,
                            size_t col0, size_t nc);

/* edge_gemm_compute with C = act(A * B + bias + residual); residual may be NULL. */
void edge_gemm_compute_residual(const edge_gemm_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                                const float *a, size_t a_stride, const void *packed, float *c, size_t c_stride,
                                const edge_activation *act, const edge_f32_residual *residual);

#define EDGE_DECLARE_F32_GEMM(name)                                                                     \
  void name(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride, const float *w, float *c,  \
            size_t c_stride, const edge_f32_minmax_params *params);

EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_4x4__scalar)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_1x4__scalar)
#if defined(__x86_64__) || defined(_M_X64)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_4x8__sse2)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_1x8__sse2)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_6x16__avx2)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_1x16__avx2)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_8x32__avx512)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_1x32__avx512)
#endif
#if defined(__aarch64__)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_8x8__neon)
EDGE_DECLARE_F32_GEMM(edge_f32_gemm_minmax_ukernel_1x8__neon)
#endif

#endif

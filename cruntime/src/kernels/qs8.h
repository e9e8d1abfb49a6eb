/* The qs8 family's kernel signatures, its table (edge_qs8_kernels: the qs8 part of each level's
 * edge_kernel_config, filled by edge_qs8_kernels_init in qgemm_config.c) and its kernels by name.
 * The arithmetic, the packed layouts and the drivers are in qgemm.h. */
#ifndef EDGE_KERNELS_QS8_H
#define EDGE_KERNELS_QS8_H

#include <stddef.h>
#include <stdint.h>

#include "isa.h"

/* int8-mode epilogue constants (per output tensor). qmin/qmax already narrowed by a fused
 * activation (RELU: [zp_y, 127] ...), -128 <= qmin <= qmax <= 127. */
typedef struct {
  int32_t zero_point, qmin, qmax;
} edge_qs8_requant_params;

/* Dynamic-mode epilogue: scale of row m is row_scale[m * row_scale_stride] (stride 0: one scale
 * for every row, e.g. a whole quantized conv input); the float clamp is the fused activation. */
typedef struct {
  const float *row_scale;
  size_t row_scale_stride;
  float min, max;
} edge_qs8_dq_params;

/* ---- micro-kernel contracts ---- */

/* GEMM tile: rows m < mr (1 <= mr <= MR) of A (row m at a + m * a_stride, kc bytes read), all
 * nc >= 1 columns starting at panel w (walks ceil(nc / NR) panels of one tap), output row m at
 * c + m * c_stride elements. The dq variant's params->row_scale points at the tile's first row. */
typedef void (*edge_qs8_gemm_ukernel)(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride,
                                      const void *w, int8_t *c, size_t c_stride,
                                      const edge_qs8_requant_params *params);
typedef void (*edge_qs8_gemm_dq_ukernel)(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride,
                                         const void *w, float *c, size_t c_stride, const edge_qs8_dq_params *params);

/* Indirect GEMM tile (as conv.h's f32 igemm): a holds ks * MR row pointers, tap-major; rows m >= mr
 * may be read but are not stored, so they must be valid (the driver repeats the last real row). A pointer equal to `zero` (a buffer
 * of at least kc bytes holding zp_x) is read as is, every other one at +input_offset bytes.
 * Packed with ks taps of kc. */
typedef void (*edge_qs8_igemm_ukernel)(size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
                                       const void *w, int8_t *c, size_t c_stride, size_t input_offset,
                                       const int8_t *zero, const edge_qs8_requant_params *params);
typedef void (*edge_qs8_igemm_dq_ukernel)(size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
                                          const void *w, float *c, size_t c_stride, size_t input_offset,
                                          const int8_t *zero, const edge_qs8_dq_params *params);

/* Depthwise: output_width pixels of `channels` channels; pixel x's taps are
 * input[x * input_stride + t] (t < taps; +input_offset bytes unless `zero`, which holds zp_x and is
 * at least `channels` bytes). weights: edge_qs8_dwconv_pack's layout. Output pixel x at
 * output + x * output_stride elements. The dq variant applies params->row_scale[0] to every pixel. */
typedef void (*edge_qs8_dwconv_ukernel)(size_t channels, size_t output_width, size_t taps,
                                        const int8_t *const *input, size_t input_stride, size_t input_offset,
                                        const int8_t *zero, const void *weights, int8_t *output,
                                        size_t output_stride, const edge_qs8_requant_params *params);
typedef void (*edge_qs8_dwconv_dq_ukernel)(size_t channels, size_t output_width, size_t taps,
                                           const int8_t *const *input, size_t input_stride, size_t input_offset,
                                           const int8_t *zero, const void *weights, float *output,
                                           size_t output_stride, const edge_qs8_dq_params *params);

/* How depthwise weights sit between a block's bias and its epilogue words (see edge_qs8_dwconv_pack). */
typedef enum {
  EDGE_QS8_DWCONV_INT8 = 0,       /* int8 w[taps][CT] */
  EDGE_QS8_DWCONV_INT16_PAIRS = 1 /* int16 tap pairs in the vpmaddwd lane order */
} edge_qs8_dwconv_layout;

typedef struct {
  edge_isa_level isa;
  const char *name;         /* e.g. "qs8_gemm_8x32c4__avx512vnni" */
  uint32_t mr, nr, kr;      /* tile rows, panel columns, k group */
  int32_t input_offset_128; /* 1: kernels compute with x + 128 (unsigned); pack folds -128 * sum w */
  /* [0]: MR x NR, [1]: 1 x NR (same packing; used for single rows) */
  edge_qs8_gemm_ukernel gemm[2];
  edge_qs8_gemm_dq_ukernel gemm_dq[2];
  edge_qs8_igemm_ukernel igemm[2];
  edge_qs8_igemm_dq_ukernel igemm_dq[2];
  /* depthwise: channel tile CT; taps any >= 1; weight layout (edge_qs8_dwconv_pack) */
  uint32_t dwconv_channel_tile;
  edge_qs8_dwconv_layout dwconv_layout;
  edge_qs8_dwconv_ukernel dwconv;
  edge_qs8_dwconv_dq_ukernel dwconv_dq;
  /* 3x3 at unit horizontal stride and dilation (NULL: dwconv serves it): neighbouring output
   * pixels share input columns, which these load once; the same bytes as dwconv. */
  edge_qs8_dwconv_ukernel dwconv_3x3s1;
  edge_qs8_dwconv_dq_ukernel dwconv_dq_3x3s1;
} edge_qs8_kernels;

/* ---- kernels by name (qgemm_config.c lists them per level) ---- */

#define EDGE_DECLARE_QS8_GEMM(tile, isa)                                                                          \
  void edge_qs8_gemm_ukernel_##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride,  \
                                             const void *w, int8_t *c, size_t c_stride,                          \
                                             const edge_qs8_requant_params *params);                             \
  void edge_qs8_gemm_dq_ukernel_##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a,                 \
                                                size_t a_stride, const void *w, float *c, size_t c_stride,       \
                                                const edge_qs8_dq_params *params);                               \
  void edge_qs8_igemm_ukernel_##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a, \
                                              const void *w, int8_t *c, size_t c_stride, size_t input_offset,    \
                                              const int8_t *zero, const edge_qs8_requant_params *params);        \
  void edge_qs8_igemm_dq_ukernel_##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks,                      \
                                                 const int8_t *const *a, const void *w, float *c,                \
                                                 size_t c_stride, size_t input_offset, const int8_t *zero,       \
                                                 const edge_qs8_dq_params *params);
#define EDGE_DECLARE_QS8_DWCONV(isa)                                                                              \
  void edge_qs8_dwconv_ukernel__##isa(size_t channels, size_t output_width, size_t taps,                         \
                                      const int8_t *const *input, size_t input_stride, size_t input_offset,      \
                                      const int8_t *zero, const void *weights, int8_t *output,                   \
                                      size_t output_stride, const edge_qs8_requant_params *params);              \
  void edge_qs8_dwconv_dq_ukernel__##isa(size_t channels, size_t output_width, size_t taps,                      \
                                         const int8_t *const *input, size_t input_stride, size_t input_offset,   \
                                         const int8_t *zero, const void *weights, float *output,                 \
                                         size_t output_stride, const edge_qs8_dq_params *params);

EDGE_DECLARE_QS8_GEMM(4x4, scalar)
EDGE_DECLARE_QS8_GEMM(1x4, scalar)
EDGE_DECLARE_QS8_DWCONV(scalar)
#if defined(__x86_64__) || defined(_M_X64)
EDGE_DECLARE_QS8_GEMM(4x4c4, sse2)
EDGE_DECLARE_QS8_GEMM(1x4c4, sse2)
EDGE_DECLARE_QS8_GEMM(4x8c4, avx2)
EDGE_DECLARE_QS8_GEMM(1x8c4, avx2)
EDGE_DECLARE_QS8_GEMM(4x32c4, avx512)
EDGE_DECLARE_QS8_GEMM(1x32c4, avx512)
EDGE_DECLARE_QS8_GEMM(8x32c4, avx512vnni)
EDGE_DECLARE_QS8_GEMM(1x32c4, avx512vnni)
EDGE_DECLARE_QS8_DWCONV(avx2)
void edge_qs8_dwconv_3x3s1_ukernel__avx2(size_t channels, size_t output_width, size_t taps, const int8_t *const *input,
                                         size_t input_stride, size_t input_offset, const int8_t *zero,
                                         const void *weights, int8_t *output, size_t output_stride,
                                         const edge_qs8_requant_params *params);
void edge_qs8_dwconv_3x3s1_dq_ukernel__avx2(size_t channels, size_t output_width, size_t taps,
                                            const int8_t *const *input, size_t input_stride, size_t input_offset,
                                            const int8_t *zero, const void *weights, float *output,
                                            size_t output_stride, const edge_qs8_dq_params *params);
EDGE_DECLARE_QS8_DWCONV(avx512)
EDGE_DECLARE_QS8_DWCONV(avx512vnni)
#endif
#if defined(__aarch64__)
EDGE_DECLARE_QS8_GEMM(4x8, neon)
EDGE_DECLARE_QS8_GEMM(1x8, neon)
EDGE_DECLARE_QS8_GEMM(4x8c4, neondot)
EDGE_DECLARE_QS8_GEMM(1x8c4, neondot)
EDGE_DECLARE_QS8_DWCONV(neon)
#endif

#endif

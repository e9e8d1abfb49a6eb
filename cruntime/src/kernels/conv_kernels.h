/* Every convolution micro-kernel by name (contracts in conv.h), so conv_config.c and the tests can
 * list them. Names: edge_f32_<kind>_<epilogue>_ukernel_<tile>__<isa>. */
#ifndef EDGE_KERNELS_CONV_KERNELS_H
#define EDGE_KERNELS_CONV_KERNELS_H

#include "conv.h"

#define EDGE_DECLARE_F32_IGEMM(name)                                                                           \
  void name(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a, const float *w, float *c,        \
            size_t c_stride, size_t input_offset, const float *zero, const edge_f32_minmax_params *params);
#define EDGE_DECLARE_F32_DWCONV(name)                                                                          \
  void name(size_t channels, size_t output_width, size_t taps, const float *const *input, size_t input_stride, \
            size_t row_pitch, size_t input_offset, const float *zero, const float *weights, float *output,          \
            size_t output_stride, const edge_f32_minmax_params *params);
#define EDGE_DECLARE_F32_WINOGRAD_INPUT(name)                                                                  \
  void name(size_t channels, const float *const *input, size_t input_offset, const float *zero, float *output, \
            size_t output_stride);
#define EDGE_DECLARE_F32_WINOGRAD_OUTPUT(name)                                                                 \
  void name(size_t channels, const float *input, size_t input_stride, const float *bias, float *const *output, \
            const edge_f32_minmax_params *params);

/* Hand-written igemm tiles, one per ISA folder (the GEMM family's tiles). */
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_4x4__scalar)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_1x4__scalar)
#if defined(__x86_64__) || defined(_M_X64)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_4x8__sse2)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_1x8__sse2)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_6x16__avx2)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_1x16__avx2)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_8x32__avx512)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_1x32__avx512)
#endif
#if defined(__aarch64__)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_8x8__neon)
EDGE_DECLARE_F32_IGEMM(edge_f32_igemm_minmax_ukernel_1x8__neon)
#endif

/* Depthwise and Winograd kernels, written once over simd.h (kernels/vector/f32-dwconv.c,
 * f32-winograd.c) and compiled per vector ISA. */
#define EDGE_DECLARE_CONV_VECTOR_KERNELS(isa)                                         \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_3x3__##isa)                  \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_5x5__##isa)                  \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_3x3s1__##isa)                \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_5x5s1__##isa)                \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_3x3s2__##isa)                \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_5x5s2__##isa)                \
  EDGE_DECLARE_F32_DWCONV(edge_f32_dwconv_minmax_ukernel_any__##isa)                  \
  EDGE_DECLARE_F32_WINOGRAD_INPUT(edge_f32_winograd_input_ukernel_4x4_3x3__##isa)     \
  EDGE_DECLARE_F32_WINOGRAD_OUTPUT(edge_f32_winograd_output_ukernel_4x4_3x3__##isa)

EDGE_DECLARE_CONV_VECTOR_KERNELS(scalar)
#if defined(__x86_64__) || defined(_M_X64)
EDGE_DECLARE_CONV_VECTOR_KERNELS(sse2)
EDGE_DECLARE_CONV_VECTOR_KERNELS(avx2)
EDGE_DECLARE_CONV_VECTOR_KERNELS(avx512)
#endif
#if defined(__aarch64__)
EDGE_DECLARE_CONV_VECTOR_KERNELS(neon)
#endif

#endif

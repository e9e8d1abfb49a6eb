/* The convolution family's table per ISA level (conv.h), chosen here once; the drivers and ops
 * only read it. igemm tiles equal the GEMM family's at the same level (gemm.h), so 1x1, igemm and
 * Winograd weights all use edge_gemm_pack_weights; depthwise and Winograd kernels come from the
 * vector build of the same ISA (channel tile = its vector width). neondot has no float kernels of
 * its own and uses neon's. */
#include "config.h"
#include "conv_kernels.h"

#define CONV_VECTOR_ENTRIES(isa, lanes)                             \
  .dwconv_3x3 = edge_f32_dwconv_minmax_ukernel_3x3__##isa,          \
  .dwconv_5x5 = edge_f32_dwconv_minmax_ukernel_5x5__##isa,          \
  .dwconv_3x3_s1 = edge_f32_dwconv_minmax_ukernel_3x3s1__##isa,     \
  .dwconv_5x5_s1 = edge_f32_dwconv_minmax_ukernel_5x5s1__##isa,     \
  .dwconv_3x3_s2 = edge_f32_dwconv_minmax_ukernel_3x3s2__##isa,     \
  .dwconv_5x5_s2 = edge_f32_dwconv_minmax_ukernel_5x5s2__##isa,     \
  .dwconv_any = edge_f32_dwconv_minmax_ukernel_any__##isa,          \
  .dwconv_channel_tile = lanes,                                     \
  .winograd_input = edge_f32_winograd_input_ukernel_4x4_3x3__##isa, \
  .winograd_output = edge_f32_winograd_output_ukernel_4x4_3x3__##isa

void edge_conv_kernels_init(edge_isa_level isa, edge_conv_kernels *out) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case EDGE_ISA_SSE2:
      *out = (edge_conv_kernels){.isa_name = "sse2",
                                 .igemm = edge_f32_igemm_minmax_ukernel_4x8__sse2,
                                 .igemm_1 = edge_f32_igemm_minmax_ukernel_1x8__sse2,
                                 .igemm_mr = 4,
                                 .igemm_nr = 8,
                                 CONV_VECTOR_ENTRIES(sse2, 4)};
      return;
    case EDGE_ISA_AVX2:
      *out = (edge_conv_kernels){.isa_name = "avx2",
                                 .igemm = edge_f32_igemm_minmax_ukernel_6x16__avx2,
                                 .igemm_1 = edge_f32_igemm_minmax_ukernel_1x16__avx2,
                                 .igemm_mr = 6,
                                 .igemm_nr = 16,
                                 CONV_VECTOR_ENTRIES(avx2, 8)};
      return;
    case EDGE_ISA_AVX512:
    case EDGE_ISA_AVX512VNNI:
      *out = (edge_conv_kernels){.isa_name = "avx512",
                                 .igemm = edge_f32_igemm_minmax_ukernel_8x32__avx512,
                                 .igemm_1 = edge_f32_igemm_minmax_ukernel_1x32__avx512,
                                 .igemm_mr = 8,
                                 .igemm_nr = 32,
                                 CONV_VECTOR_ENTRIES(avx512, 16)};
      return;
#endif
#if defined(__aarch64__)
    case EDGE_ISA_NEON:
    case EDGE_ISA_NEONDOT:
      *out = (edge_conv_kernels){.isa_name = isa == EDGE_ISA_NEON ? "neon" : "neondot",
                                 .igemm = edge_f32_igemm_minmax_ukernel_8x8__neon,
                                 .igemm_1 = edge_f32_igemm_minmax_ukernel_1x8__neon,
                                 .igemm_mr = 8,
                                 .igemm_nr = 8,
                                 CONV_VECTOR_ENTRIES(neon, 4)};
      return;
#endif
    default:
      *out = (edge_conv_kernels){.isa_name = "scalar",
                                 .igemm = edge_f32_igemm_minmax_ukernel_4x4__scalar,
                                 .igemm_1 = edge_f32_igemm_minmax_ukernel_1x4__scalar,
                                 .igemm_mr = 4,
                                 .igemm_nr = 4,
                                 CONV_VECTOR_ENTRIES(scalar, 1)};
      return;
  }
}

/* The qs8 family's part of each level's edge_kernel_config (qs8.h); the drivers and ops only read it.
 * Where a level has no kernel of a kind it takes a lower level's: sse2's depthwise is scalar's,
 * neondot's is neon's (depthwise has no 4-long dot products to make). */
#include "config.h"

#define QS8_GEMM_ENTRIES(tile, tile_1, isa)                                                   \
  .gemm = {edge_qs8_gemm_ukernel_##tile##__##isa, edge_qs8_gemm_ukernel_##tile_1##__##isa},    \
  .gemm_dq = {edge_qs8_gemm_dq_ukernel_##tile##__##isa, edge_qs8_gemm_dq_ukernel_##tile_1##__##isa}, \
  .igemm = {edge_qs8_igemm_ukernel_##tile##__##isa, edge_qs8_igemm_ukernel_##tile_1##__##isa}, \
  .igemm_dq = {edge_qs8_igemm_dq_ukernel_##tile##__##isa, edge_qs8_igemm_dq_ukernel_##tile_1##__##isa}

#define QS8_DWCONV(tile, layout, isa)                                                            \
  .dwconv_channel_tile = tile, .dwconv_layout = EDGE_QS8_DWCONV_##layout, .dwconv = edge_qs8_dwconv_ukernel__##isa, \
  .dwconv_dq = edge_qs8_dwconv_dq_ukernel__##isa

static void init_scalar(edge_qs8_kernels *out) {
  *out = (edge_qs8_kernels){.name = "qs8_gemm_4x4__scalar",
                            .mr = 4,
                            .nr = 4,
                            .kr = 1,
                            QS8_GEMM_ENTRIES(4x4, 1x4, scalar),
                            .dwconv_channel_tile = 1,
                            .dwconv = edge_qs8_dwconv_ukernel__scalar,
                            .dwconv_dq = edge_qs8_dwconv_dq_ukernel__scalar};
}

void edge_qs8_kernels_init(edge_isa_level isa, edge_qs8_kernels *out) {
  init_scalar(out);
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case EDGE_ISA_SSE2:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_4x4c4__sse2", .mr = 4, .nr = 4, .kr = 4,
                                QS8_GEMM_ENTRIES(4x4c4, 1x4c4, sse2), QS8_DWCONV(1, INT8, scalar)};
      break;
    case EDGE_ISA_AVX2:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_4x8c4__avx2", .mr = 4, .nr = 8, .kr = 4,
                                QS8_GEMM_ENTRIES(4x8c4, 1x8c4, avx2), QS8_DWCONV(16, INT16_PAIRS, avx2),
                                .dwconv_3x3s1 = edge_qs8_dwconv_3x3s1_ukernel__avx2,
                                .dwconv_dq_3x3s1 = edge_qs8_dwconv_3x3s1_dq_ukernel__avx2};
      break;
    case EDGE_ISA_AVX512:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_4x32c4__avx512", .mr = 4, .nr = 32, .kr = 4,
                                QS8_GEMM_ENTRIES(4x32c4, 1x32c4, avx512), QS8_DWCONV(32, INT16_PAIRS, avx512)};
      break;
    case EDGE_ISA_AVX512VNNI:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_8x32c4__avx512vnni", .mr = 8, .nr = 32, .kr = 4,
                                .input_offset_128 = 1, QS8_GEMM_ENTRIES(8x32c4, 1x32c4, avx512vnni),
                                QS8_DWCONV(32, INT16_PAIRS, avx512vnni)};
      break;
#endif
#if defined(__aarch64__)
    case EDGE_ISA_NEON:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_4x8__neon", .mr = 4, .nr = 8, .kr = 1,
                                QS8_GEMM_ENTRIES(4x8, 1x8, neon), QS8_DWCONV(8, INT8, neon)};
      break;
    case EDGE_ISA_NEONDOT:
      *out = (edge_qs8_kernels){.name = "qs8_gemm_4x8c4__neondot", .mr = 4, .nr = 8, .kr = 4,
                                QS8_GEMM_ENTRIES(4x8c4, 1x8c4, neondot), QS8_DWCONV(8, INT8, neon)};
      break;
#endif
    default: break;
  }
  out->isa = isa;
}

/* AVX-512 8x32 GEMM tile (gemm.h): 16 zmm accumulators, 2 for the panel row, A broadcast from
 * memory; 16 FMAs per 10 loads. */
#include "f32-gemm-avx512.h"

void edge_f32_gemm_minmax_ukernel_8x32__avx512(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                               const float *w, float *c, size_t c_stride,
                                               const edge_f32_minmax_params *params) {
  f32_gemm_avx512_tile(8, mr, nc, kc, a, a_stride, w, c, c_stride, params);
}

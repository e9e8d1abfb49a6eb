/* AVX2 1x16 GEMM tile (gemm.h): single rows, bound by reading the packed panels. */
#include "f32-gemm-avx2.h"

void edge_f32_gemm_minmax_ukernel_1x16__avx2(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                             const float *w, float *c, size_t c_stride,
                                             const edge_f32_minmax_params *params) {
  f32_gemm_avx2_tile(1, mr, nc, kc, a, a_stride, w, c, c_stride, params);
}

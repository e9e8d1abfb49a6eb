/* SSE2 4x8 GEMM tile (gemm.h): 8 xmm accumulators. */
#include "f32-gemm-sse2.h"

void edge_f32_gemm_minmax_ukernel_4x8__sse2(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                            const float *w, float *c, size_t c_stride,
                                            const edge_f32_minmax_params *params) {
  f32_gemm_sse2_tile(4, mr, nc, kc, a, a_stride, w, c, c_stride, params);
}

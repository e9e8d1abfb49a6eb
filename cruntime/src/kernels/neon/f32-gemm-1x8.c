/* NEON 1x8 GEMM tile (gemm.h): single rows. */
#include "f32-gemm-neon.h"

void edge_f32_gemm_minmax_ukernel_1x8__neon(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,
                                            const float *w, float *c, size_t c_stride,
                                            const edge_f32_minmax_params *params) {
  f32_gemm_neon_tile(1, mr, nc, kc, a, a_stride, w, c, c_stride, params);
}

/* The scalar GEMM tile, the reference of the family (contract in gemm.h), instantiated for each
 * MR by the f32-gemm-<MR>x4.c files. Products are rounded before the sum (the runtime builds in
 * ISO C mode, so the compiler does not contract them into FMAs), the order sse2 also follows. */
#include "../gemm.h"

#define GEMM_SCALAR_NR 4

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_SCALAR_MAX_MR 4

static inline __attribute__((always_inline)) void f32_gemm_scalar_tile(size_t MR, size_t mr, size_t nc, size_t kc,
                                                                       const float *a, size_t a_stride,
                                                                       const float *w, float *c, size_t c_stride,
                                                                       const edge_f32_minmax_params *params) {
  const float lo = params->min, hi = params->max;
  for (;;) {
    float acc[GEMM_SCALAR_MAX_MR][GEMM_SCALAR_NR];
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m)
      for (size_t n = 0; n < GEMM_SCALAR_NR; ++n) acc[m][n] = w[n];
    w += GEMM_SCALAR_NR;
    for (size_t k = 0; k < kc; ++k) {
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const float x = m < mr ? a[m * a_stride + k] : 0.0f;
        for (size_t n = 0; n < GEMM_SCALAR_NR; ++n) acc[m][n] += x * w[n];
      }
      w += GEMM_SCALAR_NR;
    }
    const size_t cols = nc < GEMM_SCALAR_NR ? nc : GEMM_SCALAR_NR;
    for (size_t m = 0; m < mr; ++m)
      for (size_t n = 0; n < cols; ++n) {
        const float v = acc[m][n] < lo ? lo : acc[m][n];
        c[m * c_stride + n] = v > hi ? hi : v;
      }
    if (nc <= GEMM_SCALAR_NR) return;
    nc -= GEMM_SCALAR_NR;
    c += GEMM_SCALAR_NR;
  }
}

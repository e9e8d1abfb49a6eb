/* Scalar indirect GEMM, 4x4 tile (contract in conv.h). Accumulators stay in a small array the
 * compiler keeps in registers; the k loop is innermost-per-tap so every output sums in the order
 * tap 0..ks-1, k 0..kc-1, the same order as every other level's kernel. */
#include "../conv_kernels.h"

#define NR 4

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

/* Row pointers come in groups of TILE_MR per tap whatever the rows computed (MR). */
#define TILE_MR 4

static inline __attribute__((always_inline)) void igemm_rows(const size_t MR, size_t mr, size_t nc, size_t kc,
                                                             size_t ks, const float *const *a, const float *w,
                                                             float *c, size_t c_stride, size_t input_offset,
                                                             const float *zero,
                                                             const edge_f32_minmax_params *params) {
  const float lo = params->min, hi = params->max;
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    float acc[4][NR];
    for (size_t m = 0; m < MR; ++m)
      for (size_t n = 0; n < NR; ++n) acc[m][n] = w[n];
    w += NR;
    for (size_t t = 0; t < ks; ++t) {
      const float *rows[4];
      for (size_t m = 0; m < MR; ++m) {
        const float *p = a[t * TILE_MR + m];
        rows[m] = p == zero ? p : p + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        for (size_t m = 0; m < MR; ++m) {
          const float x = rows[m][k];
          for (size_t n = 0; n < NR; ++n) acc[m][n] += x * w[n];
        }
        w += NR;
      }
    }
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    for (size_t m = 0; m < mr; ++m)
      for (size_t n = 0; n < cols; ++n) c[m * c_stride + n0 + n] = clampf(acc[m][n], lo, hi);
  }
}

void edge_f32_igemm_minmax_ukernel_4x4__scalar(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(4, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

/* One row (a[t] for t < ks, MR-strided like the full tile's), for the last row of an image:
 * rows past mr would otherwise cost full-tile FMAs. */
void edge_f32_igemm_minmax_ukernel_1x4__scalar(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(1, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

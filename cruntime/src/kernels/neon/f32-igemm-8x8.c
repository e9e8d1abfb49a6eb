/* NEON (aarch64) indirect GEMM, 8 rows x 8 columns (two q registers per row, 16 accumulators),
 * the GEMM family's tile at this level (contract in conv.h). Fused multiply-add, one per k, in
 * the GEMM's order. */
#include <arm_neon.h>

#include "../conv_kernels.h"


/* Row pointers come in groups of TILE_MR per tap whatever the rows computed (MR). */
#define TILE_MR 8

static inline __attribute__((always_inline)) void igemm_rows(const size_t MR, size_t mr, size_t nc, size_t kc,
                                                             size_t ks, const float *const *a, const float *w,
                                                             float *c, size_t c_stride, size_t input_offset,
                                                             const float *zero,
                                                             const edge_f32_minmax_params *params) {
  const float32x4_t vmin = vdupq_n_f32(params->min), vmax = vdupq_n_f32(params->max);
  for (size_t n0 = 0; n0 < nc; n0 += 8) {
    float32x4_t lo[8], hi[8];
    const float32x4_t bias_lo = vld1q_f32(w), bias_hi = vld1q_f32(w + 4);
#pragma GCC unroll 8
    for (size_t m = 0; m < MR; ++m) {
      lo[m] = bias_lo;
      hi[m] = bias_hi;
    }
    w += 8;
    for (size_t t = 0; t < ks; ++t) {
      const float *rows[8];
#pragma GCC unroll 8
      for (size_t m = 0; m < MR; ++m) {
        const float *p = a[t * TILE_MR + m];
        rows[m] = p == zero ? p : p + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        const float32x4_t w_lo = vld1q_f32(w), w_hi = vld1q_f32(w + 4);
        w += 8;
#pragma GCC unroll 8
        for (size_t m = 0; m < MR; ++m) {
          const float x = rows[m][k];
          lo[m] = vfmaq_n_f32(lo[m], w_lo, x);
          hi[m] = vfmaq_n_f32(hi[m], w_hi, x);
        }
      }
    }
    const size_t cols = nc - n0 < 8 ? nc - n0 : 8;
    float *out = c + n0;
#pragma GCC unroll 8
    for (size_t m = 0; m < MR; ++m)
      if (m < mr) {
        const float32x4_t v_lo = vminq_f32(vmaxq_f32(lo[m], vmin), vmax);
        const float32x4_t v_hi = vminq_f32(vmaxq_f32(hi[m], vmin), vmax);
        if (cols == 8) {
          vst1q_f32(out + m * c_stride, v_lo);
          vst1q_f32(out + m * c_stride + 4, v_hi);
        } else {
          float tile[8];
          vst1q_f32(tile, v_lo);
          vst1q_f32(tile + 4, v_hi);
          for (size_t n = 0; n < cols; ++n) out[m * c_stride + n] = tile[n];
        }
      }
  }
}

void edge_f32_igemm_minmax_ukernel_8x8__neon(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(8, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

/* One row (a[t] for t < ks, MR-strided like the full tile's), for the last row of an image:
 * rows past mr would otherwise cost full-tile FMAs. */
void edge_f32_igemm_minmax_ukernel_1x8__neon(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(1, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

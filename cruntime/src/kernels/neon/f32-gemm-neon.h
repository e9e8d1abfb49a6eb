/* NEON (aarch64, FMA) GEMM tile over 8-column panels (contract in gemm.h), instantiated for each
 * MR by the f32-gemm-<MR>x8.c files. The main loop takes 4 k at a time: one 128-bit load of A per
 * row, then FMAs by lane (fmla v.4s, v.4s, v.s[i]), so loads of A are a quarter of the
 * broadcasts; 8 rows use 16 accumulators + 8 A + 2 panel registers of the 32. k remainders
 * broadcast single values. Every output still adds k in order. Rows m >= mr read and store row
 * mr - 1 again (same values); the last panel's columns past nc are stored lane by lane. */
#include <arm_neon.h>

#include "../gemm.h"

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_NEON_MAX_MR 8

static inline __attribute__((always_inline)) void f32_gemm_neon_store_partial(float *p, float32x4_t v, size_t n) {
  float32x2_t part = vget_low_f32(v);
  if (n & 2) {
    vst1_f32(p, part);
    p += 2;
    part = vget_high_f32(v);
  }
  if (n & 1) vst1_lane_f32(p, part, 0);
}

#define F32_GEMM_NEON_LANE(lane)                                                  \
  do {                                                                            \
    const float32x4_t b_lo = vld1q_f32(w), b_hi = vld1q_f32(w + 4);               \
    w += 8;                                                                       \
    _Pragma("GCC unroll 16") for (size_t m = 0; m < MR; ++m) {                    \
      acc_lo[m] = vfmaq_laneq_f32(acc_lo[m], b_lo, x[m], lane);                   \
      acc_hi[m] = vfmaq_laneq_f32(acc_hi[m], b_hi, x[m], lane);                   \
    }                                                                             \
  } while (0)

static inline __attribute__((always_inline)) void f32_gemm_neon_tile(size_t MR, size_t mr, size_t nc, size_t kc,
                                                                     const float *a, size_t a_stride, const float *w,
                                                                     float *c, size_t c_stride,
                                                                     const edge_f32_minmax_params *params) {
  const float *arow[GEMM_NEON_MAX_MR];
  float *crow[GEMM_NEON_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    const size_t row = m < mr ? m : mr - 1;
    arow[m] = a + row * a_stride;
    crow[m] = c + row * c_stride;
  }
  const float32x4_t vmin = vdupq_n_f32(params->min), vmax = vdupq_n_f32(params->max);
  for (;;) {
    float32x4_t acc_lo[GEMM_NEON_MAX_MR], acc_hi[GEMM_NEON_MAX_MR];
    const float32x4_t bias_lo = vld1q_f32(w), bias_hi = vld1q_f32(w + 4);
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = bias_lo;
      acc_hi[m] = bias_hi;
    }
    w += 8;
    size_t k = 0;
    for (; k + 4 <= kc; k += 4) {
      float32x4_t x[GEMM_NEON_MAX_MR];
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) x[m] = vld1q_f32(arow[m] + k);
      F32_GEMM_NEON_LANE(0);
      F32_GEMM_NEON_LANE(1);
      F32_GEMM_NEON_LANE(2);
      F32_GEMM_NEON_LANE(3);
    }
    for (; k < kc; ++k) {
      const float32x4_t b_lo = vld1q_f32(w), b_hi = vld1q_f32(w + 4);
      w += 8;
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const float32x4_t x = vld1q_dup_f32(arow[m] + k);
        acc_lo[m] = vfmaq_f32(acc_lo[m], b_lo, x);
        acc_hi[m] = vfmaq_f32(acc_hi[m], b_hi, x);
      }
    }
    /* NEON max/min return NaN when either input is NaN: a NaN sum comes through the clamp */
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = vminq_f32(vmax, vmaxq_f32(vmin, acc_lo[m]));
      acc_hi[m] = vminq_f32(vmax, vmaxq_f32(vmin, acc_hi[m]));
    }
    if (nc >= 8) {
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        vst1q_f32(crow[m], acc_lo[m]);
        vst1q_f32(crow[m] + 4, acc_hi[m]);
        crow[m] += 8;
      }
      nc -= 8;
      if (nc == 0) return;
    } else {
      for (size_t m = MR; m-- > 0;) {
        if (nc >= 4) {
          vst1q_f32(crow[m], acc_lo[m]);
          f32_gemm_neon_store_partial(crow[m] + 4, acc_hi[m], nc - 4);
        } else {
          f32_gemm_neon_store_partial(crow[m], acc_lo[m], nc);
        }
      }
      return;
    }
  }
}

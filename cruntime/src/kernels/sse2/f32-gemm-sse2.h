/* SSE2 GEMM tile over 8-column panels (contract in gemm.h), instantiated for each MR by the
 * f32-gemm-<MR>x8.c files. No FMA on this level: each product is rounded, then added, the same
 * two steps as the scalar kernel, so the two agree bit for bit. Rows m >= mr read and store row
 * mr - 1 again (same values). The last panel's columns past nc go out one lane at a time. */
#include <emmintrin.h>

#include "../gemm.h"

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_SSE2_MAX_MR 4

static inline __attribute__((always_inline)) void f32_gemm_sse2_store_partial(float *p, __m128 v, size_t n) {
  float lanes[4];
  _mm_storeu_ps(lanes, v);
  for (size_t i = 0; i < n; ++i) p[i] = lanes[i];
}

static inline __attribute__((always_inline)) void f32_gemm_sse2_tile(size_t MR, size_t mr, size_t nc, size_t kc,
                                                                     const float *a, size_t a_stride, const float *w,
                                                                     float *c, size_t c_stride,
                                                                     const edge_f32_minmax_params *params) {
  const float *arow[GEMM_SSE2_MAX_MR];
  float *crow[GEMM_SSE2_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    const size_t row = m < mr ? m : mr - 1;
    arow[m] = a + row * a_stride;
    crow[m] = c + row * c_stride;
  }
  const __m128 vmin = _mm_set1_ps(params->min), vmax = _mm_set1_ps(params->max);
  for (;;) {
    __m128 acc_lo[GEMM_SSE2_MAX_MR], acc_hi[GEMM_SSE2_MAX_MR];
    const __m128 bias_lo = _mm_loadu_ps(w), bias_hi = _mm_loadu_ps(w + 4);
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = bias_lo;
      acc_hi[m] = bias_hi;
    }
    w += 8;
    for (size_t k = 0; k < kc; ++k) {
      const __m128 b_lo = _mm_loadu_ps(w), b_hi = _mm_loadu_ps(w + 4);
      w += 8;
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const __m128 x = _mm_set1_ps(arow[m][k]);
        acc_lo[m] = _mm_add_ps(acc_lo[m], _mm_mul_ps(x, b_lo));
        acc_hi[m] = _mm_add_ps(acc_hi[m], _mm_mul_ps(x, b_hi));
      }
    }
    /* max(lo, x) then min(hi, x): a NaN in x comes through, like the scalar clamp */
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = _mm_min_ps(vmax, _mm_max_ps(vmin, acc_lo[m]));
      acc_hi[m] = _mm_min_ps(vmax, _mm_max_ps(vmin, acc_hi[m]));
    }
    if (nc >= 8) {
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        _mm_storeu_ps(crow[m], acc_lo[m]);
        _mm_storeu_ps(crow[m] + 4, acc_hi[m]);
        crow[m] += 8;
      }
      nc -= 8;
      if (nc == 0) return;
    } else {
      for (size_t m = MR; m-- > 0;) {
        if (nc >= 4) {
          _mm_storeu_ps(crow[m], acc_lo[m]);
          f32_gemm_sse2_store_partial(crow[m] + 4, acc_hi[m], nc - 4);
        } else {
          f32_gemm_sse2_store_partial(crow[m], acc_lo[m], nc);
        }
      }
      return;
    }
  }
}

/* AVX2 + FMA3 GEMM tile over 16-column panels (contract in gemm.h), instantiated for each MR by
 * the f32-gemm-<MR>x16.c files. Per k: two 8-lane loads of the panel row, then per row one
 * broadcast of A and two FMAs; 6 rows use 12 accumulators + 2 panel + 1 broadcast = 15 of the 16
 * ymm registers. Rows m >= mr read and store row mr - 1 again (same values). The last panel's
 * columns past nc are written through maskstore. */
#include <immintrin.h>

#include "../gemm.h"

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_AVX2_MAX_MR 6

static inline __attribute__((always_inline)) __m256i f32_gemm_avx2_mask(size_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline __attribute__((always_inline)) void f32_gemm_avx2_tile(size_t MR, size_t mr, size_t nc, size_t kc,
                                                                     const float *a, size_t a_stride, const float *w,
                                                                     float *c, size_t c_stride,
                                                                     const edge_f32_minmax_params *params) {
  const float *arow[GEMM_AVX2_MAX_MR];
  float *crow[GEMM_AVX2_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    const size_t row = m < mr ? m : mr - 1;
    arow[m] = a + row * a_stride;
    crow[m] = c + row * c_stride;
  }
  const __m256 vmin = _mm256_set1_ps(params->min), vmax = _mm256_set1_ps(params->max);
  for (;;) {
    __m256 acc_lo[GEMM_AVX2_MAX_MR], acc_hi[GEMM_AVX2_MAX_MR];
    const __m256 bias_lo = _mm256_loadu_ps(w), bias_hi = _mm256_loadu_ps(w + 8);
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = bias_lo;
      acc_hi[m] = bias_hi;
    }
    w += 16;
    for (size_t k = 0; k < kc; ++k) {
      const __m256 b_lo = _mm256_loadu_ps(w), b_hi = _mm256_loadu_ps(w + 8);
      w += 16;
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const __m256 x = _mm256_broadcast_ss(arow[m] + k);
        acc_lo[m] = _mm256_fmadd_ps(x, b_lo, acc_lo[m]);
        acc_hi[m] = _mm256_fmadd_ps(x, b_hi, acc_hi[m]);
      }
    }
    /* max(lo, x) then min(hi, x): a NaN in x comes through, like the scalar clamp */
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = _mm256_min_ps(vmax, _mm256_max_ps(vmin, acc_lo[m]));
      acc_hi[m] = _mm256_min_ps(vmax, _mm256_max_ps(vmin, acc_hi[m]));
    }
    if (nc >= 16) {
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        _mm256_storeu_ps(crow[m], acc_lo[m]);
        _mm256_storeu_ps(crow[m] + 8, acc_hi[m]);
        crow[m] += 16;
      }
      nc -= 16;
      if (nc == 0) return;
    } else {
      const __m256i mask_lo = f32_gemm_avx2_mask(nc), mask_hi = f32_gemm_avx2_mask(nc > 8 ? nc - 8 : 0);
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        _mm256_maskstore_ps(crow[m], mask_lo, acc_lo[m]);
        _mm256_maskstore_ps(crow[m] + 8, mask_hi, acc_hi[m]);
      }
      return;
    }
  }
}

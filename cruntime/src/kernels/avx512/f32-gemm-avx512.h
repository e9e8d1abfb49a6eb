/* AVX-512 GEMM tile over 32-column panels (contract in gemm.h), instantiated for each MR by the
 * f32-gemm-<MR>x32.c files. Per k: two 16-lane loads of the panel row, then per row one FMA per
 * half with A broadcast straight from memory ({1to16} operand), so MR x 2 accumulators are the
 * only long-lived registers. Rows m >= mr read and store row mr - 1 again (same values), which
 * keeps the loop free of row tests. The last panel's columns past nc are masked off on store. */
#include <immintrin.h>

#include "../gemm.h"

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_AVX512_MAX_MR 8

static inline __attribute__((always_inline)) void f32_gemm_avx512_tile(size_t MR, size_t mr, size_t nc, size_t kc,
                                                                       const float *a, size_t a_stride,
                                                                       const float *w, float *c, size_t c_stride,
                                                                       const edge_f32_minmax_params *params) {
  const float *arow[GEMM_AVX512_MAX_MR];
  float *crow[GEMM_AVX512_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    const size_t row = m < mr ? m : mr - 1;
    arow[m] = a + row * a_stride;
    crow[m] = c + row * c_stride;
  }
  const __m512 vmin = _mm512_set1_ps(params->min), vmax = _mm512_set1_ps(params->max);
  for (;;) {
    __m512 acc_lo[GEMM_AVX512_MAX_MR], acc_hi[GEMM_AVX512_MAX_MR];
    const __m512 bias_lo = _mm512_loadu_ps(w), bias_hi = _mm512_loadu_ps(w + 16);
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = bias_lo;
      acc_hi[m] = bias_hi;
    }
    w += 32;
    for (size_t k = 0; k < kc; ++k) {
      const __m512 b_lo = _mm512_loadu_ps(w), b_hi = _mm512_loadu_ps(w + 16);
      w += 32;
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const __m512 x = _mm512_set1_ps(arow[m][k]);
        acc_lo[m] = _mm512_fmadd_ps(x, b_lo, acc_lo[m]);
        acc_hi[m] = _mm512_fmadd_ps(x, b_hi, acc_hi[m]);
      }
    }
    /* max(lo, x) then min(hi, x): a NaN in x comes through, like the scalar clamp */
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      acc_lo[m] = _mm512_min_ps(vmax, _mm512_max_ps(vmin, acc_lo[m]));
      acc_hi[m] = _mm512_min_ps(vmax, _mm512_max_ps(vmin, acc_hi[m]));
    }
    if (nc >= 32) {
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        _mm512_storeu_ps(crow[m], acc_lo[m]);
        _mm512_storeu_ps(crow[m] + 16, acc_hi[m]);
        crow[m] += 32;
      }
      nc -= 32;
      if (nc == 0) return;
    } else {
      const __mmask16 mask_lo = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1u);
      const __mmask16 mask_hi = nc > 16 ? (__mmask16)((1u << (nc - 16)) - 1u) : 0;
      _Pragma("GCC unroll 16")
      for (size_t m = MR; m-- > 0;) {
        _mm512_mask_storeu_ps(crow[m], mask_lo, acc_lo[m]);
        _mm512_mask_storeu_ps(crow[m] + 16, mask_hi, acc_hi[m]);
      }
      return;
    }
  }
}

/* AVX-512 GEMM tile over 32-column panels (contract in gemm.h), instantiated for each MR by the
 * f32-gemm-<MR>x32.c files. Per k: the panel row's 16-lane halves, then per row one FMA per half
 * with A broadcast straight from memory ({1to16} operand), so MR x 2 accumulators are the only
 * long-lived registers. Rows m >= mr read and store row mr - 1 again (same values), which keeps the
 * loop free of row tests. A panel holding at most 24 live columns (the last one, or the only one of
 * a 16- or 24-channel layer) computes its upper half in 8 lanes (ymm: half the FMA cost on cores
 * that split zmm into two 256-bit halves) or not at all; lanes are independent, so the results are
 * the same bits either way. Columns past nc are masked off on store. */
#include <immintrin.h>

#include "../gemm.h"

/* Arrays are sized by this constant, not by MR, so they are not variable-length and the
 * compiler keeps them in registers once MR is known. */
#define GEMM_AVX512_MAX_MR 8

/* One panel of HI upper lanes (16, 8 or 0) for the MR rows; stores min(cols, 16 + HI) columns. */
static inline __attribute__((always_inline)) void f32_gemm_avx512_panel(size_t MR, size_t HI, size_t cols, size_t kc,
                                                                        const float *const *arow, const float *w,
                                                                        float *const *crow, __m512 vmin, __m512 vmax) {
  __m512 acc_lo[GEMM_AVX512_MAX_MR], acc_hi[GEMM_AVX512_MAX_MR];
  __m256 acc_q[GEMM_AVX512_MAX_MR];
  const __m512 bias_lo = _mm512_loadu_ps(w);
  const __m512 bias_hi = HI == 16 ? _mm512_loadu_ps(w + 16) : _mm512_setzero_ps();
  const __m256 bias_q = HI == 8 ? _mm256_loadu_ps(w + 16) : _mm256_setzero_ps();
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    acc_lo[m] = bias_lo;
    acc_hi[m] = bias_hi;
    acc_q[m] = bias_q;
  }
  w += 32;
  for (size_t k = 0; k < kc; ++k) {
    const __m512 b_lo = _mm512_loadu_ps(w);
    const __m512 b_hi = HI == 16 ? _mm512_loadu_ps(w + 16) : _mm512_setzero_ps();
    const __m256 b_q = HI == 8 ? _mm256_loadu_ps(w + 16) : _mm256_setzero_ps();
    w += 32;
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      const __m512 x = _mm512_set1_ps(arow[m][k]);
      acc_lo[m] = _mm512_fmadd_ps(x, b_lo, acc_lo[m]);
      if (HI == 16) acc_hi[m] = _mm512_fmadd_ps(x, b_hi, acc_hi[m]);
      if (HI == 8) acc_q[m] = _mm256_fmadd_ps(_mm512_castps512_ps256(x), b_q, acc_q[m]);
    }
  }
  /* max(lo, x) then min(hi, x): a NaN in x comes through, like the scalar clamp */
  const __mmask16 mask_lo = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1u);
  /* cols is what is left of the row, possibly past this panel: clamp before shifting. */
  const __mmask16 mask_hi = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1u) : 0;
  _Pragma("GCC unroll 16")
  for (size_t m = MR; m-- > 0;) {
    const __m512 lo = _mm512_min_ps(vmax, _mm512_max_ps(vmin, acc_lo[m]));
    if (HI == 16 && cols >= 32) {
      _mm512_storeu_ps(crow[m], lo);
      _mm512_storeu_ps(crow[m] + 16, _mm512_min_ps(vmax, _mm512_max_ps(vmin, acc_hi[m])));
    } else {
      _mm512_mask_storeu_ps(crow[m], mask_lo, lo);
      if (HI == 16) _mm512_mask_storeu_ps(crow[m] + 16, mask_hi, _mm512_min_ps(vmax, _mm512_max_ps(vmin, acc_hi[m])));
      if (HI == 8)
        _mm256_mask_storeu_ps(crow[m] + 16, (__mmask8)mask_hi,
                              _mm256_min_ps(_mm512_castps512_ps256(vmax),
                                            _mm256_max_ps(_mm512_castps512_ps256(vmin), acc_q[m])));
    }
  }
}

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
  const size_t panel_floats = (kc + 1) * 32;
  for (; nc > 24; nc -= nc < 32 ? nc : 32) {
    f32_gemm_avx512_panel(MR, 16, nc, kc, arow, w, crow, vmin, vmax);
    w += panel_floats;
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) crow[m] += 32;
  }
  if (nc > 16) f32_gemm_avx512_panel(MR, 8, nc, kc, arow, w, crow, vmin, vmax);
  else if (nc > 0) f32_gemm_avx512_panel(MR, 0, nc, kc, arow, w, crow, vmin, vmax);
}

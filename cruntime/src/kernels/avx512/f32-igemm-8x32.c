/* AVX-512 indirect GEMM, 8 rows x 32 columns (two zmm per row, 16 accumulators), the GEMM family's
 * tile at this level so both read one packed-weights layout (contract in conv.h). Per k: two
 * weight loads, eight broadcasts from the row pointers, sixteen FMAs, in the GEMM's order (bias,
 * then taps, then k). Column tails are stored with masks; nothing past nc is written. */
#include <immintrin.h>

#include "../conv_kernels.h"


/* Row pointers come in groups of TILE_MR per tap whatever the rows computed (MR). */
#define TILE_MR 8

static inline __attribute__((always_inline)) void igemm_rows(const size_t MR, size_t mr, size_t nc, size_t kc,
                                                             size_t ks, const float *const *a, const float *w,
                                                             float *c, size_t c_stride, size_t input_offset,
                                                             const float *zero,
                                                             const edge_f32_minmax_params *params) {
  const __m512 vmin = _mm512_set1_ps(params->min), vmax = _mm512_set1_ps(params->max);
  for (size_t n0 = 0; n0 < nc; n0 += 32) {
    __m512 lo[8], hi[8];
    const __m512 bias_lo = _mm512_loadu_ps(w), bias_hi = _mm512_loadu_ps(w + 16);
#pragma GCC unroll 8
    for (size_t m = 0; m < MR; ++m) {
      lo[m] = bias_lo;
      hi[m] = bias_hi;
    }
    w += 32;
    for (size_t t = 0; t < ks; ++t) {
      const float *rows[8];
#pragma GCC unroll 8
      for (size_t m = 0; m < MR; ++m) {
        const float *p = a[t * TILE_MR + m];
        rows[m] = p == zero ? p : p + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        const __m512 w_lo = _mm512_loadu_ps(w), w_hi = _mm512_loadu_ps(w + 16);
        w += 32;
#pragma GCC unroll 8
        for (size_t m = 0; m < MR; ++m) {
          const __m512 x = _mm512_set1_ps(rows[m][k]);
          lo[m] = _mm512_fmadd_ps(x, w_lo, lo[m]);
          hi[m] = _mm512_fmadd_ps(x, w_hi, hi[m]);
        }
      }
    }
    const size_t cols = nc - n0;
    float *out = c + n0;
    if (cols >= 32) {
#pragma GCC unroll 8
      for (size_t m = 0; m < MR; ++m)
        if (m < mr) {
          _mm512_storeu_ps(out + m * c_stride, _mm512_min_ps(_mm512_max_ps(lo[m], vmin), vmax));
          _mm512_storeu_ps(out + m * c_stride + 16, _mm512_min_ps(_mm512_max_ps(hi[m], vmin), vmax));
        }
    } else {
      const __mmask16 mask_lo = cols >= 16 ? 0xFFFF : (__mmask16)((1u << cols) - 1);
      const __mmask16 mask_hi = cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
#pragma GCC unroll 8
      for (size_t m = 0; m < MR; ++m)
        if (m < mr) {
          _mm512_mask_storeu_ps(out + m * c_stride, mask_lo, _mm512_min_ps(_mm512_max_ps(lo[m], vmin), vmax));
          _mm512_mask_storeu_ps(out + m * c_stride + 16, mask_hi, _mm512_min_ps(_mm512_max_ps(hi[m], vmin), vmax));
        }
    }
  }
}

void edge_f32_igemm_minmax_ukernel_8x32__avx512(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(8, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

/* One row (a[t] for t < ks, MR-strided like the full tile's), for the last row of an image:
 * rows past mr would otherwise cost full-tile FMAs. */
void edge_f32_igemm_minmax_ukernel_1x32__avx512(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(1, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

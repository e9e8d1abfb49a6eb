/* AVX2+FMA indirect GEMM, 6 rows x 16 columns (two ymm per row, 12 accumulators), the GEMM
 * family's tile at this level (contract in conv.h). Column tails go through a stack tile so
 * nothing past nc is written. */
#include <immintrin.h>

#include "../conv_kernels.h"


/* Row pointers come in groups of TILE_MR per tap whatever the rows computed (MR). */
#define TILE_MR 6

static inline __attribute__((always_inline)) void igemm_rows(const size_t MR, size_t mr, size_t nc, size_t kc,
                                                             size_t ks, const float *const *a, const float *w,
                                                             float *c, size_t c_stride, size_t input_offset,
                                                             const float *zero,
                                                             const edge_f32_minmax_params *params) {
  const __m256 vmin = _mm256_set1_ps(params->min), vmax = _mm256_set1_ps(params->max);
  for (size_t n0 = 0; n0 < nc; n0 += 16) {
    __m256 lo[6], hi[6];
    const __m256 bias_lo = _mm256_loadu_ps(w), bias_hi = _mm256_loadu_ps(w + 8);
#pragma GCC unroll 6
    for (size_t m = 0; m < MR; ++m) {
      lo[m] = bias_lo;
      hi[m] = bias_hi;
    }
    w += 16;
    for (size_t t = 0; t < ks; ++t) {
      const float *rows[6];
#pragma GCC unroll 6
      for (size_t m = 0; m < MR; ++m) {
        const float *p = a[t * TILE_MR + m];
        rows[m] = p == zero ? p : p + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        const __m256 w_lo = _mm256_loadu_ps(w), w_hi = _mm256_loadu_ps(w + 8);
        w += 16;
#pragma GCC unroll 6
        for (size_t m = 0; m < MR; ++m) {
          const __m256 x = _mm256_broadcast_ss(rows[m] + k);
          lo[m] = _mm256_fmadd_ps(x, w_lo, lo[m]);
          hi[m] = _mm256_fmadd_ps(x, w_hi, hi[m]);
        }
      }
    }
    const size_t cols = nc - n0 < 16 ? nc - n0 : 16;
    float *out = c + n0;
#pragma GCC unroll 6
    for (size_t m = 0; m < MR; ++m)
      if (m < mr) {
        const __m256 v_lo = _mm256_min_ps(_mm256_max_ps(lo[m], vmin), vmax);
        const __m256 v_hi = _mm256_min_ps(_mm256_max_ps(hi[m], vmin), vmax);
        if (cols == 16) {
          _mm256_storeu_ps(out + m * c_stride, v_lo);
          _mm256_storeu_ps(out + m * c_stride + 8, v_hi);
        } else {
          float tile[16];
          _mm256_storeu_ps(tile, v_lo);
          _mm256_storeu_ps(tile + 8, v_hi);
          for (size_t n = 0; n < cols; ++n) out[m * c_stride + n] = tile[n];
        }
      }
  }
}

void edge_f32_igemm_minmax_ukernel_6x16__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(6, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

/* One row (a[t] for t < ks, MR-strided like the full tile's), for the last row of an image:
 * rows past mr would otherwise cost full-tile FMAs. */
void edge_f32_igemm_minmax_ukernel_1x16__avx2(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(1, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

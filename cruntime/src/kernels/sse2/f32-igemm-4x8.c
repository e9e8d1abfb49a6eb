/* SSE2 indirect GEMM, 4 rows x 8 columns (two xmm per row), the GEMM family's tile at this level
 * (contract in conv.h). No FMA here: a rounded product then a sum, as in the scalar kernel, so the
 * two agree bit for bit. */
#include <emmintrin.h>

#include "../conv_kernels.h"


/* Row pointers come in groups of TILE_MR per tap whatever the rows computed (MR). */
#define TILE_MR 4

static inline __attribute__((always_inline)) void igemm_rows(const size_t MR, size_t mr, size_t nc, size_t kc,
                                                             size_t ks, const float *const *a, const float *w,
                                                             float *c, size_t c_stride, size_t input_offset,
                                                             const float *zero,
                                                             const edge_f32_minmax_params *params) {
  const __m128 vmin = _mm_set1_ps(params->min), vmax = _mm_set1_ps(params->max);
  for (size_t n0 = 0; n0 < nc; n0 += 8) {
    __m128 lo[4], hi[4];
    const __m128 bias_lo = _mm_loadu_ps(w), bias_hi = _mm_loadu_ps(w + 4);
#pragma GCC unroll 4
    for (size_t m = 0; m < MR; ++m) {
      lo[m] = bias_lo;
      hi[m] = bias_hi;
    }
    w += 8;
    for (size_t t = 0; t < ks; ++t) {
      const float *rows[4];
#pragma GCC unroll 4
      for (size_t m = 0; m < MR; ++m) {
        const float *p = a[t * TILE_MR + m];
        rows[m] = p == zero ? p : p + input_offset;
      }
      for (size_t k = 0; k < kc; ++k) {
        const __m128 w_lo = _mm_loadu_ps(w), w_hi = _mm_loadu_ps(w + 4);
        w += 8;
#pragma GCC unroll 4
        for (size_t m = 0; m < MR; ++m) {
          const __m128 x = _mm_set1_ps(rows[m][k]);
          lo[m] = _mm_add_ps(lo[m], _mm_mul_ps(x, w_lo));
          hi[m] = _mm_add_ps(hi[m], _mm_mul_ps(x, w_hi));
        }
      }
    }
    const size_t cols = nc - n0 < 8 ? nc - n0 : 8;
    float *out = c + n0;
#pragma GCC unroll 4
    for (size_t m = 0; m < MR; ++m)
      if (m < mr) {
        const __m128 v_lo = _mm_min_ps(_mm_max_ps(lo[m], vmin), vmax);
        const __m128 v_hi = _mm_min_ps(_mm_max_ps(hi[m], vmin), vmax);
        if (cols == 8) {
          _mm_storeu_ps(out + m * c_stride, v_lo);
          _mm_storeu_ps(out + m * c_stride + 4, v_hi);
        } else {
          float tile[8];
          _mm_storeu_ps(tile, v_lo);
          _mm_storeu_ps(tile + 4, v_hi);
          for (size_t n = 0; n < cols; ++n) out[m * c_stride + n] = tile[n];
        }
      }
  }
}

void edge_f32_igemm_minmax_ukernel_4x8__sse2(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(4, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

/* One row (a[t] for t < ks, MR-strided like the full tile's), for the last row of an image:
 * rows past mr would otherwise cost full-tile FMAs. */
void edge_f32_igemm_minmax_ukernel_1x8__sse2(size_t mr, size_t nc, size_t kc, size_t ks, const float *const *a,
    const float *w, float *c, size_t c_stride, size_t input_offset, const float *zero,
    const edge_f32_minmax_params *params) {
  igemm_rows(1, mr, nc, kc, ks, a, w, c, c_stride, input_offset, zero, params);
}

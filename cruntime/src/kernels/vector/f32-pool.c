/* Pooling over the taps of one NHWC output pixel, vectorised over channels, compiled once per
 * ISA (edge_f32_pool_ukernel). The taps inside the input form a rows x cols rectangle starting at
 * x, tap (r, c) at x + r * row_step + c * col_step; they are folded in row-major order, the
 * scalar reference's order, so MAX (NaN wins) is exact and AVERAGE's float sum is bit for bit the
 * reference's before the division by `divisor` (also the reference's). Channel blocks of 4
 * vectors stay in registers over all taps. */
#include <math.h>

#include "../vector.h"
#include "../simd.h"

EDGE_SIMD_INLINE f32xN max_step(f32xN acc, f32xN v) { return vf_select(vf_unord(v, v), v, vf_max(v, acc)); }
EDGE_SIMD_INLINE f32xN sum_step(f32xN acc, f32xN v) { return vf_add(acc, v); }
EDGE_SIMD_INLINE f32xN max_finish(f32xN acc, f32xN divisor) { (void)divisor; return acc; }
EDGE_SIMD_INLINE f32xN average_finish(f32xN acc, f32xN divisor) { return vf_div(acc, divisor); }

#define EDGE_POOL_KERNEL(name, STEP, INIT, FINISH)                                                      \
  void EDGE_SIMD_FN(f32_##name)(size_t rows, size_t cols, const float *x, size_t row_step, size_t col_step, \
                                size_t channels, float *y, float divisor) {                             \
    const f32xN init = vf_set1(INIT), vdiv = vf_set1(divisor);                                          \
    size_t j = 0;                                                                                       \
    for (; j + 4 * EDGE_SIMD_N <= channels; j += 4 * EDGE_SIMD_N) {                                     \
      f32xN a0 = init, a1 = init, a2 = init, a3 = init;                                                 \
      for (size_t r = 0; r < rows; ++r)                                                                 \
        for (size_t c = 0; c < cols; ++c) {                                                             \
          const float *p = x + r * row_step + c * col_step + j;                                         \
          a0 = STEP(a0, vf_loadu(p));                                                                   \
          a1 = STEP(a1, vf_loadu(p + EDGE_SIMD_N));                                                     \
          a2 = STEP(a2, vf_loadu(p + 2 * EDGE_SIMD_N));                                                 \
          a3 = STEP(a3, vf_loadu(p + 3 * EDGE_SIMD_N));                                                 \
        }                                                                                               \
      vf_storeu(y + j, FINISH(a0, vdiv));                                                               \
      vf_storeu(y + j + EDGE_SIMD_N, FINISH(a1, vdiv));                                                 \
      vf_storeu(y + j + 2 * EDGE_SIMD_N, FINISH(a2, vdiv));                                             \
      vf_storeu(y + j + 3 * EDGE_SIMD_N, FINISH(a3, vdiv));                                             \
    }                                                                                                   \
    for (; j < channels; j += EDGE_SIMD_N) {                                                            \
      size_t width = channels - j < EDGE_SIMD_N ? channels - j : EDGE_SIMD_N;                           \
      f32xN a = init;                                                                                   \
      for (size_t r = 0; r < rows; ++r)                                                                 \
        for (size_t c = 0; c < cols; ++c) {                                                             \
          const float *p = x + r * row_step + c * col_step + j;                                         \
          a = STEP(a, width == EDGE_SIMD_N ? vf_loadu(p) : vf_load_partial(p, width));                  \
        }                                                                                               \
      if (width == EDGE_SIMD_N) vf_storeu(y + j, FINISH(a, vdiv));                                      \
      else vf_store_partial(y + j, FINISH(a, vdiv), width);                                             \
    }                                                                                                   \
  }

EDGE_POOL_KERNEL(maxpool, max_step, -INFINITY, max_finish)
EDGE_POOL_KERNEL(avgpool, sum_step, 0.0f, average_finish)

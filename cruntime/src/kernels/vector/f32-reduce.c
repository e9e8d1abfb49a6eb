/* Reductions, compiled once per ISA (see simd.h).
 *
 * edge_f32_r<op>__isa (edge_f32_rreduce_ukernel): one value from x[0..n), four vector
 * accumulators folded in a fixed order, so the result depends only on n and the ISA. Sums are
 * in float (the scalar reference sums in double): relative error <= about n * 2^-24 of the sum of
 * magnitudes. MAX/MIN are exact and let NaN win.
 *
 * edge_f32_raccumulate_<op>__isa (edge_f32_raccumulate_ukernel): acc[j] op= x[r * stride + j]
 * for r < rows, j < n, rows folded in order, so each column gives the scalar loop's result
 * with a float accumulator bit for bit (MAX/MIN exact). */
#include <math.h>

#include "../vector.h"
#include "../simd.h"

/* acc combined with v letting a NaN in either win (vf_max returns its second operand, acc, when
 * acc is NaN on x86; NEON returns NaN anyway). */
EDGE_SIMD_INLINE f32xN max_step(f32xN acc, f32xN v) { return vf_select(vf_unord(v, v), v, vf_max(v, acc)); }
EDGE_SIMD_INLINE f32xN min_step(f32xN acc, f32xN v) { return vf_select(vf_unord(v, v), v, vf_min(v, acc)); }
EDGE_SIMD_INLINE f32xN sum_step(f32xN acc, f32xN v) { return vf_add(acc, v); }
EDGE_SIMD_INLINE f32xN abs_sum_step(f32xN acc, f32xN v) { return vf_add(acc, vf_abs(v)); }
EDGE_SIMD_INLINE f32xN square_sum_step(f32xN acc, f32xN v) { return vf_fma(v, v, acc); }

EDGE_SIMD_INLINE float fold_sum(f32xN a, f32xN b, f32xN c, f32xN d) {
  return vf_reduce_add(vf_add(vf_add(a, b), vf_add(c, d)));
}
/* A NaN lane must decide the result whatever order the horizontal fold takes per ISA. */
EDGE_SIMD_INLINE float fold_max(f32xN a, f32xN b, f32xN c, f32xN d) {
  f32xN m = max_step(max_step(a, b), max_step(c, d));
  return vm_any(vf_unord(m, m)) ? NAN : vf_reduce_max(m);
}
EDGE_SIMD_INLINE float fold_min(f32xN a, f32xN b, f32xN c, f32xN d) {
  f32xN m = min_step(min_step(a, b), min_step(c, d));
  return vm_any(vf_unord(m, m)) ? NAN : vf_reduce_min(m);
}

/* STEP combines an accumulator with a vector; IDENTITY is the start value and what lanes past n
 * keep in the tail; FOLD turns the four accumulators into the result. */
#define EDGE_RREDUCE_KERNEL(name, STEP, IDENTITY, FOLD)                              \
  float EDGE_SIMD_FN(f32_r##name)(size_t n, const float *x) {                        \
    const f32xN identity = vf_set1(IDENTITY);                                        \
    f32xN a0 = identity, a1 = identity, a2 = identity, a3 = identity;                \
    size_t i = 0;                                                                    \
    for (; i + 4 * EDGE_SIMD_N <= n; i += 4 * EDGE_SIMD_N) {                         \
      a0 = STEP(a0, vf_loadu(x + i));                                                \
      a1 = STEP(a1, vf_loadu(x + i + EDGE_SIMD_N));                                  \
      a2 = STEP(a2, vf_loadu(x + i + 2 * EDGE_SIMD_N));                              \
      a3 = STEP(a3, vf_loadu(x + i + 3 * EDGE_SIMD_N));                              \
    }                                                                                \
    for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) a0 = STEP(a0, vf_loadu(x + i));   \
    if (i < n) a1 = vf_select(vm_first(n - i), STEP(a1, vf_load_partial(x + i, n - i)), a1); \
    return FOLD(a0, a1, a2, a3);                                                     \
  }

EDGE_RREDUCE_KERNEL(sum, sum_step, 0.0f, fold_sum)
EDGE_RREDUCE_KERNEL(abs_sum, abs_sum_step, 0.0f, fold_sum)
EDGE_RREDUCE_KERNEL(square_sum, square_sum_step, 0.0f, fold_sum)
EDGE_RREDUCE_KERNEL(max, max_step, -INFINITY, fold_max)
EDGE_RREDUCE_KERNEL(min, min_step, INFINITY, fold_min)

/* Columns in blocks of 4 vectors held in registers across all rows, then single vectors, then
 * the partial one. */
#define EDGE_RACCUMULATE_KERNEL(name, STEP)                                                        \
  void EDGE_SIMD_FN(f32_raccumulate_##name)(size_t rows, size_t n, const float *x, size_t stride,   \
                                             float *acc) {                                         \
    size_t j = 0;                                                                                  \
    for (; j + 4 * EDGE_SIMD_N <= n; j += 4 * EDGE_SIMD_N) {                                       \
      f32xN a0 = vf_loadu(acc + j), a1 = vf_loadu(acc + j + EDGE_SIMD_N);                          \
      f32xN a2 = vf_loadu(acc + j + 2 * EDGE_SIMD_N), a3 = vf_loadu(acc + j + 3 * EDGE_SIMD_N);    \
      const float *row = x + j;                                                                    \
      for (size_t r = 0; r < rows; ++r, row += stride) {                                           \
        a0 = STEP(a0, vf_loadu(row));                                                              \
        a1 = STEP(a1, vf_loadu(row + EDGE_SIMD_N));                                                \
        a2 = STEP(a2, vf_loadu(row + 2 * EDGE_SIMD_N));                                            \
        a3 = STEP(a3, vf_loadu(row + 3 * EDGE_SIMD_N));                                            \
      }                                                                                            \
      vf_storeu(acc + j, a0);                                                                      \
      vf_storeu(acc + j + EDGE_SIMD_N, a1);                                                        \
      vf_storeu(acc + j + 2 * EDGE_SIMD_N, a2);                                                    \
      vf_storeu(acc + j + 3 * EDGE_SIMD_N, a3);                                                    \
    }                                                                                              \
    for (; j + EDGE_SIMD_N <= n; j += EDGE_SIMD_N) {                                               \
      f32xN a = vf_loadu(acc + j);                                                                 \
      const float *row = x + j;                                                                    \
      for (size_t r = 0; r < rows; ++r, row += stride) a = STEP(a, vf_loadu(row));                 \
      vf_storeu(acc + j, a);                                                                       \
    }                                                                                              \
    if (j < n) {                                                                                   \
      size_t rest = n - j;                                                                         \
      f32xN a = vf_load_partial(acc + j, rest);                                                    \
      const float *row = x + j;                                                                    \
      for (size_t r = 0; r < rows; ++r, row += stride) a = STEP(a, vf_load_partial(row, rest));    \
      vf_store_partial(acc + j, a, rest);                                                          \
    }                                                                                              \
  }

EDGE_RACCUMULATE_KERNEL(sum, sum_step)
EDGE_RACCUMULATE_KERNEL(abs_sum, abs_sum_step)
EDGE_RACCUMULATE_KERNEL(square_sum, square_sum_step)
EDGE_RACCUMULATE_KERNEL(max, max_step)
EDGE_RACCUMULATE_KERNEL(min, min_step)

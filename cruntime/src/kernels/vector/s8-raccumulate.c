/* int8 column sums into int32 (edge_s8_raccumulate_ukernel): acc[i] += sum over `rows` rows of
 * x[r * stride + i], for the averages of REDUCE MEAN over outer axes. Integer sums are exact and
 * order-free, so every ISA gives the scalar reference's sums. */
#include "../vector.h"
#include "../simd.h"

void EDGE_SIMD_FN(s8_raccumulate_sum)(size_t rows, size_t n, const int8_t *x, size_t stride, int32_t *acc) {
  size_t i = 0;
  for (; i + EDGE_SIMD_N <= n; i += EDGE_SIMD_N) {
    i32xN a = vi_loadu(acc + i);
    for (size_t r = 0; r < rows; ++r) a = vi_add(a, vi_load_s8(x + r * stride + i));
    vi_storeu(acc + i, a);
  }
  for (; i < n; ++i) {
    int32_t a = acc[i];
    for (size_t r = 0; r < rows; ++r) a += x[r * stride + i];
    acc[i] = a;
  }
}

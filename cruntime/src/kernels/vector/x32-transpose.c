/* Transpose of a rows x cols block of 32-bit elements (edge_x32_transpose_ukernel):
 * y[c * y_stride + r] = x[r * x_stride + c]. Done in 32 x 32 tiles so both the reads and the
 * writes of a tile stay within a few cache lines per row; inside a tile the compiler vectorises
 * the 8-wide inner loop for the ISA this file is compiled for. Exact (it only moves bits). */
#include "../vector.h"
#include "../simd.h"

#define EDGE_TRANSPOSE_TILE 32

void EDGE_SIMD_FN(x32_transpose)(size_t rows, size_t cols, const uint32_t *x, size_t x_stride, uint32_t *y,
                                 size_t y_stride) {
  for (size_t r0 = 0; r0 < rows; r0 += EDGE_TRANSPOSE_TILE) {
    size_t r1 = r0 + EDGE_TRANSPOSE_TILE < rows ? r0 + EDGE_TRANSPOSE_TILE : rows;
    for (size_t c0 = 0; c0 < cols; c0 += EDGE_TRANSPOSE_TILE) {
      size_t c1 = c0 + EDGE_TRANSPOSE_TILE < cols ? c0 + EDGE_TRANSPOSE_TILE : cols;
      for (size_t c = c0; c < c1; ++c) {
        uint32_t *out = y + c * y_stride;
        const uint32_t *in = x + c;
        for (size_t r = r0; r < r1; ++r) out[r] = in[r * x_stride];
      }
    }
  }
}

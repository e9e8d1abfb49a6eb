/* Transpose of a rows x cols block of 32-bit elements (edge_x32_transpose_ukernel):
 * y[c * y_stride + r] = x[r * x_stride + c]. Exact (it only moves bits).
 *
 * Two walks, by x's row stride. Usually 32 x 32 tiles, so both the reads and the writes of a tile
 * stay within a few cache lines per row; inside a tile the compiler vectorises the inner loop for
 * the ISA this file is compiled for. When x's rows are a multiple of 2 KiB apart (e.g. NCHW ->
 * NHWC of a 64x64 map), the 32 rows of a tile fall into the same few L1 sets and evict each other
 * on every read (4x slower measured on the 2-core AVX2 VM); there 8 x 8 blocks are copied through
 * a small buffer instead: 8 rows read whole, 8 rows written whole. */
#include <string.h>

#include "../vector.h"
#include "../simd.h"

#define EDGE_TRANSPOSE_TILE 32
#define EDGE_TRANSPOSE_BLOCK 8
/* x_stride (in elements) at which rows alias in a 4 KiB-per-way L1: 2 KiB. */
#define EDGE_TRANSPOSE_ALIASING_STRIDE 512

static void transpose_tiles(size_t rows, size_t cols, const uint32_t *x, size_t x_stride, uint32_t *y,
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

static void transpose_blocks(size_t rows, size_t cols, const uint32_t *x, size_t x_stride, uint32_t *y,
                             size_t y_stride) {
  enum { B = EDGE_TRANSPOSE_BLOCK };
  size_t r0 = 0;
  for (; r0 + B <= rows; r0 += B) {
    size_t c0 = 0;
    for (; c0 + B <= cols; c0 += B) {
      uint32_t block[B][B], column[B];
      for (size_t i = 0; i < B; ++i) memcpy(block[i], x + (r0 + i) * x_stride + c0, sizeof block[i]);
      for (size_t j = 0; j < B; ++j) {
        for (size_t i = 0; i < B; ++i) column[i] = block[i][j];
        memcpy(y + (c0 + j) * y_stride + r0, column, sizeof column);
      }
    }
    for (; c0 < cols; ++c0)
      for (size_t r = r0; r < r0 + B; ++r) y[c0 * y_stride + r] = x[r * x_stride + c0];
  }
  for (; r0 < rows; ++r0)
    for (size_t c = 0; c < cols; ++c) y[c * y_stride + r0] = x[r0 * x_stride + c];
}

void EDGE_SIMD_FN(x32_transpose)(size_t rows, size_t cols, const uint32_t *x, size_t x_stride, uint32_t *y,
                                 size_t y_stride) {
  if (x_stride % EDGE_TRANSPOSE_ALIASING_STRIDE == 0) transpose_blocks(rows, cols, x, x_stride, y, y_stride);
  else transpose_tiles(rows, cols, x, x_stride, y, y_stride);
}

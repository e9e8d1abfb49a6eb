/* int8 x int8 products of two activations (edge_s8_matmul_ukernel): both operands carry zero points,
 * so neither can be folded into a bias the way the qs8 GEMM folds a constant weight's; instead the
 * differences are packed as int16 (a - zp_a and b - zp_b, each in [-255, 255]) and multiplied in
 * pairs by a widening multiply-add, which is exact: one pair sums to at most 2 * 255^2, and the
 * int32 accumulator holds kp <= EDGE_S8_MATMUL_MAX_DEPTH products. Integer sums are exact, so any
 * ISA and tiling gives the reference's accumulators.
 *
 * Operands (edge_s8_matmul_pack_* in ops/qfc.c write them): A is m rows of kp int16 (kp even, the
 * k tail zero), row stride kp; B is ceil(n / 8) panels, each kp / 2 k-pairs of [8 columns][2 k]
 * int16 (columns past n zero). C is m x n int32, row stride c_stride. Tiles of 4 rows x 8 columns;
 * a tile with fewer rows or columns computes into a local tile and stores what is real.
 *
 * Per k-pair, each row's pair multiplies the panel row (16 int16 = 8 column pairs) through simd.h's
 * int16 pair words (vw_madd_pair: vpmaddwd by the pair broadcast on x86, smlal by lane on NEON).
 *
 * The packing of row-major operands is here too (edge_s8_matmul_pack_ukernel), since it costs as
 * much as the products at attention's sizes: 16 bytes of a row widened to int16 minus the zero point
 * at a time (vw_load_s8), and for B the two rows of a k-pair interleaved 8 columns at a time
 * (vw_zip_s8). */
#include "../vector.h"
#include "../simd.h"

#include <string.h>

void EDGE_SIMD_FN(s8_matmul_pack_a)(size_t m, size_t k, const int8_t *a, size_t a_stride, int32_t zero_point,
                                    int16_t *out) {
  const size_t kp = (k + 1) / 2 * 2;
  for (size_t r = 0; r < m; ++r) {
    const int8_t *row = a + r * a_stride;
    int16_t *o = out + r * kp;
    size_t j = 0;
    for (; j + 16 <= k; j += 16) vw_storeu(o + j, vw_load_s8(row + j, (int16_t)zero_point));
    for (; j < k; ++j) o[j] = (int16_t)(row[j] - zero_point);
    if (kp != k) o[k] = 0;
  }
}

void EDGE_SIMD_FN(s8_matmul_pack_b)(size_t k, size_t n, const int8_t *b, size_t b_stride, int32_t zero_point,
                                    int16_t *out) {
  const size_t kp = (k + 1) / 2 * 2;
  for (size_t n0 = 0; n0 < n; n0 += 8) {
    int16_t *panel = out + n0 * kp;
    size_t q = 0;
    if (n - n0 >= 8)
      for (; 2 * q + 1 < k; ++q)
        vw_storeu(panel + 16 * q, vw_zip_s8(b + 2 * q * b_stride + n0, b + (2 * q + 1) * b_stride + n0,
                                            (int16_t)zero_point));
    size_t cols = n - n0 < 8 ? n - n0 : 8;
    for (; q < kp / 2; ++q)
      for (size_t j = 0; j < 8; ++j)
        for (size_t h = 0; h < 2; ++h) {
          size_t kk = 2 * q + h;
          panel[16 * q + 2 * j + h] =
              j < cols && kk < k ? (int16_t)(b[kk * b_stride + n0 + j] - zero_point) : (int16_t)0;
        }
  }
}

/* One tile: rows < 4 of A starting at a (stride kp), panel w; out[r][8] int32. */
static inline void tile_4x8(size_t rows, size_t kp, const int16_t *a, const int16_t *w, int32_t out[4][8]) {
  const int16_t *a0 = a, *a1 = rows > 1 ? a + kp : a0, *a2 = rows > 2 ? a + 2 * kp : a1, *a3 = rows > 3 ? a + 3 * kp : a2;
  i32x8 c0 = vw_zero(), c1 = vw_zero(), c2 = vw_zero(), c3 = vw_zero();
  for (size_t k = 0; k < kp; k += 2, w += 16) {
    const i16x16p b = vw_load_pairs(w);
    c0 = vw_madd_pair(c0, a0 + k, b);
    c1 = vw_madd_pair(c1, a1 + k, b);
    c2 = vw_madd_pair(c2, a2 + k, b);
    c3 = vw_madd_pair(c3, a3 + k, b);
  }
  vw_store_i32(out[0], c0);
  vw_store_i32(out[1], c1);
  vw_store_i32(out[2], c2);
  vw_store_i32(out[3], c3);
}

void EDGE_SIMD_FN(s8_matmul)(size_t m, size_t n, size_t kp, const int16_t *a, const int16_t *b, int32_t *c,
                             size_t c_stride) {
  const size_t panel = kp * 8; /* int16 per panel */
  for (size_t r = 0; r < m; r += 4) {
    size_t rows = m - r < 4 ? m - r : 4;
    for (size_t j = 0; j < n; j += 8) {
      int32_t out[4][8];
      tile_4x8(rows, kp, a + r * kp, b + (j / 8) * panel, out);
      if (n - j >= 8)
        for (size_t i = 0; i < rows; ++i) memcpy(c + (r + i) * c_stride + j, out[i], 8 * sizeof(int32_t));
      else
        for (size_t i = 0; i < rows; ++i) memcpy(c + (r + i) * c_stride + j, out[i], (n - j) * sizeof(int32_t));
    }
  }
}

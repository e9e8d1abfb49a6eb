/* int8 -> int8 table lookup (edge_s8_lut_ukernel): y[i] = table[x[i] + 128], the integer form of
 * any elementwise function of one int8 input (the table is the function sampled at the 256 input
 * codes). A lookup is exact, so every ISA gives the scalar loop's bytes. Where the ISA has a byte
 * shuffle (EDGE_SIMD_HAS_LUT8: avx2, avx512, neon), EDGE_SIMD_LUT8_BYTES at a time through
 * simd.h's vb_lut8; SSE2, scalar and the tail: one byte at a time. */
#include "../vector.h"
#include "../simd.h"

void EDGE_SIMD_FN(s8_lut)(size_t n, const int8_t *x, int8_t *y, const int8_t *table) {
  size_t i = 0;
#if defined(EDGE_SIMD_HAS_LUT8)
  const edge_simd_lut8 t = vb_lut8_prepare(table);
  for (; i + EDGE_SIMD_LUT8_BYTES <= n; i += EDGE_SIMD_LUT8_BYTES) vb_lut8(&t, x + i, y + i);
#endif
  for (; i < n; ++i) y[i] = table[(uint8_t)(x[i] ^ 0x80)];
}

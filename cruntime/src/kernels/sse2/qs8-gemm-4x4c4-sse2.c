/* The sse2 qs8 GEMM and IGEMM tiles, 4 x 4 and 1 x 4, k groups of 4, from the family's template:
 * the x86-64 baseline's int8 path, pmaddwd on int8 sign-extended to int16 and requant.h's
 * epilogue per output (simd-qs8.h). */
#include "../qs8-gemm-tile.h"

EDGE_QS8_GEMM_TILES(4, 4, c4)

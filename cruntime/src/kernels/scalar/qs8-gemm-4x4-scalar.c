/* The scalar qs8 GEMM and IGEMM tiles, 4 x 4 and 1 x 4, k group 1, from the family's template:
 * the reference every SIMD level is tested against byte for byte. */
#include "../qs8-gemm-tile.h"

EDGE_QS8_GEMM_TILES(4, 4, )

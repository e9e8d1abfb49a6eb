/* The neon fp32 GEMM and IGEMM tiles, 8 x 8 and 1 x 8, from the family's template. */
#include "../f32-gemm-tile.h"

EDGE_F32_GEMM_TILES(8, 8)

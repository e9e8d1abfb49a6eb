/* The avx512 fp32 GEMM and IGEMM tiles, 8 x 32 and 1 x 32, from the family's template. */
#include "../f32-gemm-tile.h"

EDGE_F32_GEMM_TILES(8, 32)

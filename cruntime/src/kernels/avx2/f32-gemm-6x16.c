/* The avx2 fp32 GEMM and IGEMM tiles, 6 x 16 and 1 x 16, from the family's template. */
#include "../f32-gemm-tile.h"

EDGE_F32_GEMM_TILES(6, 16)

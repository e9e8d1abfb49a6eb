/* AVX-512BW qs8 GEMM / IGEMM tiles 4x32 and 1x32, k groups of 4: vpmaddwd on int8 widened to int16
 * (exact; see qs8-gemm-avx512.h). 4 rows x 2 vectors x 2 half-sums = 16 accumulators; at
 * 256x256x1024 on Zen 4 this ran 154 GOP/s against 138 for 8x16 and 142 for 6x32. */
#define QS8_AVX512_VNNI 0
#define QS8_AVX512_NV 2
#define QS8_AVX512_MAX_MR 4
#include "qs8-gemm-avx512.h"

QS8_AVX512_DEFINE(4, 32c4, avx512)
QS8_AVX512_DEFINE(1, 32c4, avx512)

/* AVX-512 VNNI qs8 GEMM / IGEMM tiles 8x32 and 1x32, k groups of 4: per row and k group one
 * broadcast of x + 128 (as unsigned bytes) and two vpdpbusd against the signed weights of 32
 * columns (no saturation: vpdpbusd, not vpdpbusds); the packing folds -128 * sum w into the
 * bias (input_offset_128 in the table). 8 x 2 accumulators: two vpdpbusd per broadcast ran
 * 452 GOP/s against 305 for the 8x16 tile (one per broadcast) on Zen 4 at 256x256x1024, one thread
 * (benchmarks/qgemm_bench.c). */
#define QS8_AVX512_VNNI 1
#define QS8_AVX512_NV 2
#define QS8_AVX512_MAX_MR 8
#include "../avx512/qs8-gemm-avx512.h"

QS8_AVX512_DEFINE(8, 32c4, avx512vnni)
QS8_AVX512_DEFINE(1, 32c4, avx512vnni)

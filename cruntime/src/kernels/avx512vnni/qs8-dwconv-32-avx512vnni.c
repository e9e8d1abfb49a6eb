/* AVX-512 VNNI qs8 depthwise, 32 channels, tap pairs through vpdpwssd (one instruction for
 * vpmaddwd + vpaddd; ../avx512/qs8-dwconv-avx512.h). */
#define QS8_DWCONV_VNNI 1
#include "../avx512/qs8-dwconv-avx512.h"

QS8_DWCONV_DEFINE(avx512vnni)

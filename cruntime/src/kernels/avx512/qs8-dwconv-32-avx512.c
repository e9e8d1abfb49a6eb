/* AVX-512BW qs8 depthwise, 32 channels, tap pairs through vpmaddwd (qs8-dwconv-avx512.h). */
#define QS8_DWCONV_VNNI 0
#include "qs8-dwconv-avx512.h"

QS8_DWCONV_DEFINE(avx512)

/* int8 column sums into int32 (edge_s8_raccumulate_ukernel): acc[i] += sum over `rows` rows of
 * x[r * stride + i], for the averages of REDUCE MEAN over outer axes. Integer sums are exact and
 * order-free, so every ISA gives the scalar reference's sums. x86 widens with vpmovsxbd (GCC
 * lowers a generic int8 -> int32 vector conversion lane by lane there); other ISAs use the generic
 * vectors of s8-common.h. */
#include "../vector.h"
#include "../simd.h"
#include "s8-common.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#endif

void EDGE_SIMD_FN(s8_raccumulate_sum)(size_t rows, size_t n, const int8_t *x, size_t stride, int32_t *acc) {
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX512)
  for (; i + 16 <= n; i += 16) {
    __m512i a = _mm512_loadu_si512(acc + i);
    for (size_t r = 0; r < rows; ++r)
      a = _mm512_add_epi32(a, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x + r * stride + i))));
    _mm512_storeu_si512(acc + i, a);
  }
#elif defined(EDGE_SIMD_ISA_AVX2)
  for (; i + 8 <= n; i += 8) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(acc + i));
    for (size_t r = 0; r < rows; ++r)
      a = _mm256_add_epi32(a, _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x + r * stride + i))));
    _mm256_storeu_si256((__m256i *)(acc + i), a);
  }
#else
  for (; i + 16 <= n; i += 16) {
    edge_i32x16 a = i32x16_load(acc + i);
    for (size_t r = 0; r < rows; ++r) a += __builtin_convertvector(s8x16_load(x + r * stride + i), edge_i32x16);
    i32x16_store(acc + i, a);
  }
#endif
  for (; i < n; ++i) {
    int32_t a = acc[i];
    for (size_t r = 0; r < rows; ++r) a += x[r * stride + i];
    acc[i] = a;
  }
}

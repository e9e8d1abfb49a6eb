/* int8 -> int8 table lookup (edge_s8_lut_ukernel): y[i] = table[x[i] + 128], the integer form of
 * any elementwise function of one int8 input (the table is the function sampled at the 256 input
 * codes). A lookup is exact, so every ISA gives the scalar loop's bytes.
 *
 * AVX2 (also what the avx512 objects run: a 64-byte vpermb needs VBMI, which the avx512 level does
 * not require): the byte index u = x ^ 0x80 splits into a high nibble h (which 16-entry slice) and
 * a low nibble l. vpshufb looks l up in all 16 slices (its index has bit 7 clear, so no lane is
 * zeroed), then a tree of 15 vpblendvb picks slice h: level b selects by bit b of h, moved to each
 * byte's sign bit by a 16-bit shift (a byte's bit 7 after shifting its word left by s is its own
 * bit 7 - s, whichever half of the word it is). 32 bytes per step; the tail is a scalar loop.
 * NEON: four 64-byte tables through tbl/tbx (an index past a table leaves tbx's lane alone), the
 * index stepped down by 64 per table. SSE2 has no byte shuffle: the scalar loop, as at the
 * generic level. */
#include "../vector.h"
#include "../simd.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#elif defined(EDGE_SIMD_ISA_NEON)
#include <arm_neon.h>
#endif

void EDGE_SIMD_FN(s8_lut)(size_t n, const int8_t *x, int8_t *y, const int8_t *table) {
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  __m256i slice[16];
  for (int s = 0; s < 16; ++s)
    slice[s] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(table + 16 * s)));
  const __m256i flip = _mm256_set1_epi8((char)0x80), low_nibble = _mm256_set1_epi8(0x0F);
  for (; i + 32 <= n; i += 32) {
    __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x + i)), flip);
    __m256i l = _mm256_and_si256(u, low_nibble);
    __m256i r[16];
    for (int s = 0; s < 16; ++s) r[s] = _mm256_shuffle_epi8(slice[s], l);
    __m256i bit0 = _mm256_slli_epi16(u, 3); /* bit 4 of u (h's bit 0) to bit 7 */
    for (int s = 0; s < 8; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit0);
    __m256i bit1 = _mm256_slli_epi16(u, 2);
    for (int s = 0; s < 4; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit1);
    __m256i bit2 = _mm256_slli_epi16(u, 1);
    for (int s = 0; s < 2; ++s) r[s] = _mm256_blendv_epi8(r[2 * s], r[2 * s + 1], bit2);
    _mm256_storeu_si256((__m256i *)(y + i), _mm256_blendv_epi8(r[0], r[1], u));
  }
#elif defined(EDGE_SIMD_ISA_NEON)
  int8x16x4_t t0 = vld1q_s8_x4(table), t1 = vld1q_s8_x4(table + 64);
  int8x16x4_t t2 = vld1q_s8_x4(table + 128), t3 = vld1q_s8_x4(table + 192);
  const uint8x16_t flip = vdupq_n_u8(0x80), step = vdupq_n_u8(64);
  for (; i + 16 <= n; i += 16) {
    uint8x16_t u = veorq_u8(vreinterpretq_u8_s8(vld1q_s8(x + i)), flip);
    int8x16_t r = vqtbl4q_s8(t0, u);
    u = vsubq_u8(u, step);
    r = vqtbx4q_s8(r, t1, u);
    u = vsubq_u8(u, step);
    r = vqtbx4q_s8(r, t2, u);
    u = vsubq_u8(u, step);
    r = vqtbx4q_s8(r, t3, u);
    vst1q_s8(y + i, r);
  }
#endif
  for (; i < n; ++i) y[i] = table[(uint8_t)(x[i] ^ 0x80)];
}

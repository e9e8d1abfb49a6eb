/* int8 ADD / SUB of two same-layout runs (edge_s8_vadd_ukernel), the issue-4 rule:
 *   y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(s-1)) >> s), lo, hi)
 * (mb already negated for SUB), in 64-bit lanes, so the result is the scalar reference's exactly.
 *
 * x86 (AVX2, AVX-512): the differences are int32 lanes; vpmuldq multiplies the even lanes, and the
 * odd ones after a 32-bit shift down, giving exact 64-bit products. AVX2 has no 64-bit arithmetic
 * shift, so it shifts (x + 2^62) logically and subtracts 2^(62-s): the same floor(x / 2^s), since
 * |x| < 2^41 + 2^61 keeps x + 2^62 in (0, 2^63). The shifted value is clamped in 64 bits before
 * narrowing. NEON widens with smull/smlal and shifts with sshl by -s (arithmetic). SSE2 (no
 * vpmuldq) runs the same formula one element at a time; the tails everywhere do too. */
#include "../vector.h"
#include "../simd.h"

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#elif defined(EDGE_SIMD_ISA_NEON)
#include <arm_neon.h>

/* Four lanes: clamp(((da * ma + db * mb + round) >> s), lo, hi) in 64 bits, narrowed to int32. */
static inline int32x4_t vadd_quarter(int32x4_t da, int32x4_t db, int32x4_t ma, int32x4_t mb, int64x2_t round,
                                     int64x2_t shift, int64x2_t lo, int64x2_t hi) {
  int64x2_t low = vmlal_s32(vmull_s32(vget_low_s32(da), vget_low_s32(ma)), vget_low_s32(db), vget_low_s32(mb));
  int64x2_t high = vmlal_high_s32(vmull_high_s32(da, ma), db, mb);
  low = vshlq_s64(vaddq_s64(low, round), shift);
  high = vshlq_s64(vaddq_s64(high, round), shift);
  low = vbslq_s64(vcgtq_s64(lo, low), lo, low);
  low = vbslq_s64(vcgtq_s64(low, hi), hi, low);
  high = vbslq_s64(vcgtq_s64(lo, high), lo, high);
  high = vbslq_s64(vcgtq_s64(high, hi), hi, high);
  return vcombine_s32(vmovn_s64(low), vmovn_s64(high));
}
#endif

static inline int8_t vadd_one(int8_t a, int8_t b, const edge_s8_vadd_params *p, int64_t rounding, int64_t lo,
                              int64_t hi) {
  int64_t sum = (int64_t)((int32_t)a - p->zp_a) * p->ma + (int64_t)((int32_t)b - p->zp_b) * p->mb + rounding;
  int64_t r = sum >> p->shift;
  r = r < lo ? lo : (r > hi ? hi : r);
  return (int8_t)(r + p->zp_y);
}

void EDGE_SIMD_FN(s8_vadd)(size_t n, const int8_t *a, const int8_t *b, int8_t *y, const edge_s8_vadd_params *p) {
  const int64_t rounding = (int64_t)1 << (p->shift - 1);
  const int64_t lo = (int64_t)p->lo - p->zp_y, hi = (int64_t)p->hi - p->zp_y;
  size_t i = 0;
#if defined(EDGE_SIMD_ISA_AVX512)
  const __m512i zp_a = _mm512_set1_epi32(p->zp_a), zp_b = _mm512_set1_epi32(p->zp_b);
  const __m512i zp_y = _mm512_set1_epi32(p->zp_y);
  const __m512i ma = _mm512_set1_epi64(p->ma), mb = _mm512_set1_epi64(p->mb);
  const __m512i round = _mm512_set1_epi64(rounding), lo64 = _mm512_set1_epi64(lo), hi64 = _mm512_set1_epi64(hi);
  const __m128i count = _mm_cvtsi32_si128(p->shift);
  for (; i + 16 <= n; i += 16) {
    __m512i da = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a + i))), zp_a);
    __m512i db = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + i))), zp_b);
    __m512i even = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epi32(da, ma), _mm512_mul_epi32(db, mb)), round);
    __m512i odd = _mm512_add_epi64(_mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(da, 32), ma),
                                                    _mm512_mul_epi32(_mm512_srli_epi64(db, 32), mb)),
                                   round);
    even = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(even, count), lo64), hi64);
    odd = _mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(odd, count), lo64), hi64);
    __m512i r = _mm512_add_epi32(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)), zp_y);
    _mm_storeu_si128((__m128i *)(y + i), _mm512_cvtepi32_epi8(r));
  }
#elif defined(EDGE_SIMD_ISA_AVX2)
  const __m256i zp_a = _mm256_set1_epi32(p->zp_a), zp_b = _mm256_set1_epi32(p->zp_b);
  const __m256i zp_y = _mm256_set1_epi32(p->zp_y);
  const __m256i ma = _mm256_set1_epi64x(p->ma), mb = _mm256_set1_epi64x(p->mb);
  const __m256i round = _mm256_set1_epi64x(rounding + ((int64_t)1 << 62));
  const __m256i unbias = _mm256_set1_epi64x((int64_t)1 << (62 - p->shift));
  const __m256i lo64 = _mm256_set1_epi64x(lo), hi64 = _mm256_set1_epi64x(hi);
  const __m128i count = _mm_cvtsi32_si128(p->shift);
  for (; i + 8 <= n; i += 8) {
    __m256i da = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(a + i))), zp_a);
    __m256i db = _mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b + i))), zp_b);
    __m256i even = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(da, ma), _mm256_mul_epi32(db, mb)), round);
    __m256i odd = _mm256_add_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(da, 32), ma),
                                                    _mm256_mul_epi32(_mm256_srli_epi64(db, 32), mb)),
                                   round);
    even = _mm256_sub_epi64(_mm256_srl_epi64(even, count), unbias);
    odd = _mm256_sub_epi64(_mm256_srl_epi64(odd, count), unbias);
    even = _mm256_blendv_epi8(even, lo64, _mm256_cmpgt_epi64(lo64, even));
    even = _mm256_blendv_epi8(even, hi64, _mm256_cmpgt_epi64(even, hi64));
    odd = _mm256_blendv_epi8(odd, lo64, _mm256_cmpgt_epi64(lo64, odd));
    odd = _mm256_blendv_epi8(odd, hi64, _mm256_cmpgt_epi64(odd, hi64));
    __m256i r = _mm256_add_epi32(_mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA), zp_y);
    /* r's lanes are in [-128, 127]: the saturating packs only narrow; lane halves are rejoined. */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(r, r), _mm256_setzero_si256());
    __m128i joined = _mm_unpacklo_epi32(_mm256_castsi256_si128(bytes), _mm256_extracti128_si256(bytes, 1));
    _mm_storel_epi64((__m128i *)(y + i), joined);
  }
#elif defined(EDGE_SIMD_ISA_NEON)
  const int32x4_t zp_a = vdupq_n_s32(p->zp_a), zp_b = vdupq_n_s32(p->zp_b), zp_y = vdupq_n_s32(p->zp_y);
  const int32x4_t ma = vdupq_n_s32(p->ma), mb = vdupq_n_s32(p->mb);
  const int64x2_t round = vdupq_n_s64(rounding), shift = vdupq_n_s64(-(int64_t)p->shift);
  const int64x2_t lo64 = vdupq_n_s64(lo), hi64 = vdupq_n_s64(hi);
  for (; i + 8 <= n; i += 8) {
    int16x8_t a16 = vmovl_s8(vld1_s8(a + i)), b16 = vmovl_s8(vld1_s8(b + i));
    int32x4_t r0 = vadd_quarter(vsubq_s32(vmovl_s16(vget_low_s16(a16)), zp_a),
                                vsubq_s32(vmovl_s16(vget_low_s16(b16)), zp_b), ma, mb, round, shift, lo64, hi64);
    int32x4_t r1 = vadd_quarter(vsubq_s32(vmovl_high_s16(a16), zp_a), vsubq_s32(vmovl_high_s16(b16), zp_b), ma, mb,
                                round, shift, lo64, hi64);
    int16x8_t r16 = vcombine_s16(vmovn_s32(vaddq_s32(r0, zp_y)), vmovn_s32(vaddq_s32(r1, zp_y)));
    vst1_s8(y + i, vmovn_s16(r16)); /* in [-128, 127] after the clamp: narrowing only */
  }
#endif
  for (; i < n; ++i) y[i] = vadd_one(a[i], b[i], p, rounding, lo, hi);
}

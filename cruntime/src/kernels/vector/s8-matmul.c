/* int8 x int8 products of two activations (edge_s8_matmul_ukernel): both operands carry zero points,
 * so neither can be folded into a bias the way the qs8 GEMM folds a constant weight's; instead the
 * differences are packed as int16 (a - zp_a and b - zp_b, each in [-255, 255]) and multiplied in
 * pairs by a widening multiply-add, which is exact: one pair sums to at most 2 * 255^2, and the
 * int32 accumulator holds kp <= EDGE_S8_MATMUL_MAX_DEPTH products. Integer sums are exact, so any
 * ISA and tiling gives the reference's accumulators.
 *
 * Operands (edge_s8_matmul_pack_* in ops/qfc.c write them): A is m rows of kp int16 (kp even, the
 * k tail zero), row stride kp; B is ceil(n / 8) panels, each kp / 2 k-pairs of [8 columns][2 k]
 * int16 (columns past n zero). C is m x n int32, row stride c_stride. Tiles of 4 rows x 8 columns;
 * a tile with fewer rows or columns computes into a local tile and stores what is real.
 *
 * AVX2 (and the avx512 objects): per k-pair, vpmaddwd of the panel row (16 int16 = 8 column pairs)
 * by each row's pair broadcast as one int32. SSE2: the same with two 128-bit halves. NEON: vld2q
 * splits a panel row into its two k rows, then smlal by lane of the row's pair.
 *
 * The packing of row-major operands is here too (edge_s8_matmul_pack_ukernel), since it costs as
 * much as the products at attention's sizes: widening by unpack and arithmetic shift (x86, SSE2
 * instructions at every x86 level) or vmovl (NEON), the zero point subtracted in int16, and for
 * B the two rows of a k-pair interleaved by unpacklo/hi (zip on NEON). */
#include "../vector.h"
#include "../simd.h"

#include <string.h>

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
#include <immintrin.h>
#elif defined(EDGE_SIMD_ISA_SSE2)
#include <emmintrin.h>
#elif defined(EDGE_SIMD_ISA_NEON)
#include <arm_neon.h>
#endif

#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512) || defined(EDGE_SIMD_ISA_SSE2)
#define EDGE_S8_MATMUL_X86 1
/* Bytes 0..7 of v sign-extended to int16, minus zp. */
static inline __m128i widen_low(__m128i v, __m128i zp) { return _mm_sub_epi16(_mm_srai_epi16(_mm_unpacklo_epi8(v, v), 8), zp); }
static inline __m128i widen_high(__m128i v, __m128i zp) { return _mm_sub_epi16(_mm_srai_epi16(_mm_unpackhi_epi8(v, v), 8), zp); }
#endif

void EDGE_SIMD_FN(s8_matmul_pack_a)(size_t m, size_t k, const int8_t *a, size_t a_stride, int32_t zero_point,
                                    int16_t *out) {
  const size_t kp = (k + 1) / 2 * 2;
  for (size_t r = 0; r < m; ++r) {
    const int8_t *row = a + r * a_stride;
    int16_t *o = out + r * kp;
    size_t j = 0;
#if defined(EDGE_S8_MATMUL_X86)
    const __m128i zp = _mm_set1_epi16((int16_t)zero_point);
    for (; j + 16 <= k; j += 16) {
      __m128i v = _mm_loadu_si128((const __m128i *)(row + j));
      _mm_storeu_si128((__m128i *)(o + j), widen_low(v, zp));
      _mm_storeu_si128((__m128i *)(o + j + 8), widen_high(v, zp));
    }
#elif defined(EDGE_SIMD_ISA_NEON)
    const int16x8_t zp = vdupq_n_s16((int16_t)zero_point);
    for (; j + 16 <= k; j += 16) {
      int8x16_t v = vld1q_s8(row + j);
      vst1q_s16(o + j, vsubq_s16(vmovl_s8(vget_low_s8(v)), zp));
      vst1q_s16(o + j + 8, vsubq_s16(vmovl_high_s8(v), zp));
    }
#endif
    for (; j < k; ++j) o[j] = (int16_t)(row[j] - zero_point);
    if (kp != k) o[k] = 0;
  }
}

void EDGE_SIMD_FN(s8_matmul_pack_b)(size_t k, size_t n, const int8_t *b, size_t b_stride, int32_t zero_point,
                                    int16_t *out) {
  const size_t kp = (k + 1) / 2 * 2;
  for (size_t n0 = 0; n0 < n; n0 += 8) {
    int16_t *panel = out + n0 * kp;
    size_t q = 0;
    if (n - n0 >= 8) {
#if defined(EDGE_S8_MATMUL_X86)
      const __m128i zp = _mm_set1_epi16((int16_t)zero_point);
      for (; 2 * q + 1 < k; ++q) {
        __m128i r0 = widen_low(_mm_loadl_epi64((const __m128i *)(b + 2 * q * b_stride + n0)), zp);
        __m128i r1 = widen_low(_mm_loadl_epi64((const __m128i *)(b + (2 * q + 1) * b_stride + n0)), zp);
        _mm_storeu_si128((__m128i *)(panel + 16 * q), _mm_unpacklo_epi16(r0, r1));
        _mm_storeu_si128((__m128i *)(panel + 16 * q + 8), _mm_unpackhi_epi16(r0, r1));
      }
#elif defined(EDGE_SIMD_ISA_NEON)
      const int16x8_t zp = vdupq_n_s16((int16_t)zero_point);
      for (; 2 * q + 1 < k; ++q) {
        int16x8x2_t pair = {{vsubq_s16(vmovl_s8(vld1_s8(b + 2 * q * b_stride + n0)), zp),
                             vsubq_s16(vmovl_s8(vld1_s8(b + (2 * q + 1) * b_stride + n0)), zp)}};
        vst2q_s16(panel + 16 * q, pair); /* interleaves the two rows */
      }
#endif
    }
    size_t cols = n - n0 < 8 ? n - n0 : 8;
    for (; q < kp / 2; ++q)
      for (size_t j = 0; j < 8; ++j)
        for (size_t h = 0; h < 2; ++h) {
          size_t kk = 2 * q + h;
          panel[16 * q + 2 * j + h] =
              j < cols && kk < k ? (int16_t)(b[kk * b_stride + n0 + j] - zero_point) : (int16_t)0;
        }
  }
}

/* One tile: rows < 4 of A starting at a (stride kp), panel w; out[r][8] int32. */
static inline void tile_4x8(size_t rows, size_t kp, const int16_t *a, const int16_t *w, int32_t out[4][8]) {
  const int16_t *a0 = a, *a1 = rows > 1 ? a + kp : a0, *a2 = rows > 2 ? a + 2 * kp : a1, *a3 = rows > 3 ? a + 3 * kp : a2;
#if defined(EDGE_SIMD_ISA_AVX2) || defined(EDGE_SIMD_ISA_AVX512)
  __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0;
  for (size_t k = 0; k < kp; k += 2, w += 16) {
    __m256i b = _mm256_loadu_si256((const __m256i *)w);
    int32_t p0, p1, p2, p3;
    memcpy(&p0, a0 + k, 4);
    memcpy(&p1, a1 + k, 4);
    memcpy(&p2, a2 + k, 4);
    memcpy(&p3, a3 + k, 4);
    c0 = _mm256_add_epi32(c0, _mm256_madd_epi16(_mm256_set1_epi32(p0), b));
    c1 = _mm256_add_epi32(c1, _mm256_madd_epi16(_mm256_set1_epi32(p1), b));
    c2 = _mm256_add_epi32(c2, _mm256_madd_epi16(_mm256_set1_epi32(p2), b));
    c3 = _mm256_add_epi32(c3, _mm256_madd_epi16(_mm256_set1_epi32(p3), b));
  }
  _mm256_storeu_si256((__m256i *)out[0], c0);
  _mm256_storeu_si256((__m256i *)out[1], c1);
  _mm256_storeu_si256((__m256i *)out[2], c2);
  _mm256_storeu_si256((__m256i *)out[3], c3);
#elif defined(EDGE_SIMD_ISA_SSE2)
  __m128i c0l = _mm_setzero_si128(), c0h = c0l, c1l = c0l, c1h = c0l, c2l = c0l, c2h = c0l, c3l = c0l, c3h = c0l;
  for (size_t k = 0; k < kp; k += 2, w += 16) {
    __m128i bl = _mm_loadu_si128((const __m128i *)w), bh = _mm_loadu_si128((const __m128i *)(w + 8));
    int32_t p0, p1, p2, p3;
    memcpy(&p0, a0 + k, 4);
    memcpy(&p1, a1 + k, 4);
    memcpy(&p2, a2 + k, 4);
    memcpy(&p3, a3 + k, 4);
    __m128i v0 = _mm_set1_epi32(p0), v1 = _mm_set1_epi32(p1), v2 = _mm_set1_epi32(p2), v3 = _mm_set1_epi32(p3);
    c0l = _mm_add_epi32(c0l, _mm_madd_epi16(v0, bl));
    c0h = _mm_add_epi32(c0h, _mm_madd_epi16(v0, bh));
    c1l = _mm_add_epi32(c1l, _mm_madd_epi16(v1, bl));
    c1h = _mm_add_epi32(c1h, _mm_madd_epi16(v1, bh));
    c2l = _mm_add_epi32(c2l, _mm_madd_epi16(v2, bl));
    c2h = _mm_add_epi32(c2h, _mm_madd_epi16(v2, bh));
    c3l = _mm_add_epi32(c3l, _mm_madd_epi16(v3, bl));
    c3h = _mm_add_epi32(c3h, _mm_madd_epi16(v3, bh));
  }
  _mm_storeu_si128((__m128i *)out[0], c0l);
  _mm_storeu_si128((__m128i *)(out[0] + 4), c0h);
  _mm_storeu_si128((__m128i *)out[1], c1l);
  _mm_storeu_si128((__m128i *)(out[1] + 4), c1h);
  _mm_storeu_si128((__m128i *)out[2], c2l);
  _mm_storeu_si128((__m128i *)(out[2] + 4), c2h);
  _mm_storeu_si128((__m128i *)out[3], c3l);
  _mm_storeu_si128((__m128i *)(out[3] + 4), c3h);
#elif defined(EDGE_SIMD_ISA_NEON)
  int32x4_t c0l = vdupq_n_s32(0), c0h = c0l, c1l = c0l, c1h = c0l, c2l = c0l, c2h = c0l, c3l = c0l, c3h = c0l;
  for (size_t k = 0; k < kp; k += 2, w += 16) {
    int16x8x2_t b = vld2q_s16(w); /* val[0]: the 8 columns at k, val[1]: at k + 1 */
    uint32_t q0, q1, q2, q3; /* each row's pair as one word: lane 2i = a[k], lane 2i + 1 = a[k + 1] */
    memcpy(&q0, a0 + k, 4);
    memcpy(&q1, a1 + k, 4);
    memcpy(&q2, a2 + k, 4);
    memcpy(&q3, a3 + k, 4);
    int16x4_t p01 = vreinterpret_s16_u32(vcreate_u32((uint64_t)q1 << 32 | q0));
    int16x4_t p23 = vreinterpret_s16_u32(vcreate_u32((uint64_t)q3 << 32 | q2));
    c0l = vmlal_lane_s16(c0l, vget_low_s16(b.val[0]), p01, 0);
    c0h = vmlal_lane_s16(c0h, vget_high_s16(b.val[0]), p01, 0);
    c0l = vmlal_lane_s16(c0l, vget_low_s16(b.val[1]), p01, 1);
    c0h = vmlal_lane_s16(c0h, vget_high_s16(b.val[1]), p01, 1);
    c1l = vmlal_lane_s16(c1l, vget_low_s16(b.val[0]), p01, 2);
    c1h = vmlal_lane_s16(c1h, vget_high_s16(b.val[0]), p01, 2);
    c1l = vmlal_lane_s16(c1l, vget_low_s16(b.val[1]), p01, 3);
    c1h = vmlal_lane_s16(c1h, vget_high_s16(b.val[1]), p01, 3);
    c2l = vmlal_lane_s16(c2l, vget_low_s16(b.val[0]), p23, 0);
    c2h = vmlal_lane_s16(c2h, vget_high_s16(b.val[0]), p23, 0);
    c2l = vmlal_lane_s16(c2l, vget_low_s16(b.val[1]), p23, 1);
    c2h = vmlal_lane_s16(c2h, vget_high_s16(b.val[1]), p23, 1);
    c3l = vmlal_lane_s16(c3l, vget_low_s16(b.val[0]), p23, 2);
    c3h = vmlal_lane_s16(c3h, vget_high_s16(b.val[0]), p23, 2);
    c3l = vmlal_lane_s16(c3l, vget_low_s16(b.val[1]), p23, 3);
    c3h = vmlal_lane_s16(c3h, vget_high_s16(b.val[1]), p23, 3);
  }
  vst1q_s32(out[0], c0l);
  vst1q_s32(out[0] + 4, c0h);
  vst1q_s32(out[1], c1l);
  vst1q_s32(out[1] + 4, c1h);
  vst1q_s32(out[2], c2l);
  vst1q_s32(out[2] + 4, c2h);
  vst1q_s32(out[3], c3l);
  vst1q_s32(out[3] + 4, c3h);
#else
  for (size_t r = 0; r < 4; ++r)
    for (size_t j = 0; j < 8; ++j) out[r][j] = 0;
  const int16_t *rows_a[4] = {a0, a1, a2, a3};
  for (size_t k = 0; k < kp; k += 2, w += 16)
    for (size_t r = 0; r < 4; ++r)
      for (size_t j = 0; j < 8; ++j)
        out[r][j] += (int32_t)rows_a[r][k] * w[2 * j] + (int32_t)rows_a[r][k + 1] * w[2 * j + 1];
#endif
}

void EDGE_SIMD_FN(s8_matmul)(size_t m, size_t n, size_t kp, const int16_t *a, const int16_t *b, int32_t *c,
                             size_t c_stride) {
  const size_t panel = kp * 8; /* int16 per panel */
  for (size_t r = 0; r < m; r += 4) {
    size_t rows = m - r < 4 ? m - r : 4;
    for (size_t j = 0; j < n; j += 8) {
      int32_t out[4][8];
      tile_4x8(rows, kp, a + r * kp, b + (j / 8) * panel, out);
      if (n - j >= 8)
        for (size_t i = 0; i < rows; ++i) memcpy(c + (r + i) * c_stride + j, out[i], 8 * sizeof(int32_t));
      else
        for (size_t i = 0; i < rows; ++i) memcpy(c + (r + i) * c_stride + j, out[i], (n - j) * sizeof(int32_t));
    }
  }
}

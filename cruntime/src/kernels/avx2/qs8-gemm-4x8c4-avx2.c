/* AVX2 qs8 GEMM / IGEMM tiles, 4x8 and 1x8, k groups of 4 (contracts in qgemm.h).
 *
 * Products: vpmaddwd on int8 values sign-extended to int16, which is exact (|x * w| <= 2^14, a
 * pair sums to at most 2^15 in magnitude, within int32); vpmaddubsw is not used because its
 * int16 pair sums saturate. The panel's 8 columns x 4 k widen to two vectors of 4 columns, shared
 * by the rows; a row's k group, as four int16 in every 64-bit lane, meets both, so each 32-bit
 * accumulator lane holds half of one column's group (k 0-1 or k 2-3), and one hadd at the end
 * joins the halves.
 *
 * Where the time went (256x256x1024, one Zen 3 core; benchmarks/roofline.c gives the peaks): a
 * vpmaddwd + vpaddd pair per 16 multiply-adds can reach 1.5x the fp32 FMA peak, but the first
 * version of this loop widened each row's group with a lane-crossing vpmovsxbw per row and step,
 * which took as many cycles as the multiply-adds (87 GOP/s, 0.87x the fp32 GEMM). Now:
 *  - a GEMM tile whose rows serve more than one panel widens them once into a stack buffer (k
 *    padded to whole groups), and the loop takes a row's group by one broadcast load;
 *  - otherwise (one panel, rows longer than WIDE_K, or an IGEMM's taps, where widening once
 *    measured slower) a row's group is broadcast by a load and sign-extended in-lane by a compare
 *    and an unpack (widen_broadcast4);
 *  - the accumulators are named variables: in arrays, or with six rows, GCC 12 spilled some to
 *    the stack every step (73-97 GOP/s); with four rows 8 accumulators, 2 weight vectors and the
 *    row fit the 16 registers;
 *  - the bias is loaded after the sums, not held across them;
 *  - panels whose shifts are all >= 33 requantize in 32 bits (qs8_requantize8_fast).
 * 137 GOP/s, 1.36x the fp32 GEMM at that shape. The register allocation is fragile: narrowing
 * widen_tile to the one tap it now serves made GCC 12 spill an accumulator in the int8-mode copy
 * (70 GOP/s), so it keeps its general form; rerun `make qgemm-bench` after any change here.
 *
 * Requantization: qs8-avx2.h. */
#include "qs8-avx2.h"

#define NR 8
#define KR 4
#define MAX_MR 4
/* int16 per row of the widened tile: 4 rows take 36 KiB of stack */
#define WIDE_K 4608

static inline __attribute__((always_inline)) const int8_t *tap_row(const int8_t *const *a, size_t t, size_t m,
                                                                    size_t TILE_MR, size_t input_offset,
                                                                    const int8_t *zero) {
  const int8_t *r = a[t * TILE_MR + m];
  return r == zero ? r : r + input_offset;
}

/* Every tap of the tile's rows sign-extended once to int16, each tap's k padded with zeros to
 * whole groups. */
static inline __attribute__((always_inline)) void widen_tile(const size_t MR, const size_t TILE_MR, size_t kc,
                                                             size_t ks, const int8_t *const *a, size_t input_offset,
                                                             const int8_t *zero, int16_t (*out)[WIDE_K]) {
  const size_t kc_padded = (kc + KR - 1) & ~(size_t)(KR - 1);
  for (size_t t = 0; t < ks; ++t)
    for (size_t m = 0; m < MR; ++m) {
      const int8_t *r = tap_row(a, t, m, TILE_MR, input_offset, zero);
      int16_t *dst = out[m] + t * kc_padded;
      size_t k = 0;
      for (; k + 16 <= kc; k += 16)
        _mm256_storeu_si256((__m256i *)(dst + k), _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r + k))));
      for (; k < kc; ++k) dst[k] = r[k];
      for (; k < kc_padded; ++k) dst[k] = 0;
    }
}

/* The four int16 of a widened group in every 64-bit lane: one load-only broadcast. */
static inline __attribute__((always_inline)) __m256i broadcast_group(const int16_t *g) {
  double d;
  memcpy(&d, g, sizeof d);
  return _mm256_castpd_si256(_mm256_set1_pd(d));
}

/* Row m's step: its group x against the panel's two weight vectors. */
#define ROW_STEP(m, x_expr)                                              \
  if (MR > (m)) {                                                        \
    const __m256i x = (x_expr);                                          \
    lo##m = _mm256_add_epi32(lo##m, _mm256_madd_epi16(x, w_lo));         \
    hi##m = _mm256_add_epi32(hi##m, _mm256_madd_epi16(x, w_hi));         \
  }
#define NEXT_WEIGHTS()                                                                        \
  const __m256i w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));            \
  const __m256i w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(p + 16)));     \
  p += NR * KR

/* One copy per path (WIDE: rows widened once; else in the loop), so each loop has the registers
 * to itself. */
static inline __attribute__((always_inline)) void qs8_tile_path(
    const bool WIDE, const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks,
    const int8_t *const *a, size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride,
    const bool dq, const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  const size_t kc_full = kc & ~(size_t)(KR - 1), k_rest = kc - kc_full;
  const size_t span = ks * ((kc + KR - 1) & ~(size_t)(KR - 1));
  int16_t widened[MAX_MR][WIDE_K] __attribute__((aligned(32))); /* untouched, and dropped, without WIDE */
  if (WIDE) widen_tile(MR, TILE_MR, kc, ks, a, input_offset, zero, widened);
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    const int8_t *bias_p = p;
    p += NR * 4;
    __m256i lo0 = _mm256_setzero_si256(), hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0, lo3 = lo0, hi3 = lo0;
    if (WIDE) {
      for (size_t g = 0; g < span; g += KR) {
        NEXT_WEIGHTS();
        ROW_STEP(0, broadcast_group(widened[0] + g))
        ROW_STEP(1, broadcast_group(widened[1] + g))
        ROW_STEP(2, broadcast_group(widened[2] + g))
        ROW_STEP(3, broadcast_group(widened[3] + g))
      }
    } else {
      for (size_t t = 0; t < ks; ++t) {
        const int8_t *r0 = tap_row(a, t, 0, TILE_MR, input_offset, zero);
        const int8_t *r1 = MR > 1 ? tap_row(a, t, 1, TILE_MR, input_offset, zero) : r0;
        const int8_t *r2 = MR > 2 ? tap_row(a, t, 2, TILE_MR, input_offset, zero) : r0;
        const int8_t *r3 = MR > 3 ? tap_row(a, t, 3, TILE_MR, input_offset, zero) : r0;
        size_t k = 0;
        for (; k < kc_full; k += KR) {
          NEXT_WEIGHTS();
          ROW_STEP(0, widen_broadcast4(load4(r0 + k)))
          ROW_STEP(1, widen_broadcast4(load4(r1 + k)))
          ROW_STEP(2, widen_broadcast4(load4(r2 + k)))
          ROW_STEP(3, widen_broadcast4(load4(r3 + k)))
        }
        if (k_rest) {
          NEXT_WEIGHTS();
          ROW_STEP(0, widen_broadcast4(load_tail(r0 + k, k_rest)))
          ROW_STEP(1, widen_broadcast4(load_tail(r1 + k, k_rest)))
          ROW_STEP(2, widen_broadcast4(load_tail(r2 + k, k_rest)))
          ROW_STEP(3, widen_broadcast4(load_tail(r3 + k, k_rest)))
        }
      }
    }
    const __m256i acc_lo[MAX_MR] = {lo0, lo1, lo2, lo3}, acc_hi[MAX_MR] = {hi0, hi1, hi2, hi3};
    /* hadd per 128-bit lane gives columns (0 1 4 5 | 2 3 6 7); the permute puts them in order */
    __m256i acc[MAX_MR];
    const __m256i bias = _mm256_loadu_si256((const __m256i *)bias_p);
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) acc[m] = _mm256_add_epi32(
        bias, _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc_lo[m], acc_hi[m]), _MM_SHUFFLE(3, 1, 2, 0)));
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    if (dq) {
      const __m256 scale = _mm256_loadu_ps((const float *)p), fbias = _mm256_loadu_ps((const float *)p + NR);
      const __m256 vmin = _mm256_set1_ps(dqp->min), vmax = _mm256_set1_ps(dqp->max);
      const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)cols), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
        if (m >= mr) break;
        const __m256 s = _mm256_mul_ps(_mm256_set1_ps(dqp->row_scale[m * dqp->row_scale_stride]), scale);
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[m]), s), fbias);
        v = _mm256_min_ps(vmax, _mm256_max_ps(vmin, v));
        float *out = (float *)c + m * c_stride + n0;
        if (cols == NR) _mm256_storeu_ps(out, v);
        else _mm256_maskstore_ps(out, mask, v);
      }
    } else {
      const __m256i multiplier = _mm256_loadu_si256((const __m256i *)p);
      const __m256i shift = _mm256_loadu_si256((const __m256i *)(p + NR * 4));
      const __m256i zp = _mm256_set1_epi32(rq->zero_point);
      /* every shift >= 33 (nearly every layer; a partial panel's padding has 0): the 32-bit path */
      const bool fast = !_mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(33), shift));
      const qs8_requant8_fast f = qs8_requant8_fast_prepare(multiplier, shift);
      const __m128i qmin8 = _mm_set1_epi8((char)rq->qmin), qmax8 = _mm_set1_epi8((char)rq->qmax);
      const __m256i lo = _mm256_set1_epi64x(rq->qmin - rq->zero_point), hi = _mm256_set1_epi64x(rq->qmax - rq->zero_point);
      _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
        if (m >= mr) break;
        __m128i v8;
        if (fast) v8 = requantize8_fast_s8(acc[m], &f, zp, qmin8, qmax8);
        else v8 = requantize8_s8(acc[m], multiplier, shift, lo, hi, zp);
        int8_t *out = (int8_t *)c + m * c_stride + n0;
        if (cols == NR) _mm_storel_epi64((__m128i *)out, v8);
        else {
          int8_t bytes[16];
          _mm_storeu_si128((__m128i *)bytes, v8);
          memcpy(out, bytes, cols);
        }
      }
    }
    p += 2 * NR * 4;
  }
}

static inline __attribute__((always_inline)) void qs8_tile_avx2(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  /* Widening once pays for a plain GEMM whose rows serve more than one panel (it costs about what
   * one panel's in-loop widening does) and fit the buffer. Not for the taps of an IGEMM: there it
   * measured slower than widening in the loop (ResNet-18 int8 at 1 thread: 52 against 37 ms). */
  if (nc > NR && ks == 1 && ((kc + KR - 1) & ~(size_t)(KR - 1)) <= WIDE_K)
    qs8_tile_path(true, MR, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, dq, rq, dqp);
  else
    qs8_tile_path(false, MR, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, dq, rq, dqp);
}

#define GEMM_ROWS(MR)                                                  \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

#define DEFINE_QS8_AVX2(MR)                                                                                      \
  void edge_qs8_gemm_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride, \
                                              const void *w, int8_t *c, size_t c_stride,                         \
                                              const edge_qs8_requant_params *params) {                           \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_avx2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                    \
  }                                                                                                              \
  void edge_qs8_gemm_dq_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, const int8_t *a,               \
                                                 size_t a_stride, const void *w, float *c, size_t c_stride,      \
                                                 const edge_qs8_dq_params *params) {                             \
    GEMM_ROWS(MR);                                                                                               \
    qs8_tile_avx2(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                     \
  }                                                                                                              \
  void edge_qs8_igemm_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks,                       \
                                               const int8_t *const *a, const void *w, int8_t *c,                 \
                                               size_t c_stride, size_t input_offset, const int8_t *zero,         \
                                               const edge_qs8_requant_params *params) {                          \
    qs8_tile_avx2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params, NULL);       \
  }                                                                                                              \
  void edge_qs8_igemm_dq_ukernel_##MR##x8c4__avx2(size_t mr, size_t nc, size_t kc, size_t ks,                    \
                                                  const int8_t *const *a, const void *w, float *c,               \
                                                  size_t c_stride, size_t input_offset, const int8_t *zero,      \
                                                  const edge_qs8_dq_params *params) {                            \
    qs8_tile_avx2(MR, MAX_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL, params);        \
  }

DEFINE_QS8_AVX2(4)
DEFINE_QS8_AVX2(1)

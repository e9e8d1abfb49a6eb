/* Shared pieces of the NEON qs8 kernels (neon: widening multiply-accumulate; neondot: sdot): the
 * bit-exact requantization and the epilogue stores (contracts in qgemm.h, rule in requant.h).
 *
 * requantize: 64-bit products (smull), the rounding term added in 64 bits, then SSHL by a
 * negative count, which is an arithmetic right shift that truncates toward -infinity (not the
 * rounding SRSHL: the rounding is already in the sum, and adding it twice would be wrong for
 * exact halves). Saturating narrowing to int32 followed by the clamp to [qmin - zp, qmax - zp]
 * gives the same value as clamping the 64-bit number, because both bounds are within int32. */
#include <arm_neon.h>
#include <string.h>

#include "../qgemm.h"

static inline __attribute__((always_inline)) int32x4_t qs8_neon_requantize4(int32x4_t acc, int32x4_t multiplier,
                                                                           int32x4_t shift, int32x4_t lo,
                                                                           int32x4_t hi) {
  const int64x2_t one = vdupq_n_s64(1);
  const int64x2_t shift_lo = vmovl_s32(vget_low_s32(shift)), shift_hi = vmovl_high_s32(shift);
  int64x2_t p_lo = vmull_s32(vget_low_s32(acc), vget_low_s32(multiplier));
  int64x2_t p_hi = vmull_high_s32(acc, multiplier);
  p_lo = vaddq_s64(p_lo, vshlq_s64(one, vsubq_s64(shift_lo, one)));
  p_hi = vaddq_s64(p_hi, vshlq_s64(one, vsubq_s64(shift_hi, one)));
  p_lo = vshlq_s64(p_lo, vnegq_s64(shift_lo));
  p_hi = vshlq_s64(p_hi, vnegq_s64(shift_hi));
  const int32x4_t v = vcombine_s32(vqmovn_s64(p_lo), vqmovn_s64(p_hi));
  return vmaxq_s32(lo, vminq_s32(hi, v));
}

/* requantize(acc) of 4 lanes whose every shift s is >= 32, exactly, unclamped (|result| <= 2^30).
 * sqdmulh gives H = floor(2 * acc * m / 2^32) = floor(P / 2^31) for P = acc * m (it saturates
 * only for acc = m = INT32_MIN, and m >= 0); then (P + 2^(s-1)) >> s == (H + 2^(s-32)) >> (s-31),
 * because 2^(s-1) is a multiple of 2^31 and the dropped low bits add less than 1 to an integer
 * numerator before a floor division by 2^(s-31). That right side is exactly what srshl by
 * -(s - 31) computes (rounding shift, on a wider intermediate, so the sum cannot wrap).
 * right_shift holds 31 - s per lane. */
static inline __attribute__((always_inline)) int32x4_t qs8_neon_requantize4_fast(int32x4_t acc, int32x4_t multiplier,
                                                                                int32x4_t right_shift) {
  return vrshlq_s32(vqdmulhq_s32(acc, multiplier), right_shift);
}

/* 8 columns of one row: int8 (requantized) or float (dynamic) out, the first `cols` stored. */
static inline __attribute__((always_inline)) void qs8_neon_store8(int32x4_t acc0, int32x4_t acc1, const int8_t *p,
                                                                  size_t cols, void *out, const bool dq,
                                                                  const edge_qs8_requant_params *rq,
                                                                  const edge_qs8_dq_params *dqp, float row_scale) {
  if (dq) {
    const float32x4_t scale0 = vld1q_f32((const float *)p), scale1 = vld1q_f32((const float *)p + 4);
    const float32x4_t bias0 = vld1q_f32((const float *)p + 8), bias1 = vld1q_f32((const float *)p + 12);
    const float32x4_t vmin = vdupq_n_f32(dqp->min), vmax = vdupq_n_f32(dqp->max), rs = vdupq_n_f32(row_scale);
    float32x4_t v0 = vaddq_f32(vmulq_f32(vcvtq_f32_s32(acc0), vmulq_f32(rs, scale0)), bias0);
    float32x4_t v1 = vaddq_f32(vmulq_f32(vcvtq_f32_s32(acc1), vmulq_f32(rs, scale1)), bias1);
    v0 = vminq_f32(vmax, vmaxq_f32(vmin, v0));
    v1 = vminq_f32(vmax, vmaxq_f32(vmin, v1));
    if (cols == 8) {
      vst1q_f32((float *)out, v0);
      vst1q_f32((float *)out + 4, v1);
    } else {
      float tmp[8];
      vst1q_f32(tmp, v0);
      vst1q_f32(tmp + 4, v1);
      memcpy(out, tmp, cols * sizeof(float));
    }
  } else {
    const int32x4_t lo = vdupq_n_s32(rq->qmin - rq->zero_point), hi = vdupq_n_s32(rq->qmax - rq->zero_point);
    const int32x4_t zp = vdupq_n_s32(rq->zero_point);
    const int32x4_t m0 = vld1q_s32((const int32_t *)p), m1 = vld1q_s32((const int32_t *)p + 4);
    const int32x4_t s0 = vld1q_s32((const int32_t *)p + 8), s1 = vld1q_s32((const int32_t *)p + 12);
    const int32x4_t v0 = vaddq_s32(qs8_neon_requantize4(acc0, m0, s0, lo, hi), zp);
    const int32x4_t v1 = vaddq_s32(qs8_neon_requantize4(acc1, m1, s1, lo, hi), zp);
    const int8x8_t v8 = vqmovn_s16(vcombine_s16(vqmovn_s32(v0), vqmovn_s32(v1)));
    if (cols == 8) vst1_s8((int8_t *)out, v8);
    else {
      int8_t tmp[8];
      vst1_s8(tmp, v8);
      memcpy(out, tmp, cols);
    }
  }
}

#define QS8_NEON_GEMM_ROWS(MR)                                         \
  const int8_t *rows[MR];                                              \
  for (size_t m = 0; m < (MR); ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride

/* The four entry points of one tile, edge_qs8_{gemm,gemm_dq,igemm,igemm_dq}_ukernel_<MR>x<tile>__<isa>,
 * over the file's template tile_fn(MR, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c,
 * c_stride, dq, rq, dqp). */
#define QS8_NEON_DEFINE(MR, TILE_MR, tile, isa, tile_fn)                                                          \
  void edge_qs8_gemm_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a,             \
                                                    size_t a_stride, const void *w, int8_t *c, size_t c_stride,   \
                                                    const edge_qs8_requant_params *params) {                      \
    QS8_NEON_GEMM_ROWS(MR);                                                                                       \
    tile_fn(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, false, params, NULL);                           \
  }                                                                                                               \
  void edge_qs8_gemm_dq_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, const int8_t *a,          \
                                                       size_t a_stride, const void *w, float *c, size_t c_stride, \
                                                       const edge_qs8_dq_params *params) {                        \
    QS8_NEON_GEMM_ROWS(MR);                                                                                       \
    tile_fn(MR, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, true, NULL, params);                            \
  }                                                                                                               \
  void edge_qs8_igemm_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks,                  \
                                                     const int8_t *const *a, const void *w, int8_t *c,            \
                                                     size_t c_stride, size_t input_offset, const int8_t *zero,    \
                                                     const edge_qs8_requant_params *params) {                     \
    tile_fn(MR, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false, params, NULL);             \
  }                                                                                                               \
  void edge_qs8_igemm_dq_ukernel_##MR##x##tile##__##isa(size_t mr, size_t nc, size_t kc, size_t ks,               \
                                                        const int8_t *const *a, const void *w, float *c,          \
                                                        size_t c_stride, size_t input_offset, const int8_t *zero, \
                                                        const edge_qs8_dq_params *params) {                       \
    tile_fn(MR, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true, NULL, params);              \
  }

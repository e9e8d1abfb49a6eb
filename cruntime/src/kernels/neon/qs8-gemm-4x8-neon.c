/* NEON qs8 GEMM / IGEMM tiles 4x8 and 1x8, k groups of 1 (contracts in qgemm.h), for cores
 * without the dot product: each panel row of 8 weights is widened to int16 once and multiplied
 * by each row's int16 x with a widening multiply-accumulate by lane (smlal), exact in int32;
 * rows are loaded and widened 8 k at a time, the last k < 8 one at a time. */
#include "qs8-neon.h"

#define NR 8
#define MAX_MR 4

static inline __attribute__((always_inline)) void qs8_tile_neon(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    int32x4_t acc0[MAX_MR], acc1[MAX_MR];
    const int32x4_t bias0 = vld1q_s32((const int32_t *)p), bias1 = vld1q_s32((const int32_t *)p + 4);
    p += NR * 4;
    for (size_t m = 0; m < MR; ++m) {
      acc0[m] = bias0;
      acc1[m] = bias1;
    }
    for (size_t t = 0; t < ks; ++t) {
      const int8_t *rows[MAX_MR];
      for (size_t m = 0; m < MR; ++m) {
        const int8_t *r = a[t * TILE_MR + m];
        rows[m] = r == zero ? r : r + input_offset;
      }
      size_t k = 0;
      /* 8 k per load of each row, widened once; the multiply-accumulate by lane picks k */
      for (; k + 8 <= kc; k += 8) {
        int16x8_t x[MAX_MR];
        for (size_t m = 0; m < MR; ++m) x[m] = vmovl_s8(vld1_s8(rows[m] + k));
#define QS8_NEON_K(lane)                                                  \
  {                                                                       \
    const int16x8_t w16 = vmovl_s8(vld1_s8(p));                           \
    p += NR;                                                              \
    for (size_t m = 0; m < MR; ++m) {                                     \
      acc0[m] = vmlal_laneq_s16(acc0[m], vget_low_s16(w16), x[m], lane);  \
      acc1[m] = vmlal_high_laneq_s16(acc1[m], w16, x[m], lane);           \
    }                                                                     \
  }
        QS8_NEON_K(0)
        QS8_NEON_K(1)
        QS8_NEON_K(2)
        QS8_NEON_K(3)
        QS8_NEON_K(4)
        QS8_NEON_K(5)
        QS8_NEON_K(6)
        QS8_NEON_K(7)
#undef QS8_NEON_K
      }
      for (; k < kc; ++k) {
        const int16x8_t w16 = vmovl_s8(vld1_s8(p));
        p += NR;
        for (size_t m = 0; m < MR; ++m) {
          const int16_t x = rows[m][k];
          acc0[m] = vmlal_n_s16(acc0[m], vget_low_s16(w16), x);
          acc1[m] = vmlal_high_n_s16(acc1[m], w16, x);
        }
      }
    }
    const size_t cols = nc - n0 < NR ? nc - n0 : NR;
    for (size_t m = 0; m < MR && m < mr; ++m) {
      void *out = dq ? (void *)((float *)c + m * c_stride + n0) : (void *)((int8_t *)c + m * c_stride + n0);
      qs8_neon_store8(acc0[m], acc1[m], p, cols, out, dq, rq, dqp,
                      dq ? dqp->row_scale[m * dqp->row_scale_stride] : 0.0f);
    }
    p += 2 * NR * 4;
  }
}

QS8_NEON_DEFINE(4, MAX_MR, 8, neon, qs8_tile_neon)
QS8_NEON_DEFINE(1, MAX_MR, 8, neon, qs8_tile_neon)

/* NEON dot-product qs8 GEMM / IGEMM tiles 4x8 and 1x8, k groups of 4 (contracts in qgemm.h): 16
 * bytes of each row are loaded at once and sdot by lane adds the dot product of one 4-byte group
 * with 4 columns' 4 weights into each lane; two sdot per row and group cover the 8 columns. The
 * last groups (k not a multiple of 16) load one group at a time, a short one piecewise. sdot sums
 * int8 x int8 products in int32 exactly. */
#include "../neon/qs8-neon.h"

#define NR 8
#define KR 4
#define MAX_MR 4

static inline __attribute__((always_inline)) void qs8_tile_neondot(
    const size_t MR, const size_t TILE_MR, size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,
    size_t input_offset, const int8_t *zero, const void *w, void *c, size_t c_stride, const bool dq,
    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *p = w;
  const size_t kc_full = kc & ~(size_t)(KR - 1), k_rest = kc - kc_full;
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
      /* 16 k (4 groups) per load of each row; sdot by lane picks the group */
      for (; k + 16 <= kc; k += 16) {
        int8x16_t x[MAX_MR];
        for (size_t m = 0; m < MR; ++m) x[m] = vld1q_s8(rows[m] + k);
#define QS8_NEONDOT_GROUP(lane)                                      \
  {                                                                  \
    const int8x16_t w0 = vld1q_s8(p), w1 = vld1q_s8(p + 16);         \
    p += NR * KR;                                                    \
    for (size_t m = 0; m < MR; ++m) {                                \
      acc0[m] = vdotq_laneq_s32(acc0[m], w0, x[m], lane);            \
      acc1[m] = vdotq_laneq_s32(acc1[m], w1, x[m], lane);            \
    }                                                                \
  }
        QS8_NEONDOT_GROUP(0)
        QS8_NEONDOT_GROUP(1)
        QS8_NEONDOT_GROUP(2)
        QS8_NEONDOT_GROUP(3)
#undef QS8_NEONDOT_GROUP
      }
      for (; k < kc; k += KR) {
        const int8x16_t w0 = vld1q_s8(p), w1 = vld1q_s8(p + 16);
        p += NR * KR;
        for (size_t m = 0; m < MR; ++m) {
          int32_t bytes = 0;
          memcpy(&bytes, rows[m] + k, k < kc_full ? 4 : k_rest);
          const int8x16_t x = vreinterpretq_s8_s32(vdupq_n_s32(bytes));
          acc0[m] = vdotq_s32(acc0[m], w0, x);
          acc1[m] = vdotq_s32(acc1[m], w1, x);
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

QS8_NEON_DEFINE(4, MAX_MR, 8c4, neondot, qs8_tile_neondot)
QS8_NEON_DEFINE(1, MAX_MR, 8c4, neondot, qs8_tile_neondot)

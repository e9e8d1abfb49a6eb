/* The qs8 GEMM and IGEMM micro-kernels (contracts in qs8.h, arithmetic and packing in qgemm.h),
 * written once over the int8 words of the SIMD vocabulary (simd-qs8.h). Each
 * <isa>/qs8-gemm-<MR>x<NR>[c<KR>]-<isa>.c instantiates them with EDGE_QS8_GEMM_TILES(MR, NR, ktag);
 * the Makefile compiles the folder with its EDGE_SIMD_ISA_<ISA> define, so one file gives
 *   edge_qs8_{gemm,gemm_dq,igemm,igemm_dq}_ukernel_<MR>x<NR><ktag>__<isa>   and the 1 x NR ones.
 *
 * A tile holds MR rows x NR = NV * EDGE_SIMD_N columns in MR x NV accumulators. Per k group: NV
 * loads of the panel's weights, then per row one load of its group (a broadcast) and NV
 * multiply-adds (qs8_madd, exact); full groups first, then the short last group loaded piecewise,
 * so a row is never read past kc. After a panel's taps the sums are put in column order and the
 * bias added (qs8_acc_sum), then either requantized to int8 (qs8_requant_store, requant.h's rule)
 * or, in dynamic mode, scaled in float as (float)sum * (row_scale * scale) + bias and clamped
 * (vf_clamp), in those float steps on every ISA (the qs8 files build with -ffp-contract=off).
 * Rows m >= mr are computed from the row pointers given (the GEMM points them at row mr - 1, the
 * IGEMM's driver repeats the last row) and not stored; columns past nc are not written.
 *
 * Where the ISA defines QS8_WIDE_K (avx2), a plain GEMM tile whose rows serve more than one panel
 * and fit QS8_WIDE_K sign-extends them to int16 once into a stack buffer, and the loop takes each
 * group by one broadcast load: widening once costs about what one panel's in-loop widening does.
 * Not for the taps of an IGEMM, where it measured slower than widening in the loop (ResNet-18 int8
 * at 1 thread: 52 against 37 ms). The two paths are separate copies of the loop, so each has the
 * registers to itself: with four rows the 8 half-sum accumulators, 2 weight vectors and the row fit
 * AVX2's 16 registers (six rows spilled, 73-97 GOP/s against 137 at 256x256x1024 on Zen 3), and
 * the bias is read after the sums, not held across them. The register allocation is fragile:
 * rerun `make qgemm-bench` after any change here. */
#ifndef EDGE_KERNELS_QS8_GEMM_TILE_H
#define EDGE_KERNELS_QS8_GEMM_TILE_H

#include <stdbool.h>

#include "qgemm.h"
#include "simd-qs8.h"

/* Arrays are sized by these constants, not by MR / NV, so they are not variable-length and the
 * compiler keeps them in registers once MR and NV are known. */
#define QS8_GEMM_MAX_MR 4
#define QS8_GEMM_MAX_NV 4
/* accumulators per row: NV * QS8_PARTS */
#define QS8_GEMM_MAX_ACC 4

EDGE_SIMD_INLINE const int8_t *qs8_tap_row(const int8_t *const *a, size_t t, size_t m, size_t row_group,
                                           size_t input_offset, const int8_t *zero) {
  const int8_t *r = a[t * row_group + m];
  return r == zero ? r : r + input_offset;
}

/* The epilogue of one panel: the sums of its MR rows requantized (int8 mode) or scaled (dynamic), the
 * first cols columns of the first mr rows stored. Out of line, so the k loop before it has the
 * registers to itself: with the epilogue inlined, GCC 12 kept a dynamic-mode accumulator on the
 * stack inside the widened loop (1.7x the time). `first` points at the panel's epilogue words:
 * multiplier[NR], shift[NR] (int8 mode) or scale[NR], bias[NR] (dynamic). */
static __attribute__((noinline)) void qs8_gemm_store_panel(size_t MR, size_t NV, size_t mr, size_t cols,
                                                           const i32xN (*sum)[QS8_GEMM_MAX_NV], const int8_t *first,
                                                           int8_t *c, size_t c_stride, const bool dq,
                                                           const edge_qs8_requant_params *rq,
                                                           const edge_qs8_dq_params *dqp) {
  const size_t N = EDGE_SIMD_N;
  const int8_t *second = first + NV * N * 4;
  for (size_t v = 0; v < NV && cols > v * N; ++v) {
    const size_t n = cols - v * N < N ? cols - v * N : N;
    if (dq) {
      const f32xN scale = vf_loadu((const float *)(first + v * N * 4));
      const f32xN fbias = vf_loadu((const float *)(second + v * N * 4));
      const f32xN vmin = vf_set1(dqp->min), vmax = vf_set1(dqp->max);
      for (size_t m = 0; m < MR && m < mr; ++m) {
        const f32xN s = vf_mul(vf_set1(dqp->row_scale[m * dqp->row_scale_stride]), scale);
        const f32xN y = vf_clamp(vf_add(vf_mul(vi_to_f32(sum[m][v]), s), fbias), vmin, vmax);
        float *out = (float *)(void *)(c + m * c_stride * 4) + v * N;
        if (n == N) vf_storeu(out, y);
        else vf_store_partial(out, y, n);
      }
    } else {
      const qs8_requant k = qs8_requant_prepare(first + v * N * 4, second + v * N * 4, rq);
      for (size_t m = 0; m < MR && m < mr; ++m) qs8_requant_store(&k, sum[m][v], c + m * c_stride + v * N, n);
    }
  }
}

/* All nc columns of the MR-row tile, NV vectors per panel; WIDE: the rows widened once (ks == 1). */
EDGE_SIMD_INLINE void qs8_gemm_tile_path(const bool WIDE, size_t MR, size_t NV, size_t row_group, size_t mr,
                                         size_t nc, size_t kc, size_t ks, const int8_t *const *a,
                                         size_t input_offset, const int8_t *zero, const void *w, void *c,
                                         size_t c_stride, const bool dq, const edge_qs8_requant_params *rq,
                                         const edge_qs8_dq_params *dqp) {
  const size_t N = EDGE_SIMD_N, NR = NV * EDGE_SIMD_N, KR = QS8_KR, NA = NV * QS8_PARTS;
  const size_t kc_full = kc & ~(KR - 1), k_rest = kc - kc_full;
  const int8_t *p = w;
#if defined(QS8_WIDE_K)
  const size_t kc_padded = (kc + KR - 1) & ~(KR - 1);
  int16_t widened[QS8_GEMM_MAX_MR][QS8_WIDE_K] __attribute__((aligned(32))); /* untouched, and dropped, without WIDE */
  if (WIDE) {
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m)
      qs8_widen_row(widened[m], qs8_tap_row(a, 0, m, row_group, input_offset, zero), kc, kc_padded);
  }
#else
  (void)WIDE;
#endif
  for (size_t n0 = 0; n0 < nc; n0 += NR) {
    const int8_t *bias = p;
    p += NR * 4;
    /* row m, vector v, part j in acc[m][v * QS8_PARTS + j] */
    qs8_acc acc[QS8_GEMM_MAX_MR][QS8_GEMM_MAX_ACC];
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
      _Pragma("GCC unroll 8") for (size_t i = 0; i < NA; ++i) acc[m][i] = qs8_acc_zero();
    }
    /* one k group of every row against the panel's next NV weight vectors; x_of(m) loads row m's */
#define QS8_GEMM_STEP(x_of)                                                                          \
  do {                                                                                               \
    qs8_w wv[QS8_GEMM_MAX_ACC];                                                                      \
    _Pragma("GCC unroll 8") for (size_t i = 0; i < NA; ++i)                                          \
      wv[i] = qs8_w_load(p + i / QS8_PARTS * N * KR, i % QS8_PARTS);                                 \
    p += NR * KR;                                                                                    \
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {                                        \
      const qs8_x x = x_of(m);                                                                       \
      _Pragma("GCC unroll 8") for (size_t i = 0; i < NA; ++i) acc[m][i] = qs8_madd(acc[m][i], x, wv[i]); \
    }                                                                                                \
  } while (0)
#if defined(QS8_WIDE_K)
    if (WIDE) {
      for (size_t g = 0; g < kc_padded; g += KR) {
#define QS8_X_WIDE(m) qs8_x_load_wide(widened[m] + g)
        QS8_GEMM_STEP(QS8_X_WIDE);
#undef QS8_X_WIDE
      }
    } else
#endif
    {
      for (size_t t = 0; t < ks; ++t) {
        const int8_t *rows[QS8_GEMM_MAX_MR];
        _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m)
          rows[m] = qs8_tap_row(a, t, m, row_group, input_offset, zero);
        size_t k = 0;
        for (; k < kc_full; k += KR) {
#define QS8_X_FULL(m) qs8_x_load(rows[m] + k)
          QS8_GEMM_STEP(QS8_X_FULL);
#undef QS8_X_FULL
        }
        if (k_rest) {
#define QS8_X_TAIL(m) qs8_x_load_tail(rows[m] + k, k_rest)
          QS8_GEMM_STEP(QS8_X_TAIL);
#undef QS8_X_TAIL
        }
      }
    }
#undef QS8_GEMM_STEP
    i32xN sum[QS8_GEMM_MAX_MR][QS8_GEMM_MAX_NV];
    _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) {
      _Pragma("GCC unroll 4") for (size_t v = 0; v < NV; ++v) sum[m][v] = qs8_acc_sum(&acc[m][v * QS8_PARTS], bias + v * N * 4);
    }
    qs8_gemm_store_panel(MR, NV, mr, nc - n0 < NR ? nc - n0 : NR, sum, p, (int8_t *)c + n0 * (dq ? 4 : 1),
                         c_stride, dq, rq, dqp);
    p += 2 * NR * 4;
  }
}

EDGE_SIMD_INLINE void qs8_gemm_tile(size_t MR, size_t NV, size_t row_group, size_t mr, size_t nc, size_t kc,
                                    size_t ks, const int8_t *const *a, size_t input_offset, const int8_t *zero,
                                    const void *w, void *c, size_t c_stride, const bool dq,
                                    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
#if defined(QS8_WIDE_K)
  if (nc > NV * EDGE_SIMD_N && ks == 1 && ((kc + QS8_KR - 1) & ~(size_t)(QS8_KR - 1)) <= QS8_WIDE_K) {
    qs8_gemm_tile_path(true, MR, NV, row_group, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, dq, rq, dqp);
    return;
  }
#endif
  qs8_gemm_tile_path(false, MR, NV, row_group, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, dq, rq, dqp);
}

EDGE_SIMD_INLINE void qs8_gemm_rows(size_t MR, size_t NV, size_t mr, size_t nc, size_t kc, const int8_t *a,
                                    size_t a_stride, const void *w, void *c, size_t c_stride, const bool dq,
                                    const edge_qs8_requant_params *rq, const edge_qs8_dq_params *dqp) {
  const int8_t *rows[QS8_GEMM_MAX_MR];
  _Pragma("GCC unroll 4") for (size_t m = 0; m < MR; ++m) rows[m] = a + (m < mr ? m : mr - 1) * a_stride;
  qs8_gemm_tile(MR, NV, MR, mr, nc, kc, 1, rows, 0, NULL, w, c, c_stride, dq, rq, dqp);
}

#define QS8_GEMM_NAME_(kind, mr, nr, ktag, suffix) edge_qs8_##kind##_ukernel_##mr##x##nr##ktag##suffix
#define QS8_GEMM_NAME_EXPANDED(kind, mr, nr, ktag, suffix) QS8_GEMM_NAME_(kind, mr, nr, ktag, suffix)
#define QS8_GEMM_NAME(kind, mr, nr, ktag) QS8_GEMM_NAME_EXPANDED(kind, mr, nr, ktag, EDGE_SIMD_SUFFIX)

#define QS8_GEMM_ENTRY_POINTS(MR, TILE_MR, NR, ktag)                                                               \
  void QS8_GEMM_NAME(gemm, MR, NR, ktag)(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride,       \
                                         const void *w, int8_t *c, size_t c_stride,                               \
                                         const edge_qs8_requant_params *params) {                                 \
    qs8_gemm_rows(MR, (NR) / EDGE_SIMD_N, mr, nc, kc, a, a_stride, w, c, c_stride, false, params, NULL);          \
  }                                                                                                               \
  void QS8_GEMM_NAME(gemm_dq, MR, NR, ktag)(size_t mr, size_t nc, size_t kc, const int8_t *a, size_t a_stride,    \
                                            const void *w, float *c, size_t c_stride,                             \
                                            const edge_qs8_dq_params *params) {                                   \
    qs8_gemm_rows(MR, (NR) / EDGE_SIMD_N, mr, nc, kc, a, a_stride, w, c, c_stride, true, NULL, params);           \
  }                                                                                                               \
  void QS8_GEMM_NAME(igemm, MR, NR, ktag)(size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,     \
                                          const void *w, int8_t *c, size_t c_stride, size_t input_offset,         \
                                          const int8_t *zero, const edge_qs8_requant_params *params) {            \
    qs8_gemm_tile(MR, (NR) / EDGE_SIMD_N, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, false,  \
                  params, NULL);                                                                                  \
  }                                                                                                               \
  void QS8_GEMM_NAME(igemm_dq, MR, NR, ktag)(size_t mr, size_t nc, size_t kc, size_t ks, const int8_t *const *a,  \
                                             const void *w, float *c, size_t c_stride, size_t input_offset,       \
                                             const int8_t *zero, const edge_qs8_dq_params *params) {              \
    qs8_gemm_tile(MR, (NR) / EDGE_SIMD_N, TILE_MR, mr, nc, kc, ks, a, input_offset, zero, w, c, c_stride, true,   \
                  NULL, params);                                                                                  \
  }

/* The eight kernels of one MR x NR tile (k group QS8_KR, ktag its name: c4 or empty) at the
 * including file's ISA: the 1 x NR ones serve single rows; their IGEMM reads row pointers in
 * groups of MR, like the full tile's. */
#define EDGE_QS8_GEMM_TILES(MR, NR, ktag)                                                                         \
  _Static_assert((NR) % EDGE_SIMD_N == 0 && (NR) / EDGE_SIMD_N * QS8_PARTS <= QS8_GEMM_MAX_ACC &&                 \
                     (MR) <= QS8_GEMM_MAX_MR,                                                                     \
                 "tile does not fit the template");                                                             \
  QS8_GEMM_ENTRY_POINTS(MR, MR, NR, ktag)                                                                         \
  QS8_GEMM_ENTRY_POINTS(1, MR, NR, ktag)

#endif

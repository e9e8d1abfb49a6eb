/* The fp32 GEMM and IGEMM micro-kernels (contracts in gemm.h and conv.h), written once over simd.h's
 * vocabulary. Each <isa>/f32-gemm-<MR>x<NR>.c instantiates them with EDGE_F32_GEMM_TILES(MR, NR);
 * the Makefile compiles that folder with its EDGE_SIMD_ISA_<ISA> define, so the one file gives
 *   edge_f32_gemm_minmax_ukernel_<MR>x<NR>__<isa>    edge_f32_gemm_minmax_ukernel_1x<NR>__<isa>
 *   edge_f32_igemm_minmax_ukernel_<MR>x<NR>__<isa>   edge_f32_igemm_minmax_ukernel_1x<NR>__<isa>
 *
 * A tile holds MR rows x NR = NV * EDGE_SIMD_N columns in MR x NV accumulators. Per k: NV loads of
 * the packed panel row, then per row one broadcast of A and NV multiply-adds (vf_fma: fused on
 * avx2/avx512/neon, a rounded product then a sum on scalar/sse2), so every output adds its k in
 * order after its bias, the order gemm.h states. Where the ISA multiplies by a vector lane
 * (EDGE_SIMD_HAS_FMA_LANE, NEON) the k loop takes EDGE_SIMD_N k at a time with one load of A per
 * row instead of one broadcast per k; the sums are the same.
 *
 * The GEMM is the IGEMM with one tap whose row pointers are A's rows. Rows m >= mr read the row
 * pointers they are given (the GEMM points them at row mr - 1; the IGEMM's driver repeats the last
 * row, as conv.h asks) and are stored over row mr - 1 from the last row down, so row mr - 1's own
 * store comes last and nothing outside the mr rows is touched. The clamp is vf_clamp (a NaN sum
 * comes through). Columns past nc are not written (vf_store_partial). A last panel with at most
 * NR / 2 live columns computes only its lower NV / 2 vectors (lanes are independent: the same bits,
 * half the work). */
#ifndef EDGE_KERNELS_F32_GEMM_TILE_H
#define EDGE_KERNELS_F32_GEMM_TILE_H

#include "conv_kernels.h"
#include "gemm.h"
#include "params.h"
#include "simd.h"

/* Arrays are sized by these constants, not by MR / NV, so they are not variable-length and the
 * compiler keeps them in registers once MR and NV are known. */
#define F32_GEMM_MAX_MR 8
#define F32_GEMM_MAX_NV 4

/* Weights are read once per run, so a layer whose weights the rest of the model evicts streams them
 * from memory in its first row tile; the hardware prefetchers run too little ahead to keep up with
 * the FMAs there. A panel longer than twice this distance is prefetched this far ahead of the k
 * loop, a line per 64 bytes of each packed row (ResNet-18's 3x3 512-channel layer with its weights
 * evicted: 3.1 -> 2.1 ms, and 1.9 -> 1.6 ms hot; the whole network 34.4 -> 30.7 ms on one thread).
 * Shorter panels (a 1x1 convolution with few input channels) stay in cache and skip it. The
 * address is computed as an integer: it may lie past the packed weights, which a prefetch may. */
#define F32_GEMM_PREFETCH_BYTES 8192

EDGE_SIMD_INLINE void f32_gemm_prefetch(const float *w, size_t bytes) {
  for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch((const void *)((uintptr_t)w + F32_GEMM_PREFETCH_BYTES + b), 0, 3);
}

/* One panel (NVW vectors wide in the packing, the lower NV of them computed) for the MR rows:
 * bias, then taps t < ks of kc values each; stores min(cols, NV * N) columns of each row. The
 * clamp bounds are read from params only after the k loop: held in registers through it, they
 * left the 6 x 16 avx2 tile (12 accumulators, 2 panel vectors, 1 broadcast) one register short,
 * and where the compiler kept them it spilled an accumulator to the stack inside the loop (a 1x1
 * convolution to 12 or 28 channels ran at 0.4x the speed of one to 16 or 32). */
EDGE_SIMD_INLINE void f32_gemm_panel(size_t MR, size_t NVW, size_t NV, bool prefetch, size_t row_group,
                                     size_t ks, size_t kc, const float *const *a, size_t input_offset,
                                     const float *zero, const float *w, float *const *crow, size_t cols,
                                     const edge_f32_minmax_params *params) {
  const size_t N = EDGE_SIMD_N, wstep = NVW * EDGE_SIMD_N;
  f32xN acc[F32_GEMM_MAX_MR][F32_GEMM_MAX_NV];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) {
    _Pragma("GCC unroll 16")
    for (size_t v = 0; v < NV; ++v) acc[m][v] = vf_loadu(w + v * N);
  }
  w += wstep;
  for (size_t t = 0; t < ks; ++t) {
    const float *row[F32_GEMM_MAX_MR];
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) {
      const float *p = a[t * row_group + m];
      row[m] = p == zero ? p : p + input_offset;
    }
    size_t k = 0;
#if defined(EDGE_SIMD_HAS_FMA_LANE)
    for (; k + EDGE_SIMD_N <= kc; k += EDGE_SIMD_N) {
      f32xN x[F32_GEMM_MAX_MR];
      if (prefetch) f32_gemm_prefetch(w, EDGE_SIMD_N * wstep * sizeof(float));
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) x[m] = vf_loadu(row[m] + k);
#define F32_GEMM_LANE(lane)                                                        \
  do {                                                                             \
    f32xN b[F32_GEMM_MAX_NV];                                                      \
    _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; ++v) b[v] = vf_loadu(w + v * N); \
    w += wstep;                                                                    \
    _Pragma("GCC unroll 16") for (size_t m = 0; m < MR; ++m) {                     \
      _Pragma("GCC unroll 16") for (size_t v = 0; v < NV; ++v) acc[m][v] = vf_fma_lane(b[v], x[m], lane, acc[m][v]); \
    }                                                                              \
  } while (0)
      F32_GEMM_LANE(0);
      F32_GEMM_LANE(1);
      F32_GEMM_LANE(2);
      F32_GEMM_LANE(3);
#undef F32_GEMM_LANE
    }
#endif
    for (; k < kc; ++k) {
      f32xN b[F32_GEMM_MAX_NV];
      if (prefetch) f32_gemm_prefetch(w, wstep * sizeof(float));
      _Pragma("GCC unroll 16")
      for (size_t v = 0; v < NV; ++v) b[v] = vf_loadu(w + v * N);
      w += wstep;
      _Pragma("GCC unroll 16")
      for (size_t m = 0; m < MR; ++m) {
        const f32xN x = vf_set1(row[m][k]);
        _Pragma("GCC unroll 16")
        for (size_t v = 0; v < NV; ++v) acc[m][v] = vf_fma(x, b[v], acc[m][v]);
      }
    }
  }
  const f32xN vmin = vf_set1(params->min), vmax = vf_set1(params->max);
  _Pragma("GCC unroll 16")
  for (size_t m = MR; m-- > 0;) {
    _Pragma("GCC unroll 16")
    for (size_t v = 0; v < NV; ++v) {
      const f32xN y = vf_clamp(acc[m][v], vmin, vmax);
      if (cols >= (v + 1) * N) vf_storeu(crow[m] + v * N, y);
      else if (cols > v * N) vf_store_partial(crow[m] + v * N, y, cols - v * N);
    }
  }
}

/* All nc columns of the MR-row tile: full panels, then the last one (narrowed when it can be). */
EDGE_SIMD_INLINE void f32_gemm_columns(size_t MR, size_t NVW, bool prefetch, size_t mr, size_t nc, size_t row_group,
                                       size_t ks, size_t kc, const float *const *a, size_t input_offset,
                                       const float *zero, const float *w, float *c, size_t c_stride,
                                       const edge_f32_minmax_params *params) {
  const size_t NR = NVW * EDGE_SIMD_N, panel_floats = (1 + ks * kc) * NR;
  float *crow[F32_GEMM_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) crow[m] = c + (m < mr ? m : mr - 1) * c_stride;
  for (; nc >= NR; nc -= NR) {
    f32_gemm_panel(MR, NVW, NVW, prefetch, row_group, ks, kc, a, input_offset, zero, w, crow, NR, params);
    w += panel_floats;
    _Pragma("GCC unroll 16")
    for (size_t m = 0; m < MR; ++m) crow[m] += NR;
  }
  if (nc == 0) return;
  if (NVW > 1 && nc <= NR / 2)
    f32_gemm_panel(MR, NVW, NVW / 2, prefetch, row_group, ks, kc, a, input_offset, zero, w, crow, nc, params);
  else
    f32_gemm_panel(MR, NVW, NVW, prefetch, row_group, ks, kc, a, input_offset, zero, w, crow, nc, params);
}

/* The tile, with the k loop prefetching the weights where the panels are long (a constant to
 * f32_gemm_columns, so each case compiles its own loop). */
EDGE_SIMD_INLINE void f32_gemm_tile(size_t MR, size_t NVW, size_t mr, size_t nc, size_t row_group, size_t ks,
                                    size_t kc, const float *const *a, size_t input_offset, const float *zero,
                                    const float *w, float *c, size_t c_stride, const edge_f32_minmax_params *params) {
  if ((1 + ks * kc) * NVW * EDGE_SIMD_N * sizeof(float) > 2 * F32_GEMM_PREFETCH_BYTES)
    f32_gemm_columns(MR, NVW, true, mr, nc, row_group, ks, kc, a, input_offset, zero, w, c, c_stride, params);
  else
    f32_gemm_columns(MR, NVW, false, mr, nc, row_group, ks, kc, a, input_offset, zero, w, c, c_stride, params);
}

EDGE_SIMD_INLINE void f32_gemm_rows(size_t MR, size_t NVW, size_t mr, size_t nc, size_t kc, const float *a,
                                    size_t a_stride, const float *w, float *c, size_t c_stride,
                                    const edge_f32_minmax_params *params) {
  const float *arow[F32_GEMM_MAX_MR];
  _Pragma("GCC unroll 16")
  for (size_t m = 0; m < MR; ++m) arow[m] = a + (m < mr ? m : mr - 1) * a_stride;
  f32_gemm_tile(MR, NVW, mr, nc, MR, 1, kc, arow, 0, NULL, w, c, c_stride, params);
}

#define F32_GEMM_CAT3_(a, b, c) a##b##c
#define F32_GEMM_CAT3(a, b, c) F32_GEMM_CAT3_(a, b, c)
#define F32_GEMM_NAME(kind, mr, nr)                                                                \
  EDGE_SIMD_CAT(EDGE_SIMD_CAT(F32_GEMM_CAT3(edge_f32_, kind, _minmax_ukernel_), F32_GEMM_CAT3(mr, x, nr)), \
                EDGE_SIMD_SUFFIX)

/* The four kernels of one MR x NR tile at the including file's ISA: the 1 x NR ones serve single
 * rows (GEMV, an image's last row) without paying for MR rows; the IGEMM's reads its row
 * pointers in groups of MR, like the full tile's. */
#define EDGE_F32_GEMM_TILES(MR, NR)                                                                               \
  _Static_assert((NR) % EDGE_SIMD_N == 0 && (NR) / EDGE_SIMD_N <= F32_GEMM_MAX_NV && (MR) <= F32_GEMM_MAX_MR,     \
                 "tile does not fit the template");                                                             \
  void F32_GEMM_NAME(gemm, MR, NR)(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride, \
                                                 const float *w, float *c, size_t c_stride,                       \
                                                 const edge_f32_minmax_params *params) {                          \
    f32_gemm_rows(MR, (NR) / EDGE_SIMD_N, mr, nc, kc, a, a_stride, w, c, c_stride, params);                       \
  }                                                                                                               \
  void F32_GEMM_NAME(gemm, 1, NR)(size_t mr, size_t nc, size_t kc, const float *a, size_t a_stride,  \
                                                const float *w, float *c, size_t c_stride,                        \
                                                const edge_f32_minmax_params *params) {                           \
    f32_gemm_rows(1, (NR) / EDGE_SIMD_N, mr, nc, kc, a, a_stride, w, c, c_stride, params);                        \
  }                                                                                                               \
  void F32_GEMM_NAME(igemm, MR, NR)(size_t mr, size_t nc, size_t kc, size_t ks,                     \
                                                  const float *const *a, const float *w, float *c,               \
                                                  size_t c_stride, size_t input_offset, const float *zero,       \
                                                  const edge_f32_minmax_params *params) {                        \
    f32_gemm_tile(MR, (NR) / EDGE_SIMD_N, mr, nc, MR, ks, kc, a, input_offset, zero, w, c, c_stride, params);     \
  }                                                                                                               \
  void F32_GEMM_NAME(igemm, 1, NR)(size_t mr, size_t nc, size_t kc, size_t ks,                      \
                                                 const float *const *a, const float *w, float *c,                \
                                                 size_t c_stride, size_t input_offset, const float *zero,        \
                                                 const edge_f32_minmax_params *params) {                         \
    f32_gemm_tile(1, (NR) / EDGE_SIMD_N, mr, nc, MR, ks, kc, a, input_offset, zero, w, c, c_stride, params);      \
  }

#endif

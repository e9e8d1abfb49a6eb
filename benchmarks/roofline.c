/* The GEMM roofline: this core's fp32 FMA peak and int8 multiply-add peak against what the fp32
 * and int8 (qs8) GEMM drivers reach, one thread. Build and run: make -C cruntime roofline
 * (EDGE_ISA=... picks a lower kernel level).
 *
 * Peaks: loops of independent chains on the widest vectors the picked ISA level has, with more
 * chains than the latency times the number of pipes, so throughput (not latency) bounds them;
 * best of several timed runs. fp32: FMA. int8: what the qs8 kernels of that level issue per
 * multiply-add, vpmaddwd + vpaddd on int16 pairs (SSE2, AVX2, AVX-512BW) or vpdpbusd
 * (AVX-512 VNNI); no int8 loop for the other levels. Counted as 2 ops per multiply-add, like
 * a flop pair, so the int8/fp32 peak ratio is the most an int8 GEMM can gain over a float one
 * here. GEMMs: edge_gemm_compute / edge_qs8_gemm_compute on packed B with the level's kernels
 * at large sizes, best of several runs after a warm-up. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/config.h"
#include "kernels/qgemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile float sink;

/* Each returns the flops it did. A 4-cycle FMA latency x 2 pipes needs 8 chains in flight; the
 * chains plus the two operands must fit the register file (16 xmm/ymm, 32 zmm or NEON), or the
 * spills put store-to-load latency into every chain. */
#define CHAINS 16
#define CHAINS_16_REGISTERS 12

#if defined(__x86_64__)
__attribute__((target("avx512f"), noinline)) static double fma_loop_avx512(long iterations) {
  __m512 acc[CHAINS];
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_ps((float)i);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
  }
  __m512 total = acc[0];
  for (int i = 1; i < CHAINS; ++i) total = _mm512_add_ps(total, acc[i]);
  sink = _mm512_reduce_add_ps(total);
  return 2.0 * 16 * CHAINS * (double)iterations;
}

__attribute__((target("avx2,fma"), noinline)) static double fma_loop_avx2(long iterations) {
  __m256 acc[CHAINS_16_REGISTERS];
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS_16_REGISTERS; ++i) acc[i] = _mm256_set1_ps((float)i);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS_16_REGISTERS; ++i) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
  }
  float lanes[8];
  __m256 total = acc[0];
  for (int i = 1; i < CHAINS_16_REGISTERS; ++i) total = _mm256_add_ps(total, acc[i]);
  _mm256_storeu_ps(lanes, total);
  sink = lanes[0];
  return 2.0 * 8 * CHAINS_16_REGISTERS * (double)iterations;
}

/* No FMA on SSE2: a multiply and an add per step, counted as two flops like an FMA. */
__attribute__((noinline)) static double fma_loop_sse2(long iterations) {
  __m128 acc[CHAINS_16_REGISTERS];
  const __m128 x = _mm_set1_ps(0.999999f), y = _mm_set1_ps(1e-7f);
  for (int i = 0; i < CHAINS_16_REGISTERS; ++i) acc[i] = _mm_set1_ps((float)i);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS_16_REGISTERS; ++i) acc[i] = _mm_add_ps(_mm_mul_ps(acc[i], x), y);
  }
  float lanes[4];
  __m128 total = acc[0];
  for (int i = 1; i < CHAINS_16_REGISTERS; ++i) total = _mm_add_ps(total, acc[i]);
  _mm_storeu_ps(lanes, total);
  sink = lanes[0];
  return 2.0 * 4 * CHAINS_16_REGISTERS * (double)iterations;
}

/* int8: acc += madd(x, w) as a GEMM tile issues it, 3 rows x 2 weight vectors into 6
 * accumulators; the empty asm makes x and w opaque each step so the products are not hoisted. */
#define MADD_LOOP(name, isa, vec, set1_16, madd, add, lanes32)                                   \
  __attribute__((target(isa), noinline)) static double name(long iterations) {                   \
    vec x0 = set1_16(1), x1 = set1_16(2), x2 = set1_16(3), w0 = set1_16(1), w1 = set1_16(-1);     \
    vec a0 = set1_16(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;                             \
    for (long it = 0; it < iterations; ++it) {                                                    \
      __asm__ volatile("" : "+x"(x0), "+x"(x1), "+x"(x2), "+x"(w0), "+x"(w1));                    \
      a0 = add(a0, madd(x0, w0));                                                                 \
      a1 = add(a1, madd(x0, w1));                                                                 \
      a2 = add(a2, madd(x1, w0));                                                                 \
      a3 = add(a3, madd(x1, w1));                                                                 \
      a4 = add(a4, madd(x2, w0));                                                                 \
      a5 = add(a5, madd(x2, w1));                                                                 \
    }                                                                                             \
    const vec total = add(add(add(a0, a1), add(a2, a3)), add(a4, a5));                            \
    int32_t lanes[lanes32];                                                                       \
    memcpy(lanes, &total, sizeof lanes);                                                          \
    sink = (float)lanes[0];                                                                       \
    return 2.0 * 2 * lanes32 * 6 * (double)iterations;                                            \
  }
MADD_LOOP(madd_loop_sse2, "sse2", __m128i, _mm_set1_epi16, _mm_madd_epi16, _mm_add_epi32, 4)
MADD_LOOP(madd_loop_avx2, "avx2", __m256i, _mm256_set1_epi16, _mm256_madd_epi16, _mm256_add_epi32, 8)
MADD_LOOP(madd_loop_avx512, "avx512f,avx512bw", __m512i, _mm512_set1_epi16, _mm512_madd_epi16, _mm512_add_epi32, 16)

/* vpdpbusd: 4 multiply-adds per int32 lane, accumulating in place. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static double dpbusd_loop_avx512vnni(long iterations) {
  __m512i acc[CHAINS];
  const __m512i x = _mm512_set1_epi8(1), y = _mm512_set1_epi8(0);
  for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_set1_epi32(i);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], x, y);
  }
  __m512i total = acc[0];
  for (int i = 1; i < CHAINS; ++i) total = _mm512_add_epi32(total, acc[i]);
  sink = (float)_mm512_reduce_add_epi32(total);
  return 2.0 * 4 * 16 * CHAINS * (double)iterations;
}
#elif defined(__aarch64__)
__attribute__((noinline)) static double fma_loop_neon(long iterations) {
  float32x4_t acc[CHAINS];
  const float32x4_t x = vdupq_n_f32(0.999999f), y = vdupq_n_f32(1e-7f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = vdupq_n_f32((float)i);
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; ++i) acc[i] = vfmaq_f32(y, acc[i], x);
  }
  float32x4_t total = acc[0];
  for (int i = 1; i < CHAINS; ++i) total = vaddq_f32(total, acc[i]);
  sink = vaddvq_f32(total);
  return 2.0 * 4 * CHAINS * (double)iterations;
}
#endif

__attribute__((noinline)) static double fma_loop_scalar(long iterations) {
  float acc[CHAINS];
  for (int i = 0; i < CHAINS; ++i) acc[i] = (float)i;
  for (long it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < CHAINS; ++i) acc[i] = fmaf(acc[i], 0.999999f, 1e-7f);
  }
  float total = 0;
  for (int i = 0; i < CHAINS; ++i) total += acc[i];
  sink = total;
  return 2.0 * CHAINS * (double)iterations;
}

/* The level's loop: fp32 FMA, or (int8) its multiply-add loop, NULL where there is none. */
static double (*peak_loop(edge_isa_level level, int int8))(long) {
#if defined(__x86_64__)
  if (level == EDGE_ISA_AVX512VNNI) return int8 ? dpbusd_loop_avx512vnni : fma_loop_avx512;
  if (level == EDGE_ISA_AVX512) return int8 ? madd_loop_avx512 : fma_loop_avx512;
  if (level == EDGE_ISA_AVX2) return int8 ? madd_loop_avx2 : fma_loop_avx2;
  if (level == EDGE_ISA_SSE2) return int8 ? madd_loop_sse2 : fma_loop_sse2;
#elif defined(__aarch64__)
  if (level == EDGE_ISA_NEON || level == EDGE_ISA_NEONDOT) return int8 ? NULL : fma_loop_neon;
#endif
  return int8 ? NULL : fma_loop_scalar;
}

/* Best rate of the loop in G(FL)OP/s; 0 when there is no loop. */
static double peak_gops(double (*loop)(long)) {
  if (!loop) return 0;
  /* many short runs: on a shared machine the best one is the one nobody interrupted */
  const long iterations = 2 * 1000 * 1000;
  double best = 0;
  for (int run = 0; run < 25; ++run) {
    const double start = now_seconds();
    const double flops = loop(iterations);
    const double rate = flops / (now_seconds() - start) * 1e-9;
    if (rate > best) best = rate;
  }
  return best;
}

/* A GEMM call the timing helper repeats. */
typedef struct {
  const edge_gemm_kernels *fk;
  const edge_qs8_kernels *qk;
  size_t m, n, kdim;
  const void *a, *packed;
  void *c;
} gemm_call;

static void run_gemm(const gemm_call *g) {
  if (g->qk) {
    const edge_qs8_requant_params out = {0, -128, 127};
    edge_qs8_gemm_compute(g->qk, NULL, g->m, g->n, g->kdim, g->a, g->kdim, g->packed, g->c, g->n, &out);
  } else {
    edge_gemm_compute(g->fk, NULL, g->m, g->n, g->kdim, g->a, g->kdim, g->packed, g->c, g->n, NULL);
  }
}

/* G(FL)OP/s of the best of several calls after a warm-up one. */
static double best_rate(const gemm_call *g) {
  const double ops = 2.0 * (double)g->m * (double)g->n * (double)g->kdim;
  const int runs = ops > 4e9 ? 8 : 16;
  run_gemm(g);
  double best = 1e30;
  for (int run = 0; run < runs; ++run) {
    const double start = now_seconds();
    run_gemm(g);
    const double seconds = now_seconds() - start;
    if (seconds < best) best = seconds;
  }
  return ops / best * 1e-9;
}

static double gemm_gflops(const edge_gemm_kernels *k, size_t m, size_t n, size_t kdim) {
  float *a = malloc(m * kdim * sizeof(float)), *b = malloc(kdim * n * sizeof(float));
  float *c = malloc(m * n * sizeof(float)), *bias = malloc(n * sizeof(float));
  void *packed = aligned_alloc(64, edge_gemm_packed_bytes(k, n, kdim));
  if (!a || !b || !c || !bias || !packed) {
    fprintf(stderr, "roofline: out of memory for %zux%zux%zu\n", m, n, kdim);
    exit(1);
  }
  unsigned state = 12345;
  for (size_t i = 0; i < m * kdim; ++i) a[i] = (float)((state = state * 1103515245u + 12345u) >> 16 & 0xff) / 256.0f - 0.5f;
  for (size_t i = 0; i < kdim * n; ++i) b[i] = (float)((state = state * 1103515245u + 12345u) >> 16 & 0xff) / 256.0f - 0.5f;
  for (size_t i = 0; i < n; ++i) bias[i] = 0.25f;
  edge_gemm_pack_weights_kn(k, n, kdim, b, n, bias, packed);
  const gemm_call g = {.fk = k, .m = m, .n = n, .kdim = kdim, .a = a, .packed = packed, .c = c};
  const double rate = best_rate(&g);
  sink = c[m * n / 2];
  free(a);
  free(b);
  free(c);
  free(bias);
  free(packed);
  return rate;
}

/* int8 GEMM (requantized int8 out) GOP/s, 2 ops per multiply-add. */
static double qgemm_gops(const edge_qs8_kernels *k, size_t m, size_t n, size_t kdim) {
  int8_t *a = malloc(m * kdim), *b = malloc(kdim * n), *c = malloc(m * n);
  int32_t *mult = malloc(n * sizeof(int32_t)), *shift = malloc(n * sizeof(int32_t));
  void *packed = aligned_alloc(64, edge_qs8_gemm_packed_bytes(k, n, 1, kdim));
  if (!a || !b || !c || !mult || !shift || !packed) {
    fprintf(stderr, "roofline: out of memory for %zux%zux%zu\n", m, n, kdim);
    exit(1);
  }
  unsigned state = 54321;
  for (size_t i = 0; i < m * kdim; ++i) a[i] = (int8_t)((state = state * 1103515245u + 12345u) >> 16);
  for (size_t i = 0; i < kdim * n; ++i) b[i] = (int8_t)((state = state * 1103515245u + 12345u) >> 16 & 0x7f);
  for (size_t j = 0; j < n; ++j) edge_quantize_multiplier(1.0 / (128.0 * 128.0 * 8.0), &mult[j], &shift[j]);
  if (edge_qs8_gemm_pack(k, n, 1, kdim, b, kdim, 1, NULL, 0, mult, shift, packed) != EDGE_OK) {
    fprintf(stderr, "roofline: %s\n", edge_last_error());
    exit(1);
  }
  const gemm_call g = {.qk = k, .m = m, .n = n, .kdim = kdim, .a = a, .packed = packed, .c = c};
  const double rate = best_rate(&g);
  sink = c[m * n / 2];
  free(a);
  free(b);
  free(c);
  free(mult);
  free(shift);
  free(packed);
  return rate;
}

int main(void) {
  const edge_kernel_config *config = edge_kernels();
  const edge_qs8_kernels *qk = &edge_kernels()->qs8;
  const edge_isa_level level = config->isa;
  static const size_t sizes[][3] = {{1024, 1024, 1024}, {2048, 2048, 512}, {512, 512, 512}, {256, 4096, 1024}};
  enum { SIZES = sizeof sizes / sizeof sizes[0] };
  double (*int8_loop)(long) = peak_loop(level, 1);
  /* The peaks are measured around every GEMM and the highest kept, so a neighbour's burst during
   * one measurement does not inflate the ratios. */
  double peak = peak_gops(peak_loop(level, 0)), int8_peak = peak_gops(int8_loop), rates[SIZES], qrates[SIZES];
  for (size_t i = 0; i < SIZES; ++i) {
    rates[i] = gemm_gflops(&config->gemm, sizes[i][0], sizes[i][1], sizes[i][2]);
    qrates[i] = qgemm_gops(qk, sizes[i][0], sizes[i][1], sizes[i][2]);
    const double again = peak_gops(peak_loop(level, 0)), int8_again = peak_gops(int8_loop);
    if (again > peak) peak = again;
    if (int8_again > int8_peak) int8_peak = int8_again;
  }
  printf("isa %s, kernels %s (%ux%u) and %s (%ux%u), 1 thread\n", edge_isa_level_name(level), config->gemm.name,
         config->gemm.mr, config->gemm.nr, qk->name, qk->mr, qk->nr);
  printf("fp32 FMA peak (measured): %.1f GFLOP/s\n", peak);
  if (int8_peak > 0)
    printf("int8 multiply-add peak (measured): %.1f GOP/s = %.2fx the fp32 peak\n", int8_peak, int8_peak / peak);
  else
    printf("int8 multiply-add peak: no loop for this level\n");
  for (size_t i = 0; i < SIZES; ++i) {
    printf("gemm m=%zu n=%zu k=%zu: fp32 %.1f GFLOP/s = %.1f%% of peak; int8 %.1f GOP/s", sizes[i][0], sizes[i][1],
           sizes[i][2], rates[i], 100.0 * rates[i] / peak, qrates[i]);
    if (int8_peak > 0) printf(" = %.1f%% of peak", 100.0 * qrates[i] / int8_peak);
    printf(" (%.2fx fp32)\n", qrates[i] / rates[i]);
  }
  return 0;
}

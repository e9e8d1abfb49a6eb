/* The GEMM roofline: this core's fp32 FMA peak against what the fp32 GEMM driver reaches, one
 * thread. Build and run: make -C cruntime roofline (EDGE_ISA=... picks a lower kernel level).
 *
 * Peak: a loop of independent FMA chains on the widest vectors the picked ISA level has, with
 * more chains than the FMA latency times the number of FMA pipes, so throughput (not latency)
 * bounds it; best of several timed runs. GEMM: edge_gemm_compute on packed B with the level's
 * kernels at large sizes, best of several runs after a warm-up. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/config.h"

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

static double peak_gflops(edge_isa_level level) {
  double (*loop)(long) = fma_loop_scalar;
#if defined(__x86_64__)
  if (level == EDGE_ISA_AVX512 || level == EDGE_ISA_AVX512VNNI) loop = fma_loop_avx512;
  else if (level == EDGE_ISA_AVX2) loop = fma_loop_avx2;
  else if (level == EDGE_ISA_SSE2) loop = fma_loop_sse2;
#elif defined(__aarch64__)
  if (level == EDGE_ISA_NEON || level == EDGE_ISA_NEONDOT) loop = fma_loop_neon;
#endif
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
  edge_gemm_compute(k, NULL, m, n, kdim, a, kdim, packed, c, n, NULL);
  const double flops = 2.0 * (double)m * (double)n * (double)kdim;
  const int runs = flops > 4e9 ? 8 : 16;
  double best = 1e30;
  for (int run = 0; run < runs; ++run) {
    const double start = now_seconds();
    edge_gemm_compute(k, NULL, m, n, kdim, a, kdim, packed, c, n, NULL);
    const double seconds = now_seconds() - start;
    if (seconds < best) best = seconds;
  }
  sink = c[m * n / 2];
  free(a);
  free(b);
  free(c);
  free(bias);
  free(packed);
  return flops / best * 1e-9;
}

int main(void) {
  const edge_kernel_config *config = edge_kernels();
  const edge_isa_level level = config->isa;
  static const size_t sizes[][3] = {{1024, 1024, 1024}, {2048, 2048, 512}, {512, 512, 512}, {256, 4096, 1024}};
  enum { SIZES = sizeof sizes / sizeof sizes[0] };
  /* The peak is measured around every GEMM and the highest kept, so a neighbour's burst during
   * one measurement does not inflate the ratio. */
  double peak = peak_gflops(level), rates[SIZES];
  for (size_t i = 0; i < SIZES; ++i) {
    rates[i] = gemm_gflops(&config->gemm, sizes[i][0], sizes[i][1], sizes[i][2]);
    const double again = peak_gflops(level);
    if (again > peak) peak = again;
  }
  printf("isa %s, kernel %s (%ux%u), 1 thread\n", edge_isa_level_name(level), config->gemm.name, config->gemm.mr,
         config->gemm.nr);
  printf("fp32 FMA peak (measured): %.1f GFLOP/s\n", peak);
  for (size_t i = 0; i < SIZES; ++i)
    printf("gemm m=%zu n=%zu k=%zu: %.1f GFLOP/s = %.1f%% of peak\n", sizes[i][0], sizes[i][1], sizes[i][2], rates[i],
           100.0 * rates[i] / peak);
  return 0;
}

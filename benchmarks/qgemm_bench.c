/* int8 GEMM against fp32 GEMM, one thread, at every ISA level this CPU runs:
 * GOP/s of edge_qs8_gemm_compute (2 * M * N * K integer ops, requantized int8 out) and of the
 * dynamic-mode variant (float out), next to GFLOP/s of edge_gemm_compute on the same shape; then
 * every MobileNetV2 depthwise layer (3x3, pad 1) int8 against fp32 at the ISA in use.
 * Build and run: make -C cruntime qgemm-bench [QGEMM_BENCH_ARGS="M N K"] (default 256 256 1024);
 * QGEMM_BENCH_ARGS=dwconv runs the depthwise table only.
 * Best of several runs after a warm-up; weights packed once, as at prepare. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/config.h"
#include "kernels/conv_driver.h"
#include "kernels/qgemm.h"

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static volatile int sink;

static unsigned state = 12345;
static unsigned next(void) { return (state = state * 1103515245u + 12345u) >> 16; }

/* Seconds of the fastest of `runs` calls of fn(arg). */
static double best_of(int runs, void (*fn)(void *), void *arg) {
  fn(arg);
  double best = 1e30;
  for (int r = 0; r < runs; ++r) {
    const double start = now_seconds();
    fn(arg);
    const double seconds = now_seconds() - start;
    if (seconds < best) best = seconds;
  }
  return best;
}

typedef struct {
  const edge_qs8_kernels *qk;
  const edge_gemm_kernels *fk;
  size_t m, n, k;
  int8_t *a, *c;
  float *af, *cf, *row_scale;
  void *packed, *packed_dq, *packed_f;
  edge_qs8_requant_params out;
} bench;

static void run_qs8(void *arg) {
  bench *b = arg;
  edge_qs8_gemm_compute(b->qk, NULL, b->m, b->n, b->k, b->a, b->k, b->packed, b->c, b->n, &b->out);
}
static void run_qs8_dq(void *arg) {
  bench *b = arg;
  edge_qs8_gemm_dynamic_compute(b->qk, NULL, b->m, b->n, b->k, b->a, b->k, b->packed_dq, b->cf, b->n, b->row_scale,
                                1, NULL);
}
static void run_f32(void *arg) {
  bench *b = arg;
  edge_gemm_compute(b->fk, NULL, b->m, b->n, b->k, b->af, b->k, b->packed_f, b->cf, b->n, NULL);
}

typedef struct {
  edge_qs8_conv_plan *q;
  edge_conv_plan *f;
  int8_t *x, *y;
  float *xf, *yf;
} dw_bench;

static void run_dw_qs8(void *arg) {
  dw_bench *b = arg;
  edge_qs8_conv_plan_run(b->q, NULL, b->x, b->y, 0.0f, NULL);
}
static void run_dw_f32(void *arg) {
  dw_bench *b = arg;
  edge_conv_plan_run(b->f, NULL, b->xf, b->yf, NULL);
}

/* MobileNetV2's depthwise layers (3x3, pad 1): input height = width, channels, stride. */
static const struct {
  int64_t hw, c, stride;
} mobilenet_v2_depthwise[] = {{112, 32, 1}, {112, 96, 2}, {56, 144, 1}, {56, 144, 2}, {28, 192, 1},
                              {28, 192, 2}, {14, 384, 1}, {14, 576, 1}, {14, 576, 2}, {7, 960, 1}};

/* One MobileNetV2 depthwise layer at `level`: int8 GOP/s and fp32 GFLOP/s (2 ops per tap and
 * output), best of `runs`; returns 0 on success. */
static int dwconv_layer(edge_isa_level level, int64_t hw, int64_t c, int64_t stride, int runs, double *q,
                        double *f) {
  const int64_t kk = 3, out_hw = (hw + 2 - kk) / stride + 1;
  const edge_conv_shape s = {false, 1, hw, hw, c, out_hw, out_hw, c, kk, kk, c, stride, stride, 1, 1, 1, 1};
  const size_t in_count = (size_t)(hw * hw * c), out_count = (size_t)(out_hw * out_hw * c);
  dw_bench b = {0};
  b.x = malloc(in_count);
  b.y = malloc(out_count);
  b.xf = malloc(in_count * sizeof(float));
  b.yf = malloc(out_count * sizeof(float));
  int8_t *w = malloc((size_t)(c * kk * kk));
  float *wf = malloc((size_t)(c * kk * kk) * sizeof(float));
  int32_t *bias = calloc((size_t)c, sizeof(int32_t)), *mult = malloc((size_t)c * 4), *shift = malloc((size_t)c * 4);
  for (size_t i = 0; i < in_count; ++i) b.xf[i] = (float)(b.x[i] = (int8_t)next());
  for (int64_t i = 0; i < c * kk * kk; ++i) wf[i] = (float)(w[i] = (int8_t)(next() % 255 - 127));
  for (int64_t i = 0; i < c; ++i) edge_quantize_multiplier(1.0 / 4096.0, &mult[i], &shift[i]);
  const edge_qs8_requant_params out = {0, -128, 127};
  const double ops = 2.0 * (double)out_count * (double)(kk * kk);
  if (edge_qs8_conv_plan_create(&edge_kernels_for(level)->qs8, &s, w, bias, -3, mult, shift, &out, &b.q) != EDGE_OK) {
    fprintf(stderr, "qgemm_bench: %s\n", edge_last_error());
    return 1;
  }
  b.f = edge_conv_plan_create(edge_kernels_for(level), &s, wf, NULL, NULL, EDGE_CONV_WINOGRAD_OFF);
  /* int8 and fp32 alternate, so a noisy neighbour slows both rather than one */
  *q = *f = 0.0;
  for (int round = 0; round < 3; ++round) {
    const double qr = ops / best_of(runs, run_dw_qs8, &b) * 1e-9;
    const double fr = b.f ? ops / best_of(runs, run_dw_f32, &b) * 1e-9 : 0.0;
    if (qr > *q) *q = qr;
    if (fr > *f) *f = fr;
  }
  sink = b.y[out_count / 2];
  edge_qs8_conv_plan_free(b.q);
  edge_conv_plan_free(b.f);
  free(b.x);
  free(b.y);
  free(b.xf);
  free(b.yf);
  free(w);
  free(wf);
  free(bias);
  free(mult);
  free(shift);
  return 0;
}

/* Every MobileNetV2 depthwise layer at the ISA in use (EDGE_ISA lowers it), one thread. */
static int dwconv_bench(void) {
  const edge_isa_level level = edge_isa_level_get();
  const int runs = 20;
  printf("\ndepthwise 3x3 pad 1, MobileNetV2 layers, %s, 1 thread (best of 3 x %d, int8 and fp32 alternating)\n",
         edge_isa_level_name(level), runs);
  printf("%-16s %6s %10s %12s %8s\n", "input HxWxC", "stride", "int8 GOP/s", "f32 GFLOP/s", "int8/f32");
  for (size_t i = 0; i < sizeof mobilenet_v2_depthwise / sizeof mobilenet_v2_depthwise[0]; ++i) {
    const int64_t hw = mobilenet_v2_depthwise[i].hw, c = mobilenet_v2_depthwise[i].c;
    const int64_t stride = mobilenet_v2_depthwise[i].stride;
    double q, f;
    if (dwconv_layer(level, hw, c, stride, runs, &q, &f)) return 1;
    char name[32];
    snprintf(name, sizeof name, "%lldx%lldx%lld", (long long)hw, (long long)hw, (long long)c);
    printf("%-16s %6lld %10.1f %12.1f %7.2fx\n", name, (long long)stride, q, f, f > 0 ? q / f : 0.0);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "dwconv")) return dwconv_bench();
  bench b = {0};
  b.m = argc > 3 ? (size_t)atol(argv[1]) : 256;
  b.n = argc > 3 ? (size_t)atol(argv[2]) : 256;
  b.k = argc > 3 ? (size_t)atol(argv[3]) : 1024;
  const size_t m = b.m, n = b.n, k = b.k;
  b.a = malloc(m * k);
  b.c = malloc(m * n);
  b.af = malloc(m * k * sizeof(float));
  b.cf = malloc(m * n * sizeof(float));
  b.row_scale = malloc(m * sizeof(float));
  int8_t *w = malloc(n * k);
  float *wf = malloc(n * k * sizeof(float)), *scale = malloc(n * sizeof(float)), *fbias = malloc(n * sizeof(float));
  int32_t *bias = malloc(n * sizeof(int32_t)), *mult = malloc(n * sizeof(int32_t)), *shift = malloc(n * sizeof(int32_t));
  for (size_t i = 0; i < m * k; ++i) b.af[i] = (float)(b.a[i] = (int8_t)next());
  for (size_t i = 0; i < n * k; ++i) wf[i] = (float)(w[i] = (int8_t)(next() % 255 - 127));
  for (size_t i = 0; i < m; ++i) b.row_scale[i] = 0.01f;
  for (size_t j = 0; j < n; ++j) {
    bias[j] = (int32_t)(next() % 2001) - 1000;
    edge_quantize_multiplier(1.0 / (128.0 * 128.0 * 8.0), &mult[j], &shift[j]);
    scale[j] = 0.02f;
    fbias[j] = 0.5f;
  }
  b.out = (edge_qs8_requant_params){3, -128, 127};
  const double ops = 2.0 * (double)m * (double)n * (double)k;
  const int runs = 20;
  printf("1 thread, M=%zu N=%zu K=%zu (best of %d)\n", m, n, k, runs);
  printf("%-11s %-30s %10s %12s  %-28s %12s %8s\n", "isa", "qs8 kernel", "int8 GOP/s", "dynamic GOP/s", "f32 kernel",
         "f32 GFLOP/s", "int8/f32");
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    if (!config) continue;
    b.qk = &config->qs8;
    b.fk = &config->gemm;
    b.packed = aligned_alloc(64, edge_qs8_gemm_packed_bytes(b.qk, n, 1, k));
    b.packed_dq = aligned_alloc(64, edge_qs8_gemm_packed_bytes(b.qk, n, 1, k));
    b.packed_f = aligned_alloc(64, edge_gemm_packed_bytes(b.fk, n, k));
    if (edge_qs8_gemm_pack(b.qk, n, 1, k, w, k, 1, bias, -5, mult, shift, b.packed) != EDGE_OK ||
        edge_qs8_gemm_pack_dynamic(b.qk, n, 1, k, w, k, 1, scale, fbias, b.packed_dq) != EDGE_OK) {
      fprintf(stderr, "qgemm_bench: pack failed: %s\n", edge_last_error());
      return 1;
    }
    edge_gemm_pack_weights(b.fk, n, k, wf, k, NULL, b.packed_f);
    const double q = ops / best_of(runs, run_qs8, &b) * 1e-9;
    const double qd = ops / best_of(runs, run_qs8_dq, &b) * 1e-9;
    const double f = ops / best_of(runs, run_f32, &b) * 1e-9;
    sink = b.c[m * n / 2];
    printf("%-11s %-30s %10.1f %12.1f  %-28s %12.1f %7.2fx\n", edge_isa_level_name((edge_isa_level)level), b.qk->name,
           q, qd, b.fk->name, f, q / f);
    free(b.packed);
    free(b.packed_dq);
    free(b.packed_f);
  }
  return dwconv_bench();
}

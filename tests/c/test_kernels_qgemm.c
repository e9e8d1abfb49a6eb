/* Tests of the int8 (qs8) kernel family (kernels/requant.h, kernels/qgemm.h) at every ISA level
 * this machine runs.
 *
 * Oracles: requantize against an exact long double computation of round-half-up(acc * m / 2^s)
 * (and the multipliers against their defining error bound); GEMM, indirect conv and depthwise
 * against naive loops that compute the spec's formula straight from the unpacked weights
 * (bias + sum (x - zp_x) * w, padding skipped), every level bit for bit, the dynamic (float)
 * epilogue too (the same float steps, no FMA). Ragged shapes (M, N, K from 1 to 67, K not a
 * multiple of 4, tails of every tile), extreme values (all -128 / 127, zero points at the bounds,
 * multipliers near 2^31, shifts 1..62), strided A and C, sentinels after each output and in the
 * gaps of strided C, 1, 2 and 3 threads. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/qgemm.h"
#include "test.h"


static int8_t rnd_s8(void) { return (int8_t)(rnd() & 0xff); }

/* ---- requantization ---- */

/* round half up of acc * m / 2^shift, in long double (64-bit mantissa: acc * m has at most 62
 * significant bits, so the scaled value and the + 0.5 are exact). */
static long double exact_requantize(int32_t acc, int32_t m, int32_t shift) {
  const long double v = ldexpl((long double)acc * (long double)m, -shift);
  return floorl(v + 0.5L);
}

static void test_requantize(void) {
  const int32_t accs[] = {0, 1, -1, 2, -2, 3, -3, 127, -128, 1 << 20, -(1 << 20), INT32_MAX, INT32_MIN, INT32_MIN + 1};
  for (int32_t shift = 1; shift <= 62; ++shift)
    for (int i = 0; i < 200; ++i) {
      const int32_t m = i < 3 ? (int32_t[]){INT32_MAX, 1 << 30, 0}[i] : (int32_t)rnd_range(1 << 30, INT32_MAX);
      const int32_t acc = i < 14 * 3 ? accs[i % 14] : (int32_t)((uint32_t)rnd() << 16 ^ rnd());
      const long double want = exact_requantize(acc, m, shift);
      const int64_t got = edge_requantize(acc, m, shift);
      CHECK((long double)got == want, "requantize(%d, %d, %d) = %lld, exact %.1Lf", (int)acc, (int)m, (int)shift,
            (long long)got, want);
    }
  /* exact halves round toward +infinity: 3 * 2^30 / 2^31 = 1.5 -> 2, -1.5 -> -1 */
  CHECK(edge_requantize(3, 1 << 30, 31) == 2 && edge_requantize(-3, 1 << 30, 31) == -1 &&
            edge_requantize(-1, 1 << 30, 31) == 0 && edge_requantize(1, 1 << 30, 31) == 1,
        "halves must round toward +infinity");
  CHECK(edge_requantize_s8(INT32_MAX, INT32_MAX, 1, 127, -128, 127) == 127 &&
            edge_requantize_s8(INT32_MIN, INT32_MAX, 1, -128, -128, 127) == -128 &&
            edge_requantize_s8(100, 1 << 30, 31, -128, -100, 5) == -78,
        "requantize_s8 clamps the 64-bit value");

  /* multipliers: m in [2^30, 2^31), |m * 2^-shift - M| <= 2^-31 * 2^(31 - shift) / 2 */
  const double reals[] = {1e-12, 2.3283064365386963e-10 /* 2^-32 */, 1e-9, 0.000123, 0.0078125, 0.3, 0.5,
                          0.99999999999, 1.0, 1.5, 1000.0, 1073741823.0};
  for (int i = 0; i < 12 + 2000; ++i) {
    const double real = i < 12 ? reals[i] : ldexp(1.0 + (double)rnd() / 4294967296.0, (int)rnd_range(-40, 29));
    int32_t m = -1, shift = -1;
    const bool ok = edge_quantize_multiplier(real, &m, &shift);
    CHECK(ok, "quantize_multiplier(%.17g) refused", real);
    if (real < ldexp(1.0, -32)) {
      CHECK(m == 0 && shift == 62, "quantize_multiplier(%.17g) = (%d, %d), want (0, 62)", real, (int)m, (int)shift);
      continue;
    }
    CHECK(m >= (1 << 30) && shift >= 1 && shift <= 62, "quantize_multiplier(%.17g) = (%d, %d)", real, (int)m,
          (int)shift);
    const double err = fabs(ldexp((double)m, -shift) - real);
    CHECK(err <= ldexp(1.0, -shift - 1) * (1 + 1e-9), "quantize_multiplier(%.17g) = (%d, %d): off by %g", real,
          (int)m, (int)shift, err);
  }
  int32_t m, shift;
  CHECK(edge_quantize_multiplier(0.5, &m, &shift) && m == (1 << 30) && shift == 31, "M = 0.5 -> (2^30, 31)");
  CHECK(edge_quantize_multiplier(nextafter(1.0, 0.0), &m, &shift) && m == (1 << 30) && shift == 30,
        "M just below 1 rounds up to (2^30, 30)");
  CHECK(!edge_quantize_multiplier(0.0, &m, &shift) && !edge_quantize_multiplier(-1.0, &m, &shift) &&
            !edge_quantize_multiplier(INFINITY, &m, &shift) && !edge_quantize_multiplier(NAN, &m, &shift) &&
            !edge_quantize_multiplier(ldexp(1.0, 30), &m, &shift),
        "quantize_multiplier must refuse 0, negatives, inf, NaN and M >= 2^30");
  int32_t ma, mb;
  CHECK(edge_quantize_add_multipliers(0.25, 0.5, &ma, &mb, &shift) && shift == 31 && mb == (1 << 30) &&
            ma == (1 << 29),
        "add multipliers (0.25, 0.5) = (%d, %d, %d)", (int)ma, (int)mb, (int)shift);
  CHECK(edge_quantize_add_multipliers(1e-30, 1e-30, &ma, &mb, &shift) && shift == 62, "tiny add multipliers use 62");
}

/* ---- GEMM ---- */

typedef struct {
  size_t m, n, k, a_stride, c_stride;
  int8_t *a, *w; /* w as [n][k] */
  int32_t *bias, *multiplier, *shift;
  float *w_scale, *f_bias, *row_scale;
  int32_t zp_x;
  edge_qs8_requant_params out;
  int8_t *want;
  float *want_f;
} qproblem;

/* How to fill a problem: random, or all at one extreme. */
typedef enum { FILL_RANDOM, FILL_MIN, FILL_MAX, FILL_MIXED_EXTREMES } fill_kind;

static int8_t fill_value(fill_kind kind, int8_t random) {
  switch (kind) {
    case FILL_MIN: return -128;
    case FILL_MAX: return 127;
    case FILL_MIXED_EXTREMES: return (rnd() & 1) ? 127 : -128;
    default: return random;
  }
}

static float row_scale_of(size_t i) { return 0.001f + 0.0003f * (float)(i % 7); }

/* The spec's formula from the unpacked operands. The float steps are spelled one per statement
 * through volatile so the compiler cannot fuse them into an FMA. */
static void qproblem_oracle(qproblem *p) {
  for (size_t i = 0; i < p->m; ++i)
    for (size_t j = 0; j < p->n; ++j) {
      int64_t acc = p->bias ? p->bias[j] : 0, dot = 0;
      for (size_t q = 0; q < p->k; ++q) {
        acc += ((int64_t)p->a[i * p->a_stride + q] - p->zp_x) * p->w[j * p->k + q];
        dot += (int64_t)p->a[i * p->a_stride + q] * p->w[j * p->k + q];
      }
      p->want[i * p->n + j] = edge_requantize_s8((int32_t)acc, p->multiplier[j], p->shift[j], p->out.zero_point,
                                                 p->out.qmin, p->out.qmax);
      volatile float scale = p->row_scale[i] * p->w_scale[j];
      volatile float product = (float)dot * scale;
      volatile float sum = product + p->f_bias[j];
      p->want_f[i * p->n + j] = sum;
    }
}

static void qproblem_init(qproblem *p, size_t m, size_t n, size_t k, bool strided, fill_kind x_fill,
                          fill_kind w_fill, int extreme_requant) {
  memset(p, 0, sizeof *p);
  p->m = m;
  p->n = n;
  p->k = k;
  p->a_stride = k + (strided ? 5 : 0);
  p->c_stride = n + (strided ? 3 : 0);
  p->a = malloc(m * p->a_stride + 1);
  p->w = malloc(n * k + 1);
  p->bias = malloc(n * sizeof(int32_t));
  p->multiplier = malloc(n * sizeof(int32_t));
  p->shift = malloc(n * sizeof(int32_t));
  p->w_scale = malloc(n * sizeof(float));
  p->f_bias = malloc(n * sizeof(float));
  p->row_scale = malloc(m * sizeof(float));
  p->want = malloc(m * n + 1);
  p->want_f = malloc((m * n + 1) * sizeof(float));
  for (size_t i = 0; i < m * p->a_stride; ++i) p->a[i] = fill_value(x_fill, rnd_s8());
  for (size_t i = 0; i < n * k; ++i) p->w[i] = fill_value(w_fill, rnd_s8());
  const int zps[] = {-128, 127, 0, -1};
  p->zp_x = rnd() % 3 == 0 ? zps[rnd() % 4] : (int32_t)rnd_range(-128, 127);
  p->out.zero_point = rnd() % 3 == 0 ? zps[rnd() % 4] : (int32_t)rnd_range(-128, 127);
  p->out.qmin = -128;
  p->out.qmax = 127;
  if (rnd() % 3 == 0) p->out.qmin = p->out.zero_point; /* a fused RELU */
  if (rnd() % 4 == 0) p->out.qmax = p->out.qmin + (int32_t)rnd_range(0, 127 - p->out.qmin);
  /* a multiplier that spreads accumulators of this K over the int8 range, or an extreme one */
  const double typical = 1.0 / (64.0 * 128.0 * sqrt((double)k + 1.0));
  for (size_t j = 0; j < n; ++j) {
    p->bias[j] = (int32_t)rnd_range(-100000, 100000);
    if (extreme_requant) {
      p->multiplier[j] = rnd() % 2 ? INT32_MAX - (int32_t)rnd_range(0, 3) : (int32_t)rnd_range(1 << 30, INT32_MAX);
      /* 2: shifts 33..62 only, so whole panels take the AVX-512 kernels' fast requantization too */
      p->shift[j] = (int32_t)rnd_range(extreme_requant == 2 ? 33 : 1, 62);
    } else {
      const double real = typical * (0.25 + (double)rnd() / 4294967296.0 * 4.0);
      CHECK(edge_quantize_multiplier(real, &p->multiplier[j], &p->shift[j]), "multiplier for %g", real);
    }
    p->w_scale[j] = 0.01f + 0.001f * (float)(j % 13);
    p->f_bias[j] = (float)rnd_range(-1000, 1000) / 100.0f;
  }
  for (size_t i = 0; i < m; ++i) p->row_scale[i] = row_scale_of(i);
  qproblem_oracle(p);
}

static void qproblem_free(qproblem *p) {
  free(p->a);
  free(p->w);
  free(p->bias);
  free(p->multiplier);
  free(p->shift);
  free(p->w_scale);
  free(p->f_bias);
  free(p->row_scale);
  free(p->want);
  free(p->want_f);
}

#define GUARD 24
static const int8_t poison8 = 0x5a;

/* Runs the int8 and the dynamic GEMM of p at one level on `pool`; checks against the oracle, the
 * guards and the gaps of strided C. */
static void check_gemm(const edge_qs8_kernels *k, edge_threadpool *pool, const qproblem *p, const char *what) {
  const size_t bytes = edge_qs8_gemm_packed_bytes(k, p->n, 1, p->k);
  void *packed = aligned_alloc(64, bytes), *packed_dq = aligned_alloc(64, bytes);
  edge_status status = edge_qs8_gemm_pack(k, p->n, 1, p->k, p->w, p->k, 1, p->bias, p->zp_x, p->multiplier,
                                          p->shift, packed);
  CHECK(status == EDGE_OK, "%s [%s]: pack failed: %s", what, k->name, edge_last_error());
  status = edge_qs8_gemm_pack_dynamic(k, p->n, 1, p->k, p->w, p->k, 1, p->w_scale, p->f_bias, packed_dq);
  CHECK(status == EDGE_OK, "%s [%s]: dynamic pack failed: %s", what, k->name, edge_last_error());
  const size_t c_len = (p->m - 1) * p->c_stride + p->n;
  int8_t *c = malloc(c_len + 2 * GUARD);
  float *cf = malloc((c_len + 2 * GUARD) * sizeof(float));
  memset(c, poison8, c_len + 2 * GUARD);
  for (size_t i = 0; i < c_len + 2 * GUARD; ++i) cf[i] = -777.0f;
  edge_qs8_gemm_compute(k, pool, p->m, p->n, p->k, p->a, p->a_stride, packed, c + GUARD, p->c_stride, &p->out);
  edge_qs8_gemm_dynamic_compute(k, pool, p->m, p->n, p->k, p->a, p->a_stride, packed_dq, cf + GUARD, p->c_stride,
                                p->row_scale, 1, NULL);
  size_t bad = 0, bad_f = 0, first = 0, first_f = 0, outside = 0;
  for (size_t i = 0; i < p->m; ++i)
    for (size_t j = 0; j < p->n; ++j) {
      if (c[GUARD + i * p->c_stride + j] != p->want[i * p->n + j] && bad++ == 0) first = i * p->n + j;
      const float got = cf[GUARD + i * p->c_stride + j], want = p->want_f[i * p->n + j];
      if (memcmp(&got, &want, sizeof got) != 0 && bad_f++ == 0) first_f = i * p->n + j;
    }
  for (size_t i = 0; i < c_len + 2 * GUARD; ++i) {
    const bool inside = i >= GUARD && i < GUARD + c_len && (i - GUARD) % p->c_stride < p->n;
    if (!inside) outside += (c[i] != poison8) + (cf[i] != -777.0f);
  }
  CHECK(bad == 0, "%s [%s] m=%zu n=%zu k=%zu zp_x=%d zp_y=%d: %zu int8 outputs differ, first (%zu,%zu) got %d want %d",
        what, k->name, p->m, p->n, p->k, (int)p->zp_x, (int)p->out.zero_point, bad, first / p->n, first % p->n,
        (int)c[GUARD + first / p->n * p->c_stride + first % p->n], (int)p->want[first]);
  CHECK(bad_f == 0, "%s [%s] m=%zu n=%zu k=%zu: %zu dynamic outputs differ, first (%zu,%zu) got %.9g want %.9g", what,
        k->name, p->m, p->n, p->k, bad_f, first_f / p->n, first_f % p->n,
        (double)cf[GUARD + first_f / p->n * p->c_stride + first_f % p->n], (double)p->want_f[first_f]);
  CHECK(outside == 0, "%s [%s] m=%zu n=%zu k=%zu: %zu bytes written outside C", what, k->name, p->m, p->n, p->k,
        outside);
  free(c);
  free(cf);
  free(packed);
  free(packed_dq);
}

static void test_gemm_level(const edge_qs8_kernels *k, edge_threadpool *pools[3]) {
  /* every M, N around the tiles and K across the k groups, one thread */
  for (size_t m = 1; m <= 67; m += (m < 20 ? 1 : 7))
    for (size_t n = 1; n <= 67; n += (n < 36 ? 1 : 5)) {
      const size_t kk = (size_t)rnd_range(1, 67);
      qproblem p;
      qproblem_init(&p, m, n, kk, rnd() % 2, FILL_RANDOM, FILL_RANDOM, false);
      check_gemm(k, NULL, &p, "ragged");
      qproblem_free(&p);
    }
  for (size_t kk = 1; kk <= 70; ++kk) {
    qproblem p;
    qproblem_init(&p, (size_t)rnd_range(1, 13), (size_t)rnd_range(1, 40), kk, true, FILL_RANDOM, FILL_RANDOM, false);
    check_gemm(k, NULL, &p, "every k");
    qproblem_free(&p);
  }
  /* extremes: operands at -128 / 127, zero points at the bounds, huge multipliers, every shift */
  const fill_kind fills[] = {FILL_MIN, FILL_MAX, FILL_MIXED_EXTREMES, FILL_RANDOM};
  for (int f = 0; f < 4; ++f)
    for (int g = 0; g < 4; ++g)
      for (int e = 0; e < 3; ++e) {
        qproblem p;
        qproblem_init(&p, (size_t)rnd_range(1, 20), (size_t)rnd_range(1, 50), (size_t)rnd_range(1, 300), true,
                      fills[f], fills[g], e);
        check_gemm(k, NULL, &p, "extremes");
        qproblem_free(&p);
      }
  /* long K on both sides of the longest row a kernel widens once per tile (AVX2: 4608), several
   * panels, so both of its paths run (IGEMMs take the in-loop one) */
  const size_t long_k[] = {4604, 4608, 4609, 4700};
  for (int i = 0; i < 4; ++i) {
    qproblem p;
    qproblem_init(&p, (size_t)rnd_range(1, 9), (size_t)rnd_range(9, 40), long_k[i], i % 2,
                  i == 2 ? FILL_MIXED_EXTREMES : FILL_RANDOM, FILL_RANDOM, false);
    check_gemm(k, NULL, &p, "long k");
    qproblem_free(&p);
  }
  /* big enough to thread, on 1, 2 and 3 threads */
  for (int i = 0; i < 4; ++i) {
    qproblem p;
    qproblem_init(&p, (size_t)rnd_range(30, 140), (size_t)rnd_range(20, 200), (size_t)rnd_range(60, 700), i % 2,
                  FILL_RANDOM, FILL_RANDOM, i == 3);
    for (int t = 0; t < 3; ++t) check_gemm(k, pools[t], &p, "threads");
    qproblem_free(&p);
  }
}

static void test_pack_refusals(const edge_qs8_kernels *k) {
  int8_t w[4] = {1, 2, 3, 4};
  int32_t multiplier = 1 << 30, bad_shift = 0, shift = 31, bias = INT32_MAX - 10;
  uint8_t packed[4096];
  CHECK(edge_qs8_gemm_pack(k, 1, 1, 4, w, 4, 1, NULL, 0, &multiplier, &bad_shift, packed) == EDGE_INVALID_ARGUMENT &&
            strstr(edge_last_error(), "shift") != NULL,
        "pack must refuse shift 0 (%s)", edge_last_error());
  CHECK(edge_qs8_gemm_pack(k, 1, 1, 4, w, 4, 1, &bias, 0, &multiplier, &shift, packed) == EDGE_UNSUPPORTED &&
            strstr(edge_last_error(), "channel 0") != NULL,
        "pack must refuse an accumulator range past int32 (%s)", edge_last_error());
}

/* ---- convolution plans (GEMM, IGEMM, DWCONV) ---- */

typedef struct {
  edge_conv_shape s;
  int8_t *x, *w;
  int32_t *bias, *multiplier, *shift;
  float *w_scale, *f_bias;
  int32_t zp_x;
  float x_scale;
  edge_qs8_requant_params out;
  size_t x_count, y_count;
  int8_t *want;
  float *want_f;
} qconv_case;

static void qconv_oracle(qconv_case *c) {
  const edge_conv_shape *s = &c->s;
  const int64_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
  for (int64_t b = 0; b < s->batch; ++b)
    for (int64_t oh = 0; oh < s->out_h; ++oh)
      for (int64_t ow = 0; ow < s->out_w; ++ow)
        for (int64_t o = 0; o < s->out_c; ++o) {
          const int64_t g = o / cout_g;
          int64_t acc = c->bias[o], dot = 0;
          for (int64_t kh = 0; kh < s->kernel_h; ++kh)
            for (int64_t kw = 0; kw < s->kernel_w; ++kw) {
              const int64_t ih = oh * s->stride_h - s->pad_top + kh * s->dilation_h;
              const int64_t iw = ow * s->stride_w - s->pad_left + kw * s->dilation_w;
              if (ih < 0 || ih >= s->in_h || iw < 0 || iw >= s->in_w) continue;
              for (int64_t ci = 0; ci < cin_g; ++ci) {
                const int64_t xv = c->x[((b * s->in_h + ih) * s->in_w + iw) * s->in_c + g * cin_g + ci];
                const int64_t wv = c->w[((o * s->kernel_h + kh) * s->kernel_w + kw) * cin_g + ci];
                acc += (xv - c->zp_x) * wv;
                dot += xv * wv;
              }
            }
          const size_t i = (size_t)(((b * s->out_h + oh) * s->out_w + ow) * s->out_c + o);
          c->want[i] = edge_requantize_s8((int32_t)acc, c->multiplier[o], c->shift[o], c->out.zero_point, c->out.qmin,
                                          c->out.qmax);
          volatile float scale = c->x_scale * c->w_scale[o];
          volatile float product = (float)dot * scale;
          volatile float sum = product + c->f_bias[o];
          const float v = sum;
          c->want_f[i] = v < 0.0f ? 0.0f : v; /* the dynamic run fuses a RELU */
        }
}

/* extreme: operands and zero points at the int8 bounds, multipliers near 2^31 with any shift (1)
 * or with shifts 33..62 only (2: every block takes the SIMD kernels' 32-bit requantization). */
static qconv_case make_qconv(int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t cout, int64_t groups,
                             int64_t kh, int64_t kw, int64_t stride, int64_t dilation, int64_t pad, int extreme) {
  qconv_case c = {0};
  edge_conv_shape *s = &c.s;
  *s = (edge_conv_shape){false, batch, h, w, cin, 0, 0, cout, kh, kw, groups, stride, stride, dilation, dilation, pad,
                         pad, 0};
  s->out_h = (h + 2 * pad - dilation * (kh - 1) - 1) / stride + 1;
  s->out_w = (w + 2 * pad - dilation * (kw - 1) - 1) / stride + 1;
  c.x_count = (size_t)(batch * h * w * cin);
  c.y_count = (size_t)(batch * s->out_h * s->out_w * cout);
  const size_t w_count = (size_t)(cout * kh * kw * (cin / groups));
  c.x = malloc(c.x_count + 1);
  c.w = malloc(w_count + 1);
  c.bias = malloc((size_t)cout * sizeof(int32_t));
  c.multiplier = malloc((size_t)cout * sizeof(int32_t));
  c.shift = malloc((size_t)cout * sizeof(int32_t));
  c.w_scale = malloc((size_t)cout * sizeof(float));
  c.f_bias = malloc((size_t)cout * sizeof(float));
  c.want = malloc(c.y_count + 1);
  c.want_f = malloc((c.y_count + 1) * sizeof(float));
  const fill_kind x_fill = extreme ? (fill_kind)rnd_range(FILL_MIN, FILL_MIXED_EXTREMES) : FILL_RANDOM;
  const fill_kind w_fill = extreme ? (fill_kind)rnd_range(FILL_MIN, FILL_MIXED_EXTREMES) : FILL_RANDOM;
  for (size_t i = 0; i < c.x_count; ++i) c.x[i] = fill_value(x_fill, rnd_s8());
  for (size_t i = 0; i < w_count; ++i) c.w[i] = fill_value(w_fill, rnd_s8());
  c.zp_x = extreme ? (rnd() % 2 ? -128 : 127) : (int32_t)rnd_range(-128, 127);
  c.x_scale = 0.02f;
  c.out = (edge_qs8_requant_params){(int32_t)rnd_range(-128, 127), -128, 127};
  const double typical = 1.0 / (64.0 * 128.0 * sqrt((double)(kh * kw * cin / groups) + 1.0));
  for (int64_t o = 0; o < cout; ++o) {
    c.bias[o] = (int32_t)rnd_range(-50000, 50000);
    if (extreme) {
      c.multiplier[o] = INT32_MAX - (int32_t)rnd_range(0, 1 << 20);
      c.shift[o] = (int32_t)rnd_range(extreme == 2 ? 33 : 1, 62);
    } else {
      edge_quantize_multiplier(typical * (0.5 + (double)rnd() / 4294967296.0), &c.multiplier[o], &c.shift[o]);
    }
    c.w_scale[o] = 0.005f * (float)(1 + o % 5);
    c.f_bias[o] = (float)rnd_range(-300, 300) / 100.0f;
  }
  qconv_oracle(&c);
  return c;
}

static void free_qconv(qconv_case *c) {
  free(c->x);
  free(c->w);
  free(c->bias);
  free(c->multiplier);
  free(c->shift);
  free(c->w_scale);
  free(c->f_bias);
  free(c->want);
  free(c->want_f);
}

static void check_conv(const edge_qs8_kernels *k, edge_threadpool *pools[3], qconv_case *c, edge_conv_method expect,
                       const char *what) {
  edge_qs8_conv_plan *plan = NULL, *plan_dq = NULL;
  CHECK(edge_qs8_conv_plan_create(k, &c->s, c->w, c->bias, c->zp_x, c->multiplier, c->shift, &c->out, &plan) ==
            EDGE_OK,
        "%s [%s]: plan: %s", what, k->name, edge_last_error());
  const edge_activation relu = {EDGE_UNARY_RELU, 0.0f, 0.0f};
  CHECK(edge_qs8_conv_plan_create_dynamic(k, &c->s, c->w, c->w_scale, c->f_bias, &relu, &plan_dq) == EDGE_OK,
        "%s [%s]: dynamic plan: %s", what, k->name, edge_last_error());
  if (!plan || !plan_dq) {
    edge_qs8_conv_plan_free(plan);
    edge_qs8_conv_plan_free(plan_dq);
    return;
  }
  CHECK(edge_qs8_conv_plan_method(plan) == expect, "%s: method %s, expected %s", what,
        edge_conv_method_name(edge_qs8_conv_plan_method(plan)), edge_conv_method_name(expect));
  const size_t scratch_bytes = edge_qs8_conv_plan_scratch_bytes(plan);
  void *scratch = aligned_alloc(EDGE_ALIGNMENT, (scratch_bytes / EDGE_ALIGNMENT + 1) * EDGE_ALIGNMENT);
  int8_t *y = malloc(c->y_count + GUARD);
  float *yf = malloc((c->y_count + GUARD) * sizeof(float));
  for (int t = 0; t < 3; ++t) {
    memset(y, poison8, c->y_count + GUARD);
    for (size_t i = 0; i < c->y_count + GUARD; ++i) yf[i] = -777.0f;
    /* the zero point of padding comes from the plan; running twice checks the indirection reuse */
    edge_qs8_conv_plan_run(plan, pools[t], c->x, y, 0.0f, scratch);
    edge_qs8_conv_plan_run(plan_dq, pools[t], c->x, yf, c->x_scale, scratch);
    size_t bad = 0, bad_f = 0, first = 0, first_f = 0, past = 0;
    for (size_t i = 0; i < c->y_count; ++i) {
      if (y[i] != c->want[i] && bad++ == 0) first = i;
      if (memcmp(&yf[i], &c->want_f[i], sizeof(float)) != 0 && bad_f++ == 0) first_f = i;
    }
    for (size_t i = c->y_count; i < c->y_count + GUARD; ++i) past += (y[i] != poison8) + (yf[i] != -777.0f);
    CHECK(bad == 0, "%s [%s, %s, %d threads]: %zu of %zu int8 outputs differ, first [%zu] got %d want %d", what,
          k->name, edge_conv_method_name(edge_qs8_conv_plan_method(plan)), t + 1, bad, c->y_count, first, (int)y[first],
          (int)c->want[first]);
    CHECK(bad_f == 0, "%s [%s, %d threads]: %zu dynamic outputs differ, first [%zu] got %.9g want %.9g", what, k->name,
          t + 1, bad_f, first_f, (double)yf[first_f], (double)c->want_f[first_f]);
    CHECK(past == 0, "%s [%s]: wrote past the output", what, k->name);
  }
  free(y);
  free(yf);
  free(scratch);
  edge_qs8_conv_plan_free(plan);
  edge_qs8_conv_plan_free(plan_dq);
}

static void test_conv_level(const edge_qs8_kernels *k, edge_threadpool *pools[3]) {
  struct {
    int64_t batch, h, w, cin, cout, groups, kh, kw, stride, dilation, pad;
    edge_conv_method method;
  } cases[] = {
      {1, 5, 7, 3, 5, 1, 1, 1, 1, 1, 0, EDGE_CONV_METHOD_GEMM},
      {2, 6, 6, 17, 33, 1, 1, 1, 1, 1, 0, EDGE_CONV_METHOD_GEMM},
      {1, 6, 6, 8, 12, 2, 1, 1, 1, 1, 0, EDGE_CONV_METHOD_GEMM},
      {1, 7, 9, 3, 8, 1, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_IGEMM},
      {2, 9, 8, 5, 19, 1, 3, 3, 2, 1, 1, EDGE_CONV_METHOD_IGEMM},
      {1, 10, 10, 7, 17, 1, 5, 5, 1, 2, 3, EDGE_CONV_METHOD_IGEMM},
      {1, 8, 8, 12, 18, 3, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_IGEMM},
      {1, 5, 5, 4, 6, 1, 1, 1, 2, 1, 0, EDGE_CONV_METHOD_IGEMM},
      {1, 11, 13, 67, 5, 1, 2, 3, 1, 1, 1, EDGE_CONV_METHOD_IGEMM},
      {1, 14, 14, 32, 32, 1, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_IGEMM},
      {1, 4, 5, 520, 20, 1, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_IGEMM}, /* 9 taps x 520 > 4608 */
      {1, 9, 9, 21, 21, 21, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {2, 10, 11, 35, 35, 35, 3, 3, 2, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 12, 12, 19, 19, 19, 5, 5, 1, 1, 2, EDGE_CONV_METHOD_DWCONV},
      {1, 12, 12, 16, 16, 16, 5, 5, 2, 2, 4, EDGE_CONV_METHOD_DWCONV},
      {1, 8, 8, 6, 18, 6, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 7, 7, 67, 67, 67, 2, 4, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 30, 30, 64, 64, 64, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      /* 3x3 at unit width (shared columns) for output widths 1, 2, 3 and padding 0 / 2, whole
       * channel blocks and tails; stride 2 over whole blocks, two images (offset rows) */
      {1, 5, 1, 16, 16, 16, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {2, 6, 2, 32, 32, 32, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 7, 3, 24, 24, 24, 3, 3, 1, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 11, 7, 40, 40, 40, 3, 3, 1, 1, 0, EDGE_CONV_METHOD_DWCONV},
      {2, 8, 9, 17, 17, 17, 3, 3, 1, 1, 2, EDGE_CONV_METHOD_DWCONV},
      {2, 9, 13, 48, 48, 48, 3, 3, 2, 1, 1, EDGE_CONV_METHOD_DWCONV},
      {1, 14, 14, 96, 96, 96, 3, 3, 2, 1, 1, EDGE_CONV_METHOD_DWCONV},
  };
  for (int extreme = 0; extreme < 3; ++extreme)
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
      qconv_case c = make_qconv(cases[i].batch, cases[i].h, cases[i].w, cases[i].cin, cases[i].cout, cases[i].groups,
                                cases[i].kh, cases[i].kw, cases[i].stride, cases[i].dilation, cases[i].pad, extreme);
      char what[64];
      snprintf(what, sizeof what, "conv case %zu%s", i,
               extreme == 2 ? " (extremes, shifts >= 33)" : extreme ? " (extremes)" : "");
      check_conv(k, pools, &c, cases[i].method, what);
      free_qconv(&c);
    }
}

void test_kernels_qgemm(void) {
  rng_seed(0x243f6a8885a308d3ull);
  test_requantize();
  edge_threadpool *pools[3] = {edge_threadpool_create(1), edge_threadpool_create(2), edge_threadpool_create(3)};
  CHECK(edge_kernels_for(EDGE_ISA_SCALAR) != NULL, "the scalar level must always have kernels");
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    CHECK((config != NULL) == (edge_isa_level_supported((edge_isa_level)level) != 0), "kernel table of %s",
          edge_isa_level_name((edge_isa_level)level));
    if (!config) continue;
    const edge_qs8_kernels *k = &config->qs8;
    CHECK(k->isa == (edge_isa_level)level && k->gemm[0] && k->gemm[1] && k->gemm_dq[0] && k->igemm[0] &&
              k->igemm_dq[1] && k->dwconv && k->dwconv_dq && k->mr >= 1 && k->nr >= 1 && k->nr <= 64 && k->kr >= 1,
          "qs8 table of %s is incomplete", edge_isa_level_name((edge_isa_level)level));
    const int before = test_current_failures;
    test_pack_refusals(k);
    test_gemm_level(k, pools);
    test_conv_level(k, pools);
    printf("     kernels_qgemm: %-10s %-32s %s\n", edge_isa_level_name((edge_isa_level)level), k->name,
           test_current_failures == before ? "bit-exact" : "FAILED");
  }
  for (int t = 0; t < 3; ++t) edge_threadpool_free(pools[t]);
}

/* Tests of the vector kernel family (cruntime/src/kernels/vector/, table in vector.h) at every ISA
 * level this machine supports, against independent oracles:
 *
 * - exp, sigmoid, tanh, erf: error in ulp against libm in double over a sweep of float bit
 *   patterns (every `step`-th float of |x| up to past each function's saturation, both signs,
 *   denormals included) and the special values (+-0, +-inf, NaN, FLT_MAX, denormals, the
 *   overflow/underflow edges). The bounds are the ones vmath.h documents. EDGE_TEST_SWEEP_STEP=1
 *   sweeps every float (slow; that is how the documented bounds were measured).
 * - GELU / GELU_TANH / SiLU and the other unary kernels: against edge_unary_float (the scalar
 *   reference), exact where the kernel is one IEEE operation per step, within a stated tolerance
 *   otherwise.
 * - binary (vv, vc, rvc), reductions, column accumulation, pooling and transpose: exact against
 *   loops written here (sums: against a double sum within the float rounding bound).
 * - softmax (row and strided), log-softmax, the attention row step, layer norm, the batch-norm
 *   block kernels: against double-precision formulas.
 * - every length in a ragged list (1, 3, 17, 33, 1000+ and primes; never only multiples of 16),
 *   with guard floats after each output that must stay untouched, and elementwise kernels run on
 *   the whole array and on arbitrary pieces giving bit-identical results (which is what makes the
 *   ops' results independent of how threads split a range).
 *  */
#define _POSIX_C_SOURCE 200809L

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/config.h"
#include "test.h"


static float rnd_between(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 1000003) / 1000003.0f; }

static float from_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint32_t to_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}
static int same_float(float a, float b) { return (isnan(a) && isnan(b)) || a == b; }

/* Error of got against the exact value in units of the float spacing at the exact value. */
static double ulp_error(float got, double exact) {
  if (isnan(exact)) return isnan(got) ? 0.0 : INFINITY;
  if (isnan(got)) return INFINITY;
  if (fabs(exact) > FLT_MAX) { /* the float result must be the rounded one: inf or FLT_MAX */
    float rounded = (float)exact;
    return got == rounded ? 0.0 : INFINITY;
  }
  if (isinf(got)) return (double)(float)exact == got ? 0.0 : INFINITY;
  int exponent;
  frexp(exact, &exponent);
  double ulp = ldexp(1.0, (exponent - 24 < -149 ? -149 : exponent - 24));
  return fabs((double)got - exact) / ulp;
}

/* Lengths with ragged tails for every vector width (1, 4, 8, 16). */
static const size_t lengths[] = {1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 63, 97, 250, 1009, 1031};
#define NUM_LENGTHS (sizeof lengths / sizeof lengths[0])
#define MAX_LENGTH 1031
#define GUARD 8
#define GUARD_VALUE 12345.678f

static float *alloc_floats(size_t n) {
  float *p = malloc((n + GUARD) * sizeof *p);
  for (size_t i = 0; i < n + GUARD; ++i) p[i] = GUARD_VALUE;
  return p;
}
static int guard_intact(const float *p, size_t n) {
  for (size_t i = n; i < n + GUARD; ++i)
    if (p[i] != GUARD_VALUE) return 0;
  return 1;
}

/* ---- transcendental accuracy ---- */

typedef double (*exact_fn)(double);
static double exact_exp(double x) { return exp(x); }
static double exact_sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
static double exact_tanh(double x) { return tanh(x); }
static double exact_erf(double x) { return erf(x); }

typedef struct {
  const char *name;
  edge_unary_kind kind;
  exact_fn exact;
  float sweep_limit; /* |x| swept up to here; beyond it only special values */
  double max_ulp;    /* the bound vmath.h documents */
} accuracy_case;

static const accuracy_case accuracy_cases[] = {
    {"exp", EDGE_UNARY_EXP, exact_exp, 105.0f, 1.5},
    {"sigmoid", EDGE_UNARY_SIGMOID, exact_sigmoid, 105.0f, 3.0},
    {"tanh", EDGE_UNARY_TANH, exact_tanh, 10.0f, 8.0},
    {"erf", EDGE_UNARY_ERF, exact_erf, 5.0f, 8.0},
};

static void check_accuracy(const edge_vector_kernels *k, const accuracy_case *c, uint32_t step) {
  edge_f32_vunary_ukernel fn = k->unary[c->kind];
  CHECK(fn != NULL, "%s: no %s kernel", k->isa_name, c->name);
  if (!fn) return;
  enum { BATCH = 4096 };
  float x[BATCH], y[BATCH];
  double worst = 0.0;
  float worst_x = 0.0f;
  uint32_t limit = to_bits(c->sweep_limit);
  for (int sign = 0; sign < 2; ++sign) {
    uint64_t bits = 0;
    while (bits <= limit) {
      size_t n = 0;
      for (; n < BATCH && bits <= limit; ++n, bits += step) x[n] = from_bits((uint32_t)bits | (sign ? 0x80000000u : 0u));
      fn(n, x, y, NULL);
      for (size_t i = 0; i < n; ++i) {
        double e = ulp_error(y[i], c->exact((double)x[i]));
        if (e > worst) {
          worst = e;
          worst_x = x[i];
        }
      }
    }
  }
  static const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, FLT_MAX, -FLT_MAX, 1e-45f, -1e-45f,
                                   1e-40f, -1e-40f, FLT_MIN, -FLT_MIN, 1e30f, -1e30f, 88.72283f, 88.7229f,
                                   -87.33654f, -103.97208f, -103.9721f, -104.5f, 9.0f, -9.0f, 4.0f, -4.0f,
                                   3.9f, 8.5f, 1e-8f, -1e-8f};
  size_t ns = sizeof specials / sizeof specials[0];
  float ys[sizeof specials / sizeof specials[0]];
  fn(ns, specials, ys, NULL);
  for (size_t i = 0; i < ns; ++i) {
    double e = ulp_error(ys[i], c->exact((double)specials[i]));
    CHECK(e <= c->max_ulp, "%s %s(%a) = %a, exact %a: %.2f ulp (bound %.1f)", k->isa_name, c->name,
          (double)specials[i], (double)ys[i], c->exact((double)specials[i]), e, c->max_ulp);
  }
  CHECK(worst <= c->max_ulp, "%s %s: max error %.3f ulp at x = %a (bound %.1f)", k->isa_name, c->name, worst,
        (double)worst_x, c->max_ulp);
  if (getenv("EDGE_TEST_SWEEP_VERBOSE"))
    fprintf(stderr, "  %-7s %-8s max %.3f ulp at x = %.9g (step %u)\n", k->isa_name, c->name, worst, (double)worst_x,
            step);
}

/* ---- unary kernels against the scalar reference ---- */

typedef struct {
  edge_unary_kind kind;
  float lo, hi;    /* random inputs drawn here */
  double abs_tol;  /* |vector - reference| <= abs_tol * max(1, |x|) + rel_tol * |reference| */
  double rel_tol;
} unary_case;

static const unary_case unary_cases[] = {
    {EDGE_UNARY_RELU, -10, 10, 0, 0},          {EDGE_UNARY_RELU6, -10, 10, 0, 0},
    {EDGE_UNARY_CLIP, -10, 10, 0, 0},          {EDGE_UNARY_LEAKY_RELU, -10, 10, 0, 0},
    {EDGE_UNARY_HARD_SIGMOID, -6, 6, 1.2e-7, 0}, {EDGE_UNARY_HARD_SWISH, -6, 6, 0, 0},
    {EDGE_UNARY_EXP, -90, 90, 0, 2.5e-7},      {EDGE_UNARY_SIGMOID, -30, 30, 0, 4.2e-7},
    {EDGE_UNARY_TANH, -10, 10, 0, 1.1e-6},     {EDGE_UNARY_ERF, -5, 5, 0, 1.1e-6},
    {EDGE_UNARY_GELU, -10, 10, 4e-7, 0},       {EDGE_UNARY_GELU_TANH, -10, 10, 4e-7, 0},
    {EDGE_UNARY_SQRT, 0, 100, 0, 0},           {EDGE_UNARY_RSQRT, 0, 100, 0, 0},
    {EDGE_UNARY_RECIPROCAL, -100, 100, 0, 0},  {EDGE_UNARY_NEG, -100, 100, 0, 0},
    {EDGE_UNARY_ABS, -100, 100, 0, 0},         {EDGE_UNARY_SQUARE, -100, 100, 0, 0},
    {EDGE_UNARY_SIGN, -2, 2, 0, 0},            {EDGE_UNARY_SILU, -30, 30, 4e-7, 4.2e-7},
};

/* abs_tol is relative to max(1, |x|); one denormal step of slack covers results that underflow. */
static int within(float got, float want, float x, double abs_tol, double rel_tol) {
  if (isnan(want) || isnan(got)) return isnan(want) && isnan(got);
  if (got == want) return 1;
  if (isinf(want) || isinf(got)) return got == want;
  double scale = fabs((double)x) > 1.0 ? fabs((double)x) : 1.0;
  return fabs((double)got - want) <= abs_tol * scale + rel_tol * fabs((double)want) + 0x1p-149;
}

static void check_unary(const edge_vector_kernels *k) {
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f, -1e-40f, 3.0f, -3.0f, 6.0f};
  for (size_t c = 0; c < sizeof unary_cases / sizeof unary_cases[0]; ++c) {
    const unary_case *u = &unary_cases[c];
    edge_f32_vunary_ukernel fn = k->unary[u->kind];
    CHECK(fn != NULL, "%s: no kernel for UNARY %s", k->isa_name, edge_unary_names[u->kind]);
    if (!fn) continue;
    edge_f32_unary_params params = {u->kind == EDGE_UNARY_CLIP ? -1.5f : 0.2f, u->kind == EDGE_UNARY_CLIP ? 4.25f : 0.5f};
    for (size_t li = 0; li < NUM_LENGTHS; ++li) {
      size_t n = lengths[li];
      float *x = alloc_floats(n), *y = alloc_floats(n), *pieces = alloc_floats(n);
      for (size_t i = 0; i < n; ++i) x[i] = rnd_between(u->lo, u->hi);
      for (size_t i = 0; i < n && i < sizeof specials / sizeof specials[0]; ++i)
        if (rnd() % 4 == 0) x[i] = specials[i];
      fn(n, x, y, &params);
      int bad = 0;
      size_t first_bad = 0;
      for (size_t i = 0; i < n; ++i) {
        float want = edge_unary_float(u->kind, x[i], params.alpha, params.beta);
        int ok = (u->abs_tol == 0 && u->rel_tol == 0) ? same_float(y[i], want)
                                                      : within(y[i], want, x[i], u->abs_tol, u->rel_tol);
        if (!ok && !bad++) first_bad = i;
      }
      CHECK(!bad, "%s UNARY %s n=%zu: %d mismatches, first x=%a got %a want %a", k->isa_name,
            edge_unary_names[u->kind], n, bad, (double)x[first_bad], (double)y[first_bad],
            (double)edge_unary_float(u->kind, x[first_bad], params.alpha, params.beta));
      CHECK(guard_intact(y, n), "%s UNARY %s n=%zu wrote past the end", k->isa_name, edge_unary_names[u->kind], n);
      /* The same array in random pieces, then in place: bit-identical. */
      for (size_t at = 0; at < n;) {
        size_t piece = 1 + rnd() % 40;
        if (piece > n - at) piece = n - at;
        fn(piece, x + at, pieces + at, &params);
        at += piece;
      }
      CHECK(memcmp(pieces, y, n * sizeof *y) == 0, "%s UNARY %s n=%zu: pieces differ from one call", k->isa_name,
            edge_unary_names[u->kind], n);
      fn(n, x, x, &params);
      CHECK(memcmp(x, y, n * sizeof *y) == 0, "%s UNARY %s n=%zu: in place differs", k->isa_name,
            edge_unary_names[u->kind], n);
      free(x);
      free(y);
      free(pieces);
    }
  }
  /* SiLU against x * sigmoid(x) in double: absolute, like GELU, as sigmoid's 1 + tanh cancels for x << 0. */
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li];
    float *x = alloc_floats(n), *y = alloc_floats(n);
    for (size_t i = 0; i < n; ++i) x[i] = rnd_between(-20, 20);
    k->unary[EDGE_UNARY_SILU](n, x, y, NULL);
    int bad = 0;
    for (size_t i = 0; i < n; ++i) bad += !within(y[i], (float)(x[i] * exact_sigmoid(x[i])), x[i], 4e-7, 0);
    CHECK(!bad && guard_intact(y, n), "%s silu n=%zu: %d mismatches", k->isa_name, n, bad);
    free(x);
    free(y);
  }
}

/* ---- binary ---- */

static float binary_oracle(edge_binary_kind op, float a, float b) {
  switch (op) {
    case EDGE_BINARY_ADD: return a + b;
    case EDGE_BINARY_SUB: return a - b;
    case EDGE_BINARY_MUL: return a * b;
    case EDGE_BINARY_DIV: return a / b;
    case EDGE_BINARY_MIN: return isnan(a) ? a : isnan(b) ? b : fminf(a, b);
    case EDGE_BINARY_MAX: return isnan(a) ? a : isnan(b) ? b : fmaxf(a, b);
    case EDGE_BINARY_PRELU: return a < 0 ? a * b : a;
    default: return NAN;
  }
}

static void check_binary(const edge_vector_kernels *k) {
  static const edge_binary_kind ops[] = {EDGE_BINARY_ADD, EDGE_BINARY_SUB, EDGE_BINARY_MUL, EDGE_BINARY_DIV,
                                         EDGE_BINARY_MIN, EDGE_BINARY_MAX, EDGE_BINARY_PRELU};
  for (size_t o = 0; o < sizeof ops / sizeof ops[0]; ++o) {
    edge_binary_kind op = ops[o];
    CHECK(k->binary_vv[op] && k->binary_vc[op] && k->binary_rvc[op], "%s: BINARY %s kernels missing", k->isa_name,
          edge_binary_names[op]);
    if (!k->binary_vv[op] || !k->binary_vc[op] || !k->binary_rvc[op]) continue;
    for (size_t li = 0; li < NUM_LENGTHS; ++li) {
      size_t n = lengths[li];
      float *a = alloc_floats(n), *b = alloc_floats(n), *y = alloc_floats(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = rnd_between(-10, 10);
        b[i] = rnd_between(-10, 10);
        if (rnd() % 50 == 0) a[i] = NAN;
        if (rnd() % 50 == 0) b[i] = rnd() % 2 ? INFINITY : NAN;
      }
      int bad_vv = 0, bad_vc = 0, bad_rvc = 0;
      k->binary_vv[op](n, a, b, y);
      for (size_t i = 0; i < n; ++i) bad_vv += !same_float(y[i], binary_oracle(op, a[i], b[i]));
      CHECK(guard_intact(y, n), "%s %s vv n=%zu wrote past the end", k->isa_name, edge_binary_names[op], n);
      k->binary_vc[op](n, a, b + n / 2, y);
      for (size_t i = 0; i < n; ++i) bad_vc += !same_float(y[i], binary_oracle(op, a[i], b[n / 2]));
      k->binary_rvc[op](n, a, b + n / 2, y);
      for (size_t i = 0; i < n; ++i) bad_rvc += !same_float(y[i], binary_oracle(op, b[n / 2], a[i]));
      CHECK(!bad_vv && !bad_vc && !bad_rvc && guard_intact(y, n), "%s BINARY %s n=%zu: mismatches vv %d vc %d rvc %d",
            k->isa_name, edge_binary_names[op], n, bad_vv, bad_vc, bad_rvc);
      /* y aliasing a */
      memcpy(y, a, n * sizeof *y);
      k->binary_vv[op](n, y, b, y);
      int bad_alias = 0;
      for (size_t i = 0; i < n; ++i) bad_alias += !same_float(y[i], binary_oracle(op, a[i], b[i]));
      CHECK(!bad_alias, "%s BINARY %s n=%zu in place: %d mismatches", k->isa_name, edge_binary_names[op], n, bad_alias);
      free(a);
      free(b);
      free(y);
    }
  }
}

/* ---- reductions ---- */

static void check_reductions(const edge_vector_kernels *k) {
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li];
    float *x = alloc_floats(n);
    double sum = 0, abs_sum = 0, square_sum = 0;
    float max = -INFINITY, min = INFINITY;
    for (size_t i = 0; i < n; ++i) {
      x[i] = rnd_between(-100, 100);
      sum += x[i];
      abs_sum += fabs(x[i]);
      square_sum += (double)x[i] * x[i];
      max = x[i] > max ? x[i] : max;
      min = x[i] < min ? x[i] : min;
    }
    double bound = (double)n * 1.2e-7 * square_sum + 1e-30;
    CHECK(fabs(k->rreduce[EDGE_VREDUCE_SUM](n, x) - sum) <= n * 1.2e-7 * abs_sum, "%s rsum n=%zu", k->isa_name, n);
    CHECK(fabs(k->rreduce[EDGE_VREDUCE_ABS_SUM](n, x) - abs_sum) <= n * 1.2e-7 * abs_sum, "%s rabs_sum n=%zu",
          k->isa_name, n);
    CHECK(fabs(k->rreduce[EDGE_VREDUCE_SQUARE_SUM](n, x) - square_sum) <= bound, "%s rsquare_sum n=%zu", k->isa_name, n);
    CHECK(k->rreduce[EDGE_VREDUCE_MAX](n, x) == max, "%s rmax n=%zu: %g vs %g", k->isa_name, n,
          (double)k->rreduce[EDGE_VREDUCE_MAX](n, x), (double)max);
    CHECK(k->rreduce[EDGE_VREDUCE_MIN](n, x) == min, "%s rmin n=%zu", k->isa_name, n);
    /* NaN anywhere wins, wherever it sits relative to the vector lanes. */
    size_t at = rnd() % n;
    float saved = x[at];
    x[at] = NAN;
    CHECK(isnan(k->rreduce[EDGE_VREDUCE_MAX](n, x)) && isnan(k->rreduce[EDGE_VREDUCE_MIN](n, x)),
          "%s rmax/rmin n=%zu: NaN at %zu lost", k->isa_name, n, at);
    x[at] = saved;
    free(x);
  }
  CHECK(k->rreduce[EDGE_VREDUCE_MAX](0, NULL) == -INFINITY && k->rreduce[EDGE_VREDUCE_SUM](0, NULL) == 0.0f,
        "%s: empty reductions are not the identity", k->isa_name);

  /* Column accumulation over rows: bit-identical to the sequential float loop (sum, abs sum,
   * max, min) or within rounding (square sum, fused on FMA ISAs). */
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li], rows = 1 + rnd() % 9, stride = n + rnd() % 5;
    float *x = alloc_floats(rows * stride);
    for (size_t i = 0; i < rows * stride; ++i) x[i] = rnd_between(-50, 50);
    if (n > 2) x[stride + 1] = NAN;
    for (int kind = 0; kind < EDGE_VREDUCE_COUNT_; ++kind) {
      float *acc = alloc_floats(n), *want = alloc_floats(n);
      for (size_t j = 0; j < n; ++j) acc[j] = want[j] = rnd_between(-1, 1);
      for (size_t r = 0; r < rows; ++r)
        for (size_t j = 0; j < n; ++j) {
          float v = x[r * stride + j], w = want[j];
          switch (kind) {
            case EDGE_VREDUCE_SUM: want[j] = w + v; break;
            case EDGE_VREDUCE_ABS_SUM: want[j] = w + fabsf(v); break;
            case EDGE_VREDUCE_SQUARE_SUM: want[j] = (float)((double)v * v + w); break;
            case EDGE_VREDUCE_MAX: want[j] = isnan(w) || isnan(v) ? NAN : (v > w ? v : w); break;
            case EDGE_VREDUCE_MIN: want[j] = isnan(w) || isnan(v) ? NAN : (v < w ? v : w); break;
          }
        }
      k->raccumulate[kind](rows, n, x, stride, acc);
      int bad = 0;
      for (size_t j = 0; j < n; ++j)
        bad += kind == EDGE_VREDUCE_SQUARE_SUM ? !within(acc[j], want[j], 0, 0, rows * 2.4e-7)
                                               : !same_float(acc[j], want[j]);
      CHECK(!bad && guard_intact(acc, n), "%s raccumulate kind %d rows=%zu n=%zu: %d mismatches", k->isa_name, kind,
            rows, n, bad);
      free(acc);
      free(want);
    }
    free(x);
  }
}

/* ---- softmax, layer norm ---- */

/* Like the scalar reference, the kernels form x - max in float, which rounds by up to
 * |x - max| * 2^-24: exp turns that into the same relative error of the result, hence the
 * tolerance term with `exponent` (the oracle's x - max). */
static double softmax_tolerance(double want, double exponent, int log_form) {
  return log_form ? 1e-6 * (1 + fabs(want)) : (1e-6 + fabs(exponent) * 0x1p-24) * want + 1e-38;
}

static void softmax_oracle(size_t n, size_t step, const float *x, double *out, int log_form) {
  double max = -INFINITY, sum = 0;
  for (size_t i = 0; i < n; ++i) max = x[i * step] > max ? x[i * step] : max;
  for (size_t i = 0; i < n; ++i) sum += exp((double)x[i * step] - max);
  for (size_t i = 0; i < n; ++i)
    out[i] = log_form ? (double)x[i * step] - max - log(sum) : exp((double)x[i * step] - max) / sum;
}

static void check_softmax(const edge_vector_kernels *k) {
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li];
    float *x = alloc_floats(n), *y = alloc_floats(n);
    double want[MAX_LENGTH];
    float spread = rnd() % 2 ? 30.0f : 3.0f;
    for (size_t i = 0; i < n; ++i) x[i] = rnd_between(-spread, spread);
    for (int log_form = 0; log_form < 2; ++log_form) {
      (log_form ? k->log_softmax : k->softmax)(n, x, y);
      softmax_oracle(n, 1, x, want, log_form);
      int bad = 0;
      float max = k->rreduce[EDGE_VREDUCE_MAX](n, x);
      for (size_t i = 0; i < n; ++i)
        bad += !(fabs(y[i] - want[i]) <= softmax_tolerance(want[i], (double)x[i] - max, log_form));
      CHECK(!bad && guard_intact(y, n), "%s %s n=%zu: %d mismatches", k->isa_name,
            log_form ? "log_softmax" : "softmax", n, bad);
    }
    x[rnd() % n] = NAN;
    k->softmax(n, x, y);
    int all_nan = 1;
    for (size_t i = 0; i < n; ++i) all_nan &= isnan(y[i]);
    CHECK(all_nan, "%s softmax n=%zu: a NaN input must give NaN everywhere", k->isa_name, n);
    free(x);
    free(y);
  }
  /* Column form: length rows of inner columns, rows `stride` apart. */
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t inner = lengths[li], length = 1 + rnd() % 12, stride = inner + rnd() % 3;
    float *x = alloc_floats(length * stride), *y = alloc_floats(length * stride);
    double want[MAX_LENGTH];
    for (size_t i = 0; i < length * stride; ++i) x[i] = rnd_between(-20, 20);
    for (int log_form = 0; log_form < 2; ++log_form) {
      k->softmax_strided(length, inner, stride, x, y, log_form);
      int bad = 0;
      for (size_t j = 0; j < inner; ++j) {
        softmax_oracle(length, stride, x + j, want, log_form);
        float max = -INFINITY;
        for (size_t r = 0; r < length; ++r) max = x[r * stride + j] > max ? x[r * stride + j] : max;
        for (size_t r = 0; r < length; ++r) {
          double got = y[r * stride + j];
          bad += !(fabs(got - want[r]) <= softmax_tolerance(want[r], (double)x[r * stride + j] - max, log_form));
        }
      }
      CHECK(!bad && guard_intact(y, length * stride), "%s softmax_strided log=%d length=%zu inner=%zu: %d mismatches",
            k->isa_name, log_form, length, inner, bad);
    }
    free(x);
    free(y);
  }
}

/* The attention row step: s[j] = exp(x_j - m) within 1.5 ulp of the double value (x_j = scale *
 * s[j] + bias[j]), 0 exactly where x_j - m < -87 (below FLT_MIN), m the running maximum, the
 * returned sum and the correction exp(m_old - m); scores spread from narrow to far past exp's
 * normal range, a -inf bias dropping keys. */
static void check_attention_row(const edge_vector_kernels *k) {
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li];
    float *s = alloc_floats(n), *bias = alloc_floats(n), *raw = alloc_floats(n);
    float spread = (float[]){2.0f, 40.0f, 400.0f}[li % 3], scale = 0.5f;
    for (size_t j = 0; j < n; ++j) {
      raw[j] = s[j] = rnd_between(-spread, spread);
      bias[j] = rnd() % 5 == 0 ? -INFINITY : rnd_between(-1, 1);
    }
    float old_max = rnd() % 2 ? -INFINITY : 3.0f, max = old_max, correction = -1.0f;
    float sum = k->attention_row(n, s, scale, 0.0f, bias, &max, &correction);
    double want_max = old_max, want_sum = 0.0;
    for (size_t j = 0; j < n; ++j) want_max = fmax(want_max, (double)(raw[j] * scale) + bias[j]);
    int bad = 0;
    for (size_t j = 0; j < n; ++j) {
      /* the kernel's x_j - m is a float subtraction: exp of its rounded value is the target */
      float x = raw[j] * scale + bias[j], d_float = x - (float)want_max;
      double d = d_float;
      double want = d < -87.0 ? 0.0 : exp(d);
      want_sum += want;
      bad += d < -87.0 ? s[j] != 0.0f : !(ulp_error(s[j], want) <= 1.5);
    }
    double want_correction = old_max == -INFINITY ? 0.0 : exp((double)old_max - want_max);
    CHECK(!bad && guard_intact(s, n), "%s attention_row n=%zu spread %g: %d mismatches", k->isa_name, n, spread, bad);
    CHECK(max == (float)want_max && fabs(sum - want_sum) <= 1e-6 * want_sum + 1e-30 &&
              fabs(correction - want_correction) <= 1e-6 * want_correction + 1e-37,
          "%s attention_row n=%zu: max %g (want %g), sum %g (want %g), correction %g (want %g)", k->isa_name, n, max,
          want_max, sum, want_sum, correction, want_correction);
    free(s);
    free(bias);
    free(raw);
  }
}

static void check_layernorm(const edge_vector_kernels *k) {
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t n = lengths[li];
    float *x = alloc_floats(n), *y = alloc_floats(n), *scale = alloc_floats(n), *bias = alloc_floats(n);
    float offset = rnd_between(-50, 50);
    for (size_t i = 0; i < n; ++i) {
      x[i] = offset + rnd_between(-3, 3);
      scale[i] = rnd_between(0.5f, 2.0f);
      bias[i] = rnd_between(-1, 1);
    }
    for (int with_params = 0; with_params < 2; ++with_params) {
      k->layernorm(n, x, with_params ? scale : NULL, with_params ? bias : NULL, 1e-5f, y);
      double mean = 0, var = 0;
      for (size_t i = 0; i < n; ++i) mean += x[i];
      mean /= n;
      for (size_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
      var /= n;
      /* The kernel's float mean is off by up to about (4 + n/4) * 2^-24 * max|x| (each lane sums
       * n/N values in turn), which every normalised value sees divided by the deviation. */
      double max_abs = 0;
      for (size_t i = 0; i < n; ++i) max_abs = fabs(x[i]) > max_abs ? fabs(x[i]) : max_abs;
      double mean_error = (4.0 + n / 4.0) * 0x1p-24 * max_abs / sqrt(var + 1e-5);
      int bad = 0;
      for (size_t i = 0; i < n; ++i) {
        double normalised = (x[i] - mean) / sqrt(var + 1e-5);
        double want = with_params ? normalised * scale[i] + bias[i] : normalised;
        double tol = 2e-6 * (1 + fabs(want)) + mean_error * (with_params ? fabs(scale[i]) : 1.0);
        bad += !(fabs(y[i] - want) <= tol);
      }
      CHECK(!bad && guard_intact(y, n), "%s layernorm n=%zu params=%d: %d mismatches", k->isa_name, n, with_params, bad);
    }
    free(x);
    free(y);
    free(scale);
    free(bias);
  }
}

/* ---- pooling, transpose ---- */

static void check_pool(const edge_vector_kernels *k) {
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    size_t channels = lengths[li], in_w = 5, in_h = 4, rows = 1 + rnd() % 3, cols = 1 + rnd() % 3;
    float *x = alloc_floats(in_h * in_w * channels), *y = alloc_floats(channels);
    for (size_t i = 0; i < in_h * in_w * channels; ++i) x[i] = rnd_between(-10, 10);
    x[rnd() % (in_w * channels)] = NAN;
    size_t row_step = in_w * channels * (rows == 1 ? 1 : 1), col_step = channels * (1 + rnd() % 2);
    for (int average = 0; average < 2; ++average) {
      float divisor = (float)(rows * cols + (rnd() % 2));
      (average ? k->avgpool : k->maxpool)(rows, cols, x, row_step, col_step, channels, y, divisor);
      int bad = 0;
      for (size_t j = 0; j < channels; ++j) {
        float acc = average ? 0.0f : -INFINITY;
        for (size_t r = 0; r < rows; ++r)
          for (size_t c = 0; c < cols; ++c) {
            float v = x[r * row_step + c * col_step + j];
            acc = average ? acc + v : (v > acc || v != v ? v : acc);
          }
        if (average) acc /= divisor;
        bad += !same_float(y[j], acc);
      }
      CHECK(!bad && guard_intact(y, channels), "%s %s channels=%zu taps=%zux%zu: %d mismatches", k->isa_name,
            average ? "avgpool" : "maxpool", channels, rows, cols, bad);
    }
    k->maxpool(0, 0, x, 0, 0, channels, y, 1.0f);
    int all_inf = 1;
    for (size_t j = 0; j < channels; ++j) all_inf &= y[j] == -INFINITY;
    CHECK(all_inf, "%s maxpool with no taps must give -inf", k->isa_name);
    free(x);
    free(y);
  }
}

/* Strides a few elements past the block, and multiples of 512 elements (the 8 x 8 block walk for
 * rows that alias in L1), each with row and column counts that are and are not multiples of 8. */
static void check_transpose(const edge_vector_kernels *k) {
  for (size_t a = 0; a < NUM_LENGTHS; a += 2)
    for (size_t b = 1; b < NUM_LENGTHS; b += 3) {
      size_t rows = lengths[a] % 200 + 1, cols = lengths[b] % 150 + 1;
      size_t x_stride = (a + b) % 4 == 0 ? 512 * (1 + (a + b) % 3) : cols + rnd() % 3, y_stride = rows + rnd() % 3;
      uint32_t *x = malloc(rows * x_stride * sizeof *x), *y = malloc((cols * y_stride + GUARD) * sizeof *y);
      for (size_t i = 0; i < rows * x_stride; ++i) x[i] = rnd();
      for (size_t i = 0; i < cols * y_stride + GUARD; ++i) y[i] = 0xdeadbeefu;
      k->transpose(rows, cols, x, x_stride, y, y_stride);
      int bad = 0;
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) bad += y[c * y_stride + r] != x[r * x_stride + c];
      for (size_t c = 0; c < cols; ++c)
        for (size_t r = rows; r < y_stride; ++r) bad += y[c * y_stride + r] != 0xdeadbeefu;
      for (size_t i = cols * y_stride; i < cols * y_stride + GUARD; ++i) bad += y[i] != 0xdeadbeefu;
      CHECK(!bad, "%s transpose %zux%zu: %d mismatches", k->isa_name, rows, cols, bad);
      free(x);
      free(y);
    }
}

/* ---- training gradients: bit for bit against the ops' scalar loops ---- */

static float grad_value(uint32_t r) {
  static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, NAN, INFINITY, -INFINITY, 1e-40f};
  return r % 4 == 0 ? special[(r / 4) % 9] : (float)((int32_t)(r % 2001) - 1000) / 97.0f;
}

static void check_grad(const edge_vector_kernels *k) {
  CHECK(k->relu_grad && k->maxpool_grad, "%s: training gradient kernels missing", k->isa_name);
  if (!k->relu_grad || !k->maxpool_grad) return;
  uint32_t r = 7;
  for (size_t li = 0; li < NUM_LENGTHS; ++li) {
    const size_t n = lengths[li];
    float *x = alloc_floats(n), *dy = alloc_floats(n), *dx = alloc_floats(n), *want = alloc_floats(n);
    for (size_t i = 0; i < n; ++i) {
      r = r * 1664525u + 1013904223u, x[i] = grad_value(r >> 8);
      r = r * 1664525u + 1013904223u, dy[i] = grad_value(r >> 8);
      want[i] = x[i] > 0.0f ? dy[i] : 0.0f * dy[i];
    }
    k->relu_grad(n, x, dy, dx);
    int same = guard_intact(dx, n);
    for (size_t i = 0; i < n; ++i) same &= to_bits(dx[i]) == to_bits(want[i]) || (isnan(dx[i]) && isnan(want[i]));
    CHECK(same, "%s relu_grad n=%zu differs from the scalar loop", k->isa_name, n);
    free(x), free(dy), free(dx), free(want);
  }
  /* max pool windows: ties, NaNs, infinities; every tap count and ragged channel counts */
  enum { MAX_TAPS = 9, MAX_CHANNELS = 41 };
  for (size_t taps = 1; taps <= MAX_TAPS; ++taps)
    for (size_t channels = 1; channels <= MAX_CHANNELS; channels += 4) {
      float x[MAX_TAPS][MAX_CHANNELS], dx[MAX_TAPS][MAX_CHANNELS + GUARD], want[MAX_TAPS][MAX_CHANNELS];
      float dy[MAX_CHANNELS];
      const float *x_taps[MAX_TAPS];
      float *dx_taps[MAX_TAPS];
      for (size_t t = 0; t < taps; ++t) {
        for (size_t j = 0; j < channels; ++j) {
          r = r * 1664525u + 1013904223u;
          x[t][j] = (r >> 8) % 3 == 0 ? grad_value(r >> 12) : (float)((r >> 10) % 3);
          r = r * 1664525u + 1013904223u;
          dx[t][j] = want[t][j] = grad_value(r >> 8);
        }
        for (size_t j = channels; j < channels + GUARD; ++j) dx[t][j] = GUARD_VALUE;
        x_taps[t] = x[t];
        dx_taps[t] = dx[t];
      }
      for (size_t j = 0; j < channels; ++j) {
        r = r * 1664525u + 1013904223u;
        dy[j] = grad_value(r >> 8);
        size_t where = 0;
        float best = x[0][j];
        for (size_t t = 1; t < taps; ++t)
          if (x[t][j] > best || (x[t][j] != x[t][j] && best == best)) best = x[t][j], where = t;
        want[where][j] += dy[j];
      }
      k->maxpool_grad(taps, x_taps, dx_taps, dy, channels);
      int same = 1;
      for (size_t t = 0; t < taps; ++t) {
        same &= guard_intact(dx[t], channels);
        for (size_t j = 0; j < channels; ++j)
          same &= to_bits(dx[t][j]) == to_bits(want[t][j]) || (isnan(dx[t][j]) && isnan(want[t][j]));
      }
      CHECK(same, "%s maxpool_grad taps=%zu channels=%zu differs from the scalar loop", k->isa_name, taps, channels);
    }
}

/* ---- BatchNorm blocks: float sums against double within their rounding bound, the elementwise
 * kernels against the formula within a few roundings, in place too; guards after every output ---- */

static void check_batchnorm(const edge_vector_kernels *k) {
  CHECK(k->channel_moments && k->channel_grad_sums && k->channel_affine && k->channel_grad_apply,
        "%s: batch norm kernels missing", k->isa_name);
  if (!k->channel_moments || !k->channel_grad_sums || !k->channel_affine || !k->channel_grad_apply) return;
  static const size_t shapes[][2] = {{1, 1}, {1, 17}, {3, 5}, {4, 16}, {7, 8}, {33, 3}, {64, 35},
                                     {256, 16}, {5, 100}, {117, 35}, {2, 4100}, {13, 31}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const size_t rows = shapes[si][0], channels = shapes[si][1], n = rows * channels;
    float *x = alloc_floats(n), *dy = alloc_floats(n), *y = alloc_floats(n), *again = alloc_floats(n);
    float *mean = alloc_floats(channels), *m2 = alloc_floats(channels), *sum = alloc_floats(channels);
    float *dot = alloc_floats(channels), *shift = alloc_floats(channels), *mul = alloc_floats(channels);
    float *add = alloc_floats(channels), *d = alloc_floats(channels);
    for (size_t c = 0; c < channels; ++c) {
      float offset = rnd_between(-20, 20);
      for (size_t r = 0; r < rows; ++r) x[r * channels + c] = offset + rnd_between(-3, 3);
      shift[c] = offset + rnd_between(-1, 1);
      mul[c] = rnd_between(-2, 2);
      add[c] = rnd_between(-1, 1);
      d[c] = rnd_between(-1, 1);
    }
    for (size_t i = 0; i < n; ++i) dy[i] = rnd_between(-1, 1);
    const double chain = (8.0 + rows / 4.0) * 0x1p-24; /* four chains of rows / 4 float additions */

    k->channel_moments(rows, channels, x, mean, m2);
    int bad = 0;
    for (size_t c = 0; c < channels; ++c) {
      double want = 0, squares = 0, magnitude = 0;
      for (size_t r = 0; r < rows; ++r) want += x[r * channels + c], magnitude += fabs(x[r * channels + c]);
      want /= (double)rows;
      for (size_t r = 0; r < rows; ++r) squares += (x[r * channels + c] - want) * (x[r * channels + c] - want);
      double mean_tol = chain * magnitude / (double)rows;
      bad += !(fabs(mean[c] - want) <= mean_tol);
      bad += !(fabs(m2[c] - squares) <= 2 * chain * (squares + rows * fabs(want) * 0x1p-24 * 3) +
                                             (double)rows * mean_tol * mean_tol);
    }
    CHECK(!bad && guard_intact(mean, channels) && guard_intact(m2, channels),
          "%s channel_moments rows=%zu channels=%zu: %d mismatches", k->isa_name, rows, channels, bad);

    k->channel_grad_sums(rows, channels, x, dy, shift, sum, dot);
    bad = 0;
    for (size_t c = 0; c < channels; ++c) {
      double want_sum = 0, want_dot = 0, sum_magnitude = 0, dot_magnitude = 0;
      for (size_t r = 0; r < rows; ++r) {
        double g = dy[r * channels + c], centred = (double)x[r * channels + c] - shift[c];
        want_sum += g, sum_magnitude += fabs(g);
        want_dot += g * centred, dot_magnitude += fabs(g * centred);
      }
      bad += !(fabs(sum[c] - want_sum) <= chain * sum_magnitude);
      bad += !(fabs(dot[c] - want_dot) <= 2 * chain * dot_magnitude);
    }
    CHECK(!bad && guard_intact(sum, channels) && guard_intact(dot, channels),
          "%s channel_grad_sums rows=%zu channels=%zu: %d mismatches", k->isa_name, rows, channels, bad);

    k->channel_affine(rows, channels, x, shift, mul, add, y);
    memcpy(again, x, n * sizeof(float));
    k->channel_affine(rows, channels, again, shift, mul, add, again);
    bad = 0;
    for (size_t i = 0; i < n; ++i) {
      size_t c = i % channels;
      double product = ((double)x[i] - shift[c]) * mul[c], want = product + add[c];
      bad += !(fabs(y[i] - want) <= 4 * 0x1p-24 * (fabs(product) + fabs(add[c]))) || to_bits(again[i]) != to_bits(y[i]);
    }
    CHECK(!bad && guard_intact(y, n) && guard_intact(again, n), "%s channel_affine rows=%zu channels=%zu: %d mismatches",
          k->isa_name, rows, channels, bad);

    k->channel_grad_apply(rows, channels, x, dy, shift, mul, add, d, y);
    memcpy(again, dy, n * sizeof(float));
    k->channel_grad_apply(rows, channels, x, again, shift, mul, add, d, again);
    bad = 0;
    for (size_t i = 0; i < n; ++i) {
      size_t c = i % channels;
      double first = (double)mul[c] * dy[i], second = (double)add[c] * ((double)x[i] - shift[c]);
      double want = first + (second + d[c]);
      bad += !(fabs(y[i] - want) <= 6 * 0x1p-24 * (fabs(first) + fabs(second) + fabs(d[c]))) ||
             to_bits(again[i]) != to_bits(y[i]);
    }
    CHECK(!bad && guard_intact(y, n) && guard_intact(again, n),
          "%s channel_grad_apply rows=%zu channels=%zu: %d mismatches", k->isa_name, rows, channels, bad);
    free(x), free(dy), free(y), free(again), free(mean), free(m2), free(sum), free(dot);
    free(shift), free(mul), free(add), free(d);
  }
}

/* ---- Adam: against the update in double, within a few float roundings; guards after p, m, v ---- */

static void check_adam(const edge_vector_kernels *k) {
  CHECK(k->adam != NULL, "%s: adam kernel missing", k->isa_name);
  if (!k->adam) return;
  for (size_t li = 0; li < NUM_LENGTHS; ++li)
    for (int decoupled = 0; decoupled < 2; ++decoupled) {
      const size_t n = lengths[li];
      float *p = alloc_floats(n), *g = alloc_floats(n), *m = alloc_floats(n), *v = alloc_floats(n);
      double *want_p = malloc(n * sizeof(double)), *want_m = malloc(n * sizeof(double));
      double *want_v = malloc(n * sizeof(double)), *scale = malloc(n * sizeof(double));
      double *used = malloc(n * sizeof(double)); /* the gradient after weight decay */
      const int t = 1 + (int)(li % 5);
      const edge_f32_adam_params a = {1e-2f, 0.9f, 0.999f, 0.1f, 0.001f, (float)(1 - pow(0.9, t)),
                                      (float)(1 - pow(0.999, t)), 1e-8f, 0.05f, decoupled};
      for (size_t i = 0; i < n; ++i) {
        p[i] = rnd_between(-2, 2), g[i] = rnd_between(-1, 1) * (i % 7 == 0 ? 1e-4f : 1.0f);
        m[i] = rnd_between(-0.1f, 0.1f), v[i] = rnd_between(0, 0.01f);
        double old = p[i], gi = decoupled ? g[i] : g[i] + (double)a.weight_decay * old;
        used[i] = gi;
        want_m[i] = (double)a.beta1 * m[i] + (double)a.one_minus_beta1 * gi;
        want_v[i] = (double)a.beta2 * v[i] + (double)a.one_minus_beta2 * gi * gi;
        double ratio = (want_m[i] / a.correction1) / (sqrt(want_v[i] / a.correction2) + a.epsilon);
        double step = (double)a.lr * ratio + (decoupled ? (double)a.lr * a.weight_decay * old : 0.0);
        want_p[i] = old - step;
        scale[i] = fabs(old) + fabs(step) * 8 + a.lr; /* the ratio's own rounding: a few ulp of it */
      }
      k->adam(n, p, g, m, v, &a);
      int bad = 0;
      for (size_t i = 0; i < n; ++i) {
        bad += !(fabs(p[i] - want_p[i]) <= 4 * 0x1p-24 * scale[i]);
        bad += !(fabs(m[i] - want_m[i]) <= 4 * 0x1p-24 * (fabs(want_m[i]) + fabs(used[i]) * 0.2));
        bad += !(fabs(v[i] - want_v[i]) <= 4 * 0x1p-24 * (fabs(want_v[i]) + used[i] * used[i]));
      }
      CHECK(!bad && guard_intact(p, n) && guard_intact(m, n) && guard_intact(v, n),
            "%s adam n=%zu decoupled=%d: %d mismatches", k->isa_name, n, decoupled, bad);
      free(p), free(g), free(m), free(v), free(want_p), free(want_m), free(want_v), free(scale), free(used);
    }
}

/* ---- bilinear samples: the sum against double within a few roundings, the maxima exactly
 * (as ops/roi_align.c's reference compares); guards after acc ---- */

static void check_bilinear(const edge_vector_kernels *k) {
  CHECK(k->bilinear != NULL, "%s: bilinear kernel missing", k->isa_name);
  if (!k->bilinear) return;
  for (size_t li = 0; li < NUM_LENGTHS; ++li)
    for (int mode = EDGE_BILINEAR_ADD; mode <= EDGE_BILINEAR_MAX; ++mode) {
      const size_t n = lengths[li];
      float *rows[4], *acc = alloc_floats(n);
      const float *corners[4];
      for (int c = 0; c < 4; ++c) {
        rows[c] = alloc_floats(n);
        for (size_t i = 0; i < n; ++i) rows[c][i] = rnd_between(-4, 4);
        corners[c] = rows[c];
      }
      const float ly = rnd_between(0, 1), lx = rnd_between(0, 1);
      const float weights[4] = {(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx};
      double *before = malloc(n * sizeof(double));
      for (size_t i = 0; i < n; ++i) before[i] = acc[i] = rnd_between(-2, 2);
      k->bilinear(n, corners, weights, acc, (edge_bilinear_mode)mode);
      int bad = 0;
      for (size_t i = 0; i < n; ++i) {
        if (mode == EDGE_BILINEAR_ADD) {
          double want = before[i], scale = fabs(before[i]);
          for (int c = 0; c < 4; ++c) want += (double)weights[c] * rows[c][i], scale += fabs(weights[c] * rows[c][i]);
          bad += !(fabs(acc[i] - want) <= 6 * 0x1p-24 * scale);
        } else {
          float want = weights[0] * rows[0][i];
          for (int c = 1; c < 4; ++c) {
            float t = weights[c] * rows[c][i];
            if (t > want) want = t;
          }
          if (mode == EDGE_BILINEAR_MAX && !(want > (float)before[i])) want = (float)before[i];
          bad += to_bits(acc[i]) != to_bits(want);
        }
      }
      CHECK(!bad && guard_intact(acc, n), "%s bilinear n=%zu mode=%d: %d mismatches", k->isa_name, n, mode, bad);
      for (int c = 0; c < 4; ++c) free(rows[c]);
      free(acc), free(before);
    }
}

/* ---- bilinear resize lines: every pixel against double within a few roundings, guards after the
 * line; channel counts on both sides of the vector width, repeated and edge columns ---- */

static void check_bilinear_line(const edge_vector_kernels *k) {
  CHECK(k->bilinear_line != NULL, "%s: bilinear line kernel missing", k->isa_name);
  if (!k->bilinear_line) return;
  static const size_t channel_counts[] = {1, 3, 8, 16, 17, 35};
  for (size_t ci = 0; ci < sizeof channel_counts / sizeof channel_counts[0]; ++ci) {
    const size_t channels = channel_counts[ci], in_width = 7, width = 13, stride = channels + 2;
    float *row0 = alloc_floats(in_width * stride), *row1 = alloc_floats(in_width * stride);
    for (size_t i = 0; i < in_width * stride; ++i) row0[i] = rnd_between(-4, 4), row1[i] = rnd_between(-4, 4);
    int64_t x0[13], x1[13];
    float wx[13];
    for (size_t p = 0; p < width; ++p) {
      x0[p] = (int64_t)(rnd() % in_width);
      x1[p] = x0[p] + 1 < (int64_t)in_width ? x0[p] + 1 : x0[p];
      wx[p] = p % 4 == 0 ? 0.0f : rnd_between(0, 1);
    }
    const float wy = ci % 2 ? 0.0f : rnd_between(0, 1);
    float *out = alloc_floats(width * channels);
    k->bilinear_line(width, channels, row0, row1, x0, x1, wx, wy, stride, out);
    int bad = 0;
    for (size_t p = 0; p < width; ++p)
      for (size_t i = 0; i < channels; ++i) {
        const double w = wx[p], terms[4] = {(1 - wy) * (1 - w) * row0[x0[p] * stride + i],
                                            wy * (1 - w) * row1[x0[p] * stride + i],
                                            (1 - wy) * w * row0[x1[p] * stride + i], wy * w * row1[x1[p] * stride + i]};
        double want = 0, scale = 0;
        for (int c = 0; c < 4; ++c) want += terms[c], scale += fabs(terms[c]);
        bad += !(fabs(out[p * channels + i] - want) <= 8 * 0x1p-24 * scale);
      }
    CHECK(!bad && guard_intact(out, width * channels), "%s bilinear line channels=%zu: %d mismatches",
          k->isa_name, channels, bad);
    free(row0), free(row1), free(out);
  }
}

void test_kernels_vector(void) {
  rng_seed(0x9e3779b97f4a7c15ull);
  const char *step_env = getenv("EDGE_TEST_SWEEP_STEP");
  uint32_t step = step_env ? (uint32_t)strtoul(step_env, NULL, 10) : 1999;
  if (step == 0) step = 1;
  int levels = 0;
  for (int level = EDGE_ISA_SCALAR + 1; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    if (!config) continue;
    const edge_vector_kernels *k = &config->vector;
    CHECK(k->softmax != NULL, "level %s is supported but has no vector kernels", edge_isa_level_name(level));
    if (!k->softmax) continue;
    ++levels;
    for (size_t c = 0; c < sizeof accuracy_cases / sizeof accuracy_cases[0]; ++c)
      check_accuracy(k, &accuracy_cases[c], step);
    check_unary(k);
    check_binary(k);
    check_reductions(k);
    check_softmax(k);
    check_attention_row(k);
    check_layernorm(k);
    check_pool(k);
    check_transpose(k);
    check_grad(k);
    check_batchnorm(k);
    check_adam(k);
    check_bilinear(k);
    check_bilinear_line(k);
  }
  /* The scalar level keeps the ops on their reference code. */
  const edge_kernel_config *scalar = edge_kernels_for(EDGE_ISA_SCALAR);
  CHECK(scalar && !scalar->vector.softmax && !scalar->vector.unary[EDGE_UNARY_EXP] && !scalar->vector.relu_grad &&
            !scalar->vector.maxpool_grad && !scalar->vector.channel_moments && !scalar->vector.adam,
        "the scalar level must leave the vector table empty");
}

#ifdef EDGE_KERNELS_VECTOR_MAIN
int main(void) { return test_kernels_vector() ? 1 : 0; }
#endif

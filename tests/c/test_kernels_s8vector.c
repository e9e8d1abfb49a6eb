/* Tests of the int8 vector kernels (kernels/vector/s8-*.c: s8_maxpool, s8_raccumulate_sum, s8_vadd,
 * s8_quantize, s8_lut, s8_layernorm in vector.h) at every ISA level this machine supports, bit for
 * bit against loops written here from the issue-4 formulas and the int8 reference's contract:
 *
 *   vadd:     y = clamp(zp_y + (((int64)(a - zp_a) * ma + (int64)(b - zp_b) * mb + 2^(s-1)) >> s), lo, hi)
 *   quantize: y = clamp(zp + nearbyint(x * inv), -128, 127), float32 product, ties to even, NaN -> zp
 *   maxpool:  y = clamp(max over taps, lo, hi);  raccumulate: acc += column sums
 *   lut:      y = table[x + 128], every one of the 256 codes
 *   layernorm: exact row sums, mean and 1/std in double rounded to float32, float32 steps, requantize
 *   matmul:   c = sum_k a * b over int16 differences in [-255, 255] (exact), panels packed here
 *   requantize: y = clamp(zp + ((int64)acc * m + 2^(s-1)) >> s, lo, hi)
 *   softmax:  y = clamp(-128 + (lut[max - x] * 512 + S) / (2 S)), S = row sum of lut[max - x]
 *
 * over ragged lengths (tails of every size below the vector widths), random params including the
 * extreme shifts 1 and 62 and multipliers up to +-(2^31 - 1), values on rounding ties, infinities,
 * NaN and huge floats, with guard bytes after each output that must stay untouched.
 *  */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/config.h"
#include "test.h"



static const size_t lengths[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 77, 127, 128, 150, 300, 1031};
#define NUM_LENGTHS (sizeof lengths / sizeof lengths[0])
#define GUARD 32
#define GUARD_BYTE 0x5a

static int guard_intact(const int8_t *p) {
  for (size_t i = 0; i < GUARD; ++i)
    if ((uint8_t)p[i] != GUARD_BYTE) return 0;
  return 1;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

static void random_bounds(int32_t *lo, int32_t *hi) {
  *lo = -128;
  *hi = 127;
  if (rnd() % 2) {
    *lo = rnd_range(-128, 20);
    *hi = rnd_range(*lo, 127);
  }
}

static void check_vadd(const char *isa, edge_s8_vadd_ukernel kernel) {
  int8_t a[1100], b[1100], y[1100 + GUARD];
  for (size_t t = 0; t < NUM_LENGTHS * 12; ++t) {
    size_t n = lengths[t % NUM_LENGTHS];
    edge_s8_vadd_params p;
    p.zp_a = rnd_range(-128, 127);
    p.zp_b = rnd_range(-128, 127);
    p.zp_y = rnd_range(-128, 127);
    random_bounds(&p.lo, &p.hi);
    p.shift = t % 5 == 0 ? 1 : (t % 5 == 1 ? 62 : rnd_range(1, 62));
    int32_t big = 2147483647;
    p.ma = t % 7 == 0 ? big : (int32_t)(rnd() % 2147483647u);
    p.mb = t % 7 == 1 ? -big : (int32_t)(rnd() % 2147483647u) * (rnd() % 2 ? 1 : -1);
    if (t % 3 == 0) { /* the realistic case: multipliers near 2^30, shifts near 31 */
      p.ma = rnd_range(1 << 29, 2147483647);
      p.mb = rnd_range(1 << 29, 2147483647) * (rnd() % 2 ? 1 : -1);
      p.shift = rnd_range(28, 40);
    }
    for (size_t i = 0; i < n; ++i) {
      a[i] = (int8_t)rnd_range(-128, 127);
      b[i] = (int8_t)rnd_range(-128, 127);
    }
    a[0] = -128;
    if (n > 1) b[1] = 127;
    memset(y, GUARD_BYTE, sizeof y);
    kernel(n, a, b, y, &p);
    size_t bad = 0, first = 0;
    int64_t want_first = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t sum = (int64_t)(a[i] - p.zp_a) * p.ma + (int64_t)(b[i] - p.zp_b) * p.mb + ((int64_t)1 << (p.shift - 1));
      /* >> of a negative int64 is arithmetic on every compiler we build with; say it without it. */
      int64_t shifted = sum >= 0 ? sum / ((int64_t)1 << p.shift)
                                 : -((-sum + ((int64_t)1 << p.shift) - 1) / ((int64_t)1 << p.shift));
      int64_t want = clamp64(p.zp_y + shifted, p.lo, p.hi);
      if (y[i] != want && bad++ == 0) first = i, want_first = want;
    }
    CHECK(bad == 0, "s8_vadd [%s] n=%zu shift=%d ma=%d mb=%d: %zu wrong, first at %zu: %d != %lld", isa, n, p.shift,
          p.ma, p.mb, bad, first, y[first], (long long)want_first);
    CHECK(guard_intact(y + n), "s8_vadd [%s] n=%zu wrote past the end", isa, n);
  }
}

static int8_t quantize_oracle(float x, float inv, int32_t zp) {
  float product = x * inv; /* one float32 multiply (ISO C: no contraction) */
  if (isnan(product)) return (int8_t)zp;
  double r = nearbyint((double)product); /* ties to even; exact for any float */
  r = fmax(fmin(r, 1e6), -1e6);          /* infinities and huge values saturate below anyway */
  return (int8_t)clamp64((int64_t)r + zp, -128, 127);
}

static void check_quantize(const char *isa, edge_s8_quantize_ukernel kernel) {
  float x[1100];
  int8_t y[1100 + GUARD];
  for (size_t t = 0; t < NUM_LENGTHS * 8; ++t) {
    size_t n = lengths[t % NUM_LENGTHS];
    float scale = (float)rnd_range(1, 100000) / 1e6f;
    float inv = 1.0f / scale;
    int32_t zp = rnd_range(-128, 127);
    for (size_t i = 0; i < n; ++i) {
      switch (rnd() % 6) {
        case 0: x[i] = ((float)rnd_range(-300, 300) + 0.5f) * scale; break; /* near ties */
        case 1: x[i] = (float)rnd_range(-2000000, 2000000) * 1e-3f; break;
        case 2: x[i] = (float)rnd_range(-1000, 1000) * 1e30f; break;
        default: x[i] = (float)rnd_range(-1000000, 1000000) / 1e6f * 300.0f * scale; break;
      }
    }
    const float specials[] = {INFINITY, -INFINITY, NAN, -0.0f, 0.0f, 1e-40f, -1e-40f, 3.4e38f, -3.4e38f};
    for (size_t i = 0; i < n && i < sizeof specials / sizeof specials[0]; ++i)
      if (t % 2) x[(i * 7) % n] = specials[i];
    memset(y, GUARD_BYTE, sizeof y);
    kernel(n, x, y, inv, zp);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; ++i)
      if (y[i] != quantize_oracle(x[i], inv, zp) && bad++ == 0) first = i;
    CHECK(bad == 0, "s8_quantize [%s] n=%zu inv=%g zp=%d: %zu wrong, first x=%.9g gives %d, want %d", isa, n,
          (double)inv, zp, bad, (double)x[first], y[first], quantize_oracle(x[first], inv, zp));
    CHECK(guard_intact(y + n), "s8_quantize [%s] n=%zu wrote past the end", isa, n);
  }
}

static void check_maxpool_and_sums(const char *isa, const edge_vector_kernels *k) {
  static int8_t x[64 * 1100];
  int8_t y[1100 + GUARD];
  int32_t acc[1100], want_acc[1100];
  for (size_t i = 0; i < sizeof x; ++i) x[i] = (int8_t)rnd_range(-128, 127);
  for (size_t t = 0; t < NUM_LENGTHS * 4; ++t) {
    size_t channels = lengths[t % NUM_LENGTHS];
    size_t rows = (size_t)rnd_range(1, 4), cols = (size_t)rnd_range(1, 4);
    size_t col_step = channels * (1 + t % 2), row_step = cols * col_step + channels * (t % 2);
    int32_t lo, hi;
    random_bounds(&lo, &hi);
    memset(y, GUARD_BYTE, sizeof y);
    k->s8_maxpool(rows, cols, x, row_step, col_step, channels, y, (int8_t)lo, (int8_t)hi);
    size_t bad = 0;
    for (size_t j = 0; j < channels; ++j) {
      int32_t m = -128;
      for (size_t r = 0; r < rows; ++r)
        for (size_t c = 0; c < cols; ++c) {
          int32_t v = x[r * row_step + c * col_step + j];
          if (v > m) m = v;
        }
      bad += y[j] != clamp64(m, lo, hi);
    }
    CHECK(bad == 0, "s8_maxpool [%s] %zux%zu taps, %zu channels: %zu wrong", isa, rows, cols, channels, bad);
    CHECK(guard_intact(y + channels), "s8_maxpool [%s] %zu channels wrote past the end", isa, channels);

    size_t sum_rows = (size_t)rnd_range(1, 20), stride = channels + (t % 3);
    if (sum_rows * stride > sizeof x) sum_rows = sizeof x / stride;
    for (size_t i = 0; i < channels; ++i) acc[i] = want_acc[i] = rnd_range(-100000, 100000);
    acc[channels] = want_acc[channels] = 12345;
    k->s8_raccumulate_sum(sum_rows, channels, x, stride, acc);
    for (size_t r = 0; r < sum_rows; ++r)
      for (size_t i = 0; i < channels; ++i) want_acc[i] += x[r * stride + i];
    CHECK(memcmp(acc, want_acc, (channels + 1) * sizeof(int32_t)) == 0,
          "s8_raccumulate_sum [%s] %zu rows of %zu: wrong sums (or wrote past the end)", isa, sum_rows, channels);
  }
}

static void check_lut(const char *isa, edge_s8_lut_ukernel kernel) {
  int8_t x[1100], y[1100 + GUARD], table[256];
  for (size_t t = 0; t < NUM_LENGTHS * 4; ++t) {
    size_t n = lengths[t % NUM_LENGTHS];
    for (int i = 0; i < 256; ++i) table[i] = (int8_t)rnd_range(-128, 127);
    for (size_t i = 0; i < n; ++i) x[i] = (int8_t)(n >= 256 ? (int)((i * 37) % 256) - 128 : rnd_range(-128, 127));
    memset(y, GUARD_BYTE, sizeof y);
    kernel(n, x, y, table);
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) bad += y[i] != table[x[i] + 128];
    CHECK(bad == 0, "s8_lut [%s] n=%zu: %zu wrong", isa, n, bad);
    CHECK(guard_intact(y + n), "s8_lut [%s] n=%zu wrote past the end", isa, n);
  }
  /* In place. */
  for (int i = 0; i < 256; ++i) {
    table[i] = (int8_t)(255 - i);
    x[i] = (int8_t)(i - 128);
  }
  kernel(256, x, x, table);
  size_t bad = 0;
  for (int i = 0; i < 256; ++i) bad += x[i] != (int8_t)(255 - i);
  CHECK(bad == 0, "s8_lut [%s] in place: %zu wrong", isa, bad);
}

static void layernorm_oracle(size_t n, const int8_t *x, int8_t *y, const float *gamma, const float *beta,
                             const edge_s8_layernorm_params *p) {
  int64_t s1 = 0, s2 = 0;
  for (size_t i = n; i-- > 0;) {
    int64_t d = (int64_t)x[i] - p->zp_x;
    s1 += d;
    s2 += d * d;
  }
  double var = (double)((int64_t)n * s2 - s1 * s1) / ((double)n * (double)n), s_x = (double)p->scale_x;
  float r = (float)(s_x / sqrt(s_x * s_x * var + (double)p->epsilon)), c = (float)((double)s1 / (double)n);
  for (size_t i = 0; i < n; ++i) {
    float t = ((float)((int64_t)x[i] - p->zp_x) - c) * r;
    float v = t * gamma[i];
    v = v + beta[i];
    y[i] = quantize_oracle(v, p->inv_scale_y, p->zp_y);
  }
}

static void check_layernorm(const char *isa, edge_s8_layernorm_ukernel kernel) {
  static int8_t x[40000], y[40000 + GUARD], want[40000];
  static float gamma[40000], beta[40000];
  static const size_t extra[] = {384, 768, 20000, 40000};
  /* About 1.5 million elements: a float step rounded differently flips a few requantized values. */
  for (size_t t = 0; t < NUM_LENGTHS * 6 + 100; ++t) {
    size_t n = t < NUM_LENGTHS * 6 ? lengths[t % NUM_LENGTHS] : extra[t % 4];
    edge_s8_layernorm_params p = {rnd_range(-128, 127), rnd_range(-128, 127), (float)rnd_range(1, 100000) / 1e6f,
                                  t % 3 ? 1e-5f : 0.0f, 0.0f};
    p.inv_scale_y = 1.0f / ((float)rnd_range(t % 5 ? 10000 : 1, 60000) / 1e6f); /* mostly y in range */
    int32_t spread = t % 4 == 0 ? 2 : 127; /* narrow rows: large 1/std, saturation */
    int32_t centre = rnd_range(-128 + spread, 127 - spread);
    for (size_t i = 0; i < n; ++i) {
      x[i] = (int8_t)rnd_range(centre - spread, centre + spread);
      gamma[i] = (float)rnd_range(-2000, 2000) / 1000.0f;
      beta[i] = (float)rnd_range(-2000, 2000) / 1000.0f;
    }
    if (t % 7 == 0) memset(x, x[0], n); /* constant row: 0 * 1/std, or NaN when epsilon is 0 */
    memset(y, GUARD_BYTE, n + GUARD);
    kernel(n, x, y, gamma, beta, &p);
    layernorm_oracle(n, x, want, gamma, beta, &p);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; ++i)
      if (y[i] != want[i] && bad++ == 0) first = i;
    CHECK(bad == 0, "s8_layernorm [%s] n=%zu zp_x=%d eps=%g: %zu wrong, first at %zu: %d != %d", isa, n, p.zp_x,
          (double)p.epsilon, bad, first, y[first], want[first]);
    CHECK(guard_intact(y + n), "s8_layernorm [%s] n=%zu wrote past the end", isa, n);
  }
}

static void check_matmul(const char *isa, edge_s8_matmul_ukernel kernel) {
  static int16_t a[70 * 130], b[130 * 48], packed[6 * 130 * 8];
  static int32_t c[70 * 50], want[70 * 50];
  static const size_t ms[] = {1, 3, 4, 5, 32, 70}, ns[] = {1, 7, 8, 9, 32, 45}, ks[] = {2, 4, 32, 130};
  for (size_t t = 0; t < 6 * 6 * 4; ++t) {
    size_t m = ms[t % 6], n = ns[t / 6 % 6], kp = ks[t / 36], c_stride = n + t % 3;
    int32_t limit = t % 5 ? 255 : 1; /* some cases at the extremes only */
    for (size_t i = 0; i < m * kp; ++i) a[i] = (int16_t)(t % 5 ? rnd_range(-limit, limit) : (rnd() % 2 ? 255 : -255));
    for (size_t i = 0; i < kp * n; ++i) b[i] = (int16_t)(t % 5 ? rnd_range(-limit, limit) : (rnd() % 2 ? 255 : -255));
    memset(packed, 0, sizeof packed);
    for (size_t j = 0; j < n; ++j)
      for (size_t k = 0; k < kp; ++k) packed[(j / 8) * kp * 8 + (k / 2) * 16 + (j % 8) * 2 + k % 2] = b[k * n + j];
    for (size_t i = 0; i < m * c_stride; ++i) c[i] = want[i] = 0x5a5a5a5a;
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < n; ++j) {
        int64_t acc = 0;
        for (size_t k = kp; k-- > 0;) acc += (int64_t)a[i * kp + k] * b[k * n + j];
        want[i * c_stride + j] = (int32_t)acc;
      }
    kernel(m, n, kp, a, packed, c, c_stride);
    CHECK(memcmp(c, want, m * c_stride * sizeof(int32_t)) == 0, "s8_matmul [%s] %zux%zux%zu (stride %zu): wrong sums or "
          "wrote between rows", isa, m, kp, n, c_stride);
  }
}

static void check_matmul_pack(const char *isa, const edge_vector_kernels *k) {
  static int8_t src[70 * 140];
  static int16_t out[6 * 140 * 8 + 64], want[6 * 140 * 8 + 64];
  static const size_t rows_list[] = {1, 2, 3, 7, 16, 33}, cols_list[] = {1, 7, 8, 9, 16, 17, 33, 45};
  for (size_t t = 0; t < 6 * 8; ++t) {
    size_t rows = rows_list[t % 6], cols = cols_list[t / 6], stride = cols + t % 3;
    int32_t zp = rnd_range(-128, 127);
    for (size_t i = 0; i < rows * stride; ++i) src[i] = (int8_t)rnd_range(-128, 127);
    /* pack_a: rows x cols, each row padded to even */
    size_t kp = (cols + 1) / 2 * 2;
    for (size_t i = 0; i < sizeof out / sizeof out[0]; ++i) out[i] = want[i] = 0x5a5a;
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < kp; ++j) want[r * kp + j] = (int16_t)(j < cols ? src[r * stride + j] - zp : 0);
    k->s8_matmul_pack_a(rows, cols, src, stride, zp, out);
    CHECK(memcmp(out, want, sizeof out) == 0, "s8_matmul_pack_a [%s] %zux%zu (stride %zu)", isa, rows, cols, stride);
    /* pack_b: a rows (k) x cols (n) matrix into panels of 8 columns */
    kp = (rows + 1) / 2 * 2;
    for (size_t i = 0; i < sizeof out / sizeof out[0]; ++i) out[i] = want[i] = 0x5a5a;
    for (size_t j = 0; j < (cols + 7) / 8 * 8; ++j)
      for (size_t q = 0; q < kp; ++q)
        want[(j / 8) * kp * 8 + (q / 2) * 16 + (j % 8) * 2 + q % 2] =
            (int16_t)(j < cols && q < rows ? src[q * stride + j] - zp : 0);
    k->s8_matmul_pack_b(rows, cols, src, stride, zp, out);
    CHECK(memcmp(out, want, sizeof out) == 0, "s8_matmul_pack_b [%s] k=%zu n=%zu (stride %zu)", isa, rows, cols, stride);
  }
}

static void check_requantize(const char *isa, edge_s8_requantize_ukernel kernel) {
  int32_t acc[1100];
  int8_t y[1100 + GUARD];
  for (size_t t = 0; t < NUM_LENGTHS * 10; ++t) {
    size_t n = lengths[t % NUM_LENGTHS];
    edge_s8_requantize_params p;
    p.shift = t % 7 == 0 ? (t % 2 ? 1 : 62) : rnd_range(8, 50);
    p.multiplier = t % 5 == 0 ? 2147483647 : rnd_range(1 << 30, 2147483647);
    p.zero_point = rnd_range(-128, 127);
    random_bounds(&p.lo, &p.hi);
    for (size_t i = 0; i < n; ++i) {
      switch (rnd() % 4) {
        case 0: acc[i] = rnd() % 2 ? 2147483647 : -2147483647 - 1; break;
        case 1: acc[i] = (int32_t)rnd(); break;
        default: acc[i] = rnd_range(-(1 << 20), 1 << 20); break;
      }
      /* exact halves: acc * m = (2j + 1) * 2^(s-1) is rarely hit at random; force some when m is 2^30 */
    }
    if (t % 3 == 0) {
      p.multiplier = 1 << 30;
      p.shift = rnd_range(31, 40);
      for (size_t i = 0; i < n; ++i) acc[i] = (2 * rnd_range(-200, 200) + 1) * (1 << (p.shift - 31));
    }
    memset(y, GUARD_BYTE, sizeof y);
    kernel(n, acc, y, &p);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t v = p.zero_point + ((((int64_t)acc[i] * p.multiplier) + ((int64_t)1 << (p.shift - 1))) >> p.shift);
      if (y[i] != clamp64(v, p.lo, p.hi) && bad++ == 0) first = i;
    }
    CHECK(bad == 0, "s8_requantize [%s] n=%zu m=%d shift=%d zp=%d: %zu wrong, first acc %d gives %d", isa, n,
          p.multiplier, p.shift, p.zero_point, bad, acc[first], y[first]);
    CHECK(guard_intact(y + n), "s8_requantize [%s] n=%zu wrote past the end", isa, n);
  }
}

static void check_softmax(const char *isa, edge_s8_softmax_ukernel kernel) {
  static int8_t x[EDGE_S8_SOFTMAX_MAX_LENGTH], y[EDGE_S8_SOFTMAX_MAX_LENGTH + GUARD];
  int32_t lut[256];
  static const size_t extra[] = {2048, 4095, EDGE_S8_SOFTMAX_MAX_LENGTH};
  for (size_t t = 0; t < NUM_LENGTHS * 5 + 3; ++t) {
    size_t n = t < NUM_LENGTHS * 5 ? lengths[t % NUM_LENGTHS] : extra[t - NUM_LENGTHS * 5];
    double scale = (double)rnd_range(1, 4000) / 10000.0;
    for (int d = 0; d < 256; ++d)
      lut[d] = t % 4 == 3 ? (d ? rnd_range(0, 65536) : 65536) : (int32_t)llround(exp(-d * scale) * 65536.0);
    int32_t spread = t % 3 ? 255 : 6; /* narrow rows: many equal values, outputs near the top */
    int32_t lo = rnd_range(-128, 127 - (spread > 255 ? 255 : spread));
    for (size_t i = 0; i < n; ++i) x[i] = (int8_t)rnd_range(lo, lo + spread > 127 ? 127 : lo + spread);
    if (t % 7 == 0) memset(x, x[0], n);
    memset(y, GUARD_BYTE, n + GUARD);
    kernel(n, x, y, lut);
    int32_t max = -128;
    int64_t sum = 0;
    for (size_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
    for (size_t i = 0; i < n; ++i) sum += lut[max - x[i]];
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t want = clamp64(-128 + (lut[max - x[i]] * (int64_t)512 + sum) / (2 * sum), -128, 127);
      if (y[i] != want && bad++ == 0) first = i;
    }
    CHECK(bad == 0, "s8_softmax [%s] n=%zu: %zu wrong, first at %zu (x %d, max %d): %d", isa, n, bad, first, x[first],
          max, y[first]);
    CHECK(guard_intact(y + n), "s8_softmax [%s] n=%zu wrote past the end", isa, n);
  }
  /* An exact quotient whose float32 estimate falls just below it: S = 65536 + 100 * 209 + 4 * 5143
   * = 107008 = 512 * 209, so the 100 elements at d = 1 have num = den (q = 1), and
   * 214016 * float(1 / 214016) rounds to 0.99999994. */
  for (int d = 0; d < 256; ++d) lut[d] = d == 0 ? 65536 : d == 1 ? 209 : d == 2 ? 5143 : 77;
  x[0] = 10;
  for (int i = 1; i <= 100; ++i) x[i] = 9;
  for (int i = 101; i < 105; ++i) x[i] = 8;
  kernel(105, x, y, lut);
  size_t bad = 0;
  for (int i = 1; i <= 100; ++i) bad += y[i] != -127;
  CHECK(bad == 0 && y[0] != -127, "s8_softmax [%s]: an exact quotient under a low float estimate: %zu wrong", isa, bad);
}

void test_kernels_s8vector(void) {
  rng_seed(0x2545f4914f6cdd1dull);
  int levels = 0;
  for (int level = EDGE_ISA_SCALAR + 1; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    if (!config) continue;
    const edge_vector_kernels *k = &config->vector;
    const char *isa = edge_isa_level_name((edge_isa_level)level);
    CHECK(k->s8_vadd && k->s8_quantize && k->s8_maxpool && k->s8_raccumulate_sum,
          "level %s is supported but lacks int8 vector kernels", isa);
    if (!k->s8_vadd || !k->s8_quantize || !k->s8_maxpool || !k->s8_raccumulate_sum) continue;
    ++levels;
    check_vadd(isa, k->s8_vadd);
    check_quantize(isa, k->s8_quantize);
    check_maxpool_and_sums(isa, k);
    CHECK(k->s8_lut && k->s8_layernorm, "level %s lacks s8_lut or s8_layernorm", isa);
    if (k->s8_lut) check_lut(isa, k->s8_lut);
    if (k->s8_layernorm) check_layernorm(isa, k->s8_layernorm);
    CHECK(k->s8_matmul && k->s8_requantize, "level %s lacks s8_matmul or s8_requantize", isa);
    if (k->s8_matmul) check_matmul(isa, k->s8_matmul);
    CHECK(k->s8_matmul_pack_a && k->s8_matmul_pack_b, "level %s lacks the s8_matmul packing", isa);
    if (k->s8_matmul_pack_a && k->s8_matmul_pack_b) check_matmul_pack(isa, k);
    if (k->s8_requantize) check_requantize(isa, k->s8_requantize);
    CHECK(k->s8_softmax != NULL, "level %s lacks s8_softmax", isa);
    if (k->s8_softmax) check_softmax(isa, k->s8_softmax);
  }
  const edge_kernel_config *scalar = edge_kernels_for(EDGE_ISA_SCALAR);
  CHECK(scalar && !scalar->vector.s8_vadd && !scalar->vector.s8_maxpool && !scalar->vector.s8_lut &&
            !scalar->vector.s8_layernorm && !scalar->vector.s8_matmul && !scalar->vector.s8_requantize &&
            !scalar->vector.s8_matmul_pack_a && !scalar->vector.s8_matmul_pack_b &&
            !scalar->vector.s8_softmax,
        "the scalar level must leave the int8 vector kernels NULL (EDGE_ISA=scalar runs the reference code)");
}

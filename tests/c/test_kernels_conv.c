/* The convolution kernels and drivers (cruntime/src/kernels/conv*.{h,c}) at every ISA level this
 * machine supports, against a direct convolution written here in double precision: random shapes
 * with ragged channels (not multiples of any tile), odd sizes, every pad / stride / dilation /
 * group combination, depthwise multipliers, transposed convolutions, fused and unfused
 * activations; each method (GEMM, depthwise, Winograd, indirect GEMM, transpose) forced where the
 * shape allows it. Every case runs with 1, 2 and 3 threads, which must agree bit for bit, and
 * writes no float past its output (sentinels).
 *
 * Tolerance: |got - want| <= 4e-6 * scale + 1e-6, where scale = |bias| + sum |x * w| over the taps
 * of that output (what float rounding of that sum can reach; measured at most ~3.5e-7 * scale).
 * Winograd F(4x4, 3x3) multiplies by transform constants up to 8 around its sums: 4e-5 * scale
 * (measured at most ~3e-6 * scale; about 1e-5 of the output's largest magnitude on ResNet-18's
 * layers, printed by winograd_error_on_resnet_layers, against ~2e-6 for the direct methods). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/conv_driver.h"
#include "test.h"

/* Of the last run_case: max |got - want| / max |want| over the output. */
static double last_error_vs_peak;

static float rnd_unit(void) { return (float)((double)rnd() / 4294967296.0 * 2.0 - 1.0); }

typedef struct {
  edge_conv_shape s;
  int64_t pad_bottom, pad_right, output_padding_h, output_padding_w;
  edge_activation act;
} conv_case;

/* out_h/out_w from the other fields as the op's prepare computes them; false if no output. */
static bool complete_shape(conv_case *c) {
  edge_conv_shape *s = &c->s;
  const int64_t span_h = s->dilation_h * (s->kernel_h - 1) + 1, span_w = s->dilation_w * (s->kernel_w - 1) + 1;
  if (s->transposed) {
    s->out_h = (s->in_h - 1) * s->stride_h - s->pad_top - c->pad_bottom + span_h + c->output_padding_h;
    s->out_w = (s->in_w - 1) * s->stride_w - s->pad_left - c->pad_right + span_w + c->output_padding_w;
  } else {
    const int64_t reach_h = s->in_h + s->pad_top + c->pad_bottom - span_h;
    const int64_t reach_w = s->in_w + s->pad_left + c->pad_right - span_w;
    if (reach_h < 0 || reach_w < 0) return false;
    s->out_h = reach_h / s->stride_h + 1;
    s->out_w = reach_w / s->stride_w + 1;
  }
  return s->out_h >= 1 && s->out_w >= 1;
}

static double activate(const edge_activation *act, double v) {
  switch (act->op) {
    case EDGE_UNARY_IDENTITY: return v;
    case EDGE_UNARY_RELU: return v < 0 ? 0 : v;
    case EDGE_UNARY_RELU6: return v < 0 ? 0 : (v > 6 ? 6 : v);
    case EDGE_UNARY_CLIP: return v < act->alpha ? act->alpha : (v > act->beta ? act->beta : v);
    default: return edge_unary_float(act->op, (float)v, act->alpha, act->beta);
  }
}

/* Direct convolution in double, plus the residual's channels (s->residual_c of them, per pixel);
 * scale gets |bias| + sum |x * w| + |residual| per output (pre-activation). */
static void reference_conv(const conv_case *c, const float *x, const float *w, const float *bias,
                           const float *residual, double *y, double *scale) {
  const edge_conv_shape *s = &c->s;
  const int64_t cin_g = s->in_c / s->groups, cout_g = s->out_c / s->groups;
  for (int64_t n = 0; n < s->batch; ++n)
    for (int64_t oh = 0; oh < s->out_h; ++oh)
      for (int64_t ow = 0; ow < s->out_w; ++ow)
        for (int64_t o = 0; o < s->out_c; ++o) {
          const int64_t g = o / cout_g;
          double acc = bias ? bias[o] : 0.0, mag = bias ? fabs(bias[o]) : 0.0;
          for (int64_t kh = 0; kh < s->kernel_h; ++kh)
            for (int64_t kw = 0; kw < s->kernel_w; ++kw) {
              int64_t ih, iw;
              if (s->transposed) {
                const int64_t th = oh + s->pad_top - kh * s->dilation_h, tw = ow + s->pad_left - kw * s->dilation_w;
                if (th < 0 || tw < 0 || th % s->stride_h || tw % s->stride_w) continue;
                ih = th / s->stride_h;
                iw = tw / s->stride_w;
              } else {
                ih = oh * s->stride_h - s->pad_top + kh * s->dilation_h;
                iw = ow * s->stride_w - s->pad_left + kw * s->dilation_w;
              }
              if (ih < 0 || ih >= s->in_h || iw < 0 || iw >= s->in_w) continue;
              for (int64_t ci = 0; ci < cin_g; ++ci) {
                const double term = (double)x[((n * s->in_h + ih) * s->in_w + iw) * s->in_c + g * cin_g + ci] *
                                    (double)w[((o * s->kernel_h + kh) * s->kernel_w + kw) * cin_g + ci];
                acc += term;
                mag += fabs(term);
              }
            }
          const int64_t pixel = (n * s->out_h + oh) * s->out_w + ow, i = pixel * s->out_c + o;
          if (o < s->residual_c) {
            acc += residual[pixel * s->residual_c + o];
            mag += fabs(residual[pixel * s->residual_c + o]);
          }
          y[i] = activate(&c->act, acc);
          scale[i] = mag;
        }
}

#define SENTINELS 37

/* Runs one case at one level with 1, 2 and 3 threads; returns the largest error relative to scale. */
static double run_case(const edge_kernel_config *kernels, edge_threadpool *const pools[3], const conv_case *c,
                       edge_conv_winograd_mode winograd, edge_conv_method expect, double tolerance,
                       const char *what) {
  const edge_conv_shape *s = &c->s;
  const size_t x_count = (size_t)(s->batch * s->in_h * s->in_w * s->in_c);
  const size_t y_count = (size_t)(s->batch * s->out_h * s->out_w * s->out_c);
  const size_t w_count = (size_t)(s->out_c * s->kernel_h * s->kernel_w * (s->in_c / s->groups));
  const size_t r_count = (size_t)(s->batch * s->out_h * s->out_w * s->residual_c);
  float *x = malloc(x_count * sizeof *x), *w = malloc(w_count * sizeof *w), *bias = malloc((size_t)s->out_c * 4);
  float *residual = s->residual_c ? malloc(r_count * sizeof *residual) : NULL;
  double *want = malloc(y_count * sizeof *want), *scale = malloc(y_count * sizeof *scale);
  float *got[3];
  for (size_t i = 0; i < x_count; ++i) x[i] = rnd_unit();
  for (size_t i = 0; i < w_count; ++i) w[i] = rnd_unit();
  for (int64_t i = 0; i < s->out_c; ++i) bias[i] = rnd_unit();
  for (size_t i = 0; i < r_count; ++i) residual[i] = 2.0f * rnd_unit();
  const bool with_bias = rnd() % 4 != 0;
  reference_conv(c, x, w, with_bias ? bias : NULL, residual, want, scale);

  edge_conv_plan *plan = edge_conv_plan_create(kernels, s, w, with_bias ? bias : NULL, &c->act, winograd);
  CHECK(plan != NULL, "%s: plan creation failed", what);
  double worst = 0.0;
  if (plan) {
    CHECK(edge_conv_plan_method(plan) == expect, "%s: method %s, expected %s", what,
           edge_conv_method_name(edge_conv_plan_method(plan)), edge_conv_method_name(expect));
    const size_t scratch_bytes = edge_conv_plan_scratch_bytes(plan, 3);
    void *scratch = aligned_alloc(EDGE_ALIGNMENT, (scratch_bytes / EDGE_ALIGNMENT + 1) * EDGE_ALIGNMENT);
    for (int t = 0; t < 3; ++t) {
      got[t] = malloc((y_count + SENTINELS) * sizeof(float));
      for (size_t i = 0; i < y_count + SENTINELS; ++i) got[t][i] = -12345.0f;
      edge_conv_plan_run(plan, pools[t], x, got[t], residual, scratch);
      bool intact = true;
      for (size_t i = y_count; i < y_count + SENTINELS; ++i) intact &= got[t][i] == -12345.0f;
      CHECK(intact, "%s: wrote past the output with %d threads", what, t + 1);
    }
    size_t bad = 0, first_bad = 0;
    double peak = 0.0, max_err = 0.0;
    for (size_t i = 0; i < y_count; ++i) {
      const double err = fabs((double)got[0][i] - want[i]), bound = tolerance * scale[i] + 1e-6;
      if (fabs(want[i]) > peak) peak = fabs(want[i]);
      if (err > max_err) max_err = err;
      const double relative = err / (scale[i] + 1e-6);
      if (relative > worst) worst = relative;
      if (!(err <= bound) && bad++ == 0) first_bad = i;
    }
    last_error_vs_peak = peak > 0.0 ? max_err / peak : max_err;
    CHECK(bad == 0, "%s [%s, %s]: %zu of %zu outputs off, first [%zu] got %.7g want %.7g (scale %.3g)", what,
           kernels->conv.isa_name, edge_conv_method_name(edge_conv_plan_method(plan)), bad, y_count, first_bad,
           (double)got[0][first_bad], want[first_bad], scale[first_bad]);
    CHECK(memcmp(got[0], got[1], y_count * sizeof(float)) == 0 && memcmp(got[0], got[2], y_count * sizeof(float)) == 0,
           "%s [%s]: results differ between 1, 2 and 3 threads", what, kernels->conv.isa_name);
    for (int t = 0; t < 3; ++t) free(got[t]);
    free(scratch);
    edge_conv_plan_free(plan);
  }
  free(x);
  free(w);
  free(bias);
  free(residual);
  free(want);
  free(scale);
  return worst;
}

static edge_activation random_activation(void) {
  switch (rnd() % 6) {
    case 0: return (edge_activation){EDGE_UNARY_RELU, 0.0f, 0.0f};
    case 1: return (edge_activation){EDGE_UNARY_RELU6, 0.0f, 0.0f};
    case 2: return (edge_activation){EDGE_UNARY_CLIP, -0.5f, 0.75f};
    case 3: return (edge_activation){EDGE_UNARY_HARD_SWISH, 0.0f, 0.0f};
    case 4: return (edge_activation){EDGE_UNARY_SIGMOID, 0.0f, 0.0f};
    default: return (edge_activation){EDGE_UNARY_IDENTITY, 0.0f, 0.0f};
  }
}

static conv_case make_case(int64_t batch, int64_t h, int64_t w, int64_t cin, int64_t cout, int64_t groups,
                           int64_t kh, int64_t kw, int64_t stride, int64_t dilation, int64_t pad, bool transposed) {
  conv_case c = {0};
  /* A third of the convolutions get a residual (a fused skip connection), as wide as the output
   * or narrower (a zero-padded one). */
  const int64_t residual_c = transposed || rnd() % 3 ? 0 : rnd() % 2 ? cout : 1 + (int64_t)(rnd() % (uint32_t)cout);
  c.s = (edge_conv_shape){transposed, batch, h, w, cin, 0, 0, cout, kh, kw, groups, stride, stride, dilation,
                          dilation, pad, pad, residual_c};
  c.pad_bottom = pad;
  c.pad_right = pad;
  c.act = random_activation();
  return c;
}

/* The method the plan must pick for a case (AUTO Winograd rule aside). */
static edge_conv_method expected_method(const conv_case *c, edge_conv_winograd_mode winograd) {
  const edge_conv_shape *s = &c->s;
  if (s->transposed) return EDGE_CONV_METHOD_DECONV;
  if (s->kernel_h == 1 && s->kernel_w == 1 && s->stride_h == 1 && s->stride_w == 1 && s->pad_top == 0 &&
      s->pad_left == 0 && c->pad_bottom == 0 && c->pad_right == 0)
    return EDGE_CONV_METHOD_GEMM;
  if (s->groups == s->in_c && s->groups > 1) return EDGE_CONV_METHOD_DWCONV;
  if (winograd == EDGE_CONV_WINOGRAD_ON && edge_conv_winograd_eligible(s)) return EDGE_CONV_METHOD_WINOGRAD;
  if (winograd == EDGE_CONV_WINOGRAD_AUTO && edge_conv_winograd_eligible(s) && edge_conv_winograd_wins(s))
    return EDGE_CONV_METHOD_WINOGRAD;
  return EDGE_CONV_METHOD_IGEMM;
}

static void check_case(const edge_kernel_config *k, edge_threadpool *const pools[3], conv_case *c,
                       edge_conv_winograd_mode winograd, const char *label) {
  if (!complete_shape(c)) return;
  const edge_conv_shape *s = &c->s;
  char what[256];
  snprintf(what, sizeof what, "%s n%lld %lldx%lldx%lld->%lld g%lld k%lldx%lld s%lld d%lld p%lld%s act%d", label,
           (long long)s->batch, (long long)s->in_h, (long long)s->in_w, (long long)s->in_c, (long long)s->out_c,
           (long long)s->groups, (long long)s->kernel_h, (long long)s->kernel_w, (long long)s->stride_h,
           (long long)s->dilation_h, (long long)s->pad_top, s->transposed ? " transposed" : "", (int)c->act.op);
  const edge_conv_method method = expected_method(c, winograd);
  run_case(k, pools, c, winograd, method, method == EDGE_CONV_METHOD_WINOGRAD ? 4e-5 : 4e-6, what);
}

static void sweep_level(const edge_kernel_config *k, edge_threadpool *const pools[3]) {
  const edge_conv_winograd_mode off = EDGE_CONV_WINOGRAD_OFF, on = EDGE_CONV_WINOGRAD_ON;
  conv_case c;
  /* 1x1: GEMM, also grouped and with ragged channels around every NR. */
  for (int64_t cout = 1; cout <= 70; cout += 23) {
    c = make_case(2, 5, 7, 13, cout, 1, 1, 1, 1, 1, 0, false);
    check_case(k, pools, &c, off, "pointwise");
  }
  c = make_case(1, 9, 9, 12, 18, 3, 1, 1, 1, 1, 0, false);
  check_case(k, pools, &c, off, "pointwise grouped");
  c = make_case(1, 17, 19, 32, 40, 1, 1, 1, 1, 1, 0, false);
  check_case(k, pools, &c, off, "pointwise threaded");
  /* 1x1 strided or padded: igemm with one tap. */
  c = make_case(1, 11, 9, 10, 33, 1, 1, 1, 2, 1, 0, false);
  check_case(k, pools, &c, off, "pointwise stride 2");
  /* 49 output pixels: one row past a full tile for MR = 4, 6 and 8 (the 1-row igemm kernel). */
  c = make_case(1, 9, 9, 7, 45, 1, 3, 3, 1, 1, 0, false);
  check_case(k, pools, &c, off, "igemm single-row tail");
  c = make_case(2, 13, 13, 40, 70, 1, 3, 3, 2, 1, 0, false);
  check_case(k, pools, &c, off, "igemm threaded");
  /* Few input channels: igemm over whole kernel rows (row runs), with the windows that cross the
   * left or right edge read from zero-padded patches. Image stems (3x3 stride 2 from RGB with
   * TFLite's bottom/right-only SAME pad, 7x7 stride 2 pad 3), the largest channel count that
   * qualifies and the first that does not, a narrow image whose every window crosses both edges,
   * a 1-row kernel, dilated rows (not row runs), and batch 2 (not row runs). */
  c = make_case(1, 24, 24, 3, 24, 1, 3, 3, 2, 1, 0, false);
  c.pad_bottom = c.pad_right = 1;
  check_case(k, pools, &c, off, "row runs stem 3x3 s2");
  c = make_case(1, 30, 27, 3, 20, 1, 7, 7, 2, 1, 3, false);
  check_case(k, pools, &c, off, "row runs stem 7x7 s2");
  for (int64_t cin = 7; cin <= 8; ++cin) {
    c = make_case(1, 11, 13, cin, 19, 1, 3, 3, 1, 1, 1, false);
    check_case(k, pools, &c, off, "row runs channel limit");
  }
  c = make_case(1, 6, 2, 2, 9, 1, 5, 5, 1, 1, 2, false);
  check_case(k, pools, &c, off, "row runs both edges");
  c = make_case(1, 5, 16, 1, 33, 1, 1, 4, 1, 1, 0, false);
  c.s.pad_left = 3;
  check_case(k, pools, &c, off, "row runs 1x4 left pad");
  c = make_case(1, 12, 12, 3, 10, 1, 3, 3, 1, 2, 2, false);
  check_case(k, pools, &c, off, "dilated rows");
  c = make_case(2, 14, 14, 3, 24, 1, 3, 3, 2, 1, 1, false);
  check_case(k, pools, &c, off, "stem batch 2");
  c = make_case(1, 64, 64, 3, 32, 1, 3, 3, 2, 1, 1, false);
  check_case(k, pools, &c, off, "row runs threaded");
  /* Depthwise: 3x3 / 5x5 at stride 1 and 2, ragged channel counts, multipliers, other kernels. */
  const int64_t dw_channels[] = {1, 7, 16, 37};
  for (int ks = 3; ks <= 5; ks += 2)
    for (int64_t stride = 1; stride <= 2; ++stride)
      for (size_t i = 0; i < sizeof dw_channels / sizeof dw_channels[0]; ++i) {
        const int64_t ch = dw_channels[i];
        c = make_case(i % 2 ? 2 : 1, 9 + (int64_t)i, 8 + 2 * (int64_t)i, ch, ch, ch, ks, ks, stride, 1, ks / 2, false);
        check_case(k, pools, &c, off, "depthwise");
      }
  c = make_case(1, 13, 11, 5, 15, 5, 3, 3, 1, 1, 1, false);
  check_case(k, pools, &c, off, "depthwise multiplier 3");
  c = make_case(1, 1, 163, 1, 40, 1, 1, 10, 5, 1, 0, false);
  check_case(k, pools, &c, off, "one input channel, 1x10 stride 5 (igemm)");
  c = make_case(2, 7, 6, 1, 1, 1, 3, 3, 1, 1, 1, false);
  check_case(k, pools, &c, off, "one channel in and out (igemm)");
  c = make_case(1, 12, 10, 9, 9, 9, 7, 7, 1, 2, 3, false);
  check_case(k, pools, &c, off, "depthwise 7x7 dilated");
  c = make_case(1, 10, 10, 6, 6, 6, 3, 1, 2, 1, 1, false);
  check_case(k, pools, &c, off, "depthwise 3x1");
  c = make_case(1, 56, 56, 48, 48, 48, 3, 3, 1, 1, 1, false);
  check_case(k, pools, &c, off, "depthwise threaded");
  for (int ks = 3; ks <= 5; ks += 2) { /* unit horizontal stride, other vertical stride / dilation */
    c = make_case(2, 14, 17, 21, 21, 21, ks, ks, 1, 1, ks / 2, false);
    c.s.stride_h = 2;
    c.s.dilation_h = 2;
    c.pad_bottom = ks;
    check_case(k, pools, &c, off, "depthwise stride 2x1 dilation 2x1");
  }
  /* Winograd, forced on (any channel count) and by the rule, ragged spatial sizes and pads. */
  const int64_t sizes[][4] = {{4, 4, 1, 1}, {5, 7, 2, 3}, {9, 11, 16, 17}, {13, 8, 33, 20}, {10, 10, 16, 16}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i)
    for (int64_t pad = 0; pad <= 1; ++pad) {
      c = make_case(1 + (int64_t)(i % 2), sizes[i][0], sizes[i][1], sizes[i][2], sizes[i][3], 1, 3, 3, 1, 1, pad,
                    false);
      check_case(k, pools, &c, on, "winograd");
    }
  c = make_case(1, 37, 35, 24, 40, 1, 3, 3, 1, 1, 1, false);
  check_case(k, pools, &c, EDGE_CONV_WINOGRAD_AUTO, "winograd by rule, threaded");
  c = make_case(1, 20, 18, 24, 40, 1, 3, 3, 1, 1, 1, false);
  check_case(k, pools, &c, off, "winograd off");
  /* Transposed: the common stride-2 upsampling shapes, grouped, dilated, odd pads. */
  c = make_case(1, 7, 6, 10, 12, 1, 2, 2, 2, 1, 0, true);
  check_case(k, pools, &c, off, "transposed k2s2");
  c = make_case(2, 5, 8, 9, 7, 1, 4, 4, 2, 1, 1, true);
  check_case(k, pools, &c, off, "transposed k4s2");
  c = make_case(1, 6, 5, 6, 9, 3, 3, 3, 2, 1, 1, true);
  c.output_padding_h = 1;
  check_case(k, pools, &c, off, "transposed grouped outpad");
  c = make_case(1, 5, 5, 4, 5, 1, 3, 3, 1, 2, 0, true);
  check_case(k, pools, &c, off, "transposed dilated");
  c = make_case(1, 40, 38, 48, 32, 1, 3, 3, 2, 1, 1, true);
  check_case(k, pools, &c, off, "transposed threaded");
  /* Random shapes over everything. */
  for (int i = 0; i < 60; ++i) {
    const int64_t groups = rnd_range(1, 3);
    const bool transposed = rnd() % 5 == 0;
    c = make_case(rnd_range(1, 2), rnd_range(1, 12), rnd_range(1, 12), groups * rnd_range(1, 13),
                  groups * rnd_range(1, 37), groups, rnd_range(1, 5), rnd_range(1, 5), rnd_range(1, 3), rnd_range(1, 2),
                  0, transposed);
    c.s.pad_top = rnd_range(0, 2);
    c.s.pad_left = rnd_range(0, 2);
    c.pad_bottom = rnd_range(0, 2);
    c.pad_right = rnd_range(0, 2);
    if (rnd() % 4 == 0) { /* depthwise, possibly with a multiplier */
      c.s.groups = c.s.in_c;
      c.s.out_c = c.s.in_c * rnd_range(1, 2);
    }
    if (transposed) {
      c.output_padding_h = rnd_range(0, c.s.stride_h - 1);
      c.output_padding_w = rnd_range(0, c.s.stride_w - 1);
    }
    check_case(k, pools, &c, rnd() % 2 ? on : off, "random");
  }
}

/* Winograd's error against the double-precision direct convolution on ResNet-18's 3x3 stride-1
 * layers (one image, random weights and inputs in [-1, 1]): printed, and bounded. */
static void winograd_error_on_resnet_layers(const edge_kernel_config *k, edge_threadpool *const pools[3]) {
  const int64_t layers[][2] = {{56, 64}, {28, 128}, {14, 256}};
  for (size_t i = 0; i < sizeof layers / sizeof layers[0]; ++i) {
    conv_case c = make_case(1, layers[i][0], layers[i][0], layers[i][1], layers[i][1], 1, 3, 3, 1, 1, 1, false);
    c.act = (edge_activation){EDGE_UNARY_IDENTITY, 0.0f, 0.0f};
    complete_shape(&c);
    char what[96];
    snprintf(what, sizeof what, "resnet18 %lldx%lld %lld ch winograd", (long long)layers[i][0], (long long)layers[i][0],
             (long long)layers[i][1]);
    const double wino = run_case(k, pools, &c, EDGE_CONV_WINOGRAD_ON, EDGE_CONV_METHOD_WINOGRAD, 4e-5, what);
    const double wino_peak = last_error_vs_peak;
    const double direct = run_case(k, pools, &c, EDGE_CONV_WINOGRAD_OFF, EDGE_CONV_METHOD_IGEMM, 4e-6, what);
    printf("  conv [%s] %s: max |error| / sum|x*w| = %.2e (igemm %.2e), max |error| / max |y| = %.2e (igemm %.2e)\n",
           k->conv.isa_name, what, wino, direct, wino_peak, last_error_vs_peak);
  }
}

/* The shared-column depthwise kernels (3x3 / 5x5 at horizontal stride 1 and 2) against the per-tap
 * 3x3 / 5x5 kernels of the same level on one output row, each kernel given both indirection
 * layouts of conv.h (per pixel, and per output row with shared column pointers): the same bits
 * (all add each output's taps in the same order), for output widths around the four-pixel groups,
 * ragged channel counts, padding on both sides and pointers into a second image (input_offset),
 * with sentinels after the row. */
static void shared_column_dwconv_matches(const edge_kernel_config *k) {
  const int64_t widths[] = {1, 3, 4, 5, 9, 13}, channel_counts[] = {1, 7, 8, 16, 37};
  for (int64_t ks = 3; ks <= 5; ks += 2)
    for (int64_t stride = 1; stride <= 2; ++stride)
      for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; ++wi)
        for (size_t ci = 0; ci < sizeof channel_counts / sizeof channel_counts[0]; ++ci)
          for (int64_t offset_image = 0; offset_image <= 1; ++offset_image) {
            const int64_t out_w = widths[wi], ch = channel_counts[ci], pad = ks / 2 + (int64_t)(wi % 2);
            const int64_t in_w = (out_w - 1) * stride + ks - 2 * pad > 0 ? (out_w - 1) * stride + ks - 2 * pad : 1;
            const int64_t in_h = ks, taps = ks * ks, oh = wi % 3 == 0 ? 0 : 1; /* row 1: padding above */
            const size_t image = (size_t)(in_h * in_w * ch), block_floats = (size_t)(taps + 1) * k->conv.dwconv_channel_tile;
            const size_t blocks = ((size_t)ch + k->conv.dwconv_channel_tile - 1) / k->conv.dwconv_channel_tile;
            float *x = malloc(2 * image * sizeof(float)), *zero = calloc((size_t)ch + 64, sizeof(float));
            float *w = malloc(blocks * block_floats * sizeof(float));
            float *y[4];
            const size_t y_count = (size_t)(out_w * ch);
            const float **rows = malloc((size_t)(out_w * taps) * sizeof *rows);
            const int64_t columns = (out_w - 1) * stride + ks;
            const float **shared = malloc((size_t)(ks * columns) * sizeof *shared);
            for (size_t i = 0; i < 2 * image; ++i) x[i] = rnd_unit();
            for (size_t i = 0; i < blocks * block_floats; ++i) w[i] = rnd_unit();
            for (int64_t ow = 0; ow < out_w; ++ow)
              for (int64_t t = 0; t < taps; ++t) {
                const int64_t ih = oh * stride - pad + t / ks, iw = ow * stride - pad + t % ks;
                rows[ow * taps + t] =
                    ih < 0 || ih >= in_h || iw < 0 || iw >= in_w ? zero : x + (ih * in_w + iw) * ch;
              }
            for (int64_t r = 0; r < ks; ++r)
              for (int64_t u = 0; u < columns; ++u) {
                const int64_t ih = oh * stride - pad + r, iw = u - pad;
                shared[r * columns + u] =
                    ih < 0 || ih >= in_h || iw < 0 || iw >= in_w ? zero : x + (ih * in_w + iw) * ch;
              }
            const edge_f32_minmax_params clamp = {-0.75f, 0.75f};
            const edge_f32_dwconv_ukernel kernels[2] = {
                ks == 3 ? k->conv.dwconv_3x3 : k->conv.dwconv_5x5,
                stride == 1 ? (ks == 3 ? k->conv.dwconv_3x3_s1 : k->conv.dwconv_5x5_s1)
                            : (ks == 3 ? k->conv.dwconv_3x3_s2 : k->conv.dwconv_5x5_s2)};
            for (int v = 0; v < 4; ++v) { /* v & 1: the kernel; v & 2: the per-row layout */
              y[v] = malloc((y_count + SENTINELS) * sizeof(float));
              for (size_t i = 0; i < y_count + SENTINELS; ++i) y[v][i] = -1234.5f;
              if (v & 2)
                kernels[v & 1]((size_t)ch, (size_t)out_w, (size_t)taps, shared, (size_t)stride, (size_t)columns,
                               (size_t)offset_image * image, zero, w, y[v], (size_t)ch, &clamp);
              else
                kernels[v & 1]((size_t)ch, (size_t)out_w, (size_t)taps, rows, (size_t)taps, (size_t)ks,
                               (size_t)offset_image * image, zero, w, y[v], (size_t)ch, &clamp);
            }
            for (int v = 1; v < 4; ++v) {
              size_t past = 0;
              for (size_t i = y_count; i < y_count + SENTINELS; ++i) past += y[v][i] != -1234.5f;
              CHECK(memcmp(y[0], y[v], y_count * sizeof(float)) == 0 && past == 0,
                    "[%s] depthwise %lldx%lld stride %lld width %lld channels %lld offset %lld, %s kernel, %s "
                    "layout: differs from the per-tap kernel on the per-pixel layout or wrote past the row",
                    k->conv.isa_name, (long long)ks, (long long)ks, (long long)stride, (long long)out_w,
                    (long long)ch, (long long)offset_image, v & 1 ? "shared-column" : "per-tap",
                    v & 2 ? "per-row" : "per-pixel");
            }
            free(x);
            free(zero);
            free(w);
            free(rows);
            free(shared);
            for (int v = 0; v < 4; ++v) free(y[v]);
          }
}

void test_kernels_conv(void) {
  rng_seed(0x2545F4914F6CDD1Dull);
  edge_threadpool *pools[3] = {edge_threadpool_create(1), edge_threadpool_create(2), edge_threadpool_create(3)};
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *k = edge_kernels_for((edge_isa_level)level);
    if (!k) continue;
    sweep_level(k, pools);
    shared_column_dwconv_matches(k);
    winograd_error_on_resnet_layers(k, pools);
  }
  for (int t = 0; t < 3; ++t) edge_threadpool_free(pools[t]);
}

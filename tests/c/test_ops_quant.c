/* Tests of the integer op paths (cruntime/src/ops/q*.c, quantize.c) at the C level:
 *
 * - bad quantization params in a model (scale 0, NaN or negative, a zero point out of range, the
 *   wrong number of per-channel scales, asymmetric weights, a bias of the wrong scale, a softmax
 *   output with other params than 1/256 and -128, multipliers too large for a fixed-point form,
 *   a fused activation with no integer form) give a status and a message naming the tensor,
 *   never a crash;
 * - int8 conv, fully connected, add and average pool against naive oracles written here in
 *   double-free integer arithmetic from the spec (a different loop shape from the kernels);
 * - QUANTIZE / DEQUANTIZE element rules, and DEQUANTIZE of a constant folded at prepare;
 * - int8 LAYER_NORM against the contract of converter/quantize/int8_reference.py written out here
 *   (exact: the runtime does the same IEEE steps), over odd row lengths, broadcast scale and bias,
 *   an absent bias and constant rows; UNARY's int8 table lookup on all 256 codes and ragged
 *   lengths, bit for bit; bad tables and layer-norm operands refused with a status;
 * - int8 BATCH_MATMUL of two activations (both with zero points: attention's products) against
 *   exact sums, with transposes, batch broadcast, odd depths, row counts past one row block, and
 *   any thread count giving the same bytes;
 * - thread counts give identical bytes.
 * The op paths pick kernels from the process's ISA level; tests/ops/test_quantized_ops.py runs
 * every level against the Python reference.  */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "op_harness.h"
#include "test.h"



/* ---- a one-node graph with quantization params (op_harness.h) ---- */

/* A tensor added to the graph as an input or an output; returns its index. */
static int32_t add_io(graph *g, const char *name, edge_dtype dtype, int32_t rank, const int64_t *shape, bool output) {
  const int32_t t = add_tensor(g, name, dtype, rank, shape);
  if (output) graph_add_output(g, t);
  else graph_add_input(g, t);
  return t;
}

static void set_param(graph *g, int32_t t, float scale, int64_t zero_point) { graph_set_quant(g, t, 1, &scale, &zero_point, 0); }

static void fill_int8(graph *g, int32_t t, int32_t lo, int32_t hi) {
  int8_t *data = g->tensors[t].data;
  for (size_t i = 0; i < g->tensors[t].nbytes; ++i) data[i] = (int8_t)rnd_range(lo, hi);
}

/* The spec's requantization, written out again (int64, add half, arithmetic shift). */
static int32_t oracle_requantize(int64_t acc, double real, int32_t zp, int32_t lo, int32_t hi) {
  int exponent;
  double fraction = frexp(real, &exponent);
  int64_t m = llround(fraction * 2147483648.0);
  if (m == ((int64_t)1 << 31)) {
    m /= 2;
    ++exponent;
  }
  int32_t shift = 31 - exponent;
  int64_t v = zp + ((acc * m + ((int64_t)1 << (shift - 1))) >> shift);
  return (int32_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* ---- a conv whose every check the test can break ---- */

typedef struct {
  graph g;
  int32_t x, w, b, y;
} conv_graph;

static void conv_build(conv_graph *c, int64_t n, int64_t h, int64_t wd, int64_t ci, int64_t co, int64_t k,
                       int32_t groups, int32_t pad) {
  graph *g = &c->g;
  graph_init(g, EDGE_OP_CONV_2D);
  int64_t xs[4] = {n, h, wd, ci}, ws[4] = {co, k, k, ci / groups}, bs[1] = {co}, ys[4] = {1, 1, 1, 1};
  c->x = add_io(g, "conv/x", EDGE_INT8, 4, xs, false);
  c->w = add_io(g, "conv/w", EDGE_INT8, 4, ws, false);
  c->b = add_io(g, "conv/b", EDGE_INT32, 1, bs, false);
  c->y = add_io(g, "conv/y", EDGE_INT8, 4, ys, true);
  g->tensors[c->w].kind = EDGE_TENSOR_CONSTANT;
  g->tensors[c->b].kind = EDGE_TENSOR_CONSTANT;
  edge_conv2d_options *o = &g->node.options.conv2d;
  o->strides[0] = o->strides[1] = 1;
  o->dilations[0] = o->dilations[1] = 1;
  for (int i = 0; i < 4; ++i) o->pads[i] = pad;
  o->groups = groups;
  float sx = 0.05f, sy = 0.2f, sw[64], sb[64];
  int64_t zeros[64] = {0};
  for (int64_t i = 0; i < co; ++i) {
    sw[i] = 0.002f + 0.0005f * (float)i;
    sb[i] = (float)((double)sx * (double)sw[i]);
  }
  set_param(g, c->x, sx, 3);
  graph_set_quant(g, c->w, (int32_t)co, sw, zeros, 0);
  graph_set_quant(g, c->b, (int32_t)co, sb, zeros, 0);
  set_param(g, c->y, sy, -5);
  fill_int8(g, c->x, -128, 127);
  fill_int8(g, c->w, -127, 127);
  int32_t *bias = g->tensors[c->b].data;
  for (int64_t i = 0; i < co; ++i) bias[i] = rnd_range(-2000, 2000);
}

/* Runs prepare and expects a failure with a message containing `needle`. */
static void expect_rejected(graph *g, edge_status want, const char *needle, const char *what) {
  edge_status status = graph_prepare(g);
  CHECK(status == want, "%s: prepare returned %s, expected %s (%s)", what, edge_status_name(status),
        edge_status_name(want), g->error);
  CHECK(strstr(g->error, needle) != NULL, "%s: message '%s' does not name '%s'", what, g->error, needle);
}

static void test_bad_params(void) {
  conv_graph c;

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.scales[c.x][0] = 0.0f;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/x", "zero input scale");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.scales[c.y][0] = NAN;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/y", "NaN output scale");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.scales[c.w][2] = -0.1f;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/w", "negative weight scale");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.zero_points[c.x][0] = 200;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/x", "zero point out of range");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.tensors[c.w].num_quant_params = 5;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/w", "wrong per-channel count");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.tensors[c.w].quantized_dimension = 3;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/w", "per-channel along the wrong axis");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.zero_points[c.w][1] = 4;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/w", "asymmetric weights");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.scales[c.b][0] *= 2.0f;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/b", "bias of the wrong scale");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.tensors[c.b].dtype = EDGE_FLOAT32;
  expect_rejected(&c.g, EDGE_UNSUPPORTED, "conv/b", "float bias on an int8 conv");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.tensors[c.x].num_quant_params = 0;
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/x", "missing input params");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.scales[c.y][0] = 1e-14f; /* s_x * s_w / s_y is far above 2^30 */
  expect_rejected(&c.g, EDGE_INVALID_MODEL, "conv/y", "multiplier too large");
  graph_free(&c.g);

  conv_build(&c, 1, 5, 5, 4, 6, 3, 1, 1);
  c.g.node.activation.op = EDGE_UNARY_SIGMOID;
  expect_rejected(&c.g, EDGE_UNSUPPORTED, "conv/y", "sigmoid fused on int8");
  graph_free(&c.g);

  /* Softmax with free output params. */
  graph g;
  graph_init(&g, EDGE_OP_SOFTMAX);
  int64_t shape[2] = {2, 5};
  int32_t x = add_io(&g, "sm/x", EDGE_INT8, 2, shape, false), y = add_io(&g, "sm/y", EDGE_INT8, 2, shape, true);
  set_param(&g, x, 0.1f, 0);
  set_param(&g, y, 0.01f, -128);
  g.node.options.softmax.axis = 1;
  expect_rejected(&g, EDGE_INVALID_MODEL, "sm/y", "softmax output params");
  graph_free(&g);

  /* Add whose scale ratio has no fixed-point form. */
  graph_init(&g, EDGE_OP_BINARY);
  int32_t a = add_io(&g, "add/a", EDGE_INT8, 2, shape, false), b = add_io(&g, "add/b", EDGE_INT8, 2, shape, false);
  y = add_io(&g, "add/y", EDGE_INT8, 2, shape, true);
  set_param(&g, a, 1e10f, 0);
  set_param(&g, b, 0.1f, 0);
  set_param(&g, y, 1e-10f, 0);
  g.node.options.binary.op = EDGE_BINARY_ADD;
  expect_rejected(&g, EDGE_INVALID_MODEL, "add/y", "add ratio too large");
  graph_free(&g);

  /* Max pool whose output params differ from its input's. */
  graph_init(&g, EDGE_OP_POOL_2D);
  int64_t image[4] = {1, 4, 4, 3};
  x = add_io(&g, "pool/x", EDGE_INT8, 4, image, false);
  y = add_io(&g, "pool/y", EDGE_INT8, 4, image, true);
  set_param(&g, x, 0.1f, 0);
  set_param(&g, y, 0.2f, 0);
  edge_pool2d_options *po = &g.node.options.pool2d;
  po->type = EDGE_POOL_MAX;
  po->kernel[0] = po->kernel[1] = 2;
  po->strides[0] = po->strides[1] = 1;
  po->dilations[0] = po->dilations[1] = 1;
  expect_rejected(&g, EDGE_INVALID_MODEL, "pool/y", "max pool with new params");
  graph_free(&g);

  /* Quantize into a tensor without params, dequantize of uint8 with a zero point past 255. */
  graph_init(&g, EDGE_OP_QUANTIZE);
  x = add_io(&g, "q/x", EDGE_FLOAT32, 2, shape, false);
  y = add_io(&g, "q/y", EDGE_INT8, 2, shape, true);
  expect_rejected(&g, EDGE_INVALID_MODEL, "q/y", "quantize without params");
  graph_free(&g);
  graph_init(&g, EDGE_OP_DEQUANTIZE);
  x = add_io(&g, "dq/x", EDGE_UINT8, 2, shape, false);
  y = add_io(&g, "dq/y", EDGE_FLOAT32, 2, shape, true);
  set_param(&g, x, 0.1f, 300);
  expect_rejected(&g, EDGE_INVALID_MODEL, "dq/x", "uint8 zero point past 255");
  graph_free(&g);
}

/* ---- int8 conv against a naive oracle ---- */

static void test_conv_matches_oracle(void) {
  for (int trial = 0; trial < 12; ++trial) {
    int32_t groups = rnd_range(1, 3), k = rnd_range(1, 3), pad = rnd_range(0, 1);
    bool depthwise = trial % 3 == 0;
    int64_t ci = depthwise ? rnd_range(1, 9) : groups * rnd_range(1, 4);
    int64_t co = depthwise ? ci : groups * rnd_range(1, 5);
    if (depthwise) groups = (int32_t)ci;
    int64_t n = rnd_range(1, 2), h = rnd_range(k, 7), wd = rnd_range(k, 7);
    conv_graph c;
    conv_build(&c, n, h, wd, ci, co, k, groups, pad);
    graph *g = &c.g;
    if (trial % 4 == 1) g->node.activation.op = EDGE_UNARY_RELU;
    edge_status status = graph_run(g);
    CHECK(status == EDGE_OK, "conv trial %d: %s", trial, g->error);
    if (status != EDGE_OK) {
      graph_free(g);
      continue;
    }
    int64_t oh = h + 2 * pad - k + 1, ow = wd + 2 * pad - k + 1, cg = ci / groups, og = co / groups;
    const int8_t *x = g->tensors[c.x].data, *w = g->tensors[c.w].data, *y = g->tensors[c.y].data;
    const int32_t *bias = g->tensors[c.b].data;
    int32_t lo = g->node.activation.op == EDGE_UNARY_RELU ? -5 : -128;
    int bad = 0;
    for (int64_t b = 0; b < n; ++b)
      for (int64_t o = 0; o < co; ++o)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            int64_t acc = bias[o], grp = o / og;
            for (int64_t c2 = 0; c2 < cg; ++c2)
              for (int64_t u = 0; u < k; ++u)
                for (int64_t v = 0; v < k; ++v) {
                  int64_t ih = i - pad + u, iw = j - pad + v;
                  int64_t xv = ih < 0 || iw < 0 || ih >= h || iw >= wd ? 3 /* zp_x */
                                                                       : x[((b * h + ih) * wd + iw) * ci + grp * cg + c2];
                  acc += (xv - 3) * w[((o * k + u) * k + v) * cg + c2];
                }
            double real = (double)0.05f * (double)g->scales[c.w][o] / (double)0.2f;
            int32_t want = oracle_requantize(acc, real, -5, lo, 127);
            int32_t got = y[((b * oh + i) * ow + j) * co + o];
            if (got != want && bad++ == 0)
              CHECK(false, "conv trial %d (groups %d, k %d, pad %d): y[%lld,%lld,%lld,%lld] = %d, expected %d", trial,
                    groups, k, pad, (long long)b, (long long)i, (long long)j, (long long)o, got, want);
          }
    /* Two threads: the same bytes. */
    size_t bytes = g->tensors[c.y].nbytes;
    int8_t *single = malloc(bytes);
    memcpy(single, y, bytes);
    edge_threadpool *pool = edge_threadpool_create(2);
    g->ctx.pool = pool;
    g->ctx.num_threads = 2;
    CHECK(graph_run(g) == EDGE_OK, "conv trial %d on 2 threads: %s", trial, g->error);
    CHECK(memcmp(single, g->tensors[c.y].data, bytes) == 0, "conv trial %d: 2 threads differ", trial);
    g->ctx.pool = NULL;
    edge_threadpool_free(pool);
    free(single);
    graph_free(g);
  }
}

/* ---- add, average pool against oracles ---- */

static void test_add_and_pool(void) {
  graph g;
  graph_init(&g, EDGE_OP_BINARY);
  int64_t as[3] = {2, 3, 5}, bs[1] = {5}, ys[1] = {1};
  int32_t a = add_io(&g, "a", EDGE_INT8, 3, as, false), b = add_io(&g, "b", EDGE_INT8, 1, bs, false);
  int32_t y = add_io(&g, "y", EDGE_INT8, 1, ys, true);
  set_param(&g, a, 0.031f, -7);
  set_param(&g, b, 0.11f, 12);
  set_param(&g, y, 0.07f, 3);
  fill_int8(&g, a, -128, 127);
  fill_int8(&g, b, -128, 127);
  g.node.options.binary.op = EDGE_BINARY_SUB;
  CHECK(graph_run(&g) == EDGE_OK, "sub: %s", g.error);
  /* The spec's shared shift, found by search in exact arithmetic. */
  double ma_real = (double)0.031f / (double)0.07f, mb_real = (double)0.11f / (double)0.07f;
  int s = 62;
  while (llround(ldexp(mb_real > ma_real ? mb_real : ma_real, s)) >= ((int64_t)1 << 31)) --s;
  int64_t ma = llround(ldexp(ma_real, s)), mb = llround(ldexp(mb_real, s));
  const int8_t *av = g.tensors[a].data, *bv = g.tensors[b].data, *yv = g.tensors[y].data;
  for (int i = 0; i < 30; ++i) {
    int64_t v = 3 + ((((int64_t)av[i] + 7) * ma - ((int64_t)bv[i % 5] - 12) * mb + ((int64_t)1 << (s - 1))) >> s);
    v = v < -128 ? -128 : (v > 127 ? 127 : v);
    CHECK(yv[i] == v, "sub element %d: %d, expected %lld", i, yv[i], (long long)v);
  }
  graph_free(&g);

  graph_init(&g, EDGE_OP_POOL_2D);
  int64_t image[4] = {1, 5, 6, 3};
  int32_t x = add_io(&g, "x", EDGE_INT8, 4, image, false);
  y = add_io(&g, "y", EDGE_INT8, 4, image, true);
  set_param(&g, x, 0.05f, 10);
  set_param(&g, y, 0.04f, -2);
  fill_int8(&g, x, -128, 127);
  edge_pool2d_options *po = &g.node.options.pool2d;
  po->type = EDGE_POOL_AVERAGE;
  po->kernel[0] = po->kernel[1] = 3;
  po->strides[0] = po->strides[1] = 2;
  po->dilations[0] = po->dilations[1] = 1;
  po->pads[0] = po->pads[1] = po->pads[2] = po->pads[3] = 1;
  po->count_include_pad = true;
  CHECK(graph_run(&g) == EDGE_OK, "avgpool: %s", g.error);
  const int8_t *xv = g.tensors[x].data, *pv = g.tensors[y].data;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t c = 0; c < 3; ++c) {
        int64_t sum = 0, count = 0;
        for (int64_t u = -1; u <= 1; ++u)
          for (int64_t v = -1; v <= 1; ++v) {
            int64_t ih = 2 * i + u, iw = 2 * j + v;
            if (ih < -1 || iw < -1 || ih > 5 || iw > 6) continue;
            ++count; /* inside the padded input */
            sum += ih < 0 || iw < 0 || ih >= 5 || iw >= 6 ? 10 : xv[(ih * 6 + iw) * 3 + c];
          }
        int32_t want = oracle_requantize(sum - count * 10, (double)0.05f / ((double)0.04f * (double)count), -2, -128, 127);
        int32_t got = pv[(i * 3 + j) * 3 + c];
        CHECK(got == want, "avgpool (%lld,%lld,%lld): %d, expected %d", (long long)i, (long long)j, (long long)c, got, want);
      }
  graph_free(&g);
}

/* ---- int8 LAYER_NORM ---- */

/* The contract, one element at a time from the row's exact sums. */
static int8_t oracle_layer_norm(const int8_t *row, int64_t n, int64_t i, int32_t zp_x, float s_x, float epsilon,
                                float gamma, float beta, float s_y, int32_t zp_y) {
  int64_t s1 = 0, s2 = 0;
  for (int64_t k = n - 1; k >= 0; --k) {
    s1 += row[k] - zp_x;
    s2 += (int64_t)(row[k] - zp_x) * (row[k] - zp_x);
  }
  double mean_d = (double)s1 / (double)n;
  double var_d = (double)(n * s2 - s1 * s1) / ((double)n * (double)n);
  float r = (float)((double)s_x / sqrt((double)s_x * (double)s_x * var_d + (double)epsilon));
  float c = (float)mean_d;
  float t = ((float)(row[i] - zp_x) - c) * r;
  float y = t * gamma;
  y = y + beta;
  float q = nearbyintf(y * (1.0f / s_y));
  if (q != q) return (int8_t)zp_y;
  double v = (double)q + zp_y;
  return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

typedef struct {
  graph g;
  int32_t x, scale, bias, y;
} layer_norm_graph;

/* x [outer, n] (or [outer, 2, n / 2] normalised over both, axis -2); scale/bias of `scale_count` /
 * `bias_count` elements (1, n, or 0 for no bias). */
static void layer_norm_build(layer_norm_graph *l, int64_t outer, int64_t n, bool two_dims, int64_t scale_count,
                             int64_t bias_count) {
  graph *g = &l->g;
  graph_init(g, EDGE_OP_LAYER_NORM);
  int64_t xs[3] = {outer, two_dims ? 2 : n, n / 2}, ss[1] = {scale_count}, bs[1] = {bias_count};
  l->x = add_io(g, "ln/x", EDGE_INT8, two_dims ? 3 : 2, xs, false);
  l->scale = add_io(g, "ln/gamma", EDGE_FLOAT32, 1, ss, false);
  l->bias = bias_count ? add_io(g, "ln/beta", EDGE_FLOAT32, 1, bs, false) : -1;
  l->y = add_io(g, "ln/y", EDGE_INT8, two_dims ? 3 : 2, xs, true);
  g->tensors[l->scale].kind = EDGE_TENSOR_CONSTANT;
  if (bias_count) g->tensors[l->bias].kind = EDGE_TENSOR_CONSTANT;
  g->node.options.layer_norm.axis = two_dims ? -2 : -1;
  g->node.options.layer_norm.epsilon = 1e-5f;
  set_param(g, l->x, 0.02f + 0.001f * (float)rnd_range(0, 100), rnd_range(-30, 30));
  set_param(g, l->y, 0.01f + 0.001f * (float)rnd_range(0, 50), rnd_range(-20, 20));
  fill_int8(g, l->x, -128, 127);
  float *gamma = g->tensors[l->scale].data;
  for (int64_t i = 0; i < scale_count; ++i) gamma[i] = 0.5f + (float)rnd_range(0, 1000) / 1000.0f;
  if (bias_count) {
    float *beta = g->tensors[l->bias].data;
    for (int64_t i = 0; i < bias_count; ++i) beta[i] = (float)rnd_range(-500, 500) / 1000.0f;
  }
}

static void layer_norm_check(layer_norm_graph *l, const char *what) {
  graph *g = &l->g;
  edge_status status = graph_run(g);
  CHECK(status == EDGE_OK, "%s: %s", what, g->error);
  if (status != EDGE_OK) return;
  const edge_tensor *x = &g->tensors[l->x];
  int64_t n = x->rank == 3 ? x->shape[1] * x->shape[2] : x->shape[1], rows = x->shape[0];
  const int8_t *xv = x->data, *yv = g->tensors[l->y].data;
  const edge_tensor *st = &g->tensors[l->scale];
  const float *gamma = st->data, *beta = l->bias >= 0 ? g->tensors[l->bias].data : NULL;
  int64_t scale_count = st->shape[0], bias_count = l->bias >= 0 ? g->tensors[l->bias].shape[0] : 0;
  int wrong = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) {
      float gm = gamma[i % scale_count], bt = beta ? beta[i % bias_count] : 0.0f; /* trailing-dim broadcast */
      int8_t want = oracle_layer_norm(xv + r * n, n, i, (int32_t)g->zero_points[l->x][0], g->scales[l->x][0],
                                      g->node.options.layer_norm.epsilon, gm, bt, g->scales[l->y][0],
                                      (int32_t)g->zero_points[l->y][0]);
      if (yv[r * n + i] != want && ++wrong <= 3)
        CHECK(0, "%s: row %lld element %lld of %lld: %d, expected %d", what, (long long)r, (long long)i, (long long)n,
              yv[r * n + i], want);
    }
}

static void test_layer_norm_int8(void) {
  static const int64_t lengths[] = {1, 2, 7, 15, 16, 17, 33, 64, 100, 384, 1031};
  layer_norm_graph l;
  char what[96];
  for (size_t c = 0; c < sizeof lengths / sizeof lengths[0]; ++c) {
    int64_t n = lengths[c];
    layer_norm_build(&l, 5, n, false, n, n);
    snprintf(what, sizeof what, "int8 layer norm n=%lld", (long long)n);
    layer_norm_check(&l, what);
    graph_free(&l.g);
    layer_norm_build(&l, 3, n, false, 1, 0); /* scalar scale, no bias */
    snprintf(what, sizeof what, "int8 layer norm n=%lld, scalar scale, no bias", (long long)n);
    layer_norm_check(&l, what);
    graph_free(&l.g);
  }
  layer_norm_build(&l, 4, 40, true, 20, 1); /* normalised over [2, 20]: scale [20] broadcast, scalar bias */
  layer_norm_check(&l, "int8 layer norm over two dims");
  graph_free(&l.g);

  /* Constant rows: variance 0; with epsilon 0 the division gives NaN, which quantizes to zp_y. */
  layer_norm_build(&l, 3, 48, false, 48, 48);
  memset(l.g.tensors[l.x].data, 7, 48 * 3);
  layer_norm_check(&l, "int8 layer norm of constant rows");
  l.g.node.options.layer_norm.epsilon = 0.0f;
  layer_norm_check(&l, "int8 layer norm of constant rows, epsilon 0");
  graph_free(&l.g);

  /* Thread counts give the same bytes. */
  layer_norm_build(&l, 64, 384, false, 384, 384);
  CHECK(graph_run(&l.g) == EDGE_OK, "int8 layer norm, 1 thread: %s", l.g.error);
  int8_t one[64 * 384];
  memcpy(one, l.g.tensors[l.y].data, sizeof one);
  edge_threadpool *pool = edge_threadpool_create(3);
  l.g.ctx.pool = pool;
  l.g.ctx.num_threads = 3;
  CHECK(graph_run(&l.g) == EDGE_OK, "int8 layer norm, 3 threads: %s", l.g.error);
  CHECK(memcmp(one, l.g.tensors[l.y].data, sizeof one) == 0, "int8 layer norm: 3 threads differ from 1");
  l.g.ctx.pool = NULL;
  edge_threadpool_free(pool);
  graph_free(&l.g);

  /* Refused: an int8 input with a float output, a scale computed by the graph, bad params. */
  layer_norm_build(&l, 2, 16, false, 16, 16);
  l.g.tensors[l.y].dtype = EDGE_FLOAT32;
  expect_rejected(&l.g, EDGE_UNSUPPORTED, "float32", "int8 layer norm with a float output");
  l.g.tensors[l.y].dtype = EDGE_INT8;
  l.g.tensors[l.scale].kind = EDGE_TENSOR_ACTIVATION;
  expect_rejected(&l.g, EDGE_UNSUPPORTED, "ln/gamma", "int8 layer norm with a computed scale");
  l.g.tensors[l.scale].kind = EDGE_TENSOR_CONSTANT;
  l.g.scales[l.x][0] = 0.0f;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "ln/x", "int8 layer norm with input scale 0");
  l.g.scales[l.x][0] = 0.05f;
  l.g.zero_points[l.y][0] = 300;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "ln/y", "int8 layer norm with an output zero point out of range");
  l.g.zero_points[l.y][0] = 0;
  l.g.node.activation.op = EDGE_UNARY_RELU;
  expect_rejected(&l.g, EDGE_UNSUPPORTED, "activation", "int8 layer norm with a fused activation");
  graph_free(&l.g);
}

/* ---- int8 UNARY: table lookup ---- */

typedef struct {
  graph g;
  int32_t x, table, y;
} lut_graph;

static void lut_build(lut_graph *l, int64_t n, edge_unary_kind op) {
  graph *g = &l->g;
  graph_init(g, EDGE_OP_UNARY);
  int64_t xs[2] = {1, n}, ts[1] = {256};
  l->x = add_io(g, "gelu/x", EDGE_INT8, 2, xs, false);
  l->table = add_io(g, "gelu/table", EDGE_INT8, 1, ts, false);
  l->y = add_io(g, "gelu/y", EDGE_INT8, 2, xs, true);
  g->tensors[l->table].kind = EDGE_TENSOR_CONSTANT;
  g->node.options.unary.op = op;
  set_param(g, l->x, 0.05f, 3);
  set_param(g, l->y, 0.03f, -60);
  fill_int8(g, l->x, -128, 127);
  fill_int8(g, l->table, -128, 127);
}

static void test_unary_lut(void) {
  static const int64_t lengths[] = {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000, 70001};
  lut_graph l;
  for (size_t c = 0; c < sizeof lengths / sizeof lengths[0]; ++c) {
    int64_t n = lengths[c];
    lut_build(&l, n, EDGE_UNARY_GELU);
    int8_t *xv = l.g.tensors[l.x].data;
    if (n >= 256)
      for (int64_t i = 0; i < 256; ++i) xv[(i * 7) % 256] = (int8_t)(i - 128); /* every code, shuffled */
    edge_status status = graph_run(&l.g);
    CHECK(status == EDGE_OK, "int8 unary n=%lld: %s", (long long)n, l.g.error);
    const int8_t *table = l.g.tensors[l.table].data, *yv = l.g.tensors[l.y].data;
    int wrong = 0;
    for (int64_t i = 0; status == EDGE_OK && i < n; ++i) wrong += yv[i] != table[xv[i] + 128];
    CHECK(wrong == 0, "int8 unary n=%lld: %d elements differ from table[x + 128]", (long long)n, wrong);
    graph_free(&l.g);
  }

  /* The table carrying the output's params is fine; other params, shapes, dtypes are not. */
  lut_build(&l, 40, EDGE_UNARY_TANH);
  set_param(&l.g, l.table, 0.03f, -60);
  CHECK(graph_run(&l.g) == EDGE_OK, "int8 unary with a table quantized like the output: %s", l.g.error);
  set_param(&l.g, l.table, 0.03f, -61);
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "gelu/table", "int8 unary with a table quantized differently");
  l.g.tensors[l.table].num_quant_params = 0;
  l.g.tensors[l.table].shape[0] = 255;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "[255]", "int8 unary with a 255-entry table");
  l.g.tensors[l.table].shape[0] = 256;
  l.g.tensors[l.table].dtype = EDGE_UINT8;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "uint8", "int8 unary with a uint8 table");
  l.g.tensors[l.table].dtype = EDGE_INT8;
  l.g.tensors[l.table].kind = EDGE_TENSOR_ACTIVATION;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "constant", "int8 unary with a computed table");
  l.g.tensors[l.table].kind = EDGE_TENSOR_CONSTANT;
  l.g.tensors[l.y].dtype = EDGE_FLOAT32;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "float32", "int8 unary with a float output");
  l.g.tensors[l.y].dtype = EDGE_INT8;
  l.g.scales[l.x][0] = -1.0f;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "gelu/x", "int8 unary with a negative input scale");
  l.g.scales[l.x][0] = 0.05f;
  l.g.node.activation.op = EDGE_UNARY_RELU;
  expect_rejected(&l.g, EDGE_UNSUPPORTED, "activation", "int8 unary with a fused activation");
  l.g.node.activation.op = EDGE_UNARY_IDENTITY;
  l.g.node.options.unary.op = EDGE_UNARY_IS_NAN;
  expect_rejected(&l.g, EDGE_UNSUPPORTED, "int8", "int8 IS_NAN");
  l.g.node.options.unary.op = EDGE_UNARY_GELU;
  l.g.node.num_inputs = 1;
  expect_rejected(&l.g, EDGE_INVALID_MODEL, "table", "int8 GELU without a table");
  graph_free(&l.g);

  /* A float input takes no table. */
  graph g;
  graph_init(&g, EDGE_OP_UNARY);
  int64_t shape[1] = {8}, ts[1] = {256};
  add_io(&g, "f/x", EDGE_FLOAT32, 1, shape, false);
  add_io(&g, "f/table", EDGE_INT8, 1, ts, false);
  add_io(&g, "f/y", EDGE_FLOAT32, 1, shape, true);
  g.node.options.unary.op = EDGE_UNARY_GELU;
  expect_rejected(&g, EDGE_INVALID_MODEL, "2 inputs", "float GELU with a table");
  graph_free(&g);
}

/* ---- int8 BATCH_MATMUL of two activations ---- */

static void bmm_case(int64_t batch, int64_t m, int64_t k, int64_t n, bool ta, bool tb, bool broadcast_b, int threads) {
  graph g;
  graph_init(&g, EDGE_OP_BATCH_MATMUL);
  int64_t as[3] = {batch, ta ? k : m, ta ? m : k}, bs[3] = {broadcast_b ? 1 : batch, tb ? n : k, tb ? k : n};
  int64_t ys[3] = {1, 1, 1};
  int32_t a = add_io(&g, "bmm/a", EDGE_INT8, 3, as, false), b = add_io(&g, "bmm/b", EDGE_INT8, 3, bs, false);
  int32_t y = add_io(&g, "bmm/y", EDGE_INT8, 3, ys, true);
  g.node.options.batch_matmul.transpose_a = ta;
  g.node.options.batch_matmul.transpose_b = tb;
  float sa = 0.01f + 0.001f * (float)rnd_range(0, 50), sb = 0.01f + 0.001f * (float)rnd_range(0, 50);
  float sy = (float)((double)sa * sb * (double)k * 40.0) * (0.5f + 0.001f * (float)rnd_range(0, 1000));
  int32_t za = rnd_range(-128, 127), zb = rnd_range(-128, 127), zy = rnd_range(-20, 20);
  set_param(&g, a, sa, za);
  set_param(&g, b, sb, zb);
  set_param(&g, y, sy, zy);
  fill_int8(&g, a, -128, 127);
  fill_int8(&g, b, -128, 127);
  edge_threadpool *pool = threads > 1 ? edge_threadpool_create(threads) : NULL;
  g.ctx.pool = pool;
  g.ctx.num_threads = threads;
  edge_status status = graph_run(&g);
  CHECK(status == EDGE_OK, "bmm %lldx%lldx%lldx%lld: %s", (long long)batch, (long long)m, (long long)k, (long long)n,
        g.error);
  if (status == EDGE_OK) {
    const int8_t *av = g.tensors[a].data, *bv = g.tensors[b].data, *yv = g.tensors[y].data;
    double real = (double)sa * (double)sb / (double)sy;
    int wrong = 0;
    for (int64_t i = 0; i < batch; ++i) {
      const int8_t *ai = av + i * m * k, *bi = bv + (broadcast_b ? 0 : i) * k * n;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
          int64_t acc = 0;
          for (int64_t q = k - 1; q >= 0; --q)
            acc += (int64_t)((ta ? ai[q * m + r] : ai[r * k + q]) - za) * ((tb ? bi[c * k + q] : bi[q * n + c]) - zb);
          int32_t want = oracle_requantize(acc, real, zy, -128, 127), got = yv[(i * m + r) * n + c];
          if (got != want && ++wrong <= 3)
            CHECK(0, "bmm batch %lld (%lldx%lldx%lld ta %d tb %d bcast %d, %d threads) [%lld][%lld]: %d, expected %d",
                  (long long)i, (long long)m, (long long)k, (long long)n, ta, tb, broadcast_b, threads, (long long)r,
                  (long long)c, got, want);
        }
    }
  }
  g.ctx.pool = NULL;
  if (pool) edge_threadpool_free(pool);
  graph_free(&g);
}

static void test_bmm_activations(void) {
  bmm_case(4, 32, 32, 32, false, false, false, 1); /* attention's shapes */
  bmm_case(3, 5, 7, 9, false, false, false, 1);
  bmm_case(2, 70, 33, 17, true, false, false, 1); /* past one row block, odd depth, transposed A */
  bmm_case(3, 9, 16, 8, false, true, true, 1);
  bmm_case(5, 1, 1, 1, true, true, false, 1);
  bmm_case(6, 13, 41, 23, false, false, true, 3);
  bmm_case(7, 32, 31, 40, true, true, false, 2);
}

/* ---- quantize / dequantize ---- */

static void test_quantize_dequantize(void) {
  graph g;
  graph_init(&g, EDGE_OP_QUANTIZE);
  int64_t shape[1] = {8};
  int32_t x = add_io(&g, "x", EDGE_FLOAT32, 1, shape, false), y = add_io(&g, "y", EDGE_INT8, 1, shape, true);
  set_param(&g, y, 0.5f, 1);
  /* Ties go to even: 0.25 / 0.5 = 0.5 -> 0, 0.75 / 0.5 = 1.5 -> 2; saturation both ways. */
  const float in[8] = {0.25f, 0.75f, -0.25f, -0.75f, 1000.0f, -1000.0f, INFINITY, 3.0f};
  const int8_t want[8] = {1, 3, 1, -1, 127, -128, 127, 7};
  memcpy(g.tensors[x].data, in, sizeof in);
  CHECK(graph_run(&g) == EDGE_OK, "quantize: %s", g.error);
  for (int i = 0; i < 8; ++i)
    CHECK(((int8_t *)g.tensors[y].data)[i] == want[i], "quantize(%g) = %d, expected %d", (double)in[i],
          ((int8_t *)g.tensors[y].data)[i], want[i]);
  graph_free(&g);

  /* DEQUANTIZE of a float16 constant is folded at prepare: the output points into the node's plan. */
  graph_init(&g, EDGE_OP_DEQUANTIZE);
  int64_t wshape[2] = {3, 7};
  x = add_io(&g, "w16", EDGE_FLOAT16, 2, wshape, false);
  y = add_io(&g, "w", EDGE_FLOAT32, 2, wshape, true);
  g.tensors[x].kind = EDGE_TENSOR_CONSTANT;
  uint16_t *half = g.tensors[x].data;
  for (int i = 0; i < 21; ++i) half[i] = edge_float_to_half((float)(i - 10) * 0.37f);
  CHECK(graph_prepare(&g) == EDGE_OK, "dequantize fold: %s", g.error);
  CHECK(g.tensors[y].folded && g.tensors[y].kind == EDGE_TENSOR_CONSTANT, "dequantize of a constant is not folded");
  CHECK(g.node.plan_bytes == 21 * sizeof(float), "folded plan_bytes %zu", g.node.plan_bytes);
  CHECK(g.tensors[y].data != g.owned[y], "folded output still points at its arena buffer");
  for (int i = 0; i < 21; ++i)
    CHECK(((float *)g.tensors[y].data)[i] == edge_half_to_float(half[i]), "folded element %d", i);
  CHECK(edge_op_lookup(g.node.opcode)->eval(&g.ctx, &g.node) == EDGE_OK, "folded eval");
  graph_free(&g);

  /* Per-channel int8 dequantize along axis 1. */
  graph_init(&g, EDGE_OP_DEQUANTIZE);
  x = add_io(&g, "q", EDGE_INT8, 2, wshape, false);
  y = add_io(&g, "f", EDGE_FLOAT32, 2, wshape, true);
  float scales[7];
  int64_t zps[7];
  for (int i = 0; i < 7; ++i) {
    scales[i] = 0.01f * (float)(i + 1);
    zps[i] = i - 3;
  }
  graph_set_quant(&g, x, 7, scales, zps, 1);
  fill_int8(&g, x, -128, 127);
  CHECK(graph_run(&g) == EDGE_OK, "dequantize per channel: %s", g.error);
  CHECK(!g.tensors[y].folded, "dequantize of an activation is folded");
  for (int i = 0; i < 21; ++i) {
    float want_f = (float)(((int8_t *)g.tensors[x].data)[i] - zps[i % 7]) * scales[i % 7];
    CHECK(((float *)g.tensors[y].data)[i] == want_f, "dequantize element %d", i);
  }
  graph_free(&g);
}

void test_ops_quant(void) {
  rng_seed(0x9e3779b97f4a7c15ull);
  test_bad_params();
  test_conv_matches_oracle();
  test_add_and_pool();
  test_quantize_dequantize();
  test_layer_norm_int8();
  test_unary_lut();
  test_bmm_activations();
}

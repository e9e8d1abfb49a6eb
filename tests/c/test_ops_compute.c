/* Tests of the compute reference kernels (conv, conv transpose, fully connected, batch matmul,
 * pool, reduce, softmax, layer norm, LRN, LSTM, GRU).
 *
 * Each test builds tensors and a node by hand, runs prepare and eval through the registration
 * table, and compares with a deliberately naive oracle in double precision written in a different
 * shape from the kernel: convolution in NCHW on transposed copies, conv transpose as a scatter from
 * input pixels, reductions scattered from every input element, recurrences as a plain per-step
 * loop. Shapes and options are random and odd-sized. A float result must be within 1e-5 of the
 * sum of the absolute values of the terms that made it (plus 1e-5), the float32 rounding bound.
 * Kernels split over threads are also run on a 3-thread pool and compared bit for bit with one
 * thread.  */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "op_harness.h"
#include "test.h"


/* ---- the one-node graph (op_harness.h) ---- */

static int32_t add_input(graph *g, const char *name, int32_t rank, const int64_t *shape, float lo, float hi) {
  int32_t t = add_tensor(g, name, EDGE_FLOAT32, rank, shape);
  float *data = g->tensors[t].data;
  for (int64_t i = 0; i < edge_num_elements(rank, shape); ++i) data[i] = rnd_float(lo, hi);
  g->inputs[g->node.num_inputs++] = t;
  return t;
}

static void add_absent_input(graph *g) { g->inputs[g->node.num_inputs++] = -1; }

static int32_t add_output(graph *g, const char *name) {
  int64_t one = 1;
  int32_t t = add_tensor(g, name, EDGE_FLOAT32, 1, &one);
  g->outputs[g->node.num_outputs++] = t;
  return t;
}

static const float *tensor_data(const graph *g, int32_t t) { return g->tensors[t].data; }

/* Compares n results with oracle values; magnitude[i] is the sum of |terms| behind want[i] (NULL:
 * |want[i]|). Reports the first mismatch only. */
static void compare(const char *what, const float *got, const double *want, const double *magnitude, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double scale = magnitude ? magnitude[i] : fabs(want[i]);
    double tolerance = 1e-5 * (1.0 + scale);
    if (isnan(want[i]) ? !isnan(got[i]) : !(fabs(got[i] - want[i]) <= tolerance)) {
      CHECK(false, "%s: element %lld is %.9g, expected %.9g", what, (long long)i, got[i], want[i]);
      return;
    }
  }
  CHECK(true, "%s", what);
}

static void check_shape(const char *what, const edge_tensor *t, int32_t rank, const int64_t *shape) {
  bool same = t->rank == rank;
  for (int32_t d = 0; same && d < rank; ++d) same = t->shape[d] == shape[d];
  char got[128], want[128];
  edge_format_shape(got, sizeof got, t->rank, t->shape);
  edge_format_shape(want, sizeof want, rank, shape);
  CHECK(same, "%s: output shape %s, expected %s", what, got, want);
}

/* Runs the graph on one thread and on a 3-thread pool; the results must be bit-identical. */
static void check_thread_independent(graph *g, const char *what) {
  int32_t out = g->outputs[0];
  size_t nbytes = g->tensors[out].nbytes;
  void *single = malloc(nbytes + 1);
  memcpy(single, g->tensors[out].data, nbytes);
  edge_threadpool *pool = edge_threadpool_create(3);
  g->ctx.pool = pool;
  g->ctx.num_threads = 3;
  edge_status status = graph_run(g);
  CHECK(status == EDGE_OK, "%s on 3 threads: %s", what, g->error);
  CHECK(g->tensors[out].nbytes == nbytes && memcmp(single, g->tensors[out].data, nbytes) == 0,
        "%s: 3 threads differ from 1 thread", what);
  g->ctx.pool = NULL;
  g->ctx.num_threads = 1;
  edge_threadpool_free(pool);
  free(single);
}

/* ---- convolution ---- */

typedef struct {
  int64_t n, h, w, c, o, kh, kw, groups;
  int32_t stride[2], dilation[2], pads[4], output_padding[2];
  bool bias, transposed;
} conv_case;

static void random_conv_case(conv_case *k, bool transposed) {
  memset(k, 0, sizeof *k);
  k->transposed = transposed;
  k->n = rnd_range(1, 2);
  k->h = rnd_range(1, 9);
  k->w = rnd_range(1, 9);
  int64_t per_group_in = rnd_range(1, 5), per_group_out = rnd_range(1, 5);
  k->groups = rnd_range(1, 3);
  if (rnd() % 4 == 0) per_group_in = 1; /* depthwise-like */
  k->c = per_group_in * k->groups;
  k->o = per_group_out * k->groups;
  k->kh = rnd_range(1, 4);
  k->kw = rnd_range(1, 4);
  for (int i = 0; i < 2; ++i) {
    k->stride[i] = (int32_t)rnd_range(1, 3);
    k->dilation[i] = (int32_t)rnd_range(1, 2);
    k->output_padding[i] = transposed ? (int32_t)rnd_range(0, k->stride[i] - 1) : 0;
  }
  for (int i = 0; i < 4; ++i) k->pads[i] = (int32_t)rnd_range(0, 2);
  k->bias = rnd() % 2;
  /* keep the output non-empty */
  if (!transposed) {
    k->h += k->dilation[0] * (k->kh - 1);
    k->w += k->dilation[1] * (k->kw - 1);
  } else {
    k->h += 2;
    k->w += 2;
  }
}

static void run_conv_case(const conv_case *k, edge_unary_kind activation, bool threads) {
  graph g;
  graph_init(&g, k->transposed ? EDGE_OP_CONV_TRANSPOSE_2D : EDGE_OP_CONV_2D);
  int64_t x_shape[4] = {k->n, k->h, k->w, k->c};
  int64_t cig = k->c / k->groups, cog = k->o / k->groups;
  int64_t w_shape[4] = {k->o, k->kh, k->kw, cig}, b_shape[1] = {k->o};
  int32_t x = add_input(&g, "x", 4, x_shape, -1, 1), w = add_input(&g, "w", 4, w_shape, -1, 1);
  int32_t b = -1;
  if (k->bias) b = add_input(&g, "b", 1, b_shape, -1, 1);
  else if (rnd() % 2) add_absent_input(&g);
  int32_t y = add_output(&g, "y");
  edge_conv2d_options *o = &g.node.options.conv2d;
  for (int i = 0; i < 2; ++i) {
    o->strides[i] = k->stride[i];
    o->dilations[i] = k->dilation[i];
    o->output_padding[i] = k->output_padding[i];
  }
  for (int i = 0; i < 4; ++i) o->pads[i] = k->pads[i];
  o->groups = (int32_t)k->groups;
  g.node.activation.op = activation;
  char what[256];
  snprintf(what, sizeof what,
           "%s x[%lld,%lld,%lld,%lld] o=%lld k=%lldx%lld g=%lld s=(%d,%d) d=(%d,%d) p=(%d,%d,%d,%d) op=(%d,%d) bias=%d",
           k->transposed ? "conv_transpose" : "conv", (long long)k->n, (long long)k->h, (long long)k->w,
           (long long)k->c, (long long)k->o, (long long)k->kh, (long long)k->kw, (long long)k->groups, k->stride[0],
           k->stride[1], k->dilation[0], k->dilation[1], k->pads[0], k->pads[1], k->pads[2], k->pads[3],
           k->output_padding[0], k->output_padding[1], k->bias);
  edge_status status = graph_run(&g);
  CHECK(status == EDGE_OK, "%s: %s", what, g.error);
  if (status != EDGE_OK) {
    graph_free(&g);
    return;
  }
  int64_t oh, ow;
  if (k->transposed) {
    oh = (k->h - 1) * k->stride[0] - k->pads[0] - k->pads[2] + k->dilation[0] * (k->kh - 1) + 1 + k->output_padding[0];
    ow = (k->w - 1) * k->stride[1] - k->pads[1] - k->pads[3] + k->dilation[1] * (k->kw - 1) + 1 + k->output_padding[1];
  } else {
    oh = (int64_t)floor((double)(k->h + k->pads[0] + k->pads[2] - k->dilation[0] * (k->kh - 1) - 1) / k->stride[0]) + 1;
    ow = (int64_t)floor((double)(k->w + k->pads[1] + k->pads[3] - k->dilation[1] * (k->kw - 1) - 1) / k->stride[1]) + 1;
  }
  int64_t y_shape[4] = {k->n, oh, ow, k->o};
  check_shape(what, &g.tensors[y], 4, y_shape);

  /* NCHW copies of x and OIHW of w, result in NCHW. */
  const float *xd = tensor_data(&g, x), *wd = tensor_data(&g, w), *bd = b >= 0 ? tensor_data(&g, b) : NULL;
  int64_t total = k->n * k->o * oh * ow;
  double *x_nchw = malloc(sizeof(double) * (size_t)(k->n * k->c * k->h * k->w));
  double *w_oihw = malloc(sizeof(double) * (size_t)(k->o * cig * k->kh * k->kw));
  double *want_nchw = calloc((size_t)total, sizeof(double)), *mag_nchw = calloc((size_t)total, sizeof(double));
  for (int64_t n = 0; n < k->n; ++n)
    for (int64_t c = 0; c < k->c; ++c)
      for (int64_t i = 0; i < k->h; ++i)
        for (int64_t j = 0; j < k->w; ++j)
          x_nchw[((n * k->c + c) * k->h + i) * k->w + j] = xd[((n * k->h + i) * k->w + j) * k->c + c];
  for (int64_t oc = 0; oc < k->o; ++oc)
    for (int64_t ci = 0; ci < cig; ++ci)
      for (int64_t i = 0; i < k->kh; ++i)
        for (int64_t j = 0; j < k->kw; ++j)
          w_oihw[((oc * cig + ci) * k->kh + i) * k->kw + j] = wd[((oc * k->kh + i) * k->kw + j) * cig + ci];
  if (!k->transposed) {
    for (int64_t n = 0; n < k->n; ++n)
      for (int64_t oc = 0; oc < k->o; ++oc)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            double acc = bd ? bd[oc] : 0.0, mag = fabs(acc);
            int64_t g0 = oc / cog;
            for (int64_t ci = 0; ci < cig; ++ci)
              for (int64_t a = 0; a < k->kh; ++a)
                for (int64_t bb = 0; bb < k->kw; ++bb) {
                  int64_t ih = i * k->stride[0] - k->pads[0] + a * k->dilation[0];
                  int64_t iw = j * k->stride[1] - k->pads[1] + bb * k->dilation[1];
                  if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w) continue;
                  double term = x_nchw[((n * k->c + g0 * cig + ci) * k->h + ih) * k->w + iw] *
                                w_oihw[((oc * cig + ci) * k->kh + a) * k->kw + bb];
                  acc += term;
                  mag += fabs(term);
                }
            want_nchw[((n * k->o + oc) * oh + i) * ow + j] = acc;
            mag_nchw[((n * k->o + oc) * oh + i) * ow + j] = mag;
          }
  } else { /* scatter every input pixel through the kernel */
    for (int64_t idx = 0; idx < total; ++idx) {
      int64_t oc = idx / (oh * ow) % k->o;
      want_nchw[idx] = bd ? bd[oc] : 0.0;
      mag_nchw[idx] = fabs(want_nchw[idx]);
    }
    for (int64_t n = 0; n < k->n; ++n)
      for (int64_t c = 0; c < k->c; ++c)
        for (int64_t i = 0; i < k->h; ++i)
          for (int64_t j = 0; j < k->w; ++j)
            for (int64_t a = 0; a < k->kh; ++a)
              for (int64_t bb = 0; bb < k->kw; ++bb) {
                int64_t yi = i * k->stride[0] - k->pads[0] + a * k->dilation[0];
                int64_t yj = j * k->stride[1] - k->pads[1] + bb * k->dilation[1];
                if (yi < 0 || yi >= oh || yj < 0 || yj >= ow) continue;
                int64_t g0 = c / cig;
                for (int64_t q = 0; q < cog; ++q) {
                  int64_t oc = g0 * cog + q;
                  double term = x_nchw[((n * k->c + c) * k->h + i) * k->w + j] *
                                w_oihw[((oc * cig + c % cig) * k->kh + a) * k->kw + bb];
                  want_nchw[((n * k->o + oc) * oh + yi) * ow + yj] += term;
                  mag_nchw[((n * k->o + oc) * oh + yi) * ow + yj] += fabs(term);
                }
              }
  }
  double *want = malloc(sizeof(double) * (size_t)(total + 1)), *mag = malloc(sizeof(double) * (size_t)(total + 1));
  for (int64_t n = 0; n < k->n; ++n)
    for (int64_t oc = 0; oc < k->o; ++oc)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double v = want_nchw[((n * k->o + oc) * oh + i) * ow + j];
          if (activation == EDGE_UNARY_RELU) v = v < 0 ? 0 : v;
          want[((n * oh + i) * ow + j) * k->o + oc] = v;
          mag[((n * oh + i) * ow + j) * k->o + oc] = mag_nchw[((n * k->o + oc) * oh + i) * ow + j];
        }
  compare(what, tensor_data(&g, y), want, mag, total);
  if (threads) check_thread_independent(&g, what);
  free(x_nchw);
  free(w_oihw);
  free(want_nchw);
  free(mag_nchw);
  free(want);
  free(mag);
  graph_free(&g);
}

/* The weights here are not constants, so above EDGE_ISA=scalar the fast plans run, packing them
 * on every eval; every random case also runs through the scalar reference (EDGE_CONV=reference). */
static void test_conv(void) {
  for (int trial = 0; trial < 150; ++trial) {
    conv_case k;
    random_conv_case(&k, trial % 2 == 1);
    const uint64_t state = test_rng_state;
    setenv("EDGE_CONV", "reference", 1);
    run_conv_case(&k, trial % 3 == 0 ? EDGE_UNARY_RELU : EDGE_UNARY_IDENTITY, trial % 10 == 0);
    unsetenv("EDGE_CONV");
    test_rng_state = state;
    run_conv_case(&k, trial % 3 == 0 ? EDGE_UNARY_RELU : EDGE_UNARY_IDENTITY, trial % 10 == 0);
  }
  /* depthwise, and a case big enough to spread over threads */
  conv_case depthwise = {1, 17, 15, 12, 24, 3, 3, 12, {2, 1}, {1, 1}, {1, 1, 1, 1}, {0, 0}, true, false};
  run_conv_case(&depthwise, EDGE_UNARY_RELU, true);
  conv_case wide = {2, 13, 11, 16, 21, 3, 3, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, {0, 0}, true, false};
  run_conv_case(&wide, EDGE_UNARY_IDENTITY, true);
  conv_case up = {1, 9, 7, 8, 6, 4, 4, 2, {2, 2}, {1, 1}, {1, 1, 1, 1}, {1, 0}, true, true};
  run_conv_case(&up, EDGE_UNARY_IDENTITY, true);
}

static void test_conv_errors(void) {
  graph g;
  graph_init(&g, EDGE_OP_CONV_2D);
  int64_t x_shape[4] = {1, 5, 5, 6}, w_shape[4] = {4, 3, 3, 4};
  add_input(&g, "x", 4, x_shape, -1, 1);
  add_input(&g, "w", 4, w_shape, -1, 1);
  add_output(&g, "y");
  edge_conv2d_options *o = &g.node.options.conv2d;
  o->strides[0] = o->strides[1] = o->dilations[0] = o->dilations[1] = 1;
  o->groups = 4; /* 6 channels do not split into 4 groups */
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "groups"), "conv bad groups: %s", g.error);
  o->groups = 1; /* w has 4 input channels, x 6 */
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "'w'"), "conv weight mismatch: %s", g.error);
  g.tensors[0].dtype = EDGE_INT8;
  CHECK(graph_run(&g) == EDGE_UNSUPPORTED && strstr(g.error, "int8"), "conv int8: %s", g.error);
  graph_free(&g);
}

/* ---- matmul ---- */

static void test_fully_connected(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_FULLY_CONNECTED);
    int32_t rank = (int32_t)rnd_range(1, 3);
    int64_t x_shape[3], k = rnd_range(1, 37), nout = rnd_range(1, 19);
    for (int32_t d = 0; d < rank - 1; ++d) x_shape[d] = rnd_range(1, 5);
    x_shape[rank - 1] = k;
    int64_t w_shape[2] = {nout, k};
    int32_t x = add_input(&g, "x", rank, x_shape, -1, 1), w = add_input(&g, "w", 2, w_shape, -1, 1), b = -1;
    bool bias = trial % 2;
    if (bias) b = add_input(&g, "b", 1, &nout, -1, 1);
    int32_t y = add_output(&g, "y");
    g.node.activation.op = trial % 3 == 0 ? EDGE_UNARY_RELU : EDGE_UNARY_IDENTITY;
    CHECK(graph_run(&g) == EDGE_OK, "fully_connected: %s", g.error);
    int64_t rows = edge_num_elements(rank - 1, x_shape), y_shape[3];
    memcpy(y_shape, x_shape, sizeof y_shape);
    y_shape[rank - 1] = nout;
    check_shape("fully_connected", &g.tensors[y], rank, y_shape);
    double *want = malloc(sizeof(double) * (size_t)(rows * nout)), *mag = malloc(sizeof(double) * (size_t)(rows * nout));
    for (int64_t m = 0; m < rows; ++m)
      for (int64_t n = 0; n < nout; ++n) {
        double acc = bias ? tensor_data(&g, b)[n] : 0.0, s = fabs(acc);
        for (int64_t i = 0; i < k; ++i) {
          double term = (double)tensor_data(&g, x)[m * k + i] * tensor_data(&g, w)[n * k + i];
          acc += term;
          s += fabs(term);
        }
        want[m * nout + n] = g.node.activation.op == EDGE_UNARY_RELU && acc < 0 ? 0 : acc;
        mag[m * nout + n] = s;
      }
    compare("fully_connected", tensor_data(&g, y), want, mag, rows * nout);
    if (trial < 3) check_thread_independent(&g, "fully_connected");
    free(want);
    free(mag);
    graph_free(&g);
  }
}

static void test_batch_matmul(void) {
  for (int trial = 0; trial < 60; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_BATCH_MATMUL);
    int32_t ra = (int32_t)rnd_range(2, 4), rb = (int32_t)rnd_range(2, 4), r = ra > rb ? ra : rb;
    int64_t batch[2] = {rnd_range(1, 3), rnd_range(1, 4)}, m = rnd_range(1, 9), k = rnd_range(1, 11),
            n = trial == 0 ? 150 : rnd_range(1, 9);
    bool ta = rnd() % 2, tb = rnd() % 2;
    int64_t a_shape[4], b_shape[4];
    for (int32_t d = 0; d < ra - 2; ++d) a_shape[d] = rnd() % 3 == 0 ? 1 : batch[d + 2 - (ra - 2)];
    for (int32_t d = 0; d < rb - 2; ++d) b_shape[d] = rnd() % 3 == 0 ? 1 : batch[d + 2 - (rb - 2)];
    a_shape[ra - 2] = ta ? k : m;
    a_shape[ra - 1] = ta ? m : k;
    b_shape[rb - 2] = tb ? n : k;
    b_shape[rb - 1] = tb ? k : n;
    int32_t a = add_input(&g, "a", ra, a_shape, -1, 1), b = add_input(&g, "b", rb, b_shape, -1, 1);
    int32_t y = add_output(&g, "y");
    g.node.options.batch_matmul.transpose_a = ta;
    g.node.options.batch_matmul.transpose_b = tb;
    CHECK(graph_run(&g) == EDGE_OK, "batch_matmul: %s", g.error);
    int64_t y_shape[4];
    for (int32_t d = 0; d < r - 2; ++d) {
      int32_t da = d - (r - ra), db = d - (r - rb);
      int64_t va = da >= 0 ? a_shape[da] : 1, vb = db >= 0 ? b_shape[db] : 1;
      y_shape[d] = va > vb ? va : vb;
    }
    y_shape[r - 2] = m;
    y_shape[r - 1] = n;
    check_shape("batch_matmul", &g.tensors[y], r, y_shape);
    int64_t total = edge_num_elements(r, y_shape);
    double *want = malloc(sizeof(double) * (size_t)total), *mag = malloc(sizeof(double) * (size_t)total);
    for (int64_t flat = 0; flat < total; ++flat) {
      int64_t idx[4], rest = flat;
      for (int32_t d = r - 1; d >= 0; --d) {
        idx[d] = rest % y_shape[d];
        rest /= y_shape[d];
      }
      int64_t a_base = 0, b_base = 0;
      for (int32_t d = 0; d < ra - 2; ++d) a_base = a_base * a_shape[d] + (a_shape[d] == 1 ? 0 : idx[d + r - ra]);
      for (int32_t d = 0; d < rb - 2; ++d) b_base = b_base * b_shape[d] + (b_shape[d] == 1 ? 0 : idx[d + r - rb]);
      int64_t i = idx[r - 2], j = idx[r - 1];
      double acc = 0, s = 0;
      for (int64_t q = 0; q < k; ++q) {
        double av = tensor_data(&g, a)[a_base * m * k + (ta ? q * m + i : i * k + q)];
        double bv = tensor_data(&g, b)[b_base * k * n + (tb ? j * k + q : q * n + j)];
        acc += av * bv;
        s += fabs(av * bv);
      }
      want[flat] = acc;
      mag[flat] = s;
    }
    compare("batch_matmul", tensor_data(&g, y), want, mag, total);
    if (trial < 3) check_thread_independent(&g, "batch_matmul");
    free(want);
    free(mag);
    graph_free(&g);
  }
}

/* ---- pooling ---- */

static void test_pool(void) {
  for (int trial = 0; trial < 120; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_POOL_2D);
    edge_pool2d_options *o = &g.node.options.pool2d;
    o->type = trial % 2 ? EDGE_POOL_AVERAGE : EDGE_POOL_MAX;
    o->ceil_mode = rnd() % 2;
    o->count_include_pad = rnd() % 2;
    for (int i = 0; i < 2; ++i) {
      o->kernel[i] = (int32_t)rnd_range(1, 4);
      o->strides[i] = (int32_t)rnd_range(1, 3);
      o->dilations[i] = (int32_t)rnd_range(1, 2);
    }
    for (int i = 0; i < 4; ++i) o->pads[i] = (int32_t)rnd_range(0, o->kernel[i % 2] - 1);
    int64_t x_shape[4] = {rnd_range(1, 2), rnd_range(1, 9), rnd_range(1, 9), rnd_range(1, 6)};
    x_shape[1] += o->dilations[0] * (o->kernel[0] - 1);
    x_shape[2] += o->dilations[1] * (o->kernel[1] - 1);
    int32_t x = add_input(&g, "x", 4, x_shape, -2, 2), y = add_output(&g, "y");
    if (trial % 5 == 0) g.node.activation.op = EDGE_UNARY_RELU;
    CHECK(graph_run(&g) == EDGE_OK, "pool: %s", g.error);
    int64_t out[2];
    for (int i = 0; i < 2; ++i) {
      double span = o->dilations[i] * (o->kernel[i] - 1) + 1;
      double q = (x_shape[1 + i] + o->pads[i] + o->pads[i + 2] - span) / o->strides[i];
      out[i] = (int64_t)(o->ceil_mode ? ceil(q) : floor(q)) + 1;
      if ((out[i] - 1) * o->strides[i] >= x_shape[1 + i] + o->pads[i]) --out[i]; /* window starts in the end pad */
    }
    int64_t y_shape[4] = {x_shape[0], out[0], out[1], x_shape[3]}, total = edge_num_elements(4, y_shape);
    check_shape("pool", &g.tensors[y], 4, y_shape);
    double *want = malloc(sizeof(double) * (size_t)total);
    const float *xd = tensor_data(&g, x);
    for (int64_t n = 0; n < y_shape[0]; ++n)
      for (int64_t i = 0; i < out[0]; ++i)
        for (int64_t j = 0; j < out[1]; ++j)
          for (int64_t c = 0; c < x_shape[3]; ++c) {
            double acc = o->type == EDGE_POOL_MAX ? -INFINITY : 0.0;
            int64_t real = 0, padded = 0;
            for (int64_t a = 0; a < o->kernel[0]; ++a)
              for (int64_t b = 0; b < o->kernel[1]; ++b) {
                int64_t ih = i * o->strides[0] - o->pads[0] + a * o->dilations[0];
                int64_t iw = j * o->strides[1] - o->pads[1] + b * o->dilations[1];
                if (ih >= -o->pads[0] && ih < x_shape[1] + o->pads[2] && iw >= -o->pads[1] &&
                    iw < x_shape[2] + o->pads[3])
                  ++padded;
                if (ih < 0 || ih >= x_shape[1] || iw < 0 || iw >= x_shape[2]) continue;
                double v = xd[((n * x_shape[1] + ih) * x_shape[2] + iw) * x_shape[3] + c];
                ++real;
                acc = o->type == EDGE_POOL_MAX ? (v > acc ? v : acc) : acc + v;
              }
            if (o->type == EDGE_POOL_AVERAGE) acc /= (double)(o->count_include_pad ? padded : real);
            if (g.node.activation.op == EDGE_UNARY_RELU && acc < 0) acc = 0;
            want[((n * out[0] + i) * out[1] + j) * x_shape[3] + c] = acc;
          }
    char what[160];
    snprintf(what, sizeof what, "pool %s k=(%d,%d) s=(%d,%d) d=(%d,%d) p=(%d,%d,%d,%d) ceil=%d include_pad=%d",
             o->type == EDGE_POOL_MAX ? "max" : "avg", o->kernel[0], o->kernel[1], o->strides[0], o->strides[1],
             o->dilations[0], o->dilations[1], o->pads[0], o->pads[1], o->pads[2], o->pads[3], o->ceil_mode,
             o->count_include_pad);
    compare(what, tensor_data(&g, y), want, NULL, total);
    if (trial < 4) check_thread_independent(&g, what);
    free(want);
    graph_free(&g);
  }
}

/* ---- reduce ---- */

static void test_reduce(void) {
  for (int trial = 0; trial < 180; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_REDUCE);
    edge_reduce_options *o = &g.node.options.reduce;
    o->op = (edge_reduce_kind)(trial % EDGE_REDUCE_COUNT_);
    o->keepdims = rnd() % 2;
    int32_t rank = (int32_t)rnd_range(1, 4);
    int64_t x_shape[4];
    for (int32_t d = 0; d < rank; ++d) x_shape[d] = rnd_range(1, 6);
    bool reduced[4] = {false};
    o->num_axes = 0;
    for (int32_t d = 0; d < rank; ++d)
      if (rnd() % 2) {
        reduced[d] = true;
        o->axes[o->num_axes++] = rnd() % 2 ? d : d - rank; /* negative axes count from the end */
      }
    if (o->num_axes == 0)
      for (int32_t d = 0; d < rank; ++d) reduced[d] = true;
    bool integer = trial % 27 >= 18 && (o->op == EDGE_REDUCE_MAX || o->op == EDGE_REDUCE_MIN || o->op == EDGE_REDUCE_SUM);
    edge_dtype dtype = integer ? (trial % 2 ? EDGE_INT32 : EDGE_INT64) : EDGE_FLOAT32;
    int32_t x = add_tensor(&g, "x", dtype, rank, x_shape);
    g.inputs[g.node.num_inputs++] = x;
    int64_t count = edge_num_elements(rank, x_shape);
    for (int64_t i = 0; i < count; ++i) {
      if (dtype == EDGE_FLOAT32) ((float *)g.tensors[x].data)[i] = rnd_float(o->op == EDGE_REDUCE_PROD ? 0.5f : -3.0f, 2.0f);
      else if (dtype == EDGE_INT32) ((int32_t *)g.tensors[x].data)[i] = (int32_t)rnd_range(-1000, 1000);
      else ((int64_t *)g.tensors[x].data)[i] = rnd_range(-1000, 1000) * 10000000000ll;
    }
    int32_t y = add_tensor(&g, "y", dtype, 1, x_shape);
    g.outputs[g.node.num_outputs++] = y;
    char what[96];
    snprintf(what, sizeof what, "reduce %s %s rank %d, %d axes, keepdims %d", edge_reduce_names[o->op],
             edge_dtype_name(dtype), rank, o->num_axes, o->keepdims);
    CHECK(graph_run(&g) == EDGE_OK, "%s: %s", what, g.error);
    int64_t y_shape[4], kept_shape[4];
    int32_t y_rank = 0, kept_rank = 0;
    for (int32_t d = 0; d < rank; ++d) {
      if (!reduced[d]) kept_shape[kept_rank++] = x_shape[d];
      if (!reduced[d] || o->keepdims) y_shape[y_rank++] = reduced[d] ? 1 : x_shape[d];
    }
    check_shape(what, &g.tensors[y], y_rank, y_shape);
    int64_t outputs = edge_num_elements(kept_rank, kept_shape);
    double *sum = calloc((size_t)outputs, sizeof(double)), *mag = calloc((size_t)outputs, sizeof(double));
    double *best = malloc(sizeof(double) * (size_t)outputs), *prod = malloc(sizeof(double) * (size_t)outputs);
    int64_t *counts = calloc((size_t)outputs, sizeof(int64_t));
    for (int64_t i = 0; i < outputs; ++i) {
      best[i] = o->op == EDGE_REDUCE_MIN ? INFINITY : -INFINITY;
      prod[i] = 1.0;
    }
    /* pass 1: max (LOG_SUM_EXP needs it), sums, products; pass 2: exp sums */
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t flat = 0; flat < count; ++flat) {
        int64_t rest = flat, out = 0, stride = 1;
        for (int32_t d = rank - 1; d >= 0; --d) {
          int64_t i = rest % x_shape[d];
          rest /= x_shape[d];
          if (!reduced[d]) {
            out += i * stride;
            stride *= x_shape[d];
          }
        }
        double v = dtype == EDGE_FLOAT32 ? ((float *)g.tensors[x].data)[flat]
                   : dtype == EDGE_INT32 ? ((int32_t *)g.tensors[x].data)[flat]
                                         : (double)((int64_t *)g.tensors[x].data)[flat];
        if (pass == 1) {
          if (o->op == EDGE_REDUCE_LOG_SUM_EXP) sum[out] += exp(v - best[out]);
          continue;
        }
        ++counts[out];
        best[out] = o->op == EDGE_REDUCE_MIN ? fmin(best[out], v) : fmax(best[out], v);
        prod[out] *= v;
        switch (o->op) {
          case EDGE_REDUCE_L1: sum[out] += fabs(v); mag[out] += fabs(v); break;
          case EDGE_REDUCE_L2: case EDGE_REDUCE_SUM_SQUARE: sum[out] += v * v; mag[out] += v * v; break;
          case EDGE_REDUCE_LOG_SUM_EXP: break;
          default: sum[out] += v; mag[out] += fabs(v); break;
        }
      }
    double *want = malloc(sizeof(double) * (size_t)outputs);
    for (int64_t i = 0; i < outputs; ++i) {
      switch (o->op) {
        case EDGE_REDUCE_MEAN: want[i] = sum[i] / (double)counts[i]; mag[i] /= (double)counts[i]; break;
        case EDGE_REDUCE_MAX: case EDGE_REDUCE_MIN: want[i] = best[i]; break;
        case EDGE_REDUCE_PROD: want[i] = prod[i]; mag[i] = fabs(prod[i]) * (double)counts[i]; break;
        case EDGE_REDUCE_L2: want[i] = sqrt(sum[i]); mag[i] = sqrt(mag[i]); break;
        case EDGE_REDUCE_LOG_SUM_EXP: want[i] = best[i] + log(sum[i]); mag[i] = fabs(want[i]); break;
        default: want[i] = sum[i]; break;
      }
    }
    if (dtype == EDGE_FLOAT32) {
      compare(what, tensor_data(&g, y), want, mag, outputs);
    } else {
      bool same = true;
      for (int64_t i = 0; i < outputs && same; ++i) {
        int64_t got = dtype == EDGE_INT32 ? ((int32_t *)g.tensors[y].data)[i] : ((int64_t *)g.tensors[y].data)[i];
        same = got == (int64_t)want[i];
      }
      CHECK(same, "%s: integer results differ", what);
    }
    free(sum);
    free(mag);
    free(best);
    free(prod);
    free(counts);
    free(want);
    graph_free(&g);
  }

  graph g;
  graph_init(&g, EDGE_OP_REDUCE);
  int64_t shape[2] = {3, 4};
  add_input(&g, "x", 2, shape, -1, 1);
  add_output(&g, "y");
  g.node.options.reduce.num_axes = 1;
  g.node.options.reduce.axes[0] = -3;
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "-3"), "reduce bad axis: %s", g.error);
  g.node.options.reduce.axes[0] = 1;
  g.node.options.reduce.op = EDGE_REDUCE_PROD;
  g.tensors[0].dtype = g.tensors[1].dtype = EDGE_INT32;
  CHECK(graph_run(&g) == EDGE_UNSUPPORTED && strstr(g.error, "int32"), "reduce prod int32: %s", g.error);
  graph_free(&g);
}

/* ---- softmax, layer norm, LRN ---- */

static void test_softmax(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_SOFTMAX);
    int32_t rank = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(-rank, rank - 1);
    int64_t shape[4];
    for (int32_t d = 0; d < rank; ++d) shape[d] = rnd_range(1, 7);
    float scale = trial % 5 == 0 ? 200.0f : 4.0f; /* large logits must not overflow */
    int32_t x = add_input(&g, "x", rank, shape, -scale, scale), y = add_output(&g, "y");
    g.node.options.softmax.axis = axis;
    g.node.options.softmax.log = trial % 2;
    CHECK(graph_run(&g) == EDGE_OK, "softmax: %s", g.error);
    check_shape("softmax", &g.tensors[y], rank, shape);
    int32_t a = axis < 0 ? axis + rank : axis;
    int64_t inner = edge_num_elements(rank - a - 1, shape + a + 1), len = shape[a], total = edge_num_elements(rank, shape);
    double *want = malloc(sizeof(double) * (size_t)total), *mag = malloc(sizeof(double) * (size_t)total);
    const float *xd = tensor_data(&g, x);
    for (int64_t i = 0; i < total; ++i) {
      int64_t first = i - (i / inner % len) * inner;
      double max = -INFINITY, sum = 0;
      for (int64_t q = 0; q < len; ++q) max = fmax(max, xd[first + q * inner]);
      for (int64_t q = 0; q < len; ++q) sum += exp(xd[first + q * inner] - max);
      want[i] = g.node.options.softmax.log ? xd[i] - max - log(sum) : exp(xd[i] - max) / sum;
      mag[i] = g.node.options.softmax.log ? fabs(xd[i] - max) + fabs(log(sum)) : fabs(want[i]) * 10;
    }
    compare(g.node.options.softmax.log ? "log_softmax" : "softmax", tensor_data(&g, y), want, mag, total);
    free(want);
    free(mag);
    graph_free(&g);
  }
}

static void test_layer_norm(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_LAYER_NORM);
    int32_t rank = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(0, rank - 1);
    int64_t shape[4];
    for (int32_t d = 0; d < rank; ++d) shape[d] = rnd_range(1, 7);
    int32_t x = add_input(&g, "x", rank, shape, -3, 5);
    /* scale: the row shape, with some dims 1 (broadcast) and maybe a leading 1 */
    int64_t s_shape[5];
    int32_t s_rank = 0;
    if (trial % 4 == 1) s_shape[s_rank++] = 1;
    for (int32_t d = axis; d < rank; ++d) s_shape[s_rank++] = trial % 3 == 2 && d % 2 ? 1 : shape[d];
    int32_t scale = add_input(&g, "scale", s_rank, s_shape, 0.5f, 2), bias = -1;
    if (trial % 2) bias = add_input(&g, "bias", s_rank, s_shape, -1, 1);
    int32_t y = add_output(&g, "y");
    g.node.options.layer_norm.axis = trial % 5 == 0 ? axis - rank : axis;
    g.node.options.layer_norm.epsilon = 1e-3f;
    if (trial % 3 == 0) g.node.activation.op = EDGE_UNARY_RELU;
    CHECK(graph_run(&g) == EDGE_OK, "layer_norm: %s", g.error);
    check_shape("layer_norm", &g.tensors[y], rank, shape);
    int64_t row = edge_num_elements(rank - axis, shape + axis), total = edge_num_elements(rank, shape);
    double *want = malloc(sizeof(double) * (size_t)total), *mag = malloc(sizeof(double) * (size_t)total);
    const float *xd = tensor_data(&g, x);
    for (int64_t start = 0; start < total; start += row) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < row; ++i) mean += xd[start + i];
      mean /= (double)row;
      for (int64_t i = 0; i < row; ++i) var += (xd[start + i] - mean) * (xd[start + i] - mean);
      var /= (double)row;
      for (int64_t i = 0; i < row; ++i) {
        /* position i in the row -> element of scale/bias by explicit broadcasting */
        int64_t rest = i, at = 0, stride = 1;
        for (int32_t d = rank - 1; d >= axis; --d) {
          int64_t q = rest % shape[d];
          rest /= shape[d];
          int32_t sd = s_rank - (rank - d);
          at += (s_shape[sd] == 1 ? 0 : q) * stride;
          stride *= s_shape[sd];
        }
        double normalised = (xd[start + i] - mean) / sqrt(var + 1e-3);
        double b = bias >= 0 ? tensor_data(&g, bias)[at] : 0;
        want[start + i] = normalised * tensor_data(&g, scale)[at] + b;
        if (g.node.activation.op == EDGE_UNARY_RELU && want[start + i] < 0) want[start + i] = 0;
        mag[start + i] = fabs(normalised * tensor_data(&g, scale)[at]) * 4 + fabs(b);
      }
    }
    compare("layer_norm", tensor_data(&g, y), want, mag, total);
    free(want);
    free(mag);
    graph_free(&g);
  }
}

static void test_lrn(void) {
  for (int trial = 0; trial < 20; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_LRN);
    int64_t shape[4] = {rnd_range(1, 2), rnd_range(1, 5), rnd_range(1, 5), rnd_range(1, 11)};
    int32_t x = add_input(&g, "x", 4, shape, -3, 3), y = add_output(&g, "y");
    edge_lrn_options *o = &g.node.options.lrn;
    o->size = (int32_t)rnd_range(1, 6);
    o->alpha = rnd_float(1e-4f, 0.5f);
    o->beta = rnd_float(0.5f, 1.0f);
    o->bias = rnd_float(0.5f, 2.0f);
    CHECK(graph_run(&g) == EDGE_OK, "lrn: %s", g.error);
    check_shape("lrn", &g.tensors[y], 4, shape);
    int64_t total = edge_num_elements(4, shape), channels = shape[3];
    double *want = malloc(sizeof(double) * (size_t)total);
    const float *xd = tensor_data(&g, x);
    for (int64_t i = 0; i < total; ++i) {
      int64_t c = i % channels, first = i - c;
      double square_sum = 0;
      for (int64_t q = c - (o->size - 1) / 2; q <= c + o->size / 2; ++q) /* ceil((size-1)/2) == size/2 */
        if (q >= 0 && q < channels) square_sum += (double)xd[first + q] * xd[first + q];
      want[i] = xd[i] / pow(o->bias + o->alpha / o->size * square_sum, o->beta);
    }
    compare("lrn", tensor_data(&g, y), want, NULL, total);
    free(want);
    graph_free(&g);
  }
}

/* ---- recurrences ---- */

static double sigmoid_d(double v) { return 1.0 / (1.0 + exp(-v)); }
static double clip_d(double v, double clip) { return clip > 0 ? fmin(fmax(v, -clip), clip) : v; }

static void run_rnn_case(bool lstm, edge_rnn_kind direction, bool with_bias, bool with_initial, bool with_peepholes,
                         float clip, bool linear_before_reset, bool threads) {
  graph g;
  graph_init(&g, lstm ? EDGE_OP_LSTM : EDGE_OP_GRU);
  int64_t seq = rnd_range(1, 6), batch = rnd_range(1, 3), in = rnd_range(1, 7), hidden = rnd_range(1, 8);
  int64_t dirs = direction == EDGE_RNN_BIDIRECTIONAL ? 2 : 1, gates = lstm ? 4 : 3;
  int64_t x_shape[3] = {seq, batch, in}, w_shape[3] = {dirs, gates * hidden, in}, r_shape[3] = {dirs, gates * hidden, hidden};
  int64_t b_shape[2] = {dirs, 2 * gates * hidden}, s_shape[3] = {dirs, batch, hidden}, p_shape[2] = {dirs, 3 * hidden};
  int32_t x = add_input(&g, "X", 3, x_shape, -1, 1), w = add_input(&g, "W", 3, w_shape, -0.7f, 0.7f);
  int32_t r = add_input(&g, "R", 3, r_shape, -0.7f, 0.7f), b = -1, h0 = -1, c0 = -1, p = -1;
  if (with_bias) b = add_input(&g, "B", 2, b_shape, -0.5f, 0.5f);
  else add_absent_input(&g);
  add_absent_input(&g); /* sequence_lens */
  if (with_initial) h0 = add_input(&g, "initial_h", 3, s_shape, -1, 1);
  else add_absent_input(&g);
  if (lstm) {
    if (with_initial) c0 = add_input(&g, "initial_c", 3, s_shape, -1, 1);
    else add_absent_input(&g);
    if (with_peepholes) p = add_input(&g, "P", 2, p_shape, -0.5f, 0.5f);
  }
  int32_t y = add_output(&g, "Y"), y_h = add_output(&g, "Y_h"), y_c = -1;
  if (lstm) y_c = add_output(&g, "Y_c");
  g.node.options.rnn.hidden_size = (int32_t)hidden;
  g.node.options.rnn.direction = direction;
  g.node.options.rnn.clip = clip;
  g.node.options.rnn.linear_before_reset = linear_before_reset;
  char what[160];
  snprintf(what, sizeof what, "%s %s seq %lld batch %lld in %lld hidden %lld bias %d initial %d peepholes %d clip %g lbr %d",
           lstm ? "lstm" : "gru", edge_rnn_names[direction], (long long)seq, (long long)batch, (long long)in,
           (long long)hidden, with_bias, with_initial, with_peepholes, (double)clip, linear_before_reset);
  CHECK(graph_run(&g) == EDGE_OK, "%s: %s", what, g.error);
  int64_t y_shape[4] = {seq, dirs, batch, hidden};
  check_shape(what, &g.tensors[y], 4, y_shape);
  check_shape(what, &g.tensors[y_h], 3, s_shape);

  int64_t state = dirs * batch * hidden;
  double *want_y = malloc(sizeof(double) * (size_t)(seq * state)), *want_h = malloc(sizeof(double) * (size_t)state);
  double *want_c = malloc(sizeof(double) * (size_t)state);
  const float *X = tensor_data(&g, x), *W = tensor_data(&g, w), *R = tensor_data(&g, r);
  for (int64_t d = 0; d < dirs; ++d) {
    bool reverse = direction == EDGE_RNN_REVERSE || d == 1;
    const float *Wd = W + d * gates * hidden * in, *Rd = R + d * gates * hidden * hidden;
    const float *Bd = b >= 0 ? tensor_data(&g, b) + d * 2 * gates * hidden : NULL;
    const float *Pd = p >= 0 ? tensor_data(&g, p) + d * 3 * hidden : NULL;
    for (int64_t bi = 0; bi < batch; ++bi) {
      double H[8], C[8], Hn[8], gate[4][8];
      for (int64_t j = 0; j < hidden; ++j) {
        H[j] = h0 >= 0 ? tensor_data(&g, h0)[(d * batch + bi) * hidden + j] : 0;
        C[j] = c0 >= 0 ? tensor_data(&g, c0)[(d * batch + bi) * hidden + j] : 0;
      }
      for (int64_t step = 0; step < seq; ++step) {
        int64_t t = reverse ? seq - 1 - step : step;
        const float *xt = X + (t * batch + bi) * in;
        /* gate[q][j] = x W^T + Wb + Rb, plus h R^T except for the GRU candidate */
        for (int64_t q = 0; q < gates; ++q)
          for (int64_t j = 0; j < hidden; ++j) {
            int64_t row = q * hidden + j;
            double v = Bd ? (double)Bd[row] + Bd[gates * hidden + row] : 0;
            for (int64_t i = 0; i < in; ++i) v += (double)xt[i] * Wd[row * in + i];
            if (lstm || q < 2)
              for (int64_t i = 0; i < hidden; ++i) v += H[i] * Rd[row * hidden + i];
            gate[q][j] = v;
          }
        for (int64_t j = 0; j < hidden; ++j) {
          if (lstm) { /* gates i, o, f, c; peepholes i, o, f */
            double ig = sigmoid_d(clip_d(gate[0][j] + (Pd ? Pd[j] * C[j] : 0), clip));
            double fg = sigmoid_d(clip_d(gate[2][j] + (Pd ? Pd[2 * hidden + j] * C[j] : 0), clip));
            double cg = tanh(clip_d(gate[3][j], clip));
            C[j] = fg * C[j] + ig * cg;
            double og = sigmoid_d(clip_d(gate[1][j] + (Pd ? Pd[hidden + j] * C[j] : 0), clip));
            Hn[j] = og * tanh(C[j]);
          } else { /* gates z, r, h */
            double z = sigmoid_d(clip_d(gate[0][j], clip));
            int64_t row = 2 * hidden + j;
            double rb = Bd ? Bd[gates * hidden + row] : 0, recurrent = 0;
            if (linear_before_reset) {
              double hr = rb;
              for (int64_t i = 0; i < hidden; ++i) hr += H[i] * Rd[row * hidden + i];
              recurrent = sigmoid_d(clip_d(gate[1][j], clip)) * hr;
            } else {
              recurrent = rb;
              for (int64_t i = 0; i < hidden; ++i)
                recurrent += sigmoid_d(clip_d(gate[1][i], clip)) * H[i] * Rd[row * hidden + i];
            }
            double candidate = tanh(clip_d(gate[2][j] - rb + recurrent, clip)); /* gate[2] already holds Rb */
            Hn[j] = (1 - z) * candidate + z * H[j];
          }
        }
        for (int64_t j = 0; j < hidden; ++j) {
          H[j] = Hn[j];
          want_y[((t * dirs + d) * batch + bi) * hidden + j] = H[j];
        }
      }
      for (int64_t j = 0; j < hidden; ++j) {
        want_h[(d * batch + bi) * hidden + j] = H[j];
        want_c[(d * batch + bi) * hidden + j] = C[j];
      }
    }
  }
  /* values are bounded by 1 in magnitude; errors compound over steps */
  double *mag = malloc(sizeof(double) * (size_t)(seq * state));
  for (int64_t i = 0; i < seq * state; ++i) mag[i] = 10.0;
  compare(what, tensor_data(&g, y), want_y, mag, seq * state);
  compare(what, tensor_data(&g, y_h), want_h, mag, state);
  if (lstm) compare(what, tensor_data(&g, y_c), want_c, mag, state);
  if (threads) check_thread_independent(&g, what);
  free(want_y);
  free(want_h);
  free(want_c);
  free(mag);
  graph_free(&g);
}

static void test_rnn(void) {
  const edge_rnn_kind directions[3] = {EDGE_RNN_FORWARD, EDGE_RNN_REVERSE, EDGE_RNN_BIDIRECTIONAL};
  for (int trial = 0; trial < 48; ++trial) {
    bool lstm = trial % 2 == 0;
    run_rnn_case(lstm, directions[trial / 2 % 3], trial / 6 % 2, trial / 12 % 2, trial % 4 == 0,
                 trial % 8 == 1 ? 0.4f : 0.0f, trial % 4 == 3, trial < 6);
  }

  graph g;
  graph_init(&g, EDGE_OP_LSTM);
  int64_t x_shape[3] = {2, 1, 3}, w_shape[3] = {1, 8, 3}, r_shape[3] = {1, 8, 2}, lens = 1;
  add_input(&g, "X", 3, x_shape, -1, 1);
  add_input(&g, "W", 3, w_shape, -1, 1);
  add_input(&g, "R", 3, r_shape, -1, 1);
  add_absent_input(&g);
  add_input(&g, "lens", 1, &lens, 1, 1);
  add_output(&g, "Y");
  g.node.options.rnn.hidden_size = 2;
  CHECK(graph_run(&g) == EDGE_UNSUPPORTED && strstr(g.error, "sequence_lens"), "lstm sequence_lens: %s", g.error);
  g.inputs[4] = -1;
  g.node.options.rnn.hidden_size = 3; /* R says 2 */
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "'W'"), "lstm bad hidden_size: %s", g.error);
  g.node.options.rnn.hidden_size = 2;
  g.outputs[0] = -1; /* no output wanted at all is legal */
  CHECK(graph_run(&g) == EDGE_OK, "lstm without outputs: %s", g.error);
  graph_free(&g);
}

/* A ResNet-18 3x3 convolution (56x56x64 -> 64): prints the time, fails only if absurdly slow. */
static void test_conv_speed(void) {
  conv_case k = {1, 56, 56, 64, 64, 3, 3, 1, {1, 1}, {1, 1}, {1, 1, 1, 1}, {0, 0}, true, false};
  graph g;
  graph_init(&g, EDGE_OP_CONV_2D);
  int64_t x_shape[4] = {k.n, k.h, k.w, k.c}, w_shape[4] = {k.o, k.kh, k.kw, k.c}, b_shape[1] = {k.o};
  add_input(&g, "x", 4, x_shape, -1, 1);
  add_input(&g, "w", 4, w_shape, -1, 1);
  add_input(&g, "b", 1, b_shape, -1, 1);
  add_output(&g, "y");
  edge_conv2d_options *o = &g.node.options.conv2d;
  o->strides[0] = o->strides[1] = o->dilations[0] = o->dilations[1] = o->groups = 1;
  for (int i = 0; i < 4; ++i) o->pads[i] = 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(graph_run(&g) == EDGE_OK, "conv speed: %s", g.error);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  fprintf(stderr, "test_ops_compute: 56x56x64->64 3x3 conv (115.6 MMAC) took %.3f s on one thread\n", seconds);
  CHECK(seconds < 5.0, "56x56x64 3x3 conv took %.2f s", seconds);
  graph_free(&g);
}

void test_ops_compute(void) {
  rng_seed(0x243f6a8885a308d3ull);
  test_conv();
  test_conv_errors();
  test_fully_connected();
  test_batch_matmul();
  test_pool();
  test_reduce();
  test_softmax();
  test_layer_norm();
  test_lrn();
  test_rnn();
  test_conv_speed();
}

#ifdef EDGE_OPS_COMPUTE_MAIN
int main(void) { return test_ops_compute() ? 1 : 0; }
#endif

/* Tests of the training ops (cruntime/src/ops/conv_grad.c, pool_grad.c, activation_grad.c, loss.c,
 * norm_grad.c, gather_grad.c, optimizer.c) and of saving variables.
 *
 * Oracles, all in double and written differently from the kernels:
 *   - conv backprop: the gradients scattered from every forward tap (the kernels gather), plus the
 *     adjoint identities <conv(x, w), r> = <x, dX(r, w)> = <w, dW(x, r)> against the runtime's own
 *     forward CONV_2D, for the reference loops and the fast paths (EDGE_CONV_GRAD=reference|fast,
 *     and gemm|taps, which force the GEMM paths or the per-tap filter gradient);
 *   - pool grad: scattered per window; average pool also by the adjoint of the forward POOL_2D;
 *   - activation grad: central differences of edge_unary_float;
 *   - loss, layer norm, batch norm: the formulas in double, the d outputs also by central
 *     differences of the double loss;
 *   - optimizers: several steps of the update rules in double; clipping and gather grad directly.
 * Tolerance: 1e-5 * (1 + sum of |terms|) as in test_ops_compute.c. Every kernel is also run on a
 * 3-thread pool and must match one thread bit for bit. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "kernels/config.h"
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

static int32_t add_int_input(graph *g, const char *name, int32_t rank, const int64_t *shape, const int32_t *values) {
  int32_t t = add_tensor(g, name, EDGE_INT32, rank, shape);
  memcpy(g->tensors[t].data, values, g->tensors[t].nbytes);
  g->inputs[g->node.num_inputs++] = t;
  return t;
}

/* An output whose declared shape is given (the gradient ops read it), or [1]. */
static int32_t add_output_shaped(graph *g, const char *name, int32_t rank, const int64_t *shape) {
  int64_t one = 1;
  int32_t t = rank ? add_tensor(g, name, EDGE_FLOAT32, rank, shape) : add_tensor(g, name, EDGE_FLOAT32, 1, &one);
  g->outputs[g->node.num_outputs++] = t;
  return t;
}
static int32_t add_output(graph *g, const char *name) { return add_output_shaped(g, name, 0, NULL); }

static float *fdata(const graph *g, int32_t t) { return g->tensors[t].data; }
static int64_t numel(const graph *g, int32_t t) { return edge_num_elements(g->tensors[t].rank, g->tensors[t].shape); }

static void compare(const char *what, const float *got, const double *want, const double *magnitude, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double scale = magnitude ? magnitude[i] : fabs(want[i]);
    if (!(fabs(got[i] - want[i]) <= 1e-5 * (1.0 + scale))) {
      CHECK(false, "%s: element %lld is %.9g, expected %.9g", what, (long long)i, got[i], want[i]);
      return;
    }
  }
  CHECK(true, "%s", what);
}

/* Reruns on 3 threads: every output (and every variable input) must match one thread bit for bit.
 * restore: inputs to copy back before the rerun (in-place ops), NULL if none. */
static void check_threads(graph *g, const char *what, void **saved_inputs) {
  void *single[MAX_TENSORS] = {0};
  for (int32_t i = 0; i < g->num_tensors; ++i) {
    single[i] = malloc(g->tensors[i].nbytes + 1);
    memcpy(single[i], g->tensors[i].data, g->tensors[i].nbytes);
  }
  if (saved_inputs)
    for (int32_t i = 0; i < g->num_tensors; ++i)
      if (saved_inputs[i]) memcpy(g->tensors[i].data, saved_inputs[i], g->tensors[i].nbytes);
  edge_threadpool *pool = edge_threadpool_create(3);
  g->ctx.pool = pool;
  g->ctx.num_threads = 3;
  edge_status status = graph_run(g);
  CHECK(status == EDGE_OK, "%s on 3 threads: %s", what, g->error);
  for (int32_t i = 0; status == EDGE_OK && i < g->num_tensors; ++i)
    CHECK(memcmp(single[i], g->tensors[i].data, g->tensors[i].nbytes) == 0, "%s: tensor '%s' differs on 3 threads",
           what, g->tensors[i].name);
  g->ctx.pool = NULL;
  g->ctx.num_threads = 1;
  edge_threadpool_free(pool);
  for (int32_t i = 0; i < g->num_tensors; ++i) free(single[i]);
}

/* ---- convolution gradients ---- */

typedef struct {
  int64_t n, h, w, c, o, kh, kw, groups, oh, ow;
  int32_t stride[2], dilation[2], pads[4];
} conv_case;

static void random_conv_case(conv_case *k) {
  k->n = rnd_range(1, 3);
  k->groups = rnd_range(1, 3);
  int64_t cg = rnd_range(1, 4), og = rnd_range(1, 4);
  if (rnd() % 3 == 0) cg = 1, k->groups = rnd_range(2, 6); /* depthwise, multiplier og */
  k->c = cg * k->groups;
  k->o = og * k->groups;
  k->kh = rnd_range(1, 4);
  k->kw = rnd_range(1, 4);
  for (int i = 0; i < 2; ++i) k->stride[i] = (int32_t)rnd_range(1, 3), k->dilation[i] = (int32_t)rnd_range(1, 2);
  for (int i = 0; i < 4; ++i) k->pads[i] = (int32_t)rnd_range(0, 2);
  k->h = rnd_range(1, 8) + k->dilation[0] * (k->kh - 1);
  k->w = rnd_range(1, 8) + k->dilation[1] * (k->kw - 1);
  k->oh = (k->h + k->pads[0] + k->pads[2] - k->dilation[0] * (k->kh - 1) - 1) / k->stride[0] + 1;
  k->ow = (k->w + k->pads[1] + k->pads[3] - k->dilation[1] * (k->kw - 1) - 1) / k->stride[1] + 1;
}

static void set_conv_options(graph *g, const conv_case *k) {
  edge_conv2d_options *o = &g->node.options.conv2d;
  for (int i = 0; i < 2; ++i) o->strides[i] = k->stride[i], o->dilations[i] = k->dilation[i];
  for (int i = 0; i < 4; ++i) o->pads[i] = k->pads[i];
  o->groups = (int32_t)k->groups;
}

/* Runs one conv case through the forward conv, dX and dW for one method. */
static void run_conv_grad_case(const conv_case *k, const char *method, bool threads) {
  setenv("EDGE_CONV_GRAD", method, 1);
  int64_t cg = k->c / k->groups, og = k->o / k->groups;
  int64_t x_shape[4] = {k->n, k->h, k->w, k->c}, w_shape[4] = {k->o, k->kh, k->kw, cg};
  int64_t y_shape[4] = {k->n, k->oh, k->ow, k->o};
  char what[256];
  snprintf(what, sizeof what, "%s x[%lld,%lld,%lld,%lld] o=%lld k=%lldx%lld g=%lld s=(%d,%d) d=(%d,%d) p=(%d,%d,%d,%d)",
           method, (long long)k->n, (long long)k->h, (long long)k->w, (long long)k->c, (long long)k->o,
           (long long)k->kh, (long long)k->kw, (long long)k->groups, k->stride[0], k->stride[1], k->dilation[0],
           k->dilation[1], k->pads[0], k->pads[1], k->pads[2], k->pads[3]);

  graph dx_graph, dw_graph, fwd;
  graph_init(&dx_graph, EDGE_OP_CONV_2D_BACKPROP_INPUT);
  int32_t r = add_input(&dx_graph, "dy", 4, y_shape, -1, 1), w = add_input(&dx_graph, "w", 4, w_shape, -1, 1);
  int32_t dx = add_output_shaped(&dx_graph, "dx", 4, x_shape);
  set_conv_options(&dx_graph, k);
  edge_status status = graph_run(&dx_graph);
  CHECK(status == EDGE_OK, "%s backprop input: %s", what, dx_graph.error);

  graph_init(&dw_graph, EDGE_OP_CONV_2D_BACKPROP_FILTER);
  int32_t x = add_input(&dw_graph, "x", 4, x_shape, -1, 1), r2 = add_input(&dw_graph, "dy", 4, y_shape, 0, 0);
  memcpy(fdata(&dw_graph, r2), fdata(&dx_graph, r), dw_graph.tensors[r2].nbytes);
  int32_t dw = add_output_shaped(&dw_graph, "dw", 4, w_shape);
  set_conv_options(&dw_graph, k);
  edge_status status2 = graph_run(&dw_graph);
  CHECK(status2 == EDGE_OK, "%s backprop filter: %s", what, dw_graph.error);
  if (status != EDGE_OK || status2 != EDGE_OK) goto done_early;

  {
    /* Oracle: scatter dy through every forward tap. */
    const float *xd = fdata(&dw_graph, x), *wd = fdata(&dx_graph, w), *rd = fdata(&dx_graph, r);
    int64_t nx = k->n * k->h * k->w * k->c, nw = k->o * k->kh * k->kw * cg;
    double *want_dx = calloc((size_t)nx, sizeof(double)), *mag_dx = calloc((size_t)nx, sizeof(double));
    double *want_dw = calloc((size_t)nw, sizeof(double)), *mag_dw = calloc((size_t)nw, sizeof(double));
    double forward_dot = 0.0, forward_mag = 0.0;
    for (int64_t n = 0; n < k->n; ++n)
      for (int64_t i = 0; i < k->oh; ++i)
        for (int64_t j = 0; j < k->ow; ++j)
          for (int64_t oc = 0; oc < k->o; ++oc) {
            double gy = rd[((n * k->oh + i) * k->ow + j) * k->o + oc];
            int64_t g0 = oc / og;
            for (int64_t a = 0; a < k->kh; ++a)
              for (int64_t b = 0; b < k->kw; ++b) {
                int64_t ih = i * k->stride[0] - k->pads[0] + a * k->dilation[0];
                int64_t iw = j * k->stride[1] - k->pads[1] + b * k->dilation[1];
                if (ih < 0 || ih >= k->h || iw < 0 || iw >= k->w) continue;
                for (int64_t ci = 0; ci < cg; ++ci) {
                  int64_t xi = ((n * k->h + ih) * k->w + iw) * k->c + g0 * cg + ci;
                  int64_t wi = ((oc * k->kh + a) * k->kw + b) * cg + ci;
                  want_dx[xi] += gy * wd[wi];
                  mag_dx[xi] += fabs(gy * wd[wi]);
                  want_dw[wi] += gy * xd[xi];
                  mag_dw[wi] += fabs(gy * xd[xi]);
                  forward_dot += gy * wd[wi] * xd[xi];
                  forward_mag += fabs(gy * wd[wi] * xd[xi]);
                }
              }
          }
    char label[300];
    snprintf(label, sizeof label, "%s dx", what);
    compare(label, fdata(&dx_graph, dx), want_dx, mag_dx, nx);
    snprintf(label, sizeof label, "%s dw", what);
    compare(label, fdata(&dw_graph, dw), want_dw, mag_dw, nw);

    /* Adjoint against the runtime's forward conv: <conv(x, w), r> = <x, dX> = <w, dW>. */
    graph_init(&fwd, EDGE_OP_CONV_2D);
    int32_t fx = add_input(&fwd, "x", 4, x_shape, 0, 0), fw = add_input(&fwd, "w", 4, w_shape, 0, 0);
    memcpy(fdata(&fwd, fx), xd, fwd.tensors[fx].nbytes);
    memcpy(fdata(&fwd, fw), wd, fwd.tensors[fw].nbytes);
    int32_t fy = add_output(&fwd, "y");
    set_conv_options(&fwd, k);
    if (graph_run(&fwd) == EDGE_OK) {
      double via_forward = 0.0, via_dx = 0.0, via_dw = 0.0;
      for (int64_t i = 0; i < numel(&fwd, fy); ++i) via_forward += (double)fdata(&fwd, fy)[i] * rd[i];
      for (int64_t i = 0; i < nx; ++i) via_dx += (double)fdata(&dx_graph, dx)[i] * xd[i];
      for (int64_t i = 0; i < nw; ++i) via_dw += (double)fdata(&dw_graph, dw)[i] * wd[i];
      double tol = 1e-5 * (1.0 + forward_mag);
      CHECK(fabs(via_forward - via_dx) <= tol && fabs(via_forward - via_dw) <= tol,
             "%s adjoint: <conv, r> %.9g, <x, dX> %.9g, <w, dW> %.9g", what, via_forward, via_dx, via_dw);
      CHECK(fabs(via_forward - forward_dot) <= tol, "%s: forward conv disagrees with the oracle", what);
    } else {
      CHECK(false, "%s forward conv: %s", what, fwd.error);
    }
    graph_free(&fwd);
    free(want_dx);
    free(mag_dx);
    free(want_dw);
    free(mag_dw);
  }
  if (threads) {
    check_threads(&dx_graph, what, NULL);
    check_threads(&dw_graph, what, NULL);
  }
done_early:
  graph_free(&dx_graph);
  graph_free(&dw_graph);
  unsetenv("EDGE_CONV_GRAD");
}

static void test_conv_grads(void) {
  for (int i = 0; i < 60; ++i) {
    conv_case k;
    random_conv_case(&k);
    run_conv_grad_case(&k, "reference", i % 4 == 0);
    run_conv_grad_case(&k, "fast", i % 2 == 0);
    /* "fast" picks per shape; "gemm" keeps dX and dW on the GEMM paths, "taps" puts dW on TAPS */
    run_conv_grad_case(&k, "gemm", i % 4 == 1);
    run_conv_grad_case(&k, "taps", i % 4 == 2);
  }
  /* Big enough that the GEMM paths chunk and thread: dw over several pixel chunks. */
  conv_case big = {8, 30, 30, 24, 32, 3, 3, 1, 0, 0, {1, 1}, {1, 1}, {1, 1, 1, 1}};
  big.oh = 30, big.ow = 30;
  run_conv_grad_case(&big, "fast", true);
  run_conv_grad_case(&big, "gemm", true);
  run_conv_grad_case(&big, "taps", true);
  conv_case dw = {4, 17, 17, 64, 64, 3, 3, 64, 0, 0, {2, 2}, {1, 1}, {1, 1, 1, 1}};
  dw.oh = 9, dw.ow = 9;
  run_conv_grad_case(&dw, "fast", true);

  /* A gradient whose shape the forward conv cannot produce is refused at prepare. */
  graph g;
  graph_init(&g, EDGE_OP_CONV_2D_BACKPROP_INPUT);
  int64_t dy_shape[4] = {1, 5, 5, 2}, w_shape[4] = {2, 3, 3, 1}, x_shape[4] = {1, 9, 9, 1};
  add_input(&g, "dy", 4, dy_shape, -1, 1);
  add_input(&g, "w", 4, w_shape, -1, 1);
  add_output_shaped(&g, "dx", 4, x_shape);
  conv_case opts = {0};
  opts.groups = 1, opts.stride[0] = opts.stride[1] = opts.dilation[0] = opts.dilation[1] = 1;
  set_conv_options(&g, &opts);
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "forward conv"), "bad dy shape: %s", g.error);
  graph_free(&g);
}

/* ---- forward convolution with variable weights ----
 *
 * Training keeps conv weights in variables: above EDGE_ISA=scalar the fast plan packs them at eval,
 * again only when ctx->variables_version moved. Each case (one per plan method) runs the fast path
 * against the scalar reference (EDGE_CONV=reference) on the same data; then changes the weights
 * without moving the version (the packed copy is kept: same output as before), moves it (the
 * output follows the new weights) and reruns on 3 threads (bit-identical). */

typedef struct {
  bool transposed;
  int64_t n, h, w, c, o, kh, kw, groups;
  int32_t stride, pad;
} variable_conv_case;

static void run_reference_conv(const variable_conv_case *k, const graph *fast, float *out) {
  graph ref;
  graph_init(&ref, fast->node.opcode);
  for (int32_t i = 0; i < fast->node.num_inputs; ++i) {
    const edge_tensor *t = &fast->tensors[fast->inputs[i]];
    int32_t r = add_input(&ref, t->name, t->rank, t->shape, 0, 0);
    memcpy(ref.tensors[r].data, t->data, t->nbytes);
  }
  int32_t y = add_output(&ref, "y");
  ref.node.options = fast->node.options;
  ref.node.activation = fast->node.activation;
  setenv("EDGE_CONV", "reference", 1);
  edge_status status = graph_run(&ref);
  unsetenv("EDGE_CONV");
  CHECK(status == EDGE_OK, "reference conv: %s", ref.error);
  (void)k;
  memcpy(out, ref.tensors[y].data, ref.tensors[y].nbytes);
  graph_free(&ref);
}

static void compare_close(const char *what, const float *got, const float *want, int64_t n) {
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) scale = fmax(scale, fabs(want[i]));
  for (int64_t i = 0; i < n; ++i)
    if (!(fabs(got[i] - want[i]) <= 1e-4 * (1.0 + scale))) {
      CHECK(false, "%s: element %lld is %.9g, the reference %.9g", what, (long long)i, got[i], want[i]);
      return;
    }
  CHECK(true, "%s", what);
}

static void run_variable_conv_case(const variable_conv_case *k, const char *label) {
  graph g;
  graph_init(&g, k->transposed ? EDGE_OP_CONV_TRANSPOSE_2D : EDGE_OP_CONV_2D);
  int64_t x_shape[4] = {k->n, k->h, k->w, k->c}, w_shape[4] = {k->o, k->kh, k->kw, k->c / k->groups};
  int64_t b_shape[1] = {k->o};
  add_input(&g, "x", 4, x_shape, -1, 1);
  int32_t w = add_input(&g, "w", 4, w_shape, -1, 1), b = add_input(&g, "b", 1, b_shape, -1, 1);
  g.tensors[w].kind = g.tensors[b].kind = EDGE_TENSOR_VARIABLE;
  int32_t y = add_output(&g, "y");
  edge_conv2d_options *o = &g.node.options.conv2d;
  for (int i = 0; i < 2; ++i) o->strides[i] = k->stride, o->dilations[i] = 1;
  for (int i = 0; i < 4; ++i) o->pads[i] = k->pad;
  o->groups = (int32_t)k->groups;
  g.node.activation.op = EDGE_UNARY_RELU;
  char what[160];
  snprintf(what, sizeof what, "variable-weight conv (%s)", label);
  edge_status status = graph_run(&g);
  CHECK(status == EDGE_OK, "%s: %s", what, g.error);
  if (status != EDGE_OK) {
    graph_free(&g);
    return;
  }
  const int64_t count = numel(&g, y);
  float *want = malloc((size_t)count * sizeof(float)), *before = malloc((size_t)count * sizeof(float));
  run_reference_conv(k, &g, want);
  compare_close(what, fdata(&g, y), want, count);
  memcpy(before, fdata(&g, y), (size_t)count * sizeof(float));

  const edge_op_registration *reg = edge_op_lookup(g.node.opcode);
  float *wd = fdata(&g, w), *bd = fdata(&g, b);
  for (int64_t i = 0; i < numel(&g, w); ++i) wd[i] = rnd_float(-1, 1);
  for (int64_t i = 0; i < k->o; ++i) bd[i] = rnd_float(-1, 1);
  /* Only the packed plans keep a copy; EDGE_ISA=scalar's reference loops read the weights live. */
  const bool packs = edge_kernels()->isa != EDGE_ISA_SCALAR;
  CHECK(reg->eval(&g.ctx, &g.node) == EDGE_OK &&
             (!packs || memcmp(before, fdata(&g, y), (size_t)count * sizeof(float)) == 0),
         "%s: weights changed without a new variables_version are not packed again", what);
  ++g.ctx.variables_version;
  CHECK(reg->eval(&g.ctx, &g.node) == EDGE_OK, "%s: eval after the update", what);
  run_reference_conv(k, &g, want);
  char after[200];
  snprintf(after, sizeof after, "%s after a weight update", what);
  compare_close(after, fdata(&g, y), want, count);
  check_threads(&g, what, NULL);
  free(want);
  free(before);
  graph_free(&g);
}

static void test_conv_variable_weights(void) {
  /* transposed, n, h, w, c, o, kh, kw, groups, stride, pad */
  const variable_conv_case gemm = {false, 2, 5, 7, 12, 20, 1, 1, 1, 1, 0};
  const variable_conv_case igemm = {false, 3, 9, 8, 6, 11, 3, 3, 1, 2, 1};
  const variable_conv_case grouped = {false, 2, 7, 7, 8, 12, 3, 3, 2, 1, 1};
  const variable_conv_case depthwise = {false, 2, 9, 9, 24, 48, 3, 3, 24, 1, 1};
  const variable_conv_case winograd = {false, 2, 10, 9, 33, 40, 3, 3, 1, 1, 1};
  const variable_conv_case transposed = {true, 2, 5, 4, 6, 10, 3, 3, 2, 2, 1};
  run_variable_conv_case(&gemm, "1x1 gemm");
  run_variable_conv_case(&igemm, "igemm");
  run_variable_conv_case(&grouped, "grouped igemm");
  run_variable_conv_case(&depthwise, "depthwise");
  setenv("EDGE_WINOGRAD", "1", 1);
  run_variable_conv_case(&winograd, "winograd");
  unsetenv("EDGE_WINOGRAD");
  run_variable_conv_case(&transposed, "transposed");
}

/* ---- pooling gradient ---- */

static void test_pool_grad(void) {
  for (int iter = 0; iter < 60; ++iter) {
    bool average = iter % 2;
    int64_t n = rnd_range(1, 2), h = rnd_range(1, 9), w = rnd_range(1, 9), c = rnd_range(1, 20);
    int32_t kernel[2] = {(int32_t)rnd_range(1, 3), (int32_t)rnd_range(1, 3)};
    int32_t stride[2] = {(int32_t)rnd_range(1, 3), (int32_t)rnd_range(1, 3)};
    int32_t dilation[2] = {(int32_t)rnd_range(1, 2), (int32_t)rnd_range(1, 2)};
    int32_t pads[4];
    for (int i = 0; i < 4; ++i) pads[i] = (int32_t)rnd_range(0, kernel[i % 2] - 1);
    bool ceil_mode = rnd() % 2, include_pad = rnd() % 2;
    h += dilation[0] * (kernel[0] - 1);
    w += dilation[1] * (kernel[1] - 1);
    int64_t out[2];
    int64_t in[2] = {h, w};
    for (int a = 0; a < 2; ++a) {
      int64_t reach = in[a] + pads[a] + pads[a + 2] - (dilation[a] * (kernel[a] - 1) + 1);
      out[a] = (ceil_mode ? (reach + stride[a] - 1) / stride[a] : reach / stride[a]) + 1;
      if (ceil_mode && (out[a] - 1) * stride[a] >= in[a] + pads[a]) --out[a];
    }
    int64_t x_shape[4] = {n, h, w, c}, y_shape[4] = {n, out[0], out[1], c};
    graph g;
    graph_init(&g, EDGE_OP_POOL_2D_GRAD);
    int32_t x = add_input(&g, "x", 4, x_shape, -2, 2), dy = add_input(&g, "dy", 4, y_shape, -1, 1);
    if (iter % 5 == 0) /* ties: the first maximal element wins */
      for (int64_t i = 0; i < numel(&g, x); ++i) fdata(&g, x)[i] = (float)(rnd() % 3);
    int32_t dx = add_output(&g, "dx");
    edge_pool2d_options *o = &g.node.options.pool2d;
    o->type = average ? EDGE_POOL_AVERAGE : EDGE_POOL_MAX;
    for (int i = 0; i < 2; ++i) o->kernel[i] = kernel[i], o->strides[i] = stride[i], o->dilations[i] = dilation[i];
    for (int i = 0; i < 4; ++i) o->pads[i] = pads[i];
    o->count_include_pad = include_pad;
    o->ceil_mode = ceil_mode;
    char what[200];
    snprintf(what, sizeof what, "pool grad %s x[%lld,%lld,%lld,%lld] k=%dx%d s=(%d,%d) d=(%d,%d) ceil=%d pad=%d",
             average ? "avg" : "max", (long long)n, (long long)h, (long long)w, (long long)c, kernel[0], kernel[1],
             stride[0], stride[1], dilation[0], dilation[1], ceil_mode, include_pad);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "%s: %s", what, g.error);
    if (status != EDGE_OK) {
      graph_free(&g);
      continue;
    }
    int64_t nx = numel(&g, x);
    double *want = calloc((size_t)nx, sizeof(double)), *mag = calloc((size_t)nx, sizeof(double));
    const float *xd = fdata(&g, x), *gd = fdata(&g, dy);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t i = 0; i < out[0]; ++i)
        for (int64_t j = 0; j < out[1]; ++j)
          for (int64_t ch = 0; ch < c; ++ch) {
            double grad = gd[((b * out[0] + i) * out[1] + j) * c + ch];
            int64_t best = -1, count = 0;
            for (int64_t a = 0; a < kernel[0]; ++a)
              for (int64_t e = 0; e < kernel[1]; ++e) {
                int64_t ih = i * stride[0] - pads[0] + a * dilation[0], iw = j * stride[1] - pads[1] + e * dilation[1];
                bool real = ih >= 0 && ih < h && iw >= 0 && iw < w;
                bool padded = ih >= -pads[0] && ih < h + pads[2] && iw >= -pads[1] && iw < w + pads[3];
                count += include_pad ? padded : real;
                if (!real) continue;
                int64_t at = ((b * h + ih) * w + iw) * c + ch;
                if (best < 0 || xd[at] > xd[best]) best = at;
              }
            if (!average) {
              if (best >= 0) want[best] += grad, mag[best] += fabs(grad);
              continue;
            }
            for (int64_t a = 0; a < kernel[0]; ++a)
              for (int64_t e = 0; e < kernel[1]; ++e) {
                int64_t ih = i * stride[0] - pads[0] + a * dilation[0], iw = j * stride[1] - pads[1] + e * dilation[1];
                if (ih < 0 || ih >= h || iw < 0 || iw >= w || count == 0) continue;
                int64_t at = ((b * h + ih) * w + iw) * c + ch;
                want[at] += grad / (double)count;
                mag[at] += fabs(grad);
              }
          }
    compare(what, fdata(&g, dx), want, mag, nx);
    if (iter % 3 == 0) check_threads(&g, what, NULL);
    free(want);
    free(mag);
    graph_free(&g);
  }
}

/* ---- activation gradient ---- */

static void test_activation_grad(void) {
  static const edge_unary_kind ops[] = {
      EDGE_UNARY_IDENTITY, EDGE_UNARY_RELU, EDGE_UNARY_RELU6, EDGE_UNARY_CLIP, EDGE_UNARY_LEAKY_RELU,
      EDGE_UNARY_ELU, EDGE_UNARY_SIGMOID, EDGE_UNARY_TANH, EDGE_UNARY_HARD_SIGMOID, EDGE_UNARY_HARD_SWISH,
      EDGE_UNARY_GELU, EDGE_UNARY_GELU_TANH, EDGE_UNARY_ERF, EDGE_UNARY_EXP, EDGE_UNARY_LOG, EDGE_UNARY_SQRT,
      EDGE_UNARY_RSQRT, EDGE_UNARY_RECIPROCAL, EDGE_UNARY_NEG, EDGE_UNARY_ABS, EDGE_UNARY_SOFTPLUS, EDGE_UNARY_SIN,
      EDGE_UNARY_COS, EDGE_UNARY_SQUARE, EDGE_UNARY_SILU};
  for (size_t k = 0; k < sizeof ops / sizeof ops[0]; ++k) {
    edge_unary_kind op = ops[k];
    bool positive = op == EDGE_UNARY_LOG || op == EDGE_UNARY_SQRT || op == EDGE_UNARY_RSQRT;
    int64_t shape[2] = {37, 301};
    graph g;
    graph_init(&g, EDGE_OP_ACTIVATION_GRAD);
    int32_t x = add_input(&g, "x", 2, shape, positive ? 0.2f : -8, 8), dy = add_input(&g, "dy", 2, shape, -1, 1);
    int32_t dx = add_output(&g, "dx");
    float alpha = op == EDGE_UNARY_CLIP ? -1.5f : (op == EDGE_UNARY_HARD_SIGMOID ? 0.2f : 0.1f);
    float beta = op == EDGE_UNARY_CLIP ? 2.5f : 0.5f;
    g.node.options.unary = (edge_unary_options){op, alpha, beta};
    char what[64];
    snprintf(what, sizeof what, "activation grad %s", edge_unary_names[op]);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "%s: %s", what, g.error);
    if (status == EDGE_OK) {
      /* central differences of the float forward (in double around each point), away from kinks */
      int bad = 0;
      for (int64_t i = 0; i < numel(&g, x) && !bad; ++i) {
        double v = fdata(&g, x)[i], h = 1e-3 * fmax(fmin(1.0 + fabs(v), fabs(v)), 0.1);
        double kinks[] = {0.0, 6.0, alpha, beta, -3.0, 3.0, (0.0 - beta) / alpha, (1.0 - beta) / alpha};
        bool near = false;
        for (size_t q = 0; q < sizeof kinks / sizeof kinks[0]; ++q) near |= fabs(v - kinks[q]) < 50 * h;
        if (near) continue;
        double up = edge_unary_float(op, (float)(v + h), alpha, beta), down = edge_unary_float(op, (float)(v - h), alpha, beta);
        double slope = (up - down) / ((double)(float)(v + h) - (double)(float)(v - h));
        double want = slope * fdata(&g, dy)[i], got = fdata(&g, dx)[i];
        if (!(fabs(got - want) <= 2e-3 * (1.0 + fabs(want)))) {
          CHECK(false, "%s: x=%.7g dy=%.7g got %.7g, finite differences %.7g", what, v, fdata(&g, dy)[i], got, want);
          bad = 1;
        }
      }
      CHECK(!bad, "%s", what);
      check_threads(&g, what, NULL);
    }
    graph_free(&g);
  }
  /* kinks fixed by the contract */
  int64_t shape[1] = {6};
  graph g;
  graph_init(&g, EDGE_OP_ACTIVATION_GRAD);
  int32_t x = add_input(&g, "x", 1, shape, 0, 0), dy = add_input(&g, "dy", 1, shape, 1, 1);
  float xs[6] = {0, 6, -1, 2, 0, 0};
  memcpy(fdata(&g, x), xs, sizeof xs);
  for (int i = 0; i < 6; ++i) fdata(&g, dy)[i] = 1.0f;
  int32_t dx = add_output(&g, "dx");
  struct { edge_unary_kind op; float alpha, beta; float want[6]; } kinks[] = {
      {EDGE_UNARY_RELU, 0, 0, {0, 1, 0, 1, 0, 0}},
      {EDGE_UNARY_RELU6, 0, 0, {0, 0, 0, 1, 0, 0}},
      {EDGE_UNARY_CLIP, -1, 2, {1, 0, 0, 0, 1, 1}},
      {EDGE_UNARY_LEAKY_RELU, 0.25f, 0, {0.25f, 1, 0.25f, 1, 0.25f, 0.25f}},
      {EDGE_UNARY_ABS, 0, 0, {0, 1, -1, 1, 0, 0}},
  };
  for (size_t k = 0; k < sizeof kinks / sizeof kinks[0]; ++k) {
    g.node.options.unary = (edge_unary_options){kinks[k].op, kinks[k].alpha, kinks[k].beta};
    CHECK(graph_run(&g) == EDGE_OK, "kinks: %s", g.error);
    CHECK(memcmp(fdata(&g, dx), kinks[k].want, sizeof kinks[k].want) == 0, "kinks of %s",
           edge_unary_names[kinks[k].op]);
  }
  g.node.options.unary.op = EDGE_UNARY_FLOOR;
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "FLOOR has no gradient"), "floor: %s", g.error);
  graph_free(&g);
}

/* ---- losses ---- */

static double oracle_loss(edge_loss_kind kind, const double *p, const double *t, const int32_t *ids, int64_t rows,
                          int64_t classes, int64_t count) {
  double total = 0.0;
  if (kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY) {
    for (int64_t r = 0; r < rows; ++r) {
      double max = -INFINITY, sum = 0.0;
      for (int64_t c = 0; c < classes; ++c) max = fmax(max, p[r * classes + c]);
      for (int64_t c = 0; c < classes; ++c) sum += exp(p[r * classes + c] - max);
      double l = log(sum) + max;
      for (int64_t c = 0; c < classes; ++c) l -= (ids ? (ids[r] == c) : t[r * classes + c]) * p[r * classes + c];
      total += l;
    }
    return total / (double)rows;
  }
  for (int64_t i = 0; i < count; ++i)
    total += kind == EDGE_LOSS_MSE ? (p[i] - t[i]) * (p[i] - t[i])
                                   : fmax(p[i], 0.0) - p[i] * t[i] + log(1.0 + exp(-fabs(p[i])));
  return total / (double)count;
}

static void test_loss(void) {
  for (int iter = 0; iter < 12; ++iter) {
    edge_loss_kind kind = (edge_loss_kind)(iter % 3);
    bool ids = kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY && iter % 2 == 0;
    int64_t rows = iter < 9 ? rnd_range(1, 9) : 700, classes = rnd_range(1, 11), count = rows * classes;
    int64_t shape[2] = {rows, classes};
    graph g;
    graph_init(&g, EDGE_OP_LOSS);
    int32_t p = add_input(&g, "p", 2, shape, -6, 6), t;
    int32_t labels[1024];
    for (int64_t r = 0; r < rows; ++r) labels[r] = (int32_t)rnd_range(0, classes - 1);
    if (ids) {
      t = add_int_input(&g, "labels", 1, shape, labels);
    } else {
      t = add_input(&g, "t", 2, shape, kind == EDGE_LOSS_MSE ? -3 : 0, kind == EDGE_LOSS_MSE ? 3 : 1);
      if (kind == EDGE_LOSS_SOFTMAX_CROSS_ENTROPY) /* rows of probabilities */
        for (int64_t r = 0; r < rows; ++r) {
          double s = 0.0;
          for (int64_t c = 0; c < classes; ++c) s += fdata(&g, t)[r * classes + c];
          for (int64_t c = 0; c < classes; ++c) fdata(&g, t)[r * classes + c] /= (float)s;
        }
    }
    int32_t loss = add_output(&g, "loss"), d = add_output(&g, "dp");
    g.node.options.loss.kind = kind;
    char what[96];
    snprintf(what, sizeof what, "loss %s%s [%lld, %lld]", edge_loss_names[kind], ids ? " (ids)" : "", (long long)rows,
             (long long)classes);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "%s: %s", what, g.error);
    if (status == EDGE_OK) {
      CHECK(g.tensors[loss].rank == 0, "%s: loss rank %d", what, g.tensors[loss].rank);
      double *pd = malloc(sizeof(double) * (size_t)count), *td = malloc(sizeof(double) * (size_t)count);
      double *want_d = malloc(sizeof(double) * (size_t)count);
      for (int64_t i = 0; i < count; ++i) pd[i] = fdata(&g, p)[i], td[i] = ids ? 0 : fdata(&g, t)[i];
      double want = oracle_loss(kind, pd, td, ids ? labels : NULL, rows, classes, count);
      CHECK(fabs(fdata(&g, loss)[0] - want) <= 1e-6 * (1 + fabs(want)), "%s: loss %.9g, expected %.9g", what,
             fdata(&g, loss)[0], want);
      for (int64_t i = 0; i < count; ++i) { /* central differences of the double loss */
        double keep = pd[i], h = 1e-5;
        pd[i] = keep + h;
        double up = oracle_loss(kind, pd, td, ids ? labels : NULL, rows, classes, count);
        pd[i] = keep - h;
        double down = oracle_loss(kind, pd, td, ids ? labels : NULL, rows, classes, count);
        pd[i] = keep;
        want_d[i] = (up - down) / (2 * h);
      }
      for (int64_t i = 0; i < count; ++i)
        if (!(fabs(fdata(&g, d)[i] - want_d[i]) <= 1e-5 * (1.0 / (double)rows + fabs(want_d[i])) + 1e-8)) {
          CHECK(false, "%s: d[%lld] %.9g, finite differences %.9g", what, (long long)i, fdata(&g, d)[i], want_d[i]);
          break;
        }
      check_threads(&g, what, NULL);
      free(pd);
      free(td);
      free(want_d);
    }
    if (ids) { /* a class id out of range is a runtime error */
      ((int32_t *)g.tensors[t].data)[0] = (int32_t)classes;
      CHECK(graph_run(&g) == EDGE_RUNTIME_ERROR && strstr(g.error, "outside"), "%s bad label: %s", what, g.error);
    }
    graph_free(&g);
  }
}

/* ---- normalisation ---- */

static void test_layer_norm_grad(void) {
  for (int iter = 0; iter < 8; ++iter) {
    int64_t shape[3] = {rnd_range(1, 4), rnd_range(1, 7), rnd_range(2, 40)};
    int32_t axis = iter % 2 ? 1 : 2;
    int64_t rows = axis == 1 ? shape[0] : shape[0] * shape[1], n = axis == 1 ? shape[1] * shape[2] : shape[2];
    int64_t scale_shape[2] = {shape[1], shape[2]};
    graph g;
    graph_init(&g, EDGE_OP_LAYER_NORM_GRAD);
    int32_t x = add_input(&g, "x", 3, shape, -2, 2);
    int32_t s = add_input(&g, "scale", axis == 1 ? 2 : 1, axis == 1 ? scale_shape : scale_shape + 1, 0.5f, 1.5f);
    int32_t dy = add_input(&g, "dy", 3, shape, -1, 1);
    int32_t dx = add_output(&g, "dx"), ds = add_output(&g, "dscale"), db = add_output(&g, "dbias");
    g.node.options.layer_norm = (edge_layer_norm_options){.axis = axis, .epsilon = 1e-5f};
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "layer norm grad: %s", g.error);
    if (status != EDGE_OK) {
      graph_free(&g);
      continue;
    }
    double *want_dx = calloc((size_t)(rows * n), sizeof(double)), *want_ds = calloc((size_t)n, sizeof(double));
    double *want_db = calloc((size_t)n, sizeof(double));
    const float *xd = fdata(&g, x), *sd = fdata(&g, s), *gd = fdata(&g, dy);
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < n; ++i) mean += xd[r * n + i] / (double)n;
      for (int64_t i = 0; i < n; ++i) var += (xd[r * n + i] - mean) * (xd[r * n + i] - mean) / (double)n;
      double inv = 1.0 / sqrt(var + 1e-5);
      /* dx_i = sum_j dy_j s_j dxhat_j/dx_i, dxhat_j/dx_i = inv (delta_ij - 1/n - xhat_i xhat_j / n) */
      for (int64_t i = 0; i < n; ++i) {
        double xi = (xd[r * n + i] - mean) * inv, acc = 0;
        for (int64_t j = 0; j < n; ++j) {
          double xj = (xd[r * n + j] - mean) * inv;
          acc += gd[r * n + j] * sd[j] * inv * ((i == j) - 1.0 / (double)n - xi * xj / (double)n);
        }
        want_dx[r * n + i] = acc;
        want_ds[i] += gd[r * n + i] * xi;
        want_db[i] += gd[r * n + i];
      }
    }
    compare("layer norm dx", fdata(&g, dx), want_dx, NULL, rows * n);
    compare("layer norm dscale", fdata(&g, ds), want_ds, NULL, n);
    compare("layer norm dbias", fdata(&g, db), want_db, NULL, n);
    check_threads(&g, "layer norm grad", NULL);
    free(want_dx);
    free(want_ds);
    free(want_db);
    graph_free(&g);
  }
}

/* BATCH_NORM_TRAIN then BATCH_NORM_GRAD on the same cases for each method (EDGE_BATCH_NORM=
 * reference, then the fast path: identical data from the same generator state). Each method is
 * checked against the double oracle and on 3 threads; the fast one also against the reference's
 * outputs. The large cases give the fast path several blocks and cells (and ragged last ones). */
#define BATCH_NORM_CASES 9
#define BATCH_NORM_OUTPUTS 6 /* y, mean, invstd, dx, dscale, dbias */

static void keep_or_compare(const char *method, float **kept, int iter, int slot, const char *what, const float *got,
                            int64_t n) {
  float **entry = &kept[iter * BATCH_NORM_OUTPUTS + slot];
  if (strcmp(method, "reference") == 0) {
    free(*entry);
    *entry = malloc(sizeof(float) * (size_t)n);
    memcpy(*entry, got, sizeof(float) * (size_t)n);
    return;
  }
  if (!*entry) return;
  double *want = malloc(sizeof(double) * (size_t)n);
  for (int64_t i = 0; i < n; ++i) want[i] = (*entry)[i];
  char label[96];
  snprintf(label, sizeof label, "batch norm %s: fast against reference", what);
  compare(label, got, want, NULL, n);
  free(want);
}

static void batch_norm_cases(const char *method, float **kept) {
  setenv("EDGE_BATCH_NORM", method, 1);
  for (int iter = 0; iter < BATCH_NORM_CASES; ++iter) {
    int64_t shape[4] = {rnd_range(1, 4), rnd_range(1, 5), rnd_range(1, 5), rnd_range(1, 40)};
    if (iter == 5) shape[0] = 16, shape[1] = 12, shape[2] = 12, shape[3] = 35;
    if (iter == 6) shape[0] = 8, shape[1] = 17, shape[2] = 15, shape[3] = 16;
    if (iter == 7) shape[0] = 3, shape[1] = 1, shape[2] = 2, shape[3] = 4100;
    if (iter == 8) shape[0] = 4, shape[1] = 9, shape[2] = 9, shape[3] = 64;
    int64_t C = shape[3], M = shape[0] * shape[1] * shape[2], cs[1] = {C};
    if (M < 2) shape[1] = 2, M *= 2;
    graph g;
    graph_init(&g, EDGE_OP_BATCH_NORM_TRAIN);
    int32_t x = add_input(&g, "x", 4, shape, -2, 3), scale = add_input(&g, "scale", 1, cs, 0.5f, 1.5f);
    int32_t bias = add_input(&g, "bias", 1, cs, -1, 1), rm = add_input(&g, "running_mean", 1, cs, -1, 1);
    int32_t rv = add_input(&g, "running_var", 1, cs, 0.5f, 2);
    g.tensors[rm].kind = EDGE_TENSOR_VARIABLE;
    int32_t y = add_output(&g, "y"), mean_out = add_output(&g, "mean"), inv_out = add_output(&g, "invstd");
    g.node.options.batch_norm = (edge_batch_norm_options){1e-3f, 0.9f};
    CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "running_var") && strstr(g.error, "variable"),
           "running_var as an activation: %s", g.error);
    g.tensors[rv].kind = EDGE_TENSOR_VARIABLE;
    float *rm0 = malloc(sizeof(float) * (size_t)C), *rv0 = malloc(sizeof(float) * (size_t)C);
    memcpy(rm0, fdata(&g, rm), sizeof(float) * (size_t)C);
    memcpy(rv0, fdata(&g, rv), sizeof(float) * (size_t)C);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "batch norm train: %s", g.error);
    if (status != EDGE_OK) goto next;
    {
      const float *xd = fdata(&g, x);
      double *mean = calloc((size_t)C, sizeof(double)), *var = calloc((size_t)C, sizeof(double));
      double *want_y = malloc(sizeof(double) * (size_t)(M * C)), *want = malloc(sizeof(double) * (size_t)C);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < C; ++c) mean[c] += xd[r * C + c] / (double)M;
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < C; ++c) var[c] += (xd[r * C + c] - mean[c]) * (xd[r * C + c] - mean[c]) / (double)M;
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < C; ++c)
          want_y[r * C + c] = (xd[r * C + c] - mean[c]) / sqrt(var[c] + 1e-3) * fdata(&g, scale)[c] + fdata(&g, bias)[c];
      compare("batch norm y", fdata(&g, y), want_y, NULL, M * C);
      compare("batch norm mean", fdata(&g, mean_out), mean, NULL, C);
      for (int64_t c = 0; c < C; ++c) want[c] = 1.0 / sqrt(var[c] + 1e-3);
      compare("batch norm invstd", fdata(&g, inv_out), want, NULL, C);
      for (int64_t c = 0; c < C; ++c) want[c] = 0.9 * rm0[c] + 0.1 * mean[c];
      compare("batch norm running mean", fdata(&g, rm), want, NULL, C);
      for (int64_t c = 0; c < C; ++c) want[c] = 0.9 * rv0[c] + 0.1 * var[c] * (double)M / (double)(M - 1);
      compare("batch norm running var", fdata(&g, rv), want, NULL, C);
      keep_or_compare(method, kept, iter, 0, "y", fdata(&g, y), M * C);
      keep_or_compare(method, kept, iter, 1, "mean", fdata(&g, mean_out), C);
      keep_or_compare(method, kept, iter, 2, "invstd", fdata(&g, inv_out), C);
      void *saved[MAX_TENSORS] = {0};
      saved[rm] = rm0;
      saved[rv] = rv0;
      check_threads(&g, "batch norm train", saved);

      /* BATCH_NORM_GRAD with the batch statistics just computed, against the chain rule in double. */
      graph gg;
      graph_init(&gg, EDGE_OP_BATCH_NORM_GRAD);
      int32_t gx = add_input(&gg, "x", 4, shape, 0, 0), gs = add_input(&gg, "scale", 1, cs, 0, 0);
      int32_t gm = add_input(&gg, "mean", 1, cs, 0, 0), gi = add_input(&gg, "invstd", 1, cs, 0, 0);
      int32_t gdy = add_input(&gg, "dy", 4, shape, -1, 1);
      memcpy(fdata(&gg, gx), xd, gg.tensors[gx].nbytes);
      memcpy(fdata(&gg, gs), fdata(&g, scale), gg.tensors[gs].nbytes);
      memcpy(fdata(&gg, gm), fdata(&g, mean_out), gg.tensors[gm].nbytes);
      memcpy(fdata(&gg, gi), fdata(&g, inv_out), gg.tensors[gi].nbytes);
      int32_t gdx = add_output(&gg, "dx"), gds = add_output(&gg, "dscale"), gdb = add_output(&gg, "dbias");
      gg.node.options.batch_norm = g.node.options.batch_norm;
      CHECK(graph_run(&gg) == EDGE_OK, "batch norm grad: %s", gg.error);
      const float *dyd = fdata(&gg, gdy), *md = fdata(&gg, gm), *id = fdata(&gg, gi), *sd = fdata(&gg, gs);
      double *sum = calloc((size_t)C, sizeof(double)), *dot = calloc((size_t)C, sizeof(double));
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < C; ++c) {
          sum[c] += dyd[r * C + c];
          dot[c] += dyd[r * C + c] * (xd[r * C + c] - md[c]) * id[c];
        }
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < C; ++c) {
          double xhat = (xd[r * C + c] - md[c]) * id[c];
          want_y[r * C + c] = sd[c] * id[c] * (dyd[r * C + c] - sum[c] / (double)M - xhat * dot[c] / (double)M);
        }
      compare("batch norm grad dx", fdata(&gg, gdx), want_y, NULL, M * C);
      compare("batch norm grad dscale", fdata(&gg, gds), dot, NULL, C);
      compare("batch norm grad dbias", fdata(&gg, gdb), sum, NULL, C);
      keep_or_compare(method, kept, iter, 3, "dx", fdata(&gg, gdx), M * C);
      keep_or_compare(method, kept, iter, 4, "dscale", fdata(&gg, gds), C);
      keep_or_compare(method, kept, iter, 5, "dbias", fdata(&gg, gdb), C);
      check_threads(&gg, "batch norm grad", NULL);
      graph_free(&gg);
      free(sum);
      free(dot);
      free(mean);
      free(var);
      free(want_y);
      free(want);
    }
  next:
    free(rm0);
    free(rv0);
    graph_free(&g);
  }
  unsetenv("EDGE_BATCH_NORM");
}

static void test_batch_norm(void) {
  float *kept[BATCH_NORM_CASES * BATCH_NORM_OUTPUTS] = {0};
  const uint64_t seed = test_rng_state;
  batch_norm_cases("reference", kept);
  test_rng_state = seed;
  batch_norm_cases("fast", kept);
  for (int i = 0; i < BATCH_NORM_CASES * BATCH_NORM_OUTPUTS; ++i) free(kept[i]);
}

/* ---- gather gradient ---- */

static void test_gather_grad(void) {
  for (int iter = 0; iter < 6; ++iter) {
    int64_t rows = rnd_range(1, 9), width = iter == 5 ? 700 : rnd_range(1, 12), outer = iter % 2 ? 3 : 1;
    int32_t axis = iter % 2 ? 1 : 0;
    int64_t count = rnd_range(0, 10);
    int32_t idx[16];
    for (int64_t j = 0; j < count; ++j) idx[j] = (int32_t)rnd_range(-rows, rows - 1);
    if (count > 2) idx[1] = idx[0]; /* a duplicate */
    int64_t x_shape[3] = {outer, rows, width}, i_shape[1] = {count}, dy_shape[3] = {outer, count, width};
    int64_t *xs = axis == 0 ? x_shape + 1 : x_shape, *ds = axis == 0 ? dy_shape + 1 : dy_shape;
    int32_t rank = axis == 0 ? 2 : 3;
    graph g;
    graph_init(&g, EDGE_OP_GATHER_GRAD);
    int32_t dy = add_input(&g, "dy", rank, ds, -1, 1);
    add_int_input(&g, "indices", 1, i_shape, idx);
    int32_t dx = add_output_shaped(&g, "dx", rank, xs);
    g.node.options.axis.axis = axis;
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "gather grad: %s", g.error);
    if (status == EDGE_OK) {
      int64_t o_count = axis == 0 ? 1 : outer;
      double *want = calloc((size_t)(o_count * rows * width), sizeof(double));
      for (int64_t o = 0; o < o_count; ++o)
        for (int64_t j = 0; j < count; ++j)
          for (int64_t c = 0; c < width; ++c)
            want[(o * rows + (idx[j] < 0 ? idx[j] + rows : idx[j])) * width + c] +=
                fdata(&g, dy)[(o * count + j) * width + c];
      compare("gather grad", fdata(&g, dx), want, NULL, o_count * rows * width);
      check_threads(&g, "gather grad", NULL);
      free(want);
      if (count > 0) {
        ((int32_t *)g.tensors[g.inputs[1]].data)[count - 1] = (int32_t)rows;
        CHECK(graph_run(&g) == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "gather grad range: %s", g.error);
      }
    }
    graph_free(&g);
  }
}

/* ---- optimizers and clipping ---- */

/* method: "reference" (the double loops) or "fast" (ADAM / ADAMW on the float vector kernel above
 * EDGE_ISA=scalar); both against the double oracle. */
static void optimizer_cases(const char *method) {
  setenv("EDGE_OPTIMIZER", method, 1);
  for (int kind = 0; kind < EDGE_OPTIMIZER_COUNT_; ++kind)
    for (int variant = 0; variant < 3; ++variant) { /* 0 dense, 1 dense + weight decay / nesterov, 2 sparse */
      bool sparse = variant == 2;
      int64_t rows = 6, width = variant == 0 && kind == EDGE_OPTIMIZER_ADAM ? 1500 : 5 + kind;
      int64_t shape[2] = {rows, width}, one[1] = {1};
      graph g;
      graph_init(&g, EDGE_OP_OPTIMIZER_UPDATE);
      edge_optimizer_options *o = &g.node.options.optimizer;
      *o = (edge_optimizer_options){(edge_optimizer_kind)kind, 0.9f, 0.9f, 0.99f, 1e-6f, 0.0f, false, sparse};
      if (variant == 1) o->weight_decay = 0.05f, o->nesterov = true;
      int32_t param = add_input(&g, "param", 2, shape, -1, 1);
      g.tensors[param].kind = EDGE_TENSOR_VARIABLE;
      int32_t idx[5] = {4, 1, 4, -1, 0};
      int64_t gshape[2] = {5, width}, ishape[1] = {5};
      int32_t grad = add_input(&g, "grad", 2, sparse ? gshape : shape, -1, 1);
      if (sparse) add_int_input(&g, "indices", 1, ishape, idx);
      add_input(&g, "lr", 0, one, 0.1f, 0.1f);
      int32_t slots = kind == EDGE_OPTIMIZER_SGD ? 0 : (kind == EDGE_OPTIMIZER_ADAM || kind == EDGE_OPTIMIZER_ADAMW ? 3 : 1);
      int32_t slot[3] = {-1, -1, -1};
      for (int32_t s = 0; s < slots; ++s) {
        slot[s] = s == 2 ? add_input(&g, "step", 0, one, 0, 0) : add_input(&g, s ? "v" : "m", 2, shape, 0, 0.5f);
        g.tensors[slot[s]].kind = EDGE_TENSOR_VARIABLE;
      }
      char what[96];
      snprintf(what, sizeof what, "optimizer %s%s (%s)", edge_optimizer_names[kind],
               variant == 0 ? "" : variant == 1 ? " (decay, nesterov)" : " (sparse)", method);
      int64_t n = rows * width;
      double *p = malloc(sizeof(double) * (size_t)n), *s0 = calloc((size_t)n, sizeof(double));
      double *s1 = calloc((size_t)n, sizeof(double)), step = 0;
      for (int64_t i = 0; i < n; ++i) {
        p[i] = fdata(&g, param)[i];
        if (slot[0] >= 0) s0[i] = fdata(&g, slot[0])[i];
        if (slot[1] >= 0) s1[i] = fdata(&g, slot[1])[i];
      }
      for (int iteration = 0; iteration < 4; ++iteration) {
        for (int64_t i = 0; i < numel(&g, grad); ++i) fdata(&g, grad)[i] = rnd_float(-1, 1);
        edge_status status = graph_run(&g);
        CHECK(status == EDGE_OK, "%s: %s", what, g.error);
        if (status != EDGE_OK) break;
        /* oracle: dense gradient (sparse rows summed) */
        double *gd = calloc((size_t)n, sizeof(double));
        bool *touched = calloc((size_t)rows, sizeof(bool));
        if (sparse) {
          for (int j = 0; j < 5; ++j) {
            int64_t r = idx[j] < 0 ? idx[j] + rows : idx[j];
            touched[r] = true;
            for (int64_t c = 0; c < width; ++c) gd[r * width + c] += fdata(&g, grad)[j * width + c];
          }
        } else {
          for (int64_t r = 0; r < rows; ++r) touched[r] = true;
          for (int64_t i = 0; i < n; ++i) gd[i] = fdata(&g, grad)[i];
        }
        step += 1;
        double lrv = 0.1f, wd = o->weight_decay, mu = o->momentum, b1 = o->beta1, b2 = o->beta2, eps = o->epsilon;
        for (int64_t i = 0; i < n; ++i) {
          if (!touched[i / width]) continue;
          double old = p[i], gi = kind == EDGE_OPTIMIZER_ADAMW ? gd[i] : gd[i] + wd * old;
          switch (kind) {
            case EDGE_OPTIMIZER_SGD: p[i] = old - lrv * gi; break;
            case EDGE_OPTIMIZER_MOMENTUM:
              s0[i] = mu * s0[i] + gi;
              p[i] = old - lrv * (o->nesterov ? gi + mu * s0[i] : s0[i]);
              break;
            case EDGE_OPTIMIZER_ADAGRAD:
              s0[i] += gi * gi;
              p[i] = old - lrv * gi / (sqrt(s0[i]) + eps);
              break;
            default:
              s0[i] = b1 * s0[i] + (1 - b1) * gi;
              s1[i] = b2 * s1[i] + (1 - b2) * gi * gi;
              p[i] = old - lrv * (s0[i] / (1 - pow(b1, step))) / (sqrt(s1[i] / (1 - pow(b2, step))) + eps);
              if (kind == EDGE_OPTIMIZER_ADAMW) p[i] -= lrv * wd * old;
          }
        }
        char label[160];
        snprintf(label, sizeof label, "%s step %d param", what, iteration + 1);
        compare(label, fdata(&g, param), p, NULL, n);
        if (slot[0] >= 0) compare(label, fdata(&g, slot[0]), s0, NULL, n);
        if (slot[1] >= 0) compare(label, fdata(&g, slot[1]), s1, NULL, n);
        if (slot[2] >= 0) CHECK(fdata(&g, slot[2])[0] == (float)step, "%s: step %g", what, fdata(&g, slot[2])[0]);
        free(gd);
        free(touched);
      }
      /* thread independence of one more step from the same state */
      void *saved[MAX_TENSORS] = {0};
      for (int32_t i = 0; i < g.num_tensors; ++i) {
        saved[i] = malloc(g.tensors[i].nbytes + 1);
        memcpy(saved[i], g.tensors[i].data, g.tensors[i].nbytes);
      }
      CHECK(graph_run(&g) == EDGE_OK, "%s: %s", what, g.error);
      check_threads(&g, what, saved);
      for (int32_t i = 0; i < g.num_tensors; ++i) free(saved[i]);
      /* in-place targets must be variables */
      g.tensors[param].kind = EDGE_TENSOR_ACTIVATION;
      CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "param") && strstr(g.error, "variable"),
             "%s: param as an activation: %s", what, g.error);
      g.tensors[param].kind = EDGE_TENSOR_VARIABLE;
      if (slot[0] >= 0) {
        g.tensors[slot[0]].kind = EDGE_TENSOR_CONSTANT;
        CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "constant"), "%s: slot constant: %s", what, g.error);
        g.tensors[slot[0]].kind = EDGE_TENSOR_VARIABLE;
      }
      if (sparse) {
        ((int32_t *)g.tensors[g.inputs[2]].data)[3] = 6;
        CHECK(graph_run(&g) == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "%s: index: %s", what, g.error);
      }
      free(p);
      free(s0);
      free(s1);
      graph_free(&g);
    }
  unsetenv("EDGE_OPTIMIZER");
}

static void test_optimizer(void) {
  optimizer_cases("reference");
  optimizer_cases("fast");
}

static void test_clip(void) {
  for (int iter = 0; iter < 4; ++iter) {
    graph g;
    graph_init(&g, EDGE_OP_CLIP_BY_GLOBAL_NORM);
    int64_t a_shape[2] = {3, 5}, b_shape[1] = {iter == 3 ? 9000 : 7};
    int32_t a = add_input(&g, "a", 2, a_shape, -1, 1), b = add_input(&g, "b", 1, b_shape, -1, 1);
    int32_t ya = add_output(&g, "a'"), yb = add_output(&g, "b'");
    double total = 0;
    for (int64_t i = 0; i < numel(&g, a); ++i) total += (double)fdata(&g, a)[i] * fdata(&g, a)[i];
    for (int64_t i = 0; i < numel(&g, b); ++i) total += (double)fdata(&g, b)[i] * fdata(&g, b)[i];
    double norm = sqrt(total), max_norm = iter % 2 ? norm * 0.5 : norm * 2;
    g.node.options.clip.max_norm = (float)max_norm;
    CHECK(graph_run(&g) == EDGE_OK, "clip: %s", g.error);
    double scale = norm > (float)max_norm ? (float)max_norm / norm : 1.0;
    double *want = malloc(sizeof(double) * 9000);
    for (int64_t i = 0; i < numel(&g, a); ++i) want[i] = fdata(&g, a)[i] * scale;
    compare("clip a", fdata(&g, ya), want, NULL, numel(&g, a));
    for (int64_t i = 0; i < numel(&g, b); ++i) want[i] = fdata(&g, b)[i] * scale;
    compare("clip b", fdata(&g, yb), want, NULL, numel(&g, b));
    check_threads(&g, "clip", NULL);
    free(want);
    graph_free(&g);
  }
}

/* ---- variables through the public API, and saving them ---- */

static void test_save_variables(void) {
  edge_model *model = NULL;
  if (edge_model_load_file(test_seed_path("chain.edge"), &model) != EDGE_OK) {
    CHECK(false, "load chain.edge: %s", edge_last_error());
    return;
  }
  edge_interpreter_options options = {.num_threads = 2};
  edge_interpreter *interp = NULL;
  CHECK(edge_interpreter_create(model, &options, &interp) == EDGE_OK, "create: %s", edge_last_error());
  if (!interp) {
    edge_model_free(model);
    return;
  }
  /* variables are reachable before allocate, and tensor_data writes through */
  void *data = NULL;
  CHECK(edge_interpreter_tensor_data(interp, 6, &data) == EDGE_OK && data, "tensor_data on a variable");
  float update[3] = {-7.5f, 8.25f, 3.0f}, back[3];
  if (data) ((float *)data)[0] = update[0];
  CHECK(edge_interpreter_set_tensor(interp, 6, update + 1 - 1, sizeof update) == EDGE_OK, "set variable");
  CHECK(edge_interpreter_get_tensor(interp, 6, back, sizeof back) == EDGE_OK && memcmp(back, update, sizeof back) == 0,
         "get variable");
  CHECK(edge_interpreter_allocate(interp) == EDGE_OK, "allocate: %s", edge_interpreter_error(interp));
  CHECK(edge_interpreter_get_tensor(interp, 6, back, sizeof back) == EDGE_OK && memcmp(back, update, sizeof back) == 0,
         "allocate keeps variables");

  char path[256];
  snprintf(path, sizeof path, "/tmp/edge-test-save-%d.edge", (int)getpid());
  CHECK(edge_interpreter_save_model(interp, path) == EDGE_OK, "save_model: %s", edge_interpreter_error(interp));
  char tmp[300];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  CHECK(access(tmp, F_OK) != 0, "save_model left %s behind", tmp);
  edge_model *saved = NULL;
  CHECK(edge_model_load_file(path, &saved) == EDGE_OK, "load saved: %s", edge_last_error());
  if (saved) {
    edge_interpreter *again = NULL;
    CHECK(edge_interpreter_create(saved, &options, &again) == EDGE_OK, "create from saved");
    float weights[18], original[18];
    CHECK(edge_interpreter_get_tensor(again, 6, back, sizeof back) == EDGE_OK && memcmp(back, update, sizeof back) == 0,
           "saved file carries the variable's current value");
    CHECK(edge_interpreter_get_tensor(again, 1, weights, sizeof weights) == EDGE_OK &&
               edge_interpreter_get_tensor(interp, 1, original, sizeof original) == EDGE_OK &&
               memcmp(weights, original, sizeof weights) == 0,
           "constants unchanged in the saved file");
    CHECK(edge_model_num_signatures(saved) == edge_model_num_signatures(model), "signatures kept");
    edge_interpreter_free(again);
    edge_model_free(saved);
  }
  /* the original model's bytes are untouched: reset brings back the file's values */
  CHECK(edge_interpreter_reset_variables(interp) == EDGE_OK, "reset");
  CHECK(edge_interpreter_get_tensor(interp, 6, back, sizeof back) == EDGE_OK && back[0] == 0.25f, "original kept");
  CHECK(edge_interpreter_save_model(interp, "/nonexistent-dir/x.edge") == EDGE_IO_ERROR &&
             strstr(edge_interpreter_error(interp), "nonexistent-dir"),
         "save into a missing directory: %s", edge_interpreter_error(interp));
  unlink(path);
  edge_interpreter_free(interp);
  edge_model_free(model);
}

void test_ops_training(void) {
  rng_seed(0x9e3779b97f4a7c15ull);
  test_conv_grads();
  test_conv_variable_weights();
  test_pool_grad();
  test_activation_grad();
  test_loss();
  test_layer_norm_grad();
  test_batch_norm();
  test_gather_grad();
  test_optimizer();
  test_clip();
  test_save_variables();
}

/* Tests of the fp32 GEMM family (kernels/gemm.h) at every ISA level this machine runs.
 *
 * Oracles: a naive triple loop in double (each output within 1e-5 x (1 + sum of |terms|) of it),
 * and the scalar level's kernel (sse2 must match it bit for bit: same rounding steps, same order).
 * Shapes come from a list of ragged cases (1, primes, one past and one short of the tiles) plus
 * random ones; both packings (B as [n][k] and as [k][n]), strided A and C, with and without bias,
 * every activation. C sits between guard words, and the gaps of a strided C hold a poison value,
 * so a kernel writing outside its tile is caught. Products on 1, 2 and 3 threads must agree bit
 * for bit.  */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kernels/config.h"
#include "op_harness.h"
#include "test.h"


static size_t rnd_size(size_t lo, size_t hi) { return lo + rnd() % (uint32_t)(hi - lo + 1); }
static float rnd_unit(void) { return (float)(rnd() % 2000001) / 1000000.0f - 1.0f; }

#define GUARD 16
static const float poison = -12345.5f;

typedef struct {
  size_t m, n, k;
} shape;

/* One product's inputs, its oracle, and the packed B for a kernel table. */
typedef struct {
  shape s;
  size_t a_stride, c_stride;
  float *a, *w, *bias; /* w as [n][k] (transposed) or [k][n] */
  int transposed;
  double *want, *magnitude;
} problem;

static void problem_init(problem *p, shape s, int transposed, int with_bias, int strided) {
  memset(p, 0, sizeof *p);
  p->s = s;
  p->transposed = transposed;
  p->a_stride = s.k + (strided ? 3 : 0);
  p->c_stride = s.n + (strided ? 5 : 0);
  p->a = malloc(sizeof(float) * (s.m * p->a_stride + 1));
  p->w = malloc(sizeof(float) * (s.n * s.k + 1));
  p->bias = with_bias ? malloc(sizeof(float) * s.n) : NULL;
  for (size_t i = 0; i < s.m * p->a_stride; ++i) p->a[i] = rnd_unit();
  for (size_t i = 0; i < s.n * s.k; ++i) p->w[i] = rnd_unit();
  for (size_t i = 0; with_bias && i < s.n; ++i) p->bias[i] = rnd_unit();
  p->want = malloc(sizeof(double) * (s.m * s.n + 1));
  p->magnitude = malloc(sizeof(double) * (s.m * s.n + 1));
  for (size_t i = 0; i < s.m; ++i)
    for (size_t j = 0; j < s.n; ++j) {
      double acc = p->bias ? p->bias[j] : 0.0, mag = fabs(acc);
      for (size_t q = 0; q < s.k; ++q) {
        const double b = transposed ? p->w[j * s.k + q] : p->w[q * s.n + j];
        const double term = (double)p->a[i * p->a_stride + q] * b;
        acc += term;
        mag += fabs(term);
      }
      p->want[i * s.n + j] = acc;
      p->magnitude[i * s.n + j] = mag;
    }
}

static void problem_free(problem *p) {
  free(p->a);
  free(p->w);
  free(p->bias);
  free(p->want);
  free(p->magnitude);
}

static void *pack_for(const edge_gemm_kernels *k, const problem *p) {
  void *packed = aligned_alloc(64, edge_gemm_packed_bytes(k, p->s.n, p->s.k));
  if (p->transposed) edge_gemm_pack_weights(k, p->s.n, p->s.k, p->w, p->s.k, p->bias, packed);
  else edge_gemm_pack_weights_kn(k, p->s.n, p->s.k, p->w, p->s.n, p->bias, packed);
  return packed;
}

/* C with GUARD poison floats on both sides and poison in the stride gaps. */
static float *output_alloc(const problem *p) {
  const size_t total = p->s.m * p->c_stride + 2 * GUARD;
  float *buffer = malloc(sizeof(float) * total);
  for (size_t i = 0; i < total; ++i) buffer[i] = poison;
  return buffer;
}

static int output_untouched_outside(const problem *p, const float *buffer) {
  for (size_t i = 0; i < GUARD; ++i)
    if (buffer[i] != poison || buffer[GUARD + p->s.m * p->c_stride + i] != poison) return 0;
  for (size_t r = 0; r < p->s.m; ++r)
    for (size_t j = p->s.n; j < p->c_stride; ++j)
      if (buffer[GUARD + r * p->c_stride + j] != poison) return 0;
  return 1;
}

static float *run(const edge_gemm_kernels *k, edge_threadpool *pool, const problem *p, const void *packed,
                  const edge_activation *act) {
  float *buffer = output_alloc(p);
  edge_gemm_compute(k, pool, p->s.m, p->s.n, p->s.k, p->a, p->a_stride, packed, buffer + GUARD, p->c_stride, act);
  return buffer;
}

static double activation_reference(const edge_activation *act, double x) {
  return (double)edge_unary_float(act->op, (float)x, act->alpha, act->beta);
}

/* Compares with the double oracle (activation applied to it); reports the first mismatch. */
static void check_against_oracle(const char *what, const edge_gemm_kernels *k, const problem *p, const float *buffer,
                                 const edge_activation *act) {
  const float *c = buffer + GUARD;
  size_t bad_i = 0, bad_j = 0;
  double bad_got = 0, bad_want = 0;
  int ok = 1;
  for (size_t i = 0; i < p->s.m && ok; ++i)
    for (size_t j = 0; j < p->s.n && ok; ++j) {
      const double want_linear = p->want[i * p->s.n + j];
      const double tolerance = 1e-5 * (1.0 + p->magnitude[i * p->s.n + j]);
      const double want = act ? activation_reference(act, want_linear) : want_linear;
      const double got = c[i * p->c_stride + j];
      /* activations are at most ~1.2-Lipschitz here; give them twice the sum's bound */
      if (!(fabs(got - want) <= (act ? 2.0 : 1.0) * tolerance)) {
        ok = 0;
        bad_i = i;
        bad_j = j;
        bad_got = got;
        bad_want = want;
      }
    }
  CHECK(ok, "%s %s m=%zu n=%zu k=%zu: C[%zu][%zu] = %.9g, expected %.9g", what, k->name, p->s.m, p->s.n, p->s.k,
        bad_i, bad_j, bad_got, bad_want);
  CHECK(output_untouched_outside(p, buffer), "%s %s m=%zu n=%zu k=%zu: wrote outside C", what, k->name, p->s.m,
        p->s.n, p->s.k);
}

static int same_outputs(const problem *p, const float *x, const float *y) {
  for (size_t i = 0; i < p->s.m; ++i)
    if (memcmp(x + GUARD + i * p->c_stride, y + GUARD + i * p->c_stride, sizeof(float) * p->s.n) != 0) return 0;
  return 1;
}

static const shape ragged_shapes[] = {
    {1, 1, 1},    {1, 7, 3},     {3, 5, 2},    {2, 1, 257},  {4, 4, 4},    {5, 9, 13},   {7, 31, 17},
    {8, 32, 16},  {9, 33, 17},   {13, 67, 31}, {17, 100, 64}, {6, 16, 1},  {1, 97, 200}, {31, 47, 0},
    {37, 61, 11}, {64, 96, 128}, {5, 3, 1000}, {15, 15, 15}, {16, 48, 5},  {23, 130, 29}, {2, 2000, 7},
    /* last panels of 17..24 columns (the 8-lane upper half on avx512), and exactly 24 */
    {12, 24, 144}, {9, 20, 7},   {11, 56, 24}, {1, 88, 9},
};

static void test_shape(const edge_gemm_kernels *k, const edge_gemm_kernels *scalar, shape s, int variant) {
  problem p;
  problem_init(&p, s, variant & 1, (variant >> 1) & 1, (variant >> 2) & 1);
  void *packed = pack_for(k, &p), *packed_scalar = pack_for(scalar, &p);
  float *got = run(k, NULL, &p, packed, NULL);
  check_against_oracle("gemm", k, &p, got, NULL);
  float *reference = run(scalar, NULL, &p, packed_scalar, NULL);
  if (k->isa == EDGE_ISA_SSE2)
    CHECK(same_outputs(&p, got, reference), "gemm %s m=%zu n=%zu k=%zu: differs from the scalar kernel", k->name,
          s.m, s.n, s.k);
  free(got);
  free(reference);
  free(packed);
  free(packed_scalar);
  problem_free(&p);
}

static const edge_activation activations[] = {
    {EDGE_UNARY_IDENTITY, 0, 0},     {EDGE_UNARY_RELU, 0, 0},        {EDGE_UNARY_RELU6, 0, 0},
    {EDGE_UNARY_CLIP, -0.5f, 0.75f}, {EDGE_UNARY_LEAKY_RELU, 0.1f, 0}, {EDGE_UNARY_ELU, 1.0f, 0},
    {EDGE_UNARY_SIGMOID, 0, 0},      {EDGE_UNARY_TANH, 0, 0},        {EDGE_UNARY_HARD_SIGMOID, 0.2f, 0.5f},
    {EDGE_UNARY_HARD_SWISH, 0, 0},   {EDGE_UNARY_GELU, 0, 0},        {EDGE_UNARY_GELU_TANH, 0, 0},
};

static void test_activations(const edge_gemm_kernels *k) {
  for (size_t i = 0; i < sizeof activations / sizeof activations[0]; ++i) {
    shape s = {rnd_size(1, 20), rnd_size(1, 70), rnd_size(1, 40)};
    problem p;
    problem_init(&p, s, (int)(i & 1), 1, (int)((i >> 1) & 1));
    /* spread the sums over [-8, 8] so clamps and saturating curves are all exercised */
    for (size_t q = 0; q < s.m * p.a_stride; ++q) p.a[q] *= 4.0f;
    for (size_t j = 0; j < s.n; ++j) p.bias[j] *= 4.0f;
    for (size_t q = 0; q < s.m; ++q)
      for (size_t j = 0; j < s.n; ++j) {
        double acc = p.bias[j], mag = fabs(acc);
        for (size_t r = 0; r < s.k; ++r) {
          const double b = p.transposed ? p.w[j * s.k + r] : p.w[r * s.n + j];
          acc += (double)p.a[q * p.a_stride + r] * b;
          mag += fabs((double)p.a[q * p.a_stride + r] * b);
        }
        p.want[q * s.n + j] = acc;
        p.magnitude[q * s.n + j] = mag;
      }
    void *packed = pack_for(k, &p);
    float *got = run(k, NULL, &p, packed, &activations[i]);
    char what[64];
    snprintf(what, sizeof what, "gemm+%s", edge_unary_names[activations[i].op]);
    check_against_oracle(what, k, &p, got, &activations[i]);
    free(got);
    free(packed);
    problem_free(&p);
  }
}

static void test_threads(const edge_gemm_kernels *k, edge_threadpool *pools[3]) {
  static const shape shapes[] = {{37, 301, 129}, {1, 999, 64}, {200, 40, 33}, {64, 2048, 96}, {300, 24, 16}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
    problem p;
    problem_init(&p, shapes[i], (int)(i & 1), 1, 0);
    void *packed = pack_for(k, &p);
    const edge_activation act = {EDGE_UNARY_SIGMOID, 0, 0};
    float *one = run(k, pools[0], &p, packed, &act);
    for (int t = 1; t < 3; ++t) {
      float *other = run(k, pools[t], &p, packed, &act);
      CHECK(same_outputs(&p, one, other), "gemm %s m=%zu n=%zu k=%zu: %d threads differ from 1", k->name,
            shapes[i].m, shapes[i].n, shapes[i].k, t + 1);
      free(other);
    }
    free(one);
    free(packed);
    problem_free(&p);
  }
}

static void test_level_table(void) {
  const edge_kernel_config *picked = edge_kernels();
  CHECK(picked != NULL && picked->isa == edge_isa_level_get(), "edge_kernels() is not the picked level's table");
  CHECK(edge_kernels_for(EDGE_ISA_SCALAR) != NULL, "the scalar level must always be supported");
  CHECK(edge_isa_level_get() <= edge_isa_level_detected(), "picked level %s above detected %s",
        edge_isa_level_name(edge_isa_level_get()), edge_isa_level_name(edge_isa_level_detected()));
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    CHECK((config != NULL) == (edge_isa_level_supported((edge_isa_level)level) != 0),
          "edge_kernels_for(%s) disagrees with edge_isa_level_supported", edge_isa_level_name((edge_isa_level)level));
    if (config)
      CHECK(config->gemm.ukernel && config->gemm.ukernel_1 && config->gemm.mr >= 1 && config->gemm.nr >= 1 &&
                config->gemm.isa == (edge_isa_level)level,
            "gemm table of %s is incomplete", edge_isa_level_name((edge_isa_level)level));
  }
}

/* ---- the ops that use the family, through their registrations ---- */

/* A float input filled from the generator (or absent with rank < 0); kind decides the path:
 * constant weights are packed at prepare, others per call or by the reference loops. */
static void op_graph_input(graph *g, int32_t rank, const int64_t *shape, edge_tensor_kind kind) {
  if (rank < 0) {
    graph_add_input(g, -1);
    return;
  }
  const int32_t t = add_tensor(g, "in", EDGE_FLOAT32, rank, shape);
  g->tensors[t].kind = kind;
  float *data = g->tensors[t].data;
  for (int64_t i = 0; i < edge_num_elements(rank, shape); ++i) data[i] = rnd_unit();
  graph_add_input(g, t);
}

static void op_graph_output(graph *g) { graph_add_output(g, add_tensor(g, "out", EDGE_FLOAT32, 0, NULL)); }

/* The same node run twice: with `kinds` for its inputs, then with every input an activation
 * (the path without prepacking; for LSTM/GRU the reference loops). Outputs within tolerance. */
static void compare_paths(const char *what, graph *constant, graph *plain, double tolerance) {
  CHECK(graph_run(constant) == EDGE_OK, "%s (constant weights): %s", what, constant->error);
  CHECK(graph_run(plain) == EDGE_OK, "%s: %s", what, plain->error);
  for (int32_t o = 0; o < constant->node.num_outputs; ++o) {
    const edge_tensor *x = &constant->tensors[constant->outputs[o]], *y = &plain->tensors[plain->outputs[o]];
    double worst = 0;
    for (size_t i = 0; i < x->nbytes / sizeof(float); ++i) {
      const double diff = fabs((double)((float *)x->data)[i] - ((float *)y->data)[i]);
      if (!(diff <= worst)) worst = diff;
    }
    CHECK(x->nbytes == y->nbytes && worst <= tolerance, "%s output %d: paths differ by %g", what, o, worst);
  }
  /* and the constant path on 3 threads, bit for bit */
  const edge_tensor *out = &constant->tensors[constant->outputs[0]];
  void *single = malloc(out->nbytes + 1);
  memcpy(single, out->data, out->nbytes);
  edge_threadpool *pool = edge_threadpool_create(3);
  constant->ctx.pool = pool;
  constant->ctx.num_threads = 3;
  CHECK(graph_run(constant) == EDGE_OK, "%s on 3 threads: %s", what, constant->error);
  CHECK(memcmp(single, constant->tensors[constant->outputs[0]].data, out->nbytes) == 0,
        "%s: 3 threads differ from 1", what);
  constant->ctx.pool = NULL;
  constant->ctx.num_threads = 1;
  edge_threadpool_free(pool);
  free(single);
}

static void test_recurrent_ops(void) {
  for (int trial = 0; trial < 8; ++trial) {
    const bool lstm = trial % 2 == 0;
    const int64_t seq = (int64_t)rnd_size(1, 6), batch = (int64_t)rnd_size(1, 3), input = (int64_t)rnd_size(1, 23),
                  hidden = (int64_t)rnd_size(1, 37), dirs = trial % 4 >= 2 ? 2 : 1, gates = lstm ? 4 : 3;
    const uint64_t seed = test_rng_state;
    graph graphs[2];
    for (int g = 0; g < 2; ++g) {
      test_rng_state = seed; /* same data in both */
      graph *gr = &graphs[g];
      const edge_tensor_kind kind = g == 0 ? EDGE_TENSOR_CONSTANT : EDGE_TENSOR_ACTIVATION;
      graph_init(gr, lstm ? EDGE_OP_LSTM : EDGE_OP_GRU);
      const int64_t x_shape[3] = {seq, batch, input}, w_shape[3] = {dirs, gates * hidden, input},
                    r_shape[3] = {dirs, gates * hidden, hidden}, b_shape[2] = {dirs, 2 * gates * hidden},
                    state_shape[3] = {dirs, batch, hidden}, p_shape[2] = {dirs, 3 * hidden};
      op_graph_input(gr, 3, x_shape, EDGE_TENSOR_ACTIVATION);
      op_graph_input(gr, 3, w_shape, kind);
      op_graph_input(gr, 3, r_shape, kind);
      op_graph_input(gr, trial % 3 == 2 ? -1 : 2, b_shape, kind);
      op_graph_input(gr, -1, NULL, kind); /* sequence_lens */
      op_graph_input(gr, 3, state_shape, EDGE_TENSOR_ACTIVATION);
      if (lstm) {
        op_graph_input(gr, 3, state_shape, EDGE_TENSOR_ACTIVATION);
        op_graph_input(gr, trial % 4 == 0 ? 2 : -1, p_shape, kind);
      }
      for (int o = 0; o < (lstm ? 3 : 2); ++o) op_graph_output(gr);
      gr->node.options.rnn.hidden_size = (int32_t)hidden;
      gr->node.options.rnn.direction = dirs == 2 ? EDGE_RNN_BIDIRECTIONAL : trial % 3 ? EDGE_RNN_FORWARD : EDGE_RNN_REVERSE;
      gr->node.options.rnn.clip = trial == 5 ? 0.5f : 0.0f;
      gr->node.options.rnn.linear_before_reset = trial % 4 == 1;
    }
    char what[64];
    snprintf(what, sizeof what, "%s seq=%lld batch=%lld input=%lld hidden=%lld dirs=%lld", lstm ? "LSTM" : "GRU",
             (long long)seq, (long long)batch, (long long)input, (long long)hidden, (long long)dirs);
    compare_paths(what, &graphs[0], &graphs[1], 1e-5 * (double)(input + hidden + 2) * (double)seq);
    graph_free(&graphs[0]);
    graph_free(&graphs[1]);
  }
}

/* FULLY_CONNECTED and BATCH_MATMUL with constant weights (packed at prepare) against the same
 * node with the weights as activations (packed per call); the double oracle for both lives in
 * test_ops_compute.c. */
static void test_prepacked_ops(void) {
  for (int trial = 0; trial < 6; ++trial) {
    const bool fc = trial < 3;
    const int64_t m = (int64_t)rnd_size(1, 40), k = (int64_t)rnd_size(1, 70), n = (int64_t)rnd_size(1, 90);
    const uint64_t seed = test_rng_state;
    graph graphs[2];
    for (int g = 0; g < 2; ++g) {
      test_rng_state = seed;
      graph *gr = &graphs[g];
      const edge_tensor_kind kind = g == 0 ? EDGE_TENSOR_CONSTANT : EDGE_TENSOR_ACTIVATION;
      graph_init(gr, fc ? EDGE_OP_FULLY_CONNECTED : EDGE_OP_BATCH_MATMUL);
      if (fc) {
        const int64_t x_shape[2] = {m, k}, w_shape[2] = {n, k};
        op_graph_input(gr, 2, x_shape, EDGE_TENSOR_ACTIVATION);
        op_graph_input(gr, 2, w_shape, kind);
        op_graph_input(gr, 1, &n, kind);
        gr->node.activation.op = trial == 1 ? EDGE_UNARY_RELU6 : EDGE_UNARY_HARD_SWISH;
      } else {
        const int64_t a_shape[3] = {3, m, k}, b_shape[3] = {trial == 3 ? 1 : 3, trial == 4 ? n : k, trial == 4 ? k : n};
        op_graph_input(gr, 3, a_shape, EDGE_TENSOR_ACTIVATION);
        op_graph_input(gr, trial == 3 ? 2 : 3, trial == 3 ? b_shape + 1 : b_shape, kind);
        gr->node.options.batch_matmul.transpose_b = trial == 4;
        gr->node.options.batch_matmul.transpose_a = false;
      }
      op_graph_output(gr);
    }
    char what[64];
    snprintf(what, sizeof what, "%s m=%lld k=%lld n=%lld", fc ? "FULLY_CONNECTED" : "BATCH_MATMUL", (long long)m,
             (long long)k, (long long)n);
    compare_paths(what, &graphs[0], &graphs[1], 0.0);
    graph_free(&graphs[0]);
    graph_free(&graphs[1]);
  }
}

void test_kernels_gemm(void) {
  rng_seed(0x9e3779b97f4a7c15ull);
  test_level_table();
  edge_threadpool *pools[3] = {edge_threadpool_create(1), edge_threadpool_create(2), edge_threadpool_create(3)};
  const edge_gemm_kernels *scalar = &edge_kernels_for(EDGE_ISA_SCALAR)->gemm;
  int levels = 0;
  for (int level = 0; level < EDGE_ISA_COUNT_; ++level) {
    const edge_kernel_config *config = edge_kernels_for((edge_isa_level)level);
    if (!config) continue;
    ++levels;
    const edge_gemm_kernels *k = &config->gemm;
    for (size_t i = 0; i < sizeof ragged_shapes / sizeof ragged_shapes[0]; ++i)
      test_shape(k, scalar, ragged_shapes[i], (int)(i % 8));
    for (int trial = 0; trial < 24; ++trial) {
      shape s = {rnd_size(1, 3 * k->mr + 1), rnd_size(1, 4 * k->nr + 3), rnd_size(0, 70)};
      test_shape(k, scalar, s, trial % 8);
    }
    test_activations(k);
    test_threads(k, pools);
  }
  for (int t = 0; t < 3; ++t) edge_threadpool_free(pools[t]);
  test_recurrent_ops();
  test_prepacked_ops();
}

/* Tests of the elementwise and data-movement reference kernels (binary, unary, where, cast,
 * transpose, concat, split, slice, gather, gather_elements, pad, resize, reshape, broadcast_to).
 *
 * Each test builds tensors and a node by hand, runs prepare and eval through the registration
 * table, and compares with a deliberately naive oracle: explicit multi-index arithmetic per output
 * element, written without the kernels' iterator, collapsing or lookup tables. Shapes are small,
 * random and odd-sized.  */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "op_harness.h"
#include "test.h"


/* ---- the one-node graph (op_harness.h) ---- */


static void fill_random(edge_tensor *t, float lo, float hi) {
  int64_t n = edge_num_elements(t->rank, t->shape);
  for (int64_t i = 0; i < n; ++i) {
    switch (t->dtype) {
      case EDGE_FLOAT32: ((float *)t->data)[i] = rnd_float(lo, hi); break;
      case EDGE_INT32: ((int32_t *)t->data)[i] = (int32_t)rnd_range((int64_t)lo, (int64_t)hi); break;
      case EDGE_INT64: ((int64_t *)t->data)[i] = rnd_range((int64_t)lo, (int64_t)hi); break;
      case EDGE_BOOL: ((uint8_t *)t->data)[i] = rnd() & 1; break;
      case EDGE_INT8: ((int8_t *)t->data)[i] = (int8_t)rnd_range(-128, 127); break;
      case EDGE_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)rnd_range(0, 255); break;
      case EDGE_FLOAT16: ((uint16_t *)t->data)[i] = edge_float_to_half(rnd_float(lo, hi)); break;
      case EDGE_FLOAT64: ((double *)t->data)[i] = rnd_float(lo, hi); break;
      default: memset((char *)t->data + i * (int64_t)edge_dtype_size(t->dtype), 0, edge_dtype_size(t->dtype)); break;
    }
  }
}

/* Element value of any dtype as double (for oracles that only compare). */
static double value_at(const edge_tensor *t, int64_t i) {
  switch (t->dtype) {
    case EDGE_FLOAT32: return ((const float *)t->data)[i];
    case EDGE_INT32: return ((const int32_t *)t->data)[i];
    case EDGE_INT64: return (double)((const int64_t *)t->data)[i];
    case EDGE_BOOL: case EDGE_UINT8: return ((const uint8_t *)t->data)[i];
    case EDGE_INT8: return ((const int8_t *)t->data)[i];
    case EDGE_FLOAT16: return edge_half_to_float(((const uint16_t *)t->data)[i]);
    case EDGE_FLOAT64: return ((const double *)t->data)[i];
    case EDGE_INT16: return ((const int16_t *)t->data)[i];
    case EDGE_UINT16: return ((const uint16_t *)t->data)[i];
    case EDGE_UINT32: return ((const uint32_t *)t->data)[i];
    case EDGE_UINT64: return (double)((const uint64_t *)t->data)[i];
    case EDGE_BFLOAT16: {
      uint32_t bits = (uint32_t)((const uint16_t *)t->data)[i] << 16;
      float f;
      memcpy(&f, &bits, 4);
      return f;
    }
    default: break; /* the narrow dtypes: test_narrow_codecs */
  }
  return 0;
}

/* Flat index of multi-index idx (of an output of rank out_rank) in a tensor of rank/shape
 * broadcast against it. */
static int64_t broadcast_flat(int32_t out_rank, const int64_t *idx, int32_t rank, const int64_t *shape) {
  int64_t flat = 0;
  for (int32_t d = 0; d < rank; ++d) {
    int64_t i = idx[d + out_rank - rank];
    flat = flat * shape[d] + (shape[d] == 1 ? 0 : i);
  }
  return flat;
}

static void unflatten(int64_t flat, int32_t rank, const int64_t *shape, int64_t *idx) {
  for (int32_t d = rank - 1; d >= 0; --d) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
}

static int64_t flatten(int32_t rank, const int64_t *shape, const int64_t *idx) {
  int64_t flat = 0;
  for (int32_t d = 0; d < rank; ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

/* A random output shape and two shapes that broadcast to it. */
static void random_broadcast_shapes(int32_t *rank, int64_t *shape, int32_t *ra, int64_t *sa, int32_t *rb,
                                    int64_t *sb) {
  *rank = (int32_t)rnd_range(0, 5);
  for (int32_t d = 0; d < *rank; ++d) shape[d] = rnd_range(1, 5);
  int32_t drop_a = (int32_t)rnd_range(0, *rank), drop_b = rnd() % 2 ? 0 : (int32_t)rnd_range(0, *rank);
  if (drop_a > 0 && drop_b > 0) drop_b = 0; /* one input has the output's rank */
  *ra = *rank - drop_a;
  *rb = *rank - drop_b;
  for (int32_t d = 0; d < *ra; ++d) sa[d] = rnd() % 3 == 0 ? 1 : shape[d + drop_a];
  for (int32_t d = 0; d < *rb; ++d) sb[d] = rnd() % 3 == 0 ? 1 : shape[d + drop_b];
  /* Keep the output shape what the inputs actually broadcast to. */
  for (int32_t d = 0; d < *rank; ++d) {
    int64_t da = d >= drop_a ? sa[d - drop_a] : 1, db = d >= drop_b ? sb[d - drop_b] : 1;
    shape[d] = da > db ? da : db;
  }
}

/* ---- BINARY ---- */

static double float_oracle(edge_binary_kind op, float a, float b) {
  switch (op) {
    case EDGE_BINARY_ADD: return (float)(a + b);
    case EDGE_BINARY_SUB: return (float)(a - b);
    case EDGE_BINARY_MUL: return (float)(a * b);
    case EDGE_BINARY_DIV: return (float)(a / b);
    case EDGE_BINARY_POW: return pow(a, b);
    case EDGE_BINARY_MIN: return fmin(a, b);
    case EDGE_BINARY_MAX: return fmax(a, b);
    case EDGE_BINARY_MOD: return a - floor((double)a / b) * b;
    case EDGE_BINARY_FMOD: return fmod(a, b);
    case EDGE_BINARY_PRELU: return a >= 0 ? a : (float)(a * b);
    case EDGE_BINARY_EQUAL: return a == b;
    case EDGE_BINARY_LESS: return a < b;
    case EDGE_BINARY_LESS_EQUAL: return a <= b;
    case EDGE_BINARY_GREATER: return a > b;
    case EDGE_BINARY_GREATER_EQUAL: return a >= b;
    default: return NAN;
  }
}

static int64_t int_oracle(edge_binary_kind op, int64_t a, int64_t b) {
  switch (op) {
    case EDGE_BINARY_ADD: return a + b;
    case EDGE_BINARY_SUB: return a - b;
    case EDGE_BINARY_MUL: return a * b;
    case EDGE_BINARY_DIV: return (int64_t)trunc((double)a / (double)b);
    case EDGE_BINARY_MIN: return a < b ? a : b;
    case EDGE_BINARY_MAX: return a > b ? a : b;
    case EDGE_BINARY_MOD: return (int64_t)(a - floor((double)a / (double)b) * b);
    case EDGE_BINARY_FMOD: return (int64_t)fmod((double)a, (double)b);
    case EDGE_BINARY_EQUAL: return a == b;
    case EDGE_BINARY_LESS: return a < b;
    case EDGE_BINARY_LESS_EQUAL: return a <= b;
    case EDGE_BINARY_GREATER: return a > b;
    case EDGE_BINARY_GREATER_EQUAL: return a >= b;
    case EDGE_BINARY_BITWISE_AND: return a & b;
    case EDGE_BINARY_BITWISE_OR: return a | b;
    case EDGE_BINARY_BITWISE_XOR: return a ^ b;
    /* The operands here are small (|a| <= 20, b < 32), so the shifts are exact products and floors. */
    case EDGE_BINARY_SHIFT_LEFT: return b < 0 ? 0 : a * ((int64_t)1 << b);
    case EDGE_BINARY_SHIFT_RIGHT: return b < 0 ? (a < 0 ? -1 : 0) : (int64_t)floor((double)a / ldexp(1.0, (int)b));
    default: return 0;
  }
}

static bool is_compare(edge_binary_kind op) { return op >= EDGE_BINARY_EQUAL && op <= EDGE_BINARY_GREATER_EQUAL; }

static void test_binary_random(void) {
  const edge_dtype dtypes[] = {EDGE_FLOAT32, EDGE_INT32, EDGE_INT64};
  for (int trial = 0; trial < 300; ++trial) {
    edge_dtype dtype = dtypes[trial % 3];
    edge_binary_kind op = (edge_binary_kind)rnd_range(0, EDGE_BINARY_COUNT_ - 1);
    if (op == EDGE_BINARY_AND || op == EDGE_BINARY_OR || op == EDGE_BINARY_XOR) continue;
    if (dtype != EDGE_FLOAT32 && (op == EDGE_BINARY_POW || op == EDGE_BINARY_PRELU)) continue;
    bool bitwise = op >= EDGE_BINARY_BITWISE_AND && op <= EDGE_BINARY_SHIFT_RIGHT;
    if (dtype == EDGE_FLOAT32 && bitwise) continue;
    int32_t rank, ra, rb;
    int64_t shape[8], sa[8], sb[8];
    random_broadcast_shapes(&rank, shape, &ra, sa, &rb, sb);
    graph g;
    graph_init(&g, EDGE_OP_BINARY);
    g.node.options.binary.op = op;
    int32_t a = add_tensor(&g, "a", dtype, ra, sa), b = add_tensor(&g, "b", dtype, rb, sb);
    int64_t none[8] = {0};
    int32_t y = add_tensor(&g, "y", is_compare(op) ? EDGE_BOOL : dtype, 0, none);
    graph_add_input(&g, a);
    graph_add_input(&g, b);
    graph_add_output(&g, y);
    bool divides = op == EDGE_BINARY_DIV || op == EDGE_BINARY_MOD || op == EDGE_BINARY_FMOD;
    fill_random(&g.tensors[a], -20, 20);
    fill_random(&g.tensors[b], divides ? 1 : -20, 20);
    if (op == EDGE_BINARY_POW) fill_random(&g.tensors[a], 0.1f, 3);
    if (divides) /* negative divisors too, never zero */
      for (int64_t i = 0; i < edge_num_elements(rb, sb); ++i)
        if (rnd() % 2) {
          if (dtype == EDGE_FLOAT32) ((float *)g.tensors[b].data)[i] *= -1;
          if (dtype == EDGE_INT32) ((int32_t *)g.tensors[b].data)[i] *= -1;
          if (dtype == EDGE_INT64) ((int64_t *)g.tensors[b].data)[i] *= -1;
        }
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "binary %s %s: %s", edge_binary_names[op], edge_dtype_name(dtype), g.error);
    if (status == EDGE_OK) {
      edge_tensor *ty = &g.tensors[y];
      CHECK(ty->rank == rank, "binary rank %d != %d", ty->rank, rank);
      int64_t n = edge_num_elements(rank, shape), idx[8];
      int bad = 0;
      for (int64_t i = 0; i < n && !bad; ++i) {
        unflatten(i, rank, shape, idx);
        int64_t ia = broadcast_flat(rank, idx, ra, sa), ib = broadcast_flat(rank, idx, rb, sb);
        double got = value_at(ty, i), want;
        if (dtype == EDGE_FLOAT32) {
          want = float_oracle(op, ((float *)g.tensors[a].data)[ia], ((float *)g.tensors[b].data)[ib]);
        } else {
          want = (double)int_oracle(op, (int64_t)value_at(&g.tensors[a], ia), (int64_t)value_at(&g.tensors[b], ib));
        }
        double tol = (op == EDGE_BINARY_POW || op == EDGE_BINARY_MOD) ? 1e-5 * (1 + fabs(want)) : 0;
        if (fabs(got - want) > tol) {
          bad = 1;
          CHECK(0, "binary %s %s at %lld: got %g want %g", edge_binary_names[op], edge_dtype_name(dtype),
                (long long)i, got, want);
        }
      }
    }
    graph_free(&g);
  }
}

static edge_status run_binary_1d(edge_binary_kind op, edge_dtype dtype, const void *a, const void *b, void *y,
                                 int64_t n, edge_unary_kind activation, char *error) {
  graph g;
  graph_init(&g, EDGE_OP_BINARY);
  g.node.options.binary.op = op;
  g.node.activation.op = activation;
  int64_t shape[1] = {n};
  size_t size = edge_dtype_size(dtype);
  int32_t ta = add_tensor(&g, "a", dtype, 1, shape), tb = add_tensor(&g, "b", dtype, 1, shape);
  edge_dtype out = is_compare(op) || op == EDGE_BINARY_AND || op == EDGE_BINARY_OR || op == EDGE_BINARY_XOR
                       ? EDGE_BOOL : dtype;
  int32_t ty = add_tensor(&g, "y", out, 1, shape);
  memcpy(g.tensors[ta].data, a, (size_t)n * size);
  memcpy(g.tensors[tb].data, b, (size_t)n * size);
  graph_add_input(&g, ta);
  graph_add_input(&g, tb);
  graph_add_output(&g, ty);
  edge_status status = graph_run(&g);
  if (status == EDGE_OK) memcpy(y, g.tensors[ty].data, (size_t)n * edge_dtype_size(out));
  if (error) snprintf(error, EDGE_ERROR_CAPACITY, "%s", g.error);
  graph_free(&g);
  return status;
}

static void test_binary_edges(void) {
  char error[EDGE_ERROR_CAPACITY];
  int32_t a[4] = {7, INT32_MIN, -7, 5}, b[4] = {-2, -1, 2, 0}, y[4];
  CHECK(run_binary_1d(EDGE_BINARY_DIV, EDGE_INT32, a, b, y, 4, EDGE_UNARY_IDENTITY, error) == EDGE_RUNTIME_ERROR,
        "int division by zero must fail");
  CHECK(strstr(error, "division by zero") != NULL, "message: %s", error);
  CHECK(run_binary_1d(EDGE_BINARY_DIV, EDGE_INT32, a, b, y, 3, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(y[0] == -3 && y[1] == INT32_MIN && y[2] == -3, "int div: %d %d %d", y[0], y[1], y[2]);
  CHECK(run_binary_1d(EDGE_BINARY_MOD, EDGE_INT32, a, b, y, 3, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(y[0] == -1 && y[1] == 0 && y[2] == 1, "int mod: %d %d %d", y[0], y[1], y[2]);
  CHECK(run_binary_1d(EDGE_BINARY_FMOD, EDGE_INT32, a, b, y, 3, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(y[0] == 1 && y[1] == 0 && y[2] == -1, "int fmod: %d %d %d", y[0], y[1], y[2]);
  int32_t big[2] = {INT32_MAX, INT32_MIN}, one[2] = {1, 1};
  CHECK(run_binary_1d(EDGE_BINARY_ADD, EDGE_INT32, big, one, y, 2, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(y[0] == INT32_MIN && y[1] == INT32_MIN + 1, "int add wraps: %d %d", y[0], y[1]);

  float fa[5] = {-3, -0.5f, 2, 9, NAN}, fb[5] = {1, 1, 1, 1, 1}, fy[5];
  CHECK(run_binary_1d(EDGE_BINARY_ADD, EDGE_FLOAT32, fa, fb, fy, 5, EDGE_UNARY_RELU6, error) == EDGE_OK, "%s", error);
  CHECK(fy[0] == 0 && fy[1] == 0.5f && fy[2] == 3 && fy[3] == 6 && isnan(fy[4]), "fused relu6: %g %g %g %g %g",
        fy[0], fy[1], fy[2], fy[3], fy[4]);
  CHECK(run_binary_1d(EDGE_BINARY_MAX, EDGE_FLOAT32, fa, fb, fy, 5, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(isnan(fy[4]) && fy[0] == 1, "max propagates NaN");

  uint8_t ba[4] = {0, 0, 1, 1}, bb[4] = {0, 1, 0, 1}, by[4];
  CHECK(run_binary_1d(EDGE_BINARY_XOR, EDGE_BOOL, ba, bb, by, 4, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(by[0] == 0 && by[1] == 1 && by[2] == 1 && by[3] == 0, "xor");
  CHECK(run_binary_1d(EDGE_BINARY_AND, EDGE_BOOL, ba, bb, by, 4, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(by[0] == 0 && by[1] == 0 && by[2] == 0 && by[3] == 1, "and");
  CHECK(run_binary_1d(EDGE_BINARY_OR, EDGE_BOOL, ba, bb, by, 4, EDGE_UNARY_IDENTITY, error) == EDGE_OK, "%s", error);
  CHECK(by[0] == 0 && by[1] == 1 && by[2] == 1 && by[3] == 1, "or");
  int32_t base[6] = {3, -2, 2, 1, -1, 5}, exponent[6] = {4, 3, -1, -5, -3, 0}, power[6];
  CHECK(run_binary_1d(EDGE_BINARY_POW, EDGE_INT32, base, exponent, power, 6, EDGE_UNARY_IDENTITY, error) == EDGE_OK,
        "%s", error);
  CHECK(power[0] == 81 && power[1] == -8 && power[2] == 0 && power[3] == 1 && power[4] == -1 && power[5] == 1,
        "int pow: %d %d %d %d %d %d", power[0], power[1], power[2], power[3], power[4], power[5]);

  /* shapes that do not broadcast */
  graph g;
  graph_init(&g, EDGE_OP_BINARY);
  int64_t s3[1] = {3}, s4[1] = {4}, none[1] = {0};
  graph_add_input(&g, add_tensor(&g, "three", EDGE_FLOAT32, 1, s3));
  graph_add_input(&g, add_tensor(&g, "four", EDGE_FLOAT32, 1, s4));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 0, none));
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "broadcast"), "[3] + [4]: %s", g.error);
  graph_free(&g);
}

/* ---- UNARY ---- */

static double unary_oracle(edge_unary_kind op, double x, double alpha, double beta) {
  switch (op) {
    case EDGE_UNARY_IDENTITY: return x;
    case EDGE_UNARY_RELU: return fmax(x, 0);
    case EDGE_UNARY_RELU6: return fmin(fmax(x, 0), 6);
    case EDGE_UNARY_CLIP: return fmin(fmax(x, alpha), beta);
    case EDGE_UNARY_LEAKY_RELU: return x >= 0 ? x : alpha * x;
    case EDGE_UNARY_ELU: return x >= 0 ? x : alpha * (exp(x) - 1);
    case EDGE_UNARY_SIGMOID: return 1 / (1 + exp(-x));
    case EDGE_UNARY_TANH: return tanh(x);
    case EDGE_UNARY_HARD_SIGMOID: return fmax(0, fmin(1, alpha * x + beta));
    case EDGE_UNARY_HARD_SWISH: return x * fmax(0, fmin(1, x / 6 + 0.5));
    case EDGE_UNARY_GELU: return x * 0.5 * (1 + erf(x / sqrt(2)));
    case EDGE_UNARY_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * pow(x, 3))));
    case EDGE_UNARY_ERF: return erf(x);
    case EDGE_UNARY_EXP: return exp(x);
    case EDGE_UNARY_LOG: return log(x);
    case EDGE_UNARY_SQRT: return sqrt(x);
    case EDGE_UNARY_RSQRT: return 1 / sqrt(x);
    case EDGE_UNARY_RECIPROCAL: return 1 / x;
    case EDGE_UNARY_NEG: return -x;
    case EDGE_UNARY_ABS: return fabs(x);
    case EDGE_UNARY_FLOOR: return floor(x);
    case EDGE_UNARY_CEIL: return ceil(x);
    case EDGE_UNARY_ROUND: { /* half to even, by hand */
      double f = floor(x), r = x - f;
      if (r > 0.5) return f + 1;
      if (r < 0.5) return f;
      return fmod(f, 2) == 0 ? f : f + 1;
    }
    case EDGE_UNARY_SIGN: return x > 0 ? 1 : (x < 0 ? -1 : 0);
    case EDGE_UNARY_SOFTPLUS: return log(1 + exp(x));
    case EDGE_UNARY_SIN: return sin(x);
    case EDGE_UNARY_COS: return cos(x);
    case EDGE_UNARY_SQUARE: return x * x;
    case EDGE_UNARY_ASIN: return asin(x);
    case EDGE_UNARY_ACOS: return acos(x);
    case EDGE_UNARY_ATAN: return atan(x);
    case EDGE_UNARY_SILU: return x / (1 + exp(-x));
    default: return NAN;
  }
}

static void test_unary(void) {
  for (int op = 0; op < EDGE_UNARY_COUNT_; ++op) {
    if (op == EDGE_UNARY_NOT || op == EDGE_UNARY_IS_NAN || op == EDGE_UNARY_IS_INF) continue;
    graph g;
    graph_init(&g, EDGE_OP_UNARY);
    g.node.options.unary.op = (edge_unary_kind)op;
    g.node.options.unary.alpha = op == EDGE_UNARY_CLIP ? -1.5f : 0.3f;
    g.node.options.unary.beta = op == EDGE_UNARY_CLIP ? 2.25f : 0.4f;
    int64_t shape[3] = {3, 5, 7}, none[1] = {0};
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 3, shape);
    bool positive = op == EDGE_UNARY_LOG || op == EDGE_UNARY_SQRT || op == EDGE_UNARY_RSQRT;
    bool unit = op == EDGE_UNARY_ASIN || op == EDGE_UNARY_ACOS;
    fill_random(&g.tensors[x], positive ? 0.05f : unit ? -1 : -8, unit ? 1 : 8);
    float *xs = g.tensors[x].data;
    if (op == EDGE_UNARY_ROUND) { xs[0] = 0.5f; xs[1] = 1.5f; xs[2] = 2.5f; xs[3] = -0.5f; xs[4] = -2.5f; }
    int32_t y = add_tensor(&g, "y", EDGE_FLOAT32, 0, none);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "unary %s: %s", edge_unary_names[op], g.error);
    if (status == EDGE_OK) {
      int bad = 0;
      for (int64_t i = 0; i < 105 && !bad; ++i) {
        double want = unary_oracle((edge_unary_kind)op, xs[i], g.node.options.unary.alpha, g.node.options.unary.beta);
        double got = ((float *)g.tensors[y].data)[i];
        if (fabs(got - want) > 2e-6 * (1 + fabs(want))) {
          bad = 1;
          CHECK(0, "unary %s(%.9g): got %.9g want %.9g", edge_unary_names[op], xs[i], got, want);
        }
      }
    }
    graph_free(&g);
  }
  /* stability at the extremes */
  CHECK(edge_unary_float(EDGE_UNARY_SIGMOID, -1000.0f, 0, 0) == 0.0f, "sigmoid(-1000)");
  CHECK(edge_unary_float(EDGE_UNARY_SIGMOID, 1000.0f, 0, 0) == 1.0f, "sigmoid(1000)");
  CHECK(edge_unary_float(EDGE_UNARY_SOFTPLUS, 1000.0f, 0, 0) == 1000.0f, "softplus(1000)");
  CHECK(edge_unary_float(EDGE_UNARY_SOFTPLUS, -1000.0f, 0, 0) == 0.0f, "softplus(-1000)");
  CHECK(isnan(edge_unary_float(EDGE_UNARY_RELU, NAN, 0, 0)), "relu keeps NaN");

  /* integer NEG/ABS/SIGN, NOT, IS_NAN */
  graph g;
  graph_init(&g, EDGE_OP_UNARY);
  g.node.options.unary.op = EDGE_UNARY_ABS;
  int64_t shape[1] = {4}, none[1] = {0};
  int32_t x = add_tensor(&g, "x", EDGE_INT32, 1, shape), y = add_tensor(&g, "y", EDGE_INT32, 0, none);
  int32_t values[4] = {-3, 4, INT32_MIN, 0};
  memcpy(g.tensors[x].data, values, sizeof values);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_OK, "abs int32: %s", g.error);
  int32_t *out = g.tensors[y].data;
  CHECK(out[0] == 3 && out[1] == 4 && out[2] == INT32_MIN && out[3] == 0, "abs int32: %d %d %d %d", out[0], out[1],
        out[2], out[3]);
  graph_free(&g);

  graph_init(&g, EDGE_OP_UNARY);
  g.node.options.unary.op = EDGE_UNARY_IS_NAN;
  x = add_tensor(&g, "x", EDGE_FLOAT32, 1, shape);
  y = add_tensor(&g, "y", EDGE_BOOL, 0, none);
  float fv[4] = {NAN, 1, INFINITY, -NAN};
  memcpy(g.tensors[x].data, fv, sizeof fv);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_OK, "is_nan: %s", g.error);
  uint8_t *b = g.tensors[y].data;
  CHECK(b[0] == 1 && b[1] == 0 && b[2] == 0 && b[3] == 1, "is_nan");
  graph_free(&g);

  graph_init(&g, EDGE_OP_UNARY);
  g.node.options.unary.op = EDGE_UNARY_SIGMOID;
  x = add_tensor(&g, "x", EDGE_INT32, 1, shape);
  y = add_tensor(&g, "y", EDGE_INT32, 0, none);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_UNSUPPORTED, "sigmoid of int32 is unsupported");
  graph_free(&g);
}

/* ---- WHERE ---- */

static void test_where(void) {
  for (int trial = 0; trial < 60; ++trial) {
    int32_t rank, ra, rb;
    int64_t shape[8], sa[8], sb[8];
    random_broadcast_shapes(&rank, shape, &ra, sa, &rb, sb);
    /* the condition takes another broadcastable shape: a suffix of the output with some 1s */
    int32_t rc = (int32_t)rnd_range(0, rank);
    int64_t sc[8];
    for (int32_t d = 0; d < rc; ++d) sc[d] = rnd() % 2 ? 1 : shape[d + rank - rc];
    edge_dtype dtype = trial % 2 ? EDGE_INT64 : EDGE_FLOAT32;
    graph g;
    graph_init(&g, EDGE_OP_WHERE);
    int64_t none[1] = {0};
    int32_t c = add_tensor(&g, "cond", EDGE_BOOL, rc, sc), a = add_tensor(&g, "a", dtype, ra, sa),
            b = add_tensor(&g, "b", dtype, rb, sb), y = add_tensor(&g, "y", dtype, 0, none);
    fill_random(&g.tensors[c], 0, 1);
    fill_random(&g.tensors[a], -100, 100);
    fill_random(&g.tensors[b], -100, 100);
    graph_add_input(&g, c);
    graph_add_input(&g, a);
    graph_add_input(&g, b);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "where: %s", g.error);
    if (status == EDGE_OK) {
      int64_t n = edge_num_elements(rank, shape), idx[8];
      int bad = 0;
      for (int64_t i = 0; i < n && !bad; ++i) {
        unflatten(i, rank, shape, idx);
        bool cond = ((uint8_t *)g.tensors[c].data)[broadcast_flat(rank, idx, rc, sc)];
        double want = cond ? value_at(&g.tensors[a], broadcast_flat(rank, idx, ra, sa))
                           : value_at(&g.tensors[b], broadcast_flat(rank, idx, rb, sb));
        if (value_at(&g.tensors[y], i) != want) {
          bad = 1;
          CHECK(0, "where at %lld", (long long)i);
        }
      }
    }
    graph_free(&g);
  }
}

/* ---- CAST ---- */

/* The narrow dtypes' codecs on values whose codes follow from the formats' definitions by hand
 * (tests/converter/test_onnx_narrow_dtypes.py sweeps every code against ml_dtypes). */
static void test_narrow_codecs(void) {
  const edge_cast_round_kind up = EDGE_CAST_ROUND_UP;
  struct { edge_dtype dtype; float value; bool saturate; uint8_t code; } encode[] = {
      {EDGE_FLOAT8_E4M3FN, 448.0f, false, 0x7e},    {EDGE_FLOAT8_E4M3FN, 464.0f, false, 0x7e}, /* tie to even */
      {EDGE_FLOAT8_E4M3FN, 480.0f, false, 0x7f},    {EDGE_FLOAT8_E4M3FN, 480.0f, true, 0x7e},
      {EDGE_FLOAT8_E4M3FN, -INFINITY, true, 0xfe},  {EDGE_FLOAT8_E4M3FN, INFINITY, false, 0x7f},
      {EDGE_FLOAT8_E4M3FN, 0.0029296875f, false, 0x02}, /* 1.5 * 2^-9 rounds to the even subnormal 2^-8 */
      {EDGE_FLOAT8_E4M3FN, -0.0f, false, 0x80},     {EDGE_FLOAT8_E4M3FNUZ, -0.0f, false, 0x00},
      {EDGE_FLOAT8_E4M3FNUZ, NAN, true, 0x80},      {EDGE_FLOAT8_E4M3FNUZ, 1e6f, false, 0x80},
      {EDGE_FLOAT8_E4M3FNUZ, 1e6f, true, 0x7f},     {EDGE_FLOAT8_E5M2, 57344.0f, false, 0x7b},
      {EDGE_FLOAT8_E5M2, 61440.0f, false, 0x7c},    {EDGE_FLOAT8_E5M2, 61440.0f, true, 0x7b},
      {EDGE_FLOAT8_E5M2, -INFINITY, false, 0xfc},   {EDGE_FLOAT8_E5M2FNUZ, -1e-9f, false, 0x00},
      {EDGE_FLOAT4_E2M1FN, 5.0f, false, 0x6},       {EDGE_FLOAT4_E2M1FN, -1e6f, false, 0xf},
      {EDGE_FLOAT4_E2M1FN, 0.25f, false, 0x0},      {EDGE_FLOAT4_E2M1FN, 0.75f, false, 0x2},
  };
  for (size_t i = 0; i < sizeof encode / sizeof encode[0]; ++i) {
    uint8_t code = edge_float_to_narrow(encode[i].dtype, encode[i].value, encode[i].saturate, up);
    CHECK(code == encode[i].code, "%s encode %g (saturate %d): 0x%02x, want 0x%02x", edge_dtype_name(encode[i].dtype),
          encode[i].value, encode[i].saturate, code, encode[i].code);
  }
  CHECK(edge_narrow_to_float(EDGE_FLOAT8_E4M3FN, 0x01) == ldexpf(1.0f, -9), "e4m3fn smallest subnormal");
  CHECK(edge_narrow_to_float(EDGE_FLOAT8_E4M3FN, 0x7e) == 448.0f && isnan(edge_narrow_to_float(EDGE_FLOAT8_E4M3FN, 0xff)),
        "e4m3fn largest and NaN");
  CHECK(isnan(edge_narrow_to_float(EDGE_FLOAT8_E4M3FNUZ, 0x80)) && edge_narrow_to_float(EDGE_FLOAT8_E4M3FNUZ, 0x7f) == 240.0f,
        "e4m3fnuz NaN and largest");
  CHECK(isinf(edge_narrow_to_float(EDGE_FLOAT8_E5M2, 0xfc)) && edge_narrow_to_float(EDGE_FLOAT8_E5M2FNUZ, 0x7f) == 57344.0f,
        "e5m2 infinity, e5m2fnuz largest");
  CHECK(edge_narrow_to_float(EDGE_FLOAT4_E2M1FN, 0x7) == 6.0f && edge_narrow_to_float(EDGE_FLOAT4_E2M1FN, 0x9) == -0.5f,
        "e2m1fn");
  CHECK(edge_narrow_to_float(EDGE_FLOAT8_E8M0FNU, 127) == 1.0f && edge_narrow_to_float(EDGE_FLOAT8_E8M0FNU, 0) == ldexpf(1.0f, -127),
        "e8m0 powers");
  CHECK(edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 1.5f, true, EDGE_CAST_ROUND_UP) == 128 &&
        edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 1.5f, true, EDGE_CAST_ROUND_DOWN) == 127 &&
        edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 1.4f, true, EDGE_CAST_ROUND_NEAREST) == 127 &&
        edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 1.5f, true, EDGE_CAST_ROUND_NEAREST) == 128, "e8m0 rounding modes");
  CHECK(edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 3e38f, true, up) == 254 &&
        edge_float_to_narrow(EDGE_FLOAT8_E8M0FNU, 3e38f, false, up) == 255, "e8m0 saturation");
  CHECK(edge_narrow_int_from_float(EDGE_INT4, 7.9f) == 7 && edge_narrow_int_from_float(EDGE_INT4, 8.0f) == 0 &&
        edge_narrow_int_from_float(EDGE_INT4, -8.5f) == 0x8 && edge_narrow_int_from_float(EDGE_UINT2, 3.9f) == 3 &&
        edge_narrow_int_from_float(EDGE_UINT2, 4.0f) == 0 && edge_narrow_int_from_float(EDGE_INT2, NAN) == 0,
        "packed integers from float");
  CHECK(edge_narrow_int_from_code(EDGE_INT4, 0x8) == -8 && edge_narrow_int_from_code(EDGE_UINT4, 0x8) == 8 &&
        edge_narrow_int_from_code(EDGE_INT2, 0x3) == -1, "packed integers decode");
  uint8_t bytes[2] = {0xff, 0xff};
  for (int64_t i = 0; i < 3; ++i) edge_packed_set(bytes, i, 4, (uint8_t)(i + 1));
  CHECK(bytes[0] == 0x21 && (bytes[1] & 0x0f) == 0x03 && edge_packed_get(bytes, 2, 4) == 3, "nibbles low first: %02x %02x",
        bytes[0], bytes[1]);
  bytes[0] = 0;
  for (int64_t i = 0; i < 4; ++i) edge_packed_set(bytes, i, 2, (uint8_t)i);
  CHECK(bytes[0] == 0xe4, "2-bit elements low first: %02x", bytes[0]);
  CHECK(edge_tensor_bytes(EDGE_INT4, 5) == 3 && edge_tensor_bytes(EDGE_UINT2, 5) == 2 && edge_tensor_bytes(EDGE_INT2, 4) == 1 &&
        edge_tensor_bytes(EDGE_FLOAT8_E5M2, 5) == 5 && edge_dtype_size(EDGE_INT4) == 0 && edge_dtype_bits(EDGE_UINT2) == 2,
        "packed sizes");
}

static void test_cast(void) {
  const edge_dtype all[] = {EDGE_FLOAT32, EDGE_FLOAT16, EDGE_INT8,   EDGE_UINT8,  EDGE_INT32,  EDGE_INT64,   EDGE_BOOL,
                            EDGE_FLOAT64, EDGE_INT16,   EDGE_UINT16, EDGE_UINT32, EDGE_UINT64, EDGE_BFLOAT16};
  const int count = (int)(sizeof all / sizeof all[0]);
  for (int from = 0; from < count; ++from) {
    for (int to = 0; to < count; ++to) {
      bool from_float = all[from] <= EDGE_FLOAT16 || all[from] == EDGE_FLOAT64 || all[from] == EDGE_BFLOAT16;
      bool to_float = all[to] <= EDGE_FLOAT16 || all[to] == EDGE_FLOAT64 || all[to] == EDGE_BFLOAT16;
      bool unsigned_from = all[from] == EDGE_UINT8 || all[from] == EDGE_UINT16 || all[from] == EDGE_UINT32 ||
                           all[from] == EDGE_UINT64;
      bool unsigned_to = all[to] == EDGE_UINT8 || all[to] == EDGE_UINT16 || all[to] == EDGE_UINT32 ||
                         all[to] == EDGE_UINT64;
      graph g;
      graph_init(&g, EDGE_OP_CAST);
      int64_t shape[2] = {3, 111}, none[1] = {0};
      int32_t x = add_tensor(&g, "x", all[from], 2, shape), y = add_tensor(&g, "y", all[to], 0, none);
      /* values every target can hold exactly: small integers, halves for float targets */
      int64_t n = 333;
      for (int64_t i = 0; i < n; ++i) {
        int64_t v = rnd_range(unsigned_from || unsigned_to ? 0 : -100, 100);
        if (all[from] == EDGE_BOOL || all[to] == EDGE_BOOL) v = rnd_range(0, 1);
        double dv = (double)v + ((from_float && rnd() % 2) ? 0.5 * (v >= 0 ? 1 : -1) : 0);
        switch (all[from]) {
          case EDGE_FLOAT32: ((float *)g.tensors[x].data)[i] = (float)dv; break;
          case EDGE_FLOAT16: ((uint16_t *)g.tensors[x].data)[i] = edge_float_to_half((float)dv); break;
          case EDGE_INT8: ((int8_t *)g.tensors[x].data)[i] = (int8_t)v; break;
          case EDGE_UINT8: case EDGE_BOOL: ((uint8_t *)g.tensors[x].data)[i] = (uint8_t)v; break;
          case EDGE_INT32: ((int32_t *)g.tensors[x].data)[i] = (int32_t)v; break;
          case EDGE_INT64: ((int64_t *)g.tensors[x].data)[i] = v; break;
          case EDGE_FLOAT64: ((double *)g.tensors[x].data)[i] = dv; break;
          case EDGE_INT16: ((int16_t *)g.tensors[x].data)[i] = (int16_t)v; break;
          case EDGE_UINT16: ((uint16_t *)g.tensors[x].data)[i] = (uint16_t)v; break;
          case EDGE_UINT32: ((uint32_t *)g.tensors[x].data)[i] = (uint32_t)v; break;
          case EDGE_UINT64: ((uint64_t *)g.tensors[x].data)[i] = (uint64_t)v; break;
          case EDGE_BFLOAT16: {
            float f = (float)dv;
            uint32_t bits;
            memcpy(&bits, &f, 4);
            ((uint16_t *)g.tensors[x].data)[i] = (uint16_t)(bits >> 16);
            break;
          }
          default: break; /* not in this test's list */
        }
      }
      graph_add_input(&g, x);
      graph_add_output(&g, y);
      edge_status status = graph_run(&g);
      CHECK(status == EDGE_OK, "cast %s -> %s: %s", edge_dtype_name(all[from]), edge_dtype_name(all[to]), g.error);
      int bad = 0;
      for (int64_t i = 0; i < n && status == EDGE_OK && !bad; ++i) {
        double v = value_at(&g.tensors[x], i), want;
        if (all[to] == EDGE_BOOL) want = v != 0;
        else if (to_float) want = v;
        else want = trunc(v);
        double got = value_at(&g.tensors[y], i);
        if (got != want) {
          bad = 1;
          CHECK(0, "cast %s -> %s of %g: got %g want %g", edge_dtype_name(all[from]), edge_dtype_name(all[to]), v,
                got, want);
        }
      }
      graph_free(&g);
    }
  }
  /* values a C conversion would leave undefined get the documented result */
  graph g;
  graph_init(&g, EDGE_OP_CAST);
  int64_t shape[1] = {6}, none[1] = {0};
  int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 1, shape), y = add_tensor(&g, "y", EDGE_INT32, 0, none);
  float special[6] = {NAN, INFINITY, -INFINITY, 3e9f, -3e9f, -2.9f};
  memcpy(g.tensors[x].data, special, sizeof special);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_OK, "cast specials: %s", g.error);
  int32_t *out = g.tensors[y].data;
  CHECK(out[0] == 0 && out[1] == INT32_MAX && out[2] == INT32_MIN && out[3] == INT32_MAX && out[4] == INT32_MIN &&
            out[5] == -2,
        "cast specials: %d %d %d %d %d %d", out[0], out[1], out[2], out[3], out[4], out[5]);
  graph_free(&g);
}

/* ---- TRANSPOSE ---- */

static void test_transpose(void) {
  for (int trial = 0; trial < 80; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 6), perm[8];
    int64_t shape[8], none[1] = {0};
    for (int32_t d = 0; d < rank; ++d) {
      shape[d] = rnd_range(1, 5);
      perm[d] = d;
    }
    for (int32_t d = rank - 1; d > 0; --d) {
      int32_t j = (int32_t)rnd_range(0, d), t = perm[d];
      perm[d] = perm[j];
      perm[j] = t;
    }
    edge_dtype dtype = trial % 3 == 0 ? EDGE_UINT8 : (trial % 3 == 1 ? EDGE_FLOAT32 : EDGE_INT64);
    graph g;
    graph_init(&g, EDGE_OP_TRANSPOSE);
    g.node.options.transpose.rank = rank;
    memcpy(g.node.options.transpose.perm, perm, sizeof perm);
    int32_t x = add_tensor(&g, "x", dtype, rank, shape), y = add_tensor(&g, "y", dtype, 0, none);
    fill_random(&g.tensors[x], -50, 50);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "transpose: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    edge_tensor *ty = &g.tensors[y];
    int bad = 0;
    for (int32_t d = 0; d < rank; ++d)
      if (ty->shape[d] != shape[perm[d]]) bad = 1;
    CHECK(!bad, "transpose shape");
    int64_t n = edge_num_elements(rank, shape), out_idx[8], in_idx[8];
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, ty->shape, out_idx);
      for (int32_t d = 0; d < rank; ++d) in_idx[perm[d]] = out_idx[d];
      if (value_at(ty, i) != value_at(&g.tensors[x], flatten(rank, shape, in_idx))) {
        bad = 1;
        CHECK(0, "transpose value at %lld", (long long)i);
      }
    }
    graph_free(&g);
  }
  graph g;
  graph_init(&g, EDGE_OP_TRANSPOSE);
  g.node.options.transpose.rank = 3;
  g.node.options.transpose.perm[0] = 0;
  g.node.options.transpose.perm[1] = 2;
  g.node.options.transpose.perm[2] = 2;
  int64_t shape[3] = {2, 3, 4}, none[1] = {0};
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 3, shape));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 0, none));
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "permutation"), "bad perm: %s", g.error);
  graph_free(&g);
}

/* ---- CONCAT / SPLIT ---- */

static void test_concat_split(void) {
  for (int trial = 0; trial < 40; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(0, rank - 1), pieces = (int32_t)rnd_range(1, 4);
    int64_t shape[8], sizes[4], total = 0, none[1] = {0};
    for (int32_t d = 0; d < rank; ++d) shape[d] = rnd_range(1, 4);
    graph g;
    graph_init(&g, EDGE_OP_CONCAT);
    g.node.options.axis.axis = trial % 2 ? axis : axis - rank; /* negative axes too */
    int32_t inputs[4];
    for (int32_t p = 0; p < pieces; ++p) {
      sizes[p] = rnd_range(0, 3);
      total += sizes[p];
      int64_t s[8];
      memcpy(s, shape, sizeof s);
      s[axis] = sizes[p];
      inputs[p] = add_tensor(&g, "piece", EDGE_FLOAT32, rank, s);
      fill_random(&g.tensors[inputs[p]], -9, 9);
      graph_add_input(&g, inputs[p]);
    }
    int32_t y = add_tensor(&g, "y", EDGE_FLOAT32, 0, none);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "concat: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    edge_tensor *ty = &g.tensors[y];
    CHECK(ty->shape[axis] == total, "concat size");
    int64_t n = edge_num_elements(rank, ty->shape), idx[8];
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, ty->shape, idx);
      int32_t p = 0;
      while (idx[axis] >= sizes[p]) idx[axis] -= sizes[p++];
      const edge_tensor *src = &g.tensors[inputs[p]];
      if (value_at(ty, i) != value_at(src, flatten(rank, src->shape, idx))) {
        bad = 1;
        CHECK(0, "concat value at %lld", (long long)i);
      }
    }
    /* split the result back along the same axis */
    graph s;
    graph_init(&s, EDGE_OP_SPLIT);
    s.node.options.axis.axis = axis;
    int32_t x = add_tensor(&s, "joined", EDGE_FLOAT32, rank, ty->shape);
    memcpy(s.tensors[x].data, ty->data, ty->nbytes);
    graph_add_input(&s, x);
    int32_t outs[4];
    for (int32_t p = 0; p < pieces; ++p) {
      outs[p] = add_tensor(&s, "part", EDGE_FLOAT32, rank, g.tensors[inputs[p]].shape);
      graph_add_output(&s, outs[p]);
    }
    status = graph_run(&s);
    CHECK(status == EDGE_OK, "split: %s", s.error);
    for (int32_t p = 0; p < pieces && status == EDGE_OK; ++p)
      CHECK(memcmp(s.tensors[outs[p]].data, g.tensors[inputs[p]].data, g.tensors[inputs[p]].nbytes) == 0,
            "split piece %d differs from the concat input", p);
    graph_free(&s);
    graph_free(&g);
  }
  graph g;
  graph_init(&g, EDGE_OP_SPLIT);
  int64_t shape[2] = {2, 5}, part[2] = {2, 2};
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 2, shape));
  graph_add_output(&g, add_tensor(&g, "p0", EDGE_FLOAT32, 2, part));
  graph_add_output(&g, add_tensor(&g, "p1", EDGE_FLOAT32, 2, part));
  g.node.options.axis.axis = 1;
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "sum to 4"), "split sizes: %s", g.error);
  graph_free(&g);
}

/* ---- SLICE ---- */

/* The source coordinates an ONNX slice of one dimension reads, spelled out from the spec. */
static int64_t slice_coordinates(int64_t dim, int64_t start, int64_t end, int64_t step, int64_t *out) {
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = start < 0 ? 0 : (start > dim ? dim : start);
    end = end < 0 ? 0 : (end > dim ? dim : end);
  } else {
    start = start < 0 ? 0 : (start > dim - 1 ? dim - 1 : start);
    end = end < -1 ? -1 : (end > dim - 1 ? dim - 1 : end);
  }
  int64_t n = 0;
  for (int64_t i = start; step > 0 ? i < end : i > end; i += step) out[n++] = i;
  return n;
}

static void test_slice(void) {
  for (int trial = 0; trial < 200; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 4);
    int64_t shape[8], none[1] = {0}, coords[8][64], counts[8];
    graph g;
    graph_init(&g, EDGE_OP_SLICE);
    edge_slice_options *o = &g.node.options.slice;
    o->rank = rank;
    for (int32_t d = 0; d < rank; ++d) {
      shape[d] = rnd_range(1, 7);
      o->starts[d] = rnd_range(-9, 9);
      o->ends[d] = rnd() % 5 == 0 ? (rnd() % 2 ? INT64_MAX : INT64_MIN) : rnd_range(-9, 9);
      o->steps[d] = rnd_range(1, 3) * (rnd() % 2 ? 1 : -1);
      counts[d] = slice_coordinates(shape[d], o->starts[d], o->ends[d], o->steps[d], coords[d]);
    }
    int32_t x = add_tensor(&g, "x", EDGE_INT32, rank, shape), y = add_tensor(&g, "y", EDGE_INT32, 0, none);
    fill_random(&g.tensors[x], -1000, 1000);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "slice: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    edge_tensor *ty = &g.tensors[y];
    int bad = 0;
    for (int32_t d = 0; d < rank; ++d)
      if (ty->shape[d] != counts[d]) bad = 1;
    CHECK(!bad, "slice shape (trial %d)", trial);
    int64_t n = edge_num_elements(rank, counts), idx[8], src[8];
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, counts, idx);
      for (int32_t d = 0; d < rank; ++d) src[d] = coords[d][idx[d]];
      if (value_at(ty, i) != value_at(&g.tensors[x], flatten(rank, shape, src))) {
        bad = 1;
        CHECK(0, "slice value at %lld (trial %d)", (long long)i, trial);
      }
    }
    graph_free(&g);
  }
}

/* ---- GATHER / GATHER_ELEMENTS ---- */

static void test_gather(void) {
  for (int trial = 0; trial < 60; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(0, rank - 1);
    int32_t irank = (int32_t)rnd_range(0, 2);
    int64_t shape[8], ishape[8], none[1] = {0};
    for (int32_t d = 0; d < rank; ++d) shape[d] = rnd_range(1, 5);
    for (int32_t d = 0; d < irank; ++d) ishape[d] = rnd_range(1, 4);
    edge_dtype itype = trial % 2 ? EDGE_INT32 : EDGE_INT64;
    graph g;
    graph_init(&g, EDGE_OP_GATHER);
    g.node.options.axis.axis = axis;
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, rank, shape), ix = add_tensor(&g, "idx", itype, irank, ishape),
            y = add_tensor(&g, "y", EDGE_FLOAT32, 0, none);
    fill_random(&g.tensors[x], -9, 9);
    fill_random(&g.tensors[ix], (float)-shape[axis], (float)(shape[axis] - 1));
    graph_add_input(&g, x);
    graph_add_input(&g, ix);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "gather: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    edge_tensor *ty = &g.tensors[y];
    CHECK(ty->rank == rank - 1 + irank, "gather rank");
    int64_t n = edge_num_elements(ty->rank, ty->shape), idx[8], src[8];
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, ty->rank, ty->shape, idx);
      for (int32_t d = 0; d < axis; ++d) src[d] = idx[d];
      int64_t index = (int64_t)value_at(&g.tensors[ix], flatten(irank, ishape, idx + axis));
      src[axis] = index < 0 ? index + shape[axis] : index;
      for (int32_t d = axis + 1; d < rank; ++d) src[d] = idx[d - 1 + irank];
      if (value_at(ty, i) != value_at(&g.tensors[x], flatten(rank, shape, src))) {
        bad = 1;
        CHECK(0, "gather value at %lld", (long long)i);
      }
    }
    /* an index one past the end is reported, not read */
    int64_t count = edge_num_elements(irank, ishape);
    if (itype == EDGE_INT32) ((int32_t *)g.tensors[ix].data)[count - 1] = (int32_t)shape[axis];
    else ((int64_t *)g.tensors[ix].data)[count - 1] = shape[axis];
    status = edge_op_lookup(EDGE_OP_GATHER)->eval(&g.ctx, &g.node);
    CHECK(status == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "gather bad index: %s", g.error);
    graph_free(&g);
  }

  for (int trial = 0; trial < 60; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(0, rank - 1);
    int64_t shape[8], ishape[8], none[1] = {0};
    for (int32_t d = 0; d < rank; ++d) {
      shape[d] = rnd_range(1, 5);
      ishape[d] = d == axis ? rnd_range(1, 6) : rnd_range(1, shape[d]);
    }
    graph g;
    graph_init(&g, EDGE_OP_GATHER_ELEMENTS);
    g.node.options.axis.axis = axis;
    int32_t x = add_tensor(&g, "x", EDGE_INT64, rank, shape), ix = add_tensor(&g, "idx", EDGE_INT32, rank, ishape),
            y = add_tensor(&g, "y", EDGE_INT64, 0, none);
    fill_random(&g.tensors[x], -99, 99);
    fill_random(&g.tensors[ix], (float)-shape[axis], (float)(shape[axis] - 1));
    graph_add_input(&g, x);
    graph_add_input(&g, ix);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "gather_elements: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    int64_t n = edge_num_elements(rank, ishape), idx[8];
    int bad = 0;
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, ishape, idx);
      int64_t index = (int64_t)value_at(&g.tensors[ix], i);
      idx[axis] = index < 0 ? index + shape[axis] : index;
      if (value_at(&g.tensors[y], i) != value_at(&g.tensors[x], flatten(rank, shape, idx))) {
        bad = 1;
        CHECK(0, "gather_elements value at %lld", (long long)i);
      }
    }
    ((int32_t *)g.tensors[ix].data)[0] = (int32_t)(-shape[axis] - 1);
    status = edge_op_lookup(EDGE_OP_GATHER_ELEMENTS)->eval(&g.ctx, &g.node);
    CHECK(status == EDGE_RUNTIME_ERROR, "gather_elements bad index: %s", g.error);
    graph_free(&g);
  }
}

/* ---- PAD ---- */

/* NumPy's pad modes for one coordinate, by repeated reflection (valid for pad < dim, or <= dim
 * in symmetric mode, whose mirror lies half a cell further out). */
static int64_t pad_source(edge_pad_kind mode, int64_t c, int64_t dim) {
  if (c >= 0 && c < dim) return c;
  if (mode == EDGE_PAD_CONSTANT) return -1;
  if (mode == EDGE_PAD_EDGE) return c < 0 ? 0 : dim - 1;
  const bool symmetric = mode == EDGE_PAD_SYMMETRIC;
  const int64_t near = symmetric ? -1 : 0, far = symmetric ? 2 * dim - 1 : 2 * dim - 2;
  while (c < 0 || c >= dim) c = c < 0 ? near - c : far - c;
  return c;
}


/* A 1-D pad of a 3-element tensor by `amount` at pads[slot] (0: before, 1: after) in `mode`,
 * which prepare must refuse. */
static void expect_pad_refused(edge_pad_kind mode, int slot, int64_t amount, const char *what) {
  graph g;
  graph_init(&g, EDGE_OP_PAD);
  int64_t shape[1] = {3}, none[1] = {0};
  g.node.options.pad.mode = mode;
  g.node.options.pad.rank = 1;
  g.node.options.pad.pads[slot] = amount;
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 1, shape));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 0, none));
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL, "%s", what);
  graph_free(&g);
}
static void test_pad(void) {
  for (int trial = 0; trial < 120; ++trial) {
    int32_t rank = (int32_t)rnd_range(1, 4);
    edge_pad_kind mode = (edge_pad_kind)(trial % EDGE_PAD_COUNT_);
    int64_t shape[8], out_shape[8], none[1] = {0};
    graph g;
    graph_init(&g, EDGE_OP_PAD);
    edge_pad_options *o = &g.node.options.pad;
    o->mode = mode;
    o->rank = rank;
    o->value = 2.5f;
    for (int32_t d = 0; d < rank; ++d) {
      shape[d] = rnd_range(2, 5);
      int64_t limit = mode == EDGE_PAD_REFLECT ? shape[d] - 1 : mode == EDGE_PAD_SYMMETRIC ? shape[d] : 3;
      o->pads[d] = rnd_range(-1, limit);
      o->pads[rank + d] = rnd_range(-1, limit);
      out_shape[d] = shape[d] + o->pads[d] + o->pads[rank + d];
    }
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, rank, shape), y = add_tensor(&g, "y", EDGE_FLOAT32, 0, none);
    fill_random(&g.tensors[x], -9, 9);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "pad %s: %s", edge_pad_names[mode], g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    int64_t n = edge_num_elements(rank, out_shape), idx[8];
    int bad = 0;
    for (int32_t d = 0; d < rank; ++d)
      if (g.tensors[y].shape[d] != out_shape[d]) bad = 1;
    CHECK(!bad, "pad shape");
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, out_shape, idx);
      double want = 2.5;
      bool constant = false;
      for (int32_t d = 0; d < rank; ++d) {
        idx[d] = pad_source(mode, idx[d] - o->pads[d], shape[d]);
        if (idx[d] < 0) constant = true;
      }
      if (!constant) want = value_at(&g.tensors[x], flatten(rank, shape, idx));
      if (value_at(&g.tensors[y], i) != want) {
        bad = 1;
        CHECK(0, "pad %s value at %lld", edge_pad_names[mode], (long long)i);
      }
    }
    graph_free(&g);
  }
  expect_pad_refused(EDGE_PAD_REFLECT, 0, 3, "reflect pad 3 of dim 3 must fail");
  expect_pad_refused(EDGE_PAD_SYMMETRIC, 1, 4, "symmetric pad 4 of dim 3 must fail");
}

/* ---- RESIZE ---- */

static edge_status run_resize_1d(edge_resize_kind mode, edge_coord_kind coord, edge_nearest_kind nearest,
                                 const float *x, int64_t in, float *y, int64_t out, float scale) {
  graph g;
  graph_init(&g, EDGE_OP_RESIZE);
  edge_resize_options *o = &g.node.options.resize;
  o->mode = mode;
  o->coordinate_mode = coord;
  o->nearest_mode = nearest;
  o->rank = 1;
  o->scales[0] = scale;
  int64_t si[1] = {in}, so[1] = {out};
  int32_t tx = add_tensor(&g, "x", EDGE_FLOAT32, 1, si), ty = add_tensor(&g, "y", EDGE_FLOAT32, 1, so);
  memcpy(g.tensors[tx].data, x, (size_t)in * sizeof *x);
  graph_add_input(&g, tx);
  graph_add_output(&g, ty);
  edge_status status = graph_run(&g);
  if (status == EDGE_OK) memcpy(y, g.tensors[ty].data, (size_t)out * sizeof *y);
  graph_free(&g);
  return status;
}

static bool close_all(const float *a, const float *b, int n) {
  for (int i = 0; i < n; ++i)
    if (fabsf(a[i] - b[i]) > 1e-5f) return false;
  return true;
}

static void test_resize(void) {
  /* Hand-computed from the ONNX formulas. */
  float x4[4] = {0, 1, 2, 3}, y[8];
  CHECK(run_resize_1d(EDGE_RESIZE_LINEAR, EDGE_COORD_HALF_PIXEL, 0, x4, 4, y, 8, 2.0f) == EDGE_OK, "resize");
  float half_pixel[8] = {0, 0.25f, 0.75f, 1.25f, 1.75f, 2.25f, 2.75f, 3};
  CHECK(close_all(y, half_pixel, 8), "linear half_pixel x2: %g %g %g %g ...", y[0], y[1], y[2], y[3]);
  float x2[2] = {0, 1}, align[3] = {0, 0.5f, 1};
  CHECK(run_resize_1d(EDGE_RESIZE_LINEAR, EDGE_COORD_ALIGN_CORNERS, 0, x2, 2, y, 3, 0) == EDGE_OK, "resize");
  CHECK(close_all(y, align, 3), "linear align_corners: %g %g %g", y[0], y[1], y[2]);
  CHECK(run_resize_1d(EDGE_RESIZE_LINEAR, EDGE_COORD_ASYMMETRIC, 0, x4, 4, y, 8, 2.0f) == EDGE_OK, "resize");
  float asym[8] = {0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3};
  CHECK(close_all(y, asym, 8), "linear asymmetric");
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_ASYMMETRIC, EDGE_NEAREST_FLOOR, x4, 4, y, 8, 2.0f) == EDGE_OK,
        "resize");
  float nearest_floor[8] = {0, 0, 1, 1, 2, 2, 3, 3};
  CHECK(close_all(y, nearest_floor, 8), "nearest floor asymmetric");
  /* half_pixel x2, round_prefer_ceil: sources -0.25, 0.25, 0.75, 1.25 ... */
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_HALF_PIXEL, EDGE_NEAREST_ROUND_PREFER_CEIL, x4, 4, y, 8,
                      2.0f) == EDGE_OK, "resize");
  float nearest_half[8] = {0, 0, 1, 1, 2, 2, 3, 3};
  CHECK(close_all(y, nearest_half, 8), "nearest half_pixel");
  /* downsample by 3 -> 1.5 with asymmetric: scale 0.5, sources 0, 2 */
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_ASYMMETRIC, EDGE_NEAREST_ROUND_PREFER_FLOOR, x4, 4, y, 2,
                      0.5f) == EDGE_OK, "resize");
  CHECK(y[0] == 0 && y[1] == 2, "nearest down: %g %g", y[0], y[1]);
  /* ties: asymmetric x2 puts odd outputs exactly halfway between samples */
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_ASYMMETRIC, EDGE_NEAREST_ROUND_PREFER_FLOOR, x4, 4, y, 8,
                      2.0f) == EDGE_OK, "resize");
  float prefer_floor[8] = {0, 0, 1, 1, 2, 2, 3, 3};
  CHECK(close_all(y, prefer_floor, 8), "nearest prefer floor ties");
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_ASYMMETRIC, EDGE_NEAREST_ROUND_PREFER_CEIL, x4, 4, y, 8,
                      2.0f) == EDGE_OK, "resize");
  float prefer_ceil[8] = {0, 1, 1, 2, 2, 3, 3, 3};
  CHECK(close_all(y, prefer_ceil, 8), "nearest prefer ceil ties: %g %g %g %g", y[0], y[1], y[2], y[3]);
  CHECK(run_resize_1d(EDGE_RESIZE_NEAREST, EDGE_COORD_ASYMMETRIC, EDGE_NEAREST_CEIL, x4, 4, y, 8, 2.0f) == EDGE_OK,
        "resize");
  CHECK(close_all(y, prefer_ceil, 8), "nearest ceil");

  /* 2-d linear on an NHWC tensor against a separable oracle built from the 1-d results above */
  for (int trial = 0; trial < 20; ++trial) {
    int64_t n = 2, h = rnd_range(1, 4), w = rnd_range(2, 5), c = rnd_range(1, 3), oh = rnd_range(1, 7),
            ow = rnd_range(1, 7);
    edge_coord_kind coord = (edge_coord_kind)(trial % 4);
    graph g;
    graph_init(&g, EDGE_OP_RESIZE);
    edge_resize_options *o = &g.node.options.resize;
    o->mode = EDGE_RESIZE_LINEAR;
    o->coordinate_mode = coord;
    int64_t si[4] = {n, h, w, c}, so[4] = {n, oh, ow, c};
    int32_t tx = add_tensor(&g, "x", EDGE_FLOAT32, 4, si), ty = add_tensor(&g, "y", EDGE_FLOAT32, 4, so);
    fill_random(&g.tensors[tx], -5, 5);
    graph_add_input(&g, tx);
    graph_add_output(&g, ty);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "resize 2d: %s", g.error);
    if (status != EDGE_OK) { graph_free(&g); continue; }
    int bad = 0;
    const float *xs = g.tensors[tx].data, *ys = g.tensors[ty].data;
    for (int64_t b = 0; b < n && !bad; ++b)
      for (int64_t i = 0; i < oh && !bad; ++i)
        for (int64_t j = 0; j < ow && !bad; ++j)
          for (int64_t k = 0; k < c && !bad; ++k) {
            /* interpolate along w for two source rows, then along h */
            double sh, sw;
            double scale_h = (double)oh / h, scale_w = (double)ow / w;
            switch (coord) {
              case EDGE_COORD_HALF_PIXEL: sh = (i + 0.5) / scale_h - 0.5; sw = (j + 0.5) / scale_w - 0.5; break;
              case EDGE_COORD_ASYMMETRIC: sh = i / scale_h; sw = j / scale_w; break;
              case EDGE_COORD_ALIGN_CORNERS:
                sh = oh > 1 ? i * (h - 1.0) / (oh - 1.0) : 0;
                sw = ow > 1 ? j * (w - 1.0) / (ow - 1.0) : 0;
                break;
              default:
                sh = oh > 1 ? (i + 0.5) / scale_h - 0.5 : 0;
                sw = ow > 1 ? (j + 0.5) / scale_w - 0.5 : 0;
            }
            sh = fmin(fmax(sh, 0), h - 1);
            sw = fmin(fmax(sw, 0), w - 1);
            int64_t h0 = (int64_t)floor(sh), w0 = (int64_t)floor(sw);
            int64_t h1 = h0 + 1 < h ? h0 + 1 : h - 1, w1 = w0 + 1 < w ? w0 + 1 : w - 1;
            double fh = sh - h0, fw = sw - w0;
#define X(hh, ww) xs[((b * h + (hh)) * w + (ww)) * c + k]
            double top = X(h0, w0) * (1 - fw) + X(h0, w1) * fw, bottom = X(h1, w0) * (1 - fw) + X(h1, w1) * fw;
#undef X
            double want = top * (1 - fh) + bottom * fh, got = ys[((b * oh + i) * ow + j) * c + k];
            if (fabs(got - want) > 1e-5) {
              bad = 1;
              CHECK(0, "resize 2d %s at (%lld,%lld,%lld,%lld): got %g want %g", edge_coord_names[coord], (long long)b,
                    (long long)i, (long long)j, (long long)k, got, want);
            }
          }
    graph_free(&g);
  }
}

/* The tables a RESIZE keeps (two indices and a weight per output position of each resized dimension)
 * are bounded: an empty output builds none however long its other dimensions are, a dimension past
 * the element limit is refused even beside an empty one, and the tables count against memory_limit. */
static edge_status run_resize_declared(int32_t rank, const int64_t *in, const int64_t *out, uint64_t memory_limit,
                                       size_t *plan_bytes) {
  graph g;
  graph_init(&g, EDGE_OP_RESIZE);
  g.node.options.resize.mode = EDGE_RESIZE_LINEAR;
  g.ctx.memory_limit = memory_limit;
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, rank, in));
  int32_t ty = add_tensor(&g, "y", EDGE_FLOAT32, rank, in);
  for (int32_t d = 0; d < rank; ++d) g.tensors[ty].declared_shape[d] = out[d];
  graph_add_output(&g, ty);
  edge_status status = graph_run(&g);
  *plan_bytes = g.node.plan_bytes;
  if (status != EDGE_OK) CHECK(strstr(g.error, "RESIZE") || strstr(g.error, "'y'"), "message: %s", g.error);
  graph_free(&g);
  return status;
}

static void test_resize_tables_are_bounded(void) {
  size_t plan_bytes = 1;
  int64_t empty_in[2] = {0, 4}, empty_long[2] = {0, (int64_t)1 << 40}, empty_too_long[2] = {0, (int64_t)1 << 50};
  CHECK_STATUS(run_resize_declared(2, empty_in, empty_long, 0, &plan_bytes), EDGE_OK);
  CHECK(plan_bytes == 0, "an empty output kept %zu bytes of tables", plan_bytes);
  CHECK_STATUS(run_resize_declared(2, empty_in, empty_too_long, 0, &plan_bytes), EDGE_INVALID_MODEL);
  int64_t in[1] = {4}, out[1] = {65536};
  /* 256 KiB of output, 1.25 MiB of tables */
  CHECK_STATUS(run_resize_declared(1, in, out, 512 << 10, &plan_bytes), EDGE_OUT_OF_MEMORY);
  CHECK_STATUS(run_resize_declared(1, in, out, 2 << 20, &plan_bytes), EDGE_OK);
  CHECK(plan_bytes == 65536 * (2 * sizeof(int64_t) + sizeof(float)), "tables of %zu bytes reported", plan_bytes);
}

/* ---- RESHAPE / BROADCAST_TO ---- */

static void test_reshape_broadcast_to(void) {
  graph g;
  graph_init(&g, EDGE_OP_RESHAPE);
  int64_t si[3] = {2, 3, 4}, so[2] = {6, 4}, bad_shape[2] = {5, 5};
  int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 3, si), y = add_tensor(&g, "y", EDGE_FLOAT32, 2, so);
  fill_random(&g.tensors[x], -1, 1);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_OK, "reshape: %s", g.error);
  CHECK(g.tensors[y].rank == 2 && g.tensors[y].shape[0] == 6 && memcmp(g.tensors[y].data, g.tensors[x].data, 96) == 0,
        "reshape copies");
  g.tensors[y].declared_shape[0] = bad_shape[0];
  g.tensors[y].declared_shape[1] = bad_shape[1];
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "[2, 3, 4]") && strstr(g.error, "[5, 5]"),
        "reshape count mismatch: %s", g.error);
  graph_free(&g);

  for (int trial = 0; trial < 40; ++trial) {
    int32_t rank, ra, rb;
    int64_t shape[8], sa[8], sb[8];
    random_broadcast_shapes(&rank, shape, &ra, sa, &rb, sb);
    graph_init(&g, EDGE_OP_BROADCAST_TO);
    x = add_tensor(&g, "x", EDGE_INT32, ra, sa);
    y = add_tensor(&g, "y", EDGE_INT32, rank, shape);
    fill_random(&g.tensors[x], -9, 9);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "broadcast_to: %s", g.error);
    int64_t n = edge_num_elements(rank, shape), idx[8];
    int bad = status != EDGE_OK;
    for (int64_t i = 0; i < n && !bad; ++i) {
      unflatten(i, rank, shape, idx);
      if (value_at(&g.tensors[y], i) != value_at(&g.tensors[x], broadcast_flat(rank, idx, ra, sa))) {
        bad = 1;
        CHECK(0, "broadcast_to value at %lld", (long long)i);
      }
    }
    graph_free(&g);
  }
}

/* ---- thread splits ---- */

/* Runs a node with no pool and with a 3-thread pool on inputs large enough to be split; the
 * outputs must be bit-identical. */
static void run_split_compare(edge_op_kind opcode, const edge_options *options, edge_unary_kind activation,
                              int32_t num_inputs, const edge_dtype *dtypes, const int32_t *ranks,
                              const int64_t (*shapes)[8], edge_dtype out_dtype, const char *what) {
  void *results[2] = {NULL, NULL};
  size_t nbytes[2] = {0, 0};
  edge_threadpool *pool = edge_threadpool_create(3);
  for (int pass = 0; pass < 2; ++pass) {
    uint64_t saved = test_rng_state;
    graph g;
    graph_init(&g, opcode);
    g.node.options = *options;
    g.node.activation.op = activation;
    if (pass == 1) {
      g.ctx.pool = pool;
      g.ctx.num_threads = 3;
    }
    for (int32_t i = 0; i < num_inputs; ++i) {
      int32_t t = add_tensor(&g, "in", dtypes[i], ranks[i], shapes[i]);
      fill_random(&g.tensors[t], -4, 4);
      graph_add_input(&g, t);
    }
    int64_t none[1] = {0};
    int32_t y = add_tensor(&g, "y", out_dtype, 0, none);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "%s (pass %d): %s", what, pass, g.error);
    nbytes[pass] = g.tensors[y].nbytes;
    results[pass] = malloc(nbytes[pass]);
    memcpy(results[pass], g.tensors[y].data, nbytes[pass]);
    graph_free(&g);
    if (pass == 0) test_rng_state = saved;
  }
  CHECK(nbytes[0] == nbytes[1] && nbytes[0] > 0 && memcmp(results[0], results[1], nbytes[0]) == 0,
        "%s: threaded result differs from the single-threaded one", what);
  free(results[0]);
  free(results[1]);
  edge_threadpool_free(pool);
}

static void test_thread_splits(void) {
  edge_options options;
  memset(&options, 0, sizeof options);
  options.binary.op = EDGE_BINARY_MUL;
  const edge_dtype f2[2] = {EDGE_FLOAT32, EDGE_FLOAT32};
  const int32_t r2[2] = {3, 2};
  const int64_t bias[2][8] = {{7, 3001, 5}, {3001, 1}};
  run_split_compare(EDGE_OP_BINARY, &options, EDGE_UNARY_GELU, 2, f2, r2, bias, EDGE_FLOAT32, "binary mul + gelu");
  options.binary.op = EDGE_BINARY_LESS;
  run_split_compare(EDGE_OP_BINARY, &options, EDGE_UNARY_IDENTITY, 2, f2, r2, bias, EDGE_BOOL, "binary less");

  memset(&options, 0, sizeof options);
  options.unary.op = EDGE_UNARY_SIGMOID;
  const int32_t r1[1] = {2};
  const int64_t big[1][8] = {{301, 199}};
  run_split_compare(EDGE_OP_UNARY, &options, EDGE_UNARY_IDENTITY, 1, f2, r1, big, EDGE_FLOAT32, "unary sigmoid");
  memset(&options, 0, sizeof options);
  run_split_compare(EDGE_OP_CAST, &options, EDGE_UNARY_IDENTITY, 1, f2, r1, big, EDGE_INT8, "cast");

  memset(&options, 0, sizeof options);
  options.transpose.rank = 3;
  options.transpose.perm[0] = 2;
  options.transpose.perm[1] = 0;
  options.transpose.perm[2] = 1;
  const int32_t r3[1] = {3};
  const int64_t cube[1][8] = {{67, 131, 19}};
  run_split_compare(EDGE_OP_TRANSPOSE, &options, EDGE_UNARY_IDENTITY, 1, f2, r3, cube, EDGE_FLOAT32, "transpose");

  const edge_dtype where_types[3] = {EDGE_BOOL, EDGE_FLOAT32, EDGE_FLOAT32};
  const int32_t where_ranks[3] = {2, 3, 1};
  const int64_t where_shapes[3][8] = {{401, 1}, {3, 401, 57}, {57}};
  memset(&options, 0, sizeof options);
  run_split_compare(EDGE_OP_WHERE, &options, EDGE_UNARY_IDENTITY, 3, where_types, where_ranks, where_shapes,
                    EDGE_FLOAT32, "where");

  memset(&options, 0, sizeof options);
  options.resize.mode = EDGE_RESIZE_LINEAR;
  options.resize.rank = 4;
  options.resize.scales[0] = options.resize.scales[3] = 1;
  options.resize.scales[1] = options.resize.scales[2] = 2;
  const int32_t r4[1] = {4};
  const int64_t image[1][8] = {{1, 40, 50, 3}};
  run_split_compare(EDGE_OP_RESIZE, &options, EDGE_UNARY_IDENTITY, 1, f2, r4, image, EDGE_FLOAT32, "resize");
}

void test_ops_data(void) {
  rng_seed(0x9e3779b97f4a7c15ull);
  test_binary_random();
  test_binary_edges();
  test_unary();
  test_where();
  test_cast();
  test_narrow_codecs();
  test_transpose();
  test_concat_split();
  test_slice();
  test_gather();
  test_pad();
  test_resize();
  test_resize_tables_are_bounded();
  test_reshape_broadcast_to();
  test_thread_splits();
}

#ifdef EDGE_OPS_DATA_MAIN
int main(void) { return test_ops_data() ? 1 : 0; }
#endif

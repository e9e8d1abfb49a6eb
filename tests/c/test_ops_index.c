/* Tests of the selection and scan ops (trilu, cumsum, arg_max/arg_min, top_k, gather_nd, scatter_nd,
 * scatter_elements, non_max_suppression, roi_align, grid_sample): values against naive
 * oracles written per output element, the same bytes with one thread and with a pool of three,
 * and prepare's refusals of bad models (axes, k, ranks, dtypes) with a status and a message.
 *  */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "op_harness.h"
#include "test.h"



/* Small integers as floats, so sums are exact and ties are common. */
static void fill_small(edge_tensor *t) {
  int64_t n = edge_num_elements(t->rank, t->shape);
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = rnd_range(-3, 3);
    switch (t->dtype) {
      case EDGE_FLOAT32: ((float *)t->data)[i] = (float)v; break;
      case EDGE_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
      case EDGE_INT64: ((int64_t *)t->data)[i] = v; break;
      default: ((int8_t *)t->data)[i] = (int8_t)v; break;
    }
  }
}

static double value_at(const edge_tensor *t, int64_t i) {
  switch (t->dtype) {
    case EDGE_FLOAT32: return ((const float *)t->data)[i];
    case EDGE_INT32: return ((const int32_t *)t->data)[i];
    case EDGE_INT64: return (double)((const int64_t *)t->data)[i];
    default: return ((const int8_t *)t->data)[i];
  }
}

/* Runs g once with no pool and once with a pool of three threads; the outputs must be identical. */
static edge_status run_both(graph *g, const char *what) {
  edge_status status = graph_run(g);
  if (status != EDGE_OK) return status;
  int32_t n_out = g->node.num_outputs;
  void *first[4] = {NULL};
  for (int32_t o = 0; o < n_out && o < 4; ++o) {
    edge_tensor *t = &g->tensors[g->outputs[o]];
    first[o] = malloc(t->nbytes + 1);
    memcpy(first[o], t->data, t->nbytes);
  }
  g->ctx.pool = edge_threadpool_create(3);
  g->ctx.num_threads = 3;
  status = graph_run(g);
  CHECK(status == EDGE_OK, "%s with three threads: %s", what, g->error);
  for (int32_t o = 0; o < n_out && o < 4; ++o) {
    edge_tensor *t = &g->tensors[g->outputs[o]];
    CHECK(memcmp(first[o], t->data, t->nbytes) == 0, "%s: output %d differs between one and three threads", what, o);
    free(first[o]);
  }
  edge_threadpool_free(g->ctx.pool);
  g->ctx.pool = NULL;
  g->ctx.num_threads = 1;
  return status;
}

/* [outer, n, inner] around axis. */
static void split_axis(const edge_tensor *x, int32_t axis, int64_t *outer, int64_t *n, int64_t *inner) {
  *outer = edge_num_elements(axis, x->shape);
  *n = x->shape[axis];
  *inner = edge_num_elements(x->rank - axis - 1, x->shape + axis + 1);
}

static void random_shape(int32_t *rank, int64_t *shape) {
  *rank = (int32_t)rnd_range(1, 4);
  for (int32_t d = 0; d < *rank; ++d) shape[d] = rnd_range(1, d == *rank - 1 ? 300 : 7);
}

/* ---- trilu ---- */

static void test_trilu(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_TRILU);
    int32_t rank = (int32_t)rnd_range(2, 4);
    int64_t shape[EDGE_MAX_RANK];
    for (int32_t d = 0; d < rank; ++d) shape[d] = rnd_range(1, 9);
    edge_dtype dtype = trial % 3 == 0 ? EDGE_INT64 : EDGE_FLOAT32;
    int32_t x = add_tensor(&g, "x", dtype, rank, shape), y = add_tensor(&g, "y", dtype, rank, shape);
    fill_small(&g.tensors[x]);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    g.node.options.trilu.upper = trial % 2 == 0;
    g.node.options.trilu.k = trial == 7 ? INT64_MAX : trial == 8 ? INT64_MIN : rnd_range(-10, 10);
    edge_status status = run_both(&g, "trilu");
    CHECK(status == EDGE_OK, "trilu: %s", g.error);
    int64_t rows = shape[rank - 2], cols = shape[rank - 1], k = g.node.options.trilu.k;
    int64_t count = edge_num_elements(rank, shape);
    for (int64_t e = 0; e < count && status == EDGE_OK; ++e) {
      int64_t j = e % cols, i = (e / cols) % rows;
      /* In double, so the extreme k (INT64_MAX, INT64_MIN) compare without overflow. */
      bool keep = g.node.options.trilu.upper ? (double)(j - i) >= (double)k : (double)(j - i) <= (double)k;
      double want = keep ? value_at(&g.tensors[x], e) : 0.0;
      if (value_at(&g.tensors[y], e) != want) {
        CHECK(0, "trilu trial %d: element %lld is %g, expected %g (k %lld)", trial, (long long)e,
              value_at(&g.tensors[y], e), want, (long long)k);
        break;
      }
    }
    graph_free(&g);
  }
  graph g;
  graph_init(&g, EDGE_OP_TRILU);
  const int64_t one[1] = {5};
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 1, one));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 1, one));
  edge_status status = graph_run(&g);
  CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, "rank"), "trilu rank 1: %s", g.error);
  graph_free(&g);
  graph_init(&g, EDGE_OP_TRILU);
  const int64_t two[2] = {3, 3};
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 2, two));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_INT32, 2, two));
  status = graph_run(&g);
  CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, "int32"), "trilu dtype mismatch: %s", g.error);
  graph_free(&g);
}

/* ---- cumsum ---- */

static void test_cumsum(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_CUMSUM);
    int32_t rank;
    int64_t shape[EDGE_MAX_RANK];
    random_shape(&rank, shape);
    edge_dtype dtype = trial % 3 == 1 ? EDGE_INT32 : trial % 3 == 2 ? EDGE_INT64 : EDGE_FLOAT32;
    int32_t x = add_tensor(&g, "x", dtype, rank, shape), y = add_tensor(&g, "y", dtype, rank, shape);
    fill_small(&g.tensors[x]);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    int32_t axis = (int32_t)rnd_range(0, rank - 1);
    g.node.options.cumsum.axis = trial % 2 ? axis - rank : axis;
    g.node.options.cumsum.exclusive = rnd() % 2;
    g.node.options.cumsum.reverse = rnd() % 2;
    edge_status status = run_both(&g, "cumsum");
    CHECK(status == EDGE_OK, "cumsum: %s", g.error);
    int64_t outer, n, inner;
    split_axis(&g.tensors[x], axis, &outer, &n, &inner);
    for (int64_t o = 0; o < outer && status == EDGE_OK; ++o)
      for (int64_t c = 0; c < inner; ++c)
        for (int64_t i = 0; i < n; ++i) {
          double sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            bool in = g.node.options.cumsum.reverse ? j >= i : j <= i;
            if (g.node.options.cumsum.exclusive && j == i) in = false;
            if (in) sum += value_at(&g.tensors[x], (o * n + j) * inner + c);
          }
          double got = value_at(&g.tensors[y], (o * n + i) * inner + c);
          if (got != sum) {
            CHECK(0, "cumsum trial %d: [%lld, %lld, %lld] is %g, expected %g", trial, (long long)o, (long long)i,
                  (long long)c, got, sum);
            o = outer, c = inner, i = n;
          }
        }
    graph_free(&g);
  }
  graph g;
  graph_init(&g, EDGE_OP_CUMSUM);
  const int64_t shape[2] = {3, 4};
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 2, shape));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 2, shape));
  g.node.options.cumsum.axis = 2;
  edge_status status = graph_run(&g);
  CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, "axis 2"), "cumsum axis 2 of rank 2: %s", g.error);
  g.node.options.cumsum.axis = -3;
  status = graph_run(&g);
  CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, "axis -3"), "cumsum axis -3 of rank 2: %s", g.error);
  graph_free(&g);
  /* Integer sums past the range wrap (no undefined behaviour on model data). */
  graph_init(&g, EDGE_OP_CUMSUM);
  const int64_t three[1] = {3};
  int32_t wx = add_tensor(&g, "x", EDGE_INT32, 1, three), wy = add_tensor(&g, "y", EDGE_INT32, 1, three);
  int32_t *w = g.tensors[wx].data;
  w[0] = INT32_MAX, w[1] = 1, w[2] = -1;
  graph_add_input(&g, wx);
  graph_add_output(&g, wy);
  status = graph_run(&g);
  const int32_t *wrapped = g.tensors[wy].data;
  CHECK(status == EDGE_OK && wrapped[0] == INT32_MAX && wrapped[1] == INT32_MIN && wrapped[2] == INT32_MAX,
        "cumsum int32 wrap: %s", g.error);
  graph_free(&g);
  graph_init(&g, EDGE_OP_CUMSUM);
  graph_add_input(&g, add_tensor(&g, "x", EDGE_BOOL, 2, shape));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_BOOL, 2, shape));
  status = graph_run(&g);
  CHECK(status == EDGE_UNSUPPORTED && strstr(g.error, "bool"), "cumsum bool: %s", g.error);
  graph_free(&g);
}

/* ---- arg_max, arg_min ---- */

static void test_arg_reduce(void) {
  for (int trial = 0; trial < 48; ++trial) {
    bool is_max = trial % 2 == 0;
    graph g;
    graph_init(&g, is_max ? EDGE_OP_ARG_MAX : EDGE_OP_ARG_MIN);
    int32_t rank;
    int64_t shape[EDGE_MAX_RANK];
    random_shape(&rank, shape);
    edge_dtype dtype = trial % 3 == 1 ? EDGE_INT32 : trial % 3 == 2 ? EDGE_INT8 : EDGE_FLOAT32;
    edge_dtype index_dtype = trial % 4 < 2 ? EDGE_INT64 : EDGE_INT32;
    int32_t x = add_tensor(&g, "x", dtype, rank, shape), y = add_tensor(&g, "y", index_dtype, 0, shape);
    fill_small(&g.tensors[x]);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    int32_t axis = (int32_t)rnd_range(0, rank - 1);
    g.node.options.arg.axis = axis;
    g.node.options.arg.keepdims = rnd() % 2;
    g.node.options.arg.select_last_index = trial % 8 >= 4;
    edge_status status = run_both(&g, "arg");
    CHECK(status == EDGE_OK, "arg: %s", g.error);
    CHECK(g.tensors[y].rank == (g.node.options.arg.keepdims ? rank : rank - 1), "arg output rank %d",
          g.tensors[y].rank);
    int64_t outer, n, inner;
    split_axis(&g.tensors[x], axis, &outer, &n, &inner);
    for (int64_t p = 0; p < outer * inner && status == EDGE_OK; ++p) {
      int64_t o = p / inner, c = p % inner, want = 0;
      for (int64_t j = 1; j < n; ++j) {
        double v = value_at(&g.tensors[x], (o * n + j) * inner + c), b = value_at(&g.tensors[x], (o * n + want) * inner + c);
        if (is_max ? v > b : v < b) want = j;
        else if (v == b && g.node.options.arg.select_last_index) want = j;
      }
      int64_t got = index_dtype == EDGE_INT64 ? ((int64_t *)g.tensors[y].data)[p] : ((int32_t *)g.tensors[y].data)[p];
      if (got != want) {
        CHECK(0, "arg trial %d: position %lld is %lld, expected %lld", trial, (long long)p, (long long)got,
              (long long)want);
        break;
      }
    }
    graph_free(&g);
  }
  const int64_t shape[2] = {3, 4}, empty[2] = {3, 0};
  struct {
    const int64_t *shape;
    int32_t axis;
    edge_dtype x, y;
    edge_status status;
    const char *message;
  } bad[] = {
      {shape, 2, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "axis 2"},
      {shape, -3, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "axis -3"},
      {shape, 0, EDGE_FLOAT32, EDGE_FLOAT32, EDGE_INVALID_MODEL, "expected int64 or int32"},
      {shape, 0, EDGE_BOOL, EDGE_INT64, EDGE_UNSUPPORTED, "bool"},
      {empty, 1, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "empty"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_ARG_MAX);
    graph_add_input(&g, add_tensor(&g, "x", bad[i].x, 2, bad[i].shape));
    graph_add_output(&g, add_tensor(&g, "y", bad[i].y, 2, bad[i].shape));
    g.node.options.arg.axis = bad[i].axis;
    edge_status status = graph_run(&g);
    CHECK(status == bad[i].status && strstr(g.error, bad[i].message), "arg refusal %zu: %s", i, g.error);
    graph_free(&g);
  }
}

/* ---- top_k ---- */

static void test_top_k(void) {
  for (int trial = 0; trial < 48; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_TOP_K);
    int32_t rank;
    int64_t shape[EDGE_MAX_RANK];
    random_shape(&rank, shape);
    edge_dtype dtype = trial % 3 == 1 ? EDGE_INT64 : trial % 3 == 2 ? EDGE_INT8 : EDGE_FLOAT32;
    edge_dtype index_dtype = trial % 4 < 2 ? EDGE_INT64 : EDGE_INT32;
    int32_t x = add_tensor(&g, "x", dtype, rank, shape);
    int32_t values = add_tensor(&g, "values", dtype, 0, shape), indices = add_tensor(&g, "indices", index_dtype, 0, shape);
    fill_small(&g.tensors[x]);
    graph_add_input(&g, x);
    graph_add_output(&g, values);
    graph_add_output(&g, indices);
    int32_t axis = (int32_t)rnd_range(0, rank - 1);
    g.node.options.top_k.axis = trial % 2 ? axis - rank : axis;
    g.node.options.top_k.k = trial % 7 == 0 ? 0 : trial % 7 == 1 ? shape[axis] : rnd_range(0, shape[axis]);
    g.node.options.top_k.largest = trial % 4 != 3;
    g.node.options.top_k.sorted = true;
    edge_status status = run_both(&g, "top_k");
    CHECK(status == EDGE_OK, "top_k: %s", g.error);
    int64_t outer, n, inner, k = g.node.options.top_k.k;
    split_axis(&g.tensors[x], axis, &outer, &n, &inner);
    bool largest = g.node.options.top_k.largest;
    for (int64_t p = 0; p < outer * inner && status == EDGE_OK; ++p) {
      int64_t o = p / inner, c = p % inner;
      for (int64_t r = 0; r < k; ++r) {
        /* The element of rank r: the one with exactly r elements ahead of it (better value, or equal
         * value at a lower index). */
        int64_t want = -1;
        for (int64_t j = 0; j < n && want < 0; ++j) {
          double v = value_at(&g.tensors[x], (o * n + j) * inner + c);
          int64_t ahead = 0;
          for (int64_t m = 0; m < n; ++m) {
            double u = value_at(&g.tensors[x], (o * n + m) * inner + c);
            if ((largest ? u > v : u < v) || (u == v && m < j)) ++ahead;
          }
          if (ahead == r) want = j;
        }
        int64_t out = (o * k + r) * inner + c;
        int64_t got = index_dtype == EDGE_INT64 ? ((int64_t *)g.tensors[indices].data)[out]
                                                : ((int32_t *)g.tensors[indices].data)[out];
        double got_value = value_at(&g.tensors[values], out);
        if (got != want || got_value != value_at(&g.tensors[x], (o * n + want) * inner + c)) {
          CHECK(0, "top_k trial %d: row %lld rank %lld is index %lld value %g, expected index %lld", trial,
                (long long)p, (long long)r, (long long)got, got_value, (long long)want);
          p = outer * inner;
          break;
        }
      }
    }
    graph_free(&g);
  }
  const int64_t shape[2] = {3, 4};
  struct {
    int64_t k;
    int32_t axis;
    edge_dtype values, indices;
    edge_status status;
    const char *message;
  } bad[] = {
      {5, 1, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "k 5 is outside [0, 4]"},
      {-1, 1, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "k -1"},
      {2, 2, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "axis 2"},
      {2, -3, EDGE_FLOAT32, EDGE_INT64, EDGE_INVALID_MODEL, "axis -3"},
      {2, 1, EDGE_FLOAT32, EDGE_FLOAT32, EDGE_INVALID_MODEL, "expected int64 or int32"},
      {2, 1, EDGE_INT32, EDGE_INT64, EDGE_INVALID_MODEL, "values output is int32"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_TOP_K);
    graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 2, shape));
    graph_add_output(&g, add_tensor(&g, "values", bad[i].values, 2, shape));
    graph_add_output(&g, add_tensor(&g, "indices", bad[i].indices, 2, shape));
    g.node.options.top_k.k = bad[i].k;
    g.node.options.top_k.axis = bad[i].axis;
    edge_status status = graph_run(&g);
    CHECK(status == bad[i].status && strstr(g.error, bad[i].message), "top_k refusal %zu: %s", i, g.error);
    graph_free(&g);
  }
}

/* ---- gather_nd ---- */

static void test_gather_nd(void) {
  for (int trial = 0; trial < 40; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_GATHER_ND);
    int32_t r = (int32_t)rnd_range(1, 4), b = (int32_t)rnd_range(0, r - 1);
    int64_t shape[EDGE_MAX_RANK], ishape[EDGE_MAX_RANK];
    for (int32_t d = 0; d < r; ++d) shape[d] = rnd_range(1, 5);
    int64_t k = rnd_range(1, r - b);
    int32_t q = b + (int32_t)rnd_range(0, 2) + 1;
    for (int32_t d = 0; d < q - 1; ++d) ishape[d] = d < b ? shape[d] : rnd_range(1, 4);
    ishape[q - 1] = k;
    edge_dtype index_dtype = trial % 2 ? EDGE_INT32 : EDGE_INT64;
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, r, shape), ix = add_tensor(&g, "indices", index_dtype, q, ishape);
    int32_t y = add_tensor(&g, "y", EDGE_FLOAT32, 0, shape);
    edge_tensor *xt = &g.tensors[x], *it = &g.tensors[ix];
    for (int64_t i = 0; i < edge_num_elements(r, shape); ++i) ((float *)xt->data)[i] = (float)i;
    int64_t count = edge_num_elements(q, ishape);
    for (int64_t i = 0; i < count; ++i) {
      int64_t dim = shape[b + i % k], v = rnd_range(-dim, dim - 1);
      if (index_dtype == EDGE_INT64) ((int64_t *)it->data)[i] = v;
      else ((int32_t *)it->data)[i] = (int32_t)v;
    }
    g.node.options.gather_nd.batch_dims = b;
    graph_add_input(&g, x);
    graph_add_input(&g, ix);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "gather_nd: %s", g.error);
    CHECK(g.tensors[y].rank == q - 1 + r - b - (int32_t)k, "gather_nd rank %d", g.tensors[y].rank);
    /* Oracle: x holds its own flat offsets, so each output element must equal the offset of the
     * multi-index (batch..., wrapped tuple..., slice position...). */
    int64_t slice = edge_num_elements(r - b - (int32_t)k, shape + b + k), tuples = count / k;
    for (int64_t t = 0; t < tuples && status == EDGE_OK; ++t) {
      int64_t batch = t / (tuples / (edge_num_elements(b, shape) ? edge_num_elements(b, shape) : 1));
      int64_t offset = batch;
      for (int64_t j = 0; j < k; ++j) {
        int64_t dim = shape[b + j], v = index_dtype == EDGE_INT64 ? ((int64_t *)it->data)[t * k + j]
                                                                 : ((int32_t *)it->data)[t * k + j];
        offset = offset * dim + (v < 0 ? v + dim : v);
      }
      for (int64_t s = 0; s < slice; ++s) {
        float got = ((float *)g.tensors[y].data)[t * slice + s], want = (float)(offset * slice + s);
        if (got != want) {
          CHECK(0, "gather_nd trial %d: tuple %lld element %lld is %g, expected %g", trial, (long long)t,
                (long long)s, got, want);
          t = tuples;
          break;
        }
      }
    }
    if (trial % 5 == 0 && count) {
      int64_t bad = shape[b] + (trial % 2 ? 0 : 3);
      if (index_dtype == EDGE_INT64) ((int64_t *)it->data)[0] = trial % 10 ? bad : -bad - 1;
      else ((int32_t *)it->data)[0] = (int32_t)(trial % 10 ? bad : -bad - 1);
      status = graph_run(&g);
      CHECK(status == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "gather_nd bad index: %s", g.error);
    }
    graph_free(&g);
  }
  const int64_t data[3] = {2, 3, 4};
  struct {
    int32_t q;
    int64_t ishape[3];
    int32_t batch_dims;
    edge_dtype index_dtype;
    const char *message;
  } bad[] = {
      {2, {5, 4}, 0, EDGE_INT64, "do not fit"},
      {2, {5, 0}, 0, EDGE_INT64, "do not fit"},
      {2, {3, 1}, 1, EDGE_INT64, "batch dim 0"},
      {2, {2, 1}, 2, EDGE_INT64, "batch_dims 2"},
      {2, {2, 1}, 0, EDGE_FLOAT32, "expected int32 or int64"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_GATHER_ND);
    graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 3, data));
    graph_add_input(&g, add_tensor(&g, "indices", bad[i].index_dtype, bad[i].q, bad[i].ishape));
    graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 3, data));
    g.node.options.gather_nd.batch_dims = bad[i].batch_dims;
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, bad[i].message), "gather_nd refusal %zu: %s", i, g.error);
    graph_free(&g);
  }
}

/* ---- scatter_nd, scatter_elements ---- */

/* The oracle's reduction, in double on small integers (exact for every dtype tested). */
static double scatter_combine(double old, double update, edge_scatter_kind reduction) {
  switch (reduction) {
    case EDGE_SCATTER_ADD: return old + update;
    case EDGE_SCATTER_MUL: return old * update;
    case EDGE_SCATTER_MAX: return update > old ? update : old;
    case EDGE_SCATTER_MIN: return update < old ? update : old;
    default: return update;
  }
}

static void set_index(edge_tensor *t, int64_t i, int64_t v) {
  if (t->dtype == EDGE_INT64) ((int64_t *)t->data)[i] = v;
  else ((int32_t *)t->data)[i] = (int32_t)v;
}

static int64_t get_index(const edge_tensor *t, int64_t i) {
  return t->dtype == EDGE_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
}

/* Compares y with the expected values; reports the first difference. */
static void check_values(const edge_tensor *y, const double *want, int64_t n, const char *what, int trial) {
  for (int64_t i = 0; i < n; ++i) {
    if (value_at(y, i) != want[i]) {
      CHECK(0, "%s trial %d: element %lld is %g, expected %g", what, trial, (long long)i, value_at(y, i), want[i]);
      return;
    }
  }
  ++test_current_checks;
}

static void test_scatter_nd(void) {
  const edge_dtype dtypes[3] = {EDGE_FLOAT32, EDGE_INT32, EDGE_INT64};
  for (int trial = 0; trial < 60; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_SCATTER_ND);
    int32_t r = (int32_t)rnd_range(1, 4), q = (int32_t)rnd_range(1, 3);
    int64_t shape[EDGE_MAX_RANK], ishape[EDGE_MAX_RANK], ushape[EDGE_MAX_RANK];
    for (int32_t d = 0; d < r; ++d) shape[d] = rnd_range(1, 5);
    int64_t k = rnd_range(1, r);
    for (int32_t d = 0; d < q - 1; ++d) ishape[d] = rnd_range(1, 4);
    ishape[q - 1] = k;
    int32_t urank = 0;
    for (int32_t d = 0; d < q - 1; ++d) ushape[urank++] = ishape[d];
    for (int32_t d = (int32_t)k; d < r; ++d) ushape[urank++] = shape[d];
    edge_dtype dtype = dtypes[trial % 3];
    edge_scatter_kind reduction = (edge_scatter_kind)(trial % EDGE_SCATTER_COUNT_);
    edge_dtype index_dtype = trial % 2 ? EDGE_INT32 : EDGE_INT64;
    int32_t x = add_tensor(&g, "data", dtype, r, shape), ix = add_tensor(&g, "indices", index_dtype, q, ishape);
    int32_t u = add_tensor(&g, "updates", dtype, urank, ushape), y = add_tensor(&g, "y", dtype, 0, shape);
    fill_small(&g.tensors[x]);
    fill_small(&g.tensors[u]);
    edge_tensor *it = &g.tensors[ix];
    int64_t count = edge_num_elements(q, ishape), tuples = count / k;
    for (int64_t i = 0; i < count; ++i) set_index(it, i, rnd_range(-shape[i % k], shape[i % k] - 1));
    g.node.options.scatter.reduction = reduction;
    graph_add_input(&g, x);
    graph_add_input(&g, ix);
    graph_add_input(&g, u);
    graph_add_output(&g, y);
    edge_status status = run_both(&g, "scatter_nd");
    CHECK(status == EDGE_OK, "scatter_nd: %s", g.error);
    /* Oracle: start from data, apply each tuple's slice in order, element by element. */
    int64_t n = edge_num_elements(r, shape), slice = edge_num_elements(r - (int32_t)k, shape + k);
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; ++i) want[i] = value_at(&g.tensors[x], i);
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t offset = 0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t v = get_index(it, t * k + j);
        offset = offset * shape[j] + (v < 0 ? v + shape[j] : v);
      }
      for (int64_t s = 0; s < slice; ++s)
        want[offset * slice + s] = scatter_combine(want[offset * slice + s], value_at(&g.tensors[u], t * slice + s),
                                                   reduction);
    }
    if (status == EDGE_OK) check_values(&g.tensors[y], want, n, "scatter_nd", trial);
    free(want);
    if (trial % 4 == 0) {
      int64_t j = rnd_range(0, count - 1), dim = shape[j % k];
      set_index(it, j, trial % 8 ? dim : -dim - 1);
      status = graph_run(&g);
      CHECK(status == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "scatter_nd bad index: %s", g.error);
    }
    graph_free(&g);
  }
  struct {
    int32_t q, urank;
    int64_t ishape[3], ushape[3];
    edge_dtype index_dtype, dtype;
    edge_scatter_kind reduction;
    const char *message;
  } bad[] = {
      {2, 2, {2, 4}, {2, 3}, EDGE_INT64, EDGE_FLOAT32, EDGE_SCATTER_NONE, "do not fit"},
      {2, 2, {2, 1}, {2, 4}, EDGE_INT64, EDGE_FLOAT32, EDGE_SCATTER_NONE, "need indices.shape[:-1]"},
      {2, 1, {2, 1}, {2}, EDGE_INT64, EDGE_FLOAT32, EDGE_SCATTER_NONE, "need indices.shape[:-1]"},
      {2, 3, {2, 1}, {2, 3, 4}, EDGE_FLOAT32, EDGE_FLOAT32, EDGE_SCATTER_NONE, "expected int32 or int64"},
      {2, 3, {2, 1}, {2, 3, 4}, EDGE_INT64, EDGE_INT8, EDGE_SCATTER_ADD, "float32, int32 and int64 only"},
  };
  const int64_t data[3] = {2, 3, 4};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_SCATTER_ND);
    graph_add_input(&g, add_tensor(&g, "data", bad[i].dtype, 3, data));
    graph_add_input(&g, add_tensor(&g, "indices", bad[i].index_dtype, bad[i].q, bad[i].ishape));
    graph_add_input(&g, add_tensor(&g, "updates", bad[i].dtype, bad[i].urank, bad[i].ushape));
    graph_add_output(&g, add_tensor(&g, "y", bad[i].dtype, 3, data));
    g.node.options.scatter.reduction = bad[i].reduction;
    edge_status status = graph_run(&g);
    CHECK(status != EDGE_OK && strstr(g.error, bad[i].message), "scatter_nd refusal %zu: %s", i, g.error);
    graph_free(&g);
  }
}

static void test_scatter_elements(void) {
  const edge_dtype dtypes[3] = {EDGE_FLOAT32, EDGE_INT32, EDGE_INT64};
  for (int trial = 0; trial < 60; ++trial) {
    graph g;
    graph_init(&g, EDGE_OP_SCATTER_ELEMENTS);
    int32_t r = (int32_t)rnd_range(1, 4), axis = (int32_t)rnd_range(0, r - 1);
    int64_t shape[EDGE_MAX_RANK], ishape[EDGE_MAX_RANK];
    for (int32_t d = 0; d < r; ++d) {
      shape[d] = rnd_range(1, 5);
      ishape[d] = d == axis ? rnd_range(1, 6) : rnd_range(1, shape[d]);
    }
    edge_dtype dtype = dtypes[trial % 3];
    edge_scatter_kind reduction = (edge_scatter_kind)(trial % EDGE_SCATTER_COUNT_);
    edge_dtype index_dtype = trial % 2 ? EDGE_INT32 : EDGE_INT64;
    int32_t x = add_tensor(&g, "data", dtype, r, shape), ix = add_tensor(&g, "indices", index_dtype, r, ishape);
    int32_t u = add_tensor(&g, "updates", dtype, r, ishape), y = add_tensor(&g, "y", dtype, 0, shape);
    fill_small(&g.tensors[x]);
    fill_small(&g.tensors[u]);
    edge_tensor *it = &g.tensors[ix];
    int64_t count = edge_num_elements(r, ishape), dim = shape[axis];
    for (int64_t i = 0; i < count; ++i) set_index(it, i, rnd_range(-dim, dim - 1));
    g.node.options.scatter.axis = trial % 5 == 0 ? axis - r : axis;
    g.node.options.scatter.reduction = reduction;
    graph_add_input(&g, x);
    graph_add_input(&g, ix);
    graph_add_input(&g, u);
    graph_add_output(&g, y);
    edge_status status = run_both(&g, "scatter_elements");
    CHECK(status == EDGE_OK, "scatter_elements: %s", g.error);
    /* Oracle: unravel each position of indices, replace its axis coordinate, ravel into data. */
    int64_t n = edge_num_elements(r, shape);
    double *want = malloc((size_t)n * sizeof *want);
    for (int64_t i = 0; i < n; ++i) want[i] = value_at(&g.tensors[x], i);
    for (int64_t i = 0; i < count; ++i) {
      int64_t rest = i, coord[EDGE_MAX_RANK];
      for (int32_t d = r - 1; d >= 0; --d) {
        coord[d] = rest % ishape[d];
        rest /= ishape[d];
      }
      int64_t v = get_index(it, i);
      coord[axis] = v < 0 ? v + dim : v;
      int64_t offset = 0;
      for (int32_t d = 0; d < r; ++d) offset = offset * shape[d] + coord[d];
      want[offset] = scatter_combine(want[offset], value_at(&g.tensors[u], i), reduction);
    }
    if (status == EDGE_OK) check_values(&g.tensors[y], want, n, "scatter_elements", trial);
    free(want);
    if (trial % 4 == 0) {
      set_index(it, rnd_range(0, count - 1), trial % 8 ? dim : -dim - 1);
      status = graph_run(&g);
      CHECK(status == EDGE_RUNTIME_ERROR && strstr(g.error, "out of range"), "scatter_elements bad index: %s",
            g.error);
    }
    graph_free(&g);
  }
  struct {
    int32_t rank, axis;
    int64_t ishape[3], ushape[3];
    const char *message;
  } bad[] = {
      {2, 0, {2, 3}, {2, 3}, "must have one shape"},
      {3, 0, {2, 3, 4}, {2, 3, 3}, "must have one shape"},
      {3, 1, {2, 3, 5}, {2, 3, 5}, "within its dims off axis 1"},
      {3, 3, {2, 3, 4}, {2, 3, 4}, "axis 3 is out of range"},
      {3, -4, {2, 3, 4}, {2, 3, 4}, "axis -4 is out of range"},
  };
  const int64_t data[3] = {2, 3, 4};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_SCATTER_ELEMENTS);
    graph_add_input(&g, add_tensor(&g, "data", EDGE_FLOAT32, 3, data));
    graph_add_input(&g, add_tensor(&g, "indices", EDGE_INT64, bad[i].rank, bad[i].ishape));
    graph_add_input(&g, add_tensor(&g, "updates", EDGE_FLOAT32, 3, bad[i].ushape));
    graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 3, data));
    g.node.options.scatter.axis = bad[i].axis;
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, bad[i].message), "scatter_elements refusal %zu: %s", i,
          g.error);
    graph_free(&g);
  }
}

/* ---- non_max_suppression ---- */

static void test_non_max_suppression(void) {
  /* Boxes 0-2 overlap: the IoU of 0 and 1 is 1/2, exactly the threshold, so 1 is kept; box 2
   * (corners given flipped) overlaps 0 by 2/3 and goes. Box 3 is apart. Class 0 ranks the boxes
   * 0, 1, 2, 3; in class 1 only boxes 2 and 3 pass the score threshold. */
  const float boxes[16] = {0, 0, 1, 1, 0, 0, 1, 2, 1, 1.2f, 0, 0.2f, 5, 5, 6, 6};
  const float scores[8] = {0.9f, 0.8f, 0.7f, 0.6f, 0.1f, 0.2f, 0.4f, 0.3f};
  const int64_t expected[][3] = {{0, 0, 0}, {0, 0, 1}, {0, 0, 3}, {0, 1, 2}, {0, 1, 3}};
  const int64_t box_shape[3] = {1, 4, 4}, score_shape[3] = {1, 2, 4}, out_shape[2] = {8, 3};
  for (int per_class = 1; per_class <= 5; per_class += 4) {
    graph g;
    graph_init(&g, EDGE_OP_NON_MAX_SUPPRESSION);
    int32_t b = add_tensor(&g, "boxes", EDGE_FLOAT32, 3, box_shape);
    int32_t s = add_tensor(&g, "scores", EDGE_FLOAT32, 3, score_shape);
    int32_t y = add_tensor(&g, "selected", EDGE_INT64, 2, out_shape);
    memcpy(g.tensors[b].data, boxes, sizeof boxes);
    memcpy(g.tensors[s].data, scores, sizeof scores);
    graph_add_input(&g, b);
    graph_add_input(&g, s);
    graph_add_output(&g, y);
    edge_nms_options *o = &g.node.options.nms;
    o->max_output_boxes_per_class = per_class;
    o->iou_threshold = 0.5f;
    o->has_score_threshold = true;
    o->score_threshold = 0.25f;
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_OK, "nms: %s", g.error);
    CHECK(g.node.rows_set_at_eval, "nms prepare must flag its data-dependent rows");
    int64_t rows = per_class == 1 ? 2 : 5;
    CHECK(g.tensors[y].rank == 2 && g.tensors[y].shape[0] == rows && g.tensors[y].shape[1] == 3 &&
              g.tensors[y].nbytes == (size_t)rows * 3 * sizeof(int64_t),
          "nms max %d: output is %lld rows, expected %lld", per_class, (long long)g.tensors[y].shape[0],
          (long long)rows);
    const int64_t *got = g.tensors[y].data;
    for (int64_t r = 0, k = 0; status == EDGE_OK && r < rows; ++r, ++k) {
      if (per_class == 1 && r == 1) k = 3; /* class 0 keeps only box 0, class 1 only box 2 */
      CHECK(got[3 * r] == expected[k][0] && got[3 * r + 1] == expected[k][1] && got[3 * r + 2] == expected[k][2],
            "nms max %d row %lld: (%lld, %lld, %lld)", per_class, (long long)r, (long long)got[3 * r],
            (long long)got[3 * r + 1], (long long)got[3 * r + 2]);
    }
    graph_free(&g);
  }
  struct {
    int64_t boxes[3], scores[3];
    edge_dtype out_dtype;
    const char *message;
  } bad[] = {
      {{1, 4, 3}, {1, 2, 4}, EDGE_INT64, "must be [B, N, 4]"},
      {{1, 4, 4}, {2, 2, 4}, EDGE_INT64, "must be [B, N, 4]"},
      {{1, 4, 4}, {1, 2, 5}, EDGE_INT64, "must be [B, N, 4]"},
      {{1, 4, 4}, {1, 2, 4}, EDGE_FLOAT32, "expected int64 or int32"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_NON_MAX_SUPPRESSION);
    graph_add_input(&g, add_tensor(&g, "boxes", EDGE_FLOAT32, 3, bad[i].boxes));
    graph_add_input(&g, add_tensor(&g, "scores", EDGE_FLOAT32, 3, bad[i].scores));
    graph_add_output(&g, add_tensor(&g, "selected", bad[i].out_dtype, 2, out_shape));
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, bad[i].message), "nms refusal %zu: %s", i, g.error);
    graph_free(&g);
  }
}

/* ---- roi_align ---- */

static void test_roi_align(void) {
  /* x [1, 4, 4, 2] holds its own pixel index in channel 0 and 10x it in channel 1; a region that
   * covers the image exactly, 1x1 output, 2x2 samples at (0.5, 0.5) .. (2.5, 2.5) after the
   * half-pixel shift averages to the centre 1.5 rows and columns in: index 7.5. */
  const int64_t xs[4] = {1, 4, 4, 2}, rs[2] = {1, 4}, is[1] = {1}, ys[4] = {1, 1, 1, 2};
  for (int bad = 0; bad < 5; ++bad) { /* 1, 2: batch index; 3: NaN; 4: a sample grid too large */
    graph g;
    graph_init(&g, EDGE_OP_ROI_ALIGN);
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 4, xs), r = add_tensor(&g, "rois", EDGE_FLOAT32, 2, rs);
    int32_t b = add_tensor(&g, "batch_indices", EDGE_INT64, 1, is), y = add_tensor(&g, "y", EDGE_FLOAT32, 4, ys);
    for (int64_t i = 0; i < 16; ++i) {
      ((float *)g.tensors[x].data)[2 * i] = (float)i;
      ((float *)g.tensors[x].data)[2 * i + 1] = 10.0f * (float)i;
    }
    float *roi = g.tensors[r].data;
    roi[0] = roi[1] = 0.0f;
    roi[2] = roi[3] = 4.0f;
    if (bad == 1) ((int64_t *)g.tensors[b].data)[0] = 1;
    if (bad == 2) ((int64_t *)g.tensors[b].data)[0] = -1;
    if (bad == 3) roi[2] = NAN;
    graph_add_input(&g, x);
    graph_add_input(&g, r);
    graph_add_input(&g, b);
    graph_add_output(&g, y);
    edge_roi_align_options *o = &g.node.options.roi_align;
    o->output_height = o->output_width = 1;
    o->sampling_ratio = bad == 4 ? 2000 : 2;
    o->spatial_scale = 1.0f;
    o->half_pixel = true;
    edge_status status = graph_run(&g);
    if (bad == 0) {
      const float *out = g.tensors[y].data;
      CHECK(status == EDGE_OK && out[0] == 7.5f && out[1] == 75.0f, "roi_align: %s (%g, %g)", g.error,
            (double)out[0], (double)out[1]);
    } else {
      CHECK(status == EDGE_RUNTIME_ERROR &&
                strstr(g.error, bad == 3 ? "coordinate 2" : bad == 4 ? "samples per bin" : "out of range"),
            "roi_align bad input %d: %s", bad, g.error);
    }
    graph_free(&g);
  }
  struct {
    int64_t x[4], rois[2], indices;
    edge_dtype index_dtype;
    const char *message;
  } refused[] = {
      {{1, 4, 4, 2}, {2, 4}, 3, EDGE_INT64, "must be [N, H, W, C]"},
      {{1, 4, 4, 2}, {2, 5}, 2, EDGE_INT64, "must be [N, H, W, C]"},
      {{1, 4, 4, 2}, {2, 4}, 2, EDGE_FLOAT32, "expected int32 or int64"},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_ROI_ALIGN);
    graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 4, refused[i].x));
    graph_add_input(&g, add_tensor(&g, "rois", EDGE_FLOAT32, 2, refused[i].rois));
    graph_add_input(&g, add_tensor(&g, "batch_indices", refused[i].index_dtype, 1, &refused[i].indices));
    graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 4, ys));
    g.node.options.roi_align.output_height = g.node.options.roi_align.output_width = 1;
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, refused[i].message), "roi_align refusal %zu: %s", i,
          g.error);
    graph_free(&g);
  }
}

/* ---- grid_sample ---- */

static void test_grid_sample(void) {
  /* x [1, 2, 3, 1] holds 3h + w. Grid (0, 0) without align_corners is column 1.0, row 0.5: LINEAR
   * gives (1 + 4) / 2, NEAREST rounds 0.5 to row 0 (half to even): 1. NaN gives NaN; (1e30, -1e30)
   * reads 0 (ZEROS), the top-right pixel 2 (BORDER), and some pixel (REFLECTION), never outside. */
  const int64_t xs[4] = {1, 2, 3, 1}, gs[4] = {1, 1, 3, 2}, ys[4] = {1, 1, 3, 1};
  const float grid[6] = {0.0f, 0.0f, NAN, 0.5f, 1e30f, -1e30f};
  for (int padding = 0; padding < EDGE_GRID_PADDING_COUNT_; ++padding)
    for (int mode = 0; mode < EDGE_RESIZE_COUNT_; ++mode) {
      graph g;
      graph_init(&g, EDGE_OP_GRID_SAMPLE);
      int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 4, xs), gr = add_tensor(&g, "grid", EDGE_FLOAT32, 4, gs);
      int32_t y = add_tensor(&g, "y", EDGE_FLOAT32, 4, ys);
      for (int64_t i = 0; i < 6; ++i) ((float *)g.tensors[x].data)[i] = (float)i;
      memcpy(g.tensors[gr].data, grid, sizeof grid);
      graph_add_input(&g, x);
      graph_add_input(&g, gr);
      graph_add_output(&g, y);
      g.node.options.grid_sample.mode = (edge_resize_kind)mode;
      g.node.options.grid_sample.padding = (edge_grid_padding_kind)padding;
      edge_status status = graph_run(&g);
      const float *out = g.tensors[y].data;
      CHECK(status == EDGE_OK, "grid_sample: %s", g.error);
      if (mode == EDGE_RESIZE_LINEAR) CHECK(out[0] == 2.5f, "grid_sample linear centre: %g", (double)out[0]);
      if (mode == EDGE_RESIZE_NEAREST) CHECK(out[0] == 1.0f, "grid_sample nearest centre: %g", (double)out[0]);
      CHECK(isnan(out[1]), "grid_sample NaN coordinate: %g", (double)out[1]);
      if (padding == EDGE_GRID_PADDING_ZEROS) CHECK(out[2] == 0.0f, "grid_sample zeros far: %g", (double)out[2]);
      if (padding == EDGE_GRID_PADDING_BORDER) CHECK(out[2] == 2.0f, "grid_sample border far: %g", (double)out[2]);
      if (padding == EDGE_GRID_PADDING_REFLECTION && mode != EDGE_RESIZE_CUBIC)
        CHECK(out[2] >= 0.0f && out[2] <= 5.0f, "grid_sample reflection far: %g", (double)out[2]);
      graph_free(&g);
    }
  struct {
    int64_t x[4], grid[4];
    const char *message;
  } refused[] = {
      {{1, 2, 3, 1}, {1, 1, 3, 3}, "must be [N, S1..Sk, C]"},
      {{1, 2, 3, 1}, {2, 1, 3, 2}, "must be [N, S1..Sk, C]"},
      {{1, 0, 3, 1}, {1, 1, 3, 2}, "no pixels"},
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; ++i) {
    graph g;
    graph_init(&g, EDGE_OP_GRID_SAMPLE);
    graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 4, refused[i].x));
    graph_add_input(&g, add_tensor(&g, "grid", EDGE_FLOAT32, 4, refused[i].grid));
    graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 4, ys));
    edge_status status = graph_run(&g);
    CHECK(status == EDGE_INVALID_MODEL && strstr(g.error, refused[i].message), "grid_sample refusal %zu: %s", i,
          g.error);
    graph_free(&g);
  }
}

/* ---- det ---- */

static void test_det(void) {
  /* A zero corner forces a row swap: det [[0, 2, 1], [3, 1, 4], [1, 5, 9]] = -2 (27 - 4) + (15 - 1) = -32;
   * a singular matrix gives 0; a 0 x 0 matrix 1. */
  const float a[18] = {0, 2, 1, 3, 1, 4, 1, 5, 9, 1, 2, 3, 2, 4, 6, 0, 1, 7};
  const int64_t xs[3] = {2, 3, 3}, ys[1] = {2}, empty[3] = {2, 0, 0};
  for (int32_t threads = 1; threads <= 3; threads += 2) {
    graph g;
    graph_init(&g, EDGE_OP_DET);
    g.ctx.num_threads = threads;
    int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 3, xs), y = add_tensor(&g, "y", EDGE_FLOAT32, 1, ys);
    memcpy(g.tensors[x].data, a, sizeof a);
    graph_add_input(&g, x);
    graph_add_output(&g, y);
    edge_status status = graph_run(&g);
    const float *out = g.tensors[y].data;
    CHECK(status == EDGE_OK && out[0] == -32.0f && out[1] == 0.0f, "det: %s (%g, %g)", g.error, (double)out[0],
          (double)out[1]);
    graph_free(&g);
  }
  graph g;
  graph_init(&g, EDGE_OP_DET);
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 3, empty));
  int32_t y = add_tensor(&g, "y", EDGE_FLOAT32, 1, ys);
  graph_add_output(&g, y);
  CHECK(graph_run(&g) == EDGE_OK && ((float *)g.tensors[y].data)[1] == 1.0f, "det of 0 x 0: %s", g.error);
  graph_free(&g);
  const int64_t oblong[3] = {2, 3, 2};
  graph_init(&g, EDGE_OP_DET);
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 3, oblong));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_FLOAT32, 1, ys));
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "[..., n, n]"), "det refusal: %s", g.error);
  graph_free(&g);
}

/* ---- bitcast ---- */

static void test_bitcast(void) {
  const float values[4] = {1.0f, -0.0f, INFINITY, 1e-45f};
  const int64_t shape[1] = {4};
  graph g;
  graph_init(&g, EDGE_OP_BITCAST);
  int32_t x = add_tensor(&g, "x", EDGE_FLOAT32, 1, shape), y = add_tensor(&g, "y", EDGE_INT32, 1, shape);
  memcpy(g.tensors[x].data, values, sizeof values);
  graph_add_input(&g, x);
  graph_add_output(&g, y);
  edge_status status = graph_run(&g);
  const int32_t *bits = g.tensors[y].data;
  CHECK(status == EDGE_OK && bits[0] == 0x3F800000 && bits[1] == (int32_t)0x80000000u &&
            bits[2] == 0x7F800000 && bits[3] == 1,
        "bitcast: %s", g.error);
  graph_free(&g);
  graph_init(&g, EDGE_OP_BITCAST);
  graph_add_input(&g, add_tensor(&g, "x", EDGE_FLOAT32, 1, shape));
  graph_add_output(&g, add_tensor(&g, "y", EDGE_INT64, 1, shape));
  CHECK(graph_run(&g) == EDGE_INVALID_MODEL && strstr(g.error, "one size"), "bitcast refusal: %s", g.error);
  graph_free(&g);
}

void test_ops_index(void) {
  rng_seed(0x243f6a8885a308d3ull);
  test_trilu();
  test_cumsum();
  test_arg_reduce();
  test_top_k();
  test_gather_nd();
  test_scatter_nd();
  test_scatter_elements();
  test_non_max_suppression();
  test_roi_align();
  test_grid_sample();
  test_det();
  test_bitcast();
}

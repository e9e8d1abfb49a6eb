/* The GEMM family's table per ISA level, B packing and the blocked, threaded driver (gemm.h).
 *
 * Blocking: a kernel call computes one row tile (up to MR rows of A) against every panel of an N
 * block, with the whole K: the MR x K strip of A stays in L1 across the block's panels, the
 * K x N-block slab of packed B stays in L2 for every row tile of a row block, and the row block of
 * A stays in L2 while it walks all N blocks. K is not split, so each output is one uninterrupted
 * chain of multiply-adds from its bias, the order gemm.h promises, and no partial sums travel
 * through memory. Work cells (row block, N block, row tile) are numbered in that order, so a
 * thread's contiguous range of cells shares slabs; a cell's result does not depend on who
 * computes it. */
#include <math.h>
#include <string.h>

#include "config.h"

/* Working set per cell, sized for a 1 MiB L2 (Zen 4; also fine at 512 KiB): the K x N-block slab
 * of packed B and the row block of A (its tiles walk every N block before the next row block
 * starts) each take a quarter, leaving room for C and the stream of the other. */
#ifndef GEMM_SLAB_BYTES
#define GEMM_SLAB_BYTES (256u * 1024u)
#endif
#ifndef GEMM_A_BLOCK_BYTES
#define GEMM_A_BLOCK_BYTES (256u * 1024u)
#endif
/* Below this many multiply-adds a product runs on the calling thread. */
#define GEMM_MIN_PARALLEL_MACS 65536u

void edge_gemm_kernels_init(edge_isa_level isa, edge_gemm_kernels *out) {
  *out = (edge_gemm_kernels){edge_f32_gemm_minmax_ukernel_4x4__scalar, edge_f32_gemm_minmax_ukernel_1x4__scalar,
                             4, 4, "f32_gemm_minmax_4x4__scalar", EDGE_ISA_SCALAR};
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case EDGE_ISA_SSE2:
      *out = (edge_gemm_kernels){edge_f32_gemm_minmax_ukernel_4x8__sse2, edge_f32_gemm_minmax_ukernel_1x8__sse2, 4, 8,
                                 "f32_gemm_minmax_4x8__sse2", isa};
      break;
    case EDGE_ISA_AVX2:
      *out = (edge_gemm_kernels){edge_f32_gemm_minmax_ukernel_6x16__avx2, edge_f32_gemm_minmax_ukernel_1x16__avx2, 6,
                                 16, "f32_gemm_minmax_6x16__avx2", isa};
      break;
    case EDGE_ISA_AVX512:
    case EDGE_ISA_AVX512VNNI:
      *out = (edge_gemm_kernels){edge_f32_gemm_minmax_ukernel_8x32__avx512, edge_f32_gemm_minmax_ukernel_1x32__avx512,
                                 8, 32, "f32_gemm_minmax_8x32__avx512", isa};
      break;
#endif
#if defined(__aarch64__)
    case EDGE_ISA_NEON:
    case EDGE_ISA_NEONDOT:
      *out = (edge_gemm_kernels){edge_f32_gemm_minmax_ukernel_8x8__neon, edge_f32_gemm_minmax_ukernel_1x8__neon, 8, 8,
                                 "f32_gemm_minmax_8x8__neon", isa};
      break;
#endif
    default: break;
  }
}

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

size_t edge_gemm_packed_bytes(const edge_gemm_kernels *k, size_t n, size_t kdim) {
  return round_up(round_up(n, k->nr) * (kdim + 1) * sizeof(float), 64);
}

/* B[kk][j] = w[kk * k_step + j * n_step]. */
static void pack(const edge_gemm_kernels *k, size_t n, size_t kdim, const float *w, size_t k_step, size_t n_step,
                 const float *bias, void *packed) {
  const size_t nr = k->nr;
  float *out = packed;
  for (size_t n0 = 0; n0 < n; n0 += nr) {
    const size_t cols = n - n0 < nr ? n - n0 : nr;
    for (size_t j = 0; j < nr; ++j) out[j] = bias && j < cols ? bias[n0 + j] : 0.0f;
    out += nr;
    if (k_step == 1 && n_step != 1) {
      /* B given transposed: read each of the panel's columns as one contiguous run of w. */
      for (size_t j = 0; j < cols; ++j) {
        const float *column = w + (n0 + j) * n_step;
        for (size_t kk = 0; kk < kdim; ++kk) out[kk * nr + j] = column[kk];
      }
      for (size_t j = cols; j < nr; ++j)
        for (size_t kk = 0; kk < kdim; ++kk) out[kk * nr + j] = 0.0f;
      out += kdim * nr;
      continue;
    }
    for (size_t kk = 0; kk < kdim; ++kk) {
      const float *row = w + kk * k_step + n0 * n_step;
      size_t j = cols;
      if (n_step == 1) memcpy(out, row, cols * sizeof(float));
      else
        for (j = 0; j < cols; ++j) out[j] = row[j * n_step];
      for (j = cols; j < nr; ++j) out[j] = 0.0f;
      out += nr;
    }
  }
  const size_t used = (size_t)((char *)out - (char *)packed);
  memset(out, 0, edge_gemm_packed_bytes(k, n, kdim) - used);
}

void edge_gemm_pack_weights(const edge_gemm_kernels *k, size_t n, size_t kdim, const float *w, size_t w_row_stride,
                            const float *bias, void *packed) {
  pack(k, n, kdim, w, 1, w_row_stride, bias, packed);
}

void edge_gemm_pack_weights_kn(const edge_gemm_kernels *k, size_t n, size_t kdim, const float *w,
                               size_t w_row_stride, const float *bias, void *packed) {
  pack(k, n, kdim, w, w_row_stride, 1, bias, packed);
}

typedef struct {
  const edge_gemm_kernels *k;
  size_t m, n, kdim, m_tiles, block_columns, n_blocks, block_tiles;
  const float *a;
  size_t a_stride;
  const float *packed;
  float *c;
  size_t c_stride;
  edge_f32_minmax_params clamp;
  edge_f32_epilogue epilogue; /* applied per tile: a residual, an activation the kernels cannot fuse */
} gemm_job;

static void gemm_cells(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const gemm_job *job = arg;
  const edge_gemm_kernels *k = job->k;
  const size_t panel_floats = (job->kdim + 1) * k->nr;
  /* cell = (row block, N block, tile in the row block); the last row block may be short. The
   * position is divided out once and then stepped: three divisions per cell cost as much as a
   * small tile's multiply-adds. */
  const size_t row_block = (size_t)begin / (job->block_tiles * job->n_blocks);
  size_t first_tile = row_block * job->block_tiles;
  size_t tiles = job->m_tiles - first_tile < job->block_tiles ? job->m_tiles - first_tile : job->block_tiles;
  const size_t within = (size_t)begin - first_tile * job->n_blocks;
  size_t block = within / tiles, tile = first_tile + within % tiles;
  for (int64_t cell = begin; cell < end; ++cell) {
    const size_t n0 = block * job->block_columns, m0 = tile * k->mr;
    const size_t nc = job->n - n0 < job->block_columns ? job->n - n0 : job->block_columns;
    const size_t mr = job->m - m0 < k->mr ? job->m - m0 : k->mr;
    float *c = job->c + m0 * job->c_stride + n0;
    const float *w = job->packed + n0 / k->nr * panel_floats;
    (mr == 1 ? k->ukernel_1 : k->ukernel)(mr, nc, job->kdim, job->a + m0 * job->a_stride, job->a_stride, w, c,
                                          job->c_stride, &job->clamp);
    if (edge_f32_epilogue_active(&job->epilogue))
      edge_f32_epilogue_rows(&job->epilogue, c, job->c_stride, mr, m0, n0, nc);
    if (++tile < first_tile + tiles) continue;
    tile = first_tile;
    if (++block < job->n_blocks) continue;
    block = 0;
    first_tile += tiles;
    tile = first_tile;
    tiles = job->m_tiles - first_tile < job->block_tiles ? job->m_tiles - first_tile : job->block_tiles;
  }
}

edge_f32_minmax_params edge_f32_epilogue_init(edge_f32_epilogue *e, edge_isa_level isa, const edge_activation *act,
                                              size_t residual_columns) {
  const edge_kernel_config *config = edge_kernels_for(isa);
  *e = (edge_f32_epilogue){.act = {EDGE_UNARY_IDENTITY, 0.0f, 0.0f}};
  if (residual_columns) e->add = config ? config->vector.binary_vv[EDGE_BINARY_ADD] : NULL;
  edge_f32_minmax_params clamp = {-INFINITY, INFINITY};
  const edge_unary_kind op = act ? act->op : EDGE_UNARY_IDENTITY;
  if (!residual_columns) {
    switch (op) {
      case EDGE_UNARY_IDENTITY: return clamp;
      case EDGE_UNARY_RELU: clamp.min = 0.0f; return clamp;
      case EDGE_UNARY_RELU6: return (edge_f32_minmax_params){0.0f, 6.0f};
      case EDGE_UNARY_CLIP: return (edge_f32_minmax_params){act->alpha, act->beta};
      default: break;
    }
  }
  if (op != EDGE_UNARY_IDENTITY) {
    e->act = *act;
    e->act_kernel = config && (unsigned)op < EDGE_UNARY_COUNT_ ? config->vector.unary[op] : NULL;
    e->act_params = (edge_f32_unary_params){act->alpha, act->beta};
  }
  return clamp;
}

void edge_f32_epilogue_rows(const edge_f32_epilogue *e, float *c, size_t c_stride, size_t rows, size_t row0,
                            size_t col0, size_t nc) {
  const edge_f32_residual *r = &e->residual;
  const size_t added = r->data && col0 < r->columns ? (r->columns - col0 < nc ? r->columns - col0 : nc) : 0;
  /* Rows that are contiguous in both (a whole-width tile of a residual as wide as the output) run
   * as one stretch. */
  const bool one_stretch = c_stride == nc && (!added || (added == nc && r->stride == nc));
  const size_t stretches = one_stretch ? 1 : rows, length = one_stretch ? rows * nc : nc;
  for (size_t i = 0; i < stretches; ++i) {
    float *row = c + i * c_stride;
    if (added) {
      const float *add = r->data + (row0 + i) * r->stride + col0;
      const size_t count = one_stretch ? length : added;
      if (e->add) e->add(count, row, add, row);
      else
        for (size_t j = 0; j < count; ++j) row[j] += add[j];
    }
    if (e->act.op == EDGE_UNARY_IDENTITY) continue;
    if (e->act_kernel) e->act_kernel(length, row, row, &e->act_params);
    else edge_activation_apply(&e->act, row, length);
  }
}

void edge_gemm_compute(const edge_gemm_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                       const float *a, size_t a_stride, const void *packed, float *c, size_t c_stride,
                       const edge_activation *act) {
  edge_gemm_compute_residual(k, pool, m, n, kdim, a, a_stride, packed, c, c_stride, act, NULL);
}

void edge_gemm_compute_residual(const edge_gemm_kernels *k, edge_threadpool *pool, size_t m, size_t n, size_t kdim,
                                const float *a, size_t a_stride, const void *packed, float *c, size_t c_stride,
                                const edge_activation *act, const edge_f32_residual *residual) {
  if (m == 0 || n == 0) return;
  gemm_job job = {0};
  job.k = k;
  job.m = m;
  job.n = n;
  job.kdim = kdim;
  job.a = a;
  job.a_stride = a_stride;
  job.packed = packed;
  job.c = c;
  job.c_stride = c_stride;
  const bool has_residual = residual && residual->data && residual->columns;
  job.clamp = edge_f32_epilogue_init(&job.epilogue, k->isa, act, has_residual ? residual->columns : 0);
  if (has_residual) job.epilogue.residual = *residual;

  const int32_t threads = pool ? edge_threadpool_size(pool) : 1;
  const size_t nr = k->nr;
  job.m_tiles = (m + k->mr - 1) / k->mr;
  size_t slab_columns = GEMM_SLAB_BYTES / ((kdim + 1) * sizeof(float)) / nr * nr;
  job.block_columns = slab_columns < nr ? nr : slab_columns;
  const int parallel = threads > 1 && (double)m * (double)n * (double)kdim >= GEMM_MIN_PARALLEL_MACS;
  if (parallel) {
    /* Enough cells for the threads to balance: a few per thread where the shape allows. */
    const size_t wanted = 4 * (size_t)threads;
    if (job.m_tiles * ((n + job.block_columns - 1) / job.block_columns) < wanted) {
      const size_t blocks = (wanted + job.m_tiles - 1) / job.m_tiles;
      const size_t columns = round_up((n + blocks - 1) / blocks, nr);
      if (columns < job.block_columns) job.block_columns = columns;
    }
  }
  job.n_blocks = (n + job.block_columns - 1) / job.block_columns;
  const size_t row_block_tiles = GEMM_A_BLOCK_BYTES / ((kdim + 1) * sizeof(float) * k->mr);
  job.block_tiles = row_block_tiles < 1 ? 1 : row_block_tiles;
  const size_t cells = job.m_tiles * job.n_blocks;
  if (parallel) edge_parallel_for(pool, (int64_t)cells, gemm_cells, &job);
  else gemm_cells(&job, 0, (int64_t)cells, 0);
}

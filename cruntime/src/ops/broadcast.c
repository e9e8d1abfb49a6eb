#include "broadcast.h"

#include <string.h>

void edge_nd_contiguous_strides(int32_t rank, const int64_t *shape, int64_t *strides) {
  int64_t stride = 1;
  for (int32_t d = rank - 1; d >= 0; --d) {
    strides[d] = stride;
    stride *= shape[d];
  }
}

void edge_nd_broadcast_strides(int32_t out_rank, const int64_t *out_shape, int32_t in_rank,
                               const int64_t *in_shape, int64_t *strides) {
  int64_t stride = 1;
  for (int32_t d = out_rank - 1; d >= 0; --d) {
    int32_t in_d = d - (out_rank - in_rank);
    if (in_d < 0) {
      strides[d] = 0;
      continue;
    }
    strides[d] = (in_shape[in_d] == 1 && out_shape[d] != 1) ? 0 : stride;
    stride *= in_shape[in_d];
  }
}

void edge_nd_iter_init(edge_nd_iter *it, int32_t rank, const int64_t *shape, int32_t num_operands,
                       const int64_t *const *strides) {
  it->rank = rank;
  it->num_operands = num_operands;
  for (int32_t d = 0; d < rank; ++d) it->shape[d] = shape[d];
  for (int32_t k = 0; k < num_operands; ++k) {
    it->base[k] = 0;
    for (int32_t d = 0; d < rank; ++d) it->strides[k][d] = strides[k][d];
  }
  edge_nd_iter_collapse(it);
}

void edge_nd_iter_collapse(edge_nd_iter *it) {
  int32_t nk = it->num_operands;
  it->total = edge_num_elements(it->rank, it->shape);
  if (it->total == 0) { /* nothing will run; keep one dimension so runs see a valid space */
    it->rank = 1;
    it->shape[0] = 0;
    for (int32_t k = 0; k < nk; ++k) it->strides[k][0] = 0;
    return;
  }
  int64_t shape[EDGE_MAX_RANK], strides[EDGE_ND_MAX_OPERANDS][EDGE_MAX_RANK];
  int32_t rank = 0;
  /* Built from the innermost dimension outwards into the front of the arrays, reversed below. */
  for (int32_t d = it->rank - 1; d >= 0; --d) {
    if (it->shape[d] == 1) continue;
    bool merges = rank > 0;
    for (int32_t k = 0; k < nk && merges; ++k)
      merges = it->strides[k][d] == strides[k][rank - 1] * shape[rank - 1];
    if (merges) {
      shape[rank - 1] *= it->shape[d];
    } else {
      shape[rank] = it->shape[d];
      for (int32_t k = 0; k < nk; ++k) strides[k][rank] = it->strides[k][d];
      ++rank;
    }
  }
  if (rank == 0) {
    it->rank = 1;
    it->shape[0] = 1;
    for (int32_t k = 0; k < nk; ++k) it->strides[k][0] = 0;
    return;
  }
  it->rank = rank;
  for (int32_t d = 0; d < rank; ++d) {
    it->shape[d] = shape[rank - 1 - d];
    for (int32_t k = 0; k < nk; ++k) it->strides[k][d] = strides[k][rank - 1 - d];
  }
}

void edge_nd_iter_runs(const edge_nd_iter *it, int64_t begin, int64_t end, edge_nd_run_fn fn, void *arg) {
  if (end > it->total) end = it->total;
  if (begin >= end) return;
  int32_t rank = it->rank, nk = it->num_operands, inner = rank - 1;
  int64_t index[EDGE_MAX_RANK], offsets[EDGE_ND_MAX_OPERANDS];
  int64_t rest = begin;
  for (int32_t d = rank - 1; d >= 0; --d) {
    index[d] = rest % it->shape[d];
    rest /= it->shape[d];
  }
  for (int32_t k = 0; k < nk; ++k) {
    offsets[k] = it->base[k];
    for (int32_t d = 0; d < rank; ++d) offsets[k] += index[d] * it->strides[k][d];
  }
  int64_t position = begin;
  while (position < end) {
    int64_t count = it->shape[inner] - index[inner];
    if (count > end - position) count = end - position;
    fn(arg, offsets, count);
    position += count;
    if (position >= end) break;
    /* count reached the end of the innermost row: rewind it and carry into the outer dimensions. */
    for (int32_t k = 0; k < nk; ++k) offsets[k] -= index[inner] * it->strides[k][inner];
    index[inner] = 0;
    for (int32_t d = inner - 1; d >= 0; --d) {
      for (int32_t k = 0; k < nk; ++k) offsets[k] += it->strides[k][d];
      if (++index[d] < it->shape[d]) break;
      for (int32_t k = 0; k < nk; ++k) offsets[k] -= index[d] * it->strides[k][d];
      index[d] = 0;
    }
  }
}

#define ND_MAX_TILES 256

void edge_nd_parallel(edge_context *ctx, int64_t n, int64_t min_per_thread, edge_parallel_fn fn, void *arg) {
  if (n <= 0) return;
  if (!ctx->pool || n < 2 * min_per_thread || edge_threadpool_size(ctx->pool) <= 1) {
    fn(arg, 0, n, 0);
    return;
  }
  /* At most ND_MAX_TILES tiles: enough for threads to balance, few enough that fn's per-call set-up
   * (finding a row's start, say) stays small. Either way the cut depends on n alone. */
  const int64_t coarse = (n + ND_MAX_TILES - 1) / ND_MAX_TILES;
  edge_parallel_tiles(ctx->pool, n, min_per_thread > coarse ? min_per_thread : coarse, fn, arg);
}

edge_status edge_nd_broadcast_shapes(edge_context *ctx, const char *what, int32_t num_shapes,
                                     const int32_t *ranks, const int64_t *const *shapes, int32_t *out_rank,
                                     int64_t *out_shape) {
  int32_t rank = 0;
  for (int32_t s = 0; s < num_shapes; ++s)
    if (ranks[s] > rank) rank = ranks[s];
  for (int32_t d = 0; d < rank; ++d) {
    int64_t dim = 1;
    for (int32_t s = 0; s < num_shapes; ++s) {
      int32_t sd = d - (rank - ranks[s]);
      int64_t v = sd >= 0 ? shapes[s][sd] : 1;
      if (v == 1 || v == dim) continue;
      if (dim != 1) {
        char text[EDGE_ND_MAX_OPERANDS][96];
        for (int32_t t = 0; t < num_shapes && t < EDGE_ND_MAX_OPERANDS; ++t)
          edge_format_shape(text[t], sizeof text[t], ranks[t], shapes[t]);
        return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input shapes %s, %s%s%s do not broadcast (dimension %d)",
                         what, text[0], text[1], num_shapes > 2 ? ", " : "", num_shapes > 2 ? text[2] : "", d);
      }
      dim = v;
    }
    out_shape[d] = dim;
  }
  *out_rank = rank;
  return EDGE_OK;
}

void edge_nd_copy_strided(void *dst, int64_t dst_stride, const void *src, int64_t src_stride, int64_t count,
                          size_t elem_size) {
  char *d = dst;
  const char *s = src;
  if (dst_stride == 1 && src_stride == 1) {
    memcpy(d, s, (size_t)count * elem_size);
    return;
  }
  /* A constant size per case lets memcpy become one load and one store. */
#define EDGE_COPY_CASE(size)                                                                       \
  case size:                                                                                       \
    for (int64_t i = 0; i < count; ++i) memcpy(d + i * dst_stride * size, s + i * src_stride * size, size); \
    return;
  switch (elem_size) {
    EDGE_COPY_CASE(1)
    EDGE_COPY_CASE(2)
    EDGE_COPY_CASE(4)
    EDGE_COPY_CASE(8)
    default:
      for (int64_t i = 0; i < count; ++i)
        memcpy(d + i * dst_stride * (int64_t)elem_size, s + i * src_stride * (int64_t)elem_size, elem_size);
  }
#undef EDGE_COPY_CASE
}

typedef struct {
  const edge_nd_iter *iter;
  char *dst;
  const char *src;
  size_t size;
} copy_job;

static void copy_run(void *arg, const int64_t *offsets, int64_t count) {
  const copy_job *job = arg;
  int32_t inner = job->iter->rank - 1;
  edge_nd_copy_strided(job->dst + offsets[0] * (int64_t)job->size, job->iter->strides[0][inner],
                       job->src + offsets[1] * (int64_t)job->size, job->iter->strides[1][inner], count, job->size);
}

static void copy_range(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const copy_job *job = arg;
  edge_nd_iter_runs(job->iter, begin, end, copy_run, (void *)job);
}

void edge_nd_copy(edge_context *ctx, const edge_nd_iter *iter, void *dst, const void *src, size_t elem_size) {
  copy_job job = {iter, dst, src, elem_size};
  edge_nd_parallel(ctx, iter->total, 65536, copy_range, &job);
}

void edge_nd_gather_elements(void *dst, const void *src, const int64_t *source, int64_t count, size_t elem_size) {
  char *d = dst;
  const char *s = src;
#define EDGE_GATHER_CASE(size)                                                                     \
  case size:                                                                                       \
    for (int64_t i = 0; i < count; ++i) memcpy(d + i * size, s + source[i] * size, size);          \
    return;
  switch (elem_size) {
    EDGE_GATHER_CASE(1)
    EDGE_GATHER_CASE(2)
    EDGE_GATHER_CASE(4)
    EDGE_GATHER_CASE(8)
    default:
      for (int64_t i = 0; i < count; ++i)
        memcpy(d + i * (int64_t)elem_size, s + source[i] * (int64_t)elem_size, elem_size);
  }
#undef EDGE_GATHER_CASE
}

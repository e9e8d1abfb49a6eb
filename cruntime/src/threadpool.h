/* The runtime's thread pool (threadpool.c): the one way the ops and the kernel drivers split work. */
#ifndef EDGE_THREADPOOL_H
#define EDGE_THREADPOOL_H

#include <stdint.h>

typedef struct edge_threadpool edge_threadpool;

/* fn(ctx, begin, end, thread) once per tile of [0, n): tile k is [k*tile, min((k+1)*tile, n)),
 * a cut that depends on n and tile only (a job of more than 65,536 tiles gets coarser tiles, again
 * from n and tile alone). The pool's threads share the tiles by work stealing; `thread` is the
 * running thread's index in [0, num_threads), for per-thread scratch. The caller works too and
 * returns after every tile has run; with one thread (or no pool) it runs them all in order. */
typedef void (*edge_parallel_fn)(void *ctx, int64_t begin, int64_t end, int32_t thread);
edge_threadpool *edge_threadpool_create(int32_t num_threads);
void edge_threadpool_free(edge_threadpool *pool);
int32_t edge_threadpool_size(const edge_threadpool *pool);
void edge_parallel_tiles(edge_threadpool *pool, int64_t n, int64_t tile, edge_parallel_fn fn, void *ctx);
/* edge_parallel_tiles with tiles of one item (callers whose items are already blocks of work). */
void edge_parallel_for(edge_threadpool *pool, int64_t n, edge_parallel_fn fn, void *ctx);

#endif

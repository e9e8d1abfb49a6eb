/* A persistent pool: num_threads - 1 workers plus the calling thread.
 *
 * edge_parallel_for publishes one job (fn, ctx, n) under the mutex and bumps a generation counter;
 * each worker wakes on the counter change, runs its own contiguous chunk and reports back. Chunk
 * t is always [t*n/T, (t+1)*n/T) (balanced by one element), so a given thread always gets the same
 * indices: results never depend on scheduling. Workers spin briefly on the generation before
 * blocking on the condition variable, which keeps back-to-back ops cheap without burning a core
 * while the pool is idle. A parallel_for must not be called from inside a chunk. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "internal.h"

#define SPIN_ITERATIONS 2000

typedef struct {
  edge_threadpool *pool;
  int32_t index;
} worker_arg;

struct edge_threadpool {
  int32_t num_threads;
  pthread_t *threads;
  worker_arg *args;
  int32_t num_started;
  pthread_mutex_t mutex;
  pthread_cond_t work_ready;
  pthread_cond_t work_done;
  pthread_mutex_t submit;               /* one parallel_for at a time */
  atomic_uint_fast64_t generation;
  int32_t pending;
  bool shutdown;
  edge_parallel_fn fn;
  void *ctx;
  int64_t n;
};

static void chunk_bounds(int64_t n, int32_t threads, int32_t t, int64_t *begin, int64_t *end) {
  int64_t base = n / threads, extra = n % threads;
  *begin = base * t + (t < extra ? t : extra);
  *end = *begin + base + (t < extra ? 1 : 0);
}

static void *worker_main(void *p) {
  worker_arg *arg = p;
  edge_threadpool *pool = arg->pool;
  uint_fast64_t seen = 0;
  for (;;) {
    for (int spin = 0; spin < SPIN_ITERATIONS && atomic_load(&pool->generation) == seen; ++spin) sched_yield();
    pthread_mutex_lock(&pool->mutex);
    while (atomic_load(&pool->generation) == seen && !pool->shutdown) pthread_cond_wait(&pool->work_ready, &pool->mutex);
    if (pool->shutdown) {
      pthread_mutex_unlock(&pool->mutex);
      return NULL;
    }
    seen = atomic_load(&pool->generation);
    edge_parallel_fn fn = pool->fn;
    void *ctx = pool->ctx;
    int64_t n = pool->n, begin, end;
    pthread_mutex_unlock(&pool->mutex);

    chunk_bounds(n, pool->num_threads, arg->index, &begin, &end);
    if (begin < end) fn(ctx, begin, end, arg->index);

    pthread_mutex_lock(&pool->mutex);
    if (--pool->pending == 0) pthread_cond_signal(&pool->work_done);
    pthread_mutex_unlock(&pool->mutex);
  }
}

edge_threadpool *edge_threadpool_create(int32_t num_threads) {
  if (num_threads < 1) return NULL;
  edge_threadpool *pool = calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->num_threads = num_threads;
  atomic_init(&pool->generation, 0);
  if (pthread_mutex_init(&pool->mutex, NULL) != 0) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->submit, NULL);
  pthread_cond_init(&pool->work_ready, NULL);
  pthread_cond_init(&pool->work_done, NULL);
  if (num_threads > 1) {
    pool->threads = calloc((size_t)num_threads - 1, sizeof *pool->threads);
    pool->args = calloc((size_t)num_threads - 1, sizeof *pool->args);
    if (!pool->threads || !pool->args) {
      edge_threadpool_free(pool);
      return NULL;
    }
    for (int32_t i = 0; i < num_threads - 1; ++i) {
      pool->args[i] = (worker_arg){pool, i + 1};
      if (pthread_create(&pool->threads[i], NULL, worker_main, &pool->args[i]) != 0) {
        edge_threadpool_free(pool);
        return NULL;
      }
      pool->num_started = i + 1;
    }
  }
  return pool;
}

void edge_threadpool_free(edge_threadpool *pool) {
  if (!pool) return;
  pthread_mutex_lock(&pool->mutex);
  pool->shutdown = true;
  pthread_cond_broadcast(&pool->work_ready);
  pthread_mutex_unlock(&pool->mutex);
  for (int32_t i = 0; i < pool->num_started; ++i) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->work_ready);
  pthread_cond_destroy(&pool->work_done);
  pthread_mutex_destroy(&pool->mutex);
  pthread_mutex_destroy(&pool->submit);
  free(pool->threads);
  free(pool->args);
  free(pool);
}

int32_t edge_threadpool_size(const edge_threadpool *pool) { return pool ? pool->num_threads : 1; }

void edge_parallel_for(edge_threadpool *pool, int64_t n, edge_parallel_fn fn, void *ctx) {
  if (n <= 0) return;
  if (!pool || pool->num_threads == 1 || n == 1) {
    fn(ctx, 0, n, 0);
    return;
  }
  pthread_mutex_lock(&pool->submit);
  pthread_mutex_lock(&pool->mutex);
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  pool->pending = pool->num_threads - 1;
  atomic_fetch_add(&pool->generation, 1);
  pthread_cond_broadcast(&pool->work_ready);
  pthread_mutex_unlock(&pool->mutex);

  int64_t begin, end;
  chunk_bounds(n, pool->num_threads, 0, &begin, &end);
  if (begin < end) fn(ctx, begin, end, 0);

  pthread_mutex_lock(&pool->mutex);
  while (pool->pending > 0) pthread_cond_wait(&pool->work_done, &pool->mutex);
  pthread_mutex_unlock(&pool->mutex);
  pthread_mutex_unlock(&pool->submit);
}

/* A persistent pool: num_threads - 1 workers plus the calling thread.
 *
 * edge_parallel_for publishes one job (fn, ctx, n) and then bumps a generation counter (release);
 * each worker that sees the counter change (acquire) reads the job, runs its own contiguous chunk
 * and counts itself off. Chunk t is always [t*n/T, (t+1)*n/T) (balanced by one element), so a given
 * thread always gets the same indices: results never depend on scheduling. A job's fields are only
 * rewritten after every worker has counted itself off, so workers read them without the mutex.
 *
 * Waiting, on both sides (workers for the next job, the caller for the last worker), first spins
 * with the CPU's pause hint for at most SPIN_NANOSECONDS and then blocks on a condition variable.
 * Back-to-back ops (an LSTM's steps, a network's layers) then hand work over in well under a
 * microsecond without a system call, and an idle pool costs nothing. The spin does not call
 * sched_yield: on a loaded machine that gives the core to another process and the op waits for
 * a whole scheduler slice to get it back. A parallel_for must not be called from inside a chunk. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "internal.h"

#define SPIN_NANOSECONDS 100000
/* Pauses between two looks at the clock (a pause is tens of cycles on current cores). */
#define SPIN_CHECK_EVERY 64

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
  atomic_int pending;                   /* workers still running the current job */
  atomic_bool shutdown;
  edge_parallel_fn fn;
  void *ctx;
  int64_t n;
};

static void chunk_bounds(int64_t n, int32_t threads, int32_t t, int64_t *begin, int64_t *end) {
  int64_t base = n / threads, extra = n % threads;
  *begin = base * t + (t < extra ? t : extra);
  *end = *begin + base + (t < extra ? 1 : 0);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

static int64_t monotonic_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spins until done(pool, value) or SPIN_NANOSECONDS pass; true if done. */
static bool spin_until(const edge_threadpool *pool, uint_fast64_t value,
                       bool (*done)(const edge_threadpool *, uint_fast64_t)) {
  if (done(pool, value)) return true;
  const int64_t deadline = monotonic_ns() + SPIN_NANOSECONDS;
  for (;;) {
    for (int i = 0; i < SPIN_CHECK_EVERY; ++i) {
      cpu_relax();
      if (done(pool, value)) return true;
    }
    if (monotonic_ns() >= deadline) return false;
  }
}

static bool new_job_or_shutdown(const edge_threadpool *pool, uint_fast64_t seen) {
  return atomic_load_explicit(&pool->generation, memory_order_acquire) != seen ||
         atomic_load_explicit(&pool->shutdown, memory_order_acquire);
}

static bool workers_done(const edge_threadpool *pool, uint_fast64_t unused) {
  (void)unused;
  return atomic_load_explicit(&pool->pending, memory_order_acquire) == 0;
}

static void *worker_main(void *p) {
  worker_arg *arg = p;
  edge_threadpool *pool = arg->pool;
  uint_fast64_t seen = 0;
  for (;;) {
    if (!spin_until(pool, seen, new_job_or_shutdown)) {
      pthread_mutex_lock(&pool->mutex);
      while (!new_job_or_shutdown(pool, seen)) pthread_cond_wait(&pool->work_ready, &pool->mutex);
      pthread_mutex_unlock(&pool->mutex);
    }
    if (atomic_load_explicit(&pool->shutdown, memory_order_acquire)) return NULL;
    seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    int64_t begin, end;
    chunk_bounds(pool->n, pool->num_threads, arg->index, &begin, &end);
    if (begin < end) pool->fn(pool->ctx, begin, end, arg->index);

    if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
      /* under the mutex, so a caller between its check and its wait cannot miss this */
      pthread_mutex_lock(&pool->mutex);
      pthread_cond_signal(&pool->work_done);
      pthread_mutex_unlock(&pool->mutex);
    }
  }
}

edge_threadpool *edge_threadpool_create(int32_t num_threads) {
  if (num_threads < 1) return NULL;
  edge_threadpool *pool = calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->num_threads = num_threads;
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->pending, 0);
  atomic_init(&pool->shutdown, false);
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
  atomic_store_explicit(&pool->shutdown, true, memory_order_release);
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
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  atomic_store_explicit(&pool->pending, pool->num_threads - 1, memory_order_relaxed);
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool->work_ready);
  pthread_mutex_unlock(&pool->mutex);

  int64_t begin, end;
  chunk_bounds(n, pool->num_threads, 0, &begin, &end);
  if (begin < end) fn(ctx, begin, end, 0);

  if (!spin_until(pool, 0, workers_done)) {
    pthread_mutex_lock(&pool->mutex);
    while (!workers_done(pool, 0)) pthread_cond_wait(&pool->work_done, &pool->mutex);
    pthread_mutex_unlock(&pool->mutex);
  }
  pthread_mutex_unlock(&pool->submit);
}

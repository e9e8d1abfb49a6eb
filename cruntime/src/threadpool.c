/* A persistent pool: num_threads - 1 workers plus the calling thread, sharing each job's tiles by
 * work stealing, so that a thread the OS has descheduled does not hold up the others.
 *
 * A job is [0, n) cut into tiles of `tile` items: tile k is [k*tile, min((k+1)*tile, n)). The cut
 * depends on n and tile only, never on the thread count or on timing, and fn is called on one
 * whole tile at a time, so an op's results are the same for any num_threads. The tiles are first
 * dealt out as one contiguous range per thread (thread t gets the t-th of T balanced ranges, the
 * locality of a static split). Each thread takes tiles from the front of its own range; one that
 * runs out takes them from the back of the other threads' ranges (as pthreadpool does). A range
 * is one 64-bit word, (job tag, begin, end), claimed by compare-and-swap: a claim succeeds only
 * for the job the thread read its fn and ctx under, so a worker waking late, after its job is done
 * and the next published, cannot run a stale job; the caller never waits for a thread that has not
 * claimed anything. It waits only for tiles already running: each thread counts the tiles it has
 * run in its own range's cache line, and the job is done when the counts add up to its tiles. (One
 * count shared by all, decremented after every tile, moved its cache line between the cores once
 * per tile, which cost as much as a small tile's work: a 1x1 convolution's 6-row GEMM tile is
 * ~0.1 us, and such layers ran no faster on two threads than on one.)
 *
 * Waiting (workers for the next job, the caller for running tiles) spins with the CPU's pause hint
 * and then blocks on a condition variable (a futex). Back-to-back ops hand work over in well under
 * a microsecond without a system call. How long a thread spins adapts to the machine: a thread
 * that finds it was descheduled while spinning (a gap between two looks at the clock that only
 * another runnable thread on its core explains) spins only briefly for a while and blocks instead,
 * which gives the core to whoever needs it and, on wake-up, lets the scheduler run the woken
 * thread promptly (a thread that spins competes for whole time slices and is then preempted in
 * the middle of a tile, which the others must wait for). fn must not call parallel_for. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "internal.h"

/* Spin budgets: on a quiet machine, and for a while after a spin found the thread descheduled.
 * The quiet budget outlasts the gap between two invokes of a frame loop (reading a landmark
 * model's outputs and setting its 224x224 image from Python: 90 to 160 us on the 2-core Xeon VM):
 * with 100 us the worker blocked in half of those gaps, and waking it again cost hand_landmark
 * 0.2 ms of its 2.4 ms per invoke on two threads (a blocked vCPU is slow to wake on a VM). */
#define SPIN_NANOSECONDS 300000
#define CONTENDED_SPIN_NANOSECONDS 1000
#define CONTENDED_NANOSECONDS 50000000
/* Pauses between two looks at the clock (a pause is tens of cycles on current cores), and the
 * gap between two looks that only a deschedule explains. */
#define SPIN_CHECK_EVERY 64
#define PREEMPTED_GAP_NANOSECONDS 200000

/* A range word: job tag (32 bits) | begin (16 bits) | end (16 bits), in tiles. A late worker
 * could only run a stale job if it slept through 2^32 jobs between reading the tag and claiming. */
#define TAG_BITS 32
#define INDEX_BITS 16
#define MAX_TILES ((int64_t)1 << INDEX_BITS)
#define INDEX_MASK ((uint64_t)MAX_TILES - 1)
#define TAG_MASK (((uint64_t)1 << TAG_BITS) - 1)

/* One per thread, alone in its cache line: `word` is claimed by its owner (and by thieves once
 * they run out), `ran` is written by its owner only: the tiles it has run of the current job. */
typedef struct {
  _Alignas(64) atomic_uint_fast64_t word;
  atomic_int_fast64_t ran;
} tile_range;

typedef struct {
  int64_t contended_until;  /* CLOCK_MONOTONIC ns: spin briefly until then */
} spinner;

typedef struct {
  edge_threadpool *pool;
  int32_t index;
} worker_arg;

struct edge_threadpool {
  int32_t num_threads;
  pthread_t *threads;
  worker_arg *args;
  int32_t num_started;
  tile_range *ranges;                   /* one per thread */
  pthread_mutex_t mutex;
  pthread_cond_t work_ready;
  pthread_cond_t work_done;
  pthread_mutex_t submit;               /* one parallel_for at a time */
  atomic_uint_fast64_t generation;      /* the job tag; bumped when a job is published */
  atomic_int sleepers;                  /* threads blocked (or about to block) on a condition */
  atomic_int_fast64_t tiles;            /* tiles of the current job */
  atomic_bool shutdown;
  /* The current job, written by the caller before it publishes the tag; atomics only because a
   * late worker may read them while the next job is written (it then fails its claim). */
  _Atomic(edge_parallel_fn) fn;
  _Atomic(void *) ctx;
  atomic_int_fast64_t n, tile;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

static int64_t clock_ns(clockid_t clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline uint64_t range_word(uint64_t tag, uint64_t begin, uint64_t end) {
  return (tag & TAG_MASK) << (2 * INDEX_BITS) | begin << INDEX_BITS | end;
}

/* Takes one tile of job `tag` from the front (own range) or the back (stealing) of `range`;
 * returns it, or -1 when the range is empty or belongs to another job. */
static int64_t claim(tile_range *range, uint64_t tag, bool front) {
  uint64_t word = atomic_load_explicit(&range->word, memory_order_acquire);
  for (;;) {
    if ((word >> (2 * INDEX_BITS)) != (tag & TAG_MASK)) return -1;
    const uint64_t begin = (word >> INDEX_BITS) & INDEX_MASK, end = word & INDEX_MASK;
    if (begin >= end) return -1;
    const uint64_t next = front ? range_word(tag, begin + 1, end) : range_word(tag, begin, end - 1);
    if (atomic_compare_exchange_weak_explicit(&range->word, &word, next, memory_order_acq_rel,
                                              memory_order_acquire))
      return (int64_t)(front ? begin : end - 1);
  }
}

/* Spins until done(pool, value) or the thread's budget passes; true if done. A gap between two
 * looks at the clock far longer than the pauses between them means the OS ran something else on
 * this core meanwhile: the machine is oversubscribed, and the thread spins only briefly for the
 * next CONTENDED_NANOSECONDS. */
static bool spin_until(spinner *self, const edge_threadpool *pool, uint_fast64_t value,
                       bool (*done)(const edge_threadpool *, uint_fast64_t)) {
  if (done(pool, value)) return true;
  int64_t last = clock_ns(CLOCK_MONOTONIC);
  const int64_t deadline = last + (last < self->contended_until ? CONTENDED_SPIN_NANOSECONDS : SPIN_NANOSECONDS);
  for (;;) {
    for (int i = 0; i < SPIN_CHECK_EVERY; ++i) {
      cpu_relax();
      if (done(pool, value)) return true;
    }
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    if (now - last > PREEMPTED_GAP_NANOSECONDS) self->contended_until = now + CONTENDED_NANOSECONDS;
    if (now >= deadline) return false;
    last = now;
  }
}

/* Blocks on `cond` until done(pool, value). The sleeper count tells the other side to signal. */
static void block_until(edge_threadpool *pool, pthread_cond_t *cond, uint_fast64_t value,
                        bool (*done)(const edge_threadpool *, uint_fast64_t)) {
  pthread_mutex_lock(&pool->mutex);
  atomic_fetch_add(&pool->sleepers, 1);
  while (!done(pool, value)) pthread_cond_wait(cond, &pool->mutex);
  atomic_fetch_sub(&pool->sleepers, 1);
  pthread_mutex_unlock(&pool->mutex);
}

/* Wakes the other side if anyone may be blocked. The sleeper count is read after the caller's
 * own state change (both sequentially consistent), so a thread about to block either sees the
 * change or is counted; the broadcast is under the mutex, so none can miss it. */
static void wake(edge_threadpool *pool, pthread_cond_t *cond) {
  if (atomic_load(&pool->sleepers) == 0) return;
  pthread_mutex_lock(&pool->mutex);
  pthread_cond_broadcast(cond);
  pthread_mutex_unlock(&pool->mutex);
}

static bool new_job_or_shutdown(const edge_threadpool *pool, uint_fast64_t seen) {
  return atomic_load(&pool->generation) != seen || atomic_load_explicit(&pool->shutdown, memory_order_acquire);
}

static bool all_tiles_done(const edge_threadpool *pool, uint_fast64_t unused) {
  (void)unused;
  int64_t ran = 0;
  for (int32_t t = 0; t < pool->num_threads; ++t) ran += atomic_load(&pool->ranges[t].ran);
  return ran == atomic_load_explicit(&pool->tiles, memory_order_relaxed);
}

static void run_tile(edge_parallel_fn fn, void *ctx, int64_t n, int64_t tile, int64_t k, int32_t thread) {
  const int64_t begin = k * tile, end = begin + tile < n ? begin + tile : n;
  fn(ctx, begin, end, thread);
}

/* Runs tiles of job `tag` as thread `self` until no range has one left: its own first, then the
 * others' from the back, counting each off in its own `ran` (release: the tile's results are
 * visible to whoever sees the count). A thread that ran any tile wakes the caller if the job is
 * complete; the fence orders its last count before its look at the other counts and at the
 * sleepers, against the caller's sleeper increment before its own look (as in wake()), so the
 * thread that completes the job sees it complete, and sees the caller blocked or the caller sees
 * it complete. Runs at most once per job and thread: `ran` starts from the 0 the caller stored. */
static void work(edge_threadpool *pool, uint64_t tag, int32_t self, edge_parallel_fn fn, void *ctx, int64_t n,
                 int64_t tile) {
  const int32_t threads = pool->num_threads;
  atomic_int_fast64_t *count = &pool->ranges[self].ran;
  int64_t ran = 0;
  for (int32_t step = 0; step < threads; ++step) {
    const int32_t victim = (self + step) % threads;
    int64_t k;
    while ((k = claim(&pool->ranges[victim], tag, step == 0)) >= 0) {
      run_tile(fn, ctx, n, tile, k, self);
      atomic_store_explicit(count, ++ran, memory_order_release);
    }
  }
  if (ran == 0) return;
  atomic_thread_fence(memory_order_seq_cst);
  if (all_tiles_done(pool, 0)) wake(pool, &pool->work_done);
}

static void *worker_main(void *p) {
  worker_arg *arg = p;
  edge_threadpool *pool = arg->pool;
  spinner self = {0};
  uint_fast64_t seen = 0;
  for (;;) {
    if (!spin_until(&self, pool, seen, new_job_or_shutdown)) block_until(pool, &pool->work_ready, seen, new_job_or_shutdown);
    if (atomic_load_explicit(&pool->shutdown, memory_order_acquire)) return NULL;
    seen = atomic_load(&pool->generation);
    /* Read under tag `seen`; if a newer job replaced them meanwhile, every claim below fails. */
    edge_parallel_fn fn = atomic_load_explicit(&pool->fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&pool->ctx, memory_order_relaxed);
    const int64_t n = atomic_load_explicit(&pool->n, memory_order_relaxed);
    const int64_t tile = atomic_load_explicit(&pool->tile, memory_order_relaxed);
    work(pool, seen, arg->index, fn, ctx, n, tile);
  }
}

edge_threadpool *edge_threadpool_create(int32_t num_threads) {
  if (num_threads < 1) return NULL;
  edge_threadpool *pool = calloc(1, sizeof *pool);
  if (!pool) return NULL;
  pool->num_threads = num_threads;
  atomic_init(&pool->generation, 0);
  atomic_init(&pool->sleepers, 0);
  atomic_init(&pool->tiles, 0);
  atomic_init(&pool->shutdown, false);
  if (pthread_mutex_init(&pool->mutex, NULL) != 0) {
    free(pool);
    return NULL;
  }
  pthread_mutex_init(&pool->submit, NULL);
  pthread_cond_init(&pool->work_ready, NULL);
  pthread_cond_init(&pool->work_done, NULL);
  pool->ranges = aligned_alloc(64, (size_t)num_threads * sizeof *pool->ranges);
  if (!pool->ranges) {
    edge_threadpool_free(pool);
    return NULL;
  }
  for (int32_t t = 0; t < num_threads; ++t) {
    atomic_init(&pool->ranges[t].word, 0);
    atomic_init(&pool->ranges[t].ran, 0);
  }
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
  free(pool->ranges);
  free(pool->threads);
  free(pool->args);
  free(pool);
}

int32_t edge_threadpool_size(const edge_threadpool *pool) { return pool ? pool->num_threads : 1; }

void edge_parallel_tiles(edge_threadpool *pool, int64_t n, int64_t tile, edge_parallel_fn fn, void *ctx) {
  if (n <= 0) return;
  if (tile < 1) tile = 1;
  int64_t tiles = (n + tile - 1) / tile;
  if (tiles > MAX_TILES) {
    /* Coarser tiles, still a function of n and tile alone. */
    tile *= (tiles + MAX_TILES - 1) / MAX_TILES;
    tiles = (n + tile - 1) / tile;
  }
  if (!pool || pool->num_threads == 1 || tiles == 1) {
    for (int64_t k = 0; k < tiles; ++k) run_tile(fn, ctx, n, tile, k, 0);
    return;
  }
  pthread_mutex_lock(&pool->submit);
  const int32_t threads = pool->num_threads;
  const uint64_t tag = (atomic_load(&pool->generation) + 1) & TAG_MASK;
  atomic_store_explicit(&pool->fn, fn, memory_order_relaxed);
  atomic_store_explicit(&pool->ctx, ctx, memory_order_relaxed);
  atomic_store_explicit(&pool->n, n, memory_order_relaxed);
  atomic_store_explicit(&pool->tile, tile, memory_order_relaxed);
  atomic_store_explicit(&pool->tiles, tiles, memory_order_relaxed);
  const int64_t base = tiles / threads, extra = tiles % threads;
  for (int32_t t = 0; t < threads; ++t) {
    const int64_t begin = base * t + (t < extra ? t : extra), end = begin + base + (t < extra ? 1 : 0);
    atomic_store_explicit(&pool->ranges[t].word, range_word(tag, (uint64_t)begin, (uint64_t)end),
                          memory_order_relaxed);
    atomic_store_explicit(&pool->ranges[t].ran, 0, memory_order_relaxed);
  }
  /* Publishing the tag releases everything above to the workers that read it. */
  atomic_store(&pool->generation, tag);
  wake(pool, &pool->work_ready);

  static _Thread_local spinner caller = {0};
  work(pool, tag, 0, fn, ctx, n, tile);
  if (!spin_until(&caller, pool, 0, all_tiles_done)) block_until(pool, &pool->work_done, 0, all_tiles_done);
  pthread_mutex_unlock(&pool->submit);
}

void edge_parallel_for(edge_threadpool *pool, int64_t n, edge_parallel_fn fn, void *ctx) {
  edge_parallel_tiles(pool, n, 1, fn, ctx);
}

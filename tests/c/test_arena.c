/* The arena planner and the thread pool. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "arena.h"
#include "internal.h"
#include "test.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int check_plan(const edge_arena_item *items, int32_t n, size_t planned, size_t naive) {
  int bad = 0;
  size_t aligned_sum = 0;
  for (int32_t i = 0; i < n; ++i) {
    size_t need = (items[i].size + 63) / 64 * 64;
    aligned_sum += need;
    if (items[i].offset % 64 != 0) ++bad;
    if (items[i].offset + need > planned) ++bad;
    for (int32_t j = i + 1; j < n; ++j) {
      size_t other = (items[j].size + 63) / 64 * 64;
      bool alive_together = items[i].first <= items[j].last && items[j].first <= items[i].last;
      bool overlap = items[i].offset < items[j].offset + other && items[j].offset < items[i].offset + need;
      if (need && other && alive_together && overlap) {
        test_report(__FILE__, __LINE__, "items %d [%d,%d] and %d [%d,%d] overlap at %zu and %zu", i, items[i].first,
                    items[i].last, j, items[j].first, items[j].last, items[i].offset, items[j].offset);
        ++bad;
      }
    }
  }
  if (planned > naive || naive != aligned_sum) ++bad;
  return bad;
}

void test_arena_plan_small_chain(void) {
  /* a -> op0 -> b -> op1 -> c -> op2 -> d: each op needs its input and output, so two slots do. */
  edge_arena_item items[4] = {{4000, 0, 0, 0}, {4000, 0, 1, 0}, {4000, 1, 2, 0}, {4000, 2, 2, 0}};
  size_t planned = 0, naive = 0;
  CHECK_STATUS(edge_plan_arena(items, 4, false, &planned, &naive), EDGE_OK);
  CHECK(naive == 4 * 4032);
  CHECK(planned == 2 * 4032, "planned %zu", planned);
  CHECK(check_plan(items, 4, planned, naive) == 0);
  CHECK(items[1].offset != items[2].offset);
  /* Sizes that are not multiples of 64 still get aligned offsets. */
  edge_arena_item odd[3] = {{3, 0, 2, 0}, {5, 0, 2, 0}, {130, 1, 1, 0}};
  CHECK_STATUS(edge_plan_arena(odd, 3, false, &planned, &naive), EDGE_OK);
  CHECK(check_plan(odd, 3, planned, naive) == 0);
  CHECK(planned == 64 + 64 + 192);
  CHECK_STATUS(edge_plan_arena(NULL, 0, false, &planned, &naive), EDGE_OK);
  CHECK(planned == 0 && naive == 0);
  edge_arena_item huge[2] = {{SIZE_MAX - 10, 0, 0, 0}, {100, 0, 0, 0}};
  CHECK_STATUS(edge_plan_arena(huge, 2, false, &planned, &naive), EDGE_OUT_OF_MEMORY);
}

void test_arena_plan_centered(void) {
  /* A chain whose tensors shrink and grow: op k reads tensor k and writes tensor k + 1. Greedy puts
   * every tensor at offset 0 or right after its neighbour; centred, each smaller one sits at the
   * middle of a larger one that is dead by then, so the threads' halves of each line agree. */
  const size_t sizes[5] = {64 * 100, 64 * 40, 64 * 100, 64 * 20, 64 * 100};
  edge_arena_item greedy[5], centered[5];
  for (int32_t i = 0; i < 5; ++i) greedy[i] = (edge_arena_item){sizes[i], i == 0 ? 0 : i - 1, i, 0};
  memcpy(centered, greedy, sizeof greedy);
  size_t planned_greedy = 0, planned_centered = 0, naive = 0;
  CHECK_STATUS(edge_plan_arena(greedy, 5, false, &planned_greedy, &naive), EDGE_OK);
  CHECK(check_plan(greedy, 5, planned_greedy, naive) == 0);
  CHECK_STATUS(edge_plan_arena(centered, 5, true, &planned_centered, &naive), EDGE_OK);
  CHECK(check_plan(centered, 5, planned_centered, naive) == 0);
  CHECK(planned_centered == planned_greedy, "centred %zu, greedy %zu", planned_centered, planned_greedy);
  /* Two middles, one per neighbour slot: every tensor's middle is one of them. */
  const size_t middle_a = centered[0].offset + sizes[0] / 2, middle_b = centered[1].offset + sizes[1] / 2;
  CHECK(middle_a != middle_b);
  for (int32_t i = 0; i < 5; ++i) {
    const size_t middle = centered[i].offset + sizes[i] / 2, wanted = i & 1 ? middle_b : middle_a;
    CHECK(middle == wanted, "tensor %d: middle %zu, offset %zu", i, middle, centered[i].offset);
  }
  /* Greedy, for contrast, put the smallest at the bottom of its slot. */
  CHECK(greedy[3].offset + sizes[3] / 2 != greedy[1].offset + sizes[1] / 2);
}

/* Random lifetimes, planned greedy and centred: never two live tensors in one byte; greedy must
 * actually reuse bytes, and centring must cost little over greedy. */
void test_arena_plan_random_lifetimes(void) {
  enum { MAX_ITEMS = 60 };
  edge_arena_item items[MAX_ITEMS], centered[MAX_ITEMS];
  size_t total_planned = 0, total_naive = 0, total_centered = 0;
  for (int round = 0; round < 300; ++round) {
    int32_t n = 1 + (int32_t)(next_random() % MAX_ITEMS), ops = 1 + (int32_t)(next_random() % 30);
    for (int32_t i = 0; i < n; ++i) {
      int32_t a = (int32_t)(next_random() % (uint64_t)ops), b = (int32_t)(next_random() % (uint64_t)ops);
      items[i].first = a < b ? a : b;
      items[i].last = a < b ? b : a;
      items[i].size = next_random() % 4 == 0 ? next_random() % 64 : next_random() % 100000;
      items[i].offset = 12345;
    }
    memcpy(centered, items, sizeof items);
    size_t planned = 0, naive = 0, planned_centered = 0;
    CHECK_STATUS(edge_plan_arena(items, n, false, &planned, &naive), EDGE_OK);
    int bad = check_plan(items, n, planned, naive);
    CHECK(bad == 0, "round %d: %d violations (planned %zu, naive %zu)", round, bad, planned, naive);
    CHECK_STATUS(edge_plan_arena(centered, n, true, &planned_centered, &naive), EDGE_OK);
    bad = check_plan(centered, n, planned_centered, naive);
    CHECK(bad == 0, "round %d centred: %d violations (planned %zu, naive %zu)", round, bad, planned_centered,
          naive);
    total_planned += planned;
    total_naive += naive;
    total_centered += planned_centered;
  }
  /* Reuse must actually happen on random short lifetimes. */
  CHECK(total_planned < total_naive * 3 / 4, "planned %zu vs naive %zu", total_planned, total_naive);
  CHECK(total_centered <= total_planned + total_planned / 10, "centred %zu vs greedy %zu", total_centered,
        total_planned);
}

typedef struct {
  _Atomic int32_t *visits;
  _Atomic int32_t bad_thread, bad_tile;
  _Atomic int64_t calls;
  int32_t threads;
  int64_t tile;
} visit_state;

/* Checks that each call is exactly one tile (begin a multiple of the tile, end the tile's end or n)
 * and counts every index it covers. */
static void visit_tile(visit_state *s, int64_t n, int64_t tile, int64_t begin, int64_t end, int32_t thread) {
  if (thread < 0 || thread >= s->threads) atomic_store(&s->bad_thread, 1);
  if (begin % tile != 0 || end != (begin + tile < n ? begin + tile : n)) atomic_store(&s->bad_tile, 1);
  for (int64_t i = begin; i < end; ++i) atomic_fetch_add(&s->visits[i], 1);
  atomic_fetch_add(&s->calls, 1);
}

static int64_t visit_n, visit_tile_size;
static void visit(void *p, int64_t begin, int64_t end, int32_t thread) {
  visit_tile(p, visit_n, visit_tile_size, begin, end, thread);
}

/* Every index once, one call per tile, tiles cut from n and the tile size alone, whatever the
 * thread count; a job of more than 65,536 tiles gets whole multiples of the tile size. */
void test_threadpool_visits_every_index_once(void) {
  const int64_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 63, 64, 1000, 12345, 70000, 300001};
  const int64_t tiles[] = {1, 3, 64};
  for (int32_t threads = 1; threads <= 8; ++threads) {
    edge_threadpool *pool = edge_threadpool_create(threads);
    CHECK(pool != NULL);
    if (!pool) continue;
    CHECK(edge_threadpool_size(pool) == threads);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
      for (size_t j = 0; j < sizeof tiles / sizeof tiles[0]; ++j) {
        for (int repeat = 0; repeat < 2; ++repeat) {
          const int64_t n = sizes[k];
          int64_t tile = tiles[j], count = (n + tile - 1) / tile;
          if (count > 65536) {
            tile *= (count + 65535) / 65536;
            count = (n + tile - 1) / tile;
          }
          visit_state s = {calloc((size_t)n + 1, sizeof(_Atomic int32_t)), 0, 0, 0, threads, tile};
          visit_n = n;
          visit_tile_size = tile;
          edge_parallel_tiles(pool, n, tiles[j], visit, &s);
          int64_t wrong = 0;
          for (int64_t i = 0; i < n; ++i) wrong += atomic_load(&s.visits[i]) != 1;
          CHECK(wrong == 0, "threads %d, n %lld, tile %lld: %lld indices not visited exactly once", threads,
                    (long long)n, (long long)tiles[j], (long long)wrong);
          CHECK(!atomic_load(&s.bad_tile) && atomic_load(&s.calls) == count,
                    "threads %d, n %lld, tile %lld: %lld calls for %lld tiles%s", threads, (long long)n,
                    (long long)tile, (long long)atomic_load(&s.calls), (long long)count,
                    atomic_load(&s.bad_tile) ? ", some not on tile boundaries" : "");
          CHECK(!atomic_load(&s.bad_thread));
          free((void *)s.visits);
        }
      }
    }
    edge_threadpool_free(pool);
  }
  CHECK(edge_threadpool_create(0) == NULL);
}

typedef struct {
  _Atomic int32_t worker_started, caller_tiles, worker_tiles;
  _Atomic int32_t release;
} stall_state;

/* The first tile a worker takes waits until the caller has run every other tile: passes only if
 * the caller takes the stalled worker's share instead of waiting for it. */
static void stall_first_worker_tile(void *p, int64_t begin, int64_t end, int32_t thread) {
  (void)begin;
  (void)end;
  stall_state *s = p;
  if (thread == 0) {
    atomic_fetch_add(&s->caller_tiles, 1);
    return;
  }
  atomic_fetch_add(&s->worker_tiles, 1);
  if (atomic_exchange(&s->worker_started, 1) == 0) {
    for (long spins = 0; !atomic_load(&s->release) && spins < 2000000000L; ++spins) sched_yield();
  }
}

static void *release_after_caller(void *p) {
  stall_state *s = p;
  /* 63 of the 64 tiles are not the stalled one; the caller must run all but the few the worker
   * took before it stalled (one). */
  for (long spins = 0; atomic_load(&s->caller_tiles) < 63 && spins < 2000000000L; ++spins) sched_yield();
  atomic_store(&s->release, 1);
  return NULL;
}

void test_threadpool_caller_takes_a_stalled_threads_tiles(void) {
  edge_threadpool *pool = edge_threadpool_create(2);
  CHECK(pool != NULL);
  if (!pool) return;
  for (int round = 0; round < 5; ++round) {
    stall_state s = {0};
    pthread_t releaser;
    pthread_create(&releaser, NULL, release_after_caller, &s);
    edge_parallel_for(pool, 64, stall_first_worker_tile, &s);
    pthread_join(releaser, NULL);
    CHECK(atomic_load(&s.caller_tiles) + atomic_load(&s.worker_tiles) == 64, "round %d: %d + %d tiles", round,
              atomic_load(&s.caller_tiles), atomic_load(&s.worker_tiles));
    CHECK(atomic_load(&s.worker_tiles) <= 1, "round %d: the stalled worker ran %d tiles", round,
              atomic_load(&s.worker_tiles));
  }
  edge_threadpool_free(pool);
}

typedef struct {
  _Atomic int32_t worker_started, finished;
} finish_state;

/* Tiles a worker runs end only after a pause long enough for the caller to run out of tiles and
 * start waiting (the caller's own wait until a worker has started, so that some do); each tile
 * counts itself finished as its last act. */
static void finish_slowly_off_the_caller(void *p, int64_t begin, int64_t end, int32_t thread) {
  (void)begin;
  (void)end;
  finish_state *s = p;
  if (thread != 0) {
    atomic_store(&s->worker_started, 1);
    const struct timespec pause = {0, 2000000};
    nanosleep(&pause, NULL);
  } else {
    for (long spins = 0; !atomic_load(&s->worker_started) && spins < 20000000L; ++spins) sched_yield();
  }
  atomic_fetch_add(&s->finished, 1);
}

/* parallel_for returns only once every tile has finished, the workers' slow ones included: a wait
 * that let the caller go early (one tile short, say) fails here. */
void test_threadpool_returns_after_every_tile_finished(void) {
  for (int32_t threads = 2; threads <= 4; ++threads) {
    edge_threadpool *pool = edge_threadpool_create(threads);
    CHECK(pool != NULL);
    if (!pool) continue;
    for (int round = 0; round < 5; ++round) {
      finish_state s = {0, 0};
      edge_parallel_for(pool, 16, finish_slowly_off_the_caller, &s);
      CHECK(atomic_load(&s.finished) == 16, "threads %d, round %d: returned with %d of 16 tiles finished", threads,
            round, atomic_load(&s.finished));
    }
    edge_threadpool_free(pool);
  }
}

typedef struct {
  edge_threadpool *pool;
  int64_t sum;
} pool_user;

static void add_indices(void *p, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  _Atomic int64_t *sum = p;
  int64_t local = 0;
  for (int64_t i = begin; i < end; ++i) local += i;
  atomic_fetch_add(sum, local);
}

static void *use_pool(void *p) {
  pool_user *user = p;
  for (int job = 0; job < 2000; ++job) {
    _Atomic int64_t sum = 0;
    edge_parallel_tiles(user->pool, 10000, 100, add_indices, &sum);
    user->sum += atomic_load(&sum);
  }
  return NULL;
}

/* Two pools of two threads driven at once from two threads (two interpreters in one process, on
 * a machine with fewer cores than threads): both finish with every job complete. */
void test_threadpool_two_pools_at_once(void) {
  pool_user users[2] = {{edge_threadpool_create(2), 0}, {edge_threadpool_create(2), 0}};
  CHECK(users[0].pool && users[1].pool);
  if (!users[0].pool || !users[1].pool) return;
  pthread_t threads[2];
  for (int i = 0; i < 2; ++i) pthread_create(&threads[i], NULL, use_pool, &users[i]);
  for (int i = 0; i < 2; ++i) pthread_join(threads[i], NULL);
  for (int i = 0; i < 2; ++i) {
    CHECK(users[i].sum == 2000LL * (10000LL * 9999LL / 2), "pool %d: sum %lld", i, (long long)users[i].sum);
    edge_threadpool_free(users[i].pool);
  }
}

typedef struct {
  _Atomic int32_t arrived;
  int32_t expected;
  _Atomic int32_t timed_out;
} barrier_state;

/* Every chunk waits until all chunks have started: passes only if the pool really runs them at
 * the same time on distinct threads. */
static void wait_for_all(void *p, int64_t begin, int64_t end, int32_t thread) {
  (void)begin;
  (void)end;
  (void)thread;
  barrier_state *s = p;
  atomic_fetch_add(&s->arrived, 1);
  for (long spins = 0; atomic_load(&s->arrived) < s->expected; ++spins) {
    if (spins > 200000000L) {
      atomic_store(&s->timed_out, 1);
      return;
    }
    sched_yield();
  }
}

void test_threadpool_runs_chunks_concurrently(void) {
  edge_threadpool *pool = edge_threadpool_create(4);
  CHECK(pool != NULL);
  if (!pool) return;
  for (int round = 0; round < 20; ++round) {
    barrier_state s = {0, 4, 0};
    edge_parallel_for(pool, 4, wait_for_all, &s);
    CHECK(atomic_load(&s.arrived) == 4 && !atomic_load(&s.timed_out));
  }
  edge_threadpool_free(pool);
}

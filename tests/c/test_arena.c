/* The arena planner and the thread pool. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

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
  CHECK_STATUS(edge_plan_arena(items, 4, &planned, &naive), EDGE_OK);
  CHECK(naive == 4 * 4032);
  CHECK_MSG(planned == 2 * 4032, "planned %zu", planned);
  CHECK(check_plan(items, 4, planned, naive) == 0);
  CHECK(items[1].offset != items[2].offset);
  /* Sizes that are not multiples of 64 still get aligned offsets. */
  edge_arena_item odd[3] = {{3, 0, 2, 0}, {5, 0, 2, 0}, {130, 1, 1, 0}};
  CHECK_STATUS(edge_plan_arena(odd, 3, &planned, &naive), EDGE_OK);
  CHECK(check_plan(odd, 3, planned, naive) == 0);
  CHECK(planned == 64 + 64 + 192);
  CHECK_STATUS(edge_plan_arena(NULL, 0, &planned, &naive), EDGE_OK);
  CHECK(planned == 0 && naive == 0);
  edge_arena_item huge[2] = {{SIZE_MAX - 10, 0, 0, 0}, {100, 0, 0, 0}};
  CHECK_STATUS(edge_plan_arena(huge, 2, &planned, &naive), EDGE_OUT_OF_MEMORY);
}

void test_arena_plan_random_lifetimes(void) {
  enum { MAX_ITEMS = 60 };
  edge_arena_item items[MAX_ITEMS];
  size_t total_planned = 0, total_naive = 0;
  for (int round = 0; round < 300; ++round) {
    int32_t n = 1 + (int32_t)(next_random() % MAX_ITEMS), ops = 1 + (int32_t)(next_random() % 30);
    for (int32_t i = 0; i < n; ++i) {
      int32_t a = (int32_t)(next_random() % (uint64_t)ops), b = (int32_t)(next_random() % (uint64_t)ops);
      items[i].first = a < b ? a : b;
      items[i].last = a < b ? b : a;
      items[i].size = next_random() % 4 == 0 ? next_random() % 64 : next_random() % 100000;
      items[i].offset = 12345;
    }
    size_t planned = 0, naive = 0;
    CHECK_STATUS(edge_plan_arena(items, n, &planned, &naive), EDGE_OK);
    int bad = check_plan(items, n, planned, naive);
    CHECK_MSG(bad == 0, "round %d: %d violations (planned %zu, naive %zu)", round, bad, planned, naive);
    total_planned += planned;
    total_naive += naive;
  }
  /* Reuse must actually happen on random short lifetimes. */
  CHECK_MSG(total_planned < total_naive * 3 / 4, "planned %zu vs naive %zu", total_planned, total_naive);
}

typedef struct {
  _Atomic int32_t *visits;
  int32_t *owner;
  int64_t calls;
  pthread_mutex_t lock;
} visit_state;

static void visit(void *p, int64_t begin, int64_t end, int32_t thread) {
  visit_state *s = p;
  for (int64_t i = begin; i < end; ++i) {
    atomic_fetch_add(&s->visits[i], 1);
    s->owner[i] = thread;
  }
  pthread_mutex_lock(&s->lock);
  ++s->calls;
  pthread_mutex_unlock(&s->lock);
}

void test_threadpool_visits_every_index_once(void) {
  const int64_t sizes[] = {0, 1, 2, 3, 5, 7, 8, 63, 64, 1000, 12345};
  for (int32_t threads = 1; threads <= 8; ++threads) {
    edge_threadpool *pool = edge_threadpool_create(threads);
    CHECK(pool != NULL);
    if (!pool) continue;
    CHECK(edge_threadpool_size(pool) == threads);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; ++k) {
      for (int repeat = 0; repeat < 3; ++repeat) {
        int64_t n = sizes[k];
        visit_state s = {calloc((size_t)n + 1, sizeof(_Atomic int32_t)), calloc((size_t)n + 1, sizeof(int32_t)), 0,
                         PTHREAD_MUTEX_INITIALIZER};
        edge_parallel_for(pool, n, visit, &s);
        int32_t wrong = 0;
        for (int64_t i = 0; i < n; ++i) {
          /* Chunk t is [t*n/T, (t+1)*n/T) balanced by one: the owner is fixed by the index. */
          int64_t base = n / threads, extra = n % threads, t;
          t = i < extra * (base + 1) ? i / (base + 1) : extra + (i - extra * (base + 1)) / (base ? base : 1);
          if (atomic_load(&s.visits[i]) != 1 || s.owner[i] != (int32_t)t) ++wrong;
        }
        CHECK_MSG(wrong == 0, "threads %d, n %lld: %d indices visited wrongly", threads, (long long)n, wrong);
        int64_t want_calls = n < threads ? n : threads;
        if (n == 1 || threads == 1) want_calls = n > 0;
        CHECK_MSG(s.calls == want_calls, "threads %d, n %lld: %lld calls", threads, (long long)n, (long long)s.calls);
        free((void *)s.visits);
        free(s.owner);
      }
    }
    edge_threadpool_free(pool);
  }
  CHECK(edge_threadpool_create(0) == NULL);
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

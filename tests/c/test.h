/* A tiny test framework: CHECK records a failure and keeps going; each test is a function listed
 * in test_main.c. The runner prints one line per failed check and "N passed, M failed" at the end. */
#ifndef EDGE_TEST_H
#define EDGE_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"

extern int test_current_failures, test_current_checks;
extern const char *test_seed_dir;

/* Prints "file:line: message" (the first 40 of a test; the rest are only counted) and counts a
 * failure of the running test. */
void test_report(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* CHECK(cond) or CHECK(cond, fmt, ...): counts a check; when cond is false reports the condition,
 * followed by the message when there is one. */
#define CHECK(cond, ...)                                                              \
  do {                                                                                \
    ++test_current_checks;                                                            \
    if (!(cond)) test_report(__FILE__, __LINE__, "CHECK(" #cond ") " __VA_ARGS__);    \
  } while (0)

#define CHECK_STATUS(expr, want)                                                                          \
  do {                                                                                                    \
    ++test_current_checks;                                                                                \
    edge_status got_ = (expr);                                                                            \
    if (got_ != (want))                                                                                   \
      test_report(__FILE__, __LINE__, "%s returned %s, expected %s (last error: %s)", #expr,              \
                  edge_status_name(got_), edge_status_name(want), edge_last_error());                     \
  } while (0)

/* The tests' one random generator (xorshift64): a test that wants its own reproducible cases
 * seeds it first (rng_seed), and may save and restore test_rng_state to replay a sequence. */
extern uint64_t test_rng_state;
static inline void rng_seed(uint64_t seed) { test_rng_state = seed; }
static inline uint64_t rnd64(void) {
  test_rng_state ^= test_rng_state << 13;
  test_rng_state ^= test_rng_state >> 7;
  test_rng_state ^= test_rng_state << 17;
  return test_rng_state;
}
static inline uint32_t rnd(void) { return (uint32_t)(rnd64() >> 16); }
/* Uniform in [lo, hi] (hi - lo < 2^32). */
static inline int64_t rnd_range(int64_t lo, int64_t hi) { return lo + (int64_t)(rnd() % (uint32_t)(hi - lo + 1)); }
/* lo + (hi - lo) * j / 10^6 for a uniform j in [0, 10^6). */
static inline float rnd_float(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() % 1000000) / 1000000.0f; }

/* Reads a whole file into malloc'd memory; NULL (and a reported failure) when it cannot. */
unsigned char *test_read_file(const char *path, size_t *size);
/* "<seed dir>/<name>" in a static buffer. */
const char *test_seed_path(const char *name);
/* Loads a seed model by file name; NULL (and a reported failure) when it does not load. */
edge_model *test_load_seed(const char *name);

#endif

/* A tiny test framework: CHECK records a failure and keeps going; each TEST is a function listed
 * in test_main.c. The runner prints one line per failed check and "N passed, M failed" at the end. */
#ifndef EDGE_TEST_H
#define EDGE_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "edge.h"

extern int test_current_failures;
extern const char *test_seed_dir;

void test_report(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) test_report(__FILE__, __LINE__, "CHECK(%s)", #cond); \
  } while (0)

#define CHECK_MSG(cond, ...)                                   \
  do {                                                         \
    if (!(cond)) test_report(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define CHECK_STATUS(expr, want)                                                                          \
  do {                                                                                                    \
    edge_status got_ = (expr);                                                                            \
    if (got_ != (want))                                                                                   \
      test_report(__FILE__, __LINE__, "%s returned %s, expected %s (last error: %s)", #expr,              \
                  edge_status_name(got_), edge_status_name(want), edge_last_error());                     \
  } while (0)

/* Reads a whole file into malloc'd memory; NULL (and a reported failure) when it cannot. */
unsigned char *test_read_file(const char *path, size_t *size);
/* "<seed dir>/<name>" in a static buffer. */
const char *test_seed_path(const char *name);
/* Loads a seed model by file name; NULL (and a reported failure) when it does not load. */
edge_model *test_load_seed(const char *name);

#endif

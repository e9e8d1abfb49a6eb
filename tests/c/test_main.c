/* The C test runner: edge_tests SEEDDIR (a directory written by make_seed_models.py). */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stdlib.h>

#include "test.h"

int test_current_failures, test_current_checks;
uint64_t test_rng_state = 0x9e3779b97f4a7c15ull;
const char *test_seed_dir = "build/seeds";

void test_report(const char *file, int line, const char *fmt, ...) {
  if (++test_current_failures > 40) return;
  va_list ap;
  fprintf(stderr, "  %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

unsigned char *test_read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    test_report(__FILE__, __LINE__, "cannot open %s", path);
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
  if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) {
    test_report(__FILE__, __LINE__, "cannot read %s", path);
    free(data);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

const char *test_seed_path(const char *name) {
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", test_seed_dir, name);
  return path;
}

edge_model *test_load_seed(const char *name) {
  edge_model *model = NULL;
  edge_status status = edge_model_load_file(test_seed_path(name), &model);
  if (status != EDGE_OK) {
    test_report(__FILE__, __LINE__, "loading %s: %s: %s", name, edge_status_name(status), edge_last_error());
    return NULL;
  }
  return model;
}

#define TESTS(X)                              \
  X(fb_reader_rejects_bad_tables)             \
  X(fb_reader_rejects_bad_vectors_and_strings) \
  X(loader_accepts_valid_models)              \
  X(loader_rejects_invalid_models)            \
  X(loader_rejects_every_truncation)          \
  X(loader_rejects_bad_identifier)            \
  X(loader_rejects_bad_root_offsets)          \
  X(loader_reports_missing_file)              \
  X(loader_reads_signatures_and_metadata)     \
  X(arena_plan_small_chain)                   \
  X(arena_plan_random_lifetimes)              \
  X(arena_plan_centered)                      \
  X(threadpool_visits_every_index_once)       \
  X(threadpool_runs_chunks_concurrently)      \
  X(threadpool_caller_takes_a_stalled_threads_tiles) \
  X(threadpool_two_pools_at_once)             \
  X(threadpool_returns_after_every_tile_finished) \
  X(interpreter_rejects_bad_options)             \
  X(interpreter_honours_the_memory_limit)          \
  X(interpreter_without_opencl)               \
  X(interpreter_set_get_tensor_sizes)         \
  X(interpreter_resize_input)                 \
  X(interpreter_constants_and_variables)      \
  X(interpreter_invoke_ops_validates)         \
  X(interpreter_runs_add_relu)                \
  X(interpreter_checks_declared_shapes) \
  X(ops_data) \
  X(ops_compute) \
  X(ops_training) \
  X(kernels_gemm) \
  X(kernels_vector) \
  X(kernels_conv) \
  X(kernels_qgemm) \
  X(kernels_s8vector) \
  X(ops_quant) \
  X(ops_index)

#define DECLARE(name) void test_##name(void);
TESTS(DECLARE)
#undef DECLARE

typedef struct {
  const char *name;
  void (*fn)(void);
} test_entry;

#define ENTRY(name) {#name, test_##name},
static const test_entry all_tests[] = {TESTS(ENTRY)};
#undef ENTRY

int main(int argc, char **argv) {
  if (argc > 1) test_seed_dir = argv[1];
  const char *only = argc > 2 ? argv[2] : NULL;
  int passed = 0, failed = 0;
  for (size_t i = 0; i < sizeof all_tests / sizeof all_tests[0]; ++i) {
    if (only && !strstr(all_tests[i].name, only)) continue;
    test_current_failures = test_current_checks = 0;
    all_tests[i].fn();
    if (test_current_failures) {
      fprintf(stderr, "FAIL %s (%d of %d checks)\n", all_tests[i].name, test_current_failures, test_current_checks);
      ++failed;
    } else {
      printf("ok   %s (%d checks)\n", all_tests[i].name, test_current_checks);
      ++passed;
    }
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

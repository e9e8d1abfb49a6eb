/* Mutation campaign: edge_fuzz SEEDDIR ITERATIONS SEED
 *
 * Each iteration takes one seed model (*.edge directly in SEEDDIR), applies a few random
 * mutations (bit flips, byte sets, truncation, 32-bit overwrites with boundary values, chunk
 * duplication, 16-bit vtable-sized overwrites), then loads it from an exact-size buffer (so any
 * read past the end is a heap overflow under ASan), and when it loads: creates an interpreter,
 * allocates, sets every input to zeros, invokes the graph and every signature. Every call must
 * either succeed or fail with a known status and a non-empty message; a crash, a sanitizer report
 * or an empty message is a failure. Deterministic for a given SEED. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

/* Models whose activations would need more than this are not run (they are valid, just big). */
#define MAX_RUN_BYTES ((size_t)64 << 20)

typedef struct {
  char *name;
  unsigned char *bytes;
  size_t size;
} seed_file;

static uint64_t rng;

static uint64_t next_random(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return rng;
}

static size_t below(size_t n) { return n ? (size_t)(next_random() % n) : 0; }

static long contract_violations;

static void check_message(edge_status status, const char *message, const char *where, const char *seed, long iteration) {
  if (status == EDGE_OK) return;
  if ((int)status < 0 || (int)status > EDGE_IO_ERROR || !message || !message[0]) {
    fprintf(stderr, "iteration %ld (%s): %s returned status %d with an empty message\n", iteration, seed, where,
            (int)status);
    ++contract_violations;
  }
}

static const uint32_t boundary_values[] = {0, 1, 2, 3, 4, 7, 8, 63, 64, 255, 0x7fff, 0x8000, 0xffff, 0x10000,
                                           0x7fffffff, 0x80000000u, 0xfffffffcu, 0xfffffffeu, 0xffffffffu};

/* Returns the new size; buf has room for cap bytes. */
static size_t mutate(unsigned char *buf, size_t size, size_t cap) {
  int count = 1 + (int)below(4);
  for (int k = 0; k < count && size > 0; ++k) {
    switch (below(7)) {
      case 0: { /* bit flip */
        size_t pos = below(size);
        buf[pos] ^= (unsigned char)(1u << below(8));
        break;
      }
      case 1: /* byte set */
        buf[below(size)] = (unsigned char)(below(3) == 0 ? 0xff : below(256));
        break;
      case 2: /* truncation */
        size = below(size + 1);
        break;
      case 3:
      case 4: { /* 32-bit overwrite with a boundary value (or one relative to the size) */
        if (size < 4) break;
        size_t pos = below(size / 4) * 4;
        uint32_t v;
        switch (below(4)) {
          case 0: v = (uint32_t)size + (uint32_t)below(16) - 8u; break;
          case 1: v = (uint32_t)next_random(); break;
          default: v = boundary_values[below(sizeof boundary_values / sizeof boundary_values[0])]; break;
        }
        memcpy(buf + pos, &v, 4);
        break;
      }
      case 5: { /* 16-bit overwrite: vtable entries and table sizes */
        if (size < 2) break;
        size_t pos = below(size / 2) * 2;
        uint16_t v = (uint16_t)(below(2) ? boundary_values[below(14)] : below(64));
        memcpy(buf + pos, &v, 2);
        break;
      }
      case 6: { /* duplicate a chunk over another place, sometimes growing the file */
        size_t len = 1 + below(size < 64 ? size : 64);
        size_t from = below(size - len + 1);
        size_t to = below(size + 1);
        if (to + len > cap) break;
        memmove(buf + to, buf + from, len);
        if (to + len > size) size = to + len;
        break;
      }
    }
  }
  return size;
}

typedef struct {
  long tried, rejected, loaded, allocate_failed, ran, invoke_failed;
} campaign_counts;

static void run_model(const unsigned char *bytes, size_t size, const char *seed, long iteration, campaign_counts *counts) {
  /* posix_memalign keeps the exact size for ASan while the 64-byte alignment lets the model
   * borrow the bytes instead of copying them. */
  void *exact = NULL;
  if (posix_memalign(&exact, 64, size ? size : 1) != 0) return;
  if (size) memcpy(exact, bytes, size);
  ++counts->tried;
  edge_model *model = NULL;
  edge_status status = edge_model_load_buffer(exact, size, 0, &model);
  check_message(status, edge_last_error(), "load", seed, iteration);
  if (status != EDGE_OK) {
    ++counts->rejected;
    free(exact);
    return;
  }
  ++counts->loaded;
  edge_interpreter_options options = {.num_threads = 1 + (int32_t)(iteration % 2), .profiling = (int32_t)(iteration % 3 == 0)};
  edge_interpreter *interp = NULL;
  status = edge_interpreter_create(model, &options, &interp);
  check_message(status, edge_last_error(), "create", seed, iteration);
  if (status == EDGE_OK) {
    status = edge_interpreter_allocate(interp);
    check_message(status, edge_interpreter_error(interp), "allocate", seed, iteration);
    edge_memory_info memory = {0};
    edge_interpreter_memory(interp, &memory);
    if (status != EDGE_OK) {
      ++counts->allocate_failed;
    } else if (memory.arena_bytes + memory.scratch_bytes <= MAX_RUN_BYTES) {
      for (int32_t i = 0; i < edge_interpreter_num_inputs(interp); ++i) {
        edge_tensor_info info;
        int32_t t = edge_interpreter_input(interp, i);
        if (edge_interpreter_tensor_info(interp, t, &info) != EDGE_OK) continue;
        void *zeros = calloc(1, info.nbytes ? info.nbytes : 1);
        if (!zeros) continue;
        status = edge_interpreter_set_tensor(interp, t, zeros, info.nbytes);
        check_message(status, edge_interpreter_error(interp), "set_tensor", seed, iteration);
        free(zeros);
      }
      status = edge_interpreter_invoke(interp);
      check_message(status, edge_interpreter_error(interp), "invoke", seed, iteration);
      if (status == EDGE_OK) ++counts->ran;
      else ++counts->invoke_failed;
      for (int32_t s = 0; s < edge_model_num_signatures(model); ++s) {
        status = edge_interpreter_invoke_signature(interp, s);
        check_message(status, edge_interpreter_error(interp), "invoke_signature", seed, iteration);
      }
      for (int32_t t = 0; t < edge_interpreter_num_tensors(interp); ++t) {
        edge_tensor_info info;
        void *data = NULL;
        if (edge_interpreter_tensor_info(interp, t, &info) == EDGE_OK && info.nbytes <= MAX_RUN_BYTES &&
            edge_interpreter_tensor_data(interp, t, &data) == EDGE_OK && data && info.nbytes) {
          volatile unsigned char sink = ((unsigned char *)data)[info.nbytes - 1];
          (void)sink;
        }
      }
    }
  }
  edge_interpreter_free(interp);
  edge_model_free(model);
  free(exact);
}

static int load_seeds(const char *dir_path, seed_file **out) {
  DIR *dir = opendir(dir_path);
  if (!dir) return -1;
  int count = 0, cap = 0;
  seed_file *seeds = NULL;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    size_t len = strlen(entry->d_name);
    if (len < 6 || strcmp(entry->d_name + len - 5, ".edge") != 0) continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir_path, entry->d_name);
    FILE *f = fopen(path, "rb");
    if (!f) continue;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc(n > 0 ? (size_t)n : 1);
    if (!bytes || n <= 0 || fread(bytes, 1, (size_t)n, f) != (size_t)n) {
      free(bytes);
      fclose(f);
      continue;
    }
    fclose(f);
    if (count == cap) {
      cap = cap ? cap * 2 : 8;
      seeds = realloc(seeds, sizeof *seeds * (size_t)cap);
    }
    seeds[count].name = strdup(entry->d_name);
    seeds[count].bytes = bytes;
    seeds[count].size = (size_t)n;
    ++count;
  }
  closedir(dir);
  *out = seeds;
  return count;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SEEDDIR ITERATIONS SEED\n", argv[0]);
    return 2;
  }
  long iterations = strtol(argv[2], NULL, 10);
  rng = strtoull(argv[3], NULL, 10) * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
  if (!rng) rng = 1;
  seed_file *seeds = NULL;
  int num_seeds = load_seeds(argv[1], &seeds);
  if (num_seeds <= 0) {
    fprintf(stderr, "no .edge seeds in %s\n", argv[1]);
    return 2;
  }
  campaign_counts counts = {0};
  int seeds_ok = 0;
  for (int i = 0; i < num_seeds; ++i) {
    campaign_counts before = counts;
    run_model(seeds[i].bytes, seeds[i].size, seeds[i].name, -1, &counts);
    seeds_ok += counts.loaded > before.loaded;
  }
  size_t largest = 0;
  for (int i = 0; i < num_seeds; ++i)
    if (seeds[i].size > largest) largest = seeds[i].size;
  size_t cap = largest + 128;
  unsigned char *work = malloc(cap);
  for (long it = 0; it < iterations; ++it) {
    const seed_file *seed = &seeds[it % num_seeds];
    memcpy(work, seed->bytes, seed->size);
    size_t size = mutate(work, seed->size, cap);
    run_model(work, size, seed->name, it, &counts);
  }
  printf("seeds: %d files, %d load unmutated\n", num_seeds, seeds_ok);
  printf("files tried (seeds and mutants): %ld, %ld rejected at load, %ld loaded, %ld failed allocate, %ld ran, %ld failed invoke\n",
         counts.tried, counts.rejected, counts.loaded, counts.allocate_failed, counts.ran, counts.invoke_failed);
  printf("crashes: 0, contract violations (empty messages): %ld\n", contract_violations);
  free(work);
  for (int i = 0; i < num_seeds; ++i) {
    free(seeds[i].name);
    free(seeds[i].bytes);
  }
  free(seeds);
  return contract_violations || seeds_ok != num_seeds ? 1 : 0;
}

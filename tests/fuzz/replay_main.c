/* Runs a libFuzzer target's LLVMFuzzerTestOneInput over files, without libFuzzer: how the normal C
 * tests (make test, make asan) replay tests/fuzz/regressions/ and the seed corpus with gcc.
 *
 *   fuzz_replay_<target> FILE_OR_DIR...    prints "replayed N inputs" and exits 0, or dies on the
 *                                          first contract violation, crash or sanitizer report. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long replayed;

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *bytes = malloc(n > 0 ? (size_t)n : 1);
  if (!bytes || (n > 0 && fread(bytes, 1, (size_t)n, f) != (size_t)n)) {
    fprintf(stderr, "cannot read %s\n", path);
    fclose(f);
    free(bytes);
    return 1;
  }
  fclose(f);
  fprintf(stderr, "replaying %s\n", path);
  LLVMFuzzerTestOneInput(bytes, n > 0 ? (size_t)n : 0);
  free(bytes);
  ++replayed;
  return 0;
}

static int replay(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    fprintf(stderr, "no such file or directory: %s\n", path);
    return 1;
  }
  if (!S_ISDIR(st.st_mode)) return replay_file(path);
  DIR *dir = opendir(path);
  if (!dir) return 1;
  int failed = 0;
  struct dirent *entry;
  while ((entry = readdir(dir))) {
    if (entry->d_name[0] == '.') continue;
    char child[4096];
    snprintf(child, sizeof child, "%s/%s", path, entry->d_name);
    failed |= replay(child);
  }
  closedir(dir);
  return failed;
}

int main(int argc, char **argv) {
  int failed = 0;
  for (int i = 1; i < argc; ++i) failed |= replay(argv[i]);
  printf("replayed %ld inputs\n", replayed);
  return failed;
}

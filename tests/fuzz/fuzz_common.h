/* What the libFuzzer targets of tests/fuzz share: the API contract every call is held to, and the
 * bounds that keep one input's work small.
 *
 * Contract: a call returns EDGE_OK or a known edge_status with a non-empty message; anything else
 * (or a crash, a sanitizer report, a leak) is a finding. A violation aborts, so libFuzzer keeps the
 * input. */
#ifndef EDGE_FUZZ_COMMON_H
#define EDGE_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

/* The interpreter's memory_limit: variables + op state + arena. 256 kB of activations bounds the
 * work of every op family to well under a second under ASan (a GEMM's M*K*N is at most the cube
 * root of the product of its three operands' sizes, squared), and the model bytes bound the rest. */
#define FUZZ_MEMORY_LIMIT ((uint64_t)256 << 10)

static inline void fuzz_check(edge_status status, const char *message, const char *where) {
  if (status == EDGE_OK) return;
  if ((int)status < EDGE_INVALID_MODEL || (int)status > EDGE_IO_ERROR || !message || !message[0]) {
    fprintf(stderr, "contract violation: %s returned status %d with message \"%s\"\n", where, (int)status,
            message ? message : "(null)");
    abort();
  }
}

/* The bytes in a fresh allocation of exactly their size (a read past the end is a heap overflow
 * under ASan), 64-byte aligned so that the model borrows them in place instead of copying. */
static inline void *fuzz_exact_copy(const uint8_t *data, size_t size) {
  void *exact = NULL;
  if (posix_memalign(&exact, 64, size ? size : 1) != 0) return NULL;
  if (size) memcpy(exact, data, size);
  return exact;
}

/* Sets a tensor from the input's bytes, repeating them to fill it (or zeros when none are left). */
static inline void fuzz_fill_tensor(edge_interpreter *interp, int32_t tensor, const uint8_t *data, size_t size) {
  edge_tensor_info info;
  if (edge_interpreter_tensor_info(interp, tensor, &info) != EDGE_OK || info.kind == EDGE_TENSOR_CONSTANT) return;
  if (info.nbytes > FUZZ_MEMORY_LIMIT) return;
  uint8_t *bytes = malloc(info.nbytes ? info.nbytes : 1);
  if (!bytes) return;
  for (size_t i = 0; i < info.nbytes; ++i) bytes[i] = size ? data[i % size] : 0;
  fuzz_check(edge_interpreter_set_tensor(interp, tensor, bytes, info.nbytes), edge_interpreter_error(interp),
             "set_tensor");
  free(bytes);
}

#endif

/* libFuzzer target: untrusted data run through trusted models — what a split request and a
 * checkpoint restore hand the runtime.
 *
 * The models are the seed corpus's valid .edge files (EDGE_FUZZ_MODELS, or the corpus directory
 * compiled in), each loaded once with an interpreter (one thread, FUZZ_MEMORY_LIMIT). An input is
 *
 *   byte 0      which model (modulo their count)
 *   byte 1      flags: bit 0 run a signature instead of an op list, bit 1 resize input 0 first
 *   byte 2      n: the number of op indices (split execution) or the signature's index
 *   n x int16   op indices, in order (any value: out of range must be refused)
 *   then        records until the input ends: int16 tensor index, uint8 dims (when resizing, first),
 *               and the tensor's bytes repeated from what follows (cut tensors, restored variables)
 *
 * Variables go back to the model's values before each input, and a resized interpreter is made
 * anew, so every input runs from the same state. */
#define _DEFAULT_SOURCE

#include <dirent.h>

#include "fuzz_common.h"

#ifndef FUZZ_MODEL_DIR
#define FUZZ_MODEL_DIR "tests/fuzz/corpus/model"
#endif
#define MAX_MODELS 64

typedef struct {
  edge_model *model;
  edge_interpreter *interp;
  int resized;
} loaded_model;

static loaded_model models[MAX_MODELS];
static int num_models;

static edge_interpreter *make_interpreter(const edge_model *model) {
  edge_interpreter_options options = {.num_threads = 1, .memory_limit = FUZZ_MEMORY_LIMIT};
  edge_interpreter *interp = NULL;
  if (edge_interpreter_create(model, &options, &interp) != EDGE_OK) return NULL;
  if (edge_interpreter_allocate(interp) != EDGE_OK) {
    edge_interpreter_free(interp);
    return NULL;
  }
  return interp;
}

static void load_models(void) {
  const char *dir_path = getenv("EDGE_FUZZ_MODELS") ? getenv("EDGE_FUZZ_MODELS") : FUZZ_MODEL_DIR;
  struct dirent **entries = NULL;
  int n = scandir(dir_path, &entries, NULL, alphasort); /* sorted: byte 0 names the same model everywhere */
  if (n < 0) {
    fprintf(stderr, "fuzz_run: cannot open the model directory %s (set EDGE_FUZZ_MODELS)\n", dir_path);
    abort();
  }
  for (int i = 0; i < n; ++i) {
    const char *name = entries[i]->d_name;
    size_t len = strlen(name);
    if (num_models < MAX_MODELS && len > 5 && strcmp(name + len - 5, ".edge") == 0) {
      char path[4096];
      snprintf(path, sizeof path, "%s/%s", dir_path, name);
      loaded_model *m = &models[num_models];
      if (edge_model_load_file(path, &m->model) == EDGE_OK) {
        m->interp = make_interpreter(m->model);
        if (m->interp) ++num_models;
        else edge_model_free(m->model); /* valid but over the memory limit: not a run target */
      }
    }
    free(entries[i]);
  }
  free(entries);
  if (!num_models) {
    fprintf(stderr, "fuzz_run: no model of %s loads and allocates\n", dir_path);
    abort();
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  load_models();
  return 0;
}

static int16_t read_i16(const uint8_t *p) { return (int16_t)(p[0] | (p[1] << 8)); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!num_models) load_models(); /* the replay runner calls no LLVMFuzzerInitialize */
  if (size < 3) return 0;
  loaded_model *m = &models[data[0] % num_models];
  int run_signature = data[1] & 1, resize = (data[1] >> 1) & 1;
  int32_t count = data[2];
  size_t pos = 3;
  if (m->resized) {
    edge_interpreter_free(m->interp);
    m->interp = make_interpreter(m->model);
    m->resized = 0;
    if (!m->interp) abort(); /* it allocated before: it must again */
  }
  edge_interpreter *interp = m->interp;
  fuzz_check(edge_interpreter_reset_variables(interp), edge_interpreter_error(interp), "reset_variables");

  int32_t ops[256];
  int32_t num_ops = 0;
  if (!run_signature) {
    for (; num_ops < count && pos + 2 <= size; ++num_ops, pos += 2) ops[num_ops] = read_i16(data + pos);
  }
  if (resize && edge_interpreter_num_inputs(interp) > 0 && pos < size) {
    int32_t input = edge_interpreter_input(interp, 0);
    edge_tensor_info info;
    if (edge_interpreter_tensor_info(interp, input, &info) == EDGE_OK) {
      int64_t shape[EDGE_MAX_RANK];
      for (int32_t d = 0; d < info.rank; ++d) shape[d] = pos < size ? data[pos++] % 9 : 1;
      m->resized = 1;
      edge_status status = edge_interpreter_resize_input(interp, input, info.rank, shape);
      fuzz_check(status, edge_interpreter_error(interp), "resize_input");
      if (status == EDGE_OK) {
        status = edge_interpreter_allocate(interp);
        fuzz_check(status, edge_interpreter_error(interp), "allocate after resize");
        if (status != EDGE_OK) return 0;
      }
    }
  }
  while (pos + 2 <= size) {
    int32_t tensor = read_i16(data + pos);
    pos += 2;
    size_t chunk = size - pos < 64 ? size - pos : 64;
    int32_t num_tensors = edge_interpreter_num_tensors(interp);
    if (tensor < 0 || tensor >= num_tensors) {
      /* the API must refuse an index out of range, not read it */
      uint8_t byte = 0;
      edge_status status = edge_interpreter_set_tensor(interp, tensor, &byte, 1);
      if (status == EDGE_OK) abort();
      fuzz_check(status, edge_interpreter_error(interp), "set_tensor out of range");
    } else {
      fuzz_fill_tensor(interp, tensor, data + pos, chunk);
    }
    pos += chunk;
  }
  if (run_signature) {
    edge_status status = edge_interpreter_invoke_signature(interp, count);
    if (count >= edge_model_num_signatures(m->model) && status == EDGE_OK) abort();
    fuzz_check(status, edge_interpreter_error(interp), "invoke_signature");
  } else {
    edge_status status = edge_interpreter_invoke_ops(interp, ops, num_ops);
    fuzz_check(status, edge_interpreter_error(interp), "invoke_ops");
  }
  return 0;
}

/* libFuzzer target: an untrusted .edge file, loaded, verified, prepared and run.
 *
 * The input is the whole file, handed to edge_model_load_buffer in an allocation of its exact size.
 * When it loads: an interpreter (one thread, FUZZ_MEMORY_LIMIT), allocate, every input set from the
 * file's own first bytes, invoke, then every signature in turn (a trainable model's grad and train),
 * its inputs set the same way.
 * Every status must honour fuzz_common.h's contract. */
#define _POSIX_C_SOURCE 200809L

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  void *exact = fuzz_exact_copy(data, size);
  if (!exact) return 0;
  edge_model *model = NULL;
  edge_status status = edge_model_load_buffer(exact, size, 0, &model);
  fuzz_check(status, edge_last_error(), "load_buffer");
  if (status == EDGE_OK) {
    edge_interpreter_options options = {.num_threads = 1, .memory_limit = FUZZ_MEMORY_LIMIT};
    edge_interpreter *interp = NULL;
    status = edge_interpreter_create(model, &options, &interp);
    fuzz_check(status, edge_last_error(), "interpreter_create");
    if (status == EDGE_OK) {
      status = edge_interpreter_allocate(interp);
      fuzz_check(status, edge_interpreter_error(interp), "allocate");
      if (status == EDGE_OK) {
        for (int32_t i = 0; i < edge_interpreter_num_inputs(interp); ++i)
          fuzz_fill_tensor(interp, edge_interpreter_input(interp, i), data, size < 64 ? size : 64);
        fuzz_check(edge_interpreter_invoke(interp), edge_interpreter_error(interp), "invoke");
        for (int32_t s = 0; s < edge_model_num_signatures(model); ++s) {
          edge_signature_info signature;
          if (edge_model_signature(model, s, &signature) != EDGE_OK) continue;
          for (int32_t i = 0; i < signature.num_inputs; ++i)
            fuzz_fill_tensor(interp, signature.input_tensors[i], data, size < 64 ? size : 64);
          fuzz_check(edge_interpreter_invoke_signature(interp, s), edge_interpreter_error(interp), "invoke_signature");
        }
      }
      edge_interpreter_free(interp);
    }
    edge_model_free(model);
  }
  free(exact);
  return 0;
}

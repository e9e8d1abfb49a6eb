/* The interpreter: arguments, states, tensor access, resizing, variables and running. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdlib.h>

#include "test.h"

static edge_interpreter *make_interpreter(edge_model *model, int32_t threads) {
  edge_interpreter_options options = {.num_threads = threads};
  edge_interpreter *interp = NULL;
  if (!model) return NULL;
  edge_status status = edge_interpreter_create(model, &options, &interp);
  CHECK(status == EDGE_OK, "create: %s", edge_last_error());
  return interp;
}

void test_interpreter_rejects_bad_options(void) {
  edge_model *model = test_load_seed("passthrough.edge");
  if (!model) return;
  edge_interpreter *interp = NULL;
  edge_interpreter_options options = {.num_threads = 0};
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_INVALID_ARGUMENT);
  CHECK(interp == NULL && strstr(edge_last_error(), "num_threads") != NULL);
  options.num_threads = -3;
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_INVALID_ARGUMENT);
  options.num_threads = 100000;
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_create(NULL, &options, &interp), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_create(model, NULL, &interp), EDGE_OK); /* defaults: one thread */
  edge_interpreter_free(interp);
  edge_model_free(model);
}

/* memory_limit: a model that needs more fails create or allocate with EDGE_OUT_OF_MEMORY and a message
 * naming the limit; one that fits runs as without a limit. */
void test_interpreter_honours_the_memory_limit(void) {
  edge_model *model = test_load_seed("chain.edge");
  if (!model) return;
  edge_interpreter *interp = NULL;
  edge_interpreter_options options = {.num_threads = 1, .memory_limit = 16};
  edge_status status = edge_interpreter_create(model, &options, &interp);
  if (status == EDGE_OK) status = edge_interpreter_allocate(interp);
  CHECK_STATUS(status, EDGE_OUT_OF_MEMORY);
  CHECK(strstr(interp ? edge_interpreter_error(interp) : edge_last_error(), "memory limit") != NULL);
  edge_interpreter_free(interp);
  interp = NULL;
  options.memory_limit = 64 << 20;
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  edge_memory_info memory;
  CHECK_STATUS(edge_interpreter_memory(interp, &memory), EDGE_OK);
  CHECK(memory.arena_bytes + memory.persistent_bytes <= options.memory_limit);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_OK);
  edge_interpreter_free(interp);
  edge_model_free(model);
}

/* The OpenCL loader's failure path: EDGE_OPENCL_LIBRARY names a library that does not exist (it is
 * then the only one tried), so no run of this suite depends on what OpenCL the machine has. The
 * loader tries once per process; no other C test touches OpenCL. */
void test_interpreter_without_opencl(void) {
  edge_model *model = test_load_seed("passthrough.edge");
  if (!model) return;
  setenv("EDGE_OPENCL_LIBRARY", "/nonexistent/libOpenCL-for-the-test.so.1", 1);
  edge_interpreter *interp = NULL;
  edge_interpreter_options options = {.num_threads = 1, .backend = EDGE_BACKEND_OPENCL, .gpu_precision = EDGE_GPU_FP32};
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_UNSUPPORTED);
  CHECK(interp == NULL && strstr(edge_last_error(), "OpenCL is not available") != NULL &&
                strstr(edge_last_error(), "libOpenCL-for-the-test") != NULL,
            "message: %s", edge_last_error());
  int32_t count = -1;
  CHECK_STATUS(edge_opencl_num_devices(&count), EDGE_UNSUPPORTED);
  char path[256];
  CHECK_STATUS(edge_opencl_tuning_file(0, path, sizeof path), EDGE_UNSUPPORTED);
  CHECK_STATUS(edge_opencl_tuning_file(0, NULL, 0), EDGE_INVALID_ARGUMENT);
  options.backend = 7;
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_INVALID_ARGUMENT);
  options.backend = EDGE_BACKEND_AUTO; /* no OpenCL: the CPU, as before */
  CHECK_STATUS(edge_interpreter_create(model, &options, &interp), EDGE_OK);
  if (interp) {
    float in[6] = {1, -2, 3, -4, 5, -6}, out[6] = {0};
    CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
    CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, in, sizeof in), EDGE_OK);
    CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_OK);
    CHECK_STATUS(edge_interpreter_get_tensor(interp, 0, out, sizeof out), EDGE_OK);
    CHECK(memcmp(in, out, sizeof in) == 0 && edge_interpreter_op_device(interp, 0) == 0);
    edge_gpu_transfer_info transfers;
    CHECK_STATUS(edge_interpreter_gpu_transfers(interp, &transfers), EDGE_OK);
    CHECK(transfers.uploads == 0 && transfers.launches == 0);
    char name[32];
    uint64_t local[3];
    CHECK_STATUS(edge_interpreter_gpu_kernel(interp, 0, name, sizeof name, local), EDGE_UNSUPPORTED);
    CHECK_STATUS(edge_interpreter_gpu_kernel(interp, 0, NULL, sizeof name, local), EDGE_INVALID_ARGUMENT);
    edge_interpreter_free(interp);
  }
  unsetenv("EDGE_OPENCL_LIBRARY");
  edge_model_free(model);
}

void test_interpreter_set_get_tensor_sizes(void) {
  edge_model *model = test_load_seed("passthrough.edge");
  edge_interpreter *interp = make_interpreter(model, 1);
  if (!interp) {
    edge_model_free(model);
    return;
  }
  float in[6] = {1, 2, 3, 4, 5, 6}, out[6] = {0}, big[7] = {0};
  CHECK(edge_interpreter_num_inputs(interp) == 1 && edge_interpreter_input(interp, 0) == 0);
  CHECK(edge_interpreter_num_outputs(interp) == 1 && edge_interpreter_output(interp, 0) == 0);
  CHECK(edge_interpreter_input(interp, 1) == -1);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, in, sizeof in), EDGE_BAD_STATE);
  CHECK(strstr(edge_interpreter_error(interp), "before allocate") != NULL);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_BAD_STATE);
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, in, sizeof in - 4), EDGE_INVALID_ARGUMENT);
  CHECK(strstr(edge_interpreter_error(interp), "holds 24 bytes") != NULL);
  CHECK(strstr(edge_interpreter_error(interp), "got 20") != NULL);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, big, sizeof big), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 1, in, sizeof in), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, -1, in, sizeof in), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, NULL, sizeof in), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, in, sizeof in), EDGE_OK);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 0, out, sizeof out + 1), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 0, out, 0), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 0, out, sizeof out), EDGE_OK);
  CHECK(memcmp(in, out, sizeof in) == 0);
  void *data = NULL;
  CHECK_STATUS(edge_interpreter_tensor_data(interp, 0, &data), EDGE_OK);
  CHECK(data && ((uintptr_t)data & 63) == 0 && memcmp(data, in, sizeof in) == 0);
  edge_memory_info memory;
  CHECK_STATUS(edge_interpreter_memory(interp, &memory), EDGE_OK);
  CHECK(memory.arena_bytes == 64 && memory.naive_bytes == 64 && memory.scratch_bytes == 0);
  CHECK(memory.model_bytes > 0 && memory.persistent_bytes == 0);
  edge_interpreter_free(interp);
  edge_model_free(model);
}

void test_interpreter_resize_input(void) {
  edge_model *model = test_load_seed("passthrough.edge");
  edge_interpreter *interp = make_interpreter(model, 1);
  if (!interp) {
    edge_model_free(model);
    return;
  }
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  int64_t ok_shape[2] = {5, 3}, bad_shape[2] = {5, 4}, negative[2] = {-1, 3};
  CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 2, bad_shape), EDGE_INVALID_ARGUMENT);
  CHECK(strstr(edge_interpreter_error(interp), "[-1, 3]") != NULL);
  CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 1, ok_shape), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 2, negative), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_resize_input(interp, 3, 2, ok_shape), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 2, ok_shape), EDGE_OK);
  float data[15];
  for (int i = 0; i < 15; ++i) data[i] = (float)i;
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, data, sizeof data), EDGE_BAD_STATE);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_BAD_STATE);
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  edge_tensor_info info;
  CHECK_STATUS(edge_interpreter_tensor_info(interp, 0, &info), EDGE_OK);
  CHECK(info.rank == 2 && info.shape[0] == 5 && info.shape[1] == 3 && info.nbytes == 60);
  CHECK(info.shape_signature[0] == -1 && info.shape_signature[1] == 3 && strcmp(info.name, "x") == 0);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, data, sizeof data), EDGE_OK);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_OK);
  edge_memory_info memory;
  CHECK_STATUS(edge_interpreter_memory(interp, &memory), EDGE_OK);
  CHECK(memory.arena_bytes == 64 && memory.naive_bytes == 64);
  int64_t zero[2] = {0, 3};
  CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 2, zero), EDGE_OK);
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, data, 0), EDGE_OK);
  edge_interpreter_free(interp);

  model = (edge_model_free(model), test_load_seed("add_relu.edge"));
  interp = make_interpreter(model, 1);
  if (interp) {
    CHECK_STATUS(edge_interpreter_resize_input(interp, 1, 2, ok_shape), EDGE_INVALID_ARGUMENT);
    CHECK(strstr(edge_interpreter_error(interp), "'c' (1) is not an input") != NULL);
  }
  edge_interpreter_free(interp);
  edge_model_free(model);
}

void test_interpreter_constants_and_variables(void) {
  edge_model *model = test_load_seed("chain.edge");
  edge_interpreter *interp = make_interpreter(model, 2);
  if (!interp) {
    edge_model_free(model);
    return;
  }
  edge_tensor_info info;
  CHECK_STATUS(edge_interpreter_tensor_info(interp, 1, &info), EDGE_OK);
  CHECK(info.kind == EDGE_TENSOR_CONSTANT && strcmp(info.name, "conv/w") == 0 && info.nbytes == 72);
  float weights[18];
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 1, weights, sizeof weights), EDGE_OK);
  for (int i = 0; i < 18; ++i) CHECK(fabsf(weights[i] - (-0.5f + 0.05f * (float)i)) < 1e-6f);
  void *data = NULL;
  CHECK_STATUS(edge_interpreter_tensor_data(interp, 1, &data), EDGE_OK);
  CHECK(data && ((uintptr_t)data & 63) == 0);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 1, weights, sizeof weights), EDGE_INVALID_ARGUMENT);
  CHECK(strstr(edge_interpreter_error(interp), "constant") != NULL);

  float var[3], update[3] = {1, 2, 3};
  CHECK_STATUS(edge_interpreter_tensor_info(interp, 6, &info), EDGE_OK);
  CHECK(info.kind == EDGE_TENSOR_VARIABLE);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 6, var, sizeof var), EDGE_OK);
  CHECK(var[0] == 0.25f && var[1] == 0.5f && var[2] == 0.75f);
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 6, update, sizeof update), EDGE_OK);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 6, var, sizeof var), EDGE_OK);
  CHECK(var[0] == 1 && var[2] == 3);
  CHECK_STATUS(edge_interpreter_reset_variables(interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 6, var, sizeof var), EDGE_OK);
  CHECK(var[0] == 0.25f && var[2] == 0.75f);
  edge_memory_info memory;
  CHECK_STATUS(edge_interpreter_memory(interp, &memory), EDGE_OK);
  CHECK(memory.persistent_bytes == 64);

  CHECK_STATUS(edge_interpreter_tensor_info(interp, 8, &info), EDGE_OK);
  CHECK(info.dtype == EDGE_INT8 && info.num_quant_params == 2 && info.quantized_dimension == 0);
  CHECK(info.scales && info.scales[0] == 0.5f && info.scales[1] == 0.25f);
  CHECK(info.zero_points && info.zero_points[0] == 0 && info.zero_points[1] == -1);
  CHECK_STATUS(edge_interpreter_tensor_info(interp, 9, &info), EDGE_INVALID_ARGUMENT);
  CHECK(edge_interpreter_num_ops(interp) == 4);
  edge_op_info op;
  CHECK_STATUS(edge_interpreter_op_info(interp, 0, &op), EDGE_OK);
  CHECK(strcmp(op.op_name, "CONV_2D") == 0 && op.num_inputs == 3 && op.inputs[2] == -1);
  CHECK_STATUS(edge_interpreter_op_info(interp, 4, &op), EDGE_INVALID_ARGUMENT);
  edge_interpreter_free(interp);
  edge_model_free(model);
}

void test_interpreter_invoke_ops_validates(void) {
  edge_model *model = test_load_seed("passthrough.edge");
  edge_interpreter *interp = make_interpreter(model, 1);
  if (!interp) {
    edge_model_free(model);
    return;
  }
  int32_t ops[1] = {0};
  CHECK_STATUS(edge_interpreter_invoke_ops(interp, ops, 1), EDGE_BAD_STATE);
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_OK);
  CHECK_STATUS(edge_interpreter_invoke_ops(interp, ops, 1), EDGE_INVALID_ARGUMENT);
  CHECK(strstr(edge_interpreter_error(interp), "out of range") != NULL);
  CHECK_STATUS(edge_interpreter_invoke_ops(interp, NULL, 0), EDGE_OK);
  CHECK_STATUS(edge_interpreter_invoke_ops(interp, NULL, 2), EDGE_INVALID_ARGUMENT);
  CHECK_STATUS(edge_interpreter_invoke_signature(interp, 0), EDGE_OK);
  CHECK_STATUS(edge_interpreter_invoke_signature(interp, 1), EDGE_INVALID_ARGUMENT);
  edge_interpreter_free(interp);
  edge_model_free(model);
}

static void check_add_relu(edge_interpreter *interp, int32_t batch) {
  static const float c[4] = {0.5f, -1.0f, 2.0f, -3.0f};
  float x[16], y[16], want;
  for (int32_t i = 0; i < batch * 4; ++i) x[i] = (float)(i % 7) - 2.5f + 0.25f * (float)i;
  CHECK_STATUS(edge_interpreter_set_tensor(interp, 0, x, sizeof(float) * (size_t)(batch * 4)), EDGE_OK);
  edge_status status = edge_interpreter_invoke(interp);
  CHECK(status == EDGE_OK, "invoke: %s", edge_interpreter_error(interp));
  CHECK_STATUS(edge_interpreter_get_tensor(interp, 3, y, sizeof(float) * (size_t)(batch * 4)), EDGE_OK);
  for (int32_t i = 0; i < batch * 4; ++i) {
    want = x[i] + c[i % 4];
    want = want > 0 ? want : 0;
    CHECK(y[i] == want, "batch %d, y[%d] = %g, expected %g", batch, i, y[i], want);
  }
}

void test_interpreter_runs_add_relu(void) {
  for (int32_t threads = 1; threads <= 2; ++threads) {
    edge_model *model = test_load_seed("add_relu.edge");
    edge_interpreter *interp = make_interpreter(model, threads);
    if (!interp) {
      edge_model_free(model);
      return;
    }
    edge_status status = edge_interpreter_allocate(interp);
    CHECK(status == EDGE_OK, "allocate: %s", edge_interpreter_error(interp));
    if (status == EDGE_OK) {
      edge_memory_info memory;
      CHECK_STATUS(edge_interpreter_memory(interp, &memory), EDGE_OK);
      /* x [start, end] (inputs survive invoke), sum [0, 1], y [1, end]: all three overlap, no reuse. */
      CHECK(memory.arena_bytes == 192 && memory.naive_bytes == 192, "arena %zu, naive %zu", memory.arena_bytes,
                memory.naive_bytes);
      edge_interpreter_set_profiling(interp, 1);
      check_add_relu(interp, 1);
      check_add_relu(interp, 1);
      edge_op_info op;
      CHECK_STATUS(edge_interpreter_op_info(interp, 1, &op), EDGE_OK);
      CHECK(strcmp(op.op_name, "UNARY") == 0 && op.runs == 2 && op.total_ns >= op.last_ns && op.flops == 4);
      edge_interpreter_reset_profile(interp);
      CHECK_STATUS(edge_interpreter_op_info(interp, 1, &op), EDGE_OK);
      CHECK(op.runs == 0 && op.total_ns == 0);
      int64_t shape[2] = {3, 4};
      CHECK_STATUS(edge_interpreter_resize_input(interp, 0, 2, shape), EDGE_OK);
      status = edge_interpreter_allocate(interp);
      CHECK(status == EDGE_OK, "allocate after resize: %s", edge_interpreter_error(interp));
      if (status == EDGE_OK) check_add_relu(interp, 3);
      CHECK_STATUS(edge_interpreter_invoke_signature(interp, 0), EDGE_OK);
    }
    edge_interpreter_free(interp);
    edge_model_free(model);
  }
}

void test_interpreter_checks_declared_shapes(void) {
  edge_model *model = test_load_seed("allocate/wrong_declared_shape.edge");
  edge_interpreter *interp = make_interpreter(model, 1);
  if (!interp) {
    edge_model_free(model);
    return;
  }
  CHECK_STATUS(edge_interpreter_allocate(interp), EDGE_INVALID_MODEL);
  const char *message = edge_interpreter_error(interp);
  CHECK(strstr(message, "op 0 (BINARY)") && strstr(message, "'sum'") && strstr(message, "[1, 5]"), "message: %s",
            message);
  CHECK_STATUS(edge_interpreter_invoke(interp), EDGE_BAD_STATE);
  edge_interpreter_free(interp);
  edge_model_free(model);
}
